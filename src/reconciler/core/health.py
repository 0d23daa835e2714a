"""What kube-proxy's health servers answer, decided from values (kube-proxy-semantics.md section 7).

Two servers: one per LoadBalancer Service with externalTrafficPolicy Local on its
`healthCheckNodePort` (cloud load balancers send traffic only to nodes answering 200, that is
nodes with a ready local endpoint), and the proxy's own `/healthz` and `/livez` (port 10256),
which load balancers of externalTrafficPolicy Cluster Services probe. Times are Unix seconds
passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from attrs import frozen

from reconciler.core.desired import is_served
from reconciler.core.endpoints import endpoint_port
from reconciler.core.kube import ClusterState, Node, Service, canonical_ip
from reconciler.core.problems import ObjectRef, Problem

#: The taint the cluster autoscaler puts on a node it is about to delete [PXH].
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
#: kube-proxy's proxy health timeout is this many sync periods [SRV].
TIMEOUT_SYNC_PERIODS = 2
JSON_HEADERS = (("X-Content-Type-Options", "nosniff"),)
CONTENT_TYPE = "application/json"


@frozen(order=True)
class ServiceHealth:
    """What one healthCheckNodePort answers: whose it is and its ready local endpoints."""

    namespace: str
    name: str
    port: int
    local_endpoints: int


def local_ready_endpoints(service: Service, state: ClusterState, node_name: str) -> int:
    """Distinct IPs of ready (not terminating) endpoints on this node, all ports together [ECT].

    Only slices with a port of the Service count (kube-proxy keys endpoints by Service port),
    and of each endpoint only its first address [ESC]; terminating endpoints never count, so a
    node with only terminating endpoints fails the check and the load balancer drains it.
    """
    if not node_name:
        return 0
    ips: set[str] = set()
    for s in state.slices_for(service):
        if s.address_type not in ("IPv4", "IPv6"):
            continue
        if not any(endpoint_port(s, port) is not None for port in service.ports):
            continue
        for e in s.endpoints:
            if e.node_name != node_name or not e.ready or e.terminating or not e.addresses:
                continue
            parsed = canonical_ip(e.addresses[0])
            if parsed is not None:
                ips.add(parsed[0])
    return len(ips)


def service_health(
    service: Service, state: ClusterState, node_name: str, proxy_name: str = ""
) -> ServiceHealth | None:
    """The health check one Service asks this node to serve, or None.

    Only LoadBalancer Services with externalTrafficPolicy Local and a healthCheckNodePort,
    that this proxy serves [SP][SVCU].
    """
    port = service.health_check_node_port
    if (
        port is None
        or service.type != "LoadBalancer"
        or service.external_traffic_policy != "Local"
        or service.is_headless
        or not is_served(service, proxy_name)
    ):
        return None
    count = local_ready_endpoints(service, state, node_name)
    return ServiceHealth(service.namespace, service.name, port, count)


def health_check_ports(
    healths: Iterable[ServiceHealth],
) -> tuple[dict[int, ServiceHealth], list[Problem]]:
    """The healthCheckNodePorts to serve, each with its answer, and the conflicts.

    The API server allocates the ports uniquely, so only bad manifests share one: the first
    Service by (namespace, name) keeps it, the other gets a problem.
    """
    ports: dict[int, ServiceHealth] = {}
    problems: list[Problem] = []
    for health in sorted(healths):
        held = ports.get(health.port)
        if held is None:
            ports[health.port] = health
            continue
        problems.append(
            Problem(
                ObjectRef("Service", health.namespace, health.name),
                "HealthCheckPortConflict",
                f"healthCheckNodePort {health.port} is already served for Service "
                f"{held.namespace}/{held.name}; not served for this Service",
                key="spec.healthCheckNodePort",
                value=str(health.port),
            )
        )
    return ports, problems


def service_health_answer(
    health: ServiceHealth, proxy_healthy: bool
) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    """Status, JSON body and headers of a healthCheckNodePort answer, on any path [SH]."""
    body = {
        "service": {"namespace": health.namespace, "name": health.name},
        "localEndpoints": health.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    }
    status = 200 if health.local_endpoints and proxy_healthy else 503
    headers = (
        *JSON_HEADERS,
        ("X-Load-Balancing-Endpoint-Weight", str(health.local_endpoints)),
    )
    return status, json.dumps(body).encode() + b"\n", headers


def node_eligible(node: Node | None) -> bool:
    """The node exists, is not being deleted and is not tainted for deletion [PXH]."""
    return node is not None and not node.deleting and TO_BE_DELETED_TAINT not in node.taints


@frozen
class ProxyHealth:
    """The sync loop as the proxy health server sees it (Unix seconds).

    `pending_since` is the oldest change not yet synced (None when none is pending);
    `last_updated` the end of the last successful sync (None before the first).
    """

    pending_since: float | None
    last_updated: float | None
    timeout: float

    def healthy(self, now: float) -> bool:
        """No update has been pending longer than the timeout [PXH]."""
        return self.pending_since is None or now - self.pending_since <= self.timeout


def proxy_health_answer(
    path: str,
    health: ProxyHealth,
    node: Node | None,
    now: float,
    time_text: Callable[[float | None], str],
) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    """Status and JSON body of `/healthz` (health and node eligibility) or `/livez` [PXH].

    When healthy, lastUpdated is the current time, as kube-proxy writes it for compatibility.
    The one sync loop programs both IP families, so both report the same status. `time_text`
    writes a time as Go's time.Time does in JSON (the shell's, which may use a calendar).
    """
    go_time = time_text
    healthy = health.healthy(now)
    last = now if healthy else health.last_updated
    body: dict[str, object] = {"lastUpdated": go_time(last), "currentTime": go_time(now)}
    ok = healthy
    if path == "/healthz":
        eligible = node_eligible(node)
        body["nodeEligible"] = eligible
        ok = ok and eligible
    body["healthy"] = healthy
    body["status"] = {
        family: {"lastUpdated": go_time(last), "healthy": healthy} for family in ("IPv4", "IPv6")
    }
    return (200 if ok else 503), json.dumps(body).encode() + b"\n", JSON_HEADERS
