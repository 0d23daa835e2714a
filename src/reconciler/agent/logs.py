"""structlog set-up: JSON lines by default, a console renderer for people.

Event names and keys are stable and documented in docs/logging.md. Secrets registered with
`redact` are replaced wherever they would appear, as a last line of defence: the nftlb key is
never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRETS: set[str] = set()
REDACTED = "<redacted>"


def redact(secret: str) -> None:
    if secret:
        _SECRETS.add(secret)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for s in _SECRETS:
            value = value.replace(s, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _SECRETS:
        for k in list(event):
            event[k] = _scrub(event[k])
    return event


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("kube-nftlb").bind(**bind)
