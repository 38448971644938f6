"""asyncio's close semantics over real sockets: ``wait_closed()`` returns once what was written
is acknowledged, the rest of the teardown (FIN_WAIT_2, TIME_WAIT) runs in the background of the
endpoint, and sockets are released when their last connection is done, waited for or not."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    LOOP_KINDS,
    Runner,
    deadline,
    make_run_fixture,
    runner_for,
    server_port,
    wait_until,
)
from utcp import CloseReason, Config, ConnectionState, Flag, Packet, decode, encode

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

S = ConnectionState
run = make_run_fixture()
LONG_MSL = Config(msl_s=30.0)  # TIME_WAIT of a minute: anything waiting it out would hang


async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to the client's FIN, then close: the client is the active closer."""
    await reader.read()
    writer.close()
    await writer.wait_closed()


class CloseFirst:
    """A server handler that writes ``b"bye"`` and closes first, waiting until the client
    has acknowledged both; ``done`` once it has."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def __call__(self, reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(b"bye")
        writer.close()
        await writer.wait_closed()
        if not self.done.done():
            self.done.set_result(None)


async def server_side_in_time_wait(server: utcp.Server) -> None:
    """Wait until every connection the server holds is in TIME_WAIT (it closed first)."""

    def all_in_time_wait() -> bool:
        return all(h.conn.state is S.TIME_WAIT for h in list(server.endpoint.handles()))

    await wait_until(all_in_time_wait, "the server's side in TIME_WAIT")


def test_close_returns_once_our_data_is_acknowledged_though_the_peer_never_closes(
    run: Runner,
) -> None:
    """The peer reads everything but never closes: wait_closed() still returns as soon as
    every byte and the FIN are acknowledged, not after fin_wait_2_timeout_s (60 s)."""

    async def main() -> None:
        release = asyncio.Event()
        received = bytearray()

        async def never_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1 << 16):
                received.extend(data)
            await release.wait()
            writer.close()

        server = await utcp.start_server(never_closes, HOST, 0)
        _, writer = await utcp.open_connection(HOST, server_port(server))
        payload = bytes(range(256)) * 4096  # 1 MiB
        writer.write(payload)
        writer.close()
        async with deadline(20, "wait_closed() after the data is acknowledged"):
            await writer.wait_closed()
        conn = writer.get_extra_info("connection")
        assert conn.send_buffer_size == 0
        assert conn.state is S.FIN_WAIT_2  # the peer has not closed: that goes on meanwhile
        # Acknowledged means delivered to the peer's connection; its reader may lag a turn.
        await wait_until(lambda: len(received) == len(payload), "the peer reading it all")
        assert bytes(received) == payload
        endpoint = writer.get_extra_info("endpoint")
        assert endpoint.transport is not None  # the connection still needs its socket
        release.set()  # the peer closes at last: TIME_WAIT, then the socket goes
        await wait_until(lambda: conn.state is S.TIME_WAIT or conn.is_finished, "the peer's FIN")
        assert conn.close_reason is CloseReason.CLOSED
        server.close()
        await server.wait_closed()

    run(main())


def test_server_wait_closed_does_not_wait_out_time_wait(run: Runner) -> None:
    """The server closes first, so its side ends in TIME_WAIT (a minute here): closing the
    server still returns at once, as asyncio's does, and leaves TIME_WAIT to the background."""

    async def main() -> None:
        async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye")
            writer.close()
            await writer.wait_closed()

        server = await utcp.start_server(close_first, HOST, 0, config=LONG_MSL)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        assert await reader.read() == b"bye"
        writer.close()
        await writer.wait_closed()
        await server_side_in_time_wait(server)
        server.close()
        async with deadline(10, "server.wait_closed() with a connection in TIME_WAIT"):
            await server.wait_closed()
        # TIME_WAIT runs its course in the background, on the still-open socket, until the
        # loop shuts down (test_loop_shutdown_closes_a_socket_held_only_by_time_wait).
        assert server.endpoint.connection_count == 1
        assert server.endpoint.transport is not None

    run(main())


def test_closing_the_server_lets_a_connection_it_closed_deliver_the_rest(run: Runner) -> None:
    """The handler writes a mebibyte and closes without waiting; the server is closed at once.
    Its connection runs on in the background, as a closed TCP listener's orphans do, so the
    client reads every byte and the EOF and closes cleanly (it used to be reset: its read
    raised ``ConnectionResetError``)."""
    payload = bytes(range(256)) * 4096

    async def main() -> None:
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def write_and_close(reader: asyncio.StreamReader, writer: Any) -> None:
            writer.write(payload)
            writer.close()  # no wait_closed(): the transport delivers the rest
            handed.set_result(None)

        server = await utcp.start_server(write_and_close, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        await handed
        server.close()
        await server.wait_closed()
        async with deadline(20, "the client reading to EOF"):
            assert await reader.read() == payload
        writer.close()
        async with deadline(20, "the client's close"):
            await writer.wait_closed()
        async with deadline(20, "the server's socket closing"):
            await server.endpoint.wait_closed()

    run(main())


def test_closing_the_server_leaves_fin_wait_2_for_the_peer_to_close(run: Runner) -> None:
    """The server closed first and its FIN is acknowledged (FIN_WAIT_2); the client has not
    read nor closed yet when the server is closed.  It still reads the data and the EOF and
    closes cleanly, and the server's socket closes after that (it used to be reset)."""

    async def main() -> None:
        close_first = CloseFirst()
        server = await utcp.start_server(close_first, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        await close_first.done
        server.close()
        await server.wait_closed()
        assert [h.conn.state for h in server.endpoint.handles()] == [S.FIN_WAIT_2]
        assert await reader.read() == b"bye"
        writer.close()
        async with deadline(20, "the client's close"):
            await writer.wait_closed()
        assert writer.get_extra_info("connection").close_reason is CloseReason.CLOSED
        async with deadline(20, "the server's socket closing"):
            await server.endpoint.wait_closed()

    run(main())


def test_a_closed_server_resets_fin_wait_2_after_its_timeout(run: Runner) -> None:
    """A client that never closes: the closed server's connection waiting for its FIN ends
    ``fin_wait_2_timeout_s`` after it began to wait, as an orphan does, and the socket is
    released then, rather than held for ever."""

    async def main() -> None:
        close_first = CloseFirst()
        server = await utcp.start_server(
            close_first, HOST, 0, config=Config(fin_wait_2_timeout_s=1.0)
        )
        _, writer = await utcp.open_connection(HOST, server_port(server))
        await close_first.done
        server.close()
        await server.wait_closed()
        assert server.endpoint.transport is not None  # FIN_WAIT_2 runs on
        async with deadline(10, "the server's socket closing"):
            await server.endpoint.wait_closed()
        conn = writer.get_extra_info("connection")
        await wait_until(lambda: conn.close_reason is CloseReason.RESET, "the reset")
        writer.close()

    run(main())


@pytest.mark.parametrize("client_closes", [True, False], ids=["time_wait", "fin_wait_2"])
def test_a_server_started_again_on_its_port_takes_it_at_once(
    run: Runner, client_closes: bool
) -> None:
    """The closed server's socket is still held by a connection winding down (TIME_WAIT of a
    minute here, or FIN_WAIT_2 for a client that has not closed): a server started again on
    the same port takes it at once, cutting that connection short as the process's exit
    would, and serves; it used to fail with EADDRINUSE, as a restarted TCP listener does not."""

    async def main() -> None:
        server = await utcp.start_server(CloseFirst(), HOST, 0, config=LONG_MSL)
        port = server_port(server)
        reader, writer = await utcp.open_connection(HOST, port)
        assert await reader.read() == b"bye"
        if client_closes:
            writer.close()
            await writer.wait_closed()
            await server_side_in_time_wait(server)
        else:
            await wait_until(
                lambda: [h.conn.state for h in server.endpoint.handles()] == [S.FIN_WAIT_2],
                "the server's side in FIN_WAIT_2",
            )
        server.close()
        await server.wait_closed()
        assert server.endpoint.transport is not None
        again = await utcp.start_server(CloseFirst(), HOST, port)
        assert server.endpoint.transport is None
        reader2, writer2 = await utcp.open_connection(HOST, port)
        assert await reader2.read() == b"bye"
        writer2.close()
        await writer2.wait_closed()
        if not client_closes:
            conn = writer.get_extra_info("connection")
            await wait_until(lambda: conn.close_reason is CloseReason.RESET, "the old reset")
            writer.close()
        again.close()
        await again.wait_closed()

    run(main())


async def _server_in_fin_wait_2() -> tuple[Any, asyncio.StreamWriter]:
    """A server that has written and closed its side of a connection, whose client read it
    all and has not closed: the server's side waits in FIN_WAIT_2 (closing the server
    leaves it lingering); the server, and the client's writer."""
    server = await utcp.start_server(CloseFirst(), HOST, 0)
    reader, writer = await utcp.open_connection(HOST, server_port(server))
    assert await reader.read() == b"bye"
    await wait_until(
        lambda: [h.conn.state for h in server.endpoint.handles()] == [S.FIN_WAIT_2],
        "the server's side in FIN_WAIT_2",
    )
    return server, writer


def test_a_port_held_by_a_server_of_a_closed_loop_is_rebound_or_refused_plainly(
    run: Runner,
) -> None:
    """A server closed while a connection wound down (FIN_WAIT_2), then its event loop closed
    without shutting down: starting a server on that port in another loop raised
    ``RuntimeError('Event loop is closed')`` from cutting the old connection on the dead loop.
    Now the fast path's socket is closed and the port taken; asyncio's own transport cannot be
    closed without its loop, so the port stays held and binding says so (EADDRINUSE)."""

    async def first() -> tuple[int, str, asyncio.StreamWriter]:
        server, writer = await _server_in_fin_wait_2()
        port, io_path = server_port(server), server.endpoint.io_path
        server.close()
        await server.wait_closed()
        return port, io_path, writer

    old = asyncio.new_event_loop()
    try:
        port, io_path, _writer = old.run_until_complete(first())
    finally:
        old.close()  # no shutdown_asyncgens: the lingering connection is left as it was

    async def again() -> None:
        try:
            server = await utcp.start_server(CloseFirst(), HOST, port)
        except OSError as exc:
            assert not io_path.startswith("fast") and exc.errno in (errno.EADDRINUSE, None)
            return
        assert io_path.startswith("fast")
        reader, writer = await utcp.open_connection(HOST, port)
        assert await reader.read() == b"bye"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(again())


def test_a_dead_loops_lingering_server_lets_its_socket_go_when_another_lingers() -> None:
    """Servers closed with a connection winding down, each in an event loop then closed
    without shutting down: each kept its socket for the life of the process.  Now the next
    server to linger lets the dead loops' go (their fast-path sockets are closed)."""

    async def linger() -> socket.socket:
        server, _writer = await _server_in_fin_wait_2()
        held = server.endpoint.transport.get_extra_info("socket")
        server.close()
        await server.wait_closed()
        return held  # type: ignore[no-any-return]

    held = []
    for _ in range(2):
        loop = asyncio.new_event_loop()
        try:
            held.append(loop.run_until_complete(linger()))
        finally:
            loop.close()
    if not isinstance(held[0], socket.socket):
        pytest.skip("asyncio's transport cannot close without its loop (portable path)")
    assert held[0].fileno() == -1  # closed when the second lingered
    assert held[1].fileno() != -1
    held[1].close()


def test_an_orphan_facing_a_window_that_never_opens_says_why_it_timed_out(run: Runner) -> None:
    """The server writes 5 MB and closes for good; the client is alive, answers every window
    probe, and never reads.  The orphan gives up (``rto_max_s`` short here) and its
    protocol hears a TimeoutError saying the peer answers but never opened its window: it
    said "no answer from ... for 1 s", as of a peer gone silent."""
    quick = Config(rto_max_s=0.5, fin_retries=1)  # gives up about a second in

    class WritesAndCloses(asyncio.Protocol):
        def __init__(self) -> None:
            self.lost: asyncio.Future[BaseException | None] = (
                asyncio.get_running_loop().create_future()
            )

        def connection_made(self, transport: Any) -> None:
            transport.write(b"x" * 5_000_000)
            transport.close()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    class NeverReads(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.pause_reading()

    async def main() -> None:
        made: list[WritesAndCloses] = []

        def factory() -> WritesAndCloses:
            made.append(WritesAndCloses())
            return made[-1]

        server = await utcp.create_server(factory, HOST, 0, config=quick)
        transport, _ = await utcp.create_connection(NeverReads, HOST, server_port(server))
        async with deadline(30, "the orphan giving up"):
            await wait_until(lambda: bool(made), "accepted")
            exc = await made[0].lost
        assert isinstance(exc, TimeoutError)
        assert "answers but never opened its window" in str(exc)
        transport.abort()
        server.close()
        await server.wait_closed()

    run(main())


def test_closing_a_server_resets_handshakes_under_way(run: Runner) -> None:
    """A client sends its SYN, gets the SYN-ACK and is gone: the handshake was never handed to
    the application, so the closed server resets it (after HANDSHAKE_GRACE_S, in which a
    handshake ACK on its way would still complete it) rather than waiting for it, as a
    closed TCP listener drops its half-open connections (server.wait_closed() waited out the
    SYN timer, 71 s)."""

    async def main() -> None:
        server = await utcp.start_server(CloseFirst(), HOST, 0)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.setblocking(False)
            raw.connect((HOST, server_port(server)))
            syn = Packet(int(Flag.SYN), 0x5EED, 0, 1000, 0, 65535)
            syn.mss = 1400
            await loop.sock_sendall(raw, encode(syn))
            reply = decode(await asyncio.wait_for(loop.sock_recv(raw, 2048), 10))
            assert reply.flags == Flag.SYN | Flag.ACK
        assert [h.conn.state for h in server.endpoint.handles()] == [S.SYN_RECEIVED]
        server.close()
        async with deadline(10, "server.wait_closed() with a handshake under way"):
            await server.wait_closed()
        assert server.endpoint.connection_count == 0

    run(main())


def test_a_client_keeps_a_real_time_wait_then_releases_its_socket(run: Runner) -> None:
    """The client closes first: wait_closed() returns at once, its connection stays in
    TIME_WAIT on the still-open socket (to re-acknowledge a retransmitted FIN), and the
    socket is released when TIME_WAIT ends, with nobody waiting for it."""

    async def main() -> None:
        config = Config(msl_s=0.25)
        server = await utcp.start_server(read_then_close, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=config)
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        conn = writer.get_extra_info("connection")
        endpoint = writer.get_extra_info("endpoint")
        assert conn.state is S.TIME_WAIT
        assert endpoint.transport is not None
        await wait_until(lambda: endpoint.transport is None, "the socket released after 2 MSL")
        assert conn.is_finished and conn.close_reason is CloseReason.CLOSED
        server.close()
        await server.wait_closed()

    run(main())


def test_close_without_wait_closed_releases_the_socket(run: Runner) -> None:
    """writer.close() alone: the socket is released once the connection is done, as asyncio
    closes its socket without anyone awaiting wait_closed()."""

    async def main() -> None:
        server = await utcp.start_server(read_then_close, HOST, 0)
        _, writer = await utcp.open_connection(HOST, server_port(server), config=Config(msl_s=0.1))
        endpoint = writer.get_extra_info("endpoint")
        writer.write(b"x")
        writer.close()
        await wait_until(lambda: endpoint.transport is None, "the client's socket released")
        assert writer.get_extra_info("connection").close_reason is CloseReason.CLOSED
        server.close()
        await server.wait_closed()

    run(main())


def test_the_passive_closer_releases_its_socket_within_a_loop_turn(run: Runner) -> None:
    """The peer closed first: our close() ends the connection when our FIN is acknowledged
    (no TIME_WAIT on this side), and by then wait_closed() finds the socket released."""

    async def main() -> None:
        async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()
            await writer.wait_closed()

        server = await utcp.start_server(close_first, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=LONG_MSL)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        assert writer.get_extra_info("endpoint").transport is None
        server.close()
        async with deadline(10, "server.wait_closed()"):
            await server.wait_closed()

    run(main())


def test_data_after_close_resets_the_connection_winding_down(run: Runner) -> None:
    """After close() returned (our FIN acknowledged), the peer writes more: nobody will read
    it, so the connection winding down in the background answers with a reset, as a closed
    TCP socket does (RFC 1122 section 4.2.2.13)."""

    async def main() -> None:
        go_on = asyncio.Event()
        outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        conns: list[utcp.Connection] = []

        async def late_writer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(writer.get_extra_info("connection"))
            await reader.read()  # the client's FIN
            await go_on.wait()
            try:
                for _ in range(50):
                    writer.write(b"too late")
                    await writer.drain()
                    await asyncio.sleep(0.01)
                outcome.set_result(None)
            except ConnectionError as exc:
                outcome.set_result(exc)

        server = await utcp.start_server(late_writer, HOST, 0)
        _, writer = await utcp.open_connection(HOST, server_port(server))
        writer.write(b"hello")
        writer.close()
        await writer.wait_closed()
        go_on.set()
        async with deadline(10, "the reset"):
            exc = await outcome
        # The first write after the reset may already fail (BrokenPipeError) or drain() does.
        assert isinstance(exc, ConnectionError), repr(exc)
        assert conns[0].close_reason is CloseReason.RESET
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_loop_shutdown_closes_a_socket_held_only_by_time_wait(kind: str) -> None:
    """The program returns while its closed client connection is in TIME_WAIT (a minute
    here): shutting the loop down closes the socket, rather than leaving it to the garbage
    collector (a ResourceWarning), as a process exit would end it."""
    kept: dict[str, Any] = {}

    async def main() -> None:
        server = await utcp.start_server(read_then_close, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=LONG_MSL)
        writer.write_eof()  # the client closes first: it ends in TIME_WAIT
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        kept["endpoint"] = endpoint = writer.get_extra_info("endpoint")
        kept["socket"] = writer.get_extra_info("socket")
        assert writer.get_extra_info("connection").state is S.TIME_WAIT
        assert endpoint.transport is not None
        server.close()
        await server.wait_closed()

    with runner_for(kind) as runner:
        runner(main())
    assert kept["endpoint"].transport is None
    assert kept["socket"].fileno() == -1


def test_connections_winding_down_make_room_at_max_connections(run: Runner) -> None:
    """A server that closes first keeps TIME_WAIT (a minute here) for each connection: at
    max_connections the oldest of those goes to admit a new client, as Linux recycles
    TIME_WAIT buckets, instead of refusing it."""

    async def main() -> None:
        async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye")
            writer.close()
            await writer.wait_closed()

        config = Config(msl_s=30.0, max_connections=2)
        server = await utcp.start_server(close_first, HOST, 0, config=config)
        for _ in range(4):
            reader, writer = await utcp.open_connection(HOST, server_port(server))
            assert await reader.read() == b"bye"  # admitted, even with two in TIME_WAIT
            writer.close()
            await writer.wait_closed()
            await server_side_in_time_wait(server)
            assert server.endpoint.connection_count <= 2
        assert server.stats["connections_refused"] == 0
        server.close()
        await server.wait_closed()

    run(main())


def test_clients_whose_connect_completed_through_syn_cookies_are_served_after_close(
    run: Runner,
) -> None:
    """Clients whose connect returned are served when the server closes right after, as the
    handshake grace promises, also those whose handshake went through SYN cookies (the
    backlog full): the socket stays open for the grace, and their cookie ACKs are taken.
    Before, it closed once the backlog's connections were done, and the cookie clients' data
    drew ICMP port unreachable: their reads raised ConnectionResetError."""

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read())
            writer.close()

        server = await utcp.start_server(echo, HOST, 0, backlog=4)
        port = server.sockets[0].getsockname()[1]
        pairs = await asyncio.gather(*(utcp.open_connection(HOST, port) for _ in range(200)))
        server.close()

        async def use(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
            writer.write(b"ping %d" % n)
            writer.write_eof()
            answer = await reader.read()
            writer.close()
            return answer

        answers = await asyncio.wait_for(
            asyncio.gather(*(use(n, r, w) for n, (r, w) in enumerate(pairs))), 30
        )
        assert answers == [b"ping %d" % n for n in range(200)]
        assert server.stats["syn_cookies_accepted"] > 0
        await asyncio.wait_for(server.wait_closed(), 30)

    run(main())
