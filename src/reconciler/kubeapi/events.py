"""Kubernetes Events for problems: a Warning on the Service that names key, value and allowed.

Deduplicated: a problem is sent once while it lasts, not on every sync; when it goes away and
comes back, it is sent again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from reconciler.core.problems import Problem

COMPONENT = "kube-nftlb"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(problem: Problem, node: str, uid: str = "") -> dict[str, Any]:
    ref = problem.ref
    digest = hashlib.sha256(
        f"{ref}|{problem.reason}|{problem.message}|{node}".encode()
    ).hexdigest()[:10]
    ts = _now()
    involved: dict[str, Any] = {
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
        "metadata": {"name": f"{ref.name}.kube-nftlb.{digest}", "namespace": ref.namespace},
        "involvedObject": involved,
        "reason": problem.reason,
        "message": problem.message[:1024],
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": f"{COMPONENT}-{node}",
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


class EventRecorder:
    """Sends each distinct problem once while it lasts.

    `create(namespace, body)` is the API call (CoreV1Api.create_namespaced_event); a failure is
    reported to `on_error` and retried on the next sync, never raised into the loop.
    """

    def __init__(
        self,
        create: Callable[[str, dict[str, Any]], Any],
        node: str,
        on_error: Callable[[Problem, Exception], None] | None = None,
        uid_of: Callable[[Problem], str] | None = None,
    ) -> None:
        self._create, self._node, self._on_error = create, node, on_error
        self._uid_of = uid_of
        self._sent: set[Problem] = set()

    def record(self, problems: Iterable[Problem]) -> list[Problem]:
        """Send the problems not sent yet; forget the ones that went away. Returns those sent."""
        current = {p for p in problems if p.ref.kind == "Service" and p.ref.namespace}
        self._sent &= current
        sent: list[Problem] = []
        for p in sorted(current - self._sent):
            try:
                self._create(
                    p.ref.namespace,
                    event_body(p, self._node, self._uid_of(p) if self._uid_of else ""),
                )
            except Exception as e:  # an Event is best effort; the next sync tries again
                if (
                    getattr(e, "status", None) == 409
                ):  # sent before a restart: same name, same problem
                    self._sent.add(p)
                    continue
                if self._on_error:
                    self._on_error(p, e)
                continue
            self._sent.add(p)
            sent.append(p)
        return sent
