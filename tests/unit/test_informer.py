"""The informer against the fake API server, over real HTTP with the unmodified official client.

Server timeouts are a few seconds (and some tests set a one-second inactivity timeout) so that
the reconnect paths run. Checks are on what the store holds, what the callback saw, and what the
fake was asked (`fake.requests`), with generous wait-until timeouts. The two "no hot loop" tests
count requests in a 1.5 s window, with a bound far from both the backed-off count (about five)
and the hot-loop count (dozens).
Tests that need changes to happen *while the informer is disconnected* hold the informer thread
inside its own callback (a gate) while the test drops the watch and writes, so nothing races.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, Configuration, CoreV1Api, DiscoveryV1Api

from reconciler.kubeapi.informer import Backoff, Informer, InformerEvent
from reconciler.testing.fakeapi import FakeApiServer

JsonDict = dict[str, Any]
WAIT = 15.0


# ----------------------------------------------------------------------------- helpers


def svc(name: str, port: int = 80, ns: str = "default", **labels: str) -> JsonDict:
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"ports": [{"port": port, "protocol": "TCP"}]},
    }


def slice_(name: str, service: str, ip: str, ns: str = "default") -> JsonDict:
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


def node(name: str) -> JsonDict:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}, "spec": {}}


def port_of(raw: JsonDict) -> int | None:
    """The parse function of most tests: a Service's first port, None if labelled bad."""
    if raw["metadata"].get("labels", {}).get("bad") == "true":
        return None
    return int(raw["spec"]["ports"][0]["port"])


def wait_until(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def server_view(fake: FakeApiServer, kind: str, ns: str | None = None) -> dict[Hashable, str]:
    """(namespace, name) -> resourceVersion of what the fake holds."""
    return {
        (o["metadata"].get("namespace") or "", o["metadata"]["name"]): o["metadata"][
            "resourceVersion"
        ]
        for o in fake.objects(kind, ns)
    }


def store_view(inf: Informer[Any]) -> dict[Hashable, str]:
    view = {}
    for key in inf.list_keys():
        rv = inf.resource_version_of(key)
        if rv is not None:
            view[key] = rv
    return view


def lists(fake: FakeApiServer) -> list[Any]:
    return [r for r in fake.requests if r.method == "GET" and "watch" not in r.query]


def watches(fake: FakeApiServer) -> list[Any]:
    return [r for r in fake.requests if r.method == "GET" and "watch" in r.query]


class Recorder:
    """Collects events; optionally holds the informer thread inside the callback (a gate)."""

    def __init__(self) -> None:
        self.events: list[InformerEvent[Any]] = []
        self.lock = threading.Lock()
        self.gate_key: Hashable | None = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.store_at_call: list[Any] = []
        self.informer: Informer[Any] | None = None

    def __call__(self, event: InformerEvent[Any]) -> None:
        if self.informer is not None:
            self.store_at_call.append((event.key, self.informer.get(event.key)))
        with self.lock:
            self.events.append(event)
        if event.key == self.gate_key:
            self.entered.set()
            assert self.release.wait(WAIT)

    def snapshot(self) -> list[InformerEvent[Any]]:
        with self.lock:
            return list(self.events)

    def has(self, etype: str, key: Hashable) -> bool:
        return any(e.type == etype and e.key == key for e in self.snapshot())

    def after(self, key: Hashable) -> list[tuple[str, Hashable]]:
        """(type, key) of the events after the (last) event for `key`."""
        evs = self.snapshot()
        idx = max(i for i, e in enumerate(evs) if e.key == key)
        return [(e.type, e.key) for e in evs[idx + 1 :]]


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def api(fake: FakeApiServer) -> Iterator[ApiClient]:
    client = _client_for(fake)
    yield client
    client.close()
    Configuration.set_default(None)


def _client_for(fake: FakeApiServer) -> ApiClient:
    cfg = Configuration()
    cfg.host = fake.url
    Configuration.set_default(cfg)  # Watch builds its own ApiClient from the default
    return ApiClient(cfg)


@pytest.fixture
def make(api: ApiClient) -> Iterator[Callable[..., tuple[Informer[Any], Recorder]]]:
    """Build and start an informer on Services (or `list_fn`); stopped at teardown."""
    started: list[Informer[Any]] = []

    def build(
        list_fn: Callable[..., Any] | None = None, *, start: bool = True, **kw: Any
    ) -> tuple[Informer[Any], Recorder]:
        rec = Recorder()
        options: dict[str, Any] = {
            "parse": port_of,
            "on_event": rec,
            "server_timeout": (3, 4),
            "backoff": (0.05, 0.5),
        }
        options.update(kw)
        inf: Informer[Any] = Informer(
            "test", list_fn or CoreV1Api(api).list_service_for_all_namespaces, **options
        )
        rec.informer = inf
        started.append(inf)
        if start:
            inf.start()
        return inf, rec

    yield build
    for inf in started:
        inf.stop()
    for inf in started:
        assert inf.join(5), "informer thread did not stop"


def gate(fake: FakeApiServer, rec: Recorder, name: str = "gate") -> Hashable:
    """Hold the informer thread in its callback for a new object; return that object's key."""
    rec.gate_key = ("default", name)
    fake.apply(svc(name, 1))
    assert rec.entered.wait(WAIT)
    return rec.gate_key


# ----------------------------------------------------------------------------- backoff


def test_backoff_is_full_jitter_exponential_capped_and_resets() -> None:
    b = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    zero = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert zero.next_delay() == 0.0
    with pytest.raises(ValueError, match="base"):
        Backoff(1.0, 0.5)


# ----------------------------------------------------------------------------- list and events


def test_initial_list_fills_store_then_watches_from_list_rv(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a", 80), svc("b", 81), svc("c", 82, ns="other")])
    list_rv = fake.resource_version
    inf, rec = make(start=False)
    assert not inf.has_synced
    assert not inf.wait_for_sync(0.01)
    inf.start()
    assert inf.wait_for_sync(WAIT)
    assert inf.has_synced
    assert inf.get(("default", "a")) == 80
    assert inf.get(("other", "c")) == 82
    assert sorted(inf.list()) == [80, 81, 82]
    rv_b = server_view(fake, "Service")[("default", "b")]
    assert inf.resource_version_of(("default", "b")) == rv_b
    raw_b = next(e.raw for e in rec.snapshot() if e.key == ("default", "b"))
    assert raw_b is not None
    assert raw_b["metadata"]["name"] == "b"
    assert raw_b["metadata"]["resourceVersion"] == rv_b
    assert "kind" not in raw_b  # raw list items, as the server sent them (not models)
    assert inf.get(("default", "zzz")) is None
    assert inf.resource_version_of(("default", "zzz")) is None
    assert store_view(inf) == server_view(fake, "Service")
    assert inf.resource_version == list_rv
    assert sorted((e.type, e.key, e.old, e.new) for e in rec.snapshot()) == [
        ("ADDED", ("default", "a"), None, 80),
        ("ADDED", ("default", "b"), None, 81),
        ("ADDED", ("other", "c"), None, 82),
    ]
    assert wait_until(lambda: len(watches(fake)) >= 1)
    first_watch = watches(fake)[0]
    assert first_watch.query["resourceVersion"] == list_rv
    assert first_watch.query["allowWatchBookmarks"] in ("True", "true", "1")
    assert 3 <= int(first_watch.query["timeoutSeconds"]) <= 4
    assert len(lists(fake)) == 1
    assert inf.stats.lists == 1


def test_added_modified_deleted_update_store_before_callback(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a", 80), svc("b", 81)])
    inf, rec = make()
    assert inf.wait_for_sync(WAIT)
    fake.apply(svc("d", 90))
    fake.apply(svc("a", 88))
    fake.delete("Service", "default", "b")
    assert wait_until(lambda: rec.has("DELETED", ("default", "b")))
    evs = [(e.type, e.key, e.old, e.new) for e in rec.snapshot()[2:]]
    assert evs == [
        ("ADDED", ("default", "d"), None, 90),
        ("MODIFIED", ("default", "a"), 80, 88),
        ("DELETED", ("default", "b"), 81, None),
    ]
    deleted = rec.snapshot()[-1]
    assert deleted.raw is not None  # a deletion the server reported keeps the server's dict
    assert deleted.raw["metadata"]["name"] == "b"
    modified = rec.snapshot()[-2]
    assert modified.raw is not None
    assert modified.raw["kind"] == "Service"  # the watch event's object
    # The store took the watch events' RVs (not the list's).
    rv_a = server_view(fake, "Service")[("default", "a")]
    assert modified.raw["metadata"]["resourceVersion"] == rv_a
    assert inf.resource_version_of(("default", "a")) == rv_a
    added = rec.snapshot()[-3]
    assert added.raw is not None
    assert inf.resource_version_of(("default", "d")) == added.raw["metadata"]["resourceVersion"]
    assert inf.resource_version_of(("default", "b")) is None
    # The callback ran after the store was updated: it saw the new value (None once deleted).
    assert rec.store_at_call[-3:] == [
        (("default", "d"), 90),
        (("default", "a"), 88),
        (("default", "b"), None),
    ]
    assert store_view(inf) == server_view(fake, "Service")
    assert inf.resource_version == fake.resource_version
    assert inf.stats.events == 3


def test_bookmark_advances_rv_and_the_next_watch_resumes_from_it(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    inf, rec = make(server_timeout=(30, 30))
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    list_rv = inf.resource_version
    fake.apply(node("n1"))  # moves the global RV; the Service watch gets no event for it
    fake.apply(node("n2"))
    moved_rv = fake.resource_version
    assert moved_rv != list_rv
    assert fake.bookmark() == 1
    assert wait_until(lambda: inf.resource_version == moved_rv)
    assert inf.stats.bookmarks == 1
    assert len(rec.snapshot()) == 1  # bookmarks are not events
    fake.clear_requests()
    fake.drop_watches()
    assert wait_until(lambda: len(watches(fake)) >= 1)
    assert watches(fake)[0].query["resourceVersion"] == moved_rv
    assert lists(fake) == []


def test_dropped_watch_resumes_from_last_rv_without_relist_and_misses_nothing(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a", 80), svc("b", 81)])
    inf, rec = make()
    assert inf.wait_for_sync(WAIT)
    gate_key = gate(fake, rec)
    gate_rv = fake.resource_version
    # The informer thread is held in its callback: everything below happens while it is away.
    fake.clear_requests()
    assert fake.drop_watches() == 1
    fake.apply(svc("e", 85))
    fake.apply(svc("a", 90))
    fake.delete("Service", "default", "b")
    rec.release.set()
    assert wait_until(lambda: store_view(inf) == server_view(fake, "Service"))
    assert rec.after(gate_key) == [
        ("ADDED", ("default", "e")),
        ("MODIFIED", ("default", "a")),
        ("DELETED", ("default", "b")),
    ]
    assert inf.get(("default", "a")) == 90
    assert lists(fake) == []
    assert watches(fake)[0].query["resourceVersion"] == gate_rv
    assert inf.stats.lists == 1
    assert inf.stats.restarts["disconnected"] >= 1
    assert inf.stats.restarts["expired"] == 0


def test_expired_history_relists_replaces_store_and_emits_the_differences(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a", 80), svc("b", 81), svc("c", 82), svc("d", 83)])
    restarts: list[str] = []
    inf, rec = make(on_restart=restarts.append)
    assert inf.wait_for_sync(WAIT)
    old_rv_c = inf.resource_version_of(("default", "c"))
    old_rv_d = inf.resource_version_of(("default", "d"))
    assert old_rv_c is not None
    assert old_rv_d is not None
    gate_key = gate(fake, rec)
    fake.drop_watches()
    fake.delete("Service", "default", "b")
    fake.apply(svc("c", 92))
    fake.apply(svc("e", 84))
    fake.delete("Service", "default", "gate")
    fake.expire_history()
    rec.release.set()
    assert wait_until(lambda: store_view(inf) == server_view(fake, "Service"))
    evs = rec.snapshot()
    after = evs[next(i for i, e in enumerate(evs) if e.key == gate_key) + 1 :]
    assert sorted((e.type, e.key, e.old, e.new) for e in after) == [
        ("ADDED", ("default", "e"), None, 84),
        ("DELETED", ("default", "b"), 81, None),
        ("DELETED", gate_key, 1, None),
        ("MODIFIED", ("default", "c"), 82, 92),
    ]
    synthetic = next(e for e in after if e.key == ("default", "b"))
    assert synthetic.old == 81  # the last value the store held ...
    assert synthetic.raw is None  # ... but no raw dict: the store keeps none
    # Changes the relist found carry the list item the server sent.
    modified = next(e for e in after if e.type == "MODIFIED")
    assert modified.raw is not None
    assert modified.raw["metadata"]["name"] == "c"
    new_rv_c = server_view(fake, "Service")[("default", "c")]
    assert modified.raw["metadata"]["resourceVersion"] == new_rv_c
    assert inf.resource_version_of(("default", "c")) == new_rv_c != old_rv_c
    assert inf.resource_version_of(("default", "d")) == old_rv_d  # unchanged, kept
    assert inf.resource_version_of(("default", "b")) is None
    assert "expired" in restarts
    assert inf.stats.restarts["expired"] == 1
    assert inf.stats.lists == 2
    assert len(lists(fake)) == 2
    assert inf.has_synced
    assert inf.resource_version == fake.resource_version
    assert sorted(inf.list()) == [80, 83, 84, 92]


def test_relist_after_410_emits_nothing_for_unchanged_objects(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a"), svc("b")])
    inf, rec = make(parse=lambda raw: [port_of(raw)])  # a fresh object per parse
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    before = {k: (inf.get(k), inf.resource_version_of(k)) for k in inf.list_keys()}
    fake.fail_next("watch", 410)
    fake.drop_watches()
    assert wait_until(lambda: inf.stats.lists == 2)
    assert wait_until(lambda: fake.watch_count == 1)
    assert [e.type for e in rec.snapshot()] == ["ADDED", "ADDED"]
    assert inf.stats.restarts["expired"] == 1
    for key, (value, rv) in before.items():
        assert inf.get(key) is value  # the very same stored value, not the relist's parse
        assert inf.resource_version_of(key) == rv


class _ListResponse:
    """What a list function returns with ``_preload_content=False``: JSON bytes."""

    def __init__(self, body: JsonDict) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


def test_relist_treats_a_missing_resource_version_as_a_change() -> None:
    """Equal RVs are unchanged; a missing RV on either side is MODIFIED, even for equal dicts."""
    pages: list[list[JsonDict]] = []

    def list_fn(*args: Any, **kwargs: Any) -> _ListResponse:
        return _ListResponse({"metadata": {"resourceVersion": "100"}, "items": pages.pop(0)})

    def item(name: str, rv: str | None) -> JsonDict:
        meta: JsonDict = {"name": name, "namespace": "default"}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {"metadata": meta, "spec": {"ports": [{"port": 80}]}}

    events: list[InformerEvent[Any]] = []
    inf: Informer[Any] = Informer("rv", list_fn, parse=port_of, on_event=events.append)
    first = [item("same", "1"), item("bumped", "1"), item("lost", "1"), item("never", None)]
    second = [item("same", "1"), item("bumped", "2"), item("lost", None), item("never", None)]
    pages.extend([first, second])
    inf._list_and_replace()
    assert [inf.resource_version_of(("default", n)) for n in ("same", "lost", "never")] == [
        "1",
        "1",
        None,
    ]
    events.clear()
    inf._list_and_replace()
    assert sorted((e.type, e.key[1], e.raw is not None) for e in events) == [
        ("MODIFIED", "bumped", True),
        ("MODIFIED", "lost", True),
        ("MODIFIED", "never", True),
    ]
    assert inf.resource_version_of(("default", "bumped")) == "2"
    assert inf.resource_version_of(("default", "lost")) is None
    assert inf.resource_version_of(("default", "never")) is None


def test_the_store_does_not_retain_the_raw_dicts(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    """After a list, what json.loads built (the raw dicts) is freed; only RVs and values stay."""
    padding = "x" * 20_000
    fake.seed([svc(f"s{i}", 80, note=padding) for i in range(50)])  # about 1 MB of raw dicts
    gc.collect()
    tracemalloc.start()
    try:
        inf, _ = make(on_event=None)  # no callback holding on to the events' raw dicts
        assert inf.wait_for_sync(WAIT)
        assert len(inf.list_keys()) == 50
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, json.decoder.__file__)]
        )
    finally:
        tracemalloc.stop()
    retained = sum(stat.size for stat in snapshot.statistics("filename"))
    # Holding the raw dicts keeps over 1 MB decoded by json; the RV strings are a few KB.
    assert retained < 100_000, retained
    assert all(inf.resource_version_of(key) is not None for key in inf.list_keys())


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"inactivity_timeout": 1.0, "server_timeout": (30, 30)}, id="inactivity"),
        pytest.param(
            {"inactivity_timeout": None, "server_timeout": (1, 1), "read_timeout_margin": 1.0},
            id="timeout+margin",
        ),
    ],
)
def test_stalled_stream_is_detected_and_the_watch_resumes(
    fake: FakeApiServer,
    make: Callable[..., tuple[Informer[Any], Recorder]],
    options: dict[str, Any],
) -> None:
    fake.seed([svc("a")])
    inf, rec = make(**options)
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    assert fake.stall_watches(60) >= 1  # the open stream now sends nothing for a minute
    fake.apply(svc("e", 85))
    # Only a client that gives up on the silent stream and re-watches can see this in time.
    assert wait_until(lambda: inf.get(("default", "e")) == 85, timeout=20)
    assert inf.stats.restarts["stalled"] >= 1
    assert inf.stats.lists == 1
    assert rec.has("ADDED", ("default", "e"))
    fake.drop_watches()  # release the stalled server-side stream


def test_failed_list_backs_off_and_retries(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    fake.fail_next("list", 500, times=2)
    errors: list[tuple[str, BaseException]] = []
    restarts: list[str] = []
    inf, _ = make(on_restart=restarts.append, on_error=lambda w, e: errors.append((w, e)))
    assert inf.wait_for_sync(WAIT)
    assert inf.get(("default", "a")) == 80
    assert restarts[:2] == ["error", "error"]
    assert [w for w, _ in errors[:2]] == ["error", "error"]
    assert getattr(errors[0][1], "status", None) == 500
    assert len(lists(fake)) == 3
    assert inf.stats.lists == 1


def test_failed_watch_backs_off_and_resumes_from_the_same_rv(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    fake.fail_next("watch", 503)
    inf, rec = make()
    assert inf.wait_for_sync(WAIT)
    list_rv = inf.resource_version
    assert wait_until(lambda: len(watches(fake)) >= 2)
    assert [w.query["resourceVersion"] for w in watches(fake)[:2]] == [list_rv, list_rv]
    assert inf.stats.restarts["error"] == 1
    fake.apply(svc("b"))
    assert wait_until(lambda: rec.has("ADDED", ("default", "b")))
    assert len(lists(fake)) == 1


def test_clean_server_end_rewatches_from_rv(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    inf, rec = make(server_timeout=(30, 30))
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    fake.apply(svc("b"))
    assert wait_until(lambda: rec.has("ADDED", ("default", "b")))
    rv = inf.resource_version
    fake.clear_requests()
    assert fake.close_watches() == 1
    assert wait_until(lambda: len(watches(fake)) >= 1)
    assert watches(fake)[0].query["resourceVersion"] == rv
    assert inf.stats.restarts["timeout"] == 1
    assert lists(fake) == []


def test_streams_that_end_at_once_with_nothing_do_not_loop_hot(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    inf, _ = make(server_timeout=(30, 30), backoff=(0.2, 1.0))
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    fake.clear_requests()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # every watch is ended cleanly as soon as it opens
        fake.close_watches()
        time.sleep(0.005)
    # Re-watching at once makes ~30 requests in this window (one per round trip); backing off
    # (delays drawn from 0.2, 0.4, 0.8, 1.0 ... s) makes about five.
    assert len(watches(fake)) < 20
    assert lists(fake) == []
    fake.apply(svc("b"))
    assert wait_until(lambda: inf.get(("default", "b")) == 80)


def test_a_list_that_keeps_failing_is_retried_with_backoff_not_in_a_loop(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.fail_next("list", 503, times=10_000)
    inf, _ = make(backoff=(0.2, 1.0))
    time.sleep(1.5)
    # Without the backoff this window holds dozens of list requests; with it, about five.
    assert 2 <= len(lists(fake)) < 20
    assert not inf.has_synced
    assert inf.stats.restarts["error"] >= 2


# ----------------------------------------------------------------------------- scoping


def test_label_selector_endpoint_slices_by_service_name(
    fake: FakeApiServer, api: ApiClient, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed(
        [
            slice_("web-1", "web", "10.0.0.1"),
            slice_("web-2", "web", "10.0.0.2"),
            slice_("api-1", "api", "10.0.1.1"),
            slice_("web-x", "web", "10.0.2.1", ns="other"),
        ]
    )
    inf, rec = make(
        DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        label_selector="kubernetes.io/service-name=web",
        parse=lambda raw: tuple(a for ep in raw["endpoints"] for a in ep["addresses"]),
    )
    assert inf.wait_for_sync(WAIT)
    assert sorted(inf.list_keys(), key=str) == [
        ("default", "web-1"),
        ("default", "web-2"),
        ("other", "web-x"),
    ]
    assert inf.get(("default", "web-1")) == ("10.0.0.1",)
    fake.apply(slice_("web-2", "api", "10.0.0.2"))  # leaves the selection
    fake.apply(slice_("api-1", "web", "10.0.1.1"))  # enters it
    assert wait_until(lambda: rec.has("ADDED", ("default", "api-1")))
    assert rec.has("DELETED", ("default", "web-2"))
    assert sorted(inf.list_keys(), key=str) == [
        ("default", "api-1"),
        ("default", "web-1"),
        ("other", "web-x"),
    ]
    assert all(
        r.query.get("labelSelector") == "kubernetes.io/service-name=web" for r in fake.requests
    )


def test_namespaced_list_function_and_cluster_scoped_nodes(
    fake: FakeApiServer, api: ApiClient, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a", ns="ns1"), svc("b", ns="ns2"), node("n1")])
    svc_inf, _ = make(CoreV1Api(api).list_namespaced_service, namespace="ns1")
    node_inf, node_rec = make(CoreV1Api(api).list_node, parse=lambda raw: raw["metadata"]["name"])
    assert svc_inf.wait_for_sync(WAIT)
    assert node_inf.wait_for_sync(WAIT)
    assert svc_inf.list_keys() == [("ns1", "a")]
    assert node_inf.list_keys() == [("", "n1")]
    fake.apply(svc("c", ns="ns2"))
    fake.apply(svc("d", ns="ns1"))
    fake.apply(node("n2"))
    assert wait_until(lambda: svc_inf.get(("ns1", "d")) == 80)
    assert wait_until(lambda: node_rec.has("ADDED", ("", "n2")))
    assert svc_inf.get(("ns2", "c")) is None
    assert all(
        r.path.startswith("/api/v1/namespaces/ns1/") for r in fake.requests if "services" in r.path
    )


def test_parse_failures_keep_objects_out_of_the_store(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a"), svc("b", bad="true")])

    def parse(raw: JsonDict) -> int | None:
        if raw["metadata"]["name"] == "boom":
            raise KeyError("boom")
        return port_of(raw)

    errors: list[str] = []
    inf, rec = make(parse=parse, on_error=lambda where, _: errors.append(where))
    assert inf.wait_for_sync(WAIT)
    assert inf.list_keys() == [("default", "a")]
    fake.apply(svc("a", bad="true"))  # a previous version is removed: DELETED
    fake.apply(svc("b", 81))  # parses now: ADDED
    fake.apply(svc("boom"))  # parse raises: treated as a failure, the informer carries on
    fake.apply(svc("c", 82))
    assert wait_until(lambda: inf.get(("default", "c")) == 82)
    assert [(e.type, e.key) for e in rec.snapshot()[1:]] == [
        ("DELETED", ("default", "a")),
        ("ADDED", ("default", "b")),
        ("ADDED", ("default", "c")),
    ]
    assert sorted(inf.list_keys(), key=str) == [("default", "b"), ("default", "c")]
    assert inf.stats.parse_failures == 3
    assert errors == ["parse"]
    assert inf.stats.lists == 1


def test_a_failing_callback_does_not_stop_the_informer(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    seen: list[Hashable] = []

    def on_event(ev: InformerEvent[Any]) -> None:
        seen.append(ev.key)
        if ev.key == ("default", "a"):
            raise RuntimeError("handler bug")

    inf, _ = make(on_event=on_event)
    assert inf.wait_for_sync(WAIT)
    fake.apply(svc("a"))
    fake.apply(svc("b"))
    assert wait_until(lambda: ("default", "b") in seen)
    assert inf.get(("default", "a")) == 80
    assert inf.stats.handler_errors == 1
    assert inf.stats.lists == 1


# ----------------------------------------------------------------------------- stop


def test_stop_is_prompt_while_a_watch_is_blocked(
    fake: FakeApiServer, make: Callable[..., tuple[Informer[Any], Recorder]]
) -> None:
    fake.seed([svc("a")])
    inf, _ = make(server_timeout=(60, 60), read_timeout_margin=30)
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    time.sleep(0.2)  # let the thread settle into the blocking read
    inf.stop()
    assert inf.join(3.0), "stop() must unblock a watch that would otherwise last a minute"
    assert wait_until(lambda: fake.watch_count == 0, timeout=5)
    assert inf.stats.restarts["disconnected"] == 0  # stopping is not a restart


def test_stop_before_start_and_bad_timeouts() -> None:
    idle: Informer[Any] = Informer("idle", lambda *a, **k: None, parse=lambda raw: raw)
    idle.stop()
    assert idle.join(0.1)
    with pytest.raises(ValueError, match="server_timeout"):
        Informer("bad", lambda *a, **k: None, parse=lambda raw: raw, server_timeout=(5, 1))


def test_start_twice_is_an_error(make: Callable[..., tuple[Informer[Any], Recorder]]) -> None:
    inf, _ = make()
    with pytest.raises(RuntimeError, match="already started"):
        inf.start()


# ----------------------------------------------------------------------------- convergence

NAMES = ("a", "b", "c", "d")
OPS = st.one_of(
    st.tuples(st.just("apply"), st.sampled_from(NAMES), st.integers(80, 83)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("drop")),
    st.tuples(st.just("expire")),
    st.tuples(st.just("close")),
    st.tuples(st.just("stall")),
    st.tuples(st.just("fail_watch"), st.sampled_from([410, 500])),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.02, 0.1])),
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    initial=st.lists(st.tuples(st.sampled_from(NAMES), st.integers(80, 83)), max_size=4),
    ops=st.lists(OPS, min_size=6, max_size=16),
)
def test_random_interleavings_converge_to_the_server_state(
    initial: list[tuple[str, int]], ops: list[tuple[Any, ...]]
) -> None:
    with FakeApiServer() as fake:
        client = _client_for(fake)
        model: dict[Hashable, Any] = {}
        violations: list[str] = []

        def follow(ev: InformerEvent[Any]) -> None:
            """A consumer that only follows events must end up with the store's contents."""
            if model.get(ev.key) != ev.old:
                violations.append(f"{ev.type} {ev.key}: old={ev.old} model={model.get(ev.key)}")
            if ev.new is None:
                model.pop(ev.key, None)
            else:
                model[ev.key] = ev.new

        fake.seed([svc(n, p) for n, p in dict(initial).items()])
        inf: Informer[Any] = Informer(
            "prop",
            CoreV1Api(client).list_service_for_all_namespaces,
            parse=port_of,
            on_event=follow,
            server_timeout=(1, 2),
            read_timeout_margin=0.5,  # a stall is given up after 1.5-2.5 s
            backoff=(0.02, 0.2),
        )
        inf.start()
        try:
            assert inf.wait_for_sync(WAIT)
            for op in ops:
                kind = op[0]
                if kind == "apply":
                    fake.apply(svc(op[1], op[2]))
                elif kind == "delete":
                    if fake.get("Service", "default", op[1]) is not None:
                        fake.delete("Service", "default", op[1])
                elif kind == "drop":
                    fake.drop_watches()
                elif kind == "expire":
                    fake.expire_history()
                    fake.drop_watches()
                elif kind == "close":
                    fake.close_watches()
                elif kind == "stall":  # writes from now on stay unseen until a resume
                    fake.stall_watches(5)
                elif kind == "fail_watch":
                    fake.fail_next("watch", op[1])
                else:
                    time.sleep(op[1])
            expected = {
                (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]["ports"][0]["port"]
                for o in fake.objects("Service")
            }
            assert wait_until(
                lambda: (
                    store_view(inf) == server_view(fake, "Service")
                    and inf.resource_version == fake.resource_version
                ),
                timeout=20,
            ), (store_view(inf), server_view(fake, "Service"))
            assert {k: inf.get(k) for k in inf.list_keys()} == expected
        finally:
            inf.stop()
            assert inf.join(5)
            fake.drop_watches()  # ends stalled server-side streams too
            client.close()
            Configuration.set_default(None)
        assert model == expected
        assert violations == []


def test_kubernetes_client_is_the_pinned_major() -> None:
    assert kubernetes.__version__.startswith("36.")
