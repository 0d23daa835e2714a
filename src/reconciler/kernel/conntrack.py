"""Deletes stale UDP conntrack entries with the `conntrack` tool (Debian's conntrack package).

The shell around `core/conntrack_plan.py`: per IP family, list the UDP entries to the frontends
being checked, let the core pick the stale ones and group them by (frontend, reply source), and
delete each group with one `conntrack -D` filter. The tool rather than netlink from Python:
pyroute2's ctnetlink decoding took 1.2 s for 1,000 entries and 25 s for 10,000, where the tool
lists 10,000 in 0.2 s and deletes 5,000 in one call (docs/architecture.md). Needs CAP_NET_ADMIN
in the node's network namespace; without it every cleanup fails with a clear error and the sync
itself is not affected.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable, Sequence

from attrs import frozen

from reconciler.core.conntrack_plan import ConntrackFilter, Entry, stale_groups
from reconciler.core.farms import Family, Protocol

TOOL = "conntrack"
#: With at most this many frontends in a family, each is listed with its own filter (the
#: usual partial sync); with more, the family's whole UDP table is listed once.
PER_FRONTEND_LISTS = 8
_FAMILY = {Family.IPV4: "ipv4", Family.IPV6: "ipv6"}
_LINE = re.compile(
    r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) (?:\[\w+\] )?src=(\S+) dst=\S+ sport=(\d+)"
)
_DELETED = re.compile(r"(\d+) flow entries have been deleted")


class ConntrackError(Exception):
    """Conntrack could not be listed or changed; the message says why and what to do."""


@frozen
class FamilyResult:
    family: Family
    listed: int
    deleted: int
    duration: float


def parse_entries(family: Family, text: str) -> list[Entry]:
    """`conntrack -L -p udp` lines as the core's entries (the tool prints canonical IPs)."""
    out = []
    for m in _LINE.finditer(text):
        src, dst, sport, dport, reply_src, reply_sport = m.groups()
        out.append(
            Entry(
                family,
                Protocol.UDP,
                (src, int(sport)),
                (dst, int(dport)),
                (reply_src, int(reply_sport)),
            )
        )
    return out


class Conntrack:
    """The kernel's conntrack table of this network namespace, through the `conntrack` tool."""

    def __init__(self, tool: str = TOOL, timeout: float = 30.0) -> None:
        self.tool, self.timeout = tool, timeout

    def _run(self, action: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                [self.tool, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as e:
            raise ConntrackError(
                f"cannot {action} conntrack entries: the {self.tool!r} tool is not installed "
                "(Debian package conntrack)"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise ConntrackError(
                f"cannot {action} conntrack entries: {self.tool} took over {self.timeout:g} s"
            ) from e
        denied = ("Operation not permitted", "CAP_NET_ADMIN")  # the kernel's, the tool's
        if done.returncode != 0 and any(d in done.stderr for d in denied):
            raise ConntrackError(
                f"cannot {action} conntrack entries: operation not permitted "
                "(the reconciler needs CAP_NET_ADMIN; see docs/install.md)"
            )
        return done

    def list_udp(
        self, family: Family, frontends: Iterable[tuple[str, int]] | None = None
    ) -> list[Entry]:
        """The family's UDP entries; only those to `frontends` (ip, port) when given."""
        base = ["-L", "-f", _FAMILY[family], "-p", "udp"]
        filters = (
            [[]] if frontends is None else [["-d", ip, "--dport", str(p)] for ip, p in frontends]
        )
        entries: list[Entry] = []
        for extra in filters:
            done = self._run("list", [*base, *extra])
            if done.returncode != 0:
                raise ConntrackError(f"cannot list conntrack entries: {done.stderr.strip()}")
            entries.extend(parse_entries(family, done.stdout))
        return entries

    def delete_group(
        self, family: Family, orig_dst: tuple[str, int], reply_src: tuple[str, int]
    ) -> int:
        """Delete every UDP entry to orig_dst that replies from reply_src; how many went."""
        done = self._run(
            "delete",
            [
                "-D",
                "-f",
                _FAMILY[family],
                "-p",
                "udp",
                "-d",
                orig_dst[0],
                "--dport",
                str(orig_dst[1]),
                "-r",
                reply_src[0],
                "--reply-port-src",
                str(reply_src[1]),
            ],
        )
        m = _DELETED.search(done.stderr)
        if m is None:
            raise ConntrackError(f"cannot delete conntrack entries: {done.stderr.strip()}")
        return int(m.group(1))  # 0 (exit code 1): they expired meanwhile, not an error

    def cleanup(self, plan: ConntrackFilter) -> list[FamilyResult]:
        """List, choose (the core) and delete, family by family."""
        results = []
        for family in plan.families:
            started = time.perf_counter()
            fronts = [(ip, port) for f, ip, port in plan.frontends if f is family]
            listed = self.list_udp(family, fronts if len(fronts) <= PER_FRONTEND_LISTS else None)
            deleted = sum(
                self.delete_group(family, dst, reply)
                for _, dst, reply in stale_groups(plan, listed)
            )
            results.append(
                FamilyResult(family, len(listed), deleted, time.perf_counter() - started)
            )
        return results
