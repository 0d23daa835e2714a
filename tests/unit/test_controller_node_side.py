"""After a successful sync the controller cleans UDP conntrack, updates the healthCheckNodePorts
and marks the proxy healthy; a failed sync does none of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from tests.unit.test_controller import World

from reconciler.agent.controller import Controller, Settings
from reconciler.agent.health import ProxyHealthTracker
from reconciler.agent.logs import get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.conntrack_plan import ConntrackFilter
from reconciler.core.farms import Family
from reconciler.core.health import ServiceHealth
from reconciler.core.kube import parse_endpoint_slice, parse_service
from reconciler.kernel.conntrack import ConntrackError, FamilyResult

V4 = Family.IPV4
CLUSTER_IP = "10.96.0.10"


class FakeConntrack:
    def __init__(self) -> None:
        self.plans: list[ConntrackFilter] = []
        self.fail = False

    def cleanup(self, plan: ConntrackFilter) -> Sequence[FamilyResult]:
        self.plans.append(plan)
        if self.fail:
            raise ConntrackError("cannot list conntrack entries: operation not permitted")
        return [FamilyResult(f, 3, 1, 0.001) for f in plan.families]


class FakeHealthChecks:
    def __init__(self) -> None:
        self.synced: list[dict[int, ServiceHealth]] = []

    def sync(self, ports: dict[int, ServiceHealth]) -> None:
        self.synced.append(dict(ports))


def dns(**spec: Any) -> Any:
    raw = {
        "metadata": {"name": "dns", "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "clusterIP": CLUSTER_IP,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
            **spec,
        },
    }
    return parse_service(raw)[0]


def dns_slice(*ips: str, rv: str = "1", node: str = "n1") -> Any:
    raw = {
        "metadata": {
            "name": "dns-1",
            "namespace": "default",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "dns"},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "dns", "port": 5353, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [ip], "nodeName": node} for ip in ips],
    }
    return parse_endpoint_slice(raw)[0]


class NodeSide:
    def __init__(self) -> None:
        self.world = w = World()
        self.conntrack = FakeConntrack()
        self.health_checks = FakeHealthChecks()
        self.clock = {"now": 1000.0}
        self.proxy_health = ProxyHealthTracker(60, lambda: self.clock["now"])
        w.controller = Controller(
            Settings("n1"),
            w.client,
            w.services,
            w.slices,
            w.nodes,
            Metrics(),
            get_logger(),
            conntrack=self.conntrack,
            proxy_health=self.proxy_health,
            health_checks=self.health_checks,  # type: ignore[arg-type]
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.world.logs() if line["event"] == name]


@pytest.fixture
def side() -> Any:
    yield NodeSide()
    structlog.reset_defaults()


def test_first_sync_checks_every_udp_frontend_with_endpoints(side: NodeSide) -> None:
    side.world.put_service(dns())
    side.world.put_slice(dns_slice("10.244.1.1"))
    assert side.world.controller.sync_full().ok
    assert [p.frontends for p in side.conntrack.plans] == [
        {(V4, CLUSTER_IP, 53): frozenset({("10.244.1.1", 5353)})}
    ]
    [line] = side.events("conntrack.cleanup")
    assert line["ip_family"] == "ipv4" and line["deleted"] == 1 and line["frontends"] == 1


def test_a_sync_that_changes_nothing_udp_lists_nothing(side: NodeSide) -> None:
    side.world.put_service(dns())
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.world.controller.sync_full()
    side.world.controller.sync_full()
    side.world.put_service(dns(sessionAffinity="ClientIP"))  # not a UDP endpoint change
    side.world.controller.sync_partial()
    assert len(side.conntrack.plans) == 1


def test_a_replaced_endpoint_is_checked_on_the_partial_sync(side: NodeSide) -> None:
    side.world.put_service(dns())
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.world.controller.sync_full()
    side.world.put_slice(dns_slice("10.244.1.2", rv="2"))
    assert side.world.controller.sync_partial().ok
    assert side.conntrack.plans[-1].frontends == {
        (V4, CLUSTER_IP, 53): frozenset({("10.244.1.2", 5353)})
    }


def test_a_service_without_endpoints_is_not_checked_until_it_has_some(side: NodeSide) -> None:
    side.world.put_service(dns())
    side.world.controller.sync_full()
    assert side.conntrack.plans == []
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.world.controller.sync_partial()
    assert side.conntrack.plans[-1].frontends == {
        (V4, CLUSTER_IP, 53): frozenset({("10.244.1.1", 5353)})
    }


def test_a_failed_cleanup_is_logged_counted_and_everything_checked_next_time(
    side: NodeSide,
) -> None:
    side.world.put_service(dns())
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.conntrack.fail = True
    assert side.world.controller.sync_full().ok  # the sync itself stands
    [line] = side.events("conntrack.failed")
    assert "not permitted" in line["error"]
    metrics = side.world.controller.metrics.render().decode()
    assert 'kube_nftlb_conntrack_cleanup_errors_total{ip_family="ipv4"} 1.0' in metrics
    side.conntrack.fail = False
    side.world.controller.sync_full()
    assert len(side.conntrack.plans) == 2
    assert side.conntrack.plans[-1].frontends == side.conntrack.plans[0].frontends
    metrics = side.world.controller.metrics.render().decode()
    assert 'kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="ipv4"} 1.0' in metrics


def test_a_failed_sync_cleans_nothing_and_stays_pending(side: NodeSide) -> None:
    side.world.put_service(dns())
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.world.model.key = "other"  # nftlb refuses the key
    assert not side.world.controller.sync_full().ok
    assert side.conntrack.plans == [] and side.health_checks.synced == []
    side.clock["now"] += 61
    assert not side.proxy_health.healthy()
    side.world.model.key = "k"
    assert side.world.controller.sync_full().ok
    assert side.proxy_health.healthy()


def test_health_check_ports_follow_the_services(side: NodeSide) -> None:
    lb = dns(
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        healthCheckNodePort=32000,
        ports=[{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
    )
    side.world.put_service(lb)
    side.world.put_slice(dns_slice("10.244.1.1"))
    side.world.controller.sync_full()
    assert side.health_checks.synced[-1] == {32000: ServiceHealth("default", "dns", 32000, 1)}
    side.world.put_slice(dns_slice("10.244.2.1", node="n2", rv="2"))
    side.world.controller.sync_partial()
    assert side.health_checks.synced[-1] == {32000: ServiceHealth("default", "dns", 32000, 0)}
    side.world.services.items.pop(lb.key)
    side.world.controller.on_service(lb.key, lb, None)
    side.world.controller.sync_partial()
    assert side.health_checks.synced[-1] == {}


def test_changes_mark_the_proxy_pending_until_synced(side: NodeSide) -> None:
    side.world.put_service(dns())
    assert side.proxy_health.snapshot().pending_since == 1000.0
    side.clock["now"] = 1070
    assert not side.proxy_health.healthy()
    side.world.controller.sync_partial()
    assert side.proxy_health.snapshot().pending_since is None
    assert side.proxy_health.healthy()


def test_a_health_check_port_conflict_is_logged_once(side: NodeSide) -> None:
    for name in ("a", "b"):
        svc = parse_service(
            {
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "type": "LoadBalancer",
                    "clusterIP": f"10.96.0.{ord(name)}",
                    "externalTrafficPolicy": "Local",
                    "healthCheckNodePort": 32000,
                    "ports": [{"port": 80, "nodePort": 30000 + ord(name)}],
                },
            }
        )[0]
        side.world.put_service(svc)
    side.world.controller.sync_full()
    side.world.controller.sync_full()
    assert list(side.health_checks.synced[-1]) == [32000]
    assert side.health_checks.synced[-1][32000].name == "a"
    problems = [
        p for p in side.events("service.problem") if p["reason"] == "HealthCheckPortConflict"
    ]
    assert [p["service"] for p in problems] == ["default/b"]
