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
