"""`FarmsStream`: GET /farms split into entries as it arrives equals decoding it whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.farms_stream import FarmsStream

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
ENTRIES = st.lists(st.dictionaries(st.text(max_size=8), VALUES, max_size=4), max_size=6)
#: nftlb's own layout (json-c pretty print, tabs), Python's indented and compact ones, and junk
#: whitespace of every JSON kind.
FORMATS = st.sampled_from(
    [
        {"indent": "\t"},
        {"indent": 8},
        {"separators": (",", ":")},
        {"indent": " \n\r\t", "separators": (" ,\n", " :\t")},
    ]
)


def feed_in_pieces(text: str, cuts: list[int]) -> list[Any]:
    stream = FarmsStream()
    entries: list[Any] = []
    last = 0
    for cut in sorted({min(c, len(text)) for c in cuts}):
        entries += stream.feed(text[last:cut])
        last = cut
    entries += stream.feed(text[last:])
    return entries + stream.finish()


@given(ENTRIES, FORMATS, st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_entries_are_those_of_the_whole_document_however_the_text_is_cut(
    entries: list[dict[str, Any]], fmt: dict[str, Any], cuts: list[int]
) -> None:
    text = " \n" + json.dumps({"farms": entries}, **fmt) + "\n"
    assert feed_in_pieces(text, cuts) == json.loads(text)["farms"]


@given(ENTRIES, st.integers(min_value=0, max_value=10_000), st.lists(st.integers(0, 2000)))
def test_a_document_cut_short_is_an_error(
    entries: list[dict[str, Any]], keep: int, cuts: list[int]
) -> None:
    text = json.dumps({"farms": entries}, indent="\t")
    short = text[: min(keep, len(text) - 1)]
    with pytest.raises(ValueError, match="GET /farms"):
        feed_in_pieces(short, cuts)


@given(ENTRIES, st.lists(st.integers(0, 2000)))
def test_other_valid_shapes_are_decoded_whole(
    entries: list[dict[str, Any]], cuts: list[int]
) -> None:
    """A key before "farms" is not nftlb's layout; the document still reads, decoded at once."""
    text = json.dumps({"version": "1.0.7", "farms": entries})
    assert feed_in_pieces(text, cuts) == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"farms": [1, 2]}', "not an object"),
        ('{"farms": [{}, ]}', "not an object"),
        ('{"farms": [{} {}]}', "expected ',' or ']'"),
        ('{"farms": [{"a" 1}]}', "not valid JSON"),
        ('{"farms": [], "other": 1}', "more than a farms list"),
        ('{"farms": []} {}', "text after the document"),
        ('{"farms": {}}', "farms list"),
        ("[]", "farms list"),
        ("not json at all", "not return JSON"),
        ("", "not return JSON"),
    ],
)
def test_bad_documents_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feed_in_pieces(text, [1, 5, 9])


class CountingDecoder(json.JSONDecoder):
    calls = 0

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        CountingDecoder.calls += 1
        return super().raw_decode(s, idx)


def test_an_entry_arriving_byte_by_byte_is_decoded_a_few_times_not_once_per_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retrying an incomplete entry on every piece would make a 3 MB farm cost minutes."""
    monkeypatch.setattr("reconciler.core.farms_stream._DECODER", CountingDecoder())
    text = json.dumps({"farms": [{"backends": ["x" * 10] * 2000}, {}]})
    stream = FarmsStream()
    entries = [e for c in text for e in stream.feed(c)] + stream.finish()
    assert entries == json.loads(text)["farms"]
    assert CountingDecoder.calls < 40  # about log2(32,000) + one per entry
