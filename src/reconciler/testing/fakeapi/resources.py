"""The kinds the fake serves, and the per-kind rules the apiserver applies to them.

Each ``ResourceType`` is one (group, version, plural). Kinds that share storage on a real
server share it here too: ``events.k8s.io/v1`` Events are a converted view of core v1 Events
(``regarding`` <-> ``involvedObject``, ``note`` <-> ``message`` ...), so an Event written
through one API is listed and watched through the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, JsonDict

FieldGetter = Callable[[JsonDict], str]


def dig(obj: Mapping[str, Any], *path: str) -> Any:
    """``obj[a][b]...`` or None, for reading optional nested fields."""
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _getter(*path: str) -> FieldGetter:
    return lambda obj: _text(dig(obj, *path))


def _event_source(obj: JsonDict) -> str:
    return _text(dig(obj, "source", "component") or obj.get("reportingComponent"))


_CORE_EVENT_FIELDS: dict[str, FieldGetter] = {
    **{
        f"involvedObject.{part}": _getter("involvedObject", part)
        for part in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
    },
    "involvedObject.fieldPath": _getter("involvedObject", "fieldPath"),
    "reason": _getter("reason"),
    "reportingComponent": _getter("reportingComponent"),
    "source": _event_source,
    "type": _getter("type"),
}

# events.k8s.io/v1 field labels, mapped onto the core (storage) form as the real server does.
_EVENTS_V1_FIELDS: dict[str, FieldGetter] = {
    **{
        f"regarding.{part}": _getter("involvedObject", part)
        for part in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
    },
    "regarding.fieldPath": _getter("involvedObject", "fieldPath"),
    "reason": _getter("reason"),
    "reportingController": _getter("reportingComponent"),
    "type": _getter("type"),
}

# events.k8s.io/v1 field -> core v1 field (the rest have the same name in both).
_EVENTS_V1_TO_CORE = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_CORE_TO_EVENTS_V1 = {core: v1 for v1, core in _EVENTS_V1_TO_CORE.items()}


def _rename(obj: JsonDict, names: Mapping[str, str]) -> JsonDict:
    return {names.get(key, key): value for key, value in obj.items()}


@dataclass(frozen=True)
class ResourceType:
    """One served resource and the registry strategy the real apiserver gives it."""

    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = False
    """PUT/PATCH on the main resource ignore ``.status``; ``/status`` changes only status."""
    create_on_update: bool = False
    """PUT to a missing name creates it (Leases, Events, Endpoints) instead of 404."""
    delete_returns_object: bool = False
    """DELETE answers with the object (client 37 types Service deletes as ``V1Service``)."""
    generation_fields: tuple[str, ...] = ()
    """Top-level fields whose change bumps ``metadata.generation``; empty = no generation."""
    storage: str = ""
    """Shared storage name; two types with the same storage are views of one set of objects."""
    extra_fields: Mapping[str, FieldGetter] = field(default_factory=dict)
    """Field selector labels beyond ``metadata.name`` and ``metadata.namespace``."""
    strict_fields_message: bool = False
    """Unknown field labels say ``field label not supported`` (custom converters)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``services`` or ``leases.coordination.k8s.io``, as in the apiserver's messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> str:
        return self.storage or self.qualified

    def details(self, name: str, **extra: Any) -> JsonDict:
        """``Status.details`` for an error or success about one object of this type."""
        out: JsonDict = {"name": name}
        if self.group:
            out["group"] = self.group
        out["kind"] = self.plural
        out.update(extra)
        return out

    def to_storage(self, obj: JsonDict) -> JsonDict:
        """Convert a body of this API version to the stored form."""
        if self.group == "events.k8s.io":
            core = _rename(obj, _EVENTS_V1_TO_CORE)
            if core.get("eventTime") is None:
                core.pop("eventTime", None)
            return core
        return obj

    def from_storage(self, obj: JsonDict) -> JsonDict:
        """Convert a stored object to this API version (may return ``obj`` itself)."""
        if self.group == "events.k8s.io":
            return {"eventTime": None, **_rename(obj, _CORE_TO_EVENTS_V1)}  # not omitempty
        return obj

    def external(self, obj: JsonDict, *, with_kind: bool) -> JsonDict:
        """The wire form: watch events and single GETs carry kind/apiVersion, list items not."""
        body = self.from_storage(obj)
        if not with_kind:
            return body
        rest = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        return {"kind": self.kind, "apiVersion": self.api_version, **rest}

    def field_values(self, obj: JsonDict) -> dict[str, str]:
        values = {
            "metadata.name": _text(dig(obj, "metadata", "name")),
            "metadata.namespace": _text(dig(obj, "metadata", "namespace")),
        }
        for label, getter in self.extra_fields.items():
            values[label] = getter(obj)
        return values

    def check_field_labels(self, labels: list[str]) -> None:
        """Reject unknown field selector labels with the real server's 400 message."""
        known = {"metadata.name", "metadata.namespace", *self.extra_fields}
        for label in labels:
            if label in known:
                continue
            if self.strict_fields_message:
                raise ApiError(400, f"field label not supported: {label}")
            raise ApiError(
                400,
                f'"{label}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"',
            )

    def validate_name(self, name: str) -> None:
        """422 for names the apiserver rejects (DNS-1035 label for Services, else subdomain)."""
        if self.kind == "Service":
            ok = len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
            what = "a DNS-1035 label must consist of lower case alphanumeric characters or '-'"
        else:
            ok = len(name) <= 253 and re.fullmatch(
                r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name
            )
            what = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'"
            )
        if not ok:
            raise invalid(self, name, [("metadata.name", f'Invalid value: "{name}": {what}')])


def invalid(rtype: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """A 422 ``Invalid`` with the apiserver's ``Kind "name" is invalid: field: detail`` text."""
    text = ", ".join(f"{path}: {detail}" for path, detail in causes)
    details: JsonDict = {"name": name}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.kind
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": detail, "field": path} for path, detail in causes
    ]
    return ApiError(422, f'{rtype.kind} "{name}" is invalid: {text}', details=details)


SERVICE = ResourceType(
    "Service",
    "",
    "v1",
    "services",
    status_subresource=True,
    delete_returns_object=True,
    generation_fields=("spec",),
)
ENDPOINTS = ResourceType("Endpoints", "", "v1", "endpoints", create_on_update=True)
NODE = ResourceType(
    "Node",
    "",
    "v1",
    "nodes",
    namespaced=False,
    status_subresource=True,
    generation_fields=("spec",),
    extra_fields={"spec.unschedulable": _getter("spec", "unschedulable")},
    strict_fields_message=True,
)
EVENT = ResourceType(
    "Event",
    "",
    "v1",
    "events",
    create_on_update=True,
    storage="events",
    extra_fields=_CORE_EVENT_FIELDS,
    strict_fields_message=True,
)
EVENT_V1 = ResourceType(
    "Event",
    "events.k8s.io",
    "v1",
    "events",
    create_on_update=True,
    storage="events",
    extra_fields=_EVENTS_V1_FIELDS,
    strict_fields_message=True,
)
ENDPOINT_SLICE = ResourceType(
    "EndpointSlice",
    "discovery.k8s.io",
    "v1",
    "endpointslices",
    generation_fields=("endpoints", "ports", "addressType"),
)
LEASE = ResourceType(
    "Lease", "coordination.k8s.io", "v1", "leases", create_on_update=True, generation_fields=()
)

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    SERVICE,
    ENDPOINTS,
    NODE,
    EVENT,
    EVENT_V1,
    ENDPOINT_SLICE,
    LEASE,
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCE_TYPES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCE_TYPES}
_DEFAULT_BY_KIND = {r.kind: r for r in reversed(RESOURCE_TYPES)}  # core Event wins


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(kind: str, api_version: str | None = None) -> ResourceType:
    """The served type for a kind (core v1 ``Event`` unless ``events.k8s.io/v1`` is asked)."""
    found = _BY_KIND.get((api_version, kind)) if api_version else _DEFAULT_BY_KIND.get(kind)
    if found is None:
        served = ", ".join(sorted(f"{r.api_version} {r.kind}" for r in RESOURCE_TYPES))
        raise KeyError(f"the fake does not serve {api_version or ''} {kind}; it serves {served}")
    return found
