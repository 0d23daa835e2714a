"""Problems: bad input that the core skips or corrects, reported instead of raised.

The core never raises on cluster input; every object it could not use, and every value it had to
replace with a default, becomes one Problem. The shell turns them into log lines and Events.
"""

from __future__ import annotations

from attrs import frozen


@frozen(order=True)
class ObjectRef:
    """The Kubernetes object a problem is about (what an Event's involvedObject names)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@frozen(order=True)
class Problem:
    """One bad input and what was done about it.

    `reason` is a stable CamelCase word (an Event reason); `message` is for people and names the
    key, the value and what is allowed.
    """

    ref: ObjectRef
    reason: str
    message: str
    key: str = ""
    value: str = ""
    allowed: tuple[str, ...] = ()
