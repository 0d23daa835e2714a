"""Which endpoints serve one Service port in one IP family: the backends of a farm.

The rules are kube-proxy's (`CategorizeEndpoints` in pkg/proxy/topology.go, newest): ready
endpoints serve; when none is ready, serving endpoints that are terminating serve instead, so
that connections drain rather than fail during a rolling update. Traffic that may leave the node
(the cluster set) follows the EndpointSlice hints when every ready endpoint carries them and one
is meant for this node (or its zone); traffic that must stay on the node (the local set of a
Local traffic policy) never looks at hints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from attrs import evolve, field, frozen

from reconciler.core.farms import Family
from reconciler.core.kube import (
    Endpoint,
    EndpointSlice,
    Service,
    ServicePort,
    TargetRef,
    canonical_ip,
    ip_sort_key,
)

_ADDRESS_TYPE = {Family.IPV4: "IPv4", Family.IPV6: "IPv6"}

#: Topology modes, named after the trafficDistribution values that make the hints.
SAME_NODE = "PreferSameNode"
SAME_ZONE = "PreferSameZone"


@frozen(order=True)
class Target:
    """One backend address of a Service port: a canonical IP and the endpoint's port number."""

    ip: str
    port: int
    node_name: str = ""
    target_ref: TargetRef | None = field(default=None, order=False)


@frozen
class _Candidate:
    ip: str
    port: int
    endpoint: Endpoint


def topology_mode(endpoints: Iterable[Endpoint], node_name: str, zone: str) -> str:
    """kube-proxy's topologyModeFromHints: SAME_NODE, SAME_ZONE or "" (hints ignored).

    Only ready endpoints count. Node hints are used when every one has a node hint and one is
    for this node; else zone hints when every one has a zone hint and one is for the node's
    zone (a node without the zone label has none); else none, so that hints can never leave
    this node with no endpoint while others are ready.
    """
    ready = [e for e in endpoints if e.ready]
    if _hinted(node_name, [e.node_hints for e in ready]):
        return SAME_NODE
    if _hinted(zone, [e.zone_hints for e in ready]):
        return SAME_ZONE
    return ""


def _hinted(me: str, hints: list[tuple[str, ...]]) -> bool:
    """Every endpoint has a hint of this kind, and one names `me`."""
    return bool(me) and all(hints) and any(me in h for h in hints)


def _rank(e: Endpoint) -> tuple[bool, bool, bool]:
    return (e.ready, not e.terminating, e.serving)


def _allowed(endpoint: Endpoint, mode: str, node_name: str, zone: str) -> bool:
    if mode == SAME_NODE:
        return node_name in endpoint.node_hints
    if mode == SAME_ZONE:
        return zone in endpoint.zone_hints
    return True


def select_endpoints(
    service: Service,
    port: ServicePort,
    slices: Sequence[EndpointSlice],
    family: Family,
    node_name: str,
    local_only: bool,
    zone: str = "",
) -> tuple[Target, ...]:
    """The targets for `port` of `service` in `family`, sorted by (IP, port).

    Only slices of this Service and family count, and in each the port that matches the
    Service port by name and protocol gives the backend port (a slice without it, or without
    its number, is skipped). Each endpoint's first address is its address. `local_only` keeps
    endpoints on `node_name` (none when the node name is empty) and ignores hints; otherwise
    hints apply for `node_name` and `zone` (the node's topology.kubernetes.io/zone label).
    One (IP, port) counts once: the first slice by name gives it, unless a later one has it in
    a better state (ready, then not terminating, then serving). kube-proxy's endpointslicecache
    lets a non-terminating copy replace a terminating one and reads slices in no fixed order.
    """
    address_type = _ADDRESS_TYPE[family]
    unique: dict[tuple[str, int], _Candidate] = {}
    for s in sorted(slices, key=lambda s: s.name):
        if (s.namespace, s.service_name) != service.key or s.address_type != address_type:
            continue
        number = endpoint_port(s, port)
        if number is None:
            continue
        for endpoint in s.endpoints:
            parsed = canonical_ip(endpoint.address) if endpoint.addresses else None
            if parsed is None or parsed[1] is not family:
                continue
            key = (parsed[0], number)
            known = unique.get(key)
            if known is None or _rank(endpoint) > _rank(known.endpoint):
                unique[key] = _Candidate(parsed[0], number, endpoint)
    candidates = list(unique.values())

    if local_only:
        candidates = [c for c in candidates if node_name and c.endpoint.node_name == node_name]
        mode = ""
    else:
        mode = topology_mode((c.endpoint for c in candidates), node_name, zone)
    chosen = [
        c for c in candidates if c.endpoint.ready and _allowed(c.endpoint, mode, node_name, zone)
    ]
    if not chosen:  # no ready endpoint anywhere (in the set): drain to the terminating ones
        chosen = [c for c in candidates if c.endpoint.serving and c.endpoint.terminating]
    targets = (Target(c.ip, c.port, c.endpoint.node_name, c.endpoint.target_ref) for c in chosen)
    return tuple(sorted(targets, key=lambda t: (ip_sort_key(t.ip), t.port)))


def endpoint_port(s: EndpointSlice, port: ServicePort) -> int | None:
    """The number of the slice port matching the Service port; None when there is none."""
    for p in s.ports:
        if p.name == port.name and p.protocol is port.protocol:
            return p.port if p.port is not None and 1 <= p.port <= 65535 else None
    return None


class LeftOut(StrEnum):
    """Why an endpoint address did not become a backend (`explain_endpoints`)."""

    WRONG_FAMILY = "wrong-family"  # a slice or address of the other IP family (or FQDN)
    NO_PORT = "no-port"  # its slice has no port matching the Service port (or no number)
    OTHER_NODE = "other-node"  # a Local traffic policy keeps this node's endpoints only
    NOT_READY = "not-ready"  # neither ready, nor serving while terminating
    TERMINATING = "terminating"  # serving but terminating, while ready endpoints exist
    DUPLICATE = "duplicate"  # the same address and port, in a better state or an earlier slice
    HINTED_ELSEWHERE = "hinted-elsewhere"  # topology hints send this node's traffic elsewhere


@frozen
class EndpointVerdict:
    """One endpoint address of one slice, and whether it is a backend (`reason` None) or why
    not."""

    slice_name: str
    address: str
    port: int | None
    node_name: str
    target_ref: TargetRef | None
    reason: LeftOut | None

    @property
    def used(self) -> bool:
        return self.reason is None


def explain_endpoints(
    service: Service,
    port: ServicePort,
    slices: Sequence[EndpointSlice],
    family: Family,
    node_name: str,
    local_only: bool,
    zone: str = "",
) -> tuple[EndpointVerdict, ...]:
    """Every endpoint address of the Service's slices for `port` in `family`, each with the
    reason it is left out, or None when it is a backend: the same decision as
    `select_endpoints` (a property test holds the two together), told per address."""
    address_type = _ADDRESS_TYPE[family]
    out: list[EndpointVerdict] = []
    best: dict[tuple[str, int], tuple[int, Endpoint]] = {}  # (ip, port) -> (index into out, e)
    for s in sorted(slices, key=lambda s: s.name):
        if (s.namespace, s.service_name) != service.key:
            continue
        number = endpoint_port(s, port)
        for endpoint in s.endpoints:
            address = endpoint.address
            parsed = canonical_ip(address)
            reason: LeftOut | None = None
            if s.address_type != address_type or parsed is None or parsed[1] is not family:
                reason = LeftOut.WRONG_FAMILY
            elif number is None:
                reason = LeftOut.NO_PORT
            ip = parsed[0] if parsed is not None and reason is not LeftOut.WRONG_FAMILY else address
            out.append(
                EndpointVerdict(s.name, ip, number, endpoint.node_name, endpoint.target_ref, reason)
            )
            if reason is not None or number is None:
                continue
            known = best.get((ip, number))
            if known is None or _rank(endpoint) > _rank(known[1]):
                if known is not None:
                    out[known[0]] = evolve(out[known[0]], reason=LeftOut.DUPLICATE)
                best[(ip, number)] = (len(out) - 1, endpoint)
            else:
                out[-1] = evolve(out[-1], reason=LeftOut.DUPLICATE)
    candidates = list(best.values())
    if local_only:
        for index, endpoint in candidates:
            if not node_name or endpoint.node_name != node_name:
                out[index] = evolve(out[index], reason=LeftOut.OTHER_NODE)
        candidates = [c for c in candidates if out[c[0]].reason is None]
        mode = ""
    else:
        mode = topology_mode((e for _, e in candidates), node_name, zone)
    ready = [c for c in candidates if c[1].ready and _allowed(c[1], mode, node_name, zone)]
    chosen = {i for i, _ in ready} or {i for i, e in candidates if e.serving and e.terminating}
    for index, endpoint in candidates:
        if index in chosen:
            continue
        if ready and endpoint.ready:
            reason = LeftOut.HINTED_ELSEWHERE
        elif endpoint.serving and endpoint.terminating:
            reason = LeftOut.TERMINATING
        else:
            reason = LeftOut.NOT_READY
        out[index] = evolve(out[index], reason=reason)
    return tuple(out)
