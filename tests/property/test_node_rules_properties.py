"""Properties of the node rules over generated cluster state (junk included)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import desired_farms
from reconciler.core.kube import parse_objects
from reconciler.core.node_diff import RuleIndex, build_commands, diff_tables, parse_table
from reconciler.core.node_rules import (
    TABLE_FAMILY,
    TABLE_NAME,
    DetectLocalMode,
    Element,
    NodeRulesConfig,
    NodeTable,
    ServiceRules,
    desired_node_table,
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


_ELEMENTS = st.sampled_from(
    [
        Element("hairpin-v4", ("10.0.0.1", "10.0.0.1")),
        Element("hairpin-v4", ("10.0.0.2", "10.0.0.2")),
        Element("verdicts-v4", ("10.96.0.1", "tcp", 80), "drop"),
        Element("verdicts-v4", ("10.96.0.1", "tcp", 80), "goto:reject"),
        Element("cluster-ips-v4", ("10.96.0.1",)),
    ]
)
_STEPS = st.lists(
    st.tuples(st.sampled_from("abc"), st.none() | st.frozensets(_ELEMENTS, max_size=4)),
    max_size=12,
)


@given(_STEPS)
def test_the_index_deltas_keep_the_kernel_equal_to_the_merged_table(steps: list[Any]) -> None:
    """Every intermediate state: the elements written so far (deltas applied one after the
    other) equal the merge of the shares held at that moment."""
    index = RuleIndex()
    held: dict[str, ServiceRules] = {}
    kernel: set[Element] = set()
    for owner, elements in steps:
        share = None if elements is None else ServiceRules(elements)
        added, removed, _ = index.replace(owner, share)
        assert not (added & removed)
        assert removed <= kernel and not (added & kernel)
        kernel = (kernel - removed) | added
        if share is None or not share.elements:
            held.pop(owner, None)
        else:
            held[owner] = share
        assert kernel == set(table_of(NodeTable(), held.values()).elements)
