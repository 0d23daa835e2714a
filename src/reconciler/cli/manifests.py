"""Reading Kubernetes manifests from files, folders and standard input, as `kubectl apply -f`.

Files are YAML (multi-document) or JSON; `-` is standard input; folders are read recursively in
name order, taking `.yaml`, `.yml` and `.json` files and skipping hidden entries and Python
virtual environments (a `.venv` under `-f .` is not a manifest folder). Anything unreadable is an
error that names the file and the document, since silently skipping a manifest would render a
wrong cluster; so is input that holds no object at all (kubectl's "no objects passed").
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen

from reconciler.core.kube import READ_KINDS

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class ManifestError(Exception):
    """A manifest could not be read; the message names the file and the document."""


@frozen
class Document:
    """One object of the input and where it came from (for messages)."""

    obj: dict[str, Any]
    source: str
    index: int

    @property
    def where(self) -> str:
        return f"{self.source}: document {self.index}"


def _skipped(path: Path) -> bool:
    """Hidden entries and virtual environments are never manifests."""
    return path.name.startswith(".") or (path.is_dir() and (path / "pyvenv.cfg").exists())


def _walk(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if _skipped(entry):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file() and entry.suffix in SUFFIXES:
            yield entry


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return list(_walk(path))
    if path.is_file():
        return [path]
    raise ManifestError(f"{path}: no such file or folder")


def parse_text(text: str, source: str) -> list[Document]:
    docs: list[Document] = []
    index = 0
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ManifestError(
                    f"{source}: document {index}: expected a mapping, got {type(doc).__name__}"
                )
            docs.append(Document(doc, source, index))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ManifestError(
            f"{source}: document {index + 1}: not valid YAML or JSON{where}: {e}"
        ) from e
    return docs


def load_file(path: Path) -> list[Any]:
    return [d.obj for d in _load(path)]


def _load(path: Path) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read: {e}") from e
    return parse_text(text, str(path))


def load_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Every document of every file under `paths` (`-`: standard input), in a stable order."""
    docs: list[Document] = []
    for raw in paths:
        if str(raw) == STDIN:
            try:
                text = sys.stdin.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ManifestError(f"<stdin>: cannot read: {e}") from e
            docs.extend(parse_text(text, "<stdin>"))
            continue
        for file in _files(Path(raw)):
            docs.extend(_load(file))
    return docs


def load_paths(paths: Iterable[str | Path]) -> list[Any]:
    """Every object of every file under `paths`, in a stable order."""
    return [d.obj for d in load_documents(paths)]


def _kinds(obj: Any) -> Iterator[str]:
    """The kinds of an object, a List's items' included."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if not isinstance(kind, str):
        return
    if kind.endswith("List") and isinstance(obj.get("items"), list):
        element = kind.removesuffix("List")
        if element:
            yield element
            return
        for item in obj["items"]:
            yield from _kinds(item)
        return
    yield kind


def unread_kinds(docs: Iterable[Document]) -> tuple[list[str], dict[str, int]]:
    """What the input holds that kube-nftlb does not read: a line for each document whose kind
    looks like a misspelt one it reads (`Servcie`), and a count of every other kind."""
    typos: list[str] = []
    others: dict[str, int] = {}
    for doc in docs:
        for kind in _kinds(doc.obj):
            if kind in READ_KINDS:
                continue
            same = [k for k in READ_KINDS if k.lower() == kind.lower()]
            close = same or difflib.get_close_matches(kind, READ_KINDS, n=1, cutoff=0.75)
            if close:
                guess = close[0]
                typos.append(f"{doc.where}: kind {kind!r} is not read; did you mean {guess!r}?")
            else:
                others[kind] = others.get(kind, 0) + 1
    return typos, others
