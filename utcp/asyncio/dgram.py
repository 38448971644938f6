"""Datagram I/O under the endpoint: asyncio's portable transport, or a Linux fast path.

Both hand the endpoint what a socket received and take bursts to send.  The fast path owns a
non-blocking UDP socket watched with ``loop.add_reader``: each wake-up drains the socket (up to
a bound, so one busy peer cannot starve the loop), with UDP GRO several datagrams arrive per
system call, and a burst of equal-size datagrams to one peer leaves in one ``sendmsg`` with UDP
GSO.  What the kernel cannot take yet waits in a bounded queue flushed with ``add_writer``.

On Linux the socket's error queue (``IP_RECVERR``) tells the endpoint which of its datagrams drew
an ICMP error (a peer whose process died answers with port unreachable).  The invariant: once
the option is on, the queue is drained whenever the socket reports an error, since a non-empty
queue keeps epoll reporting ``EPOLLERR`` and the loop would spin.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from ..config import Config
from ..log import get_logger
from .errqueue import (
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_LOCAL,
    SocketError,
    drain_error_queue,
    enable_recverr,
)

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)
Cmsg = list[tuple[int, int, bytes]]  # ancillary data for sendmsg
# The local address a peer's datagram was sent to, on a socket bound to a wildcard address:
# its text and IPv6 scope id (for ``sockname``) and the ancillary data that makes replies
# leave from it.
Local = tuple[str, Cmsg, int]

__all__ = [
    "BATCH_DATAGRAMS",
    "IO_ENV",
    "BatchProtocol",
    "DatagramIO",
    "FastDatagramTransport",
    "Local",
    "OffloadSupport",
    "create_endpoint",
    "offload_support",
    "burst_sender",
    "cap_receive_size",
    "drain_transport_errors",
    "resolve_io_path",
    "set_dont_fragment",
]

_log = get_logger()

IO_ENV: Final = "UTCP_IO"  # "fast" or "portable": what io_path="auto" means in this process
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103  # linux/udp.h: send with GSO, the cmsg carries the segment size (u16)
UDP_GRO: Final = 104  # linux/udp.h: receive with GRO, the cmsg carries the segment size (int)
_GSO_MAX_SEGMENTS: Final = 64  # UDP_MAX_SEGMENTS in older kernels (newer allow 128)
_GSO_MAX_BYTES: Final = 65000  # one GSO send is one UDP datagram to the stack: under 64 KiB
MAX_UDP_DATAGRAM_BYTES: Final = 65535  # more than any UDP payload (the length field's limit)
_RECV_BUFFER_BYTES: Final = 65536 + 4096  # a coalesced GRO read is at most one 64 KiB datagram
_CMSG_SPACE: Final = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_READS_PER_WAKEUP: Final = 32  # system calls per wake-up before other callbacks get their turn
# A socket whose wake-ups keep finding one datagram (request/response traffic) stops asking for
# a second one, which would cost a failing system call before the reply can be written; every
# _DRAIN_EVERY-th wake-up drains again, so a backlog (or a coalesced read) ends the shortcut.
_SINGLES_BEFORE_SHORT: Final = 4
_DRAIN_EVERY: Final = 16
# Datagrams handed over (and answered) together, as one GRO read at most.
BATCH_DATAGRAMS: Final = 64
# Held while the socket is full; beyond, dropped like a full queue.
_QUEUE_MAX_DATAGRAMS: Final = 4096
# Options the socket module may lack (IP_PKTINFO before Python 3.12): Linux's numbers there,
# elsewhere -1 (not asked for).
_LINUX: Final = sys.platform.startswith("linux")
IP_PKTINFO: Final[int] = getattr(socket, "IP_PKTINFO", 8 if _LINUX else -1)  # linux/in.h
IPV6_RECVPKTINFO: Final[int] = getattr(socket, "IPV6_RECVPKTINFO", 49 if _LINUX else -1)
IPV6_PKTINFO: Final[int] = getattr(socket, "IPV6_PKTINFO", 50 if _LINUX else -1)
_PKTINFO_SPACE: Final = socket.CMSG_SPACE(20) if hasattr(socket, "CMSG_SPACE") else 0
_LOCALS_CACHED: Final = 64  # distinct local addresses remembered (a host has few)
_IN_PKTINFO: Final = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO: Final = struct.Struct("=16sI")  # addr, ifindex
_U16: Final = struct.Struct("=H")
_INT: Final = struct.Struct("=i")
_SENT: Final = object()
_NO_CMSG: Final[Cmsg] = []
_FULL: Final = object()
_RETRY: Final = object()


class DatagramIO(Protocol):
    """What the endpoint uses of its datagram transport: asyncio's (the portable path) or a
    ``FastDatagramTransport``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def is_closing(self) -> bool: ...
    def sendto(self, data: Any, addr: Address = None) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class BatchProtocol(Protocol):
    """What the fast path delivers to: the endpoint's datagram callbacks."""

    def connection_made(self, transport: DatagramIO) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def error_received(self, exc: Exception) -> None: ...
    def datagrams_received(self, batch: list[tuple[bytes, Address]]) -> None: ...

    def errors_received(self, errors: list[SocketError]) -> None:
        """What the socket's error queue held: ICMP errors our datagrams drew (and local ones).

        Optional at run time: a transport gives the socket ``IP_RECVERR`` only when its protocol
        has this method.  On the portable path such a protocol must call
        ``drain_transport_errors(transport)`` on every ``error_received`` (asyncio's transport
        cannot drain the queue itself) and pass what it returns here."""
        ...


class OffloadSupport:
    """What this kernel offers a UDP socket, probed once per process."""

    __slots__ = ("gro", "gso")

    def __init__(self, *, gso: bool, gro: bool) -> None:
        self.gso = gso
        self.gro = gro

    def __repr__(self) -> str:
        return f"OffloadSupport(gso={self.gso}, gro={self.gro})"


_offload: OffloadSupport | None = None


def offload_support() -> OffloadSupport:
    """Whether UDP GSO and GRO work here (Linux 4.18 / 5.0 and later), probed on a throwaway
    socket without sending anything."""
    global _offload
    if _offload is None:
        gso = gro = False
        if sys.platform.startswith("linux"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.getsockopt(SOL_UDP, UDP_SEGMENT)
                    gso = True
                except OSError:
                    pass
                try:
                    s.setsockopt(SOL_UDP, UDP_GRO, 1)
                    gro = True
                except OSError:
                    pass
        _offload = OffloadSupport(gso=gso, gro=gro)
    return _offload


# linux/in.h and linux/in6.h: set don't-fragment and ignore the kernel's path MTU cache, so a
# datagram either passes whole or is lost (RFC 8899 section 3 wants exactly that from a PL).
_IP_MTU_DISCOVER: Final = 10
_IPV6_MTU_DISCOVER: Final = 23
_PMTUDISC_PROBE: Final = 3


def set_dont_fragment(sock: socket.socket) -> bool:
    """Ask for unfragmented datagrams (Linux); False where the option is not available."""
    if not sys.platform.startswith("linux"):
        return False
    ok = False
    levels = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]
    if sock.family == socket.AF_INET6:
        levels.append((socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
    for level, option in levels:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, _PMTUDISC_PROBE)
            ok = True
    return ok


def drain_transport_errors(transport: DatagramIO) -> list[SocketError]:
    """Drain the error queue of a portable-path transport's socket (asyncio's own transport),
    for its protocol's ``error_received``.

    A ``FastDatagramTransport`` drains its socket itself and hands what it finds to
    ``errors_received``: for it the answer is ``[]``, so that every error is reported once.
    asyncio's transport offers only a ``TransportSocket`` without ``recvmsg`` (uvloop's a
    pseudo-socket): the queue is read through a socket object borrowing the descriptor, which
    is detached again, never closed."""
    if isinstance(transport, FastDatagramTransport) or transport.is_closing():
        return []
    sock = transport.get_extra_info("socket")
    if sock is None:
        return []
    if isinstance(sock, socket.socket):
        return drain_error_queue(sock)
    try:
        fd = sock.fileno()
        borrowed = socket.socket(sock.family, sock.type, 0, fd)
    except (AttributeError, OSError, ValueError, TypeError):
        return []
    try:
        return drain_error_queue(borrowed)
    finally:
        borrowed.detach()


def _fast_path_possible(loop: asyncio.AbstractEventLoop) -> bool:
    """The fast path needs a selector-style loop (``add_reader`` on a socket) and
    ``recvmsg``; Windows' proactor loop has neither."""
    if not hasattr(socket.socket, "recvmsg") or sys.platform == "win32":
        return False
    try:
        r, w = socket.socketpair()
    except OSError:
        return False
    with r, w:
        try:
            loop.add_reader(r.fileno(), lambda: None)
        except (NotImplementedError, RuntimeError):
            return False
        loop.remove_reader(r.fileno())
    return True


_fast_possible: dict[type, bool] = {}


def resolve_io_path(config: Config, loop: asyncio.AbstractEventLoop) -> str:
    """``"fast"`` or ``"portable"``: the config's choice, or for ``"auto"`` the ``UTCP_IO``
    environment variable, else fast where this loop and OS support it."""
    choice = config.io_path
    if choice == "auto":
        choice = os.environ.get(IO_ENV, "auto").strip().lower() or "auto"
        if choice not in ("auto", "fast", "portable"):
            raise ValueError(f"{IO_ENV} must be 'fast', 'portable' or 'auto', not {choice!r}")
    kind = type(loop)
    if kind not in _fast_possible:
        _fast_possible[kind] = _fast_path_possible(loop)
    if choice == "fast" and not _fast_possible[kind]:
        if config.io_path == "fast":
            raise RuntimeError(f"io_path='fast' needs Linux and a selector loop, not {kind!r}")
        choice = "portable"  # asked for by the environment: fall back, as auto does
    if choice == "auto":
        choice = "fast" if _fast_possible[kind] else "portable"
    return choice


async def _uncancelled(
    loop: asyncio.AbstractEventLoop, made: Coroutine[Any, Any, tuple[Any, Any]]
) -> tuple[Any, Any]:
    """The loop's ``create_datagram_endpoint``, never cancelled half-way: the caller's
    cancellation leaves it to finish, and what it made is closed.  uvloop's leaks its socket
    for good when cancelled at the wrong moment (cancelled connects kept UDP sockets open)."""
    task = loop.create_task(made)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_close_made)
        raise


def _close_made(task: asyncio.Task[tuple[Any, Any]]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result()[0].close()


async def create_endpoint(
    protocol_factory: Callable[[], Any],
    *,
    config: Config,
    local_addr: Any = None,
    remote_addr: Any = None,
    family: int = 0,
    reuse_port: bool | None = None,
    v6only: bool = False,
    sock: socket.socket | None = None,
) -> tuple[DatagramIO, Any]:
    """Open a UDP socket on the configured I/O path, like ``loop.create_datagram_endpoint``
    with resolved addresses; returns ``(transport, protocol)``.  ``sock`` is a UDP socket the
    caller made (bound, and connected for a client); ``v6only`` keeps an IPv6 socket off IPv4
    so that a second socket can serve IPv4 on the same port."""
    loop = asyncio.get_running_loop()
    portable_path = resolve_io_path(config, loop) == "portable"
    # asyncio's create_datagram_endpoint takes addresses as (host, port) only: an IPv6 one
    # with its flow info and scope id (as resolved) goes through a socket made here.
    long_addr = any(addr is not None and len(addr) > 2 for addr in (local_addr, remote_addr))
    if sock is None and (v6only or (portable_path and long_addr)):
        sock = _make_socket(socket.AF_INET6, local_addr, reuse_port=reuse_port, v6only=v6only)
        try:
            if remote_addr is not None:
                await loop.sock_connect(sock, remote_addr)
        except BaseException:
            sock.close()
            raise
    if sock is not None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP socket was expected, got {sock!r}")
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            remote_addr = sock.getpeername()
    if portable_path:
        if sock is not None:
            made = loop.create_datagram_endpoint(protocol_factory, sock=sock)
        else:
            made = loop.create_datagram_endpoint(
                protocol_factory,
                local_addr=local_addr,
                remote_addr=remote_addr,
                family=family,
                reuse_port=reuse_port,
            )
        portable, protocol = await _uncancelled(loop, made)
        cap_receive_size(portable)
        if _handles_errors(protocol) and isinstance(loop, asyncio.SelectorEventLoop):
            # asyncio's transport calls error_received whenever the pending error is raised,
            # and the protocol drains the queue there (BatchProtocol.errors_received).  Never
            # on uvloop: its libuv (1.52) reads the error queue itself on POLLERR and hands
            # uvloop the negated u32 ee_errno as a huge positive length, which crashes it.
            raw = portable.get_extra_info("socket")
            if raw is not None:
                enable_recverr(raw)
        return portable, protocol
    if sock is None:
        if not family:
            addr = remote_addr if remote_addr is not None else local_addr
            family = socket.AF_INET6 if addr is not None and ":" in str(addr[0]) else socket.AF_INET
        sock = _make_socket(family, local_addr, reuse_port=reuse_port, v6only=False)
        try:
            if remote_addr is not None:
                await loop.sock_connect(sock, remote_addr)
        except BaseException:
            sock.close()
            raise
    protocol = protocol_factory()
    transport = FastDatagramTransport(loop, sock, protocol, peer=remote_addr)
    return transport, protocol


def _make_socket(
    family: int, local_addr: Any, *, reuse_port: bool | None, v6only: bool
) -> socket.socket:
    """A non-blocking UDP socket of ``family``, bound to ``local_addr`` when given."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6only:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if local_addr is not None:
            sock.bind(local_addr)
    except BaseException:
        sock.close()
        raise
    return sock


def _handles_errors(protocol: object) -> bool:
    """Whether the protocol takes error queue entries (``BatchProtocol.errors_received``)."""
    return callable(getattr(protocol, "errors_received", None))


def cap_receive_size(transport: object) -> None:
    """Make asyncio's selector datagram transport ask for one UDP datagram's worth per read.

    It asks ``recvfrom`` for 256 KiB: above glibc's default mmap threshold (128 KiB), so unless
    the process happened to raise that threshold earlier, every datagram costs an ``mmap``, an
    ``mremap`` and a ``munmap`` and fresh zeroed pages (it halved a receiver's throughput).
    No UDP payload reaches 65,535 bytes.  Other transports (uvloop's) have no such attribute.
    """
    size = getattr(transport, "max_size", None)
    if isinstance(size, int) and size > MAX_UDP_DATAGRAM_BYTES:
        transport.max_size = MAX_UDP_DATAGRAM_BYTES  # type: ignore[attr-defined]


def burst_sender(
    transport: DatagramIO,
) -> Callable[[list[bytes], Address, Local | None], None]:
    """What sends a burst of datagrams to one peer (``None``: the connected peer) over this
    transport, from the given local address where the socket receives for several: GSO runs
    on the fast path, one ``sendto`` each otherwise (from the address the route picks)."""
    if isinstance(transport, FastDatagramTransport):
        return transport.send_burst

    def send(datagrams: list[bytes], addr: Address, local: Local | None = None) -> None:
        if addr is None:
            for data in datagrams:
                transport.sendto(data)
        else:
            for data in datagrams:
                transport.sendto(data, addr)

    return send


def _wildcard_unconnected(sock: socket.socket) -> bool:
    """A socket that receives for every local address (``0.0.0.0``, ``::``) from any peer:
    its replies must name their source address, as the kernel picks it by route otherwise."""
    try:
        host = sock.getsockname()[0]
    except OSError:
        return False
    try:
        sock.getpeername()
    except OSError:
        return host in ("0.0.0.0", "::")
    return False


def _enable_pktinfo(sock: socket.socket) -> bool:
    """Ask for each datagram's destination address (``IP_PKTINFO``; ``IPV6_RECVPKTINFO``,
    which reports IPv4 datagrams on a dual-stack socket as mapped addresses)."""
    if min(IP_PKTINFO, IPV6_RECVPKTINFO, IPV6_PKTINFO) < 0:
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError:
        return False
    return True


def _local_of(level: int, kind: int, value: bytes) -> Local | None:
    """The destination address a ``*_PKTINFO`` control message names, with the control
    message that sends from it (no interface given, except for a link-local address)."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
        # ipi_spec_dst: the local address to answer from (ipi_addr is the header's
        # destination, which for a broadcast is no address to send from).
        dst = _IN_PKTINFO.unpack_from(value)[1]
        cmsg = (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, dst, bytes(4)))
        return socket.inet_ntop(socket.AF_INET, dst), [cmsg], 0
    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 20:
        addr, ifindex = _IN6_PKTINFO.unpack_from(value)
        scope = ifindex if addr[0] == 0xFE and addr[1] & 0xC0 == 0x80 else 0  # link-local
        data = _IN6_PKTINFO.pack(addr, scope)
        host = socket.inet_ntop(socket.AF_INET6, addr)
        return host, [(socket.IPPROTO_IPV6, IPV6_PKTINFO, data)], scope
    return None


def _earlier_datagrams_error(exc: OSError, errors: list[SocketError]) -> bool:
    """Whether a send failed with the pending error of an ICMP error to an earlier datagram:
    the error queue held one with that errno, and no local error (which this send made)."""
    earlier = False
    for error in errors:
        if error.origin == SO_EE_ORIGIN_LOCAL:
            return False
        if error.origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) and error.errno == exc.errno:
            earlier = True
    return earlier


class FastDatagramTransport:
    """A datagram transport over the endpoint's own non-blocking socket (Linux fast path).

    It offers what the endpoint uses of ``asyncio.DatagramTransport`` (``DatagramIO``) without
    deriving from it, so the compiled build makes it a native class.  For a protocol with
    ``errors_received`` it enables ``IP_RECVERR`` and drains the error queue itself: after a
    read or send raised (``error_received`` still gets the exception, as asyncio's transport
    gives it) and after any wake-up that found no datagram."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: BatchProtocol,
        *,
        peer: Address = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._peer = peer
        self._closing = False
        self._writing = False
        self._queue: collections.deque[tuple[bytes, Address, Cmsg]] = collections.deque()
        self._queued_bytes = 0
        support = offload_support()
        udp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_DGRAM
        self._gso = support.gso and udp
        self._gro = False
        if support.gro and udp:
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self._gro = True
        # The error queue is drained whatever happens (an application may have set the option
        # itself), but only a protocol that takes its entries gets the option from us.
        self._errors_received: Callable[[list[SocketError]], None] | None = None
        if _handles_errors(protocol):
            self._errors_received = protocol.errors_received
            enable_recverr(sock)
        self._rearm_pending = False
        self._singles = 0  # wake-ups in a row that found exactly one datagram
        self._wakeups = 0
        # A server's socket bound to a wildcard address learns which local address each
        # datagram was sent to: ``locals`` maps the peers of the datagrams being handed
        # over to it (the endpoint keeps each connection's), and replies leave from that
        # address, which a client's connected socket requires (the route's choice may be
        # another one).
        self.locals: dict[Address, Local] = {}
        self._local_cache: dict[bytes, Local | None] = {}
        self.pktinfo = (
            udp
            and bool(getattr(protocol, "serves", False))  # a client's source may change
            and _wildcard_unconnected(sock)
            and _enable_pktinfo(sock)
        )
        self._cmsg_space = _CMSG_SPACE + (_PKTINFO_SPACE if self.pktinfo else 0)
        self._buf = bytearray(_RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self.dropped_send = 0  # datagrams the socket would not take (queue full, errors)
        self._extra: dict[str, Any] = {"socket": sock}
        with contextlib.suppress(OSError):
            self._extra["sockname"] = sock.getsockname()
        with contextlib.suppress(OSError):
            self._extra["peername"] = sock.getpeername()
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    # ------------------------------------------------------------------ asyncio interface

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    @property
    def offload(self) -> str:
        """What this socket uses: ``"gso+gro"``, ``"gso"``, ``"gro"`` or ``""``."""
        return "+".join(name for name, on in (("gso", self._gso), ("gro", self._gro)) if on)

    def get_write_buffer_size(self) -> int:
        return self._queued_bytes

    def sendto(self, data: Any, addr: Address = None) -> None:
        self.send_burst([bytes(data)], addr)

    def close(self) -> None:
        """Stop reading; flush what is queued if the socket takes it now, then close."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._queue:
            self._flush_queue()
        self._finish()

    def abort(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._finish()

    def release_socket(self) -> None:
        """Close the socket at once, without the event loop (which has been closed): what
        was queued is dropped and the protocol hears nothing more."""
        self._closing = True
        self._writing = False
        self._queue.clear()
        self._queued_bytes = 0
        self._sock.close()

    def _finish(self) -> None:
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._queue.clear()
        self._queued_bytes = 0
        self._loop.call_soon(self._call_connection_lost)

    def _call_connection_lost(self) -> None:
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()

    # ------------------------------------------------------------------ receiving

    def _read_ready(self) -> None:
        """Drain the socket (bounded), then hand the whole batch over at once; after an error
        or a wake-up that found nothing, the error queue too."""
        batch: list[tuple[bytes, Address]] = []
        sock = self._sock
        view = self._view
        gro = self._gro
        pktinfo = self.pktinfo
        locals_ = self.locals
        if pktinfo:
            locals_.clear()
        ancillary = gro or pktinfo
        space = self._cmsg_space
        reads = _READS_PER_WAKEUP
        if self._singles >= _SINGLES_BEFORE_SHORT:
            self._wakeups += 1
            if self._wakeups % _DRAIN_EVERY:
                reads = 1
        found = 0
        failed = False
        for _ in range(reads):
            try:
                if ancillary:
                    n, ancdata, _flags, addr = sock.recvmsg_into([view], space)
                else:
                    n, addr = sock.recvfrom_into(view)
                    ancdata = []
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # The socket's pending error, raised once: an ICMP error (port unreachable) on
                # a connected socket, or on any socket with IP_RECVERR.
                failed = True
                if batch:
                    self._protocol.datagrams_received(batch)
                    batch = []
                self._protocol.error_received(exc)
                if self._closing:
                    return
                continue
            seg = n
            for level, kind, value in ancdata:
                if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                    seg = _INT.unpack_from(value)[0] or n
                elif pktinfo:
                    local = self._local(level, kind, value)
                    if local is None:
                        continue
                    known = locals_.get(addr)
                    if known is not None and known is not local and batch:
                        # The peer (one socket, several connections) sent to another of our
                        # addresses earlier in this batch: that part goes first, so that
                        # the map names one address per peer for each batch.
                        self._protocol.datagrams_received(batch)
                        batch = []
                        if self._closing:
                            return
                    locals_[addr] = local
            if seg >= n:
                batch.append((bytes(view[:n]), addr))
                found += 1
            else:
                for i in range(0, n, seg):
                    batch.append((bytes(view[i : min(i + seg, n)]), addr))
                found += 2
            if len(batch) >= BATCH_DATAGRAMS:
                # Hand over about one GRO read's worth at a time: the ACK it draws goes out
                # while the rest is still read, so the sender is not left waiting a whole
                # wake-up for it.
                self._protocol.datagrams_received(batch)
                batch = []
                if self._closing:
                    return
        if found == 1 or (found == 0 and reads == 1):
            self._singles += 1
        else:
            self._singles = 0
        if batch:
            self._protocol.datagrams_received(batch)
        if pktinfo:
            locals_.clear()
        if (failed or not found) and not self._closing:
            # EPOLLERR: the pending error was raised above, or a send took it, or only the
            # error queue is left (it does not set the pending error for local errors).
            self._socket_errors()

    def _local(self, level: int, kind: int, value: bytes) -> Local | None:
        """``_local_of`` for one control message, made once per distinct local address."""
        cache = self._local_cache
        if value in cache:
            return cache[value]
        if len(cache) >= _LOCALS_CACHED:
            cache.clear()
        local = cache[value] = _local_of(level, kind, value)
        return local

    def _socket_errors(self) -> None:
        """Drain the error queue, which keeps epoll reporting EPOLLERR while anything is in
        it, hand over what it held, and register the callbacks again (``_rearm``)."""
        errors = drain_error_queue(self._sock)
        if not self._rearm_pending:
            self._rearm_pending = True
            self._loop.call_soon(self._rearm)
        if errors and self._errors_received is not None:
            self._errors_received(errors)

    def _rearm(self) -> None:
        """Register the reader (and writer) again after an error wake-up.

        uvloop's ``add_reader`` is a libuv poll handle, which libuv stops for good on POLLERR
        (reporting EBADF): uvloop runs the callbacks once more and closes the handle, so the
        socket would never be read again.  Registering again must wait until that callback
        has returned (closing the handle deletes the descriptor from epoll).  asyncio's
        selector loop keeps its callbacks; there this costs a few ``epoll_ctl`` calls per
        error wake-up."""
        self._rearm_pending = False
        if self._closing:
            return
        loop = self._loop
        loop.remove_reader(self._fd)
        loop.add_reader(self._fd, self._read_ready)
        if self._writing:
            loop.remove_writer(self._fd)
            loop.add_writer(self._fd, self._write_ready)

    # ------------------------------------------------------------------ sending

    def send_burst(self, datagrams: list[bytes], addr: Address, local: Local | None = None) -> None:
        """Send datagrams to one peer, equal-size runs as one GSO ``sendmsg`` each; on a
        wildcard socket from ``local``, by default the address the peer's datagram being
        handed over was sent to (a stateless answer)."""
        if self._closing:
            return
        cmsg: Cmsg = _NO_CMSG
        if self.pktinfo:
            if local is None:
                local = self.locals.get(addr)
            if local is not None:
                cmsg = local[1]
        if self._queue:
            self._enqueue(datagrams, 0, addr, cmsg)
            return
        count = len(datagrams)
        if count == 1:
            if self._send_one(datagrams[0], addr, 0, cmsg) is _FULL:
                self._enqueue(datagrams, 0, addr, cmsg)
            return
        i = 0
        while i < count:
            data = datagrams[i]
            size = len(data)
            j = i + 1
            if self._gso:
                # A run: equal sizes, and the last one may be shorter (that ends the run).
                limit = min(count, i + _GSO_MAX_SEGMENTS, i + max(1, _GSO_MAX_BYTES // size))
                while j < limit:
                    n = len(datagrams[j])
                    if n > size:
                        break
                    j += 1
                    if n < size:
                        break
            if j - i > 1:
                outcome = self._send_one(b"".join(datagrams[i:j]), addr, size, cmsg)
            else:
                outcome = self._send_one(data, addr, 0, cmsg)
            if outcome is _FULL:
                self._enqueue(datagrams, i, addr, cmsg)
                return
            if outcome is _RETRY:
                continue  # GSO was just turned off: the same datagrams go singly
            i = j

    def _send_one(self, payload: bytes, addr: Address, segment: int, cmsg: Cmsg) -> object:
        """Send one datagram, or one GSO run of ``segment``-byte datagrams: _SENT (or dropped
        for good, reported to the protocol; sent again once first if what failed it was an
        earlier datagram's ICMP error), _FULL when the socket takes nothing now, _RETRY when
        GSO turned out not to work and the run must go again singly."""
        sock = self._sock
        retried = False
        while True:
            try:
                if segment:
                    gso = [(SOL_UDP, UDP_SEGMENT, _U16.pack(segment)), *cmsg]
                    if addr is None:
                        sock.sendmsg([payload], gso)
                    else:
                        sock.sendmsg([payload], gso, 0, addr)
                elif cmsg:
                    sock.sendmsg([payload], cmsg, 0, addr)
                elif addr is None:
                    sock.send(payload)
                else:
                    sock.sendto(payload, addr)
            except (BlockingIOError, InterruptedError):
                return _FULL
            except OSError as exc:
                if segment and exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                    # The device or route cannot segment after all: send singly from now on.
                    _log.debug("udp_gso_disabled", error=repr(exc))
                    self._gso = False
                    return _RETRY
                # A send raises the socket's pending error, which with IP_RECVERR an ICMP error
                # to an earlier datagram (to any peer) sets: the queue then holds that error,
                # and this datagram goes again, once.  Otherwise (EMSGSIZE: above the path MTU
                # with don't-fragment set, a path MTU probe that cannot pass; and the like)
                # this datagram is lost, as on the wire.
                errors = drain_error_queue(sock)
                again = not retried and _earlier_datagrams_error(exc, errors)
                if not again:
                    self.dropped_send += -(-len(payload) // segment) if segment else 1
                self._protocol.error_received(exc)
                if errors and self._errors_received is not None:
                    self._errors_received(errors)
                if again and not self._closing:
                    retried = True
                    continue
            return _SENT

    def _enqueue(self, datagrams: list[bytes], start: int, addr: Address, cmsg: Cmsg) -> None:
        queue = self._queue
        for k in range(start, len(datagrams)):
            if len(queue) >= _QUEUE_MAX_DATAGRAMS:
                # As a full kernel queue would: retransmission repairs it.
                self.dropped_send += len(datagrams) - k
                break
            data = datagrams[k]
            queue.append((data, addr, cmsg))
            self._queued_bytes += len(data)
        if queue and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        self._flush_queue()
        if not self._queue and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _flush_queue(self) -> None:
        queue = self._queue
        while queue:
            data, addr, cmsg = queue[0]
            if self._send_one(data, addr, 0, cmsg) is _FULL:
                return
            queue.popleft()
            self._queued_bytes -= len(data)
