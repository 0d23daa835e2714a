"""Run every benchmark scenario: ``python -m benchmarks.run [--quick]`` (root, private netns).

For each cluster size (Services already programmed, 10 endpoints each):

1. the floor of an initial sync: nftlb emptied, the same farms bulk POSTed in the reconciler's
   chunks by a minimal client;
2. full resyncs with nothing changed, by the real `Controller` in this process (wall time, CPU
   time, requests, writes), nftlb's own ``GET /farms`` as their floor, and one cProfile;
3. the naive baseline: every farm re-POSTed, as a sync without read-back or diff would;
4. nftlb emptied again, the fake API server seeded, and the real `kube-nftlb run` process
   started: its initial sync (from its ``sync.done`` line);
5. programming latency of 10/50/100-endpoint Services (create, add one endpoint, delete)
   through that process, alternating with the floor (`latency.py`);
6. the process's peak RSS (VmHWM), then a restart of it: the first full sync of a fresh process
   against an nftlb already holding everything (must send nothing).

Raw results go to ``benchmarks/results/<scenario>.json`` (git-ignored); the figures the docs show
go to ``benchmarks/summary.json`` (full mode; quick mode writes ``results/summary-quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import latency as lat
from benchmarks import resync
from benchmarks.agent import Agent
from benchmarks.cluster import NODE, bench_objects, chunked_documents, farms_for
from benchmarks.env import NftlbDaemon, delete_tables, loadavg, machine, why_not_runnable
from benchmarks.summary import print_summary, summarise
from reconciler.nftlb.client import DEFAULT_CHUNK_SIZE
from reconciler.testing.fakeapi import FakeApiServer

HERE = Path(__file__).parent
RESULTS = HERE / "results"
ENDPOINTS_PER_SERVICE = 10

MODES: dict[str, dict[str, Any]] = {
    "full": {
        "scales": [0, 1000, 5000],
        "runs": 50,
        "sizes": [10, 50, 100],
        "full_reps": 10,
        "naive_reps": 5,
        "partial_reps": 20,
        "inprocess_initial_max": 1000,
    },
    "quick": {
        "scales": [0, 1000],
        "runs": 10,
        "sizes": [10, 50, 100],
        "full_reps": 3,
        "naive_reps": 3,
        "partial_reps": 10,
        "inprocess_initial_max": 1000,
    },
}


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def kernel_policy(scale: int, runs: int) -> Any:
    """How each latency run checks the kernel. Up to 1,000 farms the whole ruleset every run (it
    reads in under a second). Past that, reading it takes 5 s and even one chain 3.6 s (nft reads
    every chain), so: the whole ruleset on the first and last run, the NAT service map and the
    farm's NAT chain on every 10th, and the NAT service map alone (0.1 s; the frontend there after
    the add and gone after the delete) on the others."""
    if scale <= 1000:
        return lambda run: "ruleset"
    return lambda run: "ruleset" if run in (0, runs - 1) else "chain" if run % 10 == 0 else "map"


def run_scale(scale: int, cfg: dict[str, Any], daemon: NftlbDaemon, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": scale, "load_before": loadavg()}
    client = daemon.client()
    objects = list(bench_objects(scale, ENDPOINTS_PER_SERVICE))
    if scale:
        farms = farms_for(objects)
        documents = chunked_documents(farms, DEFAULT_CHUNK_SIZE)
        log(f"  floor of the initial sync: {len(farms)} farms in {len(documents)} bulk POSTs")
        daemon.restart()
        out["initial_floor"] = resync.bulk_post(client, documents)
        log(f"    {out['initial_floor']['total_s']:.1f} s")

        ctl, nclient = resync.controller(daemon, objects)
        if scale <= cfg["inprocess_initial_max"]:
            log("  initial sync in process, time in nftlb requests vs our own")
            daemon.restart()
            out["initial_inprocess"] = resync.initial_sync(ctl, nclient)
            i = out["initial_inprocess"]
            log(f"    {i['wall_s']:.1f} s, of which {i['in_nftlb_requests_s']:.1f} s in nftlb requests")

        log(f"  full resync x{cfg['full_reps']} in process, nothing changed")
        out["full_resync"] = resync.full_resyncs(ctl, nclient, cfg["full_reps"])
        fr = out["full_resync"]
        log(f"    wall p50 {fr['wall_ms']['median']:.0f} ms, cpu p50 {fr['cpu_ms']['median']:.0f} ms, writes {fr['writes_max']}")
        out["partial_sync"] = resync.partial_syncs(ctl, cfg["partial_reps"])
        log(f"    partial sync in process, create p50 {out['partial_sync']['create']['median']:.1f} ms")
        out["read_floor"] = resync.read_floor(client, 3)
        out["profile"] = resync.profile_full_sync(ctl)
        nclient.close()
        del ctl

        log("  naive baseline: re-POST every farm")
        out["naive"] = resync.naive_sync(client, documents, cfg["naive_reps"])
        out["naive"].update(resync.naive_compute(objects, 3))
        log(f"    {out['naive']['sync_ms']['median']:.0f} ms a sync")

    else:
        daemon.restart()
        ctl, nclient = resync.controller(daemon, objects)
        ctl.sync_full()
        out["partial_sync"] = resync.partial_syncs(ctl, cfg["partial_reps"])
        log(f"  partial sync in process, create p50 {out['partial_sync']['create']['median']:.1f} ms")
        nclient.close()
        del ctl

    daemon.restart()
    with FakeApiServer() as fake:
        fake.seed([NODE, *objects])
        agent = Agent(workdir, fake, daemon)
        log(f"  kube-nftlb run: initial sync of {scale} Services")
        agent.start()
        try:
            out["initial_sync"] = initial_sync(agent, client, scale)
            log(f"    sync {out['initial_sync']['duration_ms'] / 1000:.1f} s, {out['initial_sync']['requests']} requests")
            log(f"  programming latency, {cfg['runs']} runs per size")
            out["latency"] = lat.run_latency(agent, client, cfg["sizes"], cfg["runs"], kernel_policy(scale, cfg["runs"]), log)
            out["peak_rss_mb"] = agent.peak_rss_mb()
            out["rss_mb"] = agent.rss_mb()
            out["cpu_s_total"] = agent.cpu_seconds()
            log(f"    peak RSS {out['peak_rss_mb']:.0f} MB")
        finally:
            code = agent.stop()
        if code != 0:
            raise RuntimeError(f"kube-nftlb run exited with {code}: {agent.tail()}")
        if scale:
            log("  kube-nftlb run restarted: first full sync against a full nftlb")
            agent.start()
            try:
                first = agent.wait_for(
                    lambda: [x for x in agent.events("sync.done") if x["kind"] == "full"],
                    900,
                    "restart sync",
                )[0]
                out["restart_sync"] = {k: first.get(k) for k in ("ok", "duration_ms", "operations", "requests", "bytes_sent")}
                out["restart_sync"]["wall_from_start_s"] = time.perf_counter() - agent.started_at
                out["restart_sync"]["peak_rss_mb"] = agent.peak_rss_mb()
            finally:
                agent.stop()
            log(f"    {out['restart_sync']['duration_ms']:.0f} ms, {out['restart_sync']['requests']} requests")
    out["load_after"] = loadavg()
    return out


def initial_sync(agent: Agent, client: Any, scale: int) -> dict[str, Any]:
    first = agent.wait_for(
        lambda: [x for x in agent.events("sync.done") if x["kind"] == "full"],
        1800,
        "the initial sync",
        0.01,
    )[0]
    wall = time.perf_counter() - agent.started_at
    if not first.get("ok"):
        raise RuntimeError(f"the initial sync failed: {agent.tail()}")
    held = len([n for n in client.farm_names() if n.startswith("k8s.bench.")])
    if held != scale:
        raise RuntimeError(f"nftlb holds {held} farms after the initial sync, not {scale}")
    return {
        **{k: first.get(k) for k in ("duration_ms", "operations", "requests", "bytes_sent", "desired_farms")},
        "wall_from_start_s": wall,
        "cpu_s_at_done": agent.cpu_seconds(),
        "peak_rss_mb_at_done": agent.peak_rss_mb(),
    }


def write(name: str, data: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, clusters up to 1,000 Services")
    parser.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 0,1000")
    parser.add_argument("--runs", type=int, help="latency runs per size")
    args = parser.parse_args(argv)
    reason = why_not_runnable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.scales is not None:
        cfg["scales"] = args.scales
    if args.runs is not None:
        cfg["runs"] = args.runs
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "mode": mode,
        "config": cfg,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_start": loadavg(),
    }
    log(f"kube-nftlb benchmarks, {mode} mode: {cfg}; load {meta['load_start']}")
    per_scale: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kube-nftlb-bench-") as tmp:
        daemon = NftlbDaemon(Path(tmp))
        daemon.start()
        try:
            for scale in cfg["scales"]:
                log(f"cluster of {scale} Services x {ENDPOINTS_PER_SERVICE} endpoints")
                per_scale[str(scale)] = run_scale(scale, cfg, daemon, Path(tmp))
        finally:
            daemon.stop()
            delete_tables()  # nftlb leaves its rules in the kernel when it exits
    meta["load_end"] = loadavg()
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    raw = {"meta": meta, "scales": per_scale}
    summary = summarise(raw)
    suffix = "-quick" if mode == "quick" else ""
    scenarios = {
        "latency": ("latency",),
        "initial_sync": ("initial_floor", "initial_sync", "initial_inprocess"),
        "full_resync": ("full_resync", "read_floor", "restart_sync"),
        "partial_sync": ("partial_sync",),
        "naive": ("naive",),
        "memory": ("peak_rss_mb", "rss_mb", "cpu_s_total"),
        "profile": ("profile",),
    }
    for name, keys in scenarios.items():
        write(
            name + suffix,
            {"meta": meta, **{k: {x: v.get(x) for x in keys} for k, v in per_scale.items()}},
        )
    write(
        "single_change" + suffix,
        {
            "meta": meta,
            **{k: {size: row["single_change"] for size, row in v.items()} for k, v in summary["latency"].items()},
        },
    )
    if mode == "full":
        (HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    else:
        write("summary-quick", summary)
    print_summary(summary)
    log(f"done in {meta['duration_s'] / 60:.1f} min; load {meta['load_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
