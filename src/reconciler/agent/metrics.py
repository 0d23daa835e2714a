"""Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`).

One registry per Metrics object (not the global one), so tests and several controllers in one
process never share counters. Names follow Prometheus conventions; see docs/metrics.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "kube_nftlb_"
        self.sync_duration = Histogram(
            f"{p}sync_duration_seconds",
            "Time one sync took, by kind.",
            ["kind"],
            registry=r,
            buckets=_SYNC_BUCKETS,
        )
        self.programming_latency = Histogram(
            f"{p}network_programming_duration_seconds",
            "From an EndpointSlice's last-change-trigger-time to its change being in nftlb.",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.plan_operations = Counter(
            f"{p}plan_operations_total", "Plan operations applied, by kind.", ["op"], registry=r
        )
        self.nftlb_requests = Counter(
            f"{p}nftlb_requests_total",
            "Requests sent to nftlb, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.nftlb_bytes = Counter(
            f"{p}nftlb_request_bytes_total", "Request body bytes sent to nftlb.", registry=r
        )
        self.sync_errors = Counter(
            f"{p}sync_errors_total", "Syncs that failed, by kind.", ["kind"], registry=r
        )
        self.watch_restarts = Counter(
            f"{p}watch_restarts_total",
            "Watches restarted, by resource and reason.",
            ["resource", "reason"],
            registry=r,
        )
        self.desired_farms = Gauge(
            f"{p}desired_farms", "Farms the cluster state asks for.", registry=r
        )
        self.actual_farms = Gauge(
            f"{p}actual_farms", "Owned farms nftlb held at the last full sync.", registry=r
        )
        self.pending_changes = Gauge(
            f"{p}pending_changes", "Services marked dirty and not yet synced.", registry=r
        )
        self.problems = Gauge(
            f"{p}problems", "Problems found in the cluster state at the last sync.", registry=r
        )
        self.last_success = Gauge(
            f"{p}last_successful_sync_timestamp_seconds",
            "Unix time of the last sync that succeeded.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz (the loop is alive) and /readyz (synced and nftlb reachable)."""

    def __init__(
        self, metrics: Metrics, address: str, live: Callable[[], bool], ready: Callable[[], bool]
    ) -> None:
        host, _, port = address.rpartition(":")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = outer.live()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"sync loop stalled\n")
                elif self.path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(
                self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.metrics, self.live, self.ready = metrics, live, ready
        self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def now() -> float:
    return time.time()
