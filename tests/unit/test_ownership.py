"""Ownership is proven by kube-nftlb's marker, not guessed from a name (issue 16, item 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.test_controller import World, eps, service

from reconciler.cli.main import main
from reconciler.core.farms import Protocol
from reconciler.core.ownership import OWNER_LOG_PREFIX, ForeignFrontend, foreign_farm
from reconciler.core.wire import read_back

WEB = "k8s.default.web.http.tcp.v4"
LOOK_ALIKES = [
    "k8s.default.ghost.http.tcp.v4",
    "k8s.a.b.c.tcp.v4",
    "k8s.default.ghost.http.tcp.v4.habcdefghijk",
]


def _farm(name: str, vip: str = "10.96.0.77", port: str = "80", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "family": "ipv4",
        "virtual-addr": vip,
        "virtual-ports": port,
        "protocol": "tcp",
        "mode": "snat",
        **extra,
        "state": "up",
        "backends": [
            {"name": "b1", "ip-addr": "10.1.9.9", "port": "80", "mark": "0x1", "state": "up"}
        ],
    }


def _post(w: World, *farms: dict[str, Any]) -> None:
    """What someone else (or an older kube-nftlb) put into nftlb, sent around the client."""
    with httpx.Client(transport=httpx.MockTransport(w.model.as_handler())) as c:
        r = c.post("http://nftlb/farms", json={"farms": list(farms)}, headers={"Key": "k"})
        assert r.status_code == 200, r.text


def _nftlb(w: World) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in w.client.get_farms_document()["farms"]}


@pytest.mark.parametrize("name", [*LOOK_ALIKES, WEB])
def test_a_name_of_ours_without_the_marker_is_foreign(name: str) -> None:
    back = read_back([_farm(name)])
    assert back.owned == () and back.foreign == (name,) and back.unmarked == (name,)
    marked = read_back([_farm(name, **{"log-prefix": OWNER_LOG_PREFIX})])
    assert (marked.foreign == () and marked.owned != ()) or marked.unparsable == (name,)


def test_look_alikes_are_never_deleted_or_updated() -> None:
    w = World()
    _post(w, *(_farm(n, vip=f"10.96.0.{70 + i}") for i, n in enumerate(LOOK_ALIKES)))
    before = {n: _nftlb(w)[n] for n in LOOK_ALIKES}
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    assert w.controller.sync_full().ok
    assert w.controller.sync_full().ok
    after = _nftlb(w)
    assert {n: after[n] for n in LOOK_ALIKES} == before
    assert WEB in after and after[WEB]["log-prefix"] == OWNER_LOG_PREFIX
    touched = [path for method, path in w.model.requests if method in ("DELETE", "PUT")]
    assert touched == []
    assert w.controller.conflicts == ()


@pytest.mark.parametrize(
    ("foreign", "what"),
    [
        (_farm("lb01", vip="10.96.0.1"), "frontend"),  # a hand-made farm on web's cluster IP
        (_farm("lb02", vip="10.96.0.1", port="1-1024"), "frontend"),
        (_farm("lb03", vip="10.96.0.1", port=""), "frontend"),  # every port
        (_farm(WEB, vip="10.96.0.1"), "name"),  # an older kube-nftlb's farm, no marker
    ],
)
def test_a_foreign_farm_on_a_services_frontend_is_a_reported_conflict(
    foreign: dict[str, Any], what: str
) -> None:
    events: list[Any] = []
    w = World(events)
    _post(w, foreign)
    before = _nftlb(w)[foreign["name"]]
    w.put_service(service())
    w.put_slice(eps("web", "10.1.0.1"))
    result = w.controller.sync_full()
    assert result.ok
    assert _nftlb(w)[foreign["name"]] == before, "the foreign farm is left as it was"
    if what == "frontend":
        assert WEB not in _nftlb(w), "no second farm on the same frontend"
    (conflict,) = w.controller.conflicts
    assert (conflict.farm, conflict.foreign, conflict.what) == (WEB, foreign["name"], what)
    assert conflict.frontend == "tcp 10.96.0.1:80"
    assert w.controller.metrics.foreign_conflicts._value.get() == 1
    problems = [x for x in w.logs() if x["event"] == "service.problem"]
    assert [(p["service"], p["reason"]) for p in problems] == [("default/web", "ForeignFarm")]
    assert foreign["name"] in problems[0]["message"]
    # A partial sync keeps it withheld and reported (no Event flapping), and sends nothing.
    writes = w.writes()
    w.put_slice(eps("web", "10.1.0.1", "10.1.0.2", rv="2"))
    assert w.controller.sync_partial().ok
    assert w.writes() == writes and len(w.controller.conflicts) == 1
    assert len([x for x in w.logs() if x["event"] == "service.problem"]) == 1
    # Once its owner removes it, the next full sync programs the Service.
    with httpx.Client(transport=httpx.MockTransport(w.model.as_handler())) as c:
        c.delete(f"http://nftlb/farms/{foreign['name']}", headers={"Key": "k"})
    assert w.controller.sync_full().ok
    assert [b["ip-addr"] for b in _nftlb(w)[WEB]["backends"]] == ["10.1.0.1", "10.1.0.2"]
    assert w.controller.conflicts == () and w.controller.metrics.foreign_conflicts._value.get() == 0


def test_foreign_frontends_read_like_nftlb_matches() -> None:
    f = foreign_farm(
        {
            "name": "x",
            "virtual-addr": "10.0.0.1",
            "virtual-ports": "80, 8000-8010",
            "protocol": "all",
            "addresses": [{"name": "a", "ip-addr": "FD00::1", "ports": "", "protocol": "udp"}],
        }
    )
    assert ForeignFrontend(Protocol.UDP, "fd00::1", None) in f.frontends
    tcp = next(x for x in f.frontends if x.protocol is Protocol.TCP and x.ip == "10.0.0.1")
    assert tcp.holds(Protocol.TCP, "10.0.0.1", 8005) and not tcp.holds(Protocol.TCP, "10.0.0.1", 81)
    assert (
        foreign_farm({"name": "y", "virtual-addr": "10.0.0.1", "virtual-ports": "abc"}).frontends
        == ()
    )


def test_diff_shows_the_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifests = Path(__file__).parents[2] / "examples" / "10-web.yaml"
    code = main(["render", "-f", str(manifests)])
    rendered = json.loads(capsys.readouterr().out)
    web = next(f for f in rendered["farms"] if f["name"] == WEB)
    state = tmp_path / "farms.json"
    held = _farm("lb01", vip=web["virtual-addr"], port=web["virtual-ports"])
    state.write_text(json.dumps({"farms": [*rendered["farms"], held]}))
    code = main(["diff", "-f", str(manifests), "--state", str(state)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"conflict {WEB}" in out and "'lb01'" in out
    code = main(["diff", "-f", str(manifests), "--state", str(state), "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["conflicts"] == [
        {
            "farm": WEB,
            "foreign": "lb01",
            "what": "frontend",
            "frontend": f"tcp {web['virtual-addr']}:{web['virtual-ports']}",
        }
    ]


def test_explain_shows_the_conflicts_of_its_service_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).parents[2] / "examples"
    assert main(["render", "-f", str(examples)]) == 0
    rendered = json.loads(capsys.readouterr().out)
    web = next(f for f in rendered["farms"] if f["name"] == WEB)
    others = [f for f in rendered["farms"] if f["name"] != WEB]
    held = _farm("lb01", vip=web["virtual-addr"], port=web["virtual-ports"])
    state = tmp_path / "farms.json"
    # nftlb holds everything else as kube-nftlb would, and web's frontend in a foreign farm
    state.write_text(json.dumps({"farms": [*others, held]}))
    argv = ["explain", "default/web", "-f", str(examples), "--state", str(state)]
    assert main([*argv, "-o", "json"]) == 1
    r = json.loads(capsys.readouterr().out)
    frontend = f"tcp {web['virtual-addr']}:{web['virtual-ports']}"
    assert r["matches"] is False and r["nftlb"]["matches"] is False
    assert r["nftlb"]["conflicts"] == [
        {"farm": WEB, "foreign": "lb01", "what": "frontend", "frontend": frontend}
    ]
    assert WEB not in [o["farm"] for o in r["nftlb"]["operations"]], "withheld, as run does"
    foreign = [p for p in r["problems"] if p["reason"] == "ForeignFarm"]
    assert [(p["object"], p["key"], p["value"]) for p in foreign] == [
        ("Service default/web", frontend, "lb01")
    ]
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert f"! conflict {WEB}" in text and "'lb01'" in text and frontend in text
    assert "holds exactly these farms" not in text
    # Another Service's explain does not carry web's conflict.
    assert main(["explain", "ingress/ingress", "-f", str(examples), "--state", str(state)]) == 0
    assert "conflict" not in capsys.readouterr().out
