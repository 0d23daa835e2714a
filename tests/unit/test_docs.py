"""The docs name what the code does: annotations, commands, metrics."""

from __future__ import annotations

from pathlib import Path

from reconciler.annotations import ANNOTATIONS

ROOT = Path(__file__).parents[2]


def test_every_annotation_is_documented_with_its_values_and_default() -> None:
    text = (ROOT / "docs" / "annotations.md").read_text()
    for spec in ANNOTATIONS.values():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{spec.key}` |")), None)
        assert row is not None, spec.key
        assert f"`{spec.default}`" in row
        for value in spec.allowed or ():
            assert f"`{value}`" in row, (spec.key, value)
