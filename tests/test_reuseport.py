"""Kernel steering by connection id (utcp.asyncio.reuseport): two endpoints share one UDP port
with SO_REUSEPORT, each choosing ids that name it (utcp.cids), and the group's classic BPF
program hands each datagram to the endpoint its destination id names, whatever its source."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, seeded_bytes
from utcp import Config
from utcp.asyncio.dgram import create_endpoint
from utcp.asyncio.endpoint import Endpoint
from utcp.asyncio.reuseport import attach_steering, steering_program

pytestmark = [
    pytest.mark.sockets,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT CBPF: Linux"),
]

run = make_run_fixture()
WORKER_BITS = 1


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _protocol() -> asyncio.StreamReaderProtocol:
    return asyncio.StreamReaderProtocol(asyncio.StreamReader(), _echo)


async def _two_workers(*, steer: bool) -> tuple[list[Endpoint], int]:
    """Two server endpoints bound to one port, worker 0 first (its index in the group)."""
    cfg = Config()
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind((HOST, 0))
    port = first.getsockname()[1]
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    second.bind((HOST, port))
    if steer:
        layout_shift = 32 - WORKER_BITS
        attach_steering(first, worker_shift=layout_shift, worker_bits=WORKER_BITS)
    endpoints = []
    for worker, sock in enumerate((first, second)):

        def factory(worker: int = worker) -> Endpoint:
            return Endpoint(
                config=cfg, protocol_factory=_protocol, worker=worker, worker_bits=WORKER_BITS
            )

        _udp, endpoint = await create_endpoint(factory, config=cfg, sock=sock)
        endpoints.append(endpoint)
    return endpoints, port


def _header_for(dst_cid: int) -> bytes:
    """24 bytes shaped like a utcp header for ``dst_cid`` (its checksum wrong: dropped)."""
    return struct.pack("!BBHIIIII", 0x16, 0x10, 1000, 0x1234, dst_cid, 1, 1, 0)


def test_the_program_is_what_the_kernel_takes() -> None:
    code = steering_program(worker_shift=28, worker_bits=2)
    assert len(code) == 6 * 8
    with pytest.raises(ValueError):
        steering_program(worker_shift=31, worker_bits=2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, 0))
        attach_steering(sock, worker_shift=28, worker_bits=2)  # the kernel checks the program
    finally:
        sock.close()


@pytest.mark.parametrize("steer", [True, False])
def test_datagrams_reach_the_worker_their_id_names_from_any_source(
    run: Runner, steer: bool
) -> None:
    """From 64 source ports, ids naming worker 1 all reach worker 1, then ids naming worker 0
    all reach worker 0; without the program the kernel's hash of the source spreads them (all
    64 on one socket by chance: 2 in 2**64)."""

    async def main() -> None:
        endpoints, port = await _two_workers(steer=steer)
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]

        async def counts_after(total: int) -> list[int]:
            for _ in range(300):
                if sum(e.stats.datagrams_received for e in endpoints) >= total:
                    break
                await asyncio.sleep(0.01)
            return [e.stats.datagrams_received for e in endpoints]

        try:
            for i, s in enumerate(senders):
                s.sendto(_header_for(1 << 31 | 0x5000 + i), (HOST, port))
            after_ones = await counts_after(64)
            for i, s in enumerate(senders):
                s.sendto(_header_for(0x5000 + i), (HOST, port))
            after_zeros = await counts_after(128)
            assert sum(after_zeros) == 128
            if steer:
                assert after_ones == [0, 64]
                assert after_zeros == [64, 64]
                assert all(e.stats.dropped == {"bad checksum": 64} for e in endpoints)
            else:
                assert after_ones != [0, 64]
        finally:
            for s in senders:
                s.close()
            for e in endpoints:
                e.abort_all()

    run(main())


def test_connections_spread_over_both_workers_and_each_stays_on_its_own(run: Runner) -> None:
    """SYNs (destination id 0) are spread by the kernel's hash; every later datagram reaches
    the worker that chose the connection's id: 24 echoes intact on both workers."""

    async def main() -> None:
        endpoints, port = await _two_workers(steer=True)
        try:

            async def one(i: int) -> int:
                reader, writer = await utcp.open_connection(HOST, port)
                payload = seeded_bytes(i, 40_000 + i)
                writer.write(payload)
                writer.write_eof()
                assert await reader.read() == payload
                cid = writer.get_extra_info("connection").peer_cid
                writer.close()
                await writer.wait_closed()
                return int(cid >> 31)

            workers = await asyncio.gather(*(one(i) for i in range(24)))
            assert set(workers) == {0, 1}
            # A datagram of a live connection reaching the other worker would have drawn a
            # reset there and broken that echo.  (A late ACK after a connection ended may
            # still count as "unknown connection" at its own worker.)
            for endpoint in endpoints:
                assert endpoint.stats.datagrams_received > 0
        finally:
            for e in endpoints:
                e.abort_all()

    run(main())


def test_the_program_in_the_protocol_document() -> None:
    code = steering_program(worker_shift=28, worker_bits=2)
    insns = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    assert insns == [
        (0x20, 0, 0, 8),
        (0x15, 3, 0, 0),
        (0x74, 0, 0, 28),
        (0x54, 0, 0, 3),
        (0x16, 0, 0, 0),
        (0x06, 0, 0, 0xFFFFFFFF),
    ]
