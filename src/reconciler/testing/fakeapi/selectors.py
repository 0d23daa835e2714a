"""Label and field selectors, with the apiserver's grammar and its 400 error texts.

The grammar follows k8s.io/apimachinery ``labels.Parse`` and ``fields.ParseSelector`` closely
enough that a selector the real server rejects is rejected here too, so a typo in the
controller fails in tests rather than in a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import ApiError

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_SPECIAL = "!=(),<>"
_OPERATORS = ("=", "==", "!=", "in", "notin", ">", "<")

Requirement = tuple[str, str, tuple[str, ...]]


def _error(message: str) -> ApiError:
    return ApiError(400, message)


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal); kinds are the literal for symbols, ``id``, ``in``, ``notin``."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            pair = text[i : i + 2]
            if pair in ("!=", "=="):
                tokens.append((pair, pair))
                i += 2
            else:
                tokens.append((ch, ch))
                i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        tokens.append((word if word in ("in", "notin") else "id", word))
        i = j
    tokens.append(("end", ""))
    return tokens


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    ok = bool(_NAME.fullmatch(name)) and len(name) <= 63
    if prefix or "/" in key:
        ok = ok and bool(_DNS_SUBDOMAIN.fullmatch(prefix)) and len(prefix) <= 253
    if not ok:
        raise _error(f"unable to parse requirement: invalid label key {key!r}")


def _check_value(key: str, value: str) -> None:
    if len(value) > 63 or not _VALUE.fullmatch(value):
        raise _error(
            f'unable to parse requirement: invalid label value: "{value}": at key: "{key}"'
        )


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        if token[0] != "end":
            self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        if self.peek()[0] == "end":
            return requirements
        while True:
            kind, literal = self.peek()
            if kind not in ("id", "!"):
                raise _error(f"found '{literal}', expected: !, identifier, or 'end of string'")
            requirements.append(self.requirement())
            kind, literal = self.take()
            if kind == "end":
                return requirements
            if kind != ",":
                raise _error(f"found '{literal}', expected: ',' or 'end of string'")
            if self.peek()[0] not in ("id", "!"):
                raise _error(f"found '{self.peek()[1]}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negate = self.peek()[0] == "!"
        if negate:
            self.take()
        kind, key = self.take()
        if kind != "id":
            raise _error(f"unable to parse requirement: found '{key}', expected: identifier")
        _check_key(key)
        if negate:
            return (key, "!", ())
        if self.peek()[0] in ("end", ","):
            return (key, "exists", ())
        op, literal = self.take()
        if op not in _OPERATORS:
            raise _error(
                f"unable to parse requirement: found '{literal}', "
                "expected: in, notin, =, ==, !=, gt, lt"
            )
        if op in ("in", "notin"):
            values = self.values()
        else:
            values = (self.take()[1],) if self.peek()[0] == "id" else ("",)
        if op in (">", "<"):
            if not re.fullmatch(r"-?\d+", values[0]):
                raise _error(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, "
                    "the value must be an integer"
                )
        else:
            for value in values:
                _check_value(key, value)
        return (key, "=" if op == "==" else op, values)

    def values(self) -> tuple[str, ...]:
        kind, literal = self.take()
        if kind != "(":
            raise _error(f"unable to parse requirement: found '{literal}' expected: '('")
        values: list[str] = []
        current = ""
        while True:
            kind, literal = self.take()
            if kind == ")":
                values.append(current)
                return tuple(values)
            if kind == ",":
                values.append(current)
                current = ""
            elif kind == "id" and not current:
                current = literal
            else:
                raise _error(f"unable to parse requirement: found '{literal}', expected: ',', ')'")


class LabelSelector:
    """A parsed label selector; requirements are ANDed like the apiserver's."""

    def __init__(self, requirements: list[Requirement]) -> None:
        self.requirements = requirements

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse a ``labelSelector`` query value; raises a 400 ``ApiError`` on bad syntax."""
        return cls(_Parser(text or "").parse())

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(_requirement_matches(req, labels) for req in self.requirements)


def _requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    key, op, values = req
    has = key in labels
    value = labels.get(key)
    if op == "exists":
        return has
    if op == "!":
        return not has
    if op in ("=", "in"):
        return has and value in values
    if op in ("!=", "notin"):
        return not has or value not in values
    if not has or value is None or not re.fullmatch(r"-?\d+", value):
        return False
    return int(value) > int(values[0]) if op == ">" else int(value) < int(values[0])


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash (fields.splitTerms)."""
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise _error(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise _error(f"invalid field selector: unescaped {ch!r} in value {value!r}")
        else:
            out.append(ch)
    if escaped:
        raise _error("invalid field selector: trailing backslash")
    return "".join(out)


class FieldSelector:
    """A parsed field selector: ``field=value``, ``field==value`` or ``field!=value``, ANDed."""

    def __init__(self, terms: list[tuple[str, str, str]]) -> None:
        self.terms = terms

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        """Parse a ``fieldSelector`` query value; raises a 400 ``ApiError`` on bad syntax."""
        terms: list[tuple[str, str, str]] = []
        if not text:
            return cls(terms)
        for term in _split_terms(text):
            if not term:
                continue
            for i in range(len(term)):
                op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
                if op is not None:
                    value = _unescape(term[i + len(op) :])
                    terms.append((term[:i], "!=" if op == "!=" else "=", value))
                    break
            else:
                raise _error(f"invalid selector: '{text}'; can't understand '{term}'")
        return cls(terms)

    def with_name(self, name: str) -> FieldSelector:
        """The selector an item-path watch (``.../NAME?watch=1``) implies."""
        return FieldSelector([*self.terms, ("metadata.name", "=", name)])

    def fields(self) -> list[str]:
        return [field for field, _, _ in self.terms]

    def matches(self, values: Mapping[str, str]) -> bool:
        for field, op, want in self.terms:
            got = values.get(field, "")
            if (got == want) != (op == "="):
                return False
        return True
