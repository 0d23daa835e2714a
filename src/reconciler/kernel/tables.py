"""Which nftables tables exist in this network namespace, with their kernel handles.

Read with ``nft -j list tables`` (as `kernel/nftables.py` drives nft): about 2 ms of CPU a call,
so the watchdog can ask every half second for a fraction of a percent of one core. (pyroute2's
nftables dump, tried first, missed tables other processes had made in the e2e run.) A table's
handle is given by the kernel when the table is made and not reused while the namespace lives,
so a table deleted and made again (nftlb deletes its tables when it starts, and when it
rebuilds them after an nft failure) has a new handle.
"""

from __future__ import annotations

import json
import shutil
import subprocess

TableKey = tuple[str, str]


class TablesError(Exception):
    """The tables could not be listed (nft missing, no CAP_NET_ADMIN)."""


class KernelTables:
    def __init__(self, nft: str = "nft", timeout: float = 5.0) -> None:
        self.nft = shutil.which(nft) or nft
        self.timeout = timeout

    def read(self) -> dict[TableKey, int]:
        """{(family, name): handle} of every table."""
        try:
            done = subprocess.run(
                [self.nft, "-j", "list", "tables"],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TablesError(f"nft list tables: {e}") from e
        if done.returncode != 0:
            raise TablesError(f"nft list tables: {done.stderr.strip()[:300]}")
        try:
            objects = json.loads(done.stdout)["nftables"]
            return {
                (str(o["table"]["family"]), str(o["table"]["name"])): int(o["table"]["handle"])
                for o in objects
                if "table" in o
            }
        except (ValueError, KeyError, TypeError) as e:
            raise TablesError(f"nft list tables printed no JSON tables: {e}") from e

    def close(self) -> None:
        """Nothing to release (kept so the caller need not know how tables are read)."""
