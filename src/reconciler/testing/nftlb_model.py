"""An in-memory model of nftlb 1.0.7's REST API, for tests without root or a daemon.

Pure: state in memory, no I/O. It follows the daemon's own code paths (upstream ``v1.0.7``:
``server.c``, ``config.c``, ``farms.c``, ``backends.c``) and what `nftlb-api.md` sections 2-5
observed, and it is held to the real daemon by ``tests/e2e/test_differential.py``:

* auth: a ``Key: <key>`` header, case and spacing exact, else 401 with an empty body;
* POST merges key by key in document order; ``name`` must be first (else 404); values that
  are not strings are skipped; unknown enum values fall back to the default with a
  ``Parsing unknown value`` warning in a 200; range errors are 400, unknown keys 500, and the
  keys before the error stay applied; the "current farm/backend" survives a failed request
  (`nftlb-api.md` 8.3); a field posted with its current value is skipped (so re-posting the
  same scheduler does not reset ``sched-param``);
* backends not sent are kept; a new backend is ``config_error`` until ``state`` comes after
  ``ip-addr``; without an explicit mark it gets the lowest mark unused in any farm;
* DELETE of a farm, backend or address, 404 when unknown, and an empty path segment that
  deletes everything, as the real one does;
* GET with the daemon's echo: key order, 8-space indent, trailing spaces in token lists,
  farm-level family/virtual-addr/virtual-ports/protocol from the first address, intra-connect
  and flow-offload only when on, rate limits with a unit;
* the GET-visible side of nftlb 1.0.7's rule bugs, as measured: a farm-level change of a live
  farm with several addresses makes nftlb rebuild everything, and fails with 404 (not applied)
  when the farm has objects of its own or is IPv6; deleting an IPv6 farm, or changing one's
  mode, persistence, persist-ttl, helper, log, intra-connect or frontend, wipes the other
  IPv6 farms' rules (`_Farm.rules`); a later change of those fields of a wiped farm fails with 404
  and makes nftlb rebuild everything, as does any other change that reaches a wiped farm
  (deleting it, a backend, an est-connlimit or scheduler change), while re-posting unchanged
  values does nothing (see `_stop`, `_did_change`; `recoveries` counts the rebuilds); a
  farm-level change of a farm sharing its ct helper object with another farm (same family,
  helper and protocol) that is up fails with 404, and deleting one makes nftlb rebuild
  everything (its rules stay in the kernel: not modelled); a farm is stopped once per request,
  at its first farm-level key, and not at all while ``off`` (whose helper object is then no
  longer in use); turning an IPv6 farm off wipes the other IPv6 farms' rules.

* which farms have no rules in the kernel, and why (`NftlbModel.dark_farms`): nft refuses a
  farm's batch when two of its usable backends share a mark with different targets
  (`nftlb-api.md` item 23; `_marks_clash`) or another farm holds its frontend (item 8); nftlb
  answers 200 and starts a recovery, which rebuilds the farms in order: the farm that breaks
  gets no rules, and when it is the first farm of its family, none of that family does (item
  7); that lasts until a later request makes a failing batch start another recovery (a change
  to a farm without rules, such as deleting the duplicate), while a change to a farm that has
  its rules does not repair the others; re-tested on 1.0.7 and held to the daemon by
  tests/e2e/test_differential.py and tests/e2e/test_backend_slots_e2e.py.

Not modelled: the kernel itself beyond which farms have rules (stale rules left behind; tests
check the kernel separately; turning a farm ``off`` can take its family's whole table away
until a farm is started again, which the plan always does next, `Operation.stop_first`), the
forward-log bugs (a backend-less farm's forward chain after another farm stopped logging
there; backend marks shared by forward-logging farms: see tests/e2e/test_nftlb_client_e2e.py),
the farms an address detach wedges beyond the cases above, sessions, policies, dsr/stlsdnat
network lookups, the "config_error flips to up on an unrelated change" side effect, crashes,
and memory-safety bugs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import define, field

if TYPE_CHECKING:
    import httpx

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_META = ("srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac")
_LOG = ("input", "forward", "output")
_VERDICTS = ("log", "drop", "accept")
_FAMILIES = ("ipv4", "ipv6", "inet")
_MODES = ("snat", "dnat", "dsr", "stlsdnat", "local")
_PROTOCOLS = ("tcp", "udp", "sctp", "all")
_SCHEDULERS = ("rr", "weight", "hash", "symhash")
_HELPERS = ("none", "ftp", "pptp", "sip", "snmp", "tftp")
_STATES = ("up", "down", "off", "config_error")
_UNITS = ("second", "minute", "hour", "day", "week")
#: Farm keys whose change makes nftlb delete the farm's rules and add them again.
_STOP_KEY_NAMES = """newname family virtual-addr virtual-ports source-addr mode responsettl protocol
persistence persist-ttl flow-offload log helper intra-connect limits-ttl"""
_STOP_KEYS = frozenset(_STOP_KEY_NAMES.split())
_HELPERS_BY_PROTOCOL = {
    "tcp": {"none", "ftp", "pptp", "sip"},
    "udp": {"none", "tftp", "snmp", "sip"},
    "all": {"none", "sip"},
}
_MARK_MIN, _MARK_MAX = 0x1, 0xFFF
_DEFAULT_LOG_PREFIX = "TYPE-FNAME "

#: Every key name nftlb's parser knows (``config_key``); any other is "Unknown key" → 500.
_KEY_NAMES = """
farms name newname fqdn iface oface family ether-addr iether-addr oether-addr virtual-addr
virtual-ports ip-addr source-addr port ports mode responsettl protocol scheduler sched-param
persistence persist-ttl helper log log-prefix log-rtlimit mark state backends weight priority
action limits-ttl new-rtlimit new-rtlimit-burst new-rtlimit-log-prefix rst-rtlimit
rst-rtlimit-burst rst-rtlimit-log-prefix est-connlimit est-connlimit-log-prefix tcp-strict
tcp-strict-log-prefix queue flow-offload policies type timeout elements data time sessions
client backend intra-connect used expiration addresses route verdict counter-packets
counter-bytes
"""
_KNOWN_KEYS = frozenset(_KEY_NAMES.split())


class _Fail(Exception):
    """Stops parsing, like a non-OK parser code; keys already applied stay applied."""

    def __init__(self, status: int, message: str = "error parsing buffer") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _atoi(text: str) -> int:
    """C's atoi: leading blanks, a sign, digits; anything else ends the number (or gives 0)."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _strtol16(text: str) -> int:
    m = re.match(r"\s*([+-]?)(?:0[xX])?([0-9a-fA-F]+)", text)
    if not m:
        return 0
    value = int(m.group(2), 16)
    return -value if m.group(1) == "-" else value


@define
class _Address:
    name: str
    family: str = "ipv4"
    ip: str = ""
    ports: str = ""
    protocol: str = "tcp"
    used: int = 0


@define
class _Backend:
    name: str
    mark: int
    ip: str | None = None
    port: str = ""
    source_addr: str | None = None
    weight: int = 1
    priority: int = 1
    est_connlimit: int = 0
    est_connlimit_log_prefix: str = "KNAME-FNAME-BNAME "
    state: str = "config_error"


@define
class _Farm:
    name: str
    addresses: list[str] = field(factory=list)
    backends: list[_Backend] = field(factory=list)
    mode: str = "snat"
    responsettl: int = 60
    scheduler: str = "rr"
    sched_param: int = 0
    persistence: int = 0
    persist_ttl: int = 60
    helper: str = "none"
    log: int = 0
    log_prefix: str = _DEFAULT_LOG_PREFIX
    log_rtlimit: tuple[int, str] = (0, "second")
    mark: int = 0
    state: str = "up"
    limits_ttl: int = 120
    new_rtlimit: tuple[int, str] = (0, "second")
    new_rtlimit_burst: int = 0
    rst_rtlimit: tuple[int, str] = (0, "second")
    rst_rtlimit_burst: int = 0
    est_connlimit: int = 0
    tcp_strict: bool = False
    queue: int = -1
    verdict: int = 0b111
    flow_offload: bool = False
    intra_connect: bool = False
    source_addr: str = ""
    prefixes: dict[str, str] = field(factory=dict)
    live: bool = False  # created by an earlier request that reached the rules
    rules: bool = True  # its rules are in the kernel (IPv6 ones get wiped by other farms)
    dark: str = ""  # why it has no rules: one of DARK_REASONS
    wedged: bool = False  # an address was detached: its farm-level changes fail from now on

    def backend(self, name: str) -> _Backend | None:
        return next((b for b in self.backends if b.name == name), None)


#: Why a farm nftlb lists as up has no rules in the kernel (`NftlbModel.dark_farms`):
#: ``mark``: two of its backends share a mark, with different targets (`nftlb-api.md` item 23);
#: ``tuple``: an earlier farm holds its (protocol, address, port) (item 8); ``table``: the
#: first farm of its family failed, so its table has no base chains (item 7); ``ipv6-wipe``:
#: another IPv6 farm stopped and nftlb deleted the ip6 table's elements (`NftlbClient.apply`
#: repairs this).
DARK_REASONS = ("mark", "tuple", "table", "ipv6-wipe")


def _print_meta(mask: int) -> str:
    if not mask:
        return "none"
    return "".join(f"{t} " for i, t in enumerate(_META) if mask & (1 << i))


def _print_log(mask: int) -> str:
    if not mask:
        return "none"
    text = "input " if mask & 1 else ""
    text += "forward " if mask & 2 else ""
    return text + ("output" if mask & 4 else "")


def _print_verdict(mask: int) -> str:
    return " ".join(v for i, v in enumerate(_VERDICTS) if mask & (1 << i))


def _rtlimit(limit: tuple[int, str]) -> str:
    return f"{limit[0]}/{limit[1]}"


class NftlbModel:
    """nftlb's in-memory state and its REST semantics. `handle` is one HTTP exchange."""

    def __init__(self, key: str = "testkey") -> None:
        self.key = key
        self.farms: dict[str, _Farm] = {}
        self.addresses: dict[str, _Address] = {}
        self.requests: list[tuple[str, str]] = []
        self._farm: _Farm | None = None
        self._backend: _Backend | None = None
        self._address: _Address | None = None
        self._output: list[str] = []
        self._touched: list[_Farm] = []
        self._changed: set[int] = set()  # ids of farms a POST sent keys to
        self._before: dict[int, str] = {}  # their GET echo before the POST
        self._stopped: set[int] = set()  # ids of farms a POST stopped (they start at its end)
        #: How many times the real daemon would have rebuilt all its rules after an nft failure.
        self.recoveries = 0
        #: Families whose table lost its base chains in the last recovery (see `_recovery`).
        self._dark_tables: set[str] = set()

    # -- HTTP ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
        """One request as the daemon answers it: (status, body bytes)."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        raw = "".join(f"{k}: {v}\r\n" for k, v in pairs)
        at = raw.find("Key: ")
        if at < 0 or raw[at + 5 :].split("\r\n", 1)[0] != self.key:
            return 401, b""
        self.requests.append((method, path))
        self._output = []
        if method == "GET":
            return self._get(path)
        if method in ("POST", "PUT"):
            return self._post(path, body)
        if method == "DELETE":
            return self._delete(path, body)
        if method == "PATCH":
            return self._response(404, "invalid request")
        return 400, b""

    def as_handler(self) -> Callable[[httpx.Request], httpx.Response]:
        """A handler for ``httpx.MockTransport`` that keeps header case, as the daemon sees it."""
        import httpx  # only for callers that use it as a transport; the model itself is pure

        def handler(request: httpx.Request) -> httpx.Response:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
            target = request.url.raw_path.decode("ascii")
            status, content = self.handle(request.method, target, request.read(), headers)
            return httpx.Response(status, content=content)

        return handler

    def _response(self, status: int, message: str) -> tuple[int, bytes]:
        text = message + "".join(self._output)
        return status, ('{"response": "' + text + '"}').encode()

    @staticmethod
    def _levels(uri: str, count: int) -> list[str]:
        """sscanf("/%199[^/]/%199[^/]...", ...): stops at the first empty segment."""
        out = [""] * count
        if not uri.startswith("/"):
            return out
        rest = uri[1:]
        for i in range(count):
            last = i == count - 1
            match = re.match(r"[^\n]{1,199}" if last else r"[^/]{1,199}", rest)
            if not match:
                break
            out[i] = match.group(0)
            rest = rest[match.end() :]
            if not rest.startswith("/"):
                break
            rest = rest[1:]
        return out

    # -- GET ----------------------------------------------------------------------------------

    def _get(self, path: str) -> tuple[int, bytes]:
        first, second, third, _ = self._levels(path, 4)
        if first == "farms":
            if third == "sessions":
                if second not in self.farms:
                    return self._response(404, "invalid request")
                return 200, json.dumps({"sessions": []}, indent=8).encode()
            if third == "":
                if second and second not in self.farms:
                    return self._response(500, "invalid request")
                farms = [f for f in self.farms.values() if not second or f.name == second]
                doc = {"farms": [self._echo_farm(f) for f in farms]}
                return 200, json.dumps(doc, indent=8, ensure_ascii=False).encode()
        elif first == "policies":
            return 200, json.dumps({"policies": []}, indent=8).encode()
        elif first == "addresses":
            addresses = [a for a in self.addresses.values() if not second or a.name == second]
            doc = {"addresses": [self._echo_address(a, farm=False) for a in addresses]}
            return 200, json.dumps(doc, indent=8, ensure_ascii=False).encode()
        return self._response(400, "invalid request")

    def _priority(self, farm: _Farm) -> int:
        prio = 1
        while True:
            down = sum(1 for b in farm.backends if b.priority <= prio and b.state != "up")
            if 1 + down <= prio:
                return prio
            prio = 1 + down

    def _echo_address(self, a: _Address, *, farm: bool = True) -> dict[str, str]:
        out = {"name": a.name, "family": a.family, "ip-addr": a.ip, "ports": a.ports}
        out["protocol"] = a.protocol
        if farm:
            out["used"] = str(a.used)
        else:
            out["verdict"] = "log drop accept"
            out["used"] = str(a.used)
        return out

    def _echo_farm(self, f: _Farm) -> dict[str, Any]:
        first = self.addresses[f.addresses[0]] if f.addresses else None
        out: dict[str, Any] = {"name": f.name}
        if first:
            out |= {"family": first.family, "virtual-addr": first.ip, "virtual-ports": first.ports}
        out["source-addr"] = f.source_addr
        out["mode"] = f.mode
        if f.mode == "stlsdnat":
            out["responsettl"] = str(f.responsettl)
        if first:
            out["protocol"] = first.protocol
        out["scheduler"] = f.scheduler
        out["sched-param"] = _print_meta(f.sched_param)
        out["persistence"] = _print_meta(f.persistence)
        out["persist-ttl"] = str(f.persist_ttl)
        out["helper"] = f.helper
        out["log"] = _print_log(f.log)
        if f.log_prefix != _DEFAULT_LOG_PREFIX:
            out["log-prefix"] = f.log_prefix
        out["log-rtlimit"] = _rtlimit(f.log_rtlimit)
        out["mark"] = f"{f.mark:#x}"
        prio = self._priority(f)
        out["priority"] = str(prio)
        out["state"] = f.state
        out["limits-ttl"] = str(f.limits_ttl)
        out["new-rtlimit"] = _rtlimit(f.new_rtlimit)
        out["new-rtlimit-burst"] = str(f.new_rtlimit_burst)
        for key in ("new-rtlimit-log-prefix",):
            if key in f.prefixes:
                out[key] = f.prefixes[key]
        # nftlb 1.0.7 prints rst-rtlimit with the unit of new-rtlimit (`nftlb-api.md` 6.1).
        out["rst-rtlimit"] = f"{f.rst_rtlimit[0]}/{f.new_rtlimit[1]}"
        out["rst-rtlimit-burst"] = str(f.rst_rtlimit_burst)
        if "rst-rtlimit-log-prefix" in f.prefixes:
            out["rst-rtlimit-log-prefix"] = f.prefixes["rst-rtlimit-log-prefix"]
        out["est-connlimit"] = str(f.est_connlimit)
        if "est-connlimit-log-prefix" in f.prefixes:
            out["est-connlimit-log-prefix"] = f.prefixes["est-connlimit-log-prefix"]
        out["tcp-strict"] = "on" if f.tcp_strict else "off"
        if "tcp-strict-log-prefix" in f.prefixes:
            out["tcp-strict-log-prefix"] = f.prefixes["tcp-strict-log-prefix"]
        out["queue"] = str(f.queue)
        out["verdict"] = _print_verdict(f.verdict)
        if f.flow_offload:
            out["flow-offload"] = "on"
        if f.intra_connect:
            out["intra-connect"] = "on"
        out["addresses"] = [self._echo_address(self.addresses[n]) for n in f.addresses]
        out["backends"] = [self._echo_backend(b, prio) for b in f.backends]
        out["policies"] = []
        return out

    @staticmethod
    def _echo_backend(b: _Backend, farm_priority: int) -> dict[str, str]:
        out = {"name": b.name}
        if b.ip is not None:
            out["ip-addr"] = b.ip
        out["port"] = b.port
        if b.source_addr is not None:
            out["source-addr"] = b.source_addr
        out["weight"] = str(b.weight)
        out["priority"] = str(b.priority)
        out["mark"] = f"{b.mark:#x}"
        out["est-connlimit"] = str(b.est_connlimit)
        if b.est_connlimit_log_prefix != "KNAME-FNAME-BNAME ":
            out["est-connlimit-log-prefix"] = b.est_connlimit_log_prefix
        state = b.state
        if state == "up" and b.priority > farm_priority:
            state = "available"
        out["state"] = state
        return out

    # -- DELETE -------------------------------------------------------------------------------

    def _delete(self, path: str, body: bytes) -> tuple[int, bytes]:
        first, second, third, fourth, _ = self._levels(path, 5)
        if first not in ("farms", "policies", "addresses"):
            return self._response(404, "invalid request")
        if body:
            return self._response(200, "success")  # parsed, but does nothing to farms
        if first == "farms" and third == "":
            if second == "":
                for name in list(self.farms):
                    self._delete_farm(name)
            elif second in self.farms:
                doomed = self.farms[second]
                family = self._family(doomed)
                if doomed.live and self._shares_helper(doomed):
                    self._recovery()  # its rules stay in the kernel (not modelled)
                elif self._ipv6(doomed) and doomed.live and doomed.state == "up":
                    if doomed.rules and not doomed.wedged:
                        self._wipe_ipv6(doomed)
                    else:
                        self._recovery()
                elif doomed.live and not doomed.rules and doomed.state == "up":
                    self._recovery()  # deleting its missing rules fails; rebuilt, then forgotten
                self._delete_farm(second)
                if not any(self._family(f) == family for f in self.farms.values()):
                    self._dark_tables.discard(family)  # the last farm takes the table with it
            else:
                self._output.append(f". Unknown farm '{second}'")
                return self._response(404, "error deleting farm")
        elif first == "farms" and third == "backends":
            farm = self.farms.get(second) if second else None
            if farm is None:
                self._output.append(f". Unknown farm '{second}'")
                return self._response(404, "error deleting backend")
            if fourth == "":
                farm.backends.clear()
            elif farm.backend(fourth) is None:
                self._output.append(f". Unknown backend '{fourth}' in farm '{second}'")
                return self._response(404, "error deleting backend")
            else:
                farm.backends.remove(next(b for b in farm.backends if b.name == fourth))
            if farm.live and not farm.rules:
                self._recovery()  # its chains are gone: the reload fails and nftlb rebuilds all
        elif first == "farms" and third == "addresses":
            farm = self.farms.get(second) if second else None
            if farm is None:
                self._output.append(f". Unknown farm '{second}'")
                return self._response(404, "error deleting farm address")
            names = list(farm.addresses) if fourth == "" else [fourth]
            if fourth and fourth not in farm.addresses:
                self._output.append(f". Unknown farm address '{fourth}' in farm '{second}'")
                return self._response(404, "error deleting farm address")
            if self._ipv6(farm):
                self._recovery()
            if self._ipv6(farm) or self._own_objects(farm):
                farm.wedged = True
            for name in names:
                self._detach(farm, name)
        elif first == "farms":
            return self._response(400, "invalid request")
        elif first == "addresses" and third == "":
            for a in [a for a in self.addresses.values() if not second or a.name == second]:
                if not a.used:
                    del self.addresses[a.name]
        self._rulerized()
        return self._response(200, "success")

    def _detach(self, farm: _Farm, address: str) -> None:
        farm.addresses.remove(address)
        a = self.addresses[address]
        a.used -= 1
        if a.used <= 0:
            del self.addresses[address]

    def _delete_farm(self, name: str) -> None:
        farm = self.farms.pop(name)
        for address in list(farm.addresses):
            self._detach(farm, address)
        if self._farm is farm:
            self._farm = None

    def _ipv6(self, f: _Farm) -> bool:
        return bool(f.addresses) and self.addresses[f.addresses[0]].family == "ipv6"

    @staticmethod
    def _own_objects(f: _Farm) -> bool:
        """Persistence maps, a ct helper, an est-connlimit set or a forward-log chain."""
        return bool(f.persistence or f.helper != "none" or f.est_connlimit or f.log & 2)

    def _helper_objects(self, f: _Farm) -> set[tuple[str, str, str]]:
        """The ct helper objects a farm's rules use: one per table, named
        ``<helper>-<protocol>``, so farms of one family with the same helper and protocol
        share it."""
        if f.helper == "none" or f.state != "up":
            return set()  # an off farm's rules, helper rule included, are gone
        out = set()
        for name in f.addresses:
            a = self.addresses[name]
            for protocol in ("tcp", "udp"):
                if a.protocol in (protocol, "all"):
                    out.add((a.family, f.helper, protocol))
        return out

    def _shares_helper(self, f: _Farm) -> bool:
        """Whether stopping the farm's rules fails in nft: it deletes the ct helper object,
        which another farm's rules still use ("Device or resource busy"). Measured on 1.0.7:
        a farm-level change then answers 404 and is not applied, and a delete leaves the
        farm's rules in the kernel; both make nftlb rebuild everything."""
        mine = self._helper_objects(f)
        return bool(mine) and any(
            g is not f and g.live and g.rules and mine & self._helper_objects(g)
            for g in self.farms.values()
        )

    def _wipe_ipv6(self, cause: _Farm) -> None:
        """nftlb 1.0.7 counts IPv6 services as IPv4 ones (nft.c swaps two arguments), so when
        it deletes an IPv6 farm's elements it thinks the ip6 table unused and deletes it: every
        other IPv6 farm loses its rules, while GET still lists them."""
        for farm in self.farms.values():
            if farm is not cause and self._ipv6(farm) and farm.rules:
                farm.rules, farm.dark = False, "ipv6-wipe"

    def _recovery(self) -> None:
        """An nft batch failed: nftlb deletes its tables and rebuilds every farm from memory,
        in its list order, one batch each, once. A farm that breaks nft (`_conflict`) gets no
        rules; when it is the first of its family, its batch also carried the family's base
        table and chains, so every later farm of that family fails too (re-tested on 1.0.7)."""
        self.recoveries += 1
        self._dark_tables = set()
        held: set[tuple[str, str, str, str]] = set()
        first: set[str] = set()
        for farm in self.farms.values():
            if farm.state != "up":
                continue
            family = self._family(farm)
            problem = "table" if family in self._dark_tables else self._conflict(farm, held)
            if problem and family not in first:
                self._dark_tables.add(family)
            first.add(family)
            farm.rules, farm.dark = not problem, problem
            if not problem:
                held |= self._tuples(farm)

    def _family(self, farm: _Farm) -> str:
        return self.addresses[farm.addresses[0]].family if farm.addresses else "ipv4"

    def _tuples(self, farm: _Farm) -> set[tuple[str, str, str, str]]:
        """(protocol, address, ports, address object): one address object attached to two
        farms is not two farms on one frontend (not measured; left as before)."""
        out = set()
        for name in farm.addresses:
            a = self.addresses[name]
            out.add((a.protocol, a.ip, a.ports, a.name))
        return out

    def _marks_clash(self, farm: _Farm) -> bool:
        """Whether the farm's DNAT map (``ct mark map { mark : ip . port }``) gives one mark two
        targets, which nft refuses ("File exists"). It holds the usable backends (nftlb's
        ``backend_is_usable``: ``up``, and ``off``, which only leaves the scheduler), their
        ports only when every backend of the farm has one (``bcks_have_port``) and the
        protocol is not ``all``; nft merges identical entries, so two backends with one mark,
        ip and port (a take-over sent twice makes them) break nothing. Checked on 1.0.7.
        Not modelled: a standby backend (priority above the farm's) is not usable either."""
        protocols = {self.addresses[n].protocol for n in farm.addresses}
        ports = all(b.port for b in farm.backends) and "all" not in protocols
        targets: dict[int, tuple[str, str]] = {}
        for b in farm.backends:
            if b.state in ("up", "off") and b.ip:
                target = (b.ip, b.port if ports else "")
                if targets.setdefault(b.mark, target) != target:
                    return True
        return False

    def _conflict(self, farm: _Farm, held: set[tuple[str, str, str, str]]) -> str:
        """What makes nft refuse this farm's batch, given the frontends farms built before
        it hold: two backends on one mark ("File exists" in its DNAT map), or a frontend
        another farm holds ("File exists" in the service map)."""
        if self._marks_clash(farm):
            return "mark"
        mine = self._tuples(farm)
        if {t[:3] for t in held - mine} & {t[:3] for t in mine}:
            return "tuple"
        return ""

    def _batch_fails(self, farm: _Farm) -> bool:
        """Whether the nft batch for a change of `farm` fails, which starts a recovery."""
        if farm.state != "up":
            return False
        if farm.live and not farm.rules:
            return True  # its chains are gone: the reload fails
        if self._family(farm) in self._dark_tables:
            return True
        held = {
            t for g in self.farms.values() if g is not farm and g.rules for t in self._tuples(g)
        }
        return bool(self._conflict(farm, held))

    def dark_farms(self) -> dict[str, str]:
        """Farms nftlb lists as up that have no rules in the kernel, with why (one of
        `DARK_REASONS`): every such farm is a Service that does not answer."""
        return {
            f.name: f.dark or "table"
            for f in self.farms.values()
            if f.state == "up" and not f.rules
        }

    def _rulerized(self) -> None:
        """nftlb forgets its "current" objects only after a request that reached the rules."""
        self._farm = self._backend = self._address = None
        for farm in self.farms.values():
            farm.live = True

    # -- POST ---------------------------------------------------------------------------------

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        first = self._levels(path, 1)[0]
        if first not in ("farms", "policies", "addresses"):
            return self._response(404, "invalid request")
        try:
            doc = json.loads(body.split(b"\0", 1)[0].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return self._response(400, "the structure is invalid")
        if not isinstance(doc, dict | list):
            return self._response(400, "the structure is invalid")
        self._touched = []
        self._changed = set()
        self._before = {}
        self._stopped = set()
        try:
            self._top(doc)
        except _Fail as fail:
            return self._response(fail.status, fail.message)
        self._validate_touched()
        if any(self._did_change(f) and self._batch_fails(f) for f in self.farms.values()):
            self._recovery()
        self._rulerized()
        return self._response(200, "success")

    def _state(self, farm: _Farm) -> str:
        return json.dumps(self._echo_farm(farm))

    def _did_change(self, farm: _Farm) -> bool:
        """Whether this POST changed the farm: nftlb skips values equal to the current ones,
        and only a change reaches nft (re-posting a wiped farm unchanged does not repair it)."""
        if id(farm) not in self._changed:
            return False
        before = self._before.get(id(farm))
        return before is None or before != self._state(farm)

    def _warn(self, value: str, key: str | None, default: str) -> None:
        where = f" in '{key}'" if key else ""
        self._output.append(f". Parsing unknown value '{value}'{where}, using default '{default}'")

    def _check_key(self, key: str) -> None:
        if key not in _KNOWN_KEYS:
            self._output.append(f". Unknown key '{key}'")
            raise _Fail(500)

    def _top(self, doc: dict[str, Any] | list[Any]) -> None:
        items = doc.items() if isinstance(doc, dict) else []
        for key, value in items:
            self._check_key(key)
            if key == "farms":
                if not isinstance(value, list):
                    raise _Fail(400, "the structure is invalid")
                for farm in value:
                    if isinstance(farm, dict):
                        self._farm_object(farm)
            elif key == "addresses" and isinstance(value, list):
                for a in value:
                    if isinstance(a, dict):
                        self._address_object(a, attach=False)
            # policies and other top-level keys: accepted, not modelled

    def _farm_object(self, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            self._check_key(key)
            if key in ("backends", "addresses") and self._farm is not None:
                self._changed.add(id(self._farm))
            if key == "backends":
                if isinstance(value, list):
                    for b in value:
                        if isinstance(b, dict):
                            self._backend_object(b)
                continue
            if key == "addresses":
                if isinstance(value, list):
                    for a in value:
                        if isinstance(a, dict):
                            self._address_object(a, attach=True)
                continue
            if key in ("policies", "sessions"):
                continue
            if isinstance(value, str):
                self._farm_key(key, value)

    def _current_farm(self) -> _Farm:
        if self._farm is None:
            raise _Fail(404, "the object to modify is unknown")
        return self._farm

    def _first_address(self, farm: _Farm) -> _Address:
        """The address farm-level shorthand keys change, creating ``<farm>-addr`` if none."""
        if farm.addresses:
            return self.addresses[farm.addresses[0]]
        name = f"{farm.name}-addr"
        i = 0
        while name in self.addresses:
            name = f"{farm.name}-addr-{i}"
            i += 1
        a = _Address(name, used=1)
        self.addresses[name] = a
        farm.addresses.append(name)
        self._address = a
        return a

    def _int(self, key: str, value: str, minimum: int) -> int:
        number = _atoi(value)
        if number < minimum:
            self._output.append(f". Invalid value of key '{key}' must be >={minimum}")
            raise _Fail(400)
        return number

    def _rate(self, key: str, value: str) -> tuple[int, str]:
        m = re.match(r"\s*([+-]?\d+)(?:/+([a-zA-Z]{1,99}))?", value)
        number = int(m.group(1)) if m else 0
        unit = (m.group(2) if m else None) or "second"
        if unit not in _UNITS:
            self._output.append(f". Parsing unknown value '{value}' in '{key}'")
            raise _Fail(400)
        return number, unit

    def _enum(self, key: str, value: str, allowed: tuple[str, ...], *, in_key: bool = True) -> str:
        if value in allowed:
            return value
        self._warn(value, key if in_key else None, allowed[0])
        return allowed[0]

    def _mask(self, key: str, value: str, tokens: tuple[str, ...], *, in_key: bool) -> int:
        if "none" in value:
            return 0
        mask = sum(1 << i for i, t in enumerate(tokens) if t in value)
        if not mask:
            self._warn(value, key if in_key else None, "none")
        return mask

    def _farm_key(self, key: str, value: str) -> None:
        if key == "name":
            if not value:
                self._output.append(". Key 'name' cannot be empty")
                raise _Fail(400)
            farm = self.farms.get(value)
            if farm is None:
                farm = self.farms[value] = _Farm(value)
            self._before.setdefault(id(farm), self._state(farm))
            self._farm = farm
            self._address = None
            self._touched.append(farm)
            return
        f = self._current_farm()
        self._changed.add(id(f))
        if (
            key in _STOP_KEYS
            and f.live
            and f.state == "up"  # an off farm has no rules to stop: its fields change quietly
            and id(f) not in self._stopped
            and self._changes(f, key, value)
        ):
            self._stop(f)
        if key == "newname":
            if not value:
                self._output.append(". Key 'newname' cannot be empty")
                raise _Fail(400)
            if value not in self.farms:
                self._rename(f, value)
        elif key == "family":
            self._first_address(f).family = self._enum(key, value, _FAMILIES)
        elif key == "virtual-addr":
            self._first_address(f).ip = value
        elif key == "virtual-ports":
            self._first_address(f).ports = value
        elif key == "protocol":
            self._first_address(f).protocol = self._enum(key, value, _PROTOCOLS)
        elif key == "mode":
            f.mode = self._enum(key, value, _MODES)
        elif key == "responsettl":
            f.responsettl = self._int(key, value, 0)
        elif key == "scheduler":
            scheduler = self._enum(key, value, _SCHEDULERS)
            if scheduler != f.scheduler:  # nftlb skips unchanged values
                f.scheduler = scheduler
                if scheduler == "hash" and not f.sched_param:
                    f.sched_param = 1
                if scheduler != "hash":
                    f.sched_param = 0
        elif key == "sched-param":
            f.sched_param = self._mask(key, value, _META, in_key=False)
        elif key == "persistence":
            f.persistence = self._mask(key, value, _META, in_key=False)
        elif key == "persist-ttl":
            f.persist_ttl = self._int(key, value, 0)
        elif key == "helper":
            helper = self._enum(key, value, _HELPERS)
            for name in f.addresses:
                protocol = self.addresses[name].protocol
                if helper not in _HELPERS_BY_PROTOCOL.get(protocol, {"none"}):
                    raise _Fail(400)
            f.helper = helper
        elif key == "log":
            f.log = self._mask(key, value, _LOG, in_key=True)
        elif key == "log-prefix":
            f.log_prefix = value
        elif key == "log-rtlimit":
            f.log_rtlimit = self._rate(key, value)
        elif key == "new-rtlimit":
            f.new_rtlimit = self._rate(key, value)
        elif key == "rst-rtlimit":
            f.rst_rtlimit = self._rate(key, value)
        elif key == "new-rtlimit-burst":
            f.new_rtlimit_burst = self._int(key, value, 0)
        elif key == "rst-rtlimit-burst":
            f.rst_rtlimit_burst = self._int(key, value, 0)
        elif key == "limits-ttl":
            f.limits_ttl = self._int(key, value, 0)
        elif key == "est-connlimit":
            f.est_connlimit = self._int(key, value, 0)
        elif key == "queue":
            f.queue = self._int(key, value, -1)
        elif key in ("tcp-strict", "flow-offload", "intra-connect"):
            setattr(f, key.replace("-", "_"), value == "on")
        elif key == "mark":
            f.mark = _strtol16(value)
        elif key == "priority":
            self._int(key, value, 1)  # computed by nftlb; the posted value is overwritten
        elif key == "state":
            state = self._enum(key, value, _STATES)
            if state != "config_error":
                if f.live and f.state == "up" and state != "up" and f.rules and self._ipv6(f):
                    self._wipe_ipv6(f)  # its rules stopped, as any stop of an IPv6 farm
                f.state = state
        elif key == "source-addr":
            f.source_addr = value
        elif key == "verdict":
            mask = sum(1 << i for i, v in enumerate(_VERDICTS) if v in value)
            if not mask:
                self._output.append(f". Parsing unknown value '{value}' in 'verdict'")
            else:
                f.verdict = mask
        elif key.endswith("-log-prefix"):
            f.prefixes[key] = value
        elif key == "action":
            if value == "delete":
                self._delete_farm(f.name)
            if value in ("stop", "start", "flush", "delete"):
                raise _Fail(500)
        elif key in ("fqdn", "iface", "oface", "ether-addr", "iether-addr", "oether-addr"):
            pass  # accepted, never echoed
        elif key == "used":
            pass
        else:
            raise _Fail(500)

    def _changes(self, f: _Farm, key: str, value: str) -> bool:
        """nftlb's ``farm_changed``, for the keys that stop and restart a farm's rules."""
        if key == "mode":
            return value != f.mode if value in _MODES else f.mode != "snat"
        if key in ("persistence", "log"):
            tokens = _META if key == "persistence" else _LOG
            mask = 0 if "none" in value else sum(1 << i for i, t in enumerate(tokens) if t in value)
            return mask != (f.persistence if key == "persistence" else f.log)
        if key == "persist-ttl":
            return _atoi(value) != f.persist_ttl
        if key == "helper":
            return (value if value in _HELPERS else "none") != f.helper
        if key in ("intra-connect", "flow-offload"):
            return (value == "on") != (
                f.intra_connect if key == "intra-connect" else f.flow_offload
            )
        if key == "limits-ttl":
            return _atoi(value) != f.limits_ttl
        if key == "source-addr":
            return value != f.source_addr
        if key in ("family", "virtual-addr", "virtual-ports", "protocol") and f.addresses:
            a = self.addresses[f.addresses[0]]
            if key == "family":
                return (value if value in _FAMILIES else "ipv4") != a.family
            if key == "protocol":
                return (value if value in _PROTOCOLS else "tcp") != a.protocol
            return value != (a.ip if key == "virtual-addr" else a.ports)
        return True

    def _stop(self, f: _Farm) -> None:
        """A farm-level change: nftlb deletes the farm's rules, changes the key, adds them back.

        Measured on 1.0.7 (see tests/e2e/test_nftlb_client_e2e.py): with several addresses
        the nft batch fails and nftlb rebuilds everything ("recovery"); the change is still
        applied, unless the failure came before it: for a farm with objects of its own, an
        IPv6 farm (with several addresses, or whose rules another IPv6 farm wiped), or a farm
        that had an address detached. Then the recovery resets the parser, the key is not
        applied, and nftlb answers 404. The same happens when the farm shares its ct helper
        object with another farm (`_shares_helper`). A successful change of one IPv6 farm
        wipes the others' rules."""
        self._stopped.add(id(f))  # farm_set_action: stopped once, started at the request's end
        ipv6 = self._ipv6(f)
        several = len(f.addresses) > 1
        fails_first = f.wedged or (ipv6 and (several or not f.rules))
        if (several and self._own_objects(f)) or self._shares_helper(f):
            fails_first = True
        if fails_first or several:
            self._recovery()
        if fails_first:
            self._rulerized()
            raise _Fail(404, "the object to modify is unknown")
        if ipv6:
            self._wipe_ipv6(f)

    def _rename(self, farm: _Farm, new: str) -> None:
        old = farm.name
        self.farms = {(new if k == old else k): v for k, v in self.farms.items()}
        farm.name = new
        default = f"{old}-addr"
        if default in farm.addresses and f"{new}-addr" not in self.addresses:
            a = self.addresses.pop(default)
            a.name = f"{new}-addr"
            self.addresses[a.name] = a
            farm.addresses[farm.addresses.index(default)] = a.name

    def _address_object(self, obj: dict[str, Any], *, attach: bool) -> None:
        for key, value in obj.items():
            self._check_key(key)
            if not isinstance(value, str):
                continue
            if key == "name":
                if not value:
                    self._output.append(". Key 'name' cannot be empty")
                    raise _Fail(400)
                if attach and self._farm is None:
                    raise _Fail(404, "the object to modify is unknown")
                a = self.addresses.get(value)
                if a is None:
                    a = self.addresses[value] = _Address(value)
                self._address = a
                if attach and self._farm is not None and value not in self._farm.addresses:
                    self._farm.addresses.append(value)
                    a.used += 1
                continue
            a = self._address
            if a is None:
                raise _Fail(404, "the object to modify is unknown")
            if key == "family":
                a.family = self._enum(key, value, _FAMILIES)
            elif key == "ip-addr":
                a.ip = value
            elif key == "ports":
                a.ports = value
            elif key == "protocol":
                a.protocol = self._enum(key, value, _PROTOCOLS)
            elif (
                key in ("used", "fqdn", "iface", "ether-addr", "iether-addr", "verdict")
                or key == "log-prefix"
            ):
                pass
            else:
                raise _Fail(500)

    def _next_mark(self) -> int:
        used = {b.mark for f in self.farms.values() for b in f.backends}
        return next((m for m in range(_MARK_MIN, _MARK_MAX + 1) if m not in used), 0)

    def _backend_object(self, obj: dict[str, Any]) -> None:
        f = self._current_farm()
        for key, value in obj.items():
            self._check_key(key)
            if not isinstance(value, str):
                continue
            if key == "name":
                if not value:
                    self._output.append(". Key 'name' cannot be empty")
                    raise _Fail(400)
                b = f.backend(value)
                if b is None:
                    b = _Backend(value, mark=self._next_mark())
                    f.backends.append(b)
                self._backend = b
                continue
            b_or_none = self._backend
            if b_or_none is None:
                raise _Fail(404, "the object to modify is unknown")
            b = b_or_none
            if key == "ip-addr":
                if not value:
                    self._output.append(". Key 'ip-addr' cannot be empty")
                    raise _Fail(400)
                b.ip = value
            elif key == "port":
                b.port = value
            elif key == "weight":
                b.weight = self._int(key, value, 1)
            elif key == "priority":
                b.priority = self._int(key, value, 1)
            elif key == "mark":
                mark = _strtol16(value)
                if _MARK_MIN <= mark <= _MARK_MAX:
                    b.mark = mark
            elif key == "state":
                state = self._enum(key, value, _STATES)
                state = "up" if state == "config_error" else state
                b.state = "config_error" if state == "up" and not b.ip else state
            elif key == "source-addr":
                b.source_addr = value
            elif key == "est-connlimit":
                b.est_connlimit = self._int(key, value, 0)
            elif key == "est-connlimit-log-prefix":
                b.est_connlimit_log_prefix = value
            elif key == "newname":
                b.name = value
            elif key == "action":
                if value == "delete":
                    f.backends.remove(b)
                    self._backend = None
                elif value == "stop":
                    b.state = "down"
                elif value == "start":
                    b.state = "up" if b.ip else "config_error"
            elif key in ("fqdn", "ether-addr", "used"):
                pass
            else:
                raise _Fail(500)

    def _validate_touched(self) -> None:
        """At rule time nftlb marks a farm whose helper does not fit its addresses."""
        for f in {id(f): f for f in self._touched}.values():
            if self.farms.get(f.name) is not f or f.helper == "none":
                continue
            protocols = {self.addresses[n].protocol for n in f.addresses}
            if any(f.helper not in _HELPERS_BY_PROTOCOL.get(p, {"none"}) for p in protocols):
                f.state = "config_error"
                self._output.append(f". Farm '{f.name}' doesn't validate helper protocol")
