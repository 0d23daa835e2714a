"""kube-proxy's health servers: the proxy's `/healthz` and `/livez`, and each healthCheckNodePort.

What they answer is decided in `core/health.py`; this module keeps the state those answers are
made from (when an update was queued, when the last sync succeeded, this node) and the listeners,
all on the agent's one HTTP thread (`agent/http.py`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.agent.http import HttpServers, Listener, Request, Response
from reconciler.agent.metrics import Metrics
from reconciler.core.health import (
    CONTENT_TYPE,
    ProxyHealth,
    ServiceHealth,
    proxy_health_answer,
    service_health_answer,
)
from reconciler.core.kube import Node


def go_time(stamp: float | None) -> str:
    """A time as Go's time.Time marshals to JSON: RFC 3339 in UTC, fraction without trailing
    zeros; the zero time for never."""
    if stamp is None:
        return "0001-01-01T00:00:00Z"
    t = dt.datetime.fromtimestamp(stamp, dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


class ProxyHealthTracker:
    """`queued()` when a change asks for a sync, `updated()` when a sync succeeded [PXH]."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.timeout, self._clock = timeout, clock
        self._lock = threading.Lock()
        self._pending: float | None = None
        self._last: float | None = None
        self.node: Node | None = None

    def queued(self) -> None:
        with self._lock:
            if self._pending is None:
                self._pending = self._clock()

    def updated(self, started: float | None = None) -> None:
        """A sync succeeded; changes queued after `started` (clock time) stay pending."""
        with self._lock:
            now = self._clock()
            self._last = now
            if self._pending is not None and (started is None or self._pending <= started):
                self._pending = None

    def now(self) -> float:
        return self._clock()

    def snapshot(self) -> ProxyHealth:
        with self._lock:
            return ProxyHealth(self._pending, self._last, self.timeout)

    def healthy(self) -> bool:
        return self.snapshot().healthy(self._clock())


class ProxyHealthServer:
    """`/healthz` and `/livez` on --healthz-bind-address (kube-proxy's port 10256)."""

    def __init__(
        self,
        servers: HttpServers,
        host: str,
        port: int,
        tracker: ProxyHealthTracker,
        metrics: Metrics,
    ) -> None:
        self.servers, self.host, self._port = servers, host, port
        self.tracker, self.metrics = tracker, metrics
        self._listener: Listener | None = None

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path not in ("/healthz", "/livez"):
            return Response(404, b"not found\n")
        status, body, headers = proxy_health_answer(
            path, self.tracker.snapshot(), self.tracker.node, self.tracker.now(), go_time
        )
        counter = self.metrics.proxy_healthz if path == "/healthz" else self.metrics.proxy_livez
        counter.labels(code=str(status)).inc()
        return Response(status, body, CONTENT_TYPE, headers)

    @property
    def port(self) -> int:
        assert self._listener is not None, "not started"
        return self._listener.port

    def start(self) -> None:
        self._listener = self.servers.listen(self.host, self._port, self.handle)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()


class ServiceHealthServers:
    """One listener per healthCheckNodePort, kept equal to the ports the core decides.

    `sync(ports)` opens new ports, closes gone ones and swaps the answers in place; a port that
    cannot be bound (in use) is logged and tried again at the next sync.
    """

    def __init__(
        self,
        servers: HttpServers,
        host: str,
        tracker: ProxyHealthTracker,
        metrics: Metrics,
        log: Any,
    ) -> None:
        self.servers, self.host, self.tracker, self.metrics, self.log = (
            servers,
            host,
            tracker,
            metrics,
            log,
        )
        self._answers: dict[int, ServiceHealth] = {}
        self._listeners: dict[int, Listener] = {}
        self._failed: set[int] = set()

    @property
    def ports(self) -> set[int]:
        return set(self._listeners)

    def _handler(self, port: int) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            health = self._answers.get(port)
            if health is None:  # closed while this request was on its way
                return Response(503, b"no longer served\n")
            status, body, headers = service_health_answer(health, self.tracker.healthy())
            return Response(status, body, CONTENT_TYPE, headers)

        return handle

    def sync(self, ports: Mapping[int, ServiceHealth]) -> None:
        self._answers = dict(ports)
        for port in set(self._listeners) - set(ports):
            self._listeners.pop(port).close()
            self.log.info("health.closed", port=port)
        for port, health in sorted(ports.items()):
            if port in self._listeners:
                continue
            try:
                self._listeners[port] = self.servers.listen(self.host, port, self._handler(port))
            except OSError as e:
                if port not in self._failed:
                    self.log.error(
                        "health.listen_failed",
                        port=port,
                        service=f"{health.namespace}/{health.name}",
                        error=str(e),
                    )
                self._failed.add(port)
                continue
            self._failed.discard(port)
            self.log.info("health.serving", port=port, service=f"{health.namespace}/{health.name}")
        self._failed &= set(ports)
        self.metrics.health_check_ports.set(len(self._listeners))

    def stop(self) -> None:
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()
