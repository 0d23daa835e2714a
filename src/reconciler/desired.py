"""`desired_farms`: cluster state in, the farms this node should hold out. Pure and total.

One farm per Service port, IP family and traffic scope (see `names.py`). Its frontends are the
cluster IP and, where they share its backends, the node ports, external IPs and load-balancer
IPs. A Service with no usable endpoints still gets its farm, with no backends: its addresses stay
claimed, traffic to them is dropped instead of leaking elsewhere, and the first endpoint to appear
is one backend upsert.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from attrs import evolve, frozen

from reconciler.annotations import FarmOptions, farm_options
from reconciler.endpoints import select_endpoints
from reconciler.farms import (
    HELPERS_BY_PROTOCOL,
    MAX_BACKENDS,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    validate_farm,
)
from reconciler.kube import ClusterState, EndpointSlice, Node, Service, ServicePort
from reconciler.names import FarmKey, address_name, backend_name, farm_name, port_segment
from reconciler.problems import ObjectRef, Problem

SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


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
        return (s.creation_timestamp == "", s.creation_timestamp, s.namespace, s.name, self.farm.name)


def _ref(service: Service) -> ObjectRef:
    return ObjectRef("Service", service.namespace, service.name)


def _family_of(ip: str) -> Family | None:
    try:
        return Family.IPV4 if ipaddress.ip_address(ip).version == 4 else Family.IPV6
    except ValueError:
        return None


def _canonical(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def is_served(service: Service, proxy_name: str) -> bool:
    """kube-proxy's rule: a Service labelled for another proxy is not ours."""
    label = service.label(SERVICE_PROXY_NAME)
    return label is None or (proxy_name != "" and label == proxy_name)


def _frontends(
    service: Service, port: ServicePort, family: Family, node: Node | None
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(internal, external) frontends of one port and family as (ip, port) pairs."""
    internal = [(ip, port.port) for ip in service.cluster_ips if _family_of(ip) is family]
    external: list[tuple[str, int]] = []
    if service.type in ("NodePort", "LoadBalancer") and port.node_port and node is not None:
        external.extend((ip, port.node_port) for ip in node.ips(family))
    for ip in (*service.external_ips, *service.load_balancer_ips):
        if _family_of(ip) is family:
            external.append((_canonical(ip), port.port))
    return internal[:1], external


def _farm(
    key: FarmKey,
    frontends: Iterable[tuple[str, int]],
    backends: Iterable[Backend],
    options: FarmOptions,
    mode: Mode,
    helper: Helper,
) -> Farm:
    name = farm_name(key)
    addresses = {
        (ip, p): Address(address_name(name, key.family, ip, key.protocol, p), key.family, ip, p, key.protocol)
        for ip, p in frontends
    }
    return Farm(
        name=name,
        family=key.family,
        protocol=key.protocol,
        addresses=tuple(addresses.values()),
        backends=tuple(backends),
        mode=mode,
        scheduler=options.scheduler,
        sched_param=options.sched_param,
        persistence=options.persistence,
        persist_ttl=options.persist_ttl,
        helper=helper,
        log=options.log,
        est_connlimit=options.est_connlimit,
    )


def _service_farms(
    service: Service, state: ClusterState, node_name: str, problems: list[Problem]
) -> list[Farm]:
    ref = _ref(service)
    if not (_DNS_LABEL.match(service.namespace) and _DNS_LABEL.match(service.name)):
        problems.append(Problem(ref, "InvalidName", "namespace and name must be DNS labels"))
        return []
    options, option_problems = farm_options(service)
    problems.extend(option_problems)
    node = state.nodes.get(node_name)
    slices = state.slices_for(service)
    families = service.ip_families or tuple(
        f for f in (Family.IPV4, Family.IPV6) if any(_family_of(ip) is f for ip in service.cluster_ips)
    )
    farms: list[Farm] = []
    seen_ports: set[str] = set()
    for port in service.ports:
        segment = port_segment(port.name, port.port)
        if not _DNS_LABEL.match(segment) or len(segment) > 15:
            problems.append(Problem(ref, "InvalidPort", f"port name {port.name!r} is not a valid port name"))
            continue
        if segment in seen_ports:
            problems.append(Problem(ref, "DuplicatePort", f"port {segment!r} is listed twice; the first is used"))
            continue
        seen_ports.add(segment)
        helper = options.helper
        if helper not in HELPERS_BY_PROTOCOL[port.protocol]:
            fits = sorted(h.value for h in HELPERS_BY_PROTOCOL[port.protocol])
            problems.append(
                Problem(
                    ref,
                    "InvalidAnnotation",
                    f"helper {helper.value!r} does not fit {port.protocol.value.upper()} port "
                    f"{segment!r}; allowed: {', '.join(fits)}; using 'none' for this port",
                    key="helper",
                    value=helper.value,
                    allowed=tuple(fits),
                )
            )
            helper = Helper.NONE
        for family in families:
            farms.extend(
                _port_farms(service, port, segment, family, options, helper, node, node_name, slices, problems)
            )
    return farms


def _port_farms(
    service: Service,
    port: ServicePort,
    segment: str,
    family: Family,
    options: FarmOptions,
    helper: Helper,
    node: Node | None,
    node_name: str,
    slices: tuple[EndpointSlice, ...],
    problems: list[Problem],
) -> list[Farm]:
    internal, external = _frontends(service, port, family, node)
    internal_local = service.internal_traffic_policy == "Local"
    external_local = service.external_traffic_policy == "Local"
    key = FarmKey(service.namespace, service.name, segment, port.protocol, family)

    def backends(local_only: bool) -> list[Backend]:
        targets = select_endpoints(service, port, slices, family, node_name, local_only)
        if len(targets) > MAX_BACKENDS:
            problems.append(
                Problem(
                    _ref(service),
                    "TooManyEndpoints",
                    f"port {segment!r} has {len(targets)} endpoints; nftlb takes {MAX_BACKENDS} per farm, "
                    f"the first {MAX_BACKENDS} by address are used",
                )
            )
            targets = targets[:MAX_BACKENDS]
        return [Backend(backend_name(t.ip, t.port), t.ip, t.port) for t in targets]

    split = bool(external) and (external_local or internal_local)
    farms: list[Farm] = []
    if split:
        ext_mode = options.mode if options.mode_set or not external_local else Mode.DNAT
        ext_key = evolve(key, external=True)
        farms.append(_farm(ext_key, external, backends(external_local), options, ext_mode, helper))
        frontends = internal
    else:
        frontends = internal + external
    if frontends:
        farms.append(_farm(key, frontends, backends(internal_local), options, options.mode, helper))
    return farms


def _resolve_conflicts(candidates: list[_Candidate], problems: list[Problem]) -> list[Farm]:
    """No two farms may share (protocol, address, port); the oldest Service keeps it."""
    winners: dict[tuple[Protocol, str, int], _Candidate] = {}
    for cand in sorted(candidates, key=lambda c: c.rank):
        for a in cand.farm.addresses:
            winners.setdefault(a.tuple_key, cand)
    farms: list[Farm] = []
    for cand in candidates:
        kept = []
        for a in cand.farm.addresses:
            winner = winners[a.tuple_key]
            if winner is cand:
                kept.append(a)
                continue
            w = winner.service
            problems.append(
                Problem(
                    _ref(cand.service),
                    "AddressConflict",
                    f"{a.protocol.value.upper()} {a.ip}:{a.port} is already served by Service "
                    f"{w.namespace}/{w.name} (older, or first by namespace/name); not served for this Service",
                    key=f"{a.protocol.value}/{a.ip}:{a.port}",
                    value=f"{w.namespace}/{w.name}",
                )
            )
        if len(kept) == len(cand.farm.addresses):
            farms.append(cand.farm)  # the common case: no new object, so caches stay valid
        elif kept:
            farms.append(evolve(cand.farm, addresses=tuple(kept)))
    return farms


@frozen
class ServiceFarms:
    """The farms one Service asks for before conflicts are decided, and its own problems.

    Kept per Service so a partial sync recomputes only the Services that changed.
    """

    service: Service
    farms: tuple[Farm, ...]
    problems: tuple[Problem, ...]


def service_farms(service: Service, state: ClusterState, node_name: str, proxy_name: str = "") -> ServiceFarms:
    """What one Service asks for; empty for Services that are not proxied."""
    if service.type == "ExternalName" or service.is_headless or not is_served(service, proxy_name):
        return ServiceFarms(service, (), ())
    problems: list[Problem] = []
    farms = _service_farms(service, state, node_name, problems)
    return ServiceFarms(service, tuple(farms), tuple(problems))


def resolve(requests: Iterable[ServiceFarms], validated: Mapping[str, Farm] | None = None) -> Desired:
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
                problems.append(Problem(_ref(request.service), "NameCollision", f"farm name {farm.name} is taken"))
                continue
            names.add(farm.name)
            candidates.append(_Candidate(farm, request.service))
    farms: list[Farm] = []
    owners: list[tuple[str, tuple[str, str]]] = []
    by_name = {c.farm.name: c.service for c in candidates}
    for farm in _resolve_conflicts(candidates, problems):
        known = validated.get(farm.name) if validated is not None else None
        errors = [] if known is not None and (known is farm or known == farm) else validate_farm(farm)
        service = by_name[farm.name]
        if errors:
            problems.append(Problem(_ref(service), "InvalidFarm", f"farm {farm.name} not sent: {'; '.join(errors)}"))
            continue
        farms.append(farm)
        owners.append((farm.name, service.key))
    farms.sort(key=lambda f: f.name)
    return Desired(tuple(farms), tuple(sorted(set(problems))), tuple(sorted(owners)))


def desired_farms(state: ClusterState, node_name: str, proxy_name: str = "") -> Desired:
    """The farms this node should hold for `state`; never raises, always valid farms."""
    return resolve(service_farms(s, state, node_name, proxy_name) for s in state.services.values())
