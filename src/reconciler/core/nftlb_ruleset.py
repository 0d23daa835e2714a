"""What the kernel holds for nftlb's farms, read from `nft -j list ruleset`, and what it must hold.

nftlb's GET is not the truth (`nftlb-api.md` item 22): a farm can be in nftlb with no rules in
the kernel. nftlb puts each farm frontend in its `[output-]{filter,nat}-proto-services[6]` maps
(a verdict map to the farm's chains) and each backend in the `nat-<farm>` chain's DNAT map, keyed
by the backend's mark. Pure: the ruleset comes in as parsed JSON; `explain` and the e2e tests
compare the two sides with these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from reconciler.core.farms import Family, Farm

SERVICE_MAP_RE = re.compile(r"(output-)?(filter|nat)-proto-services6?")

#: (map family, map name, protocol, address, port) → goto target chain
ServiceElements = dict[tuple[str, str, str, str, int], str]
#: nat-<farm> chain → {(mark without nftlb's masquerade bit, ip, port or None)}
DnatEntries = dict[str, set[tuple[int, str, int | None]]]


def ruleset_objects(doc: Any) -> list[dict[str, Any]]:
    """The objects of a `nft -j list ruleset` document (its metainfo dropped)."""
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    return [o for o in items if isinstance(o, dict) and "metainfo" not in o]


def nftlb_objects(ruleset: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in ruleset:
        for kind, body in obj.items():
            if isinstance(body, dict) and body.get("table") == "nftlb":
                yield kind, body


def service_elements(ruleset: Iterable[dict[str, Any]]) -> ServiceElements:
    """The elements of every ``*-proto-services`` map: which (protocol, address, port) goes to
    which chain. Single ports only (what the reconciler sends)."""
    out: ServiceElements = {}
    for kind, body in nftlb_objects(ruleset):
        if kind != "map" or not SERVICE_MAP_RE.fullmatch(body["name"]):
            continue
        for key, verdict in body.get("elem", []):
            proto, address, port = key["concat"]
            target = verdict.get("goto", verdict.get("jump", {})).get("target", str(verdict))
            out[(body["family"], body["name"], proto, address, int(port))] = target
    return out


def dnat_entries(ruleset: Iterable[dict[str, Any]]) -> DnatEntries:
    """The backend DNAT map of each ``nat-<farm>`` chain; a chain without one maps to set()."""
    out: DnatEntries = {}
    for kind, body in nftlb_objects(ruleset):
        if kind == "chain" and body["name"].startswith("nat-"):
            out.setdefault(body["name"], set())
        if kind != "rule" or not body["chain"].startswith("nat-"):
            continue
        entries = out.setdefault(body["chain"], set())
        for expr in body["expr"]:
            dnat = expr.get("dnat")
            if not dnat:
                continue
            for mark, target in dnat["addr"]["map"]["data"]["set"]:
                if isinstance(target, dict):
                    ip, port = target["concat"]
                    entries.add((mark & 0x7FFFFFFF, ip, int(port)))
                else:
                    entries.add((mark & 0x7FFFFFFF, target, None))
    return out


def expected_service_elements(farms: Iterable[Farm]) -> ServiceElements:
    """What the kernel must hold for these farms' frontends, exactly.

    A farm has one frontend, sent as its own ``virtual-addr``/``virtual-ports`` shorthand;
    nftlb puts it in the same ``[output-]{filter,nat}-proto-services[6]`` maps as any address
    object (checked for tcp, udp and sctp, snat and dnat, both families)."""
    out: ServiceElements = {}
    for farm in farms:
        family, suffix = ("ip", "") if farm.family is Family.IPV4 else ("ip6", "6")
        prefixes = ("", "output-") if farm.intra_connect else ("",)
        for a in farm.addresses:
            for prefix in prefixes:
                for kind in ("filter", "nat"):
                    name = f"{prefix}{kind}-proto-services{suffix}"
                    out[(family, name, a.protocol.value, a.ip, a.port)] = f"{kind}-{farm.name}"
    return out


def expected_dnat_entries(farms: Iterable[Farm]) -> DnatEntries:
    return {f"nat-{f.name}": {(b.mark, b.ip, b.port) for b in f.backends} for f in farms}


def kernel_differences(farms: Iterable[Farm], ruleset: Iterable[dict[str, Any]]) -> list[str]:
    """What the kernel lacks or holds extra for these farms (frontends and backends), for
    people; empty when it holds exactly them. Other farms' rules are not looked at."""
    farms = list(farms)
    rules = list(ruleset)
    names = {f.name for f in farms}
    want, have = expected_service_elements(farms), service_elements(rules)
    out: list[str] = []
    for key, target in sorted(want.items()):
        family, map_name, proto, address, port = key
        got = have.get(key)
        if got != target:
            where = f"{family} {map_name}: {proto} {address} . {port}"
            out.append(
                f"kernel: {where} is missing" if got is None else f"kernel: {where} goes to {got}"
            )
    for key, target in sorted(have.items()):
        farm = target.split("-", 1)[1] if "-" in target else ""
        if farm in names and key not in want:
            out.append(f"kernel: {key[1]}: {key[2]} {key[3]} . {key[4]} still goes to {target}")
    wanted, held = expected_dnat_entries(farms), dnat_entries(rules)
    for chain, entries in sorted(wanted.items()):
        backends = held.get(chain)
        if backends is None:
            out.append(f"kernel: chain {chain} is missing")
            continue
        for mark, ip, number in sorted(entries - backends, key=str):
            out.append(f"kernel: {chain} lacks backend {ip}:{number} (mark {mark:#x})")
        for mark, ip, number in sorted(backends - entries, key=str):
            out.append(f"kernel: {chain} still has backend {ip}:{number} (mark {mark:#x})")
    return out
