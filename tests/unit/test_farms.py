from __future__ import annotations

from attrs import evolve

from reconciler.core.farms import (
    MAX_MARK,
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Protocol,
    Scheduler,
    assign_marks,
    released_marks,
    validate_farm,
    validate_farms,
)


def farm(name: str = "k8s.default.web.http.tcp.v4", ip: str = "10.96.0.1", **kw: object) -> Farm:
    base = Farm(
        name=name,
        family=Family.IPV4,
        protocol=Protocol.TCP,
        addresses=(Address(f"{name}-addr", Family.IPV4, ip, 80, Protocol.TCP),),
        backends=(
            Backend("b-10.1.0.1-8080", "10.1.0.1", 8080),
            Backend("b-10.1.0.2-8080", "10.1.0.2", 8080),
        ),
    )
    return evolve(base, **kw)


def test_a_plain_farm_is_valid() -> None:
    assert validate_farm(farm()) == []


def test_each_nftlb_trap_is_caught() -> None:
    cases = {
        "name": farm(name="bad name"),
        "non canonical ip": farm(ip="010.96.0.1"),
        "wrong family": farm(ip="fd00::1"),
        "port": farm(
            addresses=(
                Address(
                    "k8s.default.web.http.tcp.v4-addr", Family.IPV4, "10.96.0.1", 0, Protocol.TCP
                ),
            )
        ),
        "no address": farm(addresses=()),
        "two addresses": farm(
            addresses=(
                Address(
                    "k8s.default.web.http.tcp.v4-addr", Family.IPV4, "10.96.0.1", 80, Protocol.TCP
                ),
                Address(
                    "k8s.default.web.http.tcp.v4-addr2", Family.IPV4, "10.96.0.2", 80, Protocol.TCP
                ),
            )
        ),
        "address name": farm(
            addresses=(Address("other", Family.IPV4, "10.96.0.1", 80, Protocol.TCP),)
        ),
        "helper": farm(helper=Helper.TFTP),
        "hash without param": farm(scheduler=Scheduler.HASH),
        "param without hash": farm(sched_param=("srcip",)),
        "token order": farm(persistence=("srcport", "srcip")),
        "backend ip": farm(backends=(Backend("b", "not-an-ip", 80),)),
        "duplicate marks": farm(
            backends=(Backend("a", "10.1.0.1", 80, mark=1), Backend("b", "10.1.0.2", 80, mark=1))
        ),
        "mark range": farm(backends=(Backend("a", "10.1.0.1", 80, mark=0x1000),)),
        "ttl": farm(persist_ttl=-1),
    }
    for label, f in cases.items():
        assert validate_farm(f), label


def test_farms_may_not_share_a_frontend_or_a_name() -> None:
    a = farm("k8s.a.web.http.tcp.v4")
    b = farm("k8s.b.web.http.tcp.v4")
    assert any("also used by" in e for e in validate_farms([a, b]))
    assert any("used twice" in e for e in validate_farms([a, a]))
    assert validate_farms([a, farm("k8s.b.web.http.tcp.v4", ip="10.96.0.2")]) == []


def test_sorted_addresses_and_backends_make_order_irrelevant() -> None:
    f = farm()
    assert evolve(f, backends=tuple(reversed(f.backends))) == f


def test_assign_marks_from_scratch_numbers_from_one() -> None:
    marked = assign_marks(farm(), None)
    assert [b.mark for b in marked.backends] == [1, 2]


def test_assign_marks_keeps_existing_and_fills_the_lowest_nftlb_does_not_hold() -> None:
    actual = farm(
        backends=(
            Backend("b-10.1.0.1-8080", "10.1.0.1", 8080, mark=7),
            Backend("old", "10.1.0.9", 80, mark=1),
        )
    )
    desired = farm(
        backends=(Backend("b-10.1.0.1-8080", "10.1.0.1", 8080), Backend("new", "10.1.0.3", 80))
    )
    marked = assign_marks(desired, actual)
    # Not 1: "old" holds it until the plan deletes it, after "new" went in.
    assert {b.name: b.mark for b in marked.backends} == {"b-10.1.0.1-8080": 7, "new": 2}
    assert validate_farm(marked) == []


def test_a_departing_mark_is_reused_only_when_all_are_taken_and_then_released_first() -> None:
    old = tuple(Backend(f"old{m}", "10.1.0.9", m, mark=m) for m in range(1, MAX_MARK + 1))
    actual = farm(backends=old)
    desired = farm(backends=(*old[1:], Backend("new", "10.1.0.3", 80)))
    marked = assign_marks(desired, actual)
    assert marked.backend("new") == Backend("new", "10.1.0.3", 80, mark=1)
    assert released_marks(marked, actual) == {"old1"}
    assert validate_farm(marked) == []


def v6(**kw: object) -> Farm:
    name = "k8s.default.web.http.tcp.v6"
    base = Farm(
        name=name,
        family=Family.IPV6,
        protocol=Protocol.TCP,
        addresses=(Address(f"{name}-addr", Family.IPV6, "fd00::1", 80, Protocol.TCP),),
        backends=(Backend("b-fd01--1-80", "fd01::1", 80),),
    )
    return evolve(base, **kw)


def test_what_crashes_or_silently_breaks_nftlb_is_refused() -> None:
    assert validate_farm(v6()) == []
    assert validate_farm(v6(persistence=("srcip",))) == []
    assert validate_farm(v6(persistence=("srcip", "srcport")))  # IPv6 address plus a field: abort
    assert (
        validate_farm(farm(persistence=("srcip", "dstip", "srcport", "dstport"))) == []
    )  # 16 bytes
    assert validate_farm(
        farm(persistence=("srcip", "dstip", "srcport", "dstport", "srcmac"))
    )  # 24 > 20
    assert validate_farm(v6(helper=Helper.PPTP))  # the kernel's pptp helper is IPv4 only
    assert (
        validate_farm(
            v6(scheduler=Scheduler.HASH, sched_param=("srcip", "dstip", "srcmac", "dstmac"))
        )
        == []
    )
    assert validate_farm(
        v6(
            scheduler=Scheduler.HASH,
            sched_param=("srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac"),
        )
    )


def test_two_farms_may_not_share_a_helper() -> None:
    a = farm("k8s.a.ftp.ctl.tcp.v4", helper=Helper.FTP)
    b = farm("k8s.b.ftp.ctl.tcp.v4", ip="10.96.0.2", helper=Helper.FTP)
    assert any("helper ftp is also used by" in e for e in validate_farms([a, b]))
