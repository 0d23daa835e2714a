"""From raw results to the figures the docs show, the targets, and a printed summary."""

from __future__ import annotations

from typing import Any

from benchmarks.env import summary_ms

OPS = ("create", "add", "delete")
TARGET_LATENCY_RATIO = 1.5
TARGET_RESYNC_S = 2.0
TARGET_INITIAL_RATIO = 1.2
TARGET_RSS_MB = 200.0


def _phases_p50(phases: list[dict[str, float] | None]) -> dict[str, float] | None:
    """The median of each phase of the reconciler's runs (see `latency._phases`)."""
    known = [p for p in phases if p]
    if not known:
        return None
    return {k: round(summary_ms([p[k] for p in known])["median"], 2) for k in known[0]}


def _latency(scale_raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, runs in (scale_raw.get("latency") or {}).items():
        row: dict[str, Any] = {}
        for op in OPS:
            rec = summary_ms([r[op] for r in runs["reconciler"]])
            flo = summary_ms([r[op] for r in runs["floor"]])
            req = summary_ms([r[f"{op}_request"] for r in runs["floor"]])
            syncs = [s for r in runs["reconciler"] for s in r[f"{op}_syncs"]]
            row[op] = {
                "reconciler": rec,
                "floor": flo,
                "floor_request": req,
                "ratio_p50": round(rec["median"] / flo["median"], 2),
                "ratio_p50_to_request": round(rec["median"] / req["median"], 2),
                "overhead_p50_ms": round(rec["median"] - flo["median"], 2),
                "sync_ms": summary_ms([s["duration_ms"] / 1000 for s in syncs if s["requests"]]),
                "phases_p50_ms": _phases_p50([r.get(f"{op}_phases") for r in runs["reconciler"]]),
            }
        adds = [r["add_syncs"] for r in runs["reconciler"]]
        row["single_change"] = {
            "requests_per_change": sorted({sum(s["requests"] for s in syncs) for syncs in adds}),
            "bytes_sent_per_change": sorted({sum(s["bytes_sent"] for s in syncs) for syncs in adds}),
            "syncs_per_change": sorted({len(syncs) for syncs in adds}),
            "floor_bytes": runs["floor"][0]["add_bytes"],
        }
        checks = [r for r in runs["reconciler"] if "kernel_after_add" in r]
        row["kernel_checked"] = {
            "runs": len(checks),
            "ruleset": sum(1 for r in checks if r["kernel_check"] == "ruleset"),
            "chain": sum(1 for r in checks if r["kernel_check"] == "chain"),
            "map_only": sum(1 for r in checks if r["kernel_check"] == "map"),
            "ok": all(r["kernel_after_add"] and r["kernel_after_delete"] for r in checks),
        }
        out[size] = row
    return out


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw["meta"]
    scales = raw["scales"]
    out: dict[str, Any] = {
        "mode": meta["mode"],
        "started": meta["started"],
        "duration_min": round(meta["duration_s"] / 60, 1),
        "machine": meta["machine"],
        "load": {
            "start": meta["load_start"],
            "end": meta["load_end"],
            "per_scale": {k: {"before": v["load_before"], "after": v["load_after"]} for k, v in scales.items()},
        },
        "config": meta["config"],
        "latency": {k: _latency(v) for k, v in scales.items()},
        "initial_sync": {},
        "full_resync": {},
        "naive": {},
        "memory": {},
        "partial_sync": {
            k: {op: v["partial_sync"][op] for op in (*OPS, *(f"{o}_own" for o in OPS))}
            for k, v in scales.items()
            if v.get("partial_sync")
        },
    }
    for k, v in scales.items():
        init = v.get("initial_sync") or {}
        restart = v.get("restart_sync") or {}
        out["memory"][k] = {
            "peak_rss_mb": round(max(v.get("peak_rss_mb", 0), restart.get("peak_rss_mb", 0)), 1),
            "peak_rss_mb_after_latency_runs": round(v.get("peak_rss_mb", 0), 1),
            "peak_rss_mb_at_initial_sync": round(init.get("peak_rss_mb_at_done", 0), 1),
            "peak_rss_mb_fresh_process_full_sync": round(restart.get("peak_rss_mb", 0), 1),
        }
        if not int(k):
            continue
        floor = v["initial_floor"]["total_s"]
        out["initial_sync"][k] = {
            "reconciler_s": round(init["duration_ms"] / 1000, 2),
            "floor_s": round(floor, 2),
            "ratio": round(init["duration_ms"] / 1000 / floor, 3),
            "requests": init["requests"],
            "bytes_sent": init["bytes_sent"],
            "process_start_to_done_s": round(init["wall_from_start_s"], 2),
            "process_cpu_s_at_done": round(init["cpu_s_at_done"], 2),
        }
        full = v["full_resync"]
        out["full_resync"][k] = {
            "wall_ms": full["wall_ms"],
            "cpu_ms": full["cpu_ms"],
            "writes": full["writes_max"],
            "requests": full["requests_max"],
            "nftlb_get_farms_ms": v["read_floor"]["get_ms"],
            "json_loads_ms": v["read_floor"]["json_loads_ms"],
            "get_farms_mb": round(v["read_floor"]["bytes"] / 1e6, 1),
            "restart_sync": v.get("restart_sync"),
        }
        naive = v["naive"]
        naive_ms = naive["sync_ms"]["median"] + naive["compute_ms"]["median"]
        out["naive"][k] = {
            "post_ms": naive["sync_ms"],
            "compute_ms": naive["compute_ms"],
            "sync_ms": round(naive_ms, 1),
            "bytes_per_sync": naive["bytes_per_sync"],
            "ratio_vs_full_resync": round(naive_ms / full["wall_ms"]["median"], 2),
        }
        inproc = v.get("initial_inprocess")
        if inproc:
            out["initial_sync"][k]["in_process"] = {
                "wall_s": round(inproc["wall_s"], 2),
                "in_nftlb_requests_s": round(inproc["in_nftlb_requests_s"], 2),
                "own_s": round(inproc["own_s"], 2),
                "ratio_to_own_requests": round(inproc["wall_s"] / inproc["in_nftlb_requests_s"], 3),
            }
    out["targets"] = targets(out)
    return out


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    scales = sorted(int(k) for k in s["latency"])
    big, small = str(max(scales)), str(min(scales))
    worst = max(
        (op["ratio_p50"], f"{sc} Services, {size} endpoints, {name}")
        for sc, sizes in s["latency"].items()
        for size, row in sizes.items()
        for name, op in row.items()
        if name in OPS
    )
    rows.append(
        {
            "target": f"p50 programming latency within {TARGET_LATENCY_RATIO}x of the nftlb floor",
            "measured": f"worst {worst[0]}x ({worst[1]})",
            "met": worst[0] <= TARGET_LATENCY_RATIO,
        }
    )
    growth = []
    for size, row in s["latency"][big].items():
        for op in OPS:
            a = s["latency"][small][size][op]["overhead_p50_ms"]
            b = row[op]["overhead_p50_ms"]
            growth.append((round(b - a, 1), f"{size} endpoints, {op}: {a} -> {b} ms"))
    worst_growth = max(growth)
    own = s.get("partial_sync", {})
    own_text = ""
    own_growth = 0.0
    if big in own and small in own:
        own_growth = max(own[big][f"{op}_own"]["median"] - own[small][f"{op}_own"]["median"] for op in OPS)
        own_text = "; in process, a partial sync's own time (nftlb's request excluded), p50 create/add/delete: " + (
            " / ".join(f"{own[small][op + '_own']['median']:.1f}" for op in OPS)
            + f" ms at {small} -> "
            + " / ".join(f"{own[big][op + '_own']['median']:.1f}" for op in OPS)
            + f" ms at {big}"
        )
    rows.append(
        {
            "target": f"the reconciler's own share of p50 latency the same at {big} Services as at {small}",
            "measured": f"largest growth of (kube-nftlb p50 - floor p50): {worst_growth[0]} ms ({worst_growth[1]})" + own_text,
            "met": worst_growth[0] <= 5.0 and own_growth <= 2.0,
        }
    )
    if s["full_resync"]:
        fr = s["full_resync"][big]
        rows.append(
            {
                "target": f"full resync of {big} Services under {TARGET_RESYNC_S} s with 0 writes",
                "measured": f"p50 {fr['wall_ms']['median'] / 1000:.2f} s wall, {fr['cpu_ms']['median'] / 1000:.2f} s CPU, "
                f"{fr['writes']} writes",
                "met": fr["wall_ms"]["median"] / 1000 < TARGET_RESYNC_S and fr["writes"] == 0,
            }
        )
        worst_init = max((v["ratio"], k) for k, v in s["initial_sync"].items())
        rows.append(
            {
                "target": f"initial sync within {TARGET_INITIAL_RATIO}x of the floor",
                "measured": f"worst {worst_init[0]}x ({worst_init[1]} Services)",
                "met": worst_init[0] <= TARGET_INITIAL_RATIO,
            }
        )
    rss = s["memory"][big]["peak_rss_mb"]
    rows.append(
        {
            "target": f"peak RSS under {TARGET_RSS_MB:.0f} MB ({big} Services x 10)",
            "measured": f"{rss} MB",
            "met": rss < TARGET_RSS_MB,
        }
    )
    req = sorted({r for sc in s["latency"].values() for row in sc.values() for r in row["single_change"]["requests_per_change"]})
    rows.append(
        {
            "target": "exactly 1 request for a single-endpoint change",
            "measured": f"requests per change seen: {req}",
            "met": req == [1],
        }
    )
    return rows


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['min']:.1f} / {stats['median']:.1f} / {stats['avg']:.1f} / {stats['max']:.1f} / {stats['stddev']:.1f}"


def print_summary(s: dict[str, Any]) -> None:
    p = print
    m = s["machine"]
    p()
    p(f"kube-nftlb benchmarks ({s['mode']}), {s['started']}, {s['duration_min']} min")
    p(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB, kernel {m['kernel']}, nftlb {m['nftlb']}")
    p(f"load averages: start {s['load']['start']}, end {s['load']['end']}")
    p()
    p(
        "Programming latency, ms: min / median / avg / max / stddev "
        "(reconciler | nftlb floor, polled alike | p50 ratio | floor request p50, ratio)"
    )
    for scale, sizes in s["latency"].items():
        for size, row in sizes.items():
            for op in OPS:
                r = row[op]
                p(
                    f"  {scale:>5} Services {size:>3} endpoints {op:<6}  {_fmt(r['reconciler'])}  |  "
                    f"{_fmt(r['floor'])}  |  {r['ratio_p50']}x  |  {r['floor_request']['median']:.1f}, "
                    f"{r['ratio_p50_to_request']}x"
                )
    p()
    p(
        "Where the reconciler's time goes, p50 ms: API write, write to sync start (watch, parse, "
        "wake-up), the sync that sent it (ours + nftlb's request), sync end to the poll seeing it"
    )
    for scale, sizes in s["latency"].items():
        for size, row in sizes.items():
            for op in OPS:
                ph = row[op].get("phases_p50_ms")
                if ph:
                    p(
                        f"  {scale:>5} Services {size:>3} endpoints {op:<6}  "
                        f"{ph['api_write']:.1f} / {ph['to_sync']:.1f} / {ph['sync']:.1f} / {ph['to_seen']:.1f}"
                    )
    p()
    p("Partial sync in process (10 endpoints; p50 ms create / add / delete; whole, and without nftlb's request):")
    for scale, row in s["partial_sync"].items():
        p(
            f"  {scale:>5} Services  "
            + " / ".join(f"{row[op]['median']:.1f}" for op in OPS)
            + "   own: "
            + " / ".join(f"{row[op + '_own']['median']:.1f}" for op in OPS)
        )
    p()
    p("Single-endpoint change (requests, bytes sent):")
    for scale, sizes in s["latency"].items():
        for size, row in sizes.items():
            sc = row["single_change"]
            p(
                f"  {scale:>5} Services {size:>3} endpoints  {sc['requests_per_change']} requests, "
                f"{sc['bytes_sent_per_change']} bytes"
            )
    if s["initial_sync"]:
        p()
        p("Initial sync from an empty nftlb (reconciler | bulk POST floor | ratio):")
        for k, v in s["initial_sync"].items():
            if "in_process" in v:
                ip = v["in_process"]
                p(
                    f"  {k:>5} Services  in process: {ip['wall_s']:.1f} s, {ip['in_nftlb_requests_s']:.1f} s of it "
                    f"in nftlb requests ({ip['ratio_to_own_requests']}x)"
                )
            p(f"  {k:>5} Services  {v['reconciler_s']:.1f} s | {v['floor_s']:.1f} s | {v['ratio']}x  ({v['requests']} requests)")
        p()
        p("Full resync, nothing changed (wall p50, CPU p50, writes; nftlb GET /farms p50):")
        for k, v in s["full_resync"].items():
            p(
                f"  {k:>5} Services  {v['wall_ms']['median']:.0f} ms, {v['cpu_ms']['median']:.0f} ms CPU, {v['writes']} writes; "
                f"GET /farms {v['nftlb_get_farms_ms']['median']:.0f} ms ({v['get_farms_mb']} MB)"
            )
        p()
        p("Naive baseline (re-POST every farm each sync):")
        for k, v in s["naive"].items():
            p(
                f"  {k:>5} Services  {v['sync_ms']:.0f} ms a sync ({v['compute_ms']['median']:.0f} ms computing, "
                f"{v['post_ms']['median']:.0f} ms POSTing {v['bytes_per_sync'] / 1e6:.1f} MB), "
                f"{v['ratio_vs_full_resync']}x the full resync"
            )
    p()
    p("Peak RSS of kube-nftlb run: " + ", ".join(f"{k} Services {v['peak_rss_mb']} MB" for k, v in s["memory"].items()))
    p()
    p("Targets:")
    for t in s["targets"]:
        p(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}")
