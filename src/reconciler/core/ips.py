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


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: Exactly the text `ipaddress` prints for an IPv4 address: no leading zeros, no blanks.
_CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


@lru_cache(maxsize=4096)
def ip_info(text: str) -> IpInfo | None:
    """What `text` is as an IP address, or None when it is not one."""
    match = _CANONICAL_V4.fullmatch(text)
    if match is not None:
        a, b, c, d = (int(x) for x in match.groups())
        return IpInfo(text, 4, (4, a << 24 | b << 16 | c << 8 | d), False)
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    scoped = isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id is not None
    return IpInfo(str(parsed), parsed.version, (parsed.version, int(parsed)), scoped)
