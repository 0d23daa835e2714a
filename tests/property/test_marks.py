"""Marks: the shortcut for unchanged farms gives exactly what marking from scratch gives."""

from __future__ import annotations

from attrs import evolve
from hypothesis import event, given, settings
from hypothesis import strategies as st

from reconciler.core.farms import (
    MAX_MARK,
    UNUSABLE_PORT,
    Backend,
    Farm,
    _mark,
    assign_marks,
    is_spare,
    released_marks,
    takeovers,
)
from tests.property.test_wire_model import farms

MARKS = st.integers(min_value=-1, max_value=MAX_MARK + 1)


@st.composite
def desired_and_actual(draw: st.DrawFn) -> tuple[Farm, Farm | None]:
    """A desired farm and what nftlb might hold for it: the same backends or some of them, with
    marks that are valid, duplicated, zero or out of range, and other ports or weights."""
    desired = draw(farms())
    if draw(st.booleans()) and not desired.backends:
        return desired, None
    kept = (
        [b for b in desired.backends if draw(st.booleans())]
        if draw(st.booleans())
        else list(desired.backends)
    )
    held = []
    for b in kept:
        mark = draw(st.one_of(MARKS, st.integers(0, 3), st.just(len(held) + 1)))
        port = b.port if draw(st.integers(0, 9)) else b.port % 65535 + 1
        held.append(Backend(b.name, b.ip, port, b.weight, mark))
    names = {b.name for b in desired.backends}
    for i in range(draw(st.integers(0, 3))):  # departing backends: working ones and spares
        if f"gone-{i}" not in names:
            mark = draw(st.one_of(MARKS, st.integers(0, 3), st.just(len(held) + 1)))
            port = draw(st.sampled_from([UNUSABLE_PORT, 8080]))
            held.append(Backend(f"gone-{i}", "10.9.9.9", port, 1, mark))
    return desired, evolve(desired, backends=tuple(held))


@given(desired_and_actual())
def test_assign_marks_equals_marking_from_scratch(pair: tuple[Farm, Farm | None]) -> None:
    desired, actual = pair
    assert assign_marks(desired, actual) == _mark(desired, actual)


@given(desired_and_actual())
def test_marks_are_distinct_valid_and_kept_where_nftlb_holds_a_valid_one(
    pair: tuple[Farm, Farm | None],
) -> None:
    desired, actual = pair
    marked = assign_marks(desired, actual)
    marks = [b.mark for b in marked.backends]
    assert len(set(marks)) == len(marks)
    assert all(1 <= m <= MAX_MARK for m in marks)
    assert [(b.name, b.ip, b.port, b.weight) for b in marked.backends] == [
        (b.name, b.ip, b.port, b.weight) for b in desired.backends
    ]
    if actual is not None:
        first: dict[int, str] = {}
        for b in actual.backends:
            if 1 <= b.mark <= MAX_MARK:
                first.setdefault(b.mark, b.name)
        for b in marked.backends:
            old = actual.backend(b.name)
            if old is not None and first.get(old.mark) == old.name:
                assert b.mark == old.mark


@given(farms())
def test_marking_a_marked_farm_against_itself_changes_nothing(desired: Farm) -> None:
    marked = assign_marks(desired, None)
    assert assign_marks(marked, marked) == marked
    assert assign_marks(desired, marked) == marked


@settings(max_examples=300)
@given(desired_and_actual())
def test_a_mark_sent_is_never_one_another_backend_nftlb_holds_may_still_have(
    pair: tuple[Farm, Farm | None],
) -> None:
    """The plan adds backends before it deletes the old ones, so a mark given to an added or
    changed backend must not be held by any other backend of `actual` (issue 11), unless that
    one is released first (`released_marks`: only when every mark is taken)."""
    desired, actual = pair
    if actual is None:
        return
    marked = assign_marks(desired, actual)
    first = released_marks(marked, actual)
    taken = takeovers(marked, actual)
    assert len(set(taken.values())) == len(taken), "a spare becomes one backend at most"
    for b in marked.backends:
        if actual.backend(b.name) == b:
            continue
        holders = {o.name for o in actual.backends if o.mark == b.mark and o.name != b.name}
        if b.name in taken:  # the spare it becomes holds the mark, and nothing else does
            spare = actual.backend(taken[b.name])
            assert spare is not None and is_spare(spare) and marked.backend(spare.name) is None
            assert holders == {spare.name}
            continue
        departing = {n for n in holders if marked.backend(n) is None}
        assert departing <= first
        # A backend staying on it would be two on one mark after the plan: never.
        assert all(marked.backend(n).mark != b.mark for n in holders - departing)  # type: ignore[union-attr]
    for name in first:  # marks are never all taken here: only a duplicate nftlb already held
        gone = actual.backend(name)
        assert gone is not None and marked.backend(name) is None and name not in taken.values()
        holder = next(b for b in marked.backends if b.mark == gone.mark)
        kept = actual.backend(holder.name)
        assert kept is not None and kept.mark == gone.mark, "a departing mark was handed out"
    event(f"takeovers: {min(len(taken), 2)}")
