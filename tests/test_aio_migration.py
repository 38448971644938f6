"""Connections that survive their client's address changing, through real sockets: a relay
(utcp.tools.netem.Relay, ``rebind_every_s``) that moves every client to a new upstream port
again and again, as a NAT that rebinds does, while data flows both ways."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, seeded_bytes
from utcp.tools.netem import Relay

pytestmark = pytest.mark.sockets

run = make_run_fixture()
PEERS: list[object] = []  # the peer address the server's transport named, first and last


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
