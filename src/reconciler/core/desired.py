"""`desired_farms`: cluster state in, the farms this node should hold out. Pure and total.

One farm per Service port, IP family and frontend (see `names.py`): the cluster IP, each node
port on this node's addresses, each external IP and each load-balancer IP. nftlb 1.0.7 breaks
farms that carry several address objects, so frontends never share a farm. A Service with no
usable endpoints still gets its farm, with no backends: its addresses stay claimed and the first
endpoint to appear is one backend upsert; the node rules reject (or drop) traffic to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from attrs import evolve, frozen

from reconciler.core.annotations import FarmOptions, farm_options
from reconciler.core.endpoints import select_endpoints
from reconciler.core.farms import (
    HELPERS_BY_PROTOCOL,
    MAX_BACKENDS,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Protocol,
    helper_fits,
    persistence_fits,
    sched_param_fits,
    validate_farm,
)
from reconciler.core.ips import ip_info
from reconciler.core.kube import (
    SERVICE_PROXY_NAME_LABEL,
    ClusterState,
    EndpointSlice,
    Node,
    Service,
    ServicePort,
)
from reconciler.core.names import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    FarmKey,
    address_name,
    backend_name,
    farm_name,
    frontend_segment,
    port_segment,
)
from reconciler.core.nodeports import NodePortAddresses, node_port_ips
from reconciler.core.problems import ObjectRef, Problem
from reconciler.core.selection import selected

SERVICE_PROXY_NAME = SERVICE_PROXY_NAME_LABEL
PRIMARY = NodePortAddresses()  #: kube-proxy's nftables default: the node's primary IPs
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@frozen
class Desired:
    """The farms to hold, the problems found on the way, and which Service each farm serves."""

    farms: tuple[Farm, ...]
    problems: tuple[Problem, ...]
    owners: tuple[tuple[str, tuple[str, str]], ...] = ()

    def owner_map(self) -> dict[str, tuple[str, str]]:
        return dict(self.owners)


@frozen
class _Candidate:
    farm: Farm
    service: Service

    @property
    def rank(self) -> tuple[bool, str, str, str, str]:
        """Oldest Service wins an address; a missing timestamp counts as newest."""
        s = self.service
        return (
            s.creation_timestamp == "",
            s.creation_timestamp,
            s.namespace,
            s.name,
            self.farm.name,
        )


def _ref(service: Service) -> ObjectRef:
    return ObjectRef("Service", service.namespace, service.name)


def _family_of(ip: str) -> Family | None:
    info = ip_info(ip)
    return None if info is None else Family.of_version(info.version)


def _canonical(ip: str) -> str:
    info = ip_info(ip)
    if info is None:
        raise ValueError(f"{ip!r} is not an IP address")
    return info.canonical


def is_served(service: Service, proxy_name: str) -> bool:
    """kube-proxy's rule: a Service labelled for another proxy, or headless, is not ours."""
    return selected(service.labels, proxy_name)


@frozen
class _Frontend:
    """One (address, port) a Service port is reached on, and which farm name segment it gets."""

    ip: str
    port: int
    segment: str  # "" for the cluster IP; see names.frontend_segment

    @property
    def external(self) -> bool:
        return self.segment != ""


def _unsafe(ip: str) -> str:
    info = ip_info(ip)
    return "" if info is None else info.unsafe


def _frontends(
    service: Service,
    port: ServicePort,
    family: Family,
    node: Node | None,
    problems: list[Problem],
    nodeports: NodePortAddresses,
) -> list[_Frontend]:
    """The cluster IP, node ports, external IPs and load-balancer IPs of one port and family.

    An address no frontend may be on (`ips.unsafe_reason`: loopback, unspecified, link-local,
    multicast, broadcast) is left out, whatever it came from, with a problem.
    """
    candidates: list[tuple[str, str, str, int]] = [  # (source, segment kind, ip, port)
        ("clusterIP", "", ip, port.port) for ip in service.cluster_ips if _family_of(ip) is family
    ][:1]
    if service.type in ("NodePort", "LoadBalancer") and port.node_port and node is not None:
        candidates.extend(
            (f"address of node {node.name}", NODE_PORT, ip, port.node_port)
            for ip in node_port_ips(nodeports, node, family)
        )
    for source, kind, ips in (
        ("spec.externalIPs", EXTERNAL_IP, service.external_ips),
        ("status.loadBalancer.ingress", LOAD_BALANCER, service.load_balancer_ips),
    ):
        candidates.extend(
            (source, kind, _canonical(ip), port.port) for ip in ips if _family_of(ip) is family
        )
    out: list[_Frontend] = []
    for source, kind, ip, number in candidates:
        why = _unsafe(ip)
        if why:
            problems.append(
                Problem(
                    _ref(service),
                    "ForbiddenAddress",
                    f"{source} {ip} is a {why} address, which no frontend may be on "
                    "(it would catch the node's own traffic); "
                    f"port {number} is not served on it",
                    key=source,
                    value=ip,
                )
            )
            continue
        out.append(_Frontend(ip, number, frontend_segment(kind, ip) if kind else ""))
    unique: dict[tuple[str, int], _Frontend] = {}
    for f in out:
        unique.setdefault((f.ip, f.port), f)  # an external IP equal to the cluster IP: served once
    return list(unique.values())


def _fitted(
    service: Service,
    options: FarmOptions,
    family: Family,
    protocol: Protocol,
    segment: str,
    problems: list[Problem],
) -> tuple[Helper, tuple[str, ...], tuple[str, ...]]:
    """helper, persistence and sched-param, each dropped (with a problem) where nftlb cannot."""
    helper, persistence, sched_param = options.helper, options.persistence, options.sched_param
    where = f"{protocol.value.upper()} port {segment!r} over {family.value}"
    if not helper_fits(family, protocol, helper):
        fits = sorted(
            h.value for h in HELPERS_BY_PROTOCOL[protocol] if helper_fits(family, protocol, h)
        )
        problems.append(
            Problem(
                _ref(service),
                "InvalidAnnotation",
                f"helper {helper.value!r} does not fit {where}; allowed: {', '.join(fits)}; "
                "using 'none' there",
                key="helper",
                value=helper.value,
                allowed=tuple(fits),
            )
        )
        helper = Helper.NONE
    if persistence and not persistence_fits(family, persistence):
        problems.append(
            Problem(
                _ref(service),
                "InvalidAnnotation",
                f"persistence {' '.join(persistence)!r} makes a key nftlb 1.0.7 cannot build "
                f"for {where} "
                "(at most 20 bytes; over IPv6 an address alone); using 'none' there",
                key="persistence",
                value=" ".join(persistence),
            )
        )
        persistence = ()
    if sched_param and not sched_param_fits(family, sched_param):
        problems.append(
            Problem(
                _ref(service),
                "InvalidAnnotation",
                f"sched-param {' '.join(sched_param)!r} makes a hash key nftlb 1.0.7 cannot "
                f"build for {where}; "
                "using 'srcip' there",
                key="sched-param",
                value=" ".join(sched_param),
            )
        )
        sched_param = ("srcip",)
    return helper, persistence, sched_param


def _service_farms(
    service: Service,
    state: ClusterState,
    node_name: str,
    proxy_name: str,
    nodeports: NodePortAddresses,
    problems: list[Problem],
) -> list[Farm]:
    ref = _ref(service)
    if not (_DNS_LABEL.fullmatch(service.namespace) and _DNS_LABEL.fullmatch(service.name)):
        problems.append(Problem(ref, "InvalidName", "namespace and name must be DNS labels"))
        return []
    options, option_problems = farm_options(service)
    problems.extend(option_problems)
    node = state.nodes.get(node_name)
    # kube-proxy never reads slices labelled for another proxy or headless (its watch selector)
    slices = tuple(s for s in state.slices_for(service) if selected(s.labels, proxy_name))
    families = service.ip_families or tuple(
        f
        for f in (Family.IPV4, Family.IPV6)
        if any(_family_of(ip) is f for ip in service.cluster_ips)
    )
    farms: list[Farm] = []
    seen_ports: set[str] = set()
    for port in service.ports:
        segment = port_segment(port.name, port.port)
        if not _DNS_LABEL.fullmatch(segment) or len(segment) > 15:
            problems.append(
                Problem(ref, "InvalidPort", f"port name {port.name!r} is not a valid port name")
            )
            continue
        if segment in seen_ports:
            problems.append(
                Problem(
                    ref, "DuplicatePort", f"port {segment!r} is listed twice; the first is used"
                )
            )
            continue
        seen_ports.add(segment)
        for family in families:
            farms.extend(
                _port_farms(
                    service,
                    port,
                    segment,
                    family,
                    options,
                    node,
                    node_name,
                    nodeports,
                    slices,
                    problems,
                )
            )
    return farms


def _port_farms(
    service: Service,
    port: ServicePort,
    segment: str,
    family: Family,
    options: FarmOptions,
    node: Node | None,
    node_name: str,
    nodeports: NodePortAddresses,
    slices: tuple[EndpointSlice, ...],
    problems: list[Problem],
) -> list[Farm]:
    """One farm per frontend; each frontend's backends follow its traffic policy."""
    frontends = _frontends(service, port, family, node, problems, nodeports)
    zone = node.zone if node is not None else ""
    if not frontends:
        return []
    helper, persistence, sched_param = _fitted(
        service, options, family, port.protocol, segment, problems
    )
    cache: dict[bool, tuple[Backend, ...]] = {}

    def backends(local_only: bool) -> tuple[Backend, ...]:
        if local_only not in cache:
            targets = select_endpoints(service, port, slices, family, node_name, local_only, zone)
            if len(targets) > MAX_BACKENDS:
                problems.append(
                    Problem(
                        _ref(service),
                        "TooManyEndpoints",
                        f"port {segment!r} has {len(targets)} endpoints; "
                        f"nftlb takes {MAX_BACKENDS} per farm, "
                        f"the first {MAX_BACKENDS} by address are used",
                    )
                )
                targets = targets[:MAX_BACKENDS]
            cache[local_only] = tuple(
                Backend(backend_name(t.ip, t.port), t.ip, t.port) for t in targets
            )
        return cache[local_only]

    farms = []
    for front in frontends:
        local = (
            service.external_traffic_policy if front.external else service.internal_traffic_policy
        ) == "Local"
        # dnat unless an annotation asks for snat: the node rules (node_rules.py) decide who is
        # masqueraded, as kube-proxy does, so a pod's source address reaches the backend.
        mode = options.mode
        key = FarmKey(
            service.namespace, service.name, segment, port.protocol, family, front.segment
        )
        name = farm_name(key)
        farms.append(
            Farm(
                name=name,
                family=family,
                protocol=port.protocol,
                addresses=(
                    Address(address_name(name), family, front.ip, front.port, port.protocol),
                ),
                backends=backends(local),
                mode=mode,
                scheduler=options.scheduler,
                sched_param=sched_param,
                persistence=persistence,
                persist_ttl=options.persist_ttl,
                helper=helper,
                log=options.log,
                est_connlimit=options.est_connlimit,
            )
        )
    return farms


def _resolve_conflicts(candidates: list[_Candidate], problems: list[Problem]) -> list[Farm]:
    """No two farms may share (protocol, address, port); the oldest Service keeps it."""
    winners: dict[tuple[Protocol, str, int], _Candidate] = {}
    for cand in sorted(candidates, key=lambda c: c.rank):
        for a in cand.farm.addresses:
            winners.setdefault(a.tuple_key, cand)
    farms: list[Farm] = []
    for cand in candidates:
        lost = [a for a in cand.farm.addresses if winners[a.tuple_key] is not cand]
        if not lost:
            farms.append(cand.farm)
            continue
        for a in lost:
            w = winners[a.tuple_key].service
            problems.append(
                Problem(
                    _ref(cand.service),
                    "AddressConflict",
                    f"{a.protocol.value.upper()} {a.ip}:{a.port} is already served by Service "
                    f"{w.namespace}/{w.name} (older, or first by namespace/name); "
                    "not served for this Service",
                    key=f"{a.protocol.value}/{a.ip}:{a.port}",
                    value=f"{w.namespace}/{w.name}",
                )
            )
    return farms


def _one_farm_per_helper(
    candidates: list[_Candidate], farms: list[Farm], problems: list[Problem]
) -> list[Farm]:
    """nftlb 1.0.7 shares one ct helper object between farms of a family and protocol, and then
    cannot change or delete them cleanly; so the oldest Service's first farm keeps the helper."""
    rank = {c.farm.name: c.rank for c in candidates}
    owner = {c.farm.name: c.service for c in candidates}
    holders: dict[tuple[Family, Protocol, Helper], str] = {}
    out: list[Farm] = []
    for farm in sorted(farms, key=lambda f: rank[f.name]):
        if farm.helper is Helper.NONE:
            out.append(farm)
            continue
        holder = holders.setdefault((farm.family, farm.protocol, farm.helper), farm.name)
        if holder == farm.name:
            out.append(farm)
            continue
        problems.append(
            Problem(
                _ref(owner[farm.name]),
                "HelperShared",
                f"helper {farm.helper.value!r} is already used by farm {holder}; nftlb 1.0.7 "
                f"cannot share one between farms, so farm {farm.name} gets none",
                key="helper",
                value=farm.helper.value,
            )
        )
        out.append(evolve(farm, helper=Helper.NONE))
    return out


@frozen
class ServiceFarms:
    """The farms one Service asks for before conflicts are decided, and its own problems.

    Kept per Service so a partial sync recomputes only the Services that changed.
    """

    service: Service
    farms: tuple[Farm, ...]
    problems: tuple[Problem, ...]


def is_proxied(service: Service, proxy_name: str = "") -> bool:
    """Whether this proxy programs the Service at all (not ExternalName, headless, or labelled
    for another proxy)."""
    return not (
        service.type == "ExternalName" or service.is_headless or not is_served(service, proxy_name)
    )


def frontend_farms(
    service: Service, node: Node | None, nodeports: NodePortAddresses = PRIMARY
) -> dict[str, tuple[int, bool]]:
    """The name of every farm the Service's ports and frontends can make, with the index of
    its port in ``spec.ports`` and whether the frontend is external (node port, external or LB
    IP): how the node rules (`node_rules.py`) read the farms a Service won."""
    families = service.ip_families or tuple(
        f
        for f in (Family.IPV4, Family.IPV6)
        if any(_family_of(ip) is f for ip in service.cluster_ips)
    )
    out: dict[str, tuple[int, bool]] = {}
    for index, port in enumerate(service.ports):
        segment = port_segment(port.name, port.port)
        for family in families:
            for front in _frontends(service, port, family, node, [], nodeports):
                key = FarmKey(
                    service.namespace, service.name, segment, port.protocol, family, front.segment
                )
                out.setdefault(farm_name(key), (index, front.external))
    return out


def service_farms(
    service: Service,
    state: ClusterState,
    node_name: str,
    proxy_name: str = "",
    nodeports: NodePortAddresses = PRIMARY,
) -> ServiceFarms:
    """What one Service asks for; empty for Services that are not proxied.

    `nodeports` (kube-proxy's --nodeport-addresses) picks the node addresses of node ports.
    """
    if not is_proxied(service, proxy_name):
        return ServiceFarms(service, (), ())
    problems: list[Problem] = []
    farms = _service_farms(service, state, node_name, proxy_name, nodeports, problems)
    return ServiceFarms(service, tuple(farms), tuple(problems))


def resolve(
    requests: Iterable[ServiceFarms], validated: Mapping[str, Farm] | None = None
) -> Desired:
    """Decide conflicts across Services and validate: the farms that may leave the core.

    `validated` holds farms that passed validation before (the last result); a farm equal to
    its entry there is not validated again, which keeps a partial sync's cost off the cluster size.
    """
    problems: list[Problem] = []
    candidates: list[_Candidate] = []
    names: set[str] = set()
    for request in sorted(requests, key=lambda r: r.service.key):
        problems.extend(request.problems)
        for farm in request.farms:
            if farm.name in names:  # only a hash collision of shortened names gets here
                problems.append(
                    Problem(
                        _ref(request.service), "NameCollision", f"farm name {farm.name} is taken"
                    )
                )
                continue
            names.add(farm.name)
            candidates.append(_Candidate(farm, request.service))
    farms: list[Farm] = []
    owners: list[tuple[str, tuple[str, str]]] = []
    by_name = {c.farm.name: c.service for c in candidates}
    kept = _one_farm_per_helper(candidates, _resolve_conflicts(candidates, problems), problems)
    for farm in kept:
        known = validated.get(farm.name) if validated is not None else None
        errors = (
            [] if known is not None and (known is farm or known == farm) else validate_farm(farm)
        )
        service = by_name[farm.name]
        if errors:
            problems.append(
                Problem(
                    _ref(service), "InvalidFarm", f"farm {farm.name} not sent: {'; '.join(errors)}"
                )
            )
            continue
        farms.append(farm)
        owners.append((farm.name, service.key))
    farms.sort(key=lambda f: f.name)
    return Desired(tuple(farms), tuple(sorted(set(problems))), tuple(sorted(owners)))


def desired_farms(
    state: ClusterState,
    node_name: str,
    proxy_name: str = "",
    nodeports: NodePortAddresses = PRIMARY,
) -> Desired:
    """The farms this node should hold for `state`; never raises, always valid farms."""
    return resolve(
        service_farms(s, state, node_name, proxy_name, nodeports) for s in state.services.values()
    )
