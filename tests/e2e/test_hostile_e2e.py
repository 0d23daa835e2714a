"""Hostile input and faults against the real `kube-nftlb run`, the fake API server and the real
nftlb daemon (issue 16)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.e2e.test_examples_e2e import kube_nftlb
from tests.e2e.test_run_e2e import EXAMPLES, WEB, Agent, backends, wait_until

from reconciler.cli.demo import web_slice
from reconciler.cli.manifests import load_paths
from reconciler.testing.fakeapi import FakeApiServer

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@contextmanager
def running(tmp_path: Path, api: FakeApiServer, daemon: NftlbDaemon) -> Iterator[Agent]:
    a = Agent(tmp_path, api, daemon)
    a.start()
    try:
        yield a
    finally:
        if a.process is not None:
            assert a.stop() == 0, "the agent did not stop cleanly on SIGTERM"


def _captor(port: int) -> list[dict[str, Any]]:
    """A LoadBalancer whose status claims 127.0.0.1 on nftlb's own port: before issue 16 nftlb
    DNATed the agent's own requests (with the key) to this Service's backend."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "captor", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.99",
            "externalIPs": ["169.254.169.254"],
            "ports": [{"name": "api", "protocol": "TCP", "port": port, "nodePort": 31999}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "captor-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "captor"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "api", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.9.9"], "conditions": {"ready": True}}],
    }
    return [service, endpoints]


def test_a_loopback_load_balancer_ip_cannot_capture_the_key(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    api.seed(load_paths([EXAMPLES]) + _captor(clean_daemon.port))
    with running(tmp_path, api, clean_daemon) as agent:
        wait_until(lambda: "k8s.default.captor.api.tcp.v4" in agent.farms(), what="captor")

        def messages() -> str:
            return " ".join(
                e["message"]
                for e in api.objects("Event", "default")
                if e["involvedObject"]["name"] == "captor" and e["reason"] == "ForbiddenAddress"
            )

        # Events are written in the background, one by one: wait for both.
        wait_until(lambda: messages().count("no frontend may be on") == 2, what="both Events")
        text = messages()
        assert "127.0.0.1 is a loopback address" in text
        assert "169.254.169.254 is a link-local address" in text
        vips = {a.ip for f in agent.farms().values() for a in f.addresses}
        assert "127.0.0.1" not in vips and "169.254.169.254" not in vips
        kernel = {key[3] for key in clean_daemon.service_elements()}
        assert "127.0.0.1" not in kernel and "169.254.169.254" not in kernel
        agent.daemon.assert_kernel(agent.farms().values())
        # The agent still reaches nftlb itself: a later change is programmed, and it is ready.
        api.apply(web_slice(["10.244.1.11", "10.244.2.14"]))
        wait_until(lambda: backends(agent, WEB) == ["10.244.1.11", "10.244.2.14"], what="change")
        wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")
        assert not agent.events("sync.failed")


def test_a_farm_named_with_a_trailing_newline_stops_nothing(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    """It passed the `^...$` name checks, so the agent sent DELETE for it; httpx refused the
    URL with an exception nobody caught, and the sync thread died with /readyz still 200."""
    odd = "k8s.default.ghost.http.tcp.v4.habcdefghijk\n"  # a shortened name, and a newline
    body = {"farms": [{"name": odd, "state": "up"}]}
    headers = {"Key": clean_daemon.key}
    assert httpx.post(clean_daemon.url + "/farms", json=body, headers=headers).status_code == 200
    with clean_daemon.client() as c:
        assert odd in [f["name"] for f in c.get_farms_document()["farms"]]
    api.seed(load_paths([EXAMPLES]))
    with running(tmp_path, api, clean_daemon) as agent:
        wait_until(lambda: WEB in agent.farms(), what="web programmed")
        wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")
        api.apply(web_slice(["10.244.2.14"]))
        wait_until(lambda: backends(agent, WEB) == ["10.244.2.14"], what="a later change")
        with clean_daemon.client() as c:
            assert odd in [f["name"] for f in c.get_farms_document()["farms"]], "not ours"
        assert not agent.events("sync.crashed") and not agent.events("sync.failed")
    clean_daemon.restart()  # no URL can name it: only a restart empties nftlb of it


def test_a_non_ascii_key_file_is_a_clear_start_up_error(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    key = tmp_path / "key"
    key.write_text(clean_daemon.key + "é\n")
    agent = Agent(tmp_path, api, clean_daemon, key_file=key)
    agent.start()
    assert agent.process is not None
    assert agent.process.wait(timeout=30) == 2
    agent.process = None
    text = agent.logs[-1].read_text()
    assert "not printable ASCII" in text and str(key) in text


def test_foreign_farms_are_never_touched_and_one_on_a_frontend_is_a_conflict(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    """Farms under our prefix that kube-nftlb did not make were deleted; one holding a
    Service's frontend kept its traffic while the agent said ready and diff said no changes."""
    ghost = {"name": "k8s.default.ghost.http.tcp.v4", "virtual-addr": "10.96.0.88"}
    squatter = {"name": "lb01", "virtual-addr": "10.96.0.20"}  # web's cluster IP
    farms = [
        {**f, "family": "ipv4", "virtual-ports": "80", "protocol": "tcp", "state": "up"}
        for f in (ghost, squatter)
    ]
    headers = {"Key": clean_daemon.key}
    r = httpx.post(clean_daemon.url + "/farms", json={"farms": farms}, headers=headers)
    assert r.status_code == 200
    with clean_daemon.client() as c:
        before = {f["name"]: f for f in c.get_farms_document()["farms"]}
    api.seed(load_paths([EXAMPLES]))
    with running(tmp_path, api, clean_daemon) as agent:
        wait_until(lambda: "k8s.default.cart.http.tcp.v4" in agent.farms(), what="programmed")
        events = wait_until(
            lambda: [e for e in api.objects("Event", "default") if e["reason"] == "ForeignFarm"],
            what="ForeignFarm event",
        )
        assert events[0]["involvedObject"]["name"] == "web" and "lb01" in events[0]["message"]
        time.sleep(2.5)  # a full resync more
        with clean_daemon.client() as c:
            now = {f["name"]: f for f in c.get_farms_document()["farms"]}
        assert now[ghost["name"]] == before[ghost["name"]]
        assert now["lb01"] == before["lb01"]
        assert WEB not in now
        assert all(
            f.get("log-prefix") == "kube-nftlb TYPE-FNAME "
            for n, f in now.items()
            if n not in before
        )
        _, metrics = agent.http("/metrics")
        assert "kube_nftlb_foreign_conflicts 1.0" in metrics
        deletes = [x for x in agent.events("nftlb.operation") if x["op"] == "delete-farm"]
        assert deletes == []
        # diff and explain against the live nftlb say so (explain said "holds exactly").
        args = ["-f", str(EXAMPLES), "--node-name", "node-1", "--nftlb-url", clean_daemon.url]
        args += ["--nftlb-key-file", str(clean_daemon.key_file)]
        diffed = kube_nftlb("diff", *args)
        assert diffed.returncode == 1 and f"! conflict {WEB}" in diffed.stdout, diffed.stderr
        explained = kube_nftlb("explain", "default/web", *args, "-o", "json")
        assert explained.returncode == 1, explained.stderr
        report = json.loads(explained.stdout)
        assert [(c["farm"], c["foreign"]) for c in report["nftlb"]["conflicts"]] == [(WEB, "lb01")]
        assert "ForeignFarm" in [p["reason"] for p in report["problems"]]


def test_poison_watch_lines_neither_wedge_nor_hot_loop_the_agent(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    api.seed(load_paths([EXAMPLES]))
    with running(tmp_path, api, clean_daemon) as agent:
        wait_until(lambda: WEB in agent.farms(), what="web programmed")
        # Every Services watch from now on opens with a line it cannot get past.
        api.inject_watch_lines([{"type": "MODIFIED"}], "/services", times=10_000)  # no object
        # Every EndpointSlices watch sends one (valid, old) event and closes.
        one = next(o for o in api.objects("EndpointSlice", "default"))
        event = {"type": "MODIFIED", "object": one}
        api.inject_watch_lines([event], "/endpointslices", times=10_000, close=True)
        api.clear_requests()
        api.close_watches()
        svc = api.get("Service", "default", "web")
        assert svc is not None
        svc["metadata"].setdefault("annotations", {})[
            "service.kubernetes.io/kube-nftlb-load-balancer-scheduler"
        ] = "weight"
        api.apply(svc)
        wait_until(
            lambda: agent.farms()[WEB].scheduler.value == "weight", what="a later Service change"
        )
        time.sleep(3)
        slice_watches = [
            r
            for r in api.requests
            if "/endpointslices" in r.path and r.query.get("watch") in ("true", "True")
        ]
        # Watches that close at once back off; before, they were re-made dozens of times a second.
        assert len(slice_watches) < 25
        wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")
