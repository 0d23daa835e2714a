"""The Markdown tables of docs/benchmarks.md, from benchmarks/summary.json.

.venv/bin/python -m benchmarks.report [--summary benchmarks/summary.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
OPS = ("create", "add", "delete")


def _n(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _mb(x: float) -> str:
    return f"{x} MB" if x else "-"


def tables(s: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    m = s["machine"]
    w(
        f"Run: {s['mode']} mode, {s['started']}, {s['duration_min']} min. Machine: {m['nproc']} CPUs "
        f"({m['cpu']}), {m['memory_gib']} GiB, kernel {m['kernel']}, nftlb {m['nftlb']}, {m['nft']}, "
        f"Python {m['python']}. Load averages (1/5/15 min): {s['load']['start']} at the start, "
        f"{s['load']['end']} at the end; per cluster size: "
        + "; ".join(f"{k}: {v['before']} → {v['after']}" for k, v in s["load"]["per_scale"].items())
        + "."
    )
    w("")
    w("### Programming latency (ms, API write to read-back from nftlb)")
    w("")
    w(
        "| Services in place | Endpoints | Change | kube-nftlb min / median / avg / max / stddev "
        "| nftlb floor, polled alike: median | p50 ratio | floor request alone: median | ratio to it |"
    )
    w("|---:|---:|---|---|---:|---:|---:|---:|")
    for scale, sizes in s["latency"].items():
        for size, row in sizes.items():
            for op in OPS:
                r = row[op]
                rec = r["reconciler"]
                w(
                    f"| {int(scale):,} | {size} | {op} | {_n(rec['min'])} / **{_n(rec['median'])}** / "
                    f"{_n(rec['avg'])} / {_n(rec['max'])} / {_n(rec['stddev'])} | {_n(r['floor']['median'])} "
                    f"| {r['ratio_p50']}x | {_n(r['floor_request']['median'])} | {r['ratio_p50_to_request']}x |"
                )
    phases = [
        (scale, size, op, row[op]["phases_p50_ms"])
        for scale, sizes in s["latency"].items()
        for size, row in sizes.items()
        for op in OPS
        if row[op].get("phases_p50_ms")
    ]
    if phases:
        w("")
        w("### Where kube-nftlb's time goes (p50 ms of each phase, so they need not add up to the p50 above)")
        w("")
        w(
            "| Services in place | Endpoints | Change | API write | write to sync start (watch, parse, wake-up) "
            "| the sync that sent it (ours + nftlb's request) | floor request alone | sync end to the poll seeing it |"
        )
        w("|---:|---:|---|---:|---:|---:|---:|---:|")
        for scale, size, op, ph in phases:
            req = s["latency"][scale][size][op]["floor_request"]["median"]
            w(
                f"| {int(scale):,} | {size} | {op} | {_n(ph['api_write'])} | {_n(ph['to_sync'])} "
                f"| {_n(ph['sync'])} | {_n(req)} | {_n(ph['to_seen'])} |"
            )
    w("")
    w(
        "### The event path in process (`Controller.sync_partial`, 10 endpoints, p50 ms; whole, and own: "
        "without the time in the nftlb request)"
    )
    w("")
    w("| Services in place | create: whole / own | add one endpoint: whole / own | delete: whole / own |")
    w("|---:|---:|---:|---:|")
    for scale, row in s["partial_sync"].items():
        w(
            f"| {int(scale):,} | "
            + " | ".join(f"{_n(row[op]['median'])} / **{_n(row[op + '_own']['median'])}**" for op in OPS)
            + " |"
        )
    w("")
    w("### A single-endpoint change")
    w("")
    w("| Services in place | Endpoints | Requests per change | Bytes sent | Syncs |")
    w("|---:|---:|---:|---:|---:|")
    for scale, sizes in s["latency"].items():
        for size, row in sizes.items():
            c = row["single_change"]
            w(
                f"| {int(scale):,} | {size} | {', '.join(map(str, c['requests_per_change']))} "
                f"| {', '.join(map(str, c['bytes_sent_per_change']))} "
                f"| {', '.join(map(str, c['syncs_per_change']))} |"
            )
    if s["initial_sync"]:
        w("")
        w("### Initial sync into an empty nftlb (Services x 10 endpoints)")
        w("")
        w(
            "| Services | kube-nftlb run: sync | bulk-POST floor | ratio | requests | MB sent "
            "| process start to synced | in process: sync, of it in nftlb requests |"
        )
        w("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k, v in s["initial_sync"].items():
            ip = v.get("in_process")
            inproc = f"{ip['wall_s']:.1f} s, {ip['in_nftlb_requests_s']:.1f} s ({ip['ratio_to_own_requests']}x)" if ip else "-"
            w(
                f"| {int(k):,} | {v['reconciler_s']:.1f} s | {v['floor_s']:.1f} s | {v['ratio']}x "
                f"| {v['requests']} | {v['bytes_sent'] / 1e6:.1f} | {v['process_start_to_done_s']:.1f} s | {inproc} |"
            )
        w("")
        w("### Full resync with nothing changed")
        w("")
        w(
            "| Services | wall min / median / max | CPU median | writes | nftlb `GET /farms` alone "
            "| `json.loads` of it | fresh `kube-nftlb run` against a full nftlb |"
        )
        w("|---:|---:|---:|---:|---:|---:|---:|")
        for k, v in s["full_resync"].items():
            wall, cpu = v["wall_ms"], v["cpu_ms"]
            rs = v.get("restart_sync") or {}
            w(
                f"| {int(k):,} | {_n(wall['min'])} / **{_n(wall['median'])}** / {_n(wall['max'])} ms "
                f"| {_n(cpu['median'])} ms | {v['writes']} | {_n(v['nftlb_get_farms_ms']['median'])} ms "
                f"({v['get_farms_mb']} MB) | {_n(v['json_loads_ms']['median'])} ms "
                f"| {_n(rs.get('duration_ms', 0))} ms, {rs.get('requests')} requests |"
            )
        w("")
        w("### The naive baseline: every sync re-POSTs every farm")
        w("")
        w("| Services | compute farms | POST them all | naive sync | MB sent a sync | vs. full resync |")
        w("|---:|---:|---:|---:|---:|---:|")
        for k, v in s["naive"].items():
            w(
                f"| {int(k):,} | {_n(v['compute_ms']['median'])} ms | {_n(v['post_ms']['median'])} ms "
                f"| {_n(v['sync_ms'])} ms | {v['bytes_per_sync'] / 1e6:.1f} | {v['ratio_vs_full_resync']}x |"
            )
    w("")
    w("### Memory of `kube-nftlb run`")
    w("")
    w(
        "| Services x 10 | peak RSS (VmHWM) | at the end of the initial sync | after all latency runs "
        "| fresh process, first full sync against a full nftlb |"
    )
    w("|---:|---:|---:|---:|---:|")
    for k, v in s["memory"].items():
        w(
            f"| {int(k):,} | **{v['peak_rss_mb']} MB** | {v['peak_rss_mb_at_initial_sync']} MB "
            f"| {v['peak_rss_mb_after_latency_runs']} MB | {_mb(v['peak_rss_mb_fresh_process_full_sync'])} |"
        )
    w("")
    w("### Targets, as `benchmarks/summary.py` judges them")
    w("")
    w("| Target | Measured | Met |")
    w("|---|---|---|")
    for t in s["targets"]:
        w(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("--summary", type=Path, default=ROOT / "benchmarks" / "summary.json")
    args = parser.parse_args(argv)
    sys.stdout.write(tables(json.loads(args.summary.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
