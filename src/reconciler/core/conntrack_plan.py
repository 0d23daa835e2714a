"""Which UDP conntrack entries are stale after a sync (kube-proxy-semantics.md section 3.1).

A UDP "connection" lives as long as its client keeps sending, and conntrack keeps NATing it to the
endpoint it first chose: after that endpoint goes away, a client sending from one source port (a
DNS resolver) talks to a dead pod for ever. So, as kube-proxy's newest cleanup does, after each
successful sync an entry is deleted when its original destination is a UDP Service frontend and
its reply source is not one of that frontend's serving endpoints. That one rule also clears the
"black hole" entries made while a Service had no endpoints (their reply source is the Service
address itself) once it has some. Frontends whose Service has no serving endpoint are left alone,
TCP and SCTP always.

Differences from kube-proxy, on purpose: only frontends whose endpoints changed since the last
successful cleanup are checked (the first cleanup checks all), so a sync that changes nothing UDP
lists nothing; and node ports are matched on this node's addresses, where nftlb serves them,
not on every destination address (a flow of the node to a far host's port that happens to be a
node port number is left alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attrs import frozen

from reconciler.core.desired import is_served
from reconciler.core.endpoints import endpoint_port
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import ClusterState, Service, canonical_ip
from reconciler.core.nodeports import NodePortAddresses, node_port_ips

ServiceKey = tuple[str, str]
HostPort = tuple[str, int]

_ADDRESS_TYPE = {Family.IPV4: "IPv4", Family.IPV6: "IPv6"}


@frozen(order=True)
class UdpFrontend:
    """One UDP address:port of a Service, and the endpoints (IP, port) that serve it."""

    family: Family
    ip: str
    port: int
    serving: frozenset[HostPort]


@frozen(order=True)
class Entry:
    """A conntrack entry as cleanup sees it: its original tuple and its reply source."""

    family: Family
    protocol: Protocol
    orig_src: HostPort
    orig_dst: HostPort
    reply_src: HostPort


def _serving(
    service: Service, state: ClusterState, port_index: int, family: Family
) -> set[HostPort]:
    """Serving endpoints (ready or not, terminating or not, any node) of one port [CT-D]."""
    port = service.ports[port_index]
    out: set[HostPort] = set()
    for s in state.slices_for(service):
        if s.address_type != _ADDRESS_TYPE[family]:
            continue
        number = endpoint_port(s, port)
        if number is None:
            continue
        for e in s.endpoints:
            if not e.serving:
                continue
            for address in e.addresses:
                parsed = canonical_ip(address)
                if parsed is not None and parsed[1] is family:
                    out.add((parsed[0], number))
    return out


def udp_frontends(
    service: Service,
    state: ClusterState,
    node_name: str,
    proxy_name: str = "",
    nodeports: NodePortAddresses = NodePortAddresses(),  # noqa: B008 (frozen, immutable)
) -> tuple[UdpFrontend, ...]:
    """Every UDP frontend of a Service on this node: cluster IP, node ports on this node's
    addresses, external and load-balancer IPs, each with its serving endpoints. Sorted."""
    if (
        service.type == "ExternalName"
        or service.is_headless
        or not is_served(service, proxy_name)
        or not any(p.protocol is Protocol.UDP for p in service.ports)
    ):
        return ()
    node = state.nodes.get(node_name)
    out: set[UdpFrontend] = set()
    for i, port in enumerate(service.ports):
        if port.protocol is not Protocol.UDP:
            continue
        for family in (Family.IPV4, Family.IPV6):
            cluster_ip = service.cluster_ip(family)
            if cluster_ip is None:  # not a family of the Service: nothing of it is served
                continue
            addresses: set[HostPort] = {(cluster_ip, port.port)}
            for ip in (*service.external_ips, *service.load_balancer_ips):
                parsed = canonical_ip(ip)
                if parsed is not None and parsed[1] is family:
                    addresses.add((parsed[0], port.port))
            if service.type in ("NodePort", "LoadBalancer") and port.node_port and node:
                addresses.update(
                    (ip, port.node_port) for ip in node_port_ips(nodeports, node, family)
                )
            if not addresses:
                continue
            serving = frozenset(_serving(service, state, i, family))
            out.update(UdpFrontend(family, ip, number, serving) for ip, number in addresses)
    return tuple(sorted(out))


@frozen
class ConntrackFilter:
    """The frontends to check, each with the endpoints whose entries stay."""

    frontends: Mapping[tuple[Family, str, int], frozenset[HostPort]]

    def __bool__(self) -> bool:
        return bool(self.frontends)

    @property
    def families(self) -> tuple[Family, ...]:
        present = {family for family, _, _ in self.frontends}
        return tuple(f for f in (Family.IPV4, Family.IPV6) if f in present)

    def is_stale(self, entry: Entry) -> bool:
        if entry.protocol is not Protocol.UDP:
            return False
        serving = self.frontends.get((entry.family, *entry.orig_dst))
        return serving is not None and entry.reply_src not in serving


def conntrack_plan(
    cleaned: Mapping[ServiceKey, tuple[UdpFrontend, ...]],
    desired: Mapping[ServiceKey, tuple[UdpFrontend, ...]],
) -> ConntrackFilter:
    """The frontends whose entries to check: those of `desired` not already cleaned as they are
    now (new, or with other endpoints), that have at least one serving endpoint.

    Two Services on one frontend (only an address conflict gets there) keep the entries of
    both Services' endpoints.
    """
    frontends: dict[tuple[Family, str, int], frozenset[HostPort]] = {}
    for key, wanted in desired.items():
        done = set(cleaned.get(key, ()))
        for f in wanted:
            if f in done or not f.serving:
                continue
            at = (f.family, f.ip, f.port)
            frontends[at] = frontends.get(at, frozenset()) | f.serving
    return ConntrackFilter(frontends)


def stale_entries(plan: ConntrackFilter, entries: Iterable[Entry]) -> list[Entry]:
    """The entries to delete, in the order listed."""
    return [e for e in entries if plan.is_stale(e)]


def stale_groups(
    plan: ConntrackFilter, entries: Iterable[Entry]
) -> list[tuple[Family, HostPort, HostPort]]:
    """The stale entries as (family, original destination, reply source) groups, sorted: one
    deletion filter each, however many clients the group holds."""
    return sorted({(e.family, e.orig_dst, e.reply_src) for e in stale_entries(plan, entries)})


def after_cleanup(
    cleaned: Mapping[ServiceKey, tuple[UdpFrontend, ...]],
    desired: Mapping[ServiceKey, tuple[UdpFrontend, ...]],
    keys: Iterable[ServiceKey] | None = None,
) -> dict[ServiceKey, tuple[UdpFrontend, ...]]:
    """What is cleaned once a cleanup of `conntrack_plan(cleaned, desired)` succeeded: the
    Services in `keys` (all when None) as desired, the others as they were."""
    out = dict(cleaned)
    for key in desired.keys() if keys is None else keys:
        if desired.get(key):
            out[key] = desired[key]
        else:
            out.pop(key, None)
    if keys is None:
        for key in set(out) - set(desired):
            del out[key]
    return out
