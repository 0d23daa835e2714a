"""Properties of the health-check decisions over generated cluster state (API JSON, junk too)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import is_served
from reconciler.core.health import health_check_ports, service_health
from reconciler.core.kube import ClusterState, parse_endpoint_slice, parse_objects, parse_service
from tests.property.strategies import cluster_and_node


@given(cluster_and_node())
def test_each_port_is_served_once_and_every_asking_service_is_served_or_told(
    data: tuple[list[Any], str],
) -> None:
    objs, node = data
    state, _ = parse_objects(objs)
    healths = [h for svc in state.services.values() if (h := service_health(svc, state, node))]
    ports, problems = health_check_ports(healths)
    for svc in state.services.values():
        asks = (
            svc.type == "LoadBalancer"
            and svc.external_traffic_policy == "Local"
            and svc.health_check_node_port is not None
            and not svc.is_headless
            and is_served(svc, "")
        )
        assert (service_health(svc, state, node) is not None) == asks
    served = {(h.namespace, h.name) for h in ports.values()}
    told = {(p.ref.namespace, p.ref.name) for p in problems}
    assert served | told == {(h.namespace, h.name) for h in healths}
    assert not served & told
    for port, h in ports.items():
        assert h.port == port
        assert h.local_endpoints >= 0
        # Never more than the Service's endpoints on this node, whatever their state.
        local = {
            e.addresses[0]
            for s in state.slices_for(state.services[(h.namespace, h.name)])
            for e in s.endpoints
            if e.node_name == node and e.addresses
        }
        assert h.local_endpoints <= len(local)
    assert health_check_ports(reversed(healths)) == (ports, problems)


_endpoints = st.lists(
    st.tuples(
        st.sampled_from(["10.244.1.1", "10.244.1.2", "10.244.1.3", "fd02::1"]),
        st.sampled_from(["n1", "n2", ""]),
        st.sampled_from([None, True, False]),  # ready
        st.sampled_from([None, True, False]),  # terminating
    ),
    max_size=8,
)


@given(st.lists(_endpoints, min_size=1, max_size=3), st.sampled_from(["http", "metrics"]))
def test_the_count_is_the_distinct_ready_local_ips(
    slices: list[list[tuple[str, str, bool | None, bool | None]]], port_name: str
) -> None:
    svc = parse_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.1",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
            },
        }
    )[0]
    parsed = []
    for i, endpoints in enumerate(slices):
        family = "IPv6" if i == 2 else "IPv4"
        raw = {
            "metadata": {
                "name": f"web-{i}",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": family,
            "ports": [{"name": port_name, "port": 8080}],
            "endpoints": [
                {
                    "addresses": [ip],
                    "nodeName": node,
                    "conditions": {
                        k: v for k, v in (("ready", ready), ("terminating", term)) if v is not None
                    },
                }
                for ip, node, ready, term in endpoints
                if (":" in ip) == (family == "IPv6")
            ],
        }
        parsed.append(parse_endpoint_slice(raw)[0])
    state = ClusterState.build([svc], parsed, [])
    health = service_health(svc, state, "n1")
    assert health is not None
    expected = {
        ip
        for i, endpoints in enumerate(slices)
        for ip, node, ready, term in endpoints
        if port_name == "http"
        and (":" in ip) == (i == 2)
        and node == "n1"
        and ready is not False
        and term is not True
    }
    assert health.local_endpoints == len(expected)
