"""What one conntrack cleanup costs (kernel/conntrack.py): list the UDP entries, pick the stale
ones (the core), delete them, at several table sizes. Reported, never asserted. Root, in a
private network namespace, with Debian's conntrack tool:

    unshare -n env PYTHONPATH=src:. .venv/bin/python -m benchmarks.conntrack_cleanup [sizes...]

The table holds UDP flows from distinct clients to one cluster IP, each replying from one of two
endpoints; the plan keeps one, so half the entries are stale (one deletion group). Measured both
ways the shell lists: one frontend with its own filter (a partial sync) and the whole table (a
cleanup of more than PER_FRONTEND_LISTS frontends).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from reconciler.core.conntrack_plan import ConntrackFilter
from reconciler.core.farms import Family
from reconciler.kernel.conntrack import PER_FRONTEND_LISTS, Conntrack

VIP, PORT = "10.96.0.53", 53
KEEP, GONE = ("10.244.1.2", 5353), ("10.244.1.3", 5353)


def _fill(n: int) -> None:
    subprocess.run(["conntrack", "-F"], capture_output=True, check=False)
    lines = []
    for i in range(n):
        client, sport = f"10.{100 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}", 1024 + i % 60000
        reply = GONE if i % 2 else KEEP
        lines.append(
            f"-I -p udp -s {client} -d {VIP} --sport {sport} --dport {PORT} "
            f"--reply-src {reply[0]} --reply-dst {client} --reply-port-src {reply[1]} "
            f"--reply-port-dst {sport} -t 300"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".conntrack") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        subprocess.run(["conntrack", "-R", f.name], capture_output=True, check=True)


def measure(n: int, whole_table: bool) -> dict[str, object]:
    _fill(n)
    fronts = {(Family.IPV4, VIP, PORT): frozenset({KEEP})}
    if whole_table:  # more frontends than the per-frontend listing takes: one whole listing
        for i in range(PER_FRONTEND_LISTS):
            fronts[(Family.IPV4, f"10.96.1.{i + 1}", PORT)] = frozenset({KEEP})
    started = time.perf_counter()
    [result] = Conntrack().cleanup(ConntrackFilter(fronts))
    return {
        "entries": n,
        "listing": "whole table" if whole_table else "per frontend",
        "cleanup_s": round(time.perf_counter() - started, 3),
        "listed": result.listed,
        "deleted": result.deleted,
    }


def main(argv: list[str]) -> int:
    subprocess.run(
        [
            "nft",
            "add table ip bench; add chain ip bench c { type filter hook prerouting priority 0; }; "
            "add rule ip bench c ct state new counter",
        ],
        check=True,
    )
    for n in [int(a) for a in argv] or [1000, 10000, 50000]:
        for whole in (False, True):
            print(json.dumps(measure(n, whole)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
