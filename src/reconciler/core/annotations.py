"""Service annotations that tune a Service's farms, validated into `FarmOptions`.

nftlb replaces unknown values with defaults silently and one bad farm can break the others, so
every value is checked here: a bad one falls back to the default for that field and becomes a
Problem that names the key, the value and the allowed values (the shell turns it into a Warning
Event). Only keys with `ANNOTATION_PREFIX` count; the original's bare keys (`mode`, `log`, ...)
are not honoured, since they collide with everybody else's annotations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from attrs import frozen

from reconciler.core.farms import (
    DEFAULT_AFFINITY_TIMEOUT,
    DEFAULT_PERSIST_TTL,
    LOG_HOOKS,
    MAX_PERSIST_TTL,
    PACKET_FIELDS,
    Helper,
    Mode,
    Scheduler,
    canonical_tokens,
)
from reconciler.core.kube import Service
from reconciler.core.problems import ObjectRef, Problem

ANNOTATION_PREFIX = "service.kubernetes.io/kube-nftlb-load-balancer-"

MODE = ANNOTATION_PREFIX + "mode"
SCHEDULER = ANNOTATION_PREFIX + "scheduler"
SCHED_PARAM = ANNOTATION_PREFIX + "sched-param"
PERSISTENCE = ANNOTATION_PREFIX + "persistence"
HELPER = ANNOTATION_PREFIX + "helper"
LOG = ANNOTATION_PREFIX + "log"
EST_CONNLIMIT = ANNOTATION_PREFIX + "est-connlimit"

MAX_EST_CONNLIMIT = 1_000_000
#: The packet fields the hash scheduler uses when no sched-param is given.
DEFAULT_SCHED_PARAM: tuple[str, ...] = ("srcip",)

#: nftlb modes a Service cannot use, and why (said in the problem).
REFUSED_MODES: Mapping[str, str] = MappingProxyType(
    {
        "dsr": "dsr needs the interface and MAC address of every backend, which a Service "
        "does not carry",
        "stlsdnat": "stlsdnat needs the interface and MAC address of every backend, which a "
        "Service does not carry",
        "local": "local is for services on the node itself and takes no backends",
    }
)

_MODES: tuple[str, ...] = tuple(m.value for m in Mode)
_SCHEDULERS: tuple[str, ...] = tuple(s.value for s in Scheduler)
_HELPERS: tuple[str, ...] = tuple(h.value for h in Helper)
_SEPARATORS = re.compile(r"[\s,]+")
_DIGITS = re.compile(r"[0-9]+")
_MAX_SHOWN = 100


@frozen
class AnnotationSpec:
    """One annotation, for validation messages and generated documentation.

    `allowed` is None for free-form values (est-connlimit); `default` is the value in effect
    when the annotation is absent.
    """

    key: str
    allowed: tuple[str, ...] | None
    default: str
    doc: str

    @property
    def suffix(self) -> str:
        return self.key.removeprefix(ANNOTATION_PREFIX)


_SPECS = (
    AnnotationSpec(
        MODE,
        _MODES,
        Mode.DNAT.value,
        "How traffic reaches the backends: dnat (destination NAT; kube-nftlb's node rules "
        "masquerade exactly where kube-proxy does, so pods keep their source address) or snat "
        "(nftlb masquerades every connection to the node's address, as before). dsr, stlsdnat "
        "and local are refused: they need interfaces and MAC addresses a Service does not "
        "carry.",
    ),
    AnnotationSpec(
        SCHEDULER,
        _SCHEDULERS,
        Scheduler.RR.value,
        "How a backend is chosen for a new connection: rr (round robin), weight (weighted "
        "random), hash (a hash of the sched-param packet fields) or symhash (a symmetric hash "
        "of source and destination).",
    ),
    AnnotationSpec(
        SCHED_PARAM,
        PACKET_FIELDS,
        " ".join(DEFAULT_SCHED_PARAM),
        "The packet fields the hash scheduler hashes, separated by spaces or commas. Only "
        "meaningful with scheduler hash; ignored (with a warning) otherwise.",
    ),
    AnnotationSpec(
        PERSISTENCE,
        ("none", *PACKET_FIELDS),
        "none",
        "The packet fields that pin a client to a backend, separated by spaces or commas, or "
        "none. Overrides the srcip persistence of sessionAffinity ClientIP, whose timeoutSeconds "
        "still sets the timeout.",
    ),
    AnnotationSpec(
        HELPER,
        _HELPERS,
        Helper.NONE.value,
        "A conntrack helper for protocols that open extra connections. It must fit the port's "
        "protocol (ftp, pptp, sip for TCP; tftp, snmp, sip for UDP); a port where it does not "
        "fit gets none.",
    ),
    AnnotationSpec(
        LOG,
        ("none", *LOG_HOOKS),
        "none",
        "The netfilter hooks where new connections are logged, separated by spaces or commas, "
        "or none. nftlb's forward hook is refused: in nftlb 1.0.7 forward-logging farms "
        "collide on their backend marks and silently get no rules.",
    ),
    AnnotationSpec(
        EST_CONNLIMIT,
        None,
        "0",
        f"The most established connections per farm, an integer 0-{MAX_EST_CONNLIMIT}; 0 means "
        "no limit.",
    ),
)

#: Every annotation this project reads, by full key, in documentation order.
ANNOTATIONS: Mapping[str, AnnotationSpec] = MappingProxyType({s.key: s for s in _SPECS})


@frozen
class FarmOptions:
    """The farm-level settings a Service asks for; token tuples are in canonical order.

    `mode_set` tells whether an annotation chose the mode, so that callers may pick another
    default (e.g. for traffic that must keep its source address) only when nobody asked.
    """

    mode: Mode = Mode.DNAT
    mode_set: bool = False
    scheduler: Scheduler = Scheduler.RR
    sched_param: tuple[str, ...] = ()
    persistence: tuple[str, ...] = ()
    persist_ttl: int = DEFAULT_PERSIST_TTL
    helper: Helper = Helper.NONE
    log: tuple[str, ...] = ()
    est_connlimit: int = 0


def _show(value: str) -> str:
    return value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 1] + "…"


class _Checker:
    """Collects the problems of one Service's annotations."""

    def __init__(self, service: Service) -> None:
        self.ref = ObjectRef("Service", service.namespace, service.name)
        self.problems: list[Problem] = []

    def invalid(
        self, key: str, raw: str, allowed: tuple[str, ...], why: str, fallback: str
    ) -> None:
        self.problems.append(
            Problem(
                self.ref,
                "InvalidAnnotation",
                f"annotation {key}={_show(raw)!r} {why}; using {fallback}",
                key=key,
                value=_show(raw),
                allowed=allowed,
            )
        )

    def choice(self, key: str, raw: str, allowed: tuple[str, ...], fallback: str) -> str | None:
        """The normalised value when allowed; None (with a problem) otherwise."""
        value = raw.strip().lower()
        if value in allowed:
            return value
        self.invalid(key, raw, allowed, f"is not one of {', '.join(allowed)}", fallback)
        return None

    def tokens(
        self, key: str, raw: str, allowed: tuple[str, ...], none_ok: bool, fallback: str
    ) -> tuple[str, ...] | None:
        """A canonical subset of `allowed` ("none" alone is the empty set when `none_ok`)."""
        words = [w for w in _SEPARATORS.split(raw.strip().lower()) if w]
        if none_ok and words == ["none"]:
            return ()
        if words and all(w in allowed for w in words):
            return canonical_tokens(words, allowed)
        shown = ("none", *allowed) if none_ok else allowed
        why = f"is not {'none or ' if none_ok else ''}a set of {', '.join(allowed)}"
        self.invalid(key, raw, shown, why, fallback)
        return None


def _text(tokens: tuple[str, ...]) -> str:
    return " ".join(tokens) if tokens else "none"


def farm_options(service: Service) -> tuple[FarmOptions, list[Problem]]:
    """The Service's farm options and a problem for every value that had to be replaced."""
    check = _Checker(service)
    given: dict[str, str] = {}
    for key, text in service.annotations:
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        if key in ANNOTATIONS:
            given[key] = text
            continue
        known = tuple(ANNOTATIONS)
        check.problems.append(
            Problem(
                check.ref,
                "UnknownAnnotation",
                f"annotation {key} is not known; ignored. Known: {', '.join(known)}",
                key=key,
                value=_show(text),
                allowed=known,
            )
        )

    mode, mode_set = Mode.DNAT, False
    if (raw := given.get(MODE)) is not None:
        value = raw.strip().lower()
        if value in REFUSED_MODES:
            check.invalid(MODE, raw, _MODES, f"is refused: {REFUSED_MODES[value]}", mode)
        elif (chosen := check.choice(MODE, raw, _MODES, mode)) is not None:
            mode, mode_set = Mode(chosen), True

    scheduler = Scheduler.RR
    if (raw := given.get(SCHEDULER)) is not None and (
        chosen := check.choice(SCHEDULER, raw, _SCHEDULERS, scheduler)
    ) is not None:
        scheduler = Scheduler(chosen)

    sched_param: tuple[str, ...] = ()
    raw = given.get(SCHED_PARAM)
    if scheduler is Scheduler.HASH:
        sched_param = DEFAULT_SCHED_PARAM
        if raw is not None:
            fallback = _text(DEFAULT_SCHED_PARAM)
            parsed = check.tokens(SCHED_PARAM, raw, PACKET_FIELDS, False, fallback)
            sched_param = DEFAULT_SCHED_PARAM if parsed is None else parsed
    elif raw is not None:
        check.invalid(
            SCHED_PARAM,
            raw,
            (),
            f"is only meaningful with scheduler hash, not {scheduler}",
            "none",
        )

    persistence: tuple[str, ...] = ()
    persist_ttl = DEFAULT_PERSIST_TTL
    if service.session_affinity == "ClientIP":
        persistence = ("srcip",)
        persist_ttl = _affinity_ttl(service, check)
    if (raw := given.get(PERSISTENCE)) is not None:
        parsed = check.tokens(PERSISTENCE, raw, PACKET_FIELDS, True, _text(persistence))
        if parsed is not None:
            persistence = parsed

    helper = Helper.NONE
    if (raw := given.get(HELPER)) is not None and (
        chosen := check.choice(HELPER, raw, _HELPERS, helper)
    ) is not None:
        helper = Helper(chosen)

    log: tuple[str, ...] = ()
    if (raw := given.get(LOG)) is not None:
        log = check.tokens(LOG, raw, LOG_HOOKS, True, "none") or ()

    est_connlimit = 0
    if (raw := given.get(EST_CONNLIMIT)) is not None:
        value = raw.strip()
        # Length first: int() of a huge digit string is slow and, past 4300 digits, refused.
        digits = value.lstrip("0") or "0"
        if _DIGITS.fullmatch(value) and len(digits) <= 7 and int(digits) <= MAX_EST_CONNLIMIT:
            est_connlimit = int(digits)
        else:
            check.invalid(
                EST_CONNLIMIT,
                raw,
                (f"0-{MAX_EST_CONNLIMIT}",),
                f"is not an integer in 0-{MAX_EST_CONNLIMIT}",
                "0",
            )

    options = FarmOptions(
        mode=mode,
        mode_set=mode_set,
        scheduler=scheduler,
        sched_param=sched_param,
        persistence=persistence,
        persist_ttl=persist_ttl,
        helper=helper,
        log=log,
        est_connlimit=est_connlimit,
    )
    return options, check.problems


def _affinity_ttl(service: Service, check: _Checker) -> int:
    """sessionAffinityConfig's timeoutSeconds, read as decimal (the original used base 32)."""
    timeout = service.affinity_timeout
    if timeout is None:
        return DEFAULT_AFFINITY_TIMEOUT
    if 1 <= timeout <= MAX_PERSIST_TTL:
        return timeout
    path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    check.problems.append(
        Problem(
            check.ref,
            "InvalidSessionAffinity",
            f"{path} {timeout} is not in 1-{MAX_PERSIST_TTL}; using {DEFAULT_AFFINITY_TIMEOUT}",
            key=path,
            value=str(timeout),
            allowed=(f"1-{MAX_PERSIST_TTL}",),
        )
    )
    return DEFAULT_AFFINITY_TIMEOUT
