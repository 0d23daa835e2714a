"""Kubernetes Events for problems: a Warning on the Service that names key, value and allowed.

Best effort and never in the sync's way: `record()` (the sync thread) only swaps the latest set of
problems into a one-slot mailbox (a bounded queue: a newer set replaces one not yet taken) and
returns; a background worker writes the Events, every request with a timeout, each failure backed
off per Event. An API server that hangs, refuses (403) or fails costs the sync nothing.

Like client-go's recorder, a problem that lasts is one Event whose `count` and `lastTimestamp` are
updated (PATCH), not a new Event each time, and it is refreshed well before the API server's
event TTL (`--event-ttl`, one hour by default) removes it. A problem is the Service's, so it is
one Event for the cluster, not one per node: the Event's name is derived from the Service (name and
uid) and the problem (reason and key), the same on every node. A node that finds the Event there
already (409 AlreadyExists on create) reads it and patches it only when it is stale; at each
refresh a node reads it first and writes only when no other node refreshed it since it last
looked, so a cluster of N nodes makes about one write per problem per refresh period, and N reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import kubernetes
from attrs import define, frozen

from reconciler.core.problems import ObjectRef, Problem

COMPONENT = "kube-nftlb"
#: Each Event is rewritten (if no other node did) within this many seconds of its last write:
#: half the API server's default event TTL, so it never expires while the problem lasts.
REFRESH = 1800.0
#: (connect, read) timeout of every Event request.
TIMEOUT = (5.0, 10.0)
_BACKOFF = (5.0, 300.0)

JsonDict = dict[str, Any]


class EventApi(Protocol):
    """The three calls the recorder makes; errors carry the HTTP code in `.status`."""

    def create(self, namespace: str, body: JsonDict) -> JsonDict: ...

    def get(self, namespace: str, name: str) -> JsonDict: ...

    def patch(self, namespace: str, name: str, body: JsonDict) -> JsonDict: ...


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def event_name(problem: Problem, uid: str = "") -> str:
    """The same on every node for the same problem of the same Service: one Event per cluster.

    The problem is its reason and key (the annotation, the address...), or its message when it
    has no key; a new value of the same key updates the same Event."""
    ref = problem.ref
    what = problem.key or problem.message
    digest = hashlib.sha256(
        f"{ref.namespace}|{ref.name}|{uid}|{problem.reason}|{what}".encode()
    ).hexdigest()[:16]
    return f"{ref.name}.{digest}"


def event_body(problem: Problem, node: str, uid: str = "", now: float | None = None) -> JsonDict:
    ref = problem.ref
    ts = _stamp(time.time() if now is None else now)
    involved: JsonDict = {
        "kind": ref.kind,
        "namespace": ref.namespace,
        "name": ref.name,
        "apiVersion": "v1",
    }
    if uid:
        involved["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(problem, uid), "namespace": ref.namespace},
        "involvedObject": involved,
        "reason": problem.reason,
        "message": problem.message[:1024],
        "type": "Warning",
        # No source.host: the problem is the Service's, whichever node wrote it.
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": f"{COMPONENT}-{node}",
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


@frozen
class _Wanted:
    problem: Problem
    uid: str
    name: str


@define
class _State:
    """What this node last knew of one Event, and when to look at it again."""

    resource_version: str = ""
    count: int = 0
    message: str = ""
    written: float = 0.0
    due: float = 0.0
    ours: str = ""  # the message this node last had to say
    failures: int = 0


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


class EventRecorder:
    """Writes the Events of the latest problems from a background worker; see the module doc.

    `on_error(problem, error)` is told of each failed write (problem None: the worker itself),
    `on_write(result)` of each outcome (`created`, `updated`, `failed`). `start()` runs the
    worker; without it, `step()` does one pass (tests).
    """

    def __init__(
        self,
        api: EventApi,
        node: str,
        on_error: Callable[[Problem | None, Exception], None] | None = None,
        on_write: Callable[[str], None] | None = None,
        *,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._api, self._node = api, node
        self._on_error, self._on_write = on_error, on_write
        self._refresh, self._clock, self._jitter = refresh, clock, jitter
        self._cond = threading.Condition()
        self._mailbox: dict[str, _Wanted] | None = None
        self._wanted: dict[str, _Wanted] = {}
        self._state: dict[str, _State] = {}
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the sync thread ----------------------------------------------------------------------

    def record(
        self, problems: Iterable[Problem], uid_of: Callable[[ObjectRef], str] | None = None
    ) -> None:
        """Hand over the current problems (the Service ones become Events); never blocks."""
        wanted: dict[str, _Wanted] = {}
        for p in sorted(problems):
            if p.ref.kind != "Service" or not p.ref.namespace:
                continue
            uid = uid_of(p.ref) if uid_of else ""
            name = event_name(p, uid)
            wanted.setdefault(name, _Wanted(p, uid, name))
        with self._cond:
            self._mailbox = wanted
            self._cond.notify()

    # -- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the worker; a request in flight is abandoned (it has its own timeout)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the worker has handled the latest problems handed over (tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._mailbox is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._busy = True
            try:
                wait = self.step()
            except Exception as e:  # never let the worker die: Events are best effort
                self._error(None, e)
                wait = _BACKOFF[0]
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                if self._mailbox is None and not self._stopping:
                    self._cond.wait(max(0.05, wait))

    def step(self) -> float:
        """One pass: take the latest problems, write what is due. Returns seconds to the next."""
        with self._cond:
            if self._mailbox is not None:
                self._wanted, self._mailbox = self._mailbox, None
            wanted = dict(self._wanted)
        for name in set(self._state) - set(wanted):  # gone: the Event expires by its TTL
            del self._state[name]
        for name, w in wanted.items():
            with self._cond:
                if self._stopping or self._mailbox is not None:
                    return 0.0  # newer problems to look at first
            state = self._state.get(name)
            message = w.problem.message[:1024]
            if state is not None and self._clock() < state.due and state.ours == message:
                continue
            try:
                self._state[name] = self._write(w, state)
                self._state[name].ours = message
            except Exception as e:
                failed = state or _State()
                failed.failures += 1
                failed.ours = message
                failed.due = self._clock() + min(
                    _BACKOFF[1], _BACKOFF[0] * 2 ** (failed.failures - 1)
                )
                self._state[name] = failed
                self._result("failed")
                self._error(w.problem, e)
        now = self._clock()
        return min((s.due - now for s in self._state.values()), default=self._refresh)

    def _result(self, result: str) -> None:
        if self._on_write:
            with contextlib.suppress(Exception):  # a broken hook must not stop the worker
                self._on_write(result)

    def _error(self, problem: Problem | None, error: Exception) -> None:
        if self._on_error:
            with contextlib.suppress(Exception):
                self._on_error(problem, error)

    def _next(self, written: float) -> float:
        """When to look again: between half and all of the refresh period after the last write,
        spread so that the nodes do not all look at once."""
        return written + self._refresh * (0.5 + 0.5 * self._jitter())

    def _known(self, event: JsonDict) -> _State:
        meta = event.get("metadata") or {}
        now = self._clock()
        written = min(_parse_stamp(event.get("lastTimestamp")) or now, now)
        count = event.get("count")
        return _State(
            resource_version=str(meta.get("resourceVersion") or ""),
            count=count if isinstance(count, int) else 1,
            message=str(event.get("message") or ""),
            written=written,
            due=self._next(written),
        )

    def _write(self, w: _Wanted, state: _State | None) -> _State:
        ns = w.problem.ref.namespace
        body = event_body(w.problem, self._node, w.uid, self._clock())
        if state is None or not state.resource_version:  # first time this node sees it
            try:
                created = self._api.create(ns, body)
            except Exception as e:
                if _status(e) != 409:
                    raise
            else:
                self._result("created")
                return self._known(created)
            current = self._known(self._api.get(ns, w.name))  # another node made it
            fresh = self._clock() - current.written < self._refresh / 2
            if fresh and current.message == body["message"]:
                return current
        else:
            try:
                current = self._known(self._api.get(ns, w.name))
            except Exception as e:
                if _status(e) != 404:
                    raise
                return self._write(w, None)  # expired or deleted: make it again
            if (
                current.resource_version != state.resource_version
                and current.message == body["message"]
            ):
                return current  # another node refreshed it since this one looked
        patch: JsonDict = {
            # The resourceVersion makes the write conditional: of two nodes racing, one wins
            # (the other gets 409 Conflict, retried after a backoff, and then finds it fresh).
            "metadata": {"resourceVersion": current.resource_version},
            "count": current.count + 1,
            "lastTimestamp": body["lastTimestamp"],
            "message": body["message"],
        }
        updated = self._api.patch(ns, w.name, patch)
        self._result("updated")
        return self._known(updated)


@define
class KubeEventApi:
    """EventApi over the official client: raw JSON, a timeout on every request."""

    create: Callable[[str, JsonDict], JsonDict]
    get: Callable[[str, str], JsonDict]
    patch: Callable[[str, str, JsonDict], JsonDict]


def kube_event_api(api_client: Any, timeout: tuple[float, float] = TIMEOUT) -> KubeEventApi:
    core = kubernetes.client.CoreV1Api(api_client)
    opts: dict[str, Any] = {"_request_timeout": timeout, "_preload_content": False}

    def load(response: Any) -> JsonDict:
        data = json.loads(response.data)
        return data if isinstance(data, dict) else {}

    return KubeEventApi(
        create=lambda ns, body: load(core.create_namespaced_event(ns, body, **opts)),
        get=lambda ns, name: load(core.read_namespaced_event(name, ns, **opts)),
        patch=lambda ns, name, body: load(
            core.patch_namespaced_event(
                name, ns, body, _content_type="application/merge-patch+json", **opts
            )
        ),
    )
