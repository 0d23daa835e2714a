"""Properties of the conntrack cleanup plan over generated cluster state (API JSON, junk too)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.conntrack_plan import (
    Entry,
    after_cleanup,
    conntrack_plan,
    stale_entries,
    udp_frontends,
)
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import parse_objects
from tests.property.strategies import cluster_and_node


def _frontends(data: tuple[list[Any], str]) -> dict[tuple[str, str], Any]:
    objs, node = data
    state, _ = parse_objects(objs)
    out = {}
    for key, svc in state.services.items():
        fronts = udp_frontends(svc, state, node)
        if fronts:
            out[key] = fronts
    return out


@st.composite
def _entries(draw: st.DrawFn, desired: dict[tuple[str, str], Any]) -> list[Entry]:
    """Entries aimed at the frontends (and elsewhere), replying from endpoints, other
    endpoints' addresses, the frontend itself or a stranger, over UDP, TCP and SCTP."""
    fronts = [f for fs in desired.values() for f in fs]
    replies = sorted({hp for f in fronts for hp in f.serving}) or [("10.244.0.1", 8080)]
    out = []
    for _ in range(draw(st.integers(0, 12))):
        if fronts and draw(st.booleans()):
            f = draw(st.sampled_from(fronts))
            family, dst = f.family, (f.ip, f.port)
        else:
            family, dst = Family.IPV4, ("8.8.8.8", 53)
        reply = draw(st.sampled_from([*replies, dst, ("192.0.2.1", 53)]))
        if draw(st.booleans()):
            reply = (reply[0], reply[1] + 1)  # the right IP on another port
        protocol = draw(st.sampled_from(list(Protocol)))
        out.append(
            Entry(family, protocol, ("10.244.9.9", draw(st.integers(1024, 1030))), dst, reply)
        )
    return out


@given(cluster_and_node())
def test_frontends_are_udp_and_a_plan_of_a_state_with_itself_is_empty(
    data: tuple[list[Any], str],
) -> None:
    desired = _frontends(data)
    objs, _ = data
    state, _ = parse_objects(objs)
    for key, fronts in desired.items():
        assert any(p.protocol is Protocol.UDP for p in state.services[key].ports)
        assert list(fronts) == sorted(set(fronts))
    assert not conntrack_plan(desired, desired)
    assert not conntrack_plan(after_cleanup({}, desired), desired)


@given(cluster_and_node())
def test_the_first_plan_checks_exactly_the_frontends_with_serving_endpoints(
    data: tuple[list[Any], str],
) -> None:
    desired = _frontends(data)
    plan = conntrack_plan({}, desired)
    expected = {
        (f.family, f.ip, f.port) for fronts in desired.values() for f in fronts if f.serving
    }
    assert set(plan.frontends) == expected
    for at, serving in plan.frontends.items():
        assert serving, "a frontend without serving endpoints is never checked"
        assert serving == frozenset().union(
            *(f.serving for fs in desired.values() for f in fs if (f.family, f.ip, f.port) == at)
        )


@given(st.data(), cluster_and_node(), cluster_and_node())
def test_stale_entries_are_exactly_the_udp_ones_of_checked_frontends_not_from_an_endpoint(
    data: st.DataObject, before_data: tuple[list[Any], str], after_data: tuple[list[Any], str]
) -> None:
    before, after = _frontends(before_data), _frontends(after_data)
    plan = conntrack_plan(before, after)
    entries = data.draw(_entries(after))
    stale = stale_entries(plan, entries)
    for e in entries:
        serving = plan.frontends.get((e.family, *e.orig_dst))
        should = e.protocol is Protocol.UDP and serving is not None and e.reply_src not in serving
        assert (e in stale) == should, e
    # Deleting them leaves nothing stale: the cleanup is idempotent.
    rest = [e for e in entries if e not in stale]
    assert stale_entries(plan, rest) == []
    # And once cleaned, the same state plans nothing more.
    assert not conntrack_plan(after_cleanup(before, after), after)
