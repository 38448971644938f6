"""One UDP socket and the utcp connections it carries.

The endpoint is an asyncio ``DatagramProtocol``: it decodes each datagram once, hands it to the
connection named by its destination connection id (or, for a SYN, to a new server connection),
sends what the sans-I/O core returns, and keeps one loop timer per connection, moved only when
that connection's deadline changes.  Malformed or stray datagrams are counted and dropped; they
never raise out of ``datagram_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, cast

from ..config import Config
from ..connection import Connection, new_connection_id, reset_for
from ..events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EofReceived,
)
from ..log import get_logger
from ..packet import Flag, Packet, PacketError, decode
from ..state import ConnectionState

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)
Observer = Callable[[str, bytes, Address], None]

_log = get_logger()
_SOCKET_BUFFER_BYTES = 4 << 20
_EXTRA_FINAL_ACKS = 2
_RECENTLY_CLOSED_MAX = 4096


class EndpointStats:
    """Datagram counters of one endpoint (all connections together)."""

    __slots__ = (
        "datagrams_received",
        "datagrams_sent",
        "dropped_backlog_full",
        "dropped_malformed",
        "dropped_unknown_connection",
        "dropped_wrong_address",
    )

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.dropped_malformed = 0
        self.dropped_unknown_connection = 0
        self.dropped_wrong_address = 0
        self.dropped_backlog_full = 0


class ConnectionHandle:
    """The endpoint's record of one connection: the core, its peer address, timer and transport."""

    __slots__ = (
        "addr",
        "conn",
        "deadline",
        "established",
        "flush_scheduled",
        "last_sent",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, conn: Connection, addr: Address) -> None:
        self.conn = conn
        self.addr = addr
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.transport: Any = None  # UtcpTransport once established
        self.waiter: asyncio.Future[None] | None = None  # connect() waits on it
        self.flush_scheduled = False
        self.established = False
        self.last_sent: bytes | None = None


class Endpoint(asyncio.DatagramProtocol):
    """Demultiplexes the datagrams of one UDP socket to its utcp connections."""

    def __init__(
        self,
        *,
        config: Config,
        protocol_factory: Callable[[], asyncio.BaseProtocol] | None = None,
        backlog: int = 100,
        observer: Observer | None = None,
        persistent: bool = False,
    ) -> None:
        self.config = config.validate()
        self._loop = asyncio.get_running_loop()
        self._protocol_factory = protocol_factory  # set: this endpoint accepts connections
        self._accepting = protocol_factory is not None
        # A single-connection client endpoint ends with its connection; a persistent one (many
        # outgoing connections over one socket) and a server's stay open until closed.
        self._single = protocol_factory is None and not persistent
        self._backlog = backlog
        self._observer = observer
        self._transport: asyncio.DatagramTransport | None = None
        self._handles: dict[int, ConnectionHandle] = {}
        self._syn_index: dict[tuple[Address, int], int] = {}  # (addr, peer cid) -> local cid
        self._half_open = 0
        self._recently_closed: dict[int, float] = {}  # cid -> until when bare ACKs are ignored
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self._until_released: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.stats = EndpointStats()

    # ------------------------------------------------------------------ DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bursts of a whole congestion window arrive at once: room for them avoids
            # self-inflicted loss in the kernel's queue. Best effort; the kernel may cap it.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER_BYTES)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for handle in list(self._handles.values()):
            self._cancel_timer(handle)
            if handle.conn.close_reason is None:
                handle.conn.abort()
                self._dispatch_events(handle)
        self._handles.clear()
        for callback, args in self._until_released:
            self._loop.call_soon(callback, *args)  # after the loop has closed the socket
        self._until_released.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # On a connected (client) socket the kernel reports ICMP port unreachable here: nobody
        # listens at the peer's address, so a pending connect is refused at once.
        if isinstance(exc, ConnectionRefusedError) and self._single:
            for handle in list(self._handles.values()):
                if handle.conn.state is ConnectionState.SYN_SENT and handle.waiter is not None:
                    handle.conn.abort()
                    self._fail_waiter(handle, ConnectionRefusedError("nobody listens there"))
                    self._dispatch_events(handle)
                    self._forget(handle)
        _log.debug("socket_error", error=repr(exc))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.stats.datagrams_received += 1
        if self._observer is not None:
            self._observer("recv", data, addr)
        try:
            packet = decode(data)
        except PacketError as exc:
            self.stats.dropped_malformed += 1
            _log.debug("datagram_dropped", reason=str(exc), peer=str(addr))
            return
        handle = self._handles.get(packet.dst_cid) if packet.dst_cid else None
        if handle is None:
            if packet.dst_cid == 0 and packet.flags & Flag.SYN and not packet.flags & Flag.ACK:
                handle = self._handle_for_syn(packet, addr)
            if handle is None:
                self.stats.dropped_unknown_connection += 1
                if not self._recently_closed_ack(packet):
                    self._reset(packet, addr)
                return
        elif addr != handle.addr and handle.addr is not None:
            self.stats.dropped_wrong_address += 1
            _log.debug("datagram_dropped", reason="address does not match connection")
            return
        handle.conn.receive_packet(packet, now=self._loop.time())
        self.service(handle)

    # ------------------------------------------------------------------ connections

    def _new_cid(self) -> int:
        while True:
            cid = new_connection_id()
            if cid not in self._handles:
                return cid

    def _handle_for_syn(self, packet: Packet, addr: Address) -> ConnectionHandle | None:
        key = (addr, packet.src_cid)
        cid = self._syn_index.get(key)
        if cid is not None and cid in self._handles:
            return self._handles[cid]  # a retransmitted SYN
        if not self._accepting or self._closing:
            return None
        if self._half_open >= self._backlog:
            self.stats.dropped_backlog_full += 1
            _log.info("syn_dropped", reason="backlog full", backlog=self._backlog)
            return None
        conn = Connection(self.config, local_cid=self._new_cid())
        conn.listen()
        handle = ConnectionHandle(conn, addr)
        self._handles[conn.local_cid] = handle
        self._syn_index[key] = conn.local_cid
        self._half_open += 1
        return handle

    def connect(self, addr: Address) -> ConnectionHandle:
        """Start an active open towards ``addr`` (None on a connected socket)."""
        conn = Connection(self.config, local_cid=self._new_cid())
        handle = ConnectionHandle(conn, addr)
        handle.waiter = self._loop.create_future()
        self._handles[conn.local_cid] = handle
        conn.connect(now=self._loop.time())
        self.service(handle)
        return handle

    def _reset(self, packet: Packet, addr: Address) -> None:
        rst = reset_for(packet)
        if rst is not None:
            self._send(rst, addr)

    def _send(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.stats.datagrams_sent += 1
        if self._observer is not None:
            self._observer("send", data, addr)
        if addr is None:
            transport.sendto(data)
        else:
            transport.sendto(data, addr)

    # ------------------------------------------------------------------ driving the core

    def schedule_flush(self, handle: ConnectionHandle) -> None:
        """Send what the connection has once this loop iteration ends: writes coalesce."""
        if not handle.flush_scheduled:
            handle.flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush, handle)

    def _scheduled_flush(self, handle: ConnectionHandle) -> None:
        handle.flush_scheduled = False
        if self._handles.get(handle.conn.local_cid) is handle:
            self.service(handle)

    def service(self, handle: ConnectionHandle) -> None:
        """After any input: send datagrams, deliver events, re-arm the timer."""
        conn = handle.conn
        now = self._loop.time()
        for data in conn.datagrams_to_send(now=now):
            self._send(data, handle.addr)
            handle.last_sent = data
        self._dispatch_events(handle)
        if conn.is_finished:
            self._forget(handle)
            return
        deadline = conn.get_timer()
        # Re-arm only when the deadline moves earlier. Each ACK pushes the retransmission
        # deadline later; leaving the loop timer where it is costs one early wake-up (which
        # re-arms it) instead of a cancel and a new timer per ACK.
        if deadline is not None and (handle.deadline is None or deadline < handle.deadline):
            self._cancel_timer(handle)
            handle.deadline = deadline
            handle.timer = self._loop.call_at(deadline, self._on_timer, handle)
        transport = handle.transport
        if transport is not None:
            transport._update_flow_control()

    def _on_timer(self, handle: ConnectionHandle) -> None:
        handle.timer = None
        handle.deadline = None
        handle.conn.handle_timer(now=self._loop.time())
        self.service(handle)

    def _cancel_timer(self, handle: ConnectionHandle) -> None:
        if handle.timer is not None:
            handle.timer.cancel()
            handle.timer = None
        handle.deadline = None

    def _dispatch_events(self, handle: ConnectionHandle) -> None:
        conn = handle.conn
        while (event := conn.next_event()) is not None:
            if isinstance(event, DataReceived):
                if handle.transport is not None:
                    handle.transport._data_received(event.data)
            elif isinstance(event, ConnectionEstablished):
                self._on_established(handle)
            elif isinstance(event, EofReceived):
                if handle.transport is not None:
                    handle.transport._eof_received()
            elif isinstance(event, ConnectionClosed):
                self._on_closed(handle, event.reason)

    def _on_established(self, handle: ConnectionHandle) -> None:
        if handle.established:
            return
        handle.established = True
        from .transport import UtcpTransport

        if handle.waiter is None:
            # Accepted by a server endpoint.
            self._half_open -= 1
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
                for data in handle.conn.datagrams_to_send(now=self._loop.time()):
                    self._send(data, handle.addr)
                return
            handle.transport = UtcpTransport(self, handle, protocol)
            _log.debug("connection_accepted", cid=f"{handle.conn.local_cid:08x}")
            handle.transport._call(protocol.connection_made, handle.transport)
        else:
            handle.transport = UtcpTransport(self, handle, None)
            if not handle.waiter.done():
                handle.waiter.set_result(None)

    def _on_closed(self, handle: ConnectionHandle, reason: CloseReason) -> None:
        if not handle.established and handle.waiter is None:
            self._half_open -= 1
        exc = reason.exception()
        self._fail_waiter(handle, exc or ConnectionResetError("connection closed"))
        if handle.transport is not None:
            # asyncio reports a local abort() as connection_lost(None).
            lost_exc = None if reason is CloseReason.ABORTED else exc
            handle.transport._connection_closed(lost_exc, reason)
        if self._single and not self._live_connections():
            # A client endpoint ends with its connection; the connection ids keep a later
            # connection from ever taking this one's stray datagrams, so TIME_WAIT is skipped.
            # Without TIME_WAIT nobody re-acknowledges a retransmitted FIN, so the final ACK
            # goes out twice more: a peer stuck in LAST_ACK would otherwise wait out its
            # retransmissions.
            if handle.conn.state is ConnectionState.TIME_WAIT and handle.last_sent is not None:
                for _ in range(_EXTRA_FINAL_ACKS):
                    self._send(handle.last_sent, handle.addr)
            self._loop.call_soon(self.close)

    def call_when_released(self, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` soon; on a client endpoint not before its socket is closed,
        so that ``connection_lost`` (and a stream's ``wait_closed()``) mean the descriptor is
        released, as with asyncio's own transports."""
        if self._single and self._transport is not None:
            self._until_released.append((callback, args))
        else:
            self._loop.call_soon(callback, *args)

    def _fail_waiter(self, handle: ConnectionHandle, exc: BaseException) -> None:
        if handle.waiter is not None and not handle.waiter.done():
            handle.waiter.set_exception(exc)

    def _recently_closed_ack(self, packet: Packet) -> bool:
        """A bare ACK for a connection that closed in order moments ago (the copies of a
        client's final ACK) needs no RST: the connection ended cleanly on both sides."""
        expiry = self._recently_closed.get(packet.dst_cid)
        if expiry is None:
            return False
        if self._loop.time() > expiry:
            del self._recently_closed[packet.dst_cid]
            return False
        return packet.flags == Flag.ACK and not packet.payload

    def _forget(self, handle: ConnectionHandle) -> None:
        if handle.conn.close_reason is CloseReason.CLOSED:
            closed = self._recently_closed
            if len(closed) >= _RECENTLY_CLOSED_MAX:
                del closed[next(iter(closed))]  # the oldest entry
            closed[handle.conn.local_cid] = self._loop.time() + 2 * self.config.msl_s
        self._cancel_timer(handle)
        if self._handles.get(handle.conn.local_cid) is handle:
            del self._handles[handle.conn.local_cid]
        # The SYN index lives as long as the connection: a duplicate or late SYN must reach it
        # (and draw a challenge ACK), not open a second, never-completed connection.
        key = (handle.addr, handle.conn.peer_cid)
        if self._syn_index.get(key) == handle.conn.local_cid:
            del self._syn_index[key]
        if self._closing and not self._connections_to_wait_for():
            self._close_socket()

    def _connections_to_wait_for(self) -> int:
        """A closing server waits out TIME_WAIT (2 MSL, short by default) so that a peer
        whose last ACK was lost still gets its FIN acknowledged; a single-connection client
        does not."""
        if not self._single:
            return len(self._handles)
        return self._live_connections()

    def _live_connections(self) -> int:
        return sum(1 for h in self._handles.values() if h.conn.close_reason is None)

    # ------------------------------------------------------------------ lifetime

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        """The UDP transport, None once closed."""
        return self._transport

    @property
    def connection_count(self) -> int:
        """Connections not yet finished (TIME_WAIT included)."""
        return len(self._handles)

    def stop_accepting(self) -> None:
        """Refuse new connections; existing ones carry on."""
        self._accepting = False

    def close(self) -> None:
        """Close the socket once every connection has ended (on a server, TIME_WAIT too)."""
        self._closing = True
        self._accepting = False
        if not self._connections_to_wait_for():
            self._close_socket()

    def abort_all(self) -> None:
        """Reset every connection and close the socket now."""
        for handle in list(self._handles.values()):
            if handle.conn.close_reason is None:
                handle.conn.abort()
                self.service(handle)
        self._closing = True
        self._close_socket()

    def _close_socket(self) -> None:
        for handle in list(self._handles.values()):
            self._cancel_timer(handle)
        self._handles.clear()
        self._syn_index.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the UDP socket is closed."""
        await asyncio.shield(self._closed)
