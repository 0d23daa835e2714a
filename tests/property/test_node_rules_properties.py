"""Properties of the node rules over generated cluster state (junk included)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import desired_farms, frontend_farms
from reconciler.core.farms import Family
from reconciler.core.kube import parse_objects
from reconciler.core.node_diff import RuleIndex, build_commands, diff_tables, parse_table
from reconciler.core.node_rules import (
    EXTERNAL,
    INTERNAL,
    TABLE_FAMILY,
    TABLE_NAME,
    DetectLocalMode,
    Element,
    NodeRulesConfig,
    NodeTable,
    NoLocalEndpoints,
    ServiceRules,
    count_no_local,
    desired_node_table,
    desired_shares,
    set_name,
    skeleton,
    table_of,
)
from tests.property.strategies import cluster_and_node
from tests.unit.test_node_rules import _tables_named, kernel_listing

CONFIGS = st.sampled_from(
    [
        NodeRulesConfig(cluster_cidrs=("10.244.0.0/16", "fd00:244::/32")),
        NodeRulesConfig(cluster_cidrs=("10.0.0.0/8",), service_cidrs=("10.96.0.0/12",)),
        NodeRulesConfig(detect_local_mode=DetectLocalMode.NODE_CIDR, masquerade_all=True),
        NodeRulesConfig(
            detect_local_mode=DetectLocalMode.INTERFACE_NAME_PREFIX,
            pod_interface_name_prefix="veth",
            service_cidrs=("10.96.0.0/12", "fd00:96::/112"),
        ),
    ]
)


def _table(objs: list[Any], node: str, config: NodeRulesConfig) -> NodeTable:
    state, _ = parse_objects(objs)
    return desired_node_table(state, desired_farms(state, node), node, config)


@given(cluster_and_node(), CONFIGS)
def test_the_table_of_any_cluster_diffs_empty_with_itself_and_names_only_our_table(
    data: tuple[list[Any], str], config: NodeRulesConfig
) -> None:
    objs, node = data
    t = _table(objs, node, config)
    assert diff_tables(t, t) == []
    commands = build_commands(t)
    assert _tables_named(commands) == {(TABLE_FAMILY, TABLE_NAME)}
    back = parse_table(kernel_listing(commands))
    assert back is not None and diff_tables(t, back) == []
    assert (back.sets, back.elements) == (t.sets, t.elements)
    keys = [(e.set, e.key) for e in t.elements]
    assert len(keys) == len(set(keys)), "a map key with two verdicts"


@given(cluster_and_node(), cluster_and_node(), CONFIGS)
def test_a_diff_between_two_clusters_makes_the_second(
    a: tuple[list[Any], str], b: tuple[list[Any], str], config: NodeRulesConfig
) -> None:
    first = _table(a[0], a[1], config)
    second = _table(b[0], b[1], config)
    commands = diff_tables(second, first)
    assert _tables_named(commands) <= {(TABLE_FAMILY, TABLE_NAME)}
    replayed = parse_table(kernel_listing(build_commands(first) + commands))
    assert replayed is not None
    assert (replayed.sets, replayed.elements) == (second.sets, second.elements)
    assert {n: c.signature for n, c in replayed.chains.items()} == {
        n: c.signature for n, c in second.chains.items()
    }


@st.composite
def _mostly_local(draw: st.DrawFn) -> tuple[list[Any], str]:
    """A cluster whose Services mostly have Local policies and some slices no endpoint on the
    node (drops are rare otherwise)."""
    objs, node = draw(cluster_and_node(junk=False))
    objs = copy.deepcopy(objs)
    flat = [i for o in objs for i in (o.get("items", []) if "items" in o else [o])]
    for obj in flat:
        if isinstance(obj.get("endpoints"), list) and draw(st.booleans()):
            for e in obj["endpoints"]:  # this slice's endpoints all elsewhere
                if isinstance(e, dict) and e.get("nodeName") == node:
                    e["nodeName"] = "elsewhere"
        spec = obj.get("spec")
        if not isinstance(spec, dict) or "ports" not in spec or not draw(st.integers(0, 3)):
            continue  # a slice, a Node, or a Service left as drawn
        spec["internalTrafficPolicy"] = draw(st.sampled_from(["Local", "Cluster"]))
        if spec.get("type") in ("NodePort", "LoadBalancer") or spec.get("externalIPs"):
            spec["externalTrafficPolicy"] = draw(st.sampled_from(["Local", "Cluster"]))
    return objs, node


@given(_mostly_local(), CONFIGS)
def test_the_no_local_endpoints_count_is_the_tables_local_drop_verdicts(
    data: tuple[list[Any], str], config: NodeRulesConfig
) -> None:
    """kube-proxy's gauge and the rules are one decision: a Service port (per family and
    policy) is counted iff some frontend farm of it has the ``drop`` verdict in the table."""
    objs, node_name = data
    state, _ = parse_objects(objs)
    desired = desired_farms(state, node_name)
    node = state.nodes.get(node_name)
    shares = desired_shares(state, desired, node_name, config)
    table = table_of(skeleton(config, node), shares.values())
    owners = desired.owner_map()
    dropped = set()
    for farm in desired.farms:
        a = farm.addresses[0]
        drop = Element(set_name("verdicts", farm.family), (a.ip, a.protocol.value, a.port), "drop")
        key = owners[farm.name]
        if drop in table.elements and key in shares:
            index, external = frontend_farms(state.services[key], node)[farm.name]
            dropped.add((key, index, farm.family, EXTERNAL if external else INTERNAL))
    counted = {
        (key, n.port_index, n.family, n.traffic_policy)
        for key, share in shares.items()
        for n in share.no_local
    }
    assert counted == dropped
    totals = count_no_local(shares.values())
    assert totals == {p: sum(1 for c in counted if c[3] == p) for p in (INTERNAL, EXTERNAL)}


_ELEMENTS = st.sampled_from(
    [
        Element("hairpin-v4", ("10.0.0.1", "10.0.0.1")),
        Element("hairpin-v4", ("10.0.0.2", "10.0.0.2")),
        Element("verdicts-v4", ("10.96.0.1", "tcp", 80), "drop"),
        Element("verdicts-v4", ("10.96.0.1", "tcp", 80), "goto:reject"),
        Element("cluster-ips-v4", ("10.96.0.1",)),
    ]
)
_NO_LOCAL = st.frozensets(
    st.builds(
        NoLocalEndpoints,
        st.integers(0, 2),
        st.sampled_from(list(Family)),
        st.sampled_from([INTERNAL, EXTERNAL]),
    ),
    max_size=3,
)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.none() | st.tuples(st.frozensets(_ELEMENTS, max_size=4), _NO_LOCAL),
    ),
    max_size=12,
)


@given(_STEPS)
def test_the_index_deltas_keep_the_kernel_equal_to_the_merged_table(steps: list[Any]) -> None:
    """Every intermediate state: the elements written so far (deltas applied one after the
    other) equal the merge of the shares held at that moment."""
    index = RuleIndex()
    held: dict[str, ServiceRules] = {}
    kernel: set[Element] = set()
    for owner, parts in steps:
        share = None if parts is None else ServiceRules(parts[0], no_local=parts[1])
        added, removed, _ = index.replace(owner, share)
        assert not (added & removed)
        assert removed <= kernel and not (added & kernel)
        kernel = (kernel - removed) | added
        if share is None or not (share.elements or share.no_local):
            held.pop(owner, None)
        else:
            held[owner] = share
        assert kernel == set(table_of(NodeTable(), held.values()).elements)
        assert index.no_local_endpoints() == count_no_local(held.values())
