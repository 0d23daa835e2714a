"""A stateful test of the whole loop: random cluster changes, syncs, cleanups, nftlb restarts.

After every sync, nftlb (the in-memory model, through the real client) serves exactly the farms
`desired_farms` computes from the cluster as it is then (partial syncs converge as full ones
do), and every other backend it holds is a spare: down, out of every map, and known to the
controller. After a cleanup with nothing else waiting it holds exactly those farms.
"""

from __future__ import annotations

from typing import Any

import httpx
from attrs import evolve
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from reconciler.agent.controller import Controller, Settings
from reconciler.agent.logs import configure, get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.desired import desired_farms
from reconciler.core.farms import Farm, is_spare
from reconciler.core.kube import ClusterState, parse_endpoint_slice, parse_node, parse_service
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel

NAMES = st.sampled_from(["web", "api", "dns"])
NAMESPACES = st.sampled_from(["default", "other"])
IPS = st.sampled_from([f"10.1.0.{i}" for i in range(1, 7)])
CLUSTER_IPS = st.sampled_from([f"10.96.0.{i}" for i in range(1, 5)])  # collide now and then


class Store:
    def __init__(self) -> None:
        self.items: dict[Any, Any] = {}
        self.has_synced = True

    def list(self) -> list[Any]:
        return list(self.items.values())


def _unmarked(farms: Any) -> dict[str, Farm]:
    return {f.name: evolve(f, backends=tuple(evolve(b, mark=0) for b in f.backends)) for f in farms}


def _serving(farms: Any) -> dict[str, Farm]:
    """The farms with their spares left out: what traffic sees."""
    return _unmarked(
        evolve(f, backends=tuple(b for b in f.backends if not is_spare(b))) for f in farms
    )


class Loop(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        configure("json", "error")
        self.model = NftlbModel("k")
        self.client = NftlbClient(
            "http://n", "k", transport=httpx.MockTransport(self.model.as_handler())
        )
        self.services, self.slices, self.nodes = Store(), Store(), Store()
        node = parse_node(
            {
                "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]},
            }
        )[0]
        self.nodes.items["n1"] = node
        self.controller = Controller(
            Settings("n1"),
            self.client,
            self.services,
            self.slices,
            self.nodes,
            Metrics(),
            get_logger(),
        )
        self.synced = False
        self.restarted = False

    @rule(
        ns=NAMESPACES,
        name=NAMES,
        ip=CLUSTER_IPS,
        node_port=st.booleans(),
        rv=st.integers(1, 9),
        helper=st.booleans(),
    )
    def put_service(
        self, ns: str, name: str, ip: str, node_port: bool, rv: int, helper: bool
    ) -> None:
        port: dict[str, Any] = {"name": "http", "port": 80}
        spec: dict[str, Any] = {"clusterIP": ip, "ports": [port]}
        if node_port:
            spec["type"] = "NodePort"
            port["nodePort"] = 30000 + sum(map(ord, ns + name)) % 1000
        raw = {
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)},
            "spec": spec,
        }
        svc = parse_service(raw)[0]
        old = self.services.items.get(svc.key)
        self.services.items[svc.key] = svc
        self.controller.on_service(svc.key, old, svc)

    @rule(ns=NAMESPACES, name=NAMES)
    def delete_service(self, ns: str, name: str) -> None:
        old = self.services.items.pop((ns, name), None)
        if old is not None:
            self.controller.on_service((ns, name), old, None)

    @rule(ns=NAMESPACES, name=NAMES, ips=st.lists(IPS, max_size=4), ready=st.booleans())
    def put_slice(self, ns: str, name: str, ips: list[str], ready: bool) -> None:
        raw = {
            "metadata": {
                "name": f"{name}-1",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
        }
        sl = parse_endpoint_slice(raw)[0]
        key = (ns, sl.name)
        old = self.slices.items.get(key)
        self.slices.items[key] = sl
        self.controller.on_slice(old, sl)

    @rule()
    def restart_nftlb(self) -> None:
        self.model.__init__("k")  # type: ignore[misc]
        self.restarted = True  # partial syncs cannot know; the next full sync repairs

    @rule()
    def partial_sync(self) -> None:
        if self.synced:
            assert self.controller.sync_partial().ok
            self.check()

    @rule()
    def full_sync(self) -> None:
        assert self.controller.sync_full().ok
        self.synced = True
        self.restarted = False
        self.check()

    @rule()
    def cleanup(self) -> None:
        if self.synced and not self.restarted:
            assert self.controller.sync_cleanup().ok
            if not self.controller._work_waiting():  # else it stopped before any request
                self.check()
                state = ClusterState.build(
                    self.services.list(), self.slices.list(), self.nodes.list()
                )
                want = desired_farms(state, "n1").farms
                assert _unmarked(self.client.get_farms().owned) == _unmarked(want)
                assert self.controller.metrics.spare_backends._value.get() == 0

    def check(self) -> None:
        if self.restarted:
            return
        state = ClusterState.build(self.services.list(), self.slices.list(), self.nodes.list())
        want = desired_farms(state, "n1").farms
        owned = self.client.get_farms().owned
        assert _serving(owned) == _unmarked(want)
        # every other backend is a spare, and the controller's view holds it as one
        held = {f.name: f for f in owned}
        assert {n: held[n] for n in held} == {n: self.controller._actual[n] for n in held}, (
            "the controller's view of nftlb (spares included) is what nftlb holds"
        )

    @invariant()
    def marks_are_explicit(self) -> None:
        if self.synced:
            for farm in self.client.get_farms().owned:
                assert all(b.mark for b in farm.backends)


Loop.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_loop = Loop.TestCase
