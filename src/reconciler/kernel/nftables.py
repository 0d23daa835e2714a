"""Our own nftables table (``inet kube-nftlb``): read back and written through ``nft -j``.

Why the nft binary's JSON interface (``nft -j -f -``) and not libnftables' Python bindings:
it is how kube-proxy's knftables drives nftables, the ``nft`` binary comes with the nftables
package nftlb already needs, and it keeps the venv free of Debian's python3-nftables (a system
package a pip venv cannot see without opening it to every system package). One ``nft -f``
input is one kernel transaction: all of it applies or none does. The commands come from the pure
core (`core/node_diff.py`) and name only our table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from reconciler.core.node_diff import parse_table
from reconciler.core.node_rules import TABLE_FAMILY, TABLE_NAME, NodeTable


class NftablesError(Exception):
    """nft refused a transaction or could not be run; the message has nft's own words."""


class NodeTableWriter:
    """Reads and writes ``table inet kube-nftlb`` with the ``nft`` binary."""

    def __init__(self, nft: str = "nft", timeout: float = 30.0) -> None:
        found = shutil.which(nft)
        if found is None:
            raise NftablesError(f"{nft!r} is not installed (Debian package: nftables)")
        self.nft = found
        self.timeout = timeout

    def _run(
        self, args: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.nft, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NftablesError(f"nft {' '.join(args)}: {e}") from e

    def read(self) -> NodeTable | None:
        """The table as it is in the kernel; None when it does not exist."""
        done = self._run(["-j", "list", "table", TABLE_FAMILY, TABLE_NAME])
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise NftablesError(f"nft list table: {done.stderr.strip()}")
        try:
            objects = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError, TypeError) as e:
            raise NftablesError(f"nft list table printed no JSON ruleset: {e}") from e
        return parse_table(objects)

    def apply(self, commands: Sequence[Any]) -> int:
        """One transaction; returns the bytes sent. Nothing is applied when nft refuses it."""
        if not commands:
            return 0
        text = json.dumps({"nftables": list(commands)}, separators=(",", ":"))
        done = self._run(["-j", "-f", "-"], stdin=text)
        if done.returncode != 0:
            raise NftablesError(f"nft refused the transaction: {done.stderr.strip()[:2000]}")
        return len(text)

    def delete(self) -> None:
        """Remove our table (``kube-nftlb cleanup`` style); nothing when it is not there."""
        self.apply(
            [
                {"add": {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}},
                {"delete": {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}},
            ]
        )
