"""nftlb's ``GET /farms`` document, split into its farm entries as the text arrives.

Pure: text in, decoded entries out. With 5,000 farms nftlb answers with a 37 MB pretty-printed
document; decoding it whole held the text and a tree of about 2.5 million dict and string objects
at once, the largest part of the agent's peak memory during a full resync. Fed chunk by chunk,
only the text of the farm being read and the entries not yet taken are held, and the parse
overlaps nftlb's sending.

The splitting relies on JSON's own grammar, not on nftlb's layout: the envelope
``{"farms": [...]}`` is matched with optional whitespace, each entry is decoded by the standard
library's C decoder (`json.JSONDecoder.raw_decode`), and an entry that is not complete yet is
retried once the buffer has grown enough that the retries cost linear time overall. A document
that opens with anything else is collected and decoded whole at the end, so an unusual but valid
document reads as before, only without the memory saving. Anything invalid raises `ValueError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_HEAD = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"farms"[ \t\n\r]*:[ \t\n\r]*\[')
#: Longer than any whitespace-padded head nftlb could send: a buffer this long that does not
#: start with the head will never match it.
_HEAD_WINDOW = 4096
_DECODER = json.JSONDecoder()


class FarmsStream:
    """Feed the text of ``GET /farms`` in pieces; take each farm entry once it is complete.

    `feed` returns the entries completed by that piece, `finish` the rest, and raises
    `ValueError` unless the whole text was one JSON object with a ``farms`` list.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._pos = 0
        self._phase = "head"  # head, item, next, tail, done; or whole (the fallback)
        self._retry_at = 0  # buffer length before which an incomplete entry is not retried
        self._first = True  # no entry read yet: "]" may close the list

    def feed(self, text: str) -> list[Any]:
        if self._pos:
            self._buf = self._buf[self._pos :]
            self._retry_at -= self._pos
            self._pos = 0
        self._buf += text
        return self._scan(final=False)

    def finish(self) -> list[Any]:
        entries = self._scan(final=True)
        if self._phase == "whole":
            return _whole(self._buf)
        if self._phase != "done":
            raise ValueError(f"GET /farms ended in the middle of the document ({self._phase})")
        return entries

    def _scan(self, *, final: bool) -> list[Any]:
        entries: list[Any] = []
        buf = self._buf
        while True:
            if self._phase in ("whole", "done"):
                if self._phase == "done" and buf[self._skip() :]:
                    raise ValueError(
                        f"GET /farms has text after the document: {_at(buf, self._skip())}"
                    )
                return entries
            if self._phase == "head":
                match = _HEAD.match(buf, self._pos)
                if match is None:
                    if final or len(buf) - self._pos >= _HEAD_WINDOW:
                        self._phase = "whole"
                        continue
                    return entries
                self._pos = match.end()
                self._phase = "item"
            pos = self._skip()
            if pos >= len(buf):
                return entries
            char = buf[pos]
            if self._phase == "item":
                if char == "]" and self._first:
                    self._pos, self._phase = pos + 1, "tail"
                    continue
                if char != "{":
                    raise ValueError(
                        f"GET /farms lists a farm that is not an object: {_at(buf, pos)}"
                    )
                if not final and len(buf) < self._retry_at:
                    return entries
                try:
                    entry, end = _DECODER.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if final:
                        raise ValueError(f"GET /farms is not valid JSON: {exc}") from None
                    self._pos = pos
                    self._retry_at = pos + 2 * (len(buf) - pos)
                    return entries
                entries.append(entry)
                self._pos, self._phase, self._retry_at, self._first = end, "next", 0, False
            elif self._phase == "next":
                if char not in ",]":
                    raise ValueError(
                        f"GET /farms: expected ',' or ']' in the farms list: {_at(buf, pos)}"
                    )
                self._pos, self._phase = pos + 1, "item" if char == "," else "tail"
            elif self._phase == "tail":
                if char != "}":
                    raise ValueError(f"GET /farms has more than a farms list: {_at(buf, pos)}")
                self._pos, self._phase = pos + 1, "done"

    def _skip(self) -> int:
        match = _WS.match(self._buf, self._pos)
        assert match is not None  # the pattern matches the empty string
        return match.end()


def farm_entries(doc: object) -> list[Any]:
    """The farms list of a decoded ``GET /farms`` document; ValueError when it has none."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("farms"), list):
        raise ValueError("GET /farms did not return an object with a farms list")
    return list(doc["farms"])


def _whole(text: str) -> list[Any]:
    """The fallback: the whole document decoded at once."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("GET /farms did not return JSON") from None
    return farm_entries(doc)


def _at(text: str, pos: int) -> str:
    return repr(text[pos : pos + 40])
