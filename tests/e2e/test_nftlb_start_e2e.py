"""The nftlb container's start script, run the way the DaemonSet runs it.

Each container here gets its own network namespace and mount namespace (so the session's nftlb
daemon and its rules are never touched), a read-only root filesystem with only the key directory
writable (readOnlyRootFilesystem and the emptyDir), and the securityContext of deploy/: uid 0,
the reconciler's group, no_new_privs, and CAP_NET_ADMIN as its only capability. That proves the
capability set in deploy/daemonset.yaml is enough; a run without it proves it is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.testing.nftlbd import stop_process

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "deploy" / "image" / "nftlb-start.sh"
PORT = 5555  # the script's default, as in the pod
CAP_NET_ADMIN = 12
LISTEN = "0A"
FARM = {
    "farms": [
        {
            "name": "web",
            "virtual-addr": "10.0.0.100",
            "virtual-ports": "80",
            "backends": [{"name": "ep0", "ip-addr": "10.1.0.11", "port": "8080", "state": "up"}],
        }
    ]
}


def _security_contexts() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "daemonset.yaml").read_text())
    ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
    return {c["name"]: c["securityContext"] for c in ds["spec"]["template"]["spec"]["containers"]}


SECURITY = _security_contexts()
RECONCILER_UID = SECURITY["reconciler"]["runAsUser"]
RECONCILER_GID = SECURITY["reconciler"]["runAsGroup"]

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("unshare", "setpriv", "nsenter", "ip", "mount", "nft")),
    reason="needs unshare, setpriv, nsenter (util-linux), ip (iproute2), mount and nft",
)


class Container:
    """The start script in fresh network and mount namespaces, as the nftlb container."""

    def __init__(self, key_dir: Path, logs: Path, caps: tuple[str, ...]) -> None:
        self.key_file = key_dir / "key"
        self.stdout, self.stderr = logs / "stdout", logs / "stderr"
        sc = SECURITY["nftlb"]
        wanted = ",".join(f"+{c.lower()}" for c in caps)
        capset = "-all" + ("," + wanted if wanted else "")
        inner = (
            'ip link set lo up && mount --bind "$1" "$1" && mount -o remount,bind,ro / && '
            f"exec setpriv --reuid {sc['runAsUser']} --regid {sc['runAsGroup']} --clear-groups "
            f"--inh-caps {capset} --bounding-set {capset} --no-new-privs -- {SCRIPT}"
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KUBE_NFTLB_KEY_FILE": str(self.key_file)}
        namespaces = ["unshare", "--net", "--mount", "--propagation", "private"]
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [*namespaces, "sh", "-c", inner, "sh", str(key_dir)],
                stdout=out,
                stderr=err,
                env=env,
            )
        self.pid = self.process.pid
        deadline = time.monotonic() + 10
        while not self.started():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nftlb did not start: {self.logs()}")
            time.sleep(0.05)

    def started(self) -> bool:
        """nftlb runs (the exec chain is done, so the namespaces are the new ones) and listens."""
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        return exe == "/usr/sbin/nftlb" and bool(self.listeners())

    def listeners(self, table: str = "tcp") -> list[str]:
        """Local addresses listening in the container's network namespace, as in /proc/net."""
        try:
            lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return []
        return [f[1] for f in (line.split() for line in lines) if f[3] == LISTEN]

    def key(self) -> str:
        return self.key_file.read_text().strip()

    def http(self, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
        """One request from inside the namespace; the request goes on stdin, not argv."""
        code = (
            "import http.client, json, sys\n"
            "a = json.load(sys.stdin)\n"
            f"c = http.client.HTTPConnection('127.0.0.1', {PORT}, timeout=10)\n"
            "c.request(a['method'], a['path'], body=a['body'], headers=a['headers'])\n"
            "r = c.getresponse()\n"
            "print(json.dumps([r.status, r.read().decode()]))\n"
        )
        request = {
            "method": method,
            "path": path,
            "body": None if body is None else json.dumps(body),
            "headers": {} if key is None else {"Key": key},
        }
        out = self.netns(sys.executable, "-c", code, stdin=json.dumps(request))
        status, text = json.loads(out.stdout)
        return int(status), json.loads(text) if text else None

    def netns(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


Start = Callable[..., Container]


@pytest.fixture
def key_dir() -> Iterator[Path]:
    """Like the pod's emptyDir: mode 0777, on a path the reconciler's uid can reach."""
    base = Path(tempfile.mkdtemp(prefix="kube-nftlb-e2e-"))
    base.chmod(0o755)
    key_dir = base / "run-kube-nftlb"
    key_dir.mkdir()
    key_dir.chmod(0o777)
    try:
        yield key_dir
    finally:
        shutil.rmtree(base)


@pytest.fixture
def start(key_dir: Path, tmp_path: Path) -> Iterator[Start]:
    started: list[Container] = []

    def run(caps: tuple[str, ...] = tuple(SECURITY["nftlb"]["capabilities"]["add"])) -> Container:
        logs = tmp_path / f"container-{len(started)}"
        logs.mkdir()
        started.append(Container(key_dir, logs, caps))
        return started[-1]

    try:
        yield run
    finally:
        for c in started:
            c.stop()


def test_the_key_file_is_whole_group_readable_and_alone(start: Start, key_dir: Path) -> None:
    c = start()
    st = c.key_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o440
    assert (st.st_uid, st.st_gid) == (0, RECONCILER_GID)
    assert re.fullmatch(r"[0-9a-f]{64}\n", c.key_file.read_text())
    # No temp file left behind: the key, and the FIFO nftlb's log goes through.
    assert sorted(p.name for p in key_dir.iterdir()) == [".nftlb-log", "key"]


def test_nftlb_answers_with_the_key_on_loopback_only(start: Start) -> None:
    c = start()
    assert c.listeners() == [f"0100007F:{PORT:04X}"]
    assert c.listeners("tcp6") == []
    assert c.http("GET", "/farms", c.key()) == (200, {"farms": []})
    assert c.http("GET", "/farms", None)[0] == 401
    assert c.http("GET", "/farms", "0" * 64)[0] == 401


def test_the_key_is_neither_on_the_command_line_nor_in_the_logs(start: Start) -> None:
    c = start()
    key = c.key()
    argv = Path(f"/proc/{c.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in argv] == [
        "/usr/sbin/nftlb",
        "-H",
        "127.0.0.1",
        "-P",
        str(PORT),
        "-L",
        "2",
        "-l",
        "5",
    ]
    assert key.encode() not in Path(f"/proc/{c.pid}/cmdline").read_bytes()
    # The environment holds it, readable by the process's own uid only, as for any process.
    assert stat.S_IMODE(os.stat(f"/proc/{c.pid}/environ").st_mode) & 0o077 == 0
    c.stop()  # nftlb prints "Key: ..." on stdout when it exits
    assert c.stdout.read_bytes() == b""
    assert "made a new API key" in c.logs()
    assert key not in c.logs()


def test_only_the_reconcilers_group_can_read_the_key(start: Start) -> None:
    c = start()

    def read_as(uid: int, gid: int) -> subprocess.CompletedProcess[str]:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        return subprocess.run(
            [*argv, "cat", str(c.key_file)], capture_output=True, text=True, check=False
        )

    assert read_as(RECONCILER_UID, RECONCILER_GID).stdout.strip() == c.key()
    other = read_as(RECONCILER_UID + 1, RECONCILER_GID + 1)
    assert other.returncode != 0
    assert other.stdout == ""


def test_cap_net_admin_is_enough_on_a_read_only_root(start: Start) -> None:
    c = start()
    status = c.status()
    assert status["Uid"].split() == ["0"] * 4
    assert status["Gid"].split() == [str(RECONCILER_GID)] * 4
    assert status["NoNewPrivs"] == "1"
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == 1 << CAP_NET_ADMIN, field
    root = next(
        line.split()
        for line in Path(f"/proc/{c.pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )
    assert "ro" in root[5].split(",")
    assert c.http("POST", "/farms", c.key(), FARM) == (200, {"response": "success"})
    ruleset = c.netns("nft", "list", "table", "ip", "nftlb").stdout
    assert "chain nat-web" in ruleset
    assert "10.1.0.11 . 8080" in ruleset


def test_cap_net_admin_is_needed(start: Start) -> None:
    c = start(caps=())
    assert int(c.status()["CapEff"], 16) == 0
    # nftlb hides the failed nft command: it answers success and programs nothing.
    assert c.http("POST", "/farms", c.key(), FARM)[0] == 200
    assert c.netns("nft", "list", "tables").stdout == ""


def test_a_restarted_container_keeps_the_pods_key(start: Start) -> None:
    first = start()
    key = first.key()
    first.stop()
    second = start()
    assert second.key() == key
    assert second.http("GET", "/farms", key)[0] == 200
    assert "reusing the API key" in second.logs()


def test_nftlbs_failures_reach_the_log_and_the_events_file_and_its_key_never_does(
    start: Start, key_dir: Path
) -> None:
    """nftlb says that nft refused a batch and that it rebuilt everything only in its log; the
    script's filter keeps those lines for the reconciler (nftlb-events.log, read by the
    watchdog) and puts <redacted> wherever the key would appear (here in a request body that
    nftlb logs at -l 5)."""
    c = start()
    key = c.key()
    clash = {
        "farms": [
            {
                "name": "web",
                "virtual-addr": "10.0.0.100",
                "virtual-ports": "80",
                "backends": [
                    {
                        "name": "a",
                        "ip-addr": "10.1.0.1",
                        "port": "80",
                        "mark": "0x1",
                        "state": "up",
                    },
                    {
                        "name": "b",
                        "ip-addr": "10.1.0.2",
                        "port": "80",
                        "mark": "0x1",
                        "state": "up",
                    },
                ],
            }
        ]
    }
    assert c.http("POST", "/farms", key, clash)[0] == 200  # nftlb says success, nft refused
    assert c.http("POST", "/farms", key, {"farms": [{"name": key, "mode": "snat"}]})[0] == 200
    events = key_dir / "nftlb-events.log"
    deadline = time.monotonic() + 10
    while "nft recovered" not in (events.read_text() if events.exists() else ""):
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.05)
    lines = events.read_text().splitlines()
    assert any(line.startswith("nft command error") for line in lines)
    assert "recovery in progress..." in lines
    c.stop()
    logs = c.logs()
    assert "nft command error" in logs and "recovery in progress" in logs
    assert key not in logs and key not in events.read_text()
    assert "<redacted>" in logs  # the request body naming the key was logged, redacted
    assert c.stdout.read_bytes() == b""
