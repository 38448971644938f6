"""Connections that survive their client's address changing, through real sockets: a relay
(utcp.tools.netem.Relay, ``rebind_every_s``) that moves every client to a new upstream port
again and again, as a NAT that rebinds does, while data flows both ways."""

from __future__ import annotations

import asyncio
import errno
import hashlib

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Runner,
    echo,
    echo_round_trip,
    make_run_fixture,
    seeded_bytes,
)
from utcp.tools.netem import Relay

pytestmark = pytest.mark.sockets

run = make_run_fixture()
PEERS: list[object] = []  # the peer address the server's transport named, first and last
VIEW_PEERS: list[object] = []  # what its socket view's getpeername() said at the end


async def _sink_and_echo_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to EOF, then answer with the SHA-256 of what arrived and a copy of the first
    MiB (data back the other way, over the path the server had to follow)."""
    PEERS.append(writer.get_extra_info("peername"))
    digest = hashlib.sha256()
    head = bytearray()
    while data := await reader.read(1 << 16):
        digest.update(data)
        if len(head) < 1 << 20:
            head += data[: (1 << 20) - len(head)]
    PEERS.append(writer.get_extra_info("peername"))
    VIEW_PEERS.append(writer.get_extra_info("socket").getpeername())
    writer.write(digest.digest() + bytes(head))
    await writer.drain()
    writer.close()


def test_an_upload_survives_a_nat_that_rebinds_every_few_hundred_ms(run: Runner) -> None:
    async def main() -> None:
        server = await utcp.start_server(_sink_and_echo_digest, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        relay = await Relay.start((HOST, 0), (HOST, port), rebind_every_s=0.25, seed=1)
        try:
            reader, writer = await utcp.open_connection(*relay.address)
            digest = hashlib.sha256()
            sent = bytearray()
            seed = total = 0
            while relay.counters.rebinds < 4 or total < 4 << 20:
                chunk = seeded_bytes(seed, 256 << 10)
                seed += 1
                total += len(chunk)
                writer.write(chunk)
                await writer.drain()
                digest.update(chunk)
                if len(sent) < 1 << 20:
                    sent += chunk
                await asyncio.sleep(0.02)  # spread over several rebindings
            writer.write_eof()
            answer = await reader.readexactly(32 + (1 << 20))
            assert answer[:32] == digest.digest()
            assert answer[32:] == sent[: 1 << 20]
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            stats = server.stats
            assert relay.counters.rebinds >= 4
            assert stats["path_changes"] >= 4, stats
            assert stats["resets_sent"] == 0
            assert stats["path_validations_failed"] == 0
            first, last = PEERS[-2:]
            assert first != last and last[0] == first[0] == HOST  # the same host, a new port
        finally:
            relay.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_a_client_moves_to_a_new_local_address_mid_transfer(run: Runner) -> None:
    """``writer.transport.migrate(local_addr=...)`` mid-upload: the connection goes on from
    the new address (another host: 127.0.0.2), the server follows it, and every byte
    arrives; on the server's side the call is refused."""

    async def main() -> None:
        refused: list[BaseException] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await writer.transport.migrate()  # type: ignore[attr-defined]
            except RuntimeError as exc:
                refused.append(exc)
            await _sink_and_echo_digest(reader, writer)

        server = await utcp.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await utcp.open_connection(HOST, port)
            digest = hashlib.sha256()
            first = bytearray()
            for seed in range(8):
                if seed == 4:
                    await writer.transport.migrate(local_addr=("127.0.0.2", 0))  # type: ignore[attr-defined]
                    assert writer.get_extra_info("sockname")[0] == "127.0.0.2"
                chunk = seeded_bytes(100 + seed, 512 << 10)
                writer.write(chunk)
                await writer.drain()
                digest.update(chunk)
                if len(first) < 1 << 20:
                    first += chunk
            writer.write_eof()
            answer = await reader.readexactly(32 + (1 << 20))
            assert answer[:32] == digest.digest() and answer[32:] == first[: 1 << 20]
            writer.close()
            await writer.wait_closed()
            assert server.stats["path_changes"] == 1, server.stats
            assert PEERS[-2][0] == HOST and PEERS[-1][0] == "127.0.0.2"
            assert VIEW_PEERS[-1] == PEERS[-1]  # the socket view follows the peer too
            assert len(refused) == 1
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_a_client_whose_socket_lost_its_network_moves_by_itself(run: Runner) -> None:
    """The socket reports that its network is unreachable (as when the interface it was
    bound to went away): the client endpoint moves its connection to a new socket on its
    own, once, and the transfer goes on through the server following it."""

    async def main() -> None:
        server = await utcp.start_server(_sink_and_echo_digest, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await utcp.open_connection(HOST, port)
            before = writer.get_extra_info("sockname")
            endpoint = writer.get_extra_info("endpoint")
            data = seeded_bytes(5, 1 << 20)
            writer.write(data[: 1 << 19])
            await writer.drain()
            for _ in range(3):  # three errors in a row: one move
                endpoint.error_received(OSError(errno.ENETUNREACH, "Network is unreachable"))
            for _ in range(200):
                udp = endpoint.transport
                if udp is not None and udp.get_extra_info("sockname") != before:
                    break
                await asyncio.sleep(0.01)
            assert endpoint.transport.get_extra_info("sockname") != before
            assert writer.get_extra_info("sockname") == endpoint.transport.get_extra_info(
                "sockname"
            )
            writer.write(data[1 << 19 :])
            writer.write_eof()
            answer = await reader.readexactly(32 + (1 << 20))
            assert answer[:32] == hashlib.sha256(data).digest()
            writer.close()
            await writer.wait_closed()
            assert server.stats["path_changes"] == 1
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_two_moves_at_once_on_a_shared_client_endpoint_keep_both_working(run: Runner) -> None:
    """Two ``migrate()`` calls at once on a client endpoint that two connections share (as
    when each reacts to a network change): they take turns, and both connections go on.
    Before, both calls returned, then both connections were cut short: a write raised, and a
    reader saw a clean end of the stream where data was due."""

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        endpoint = await utcp.create_client_endpoint()
        try:
            pairs = [await endpoint.open_connection(HOST, port) for _ in range(2)]
            moves = [w.transport.migrate() for _, w in pairs]  # type: ignore[attr-defined]
            await asyncio.wait_for(asyncio.gather(*moves), 30)
            for n, (reader, writer) in enumerate(pairs):
                payload = seeded_bytes(200 + n, 256 << 10)
                await asyncio.wait_for(echo_round_trip(reader, writer, payload), 30)
            assert server.stats["path_changes"] >= 2, server.stats  # each followed its client
        finally:
            endpoint.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_a_move_while_the_window_is_full_is_followed_not_reset(run: Runner) -> None:
    """``migrate()`` in the middle of an upload whose window is full: the probe from the new
    socket is not news to the server (it holds data whose ACKs went to the old socket), and
    its ACKs to the closed old socket draw ICMP port unreachable.  Those were taken as a
    killed client and the connection was reset within a few hundred milliseconds; now the
    server validates the address the client's datagrams came from, and follows."""

    async def main() -> None:
        server = await utcp.start_server(_sink_and_echo_digest, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await utcp.open_connection(HOST, port)
            digest = hashlib.sha256()
            first = bytearray()
            for seed in range(32):
                chunk = seeded_bytes(300 + seed, 1 << 20)
                writer.write(chunk)
                if seed == 16:  # with a window's data in flight
                    await writer.transport.migrate()  # type: ignore[attr-defined]
                await writer.drain()
                digest.update(chunk)
                if len(first) < 1 << 20:
                    first += chunk
            writer.write_eof()
            answer = await asyncio.wait_for(reader.readexactly(32 + (1 << 20)), 30)
            assert answer[:32] == digest.digest() and answer[32:] == first
            writer.close()
            await writer.wait_closed()
            assert server.stats["path_changes"] == 1, server.stats
            assert server.stats["resets_sent"] == 0
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_a_move_to_an_address_of_the_other_family_is_refused_and_harmless(run: Runner) -> None:
    """``migrate(local_addr=("::1", 0))`` on an IPv4 connection raises ValueError naming
    the families (not the resolver's gaierror), and the connection goes on where it was."""

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0)
        async with server:  # closed and waited for however the block ends
            port = server.sockets[0].getsockname()[1]
            reader, writer = await utcp.open_connection(HOST, port)
            before = writer.get_extra_info("sockname")
            with pytest.raises(ValueError, match="IPv6 address; this endpoint's socket is IPv4"):
                await writer.transport.migrate(local_addr=("::1", 0))  # type: ignore[attr-defined]
            assert writer.get_extra_info("sockname") == before
            await echo_round_trip(reader, writer, b"still here")

    run(main())
