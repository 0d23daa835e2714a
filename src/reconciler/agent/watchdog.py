"""Notices within about a second that something the node's rules live in was restarted, and
asks for a full sync at once (issue 11: an nftlb restart emptied the node for a resync period).

A `Probe` is polled every `interval` seconds from one thread. It answers None while all is as
before, or a short reason when its target restarted or vanished; the watchdog then logs
``watchdog.restart_detected``, counts ``kube_nftlb_restarts_detected_total{target}`` and calls
`on_restart(target)` (the controller's `request_full_sync`). A probe that cannot tell (an error)
is logged once (``watchdog.probe_failed``) until it works again, and never fires.

`TablesProbe` watches nftables tables by their kernel handles (`kernel/tables.py`): nftlb
deletes its ``ip``/``ip6`` ``nftlb`` tables when it starts, so a table seen before that is gone,
or has a new handle, means nftlb restarted (or rebuilt its rules after an nft failure, when a
full sync is just as welcome). A table that appears fires nothing (the reconciler's own writes
make them). Our own ``inet kube-nftlb`` table is watched the same way with a second probe:
``watchdog.add(TablesProbe("node-table", [("inet", "kube-nftlb")], tables.read))``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from reconciler.agent.metrics import Metrics
from reconciler.kernel.tables import TableKey

DEFAULT_INTERVAL = 0.5
#: The tables nftlb 1.0.7 owns (it deletes them at start-up).
NFTLB_TABLES: tuple[TableKey, ...] = (("ip", "nftlb"), ("ip6", "nftlb"))


class Probe(Protocol):
    @property
    def target(self) -> str: ...

    def poll(self) -> str | None:
        """None while nothing restarted; a reason once when it did. May raise: cannot tell."""
        ...


class TablesProbe:
    """Fires when a watched table seen before is gone or was made again (a new handle), or when
    a table `expected` says must exist (the reconciler has programmed farms there) is missing:
    a restart right after the first sync, before any poll saw the table, is noticed too. A
    missing table fires once, not again until it has been seen."""

    def __init__(
        self,
        target: str,
        tables: Iterable[TableKey],
        read: Callable[[], Mapping[TableKey, int]],
        expected: Callable[[], Iterable[TableKey]] = tuple,
    ) -> None:
        self.target = target
        self._tables = tuple(tables)
        self._read = read
        self._expected = expected
        self._seen: dict[TableKey, int] = {}
        self._missing: set[TableKey] = set()

    def poll(self) -> str | None:
        now = self._read()
        expected = set(self._expected())
        reasons = []
        for key in self._tables:
            old, new = self._seen.get(key), now.get(key)
            if new is None:
                if (old is not None or key in expected) and key not in self._missing:
                    self._missing.add(key)
                    reasons.append(f"table {key[0]} {key[1]} is gone")
            else:
                self._missing.discard(key)
                if old is not None and new != old:
                    reasons.append(f"table {key[0]} {key[1]} was made again")
        self._seen = {k: now[k] for k in self._tables if k in now}
        return "; ".join(reasons) or None


class Watchdog:
    def __init__(
        self,
        on_restart: Callable[[str], None],
        metrics: Metrics,
        log: Any,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._on_restart = on_restart
        self._metrics = metrics
        self._log = log
        self.interval = interval
        self._probes: list[Probe] = []
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, probe: Probe) -> None:
        self._probes.append(probe)

    def check(self) -> list[str]:
        """Poll every probe once; returns the targets that restarted."""
        fired = []
        for probe in self._probes:
            try:
                reason = probe.poll()
            except Exception as e:  # a probe that cannot tell must not stop the others
                if probe.target not in self._failing:
                    self._failing.add(probe.target)
                    self._log.warning(
                        "watchdog.probe_failed", target=probe.target, error=str(e) or repr(e)
                    )
                continue
            self._failing.discard(probe.target)
            if reason is None:
                continue
            fired.append(probe.target)
            self._metrics.restarts_detected.labels(target=probe.target).inc()
            self._log.warning("watchdog.restart_detected", target=probe.target, reason=reason)
            self._on_restart(probe.target)
        return fired

    def start(self) -> None:
        if not self._probes:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.check()
        while not self._stop.wait(self.interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


#: What the lines of nftlb's events file (deploy/image/nftlb-start.sh) mean.
NFTLB_LINE_KINDS: tuple[tuple[str, str], ...] = (
    ("nft command error", "nft-error"),
    ("recovery in progress", "recovery"),
    ("nft recovered", "recovered"),
)
MAX_LINE = 500


class NftlbLogProbe:
    """Reads the lines nftlb's start script keeps of nftlb's failures (nft refused a batch,
    nftlb rebuilt everything), logs each (``nftlb.log``) and counts it
    (``kube_nftlb_nftlb_log_lines_total{kind}``). The script has already put ``<redacted>`` in
    place of the key, and the agent's logger scrubs it again (`logs.redact`). Never fires: a
    rebuild also makes nftlb's tables again, which `TablesProbe` notices."""

    target = "nftlb-log"

    def __init__(self, path: str, metrics: Metrics, log: Any) -> None:
        self._path = path
        self._metrics = metrics
        self._log = log
        self._offset: int | None = None  # None: not read yet (start at its end)
        self._rest = b""

    def poll(self) -> str | None:
        try:
            with open(self._path, "rb") as f:
                size = f.seek(0, 2)
                if self._offset is None:
                    self._offset = size  # lines from before this agent started were seen
                if size < self._offset:
                    self._offset, self._rest = 0, b""  # the script emptied it
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            self._offset = self._offset or 0
            return None
        self._offset += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")[:MAX_LINE]
            kind = next((k for text, k in NFTLB_LINE_KINDS if text in line), "other")
            self._metrics.nftlb_log_lines.labels(kind=kind).inc()
            if kind == "nft-error":
                self._log.error("nftlb.log", kind=kind, line=line)
            else:
                self._log.warning("nftlb.log", kind=kind, line=line)
        return None
