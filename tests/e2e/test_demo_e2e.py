"""The README's demo command, run as a new user would (already inside the e2e namespace)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_the_whole_loop_and_ends_cleanly_by_itself() -> None:
    env = {**os.environ, "KUBE_NFTLB_DEMO_NETNS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "the first full sync programmed every Service" in text
    assert "goto nat-k8s.default.web.http.tcp.v4" in text  # the kernel's rules are shown
    assert "upsert-backends k8s.default.web.http.tcp.v4" in text and "+ 10.244.2.15:8080" in text
    assert "scheduler: rr -> weight" in text
    assert "delete-farm k8s.default.shop.http.tcp.v4" in text
    assert "roundrobin" in text  # the bad annotation is reported
    leftover = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=False
    ).stdout
    assert "nftlb" not in leftover
