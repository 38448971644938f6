"""A conformance suite for a half-closeable byte stream, in the shape of trio's
``check_half_closeable_stream`` (trio/testing/_check_streams.py), written against asyncio's
``StreamReader``/``StreamWriter``: kernel TCP through asyncio is the control, and utcp must
pass the same checks on both event loops.

trio's ``send_all``/``receive_some``/``send_eof``/``aclose``/``aclose_forcefully`` are
``write()`` + ``drain()``/``read(n)``/``write_eof()``/``close()`` + ``wait_closed()``/
``transport.abort()``.  Where asyncio's contract differs from trio's the check asserts
asyncio's, as TCP shows it: a second concurrent ``read()`` raises ``RuntimeError`` (trio's
``BusyResourceError``), while concurrent ``drain()`` calls and writers are allowed; a closed
stream reads EOF (trio's ``ClosedResourceError``); a broken or closed one fails the next send
with ``ConnectionResetError``/``BrokenPipeError`` from ``drain()``, or ``RuntimeError`` from
``write()`` itself on uvloop (``send_fails``).  The "clogged" pairs bound every buffer (kernel
socket buffers for TCP, ``Config`` for utcp, the reader's limit and the write marks) and then
write far more than all of them hold, so that ``drain()`` provably cannot return until the
peer reads: no check depends on timing.

Every check passes for both stacks.  One needed a fix in utcp: ``drain()`` after ``close()`` or
``abort()`` raised nothing, because utcp reports connection_lost only once the peer has
acknowledged the FIN, where asyncio's transports report it one loop turn later
(``utcp.StreamWriter.drain``).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, deadline, make_run_fixture, seeded_bytes, server_port

# Real sockets: run on both datagram I/O paths; and on both builds of the core (conformance).
pytestmark = [pytest.mark.sockets, pytest.mark.conformance]

KIB = 1 << 10
MIB = 1 << 20

run = make_run_fixture()

# The clogged pairs: every buffer between writer and reader bounded ...
SMALL_SOCKET_BUFFER = 64 * KIB  # TCP: SO_SNDBUF/SO_RCVBUF (the kernel doubles them)
SMALL_READER_LIMIT = 4 * KIB  # the StreamReader pauses its transport past twice this
HIGH_WATER = 64 * KIB  # the writer's transport: drain() blocks past this, until below a 1/4
UTCP_SMALL = utcp.Config(
    recv_buffer_bytes=64 * KIB,
    recv_window_initial_bytes=64 * KIB,
    send_buffer_bytes=HIGH_WATER,
    send_buffer_max_bytes=HIGH_WATER,
)
# ... and far more written than they hold together: with TCP at most 2 x 128 KiB of kernel
# buffers + 8 KiB in the reader + one 256 KiB read; with utcp a 64 KiB window + the reader's.
CLOG_BYTES = MIB
CLOG_SEED = 21

# How many loop iterations count as "everything that can run has run" (trio's
# wait_all_tasks_blocked): only ever used where what must happen takes one iteration (a new
# task reaching its first await) or where what is asserted not to happen cannot happen yet.
SETTLE_ITERATIONS = 20

# trio's duplex check: 1 MiB each way, chunks of 1..16 KiB.
DUPLEX_BYTES = MIB
CHUNK_MAX = 16 * KIB
DUPLEX_SEED = 0  # as trio's

SEND_FAILS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


# ---------------------------------------------------------------------- the stream under test


@dataclass
class End:
    """One end of a connected stream, with trio's stream vocabulary."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive_some(self, max_bytes: int = 64 * KIB) -> bytes:
        return await self.reader.read(max_bytes)

    def send_eof(self) -> None:
        self.writer.write_eof()

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    def abort(self) -> None:
        """trio's ``aclose_forcefully``: reset, whatever state the stream is in."""
        # asyncio 3.11's selector transport, closed by a close() that first had to flush its
        # buffer (selector_events.py, _write_ready), never counts itself lost: abort() then
        # raises AttributeError on its cleared loop.  It is closed: there is nothing to reset.
        with suppress(AttributeError):
            self.writer.transport.abort()

    async def receive_exactly(self, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            chunk = await self.receive_some()
            assert chunk, f"EOF after {len(got)} of {size} bytes"
            got += chunk
        return bytes(got)


async def send_fails(end: End, data: bytes = b"x" * 100) -> None:
    """Sending on a closed or broken stream fails and keeps failing.  asyncio's transports drop
    the bytes and ``drain()`` raises; uvloop's raise ``RuntimeError`` from ``write()`` once
    the handle is closed."""
    try:
        end.writer.write(data)
    except RuntimeError:
        return
    with pytest.raises(SEND_FAILS):
        await end.writer.drain()


async def settle() -> None:
    """Let every task that can make progress make it."""
    for _ in range(SETTLE_ITERATIONS):
        await asyncio.sleep(0)


async def read_to_eof_or_error(end: End) -> bytes:
    """What a reader gets from a stream whose peer went away: data, then EOF or a reset."""
    got = bytearray()
    with suppress(*SEND_FAILS):
        while chunk := await end.receive_some():
            got += chunk
    return bytes(got)


def _tcp_socket(small: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small:  # set before connect/listen: accepted sockets inherit the listener's
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_SOCKET_BUFFER)
    sock.setblocking(False)
    return sock


Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]


async def _serve_tcp(connected: Connected, small: bool, limit: int) -> tuple[Any, int]:
    listener = _tcp_socket(small)
    listener.bind((HOST, 0))
    listener.listen()
    server = await asyncio.start_server(connected, sock=listener, limit=limit)
    return server, server_port(server)


async def _open_tcp(port: int, small: bool, limit: int) -> tuple[Any, Any]:
    sock = _tcp_socket(small)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


async def _serve_utcp(connected: Connected, small: bool, limit: int) -> tuple[Any, int]:
    config = UTCP_SMALL if small else None
    server = await utcp.start_server(connected, HOST, 0, limit=limit, config=config)
    return server, server_port(server)


async def _open_utcp(port: int, small: bool, limit: int) -> tuple[Any, Any]:
    return await utcp.open_connection(HOST, port, limit=limit, config=UTCP_SMALL if small else None)


STACKS: dict[str, tuple[Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]]] = {
    "tcp": (_serve_tcp, _open_tcp),  # the control
    "utcp": (_serve_utcp, _open_utcp),
}


@pytest.fixture(params=sorted(STACKS))
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["client-sends", "server-sends"])
def flipped(request: pytest.FixtureRequest) -> bool:
    """trio runs its one-way checks both ways round: here client to server and back."""
    return request.param == "server-sends"


@asynccontextmanager
async def stream_pair(
    stack: str, *, flipped: bool = False, small: bool = False
) -> AsyncIterator[tuple[End, End]]:
    """A connected ``(sender, receiver)`` pair (client first unless ``flipped``), force-closed
    on the way out as trio's ``_ForceCloseBoth``; ``small`` bounds every buffer (the clogged
    pairs)."""
    serve, open_ = STACKS[stack]
    limit = SMALL_READER_LIMIT if small else 2**16
    accepted: asyncio.Future[End] = asyncio.get_running_loop().create_future()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result(End(reader, writer))

    server, port = await serve(connected, small, limit)
    try:
        reader, writer = await open_(port, small, limit)
        ends = (End(reader, writer), await accepted)
        if flipped:
            ends = (ends[1], ends[0])
        if small:
            for end in ends:
                end.writer.transport.set_write_buffer_limits(high=HIGH_WATER)
        try:
            yield ends
        finally:
            for end in ends:
                end.abort()
            for end in ends:
                with suppress(*SEND_FAILS):
                    await end.writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def clog(sender: End) -> bytes:
    """Write more than every buffer between ``sender`` and its peer holds (the pair must be
    ``small``): the transport stays above its high-water mark and ``drain()`` cannot return
    until the peer reads.  Returns what was written."""
    data = seeded_bytes(CLOG_SEED, CLOG_BYTES)
    sender.writer.write(data)
    await settle()  # whatever the peer's buffers take has gone
    transport = sender.writer.transport
    assert transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
    return data


# ---------------------------------------------------------------------- one way (both ways round)


def test_send_and_receive_with_every_bytes_type(run: Runner, stack: str, flipped: bool) -> None:
    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            for data, expected in [
                (b"x", b"x"),
                (bytearray(b"1"), b"1"),
                (memoryview(b"2"), b"2"),
            ]:
                got, _ = await asyncio.gather(r.receive_some(1), s.send_all(data))
                assert got == expected
            # b"" is not special: no EOF, nothing sent
            await s.send_all(b"")
            await s.send_all(b"y")
            assert await r.receive_some(1) == b"y"
            assert await r.reader.read(0) == b""  # at once, consuming nothing
            with pytest.raises(TypeError):
                s.writer.write("text")  # type: ignore[arg-type]
            s.writer.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
            await s.writer.drain()
            assert await r.receive_exactly(3) == b"abc"

    run(main())


def test_a_second_concurrent_read_is_refused(run: Runner, stack: str, flipped: bool) -> None:
    """trio's BusyResourceError: asyncio's StreamReader raises RuntimeError, and the first
    read carries on."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            first = asyncio.create_task(r.receive_some(1))
            await settle()
            with pytest.raises(RuntimeError):
                await r.receive_some(1)
            await s.send_all(b"x")
            assert await first == b"x"

    run(main())


def test_drain_returns_with_nothing_buffered(run: Runner, stack: str, flipped: bool) -> None:
    """trio's wait_send_all_might_not_block on an idle stream whose peer waits in a read; the
    cancelled read leaves the stream usable."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            pending = asyncio.create_task(r.receive_some(1))
            await settle()
            async with deadline(5, "drain() on an idle stream"):
                await s.writer.drain()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            await s.send_all(b"z")
            assert await r.receive_some(1) == b"z"

    run(main())


def test_closing_the_receiver_breaks_the_sender(run: Runner, stack: str, flipped: bool) -> None:
    """A sender writing to a peer that closed fails (TCP: the peer's kernel answers with a
    reset) and stays failed; the closed side reads EOF; closing twice is fine, and once the
    sender closes, sending fails even for an empty write."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):

            async def keep_sending() -> None:
                with pytest.raises(SEND_FAILS):
                    while True:
                        await s.send_all(b"x" * 100)

            await asyncio.gather(keep_sending(), r.aclose())
            await send_fails(s)  # once broken, it stays broken
            async with deadline(5, "reading a stream we closed"):
                await read_to_eof_or_error(r)
                assert r.reader.at_eof() or r.reader.exception() is not None
            await r.aclose()
            await r.aclose()
            r.writer.close()
            with suppress(*SEND_FAILS):  # the sender's side was reset
                await s.aclose()
            await send_fails(s)
            await send_fails(s, b"")
            s.writer.close()
            assert s.writer.is_closing()

    run(main())


def test_send_then_close_delivers_then_eof(run: Runner, stack: str, flipped: bool) -> None:
    """The sender closes before the receiver reads anything: the data still arrives, then
    EOF."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            await s.send_all(b"y")
            await s.aclose()
            assert await r.receive_some(1) == b"y"
            assert await r.receive_some(1) == b""
            await r.aclose()

    run(main())


def test_aborting_the_receiver_breaks_the_sender(run: Runner, stack: str, flipped: bool) -> None:
    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            r.abort()
            with pytest.raises(SEND_FAILS):
                while True:
                    await s.send_all(b"x" * 100)
            assert await r.receive_some(4096) == b""  # an aborted stream reads EOF

    run(main())


def test_aborting_the_sender(run: Runner, stack: str, flipped: bool) -> None:
    """trio: the receiver then sees EOF or a reset; never data, never a hang."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            s.abort()
            await s.writer.wait_closed()
            await send_fails(s, b"123")
            async with deadline(5, "reading from an aborted peer"):
                assert await read_to_eof_or_error(r) == b""

    run(main())


def test_a_cancelled_wait_closed_still_closes(run: Runner, stack: str, flipped: bool) -> None:
    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            for end in (r, s):
                end.writer.close()
                waiting = asyncio.create_task(end.writer.wait_closed())
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            assert s.writer.is_closing() and r.writer.is_closing()
            async with deadline(5, "reading a closed stream"):
                assert await r.receive_some(4096) == b""
            await s.writer.wait_closed()
            await r.writer.wait_closed()
            await send_fails(s, b"123")

    run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_send_right_after_close_or_abort_fails(
    run: Runner, stack: str, flipped: bool, how: str
) -> None:
    """``write(); await drain()`` at once after close()/abort(): the bytes are dropped, and
    drain() must say so (asyncio's StreamWriter gives the transport one loop iteration to
    report connection_lost); uvloop's write() raises instead."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, _r):
            await s.send_all(b"sent")
            if how == "close":
                s.writer.close()
            else:
                s.abort()
            await send_fails(s)

    run(main())


def test_graceful_close_after_cancelled_operations(run: Runner, stack: str, flipped: bool) -> None:
    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s, r):
            sending = asyncio.create_task(s.send_all(b"x"))
            receiving = asyncio.create_task(r.receive_some(1))
            sending.cancel()
            receiving.cancel()
            for task in (sending, receiving):
                with pytest.raises(asyncio.CancelledError):
                    await task
            await asyncio.gather(s.aclose(), r.aclose())

    run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_closing_wakes_a_blocked_reader(run: Runner, stack: str, flipped: bool, how: str) -> None:
    """trio: ClosedResourceError in the blocked receive_some; asyncio: the read returns EOF."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (_s, r):
            blocked = asyncio.create_task(r.receive_some(10))
            await settle()
            assert not blocked.done()
            if how == "close":
                await r.aclose()
            else:
                r.abort()
            async with deadline(5, "a read blocked while its stream closed"):
                assert await blocked == b""

    run(main())


# ---------------------------------------------------------------------- one way, clogged


def test_clogged_drain_wakes_once_the_peer_reads(run: Runner, stack: str, flipped: bool) -> None:
    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            record = []

            async def waiter() -> None:
                record.append("waiter sleeping")
                await s.writer.drain()
                record.append("waiter woke up")

            waiting = asyncio.create_task(waiter())
            await settle()
            record.append("receiver starting")
            assert await r.receive_exactly(len(data)) == data
            await waiting
            assert record == ["waiter sleeping", "receiver starting", "waiter woke up"]

    run(main())


def test_clogged_concurrent_drains_all_wake(run: Runner, stack: str, flipped: bool) -> None:
    """trio refuses a second waiter (BusyResourceError); asyncio wakes them all (bpo-29930)."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            drains = [asyncio.create_task(s.writer.drain()) for _ in range(3)]
            await settle()
            assert not any(d.done() for d in drains)
            assert await r.receive_exactly(len(data)) == data
            await asyncio.gather(*drains)

    run(main())


def test_clogged_concurrent_writers_keep_write_order(
    run: Runner, stack: str, flipped: bool
) -> None:
    """trio refuses two concurrent send_all; asyncio's writes are atomic and ordered, and both
    writers' drain() wait for the peer."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            one = asyncio.create_task(s.send_all(b"123"))
            two = asyncio.create_task(s.send_all(b"456"))
            await settle()
            assert not one.done() and not two.done()
            assert await r.receive_exactly(len(data) + 6) == data + b"123456"
            await asyncio.gather(one, two)

    run(main())


@pytest.mark.parametrize("when", ["while-waiting", "before-waiting"])
def test_clogged_receiver_abort_ends_drain(
    run: Runner, stack: str, flipped: bool, when: str
) -> None:
    """trio: closing the receiver makes wait_send_all_might_not_block return, with or without
    an exception, whether the call started before or after the close."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            await clog(s)
            if when == "before-waiting":
                r.abort()
            waiting = asyncio.create_task(s.writer.drain())
            await settle()
            if when == "while-waiting":
                assert not waiting.done()
                r.abort()
            async with deadline(10, "drain() after the peer aborted"):
                with suppress(*SEND_FAILS):
                    await waiting

    run(main())


def test_clogged_sender_abort_wakes_its_drain(run: Runner, stack: str, flipped: bool) -> None:
    """trio: ClosedResourceError in the blocked send; asyncio's drain() returns (the transport
    reports connection_lost(None)) and the next send fails."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            waiting = asyncio.create_task(s.writer.drain())
            await settle()
            assert not waiting.done()
            s.abort()
            async with deadline(5, "a drain() blocked while its stream aborted"):
                with suppress(*SEND_FAILS):
                    await waiting
            await send_fails(s)
            async with deadline(10, "reading from an aborted peer"):
                got = await read_to_eof_or_error(r)
            assert data.startswith(got)

    run(main())


def test_clogged_close_completes_once_the_peer_reads(
    run: Runner, stack: str, flipped: bool
) -> None:
    """close() sends what is buffered, then EOF: wait_closed() (and a blocked drain) wait for
    the reader, who gets every byte then EOF."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            draining = asyncio.create_task(s.writer.drain())
            s.writer.close()
            closing = asyncio.create_task(s.writer.wait_closed())
            await settle()
            assert not closing.done() and not draining.done()
            assert await r.receive_exactly(len(data)) == data
            assert await r.receive_some() == b""
            await closing
            with suppress(*SEND_FAILS):
                await draining
            await r.aclose()

    run(main())


# ---------------------------------------------------------------------- two way


@pytest.mark.parametrize("buffers", ["default-buffers", "small-buffers"])
def test_duplex_random_chunks_both_ways_at_once(run: Runner, stack: str, buffers: str) -> None:
    """trio's duplex check; with small buffers both readers keep pausing their transports and
    both writers keep waiting in drain(), at once."""
    seed = DUPLEX_SEED

    async def main() -> None:
        test_data = seeded_bytes(seed, DUPLEX_BYTES)

        async def sender(end: End, data: bytes, seed: int) -> None:
            rng = random.Random(seed)
            view = memoryview(data)
            while view:
                size = rng.randint(1, CHUNK_MAX)
                await end.send_all(view[:size])
                view = view[size:]

        async def receiver(end: End, data: bytes, seed: int) -> None:
            rng = random.Random(seed)
            got = bytearray()
            while len(got) < len(data):
                chunk = await end.receive_some(rng.randint(1, CHUNK_MAX))
                assert chunk, f"EOF after {len(got)} bytes"
                got += chunk
            assert got == data

        async with stream_pair(stack, small=buffers == "small-buffers") as (s1, s2):
            await asyncio.gather(
                sender(s1, test_data, seed),
                sender(s2, test_data[::-1], seed + 1),
                receiver(s1, test_data[::-1], seed + 2),
                receiver(s2, test_data, seed + 3),
            )

            async def expect_eof_then_close() -> None:
                assert await s2.receive_some(10) == b""
                await s2.aclose()

            await asyncio.gather(expect_eof_then_close(), s1.aclose())

    try:
        run(main())
    except BaseException:
        print(f"duplex check: seed {seed}")  # the chunk sizes and data follow from it
        raise


# ---------------------------------------------------------------------- half-close


def test_send_eof_then_the_other_direction(run: Runner, stack: str, flipped: bool) -> None:
    """After write_eof() one way, writing that way raises, write_eof() again is harmless and
    the other way still works; with both ways shut the streams stay open (no reset, drain()
    fine) until closed, as a TCP socket."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped) as (s1, s2):
            assert s1.writer.can_write_eof()

            async def send_x_then_eof(end: End) -> None:
                await end.send_all(b"x")
                end.send_eof()

            async def expect_x_then_eof(end: End) -> None:
                await settle()
                assert await end.receive_some(10) == b"x"
                assert await end.receive_some(10) == b""
                assert end.reader.at_eof()

            await asyncio.gather(send_x_then_eof(s1), expect_x_then_eof(s2))
            with pytest.raises(RuntimeError):
                s1.writer.write(b"y")
            s1.send_eof()
            await asyncio.gather(send_x_then_eof(s2), expect_x_then_eof(s1))
            await settle()
            for end in (s1, s2):
                assert not end.writer.is_closing()
                await end.writer.drain()
            await asyncio.gather(s1.aclose(), s2.aclose())

    run(main())


def test_clogged_send_eof_follows_the_buffered_data(run: Runner, stack: str, flipped: bool) -> None:
    """trio refuses send_eof during a blocked send_all; asyncio queues the EOF behind the
    buffered bytes, and the blocked drain() wakes as the reader reads."""

    async def main() -> None:
        async with stream_pair(stack, flipped=flipped, small=True) as (s, r):
            data = await clog(s)
            draining = asyncio.create_task(s.writer.drain())
            await settle()
            s.send_eof()
            assert not s.writer.is_closing()
            assert await r.receive_exactly(len(data)) == data
            assert await r.receive_some() == b""
            await draining
            await r.send_all(b"back")  # the other way stays open
            assert await s.receive_exactly(4) == b"back"

    run(main())


# ---------------------------------------------------------------------- close semantics


def test_close_semantics(run: Runner, stack: str) -> None:
    """The two ends name each other; is_closing() turns True at close() and stays; close() and
    wait_closed() may be repeated; the peer of a closed stream reads EOF and can still close
    cleanly."""

    async def main() -> None:
        async with stream_pair(stack) as (c, s):
            assert c.writer.get_extra_info("peername") == s.writer.get_extra_info("sockname")
            assert s.writer.get_extra_info("peername") == c.writer.get_extra_info("sockname")
            assert not c.writer.is_closing()
            c.writer.close()
            assert c.writer.is_closing()
            c.writer.close()
            assert await s.receive_some() == b""
            await c.writer.wait_closed()
            await c.writer.wait_closed()
            assert c.writer.is_closing()
            assert not s.writer.is_closing()  # half-closed by the peer, not closed
            await s.aclose()
            await s.aclose()

    run(main())
