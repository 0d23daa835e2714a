"""`kube-nftlb demo`: the whole loop, for real, on a built-in example cluster, in under a minute.

Real nftlb in a private network namespace (so the host's rules are never touched), the fake
Kubernetes API server seeded from `examples/`, and the real `kube-nftlb run` process. It shows the
farms and the kernel's rules, then changes the cluster three times and shows each change arrive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reconciler.core.farms import Farm
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.nftlbd import NFTLB, NftlbProcess, delete_tables

WEB = "k8s.default.web.http.tcp.v4"


class DemoError(Exception):
    """The demo cannot run here; the message says what to do."""


def _examples() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "examples" / "10-web.yaml").exists():
            return parent / "examples"
    raise DemoError("cannot find the examples/ folder; run the demo from a clone of the repository")


def preflight() -> None:
    if os.geteuid() != 0:
        raise DemoError(
            "the demo needs root: it runs nftlb in a private network namespace. "
            "Run: sudo ./dev demo"
        )
    missing = [
        p
        for p in (NFTLB, shutil.which("nft"), shutil.which("unshare"))
        if not p or not Path(p).exists()
    ]
    if missing or not Path(NFTLB).exists():
        raise DemoError(
            "the demo needs Debian's nftlb and nftables: "
            "apt-get install -y nftlb nftables iproute2 util-linux "
            "(or run ./dev setup as root)"
        )


def in_private_netns() -> bool:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    return [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise DemoError(f"timed out waiting for {what}")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _title(text: str) -> None:
    _say()
    _say(f"== {text} " + "=" * max(0, 76 - len(text)))


def _farm_rows(farms: dict[str, Farm]) -> None:
    for name, f in sorted(farms.items()):
        fronts = ", ".join(f"{a.ip}:{a.port}" for a in f.addresses)
        _say(f"  {name:<42} {f.scheduler.value:<7} {fronts}")
        _say(
            f"  {'':<42} backends: {', '.join(f'{b.ip}:{b.port}' for b in f.backends) or '(none)'}"
        )


@contextmanager
def _nftlb(workdir: Path) -> Iterator[NftlbProcess]:
    daemon = NftlbProcess(workdir)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        delete_tables()


class _LogTail:
    """Reads the agent's JSON log lines and prints the ones people care about."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[dict[str, Any]] = []
        self.show = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(line)
            if self.show:
                self._print(line)

    @staticmethod
    def _print(line: dict[str, Any]) -> None:
        event = line.get("event")
        if event == "nftlb.operation":
            changes = "; ".join(_change(c) for c in line.get("changes", []) if c["path"] != "farm")
            _say(
                f"  log: {event} {line['op']} {line['farm']} "
                f"{line.get('target') or ''} {changes}".rstrip()
            )
        elif event == "sync.done" and line.get("operations"):
            _say(
                f"  log: sync.done kind={line['kind']} operations={line['operations']} "
                f"requests={line['requests']} duration_ms={line['duration_ms']}"
            )
        elif event in ("service.problem", "sync.failed"):
            _say(
                f"  log: {event} {line.get('service', '')} "
                f"{line.get('message') or line.get('error')}"
            )


def _change(c: dict[str, Any]) -> str:
    old, new = c["old"], c["new"]
    if isinstance(new, dict) and old is None:
        return f"+ {new.get('ip')}:{new.get('port')}"
    if isinstance(old, dict) and new is None:
        return f"- {old.get('ip')}:{old.get('port')}"
    return f"{c['path']}: {old} -> {new}"


def web_slice(ips: list[str]) -> dict[str, Any]:
    """The example web app's EndpointSlice with these ready endpoints (also used by the tests)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc12",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": True}, "nodeName": "node-1"} for ip in ips
        ],
    }


def run_demo() -> int:
    from reconciler.cli.manifests import load_paths
    from reconciler.testing.fakeapi import FakeApiServer

    started = time.monotonic()
    examples = _examples()
    with (
        tempfile.TemporaryDirectory(prefix="kube-nftlb-demo-") as tmp,
        _nftlb(Path(tmp)) as daemon,
    ):
        workdir, url, key, key_file = Path(tmp), daemon.url, daemon.key, daemon.key_file
        with FakeApiServer() as fake:
            fake.seed(load_paths([examples]))
            kubeconfig = fake.write_kubeconfig(workdir / "kubeconfig")
            _title("kube-nftlb demo")
            _say(f"  nftlb {url} in a private network namespace; fake API server {fake.url}")
            _say(f"  cluster: {examples} (node-1)")
            command = [sys.executable, "-m", "reconciler", "run", "--kubeconfig", kubeconfig]
            command += [
                "--nftlb-url",
                url,
                "--nftlb-key-file",
                str(key_file),
                "--node-name",
                "node-1",
                "--cluster-cidr",
                "10.244.0.0/16",
            ]
            command += ["--resync-period", "10s", "--metrics-address", ""]
            agent = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            tail = _LogTail(agent.stdout)
            client = NftlbClient(url, key)
            try:
                _wait(
                    lambda: any(x.get("event") == "sync.done" and x.get("ok") for x in tail.lines),
                    30,
                    "the first sync",
                )
                first = next(x for x in tail.lines if x.get("event") == "sync.done")
                _title("1. the first full sync programmed every Service")
                _say(
                    f"  {first['operations']} operations in {first['requests']} requests, "
                    f"{first['duration_ms']} ms"
                )
                _farm_rows(client.get_farms().by_name())
                for x in tail.lines:
                    if x.get("event") == "service.problem":
                        _say(f"  problem: {x['service']}: {x['message']}")
                _title("the kernel: nft list map ip nftlb nat-proto-services")
                out = subprocess.run(
                    ["nft", "list", "map", "ip", "nftlb", "nat-proto-services"],
                    capture_output=True,
                    text=True,
                )
                _say("\n".join("  " + line for line in out.stdout.splitlines()))
                tail.show = True

                _title("2. scale the web deployment from 3 to 5 endpoints")
                ips = ["10.244.1.11", "10.244.1.12", "10.244.2.13", "10.244.2.14", "10.244.2.15"]
                fake.apply(web_slice(ips))
                _wait(
                    lambda: len(client.get_farms().by_name()[WEB].backends) == 5, 15, "5 backends"
                )
                _farm_rows({WEB: client.get_farms().by_name()[WEB]})

                _title("3. annotate web: scheduler weight")
                svc = fake.get("Service", "default", "web")
                assert svc is not None
                svc["metadata"].setdefault("annotations", {})[
                    "service.kubernetes.io/kube-nftlb-load-balancer-scheduler"
                ] = "weight"
                fake.apply(svc)
                _wait(
                    lambda: client.get_farms().by_name()[WEB].scheduler.value == "weight",
                    15,
                    "the new scheduler",
                )
                _farm_rows({WEB: client.get_farms().by_name()[WEB]})

                _title("4. delete Service default/shop")
                fake.delete("Service", "default", "shop")
                _wait(
                    lambda: "k8s.default.shop.http.tcp.v4" not in client.get_farms().by_name(),
                    15,
                    "shop's farm to go",
                )
                _say(f"  farms left: {len(client.get_farms().by_name())}; shop's is gone")
                time.sleep(0.3)
            finally:
                tail.show = False
                agent.terminate()
                agent.wait(timeout=15)
                client.close()
    _title(f"done in {time.monotonic() - started:.1f} s; nftlb stopped and its tables removed")
    return 0


def main() -> int:
    try:
        preflight()
        if not in_private_netns() and os.environ.get("KUBE_NFTLB_DEMO_NETNS") != "1":
            # Re-run inside a private network namespace, so the host's nftables are never touched.
            env = {**os.environ, "KUBE_NFTLB_DEMO_NETNS": "1"}
            return subprocess.run(
                ["unshare", "-n", sys.executable, "-m", "reconciler", "demo"], env=env, check=False
            ).returncode
        return run_demo()
    except DemoError as e:
        print(f"kube-nftlb demo: {e}", file=sys.stderr)
        return 2
