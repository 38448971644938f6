"""What the client and the server of each scenario do, on streams and on raw UDP.

Every scenario knows its byte counts in advance, so none depends on end-of-stream (aiokcp has
none).  Times come from ``time.perf_counter``; the server of a transfer times it from its first
byte to its last.  Results are plain dicts that the harness turns into metrics.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import Any

from _adapters import Adapter, Handler, grow_buffers

WRITE_BYTES = 64 * 1024  # per write(); also under aiokcp's largest message (127 fragments)
READ_BYTES = 64 * 1024
RR_BYTES = 64
CONNECT_BYTES = 64
MANY_WRITE_BYTES = 16 * 1024
# The raw-UDP floor sends datagrams of the size utcp's bulk sends with PMTU discovery off
# (utcp.config.DEFAULT_DATAGRAM_BYTES: 1428 bytes of data + the 24-byte header), so the
# per-datagram costs compared are those of equal datagrams.
UDP_DATAGRAM_BYTES = 1452
UDP_RR_TIMEOUT_S = 0.5  # a request unanswered this long counts as lost
_ZEROS = bytes(WRITE_BYTES)


def _errors(state: dict[str, Any], exc: BaseException) -> None:
    errors = state.setdefault("errors", [])
    if len(errors) < 5:
        errors.append(repr(exc))
    state["error_count"] = state.get("error_count", 0) + 1


# ---------------------------------------------------------------------------------- streams


def server_handler(
    scenario: str, params: dict[str, Any], state: dict[str, Any], adapter: Adapter
) -> Handler:
    """The per-connection coroutine of the server side; it records into ``state``."""
    state.update(connections=0, bytes=0, first_s=None, last_s=None, truncated=False)

    async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Goodput at the receiver from first to last byte; past cap_s it stops and acks early.
        want, cap_s = int(params["bytes"]), float(params["cap_s"])
        got, first, now, acked = 0, None, 0.0, False
        state["connections"] += 1
        try:
            while got < want:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                now = time.perf_counter()
                if first is None:
                    first = now
                got += len(data)
                if now - first > cap_s:
                    state["truncated"] = True
                    break
            state.update(bytes=state["bytes"] + got, first_s=first, last_s=now)
            writer.write(b"k")
            await writer.drain()
            acked = True
            # Read on to the client's close: closing with data still arriving would reset the
            # connection (as TCP does) under a client that has not yet seen the ack.
            while await reader.read(READ_BYTES):
                pass
        except Exception as exc:
            if not (acked and isinstance(exc, ConnectionError)):  # after the ack it may go
                _errors(state, exc)
        finally:
            adapter.finish(writer)

    async def rr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            while True:
                data = await reader.readexactly(RR_BYTES)
                writer.write(data)
                await writer.drain()
                state["bytes"] += RR_BYTES
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client is done
        except Exception as exc:
            _errors(state, exc)
        finally:
            adapter.finish(writer)

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            data = await reader.readexactly(CONNECT_BYTES)
            writer.write(data)
            await writer.drain()
            state["bytes"] += len(data)
        except Exception as exc:
            _errors(state, exc)
        finally:
            adapter.finish(writer)

    async def many(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        want, done = int(params["bytes"]), 0
        state["connections"] += 1
        try:
            while done < want:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                writer.write(data)
                done += len(data)
                await writer.drain()
        except Exception as exc:
            _errors(state, exc)
        finally:
            state["bytes"] += done
            adapter.finish(writer)

    handlers = {"bulk": bulk, "lossy": bulk, "rr": rr, "connect": connect, "many": many}
    return handlers[scenario]


async def client(
    scenario: str, adapter: Adapter, host: str, port: int, params: dict[str, Any]
) -> dict[str, Any]:
    if scenario in ("bulk", "lossy"):
        return await _bulk_client(adapter, host, port, params)
    if scenario == "rr":
        return await _rr_client(adapter, host, port, params)
    if scenario == "connect":
        return await _connect_client(adapter, host, port, params)
    if scenario == "many":
        return await _many_client(adapter, host, port, params)
    raise ValueError(f"unknown scenario {scenario!r}")


async def _bulk_client(
    adapter: Adapter, host: str, port: int, params: dict[str, Any]
) -> dict[str, Any]:
    want, sent = int(params["bytes"]), 0
    start = time.perf_counter()
    async with adapter.connect(host, port) as (reader, writer):
        # The server acks with one byte once it has everything (or its time cap ran out).
        ack = asyncio.ensure_future(reader.readexactly(1))
        while sent < want and not ack.done():
            n = min(WRITE_BYTES, want - sent)
            writer.write(_ZEROS if n == WRITE_BYTES else _ZEROS[:n])
            sent += n
            await writer.drain()
        await ack
        sender = _sender_stats(writer)
    return {"sent": sent, "seconds": time.perf_counter() - start, **sender}


def _sender_stats(writer: asyncio.StreamWriter) -> dict[str, Any]:
    """utcp's own counters for the sending side (other peers have none): how many segments
    carried the data, which shows the datagram size PMTU discovery reached."""
    stats = writer.get_extra_info("stats")
    segments = getattr(stats, "segments_sent", None)
    if not segments:
        return {}
    return {
        "segments_sent": segments,
        "bytes_per_segment": (stats.bytes_sent + stats.bytes_retransmitted) / segments,
        "mss_bytes": stats.mss_bytes,
        "retransmissions": stats.retransmissions,
    }


async def _rr_client(
    adapter: Adapter, host: str, port: int, params: dict[str, Any]
) -> dict[str, Any]:
    msg = bytes(RR_BYTES)
    latencies: list[int] = []
    async with adapter.connect(host, port) as (reader, writer):
        start = time.perf_counter_ns()
        end = start + int(float(params["seconds"]) * 1e9)
        t1 = start
        while t1 < end:
            t0 = time.perf_counter_ns()
            writer.write(msg)
            await reader.readexactly(RR_BYTES)
            t1 = time.perf_counter_ns()
            latencies.append(t1 - t0)
    return _rr_result(latencies, (t1 - start) / 1e9, lost=0)


def _rr_result(latencies: list[int], seconds: float, lost: int) -> dict[str, Any]:
    latencies.sort()
    return {
        "count": len(latencies),
        "lost": lost,
        "seconds": seconds,
        "bytes": 2 * RR_BYTES * len(latencies),
        "p50_us": _percentile(latencies, 0.50) / 1e3,
        "p99_us": _percentile(latencies, 0.99) / 1e3,
    }


def _percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return math.nan
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


async def _connect_client(
    adapter: Adapter, host: str, port: int, params: dict[str, Any]
) -> dict[str, Any]:
    """Sequential connections for ``seconds``: open, one 64-byte echo, close (and wait)."""
    msg = bytes(CONNECT_BYTES)
    setup_ns: list[int] = []
    start = time.perf_counter_ns()
    end = start + int(float(params["seconds"]) * 1e9)
    now = start
    while now < end or not setup_ns:
        t0 = time.perf_counter_ns()
        async with adapter.connect(host, port) as (reader, writer):
            writer.write(msg)
            await reader.readexactly(CONNECT_BYTES)
            setup_ns.append(time.perf_counter_ns() - t0)
        now = time.perf_counter_ns()
    setup_ns.sort()
    return {
        "count": len(setup_ns),
        "seconds": (now - start) / 1e9,
        "bytes": 2 * CONNECT_BYTES * len(setup_ns),
        "setup_p50_ms": _percentile(setup_ns, 0.5) / 1e6,
    }


async def _many_client(
    adapter: Adapter, host: str, port: int, params: dict[str, Any]
) -> dict[str, Any]:
    """``conns`` connections at once, each echoing ``bytes``; counts what came back."""
    want, conns = int(params["bytes"]), int(params["conns"])
    chunk = bytes(MANY_WRITE_BYTES)

    async def one() -> int:
        async with adapter.connect(host, port) as (reader, writer):

            async def send() -> None:
                sent = 0
                while sent < want:
                    n = min(MANY_WRITE_BYTES, want - sent)
                    writer.write(chunk if n == MANY_WRITE_BYTES else chunk[:n])
                    sent += n
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            got = 0
            try:
                while got < want:
                    data = await reader.read(READ_BYTES)
                    if not data:
                        break
                    got += len(data)
                await sender
            finally:
                sender.cancel()
            return got

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one() for _ in range(conns)), return_exceptions=True)
    seconds = time.perf_counter() - start
    state: dict[str, Any] = {"conns": conns, "seconds": seconds, "bytes": 0, "complete": 0}
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            _errors(state, outcome)
        else:
            state["bytes"] += outcome
            state["complete"] += outcome == want
    return state


# ---------------------------------------------------------------------------------- raw UDP


def _udp_socket(bind: tuple[str, int] | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    grow_buffers(sock)
    if bind is not None:
        sock.bind(bind)
    sock.setblocking(False)
    return sock


class UdpSink(asyncio.DatagramProtocol):
    """The raw-UDP server: counts every datagram (bulk) or echoes it too (rr)."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.transport: asyncio.DatagramTransport | None = None
        self.bytes = 0
        self.count = 0
        self.first_s: float | None = None
        self.last_s: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        if self.first_s is None:
            self.first_s = now
        self.last_s = now
        self.bytes += len(data)
        self.count += 1
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)

    def result(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "datagrams": self.count,
            "first_s": self.first_s,
            "last_s": self.last_s,
            "connections": 0,
        }


async def udp_serve(scenario: str, host: str) -> tuple[UdpSink, int]:
    loop = asyncio.get_running_loop()
    sink = UdpSink(echo=scenario == "rr")
    sock = _udp_socket((host, 0))
    await loop.create_datagram_endpoint(lambda: sink, sock=sock)
    return sink, int(sock.getsockname()[1])


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


async def udp_client(scenario: str, host: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sock = _udp_socket()
    sock.connect((host, port))
    transport, proto = await loop.create_datagram_endpoint(_UdpClient, sock=sock)
    try:
        if scenario == "bulk":
            return await _udp_blast(transport, proto, int(params["bytes"]))
        if scenario == "rr":
            return await _udp_rr(transport, proto, float(params["seconds"]))
        raise ValueError(f"raw UDP has no {scenario!r} scenario")
    finally:
        transport.close()


async def _udp_blast(
    transport: asyncio.DatagramTransport, proto: _UdpClient, want: int
) -> dict[str, Any]:
    """Send ``want`` bytes as 1452-byte datagrams as fast as the loop goes; no reliability.

    It yields to the loop every 64 datagrams and stops while asyncio's buffer is over its high
    mark; whatever the receiver cannot keep up with is dropped by its kernel queue.
    """
    payload = bytes(UDP_DATAGRAM_BYTES)
    count = -(-want // UDP_DATAGRAM_BYTES)
    start = time.perf_counter()
    for i in range(count):
        transport.sendto(payload)
        if i & 63 == 63:
            await asyncio.sleep(0)
            if not proto.writable.is_set():
                await proto.writable.wait()
    seconds = time.perf_counter() - start
    await asyncio.sleep(0.3)  # datagrams still queued reach the receiver before it is stopped
    return {
        "sent": count * UDP_DATAGRAM_BYTES,
        "datagrams": count,
        "datagram_bytes": UDP_DATAGRAM_BYTES,
        "seconds": seconds,
    }


async def _udp_rr(
    transport: asyncio.DatagramTransport, proto: _UdpClient, seconds: float
) -> dict[str, Any]:
    """One 64-byte datagram echoed at a time.

    A watchdog, not a timer per request, gives up on a request still unanswered after one or
    two UDP_RR_TIMEOUT_S ticks; it counts as lost.  That keeps the floor's per-request work down
    to one sendto and one future.
    """
    loop = asyncio.get_running_loop()
    msg = bytes(RR_BYTES)
    latencies: list[int] = []
    lost = 0
    seen: list[asyncio.Future[None] | None] = [None]

    def watchdog() -> None:
        waiter = proto.waiter
        if waiter is not None and waiter is seen[0] and not waiter.done():
            waiter.set_exception(TimeoutError())
        seen[0] = waiter
        handle[0] = loop.call_later(UDP_RR_TIMEOUT_S, watchdog)

    handle = [loop.call_later(UDP_RR_TIMEOUT_S, watchdog)]
    start = time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    t1 = start
    try:
        while t1 < end:
            waiter = proto.waiter = loop.create_future()
            t0 = time.perf_counter_ns()
            transport.sendto(msg)
            try:
                await waiter
            except TimeoutError:
                lost += 1
            else:
                latencies.append(time.perf_counter_ns() - t0)
            t1 = time.perf_counter_ns()
    finally:
        handle[0].cancel()
    return _rr_result(latencies, (t1 - start) / 1e9, lost=lost)
