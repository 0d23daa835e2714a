"""The nftlb client against the in-memory model, httpx.MockTransport and a raw socket server."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from attrs import evolve

from reconciler.core.diff import diff
from reconciler.core.farms import (
    Address,
    Backend,
    Family,
    Farm,
    Mode,
    Protocol,
    Scheduler,
    validate_farm,
    validate_farms,
)
from reconciler.core.names import FarmKey, address_name, backend_name, farm_name
from reconciler.core.plan import Operation, OpKind, Plan
from reconciler.core.wire import ReadBack, Request, farm_body, marked_body, update_body
from reconciler.nftlb.client import (
    UNAUTHORIZED_MESSAGE,
    NftlbClient,
    NftlbRejected,
    NftlbUnauthorized,
    NftlbUnavailable,
    NftlbVerifyError,
    wipes_ipv6,
)
from reconciler.testing.nftlb_model import NftlbModel

KEY = "s3cr3t-key"


def make_farm(i: int, *, weight: int = 1, backends: int = 2) -> Farm:
    name = farm_name(FarmKey("ns", f"svc{i}", "http", Protocol.TCP, Family.IPV4))
    ip = f"10.96.{i // 250}.{i % 250 + 1}"
    address = Address(address_name(name), Family.IPV4, ip, 80, Protocol.TCP)
    bs = tuple(
        Backend(backend_name(f"10.1.{i % 250}.{j + 1}", 8080), f"10.1.{i % 250}.{j + 1}", 8080)
        for j in range(backends)
    )
    bs = tuple(
        Backend(b.name, b.ip, b.port, weight if j == 0 else 1, j + 1) for j, b in enumerate(bs)
    )
    return Farm(name, Family.IPV4, Protocol.TCP, (address,), bs)


@pytest.fixture
def model() -> NftlbModel:
    return NftlbModel(KEY)


@pytest.fixture
def client(model: NftlbModel) -> Iterator[NftlbClient]:
    transport = httpx.MockTransport(model.as_handler())
    with NftlbClient("http://nftlb", KEY, transport=transport, sleep=lambda _: None) as c:
        yield c


def creates(farms: list[Farm]) -> Plan:
    return Plan(tuple(Operation(OpKind.CREATE_FARM, f.name, farm=f) for f in farms))


# -- a raw HTTP server that behaves like nftlb's socket handling ---------------------------


class RawServer:
    """Accepts connections, reads one request each, answers, closes (no Connection: close),
    like nftlb; records the raw bytes. `reset_first` connections are reset instead."""

    def __init__(self, reset_first: int = 0, cut_first: int = 0, answer: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.raw: list[bytes] = []
        self.connections = 0
        self.reset_first = reset_first
        self.cut_first = cut_first  # these get the head and half the answer, then a reset
        self.answer = answer or b'{"response": "success"}'
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                if self.connections <= self.reset_first:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.recv(65536)
                    continue  # closing with linger 0 sends RST
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(body) < length:
                    body += conn.recv(65536)
                self.raw.append(head + b"\r\n\r\n" + body)
                answer = self.answer
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer))
                if self.connections <= self.reset_first + self.cut_first:
                    conn.sendall(answer[: len(answer) // 2])
                    time.sleep(0.05)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(**kw: Any) -> RawServer:
        servers.append(RawServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


class TestWire:
    def test_key_header_spelling_and_fresh_connections(
        self, raw_server: Callable[..., RawServer]
    ) -> None:
        server = raw_server()
        with NftlbClient(f"http://127.0.0.1:{server.port}", KEY) as c:
            for _ in range(5):
                c.send(Request("DELETE", "/farms/k8s.a.b.c.tcp.v4"))
            c.post_farms([make_farm(1)])
        assert len(server.raw) == 6
        assert server.connections == 6  # one connection per request, never reused
        for raw in server.raw:
            assert f"\r\nKey: {KEY}\r\n".encode() in raw  # exact case, one space
            assert b"\r\nConnection: close\r\n" in raw
        assert server.raw[-1].endswith(b'"state": "up"}]}]}')

    def test_retries_a_real_reset(self, raw_server: Callable[..., RawServer]) -> None:
        server = raw_server(reset_first=2)
        delays: list[float] = []
        with NftlbClient(
            f"http://127.0.0.1:{server.port}", KEY, sleep=delays.append, jitter=lambda: 0.5
        ) as c:
            c.delete_farm("k8s.a.b.c.tcp.v4")
            assert c.retries_done == 2
            assert c.requests_sent == 1
        assert server.connections == 3
        assert delays == [0.05, 0.1]  # exponential, with the jitter factor 0.5 + 0.5

    def test_a_reset_while_the_answer_arrives_is_retried(
        self, raw_server: Callable[..., RawServer]
    ) -> None:
        server = raw_server(cut_first=1)
        with NftlbClient(f"http://127.0.0.1:{server.port}", KEY, sleep=lambda _: None) as c:
            assert "success" in c.send(Request("DELETE", "/farms/k8s.a.b.c.tcp.v4"))
            assert c.retries_done == 1
        assert server.connections == 2

    def test_a_read_back_cut_short_is_a_clear_error(
        self, raw_server: Callable[..., RawServer]
    ) -> None:
        """GET /farms is parsed as it streams in, so a reset halfway is not retried in place:
        the sync fails cleanly and the next one reads again."""
        document = json.dumps({"farms": [farm_body(make_farm(i)) for i in range(1, 4)]}).encode()
        server = raw_server(cut_first=1, answer=document)
        with NftlbClient(f"http://127.0.0.1:{server.port}", KEY, sleep=lambda _: None) as c:
            with pytest.raises(NftlbUnavailable, match="failed on GET /farms"):
                c.get_farms()
            assert [f.name for f in c.get_farms().owned] == [make_farm(i).name for i in (1, 2, 3)]

    def test_connection_refused_is_bounded(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        delays: list[float] = []
        with (
            NftlbClient(f"http://127.0.0.1:{port}", KEY, retries=3, sleep=delays.append) as c,
            pytest.raises(NftlbUnavailable, match="after 4 attempts"),
        ):
            c.get_farms()
        assert len(delays) == 3


class TestErrors:
    def test_reset_then_success(self, model: NftlbModel) -> None:
        handler = model.as_handler()
        calls = {"n": 0}

        def flaky(request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
            return handler(request)

        with NftlbClient(
            "http://nftlb", KEY, transport=httpx.MockTransport(flaky), sleep=lambda _: None
        ) as c:
            c.post_farms([make_farm(1)])
            assert calls["n"] == 3
            assert [f.name for f in c.get_farms().owned] == [make_farm(1).name]

    def test_timeout_is_not_retried(self) -> None:
        calls = {"n": 0}

        def slow(request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            raise httpx.ReadTimeout("timed out", request=request)

        with (
            NftlbClient("http://nftlb", KEY, transport=httpx.MockTransport(slow)) as c,
            pytest.raises(NftlbUnavailable, match="in time"),
        ):
            c.get_farms()
        assert calls["n"] == 1

    def test_401_never_shows_the_key(self) -> None:
        model = NftlbModel("the-right-key")
        transport = httpx.MockTransport(model.as_handler())
        with NftlbClient("http://nftlb", KEY, transport=transport) as c:
            with pytest.raises(NftlbUnauthorized) as info:
                c.get_farms()
            assert str(info.value) == UNAUTHORIZED_MESSAGE
            assert KEY not in repr(c)
            assert KEY not in str(info.value)
            assert info.value.__cause__ is None

    def test_lower_case_header_is_refused_by_the_model(self, model: NftlbModel) -> None:
        assert model.handle("GET", "/farms", b"", [("key", KEY)])[0] == 401
        assert model.handle("GET", "/farms", b"", [("Key", KEY + " ")])[0] == 401
        assert model.handle("GET", "/farms", b"", {"Key": KEY})[0] == 200

    def test_warning_in_a_200_is_an_error(self, client: NftlbClient) -> None:
        with pytest.raises(NftlbRejected) as info:
            client.send(Request("POST", "/farms", {"farms": [{"name": "f", "mode": "bogus"}]}))
        assert info.value.status == 200
        assert "Parsing unknown value 'bogus' in 'mode'" in info.value.response
        assert info.value.request == "POST /farms [f]"

    def test_rejections_carry_status_and_message(self, client: NftlbClient) -> None:
        with pytest.raises(NftlbRejected) as info:
            client.send(Request("POST", "/farms", {"farms": [{"name": "f", "foo": "x"}]}))
        assert (info.value.status, info.value.response) == (
            500,
            "error parsing buffer. Unknown key 'foo'",
        )

    def test_404_on_delete_is_success(self, client: NftlbClient, model: NftlbModel) -> None:
        farm = make_farm(1)
        client.delete_farm(farm.name)
        plan = Plan(
            (
                Operation(OpKind.DELETE_BACKEND, farm.name, target="b-gone"),
                Operation(OpKind.DELETE_FARM, farm.name),
            )
        )
        result = client.apply(plan)
        assert result.ok
        assert result.requests == 2
        assert [m for m, _ in model.requests] == ["DELETE"] * 3

    def test_unknown_farm_reads_as_absent(self, client: NftlbClient) -> None:
        assert client.get_farm(make_farm(1).name) == (False, None)

    def test_bad_key(self) -> None:
        for key in ("", "a\nb", " a", "a "):
            with pytest.raises(ValueError, match="one line"):
                NftlbClient("http://nftlb", key)

    def test_key_file(self, tmp_path: Path, model: NftlbModel) -> None:
        path = tmp_path / "key"
        path.write_text(KEY + "\n")
        transport = httpx.MockTransport(model.as_handler())
        with NftlbClient.from_key_file("http://nftlb", path, transport=transport) as c:
            assert c.get_farms() == ReadBack()


class TestApply:
    def test_creates_in_chunks(self, model: NftlbModel) -> None:
        farms = [make_farm(i) for i in range(7)]
        transport = httpx.MockTransport(model.as_handler())
        with NftlbClient("http://nftlb", KEY, transport=transport, chunk_size=3) as c:
            result = c.apply(creates(farms))
            assert result.ok
            assert result.requests == 3
            assert result.bytes_sent > 0
            assert c.get_farms().owned == tuple(sorted(farms, key=lambda f: f.name))

    def test_chunk_isolation(self, model: NftlbModel) -> None:
        """A bad farm in a chunk costs only itself: the others of its chunk still go in."""
        farms = [make_farm(i) for i in range(7)]
        bad = make_farm(4, weight=0)  # bypasses validation: nftlb answers 400 to weight 0
        assert validate_farms([bad])
        farms[4] = bad
        transport = httpx.MockTransport(model.as_handler())
        with NftlbClient("http://nftlb", KEY, transport=transport, chunk_size=3) as c:
            result = c.apply(creates(farms))
            assert [f.farm for f in result.failures] == [bad.name]
            failure = result.failures[0]
            assert failure.status == 400
            assert "weight" in failure.message
            assert failure.present  # partly applied, as nftlb does: read back after the error
            assert result.isolated_chunks == 1
            # 3 chunks + 3 single re-sends of the failed chunk + 1 GET of the failed farm
            assert result.requests == 7
            good = sorted((f for f in farms if f is not bad), key=lambda f: f.name)
            owned = c.get_farms().by_name()
            assert [owned[f.name] for f in good] == good

    def test_a_farms_upserts_and_retires_are_one_object_upserts_first(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        farms = [make_farm(i, backends=3) for i in range(2)]
        assert client.post_farms(farms).ok
        new = [
            evolve(f, backends=(*f.backends[:2], Backend("b-10.9.0.1-8080", "10.9.0.1", 8080)))
            for f in farms
        ]
        plan = diff(new, client.get_farms().owned)
        kinds = [op.kind for op in plan.main]
        assert kinds == [OpKind.UPSERT_BACKENDS] * 2 + [OpKind.RETIRE_BACKENDS] * 2
        sent: list[Any] = []
        handler = model.as_handler()

        def recording(request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                sent.append(json.loads(request.content))
            return handler(request)

        with NftlbClient("http://nftlb", KEY, transport=httpx.MockTransport(recording)) as c:
            assert c.apply(plan.main).ok
        (body,) = sent  # one POST for both farms
        for farm, obj in zip(farms, body["farms"], strict=True):
            assert obj["name"] == farm.name
            assert [(b["name"], b["state"]) for b in obj["backends"]] == [
                ("b-10.9.0.1-8080", "up"),
                (farm.backends[2].name, "down"),
            ]

    def test_a_refused_chunk_holding_a_takeover_is_not_sent_again(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        """nftlb applies a POST key by key before it refuses it, so the takeover may be done:
        sent again it would make a second backend under the new name."""
        good, other = make_farm(1), make_farm(2)
        assert client.post_farms([good, other]).ok
        spare = evolve(good.backends[1], port=0)
        held = evolve(good, backends=(good.backends[0], spare))
        new = Backend("b-10.9.0.1-8080", "10.9.0.1", 8080, 1, spare.mark)
        takeover = Operation(
            OpKind.UPSERT_BACKENDS,
            good.name,
            farm=held,
            backends=(new,),
            renames=((new.name, spare.name),),
        )
        bad = Operation(
            OpKind.UPSERT_BACKENDS,
            other.name,
            farm=other,
            backends=(evolve(other.backends[0], weight=0),),  # nftlb answers 400
        )
        before = len(model.requests)
        result = client.apply(Plan((takeover, bad)))
        assert {f.farm for f in result.failures} == {good.name, other.name}
        assert result.isolated_chunks == 1
        posts = [path for method, path in model.requests[before:] if method == "POST"]
        assert len(posts) == 2  # the chunk, then `bad` alone; the takeover not again

    def test_unsafe_operations_are_refused_and_the_rest_goes_in(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        good = make_farm(1)
        unsafe = evolve(make_farm(2), name="bad name")
        plan = Plan(
            (
                Operation(OpKind.DELETE_BACKEND, good.name, target=""),
                Operation(OpKind.CREATE_FARM, unsafe.name, farm=unsafe),
                Operation(OpKind.CREATE_FARM, good.name, farm=good),
            )
        )
        result = client.apply(plan)
        assert [(f.farm, f.status, f.present) for f in result.failures] == [
            (good.name, 0, False),
            ("bad name", 0, False),
        ]
        assert "refused before sending" in result.failures[0].message
        assert client.get_farms().owned == (good,)
        assert ("DELETE", f"/farms/{good.name}/backends/") not in model.requests

    def test_later_ops_of_a_failed_farm_are_skipped(self, client: NftlbClient) -> None:
        farm = make_farm(1)
        client.post_farms([farm])
        bad_backend = Backend("b-new", "10.9.9.9", 80, 0, 9)
        plan = Plan(
            (
                Operation(OpKind.UPSERT_BACKENDS, farm.name, backends=(bad_backend,)),
                Operation(OpKind.DELETE_BACKEND, farm.name, target=farm.backends[0].name),
            )
        )
        result = client.apply(plan)
        assert [(f.farm, f.kind) for f in result.failures] == [(farm.name, OpKind.UPSERT_BACKENDS)]
        present, actual = client.get_farm(farm.name)
        assert present
        assert actual is not None
        assert actual.backend(farm.backends[0].name) == farm.backends[0]  # not deleted

    def test_verify(self, client: NftlbClient, model: NftlbModel) -> None:
        farm = make_farm(1)
        seen: list[ReadBack] = []

        def still(read: ReadBack) -> Plan:
            seen.append(read)
            return Plan((Operation(OpKind.DELETE_FARM, "k8s.x.y.z.tcp.v4"),))

        with pytest.raises(NftlbVerifyError) as info:
            client.apply(creates([farm]), verify=still)
        assert len(info.value.remaining) == 1
        assert info.value.result.ok
        assert seen[0].owned == (farm,)
        before = len(model.requests)
        assert client.apply(Plan(), verify=lambda _: Plan()).requests == 0  # writes only
        assert model.requests[before:] == [("GET", "/farms")]

    def test_update_fields_and_frontend(self, client: NftlbClient, model: NftlbModel) -> None:
        """A new frontend is the farm's own virtual address changed in place: still one
        address object, named after the farm."""
        farm = make_farm(1)
        client.post_farms([farm])
        moved = evolve(farm.addresses[0], ip="192.168.1.5", port=30080)
        wanted = evolve(farm, addresses=(moved,), persistence=("srcip",))
        plan = diff([wanted], [farm])
        assert [(op.kind, op.fields) for op in plan] == [
            (OpKind.UPDATE_FARM, ("persistence", "addresses"))
        ]
        result = client.apply(plan)
        assert result.ok
        assert (result.requests, result.repairs) == (1, 0)
        assert client.get_farms().owned == (wanted,)
        assert list(model.addresses) == [address_name(farm.name)]


def v6_farm(i: int, **fields: Any) -> Farm:
    name = farm_name(FarmKey("ns", f"v6-{i}", "http", Protocol.TCP, Family.IPV6))
    address = Address(address_name(name), Family.IPV6, f"fd00::{i:x}", 80, Protocol.TCP)
    backends = (Backend(backend_name(f"fd01::{i:x}", 8080), f"fd01::{i:x}", 8080, 1, i),)
    farm = Farm(name, Family.IPV6, Protocol.TCP, (address,), backends, **fields)
    assert validate_farm(farm) == []
    return farm


def kernel_intact(model: NftlbModel) -> bool:
    """In the model: no farm has lost its rules to another IPv6 farm's stop."""
    return all(f.rules for f in model.farms.values())


class Recorder:
    """Wraps the model's handler and keeps (method, path, body) of every request."""

    def __init__(self, model: NftlbModel) -> None:
        self.handler = model.as_handler()
        self.seen: list[tuple[str, str, Any]] = []
        self.fail: Callable[[httpx.Request], bool] = lambda _: False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        body = json.loads(content) if content else None
        self.seen.append((request.method, request.url.path, body))
        if self.fail(request):
            return httpx.Response(400, content=b'{"response": "error parsing buffer"}')
        return self.handler(request)


@pytest.fixture
def recorder(model: NftlbModel) -> Recorder:
    return Recorder(model)


@pytest.fixture
def recorded(recorder: Recorder) -> Iterator[NftlbClient]:
    transport = httpx.MockTransport(recorder)
    with NftlbClient("http://nftlb", KEY, transport=transport, sleep=lambda _: None) as c:
        yield c


class TestWipesIpv6:
    @pytest.mark.parametrize(
        ("fields", "wipes"),
        [
            (("mode",), True),
            (("persistence",), True),
            (("persist_ttl",), True),
            (("helper",), True),
            (("log",), True),
            (("intra_connect",), True),
            (("addresses",), True),
            (("scheduler", "sched_param"), False),
            (("est_connlimit",), False),
            (("scheduler", "est_connlimit", "log"), True),
            ((), False),
        ],
    )
    def test_update_fields(self, fields: tuple[str, ...], wipes: bool) -> None:
        farm = v6_farm(1)
        assert (
            wipes_ipv6(Operation(OpKind.UPDATE_FARM, farm.name, farm=farm, fields=fields)) is wipes
        )
        v4 = make_farm(1)
        assert not wipes_ipv6(Operation(OpKind.UPDATE_FARM, v4.name, farm=v4, fields=fields))

    def test_other_kinds(self) -> None:
        v6, v4 = v6_farm(1), make_farm(1)
        assert wipes_ipv6(Operation(OpKind.DELETE_FARM, v6.name))
        assert not wipes_ipv6(Operation(OpKind.DELETE_FARM, v4.name))
        # A shortened name does not tell the family: a delete of one may wipe.
        assert wipes_ipv6(Operation(OpKind.DELETE_FARM, "k8s.a-very-long-name.habcdefghijk"))
        for op in (
            Operation(OpKind.CREATE_FARM, v6.name, farm=v6),
            Operation(OpKind.UPSERT_BACKENDS, v6.name, farm=v6, backends=v6.backends),
            Operation(OpKind.DELETE_BACKEND, v6.name, target=v6.backends[0].name),
        ):
            assert not wipes_ipv6(op)


class TestIpv6Repair:
    """nftlb 1.0.7 drops every other IPv6 farm's rules when it stops one IPv6 farm's rules;
    `apply` makes it rebuild them (tests/e2e/test_nftlb_client_e2e.py checks the kernel)."""

    def test_deleting_one_of_two_ipv6_farms_repairs_the_other(
        self, recorded: NftlbClient, recorder: Recorder, model: NftlbModel
    ) -> None:
        a, b, v4 = v6_farm(1), v6_farm(2, est_connlimit=5), make_farm(1)
        recorded.post_farms([a, b, v4])
        recorder.seen.clear()
        result = recorded.apply(diff([b, v4], recorded.get_farms().owned))
        assert result.ok
        assert (result.repairs, result.requests) == (1, 1 + 1 + 2)  # DELETE, GET, 2 POSTs
        assert kernel_intact(model)
        assert model.recoveries == 1
        assert recorder.seen[1:] == [
            ("DELETE", f"/farms/{a.name}", None),
            ("GET", "/farms", None),
            (
                "POST",
                "/farms",
                {"farms": [{**marked_body(b.name), "est-connlimit": "0"}]},
            ),
            (
                "POST",
                "/farms",
                {"farms": [{**marked_body(b.name), "est-connlimit": "5"}]},
            ),
        ]
        assert recorded.get_farms().owned == tuple(sorted([b, v4], key=lambda f: f.name))

    def test_without_the_repair_the_model_stays_wiped(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        a, b = v6_farm(1), v6_farm(2)
        client.post_farms([a, b])
        client.delete_farm(a.name)
        assert not model.farms[b.name].rules
        # Re-posting the same values changes nothing in nftlb, so it repairs nothing.
        client.send(Request("POST", "/farms", {"farms": [{"name": b.name, "est-connlimit": "0"}]}))
        client.post_farms([b])
        assert not model.farms[b.name].rules
        assert model.recoveries == 0

    def test_several_triggers_repair_before_each_wiped_farm_is_reached(
        self, recorded: NftlbClient, recorder: Recorder, model: NftlbModel
    ) -> None:
        """Deleting a wiped farm would leave its rules in the kernel for good, and a farm-level
        change of one would fail with 404: the repair comes first."""
        farms = [v6_farm(i) for i in range(1, 6)]
        recorded.post_farms(farms)
        one, two, three, four, five = farms
        wanted = [evolve(three, mode=Mode.DNAT), evolve(four, persistence=("srcip",)), five]
        plan = diff(wanted, recorded.get_farms().owned)
        assert [(op.kind, op.farm_name) for op in plan] == [
            (OpKind.DELETE_FARM, one.name),
            (OpKind.DELETE_FARM, two.name),
            (OpKind.UPDATE_FARM, three.name),
            (OpKind.UPDATE_FARM, four.name),
        ]
        recorder.seen.clear()
        result = recorded.apply(plan)
        assert result.ok, result.failures
        assert result.repairs == 4  # before two, three and four, and after four
        assert kernel_intact(model)
        assert recorded.get_farms().owned == tuple(sorted(wanted, key=lambda f: f.name))
        targets = [body["farms"][0]["name"] for m, _, body in recorder.seen if m == "POST"]
        assert targets == [
            two.name, two.name,
            three.name, three.name, three.name,  # the repair, then the change itself
            four.name, four.name, four.name,
            three.name, three.name,  # four is intact after its change: the first other one
        ]  # fmt: skip

    def test_a_plan_without_triggers_sends_no_repair(
        self, recorded: NftlbClient, recorder: Recorder, model: NftlbModel
    ) -> None:
        a, b, v4 = v6_farm(1), v6_farm(2), make_farm(1)
        recorded.post_farms([a, b, v4])
        new = Backend(backend_name("fd01::99", 80), "fd01::99", 80, 1, 99)
        wanted = [
            evolve(a, scheduler=Scheduler.HASH, sched_param=("srcip",), est_connlimit=3),
            evolve(b, backends=(new,)),
            evolve(v4, mode=Mode.DNAT),
        ]
        plan = diff(wanted, recorded.get_farms().owned)
        recorder.seen.clear()
        result = recorded.apply(plan)
        assert result.ok
        assert result.repairs == 0
        assert ("GET", "/farms", None) not in recorder.seen
        assert kernel_intact(model)

    def test_ipv4_deletes_and_changes_send_no_repair(
        self, recorded: NftlbClient, recorder: Recorder
    ) -> None:
        a, v4, other = v6_farm(1), make_farm(1), make_farm(2)
        recorded.post_farms([a, v4, other])
        plan = diff([a, evolve(other, persistence=("srcip",))], recorded.get_farms().owned)
        recorder.seen.clear()
        result = recorded.apply(plan)
        assert (result.ok, result.repairs, result.requests) == (True, 0, 2)

    def test_no_repair_when_no_ipv6_farm_is_left_or_all_are_new(
        self, recorded: NftlbClient, model: NftlbModel
    ) -> None:
        a, b, c = v6_farm(1), v6_farm(2), v6_farm(3)
        recorded.post_farms([a, make_farm(1)])
        result = recorded.apply(diff([b, c, make_farm(1)], recorded.get_farms().owned))
        # the delete wipes the ip6 table; the farms created after it get their rules
        assert (result.ok, result.repairs) == (True, 0)
        assert result.requests == 1 + 1 + 1  # DELETE, one POST for both, GET
        assert kernel_intact(model)

    def test_foreign_ipv6_farms_are_never_the_target(
        self, recorded: NftlbClient, recorder: Recorder
    ) -> None:
        a = v6_farm(1)
        recorded.post_farms([a])
        foreign = {
            "name": "lb6",
            "family": "ipv6",
            "virtual-addr": "fd00::99",
            "virtual-ports": "80",
            "protocol": "tcp",
        }
        recorded.send(Request("POST", "/farms", {"farms": [foreign]}))
        recorder.seen.clear()
        result = recorded.apply(Plan((Operation(OpKind.DELETE_FARM, a.name),)))
        assert (result.ok, result.repairs) == (True, 0)
        assert [m for m, _, _ in recorder.seen] == ["DELETE", "GET"]

    def test_an_ipv6_farm_left_off_is_never_the_target(
        self, recorded: NftlbClient, recorder: Recorder
    ) -> None:
        """A farm turned off (`Operation.stop_first`) whose update then failed has no rules
        to rebuild; an est-connlimit change would start it behind GET's back."""
        a, b = v6_farm(1), v6_farm(2)
        recorded.post_farms([a, b])
        recorded.send(
            Request("POST", "/farms", {"farms": [{**marked_body(b.name), "state": "off"}]})
        )
        recorder.seen.clear()
        result = recorded.apply(Plan((Operation(OpKind.DELETE_FARM, a.name),)))
        assert (result.ok, result.repairs) == (True, 0)
        assert [m for m, _, _ in recorder.seen] == ["DELETE", "GET"]

    def test_a_delete_of_unknown_family_is_checked_with_get(
        self, recorded: NftlbClient, recorder: Recorder, model: NftlbModel
    ) -> None:
        """A shortened name does not tell the family: the end-of-plan GET decides."""
        short = "k8s.some-namespace.some-long-service-name.http.tcp.hxxxxxxxxxxx"
        v4 = evolve(
            make_farm(1),
            name=short,
            addresses=(evolve(make_farm(1).addresses[0], name=address_name(short)),),
        )
        recorded.post_farms([v4, make_farm(2)])
        recorder.seen.clear()
        result = recorded.apply(Plan((Operation(OpKind.DELETE_FARM, short),)))
        assert (result.ok, result.repairs) == (True, 0)
        assert [m for m, _, _ in recorder.seen] == ["DELETE", "GET"]

    def test_a_failed_repair_is_a_failure_of_its_target(
        self, recorded: NftlbClient, recorder: Recorder, model: NftlbModel
    ) -> None:
        a, b = v6_farm(1), v6_farm(2)
        recorded.post_farms([a, b])
        recorder.fail = lambda r: r.method == "POST" and b"est-connlimit" in r.read()
        result = recorded.apply(Plan((Operation(OpKind.DELETE_FARM, a.name),)))
        assert result.repairs == 1
        assert [(f.farm, f.kind, f.status) for f in result.failures] == [
            (b.name, OpKind.UPDATE_FARM, 400)
        ]
        assert result.failures[0].message.startswith("IPv6 repair: ")
        assert not kernel_intact(model)

    def test_a_wiped_farm_changed_without_the_repair_fails_like_nftlb(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        """The model's side of what the repair avoids: a farm-level change of a wiped IPv6
        farm answers 404, is not applied, and makes nftlb rebuild everything."""
        a, b = v6_farm(1), v6_farm(2)
        client.post_farms([a, b])
        client.send(
            Request("POST", "/farms", {"farms": [update_body(evolve(a, mode=Mode.DNAT), ["mode"])]})
        )
        assert (model.farms[a.name].rules, model.farms[b.name].rules) == (True, False)
        with pytest.raises(NftlbRejected) as info:
            client.send(
                Request(
                    "POST", "/farms", {"farms": [update_body(evolve(b, mode=Mode.DNAT), ["mode"])]}
                )
            )
        assert (info.value.status, info.value.response) == (404, "the object to modify is unknown")
        assert model.recoveries == 1
        assert kernel_intact(model)
        assert client.get_farms().by_name()[b.name] == b  # not applied


class TestModelQuirks:
    def test_multi_address_farm_changes_fail_like_nftlb(
        self, client: NftlbClient, model: NftlbModel
    ) -> None:
        """nftlb 1.0.7 cannot stop the rules of a live farm with several addresses: a
        farm-level change of one that has persistence (or a helper, an est-connlimit set, a
        forward log) answers 404 and is not applied; the model does the same. The reconciler
        never makes such farms (validate_farm refuses them, and read-back reports them
        unparsable), so they are sent here as raw bodies."""
        farm = evolve(make_farm(1), persistence=("srcip",))
        second = Address("k8s-a2", Family.IPV4, "192.168.1.5", 30080, Protocol.TCP)
        assert validate_farms([evolve(farm, addresses=(*farm.addresses, second))])

        def with_second(body: dict[str, Any]) -> Request:
            extra = {"name": second.name, "family": "ipv4", "ip-addr": second.ip}
            extra |= {"ports": str(second.port), "protocol": "tcp"}
            return Request("POST", "/farms", {"farms": [body | {"addresses": [extra]}]})

        client.send(with_second(farm_body(farm)))  # creating it with both at once is fine
        assert client.get_farms().unparsable == (farm.name,)

        def mode(name: str) -> str:
            (entry,) = [f for f in client.get_farms_document()["farms"] if f["name"] == name]
            return str(entry["mode"])

        with pytest.raises(NftlbRejected) as info:
            client.send(Request("POST", "/farms", {"farms": [{"name": farm.name, "mode": "dnat"}]}))
        assert (info.value.status, info.value.response) == (404, "the object to modify is unknown")
        assert mode(farm.name) == "snat"  # not applied
        plain = make_farm(2)
        client.send(with_second(farm_body(plain) | {"virtual-addr": "10.99.0.2"}))
        client.send(Request("POST", "/farms", {"farms": [{"name": plain.name, "mode": "dnat"}]}))
        assert mode(plain.name) == "dnat"  # applied, after a full rebuild in nftlb
        assert model.recoveries == 2


def test_backend_upserts_of_several_farms_share_a_post_and_a_refused_farm_is_isolated(
    model: NftlbModel,
) -> None:
    farms = [make_farm(i, backends=1) for i in range(3)]
    handler = model.as_handler()
    seen: list[int] = []
    refuse = [False]

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            names = [f["name"] for f in json.loads(request.content)["farms"]]
            seen.append(len(names))
            if refuse[0] and farms[1].name in names:
                return httpx.Response(400, content=b'{"response": "error parsing buffer"}')
        return handler(request)

    with NftlbClient("http://nftlb", KEY, transport=httpx.MockTransport(refusing)) as c:
        assert c.post_farms(farms).ok
        wanted = [make_farm(i, backends=2) for i in range(3)]
        plan = diff(wanted, c.get_farms().owned)
        assert [op.kind for op in plan] == [OpKind.UPSERT_BACKENDS] * 3
        seen.clear()
        refuse[0] = True
        result = c.apply(plan)
        assert seen[0] == 3, "one POST for the three farms first"
        assert [f.farm for f in result.failures] == [farms[1].name]
        got = c.get_farms().by_name()
    assert len(got[farms[0].name].backends) == len(got[farms[2].name].backends) == 2
    assert len(got[farms[1].name].backends) == 1
