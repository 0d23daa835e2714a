"""Child network namespaces joined by veth pairs: the "pods" of the e2e tests and benchmarks.

The caller is root inside a network namespace of its own (the "node"). Each child namespace is
held open by ``unshare -n sleep`` and entered with ``nsenter``, so nothing needs a name in
``/run/netns`` and everything goes away with the holder process.
"""

from __future__ import annotations

import os
import subprocess
import time


def sh(*command: str) -> str:
    """Run a command; its standard output, or RuntimeError with its standard error."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


class Namespace:
    """A child network namespace held open by ``unshare -n sleep``, with its loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == own:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare did not enter a new network namespace")
            time.sleep(0.01)
        self.pid = self.holder.pid
        self.run("ip", "link", "set", "lo", "up")

    def enter(self, *command: str) -> list[str]:
        """`command` as run inside this namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", *command]

    def run(self, *command: str) -> str:
        return sh(*self.enter(*command))

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def veth(here: str, ns: Namespace, inside: str) -> None:
    """A veth pair: `here` stays in the caller's namespace, its peer moves into `ns` as
    `inside`. Both ends are still down."""
    sh("ip", "link", "add", here, "type", "veth", "peer", "name", "nstmp0")
    sh("ip", "link", "set", "nstmp0", "netns", str(ns.pid))
    if inside != "nstmp0":
        ns.run("ip", "link", "set", "nstmp0", "name", inside)
