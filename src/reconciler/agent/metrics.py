"""Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`).

One registry per Metrics object (not the global one), so tests and several controllers in one
process never share counters. Names follow Prometheus conventions; see docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler.agent.http import HttpServers, Listener, Request, Response, parse_address

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
        self.events = Counter(
            f"{p}events_total",
            "Event writes by the background worker, by result.",
            ["result"],
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
        self.node_table_commands = Counter(
            f"{p}node_table_commands_total",
            "nftables commands sent to the table inet kube-nftlb (elements, chains, rules).",
            registry=r,
        )
        self.node_table_failures = Counter(
            f"{p}node_table_failures_total",
            "Transactions nft refused or could not run for the table inet kube-nftlb.",
            registry=r,
        )
        self.last_success = Gauge(
            f"{p}last_successful_sync_timestamp_seconds",
            "Unix time of the last sync that succeeded.",
            registry=r,
        )

        self.proxy_healthz = Counter(
            f"{p}proxy_healthz_total",
            "Answers of the proxy health server's /healthz, by HTTP code.",
            ["code"],
            registry=r,
        )
        self.proxy_livez = Counter(
            f"{p}proxy_livez_total",
            "Answers of the proxy health server's /livez, by HTTP code.",
            ["code"],
            registry=r,
        )
        self.health_check_ports = Gauge(
            f"{p}health_check_node_ports",
            "healthCheckNodePorts this node is serving.",
            registry=r,
        )
        self.conntrack_deleted = Counter(
            f"{p}conntrack_deleted_entries_total",
            "Stale UDP conntrack entries deleted after syncs, by IP family.",
            ["ip_family"],
            registry=r,
        )
        self.conntrack_duration = Histogram(
            f"{p}conntrack_cleanup_duration_seconds",
            "Time one conntrack cleanup took (list UDP entries, delete stale ones), by IP family.",
            ["ip_family"],
            registry=r,
            buckets=_SYNC_BUCKETS,
        )
        self.conntrack_errors = Counter(
            f"{p}conntrack_cleanup_errors_total",
            "Conntrack cleanups that failed (retried after the next sync), by IP family.",
            ["ip_family"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz (the loop is alive) and /readyz (synced and nftlb reachable)."""

    def __init__(
        self,
        metrics: Metrics,
        address: str,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        servers: HttpServers | None = None,
    ) -> None:
        self.metrics, self.live, self.ready = metrics, live, ready
        self.host, self._port = parse_address(address)
        self.host = self.host or "127.0.0.1"
        self._own = servers is None
        self.servers = servers or HttpServers()
        self._listener: Listener | None = None

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            ok = self.live()
            return Response(200 if ok else 503, b"ok\n" if ok else b"sync loop stalled\n")
        if path == "/readyz":
            ok = self.ready()
            return Response(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
        return Response(404, b"not found\n")

    @property
    def port(self) -> int:
        assert self._listener is not None, "not started"
        return self._listener.port

    def start(self) -> None:
        self.servers.start()
        self._listener = self.servers.listen(self.host, self._port, self.handle)

    def stop(self) -> None:
        if self._own:
            self.servers.stop()
        elif self._listener is not None:
            self._listener.close()


def now() -> float:
    return time.time()
