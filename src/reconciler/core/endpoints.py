"""Which endpoints serve one Service port in one IP family: the backends of a farm.

The rules follow kube-proxy: ready endpoints serve; when none is ready (within the node-local
set for traffic that must stay local), serving endpoints that are terminating serve instead, so
that connections drain rather than fail during a rolling update.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@frozen(order=True)
class Target:
    """One backend address of a Service port: a canonical IP and the endpoint's port number."""

    ip: str
    port: int
    node_name: str = ""
    target_ref: TargetRef | None = field(default=None, order=False)


def select_endpoints(
    service: Service,
    port: ServicePort,
    slices: Sequence[EndpointSlice],
    family: Family,
    node_name: str,
    local_only: bool,
) -> tuple[Target, ...]:
    """The targets for `port` of `service` in `family`, sorted by (IP, port).

    Only slices of this Service and family count, and in each the port that matches the
    Service port by name and protocol gives the backend port (a slice without it, or without
    its number, is skipped). `local_only` keeps endpoints on `node_name` (none when the node
    name is empty). One (IP, port) counts once; its node and targetRef come from the first
    slice by name that selected it.
    """
    address_type = _ADDRESS_TYPE[family]
    candidates: list[tuple[str, int, Endpoint]] = []
    for s in sorted(slices, key=lambda s: s.name):
        if (s.namespace, s.service_name) != service.key or s.address_type != address_type:
            continue
        number = endpoint_port(s, port)
        if number is None:
            continue
        for endpoint in s.endpoints:
            if local_only and (not node_name or endpoint.node_name != node_name):
                continue
            for address in endpoint.addresses:
                parsed = canonical_ip(address)
                if parsed is not None and parsed[1] is family:
                    candidates.append((parsed[0], number, endpoint))

    chosen = [c for c in candidates if c[2].ready]
    if not chosen:
        chosen = [c for c in candidates if c[2].serving and c[2].terminating]

    targets: dict[tuple[str, int], Target] = {}
    for ip, number, endpoint in chosen:
        targets.setdefault(
            (ip, number), Target(ip, number, endpoint.node_name, endpoint.target_ref)
        )
    return tuple(sorted(targets.values(), key=lambda t: (ip_sort_key(t.ip), t.port)))


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
    DUPLICATE = "duplicate"  # the same address and port came from an earlier slice


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
) -> tuple[EndpointVerdict, ...]:
    """Every endpoint address of the Service's slices for `port` in `family`, each with the
    reason it is left out, or None when it is a backend: the same decision as
    `select_endpoints` (a property test holds the two together), told per address."""
    address_type = _ADDRESS_TYPE[family]
    out: list[EndpointVerdict] = []
    candidates: list[tuple[int, str, int, Endpoint]] = []  # index into out
    for s in sorted(slices, key=lambda s: s.name):
        if (s.namespace, s.service_name) != service.key:
            continue
        number = endpoint_port(s, port)
        for endpoint in s.endpoints:
            for address in endpoint.addresses:
                parsed = canonical_ip(address)
                reason: LeftOut | None = None
                if s.address_type != address_type or parsed is None or parsed[1] is not family:
                    reason = LeftOut.WRONG_FAMILY
                elif number is None:
                    reason = LeftOut.NO_PORT
                elif local_only and (not node_name or endpoint.node_name != node_name):
                    reason = LeftOut.OTHER_NODE
                ip = (
                    parsed[0]
                    if parsed is not None and reason is not LeftOut.WRONG_FAMILY
                    else address
                )
                out.append(
                    EndpointVerdict(
                        s.name, ip, number, endpoint.node_name, endpoint.target_ref, reason
                    )
                )
                if reason is None and number is not None:
                    candidates.append((len(out) - 1, ip, number, endpoint))
    any_ready = any(c[3].ready for c in candidates)
    seen: set[tuple[str, int]] = set()
    for index, ip, number, endpoint in candidates:
        chosen = endpoint.ready if any_ready else endpoint.serving and endpoint.terminating
        reason = None
        if not chosen:
            terminating = endpoint.serving and endpoint.terminating
            reason = LeftOut.TERMINATING if terminating else LeftOut.NOT_READY
        elif (ip, number) in seen:
            reason = LeftOut.DUPLICATE
        else:
            seen.add((ip, number))
        if reason is not None:
            out[index] = evolve(out[index], reason=reason)
    return tuple(out)
