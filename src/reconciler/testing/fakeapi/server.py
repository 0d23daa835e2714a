"""The HTTP front of the fake, and ``FakeApiServer`` with its test hooks.

One ``ThreadingHTTPServer`` thread per connection; a watch holds its connection and writes
hand-made chunks, one JSON event plus ``\\n`` per chunk, flushed per event.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ApiError, JsonDict, bad_request
from .resources import ResourceType, by_kind, by_path, dig
from .selectors import FieldSelector, LabelSelector
from .store import CLOSE, DROP, Expired, StatusMode, Store, Watcher, parse_rv, too_large

log = logging.getLogger(__name__)

_TICK = 0.05
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*"}
)


class RequestRecord(NamedTuple):
    """One request as the fake saw it, for assertions on what a client sent."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class _Failure:
    verb: str
    code: int
    path_contains: str | None
    message: str | None
    times: int


@dataclass
class _Lines:
    """Raw lines a watch sends before its real events (poison: not JSON, no object, ...)."""

    lines: tuple[bytes, ...]
    path_contains: str | None
    times: int
    close: bool  # end the watch cleanly right after them


@dataclass
class _Hang:
    verb: str
    seconds: float
    path_contains: str | None
    times: int


@dataclass(frozen=True)
class _Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_bool(name: str, value: str) -> bool:
    """Go's ``strconv.ParseBool``: clients <=36 send ``watch=True``, 37 sends ``true``."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad_request(f'{name}: Invalid value: "{value}": strconv.ParseBool: invalid syntax')


def _route(path: str) -> _Route:
    parts = [unquote(p) for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _no_such_path()
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rtype = by_path(group, version, rest[0]) if 1 <= len(rest) <= 3 else None
    if rtype is None or (namespace is not None and not rtype.namespaced):
        raise _no_such_path()
    name = rest[1] if len(rest) > 1 else None
    if name is not None and rtype.namespaced and namespace is None:
        raise _no_such_path()
    subresource = rest[2] if len(rest) > 2 else None
    if subresource is not None and (subresource != "status" or not rtype.status_subresource):
        raise _no_such_path()
    return _Route(rtype, namespace, name, subresource)


def _no_such_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def _line(event_type: str, obj: JsonDict) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeApiServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (or being dropped by a hook) are routine, not worth a traceback."""
        log.debug("fakeapi: connection from %s ended abruptly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    # ------------------------------------------------------------ plumbing

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus delayed ACKs
        # add tens of milliseconds to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fakeapi: " + format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send_json(self, code: int, body: JsonDict, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: ApiError) -> None:
        headers = {"Retry-After": "1"} if error.code == 429 else {}
        self._send_json(error.code, error.status(), headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw: bytes, *, required: bool = True) -> Any:
        if not raw:
            if required:
                raise bad_request("the request body is empty")
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from None

    # ------------------------------------------------------------ dispatch

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._body()
        fake._record(RequestRecord(method, url.path, query))
        try:
            route: _Route | ApiError
            try:
                route = _route(url.path)
            except ApiError as exc:
                route = exc
            verb = self._verb(method, route if isinstance(route, _Route) else None, query)
            hang = fake._take_hang(verb, self.path)
            if hang:
                time.sleep(hang)  # the client's timeout, if it has one, ends it first
            failure = fake._take_failure(verb, self.path)
            if failure is not None:
                if verb == "watch" and failure.code == 410:
                    self._watch_expired(failure.message)
                    return
                raise failure
            if isinstance(route, ApiError):
                raise route
            self._dispatch(verb, route, query, raw)
        except ApiError as exc:
            self._send_error(exc)
        except OSError:  # the client went away mid-request
            self.close_connection = True
        except Exception as exc:
            log.exception("fakeapi: internal error on %s %s", method, self.path)
            self._send_error(ApiError(500, f"fake API server bug: {exc!r}"))

    @staticmethod
    def _verb(method: str, route: _Route | None, query: Mapping[str, str]) -> str:
        if method == "GET":
            if "watch" in query and parse_bool("watch", query["watch"]):
                return "watch"
            return "get" if route is not None and route.name is not None else "list"
        if method == "DELETE":
            return "delete" if route is None or route.name is not None else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]

    def _dispatch(self, verb: str, route: _Route, query: Mapping[str, str], raw: bytes) -> None:
        fake = self.server.fake
        store = fake._store
        rtype, ns, name = route.rtype, route.namespace, route.name
        mode: StatusMode = "status" if route.subresource else "spec"
        if not rtype.status_subresource:
            mode = "all"
        if "dryRun" in query:
            raise bad_request("the fake API server does not support dryRun")
        if verb in ("create", "deletecollection") and ns is None and rtype.namespaced:
            raise ApiError(405, f"{verb} is not supported on the all-namespaces path")
        if verb in ("create",) and name is not None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if verb in ("update", "patch") and name is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")

        if verb == "get":
            assert name is not None
            self._send_json(200, rtype.external(store.get(rtype, ns, name), with_kind=True))
        elif verb == "list":
            self._list(route, query)
        elif verb == "watch":
            self._watch(route, query)
        elif verb == "create":
            obj = store.create(rtype, ns, self._json(raw), status_mode=mode)
            self._send_json(201, rtype.external(obj, with_kind=True))
        elif verb == "update":
            assert name is not None
            obj, created = store.update(rtype, ns, name, self._json(raw), status_mode=mode)
            self._send_json(201 if created else 200, rtype.external(obj, with_kind=True))
        elif verb == "patch":
            assert name is not None
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch_type = _PATCH_TYPES.get(content_type.lower())
            if patch_type is None:
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(_PATCH_TYPES)}",
                )
            obj, created = store.patch(
                rtype,
                ns,
                name,
                patch_type,
                self._json(raw),
                status_mode=mode,
                field_manager=query.get("fieldManager"),
            )
            self._send_json(201 if created else 200, rtype.external(obj, with_kind=True))
        elif verb == "delete":
            assert name is not None
            options = self._json(raw, required=False)
            obj, gone = store.delete(rtype, ns, name, options if isinstance(options, dict) else {})
            if gone and not rtype.delete_returns_object:
                details = rtype.details(name, uid=obj["metadata"]["uid"])
                self._send_json(200, _success(details))
            else:
                self._send_json(200, rtype.external(obj, with_kind=True))
        else:  # deletecollection
            labels, fields = self._selectors(rtype, query)
            items, _ = store.select(rtype, ns, labels, fields)
            for item in items:
                meta = item["metadata"]
                with contextlib.suppress(ApiError):  # raced with another delete
                    store.delete(rtype, meta.get("namespace"), meta["name"])
            self._send_json(200, _success({}))

    @staticmethod
    def _selectors(
        rtype: ResourceType, query: Mapping[str, str]
    ) -> tuple[LabelSelector, FieldSelector]:
        labels = LabelSelector.parse(query.get("labelSelector"))
        fields = FieldSelector.parse(query.get("fieldSelector"))
        rtype.check_field_labels(fields.fields())
        return labels, fields

    def _list(self, route: _Route, query: Mapping[str, str]) -> None:
        """List at the current RV; ``limit``/``continue`` are ignored (allowed by the API)."""
        rtype = route.rtype
        store = self.server.fake._store
        labels, fields = self._selectors(rtype, query)
        requested = query.get("resourceVersion") or ""
        match = query.get("resourceVersionMatch") or ""
        if match and not requested:
            raise bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        items, rv = store.select(rtype, route.namespace, labels, fields)
        if requested and requested != "0":
            wanted = parse_rv(requested)
            if wanted > rv:
                raise too_large(wanted, rv)
            if match == "Exact" and wanted != rv:
                raise ApiError(410, f"too old resource version: {wanted} ({rv})", reason="Expired")
        self._send_json(
            200,
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": [rtype.external(item, with_kind=False) for item in items],
            },
        )

    # ------------------------------------------------------------ watch

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _watch_expired(self, message: str | None) -> None:
        """A 410 as the real server sends it to a watch: HTTP 200, one ERROR event, clean end."""
        error = ApiError(410, message or "too old resource version", reason="Expired")
        self._start_stream()
        self._chunk(_line("ERROR", error.status()))
        self._end_stream()

    def _watch(self, route: _Route, query: Mapping[str, str]) -> None:
        fake = self.server.fake
        rtype = route.rtype
        labels, fields = self._selectors(rtype, query)
        if route.name is not None:
            fields = fields.with_name(route.name)
        bookmarks = parse_bool("allowWatchBookmarks", query.get("allowWatchBookmarks", "false"))
        initial = parse_bool("sendInitialEvents", query.get("sendInitialEvents", "false"))
        timeout = fake.default_watch_timeout
        if query.get("timeoutSeconds"):
            try:
                requested = int(query["timeoutSeconds"])
            except ValueError:
                raise bad_request("timeoutSeconds must be an integer") from None
            if requested > 0:  # 0 means "the server's default", as on a real server
                timeout = float(requested)
        try:
            watcher = fake._store.open_watch(
                rtype,
                route.namespace,
                labels,
                fields,
                resource_version=query.get("resourceVersion"),
                bookmarks=bookmarks,
                send_initial_events=initial,
                sock=self.connection,
            )
        except Expired as exc:
            self._watch_expired(str(exc))
            return
        injected = fake._take_lines(self.path)
        try:
            self._stream(watcher, timeout, injected)
        finally:
            fake._store.close_watch(watcher)

    def _stream(self, watcher: Watcher, timeout: float, injected: _Lines | None = None) -> None:
        """Drain the watcher's queue until timeout, close, drop or client hang-up."""
        store = self.server.fake._store
        deadline = time.monotonic() + timeout
        bookmark_at = deadline - min(1.0, timeout / 4) if watcher.bookmarks else math.inf
        clean = True
        try:
            self._start_stream()
            for line in injected.lines if injected is not None else ():
                self._chunk(line.rstrip(b"\n") + b"\n")
            while not (injected is not None and injected.close):
                now = time.monotonic()
                if watcher.dropped:
                    clean = False
                    break
                if now < watcher.stall_until:
                    time.sleep(min(_TICK, watcher.stall_until - now))
                    continue
                if watcher.terminate or now >= deadline:
                    break
                if now >= bookmark_at:
                    bookmark_at = math.inf
                    store.bookmark(watcher)
                    continue
                try:
                    event_type, obj = watcher.queue.get(
                        timeout=max(0.0, min(_TICK, deadline - now, bookmark_at - now))
                    )
                except queue.Empty:
                    if self._peer_closed():
                        clean = False
                        break
                    continue
                if event_type == DROP:
                    clean = False
                    break
                if event_type == CLOSE:
                    break
                while time.monotonic() < watcher.stall_until and not watcher.dropped:
                    time.sleep(_TICK)  # a stall that began while we waited holds this event too
                if watcher.dropped:
                    clean = False
                    break
                if event_type in ("ADDED", "MODIFIED", "DELETED"):
                    obj = watcher.rtype.external(obj, with_kind=True)
                self._chunk(_line(event_type, obj))
            if clean:
                store.close_watch(watcher)  # gone from watch_count before the client sees the end
                self._end_stream()
        except OSError:
            clean = False
        if not clean:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _peer_closed(self) -> bool:
        """True once the client has hung up (end of stream on a non-blocking peek)."""
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return peeked == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _success(details: JsonDict) -> JsonDict:
    body: JsonDict = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    return body


class FakeApiServer:
    """An in-process Kubernetes API server for tests; see the package docstring for scope.

    ``with FakeApiServer() as fake:`` then point ``kubernetes.client.Configuration.host`` at
    ``fake.url``. Hooks act on the same state, with the same semantics and watch events, as
    the HTTP verbs; they return and accept plain dicts with ``kind`` and ``apiVersion``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 1000,
        default_watch_timeout: float = 60.0,
        watch_queue_size: int = 10_000,
        request_log_size: int = 100_000,
    ) -> None:
        self._address = (host, port)
        self.default_watch_timeout = default_watch_timeout
        self._store = Store(history_size=history_size, watch_queue_size=watch_queue_size)
        self._requests: deque[RequestRecord] = deque(maxlen=request_log_size)
        self._failures: list[_Failure] = []
        self._hangs: list[_Hang] = []
        self._injections: list[_Lines] = []
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeApiServer:
        """Bind and serve from a daemon thread; idempotent."""
        if self._httpd is None:
            self._httpd = _HTTPServer(self._address, self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fakeapi",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch cleanly, stop serving and close every connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        with self._store.lock:
            for watcher in self._store.watchers:
                watcher.push((CLOSE, {}))
        httpd.shutdown()
        httpd.server_close()
        with self._store.lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; only valid once started."""
        if self._httpd is None:
            raise RuntimeError("FakeApiServer is not running; call start() or use `with`")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> str:
        """A kubeconfig for this server (no auth), so a real `kube-nftlb` process can use it."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        return os.fspath(path)

    # ------------------------------------------------------------ state hooks

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion (what a list would return now)."""
        with self._store.lock:
            return str(self._store.rv)

    def seed(self, objs: Iterable[Mapping[str, Any]]) -> list[JsonDict]:
        """Create many objects (dicts with kind/apiVersion); server-set fields are replaced."""
        return [self.create(obj) for obj in objs]

    def objects(
        self, kind: str, namespace: str | None = None, *, api_version: str | None = None
    ) -> list[JsonDict]:
        """Deep copies of the stored objects of a kind, sorted by namespace and name."""
        rtype = by_kind(kind, api_version)
        items, _ = self._store.select(rtype, namespace, LabelSelector([]), FieldSelector([]))
        return [copy.deepcopy(rtype.external(item, with_kind=True)) for item in items]

    def get(
        self, kind: str, namespace: str | None, name: str, *, api_version: str | None = None
    ) -> JsonDict | None:
        """A deep copy of one object, or None."""
        rtype = by_kind(kind, api_version)
        try:
            obj = self._store.get(rtype, namespace, name)
        except ApiError:
            return None
        return copy.deepcopy(rtype.external(obj, with_kind=True))

    def create(self, obj: Mapping[str, Any]) -> JsonDict:
        """Create like POST (409 if it exists), but keep ``.status`` as given."""
        rtype, namespace = self._target(obj)
        created = self._store.create(
            rtype, namespace, dict(obj), status_mode="hook", strip_server_fields=True
        )
        return copy.deepcopy(rtype.external(created, with_kind=True))

    def update(self, obj: Mapping[str, Any]) -> JsonDict:
        """Replace like PUT (409 on a stale resourceVersion, 404 if missing); status as given,
        or kept when the body has none."""
        rtype, namespace = self._target(obj)
        name = str(dig(obj, "metadata", "name") or "")
        updated, _ = self._store.update(
            rtype, namespace, name, dict(obj), status_mode="hook", create_missing=False
        )
        return copy.deepcopy(rtype.external(updated, with_kind=True))

    def apply(self, obj: Mapping[str, Any]) -> JsonDict:
        """Create, or unconditionally replace (any resourceVersion in ``obj`` is ignored)."""
        rtype, namespace = self._target(obj)
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        for server_field in ("resourceVersion", "uid", "creationTimestamp", "generation"):
            meta.pop(server_field, None)
        with self._store.lock:
            if self.get(
                rtype.kind, namespace, str(meta.get("name")), api_version=rtype.api_version
            ):
                return self.update(body)
            return self.create(body)

    def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str = "strategic",
        *,
        api_version: str | None = None,
    ) -> JsonDict:
        """PATCH (``strategic``, ``merge``, ``json`` or ``apply``), status included."""
        rtype = by_kind(kind, api_version)
        patched, _ = self._store.patch(
            rtype, namespace, name, patch_type, patch, status_mode="hook", field_manager="test"
        )
        return copy.deepcopy(rtype.external(patched, with_kind=True))

    def delete(
        self, kind: str, namespace: str | None, name: str, *, api_version: str | None = None
    ) -> JsonDict:
        """DELETE: 404 if missing; with finalizers it only sets ``deletionTimestamp``."""
        rtype = by_kind(kind, api_version)
        obj, _ = self._store.delete(rtype, namespace, name)
        return copy.deepcopy(rtype.external(obj, with_kind=True))

    def _target(self, obj: Mapping[str, Any]) -> tuple[ResourceType, str | None]:
        kind = obj.get("kind")
        if not kind:
            raise ValueError("hook objects need a kind (and apiVersion for non-core kinds)")
        rtype = by_kind(str(kind), obj.get("apiVersion") or None)
        return rtype, dig(obj, "metadata", "namespace")

    # ------------------------------------------------------------ watch hooks

    @property
    def watch_count(self) -> int:
        """How many watch streams are open. A stream the server ends (timeout, close or drop
        hook) stops counting before its client sees the end; a client hanging up is noticed
        within a few tens of milliseconds."""
        with self._store.lock:
            return len(self._store.watchers)

    def wait_for_watches(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until exactly ``count`` watches are open (to sequence tests without sleeps)."""
        deadline = time.monotonic() + timeout
        while self.watch_count != count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def expire_history(self) -> None:
        """Forget the event history: resuming from any RV older than now gets a 410."""
        self._store.expire_history()

    def bookmark(self) -> int:
        """Send a BOOKMARK at the current RV to each watch that asked for bookmarks and is
        behind it; returns how many were sent."""
        with self._store.lock:
            return sum(self._store.bookmark(w) for w in list(self._store.watchers))

    def drop_watches(self) -> int:
        """Close every watch abruptly, without the terminating chunk (client: ProtocolError).

        On return the streams are cut and no longer counted in ``watch_count``."""
        with self._store.lock:
            watchers = list(self._store.watchers)
            self._store.watchers.clear()
            for watcher in watchers:
                watcher.dropped = True
                watcher.push((DROP, {}))
        for watcher in watchers:
            if watcher.sock is not None:
                with contextlib.suppress(OSError):
                    watcher.sock.shutdown(socket.SHUT_RDWR)
        return len(watchers)

    def close_watches(self) -> int:
        """End every watch cleanly, as a server-side timeout would: events already queued are
        still delivered, then the terminating chunk. On return ``watch_count`` is 0."""
        with self._store.lock:
            watchers = list(self._store.watchers)
            self._store.watchers.clear()
            for watcher in watchers:
                watcher.push((CLOSE, {}))
            return len(watchers)

    def stall_watches(self, seconds: float) -> int:
        """Make the currently open watches send nothing at all (not even bookmarks or their
        end) for ``seconds``; events queue up and flow afterwards. Later watches are normal."""
        until = time.monotonic() + seconds
        with self._store.lock:
            for watcher in self._store.watchers:
                watcher.stall_until = until
            return len(self._store.watchers)

    # ------------------------------------------------------------ request hooks

    def fail_next(
        self,
        verb: str,
        code: int,
        path_contains: str | None = None,
        *,
        message: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests of a Kubernetes verb (``get``, ``list``,
        ``watch``, ``create``, ``update``, ``patch``, ``delete``, ``deletecollection`` or
        ``*``) whose path and query contain ``path_contains`` with an error ``Status``.
        A watch failing with 410 gets it the way real servers send it: 200 + ERROR event."""
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}; use one of {sorted(VERBS)}")
        with self._store.lock:
            self._failures.append(_Failure(verb, code, path_contains, message, times))

    def inject_watch_lines(
        self,
        lines: Iterable[bytes | str | Mapping[str, Any]],
        path_contains: str | None = None,
        *,
        times: int = 1,
        close: bool = False,
    ) -> None:
        """Make the next ``times`` watches whose path and query contain ``path_contains`` send
        these lines first (bytes and str as they are, a mapping as one JSON line), then their
        events as usual, or, with ``close``, end cleanly right after them. For poison: a line
        that is not JSON, an event without ``object``, ``metadata: null``, an ERROR without
        ``code``; and for a server that sends one event and closes."""
        raw = tuple(
            line
            if isinstance(line, bytes)
            else line.encode()
            if isinstance(line, str)
            else json.dumps(line).encode()
            for line in lines
        )
        with self._store.lock:
            self._injections.append(_Lines(raw, path_contains, times, close))

    def _take_lines(self, target: str) -> _Lines | None:
        with self._store.lock:
            for item in self._injections:
                if item.path_contains is not None and item.path_contains not in target:
                    continue
                item.times -= 1
                if item.times <= 0:
                    self._injections.remove(item)
                return item
        return None

    def hang_next(
        self, verb: str, seconds: float, path_contains: str | None = None, *, times: int = 1
    ) -> None:
        """Hold the next ``times`` requests of ``verb`` whose path and query contain
        ``path_contains`` for ``seconds`` before answering them (an API server that hangs)."""
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}; use one of {sorted(VERBS)}")
        with self._store.lock:
            self._hangs.append(_Hang(verb, seconds, path_contains, times))

    def _take_hang(self, verb: str, target: str) -> float:
        with self._store.lock:
            for hang in self._hangs:
                if hang.verb not in ("*", verb):
                    continue
                if hang.path_contains is not None and hang.path_contains not in target:
                    continue
                hang.times -= 1
                if hang.times <= 0:
                    self._hangs.remove(hang)
                return hang.seconds
        return 0.0

    def _take_failure(self, verb: str, target: str) -> ApiError | None:
        with self._store.lock:
            for failure in self._failures:
                if failure.verb not in ("*", verb):
                    continue
                if failure.path_contains is not None and failure.path_contains not in target:
                    continue
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                message = failure.message or f"fake API server: injected {failure.code} failure"
                return ApiError(failure.code, message)
        return None

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log: (method, path, query) in arrival order."""
        with self._store.lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._store.lock:
            self._requests.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._store.lock:
            self._requests.append(record)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._store.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


__all__ = ["FakeApiServer", "RequestRecord"]
