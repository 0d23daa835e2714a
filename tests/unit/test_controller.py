"""The sync loop's logic against the in-memory nftlb model (no threads, no network)."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import httpx
import pytest
import structlog

from reconciler.agent.controller import Controller, Settings
from reconciler.agent.logs import configure, get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.kube import parse_endpoint_slice, parse_node, parse_service
from reconciler.kubeapi.events import EventRecorder
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel


class Store:
    """An informer's store as the controller sees it."""

    def __init__(self, synced: bool = True) -> None:
        self.items: dict[Any, Any] = {}
        self.has_synced = synced

    def list(self) -> list[Any]:
        return list(self.items.values())


def service(
    name: str = "web",
    ip: str = "10.96.0.1",
    annotations: dict[str, str] | None = None,
    rv: str = "1",
) -> Any:
    raw = {
        "metadata": {
            "name": name,
            "namespace": "default",
            "resourceVersion": rv,
            "uid": f"uid-{name}",
            "annotations": annotations or {},
        },
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }
    return parse_service(raw)[0]


def eps(name: str = "web", *ips: str, rv: str = "1") -> Any:
    raw = {
        "metadata": {
            "name": f"{name}-1",
            "namespace": "default",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip]} for ip in ips],
    }
    return parse_endpoint_slice(raw)[0]


NODE = parse_node(
    {
        "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]},
    }
)[0]


class EventList:
    """An Event API that keeps what it is sent; `hold` makes every call wait (a hung server)."""

    def __init__(self, sent: list[Any]) -> None:
        self.sent = sent
        self.hold = threading.Event()
        self.hold.set()

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.hold.wait(30)
        self.sent.append(body)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        raise AssertionError("not called here")

    patch = get  # type: ignore[assignment]


class World:
    def __init__(self, events: list[Any] | None = None) -> None:
        self.model = NftlbModel("k")
        self.client = NftlbClient(
            "http://nftlb", "k", transport=httpx.MockTransport(self.model.as_handler())
        )
        self.services, self.slices, self.nodes = Store(), Store(), Store()
        self.nodes.items["n1"] = NODE
        self.log_stream = io.StringIO()
        configure("json", "debug", self.log_stream)
        recorder = EventRecorder(EventList(events), "n1") if events is not None else None
        self.controller = Controller(
            Settings("n1"),
            self.client,
            self.services,
            self.slices,
            self.nodes,
            Metrics(),
            get_logger(),
            recorder,
        )

    def put_service(self, svc: Any) -> None:
        old = self.services.items.get(svc.key)
        self.services.items[svc.key] = svc
        self.controller.on_service(svc.key, old, svc)

    def put_slice(self, s: Any) -> None:
        key = (s.namespace, s.name)
        old = self.slices.items.get(key)
        self.slices.items[key] = s
        self.controller.on_slice(old, s)

    def farms(self) -> dict[str, Any]:
        return self.client.get_farms().by_name()

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines()]

    def writes(self) -> int:
        return sum(1 for method, _ in self.model.requests if method != "GET")


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    yield
    structlog.reset_defaults()


def test_full_sync_programs_every_service_and_a_second_one_writes_nothing() -> None:
    w = World()
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2"))
    assert w.controller.sync_full().ok
    farm = w.farms()["k8s.default.web.http.tcp.v4"]
    assert [b.ip for b in farm.backends] == ["10.1.0.1", "10.1.0.2"]
    before = w.writes()
    result = w.controller.sync_full()
    assert result.ok and result.requests == 0 and w.writes() == before


def test_a_new_controller_against_unchanged_nftlb_sends_zero_writes() -> None:
    w = World()
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    w.controller.sync_full()
    before = w.writes()
    again = Controller(
        Settings("n1"), w.client, w.services, w.slices, w.nodes, Metrics(), get_logger()
    )
    assert again.sync_full().ok
    assert w.writes() == before


def test_partial_sync_sends_only_the_new_endpoint_in_one_request() -> None:
    w = World()
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    w.controller.sync_full()
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
    result = w.controller.sync_partial()
    assert result.ok and result.requests == 1 and result.operations == 1
    assert [b.ip for b in w.farms()["k8s.default.web.http.tcp.v4"].backends] == [
        "10.1.0.1",
        "10.1.0.2",
    ]


def test_an_update_that_changes_only_the_resource_version_marks_nothing() -> None:
    w = World()
    w.put_service(service())
    w.controller.sync_full()
    w.put_service(service(rv="99"))
    assert w.controller._dirty == set()


def test_annotation_change_updates_only_that_field_and_logs_it() -> None:
    w = World()
    w.put_service(service())
    w.controller.sync_full()
    w.put_service(
        service(
            annotations={"service.kubernetes.io/kube-nftlb-load-balancer-scheduler": "weight"},
            rv="2",
        )
    )
    assert w.controller.sync_partial().ok
    (op,) = [line for line in w.logs() if line["event"] == "nftlb.operation"][-1:]
    assert op["op"] == "update-farm"
    assert op["changes"] == [{"path": "scheduler", "old": "rr", "new": "weight"}]


def test_deleted_service_loses_its_farm() -> None:
    w = World()
    w.put_service(service())
    w.controller.sync_full()
    svc = w.services.items.pop(("default", "web"))
    w.controller.on_service(svc.key, svc, None)
    assert w.controller.sync_partial().ok
    assert w.farms() == {}


def test_nftlb_restart_is_repaired_by_the_next_full_sync() -> None:
    w = World()
    w.put_service(service())
    w.controller.sync_full()
    w.model.__init__("k")  # type: ignore[misc]  # what a restarted nftlb holds: nothing
    assert w.controller.sync_full().ok
    assert "k8s.default.web.http.tcp.v4" in w.farms()


def test_wrong_key_fails_cleanly_and_asks_for_a_full_sync() -> None:
    w = World()
    w.model.key = "other"
    w.put_service(service())
    result = w.controller.sync_full()
    assert not result.ok and not w.controller.ready
    line = next(x for x in w.logs() if x["event"] == "sync.failed")
    assert "key" in line["error"] and line["error"] != "k"
    assert w.controller._full_needed


def test_bad_annotation_gives_one_event_and_one_log_line_however_many_syncs() -> None:
    events: list[Any] = []
    w = World(events)
    w.put_service(
        service(annotations={"service.kubernetes.io/kube-nftlb-load-balancer-mode": "dsr"})
    )
    w.put_service(service("ok", ip="10.96.0.2"))
    assert w.controller.events is not None
    for _ in range(2):
        w.controller.sync_full()
        w.controller.events.step()
    assert len(events) == 1
    assert events[0]["reason"] == "InvalidAnnotation" and "dsr" in events[0]["message"]
    assert events[0]["involvedObject"]["name"] == "web"
    assert events[0]["involvedObject"]["uid"] == "uid-web"
    assert len([x for x in w.logs() if x["event"] == "service.problem"]) == 1
    assert {"k8s.default.web.http.tcp.v4", "k8s.default.ok.http.tcp.v4"} <= w.farms().keys()


def test_a_hung_event_write_never_delays_a_sync() -> None:
    events: list[Any] = []
    w = World(events)
    recorder = w.controller.events
    assert recorder is not None
    api = recorder._api
    assert isinstance(api, EventList)
    api.hold.clear()  # the API server takes every Event and never answers
    recorder.start()
    try:
        bad = {"service.kubernetes.io/kube-nftlb-load-balancer-mode": "dsr"}
        w.put_service(service(annotations=bad))
        started = time.monotonic()
        assert w.controller.sync_full().ok
        w.put_slice(eps("web", "10.244.0.5"))
        assert w.controller.sync_partial().ok
        assert time.monotonic() - started < 5  # the hold is 30 s per Event
        assert [b.ip for b in w.farms()["k8s.default.web.http.tcp.v4"].backends] == ["10.244.0.5"]
        assert events == []
        api.hold.set()
        assert recorder.flush(5)
        assert [e["reason"] for e in events] == ["InvalidAnnotation"]
    finally:
        api.hold.set()
        recorder.stop()


def test_no_sync_before_caches_have_listed() -> None:
    w = World()
    w.slices.has_synced = False
    assert not w.controller.synced
    assert w.controller._wait_for_work() is None


def test_a_farm_nftlb_refuses_is_logged_while_the_others_land() -> None:
    w = World()
    handler = w.model.as_handler()

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and b"k8s.default.bad." in request.content:
            return httpx.Response(400, content=b'{"response": "error parsing buffer"}')
        return handler(request)

    w.client = NftlbClient("http://nftlb", "k", transport=httpx.MockTransport(refusing))
    w.controller.nftlb = w.client
    w.put_service(service("bad", ip="10.96.0.9"))
    w.put_service(service("good", ip="10.96.0.8"))
    result = w.controller.sync_full()
    assert not result.ok and "k8s.default.bad.http.tcp.v4" in result.error
    assert "k8s.default.good.http.tcp.v4" in w.farms()
    (line,) = [x for x in w.logs() if x["event"] == "nftlb.farm_failed"]
    assert line["farm"] == "k8s.default.bad.http.tcp.v4" and line["status"] == 400
    assert w.controller._full_needed


def node_port_service() -> Any:
    raw = {
        "metadata": {"name": "np", "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.5",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
        },
    }
    return parse_service(raw)[0]


def test_a_new_endpoint_of_a_node_port_service_is_one_request_for_all_its_farms() -> None:
    w = World()
    w.put_service(node_port_service())
    w.put_slice(eps("np", "10.1.0.1"))
    w.controller.sync_full()
    assert len(w.farms()) == 2  # the cluster IP's farm and the node port's
    w.put_slice(eps("np", "10.1.0.1", "10.1.0.2", rv="2"))
    result = w.controller.sync_partial()
    assert result.ok and result.operations == 2 and result.requests == 1
    assert all(len(f.backends) == 2 for f in w.farms().values())


def node(ip: str, rv: str) -> Any:
    raw = {
        "metadata": {"name": "n1", "resourceVersion": rv},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }
    return parse_node(raw)[0]


def node_port_frontends(w: World) -> set[str]:
    return {f.addresses[0].ip for f in w.farms().values() if f.addresses[0].port == 30080}


@pytest.mark.parametrize("kind", ["full", "partial"])
def test_a_changed_node_address_moves_the_node_port_frontends_on_any_sync(kind: str) -> None:
    """Farms of unchanged Services are reused by a full sync; a node change must still reach
    them (the node is one of their inputs)."""
    w = World()
    w.put_service(node_port_service())
    w.put_slice(eps("np", "10.1.0.1"))
    w.nodes.items["n1"] = old = node("192.168.1.1", "1")
    w.controller.on_node(None, old)
    assert w.controller.sync_full().ok
    assert node_port_frontends(w) == {"192.168.1.1"}
    w.nodes.items["n1"] = new = node("192.168.1.9", "2")
    w.controller.on_node(old, new)
    result = w.controller.sync_full() if kind == "full" else w.controller.sync_partial()
    assert result.ok
    assert node_port_frontends(w) == {"192.168.1.9"}


def test_a_full_sync_recomputes_only_services_whose_objects_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import reconciler.agent.controller as controller_module

    w = World()
    for i in range(5):
        w.put_service(service(f"s{i}", f"10.96.0.{i + 1}"))
        w.put_slice(eps(f"s{i}", f"10.1.0.{i + 1}"))
    assert w.controller.sync_full().ok
    computed: list[str] = []
    real = controller_module.service_farms

    def counting(svc: Any, *args: Any) -> Any:
        computed.append(svc.name)
        return real(svc, *args)

    monkeypatch.setattr(controller_module, "service_farms", counting)
    assert w.controller.sync_full().ok
    assert computed == []
    # A relist hands back equal objects that are not the same ones: still nothing to recompute.
    w.services.items = {k: service(k[1], s.cluster_ips[0]) for k, s in w.services.items.items()}
    assert w.controller.sync_full().ok
    assert computed == []
    w.put_slice(eps("s3", "10.1.0.4", "10.1.0.99", rv="2"))
    result = w.controller.sync_full()
    assert result.ok and result.requests == 1
    assert computed == ["s3"]
    assert len(w.farms()["k8s.default.s3.http.tcp.v4"].backends) == 2


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_actual_farms_and_requests_count_what_nftlb_holds_and_every_request() -> None:
    """`kube_nftlb_actual_farms` is what nftlb holds after the sync (not before its plan), and
    the read-back GET is a request like any other."""
    w = World()
    metrics = w.controller.metrics
    w.put_service(service())
    w.put_service(service("api", "10.96.0.2"))
    w.put_slice(eps("web", "10.1.0.1"))
    assert w.controller.sync_full().ok
    sent = len(w.model.requests)
    assert _sample(metrics, "kube_nftlb_nftlb_requests_total", outcome="success") == sent
    assert _sample(metrics, "kube_nftlb_actual_farms") == len(w.farms()) == 2
    w.services.items.pop(("default", "api"))
    w.controller.on_service(("default", "api"), service("api", "10.96.0.2"), None)
    assert w.controller.sync_partial().ok
    assert _sample(metrics, "kube_nftlb_actual_farms") == len(w.farms()) == 1
    w.model.requests.clear()
    assert w.controller.sync_full().ok
    assert _sample(metrics, "kube_nftlb_actual_farms") == 1
    assert len(w.model.requests) == 1  # the read-back alone


def test_a_restart_the_watchdog_saw_ends_a_failure_backoff_with_a_full_sync() -> None:
    """nftlb down (here: refusing the key) puts the loop in a 30 s backoff; when the watchdog
    sees nftlb start again, the full sync runs at once, not after the backoff."""
    w = World()
    w.controller.settings.backoff_initial = 30.0
    w.model.key = "other"
    w.put_service(service())
    w.controller.start()
    try:
        deadline = time.monotonic() + 5
        while w.controller.last_result is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.controller.last_result is not None and not w.controller.last_result.ok
        assert w.controller.nftlb_tables() == set()
        w.model.__init__("k")  # type: ignore[misc]  # nftlb started again, empty
        w.controller.restarted("nftlb")
        deadline = time.monotonic() + 5
        while "k8s.default.web.http.tcp.v4" not in w.farms() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "k8s.default.web.http.tcp.v4" in w.farms()
        assert w.controller.nftlb_tables() == {("ip", "nftlb")}
    finally:
        w.controller.stop()


class SlowClock:
    """A clock that nftlb's writes move on (each costs `per_write` seconds)."""

    def __init__(self, per_write: float) -> None:
        self.now = 1000.0
        self.per_write = per_write

    def __call__(self) -> float:
        return self.now

    def transport(self, model: NftlbModel) -> httpx.MockTransport:
        handler = model.as_handler()

        def slow(request: httpx.Request) -> httpx.Response:
            if request.method != "GET":
                self.now += self.per_write
            return handler(request)

        return httpx.MockTransport(slow)


def paced_world(per_write: float, pace_max: float = 5.0) -> tuple[World, SlowClock]:
    w = World()
    clock = SlowClock(per_write)
    w.client = NftlbClient("http://nftlb", "k", transport=clock.transport(w.model))
    w.controller = Controller(
        Settings("n1", pace_max=pace_max),
        w.client,
        w.services,
        w.slices,
        w.nodes,
        Metrics(),
        get_logger(),
        clock=clock,
    )
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    assert w.controller._wait_for_work() == "full"
    assert w.controller._sync_paced("full").ok
    return w, clock


def test_after_a_long_sync_the_next_waits_as_long_as_it_took() -> None:
    w, clock = paced_world(per_write=2.0)  # the initial sync wrote once: it took 2 s
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
    assert w.controller._wait_for_work() is None  # the change waits out the pause ...
    clock.now += 1.9
    assert w.controller._wait_for_work() is None
    clock.now += 0.2
    assert w.controller._wait_for_work() == "partial"  # ... of as long as the sync took
    assert w.controller._sync_paced("partial").ok
    assert [b.ip for b in w.farms()["k8s.default.web.http.tcp.v4"].backends] == [
        "10.1.0.1",
        "10.1.0.2",
    ]


def test_the_pause_is_capped_and_a_short_sync_barely_pauses() -> None:
    w, clock = paced_world(per_write=60.0, pace_max=5.0)  # a very long initial sync
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
    assert w.controller._wait_for_work() is None
    clock.now += 5.01  # capped at pace_max, not 60 s
    assert w.controller._wait_for_work() == "partial"
    clock.per_write = 0.001
    assert w.controller._sync_paced("partial").ok
    w.put_slice(eps("web", "10.1.0.1", rv="3"))
    clock.now += 0.002
    assert w.controller._wait_for_work() == "partial"


def test_a_restart_of_nftlb_is_repaired_without_waiting_out_the_pause() -> None:
    w, _ = paced_world(per_write=3.0)
    w.controller.restarted("nftlb")
    assert w.controller._wait_for_work() == "full"


def test_pacing_off() -> None:
    w, _ = paced_world(per_write=3.0, pace_max=0.0)
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
    assert w.controller._wait_for_work() == "partial"


def _spare_names(farm: Any) -> list[str]:
    return [b.name for b in farm.backends if b.port == 0]


def test_a_replaced_endpoint_is_retired_taken_over_and_cleaned_up_when_idle() -> None:
    w = World()
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2"))
    assert w.controller.sync_full().ok
    name = "k8s.default.web.http.tcp.v4"
    # 10.1.0.2 replaced: the new one goes in and the old one is set down in one request
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.3", rv="2"))
    result = w.controller.sync_partial()
    assert result.ok and result.requests == 1
    farm = w.farms()[name]
    assert _spare_names(farm) == ["b-10.1.0.2-8080"]
    assert w.controller.metrics.spare_backends._value.get() == 1
    spare_mark = farm.backend("b-10.1.0.2-8080").mark
    # the next new endpoint takes the spare over: renamed in place, with its mark
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.4", rv="3"))
    result = w.controller.sync_partial()
    assert result.ok and result.requests == 1
    farm = w.farms()[name]
    assert farm.backend("b-10.1.0.4-8080").mark == spare_mark
    assert farm.backend("b-10.1.0.2-8080") is None
    assert _spare_names(farm) == ["b-10.1.0.3-8080"]
    # nothing waits: the cleanup deletes the spare, and nftlb holds exactly the desired farm
    assert w.controller._wait_for_work() == "cleanup"
    assert w.controller.sync_cleanup().ok
    farm = w.farms()[name]
    assert [b.ip for b in farm.backends] == ["10.1.0.1", "10.1.0.4"]
    assert w.controller.metrics.spare_backends._value.get() == 0
    (line,) = [e for e in w.logs() if e["event"] == "nftlb.cleanup"]
    assert (line["ok"], line["deleted"], line["farms_left"]) == (True, 1, 0)
    deletes = [
        e for e in w.logs() if e["event"] == "nftlb.operation" and e["op"] == "delete-backend"
    ]
    assert [e["target"] for e in deletes] == ["b-10.1.0.3-8080"]  # each cleanup request logged
    assert w.controller._wait_for_work() is None  # nothing left to do
    assert w.controller.sync_full().ok and w.controller.last_result.requests == 0


def world_with_a_spare() -> World:
    """`web` with 10.1.0.1 and 10.1.0.2, then 10.1.0.2 removed: nftlb holds it as a spare."""
    w = World()
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2"))
    assert w.controller.sync_full().ok
    w.put_slice(eps("web", "10.1.0.1", rv="2"))
    assert w.controller.sync_partial().ok
    return w


def test_the_cleanup_stops_at_the_next_change_before_sending_anything() -> None:
    w = world_with_a_spare()
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.5", rv="3"))  # a change comes in
    before = w.writes()
    assert w.controller.sync_cleanup().ok
    assert w.writes() == before
    assert _spare_names(w.farms()["k8s.default.web.http.tcp.v4"]) == ["b-10.1.0.2-8080"]
    assert w.controller._wait_for_work() == "partial"  # the change goes first ...
    assert w.controller.sync_partial().ok  # ... and takes the spare over
    farm = w.farms()["k8s.default.web.http.tcp.v4"]
    assert [b.ip for b in farm.backends] == ["10.1.0.1", "10.1.0.5"]


def test_a_full_sync_after_a_restart_of_the_agent_finds_the_spares_nftlb_holds() -> None:
    w = world_with_a_spare()
    again = Controller(
        Settings("n1"), w.client, w.services, w.slices, w.nodes, Metrics(), get_logger()
    )
    assert again.sync_full().ok and again.last_result.requests == 0  # spares are not urgent
    assert again.metrics.spare_backends._value.get() == 1
    assert again._wait_for_work() == "cleanup"
    assert again.sync_cleanup().ok
    assert [b.ip for b in w.farms()["k8s.default.web.http.tcp.v4"].backends] == ["10.1.0.1"]
