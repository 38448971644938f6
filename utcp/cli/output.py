"""Our standard output and error, and what happens when one of them breaks: a pipe whose
reader has gone (``utcp ... | head``).  The running command is then stopped at once and exits 1
without a message, as nc does (it dies of SIGPIPE); Python ignores SIGPIPE, and its note on
SIGPIPE recommends pointing the descriptor at /dev/null and exiting 1, which is what this does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO, TypeVar, cast

from .. import run

__all__ = [
    "OutputClosed",
    "guarded_output",
    "log_sink",
    "output_broken",
    "output_is_broken",
    "run_command",
]

T = TypeVar("T")


class OutputClosed(Exception):
    """Our standard output or error is a pipe whose reader has gone.  Not an OSError, so no
    subcommand mistakes it for a connection error; ``utcp.cli.main`` exits 1 on it."""


class _Output:
    """This process's outputs: whether one broke, and how to stop the running command."""

    broken = False
    stop: Callable[[], None] | None = None


def output_broken(fd: int | None) -> None:
    """Our output on ``fd`` is a closed pipe: point ``fd`` at /dev/null, so that nothing
    written there later fails (buffered bytes flushed at exit among them), and stop the
    running command.  Safe from any thread."""
    if fd is not None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    if not _Output.broken:
        _Output.broken = True
        stop = _Output.stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                stop()


class _Guarded:
    """stdout or stderr (text or binary) whose closed-pipe error calls ``output_broken()``;
    then the write is dropped with ``swallow`` (the log sink: a log call inside utcp's core must
    not fail), else OutputClosed is raised to the code that wrote."""

    def __init__(self, stream: Any, *, swallow: bool = False) -> None:
        self._stream = stream
        self._swallow = swallow
        self._buffer: _Guarded | None = None

    def _broke(self) -> None:
        try:
            fd: int | None = self._stream.fileno()
        except (OSError, ValueError, AttributeError):  # a stream with no descriptor (tests)
            fd = None
        output_broken(fd)
        if not self._swallow:
            raise OutputClosed from None

    def write(self, data: Any) -> int:
        try:
            return int(self._stream.write(data))
        except BrokenPipeError:
            self._broke()
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._broke()

    @property
    def buffer(self) -> _Guarded:
        if self._buffer is None:
            self._buffer = _Guarded(self._stream.buffer, swallow=self._swallow)
        return self._buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_output() -> Iterator[TextIO]:
    """sys.stdout and sys.stderr guarded for the command's run, flushed at its end; yields the
    unguarded stderr."""
    saved = sys.stdout, sys.stderr
    _Output.broken = False
    sys.stdout = cast(TextIO, _Guarded(saved[0]))
    sys.stderr = cast(TextIO, _Guarded(saved[1]))
    try:
        yield saved[1]
    finally:
        for stream in (sys.stdout, sys.stderr):  # a broken pipe found now is noted, not raised
            with contextlib.suppress(OutputClosed):
                stream.flush()
        sys.stdout, sys.stderr = saved


def run_command(coro: Coroutine[Any, Any, T]) -> T:
    """``utcp.run(coro)`` for a subcommand, cancelled as soon as one of our outputs is found to
    be a closed pipe; OutputClosed then comes out of it instead of CancelledError."""

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            loop.call_soon_threadsafe(task.cancel)

        _Output.stop = stop
        try:
            return await coro
        except asyncio.CancelledError:
            if _Output.broken:
                raise OutputClosed from None
            raise
        finally:
            _Output.stop = None

    return run(guarded())


def log_sink(stderr: TextIO) -> TextIO:
    """``stderr`` for structlog: a closed pipe drops the line instead of failing the log call,
    which runs inside utcp's core, and stops the command."""
    return cast(TextIO, _Guarded(stderr, swallow=True))


def output_is_broken() -> bool:
    """Whether one of our outputs has been found to be a closed pipe during this command."""
    return _Output.broken
