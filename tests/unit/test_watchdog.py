"""The watchdog: a restart noticed once, logged, counted and handed on; a failing probe never
fires and is logged once."""

from __future__ import annotations

from typing import Any

from reconciler.agent.metrics import Metrics
from reconciler.agent.watchdog import NFTLB_TABLES, TablesProbe, Watchdog
from reconciler.kernel.tables import TableKey, TablesError


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


class Kernel:
    def __init__(self) -> None:
        self.tables: dict[TableKey, int] = {}
        self.fail = False

    def read(self) -> dict[TableKey, int]:
        if self.fail:
            raise TablesError("no CAP_NET_ADMIN")
        return dict(self.tables)


def setup() -> tuple[Kernel, Watchdog, list[str], Log, Metrics]:
    kernel, log, metrics, fired = Kernel(), Log(), Metrics(), []
    dog = Watchdog(fired.append, metrics, log, interval=0.01)
    dog.add(TablesProbe("nftlb", NFTLB_TABLES, kernel.read))
    return kernel, dog, fired, log, metrics


def count(metrics: Metrics, target: str) -> float:
    value = metrics.registry.get_sample_value(
        "kube_nftlb_restarts_detected_total", {"target": target}
    )
    return value or 0.0


def test_tables_appearing_fire_nothing_and_vanishing_fires_once() -> None:
    kernel, dog, fired, log, metrics = setup()
    assert dog.check() == []
    kernel.tables = {("ip", "nftlb"): 4, ("inet", "other"): 1}  # our first farms
    assert dog.check() == []
    assert dog.check() == []
    kernel.tables = {("inet", "other"): 1}  # nftlb started again: it deleted its tables
    assert dog.check() == ["nftlb"]
    assert dog.check() == []  # once
    assert fired == ["nftlb"]
    assert count(metrics, "nftlb") == 1
    assert log.lines == [
        ("watchdog.restart_detected", {"target": "nftlb", "reason": "table ip nftlb is gone"})
    ]


def test_a_table_made_again_between_two_polls_fires() -> None:
    kernel, dog, fired, _, _ = setup()
    kernel.tables = {("ip", "nftlb"): 4, ("ip6", "nftlb"): 5}
    dog.check()
    kernel.tables = {("ip", "nftlb"): 9, ("ip6", "nftlb"): 5}
    assert dog.check() == ["nftlb"]
    kernel.tables = {("ip", "nftlb"): 9}
    assert dog.check() == ["nftlb"]
    assert fired == ["nftlb", "nftlb"]


def test_a_probe_that_cannot_tell_never_fires_and_is_logged_once() -> None:
    kernel, dog, fired, log, _ = setup()
    kernel.tables = {("ip", "nftlb"): 4}
    dog.check()
    kernel.fail = True
    assert dog.check() == [] and dog.check() == []
    assert [e for e, _ in log.lines] == ["watchdog.probe_failed"]
    kernel.fail = False
    assert dog.check() == []  # still there: nothing happened while it could not tell
    assert fired == []


def test_a_second_target_on_the_same_mechanism() -> None:
    kernel, dog, _, _, metrics = setup()
    dog.add(TablesProbe("node-table", [("inet", "kube-nftlb")], kernel.read))
    kernel.tables = {("ip", "nftlb"): 4, ("inet", "kube-nftlb"): 2}
    dog.check()
    kernel.tables = {("ip", "nftlb"): 4}
    assert dog.check() == ["node-table"]
    assert count(metrics, "node-table") == 1 and count(metrics, "nftlb") == 0


def test_the_thread_polls_until_stopped() -> None:
    import time

    kernel, dog, fired, _, _ = setup()
    kernel.tables = {("ip", "nftlb"): 4}
    dog.start()
    try:
        time.sleep(0.05)
        kernel.tables = {}
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dog.stop()
    assert fired == ["nftlb"]


def test_a_table_expected_but_never_seen_fires_once_until_seen() -> None:
    """nftlb restarted before any poll saw its table: the farms programmed say it must exist."""
    kernel, log, metrics, fired = Kernel(), Log(), Metrics(), []
    dog = Watchdog(fired.append, metrics, log)
    expected: set[TableKey] = set()
    dog.add(TablesProbe("nftlb", NFTLB_TABLES, kernel.read, lambda: expected))
    assert dog.check() == []
    expected.add(("ip", "nftlb"))
    assert dog.check() == ["nftlb"]
    assert dog.check() == []  # nftlb still down: no storm of syncs
    kernel.tables = {("ip", "nftlb"): 7}
    assert dog.check() == []
    kernel.tables = {}
    assert dog.check() == ["nftlb"]


class AllLog(Log):
    def error(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


def test_nftlbs_failure_lines_are_logged_and_counted_from_where_the_agent_started(
    tmp_path: Any,
) -> None:
    from reconciler.agent.watchdog import NftlbLogProbe

    path = tmp_path / "nftlb-events.log"
    path.write_text("nft command error : from before this agent\n")
    log, metrics = AllLog(), Metrics()
    probe = NftlbLogProbe(str(path), metrics, log)
    assert probe.poll() is None and log.lines == []  # old lines were seen by the last agent
    with path.open("a") as f:
        f.write("nft command error : Error: Could not process rule: File exists\n")
        f.write("recovery in progress...\nnft recov")  # the last line still being written
    assert probe.poll() is None
    with path.open("a") as f:
        f.write("ered...\n")
    probe.poll()
    assert log.lines == [
        (
            "nftlb.log",
            {
                "kind": "nft-error",
                "line": "nft command error : Error: Could not process rule: File exists",
            },
        ),
        ("nftlb.log", {"kind": "recovery", "line": "recovery in progress..."}),
        ("nftlb.log", {"kind": "recovered", "line": "nft recovered..."}),
    ]

    def lines(kind: str) -> float:
        value = metrics.registry.get_sample_value(
            "kube_nftlb_nftlb_log_lines_total", {"kind": kind}
        )
        return value or 0.0

    assert (lines("nft-error"), lines("recovery"), lines("recovered")) == (1, 1, 1)
    path.write_text("recovery in progress...\n")  # the script emptied it past 1000 lines
    probe.poll()
    assert lines("recovery") == 2


def test_a_missing_events_file_is_read_from_its_start_once_it_appears(tmp_path: Any) -> None:
    from reconciler.agent.watchdog import NftlbLogProbe

    path = tmp_path / "nftlb-events.log"
    log, metrics = AllLog(), Metrics()
    probe = NftlbLogProbe(str(path), metrics, log)
    assert probe.poll() is None
    path.write_text("nft command error : x\n")
    probe.poll()
    assert [kw["kind"] for _, kw in log.lines] == ["nft-error"]
