"""Which UDP conntrack entries are stale (core/conntrack_plan.py), by example."""

from __future__ import annotations

from typing import Any

from reconciler.core.conntrack_plan import (
    ConntrackFilter,
    Entry,
    UdpFrontend,
    after_cleanup,
    conntrack_plan,
    stale_entries,
    udp_frontends,
)
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import ClusterState, parse_endpoint_slice, parse_node, parse_service

V4, V6 = Family.IPV4, Family.IPV6
NODE = parse_node(
    {
        "metadata": {"name": "n1"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "InternalIP", "address": "fd00:1::10"},
            ]
        },
    }
)[0]


def dns(**spec: Any) -> Any:
    raw = {
        "metadata": {"name": "dns", "namespace": "kube-system"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
            ],
            **spec,
        },
    }
    return parse_service(raw)[0]


def slice_(*endpoints: dict[str, Any], family: str = "IPv4", port: int = 5353) -> Any:
    raw = {
        "metadata": {
            "name": f"dns-{family.lower()}",
            "namespace": "kube-system",
            "labels": {"kubernetes.io/service-name": "dns"},
        },
        "addressType": family,
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
        "endpoints": list(endpoints),
    }
    return parse_endpoint_slice(raw)[0]


def ep(ip: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions, "nodeName": "n2"}


def state(svc: Any, *slices: Any) -> ClusterState:
    return ClusterState.build([svc], slices, [NODE])


def entry(
    dst: tuple[str, int], reply: tuple[str, int], *, protocol: Protocol = Protocol.UDP
) -> Entry:
    family = V6 if ":" in dst[0] else V4
    return Entry(family, protocol, ("10.244.9.9", 40000), dst, reply)


def test_frontends_are_every_udp_address_of_the_service_with_its_serving_endpoints() -> None:
    svc = dns(type="LoadBalancer", externalIPs=["203.0.113.7"])
    svc = parse_service(
        {
            "metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {**_spec(svc), "type": "LoadBalancer", "externalIPs": ["203.0.113.7"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}},
        }
    )[0]
    s = slice_(
        ep("10.244.1.1"),
        ep("10.244.1.2", ready=False, serving=True, terminating=True),
        ep("10.244.1.3", ready=False, serving=False),
    )
    fronts = udp_frontends(svc, state(svc, s), "n1")
    serving = frozenset({("10.244.1.1", 5353), ("10.244.1.2", 5353)})
    assert fronts == tuple(
        sorted(
            UdpFrontend(V4, ip, port, serving)
            for ip, port in (
                ("10.96.0.10", 53),
                ("203.0.113.7", 53),
                ("198.51.100.1", 53),
                ("192.168.1.10", 30053),  # the node port, on this node's address only
            )
        )
    )


def _spec(svc: Any) -> dict[str, Any]:
    return {
        "clusterIP": svc.cluster_ips[0],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
        ],
    }


def test_ipv6_frontends_use_ipv6_endpoints() -> None:
    svc = dns(clusterIPs=["10.96.0.10", "fd00::10"], ipFamilies=["IPv4", "IPv6"])
    fronts = udp_frontends(
        svc, state(svc, slice_(ep("10.244.1.1")), slice_(ep("fd02::1"), family="IPv6")), "n1"
    )
    assert {(f.family, f.ip, f.port, f.serving) for f in fronts} == {
        (V4, "10.96.0.10", 53, frozenset({("10.244.1.1", 5353)})),
        (V6, "fd00::10", 53, frozenset({("fd02::1", 5353)})),
    }


def test_no_frontends_for_tcp_only_headless_external_name_or_other_proxies() -> None:
    tcp = parse_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
        }
    )[0]
    assert udp_frontends(tcp, state(tcp), "n1") == ()
    assert udp_frontends(dns(clusterIP="None"), state(dns(clusterIP="None")), "n1") == ()
    other = parse_service(
        {
            "metadata": {
                "name": "dns",
                "namespace": "kube-system",
                "labels": {"service.kubernetes.io/service-proxy-name": "other"},
            },
            "spec": _spec(dns()),
        }
    )[0]
    assert udp_frontends(other, state(other), "n1") == ()


def test_first_plan_checks_every_frontend_with_endpoints_and_none_without() -> None:
    svc = dns()
    with_eps = {svc.key: udp_frontends(svc, state(svc, slice_(ep("10.244.1.1"))), "n1")}
    plan = conntrack_plan({}, with_eps)
    assert plan.frontends == {(V4, "10.96.0.10", 53): frozenset({("10.244.1.1", 5353)})}
    without = {svc.key: udp_frontends(svc, state(svc), "n1")}
    assert not conntrack_plan({}, without)


def test_a_plan_of_what_was_cleaned_is_empty_and_a_change_is_checked_again() -> None:
    svc = dns()
    before = {svc.key: udp_frontends(svc, state(svc, slice_(ep("10.244.1.1"))), "n1")}
    assert not conntrack_plan(before, before)
    after = {svc.key: udp_frontends(svc, state(svc, slice_(ep("10.244.1.2"))), "n1")}
    plan = conntrack_plan(before, after)
    assert plan.frontends == {(V4, "10.96.0.10", 53): frozenset({("10.244.1.2", 5353)})}
    assert not conntrack_plan(after_cleanup(before, after, after.keys()), after)


def test_stale_entries_point_at_a_gone_endpoint_or_were_made_while_there_were_none() -> None:
    plan = ConntrackFilter({(V4, "10.96.0.10", 53): frozenset({("10.244.1.2", 5353)})})
    gone = entry(("10.96.0.10", 53), ("10.244.1.1", 5353))
    current = entry(("10.96.0.10", 53), ("10.244.1.2", 5353))
    black_hole = entry(("10.96.0.10", 53), ("10.96.0.10", 53))  # never DNATed
    other_port = entry(("10.96.0.10", 54), ("10.244.1.1", 5353))
    elsewhere = entry(("8.8.8.8", 53), ("8.8.8.8", 53))
    tcp = entry(("10.96.0.10", 53), ("10.244.1.1", 5353), protocol=Protocol.TCP)
    entries = [gone, current, black_hole, other_port, elsewhere, tcp]
    assert stale_entries(plan, entries) == [gone, black_hole]


def test_an_endpoint_on_another_port_of_the_same_ip_is_stale() -> None:
    plan = ConntrackFilter({(V4, "10.96.0.10", 53): frozenset({("10.244.1.2", 5353)})})
    assert plan.is_stale(entry(("10.96.0.10", 53), ("10.244.1.2", 53)))


def test_two_services_on_one_frontend_keep_both_endpoint_sets() -> None:
    a = UdpFrontend(V4, "203.0.113.7", 53, frozenset({("10.244.1.1", 53)}))
    b = UdpFrontend(V4, "203.0.113.7", 53, frozenset({("10.244.2.2", 53)}))
    plan = conntrack_plan({}, {("x", "a"): (a,), ("x", "b"): (b,)})
    assert plan.frontends[(V4, "203.0.113.7", 53)] == a.serving | b.serving


def test_after_cleanup_of_everything_forgets_deleted_services() -> None:
    f = UdpFrontend(V4, "10.96.0.10", 53, frozenset({("10.244.1.1", 53)}))
    cleaned = {("a", "a"): (f,), ("b", "b"): (f,)}
    assert after_cleanup(cleaned, {("a", "a"): (f,)}) == {("a", "a"): (f,)}
    assert after_cleanup(cleaned, {("a", "a"): ()}, [("a", "a")]) == {("b", "b"): (f,)}
    assert conntrack_plan({}, {}).families == ()
    both = ConntrackFilter({(V6, "fd00::10", 53): f.serving, (V4, "10.96.0.10", 53): f.serving})
    assert both.families == (V4, V6)
