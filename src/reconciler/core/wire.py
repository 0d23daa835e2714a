"""The nftlb 1.0.7 JSON wire format: request bodies, safe URLs, and read-back normalisation.

Pure: no I/O. Everything here exists because nftlb accepts bad input silently
(`nftlb-api.md` section 0):

* Key order is semantics. nftlb applies keys one by one in document order, ``name`` must come
  first, a backend's ``ip-addr`` before its ``state``, ``sched-param`` after ``scheduler``, and the
  addresses before ``helper`` (the helper is validated against the protocol of the farm's
  addresses; checked on the real daemon: ftp on tcp and tftp on udp both work in this order).
* Every value is a JSON string; numbers and booleans would be ignored without an error.
* A farm's one frontend is sent as its own ``family``, ``virtual-addr``, ``virtual-ports`` and
  ``protocol`` (nftlb's address ``<farm>-addr``), in that order: ``family`` or ``protocol``
  without a ``virtual-addr`` makes nftlb create that address with an empty IP, whose nft batch
  fails and poisons every farm; and farms with several address objects break on farm-level
  changes and deletes in nftlb 1.0.7, so there is only ever one.
* A URL never has an empty or unchecked segment: ``DELETE /farms/`` deletes every farm.

Read-back (`parse_farm`) undoes nftlb's echo quirks so that ``parse_farm(echo(farm_body(f))) == f``:
trailing spaces in ``sched-param``/``persistence``/``log``, ``"none"`` for empty token sets,
the implicit ``<farm>-addr`` address object, ``intra-connect`` shown only when on, and
server-side fields the reconciler never sets (priority, verdict, limits, farm mark, ...).

A backend nftlb cannot use (state ``config_error``, ``down`` or ``off``, no ``ip-addr``, or a
field that does not parse) is read with port `UNUSABLE_PORT` (0). Desired backends always have a
port in 1-65535, so the diff sees a changed backend and re-posts it whole, with ``state`` after
``ip-addr``, which repairs it. Its real mark is kept so that re-posting does not re-mark it.
A farm that cannot be represented at all (a mode, scheduler or helper the model does not know, a
farm state other than ``up``, a non-ipv4/ipv6 or non-tcp/udp/sctp address, duplicated names) is
reported as unparsable, for the diff to replace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from attrs import frozen

from reconciler.core.farms import (
    FARM_FIELDS,
    NAME_RE,
    NFTLB_LOG_HOOKS,
    OBJECT_NAME_RE,
    PACKET_FIELDS,
    UNUSABLE_PORT,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    canonical_tokens,
)
from reconciler.core.farms_stream import farm_entries
from reconciler.core.names import is_owned
from reconciler.core.ownership import (
    LOG_PREFIX_KEY,
    OWNER_LOG_PREFIX,
    ForeignFarm,
    foreign_farm,
    is_marked,
)
from reconciler.core.plan import Operation, OpKind

#: A JSON object as sent to or read from nftlb.
JSONObject = dict[str, Any]

#: nftlb reads at most 199 characters of the request target (`nftlb-api.md` section 2).
MAX_URI = 199

#: Farm attribute name → nftlb key, in the order nftlb must receive them.
FIELD_KEYS: dict[str, str] = {
    "mode": "mode",
    "scheduler": "scheduler",
    "sched_param": "sched-param",
    "persistence": "persistence",
    "persist_ttl": "persist-ttl",
    "helper": "helper",
    "log": "log",
    "est_connlimit": "est-connlimit",
    "intra_connect": "intra-connect",
}
assert tuple(FIELD_KEYS) == FARM_FIELDS, "wire.FIELD_KEYS must follow farms.FARM_FIELDS"

_INT_RE = re.compile(r"(0|[1-9][0-9]*)")
_HEX_RE = re.compile(r"0x[0-9a-f]+")


# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------


def _tokens(tokens: tuple[str, ...]) -> str:
    return " ".join(tokens) if tokens else "none"


def field_value(farm: Farm, field_name: str) -> str:
    """One farm-level field as nftlb wants it: always a string."""
    value = getattr(farm, field_name)
    if field_name == "intra_connect":
        return "on" if value else "off"
    if isinstance(value, tuple):
        return _tokens(value)
    if isinstance(value, int):
        return str(value)
    return str(value.value)


def backend_body(backend: Backend, *, takes_over: str | None = None) -> JSONObject:
    """A whole backend, ``state`` last so that nftlb already knows its IP (else config_error).

    A mark of 0 means "not assigned" and is left out, so nftlb picks one; the reconciler
    assigns marks itself (`farms.assign_marks`) before anything is sent. `takes_over` names
    a spare (a down backend) that becomes this backend: renamed (``newname``) and changed in
    place, which nftlb 1.0.7 does without an nft call while it is down; the ``state`` then
    reloads the farm once with the request's other changes.
    """
    body: JSONObject = {"name": takes_over} if takes_over else {}
    body.update(
        {
            "name" if takes_over is None else "newname": backend.name,
            "ip-addr": backend.ip,
            "port": str(backend.port),
            "weight": str(backend.weight),
        }
    )
    if backend.mark:
        body["mark"] = f"{backend.mark:#x}"
    body["state"] = "up"
    return body


def retire_body(backend: Backend) -> JSONObject:
    """A backend set down: out of the scheduler and DNAT maps at once, and kept as a spare.

    The whole backend is sent as nftlb holds it: for a backend nftlb no longer has, a bare
    ``{"name", "state": "down"}`` creates one without address or port, which strips the port
    from the whole farm's DNAT map (found on the daemon); unchanged fields cost nothing.
    """
    body = backend_body(backend)
    body["state"] = "down"
    return body


def _frontend(body: JSONObject, farm: Farm) -> None:
    (address,) = farm.addresses
    body["family"] = address.family.value
    body["virtual-addr"] = address.ip
    body["virtual-ports"] = str(address.port)
    body["protocol"] = address.protocol.value


def farm_body(farm: Farm) -> JSONObject:
    """The whole farm, in the key order nftlb applies correctly."""
    body: JSONObject = {"name": farm.name}
    _frontend(body, farm)
    for field_name, key in FIELD_KEYS.items():
        body[key] = field_value(farm, field_name)
    body[LOG_PREFIX_KEY] = OWNER_LOG_PREFIX  # the ownership marker (`ownership.py`)
    body["state"] = "up"
    body["backends"] = [backend_body(b) for b in farm.backends]
    return body


def farms_document(farms: Iterable[Farm]) -> JSONObject:
    """What one POST /farms carries, and what `kube-nftlb render` prints."""
    return {"farms": [farm_body(f) for f in farms]}


def update_body(farm: Farm, fields: Iterable[str]) -> JSONObject:
    """``name`` plus only the given farm fields, in nftlb's order.

    ``sched-param`` always travels with ``scheduler``: nftlb resets it whenever the scheduler
    changes (to ``srcip`` for hash, ``none`` otherwise), so it must follow and restate it.
    """
    wanted = set(fields)
    unknown = wanted - set(FIELD_KEYS) - {"addresses"}
    if unknown:
        raise ValueError(f"not farm fields: {sorted(unknown)}")
    if "scheduler" in wanted:
        wanted.add("sched_param")
    body: JSONObject = {"name": farm.name}
    if "addresses" in wanted:
        _frontend(body, farm)
    for field_name, key in FIELD_KEYS.items():
        if field_name in wanted:
            body[key] = field_value(farm, field_name)
    body[LOG_PREFIX_KEY] = OWNER_LOG_PREFIX  # see `marked_body`
    return body


def marked_body(name: str) -> JSONObject:
    """``name`` and the ownership marker: the head of every farm POST that is not a whole farm.

    A POST for a farm nftlb does not hold creates it (after an nftlb restart the reconciler
    may still think it is there); with the marker, the next full sync knows it for its own
    and repairs it. Re-sending the unchanged marker costs nothing (no nft call; checked).
    """
    return {"name": name, LOG_PREFIX_KEY: OWNER_LOG_PREFIX}


# --------------------------------------------------------------------------------------------
# Requests and URLs
# --------------------------------------------------------------------------------------------


def safe_path(*segments: str) -> str:
    """``/seg1/seg2/...``, refusing anything nftlb would misread.

    An empty segment makes nftlb's path parser stop early, so ``DELETE /farms/`` or
    ``/farms//backends/x`` delete every farm; nftlb does not percent-decode, and reads at most
    199 characters. Each segment must therefore be a safe name (`farms.OBJECT_NAME_RE`).
    """
    if not segments:
        raise ValueError("a path needs at least one segment")
    for segment in segments:
        if not segment or not OBJECT_NAME_RE.fullmatch(segment):
            raise ValueError(f"unsafe URL segment {segment!r}")
    path = "/" + "/".join(segments)
    if len(path) > MAX_URI:
        raise ValueError(f"URL of {len(path)} characters is longer than nftlb's {MAX_URI}")
    return path


def farm_path(farm_name: str, *rest: str) -> str:
    """A path under ``/farms/<farm>``; the farm name must also be nft safe (`farms.NAME_RE`)."""
    if not NAME_RE.fullmatch(farm_name):
        raise ValueError(f"unsafe farm name {farm_name!r}")
    return safe_path("farms", farm_name, *rest)


FARMS_PATH = "/farms"


@frozen
class Request:
    """One HTTP request to nftlb; `body` is JSON (sent with its key order), or None."""

    method: str
    path: str
    body: JSONObject | None = None

    @property
    def farm_names(self) -> tuple[str, ...]:
        if not self.body:
            return ()
        return tuple(str(f.get("name", "")) for f in self.body.get("farms", ()))

    @property
    def replayable(self) -> bool:
        """Whether sending it again after nftlb may have carried it out does no harm. A
        takeover (``newname``) does harm: the second finds no backend under the spare's name,
        creates one and renames it too, two backends on one name and mark, and nftlb 1.0.7
        drops the farm's rules (found by the prefix property, with the answer lost)."""
        return not any(
            "newname" in b
            for f in (self.body or {}).get("farms", ())
            for b in f.get("backends", ())
        )

    @property
    def summary(self) -> str:
        """For error messages and logs: method, path and which farms, never the body."""
        names = self.farm_names
        if not names:
            return f"{self.method} {self.path}"
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} farms)" if len(names) > 3 else "")
        return f"{self.method} {self.path} [{shown}]"


def post_farms_request(bodies: Sequence[JSONObject]) -> Request:
    for body in bodies:
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or next(iter(body)) != "name":
            raise ValueError(f"farm body without a safe leading name: {name!r}")
    return Request("POST", FARMS_PATH, {"farms": list(bodies)})


_UNSHARED = {"helper": "none", "state": "up"}


def _state_request(name: str, state: str) -> Request:
    return post_farms_request([{**marked_body(name), "state": state}])


def requests_for(op: Operation) -> list[Request]:
    """The requests that carry out one plan operation (a whole CREATE_FARM is one POST)."""
    kind = op.kind
    stop = [_state_request(op.farm_name, "off")] if op.stop_first else []
    if kind is OpKind.DELETE_FARM:
        if stop:  # drop the helper while off and start it again, then delete it unshared
            stop.append(post_farms_request([{**marked_body(op.farm_name), **_UNSHARED}]))
        return [*stop, Request("DELETE", farm_path(op.farm_name))]
    if kind is OpKind.DELETE_BACKEND:
        return [Request("DELETE", farm_path(op.farm_name, "backends", op.target))]
    if kind is OpKind.CREATE_FARM:
        if op.farm is None:
            raise ValueError(f"{kind} {op.farm_name} carries no farm")
        return [post_farms_request([farm_body(op.farm)])]
    if kind is OpKind.UPDATE_FARM:
        if op.farm is None:
            raise ValueError(f"{kind} {op.farm_name} carries no farm")
        if not op.fields:
            return []
        body = update_body(op.farm, op.fields)
        if op.stop_first:
            body["state"] = "up"  # on again, after the fields
        return [*stop, post_farms_request([body])]
    if kind is OpKind.UPSERT_BACKENDS:
        if not op.backends:
            return []
        spare_of = dict(op.renames)
        body = marked_body(op.farm_name)
        body["backends"] = [backend_body(b, takes_over=spare_of.get(b.name)) for b in op.backends]
        return [post_farms_request([body])]
    if kind is OpKind.RETIRE_BACKENDS:
        if not op.backends:
            return []
        body = marked_body(op.farm_name)
        body["backends"] = [retire_body(b) for b in op.backends]
        return [post_farms_request([body])]
    raise ValueError(f"unknown operation kind {kind!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Read-back
# --------------------------------------------------------------------------------------------


@frozen
class ReadBack:
    """``GET /farms`` sorted out: owned farms as models, and the names of everything else.

    `foreign` farms are never touched: every farm without kube-nftlb's marker is one, even
    under a name of ours (`ownership.py`); `foreign_farms` says what each matches, for the
    conflicts with desired farms. `unparsable` are owned farms the model cannot represent; the
    diff should replace them.
    """

    owned: tuple[Farm, ...] = ()
    foreign: tuple[str, ...] = ()
    unparsable: tuple[str, ...] = ()
    foreign_farms: tuple[ForeignFarm, ...] = ()

    @property
    def unmarked(self) -> tuple[str, ...]:
        """Foreign farms under names of ours: an older kube-nftlb's, or look-alikes."""
        return tuple(n for n in self.foreign if is_owned(n))

    def by_name(self) -> dict[str, Farm]:
        return {f.name: f for f in self.owned}


class _Unparsable(Exception):
    """A farm the model cannot represent."""


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _Unparsable(f"{key} is {value!r}")
    return value


def _int_or(text: object, fallback: int) -> int:
    if isinstance(text, str) and _INT_RE.fullmatch(text):
        return int(text)
    return fallback


def _read_tokens(text: str, order: Sequence[str]) -> tuple[str, ...]:
    words = text.split()
    if words == ["none"] or not words:
        return ()
    if any(w not in order for w in words):
        raise _Unparsable(f"unknown tokens in {text!r}")
    return canonical_tokens(words, order)


_E = TypeVar("_E", Mode, Scheduler, Helper, Family, Protocol)


def _enum(cls: type[_E], text: str) -> _E:
    try:
        return cls(text)
    except ValueError:
        raise _Unparsable(f"{cls.__name__} {text!r}") from None


def _parse_backend(obj: Mapping[str, Any]) -> Backend:
    name = _str(obj, "name")
    ip = obj.get("ip-addr")
    port = _int_or(obj.get("port"), UNUSABLE_PORT)
    weight = _int_or(obj.get("weight"), 0)
    mark_text = obj.get("mark")
    mark = int(mark_text, 16) if isinstance(mark_text, str) and _HEX_RE.fullmatch(mark_text) else 0
    usable = (
        obj.get("state") in ("up", "available")
        and isinstance(ip, str)
        and ip != ""
        and port != UNUSABLE_PORT
        and weight >= 1
        and mark != 0
    )
    return Backend(
        name=name,
        ip=ip if isinstance(ip, str) else "",
        port=port if usable else UNUSABLE_PORT,
        weight=max(weight, 1),
        mark=mark,
    )


def _parse_frontend(name: str, obj: Mapping[str, Any]) -> Address:
    """The farm's own virtual address; a farm with any other address object is not ours to read
    (nftlb mishandles those), so it is reported unparsable and replaced."""
    raw = obj.get("addresses", [])
    if not isinstance(raw, list) or any(
        not isinstance(a, Mapping) or a.get("name") != f"{name}-addr" for a in raw
    ):
        raise _Unparsable("address objects other than the farm's own")
    ip = _str(obj, "virtual-addr", "")
    port = _int_or(obj.get("virtual-ports"), UNUSABLE_PORT)
    if not ip or port == UNUSABLE_PORT:
        raise _Unparsable("no virtual address or port")
    family = _enum(Family, _str(obj, "family"))
    return Address(f"{name}-addr", family, ip, port, _enum(Protocol, _str(obj, "protocol")))


def _parse_farm(obj: Mapping[str, Any]) -> Farm:
    name = _str(obj, "name")
    if _str(obj, "state", "up") != "up":
        raise _Unparsable(f"farm state {obj.get('state')!r}")
    address = _parse_frontend(name, obj)
    raw_backends = obj.get("backends", [])
    if not isinstance(raw_backends, list):
        raise _Unparsable("backends is not a list")
    backends = []
    for b in raw_backends:
        if not isinstance(b, Mapping):
            raise _Unparsable("a backend is not an object")
        backends.append(_parse_backend(b))
    if len({b.name for b in backends}) != len(backends):
        raise _Unparsable("duplicated backend names")
    family, protocol, addresses = address.family, address.protocol, (address,)
    return Farm(
        name=name,
        family=family,
        protocol=protocol,
        addresses=tuple(addresses),
        backends=tuple(backends),
        mode=_enum(Mode, _str(obj, "mode", "snat")),
        scheduler=_enum(Scheduler, _str(obj, "scheduler", "rr")),
        sched_param=_read_tokens(_str(obj, "sched-param", "none"), PACKET_FIELDS),
        persistence=_read_tokens(_str(obj, "persistence", "none"), PACKET_FIELDS),
        persist_ttl=_int_or(obj.get("persist-ttl"), -1),
        helper=_enum(Helper, _str(obj, "helper", "none")),
        log=_read_tokens(_str(obj, "log", "none"), NFTLB_LOG_HOOKS),
        est_connlimit=_int_or(obj.get("est-connlimit"), -1),
        intra_connect=obj.get("intra-connect") == "on",
    )


def parse_farm(obj: Mapping[str, Any]) -> Farm | None:
    """One entry of ``GET /farms`` as a Farm, or None when the model cannot represent it.

    A farm-level integer that does not parse reads as -1, never a valid desired value, so the
    diff updates it.
    """
    try:
        return _parse_farm(obj)
    except _Unparsable:
        return None


def parse_farms(doc: object) -> ReadBack:
    """A whole ``GET /farms`` document; raises ValueError when it is not nftlb's shape."""
    return read_back(farm_entries(doc))


def read_back(entries: Iterable[object]) -> ReadBack:
    """The entries of a ``GET /farms`` farms list, taken one at a time (so that a stream of them,
    see `farms_stream`, never needs to be held whole); raises ValueError for an entry that is not
    a named object."""
    owned: list[Farm] = []
    foreign: list[ForeignFarm] = []
    unparsable: list[str] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"GET /farms returned a farm without a name: {entry!r:.100}")
        name: str = entry["name"]
        if not (is_owned(name) and is_marked(entry)):
            foreign.append(foreign_farm(entry))
            continue
        farm = parse_farm(entry)
        if farm is None:
            unparsable.append(name)
        else:
            owned.append(farm)
    owned.sort(key=lambda f: f.name)
    foreign.sort()
    return ReadBack(
        tuple(owned),
        tuple(f.name for f in foreign),
        tuple(sorted(unparsable)),
        tuple(foreign),
    )
