"""kube-proxy's health servers: the decisions (core/health.py), the listeners (agent/health.py)."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from reconciler.agent.health import (
    ProxyHealthServer,
    ProxyHealthTracker,
    ServiceHealthServers,
    go_time,
)
from reconciler.agent.http import HttpServers
from reconciler.agent.logs import configure, get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.health import (
    TO_BE_DELETED_TAINT,
    ProxyHealth,
    ServiceHealth,
    health_check_ports,
    node_eligible,
    proxy_health_answer,
    service_health,
    service_health_answer,
)
from reconciler.core.kube import ClusterState, parse_endpoint_slice, parse_node, parse_service

NODE = parse_node({"metadata": {"name": "n1"}})[0]


def lb(name: str = "web", **spec: Any) -> Any:
    raw = {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.1",
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 32000,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
            **spec,
        },
    }
    return parse_service(raw)[0]


def slice_(*endpoints: dict[str, Any], name: str = "web", port: str = "http") -> Any:
    raw = {
        "metadata": {
            "name": f"{name}-{len(endpoints)}-{port}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port, "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }
    return parse_endpoint_slice(raw)[0]


def ep(ip: str, node: str = "n1", **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": conditions}


def health(svc: Any, *slices: Any) -> ServiceHealth | None:
    return service_health(svc, ClusterState.build([svc], slices, [NODE]), "n1")


# -- which ports, and their counts ------------------------------------------------------------


def test_local_ready_endpoints_are_counted_by_distinct_ip() -> None:
    s = slice_(
        ep("10.244.1.1"),
        ep("10.244.1.2"),
        ep("10.244.1.3", ready=False, serving=True, terminating=True),  # terminating: not
        ep("10.244.1.4", ready=False),  # not ready
        ep("10.244.2.1", node="n2"),  # another node
    )
    again = slice_(ep("10.244.1.1"), ep("10.244.1.2"), ep("10.244.1.9"))
    assert health(lb(), s) == ServiceHealth("default", "web", 32000, 2)
    assert health(lb(), s, again) == ServiceHealth("default", "web", 32000, 3)


def test_slices_without_a_port_of_the_service_do_not_count() -> None:
    assert health(lb(), slice_(ep("10.244.1.1"), port="metrics")) == ServiceHealth(
        "default", "web", 32000, 0
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"externalTrafficPolicy": "Cluster"},
        {"type": "NodePort"},
        {"healthCheckNodePort": None},
        {"clusterIP": "None"},
    ],
)
def test_only_load_balancers_with_local_policy_and_a_port_get_a_health_check(
    spec: dict[str, Any],
) -> None:
    assert health(lb(**spec), slice_(ep("10.244.1.1"))) is None


def test_a_service_for_another_proxy_gets_none() -> None:
    svc = parse_service(
        {
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"service.kubernetes.io/service-proxy-name": "other"},
            },
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.1",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "ports": [{"port": 80}],
            },
        }
    )[0]
    assert health(svc) is None


def test_a_bad_health_check_port_is_a_problem() -> None:
    svc, problems = parse_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.1",
                "healthCheckNodePort": 0x10000,
            },
        }
    )
    assert svc is not None and svc.health_check_node_port is None
    assert [p.key for p in problems] == ["spec.healthCheckNodePort"]


def test_two_services_on_one_port_the_first_keeps_it() -> None:
    a, b = ServiceHealth("default", "a", 32000, 1), ServiceHealth("default", "b", 32000, 5)
    ports, problems = health_check_ports([b, a])
    assert ports == {32000: a}
    assert [(p.ref.name, p.reason) for p in problems] == [("b", "HealthCheckPortConflict")]


# -- the answers ------------------------------------------------------------------------------


def test_service_answer_is_kube_proxys() -> None:
    status, body, headers = service_health_answer(ServiceHealth("ns", "web", 32000, 2), True)
    assert status == 200
    assert json.loads(body) == {
        "service": {"namespace": "ns", "name": "web"},
        "localEndpoints": 2,
        "serviceProxyHealthy": True,
    }
    assert dict(headers) == {
        "X-Content-Type-Options": "nosniff",
        "X-Load-Balancing-Endpoint-Weight": "2",
    }
    assert service_health_answer(ServiceHealth("ns", "web", 32000, 0), True)[0] == 503
    unhealthy = service_health_answer(ServiceHealth("ns", "web", 32000, 2), False)
    assert unhealthy[0] == 503 and json.loads(unhealthy[1])["serviceProxyHealthy"] is False


def test_node_eligibility() -> None:
    assert node_eligible(NODE)
    assert not node_eligible(None)
    deleting = parse_node({"metadata": {"name": "n1", "deletionTimestamp": "2024-01-01T00:00:00Z"}})
    assert not node_eligible(deleting[0])
    tainted = parse_node(
        {"metadata": {"name": "n1"}, "spec": {"taints": [{"key": TO_BE_DELETED_TAINT}]}}
    )
    assert not node_eligible(tainted[0])
    other = parse_node({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "x"}]}})
    assert node_eligible(other[0])


def test_proxy_health_times_out_after_its_timeout() -> None:
    assert ProxyHealth(None, None, 60).healthy(1000)
    assert ProxyHealth(940, None, 60).healthy(1000)
    assert not ProxyHealth(939, None, 60).healthy(1000)


def test_proxy_answers_healthz_and_livez() -> None:
    ok = ProxyHealth(None, 900.0, 60)
    status, body, headers = proxy_health_answer("/healthz", ok, NODE, 1000.5, go_time)
    doc = json.loads(body)
    assert status == 200
    assert doc == {
        "lastUpdated": "1970-01-01T00:16:40.5Z",  # healthy: now, as kube-proxy writes it
        "currentTime": "1970-01-01T00:16:40.5Z",
        "nodeEligible": True,
        "healthy": True,
        "status": {
            "IPv4": {"lastUpdated": "1970-01-01T00:16:40.5Z", "healthy": True},
            "IPv6": {"lastUpdated": "1970-01-01T00:16:40.5Z", "healthy": True},
        },
    }
    assert dict(headers)["X-Content-Type-Options"] == "nosniff"
    status, body, _ = proxy_health_answer("/healthz", ok, None, 1000.0, go_time)
    assert status == 503 and json.loads(body)["nodeEligible"] is False
    status, body, _ = proxy_health_answer("/livez", ok, None, 1000.0, go_time)
    assert status == 200 and "nodeEligible" not in json.loads(body)
    stale = ProxyHealth(100.0, 50.0, 60)
    status, body, _ = proxy_health_answer("/livez", stale, NODE, 1000.0, go_time)
    assert status == 503
    assert json.loads(body)["lastUpdated"] == "1970-01-01T00:00:50Z"


def test_go_time() -> None:
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(1700000000.0) == "2023-11-14T22:13:20Z"
    assert go_time(1700000000.25) == "2023-11-14T22:13:20.25Z"


# -- the tracker ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tracker_keeps_the_oldest_pending_change_until_a_sync_after_it() -> None:
    clock = Clock()
    t = ProxyHealthTracker(60, clock)
    assert t.healthy()
    t.queued()
    clock.now = 1030
    t.queued()  # the oldest is kept
    clock.now = 1061
    assert not t.healthy()
    t.updated(started=1050)
    assert t.healthy() and t.snapshot().pending_since is None
    t.queued()  # at 1061, after the next sync started
    t.updated(started=1055)
    assert t.snapshot().pending_since == 1061


# -- the listeners ----------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[HttpServers]:
    s = HttpServers()
    s.start()
    try:
        yield s
    finally:
        s.stop()
        structlog.reset_defaults()


def _get(port: int, path: str = "/") -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_proxy_health_server_counts_its_answers(servers: HttpServers) -> None:
    metrics, clock = Metrics(), Clock()
    tracker = ProxyHealthTracker(60, clock)
    server = ProxyHealthServer(servers, "127.0.0.1", 0, tracker, metrics)
    server.start()
    assert _get(server.port, "/healthz")[0] == 503  # no Node seen yet
    tracker.node = NODE
    assert _get(server.port, "/healthz")[0] == 200
    assert _get(server.port, "/livez")[0] == 200
    text = metrics.render().decode()
    assert 'kubeproxy_proxy_healthz_total{code="503"} 1.0' in text
    assert 'kubeproxy_proxy_healthz_total{code="200"} 1.0' in text
    assert 'kubeproxy_proxy_livez_total{code="200"} 1.0' in text


def test_service_health_servers_follow_the_ports(servers: HttpServers) -> None:
    stream = io.StringIO()
    configure("json", "debug", stream)
    tracker = ProxyHealthTracker(60, Clock())
    metrics = Metrics()
    hc = ServiceHealthServers(servers, "127.0.0.1", tracker, metrics, get_logger())
    p1, p2 = _free_port(), _free_port()
    hc.sync({p1: ServiceHealth("default", "web", p1, 2), p2: ServiceHealth("default", "db", p2, 0)})
    assert hc.ports == {p1, p2}
    status, body = _get(p1, "/healthz")
    assert status == 200 and body["localEndpoints"] == 2
    assert _get(p1, "/any/other/path")[0] == 200
    assert _get(p2)[0] == 503
    hc.sync({p1: ServiceHealth("default", "web", p1, 0)})  # answer changed, db gone
    assert _get(p1)[0] == 503
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p2), timeout=1).close()
    assert "kube_nftlb_health_check_node_ports 1.0" in metrics.render().decode()
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events.count("health.serving") == 2 and events.count("health.closed") == 1


def test_a_port_in_use_is_logged_once_and_retried(servers: HttpServers) -> None:
    stream = io.StringIO()
    configure("json", "debug", stream)
    hc = ServiceHealthServers(servers, "127.0.0.1", ProxyHealthTracker(60), Metrics(), get_logger())
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    want = {port: ServiceHealth("default", "web", port, 1)}
    hc.sync(want)
    hc.sync(want)
    assert hc.ports == set()
    failed = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if json.loads(line)["event"] == "health.listen_failed"
    ]
    assert len(failed) == 1 and failed[0]["service"] == "default/web"
    blocker.close()
    hc.sync(want)
    assert hc.ports == {port}
    assert _get(port)[0] == 200
