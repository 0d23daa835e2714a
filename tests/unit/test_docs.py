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


def test_the_flags_and_variables_conformance_md_names_exist_and_its_tests_too() -> None:
    import re

    from reconciler.cli.main import build_parser

    text = (ROOT / "docs" / "conformance.md").read_text()
    run = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
        if a.prog.endswith(" run")
    )
    flags = {o for action in run._actions for o in action.option_strings}
    named = set(re.findall(r"`(--[a-z-]+)", text))
    assert named >= {"--detect-local-mode", "--cluster-cidr", "--service-cidr", "--masquerade-all"}
    assert named <= flags, named - flags
    helps = " ".join(action.help or "" for action in run._actions)
    for variable in set(re.findall(r"`(KUBE_NFTLB_[A-Z_]+)", text)):
        assert variable in helps, variable
    suite = (ROOT / "tests" / "e2e" / "test_conformance_e2e.py").read_text()
    tests = set(re.findall(r"^def (test_\w+)", suite, re.M))
    for name in re.findall(r"`(test_\w+)`", text):
        assert name in tests, name
    assert tests <= set(re.findall(r"`(test_\w+)`", text)), "every conformance test is listed"
