"""The latency chart of docs/benchmarks.md: p50 programming latency against cluster size.

    .venv/bin/python -m benchmarks.chart [--summary benchmarks/summary.json] [--out docs/benchmarks-latency.png]

matplotlib is not a dependency of kube-nftlb; install it into the venv for this script only
(``.venv/bin/pip install matplotlib``). Without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
OPS = (("create", "create a Service"), ("add", "add one endpoint"), ("delete", "delete the Service"))
COLOURS = {"10": "#1f77b4", "50": "#ff7f0e", "100": "#2ca02c"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__.split("\n")[0])
    parser.add_argument("--summary", type=Path, default=ROOT / "benchmarks" / "summary.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-latency.png")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping the chart (.venv/bin/pip install matplotlib)")
        return 0
    summary = json.loads(args.summary.read_text())
    latency = summary["latency"]
    scales = sorted(int(s) for s in latency)
    m = summary["machine"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), sharey=True)
    for ax, (op, title) in zip(axes, OPS, strict=True):
        for size, colour in COLOURS.items():
            if size not in latency[str(scales[0])]:
                continue
            rec = [latency[str(s)][size][op]["reconciler"]["median"] for s in scales]
            flo = [latency[str(s)][size][op]["floor"]["median"] for s in scales]
            ax.plot(scales, rec, "o-", color=colour, label=f"kube-nftlb, {size} endpoints")
            ax.plot(scales, flo, "x--", color=colour, alpha=0.6, label=f"nftlb floor, {size} endpoints")
        ax.set_title(title)
        ax.set_xlabel("Services already programmed (x 10 endpoints)")
        ax.set_xticks(scales)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency, API write to read-back (ms, log scale)")
    axes[0].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        f"kube-nftlb programming latency ({summary['config']['runs']} runs each; "
        f"{m['nproc']} CPUs {m['cpu']}, nftlb {m['nftlb']})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
