"""The nftlb wire format: key order, strings only, safe URLs, and read-back normalisation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from attrs import evolve

from reconciler.core.diff import diff
from reconciler.core.farms import (
    Address,
    Backend,
    Family,
    Farm,
    Helper,
    Mode,
    Protocol,
    Scheduler,
    validate_farm,
)
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.ownership import OWNER_LOG_PREFIX
from reconciler.core.plan import Operation, OpKind
from reconciler.core.wire import (
    MAX_URI,
    UNUSABLE_PORT,
    Request,
    farm_body,
    farm_path,
    farms_document,
    marked_body,
    parse_farm,
    parse_farms,
    requests_for,
    safe_path,
    update_body,
)

NAME = farm_name(FarmKey("default", "web", "http", Protocol.TCP, Family.IPV4))


def make_farm(**kw: Any) -> Farm:
    address = Address(address_name(NAME), Family.IPV4, "10.96.0.10", 80, Protocol.TCP)
    backends = (
        Backend(backend_name("10.1.0.2", 8080), "10.1.0.2", 8080, 1, 1),
        Backend(backend_name("10.1.0.3", 8080), "10.1.0.3", 8080, 3, 2),
    )
    fields: dict[str, Any] = {"addresses": (address,), "backends": backends} | kw
    farm = Farm(NAME, Family.IPV4, Protocol.TCP, **fields)
    assert validate_farm(farm) == []
    return farm


def echo(farm: Farm) -> dict[str, Any]:
    """What nftlb 1.0.7 answers in GET for `farm_body(farm)`, written out by hand."""
    body = farm_body(farm)
    out: dict[str, Any] = {
        "name": farm.name,
        "family": body["family"],
        "virtual-addr": body["virtual-addr"],
        "virtual-ports": body["virtual-ports"],
        "source-addr": "",
        "mode": body["mode"],
        "protocol": body["protocol"],
        "scheduler": body["scheduler"],
        "sched-param": " ".join(farm.sched_param) + " " if farm.sched_param else "none",
        "persistence": " ".join(farm.persistence) + " " if farm.persistence else "none",
        "persist-ttl": body["persist-ttl"],
        "helper": body["helper"],
        "log": body["log"],
        "log-prefix": body["log-prefix"],  # shown because it is not nftlb's default
        "log-rtlimit": "0/second",
        "mark": "0x0",
        "priority": "1",
        "state": "up",
        "limits-ttl": "120",
        "est-connlimit": body["est-connlimit"],
        "verdict": "log drop accept",
    }
    if farm.intra_connect:
        out["intra-connect"] = "on"
    out["addresses"] = [
        {
            "name": address_name(farm.name),
            "family": body["family"],
            "ip-addr": body["virtual-addr"],
            "ports": body["virtual-ports"],
            "protocol": body["protocol"],
            "used": "1",
        }
    ]
    out["backends"] = [
        {k: v for k, v in b.items() if k != "state"}
        | {"priority": "1", "est-connlimit": "0", "state": "up"}
        for b in body["backends"]
    ]
    out["policies"] = []
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]


class TestFarmBody:
    def test_key_order_and_strings(self) -> None:
        farm = make_farm(helper=Helper.FTP, log=("input",), intra_connect=True)
        body = farm_body(farm)
        assert list(body) == [
            "name",
            "family",
            "virtual-addr",
            "virtual-ports",
            "protocol",
            "mode",
            "scheduler",
            "sched-param",
            "persistence",
            "persist-ttl",
            "helper",
            "log",
            "est-connlimit",
            "intra-connect",
            "log-prefix",
            "state",
            "backends",
        ]
        assert list(body["backends"][0]) == ["name", "ip-addr", "port", "weight", "mark", "state"]

        def strings(value: object) -> bool:
            if isinstance(value, dict):
                return all(strings(v) for v in value.values())
            if isinstance(value, list):
                return all(strings(v) for v in value)
            return isinstance(value, str)

        assert strings(body)
        assert body["intra-connect"] == "on"
        assert body["state"] == "up"
        assert body["backends"][1]["mark"] == "0x2"
        assert body["backends"][1]["weight"] == "3"
        assert body["backends"][0]["state"] == "up"

    def test_frontend_shorthand_comes_first(self) -> None:
        """The one frontend travels as the farm's own shorthand keys, right after ``name``:
        ``family`` or ``protocol`` without a ``virtual-addr`` would make nftlb create an
        address with an empty IP (which poisons every farm), and the helper that follows is
        checked against the protocol. No address objects are ever sent."""
        body = farm_body(make_farm(helper=Helper.FTP))
        assert list(body)[:5] == ["name", "family", "virtual-addr", "virtual-ports", "protocol"]
        assert (body["family"], body["virtual-addr"], body["virtual-ports"], body["protocol"]) == (
            "ipv4",
            "10.96.0.10",
            "80",
            "tcp",
        )
        assert list(body).index("protocol") < list(body).index("helper")
        assert "addresses" not in body

    def test_ipv6_frontend(self) -> None:
        name = farm_name(FarmKey("default", "web", "http", Protocol.UDP, Family.IPV6))
        address = Address(address_name(name), Family.IPV6, "fd00::10", 53, Protocol.UDP)
        farm = Farm(name, Family.IPV6, Protocol.UDP, (address,))
        assert validate_farm(farm) == []
        body = farm_body(farm)
        assert [body[k] for k in ("family", "virtual-addr", "virtual-ports", "protocol")] == [
            "ipv6",
            "fd00::10",
            "53",
            "udp",
        ]

    @pytest.mark.parametrize("count", [0, 2])
    def test_exactly_one_frontend(self, count: int) -> None:
        """validate_farm refuses these; the body builder does not guess either."""
        farm = make_farm()
        extra = Address(f"{NAME}-x", Family.IPV4, "10.96.0.11", 80, Protocol.TCP)
        farm = evolve(farm, addresses=(farm.addresses[0], extra)[:count])
        assert validate_farm(farm)
        with pytest.raises(ValueError, match="values to unpack"):
            farm_body(farm)

    def test_tokens(self) -> None:
        body = farm_body(
            make_farm(
                scheduler=Scheduler.HASH,
                sched_param=("srcip", "srcport"),
                persistence=(),
                log=("input", "output"),
                intra_connect=False,
            )
        )
        assert body["sched-param"] == "srcip srcport"
        assert body["persistence"] == "none"
        assert body["log"] == "input output"
        assert body["intra-connect"] == "off"

    def test_unassigned_mark_is_left_to_nftlb(self) -> None:
        farm = make_farm(backends=(Backend("b", "10.1.0.9", 80),))
        assert "mark" not in farm_body(farm)["backends"][0]

    def test_document(self) -> None:
        farm = make_farm()
        assert farms_document([farm, farm]) == {"farms": [farm_body(farm), farm_body(farm)]}
        assert farms_document([]) == {"farms": []}


MARKER = {"log-prefix": OWNER_LOG_PREFIX}


class TestUpdates:
    def test_only_the_fields_in_order(self) -> None:
        farm = make_farm(mode=Mode.DNAT, est_connlimit=4, helper=Helper.SIP)
        body = update_body(farm, ["est_connlimit", "mode", "helper"])
        assert body == {
            "name": NAME,
            "mode": "dnat",
            "helper": "sip",
            "est-connlimit": "4",
            "log-prefix": OWNER_LOG_PREFIX,  # the ownership marker, on every POST
        }
        assert list(body) == ["name", "mode", "helper", "est-connlimit", "log-prefix"]

    def test_sched_param_follows_scheduler(self) -> None:
        farm = make_farm(scheduler=Scheduler.HASH, sched_param=("dstip",))
        body = update_body(farm, ["scheduler"])
        assert list(body) == ["name", "scheduler", "sched-param", "log-prefix"]
        assert body["sched-param"] == "dstip"
        assert update_body(make_farm(), ["scheduler"])["sched-param"] == "none"

    def test_unknown_field(self) -> None:
        with pytest.raises(ValueError, match="not farm fields"):
            update_body(make_farm(), ["name"])

    def test_frontend_update(self) -> None:
        """A changed frontend is the farm's own shorthand changed in place (clean in nftlb),
        all four keys right after the name, before the farm fields."""
        farm = make_farm()
        moved = evolve(farm, addresses=(evolve(farm.addresses[0], ip="10.96.0.99", port=8080),))
        body = update_body(moved, ["addresses"])
        assert body == {
            "name": NAME,
            "family": "ipv4",
            "virtual-addr": "10.96.0.99",
            "virtual-ports": "8080",
            "protocol": "tcp",
            "log-prefix": OWNER_LOG_PREFIX,
        }
        assert list(body) == [
            "name",
            "family",
            "virtual-addr",
            "virtual-ports",
            "protocol",
            "log-prefix",
        ]
        both = update_body(evolve(moved, helper=Helper.FTP), ["helper", "addresses"])
        assert list(both) == [
            "name",
            "family",
            "virtual-addr",
            "virtual-ports",
            "protocol",
            "helper",
            "log-prefix",
        ]


class TestRequests:
    def test_each_kind(self) -> None:
        farm = make_farm()
        b = farm.backends[0]
        cases = {
            OpKind.DELETE_FARM: Operation(OpKind.DELETE_FARM, NAME),
            OpKind.DELETE_BACKEND: Operation(OpKind.DELETE_BACKEND, NAME, target=b.name),
            OpKind.CREATE_FARM: Operation(OpKind.CREATE_FARM, NAME, farm=farm),
            OpKind.UPDATE_FARM: Operation(OpKind.UPDATE_FARM, NAME, farm=farm, fields=("log",)),
            OpKind.UPSERT_BACKENDS: Operation(OpKind.UPSERT_BACKENDS, NAME, backends=(b,)),
            OpKind.RETIRE_BACKENDS: Operation(OpKind.RETIRE_BACKENDS, NAME, backends=(b,)),
        }
        assert set(cases) == set(OpKind)
        got = {kind: requests_for(op) for kind, op in cases.items()}
        assert got[OpKind.DELETE_FARM] == [Request("DELETE", f"/farms/{NAME}")]
        assert got[OpKind.DELETE_BACKEND] == [Request("DELETE", f"/farms/{NAME}/backends/{b.name}")]
        assert got[OpKind.CREATE_FARM] == [Request("POST", "/farms", farms_document([farm]))]
        assert got[OpKind.UPDATE_FARM] == [
            Request(
                "POST",
                "/farms",
                {"farms": [{"name": NAME, "log": "none", "log-prefix": OWNER_LOG_PREFIX}]},
            )
        ]
        upsert = got[OpKind.UPSERT_BACKENDS][0].body
        assert upsert == {
            "farms": [{**marked_body(NAME), "backends": farm_body(farm)["backends"][:1]}]
        }
        # a retire sends the whole backend, state down last (a bare name would create a
        # backend without a port, which strips the ports from the farm's DNAT map)
        retire = got[OpKind.RETIRE_BACKENDS][0].body
        whole = farm_body(farm)["backends"][0]
        assert retire == {
            "farms": [{**marked_body(NAME), "backends": [{**whole, "state": "down"}]}]
        }
        assert list(retire["farms"][0]["backends"][0])[-1] == "state"

    def test_a_takeover_renames_the_spare_and_sets_it_up_last(self) -> None:
        b = make_farm().backends[0]
        op = Operation(OpKind.UPSERT_BACKENDS, NAME, backends=(b,), renames=((b.name, "old"),))
        (request,) = requests_for(op)
        assert request.body is not None
        (sent,) = request.body["farms"][0]["backends"]
        assert list(sent.items()) == [
            ("name", "old"),
            ("newname", b.name),
            ("ip-addr", b.ip),
            ("port", str(b.port)),
            ("weight", str(b.weight)),
            ("mark", f"{b.mark:#x}"),
            ("state", "up"),
        ]

    def test_nothing_to_send(self) -> None:
        farm = make_farm()
        assert requests_for(Operation(OpKind.UPDATE_FARM, NAME, farm=farm)) == []
        assert requests_for(Operation(OpKind.UPSERT_BACKENDS, NAME)) == []

    def test_frontend_change(self) -> None:
        farm = make_farm()
        moved = evolve(farm, addresses=(evolve(farm.addresses[0], port=8080),))
        op = Operation(OpKind.UPDATE_FARM, NAME, farm=moved, fields=("addresses",))
        assert requests_for(op) == [
            Request("POST", "/farms", {"farms": [update_body(moved, ["addresses"])]})
        ]

    def test_missing_farm(self) -> None:
        with pytest.raises(ValueError, match="carries no farm"):
            requests_for(Operation(OpKind.CREATE_FARM, NAME))

    @pytest.mark.parametrize("target", ["", "a/b", "..", "x y", "%2F", "-x", "é"])
    def test_unsafe_targets_never_become_urls(self, target: str) -> None:
        with pytest.raises(ValueError, match="unsafe"):
            requests_for(Operation(OpKind.DELETE_BACKEND, NAME, target=target))

    @pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 64, "farm;drop"])
    def test_unsafe_farm_names(self, name: str) -> None:
        with pytest.raises(ValueError, match="unsafe"):
            requests_for(Operation(OpKind.DELETE_FARM, name))

    def test_summary(self) -> None:
        names = [f"f{i}" for i in range(5)]
        request = Request("POST", "/farms", {"farms": [{"name": n} for n in names]})
        assert request.summary == "POST /farms [f0, f1, f2, ... (5 farms)]"
        assert Request("DELETE", "/farms/x").summary == "DELETE /farms/x"


class TestSafePath:
    def test_ok(self) -> None:
        assert safe_path("farms", NAME, "backends", "b-10.0.0.1-80") == (
            f"/farms/{NAME}/backends/b-10.0.0.1-80"
        )

    @pytest.mark.parametrize(
        "segments",
        [(), ("farms", ""), ("farms", "", "backends", "x"), ("farms", "a", "backends", "")],
    )
    def test_empty_segments(self, segments: tuple[str, ...]) -> None:
        """``DELETE /farms/`` deletes every farm; ``/farms/f/backends/`` every backend."""
        with pytest.raises(ValueError, match="segment"):
            safe_path(*segments)

    def test_too_long(self) -> None:
        long = "b" * 120
        with pytest.raises(ValueError, match="longer"):
            safe_path("farms", "f" * 63, "backends", long)
        assert len(safe_path("farms", "f" * 63, "backends", "b" * (MAX_URI - 80))) == MAX_URI

    def test_farm_path_needs_nft_safe_name(self) -> None:
        with pytest.raises(ValueError, match="unsafe farm name"):
            farm_path("f" * 100)


class TestParse:
    def test_round_trip_of_echo(self) -> None:
        farm = make_farm(
            scheduler=Scheduler.HASH,
            sched_param=("srcip", "srcport"),
            persistence=("srcip",),
            persist_ttl=300,
            log=("input", "output"),
            est_connlimit=5,
            helper=Helper.FTP,
        )
        assert parse_farm(echo(farm)) == farm
        assert parse_farm(json.loads(json.dumps(farm_body(farm)))) == farm

    def test_intra_connect_shown_only_when_on(self) -> None:
        farm = make_farm(intra_connect=False)
        assert "intra-connect" not in echo(farm)
        assert parse_farm(echo(farm)) == farm

    def test_ignores_server_fields(self) -> None:
        farm = make_farm()
        obj = echo(farm)
        obj |= {"priority": "3", "mark": "0x10", "verdict": "drop", "new-rtlimit": "5/second"}
        assert parse_farm(obj) == farm

    def test_the_frontend_comes_from_the_farm_level_keys(self) -> None:
        farm = make_farm()
        obj = echo(farm)
        del obj["addresses"]  # the farm's own address object is not needed to read it
        assert parse_farm(obj) == farm
        obj = echo(farm) | {"virtual-addr": "10.96.0.77", "virtual-ports": "8080"}
        parsed = parse_farm(obj)
        assert parsed is not None
        assert parsed.addresses == (
            Address(address_name(NAME), Family.IPV4, "10.96.0.77", 8080, Protocol.TCP),
        )

    def test_an_extra_address_object_is_unparsable(self) -> None:
        """nftlb 1.0.7 breaks farms with several address objects (farm-level changes rebuild
        everything or fail, deletes leave rules behind): such a farm is not read as ours but
        reported unparsable, so the diff deletes it and creates it again with one frontend."""
        farm = make_farm()
        obj = echo(farm)
        obj["addresses"].append(
            {
                "name": "other",
                "family": "ipv4",
                "ip-addr": "10.96.0.11",
                "ports": "80",
                "protocol": "tcp",
                "used": "1",
            }
        )
        assert parse_farm(obj) is None
        read = parse_farms({"farms": [obj]})
        assert (read.owned, read.unparsable) == ((), (NAME,))
        plan = diff([farm], read.owned, read.unparsable)
        assert [(op.kind, op.farm_name) for op in plan] == [
            (OpKind.DELETE_FARM, NAME),
            (OpKind.CREATE_FARM, NAME),
        ]

    @pytest.mark.parametrize("name", ["other", "", None])
    def test_a_foreign_address_object_alone_is_unparsable(self, name: str | None) -> None:
        obj = echo(make_farm())
        obj["addresses"][0]["name"] = name
        assert parse_farm(obj) is None

    def test_available_counts_as_up(self) -> None:
        farm = make_farm()
        obj = echo(farm)
        obj["backends"][0]["state"] = "available"
        assert parse_farm(obj) == farm

    @pytest.mark.parametrize(
        "change",
        [
            {"state": "config_error"},
            {"state": "down"},
            {"state": "off"},
            {"port": ""},
            {"port": "80x"},
            {"weight": "x"},
            {"mark": "zz"},
            {"ip-addr": None},
        ],
    )
    def test_unusable_backend_reads_with_port_0(self, change: dict[str, Any]) -> None:
        farm = make_farm()
        obj = echo(farm)
        backend = obj["backends"][0]
        for key, value in change.items():
            if value is None:
                del backend[key]
            else:
                backend[key] = value
        parsed = parse_farm(obj)
        assert parsed is not None
        assert parsed != farm
        got = parsed.backend(farm.backends[0].name)
        assert got is not None
        assert got.port == UNUSABLE_PORT
        if "mark" not in change:
            assert got.mark == farm.backends[0].mark  # kept, so a re-post does not re-mark

    @pytest.mark.parametrize(
        "change",
        [
            {"mode": "dsr"},
            {"scheduler": "bogus"},
            {"helper": "irc"},
            {"state": "down"},
            {"state": "config_error"},
            {"persistence": "srcip bogus "},
            {"name": 5},
        ],
    )
    def test_unrepresentable_farms(self, change: dict[str, Any]) -> None:
        obj = echo(make_farm()) | change
        assert parse_farm(obj) is None

    def test_bad_integers_differ(self) -> None:
        obj = echo(make_farm()) | {"persist-ttl": "abc", "est-connlimit": ""}
        parsed = parse_farm(obj)
        assert parsed is not None
        assert (parsed.persist_ttl, parsed.est_connlimit) == (-1, -1)

    @pytest.mark.parametrize(
        "change",
        [
            {"virtual-ports": "80,443"},
            {"virtual-ports": ""},
            {"virtual-ports": "0"},
            {"virtual-addr": ""},
            {"protocol": "all"},
            {"family": "inet"},
            {"family": None},
            {"virtual-addr": None},
        ],
    )
    def test_frontends_the_model_cannot_hold_are_unparsable(self, change: dict[str, Any]) -> None:
        obj = echo(make_farm())
        for key, value in change.items():
            if value is None:
                del obj[key]
            else:
                obj[key] = value
        assert parse_farm(obj) is None

    def test_no_frontend_at_all_is_unparsable(self) -> None:
        """A farm nftlb holds without a virtual address (left by a detach, or by hand)."""
        obj = echo(make_farm())
        for key in ("family", "virtual-addr", "virtual-ports", "protocol"):
            del obj[key]
        obj["addresses"] = []
        assert parse_farm(obj) is None

    def test_duplicated_backend_names(self) -> None:
        obj = echo(make_farm())
        obj["backends"].append(dict(obj["backends"][0]))
        assert parse_farm(obj) is None


class TestParseFarms:
    def test_sorts_out_owned_foreign_and_unparsable(self) -> None:
        farm = make_farm()
        bad = echo(make_farm()) | {"name": NAME.replace("web", "bad"), "mode": "dsr"}
        doc = {"farms": [{"name": "lb01", "mode": "snat"}, echo(farm), bad]}
        read = parse_farms(doc)
        assert read.owned == (farm,)
        assert read.foreign == ("lb01",)
        assert read.unparsable == (bad["name"],)
        assert read.by_name() == {NAME: farm}

    @pytest.mark.parametrize("doc", [None, [], {"farms": {}}, {"farms": [{"mode": "x"}]}])
    def test_bad_documents(self, doc: object) -> None:
        with pytest.raises(ValueError, match="GET /farms"):
            parse_farms(doc)
