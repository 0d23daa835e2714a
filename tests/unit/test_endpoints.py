"""Which endpoints serve a Service port: readiness, termination fallback, locality, families."""

from __future__ import annotations

from reconciler.core.endpoints import Target, select_endpoints
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Service,
    ServicePort,
    TargetRef,
)

HTTP = ServicePort("http", Protocol.TCP, 80, "web")
WEB = Service("shop", "web", cluster_ips=("10.96.0.1",), ports=(HTTP,))
V4, V6 = Family.IPV4, Family.IPV6


def ep(
    *addresses: str,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    node: str = "n1",
    pod: str | None = None,
) -> Endpoint:
    return Endpoint(
        addresses=addresses,
        ready=ready,
        serving=ready if serving is None else serving,
        terminating=terminating,
        node_name=node,
        target_ref=TargetRef("Pod", "shop", pod, pod + "-uid") if pod else None,
    )


def sl(
    *endpoints: Endpoint,
    name: str = "web-a",
    ports: tuple[EndpointPort, ...] = (EndpointPort("http", Protocol.TCP, 8080),),
    address_type: str = "IPv4",
    service: str = "web",
    namespace: str = "shop",
) -> EndpointSlice:
    return EndpointSlice(namespace, name, "1", service, address_type, endpoints, ports)


def select(
    *slices: EndpointSlice,
    port: ServicePort = HTTP,
    family: Family = V4,
    node: str = "n1",
    local: bool = False,
) -> list[tuple[str, int]]:
    return [(t.ip, t.port) for t in select_endpoints(WEB, port, slices, family, node, local)]


def test_ready_endpoints_with_the_slice_port_number() -> None:
    assert select(sl(ep("10.244.0.2"), ep("10.244.0.1"))) == [
        ("10.244.0.1", 8080),
        ("10.244.0.2", 8080),
    ]


def test_targets_carry_node_and_target_ref() -> None:
    [target] = select_endpoints(WEB, HTTP, [sl(ep("10.244.0.1", pod="web-1"))], V4, "n1", False)
    assert target == Target(
        "10.244.0.1", 8080, "n1", TargetRef("Pod", "shop", "web-1", "web-1-uid")
    )


def test_not_ready_endpoints_are_left_out_while_any_is_ready() -> None:
    slices = sl(
        ep("10.244.0.1"),
        ep("10.244.0.2", ready=False),
        ep("10.244.0.3", ready=False, serving=True, terminating=True),
    )
    assert select(slices) == [("10.244.0.1", 8080)]


def test_without_ready_endpoints_serving_terminating_ones_take_over() -> None:
    slices = sl(
        ep("10.244.0.2", ready=False),  # not serving: starting up or failing
        ep("10.244.0.3", ready=False, serving=True, terminating=True),
        ep("10.244.0.4", ready=False, serving=False, terminating=True),
        ep("10.244.0.5", ready=False, serving=True, terminating=False),
    )
    assert select(slices) == [("10.244.0.3", 8080)]


def test_no_usable_endpoint_gives_nothing() -> None:
    assert select(sl(ep("10.244.0.2", ready=False))) == []
    assert select() == []


def test_local_only_keeps_this_nodes_endpoints() -> None:
    slices = sl(ep("10.244.0.1", node="n1"), ep("10.244.0.2", node="n2"), ep("10.244.0.3", node=""))
    assert select(slices, node="n1", local=True) == [("10.244.0.1", 8080)]
    assert select(slices, node="n2", local=True) == [("10.244.0.2", 8080)]
    assert len(select(slices, node="n1", local=False)) == 3


def test_local_only_with_an_unknown_node_name_selects_nothing() -> None:
    assert select(sl(ep("10.244.0.3", node="")), node="", local=True) == []


def test_termination_fallback_is_decided_within_the_local_set() -> None:
    slices = sl(
        ep("10.244.0.1", node="n2"),  # ready, but elsewhere
        ep("10.244.0.2", ready=False, serving=True, terminating=True, node="n1"),
    )
    assert select(slices, node="n1", local=True) == [("10.244.0.2", 8080)]
    assert select(slices, node="n1", local=False) == [("10.244.0.1", 8080)]


def test_the_slice_port_is_matched_by_name_and_protocol() -> None:
    ports = (
        EndpointPort("metrics", Protocol.TCP, 9090),
        EndpointPort("http", Protocol.UDP, 7070),
        EndpointPort("http", Protocol.TCP, 8080),
    )
    assert select(sl(ep("10.244.0.1"), ports=ports)) == [("10.244.0.1", 8080)]
    udp = ServicePort("http", Protocol.UDP, 80)
    assert select(sl(ep("10.244.0.1"), ports=ports), port=udp) == [("10.244.0.1", 7070)]
    sctp = ServicePort("http", Protocol.SCTP, 80)
    assert select(sl(ep("10.244.0.1"), ports=ports), port=sctp) == []


def test_an_unnamed_service_port_matches_the_unnamed_slice_port() -> None:
    unnamed = ServicePort("", Protocol.TCP, 80)
    ports = (EndpointPort("", Protocol.TCP, 8080), EndpointPort("http", Protocol.TCP, 9090))
    assert select(sl(ep("10.244.0.1"), ports=ports), port=unnamed) == [("10.244.0.1", 8080)]


def test_a_slice_whose_matching_port_has_no_number_is_skipped() -> None:
    no_number = sl(
        ep("10.244.0.1"), name="web-a", ports=(EndpointPort("http", Protocol.TCP, None),)
    )
    fine = sl(ep("10.244.0.2"), name="web-b")
    assert select(no_number, fine) == [("10.244.0.2", 8080)]


def test_only_slices_of_this_service_count() -> None:
    assert select(sl(ep("10.244.0.1"), service="db")) == []
    assert select(sl(ep("10.244.0.1"), namespace="other")) == []


def test_family_filtering_by_address_type_and_address() -> None:
    v4 = sl(ep("10.244.0.1"), name="web-v4")
    v6 = sl(ep("fd02::1"), name="web-v6", address_type="IPv6")
    mislabelled = sl(ep("fd02::9", "10.244.0.9"), name="web-x", address_type="IPv6")
    fqdn = sl(ep("db.example.com"), name="web-f", address_type="FQDN")
    assert select(v4, v6, mislabelled, fqdn, family=V4) == [("10.244.0.1", 8080)]
    assert select(v4, v6, mislabelled, fqdn, family=V6) == [("fd02::1", 8080), ("fd02::9", 8080)]


def test_addresses_are_canonical_and_counted_once() -> None:
    """Endpoints built by hand may hold any spelling; the targets are canonical and unique."""
    v6 = sl(ep("FD02::1"), ep("fd02:0::1", "fd02::0:1"), address_type="IPv6")
    assert select(v6, family=V6) == [("fd02::1", 8080)]


def test_one_ip_and_port_in_several_slices_counts_once_first_slice_by_name_wins() -> None:
    b = sl(ep("10.244.0.1", node="n2", pod="from-b"), name="web-b")
    a = sl(ep("10.244.0.1", node="n1", pod="from-a"), ep("10.244.0.2"), name="web-a")
    targets = select_endpoints(WEB, HTTP, [b, a], V4, "n1", False)
    assert [(t.ip, t.port) for t in targets] == [("10.244.0.1", 8080), ("10.244.0.2", 8080)]
    assert targets[0].target_ref is not None
    assert targets[0].target_ref.name == "from-a"
    assert targets[0].node_name == "n1"


def test_the_same_ip_with_different_ports_is_two_targets() -> None:
    a = sl(ep("10.244.0.1"), name="web-a")
    b = sl(ep("10.244.0.1"), name="web-b", ports=(EndpointPort("http", Protocol.TCP, 9090),))
    assert select(a, b) == [("10.244.0.1", 8080), ("10.244.0.1", 9090)]


def test_a_ready_duplicate_counts_even_if_an_earlier_slice_has_it_not_ready() -> None:
    a = sl(ep("10.244.0.1", ready=False), name="web-a")
    b = sl(ep("10.244.0.1"), name="web-b")
    assert select(a, b) == [("10.244.0.1", 8080)]


def test_results_are_sorted_numerically_not_as_text() -> None:
    slices = sl(ep("10.244.0.10"), ep("10.244.0.9"), ep("10.244.0.100"))
    assert select(slices) == [("10.244.0.9", 8080), ("10.244.0.10", 8080), ("10.244.0.100", 8080)]


def test_out_of_range_port_numbers_are_never_selected() -> None:
    bad = sl(ep("10.244.0.1"), ports=(EndpointPort("http", Protocol.TCP, 0),))
    assert select(bad) == []
