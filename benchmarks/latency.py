"""Programming latency: from the API write to the change being read back from nftlb.

Each run, for a probe Service of `size` endpoints (see `cluster.Probe`):

* reconciler, through the real `kube-nftlb run` process and the fake API server:
  - create: the EndpointSlice then the Service are written; the clock starts before the first
    write and stops when ``GET /farms/<farm>`` answers the farm with all `size` backends;
  - add: the slice is rewritten with one more endpoint; stops at `size` + 1 backends;
  - the kernel is checked, untimed: the frontend is in the NAT service map and the farm's DNAT
    map holds `size` + 1 backends (``nft -j list ruleset``; on large rulesets, where reading
    it or even one chain takes seconds, see `run.kernel_policy`);
  - delete: the Service is deleted; stops when ``GET /farms/<farm>`` answers 500 (nftlb's answer
    for an unknown farm); the kernel is checked again: nothing of the farm is left (untimed);
    the slice is then deleted (untimed);
* floor, right after, on the same farm name: the same three requests the reconciler sent
  (``POST /farms`` with the whole farm, ``POST /farms`` with the one new backend,
  ``DELETE /farms/<farm>``), each sent by a minimal ``http.client`` request from a thread while
  this thread polls exactly as for the reconciler, the polling starting as long before the
  request as the reconciler's run took to start its sync (see `floor_run`). Both figures are
  kept: from sending until the poll sees the change (the same instrument as the reconciler's
  figure, including the load the polling puts on nftlb and the CPUs), and the request's own
  round trip (connect to the end of nftlb's answer; nftlb is single-threaded and applies a
  change before it answers).

Reconciler and floor runs alternate, so both see the same load. Polling uses a fresh connection
every `POLL` seconds (nftlb does not keep connections alive); nothing is subtracted.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.agent import Agent
from benchmarks.cluster import PORT, PROBE_NS, Probe, body_bytes
from benchmarks.env import FloorClient, backend_count, kernel_has

POLL = 0.001
#: Pause after each change, so that the sync burst bucket (5 syncs, 1 more every 50 ms) is full
#: again and the next change is not rate limited by the previous one.
SETTLE = 0.15
TIMEOUT = 60.0


def _poll(client: FloorClient, farm: str, done: Callable[[int, str], bool], started: float) -> float:
    deadline = started + TIMEOUT
    while True:
        status, text = client.get_farm(farm)
        if done(status, text):
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise TimeoutError(f"farm {farm} did not reach the expected state within {TIMEOUT} s")
        time.sleep(POLL)


def _has_backends(n: int) -> Callable[[int, str], bool]:
    return lambda status, text: status == 200 and backend_count(text) == n


def _gone(status: int, _: str) -> bool:
    return status != 200


def _syncs(agent: Agent) -> list[dict[str, Any]]:
    keys = ("kind", "ok", "duration_ms", "operations", "requests", "bytes_sent", "timestamp")
    return [{k: line.get(k) for k in keys} for line in agent.read() if line.get("event") == "sync.done"]


def _phases(started: float, written: float, seen: float, syncs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Where one change's time went, from this process's clock and the sync.done lines (their
    ISO timestamps are the end of each sync, on the same clock): the API writes, the wait from
    the last write to the start of the sync that sent the change (watch delivery, parsing, the
    wake-up), that sync (our work and nftlb's request), and the poll noticing it."""
    sending = [s for s in syncs if s.get("requests") and s.get("timestamp")]
    if not sending:
        return None
    end = dt.datetime.fromisoformat(str(sending[0]["timestamp"]).replace("Z", "+00:00")).timestamp()
    sync = sending[0]["duration_ms"] / 1000
    return {
        "api_write": written - started,
        "to_sync": end - sync - written,
        "sync": sync,
        "to_seen": seen - end,
    }


def reconciler_run(agent: Agent, client: FloorClient, probe: Probe, kernel: str | None) -> dict[str, Any]:
    fake = agent.fake
    out: dict[str, Any] = {"farm": probe.farm}
    _syncs(agent)  # drop older lines

    clock0, started = time.time(), time.perf_counter()
    fake.apply(probe.slice)
    fake.apply(probe.service)
    written = time.time()
    out["create"] = _poll(client, probe.farm, _has_backends(probe.size), started)
    seen = clock0 + out["create"]
    time.sleep(SETTLE)
    out["create_syncs"] = _syncs(agent)
    out["create_phases"] = _phases(clock0, written, seen, out["create_syncs"])

    clock0, started = time.time(), time.perf_counter()
    fake.apply(probe.slice_plus_one)
    written = time.time()
    out["add"] = _poll(client, probe.farm, _has_backends(probe.size + 1), started)
    seen = clock0 + out["add"]
    time.sleep(SETTLE)
    out["add_syncs"] = _syncs(agent)
    out["add_phases"] = _phases(clock0, written, seen, out["add_syncs"])
    if kernel:
        t = time.perf_counter()
        out["kernel_check"] = kernel
        out["kernel_after_add"] = kernel_has(probe.farm, probe.ip, PORT, probe.size + 1, kernel)
        out["kernel_check_s"] = time.perf_counter() - t

    clock0, started = time.time(), time.perf_counter()
    fake.delete("Service", PROBE_NS, probe.name)
    written = time.time()
    out["delete"] = _poll(client, probe.farm, _gone, started)
    seen = clock0 + out["delete"]
    time.sleep(SETTLE)
    out["delete_syncs"] = _syncs(agent)
    out["delete_phases"] = _phases(clock0, written, seen, out["delete_syncs"])
    if kernel:
        out["kernel_after_delete"] = kernel_has(probe.farm, probe.ip, PORT, None, kernel)
    fake.delete(
        "EndpointSlice",
        PROBE_NS,
        probe.slice["metadata"]["name"],
        api_version="discovery.k8s.io/v1",
    )
    time.sleep(SETTLE)
    _syncs(agent)
    return out


def _send(client: FloorClient, method: str, path: str, body: bytes | None, answer: list[Any]) -> None:
    answer.append(client.request(method, path, body))


def _sender(client: FloorClient, lead: float, method: str, path: str, body: bytes | None, answer: list[Any]) -> None:
    time.sleep(lead)
    answer.append(time.perf_counter())
    _send(client, method, path, body, answer)


def floor_run(client: FloorClient, probe: Probe, leads: dict[str, float] | None = None) -> dict[str, Any]:
    """The same three requests, each sent by a minimal client from a thread while this thread
    polls exactly as for the reconciler: `<op>` is the time from sending the request until the
    poll sees the change (the same instrument as the reconciler's figure), `<op>_request` the
    request's own round trip.

    The poll starts `leads[op]` seconds before the request is sent: the time the reconciler's run
    took from its API write to the start of the sync that sent the change, so that nftlb has polls
    in flight when the request arrives, as it had for the reconciler's. It matters: the same
    one-backend POST takes about 8 ms when it reaches nftlb with the first poll and about 15 ms
    when polls have been arriving for 2 ms."""
    out: dict[str, Any] = {"farm": probe.farm}
    for op, request, check in (
        ("create", probe.create_request, _has_backends(probe.size)),
        ("add", probe.add_request, _has_backends(probe.size + 1)),
        ("delete", probe.delete_request, _gone),
    ):
        body = body_bytes(request) if request.body is not None else None
        answer: list[Any] = []
        lead = max(0.0, (leads or {}).get(op, 0.0))
        sender = threading.Thread(target=_sender, args=(client, lead, request.method, request.path, body, answer))
        polled = time.perf_counter()
        sender.start()
        seen = _poll(client, probe.farm, check, polled)
        sender.join()
        sent_at = answer.pop(0)
        out[op] = seen - (sent_at - polled)
        out[f"{op}_lead"] = lead
        status, text, seconds = answer[0]
        if status != 200 or "unknown value" in text:
            raise RuntimeError(f"floor {op} of {probe.farm}: nftlb answered {status}: {text[:200]}")
        out[f"{op}_request"] = seconds
        out[f"{op}_bytes"] = len(body or b"")
        time.sleep(SETTLE / 3)
    return out


def run_latency(
    agent: Agent,
    client: FloorClient,
    sizes: list[int],
    runs: int,
    kernel: Callable[[int], str | None],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """For each size, `runs` alternating reconciler and floor runs; raw results per run."""
    results: dict[str, Any] = {}
    for s_index, size in enumerate(sizes):
        rec: list[dict[str, Any]] = []
        flo: list[dict[str, Any]] = []
        for run in range(runs):
            probe = Probe(size, run, s_index * 1000 + run)
            rec.append(reconciler_run(agent, client, probe, kernel(run)))
            phases = {op: rec[-1].get(f"{op}_phases") or {} for op in ("create", "add", "delete")}
            leads = {op: ph.get("api_write", 0.0) + ph.get("to_sync", 0.0) for op, ph in phases.items()}
            flo.append(floor_run(client, probe, leads))
        bad = [r["farm"] for r in rec if r.get("kernel_after_add") is False or r.get("kernel_after_delete") is False]
        if bad:
            raise RuntimeError(f"the kernel did not hold what nftlb answered for {bad[:3]}")
        results[str(size)] = {"reconciler": rec, "floor": flo}
        med = sorted(r["create"] for r in rec)[len(rec) // 2] * 1000
        log(f"    {size:>3} endpoints: {runs} runs, create p50 {med:.1f} ms")
    return results
