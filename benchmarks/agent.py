"""The real `kube-nftlb run` process, against the fake API server and the real nftlb daemon."""

from __future__ import annotations

import datetime as dt
import json
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.env import NftlbDaemon, proc_cpu_seconds, proc_status_kb
from reconciler.testing.fakeapi import FakeApiServer


def write_kubeconfig(path: Path, url: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )


class Agent:
    """One `kube-nftlb run` process with JSON logs in a file, read incrementally."""

    def __init__(
        self,
        workdir: Path,
        fake: FakeApiServer,
        daemon: NftlbDaemon,
        *,
        resync_period: str = "3600s",
        min_sync_interval: str = "50ms",
    ) -> None:
        self.workdir, self.fake, self.daemon = workdir, fake, daemon
        self.kubeconfig = workdir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, fake.url)
        self.resync_period = resync_period
        self.min_sync_interval = min_sync_interval
        self.log_path = workdir / "run.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._offset = 0
        self._partial = b""
        self.lines: list[dict[str, Any]] = []

    def start(self) -> None:
        command = [sys.executable, "-m", "reconciler", "run", "--kubeconfig", str(self.kubeconfig)]
        command += ["--nftlb-url", self.daemon.url, "--nftlb-key-file", str(self.daemon.key_file)]
        command += ["--node-name", "node-1", "--resync-period", self.resync_period]
        command += ["--min-sync-interval", self.min_sync_interval, "--cluster-cidr", "10.244.0.0/16"]
        command += ["--log-format", "json", "--log-level", "info", "--metrics-address", ""]
        self.log_path.write_bytes(b"")
        self._offset, self._partial, self.lines = 0, b"", []
        self.started_at = time.perf_counter()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def read(self) -> list[dict[str, Any]]:
        """New log lines since the last call (also appended to `lines`)."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        new = []
        for raw in complete:
            try:
                new.append(json.loads(raw))
            except ValueError:
                new.append({"event": "<not json>", "text": raw.decode(errors="replace")})
        self.lines.extend(new)
        return new

    def events(self, name: str) -> list[dict[str, Any]]:
        self.read()
        return [line for line in self.lines if line.get("event") == name]

    def wait_for(self, cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            if not self.alive():
                raise RuntimeError(f"kube-nftlb run exited while waiting for {what}: {self.tail()}")
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}: {self.tail()}")

    def tail(self, n: int = 5) -> str:
        self.read()
        return "\n".join(json.dumps(line) for line in self.lines[-n:])

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024


def log_epoch(line: dict[str, Any]) -> float:
    """A log line's ISO timestamp as seconds since the epoch (comparable with time.time())."""
    return dt.datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def sync_summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, kinds, durations and requests of these `sync.done` / `sync.failed` lines."""
    durations = sorted(float(e.get("duration_ms") or 0) for e in lines)
    requests = [int(e.get("requests") or 0) for e in lines if e.get("event") == "sync.done"]
    sent_ms = sum(float(e.get("duration_ms") or 0) for e in lines if e.get("requests"))
    failed = [e for e in lines if e.get("event") == "sync.failed" or not e.get("ok", True)]
    return {
        "count": len(lines),
        "failed": len(failed),
        "kinds": dict(Counter(str(e.get("kind")) for e in lines)),
        "duration_ms_p50": round(statistics.median(durations), 1) if durations else None,
        "duration_ms_max": round(durations[-1], 1) if durations else None,
        "requests_p50": statistics.median(requests) if requests else None,
        "requests_max": max(requests) if requests else None,
        "requests_total": sum(requests),
        # the wall time of a sync per request it sent to nftlb (syncs that sent any)
        "ms_per_request": round(sent_ms / sum(requests), 1) if sum(requests) else None,
    }
