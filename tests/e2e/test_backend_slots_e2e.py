"""Backend slots against the real nftlb 1.0.7: retire (state down), take over, and clean up.

Deleting an up backend costs nftlb two nft batches; the slot plan (issue 11) instead retires a
departing backend (re-posted whole with ``"state": "down"``: out of the scheduler and DNAT maps,
kept in nftlb as a spare) and lets a new endpoint take a spare over (``newname``, its new
ip/port/weight, the spare's own mark, ``"state": "up"``), one batch per farm object. Spares are
deleted later (``DELETE /farms/<farm>/backends/<spare>``). For each farm shape (both families,
rr/weight/hash, persistence, a ct helper, dnat, udp), next to three bystander farms (one IPv4,
two IPv6, so the IPv6 wipe of nftlb 1.0.7 would show), this file checks after every request:

* the kernel (`nft -j list ruleset`, canonicalised) equals what the plain plan (add, then
  DELETE each departing backend) leaves for the same usable backends: exactly after retires,
  and up to the order of the scheduler map's slots after a take-over (the taken-over backend
  keeps the spare's place in nftlb's list, where the plain plan appends it); the bystanders'
  objects never change, and every farm's frontends and DNAT maps are exactly the wanted ones;
* GET lists the retired backends ``down`` with their own ip, port, weight and mark;
* the in-memory `NftlbModel` answers and reads back the same, and its `dark_farms` is empty
  exactly when the kernel sends every farm's frontend to its chains.

It also pins what the slot plan must avoid, each with the model held to the daemon: a bare
``{"name": ..., "state": "down"}`` for a backend nftlb does not hold (creates one without ip
or port: the farm DNATs without ports at once, `nftlb-api.md` item 12); a take-over onto a
mark another usable backend holds (item 23: the farm goes dark); a take-over sent twice (a
twin backend with the same name, mark and target: no farm dark, but the scheduler counts it
twice); and a new backend on the mark of an ``off`` one (``off`` keeps its DNAT entry).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from attrs import evolve

from reconciler.core.farms import (
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    validate_farms,
)
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.nftlb_ruleset import (
    dnat_entries,
    expected_dnat_entries,
    expected_service_elements,
    service_elements,
)
from reconciler.core.wire import (
    FARMS_PATH,
    JSONObject,
    Request,
    backend_body,
    farm_body,
    farm_path,
    marked_body,
)
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

V4, V6, TCP, UDP = Family.IPV4, Family.IPV6, Protocol.TCP, Protocol.UDP
SUBJECT = "subj"


def vip(family: Family, n: int) -> str:
    return f"10.96.0.{n}" if family is V4 else f"fd00::{n:x}"


def endpoint(family: Family, n: int) -> str:
    return f"10.1.0.{n}" if family is V4 else f"fd01::{n:x}"


def backend(family: Family, n: int, mark: int, *, port: int = 8080, weight: int = 1) -> Backend:
    ip = endpoint(family, n)
    return Backend(backend_name(ip, port), ip, port, weight, mark)


def make_farm(
    service: str,
    family: Family,
    protocol: Protocol,
    vip_n: int,
    backends: Iterable[Backend],
    **fields: Any,
) -> Farm:
    name = farm_name(FarmKey("slots", service, "p", protocol, family))
    address = Address(address_name(name), family, vip(family, vip_n), 80, protocol)
    return Farm(name, family, protocol, (address,), tuple(backends), **fields)


def subject(family: Family, protocol: Protocol = TCP, **fields: Any) -> Farm:
    """The farm under test: four backends, marks 1-4, weights 1-4 (the weight and hash
    schedulers use them)."""
    backends = [backend(family, 10 + i, i, weight=i) for i in range(1, 5)]
    return make_farm(SUBJECT, family, protocol, 10, backends, **fields)


#: The farm shapes: between them both families, the rr, weight and hash (srcip) schedulers,
#: srcip persistence, the ftp ct helper, snat and dnat, tcp and udp.
SHAPES: dict[str, Farm] = {
    "v4-tcp-rr": subject(V4),
    "v6-tcp-rr-ftp": subject(V6, helper=Helper.FTP),
    "v4-tcp-weight-persistence": subject(
        V4, scheduler=Scheduler.WEIGHT, persistence=("srcip",), persist_ttl=300
    ),
    "v6-udp-hash-srcip": subject(V6, UDP, scheduler=Scheduler.HASH, sched_param=("srcip",)),
    "v4-udp-dnat-hash-srcip": subject(
        V4, UDP, mode=Mode.DNAT, scheduler=Scheduler.HASH, sched_param=("srcip",)
    ),
    "v4-tcp-dnat-ftp": subject(V4, mode=Mode.DNAT, helper=Helper.FTP),
    "v6-tcp-dnat-weight-persistence": subject(
        V6, mode=Mode.DNAT, scheduler=Scheduler.WEIGHT, persistence=("srcip",)
    ),
}


def bystanders() -> list[Farm]:
    """Farms the subject's requests must never touch: one IPv4, two IPv6 (one created before
    the subject, one after), with per-farm marks that overlap the subject's, as the
    reconciler assigns them."""
    return [
        make_farm("alpha", V4, TCP, 20, [backend(V4, 1, 1), backend(V4, 2, 2)]),
        make_farm("beta", V6, TCP, 21, [backend(V6, 1, 1), backend(V6, 2, 2, weight=3)]),
        make_farm(
            "gamma", V6, UDP, 22, [backend(V6, 3, 1)], mode=Mode.DNAT, persistence=("srcip",)
        ),
    ]


# -- request bodies (what the slot plan sends) --------------------------------------------------


def retire_body(b: Backend) -> JSONObject:
    """The whole backend with its own values, ``state`` down (last, after ``ip-addr``)."""
    return backend_body(b) | {"state": "down"}


def take_over_body(spare: Backend, new: Backend) -> JSONObject:
    """The spare renamed to `new`, with `new`'s ip/port/weight and the spare's own mark."""
    body = backend_body(evolve(new, mark=spare.mark))
    del body["name"]
    return {"name": spare.name, "newname": new.name, **body}


def farm_post(farm: Farm, *backends: JSONObject) -> Request:
    return Request(
        "POST", FARMS_PATH, {"farms": [{**marked_body(farm.name), "backends": [*backends]}]}
    )


def delete_backend(farm: Farm, b: Backend) -> Request:
    return Request("DELETE", farm_path(farm.name, "backends", b.name))


# -- the kernel, canonicalised ----------------------------------------------------------------

Canonical = dict[str, Any]


def _sorted_sets(value: Any, key: str = "") -> Any:
    """Without handles, and anonymous sets (``set``: a map's entries, a set's members) in a
    stable order; every other list (a rule's expressions, a concatenation) keeps its own."""
    if isinstance(value, dict):
        return {k: _sorted_sets(v, k) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        items = [_sorted_sets(v) for v in value]
        return sorted(items, key=json.dumps) if key == "set" else items
    return value


def _scheduler_shares(expr: Any) -> Counter[int] | None:
    """For ``ct mark set numgen|jhash ... map {slot: mark}``: how many slots each mark has."""
    mangle = expr.get("mangle") if isinstance(expr, dict) else None
    value = mangle.get("value") if isinstance(mangle, dict) else None
    mapping = value.get("map") if isinstance(value, dict) else None
    if not isinstance(mapping, dict) or not ({"numgen", "jhash"} & set(mapping["key"])):
        return None
    shares: Counter[int] = Counter()
    for slot, mark in mapping["data"]["set"]:
        low, high = slot["range"] if isinstance(slot, dict) else (slot, slot)
        shares[mark] += high - low + 1
    return shares


def _loose_rule(rule: dict[str, Any]) -> Any:
    """A rule whose scheduler map is read as shares per mark, not slot by slot."""
    out = []
    for expr in rule["expr"]:
        shares = _scheduler_shares(expr)
        out.append(sorted(shares.items()) if shares is not None else _sorted_sets(expr))
    return out


def canonical(ruleset: Iterable[dict[str, Any]], *, loose: str = "") -> Canonical:
    """Every object without handles, keyed by kind, family, table and name; rules listed per
    chain in order; each element of a named map on its own key (so a farm's elements can be
    told from the others'). With `loose` (a farm name), that farm's scheduler map counts as
    shares per mark."""
    out: Canonical = {}
    for obj in ruleset:
        ((kind, body),) = obj.items()
        where = f"{body.get('family', '')} {body.get('table', '')}"
        if kind == "rule":
            chain = body["chain"]
            rule = _loose_rule(body) if loose and chain == f"filter-{loose}" else None
            out.setdefault(f"rules {where} {chain}", []).append(
                rule if rule is not None else _sorted_sets(body["expr"])
            )
            continue
        head = f"{kind} {where} {body.get('name', '')}"
        elements = body.get("elem") if kind in ("map", "set") else None
        out[head] = _sorted_sets({k: v for k, v in body.items() if k != "elem"})
        for element in elements or []:
            key = element[0] if kind == "map" else element
            out[f"{head} elem {json.dumps(key)}"] = _sorted_sets(element)
    return out


def farm_part(canon: Canonical, name: str) -> Canonical:
    """What of the kernel names this farm (its chains, maps, rules and service elements)."""
    return {k: v for k, v in canon.items() if name in k or name in json.dumps(v)}


# -- one run: the real daemon and the model, request by request -------------------------------


class Sides:
    """The daemon and the model, driven with the same requests; after each one they must
    answer and list alike, and agree on which farms are dark. `fresh` empties the daemon and
    starts a new model."""

    def __init__(self, daemon: NftlbDaemon, real: NftlbClient) -> None:
        self.daemon = daemon
        self.real = real
        self.model = NftlbModel(daemon.key)
        transport = httpx.MockTransport(lambda request: self.model.as_handler()(request))
        self.fake = NftlbClient("http://nftlb", daemon.key, transport=transport)
        self.doc: dict[str, Any] = {}

    def fresh(self) -> Sides:
        self.daemon.reset()
        self.model = NftlbModel(self.daemon.key)
        return self

    def send_real(self, request: Request) -> list[dict[str, Any]]:
        """Send to the daemon only (the reference runs); return the kernel's ruleset."""
        answer = self.real.send(request)
        assert json.loads(answer)["response"] == "success", (request.summary, answer)
        return self.daemon.ruleset_json()

    def send(self, request: Request) -> list[dict[str, Any]]:
        """Send to both, check they agree, and return the kernel's ruleset."""
        answer = self.real.send(request)
        assert answer == self.fake.send(request), request.summary
        assert json.loads(answer)["response"] == "success", (request.summary, answer)
        # The raw documents equal, so are their normalised read-backs (`wire.parse_farms`).
        doc = self.doc = self.real.get_farms_document()
        assert doc == self.fake.get_farms_document(), request.summary
        ruleset = self.daemon.ruleset_json()
        names = [f["name"] for f in doc["farms"]]
        targets = set(service_elements(ruleset).values())
        kernel_dark = {n for n in names if f"nat-{n}" not in targets}
        assert set(self.model.dark_farms()) == kernel_dark, (request.summary, kernel_dark)
        return ruleset

    def backends(self, farm: Farm) -> list[dict[str, str]]:
        """The farm's backends as the last GET listed them, in nftlb's order."""
        (entry,) = (f for f in self.doc["farms"] if f["name"] == farm.name)
        keys = ("name", "ip-addr", "port", "weight", "mark", "state")
        return [{k: b[k] for k in keys if k in b} for b in entry["backends"]]


def listed(b: Backend, state: str) -> dict[str, str]:
    return {
        "name": b.name,
        "ip-addr": b.ip,
        "port": str(b.port),
        "weight": str(b.weight),
        "mark": f"{b.mark:#x}",
        "state": state,
    }


def assert_kernel_holds(ruleset: list[dict[str, Any]], farms: Iterable[Farm]) -> None:
    """Exactly these farms' frontends and backend DNAT maps (usable backends only), ports
    included."""
    farms = list(farms)
    assert service_elements(ruleset) == expected_service_elements(farms)
    assert dnat_entries(ruleset) == expected_dnat_entries(farms)


@pytest.fixture
def sides(clean_daemon: NftlbDaemon) -> Iterator[Sides]:
    with clean_daemon.client() as real:
        both = Sides(clean_daemon, real)
        with both.fake:
            yield both


def with_backends(farm: Farm, backends: Iterable[Backend]) -> Farm:
    return evolve(farm, backends=tuple(backends))


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_retire_take_over_and_clean_up_match_the_plain_plan(sides: Sides, shape: Farm) -> None:
    """The plain plan first (the reference kernels), then the slot plan from the same start:
    1. retires with new backends, 2. take-overs with a retire, 3. DELETE of a spare, 4. a
    retire of a backend nftlb no longer holds, a reload, and its DELETE."""
    others = bystanders()
    everything = [others[0], others[1], shape, others[2]]  # the subject between IPv6 farms
    assert validate_farms(everything) == []
    create = Request("POST", FARMS_PATH, {"farms": [farm_body(f) for f in everything]})
    s1, s2, s3, s4 = shape.backends
    family = shape.family
    n1, n2 = backend(family, 31, 5, weight=2), backend(family, 32, 6, weight=3)
    # The endpoints taking s2 and s3 over: their own ip, port and weight, the spares' marks.
    t1 = backend(family, 41, s2.mark, port=9090, weight=4)
    t2 = backend(family, 42, s3.mark, weight=1)
    n3 = backend(family, 33, 7, weight=2)
    wanted = {
        "start": (s1, s2, s3, s4),
        "retired": (s1, s4, n1, n2),
        "taken over": (s4, n1, n2, t1, t2),
        "one more": (s4, n1, n2, t1, t2, n3),
    }

    def farms_at(step: str) -> list[Farm]:
        return [*others, with_backends(shape, wanted[step])]

    # -- the reference, daemon only: add, then DELETE each departing backend ------------------
    plain = sides.fresh()
    reference: dict[str, Canonical] = {}
    loose_reference: dict[str, Canonical] = {}
    steps = {
        "start": [create],
        "retired": [
            farm_post(shape, backend_body(n1), backend_body(n2)),
            delete_backend(shape, s2),
            delete_backend(shape, s3),
        ],
        "taken over": [
            farm_post(shape, backend_body(t1), backend_body(t2)),
            delete_backend(shape, s1),
        ],
        "one more": [farm_post(shape, backend_body(n3))],
    }
    for step, requests in steps.items():
        for request in requests:
            ruleset = plain.send_real(request)
        assert_kernel_holds(ruleset, farms_at(step))
        reference[step] = canonical(ruleset)
        loose_reference[step] = canonical(ruleset, loose=shape.name)

    # -- the slot plan -------------------------------------------------------------------------
    slots = sides.fresh()
    ruleset = slots.send(create)
    assert canonical(ruleset) == reference["start"]
    untouched = {f.name: farm_part(canonical(ruleset), f.name) for f in others}
    for f in others:  # each part holds at least the farm's chains and its frontend elements
        table = "ip" if f.family is V4 else "ip6"
        assert f"chain {table} nftlb nat-{f.name}" in untouched[f.name]
        assert f"rules {table} nftlb filter-{f.name}" in untouched[f.name]
        assert any(" elem " in key for key in untouched[f.name])

    def check(ruleset: list[dict[str, Any]], step: str, *, exact: bool) -> None:
        assert_kernel_holds(ruleset, farms_at(step))
        if exact:
            assert canonical(ruleset) == reference[step]
        else:
            assert canonical(ruleset, loose=shape.name) == loose_reference[step]
        for name, part in untouched.items():
            assert farm_part(canonical(ruleset), name) == part, name

    # 1. Two new backends and two retires in one farm object (the new ones first).
    ruleset = slots.send(
        farm_post(shape, backend_body(n1), backend_body(n2), retire_body(s2), retire_body(s3))
    )
    check(ruleset, "retired", exact=True)
    assert slots.backends(shape) == [
        listed(s1, "up"),
        listed(s2, "down"),
        listed(s3, "down"),
        listed(s4, "up"),
        listed(n1, "up"),
        listed(n2, "up"),
    ]

    # 2. Two new endpoints take the spares over, and s1 retires, in one farm object.
    ruleset = slots.send(
        farm_post(shape, take_over_body(s2, t1), take_over_body(s3, t2), retire_body(s1))
    )
    check(ruleset, "taken over", exact=False)
    after_take_over = canonical(ruleset)
    taken_over = [
        listed(s1, "down"),
        listed(t1, "up"),
        listed(t2, "up"),
        listed(s4, "up"),
        listed(n1, "up"),
        listed(n2, "up"),
    ]
    assert slots.backends(shape) == taken_over

    # 3. The cleanup: DELETE of the spare leaves the kernel exactly as it was.
    ruleset = slots.send(delete_backend(shape, s1))
    assert canonical(ruleset) == after_take_over
    assert slots.backends(shape) == taken_over[1:]

    # 4. A retire of a backend nftlb no longer holds (s1 again, whole): nftlb creates it down
    # with its ip, port and mark, and the kernel does not change, nor lose its ports at the
    # farm's next reload; then the cleanup removes it.
    ruleset = slots.send(farm_post(shape, retire_body(s1)))
    assert canonical(ruleset) == after_take_over
    assert slots.backends(shape) == [*taken_over[1:], listed(s1, "down")]
    ruleset = slots.send(farm_post(shape, backend_body(n3)))
    check(ruleset, "one more", exact=False)
    before_cleanup = canonical(ruleset)
    assert slots.backends(shape) == [*taken_over[1:], listed(s1, "down"), listed(n3, "up")]
    ruleset = slots.send(delete_backend(shape, s1))
    assert canonical(ruleset) == before_cleanup
    assert slots.backends(shape) == [*taken_over[1:], listed(n3, "up")]
    assert slots.model.dark_farms() == {}


def test_a_bare_retire_of_an_unknown_backend_costs_the_farm_its_ports(sides: Sides) -> None:
    """Why a retire sends the whole backend: ``{"name": b, "state": "down"}`` for a backend
    nftlb does not hold creates one without ip or port, and nftlb reloads the farm at once: it
    DNATs every backend to its IP only (the client's destination port kept, `nftlb-api.md`
    item 12) until that backend is deleted. The model and the daemon answer and list alike."""
    family = V4  # both families passed; one keeps the file fast
    farm = subject(family)
    run = sides.fresh()
    run.send(Request("POST", FARMS_PATH, {"farms": [farm_body(farm)]}))
    ruleset = run.send(farm_post(farm, {"name": "nope", "state": "down"}))
    assert run.backends(farm)[-1] == {
        "name": "nope",
        "port": "",
        "weight": "1",
        "mark": "0x5",
        "state": "down",
    }
    assert dnat_entries(ruleset) == {
        f"nat-{farm.name}": {(b.mark, b.ip, None) for b in farm.backends}
    }
    assert service_elements(ruleset) == expected_service_elements([farm])
    ruleset = run.send(Request("DELETE", farm_path(farm.name, "backends", "nope")))
    assert_kernel_holds(ruleset, [farm])


def test_a_take_over_onto_a_mark_in_use_darkens_the_farm(sides: Sides) -> None:
    """The slot plan must give a taken-over spare the spare's own mark: with the mark of
    another up backend of the farm, nft refuses the farm's batch and nftlb's recovery leaves
    farms without rules (`nftlb-api.md` item 23), as `NftlbModel.dark_farms` says (checked
    against the kernel after each request by `Sides.send`); retiring the duplicate repairs
    every farm."""
    family = V6  # both families passed; one keeps the file fast
    shape = subject(family)
    others = bystanders()
    everything = [others[0], others[1], shape, others[2]]
    s1, s2, s3, s4 = shape.backends
    run = sides.fresh()
    run.send(Request("POST", FARMS_PATH, {"farms": [farm_body(f) for f in everything]}))
    run.send(farm_post(shape, retire_body(s2)))
    wrong = backend(family, 41, s3.mark, port=9090)
    run.send(farm_post(shape, take_over_body(evolve(s2, mark=s3.mark), wrong)))
    assert run.backends(shape)[1] == listed(wrong, "up")
    assert shape.name in run.model.dark_farms()
    ruleset = run.send(farm_post(shape, retire_body(wrong)))
    assert run.model.dark_farms() == {}
    assert_kernel_holds(ruleset, [*others, with_backends(shape, (s1, s3, s4))])


def shares(ruleset: list[dict[str, Any]], farm: Farm) -> Counter[int]:
    """The scheduler's slots per backend mark (nftlb's masquerade bit dropped)."""
    for obj in ruleset:
        rule = obj.get("rule")
        if rule and rule["chain"] == f"filter-{farm.name}":
            for expr in rule["expr"]:
                found = _scheduler_shares(expr)
                if found is not None:
                    return Counter({m & 0x7FFFFFFF: n for m, n in found.items()})
    return Counter()


def start(sides: Sides, family: Family) -> tuple[Sides, Farm, list[Farm]]:
    """The subject (rr, four backends) between the bystanders, in a fresh daemon and model."""
    shape, others = subject(family), bystanders()
    run = sides.fresh()
    everything = [others[0], others[1], shape, others[2]]
    run.send(Request("POST", FARMS_PATH, {"farms": [farm_body(f) for f in everything]}))
    return run, shape, others


def test_a_retire_sent_twice_changes_nothing_and_a_take_over_sent_twice_adds_a_twin(
    sides: Sides,
) -> None:
    """Resending a retire is a no-op. Resending a take-over is not: the spare's name is gone,
    so nftlb creates a backend of that name and renames it, a second backend with the new
    name, ip, port and mark. nft merges their identical DNAT entries, so no farm goes dark
    (the model agreed only after `NftlbModel._marks_clash` learnt that), but the scheduler
    gives the twin's mark two slots; DELETE by that name removes the first of the two."""
    family = V4  # both families passed; one keeps the file fast
    run, shape, others = start(sides, family)
    s1, s2, s3, s4 = shape.backends
    retire = farm_post(shape, retire_body(s2))
    once = canonical(run.send(retire))
    listed_once = run.backends(shape)
    assert canonical(run.send(retire)) == once
    assert run.backends(shape) == listed_once
    t1 = backend(family, 41, s2.mark, port=9090)
    take_over = farm_post(shape, take_over_body(s2, t1))
    ruleset = run.send(take_over)
    weights = Counter({b.mark: b.weight for b in (s1, t1, s3, s4)})  # rr is weighted too
    assert shares(ruleset, shape) == weights
    taken_over = canonical(ruleset, loose=shape.name)
    ruleset = run.send(take_over)
    assert run.backends(shape) == [
        listed(s1, "up"),
        listed(t1, "up"),
        listed(s3, "up"),
        listed(s4, "up"),
        listed(t1, "up"),
    ]
    assert_kernel_holds(ruleset, [*others, with_backends(shape, (s1, t1, s3, s4))])
    assert shares(ruleset, shape) == weights + Counter({t1.mark: t1.weight})
    assert run.model.dark_farms() == {}
    ruleset = run.send(delete_backend(shape, t1))
    assert run.backends(shape) == [listed(b, "up") for b in (s1, s3, s4, t1)]
    assert canonical(ruleset, loose=shape.name) == taken_over


def test_an_off_backend_keeps_its_mark_in_the_dnat_map(sides: Sides) -> None:
    """``off`` leaves the scheduler but keeps the DNAT entry (`nftlb-api.md` section 7), so a
    new backend on an off backend's mark, with another IP, is two targets for one mark: the
    farm goes dark, as the model says (checked by `Sides.send`), until it is deleted."""
    run, shape, others = start(sides, V4)
    s1, s2, s3, s4 = shape.backends
    ruleset = run.send(farm_post(shape, backend_body(s2) | {"state": "off"}))
    assert_kernel_holds(ruleset, [*others, shape])
    assert set(shares(ruleset, shape)) == {s1.mark, s3.mark, s4.mark}
    intruder = backend(V4, 41, s2.mark)
    run.send(farm_post(shape, backend_body(intruder)))
    assert run.model.dark_farms() == {shape.name: "mark"}
    ruleset = run.send(delete_backend(shape, intruder))
    assert run.model.dark_farms() == {}
    assert_kernel_holds(ruleset, [*others, shape])
