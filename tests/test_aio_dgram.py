"""The datagram I/O layer under the endpoint (utcp/asyncio/dgram.py), through real sockets.

The fast path's own behaviour: GSO bursts leave as the same datagrams, GRO batches are split
back exactly, a full socket queues and flushes in order, a datagram too big for the path is
dropped and reported without harming the rest, and the path choice follows Config and UTCP_IO.
The endpoint's batch handling: one wake-up's segments draw one ACK.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from typing import Any

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Runner,
    make_run_fixture,
    seeded_bytes,
    server_port,
)
from utcp import Config, Connection
from utcp.asyncio.dgram import (
    IO_ENV,
    IP_PKTINFO,
    IPV6_PKTINFO,
    FastDatagramTransport,
    _local_of,
    offload_support,
    resolve_io_path,
)
from utcp.asyncio.endpoint import Endpoint
from utcp.packet import Flag, decode

pytestmark = [
    pytest.mark.sockets,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fast path is Linux's"),
]
run = make_run_fixture()


class Recorder(asyncio.DatagramProtocol):
    """Collects what a fast transport delivers, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, Any]]] = []
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()

    def datagrams_received(self, batch: list[tuple[bytes, Any]]) -> None:
        self.batches.append(batch)
        self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)

    @property
    def datagrams(self) -> list[bytes]:
        return [data for batch in self.batches for data, _ in batch]


def _udp(*, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def _fast(sock: socket.socket) -> tuple[FastDatagramTransport, Recorder]:
    loop = asyncio.get_running_loop()
    protocol = Recorder()
    return FastDatagramTransport(loop, sock, protocol), protocol


async def _drain(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            out.append(await loop.sock_recv(sock, 70000))
    return out


def _datagrams(n: int, size: int, seed: int) -> list[bytes]:
    blob = seeded_bytes(seed, n * size)
    return [blob[i * size : (i + 1) * size] for i in range(n)]


def test_a_burst_leaves_as_the_same_datagrams_in_order(run: Runner) -> None:
    """Equal-size runs go out as GSO sends (with a shorter last one); a plain receiver sees
    exactly the datagrams given, in order, whatever the runs were."""

    async def main() -> None:
        receiver = _udp(rcvbuf=4 << 20)
        transport, _ = await _fast(_udp())
        burst = [*_datagrams(100, 1452, 1), b"short tail", *_datagrams(3, 300, 2), b"x"]
        transport.send_burst(burst, receiver.getsockname())
        assert await _drain(receiver, len(burst)) == burst
        assert transport.offload.startswith("gso") == offload_support().gso
        transport.close()
        receiver.close()

    run(main())


def test_gro_batches_are_split_back_into_the_datagrams_sent(run: Runner) -> None:
    async def main() -> None:
        sock = _udp(rcvbuf=4 << 20)
        transport, protocol = await _fast(sock)
        sender = _udp()
        sent = _datagrams(200, 1452, 3) + _datagrams(5, 77, 4)
        for data in sent:
            sender.sendto(data, sock.getsockname())  # all queued before the loop looks
        async with asyncio.timeout(10):
            while len(protocol.datagrams) < len(sent):
                protocol.arrived.clear()
                await protocol.arrived.wait()
        assert protocol.datagrams == sent
        assert all(addr == sender.getsockname() for b in protocol.batches for _, addr in b)
        # Drained per wake-up: far fewer batches than datagrams.
        assert len(protocol.batches) < len(sent) // 4
        transport.close()
        assert await protocol.lost is None
        assert sock.fileno() == -1  # the socket is released once connection_lost has run
        sender.close()

    run(main())


class _CountingSocket:
    """The transport's socket, counting receive calls (a C socket's methods cannot be
    patched)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reads = 0

    def recvmsg_into(self, *args: Any) -> Any:
        self.reads += 1
        return self._sock.recvmsg_into(*args)

    def recvfrom_into(self, *args: Any) -> Any:
        self.reads += 1
        return self._sock.recvfrom_into(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_one_datagram_per_wakeup_stops_the_extra_read_until_a_backlog(run: Runner) -> None:
    """Request/response traffic finds one datagram per wake-up: after a few, the transport
    stops asking for a second (a failing system call on the reply's critical path). A backlog
    is still drained in batches, and nothing is lost or reordered on the way."""

    async def main() -> None:
        sock = _udp(rcvbuf=4 << 20)
        transport, protocol = await _fast(sock)
        counting = _CountingSocket(sock)
        transport._sock = counting  # type: ignore[assignment]
        sender = _udp()
        pings = _datagrams(30, 64, 5)
        reads_before = 0
        for i, data in enumerate(pings):
            if i == 10:
                reads_before = counting.reads
            protocol.arrived.clear()
            sender.sendto(data, sock.getsockname())
            async with asyncio.timeout(10):
                await protocol.arrived.wait()
        assert protocol.datagrams == pings
        # One read per datagram (and the odd full drain), not two.
        assert counting.reads - reads_before <= 20 + 3
        batches_before = len(protocol.batches)
        burst = _datagrams(300, 200, 6)
        for data in burst:
            sender.sendto(data, sock.getsockname())
        async with asyncio.timeout(10):
            while len(protocol.datagrams) < len(pings) + len(burst):
                protocol.arrived.clear()
                await protocol.arrived.wait()
        assert protocol.datagrams == pings + burst
        # Draining resumed: far fewer batches than datagrams.
        assert len(protocol.batches) - batches_before < len(burst) // 4
        transport.close()
        sender.close()

    run(main())


def test_a_full_socket_queues_and_flushes_in_order(run: Runner) -> None:
    """A datagram socket whose peer does not read fills up: what does not fit waits in the
    transport's queue (counted by get_write_buffer_size) and leaves, in order, once it can."""

    async def main() -> None:
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        left.setblocking(False)
        right.setblocking(False)
        transport, _ = await _fast(left)
        sent = _datagrams(2000, 1000, 5)
        transport.send_burst(sent, None)
        assert transport.get_write_buffer_size() > 0  # the kernel took only part of it
        got = await _drain(right, len(sent))
        assert got == sent
        assert transport.get_write_buffer_size() == 0
        transport.close()
        right.close()

    run(main())


def test_a_datagram_too_big_is_reported_and_the_rest_still_go(run: Runner) -> None:
    async def main() -> None:
        receiver = _udp()
        transport, protocol = await _fast(_udp())
        transport.send_burst([b"before", bytes(70_000), b"after"], receiver.getsockname())
        assert await _drain(receiver, 2) == [b"before", b"after"]
        assert [getattr(e, "errno", None) for e in protocol.errors] == [errno.EMSGSIZE]
        assert transport.dropped_send == 1
        transport.close()
        receiver.close()

    run(main())


def test_the_io_path_follows_config_then_environment(
    monkeypatch: pytest.MonkeyPatch, run: Runner
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.delenv(IO_ENV, raising=False)
        assert resolve_io_path(Config(), loop) == "fast"
        assert resolve_io_path(Config(io_path="portable"), loop) == "portable"
        monkeypatch.setenv(IO_ENV, "portable")
        assert resolve_io_path(Config(), loop) == "portable"
        assert resolve_io_path(Config(io_path="fast"), loop) == "fast"  # Config wins
        monkeypatch.setenv(IO_ENV, "sideways")
        with pytest.raises(ValueError, match=IO_ENV):
            resolve_io_path(Config(), loop)

    run(main())


@pytest.mark.parametrize("io_path", ["fast", "portable"])
def test_server_stats_say_which_path_carries_it(io_path: str, run: Runner) -> None:
    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            writer.close()

        cfg = Config(io_path=io_path, msl_s=0.05)  # the server's TIME_WAIT need not last 4 s
        server = await utcp.start_server(echo, HOST, 0, config=cfg)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=cfg)
        writer.write(b"ping")
        assert await reader.read() == b"ping"
        writer.close()
        await writer.wait_closed()
        stats = server.stats
        assert str(stats["io_path"]).split("+")[0] == io_path
        assert isinstance(server.endpoint.transport, FastDatagramTransport) == (io_path == "fast")
        server.close()
        await server.wait_closed()

    run(main())


def test_portable_path_reads_one_datagrams_worth(run: Runner) -> None:
    """asyncio's selector datagram transport asks recvfrom for 256 KiB, which glibc serves with
    an mmap, mremap and munmap per datagram: the portable path asks for 64 KiB (the largest UDP
    payload still arrives whole: test_path_mtu_discovery_finds_loopbacks_largest_datagram runs
    on both paths). uvloop's transport reads into its own buffer and has no such knob."""

    async def main() -> None:
        cfg = Config(io_path="portable")
        server = await utcp.start_server(_echo_all, HOST, 0, config=cfg)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=cfg)
        writer.write(b"ping")
        writer.write_eof()
        assert await reader.read() == b"ping"
        client = writer.get_extra_info("endpoint").transport
        for transport in (server.endpoint.transport, client):
            size = getattr(transport, "max_size", None)
            assert size is None or size == 65535, size
        if run.kind == "asyncio":
            assert getattr(server.endpoint.transport, "max_size", None) == 65535
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


class _Capture:
    """Stands in for the UDP transport under an endpoint: records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def test_a_batch_of_segments_draws_one_ack(run: Runner) -> None:
    """Twenty data segments delivered as one wake-up's batch: the endpoint feeds them all to
    the connection and answers once, one cumulative ACK for the lot (one by one, the
    ack-every-second-segment rule would send ten)."""

    async def main() -> None:
        peer = ("127.0.0.1", 9)
        accepted: list[asyncio.Protocol] = []

        def factory() -> asyncio.Protocol:
            accepted.append(asyncio.Protocol())
            return accepted[-1]

        cfg = Config(pmtud=False)
        endpoint = Endpoint(config=cfg, protocol_factory=factory)
        capture = _Capture()
        endpoint.connection_made(capture)  # type: ignore[arg-type]
        client = Connection(cfg, local_cid=0x1234)
        now = asyncio.get_running_loop().time()
        client.connect(now=now)
        for data in client.datagrams_to_send(now=now):
            endpoint.datagrams_received([(data, peer)])  # SYN
        for data in capture.sent:
            client.receive_datagram(data, now=now)  # SYN-ACK
        capture.sent.clear()
        client.send(bytes(20 * client.mss))
        batch = [(data, peer) for data in client.datagrams_to_send(now=now)]
        assert len(batch) == 10  # the initial window; the first segment completes the handshake
        endpoint.datagrams_received(batch)
        acks = [decode(d) for d in capture.sent]
        assert len(acks) == 1 and acks[0].flags == Flag.ACK
        assert acks[0].ack == (client.iss + 1 + 10 * client.mss) & 0xFFFFFFFF
        assert accepted  # the connection was established and handed over
        endpoint.abort_all()

    run(main())


def test_path_mtu_discovery_finds_loopbacks_largest_datagram(run: Runner) -> None:
    """Over loopback (MTU 65536) discovery settles at the largest UDP payload, 65507 bytes,
    with don't-fragment set; the data then travels in datagrams of that size."""

    async def main() -> None:
        sizes: list[int] = []

        def observe(kind: str, datagram: bytes, _addr: Any) -> None:
            if kind == "send" and utcp.decode(datagram).payload:
                sizes.append(len(datagram))

        server = await utcp.start_server(_echo_all, HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server), observer=observe)
        conn = writer.get_extra_info("connection")
        # Probing starts once more is queued than one datagram carries: the transfer itself.
        payload = seeded_bytes(21, 4 << 20)
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        stats = conn.stats
        writer.write_eof()
        assert await reader.read() == b""
        assert stats.pmtud_state == "SEARCH_COMPLETE"
        assert stats.pmtu_bytes == 65507
        writer.close()
        await writer.wait_closed()
        assert max(sizes) == 65507 and stats.pmtud_black_holes == 0
        assert server.stats["send_errors"] == 0
        server.close()
        await server.wait_closed()

    run(main())


async def _echo_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_a_cancelled_open_never_leaves_its_udp_socket_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open cancelled while the loop makes its datagram endpoint: that call finishes and
    what it made is closed.  uvloop's create_datagram_endpoint, cancelled at the wrong
    moment, leaks its socket for good (cancelled connects kept UDP sockets open); the loop
    here does the same, its socket made before the point where it is cancelled."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await utcp.start_server(lambda r, w: None, HOST, 0)
        port = server_port(server)
        real = loop.create_datagram_endpoint
        made: list[asyncio.BaseTransport] = []

        async def leaky(factory: Any, **kwds: Any) -> Any:
            transport, protocol = await real(factory, **kwds)
            made.append(transport)
            await asyncio.sleep(0.05)  # cancelled here: nobody closes the transport
            return transport, protocol

        monkeypatch.setattr(loop, "create_datagram_endpoint", leaky)
        opening = asyncio.ensure_future(
            utcp.open_connection(HOST, port, config=Config(io_path="portable"))
        )
        await asyncio.sleep(0.01)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.sleep(0.2)
        assert len(made) == 1 and made[0].is_closing()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_link_local_destination_keeps_its_interface() -> None:
    """IPV6_PKTINFO naming a link-local address (fe80::/10) on interface 7: the reply names
    that interface (the address means nothing without it) and ``sockname`` gets it as its
    scope id; a global address names no interface (the route picks it), nor does IPv4,
    which answers from ipi_spec_dst."""
    link_local = socket.inet_pton(socket.AF_INET6, "fe80::1")
    host, cmsg, scope = _local_of(
        socket.IPPROTO_IPV6, IPV6_PKTINFO, link_local + (7).to_bytes(4, sys.byteorder)
    )
    assert (host, scope) == ("fe80::1", 7)
    assert cmsg == [
        (socket.IPPROTO_IPV6, IPV6_PKTINFO, link_local + (7).to_bytes(4, sys.byteorder))
    ]
    global_ = socket.inet_pton(socket.AF_INET6, "fd00::2")
    host, cmsg, scope = _local_of(
        socket.IPPROTO_IPV6, IPV6_PKTINFO, global_ + (7).to_bytes(4, sys.byteorder)
    )
    assert (host, scope) == ("fd00::2", 0) and cmsg[0][2] == global_ + bytes(4)
    # IPv4: the address to answer from (ipi_spec_dst), not the header's destination, which
    # for a broadcast is no source address.
    spec_dst, broadcast = socket.inet_aton("127.0.0.2"), socket.inet_aton("255.255.255.255")
    v4 = (3).to_bytes(4, sys.byteorder) + spec_dst + broadcast
    host, cmsg, scope = _local_of(socket.IPPROTO_IP, IP_PKTINFO, v4)
    assert (host, scope) == ("127.0.0.2", 0)
    assert cmsg[0][2] == bytes(4) + socket.inet_aton("127.0.0.2") + bytes(4)  # ifindex 0
