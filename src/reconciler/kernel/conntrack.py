"""Deletes stale UDP conntrack entries over netlink (pyroute2's ctnetlink support).

The shell around `core/conntrack_plan.py`: per IP family, list the UDP entries (filtered to UDP
by the kernel), let the core pick the stale ones, delete each by its original tuple. Netlink
rather than the `conntrack` tool: no process per deleted entry and no text to parse, and the
same interface kube-proxy uses (docs/architecture.md). Needs CAP_NET_ADMIN in the node's
network namespace; without it every cleanup fails with a clear error and the sync itself is not
affected.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable
from typing import Any

from attrs import frozen

from reconciler.core.conntrack_plan import ConntrackFilter, Entry, stale_entries
from reconciler.core.farms import Family, Protocol

_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}
_PROTOCOLS = {socket.IPPROTO_UDP: Protocol.UDP, socket.IPPROTO_TCP: Protocol.TCP}


class ConntrackError(Exception):
    """Conntrack could not be listed or changed; the message says why and what to do."""


@frozen
class FamilyResult:
    family: Family
    listed: int
    deleted: int
    duration: float


def _error(action: str, e: BaseException) -> ConntrackError:
    code = getattr(e, "code", None)
    if code == errno.EPERM:
        return ConntrackError(
            f"cannot {action} conntrack entries: operation not permitted "
            "(the reconciler needs CAP_NET_ADMIN; see docs/install.md)"
        )
    return ConntrackError(f"cannot {action} conntrack entries: {e}")


class Conntrack:
    """The kernel's conntrack table of this network namespace."""

    def _socket(self, family: Family) -> Any:
        from pyroute2 import Conntrack as NetlinkConntrack

        try:
            return NetlinkConntrack(nfgen_family=_AF[family])
        except OSError as e:
            raise _error("open", e) from e

    def list_udp(self, family: Family) -> list[tuple[Entry, Any]]:
        """UDP entries of a family, each with pyroute2's tuple to delete it by."""
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        ct = self._socket(family)
        try:
            wanted = NFCTAttrTuple(family=_AF[family], proto=socket.IPPROTO_UDP)
            out = []
            for raw in ct.dump_entries(tuple_orig=wanted):
                entry = _entry(family, raw)
                if entry is not None:
                    out.append((entry, raw.tuple_orig))
            return out
        except Exception as e:
            raise _error("list", e) from e
        finally:
            ct.close()

    def delete(self, family: Family, tuples: Iterable[Any]) -> int:
        """Delete entries by original tuple; one already gone (expired meanwhile) is not an
        error. The number deleted."""
        ct = self._socket(family)
        deleted = 0
        try:
            for t in tuples:
                try:
                    ct.entry("del", tuple_orig=t)
                    deleted += 1
                except Exception as e:
                    if getattr(e, "code", None) != errno.ENOENT:
                        raise
            return deleted
        except Exception as e:
            raise _error("delete", e) from e
        finally:
            ct.close()

    def cleanup(self, plan: ConntrackFilter) -> list[FamilyResult]:
        """List, choose (the core) and delete, family by family."""
        results = []
        for family in plan.families:
            started = time.perf_counter()
            listed = self.list_udp(family)
            stale = set(stale_entries(plan, (e for e, _ in listed)))
            deleted = self.delete(family, (t for e, t in listed if e in stale))
            results.append(
                FamilyResult(family, len(listed), deleted, time.perf_counter() - started)
            )
        return results


def _entry(family: Family, raw: Any) -> Entry | None:
    """The core's value of a pyroute2 entry (its addresses come from inet_ntop: canonical)."""
    orig, reply = raw.tuple_orig, raw.tuple_reply
    protocol = _PROTOCOLS.get(orig.proto)
    if protocol is None or None in (orig.saddr, orig.daddr, reply.saddr):
        return None
    if None in (orig.sport, orig.dport, reply.sport):
        return None
    return Entry(
        family,
        protocol,
        (str(orig.saddr), int(orig.sport)),
        (str(orig.daddr), int(orig.dport)),
        (str(reply.saddr), int(reply.sport)),
    )
