"""The client against the real nftlb 1.0.7: what GET reads back, and what the kernel holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from attrs import evolve

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
    validate_farm,
    validate_farms,
)
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.plan import Operation, OpKind, Plan
from reconciler.core.wire import (
    JSONObject,
    Request,
    backend_body,
    farm_body,
    post_farms_request,
    update_body,
)
from reconciler.nftlb.client import (
    UNAUTHORIZED_MESSAGE,
    NftlbClient,
    NftlbRejected,
    NftlbUnauthorized,
    NftlbUnavailable,
    wipes_ipv6,
)
from reconciler.testing.nftlb_model import NftlbModel

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon


def make_farm(
    service: str,
    family: Family,
    protocol: Protocol,
    vip: tuple[str, int],
    endpoints: list[tuple[str, int]],
    *,
    weights: list[int] | None = None,
    **fields: object,
) -> Farm:
    """A farm with its one frontend (`vip`), as the reconciler builds them."""
    name = farm_name(FarmKey("e2e", service, "p", protocol, family))
    addresses = (Address(address_name(name), family, vip[0], vip[1], protocol),)
    backends = tuple(
        Backend(backend_name(ip, port), ip, port, (weights or [1] * len(endpoints))[i], i + 1)
        for i, (ip, port) in enumerate(endpoints)
    )
    return Farm(name, family, protocol, addresses, backends, **fields)  # type: ignore[arg-type]


V4, V6, TCP, UDP, SCTP = Family.IPV4, Family.IPV6, Protocol.TCP, Protocol.UDP, Protocol.SCTP

FARMS_V4 = [
    make_farm(
        "web",
        V4,
        TCP,
        ("10.96.0.10", 80),
        [("10.1.0.2", 8080), ("10.1.0.3", 8080)],
        helper=Helper.FTP,
    ),
    make_farm(
        "dns",
        V4,
        UDP,
        ("10.96.0.53", 53),
        [("10.1.0.4", 5353)],
        mode=Mode.DNAT,
        scheduler=Scheduler.HASH,
        sched_param=("srcip", "srcport"),
        persistence=("srcip",),
        persist_ttl=300,
        log=("input", "output"),
        helper=Helper.TFTP,
        est_connlimit=5,
        intra_connect=False,
    ),
    make_farm(
        "sig",
        V4,
        SCTP,
        ("10.96.0.36", 3868),
        [("10.1.0.5", 3868), ("10.1.0.6", 3868)],
        weights=[3, 1],
        scheduler=Scheduler.WEIGHT,
    ),
    make_farm(
        "idle",
        V4,
        TCP,
        ("10.96.0.99", 80),
        [],
        scheduler=Scheduler.SYMHASH,
        intra_connect=False,
    ),
    make_farm(
        "voip",
        V4,
        UDP,
        ("10.96.0.60", 5060),
        [("10.1.0.7", 5060)],
        helper=Helper.SIP,
        persistence=("srcip", "dstport"),
    ),
]
FARMS_V6 = [
    make_farm(
        "web",
        V6,
        TCP,
        ("fd00::10", 80),
        [("fd01::2", 8080), ("fd01::3", 8080)],
        persistence=("srcip",),
        helper=Helper.FTP,
    ),
    make_farm(
        "dns",
        V6,
        UDP,
        ("fd00::53", 53),
        [("fd01::4", 53)],
        mode=Mode.DNAT,
        scheduler=Scheduler.HASH,
        sched_param=("srcip", "dstport"),
        persistence=("srcport", "dstport"),
        helper=Helper.TFTP,
    ),
]


def creates(farms: list[Farm]) -> Plan:
    return Plan(tuple(Operation(OpKind.CREATE_FARM, f.name, farm=f) for f in farms))


def by_name(farms: list[Farm]) -> tuple[Farm, ...]:
    return tuple(sorted(farms, key=lambda f: f.name))


def by_name_names(farms: list[Farm]) -> tuple[str, ...]:
    return tuple(sorted(f.name for f in farms))


def test_farms_read_back_equal_and_the_kernel_holds_exactly_them(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    farms = FARMS_V4 + FARMS_V6
    assert validate_farms(farms) == []
    result = client.apply(creates(farms))
    assert result.ok, result.failures
    assert result.requests == 1
    read = client.get_farms()
    assert read.owned == by_name(farms)
    assert (read.foreign, read.unparsable) == ((), ())
    clean_daemon.assert_kernel(farms)


def test_deleting_every_ipv4_farm_leaves_nothing(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    assert client.apply(creates(FARMS_V4)).ok
    clean_daemon.assert_kernel(FARMS_V4)
    plan = Plan(tuple(Operation(OpKind.DELETE_FARM, f.name) for f in FARMS_V4))
    assert client.apply(plan).ok
    assert client.get_farms_document() == {"farms": []}
    assert clean_daemon.tables() == set()


def test_changes_in_place(clean_daemon: NftlbDaemon, client: NftlbClient) -> None:
    """Field updates, the frontend moved in place, backends upserted and deleted."""
    farm = FARMS_V4[0]
    others = FARMS_V4[1:3]
    assert client.apply(creates([farm, *others])).ok
    keep, gone = farm.backends
    new_backend = Backend(backend_name("10.1.0.9", 8080), "10.1.0.9", 8080, 2, 3)
    wanted = evolve(
        farm,
        addresses=(evolve(farm.addresses[0], ip="10.96.0.11", port=8080),),
        backends=(evolve(keep, port=9090, weight=4), new_backend),
        scheduler=Scheduler.HASH,
        sched_param=("dstip",),
        persistence=("srcip",),
        persist_ttl=120,
        helper=Helper.NONE,
        log=("input", "output"),
        est_connlimit=7,
        intra_connect=False,
    )
    # Never the mark of the backend being deleted: both are in nftlb until its DELETE (issue 11).
    wanted = assign_marks(wanted, farm)
    added = wanted.backend(new_backend.name)
    assert added is not None and added.mark not in {keep.mark, gone.mark}
    plan = diff([wanted, *others], client.get_farms().owned)
    assert [(op.kind, op.fields, op.target) for op in plan] == [
        (OpKind.UPDATE_FARM, (*FIELDS_CHANGED, "addresses"), ""),
        (OpKind.UPSERT_BACKENDS, (), ""),
        (OpKind.RETIRE_BACKENDS, (), ""),
        (OpKind.DELETE_BACKEND, (), gone.name),
    ]
    result = client.apply(plan.main)  # the departing backend retired: down, a spare
    assert result.ok, result.failures
    assert result.repairs == 0  # IPv4 only
    clean_daemon.assert_kernel([wanted, *others])
    held = client.get_farms().by_name()[wanted.name]
    assert held.backend(gone.name) == evolve(gone, port=0)
    assert client.apply(plan.cleanup).ok
    assert client.get_farms().owned == by_name([wanted, *others])
    clean_daemon.assert_kernel([wanted, *others])


FIELDS_CHANGED = (
    "scheduler",
    "sched_param",
    "persistence",
    "persist_ttl",
    "helper",
    "log",
    "est_connlimit",
    "intra_connect",
)


def test_chunk_isolation_keeps_the_good_farms(
    clean_daemon: NftlbDaemon, nftlb_daemon: NftlbDaemon
) -> None:
    farms = [
        make_farm(f"s{i}", V4, TCP, (f"10.96.1.{i + 1}", 80), [(f"10.1.1.{i + 1}", 8080)])
        for i in range(10)
    ]
    # Two farms that bypass validation. nftlb answers 400 to the first (weight 0) ...
    bad = evolve(farms[2], backends=(evolve(farms[2].backends[0], weight=0),))
    # ... and 200 to the second, which takes farm 0's (protocol, address, port): it silently
    # gets no rules at all (nft "File exists", then a recovery that rebuilds the others).
    clash = evolve(farms[6], addresses=(evolve(farms[6].addresses[0], ip="10.96.1.1"),))
    farms[2], farms[6] = bad, clash
    assert validate_farms(farms)
    with nftlb_daemon.client(chunk_size=4) as client:
        result = client.apply(creates(farms))
        assert [(f.farm, f.status) for f in result.failures] == [(bad.name, 400)]
        assert "weight" in result.failures[0].message
        assert result.failures[0].present  # nftlb applied the keys before the bad one
        assert result.isolated_chunks == 1
        good = [f for f in farms if f not in (bad, clash)]
        owned = client.get_farms().by_name()
        assert [owned[f.name] for f in good] == good
        assert clash.name in owned  # GET lists it as if it were fine
    elements = clean_daemon.service_elements()
    wanted = clean_daemon.expected_service_elements(good)
    assert {k: v for k, v in elements.items() if k in wanted} == wanted
    assert not any(clash.name in chain for chain in elements.values())
    dnat = clean_daemon.dnat_entries()
    for f in good:
        assert dnat[f"nat-{f.name}"] == clean_daemon.expected_dnat_entries([f])[f"nat-{f.name}"]
    assert f"nat-{clash.name}" not in dnat


def test_a_wrong_key_is_refused(nftlb_daemon: NftlbDaemon) -> None:
    with (
        NftlbClient(nftlb_daemon.url, "not-the-key") as client,
        pytest.raises(NftlbUnauthorized) as info,
    ):
        client.get_farms()
    assert str(info.value) == UNAUTHORIZED_MESSAGE
    assert nftlb_daemon.key not in str(info.value)
    # nftlb matches the header case-sensitively: a lower-case "key:" is refused too.
    answer = httpx.get(f"{nftlb_daemon.url}/farms", headers={"key": nftlb_daemon.key})
    assert (answer.status_code, answer.content) == (401, b"")


def test_a_warning_is_an_error(client: NftlbClient) -> None:
    with pytest.raises(NftlbRejected) as info:
        client.send(Request("POST", "/farms", {"farms": [{"name": "x", "mode": "bogus"}]}))
    assert info.value.status == 200
    assert "Parsing unknown value 'bogus' in 'mode'" in info.value.response


def test_many_farms_in_chunks(clean_daemon: NftlbDaemon) -> None:
    farms = [
        make_farm(
            f"bulk{i}",
            V4,
            TCP,
            (f"10.97.{i // 200}.{i % 200 + 1}", 80),
            [(f"10.2.{i // 200}.{i % 200 + 1}", 8000 + j) for j in range(4)],
        )
        for i in range(300)
    ]
    with clean_daemon.client(chunk_size=50) as client:
        result = client.apply(creates(farms))
        assert result.ok
        assert result.requests == 6
        assert client.get_farms().owned == by_name(farms)
    clean_daemon.assert_kernel(farms)


IPV6_WIPERS: dict[str, dict[str, object]] = {
    "mode": {"mode": Mode.DNAT},
    "persistence": {"persistence": ("srcport",)},
    "persist-ttl": {"persist_ttl": 120},
    "helper": {"helper": Helper.NONE},
    "log": {"log": ("input",)},
    "intra-connect": {"intra_connect": False},
}
IPV6_NOT_WIPERS: dict[str, dict[str, object]] = {
    "scheduler": {"scheduler": Scheduler.WEIGHT},
    "sched-param": {"sched_param": ("srcip",)},
    "est-connlimit": {"est_connlimit": 9},
}


def _ipv6_trio() -> tuple[Farm, Farm, Farm]:
    web, dns = FARMS_V6
    third = make_farm("api", V6, TCP, ("fd00::80", 80), [("fd01::8", 8080)], est_connlimit=3)
    return web, dns, third


@pytest.mark.parametrize(
    "trigger",
    ["delete", "virtual-addr", "virtual-ports", *IPV6_WIPERS, *IPV6_NOT_WIPERS, "backends"],
)
def test_which_ipv6_operations_drop_the_other_ipv6_farms_rules(
    clean_daemon: NftlbDaemon, client: NftlbClient, trigger: str
) -> None:
    """Characterises an nftlb 1.0.7 bug (also in 1.0.8): nft.c counts every IPv6 service
    element in the IPv4 counters (``update_service_counters(a, type, family, 0, ...)`` swaps
    two arguments), so whenever nftlb stops an IPv6 farm's rules it deletes the whole ``ip6
    nftlb`` table. Measured with single-frontend farms, sent raw (no repair):

    * deleting an IPv6 farm, or changing its mode, persistence, persist-ttl, helper, log,
      intra-connect, virtual-addr or virtual-ports, drops every *other* IPv6 farm's rules
      (the changed farm keeps its own; IPv4 farms are untouched; GET still says up);
    * scheduler, sched-param and est-connlimit changes and backend changes do not.

    `reconciler.nftlb.client.IPV6_WIPING_FIELDS` must list exactly the wiping fields. If this test
    fails, nftlb has changed: read the module docstring of reconciler/nftlb.py."""
    web, dns, third = _ipv6_trio()
    v4 = FARMS_V4[0]
    assert client.apply(creates([web, dns, third, v4])).ok
    clean_daemon.assert_kernel([web, dns, third, v4])
    changed: Farm | None
    fields: tuple[str, ...]
    if trigger == "delete":
        client.delete_farm(web.name)
        changed = None
    elif trigger == "backends":
        new = Backend(backend_name("fd01::9", 8080), "fd01::9", 8080, 1, 99)
        client.send(post_farms_request([{"name": web.name, "backends": [backend_body(new)]}]))
        client.send(Request("DELETE", f"/farms/{web.name}/backends/{web.backends[0].name}"))
        changed = evolve(web, backends=(web.backends[1], new))
    else:
        if trigger in ("virtual-addr", "virtual-ports"):
            frontend = web.addresses[0]
            moved = (
                evolve(frontend, ip="fd00::11")
                if trigger == "virtual-addr"
                else evolve(frontend, port=81)
            )
            changed, fields = evolve(web, addresses=(moved,)), ("addresses",)
        else:
            change = (IPV6_WIPERS | IPV6_NOT_WIPERS)[trigger]
            if trigger == "sched-param":
                change = {"scheduler": Scheduler.HASH, **change}
            changed = evolve(web, **change)  # type: ignore[arg-type]
            fields = tuple(change)
        assert validate_farm(changed) == []
        client.send(post_farms_request([update_body(changed, fields)]))
        op = Operation(OpKind.UPDATE_FARM, web.name, farm=changed, fields=fields)
        assert wipes_ipv6(op) is (trigger not in IPV6_NOT_WIPERS)
    survivors = [f for f in (changed, dns, third, v4) if f is not None]
    assert client.get_farms().owned == by_name(survivors)
    wiped = trigger in ("delete", "virtual-addr", "virtual-ports", *IPV6_WIPERS)
    if not wiped:
        clean_daemon.assert_kernel(survivors)
        return
    kept = [f for f in (changed, v4) if f is not None]
    assert clean_daemon.service_elements() == clean_daemon.expected_service_elements(kept)
    dnat = clean_daemon.dnat_entries()
    assert f"nat-{dns.name}" not in dnat
    assert f"nat-{third.name}" not in dnat
    # The repair: an est-connlimit change of a wiped farm fails in nft, and nftlb's recovery
    # rebuilds every farm; setting it back is then an ordinary change.
    for value in ("0", "3"):
        client.send(
            Request("POST", "/farms", {"farms": [{"name": third.name, "est-connlimit": value}]})
        )
    clean_daemon.assert_kernel(survivors)
    assert client.get_farms().owned == by_name(survivors)


def test_a_wiped_ipv6_farm_deleted_leaves_its_rules_and_changed_fails(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """Characterises why the repair must come *before* reaching a wiped farm: after an IPv6
    delete, deleting another (wiped) IPv6 farm makes nftlb fail, rebuild everything with
    the doomed farm still in memory, then forget it, so its rules stay in the kernel; and a
    farm-level change of a wiped farm answers 404 and is not applied (after a rebuild)."""
    web, dns, third = _ipv6_trio()
    assert client.apply(creates([web, dns, third])).ok
    client.delete_farm(web.name)
    client.delete_farm(dns.name)
    assert client.get_farms().owned == (third,)
    assert clean_daemon.service_elements() == clean_daemon.expected_service_elements([dns, third])
    clean_daemon.restart()
    assert client.apply(creates([web, dns, third])).ok
    client.delete_farm(web.name)
    with pytest.raises(NftlbRejected) as info:
        client.send(post_farms_request([update_body(evolve(dns, mode=Mode.SNAT), ["mode"])]))
    assert (info.value.status, info.value.response) == (404, "the object to modify is unknown")
    assert client.get_farms().owned == by_name([dns, third])  # not applied, but rebuilt
    clean_daemon.assert_kernel([dns, third])


def test_apply_repairs_the_ipv6_farms_after_a_delete(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """Deleting one of two IPv6 farms through apply(diff(...)) leaves the other with exactly
    its rules: `apply` sends the repair (a GET and two est-connlimit changes)."""
    web, dns = FARMS_V6
    v4 = FARMS_V4[1]
    assert client.apply(creates([web, dns, v4])).ok
    clean_daemon.assert_kernel([web, dns, v4])
    recoveries = clean_daemon.log().count("recovery in progress")
    result = client.apply(diff([dns, v4], client.get_farms().owned))
    assert result.ok, result.failures
    assert (result.repairs, result.requests) == (1, 4)  # DELETE, GET, 2 POSTs
    assert client.get_farms().owned == by_name([dns, v4])
    clean_daemon.assert_kernel([dns, v4])
    assert clean_daemon.leftovers([web.name]) == []
    assert clean_daemon.log().count("recovery in progress") == recoveries + 1


def test_apply_repairs_a_plan_of_several_ipv6_deletes_and_changes(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """Two IPv6 deletes and two IPv6 farm-level changes in one plan: without a repair before
    each wiped farm is reached, the second delete would leave its rules in the kernel and the
    changes would fail with 404. Nothing of the deleted farms is left."""
    farms = [
        make_farm(f"m{i}", V6, TCP, (f"fd00::1:{i}", 80), [(f"fd01::1:{i}", 8080)])
        for i in range(5)
    ]
    v4 = FARMS_V4[2]
    assert client.apply(creates([*farms, v4])).ok
    gone = farms[:2]
    wanted = [
        evolve(farms[2], persistence=("srcip",), scheduler=Scheduler.HASH, sched_param=("srcip",)),
        evolve(farms[3], addresses=(evolve(farms[3].addresses[0], port=8080),)),
        farms[4],
        v4,
    ]
    plan = diff(wanted, client.get_farms().owned)
    assert [op.kind for op in plan] == [OpKind.DELETE_FARM] * 2 + [OpKind.UPDATE_FARM] * 2
    result = client.apply(plan)
    assert result.ok, result.failures
    assert result.repairs == 4
    assert client.get_farms().owned == by_name(wanted)
    clean_daemon.assert_kernel(wanted)
    assert clean_daemon.leftovers([f.name for f in gone]) == []


@pytest.mark.parametrize("family", [V4, V6])
def test_single_frontend_changes_and_deletes_leave_exactly_the_right_rules(
    clean_daemon: NftlbDaemon, client: NftlbClient, family: Family
) -> None:
    """Farm-level changes (persistence on, scheduler), a virtual-port change and a VIP change
    on single-frontend farms of one family, then deleting them all: the kernel holds exactly
    the wanted elements after each step, and nothing at the end."""

    def ip(i: int) -> str:
        return f"10.96.5.{i}" if family is V4 else f"fd00::5:{i}"

    def ep(i: int) -> str:
        return f"10.1.5.{i}" if family is V4 else f"fd01::5:{i}"

    farms = [
        make_farm(
            f"one{i}", family, proto, (ip(i + 1), 80), [(ep(i + 1), 8080), (ep(i + 11), 8080)]
        )
        for i, proto in enumerate((TCP, UDP, TCP))
    ]
    assert client.apply(creates(farms)).ok
    clean_daemon.assert_kernel(farms)
    first, second, third = farms
    steps = [
        [
            evolve(first, persistence=("srcip",), persist_ttl=300),
            evolve(second, scheduler=Scheduler.WEIGHT),
            third,
        ],
        [
            evolve(first, persistence=("srcip",), persist_ttl=300),
            evolve(second, scheduler=Scheduler.HASH, sched_param=("srcip", "srcport")),
            evolve(third, addresses=(evolve(third.addresses[0], port=8443),)),
        ],
        [
            evolve(
                first, addresses=(evolve(first.addresses[0], ip=ip(99), port=81),), mode=Mode.DNAT
            ),
            evolve(second, scheduler=Scheduler.HASH, sched_param=("srcip", "srcport")),
            evolve(third, addresses=(evolve(third.addresses[0], port=8443),), intra_connect=False),
        ],
    ]
    for wanted in steps:
        assert validate_farms(wanted) == []
        result = client.apply(diff(wanted, client.get_farms().owned))
        assert result.ok, result.failures
        assert client.get_farms().owned == by_name(wanted)
        clean_daemon.assert_kernel(wanted)
    result = client.apply(diff([], client.get_farms().owned))
    assert result.ok, result.failures
    assert client.get_farms_document() == {"farms": []}
    clean_daemon.assert_kernel([])
    assert clean_daemon.leftovers([f.name for f in farms]) == []
    assert clean_daemon.tables() == set()


@pytest.mark.parametrize("persistence", [("srcip", "srcport"), ("dstip", "srcmac")])
def test_ipv6_persistence_on_an_address_and_more_crashes_nftlb(
    clean_daemon: NftlbDaemon, persistence: tuple[str, ...]
) -> None:
    """Characterises a crash: an IPv6 farm with backends whose persistence joins srcip or
    dstip with another field makes libnftables 1.0.6 abort (netlink_linearize.c:799,
    ``dreg < ctx->reg_low``) inside nftlb, which dies and, on restart, drops every rule.
    Hash ``sched-param`` with the same fields is fine. validate_farm refuses such farms
    (`farms.persistence_fits`), so this one is sent as a raw body.

    If this test fails, nftlb/libnftables has been fixed: the validation can be relaxed."""
    farm = evolve(FARMS_V6[0], helper=Helper.NONE, persistence=persistence)
    assert any("persistence" in e for e in validate_farm(farm))
    assert (
        validate_farm(
            evolve(farm, persistence=(), scheduler=Scheduler.HASH, sched_param=persistence)
        )
        == []
    )
    with clean_daemon.client(retries=1) as client, pytest.raises(NftlbUnavailable):
        client.send(post_farms_request([farm_body(farm)]))
    assert clean_daemon.process is not None
    assert clean_daemon.process.wait(timeout=5) != 0
    assert "Assertion" in clean_daemon.log()
    clean_daemon.restart()


@pytest.mark.parametrize("helper", [Helper.PPTP, Helper.SNMP])
def test_ipv4_only_helpers_on_ipv6_poison_the_ipv6_farms(
    clean_daemon: NftlbDaemon, client: NftlbClient, helper: Helper
) -> None:
    """Characterises a limit: the kernel's pptp and snmp conntrack helpers are IPv4 only, so
    an IPv6 farm with one fails in nft ("No such file or directory"). nftlb answers 200, lists
    the farm as up, and as the first IPv6 farm's batch carried the ip6 base chains, the next
    IPv6 farm gets no rules either (`nftlb-api.md` item 7). validate_farm refuses such farms
    (`farms.helper_fits`), so this one is sent as a raw body."""
    web, dns = FARMS_V6
    protocol = Protocol.TCP if helper is Helper.PPTP else Protocol.UDP
    bad = web if protocol is Protocol.TCP else dns
    bad = evolve(bad, helper=helper)
    good = dns if bad.name == web.name else web
    assert any("helper" in e for e in validate_farm(bad))
    assert validate_farms([good, FARMS_V4[0]]) == []
    client.send(post_farms_request([farm_body(f) for f in (bad, good, FARMS_V4[0])]))
    assert client.get_farms().owned == by_name([bad, good, FARMS_V4[0]])
    elements = clean_daemon.service_elements()
    assert not any(family == "ip6" for family, *_ in elements)
    assert elements == clean_daemon.expected_service_elements([FARMS_V4[0]])


def _with_addresses(farm: Farm) -> JSONObject:
    """A raw body for a farm with several frontends: the first as the farm's own shorthand,
    the others as address objects (``addresses`` before the farm fields, as the helper is
    checked against their protocol)."""
    first, *more = farm.addresses
    body = farm_body(evolve(farm, addresses=(first,)))
    extra = [
        {
            "name": a.name,
            "family": a.family.value,
            "ip-addr": a.ip,
            "ports": str(a.port),
            "protocol": a.protocol.value,
        }
        for a in more
    ]
    keys = list(body)
    at = keys.index("protocol") + 1
    return {k: body[k] for k in keys[:at]} | {"addresses": extra} | {k: body[k] for k in keys[at:]}


def test_farms_with_several_addresses_break_on_farm_level_changes(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """Characterises nftlb 1.0.7 with a live farm holding two or more addresses, the reason
    a farm has exactly one frontend (validate_farm refuses others; read-back reports such
    farms unparsable, so the diff replaces them). They are sent here as raw bodies:

    * a farm-level change (mode, persistence, persist-ttl, log, helper, intra-connect ...)
      fails in nft and makes nftlb rebuild every farm ("recovery"); when the farm has objects
      of its own (persistence maps, a ct helper, an est-connlimit set, a forward log), the
      change is not applied and nftlb answers 404 "the object to modify is unknown";
    * deleting such a farm with objects of its own leaves all its rules in the kernel, so its
      VIPs stay balanced although GET no longer lists it (a plain one may leave empty chains).

    The model emulates the 404 (`NftlbModel.recoveries` counts the rebuilds). If this test
    fails, nftlb has been fixed: read the report before relaxing anything."""
    plain = make_farm("multi", V4, TCP, ("10.96.2.1", 80), [("10.1.2.1", 8080)])
    plain = evolve(plain, addresses=(*plain.addresses, Address("m2", V4, "10.96.2.2", 80, TCP)))
    sticky = make_farm(
        "sticky", V4, TCP, ("10.96.3.1", 80), [("10.1.3.1", 8080)], persistence=("srcip",)
    )
    sticky = evolve(sticky, addresses=(*sticky.addresses, Address("s2", V4, "10.96.3.2", 80, TCP)))
    for farm in (plain, sticky):
        assert any("exactly one frontend" in e for e in validate_farm(farm))
    client.send(post_farms_request([_with_addresses(plain), _with_addresses(sticky)]))
    clean_daemon.assert_kernel([plain, sticky])  # creating them is fine
    assert client.get_farms().unparsable == by_name_names([plain, sticky])

    def mode(name: str) -> str:
        (entry,) = [f for f in client.get_farms_document()["farms"] if f["name"] == name]
        return str(entry["mode"])

    with pytest.raises(NftlbRejected) as info:
        client.send(post_farms_request([{"name": sticky.name, "mode": "dnat"}]))
    assert (info.value.status, info.value.response) == (404, "the object to modify is unknown")
    assert mode(sticky.name) == "snat"  # not applied

    client.send(post_farms_request([{"name": plain.name, "mode": "dnat"}]))
    assert mode(plain.name) == "dnat"  # applied, through a full rebuild
    clean_daemon.assert_kernel([evolve(plain, mode=Mode.DNAT), sticky])

    client.delete_farm(plain.name)
    client.delete_farm(sticky.name)
    assert client.get_farms_document() == {"farms": []}
    # The deleted sticky farm's VIPs still lead to its DNAT map.
    clean_daemon.assert_kernel([sticky])


def _helper_change(first: Farm, change: str) -> Farm | None:
    if change == "helper":
        return evolve(first, helper=Helper.NONE)
    if change == "mode":
        return evolve(first, mode=Mode.DNAT)
    if change == "virtual-ports":
        return evolve(first, addresses=(evolve(first.addresses[0], port=2121),))
    if change == "scheduler":
        return evolve(first, scheduler=Scheduler.WEIGHT)
    return None  # delete


@pytest.mark.parametrize("family", [V4, V6])
@pytest.mark.parametrize("change", ["helper", "mode", "virtual-ports", "scheduler", "delete"])
def test_farms_sharing_a_ct_helper_cannot_be_stopped_but_can_be_turned_off(
    clean_daemon: NftlbDaemon, client: NftlbClient, change: str, family: Family
) -> None:
    """Characterises nftlb 1.0.7: ct helper objects live per table and are named
    ``<helper>-<protocol>`` (nft.c, ``run_farm_helper``), so all farms of one family with the
    same helper and protocol use one object, and stopping one farm's rules deletes it while
    the others still use it ("Device or resource busy"). nftlb then rebuilds everything, and:

    * a farm-level change (helper, mode, persistence, persist-ttl, log, intra-connect, the
      frontend) answers 404 and is not applied, again on every retry;
    * a delete answers 200 but leaves all the farm's rules in the kernel (and deleting and
      creating it again leaves stale rules in its chains);
    * scheduler and est-connlimit changes reload in place and work;
    * but ``"state": "off"`` takes its rules out cleanly, fields then change without a stop,
      and ``"state": "up"`` puts them back: the plan does that (`Operation.stop_first`), and
      the IPv6 repair of `apply` mends what the off did to the other IPv6 farms.

    The model answers alike (`NftlbModel._shares_helper`). Different helpers or protocols,
    or another family, do not share (see the control test below). If this test fails, nftlb
    has changed."""
    vips = (
        ("10.96.7.1", "10.96.7.2", "10.96.7.3")
        if family is V4
        else ("fd00::7:1", "fd00::7:2", "fd00::7:3")
    )
    ends = (
        ("10.1.7.1", "10.1.7.2", "10.1.7.3")
        if family is V4
        else ("fd01::7:1", "fd01::7:2", "fd01::7:3")
    )
    first = make_farm("ftp1", family, TCP, (vips[0], 21), [(ends[0], 21)], helper=Helper.FTP)
    second = make_farm("ftp2", family, TCP, (vips[1], 21), [(ends[1], 21)], helper=Helper.FTP)
    plain = make_farm("plain", family, TCP, (vips[2], 80), [(ends[2], 80)])
    model = NftlbModel(clean_daemon.key)
    with NftlbClient(
        "http://nftlb", clean_daemon.key, transport=httpx.MockTransport(model.as_handler())
    ) as fake:
        for c in (client, fake):
            assert c.apply(creates([first, second, plain])).ok
        clean_daemon.assert_kernel([first, second, plain])
        wanted = _helper_change(first, change)
        if wanted is not None and change != "scheduler":
            # as sent before the plan knew better: a plain farm-level change
            fields = ("addresses",) if change == "virtual-ports" else (change,)
            raw = Plan((Operation(OpKind.UPDATE_FARM, first.name, farm=wanted, fields=fields),))
            real, emulated = client.apply(raw), fake.apply(raw)
            assert real == emulated
            assert [(f.status, f.message, f.actual) for f in real.failures] == [
                (404, "the object to modify is unknown", first)
            ]
            assert client.apply(raw).failures == real.failures  # and again on a retry
            fake.apply(raw)
            assert client.get_farms().owned == by_name([first, second, plain])
            clean_daemon.assert_kernel([first, second, plain])
        after = [f for f in (wanted, second, plain) if f is not None]
        plan = diff(after, client.get_farms().owned)
        assert {op.farm_name for op in plan if op.stop_first} == (
            set() if change == "scheduler" else {first.name}
        )
        real, emulated = client.apply(plan), fake.apply(plan)
        assert real == emulated
        assert real.ok, real.failures
        assert client.get_farms_document() == fake.get_farms_document()
        assert client.get_farms().owned == by_name(after)
        clean_daemon.assert_kernel(after)
        if wanted is None:
            assert clean_daemon.leftovers([first.name]) == []
        assert not diff(after, client.get_farms().owned)


def test_a_helper_moving_between_farms_in_one_plan(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """`a` takes the ftp helper `b` gives up (as a HelperShared Service does when the older
    one drops its annotation): `a`'s update goes first, so `b` shares the object when its own
    comes, and the plan turns `b` off for it. Real and model alike, the kernel exact."""
    a = make_farm("a", V4, TCP, ("10.96.9.1", 21), [("10.1.9.1", 21)])
    b = make_farm("b", V4, TCP, ("10.96.9.2", 21), [("10.1.9.2", 21)], helper=Helper.FTP)
    model = NftlbModel(clean_daemon.key)
    with NftlbClient(
        "http://nftlb", clean_daemon.key, transport=httpx.MockTransport(model.as_handler())
    ) as fake:
        for c in (client, fake):
            assert c.apply(creates([a, b])).ok
        want = [evolve(a, helper=Helper.FTP), evolve(b, helper=Helper.NONE)]
        plan = diff(want, client.get_farms().owned)
        assert [(op.farm_name, op.stop_first) for op in plan] == [(a.name, False), (b.name, True)]
        # without: b's update is refused, after a's took the helper
        raw = Plan(tuple(evolve(op, stop_first=False) for op in plan))
        real, emulated = client.apply(raw), fake.apply(raw)
        assert real == emulated
        assert [(f.farm, f.status) for f in real.failures] == [(b.name, 404)]
        plan = diff(want, client.get_farms().owned)  # b shares it now: turned off first
        assert [(op.farm_name, op.stop_first) for op in plan] == [(b.name, True)]
        real, emulated = client.apply(plan), fake.apply(plan)
        assert real == emulated and real.ok, real.failures
        assert client.get_farms_document() == fake.get_farms_document()
        assert client.get_farms().owned == by_name(want)
        clean_daemon.assert_kernel(want)


def test_farms_with_other_helpers_protocols_or_families_do_not_share(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """The control: ftp over tcp, tftp and sip over udp, ftp over IPv6; each is alone with
    its (family, helper, protocol), so changes and deletes are clean."""
    farms = [
        make_farm("h1", V4, TCP, ("10.96.8.1", 21), [("10.1.8.1", 21)], helper=Helper.FTP),
        make_farm("h2", V4, UDP, ("10.96.8.2", 69), [("10.1.8.2", 69)], helper=Helper.TFTP),
        make_farm("h3", V4, UDP, ("10.96.8.3", 5060), [("10.1.8.3", 5060)], helper=Helper.SIP),
        make_farm("h4", V6, TCP, ("fd00::8:4", 21), [("fd01::8:4", 21)], helper=Helper.FTP),
    ]
    assert client.apply(creates(farms)).ok
    wanted = [evolve(farms[0], mode=Mode.DNAT), evolve(farms[2], helper=Helper.NONE), farms[3]]
    result = client.apply(diff(wanted, client.get_farms().owned))
    assert result.ok, result.failures
    assert client.get_farms().owned == by_name(wanted)
    clean_daemon.assert_kernel(wanted)
    assert clean_daemon.leftovers([farms[1].name]) == []


@pytest.mark.parametrize("then", ["change", "delete"])
def test_a_forward_logging_farm_without_backends_breaks_after_another_stops(
    clean_daemon: NftlbDaemon, client: NftlbClient, then: str
) -> None:
    """Characterises nftlb 1.0.7 with two IPv4 farms logging in the forward hook, one of
    them without backends: once the other stops logging there (log changed, or deleted),
    stopping the backend-less one fails in nft (nftlb deletes the base ``forward`` chain
    twice in one batch: "No such file or directory"), nftlb rebuilds everything, and: its
    forward log removed answers 404, not applied (a retry works); deleting it leaves all its
    rules in the kernel. Both with backends, either order is clean. Not emulated by the
    model; the reconciler should not give two farms of one family a forward log."""
    one = make_farm("fl1", V4, TCP, ("10.96.9.1", 80), [("10.1.9.1", 80)], log=("forward",))
    two = make_farm("fl2", V4, UDP, ("10.96.9.2", 53), [], log=("forward",))
    assert client.apply(creates([one, two])).ok
    clean_daemon.assert_kernel([one, two])
    quiet = evolve(one, log=())
    assert client.apply(diff([quiet, two], client.get_farms().owned)).ok
    clean_daemon.assert_kernel([quiet, two])
    if then == "delete":
        assert client.apply(diff([quiet], client.get_farms().owned)).ok
        assert client.get_farms().owned == (quiet,)
        assert clean_daemon.leftovers([two.name])
        return
    wanted = evolve(two, log=())
    plan = diff([quiet, wanted], client.get_farms().owned)
    result = client.apply(plan)
    assert [(f.status, f.actual) for f in result.failures] == [(404, two)]
    assert client.apply(plan).ok  # the rebuild made the base chain again
    assert client.get_farms().owned == by_name([quiet, wanted])
    clean_daemon.assert_kernel([quiet, wanted])


def test_forward_logging_farms_need_marks_unique_across_farms(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """Characterises nftlb 1.0.7: a farm logging in the forward hook puts its backends'
    marks in the family's ``forward-proto-services`` map (keyed by mark alone), so two such
    farms whose backends share a mark (as per-farm marks from `farms.assign_marks` do)
    conflict: nft fails, nftlb rebuilds, and the farms silently lack rules although both
    answer 200 and read back as up. Without a forward log, per-farm marks are fine."""
    one = make_farm("fm1", V4, TCP, ("10.96.9.11", 80), [("10.1.9.11", 80)], log=("forward",))
    two = make_farm("fm2", V4, UDP, ("10.96.9.12", 53), [("10.1.9.12", 53)], log=("forward",))
    assert one.backends[0].mark == two.backends[0].mark == 1
    assert validate_farms([one, two]) != []  # refused by the core: forward is never sent
    assert client.apply(creates([one, two])).ok
    assert client.get_farms().owned == by_name([one, two])
    with pytest.raises(AssertionError):
        clean_daemon.assert_kernel([one, two])
    plain = [evolve(f, log=()) for f in (one, two)]
    clean_daemon.restart()
    assert client.apply(creates(plain)).ok
    clean_daemon.assert_kernel(plain)
