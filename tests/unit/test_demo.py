from __future__ import annotations

import pytest

from reconciler.cli import demo


def test_without_root_the_demo_says_exactly_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.main() == 2
    assert "sudo ./dev demo" in capsys.readouterr().err


def test_without_nftlb_the_demo_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    monkeypatch.setattr(demo, "NFTLB", "/nonexistent/nftlb")
    assert demo.main() == 2
    assert "apt-get install -y nftlb" in capsys.readouterr().err
