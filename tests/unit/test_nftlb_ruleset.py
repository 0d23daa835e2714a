"""The kernel's view of farms (`nft -j list ruleset`), as `explain` reads it."""

from __future__ import annotations

from typing import Any

from reconciler.core.farms import Address, Backend, Family, Farm, Protocol
from reconciler.core.nftlb_ruleset import (
    expected_dnat_entries,
    expected_service_elements,
    kernel_differences,
)

NAME = "k8s.default.web.http.tcp.v4"
FARM = Farm(
    name=NAME,
    family=Family.IPV4,
    protocol=Protocol.TCP,
    addresses=(Address(f"{NAME}-addr", Family.IPV4, "10.96.0.20", 80, Protocol.TCP),),
    backends=(Backend("b-10.244.1.11-8080", "10.244.1.11", 8080, mark=1),),
)


def _ruleset(elements: dict[Any, str], dnat: dict[str, set[Any]]) -> list[dict[str, Any]]:
    """A ruleset in nft's JSON shape holding exactly these map elements and DNAT entries."""
    maps: dict[tuple[str, str], list[Any]] = {}
    for (family, name, proto, address, port), target in elements.items():
        maps.setdefault((family, name), []).append(
            [{"concat": [proto, address, port]}, {"goto": {"target": target}}]
        )
    out: list[dict[str, Any]] = [
        {"map": {"family": f, "table": "nftlb", "name": n, "elem": e}} for (f, n), e in maps.items()
    ]
    for chain, entries in dnat.items():
        out.append({"chain": {"family": "ip", "table": "nftlb", "name": chain}})
        pairs = [[mark, {"concat": [ip, port]}] for mark, ip, port in sorted(entries)]
        dnat_expr = {"dnat": {"addr": {"map": {"data": {"set": pairs}}}}}
        out.append(
            {"rule": {"family": "ip", "table": "nftlb", "chain": chain, "expr": [dnat_expr]}}
        )
    return out


def test_a_kernel_holding_exactly_the_farm_has_no_differences() -> None:
    ruleset = _ruleset(expected_service_elements([FARM]), expected_dnat_entries([FARM]))
    assert kernel_differences([FARM], ruleset) == []


def test_missing_frontends_and_backends_are_named() -> None:
    elements = expected_service_elements([FARM])
    dropped = sorted(elements)[0]
    del elements[dropped]
    dnat = {f"nat-{NAME}": {(1, "10.244.1.11", 8080), (2, "10.244.9.9", 8080)}}
    found = kernel_differences([FARM], _ruleset(elements, dnat))
    assert f"kernel: {dropped[0]} {dropped[1]}: tcp 10.96.0.20 . 80 is missing" in found
    assert f"kernel: nat-{NAME} still has backend 10.244.9.9:8080 (mark 0x2)" in found
    assert len(found) == 2
    assert kernel_differences([FARM], []) == [
        *(
            f"kernel: {f} {n}: tcp 10.96.0.20 . 80 is missing"
            for f, n, *_ in sorted(elements | {dropped: ""})
        ),
        f"kernel: chain nat-{NAME} is missing",
    ]
