"""Topology-aware routing never costs a Service its endpoints (issue 12, item 5).

kube-proxy's CategorizeEndpoints uses hints only when every ready endpoint carries them and one is
meant for this node (or zone), so hints narrow the cluster set but never empty it while any
endpoint is usable; and the local set never looks at them.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.endpoints import LeftOut, explain_endpoints, select_endpoints
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort

HTTP = ServicePort("http", Protocol.TCP, 80)
WEB = Service("default", "web", cluster_ips=("10.96.0.1",), ports=(HTTP,))
NODES = ("", "n1", "n2", "n3")
ZONES = ("", "a", "b")


def _names(pool: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from([p for p in pool if p]), max_size=2, unique=True).map(tuple)


@st.composite
def endpoints(draw: st.DrawFn) -> list[Endpoint]:
    count = draw(st.integers(0, 6))
    out = []
    for i in range(count):
        ready = draw(st.booleans())
        out.append(
            Endpoint(
                (f"10.244.0.{i + 1}",),
                ready=ready,
                serving=ready or draw(st.booleans()),
                terminating=not ready and draw(st.booleans()),
                node_name=draw(st.sampled_from(NODES)),
                zone_hints=draw(_names(ZONES)),
                node_hints=draw(_names(NODES)),
            )
        )
    return out


def _select(eps: list[Endpoint], node: str, zone: str, local: bool) -> set[str]:
    s = EndpointSlice(
        "default",
        "web-a",
        "1",
        "web",
        "IPv4",
        tuple(eps),
        (EndpointPort("http", Protocol.TCP, 80),),
    )
    return {t.ip for t in select_endpoints(WEB, HTTP, [s], Family.IPV4, node, local, zone)}


def _unhinted(eps: list[Endpoint]) -> list[Endpoint]:
    return [Endpoint(e.addresses, e.ready, e.serving, e.terminating, e.node_name) for e in eps]


@given(endpoints(), st.sampled_from(NODES), st.sampled_from(ZONES))
def test_hints_narrow_the_cluster_set_but_never_empty_it(
    eps: list[Endpoint], node: str, zone: str
) -> None:
    with_hints = _select(eps, node, zone, local=False)
    without = _select(_unhinted(eps), node, zone, local=False)
    assert with_hints <= without
    assert bool(with_hints) == bool(without), "hints emptied a Service kube-proxy would serve"
    usable = any(e.ready or (e.serving and e.terminating) for e in eps)
    assert bool(with_hints) == usable


@given(endpoints(), st.sampled_from(NODES), st.sampled_from(ZONES))
def test_hints_apply_only_when_every_ready_endpoint_has_them(
    eps: list[Endpoint], node: str, zone: str
) -> None:
    ready = [e for e in eps if e.ready]
    if any(not e.zone_hints for e in ready) and any(not e.node_hints for e in ready):
        assert _select(eps, node, zone, local=False) == _select(_unhinted(eps), node, zone, False)


@given(endpoints(), st.sampled_from(NODES), st.sampled_from(ZONES))
def test_the_local_set_ignores_hints(eps: list[Endpoint], node: str, zone: str) -> None:
    assert _select(eps, node, zone, local=True) == _select(_unhinted(eps), node, zone, True)


@given(endpoints(), st.sampled_from(NODES), st.sampled_from(ZONES), st.booleans())
def test_explain_tells_the_same_topology_decision(
    eps: list[Endpoint], node: str, zone: str, local: bool
) -> None:
    s = EndpointSlice(
        "default",
        "web-a",
        "1",
        "web",
        "IPv4",
        tuple(eps),
        (EndpointPort("http", Protocol.TCP, 80),),
    )
    verdicts = explain_endpoints(WEB, HTTP, [s], Family.IPV4, node, local, zone)
    assert {v.address for v in verdicts if v.used} == _select(eps, node, zone, local)
    assert len(verdicts) == len(eps)
    if local:
        assert all(v.reason is not LeftOut.HINTED_ELSEWHERE for v in verdicts)
