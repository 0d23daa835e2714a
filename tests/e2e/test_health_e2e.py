"""kube-proxy's health servers on the real `kube-nftlb run` (issue 10 item 5), and its HTTP
servers under 1,000 idle connections (issue 16 item 6)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.e2e.test_run_e2e import Agent, wait_until

from reconciler.testing.fakeapi import FakeApiServer
from reconciler.testing.nftlbd import free_port

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

NODE = "node-1"


def node(**meta: Any) -> dict[str, Any]:
    spec = meta.pop("spec", {})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, **meta},
        "spec": spec,
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.10"}]},
    }


def lb_service(health_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.80",
            "clusterIPs": ["10.96.0.80"],
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": health_port,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.80"}]}},
    }


def shop_slice(*endpoints: tuple[str, str, dict[str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "shop-abc12",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "shop"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {"addresses": [ip], "nodeName": where, "conditions": conditions}
            for ip, where, conditions in endpoints
        ],
    }


READY = {"ready": True}
TERMINATING = {"ready": False, "serving": True, "terminating": True}


def get(port: int, path: str = "/") -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers); status 0 when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)
    except OSError:
        return 0, None, {}


class Ports:
    def __init__(self) -> None:
        self.health_check = free_port()
        self.healthz = free_port()


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
def agent(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon, ports: Ports
) -> Iterator[Agent]:
    fake.seed([node(), lb_service(ports.health_check), shop_slice(("10.244.1.2", NODE, READY))])
    a = Agent(tmp_path, fake, clean_daemon)
    a.extra = [
        "--healthz-bind-address",
        f"127.0.0.1:{ports.healthz}",
        "--health-check-node-port-address",
        "127.0.0.1",
        "--conntrack-cleanup",
        "false",
    ]
    a.start()
    try:
        yield a
    finally:
        if a.process is not None:
            assert a.stop() == 0


def test_health_check_node_port_follows_the_local_endpoints(
    agent: Agent, fake: FakeApiServer, ports: Ports
) -> None:
    hc = ports.health_check
    status, body, headers = wait_until(
        lambda: (answer := get(hc, "/healthz"))[0] and answer, what="the health check listens"
    )
    assert status == 200
    assert body == {
        "service": {"namespace": "default", "name": "shop"},
        "localEndpoints": 1,
        "serviceProxyHealthy": True,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Load-Balancing-Endpoint-Weight"] == "1"
    assert get(hc, "/any/path")[0] == 200  # every path, as kube-proxy

    fake.apply(
        shop_slice(
            ("10.244.1.2", NODE, READY), ("10.244.1.3", NODE, READY), ("10.244.2.2", "n2", READY)
        )
    )
    wait_until(lambda: get(hc)[1]["localEndpoints"] == 2, what="two local endpoints")
    fake.apply(shop_slice(("10.244.1.2", NODE, TERMINATING), ("10.244.2.2", "n2", READY)))
    status, body, _ = wait_until(
        lambda: (answer := get(hc))[0] == 503 and answer, what="only a terminating one: 503"
    )
    assert body["localEndpoints"] == 0
    fake.apply(shop_slice(("10.244.1.5", NODE, READY)))
    wait_until(lambda: get(hc)[0] == 200, what="a local endpoint again")
    fake.delete("Service", "default", "shop")
    wait_until(lambda: get(hc)[0] == 0, what="the port closed with its Service")
    assert agent.events("health.closed")[-1]["port"] == hc


def test_proxy_healthz_and_livez(agent: Agent, fake: FakeApiServer, ports: Ports) -> None:
    _, body, headers = wait_until(
        lambda: (answer := get(ports.healthz, "/healthz"))[0] == 200 and answer,
        what="/healthz 200",
    )
    assert body["healthy"] is True and body["nodeEligible"] is True
    assert set(body) == {"lastUpdated", "currentTime", "nodeEligible", "healthy", "status"}
    assert headers["Content-Type"] == "application/json"
    livez = get(ports.healthz, "/livez")
    assert livez[0] == 200 and "nodeEligible" not in livez[1]

    fake.apply(
        node(spec={"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]})
    )
    wait_until(lambda: get(ports.healthz, "/healthz")[0] == 503, what="tainted: /healthz 503")
    assert get(ports.healthz, "/healthz")[1]["nodeEligible"] is False
    assert get(ports.healthz, "/livez")[0] == 200
    fake.apply(node())
    wait_until(lambda: get(ports.healthz, "/healthz")[0] == 200, what="untainted")
    _, metrics = agent.http("/metrics")
    assert 'kubeproxy_proxy_healthz_total{code="503"}' in metrics


def test_an_update_pending_longer_than_two_sync_periods_is_unhealthy(
    agent: Agent, fake: FakeApiServer, ports: Ports, clean_daemon: NftlbDaemon
) -> None:
    wait_until(lambda: get(ports.health_check)[0] == 200, what="synced and serving")
    assert clean_daemon.process is not None
    os.kill(clean_daemon.process.pid, signal.SIGSTOP)  # nftlb hangs: no sync can finish
    try:
        fake.apply(shop_slice(("10.244.1.7", NODE, READY)))
        # The agent runs with --resync-period 2s: unhealthy once the change waited 4 s.
        _, body, _ = wait_until(
            lambda: (answer := get(ports.healthz, "/livez"))[0] == 503 and answer,
            timeout=30,
            what="/livez 503",
        )
        assert body["healthy"] is False
        assert get(ports.health_check)[1]["serviceProxyHealthy"] is False
        assert get(ports.health_check)[0] == 503
    finally:
        os.kill(clean_daemon.process.pid, signal.SIGCONT)
    wait_until(lambda: get(ports.healthz, "/livez")[0] == 200, timeout=40, what="healthy again")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_a_thousand_idle_connections_cost_no_threads_and_sigterm_is_prompt(
    agent: Agent, ports: Ports
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard >= 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")
    assert agent.process is not None
    pid = agent.process.pid
    threads = _threads(pid)
    idle = []
    try:
        for port in (agent.port, ports.healthz):
            idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
        time.sleep(0.5)  # let the agent accept them all
        assert _threads(pid) <= threads + 2  # issue 16: it was 1,006 threads
        assert agent.http("/healthz")[0] == 200  # and a probe still gets through
        agent.process.send_signal(signal.SIGTERM)
        # Issue 16 saw 12 s; the grace period of the DaemonSet is 30 s. Nothing waits for the
        # idle clients: the exit comes as soon as the sync loop and watches stop.
        assert agent.process.wait(timeout=10) == 0
        agent.process = None
    finally:
        for c in idle:
            c.close()
