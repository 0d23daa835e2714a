"""Every prefix of every plan, and of every retry, leaves nftlb serving every Service it served.

A plan is a sequence of requests, and nftlb carries out each one as it comes, so every state in
between is a state of the node: the mark bug of issue 11 was a valid end state reached through
a state where nftlb 1.0.7 drops every farm's rules. These tests apply plans through the real
client to the in-memory model, which breaks on the states nftlb breaks on
(`NftlbModel.dark_farms`), and check after **every request** that:

* no farm nftlb lists is without its rules, except IPv6 farms wiped by nftlb's own IPv6 counter
  bug while a plan runs (the client repairs those before the plan ends, or at the next apply);
* every farm that the start and the end both hold on the same frontend is still there.

Faults: each request may be reset before it reaches nftlb or after nftlb carried it out (the
answer lost; the client retries both), and the plan may be cut after any request (a timeout:
not retried, the sync fails). After a cut, the next sync reads nftlb back and plans again, and
must end exactly at the desired farms, with no farm dark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import httpx
import pytest
from attrs import evolve
from hypothesis import event, given, settings
from hypothesis import strategies as st

from reconciler.core.diff import diff, diff_marked, held_farms, marked_farms
from reconciler.core.farms import (
    Address,
    Backend,
    Family,
    Farm,
    Protocol,
    is_spare,
    validate_farms,
)
from reconciler.core.names import backend_name
from reconciler.core.plan import OpKind
from reconciler.nftlb.client import NftlbClient, NftlbError
from reconciler.testing.nftlb_model import NftlbModel
from tests.property.test_wire_model import IPS, PORTS, farms

KEY = "k"


class Cut(Exception):
    """The plan stops here (the client sees a timeout and gives up)."""


class Harness:
    """The model behind a transport that checks the model after every request and injects
    faults: `faults[i]` is what happens around request i ("reset-before", "reset-after",
    "cut-before", "cut-after")."""

    def __init__(self, faults: dict[int, str] | None = None) -> None:
        self.model = NftlbModel(KEY)
        self.faults = faults or {}
        self.count = 0
        self.checks: list[Callable[[NftlbModel], None]] = []
        self.trace: list[str] = []
        handler = self.model.as_handler()

        def transport(request: httpx.Request) -> httpx.Response:
            i, self.count = self.count, self.count + 1
            fault = self.faults.get(i, "")
            if fault == "reset-before":
                raise httpx.ConnectError("reset", request=request)
            if fault == "cut-before":
                raise httpx.ReadTimeout("cut", request=request)
            response = handler(request)
            self.trace.append(f"{request.method} {request.url.path}")
            for check in self.checks:
                check(self.model)
            if fault == "reset-after":
                raise httpx.ReadError("reset", request=request)
            if fault == "cut-after":
                raise httpx.ReadTimeout("cut", request=request)
            return response

        self.client = NftlbClient(
            "http://nftlb",
            KEY,
            transport=httpx.MockTransport(transport),
            sleep=lambda _: None,
            retries=2,
        )


def _farm_key(f: Farm) -> tuple[str, tuple[Address, ...]]:
    return (f.name, f.addresses)


def never_dark(model: NftlbModel) -> None:
    dark = {n: why for n, why in model.dark_farms().items() if why != "ipv6-wipe"}
    assert not dark, f"farms without rules in the kernel: {dark}"


def keeps(stable: set[str]) -> Callable[[NftlbModel], None]:
    def check(model: NftlbModel) -> None:
        missing = stable - set(model.farms)
        assert not missing, f"farms that should have stayed are gone: {missing}"

    return check


def unmarked(farms: Iterable[Farm]) -> dict[str, Farm]:
    return {f.name: evolve(f, backends=tuple(evolve(b, mark=0) for b in f.backends)) for f in farms}


def sync(client: NftlbClient, desired: list[Farm]) -> None:
    """What the controller's full sync does: read back, plan, apply (even an empty plan when
    an IPv6 repair is pending)."""
    read = client.get_farms()
    plan = diff(desired, read.owned, read.unparsable)
    if plan or client.repair_pending:
        result = client.apply(plan)
        assert result.ok, result.failures


def run(
    start: list[Farm],
    desired: list[Farm],
    faults: dict[int, str] | None = None,
    middle: list[Farm] | None = None,
) -> tuple[Harness, int]:
    """Start from `start` in nftlb (then, with `middle`, the main part of the plan to it,
    which leaves spares), apply the plan to `desired` with `faults`, checking every request;
    after a cut, sync again (without faults) until done. Returns the harness and how many
    requests the first attempt sent before it ended."""
    h = Harness()
    assert h.client.post_farms(start).ok
    if middle is not None:
        read = h.client.get_farms()
        assert h.client.apply(diff(middle, read.owned).main).ok
    assert h.model.dark_farms() == {}
    h.faults = {h.count + i: f for i, f in (faults or {}).items()}
    first = h.count
    stable = {f.name for f in start if _farm_key(f) in {_farm_key(d) for d in desired}}
    h.checks = [never_dark, keeps(stable)]
    with contextlib.suppress(NftlbError):  # a cut: the sync fails, a full one runs next
        sync(h.client, desired)
    sent = h.count - first
    h.faults = {}
    sync(h.client, desired)
    read = h.client.get_farms()
    assert unmarked(read.owned) == unmarked(desired)
    assert h.model.dark_farms() == {}
    assert not diff(desired, read.owned), "a further sync has nothing to do"
    return h, sent


# -- what to plan ----------------------------------------------------------------------------


def _valid(items: list[Farm]) -> list[Farm]:
    out: list[Farm] = []
    for f in items:
        if not validate_farms([*out, f]):
            out.append(f)
    return out


def _dense(farm: Farm) -> Farm:
    return evolve(farm, backends=tuple(evolve(b, mark=i + 1) for i, b in enumerate(farm.backends)))


@st.composite
def replaced(draw: st.DrawFn, farm: Farm) -> Farm:
    """`farm` with some endpoints replaced by new ones (a rolling update), some kept."""
    backends = list(farm.backends)
    for b in farm.backends:
        if draw(st.booleans()):
            backends.remove(b)
    for _ in range(draw(st.integers(0, 3))):
        ip, port = draw(IPS[farm.family]), draw(PORTS)
        name = backend_name(ip, port)
        if all(b.name != name for b in backends):
            backends.append(Backend(name, ip, port, draw(st.integers(1, 5))))
    return evolve(farm, backends=tuple(backends))


@st.composite
def moved(draw: st.DrawFn, farm: Farm, frontends: list[Address]) -> Farm:
    """`farm` on a new frontend, often one another farm holds now (chains and swaps)."""
    same = [a for a in frontends if a.family is farm.family and a.protocol is farm.protocol]
    if same and draw(st.booleans()):
        other = draw(st.sampled_from(same))
        address = evolve(farm.addresses[0], ip=other.ip, port=other.port)
    else:
        address = evolve(farm.addresses[0], ip=draw(IPS[farm.family]), port=draw(PORTS))
    return evolve(farm, addresses=(address,))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Farm], list[Farm]]:
    """What nftlb holds and what is wanted next: farms kept, endpoints replaced, frontends
    moved (onto each other's), fields changed, farms deleted and created."""
    start = _valid(draw(st.lists(farms(), min_size=1, max_size=5, unique_by=lambda f: f.name)))
    if draw(st.booleans()):  # marks as the reconciler first gives them (1..n), not scattered
        start = [_dense(f) for f in start]
    frontends = [f.addresses[0] for f in start]
    desired: list[Farm] = []
    for farm in start:
        action = draw(st.sampled_from(["keep", "replace", "move", "fields", "drop"]))
        if action == "keep":
            desired.append(farm)
        elif action == "replace":
            desired.append(draw(replaced(farm)))
        elif action == "move":
            desired.append(draw(moved(draw(replaced(farm)), frontends)))
        elif action == "fields":
            other = draw(farms(family=farm.family))
            desired.append(evolve(farm, scheduler=other.scheduler, sched_param=other.sched_param))
    desired += draw(st.lists(farms(), max_size=2))
    by_name = {d.name: d for d in reversed(desired)}
    return start, _valid([by_name[d.name] for d in desired if by_name[d.name] is d])


FAULTS = st.dictionaries(
    st.integers(0, 40), st.sampled_from(["reset-before", "reset-after"]), max_size=4
)


@settings(max_examples=100)
@given(worlds(), FAULTS)
def test_every_request_of_a_plan_with_resets_leaves_nftlb_serving(
    world: tuple[list[Farm], list[Farm]], faults: dict[int, str]
) -> None:
    start, desired = world
    _, sent = run(start, desired, faults)
    event(f"requests: {min(sent // 5 * 5, 40)}+")


@settings(max_examples=25)
@given(worlds(), st.sampled_from(["cut-before", "cut-after"]))
def test_every_prefix_of_a_plan_then_the_next_sync_leaves_nftlb_serving(
    world: tuple[list[Farm], list[Farm]], where: str
) -> None:
    """The plan cut after each of its requests in turn, then planned again from what nftlb
    holds: every prefix is checked, not only the end."""
    start, desired = world
    _, sent = run(start, desired)
    for k in range(min(sent, 30)):
        run(start, desired, {k: where})


@st.composite
def worlds_with_spares(draw: st.DrawFn) -> tuple[list[Farm], list[Farm], list[Farm]]:
    """As `worlds`, with a rolling update applied first without its cleanup: the departed
    endpoints are spares (down) that the next plan takes over or deletes."""
    start, desired = draw(worlds())
    return start, [draw(replaced(f)) for f in start], desired


@settings(max_examples=60)
@given(worlds_with_spares(), FAULTS)
def test_every_request_of_a_plan_over_spares_with_resets_leaves_nftlb_serving(
    world: tuple[list[Farm], list[Farm], list[Farm]], faults: dict[int, str]
) -> None:
    start, middle, desired = world
    _, sent = run(start, desired, faults, middle=middle)
    event(f"requests: {min(sent // 5 * 5, 40)}+")


@settings(max_examples=15)
@given(worlds_with_spares(), st.sampled_from(["cut-before", "cut-after"]))
def test_every_prefix_of_a_plan_over_spares_then_the_next_sync_leaves_nftlb_serving(
    world: tuple[list[Farm], list[Farm], list[Farm]], where: str
) -> None:
    start, middle, desired = world
    _, sent = run(start, desired, middle=middle)
    for k in range(min(sent, 20)):
        run(start, desired, {k: where}, middle=middle)


@settings(max_examples=80)
@given(worlds_with_spares())
def test_the_main_part_of_a_plan_serves_the_desired_farms_and_holds_what_held_farms_says(
    world: tuple[list[Farm], list[Farm], list[Farm]],
) -> None:
    """What the agent applies first (`Plan.main`) already serves exactly the desired
    backends; every other backend nftlb holds is a spare the agent knows of (`held_farms`,
    its view for the next partial sync), and the cleanup then removes exactly those."""
    start, middle, desired = world
    h = Harness()
    assert h.client.post_farms(start).ok
    read = h.client.get_farms()
    assert h.client.apply(diff(middle, read.owned).main).ok
    h.checks = [never_dark]
    read = h.client.get_farms()
    marked = marked_farms(desired, read.owned)
    plan = diff_marked(marked, read.owned, read.unparsable)
    assert all(op.kind is OpKind.DELETE_BACKEND for op in plan.cleanup)
    assert h.client.apply(plan.main).ok
    after = h.client.get_farms().by_name()
    assert after == held_farms(marked, read.owned, plan)
    serving = [
        evolve(f, backends=tuple(b for b in f.backends if not is_spare(b))) for f in after.values()
    ]
    assert unmarked(serving) == unmarked(desired)
    spares = sum(len(f.backends) for f in after.values()) - sum(len(f.backends) for f in desired)
    event(f"spares after the main part: {min(spares, 5)}")
    event(f"takeovers: {min(sum(len(op.renames) for op in plan), 3)}")
    assert h.client.apply(plan.cleanup).ok
    assert h.client.get_farms().by_name() == marked


# -- the regression of issue 11 --------------------------------------------------------------


def _v4(name: str, vip: str, *backends: tuple[str, int]) -> Farm:
    return Farm(
        name,
        Family.IPV4,
        Protocol.TCP,
        (Address(f"{name}-addr", Family.IPV4, vip, 80, Protocol.TCP),),
        tuple(Backend(backend_name(ip, 8080), ip, 8080, 1, mark) for ip, mark in backends),
    )


def test_regression_replacing_an_endpoint_never_reuses_the_departing_mark() -> None:
    """Issue 11: one endpoint of `web` replaced. The old `_mark` numbered around the backends
    that stay and gave the new one mark 1, which the departing backend still held until its
    DELETE: nftlb 1.0.7 then dropped the rules of `web` and, as it is the first farm of its
    table, of every IPv4 farm. The model breaks on that state as nftlb does."""
    web = _v4("k8s.default.web.http.tcp.v4", "10.96.0.1", ("10.1.0.1", 1), ("10.1.0.2", 2))
    dns = _v4("k8s.kube-system.dns.dns.tcp.v4", "10.96.0.10", ("10.1.0.9", 1))
    new = Backend(backend_name("10.1.0.3", 8080), "10.1.0.3", 8080)
    rolled = evolve(web, backends=(web.backends[1], new))
    plan = diff([rolled, dns], [web, dns])
    first = plan.operations[0]
    assert (first.kind, [b.mark for b in first.backends]) == (OpKind.UPSERT_BACKENDS, [3])
    run([web, dns], [rolled, dns])  # every request checked
    # The state the old marks made: the new backend on mark 1 while the old one still holds it.
    bad = Harness()
    assert bad.client.post_farms([web, dns]).ok
    clash = evolve(web, backends=(*web.backends, evolve(new, mark=1)))
    assert bad.client.post_farms([clash]).ok  # nftlb answers 200
    assert bad.model.dark_farms() == {web.name: "mark", dns.name: "table"}
    with pytest.raises(AssertionError, match="without rules"):
        never_dark(bad.model)


def _v6(name: str, vip: str, *ips: str) -> Farm:
    return Farm(
        name,
        Family.IPV6,
        Protocol.TCP,
        (Address(f"{name}-addr", Family.IPV6, vip, 80, Protocol.TCP),),
        tuple(Backend(backend_name(ip, 8080), ip, 8080, 1, i + 1) for i, ip in enumerate(ips)),
    )


def test_regression_a_farm_created_after_an_ipv6_wipe_is_never_the_repair_target() -> None:
    """Found by the prefix property (dev profile): an IPv6 farm's frontend moves (nftlb drops
    the other IPv6 farms' rules), then a new IPv6 farm is created and its answer is lost. The
    next sync's repair picked the new farm (first by name) as its target; it has its rules, so
    changing it rebuilt nothing and the wiped farm stayed dark. A farm sent for creation after
    the wipe is intact whether or not its answer arrived."""
    wiped = _v6("k8s.z.wiped.http.tcp.v6", "fd00::1", "fd01::1", "fd01::2")
    moving = _v6("k8s.m.moving.http.tcp.v6", "fd00::2", "fd01::3")
    new = _v6("k8s.a.new.http.tcp.v6", "fd00::3", "fd01::4")
    moved = evolve(moving, addresses=(evolve(moving.addresses[0], ip="fd00::9"),))
    plan = diff([wiped, moved, new], [wiped, moving])
    assert [op.kind for op in plan] == [OpKind.UPDATE_FARM, OpKind.CREATE_FARM]
    # Requests: 0 the sync's GET, 1 the move (the wipe), 2 the create, cut after nftlb took it.
    h, _ = run([wiped, moving], [wiped, moved, new], {2: "cut-after"})
    assert h.trace[-5:-1] == ["GET /farms", "GET /farms", "POST /farms", "POST /farms"]


def test_regression_a_takeover_whose_answer_is_lost_is_never_sent_again() -> None:
    """Found by the prefix property over spares: a new backend took over a spare, nftlb
    carried the POST out and the answer was lost. The client re-sent it as it re-sends any
    reset request: nftlb found no backend under the spare's name any more, created one and
    renamed it too, so the farm held two backends on one name (unreadable: the next sync
    replaced the whole farm). A takeover is sent once; a lost answer fails the sync and the
    next one reads nftlb back."""
    web = _v4("k8s.default.web.http.tcp.v4", "10.96.0.1", ("10.1.0.1", 1), ("10.1.0.2", 2))
    rolled = evolve(web, backends=web.backends[:1])
    new = Backend(backend_name("10.1.0.3", 8080), "10.1.0.3", 8080)
    want = evolve(web, backends=(web.backends[0], new))
    h = Harness()
    assert h.client.post_farms([web]).ok
    assert h.client.apply(diff([rolled], h.client.get_farms().owned).main).ok
    plan = diff([want], h.client.get_farms().owned)
    assert plan.operations[0].renames == ((new.name, web.backends[1].name),)
    # Requests from here: 0 the sync's GET, 1 the takeover, carried out but its answer lost.
    h, _ = run([web], [want], {1: "reset-after"}, middle=[rolled])
    # create, read, retire; read, the takeover (once); the next sync's read finds it done
    assert (
        h.trace
        == ["POST /farms", "GET /farms", "POST /farms", "GET /farms", "POST /farms"]
        + ["GET /farms"] * 2
    )
    read = h.client.get_farms()
    assert [(b.name, b.mark) for b in read.by_name()[web.name].backends] == [
        (web.backends[0].name, 1),
        (new.name, 2),
    ]
