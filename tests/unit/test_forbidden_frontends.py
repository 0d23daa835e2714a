"""No frontend on an address that would catch the node's own traffic (issue 16, item 1).

A load-balancer status IP of 127.0.0.1 on nftlb's port made nftlb DNAT the reconciler's own
requests, `Key:` header and all, to a Service's backend. Every source of frontends is checked:
cluster IPs, node addresses, external IPs and load-balancer IPs, in both families.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.cli.main import main
from reconciler.core.desired import desired_farms
from reconciler.core.ips import ip_info, unsafe_reason
from reconciler.core.kube import parse_objects
from reconciler.core.nodeports import parse_nodeport_addresses

FORBIDDEN = {
    "127.0.0.1": "loopback",
    "127.1.2.3": "loopback",
    "::1": "loopback",
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",
    "::": "unspecified",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "255.255.255.255": "broadcast",
    "::ffff:127.0.0.1": "loopback",
}
ALLOWED = ["10.96.0.10", "203.0.113.10", "192.168.10.11", "fd00::10", "2001:db8::1", "1.1.1.1"]


@pytest.mark.parametrize(("ip", "why"), sorted(FORBIDDEN.items()))
def test_forbidden_addresses_are_named(ip: str, why: str) -> None:
    info = ip_info(ip)
    assert info is not None and info.unsafe == why


@pytest.mark.parametrize("ip", ALLOWED)
def test_service_addresses_are_allowed(ip: str) -> None:
    info = ip_info(ip)
    assert info is not None and info.unsafe == ""


@given(st.integers(0, 2**32 - 1))
def test_the_ipv4_fast_path_agrees_with_ipaddress(n: int) -> None:
    address = ipaddress.IPv4Address(n)
    info = ip_info(str(address))
    assert info is not None and info.unsafe == unsafe_reason(address)


def _service(ip_field: dict[str, Any], cluster_ip: str = "10.96.0.30") -> dict[str, Any]:
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": cluster_ip,
            "ports": [{"name": "api", "protocol": "TCP", "port": 5555, "nodePort": 30555}],
        },
    }
    svc["spec"].update(ip_field.get("spec", {}))
    if "status" in ip_field:
        svc["status"] = ip_field["status"]
    return svc


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "node-1"},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "192.168.10.11"},
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "ExternalIP", "address": "fe80::1"},
        ]
    },
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "lb-1",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "lb"},
    },
    "addressType": "IPv4",
    "ports": [{"name": "api", "protocol": "TCP", "port": 8080}],
    "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
}


@pytest.mark.parametrize(
    ("source", "patch", "ip"),
    [
        (
            "status.loadBalancer.ingress",
            {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}},
            "127.0.0.1",
        ),
        (
            "status.loadBalancer.ingress",
            {
                "spec": {"clusterIPs": ["10.96.0.30", "fd00::30"], "ipFamilies": ["IPv4", "IPv6"]},
                "status": {"loadBalancer": {"ingress": [{"ip": "::1"}]}},
            },
            "::1",
        ),
        ("spec.externalIPs", {"spec": {"externalIPs": ["169.254.169.254"]}}, "169.254.169.254"),
        ("spec.externalIPs", {"spec": {"externalIPs": ["224.0.0.251"]}}, "224.0.0.251"),
        ("spec.externalIPs", {"spec": {"externalIPs": ["255.255.255.255"]}}, "255.255.255.255"),
        ("spec.externalIPs", {"spec": {"externalIPs": ["0.0.0.0"]}}, "0.0.0.0"),
    ],
)
def test_each_source_is_a_problem_and_never_a_farm(
    source: str, patch: dict[str, Any], ip: str
) -> None:
    state, parse_problems = parse_objects([_service(patch), SLICE, NODE])
    assert parse_problems == []
    # every node address is a node port candidate (the default, primary, would pick one)
    everywhere = parse_nodeport_addresses("0.0.0.0/0,::/0")
    desired = desired_farms(state, "node-1", nodeports=everywhere)
    addresses = {a.ip for f in desired.farms for a in f.addresses}
    assert ip not in addresses and "127.0.0.1" not in addresses and "fe80::1" not in addresses
    assert "10.96.0.30" in addresses and "192.168.10.11" in addresses, "the rest is still served"
    reasons = {(p.reason, p.key, p.value) for p in desired.problems}
    assert ("ForbiddenAddress", source, ip) in reasons
    assert ("ForbiddenAddress", "address of node node-1", "127.0.0.1") in reasons


def test_a_loopback_cluster_ip_is_a_problem() -> None:
    state, _ = parse_objects([_service({}, cluster_ip="127.0.0.53"), SLICE])
    desired = desired_farms(state, "node-1")
    assert desired.farms == ()
    assert [(p.reason, p.value) for p in desired.problems] == [("ForbiddenAddress", "127.0.0.53")]


def test_render_never_prints_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patch = {
        "spec": {"externalIPs": ["169.254.169.254", "198.51.100.7"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"kind": "List", "items": [_service(patch), SLICE, NODE]}))
    code = main(["render", "-f", str(path), "--node", "node-1"])
    out, err = capsys.readouterr()
    assert code == 0
    vips = {f["virtual-addr"] for f in json.loads(out)["farms"]}
    assert vips == {"10.96.0.30", "192.168.10.11", "198.51.100.7"}
    assert "ForbiddenAddress" in err and "127.0.0.1 is a loopback address" in err
    assert "169.254.169.254 is a link-local address" in err
