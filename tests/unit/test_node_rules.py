"""The node rules (core/node_rules.py, core/node_diff.py): kube-proxy's decisions as tables of
cases, the diff, and the read-back. Real packets: tests/e2e/test_conformance_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from attrs import evolve

from reconciler.core.desired import desired_farms
from reconciler.core.kube import parse_objects
from reconciler.core.node_diff import (
    RuleIndex,
    build_commands,
    delta_commands,
    diff_tables,
    parse_table,
)
from reconciler.core.node_rules import (
    TABLE_FAMILY,
    TABLE_NAME,
    ConfigProblem,
    DetectLocalMode,
    Element,
    NodeRulesConfig,
    NodeTable,
    ServiceRules,
    check_config,
    desired_node_table,
    parse_cidrs,
    skeleton,
)

CONFIG = NodeRulesConfig(cluster_cidrs=("10.244.0.0/16",), service_cidrs=("10.96.0.0/12",))
NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "n1"},
    "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]},
}


def svc(name: str, ip: str = "10.96.0.10", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    ports = spec.pop("ports", [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "d"},
        "spec": {"clusterIP": ip, "ports": ports, **spec},
        "status": status,
    }


def eps(name: str, *where: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name + "-1",
            "namespace": "d",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": True}, "nodeName": node}
            for ip, node in where
        ],
    }


def table(objs: Iterable[Any], config: NodeRulesConfig = CONFIG) -> NodeTable:
    state, _ = parse_objects([NODE, *objs])
    return desired_node_table(state, desired_farms(state, "n1"), "n1", config)


def verdicts(t: NodeTable, base: str) -> dict[Any, str]:
    return {e.key: e.verdict for e in t.elements if e.set == f"{base}-v4"}


LOCAL, REMOTE = ("10.244.1.5", "n1"), ("10.244.2.5", "n2")
LB = {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}


# -- section 2 of kube-proxy-semantics.md: the verdict table ------------------------------


@pytest.mark.parametrize(
    ("case", "objs", "key", "verdict"),
    [
        (
            "no endpoints: reject the cluster IP",
            [svc("a")],
            ("10.96.0.10", "tcp", 80),
            "goto:reject",
        ),
        (
            "no endpoints: reject the node port",
            [svc("a", type="NodePort")],
            ("192.168.1.10", "tcp", 30080),
            "goto:reject",
        ),
        (
            "iTP Local, none local, some elsewhere: drop",
            [svc("a", internalTrafficPolicy="Local"), eps("a", REMOTE)],
            ("10.96.0.10", "tcp", 80),
            "drop",
        ),
        (
            "iTP Local, none anywhere: reject",
            [svc("a", internalTrafficPolicy="Local")],
            ("10.96.0.10", "tcp", 80),
            "goto:reject",
        ),
        (
            "eTP Local LB IP, none local, some elsewhere: drop",
            [
                svc("a", type="LoadBalancer", externalTrafficPolicy="Local", status=LB),
                eps("a", REMOTE),
            ],
            ("198.51.100.1", "tcp", 80),
            "drop",
        ),
        (
            "eTP Local node port, none local: drop",
            [svc("a", type="NodePort", externalTrafficPolicy="Local"), eps("a", REMOTE)],
            ("192.168.1.10", "tcp", 30080),
            "drop",
        ),
    ],
)
def test_the_verdict_table(case: str, objs: list[Any], key: Any, verdict: str) -> None:
    assert verdicts(table(objs), "verdicts").get(key) == verdict, case


def test_services_with_the_endpoints_they_need_get_no_verdict() -> None:
    t = table(
        [
            svc("a"),
            eps("a", REMOTE),
            svc("b", "10.96.0.11", type="LoadBalancer", externalTrafficPolicy="Local", status=LB),
            eps("b", LOCAL),
        ]
    )
    assert verdicts(t, "verdicts") == {}


def test_every_proxied_cluster_ip_is_known_for_the_wrong_port_reject() -> None:
    t = table(
        [
            svc("a"),
            svc("b", "10.96.0.11"),
            svc("other", "10.96.0.12"),
            svc("headless", "None"),
        ]
    )
    assert {e.key for e in t.elements if e.set == "cluster-ips-v4"} == {
        ("10.96.0.10",),
        ("10.96.0.11",),
        ("10.96.0.12",),
    }
    foreign = svc("foreign", "10.96.0.13")
    foreign["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other"}
    assert ("10.96.0.13",) not in {e.key for e in table([foreign]).elements}


def test_the_service_cidr_drop_exists_only_when_the_cidr_is_given() -> None:
    with_cidr = table([])
    assert Element("service-cidrs-v4", ("10.96.0.0/12",)) in with_cidr.elements
    without = table([], evolve(CONFIG, service_cidrs=()))
    assert not any(e.set.startswith("service-cidrs") for e in without.elements)
    assert "service-cidrs" not in json.dumps(
        [r.expr for r in without.chains["endpoints-check"].rules]
    )


# -- section 1: masquerade ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "spec", "config", "key", "verdict"),
    [
        (
            "cluster IP: only traffic not from pods",
            {},
            CONFIG,
            ("10.96.0.10", "tcp", 80),
            "goto:masquerade-cluster",
        ),
        (
            "cluster IP with --masquerade-all: everything",
            {},
            evolve(CONFIG, masquerade_all=True),
            ("10.96.0.10", "tcp", 80),
            "goto:mark-masquerade",
        ),
        (
            "eTP Cluster node port: every source",
            {"type": "NodePort"},
            CONFIG,
            ("192.168.1.10", "tcp", 30080),
            "goto:mark-masquerade",
        ),
        (
            "eTP Cluster LB IP: every source",
            {"type": "LoadBalancer", "status": LB},
            CONFIG,
            ("198.51.100.1", "tcp", 80),
            "goto:mark-masquerade",
        ),
        (
            "eTP Local LB IP: only the node's own traffic",
            {"type": "LoadBalancer", "status": LB, "externalTrafficPolicy": "Local"},
            CONFIG,
            ("198.51.100.1", "tcp", 80),
            "goto:masquerade-local",
        ),
    ],
)
def test_who_is_masqueraded(
    case: str, spec: dict[str, Any], config: NodeRulesConfig, key: Any, verdict: str
) -> None:
    t = table([svc("a", **spec), eps("a", LOCAL)], config)
    assert verdicts(t, "masquerade").get(key) == verdict, case


def test_without_a_detector_for_a_family_cluster_ip_traffic_is_not_masqueraded() -> None:
    """kube-proxy: ClusterCIDR mode with no CIDR of a family gets a no-op detector."""
    t = table([svc("a"), eps("a", LOCAL)], evolve(CONFIG, cluster_cidrs=("fd00::/48",)))
    assert ("10.96.0.10", "tcp", 80) not in verdicts(t, "masquerade")
    rules = json.dumps([r.expr for r in t.chains["masquerade-cluster"].rules])
    assert "pod-cidrs-v4" not in rules and "pod-cidrs-v6" in rules


def test_hairpin_elements_name_every_backend_of_this_node() -> None:
    t = table([svc("a"), eps("a", LOCAL, REMOTE)])
    assert {e.key for e in t.elements if e.set == "hairpin-v4"} == {
        ("10.244.1.5", "10.244.1.5"),
        ("10.244.2.5", "10.244.2.5"),
    }


@pytest.mark.parametrize(
    ("mode", "config", "match"),
    [
        (DetectLocalMode.CLUSTER_CIDR, CONFIG, '"right":"@pod-cidrs-v4"'),
        (
            DetectLocalMode.NODE_CIDR,
            NodeRulesConfig(detect_local_mode=DetectLocalMode.NODE_CIDR),
            '"right":"@pod-cidrs-v4"',
        ),
        (
            DetectLocalMode.BRIDGE_INTERFACE,
            NodeRulesConfig(
                detect_local_mode=DetectLocalMode.BRIDGE_INTERFACE, pod_bridge_interface="cni0"
            ),
            '"right":"cni0"',
        ),
        (
            DetectLocalMode.INTERFACE_NAME_PREFIX,
            NodeRulesConfig(
                detect_local_mode=DetectLocalMode.INTERFACE_NAME_PREFIX,
                pod_interface_name_prefix="cali",
            ),
            '"right":"cali*"',
        ),
    ],
)
def test_the_four_local_traffic_detectors(
    mode: DetectLocalMode, config: NodeRulesConfig, match: str
) -> None:
    t = table([], config)
    rules = [r.expr for r in t.chains["masquerade-cluster"].rules]
    assert any(match in r for r in rules), rules
    if mode is DetectLocalMode.NODE_CIDR:
        assert Element("pod-cidrs-v4", ("10.244.1.0/24",)) in t.elements  # the Node's podCIDRs
        assert Element("pod-cidrs-v6", ("fd00:1::/64",)) in t.elements


# -- section 4: the short-circuit and source ranges ----------------------------------------


def test_etp_local_external_addresses_short_circuit_pods_and_the_node_to_every_endpoint() -> None:
    t = table(
        [
            svc("a", type="LoadBalancer", externalTrafficPolicy="Local", status=LB),
            eps("a", LOCAL, REMOTE),
        ]
    )
    [(key, target)] = verdicts(t, "short-circuit").items() - {
        (k, v) for k, v in verdicts(t, "short-circuit").items() if k[0] != "198.51.100.1"
    }
    chain = t.chains[target.removeprefix("goto:")]
    rule = chain.rules[0].expr
    assert '"mod":2' in rule and "10.244.1.5" in rule and "10.244.2.5" in rule
    node_port = ("192.168.1.10", "tcp", 30080)
    assert node_port in verdicts(t, "short-circuit")
    eTP_cluster = table([svc("a", type="LoadBalancer", status=LB), eps("a", LOCAL, REMOTE)])
    assert verdicts(eTP_cluster, "short-circuit") == {}
    assert key == ("198.51.100.1", "tcp", 80)


@pytest.mark.parametrize(
    ("ranges", "allowed"),
    [
        (["203.0.113.0/24"], {"203.0.113.0/24"}),
        ([" 203.0.113.7/24 ", "203.0.113.128/25"], {"203.0.113.0/24"}),  # trimmed, masked, merged
        (["192.168.1.0/24"], {"192.168.1.0/24", "198.51.100.1"}),  # node IP in a range: the VIP too
        (["fd00::/8"], set()),  # no range of this family: no filter at all (kube-proxy)
    ],
)
def test_load_balancer_source_ranges(ranges: list[str], allowed: set[str]) -> None:
    t = table(
        [svc("a", type="LoadBalancer", status=LB, loadBalancerSourceRanges=ranges), eps("a", LOCAL)]
    )
    guarded = {e.key for e in t.elements if e.set == "firewall-v4"}
    assert guarded == ({("198.51.100.1", "tcp", 80)} if allowed else set())
    assert {e.key[3] for e in t.elements if e.set == "firewall-allow-v4"} == allowed
    # node ports and cluster IPs are never filtered
    assert all(k[0] == "198.51.100.1" for k in guarded)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("10.244.0.0/16", None),
        ("10.244.0.0/16, fd00::/48", None),
        ("10.244.0.1/16", "--cluster-cidr"),
        ("10.244.0.0/16,10.245.0.0/16", "more than one IPv4"),
        ("banana", "not a CIDR"),
    ],
)
def test_cidr_settings(text: str, error: str | None) -> None:
    if error is None:
        assert parse_cidrs(text, "--cluster-cidr")
    else:
        with pytest.raises(ConfigProblem, match=error):
            parse_cidrs(text, "--cluster-cidr")


def test_each_mode_needs_its_value() -> None:
    with pytest.raises(ConfigProblem, match="--cluster-cidr"):
        check_config(NodeRulesConfig())
    with pytest.raises(ConfigProblem, match="--pod-bridge-interface"):
        check_config(NodeRulesConfig(detect_local_mode=DetectLocalMode.BRIDGE_INTERFACE))
    with pytest.raises(ConfigProblem, match="--pod-interface-name-prefix"):
        check_config(NodeRulesConfig(detect_local_mode=DetectLocalMode.INTERFACE_NAME_PREFIX))
    with pytest.raises(ConfigProblem, match="interface name"):
        check_config(
            NodeRulesConfig(
                detect_local_mode=DetectLocalMode.BRIDGE_INTERFACE, pod_bridge_interface='x"; drop'
            )
        )
    check_config(NodeRulesConfig(detect_local_mode=DetectLocalMode.NODE_CIDR))


# -- the diff and the read-back ---------------------------------------------------------------


def kernel_listing(commands: list[Any]) -> list[Any]:
    """What ``nft -j list table`` prints after these commands, for the shapes we send: a small
    model of the kernel (the real one is in the e2e tests)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    rules: list[dict[str, Any]] = []
    table_there = False
    for command in commands:
        ((verb, obj),) = command.items()
        ((kind, body),) = obj.items()
        if kind == "table":
            table_there = verb == "add"
            if verb == "delete":
                objects.clear()
                rules.clear()
        elif verb == "add" and kind in ("set", "map", "chain"):
            objects.setdefault((kind, body["name"]), {**body})
        elif kind == "element":
            target = objects.get(("set", body["name"])) or objects[("map", body["name"])]
            elems = target.setdefault("elem", [])
            for e in body["elem"]:
                if verb == "add":
                    elems.append(e)
                else:
                    elems.remove(e)
        elif kind == "rule":
            rules.append(body)
        elif kind == "chain" and verb == "flush":
            rules[:] = [r for r in rules if r["chain"] != body["name"]]
        elif kind == "chain" and verb == "delete":
            objects.pop(("chain", body["name"]))
    if not table_there:
        return []
    out: list[Any] = [{"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}]
    out += [{kind: body} for (kind, _), body in objects.items()]
    return out + [{"rule": r} for r in rules]


BIG = [
    svc("a"),
    eps("a", LOCAL, REMOTE),
    svc(
        "b",
        "10.96.0.11",
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        status=LB,
        loadBalancerSourceRanges=["203.0.113.0/24"],
    ),
    eps("b", REMOTE),
    svc("c", "10.96.0.12", type="NodePort"),
]


def test_a_table_diffed_with_itself_is_empty_and_reads_back_equal() -> None:
    t = table(BIG)
    assert diff_tables(t, t) == []
    written = build_commands(t)
    back = parse_table(kernel_listing(written))
    assert back is not None and back.elements == t.elements and back.sets == t.sets
    assert diff_tables(t, back) == []


def test_a_missing_table_is_built_and_a_foreign_one_is_not_read() -> None:
    t = table(BIG)
    assert diff_tables(t, parse_table([])) == build_commands(t)
    foreign = [
        {"table": {"family": "inet", "name": "other"}},
        {
            "set": {
                "family": "inet",
                "table": "other",
                "name": "cluster-ips-v4",
                "type": "ipv4_addr",
            }
        },
    ]
    assert parse_table(foreign) is None


def test_an_endpoint_change_is_a_few_element_commands_and_chain_refills() -> None:
    before = table(BIG)
    after = table([*BIG[:3], eps("b", REMOTE, ("10.244.3.9", "n3")), BIG[4]])
    commands = diff_tables(after, before)
    verbs = sorted((next(iter(c)), next(iter(next(iter(c.values()))))) for c in commands)
    assert ("flush", "chain") in verbs and ("add", "rule") in verbs
    assert ("add", "element") in verbs  # the new endpoint's hairpin element
    assert ("delete", "table") not in verbs
    assert len(commands) == 5  # two short-circuit chains (LB IP, node port) refilled, one element
    assert parse_table(kernel_listing(build_commands(before) + commands)) is not None
    replayed = parse_table(kernel_listing(build_commands(before) + commands))
    assert replayed is not None and diff_tables(after, replayed) == []


def test_a_changed_set_or_hook_rebuilds_the_table_in_one_transaction() -> None:
    t = table(BIG)
    other = table(BIG, evolve(CONFIG, service_cidrs=()))
    commands = diff_tables(other, t)
    assert commands[:2] == [
        {"add": {"table": {"family": "inet", "name": "kube-nftlb"}}},
        {"delete": {"table": {"family": "inet", "name": "kube-nftlb"}}},
    ]


def test_a_rule_changed_behind_our_back_is_refilled() -> None:
    t = table(BIG)
    listing = kernel_listing(build_commands(t))
    for obj in listing:
        if "rule" in obj and obj["rule"]["chain"] == "postrouting":
            obj["rule"]["comment"] = "edited"
    back = parse_table(listing)
    assert back is not None
    commands = diff_tables(t, back)
    assert {
        "flush": {"chain": {"family": "inet", "table": "kube-nftlb", "name": "postrouting"}}
    } in commands


def _tables_named(commands: Iterable[Any]) -> set[tuple[str, str]]:
    out = set()
    for command in commands:
        ((_, obj),) = command.items()
        ((kind, body),) = obj.items()
        out.add((body["family"], body["name"] if kind == "table" else body["table"]))
    return out


def test_commands_name_our_table_only() -> None:
    t = table(BIG)
    assert _tables_named(build_commands(t)) == {(TABLE_FAMILY, TABLE_NAME)}
    assert _tables_named(diff_tables(table(BIG[:2]), t)) == {(TABLE_FAMILY, TABLE_NAME)}


def test_the_index_merges_shares_with_reference_counts() -> None:
    index = RuleIndex()
    shared = Element("hairpin-v4", ("10.0.0.1", "10.0.0.1"))
    a = ServiceRules(frozenset({shared, Element("verdicts-v4", ("1.1.1.1", "tcp", 80), "drop")}))
    b = ServiceRules(frozenset({shared}))
    assert index.replace("a", a)[0] == set(a.elements)
    assert index.replace("b", b)[:2] == (set(), set())  # already there
    assert index.replace("a", None)[1] == {Element("verdicts-v4", ("1.1.1.1", "tcp", 80), "drop")}
    assert index.elements() == {shared}
    assert index.replace("b", None)[1] == {shared}
    sets = skeleton(CONFIG, None).sets
    assert delta_commands(sets, set(), set(), {}) == []
