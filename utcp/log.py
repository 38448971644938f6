"""structlog loggers for utcp: stable event names with key/value fields, silent by default.

When the application has configured structlog, utcp logs through that configuration; otherwise it
logs through the standard library logger ``utcp``, which has a ``NullHandler`` and so stays silent
until the application configures ``logging``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_stdlib_logger = logging.getLogger("utcp")
_stdlib_logger.addHandler(logging.NullHandler())


def get_logger(**context: Any) -> Any:
    """A bound logger carrying ``context`` (for example ``cid``) on every event."""
    if structlog.is_configured():
        return structlog.get_logger("utcp").bind(**context)
    return structlog.wrap_logger(
        _stdlib_logger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
    ).bind(**context)
