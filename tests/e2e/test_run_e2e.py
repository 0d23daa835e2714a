"""The real `kube-nftlb run` process against the fake API server and the real nftlb daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reconciler.cli.demo import web_slice
from reconciler.cli.manifests import load_paths
from reconciler.core.farms import Farm
from reconciler.testing.fakeapi import FakeApiServer
from reconciler.testing.nftlbd import free_port

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

EXAMPLES = Path(__file__).parents[2] / "examples"
WEB = "k8s.default.web.http.tcp.v4"


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Agent:
    """One `kube-nftlb run` process, its log file and its health port."""

    def __init__(
        self,
        workdir: Path,
        fake: FakeApiServer,
        daemon: NftlbDaemon,
        key_file: Path | None = None,
        extra_args: tuple[str, ...] = ("--cluster-cidr", "10.244.0.0/16"),
        resync_period: str = "2s",
        nftlb_url: str | None = None,
    ) -> None:
        self.workdir, self.fake, self.daemon = workdir, fake, daemon
        #: Where `run` sends its nftlb requests: the daemon, or a proxy in front of it.
        self.nftlb_url = nftlb_url or daemon.url
        self.extra_args, self.resync_period = extra_args, resync_period
        self.kubeconfig = fake.write_kubeconfig(workdir / "kubeconfig")
        self.key_file = key_file or daemon.key_file
        self.port = free_port()
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        #: More `run` flags, for tests that need them (e.g. --healthz-bind-address).
        self.extra: list[str] = []

    def start(self) -> None:
        log = self.workdir / f"run-{len(self.logs)}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "reconciler", "run", "--kubeconfig", self.kubeconfig]
        command += ["--nftlb-url", self.nftlb_url, "--nftlb-key-file", str(self.key_file)]
        command += ["--node-name", "node-1", "--resync-period", self.resync_period]
        command += ["--min-sync-interval", "20ms", *self.extra_args]
        command += ["--watch-timeout", "5s", "--watch-stall-timeout", "3s"]
        command += ["--metrics-address", f"127.0.0.1:{self.port}", "--log-level", "debug"]
        command += self.extra
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ}
            )

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self.process = None
        return code

    def lines(self, index: int = -1) -> list[dict[str, Any]]:
        out = []
        for raw in self.logs[index].read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": "<not json>", "text": raw})
        return out

    def events(self, name: str, index: int = -1) -> list[dict[str, Any]]:
        return [line for line in self.lines(index) if line.get("event") == name]

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def farms(self) -> dict[str, Farm]:
        with self.daemon.client() as c:
            return c.get_farms().by_name()


@pytest.fixture
def agent(tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon) -> Iterator[Agent]:
    fake.seed(load_paths([EXAMPLES]))
    a = Agent(tmp_path, fake, clean_daemon)
    a.start()
    try:
        yield a
    finally:
        if a.process is not None:
            assert a.stop() == 0, "the agent did not stop cleanly on SIGTERM"
        for log in a.logs:
            assert clean_daemon.key not in log.read_text(errors="replace"), (
                "the nftlb key leaked into the logs"
            )


def backends(agent: Agent, farm: str) -> list[str] | None:
    f = agent.farms().get(farm)
    return None if f is None else [b.ip for b in f.backends]


def test_service_lifecycle_reaches_nftlb_and_the_kernel(agent: Agent, fake: FakeApiServer) -> None:
    wait_until(
        lambda: backends(agent, WEB) == ["10.244.1.11", "10.244.1.12", "10.244.2.13"],
        what="web programmed",
    )
    farms = agent.farms()
    assert "k8s.staging.web.http.tcp.v4" in farms, (
        "same-named Services in two namespaces get two farms"
    )
    assert [a.ip for a in farms["k8s.staging.web.http.tcp.v4"].addresses] == ["10.96.0.21"]
    wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")

    fake.apply(web_slice(["10.244.1.11", "10.244.1.12", "10.244.2.13", "10.244.2.14"]))
    wait_until(
        lambda: (
            backends(agent, WEB) == ["10.244.1.11", "10.244.1.12", "10.244.2.13", "10.244.2.14"]
        ),
        what="scale up",
    )
    fake.apply(web_slice(["10.244.2.14"]))
    wait_until(lambda: backends(agent, WEB) == ["10.244.2.14"], what="scale down")
    # the three were retired (down, in the same request as nothing else: one POST), then the
    # cleanup deleted them once nothing else waited
    retired = [o for o in agent.events("nftlb.operation") if o["op"] == "retire-backends"]
    assert [len(o["changes"]) for o in retired if o["farm"] == WEB] == [3]
    wait_until(  # the pass logs once it ends, after the pause that follows its last delete
        lambda: sum(e["deleted"] for e in agent.events("nftlb.cleanup")) >= 3,
        what="the cleanup pass logged",
    )
    wait_until(
        lambda: _value(agent.http("/metrics")[1], "kube_nftlb_spare_backends") == 0,
        what="no spare left",
    )
    agent.daemon.assert_kernel(agent.farms().values())

    svc = fake.get("Service", "default", "web")
    assert svc is not None
    svc["metadata"].setdefault("annotations", {})[
        "service.kubernetes.io/kube-nftlb-load-balancer-scheduler"
    ] = "weight"
    fake.apply(svc)
    wait_until(lambda: agent.farms()[WEB].scheduler.value == "weight", what="annotation applied")
    ops = [o for o in agent.events("nftlb.operation") if o["farm"] == WEB]
    assert ops[-1]["op"] == "update-farm"
    assert ops[-1]["changes"] == [{"path": "scheduler", "old": "rr", "new": "weight"}]

    fake.delete("Service", "default", "web")
    wait_until(lambda: WEB not in agent.farms(), what="farm deleted")
    agent.daemon.assert_kernel(agent.farms().values())

    assert agent.http("/healthz")[0] == 200
    status, metrics = agent.http("/metrics")
    assert status == 200 and "kube_nftlb_sync_duration_seconds_bucket" in metrics


def test_bad_annotation_gives_an_event_and_a_log_line_while_others_are_served(
    agent: Agent, fake: FakeApiServer
) -> None:
    wait_until(lambda: "k8s.default.legacy.http.tcp.v4" in agent.farms(), what="legacy served")
    events = wait_until(
        lambda: [
            e for e in fake.objects("Event", "default") if e["involvedObject"]["name"] == "legacy"
        ],
        what="event",
    )
    assert events[0]["type"] == "Warning" and events[0]["reason"] == "InvalidAnnotation"
    legacy = fake.get("Service", "default", "legacy")
    assert legacy is not None  # `kubectl describe service` finds its Events by uid
    assert events[0]["involvedObject"]["uid"] == legacy["metadata"]["uid"]
    assert "roundrobin" in events[0]["message"] and "rr" in events[0]["message"]
    lines = [x for x in agent.events("service.problem") if x["service"] == "default/legacy"]
    assert len(lines) == 1 and lines[0]["value"] == "roundrobin"
    time.sleep(2.5)  # at least one more full resync: no second Event
    assert (
        len(
            [e for e in fake.objects("Event", "default") if e["involvedObject"]["name"] == "legacy"]
        )
        == 1
    )


def test_dropped_watch_and_stalled_stream_with_expired_history_leave_nothing_stale(
    agent: Agent, fake: FakeApiServer
) -> None:
    wait_until(
        lambda: WEB in agent.farms() and "k8s.default.cart.http.tcp.v4" in agent.farms(),
        what="programmed",
    )
    fake.drop_watches()
    fake.apply(web_slice(["10.244.9.9"]))
    wait_until(lambda: backends(agent, WEB) == ["10.244.9.9"], what="change after a dropped watch")

    fake.stall_watches(6)
    fake.delete("Service", "default", "cart")
    fake.apply(web_slice(["10.244.9.10"]))
    fake.expire_history()
    wait_until(
        lambda: "k8s.default.cart.http.tcp.v4" not in agent.farms(),
        timeout=30,
        what="deleted during outage",
    )
    wait_until(lambda: backends(agent, WEB) == ["10.244.9.10"], what="changed during outage")
    reasons = {x["reason"] for x in agent.events("watch.restart")}
    assert {"disconnected", "stalled", "expired"} <= reasons
    fake.drop_watches()  # end the stalled server threads


def test_nftlb_restart_is_repaired(agent: Agent) -> None:
    wait_until(lambda: WEB in agent.farms(), what="programmed")
    before = set(agent.farms())
    agent.daemon.restart()
    assert agent.farms() == {}
    wait_until(lambda: set(agent.farms()) == before, what="repaired after an nftlb restart")
    agent.daemon.assert_kernel(agent.farms().values())


def test_reconciler_restart_sends_zero_writes(agent: Agent) -> None:
    wait_until(
        lambda: [x for x in agent.events("sync.done") if x["kind"] == "full" and x["ok"]],
        what="first sync",
    )
    wait_until(lambda: WEB in agent.farms(), what="programmed")
    assert agent.stop() == 0
    agent.start()
    wait_until(
        lambda: [x for x in agent.events("sync.done") if x["kind"] == "full"],
        what="first sync after restart",
    )
    first = next(x for x in agent.events("sync.done") if x["kind"] == "full")
    assert first["ok"] and first["requests"] == 0 and first["operations"] == 0
    assert agent.events("nftlb.operation") == []


def test_wrong_key_gives_a_clear_error_and_no_crash(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    fake.seed(load_paths([EXAMPLES]))
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-key\n")
    agent = Agent(tmp_path, fake, clean_daemon, key_file=wrong)
    agent.start()
    try:
        failed = wait_until(lambda: agent.events("sync.failed"), what="sync.failed")
        assert "key" in failed[0]["error"] and failed[0]["error_type"] == "NftlbUnauthorized"
        time.sleep(1.5)
        assert agent.process is not None and agent.process.poll() is None, "the agent crashed"
        assert agent.http("/readyz")[0] == 503
        assert agent.http("/healthz")[0] == 200
        assert len(agent.events("sync.failed")) >= 2, "it retries"
    finally:
        assert agent.stop() == 0
    assert "not-the-key" not in agent.logs[0].read_text()


def test_once_does_one_full_sync_and_exits(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    fake.seed(load_paths([EXAMPLES]))
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    command = [sys.executable, "-m", "reconciler", "run", "--once", "--kubeconfig", kubeconfig]
    command += ["--nftlb-url", clean_daemon.url, "--nftlb-key-file", str(clean_daemon.key_file)]
    command += ["--node-name", "node-1", "--metrics-address", "", "--cluster-cidr", "10.244.0.0/16"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    with clean_daemon.client() as c:
        assert WEB in c.get_farms().by_name()
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [x["kind"] for x in lines if x["event"] == "sync.done"] == ["full"]


@pytest.mark.parametrize("fault", ["hang", "forbidden"])
def test_event_writes_that_hang_or_are_refused_never_delay_programming(
    tmp_path: Path, fake: FakeApiServer, clean_daemon: NftlbDaemon, fault: str
) -> None:
    """The examples' bad annotation is a problem on every sync, so each sync has an Event to
    write; the API server holds every Event request for a minute, or refuses it with 403."""
    if fault == "hang":
        fake.hang_next("*", 60.0, "/events", times=1000)
    else:
        fake.fail_next("*", 403, "/events", message="events is forbidden", times=1000)
    fake.seed(load_paths([EXAMPLES]))
    agent = Agent(tmp_path, fake, clean_daemon)
    agent.start()
    try:
        wait_until(lambda: WEB in agent.farms(), what="programmed")
        wait_until(lambda: [r for r in fake.requests if "/events" in r.path], what="Event tried")
        for n in range(3):  # each change well inside the time a hung Event request takes
            ips = [f"10.244.7.{n + 1}"]
            fake.apply(web_slice(ips))
            wait_until(lambda ips=ips: backends(agent, WEB) == ips, timeout=3, what="programmed")
        # nftlb emptied behind its back: the full resync repairs it as usual.
        agent.daemon.restart()
        wait_until(lambda: WEB in agent.farms(), timeout=6, what="repaired")
        assert agent.http("/readyz")[0] == 200
        assert fake.objects("Event", "default") == []
        if fault == "forbidden":
            failed = wait_until(lambda: agent.events("event.failed"), what="event.failed")
            assert "forbidden" in failed[0]["error"].lower()
            assert 'kube_nftlb_events_total{result="failed"}' in agent.http("/metrics")[1]
            # Backed off: not one POST per sync.
            syncs = len(agent.events("sync.done"))
            posts = len([r for r in fake.requests if "/events" in r.path])
            assert posts < syncs
    finally:
        assert agent.stop() == 0


MONITORING = Path(__file__).parents[2] / "deploy" / "helm" / "kube-nftlb" / "files"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}


def _queried_metrics() -> set[str]:
    """Every metric name in the dashboard's and the alerts' PromQL expressions."""
    import re

    import yaml

    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads((MONITORING / "dashboard.json").read_text()))
    walk(yaml.safe_load((MONITORING / "alerts.yaml").read_text()))
    assert len(exprs) > 10
    names = set()
    for expr in exprs:
        expr = re.sub(r'"[^"]*"', '""', expr)  # label values
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
        names |= set(re.findall(r"\b((?:kube_nftlb|kubeproxy|process|python)_[a-z0-9_]+)", expr))
    return names


def _served(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    served = set()
    for family in text_string_to_metric_families(text):
        served |= {s.name for s in family.samples}
        served.add(family.name)
        served |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ())}
    return served


def test_every_metric_the_dashboard_and_alerts_query_is_served(
    agent: Agent, fake: FakeApiServer
) -> None:
    wait_until(lambda: agent.http("/readyz")[0] == 200, what="ready")
    status, text = agent.http("/metrics")
    assert status == 200
    queried = _queried_metrics()
    assert {
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_network_programming_duration_seconds_bucket",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kube_nftlb_nftlb_requests_total",
    } <= queried
    missing = queried - _served(text)
    assert not missing, f"queried but not served by a running agent: {sorted(missing)}"
    assert "no_such_metric_total" not in _served(text)

    # kube-proxy's no-local-endpoints gauge, set by each sync: ingress (eTP Local, two ports)
    # has an endpoint on node-1, then only on node-2
    assert _gauge(text, NO_LOCAL, "internal") == 0 and _gauge(text, NO_LOCAL, "external") == 0
    moved = fake.get("EndpointSlice", "ingress", "ingress-1")
    assert moved is not None
    for e in moved["endpoints"]:
        e["nodeName"] = "node-2"
    fake.apply(moved)
    wait_until(
        lambda: _gauge(agent.http("/metrics")[1], NO_LOCAL, "external") == 2,
        what="both ports of ingress counted",
    )
    assert _gauge(agent.http("/metrics")[1], NO_LOCAL, "internal") == 0


NO_LOCAL = "kubeproxy_sync_proxy_rules_no_local_endpoints_total"


def _value(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


def _gauge(text: str, name: str, traffic_policy: str) -> float | None:
    return _value(text, name, traffic_policy=traffic_policy)
