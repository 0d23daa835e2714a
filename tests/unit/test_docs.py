"""The docs name what the code does: annotations, commands, metrics."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.annotations import ANNOTATIONS

ROOT = Path(__file__).parents[2]


def test_every_annotation_is_documented_with_its_values_and_default() -> None:
    text = (ROOT / "docs" / "annotations.md").read_text()
    for spec in ANNOTATIONS.values():
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `{spec.key}` |")), None
        )
        assert row is not None, spec.key
        assert f"`{spec.default}`" in row
        for value in spec.allowed or ():
            assert f"`{value}`" in row, (spec.key, value)


def test_every_metric_is_documented() -> None:
    from reconciler.agent.metrics import Metrics

    text = (ROOT / "docs" / "metrics.md").read_text()
    names = {m.name for m in Metrics().registry.collect()}
    assert names
    for name in names:
        assert f"`{name}`" in text or f"`{name}_total`" in text, name


def test_every_log_event_in_the_code_is_documented() -> None:
    import re

    text = (ROOT / "docs" / "logging.md").read_text()
    found: set[str] = set()
    for path in (ROOT / "src" / "reconciler").rglob("*.py"):
        if "testing" in path.parts:
            continue
        found |= set(
            re.findall(
                r'log\w*\.(?:info|warning|error|debug)\(\s*"([a-z_]+\.[a-z_]+)"', path.read_text()
            )
        )
    assert found >= {"sync.done", "nftlb.operation", "service.problem"}
    for event in found:
        assert f"`{event}`" in text, event
