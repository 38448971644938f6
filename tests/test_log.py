"""Logging: silent by default, structlog's configuration followed even when it comes after the
logger was created, stable event names with key/value fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tests.helpers import QUIET, captured_logs, pair
from utcp import Config
from utcp.log import get_logger

# Keepalive and idle timers off: these tests run a handshake until the network goes idle,
# which a connection with keepalive on never does.
QUIET_CONFIG = Config(**QUIET)


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    with captured_logs() as events:
        yield events


def test_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    net = pair(config_a=QUIET_CONFIG, config_b=QUIET_CONFIG)
    net.run()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_logger_made_before_configuration_follows_it() -> None:
    structlog.reset_defaults()
    log = get_logger(cid="0000000a")  # as module-level loggers are, at import time
    with captured_logs() as events:
        log.info("datagram_dropped", reason="checksum mismatch")
    assert events == [
        {"event": "datagram_dropped", "reason": "checksum mismatch", "cid": "0000000a"}
    ]


def test_state_changes_are_logged_with_stable_names(captured: list[dict[str, Any]]) -> None:
    net = pair(config_a=QUIET_CONFIG, config_b=QUIET_CONFIG)
    net.run()
    changes = [(e["cid"], e["old"], e["new"]) for e in captured if e["event"] == "state_changed"]
    assert ("0000000a", "CLOSED", "SYN_SENT") in changes
    assert ("0000000a", "SYN_SENT", "ESTABLISHED") in changes
    assert ("0000000b", "SYN_RECEIVED", "ESTABLISHED") in changes
