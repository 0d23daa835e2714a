"""IP address text, parsed once: its canonical form, version and numeric order.

Every IP the reconciler handles is parsed on the way in (`kube`), again to select and sort a
Service's endpoints (`endpoints`), and again to validate the farm (`farms`): for a 100-endpoint
change that was 300 `ipaddress` parses, half of a partial sync's own time. The answers depend on
the text alone, so they are cached (bounded), and IPv4 addresses already in canonical form (what
the API server hands out) skip `ipaddress`, at a fifth of its cost.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from attrs import frozen


@frozen
class IpInfo:
    canonical: str  #: `ipaddress`'s text for it ("fd00::1"; a scope is kept: "fe80::1%eth0")
    version: int  #: 4 or 6
    key: tuple[int, int]  #: sorts IPv4 before IPv6, each numerically
    scoped: bool  #: an IPv6 address with a zone ("%eth0"), usable by no frontend or backend
    #: Why no frontend may be on it ("loopback", ...), or "" when one may (see `unsafe_reason`).
    unsafe: str = ""


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: Exactly the text `ipaddress` prints for an IPv4 address: no leading zeros, no blanks.
_CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


#: First IPv4 octets of the ranges `unsafe_reason` refuses; other canonical IPv4 skip it.
_UNSAFE_V4_FIRST = frozenset({0, 127, 169, 255, *range(224, 240)})
_BROADCAST_V4 = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK_V4 = ipaddress.IPv4Network("0.0.0.0/8")


def unsafe_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why nftlb must never be given `address` as a frontend, or "" when it may.

    A frontend on the node's own loopback catches the node's own traffic: with 127.0.0.1 and
    nftlb's port it DNATs the reconciler's requests, `Key:` header and all, to a Service's
    backend (issue 16). Unspecified, link-local (the cloud metadata address 169.254.169.254 is
    one), multicast and broadcast addresses are no Service's either; the API server refuses
    all of them for endpoints, but not for load-balancer status or external IPs. IPv4-mapped
    IPv6 addresses are judged as the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return unsafe_reason(address.ipv4_mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK_V4
    ):
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address == _BROADCAST_V4:
        return "broadcast"
    return ""


@lru_cache(maxsize=4096)
def ip_info(text: str) -> IpInfo | None:
    """What `text` is as an IP address, or None when it is not one."""
    match = _CANONICAL_V4.fullmatch(text)
    if match is not None:
        a, b, c, d = (int(x) for x in match.groups())
        unsafe = unsafe_reason(ipaddress.IPv4Address(text)) if a in _UNSAFE_V4_FIRST else ""
        return IpInfo(text, 4, (4, a << 24 | b << 16 | c << 8 | d), False, unsafe)
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    scoped = isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id is not None
    return IpInfo(
        str(parsed), parsed.version, (parsed.version, int(parsed)), scoped, unsafe_reason(parsed)
    )
