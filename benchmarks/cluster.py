"""Synthetic clusters: Services with one TCP port and an EndpointSlice of ready endpoints.

Every object is what a real cluster would hold for a Deployment behind a ClusterIP Service;
the farms are computed with the reconciler's own pure core, so the floor client sends exactly
the bodies the reconciler sends.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from reconciler.core.desired import desired_farms
from reconciler.core.diff import diff
from reconciler.core.farms import Farm, assign_marks
from reconciler.core.kube import (
    ClusterState,
    EndpointSlice,
    Node,
    Service,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from reconciler.core.plan import OpKind
from reconciler.core.wire import Request, farms_document, requests_for

NODE_NAME = "node-1"
BENCH_NS = "bench"
PROBE_NS = "probe"
PORT = 80
TARGET_PORT = 8080

NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": NODE_NAME},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.11"}]},
}


def _ip(base: int, index: int) -> str:
    """10.<base + index // 62500>.<x>.<1-250>: unique per (base, index), never .0 or .255."""
    return f"10.{base + index // 62500}.{(index // 250) % 250}.{index % 250 + 1}"


def cluster_ip(index: int, probe: bool = False) -> str:
    return _ip(112 if probe else 96, index)


def endpoint_ip(service_index: int, endpoint: int, probe: bool = False) -> str:
    return _ip(200 if probe else 128, service_index * 128 + endpoint)


def replacement_ip(slot: int, step: int) -> str:
    """The `step`-th new endpoint of the `slot`-th churned Service (`benchmarks.soak`): from
    10.160.0.0 up, never one of `bench_objects`' (10.128-10.137 up to 5,000 Services); unique
    for 4,000 steps of each of up to 60 Services."""
    return _ip(160, slot * 4000 + step % 4000)


def service(namespace: str, name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": PORT, "targetPort": TARGET_PORT}],
        },
    }


def endpoint_slice(namespace: str, service_name: str, ips: Iterable[str], terminating: Collection[str] = ()) -> dict[str, Any]:
    """One slice of endpoints on this node: ready, or (those in `terminating`) serving while
    terminating, as a pod in its grace period is."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-abcde",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": TARGET_PORT}],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ip not in terminating, "serving": True, "terminating": ip in terminating},
                "nodeName": NODE_NAME,
            }
            for ip in ips
        ],
    }


def bench_name(index: int) -> str:
    return f"svc-{index:05d}"


def farm_name(namespace: str, name: str) -> str:
    return f"k8s.{namespace}.{name}.http.tcp.v4"


def bench_objects(count: int, endpoints: int) -> Iterator[dict[str, Any]]:
    """`count` Services in namespace `bench`, each with one slice of `endpoints` endpoints."""
    for i in range(count):
        name = bench_name(i)
        yield service(BENCH_NS, name, cluster_ip(i))
        yield endpoint_slice(BENCH_NS, name, [endpoint_ip(i, j) for j in range(endpoints)])


def parse(
    objects: Iterable[dict[str, Any]],
) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    services: list[Service] = []
    slices: list[EndpointSlice] = []
    nodes: list[Node] = []
    for obj in objects:
        if obj["kind"] == "Service":
            services.append(_ok(parse_service(obj)))
        elif obj["kind"] == "EndpointSlice":
            slices.append(_ok(parse_endpoint_slice(obj)))
        else:
            nodes.append(_ok(parse_node(obj)))
    return services, slices, nodes


def _ok(parsed: tuple[Any, list[Any]]) -> Any:
    obj, problems = parsed
    if obj is None or problems:
        raise ValueError(f"synthetic object did not parse cleanly: {problems}")
    return obj


def farms_for(objects: Iterable[dict[str, Any]]) -> list[Farm]:
    """The farms the reconciler computes for these objects, with the marks it assigns."""
    services, slices, nodes = parse([*objects, NODE])
    desired = desired_farms(ClusterState.build(services, slices, nodes), NODE_NAME)
    if desired.problems:
        raise ValueError(f"synthetic cluster has problems: {desired.problems[:3]}")
    return [assign_marks(f, None) for f in desired.farms]


def body_bytes(request: Request) -> bytes:
    """Serialised as `NftlbClient.send` does."""
    return b"" if request.body is None else json.dumps(request.body).encode()


class Probe:
    """One latency probe: a Service of `size` endpoints in namespace `probe`, and the requests the
    reconciler sends for its create, add-one-endpoint and delete (for the floor to replay)."""

    def __init__(self, size: int, run: int, index: int) -> None:
        self.size, self.run, self.index = size, run, index
        self.name = f"p{size:03d}-{run:03d}"
        self.farm = farm_name(PROBE_NS, self.name)
        self.ip = cluster_ip(index, probe=True)
        self.ips = [endpoint_ip(index, j, probe=True) for j in range(size + 1)]
        self.service = service(PROBE_NS, self.name, self.ip)
        self.slice = endpoint_slice(PROBE_NS, self.name, self.ips[:size])
        self.slice_plus_one = endpoint_slice(PROBE_NS, self.name, self.ips)
        (created,) = farms_for([self.service, self.slice])
        (grown,) = farms_for([self.service, self.slice_plus_one])
        create = diff([created], [])
        add = diff([grown], [created])
        delete = diff([], [assign_marks(grown, created)])
        assert [op.kind for op in create] == [OpKind.CREATE_FARM]
        assert [op.kind for op in add] == [OpKind.UPSERT_BACKENDS]
        assert [op.kind for op in delete] == [OpKind.DELETE_FARM]
        self.create_request = requests_for(next(iter(create)))[0]
        self.add_request = requests_for(next(iter(add)))[0]
        self.delete_request = requests_for(next(iter(delete)))[0]


def chunked_documents(farms: list[Farm], chunk: int) -> list[bytes]:
    """The bulk POST bodies of an initial sync (`NftlbClient` sends `chunk` farms a POST)."""
    return [json.dumps(farms_document(farms[i : i + chunk])).encode() for i in range(0, len(farms), chunk)]
