"""Watches against hostile lines (issue 16, item 5): poison events are skipped or relisted past,
with a backoff that only real progress resets; a server that sends one event and closes, or a
silent (half-open) watch, cannot make a hot loop or go unnoticed.

Each "no hot loop" window counts requests with a bound far from both the backed-off count (a
handful) and the hot-loop count (dozens a second, as measured before the fix).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.unit import test_informer
from tests.unit.test_informer import WAIT, Recorder, lists, svc, wait_until, watches

from reconciler.agent.config import RUN_SETTINGS
from reconciler.kubeapi.informer import Informer
from reconciler.testing.fakeapi import FakeApiServer

fake, api, make = test_informer.fake, test_informer.api, test_informer.make  # the fixtures

Make = Callable[..., tuple[Informer[Any], Recorder]]


def _event(fake: FakeApiServer, name: str) -> dict[str, Any]:
    obj = fake.get("Service", "default", name)
    assert obj is not None
    return {"type": "MODIFIED", "object": {"kind": "Service", "apiVersion": "v1", **obj}}


POISON = {
    "metadata null": {"type": "ADDED", "object": {"kind": "Service", "metadata": None}},
    "no object": {"type": "MODIFIED"},
    "ERROR without a code": {"type": "ERROR", "object": {"kind": "Status"}},
}


@pytest.mark.parametrize("line", list(POISON.values()), ids=list(POISON))
def test_a_poison_event_is_got_past_with_a_relist(
    fake: FakeApiServer, make: Make, line: dict[str, Any]
) -> None:
    fake.seed([svc("a")])
    fake.inject_watch_lines([line], times=3)  # replayed to three watches
    inf, rec = make(server_timeout=(30, 30), backoff=(0.05, 0.2))
    assert inf.wait_for_sync(WAIT)
    fake.apply(svc("b", 81))
    assert wait_until(lambda: inf.get(("default", "b")) == 81), "wedged on the poison line"
    assert inf.stats.poison_events >= 1
    assert inf.stats.restarts["poison"] >= 1 and inf.stats.lists >= 2  # relisted past it
    assert inf.get(("default", "a")) == 80 and rec.has("ADDED", ("default", "b"))


def test_a_skipped_bookmark_with_null_metadata_does_not_end_the_watch(
    fake: FakeApiServer, make: Make
) -> None:
    fake.seed([svc("a")])
    fake.inject_watch_lines([{"type": "BOOKMARK", "object": {"metadata": None}}])
    inf, _ = make(server_timeout=(30, 30))
    assert inf.wait_for_sync(WAIT)
    assert wait_until(lambda: inf.stats.poison_events == 1)
    fake.apply(svc("b"))
    assert wait_until(lambda: inf.get(("default", "b")) == 80)
    assert inf.stats.watches == 1 and inf.stats.lists == 1


def test_a_non_json_line_is_skipped_without_a_reconnect_loop(
    fake: FakeApiServer, make: Make
) -> None:
    fake.seed([svc("a")])
    fake.inject_watch_lines([b"<html>502 Bad Gateway</html>"], times=10_000)
    inf, _ = make(server_timeout=(30, 30), backoff=(0.2, 1.0))
    assert inf.wait_for_sync(WAIT)
    fake.clear_requests()
    time.sleep(1.5)
    # Before: the bad line reset the backoff and ended the watch, about 10 watches a second.
    assert len(watches(fake)) <= 3
    fake.apply(svc("b"))
    assert wait_until(lambda: inf.get(("default", "b")) == 80)
    assert inf.stats.poison_events >= 1


def test_a_watch_that_delivers_one_event_and_closes_backs_off(
    fake: FakeApiServer, make: Make
) -> None:
    fake.seed([svc("a")])
    inf, _ = make(server_timeout=(30, 30), backoff=(0.2, 1.0))
    assert inf.wait_for_sync(WAIT)
    assert fake.wait_for_watches(1)
    fake.inject_watch_lines([_event(fake, "a")], times=10_000, close=True)
    fake.close_watches()
    fake.clear_requests()
    time.sleep(2.0)
    # Before: every such watch reset the backoff and was followed at once, 68 a second.
    assert len(watches(fake)) < 15
    assert lists(fake) == []


def test_a_silent_watch_is_noticed_within_about_a_minute_by_default() -> None:
    """The client-side read timeout is the only guard against a half-open connection; it was
    the server timeout plus 30 s (about 5.5 minutes)."""
    seen: list[Any] = []

    def list_fn(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("_request_timeout"))
        raise OSError("stop here")

    inf: Informer[Any] = Informer("t", list_fn, parse=lambda raw: raw)
    inf._rv = "1"
    with pytest.raises(OSError, match="stop here"):
        inf._watch_once()
    _, read = seen[0]
    assert read <= 75
    default = next(s for s in RUN_SETTINGS if s.flag == "--watch-stall-timeout")
    assert default.parse(default.default) <= 75
