"""One UDP socket and the utcp connections it carries.

The endpoint is an asyncio ``DatagramProtocol`` over the sans-I/O endpoint (``utcp.endpoint``),
which routes each datagram to its connection and makes every protocol decision (SYN cookies,
resets, the backlog, anti-amplification).  This layer owns the socket, sends what the cores
return, keeps one loop timer per connection (moved only when that connection's deadline
changes), batches, and hands each connection's events to its transport through
``utcp.asyncio.interfaces``.  Nothing raises out of ``datagram_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Final, cast

from ..coalesce import Received, coalesce
from ..config import Config
from ..connection import Connection
from ..endpoint import AFTER_CLOSE_GRACE_S, Address, Route
from ..endpoint import Endpoint as EndpointCore
from ..events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EofReceived,
    FinAcknowledged,
)
from ..log import get_logger
from ..packet import HEADER_SIZE
from ..state import ESTABLISHED, SYN_SENT
from ..trace import TRACE_ENV, tracer_for
from .dgram import (
    DatagramIO,
    FastDatagramTransport,
    Local,
    burst_sender,
    create_endpoint,
    drain_transport_errors,
    set_dont_fragment,
)
from .errqueue import SocketError
from .interfaces import ConnectionHandle
from .shutdown import call_at_shutdown, cancel_at_shutdown
from .transport import UtcpTransport

Observer = Callable[[str, bytes, Address], None]

_log = get_logger()
_clock: Final = time.monotonic  # what the core is given as ``now`` (see Endpoint.__init__)
_SOCKET_BUFFER_BYTES: Final = 4 << 20
# How long a closed server lets a handshake under way complete before resetting it: the
# client's handshake ACK, if lost, is sent again after the initial RTO (1 s).
HANDSHAKE_GRACE_S: Final = AFTER_CLOSE_GRACE_S  # the core takes cookie ACKs as long


# Endpoints closed by the application whose sockets connections still winding down hold
# (FIN_WAIT_2, TIME_WAIT), by id: a server started again on the same port takes it from them.
_LINGERING: dict[int, Endpoint] = {}


async def release_port(family: int, port: int) -> bool:
    """Cut short what still winds down on this process's closed endpoints bound to ``port``
    (FIN_WAIT_2 reset, TIME_WAIT ended) and wait for their sockets to close; False if there
    were none.  A server started again on its port then binds it at once, as a TCP listener
    binds beside the orphans of the one before it."""
    running = asyncio.get_running_loop()
    found: list[Endpoint] = []
    released = False
    for ep in list(_LINGERING.values()):
        if not ep.bound_to(family, port):
            continue
        if ep.loop_closed():
            # Its event loop was closed without shutting down (no ``asyncio.run``): nothing
            # will ever serve those connections again, so the socket goes as at the exit
            # of the process.
            released = ep.abandon() or released
        elif ep.loop is running:
            found.append(ep)
    for ep in found:
        ep.cut_lingering()
    for ep in found:
        await ep.wait_closed()
    return bool(found) or released


def _forget_dead_loops() -> None:
    """Let go of the lingering endpoints whose event loop was closed without shutting down:
    they would hold their sockets (and the registry them) for as long as the process runs."""
    for ep in list(_LINGERING.values()):
        if ep.loop_closed():
            ep.abandon()


def _no_socket(datagrams: list[bytes], addr: Address, local: Local | None) -> None:
    """The sender before the socket is made (``_send_burst`` checks the transport first)."""


def _peer_text(addr: Address) -> str:
    """``host:port`` (``[host]:port`` for IPv6) for messages a user reads."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return "the peer" if addr is None else str(addr)


# Send errors saying this socket's own address or network is gone (not the peer's).
_LOCAL_PATH_ERRNOS: Final = frozenset((errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN))
REBIND_INTERVAL_S: Final = 1.0


def _check_family(local_addr: Any, family: int) -> None:
    """``migrate(local_addr=)`` names an address the socket's family can bind: an IPv4
    literal for an IPv4 socket, IPv6 for IPv6 (the new socket is of the old one's family, as
    its connections' servers stay where they are)."""
    if local_addr is None:
        return
    host = local_addr[0] if isinstance(local_addr, tuple) and local_addr else None
    if not isinstance(host, str) or not host:
        return
    try:
        version = ipaddress.ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return  # a host name: bind resolves it, and says so if it cannot
    want = 6 if family == socket.AF_INET6 else 4
    if version != want:
        mapped = " (an IPv4 address as ::ffff:a.b.c.d)" if want == 6 else ""
        raise ValueError(
            f"local_addr {local_addr!r} is an IPv{version} address; this endpoint's socket is"
            f" IPv{want}, so its connections can only move to an IPv{want} address{mapped}"
        )


class Endpoint:
    """Demultiplexes the datagrams of one UDP socket to its utcp connections.

    It is the protocol of asyncio's datagram transport (the portable path) or of a
    ``FastDatagramTransport``, with the methods of ``asyncio.DatagramProtocol`` but not
    derived from it, so the compiled build makes it a native class."""

    def __init__(
        self,
        *,
        config: Config,
        protocol_factory: Callable[[], asyncio.BaseProtocol] | None = None,
        backlog: int = 100,
        observer: Observer | None = None,
        persistent: bool = False,
        worker: int = 0,
        worker_bits: int = 0,
    ) -> None:
        self.config = config.validate()
        self._loop = asyncio.get_running_loop()
        # The core's clock is time.monotonic(), not loop.time(): uvloop's loop time moves in
        # whole milliseconds, which would make every RTT on a fast path 0 or 1 ms.  Loop
        # timers are set with call_later from it.
        self._coarse_timers = type(self._loop).__module__.startswith("uvloop")
        self._protocol_factory = protocol_factory  # set: this endpoint accepts connections
        # A single-connection client endpoint ends with its connection; a persistent one (many
        # outgoing connections over one socket) and a server's stay open until closed.
        self._single = protocol_factory is None and not persistent
        self._observer = observer
        self._transport: DatagramIO | None = None
        # Sockets migrate() left, closing: their connection_lost is not the endpoint's.
        self._retiring = 0
        self._move_lock: asyncio.Lock | None = None  # migrate() calls take turns
        # A client whose socket can no longer send (its address or network went away) moves
        # to a new socket by itself, at most once per REBIND_INTERVAL_S.
        self._rebinding: asyncio.Task[None] | None = None
        self._rebound_at = -math.inf
        # The protocol work: routing, SYN cookies, resets, the backlog, anti-amplification.
        # Its routes are this layer's ConnectionHandles (made by _new_handle).  Connections
        # the application is done with that still wind down (FIN_WAIT_2, TIME_WAIT) are
        # "released" there: the first to go at max_connections.
        self._core = EndpointCore(
            self.config,
            now=_clock(),
            accepting=protocol_factory is not None,
            backlog=backlog,
            route_factory=self._new_handle,
            worker=worker,
            worker_bits=worker_bits,
        )
        self._closed: asyncio.Future[None] = self._loop.create_future()
        # Closing, and no connection the application holds is left (wait_done()).
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self._cutting = False  # _close_socket is ending background connections
        self._until_released: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.stats = self._core.stats
        self._send_datagrams: Callable[[list[bytes], Address, Local | None], None] = _no_socket
        # The fast transport's map from the peers of the datagrams being handed over to the
        # local address each was sent to, on a socket bound to a wildcard address; else None.
        self._locals: dict[Address, Local] | None = None
        # Traces record each datagram as it arrived: no merging while they are written.
        self._coalesce = self.config.trace_dir is None and TRACE_ENV not in os.environ

    # ------------------------------------------------------------------ DatagramProtocol

    def pause_writing(self) -> None:
        """asyncio's transport is buffering what the socket could not take yet: nothing to do,
        the connections' congestion windows already bound what they send (as with
        ``asyncio.DatagramProtocol``'s default)."""

    def resume_writing(self) -> None:
        """The socket's buffer has drained."""

    def connection_made(self, transport: DatagramIO) -> None:
        self._transport = transport
        self._send_datagrams = burst_sender(transport)
        self._locals = (
            transport.locals
            if isinstance(transport, FastDatagramTransport) and transport.pktinfo
            else None
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bursts of a whole congestion window arrive at once: room for them avoids
            # self-inflicted loss in the kernel's queue. Best effort; the kernel may cap it.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER_BYTES)
            if self.config.pmtud:
                set_dont_fragment(sock)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._retiring and self._transport is not None:
            self._retiring -= 1  # an old socket of migrate(): the connections moved on
            return
        self._transport = None
        cancel_at_shutdown(id(self))
        _LINGERING.pop(id(self), None)
        handles = self.handles()
        self._core.clear()
        for handle in handles:
            self._cancel_timer(handle)
            if handle.conn.close_reason is None:
                handle.conn.abort()
                self._dispatch_events(handle)
        for callback, args in self._until_released:
            self._loop.call_soon(callback, *args)  # after the loop has closed the socket
        self._until_released.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if not self._done.done():
            self._done.set_result(None)

    def _rebind_soon(self) -> None:
        """The socket reported that its local address or network is gone: move the
        connections to a new socket (the kernel picks its address), once per interval."""
        now = _clock()
        if (
            self._closing
            or self._rebinding is not None
            or now - self._rebound_at < REBIND_INTERVAL_S
        ):
            return
        self._rebound_at = now
        _log.info("endpoint_rebinding")
        self._rebinding = self._loop.create_task(self.migrate())
        self._rebinding.add_done_callback(self._rebound)

    def _rebound(self, task: asyncio.Task[None]) -> None:
        self._rebinding = None
        if not task.cancelled() and task.exception() is not None:
            _log.info("endpoint_rebind_failed", error=repr(task.exception()))

    async def migrate(self, local_addr: Any = None) -> None:
        """Move this client endpoint's connections to a new UDP socket, bound to
        ``local_addr`` (default: any address, a new port) and connected to the same server as
        the old one; the old socket closes.  Each connection sends a probe from the new
        socket at once, and the server follows once the new address has echoed its path
        challenge (docs/PROTOCOL.md section 4.2).  A server endpoint does not move.  Calls
        made at once (two connections sharing the endpoint, or one racing the move the
        endpoint makes by itself) take turns, each moving to a socket of its own."""
        if self._protocol_factory is not None:
            raise RuntimeError("a server's connections do not move: its clients move to it")
        lock = self._move_lock
        if lock is None:
            lock = self._move_lock = asyncio.Lock()
        async with lock:
            await self._move(local_addr)

    async def _move(self, local_addr: Any) -> None:
        """``migrate()``'s work, one call at a time."""
        old = self._transport
        sock = old.get_extra_info("socket") if old is not None else None
        if old is None or sock is None or self._closing:
            raise ConnectionError("the connection's socket is closed")
        family = sock.family
        _check_family(local_addr, family)
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        new = socket.socket(family, socket.SOCK_DGRAM)
        try:
            new.setblocking(False)
            if family == socket.AF_INET6:
                v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            new.bind(
                local_addr
                if local_addr is not None
                else ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
            )
            if peer is not None:
                new.connect(peer)
        except BaseException:
            new.close()
            raise
        self._retiring += 1
        try:
            await create_endpoint(lambda: self, config=self.config, sock=new)
        except BaseException:
            self._retiring -= 1
            new.close()
            raise
        old.close()
        _log.info("endpoint_migrated", old=str(sock.getsockname()), new=str(new.getsockname()))
        for handle in self.handles():
            handle.conn.probe_path()
            self.service(handle)

    def error_received(self, exc: Exception) -> None:
        # On a connected (client) socket the kernel reports ICMP port unreachable here: nobody
        # listens at the peer's address, so a pending connect is refused at once.
        if isinstance(exc, ConnectionRefusedError) and self._single:
            for handle in self.handles():
                if handle.conn.state is SYN_SENT and handle.waiter is not None:
                    handle.conn.abort()
                    self._fail_waiter(
                        handle, ConnectionRefusedError(errno.ECONNREFUSED, "nobody listens there")
                    )
                    self._dispatch_events(handle)
                    self._forget(handle)
        if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
            self.stats.send_errors += 1  # too big for the path: a lost probe, as on the wire
        if (
            isinstance(exc, OSError)
            and exc.errno in _LOCAL_PATH_ERRNOS
            and self._protocol_factory is None
        ):
            self._rebind_soon()
        _log.debug("socket_error", error=repr(exc))
        transport = self._transport
        if transport is not None and not isinstance(transport, FastDatagramTransport):
            # asyncio's transport reports the socket error; the ICMP message that caused it
            # waits in the error queue (IP_RECVERR), which must be read.
            errors = drain_transport_errors(transport)
            if errors:
                self.errors_received(errors)

    def errors_received(self, errors: list[SocketError]) -> None:
        """ICMP errors about datagrams this socket sent (Linux's error queue): the core
        endpoint judges each (``receive_icmp``); a connection that took one is serviced."""
        core = self._core
        now = _clock()
        for err in errors:
            route = core.receive_icmp(
                err.quoted,
                err.addr,
                port_unreachable=err.port_unreachable,
                errno=err.errno,
                now=now,
            )
            if route is not None:
                handle = cast(ConnectionHandle, route)
                if not handle.forgotten:
                    self.service(handle)
        if core.has_output:
            self._core_output()  # a path challenge to where the peer went

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._observer is not None:
            self._observer("recv", data, addr)
        core = self._core
        route = core.receive_datagram(data, addr, now=_clock())
        if core.has_output:
            self._core_output()
        if route is None:
            return
        handle = cast(ConnectionHandle, route)
        if self._locals is not None and handle.local is None:
            handle.local = self._locals.get(addr)  # fixed: the client sends to one address
        conn = handle.conn
        if (
            conn.has_events
            and self._dispatch_events(handle)
            and len(data) - HEADER_SIZE < conn.mss
            and conn.state is ESTABLISHED
        ):
            # A segment shorter than the MSS ends what the peer wrote: it is likely waiting
            # for an answer, and the application (woken just now) may write one within this
            # loop iteration. What else is due (an ACK, the timer) follows after that, off
            # the answer's path; the ACK rides on the answer if there is one.
            if not handle.tail_scheduled:
                handle.tail_scheduled = True
                self._loop.call_soon(self._service_tail, handle)
            return
        self.service(handle)

    def _service_tail(self, handle: ConnectionHandle) -> None:
        handle.tail_scheduled = False
        if self._core.route_for(handle.conn.local_cid) is handle:
            self.service(handle)

    def datagrams_received(self, batch: list[tuple[bytes, Address]]) -> None:
        """A wake-up's worth of datagrams (the fast I/O path): runs of consecutive data
        segments are merged (utcp.coalesce), every segment goes to its connection first, then
        each connection answers once, so a batch draws one cumulative ACK and the data that
        ACK lets out leaves as one burst."""
        if len(batch) == 1:
            self.datagram_received(*batch[0])  # the common case when latency-bound
            return
        core = self._core
        observer = self._observer
        decoded: list[Received] = []
        for data, addr in batch:
            if observer is not None:
                observer("recv", data, addr)
            packet = core.decode(data, addr)
            if packet is not None:
                decoded.append((packet, addr, len(data), 1))
        if self._coalesce:
            decoded = coalesce(decoded)
        touched: list[ConnectionHandle] = []
        ended: dict[int, ConnectionHandle] = {}  # connections that finished in this batch
        for packet, addr, size, segments in decoded:
            if ended and packet.dst_cid in ended:
                # It ended earlier in this batch: let it go first, as one-by-one delivery
                # would have, so that this datagram meets the rules for closed connections.
                self.service(ended.pop(packet.dst_cid))
            route = core.receive_packet(packet, addr, size, segments, now=_clock())
            if core.has_output:
                self._core_output()
            if route is None:
                continue
            handle = cast(ConnectionHandle, route)
            if self._locals is not None and handle.local is None:
                handle.local = self._locals.get(addr)  # fixed: see datagram_received
            if handle.conn.is_finished:
                ended[handle.conn.local_cid] = handle
            if not handle.in_batch:
                handle.in_batch = True
                touched.append(handle)
        for handle in touched:
            handle.in_batch = False
            if not handle.forgotten:
                self.service(handle)

    def _core_output(self) -> None:
        """Send the core endpoint's stateless answers and end the connections it evicted."""
        core = self._core
        locals_ = self._locals
        for data, addr in core.datagrams_to_send():
            if locals_ is not None and addr not in locals_:
                # Not an answer to a datagram being handed over: a path challenge (after an
                # ICMP error, or to a peer's previous address) leaves from the address its
                # connection's peer sends to.
                self._send(data, addr, self._local_for_path(addr))
            else:
                self._send(data, addr)
        while (event := core.next_event()) is not None:
            handle = cast(ConnectionHandle, event.route)
            if not handle.forgotten:
                self._end_background(handle)

    def _local_for_path(self, addr: Address) -> Local | None:
        """The local address of the connection validating a path to ``addr``, or whose
        peer is at ``addr`` while it validates another (the challenge to its previous
        address), if any."""
        for handle in self.handles():
            path = handle.path
            if path is not None and (path.addr == addr or handle.addr == addr):
                return handle.local
        return None

    # ------------------------------------------------------------------ connections

    def _new_handle(self, conn: Connection, addr: Address, client: bool) -> Route:
        """The core endpoint's route factory: a new connection's handle, and its trace."""
        self._trace(conn, "client" if client else "server", addr)
        return ConnectionHandle(conn, addr)

    def connect(self, addr: Address) -> ConnectionHandle:
        """Start an active open towards ``addr`` (None on a connected socket)."""
        handle = cast(ConnectionHandle, self._core.connect(addr, now=_clock()))
        self._core_output()  # a connection evicted to make room ends
        handle.waiter = self._loop.create_future()
        self.service(handle)
        return handle

    def _trace(self, conn: Connection, role: str, addr: Address) -> None:
        """Give a new connection its trace file when tracing is on (Config.trace_dir or the
        UTCP_TRACE environment variable; docs/TRACE.md)."""
        if self.config.trace_dir is None and TRACE_ENV not in os.environ:
            return
        transport = self._transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        if addr is None and transport is not None:
            addr = transport.get_extra_info("peername")
        now = _clock()
        tracer = tracer_for(
            self.config,
            cid=conn.local_cid,
            role=role,
            local=local,
            peer=addr,
            iss=conn.iss,
            mss=conn.mss,
            congestion=self.config.congestion_control,
            unix_time=time.time(),
            now=now,
        )
        if tracer is not None:
            conn.set_tracer(tracer, now=now)

    def _send(self, data: bytes, addr: Address, local: Local | None = None) -> None:
        self._send_burst([data], addr, local)

    def _send_burst(
        self, datagrams: list[bytes], addr: Address, local: Local | None = None
    ) -> None:
        """Send what one connection has, as one burst (GSO runs on the fast path), from the
        local address its peer sends to (``local``: where the socket receives for several)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        stats = self.stats
        stats.datagrams_sent += len(datagrams)
        if self._observer is not None:
            for data in datagrams:
                stats.bytes_sent += len(data)
                self._observer("send", data, addr)
        elif len(datagrams) == 1:
            stats.bytes_sent += len(datagrams[0])
        else:
            stats.bytes_sent += sum(map(len, datagrams))
        self._send_datagrams(datagrams, addr, local)

    # ------------------------------------------------------------------ driving the core

    def schedule_flush(self, handle: ConnectionHandle) -> None:
        """Send what the connection has once this loop iteration ends: writes coalesce."""
        if not handle.flush_scheduled:
            handle.flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush, handle)

    def send_now(self, handle: ConnectionHandle) -> None:
        """Send what the connection has at once, from inside a user call (a request leaves in
        this loop iteration, not the next); events wait for the scheduled flush, since they
        would re-enter the protocol that is calling us."""
        self._send_due(handle)
        self._rearm(handle)
        if handle.conn.has_events:
            self.schedule_flush(handle)  # delivered from the loop, not inside the user's call

    def _scheduled_flush(self, handle: ConnectionHandle) -> None:
        handle.flush_scheduled = False
        if self._core.route_for(handle.conn.local_cid) is handle:
            self.service(handle)
        elif handle.forgotten and handle.conn.has_events:
            # The connection ended (both FINs acknowledged) while its reader was paused:
            # what it held comes when reading resumes, then the EOF, as a closed TCP
            # socket's receive queue is still read to its end.
            self._dispatch_events(handle)

    def service(self, handle: ConnectionHandle) -> None:
        """After any input: deliver events, send datagrams, re-arm the timer.

        Events go first so that what the application does about them (pause reading, write a
        reply) shapes the datagrams: the ACK for a batch carries the window left after the
        delivery, and a reply rides with it."""
        conn = handle.conn
        if conn.has_events:
            self._dispatch_events(handle)
        self._send_due(handle)
        if conn.has_events:
            self._dispatch_events(handle)  # any the sending raised
        if conn.is_finished:
            self._forget(handle)
            return
        self._rearm(handle)
        transport = handle.transport
        if transport is not None:
            transport.update_flow_control()

    def _send_due(self, handle: ConnectionHandle) -> None:
        """Send, as one burst, what the connection has due now (within the anti-amplification
        limit while the peer's address is unvalidated)."""
        if handle.path is not None:
            self._core.complete_move(handle, _clock())  # a move to a new address now due
        datagrams = handle.conn.datagrams_to_send(now=_clock())
        if not handle.validated:
            datagrams = self._core.limit_amplification(handle, datagrams)
        if datagrams:
            self._send_burst(datagrams, handle.addr, handle.local)
            handle.last_sent = datagrams[-1]

    def _rearm(self, handle: ConnectionHandle) -> None:
        """Move the loop timer to the connection's deadline, only when that is earlier. Each
        ACK pushes the retransmission deadline later; leaving the loop timer where it is
        costs one early wake-up (which re-arms it) instead of a cancel and a new timer per
        ACK."""
        deadline = handle.conn.get_timer()
        if deadline is not None and (handle.deadline is None or deadline < handle.deadline):
            self._cancel_timer(handle)
            handle.deadline = deadline
            delay = deadline - _clock()
            if delay < 0.0:
                delay = 0.0
            elif self._coarse_timers:
                # A 1 ms timer wheel (uvloop) rounds to the nearest millisecond: round up, so
                # a timer never fires before its deadline and only re-arms itself.
                delay = math.ceil(delay * 1000.0) / 1000.0
            handle.timer = self._loop.call_later(delay, self._on_timer, handle)

    def _on_timer(self, handle: ConnectionHandle) -> None:
        handle.timer = None
        handle.deadline = None
        handle.conn.handle_timer(now=_clock())
        self.service(handle)

    def _cancel_timer(self, handle: ConnectionHandle) -> None:
        if handle.timer is not None:
            handle.timer.cancel()
            handle.timer = None
        handle.deadline = None

    def _dispatch_events(self, handle: ConnectionHandle) -> bool:
        """Deliver the connection's events; True if they were all data, taken by a transport."""
        conn = handle.conn
        data_only = True
        while (event := conn.next_event()) is not None:
            if isinstance(event, DataReceived):
                transport = handle.transport
                if transport is None:
                    data_only = False
                elif transport.lost:
                    # Data for a connection the application closed: as a closed TCP socket
                    # (RFC 1122 section 4.2.2.13), reset; the peer learns nobody reads.
                    conn.abort()
                    data_only = False
                else:
                    transport.deliver_data(event.data)
                continue
            data_only = False
            if isinstance(event, ConnectionEstablished):
                self._on_established(handle)
            elif isinstance(event, EofReceived):
                if handle.transport is not None:
                    handle.transport.deliver_eof()
            elif isinstance(event, FinAcknowledged):
                if handle.transport is not None and not conn.is_finished:
                    handle.transport.fin_acknowledged()
            elif isinstance(event, ConnectionClosed):
                self._on_closed(handle, event.reason)
        return data_only

    def _on_established(self, handle: ConnectionHandle) -> None:
        if handle.established:
            return
        handle.established = True
        if handle.waiter is None:
            # Accepted by a server endpoint.
            self._core.leave_backlog(handle)
            assert self._protocol_factory is not None
            try:
                protocol = self._protocol_factory()
            except Exception as exc:
                # As asyncio's servers do: report it and drop this connection (the client sees
                # a reset, not a connection nobody serves); never raise out of the endpoint.
                self._loop.call_exception_handler(
                    {"message": "utcp: server protocol factory raised", "exception": exc}
                )
                handle.conn.abort()
                for data in handle.conn.datagrams_to_send(now=_clock()):
                    self._send(data, handle.addr, handle.local)
                return
            transport = UtcpTransport(self, handle)
            handle.transport = transport
            _log.debug("connection_accepted", cid=f"{handle.conn.local_cid:08x}")
            transport.attach(protocol)
        else:
            handle.transport = UtcpTransport(self, handle)
            if not handle.waiter.done():
                handle.waiter.set_result(None)

    def _on_closed(self, handle: ConnectionHandle, reason: CloseReason) -> None:
        self._core.leave_backlog(handle)  # a passive open that never got established
        exc = self._close_exception(handle, reason)
        self._fail_waiter(
            handle, exc or ConnectionResetError(errno.ECONNRESET, "connection closed")
        )
        if handle.transport is not None:
            # asyncio reports a local abort() as connection_lost(None).
            lost_exc = None if reason is CloseReason.ABORTED else exc
            handle.transport.connection_closed(lost_exc, reason)
        if not handle.conn.is_finished:
            self._to_background(handle)  # TIME_WAIT: reported, not over

    def _close_exception(self, handle: ConnectionHandle, reason: CloseReason) -> OSError | None:
        """The exception a user sees for ``reason``, in words about this peer."""
        exc = reason.exception()
        if exc is None:
            return None
        peer = _peer_text(handle.addr if handle.addr is not None else self._peername())
        if reason is CloseReason.REFUSED and handle.reset_detail:
            return ConnectionRefusedError(
                errno.ECONNREFUSED, f"{exc.strerror}: {handle.reset_detail}"
            )
        if reason is CloseReason.REFUSED:
            return ConnectionRefusedError(errno.ECONNREFUSED, f"connection refused by {peer}")
        if reason is CloseReason.TIMEOUT or reason is CloseReason.IDLE:
            if handle.conn.window_never_opened:
                return TimeoutError(
                    errno.ETIMEDOUT, f"timed out: {peer} answers but never opened its window"
                )
            if handle.conn.path_too_small:
                base = self.config.base_datagram_bytes
                return TimeoutError(
                    errno.ETIMEDOUT,
                    f"timed out: {peer} answers, but no datagram of {base} bytes gets through"
                    " (the path's MTU is below Config.base_datagram_bytes)",
                )
            now = _clock()
            silent = max(0.0, now - handle.conn.last_heard)
            since = handle.conn.unacknowledged_since
            if reason is CloseReason.TIMEOUT and since is not None:
                waited = now - since
                if waited > 2 * silent + 1.0:
                    # Heard from lately (its probes, its ACKs): the path loses what we send.
                    return TimeoutError(
                        errno.ETIMEDOUT,
                        f"timed out: {peer} answers, but acknowledged none of our data for"
                        f" {waited:.0f} s (last heard {silent:.0f} s ago)",
                    )
            return TimeoutError(errno.ETIMEDOUT, f"no answer from {peer} for {silent:.0f} s")
        if reason is CloseReason.UNREACHABLE:
            return ConnectionResetError(
                errno.ECONNRESET,
                f"{peer} is unreachable: nothing listens there any more (ICMP port unreachable)",
            )
        if reason is CloseReason.RESET:
            # A server at max_connections resets a client it let in by SYN cookie with why.
            why = f": {handle.reset_detail}" if handle.reset_detail else ""
            return ConnectionResetError(errno.ECONNRESET, f"connection reset by {peer}{why}")
        return exc

    def _peername(self) -> Address:
        transport = self._transport
        return transport.get_extra_info("peername") if transport is not None else None

    def _to_background(self, handle: ConnectionHandle) -> None:
        """The application is done with this connection, which winds down on its own; on an
        endpoint being closed it is not waited for."""
        first = self._core.released_count == 0
        if self._core.release(handle) and first:
            call_at_shutdown(id(self), self._close_lingering)
        if self._closing:
            # Not from inside the event dispatch: what the connection has to send (the final
            # ACK that took it to TIME_WAIT) goes out first.
            self._loop.call_soon(self._maybe_close_socket)

    def transport_released(self, handle: ConnectionHandle) -> None:
        """The transport gave up the connection (connection_lost) before it ended."""
        self._to_background(handle)

    def call_when_released(
        self, callback: Callable[..., object], *args: Any, finished: bool = True
    ) -> None:
        """Call ``callback(*args)`` soon; for a finished connection of a client endpoint not
        before its socket is closed, so that ``connection_lost`` (and a stream's
        ``wait_closed()``) mean the descriptor is released, as with asyncio's own transports.
        A connection still winding down (TIME_WAIT) keeps the socket a while longer."""
        if finished and self._single and self._transport is not None:
            self._until_released.append((callback, args))
        else:
            self._loop.call_soon(callback, *args)

    def _fail_waiter(self, handle: ConnectionHandle, exc: BaseException) -> None:
        if handle.waiter is not None and not handle.waiter.done():
            handle.waiter.set_exception(exc)

    def _forget(self, handle: ConnectionHandle) -> None:
        if handle.forgotten:
            return  # a callback's abort() already ended it, inside the same service()
        handle.forgotten = True
        if handle.conn.tracer is not None:
            handle.conn.tracer.close()
        self._core.forget(handle, now=_clock())
        self._cancel_timer(handle)
        if self._single and not self._core.connection_count:
            # A client endpoint ends with its connection, TIME_WAIT included: its socket is
            # released then, whether or not anyone waits for it.
            self._closing = True
            self._core.stop_accepting()
        if self._closing:
            self._maybe_close_socket()

    def _maybe_close_socket(self) -> None:
        """Close the socket of a closing endpoint once nothing holds it.  A single-connection
        client's socket lasts as long as its connection.  A server or client endpoint closed
        by the application is done (``wait_done``) once the connections the application
        holds have ended.  Those it closed whose FIN is acknowledged run on in the background
        until they end, as the kernel keeps the orphaned connections of a closed listening
        socket: FIN_WAIT_2 waits for the peer's FIN at most ``fin_wait_2_timeout_s``
        (``Connection.orphan``), and TIME_WAIT re-acknowledges the FIN a peer retransmits if
        our final ACK was lost.  The socket closes when the last has ended.  (Cutting them
        short reset peers that had not yet read what we sent, or closed: their reads raised
        ``ConnectionResetError``.)"""
        if self._cutting or self._transport is None:
            return
        core = self._core
        if core.cookie_grace(_clock()):
            return  # cookie clients may still complete their handshakes: _reset_handshakes
        if self._single:
            if core.connection_count:
                return
        elif core.connection_count > core.released_count:
            return
        if not self._done.done():
            self._done.set_result(None)
        if not core.connection_count:
            self._close_socket()
        else:
            _forget_dead_loops()
            _LINGERING[id(self)] = self

    def bound_to(self, family: int, port: int) -> bool:
        """Whether this endpoint's socket is of ``family`` and bound to ``port``."""
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return sock is not None and sock.family == family and sock.getsockname()[1] == port

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this endpoint runs on."""
        return self._loop

    def loop_closed(self) -> bool:
        """Whether this endpoint's event loop has been closed."""
        return self._loop.is_closed()

    def abandon(self) -> bool:
        """Forget this closed endpoint whose loop is gone; close its socket when it is our
        own (the fast path's), True then.  asyncio's and uvloop's transports cannot close
        theirs without the loop, and keep the port until they are collected."""
        _LINGERING.pop(id(self), None)
        transport = self._transport
        if isinstance(transport, FastDatagramTransport):
            transport.release_socket()
            return True
        return False

    def cut_lingering(self) -> None:
        """Close the socket of this closed endpoint now, cutting short the connections still
        winding down on it (as the process's exit would)."""
        if self._closing and self._transport is not None:
            self._close_socket()

    def _close_lingering(self) -> None:
        """The event loop is shutting down: a socket held only by connections winding down
        (TIME_WAIT) closes now, as it would if the process exited, rather than at garbage
        collection.  Connections the application still holds are left to it."""
        core = self._core
        if self._transport is not None and core.connection_count == core.released_count:
            self._close_socket()

    def _end_background(self, handle: ConnectionHandle) -> None:
        """Cut a background connection short: reset an orphan still exchanging segments,
        let TIME_WAIT end silently."""
        conn = handle.conn
        conn.abort()  # RST unless in TIME_WAIT, whose close is already reported
        self._send_due(handle)
        if conn.has_events:
            self._dispatch_events(handle)
        self._forget(handle)

    def totals(self) -> dict[str, object]:
        """The endpoint's counters with the drops of its live connections folded in: every
        datagram this socket discarded, whoever discarded it."""
        out = self.stats.snapshot()
        dropped = dict(self.stats.dropped)
        for route in self._core.routes():
            for key, n in route.conn.drops.items():
                dropped[key] = dropped.get(key, 0) + n
        out["dropped"] = dropped
        out["connections"] = self._core.connection_count
        out["io_path"] = self.io_path
        return out

    # ------------------------------------------------------------------ lifetime

    def now(self) -> float:
        """The clock the connections of this endpoint run on (``time.monotonic()``)."""
        return _clock()

    @property
    def transport(self) -> DatagramIO | None:
        """The UDP transport, None once closed."""
        return self._transport

    @property
    def io_path(self) -> str:
        """The datagram I/O in use: ``"fast"`` (with ``+gso``/``+gro`` where the kernel
        offloads) or ``"portable"``; empty once closed."""
        transport = self._transport
        if transport is None:
            return ""
        if isinstance(transport, FastDatagramTransport):
            return "+".join(filter(None, ("fast", transport.offload)))
        return "portable"

    @property
    def serves(self) -> bool:
        """A server's endpoint (it accepts connections): on a wildcard address its replies
        name their source (``FastDatagramTransport.pktinfo``); a client's source address is
        the route's, which may change under it."""
        return self._protocol_factory is not None

    @property
    def closing(self) -> bool:
        """Whether ``close()`` (or the end of a single client connection) has begun to close
        the endpoint: it accepts and opens no more connections."""
        return self._closing

    @property
    def connection_count(self) -> int:
        """Connections not yet finished (TIME_WAIT included)."""
        return self._core.connection_count

    def handles(self) -> list[ConnectionHandle]:
        """The connections not yet finished (a copy)."""
        return [cast(ConnectionHandle, route) for route in self._core.routes()]

    def stop_accepting(self) -> None:
        """Refuse new connections; existing ones carry on."""
        self._core.stop_accepting()

    def start_accepting(self) -> None:
        """Accept connections (a server endpoint made with its serving deferred)."""
        if not self._closing and self._protocol_factory is not None:
            self._core.start_accepting()

    def close(self) -> None:
        """Accept no more connections and close the socket once the application's
        connections have ended and those it closed have finished winding down in the
        background (FIN_WAIT_2 at most ``fin_wait_2_timeout_s``, TIME_WAIT)."""
        self._closing = True
        now = _clock()
        self._core.stop_accepting(now=now)
        if self._core.cookie_grace(now) or any(handle.in_backlog for handle in self.handles()):
            self._loop.call_later(HANDSHAKE_GRACE_S, self._reset_handshakes)
        self._maybe_close_socket()

    def _reset_handshakes(self) -> None:
        """The closed endpoint's handshakes still under way ``HANDSHAKE_GRACE_S`` after the
        close were never handed to the application, which will not wait for them: reset, as
        a closed TCP listener drops its half-open connections.  (Left to run, one whose
        client had gone held ``wait_closed()`` for the SYN timer, 71 s.)  The grace lets a
        client whose connect has just completed on its side (its handshake ACK on the way)
        be served, rather than reset: those whose handshake went through SYN cookies too
        (their ACKs are taken until then, ``Endpoint.cookie_grace``), so the socket stays
        open that long."""
        if self._transport is None:
            return
        if self._core.cookie_grace(_clock()):  # a coarse timer fired a little early
            self._loop.call_later(0.01, self._reset_handshakes)
            return
        for handle in self.handles():
            if handle.in_backlog and handle.conn.close_reason is None:
                handle.conn.abort()
                self.service(handle)
        self._maybe_close_socket()

    def abort_all(self) -> None:
        """Reset every connection and close the socket now."""
        for handle in self.handles():
            if handle.conn.close_reason is None:
                handle.conn.abort()
                self.service(handle)
        self._closing = True
        self._core.stop_accepting()
        self._close_socket()

    def _close_socket(self) -> None:
        self._cutting = True
        try:
            for route in self._core.released():
                handle = cast(ConnectionHandle, route)
                if not handle.forgotten:
                    self._end_background(handle)
        finally:
            self._cutting = False
        for handle in self.handles():
            self._cancel_timer(handle)
            if handle.conn.tracer is not None:
                handle.conn.tracer.close()
        self._core.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the UDP socket is closed (after TIME_WAIT, when a connection is in it)."""
        await asyncio.shield(self._closed)

    async def wait_done(self) -> None:
        """Wait until the endpoint is closing and every connection the application holds has
        ended; TIME_WAIT may still hold the socket a while (``wait_closed``), and when
        nothing does, this also waits for the socket to be closed (a loop turn)."""
        await asyncio.shield(self._done)
        if not self._core.connection_count:
            await asyncio.shield(self._closed)
