"""The model's rule for "two backends on one mark" (`nftlb-api.md` item 23), as nft applies it.

nft refuses a farm's DNAT map (``ct mark map { mark : ip . port }``) only when one mark gets two
different targets: identical entries merge. The map holds the usable backends (``up`` and
``off``), with ports only when every backend of the farm has one. Each case was run on nftlb
1.0.7 (tests/e2e/test_backend_slots_e2e.py holds the model to the daemon for the first two).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.testing.nftlb_model import NftlbModel

KEY = "k"


def post(model: NftlbModel, *farms: dict[str, Any]) -> None:
    status, body = model.handle(
        "POST", "/farms", json.dumps({"farms": list(farms)}).encode(), {"Key": KEY}
    )
    assert (status, json.loads(body)) == (200, {"response": "success"})


def backend(name: str, ip: str, port: str, mark: int, state: str = "up") -> dict[str, str]:
    return {"name": name, "ip-addr": ip, "port": port, "mark": f"{mark:#x}", "state": state}


def farm(name: str, vip: str, *backends: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "family": "ipv4",
        "virtual-addr": vip,
        "virtual-ports": "80",
        "protocol": "tcp",
        "backends": list(backends),
    }


@pytest.fixture
def model() -> NftlbModel:
    """Two farms, so that the second one breaking leaves the first alone."""
    m = NftlbModel(KEY)
    post(m, farm("a", "10.96.0.9", backend("x", "10.1.0.9", "80", 1)))
    post(
        m,
        farm(
            "f",
            "10.96.0.1",
            backend("b1", "10.1.0.1", "8080", 1),
            backend("b2", "10.1.0.2", "8080", 2),
        ),
    )
    assert m.dark_farms() == {}
    return m


def test_a_take_over_sent_twice_leaves_two_identical_entries_which_nft_merges(
    model: NftlbModel,
) -> None:
    post(model, {"name": "f", "backends": [backend("b2", "10.1.0.2", "8080", 2, "down")]})
    take_over = {"name": "b2", "newname": "t", "ip-addr": "10.1.0.5", "port": "9090"}
    take_over |= {"mark": "0x2", "state": "up"}
    post(model, {"name": "f", "backends": [take_over]})
    post(model, {"name": "f", "backends": [take_over]})  # b2 is gone: a second "t" appears
    names = [b.name for b in model.farms["f"].backends]
    assert names == ["b1", "t", "t"]
    assert model.dark_farms() == {}


def test_one_mark_with_two_ports_is_refused(model: NftlbModel) -> None:
    post(model, {"name": "f", "backends": [backend("c", "10.1.0.1", "9090", 1)]})
    assert model.dark_farms() == {"f": "mark"}


def test_without_ports_in_the_map_one_ip_on_one_mark_is_one_entry(model: NftlbModel) -> None:
    """A backend without a port (a bare ``state`` post of an unknown backend) makes nftlb
    DNAT every backend of the farm to its IP only: then a second backend on mark 1 with
    b1's IP and another port is the same entry, and one with another IP is refused."""
    post(model, {"name": "f", "backends": [{"name": "nope", "state": "down"}]})
    post(model, {"name": "f", "backends": [backend("c", "10.1.0.1", "9090", 1)]})
    assert model.dark_farms() == {}
    post(model, {"name": "f", "backends": [backend("d", "10.1.0.4", "9090", 1)]})
    assert model.dark_farms() == {"f": "mark"}


def test_an_off_backend_keeps_its_dnat_entry_and_its_mark(model: NftlbModel) -> None:
    """``off`` only leaves the scheduler (`nftlb-api.md` section 7): a new backend on its
    mark with another IP is two targets for one mark."""
    post(model, {"name": "f", "backends": [backend("b2", "10.1.0.2", "8080", 2, "off")]})
    assert model.dark_farms() == {}
    post(model, {"name": "f", "backends": [backend("c", "10.1.0.3", "8080", 2)]})
    assert model.dark_farms() == {"f": "mark"}


def test_a_down_backend_holds_no_entry(model: NftlbModel) -> None:
    post(model, {"name": "f", "backends": [backend("b2", "10.1.0.2", "8080", 2, "down")]})
    post(model, {"name": "f", "backends": [backend("c", "10.1.0.3", "8080", 2)]})
    assert model.dark_farms() == {}
