"""Logging: silent by default, structlog's configuration followed even when it comes after the
logger was created, stable event names with key/value fields."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from tests.helpers import pair
from utcp.log import get_logger


@contextmanager
def _captured() -> Iterator[list[dict[str, Any]]]:
    """Configure structlog to collect every event into a list, then restore the defaults."""
    events: list[dict[str, Any]] = []

    def capture(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        events.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    try:
        yield events
    finally:
        structlog.reset_defaults()


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    with _captured() as events:
        yield events


def test_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    net = pair()
    net.run()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_logger_made_before_configuration_follows_it() -> None:
    structlog.reset_defaults()
    log = get_logger(cid="0000000a")  # as module-level loggers are, at import time
    with _captured() as events:
        log.info("datagram_dropped", reason="checksum mismatch")
    assert events == [
        {"event": "datagram_dropped", "reason": "checksum mismatch", "cid": "0000000a"}
    ]


def test_state_changes_are_logged_with_stable_names(captured: list[dict[str, Any]]) -> None:
    net = pair()
    net.run()
    changes = [(e["cid"], e["old"], e["new"]) for e in captured if e["event"] == "state_changed"]
    assert ("0000000a", "CLOSED", "SYN_SENT") in changes
    assert ("0000000a", "SYN_SENT", "ESTABLISHED") in changes
    assert ("0000000b", "SYN_RECEIVED", "ESTABLISHED") in changes
