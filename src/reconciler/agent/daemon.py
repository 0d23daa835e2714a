"""`kube-nftlb run`: wires informers, the controller, the nftlb client, Events and health.

Kept apart from the CLI's argument handling so tests and the demo can start the same wiring.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Hashable
from typing import Any

import kubernetes
from attrs import define

from reconciler import __version__
from reconciler.agent.config import ConfigError
from reconciler.agent.controller import Controller, Settings
from reconciler.agent.health import ProxyHealthServer, ProxyHealthTracker, ServiceHealthServers
from reconciler.agent.http import HttpServers, parse_address
from reconciler.agent.logs import get_logger
from reconciler.agent.metrics import HealthServer, Metrics
from reconciler.agent.watchdog import (
    DEFAULT_INTERVAL,
    NFTLB_TABLES,
    NftlbLogProbe,
    TablesProbe,
    Watchdog,
)
from reconciler.core.health import TIMEOUT_SYNC_PERIODS
from reconciler.core.kube import (
    EndpointSlice,
    Node,
    Service,
    object_key,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from reconciler.core.node_rules import TABLE_FAMILY, TABLE_NAME
from reconciler.core.problems import Problem
from reconciler.core.selection import label_selector
from reconciler.kernel.nftables import NftablesError, NodeTableWriter
from reconciler.kernel.tables import KernelTables
from reconciler.kubeapi.events import EventRecorder, kube_event_api
from reconciler.kubeapi.informer import Informer, InformerEvent
from reconciler.nftlb.client import NftlbClient


@define
class DaemonOptions:
    settings: Settings
    nftlb_url: str
    nftlb_key: str
    metrics_address: str = "127.0.0.1:9195"
    #: kube-proxy's --healthz-bind-address: /healthz and /livez ("" for none).
    healthz_address: str = "0.0.0.0:10256"
    #: Where healthCheckNodePorts listen: an IP, "" for every address, None for none.
    health_check_host: str | None = ""
    conntrack_cleanup: bool = True
    watch_timeout: tuple[int, int] = (240, 300)
    inactivity_timeout: float | None = None
    events: bool = True
    #: How often the watchdog looks for an nftlb restart (seconds; 0: never).
    probe_interval: float = DEFAULT_INTERVAL
    #: nftlb's failure lines, kept by its start script ("": not read).
    nftlb_events_file: str = ""


def _parser(
    parse: Callable[[Any], tuple[Any, list[Problem]]], log: Any, kind: str
) -> Callable[[dict[str, Any]], Any]:
    def run(raw: dict[str, Any]) -> Any:
        obj, problems = parse(raw)
        for p in problems:
            log.warning(
                "object.problem", kind=kind, object=str(p.ref), reason=p.reason, message=p.message
            )
        return obj

    return run


def _service_key(key: Hashable) -> tuple[str, str]:
    """The informer's default key is (namespace, name); the controller wants it typed."""
    assert isinstance(key, tuple) and len(key) == 2
    return (str(key[0]), str(key[1]))


class Daemon:
    """The running agent: start(), wait(), stop()."""

    def __init__(self, options: DaemonOptions, api_client: Any) -> None:
        self.options = options
        self.log = get_logger()
        self.metrics = Metrics()
        core = kubernetes.client.CoreV1Api(api_client)
        discovery = kubernetes.client.DiscoveryV1Api(api_client)
        node = options.settings.node_name
        self.nftlb = NftlbClient(options.nftlb_url, options.nftlb_key)
        recorder = None
        if options.events:
            recorder = EventRecorder(
                kube_event_api(api_client),
                node,
                on_error=lambda p, e: self.log.warning(
                    "event.failed",
                    object=str(p.ref) if p else None,
                    error=str(e) or type(e).__name__,
                    error_type=type(e).__name__,
                ),
                on_write=lambda result: self.metrics.events.labels(result=result).inc(),
            )
        self.recorder = recorder

        def restarts(resource: str) -> Callable[[str], None]:
            def hook(reason: str) -> None:
                self.metrics.watch_restarts.labels(resource=resource, reason=reason).inc()
                self.log.info("watch.restart", resource=resource, reason=reason)

            return hook

        def errors(resource: str) -> Callable[[str, BaseException], None]:
            def hook(where: str, exc: BaseException) -> None:
                status = getattr(exc, "status", None)
                hint = None
                if status in (401, 403):
                    hint = "check the RBAC rules: the ClusterRole and its binding"
                self.log.warning(
                    "watch.error",
                    resource=resource,
                    where=where,
                    error_type=type(exc).__name__,
                    status=status if isinstance(status, int) else None,
                    reason=getattr(exc, "reason", None) if status is not None else None,
                    error=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else None,
                    hint=hint,
                )

            return hook

        common: dict[str, Any] = {
            "server_timeout": options.watch_timeout,
            "inactivity_timeout": options.inactivity_timeout,
        }
        # kube-proxy's selector: not labelled for another proxy, not headless (both kinds)
        proxied = label_selector(options.settings.proxy_name)
        self.services: Informer[Service] = Informer(
            "services",
            core.list_service_for_all_namespaces,
            label_selector=proxied,
            parse=_parser(parse_service, self.log, "Service"),
            key=object_key,
            on_event=lambda ev: self.controller.on_service(_service_key(ev.key), ev.old, ev.new),
            on_restart=restarts("services"),
            on_error=errors("services"),
            **common,
        )
        self.slices: Informer[EndpointSlice] = Informer(
            "endpointslices",
            discovery.list_endpoint_slice_for_all_namespaces,
            label_selector=proxied,
            parse=_parser(parse_endpoint_slice, self.log, "EndpointSlice"),
            key=object_key,
            on_event=lambda ev: self.controller.on_slice(ev.old, ev.new),
            on_restart=restarts("endpointslices"),
            on_error=errors("endpointslices"),
            **common,
        )
        self.nodes: Informer[Node] = Informer(
            "nodes",
            core.list_node,
            field_selector=f"metadata.name={node}",
            parse=_parser(parse_node, self.log, "Node"),
            on_event=lambda ev: self.controller.on_node(ev.old, ev.new),
            key=lambda raw: ("", raw["metadata"]["name"]),
            on_restart=restarts("nodes"),
            on_error=errors("nodes"),
            **common,
        )
        self.http = HttpServers()
        timeout = TIMEOUT_SYNC_PERIODS * options.settings.resync_period
        self.proxy_health = ProxyHealthTracker(timeout)
        self.health_checks = (
            None
            if options.health_check_host is None
            else ServiceHealthServers(
                self.http, options.health_check_host, self.proxy_health, self.metrics, self.log
            )
        )
        self.proxy_health_server: ProxyHealthServer | None = None
        if options.healthz_address:
            host, port = parse_address(options.healthz_address)
            self.proxy_health_server = ProxyHealthServer(
                self.http, host, port, self.proxy_health, self.metrics
            )
        conntrack = None
        if options.conntrack_cleanup:
            from reconciler.kernel.conntrack import Conntrack

            conntrack = Conntrack()
        table = None
        if options.settings.node_rules is not None:
            try:
                table = NodeTableWriter()
            except NftablesError as e:
                raise ConfigError(str(e)) from e
        self.controller = Controller(
            options.settings,
            self.nftlb,
            self.services,
            self.slices,
            self.nodes,
            self.metrics,
            self.log,
            recorder,
            conntrack=conntrack,
            proxy_health=self.proxy_health,
            health_checks=self.health_checks,
            node_table=table,
        )
        self.tables = KernelTables()
        self.watchdog = Watchdog(
            lambda target: self.controller.restarted(target),
            self.metrics,
            self.log,
            interval=options.probe_interval or DEFAULT_INTERVAL,
        )
        if options.probe_interval > 0:
            self.watchdog.add(
                TablesProbe("nftlb", NFTLB_TABLES, self.tables.read, self.controller.nftlb_tables)
            )
            if table is not None:
                self.watchdog.add(
                    TablesProbe(
                        "node-table",
                        [(TABLE_FAMILY, TABLE_NAME)],
                        self.tables.read,
                        self.controller.node_tables,
                    )
                )
        if options.nftlb_events_file:
            self.watchdog.add(NftlbLogProbe(options.nftlb_events_file, self.metrics, self.log))
        self.health: HealthServer | None = None
        self._loop = True
        self._stopped = threading.Event()

    def _live(self) -> bool:
        import time

        stall = max(60.0, 3 * self.options.settings.resync_period)
        return time.monotonic() - self.controller.heartbeat < stall

    def _ready(self) -> bool:
        return self.controller.synced and self.controller.ready

    def start(self, *, loop: bool = True) -> None:
        self.log.info(
            "daemon.start",
            version=__version__,
            node=self.options.settings.node_name,
            nftlb=self.options.nftlb_url,
            resync_period=self.options.settings.resync_period,
            metrics=self.options.metrics_address,
            healthz=self.options.healthz_address,
            conntrack_cleanup=self.options.conntrack_cleanup,
        )
        self.http.start()
        if self.options.metrics_address:
            self.health = HealthServer(
                self.metrics, self.options.metrics_address, self._live, self._ready, self.http
            )
            self.health.start()
        if self.proxy_health_server is not None:
            try:
                self.proxy_health_server.start()
            except OSError as e:  # as kube-proxy: the proxy works on without its health server
                self.log.error(
                    "health.listen_failed", address=self.options.healthz_address, error=str(e)
                )
        for informer in (self.services, self.slices, self.nodes):
            informer.start()
        self._loop = loop
        if self.recorder is not None:
            self.recorder.start()
        if loop:
            self.controller.start()
            self.watchdog.start()

    def wait_for_sync(self, timeout: float) -> bool:
        return all(i.wait_for_sync(timeout) for i in (self.services, self.slices, self.nodes))

    def run_until_signal(self) -> None:
        """Wait for SIGTERM or SIGINT. The wait wakes twice a second: the kernel may hand the
        signal to any thread, and then a main thread asleep in an untimed wait is never
        interrupted to run the handler (seen in e2e: a SIGTERM ignored for minutes)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stopped.set())
        while not self._stopped.wait(0.5):
            pass

    def stop(self) -> None:
        self.log.info("daemon.stop")
        self.controller.stop()  # first: a sync in progress stops writing at its next request
        self.watchdog.stop()
        if self.recorder is not None:
            if not self._loop:  # `run --once`: give the Events of its one sync a moment
                self.recorder.flush(2.0)
            self.recorder.stop()
        for informer in (self.services, self.slices, self.nodes):
            informer.stop()
        if self.health_checks is not None:
            self.health_checks.stop()
        self.http.stop()
        self.tables.close()


__all__ = ["Daemon", "DaemonOptions", "InformerEvent"]
