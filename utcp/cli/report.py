"""What the command line tells a user about a connection: with ``-v``, one line when it is
established or accepted (the peer) and one when it closes (why, and a summary); and round-trip
times shown no finer than the event loop's clock can measure them.

The core measures RTTs with the ``now`` the asyncio layer gives it, ``loop.time()``: on uvloop
that is libuv's millisecond clock, so a loopback RTT of 0.2 ms is sampled as 0 or 1 ms.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..connection import Connection
from ..log import get_logger
from ..trace import address_text

__all__ = [
    "FINE_CLOCK_S",
    "Opened",
    "clock_note",
    "clock_resolution",
    "connection_closed",
    "connection_opened",
    "measure_resolution",
    "reported",
    "rtt_text",
]

FINE_CLOCK_S = 1e-6  # a clock at least this fine shows RTTs to the microsecond
_PROBE_S = 0.05  # longest we watch a clock tick while measuring its resolution
_TICKS = 3  # steps observed; the smallest is the resolution

_log = get_logger()
_CLOCK = "monotonic"  # the one clock measured (see clock_resolution)
_resolutions: dict[str, float] = {}


def measure_resolution(clock: Callable[[], float], *, budget_s: float = _PROBE_S) -> float:
    """The smallest step ``clock`` takes, watched for a few ticks (at most ``budget_s``
    seconds of wall time); ``budget_s`` itself when it never moved."""
    steps: list[float] = []
    last = clock()
    give_up = time.monotonic() + budget_s
    while len(steps) < _TICKS and time.monotonic() < give_up:
        now = clock()
        if now != last:
            steps.append(now - last)
            last = now
    return min(steps, default=budget_s)


def clock_resolution(loop: asyncio.AbstractEventLoop | None = None) -> float:
    """The resolution, in seconds, of the clock utcp's RTTs are measured with: the endpoint
    gives the core ``time.monotonic()`` as ``now`` on every loop (uvloop's ``loop.time()``
    moves in whole milliseconds, which is why it is not used), so this is well under a
    microsecond on Linux.  ``loop`` is accepted for compatibility and not needed."""
    del loop
    if _CLOCK not in _resolutions:
        # Two significant digits: a step of 0.00099999999997 (float subtraction) is 1 ms.
        _resolutions[_CLOCK] = float(f"{measure_resolution(time.monotonic):.2g}")
    return _resolutions[_CLOCK]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:g}"


def rtt_text(rtt_s: float | None, resolution_s: float, *, decimals: int = 3) -> str:
    """An RTT in milliseconds shown no finer than the clock that measured it: ``0.204 ms`` on
    a fine clock, ``< 1 ms`` or ``3 ms`` on a 1 ms clock, ``-`` before the first sample."""
    if rtt_s is None:
        return "-"
    if resolution_s <= FINE_CLOCK_S:
        return f"{rtt_s * 1e3:.{decimals}f} ms"
    if rtt_s < resolution_s:
        return f"< {_ms(resolution_s)} ms"
    places = max(0, -math.floor(math.log10(resolution_s * 1e3)))
    return f"{round(rtt_s / resolution_s) * resolution_s * 1e3:.{places}f} ms"


def clock_note(resolution_s: float) -> str:
    """`` (clock resolution 1 ms)`` after an RTT from a coarse clock; empty for a fine one."""
    return "" if resolution_s <= FINE_CLOCK_S else f" (clock resolution {_ms(resolution_s)} ms)"


@dataclass(frozen=True)
class Opened:
    """A connection as ``connection_opened`` saw it: the core ``Connection`` keeps its numbers
    after the stream is closed, when a TLS stream no longer reaches the layer beneath it."""

    connection: Connection
    peer: Any
    at: float  # time.monotonic()


def connection_opened(writer: asyncio.StreamWriter, *, accepted: bool) -> Opened:
    """Log ``connection_established`` (we connected) or ``connection_accepted`` at info level,
    with the peer's address; return what ``connection_closed`` reports from."""
    conn = writer.get_extra_info("connection")
    peer = writer.get_extra_info("peername")
    _log.info(
        "connection_accepted" if accepted else "connection_established",
        peer=address_text(peer),
        cid=f"{conn.local_cid:08x}",
    )
    return Opened(conn, peer, time.monotonic())


def connection_closed(opened: Opened) -> None:
    """Log ``connection_closed`` at info level: the reason and a one-line summary (bytes each
    way, duration, srtt, retransmissions)."""
    conn = opened.connection
    stats = conn.stats
    reason = conn.close_reason
    resolution = clock_resolution()
    fields: dict[str, Any] = {
        "peer": address_text(opened.peer),
        "cid": f"{conn.local_cid:08x}",
        # None: our side is done, the peer's FIN still to come (the endpoint sees it through).
        "reason": reason.value if reason is not None else "closing",
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "duration_s": round(time.monotonic() - opened.at, 3),
        "srtt": rtt_text(stats.srtt_s, resolution),
        "retransmissions": stats.retransmissions,
    }
    if reason is None:
        fields["state"] = stats.state.value
    if resolution > FINE_CLOCK_S:
        fields["clock_resolution"] = f"{_ms(resolution)} ms"
    _log.info("connection_closed", **fields)


def reported(
    callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server's connection callback that also logs the connection's acceptance and close."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened = connection_opened(writer, accepted=True)
        try:
            await callback(reader, writer)
            if not writer.is_closing():  # a TLS stream closed twice forgets its connection
                writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        finally:
            connection_closed(opened)

    return run
