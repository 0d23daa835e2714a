"""Failed connections during a rolling update of 100 endpoints (issue 11; goal: 0).

``python -m benchmarks.rolling [--quick]`` (root, private netns; also run by ``nox -s bench``).

This network namespace is the node: nftlb and the real `kube-nftlb run` (default
``--min-sync-interval``, the default 30 s resync) run here. Two child namespaces are joined to it
by routed veth pairs (`reconciler.testing.netns`): a client "pod" at 10.244.0.2, and a "pods"
namespace holding every endpoint's address (10.244.16.0/20) with one TCP server on all of them
that answers each connection with the address it was reached at. One Service (ClusterIP, 100
endpoints; quick: 20), beside `--others` Services of 10 endpoints that get no traffic.

The client opens a new TCP connection to the ClusterIP every 15 ms; a connection that has no
answer within 1 s (so a single unanswered SYN) fails. Meanwhile the endpoints are replaced one by
one, as a Deployment with maxSurge 1 / maxUnavailable 0 does: a new pod gets its address, is
added to the slice ready ``--pod-start`` s later; ``--surge-gap`` s after that the oldest old pod
is marked terminating (ready false, serving true, terminating true) and the next new pod starts;
the terminating pod answers for ``--grace`` s (a preStop sleep), then its address is removed (SYNs
to it go unanswered), and ``--removal-lag`` s later it leaves the slice. A watcher samples the
kernel (the frontend in the nat service map, the farm's DNAT map) every 50 ms, so each failure
can be put next to what the kernel held. Reported, never asserted; results in
``benchmarks/results/rolling-<mode>.json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from attrs import frozen

from benchmarks.agent import Agent, log_epoch, sync_summary
from benchmarks.cluster import NODE, PORT, PROBE_NS, TARGET_PORT, bench_objects, cluster_ip, endpoint_slice, farm_name, service
from benchmarks.env import FloorClient, NftlbDaemon, delete_tables, loadavg, scenario_main
from reconciler.core.nftlb_ruleset import dnat_entries, ruleset_objects, service_elements
from reconciler.testing.fakeapi import FakeApiServer
from reconciler.testing.netns import Namespace, sh, veth

NAME = "rolling"
FARM = farm_name(PROBE_NS, NAME)
SERVICE_IP = cluster_ip(0, probe=True)
CLIENT_IP, CLIENT_GW = "10.244.0.2", "10.244.0.1"
PODS_GW, PODS_RANGE = "10.244.15.1", "10.244.16.0/20"
MODES: dict[str, dict[str, Any]] = {
    "full": {"endpoints": 100, "others": 100},
    "quick": {"endpoints": 20, "others": 20},
}
SAMPLE_S = 0.05

#: The pods' server: every connection is answered with the address it reached, then closed.
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try: c.sendall(c.getsockname()[0].encode())
    except OSError: pass
    c.close()
"""

#: The client pod: a new connection every `interval` s until its stdin closes; one JSON line per
#: connection (start on CLOCK_MONOTONIC, which every namespace shares; outcome; answer).
CLIENT = r"""
import errno, json, selectors, socket, sys, threading, time
ip, port, interval, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
sel, pending, out = selectors.DefaultSelector(), {}, []
def finish(s, outcome, answer=""):
    start = pending.pop(s); sel.unregister(s); s.close()
    out.append({"t": start, "outcome": outcome, "answer": answer, "ms": round((time.monotonic() - start) * 1000, 1)})
print("ready", flush=True)
next_at = time.monotonic()
while not stop.is_set() or pending:
    now = time.monotonic()
    if not stop.is_set() and now >= next_at:
        s = socket.socket(); s.setblocking(False)
        s.connect_ex((ip, port)); pending[s] = now
        sel.register(s, selectors.EVENT_WRITE)
        next_at = max(next_at + interval, now)
    for s, start in list(pending.items()):
        if now - start > timeout:
            finish(s, "timeout")
    for key, events in sel.select(max(0.0, min(next_at - time.monotonic(), 0.005))):
        s = key.fileobj
        if s not in pending:
            continue
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            finish(s, errno.errorcode.get(err, str(err))); continue
        if events & selectors.EVENT_WRITE:
            sel.modify(s, selectors.EVENT_READ); continue
        try:
            data = s.recv(64)
        except OSError as e:
            finish(s, errno.errorcode.get(e.errno or 0, str(e))); continue
        finish(s, "ok" if data else "closed-without-answer", data.decode())
print(json.dumps(out), flush=True)
"""


def pod_ip(k: int) -> str:
    return f"10.244.{16 + k // 250}.{k % 250 + 1}"


class Pods:
    """The client pod and the pods namespace, joined to this (node) namespace."""

    def __init__(self) -> None:
        self.links: list[str] = []
        self.namespaces: list[Namespace] = []
        self.server: subprocess.Popen[str] | None = None
        try:
            self.client = self._join("client", "kprclient", CLIENT_GW)
            self.pods = self._join("pods", "kprpods", PODS_GW)
            self.client.run("ip", "addr", "add", f"{CLIENT_IP}/32", "dev", "eth0")
            sh("ip", "route", "add", f"{CLIENT_IP}/32", "dev", "kprclient")
            sh("ip", "route", "add", PODS_RANGE, "dev", "kprpods")
            sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            self.server = subprocess.Popen(
                self.pods.enter(sys.executable, "-c", SERVER, str(TARGET_PORT)), stdout=subprocess.PIPE, text=True
            )
            assert self.server.stdout is not None
            if self.server.stdout.readline().strip() != "ready":
                raise RuntimeError("the pods' server did not start")
        except BaseException:
            self.close()
            raise

    def _join(self, name: str, dev: str, gateway: str) -> Namespace:
        """A namespace routed through `dev` (Calico style: the node holds `gateway`/32 there)."""
        ns = Namespace(name)
        self.namespaces.append(ns)
        veth(dev, ns, "eth0")
        self.links.append(dev)
        sh("ip", "addr", "add", f"{gateway}/32", "dev", dev)
        sh("ip", "link", "set", dev, "up")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "route", "add", gateway, "dev", "eth0")
        ns.run("ip", "route", "add", "default", "via", gateway)
        return ns

    def addresses(self, verb: str, ips: list[str]) -> None:
        """``ip addr add`` or ``del`` of many endpoint addresses in the pods namespace, at once."""
        batch = "".join(f"addr {verb} {ip}/32 dev eth0\n" for ip in ips)
        done = subprocess.run(self.pods.enter("ip", "-batch", "-"), input=batch, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ip addr {verb}: {done.stderr.strip()}")

    def start_client(self, interval: float, timeout: float) -> subprocess.Popen[str]:
        args = [sys.executable, "-c", CLIENT, SERVICE_IP, str(PORT), str(interval), str(timeout)]
        client = subprocess.Popen(self.client.enter(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        return client

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        for ns in self.namespaces:
            ns.close()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


@frozen
class Event:
    """One step of the rollout, at `at` s from its start."""

    at: float
    kind: str  # pod-up, added, terminating, gone, removed
    step: int
    ip: str


def timeline(endpoints: int, pod_start: float, surge_gap: float, grace: float, removal_lag: float) -> list[Event]:
    """maxSurge 1, maxUnavailable 0: step i's new pod starts when step i-1's old one terminates."""
    events = []
    for i in range(endpoints):
        created = i * (pod_start + surge_gap)
        new, old = pod_ip(endpoints + i), pod_ip(i)
        events += [
            Event(created, "pod-up", i, new),
            Event(created + pod_start, "added", i, new),
            Event(created + pod_start + surge_gap, "terminating", i, old),
            Event(created + pod_start + surge_gap + grace, "gone", i, old),
            Event(created + pod_start + surge_gap + grace + removal_lag, "removed", i, old),
        ]
    order = {"pod-up": 0, "added": 1, "terminating": 2, "gone": 3, "removed": 4}
    return sorted(events, key=lambda e: (e.at, order[e.kind], e.step))


Sample = tuple[float, bool, frozenset[str]]  # (monotonic, frontend in the kernel, backend IPs)


class Watcher(threading.Thread):
    """The kernel every `SAMPLE_S`: is the frontend in the nat service map, which backends are in
    the farm's DNAT map."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.samples: list[Sample] = []

    def run(self) -> None:
        frontend = ("ip", "nat-proto-services", "tcp", SERVICE_IP, PORT)
        while not self.stop.is_set():
            started = time.monotonic()
            objects = []
            for what in (["map", "ip", "nftlb", "nat-proto-services"], ["chain", "ip", "nftlb", f"nat-{FARM}"]):
                done = subprocess.run(["nft", "-j", "list", *what], capture_output=True, text=True, check=False)
                if done.returncode == 0:
                    objects += ruleset_objects(json.loads(done.stdout))
            present = service_elements(objects).get(frontend) == f"nat-{FARM}"
            ips = frozenset(ip for _, ip, _ in dnat_entries(objects).get(f"nat-{FARM}", set()))
            self.samples.append((started, present, ips))
            self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))


def farm_ips(client: FloorClient) -> set[str] | None:
    status, text = client.get_farm(FARM)
    if status != 200:
        return None
    return {b.get("ip-addr", "") for b in (json.loads(text).get("farms") or [{}])[0].get("backends") or []}


def wait_farm(agent: Agent, client: FloorClient, ips: set[str], timeout: float) -> float:
    started = time.monotonic()
    agent.wait_for(lambda: farm_ips(client) == ips, timeout, f"{FARM} with {len(ips)} backends", 0.02)
    return time.monotonic() - started


def slice_for(ready: list[str], terminating: list[str]) -> dict[str, Any]:
    return endpoint_slice(PROBE_NS, NAME, [*ready, *terminating], terminating=set(terminating))


def rollout(fake: FakeApiServer, pods: Pods, events: list[Event], ready: list[str]) -> list[tuple[float, Event]]:
    """Play the timeline; returns when each event really happened (monotonic)."""
    terminating: list[str] = []
    done: list[tuple[float, Event]] = []
    t0 = time.monotonic()
    for event in events:
        delay = t0 + event.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if event.kind == "pod-up":
            pods.addresses("add", [event.ip])
        elif event.kind == "gone":
            pods.addresses("del", [event.ip])
        else:
            if event.kind == "added":
                ready.append(event.ip)
            elif event.kind == "terminating":
                ready.remove(event.ip)
                terminating.append(event.ip)
            else:
                terminating.remove(event.ip)
            fake.apply(slice_for(ready, terminating))
        done.append((time.monotonic(), event))
    return done


def first_sample(samples: list[Sample], times: list[float], after: float, cond: Any) -> float | None:
    """Seconds from `after` to the first kernel sample taken after it for which `cond` holds."""
    for t, present, ips in samples[bisect.bisect_left(times, after) :]:
        if cond(present, ips):
            return t - after
    return None


def analyse(
    connections: list[dict[str, Any]],
    happened: list[tuple[float, Event]],
    samples: list[Sample],
    rollout_span: tuple[float, float],
) -> dict[str, Any]:
    times = [t for t, _ in happened]
    sample_times = [t for t, _, _ in samples]
    when = {(e.kind, e.ip): t for t, e in happened}
    failures = [c for c in connections if c["outcome"] != "ok"]
    contexts = []
    for c in failures:
        k = bisect.bisect_right(times, c["t"]) - 1
        last = happened[k][1] if k >= 0 else None
        s = bisect.bisect_right(sample_times, c["t"]) - 1
        sample = samples[s] if s >= 0 else None
        gone_then = {e.ip for t, e in happened if e.kind == "gone" and t <= c["t"]}
        contexts.append(
            {
                "outcome": c["outcome"],
                "phase": "before the rollout"
                if c["t"] < rollout_span[0]
                else "after the rollout"
                if c["t"] > rollout_span[1]
                else f"after a step's {last.kind if last else '?'}",
                "after": None if last is None else f"step {last.step} {last.kind} {last.ip} +{(c['t'] - times[k]) * 1000:.0f} ms",
                "kernel_sample_age_ms": None if sample is None else round((c["t"] - sample[0]) * 1000),
                "frontend_in_kernel": None if sample is None else sample[1],
                "kernel_backends": None if sample is None else len(sample[2]),
                "kernel_backends_gone_by_then": None if sample is None else sorted(sample[2] & gone_then),
            }
        )
    # Which endpoints answered while terminating (allowed: they still serve) and how late.
    late = [
        c["t"] - when[("terminating", c["answer"])]
        for c in connections
        if c["outcome"] == "ok" and ("terminating", c["answer"]) in when and c["t"] > when[("terminating", c["answer"])]
    ]
    known = {e.ip for _, e in happened}  # every old endpoint terminates, every new one is added
    drains = [
        first_sample(samples, sample_times, t, lambda p, ips, ip=e.ip: ip not in ips)
        for t, e in happened
        if e.kind == "terminating"
    ]
    adds = [first_sample(samples, sample_times, t, lambda p, ips, ip=e.ip: ip in ips) for t, e in happened if e.kind == "added"]
    gone_in_kernel = 0
    for t, _, ips in samples:
        gone = {e.ip for tt, e in happened if e.kind == "gone" and tt <= t}
        gone_in_kernel += bool(ips & gone)

    def ms(xs: list[float | None]) -> dict[str, float | None]:
        seen = sorted(x * 1000 for x in xs if x is not None)
        return {
            "p50": round(statistics.median(seen), 1) if seen else None,
            "max": round(seen[-1], 1) if seen else None,
            "unseen": sum(1 for x in xs if x is None),
        }

    return {
        "connections": len(connections),
        "failed": len(failures),
        "outcomes": dict(Counter(c["outcome"] for c in connections)),
        "failures_by_phase": dict(Counter(c["phase"] for c in contexts)),
        "failures": contexts[:50],
        "answers_from_unknown_addresses": sum(1 for c in connections if c["outcome"] == "ok" and c["answer"] not in known),
        "answered_by_terminating_endpoints": len(late),
        "latest_answer_after_terminating_ms": round(max(late) * 1000, 1) if late else None,
        "kernel_drop_of_terminating_ms": ms(drains),
        "kernel_add_of_ready_ms": ms(adds),
        "kernel_samples": len(samples),
        "kernel_samples_frontend_missing": sum(1 for _, present, _ in samples if not present),
        "kernel_samples_with_a_gone_backend": gone_in_kernel,
        "connect_ms_p50": statistics.median(c["ms"] for c in connections if c["outcome"] == "ok") if connections else None,
    }


def run(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    n = cfg["endpoints"]
    initial = [pod_ip(i) for i in range(n)]
    events = timeline(n, cfg["pod_start"], cfg["surge_gap"], cfg["grace"], cfg["removal_lag"])
    final = {pod_ip(n + i) for i in range(n)}
    out: dict[str, Any] = {"config": cfg, "load_start": loadavg()}
    daemon = NftlbDaemon(workdir)
    delete_tables()
    daemon.start()
    pods = Pods()
    try:
        pods.addresses("add", initial)
        with FakeApiServer() as fake:
            fake.seed([NODE, *bench_objects(cfg["others"], 10)])
            fake.seed([service(PROBE_NS, NAME, SERVICE_IP), slice_for(initial, [])])
            agent = Agent(workdir, fake, daemon, resync_period="30s")  # the defaults of `run`
            agent.start()
            try:
                client = daemon.client()
                wait_farm(agent, client, set(initial), 600)
                watcher = Watcher()
                watcher.start()
                probe = pods.start_client(cfg["interval"], cfg["timeout"])
                time.sleep(1.0)
                wall0 = time.time()
                happened = rollout(fake, pods, events, list(initial))
                span = (happened[0][0], happened[-1][0])
                out["rollout_s"] = round(span[1] - span[0], 2)
                out["final_backends_after_s"] = round(wait_farm(agent, client, final, 60), 3)
                time.sleep(1.0)
                stdout, _ = probe.communicate("", timeout=30)
                watcher.stop.set()
                watcher.join()
                syncs = [e for e in agent.events("sync.done") + agent.events("sync.failed") if log_epoch(e) >= wall0]
                out["syncs"] = sync_summary(syncs)
                out["restarts_detected"] = len(agent.events("watchdog.restart_detected"))
            finally:
                agent.stop()
    finally:
        pods.close()
        daemon.stop()
        delete_tables()
    connections = json.loads(stdout.strip().splitlines()[-1])
    out.update(analyse(connections, happened, watcher.samples, span))
    out["load_end"] = loadavg()
    return out


def report(r: dict[str, Any]) -> None:
    cfg = r["config"]
    lines = [
        f"rolling update of {cfg['endpoints']} endpoints (maxSurge 1, maxUnavailable 0, grace {cfg['grace']} s) "
        f"in {r['rollout_s']:.1f} s, {cfg['others']} other Services (load average {r['load_end']})",
        f"  failed connections: {r['failed']} of {r['connections']} (goal 0) {r['outcomes']}",
    ]
    if r["failed"]:
        lines.append(f"  failures by phase: {r['failures_by_phase']}")
        lines += [f"    {f}" for f in r["failures"][:5]]
    drop, add = r["kernel_drop_of_terminating_ms"], r["kernel_add_of_ready_ms"]
    lines += [
        f"  a terminating endpoint left the kernel p50 {drop['p50']} ms / max {drop['max']} ms after its slice write "
        f"(grace {cfg['grace'] * 1000:.0f} ms); a new one entered p50 {add['p50']} ms / max {add['max']} ms after",
        f"  kernel samples: {r['kernel_samples']}, frontend missing in {r['kernel_samples_frontend_missing']}, "
        f"a gone endpoint still a backend in {r['kernel_samples_with_a_gone_backend']}",
        f"  connections answered by a terminating endpoint: {r['answered_by_terminating_endpoints']} "
        f"(latest {r['latest_answer_after_terminating_ms']} ms after it was marked)",
        f"  syncs: {r['syncs']['count']} {r['syncs']['kinds']} ({r['syncs']['failed']} failed), "
        f"p50 {r['syncs']['duration_ms_p50']} ms; "
        f"final backends in nftlb {r['final_backends_after_s']} s after the last write",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rolling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 endpoints, 20 other Services")
    parser.add_argument("--endpoints", type=int, help="endpoints of the rolled Service (100)")
    parser.add_argument("--others", type=int, help="other Services, 10 endpoints each, no traffic (100)")
    parser.add_argument("--grace", type=float, default=1.0, help="s a terminating pod still answers (preStop)")
    parser.add_argument("--pod-start", type=float, default=0.5, help="s from a new pod's address to ready")
    parser.add_argument("--surge-gap", type=float, default=0.2, help="s from ready to the next old pod terminating")
    parser.add_argument("--removal-lag", type=float, default=0.1, help="s from a pod gone to its slice removal")
    parser.add_argument("--interval", type=float, default=0.015, help="s between the client's connections")
    parser.add_argument("--timeout", type=float, default=1.0, help="s a connection may take to be answered")
    return scenario_main("rolling", parser, argv, MODES, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
