"""The controller keeps our nftables table in line with the farms: full syncs read it back and
repair it, partial syncs send only what changed, a refused transaction forces a full sync. The
kernel is a model here (tests/unit/test_node_rules.py's); the real one is in the e2e tests."""

from __future__ import annotations

from typing import Any

import httpx
from attrs import evolve
from tests.unit.test_controller import NODE, Store, eps, service
from tests.unit.test_node_rules import kernel_listing

from reconciler.agent.controller import Controller, Settings
from reconciler.agent.logs import get_logger
from reconciler.agent.metrics import Metrics
from reconciler.core.node_diff import parse_table
from reconciler.core.node_rules import Element, NodeRulesConfig, NodeTable
from reconciler.kernel.nftables import NftablesError
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlb_model import NftlbModel


class Kernel:
    """Our table in a model kernel: the transactions applied, and a switch to refuse them."""

    def __init__(self) -> None:
        self.log: list[list[Any]] = []
        self.refuse = False

    def read(self) -> NodeTable | None:
        return parse_table(kernel_listing([c for t in self.log for c in t]))

    def apply(self, commands: list[Any]) -> int:
        if self.refuse:
            raise NftablesError("nft refused the transaction: Error: Could not process rule")
        if commands:
            self.log.append(list(commands))
        return 1

    def elements(self, name: str) -> set[Any]:
        table = self.read()
        return set() if table is None else {e for e in table.elements if e.set == name}


def world() -> tuple[Controller, Kernel, Store, Store]:
    model = NftlbModel("k")
    client = NftlbClient("http://nftlb", "k", transport=httpx.MockTransport(model.as_handler()))
    services, slices, nodes = Store(), Store(), Store()
    nodes.items["n1"] = NODE
    kernel = Kernel()
    settings = Settings("n1", node_rules=NodeRulesConfig(cluster_cidrs=("10.244.0.0/16",)))
    controller = Controller(
        settings, client, services, slices, nodes, Metrics(), get_logger(), node_table=kernel
    )
    return controller, kernel, services, slices


def put(controller: Controller, store: Store, obj: Any) -> None:
    key = obj.key
    old = store.items.get(key)
    store.items[key] = obj
    if hasattr(obj, "service_name"):
        controller.on_slice(old, obj)
    else:
        controller.on_service(key, old, obj)


REJECT = Element("verdicts-v4", ("10.96.0.1", "tcp", 80), "goto:reject")


def test_full_syncs_write_the_table_and_a_second_one_sends_nothing() -> None:
    controller, kernel, services, _ = world()
    services.items[("default", "web")] = service()
    assert controller.sync_full().ok
    assert REJECT in kernel.elements("verdicts-v4")
    transactions = len(kernel.log)
    result = controller.sync_full()
    assert result.ok and result.table_commands == 0 and len(kernel.log) == transactions


def test_a_partial_sync_sends_only_the_change() -> None:
    controller, kernel, services, slices = world()
    for i in range(20):
        services.items[("default", f"s{i}")] = service(f"s{i}", f"10.96.0.{i + 10}")
    services.items[("default", "web")] = service()
    assert controller.sync_full().ok
    put(controller, slices, eps("web", "10.244.1.5"))
    result = controller.sync_partial()
    assert result.ok
    last = kernel.log[-1]
    # the reject goes, the masquerade decision and the hairpin element come: three commands
    assert result.table_commands == len(last) <= 3
    assert REJECT not in kernel.elements("verdicts-v4")
    assert Element("hairpin-v4", ("10.244.1.5", "10.244.1.5")) in kernel.elements("hairpin-v4")
    assert kernel.elements("masquerade-v4") == {
        Element("masquerade-v4", ("10.96.0.1", "tcp", 80), "goto:masquerade-cluster")
    }


def test_our_table_deleted_behind_our_back_is_restored_by_the_next_full_sync() -> None:
    controller, kernel, services, _ = world()
    services.items[("default", "web")] = service()
    assert controller.sync_full().ok
    wanted = kernel.read()
    kernel.log.clear()  # `nft delete table inet kube-nftlb`
    assert controller.sync_full().ok
    restored = kernel.read()
    assert restored is not None and wanted is not None
    assert (restored.elements, restored.sets) == (wanted.elements, wanted.sets)


def test_a_refused_transaction_fails_the_sync_and_the_next_full_sync_repairs() -> None:
    controller, kernel, services, slices = world()
    services.items[("default", "web")] = service()
    assert controller.sync_full().ok
    kernel.refuse = True
    put(controller, slices, eps("web", "10.244.1.5"))
    result = controller.sync_partial()
    assert not result.ok and "refused" in result.error
    kernel.refuse = False
    put(controller, services, evolve(service("other", "10.96.0.2"), resource_version="2"))
    assert controller.sync_partial().ok  # not in sync: this one reads back and diffs everything
    assert REJECT not in kernel.elements("verdicts-v4")
    assert Element("verdicts-v4", ("10.96.0.2", "tcp", 80), "goto:reject") in kernel.elements(
        "verdicts-v4"
    )


def test_without_node_rules_settings_no_table_is_managed() -> None:
    model = NftlbModel("k")
    client = NftlbClient("http://nftlb", "k", transport=httpx.MockTransport(model.as_handler()))
    services, slices, nodes = Store(), Store(), Store()
    services.items[("default", "web")] = service()
    kernel = Kernel()
    controller = Controller(
        Settings("n1"), client, services, slices, nodes, Metrics(), get_logger(), node_table=kernel
    )
    assert controller.sync_full().ok and kernel.log == []


def test_the_watchdog_expects_our_table_once_it_is_written() -> None:
    controller, _, services, _ = world()
    assert controller.node_tables() == set()
    services.items[("default", "web")] = service()
    assert controller.sync_full().ok
    assert controller.node_tables() == {("inet", "kube-nftlb")}
