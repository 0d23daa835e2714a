"""The conformance topology itself (tests/e2e/topology.py): pods reach each other on one node
and across nodes, the external client reaches the node, and the uplink forwards nothing."""

from __future__ import annotations

from tests.e2e.topology import NODE, NODE_IP, Topology, topology

__all__ = ["topology"]


def test_pods_reach_pods_on_this_node_and_across_nodes(topology: Topology) -> None:
    for family in (4, 6):
        for kind in ("tcp", "udp"):
            local = topology.ask("pod-a", kind, topology.pod_ip("pod-b", family), 8080)
            assert (local.outcome, local.pod, local.source) == (
                "ok",
                "pod-b",
                topology.pod_ip("pod-a", family),
            )
            remote = topology.ask("pod-a", kind, topology.pod_ip("remote", family), 8080)
            assert (remote.outcome, remote.pod, remote.source) == (
                "ok",
                "remote",
                topology.pod_ip("pod-a", family),
            )
            back = topology.ask("remote", kind, topology.pod_ip("pod-c", family), 8081)
            assert (back.pod, back.source) == ("pod-c", topology.pod_ip("remote", family))


def test_the_node_and_the_external_client_reach_pods_and_each_other(topology: Topology) -> None:
    answer = topology.ask(NODE, "tcp", topology.pod_ip("pod-a"), 8080)
    assert answer.pod == "pod-a"
    assert answer.source == "10.244.1.1"  # the node's address on the pod's veth
    remote = topology.ask("external", "tcp", topology.pod_ip("remote"), 8080)
    assert remote.outcome == "ENETUNREACH"  # the external client has no route to pods
    assert topology.ask("external", "tcp", NODE_IP, 1).outcome == "refused"


def test_what_leaves_by_the_default_route_is_counted_and_dropped(topology: Topology) -> None:
    before = topology.leaked()
    assert topology.ask("pod-a", "tcp", "203.0.113.9", 80, timeout=0.5).outcome == "timeout"
    assert topology.leaked() > before
