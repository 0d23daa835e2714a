"""Every HTTP endpoint of the agent, served by one asyncio loop in one thread.

`http.server` makes a thread per connection and waits for a request without end: 1,000 idle
connections made 1,006 threads and held SIGTERM for 12 s (issue 16). Here one thread serves all
listeners (metrics, the proxy health server, each healthCheckNodePort); a connection has one
deadline for its whole request and answer, the number of open connections is capped (beyond it
the oldest is closed), and `stop()` closes every listener and connection together.
So an idle or slow client costs a socket for at most `read_timeout`, never a thread. h11 parses
the requests (a library that does HTTP/1.1 framing and its limits properly); every answer closes
its connection, as the probes and load balancers that call these endpoints expect nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import h11
from attrs import frozen

#: Bytes of request line and headers accepted; more is a 431-like refusal (h11's own bound).
MAX_REQUEST_BYTES = 16 * 1024


class AddressError(ValueError):
    """A listen address that is not host:port."""


def parse_address(address: str) -> tuple[str, int]:
    """("host", port) from "host:port", "[v6]:port" or ":port" (all addresses)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"{address!r} is not host:port (e.g. 0.0.0.0:10256 or [::]:10256)")
    return host.strip("[]"), int(port)


@frozen
class Request:
    method: str
    path: str


@frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


class Listener:
    """One bound listener; `close()` stops it (its open connections finish or time out)."""

    def __init__(self, owner: HttpServers, server: asyncio.Server) -> None:
        self._owner, self._server = owner, server

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._owner.call(self._close)

    async def _close(self) -> None:
        self._server.close()


class HttpServers:
    """The agent's HTTP servers: `start()`, `listen(host, port, handler)`, `stop()`.

    Handlers run in the loop thread and must be quick (they read values, they do no I/O).
    """

    def __init__(self, max_connections: int = 256, read_timeout: float = 5.0) -> None:
        self.max_connections, self.read_timeout = max_connections, read_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)
        self._writers: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._servers: set[asyncio.Server] = set()
        self.evicted = 0

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def call(self, coro: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run a coroutine function in the loop thread and wait for its result."""
        if not self._thread.is_alive():
            raise RuntimeError("the HTTP servers are not running")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro(), self._loop)
        return future.result(timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        """Bind host:port ("" for every address); OSError when it cannot be bound."""

        async def bind() -> asyncio.Server:
            server = await asyncio.start_server(
                lambda r, w: self._serve(handler, r, w),
                host or None,
                port,
                reuse_address=True,
                backlog=1024,
                limit=MAX_REQUEST_BYTES,
            )
            self._servers.add(server)
            return server

        return Listener(self, self.call(bind))

    def stop(self) -> None:
        """Close every listener and every open connection at once, then end the thread."""
        if not self._thread.is_alive():
            return

        async def close_all() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._servers.clear()

        with contextlib.suppress(Exception):
            self.call(close_all, timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    # -- one connection -----------------------------------------------------------------------

    async def _serve(
        self, handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while len(self._writers) >= self.max_connections:
            # The oldest connection has had the longest to send its request: drop it, so a
            # flood of idle connections can delay a probe but never lock it out.
            oldest = next(iter(self._writers))
            del self._writers[oldest]
            oldest.transport.abort()
            self.evicted += 1
        self._writers[writer] = None
        try:
            async with asyncio.timeout(self.read_timeout):
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
                request = await self._read(conn, reader)
                if request is None:
                    return
                if isinstance(request, Response):
                    response, head = request, False
                else:
                    response, head = self._answer(handler, request), request.method == "HEAD"
                writer.write(self._encode(response, head))
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._writers.pop(writer, None)
            writer.close()

    @staticmethod
    async def _read(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | Response | None:
        """The request, a 400/431 to send, or None when the client went away."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint
                return Response(status, f"bad request: {e}\n".encode())
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(4096))
                continue
            if isinstance(event, h11.Request):
                target = event.target.decode("ascii", "replace")
                return Request(event.method.decode("ascii", "replace"), target)
            return None

    @staticmethod
    def _answer(handler: Handler, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        try:
            return handler(request)
        except Exception as e:  # a bug in one handler must not take the server down
            return Response(500, f"internal error: {type(e).__name__}\n".encode())

    @staticmethod
    def _encode(response: Response, head: bool) -> bytes:
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            *response.headers,
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (b"" if head else response.body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
