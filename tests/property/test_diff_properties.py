"""Properties of the diff engine, applied through the real client to the in-memory nftlb model."""

from __future__ import annotations

import httpx
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.diff import diff
from reconciler.core.farms import (
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    assign_marks,
)
from reconciler.core.names import address_name
from reconciler.core.plan import OpKind
from reconciler.core.wire import Request, farm_body, requests_for
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel
from tests.property.test_wire_model import farms


def _unique(items: list[Farm]) -> list[Farm]:
    """Distinct names and frontends, as desired_farms guarantees."""
    names: set[str] = set()
    tuples: set[object] = set()
    out = []
    for f in items:
        key = f.addresses[0].tuple_key
        if f.name not in names and key not in tuples:
            names.add(f.name)
            tuples.add(key)
            out.append(f)
    return out


def _unmarked(farm: Farm) -> Farm:
    return evolve(farm, backends=tuple(evolve(b, mark=0) for b in farm.backends))


FARM_SETS = st.lists(farms(), max_size=5).map(_unique)
FOREIGN = st.lists(
    st.sampled_from(["web--http", "legacy-farm", "my.own.farm"]), unique=True, max_size=2
)


def _nftlb(actual: list[Farm], foreign: list[str]) -> tuple[NftlbModel, NftlbClient]:
    model = NftlbModel("k")
    client = NftlbClient("http://nftlb", "k", transport=httpx.MockTransport(model.as_handler()))
    if actual:
        assert client.post_farms([assign_marks(f, None) for f in actual]).ok
    for i, name in enumerate(foreign):
        body = {
            "name": name,
            "family": "ipv4",
            "virtual-addr": f"192.0.2.{i + 1}",
            "virtual-ports": "80",
        }
        client.send(Request("POST", "/farms", {"farms": [body]}))
    return model, client


@given(FARM_SETS)
def test_a_state_diffed_with_itself_is_empty(desired: list[Farm]) -> None:
    marked = [assign_marks(f, None) for f in desired]
    assert not diff(desired, marked)


@given(FARM_SETS, FARM_SETS, FOREIGN)
def test_applying_the_plan_makes_nftlb_equal_to_desired_and_leaves_foreign_farms(
    desired: list[Farm], actual: list[Farm], foreign: list[str]
) -> None:
    _plan_applies(desired, actual, foreign)


def _plan_applies(desired: list[Farm], actual: list[Farm], foreign: list[str]) -> None:
    desired = _unique(desired)
    # A frontend held by an actual farm of another name is freed first (delete before create).
    _, client = _nftlb(actual, foreign)
    before = client.get_farms()
    plan = diff(desired, before.owned)
    assert not ({op.farm_name for op in plan} & set(foreign))
    result = client.apply(plan)
    assert result.ok, result.failures
    after = client.get_farms()
    assert sorted(after.foreign) == sorted(foreign)
    assert {f.name: _unmarked(f) for f in after.owned} == {f.name: _unmarked(f) for f in desired}
    assert all(b.mark for f in after.owned for b in f.backends), (
        "every backend has an explicit mark"
    )
    assert not diff(desired, after.owned), "a second diff is empty"
    again = client.apply(diff(desired, after.owned))
    assert again.requests == 0, "applying the plan twice changes nothing the second time"


def _farm(
    name: str, vip: str, port: int, backends: list[tuple[str, int]], **fields: object
) -> Farm:
    protocol = Protocol.SCTP if ".sctp." in name else Protocol.TCP
    address = Address(address_name(name), Family.IPV4, vip, port, protocol)
    bs = tuple(Backend(f"b-{ip}-{p}", ip, p, 1, i + 1) for i, (ip, p) in enumerate(backends))
    return Farm(name, Family.IPV4, protocol, (address,), bs, mode=Mode.SNAT, **fields)  # type: ignore[arg-type]


def test_farms_sharing_a_ct_helper_are_turned_off_before_they_change() -> None:
    """Found by hypothesis (dev profile): two farms nftlb holds share one ct helper object
    (ipv4, tcp, ftp), and the plan changes one's helper and frontend. nftlb 1.0.7 refuses to
    stop such a farm (404 "the object to modify is unknown", tests/e2e/test_nftlb_client_e2e.py),
    so the plan turns it off first and on again with its update."""
    ftp = {"helper": Helper.FTP, "persist_ttl": 0}
    five = [(f"0.0.0.{i}", 1) for i in range(5)]
    actual = [
        _farm("k8s.0.0.1.tcp.v4", "0.0.0.1", 1, [*five, ("0.0.0.5", 1)], **ftp),
        _farm("k8s.0.0.1.tcp.v4.ndhrwev", "0.0.0.0", 1, [], **ftp),
    ]
    desired = [
        _farm(
            "k8s.0.0.1.tcp.v4",
            "0.0.0.0",
            2,
            [*five, ("9.201.187.50", 1)],
            scheduler=Scheduler.HASH,
            sched_param=("srcip",),
            persist_ttl=0,
        ),
        _farm("k8s.0.0.1.tcp.v4.ndhrwev", "0.0.0.0", 1, [], persist_ttl=0),
        _farm("k8s.0.0.1.sctp.v4.ndhrwev", "0.0.0.0", 1, [(f"0.0.0.{i}", 1) for i in range(4)]),
    ]
    _plan_applies(desired, actual, [])
    plan = diff(desired, actual)
    stopped = {op.farm_name for op in plan if op.stop_first}
    assert stopped == {"k8s.0.0.1.tcp.v4", "k8s.0.0.1.tcp.v4.ndhrwev"}


@given(farms(), st.sampled_from(list(Scheduler)))
def test_one_field_change_is_one_operation_carrying_that_field(
    farm: Farm, scheduler: Scheduler
) -> None:
    have = assign_marks(farm, None)
    sched_param = ("srcip",) if scheduler is Scheduler.HASH else ()
    if (farm.scheduler, farm.sched_param) == (scheduler, sched_param):
        return
    want = evolve(farm, scheduler=scheduler, sched_param=sched_param)
    plan = diff([want], [have])
    assert [op.kind for op in plan] == [OpKind.UPDATE_FARM]
    paths = {c.path for c in plan.operations[0].changes}
    assert "scheduler" in paths or farm.scheduler == scheduler
    assert paths <= {"scheduler", "sched-param"}


@given(FARM_SETS, FARM_SETS)
def test_no_request_of_any_plan_has_an_empty_path_segment(
    desired: list[Farm], actual: list[Farm]
) -> None:
    plan = diff(desired, [assign_marks(f, None) for f in actual])
    for op in plan:
        for request in requests_for(op):
            assert "//" not in request.path and not request.path.endswith("/")
            assert all(request.path.split("/")[1:])
            if request.body is not None:
                assert all(next(iter(b)) == "name" for b in request.body["farms"])
    for f in desired:
        assert next(iter(farm_body(f))) == "name"


def test_a_helper_moving_between_farms_applies_cleanly() -> None:
    """One farm takes the ct helper another gives up, in one plan: the update that goes first
    makes them share it for a moment, and nftlb 1.0.7 must not be asked to stop the other."""
    taker = _farm("k8s.0.a.p.tcp.v4", "10.0.0.1", 21, [("10.1.0.1", 21)])
    giver = _farm("k8s.0.b.p.tcp.v4", "10.0.0.2", 21, [("10.1.0.2", 21)], helper=Helper.FTP)
    want = [evolve(taker, helper=Helper.FTP), evolve(giver, helper=Helper.NONE)]
    _plan_applies(want, [taker, giver], [])


def test_a_farm_left_off_between_its_two_requests_is_made_again_by_the_next_plan() -> None:
    """The agent killed after the ``off`` of a `stop_first` update: the farm reads back
    unparsable (not up), and the next plan deletes it and creates it whole."""
    a = _farm("k8s.0.a.p.tcp.v4", "10.0.0.1", 21, [("10.1.0.1", 21)], helper=Helper.FTP)
    b = _farm("k8s.0.b.p.tcp.v4", "10.0.0.2", 21, [("10.1.0.2", 21)], helper=Helper.FTP)
    _, client = _nftlb([a, b], [])
    plan = diff([evolve(a, mode=Mode.DNAT), b], client.get_farms().owned)
    (op,) = plan
    client.send(requests_for(op)[0])  # the off, and nothing more
    read = client.get_farms()
    assert read.unparsable == (a.name,)
    again = diff([evolve(a, mode=Mode.DNAT), b], read.owned, read.unparsable)
    assert client.apply(again).ok
    assert {f.name: _unmarked(f) for f in client.get_farms().owned} == {
        f.name: _unmarked(f) for f in (evolve(a, mode=Mode.DNAT), b)
    }
