"""One sync's unexpected exception never stops the loop; names are full-matched; the key file
is printable ASCII (issue 16, item 3)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.test_controller import World, eps, service

from reconciler.agent.config import ConfigError, read_key
from reconciler.cli.main import main
from reconciler.core.farms import NAME_RE, OBJECT_NAME_RE, Family, Farm, Protocol, validate_farm
from reconciler.core.names import is_owned, parse_farm_name
from reconciler.core.wire import farm_path, read_back, safe_path
from reconciler.nftlb.client import NftlbClient

WEB = "k8s.default.web.http.tcp.v4"


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t"])
def test_a_trailing_newline_or_blank_passes_no_name_check(suffix: str) -> None:
    name = WEB + suffix
    assert not NAME_RE.fullmatch(name) and not OBJECT_NAME_RE.fullmatch(name)
    assert not is_owned(name) and parse_farm_name(name) is None
    assert not is_owned("k8s.default.web.http.tcp.v4.habcdefghijk" + suffix)
    with pytest.raises(ValueError, match="unsafe farm name"):
        farm_path(name)
    with pytest.raises(ValueError, match="unsafe URL segment"):
        safe_path("farms", WEB, "backends", "b-1" + suffix)
    assert validate_farm(Farm(name, Family.IPV4, Protocol.TCP)) != []


def test_a_farm_read_back_with_such_a_name_is_foreign() -> None:
    back = read_back([{"name": WEB + "\n", "state": "up"}])
    assert back.foreign == (WEB + "\n",) and back.owned == () and back.unparsable == ()


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_loop_survives_an_unexpected_exception_and_is_unready_meanwhile() -> None:
    w = World()
    w.controller.settings.backoff_initial = 0.01
    w.controller.settings.backoff_max = 0.02
    handler = w.model.as_handler()
    broken = {"left": 3}

    def flaky(request: httpx.Request) -> httpx.Response:
        if broken["left"] > 0:
            broken["left"] -= 1
            raise RuntimeError("nobody expected this")  # neither httpx's nor nftlb's error
        return handler(request)

    w.client = NftlbClient("http://nftlb", "k", transport=httpx.MockTransport(flaky))
    w.controller.nftlb = w.client
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    w.controller.start()
    try:
        _wait(lambda: w.model.farms.get(WEB) is not None and w.controller.ready)
        crashed = [x for x in w.logs() if x["event"] == "sync.crashed"]
        assert len(crashed) == 3 and crashed[0]["error_type"] == "RuntimeError"
        assert "Traceback" in crashed[0]["exception"]
        metrics = w.controller.metrics
        assert metrics.unexpected_errors.labels(where="sync")._value.get() == 3
        # Still alive after it: a later change is programmed.
        w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
        _wait(lambda: len(w.model.farms[WEB].backends) == 2)
    finally:
        w.controller.stop()


def test_readiness_is_false_while_syncs_crash() -> None:
    w = World()
    w.put_service(service())
    assert w.controller.sync_full().ok and w.controller.ready

    def boom(*_: Any) -> Any:
        raise KeyError("half a picture")

    w.controller.nftlb.get_farms = boom  # type: ignore[method-assign]
    result = w.controller._sync_guarded("full")
    assert not result.ok and "KeyError" in result.error
    assert not w.controller.ready


@pytest.mark.parametrize("content", ["clé\n".encode(), b"k\xe9y\n", b"key\x00\n", "ключ".encode()])
def test_a_key_file_that_is_not_printable_ascii_is_a_clear_start_up_error(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not printable ASCII"):
        read_key(str(path))
    argv = ["run", "--nftlb-key-file", str(path), "--node-name", "n1", "--once"]
    code = main([*argv, "--cluster-cidr", "10.244.0.0/16"])
    err = capsys.readouterr().err
    assert code == 2 and "not printable ASCII" in err and str(path) in err
    with pytest.raises(ValueError, match="printable ASCII"):
        NftlbClient("http://nftlb", content.decode("utf-8", "replace").strip())


def test_a_printable_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  s3cr3t key-~!  \n")
    assert read_key(str(path)) == "s3cr3t key-~!"
