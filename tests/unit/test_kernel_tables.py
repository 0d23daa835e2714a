"""The netlink table dump's parser, on datagrams built as the kernel sends them."""

from __future__ import annotations

import struct

import pytest

from reconciler.kernel.tables import (
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_GETTABLE,
    NFT_MSG_NEWTABLE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    TablesError,
    _Interrupted,
    dump_request,
    parse_messages,
)

NEWTABLE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, payload: bytes, seq: int = 7, flags: int = 2) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def table(family: int, name: str, handle: int, seq: int = 7, flags: int = 2) -> bytes:
    body = struct.pack("=BBH", family, 0, 0)
    body += attr(1, name.encode() + b"\0") + attr(2, struct.pack(">I", 0))
    body += attr(3, struct.pack(">I", 5)) + attr(0x4000 | 4, struct.pack(">Q", handle))
    return message(NEWTABLE, body, seq, flags)


def test_the_request_asks_for_a_dump_of_every_family() -> None:
    raw = dump_request(9)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert (length, kind, seq) == (len(raw), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, 9)
    assert flags & NLM_F_DUMP == NLM_F_DUMP and raw[16] == 0  # NFPROTO_UNSPEC: all families


def test_tables_of_every_family_with_their_handles_until_done() -> None:
    tables: dict[tuple[str, str], int] = {}
    first = table(2, "nftlb", 11) + table(10, "nftlb", 12)
    assert not parse_messages(first, 7, tables)
    second = table(1, "kube-nftlb", 13) + table(5, "nftlb", 2**40) + message(NLMSG_DONE, b"\0" * 4)
    assert parse_messages(second, 7, tables)
    assert tables == {
        ("ip", "nftlb"): 11,
        ("ip6", "nftlb"): 12,
        ("inet", "kube-nftlb"): 13,
        ("netdev", "nftlb"): 2**40,
    }


def test_answers_to_another_request_and_acks_are_skipped() -> None:
    tables: dict[tuple[str, str], int] = {}
    data = table(2, "stale", 1, seq=6) + message(NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)
    assert not parse_messages(data + table(2, "nftlb", 3), 7, tables)
    assert tables == {("ip", "nftlb"): 3}


def test_an_error_is_a_tables_error_with_the_kernel_s_words() -> None:
    with pytest.raises(TablesError, match="Operation not permitted"):
        parse_messages(message(NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16), 7, {})


def test_a_dump_interrupted_by_a_change_is_asked_again() -> None:
    with pytest.raises(_Interrupted):
        parse_messages(table(2, "nftlb", 3, flags=2 | NLM_F_DUMP_INTR), 7, {})


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=IHHII", 400, NEWTABLE, 2, 7, 0),  # longer than the datagram
        message(NEWTABLE, struct.pack("=BBH", 2, 0, 0) + struct.pack("=HH", 60, 1) + b"x"),
    ],
)
def test_a_message_that_overruns_its_datagram_is_an_error_not_a_guess(data: bytes) -> None:
    with pytest.raises(TablesError, match="overruns"):
        parse_messages(data, 7, {})
