"""The three PATCH dialects the apiserver accepts, small enough to read in one sitting.

* RFC 7386 JSON merge patch.
* Strategic merge patch: merge patch plus list merging by patch-merge key, only for the lists
  this project's kinds declare (see ``STRATEGIC_LISTS``); every other list is replaced whole,
  as the real server does for ``listType=atomic`` lists such as EndpointSlice ``endpoints``.
* RFC 6902 JSON patch: add, remove, replace, move, copy and test.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, JsonDict

PRIMITIVE = ""
"""Marks a list of scalars whose strategy is ``merge``: a set union (``metadata.finalizers``)."""

STRATEGIC_LISTS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): PRIMITIVE,
    ("spec", "ports"): "port",  # Service (EndpointSlice ports are top-level and atomic)
    ("status", "conditions"): "type",  # Service and Node
    ("status", "addresses"): "type",  # Node
}
"""Path (dict keys from the root, list indices skipped) -> patch merge key of that list."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: JsonDict, patch: Any) -> JsonDict:
    """Strategic merge patch for the kinds the fake serves; see the module docstring."""
    if not isinstance(patch, dict):
        raise ApiError(400, "strategic merge patch body must be a JSON object")
    merged = _smp_map(target, patch, ())
    return merged if merged is not None else {}


def _smp_map(target: Any, patch: JsonDict, path: tuple[str, ...]) -> JsonDict | None:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch" and v is not None}
    if directive == "delete":
        return None
    if directive is not None:
        raise ApiError(400, f"Unknown patch type: {directive}")
    result: JsonDict = copy.deepcopy(target) if isinstance(target, dict) else {}
    removals: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            removals.append((key.partition("/")[2], value))
            continue
        if key.startswith("$"):  # $retainKeys handled below, $setElementOrder ignored
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = (*path, key)
        current = result.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current, value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in STRATEGIC_LISTS:
            base = current if isinstance(current, list) else []
            merge_key = STRATEGIC_LISTS[sub]
            if merge_key == PRIMITIVE:
                result[key] = base + [copy.deepcopy(v) for v in value if v not in base]
            else:
                result[key] = _smp_keyed_list(base, value, merge_key, sub)
        else:
            result[key] = copy.deepcopy(value)
    for key, values in removals:
        if isinstance(result.get(key), list) and isinstance(values, list):
            result[key] = [v for v in result[key] if v not in values]
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_keyed_list(
    target: list[Any], patch: list[Any], key: str, path: tuple[str, ...]
) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    result = copy.deepcopy(target)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(422, f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        merged = _smp_map({} if index is None else result[index], item, path)
        if merged is None:  # pragma: no cover - "$patch: delete" handled above
            continue
        if index is None:
            result.append(merged)
        else:
            result[index] = merged
    return result


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ApiError(422, f"invalid JSON pointer: {path!r}")
    if not path:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise ApiError(422, f"invalid array index: {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise ApiError(422, f"array index out of bounds: {index}")
    return index


def _parent(doc: Any, tokens: list[str], op: str, raw: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise ApiError(422, f'{op} operation does not apply: doc is missing path: "{raw}"')
    return node


def _get(doc: Any, tokens: list[str], op: str, raw: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, raw)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise ApiError(422, f'{op} operation does not apply: doc is missing path: "{raw}"')


def _add(doc: Any, tokens: list[str], value: Any, raw: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, "add", raw)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    else:
        raise ApiError(422, f'add operation does not apply: doc is missing path: "{raw}"')
    return doc


def _remove(doc: Any, tokens: list[str], op: str, raw: str) -> Any:
    if not tokens:
        raise ApiError(422, f"{op} operation does not apply: cannot remove the root")
    parent = _parent(doc, tokens, op, raw)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise ApiError(422, f'{op} operation does not apply: doc is missing path: "{raw}"')


def _replace(doc: Any, tokens: list[str], value: Any, raw: str) -> Any:
    _get(doc, tokens, "replace", raw)  # must exist
    if not tokens:
        return value
    parent = _parent(doc, tokens, "replace", raw)
    if isinstance(parent, list):
        parent[_index(parent, tokens[-1], allow_end=False)] = value
    else:
        parent[tokens[-1]] = value
    return doc


def json_patch(target: JsonDict, operations: Any) -> Any:
    """RFC 6902, applied to a copy; a failed ``test`` or a missing path is a 422."""
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise ApiError(400, "json patch body must be a JSON array of operation objects")
    doc: Any = copy.deepcopy(target)
    for operation in operations:
        op = operation.get("op")
        raw = operation.get("path")
        tokens = _pointer(raw)
        if op in ("add", "replace", "test") and "value" not in operation:
            raise ApiError(422, f"{op} operation is missing a value")
        if op == "add":
            doc = _add(doc, tokens, copy.deepcopy(operation["value"]), str(raw))
        elif op == "remove":
            _remove(doc, tokens, "remove", str(raw))
        elif op == "replace":
            doc = _replace(doc, tokens, copy.deepcopy(operation["value"]), str(raw))
        elif op in ("move", "copy"):
            source_raw = operation.get("from")
            source = _pointer(source_raw)
            value = _get(doc, source, op, str(source_raw))
            if op == "move":
                _remove(doc, source, op, str(source_raw))
            doc = _add(doc, tokens, copy.deepcopy(value), str(raw))
        elif op == "test":
            if _get(doc, tokens, "test", str(raw)) != operation["value"]:
                raise ApiError(422, f"testing value {raw} failed: test failed")
        else:
            raise ApiError(422, f"Unexpected kind: {op}")
    return doc
