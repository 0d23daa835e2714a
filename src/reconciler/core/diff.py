"""`diff(desired, actual)`: the minimal Plan that makes nftlb's owned farms equal the desired ones.

nftlb only merges (`nftlb-api.md` section 5), so the plan sends new farms whole, changed
farm-level fields only, added or changed backends only, and explicit deletes for what is gone.
Whole farms are compared first, so unchanged farms cost one equality check; farms that differ
are compared field by field to name the changed fields with their old and new values for the
logs. The records compared are flat (one level of nftlb keys), so a key-by-key comparison is all
that is needed: deepdiff, which the first version used here, added about 15 MB to the agent's
resident memory and nothing a flat record needs (docs/benchmarks.md).
Farms that are not owned are never in a plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from attrs import asdict, evolve

from reconciler.core.farms import (
    FARM_FIELDS,
    UNUSABLE_PORT,
    Backend,
    Family,
    Farm,
    Helper,
    Protocol,
    assign_marks,
    is_spare,
    released_marks,
    takeovers,
)
from reconciler.core.names import is_owned
from reconciler.core.plan import RESTART_FIELDS, Change, Operation, OpKind, Plan, ordered


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str | int) or value is None:
        return value
    return str(value)


def _key(field: str) -> str:
    """Field paths use nftlb's key names (``persist-ttl``), as people see them in GET /farms."""
    return field.replace("_", "-")


def _fields(farm: Farm) -> dict[str, Any]:
    return {_key(f): _jsonable(getattr(farm, f)) for f in FARM_FIELDS}


def _obj(value: Backend) -> dict[str, Any]:
    return {_key(k): _jsonable(v) for k, v in asdict(value, recurse=False).items()}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> list[Change]:
    """The keys whose values differ (a missing key reads as None), sorted, with both values."""
    keys = sorted(old.keys() | new.keys())
    return [
        Change(f"{prefix}{k}", old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)
    ]


def _frontend(farm: Farm) -> str:
    return ", ".join(
        f"[{a.ip}]:{a.port}" if ":" in a.ip else f"{a.ip}:{a.port}" for a in farm.addresses
    )


def farm_summary(farm: Farm) -> dict[str, Any]:
    """A farm as plain JSON values, for create and delete records in logs and plans."""
    out: dict[str, Any] = {
        "name": farm.name,
        "family": farm.family.value,
        "protocol": farm.protocol.value,
    }
    out.update(_fields(farm))
    out["virtual-addr"] = _frontend(farm)
    out["backends"] = [f"{b.ip}:{b.port}" for b in farm.backends]
    return out


def diff_farm(desired: Farm, actual: Farm) -> list[Operation]:
    """Operations that turn `actual` into `desired` (same name; marks already assigned)."""
    if desired == actual:
        return []
    name = desired.name
    ops: list[Operation] = []
    old_fields, new_fields = _fields(actual), _fields(desired)
    changed = tuple(f for f in FARM_FIELDS if old_fields[_key(f)] != new_fields[_key(f)])
    changes = [Change(_key(f), old_fields[_key(f)], new_fields[_key(f)]) for f in changed]
    if desired.addresses != actual.addresses:
        # The farm's own virtual address changes in place, which nftlb does cleanly.
        changed += ("addresses",)
        changes.append(Change("virtual-addr", _frontend(actual), _frontend(desired)))
    if changed:
        ops.append(
            Operation(OpKind.UPDATE_FARM, name, tuple(changes), farm=desired, fields=changed)
        )
    taken = takeovers(desired, actual)
    upserts: list[Backend] = []
    changes_b: list[Change] = []
    have = {b.name: b for b in actual.backends}
    for b in desired.backends:
        old = have.get(b.name)
        if old == b:
            continue
        upserts.append(b)
        if old is None:
            changes_b.append(Change(f"backends[{b.name}]", None, _obj(b)))
        else:
            changes_b.extend(_changes(_obj(old), _obj(b), f"backends[{b.name}]."))
    if upserts:
        ops.append(
            Operation(
                OpKind.UPSERT_BACKENDS,
                name,
                tuple(changes_b),
                farm=desired,
                backends=tuple(upserts),
                renames=tuple(sorted(taken.items())),
            )
        )
    first, gone = _leaving(desired, actual, taken)
    retired = [b for b in gone if not is_spare(b) and b.name not in first]
    if retired:
        ops.append(
            Operation(
                OpKind.RETIRE_BACKENDS,
                name,
                tuple(Change(f"backends[{b.name}].state", "up", "down") for b in retired),
                backends=tuple(retired),
            )
        )
    ops.extend(_delete_backend(name, b, early=b.name in first) for b in gone)
    return ops


def _leaving(
    desired: Farm, actual: Farm, taken: Mapping[str, str]
) -> tuple[set[str], list[Backend]]:
    """The backends of `actual` that `desired` drops and no new backend takes over (`taken`:
    `takeovers`), and which of them must be deleted first (`released_marks`)."""
    wanted = {b.name for b in desired.backends}
    spent = set(taken.values())
    gone = [b for b in actual.backends if b.name not in wanted and b.name not in spent]
    return released_marks(desired, actual), gone


def _delete_backend(farm: str, backend: Backend, *, early: bool = False) -> Operation:
    """A backend's delete: the cleanup of a spare or of a backend the plan retires, or, with
    `early`, a delete that must precede the farm's upserts (its mark is reused)."""
    change = Change(f"backends[{backend.name}]", _obj(backend), None)
    return Operation(
        OpKind.DELETE_BACKEND,
        farm,
        (change,),
        target=backend.name,
        early=early,
        cleanup=not early,
    )


def held_after(marked: Farm, actual: Farm | None) -> Farm:
    """What nftlb holds for a farm once the main part of its plan (`Plan.main`) is applied:
    the marked desired farm plus the spares still to be cleaned up, as a read-back shows
    them (retired backends down: `UNUSABLE_PORT`). The agent diffs its next partial sync
    against this, so that new backends take those spares over."""
    if actual is None or marked.backends == actual.backends:  # every resync of a quiet farm
        return marked
    first, gone = _leaving(marked, actual, takeovers(marked, actual))
    left = [evolve(b, port=UNUSABLE_PORT) for b in gone if b.name not in first]
    return evolve(marked, backends=(*marked.backends, *left)) if left else marked


def held_farms(marked: Mapping[str, Farm], actual: Iterable[Farm], plan: Plan) -> dict[str, Farm]:
    """`held_after` for every marked farm: what nftlb holds once `plan.main` is applied. A farm
    the plan deletes and creates again (a frontend cycle, an unreadable farm) holds no spares."""
    gone = {op.farm_name for op in plan if op.kind is OpKind.DELETE_FARM}
    have = {f.name: f for f in actual if f.name not in gone}
    return {n: held_after(f, have.get(n)) for n, f in marked.items()}


def without_backend(farm: Farm, backend: str) -> Farm:
    """`farm` once a cleanup delete of `backend` is applied."""
    return evolve(farm, backends=tuple(b for b in farm.backends if b.name != backend))


def cleanup_ops(farm: Farm, wanted: Iterable[str]) -> list[Operation]:
    """The cleanup deletes for the spares of a farm as `held_after` gives it (its backends
    not in `wanted`)."""
    keep = set(wanted)
    return [_delete_backend(farm.name, b) for b in farm.backends if b.name not in keep]


def marked_farms(desired: Iterable[Farm], actual: Iterable[Farm]) -> dict[str, Farm]:
    """The owned desired farms by name, each marked against what nftlb holds for it
    (`assign_marks`): what nftlb will hold once the plan is applied, its cleanup included
    (`held_after` is what it holds before the cleanup)."""
    have = {f.name: f for f in actual}
    return {f.name: assign_marks(f, have.get(f.name)) for f in desired if is_owned(f.name)}


def diff(desired: Iterable[Farm], actual: Iterable[Farm], broken: Iterable[str] = ()) -> Plan:
    """The plan from `actual` (as read back) to `desired`, touching owned farms only.

    `broken` names owned farms nftlb holds in a shape the model cannot read (see
    `wire.parse_farms`): they are deleted, and created again whole where still desired.
    """
    actual = tuple(actual)
    return diff_marked(marked_farms(desired, actual), actual, broken)


def diff_marked(
    marked: Mapping[str, Farm], actual: Iterable[Farm], broken: Iterable[str] = ()
) -> Plan:
    """`diff` for farms already marked by `marked_farms` against the same `actual`, for a caller
    that keeps the marked farms (the controller's view of nftlb after the plan)."""
    want = {name: farm for name, farm in marked.items() if is_owned(name)}
    have = {f.name: f for f in actual if is_owned(f.name)}
    ops: list[Operation] = []
    for name in sorted(set(broken)):
        if is_owned(name) and name not in have:
            ops.append(Operation(OpKind.DELETE_FARM, name, (Change("farm", "unreadable", None),)))
    for name, farm in have.items():
        if name not in want:
            ops.append(
                Operation(OpKind.DELETE_FARM, name, (Change("farm", farm_summary(farm), None),))
            )
    steps, recreate = _frontend_moves(want, have)
    for name, farm in want.items():
        current = have.get(name)
        if name in recreate:
            old = farm_summary(farm)
            ops.append(Operation(OpKind.DELETE_FARM, name, (Change("farm", old, None),)))
            current = None
        if current is None:
            change = Change("farm", None, farm_summary(farm))
            ops.append(Operation(OpKind.CREATE_FARM, name, (change,), farm=farm))
        else:
            step = steps.get(name, 0)
            ops.extend(
                evolve(op, step=step) if op.kind is OpKind.UPDATE_FARM else op
                for op in diff_farm(farm, current)
            )
    shared = _shared_helpers(want, have)
    return ordered([evolve(op, stop_first=True) if _stops(op, shared) else op for op in ops])


def _helper_object(farm: Farm) -> tuple[Family, Protocol, Helper] | None:
    """nftlb 1.0.7 keeps one ct helper object per table, named ``<helper>-<protocol>``."""
    return None if farm.helper is Helper.NONE else (farm.family, farm.protocol, farm.helper)


def _shared_helpers(want: Mapping[str, Farm], have: Mapping[str, Farm]) -> set[str]:
    """Farms nftlb holds whose ct helper object another farm uses before the plan, or takes
    during it (an update that goes first may give a farm the helper another farm's later
    update drops); deletes come before and creates after every update, so a farm they make
    or remove never shares with an update."""
    users: dict[tuple[Family, Protocol, Helper], set[str]] = {}
    for name, farm in [*have.items(), *((n, f) for n, f in want.items() if n in have)]:
        key = _helper_object(farm)
        if key is not None:
            users.setdefault(key, set()).add(name)
    out = set()
    for name, farm in have.items():
        key = _helper_object(farm)
        if key is not None and users[key] - {name}:
            out.add(name)
    return out


def _stops(op: Operation, shared: set[str]) -> bool:
    """Whether `op` stops a farm of `shared` (`Operation.stop_first`)."""
    if op.farm_name not in shared:
        return False
    if op.kind is OpKind.DELETE_FARM:
        return True
    return op.kind is OpKind.UPDATE_FARM and not RESTART_FIELDS.isdisjoint(op.fields)


def _frontend_moves(
    want: Mapping[str, Farm], have: Mapping[str, Farm]
) -> tuple[dict[str, int], set[str]]:
    """The order of frontend moves, so that no two farms ever hold one frontend.

    nftlb 1.0.7 gives the second farm on a (protocol, address, port) no rules, and keeps it so
    after the first leaves (`nftlb-api.md` item 8, re-tested). A farm moving onto a frontend
    that another moving farm leaves goes after it (a higher step); in a cycle of such moves (two
    farms swapping node ports) one farm is deleted first and created again last instead.
    Returns each moving farm's step and the farms to recreate.
    """
    holder = {a.tuple_key: f.name for f in have.values() for a in f.addresses}
    moving = {n for n, f in want.items() if n in have and f.addresses != have[n].addresses}

    def blocker(name: str) -> str | None:
        for a in want[name].addresses:
            other = holder.get(a.tuple_key)
            if other is not None and other != name and other in moving:
                return other
        return None

    recreate: set[str] = set()
    for name in sorted(moving):
        path: list[str] = []
        current: str | None = name
        while current is not None and current not in recreate and current not in path:
            path.append(current)
            current = blocker(current)
        if current is not None and current in path:
            recreate.add(min(path[path.index(current) :]))
    steps: dict[str, int] = {}
    for name in sorted(moving - recreate):
        chain: list[str] = []
        current = name
        while current not in steps:
            other = blocker(current)
            if other is None or other in recreate:
                steps[current] = 0
                break
            chain.append(current)
            current = other
        depth = steps[current]
        for n in reversed(chain):
            depth += 1
            steps[n] = depth
    return steps, recreate
