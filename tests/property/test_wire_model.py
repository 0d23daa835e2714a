"""Properties of the wire format and the nftlb model: what is sent reads back as itself."""

from __future__ import annotations

import json
from typing import Any

import httpx
from attrs import evolve
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from reconciler.core.diff import diff
from reconciler.core.farms import (
    FARM_FIELDS,
    LOG_HOOKS,
    MAX_MARK,
    OBJECT_NAME_RE,
    PACKET_FIELDS,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    assign_marks,
    helper_fits,
    persistence_fits,
    sched_param_fits,
    validate_farm,
    validate_farms,
)
from reconciler.core.names import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    FarmKey,
    address_name,
    backend_name,
    farm_name,
    frontend_segment,
)
from reconciler.core.plan import Operation, OpKind, Plan
from reconciler.core.wire import (
    MAX_URI,
    farm_body,
    farms_document,
    parse_farm,
    parse_farms,
    requests_for,
)
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel

SEGMENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).filter(
    lambda s: s[0] != "-" and s[-1] != "-"
)
PORT_NAME = st.one_of(SEGMENT.filter(lambda s: not s.isdigit()), st.integers(1, 65535).map(str))
PORTS = st.integers(1, 65535)
WEIGHTS = st.integers(1, 100)
IPS = {
    Family.IPV4: st.ip_addresses(v=4).map(str),
    Family.IPV6: st.ip_addresses(v=6).map(str),
}
ENDPOINTS = {fam: st.tuples(IPS[fam], PORTS) for fam in Family}
MARKS = st.integers(1, MAX_MARK)


def tokens(order: tuple[str, ...], *, min_size: int = 0) -> st.SearchStrategy[tuple[str, ...]]:
    return st.sets(st.sampled_from(order), min_size=min_size).map(
        lambda s: tuple(t for t in order if t in s)
    )


LOGS = tokens(LOG_HOOKS)


#: Every canonical token set of the packet fields (64 of them).
TOKEN_SETS = [
    tuple(t for i, t in enumerate(PACKET_FIELDS) if bits & (1 << i))
    for bits in range(1 << len(PACKET_FIELDS))
]


def hash_params(family: Family) -> st.SearchStrategy[tuple[str, ...]]:
    """Hash keys nftlb can build for this family (validate_farm refuses the others)."""
    return st.sampled_from([t for t in TOKEN_SETS if t and sched_param_fits(family, t)])


def persistences(family: Family) -> st.SearchStrategy[tuple[str, ...]]:
    """Persistence keys nftlb can build without crashing (validate_farm refuses the others)."""
    return st.sampled_from([t for t in TOKEN_SETS if persistence_fits(family, t)])


def helpers(family: Family, protocol: Protocol) -> st.SearchStrategy[Helper]:
    return st.sampled_from([h for h in Helper if helper_fits(family, protocol, h)])


def frontend_of(name: str, family: Family, protocol: Protocol) -> st.SearchStrategy[Address]:
    """A farm's one frontend: its own address object, ``<farm>-addr``."""
    return st.builds(
        lambda ip, port: Address(address_name(name), family, ip, port, protocol), IPS[family], PORTS
    )


@st.composite
def farms(draw: st.DrawFn, family: Family | None = None) -> Farm:
    fam = family or draw(st.sampled_from(Family))
    protocol = draw(st.sampled_from(Protocol))
    kind = draw(st.sampled_from(["", NODE_PORT, EXTERNAL_IP, LOAD_BALANCER]))
    frontend = frontend_segment(kind, draw(IPS[fam])) if kind else ""
    key = FarmKey(draw(SEGMENT), draw(SEGMENT), draw(PORT_NAME), protocol, fam, frontend)
    name = farm_name(key)
    addresses = (draw(frontend_of(name, fam, protocol)),)
    endpoints = draw(st.lists(ENDPOINTS[fam], max_size=6, unique=True))
    size = len(endpoints)
    marks = draw(st.lists(MARKS, min_size=size, max_size=size, unique=True))
    backends = tuple(
        Backend(backend_name(b_ip, b_port), b_ip, b_port, draw(WEIGHTS), mark)
        for (b_ip, b_port), mark in zip(endpoints, marks, strict=True)
    )
    scheduler = draw(st.sampled_from(Scheduler))
    farm = Farm(
        name=name,
        family=fam,
        protocol=protocol,
        addresses=addresses,
        backends=backends,
        mode=draw(st.sampled_from(Mode)),
        scheduler=scheduler,
        sched_param=draw(hash_params(fam)) if scheduler is Scheduler.HASH else (),
        persistence=draw(persistences(fam)),
        persist_ttl=draw(st.integers(0, 86400)),
        helper=draw(helpers(fam, protocol)),
        log=draw(LOGS),
        est_connlimit=draw(st.integers(0, 1000)),
        intra_connect=draw(st.booleans()),
    )
    assert validate_farm(farm) == [], validate_farm(farm)
    return farm


def model_client() -> tuple[NftlbModel, NftlbClient]:
    model = NftlbModel("k")
    transport = httpx.MockTransport(model.as_handler())
    return model, NftlbClient("http://nftlb", "k", transport=transport)


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@given(farms())
def test_body_parses_back(farm: Farm) -> None:
    assert parse_farm(json_roundtrip(farm_body(farm))) == farm


@given(farms())
def test_nftlb_echo_parses_back(farm: Farm) -> None:
    """parse_farm(what nftlb echoes for farm_body(f)) == f, with the model as nftlb."""
    model, client = model_client()
    status, _ = model.handle(
        "POST", "/farms", json.dumps(farms_document([farm])).encode(), {"Key": "k"}
    )
    assert status == 200
    status, answer = model.handle("GET", f"/farms/{farm.name}", b"", {"Key": "k"})
    assert status == 200
    (echoed,) = json.loads(answer)["farms"]
    assert echoed["family"] == farm_body(farm)["family"] == farm.family.value
    assert [a["name"] for a in echoed["addresses"]] == [address_name(farm.name)]
    assert parse_farm(echoed) == farm
    assert client.get_farms().owned == (farm,)


@settings(max_examples=50)
@given(st.lists(farms(), min_size=1, max_size=4, unique_by=lambda f: f.name))
def test_many_farms_in_one_post(many: list[Farm]) -> None:
    _, client = model_client()
    if validate_farms(many):
        return  # two farms on one (protocol, address, port): never sent
    result = client.post_farms(many)
    assert result.ok
    assert client.get_farms().owned == tuple(sorted(many, key=lambda f: f.name))


def _same_fields(base: Farm, other: Farm) -> Farm:
    """`other`'s farm-level fields on `base`'s name, frontend and backends."""
    return evolve(base, **{f: getattr(other, f) for f in FARM_FIELDS if f != "helper"})


@given(st.data())
def test_partial_update_reaches_the_wanted_fields(data: st.DataObject) -> None:
    """Only the changed fields are posted (sched-param after scheduler, the frontend as the
    farm's own shorthand), and nftlb's merge makes the farm equal to the wanted one."""
    a = data.draw(farms())
    wanted = _same_fields(a, data.draw(farms(family=a.family)))
    if data.draw(st.booleans(), label="move the frontend"):
        wanted = evolve(wanted, addresses=(data.draw(frontend_of(a.name, a.family, a.protocol)),))
    changed = tuple(f for f in FARM_FIELDS if getattr(a, f) != getattr(wanted, f))
    changed += ("addresses",) if a.addresses != wanted.addresses else ()
    assert validate_farm(wanted) == []
    model, client = model_client()
    client.post_farms([a])
    op = Operation(OpKind.UPDATE_FARM, a.name, farm=wanted, fields=changed)
    assert client.apply(Plan((op,))).ok
    assert client.get_farms().owned == (wanted,)
    assert list(model.addresses) == [address_name(a.name)]


@given(farms(), st.data())
def test_backend_upserts_and_deletes_reach_the_wanted_set(farm: Farm, data: st.DataObject) -> None:
    """Backends not sent are kept by nftlb: upserts carry the new and changed ones, DELETEs
    remove the rest."""
    names = [b.name for b in farm.backends]
    keep = data.draw(st.sets(st.sampled_from(names))) if names else set()
    changed = tuple(evolve(b, weight=b.weight % 100 + 1) for b in farm.backends if b.name in keep)
    new_ip = "192.0.2.1" if farm.family is Family.IPV4 else "2001:db8::1"
    mark = min(set(range(1, MAX_MARK + 1)) - {b.mark for b in farm.backends})
    new = Backend(backend_name(new_ip, 9), new_ip, 9, 7, mark)
    assume(farm.backend(new.name) is None)
    wanted = evolve(farm, backends=(*changed, new))
    _, client = model_client()
    client.post_farms([farm])
    ops = [Operation(OpKind.UPSERT_BACKENDS, farm.name, backends=(*changed, new))]
    ops += [
        Operation(OpKind.DELETE_BACKEND, farm.name, target=b.name)
        for b in farm.backends
        if b.name not in keep
    ]
    assert client.apply(Plan(tuple(ops))).ok
    assert client.get_farms().owned == (wanted,)


NAMES = st.one_of(
    st.text(max_size=130),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,130}\Z"),
)


@given(st.sampled_from([OpKind.DELETE_FARM, OpKind.DELETE_BACKEND]), NAMES, NAMES)
def test_no_url_has_an_empty_or_unsafe_segment(kind: OpKind, farm: str, target: str) -> None:
    try:
        requests = requests_for(Operation(kind, farm, target=target))
    except ValueError:
        return
    for request in requests:
        assert request.path.startswith("/farms/")
        assert len(request.path) <= MAX_URI
        segments = request.path.split("/")[1:]
        assert all(s and OBJECT_NAME_RE.match(s) for s in segments)
        assert len(segments) == (2 if kind is OpKind.DELETE_FARM else 4)


@settings(max_examples=50)
@given(farms())
def test_urls_of_real_farms_are_safe(farm: Farm) -> None:
    ops = [Operation(OpKind.DELETE_FARM, farm.name)]
    ops += [Operation(OpKind.DELETE_BACKEND, farm.name, target=b.name) for b in farm.backends]
    for op in ops:
        for request in requests_for(op):
            assert "//" not in request.path
            assert not request.path.endswith("/")
            assert len(request.path) <= MAX_URI


@given(farms())
def test_readback_sorts_owned_from_foreign(farm: Farm) -> None:
    model, client = model_client()
    client.post_farms([farm])
    model.handle(
        "POST", "/farms", b'{"farms":[{"name":"lb01","virtual-addr":"10.0.0.1"}]}', {"Key": "k"}
    )
    read = parse_farms(client.get_farms_document())
    assert read.owned == (farm,)
    assert read.foreign == ("lb01",)


@st.composite
def changed_farm(draw: st.DrawFn, farm: Farm) -> Farm:
    """`farm` with some farm-level fields, the frontend and the backends changed, or as is."""
    other = draw(farms(family=farm.family))
    fields = draw(st.sets(st.sampled_from([f for f in FARM_FIELDS if f != "helper"])))
    out = evolve(farm, **{f: getattr(other, f) for f in fields})
    if out.scheduler is not Scheduler.HASH:
        out = evolve(out, sched_param=())
    elif not out.sched_param:
        out = evolve(out, sched_param=("srcip",))
    if draw(st.booleans()):
        out = evolve(out, addresses=(draw(frontend_of(farm.name, farm.family, farm.protocol)),))
    if draw(st.booleans()):
        out = evolve(out, backends=farm.backends[: draw(st.integers(0, len(farm.backends)))])
    return out


def shares_a_helper(farms: list[Farm]) -> bool:
    """Whether two farms would share a ct helper object (same family, protocol and helper):
    nftlb 1.0.7 cannot stop such farms, and the model answers 404 like nftlb does."""
    seen: dict[tuple[Family, Protocol, Helper], str] = {}
    for f in farms:
        key = (f.family, f.protocol, f.helper)
        if f.helper is not Helper.NONE and seen.setdefault(key, f.name) != f.name:
            return True
    return False


@settings(max_examples=60)
@given(st.lists(farms(), min_size=1, max_size=6, unique_by=lambda f: f.name), st.data())
def test_any_plan_leaves_every_ipv6_farm_with_its_rules(
    start: list[Farm], data: st.DataObject
) -> None:
    """Whatever a plan deletes and changes, `apply` repairs what nftlb 1.0.7 drops: in the
    model no farm is left without its rules, and nftlb holds exactly the wanted farms."""
    assume(not validate_farms(start))
    model, client = model_client()
    assert client.post_farms(start).ok
    wanted = []
    for farm in start:
        if data.draw(st.booleans(), label=f"keep {farm.name}"):
            wanted.append(data.draw(changed_farm(farm), label=f"as {farm.name}"))
    extra = data.draw(st.lists(farms(), max_size=2, unique_by=lambda f: f.name))
    wanted += [f for f in extra if f.name not in {w.name for w in wanted}]
    assume(not validate_farms(wanted))
    kept = {w.name for w in wanted}
    assume(not shares_a_helper(start))
    assume(not shares_a_helper([f for f in start if f.name in kept] + wanted))
    actual = client.get_farms().by_name()
    result = client.apply(diff(wanted, actual.values()))
    assert result.ok, result.failures
    marked = sorted((assign_marks(w, actual.get(w.name)) for w in wanted), key=lambda f: f.name)
    assert client.get_farms().owned == tuple(marked)
    assert all(f.rules for f in model.farms.values())
    event(f"repairs: {result.repairs}")
    assert result.repairs <= len(start) + 1
    if all(f.family is Family.IPV4 for f in start):
        assert result.repairs == 0
