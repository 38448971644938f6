"""A listening endpoint keeps a bounded backlog of half-open connections (SYN cookies off);
``utcp.run`` picks uvloop.  (Unpredictable numbers: tests/test_aio_hardening.py.)"""

from __future__ import annotations

import asyncio
import socket

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, server_port, wait_until
from utcp import Flag, Packet, decode, encode

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

run = make_run_fixture()


def test_half_open_backlog_is_bounded(run: Runner) -> None:
    async def main() -> None:
        async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await utcp.start_server(
            never, HOST, 0, backlog=3, config=utcp.Config(syn_cookies=False)
        )
        port = server_port(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.bind((HOST, 0))
            raw.settimeout(5)
            for cid in range(1, 11):  # ten SYNs that will never complete their handshakes
                raw.sendto(encode(Packet(Flag.SYN, cid, 0, 1000 * cid, 0, 65535)), (HOST, port))
            answered = set()
            while len(answered) < 3:
                data = await asyncio.get_running_loop().run_in_executor(None, raw.recv, 2048)
                p = decode(data)
                assert p.flags == Flag.SYN | Flag.ACK
                answered.add(p.dst_cid)
        stats = server.endpoint.stats
        await wait_until(lambda: stats.dropped.get("backlog full") == 7, "seven SYNs dropped")
        assert server.endpoint.connection_count == 3
        server.endpoint.abort_all()

    run(main())


def test_utcp_run_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert utcp.run(loop_module()).startswith("uvloop")


def test_sockets_empty_after_close_and_endpoint_stats_reachable(run: Runner) -> None:
    async def main() -> None:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await utcp.start_server(hold, HOST, 0)
        _, writer = await utcp.open_connection(HOST, server_port(server))
        server.close()
        # As asyncio.Server: no sockets once closed, though a connection is still open.
        assert server.sockets == ()
        endpoint = writer.get_extra_info("endpoint")
        assert endpoint.stats.datagrams_sent >= 2  # SYN and the handshake's ACK at least
        writer.close()
        await writer.wait_closed()
        await server.wait_closed()

    run(main())
