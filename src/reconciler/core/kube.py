"""Frozen snapshots of the Kubernetes objects the reconciler reads, parsed from the API's JSON.

The input is the camelCase JSON the API serves (list items, watch `raw_object`s, manifest files).
Parsing never raises on cluster input: a field of the wrong type is dropped (or defaulted) and an
object that cannot be identified is skipped, each with a `Problem`, so that one bad object never
hides the others. IP strings are kept in canonical text (`ipaddress`), so that "FD00::1" and
"fd00::1" are one address; an IP that does not parse is left out with a problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeGuard, TypeVar

from attrs import field, frozen

from reconciler.core.farms import Family, Protocol
from reconciler.core.ips import ip_info
from reconciler.core.problems import ObjectRef, Problem

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: kube-proxy does not proxy Services (nor read EndpointSlices) carrying either label.
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
#: The Node label whose value EndpointSlice zone hints name.
ZONE_LABEL = "topology.kubernetes.io/zone"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"

SERVICE_TYPES: tuple[str, ...] = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
SESSION_AFFINITIES: tuple[str, ...] = ("None", "ClientIP")
TRAFFIC_POLICIES: tuple[str, ...] = ("Cluster", "Local")
#: spec.trafficDistribution values (PreferSameZone is the new name of PreferClose).
TRAFFIC_DISTRIBUTIONS: tuple[str, ...] = ("PreferClose", "PreferSameZone", "PreferSameNode")
#: status.loadBalancer.ingress[].ipMode values; only VIP (or unset) addresses are programmed.
IP_MODES: tuple[str, ...] = ("VIP", "Proxy")
ADDRESS_TYPES: tuple[str, ...] = ("IPv4", "IPv6", "FQDN")
#: Node address types whose address is an IP (the others, Hostname and *DNS, are names).
NODE_IP_TYPES: tuple[str, ...] = ("InternalIP", "ExternalIP")
#: clusterIP values that mean "no virtual IP": headless ("None") or not allocated ("").
NO_CLUSTER_IP: tuple[str, ...] = ("None", "")

_ADDRESS_TYPE_FAMILY = {"IPv4": Family.IPV4, "IPv6": Family.IPV6}
_MAX_SHOWN = 100

# Kubernetes name rules (apimachinery validation): checked so that farm names derived from them
# are safe and so that an object the API server would refuse cannot reach nftlb from a manifest.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns1123_label(s: str) -> bool:
    """A namespace name: at most 63 of [a-z0-9-], alphanumeric at both ends."""
    return len(s) <= 63 and _DNS1123_LABEL.fullmatch(s) is not None


def is_dns1035_label(s: str) -> bool:
    """A Service name: a DNS-1123 label that starts with a letter."""
    return len(s) <= 63 and _DNS1035_LABEL.fullmatch(s) is not None


def is_dns1123_subdomain(s: str) -> bool:
    """An EndpointSlice or Node name: dot-separated labels, at most 253 characters."""
    return len(s) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(s) is not None


def object_key(raw: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of a namespaced object's raw dict, as its parsed snapshot's `key` has
    it: a missing or empty namespace is "default" (`_identify`). Informers key their stores with
    it, so an event without ``metadata.namespace`` names the same object the controller does."""
    meta = raw["metadata"]
    return (meta.get("namespace") or "default", meta["name"])


def canonical_ip(text: str) -> tuple[str, Family] | None:
    """The canonical text and family of an IP, or None when it is not a plain IP address.

    Scoped IPv6 addresses ("fe80::1%eth0") are refused: no frontend or backend can use them.
    """
    info = ip_info(text)
    if info is None or info.scoped:
        return None
    return info.canonical, Family.of_version(info.version)


def ip_sort_key(ip: str) -> tuple[int, int]:
    """Numeric order for canonical IP text (IPv4 before IPv6); unparseable text sorts first."""
    info = ip_info(ip)
    return (0, 0) if info is None else info.key


def _sorted_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs))


# -- snapshots -------------------------------------------------------------------------------------


@frozen(order=True)
class TargetRef:
    """What an endpoint points at (usually a Pod); used for backend names and Events."""

    kind: str
    namespace: str
    name: str
    uid: str


@frozen
class ServicePort:
    """One entry of spec.ports. `name` is "" for the single unnamed port."""

    name: str
    protocol: Protocol
    port: int
    target_port: int | str | None = None
    node_port: int | None = None


@frozen
class Service:
    """A Service as far as a proxy cares.

    `cluster_ips` keeps "None" (headless) and "" (not allocated) as given, so `is_headless`
    can tell; every other entry is a canonical IP.
    """

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    ip_families: tuple[Family, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    session_affinity: str = "None"
    affinity_timeout: int | None = None
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    labels: tuple[tuple[str, str], ...] = field(default=(), converter=_sorted_pairs)
    annotations: tuple[tuple[str, str], ...] = field(default=(), converter=_sorted_pairs)
    creation_timestamp: str = ""
    #: spec.loadBalancerSourceRanges as canonical networks ("203.0.113.0/24"), host bits cleared.
    load_balancer_source_ranges: tuple[str, ...] = ()
    #: "" (unset) or one of TRAFFIC_DISTRIBUTIONS; like kube-proxy, endpoints follow the hints
    #: the EndpointSlice controller writes for it, not this field itself.
    traffic_distribution: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def is_headless(self) -> bool:
        """True when there is no virtual IP to program: headless, unallocated or absent."""
        return not self.cluster_ips or self.cluster_ips[0] in NO_CLUSTER_IP

    def cluster_ip(self, family: Family) -> str | None:
        """The cluster IP of that family, or None (headless, or single-stack in the other)."""
        for ip in self.cluster_ips:
            parsed = canonical_ip(ip)
            if parsed is not None and parsed[1] is family:
                return parsed[0]
        return None

    def label(self, key: str) -> str | None:
        return _lookup(self.labels, key)

    def annotation(self, key: str) -> str | None:
        return _lookup(self.annotations, key)


@frozen
class Endpoint:
    """One endpoint of a slice, with the API's nil rules for conditions already applied.

    `addresses` holds the slice's `addresses[0]` alone: the API defines no meaning for the
    others and kube-proxy ignores them.
    """

    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    zone: str = ""
    target_ref: TargetRef | None = None
    #: hints.forZones[].name and hints.forNodes[].name, as written by the EndpointSlice controller.
    zone_hints: tuple[str, ...] = ()
    node_hints: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return self.addresses[0]


@frozen
class EndpointPort:
    """A slice port; `port` None means the API left it unset (the slice is unusable for it)."""

    name: str
    protocol: Protocol
    port: int | None


@frozen
class EndpointSlice:
    namespace: str
    name: str
    resource_version: str
    service_name: str
    address_type: str
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    trigger_time: str = ""
    labels: tuple[tuple[str, str], ...] = field(default=(), converter=_sorted_pairs)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def service_key(self) -> tuple[str, str]:
        return (self.namespace, self.service_name)


@frozen
class NodeAddress:
    type: str
    address: str


@frozen
class Node:
    name: str
    resource_version: str = ""
    addresses: tuple[NodeAddress, ...] = ()
    #: metadata.deletionTimestamp is set: the node is going away (proxy /healthz fails).
    deleting: bool = False
    #: The keys of spec.taints, sorted (only their presence matters to a proxy).
    taints: tuple[str, ...] = ()
    #: spec.podCIDRs (else spec.podCIDR) as canonical networks: kube-proxy's NodeCIDR detector.
    pod_cidrs: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = field(default=(), converter=_sorted_pairs)

    @property
    def zone(self) -> str:
        """The topology.kubernetes.io/zone label, "" when unset."""
        return _lookup(self.labels, ZONE_LABEL) or ""

    def primary_ip(self, family: Family) -> str | None:
        """The node's primary IP of that family, as kube-proxy picks it (GetNodeHostIPs).

        Per family: the first InternalIP of that family, else its first ExternalIP.
        """
        for kind in NODE_IP_TYPES:
            for a in self.addresses:
                parsed = canonical_ip(a.address) if a.type == kind else None
                if parsed is not None and parsed[1] is family:
                    return parsed[0]
        return None

    def ips(self, family: Family) -> tuple[str, ...]:
        """InternalIP and ExternalIP addresses of that family: canonical, unique, sorted."""
        found = set()
        for a in self.addresses:
            if a.type in NODE_IP_TYPES:
                parsed = canonical_ip(a.address)
                if parsed is not None and parsed[1] is family:
                    found.add(parsed[0])
        return tuple(sorted(found, key=ip_sort_key))


def _dict_field(value: Mapping[Any, Any]) -> dict[Any, Any]:
    """A private sorted copy, so the snapshot cannot change behind the caller's back."""
    return dict(sorted(value.items()))


@frozen
class ClusterState:
    """Everything the desired farms are computed from, as one immutable snapshot.

    Mappings iterate in key order, so anything computed from them is deterministic.
    """

    services: Mapping[tuple[str, str], Service] = field(factory=dict, converter=_dict_field)
    slices: Mapping[tuple[str, str], tuple[EndpointSlice, ...]] = field(
        factory=dict, converter=_dict_field
    )
    nodes: Mapping[str, Node] = field(factory=dict, converter=_dict_field)

    @classmethod
    def build(
        cls,
        services: Iterable[Service],
        slices: Iterable[EndpointSlice],
        nodes: Iterable[Node],
    ) -> ClusterState:
        """Index the objects; a later object with the same key replaces an earlier one.

        Slices are grouped by (namespace, service name) and sorted by name.
        """
        by_key = {s.key: s for s in services}
        slice_by_key = {s.key: s for s in slices}
        grouped: dict[tuple[str, str], list[EndpointSlice]] = {}
        for s in sorted(slice_by_key.values(), key=lambda s: s.name):
            grouped.setdefault(s.service_key, []).append(s)
        return cls(
            services=by_key,
            slices={k: tuple(v) for k, v in grouped.items()},
            nodes={n.name: n for n in nodes},
        )

    def slices_for(self, service: Service) -> tuple[EndpointSlice, ...]:
        return self.slices.get(service.key, ())


def _lookup(pairs: tuple[tuple[str, str], ...], key: str) -> str | None:
    for k, v in pairs:
        if k == key:
            return v
    return None


# -- reading JSON without trusting it --------------------------------------------------------------


def _show(value: object) -> str:
    """A value for a problem message: short, whatever its type."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _quote(value: object) -> str:
    """A value for a message: strings quoted, anything else as its repr, short either way."""
    return repr(_show(value)) if isinstance(value, str) else _show(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: object) -> TypeGuard[int]:
    return _is_int(value) and 1 <= value <= 65535


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_T = TypeVar("_T")


class _Reader:
    """Reads one object's fields, turning every surprise into a Problem about that object."""

    def __init__(self, ref: ObjectRef) -> None:
        self.ref = ref
        self.problems: list[Problem] = []

    def problem(
        self,
        reason: str,
        message: str,
        *,
        key: str = "",
        value: object = "",
        allowed: tuple[str, ...] = (),
    ) -> None:
        self.problems.append(
            Problem(self.ref, reason, message, key=key, value=_show(value), allowed=allowed)
        )

    def wrong_type(self, path: str, value: object, expected: str) -> None:
        self.problem(
            "InvalidField",
            f"{path} is {_type_name(value)} ({_show(value)}), not {expected}; ignored",
            key=path,
            value=value,
        )

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        """obj[key] as an object; empty when absent or null, or (with a problem) not an object."""
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.wrong_type(path, value, "an object")
            return {}
        return value

    def items(self, obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
        """obj[key] as a list; empty when absent or null, or (with a problem) not a list."""
        value = obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.wrong_type(path, value, "a list")
            return ()
        return value

    def string(self, obj: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.wrong_type(path, value, "a string")
            return default
        return value

    def choice(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: str,
        aliases: Mapping[str, str] | None = None,
    ) -> str:
        """One of `allowed` (or an alias of one); the default, with a problem, otherwise."""
        value = obj.get(key)
        if value is None or value == "":
            return default
        if isinstance(value, str):
            if value in allowed:
                return value
            if aliases and value in aliases:
                return aliases[value]
        self.problem(
            "InvalidField",
            f"{path} {_quote(value)} is not one of {', '.join(allowed)}; using {default}",
            key=path,
            value=value,
            allowed=allowed,
        )
        return default

    def flag(self, obj: Mapping[str, Any], key: str, path: str) -> bool | None:
        """A boolean, or None when absent, null or (with a problem) not a boolean."""
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.wrong_type(path, value, "a boolean")
        return None

    def string_pairs(self, obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, str]]:
        """A string-to-string map (labels, annotations); other entries dropped with a problem."""
        pairs = []
        for k, v in self.mapping(obj, key, path).items():
            if isinstance(k, str) and isinstance(v, str):
                pairs.append((k, v))
            else:
                self.wrong_type(f"{path}[{_show(k)}]", v, "a string")
        return pairs

    def ip(self, value: object, path: str, family: Family | None = None) -> str | None:
        """Canonical text of an IP (of `family` when given), or None with a problem."""
        parsed = canonical_ip(value) if isinstance(value, str) else None
        if parsed is None:
            self.problem(
                "InvalidIP",
                f"{path} {_quote(value)} is not an IP address; ignored",
                key=path,
                value=value,
            )
            return None
        if family is not None and parsed[1] is not family:
            self.problem(
                "InvalidIP",
                f"{path} {_quote(value)} is not an {family} address; ignored",
                key=path,
                value=value,
            )
            return None
        return parsed[0]

    def ips(self, values: Iterable[object], path: str) -> tuple[str, ...]:
        """Canonical IPs, in the given order, without duplicates; junk dropped with problems."""
        out: dict[str, None] = {}
        for i, value in enumerate(values):
            ip = self.ip(value, f"{path}[{i}]")
            if ip is not None:
                out[ip] = None
        return tuple(out)

    def protocol(self, obj: Mapping[str, Any], path: str) -> Protocol | None:
        """TCP when absent; None (with a problem) when unknown, so the caller drops the port."""
        value = obj.get("protocol")
        if value is None:
            return Protocol.TCP
        if isinstance(value, str):
            try:
                return Protocol(value.lower())
            except ValueError:
                pass
        allowed = tuple(p.name for p in Protocol)
        self.problem(
            "UnknownProtocol",
            f"{path}.protocol {_quote(value)} is not one of {', '.join(allowed)}; port ignored",
            key=f"{path}.protocol",
            value=value,
            allowed=allowed,
        )
        return None


def _best_ref(obj: object, kind: str, namespaced: bool = True) -> ObjectRef:
    """As much of the object's identity as can be read, for a problem about it."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return ObjectRef(kind, "", "")
    ns = meta.get("namespace")
    name = meta.get("name")
    return ObjectRef(
        kind,
        _show(ns) if namespaced and isinstance(ns, str) else "",
        _show(name) if isinstance(name, str) else "",
    )


def _identify(
    obj: object,
    kind: str,
    name_ok: Callable[[str], bool],
    name_rule: str,
    namespaced: bool,
) -> tuple[_Reader, Mapping[str, Any], Mapping[str, Any]] | Problem:
    """A reader for an object with a valid name (and namespace), or the problem why not.

    A missing or empty namespace means "default", as kubectl applies a manifest without one.
    """
    ref = _best_ref(obj, kind, namespaced)
    if not isinstance(obj, Mapping):
        return Problem(ref, "InvalidObject", f"a {kind} must be an object, not {_type_name(obj)}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return Problem(ref, "InvalidObject", f"{kind} without metadata; skipped")
    name = meta.get("name")
    if not isinstance(name, str) or not name_ok(name):
        return Problem(
            ref,
            "InvalidObject",
            f"{kind} metadata.name {_quote(name)} is not {name_rule}; skipped",
            key="metadata.name",
            value=_show(name),
        )
    namespace = ""
    if namespaced:
        ns = meta.get("namespace")
        namespace = "default" if ns is None or ns == "" else ns
        if not isinstance(namespace, str) or not is_dns1123_label(namespace):
            return Problem(
                ref,
                "InvalidObject",
                f"{kind} metadata.namespace {_quote(ns)} is not a DNS-1123 label; skipped",
                key="metadata.namespace",
                value=_show(ns),
            )
    return _Reader(ObjectRef(kind, namespace, name)), obj, meta


# -- Service ---------------------------------------------------------------------------------------


def parse_service(obj: Mapping[str, Any]) -> tuple[Service | None, list[Problem]]:
    """A Service snapshot, or None when it has no valid namespace and name."""
    ident = _identify(obj, "Service", is_dns1035_label, "a DNS-1035 label", namespaced=True)
    if isinstance(ident, Problem):
        return None, [ident]
    r, obj, meta = ident
    spec = r.mapping(obj, "spec", "spec")
    status = r.mapping(obj, "status", "status")

    cluster_ips = _cluster_ips(r, spec)
    families = _ip_families(r, spec, cluster_ips)
    ports = tuple(
        p
        for i, raw in enumerate(r.items(spec, "ports", "spec.ports"))
        if (p := _service_port(r, raw, f"spec.ports[{i}]")) is not None
    )
    lb = r.mapping(status, "loadBalancer", "status.loadBalancer")
    lb_ips = []
    for i, ingress in enumerate(r.items(lb, "ingress", "status.loadBalancer.ingress")):
        if not isinstance(ingress, Mapping):
            r.wrong_type(f"status.loadBalancer.ingress[{i}]", ingress, "an object")
        elif ingress.get("ip") is not None and _vip_mode(  # hostname-only: no IP to program
            r, ingress, f"status.loadBalancer.ingress[{i}].ipMode"
        ):
            lb_ips.append(ingress["ip"])
    affinity_config = r.mapping(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig")
    client_ip = r.mapping(affinity_config, "clientIP", "spec.sessionAffinityConfig.clientIP")
    timeout = client_ip.get("timeoutSeconds")
    if timeout is not None and not _is_int(timeout):
        r.wrong_type("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout, "an integer")
        timeout = None

    service = Service(
        namespace=r.ref.namespace,
        name=r.ref.name,
        uid=r.string(meta, "uid", "metadata.uid"),
        resource_version=r.string(meta, "resourceVersion", "metadata.resourceVersion"),
        type=r.choice(spec, "type", "spec.type", SERVICE_TYPES, "ClusterIP"),
        cluster_ips=cluster_ips,
        ip_families=families,
        ports=ports,
        external_ips=r.ips(r.items(spec, "externalIPs", "spec.externalIPs"), "spec.externalIPs"),
        load_balancer_ips=r.ips(lb_ips, "status.loadBalancer.ingress.ip"),
        session_affinity=r.choice(
            spec, "sessionAffinity", "spec.sessionAffinity", SESSION_AFFINITIES, "None"
        ),
        affinity_timeout=timeout,
        external_traffic_policy=r.choice(
            spec,
            "externalTrafficPolicy",
            "spec.externalTrafficPolicy",
            TRAFFIC_POLICIES,
            "Cluster",
            aliases={"Global": "Cluster"},  # the pre-1.24 spelling of Cluster
        ),
        internal_traffic_policy=r.choice(
            spec, "internalTrafficPolicy", "spec.internalTrafficPolicy", TRAFFIC_POLICIES, "Cluster"
        ),
        health_check_node_port=_health_check_node_port(r, spec),
        labels=r.string_pairs(meta, "labels", "metadata.labels"),
        annotations=r.string_pairs(meta, "annotations", "metadata.annotations"),
        creation_timestamp=r.string(meta, "creationTimestamp", "metadata.creationTimestamp"),
        load_balancer_source_ranges=_networks(
            r,
            r.items(spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges"),
            "spec.loadBalancerSourceRanges",
        ),
        traffic_distribution=_traffic_distribution(r, spec),
    )
    return service, r.problems


def _vip_mode(r: _Reader, ingress: Mapping[str, Any], path: str) -> bool:
    """kube-proxy's IsVIPMode: unset or VIP. A Proxy address (KEP-1860) is the load balancer's
    own: it delivers to the node, so nothing is programmed for it. Anything else is not VIP."""
    mode = ingress.get("ipMode")
    if mode is None or mode == "VIP":
        return True
    if mode != "Proxy":
        r.problem(
            "InvalidField",
            f"{path} {_quote(mode)} is not one of {', '.join(IP_MODES)}; "
            "like kube-proxy, the address is not programmed",
            key=path,
            value=mode,
            allowed=IP_MODES,
        )
    return False


def _traffic_distribution(r: _Reader, spec: Mapping[str, Any]) -> str:
    value = spec.get("trafficDistribution")
    if value is None or value == "" or value in TRAFFIC_DISTRIBUTIONS:
        return value or ""
    r.problem(
        "InvalidField",
        f"spec.trafficDistribution {_quote(value)} is not one of "
        f"{', '.join(TRAFFIC_DISTRIBUTIONS)}; ignored",
        key="spec.trafficDistribution",
        value=value,
        allowed=TRAFFIC_DISTRIBUTIONS,
    )
    return ""


def _health_check_node_port(r: _Reader, spec: Mapping[str, Any]) -> int | None:
    value = spec.get("healthCheckNodePort")
    if value is None or value == 0:
        return None
    if not _is_port(value):
        r.problem(
            "InvalidField",
            f"spec.healthCheckNodePort {_quote(value)} is not an integer in 1-65535; ignored",
            key="spec.healthCheckNodePort",
            value=value,
            allowed=("1-65535",),
        )
        return None
    return value


def _networks(r: _Reader, values: Iterable[object], path: str) -> tuple[str, ...]:
    """CIDRs as canonical networks, in order, without duplicates; whitespace trimmed and host
    bits cleared as kube-proxy does; junk dropped with a problem."""
    out: dict[str, None] = {}
    for i, value in enumerate(values):
        network = parse_network(value.strip()) if isinstance(value, str) else None
        if network is None:
            r.problem(
                "InvalidCIDR",
                f"{path}[{i}] {_quote(value)} is not a CIDR (e.g. 203.0.113.0/24); ignored",
                key=f"{path}[{i}]",
                value=value,
            )
        else:
            out[network] = None
    return tuple(out)


def parse_network(text: str) -> str | None:
    """Canonical text of a CIDR ("10.0.0.7/8" -> "10.0.0.0/8"), or None when it is not one."""
    if "/" not in text:
        return None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _cluster_ips(r: _Reader, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """spec.clusterIPs, else [spec.clusterIP]; "None" and "" kept, other entries canonical."""
    raw: Sequence[Any] = r.items(spec, "clusterIPs", "spec.clusterIPs")
    path = "spec.clusterIPs"
    if not raw:
        single = spec.get("clusterIP")
        raw, path = ([] if single is None else [single]), "spec.clusterIP"
    out: dict[str, None] = {}
    for i, value in enumerate(raw):
        where = path if path == "spec.clusterIP" else f"{path}[{i}]"
        if value in NO_CLUSTER_IP:
            out[value] = None
        elif (ip := r.ip(value, where)) is not None:
            out[ip] = None
    return tuple(out)


def _ip_families(
    r: _Reader, spec: Mapping[str, Any], cluster_ips: tuple[str, ...]
) -> tuple[Family, ...]:
    """spec.ipFamilies, else the families of the cluster IPs, in order, without duplicates."""
    out: dict[Family, None] = {}
    by_name = {"ipv4": Family.IPV4, "ipv6": Family.IPV6}
    for i, value in enumerate(r.items(spec, "ipFamilies", "spec.ipFamilies")):
        family = by_name.get(value.lower()) if isinstance(value, str) else None
        if family is None:
            r.problem(
                "InvalidField",
                f"spec.ipFamilies[{i}] {_quote(value)} is not IPv4 or IPv6; ignored",
                key=f"spec.ipFamilies[{i}]",
                value=value,
                allowed=("IPv4", "IPv6"),
            )
        else:
            out[family] = None
    if not out:
        for ip in cluster_ips:
            parsed = canonical_ip(ip)
            if parsed is not None:
                out[parsed[1]] = None
    return tuple(out)


def _port_head(
    r: _Reader, raw: object, path: str
) -> tuple[Mapping[str, Any], str, Protocol] | None:
    """The name and protocol both kinds of port start with; None (with a problem) when unusable."""
    if not isinstance(raw, Mapping):
        r.problem("InvalidPort", f"{path} is {_type_name(raw)}, not an object; ignored", key=path)
        return None
    name = raw.get("name")
    if name is None:
        name = ""
    if not isinstance(name, str):
        r.problem(
            "InvalidPort",
            f"{path}.name {_quote(name)} is not a string; port ignored",
            key=f"{path}.name",
            value=name,
        )
        return None
    protocol = r.protocol(raw, path)
    if protocol is None:
        return None
    return raw, name, protocol


def _service_port(r: _Reader, raw: object, path: str) -> ServicePort | None:
    head = _port_head(r, raw, path)
    if head is None:
        return None
    raw, name, protocol = head
    port = raw.get("port")
    if not _is_port(port):
        r.problem(
            "InvalidPort",
            f"{path}.port {_quote(port)} is not an integer in 1-65535; port ignored",
            key=f"{path}.port",
            value=port,
            allowed=("1-65535",),
        )
        return None
    target = raw.get("targetPort")
    if target is not None and not _is_port(target) and not (isinstance(target, str) and target):
        r.problem(
            "InvalidPort",
            f"{path}.targetPort {_quote(target)} is neither a port number nor a name; ignored",
            key=f"{path}.targetPort",
            value=target,
        )
        target = None
    node_port = raw.get("nodePort")
    if node_port is not None and not _is_port(node_port):
        r.problem(
            "InvalidPort",
            f"{path}.nodePort {_quote(node_port)} is not an integer in 1-65535; ignored",
            key=f"{path}.nodePort",
            value=node_port,
            allowed=("1-65535",),
        )
        node_port = None
    return ServicePort(name, protocol, port, target, node_port)


# -- EndpointSlice ---------------------------------------------------------------------------------


def parse_endpoint_slice(obj: Mapping[str, Any]) -> tuple[EndpointSlice | None, list[Problem]]:
    """An EndpointSlice snapshot, or None when it cannot be tied to a Service or read at all."""
    ident = _identify(
        obj, "EndpointSlice", is_dns1123_subdomain, "a DNS-1123 subdomain", namespaced=True
    )
    if isinstance(ident, Problem):
        return None, [ident]
    r, obj, meta = ident
    label_pairs = r.string_pairs(meta, "labels", "metadata.labels")
    labels = dict(label_pairs)
    service_name = labels.get(SERVICE_NAME_LABEL)
    if service_name is None or not is_dns1035_label(service_name):
        what = "no" if service_name is None else f"an invalid ({_quote(service_name)})"
        r.problem(
            "MissingServiceName",
            f"EndpointSlice has {what} {SERVICE_NAME_LABEL} label; skipped",
            key=f"metadata.labels[{SERVICE_NAME_LABEL}]",
            value="" if service_name is None else service_name,
        )
        return None, r.problems
    address_type = obj.get("addressType")
    if address_type not in ADDRESS_TYPES:
        r.problem(
            "InvalidAddressType",
            f"addressType {_quote(address_type)} is not one of {', '.join(ADDRESS_TYPES)}; skipped",
            key="addressType",
            value=address_type,
            allowed=ADDRESS_TYPES,
        )
        return None, r.problems
    family = _ADDRESS_TYPE_FAMILY.get(address_type)
    endpoints = tuple(
        e
        for i, raw in enumerate(r.items(obj, "endpoints", "endpoints"))
        if (e := _endpoint(r, raw, f"endpoints[{i}]", family)) is not None
    )
    ports = tuple(
        p
        for i, raw in enumerate(r.items(obj, "ports", "ports"))
        if (p := _endpoint_port(r, raw, f"ports[{i}]")) is not None
    )
    annotations = dict(r.string_pairs(meta, "annotations", "metadata.annotations"))
    return (
        EndpointSlice(
            namespace=r.ref.namespace,
            name=r.ref.name,
            resource_version=r.string(meta, "resourceVersion", "metadata.resourceVersion"),
            service_name=service_name,
            address_type=address_type,
            endpoints=endpoints,
            ports=ports,
            trigger_time=annotations.get(TRIGGER_TIME_ANNOTATION, ""),
            labels=label_pairs,
        ),
        r.problems,
    )


def _endpoint(r: _Reader, raw: object, path: str, family: Family | None) -> Endpoint | None:
    """One endpoint; FQDN addresses (family None) are kept verbatim, IPs made canonical."""
    if not isinstance(raw, Mapping):
        r.problem(
            "InvalidEndpoint", f"{path} is {_type_name(raw)}, not an object; ignored", key=path
        )
        return None
    # Only addresses[0] is the endpoint's (the API defines no meaning for the others, and
    # kube-proxy's endpointslicecache reads the first alone); a later address never stands in
    # for a bad first one.
    before = len(r.problems)
    listed = r.items(raw, "addresses", f"{path}.addresses")
    if not listed:
        if len(r.problems) == before:
            r.problem("InvalidEndpoint", f"{path} has no address; ignored", key=f"{path}.addresses")
        return None
    first, where = listed[0], f"{path}.addresses[0]"
    address: str | None
    if family is None:
        address = first if isinstance(first, str) and first else None
        if address is None:
            r.wrong_type(where, first, "a name")
    else:
        address = r.ip(first, where, family)
    if address is None:
        return None
    conditions = r.mapping(raw, "conditions", f"{path}.conditions")
    ready = r.flag(conditions, "ready", f"{path}.conditions.ready")
    serving = r.flag(conditions, "serving", f"{path}.conditions.serving")
    terminating = r.flag(conditions, "terminating", f"{path}.conditions.terminating")
    ref_raw = r.mapping(raw, "targetRef", f"{path}.targetRef")
    target_ref = None
    if ref_raw:
        target_ref = TargetRef(
            kind=r.string(ref_raw, "kind", f"{path}.targetRef.kind"),
            namespace=r.string(ref_raw, "namespace", f"{path}.targetRef.namespace"),
            name=r.string(ref_raw, "name", f"{path}.targetRef.name"),
            uid=r.string(ref_raw, "uid", f"{path}.targetRef.uid"),
        )
    hints = r.mapping(raw, "hints", f"{path}.hints")
    return Endpoint(
        addresses=(address,),
        # The API and kube-proxy's endpointslicecache: nil ready and nil serving mean true
        # (the state is unknown), nil terminating means false.
        ready=True if ready is None else ready,
        serving=True if serving is None else serving,
        terminating=False if terminating is None else terminating,
        node_name=r.string(raw, "nodeName", f"{path}.nodeName"),
        zone=r.string(raw, "zone", f"{path}.zone"),
        target_ref=target_ref,
        zone_hints=_hint_names(r, hints, "forZones", f"{path}.hints.forZones"),
        node_hints=_hint_names(r, hints, "forNodes", f"{path}.hints.forNodes"),
    )


def _hint_names(r: _Reader, hints: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    """The names of hints.forZones or hints.forNodes, without duplicates; junk dropped."""
    out: dict[str, None] = {}
    for i, raw in enumerate(r.items(hints, key, path)):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name:
            out[name] = None
        else:
            r.wrong_type(f"{path}[{i}].name", name if isinstance(raw, Mapping) else raw, "a name")
    return tuple(out)


def _endpoint_port(r: _Reader, raw: object, path: str) -> EndpointPort | None:
    head = _port_head(r, raw, path)
    if head is None:
        return None
    raw, name, protocol = head
    port = raw.get("port")
    if port is not None and not _is_port(port):
        r.problem(
            "InvalidPort",
            f"{path}.port {_quote(port)} is not an integer in 1-65535; its number is ignored",
            key=f"{path}.port",
            value=port,
            allowed=("1-65535",),
        )
        port = None
    return EndpointPort(name, protocol, port)


# -- Node ------------------------------------------------------------------------------------------


def parse_node(obj: Mapping[str, Any]) -> tuple[Node | None, list[Problem]]:
    """A Node snapshot (its addresses); None when it has no valid name."""
    ident = _identify(obj, "Node", is_dns1123_subdomain, "a DNS-1123 subdomain", namespaced=False)
    if isinstance(ident, Problem):
        return None, [ident]
    r, obj, meta = ident
    status = r.mapping(obj, "status", "status")
    addresses = []
    for i, raw in enumerate(r.items(status, "addresses", "status.addresses")):
        path = f"status.addresses[{i}]"
        if not isinstance(raw, Mapping):
            r.wrong_type(path, raw, "an object")
            continue
        kind, value = raw.get("type"), raw.get("address")
        if not isinstance(kind, str) or not kind:
            r.wrong_type(f"{path}.type", kind, "an address type")
        elif kind in NODE_IP_TYPES:
            if (ip := r.ip(value, f"{path}.address")) is not None:
                addresses.append(NodeAddress(kind, ip))
        elif isinstance(value, str):
            addresses.append(NodeAddress(kind, value))
        else:
            r.wrong_type(f"{path}.address", value, "a string")
    taints: set[str] = set()
    spec = r.mapping(obj, "spec", "spec")
    for i, raw in enumerate(r.items(spec, "taints", "spec.taints")):
        key = raw.get("key") if isinstance(raw, Mapping) else None
        if isinstance(key, str) and key:
            taints.add(key)
        else:
            r.wrong_type(f"spec.taints[{i}].key", key, "a taint key")
    pod_cidrs = r.items(spec, "podCIDRs", "spec.podCIDRs")
    if not pod_cidrs and spec.get("podCIDR") is not None:
        pod_cidrs = [spec.get("podCIDR")]
    node = Node(
        name=r.ref.name,
        resource_version=r.string(meta, "resourceVersion", "metadata.resourceVersion"),
        addresses=tuple(addresses),
        deleting=bool(r.string(meta, "deletionTimestamp", "metadata.deletionTimestamp")),
        taints=tuple(sorted(taints)),
        pod_cidrs=_networks(r, pod_cidrs, "spec.podCIDRs"),
        labels=r.string_pairs(meta, "labels", "metadata.labels"),
    )
    return node, r.problems


# -- a bag of objects ------------------------------------------------------------------------------

_Parser = Callable[[Mapping[str, Any]], tuple[Any, list[Problem]]]
#: kind -> (apiVersion, parser). Only these kinds matter; every other kind is ignored.
_KINDS: dict[str, tuple[str, _Parser]] = {
    "Service": ("v1", parse_service),
    "EndpointSlice": ("discovery.k8s.io/v1", parse_endpoint_slice),
    "Node": ("v1", parse_node),
}
_MAX_LIST_DEPTH = 8
#: The kinds `parse_objects` reads; every other kind is ignored.
READ_KINDS: tuple[str, ...] = tuple(_KINDS)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def parse_objects(objs: Iterable[Any]) -> tuple[ClusterState, list[Problem]]:
    """A ClusterState from a bag of API objects (manifests, `kubectl get -o json`, lists).

    Objects are dispatched by kind and apiVersion; `*List` kinds are expanded, their items
    inheriting the element kind and apiVersion when they carry none (as API list responses
    serve them). Other kinds are ignored; a same-named kind of another API group (a Knative
    Service) is another kind. The result does not depend on the order of `objs`: when a key
    occurs twice the object with the highest resourceVersion wins, and problems come sorted.
    """
    parsed: dict[str, list[Any]] = {kind: [] for kind in _KINDS}
    problems: list[Problem] = []

    def dispatch(obj: object, kind_hint: str | None, api_hint: str | None, depth: int) -> None:
        if not isinstance(obj, Mapping):
            problems.append(
                Problem(
                    ObjectRef(kind_hint or "", "", ""),
                    "InvalidObject",
                    f"an API object must be an object, not {_type_name(obj)} ({_show(obj)})",
                )
            )
            return
        kind = obj.get("kind")
        kind = kind_hint if kind is None else kind
        api = obj.get("apiVersion")
        api = api_hint if api is None else api
        if not isinstance(kind, str) or not kind:
            problems.append(
                Problem(
                    _best_ref(obj, ""),
                    "InvalidObject",
                    f"object without a kind ({_show(kind)}); skipped",
                    key="kind",
                    value=_show(kind),
                )
            )
            return
        if kind.endswith("List"):
            element = kind.removesuffix("List")
            items = obj.get("items")
            if element and element not in _KINDS:
                return
            if not isinstance(items, list | tuple) or depth >= _MAX_LIST_DEPTH:
                why = "nested too deep" if depth >= _MAX_LIST_DEPTH else "without a list of items"
                problems.append(
                    Problem(ObjectRef(kind, "", ""), "InvalidObject", f"{kind} {why}; skipped")
                )
                return
            for item in items:
                # A typed list's items inherit its kind and version; a plain List's do not.
                dispatch(item, element or None, api if element else None, depth + 1)
            return
        if kind not in _KINDS:
            return
        expected, parser = _KINDS[kind]
        if api is not None and api != expected:
            if isinstance(api, str) and _group(api) != _group(expected):
                return
            problems.append(
                Problem(
                    _best_ref(obj, kind, kind != "Node"),
                    "UnsupportedApiVersion",
                    f"{kind} apiVersion {_quote(api)} is not {expected}; skipped",
                    key="apiVersion",
                    value=_show(api),
                    allowed=(expected,),
                )
            )
            return
        value, found = parser(obj)
        problems.extend(found)
        if value is not None:
            parsed[kind].append(value)

    # One object, or junk, instead of a collection of objects: take it as the only object.
    single = isinstance(objs, Mapping | str | bytes) or not isinstance(objs, Iterable)
    for obj in [objs] if single else objs:
        dispatch(obj, None, None, 0)

    services = _newest_last(parsed["Service"], "Service", problems)
    slices = _newest_last(parsed["EndpointSlice"], "EndpointSlice", problems)
    nodes = _newest_last(parsed["Node"], "Node", problems)
    return ClusterState.build(services, slices, nodes), sorted(problems)


def _newest_last(objs: list[_T], kind: str, problems: list[Problem]) -> list[_T]:
    """The objects ordered so that, per key, the highest resourceVersion comes last.

    Equal versions are ordered by content, so the outcome never depends on input order.
    A key given more than once with different content is reported once.
    """

    def key(o: Any) -> tuple[str, str]:
        return ("", o.name) if kind == "Node" else o.key

    def rank(o: Any) -> tuple[Any, ...]:
        rv: str = o.resource_version
        return (key(o), rv.isascii() and rv.isdigit(), len(rv), rv, repr(o))

    ordered = sorted(objs, key=rank)
    variants: dict[tuple[str, str], set[Any]] = {}
    for o in ordered:
        variants.setdefault(key(o), set()).add(o)
    for (ns, name), found in variants.items():
        if len(found) > 1:
            problems.append(
                Problem(
                    ObjectRef(kind, ns, name),
                    "DuplicateObject",
                    f"{kind} {ns + '/' if ns else ''}{name} is given in {len(found)} different "
                    "versions; the one with the highest resourceVersion is used",
                )
            )
    return ordered
