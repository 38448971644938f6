"""The rest of asyncio's Transport/Protocol contract over real UDP on 127.0.0.1 and ::1, on the
default loop and on uvloop: ``BufferedProtocol`` and ``set_protocol()``, exceptions in protocol
callbacks, writes after a reset and after both sides' EOF, the socket view, the ``Server``
object, the keywords of ``create_server``/``create_connection``, and sendfile.

Where asyncio's own TCP can do the same, the scenario runs on it first, in the same test, as the
control: a scenario the control fails is a mistake in the test, not a finding about utcp.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    deadline,
    echo,
    echo_round_trip,
    make_run_fixture,
    read_all,
    seeded_bytes,
    server_port,
    sha256,
    wait_until,
)
from utcp import Config, ConnectionState, Flag, Packet, decode, encode
from utcp.asyncio.dgram import resolve_io_path

# Real sockets: run on both datagram I/O paths; and on both builds of the core (conformance).
pytestmark = [pytest.mark.sockets, pytest.mark.conformance]

S = ConnectionState
KIB = 1 << 10
MIB = 1 << 20
HOST6 = "::1"
LOOPBACK = {socket.AF_INET: HOST, socket.AF_INET6: HOST6}

run = make_run_fixture()


# ---------------------------------------------------------------------- the two stacks


async def _tcp_create_server(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
    return await asyncio.get_running_loop().create_server(factory, host, port, **kw)


async def _tcp_create_connection(
    factory: Any, host: Any = None, port: Any = None, **kw: Any
) -> Any:
    return await asyncio.get_running_loop().create_connection(factory, host, port, **kw)


@dataclass(frozen=True)
class Stack:
    """One way to make servers and connections: asyncio's TCP (the control) or utcp."""

    name: str
    create_server: Callable[..., Awaitable[Any]]
    create_connection: Callable[..., Awaitable[Any]]
    start_server: Callable[..., Awaitable[Any]]
    open_connection: Callable[..., Awaitable[Any]]


TCP = Stack(
    "tcp", _tcp_create_server, _tcp_create_connection, asyncio.start_server, asyncio.open_connection
)
UTCP = Stack(
    "utcp", utcp.create_server, utcp.create_connection, utcp.start_server, utcp.open_connection
)
BOTH = (TCP, UTCP)  # the control first


def _free_udp_port() -> int:
    """A port nobody listens on (over UDP, on 127.0.0.1): bound, then released at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _connection_ended(*writers: asyncio.StreamWriter) -> None:
    """For utcp, wait until each connection has exchanged both FINs and their ACKs (TIME_WAIT
    or CLOSED); for TCP the kernel does that out of the application's sight."""
    for writer in writers:
        conn = writer.get_extra_info("connection")
        if conn is not None:
            await wait_until(
                lambda conn=conn: conn.state in (S.TIME_WAIT, S.CLOSED), "both FINs acknowledged"
            )


class Collector:
    """A server's protocol factory that keeps what it made and lets a test await the first."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self.made: list[Any] = []
        self._first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def __call__(self) -> Any:
        protocol = self._make()
        self.made.append(protocol)
        if not self._first.done():
            self._first.set_result(protocol)
        return protocol

    async def first(self) -> Any:
        return await self._first


# ---------------------------------------------------------------------- BufferedProtocol


class BufferedSink(asyncio.BufferedProtocol):
    """Receives through a buffer of ``size`` bytes; keeps every byte; at EOF answers with what
    it got (when ``reply``) and closes."""

    def __init__(self, size: int, *, reply: bool = False) -> None:
        self.buf = bytearray(size)
        self.data = bytearray()
        self.reply = reply
        self.largest = 0  # the most bytes one buffer_updated() reported
        self.updates = 0
        self.transport: Any = None
        loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]
        self.largest = max(self.largest, nbytes)
        self.updates += 1

    def eof_received(self) -> bool | None:
        self.eof.set_result(None)
        if self.reply:
            self.transport.write(bytes(self.data))
        return None  # the transport closes

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def test_buffered_protocol_with_seven_byte_buffers_on_both_sides(run: Runner) -> None:
    """Server and client receive through 7-byte buffers; 1 MiB goes there and back intact.
    (TCP reads 7 bytes per loop turn, so its control carries 32 KiB.)"""
    sizes = {"tcp": 32 * KIB, "utcp": MIB}

    async def main(stack: Stack) -> None:
        payload = seeded_bytes(70, sizes[stack.name])
        factory = Collector(lambda: BufferedSink(7, reply=True))
        server = await stack.create_server(factory, HOST, 0)
        transport, client = await stack.create_connection(
            lambda: BufferedSink(7), HOST, server_port(server)
        )
        transport.write(payload)
        transport.write_eof()
        peer = await factory.first()
        await peer.eof
        await client.eof
        assert await client.lost is None
        assert await peer.lost is None
        for side in (peer, client):
            assert sha256(side.data) == sha256(payload), f"{stack.name}: bytes lost or reordered"
            assert side.largest == 7
            assert side.updates >= len(payload) // 7
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


class SwitchesToPlain(BufferedSink):
    """Receives through a small buffer until ``switch_at`` bytes have arrived, then hands the
    transport a plain ``asyncio.Protocol`` that gets the rest through ``data_received``."""

    def __init__(self, switch_at: int) -> None:
        super().__init__(1000)
        self.switch_at = switch_at
        self.switched_at = 0
        self.plain = PlainTail(self)

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if len(self.data) >= self.switch_at and self.transport.get_protocol() is self:
            self.switched_at = len(self.data)
            self.transport.set_protocol(self.plain)


class PlainTail(asyncio.Protocol):
    """The protocol a ``SwitchesToPlain`` hands over to: appends to the same data."""

    def __init__(self, before: SwitchesToPlain) -> None:
        self.before = before
        self.chunks = 0

    def data_received(self, data: bytes) -> None:
        self.before.data += data
        self.chunks += 1

    def eof_received(self) -> bool | None:
        return self.before.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.before.connection_lost(exc)


def test_set_protocol_switches_from_buffered_to_plain_mid_stream(run: Runner) -> None:
    payload = seeded_bytes(71, 512 * KIB)
    switch_at = 100_003  # not on a segment boundary: the switch falls inside a delivery

    async def main(stack: Stack) -> None:
        factory = Collector(lambda: SwitchesToPlain(switch_at))
        server = await stack.create_server(factory, HOST, 0)
        transport, client = await stack.create_connection(
            lambda: BufferedSink(64 * KIB), HOST, server_port(server)
        )
        transport.write(payload)
        transport.write_eof()
        peer = await factory.first()
        await peer.eof
        assert peer.transport.get_protocol() is peer.plain
        assert await peer.lost is None
        assert await client.lost is None
        assert switch_at <= peer.switched_at < switch_at + 1000  # buffered until the switch
        assert peer.plain.chunks > 0
        assert sha256(peer.data) == sha256(payload), f"{stack.name}: bytes lost at the switch"
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


class EmptyBuffer(BufferedSink):
    def get_buffer(self, sizehint: int) -> bytearray:
        return bytearray()


def test_get_buffer_returning_an_empty_buffer_resets_the_connection(run: Runner) -> None:
    """As asyncio's transports: RuntimeError to the loop's exception handler, then
    connection_lost(that error); the peer's connection is reset."""

    async def main(stack: Stack) -> None:
        factory = Collector(lambda: EmptyBuffer(7))
        server = await stack.create_server(factory, HOST, 0)
        reader, writer = await stack.open_connection(HOST, server_port(server))
        writer.write(b"nowhere to put this")
        peer = await factory.first()
        exc = await peer.lost
        assert isinstance(exc, RuntimeError)
        assert "empty buffer" in str(exc)
        assert [error.get("exception") for error in run.errors] == [exc]
        run.errors.clear()
        with pytest.raises(ConnectionResetError):
            await reader.read()  # TCP too: the bytes were never read, so its close is a reset
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


# ---------------------------------------------------------------------- callbacks that raise


class Boom(Exception):
    pass


class _Faulty:
    """Raises from the callback named ``where``; notes how many errors the loop's exception
    handler had seen when ``connection_lost`` came."""

    def __init__(self, where: str, run: Runner) -> None:
        self.where = where
        self.run = run
        self.error = Boom(f"raised in {where}")
        self.buf = bytearray(4096)
        self.handler_calls_before_lost = -1
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def eof_received(self) -> bool:
        if self.where == "eof_received":
            raise self.error
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.handler_calls_before_lost = len(self.run.errors)
        self.lost.set_result(exc)


class FaultyPlain(_Faulty, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        if self.where == "data_received":
            raise self.error


class FaultyBuffered(_Faulty, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.where == "buffer_updated":
            raise self.error


@pytest.mark.parametrize(
    ("where", "cls"),
    [
        ("data_received", FaultyPlain),
        ("buffer_updated", FaultyBuffered),
        ("eof_received", FaultyPlain),
        ("eof_received", FaultyBuffered),
    ],
)
def test_an_exception_in_a_protocol_callback_aborts_the_connection(
    run: Runner, where: str, cls: type[_Faulty]
) -> None:
    """The exception reaches the loop's exception handler first, then connection_lost(exc)
    with that very exception, as on asyncio's TCP transports.  The peer of a utcp connection
    sees the reset; TCP's peer sees a reset or a FIN depending on whether unread bytes were
    left in the socket when asyncio closed it."""

    async def main(stack: Stack) -> None:
        factory = Collector(lambda: cls(where, run))
        server = await stack.create_server(factory, HOST, 0)
        reader, writer = await stack.open_connection(HOST, server_port(server))
        writer.write(b"x" * 100)
        if where == "eof_received":
            writer.write_eof()
        peer = await factory.first()
        assert await peer.lost is peer.error
        assert peer.handler_calls_before_lost == 1
        assert [error.get("exception") for error in run.errors] == [peer.error]
        assert run.errors[0]["protocol"] is peer
        run.errors.clear()
        if stack is UTCP:
            with pytest.raises(ConnectionResetError):
                await reader.read()
        else:
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass
        writer.transport.abort()
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


# ---------------------------------------------------------------------- errors after the end


def test_write_after_a_reset_is_dropped_and_drain_raises(run: Runner) -> None:
    """A write to a reset connection neither raises nor sends; the stream's drain() raises
    ConnectionResetError.  TCP's control resets with SO_LINGER 0 (its abort() sends a FIN) and
    runs on asyncio's loop only: uvloop's own TCP transport raises RuntimeError from such a
    write, where utcp keeps asyncio's behaviour on both loops."""

    async def main(stack: Stack) -> None:
        async def reset_after_hello(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            assert await reader.readexactly(5) == b"hello"
            if stack is TCP:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        handlers = Handlers(reset_after_hello)
        server = await stack.start_server(handlers, HOST, 0)
        reader, writer = await stack.open_connection(HOST, server_port(server))
        writer.write(b"hello")
        with pytest.raises(ConnectionResetError):
            await reader.read()
        assert writer.is_closing()
        for _ in range(3):
            writer.write(b"into a reset connection")  # dropped, not raised
        with pytest.raises(ConnectionResetError):
            await writer.drain()
        conn = writer.get_extra_info("connection")
        if conn is not None:
            assert conn.stats.bytes_sent == 5
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []

    for stack in BOTH if run.kind == "asyncio" else (UTCP,):
        run(main(stack))


class LostSignal(asyncio.Protocol):
    """Keeps its transport; ``lost`` resolves at ``connection_lost``."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.parametrize("end", ["close", "abort", "peer_abort"])
def test_a_transport_lets_its_protocol_go_after_connection_lost(run: Runner, end: str) -> None:
    """After ``connection_lost`` the transport holds its protocol no more: ``get_protocol()``
    is None, as on asyncio's and uvloop's TCP transports (utcp's kept it, and with it whatever
    the protocol held, for as long as the transport was referenced)."""

    async def main(stack: Stack) -> None:
        served = Collector(LostSignal)
        server = await stack.create_server(served, HOST, 0)
        transport, protocol = await stack.create_connection(LostSignal, HOST, server_port(server))
        peer = await served.first()
        if end == "close":
            transport.close()
        elif end == "abort":
            transport.abort()
        else:
            peer.transport.abort()
        async with deadline(10, "connection_lost"):
            await protocol.lost
            await peer.lost
        assert transport.get_protocol() is None
        assert peer.transport.get_protocol() is None
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


def test_small_transport_calls_behave_as_on_tcp(run: Runner) -> None:
    """Three calls that differed from asyncio's TCP: ``write()`` after ``write_eof()`` raises
    even once the transport is closed (the bytes were dropped silently); ``is_reading()`` is
    False after ``close()`` (it said True); ``set_write_buffer_limits()`` takes any real
    numbers (a float raised TypeError)."""

    async def main(stack: Stack) -> None:
        served = Collector(LostSignal)
        server = await stack.create_server(served, HOST, 0)
        transport, protocol = await stack.create_connection(LostSignal, HOST, server_port(server))
        transport.set_write_buffer_limits(1.5)
        assert tuple(int(mark) for mark in transport.get_write_buffer_limits()) == (0, 1)
        transport.set_write_buffer_limits(high=64 * KIB)
        assert transport.is_reading()
        transport.write_eof()
        transport.close()
        assert not transport.is_reading()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"after write_eof and close")
        async with deadline(10, "connection_lost"):
            await protocol.lost
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


def test_after_both_sides_write_eof_the_transport_stays_open_until_close(run: Runner) -> None:
    """Both FINs sent and acknowledged: as a TCP socket, the transport is not closing, drain()
    returns, reads give EOF, write() is misuse; close() and wait_closed() then finish."""

    async def main(stack: Stack) -> None:
        release = asyncio.Event()
        server_side: list[object] = []

        async def reply_then_hold(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            request = await reader.read()
            writer.write(request[::-1])
            writer.write_eof()
            await release.wait()
            server_side.append(writer.is_closing())
            await writer.drain()
            server_side.append(await reader.read())
            writer.close()
            await writer.wait_closed()

        handlers = Handlers(reply_then_hold)
        server = await stack.start_server(handlers, HOST, 0)
        reader, writer = await stack.open_connection(HOST, server_port(server))
        writer.write(b"request")
        writer.write_eof()
        assert await reader.read() == b"tseuqer"
        await handlers.wait_started(1)
        await _connection_ended(writer, handlers.writers[0])

        assert not writer.is_closing(), f"{stack.name}: closed without close()"
        assert not handlers.writers[0].is_closing()
        await writer.drain()
        assert await reader.read() == b""
        assert reader.at_eof()
        with pytest.raises(RuntimeError):
            writer.write(b"after write_eof")
        release.set()
        await handlers.wait_finished(1)
        assert handlers.errors == []
        assert server_side == [False, b""]
        writer.close()
        assert writer.is_closing()
        async with deadline(10, f"{stack.name}: wait_closed() after both EOFs"):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    for stack in BOTH:
        run(main(stack))


# ---------------------------------------------------------------------- the socket view


def test_the_socket_a_handler_sees_cannot_close_the_server(run: Runner) -> None:
    """get_extra_info("socket") is a view of the shared UDP socket: no close() or shutdown(),
    the connection's peer as getpeername(), TCP_NODELAY accepted and other TCP options refused
    as a UDP socket refuses them.  A handler trying to close it fails alone; the server goes on
    serving."""

    async def main() -> None:
        views: list[Any] = []

        async def try_to_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if views:
                await echo(reader, writer)
                return
            views.append(writer.get_extra_info("socket"))
            views[0].close()  # AttributeError: Handlers keeps it and aborts this connection

        handlers = Handlers(try_to_close)
        server = await utcp.start_server(handlers, HOST, 0)
        port = server_port(server)
        reader, writer = await utcp.open_connection(HOST, port)
        client_addr = writer.get_extra_info("sockname")
        with pytest.raises(ConnectionResetError):
            await reader.read()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        await handlers.wait_finished(1)
        assert len(handlers.errors) == 1
        assert isinstance(handlers.errors[0], AttributeError)
        handlers.errors.clear()

        view = views[0]
        assert isinstance(view, utcp.SocketView)
        assert not hasattr(view, "close")
        assert not hasattr(view, "shutdown")
        assert not hasattr(view, "recv")
        assert view.getpeername() == client_addr
        assert view.getsockname() == (HOST, port)
        assert view.fileno() == server.sockets[0].fileno()
        assert (view.family, view.type) == (socket.AF_INET, socket.SOCK_DGRAM)
        view.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as TCP users do
        assert view.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for option in (socket.TCP_KEEPIDLE, socket.TCP_CORK, socket.TCP_MAXSEG):
            with pytest.raises(OSError):
                view.setsockopt(socket.IPPROTO_TCP, option, 1)
        view.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # reaches the socket

        assert server.is_serving()
        reader, writer = await utcp.open_connection(HOST, port)
        assert writer.get_extra_info("socket").getpeername() == (HOST, port)
        await echo_round_trip(reader, writer, b"still serving")
        async with server:
            await handlers.wait_finished(2)
        assert handlers.errors == []

    run(main())


# ---------------------------------------------------------------------- the Server object


def test_server_made_not_serving_refuses_until_start_serving(run: Runner) -> None:
    async def main(stack: Stack) -> None:
        handlers = Handlers(echo)
        server = await stack.start_server(handlers, HOST, 0, start_serving=False)
        if stack is UTCP or run.kind == "asyncio":  # uvloop's own Server is not one
            assert isinstance(server, asyncio.AbstractServer)
        assert server.get_loop() is asyncio.get_running_loop()
        assert not server.is_serving()
        port = server_port(server)
        async with deadline(10, f"{stack.name}: a connect to a server not serving"):
            with pytest.raises(ConnectionRefusedError):
                await stack.open_connection(HOST, port)
        assert handlers.started == 0
        await server.start_serving()
        assert server.is_serving()
        reader, writer = await stack.open_connection(HOST, port)
        await echo_round_trip(reader, writer, b"now serving")
        async with server:
            await handlers.wait_finished(1)
        assert not server.is_serving()
        assert not server.sockets
        assert handlers.errors == []

    for stack in BOTH:
        run(main(stack))


def test_serve_forever_serves_until_cancelled_then_closes(run: Runner) -> None:
    async def main(stack: Stack) -> None:
        handlers = Handlers(echo)
        server = await stack.start_server(handlers, HOST, 0, start_serving=False)
        port = server_port(server)
        serving = asyncio.create_task(server.serve_forever())
        await wait_until(server.is_serving, "serve_forever() started serving")
        reader, writer = await stack.open_connection(HOST, port)
        await echo_round_trip(reader, writer, b"served forever")
        await handlers.wait_finished(1)
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # already running
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not server.is_serving()
        assert not server.sockets
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # closed
        assert handlers.errors == []

    for stack in BOTH:
        run(main(stack))


# ---------------------------------------------------------------------- hosts, ports, families


def test_port_may_be_a_string(run: Runner) -> None:
    async def main(stack: Stack) -> None:
        handlers = Handlers(echo)
        server = await stack.start_server(handlers, HOST, "0")
        port = server_port(server)
        assert port > 0
        reader, writer = await stack.open_connection(HOST, str(port))
        assert writer.get_extra_info("peername") == (HOST, port)
        await echo_round_trip(reader, writer, b"port as text")
        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []

    for stack in BOTH:
        run(main(stack))


async def _serve_each_socket(stack: Stack, server: Any) -> set[int]:
    """An echo round trip to every socket of ``server`` through its family's loopback
    address; returns the port numbers."""
    ports = set()
    for sock in server.sockets:
        addr = LOOPBACK[sock.family]
        port = sock.getsockname()[1]
        ports.add(port)
        reader, writer = await stack.open_connection(addr, port)
        assert writer.get_extra_info("peername")[:2] == (addr, port)
        await echo_round_trip(reader, writer, f"to {addr}".encode())
    return ports


@pytest.mark.parametrize("host", [None, "", [HOST, HOST6]], ids=["None", "empty", "list"])
def test_a_server_listens_on_ipv4_and_ipv6(run: Runner, host: Any) -> None:
    """host=None and "" serve every family, a list each address; an IPv6 socket beside an
    IPv4 one is v6-only, as asyncio makes it.  utcp gives all its sockets one port number
    (asyncio's TCP picks one per socket)."""

    async def main(stack: Stack) -> None:
        handlers = Handlers(echo)
        server = await stack.start_server(handlers, host, 0)
        assert sorted(sock.family for sock in server.sockets) == [socket.AF_INET, socket.AF_INET6]
        for sock in server.sockets:
            if sock.family == socket.AF_INET6:
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        ports = await _serve_each_socket(stack, server)
        if stack is UTCP:
            assert len(ports) == 1, f"one port number for every socket, not {ports}"
        async with server:
            await handlers.wait_finished(2)
        assert handlers.errors == []

    for stack in BOTH:
        run(main(stack))


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["inet", "inet6"])
def test_family_restricts_a_server_to_one_family(run: Runner, family: int) -> None:
    """host=None with family= listens on that family alone: the other loopback address is
    refused on the same port (an IPv6 server socket is v6-only, as asyncio makes it)."""
    other = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6

    async def main(stack: Stack) -> None:
        handlers = Handlers(echo)
        server = await stack.start_server(handlers, None, 0, family=family)
        assert [sock.family for sock in server.sockets] == [family]
        ports = await _serve_each_socket(stack, server)
        with pytest.raises(ConnectionRefusedError):
            await stack.open_connection(LOOPBACK[other], ports.pop())
        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []

    for stack in BOTH:
        run(main(stack))


def test_server_and_client_on_sockets_the_application_made(run: Runner) -> None:
    """sock=: a bound UDP socket to serve on, a UDP socket connected to the server to connect
    with."""

    async def main() -> None:
        handlers = Handlers(echo)
        listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listening.bind((HOST, 0))
        port = listening.getsockname()[1]
        server = await utcp.start_server(handlers, sock=listening)
        assert server_port(server) == port
        assert server.sockets[0].fileno() == listening.fileno()

        connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        connected.connect((HOST, port))
        local = connected.getsockname()
        reader, writer = await utcp.open_connection(sock=connected)
        assert writer.get_extra_info("sockname") == local
        assert writer.get_extra_info("peername") == (HOST, port)
        await echo_round_trip(reader, writer, b"over sockets made by hand")

        transport, _ = await utcp.create_connection(asyncio.Protocol, sock=_connected_udp(port))
        assert transport.get_extra_info("peername") == (HOST, port)
        transport.close()
        async with server:
            await handlers.wait_finished(2)
        assert handlers.errors == []

    run(main())


def _connected_udp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((HOST, port))
    return sock


def test_keywords_refused_with_value_error(run: Runner) -> None:
    """sock= with host/port, a TCP socket as sock=, proto=IPPROTO_TCP and reuse_address=True
    are refused with ValueError (asyncio refuses sock= with host and a UDP socket likewise)."""

    async def main() -> None:
        async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp_sock:
            tcp_sock.bind((HOST, 0))
            with pytest.raises(ValueError):
                await asyncio.start_server(nothing, HOST, 0, sock=tcp_sock)  # the control
            with pytest.raises(ValueError):
                await utcp.start_server(nothing, sock=tcp_sock)
            with pytest.raises(ValueError):
                await utcp.open_connection(sock=tcp_sock)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_sock:
            udp_sock.bind((HOST, 0))
            with pytest.raises(ValueError):
                await asyncio.start_server(nothing, sock=udp_sock)  # the control's mirror
            with pytest.raises(ValueError):
                await utcp.start_server(nothing, HOST, 0, sock=udp_sock)
            with pytest.raises(ValueError):
                await utcp.start_server(nothing, port=0, sock=udp_sock)
            udp_sock.connect((HOST, 9))
            with pytest.raises(ValueError):
                await utcp.open_connection(HOST, 9, sock=udp_sock)
            assert udp_sock.fileno() >= 0  # left to its owner
        unbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no port to reach
        with unbound, pytest.raises(ValueError, match="not bound"):
            await utcp.start_server(nothing, sock=unbound)
        unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with unix_sock, pytest.raises(ValueError, match="UDP"):
            await utcp.start_server(nothing, sock=unix_sock)
        port = _free_udp_port()
        with pytest.raises(ValueError, match="UDP"):
            await utcp.open_connection(HOST, port, proto=socket.IPPROTO_TCP)
        with pytest.raises(ValueError, match="UDP"):
            await utcp.create_connection(asyncio.Protocol, HOST, port, proto=socket.IPPROTO_TCP)
        with pytest.raises(ValueError, match="reuse_address"):
            await utcp.start_server(nothing, HOST, 0, reuse_address=True)

    run(main())


def test_a_config_that_is_not_a_config_is_refused_with_a_type_error(run: Runner) -> None:
    """config= given a dict (or a Config of wrongly typed fields) is a TypeError naming it,
    where it used to be an AttributeError from inside (or, for pmtud="no", discovery on)."""

    async def main() -> None:
        async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        for call in (
            lambda cfg: utcp.open_connection(HOST, 9, config=cfg),
            lambda cfg: utcp.start_server(nothing, HOST, 0, config=cfg),
            lambda cfg: utcp.create_connection(asyncio.Protocol, HOST, 9, config=cfg),
            lambda cfg: utcp.create_server(asyncio.Protocol, HOST, 0, config=cfg),
        ):
            with pytest.raises(TypeError, match=r"config must be a utcp\.Config, not dict"):
                await call({"mss_bytes": 1000})
            with pytest.raises(TypeError, match="pmtud must be bool"):
                await call(Config(pmtud="no"))  # type: ignore[arg-type]

    run(main())


def test_an_observer_that_is_not_callable_is_refused_with_a_type_error(run: Runner) -> None:
    """observer=5 named itself at once; it was "'int' object is not callable" from inside, on
    the first datagram (a connect), or a server that failed on its first client."""

    async def main() -> None:
        async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        for call in (
            lambda: utcp.open_connection(HOST, 9, observer=5),
            lambda: utcp.start_server(nothing, HOST, 0, observer=5),
            lambda: utcp.create_connection(asyncio.Protocol, HOST, 9, observer=5),
            lambda: utcp.create_server(asyncio.Protocol, HOST, 0, observer=5),
            lambda: utcp.create_client_endpoint(observer=5),
        ):
            with pytest.raises(TypeError, match="observer must be callable or None, not int"):
                await call()

    run(main())


def test_reuse_port_lets_two_servers_share_a_port(run: Runner) -> None:
    async def main() -> None:
        handlers = [Handlers(echo), Handlers(echo)]
        first = await utcp.start_server(handlers[0], HOST, 0, reuse_port=True)
        port = server_port(first)
        second = await utcp.start_server(handlers[1], HOST, port, reuse_port=True)
        assert server_port(second) == port
        with pytest.raises(OSError):
            await utcp.start_server(echo, HOST, port)  # without it: the port is taken
        clients = 6
        for i in range(clients):
            reader, writer = await utcp.open_connection(HOST, port)
            await echo_round_trip(reader, writer, f"client {i}".encode())
        # The kernel picks a socket per client address; each client is served by one.
        await wait_until(
            lambda: sum(h.finished for h in handlers) == clients, "every handler has ended"
        )
        assert sum(h.started for h in handlers) == clients
        for server in (first, second):
            server.close()
            await server.wait_closed()
        assert [h.errors for h in handlers] == [[], []]

    run(main())


# ---------------------------------------------------------------------- several addresses


@contextmanager
def localhost_on_both_families() -> Iterator[None]:
    """The running loop resolves "localhost" to ::1 then 127.0.0.1, as a dual-stack host's
    /etc/hosts does (this test machine's may list only 127.0.0.1): the resolver is the one
    thing a test cannot set up otherwise."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(
        host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        if host != "localhost":
            return await real(host, port, family=family, type=type, proto=proto, flags=flags)
        number = int(port)
        answers = [
            (socket.AF_INET6, (HOST6, number, 0, 0)),
            (socket.AF_INET, (HOST, number)),
        ]
        return [
            (fam, type or socket.SOCK_STREAM, proto, "", addr)
            for fam, addr in answers
            if family in (0, fam)
        ]

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
    try:
        yield
    finally:
        del loop.getaddrinfo


@asynccontextmanager
async def silent_udp(family: int, port: int) -> AsyncIterator[None]:
    """A UDP socket on the loopback address of ``family`` that takes datagrams and never
    answers: a server that does not respond, with no ICMP error to give it away."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK[family], port))
        yield


@pytest.mark.parametrize("served", [HOST, HOST6], ids=["ipv4", "ipv6"])
def test_happy_eyeballs_reaches_the_address_that_answers(run: Runner, served: str) -> None:
    """The name "localhost" gives ::1 and 127.0.0.1; a server listens on one of them only.
    Where the other one is silent (no refusal ever comes), happy_eyeballs_delay starts the
    next attempt after that delay and the one that answers wins."""
    family = socket.AF_INET6 if served == HOST6 else socket.AF_INET
    silent = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, served, 0)
        port = server_port(server)
        with localhost_on_both_families():
            async with silent_udp(silent, port), deadline(5, "happy eyeballs"):
                reader, writer = await utcp.open_connection(
                    "localhost", port, happy_eyeballs_delay=0.1
                )
            assert writer.get_extra_info("peername")[:2] == (served, port)
            await echo_round_trip(reader, writer, b"happy eyeballs")
            # Without a silent address, the refused one is skipped at once.
            reader, writer = await utcp.open_connection("localhost", port, happy_eyeballs_delay=5)
            await echo_round_trip(reader, writer, b"after a refusal")
        async with server:
            await handlers.wait_finished(2)
        assert handlers.errors == []

    run(main())


def test_all_errors_raises_every_failed_attempt(run: Runner) -> None:
    """Nothing listens on either address "localhost" names: with all_errors=True an
    ExceptionGroup of both refusals (with or without happy eyeballs), without it one OSError,
    as asyncio's create_connection (whose all_errors= came in 3.12: no TCP control here)."""

    async def main() -> None:
        port = _free_udp_port()
        with localhost_on_both_families():
            with pytest.raises(ExceptionGroup) as group:  # noqa: F821 (3.11+)
                await utcp.open_connection("localhost", port, all_errors=True)
            errors = group.value.exceptions
            assert len(errors) == 2, repr(errors)
            assert all(isinstance(exc, ConnectionRefusedError) for exc in errors)
            with pytest.raises(ExceptionGroup) as group:  # noqa: F821 (3.11+)
                await utcp.open_connection(
                    "localhost", port, all_errors=True, happy_eyeballs_delay=0.1
                )
            assert len(group.value.exceptions) == 2
            with pytest.raises(OSError) as info:
                await utcp.open_connection("localhost", port)
            # asyncio's rule: the one error when every attempt failed alike, else one naming all
            assert isinstance(info.value, ConnectionRefusedError) or str(info.value).startswith(
                "Multiple exceptions"
            )

    run(main())


def test_all_errors_with_one_address_raises_a_group_too(run: Runner) -> None:
    """One address, nobody there: all_errors=True still raises an ExceptionGroup (of the one
    refusal), as asyncio's create_connection does from 3.12; it raised the bare error."""

    async def main() -> None:
        port = _free_udp_port()
        for extra in ({}, {"happy_eyeballs_delay": 0.1}):
            with pytest.raises(ExceptionGroup) as group:  # noqa: F821 (3.11+)
                await utcp.open_connection(HOST, port, all_errors=True, **extra)
            assert [type(exc) for exc in group.value.exceptions] == [ConnectionRefusedError]

    run(main())


def test_a_client_sock_that_is_not_connected_fails_at_once(run: Runner) -> None:
    """A client's sock= names its server by being connected: an unconnected one is an
    OSError(ENOTCONN) at once, as asyncio's transports fail on one, and is left open to its
    owner; it used to send its SYNs nowhere and wait out every retry (71 s)."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            async with deadline(10, "the refusal"):
                with pytest.raises(OSError) as info:
                    await utcp.open_connection(sock=sock)
            assert info.value.errno == errno.ENOTCONN
            assert sock.fileno() >= 0

    run(main())


def test_server_wait_closed_waits_for_close_on_an_open_server(run: Runner) -> None:
    """As asyncio's: wait_closed() on a server still serving waits until it is closed (and its
    connections have ended); it returned at once."""

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0)
        waiting = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        writer.write(b"still serving")
        assert await reader.readexactly(13) == b"still serving"
        server.close()
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the client's connection is still open
        writer.close()
        await writer.wait_closed()
        async with deadline(10, "wait_closed() after close()"):
            await waiting

    run(main())


# ---------------------------------------------------------------------- sendfile


FILE_BYTES = 3_000_000


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = seeded_bytes(72, FILE_BYTES)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, data


async def _receiving_server(stack: Stack) -> tuple[Any, Handlers, list[bytes]]:
    received: list[bytes] = []

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_all(reader))
        writer.close()
        await writer.wait_closed()

    handlers = Handlers(collect)
    return await stack.start_server(handlers, HOST, 0), handlers, received


SendFile = Callable[..., Awaitable[int]]


async def _send_the_file(
    stack: Stack, sendfile: SendFile, path: Path, data: bytes, *, rewind: bool
) -> None:
    """A part of the file by offset and count, then all of it, then a trailer by write(): the
    peer gets exactly that, the file's position follows what was sent."""
    server, handlers, received = await _receiving_server(stack)
    reader, writer = await stack.open_connection(HOST, server_port(server))
    with path.open("rb") as file:
        assert await sendfile(writer.transport, file, 1000, 100_000) == 100_000
        assert file.tell() == 101_000
        if rewind:
            file.seek(0)  # asyncio's fallback starts at the file's position when offset is 0
        assert await sendfile(writer.transport, file) == FILE_BYTES
        assert file.tell() == FILE_BYTES
    writer.write(b"trailer")  # the stream's protocol is back in place
    await writer.drain()
    writer.write_eof()
    assert await reader.read() == b""
    await handlers.wait_finished(1)
    expected = data[1000:101_000] + data + b"trailer"
    assert len(received[0]) == len(expected), stack.name
    assert sha256(received[0]) == sha256(expected), stack.name
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert handlers.errors == []


def test_utcp_sendfile_on_every_loop(run: Runner, big_file: tuple[Path, bytes]) -> None:
    """utcp.sendfile, on asyncio's loop and on uvloop, with offset and count: the file's
    position after each call, a 3 MB file intact.  Offset 0 means the start of the file, as
    with TCP's loop.sendfile (the control, on asyncio's loop: uvloop has no loop.sendfile)."""
    path, data = big_file

    async def main() -> None:
        if run.kind == "asyncio":
            await _send_the_file(TCP, asyncio.get_running_loop().sendfile, path, data, rewind=False)
        await _send_the_file(UTCP, utcp.sendfile, path, data, rewind=False)

    run(main())


def test_loop_sendfile_on_asyncios_loop(run: Runner, big_file: tuple[Path, bytes]) -> None:
    """loop.sendfile(transport, file) over utcp on asyncio's loop (its own chunked fallback),
    with TCP's native sendfile as the control."""
    if run.kind != "asyncio":
        pytest.skip("uvloop has no loop.sendfile: utcp.sendfile serves it")
    path, data = big_file

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for stack in BOTH:
            await _send_the_file(stack, loop.sendfile, path, data, rewind=True)

    run(main())


def test_sendfile_hands_the_stream_back_paused_when_the_transport_is(
    run: Runner, big_file: tuple[Path, bytes]
) -> None:
    """With a 1-byte high-water mark every chunk pauses writing, and the last one is still
    unacknowledged when sendfile returns: the stream's protocol must then be paused too (its
    drain() waits; the transport's resume_writing later finds it paused), not told of a
    resume for a pause it never heard of."""
    path, data = big_file
    count = 5 * 16 * KIB  # whole chunks of asyncio's fallback (16 KiB) and of utcp's (64 KiB)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ways: list[SendFile] = [utcp.sendfile]
        if run.kind == "asyncio":
            ways.append(loop.sendfile)  # asyncio's own fallback, as aiohttp calls it
        for sendfile in ways:
            server, handlers, received = await _receiving_server(UTCP)
            reader, writer = await utcp.open_connection(HOST, server_port(server))
            writer.transport.set_write_buffer_limits(high=1, low=0)
            with path.open("rb") as file:
                assert await sendfile(writer.transport, file, 0, count) == count
            assert writer.transport.get_write_buffer_size() > 0
            await writer.drain()  # waits for the acknowledgement
            assert writer.transport.get_write_buffer_size() == 0
            writer.write(b"trailer")
            await writer.drain()
            writer.write_eof()
            assert await reader.read() == b""
            await handlers.wait_finished(1)
            assert sha256(received[0]) == sha256(data[:count] + b"trailer")
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

    run(main())


def test_keep_alive_turns_utcp_keepalive_on_and_off(run: Runner) -> None:
    """asyncio's ``keep_alive=`` (SO_KEEPALIVE) maps to utcp's own keepalive."""

    async def main() -> None:
        off = utcp.Config(keepalive_idle_s=None)
        cases = [(None, None, 15.0), (False, None, None), (True, off, 15.0), (None, off, None)]
        for keep_alive, config, want in cases:
            server = await utcp.create_server(
                asyncio.Protocol, HOST, 0, keep_alive=keep_alive, config=config
            )
            assert server.endpoint.config.keepalive_idle_s == want
            server.close()
            await server.wait_closed()

    run(main())


def test_a_wildcard_server_answers_from_the_address_the_client_chose(run: Runner) -> None:
    """A server bound to 0.0.0.0, and one on a dual-stack ``::`` socket, reached at
    127.0.0.2: the replies leave from 127.0.0.2 (the route would pick 127.0.0.1, which the
    client's connected socket drops) and the server names it as ``sockname``, as asyncio's
    TCP server (the control) does.  The portable I/O path cannot learn where a datagram was
    sent to (README, "Where utcp still differs"): skipped there."""

    async def reached_at(stack: Stack, sock: socket.socket, dst: str) -> None:
        names: list[Any] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            names.append(writer.get_extra_info("sockname")[0])
            names.append(writer.get_extra_info("socket").getsockname()[0])
            await echo(reader, writer)

        server = await stack.start_server(handle, sock=sock)
        port = sock.getsockname()[1]
        async with server, deadline(30, f"an echo through {dst}"):
            reader, writer = await stack.open_connection(dst, port)
            await echo_round_trip(reader, writer, seeded_bytes(5, 100 * KIB))
        assert names[0] in (dst, f"::ffff:{dst}") and names[1] == names[0], names

    async def main(stack: Stack) -> None:
        if resolve_io_path(Config(), asyncio.get_running_loop()) != "fast":
            pytest.skip("the portable I/O path answers from the address the route picks")
        kind = socket.SOCK_STREAM if stack is TCP else socket.SOCK_DGRAM
        v4 = socket.socket(socket.AF_INET, kind)
        v4.bind(("0.0.0.0", 0))
        await reached_at(stack, v4, "127.0.0.2")
        dual = socket.socket(socket.AF_INET6, kind)
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", 0))
        await reached_at(stack, dual, "127.0.0.3")

    for stack in BOTH:
        run(main(stack))


def test_one_client_socket_reaching_a_wildcard_server_at_three_addresses(run: Runner) -> None:
    """One client endpoint (one address and port) with a connection to each of 127.0.0.2,
    .3 and .4 of a server on 0.0.0.0, all three moving data both ways at once: every
    datagram of each connection comes from the address it connected to, and each server
    side names its own as ``sockname`` (the map from peer to local address had been one per
    batch, so a batch with datagrams to two of the addresses answered both from one)."""
    dsts = ("127.0.0.2", "127.0.0.3", "127.0.0.4")

    async def main() -> None:
        if resolve_io_path(Config(), asyncio.get_running_loop()) != "fast":
            pytest.skip("the portable I/O path answers from the address the route picks")
        names: list[str] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await echo(reader, writer)
            names.append(writer.get_extra_info("sockname")[0])

        sources: dict[int, set[str]] = {}

        def observe(direction: str, data: bytes, addr: Any) -> None:
            if direction == "recv":
                sources.setdefault(decode(data).dst_cid, set()).add(addr[0])

        server = await utcp.start_server(handle, "0.0.0.0", 0)
        port = server_port(server)
        client = await utcp.create_client_endpoint(observer=observe)
        async with server, client, deadline(60, "three echoes through one socket"):
            streams = [await client.open_connection(dst, port) for dst in dsts]
            payloads = [seeded_bytes(20 + k, 2 * MIB) for k in range(3)]
            await asyncio.gather(
                *(echo_round_trip(r, w, p) for (r, w), p in zip(streams, payloads, strict=True))
            )
            cids = [w.get_extra_info("connection").local_cid for _, w in streams]
        assert [sources[cid] for cid in cids] == [{dst} for dst in dsts]
        assert sorted(names) == list(dsts)

    run(main())


def test_a_forged_datagram_to_another_local_address_moves_nothing(run: Runner) -> None:
    """A bare ACK naming a wildcard server's connection, from a stranger (127.0.0.9) to
    another of its addresses (127.0.0.3): the connection's replies still leave from the
    address its client connected to (127.0.0.2).  It had taken the stranger's, and what
    the server wrote next never reached the client's connected socket."""

    async def main() -> None:
        if resolve_io_path(Config(), asyncio.get_running_loop()) != "fast":
            pytest.skip("the portable I/O path answers from the address the route picks")
        go_on = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(2))
            await go_on.wait()
            writer.write(b"later")
            await echo(reader, writer)

        server = await utcp.start_server(handle, "0.0.0.0", 0)
        port = server_port(server)
        async with server, deadline(30, "the answer after the forged datagram"):
            reader, writer = await utcp.open_connection("127.0.0.2", port)
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            server_cid = writer.get_extra_info("connection").peer_cid
            await asyncio.sleep(1.5)  # the client quiet longer than an RTO: a move is plausible
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.bind(("127.0.0.9", 0))
                forged = Packet(int(Flag.ACK), 0x1234, server_cid, 5, 5, 100)
                stranger.sendto(encode(forged), ("127.0.0.3", port))
                await asyncio.sleep(0.2)
            go_on.set()
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"later"
            await echo_round_trip(reader, writer, b"and on")

    run(main())


def test_a_client_endpoint_on_a_wildcard_address_sends_from_the_routes_choice(
    run: Runner,
) -> None:
    """Only a server's wildcard socket names the source of its replies: a client endpoint
    (bound to 0.0.0.0, unconnected) leaves it to the route, so that a move to a new socket,
    or a changed network, is not held to the address its first answer came to."""

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0)
        client = await utcp.create_client_endpoint()
        async with server, client:
            reader, writer = await client.open_connection(HOST, server_port(server))
            udp = writer.get_extra_info("endpoint").transport
            await echo_round_trip(reader, writer, b"from wherever the route says")
        assert not getattr(udp, "pktinfo", False)

    run(main())
