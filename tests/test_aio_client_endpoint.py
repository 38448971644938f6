"""Many connections over one client UDP socket (``create_client_endpoint``), on both loops:
each gets its own connection id and byte stream, the socket outlives them until ``close()``,
and a failed connect leaves the other connections alone."""

from __future__ import annotations

import asyncio

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    echo,
    echo_round_trip,
    make_run_fixture,
    seeded_bytes,
    server_port,
)
from utcp import Config

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

run = make_run_fixture()
QUICK = Config(msl_s=0.1)  # short TIME_WAIT: closing waits it out


def test_many_connections_share_one_socket(run: Runner) -> None:
    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=QUICK)
        async with await utcp.create_client_endpoint(config=QUICK, local_addr=(HOST, 0)) as client:
            (sock,) = client.sockets
            local = sock.getsockname()

            async def one(i: int) -> bytes:
                reader, writer = await client.open_connection(HOST, server_port(server))
                assert writer.get_extra_info("sockname") == local
                payload = seeded_bytes(i, 50_000 + i)
                await echo_round_trip(reader, writer, payload)
                return payload

            results = await asyncio.gather(*(one(i) for i in range(20)))
            assert len(results) == 20
            assert client.endpoint.connection_count <= 20
            # Every connection has ended and the socket is still open for more.
            reader, writer = await client.open_connection(HOST, server_port(server))
            await echo_round_trip(reader, writer, b"again")
            assert client.sockets
        assert not client.sockets
        server.close()
        await server.wait_closed()

    run(main())


def test_failed_connect_leaves_others_running(run: Runner) -> None:
    cfg = Config(syn_retries=1, rto_initial_s=0.05, msl_s=0.1)

    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=QUICK)
        async with await utcp.create_client_endpoint(config=cfg, local_addr=(HOST, 0)) as client:
            reader, writer = await client.open_connection(HOST, server_port(server))
            # Nobody answers at port 9 of 127.0.0.2 (the discard port, unbound here).
            with pytest.raises((TimeoutError, ConnectionError)):
                await client.open_connection("127.0.0.2", 9)
            await echo_round_trip(reader, writer, b"still here")
        server.close()
        await server.wait_closed()

    run(main())


def test_closed_client_endpoint_refuses_new_connections(run: Runner) -> None:
    async def main() -> None:
        client = await utcp.create_client_endpoint(local_addr=(HOST, 0))
        client.close()
        await client.wait_closed()
        with pytest.raises(RuntimeError, match="closed"):
            await client.open_connection(HOST, 9)

    run(main())


def test_an_ipv6_local_address_makes_an_ipv6_endpoint(run: Runner) -> None:
    """``local_addr=("::1", 0)`` without ``family=``: the socket is IPv6 (it was IPv4, and
    binding raised the resolver's gaierror), and connections to an IPv6 server work."""

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, "::1", 0)
        port = server_port(server)
        async with await utcp.create_client_endpoint(config=QUICK, local_addr=("::1", 0)) as client:
            reader, writer = await client.open_connection("::1", port)
            assert writer.get_extra_info("sockname")[0] == "::1"
            await echo_round_trip(reader, writer, b"over IPv6")
        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []

    run(main())
