"""The fake's state: objects, the global resourceVersion, event history and open watches.

Everything here runs under one lock. A write bumps the RV, stores a fresh dict and fans the
change out to every matching watcher's queue before the lock is released, so every watcher
sees changes in RV order. Stored dicts are never mutated after they are committed (every
write builds a new one), which lets the HTTP threads serialise them without the lock.
"""

from __future__ import annotations

import copy
import ipaddress
import queue
import random
import socket
import threading
import uuid
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from . import patches
from .errors import ApiError, JsonDict, bad_request
from .resources import SERVICE, ResourceType, dig, invalid
from .selectors import FieldSelector, LabelSelector

StatusMode = Literal["spec", "status", "all", "hook"]
"""How a write treats ``.status``.

``spec``: the main resource of a kind with a status subresource, which keeps the old status.
``status``: the ``/status`` subresource, which changes only the status.
``all``: kinds without a status subresource; the body is the whole object.
``hook``: test hooks; a body's status is written as given, a body without one keeps the old.
"""

Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped kinds."""

DROP = "_DROP"
CLOSE = "_CLOSE"
_SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
_NODE_PORTS = range(30000, 32768)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_rv(obj: JsonDict, rv: int) -> JsonDict:
    """A shallow copy carrying another resourceVersion (DELETED events use the delete's RV)."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


def selected(
    rtype: ResourceType,
    namespace: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
    obj: JsonDict,
) -> bool:
    """Whether a list or watch with these parameters includes ``obj``."""
    if namespace is not None and dig(obj, "metadata", "namespace") != namespace:
        return False
    if not labels.matches(dig(obj, "metadata", "labels")):
        return False
    return fields.matches(rtype.field_values(obj))


class Change(NamedTuple):
    """One committed change; ``obj`` is the new state (for DELETED: the last state, new RV)."""

    rv: int
    type: str
    obj: JsonDict
    prev: JsonDict | None


class Expired(Exception):
    """A watch asked to resume from before the oldest RV the history can replay."""


@dataclass(eq=False)
class Watcher:
    """One open watch: its filter, what it has been told, and the queue its thread drains."""

    rtype: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    bookmarks: bool
    queue: queue.Queue[tuple[str, JsonDict]]
    sock: socket.socket | None = None
    sent_rv: int = 0
    """The RV this watcher's client is known to be up to date with (start RV or last event)."""
    dropped: bool = False
    terminate: bool = False
    stall_until: float = 0.0

    def passes(self, obj: JsonDict) -> bool:
        return selected(self.rtype, self.namespace, self.labels, self.fields, obj)

    def translate(self, change: Change) -> tuple[str, JsonDict] | None:
        """Apply the selector edge rule: leaving the selection is DELETED, entering ADDED."""
        now = change.type != "DELETED" and self.passes(change.obj)
        before = change.prev is not None and self.passes(change.prev)
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before and change.prev is not None:
            return ("DELETED", with_rv(change.prev, change.rv))
        return None

    def push(self, message: tuple[str, JsonDict]) -> None:
        """Queue a message; a watcher that cannot keep up is ended, like the apiserver does."""
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.terminate = True


@dataclass
class Store:
    """Objects by storage and key, plus history rings and watchers; see the module docstring."""

    history_size: int = 1000
    watch_queue_size: int = 10_000
    lock: threading.RLock = field(default_factory=threading.RLock)
    rv: int = 1
    """The RV of the empty store is 1, as for a fresh etcd, so a watch from "1" replays all."""
    objects: dict[str, dict[Key, JsonDict]] = field(default_factory=dict)
    history: dict[str, deque[Change]] = field(default_factory=dict)
    floors: dict[str, int] = field(default_factory=dict)
    global_floor: int = 0
    watchers: set[Watcher] = field(default_factory=set)
    _ip_cursor: int = 0
    _port_cursor: int = 0
    #: How many Services hold each cluster IP, kept by `_commit`: checking a new Service's IP
    #: against every Service made each create cost O(Services) (13-18 ms at 5,000), where a real
    #: API server's allocator bitmap costs O(1).
    _ip_holders: dict[str, int] = field(default_factory=dict)

    # ----------------------------------------------------------------- reading

    def bucket(self, rtype: ResourceType) -> dict[Key, JsonDict]:
        return self.objects.setdefault(rtype.storage_key, {})

    def key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return ((namespace or "") if rtype.namespaced else "", name)

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonDict:
        with self.lock:
            obj = self.bucket(rtype).get(self.key(rtype, namespace, name))
        if obj is None:
            raise not_found(rtype, name)
        return obj

    def select(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> tuple[list[JsonDict], int]:
        """Matching objects sorted by key, and the RV the list was built at."""
        with self.lock:
            items = [
                obj
                for _, obj in sorted(self.bucket(rtype).items())
                if selected(rtype, namespace, labels, fields, obj)
            ]
            return items, self.rv

    def floor(self, rtype: ResourceType) -> int:
        return max(self.global_floor, self.floors.get(rtype.storage_key, 0))

    # ----------------------------------------------------------------- committing

    def _commit(
        self, rtype: ResourceType, key: Key, new: JsonDict | None, prev: JsonDict | None
    ) -> Change:
        self.rv += 1
        bucket = self.bucket(rtype)
        if rtype.storage_key == SERVICE.storage_key:
            for ip in _service_ips(prev):
                self._ip_holders[ip] -= 1
                if not self._ip_holders[ip]:
                    del self._ip_holders[ip]
            for ip in _service_ips(new):
                self._ip_holders[ip] = self._ip_holders.get(ip, 0) + 1
        if new is None:
            assert prev is not None
            del bucket[key]
            change = Change(self.rv, "DELETED", with_rv(prev, self.rv), prev)
        else:
            new["metadata"]["resourceVersion"] = str(self.rv)
            bucket[key] = new
            change = Change(self.rv, "ADDED" if prev is None else "MODIFIED", new, prev)
        ring = self.history.setdefault(rtype.storage_key, deque())
        ring.append(change)
        while len(ring) > self.history_size:
            self.floors[rtype.storage_key] = ring.popleft().rv
        for watcher in self.watchers:
            if watcher.rtype.storage_key == rtype.storage_key:
                self._send(watcher, change)
        return change

    def _send(self, watcher: Watcher, change: Change) -> None:
        event = watcher.translate(change)
        if event is not None:
            watcher.push(event)
            watcher.sent_rv = change.rv

    # ----------------------------------------------------------------- writes

    def _incoming(self, rtype: ResourceType, body: Any) -> JsonDict:
        """A private, storage-form copy of a request body, with kind and apiVersion checked."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of a {rtype.kind} must be a JSON object")
        kind = body.get("kind")
        if kind not in (None, "", rtype.kind):
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})"
            )
        api_version = body.get("apiVersion")
        if api_version not in (None, "", rtype.api_version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rtype.api_version})"
            )
        obj = copy.deepcopy({k: v for k, v in body.items() if k not in ("kind", "apiVersion")})
        meta = obj.get("metadata")
        if meta is None:
            obj["metadata"] = meta = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be a JSON object")
        return rtype.to_storage(obj)

    def _namespace(self, rtype: ResourceType, namespace: str | None, meta: JsonDict) -> str:
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return ""
        given = meta.get("namespace")
        if namespace and given and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        ns = namespace or given or "default"
        meta["namespace"] = ns
        return str(ns)

    def create(
        self,
        rtype: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        status_mode: StatusMode,
        strip_server_fields: bool = False,
    ) -> JsonDict:
        """POST semantics: name or generateName, server metadata, defaults, 409 on a clash."""
        obj = self._incoming(rtype, body)
        meta = obj["metadata"]
        if strip_server_fields:
            for name in ("resourceVersion", "uid", "creationTimestamp", "generation"):
                meta.pop(name, None)
        with self.lock:
            ns = self._namespace(rtype, namespace, meta)
            if meta.get("resourceVersion"):
                raise ApiError(500, "resourceVersion should not be set on objects to be created")
            name = meta.get("name")
            if not name:
                prefix = meta.get("generateName")
                if not prefix:
                    raise invalid(
                        rtype,
                        "",
                        [("metadata.name", "Required value: name or generateName is required")],
                    )
                name = self._generate_name(rtype, ns, str(prefix))
            name = str(name)
            rtype.validate_name(name)
            key = (ns, name)
            if key in self.bucket(rtype):
                raise ApiError(
                    409,
                    f'{rtype.qualified} "{name}" already exists',
                    reason="AlreadyExists",
                    details=rtype.details(name),
                )
            meta["name"] = name
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for server_only in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(server_only, None)
            meta.pop("resourceVersion", None)
            if rtype.generation_fields:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if rtype is SERVICE:
                if status_mode == "spec" or not isinstance(obj.get("status"), dict):
                    obj["status"] = {"loadBalancer": {}}
                self._service_defaults(rtype, obj, None)
            return self._commit(rtype, key, obj, None).obj

    def _generate_name(self, rtype: ResourceType, ns: str, prefix: str) -> str:
        bucket = self.bucket(rtype)
        for _ in range(100):
            name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            if (ns, name) not in bucket:
                return name
        raise ApiError(409, f"could not generate a unique name from {prefix!r}")

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        status_mode: StatusMode,
        create_missing: bool | None = None,
    ) -> tuple[JsonDict, bool]:
        """PUT semantics; returns (object, created). A stale resourceVersion is a 409."""
        obj = self._incoming(rtype, body)
        meta = obj["metadata"]
        given = meta.get("name")
        if given and given != name:
            raise bad_request(
                f"the name of the object ({given}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        with self.lock:
            ns = self._namespace(rtype, namespace, meta)
            old = self.bucket(rtype).get((ns, name))
            if old is None:
                allowed = rtype.create_on_update if create_missing is None else create_missing
                if not allowed or status_mode == "status":
                    raise not_found(rtype, name)
                meta.pop("resourceVersion", None)
                return self.create(rtype, ns, obj, status_mode=status_mode), True
            return self._replace(rtype, (ns, name), old, obj, status_mode), False

    def _replace(
        self, rtype: ResourceType, key: Key, old: JsonDict, new: JsonDict, mode: StatusMode
    ) -> JsonDict:
        meta = new["metadata"]
        old_meta = old["metadata"]
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rtype.qualified} "{key[1]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                reason="Conflict",
                details=rtype.details(key[1]),
            )
        uid = meta.get("uid")
        if uid and uid != old_meta["uid"]:
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {old_meta['uid']}",
                reason="Conflict",
                details=rtype.details(key[1]),
            )
        if mode == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if mode == "spec" or (mode == "hook" and "status" not in new):
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            if key[0]:
                meta["namespace"] = key[0]
            for server_field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if server_field in old_meta:
                    meta[server_field] = old_meta[server_field]
                else:
                    meta.pop(server_field, None)
            if rtype is SERVICE:
                self._service_defaults(rtype, result, old)
            meta.pop("generation", None)
            if rtype.generation_fields:  # compared after defaulting, as the registry does
                generation = int(old_meta.get("generation", 1))
                if any(result.get(f) != old.get(f) for f in rtype.generation_fields):
                    generation += 1
                meta["generation"] = generation
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if result == old:
            return old  # a no-op write: no new RV and no event, as etcd3's store does
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            change = self._commit(rtype, key, None, old)
            return with_rv(result, change.rv)
        return self._commit(rtype, key, result, old).obj

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        status_mode: StatusMode,
        field_manager: str | None = None,
    ) -> tuple[JsonDict, bool]:
        """PATCH semantics for each content type; returns (object, created)."""
        with self.lock:
            key = self.key(rtype, namespace, name)
            old = self.bucket(rtype).get(key)
            if patch_type == "apply":
                if not field_manager:
                    raise ApiError(
                        422,
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                        "is required for apply patch",
                    )
                if not isinstance(patch, dict):
                    raise bad_request("apply patch body must be a JSON object")
                patch_name = dig(patch, "metadata", "name")
                if patch_name and patch_name != name:
                    raise bad_request(
                        f"the name of the object ({patch_name}) does not match the name on the "
                        f"URL ({name})"
                    )
                if old is None:
                    if status_mode == "status":
                        raise not_found(rtype, name)
                    body = copy.deepcopy(patch)
                    body.setdefault("metadata", {})["name"] = name
                    return self.create(rtype, namespace, body, status_mode=status_mode), True
            if old is None:
                raise not_found(rtype, name)
            current = rtype.from_storage(old)
            if patch_type == "json":
                patched = patches.json_patch(current, patch)
            elif patch_type == "merge":
                patched = patches.merge_patch(current, patch)
            else:  # strategic merge, and apply as documented in the package docstring
                body = patch
                if patch_type == "apply" and isinstance(patch, dict):
                    body = {k: v for k, v in patch.items() if k not in ("kind", "apiVersion")}
                patched = patches.strategic_merge_patch(current, body)
            if not isinstance(patched, dict):
                raise ApiError(422, "the patched object is not a JSON object")
            result, _ = self.update(
                rtype, namespace, name, patched, status_mode=status_mode, create_missing=False
            )
            return result, False

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        options: JsonDict | None = None,
    ) -> tuple[JsonDict, bool]:
        """DELETE semantics; returns (object, gone). Finalizers only mark the object."""
        with self.lock:
            key = self.key(rtype, namespace, name)
            old = self.bucket(rtype).get(key)
            if old is None:
                raise not_found(rtype, name)
            pre = (options or {}).get("preconditions") or {}
            for label, want, have in (
                ("UID", pre.get("uid"), old["metadata"]["uid"]),
                ("ResourceVersion", pre.get("resourceVersion"), old["metadata"]["resourceVersion"]),
            ):
                if want and want != have:
                    raise ApiError(
                        409,
                        f"Precondition failed: {label} in precondition: {want}, "
                        f"{label} in object meta: {have}",
                        reason="Conflict",
                        details=rtype.details(name),
                    )
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    return old, False
                marked = copy.deepcopy(old)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rtype, key, marked, old).obj, False
            self._commit(rtype, key, None, old)
            return old, True

    # ----------------------------------------------------------------- Service defaults

    def _service_defaults(self, rtype: ResourceType, svc: JsonDict, old: JsonDict | None) -> None:
        """The registry's Service defaulting and IP/nodePort allocation (never for no-ops)."""
        name = str(svc["metadata"]["name"])
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            svc["spec"] = spec = {}
        svc_type = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "targetPort" not in port and "port" in port:
                    port["targetPort"] = port["port"]
        if svc_type == "ExternalName":
            for gone in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(gone, None)
            return
        old_spec = dig(old, "spec") if old is not None else None
        had_ip = isinstance(old_spec, dict) and bool(old_spec.get("clusterIP"))
        if had_ip and isinstance(old_spec, dict):
            for kept in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if not spec.get(kept) and old_spec.get(kept):
                    spec[kept] = copy.deepcopy(old_spec[kept])
            if spec["clusterIP"] != old_spec["clusterIP"]:
                raise invalid(
                    rtype,
                    name,
                    [
                        (
                            "spec.clusterIPs[0]",
                            f'Invalid value: []string{{"{spec["clusterIP"]}"}}: '
                            "may not change once set",
                        )
                    ],
                )
        ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
        if not ip:
            ip = self._allocate_ip()
        elif ip != "None" and not had_ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise invalid(
                    rtype, name, [("spec.clusterIPs[0]", f'Invalid value: "{ip}": not an IP')]
                ) from None
            if ip in self._used_ips():
                raise invalid(
                    rtype,
                    name,
                    [
                        (
                            "spec.clusterIPs",
                            f'Invalid value: []string{{"{ip}"}}: failed to allocate IP {ip}: '
                            "provided IP is already allocated",
                        )
                    ],
                )
        spec["clusterIP"] = ip
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv6" if ":" in ip else "IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if svc_type in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            old_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                for p in (dig(old_spec or {}, "ports") or [])
                if isinstance(p, dict)
            }
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and not port.get("nodePort"):
                    reuse = old_ports.get((port.get("port"), port.get("protocol")))
                    port["nodePort"] = reuse or self._allocate_node_port()
        if svc_type == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    def _services(self) -> list[JsonDict]:
        return list(self.objects.get(SERVICE.storage_key, {}).values())

    def _used_ips(self) -> Collection[str]:
        return self._ip_holders.keys()

    def _allocate_ip(self) -> str:
        """Next free IP from 10.96.0.10 on (.1 is the ``kubernetes`` Service), round-robin."""
        used = self._used_ips()
        span = _SERVICE_CIDR.num_addresses - 11  # from .0.10 to the one before broadcast
        for step in range(span):
            candidate = str(_SERVICE_CIDR[10 + (self._ip_cursor + step) % span])
            if candidate not in used:
                self._ip_cursor = (self._ip_cursor + step + 1) % span
                return candidate
        raise ApiError(500, "the service cluster IP range is full")

    def _allocate_node_port(self) -> int:
        used = {
            p.get("nodePort")
            for svc in self._services()
            for p in (dig(svc, "spec", "ports") or [])
            if isinstance(p, dict)
        }
        for _ in range(len(_NODE_PORTS)):
            candidate = _NODE_PORTS[self._port_cursor % len(_NODE_PORTS)]
            self._port_cursor += 1
            if candidate not in used:
                return candidate
        raise ApiError(500, "the node port range is full")

    # ----------------------------------------------------------------- watches

    def open_watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        resource_version: str | None,
        bookmarks: bool,
        send_initial_events: bool = False,
        sock: socket.socket | None = None,
    ) -> Watcher:
        """Register a watcher with its starting events queued; raises ``Expired`` for 410."""
        watcher = Watcher(
            rtype, namespace, labels, fields, bookmarks, queue.Queue(self.watch_queue_size), sock
        )
        with self.lock:
            if resource_version in (None, "", "0") or send_initial_events:
                items, _ = self.select(rtype, namespace, labels, fields)
                for obj in items:
                    watcher.push(("ADDED", obj))
                watcher.sent_rv = self.rv
                if send_initial_events and bookmarks:
                    watcher.push(("BOOKMARK", self.bookmark_object(rtype, initial_end=True)))
            else:
                start = parse_rv(resource_version)
                if start > self.rv:
                    raise too_large(start, self.rv)
                if start < self.floor(rtype):
                    raise Expired(f"too old resource version: {start} ({self.floor(rtype)})")
                watcher.sent_rv = start
                for change in self.history.get(rtype.storage_key, ()):
                    if change.rv > start:
                        self._send(watcher, change)
            self.watchers.add(watcher)
        return watcher

    def close_watch(self, watcher: Watcher) -> None:
        with self.lock:
            self.watchers.discard(watcher)

    def bookmark_object(self, rtype: ResourceType, *, initial_end: bool = False) -> JsonDict:
        meta: JsonDict = {"resourceVersion": str(self.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}

    def bookmark(self, watcher: Watcher) -> bool:
        """Queue a BOOKMARK if the watcher asked for them and the RV moved past what it knows."""
        with self.lock:
            if not watcher.bookmarks or self.rv <= watcher.sent_rv:
                return False
            watcher.push(("BOOKMARK", self.bookmark_object(watcher.rtype)))
            watcher.sent_rv = self.rv
            return True

    def expire_history(self) -> None:
        with self.lock:
            self.global_floor = self.rv
            self.history.clear()


def parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise bad_request(
            f'resourceVersion: Invalid value: "{value}": must be an integer'
        ) from None
    if rv < 0:
        raise bad_request(f'resourceVersion: Invalid value: "{value}": must be non-negative')
    return rv


def too_large(requested: int, current: int) -> ApiError:
    return ApiError(
        504,
        f"Timeout: Too large resource version: {requested}, current: {current}",
        reason="Timeout",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
    )


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified} "{name}" not found', details=rtype.details(name))


def _service_ips(svc: JsonDict | None) -> set[str]:
    """The cluster IPs a stored Service holds (its spec.clusterIP text, even empty, counts)."""
    if svc is None:
        return set()
    ips = {str(ip) for ip in dig(svc, "spec", "clusterIPs") or []}
    ips.add(str(dig(svc, "spec", "clusterIP") or ""))
    return ips
