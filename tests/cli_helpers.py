"""Running the ``utcp`` command line as real processes in tests."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

TIMEOUT_S = 120
UTCP = [sys.executable, "-m", "utcp"]


def poll_until(predicate: Callable[[], bool], what: str, *, timeout_s: float = 30) -> None:
    """Poll a condition that has no event of its own (a process's output, a file) until it
    holds, failing loudly with ``what`` after ``timeout_s``: the synchronous twin of
    ``tests.aio_helpers.wait_until``, for tests that drive processes rather than a loop."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def utcp_cli(
    *args: str, stdin: bytes | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m utcp ARGS`` to completion."""
    return subprocess.run(
        [*UTCP, *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )


@contextmanager
def background(
    args: Sequence[str],
    *,
    stdout: object = subprocess.PIPE,
    stdin: object = subprocess.DEVNULL,
    address_on: str = "stdout",
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``utcp ARGS`` and wait for the line naming its address; yield (process, port).
    ``preexec_fn`` runs in the child before it starts (to close a standard stream, say)."""
    proc = subprocess.Popen(
        [*UTCP, *args],
        stdin=stdin,  # type: ignore[arg-type]
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    try:
        stream = proc.stdout if address_on == "stdout" else proc.stderr
        assert stream is not None
        line = stream.readline().decode()
        match = re.search(r":(\d+)\s*$", line)
        assert match, f"{args[0]} printed {line!r} instead of its address"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def copy_file(
    src: Path, dst: Path, port: int, *, listen_port: int | None = None, extra: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    """``utcp cat HOST PORT < src`` into an already running ``cat --listen > dst``."""
    with src.open("rb") as f:
        return subprocess.run(
            [*UTCP, "cat", *extra, "127.0.0.1", str(port)],
            stdin=f,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT_S,
            check=False,
        )
