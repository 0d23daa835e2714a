"""Which farms in nftlb are kube-nftlb's: proven by a marker, never guessed from a name.

A name under ``k8s.`` that happens to parse is no proof: farms nobody here made
(``k8s.default.ghost.http.tcp.v4``, a hash-shortened look-alike) were deleted for it (issue 16).
So every farm kube-nftlb creates carries a marker that only kube-nftlb writes: its
``log-prefix`` is `OWNER_LOG_PREFIX`. nftlb 1.0.7 stores that string as posted and returns it in
``GET /farms`` (it omits only the default, ``TYPE-FNAME ``), keeps it across every other change,
and still expands ``TYPE`` and ``FNAME`` in it, so the nft log lines of a farm with the ``log``
annotation read ``kube-nftlb IN-k8s.default.web.http.tcp.v4 `` (checked on the real daemon).

A farm is owned when its name is one of ours (`names.is_owned`) **and** it carries the marker;
every other farm is foreign and is never updated or deleted. A foreign farm that holds the
name or a frontend (protocol, address, port) of a farm kube-nftlb wants is a `Conflict`: the
desired farm is withheld (posting it would merge into the foreign farm, and nftlb gives a second
farm on one frontend no rules), and the Service is told with a ``ForeignFarm`` problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen

from reconciler.core.farms import Farm, Protocol
from reconciler.core.ips import ip_info
from reconciler.core.problems import ObjectRef, Problem

#: The ``log-prefix`` of every farm kube-nftlb makes; nftlb expands TYPE and FNAME in logs.
OWNER_LOG_PREFIX = "kube-nftlb TYPE-FNAME "
LOG_PREFIX_KEY = "log-prefix"
_PROTOCOLS = {p.value: (p,) for p in Protocol} | {"all": tuple(Protocol)}


def is_marked(entry: Mapping[str, Any]) -> bool:
    """Whether a ``GET /farms`` entry carries kube-nftlb's marker."""
    return entry.get(LOG_PREFIX_KEY) == OWNER_LOG_PREFIX


@frozen(order=True)
class ForeignFrontend:
    """What a foreign farm matches: a protocol, an address and its ports (None: every port)."""

    protocol: Protocol
    ip: str
    ports: tuple[tuple[int, int], ...] | None

    def holds(self, protocol: Protocol, ip: str, port: int) -> bool:
        if protocol is not self.protocol or ip != self.ip:
            return False
        return self.ports is None or any(lo <= port <= hi for lo, hi in self.ports)


@frozen(order=True)
class ForeignFarm:
    """A farm in nftlb that kube-nftlb did not make (or cannot prove it made)."""

    name: str
    frontends: tuple[ForeignFrontend, ...] = ()


def _ports(text: object) -> tuple[tuple[int, int], ...] | str | None:
    """nftlb's ``virtual-ports``: "" is every port; "80,443" and "8000-8010" are lists and
    ranges. Returns "bad" for text nftlb would make no rules of."""
    if not isinstance(text, str):
        return "bad"
    if text.strip() == "":
        return None
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return "bad"
        a, b = int(lo), int(hi or lo)
        if not 1 <= a <= b <= 65535:
            return "bad"
        out.append((a, b))
    return tuple(out)


def _frontends(ip: object, ports: object, protocol: object) -> list[ForeignFrontend]:
    info = ip_info(ip) if isinstance(ip, str) else None
    parsed = _ports(ports)
    protocols = _PROTOCOLS.get(protocol if isinstance(protocol, str) else "tcp", ())
    if info is None or parsed == "bad":
        return []
    assert not isinstance(parsed, str)
    return [ForeignFrontend(p, info.canonical, parsed) for p in protocols]


def foreign_farm(entry: Mapping[str, Any]) -> ForeignFarm:
    """A ``GET /farms`` entry as a foreign farm: its name and what it matches (its own
    ``virtual-addr`` shorthand and every address object it lists)."""
    found: list[ForeignFrontend] = []
    if "virtual-addr" in entry:
        found += _frontends(
            entry.get("virtual-addr"), entry.get("virtual-ports", ""), entry.get("protocol", "tcp")
        )
    addresses = entry.get("addresses")
    for a in addresses if isinstance(addresses, list) else ():
        if isinstance(a, Mapping):
            found += _frontends(a.get("ip-addr"), a.get("ports", ""), a.get("protocol", "tcp"))
    return ForeignFarm(str(entry.get("name", "")), tuple(sorted(set(found))))


@frozen(order=True)
class Conflict:
    """A desired farm withheld because a foreign farm holds its name or its frontend."""

    farm: str  #: the desired farm, not sent
    foreign: str  #: the foreign farm in nftlb
    what: str  #: "name" or "frontend"
    frontend: str  #: "tcp 10.96.0.10:80"

    def to_json(self) -> dict[str, str]:
        return {
            "farm": self.farm,
            "foreign": self.foreign,
            "what": self.what,
            "frontend": self.frontend,
        }

    def message(self) -> str:
        held = "its name" if self.what == "name" else f"its frontend {self.frontend}"
        return (
            f"farm {self.farm} ({self.frontend}) is not programmed: nftlb holds {held} in farm "
            f"{self.foreign!r}, which kube-nftlb did not make and never changes; delete that "
            "farm from nftlb (or restart nftlb) to hand the frontend over"
        )


def _show(farm: Farm) -> str:
    a = farm.addresses[0] if farm.addresses else None
    if a is None:
        return "no frontend"
    host = f"[{a.ip}]" if ":" in a.ip else a.ip
    return f"{a.protocol.value} {host}:{a.port}"


def foreign_conflicts(desired: Iterable[Farm], foreign: Iterable[ForeignFarm]) -> list[Conflict]:
    """Every desired farm whose name or frontend a foreign farm holds (the first such farm by
    name is named); sorted by farm."""
    foreign = sorted(foreign)
    by_name = {f.name: f for f in foreign}
    out: list[Conflict] = []
    for farm in desired:
        if farm.name in by_name:
            out.append(Conflict(farm.name, farm.name, "name", _show(farm)))
            continue
        for a in farm.addresses:
            holder = next(
                (f for f in foreign if any(x.holds(a.protocol, a.ip, a.port) for x in f.frontends)),
                None,
            )
            if holder is not None:
                out.append(Conflict(farm.name, holder.name, "frontend", _show(farm)))
                break
    return sorted(out)


def conflict_problem(conflict: Conflict, service: tuple[str, str]) -> Problem:
    return Problem(
        ObjectRef("Service", service[0], service[1]),
        "ForeignFarm",
        conflict.message(),
        key=conflict.frontend,
        value=conflict.foreign,
    )
