"""The docs name what the code does, and the code what the docs say: metrics, log events,
Problem reasons, flags and annotations, checked both ways (documented but absent, present but
undocumented). Everything is derived from the code (the metrics registry, the argparse parser,
the source's log and Problem calls), never from a list kept here, so a new flag, metric, event
or reason fails this test until the docs say what it is."""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from reconciler.core.annotations import ANNOTATIONS

ROOT = Path(__file__).parents[2]
SRC = ROOT / "src" / "reconciler"
DOCS = ROOT / "docs"


def _doc_files() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


@cache
def _docs() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in _doc_files()}


def _code_pieces(text: str) -> Iterator[str]:
    """Inline code spans and the lines of fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield line
        else:
            yield from re.findall(r"`([^`]+)`", line)


def _table_keys(path: Path) -> list[str]:
    """The first column's code spans of every table row of a page."""
    return re.findall(r"^\| `([^`]+)` \|", _docs()[path], re.M)


@cache
def _sources() -> dict[Path, ast.Module]:
    return {
        p: ast.parse(p.read_text(encoding="utf-8"))
        for p in SRC.rglob("*.py")
        if "testing" not in p.relative_to(SRC).parts
    }


def _calls() -> Iterator[tuple[str, ast.Call]]:
    for tree in _sources().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = getattr(f, "id", None) or getattr(f, "attr", "")
                yield name, node


def _str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


# -- metrics -----------------------------------------------------------------------------------

_METRIC = re.compile(r"\b((?:kube_nftlb|kubeproxy|process)_[a-z0-9_]+|python_info)\b(?!\()")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def _served_metrics() -> set[str]:
    from reconciler.agent.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def _documented_metrics() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path, text in _docs().items():
        for piece in _code_pieces(text):
            for name in _METRIC.findall(piece):
                for suffix in _SUFFIXES:
                    name = name.removesuffix(suffix)
                found.setdefault(name, path)
    return found


def test_every_metric_served_is_documented_in_metrics_md() -> None:
    served = _served_metrics()
    assert {"kube_nftlb_actual_farms", "kube_nftlb_nftlb_requests_total"} <= served
    page = {n for n, _ in _documented_metrics().items()} & set(
        _METRIC.findall(_docs()[DOCS / "metrics.md"])
    )
    assert served - page == set(), "served but not in docs/metrics.md"


def test_every_metric_the_docs_name_is_served() -> None:
    served = _served_metrics()
    absent = {n: str(p.name) for n, p in _documented_metrics().items() if n not in served}
    assert absent == {}, "named in docs/ but not served"


# -- log events --------------------------------------------------------------------------------

_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
_EVENT = re.compile(r"[a-z_]+\.[a-z_]+")


def _logged_events() -> set[str]:
    events = set()
    for name, call in _calls():
        if name in _LEVELS and call.args:
            event = _str(call.args[0])
            if event is not None and _EVENT.fullmatch(event):
                events.add(event)
    return events


def test_every_log_event_is_in_logging_md_and_every_row_is_logged() -> None:
    logged = _logged_events()
    assert {"sync.done", "nftlb.operation", "service.problem", "watch.error"} <= logged
    rows = {k for k in _table_keys(DOCS / "logging.md") if _EVENT.fullmatch(k)}
    assert logged - rows == set(), "logged but not in docs/logging.md"
    assert rows - logged == set(), "in docs/logging.md but never logged"


def test_every_event_a_jq_example_selects_is_logged() -> None:
    logged = _logged_events()
    for path, text in _docs().items():
        for event in re.findall(r'\.event == "([^"]+)"', text):
            assert event in logged, (path.name, event)


# -- Problem reasons ---------------------------------------------------------------------------

_REASON = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)+")


def _problem_reasons() -> set[str]:
    """The reason of every Problem the code makes: the first CamelCase string among the first
    two arguments (or `reason=`) of a call to Problem or to a helper named like it."""
    reasons = set()
    for name, call in _calls():
        if "problem" not in name.lower() or name.startswith("_print"):
            continue
        candidates = [*call.args[:2], *(k.value for k in call.keywords if k.arg == "reason")]
        for arg in candidates:
            value = _str(arg)
            if value is not None and _REASON.fullmatch(value):
                reasons.add(value)
                break
    return reasons


def test_every_problem_reason_is_in_problems_md_and_every_row_is_made() -> None:
    made = _problem_reasons()
    assert {"InvalidAnnotation", "UnknownAnnotation", "AddressConflict", "InvalidField"} <= made
    rows = {k for k in _table_keys(DOCS / "problems.md") if _REASON.fullmatch(k)}
    assert made - rows == set(), "made by the code but not in docs/problems.md"
    assert rows - made == set(), "in docs/problems.md but never made"


def test_every_reason_the_docs_name_is_made() -> None:
    made = _problem_reasons()
    for path, text in _docs().items():
        named = re.findall(r"reason[= ]`?([A-Z][A-Za-z]+)`?", text)
        named += re.findall(r"Event (?:\(reason )?`([A-Z][A-Za-z]+)`", text)
        for reason in named:
            assert reason in made, (path.name, reason)


# -- flags -------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags() -> dict[str, dict[str, argparse.Action]]:
    """Every long flag of every command (hidden deprecated spellings too), by command."""
    from reconciler.cli.main import build_parser

    parser = build_parser()
    out = {"": {o: a for a in parser._actions for o in a.option_strings if o.startswith("--")}}
    for name, sub in _subparsers(parser).items():
        out[name] = {o: a for a in sub._actions for o in a.option_strings if o.startswith("--")}
    return out


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def test_every_flag_the_docs_name_exists() -> None:
    """A code span starting with `--` is a kube-nftlb flag (another tool's flag is written with
    its command: `kube-apiserver --event-ttl`); a `kube-nftlb SUB ...` line's flags are SUB's."""
    flags = _flags()
    every = {f for fs in flags.values() for f in fs}
    commands = set(flags) - {""}
    for path, text in _docs().items():
        for piece in _code_pieces(text):
            piece = piece.replace("\\|", "|")
            if piece.startswith("--"):
                flag = _FLAG.match(piece)
                assert flag is not None and flag.group(0) in every, (path.name, piece)
            for m in re.finditer(r"kube-nftlb\s+([a-z]+)\b([^|;&]*)", piece):
                command, rest = m.group(1), m.group(2)
                if command not in commands:
                    continue
                for flag in _FLAG.findall(rest):
                    assert flag in flags[command] or flag in flags[""], (path.name, command, flag)


def test_every_flag_is_documented_in_cli_md() -> None:
    text = _docs()[DOCS / "cli.md"]
    for command, fs in _flags().items():
        for flag, action in fs.items():
            if action.help == argparse.SUPPRESS or flag == "--help":
                continue
            assert f"`{flag}" in text, (command, flag)


def test_every_setting_has_a_row_with_its_variable_default_and_commands() -> None:
    from reconciler.cli.main import SETTINGS_OF, build_parser

    build_parser()
    rows = {
        m.group(1): line
        for line in _docs()[DOCS / "cli.md"].splitlines()
        if (m := re.match(r"^\| `(--[a-z0-9-]+)` \|", line))
    }
    takers: dict[str, set[str]] = {}
    for command, settings in SETTINGS_OF.items():
        for s in settings:
            takers.setdefault(s.flag, set()).add(command)
            row = rows.get(s.flag)
            assert row is not None, s.flag
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1] == f"`{s.env}`", (s.flag, cells[1])
            if s.default:
                assert f"`{s.default}`" in cells[2], (command, s.flag, cells[2])
            for old in s.deprecated:
                assert f"`{old}`" in _docs()[DOCS / "cli.md"], old
    for flag, row in rows.items():
        if flag not in takers:
            continue
        listed = set(re.findall(r"`([a-z]+)`", row.strip("|").split("|")[3]))
        assert listed == takers[flag], (flag, listed, takers[flag])
    settings_rows = {f for f, row in rows.items() if re.search(r"\| `[A-Z][A-Z0-9_]+` \|", row)}
    assert settings_rows - set(takers) == set(), "rows for settings no command takes"


def test_every_environment_variable_the_docs_name_is_a_settings() -> None:
    from reconciler.cli.main import SETTINGS_OF, build_parser

    build_parser()
    names = {s.env for ss in SETTINGS_OF.values() for s in ss}
    for path, text in _docs().items():
        for name in re.findall(r"\b(KUBE_NFTLB_[A-Z0-9_]+)\b", text):
            assert name in names, (path.name, name)


# -- annotations -------------------------------------------------------------------------------


def test_every_annotation_is_documented_with_its_values_and_default() -> None:
    text = _docs()[DOCS / "annotations.md"]
    for spec in ANNOTATIONS.values():
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `{spec.key}` |")), None
        )
        assert row is not None, spec.key
        assert f"`{spec.default}`" in row
        for value in spec.allowed or ():
            assert f"`{value}`" in row, (spec.key, value)


#: Label and annotation keys (the `*.k8s.io/...` the docs name are API groups and images).
_KEY = re.compile(r"\b((?:[a-z0-9-]+\.)*kubernetes\.io/[a-z0-9.-]*[a-z0-9])")


def test_every_annotation_or_label_the_docs_name_is_read_by_the_code() -> None:
    """Our annotations are ANNOTATIONS' keys; any other Kubernetes key the docs name (a label,
    an annotation) is one the code reads (a string in src/) or our manifests set (deploy/)."""
    prefix = "service.kubernetes.io/kube-nftlb-load-balancer-"
    keys = {spec.key for spec in ANNOTATIONS.values()}
    ours = [*SRC.rglob("*.py"), *(ROOT / "deploy").rglob("*.yaml")]  # read, or set on our pods
    source = "\n".join(p.read_text(encoding="utf-8") for p in ours)
    for path, text in _docs().items():
        for piece in _code_pieces(text):
            for key in _KEY.findall(piece):
                if key.startswith(prefix) and key != prefix.rstrip("-"):
                    assert key in keys, (path.name, key)
                else:
                    assert key in source, (path.name, key)


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


def test_every_page_the_code_or_the_docs_cite_is_in_the_repository() -> None:
    """`nftlb-api.md` item 23 in a docstring is only an answer if nftlb-api.md is here."""
    here = {p.name for p in (*DOCS.rglob("*.md"), *ROOT.glob("*.md"), *ROOT.glob("*/*.md"))}
    texts = [*(p.read_text(encoding="utf-8") for p in SRC.rglob("*.py"))]
    texts += [p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py")]
    texts += list(_docs().values())
    cited = {name for text in texts for name in re.findall(r"\b([A-Za-z0-9_-]+\.md)\b", text)}
    assert {"nftlb-api.md", "kube-api-fake.md"} <= cited
    assert cited - here == set(), "cited but not in the repository"
