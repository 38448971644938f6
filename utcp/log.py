"""structlog loggers for utcp: stable event names with key/value fields, silent by default.

When the application has configured structlog, utcp logs through that configuration; otherwise it
logs through the standard library logger ``utcp``, which has a ``NullHandler`` and so stays silent
until the application configures ``logging``.  The choice is made at each call, so loggers
created at import time follow a configuration made later (as the command line's ``-v`` does).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_stdlib_logger = logging.getLogger("utcp")
_stdlib_logger.addHandler(logging.NullHandler())


def _stdlib_bound(context: dict[str, Any]) -> Any:
    return structlog.wrap_logger(
        _stdlib_logger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
    ).bind(**context)


class _Logger:
    """A bound logger that resolves structlog's configuration when it is used."""

    __slots__ = ("_configured", "_context", "_logger")

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context
        self._configured: bool | None = None
        self._logger: Any = None

    def _resolve(self) -> Any:
        configured = structlog.is_configured()
        if configured is not self._configured:
            self._configured = configured
            if configured:
                self._logger = structlog.get_logger("utcp").bind(**self._context)
            else:
                self._logger = _stdlib_bound(self._context)
        return self._logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)


def get_logger(**context: Any) -> Any:
    """A bound logger carrying ``context`` (for example ``cid``) on every event."""
    return _Logger(context)
