"""The node table on the wire: nftables JSON commands, read-back parsing, and the diff. Pure.

`diff_tables(desired, actual)` gives one transaction (a list of ``nft -j`` commands) that makes
the table equal to `desired`, touching only what differs: elements added and deleted one by one,
a chain whose rules differ flushed and refilled in the same transaction, and the whole table
rebuilt only when it is missing or a set's type or a chain's hook changed. `RuleIndex` keeps
each Service's share with reference counts, so a partial sync's transaction follows the change.
Every command names our table and nothing else (`TABLE_FAMILY`, `TABLE_NAME`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.core.node_rules import (
    EXTERNAL,
    INTERNAL,
    TABLE_FAMILY,
    TABLE_NAME,
    BaseHook,
    Chain,
    Element,
    Key,
    NodeTable,
    Rule,
    ServiceRules,
    SetSpec,
    element_order,
    normalise_network,
)

Json = Any
_T = {"family": TABLE_FAMILY, "table": TABLE_NAME}


def _key_json(key: Key) -> Json:
    items = [
        {"prefix": {"addr": k.split("/")[0], "len": int(k.split("/")[1])}}
        if isinstance(k, str) and "/" in k
        else k
        for k in key
    ]
    return items[0] if len(items) == 1 else {"concat": items}


def _verdict_json(text: str) -> Json:
    kind, _, target = text.partition(":")
    return {kind: {"target": target}} if target else {kind: None}


def _elements_json(spec: SetSpec, elements: Iterable[Element]) -> list[Json]:
    out: list[Json] = []
    for e in sorted(elements, key=element_order):
        k = _key_json(e.key)
        out.append([k, _verdict_json(e.verdict)] if spec.verdict_map else k)
    return out


def _set_json(spec: SetSpec) -> Json:
    body: dict[str, Any] = {
        **_T,
        "name": spec.name,
        "type": spec.type[0] if len(spec.type) == 1 else list(spec.type),
    }
    if spec.interval:
        body["flags"] = ["interval"]
    if spec.verdict_map:
        body["map"] = "verdict"
        return {"map": body}
    return {"set": body}


def _chain_json(chain: Chain) -> Json:
    body: dict[str, Any] = {**_T, "name": chain.name}
    if chain.base is not None:
        body |= {
            "type": chain.base.type,
            "hook": chain.base.hook,
            "prio": chain.base.priority,
            "policy": "accept",
        }
    return {"chain": body}


def _rule_json(chain: str, rule: Rule) -> Json:
    return {"rule": {**_T, "chain": chain, "expr": json.loads(rule.expr), "comment": rule.comment}}


def _element_command(verb: str, spec: SetSpec, elements: Sequence[Element]) -> Json:
    return {verb: {"element": {**_T, "name": spec.name, "elem": _elements_json(spec, elements)}}}


def build_commands(table: NodeTable) -> list[Json]:
    """The table from nothing: add table, sets, chains, then elements and rules."""
    out: list[Json] = [{"add": {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}}]
    out += [{"add": _set_json(s)} for s in sorted(table.sets)]
    out += [{"add": _chain_json(c)} for c in table.chains.values()]
    out += element_commands(table.sets, table.elements, ())
    for c in table.chains.values():
        out += [{"add": _rule_json(c.name, r)} for r in c.rules]
    return out


def rebuild_commands(table: NodeTable) -> list[Json]:
    """Replace the table whatever it holds, in one transaction (``add`` first: deleting a
    missing table would fail the batch)."""
    table_obj = {"family": TABLE_FAMILY, "name": TABLE_NAME}
    return [{"add": {"table": table_obj}}, {"delete": {"table": table_obj}}, *build_commands(table)]


def element_commands(
    sets: Iterable[SetSpec], added: Iterable[Element], removed: Iterable[Element]
) -> list[Json]:
    """Deletes first (a changed verdict is a delete and an add of one key), then adds."""
    specs = {s.name: s for s in sets}
    out: list[Json] = []
    for verb, elements in (("delete", removed), ("add", added)):
        by_set: dict[str, list[Element]] = {}
        for e in elements:
            by_set.setdefault(e.set, []).append(e)
        for name in sorted(by_set):
            out.append(_element_command(verb, specs[name], by_set[name]))
    return out


def chain_commands(
    old: Mapping[str, Chain], new: Mapping[str, Chain]
) -> tuple[list[Json], list[Json], list[Json]]:
    """(before the elements: add new chains, flush changed ones; after: their rules; last: delete
    chains no longer wanted, once the elements that jumped to them are gone)."""
    first: list[Json] = []
    rules: list[Json] = []
    last: list[Json] = []
    for name, chain in new.items():
        was = old.get(name)
        if was is not None and was.signature == chain.signature:
            continue
        if was is None:
            first.append({"add": _chain_json(chain)})
        else:
            first.append({"flush": {"chain": {**_T, "name": name}}})
        rules += [{"add": _rule_json(name, r)} for r in chain.rules]
    for name in old:
        if name not in new:
            last.append({"flush": {"chain": {**_T, "name": name}}})
            last.append({"delete": {"chain": {**_T, "name": name}}})
    return first, rules, last


def diff_tables(desired: NodeTable, actual: NodeTable | None) -> list[Json]:
    """One transaction that makes the table `desired`; empty when it already is."""
    if actual is None:
        return build_commands(desired)
    old_bases = {n: c.base for n, c in actual.chains.items()}
    if actual.sets != desired.sets or any(
        n in old_bases and old_bases[n] != c.base for n, c in desired.chains.items()
    ):
        return rebuild_commands(desired)
    first, rules, last = chain_commands(actual.chains, desired.chains)
    elements = element_commands(
        desired.sets, desired.elements - actual.elements, actual.elements - desired.elements
    )
    return [*first, *elements, *rules, *last]


# -- reading back --------------------------------------------------------------------------------


class UnreadableTable(ValueError):
    """The read-back does not look like a table we wrote; the caller rebuilds it."""


def _key_of(raw: Json) -> Key:
    items = raw["concat"] if isinstance(raw, dict) and "concat" in raw else [raw]
    if all(type(i) is str or type(i) is int for i in items):  # the common case, fast
        return tuple(items)
    out: list[str | int] = []
    for item in items:
        if isinstance(item, dict) and "prefix" in item:
            p = item["prefix"]
            out.append(normalise_network(f"{p['addr']}/{p['len']}"))
        elif isinstance(item, dict) and "range" in item:
            raise UnreadableTable(f"a range element {item!r}")
        elif isinstance(item, str | int) and not isinstance(item, bool):
            out.append(item)
        else:
            raise UnreadableTable(f"an element part {item!r}")
    return tuple(out)


def _verdict_of(raw: Json) -> str:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UnreadableTable(f"a verdict {raw!r}")
    ((kind, body),) = raw.items()
    return f"{kind}:{body['target']}" if isinstance(body, dict) else str(kind)


def parse_table(objects: Iterable[Json]) -> NodeTable | None:
    """`nft -j list table inet kube-nftlb`'s objects as a NodeTable; None without the table.

    Rules are known by their comment (the hash `Rule.comment` gives); a rule without one reads
    as a rule that differs, so its chain is refilled."""
    found = False
    sets: set[SetSpec] = set()
    elements: set[Element] = set()
    bases: dict[str, BaseHook | None] = {}
    comments: dict[str, list[str]] = {}
    for obj in objects:
        if not isinstance(obj, dict) or len(obj) != 1:
            continue
        ((kind, body),) = obj.items()
        if not isinstance(body, dict) or body.get("family") != TABLE_FAMILY:
            continue
        if kind == "table" and body.get("name") == TABLE_NAME:
            found = True
        if body.get("table") != TABLE_NAME:
            continue
        if kind in ("set", "map"):
            raw_type = body["type"]
            spec = SetSpec(
                body["name"],
                tuple(raw_type) if isinstance(raw_type, list) else (raw_type,),
                "interval" in body.get("flags", []),
                kind == "map",
            )
            sets.add(spec)
            for raw in body.get("elem", []):
                if spec.verdict_map:
                    elements.add(Element(spec.name, _key_of(raw[0]), _verdict_of(raw[1])))
                else:
                    elements.add(Element(spec.name, _key_of(raw)))
        elif kind == "chain":
            bases[body["name"]] = (
                BaseHook(body["type"], body["hook"], int(body["prio"])) if "hook" in body else None
            )
            comments.setdefault(body["name"], [])
        elif kind == "rule":
            comments.setdefault(body["chain"], []).append(body.get("comment", "?"))
    if not found:
        return None
    chains = [
        Chain(name, base, tuple(Rule("", known=c) for c in comments.get(name, ())))
        for name, base in bases.items()
    ]
    return NodeTable(frozenset(sets), chains, frozenset(elements))


# -- incremental: each Service's share with reference counts ------------------------------------


class RuleIndex:
    """Every Service's share of the table, merged with reference counts (a hairpin element or a
    cluster IP may come from several Services). `replace` says what one change adds and removes,
    at the cost of that Service's share, not of the table."""

    def __init__(self) -> None:
        self._shares: dict[Any, ServiceRules] = {}
        self._counts: Counter[Element] = Counter()
        self._verdicts: dict[tuple[str, Key], set[Element]] = {}
        self._chains: dict[str, Chain] = {}
        self._no_local: Counter[str] = Counter()

    def no_local_endpoints(self) -> dict[str, int]:
        """`count_no_local` of every share, kept as shares are replaced."""
        return {p: self._no_local[p] for p in (INTERNAL, EXTERNAL)}

    def shares(self) -> list[ServiceRules]:
        return list(self._shares.values())

    def owners(self) -> set[Any]:
        return set(self._shares)

    def _winner(self, slot: tuple[str, Key]) -> Element | None:
        held = self._verdicts.get(slot)
        if not held:
            return None
        return next(iter(held)) if len(held) == 1 else min(held, key=lambda e: e.verdict)

    def replace(
        self, owner: Any, share: ServiceRules | None
    ) -> tuple[set[Element], set[Element], dict[str, Chain | None]]:
        """Swap `owner`'s share; returns (elements added, elements removed, chains changed:
        name -> new chain, or None when deleted), as seen in the merged table."""
        old = self._shares.pop(owner, None)
        if share is not None and (share.elements or share.chains or share.no_local):
            self._shares[owner] = share
        for n in old.no_local if old is not None else ():
            self._no_local[n.traffic_policy] -= 1
        for n in share.no_local if share is not None else ():
            self._no_local[n.traffic_policy] += 1
        old_elements = old.elements if old is not None else frozenset()
        new_elements = share.elements if share is not None else frozenset()
        slots = {(e.set, e.key) for e in old_elements ^ new_elements}
        before = {s: self._winner(s) for s in slots}
        for e in old_elements - new_elements:
            self._counts[e] -= 1
            if self._counts[e] <= 0:
                del self._counts[e]
                held = self._verdicts.get((e.set, e.key))
                if held is not None:
                    held.discard(e)
                    if not held:
                        del self._verdicts[(e.set, e.key)]
        for e in new_elements - old_elements:
            self._counts[e] += 1
            self._verdicts.setdefault((e.set, e.key), set()).add(e)
        added: set[Element] = set()
        removed: set[Element] = set()
        for s in slots:
            after = self._winner(s)
            if before[s] != after:
                if before[s] is not None:
                    removed.add(before[s])  # type: ignore[arg-type]
                if after is not None:
                    added.add(after)
        chains: dict[str, Chain | None] = {}
        old_chains = {c.name: c for c in (old.chains if old is not None else ())}
        new_chains = {c.name: c for c in (share.chains if share is not None else ())}
        for name in old_chains.keys() | new_chains.keys():
            if old_chains.get(name) != new_chains.get(name):
                chains[name] = new_chains.get(name)
                if name in new_chains:
                    self._chains[name] = new_chains[name]
                else:
                    self._chains.pop(name, None)
        return added, removed, chains

    def elements(self) -> frozenset[Element]:
        return frozenset(w for s in self._verdicts if (w := self._winner(s)) is not None)

    def chains(self) -> list[Chain]:
        return list(self._chains.values())


def delta_commands(
    sets: Iterable[SetSpec],
    added: Iterable[Element],
    removed: Iterable[Element],
    chains: Mapping[str, Chain | None],
) -> list[Json]:
    """A partial sync's transaction: chains added or refilled, elements, chains deleted."""
    first: list[Json] = []
    rules: list[Json] = []
    last: list[Json] = []
    for name, chain in sorted(chains.items()):
        if chain is None:
            last.append({"flush": {"chain": {**_T, "name": name}}})
            last.append({"delete": {"chain": {**_T, "name": name}}})
        else:
            # add is a no-op on an existing chain; flush empties it either way
            first.append({"add": _chain_json(chain)})
            first.append({"flush": {"chain": {**_T, "name": name}}})
            rules += [{"add": _rule_json(name, r)} for r in chain.rules]
    return [*first, *element_commands(sets, added, removed), *rules, *last]
