"""The agent's HTTP servers are bounded: no thread per connection, a deadline per request, a cap
on open connections, and a stop that does not wait for idle clients (issue 16 item 6)."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from reconciler.agent.http import (
    AddressError,
    HttpServers,
    Request,
    Response,
    parse_address,
)
from reconciler.agent.metrics import HealthServer, Metrics

IDLE = 1000


def _ok(request: Request) -> Response:
    return Response(200, f"path={request.path}\n".encode())


@pytest.fixture
def servers() -> Iterator[HttpServers]:
    s = HttpServers(max_connections=64, read_timeout=60.0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _get(port: int, path: str = "/x") -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _enough_files(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard < n and hard != resource.RLIM_INFINITY:
            pytest.skip(f"needs {n} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def test_answers_and_closes(servers: HttpServers) -> None:
    listener = servers.listen("127.0.0.1", 0, _ok)
    status, body, headers = _get(listener.port, "/any/path?q=1")
    assert (status, body) == (200, b"path=/any/path?q=1\n")
    assert headers["Connection"] == "close"
    assert headers["Content-Length"] == str(len(body))


def test_head_has_no_body_and_other_methods_are_refused(servers: HttpServers) -> None:
    port = servers.listen("127.0.0.1", 0, _ok).port
    head = _raw(port, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.endswith(b"\r\n\r\n")
    post = _raw(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 ")


def test_garbage_and_huge_headers_get_a_client_error(servers: HttpServers) -> None:
    port = servers.listen("127.0.0.1", 0, _ok).port
    assert _raw(port, b"\x00\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    answer = _raw(port, huge)
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b""


def test_a_failing_handler_is_a_500_and_the_server_goes_on(servers: HttpServers) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    port = servers.listen("127.0.0.1", 0, broken).port
    assert _get(port)[0] == 500
    assert _get(port)[0] == 500


def test_a_slow_client_is_cut_at_the_deadline() -> None:
    s = HttpServers(read_timeout=0.3)
    s.start()
    try:
        port = s.listen("127.0.0.1", 0, _ok).port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its headers
            assert c.recv(100) == b""  # closed by the server, long before our 10 s
        assert s.open_connections == 0
    finally:
        s.stop()


def test_idle_connections_cost_no_threads_and_never_lock_a_probe_out(
    servers: HttpServers,
) -> None:
    _enough_files(IDLE * 2 + 256)
    port = servers.listen("127.0.0.1", 0, _ok).port
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
    try:
        # All accepted (the cap closes the oldest), and a real request is still answered.
        assert _get(port)[0] == 200
        assert threading.active_count() <= threads  # none per connection (other tests' may end)
        assert servers.open_connections <= servers.max_connections
        assert servers.evicted >= IDLE - servers.max_connections
    finally:
        for c in idle:
            c.close()


def test_stop_closes_idle_connections_at_once() -> None:
    _enough_files(512)
    s = HttpServers(max_connections=300, read_timeout=600.0)
    s.start()
    port = s.listen("127.0.0.1", 0, _ok).port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
    deadline = time.monotonic() + 5
    while s.open_connections < len(idle) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.open_connections == len(idle)
    s.stop()
    try:
        # Each client sees the end of its connection now, not after the 600 s read timeout
        # (recv would raise TimeoutError after 5 s if the server still held it).
        for c in idle:
            with contextlib.suppress(ConnectionResetError):
                assert c.recv(10) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        for c in idle:
            c.close()


def test_a_closed_listener_frees_its_port(servers: HttpServers) -> None:
    listener = servers.listen("127.0.0.1", 0, _ok)
    port = listener.port
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = servers.listen("127.0.0.1", port, _ok)
    assert _get(again.port)[0] == 200


def test_a_port_in_use_is_an_oserror(servers: HttpServers) -> None:
    taken = servers.listen("127.0.0.1", 0, _ok).port
    with pytest.raises(OSError, match="in use"):
        servers.listen("127.0.0.1", taken, _ok)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:10256", ("0.0.0.0", 10256)),
        ("[::]:10256", ("::", 10256)),
        (":10256", ("", 10256)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["10256", "host:", "a:b", "1.2.3.4:70000", ""])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(AddressError, match="host:port"):
        parse_address(text)


def test_metrics_server_paths() -> None:
    live = {"v": True}
    server = HealthServer(Metrics(), "127.0.0.1:0", lambda: live["v"], lambda: False)
    server.start()
    try:
        assert _get(server.port, "/healthz")[:2] == (200, b"ok\n")
        assert _get(server.port, "/readyz")[0] == 503
        assert b"kube_nftlb_sync_duration_seconds" in _get(server.port, "/metrics")[1]
        assert _get(server.port, "/nope")[0] == 404
        live["v"] = False
        assert _get(server.port, "/healthz")[0] == 503
    finally:
        server.stop()
