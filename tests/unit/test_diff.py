from __future__ import annotations

from typing import Any

from attrs import evolve

from reconciler.core.diff import cleanup_ops, diff, held_after, marked_farms, without_backend
from reconciler.core.farms import (
    MAX_MARK,
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
from reconciler.core.names import FarmKey, farm_name
from reconciler.core.plan import OpKind, Plan, render_text
from reconciler.core.wire import OWNER_LOG_PREFIX, UNUSABLE_PORT, requests_for


def farm(name: str = "k8s.default.web.http.tcp.v4", ip: str = "10.96.0.1", n: int = 2) -> Farm:
    return Farm(
        name=name,
        family=Family.IPV4,
        protocol=Protocol.TCP,
        addresses=(Address(f"{name}-addr", Family.IPV4, ip, 80, Protocol.TCP),),
        backends=tuple(Backend(f"b-10.1.0.{i}-8080", f"10.1.0.{i}", 8080) for i in range(1, n + 1)),
    )


def applied(f: Farm) -> Farm:
    """What nftlb holds after the farm was created from scratch."""
    return assign_marks(f, None)


def test_no_change_is_an_empty_plan() -> None:
    f = farm()
    assert not diff([f], [applied(f)])
    assert render_text(diff([f], [applied(f)])).startswith("No changes")


def test_create_and_delete() -> None:
    new, old = farm("k8s.a.x.http.tcp.v4"), farm("k8s.b.y.http.tcp.v4", ip="10.96.0.2")
    plan = diff([new], [applied(old)])
    assert [(op.kind, op.farm_name) for op in plan] == [
        (OpKind.DELETE_FARM, old.name),
        (OpKind.CREATE_FARM, new.name),
    ]
    create = plan.operations[1]
    assert create.farm is not None and [b.mark for b in create.farm.backends] == [1, 2]


def test_one_field_change_is_one_operation_carrying_that_field() -> None:
    f = farm()
    plan = diff([evolve(f, scheduler=Scheduler.WEIGHT)], [applied(f)])
    assert len(plan) == 1
    op = plan.operations[0]
    assert op.kind is OpKind.UPDATE_FARM and op.fields == ("scheduler",)
    assert [(c.path, c.old, c.new) for c in op.changes] == [("scheduler", "rr", "weight")]


def test_added_endpoint_is_one_upsert_with_a_fresh_mark() -> None:
    f = farm(n=2)
    plan = diff([farm(n=3)], [applied(f)])
    assert [op.kind for op in plan] == [OpKind.UPSERT_BACKENDS]
    (b,) = plan.operations[0].backends
    assert (b.name, b.mark) == ("b-10.1.0.3-8080", 3)


def test_replaced_endpoint_goes_in_before_the_old_one_goes_out() -> None:
    have = applied(farm(n=2))
    want = evolve(
        farm(n=2),
        backends=(
            Backend("b-10.1.0.1-8080", "10.1.0.1", 8080),
            Backend("b-10.1.0.9-8080", "10.1.0.9", 8080),
        ),
    )
    plan = diff([want], [have])
    assert [op.kind for op in plan] == [
        OpKind.UPSERT_BACKENDS,
        OpKind.RETIRE_BACKENDS,
        OpKind.DELETE_BACKEND,
    ]
    # Not the departing backend's mark 2: both are in nftlb between the two operations, and two
    # backends of one farm on one mark wipe nftlb's rules (nftlb-api.md item 23).
    assert plan.operations[0].backends[0].mark == 3
    assert plan.operations[0].renames == ()
    assert [b.name for b in plan.operations[1].backends] == ["b-10.1.0.2-8080"]
    assert plan.operations[2].target == "b-10.1.0.2-8080"
    assert plan.operations[2].cleanup and not plan.operations[2].early
    # the delete is the cleanup: the plan without it already serves exactly the new backends
    assert [op.kind for op in plan.main] == [OpKind.UPSERT_BACKENDS, OpKind.RETIRE_BACKENDS]


def test_a_retired_backend_is_held_as_a_spare_and_the_next_new_one_takes_it_over() -> None:
    have = applied(farm(n=2))
    want = evolve(farm(n=2), backends=(Backend("b-10.1.0.1-8080", "10.1.0.1", 8080),))
    marked = marked_farms([want], [have])[want.name]
    held = held_after(marked, have)
    spare = Backend("b-10.1.0.2-8080", "10.1.0.2", UNUSABLE_PORT, 1, 2)
    assert held.backends == (*marked.backends, spare)
    # a new endpoint later takes the spare over: renamed in place, with the spare's mark
    again = evolve(want, backends=(*want.backends, Backend("b-10.1.0.7-8080", "10.1.0.7", 8080)))
    plan = diff([again], [held])
    assert [op.kind for op in plan] == [OpKind.UPSERT_BACKENDS]
    (op,) = plan.operations
    assert [(b.name, b.mark) for b in op.backends] == [("b-10.1.0.7-8080", 2)]
    assert op.renames == (("b-10.1.0.7-8080", "b-10.1.0.2-8080"),)
    marked = marked_farms([again], [held])[again.name]
    assert held_after(marked, held) == marked  # no spare left, nothing to clean up


def test_spares_not_taken_over_are_cleanup_deletes_only() -> None:
    have = applied(farm(n=3))
    spare = evolve(have.backends[2], port=UNUSABLE_PORT)
    held = evolve(have, backends=(*have.backends[:2], spare))
    want = farm(n=2)
    plan = diff([want], [held])
    assert [(op.kind, op.target, op.cleanup) for op in plan] == [
        (OpKind.DELETE_BACKEND, spare.name, True)
    ]
    assert not plan.main
    assert cleanup_ops(held, [b.name for b in want.backends]) == list(plan.operations)
    assert without_backend(held, spare.name) == evolve(have, backends=have.backends[:2])


def test_a_spare_with_a_shared_mark_is_never_taken_over() -> None:
    have = applied(farm(n=2))
    clash = Backend("b-10.1.0.5-8080", "10.1.0.5", UNUSABLE_PORT, 1, have.backends[0].mark)
    held = evolve(have, backends=(*have.backends, clash))
    new = Backend("b-10.1.0.6-8080", "10.1.0.6", 8080)
    want = evolve(farm(n=2), backends=(*farm(n=2).backends, new))
    (op, *_) = diff([want], [held]).operations
    assert op.renames == ()
    assert op.backends[0].mark not in {b.mark for b in held.backends}


def test_changed_frontend_is_one_in_place_update_of_the_virtual_address() -> None:
    have = applied(farm(ip="10.96.0.1"))
    want = farm(ip="10.96.0.2")
    (op,) = diff([want], [have]).operations
    assert op.kind is OpKind.UPDATE_FARM and op.fields == ("addresses",)
    assert [(c.path, c.old, c.new) for c in op.changes] == [
        ("virtual-addr", "10.96.0.1:80", "10.96.0.2:80")
    ]


def test_unreadable_owned_farm_is_deleted_and_created_again() -> None:
    f = farm()
    plan = diff([f], [], broken=[f.name, "foreign-farm"])
    assert [(op.kind, op.farm_name) for op in plan] == [
        (OpKind.DELETE_FARM, f.name),
        (OpKind.CREATE_FARM, f.name),
    ]


def test_frontend_moving_to_a_new_farm_is_freed_first() -> None:
    old = applied(farm("k8s.a.old.http.tcp.v4", ip="10.96.0.1"))
    new = farm("k8s.a.new.http.tcp.v4", ip="10.96.0.1")
    kinds = [op.kind for op in diff([new], [old])]
    assert kinds == [OpKind.DELETE_FARM, OpKind.CREATE_FARM]


def test_foreign_farms_are_never_touched() -> None:
    foreign = applied(farm("my-own-farm"))
    assert not diff([], [foreign])
    assert not diff([farm("not-ours")], [])


def test_changed_backend_port_names_the_field() -> None:
    have = applied(farm(n=1))
    want = evolve(farm(n=1), backends=(Backend("b-10.1.0.1-8080", "10.1.0.1", 8080, weight=5),))
    plan = diff([want], [have])
    (op,) = plan.operations
    assert op.kind is OpKind.UPSERT_BACKENDS
    assert [(c.path, c.old, c.new) for c in op.changes] == [
        ("backends[b-10.1.0.1-8080].weight", 1, 5)
    ]


def test_plan_json_is_stable() -> None:
    plan = diff([farm()], [])
    doc = plan.to_json()
    assert doc["version"] == 1 and doc["changed"] is True
    assert doc["counts"]["create-farm"] == 1
    assert doc["operations"][0]["op"] == "create-farm"


def test_a_frontend_that_moves_to_another_farm_is_freed_before_the_new_farm_claims_it() -> None:
    moving = applied(farm("k8s.a.moving.http.tcp.v4", ip="10.96.0.1"))
    new = farm("k8s.a.new.http.tcp.v4", ip="10.96.0.1")
    plan = diff([new, farm("k8s.a.moving.http.tcp.v4", ip="10.96.0.2")], [moving])
    assert [(op.kind, op.farm_name) for op in plan] == [
        (OpKind.UPDATE_FARM, "k8s.a.moving.http.tcp.v4"),
        (OpKind.CREATE_FARM, "k8s.a.new.http.tcp.v4"),
    ]


def test_a_reused_mark_is_released_before_the_backend_taking_it_goes_in() -> None:
    old = tuple(Backend(f"old{m}", "10.1.0.9", m) for m in range(1, MAX_MARK + 1))
    have = applied(evolve(farm(), backends=old))
    want = evolve(farm(), backends=(*old[1:], Backend("new", "10.1.0.3", 80)))
    plan = diff([want], [have])
    assert [(op.kind, op.target) for op in plan] == [
        (OpKind.DELETE_BACKEND, "old1"),
        (OpKind.UPSERT_BACKENDS, ""),
    ]
    assert plan.operations[0].early
    assert [b.mark for b in plan.operations[1].backends] == [1]


def test_a_frontend_move_waits_for_the_farm_leaving_that_frontend() -> None:
    a, b = farm("k8s.a.x.http.tcp.v4", "10.96.0.1"), farm("k8s.b.y.http.tcp.v4", "10.96.0.2")
    # a moves onto b's frontend while b moves to a third: b must move first.
    plan = diff([farm(a.name, "10.96.0.2"), farm(b.name, "10.96.0.3")], [applied(a), applied(b)])
    assert [(op.kind, op.farm_name, op.step) for op in plan] == [
        (OpKind.UPDATE_FARM, b.name, 0),
        (OpKind.UPDATE_FARM, a.name, 1),
    ]


def test_two_farms_swapping_frontends_recreate_one() -> None:
    a, b = farm("k8s.a.x.http.tcp.v4", "10.96.0.1"), farm("k8s.b.y.http.tcp.v4", "10.96.0.2")
    plan = diff([farm(a.name, "10.96.0.2"), farm(b.name, "10.96.0.1")], [applied(a), applied(b)])
    assert [(op.kind, op.farm_name) for op in plan] == [
        (OpKind.DELETE_FARM, a.name),
        (OpKind.UPDATE_FARM, b.name),
        (OpKind.CREATE_FARM, a.name),
    ]


def test_kube_system_farms_go_first_within_each_kind() -> None:
    """After an nftlb restart everything is created again, in POSTs of 50 farms that take
    nftlb minutes at 5,000 Services: cluster DNS must be in the first, not the last."""
    names = [
        "k8s.a.web.http.tcp.v4",
        "k8s.kube-system.kube-dns.dns.udp.v4",
        "k8s.zz.api.http.tcp.v4",
    ]
    wanted = [farm(n, f"10.96.0.{i + 1}") for i, n in enumerate(names)]
    creates = [op.farm_name for op in diff(wanted, [])]
    assert creates == [names[1], names[0], names[2]]
    deletes = [op.farm_name for op in diff([], [applied(f) for f in wanted])]
    assert deletes[0] == names[1]
    key = FarmKey("kube-system", "x" * 60, "dns", Protocol.UDP, Family.IPV4)
    short = farm_name(key)  # shortened names keep the prefix
    assert short != key.full_name
    ops = diff([farm(short, "10.96.0.9"), *wanted[::2]], [])
    assert ops.operations[0].farm_name == short


# -- farms sharing a ct helper object (nftlb 1.0.7 cannot stop them; turned off first) -----------

A, B = "k8s.default.a.ftp.tcp.v4", "k8s.default.b.ftp.tcp.v4"


def ftp(name: str, ip: str, helper: Helper = Helper.FTP, **fields: Any) -> Farm:
    return evolve(farm(name, ip), helper=helper, **fields)


def stopped(plan: Plan) -> list[tuple[OpKind, str]]:
    return [(op.kind, op.farm_name) for op in plan if op.stop_first]


def test_a_farm_sharing_its_helper_is_turned_off_to_change_and_on_again() -> None:
    a, b = ftp(A, "10.96.0.1"), ftp(B, "10.96.0.2")
    plan = diff([evolve(a, mode=Mode.DNAT), b], [applied(a), applied(b)])
    assert stopped(plan) == [(OpKind.UPDATE_FARM, A)]
    (off, change) = requests_for(plan.operations[0])
    assert off.body == {"farms": [{"name": A, "log-prefix": OWNER_LOG_PREFIX, "state": "off"}]}
    assert change.body is not None
    assert list(change.body["farms"][0].items())[-1] == ("state", "up")
    assert change.body["farms"][0]["mode"] == "dnat"


def test_a_farm_sharing_its_helper_drops_it_while_off_before_it_is_deleted() -> None:
    a, b = ftp(A, "10.96.0.1"), ftp(B, "10.96.0.2")
    plan = diff([b], [applied(a), applied(b)])
    assert stopped(plan) == [(OpKind.DELETE_FARM, A)]
    assert [(r.method, r.body) for r in requests_for(plan.operations[0])] == [
        ("POST", {"farms": [{"name": A, "log-prefix": OWNER_LOG_PREFIX, "state": "off"}]}),
        (
            "POST",
            {
                "farms": [
                    {"name": A, "log-prefix": OWNER_LOG_PREFIX, "helper": "none", "state": "up"}
                ]
            },
        ),
        ("DELETE", None),
    ]


def test_changes_that_reload_in_place_or_unshared_helpers_are_not_turned_off() -> None:
    a, b = ftp(A, "10.96.0.1"), ftp(B, "10.96.0.2")
    # scheduler, est-connlimit and backends reload in place, shared or not
    plan = diff(
        [evolve(a, scheduler=Scheduler.WEIGHT, est_connlimit=5), b], [applied(a), applied(b)]
    )
    assert plan and not stopped(plan)
    # another helper, protocol or family is another object
    for other in (ftp(B, "10.96.0.2", Helper.PPTP), evolve(b, family=Family.IPV6)):
        assert not stopped(diff([evolve(a, mode=Mode.DNAT), other], [applied(a), applied(other)]))
    assert not stopped(diff([evolve(a, mode=Mode.DNAT)], [applied(a)]))


def test_a_helper_moving_from_one_farm_to_another_is_never_shared_mid_plan() -> None:
    """A takes the helper B gives up; A's update goes first, so B shares it when its own
    update comes: B is turned off first."""
    a, b = ftp(A, "10.96.0.1", Helper.NONE), ftp(B, "10.96.0.2")
    want = [evolve(a, helper=Helper.FTP), evolve(b, helper=Helper.NONE)]
    plan = diff(want, [applied(a), applied(b)])
    assert [op.farm_name for op in plan] == [A, B]
    assert stopped(plan) == [(OpKind.UPDATE_FARM, B)]
