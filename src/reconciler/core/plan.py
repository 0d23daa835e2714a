"""The Plan: the operations that make nftlb equal to the desired farms, in a safe order.

Each operation carries what it changes (field paths with old and new values) so the logs can say
why a farm changed, and renders itself for people and as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from attrs import frozen

from reconciler.core.farms import Backend, Farm


class OpKind(StrEnum):
    """Operation kinds, in the order a plan applies them.

    Deletes come first, then updates (a farm whose frontend moves frees its old one), then
    creates, so a (protocol, address, port) a new farm needs is never held twice; updates that
    move a frontend onto one another farm leaves go after that farm's (`Operation.step`);
    backends are upserted before surplus ones are retired, so a farm never drops to zero, except
    a backend whose mark a new one takes over, which goes first (`Operation.early`).

    A departing backend is retired (set down: out of every map, one nftlb batch per farm
    together with the farm's upserts) rather than deleted: nftlb 1.0.7 spends two batches on
    each deleted usable backend (~90 ms at 2,000 farms), so under churn the deletes were the
    sync. The retired backend stays as a spare that a later new backend takes over in place
    (`farms.takeovers`); spares left over are deleted by cleanup operations
    (`Operation.cleanup`), which the agent runs only when it has nothing else to do.
    """

    DELETE_FARM = "delete-farm"
    UPDATE_FARM = "update-farm"
    CREATE_FARM = "create-farm"
    UPSERT_BACKENDS = "upsert-backends"
    RETIRE_BACKENDS = "retire-backends"
    DELETE_BACKEND = "delete-backend"


ORDER = {kind: i for i, kind in enumerate(OpKind)}

#: Within each kind and step, kube-system's farms go first (cluster DNS and the other add-ons
#: every Service depends on): after an nftlb restart at 5,000 Services nftlb takes minutes to
#: take every farm back, and DNS is then in its first POST. Shortened names keep this prefix.
FIRST = "k8s.kube-system."

#: Farm fields whose change makes nftlb 1.0.7 stop the farm's rules and start them again (its
#: ``farm_changed`` keys); scheduler, sched-param and est-connlimit reload in place. Stopping
#: drops the other IPv6 farms' rules (`NftlbClient.apply` repairs them) and fails while another
#: farm shares the farm's ct helper object (`Operation.stop_first`).
RESTART_FIELDS: frozenset[str] = frozenset(
    {"mode", "persistence", "persist_ttl", "helper", "log", "intra_connect", "addresses"}
)

#: A JSON-able value (str, int, bool, a list of them, or a dict for whole objects).
Value = Any


@frozen
class Change:
    """One field that changes: a path like ``scheduler`` or ``backends[b-10.0.0.1-80].port``."""

    path: str
    old: Value
    new: Value

    def to_json(self) -> dict[str, Value]:
        return {"path": self.path, "old": self.old, "new": self.new}


@frozen
class Operation:
    """One step of a plan, addressed to one farm.

    `farm` is the desired farm for creates and updates (the body is built from it), `fields` the
    farm-level fields to send for an update (``addresses`` meaning the farm's virtual address
    and port), `backends` the backends to send, and `target` the backend name for deletes.
    `step` orders updates of one kind among themselves (a frontend move waits for the farm
    that leaves that frontend); `early` puts a backend delete before the farm's upserts (its
    mark is reused, `farms.released_marks`). `renames` pairs an upserted backend with the
    spare it takes over (new name, spare name); a retire's `backends` are the backends it sets
    down, as nftlb holds them. `cleanup` marks the delete of a spare: it changes nothing
    traffic sees, so it is left for when nothing else is waiting (`Plan.main`).
    `stop_first` turns the farm off before an update of `RESTART_FIELDS` or a delete, and an
    update on again: nftlb 1.0.7 cannot stop a farm whose ct helper object another farm uses
    (404, not applied; a delete leaves its rules in the kernel), but turns one off cleanly,
    and changes an off farm without stopping it.
    """

    kind: OpKind
    farm_name: str
    changes: tuple[Change, ...] = ()
    farm: Farm | None = None
    fields: tuple[str, ...] = ()
    backends: tuple[Backend, ...] = ()
    target: str = ""
    step: int = 0
    early: bool = False
    stop_first: bool = False
    renames: tuple[tuple[str, str], ...] = ()
    cleanup: bool = False

    @property
    def sort_key(self) -> tuple[int, int, bool, str, str]:
        rank = 2 * ORDER[self.kind]
        if self.early:
            rank = 2 * ORDER[OpKind.UPSERT_BACKENDS] - 1
        if self.cleanup:
            rank = 2 * len(ORDER)
        return (rank, self.step, not self.farm_name.startswith(FIRST), self.farm_name, self.target)

    def to_json(self) -> dict[str, Value]:
        out: dict[str, Value] = {"op": self.kind.value, "farm": self.farm_name}
        if self.target:
            out["target"] = self.target
        if self.stop_first:
            out["stop_first"] = True
        if self.cleanup:
            out["cleanup"] = True
        if self.renames:
            out["takes_over"] = dict(self.renames)
        out["changes"] = [c.to_json() for c in self.changes]
        return out


@frozen
class Plan:
    operations: tuple[Operation, ...] = ()

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def __bool__(self) -> bool:
        return bool(self.operations)

    @property
    def main(self) -> Plan:
        """Everything but the cleanup: what makes traffic match the desired farms."""
        return Plan(tuple(op for op in self.operations if not op.cleanup))

    @property
    def cleanup(self) -> Plan:
        """The deletes of spares (`Operation.cleanup`), last in the plan."""
        return Plan(tuple(op for op in self.operations if op.cleanup))

    def counts(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in OpKind}
        for op in self.operations:
            counts[op.kind.value] += 1
        return counts

    def to_json(self) -> dict[str, Value]:
        """The stable JSON form of `kube-nftlb diff -o json` (documented in docs/diff.md)."""
        return {
            "version": 1,
            "changed": bool(self.operations),
            "counts": self.counts(),
            "operations": [op.to_json() for op in self.operations],
        }


def ordered(operations: list[Operation]) -> Plan:
    return Plan(tuple(sorted(operations, key=lambda op: op.sort_key)))


def _show(value: Value) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={_show(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def render_text(plan: Plan) -> str:
    """The plan for people, like a terraform plan: ``+`` create, ``~`` change, ``-`` delete."""
    if not plan:
        return "No changes. nftlb matches the desired farms.\n"
    by_farm: dict[str, list[Operation]] = {}
    for op in plan:
        by_farm.setdefault(op.farm_name, []).append(op)
    lines: list[str] = []
    created = changed = deleted = 0
    for farm, ops in sorted(by_farm.items()):
        kinds = {op.kind for op in ops}
        if OpKind.CREATE_FARM in kinds:
            created += 1
            lines.append(f"+ farm {farm}")
            for op in ops:
                for c in op.changes:
                    for key, value in (c.new or {}).items():
                        if key != "name":
                            lines.append(f"    + {key}: {_show(value)}")
        elif OpKind.DELETE_FARM in kinds:
            deleted += 1
            lines.append(f"- farm {farm}")
        else:
            changed += 1
            lines.append(f"~ farm {farm}")
            for op in ops:
                for c in op.changes:
                    if c.old is None:
                        lines.append(f"    + {c.path}: {_show(c.new)}")
                    elif c.new is None:
                        lines.append(f"    - {c.path}: {_show(c.old)}")
                    else:
                        lines.append(f"    ~ {c.path}: {_show(c.old)} -> {_show(c.new)}")
        lines.append("")
    lines.append(f"Plan: {created} to create, {changed} to change, {deleted} to delete.")
    return "\n".join(lines) + "\n"
