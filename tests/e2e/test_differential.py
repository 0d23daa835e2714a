"""Differential test: the in-memory NftlbModel against the real daemon, through one client.

Random sequences of plan operations go to both; after every step the raw ``GET /farms``
documents, and the normalised read-backs, must be equal, and equal to what was wanted, and
both clients must have sent the same requests (IPv6 repairs included). This is what keeps
`reconciler.testing.nftlb_model` honest, so that the fast tests built on it mean something. As GET
is not the truth, the kernel must also hold exactly the wanted farms' elements after every step:
that checks the IPv6 repair of `NftlbClient.apply` under random sequences.

The generator makes what the reconciler makes (farms `validate_farm` accepts: one frontend,
sent as the farm's own shorthand; no persistence or hash keys that crash libnftables; no
IPv4-only helpers on IPv6), and no two farms of one family forward logging, which nftlb
1.0.7 cannot stop cleanly. Farms may share a ct helper object (same family, helper and
protocol), which nftlb 1.0.7 cannot stop either: then, as the plan does, a change that stops
one, or its delete, turns it off first (`Operation.stop_first`).
test_nftlb_client_e2e.py characterises what happens outside.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from attrs import evolve
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from reconciler.core.farms import (
    FARM_FIELDS,
    LOG_HOOKS,
    MAX_MARK,
    PACKET_FIELDS,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    helper_fits,
    persistence_fits,
    sched_param_fits,
    validate_farm,
)
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.plan import RESTART_FIELDS, Operation, OpKind, Plan
from reconciler.core.wire import Request
from reconciler.nftlb.client import ApplyResult, NftlbClient
from reconciler.testing.nftlb_model import NftlbModel

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

SETTINGS = settings(
    max_examples=int(os.environ.get("KUBE_NFTLB_DIFF_EXAMPLES", "20")),
    stateful_step_count=8,
    deadline=None,
    # No shrinking: against the real daemon it takes minutes, and an example is <= 8 steps.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SERVICES = st.sampled_from(["web", "api", "db", "dns", "ftp", "sip"])
OCTETS = st.integers(1, 40)
PORTS = st.sampled_from([21, 53, 69, 80, 443, 5060, 8080, 30080])
MARKS = st.integers(1, MAX_MARK)


def vip(family: Family, octet: int) -> str:
    return f"10.96.0.{octet}" if family is Family.IPV4 else f"fd00::{octet:x}"


def endpoint_ip(family: Family, octet: int) -> str:
    return f"10.1.0.{octet}" if family is Family.IPV4 else f"fd01::{octet:x}"


def tokens(order: tuple[str, ...], *, min_size: int = 0) -> st.SearchStrategy[tuple[str, ...]]:
    return st.sets(st.sampled_from(order), min_size=min_size).map(
        lambda s: tuple(t for t in order if t in s)
    )


#: Every canonical token set of the packet fields (64 of them).
TOKEN_SETS = [
    tuple(t for i, t in enumerate(PACKET_FIELDS) if bits & (1 << i))
    for bits in range(1 << len(PACKET_FIELDS))
]


@st.composite
def farm_fields(draw: st.DrawFn, family: Family, protocol: Protocol) -> dict[str, object]:
    """Farm-level fields nftlb 1.0.7 can carry out for this family and protocol (what
    `validate_farm` accepts: measured limits, see test_nftlb_client_e2e)."""
    scheduler = draw(st.sampled_from(Scheduler))
    persistence = draw(st.sampled_from([t for t in TOKEN_SETS if persistence_fits(family, t)]))
    hashed = st.sampled_from([t for t in TOKEN_SETS if t and sched_param_fits(family, t)])
    helpers = [h for h in Helper if helper_fits(family, protocol, h)]
    return {
        "mode": draw(st.sampled_from(Mode)),
        "scheduler": scheduler,
        "sched_param": draw(hashed) if scheduler is Scheduler.HASH else (),
        "persistence": persistence,
        "persist_ttl": draw(st.sampled_from([0, 60, 300, 10800])),
        "helper": draw(st.sampled_from(helpers)),
        "log": draw(tokens(LOG_HOOKS)),
        "est_connlimit": draw(st.sampled_from([0, 10])),
        "intra_connect": draw(st.booleans()),
    }


@st.composite
def backends(
    draw: st.DrawFn, family: Family, count: int, used_marks: set[int]
) -> tuple[Backend, ...]:
    """Up to `count` backends with marks not in `used_marks` (which it extends)."""
    out = []
    endpoints = draw(st.lists(st.tuples(OCTETS, PORTS), min_size=count, max_size=count))
    for octet, port in dict.fromkeys(endpoints):
        mark = draw(MARKS.filter(lambda m: m not in used_marks))
        used_marks.add(mark)
        ip = endpoint_ip(family, octet)
        out.append(Backend(backend_name(ip, port), ip, port, draw(st.integers(1, 5)), mark))
    return tuple(out)


class Differential(RuleBasedStateMachine):
    """One example: a fresh model, the real daemon emptied by farm name, and random steps."""

    daemon: NftlbDaemon

    def __init__(self) -> None:
        super().__init__()
        # Farms are deleted by name (never DELETE /farms); the daemon is restarted only when
        # that leaves rules behind, which nftlb 1.0.7 does (IPv6 farms deleted one by one).
        self.daemon.reset()
        self.real = self.daemon.client()
        self.model = NftlbModel(self.daemon.key)
        transport = httpx.MockTransport(self.model.as_handler())
        self.fake = NftlbClient("http://nftlb", self.daemon.key, transport=transport)
        self.wanted: dict[str, Farm] = {}

    def teardown(self) -> None:
        self.real.close()
        self.fake.close()

    def used_tuples(self, skip: str = "") -> set[tuple[Protocol, str, int]]:
        return {a.tuple_key for f in self.wanted.values() if f.name != skip for a in f.addresses}

    def apply(self, op: Operation, after: Farm | None) -> None:
        """Send `op` to both; `after` is the farm it should leave (None: gone). Both must
        answer alike, with the same requests (IPv6 repairs included), and succeed."""
        plan = Plan((op,))
        real: ApplyResult = self.real.apply(plan)
        fake: ApplyResult = self.fake.apply(plan)
        assert real == fake
        assert real.ok, real.failures
        if after is None:
            self.wanted.pop(op.farm_name, None)
        else:
            self.wanted[op.farm_name] = after

    @initialize()
    def empty(self) -> None:
        assert self.real.get_farms_document() == {"farms": []}

    def unshared(
        self,
        name: str,
        fields: dict[str, object],
        family: Family,
        protocol: Protocol,
        share: bool = False,
    ) -> dict[str, object]:
        """`fields` without what nftlb 1.0.7 cannot stop once another farm shares it (see
        test_nftlb_client_e2e): the base forward chain of a family's forward logs, and unless
        `share`, a ct helper object (one per family, helper and protocol). The reconciler
        makes neither, but may find shared helpers in nftlb: the plan turns such a farm off
        to change or delete it (`Operation.stop_first`), as `self.stops` does here."""
        others = [f for f in self.wanted.values() if f.name != name and f.family is family]
        helper = fields["helper"]
        if not share and any(f.helper is helper and f.protocol is protocol for f in others):
            fields = fields | {"helper": Helper.NONE}
        peers = [f.helper for f in others if f.protocol is protocol and f.helper is not Helper.NONE]
        if share and peers:  # take another farm's helper: share its object
            fields = fields | {"helper": peers[0]}
        log: tuple[str, ...] = fields["log"]  # type: ignore[assignment]
        if any("forward" in f.log for f in others):
            fields = fields | {"log": tuple(h for h in log if h != "forward")}
        return fields

    def stops(self, farm: Farm, fields: tuple[str, ...] | None) -> bool:
        """Whether the plan would turn `farm` off first: another farm shares its ct helper
        object and the operation (`fields` changed, or None: a delete) stops it."""
        shared = farm.helper is not Helper.NONE and any(
            (f.family, f.protocol, f.helper) == (farm.family, farm.protocol, farm.helper)
            for f in self.wanted.values()
            if f.name != farm.name
        )
        return shared and (fields is None or not RESTART_FIELDS.isdisjoint(fields))

    def frontend(
        self, data: st.DataObject, name: str, family: Family, protocol: Protocol
    ) -> Address | None:
        """A frontend for farm `name` whose (protocol, address, port) no other farm holds."""
        octet, port = data.draw(st.tuples(OCTETS, PORTS), label="frontend")
        address = Address(address_name(name), family, vip(family, octet), port, protocol)
        return None if address.tuple_key in self.used_tuples(skip=name) else address

    @rule(data=st.data(), service=SERVICES, family=st.sampled_from(Family))
    def create_farm(self, data: st.DataObject, service: str, family: Family) -> None:
        protocol = data.draw(st.sampled_from(Protocol))
        share = data.draw(st.booleans(), label="may share a ct helper")
        self.create(data, service, family, protocol, share)

    @precondition(lambda self: any(f.helper is not Helper.NONE for f in self.wanted.values()))
    @rule(data=st.data(), service=SERVICES)
    def create_farm_sharing_a_helper(self, data: st.DataObject, service: str) -> None:
        peer = data.draw(
            st.sampled_from([f for f in self.wanted.values() if f.helper.value != "none"])
        )
        self.create(data, service, peer.family, peer.protocol, True)

    def create(
        self, data: st.DataObject, service: str, family: Family, protocol: Protocol, share: bool
    ) -> None:
        name = farm_name(FarmKey("diff", service, "p", protocol, family))
        if name in self.wanted:
            return
        address = self.frontend(data, name, family, protocol)
        if address is None:
            return
        count = data.draw(st.integers(0, 3))
        fields = data.draw(farm_fields(family, protocol))
        fields = self.unshared(name, fields, family, protocol, share)
        farm = Farm(
            name,
            family,
            protocol,
            (address,),
            data.draw(backends(family, count, set())),
            **fields,  # type: ignore[arg-type]
        )
        assert validate_farm(farm) == [], validate_farm(farm)
        self.apply(Operation(OpKind.CREATE_FARM, name, farm=farm), farm)

    def pick(self, data: st.DataObject) -> Farm:
        return self.wanted[data.draw(st.sampled_from(sorted(self.wanted)))]

    @precondition(lambda self: self.wanted)
    @rule(data=st.data())
    def update_fields(self, data: st.DataObject) -> None:
        self.update(data, self.pick(data))

    @precondition(lambda self: self.sharing())
    @rule(data=st.data(), delete=st.booleans())
    def change_a_farm_sharing_a_helper(self, data: st.DataObject, delete: bool) -> None:
        farm = data.draw(st.sampled_from(self.sharing()))
        if delete:
            self.apply(Operation(OpKind.DELETE_FARM, farm.name, stop_first=True), None)
        else:
            self.update(data, farm)

    def sharing(self) -> list[Farm]:
        return [f for f in self.wanted.values() if self.stops(f, None)]

    def update(self, data: st.DataObject, farm: Farm) -> None:
        fields = data.draw(farm_fields(farm.family, farm.protocol))
        share = data.draw(st.booleans(), label="may share a ct helper")
        fields = self.unshared(farm.name, fields, farm.family, farm.protocol, share)
        wanted = evolve(farm, **fields)  # type: ignore[arg-type]
        changed = tuple(f for f in FARM_FIELDS if getattr(farm, f) != getattr(wanted, f))
        if data.draw(st.booleans(), label="move the frontend"):
            address = self.frontend(data, farm.name, farm.family, farm.protocol)
            if address is not None and address != farm.addresses[0]:
                wanted = evolve(wanted, addresses=(address,))
                changed += ("addresses",)
        assert validate_farm(wanted) == [], validate_farm(wanted)
        stop = self.stops(farm, changed)
        op = Operation(OpKind.UPDATE_FARM, farm.name, farm=wanted, fields=changed, stop_first=stop)
        self.apply(op, wanted)

    @precondition(lambda self: self.wanted)
    @rule(data=st.data())
    def upsert_backends(self, data: st.DataObject) -> None:
        farm = self.pick(data)
        changed = tuple(
            evolve(b, weight=b.weight % 5 + 1)
            for b in farm.backends
            if data.draw(st.booleans(), label=f"change {b.name}")
        )
        used = {b.mark for b in farm.backends}
        count = data.draw(st.integers(0, 2))
        new = data.draw(backends(farm.family, count, used))
        new = tuple(b for b in new if farm.backend(b.name) is None)
        if not changed and not new:
            return
        kept = {b.name: b for b in farm.backends} | {b.name: b for b in (*changed, *new)}
        op = Operation(OpKind.UPSERT_BACKENDS, farm.name, backends=(*changed, *new))
        self.apply(op, evolve(farm, backends=tuple(kept.values())))

    @precondition(lambda self: any(f.backends for f in self.wanted.values()))
    @rule(data=st.data())
    def delete_backend(self, data: st.DataObject) -> None:
        farm = data.draw(st.sampled_from([f for f in self.wanted.values() if f.backends]))
        gone = data.draw(st.sampled_from(farm.backends))
        after = evolve(farm, backends=tuple(b for b in farm.backends if b != gone))
        self.apply(Operation(OpKind.DELETE_BACKEND, farm.name, target=gone.name), after)

    @precondition(lambda self: self.wanted)
    @rule(data=st.data())
    def delete_farm(self, data: st.DataObject) -> None:
        farm = self.pick(data)
        stop = self.stops(farm, None)
        self.apply(Operation(OpKind.DELETE_FARM, farm.name, stop_first=stop), None)

    @invariant()
    def model_and_daemon_agree(self) -> None:
        real_doc = self.real.get_farms_document()
        assert real_doc == self.fake.get_farms_document()
        real = self.real.get_farms()
        assert real == self.fake.get_farms()
        assert real.owned == tuple(sorted(self.wanted.values(), key=lambda f: f.name))
        assert (real.foreign, real.unparsable) == ((), ())

    @invariant()
    def the_kernel_holds_exactly_the_wanted_farms(self) -> None:
        self.daemon.assert_kernel(self.wanted.values())
        assert all(f.rules for f in self.model.farms.values())


def test_model_matches_the_daemon(clean_daemon: NftlbDaemon) -> None:
    Differential.daemon = clean_daemon
    run_state_machine_as_test(Differential, settings=SETTINGS)


# -- the states nftlb 1.0.7 breaks on (issue 11) ---------------------------------------------


def _farm(name: str, family: str, vip: str, *backends: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "virtual-addr": vip,
        "virtual-ports": "80",
        "protocol": "tcp",
        "mode": "snat",
        "backends": [_backend(*b) for b in backends],
    }


def _backend(name: str, ip: str, mark: int) -> dict[str, str]:
    return {"name": name, "ip-addr": ip, "port": "8080", "mark": f"{mark:#x}", "state": "up"}


def _post(*farms: dict[str, Any]) -> Request:
    return Request("POST", "/farms", {"farms": list(farms)})


_START = (
    _post(_farm("a", "ipv4", "10.96.0.1", ("a1", "10.1.0.1", 1), ("a2", "10.1.0.2", 2))),
    _post(_farm("b", "ipv4", "10.96.0.2", ("b1", "10.1.0.3", 1))),
    _post(_farm("c6", "ipv6", "fd00::1", ("c1", "fd01::1", 1))),
)

#: Each: requests after `_START`; after each one the model and the kernel must agree on which
#: farms have no rules.
BREAKING: dict[str, tuple[Request, ...]] = {
    "two backends of a later farm on one mark, then an unrelated change, then the repair": (
        _post({"name": "b", "backends": [_backend("b2", "10.1.0.4", 1)]}),
        _post({"name": "a", "backends": [_backend("a3", "10.1.0.9", 3)]}),
        Request("DELETE", "/farms/b/backends/b1"),
    ),
    "two backends of the first farm on one mark wipe its whole table": (
        _post({"name": "a", "backends": [_backend("a9", "10.1.0.9", 1)]}),
        _post({"name": "b", "backends": [_backend("b9", "10.1.0.19", 2)]}),
        Request("DELETE", "/farms/a/backends/a1"),
    ),
    "two backends of an IPv6 farm on one mark": (
        _post({"name": "c6", "backends": [_backend("c2", "fd01::2", 1)]}),
        Request("DELETE", "/farms/c6/backends/c1"),
    ),
    "a new farm with two backends on one mark": (
        _post(_farm("e", "ipv4", "10.96.0.5", ("e1", "10.1.0.5", 1), ("e2", "10.1.0.6", 1))),
        Request("DELETE", "/farms/e/backends/e2"),
    ),
    "a new farm on another farm's frontend, then deleted": (
        _post(_farm("d", "ipv4", "10.96.0.1", ("d1", "10.1.0.5", 1))),
        Request("DELETE", "/farms/d"),
    ),
    "a farm moved onto another's frontend stays dark after that one leaves": (
        _post({"name": "b", "virtual-addr": "10.96.0.1"}),
        _post({"name": "a", "virtual-addr": "10.96.0.3"}),
        _post({"name": "b", "backends": [_backend("b2", "10.1.0.4", 2)]}),
    ),
    "the first farm on a later farm's frontend": (
        _post({"name": "a", "virtual-addr": "10.96.0.2"}),
        _post({"name": "a", "virtual-addr": "10.96.0.4"}),
        _post({"name": "b", "backends": [_backend("b2", "10.1.0.4", 2)]}),
    ),
}


def _kernel_dark(daemon: NftlbDaemon, names: list[str]) -> set[str]:
    """Farms nftlb lists whose frontend the kernel does not send to their chain."""
    targets = set(daemon.service_elements().values())
    return {n for n in names if f"nat-{n}" not in targets}


@pytest.mark.parametrize("steps", list(BREAKING.values()), ids=list(BREAKING))
def test_model_and_daemon_break_alike(
    clean_daemon: NftlbDaemon, steps: tuple[Request, ...]
) -> None:
    """The model says which farms have no rules, and why (`NftlbModel.dark_farms`); the
    kernel must agree after every request, and GET must be the same."""
    model = NftlbModel(clean_daemon.key)
    fake = NftlbClient(
        "http://nftlb", clean_daemon.key, transport=httpx.MockTransport(model.as_handler())
    )
    with clean_daemon.client() as real:
        for i, request in enumerate((*_START, *steps)):
            assert real.send(request) == fake.send(request), request.summary
            names = [f["name"] for f in real.get_farms_document()["farms"]]
            assert real.get_farms_document() == fake.get_farms_document()
            dark = model.dark_farms()
            assert set(dark) == _kernel_dark(clean_daemon, names), (i, request.summary, dark)
            if i < len(_START):
                assert dark == {}
