"""Which nftables tables exist in this network namespace, with their kernel handles.

Read with one netlink dump (``NFT_MSG_GETTABLE``), which costs the kernel a walk of the table
list and nothing else: about 0.1 ms, whatever the ruleset holds. The first version ran
``nft -j list tables``, but nft 1.0.6 fetches the whole ruleset into its cache even to list
tables: 0.6-0.7 s of CPU a call at 2,000 farms and up to 5 s while nftlb was writing (the
issue 11 soak), so a probe every half second took a core from nftlb. pyroute2's nftables dump,
tried before that, missed tables other processes had made in the e2e run, so the dump is our
own: a request and a parser of a few attributes.

A table's handle is given by the kernel when the table is made and not reused while the
namespace lives, so a table deleted and made again (nftlb deletes its tables when it starts,
and when it rebuilds them after an nft failure) has a new handle.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

TableKey = tuple[str, str]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFTA_TABLE_NAME = 1
NFTA_TABLE_HANDLE = 4
NLA_TYPE_MASK = 0x3FFF
#: nfgenmsg's family (NFPROTO_*) as nft spells it.
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr: length, type


class TablesError(Exception):
    """The tables could not be listed (no CAP_NET_ADMIN, or an answer that makes no sense)."""


class _Interrupted(Exception):
    """The ruleset changed during the dump (NLM_F_DUMP_INTR): ask again."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def dump_request(seq: int) -> bytes:
    """The request: every table of every family."""
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
    body = _NFGEN.pack(0, 0, 0)
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size or at + length > len(data):
            raise TablesError(f"a table attribute of length {length} at {at} overruns its message")
        yield kind & NLA_TYPE_MASK, data[at + _ATTR.size : at + length]
        at += _align(length)


def parse_messages(data: bytes, seq: int, tables: dict[TableKey, int]) -> bool:
    """Add the tables in one datagram of the dump's answer; True once the dump is done."""
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, flags, got_seq, _ = _HEADER.unpack_from(data, at)
        if length < _HEADER.size or at + length > len(data):
            raise TablesError(f"a netlink message of length {length} at {at} overruns its datagram")
        payload = data[at + _HEADER.size : at + length]
        at += _align(length)
        if got_seq != seq:
            continue  # an answer to an earlier, abandoned request
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
            if code == 0:
                continue  # an acknowledgement
            raise TablesError(f"listing the nftables tables: {os.strerror(code)}")
        if flags & NLM_F_DUMP_INTR:
            raise _Interrupted
        if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE or len(payload) < _NFGEN.size:
            continue
        family = FAMILIES.get(_NFGEN.unpack_from(payload)[0])
        name = handle = None
        for attr, value in _attributes(payload[_NFGEN.size :]):
            if attr == NFTA_TABLE_NAME:
                name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif attr == NFTA_TABLE_HANDLE and len(value) == 8:
                handle = struct.unpack(">Q", value)[0]
        if family is not None and name is not None and handle is not None:
            tables[(family, name)] = handle
    return False


class KernelTables:
    def __init__(self, timeout: float = 5.0, attempts: int = 3) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self._seq = 0

    def read(self) -> dict[TableKey, int]:
        """{(family, name): handle} of every table."""
        for _ in range(self.attempts):
            try:
                return self._dump()
            except _Interrupted:
                continue
        raise TablesError(f"the ruleset kept changing during {self.attempts} table dumps")

    def _dump(self) -> dict[TableKey, int]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        tables: dict[TableKey, int] = {}
        try:
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
                sock.settimeout(self.timeout)
                sock.bind((0, 0))
                sock.send(dump_request(self._seq))
                while not parse_messages(sock.recv(1 << 16), self._seq, tables):
                    pass
        except OSError as e:
            hint = " (kube-nftlb needs CAP_NET_ADMIN)" if e.errno == errno.EPERM else ""
            raise TablesError(f"listing the nftables tables over netlink: {e}{hint}") from e
        return tables

    def close(self) -> None:
        """Nothing to release: each read opens and closes its own socket."""
