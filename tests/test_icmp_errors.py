"""ICMP errors through the socket's error queue (IP_RECVERR, utcp/asyncio/dgram.py), on loopback.

A datagram to a port where nothing listens draws ICMP port unreachable; with the option on, the
kernel queues it with the datagram's payload and destination. The drain reads each such error
exactly once and leaves no EPOLLERR behind (a queue left non-empty makes the loop spin); the fast
path drains by itself, still reads after the error on both loops, and does not lose the next
datagram to the pending error; the portable path enables the option only where the protocol's
``error_received`` can drain it (asyncio's transport, not uvloop's).
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.aio_helpers import HOST, Runner, deadline, make_run_fixture
from utcp import Config
from utcp.asyncio.dgram import FastDatagramTransport, create_endpoint, drain_transport_errors
from utcp.asyncio.errqueue import (
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_LOCAL,
    SocketError,
    drain_error_queue,
    enable_recverr,
)

pytestmark = [
    pytest.mark.sockets,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="IP_RECVERR and MSG_ERRQUEUE are Linux's"
    ),
]
run = make_run_fixture()

HOST6 = "::1"
WAIT_MS = 10_000  # only reached if the ICMP error never comes: loopback answers at once
_IP_RECVERR = (0, 11)  # linux/in.h: SOL_IP, IP_RECVERR


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((HOST6, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback (::1) here")
FAMILIES = [
    pytest.param(socket.AF_INET, HOST, id="ipv4"),
    pytest.param(socket.AF_INET6, HOST6, id="ipv6", marks=needs_ipv6),
]


def _closed_port(family: int, host: str) -> int:
    """A port nothing listens on: bound once, noted, released."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _dead_address(family: int, host: str) -> Any:
    """Where a datagram draws port unreachable, spelled as recvmsg spells addresses."""
    port = _closed_port(family, host)
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


@pytest.fixture
def udp() -> Iterator[Any]:
    """Makes non-blocking UDP sockets bound to loopback, closed after the test."""
    made: list[socket.socket] = []

    def make(family: int = socket.AF_INET, host: str = HOST) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        made.append(sock)
        sock.setblocking(False)
        sock.bind((host, 0))
        return sock

    yield make
    for sock in made:
        sock.close()


def _error_pending(sock: Any, timeout_ms: int) -> bool:
    """Whether poll reports POLLERR on the socket (what makes epoll wake the loop for it)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return any(events & select.POLLERR for _, events in poller.poll(timeout_ms))


def _send_past_pending_error(sock: socket.socket, data: bytes, addr: Any) -> None:
    """sendto, again if it raised the pending error an earlier ICMP error left (once)."""
    try:
        sock.sendto(data, addr)
    except ConnectionRefusedError:
        sock.sendto(data, addr)


def _assert_port_unreachable(error: SocketError, family: int, data: bytes, addr: Any) -> None:
    assert error.port_unreachable
    assert error.errno == errno.ECONNREFUSED
    assert error.quoted == data
    assert error.addr == addr
    if family == socket.AF_INET:
        assert (error.origin, error.icmp_type, error.icmp_code) == (SO_EE_ORIGIN_ICMP, 3, 3)
        assert error.offender == (HOST, 0)
    else:
        assert (error.origin, error.icmp_type, error.icmp_code) == (SO_EE_ORIGIN_ICMP6, 1, 4)
        assert error.offender == (HOST6, 0, 0, 0)


# ---------------------------------------------------------------------- the drain itself


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_a_datagram_to_a_closed_port_is_reported_once(family: int, host: str, udp: Any) -> None:
    sock = udp(family, host)
    assert enable_recverr(sock)
    dead = _dead_address(family, host)
    data = b"utcp packet \x00\xff" * 10
    sock.sendto(data, dead)
    assert _error_pending(sock, WAIT_MS)
    errors = drain_error_queue(sock)
    assert len(errors) == 1, errors
    _assert_port_unreachable(errors[0], family, data, dead)
    # Drained: nothing left to read, and nothing left for epoll to report.
    assert drain_error_queue(sock) == []
    assert not _error_pending(sock, 0)


@needs_ipv6
def test_an_ipv4_mapped_peer_of_a_dual_stack_socket_is_reported(udp: Any) -> None:
    """The IPv4 option governs them (enable_recverr sets both on an IPv6 socket); the cmsg
    comes at the IPv6 level with an ICMP (v4) origin and a mapped offender."""
    sock = udp(socket.AF_INET6, "::")
    assert enable_recverr(sock)
    dead = ("::ffff:" + HOST, _closed_port(socket.AF_INET, HOST), 0, 0)
    sock.sendto(b"mapped", dead)
    assert _error_pending(sock, WAIT_MS)
    [error] = drain_error_queue(sock)
    assert error.port_unreachable and error.origin == SO_EE_ORIGIN_ICMP
    assert (error.quoted, error.addr) == (b"mapped", dead)
    assert error.offender == ("::ffff:" + HOST, 0, 0, 0)


def test_the_pending_error_fails_the_next_send_once(udp: Any) -> None:
    """Why the fast path sends again: with the option on, an ICMP error to one peer fails the
    next send to any peer, once (the datagram is not sent); the queue still holds the error."""
    sock = udp()
    enable_recverr(sock)
    live = udp()
    sock.sendto(b"first", _dead_address(socket.AF_INET, HOST))
    assert _error_pending(sock, WAIT_MS)
    with pytest.raises(ConnectionRefusedError):
        sock.sendto(b"lost", live.getsockname())
    sock.sendto(b"second", live.getsockname())
    assert live.recv(100) == b"second"
    assert [e.quoted for e in drain_error_queue(sock)] == [b"first"]


def test_a_drain_reads_at_most_its_bound(udp: Any) -> None:
    sock = udp()
    enable_recverr(sock)
    sent = [b"one", b"two", b"three"]
    for data in sent:
        _send_past_pending_error(sock, data, _dead_address(socket.AF_INET, HOST))
        assert _error_pending(sock, WAIT_MS)
    first = drain_error_queue(sock, max_reads=2)
    assert [e.quoted for e in first] == sent[:2]
    assert _error_pending(sock, 0)  # the rest still wakes the loop
    assert [e.quoted for e in drain_error_queue(sock)] == sent[2:]
    assert not _error_pending(sock, 0)


def test_without_the_option_an_unconnected_socket_hears_nothing(udp: Any) -> None:
    sock = udp()
    sock.sendto(b"unheard", _dead_address(socket.AF_INET, HOST))
    assert drain_error_queue(sock) == []
    assert not _error_pending(sock, 0)


def test_recverr_is_for_ip_sockets_only() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with left, right:
        assert not enable_recverr(left)


class _ScriptedSocket:
    """Answers recvmsg from a list (an exception is raised), for the parser's odd cases."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def recvmsg(self, *args: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _extended_err(origin: int, kind: int, code: int, tail: bytes) -> bytes:
    return (111).to_bytes(4, sys.byteorder) + bytes([origin, kind, code, 0]) + bytes(8) + tail


def test_malformed_entries_are_skipped_and_errors_end_the_drain() -> None:
    addr = (HOST, 9)
    good = _extended_err(SO_EE_ORIGIN_ICMP, 3, 3, bytes(16))  # offender AF_UNSPEC
    answers: list[Any] = [
        (b"short cmsg", [(0, 11, good[:10])], 0, addr),
        (b"other level", [(1, 11, good)], 0, addr),
        (b"no cmsg", [], 0, addr),
        (b"kept", [(0, 11, good)], 0, addr),
        (b"local", [(41, 25, _extended_err(SO_EE_ORIGIN_LOCAL, 0, 0, b""))], 0, addr),
        OSError(errno.EBADF, "closed meanwhile"),
        (b"never read", [(0, 11, good)], 0, addr),
    ]
    errors = drain_error_queue(_ScriptedSocket(answers))  # type: ignore[arg-type]
    assert [(e.quoted, e.offender, e.port_unreachable) for e in errors] == [
        (b"kept", None, True),
        (b"local", None, False),
    ]
    assert len(answers) == 1


# ---------------------------------------------------------------------- through the endpoints


class Collector(asyncio.DatagramProtocol):
    """A protocol for both paths: records what arrives; on the portable path its
    ``error_received`` drains the transport's error queue, as the endpoint's does."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.exceptions: list[Exception] = []
        self.socket_errors: list[SocketError] = []
        self.datagrams: list[bytes] = []
        self.changed = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def error_received(self, exc: Exception) -> None:
        self.exceptions.append(exc)
        errors = drain_transport_errors(self.transport)
        if errors:
            self.errors_received(errors)

    def errors_received(self, errors: list[SocketError]) -> None:
        self.socket_errors.extend(errors)
        self.changed.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)
        self.changed.set()

    def datagrams_received(self, batch: list[tuple[bytes, Any]]) -> None:
        for data, addr in batch:
            self.datagram_received(data, addr)

    async def wait_for(self, what: str, predicate: Any) -> None:
        async with deadline(10, what):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def _open(io_path: str, family: int = socket.AF_INET) -> tuple[Any, Collector]:
    host = HOST if family == socket.AF_INET else HOST6
    transport, protocol = await create_endpoint(
        Collector, config=Config(io_path=io_path), local_addr=(host, 0), family=family
    )
    return transport, protocol


async def _still_receives(transport: Any, protocol: Collector) -> None:
    """A datagram sent to the transport's socket after the error is delivered: the loop still
    watches the socket."""
    family = transport.get_extra_info("socket").family
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"after", transport.get_extra_info("sockname"))
        await protocol.wait_for("a datagram after the error", lambda: protocol.datagrams)
    assert protocol.datagrams == [b"after"]


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_the_fast_path_reports_the_error_and_leaves_nothing_pending(
    family: int, host: str, run: Runner
) -> None:
    async def main() -> None:
        transport, protocol = await _open("fast", family)
        assert isinstance(transport, FastDatagramTransport)
        sock = transport.get_extra_info("socket")
        dead = _dead_address(family, host)
        transport.sendto(b"to the dead", dead)
        await protocol.wait_for("the error", lambda: protocol.socket_errors)
        [error] = protocol.socket_errors
        _assert_port_unreachable(error, family, b"to the dead", dead)
        assert [type(e) for e in protocol.exceptions] == [ConnectionRefusedError]
        assert not _error_pending(sock, 0)  # so epoll does not wake the loop again
        await _still_receives(transport, protocol)  # uvloop: the reader was registered again
        assert len(protocol.socket_errors) == 1 and len(protocol.exceptions) == 1
        assert drain_transport_errors(transport) == []  # it drains itself
        transport.close()

    run(main())


def test_the_fast_path_sends_again_a_datagram_the_pending_error_failed(run: Runner) -> None:
    """An ICMP error to one peer makes the next send (to another) raise it: the fast transport
    sees the queue explain it and sends that datagram again, once; nothing is lost."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await _open("fast")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as live:
            live.setblocking(False)
            live.bind((HOST, 0))
            transport.sendto(b"to the dead", _dead_address(socket.AF_INET, HOST))
            transport.sendto(b"to the living", live.getsockname())
            async with deadline(10, "the second datagram"):
                assert await loop.sock_recv(live, 100) == b"to the living"
        await protocol.wait_for("the error", lambda: protocol.socket_errors)
        assert [e.quoted for e in protocol.socket_errors] == [b"to the dead"]
        assert [type(e) for e in protocol.exceptions] == [ConnectionRefusedError]
        assert transport.dropped_send == 0
        transport.close()

    run(main())


class _Plain(asyncio.DatagramProtocol):
    """A protocol without ``errors_received``, as the fast path's earlier users."""

    def __init__(self) -> None:
        self.exceptions: list[Exception] = []
        self.datagrams: list[bytes] = []
        self.changed = asyncio.Event()

    def error_received(self, exc: Exception) -> None:
        self.exceptions.append(exc)
        self.changed.set()

    def datagrams_received(self, batch: list[tuple[bytes, Any]]) -> None:
        self.datagrams.extend(data for data, _ in batch)
        self.changed.set()


def test_a_connected_fast_transport_keeps_reading_after_a_refusal(run: Runner) -> None:
    """Without the option a connected socket still gets the pending error (and EPOLLERR):
    uvloop used to stop watching the socket there for good."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        port = _closed_port(socket.AF_INET, HOST)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((HOST, port))
        protocol = _Plain()
        transport = FastDatagramTransport(loop, sock, protocol)
        assert sock.getsockopt(*_IP_RECVERR) == 0  # not asked for: no errors_received
        transport.sendto(b"refused")
        async with deadline(10, "the refusal"):
            while not protocol.exceptions:
                protocol.changed.clear()
                await protocol.changed.wait()
        assert [type(e) for e in protocol.exceptions] == [ConnectionRefusedError]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((HOST, port))  # the peer comes back: its datagrams still arrive
            peer.sendto(b"back", sock.getsockname())
            async with deadline(10, "a datagram after the refusal"):
                while not protocol.datagrams:
                    protocol.changed.clear()
                    await protocol.changed.wait()
        assert protocol.datagrams == [b"back"]
        transport.close()

    run(main())


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_the_portable_path_reports_through_error_received(
    family: int, host: str, run: Runner
) -> None:
    """asyncio's transport raises the pending error into ``error_received``, whose drain finds
    the entry. uvloop's never gets the option: its libuv reads the error queue itself on
    POLLERR and crashes uvloop (a negated u32 errno taken for a length)."""

    async def main() -> None:
        transport, protocol = await _open("portable", family)
        sock = transport.get_extra_info("socket")
        dead = _dead_address(family, host)
        if run.kind == "uvloop":
            assert sock.getsockopt(*_IP_RECVERR) == 0
            assert drain_transport_errors(transport) == []
            transport.close()
            return
        assert sock.getsockopt(*_IP_RECVERR) == 1
        transport.sendto(b"to the dead", dead)
        await protocol.wait_for("the error", lambda: protocol.socket_errors)
        [error] = protocol.socket_errors
        _assert_port_unreachable(error, family, b"to the dead", dead)
        assert [type(e) for e in protocol.exceptions] == [ConnectionRefusedError]
        assert not _error_pending(sock, 0)
        await _still_receives(transport, protocol)
        transport.close()

    run(main())


def test_the_portable_path_leaves_the_option_off_for_other_protocols(run: Runner) -> None:
    async def main() -> None:
        transport, _ = await create_endpoint(
            _Plain, config=Config(io_path="portable"), local_addr=(HOST, 0)
        )
        assert transport.get_extra_info("socket").getsockopt(*_IP_RECVERR) == 0
        transport.close()

    run(main())
