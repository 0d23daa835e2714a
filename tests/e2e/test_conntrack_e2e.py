"""Stale UDP conntrack entries are deleted after syncs (issue 10 item 3), with real packets.

Mirrors Kubernetes' test/e2e/network/conntrack.go: a client sends UDP from one source port, so
every datagram belongs to one conntrack entry, which the kernel keeps NATing to the endpoint it
first chose. When that endpoint is replaced, or when the first endpoint of a Service appears,
only deleting the entry lets the client reach the new endpoint. The pods' echo servers keep
running, so without the cleanup the old pod would still answer: each test checks *which* pod
answers, and reads the kernel's table with the `conntrack` tool (Debian's conntrack package),
independently of the agent's netlink code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.e2e.test_run_e2e import Agent, wait_until
from tests.e2e.topology import LOCAL_PODS, NODE, NODE_IP, Topology, topology

from reconciler.testing.fakeapi import FakeApiServer

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

__all__ = ["topology"]

pytestmark = pytest.mark.skipif(
    shutil.which("conntrack") is None, reason="needs the conntrack tool (Debian's conntrack)"
)

CLUSTER_IP = "10.96.0.53"
CLUSTER_IP6 = "fd00:96::53"
PORT, TARGET, NODE_PORT = 53, 5353, 30053
SOURCE_PORT = 40053


def node() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]},
    }


def dns_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "clusterIP": CLUSTER_IP,
            "clusterIPs": [CLUSTER_IP, CLUSTER_IP6],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "RequireDualStack",
            "ports": [
                {
                    "name": "dns",
                    "protocol": "UDP",
                    "port": PORT,
                    "targetPort": TARGET,
                    "nodePort": NODE_PORT,
                }
            ],
        },
    }


def dns_slice(*pods: str, family: int = 4) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"dns-v{family}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "dns"},
        },
        "addressType": f"IPv{family}",
        "ports": [{"name": "dns", "protocol": "UDP", "port": TARGET}],
        "endpoints": [
            {
                "addresses": [LOCAL_PODS[p][0 if family == 4 else 1]],
                "conditions": {"ready": True},
                "nodeName": NODE,
            }
            for p in pods
        ],
    }


def conntrack_entries(dst: str, dport: int) -> list[dict[str, str]]:
    """UDP entries to dst:dport, read with the conntrack tool: each entry's original source
    port and reply source address."""
    family = "ipv6" if ":" in dst else "ipv4"
    out = subprocess.run(
        ["conntrack", "-L", "-f", family, "-p", "udp", "--orig-dst", dst, "--dport", str(dport)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    entries = []
    for line in out.splitlines():
        fields = [w.split("=", 1) for w in line.split() if "=" in w]
        # src, dst, sport, dport of the original tuple, then of the reply tuple, then the rest.
        orig, reply = dict(fields[0:4]), dict(fields[4:8])
        entries.append({"sport": orig.get("sport", ""), "reply_src": reply.get("src", "")})
    return entries


@pytest.fixture
def agent(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon, topology: Topology
) -> Iterator[Agent]:
    subprocess.run(["conntrack", "-F"], capture_output=True, check=False)
    fake.seed([node(), dns_service()])
    a = Agent(tmp_path, fake, clean_daemon)
    a.extra = ["--healthz-bind-address", ""]
    a.start()
    try:
        yield a
    finally:
        if a.process is not None:
            assert a.stop() == 0
        subprocess.run(["conntrack", "-F"], capture_output=True, check=False)


def ask(topology: Topology, where: str, ip: str, port: int) -> str:
    answer = topology.ask(where, "udp", ip, port, timeout=0.5, source_port=SOURCE_PORT)
    return answer.pod if answer.ok else answer.outcome


def cleanups(agent: Agent) -> list[dict[str, Any]]:
    return agent.events("conntrack.cleanup")


def keeps_answering(topology: Topology, where: str, ip: str, port: int, pod: str) -> None:
    wait_until(lambda: ask(topology, where, ip, port) == pod, timeout=15, what=f"{pod} answers")


@pytest.mark.parametrize(
    ("where", "ip", "port"),
    [("pod-c", CLUSTER_IP, PORT), ("external", NODE_IP, NODE_PORT), ("pod-c", CLUSTER_IP6, PORT)],
    ids=["cluster-ip", "node-port", "cluster-ip-v6"],
)
def test_udp_traffic_survives_the_server_pod_cycling(
    agent: Agent, fake: FakeApiServer, topology: Topology, where: str, ip: str, port: int
) -> None:
    """Kubernetes e2e: "should be able to preserve UDP traffic when server pod cycles for a
    ClusterIP service" and "... for a NodePort service"."""
    family = 6 if ":" in ip else 4
    pod_ip = {p: LOCAL_PODS[p][0 if family == 4 else 1] for p in LOCAL_PODS}
    fake.apply(dns_slice("pod-a", family=family))
    keeps_answering(topology, where, ip, port, "pod-a")
    before = conntrack_entries(ip, port)
    assert {"sport": str(SOURCE_PORT), "reply_src": pod_ip["pod-a"]} in before

    # The server pod is replaced: pod-a leaves the Service, pod-b joins it. pod-a's echo
    # server still runs, so only a deleted entry makes pod-b answer this client.
    fake.apply(dns_slice("pod-b", family=family))
    keeps_answering(topology, where, ip, port, "pod-b")
    after = conntrack_entries(ip, port)
    assert all(e["reply_src"] != pod_ip["pod-a"] for e in after), after
    assert {"sport": str(SOURCE_PORT), "reply_src": pod_ip["pod-b"]} in after
    assert any(c["deleted"] >= 1 for c in cleanups(agent))
    _, metrics = agent.http("/metrics")
    deleted = [
        line
        for line in metrics.splitlines()
        if line.startswith(
            f'kubeproxy_conntrack_reconciler_deleted_entries_total{{ip_family="ipv{family}"}}'
        )
    ]
    assert deleted and float(deleted[0].split()[-1]) >= 1


def test_udp_traffic_reaches_the_first_endpoint_of_a_service_that_had_none(
    agent: Agent, fake: FakeApiServer, topology: Topology
) -> None:
    """Kubernetes e2e: "should be able to preserve UDP traffic when initial unready endpoints
    get ready": the entry made while nothing served the Service is not NATed and would keep
    the client's datagrams going nowhere."""
    wait_until(lambda: agent.farms(), what="the Service programmed")
    wait_until(lambda: agent.events("sync.done"), what="a sync")
    assert ask(topology, "pod-c", CLUSTER_IP, PORT) != "pod-a"
    # Not NATed: its reply would come from the Service address itself (an entry is left only
    # where the packet was not rejected outright).
    assert {e["reply_src"] for e in conntrack_entries(CLUSTER_IP, PORT)} <= {CLUSTER_IP}
    fake.apply(dns_slice("pod-a"))
    keeps_answering(topology, "pod-c", CLUSTER_IP, PORT, "pod-a")
    assert [e["reply_src"] for e in conntrack_entries(CLUSTER_IP, PORT)] == [LOCAL_PODS["pod-a"][0]]


def test_tcp_and_other_udp_entries_are_left_alone(
    agent: Agent, fake: FakeApiServer, topology: Topology
) -> None:
    fake.apply(dns_slice("pod-a"))
    keeps_answering(topology, "pod-c", CLUSTER_IP, PORT, "pod-a")
    # A UDP flow to a pod directly and a TCP connection to the same pod port.
    pod_b = LOCAL_PODS["pod-b"][0]
    assert topology.ask("pod-c", "udp", pod_b, TARGET, source_port=SOURCE_PORT).pod == "pod-b"
    assert topology.ask("pod-c", "tcp", pod_b, TARGET).pod == "pod-b"
    tcp_before = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--orig-dst", pod_b], capture_output=True, text=True
    ).stdout
    fake.apply(dns_slice("pod-c"))
    wait_until(lambda: ask(topology, "pod-a", CLUSTER_IP, PORT) == "pod-c", what="pod-c serves")
    wait_until(lambda: any(c["deleted"] for c in cleanups(agent)), what="a cleanup")
    assert conntrack_entries(pod_b, TARGET) != []
    tcp_after = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--orig-dst", pod_b], capture_output=True, text=True
    ).stdout
    assert tcp_before.count("dport=5353") == tcp_after.count("dport=5353") == 1


def test_cap_net_admin_is_needed_and_enough_for_the_cleanup(
    agent: Agent, topology: Topology
) -> None:
    """The reconciler's container has CAP_NET_ADMIN and no other capability
    (deploy/daemonset.yaml): enough to list and delete; without it a clear error."""
    probe = (
        "import json, sys\n"
        "from reconciler.core.conntrack_plan import ConntrackFilter\n"
        "from reconciler.core.farms import Family\n"
        "from reconciler.kernel.conntrack import Conntrack, ConntrackError\n"
        "serving = frozenset({('10.1.1.1', 5)})\n"
        "plan = ConntrackFilter({(Family.IPV4, '203.0.113.99', 53): serving})\n"
        "try:\n"
        "    print(json.dumps([r.deleted for r in Conntrack().cleanup(plan)]))\n"
        "except ConntrackError as e:\n"
        "    print(json.dumps(str(e)))\n"
    )

    def run(caps: str) -> Any:
        command = ["setpriv", "--reuid=0", "--regid=65532", "--clear-groups"]
        command += [f"--inh-caps=-all{caps}", f"--bounding-set=-all{caps}", "--no-new-privs"]
        done = subprocess.run(
            [*command, sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(Path(__file__).parents[2] / "src"), "PATH": os.environ["PATH"]},
        )
        return json.loads(done.stdout)

    # An entry to delete: a datagram to 203.0.113.99:53, which nothing NATs (its reply source
    # is that address, not the one "serving endpoint" of the plan). Conntrack tracks this
    # namespace's traffic once nftlb's NAT chains exist.
    wait_until(lambda: agent.farms(), what="nftlb programmed")
    topology.ask("pod-c", "udp", "203.0.113.99", 53, timeout=0.2, source_port=SOURCE_PORT)
    assert len(conntrack_entries("203.0.113.99", 53)) == 1
    assert run(",+net_admin") == [1]
    message = run("")
    assert "not permitted" in message and "CAP_NET_ADMIN" in message


HTTP_GET = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(json.dumps([r.status, json.loads(r.read())]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, json.loads(e.read())]))
except OSError as e:
    print(json.dumps([0, str(e)]))
"""


def test_a_load_balancer_probes_the_health_check_node_port_from_outside(
    agent: Agent, fake: FakeApiServer, topology: Topology
) -> None:
    """What a cloud load balancer does for an externalTrafficPolicy Local Service: HTTP to the
    node's address on the healthCheckNodePort, from off the node, through our node table."""
    port = 32053
    svc = dns_service()
    svc["spec"].update(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=port)
    fake.apply(svc)
    fake.apply(dns_slice("pod-a"))

    def probe() -> tuple[int, Any]:
        command = topology.namespaces["external"].enter(
            sys.executable, "-c", HTTP_GET, f"http://{NODE_IP}:{port}/healthz"
        )
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        status, body = json.loads(out)
        return status, body

    _, body = wait_until(lambda: (a := probe())[0] == 200 and a, what="200 from outside")
    assert body["localEndpoints"] == 1
    remote = dns_slice()
    remote["endpoints"] = [
        {"addresses": ["10.244.2.2"], "conditions": {"ready": True}, "nodeName": "node-2"}
    ]
    fake.apply(remote)
    _, body = wait_until(lambda: (a := probe())[0] == 503 and a, what="503 from outside")
    assert body["localEndpoints"] == 0
