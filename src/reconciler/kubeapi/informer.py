"""List then watch one kind of Kubernetes object into a local store, forever (the shell's eyes).

An `Informer` keeps a thread-safe copy of the objects one list call returns (one resource, one
namespace or all of them, optional label and field selectors) and tells a callback about every
change to that copy. It follows ``kube-api-fake.md`` section 4.4, because the official client's
``Watch`` has traps that otherwise lose events or hang forever:

* **List, then watch from the list's resourceVersion.** The list is read raw
  (``_preload_content=False`` + ``json.loads``): camelCase dicts, the same shape as a watch event's
  ``raw_object``, with no model deserialisation. Parsing into the caller's types is the caller's
  ``parse`` function; the store holds what it returns and, beside it, only the object's
  resourceVersion (not the raw dict: thousands of EndpointSlices' dicts cost tens of MB).
* **Every watch call is one HTTP request.** ``timeout_seconds`` (jittered) switches off the
  client's hidden reconnect-with-whatever-RV loop, so this loop owns every retry; the
  ``_request_timeout`` read timeout is the client-side stall guard for half-open connections.
* **The resourceVersion is ours.** It comes from the list and then from every event's
  ``raw_object``, bookmarks included; ``Watch.resource_version`` is never trusted (it keeps stale
  RVs after a 410 and can go backwards).
* **410 Gone means relist and replace.** The store is swapped for the new list in one step and the
  differences come out as ordinary events: vanished objects as synthetic DELETED, changed ones as
  MODIFIED, new ones as ADDED, unchanged ones not at all. "Unchanged" means the stored and the
  listed resourceVersion are equal; an object missing either RV counts as changed (MODIFIED),
  since without one there is nothing to compare. A consumer therefore never has to know that a
  relist happened.
* **Anything else resumes from the last RV** after a jittered exponential backoff, without a
  relist: a dropped connection loses nothing, because the server replays every change after that
  RV.

The official client is used only as the transport: authentication, URL and query building, and
the watch framing (``Watch`` splits the chunked body into events and turns ``ERROR`` events into
``ApiException``). ``Watch(return_type="object")`` keeps its per-event deserialisation to a plain
dict, so no client model ever validates (or rejects) what the server sends.

Observability is by hooks (``on_restart``, ``on_error``) and counters (`Informer.stats`), so this
module imports no metrics or logging library; the controller wires them to its own.
"""

from __future__ import annotations

import builtins
import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, Literal, TypeVar

import urllib3
from attrs import frozen
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
JsonDict = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
#: Why a watch ended and a new one (or a relist) follows; the values `on_restart` receives.
RestartReason = Literal["expired", "stalled", "disconnected", "error", "timeout", "poison"]
RESTART_REASONS: tuple[RestartReason, ...] = (
    "expired",
    "stalled",
    "disconnected",
    "error",
    "timeout",
    "poison",
)
#: The default client-side read timeout of a watch: a half-open (silent) connection is noticed
#: within it. A real API server sends a bookmark about once a minute to a watch that asked.
INACTIVITY_TIMEOUT = 75.0
#: A watch open this long that delivers a new resourceVersion is real progress: only then (or
#: when a watch lasts until its server timeout) is the backoff reset. A server that sends one
#: event and closes, or a bad line, therefore backs off instead of reconnecting at once.
HEALTHY_WATCH = 1.0
#: What the official client raises from inside its generator for a line it cannot unmarshal: an
#: event without ``object`` (KeyError), ``metadata: null`` (TypeError), an ERROR without ``code``.
_POISON = (KeyError, TypeError, AttributeError, ValueError, IndexError)


def default_key(raw: Mapping[str, Any]) -> Hashable:
    """(namespace, name); cluster-scoped objects (Nodes) have namespace ``""``."""
    meta = raw["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def _resource_version(raw: Mapping[str, Any]) -> str | None:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    rv = meta.get("resourceVersion")
    return rv if isinstance(rv, str) and rv else None


class Backoff:
    """Exponential backoff with full jitter: a delay drawn from [0, min(cap, base * 2**n)].

    Full jitter spreads the retries of many nodes (a DaemonSet) that lost the API server at the
    same moment, so they do not come back in lock-step. `reset` after any success.
    """

    def __init__(
        self, base: float, cap: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The next delay; each call doubles the ceiling until it reaches the cap."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 62))
        self.attempts += 1
        return ceiling * self._rng()

    def reset(self) -> None:
        self.attempts = 0


@frozen
class InformerEvent(Generic[T]):
    """One change to the store: `old` is what it held before, `new` what it holds now.

    ADDED has no `old`, DELETED no `new`. `raw` is the server's dict for the change (the watch
    event's object, or the list item). It is None for a synthetic DELETED caused by a relist: the
    server never sent anything about that deletion, and the store keeps no raw dicts.
    """

    type: EventType
    key: Hashable
    old: T | None
    new: T | None
    raw: JsonDict | None


@frozen
class InformerStats:
    """A snapshot of the informer's counters (monotonic since start)."""

    lists: int
    watches: int
    events: int
    bookmarks: int
    poison_events: int
    parse_failures: int
    handler_errors: int
    restarts: Mapping[str, int]


class _StallError(Exception):
    """Marker: a watch that ended long before its server timeout (a silent 410 does, and so
    does a server that sends one event and closes): back off before the next one."""


class _PoisonError(Exception):
    """A watch line the client could not unmarshal; the watch cannot go past it, so relist."""


class Informer(Generic[T]):
    """List-then-watch of one resource into a thread-safe store; see the module docstring.

    `list_fn` is a bound list method of the official client, such as
    ``CoreV1Api(api).list_service_for_all_namespaces`` or ``CoreV1Api(api).list_namespaced_service``
    (then give `namespace`). `parse` turns a raw camelCase dict into the stored value, or None to
    keep the object out of the store. `on_event` runs on the informer thread, after the store has
    been updated, once per change. `server_timeout` is the (low, high) range of the jittered
    server-side watch timeout in seconds; the client-side read timeout is
    ``server_timeout + read_timeout_margin``, or `inactivity_timeout` when given.
    """

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        *,
        parse: Callable[[JsonDict], T | None],
        on_event: Callable[[InformerEvent[T]], None] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        key: Callable[[JsonDict], Hashable] = default_key,
        server_timeout: tuple[float, float] = (240, 300),
        read_timeout_margin: float = 30,
        inactivity_timeout: float | None = INACTIVITY_TIMEOUT,
        connect_timeout: float = 5,
        list_timeout: float = 60,
        backoff: tuple[float, float] = (0.2, 30.0),
        on_restart: Callable[[str], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        if not 1 <= server_timeout[0] <= server_timeout[1]:
            raise ValueError(f"server_timeout must be 1 <= low <= high, got {server_timeout}")
        self.name = name
        self._list_fn = list_fn
        self._parse = parse
        self._on_event = on_event
        self._namespace = namespace
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["label_selector"] = label_selector
        if field_selector:
            self._selectors["field_selector"] = field_selector
        self._key = key
        self._server_timeout = server_timeout
        self._read_margin = read_timeout_margin
        self._inactivity_timeout = inactivity_timeout
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._backoff = Backoff(*backoff)
        # Consecutive 410s with no event in between (a relist whose RV the server already
        # refuses) must slow down too; the main backoff is reset by every successful list.
        self._expiry_backoff = Backoff(*backoff)
        self._expired_streak = 0
        self._on_restart = on_restart
        self._on_error = on_error

        self._lock = threading.Lock()
        # key -> (parsed value, resourceVersion of the version it was parsed from).
        self._items: dict[Hashable, tuple[T, str | None]] = {}
        self._rv: str | None = None
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        self._resp: Any = None

        self._lists = 0
        self._watches = 0
        self._events = 0
        self._bookmarks = 0
        self._poison = 0
        self._parse_failures = 0
        self._handler_errors = 0
        self._restarts: dict[str, int] = dict.fromkeys(RESTART_REASONS, 0)

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the list/watch thread (a daemon: it never holds the process open)."""
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end, and unblock it if it sits in a watch read.

        Does not wait; `join` does. The response's socket is shut down, as ``Watch.stop`` does in
        newer clients, because a blocked read would otherwise last until the server timeout.
        """
        self._stopping.set()
        with self._lock:
            w, resp = self._watch, self._resp
        if w is not None:
            w.stop()
        _shutdown(resp)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --------------------------------------------------------------------------------- store

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            entry = self._items.get(key)
        return None if entry is None else entry[0]

    def resource_version_of(self, key: Hashable) -> str | None:
        """The resourceVersion of the stored version of `key`; None if absent or it had none."""
        with self._lock:
            entry = self._items.get(key)
        return None if entry is None else entry[1]

    def list(self) -> builtins.list[T]:
        with self._lock:
            return [value for value, _ in self._items.values()]

    def list_keys(self) -> builtins.list[Hashable]:
        with self._lock:
            return list(self._items)

    @property
    def resource_version(self) -> str | None:
        """The RV the next watch resumes from (the last list's, or the last event's)."""
        with self._lock:
            return self._rv

    @property
    def has_synced(self) -> bool:
        """True once the first list has filled the store; it stays True across relists."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    @property
    def stats(self) -> InformerStats:
        with self._lock:
            return InformerStats(
                lists=self._lists,
                watches=self._watches,
                events=self._events,
                bookmarks=self._bookmarks,
                poison_events=self._poison,
                parse_failures=self._parse_failures,
                handler_errors=self._handler_errors,
                restarts=dict(self._restarts),
            )

    # ---------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        relist = True
        while not self._stopping.is_set():
            try:
                if relist:
                    self._list_and_replace()
                    relist = False
                if self._stopping.is_set():
                    break
                self._watch_once()
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                if exc.status == 410:
                    # The RV is too old to resume from: only a fresh list is correct.
                    self._restart("expired")
                    relist = True
                    if self._expired_streak:
                        self._sleep(self._expiry_backoff.next_delay())
                    self._expired_streak += 1
                else:
                    self._restart("error", exc)
                    self._sleep(self._backoff.next_delay())
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                if self._stopping.is_set():
                    break
                self._restart("stalled" if _is_read_timeout(exc) else "disconnected", exc)
                self._sleep(self._backoff.next_delay())
            except _StallError:
                self._sleep(self._backoff.next_delay())
            except _PoisonError as exc:
                if self._stopping.is_set():
                    break
                # Resuming from the same RV would replay the same line: a fresh list gets past it.
                self._restart("poison", exc)
                relist = True
                self._sleep(self._backoff.next_delay())
            except Exception as exc:  # never let the thread die: the store would go stale
                if self._stopping.is_set():
                    break
                self._restart("error", exc)
                self._sleep(self._backoff.next_delay())

    def _args(self) -> tuple[str, ...]:
        return (self._namespace,) if self._namespace else ()

    def _list_and_replace(self) -> None:
        resp = self._list_fn(
            *self._args(),
            **self._selectors,
            _preload_content=False,
            _request_timeout=(self._connect_timeout, self._list_timeout),
        )
        try:
            body = json.loads(resp.data)
        finally:
            resp.release_conn()
        rv = _resource_version(body)
        if rv is None:
            raise ValueError(f"{self.name}: list response has no metadata.resourceVersion")
        items = body.get("items") or []
        events = self._replace(items, rv)
        self._synced.set()
        for event in events:
            self._emit(event)

    def _replace(self, items: builtins.list[JsonDict], rv: str) -> builtins.list[InformerEvent[T]]:
        """Swap the store for a list's items in one step; return the changes as events.

        An object is unchanged when its stored and listed resourceVersions are both present and
        equal: the stored value is kept (the very same object) and no event is emitted. A missing
        RV on either side counts as a change (MODIFIED). A stored object absent from the list
        becomes a synthetic DELETED with `raw` None.
        """
        listed: dict[Hashable, tuple[T, JsonDict]] = {}
        for raw in items:
            parsed = self._parse_keyed(raw)
            if parsed is not None and parsed[1] is not None:
                listed[parsed[0]] = (parsed[1], raw)
        fresh: dict[Hashable, tuple[T, str | None]] = {}
        events: builtins.list[InformerEvent[T]] = []
        with self._lock:
            old_items = self._items
            for key, (value, raw) in listed.items():
                rv_now = _resource_version(raw)
                before = old_items.get(key)
                if before is None:
                    events.append(InformerEvent("ADDED", key, None, value, raw))
                elif not _same_version(before[1], rv_now):
                    events.append(InformerEvent("MODIFIED", key, before[0], value, raw))
                else:
                    fresh[key] = before  # unchanged: keep the very same value, emit nothing
                    continue
                fresh[key] = (value, rv_now)
            for key, (value, _) in old_items.items():
                if key not in fresh:
                    events.append(InformerEvent("DELETED", key, value, None, None))
            self._items = fresh
            self._rv = rv
            self._lists += 1
        return events

    def _watch_once(self) -> None:
        """One HTTP watch from the current RV, applying its events until it ends or fails."""
        rv = self.resource_version
        low, high = self._server_timeout
        timeout = max(1, round(random.uniform(low, high)))
        read_timeout = timeout + self._read_margin
        if self._inactivity_timeout is not None:
            read_timeout = min(read_timeout, self._inactivity_timeout)
        w = watch.Watch(return_type="object")
        with self._lock:
            self._watch = w
            self._watches += 1
        started = time.monotonic()
        events = w.stream(
            self._call_and_register,
            *self._args(),
            **self._selectors,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(self._connect_timeout, read_timeout),
        )
        try:
            while True:
                try:
                    ev = next(events)
                except StopIteration:
                    break
                except _POISON as exc:
                    with self._lock:
                        self._poison += 1
                    raise _PoisonError(f"{type(exc).__name__}: {exc}") from exc
                if self._apply(ev):
                    self._expired_streak = 0
                    self._expiry_backoff.reset()
                    if time.monotonic() - started >= HEALTHY_WATCH:
                        self._backoff.reset()
                if self._stopping.is_set():
                    w.stop()
                    break
        finally:
            with self._lock:
                self._watch = None
                self._resp = None
        if self._stopping.is_set():
            return
        self._restart("timeout")
        if time.monotonic() - started < timeout / 2:
            # Ended long before the server timeout, whatever it delivered: the client's silent
            # end (an ERROR it swallowed), or a server that closes after an event or at once.
            # Do not spin on it: back off (reset only by real progress).
            raise _StallError
        self._backoff.reset()

    def _call_and_register(self, *args: Any, **kwargs: Any) -> Any:
        """Make the watch request and remember its response so that `stop` can unblock it."""
        resp = self._list_fn(*args, **kwargs)
        with self._lock:
            self._resp = resp
        if self._stopping.is_set():
            _shutdown(resp)
        return resp

    def _apply(self, ev: object) -> bool:
        """Apply one watch event; True when it is real progress (a resourceVersion not seen
        before). A line that is no event (the client yields None for text that is not JSON), or
        an object without metadata, is skipped and counted as poison."""
        raw = ev.get("raw_object") if isinstance(ev, Mapping) else None
        if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), Mapping):
            with self._lock:
                self._poison += 1
            return False
        etype = ev.get("type") if isinstance(ev, Mapping) else None
        rv = _resource_version(raw)
        with self._lock:
            progress = rv is not None and rv != self._rv
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            if rv is not None:
                with self._lock:
                    self._rv = rv
                    if etype == "BOOKMARK":
                        self._bookmarks += 1
            return progress
        parsed = self._parse_keyed(raw, parse=etype != "DELETED")
        if parsed is None:
            progress = False
        event: InformerEvent[T] | None = None
        with self._lock:
            if rv is not None:
                self._rv = rv
            self._events += 1
            if parsed is not None:
                key, value = parsed
                before = self._items.get(key)
                if etype == "DELETED":
                    if before is not None:
                        del self._items[key]
                        event = InformerEvent("DELETED", key, before[0], None, raw)
                elif value is not None:
                    self._items[key] = (value, rv)
                    old = None if before is None else before[0]
                    event = InformerEvent(
                        "ADDED" if before is None else "MODIFIED", key, old, value, raw
                    )
                elif before is not None:  # it no longer parses: keep it out of the store
                    del self._items[key]
                    event = InformerEvent("DELETED", key, before[0], None, raw)
        if event is not None:
            self._emit(event)
        return progress

    def _parse_keyed(
        self, raw: JsonDict, *, parse: bool = True
    ) -> tuple[Hashable, T | None] | None:
        """(key, parsed value or None), or None when not even the key can be found.

        A parse function that raises is treated like one that returns None and counted: the
        same object would otherwise fail again on every relist and wedge the informer.
        """
        try:
            key = self._key(raw)
        except Exception as exc:
            self._count_parse_failure("key", exc)
            return None
        if not parse:
            return key, None
        try:
            value = self._parse(raw)
        except Exception as exc:
            self._count_parse_failure("parse", exc)
            return key, None
        if value is None:
            self._count_parse_failure(None, None)
        return key, value

    def _count_parse_failure(self, where: str | None, exc: Exception | None) -> None:
        with self._lock:
            self._parse_failures += 1
        if where is not None and exc is not None:
            self._report(where, exc)

    def _emit(self, event: InformerEvent[T]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception as exc:  # the store is already right; one bad handler call is not fatal
            with self._lock:
                self._handler_errors += 1
            self._report("on_event", exc)

    def _restart(self, reason: RestartReason, exc: BaseException | None = None) -> None:
        with self._lock:
            self._restarts[reason] += 1
        if exc is not None:
            self._report(reason, exc)
        if self._on_restart is not None:
            try:
                self._on_restart(reason)
            except Exception as hook_exc:
                self._report("on_restart", hook_exc)

    def _report(self, where: str, exc: BaseException) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # a broken logger must not stop the informer
                self._on_error(where, exc)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _same_version(rv_a: str | None, rv_b: str | None) -> bool:
    """Whether two resourceVersions name one version of an object.

    By resourceVersion, not by content (list items carry no kind/apiVersion while watch objects
    do, and the store keeps no raw dict to compare anyway). A missing RV on either side is never
    the same version: the object is treated as changed.
    """
    return rv_a is not None and rv_a == rv_b


def _is_read_timeout(exc: BaseException) -> bool:
    """A read timeout, bare or as the reason urllib3's retries gave up (a stall on headers)."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | socket.timeout):
        return True
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return isinstance(exc.reason, urllib3.exceptions.ReadTimeoutError)
    return False


def _shutdown(resp: Any) -> None:
    """Shut down a streaming response's socket so that a read blocked on it returns at once."""
    conn = getattr(resp, "connection", None) if resp is not None else None
    sock = getattr(conn, "sock", None) if conn is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
