"""Real TCP and UDP through a farm (its one frontend sent as the farm's own virtual-addr and
virtual-ports shorthand): client namespace → this (load balancer) namespace → servers.

The test process is the load balancer: nftlb runs here. Two child network namespaces (held
by ``unshare -n sleep``) are joined to it by veth pairs: a client at 10.0.1.2 routed through
us, and a server namespace with 10.1.0.2 and 10.1.0.3, each running a TCP and UDP echo server
that answers with its own name. The farms' VIP 10.96.0.10 exists on no interface: it is only
matched by nftlb's rules, as a Kubernetes cluster IP is.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from attrs import evolve

from reconciler.core.diff import diff
from reconciler.core.farms import Address, Backend, Family, Farm, Mode, Protocol, validate_farms
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.plan import Operation, OpKind, Plan
from reconciler.testing.netns import Namespace, veth

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

VIP = "10.96.0.10"
SERVERS = {"s1": "10.1.0.2", "s2": "10.1.0.3"}
SERVER_PORT = 8080

SERVER = r"""
import socket, sys, threading
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((ip, port)); tcp.listen(16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((ip, port))
def serve_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(name + b":" + data, peer)
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, _ = tcp.accept()
    with conn:
        conn.sendall(name + b":" + conn.recv(2048))
"""

CLIENT = r"""
import socket, sys
kind, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "tcp":
    s = socket.create_connection((ip, port), timeout=3)
    s.sendall(b"hello"); print(s.recv(2048).decode())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(b"hello", (ip, port)); print(s.recvfrom(2048)[0].decode())
"""


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


class Topology:
    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.client = Namespace("client")
        self.server = Namespace("server")
        veth("lb-c", self.client, "c0")
        run("ip", "addr", "add", "10.0.1.1/24", "dev", "lb-c")
        run("ip", "link", "set", "lb-c", "up")
        veth("lb-s", self.server, "s0")
        run("ip", "addr", "add", "10.1.0.1/24", "dev", "lb-s")
        run("ip", "link", "set", "lb-s", "up")
        run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for ns, dev, addresses, gateway in (
            (self.client, "c0", ["10.0.1.2/24"], "10.0.1.1"),
            (self.server, "s0", [f"{ip}/24" for ip in SERVERS.values()], "10.1.0.1"),
        ):
            for address in addresses:
                ns.run("ip", "addr", "add", address, "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
            ns.run("ip", "route", "add", "default", "via", gateway)
        for name, ip in SERVERS.items():
            command = self.server.enter(sys.executable, "-c", SERVER, ip, str(SERVER_PORT), name)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            self.processes.append(process)
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"

    def ask(self, kind: str, port: int, *, expect_answer: bool = True) -> str:
        command = self.client.enter(sys.executable, "-c", CLIENT, kind, VIP, str(port))
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        if not expect_answer:
            assert done.returncode != 0, done.stdout
            return ""
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self.client.close()
        self.server.close()
        for link in ("lb-c", "lb-s"):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


@pytest.fixture
def topology(clean_daemon: NftlbDaemon) -> Iterator[Topology]:
    topology = Topology()
    try:
        yield topology
    finally:
        topology.close()


def farm(protocol: Protocol, port: int, servers: list[str]) -> Farm:
    name = farm_name(FarmKey("dp", "echo", str(port), protocol, Family.IPV4))
    address = Address(address_name(name), Family.IPV4, VIP, port, protocol)
    backends = tuple(
        Backend(backend_name(SERVERS[s], SERVER_PORT), SERVERS[s], SERVER_PORT, 1, i + 1)
        for i, s in enumerate(servers)
    )
    return Farm(name, Family.IPV4, protocol, (address,), backends, mode=Mode.SNAT)


def test_tcp_and_udp_reach_the_backends(topology: Topology, clean_daemon: NftlbDaemon) -> None:
    tcp = farm(Protocol.TCP, 80, ["s1", "s2"])
    udp = farm(Protocol.UDP, 53, ["s2"])
    assert validate_farms([tcp, udp]) == []
    with clean_daemon.client() as client:
        plan = Plan(tuple(Operation(OpKind.CREATE_FARM, f.name, farm=f) for f in (tcp, udp)))
        assert client.apply(plan).ok
    clean_daemon.assert_kernel([tcp, udp])

    answers = [topology.ask("tcp", 80) for _ in range(4)]
    assert {a.split(":")[0] for a in answers} == {"s1", "s2"}
    assert all(a.endswith(":hello") for a in answers)
    assert all(x != y for x, y in itertools.pairwise(answers))  # rr alternates

    assert topology.ask("udp", 53) == "s2:hello"
    assert topology.ask("udp", 53) == "s2:hello"


def test_a_deleted_backend_gets_no_new_connections(
    topology: Topology, clean_daemon: NftlbDaemon
) -> None:
    tcp = farm(Protocol.TCP, 80, ["s1", "s2"])
    with clean_daemon.client() as client:
        assert client.apply(Plan((Operation(OpKind.CREATE_FARM, tcp.name, farm=tcp),))).ok
        gone = tcp.backends[0]
        delete = Operation(OpKind.DELETE_BACKEND, tcp.name, target=gone.name)
        assert client.apply(Plan((delete,))).ok
    remaining = "s1" if gone.ip == SERVERS["s2"] else "s2"
    assert {topology.ask("tcp", 80) for _ in range(3)} == {f"{remaining}:hello"}


def test_a_moved_frontend_port_carries_the_traffic(
    topology: Topology, clean_daemon: NftlbDaemon
) -> None:
    """A frontend change is the farm's own virtual-ports changed in place: the new port is
    balanced, the old one no longer is, and nothing else of the farm changes."""
    tcp = farm(Protocol.TCP, 80, ["s1", "s2"])
    moved = evolve(tcp, addresses=(evolve(tcp.addresses[0], port=8081),))
    with clean_daemon.client() as client:
        assert client.apply(Plan((Operation(OpKind.CREATE_FARM, tcp.name, farm=tcp),))).ok
        assert topology.ask("tcp", 80).endswith(":hello")
        plan = diff([moved], client.get_farms().owned)
        assert [(op.kind, op.fields) for op in plan] == [(OpKind.UPDATE_FARM, ("addresses",))]
        assert client.apply(plan).ok
        assert client.get_farms().owned == (moved,)
    clean_daemon.assert_kernel([moved])
    answers = {topology.ask("tcp", 8081) for _ in range(4)}
    assert answers == {"s1:hello", "s2:hello"}
    topology.ask("tcp", 80, expect_answer=False)  # nothing listens on the VIP itself
