"""A node made of network namespaces, for conformance tests with real packets (issue 10).

The test process's own network namespace is **node-1**: nftlb and ``kube-nftlb run`` run there.
Every other part is a child namespace held open by ``unshare -n sleep`` and entered with
``nsenter``::

            uplink 192.168.50.1 (default gateway of node-1; forwards nothing, counts strays)
                 |
   switch ns: bridge "sw" ---- node-1 eth "n1-up" 192.168.50.10 / fd00:50::10
                 |   \\------- external client 192.168.50.100 / fd00:50::100
                 |               (routes the service and LB ranges via node-1)
            node-2 192.168.50.11 / fd00:50::11 ── pod "remote" 10.244.2.2 / fd00:244:2::2

   node-1's pods: routed point-to-point veths, Calico style. Pod N holds 10.244.1.N/32 and
   fd00:244:1::N/128 on its eth0, default route via 10.244.1.1 / fd00:244:1::1; node-1 holds the
   gateway address on every pod veth (named ``kp<pod>``, so ``--pod-interface-name-prefix kp``
   detects them) and a /32 (/128) route to each pod.

Every pod runs `ECHO`: TCP and UDP on the given ports, answering ``<name> <peer address>``, so a
test sees which backend answered and which source address it saw (masquerade or not).
`Topology.ask` sends one TCP connection or UDP datagram from any namespace and reports ``ok``
(with the answer), ``refused`` (ICMP port unreachable: kube-proxy's reject), ``timeout`` (a drop),
or another errno name. `Topology.leaked` counts what reached the uplink that was not its own.

Use it from a test module::

    from tests.e2e.topology import Topology, topology  # noqa: F401  (the fixture)

    def test_x(topology: Topology) -> None:
        assert topology.ask("pod-a", "tcp", "10.96.0.10", 80).source == "10.244.1.2"

The fixture is module-scoped (building takes about a second); it removes every link and
namespace it made, and the ``inet kube-nftlb`` table, when the module ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence

import pytest
from attrs import frozen

from reconciler.testing.netns import Namespace, sh, veth

NODE = "node-1"
NODE_IP = "192.168.50.10"
NODE_IP6 = "fd00:50::10"
NODE2_IP = "192.168.50.11"
NODE2_IP6 = "fd00:50::11"
UPLINK_IP = "192.168.50.1"
UPLINK_IP6 = "fd00:50::1"
EXTERNAL_IP = "192.168.50.100"
EXTERNAL_IP6 = "fd00:50::100"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_CIDR6 = "fd00:244::/32"
NODE_POD_CIDR = "10.244.1.0/24"
NODE_POD_CIDR6 = "fd00:244:1::/64"
SERVICE_CIDR = "10.96.0.0/12"
SERVICE_CIDR6 = "fd00:96::/112"
LB_RANGE = "198.51.100.0/24"
LB_RANGE6 = "fd00:198::/64"
POD_INTERFACE_PREFIX = "kp"
#: Local pods: name -> (IPv4, IPv6). The gateway is .1 / ::1.
LOCAL_PODS: dict[str, tuple[str, str]] = {
    "pod-a": ("10.244.1.2", "fd00:244:1::2"),
    "pod-b": ("10.244.1.3", "fd00:244:1::3"),
    "pod-c": ("10.244.1.4", "fd00:244:1::4"),
}
REMOTE_PODS: dict[str, tuple[str, str]] = {"remote": ("10.244.2.2", "fd00:244:2::2")}
#: Ports every pod's echo server listens on, TCP and UDP.
POD_PORTS: tuple[int, ...] = (8080, 8081, 5353)

ECHO = r"""
import socket, sys, threading
name = sys.argv[1].encode()
def tcp(family, port):
    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port)); s.listen(64)
    while True:
        c, peer = s.accept()
        with c:
            c.settimeout(2)
            try: c.recv(2048)
            except OSError: pass
            c.sendall(name + b" " + peer[0].encode())
def udp(family, port):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(name + b" " + peer[0].encode(), peer)
for port in map(int, sys.argv[2:]):
    for family in (socket.AF_INET, socket.AF_INET6):
        for serve in (tcp, udp):
            threading.Thread(target=serve, args=(family, port), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

ASK = r"""
import errno, json, socket, sys
kind, ip, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sport = int(sys.argv[5])
family = socket.AF_INET6 if ":" in ip else socket.AF_INET
try:
    s = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport: s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
    s.settimeout(timeout)
    s.connect((ip, port))
    s.send(b"hello")
    answer = s.recv(2048).decode()
    print(json.dumps({"outcome": "ok", "answer": answer}))
except socket.timeout:
    print(json.dumps({"outcome": "timeout"}))
except OSError as e:
    name = errno.errorcode.get(e.errno or 0, str(e))
    print(json.dumps({"outcome": {"ECONNREFUSED": "refused"}.get(name, name)}))
"""


@frozen
class Answer:
    """What one `Topology.ask` got: outcome ``ok`` with the answering pod and the source address
    it saw, or ``refused`` / ``timeout`` / an errno name."""

    outcome: str
    pod: str = ""
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class Topology:
    """node-1 (this namespace), its pods, node-2 with a remote pod, an external client, an
    uplink, and the switch between them. See the module docstring."""

    def __init__(self, pod_ports: Sequence[int] = POD_PORTS) -> None:
        self.namespaces: dict[str, Namespace] = {}
        self.links: list[str] = []
        self.servers: list[subprocess.Popen[str]] = []
        self.pod_ports = tuple(pod_ports)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- building ----------------------------------------------------------------------------

    def _ns(self, name: str) -> Namespace:
        ns = self.namespaces[name] = Namespace(name)
        for key, value in (
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv6.conf.all.forwarding", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ):
            ns.run("sysctl", "-q", "-w", f"{key}={value}")
        return ns

    def _veth(self, here: str, ns: Namespace, inside: str) -> None:
        """A veth pair: `here` stays in this namespace, its peer moves into `ns` as `inside`."""
        veth(here, ns, inside)
        self.links.append(here)

    def _build(self) -> None:
        sh("ip", "link", "set", "lo", "up")
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ):
            sh("sysctl", "-q", "-w", f"{key}={value}")
        switch = self._ns("switch")
        switch.run("ip", "link", "add", "sw", "type", "bridge")
        switch.run("ip", "link", "set", "sw", "up")

        def on_switch(ns: Namespace | None, port: str, dev: str) -> None:
            """A veth from `ns` (None: node-1) to a port of the switch's bridge."""
            if ns is None:
                sh("ip", "link", "add", dev, "type", "veth", "peer", "name", port)
                self.links.append(dev)
            else:
                ns.run("ip", "link", "add", dev, "type", "veth", "peer", "name", port)
                ns.run("ip", "link", "set", port, "netns", str(switch.pid))
            if ns is None:
                sh("ip", "link", "set", port, "netns", str(switch.pid))
            switch.run("ip", "link", "set", port, "master", "sw")
            switch.run("ip", "link", "set", port, "up")

        # node-1 on the node network, default route to the uplink
        on_switch(None, "sw-n1", "n1-up")
        sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "n1-up")
        sh("ip", "addr", "add", f"{NODE_IP6}/64", "dev", "n1-up", "nodad")
        sh("ip", "link", "set", "n1-up", "up")
        sh("ip", "route", "replace", "default", "via", UPLINK_IP)
        sh("ip", "-6", "route", "replace", "default", "via", UPLINK_IP6)

        uplink = self._ns("uplink")
        on_switch(uplink, "sw-up", "eth0")
        self._address(uplink, "eth0", f"{UPLINK_IP}/24", f"{UPLINK_IP6}/64")
        uplink.run(
            "nft",
            "add table inet uplink; "
            "add chain inet uplink strays { type filter hook prerouting priority 0; }; "
            f"add rule inet uplink strays ip daddr != {UPLINK_IP} ip daddr != 224.0.0.0/4 "
            "counter drop; "
            f"add rule inet uplink strays ip6 daddr != {UPLINK_IP6} ip6 daddr != ff00::/8 "
            "ip6 nexthdr != ipv6-icmp counter drop",
        )

        external = self._ns("external")
        on_switch(external, "sw-ext", "eth0")
        self._address(external, "eth0", f"{EXTERNAL_IP}/24", f"{EXTERNAL_IP6}/64")
        for cidr in (SERVICE_CIDR, LB_RANGE):
            external.run("ip", "route", "add", cidr, "via", NODE_IP)
        for cidr in (SERVICE_CIDR6, LB_RANGE6):
            external.run("ip", "-6", "route", "add", cidr, "via", NODE_IP6)

        node2 = self._ns("node-2")
        node2.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        node2.run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        on_switch(node2, "sw-n2", "eth0")
        self._address(node2, "eth0", f"{NODE2_IP}/24", f"{NODE2_IP6}/64")
        node2.run("ip", "route", "add", NODE_POD_CIDR, "via", NODE_IP)
        node2.run("ip", "-6", "route", "add", NODE_POD_CIDR6, "via", NODE_IP6)
        sh("ip", "route", "replace", "10.244.2.0/24", "via", NODE2_IP)
        sh("ip", "-6", "route", "replace", "fd00:244:2::/64", "via", NODE2_IP6)

        for name, (ip4, ip6) in LOCAL_PODS.items():
            self._pod(name, ip4, ip6, None)
        for name, (ip4, ip6) in REMOTE_PODS.items():
            self._pod(name, ip4, ip6, node2)

    @staticmethod
    def _address(ns: Namespace, dev: str, ip4: str, ip6: str) -> None:
        ns.run("ip", "addr", "add", ip4, "dev", dev)
        ns.run("ip", "addr", "add", ip6, "dev", dev, "nodad")
        ns.run("ip", "link", "set", dev, "up")

    def _pod(self, name: str, ip4: str, ip6: str, host: Namespace | None) -> None:
        """A pod namespace joined to `host` (None: node-1) by a routed point-to-point veth."""
        pod = self._ns(name)
        gw4 = ip4.rsplit(".", 1)[0] + ".1"
        gw6 = ip6.rsplit(":", 1)[0] + ":1"
        dev = f"{POD_INTERFACE_PREFIX}{name.removeprefix('pod-')}"
        if host is None:
            self._veth(dev, pod, "eth0")

            def node_side(*command: str) -> str:
                return sh(*command)
        else:
            host.run("ip", "link", "add", dev, "type", "veth", "peer", "name", "podtmp0")
            host.run("ip", "link", "set", "podtmp0", "netns", str(pod.pid))
            pod.run("ip", "link", "set", "podtmp0", "name", "eth0")
            node_side = host.run
        node_side("ip", "addr", "add", f"{gw4}/32", "dev", dev)
        node_side("ip", "addr", "add", f"{gw6}/128", "dev", dev, "nodad")
        node_side("ip", "link", "set", dev, "up")
        node_side("ip", "route", "add", f"{ip4}/32", "dev", dev)
        node_side("ip", "-6", "route", "add", f"{ip6}/128", "dev", dev)
        pod.run("ip", "addr", "add", f"{ip4}/32", "dev", "eth0")
        pod.run("ip", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
        pod.run("ip", "link", "set", "eth0", "up")
        pod.run("ip", "route", "add", gw4, "dev", "eth0")
        pod.run("ip", "route", "add", "default", "via", gw4)
        pod.run("ip", "-6", "route", "add", gw6, "dev", "eth0")
        pod.run("ip", "-6", "route", "add", "default", "via", gw6)
        server = subprocess.Popen(
            pod.enter(sys.executable, "-c", ECHO, name, *map(str, self.pod_ports)),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(server)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the echo server of {name} did not start")

    # -- using it ----------------------------------------------------------------------------

    def ask(
        self,
        where: str,
        kind: str,
        ip: str,
        port: int,
        *,
        timeout: float = 1.5,
        source_port: int = 0,
    ) -> Answer:
        """One TCP connection or UDP datagram from `where` (a namespace name, or ``node-1``)."""
        args = [sys.executable, "-c", ASK, kind, ip, str(port), str(timeout), str(source_port)]
        command = args if where == NODE else self.namespaces[where].enter(*args)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout + 10, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the client in {where} failed: {done.stderr.strip()}")
        result = json.loads(done.stdout)
        if result["outcome"] != "ok":
            return Answer(result["outcome"])
        pod, _, source = result["answer"].partition(" ")
        return Answer("ok", pod, source)

    def ask_many(self, where: str, kind: str, ip: str, port: int, count: int) -> list[Answer]:
        return [self.ask(where, kind, ip, port) for _ in range(count)]

    def leaked(self) -> int:
        """Packets that reached the uplink without being addressed to it (both families)."""
        doc = json.loads(
            self.namespaces["uplink"].run("nft", "-j", "list", "table", "inet", "uplink")
        )
        return sum(
            expr["counter"]["packets"]
            for obj in doc["nftables"]
            if "rule" in obj
            for expr in obj["rule"]["expr"]
            if "counter" in expr
        )

    def pod_ip(self, pod: str, family: int = 4) -> str:
        pods: Mapping[str, tuple[str, str]] = {**LOCAL_PODS, **REMOTE_PODS}
        return pods[pod][0 if family == 4 else 1]

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait()
        for ns in self.namespaces.values():
            ns.close()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for args in (
            ("ip", "route", "del", "default", "via", UPLINK_IP),
            ("ip", "-6", "route", "del", "default", "via", UPLINK_IP6),
            ("ip", "route", "del", "10.244.2.0/24"),
            ("ip", "-6", "route", "del", "fd00:244:2::/64"),
            ("nft", "delete", "table", "inet", "kube-nftlb"),
        ):
            subprocess.run(args, capture_output=True, check=False)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    """The whole topology, once per test module."""
    built = Topology()
    try:
        yield built
    finally:
        built.close()
