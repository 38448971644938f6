"""``sendfile`` for utcp transports: a file's bytes written in chunks with backpressure.

There is no kernel ``sendfile`` for a UDP transport: like asyncio's own fallback (and the one
its TLS transports use), the file is read in chunks in the default executor and written as
the connection drains.  On asyncio's event loops ``loop.sendfile(transport, file)`` takes that
fallback by itself; uvloop's refuses every transport but its own, hence ``utcp.sendfile``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .transport import UtcpTransport

__all__ = ["sendfile"]

_CHUNK_BYTES = 64 * 1024  # one read and one write per chunk; a few segments' worth


class _Drainer(asyncio.Protocol):
    """Stands in for the application's protocol while the file is written: it learns the
    transport's pause/resume and connection_lost, and hands the protocol back after."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._protocol = transport.get_protocol()
        self._was_reading = transport.is_reading()
        self._paused = bool(getattr(transport, "_protocol_paused", False))
        self._was_paused = self._paused
        self._ready: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None
        self._done = False
        transport.pause_reading()
        transport.set_protocol(self)

    async def drain(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._paused:
            self._ready = asyncio.get_running_loop().create_future()
            await self._ready

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("Connection is closed by peer")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(self._lost)
        self._protocol.connection_lost(exc)

    def restore(self) -> None:
        """The application's protocol back, with its reading and writing state."""
        transport = self._transport
        transport.set_protocol(self._protocol)
        if self._was_reading and not transport.is_closing():
            transport.resume_reading()
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        # The protocol hears of a pause or resume that happened while it was away (a
        # UtcpTransport tells a protocol handed back paused itself).
        if self._paused and not self._was_paused and not isinstance(transport, UtcpTransport):
            self._protocol.pause_writing()
        elif self._was_paused and not self._paused:
            self._protocol.resume_writing()


async def sendfile(
    transport: asyncio.BaseTransport,
    file: Any,
    offset: int = 0,
    count: int | None = None,
) -> int:
    """Send ``count`` bytes of ``file`` (a file object opened in binary mode) from ``offset``
    (all of it when None) over ``transport``; returns the bytes sent and leaves the file
    positioned after them, as ``loop.sendfile``.  Works on every event loop."""
    if not isinstance(transport, asyncio.WriteTransport) or not hasattr(transport, "set_protocol"):
        raise TypeError(f"sendfile needs a stream transport, not {transport!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
    if count is not None and (not isinstance(count, int) or count <= 0):
        raise ValueError(f"count must be a positive integer (got {count!r})")
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    assert isinstance(transport, asyncio.Transport)
    if transport.is_closing():
        raise RuntimeError("Transport is closing")
    loop = asyncio.get_running_loop()
    if offset or (hasattr(file, "seekable") and file.seekable()):
        # From ``offset``, 0 included, as the kernel's sendfile (asyncio's fallback starts at
        # the file's position when offset is 0); an unseekable file is read as it stands.
        file.seek(offset)
    buf = bytearray(min(count, _CHUNK_BYTES) if count else _CHUNK_BYTES)
    total = 0
    drainer = _Drainer(transport)
    try:
        while True:
            size = len(buf) if count is None else min(count - total, len(buf))
            if size <= 0:
                return total
            view = memoryview(buf)[:size]
            read = await loop.run_in_executor(None, file.readinto, view)
            if not read:
                return total
            await drainer.drain()
            transport.write(view[:read])  # the transport copies it
            total += read
    finally:
        if total and hasattr(file, "seek"):
            file.seek(offset + total)
        drainer.restore()
