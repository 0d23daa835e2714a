"""Events: the recorder against the fake API server over real HTTP (the official client).

One Event per problem for the cluster (a deterministic name; a second node finds it and leaves
it), a lasting problem refreshed with a PATCH of the same Event before the event TTL, failures
backed off, and nothing of it ever in the sync's path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from reconciler.core.problems import ObjectRef, Problem
from reconciler.kubeapi.events import REFRESH, EventRecorder, event_name, kube_event_api
from reconciler.testing.fakeapi import FakeApiServer

REF = ObjectRef("Service", "default", "web")
BAD = Problem(REF, "InvalidAnnotation", "mode 'dsr' is not allowed; allowed: snat", key="mode")


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]},
            }
        )
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _config(fake: FakeApiServer) -> Any:
    config = kubernetes.client.Configuration()
    config.host = fake.url
    config.retries = 0
    return config


def client(fake: FakeApiServer, timeout: tuple[float, float] = (2.0, 2.0)) -> Any:
    return kube_event_api(kubernetes.client.ApiClient(_config(fake)), timeout)


def recorder(fake: FakeApiServer, node: str, clock: Clock, **kw: Any) -> EventRecorder:
    return EventRecorder(client(fake), node, clock=clock, jitter=lambda: 1.0, **kw)


def uid(fake: FakeApiServer) -> str:
    svc = fake.get("Service", "default", "web")
    assert svc is not None
    return str(svc["metadata"]["uid"])


def events(fake: FakeApiServer) -> list[dict[str, Any]]:
    return fake.objects("Event", "default")


def writes(fake: FakeApiServer) -> list[str]:
    return [r.method for r in fake.requests if "/events" in r.path and r.method != "GET"]


def test_a_problem_is_one_warning_on_the_service_with_its_uid(fake: FakeApiServer) -> None:
    clock = Clock()
    rec = recorder(fake, "n1", clock)
    rec.record(
        [BAD, Problem(ObjectRef("Node", "", "n1"), "Node", "not a Service")], lambda r: uid(fake)
    )
    rec.step()
    [ev] = events(fake)
    assert ev["metadata"]["name"] == event_name(BAD, uid(fake))
    assert ev["involvedObject"] == {
        "kind": "Service",
        "namespace": "default",
        "name": "web",
        "apiVersion": "v1",
        "uid": uid(fake),
    }
    assert (ev["type"], ev["reason"], ev["count"]) == ("Warning", "InvalidAnnotation", 1)
    assert ev["source"] == {"component": "kube-nftlb"}  # the Service's problem, not the node's
    assert ev["reportingInstance"] == "kube-nftlb-n1"
    rec.step()
    rec.record([BAD], lambda r: uid(fake))
    rec.step()
    assert writes(fake) == ["POST"]  # once while it lasts


def test_every_node_writes_the_same_event_once_for_the_cluster(fake: FakeApiServer) -> None:
    clock = Clock()
    nodes = [recorder(fake, f"n{i}", clock) for i in range(3)]
    for rec in nodes:
        rec.record([BAD], lambda r: uid(fake))
        rec.step()
    assert len(events(fake)) == 1
    # The first created it; the others were refused (409), read it and found it fresh.
    assert writes(fake) == ["POST", "POST", "POST"]
    assert events(fake)[0]["count"] == 1


def test_a_lasting_problem_updates_the_same_event_before_the_ttl(fake: FakeApiServer) -> None:
    clock = Clock()
    n1, n2 = recorder(fake, "n1", clock), recorder(fake, "n2", clock)
    for rec in (n1, n2):
        rec.record([BAD], lambda r: uid(fake))
        rec.step()
    [first] = events(fake)
    fake.clear_requests()
    clock.now += REFRESH / 2  # not due yet for either
    n1.step()
    n2.step()
    assert fake.requests == []
    clock.now += REFRESH / 2 + 1  # due for both: one writes, the other reads and sees it done
    n1.step()
    n2.step()
    assert writes(fake) == ["PATCH"]
    [ev] = events(fake)
    assert ev["metadata"]["uid"] == first["metadata"]["uid"]  # the same Event, not a new one
    assert ev["count"] == 2
    assert ev["lastTimestamp"] > first["lastTimestamp"]
    assert ev["firstTimestamp"] == first["firstTimestamp"]
    for _ in range(3):  # one refresh a period, for as long as it lasts, well inside one hour
        clock.now += REFRESH + 1
        n2.step()
        n1.step()
    assert events(fake)[0]["count"] == 5
    assert REFRESH <= 3600 / 2


def test_an_expired_event_is_made_again_and_a_gone_problem_is_left_alone(
    fake: FakeApiServer,
) -> None:
    clock = Clock()
    rec = recorder(fake, "n1", clock)
    rec.record([BAD], lambda r: uid(fake))
    rec.step()
    fake.delete("Event", "default", events(fake)[0]["metadata"]["name"])  # the TTL
    clock.now += REFRESH + 1
    rec.step()
    assert [e["count"] for e in events(fake)] == [1]
    rec.record([], lambda r: "")
    fake.clear_requests()
    clock.now += 10 * REFRESH
    rec.step()
    assert fake.requests == []


def test_a_new_value_of_the_same_problem_updates_its_event_at_once(fake: FakeApiServer) -> None:
    clock = Clock()
    rec = recorder(fake, "n1", clock)
    rec.record([BAD], lambda r: uid(fake))
    rec.step()
    other = Problem(REF, "InvalidAnnotation", "mode 'tunnel' is not allowed", key="mode")
    clock.now += 5
    rec.record([other], lambda r: uid(fake))
    rec.step()
    [ev] = events(fake)
    assert ev["message"] == other.message and ev["count"] == 2
    assert writes(fake) == ["POST", "PATCH"]


def test_refused_events_are_backed_off_and_reported(fake: FakeApiServer) -> None:
    clock = Clock()
    errors: list[tuple[Problem | None, Exception]] = []
    results: list[str] = []
    rec = recorder(
        fake, "n1", clock, on_error=lambda p, e: errors.append((p, e)), on_write=results.append
    )
    fake.fail_next("create", 403, "/events", times=3)
    rec.record([BAD], lambda r: uid(fake))
    for step in (0, 0, 4, 1, 9, 1, 19, 1):  # tries at 0, 5, 15 and 35 s: 5 s doubling
        clock.now += step
        rec.step()
    assert writes(fake) == ["POST"] * 4
    assert [getattr(e, "status", None) for _, e in errors] == [403] * 3
    assert {p for p, _ in errors} == {BAD}
    assert results == ["failed", "failed", "failed", "created"]
    assert len(events(fake)) == 1


def test_a_hanging_api_server_never_holds_up_record(fake: FakeApiServer) -> None:
    """The worker's request ends at its timeout; the sync thread's record() returns at once."""
    fake.hang_next("create", 5.0, "/events")
    errors: list[Exception] = []
    rec = EventRecorder(client(fake, timeout=(1.0, 0.5)), "n1", lambda p, e: errors.append(e))
    rec.start()
    try:
        started = time.monotonic()
        rec.record([BAD])
        rec.record([BAD, Problem(REF, "DuplicatePort", "port 'http' is listed twice")])
        assert time.monotonic() - started < 0.1
        assert rec.flush(4)  # well before the hung request would have been answered
    finally:
        rec.stop()
    assert len(errors) == 1 and "timed out" in str(errors[0]).lower()
    # The hung create timed out (retried after the backoff); the other went through.
    assert [e["reason"] for e in events(fake)] == ["InvalidAnnotation"]


class Blocked:
    """An Event API whose calls wait until released, like an API server that hangs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.release.wait(10)
        raise OSError("timed out")

    get = patch = create  # type: ignore[assignment]


def test_the_worker_survives_anything_and_stops_promptly() -> None:
    api = Blocked()
    rec = EventRecorder(api, "n1")  # type: ignore[arg-type]
    rec.start()
    rec.record([BAD])
    deadline = time.monotonic() + 5
    while api.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    rec.stop(timeout=0.2)
    assert time.monotonic() - started < 1
    api.release.set()
