"""Reading Kubernetes manifests from files and folders, as `kubectl apply -f` would.

Files are YAML (multi-document) or JSON; folders are read recursively in name order, taking
`.yaml`, `.yml` and `.json` files. Anything unreadable is an error that names the file and the
document, since silently skipping a manifest would render a wrong cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    """A manifest could not be read; the message names the file and the document."""


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if path.is_file():
        return [path]
    raise ManifestError(f"{path}: no such file or folder")


def load_file(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read: {e}") from e
    docs: list[Any] = []
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ManifestError(
                    f"{path}: document {index}: expected a mapping, got {type(doc).__name__}"
                )
            docs.append(doc)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ManifestError(
            f"{path}: document {len(docs) + 1}: not valid YAML or JSON{where}: {e}"
        ) from e
    return docs


def load_paths(paths: Iterable[str | Path]) -> list[Any]:
    """Every document of every file under `paths`, in a stable order."""
    objects: list[Any] = []
    for raw in paths:
        for file in _files(Path(raw)):
            objects.extend(load_file(file))
    return objects
