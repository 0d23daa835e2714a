"""kube-proxy's `sync_proxy_rules_no_local_endpoints_total{traffic_policy}`, as a table of cases.

kube-proxy (pkg/proxy/nftables/proxier.go, iptables/proxier.go, syncProxyRules) counts, per
Service port, ``serviceNoLocalEndpointsTotalInternal`` when the port has endpoints (hasEndpoints)
but internalTrafficPolicy Local leaves it none (!hasInternalEndpoints), and ``...External`` when
externalTrafficPolicy Local leaves it none (!hasExternalEndpoints): the two ``drop`` verdicts.
Sources cited per row: NFT (that loop), TOP (pkg/proxy/topology.go CategorizeEndpoints: what
hasEndpoints and the local endpoints are), SVC (pkg/api/v1/service/util.go ExternalPolicyLocal:
only an externally accessible Service, LoadBalancer, NodePort or ClusterIP with externalIPs,
has an external policy), SEL (the proxy-name selector: a Service for another proxy is not in
the service map). kube-proxy runs one proxier per IP family, each setting the gauge; here one
sync programs both, so a dual-stack port counts once per family.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_parity import node_obj, service_obj, slice_obj

from reconciler.core.desired import desired_farms
from reconciler.core.kube import parse_objects
from reconciler.core.node_rules import (
    EXTERNAL,
    INTERNAL,
    NodeRulesConfig,
    count_no_local,
    desired_node_table,
    desired_shares,
)

CONFIG = NodeRulesConfig(cluster_cidrs=("10.244.0.0/16", "fd00:244::/48"))
READY = {"ready": True}
GONE = {"ready": False, "serving": False, "terminating": True}
DRAINING = {"ready": False, "serving": True, "terminating": True}


def ep(node: str, conditions: dict[str, bool] | None = None, ip: str = "") -> dict[str, Any]:
    address = ip or ("10.244.1.5" if node == "n1" else "10.244.2.5")
    return {"addresses": [address], "conditions": conditions or READY, "nodeName": node}


def counts(objs: list[dict[str, Any]], node: str = "n1") -> tuple[int, int]:
    state = parse_objects(objs)[0]
    got = count_no_local(desired_shares(state, desired_farms(state, node), node, CONFIG).values())
    return got[INTERNAL], got[EXTERNAL]


def two_ports(**spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "nodePort": 30080}]
    ports.append({"name": "https", "port": 443, "nodePort": 30443})
    return service_obj(ports=ports, **spec)


def two_port_slice(endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    sl = slice_obj(endpoints)
    sl["ports"] = [
        {"name": "http", "protocol": "TCP", "port": 8080},
        {"name": "https", "protocol": "TCP", "port": 8443},
    ]
    return sl


def v6_slice(endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    sl = slice_obj(endpoints, name="web-6")
    sl["addressType"] = "IPv6"
    return sl


ITP = {"internalTrafficPolicy": "Local"}
ETP_NODEPORT = {"type": "NodePort", "externalTrafficPolicy": "Local"}
DUAL = {
    "clusterIPs": ["10.96.0.1", "fd00:96::1"],
    "ipFamilies": ["IPv4", "IPv6"],
    "ipFamilyPolicy": "RequireDualStack",
}
NODE = node_obj()
CASES: list[tuple[list[dict[str, Any]], tuple[int, int], str]] = [
    (
        [service_obj(**ITP), slice_obj([ep("n2")])],
        (1, 0),
        "NFT: iTP Local, endpoints elsewhere only: drop, Internal++",
    ),
    (
        [service_obj(**ITP), slice_obj([ep("n1"), ep("n2")])],
        (0, 0),
        "NFT: iTP Local with a local endpoint: hasInternalEndpoints",
    ),
    ([service_obj(**ITP)], (0, 0), "NFT: no endpoints at all: reject (!hasEndpoints), not counted"),
    (
        [service_obj(**ITP), slice_obj([ep("n2", GONE)])],
        (0, 0),
        "TOP: neither ready nor serving: no endpoints, reject",
    ),
    (
        [service_obj(**ITP), slice_obj([ep("n2", DRAINING)])],
        (1, 0),
        "TOP: a serving terminating endpoint elsewhere is hasEndpoints",
    ),
    (
        [service_obj(**ITP), slice_obj([ep("n1", DRAINING), ep("n2")])],
        (0, 0),
        "TOP: a local serving terminating endpoint is the Local fallback",
    ),
    ([service_obj(), slice_obj([ep("n2")])], (0, 0), "NFT: Cluster policies never drop"),
    (
        [NODE, service_obj(**ETP_NODEPORT), slice_obj([ep("n2")])],
        (0, 1),
        "NFT: eTP Local NodePort, endpoints elsewhere: drop, External++",
    ),
    (
        [NODE, service_obj(**ETP_NODEPORT), slice_obj([ep("n1")])],
        (0, 0),
        "NFT: eTP Local with a local endpoint: hasExternalEndpoints",
    ),
    (
        [NODE, service_obj(externalTrafficPolicy="Local"), slice_obj([ep("n2")])],
        (0, 0),
        "SVC: a ClusterIP Service without externalIPs has no external policy",
    ),
    (
        [
            service_obj(externalTrafficPolicy="Local", externalIPs=["192.0.2.7"]),
            slice_obj([ep("n2")]),
        ],
        (0, 1),
        "SVC: ClusterIP with externalIPs is externally accessible",
    ),
    (
        [
            NODE,
            service_obj(
                type="LoadBalancer",
                externalTrafficPolicy="Local",
                internalTrafficPolicy="Local",
                status={"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
            ),
            slice_obj([ep("n2")]),
        ],
        (1, 1),
        "NFT: both policies Local on a LoadBalancer: counted under each label",
    ),
    (
        [NODE, two_ports(**ETP_NODEPORT), two_port_slice([ep("n2")])],
        (0, 2),
        "NFT: counted per Service port",
    ),
    (
        [service_obj(**ITP, **DUAL), slice_obj([ep("n2")]), v6_slice([ep("n2", ip="fd00:244::5")])],
        (2, 0),
        "NFT: one proxier per family, each counts the port (summed here)",
    ),
    (
        [service_obj(**ITP, **DUAL), slice_obj([ep("n2")])],
        (1, 0),
        "NFT: a family without endpoints rejects there",
    ),
    (
        [
            service_obj({"service.kubernetes.io/service-proxy-name": "other"}, **ITP),
            slice_obj([ep("n2")]),
        ],
        (0, 0),
        "SEL: a Service for another proxy is not ours",
    ),
]


@pytest.mark.parametrize(("objs", "expected"), [pytest.param(o, e, id=why) for o, e, why in CASES])
def test_no_local_endpoints_counts_as_kube_proxy(
    objs: list[dict[str, Any]], expected: tuple[int, int]
) -> None:
    assert counts(objs) == expected


@pytest.mark.parametrize(("objs", "expected"), [pytest.param(o, e, id=why) for o, e, why in CASES])
def test_each_port_counted_is_a_drop_in_the_table(
    objs: list[dict[str, Any]], expected: tuple[int, int]
) -> None:
    """The count and the table's drop verdicts are one decision: a drop iff a count."""
    state = parse_objects(objs)[0]
    table = desired_node_table(state, desired_farms(state, "n1"), "n1", CONFIG)
    drops = [e for e in table.elements if e.verdict == "drop"]
    assert bool(drops) == (sum(expected) > 0)
