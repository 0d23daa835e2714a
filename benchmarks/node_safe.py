"""The outage window after an nftlb restart (issue 11), against nftlb's own bulk-POST floor.

``python -m benchmarks.node_safe [--quick]`` (root, private netns; also run by ``nox -s bench``).

For each size (Services of 10 endpoints, plus one probe Service so that 0 means "just one"):
the real `kube-nftlb run` with the default resync period (30 s) programs them; nftlb is killed
with SIGKILL and started again (it deletes its tables and starts empty); the window is the time
from nftlb listening again to every Service's frontend being in the kernel's nat service map.
The floor: nftlb started empty again (the agent stopped) and the same farms bulk POSTed by a
minimal client in the reconciler's chunks, until the kernel holds them all. Reported, never
asserted; results in ``benchmarks/results/node_safe.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.agent import Agent
from benchmarks.cluster import NODE, bench_objects, chunked_documents, farms_for
from benchmarks.env import NftlbDaemon, delete_tables, loadavg, machine, served_farms, why_not_runnable
from reconciler.nftlb.client import DEFAULT_CHUNK_SIZE
from reconciler.testing.fakeapi import FakeApiServer

RESULTS = Path(__file__).parent / "results"
ENDPOINTS = 10
SCALES = {"full": [0, 1000, 5000], "quick": [0, 200]}


def served() -> int:
    """Frontends in nftlb's IPv4 nat service map (one small nft call: 0.1 s at 5,000 farms)."""
    return len(served_farms())


def wait_served(count: int, timeout: float) -> float:
    """Seconds until `count` frontends are served. Each poll waits twice as long as the last one
    took, so that the polls (0.1 s of nft's CPU each at 5,000 farms) take at most a third of a
    core from nftlb and the agent; the answer is late by at most that wait (0.2 s at 5,000)."""
    started = time.perf_counter()
    while True:
        polled = time.perf_counter()
        if served() >= count:
            return polled - started
        took = time.perf_counter() - polled
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{served()} of {count} frontends after {timeout:.0f} s")
        time.sleep(max(0.01, 2 * took))


def kill_and_start(daemon: NftlbDaemon) -> float:
    """SIGKILL, then a fresh nftlb; returns when it listens (perf_counter)."""
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait()
    daemon.process = None
    daemon.start()
    return time.perf_counter()


def one(size: int, workdir: Path) -> dict[str, Any]:
    objects = [NODE, *bench_objects(size + 1, ENDPOINTS)]
    wanted = size + 1
    daemon = NftlbDaemon(workdir)
    delete_tables()
    daemon.start()
    try:
        with FakeApiServer() as fake:
            fake.seed(objects)
            agent = Agent(workdir, fake, daemon, resync_period="30s")
            agent.start()
            try:
                agent.wait_for(lambda: served() >= wanted, 3600, "the initial sync", 1.0)  # a poll: 0.1-0.5 s of nft at 5,000
                kill_and_start(daemon)
                window = wait_served(wanted, 600)
                detected = agent.events("watchdog.restart_detected")
                syncs = [
                    {k: e.get(k) for k in ("kind", "ok", "duration_ms", "requests", "timestamp")}
                    for e in agent.events("sync.done") + agent.events("sync.failed")
                ]
            finally:
                agent.stop()
        kill_and_start(daemon)
        client = daemon.client()
        started = time.perf_counter()
        for body in chunked_documents(farms_for(objects), DEFAULT_CHUNK_SIZE):
            status, text, _ = client.request("POST", "/farms", body)
            if status != 200:
                raise RuntimeError(f"floor POST answered {status}: {text[:200]}")
        wait_served(wanted, 600)
        floor = time.perf_counter() - started
    finally:
        daemon.stop()
        delete_tables()
    return {
        "services": wanted,
        "endpoints_per_service": ENDPOINTS,
        "window_s": round(window, 3),
        "floor_s": round(floor, 3),
        "detected": len(detected),
        "syncs": syncs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0 and 200 Services only")
    parser.add_argument("--sizes", type=int, nargs="*", help="Services (besides the probe)")
    args, _ = parser.parse_known_args(argv)  # `nox -s bench` passes benchmarks.run's too
    problem = why_not_runnable()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    rows = []
    for size in args.sizes or SCALES[mode]:
        with tempfile.TemporaryDirectory(prefix="kube-nftlb-bench-") as tmp:
            row = one(size, Path(tmp))
        rows.append(row)
        print(
            f"{row['services']:>6} Services: every frontend back {row['window_s']:.2f} s after "
            f"nftlb listened again (floor, a bulk POST of the same farms: {row['floor_s']:.2f} s)"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"mode": mode, "machine": machine(), "loadavg": loadavg(), "outage": rows}
    (RESULTS / f"node_safe-{mode}.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
