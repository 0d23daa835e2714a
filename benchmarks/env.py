"""The environment of a benchmark: the machine, the nftlb daemon, the kernel, a floor client.

Everything here runs as root in a private network namespace (``unshare -n``), like the e2e
tests (tests/e2e/conftest.py), so the host's nftables ruleset is never touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from reconciler.core.nftlb_ruleset import ruleset_objects, service_elements
from reconciler.testing.nftlbd import NFTLB, NftlbProcess
from reconciler.testing.nftlbd import delete_tables as delete_tables  # for the scenarios

RESULTS = Path(__file__).parent / "results"
NETNS_ENV = "KUBE_NFTLB_BENCH_NETNS"
RUN_HINT = f"sudo unshare -n env {NETNS_ENV}=1 .venv/bin/python -m benchmarks.run"
SERVICE_MAP_RE = re.compile(r"^(output-)?(filter|nat)-proto-services6?$")


# -- where we run -----------------------------------------------------------------------------


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def why_not_runnable() -> str | None:
    """None when we may start nftlb here; else the reason, with the command to run."""
    if os.geteuid() != 0:
        return f"the benchmarks need root in a private network namespace: {RUN_HINT}"
    if not NFTLB.exists() or subprocess.run(["which", "nft"], capture_output=True).returncode:
        return "the benchmarks need Debian's nftlb (/usr/sbin/nftlb) and nft"
    if os.environ.get(NETNS_ENV) != "1" and _links() != ["lo"]:
        return f"refusing to touch this network namespace's nftables; run: {RUN_HINT}"
    return None


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    nftlb = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "nftlb"], capture_output=True, text=True, check=False
    ).stdout.strip()
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "nftlb": nftlb,
        "nft": nft.stdout.strip(),
        "python": platform.python_version(),
    }


def write_result(name: str, mode: str, result: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>-<mode>.json``: the result, with the machine and the time."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{mode}.json"
    finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps({"mode": mode, "machine": machine(), "finished": finished, **result}, indent=1) + "\n")
    return path


def scenario_main(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    modes: dict[str, dict[str, Any]],
    run: Callable[[dict[str, Any], Path], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """A scenario's command line: ``--quick`` picks the quick mode, every other flag given
    overrides that mode's setting of its name; the result is reported and written."""
    args, _ = parser.parse_known_args(argv)  # `nox -s bench` passes benchmarks.run's flags too
    problem = why_not_runnable()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    cfg = {**modes[mode], **{k: v for k, v in vars(args).items() if k != "quick" and v is not None}}
    with tempfile.TemporaryDirectory(prefix=f"kube-nftlb-{name}-") as tmp:
        result = run(cfg, Path(tmp))
    report(result)
    print(f"results: {write_result(name, mode, result)}")
    return 0


# -- statistics -------------------------------------------------------------------------------


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """min/median/avg/max/stddev (and p90) in milliseconds; nothing subtracted."""
    if not seconds:
        return {}
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)]
    return {
        "n": len(ms),
        "min": round(ms[0], 2),
        "median": round(statistics.median(ms), 2),
        "avg": round(statistics.fmean(ms), 2),
        "p90": round(p90, 2),
        "max": round(ms[-1], 2),
        "stddev": round(statistics.stdev(ms), 2) if len(ms) > 1 else 0.0,
    }


# -- the nftlb daemon -------------------------------------------------------------------------


class NftlbDaemon(NftlbProcess):
    """The shared private daemon (`reconciler.testing.nftlbd`), with the floor's minimal client."""

    def restart(self) -> None:
        """An empty daemon; its old tables are removed first."""
        self.stop()
        delete_tables()
        self.start()

    def client(self) -> FloorClient:
        return FloorClient(self.port, self.key)


# -- the floor: the smallest possible client ---------------------------------------------------


class FloorClient:
    """One ``http.client`` request per call, a fresh connection each, nothing else.

    This is the floor nftlb sets: the same body the reconciler sends, with no informer, no
    diff, no retries and no logging in front of it.
    """

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, float]:
        """(status, text, seconds from connect to the last byte of the answer)."""
        headers = {"Key": self.key, "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            conn.close()
        return response.status, text, time.perf_counter() - started

    def get_farm(self, name: str) -> tuple[int, str]:
        status, text, _ = self.request("GET", f"/farms/{name}")
        return status, text

    def farm_names(self) -> list[str]:
        status, text, _ = self.request("GET", "/farms")
        if status != 200:
            raise RuntimeError(f"GET /farms answered {status}")
        return [f["name"] for f in json.loads(text).get("farms", [])]


def backend_count(text: str) -> int:
    """Backends in a ``GET /farms/<name>`` answer."""
    farms = json.loads(text).get("farms") or [{}]
    return len(farms[0].get("backends") or [])


# -- the kernel -------------------------------------------------------------------------------


def ruleset_json() -> list[dict[str, Any]]:
    """``nft -j list ruleset`` (GET is not the truth; the kernel is)."""
    out = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True)
    return [o for o in json.loads(out.stdout)["nftables"] if "metainfo" not in o]


def _nftlb_objects(ruleset: Iterable[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    for obj in ruleset:
        for kind, body in obj.items():
            if isinstance(body, dict) and body.get("table") == "nftlb":
                yield kind, body


def kernel_view(
    ruleset: Iterable[dict[str, Any]],
) -> tuple[dict[str, set[tuple[str, str, int]]], dict[str, int]]:
    """(chain → {(protocol, address, port)} in the service maps, nat chain → backends in its
    DNAT map): enough to confirm that a farm's frontends and backends are in the kernel."""
    services: dict[str, set[tuple[str, str, int]]] = {}
    backends: dict[str, int] = {}
    for kind, body in _nftlb_objects(ruleset):
        if kind == "map" and SERVICE_MAP_RE.match(body["name"]):
            for key, verdict in body.get("elem", []):
                proto, address, port = key["concat"]
                target = verdict.get("goto", verdict.get("jump", {})).get("target", "")
                services.setdefault(target, set()).add((proto, address, int(port)))
        if kind == "chain" and body["name"].startswith("nat-"):
            backends.setdefault(body["name"], 0)
        if kind == "rule" and body["chain"].startswith("nat-"):
            for expr in body["expr"]:
                dnat = expr.get("dnat")
                if dnat:
                    backends[body["chain"]] = len(dnat["addr"]["map"]["data"]["set"])
    return services, backends


def served_farms() -> set[str]:
    """The farms whose frontend is in nftlb's IPv4 nat service map: one small `nft` call (0.1 s
    at 5,000 farms), so it can be polled; empty when nftlb has no table."""
    done = subprocess.run(
        ["nft", "-j", "list", "map", "ip", "nftlb", "nat-proto-services"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return set()
    elements = service_elements(ruleset_objects(json.loads(done.stdout)))
    return {target.removeprefix("nat-") for target in elements.values()}


def _listed_view(farm: str, chain: bool) -> tuple[dict[str, set[tuple[str, str, int]]], dict[str, int]]:
    """`kernel_view` of one farm from small listings: the NAT service map (0.1 s at 5,000 farms)
    and, with `chain`, the farm's NAT chain (3.6 s at 5,000 farms: nft reads every chain)."""
    objects: list[dict[str, Any]] = []
    listings = [["map", "ip", "nftlb", "nat-proto-services"]]
    if chain:
        listings.append(["chain", "ip", "nftlb", f"nat-{farm}"])
    for what in listings:
        out = subprocess.run(["nft", "-j", "list", *what], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            objects += [o for o in json.loads(out.stdout)["nftables"] if "metainfo" not in o]
    return kernel_view(objects)


def kernel_has(farm: str, ip: str, port: int, n_backends: int | None, how: str = "ruleset") -> bool:
    """The farm's frontend is in the NAT service map and its DNAT map has `n_backends` entries;
    with None, nothing of the farm is left there.

    `how`: ``ruleset`` reads ``nft -j list ruleset``; ``chain`` the NAT service map and the farm's
    NAT chain; ``map`` only the NAT service map (the frontend; the backends are not checked).
    """
    if how == "ruleset":
        services, backends = kernel_view(ruleset_json())
    else:
        services, backends = _listed_view(farm, chain=how == "chain")
    frontend = ("tcp", ip, port)
    if n_backends is None:
        return f"nat-{farm}" not in backends and not any(frontend in s for s in services.values())
    if how == "map":
        return frontend in services.get(f"nat-{farm}", set())
    return frontend in services.get(f"nat-{farm}", set()) and backends.get(f"nat-{farm}") == n_backends


# -- processes --------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_sched_seconds(pid: int) -> tuple[float, float]:
    """(on a CPU, runnable but waiting for one) of every thread of a process, in seconds, from
    ``/proc/<pid>/task/*/schedstat``: the second says how much a busy machine held it back."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, waiting, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        run, wait = run + int(on_cpu), wait + int(waiting)
    return run / 1e9, wait / 1e9


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB, e.g. VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0
