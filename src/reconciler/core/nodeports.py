"""Which of this node's addresses open a node port: kube-proxy's `--nodeport-addresses`.

kube-proxy's nftables mode opens node ports on the node's primary IPs by default (`primary`), or
on its addresses inside the given CIDRs. A family with no CIDR in the list matches all of that
family's addresses (kube-proxy's match-all). Loopback addresses never open a node port (the
frontends' address check in `desired` refuses them with a problem).
kube-nftlb takes the node's addresses from its Node object (InternalIP and ExternalIP), where
kube-proxy reads its interfaces: nftlb needs each address as a farm of its own.
"""

from __future__ import annotations

import ipaddress

from attrs import frozen

from reconciler.core.farms import Family
from reconciler.core.kube import Node, parse_network

PRIMARY = "primary"


@frozen
class NodePortAddresses:
    """`primary`, or CIDRs (canonical text, in the order given)."""

    cidrs: tuple[str, ...] = ()

    @property
    def primary(self) -> bool:
        return not self.cidrs

    def __str__(self) -> str:
        return ",".join(self.cidrs) or PRIMARY


def parse_nodeport_addresses(text: str) -> NodePortAddresses:
    """`primary` (also an empty value, as kube-proxy's nftables mode) or comma-separated CIDRs.

    Raises ValueError naming the bad entry; `primary` cannot be combined with CIDRs (kube-proxy's
    validation).
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or items == [PRIMARY]:
        return NodePortAddresses()
    if PRIMARY in items:
        raise ValueError(f"cannot be combined with CIDRs: {PRIMARY!r} stands alone")
    cidrs: dict[str, None] = {}
    for item in items:
        network = parse_network(item)
        if network is None:
            raise ValueError(f"holds {item!r}: not a CIDR (e.g. 192.168.0.0/16) nor {PRIMARY!r}")
        cidrs[network] = None
    return NodePortAddresses(tuple(cidrs))


def node_port_ips(setting: NodePortAddresses, node: Node, family: Family) -> tuple[str, ...]:
    """This node's addresses of `family` that open node ports, sorted.

    Loopback (and other addresses no frontend may be on) are refused later, by `desired`, with a
    ForbiddenAddress problem, where kube-proxy logs an error.
    """
    every = node.ips(family)
    if setting.primary:
        primary = node.primary_ip(family)
        return () if primary is None else (primary,)
    networks = [
        n
        for n in (ipaddress.ip_network(c) for c in setting.cidrs)
        if Family.of_version(n.version) is family
    ]
    if not networks:
        return every  # no CIDR of this family: kube-proxy matches every address of it
    return tuple(ip for ip in every if any(ipaddress.ip_address(ip) in n for n in networks))
