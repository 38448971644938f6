"""Shared pytest set-up: the --run-slow switch for soak tests, and which datagram I/O path the
real-socket tests (marked ``sockets``) run on: ``UTCP_IO=fast|portable`` (``make test`` runs
them on both)."""

from __future__ import annotations

import asyncio
import os

import pytest

from utcp.asyncio.dgram import IO_ENV, offload_support, resolve_io_path
from utcp.config import Config


def pytest_report_header(config: pytest.Config) -> str:
    loop = asyncio.new_event_loop()
    try:
        path = resolve_io_path(Config(), loop)
    finally:
        loop.close()
    setting = os.environ.get(IO_ENV, "unset")
    return f"utcp datagram I/O: {path} ({IO_ENV}={setting}, {offload_support()})"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or "slow" in (config.getoption("markexpr") or ""):
        return  # asked for: --run-slow, or -m naming the slow marker
    skip = pytest.mark.skip(reason="slow soak test: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
