"""The level-triggered loop: changes mark Services dirty; syncs make nftlb match.

A change never acts by itself. It marks the Services it touches (and drops updates that change
nothing the farms are made from); the sync runner then recomputes those Services, diffs their
farms against what nftlb holds as last read or written, and applies the minimal plan. A full sync
(at start, every resync period, and after any failure) reads everything back from nftlb and
corrects drift, including an nftlb restart. No sync runs before all caches have listed once, so
farms of Services not yet seen are never deleted.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from attrs import define, evolve, field

from reconciler.agent.health import ProxyHealthTracker, ServiceHealthServers
from reconciler.agent.metrics import Metrics
from reconciler.core.conntrack_plan import (
    ConntrackFilter,
    UdpFrontend,
    after_cleanup,
    conntrack_plan,
    udp_frontends,
)
from reconciler.core.desired import (
    Desired,
    ServiceFarms,
    frontend_farms,
    is_proxied,
    resolve,
    service_farms,
)
from reconciler.core.diff import (
    cleanup_ops,
    diff_marked,
    held_farms,
    marked_farms,
    without_backend,
)
from reconciler.core.farms import Family, Farm, Helper
from reconciler.core.health import ServiceHealth, health_check_ports, service_health
from reconciler.core.kube import ClusterState, EndpointSlice, Node, Service
from reconciler.core.node_diff import RuleIndex, delta_commands, diff_tables
from reconciler.core.node_rules import (
    TABLE_FAMILY,
    TABLE_NAME,
    Chain,
    Element,
    FrontendFarm,
    NodeRulesConfig,
    NodeTable,
    ServiceRules,
    service_rules,
    skeleton,
    table_of,
)
from reconciler.core.nodeports import NodePortAddresses
from reconciler.core.ownership import Conflict, ForeignFarm, conflict_problem, foreign_conflicts
from reconciler.core.plan import Operation, Plan
from reconciler.core.problems import ObjectRef, Problem
from reconciler.kernel.nftables import NftablesError
from reconciler.kubeapi.events import EventRecorder
from reconciler.nftlb.client import ApplyResult, NftlbClient, NftlbError, NftlbUnauthorized

ServiceKey = tuple[str, str]


class ConntrackCleaner(Protocol):
    """What the controller needs of the kernel's conntrack (kernel/conntrack.py)."""

    def cleanup(self, plan: ConntrackFilter) -> Sequence[Any]: ...


class NodeTableIO(Protocol):
    """What the controller needs of our nftables table (kernel/nftables.py)."""

    def read(self) -> NodeTable | None: ...

    def apply(self, commands: list[Any]) -> int: ...


class Cache(Protocol):
    """What the controller needs of an informer's store."""

    @property
    def has_synced(self) -> bool: ...

    def list(self) -> list[Any]: ...


@define
class Settings:
    node_name: str
    proxy_name: str = ""
    #: kube-proxy's --nodeport-addresses; the default is its nftables mode's, `primary`
    nodeport_addresses: NodePortAddresses = field(factory=NodePortAddresses)
    resync_period: float = 30.0
    min_sync_interval: float = 0.05
    sync_burst: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: After a sync of d seconds the next waits min(d, this): syncs up to this long leave nftlb
    #: idle as long as they kept it busy, longer ones at least this long, while a lone change
    #: after a short sync still goes at once. 0 turns the pacing off.
    pace_max: float = 5.0
    #: The node rules' settings; None: the table is not managed (tests of the farms alone).
    node_rules: NodeRulesConfig | None = None


@define
class SyncResult:
    kind: str
    ok: bool
    operations: int = 0
    requests: int = 0
    bytes_sent: int = 0
    desired: int = 0
    problems: int = 0
    error: str = ""
    table_commands: int = 0


@define
class _Bucket:
    """Token bucket: a lone change syncs at once, a storm is coalesced to one sync per interval."""

    capacity: int
    interval: float
    tokens: float = field(default=0.0)
    stamp: float = field(default=0.0)

    def __attrs_post_init__(self) -> None:
        self.tokens = float(self.capacity)

    def delay(self, now: float) -> float:
        if self.interval <= 0:
            return 0.0
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval

    def take(self) -> None:
        self.tokens -= 1


def _same(old: Any, new: Any) -> bool:
    """Equal apart from the resourceVersion: such an update changes no farm."""
    if old is None or new is None:
        return old is new
    return bool(evolve(old, resource_version="") == evolve(new, resource_version=""))


_Inputs = tuple[Service, tuple[EndpointSlice, ...], Node | None]


def _same_inputs(old: _Inputs | None, new: _Inputs) -> bool:
    """Whether a Service's farms computed from `old` are those of `new` too: the same Service,
    slices and node, by identity (informer stores keep unchanged objects) or else by value."""
    if old is None:
        return False
    (service, slices, node), (service2, slices2, node2) = old, new
    same = service is service2 and node is node2 and len(slices) == len(slices2)
    if same and all(a is b for a, b in zip(slices, slices2, strict=True)):
        return True
    return old == new


def _tuples(request: ServiceFarms) -> set[tuple[Any, ...]]:
    return {a.tuple_key for f in request.farms for a in f.addresses}


def _parse_time(value: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Controller:
    def __init__(
        self,
        settings: Settings,
        nftlb: NftlbClient,
        services: Cache,
        slices: Cache,
        nodes: Cache,
        metrics: Metrics,
        log: Any,
        events: EventRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        conntrack: ConntrackCleaner | None = None,
        proxy_health: ProxyHealthTracker | None = None,
        health_checks: ServiceHealthServers | None = None,
        node_table: NodeTableIO | None = None,
    ) -> None:
        self.conntrack, self.proxy_health, self.health_checks = (
            conntrack,
            proxy_health,
            health_checks,
        )
        self.settings, self.nftlb, self.metrics, self.log, self.events = (
            settings,
            nftlb,
            metrics,
            log,
            events,
        )
        self._caches = {"services": services, "endpointslices": slices, "nodes": nodes}
        self._clock = clock
        self._cond = threading.Condition()
        self._dirty: set[ServiceKey] = set()
        self._all_dirty = False
        self._full_needed = True
        self._triggers: dict[ServiceKey, float] = {}
        self._started = time.time()
        self._requests: dict[ServiceKey, ServiceFarms] = {}
        # What each Service's farms were computed from, so that a full sync reuses them when
        # nothing they depend on changed.
        self._inputs: dict[ServiceKey, _Inputs] = {}
        # What the last recompute decided: farms by name, each Service's farms and problems,
        # and which Services claim each (protocol, address, port).
        self._desired_map: dict[str, Farm] = {}
        self._wanted: dict[str, Farm] = {}
        self._replaced: dict[str, Farm | None] | None = None
        self._farms_of: dict[ServiceKey, list[str]] = {}
        self._problems_of: dict[ServiceKey, list[Problem]] = {}
        self._claims: dict[tuple[Any, ...], set[ServiceKey]] = {}
        # Indexes kept from events, so a partial sync reads only the dirty Services' objects.
        self._services: dict[ServiceKey, Service] = {}
        self._slices: dict[ServiceKey, dict[tuple[str, str], EndpointSlice]] = {}
        self._node: Node | None = None
        self._actual: dict[str, Farm] = {}  # what nftlb holds, spares included (`held_after`)
        self._spares: set[str] = set()  # farms of `_actual` holding spares to clean up
        # Farms in nftlb without kube-nftlb's marker, as read at the last full sync, and the
        # desired farms withheld because one of them holds their name or frontend.
        self._foreign: tuple[ForeignFarm, ...] = ()
        self._conflicts: dict[str, Conflict] = {}
        self._bucket = _Bucket(settings.sync_burst, settings.min_sync_interval)
        self._quiet_until = 0.0  # the pacing: no sync starts before this (`Settings.pace_max`)
        self._next_full = 0.0
        self._failures = 0
        self._reported: set[Problem] = set()
        # UDP frontends (for conntrack cleanup) and health checks, per Service, recomputed with
        # its farms; and the UDP frontends as the last successful conntrack cleanup left them.
        self._udp: dict[ServiceKey, tuple[UdpFrontend, ...]] = {}
        self._cleaned: dict[ServiceKey, tuple[UdpFrontend, ...]] = {}
        self._health_of: dict[ServiceKey, ServiceHealth] = {}
        self._health_reported: set[Problem] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by `stop` and `restarted`: ends a backoff early
        self._thread: threading.Thread | None = None
        self.last_result: SyncResult | None = None
        self.heartbeat = clock()
        self.ready = False
        # The node rules: each Service's share merged with reference counts, what each share
        # was computed from, the skeleton last written, and whether the kernel's table is known
        # to equal the index (false at start and after a failure: the next write is a full one).
        self._table = node_table if settings.node_rules is not None else None
        self._rules = RuleIndex()
        self._share_inputs: dict[ServiceKey, tuple[Any, ...]] = {}
        self._skeleton: NodeTable | None = None
        self._table_in_sync = False
        self._affected: set[ServiceKey] = set()

    # -- change tracking (called from informer threads) -------------------------------------

    def on_service(self, key: ServiceKey, old: Service | None, new: Service | None) -> None:
        with self._cond:
            if new is None:
                self._services.pop(key, None)
            else:
                self._services[key] = new
            self.metrics.service_event(key, changed=not _same(old, new))
        if not _same(old, new):
            self._mark([key])

    def on_slice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        with self._cond:
            if old is not None:
                self._slices.get((old.namespace, old.service_name), {}).pop(
                    (old.namespace, old.name), None
                )
            if new is not None:
                self._slices.setdefault((new.namespace, new.service_name), {})[
                    (new.namespace, new.name)
                ] = new
            self.metrics.slice_event(changed=not _same(old, new))
        if _same(old, new):
            return
        keys = {(s.namespace, s.service_name) for s in (old, new) if s is not None}
        if new is not None and new.trigger_time:
            stamp = _parse_time(new.trigger_time)
            # As kube-proxy: a change from before this agent started is not its latency.
            if stamp is not None and stamp >= self._started:
                with self._cond:
                    for k in keys:
                        self._triggers.setdefault(k, stamp)
        self._mark(keys)

    def on_node(self, old: Node | None, new: Node | None) -> None:
        current = new or old
        if current is None or current.name != self.settings.node_name:
            return
        with self._cond:
            self._node = new
        if self.proxy_health is not None:
            self.proxy_health.node = new
        if not _same(old, new):
            self._queued()
            with self._cond:
                self._all_dirty = True
                self._cond.notify()

    def _queued(self) -> None:
        self.metrics.queued(time.time())
        if self.proxy_health is not None:
            self.proxy_health.queued()

    def _mark(self, keys: Iterable[ServiceKey]) -> None:
        self._queued()
        with self._cond:
            self._dirty.update(keys)
            self.metrics.pending_changes.set(len(self._dirty))
            self._cond.notify()

    def request_full_sync(self) -> None:
        self._queued()
        with self._cond:
            self._full_needed = True
            self._cond.notify()

    def nftlb_tables(self) -> set[tuple[str, str]]:
        """The nftlb tables that must exist: those of the families of the farms programmed."""
        families = {f.family for f in list(self._actual.values())}
        return {("ip" if f is Family.IPV4 else "ip6", "nftlb") for f in families}

    def node_tables(self) -> set[tuple[str, str]]:
        """Our own table, once written: the watchdog then notices it vanishing (deleted behind
        our back, a flushed ruleset) within about a second instead of at the next resync."""
        if self._table is None or self._skeleton is None:
            return set()
        return {(TABLE_FAMILY, TABLE_NAME)}

    def restarted(self, target: str) -> None:
        """The watchdog saw `target` (nftlb, or a table of ours) restart: a full sync now, even
        in the middle of a failure backoff (the failures were likely the restart itself)."""
        self._failures = 0
        with self._cond:
            self._quiet_until = 0.0  # an empty nftlb is not protected by waiting
        self.request_full_sync()
        self._wake.set()

    # -- the runner ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(c.has_synced for c in self._caches.values())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = self._clock()
            kind = self._wait_for_work()
            if kind is None:
                continue
            # the cleanup yields to any work, so it sets no pause before it
            result = self._sync_guarded(kind) if kind == "cleanup" else self._sync_paced(kind)
            if result.ok:
                self._failures = 0
            else:
                self._failures += 1
                delay = min(
                    self.settings.backoff_max,
                    self.settings.backoff_initial * 2 ** (self._failures - 1),
                )
                self._wake.wait(delay)
                self._wake.clear()

    def _sync_paced(self, kind: str) -> SyncResult:
        """One sync, then the pause after it (`Settings.pace_max`).

        Under sustained churn a back-to-back loop keeps nftlb writing for good. The pause
        coalesces the churn into fewer, larger syncs and gives nftlb idle time (issue 11's
        soak, 2,000 Services, 500 endpoint replacements a second: syncs of ~2 s, each followed
        by as long a pause, nftlb ~30 % busy); a short sync barely pauses.
        """
        began = self._clock()
        result = self._sync_guarded(kind)
        ended = self._clock()
        with self._cond:
            self._quiet_until = ended + min(ended - began, self.settings.pace_max)
        return result

    def _sync_guarded(self, kind: str) -> SyncResult:
        """One sync; an exception nobody expected fails this sync only, never the loop.

        Before this, one (a farm name ending in a newline, which httpx refused as a URL) killed
        the sync thread for good while /readyz stayed 200 (issue 16). The caches of the
        partial syncs may be half updated, so the next sync is a full one computed afresh.
        """
        started = time.perf_counter()
        try:
            if kind == "cleanup":
                return self.sync_cleanup()
            return self.sync_full() if kind == "full" else self.sync_partial()
        except Exception as e:
            self.ready = False
            with self._cond:
                self._full_needed = True
                self._inputs = {}
            self.metrics.sync_errors.labels(kind=kind).inc()
            self.metrics.unexpected_errors.labels(where="sync").inc()
            self.log.error(
                "sync.crashed",
                exc_info=True,
                kind=kind,
                error=str(e),
                error_type=type(e).__name__,
                hint="a bug: please report it with this log line; retrying with backoff",
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            result = SyncResult(kind, ok=False, error=f"{type(e).__name__}: {e}")
            self.last_result = result
            return result

    def _wait_for_work(self) -> str | None:
        with self._cond:
            now = self._clock()
            if not self.synced:
                self._cond.wait(0.1)
                return None
            full_due, due = self._work_due(now)
            if not due:
                if self._spares and now >= self._quiet_until:
                    return "cleanup"
                wait = self._next_full - now
                if self._spares:
                    wait = min(wait, self._quiet_until - now)
                self._cond.wait(max(0.0, min(wait, 1.0)))
                return None
            wait = max(self._bucket.delay(now), self._quiet_until - now)
            if wait > 0:
                self._cond.wait(wait)
                return None
            self._bucket.take()
            return "full" if full_due else "partial"

    # -- syncs ---------------------------------------------------------------------------------

    def _state(self) -> ClusterState:
        """Everything, from the caches; the event indexes are rebuilt from the same lists."""
        services = self._caches["services"].list()
        slices = self._caches["endpointslices"].list()
        nodes = self._caches["nodes"].list()
        with self._cond:
            self._services = {s.key: s for s in services}
            self._slices = {}
            for sl in slices:
                self._slices.setdefault((sl.namespace, sl.service_name), {})[
                    (sl.namespace, sl.name)
                ] = sl
            self._node = next((n for n in nodes if n.name == self.settings.node_name), None)
        return ClusterState.build(services, slices, nodes)

    def _state_for(self, keys: Iterable[ServiceKey]) -> ClusterState:
        """Only what the dirty Services need: their objects, their slices and this node."""
        with self._cond:
            services = [self._services[k] for k in keys if k in self._services]
            slices = [sl for k in keys for sl in self._slices.get(k, {}).values()]
            nodes = [self._node] if self._node is not None else []
        return ClusterState.build(services, slices, nodes)

    def _recompute(self, state: ClusterState, keys: set[ServiceKey] | None) -> Desired:
        """Recompute the Services in `keys` (all when None) and decide conflicts.

        A partial recompute re-decides only the Services that share a frontend with the dirty
        ones (conflicts cannot reach further), so its cost follows the change, not the cluster;
        a helper, decided across all farms, falls back to deciding everything.
        """
        s = self.settings
        if keys is None:
            node = state.nodes.get(s.node_name)
            inputs = {k: (svc, state.slices_for(svc), node) for k, svc in state.services.items()}
            self._requests = {
                k: (
                    self._requests[k]
                    if _same_inputs(self._inputs.get(k), now)
                    else service_farms(
                        now[0], state, s.node_name, s.proxy_name, s.nodeport_addresses
                    )
                )
                for k, now in inputs.items()
            }
            self._inputs = inputs
            self._udp, self._health_of = {}, {}
            for k, service in state.services.items():
                self._node_side(k, service, state)
            self._claims = {}
            for k, request in self._requests.items():
                for t in _tuples(request):
                    self._claims.setdefault(t, set()).add(k)
            return self._resolve(set(self._requests), everything=True)
        touched: set[tuple[Any, ...]] = set()
        node = state.nodes.get(s.node_name)
        for k in keys:
            self._inputs.pop(k, None)
            old = self._requests.pop(k, None)
            if old is not None:
                for t in _tuples(old):
                    touched.add(t)
                    self._claims.get(t, set()).discard(k)
            svc = state.services.get(k)
            self._udp.pop(k, None)
            self._health_of.pop(k, None)
            if svc is not None:
                self._node_side(k, svc, state)
                self._requests[k] = new = service_farms(
                    svc, state, s.node_name, s.proxy_name, s.nodeport_addresses
                )
                self._inputs[k] = (svc, state.slices_for(svc), node)
                for t in _tuples(new):
                    touched.add(t)
                    self._claims.setdefault(t, set()).add(k)
        affected = set(keys)
        for t in touched:
            affected |= self._claims.get(t, set())
        old_farms = (self._desired_map.get(n) for k in affected for n in self._farms_of.get(k, ()))
        new_farms = (f for k in affected if k in self._requests for f in self._requests[k].farms)
        helpers = any(
            f is not None and f.helper is not Helper.NONE for f in (*old_farms, *new_farms)
        )
        return self._resolve(affected, everything=helpers)

    def _node_side(self, key: ServiceKey, service: Service, state: ClusterState) -> None:
        """A Service's UDP frontends and health check, beside its farms."""
        s = self.settings
        udp = udp_frontends(service, state, s.node_name, s.proxy_name, s.nodeport_addresses)
        if udp:
            self._udp[key] = udp
        health = service_health(service, state, s.node_name, s.proxy_name)
        if health is not None:
            self._health_of[key] = health

    def _resolve(self, affected: set[ServiceKey], *, everything: bool) -> Desired:
        if everything:
            affected = set(self._requests) | set(self._farms_of)
        self._affected = affected
        sub = resolve(
            (self._requests[k] for k in affected if k in self._requests), self._desired_map
        )
        # Deciding everything starts afresh; deciding a few Services edits the map in place and
        # keeps the values it replaced, so that neither costs a pass over every farm.
        wanted: dict[str, Farm] = {} if everything else self._desired_map
        replaced: dict[str, Farm | None] | None = None if everything else {}
        for k in affected:
            for name in self._farms_of.pop(k, ()):
                if replaced is not None:
                    replaced.setdefault(name, wanted.get(name))
                wanted.pop(name, None)
            self._problems_of.pop(k, None)
        owners = dict(sub.owners)
        for farm in sub.farms:
            if replaced is not None:
                replaced.setdefault(farm.name, wanted.get(farm.name))
            wanted[farm.name] = farm
            self._farms_of.setdefault(owners[farm.name], []).append(farm.name)
        self._replaced = replaced
        for p in sub.problems:
            self._problems_of.setdefault((p.ref.namespace, p.ref.name), []).append(p)
        self._wanted = wanted
        problems = tuple(p for ps in self._problems_of.values() for p in ps)
        return Desired(tuple(wanted.values()), problems)

    @property
    def conflicts(self) -> tuple[Conflict, ...]:
        """Desired farms withheld because a foreign farm holds their name or frontend."""
        return tuple(sorted(self._conflicts.values()))

    def _withhold(self, desired: Desired, farms: Iterable[Farm]) -> tuple[Desired, list[Farm]]:
        """The farms that may be sent: none whose name or frontend a foreign farm holds (as read
        at the last full sync); each one withheld is a ForeignFarm problem of its Service."""
        farms = list(farms)
        for c in foreign_conflicts(farms, self._foreign) if self._foreign else ():
            self._conflicts[c.farm] = c
        self.metrics.foreign_conflicts.set(len(self._conflicts))
        if not self._conflicts:
            return desired, farms
        owner = {n: k for k, names in self._farms_of.items() for n in names if n in self._conflicts}
        problems = [conflict_problem(c, owner[c.farm]) for c in self.conflicts if c.farm in owner]
        kept = [f for f in farms if f.name not in self._conflicts]
        return evolve(desired, problems=(*desired.problems, *problems)), kept

    def sync_full(self) -> SyncResult:
        """Everything: recompute all Services, read nftlb back, correct any drift."""
        started = time.perf_counter()
        wall = time.time()
        with self._cond:
            self._dirty.clear()
            self._all_dirty = False
            self._full_needed = False
            triggers, self._triggers = self._triggers, {}
            self.metrics.changes_taken()
        try:
            desired = self._recompute(self._state(), None)
            wanted = self._wanted
            read = self.nftlb.get_farms()
            self.metrics.nftlb_requests.labels(outcome="success").inc()
            self._foreign = read.foreign_farms
            self._conflicts = {}
            desired, kept = self._withhold(desired, desired.farms)
            marked = marked_farms(kept, read.owned)
            plan = diff_marked(marked, read.owned, read.unparsable)
            result = self._apply("full", plan, desired)
            self._actual = held_farms(marked, read.owned, plan)
            self._spares = {n for n, f in self._actual.items() if f is not marked[n]}
            self.metrics.actual_farms.set(len(marked))
            self._count_spares()
        except NftlbError as e:
            return self._failed("full", e, started, triggers)
        result = self._sync_table(result, None)
        self._desired_map = wanted
        self._next_full = self._clock() + self.settings.resync_period
        if result.ok:
            self._after_sync(None, wall)
        return self._done(result, started, triggers)

    def sync_partial(self) -> SyncResult:
        """Only the dirty Services: diff their farms against nftlb as last read or written."""
        started = time.perf_counter()
        wall = time.time()
        with self._cond:
            keys: set[ServiceKey] | None = None if self._all_dirty else set(self._dirty)
            self._dirty.clear()
            self._all_dirty = False
            triggers, self._triggers = self._triggers, {}
            self.metrics.changes_taken()
        state = self._state() if keys is None else self._state_for(keys)
        before = self._desired_map
        desired = self._recompute(state, keys)
        wanted = self._wanted
        if self._replaced is None:  # decided afresh: any farm may differ
            old = {n: before.get(n) for n in wanted.keys() | before.keys() | self._actual.keys()}
        else:  # decided in place: only the farms replaced can differ
            old = self._replaced
        changed = {
            n
            for n, was in old.items()
            if wanted.get(n) != was or (n in wanted) != (n in self._actual)
        }
        held = [self._actual[n] for n in changed if n in self._actual]
        for n in changed:
            self._conflicts.pop(n, None)
        desired, kept = self._withhold(desired, (wanted[n] for n in changed if n in wanted))
        marked = marked_farms(kept, held)
        plan = diff_marked(marked, held)
        try:
            result = self._apply("partial", plan, desired)
        except NftlbError as e:
            self.request_full_sync()
            return self._failed("partial", e, started, triggers)
        now_held = held_farms(marked, held, plan)
        for n in changed:
            self._spares.discard(n)
            if n in marked:
                self._actual[n] = now_held[n]
                if self._actual[n] is not marked[n]:
                    self._spares.add(n)
            else:
                self._actual.pop(n, None)
        self.metrics.actual_farms.set(len(self._actual))
        self._count_spares()
        result = self._sync_table(result, None if keys is None else self._affected)
        self._desired_map = wanted
        if result.ok:
            self._after_sync(keys, wall)
        return self._done(result, started, triggers)

    def _work_due(self, now: float) -> tuple[bool, bool]:
        """Whether a full sync is due, and whether any sync is (the caller holds `_cond`)."""
        full = self._full_needed or now >= self._next_full
        return full, full or bool(self._dirty) or self._all_dirty

    def _work_waiting(self) -> bool:
        with self._cond:
            return self._stop.is_set() or self._work_due(self._clock())[1]

    def _count_spares(self) -> None:
        self.metrics.spare_backends.set(
            sum(
                len(self._actual[n].backends) - len(self._wanted[n].backends)
                for n in self._spares
                if n in self._actual and n in self._wanted
            )
        )

    def sync_cleanup(self) -> SyncResult:
        """Delete spares (`Plan.cleanup`) one request at a time while nothing else waits.

        A spare is out of every map, so deleting it changes nothing traffic sees, but costs
        nftlb 1.0.7 a batch (~45 ms at 2,000 farms). Any change or resync that comes in
        stops the cleanup before its next request, and a later plan takes remaining spares
        over for new backends instead; after each delete of d seconds it pauses d seconds,
        so that nftlb stays at most half busy with it.
        """
        started = time.perf_counter()
        deleted = requests = 0
        result = SyncResult("cleanup", ok=True)
        for name in sorted(self._spares):
            farm, want = self._actual.get(name), self._wanted.get(name)
            ops = cleanup_ops(farm, (b.name for b in want.backends)) if farm and want else []
            for op in ops:
                if self._work_waiting():
                    break
                began = time.perf_counter()  # nftlb's real time, whatever the clock
                try:
                    applied = self._send(Plan((op,)))
                except NftlbError as e:
                    self.request_full_sync()
                    result = SyncResult("cleanup", ok=False, error=str(e))
                    break
                assert applied is not None and farm is not None  # a plan of one; ops needs farm
                requests += applied.requests
                if applied.failures:
                    result = SyncResult("cleanup", ok=False, error=applied.failures[0].message)
                    break
                farm = without_backend(farm, op.target)
                self._actual[name] = farm
                deleted += 1
                with self._cond:
                    self._cond.wait(time.perf_counter() - began)
            else:
                self._spares.discard(name)
                continue
            break
        self._count_spares()
        self.log.info(
            "nftlb.cleanup",
            ok=result.ok,
            deleted=deleted,
            requests=requests,
            farms_left=len(self._spares),
            error=result.error or None,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if not result.ok:
            self.metrics.sync_errors.labels(kind="cleanup").inc()
        return result

    # -- after a successful sync: health checks, conntrack, proxy health ------------------------

    def _after_sync(self, keys: set[ServiceKey] | None, started: float) -> None:
        """What kube-proxy does once its rules are in: health servers, then conntrack [NFT]."""
        if self.health_checks is not None:
            ports, problems = health_check_ports(self._health_of.values())
            self.health_checks.sync(ports)
            fresh = sorted(set(problems) - self._health_reported)
            self._health_reported = set(problems)
            for p in fresh:
                self._log_problem(p)
        if self.conntrack is not None:
            self._clean_conntrack(keys)
        if self.proxy_health is not None:
            self.proxy_health.updated(started)

    def _clean_conntrack(self, keys: set[ServiceKey] | None) -> None:
        """Delete the stale UDP entries of the frontends that changed (all, after a restart or
        a failed cleanup); a failure is logged, counted and retried after the next sync."""
        assert self.conntrack is not None
        if keys is None:
            desired: dict[ServiceKey, tuple[UdpFrontend, ...]] = self._udp
        else:
            desired = {k: self._udp.get(k, ()) for k in keys}
        plan = conntrack_plan(self._cleaned, desired)
        if plan:
            try:
                results = self.conntrack.cleanup(plan)
            except Exception as e:
                self._cleaned = {}  # check everything next time
                for family in plan.families:
                    self.metrics.conntrack_errors.labels(ip_family=family.value).inc()
                self.log.error("conntrack.failed", error=str(e), error_type=type(e).__name__)
                return
            for r in results:
                family = r.family.value
                self.metrics.conntrack_deleted.labels(ip_family=family).inc(r.deleted)
                self.metrics.conntrack_duration.labels(ip_family=family).observe(r.duration)
                self.log.info(
                    "conntrack.cleanup",
                    ip_family=family,
                    frontends=sum(1 for f in plan.frontends if f[0] is r.family),
                    listed=r.listed,
                    deleted=r.deleted,
                    duration_ms=round(r.duration * 1000, 2),
                )
        self._cleaned = after_cleanup(self._cleaned, desired, None if keys is None else keys)

    # -- the node rules (our nftables table) ------------------------------------------------

    def _share(self, key: ServiceKey) -> ServiceRules | None:
        """What one Service adds to the table, from the farms it won; reused while nothing it
        is made from changed."""
        s = self.settings
        assert s.node_rules is not None
        with self._cond:
            service = self._services.get(key)
            slices = tuple(sorted(self._slices.get(key, {}).values(), key=lambda x: x.name))
            node = self._node
        if service is None or not is_proxied(service, s.proxy_name):
            self._share_inputs.pop(key, None)
            return None
        farms = tuple(self._wanted[n] for n in self._farms_of.get(key, ()) if n in self._wanted)
        inputs = (service, slices, node, farms)
        cached = self._share_inputs.get(key)
        if cached is not None and cached[0] == inputs:
            share: ServiceRules = cached[1]
            return share
        names = frontend_farms(service, node, s.nodeport_addresses)
        fronts = [FrontendFarm(f, *names[f.name]) for f in farms if f.name in names]
        share = service_rules(service, fronts, slices, node, s.node_name, s.node_rules)
        self._share_inputs[key] = (inputs, share)
        return share

    def _sync_table(self, result: SyncResult, keys: set[ServiceKey] | None) -> SyncResult:
        """Bring the table in line after the farms: the Services in `keys` only (a partial
        sync, one small transaction), or everything read back and diffed (`keys` None)."""
        if self._table is None:
            return result
        config = self.settings.node_rules
        assert config is not None
        with self._cond:
            node = self._node
        base = skeleton(config, node)
        try:
            if keys is None or not self._table_in_sync or base != self._skeleton:
                with self._cond:
                    everyone = set(self._services)
                for k in everyone | self._rules.owners():
                    self._rules.replace(k, self._share(k) if k in everyone else None)
                desired = table_of(base, self._rules.shares())
                self._table_in_sync = False
                commands = diff_tables(desired, self._table.read())
            else:
                added: set[Element] = set()
                removed: set[Element] = set()
                chains: dict[str, Chain | None] = {}
                for k in sorted(keys):
                    plus, minus, changed = self._rules.replace(k, self._share(k))
                    for e in minus:
                        if e in added:
                            added.discard(e)
                        else:
                            removed.add(e)
                    for e in plus:
                        if e in removed:
                            removed.discard(e)
                        else:
                            added.add(e)
                    chains.update(changed)
                commands = delta_commands(base.sets, added, removed, chains)
            self._table.apply(commands)
        except NftablesError as e:
            self._table_in_sync = False
            self.request_full_sync()
            self.metrics.node_table_failures.inc()
            self.log.error("nodetable.failed", error=str(e), hint="retried by a full sync")
            return evolve(result, ok=False, error="; ".join(x for x in (result.error, str(e)) if x))
        self._skeleton = base
        self._table_in_sync = True
        self.metrics.node_table_commands.inc(len(commands))
        return evolve(result, table_commands=len(commands))

    def _send(self, plan: Plan) -> ApplyResult | None:
        """Log, apply and count a plan's operations, and log each farm nftlb refused (a full
        sync follows then). None when there was nothing to send."""
        for op in plan:
            self._log_operation(op)
        applied = (
            self.nftlb.apply(plan, cancelled=self._stop.is_set)
            if plan or self.nftlb.repair_pending
            else None
        )
        for op in plan:
            self.metrics.plan_operations.labels(op=op.kind.value).inc()
        if applied is None:
            return None
        self.metrics.nftlb_requests.labels(outcome="success").inc(applied.requests)
        self.metrics.nftlb_bytes.inc(applied.bytes_sent)
        for failure in applied.failures:
            self.log.error(
                "nftlb.farm_failed",
                farm=failure.farm,
                op=failure.kind.value,
                status=failure.status,
                error=failure.message,
                request=failure.request,
            )
        if applied.failures:
            self.request_full_sync()
        return applied

    def _apply(self, kind: str, plan: Plan, desired: Desired) -> SyncResult:
        """Apply the plan but its cleanup, which `sync_cleanup` does when nothing waits."""
        plan = plan.main
        applied = self._send(plan)
        requests = applied.requests if applied else 0
        sent = applied.bytes_sent if applied else 0
        failures = tuple(applied.failures) if applied else ()
        self._report(desired)
        return SyncResult(
            kind,
            ok=not failures,
            operations=len(plan),
            requests=requests,
            bytes_sent=sent,
            desired=len(desired.farms),
            problems=len(desired.problems),
            error="; ".join(f"{f.farm}: {f.message}" for f in failures),
        )

    def _log_operation(self, op: Operation) -> None:
        self.log.info(
            "nftlb.operation",
            farm=op.farm_name,
            op=op.kind.value,
            target=op.target or None,
            changes=[c.to_json() for c in op.changes],
        )

    def _log_problem(self, p: Problem, **extra: Any) -> None:
        self.log.warning(
            "service.problem",
            service=f"{p.ref.namespace}/{p.ref.name}",
            reason=p.reason,
            message=p.message,
            key=p.key or None,
            value=p.value or None,
            **extra,
        )

    def _report(self, desired: Desired) -> None:
        self.metrics.desired_farms.set(len(desired.farms))
        self.metrics.problems.set(len(desired.problems))
        current = set(desired.problems)
        fresh = sorted(current - self._reported)
        self._reported = current
        for p in fresh:
            self._log_problem(p, allowed=list(p.allowed) or None)
        # After the log lines: an Event is an API call that may be slow or fail.
        if self.events is not None:  # hands them to its worker: never waits for the API
            self.events.record(desired.problems, self._uid)

    def _uid(self, ref: ObjectRef) -> str:
        svc = self._services.get((ref.namespace, ref.name))
        return svc.uid if svc is not None else ""

    def _done(
        self, result: SyncResult, started: float, triggers: dict[ServiceKey, float]
    ) -> SyncResult:
        duration = time.perf_counter() - started
        self.metrics.sync_finished(
            result.kind, duration, result.ok, triggers.values(), now=time.time()
        )
        if result.ok:
            self.ready = True
            if self._table is not None:  # what the table just written drops
                self.metrics.no_local_endpoints(self._rules.no_local_endpoints())
        else:
            self._keep_triggers(triggers)
        self.log.info(
            "sync.done",
            kind=result.kind,
            ok=result.ok,
            duration_ms=round(duration * 1000, 2),
            desired_farms=result.desired,
            operations=result.operations,
            requests=result.requests,
            bytes_sent=result.bytes_sent,
            problems=result.problems,
            table_commands=result.table_commands,
        )
        self.last_result = result
        return result

    def _keep_triggers(self, triggers: dict[ServiceKey, float]) -> None:
        """A failed sync programmed nothing for sure: the changes' latency runs on to the sync
        that does (kube-proxy keeps them the same way)."""
        with self._cond:
            for k, stamp in triggers.items():
                self._triggers[k] = min(stamp, self._triggers.get(k, stamp))

    def _failed(
        self,
        kind: str,
        error: NftlbError,
        started: float,
        triggers: dict[ServiceKey, float] | None = None,
    ) -> SyncResult:
        self._keep_triggers(triggers or {})
        self.ready = False
        self._queued()
        with self._cond:
            self._full_needed = True
        duration = time.perf_counter() - started
        self.metrics.sync_finished(kind, duration, False, (), now=time.time())
        self.metrics.nftlb_requests.labels(outcome="error").inc()
        hint = (
            "check --nftlb-key-file"
            if isinstance(error, NftlbUnauthorized)
            else "retrying with backoff"
        )
        self.log.error(
            "sync.failed",
            kind=kind,
            error=str(error),
            error_type=type(error).__name__,
            hint=hint,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        result = SyncResult(kind, ok=False, error=str(error))
        self.last_result = result
        return result
