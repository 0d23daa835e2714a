"""The nftlb REST client: read farms back, apply a Plan, and turn nftlb's answers into errors.

Thin on purpose; the wire format lives in `wire.py`. What this layer adds, and why
(`nftlb-api.md` sections 2, 8 and 12):

* The header is sent as exactly ``Key: <key>`` (nftlb matches it case-sensitively); the key
  never appears in a message, repr or log.
* One request at a time (a lock) on a fresh TCP connection each (no keep-alive, and
  ``Connection: close``): the daemon is single-threaded with a listen backlog of 2, ignores a
  second request on a connection, and pooled connections get ``ECONNRESET``.
* Connection refused/reset is retried with jittered exponential backoff a bounded number of
  times: a reset request was not applied, and re-sending the same JSON is idempotent anyway.
  A read timeout is not retried (the daemon may still be working on it).
* ``GET /farms`` is parsed farm by farm while it arrives (`farms_stream`), never held whole; a
  reset halfway through fails that read (and so the sync), which the next sync repeats.
* A 200 whose message says ``Parsing unknown value`` is an error (nftlb used a default); a 404 on
  DELETE is success (already gone).
* New farms go in multi-farm POSTs of `chunk_size` farms. When a chunk fails, its farms are
  re-sent one per request, so one bad farm costs only itself; each failed farm is read back
  with GET before going on (the parser may have applied part of it, 8.2/8.3).
* IPv6 repair (`wipes_ipv6`): nftlb 1.0.7 drops every other IPv6 farm's rules when it stops an
  IPv6 farm's rules, and `apply` makes it rebuild them (see below).

IPv6 repair. nftlb 1.0.7 counts IPv6 service elements in its IPv4 counters (nft.c,
``update_service_counters(a, type, family, 0, ...)`` swaps two arguments), so whenever it stops
an IPv6 farm's rules it finds the ``ip6 nftlb`` table unused and deletes it. Measured on the
real daemon with single-frontend farms (tests/e2e/test_nftlb_client_e2e.py):

* triggers: deleting an IPv6 farm (any kind: plain, persistence, helper, est-connlimit, forward
  log, dnat, with or without backends), and changing an IPv6 farm's mode, persistence,
  persist-ttl, helper, log, intra-connect, virtual-addr or virtual-ports
  (`IPV6_WIPING_FIELDS`). Every *other* IPv6 farm loses its rules; the changed farm keeps them;
  IPv4 farms are untouched, and GET still lists everything as up;
* no trigger: scheduler/sched-param and est-connlimit changes, backend upserts and deletes,
  creating farms (a farm created after a trigger gets its rules), and anything on IPv4 farms;
* after a trigger, deleting one of the wiped farms makes nftlb fail, rebuild everything
  (including the doomed farm) and then forget it, so its rules stay in the kernel for good;
  changing a wiped farm's `IPV6_WIPING_FIELDS` answers 404 and is not applied; any other
  change that reaches a wiped farm is applied (all three make nftlb rebuild everything);
* the repair: changing ``est-connlimit`` of a wiped farm fails in nft, and nftlb's recovery
  rebuilds every farm from memory; setting it back is then an ordinary change. Re-posting
  unchanged values does nothing. The rebuild blocks the daemon: 0.1 s with 100 farms, about
  4.5 s with 1000 farms of 4 backends (the two requests themselves cost ~15-25 ms).

So `apply` repairs before any triggering operation on a farm that may be wiped (so deletes
leave nothing behind and changes go in), and once after the last trigger of the plan: a plan
with k triggering operations on IPv6 farms costs at most k repairs, and a repair before an
operation replaces the rebuild that operation would have caused anyway (with a leak or a
404). The target is an owned IPv6
farm nftlb holds that may be wiped (neither the farm just changed nor one created since),
read with one ``GET /farms`` (about 90 ms with 1000 farms): it must exist, as a POST to an
unknown name would create a farm, and its real est-connlimit must be restored. A repair when
nothing was wiped is two ordinary est-connlimit changes. Foreign IPv6 farms are rebuilt too,
but are never the target. A failed repair is reported as a failure of its target farm.

Chunk size, measured on the Debian nftlb 1.0.7 daemon (``-L 2 -l 3``, private netns, a shared
2-core machine under a load of about 3, so +-30 %): 1000 snat/tcp farms x 10 backends with
explicit marks and intra-connect on (1.6 MB of JSON in all), posted into an empty daemon.
"Longest" is the longest single POST: the daemon serves nobody else meanwhile.

=====  =============  ==============  ========
chunk  total          longest POST    requests
=====  =============  ==============  ========
1      23.0 s         0.08 s          1000
10     16.5 s         0.38 s          100
25     16.4 s         0.85 s          40
50     15.4, 11.5 s   1.5, 1.3 s      20
100    16.1, 13.3 s   3.5, 3.0 s      10
250    11.6 s         5.2 s           4
1000   7.8, 12.2 s    7.7, 12.2 s     1
=====  =============  ==============  ========

Between 10 and 100 farms a POST the total hardly changes while the daemon is blocked ever
longer (a POST costs more the more farms nftlb already holds), so the default is
`DEFAULT_CHUNK_SIZE` = 50: about 80 KB and at most ~1.5 s of blocking per POST at this size.
"""

from __future__ import annotations

import codecs
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from attrs import evolve, frozen

from reconciler.core.farms import NAME_RE, Family, Farm
from reconciler.core.farms_stream import FarmsStream
from reconciler.core.names import is_owned, parse_farm_name
from reconciler.core.plan import RESTART_FIELDS, Operation, OpKind, Plan
from reconciler.core.wire import (
    FARMS_PATH,
    JSONObject,
    ReadBack,
    Request,
    farm_body,
    farm_path,
    marked_body,
    parse_farm,
    post_farms_request,
    read_back,
    requests_for,
)

DEFAULT_CHUNK_SIZE = 50
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_RETRIES = 5
WARNING_TEXT = "Parsing unknown value"
UNAUTHORIZED_MESSAGE = "nftlb refused the key (401): check --nftlb-key-file"

#: Farm fields whose change makes nftlb stop and restart an IPv6 farm's rules, which drops the
#: other IPv6 farms' rules (see the module docstring). Scheduler, sched-param and est-connlimit
#: are reloaded in place and do not.
IPV6_WIPING_FIELDS: frozenset[str] = RESTART_FIELDS

#: Errors after which the request was not applied (or re-sending it is harmless).
#: Errors after which nftlb cannot have carried the request out (it was never sent).
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


class NftlbError(Exception):
    """Anything that went wrong talking to nftlb."""


class NftlbUnauthorized(NftlbError):
    def __init__(self) -> None:
        super().__init__(UNAUTHORIZED_MESSAGE)


class NftlbRejected(NftlbError):
    """nftlb answered, but not with a clean success: `status`, its `response` message, and a
    summary of the request (method, path, farm names; never the body or the key)."""

    def __init__(self, status: int, response: str, request: str) -> None:
        super().__init__(f"nftlb answered {status} to {request}: {response}")
        self.status = status
        self.response = response
        self.request = request


class NftlbUnavailable(NftlbError):
    """nftlb could not be reached, or did not answer in time."""


@frozen
class FarmFailure:
    """One farm whose request failed, and what nftlb held for it right after (GET).

    `status` is nftlb's HTTP status, or 0 when the request was not sent: refused before
    sending (an unsafe name), or a takeover of a refused chunk not sent again alone."""

    farm: str
    kind: OpKind
    status: int
    message: str
    request: str
    present: bool
    actual: Farm | None


@frozen
class ApplyResult:
    """What `apply` did: requests and body bytes sent (repairs and their GETs included), the
    farms that failed, how many create chunks were re-sent farm by farm, and how many IPv6
    repairs were sent (two requests each)."""

    requests: int
    bytes_sent: int
    failures: tuple[FarmFailure, ...] = ()
    isolated_chunks: int = 0
    repairs: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


class NftlbVerifyError(NftlbError):
    """After applying, nftlb still differs from what was wanted: `remaining` is the plan left."""

    def __init__(self, remaining: Plan, result: ApplyResult) -> None:
        super().__init__(f"nftlb still differs after apply: {len(remaining)} operations remain")
        self.remaining = remaining
        self.result = result


#: Operation kinds whose requests the client merges into shared POSTs (`NftlbClient._upsert`).
_BATCHED = frozenset({OpKind.UPSERT_BACKENDS, OpKind.RETIRE_BACKENDS})


def _farm_family(op: Operation) -> Family | None:
    """The family of the farm an operation addresses, or None when neither the operation nor
    the (possibly shortened) name tells."""
    if op.farm is not None:
        return op.farm.family
    key = parse_farm_name(op.farm_name)
    return key.family if key is not None else None


def wipes_ipv6(op: Operation) -> bool:
    """Whether nftlb 1.0.7 drops the other IPv6 farms' rules when it carries out `op`: an IPv6
    farm deleted (or one whose family is unknown, to be safe) or changed in a field of
    `IPV6_WIPING_FIELDS`."""
    if op.kind is OpKind.DELETE_FARM:
        return _farm_family(op) is not Family.IPV4
    if op.kind is OpKind.UPDATE_FARM:
        return _farm_family(op) is Family.IPV6 and not IPV6_WIPING_FIELDS.isdisjoint(op.fields)
    return False


class _Wipe:
    """Within one `apply`: whether nftlb may have dropped IPv6 farms' rules since the last
    repair, and which IPv6 farms certainly still have theirs (the changed farm, farms created
    since)."""

    def __init__(self) -> None:
        self.active = False
        self.intact: set[str] = set()

    def happened(self, op: Operation) -> None:
        self.active = True
        self.intact = {op.farm_name} if op.kind is OpKind.UPDATE_FARM else set()

    def repaired(self) -> None:
        self.active = False
        self.intact = set()

    def needs_repair_before(self, op: Operation) -> bool:
        return self.active and wipes_ipv6(op) and op.farm_name not in self.intact


def _ipv6_targets(doc: Any, skip: set[str]) -> dict[str, int]:
    """Owned IPv6 farms nftlb holds, except `skip`, with their est-connlimit."""
    out: dict[str, int] = {}
    entries = doc.get("farms") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        name, limit = entry.get("name"), entry.get("est-connlimit")
        if (
            isinstance(name, str)
            and is_owned(name)
            and name not in skip
            and entry.get("family") == "ipv6"
            and entry.get("state", "up") == "up"  # an off farm has no rules to rebuild
            and isinstance(limit, str)
            and limit.isdigit()
        ):
            out[name] = int(limit)
    return out


def _refused(farm: str, kind: OpKind, exc: ValueError) -> FarmFailure:
    """An operation never sent: it would have made an unsafe URL or body (status 0)."""
    return FarmFailure(farm, kind, 0, f"refused before sending: {exc}", "", False, None)


def _not_resent(op: Operation, request: Request) -> FarmFailure:
    """A farm of a refused chunk whose request is not `Request.replayable`: the next full
    sync reads it back and plans it again."""
    message = "in a refused request, and not sent again alone (it renames a spare)"
    return FarmFailure(op.farm_name, op.kind, 0, message, request.summary, True, None)


def _chunks(items: Sequence[Farm], size: int) -> Iterator[Sequence[Farm]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _message(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:300]
    response = doc.get("response") if isinstance(doc, dict) else None
    if isinstance(response, str):
        return response
    return text[:300]


class NftlbClient:
    """A client for one nftlb daemon. Safe to share between threads (requests are serialised)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not key or any(c in key for c in "\r\n") or key != key.strip():
            raise ValueError("the nftlb key must be one line without surrounding blanks")
        if not all(" " <= c <= "~" for c in key):
            raise ValueError("the nftlb key must be printable ASCII (it is sent in a header)")
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.url = url.rstrip("/")
        self._key = key
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.chunk_size = chunk_size
        self._cancel: Callable[[], bool] | None = None  # `apply`'s, while it runs
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.RLock()
        self._http = httpx.Client(
            base_url=self.url,
            transport=transport,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
        )
        self._wipe = _Wipe()
        #: Totals since creation, for metrics: logical requests, body bytes, retried attempts.
        self.requests_sent = 0
        self.bytes_sent = 0
        self.retries_done = 0

    @classmethod
    def from_key_file(cls, url: str, key_file: str | Path, **kwargs: Any) -> NftlbClient:
        """The key from a file (a Kubernetes Secret mount); surrounding blanks are dropped."""
        return cls(url, Path(key_file).read_text(encoding="utf-8").strip(), **kwargs)

    def __repr__(self) -> str:
        return f"NftlbClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NftlbClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one request --------------------------------------------------------------------------

    def send(self, request: Request) -> str:
        """Send one request and return nftlb's answer text, or raise a typed error."""
        with self._lock:
            response = self._open(request, stream=False)
            text = response.content.decode("utf-8", "replace")
        return self._checked(request, response.status_code, text)

    def _open(self, request: Request, *, stream: bool = True) -> httpx.Response:
        """Send `request` (retrying refused and reset connections) and return the response; the
        caller holds the lock. With `stream`, the body is not read yet (a reset while reading it
        is not retried) and the caller closes the response; without, a reset while reading the
        answer is retried like one before it."""
        content = b"" if request.body is None else json.dumps(request.body).encode()
        headers = {"Key": self._key, "Connection": "close"}
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        self.requests_sent += 1
        self.bytes_sent += len(content)
        attempt = 0
        while True:
            try:
                built = self._http.build_request(
                    request.method, request.path, content=content or None, headers=headers
                )
                return self._http.send(built, stream=stream)
            except _RETRYABLE as exc:
                if not request.replayable and not isinstance(exc, _UNSENT):
                    raise self._unavailable(request, exc) from None
                if attempt >= self._retries:
                    raise NftlbUnavailable(
                        f"nftlb at {self.url} unreachable for {request.summary} after "
                        f"{attempt + 1} attempts: {type(exc).__name__}"
                    ) from None
                delay = min(self._max_backoff, self._backoff * 2**attempt)
                self._sleep(delay * (0.5 + self._jitter()))
                attempt += 1
                self.retries_done += 1
            except httpx.HTTPError as exc:
                raise self._unavailable(request, exc) from None

    def _read(self, response: httpx.Response, request: Request) -> bytes:
        try:
            return response.read()
        except httpx.HTTPError as exc:
            raise self._unavailable(request, exc) from None

    def _unavailable(self, request: Request, exc: httpx.HTTPError) -> NftlbUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            return NftlbUnavailable(
                f"nftlb at {self.url} did not answer {request.summary} in time: "
                f"{type(exc).__name__}"
            )
        return NftlbUnavailable(
            f"nftlb at {self.url} failed on {request.summary}: {type(exc).__name__}"
        )

    @staticmethod
    def _checked(request: Request, status: int, text: str) -> str:
        if status == 401:
            raise NftlbUnauthorized()
        if request.method == "DELETE" and status == 404:
            return text
        if status != 200:
            raise NftlbRejected(status, _message(text), request.summary)
        if request.method != "GET" and WARNING_TEXT in text:
            raise NftlbRejected(status, _message(text), request.summary)
        return text

    # -- reads --------------------------------------------------------------------------------

    def get_farms_document(self) -> Any:
        """``GET /farms`` as parsed JSON, unnormalised (for saving, and for tests)."""
        text = self.send(Request("GET", FARMS_PATH))
        try:
            return json.loads(text)
        except ValueError:
            raise NftlbError("GET /farms did not return JSON") from None

    def get_farms(self) -> ReadBack:
        """``GET /farms``, parsed farm by farm as nftlb sends it (see `farms_stream`)."""
        request = Request("GET", FARMS_PATH)
        with self._lock:
            response = self._open(request, stream=True)
            try:
                if response.status_code != 200:
                    text = self._read(response, request).decode("utf-8", "replace")
                    self._checked(request, response.status_code, text)
                return read_back(self._entries(response, request))
            except ValueError as exc:
                raise NftlbError(str(exc)) from None
            finally:
                response.close()

    def _entries(self, response: httpx.Response, request: Request) -> Iterator[Any]:
        stream = FarmsStream()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            for chunk in response.iter_bytes():
                yield from stream.feed(decoder.decode(chunk))
        except httpx.HTTPError as exc:
            raise self._unavailable(request, exc) from None
        yield from stream.feed(decoder.decode(b"", final=True))
        yield from stream.finish()

    def get_farm(self, name: str) -> tuple[bool, Farm | None]:
        """(present, farm): nftlb answers 500 for an unknown farm; the farm is None when the
        model cannot represent what nftlb holds."""
        try:
            text = self.send(Request("GET", farm_path(name)))
        except NftlbRejected as exc:
            if exc.status == 500:
                return False, None
            raise
        try:
            entries = json.loads(text)["farms"]
        except (ValueError, KeyError, TypeError):
            raise NftlbError(f"GET /farms/{name} did not return a farm list") from None
        if not entries:
            return False, None
        return True, parse_farm(entries[0])

    # -- writes -------------------------------------------------------------------------------

    @property
    def repair_pending(self) -> bool:
        """Whether nftlb may still hold IPv6 farms without rules from a plan cut short: the
        next `apply` repairs them, so call it even with an empty plan."""
        return self._wipe.active

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel()

    def apply(
        self,
        plan: Plan,
        *,
        verify: Callable[[ReadBack], Plan] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> ApplyResult:
        """Apply a plan in its order; failures are collected per farm, not raised.

        After a farm fails, its later operations in this plan are skipped (for instance, old
        backends are not deleted when the new ones did not go in); the next sync retries.
        IPv6 farms whose rules nftlb dropped are repaired before a triggering operation
        reaches one of them, and after the plan (see the module docstring); a plan cut short
        by an error leaves that to the next `apply`, even an empty one.
        `verify` gets a fresh read-back and returns what still differs; if that is not empty,
        `NftlbVerifyError` is raised with it.
        `cancelled` is asked before each step: once it says True (SIGTERM), nothing more is
        sent; what is left is a plan cut short, which every prefix of a plan may be.
        """
        with self._lock:
            requests0, bytes0 = self.requests_sent, self.bytes_sent
            failures: list[FarmFailure] = []
            isolated = repairs = 0
            wipe = self._wipe  # survives a plan cut short, so the next one still repairs
            ops = list(plan)
            i = 0
            self._cancel = cancelled
            while i < len(ops):
                if self._cancelled():
                    break
                op = ops[i]
                if op.kind is OpKind.CREATE_FARM:
                    j = i
                    while j < len(ops) and ops[j].kind is OpKind.CREATE_FARM:
                        j += 1
                    if wipe.active:  # before sending: made after the wipe, they keep their
                        # rules even if the answer is lost (never a repair target, which must
                        # be a wiped farm for the repair to rebuild anything)
                        wipe.intact.update(o.farm_name for o in ops[i:j])
                    isolated += self._create(ops[i:j], failures)
                    i = j
                    continue
                if op.kind in _BATCHED:
                    j = i
                    while j < len(ops) and ops[j].kind in _BATCHED:
                        j += 1
                    failed = {f.farm for f in failures}
                    isolated += self._upsert(
                        [o for o in ops[i:j] if o.farm_name not in failed], failures
                    )
                    i = j
                    continue
                if op.farm_name not in {f.farm for f in failures}:
                    if wipe.needs_repair_before(op):
                        repairs += self._repair_ipv6(wipe, failures, before=op.farm_name)
                    if op.farm_name not in {f.farm for f in failures}:
                        if wipes_ipv6(op):  # before sending: an answer lost may still wipe
                            wipe.happened(op)
                        self._apply_one(op, failures)
                i += 1
            stopped, self._cancel = self._cancelled(), None
            if wipe.active and not stopped:  # a plan cut short: the next apply repairs
                repairs += self._repair_ipv6(wipe, failures, before=None)
            result = ApplyResult(
                requests=self.requests_sent - requests0,
                bytes_sent=self.bytes_sent - bytes0,
                failures=tuple(failures),
                isolated_chunks=isolated,
                repairs=repairs,
            )
            if verify is not None:
                remaining = verify(self.get_farms())
                if remaining:
                    raise NftlbVerifyError(remaining, result)
            return result

    def _repair_ipv6(self, wipe: _Wipe, failures: list[FarmFailure], *, before: str | None) -> int:
        """Make nftlb rebuild the IPv6 farms' rules; returns 1 if a repair was sent, else 0.

        `before` names the farm a triggering operation is about to reach: it is the target,
        and nothing is sent when it is not a (wiped) IPv6 farm nftlb holds. Otherwise the
        target is the first owned IPv6 farm that may be wiped, if any.
        """
        failed = {f.farm for f in failures}
        targets = _ipv6_targets(self.get_farms_document(), wipe.intact | failed)
        if before is not None:
            if before not in targets:
                return 0
            target = before
        elif targets:
            target = min(targets)
        else:
            wipe.repaired()
            return 0
        limit = targets[target]
        for value in (0 if limit else 1, limit):
            request = post_farms_request([{**marked_body(target), "est-connlimit": str(value)}])
            try:
                self.send(request)
            except NftlbRejected as exc:
                failure = self._failure(target, OpKind.UPDATE_FARM, exc)
                failures.append(evolve(failure, message=f"IPv6 repair: {failure.message}"))
                return 1
        wipe.repaired()
        return 1

    def _apply_one(self, op: Operation, failures: list[FarmFailure]) -> None:
        try:
            requests = requests_for(op)
        except ValueError as exc:
            failures.append(_refused(op.farm_name, op.kind, exc))
            return
        for request in requests:
            if not self._sent(request, op.farm_name, op.kind, failures):
                return

    def _sent(self, request: Request, farm: str, kind: OpKind, failures: list[FarmFailure]) -> bool:
        """Send one farm's request; if nftlb refuses it, record the farm's failure."""
        try:
            self.send(request)
        except NftlbRejected as exc:
            failures.append(self._failure(farm, kind, exc))
            return False
        return True

    def _create(self, ops: Sequence[Operation], failures: list[FarmFailure]) -> int:
        """Create farms in chunks; returns how many chunks had to be isolated farm by farm."""
        farms = []
        for op in ops:
            if (
                op.farm is None
                or op.farm.name != op.farm_name
                or not NAME_RE.fullmatch(op.farm_name)
            ):
                problem = ValueError("no farm, or a name that is not nft and URL safe")
                failures.append(_refused(op.farm_name, op.kind, problem))
            else:
                farms.append(op.farm)
        isolated = 0
        for chunk in _chunks(farms, self.chunk_size):
            if self._cancelled():
                break
            try:
                self.send(post_farms_request([farm_body(f) for f in chunk]))
                continue
            except NftlbRejected as exc:
                if len(chunk) == 1:
                    failures.append(self._failure(chunk[0].name, OpKind.CREATE_FARM, exc))
                    continue
            isolated += 1
            for farm in chunk:
                self._sent(
                    post_farms_request([farm_body(farm)]), farm.name, OpKind.CREATE_FARM, failures
                )
        return isolated

    def _upsert(self, ops: Sequence[Operation], failures: list[FarmFailure]) -> int:
        """Backend upserts and retires of several farms share POSTs (a new endpoint of a
        Service with a node port is one request for all its farms), and a farm's upserts and
        retires are one farm object, upserts first: nftlb reloads the farm once for both, and
        the farm never drops to zero. A refused chunk is retried farm by farm."""
        merged: dict[str, tuple[Operation, JSONObject]] = {}
        for op in ops:
            try:
                bodies = [
                    f for r in requests_for(op) if r.body is not None for f in r.body["farms"]
                ]
            except ValueError as exc:
                failures.append(_refused(op.farm_name, op.kind, exc))
                continue
            for body in bodies:
                if op.farm_name in merged:
                    merged[op.farm_name][1]["backends"].extend(body["backends"])
                else:
                    merged[op.farm_name] = (op, body)
        chunked = list(merged.values())
        isolated = 0
        for start in range(0, len(chunked), self.chunk_size):
            if self._cancelled():
                break
            chunk = chunked[start : start + self.chunk_size]
            try:
                self.send(post_farms_request([body for _, body in chunk]))
                continue
            except NftlbRejected as exc:
                if len(chunk) == 1:
                    failures.append(self._failure(chunk[0][0].farm_name, chunk[0][0].kind, exc))
                    continue
            isolated += 1
            for op, body in chunk:
                request = post_farms_request([body])
                if not request.replayable:  # nftlb may have taken it before the refusal
                    failures.append(_not_resent(op, request))
                    continue
                self._sent(request, op.farm_name, op.kind, failures)
        return isolated

    def _failure(self, farm: str, kind: OpKind, exc: NftlbRejected) -> FarmFailure:
        present, actual = self.get_farm(farm)
        return FarmFailure(farm, kind, exc.status, exc.response, exc.request, present, actual)

    def post_farms(self, farms: Iterable[Farm]) -> ApplyResult:
        """Create or merge whole farms (chunked and isolated as in `apply`)."""
        ops = [Operation(OpKind.CREATE_FARM, f.name, farm=f) for f in farms]
        with self._lock:
            requests0, bytes0 = self.requests_sent, self.bytes_sent
            failures: list[FarmFailure] = []
            isolated = self._create(ops, failures)
            return ApplyResult(
                self.requests_sent - requests0,
                self.bytes_sent - bytes0,
                tuple(failures),
                isolated,
            )

    def delete_farm(self, name: str) -> None:
        """Delete one farm by name (never the all-farms URL); an unknown farm is fine."""
        self.send(Request("DELETE", farm_path(name)))
