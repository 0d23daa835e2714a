"""Properties of parsing and endpoint selection over generated (and junk) API objects."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.annotations import ANNOTATION_PREFIX, FarmOptions, farm_options
from reconciler.core.endpoints import select_endpoints
from reconciler.core.farms import (
    LOG_HOOKS,
    MAX_PERSIST_TTL,
    PACKET_FIELDS,
    Family,
    Scheduler,
    canonical_tokens,
)
from reconciler.core.kube import (
    ClusterState,
    Endpoint,
    EndpointSlice,
    Service,
    ServicePort,
    parse_objects,
)
from reconciler.core.problems import ObjectRef, Problem
from tests.property.strategies import (
    cluster_and_node,
    cluster_objects,
    corrupted,
    endpoint_slice_dicts,
    in_a_list,
    in_typed_lists,
    json_values,
    junk_values,
    node_dicts,
    service_dicts,
)

# Kubernetes name rules, written out here so that the parser's own checks are not trusted.
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
SUBDOMAIN_PART = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_subdomain(s: str) -> bool:
    return len(s) <= 253 and all(SUBDOMAIN_PART.fullmatch(part) for part in s.split("."))


#: Junk that reaches the parsers: the kinds they handle, with anything at all in their fields.
kinded_junk = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            ["Service", "EndpointSlice", "Node", "List", "ServiceList", "EndpointSliceList"]
        ),
        "apiVersion": st.sampled_from(["v1", "discovery.k8s.io/v1", "v2"]) | junk_values,
    },
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["web", "node-a"]) | junk_values,
                "namespace": st.sampled_from(["default"]) | junk_values,
                "labels": junk_values
                | st.just({"kubernetes.io/service-name": "web"})
                | st.dictionaries(st.text(max_size=5), junk_values, max_size=3),
                "annotations": junk_values,
            },
        ),
        "spec": junk_values,
        "status": junk_values,
        "items": st.lists(json_values, max_size=3),
        "endpoints": junk_values,
        "ports": junk_values,
        "addressType": junk_values | st.sampled_from(["IPv4", "IPv6"]),
    },
)

clusters_with_a_node = st.one_of(cluster_and_node(junk=False), cluster_and_node())
#: Clean clusters give the selection oracle the most endpoints (in every phase) to check.
clean_clusters_with_a_node = cluster_and_node(junk=False)

any_input = st.one_of(
    st.lists(json_values | kinded_junk, max_size=5),
    corrupted(cluster_objects()),
    cluster_objects(),
    cluster_objects(junk=False),
)


def _parse(objs: Any) -> tuple[ClusterState, list[Problem]]:
    state, problems = parse_objects(objs)
    assert all(isinstance(p, Problem) for p in problems)
    return state, problems


@given(cluster_objects())
def test_generated_objects_are_json(objs: list[Any]) -> None:
    """The strategies produce what the API could send: JSON, nothing else."""
    assert json.loads(json.dumps(objs)) == objs or "NaN" in json.dumps(objs)


def _canonical(ip: str) -> bool:
    try:
        return str(ipaddress.ip_address(ip)) == ip
    except ValueError:
        return False


@given(any_input)
def test_parse_objects_never_raises(objs: list[Any]) -> None:
    _check_state(_parse(objs)[0])


@given(cluster_objects())
def test_parsed_objects_have_valid_identities_ports_and_canonical_ips(objs: list[Any]) -> None:
    _check_state(_parse(objs)[0])


def _check_state(state: ClusterState) -> None:
    for key, service in state.services.items():
        assert key == (service.namespace, service.name)
        assert LABEL.fullmatch(service.namespace)
        assert SERVICE_NAME.fullmatch(service.name)
        assert all(1 <= p.port <= 65535 for p in service.ports)
        assert all(ip in ("None", "") or _canonical(ip) for ip in service.cluster_ips)
        assert all(map(_canonical, service.external_ips + service.load_balancer_ips))
    for (namespace, service_name), slices in state.slices.items():
        assert [s.name for s in slices] == sorted(s.name for s in slices)
        for s in slices:
            assert (s.namespace, s.service_name) == (namespace, service_name)
            assert LABEL.fullmatch(s.namespace)
            assert is_subdomain(s.name)
            assert SERVICE_NAME.fullmatch(s.service_name)
            assert s.address_type in ("IPv4", "IPv6", "FQDN")
            if s.address_type != "FQDN":
                assert all(_canonical(a) for e in s.endpoints for a in e.addresses)
    for name, node in state.nodes.items():
        assert name == node.name
        assert is_subdomain(node.name)
        assert all(map(_canonical, node.ips(Family.IPV4) + node.ips(Family.IPV6)))


@given(st.one_of(json_values, st.lists(json_values | kinded_junk, max_size=5)))
def test_parse_objects_survives_arbitrary_json(value: Any) -> None:
    _parse(value)


def _shuffled(data: st.DataObject, objs: list[Any]) -> list[Any]:
    """The objects in another order, and the items of any list object too."""
    out: list[Any] = []
    for obj in data.draw(st.permutations(objs)):
        if isinstance(obj, dict) and isinstance(obj.get("items"), list):
            obj = {**obj, "items": _shuffled(data, obj["items"])}
        out.append(obj)
    return out


#: Objects that share their keys but not their content: which one wins must not depend on order.
same_keys = st.lists(
    service_dicts(namespace="default", name="web", junk=False)
    | endpoint_slice_dicts(suffix="abc12", junk=False)
    | node_dicts(name="node-a", junk=False),
    min_size=2,
    max_size=6,
)


@given(st.data(), st.one_of(cluster_objects(), corrupted(cluster_objects()), same_keys))
def test_parse_objects_does_not_depend_on_input_order(data: st.DataObject, objs: list[Any]) -> None:
    shuffled = _shuffled(data, objs)
    state, problems = parse_objects(objs)
    state2, problems2 = parse_objects(shuffled)
    assert state == state2
    assert list(state.services) == list(state2.services)
    assert list(state.slices) == list(state2.slices)
    assert list(state.nodes) == list(state2.nodes)
    assert problems == problems2


@given(cluster_objects(wrap=False))
def test_lists_of_objects_parse_like_the_objects(objs: list[Any]) -> None:
    """API list responses (typed lists, items without kind) and plain Lists change nothing."""
    expected = parse_objects(objs)
    assert parse_objects(in_a_list(objs)) == expected
    assert parse_objects(in_typed_lists(objs)) == expected


@given(cluster_objects())
def test_farm_options_are_always_valid_farm_settings(objs: list[Any]) -> None:
    state, _ = parse_objects(objs)
    for service in state.services.values():
        options, problems = farm_options(service)
        assert options.sched_param == canonical_tokens(options.sched_param, PACKET_FIELDS)
        assert options.persistence == canonical_tokens(options.persistence, PACKET_FIELDS)
        assert options.log == canonical_tokens(options.log, LOG_HOOKS)
        assert bool(options.sched_param) == (options.scheduler is Scheduler.HASH)
        assert 0 <= options.est_connlimit <= 1_000_000
        assert 1 <= options.persist_ttl <= MAX_PERSIST_TTL
        for p in problems:
            assert p.ref == ObjectRef("Service", service.namespace, service.name)
            assert p.key
        ours = [k for k, _ in service.annotations if k.startswith(ANNOTATION_PREFIX)]
        if not ours and service.session_affinity != "ClientIP":
            assert options == FarmOptions()
            assert problems == []


def _sources(
    service: Service,
    port: ServicePort,
    slices: Sequence[EndpointSlice],
    family: Family,
    node_name: str,
    local_only: bool,
) -> list[tuple[str, int, Endpoint]]:
    """(ip, port, endpoint) for every address a target could come from, worked out directly.

    Like kube-proxy's endpointslicecache, an (IP, port) in several slices is one endpoint before
    locality is looked at: the copy in the best state (ready, not terminating, serving), the
    first by slice name among equals. Only an endpoint's first address is its address.
    """
    address_type = "IPv4" if family is Family.IPV4 else "IPv6"
    best: dict[tuple[str, int], Endpoint] = {}
    for s in sorted(slices, key=lambda s: s.name):
        if (s.namespace, s.service_name, s.address_type) != (*service.key, address_type):
            continue
        numbers = [p.port for p in s.ports if (p.name, p.protocol) == (port.name, port.protocol)]
        number = numbers[0] if numbers else None
        if number is None:
            continue
        for e in s.endpoints:
            known = best.get((e.addresses[0], number))
            state = (e.ready, not e.terminating, e.serving)
            if known is None or state > (known.ready, not known.terminating, known.serving):
                best[(e.addresses[0], number)] = e
    return [
        (ip, number, e)
        for (ip, number), e in best.items()
        if not local_only or e.node_name == node_name
    ]


@given(clean_clusters_with_a_node)
def test_selected_endpoints_are_of_the_family_and_come_from_the_services_slices(
    pair: tuple[list[Any], str],
) -> None:
    objs, node_name = pair
    state, _ = parse_objects(objs)
    for service in state.services.values():
        slices = state.slices_for(service)
        for port in service.ports:
            for family in Family:
                version = 4 if family is Family.IPV4 else 6
                for local_only in (False, True):
                    targets = select_endpoints(service, port, slices, family, node_name, local_only)
                    keys = [(ipaddress.ip_address(t.ip), t.port) for t in targets]
                    assert keys == sorted(set(keys)), "sorted and unique"
                    sources = _sources(service, port, slices, family, node_name, local_only)
                    any_ready = any(e.ready for _, _, e in sources)
                    for t in targets:
                        assert ipaddress.ip_address(t.ip).version == version
                        assert 1 <= t.port <= 65535
                        if local_only:
                            assert t.node_name == node_name
                        # From a slice of this Service and port, and ready when any is ready,
                        # otherwise serving and terminating (kube-proxy's fallback).
                        assert any(
                            (ip, number, e.node_name, e.target_ref)
                            == (t.ip, t.port, t.node_name, t.target_ref)
                            and (e.ready if any_ready else e.serving and e.terminating)
                            for ip, number, e in sources
                        )
                    wanted = {
                        (ip, number)
                        for ip, number, e in sources
                        if (e.ready if any_ready else e.serving and e.terminating)
                    }
                    assert {(t.ip, t.port) for t in targets} == wanted, "nothing usable is lost"


@given(clusters_with_a_node)
def test_selection_ignores_slices_of_other_services(pair: tuple[list[Any], str]) -> None:
    """Handing every slice in the cluster to select_endpoints changes nothing."""
    objs, node_name = pair
    state, _ = parse_objects(objs)
    every_slice = [s for group in state.slices.values() for s in group]
    for service in state.services.values():
        for port in service.ports:
            for family in Family:
                own = select_endpoints(
                    service, port, state.slices_for(service), family, node_name, False
                )
                assert own == select_endpoints(service, port, every_slice, family, node_name, False)
