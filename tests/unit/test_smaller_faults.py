"""Issue 16 item 6 (my part): one key for an object without metadata.namespace, and a sync
that stops writing to nftlb as soon as the agent is told to stop."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from tests.unit.test_cli import offline_daemon
from tests.unit.test_controller import World, eps, service

from reconciler.agent.config import kube_api_client
from reconciler.core.kube import parse_endpoint_slice, parse_service
from reconciler.testing.fakeapi import FakeApiServer


def test_a_service_without_a_namespace_is_keyed_alike_by_informer_and_controller(
    tmp_path: Path,
) -> None:
    raw_service = {"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.1"}}
    raw_slice = {
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
    }
    with FakeApiServer() as fake:
        api = kube_api_client(fake.write_kubeconfig(tmp_path / "kc"))
        daemon = offline_daemon(api)
        parsed_service = parse_service(raw_service)[0]
        parsed_slice = parse_endpoint_slice(raw_slice)[0]
        assert parsed_service is not None and parsed_slice is not None
        assert daemon.services._key(raw_service) == parsed_service.key == ("default", "web")
        assert daemon.slices._key(raw_slice) == parsed_slice.key


def test_a_sync_stops_writing_to_nftlb_once_told_to_stop() -> None:
    w = World()
    for i in range(20):
        w.put_service(service(f"s{i}", ip=f"10.96.0.{i + 1}"))
        w.put_slice(eps(f"s{i}", f"10.1.0.{i + 1}"))
    handler = w.model.as_handler()
    writes: list[str] = []

    def stopping(request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            writes.append(request.method)
            if len(writes) == 1:  # SIGTERM arrives while the first write is in flight
                threading.Thread(target=w.controller.stop).start()
        return handler(request)

    w.client._http._transport = httpx.MockTransport(stopping)  # type: ignore[attr-defined]
    w.client.chunk_size = 1
    w.controller.sync_full()
    assert len(writes) <= 2, f"{len(writes)} writes after the stop"
