"""The conntrack shell (kernel/conntrack.py): the tool's output read back, and its errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.core.conntrack_plan import ConntrackFilter, Entry, stale_groups
from reconciler.core.farms import Family, Protocol
from reconciler.kernel.conntrack import Conntrack, ConntrackError, parse_entries

V4, V6 = Family.IPV4, Family.IPV6
LISTING = """\
udp      17 29 src=10.244.1.4 dst=10.96.0.53 sport=40053 dport=53 [UNREPLIED] src=10.96.0.53 dst=10.244.1.4 sport=53 dport=40053 mark=0 use=1
udp      17 118 src=10.244.1.4 dst=10.96.0.53 sport=40054 dport=53 src=10.244.1.2 dst=10.244.1.4 sport=5353 dport=40054 [ASSURED] mark=0 use=1
"""  # noqa: E501
LISTING6 = (
    "udp      17 25 src=fd00:244:1::4 dst=fd00:96::53 sport=40053 dport=53 "
    "src=fd00:244:1::2 dst=fd00:244:1::4 sport=5353 dport=40053 mark=0 use=1\n"
)


def test_listing_lines_become_entries() -> None:
    assert parse_entries(V4, LISTING) == [
        Entry(V4, Protocol.UDP, ("10.244.1.4", 40053), ("10.96.0.53", 53), ("10.96.0.53", 53)),
        Entry(V4, Protocol.UDP, ("10.244.1.4", 40054), ("10.96.0.53", 53), ("10.244.1.2", 5353)),
    ]
    assert parse_entries(V6, LISTING6) == [
        Entry(
            V6, Protocol.UDP, ("fd00:244:1::4", 40053), ("fd00:96::53", 53), ("fd00:244:1::2", 5353)
        )
    ]
    assert parse_entries(V4, "conntrack v1.4.7 (conntrack-tools): 0 flow entries\n") == []


def test_stale_entries_are_deleted_by_group() -> None:
    plan = ConntrackFilter({(V4, "10.96.0.53", 53): frozenset({("10.244.1.2", 5353)})})
    gone = ("10.244.1.3", 5353)
    entries = [
        *parse_entries(V4, LISTING),
        Entry(V4, Protocol.UDP, ("10.244.1.5", 1), ("10.96.0.53", 53), gone),
        Entry(V4, Protocol.UDP, ("10.244.1.6", 2), ("10.96.0.53", 53), gone),
    ]
    assert stale_groups(plan, entries) == [
        (V4, ("10.96.0.53", 53), ("10.244.1.3", 5353)),
        (V4, ("10.96.0.53", 53), ("10.96.0.53", 53)),
    ]


def _tool(tmp_path: Path, stdout: str, stderr: str, code: int) -> str:
    script = tmp_path / "conntrack"
    script.write_text(
        f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\nprintf '%s' '{stdout}'\n"
        f"printf '%s\\n' '{stderr}' >&2\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_a_cleanup_lists_each_frontend_and_deletes_each_stale_group(tmp_path: Path) -> None:
    tool = _tool(
        tmp_path,
        LISTING,
        "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.",
        0,
    )
    plan = ConntrackFilter({(V4, "10.96.0.53", 53): frozenset({("10.244.1.2", 5353)})})
    [result] = Conntrack(tool).cleanup(plan)
    assert (result.family, result.listed, result.deleted) == (V4, 2, 1)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [
        "-L -f ipv4 -p udp -d 10.96.0.53 --dport 53",
        "-D -f ipv4 -p udp -d 10.96.0.53 --dport 53 -r 10.96.0.53 --reply-port-src 53",
    ]


def test_nothing_left_to_delete_is_not_an_error(tmp_path: Path) -> None:
    tool = _tool(
        tmp_path, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.", 1
    )
    assert Conntrack(tool).delete_group(V4, ("10.96.0.53", 53), ("10.96.0.53", 53)) == 0


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConntrackError, match="Debian package conntrack"):
        Conntrack(str(tmp_path / "missing")).list_udp(V4)
    denied = _tool(tmp_path, "", "conntrack v1.4.7 (conntrack-tools): Operation not permitted", 1)
    with pytest.raises(ConntrackError, match="CAP_NET_ADMIN"):
        Conntrack(denied).list_udp(V4)
    refused = _tool(
        tmp_path,
        "",
        "conntrack v1.4.7 (conntrack-tools): Operation failed: sorry, you must be root or get "
        "CAP_NET_ADMIN capability to do this",
        1,
    )
    with pytest.raises(ConntrackError, match="not permitted"):
        Conntrack(refused).list_udp(V4)
    broken = _tool(tmp_path, "", "conntrack v1.4.7 (conntrack-tools): Invalid argument", 1)
    with pytest.raises(ConntrackError, match="Invalid argument"):
        Conntrack(broken).list_udp(V4)
    with pytest.raises(ConntrackError, match="Invalid argument"):
        Conntrack(broken).delete_group(V4, ("10.96.0.53", 53), ("10.96.0.53", 53))
