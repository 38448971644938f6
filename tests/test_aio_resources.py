"""What the asyncio layer leaves behind and what it survives, over real UDP on 127.0.0.1, on the
default loop and on uvloop: no file descriptors or tasks after a thousand connections or after
failed connects, and malformed or forged datagrams counted, dropped and harmless.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    echo,
    make_run_fixture,
    open_fds,
    seeded_bytes,
    server_port,
)
from utcp import Config, Flag, Packet, encode
from utcp.packet import HEADER_SIZE

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

run = make_run_fixture()

CYCLES = 1000  # about 1.5 s per loop on a 2-core machine


def _fd_count() -> int:
    """Cheaper than ``open_fds()`` for a check on every cycle (counts listdir's own fd too)."""
    return len(os.listdir("/proc/self/fd"))


def _other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def _open_close_cycles(count: int) -> None:
    """``count`` times: connect, send a few bytes, read the echo, close; then close the server.
    Once each client's connection is done (its TIME_WAIT, zero here, included) its socket
    must be gone."""
    handlers = Handlers(echo)
    server = await utcp.start_server(handlers, HOST, 0)
    port = server_port(server)
    with_server = open_fds()
    count_with_server = _fd_count()
    no_time_wait = Config(msl_s=0.0)
    for i in range(count):
        message = b"cycle %d" % i
        reader, writer = await utcp.open_connection(HOST, port, config=no_time_wait)
        writer.write(message)
        assert await reader.readexactly(len(message)) == message
        writer.close()
        await writer.wait_closed()  # our FIN is acknowledged; the peer's FIN may follow
        await writer.get_extra_info("endpoint").wait_closed()  # released, TIME_WAIT over
        if _fd_count() != count_with_server:
            now = open_fds()
            pytest.fail(
                f"cycle {i}: after wait_closed() {sorted(set(now) - set(with_server))} are open "
                f"and {sorted(set(with_server) - set(now))} closed"
            )
    await handlers.wait_finished(count)
    server.close()
    await server.wait_closed()
    assert server.endpoint.connection_count == 0
    assert server.endpoint.transport is None
    assert handlers.errors == []


def test_thousand_open_close_cycles_leak_nothing(run: Runner) -> None:
    async def main() -> None:
        await _open_close_cycles(1)  # loops open some descriptors lazily, once
        fds = open_fds()
        assert _other_tasks() == set()
        await _open_close_cycles(CYCLES)
        assert open_fds() == fds
        assert _other_tasks() == set()

    run(main())


@contextmanager
def _silent_udp_socket() -> Iterator[int]:
    """A bound UDP port that never answers (a peer that has vanished without a trace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        yield int(sock.getsockname()[1])


def test_refused_connect_releases_its_socket(run: Runner) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        with pytest.raises(ConnectionRefusedError):
            await utcp.open_connection(HOST, port)  # warm-up, as above
        fds = open_fds()
        for _ in range(20):
            with pytest.raises(ConnectionRefusedError):
                await utcp.open_connection(HOST, port)
            assert open_fds() == fds, "a refused connect left its socket open"
        assert _other_tasks() == set()

    run(main())


def test_handshake_timeout_releases_its_socket(run: Runner) -> None:
    async def main() -> None:
        with _silent_udp_socket() as port:
            quick = Config(syn_retries=1, rto_initial_s=0.05, rto_min_s=0.05)
            with pytest.raises(TimeoutError):
                await utcp.open_connection(HOST, port, config=quick)  # warm-up
            fds = open_fds()
            with pytest.raises(TimeoutError):
                await utcp.open_connection(HOST, port, config=quick)
            assert open_fds() == fds, "a timed-out connect left its socket open"
        assert _other_tasks() == set()

    run(main())


def test_failing_protocol_factory_releases_the_connection(run: Runner) -> None:
    async def main() -> None:
        accepted: list[asyncio.Future[Exception | None]] = []

        class Peer(asyncio.Protocol):
            def __init__(self) -> None:
                self.lost: asyncio.Future[Exception | None] = (
                    asyncio.get_running_loop().create_future()
                )
                accepted.append(self.lost)

            def connection_lost(self, exc: Exception | None) -> None:
                self.lost.set_result(exc)

        def broken_factory() -> asyncio.Protocol:
            raise RuntimeError("the protocol factory failed")

        server = await utcp.create_server(Peer, HOST, 0)
        fds = open_fds()
        with pytest.raises(RuntimeError, match="factory failed"):
            await utcp.create_connection(broken_factory, HOST, server_port(server))
        assert open_fds() == fds, "a connect whose protocol factory raised left its socket open"
        assert isinstance(await accepted[0], ConnectionResetError)  # the server was told
        server.close()
        await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------- hostile datagrams


def _valid_syn(payload: bytes = b"") -> bytes:
    packet = Packet(Flag.SYN, 0x1234, 0, 1000, 0, 65535, payload)
    packet.mss = 1400
    return encode(packet)


def _malformed() -> dict[str, bytes]:
    syn = _valid_syn(b"a SYN with data, so flipping a payload byte breaks only the CRC")
    bad_crc = bytearray(syn)
    bad_crc[-1] ^= 0x01
    bad_hlen = bytearray(_valid_syn())
    bad_hlen[0] = (bad_hlen[0] & 0xF0) | 0x0F  # a 60-byte header in a 28-byte datagram
    wrong_version = bytearray(_valid_syn())
    wrong_version[0] = (wrong_version[0] & 0x0F) | 0x70
    return {
        "empty": b"",
        "garbage": seeded_bytes(31, 64),
        "truncated header": _valid_syn()[: HEADER_SIZE - 4],
        "bad crc": bytes(bad_crc),
        "bad header length": bytes(bad_hlen),
        "wrong version": bytes(wrong_version),
    }


async def _ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    assert await reader.readexactly(len(data)) == data


def _undecodable(stats: Any) -> int:
    return stats.dropped.get("malformed", 0) + stats.dropped.get("bad checksum", 0)


def test_malformed_and_forged_datagrams_are_dropped(run: Runner) -> None:
    """Hostile datagrams from a plain socket reach the server's socket before the real client's
    next datagram (loopback delivers in send order), so once the client's echo is back the
    server has handled them all: the counters are exact and no answer but the RST is due."""
    malformed = _malformed()

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0)
        port = server_port(server)
        stats = server.endpoint.stats
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            attacker.bind((HOST, 0))
            attacker.setblocking(False)
            for datagram in malformed.values():
                attacker.sendto(datagram, (HOST, port))
            # Well formed, for a connection that does not exist: counted, and answered by RST.
            stray = Packet(Flag.ACK, 0x5678, 0xDEADBEEF, 1, 1, 100, b"stray")
            attacker.sendto(encode(stray), (HOST, port))

            reader, writer = await utcp.open_connection(HOST, port)
            await _ping(reader, writer, b"still serving")
            assert _undecodable(stats) == len(malformed)
            assert stats.dropped["unknown connection"] == 1
            assert server.endpoint.connection_count == 1, "a bad-CRC SYN opened a connection"
            rst = utcp.decode(attacker.recv(2048))
            assert rst.flags & Flag.RST
            assert (rst.src_cid, rst.dst_cid) == (0xDEADBEEF, 0x5678)
            with pytest.raises(BlockingIOError):
                attacker.recv(2048)  # nothing answered the malformed ones

            # Datagrams for the live connection but from another address: an RST, and data
            # with a broken checksum; neither may touch the connection.
            conn = writer.get_extra_info("connection")
            forged_rst = Packet(Flag.RST, conn.local_cid, conn.peer_cid, 0, 0, 0)
            attacker.sendto(encode(forged_rst), (HOST, port))
            corrupt = bytearray(encode(Packet(Flag.ACK, conn.local_cid, conn.peer_cid, 0, 0, 9)))
            corrupt[2] ^= 0xFF  # the window field, covered by the CRC
            attacker.sendto(bytes(corrupt), (HOST, port))
            await _ping(reader, writer, b"unharmed")
            assert stats.dropped["wrong address"] == 1
            assert _undecodable(stats) == len(malformed) + 1
            assert conn.state is utcp.ConnectionState.ESTABLISHED

        writer.close()
        await writer.wait_closed()
        async with server:
            await handlers.wait_finished(1)
        assert handlers.started == 1
        assert handlers.errors == []

    run(main())


def test_duplicate_syn_after_the_handshake_opens_no_second_connection(run: Runner) -> None:
    """A SYN duplicated or delayed by the network, arriving once the connection it opened is
    established, must reach that connection (which answers with a challenge ACK, RFC 5961
    section 4) rather than open a half-open twin that holds a backlog slot for a minute."""

    async def main() -> None:
        made: list[asyncio.BaseTransport] = []

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)

        server = await utcp.create_server(Accept, HOST, 0)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.setblocking(False)
            peer.connect((HOST, server_port(server)))
            syn = _valid_syn()
            peer.send(syn)
            syn_ack = utcp.decode(await loop.sock_recv(peer, 2048))
            assert syn_ack.flags == Flag.SYN | Flag.ACK
            ack = Packet(Flag.ACK, 0x1234, syn_ack.src_cid, 1001, (syn_ack.seq + 1) % 2**32, 9)
            peer.send(encode(ack))
            peer.send(syn)  # the duplicate, after the ACK that completed the handshake
            answer = utcp.decode(await loop.sock_recv(peer, 2048))
            assert answer.flags == Flag.ACK, "the duplicate SYN drew a second SYN-ACK"
            assert answer.src_cid == syn_ack.src_cid
            assert len(made) == 1
            assert server.endpoint.connection_count == 1
            made[0].abort()
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_loop_that_ran_utcp_is_freed_once_run_returns(loop: str) -> None:
    """asyncio.run() (or uvloop.run()) over a utcp server and connection: once it returns,
    nothing of utcp's keeps the loop.  Every such loop had been kept for good (the shutdown
    guard, whose async generator's finalizer is the loop's own method, was the value of a
    weak dictionary keyed by that loop), with its memory: 256 KB a run on uvloop."""
    import gc
    import weakref

    import uvloop

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def session() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        server = await utcp.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await utcp.open_connection("127.0.0.1", port)
        writer.write_eof()
        await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    for _ in range(3):
        if loop == "uvloop":
            uvloop.run(session())
        else:
            asyncio.run(session())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
