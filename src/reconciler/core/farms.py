"""The farm model: what the reconciler wants nftlb to hold, as plain frozen values.

Only the fields the reconciler manages are modelled; everything else nftlb reports is ignored on
read-back. Every farm is checked by `validate_farm` and `validate_farms` before it may leave the
core, because nftlb accepts bad input silently and one bad farm can break all others
(`nftlb-api.md` section 0).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from enum import StrEnum

from attrs import evolve, field, frozen

from reconciler.core.ips import ip_info


class Family(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"

    @property
    def short(self) -> str:
        return "v4" if self is Family.IPV4 else "v6"

    @staticmethod
    def of_version(version: int) -> Family:
        """The family of an IP version (4 or 6, as `ips.IpInfo.version` gives it)."""
        return Family.IPV4 if version == 4 else Family.IPV6


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Mode(StrEnum):
    """The modes a Kubernetes Service can use.

    nftlb also knows dsr, stlsdnat and local: dsr and stlsdnat need interface and MAC addresses
    that a Service does not carry (the original ended in config_error with them), and local has
    no backends. They are refused with a problem rather than sent.
    """

    SNAT = "snat"
    DNAT = "dnat"


class Scheduler(StrEnum):
    RR = "rr"
    WEIGHT = "weight"
    HASH = "hash"
    SYMHASH = "symhash"


class Helper(StrEnum):
    NONE = "none"
    FTP = "ftp"
    PPTP = "pptp"
    SIP = "sip"
    SNMP = "snmp"
    TFTP = "tftp"


#: Packet fields accepted by `sched-param` and `persistence`, in nftlb's canonical order.
PACKET_FIELDS: tuple[str, ...] = ("srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac")
#: Hooks accepted by `log`, in canonical order. nftlb's third hook, ``forward``, is left out: in
#: 1.0.7 forward-logging farms are keyed by backend mark alone, so farms with per-farm marks
#: collide and silently get no rules (found on the real daemon).
LOG_HOOKS: tuple[str, ...] = ("input", "output")
#: Every hook nftlb knows, for reading farms back (a forward log found there is then removed).
NFTLB_LOG_HOOKS: tuple[str, ...] = ("input", "forward", "output")
#: Which helpers fit which protocol (nftlb refuses or marks config_error otherwise).
HELPERS_BY_PROTOCOL: dict[Protocol, frozenset[Helper]] = {
    Protocol.TCP: frozenset({Helper.NONE, Helper.FTP, Helper.PPTP, Helper.SIP}),
    Protocol.UDP: frozenset({Helper.NONE, Helper.TFTP, Helper.SNMP, Helper.SIP}),
    Protocol.SCTP: frozenset({Helper.NONE}),
}

#: Helpers whose kernel conntrack helper exists for IPv4 only: on an IPv6 farm nft fails and,
#: as nftlb answers 200, the farm and the next IPv6 farms silently get no rules.
IPV4_ONLY_HELPERS: frozenset[Helper] = frozenset({Helper.PPTP, Helper.SNMP})
#: Bytes each packet field adds to an nft map key (libnftables 1.0.6 aborts inside nftlb, which
#: dies and drops every rule on restart, for persistence keys over 20 bytes and IPv6 hash keys
#: over 48 bytes; found on the real daemon).
_FIELD_BYTES = {"srcip": 4, "dstip": 4, "srcport": 4, "dstport": 4, "srcmac": 8, "dstmac": 8}
MAX_PERSISTENCE_KEY = 20
MAX_IPV6_HASH_KEY = 48


def _key_bytes(family: Family, tokens: Iterable[str]) -> int:
    ip = 16 if family is Family.IPV6 else 4
    return sum(ip if t in ("srcip", "dstip") else _FIELD_BYTES[t] for t in tokens)


def persistence_fits(family: Family, tokens: tuple[str, ...]) -> bool:
    """Whether nftlb 1.0.7 can build this persistence map without crashing."""
    if family is Family.IPV6 and len(tokens) > 1 and {"srcip", "dstip"} & set(tokens):
        return False
    return _key_bytes(family, tokens) <= MAX_PERSISTENCE_KEY


def sched_param_fits(family: Family, tokens: tuple[str, ...]) -> bool:
    return family is Family.IPV4 or _key_bytes(family, tokens) <= MAX_IPV6_HASH_KEY


def helper_fits(family: Family, protocol: Protocol, helper: Helper) -> bool:
    return helper in HELPERS_BY_PROTOCOL[protocol] and not (
        family is Family.IPV6 and helper in IPV4_ONLY_HELPERS
    )


#: The port of a backend read back in a state nftlb cannot use (down, off, config_error, or a
#: field that does not parse, `wire.parse_farm`); never a desired port, so the diff re-posts
#: such a backend whole when it is wanted, and may take it over when it is not (`spares`).
UNUSABLE_PORT = 0

#: Explicit per-farm backend marks come from 0x1..0xFFF (`nftlb-api.md` section 11).
MAX_MARK = 0xFFF
MAX_BACKENDS = MAX_MARK
#: nftlb's own defaults, used where the reconciler has no opinion.
DEFAULT_PERSIST_TTL = 60
#: What kube-proxy uses for sessionAffinity ClientIP without a timeout.
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_PERSIST_TTL = 86400

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Address and backend names are only used in JSON and URLs, never in nft, so they may be longer;
#: the URL limit (199 characters in all) bounds them.
OBJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")


def canonical_tokens(tokens: Iterable[str], order: Sequence[str]) -> tuple[str, ...]:
    """Known tokens in canonical order, duplicates dropped (nftlb compares them as sets)."""
    wanted = set(tokens)
    return tuple(t for t in order if t in wanted)


@frozen(order=True)
class Address:
    """A farm's frontend: its ``virtual-addr``, ``virtual-ports``, ``protocol`` and ``family``.

    nftlb names it ``<farm>-addr``. A farm has exactly one: nftlb 1.0.7 breaks farms with several
    address objects on farm-level changes and deletes, and changing the farm's own virtual
    address in place is clean (`nftlb-api.md` item 21).
    """

    name: str
    family: Family
    ip: str
    port: int
    protocol: Protocol

    @property
    def tuple_key(self) -> tuple[Protocol, str, int]:
        """What nftlb keys its service maps on; two farms must never share it."""
        return (self.protocol, self.ip, self.port)


@frozen(order=True)
class Backend:
    """One endpoint of a farm. `mark` 0 means "not yet assigned" (see `assign_marks`)."""

    name: str
    ip: str
    port: int
    weight: int = 1
    mark: int = 0


def _sorted_addresses(addresses: Iterable[Address]) -> tuple[Address, ...]:
    return tuple(sorted(addresses, key=lambda a: a.name))


def _sorted_backends(backends: Iterable[Backend]) -> tuple[Backend, ...]:
    return tuple(sorted(backends, key=lambda b: b.name))


@frozen
class Farm:
    """One nftlb farm: one Service port, one IP family, one traffic scope.

    Addresses and backends are kept sorted by name so that equal farms compare equal whatever
    order they were built or read in.
    """

    name: str
    family: Family
    protocol: Protocol
    addresses: tuple[Address, ...] = field(converter=_sorted_addresses, default=())
    backends: tuple[Backend, ...] = field(converter=_sorted_backends, default=())
    mode: Mode = Mode.SNAT
    scheduler: Scheduler = Scheduler.RR
    sched_param: tuple[str, ...] = ()
    persistence: tuple[str, ...] = ()
    persist_ttl: int = DEFAULT_PERSIST_TTL
    helper: Helper = Helper.NONE
    log: tuple[str, ...] = ()
    est_connlimit: int = 0
    intra_connect: bool = True

    def backend(self, name: str) -> Backend | None:
        for b in self.backends:
            if b.name == name:
                return b
        return None


#: Farm-level fields the reconciler manages, in nftlb's key order (see `wire.py`).
FARM_FIELDS: tuple[str, ...] = (
    "mode",
    "scheduler",
    "sched_param",
    "persistence",
    "persist_ttl",
    "helper",
    "log",
    "est_connlimit",
    "intra_connect",
)


def _ip_family(ip: str) -> Family | None:
    info = ip_info(ip)
    if info is None or info.canonical != ip:  # only canonical text: nftlb echoes what it got
        return None
    return Family.of_version(info.version)


def validate_farm(farm: Farm) -> list[str]:
    """Everything that would make nftlb silently drop or corrupt this farm, as messages."""
    errors: list[str] = []
    if not NAME_RE.fullmatch(farm.name):
        errors.append(f"farm name {farm.name!r} is not 1-63 characters of [A-Za-z0-9._-]")
    if len(farm.addresses) != 1:
        errors.append("a farm has exactly one frontend (nftlb 1.0.7 mishandles several addresses)")
    for a in farm.addresses:
        if a.name != f"{farm.name}-addr":
            errors.append(f"address name {a.name!r} is not the farm's own ({farm.name}-addr)")
        if _ip_family(a.ip) is not a.family or a.family is not farm.family:
            errors.append(f"address {a.name}: {a.ip!r} is not a canonical {farm.family} address")
        if not 1 <= a.port <= 65535:
            errors.append(f"address {a.name}: port {a.port} is not in 1-65535")
        if a.protocol is not farm.protocol:
            errors.append(f"address {a.name}: protocol {a.protocol} differs from the farm's")
    if len({a.name for a in farm.addresses}) != len(farm.addresses):
        errors.append("address names are not unique")
    if len({a.tuple_key for a in farm.addresses}) != len(farm.addresses):
        errors.append("two addresses share (protocol, address, port)")
    if len(farm.backends) > MAX_BACKENDS:
        errors.append(f"{len(farm.backends)} backends is more than {MAX_BACKENDS}")
    marks = [b.mark for b in farm.backends if b.mark]
    if len(set(marks)) != len(marks):
        errors.append("backend marks are not unique")
    for b in farm.backends:
        if not OBJECT_NAME_RE.fullmatch(b.name):
            errors.append(f"backend name {b.name!r} is not URL safe")
        if _ip_family(b.ip) is not farm.family:
            errors.append(f"backend {b.name}: {b.ip!r} is not a canonical {farm.family} address")
        if not 1 <= b.port <= 65535:
            errors.append(f"backend {b.name}: port {b.port} is not in 1-65535")
        if not 1 <= b.weight <= 10000:
            errors.append(f"backend {b.name}: weight {b.weight} is not in 1-10000")
        if not 0 <= b.mark <= MAX_MARK:
            errors.append(f"backend {b.name}: mark {b.mark:#x} is not in 0x1-{MAX_MARK:#x}")
    if len({b.name for b in farm.backends}) != len(farm.backends):
        errors.append("backend names are not unique")
    if farm.sched_param != canonical_tokens(farm.sched_param, PACKET_FIELDS):
        errors.append(f"sched-param {farm.sched_param} is not canonical packet fields")
    if farm.scheduler is Scheduler.HASH and not farm.sched_param:
        errors.append("the hash scheduler needs a sched-param")
    if farm.scheduler is not Scheduler.HASH and farm.sched_param:
        errors.append("sched-param is only kept by the hash scheduler")
    if farm.persistence != canonical_tokens(farm.persistence, PACKET_FIELDS):
        errors.append(f"persistence {farm.persistence} is not canonical packet fields")
    if farm.log != canonical_tokens(farm.log, LOG_HOOKS):
        errors.append(f"log {farm.log} is not canonical hooks of {', '.join(LOG_HOOKS)}")
    if not 0 <= farm.persist_ttl <= MAX_PERSIST_TTL:
        errors.append(f"persist-ttl {farm.persist_ttl} is not in 0-{MAX_PERSIST_TTL}")
    if not 0 <= farm.est_connlimit <= 1_000_000:
        errors.append(f"est-connlimit {farm.est_connlimit} is not in 0-1000000")
    if not helper_fits(farm.family, farm.protocol, farm.helper):
        errors.append(f"helper {farm.helper} does not fit {farm.protocol} over {farm.family}")
    if farm.persistence and not persistence_fits(farm.family, farm.persistence):
        errors.append(f"persistence {' '.join(farm.persistence)} makes a key nftlb cannot build")
    if farm.sched_param and not sched_param_fits(farm.family, farm.sched_param):
        errors.append(f"sched-param {' '.join(farm.sched_param)} makes a key nftlb cannot build")
    return errors


def validate_farms(farms: Iterable[Farm]) -> list[str]:
    """`validate_farm` for each, plus what must hold across farms: unique names and tuples."""
    errors: list[str] = []
    names: set[str] = set()
    tuples: dict[tuple[Protocol, str, int], str] = {}
    helpers: dict[tuple[Family, Protocol, Helper], str] = {}
    for farm in farms:
        if farm.helper is not Helper.NONE:
            holder = helpers.setdefault((farm.family, farm.protocol, farm.helper), farm.name)
            if holder != farm.name:
                errors.append(f"{farm.name}: helper {farm.helper} is also used by {holder}")
        errors.extend(f"{farm.name}: {e}" for e in validate_farm(farm))
        if farm.name in names:
            errors.append(f"{farm.name}: the farm name is used twice")
        names.add(farm.name)
        for a in farm.addresses:
            other = tuples.setdefault(a.tuple_key, farm.name)
            if other != farm.name:
                errors.append(f"{farm.name}: {a.protocol} {a.ip}:{a.port} is also used by {other}")
    return errors


def assign_marks(desired: Farm, actual: Farm | None) -> Farm:
    """Give every backend an explicit mark, keeping the marks nftlb already holds.

    Explicit per-farm marks lift nftlb's 4095-backend limit and make adds fast; keeping existing
    marks means a new endpoint is one added backend, not a re-mark of its neighbours. When
    `actual` already holds exactly the desired backends with valid, distinct marks (every resync
    of an unchanged farm), its backends are reused as they are.
    """
    if actual is not None and _same_backends(desired.backends, actual.backends):
        if desired.backends is actual.backends:
            return desired
        return evolve(desired, backends=actual.backends)
    return _mark(desired, actual)


def _mark(desired: Farm, actual: Farm | None) -> Farm:
    """`assign_marks` without its shortcut: keep valid marks of `actual`, number the rest.

    A new backend first takes over a spare (`spares`: the spare is renamed to it and keeps its
    mark, one nftlb batch with no delete), then gets a mark no backend of `actual` holds,
    departing ones included: the plan adds new backends before it retires old ones, and two
    backends of one farm on one mark make nftlb 1.0.7 drop the farm's rules, or its whole
    table (`nftlb-api.md` item 23). Only when no other mark is left (4095 in all) is a
    departing backend's mark reused, and `released_marks` then tells the diff to delete that
    backend first.
    """
    kept: dict[str, int] = {}
    held: set[int] = set()
    if actual is not None:
        for b in actual.backends:
            if 1 <= b.mark <= MAX_MARK and b.mark not in held:
                kept[b.name] = b.mark
            held.add(b.mark)
    wanted = {b.name for b in desired.backends}
    free = iter(spares(desired, actual))
    fresh = (m for m in range(1, MAX_MARK + 1) if m not in held)
    staying = {b.mark for b in actual.backends if b.name in wanted} if actual else set()
    released = iter(
        sorted({b.mark for b in actual.backends if b.name not in wanted} - staying)
        if actual
        else ()
    )

    present = {b.name for b in actual.backends} if actual else set()

    def new_mark(name: str) -> int:
        spare = next(free, None) if name not in present else None
        return spare.mark if spare is not None else next(fresh, 0) or next(released, 0)

    backends = tuple(
        Backend(b.name, b.ip, b.port, b.weight, kept.get(b.name) or new_mark(b.name))
        for b in desired.backends
    )
    return evolve(desired, backends=backends)


def is_spare(backend: Backend) -> bool:
    """A backend nftlb holds but cannot use (read back down, off or broken: `UNUSABLE_PORT`)."""
    return backend.port == UNUSABLE_PORT


def spares(desired: Farm, actual: Farm | None) -> tuple[Backend, ...]:
    """The backends of `actual` that `desired` does not name, that nftlb holds unusable (a
    backend the plan retired: down, out of every map) and whose mark is valid and theirs
    alone: each can become a new backend in place (`takeovers`), sorted by name."""
    if actual is None:
        return ()
    wanted = {b.name for b in desired.backends}
    counts = Counter(b.mark for b in actual.backends)
    return tuple(
        b
        for b in actual.backends
        if b.name not in wanted and is_spare(b) and 1 <= b.mark <= MAX_MARK and counts[b.mark] == 1
    )


def takeovers(desired: Farm, actual: Farm) -> dict[str, str]:
    """New backends of marked `desired` that take over a spare of `actual` (the one whose
    mark `_mark` gave them), as new name -> spare name."""
    by_mark = {b.mark: b.name for b in spares(desired, actual)}
    present = {b.name for b in actual.backends}
    return {
        b.name: by_mark[b.mark]
        for b in desired.backends
        if b.name not in present and b.mark in by_mark
    }


def released_marks(desired: Farm, actual: Farm) -> set[str]:
    """Backends of `actual` that `desired` drops and whose mark a backend `desired` adds or
    changes takes over: each must be deleted before that backend is sent (`_mark` reuses a
    departing mark only when all 4095 are taken). A spare a new backend takes over is not
    one: it becomes that backend (`takeovers`)."""
    wanted = {b.name: b for b in desired.backends}
    have = {b.name: b for b in actual.backends}
    sent = {b.mark for b in desired.backends if have.get(b.name) != b}
    taken = set(takeovers(desired, actual).values())
    return {
        b.name
        for b in actual.backends
        if b.name not in wanted and b.mark in sent and b.name not in taken
    }


def _same_backends(desired: tuple[Backend, ...], actual: tuple[Backend, ...]) -> bool:
    """Whether `actual` (sorted by name, as a Farm keeps them) holds the desired backends with
    valid, distinct marks, so that marking would give back exactly `actual`."""
    if len(desired) != len(actual):
        return False
    marks = set()
    for d, a in zip(desired, actual, strict=True):
        if (d.name, d.ip, d.port, d.weight) != (a.name, a.ip, a.port, a.weight):
            return False
        if not 1 <= a.mark <= MAX_MARK:
            return False
        marks.add(a.mark)
    return len(marks) == len(actual)
