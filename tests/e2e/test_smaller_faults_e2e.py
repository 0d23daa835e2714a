"""Issue 16 item 6 through the real `kube-nftlb run`, the fake API server and the real nftlb:
SIGTERM in the middle of a plan stops the writing, and a watch event without
``metadata.namespace`` is programmed and removed at once, not at the next full resync."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from tests.e2e.test_run_e2e import Agent, backends, wait_until

from reconciler.testing.fakeapi import FakeApiServer

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon


class RecordingProxy:
    """An HTTP proxy in front of nftlb that notes when each request arrived and, for writes,
    holds it `write_delay` seconds before forwarding it (a slow nftlb: a plan that lasts)."""

    def __init__(self, target: str, write_delay: float) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.write_delay = write_delay
        #: (arrival, method, path) of every request, in arrival order (time.monotonic()).
        self.requests: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.arrived:
                    proxy.requests.append((time.monotonic(), self.command, self.path))
                    proxy.arrived.notify_all()
                if self.command != "GET":
                    time.sleep(proxy.write_delay)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body or None, headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type") or "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError):  # the agent may be gone (killed)
                    self.wfile.write(data)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[tuple[float, str, str]]:
        with self.lock:
            return self._writes()

    def _writes(self) -> list[tuple[float, str, str]]:
        return [r for r in self.requests if r[1] != "GET"]

    def wait_for_writes(self, count: int, timeout: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self._writes()) >= count, timeout):
                raise AssertionError(f"nftlb did not get {count} writes in {timeout} s")


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def _service(name: str, ip: str, namespace: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    }


def _slice(service: str, ip: str, namespace: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"{service}-1",
        "labels": {"kubernetes.io/service-name": service},
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "node-1"}],
    }


SERVICES = 400  #: 400 farms: 8 POSTs of the client's 50-farm chunks on the first sync
WRITE_DELAY = 1.5  #: each one held this long: the rest of the plan outlasts the 10 s join
STOP_BOUND = WRITE_DELAY + 6.0  #: the request in flight, then the ordinary shutdown


def test_sigterm_in_the_middle_of_a_plan_stops_the_writing(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    """Before, the sync went on sending its plan after SIGTERM until the controller's join
    timed out (10 s); now no request starts after it but the one in flight."""
    objects: list[dict[str, Any]] = []
    for i in range(SERVICES):
        objects.append(_service(f"s{i}", f"10.96.{1 + i // 250}.{1 + i % 250}"))
        objects.append(_slice(f"s{i}", f"10.244.{1 + i // 250}.{1 + i % 250}"))
    api.seed(objects)
    with RecordingProxy(clean_daemon.url, WRITE_DELAY) as proxy:
        agent = Agent(tmp_path, api, clean_daemon, resync_period="5m", nftlb_url=proxy.url)
        agent.start()
        assert agent.process is not None
        try:
            proxy.wait_for_writes(2, timeout=60)  # the second chunk of the plan is in flight
            sigterm = time.monotonic()
            agent.process.terminate()
            code = agent.process.wait(timeout=30)
            exited = time.monotonic() - sigterm
        finally:
            if agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
        with proxy.lock:
            after = [(round(t - sigterm, 2), m, p) for t, m, p in proxy.requests if t > sigterm]
        writes = proxy.writes()
    # The signal reaches the sync thread a moment after it is sent: allow one request that
    # started in that moment, not the rest of the plan (6 more POSTs).
    assert len(after) <= 1, f"{len(after)} nftlb requests after SIGTERM: {after}"
    assert len(writes) < SERVICES // 50, "the plan was cut short"
    assert code == 0, f"exit code {code}"
    # Promptly: once the request in flight is answered, well before the 10 s join timeout.
    assert exited < STOP_BOUND, f"exited {exited:.1f} s after SIGTERM"
    # What nftlb got is a prefix of the plan: whole chunks of farms, every one of them ours.
    with clean_daemon.client() as c:
        held = c.get_farms()
    assert held.foreign == () and len(held.owned) == 50 * len(writes)
    assert not agent.events("sync.crashed")
    print(f"exited {exited:.2f} s after SIGTERM; {len(writes)} of {SERVICES // 50} writes sent")


def _event(kind: str, obj: dict[str, Any], rv: str) -> dict[str, Any]:
    return {"type": kind, "object": {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}}


def test_a_watch_event_without_a_namespace_is_programmed_and_removed_at_once(
    tmp_path: Path, api: FakeApiServer, clean_daemon: NftlbDaemon
) -> None:
    """Before, the informer keyed it ("", name) and the controller ("default", name): it was
    programmed, and deleted, only at the next full resync."""
    api.seed([_service("web", "10.96.0.20"), _slice("web", "10.244.1.11")])
    farm = "k8s.default.bare.http.tcp.v4"
    agent = Agent(tmp_path, api, clean_daemon, resync_period="10m")
    agent.start()
    try:
        wait_until(lambda: "k8s.default.web.http.tcp.v4" in agent.farms(), what="web")
        bare = (_service("bare", "10.96.0.30", None), _slice("bare", "10.244.1.31", None))

        def deliver(kind: str) -> None:
            """The raw events on the next Service and EndpointSlice watches, then end the
            current ones so that the informers resume (from the current resourceVersion)."""
            assert api.wait_for_watches(3, timeout=10)
            rv = api.resource_version
            api.inject_watch_lines([_event(kind, bare[0], rv)], "/api/v1/services")
            api.inject_watch_lines([_event(kind, bare[1], rv)], "/endpointslices")
            api.close_watches()

        deliver("ADDED")
        wait_until(lambda: backends(agent, farm) == ["10.244.1.31"], timeout=15, what="bare")
        agent.daemon.assert_kernel(agent.farms().values())
        deliver("DELETED")
        wait_until(lambda: farm not in agent.farms(), timeout=15, what="bare removed")
        assert "k8s.default.web.http.tcp.v4" in agent.farms()
        assert not agent.events("sync.crashed")
    finally:
        assert agent.stop() == 0
