"""Shared helpers of the real-socket asyncio tests: running a test on both event loops, guarding
against hangs, and waiting on real conditions.

pytest-asyncio 1.5 deprecates overriding ``event_loop_policy`` and wants loop factories from a
``pytest_asyncio_loop_factories`` hook in a conftest; these files may not touch the conftest, so
each test takes the ``run`` fixture instead: an ``asyncio.Runner`` on the chosen loop, which also
fails the test if anything reached the loop's exception handler (an error nobody awaited).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest
import uvloop

from utcp import Connection

T = TypeVar("T")

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
LOOP_KINDS = sorted(LOOP_FACTORIES)

HANG_S = 60.0  # only ever reached when something hangs: no test is meant to come close
HOST = "127.0.0.1"


class Runner:
    """Runs coroutines on one fresh event loop of a given kind, each under a hang guard."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.errors: list[dict[str, Any]] = []
        self.failed = False
        self._runner = asyncio.Runner(loop_factory=LOOP_FACTORIES[kind])

    def __call__(self, coro: Coroutine[Any, Any, T], *, hang_s: float = HANG_S) -> T:
        try:
            return self._runner.run(self._guarded(coro, hang_s))
        except BaseException:
            self.failed = True  # the failure says it all; cancelled leftovers are its echo
            raise

    async def _guarded(self, coro: Coroutine[Any, Any, T], hang_s: float) -> T:
        asyncio.get_running_loop().set_exception_handler(self._on_error)
        async with deadline(hang_s, "the test"):
            return await coro

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(context)
        loop.default_exception_handler(context)

    def close(self) -> None:
        self._runner.close()


@contextmanager
def runner_for(kind: str, *, allow_loop_errors: bool = False) -> Iterator[Runner]:
    """A ``Runner`` that, on leaving, asserts the loop's exception handler was never called
    (unless the test has already failed)."""
    if sys.version_info < (3, 11):  # pragma: no cover
        pytest.skip("the real-socket tests use asyncio.Runner and asyncio.timeout (3.11+)")
    runner = Runner(kind)
    try:
        yield runner
    finally:
        runner.close()
    if not allow_loop_errors and not runner.failed:
        assert not runner.errors, f"errors reached the loop's exception handler: {runner.errors}"


def make_run_fixture() -> Any:
    """The ``run`` fixture, parametrized over both event loops; define it once per module."""

    @pytest.fixture(params=LOOP_KINDS)
    def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
        with runner_for(request.param) as runner:
            yield runner

    return run


@asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """Fail (not raise TimeoutError) if the block runs longer than ``seconds``: a hang guard that
    cannot be mistaken for a ``TimeoutError`` the code under test raises on purpose."""
    guard = asyncio.timeout(seconds)
    report: list[str] = []
    # Just before the guard cancels everything: what each task waits on, where each connection is.
    snapshot = asyncio.get_running_loop().call_later(
        seconds * 0.999, lambda: report.extend(hang_report())
    )
    try:
        async with guard:
            yield
    except TimeoutError:
        if guard.expired():
            detail = "\n".join(report)
            pytest.fail(f"{what} did not finish within {seconds} s\n{detail}", pytrace=False)
        raise
    finally:
        snapshot.cancel()


def hang_report(limit: int = 40) -> list[str]:
    """One line per pending task (its innermost frames) and per live utcp connection (state,
    counters, timer): what a hang left behind."""
    lines = []
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=4)
        where = " < ".join(
            f"{f.f_code.co_name} ({os.path.basename(f.f_code.co_filename)}:{f.f_lineno})"
            for f in reversed(frames)
        )
        lines.append(f"task {task.get_name()}: {where or 'not started'}")
    loop_time = asyncio.get_running_loop().time()
    closed = 0
    for obj in gc.get_objects():
        if isinstance(obj, Connection):
            st = obj.stats
            if st.state.value == "CLOSED" and not st.send_buffer_bytes:
                closed += 1
                continue
            lines.append(
                f"connection {obj.local_cid:#x} {st.state.value}: sent {st.bytes_sent} "
                f"received {st.bytes_received} in flight {st.bytes_in_flight} "
                f"cwnd {st.cwnd_bytes} wnd {st.send_window_bytes} "
                f"buffered {st.send_buffer_bytes} timeouts {st.timeouts} "
                f"retransmissions {st.retransmissions} segments in {st.segments_received} "
                f"out {st.segments_sent} drops {st.drops} pmtu {st.pmtu_bytes} "
                f"timer {obj.get_timer()} (loop time {loop_time:.3f})"
            )
    if len(lines) > limit:
        lines = [*lines[:limit], f"... {len(lines) - limit} more"]
    lines.append(f"and {closed} connections CLOSED with nothing left to send")
    return lines


async def wait_until(predicate: Callable[[], bool], what: str, *, timeout_s: float = 30) -> None:
    """Poll a condition that has no event of its own (window and buffer sizes) until it holds.

    The short sleep is the polling step, not a guess at how long something takes: the wait ends
    as soon as the condition is observed, and fails loudly if it never is.
    """
    async with deadline(timeout_s, f"waiting until {what}"):
        while not predicate():
            await asyncio.sleep(0.002)


def seeded_bytes(seed: int, size: int) -> bytes:
    """``size`` pseudo-random bytes; the same seed gives the same bytes on every run."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def server_port(server: Any) -> int:
    """The port a server bound (``port=0`` picks a free one)."""
    return int(server.sockets[0].getsockname()[1])


def open_fds() -> list[str]:
    """The file descriptors this process holds now, with what each points to (Linux)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fds.append(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
        except FileNotFoundError:
            pass  # the descriptor listdir itself used, already closed
    return sorted(fds)


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Handlers:
    """Wraps a server's ``client_connected_cb``: counts runs, keeps what they raised (asyncio
    would only log it), and lets a test wait until a number of them have ended."""

    def __init__(self, handler: StreamHandler) -> None:
        self._handler = handler
        self.started = 0
        self.finished = 0
        self.errors: list[BaseException] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._changed = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.started += 1
        self.writers.append(writer)
        self._changed.set()
        try:
            await self._handler(reader, writer)
        except Exception as exc:
            self.errors.append(exc)
            writer.transport.abort()  # the client sees a reset instead of waiting for a hang
        finally:
            self.finished += 1
            self._changed.set()

    async def wait_started(self, count: int) -> None:
        while self.started < count:
            self._changed.clear()
            await self._changed.wait()

    async def wait_finished(self, count: int) -> None:
        while self.finished < count:
            self._changed.clear()
            await self._changed.wait()

    async def close_and_check(
        self, writer: asyncio.StreamWriter, server: Any, count: int = 1
    ) -> None:
        """A test's usual end: close the client, wait until it is closed, close the server
        once ``count`` handlers have finished, and check that none of them raised."""
        writer.close()
        await writer.wait_closed()
        async with server:
            await self.wait_finished(count)
        assert self.errors == []


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close: the server side of most tests."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
    await writer.wait_closed()


async def echo_round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> None:
    """Send ``data`` to an echo server, half-close, expect exactly ``data`` back, then close
    the stream and wait until it is closed."""
    writer.write(data)
    writer.write_eof()
    assert await reader.read() == data
    writer.close()
    await writer.wait_closed()


async def read_all(reader: asyncio.StreamReader, chunk: int = 1 << 20) -> bytes:
    """Everything up to EOF, read in chunks (the way a client reading a large reply would)."""
    out = bytearray()
    while data := await reader.read(chunk):
        out += data
    return bytes(out)
