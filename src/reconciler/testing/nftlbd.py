"""A private nftlb daemon on loopback, for the demo, the e2e tests and the benchmarks.

The caller must be root inside a network namespace of its own, so that the host's nftables are
never touched. The key goes to nftlb through its environment (``NFTLB_SERVER_KEY``), never on the
command line where ``ps`` would show it; logs go to stderr (``-L 2``) into a file, because nftlb
block-buffers stdout into a file until it exits.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

NFTLB = Path("/usr/sbin/nftlb")
NFTLB_TABLES = (("ip", "nftlb"), ("ip6", "nftlb"), ("netdev", "nftlb"))
#: The table `kube-nftlb run` writes next to nftlb's (its node rules).
AGENT_TABLES = (("inet", "kube-nftlb"),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def delete_tables() -> None:
    """nftlb (and the agent) leave their rules in the kernel when they exit; this removes them."""
    for family, table in (*NFTLB_TABLES, *AGENT_TABLES):
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True, check=False)


class NftlbProcess:
    """One /usr/sbin/nftlb on 127.0.0.1 with a random key written to `key_file`."""

    def __init__(self, workdir: Path, log_level: int = 3) -> None:
        self.key = secrets.token_hex(12)
        self.key_file = workdir / "nftlb.key"
        self.key_file.write_text(self.key + "\n")
        self.log_path = workdir / "nftlb.log"
        self.log_level = log_level
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        command = [
            str(NFTLB),
            "-H",
            "127.0.0.1",
            "-P",
            str(self.port),
            "-L",
            "2",
            "-l",
            str(self.log_level),
        ]
        env = {**os.environ, "NFTLB_SERVER_KEY": self.key}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nftlb exited with {self.process.returncode}: {self.log()[-2000:]}"
                )
            if listening(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError("nftlb did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        """A fresh daemon: nftlb deletes its own tables when it starts."""
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
