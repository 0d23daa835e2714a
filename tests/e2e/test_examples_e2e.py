"""`kube-nftlb render -f examples/` applied to the real daemon, and `kube-nftlb diff` against it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.manifests import load_paths
from reconciler.core.desired import desired_farms
from reconciler.core.diff import diff
from reconciler.core.kube import parse_objects

if TYPE_CHECKING:
    from tests.e2e.conftest import NftlbDaemon

    from reconciler.nftlb.client import NftlbClient

EXAMPLES = Path(__file__).parents[2] / "examples"


def kube_nftlb(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "reconciler", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_every_example_farm_is_applied_read_back_equal_in_the_kernel_and_up(
    clean_daemon: NftlbDaemon, client: NftlbClient, tmp_path: Path
) -> None:
    state, _ = parse_objects(load_paths([EXAMPLES]))
    desired = desired_farms(state, "node-1").farms
    assert len(desired) >= 15
    result = client.apply(diff(desired, []), verify=lambda read: diff(desired, read.owned))
    assert result.ok and result.failures == ()
    read = client.get_farms()
    assert not diff(desired, read.owned)
    clean_daemon.assert_kernel(read.owned)
    states = {b["state"] for f in client.get_farms_document()["farms"] for b in f["backends"]}
    assert states == {"up"}

    args = ["--nftlb-url", clean_daemon.url, "--nftlb-key-file", str(clean_daemon.key_file)]
    same = kube_nftlb("diff", "-f", str(EXAMPLES), *args)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("No changes")

    edited = tmp_path / "examples"
    shutil.copytree(EXAMPLES, edited)
    web = edited / "10-web.yaml"
    text = web.read_text()
    text = text.replace(
        'creationTimestamp: "2026-01-10T09:00:00Z"\n',
        'creationTimestamp: "2026-01-10T09:00:00Z"\n  annotations:\n'
        "    service.kubernetes.io/kube-nftlb-load-balancer-scheduler: weight\n",
        1,
    )
    web.write_text(text)
    changed = kube_nftlb("diff", "-f", str(edited), *args)
    assert changed.returncode == 1, changed.stderr
    assert changed.stdout.splitlines() == [
        "~ farm k8s.default.web.http.tcp.v4",
        '    ~ scheduler: "rr" -> "weight"',
        "",
        "Plan: 0 to create, 1 to change, 0 to delete.",
    ]


def test_explain_against_live_nftlb_and_the_kernel(
    clean_daemon: NftlbDaemon, client: NftlbClient
) -> None:
    """`kube-nftlb explain` as root on the node: nftlb and the kernel hold exactly the Service's
    farms (exit 0), then one backend removed behind its back: exit 1, the upsert `run` would
    send, and the kernel's missing DNAT entry."""
    import json

    from attrs import evolve

    state, _ = parse_objects(load_paths([EXAMPLES]))
    desired = desired_farms(state, "node-1").farms
    assert client.apply(diff(desired, [])).ok
    args = ["-f", str(EXAMPLES), "--node-name", "node-1", "--nftlb-url", clean_daemon.url]
    args += ["--nftlb-key-file", str(clean_daemon.key_file), "-o", "json"]
    same = kube_nftlb("explain", "default/web", *args)
    assert same.returncode == 0, same.stderr
    report = json.loads(same.stdout)
    assert report["matches"] is True and report["nftlb"]["operations"] == []
    assert report["nftlb"]["kernel"] == {"checked": True, "why": None, "differences": []}

    held = client.get_farms().by_name()["k8s.default.web.http.tcp.v4"]
    gone = held.backends[-1]
    assert client.apply(diff([evolve(held, backends=held.backends[:-1])], [held])).ok
    differs = kube_nftlb("explain", "default/web", *args)
    assert differs.returncode == 1, differs.stderr
    report = json.loads(differs.stdout)
    assert [(o["op"], o["farm"]) for o in report["nftlb"]["operations"]] == [
        ("upsert-backends", "k8s.default.web.http.tcp.v4")
    ]
    kernel = report["nftlb"]["kernel"]
    assert kernel["checked"] is True
    assert kernel["differences"] == [
        f"kernel: nat-k8s.default.web.http.tcp.v4 lacks backend {gone.ip}:{gone.port} "
        f"(mark {gone.mark:#x})"
    ]
    other = kube_nftlb("explain", "ingress/ingress", *args)
    assert other.returncode == 0, other.stdout  # another Service's drift is not this one's
