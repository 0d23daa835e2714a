"""The churn soak (issue 11): many Services, some of them replacing endpoints all the time.

``python -m benchmarks.soak [--quick]`` (root, private netns; also run by ``nox -s bench``).

2,000 Services of 10 endpoints (quick: 200) are programmed by the real `kube-nftlb run` (default
``--min-sync-interval``, the default 30 s resync) into the real nftlb. Then, for 120 s (quick:
20 s), every 100 ms each of 50 of them replaces one endpoint with a new IP: one EndpointSlice
write each, as a rolling update makes. The driver writes to the fake API server in process and
may fall behind; the rate it reached is reported. During the churn a watcher samples the kernel's
nat service map every 0.25 s (frontends missing) and the CPU of nftlb and the agent. After it
stops: how long until ``GET /farms/<farm>`` answers the last written endpoints for every
churned Service (and how many still differ 1, 5 and 30 s after), then the kernel is read whole
(every frontend, and the churned farms' DNAT maps). Reported, never asserted; results in
``benchmarks/results/soak-<mode>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.agent import Agent, log_epoch, sync_summary
from benchmarks.cluster import (
    BENCH_NS,
    NODE,
    PROBE_NS,
    bench_name,
    bench_objects,
    cluster_ip,
    endpoint_ip,
    endpoint_slice,
    farm_name,
    replacement_ip,
    service,
)
from benchmarks.env import (
    RESULTS,
    FloorClient,
    NftlbDaemon,
    delete_tables,
    loadavg,
    proc_cpu_seconds,
    proc_sched_seconds,
    ruleset_json,
    scenario_main,
    served_farms,
)
from reconciler.core.nftlb_ruleset import dnat_entries, service_elements
from reconciler.testing.fakeapi import FakeApiServer

ENDPOINTS = 10
PERIOD_S = 0.1
SAMPLE_S = 0.25
BYSTANDER_S = 10.0
SETTLE_MARKS_S = (1.0, 5.0, 30.0)
SETTLE_TIMEOUT_S = 300.0
MODES: dict[str, dict[str, Any]] = {
    "full": {"services": 2000, "churned": 50, "seconds": 120.0},
    "quick": {"services": 200, "churned": 50, "seconds": 20.0},
}
#: What nftlb 1.0.7 prints when nft refuses its batch, and when it then rebuilds its tables.
NFTLB_FAILURES = ("nft command error", "recovery in progress")


class Churn:
    """The churned Services' endpoints: each step drops the oldest endpoint and adds a new one."""

    def __init__(self, indexes: list[int]) -> None:
        self.indexes = indexes
        self.ips = {i: [endpoint_ip(i, j) for j in range(ENDPOINTS)] for i in indexes}
        self.steps = dict.fromkeys(indexes, 0)

    def step(self, fake: FakeApiServer, slot: int) -> None:
        i = self.indexes[slot]
        n = self.steps[i] = self.steps[i] + 1
        self.ips[i] = [*self.ips[i][1:], replacement_ip(slot, n)]
        fake.apply(endpoint_slice(BENCH_NS, bench_name(i), self.ips[i]))

    def desired(self) -> dict[str, set[str]]:
        return {farm_name(BENCH_NS, bench_name(i)): set(ips) for i, ips in self.ips.items()}


class Watcher(threading.Thread):
    """Samples the kernel's nat service map and the CPU of nftlb and the agent."""

    def __init__(self, others: set[str], churned: set[str], pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.others, self.churned, self.pids = others, churned, pids
        self.stop = threading.Event()
        self.samples: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            present = served_farms()
            self.samples.append(
                {
                    "t": started,
                    "read_ms": round((time.monotonic() - started) * 1000, 1),
                    "others_missing": len(self.others - present),
                    "churned_missing": len(self.churned - present),
                    "cpu_s": {name: proc_cpu_seconds(pid) for name, pid in self.pids.items()},
                }
            )
            # at least 3x the read's own time between reads (nft's CPU: 0.1 s a read at 2,000 farms)
            took = time.monotonic() - started
            self.stop.wait(max(SAMPLE_S - took, 2 * took))


class Bystanders(threading.Thread):
    """Another team's Services created during the churn, one every `BYSTANDER_S`: how long until
    nftlb serves each (its farm with all its backends), while 50 Services churn next to it."""

    def __init__(self, fake: FakeApiServer, client: FloorClient) -> None:
        super().__init__(daemon=True)
        self.fake, self.client = fake, client
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.unserved = 0

    def run(self) -> None:
        k = 0
        while not self.stop.wait(BYSTANDER_S):
            name = f"bystander-{k}"
            ips = {endpoint_ip(k, j, probe=True) for j in range(ENDPOINTS)}
            farm = farm_name(PROBE_NS, name)
            started = time.monotonic()
            self.fake.apply(endpoint_slice(PROBE_NS, name, sorted(ips)))
            self.fake.apply(service(PROBE_NS, name, cluster_ip(k, probe=True)))
            while nftlb_backends(self.client, farm) != ips:
                if time.monotonic() - started > 2 * BYSTANDER_S:
                    self.unserved += 1
                    break
                time.sleep(0.02)
            else:
                self.latencies.append(time.monotonic() - started)
            k += 1


def nftlb_backends(client: FloorClient, farm: str, *, serving: bool = False) -> set[str] | None:
    """The backend IPs `GET /farms/<farm>` answers (with `serving`, of the backends up only:
    a retired spare is down, out of every map), or None if nftlb does not know the farm."""
    status, text = client.get_farm(farm)
    if status != 200:
        return None
    farms = json.loads(text).get("farms") or [{}]
    return {b.get("ip-addr", "") for b in farms[0].get("backends") or [] if not serving or b.get("state") == "up"}


def differing(client: FloorClient, desired: dict[str, set[str]], *, serving: bool = False) -> list[str]:
    return [farm for farm, ips in desired.items() if nftlb_backends(client, farm, serving=serving) != ips]


def settle(client: FloorClient, desired: dict[str, set[str]], stopped: float, services: int) -> dict[str, Any]:
    """Poll nftlb until every churned farm answers its last written endpoints (or the timeout).
    Only the farms still differing are polled again, every 0.1 s, so that the polls take as
    little of nftlb (which serves one request at a time) as they can."""
    polls: list[tuple[float, int]] = []
    converged = serving_at = None
    kernel_serving: dict[str, Any] | None = None
    left = dict(desired)  # a farm that reached its endpoints stays there (checked again below)
    unserved = dict(desired)
    while time.monotonic() - stopped < SETTLE_TIMEOUT_S:
        if serving_at is None:
            unserved = {farm: desired[farm] for farm in differing(client, unserved, serving=True)}
            if not unserved:
                serving_at = time.monotonic() - stopped
                kernel_serving = kernel_check(services, desired)  # nftlb's word is not enough
        left = {farm: desired[farm] for farm in differing(client, left)}
        at = time.monotonic() - stopped
        polls.append((round(at, 3), len(left)))
        if not left:
            converged = at
            if serving_at is None:
                serving_at, kernel_serving = at, kernel_check(services, desired)
            break
        time.sleep(0.1)  # nftlb serves one request at a time: leave room for the agent's
    marks: dict[str, int | None] = {}
    for mark in SETTLE_MARKS_S:
        seen = [left for at, left in polls if at <= mark]
        if converged is not None and converged <= mark:
            marks[f"{mark:g}s"] = 0
        else:  # None: no poll finished by then
            marks[f"{mark:g}s"] = seen[-1] if seen else None
    return {
        "serving_after_s": None if serving_at is None else round(serving_at, 3),
        "kernel_when_serving": kernel_serving,
        "converged_after_s": None if converged is None else round(converged, 3),
        "differing_at": marks,
        "differing_when_checked_again": len(differing(client, desired)),
        "polls": polls,
    }


def kernel_check(services: int, desired: dict[str, set[str]]) -> dict[str, Any]:
    """The whole ruleset, once: every frontend served, and the churned farms' DNAT maps."""
    ruleset = ruleset_json()
    targets = {t.removeprefix("nat-") for (_, name, *_), t in service_elements(ruleset).items() if name == "nat-proto-services"}
    wanted = {farm_name(BENCH_NS, bench_name(i)) for i in range(services)}
    dnat = dnat_entries(ruleset)
    wrong = [f for f, ips in desired.items() if {ip for _, ip, _ in dnat.get(f"nat-{f}", set())} != ips]
    return {"frontends_missing": len(wanted - targets), "churned_dnat_differing": len(wrong), "examples": wrong[:3]}


def run(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    services, churned_n, seconds = cfg["services"], cfg["churned"], cfg["seconds"]
    indexes = [k * services // churned_n for k in range(churned_n)]  # spread over nftlb's list
    churn = Churn(indexes)
    churned = {farm_name(BENCH_NS, bench_name(i)) for i in indexes}
    others = {farm_name(BENCH_NS, bench_name(i)) for i in range(services)} - churned
    daemon = NftlbDaemon(workdir)
    delete_tables()
    daemon.start()
    out: dict[str, Any] = {"config": cfg, "load_start": loadavg()}
    try:
        with FakeApiServer() as fake:
            fake.seed([NODE, *bench_objects(services, ENDPOINTS)])
            agent = Agent(workdir, fake, daemon, resync_period="30s")  # the defaults of `run`
            agent.start()
            try:
                started = time.monotonic()
                agent.wait_for(lambda: len(served_farms()) >= services, 1800, "the initial sync", 0.5)
                agent.wait_for(lambda: agent.events("sync.done"), 60, "the first sync.done")
                out["initial_sync_s"] = round(time.monotonic() - started, 2)
                print(f"initial sync of {services} Services: {out['initial_sync_s']:.1f} s", flush=True)
                time.sleep(1.0)
                assert daemon.process is not None
                pids = {"nftlb": daemon.process.pid, "agent": agent.pid}
                watcher = Watcher(others, churned, pids)
                cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
                sched0 = {name: proc_sched_seconds(pid) for name, pid in pids.items()}
                own0 = time.process_time()
                wall0 = time.time()
                log0 = len(daemon.log_path.read_text(errors="replace"))
                watcher.start()
                bystanders = Bystanders(fake, daemon.client())
                bystanders.start()
                t0 = time.monotonic()
                rounds = writes = 0
                while time.monotonic() - t0 < seconds:
                    due = t0 + rounds * PERIOD_S
                    if due >= t0 + seconds:
                        break
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                    for slot in range(churned_n):
                        churn.step(fake, slot)
                        writes += 1
                    rounds += 1
                t1 = time.monotonic()
                wall1 = time.time()
                bystanders.stop.set()
                bystanders.join()
                churn_s = t1 - t0
                cpu1 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
                sched1 = {name: proc_sched_seconds(pid) for name, pid in pids.items()}
                own1 = time.process_time()
                out["agent_rss_mb_end_of_churn"] = round(agent.rss_mb(), 1)
                settled = settle(daemon.client(), churn.desired(), t1, services)
                watcher.stop.set()
                watcher.join()
                out["kernel_after"] = kernel_check(services, churn.desired())
                out["agent_peak_rss_mb"] = round(agent.peak_rss_mb(), 1)
                events = agent.events("sync.done") + agent.events("sync.failed")
                during = [e for e in events if wall0 <= log_epoch(e) <= wall1]
                after = [e for e in events if log_epoch(e) > wall1]
                restarts = [e for e in agent.events("watchdog.restart_detected") if wall0 <= log_epoch(e) <= wall1]
                cleanups = agent.events("nftlb.cleanup")
                nftlb_log = daemon.log_path.read_text(errors="replace")[log0:]
                alive = agent.alive()
                logs = {"agent": agent.log_path.read_bytes(), "nftlb": daemon.log_path.read_bytes()}
            finally:
                code = agent.stop()
    finally:
        daemon.stop()
        delete_tables()
    RESULTS.mkdir(exist_ok=True)
    for name, data in logs.items():  # kept for a closer look (benchmarks/results/ is git-ignored)
        (RESULTS / f"soak-{cfg['services']}-{name}.log").write_bytes(data)
    samples = watcher.samples
    out.update(
        {
            "churn_s": round(churn_s, 2),
            "bystanders": {
                "created": len(bystanders.latencies) + bystanders.unserved,
                "unserved_after_s": {str(2 * BYSTANDER_S): bystanders.unserved},
                "latency_s": [round(x, 3) for x in bystanders.latencies],
            },
            "writes": writes,
            "writes_target": int(seconds / PERIOD_S) * churned_n,
            "write_rate_per_s": round(writes / churn_s, 1),
            "write_rate_target_per_s": round(churned_n / PERIOD_S, 1),
            "syncs_during_churn": sync_summary(during),
            "syncs_after_churn": sync_summary(after),
            "cleanups": {
                "during_churn": sum(1 for e in cleanups if wall0 <= log_epoch(e) <= wall1),
                "after_churn": sum(1 for e in cleanups if log_epoch(e) > wall1),
                "spares_deleted": sum(int(e.get("deleted", 0)) for e in cleanups),
            },
            "restarts_detected_during_churn": len(restarts),
            "nftlb_failure_lines": {what: nftlb_log.count(what) for what in NFTLB_FAILURES},
            "cpu_pct_of_one_core": {name: round(100 * (cpu1[name] - cpu0[name]) / churn_s, 1) for name in cpu0},
            "waiting_for_a_cpu_pct": {name: round(100 * (sched1[name][1] - sched0[name][1]) / churn_s, 1) for name in sched0},
            "benchmark_process_cpu_pct": round(100 * (own1 - own0) / churn_s, 1),
            "nftlb_cpu_pct_per_5s_max": _max_window_pct(samples, "nftlb", 5.0),
            "samples": len(samples),
            "samples_missing_other_frontends": sum(1 for s in samples if s["others_missing"]),
            "samples_missing_churned_frontends": sum(1 for s in samples if s["churned_missing"]),
            "most_other_frontends_missing": max((s["others_missing"] for s in samples), default=0),
            "sample_read_ms_p50": statistics.median(s["read_ms"] for s in samples) if samples else None,
            "settle": settled,
            "agent_alive_at_end": alive,
            "agent_exit_code": code,
            "load_end": loadavg(),
        }
    )
    return out


def _max_window_pct(samples: list[dict[str, Any]], name: str, window: float) -> float | None:
    """The busiest `window` seconds of a process, in % of one core, from the watcher's samples."""
    best = None
    j = 0
    for i, s in enumerate(samples):
        while samples[j]["t"] < s["t"] - window:
            j += 1
        if j < i and s["t"] - samples[j]["t"] >= window * 0.8:
            pct = 100 * (s["cpu_s"][name] - samples[j]["cpu_s"][name]) / (s["t"] - samples[j]["t"])
            best = pct if best is None else max(best, pct)
    return None if best is None else round(best, 1)


def report(r: dict[str, Any]) -> None:
    cfg, during, after = r["config"], r["syncs_during_churn"], r["syncs_after_churn"]
    settle_, k = r["settle"], r["kernel_after"]
    cpu, wait = r["cpu_pct_of_one_core"], r["waiting_for_a_cpu_pct"]
    lines = [
        f"churn: {cfg['churned']} of {cfg['services']} Services replacing an endpoint every "
        f"{PERIOD_S * 1000:.0f} ms for {r['churn_s']:.0f} s (load average {r['load_end']})",
        f"  API writes: {r['writes']} of {r['writes_target']} "
        f"({r['write_rate_per_s']:.0f}/s of {r['write_rate_target_per_s']:.0f}/s)",
        f"  syncs completed during the churn: {during['count']} {during['kinds']} ({during['failed']} failed), "
        f"duration p50 {during['duration_ms_p50']} ms / "
        f"max {during['duration_ms_max']} ms, requests p50 {during['requests_p50']} / max {during['requests_max']}, "
        f"{during['ms_per_request']} ms of sync per request",
        f"  CPU (% of one core): nftlb {cpu['nftlb']}% (busiest 5 s: {r['nftlb_cpu_pct_per_5s_max']}%), "
        f"agent {cpu['agent']}%, benchmark driver and fake API server {r['benchmark_process_cpu_pct']}%; "
        f"runnable but waiting for a CPU: nftlb {wait['nftlb']}%, agent {wait['agent']}%",
        f"  nftlb's failure lines during the churn: {r['nftlb_failure_lines']}; "
        f"restarts the watchdog saw: {r['restarts_detected_during_churn']}",
        f"  agent RSS {r['agent_rss_mb_end_of_churn']} MB at the end of the churn (peak {r['agent_peak_rss_mb']} MB)",
        f"  bystanders (a new Service of 10 endpoints every {BYSTANDER_S:.0f} s during the churn): "
        f"{r['bystanders']['created']} created, served after {r['bystanders']['latency_s']} s, "
        f"{sum(r['bystanders']['unserved_after_s'].values())} not served within {2 * BYSTANDER_S:.0f} s",
        f"  kernel samples lacking a non-churned Service's frontend: {r['samples_missing_other_frontends']} "
        f"of {r['samples']} (goal 0; lacking a churned one: {r['samples_missing_churned_frontends']})",
        f"  after the churn: nftlb's farms equal the last written slices {settle_['converged_after_s']:.2f} s later"
        if settle_["converged_after_s"] is not None
        else f"  after the churn: NOT converged in {SETTLE_TIMEOUT_S:.0f} s; farms still differing at {settle_['differing_at']} "
        f"(None: no poll of the churned farms had finished by then; the first polls: {settle_['polls'][:3]})",
        f"  after the churn: nftlb serves exactly the last written slices (backends up) "
        f"{settle_['serving_after_s']} s later (the kernel then: {settle_['kernel_when_serving']}); "
        f"spares cleaned up in {r['cleanups']['after_churn']} cleanup passes "
        f"({r['cleanups']['during_churn']} during the churn, {r['cleanups']['spares_deleted']} spares deleted in all)",
        f"  syncs after the churn: {after['count']} {after['kinds']} ({after['failed']} failed), duration p50 "
        f"{after['duration_ms_p50']} ms / max {after['duration_ms_max']} ms, requests p50 {after['requests_p50']}, "
        f"{after['ms_per_request']} ms of sync per request",
        f"  kernel then: {k['frontends_missing']} of {cfg['services']} frontends missing, "
        f"{k['churned_dnat_differing']} churned DNAT maps differing",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 Services, 20 s of churn")
    parser.add_argument("--services", type=int, help="Services in the cluster")
    parser.add_argument("--churned", type=int, help="Services replacing an endpoint every 100 ms")
    parser.add_argument("--seconds", type=float, help="how long the churn lasts")
    return scenario_main("soak", parser, argv, MODES, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
