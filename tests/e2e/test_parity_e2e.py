"""kube-proxy parity with real packets (issue 12): topology-aware routing with PreferSameNode.

The real `kube-nftlb run` (node-1) against the fake API server and the real nftlb, in the
conformance topology: a local pod (pod-a on node-1) and a remote one (remote, behind node-2)
back one Service. Hints are written as the EndpointSlice controller writes them for
`trafficDistribution: PreferSameNode` (the fake server has no such controller).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.e2e.test_run_e2e import Agent, wait_until
from tests.e2e.topology import NODE, NODE2_IP, NODE_IP, REMOTE_PODS, Topology, topology

from reconciler.testing.fakeapi import FakeApiServer

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

__all__ = ["topology"]

CLUSTER_IP = "10.96.0.80"
FARM = "k8s.default.near.http.tcp.v4"
POD_A = "10.244.1.2"
REMOTE = REMOTE_PODS["remote"][0]


def node(name: str, ip: str, zone: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def service(distribution: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "clusterIP": CLUSTER_IP,
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
    }
    if distribution:
        spec["trafficDistribution"] = distribution
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "near", "namespace": "default"},
        "spec": spec,
    }


def endpoint(ip: str, node_name: str, *, ready: bool = True, hints: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
        "nodeName": node_name,
        "zone": "zone-a",
    }
    if hints:
        out["hints"] = {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": node_name}]}
    return out


def endpoint_slice(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "near-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "near"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": list(endpoints),
    }


@pytest.fixture
def agent(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon, topology: Topology
) -> Iterator[Agent]:
    fake.seed([node(NODE, NODE_IP, "zone-a"), node("node-2", NODE2_IP, "zone-a")])
    a = Agent(tmp_path, fake, clean_daemon)
    a.start()
    try:
        yield a
    finally:
        if a.process is not None:
            assert a.stop() == 0


def backends(agent: Agent) -> list[str]:
    farm = agent.farms().get(FARM)
    return sorted(b.ip for b in farm.backends) if farm is not None else []


def answering(topology: Topology, count: int = 8) -> set[str]:
    """The pods that answer `count` connections from the external client to the cluster IP."""
    answers = topology.ask_many("external", "tcp", CLUSTER_IP, 80, count)
    assert all(a.ok for a in answers), answers
    return {a.pod for a in answers}


def test_prefer_same_node_keeps_traffic_on_this_node_and_falls_back_to_the_remote_pod(
    agent: Agent, fake: FakeApiServer, topology: Topology
) -> None:
    # Without a trafficDistribution the controller writes no hints: both pods serve.
    fake.apply(service(None))
    fake.apply(
        endpoint_slice(endpoint(POD_A, NODE, hints=False), endpoint(REMOTE, "node-2", hints=False))
    )
    wait_until(lambda: backends(agent) == [POD_A, REMOTE], what="both endpoints")
    assert answering(topology) == {"pod-a", "remote"}

    # PreferSameNode: every endpoint hinted for its own node, so node-1 keeps to pod-a.
    fake.apply(service("PreferSameNode"))
    fake.apply(endpoint_slice(endpoint(POD_A, NODE), endpoint(REMOTE, "node-2")))
    wait_until(lambda: backends(agent) == [POD_A], what="only the local endpoint")
    assert answering(topology) == {"pod-a"}

    # The local pod stops being ready: no ready endpoint is hinted for node-1, so the hints are
    # ignored (kube-proxy's fallback) and the remote pod serves instead of nothing.
    fake.apply(endpoint_slice(endpoint(POD_A, NODE, ready=False), endpoint(REMOTE, "node-2")))
    wait_until(lambda: backends(agent) == [REMOTE], what="fallback to the remote endpoint")
    assert answering(topology) == {"remote"}

    # It comes back: local again.
    fake.apply(endpoint_slice(endpoint(POD_A, NODE), endpoint(REMOTE, "node-2")))
    wait_until(lambda: backends(agent) == [POD_A], what="local again")
    assert answering(topology) == {"pod-a"}
