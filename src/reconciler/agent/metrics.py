"""Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`).

One registry per Metrics object (not the global one), so tests and several controllers in one
process never share counters. Names follow Prometheus conventions; see docs/metrics.md.

What kube-proxy measures is served under kube-proxy's name (subsystem `kubeproxy`), with its
meaning and its buckets, so that kube-proxy's dashboards and alerts work unchanged; what is ours
(nftlb requests, farms, problems, Events) is `kube_nftlb_*`. kube-proxy's newer releases add an
`ip_family` label to the sync metrics; one sync here programs both families at once, so they have
none (as in kube-proxy before v1.28).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Hashable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler import __version__
from reconciler.agent.http import HttpServers, Listener, Request, Response, parse_address

_SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: kube-proxy's sync buckets: exponential from 1 ms, factor 2, 15 buckets (to 16.384 s).
KUBEPROXY_SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
#: kube-proxy's network programming buckets: MergeBuckets(0, linear 0.25 step 0.25 x2,
#: linear 1 step 1 x59, linear 60 step 5 x12, linear 120 step 30 x7).
KUBEPROXY_PROGRAMMING_BUCKETS = tuple(
    sorted(
        {0.0, 0.25, 0.5}
        | {float(i) for i in range(1, 60)}
        | {60.0 + 5 * i for i in range(12)}
        | {120.0 + 30 * i for i in range(7)}
    )
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "kube_nftlb_"
        k = "kubeproxy_"
        # The standard process metrics (process_*) and python_info, on this registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Gauge(
            f"{p}build_info",
            "Always 1; the version of kube-nftlb and of the Python running it.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(version=__version__, python_version=platform.python_version()).set(1)
        self.kp_sync = Histogram(
            f"{k}sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (every sync, full or partial).",
            registry=r,
            buckets=KUBEPROXY_SYNC_BUCKETS,
        )
        self.kp_sync_full = Histogram(
            f"{k}sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs.",
            registry=r,
            buckets=KUBEPROXY_SYNC_BUCKETS,
        )
        self.kp_sync_partial = Histogram(
            f"{k}sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs.",
            registry=r,
            buckets=KUBEPROXY_SYNC_BUCKETS,
        )
        self.kp_last_sync = Gauge(
            f"{k}sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced.",
            registry=r,
        )
        self.kp_last_queued = Gauge(
            f"{k}sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued.",
            registry=r,
        )
        self.kp_programming = Histogram(
            f"{k}network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds.",
            registry=r,
            buckets=KUBEPROXY_PROGRAMMING_BUCKETS,
        )
        self.kp_endpoint_changes = Counter(
            f"{k}sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules EndpointSlice changes.",
            registry=r,
        )
        self.kp_endpoint_pending = Gauge(
            f"{k}sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules EndpointSlice changes.",
            registry=r,
        )
        self.kp_service_changes = Counter(
            f"{k}sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes.",
            registry=r,
        )
        self.kp_service_pending = Gauge(
            f"{k}sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes.",
            registry=r,
        )
        self.kp_sync_failures = Counter(
            f"{k}sync_proxy_rules_nftables_sync_failures_total",
            "Syncs that failed to program the rules (nftlb or the node table).",
            registry=r,
        )
        self.kp_no_local = Gauge(
            f"{k}sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints (Service ports, "
            "once per IP family, whose Local policy drops for want of a local endpoint).",
            ["traffic_policy"],
            registry=r,
        )
        self._pending_services: set[Hashable] = set()
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
        self.foreign_conflicts = Gauge(
            f"{p}foreign_conflicts",
            "Desired farms not programmed because a farm kube-nftlb did not make holds their "
            "name or frontend.",
            registry=r,
        )
        self.unexpected_errors = Counter(
            f"{p}unexpected_errors_total",
            "Exceptions no handler expected (a bug), caught so that the loop goes on, by where.",
            ["where"],
            registry=r,
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
        self.restarts_detected = Counter(
            f"{p}restarts_detected_total",
            "Restarts of nftlb, or tables of ours vanishing, noticed by the watchdog, by target.",
            ["target"],
            registry=r,
        )
        self.nftlb_log_lines = Counter(
            f"{p}nftlb_log_lines_total",
            "nftlb's own failure lines (nft refused a batch, a rebuild of every rule), by kind.",
            ["kind"],
            registry=r,
        )
        self.desired_farms = Gauge(
            f"{p}desired_farms", "Farms the cluster state asks for.", registry=r
        )
        self.actual_farms = Gauge(
            f"{p}actual_farms", "Owned farms nftlb holds after the last sync.", registry=r
        )
        self.spare_backends = Gauge(
            f"{p}spare_backends",
            "Retired backends nftlb still holds, waiting for the cleanup to delete them.",
            registry=r,
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
            f"{k}proxy_healthz_total",
            "Answers of the proxy health server's /healthz, by HTTP code.",
            ["code"],
            registry=r,
        )
        self.proxy_livez = Counter(
            f"{k}proxy_livez_total",
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
            f"{k}conntrack_reconciler_deleted_entries_total",
            "Stale UDP conntrack entries deleted after syncs, by IP family.",
            ["ip_family"],
            registry=r,
        )
        self.conntrack_duration = Histogram(
            f"{k}conntrack_reconciler_sync_duration_seconds",
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

    # -- what the controller tells (kept here so that its calls stay one line each) ------------

    def service_event(self, key: Hashable, changed: bool) -> None:
        """kube-proxy counts every Service event, and Services with changes not yet synced."""
        self.kp_service_changes.inc()
        if changed:
            self._pending_services.add(key)
            self.kp_service_pending.set(len(self._pending_services))

    def slice_event(self, changed: bool) -> None:
        """kube-proxy counts every EndpointSlice event, and those not yet synced."""
        self.kp_endpoint_changes.inc()
        if changed:
            self.kp_endpoint_pending.inc()

    def queued(self, now: float) -> None:
        self.kp_last_queued.set(now)

    def changes_taken(self) -> None:
        """A sync took every pending change."""
        self._pending_services.clear()
        self.kp_service_pending.set(0)
        self.kp_endpoint_pending.set(0)
        self.pending_changes.set(0)

    def sync_finished(
        self, kind: str, duration: float, ok: bool, triggers: Iterable[float], now: float
    ) -> None:
        """Every sync's duration (kube-proxy observes failed ones too); on success, its time and
        the programming latency of each EndpointSlice change it applied."""
        self.sync_duration.labels(kind=kind).observe(duration)
        self.kp_sync.observe(duration)
        (self.kp_sync_full if kind == "full" else self.kp_sync_partial).observe(duration)
        if not ok:
            self.sync_errors.labels(kind=kind).inc()
            self.kp_sync_failures.inc()
            return
        self.last_success.set(now)
        self.kp_last_sync.set(now)
        for stamp in triggers:
            latency = max(0.0, now - stamp)
            self.programming_latency.observe(latency)
            self.kp_programming.observe(latency)

    def no_local_endpoints(self, counts: Mapping[str, int]) -> None:
        """Set after each successful sync, as kube-proxy does, from the node table's rules."""
        for policy, n in counts.items():
            self.kp_no_local.labels(traffic_policy=policy).set(n)

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
