"""`ip_info` answers what `ipaddress` answers, for any text, with or without its IPv4 shortcut."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.core.ips import ip_info

OCTETS = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["00", "01", "010", "256", "999", "-1", "+1", " 1", "1 ", "", "0x1", "\u0661"]),
)
DOTTED = st.lists(OCTETS, min_size=3, max_size=5).map(".".join)
TEXTS = st.one_of(
    DOTTED,
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=20),
    st.text(max_size=12),
)


def expected(text: str) -> tuple[str, int, tuple[int, int], bool] | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    scoped = isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None
    return str(ip), ip.version, (ip.version, int(ip)), scoped


@given(TEXTS)
@example("0.0.0.0")
@example("255.255.255.255")
@example("1.2.3.04")
@example("1.2.3.4\n")
@example("10.0.0.\u0661")
@example("fe80::1%eth0")
def test_ip_info_is_what_ipaddress_says(text: str) -> None:
    ip_info.cache_clear()  # the shortcut and the parse, not a cached answer
    info = ip_info(text)
    got = None if info is None else (info.canonical, info.version, info.key, info.scoped)
    assert got == expected(text)
