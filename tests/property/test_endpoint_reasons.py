"""`explain_endpoints` tells the same decision as `select_endpoints`, per address: the
addresses it keeps are exactly the targets, and every other address has a reason."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from reconciler.core.endpoints import LeftOut, explain_endpoints, select_endpoints
from reconciler.core.farms import Family
from reconciler.core.kube import parse_objects
from tests.property.strategies import cluster_and_node


@given(cluster_and_node())
def test_the_reasons_agree_with_the_selection(cluster: tuple[list[Any], str]) -> None:
    objs, node = cluster
    state, _ = parse_objects(objs)
    for service in state.services.values():
        slices = state.slices_for(service)
        for port in service.ports:
            for family in Family:
                for local in (False, True):
                    targets = select_endpoints(service, port, slices, family, node, local)
                    verdicts = explain_endpoints(service, port, slices, family, node, local)
                    used = {(v.address, v.port) for v in verdicts if v.used}
                    assert used == {(t.ip, t.port) for t in targets}
                    assert len([v for v in verdicts if v.used]) == len(targets)
                    every = sum(
                        len(e.addresses)
                        for s in slices
                        if (s.namespace, s.service_name) == service.key
                        for e in s.endpoints
                    )
                    assert len(verdicts) == every  # nothing left out without a word
                    if not local:
                        assert all(v.reason is not LeftOut.OTHER_NODE for v in verdicts)
