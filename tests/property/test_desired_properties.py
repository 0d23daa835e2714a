"""Properties of desired_farms over generated cluster state (API JSON, junk included)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import desired_farms
from reconciler.core.endpoints import select_endpoints
from reconciler.core.farms import validate_farms
from reconciler.core.kube import parse_objects
from reconciler.core.names import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    FarmKey,
    farm_name,
    frontend_segment,
    parse_farm_name,
    port_segment,
)
from tests.property.strategies import cluster_and_node


def _keys_of(state: Any, ns: str, name: str, node: str) -> dict[str, FarmKey]:
    """Every farm name the Service could produce, mapped to its key (for cut names too)."""
    svc = state.services[(ns, name)]
    out = {}
    for port in svc.ports:
        for family in svc.ip_families or ():
            segments = [""]
            if node in state.nodes:
                segments += [
                    frontend_segment(NODE_PORT, ip) for ip in state.nodes[node].ips(family)
                ]
            segments += [frontend_segment(EXTERNAL_IP, ip) for ip in svc.external_ips]
            segments += [frontend_segment(LOAD_BALANCER, ip) for ip in svc.load_balancer_ips]
            for segment in segments:
                seg = port_segment(port.name, port.port)
                k = FarmKey(ns, name, seg, port.protocol, family, segment)
                out[farm_name(k)] = k
    return out


@given(cluster_and_node())
def test_never_raises_and_every_farm_is_valid_for_nftlb(data: tuple[list[Any], str]) -> None:
    objs, node = data
    state, _ = parse_objects(objs)
    desired = desired_farms(state, node)
    assert validate_farms(desired.farms) == []
    names = [f.name for f in desired.farms]
    assert len(names) == len(set(names))
    tuples = [a.tuple_key for f in desired.farms for a in f.addresses]
    assert len(tuples) == len(set(tuples)), "two farms share (protocol, address, port)"


@given(cluster_and_node())
def test_names_parse_back_to_their_source(data: tuple[list[Any], str]) -> None:
    objs, node = data
    state, _ = parse_objects(objs)
    desired = desired_farms(state, node)
    owners = desired.owner_map()
    for farm in desired.farms:
        ns, name = owners[farm.name]
        key = parse_farm_name(farm.name)
        if key is not None:
            assert (key.namespace, key.service, key.family, key.protocol) == (
                ns,
                name,
                farm.family,
                farm.protocol,
            )
        assert farm.name in _keys_of(state, ns, name, node)


@given(cluster_and_node(), st.randoms(use_true_random=False))
def test_output_does_not_depend_on_input_order(
    data: tuple[list[Any], str], rnd: random.Random
) -> None:
    objs, node = data
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    a = desired_farms(parse_objects(objs)[0], node)
    b = desired_farms(parse_objects(shuffled)[0], node)
    assert a.farms == b.farms
    assert a.problems == b.problems


@given(cluster_and_node())
def test_every_selected_endpoint_is_a_backend_of_the_right_farm_and_no_other(
    data: tuple[list[Any], str],
) -> None:
    objs, node = data
    state, _ = parse_objects(objs)
    desired = desired_farms(state, node)
    owners = desired.owner_map()
    for farm in desired.farms:
        svc = state.services[owners[farm.name]]
        key = _keys_of(state, svc.namespace, svc.name, node)[farm.name]
        port = next(
            p
            for p in svc.ports
            if port_segment(p.name, p.port) == key.port and p.protocol is key.protocol
        )
        local = (
            svc.external_traffic_policy if key.external else svc.internal_traffic_policy
        ) == "Local"
        targets = select_endpoints(svc, port, state.slices_for(svc), farm.family, node, local)
        got = {(b.ip, b.port) for b in farm.backends}
        assert got == {(t.ip, t.port) for t in targets}
