"""Syncs of a whole cluster, in this process: full resync, its floor, the naive baseline, profiles.

The controller is the real `reconciler.agent.controller.Controller` with a real `NftlbClient` against
the real daemon; only the informers are replaced by stores that hold the parsed objects (as in
tests/unit/test_controller.py). The initial sync is measured in the real `kube-nftlb run`
process instead (see `run.py`).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import time
from typing import Any, cast

from benchmarks.cluster import NODE, NODE_NAME, chunked_documents, parse
from benchmarks.env import FloorClient, NftlbDaemon, summary_ms
from reconciler.agent.controller import Controller, Settings
from reconciler.agent.logs import configure, get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.desired import desired_farms
from reconciler.core.farms import assign_marks
from reconciler.core.kube import ClusterState
from reconciler.nftlb.client import DEFAULT_CHUNK_SIZE, NftlbClient


class Store:
    """An informer's store as the controller sees it."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.has_synced = True

    def list(self) -> list[Any]:
        return list(self.items)


def controller(daemon: NftlbDaemon, objects: list[dict[str, Any]]) -> tuple[Controller, NftlbClient]:
    services, slices, nodes = parse([*objects, NODE])
    configure("json", "info", open(os.devnull, "w"))  # noqa: SIM115 (kept open for the process)
    client = NftlbClient(daemon.url, daemon.key)
    ctl = Controller(
        Settings(NODE_NAME, resync_period=600.0),
        client,
        Store(services),
        Store(slices),
        Store(nodes),
        Metrics(),
        get_logger(),
    )
    return ctl, client


class TimedSends:
    """Wraps `NftlbClient.send` to add up the time spent in requests to nftlb (connect, send,
    nftlb's work, answer): the rest of a sync is the reconciler's own."""

    def __init__(self, client: NftlbClient) -> None:
        self.seconds = 0.0
        self._send = client.send
        client.send = self  # type: ignore[method-assign]

    def __call__(self, request: Any) -> str:
        started = time.perf_counter()
        try:
            return self._send(request)
        finally:
            self.seconds += time.perf_counter() - started


def initial_sync(ctl: Controller, client: NftlbClient) -> dict[str, Any]:
    """One full sync into an empty nftlb, split into time in nftlb requests and our own."""
    timer = TimedSends(client)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = ctl.sync_full()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    client.send = timer._send  # type: ignore[method-assign]
    if not result.ok:
        raise RuntimeError(f"initial sync failed: {result.error}")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "in_nftlb_requests_s": timer.seconds,
        "own_s": wall - timer.seconds,
        "requests": result.requests,
        "bytes_sent": result.bytes_sent,
    }


def full_resyncs(ctl: Controller, client: NftlbClient, reps: int) -> dict[str, Any]:
    """`reps` full syncs with nothing changed: wall, CPU of this process, requests, writes."""
    runs = []
    for _ in range(reps):
        requests0 = client.requests_sent
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = ctl.sync_full()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if not result.ok:
            raise RuntimeError(f"full sync failed: {result.error}")
        runs.append(
            {
                "wall": wall,
                "cpu": cpu,
                "requests": client.requests_sent - requests0,
                "writes": result.requests,
                "operations": result.operations,
                "desired": result.desired,
            }
        )
    return {
        "runs": runs,
        "wall_ms": summary_ms([r["wall"] for r in runs]),
        "cpu_ms": summary_ms([r["cpu"] for r in runs]),
        "writes_max": max(r["writes"] for r in runs),
        "requests_max": max(r["requests"] for r in runs),
    }


def partial_syncs(ctl: Controller, reps: int, size: int = 10) -> dict[str, Any]:
    """The event path in process: a probe Service of `size` endpoints created, grown by one
    endpoint and deleted through the controller's change hooks and `sync_partial` (one sync
    each), timed whole and without the time spent in nftlb requests (`<op>_own`), then 5 more
    under cProfile (not timed). Shows whether a partial sync grows with the number of Services
    already programmed."""
    from benchmarks.cluster import Probe

    services = cast(Store, ctl._caches["services"])
    slices = cast(Store, ctl._caches["endpointslices"])
    times: dict[str, list[float]] = {"create": [], "add": [], "delete": []}
    own: dict[str, list[float]] = {"create": [], "add": [], "delete": []}
    timer = TimedSends(ctl.nftlb)
    prof = cProfile.Profile()
    profiled_reps = 5  # after the timed ones: the profiler slows a sync down 2-3 times
    for run in range(reps + profiled_reps):
        profiled = run >= reps
        probe = Probe(size, 900 + run, 900 + run)
        (svc,), (first,), _ = parse([probe.service, probe.slice])
        _, (grown,), _ = parse([probe.slice_plus_one])
        for op in ("create", "add", "delete"):
            if op == "create":
                services.items.append(svc)
                slices.items.append(first)
                ctl.on_slice(None, first)
                ctl.on_service(svc.key, None, svc)
            elif op == "add":
                slices.items.remove(first)
                slices.items.append(grown)
                ctl.on_slice(first, grown)
            else:
                services.items.remove(svc)
                ctl.on_service(svc.key, svc, None)
            timer.seconds = 0.0
            if profiled:
                prof.enable()
            started = time.perf_counter()
            result = ctl.sync_partial()
            took = time.perf_counter() - started
            prof.disable()
            if not profiled:
                times[op].append(took)
                own[op].append(took - timer.seconds)
            if not result.ok or result.requests != 1:
                raise RuntimeError(f"partial sync {op}: {result}")
        slices.items.remove(grown)
        ctl.on_slice(grown, None)
        ctl.sync_partial()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(30)
    ctl.nftlb.send = timer._send  # type: ignore[method-assign]
    return (
        {op: summary_ms(v) for op, v in times.items()}
        | {f"{op}_own": summary_ms(v) for op, v in own.items()}
        | {"profile": stream.getvalue()}
    )


def read_floor(client: FloorClient, reps: int) -> dict[str, Any]:
    """What nftlb alone needs for a full resync's read: ``GET /farms``, and parsing its JSON."""
    gets, parses, size = [], [], 0
    for _ in range(reps):
        status, text, seconds = client.request("GET", "/farms")
        if status != 200:
            raise RuntimeError(f"GET /farms answered {status}")
        t = time.perf_counter()
        json.loads(text)
        parses.append(time.perf_counter() - t)
        gets.append(seconds)
        size = len(text)
    return {"get_ms": summary_ms(gets), "json_loads_ms": summary_ms(parses), "bytes": size}


def profile_full_sync(ctl: Controller, top: int = 25) -> dict[str, Any]:
    """cProfile of one full sync: the top functions by own time and by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    ctl.sync_full()
    prof.disable()
    out: dict[str, Any] = {}
    for key in ("tottime", "cumulative"):
        stream = io.StringIO()
        pstats.Stats(prof, stream=stream).strip_dirs().sort_stats(key).print_stats(top)
        out[key] = stream.getvalue()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "where": f"{_short(file)}:{line}:{func}",
                "calls": ncalls,
                "tottime": tottime,
                "cumtime": cumtime,
            }
        )
    rows.sort(key=lambda r: -r["tottime"])
    out["by_tottime"] = rows[:top]
    rows.sort(key=lambda r: -r["cumtime"])
    out["by_cumtime"] = rows[:top]
    return out


def _short(path: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def bulk_post(client: FloorClient, documents: list[bytes]) -> dict[str, Any]:
    """The floor of an initial sync: the same chunks, one ``POST /farms`` each, nothing else."""
    started = time.perf_counter()
    per_chunk = []
    for body in documents:
        status, text, seconds = client.request("POST", "/farms", body)
        if status != 200 or "unknown value" in text:
            raise RuntimeError(f"bulk POST answered {status}: {text[:200]}")
        per_chunk.append(seconds)
    return {
        "total_s": time.perf_counter() - started,
        "chunks": len(documents),
        "bytes": sum(len(d) for d in documents),
        "chunk_ms": summary_ms(per_chunk),
    }


def naive_compute(objects: list[dict[str, Any]], reps: int) -> dict[str, Any]:
    """What a naive sync computes before it posts: the desired farms from the parsed objects,
    with marks, serialised in chunks (`desired_farms`, `assign_marks`, `farms_document`)."""
    services, slices, nodes = parse([*objects, NODE])
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        desired = desired_farms(ClusterState.build(services, slices, nodes), NODE_NAME)
        chunked_documents([assign_marks(f, None) for f in desired.farms], DEFAULT_CHUNK_SIZE)
        times.append(time.perf_counter() - started)
    return {"compute_ms": summary_ms(times)}


def naive_sync(client: FloorClient, documents: list[bytes], reps: int) -> dict[str, Any]:
    """The naive baseline: every sync re-POSTs every farm (no read-back, no diff), `reps` syncs.

    nftlb answers a re-POST of an unchanged farm without calling nft (`nftlb-api.md` 0.14).
    """
    syncs, per_chunk = [], []
    for _ in range(reps):
        started = time.perf_counter()
        for body in documents:
            status, text, seconds = client.request("POST", "/farms", body)
            if status != 200 or "unknown value" in text:
                raise RuntimeError(f"naive POST answered {status}: {text[:200]}")
            per_chunk.append(seconds)
        syncs.append(time.perf_counter() - started)
    return {
        "syncs": reps,
        "chunks_per_sync": len(documents),
        "bytes_per_sync": sum(len(d) for d in documents),
        "sync_ms": summary_ms(syncs),
        "chunk_ms": summary_ms(per_chunk),
    }
