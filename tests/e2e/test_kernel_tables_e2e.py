"""The watchdog's netlink table dump against the kernel, beside `nft -j list tables`."""

from __future__ import annotations

import json
import subprocess

from reconciler.kernel.tables import KernelTables

MADE = [("ip", "kt4"), ("ip6", "kt6"), ("inet", "kti"), ("netdev", "ktn"), ("bridge", "ktb")]


def nft_tables() -> dict[tuple[str, str], int]:
    done = subprocess.run(
        ["nft", "-j", "list", "tables"], capture_output=True, text=True, check=True
    )
    return {
        (o["table"]["family"], o["table"]["name"]): o["table"]["handle"]
        for o in json.loads(done.stdout)["nftables"]
        if "table" in o
    }


def test_the_dump_lists_what_nft_lists_and_sees_a_table_made_again() -> None:
    try:
        for family, name in MADE:
            subprocess.run(["nft", "add", "table", family, name], check=True)
        tables = KernelTables().read()
        assert tables == nft_tables()
        assert set(MADE) <= set(tables)
        subprocess.run(["nft", "delete", "table", "ip", "kt4"], check=True)
        assert ("ip", "kt4") not in KernelTables().read()
        subprocess.run(["nft", "add", "table", "ip", "kt4"], check=True)
        again = KernelTables().read()
        assert again[("ip", "kt4")] != tables[("ip", "kt4")]
        assert again == nft_tables()
    finally:
        for family, name in MADE:
            subprocess.run(
                ["nft", "delete", "table", family, name], capture_output=True, check=False
            )
