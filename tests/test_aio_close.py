"""TIME_WAIT over real sockets: a closing server waits it out so a lost final ACK is answered,
and a client (which skips TIME_WAIT) sends its final ACK three times."""

from __future__ import annotations

import asyncio

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, server_port, wait_until
from utcp import Config, ConnectionState, Flag, decode

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

S = ConnectionState
run = make_run_fixture()


async def reply_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to the client's FIN, then close: the client is the active closer."""
    await reader.read()
    writer.close()
    await writer.wait_closed()


def test_closing_server_waits_out_time_wait(run: Runner) -> None:
    async def main() -> None:
        config = Config(msl_s=0.25)

        async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()  # the server is the active closer: its side ends in TIME_WAIT
            await writer.wait_closed()

        server = await utcp.start_server(close_first, HOST, 0, config=config)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=config)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        # The server's connection sits in TIME_WAIT; its socket stays open meanwhile.
        assert server.endpoint.connection_count == 1
        assert server.endpoint.transport is not None
        await server.wait_closed()
        assert server.endpoint.connection_count == 0
        assert server.endpoint.transport is None

    run(main())


def test_client_repeats_its_final_ack(run: Runner) -> None:
    async def main() -> None:
        sent: list[bytes] = []

        server = await utcp.start_server(reply_and_close, HOST, 0)
        reader, writer = await utcp.open_connection(
            HOST,
            server_port(server),
            observer=lambda d, data, _a: sent.append(data) if d == "send" else None,
        )
        writer.write_eof()  # the client closes first and so ends in TIME_WAIT
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        last = [decode(d) for d in sent[-3:]]
        assert len({bytes(d) for d in sent[-3:]}) == 1, "the last three datagrams are one ACK"
        assert all(p.flags == Flag.ACK and not p.payload for p in last)

    run(main())


def test_close_does_not_wait_forever_for_a_silent_peer(run: Runner) -> None:
    async def main() -> None:
        peer_done = asyncio.Event()

        async def never_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads our FIN, then neither writes nor closes
            await peer_done.wait()
            writer.close()

        server = await utcp.start_server(never_closes, HOST, 0)
        config = Config(fin_wait_2_timeout_s=0.5)
        _, writer = await utcp.open_connection(HOST, server_port(server), config=config)
        writer.write(b"bye")
        writer.close()
        await writer.wait_closed()  # returns after the FIN_WAIT_2 timeout, with a reset
        assert writer.get_extra_info("connection").state is S.CLOSED
        peer_done.set()
        server.close()
        await server.wait_closed()

    run(main())


def test_copies_of_the_final_ack_draw_no_reset(run: Runner) -> None:
    async def main() -> None:
        server_sent: list[bytes] = []

        def record(direction: str, data: bytes, _addr: object) -> None:
            if direction == "send":
                server_sent.append(data)

        server = await utcp.start_server(reply_and_close, HOST, 0, observer=record)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        stats = server.endpoint.stats
        await wait_until(
            lambda: stats.dropped.get("unknown connection", 0) >= 2, "the ACK copies arrive"
        )
        server.close()
        await server.wait_closed()
        assert not [d for d in server_sent if decode(d).flags & Flag.RST]

    run(main())
