"""The node rules: what nftlb cannot express, as one nftables table of our own. Pure.

nftlb load-balances; kube-proxy also rejects, drops, decides who is masqueraded, short-circuits
pod and node traffic to externalTrafficPolicy Local addresses, and filters load-balancer
sources (`kube-proxy-semantics.md` sections 1, 2, 4). This module derives those rules from the
same desired state as the farms, as values: sets, maps and their elements, and chains whose
rules are nftables JSON expressions. `kernel/nftables.py` writes them as one transaction into
``table inet kube-nftlb`` and reads them back; `diff_tables` makes the smallest transaction.

Where each decision is taken (hook priorities; nftlb's ``ip``/``ip6 nftlb`` tables pick a backend
at ``mangle`` (-150) and DNAT at ``dstnat`` (-100), and every farm is ``dnat`` mode so nftlb itself
never masquerades):

* ``prerouting``/``output`` filter at -110 (before any DNAT): loadBalancerSourceRanges (drop),
  and the masquerade decision, a packet mark bit (kube-proxy's 0x4000), for new connections;
* ``nat-prerouting``/``nat-output`` at -105 (before nftlb's DNAT): the short-circuit, our own
  DNAT of pod and node traffic for eTP Local external addresses to the cluster-wide endpoints;
* ``input``/``forward``/``output-post`` filter at 0 (after DNAT, as kubernetes#132456 has it):
  reject or drop what was not DNATed: no endpoints, Local without local endpoints, a cluster IP
  on a port it does not serve (reject), an address of the service CIDR no Service holds (drop);
* ``postrouting`` nat at ``srcnat`` (100): masquerade hairpin traffic and marked packets.

Each rule carries a comment, a hash of its expressions, so a read-back chain compares by its
rule hashes (the kernel prints expressions back in its own normal form).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from attrs import field, frozen

from reconciler.core.desired import PRIMARY, Desired, frontend_farms, is_proxied
from reconciler.core.endpoints import select_endpoints
from reconciler.core.farms import Family, Farm
from reconciler.core.ips import ip_info
from reconciler.core.kube import ClusterState, Node, Service, parse_network
from reconciler.core.nodeports import NodePortAddresses
from reconciler.core.selection import selected

TABLE_FAMILY = "inet"
TABLE_NAME = "kube-nftlb"
#: The packet mark bit that asks for masquerade (kube-proxy's default masquerade bit, 14).
MASQUERADE_MARK = 0x4000
_ALL_ONES = 0xFFFFFFFF

Json = Any
#: A set element key: IPs, protocols and CIDRs as text, ports as numbers.
Key = tuple[str | int, ...]


class DetectLocalMode(StrEnum):
    """kube-proxy's ``--detect-local-mode``: how traffic from pods is told apart."""

    CLUSTER_CIDR = "ClusterCIDR"
    NODE_CIDR = "NodeCIDR"
    BRIDGE_INTERFACE = "BridgeInterface"
    INTERFACE_NAME_PREFIX = "InterfaceNamePrefix"


@frozen
class NodeRulesConfig:
    """The settings the rules depend on (flags of `kube-nftlb run`, checked by the shell)."""

    detect_local_mode: DetectLocalMode = DetectLocalMode.CLUSTER_CIDR
    cluster_cidrs: tuple[str, ...] = ()
    pod_bridge_interface: str = ""
    pod_interface_name_prefix: str = ""
    service_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False


class ConfigProblem(ValueError):
    """A setting is wrong; the message names the flag."""


def parse_cidrs(text: str, flag: str) -> tuple[str, ...]:
    """A comma-separated list of CIDRs, at most one per family (kube-proxy uses the first of
    each); ``ConfigProblem`` naming `flag` for anything else."""
    out: list[str] = []
    seen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            network = ipaddress.ip_network(part, strict=True)
        except ValueError as e:
            raise ConfigProblem(f"{flag}: {part!r} is not a CIDR (e.g. 10.244.0.0/16): {e}") from e
        if network.version in seen:
            raise ConfigProblem(f"{flag}: more than one IPv{network.version} CIDR in {text!r}")
        seen.add(network.version)
        out.append(str(network))
    return tuple(out)


def check_config(config: NodeRulesConfig) -> None:
    """The mode's own value must be given: a detector that matches nothing would masquerade
    every pod's cluster IP traffic, or none, without a word."""
    mode = config.detect_local_mode
    if mode is DetectLocalMode.CLUSTER_CIDR and not config.cluster_cidrs:
        raise ConfigProblem(
            "--cluster-cidr is not set (env KUBE_NFTLB_CLUSTER_CIDR): --detect-local-mode "
            "ClusterCIDR needs the cluster's pod CIDR(s), e.g. 10.244.0.0/16,fd00:244::/48; "
            "or choose --detect-local-mode NodeCIDR, BridgeInterface or InterfaceNamePrefix"
        )
    if mode is DetectLocalMode.BRIDGE_INTERFACE and not config.pod_bridge_interface:
        raise ConfigProblem(
            "--pod-bridge-interface is not set (env KUBE_NFTLB_POD_BRIDGE_INTERFACE): "
            "--detect-local-mode BridgeInterface needs the pods' bridge, e.g. cni0"
        )
    if mode is DetectLocalMode.INTERFACE_NAME_PREFIX and not config.pod_interface_name_prefix:
        raise ConfigProblem(
            "--pod-interface-name-prefix is not set (env KUBE_NFTLB_POD_INTERFACE_NAME_PREFIX): "
            "--detect-local-mode InterfaceNamePrefix needs the pods' interface prefix, e.g. veth"
        )
    for name in (config.pod_bridge_interface, config.pod_interface_name_prefix):
        if name and (len(name) > 15 or not name.replace("-", "").replace(".", "").isalnum()):
            raise ConfigProblem(f"{name!r} is not an interface name (at most 15 of [A-Za-z0-9.-])")


# -- the model -----------------------------------------------------------------------------------


@frozen(order=True)
class SetSpec:
    """A named set (``verdict_map`` False) or verdict map of the table."""

    name: str
    type: tuple[str, ...]
    interval: bool = False
    verdict_map: bool = False


@frozen(order=True)
class BaseHook:
    type: str
    hook: str
    priority: int


@frozen(order=True)
class Rule:
    """One rule: its expressions as canonical JSON text, so rules are plain comparable values.

    A rule read back from the kernel has no `expr`, only the `known` comment it carried."""

    expr: str
    known: str = ""

    @property
    def comment(self) -> str:
        return self.known or hashlib.sha256(self.expr.encode()).hexdigest()[:16]

    @staticmethod
    def of(*exprs: Json) -> Rule:
        return Rule(json.dumps(list(exprs), sort_keys=True, separators=(",", ":")))


@frozen(order=True)
class Chain:
    name: str
    base: BaseHook | None
    rules: tuple[Rule, ...] = ()

    @property
    def signature(self) -> tuple[BaseHook | None, tuple[str, ...]]:
        """What a read-back chain is compared by: its hook and its rules' hashes."""
        return (self.base, tuple(r.comment for r in self.rules))


@frozen(order=True, cache_hash=True)
class Element:
    """One element: of set `set`, with `key`; `verdict` for maps ("drop", "goto:chain")."""

    set: str
    key: Key
    verdict: str = ""


def _freeze_chains(chains: Iterable[Chain]) -> Mapping[str, Chain]:
    return {c.name: c for c in sorted(chains, key=lambda c: c.name)}


@frozen
class NodeTable:
    """The whole table as values: what is desired, or what was read back."""

    sets: frozenset[SetSpec] = frozenset()
    chains: Mapping[str, Chain] = field(factory=dict, converter=_freeze_chains)
    elements: frozenset[Element] = frozenset()


#: kube-proxy's ``traffic_policy`` label values: internalTrafficPolicy, externalTrafficPolicy.
INTERNAL, EXTERNAL = "internal", "external"


@frozen
class NoLocalEndpoints:
    """One Service port, in one family, whose Local traffic policy drops what reaches this
    node: it has endpoints in the cluster but none here (the ``drop`` verdict below).
    kube-proxy's ``sync_proxy_rules_no_local_endpoints_total`` counts these."""

    port_index: int
    family: Family
    traffic_policy: str  # INTERNAL or EXTERNAL


@frozen
class ServiceRules:
    """One Service's share of the table: elements and its short-circuit chains, and the ports
    it drops for want of a local endpoint (counted, not written)."""

    elements: frozenset[Element] = frozenset()
    chains: tuple[Chain, ...] = ()
    no_local: frozenset[NoLocalEndpoints] = frozenset()


# -- expressions ---------------------------------------------------------------------------------

_V = {Family.IPV4: "v4", Family.IPV6: "v6"}
_IP = {Family.IPV4: "ip", Family.IPV6: "ip6"}
_ADDR = {Family.IPV4: "ipv4_addr", Family.IPV6: "ipv6_addr"}
FAMILIES = (Family.IPV4, Family.IPV6)


def set_name(base: str, family: Family) -> str:
    return f"{base}-{_V[family]}"


def _payload(family: Family, fld: str) -> Json:
    return {"payload": {"protocol": _IP[family], "field": fld}}


def _frontend_key(family: Family) -> Json:
    return {
        "concat": [
            _payload(family, "daddr"),
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}},
        ]
    }


def _match(left: Json, right: Json, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _ct_new() -> Json:
    return _match({"ct": {"key": "state"}}, "new", "in")


def _verdict(text: str) -> Json:
    kind, _, target = text.partition(":")
    return {kind: {"target": target}} if target else {kind: None}


def _fib_local() -> Json:
    return _match({"fib": {"result": "type", "flags": ["saddr"]}}, "local")


def _detector(config: NodeRulesConfig, family: Family, node: Node | None) -> Json | None:
    """The "comes from a pod" match for `family`, or None when this family has no detector."""
    mode = config.detect_local_mode
    if mode is DetectLocalMode.BRIDGE_INTERFACE:
        return _match({"meta": {"key": "iifname"}}, config.pod_bridge_interface)
    if mode is DetectLocalMode.INTERFACE_NAME_PREFIX:
        return _match({"meta": {"key": "iifname"}}, config.pod_interface_name_prefix + "*")
    if not pod_cidrs(config, family, node):
        return None
    return _match(_payload(family, "saddr"), "@" + set_name("pod-cidrs", family))


def pod_cidrs(config: NodeRulesConfig, family: Family, node: Node | None) -> tuple[str, ...]:
    """The first CIDR of `family` the detector uses (ClusterCIDR or NodeCIDR mode)."""
    version = 4 if family is Family.IPV4 else 6
    if config.detect_local_mode is DetectLocalMode.CLUSTER_CIDR:
        source = config.cluster_cidrs
    elif config.detect_local_mode is DetectLocalMode.NODE_CIDR:
        source = node.pod_cidrs if node is not None else ()
    else:
        return ()
    found = [c for c in source if _version(c) == version]
    return tuple(found[:1])


def _version(cidr: str) -> int:
    """The IP version of canonical CIDR text (only IPv6 text holds a colon)."""
    return 6 if ":" in cidr else 4


def _service_cidrs(config: NodeRulesConfig, family: Family) -> tuple[str, ...]:
    version = 4 if family is Family.IPV4 else 6
    return tuple(c for c in config.service_cidrs if _version(c) == version)


# -- the skeleton: everything that does not depend on Services ---------------------------------

PRE_DNAT = -110
SHORT_CIRCUIT = -105
FILTER = 0
SRCNAT = 100


def skeleton(config: NodeRulesConfig, node: Node | None) -> NodeTable:
    """Sets, maps and chains that every node holds, with the elements of the settings."""
    sets: set[SetSpec] = set()
    elements: set[Element] = set()
    firewall: list[Rule] = []
    masq: list[Rule] = []
    short_pre: list[Rule] = []
    short_out: list[Rule] = []
    check: list[Rule] = []
    post: list[Rule] = []
    masq_cluster: list[Rule] = []
    for family in FAMILIES:
        addr = _ADDR[family]
        frontend = (addr, "inet_proto", "inet_service")
        sets |= {
            SetSpec(set_name("cluster-ips", family), (addr,)),
            SetSpec(set_name("verdicts", family), frontend, verdict_map=True),
            SetSpec(set_name("masquerade", family), frontend, verdict_map=True),
            SetSpec(set_name("short-circuit", family), frontend, verdict_map=True),
            SetSpec(set_name("firewall", family), frontend),
            SetSpec(set_name("firewall-allow", family), (*frontend, addr), interval=True),
            SetSpec(set_name("hairpin", family), (addr, addr)),
        }
        key = _frontend_key(family)
        firewall.append(
            Rule.of(
                _ct_new(),
                _match(key, "@" + set_name("firewall", family)),
                _match(
                    {"concat": [*key["concat"], _payload(family, "saddr")]},
                    "@" + set_name("firewall-allow", family),
                    "!=",
                ),
                {"drop": None},
            )
        )
        masq.append(
            Rule.of(_ct_new(), {"vmap": {"key": key, "data": "@" + set_name("masquerade", family)}})
        )
        detector = _detector(config, family, node)
        cidrs = pod_cidrs(config, family, node)
        if cidrs:
            sets.add(SetSpec(set_name("pod-cidrs", family), (addr,), interval=True))
            elements |= {Element(set_name("pod-cidrs", family), (c,)) for c in cidrs}
        to_short = {"vmap": {"key": key, "data": "@" + set_name("short-circuit", family)}}
        if detector is not None:
            short_pre.append(Rule.of(detector, to_short))
            masq_cluster.append(
                Rule.of(
                    _match({"meta": {"key": "nfproto"}}, _IP_NF[family]), detector, {"return": None}
                )
            )
        short_pre.append(Rule.of(_fib_local(), to_short))
        short_out.append(Rule.of(to_short))
        check.append(Rule.of({"vmap": {"key": key, "data": "@" + set_name("verdicts", family)}}))
        check.append(
            Rule.of(
                _match(_payload(family, "daddr"), "@" + set_name("cluster-ips", family)),
                {"reject": None},
            )
        )
        service = _service_cidrs(config, family)
        if service:
            sets.add(SetSpec(set_name("service-cidrs", family), (addr,), interval=True))
            elements |= {Element(set_name("service-cidrs", family), (c,)) for c in service}
            check.append(
                Rule.of(
                    _match(_payload(family, "daddr"), "@" + set_name("service-cidrs", family)),
                    {"drop": None},
                )
            )
        post.append(
            Rule.of(
                _match({"ct": {"key": "status"}}, "dnat", "in"),
                _match(
                    {"concat": [_payload(family, "saddr"), _payload(family, "daddr")]},
                    "@" + set_name("hairpin", family),
                ),
                {"masquerade": {"flags": "fully-random"}},
            )
        )
    mark = {"meta": {"key": "mark"}}
    post.append(
        Rule.of(
            _match({"&": [mark, MASQUERADE_MARK]}, MASQUERADE_MARK),
            {"mangle": {"key": mark, "value": {"&": [mark, _ALL_ONES ^ MASQUERADE_MARK]}}},
            {"masquerade": {"flags": "fully-random"}},
        )
    )
    masq_cluster.append(Rule.of({"goto": {"target": "mark-masquerade"}}))
    run_check = Rule.of(_ct_new(), {"jump": {"target": "endpoints-check"}})
    chains = [
        Chain("reject", None, (Rule.of({"reject": None}),)),
        Chain(
            "mark-masquerade",
            None,
            (Rule.of({"mangle": {"key": mark, "value": {"|": [mark, MASQUERADE_MARK]}}}),),
        ),
        # ClusterIP traffic: masquerade unless it comes from a pod (or always: --masquerade-all)
        Chain("masquerade-cluster", None, tuple(masq_cluster)),
        # externalTrafficPolicy Local: only the node's own traffic
        Chain(
            "masquerade-local",
            None,
            (Rule.of(_fib_local(), {"goto": {"target": "mark-masquerade"}}),),
        ),
        Chain("endpoints-check", None, tuple(check)),
        Chain("prerouting", BaseHook("filter", "prerouting", PRE_DNAT), (*firewall, *masq)),
        Chain("output", BaseHook("filter", "output", PRE_DNAT), (*firewall, *masq)),
        Chain("nat-prerouting", BaseHook("nat", "prerouting", SHORT_CIRCUIT), tuple(short_pre)),
        Chain("nat-output", BaseHook("nat", "output", SHORT_CIRCUIT), tuple(short_out)),
        Chain("input", BaseHook("filter", "input", FILTER), (run_check,)),
        Chain("forward", BaseHook("filter", "forward", FILTER), (run_check,)),
        Chain("output-post", BaseHook("filter", "output", FILTER), (run_check,)),
        Chain("postrouting", BaseHook("nat", "postrouting", SRCNAT), tuple(post)),
    ]
    return NodeTable(frozenset(sets), chains, frozenset(elements))


_IP_NF = {Family.IPV4: "ipv4", Family.IPV6: "ipv6"}


# -- one Service's share -------------------------------------------------------------------------


@frozen
class FrontendFarm:
    """A farm this Service won, and what it is: which port, cluster IP or external."""

    farm: Farm
    port_index: int
    external: bool


def service_rules(
    service: Service,
    fronts: Sequence[FrontendFarm],
    slices: Sequence[Any],
    node: Node | None,
    node_name: str,
    config: NodeRulesConfig,
    *,
    served: bool = True,
) -> ServiceRules:
    """The elements and chains one Service adds, for the farms it won (`fronts`).

    `served` False (a Service for another proxy, headless, ExternalName) adds nothing; a
    proxied Service's cluster IPs always join ``cluster-ips`` (a wrong port is rejected).
    """
    if not served:
        return ServiceRules()
    elements: set[Element] = set()
    chains: list[Chain] = []
    no_local: set[NoLocalEndpoints] = set()
    for ip in service.cluster_ips:
        info = ip_info(ip)
        if info is not None:
            family = Family.of_version(info.version)
            elements.add(Element(set_name("cluster-ips", family), (info.canonical,)))
    cluster_cache: dict[tuple[int, Family], tuple[Any, ...]] = {}
    zone = node.zone if node is not None else ""

    def cluster_targets(index: int, family: Family) -> tuple[Any, ...]:
        if (index, family) not in cluster_cache:
            cluster_cache[(index, family)] = select_endpoints(  # topology applies here too
                service, service.ports[index], slices, family, node_name, False, zone
            )
        return cluster_cache[(index, family)]

    node_ips = set(node.ips(Family.IPV4) + node.ips(Family.IPV6)) if node is not None else set()
    detects = {f: _detector(config, f, node) is not None for f in FAMILIES}
    for front in fronts:
        farm = front.farm
        address = farm.addresses[0]
        family = farm.family
        key: Key = (address.ip, address.protocol.value, address.port)
        for b in farm.backends:
            elements.add(Element(set_name("hairpin", family), (b.ip, b.ip)))
        local_policy = (
            service.external_traffic_policy if front.external else service.internal_traffic_policy
        ) == "Local"
        if not farm.backends:
            # Local with endpoints elsewhere drops (kube-proxy: !hasLocalEndpoints), none at
            # all rejects (!hasEndpoints)
            has_any = local_policy and cluster_targets(front.port_index, family)
            verdict = "drop" if has_any else "goto:reject"
            elements.add(Element(set_name("verdicts", family), key, verdict))
            if has_any:
                policy = EXTERNAL if front.external else INTERNAL
                no_local.add(NoLocalEndpoints(front.port_index, family, policy))
        elif not front.external:
            if config.masquerade_all:
                elements.add(Element(set_name("masquerade", family), key, "goto:mark-masquerade"))
            elif detects[family]:
                elements.add(
                    Element(set_name("masquerade", family), key, "goto:masquerade-cluster")
                )
        elif not local_policy:
            elements.add(Element(set_name("masquerade", family), key, "goto:mark-masquerade"))
        if front.external and local_policy:
            if farm.backends:
                elements.add(Element(set_name("masquerade", family), key, "goto:masquerade-local"))
            cluster = cluster_targets(front.port_index, family)
            if cluster:
                name = "sc-" + farm.name
                chains.append(_short_circuit_chain(name, farm, cluster))
                elements.add(Element(set_name("short-circuit", family), key, "goto:" + name))
                elements.add(Element(set_name("masquerade", family), key, "goto:masquerade-local"))
                for t in cluster:
                    elements.add(Element(set_name("hairpin", family), (t.ip, t.ip)))
        if (
            front.external
            and service.type == "LoadBalancer"
            and address.ip in service.load_balancer_ips
        ):
            ranges = _ranges_of(service.load_balancer_source_ranges, family)
            if ranges:
                elements.add(Element(set_name("firewall", family), key))
                allowed = list(ranges)
                if any(
                    ipaddress.ip_address(n) in ipaddress.ip_network(r)
                    for r in ranges
                    for n in node_ips
                ):
                    allowed.append(_host(address.ip))
                for r in _collapse(allowed):
                    elements.add(
                        Element(set_name("firewall-allow", family), (*key, normalise_network(r)))
                    )
    return ServiceRules(frozenset(elements), tuple(sorted(chains)), frozenset(no_local))


def count_no_local(shares: Iterable[ServiceRules]) -> dict[str, int]:
    """kube-proxy's gauge: Service ports (once per family) dropped for want of a local
    endpoint, by traffic policy."""
    counts = {INTERNAL: 0, EXTERNAL: 0}
    for share in shares:
        for n in share.no_local:
            counts[n.traffic_policy] += 1
    return counts


def _host(ip: str) -> str:
    return f"{ip}/{32 if ':' not in ip else 128}"


def _ranges_of(ranges: Iterable[str], family: Family) -> tuple[str, ...]:
    version = 4 if family is Family.IPV4 else 6
    return tuple(r for r in ranges if _version(r) == version)


def _collapse(networks: Iterable[str]) -> tuple[str, ...]:
    """Non-overlapping networks covering the same addresses: nftables refuses overlapping
    intervals in one set."""
    parsed = [ipaddress.ip_network(n) for n in networks]
    v4 = [n for n in parsed if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in parsed if isinstance(n, ipaddress.IPv6Network)]
    return (
        *(str(n) for n in ipaddress.collapse_addresses(v4)),
        *(str(n) for n in ipaddress.collapse_addresses(v6)),
    )


def _short_circuit_chain(name: str, farm: Farm, targets: Sequence[Any]) -> Chain:
    """Our own DNAT of pod and node traffic to the cluster-wide endpoints (kube-proxy's
    "short-circuit"): nftlb's farm on this address holds only the node-local ones."""
    family = "ip" if farm.family is Family.IPV4 else "ip6"
    mapping = [[i, {"concat": [t.ip, t.port]}] for i, t in enumerate(targets)]
    rule = Rule.of(
        _match({"meta": {"key": "l4proto"}}, farm.protocol.value),
        {
            "dnat": {
                "family": family,
                "addr": {
                    "map": {
                        "key": {"numgen": {"mode": "random", "mod": len(targets), "offset": 0}},
                        "data": {"set": mapping},
                    }
                },
            }
        },
    )
    return Chain(name, None, (rule,))


def table_of(base: NodeTable, shares: Iterable[ServiceRules]) -> NodeTable:
    """The skeleton plus every Service's share: the whole desired table."""
    elements = set(base.elements)
    chains = dict(base.chains)
    for share in shares:
        elements |= share.elements
        for c in share.chains:
            chains[c.name] = c
    return NodeTable(base.sets, chains.values(), frozenset(_one_verdict_per_key(elements)))


def desired_node_table(
    state: ClusterState,
    desired: Desired,
    node_name: str,
    config: NodeRulesConfig,
    proxy_name: str = "",
    nodeports: NodePortAddresses = PRIMARY,
) -> NodeTable:
    """The whole table for `state`, whose farms `desired` decided (the controller builds the
    same incrementally, one Service's share at a time)."""
    shares = desired_shares(state, desired, node_name, config, proxy_name, nodeports)
    return table_of(skeleton(config, state.nodes.get(node_name)), shares.values())


def desired_shares(
    state: ClusterState,
    desired: Desired,
    node_name: str,
    config: NodeRulesConfig,
    proxy_name: str = "",
    nodeports: NodePortAddresses = PRIMARY,
) -> dict[tuple[str, str], ServiceRules]:
    """Every proxied Service's share of the table for `state`, by Service key."""
    node = state.nodes.get(node_name)
    owners = desired.owner_map()
    won: dict[tuple[str, str], list[Farm]] = {}
    for farm in desired.farms:
        won.setdefault(owners[farm.name], []).append(farm)
    shares = {}
    for key, service in state.services.items():
        if not is_proxied(service, proxy_name):
            continue
        names = frontend_farms(service, node, nodeports)
        fronts = [FrontendFarm(f, *names[f.name]) for f in won.get(key, ()) if f.name in names]
        # the slices the agent's informers would see (kube-proxy's selector)
        slices = [sl for sl in state.slices_for(service) if selected(sl.labels, proxy_name)]
        shares[key] = service_rules(service, fronts, slices, node, node_name, config)
    return shares


def _one_verdict_per_key(elements: Iterable[Element]) -> list[Element]:
    """A map key holds one verdict; should two Services ask for two, the smallest wins."""
    best: dict[tuple[str, Key], Element] = {}
    for e in elements:
        slot = (e.set, e.key)
        held = best.get(slot)
        if held is None or e.verdict < held.verdict:
            best[slot] = e
    return list(best.values())


def element_order(e: Element) -> tuple[str, str, str]:
    """A cheap total order for elements (attrs' generated ``<`` is slow at 10,000s)."""
    return (e.set, repr(e.key), e.verdict)


def normalise_network(text: str) -> str:
    """Canonical text of a CIDR or an address (a full-length prefix is the address)."""
    network = parse_network(text) if "/" in text else None
    if network is None:
        return text
    net = ipaddress.ip_network(network)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
