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
import errno
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from ..coalesce import Received, coalesce
from ..config import Config
from ..connection import Connection, new_connection_id, reset_for
from ..cookies import SynCookies, pack_options, unpack_options
from ..events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    DropReason,
    EofReceived,
    FinAcknowledged,
)
from ..log import get_logger
from ..packet import (
    HEADER_SIZE,
    MAX_WINDOW_FIELD,
    Flag,
    Packet,
    PacketError,
    decode,
    decode_quoted,
    encode,
    wscale_for,
)
from ..seqnum import SEQ_MASK
from ..state import ESTABLISHED, SYN_RECEIVED, SYN_SENT, SYNCHRONIZED, TIME_WAIT
from ..trace import TRACE_ENV, tracer_for
from .dgram import (
    DatagramIO,
    FastDatagramTransport,
    burst_sender,
    drain_transport_errors,
    set_dont_fragment,
)
from .errqueue import SocketError
from .shutdown import call_at_shutdown, cancel_at_shutdown

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)
Observer = Callable[[str, bytes, Address], None]

_log = get_logger()
_clock: Final = time.monotonic  # what the core is given as ``now`` (see Endpoint.__init__)
_SOCKET_BUFFER_BYTES: Final = 4 << 20
_RECENTLY_CLOSED_MAX: Final = 4096
_AMPLIFICATION_FACTOR: Final = 3  # RFC 9000 section 8.1
_COOKIE_GRACE_S: Final = 64.0  # a cookie is valid for one to two of these
_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)
_RST: Final = int(Flag.RST)


def _no_socket(datagrams: list[bytes], addr: Address) -> None:
    """The sender before the socket is made (``_send_burst`` checks the transport first)."""


def _same_address(a: Address, b: Address) -> bool:
    """Whether two socket addresses name the same host and port (IPv6 addresses carry flow
    and scope fields that an error-queue read may fill differently)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return bool(a[:2] == b[:2])
    return bool(a == b)


def _peer_text(addr: Address) -> str:
    """``host:port`` (``[host]:port`` for IPv6) for messages a user reads."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return "the peer" if addr is None else str(addr)


def _addr_key(addr: Address) -> bytes:
    """An address as bytes for the cookie hash."""
    return repr(addr[:2] if isinstance(addr, tuple) else addr).encode()


# EndpointStats' fields, for its snapshot (a compiled class has no __slots__ to list them).
_ENDPOINT_COUNTERS: Final = (
    "amplification_limited",
    "bytes_received",
    "bytes_sent",
    "connections_refused",
    "datagrams_received",
    "datagrams_sent",
    "dropped",
    "icmp_errors",
    "icmp_errors_ignored",
    "resets_rate_limited",
    "resets_sent",
    "send_errors",
    "syn_cookies_accepted",
    "syn_cookies_sent",
)


class EndpointStats:
    """Datagram counters of one endpoint (all connections together).

    ``dropped`` counts datagrams the endpoint itself discarded, by ``DropReason`` value;
    datagrams a connection discarded are in that connection's own stats until it ends, then
    added here.
    """

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.dropped: dict[str, int] = {}
        self.resets_sent = 0
        self.resets_rate_limited = 0
        self.syn_cookies_sent = 0
        self.syn_cookies_accepted = 0
        self.connections_refused = 0  # SYNs refused at max_connections
        self.amplification_limited = 0  # datagrams held back by the 3x limit
        self.send_errors = 0  # datagrams the kernel refused as too big for the path (EMSGSIZE)
        self.icmp_errors = 0  # ICMP errors read from the socket's error queue (Linux)
        self.icmp_errors_ignored = 0  # of those: no connection took them (failed the checks)

    def count_drop(self, reason: DropReason, addr: Address, count: int = 1) -> None:
        """Count discarded datagrams and log why."""
        key = reason.value
        self.dropped[key] = self.dropped.get(key, 0) + count
        _log.debug("datagram_dropped", reason=key, peer=str(addr))

    def add_drops(self, drops: dict[str, int]) -> None:
        """Fold a finished connection's drop counters into the totals."""
        for key, n in drops.items():
            self.dropped[key] = self.dropped.get(key, 0) + n

    def snapshot(self) -> dict[str, object]:
        """Every counter as a plain dict (a copy)."""
        out: dict[str, object] = {name: getattr(self, name) for name in _ENDPOINT_COUNTERS}
        out["dropped"] = dict(self.dropped)
        return out


class ConnectionHandle:
    """The endpoint's record of one connection: the core, its peer address, timer and transport."""

    __slots__ = (
        "addr",
        "conn",
        "deadline",
        "established",
        "flush_scheduled",
        "forgotten",
        "in_batch",
        "last_sent",
        "reset_detail",
        "rx_bytes",
        "tail_scheduled",
        "timer",
        "transport",
        "tx_bytes",
        "validated",
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
        self.tail_scheduled = False  # a service() after the application's turn (see above)
        self.in_batch = False  # already due a service() at the end of a received batch
        self.forgotten = False
        self.established = False
        self.last_sent: bytes | None = None
        self.reset_detail = ""  # text a refusing peer put in its RST
        # Anti-amplification (RFC 9000 section 8.1): until a passive open is validated by the
        # handshake, at most three times the bytes received from that address go back to it.
        self.validated = True
        self.rx_bytes = 0
        self.tx_bytes = 0


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
    ) -> None:
        self.config = config.validate()
        self._loop = asyncio.get_running_loop()
        # The core's clock is time.monotonic(), not loop.time(): uvloop's loop time moves in
        # whole milliseconds, which would make every RTT on a fast path 0 or 1 ms.  Loop
        # timers are set with call_later from it.
        self._coarse_timers = type(self._loop).__module__.startswith("uvloop")
        self._protocol_factory = protocol_factory  # set: this endpoint accepts connections
        self._accepting = protocol_factory is not None
        # A single-connection client endpoint ends with its connection; a persistent one (many
        # outgoing connections over one socket) and a server's stay open until closed.
        self._single = protocol_factory is None and not persistent
        self._backlog = backlog
        self._observer = observer
        self._transport: DatagramIO | None = None
        self._handles: dict[int, ConnectionHandle] = {}
        # Connections the application is done with (its transport is lost) that still wind
        # down here (FIN_WAIT_2, TIME_WAIT, an orphan's last retransmissions), oldest first:
        # the first to go when max_connections is reached, as Linux drops TIME_WAIT buckets.
        self._background: dict[int, ConnectionHandle] = {}
        self._syn_index: dict[tuple[Address, int], int] = {}  # (addr, peer cid) -> local cid
        self._half_open = 0
        self._recently_closed: dict[int, float] = {}  # cid -> until when bare ACKs are ignored
        self._closed: asyncio.Future[None] = self._loop.create_future()
        # Closing, and no connection the application holds is left (wait_done()).
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self._cutting = False  # _close_socket is ending background connections
        self._until_released: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._cookies = SynCookies(lifetime_s=_COOKIE_GRACE_S) if self.config.syn_cookies else None
        self._cookie_sent_at: float | None = None
        self._reset_tokens = self.config.max_resets_per_s
        self._reset_refill_at = _clock()
        self.stats = EndpointStats()
        self._send_datagrams: Callable[[list[bytes], Address], None] = _no_socket
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
        self._transport = None
        cancel_at_shutdown(id(self))
        self._background.clear()
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
        if not self._done.done():
            self._done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # On a connected (client) socket the kernel reports ICMP port unreachable here: nobody
        # listens at the peer's address, so a pending connect is refused at once.
        if isinstance(exc, ConnectionRefusedError) and self._single:
            for handle in list(self._handles.values()):
                if handle.conn.state is SYN_SENT and handle.waiter is not None:
                    handle.conn.abort()
                    self._fail_waiter(handle, ConnectionRefusedError("nobody listens there"))
                    self._dispatch_events(handle)
                    self._forget(handle)
        if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
            self.stats.send_errors += 1  # too big for the path: a lost probe, as on the wire
        _log.debug("socket_error", error=repr(exc))
        transport = self._transport
        if transport is not None and not isinstance(transport, FastDatagramTransport):
            # asyncio's transport reports the socket error; the ICMP message that caused it
            # waits in the error queue (IP_RECVERR), which must be read.
            errors = drain_transport_errors(transport)
            if errors:
                self.errors_received(errors)

    def errors_received(self, errors: list[SocketError]) -> None:
        """ICMP errors about datagrams this socket sent (Linux's error queue).  A port
        unreachable quoting one of our datagrams goes to the connection it names, from the
        address it was sent to; the connection checks the rest (``receive_unreachable``).
        Anything else is counted and ignored."""
        stats = self.stats
        now = _clock()
        for err in errors:
            stats.icmp_errors += 1
            handle = None
            if err.port_unreachable:
                try:
                    quoted = decode_quoted(err.quoted)
                except PacketError:
                    quoted = None
                if quoted is not None:
                    handle = self._handles.get(quoted.src_cid)
            if (
                handle is None
                or quoted is None
                or (handle.addr is not None and not _same_address(handle.addr, err.addr))
                or not handle.conn.receive_unreachable(quoted, now=now)
            ):
                stats.icmp_errors_ignored += 1
                _log.debug("icmp_error_ignored", errno=err.errno, peer=str(err.addr))
                continue
            _log.debug("icmp_port_unreachable", cid=f"{quoted.src_cid:08x}", peer=str(err.addr))
            if not handle.forgotten:
                self.service(handle)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        handle = self._receive(data, addr)
        if handle is None:
            return
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
        if self._handles.get(handle.conn.local_cid) is handle:
            self.service(handle)

    def datagrams_received(self, batch: list[tuple[bytes, Address]]) -> None:
        """A wake-up's worth of datagrams (the fast I/O path): runs of consecutive data
        segments are merged (utcp.coalesce), every segment goes to its connection first, then
        each connection answers once, so a batch draws one cumulative ACK and the data that
        ACK lets out leaves as one burst."""
        if len(batch) == 1:
            self.datagram_received(*batch[0])  # the common case when latency-bound
            return
        decoded: list[Received] = []
        for data, addr in batch:
            packet = self._decode(data, addr)
            if packet is not None:
                decoded.append((packet, addr, len(data), 1))
        if self._coalesce:
            decoded = coalesce(decoded)
        touched: list[ConnectionHandle] = []
        for packet, addr, size, segments in decoded:
            handle = self._deliver(packet, addr, size, segments)
            if handle is not None and not handle.in_batch:
                handle.in_batch = True
                touched.append(handle)
        for handle in touched:
            handle.in_batch = False
            if not handle.forgotten:
                self.service(handle)

    def _receive(self, data: bytes, addr: Address) -> ConnectionHandle | None:
        """Decode one datagram and feed it to its connection (see ``_deliver``)."""
        packet = self._decode(data, addr)
        return None if packet is None else self._deliver(packet, addr, len(data), 1)

    def _decode(self, data: bytes, addr: Address) -> Packet | None:
        """Count a datagram and decode it; None (counted as dropped) if it is malformed."""
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        if self._observer is not None:
            self._observer("recv", data, addr)
        try:
            return decode(data)
        except PacketError as exc:
            stats.count_drop(exc.reason, addr)
            return None

    def _deliver(
        self, packet: Packet, addr: Address, size: int, segments: int
    ) -> ConnectionHandle | None:
        """Feed a packet to its connection; the handle to service after, or None when the
        packet was answered statelessly or dropped (and counted)."""
        stats = self.stats
        handle = self._handles.get(packet.dst_cid) if packet.dst_cid else None
        if handle is not None and handle.conn.is_finished:
            # It ended earlier in this batch: let it go first, as one-by-one delivery would
            # have, so that this datagram meets the endpoint's rules for closed connections.
            self.service(handle)
            handle = None
        if handle is None:
            flags = packet.flags
            if packet.dst_cid == 0 and flags & _SYN and not flags & _ACK:
                handle = self._handle_for_syn(packet, addr)
                if handle is None:
                    return None  # answered (cookie, refusal) or dropped, and counted
            elif self._cookies is not None and flags & _ACK and not flags & (_SYN | _RST):
                handle = self._handle_for_cookie(packet, addr)
            if handle is None:
                stats.count_drop(DropReason.UNKNOWN_CONNECTION, addr, segments)
                if not self._recently_closed_ack(packet) and not self._cookie_mode(flags):
                    self._reset(packet, addr)
                return None
        elif addr != handle.addr and handle.addr is not None:
            stats.count_drop(DropReason.WRONG_ADDRESS, addr, segments)
            return None
        if not handle.validated:
            handle.rx_bytes += size
        elif packet.flags & _RST and packet.payload and handle.waiter is not None:
            handle.reset_detail = bytes(packet.payload[:200]).decode("utf-8", "replace")
        handle.conn.receive_packet(packet, now=_clock(), segments=segments)
        return handle

    # ------------------------------------------------------------------ connections

    def _new_cid(self) -> int:
        while True:
            cid = new_connection_id()
            if cid not in self._handles:
                return cid

    def _handle_for_syn(self, packet: Packet, addr: Address) -> ConnectionHandle | None:
        """The connection a SYN goes to: the one it opened before (a retransmission), or a new
        one; None when it was answered statelessly or dropped (always counted)."""
        key = (addr, packet.src_cid)
        cid = self._syn_index.get(key)
        if cid is not None and cid in self._handles:
            return self._handles[cid]  # a retransmitted SYN
        if not self._accepting or self._closing:
            self.stats.count_drop(DropReason.UNKNOWN_CONNECTION, addr)
            self._reset(packet, addr)
            return None
        if len(self._handles) >= self.config.max_connections and not self._make_room():
            self._refuse(packet, addr, "too many connections")
            return None
        if self._half_open >= self._backlog:
            if self._cookies is not None:
                self._send_cookie(packet, addr)
            else:
                self.stats.count_drop(DropReason.BACKLOG_FULL, addr)
            return None
        conn = Connection(self.config, local_cid=self._new_cid())
        self._trace(conn, "server", addr)
        conn.listen(now=_clock())
        handle = ConnectionHandle(conn, addr)
        handle.validated = False  # its bytes are counted by the caller
        self._handles[conn.local_cid] = handle
        self._syn_index[key] = conn.local_cid
        self._half_open += 1
        return handle

    def _refuse(self, packet: Packet, addr: Address, why: str) -> None:
        """Answer a SYN with a reset that carries the reason as its payload (RFC 9293 section
        3.5.3 allows diagnostic data in a RST), for the client's ConnectionRefusedError."""
        self.stats.connections_refused += 1
        self.stats.count_drop(DropReason.TOO_MANY_CONNECTIONS, addr)
        _log.info("connection_refused", reason=why, peer=str(addr))
        ack = (packet.seq + packet.seg_len) & SEQ_MASK
        rst = Packet(_RST | _ACK, 0, packet.src_cid, 0, ack, 0, why.encode()[: packet.seg_len + 40])
        self._send_limited_reset(encode(rst), addr)

    def _send_cookie(self, syn: Packet, addr: Address) -> None:
        """Answer a SYN statelessly: the SYN-ACK's connection id and ISN are a cookie."""
        assert self._cookies is not None
        cfg = self.config
        sack = cfg.sack and syn.sack_permitted
        ts = cfg.timestamps and syn.timestamps is not None
        opts = pack_options(syn.mss, syn.wscale, sack, ts)
        now = _clock()
        cid, isn = self._cookies.make(_addr_key(addr), syn.src_cid, syn.seq, opts, now=now)
        p = Packet(_SYN | _ACK, cid, syn.src_cid, isn, (syn.seq + 1) & SEQ_MASK, 0)
        p.mss = cfg.mss_bytes
        p.window = min(cfg.recv_buffer_bytes, MAX_WINDOW_FIELD)
        if syn.wscale is not None:
            p.wscale = wscale_for(cfg.recv_buffer_bytes)
        p.sack_permitted = sack
        if ts and syn.timestamps is not None:
            p.timestamps = (0, syn.timestamps[0])
        self.stats.syn_cookies_sent += 1
        self._cookie_sent_at = now
        self._send(encode(p), addr)

    def _cookie_mode(self, flags: int) -> bool:
        """While SYN cookies are being handed out, an ACK that fails the cookie check may be
        a cookie client's later segment whose first one was lost in the flood: it gets no
        reset (that would kill the connection); its retransmission of the first will pass."""
        return (
            bool(flags & _ACK)
            and self._cookie_sent_at is not None
            and _clock() - self._cookie_sent_at < _COOKIE_GRACE_S
        )

    def _handle_for_cookie(self, packet: Packet, addr: Address) -> ConnectionHandle | None:
        """A connection rebuilt from the ACK of a cookie SYN-ACK, or None if it is not one."""
        assert self._cookies is not None
        if not self._accepting or self._closing:
            return None
        now = _clock()
        peer_isn = (packet.seq - 1) & SEQ_MASK
        isn = (packet.ack - 1) & SEQ_MASK
        key = _addr_key(addr)
        opts = self._cookies.check(key, packet.src_cid, peer_isn, packet.dst_cid, isn, now=now)
        if opts is None:
            return None
        if len(self._handles) >= self.config.max_connections and not self._make_room():
            return None
        mss, wscale, sack, ts = unpack_options(opts)
        syn = Packet(_SYN, packet.src_cid, 0, peer_isn, 0, packet.window, b"")
        syn.mss = mss
        syn.wscale = wscale
        syn.sack_permitted = sack
        if ts:
            syn.timestamps = (packet.timestamps[0] if packet.timestamps else 0, 0)
        conn = Connection(self.config, local_cid=packet.dst_cid, isn=isn)
        self._trace(conn, "server", addr)
        conn.listen(now=now)
        conn.receive_packet(syn, now=now)
        conn.datagrams_to_send(now=now)  # the SYN-ACK the cookie already answered
        handle = ConnectionHandle(conn, addr)
        self._handles[conn.local_cid] = handle
        self._syn_index[(addr, packet.src_cid)] = conn.local_cid
        self._half_open += 1  # as if it had waited in the backlog; establishing decrements it
        self.stats.syn_cookies_accepted += 1
        _log.debug("syn_cookie_accepted", cid=f"{conn.local_cid:08x}", peer=str(addr))
        return handle

    def connect(self, addr: Address) -> ConnectionHandle:
        """Start an active open towards ``addr`` (None on a connected socket)."""
        conn = Connection(self.config, local_cid=self._new_cid())
        self._trace(conn, "client", addr)
        handle = ConnectionHandle(conn, addr)
        handle.waiter = self._loop.create_future()
        self._handles[conn.local_cid] = handle
        conn.connect(now=_clock())
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

    def _reset(self, packet: Packet, addr: Address) -> None:
        rst = reset_for(packet)
        if rst is not None:
            self._send_limited_reset(rst, addr)

    def _send_limited_reset(self, rst: bytes, addr: Address) -> None:
        """Send a reset unless the endpoint's reset budget (a token bucket refilled at
        ``max_resets_per_s``) is spent: spoofed datagrams must not draw a reflected flood."""
        rate = self.config.max_resets_per_s
        now = _clock()
        self._reset_tokens = min(rate, self._reset_tokens + (now - self._reset_refill_at) * rate)
        self._reset_refill_at = now
        if self._reset_tokens < 1:
            self.stats.resets_rate_limited += 1
            return
        self._reset_tokens -= 1
        self.stats.resets_sent += 1
        self._send(rst, addr)

    def _send(self, data: bytes, addr: Address) -> None:
        self._send_burst([data], addr)

    def _send_burst(self, datagrams: list[bytes], addr: Address) -> None:
        """Send what one connection has, as one burst (GSO runs on the fast path)."""
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
        self._send_datagrams(datagrams, addr)

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
        if self._handles.get(handle.conn.local_cid) is handle:
            self.service(handle)

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
            transport._update_flow_control()

    def _send_due(self, handle: ConnectionHandle) -> None:
        """Send, as one burst, what the connection has due now (within the anti-amplification
        limit while the peer's address is unvalidated)."""
        datagrams = handle.conn.datagrams_to_send(now=_clock())
        if not handle.validated:
            datagrams = self._within_amplification_limit(handle, datagrams)
        if datagrams:
            self._send_burst(datagrams, handle.addr)
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

    def _within_amplification_limit(
        self, handle: ConnectionHandle, datagrams: list[bytes]
    ) -> list[bytes]:
        state = handle.conn.state
        if state in SYNCHRONIZED and state is not SYN_RECEIVED:
            handle.validated = True  # the peer echoed our ISN from its address: validated
            return datagrams
        out = []
        for data in datagrams:
            if handle.tx_bytes + len(data) > _AMPLIFICATION_FACTOR * handle.rx_bytes:
                self.stats.amplification_limited += 1
                continue
            handle.tx_bytes += len(data)
            out.append(data)
        return out

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
                elif transport._lost:
                    # Data for a connection the application closed: as a closed TCP socket
                    # (RFC 1122 section 4.2.2.13), reset; the peer learns nobody reads.
                    conn.abort()
                    data_only = False
                else:
                    transport._data_received(event.data)
                continue
            data_only = False
            if isinstance(event, ConnectionEstablished):
                self._on_established(handle)
            elif isinstance(event, EofReceived):
                if handle.transport is not None:
                    handle.transport._eof_received()
            elif isinstance(event, FinAcknowledged):
                if handle.transport is not None and not conn.is_finished:
                    handle.transport._fin_acknowledged()
            elif isinstance(event, ConnectionClosed):
                self._on_closed(handle, event.reason)
        return data_only

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
                for data in handle.conn.datagrams_to_send(now=_clock()):
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
        exc = self._close_exception(handle, reason)
        self._fail_waiter(handle, exc or ConnectionResetError("connection closed"))
        if handle.transport is not None:
            # asyncio reports a local abort() as connection_lost(None).
            lost_exc = None if reason is CloseReason.ABORTED else exc
            handle.transport._connection_closed(lost_exc, reason)
        if not handle.conn.is_finished:
            self._to_background(handle)  # TIME_WAIT: reported, not over

    def _close_exception(self, handle: ConnectionHandle, reason: CloseReason) -> OSError | None:
        """The exception a user sees for ``reason``, in words about this peer."""
        exc = reason.exception()
        if exc is None:
            return None
        peer = _peer_text(handle.addr if handle.addr is not None else self._peername())
        if reason is CloseReason.REFUSED and handle.reset_detail:
            return ConnectionRefusedError(f"{exc}: {handle.reset_detail}")
        if reason is CloseReason.REFUSED:
            return ConnectionRefusedError(f"connection refused by {peer}")
        if reason is CloseReason.TIMEOUT or reason is CloseReason.IDLE:
            silent = max(0.0, _clock() - handle.conn.last_heard)
            return TimeoutError(f"no answer from {peer} for {silent:.0f} s")
        if reason is CloseReason.UNREACHABLE:
            return ConnectionResetError(
                f"{peer} is unreachable: nothing listens there any more (ICMP port unreachable)"
            )
        if reason is CloseReason.RESET:
            return ConnectionResetError(f"connection reset by {peer}")
        return exc

    def _peername(self) -> Address:
        transport = self._transport
        return transport.get_extra_info("peername") if transport is not None else None

    def _to_background(self, handle: ConnectionHandle) -> None:
        """The application is done with this connection, which winds down on its own; on an
        endpoint being closed it is not waited for."""
        cid = handle.conn.local_cid
        if self._handles.get(cid) is handle and cid not in self._background:
            if not self._background:
                call_at_shutdown(id(self), self._close_lingering)
            self._background[cid] = handle
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

    def _recently_closed_ack(self, packet: Packet) -> bool:
        """A bare ACK for a connection that closed in order moments ago (the copies of a
        client's final ACK) needs no RST: the connection ended cleanly on both sides."""
        expiry = self._recently_closed.get(packet.dst_cid)
        if expiry is None:
            return False
        if _clock() > expiry:
            del self._recently_closed[packet.dst_cid]
            return False
        return packet.flags == Flag.ACK and not packet.payload

    def _forget(self, handle: ConnectionHandle) -> None:
        if handle.forgotten:
            return  # a callback's abort() already ended it, inside the same service()
        handle.forgotten = True
        if handle.conn.tracer is not None:
            handle.conn.tracer.close()
        drops = handle.conn.drops
        if drops:
            self.stats.add_drops(drops)
        if handle.conn.close_reason is CloseReason.CLOSED:
            closed = self._recently_closed
            if len(closed) >= _RECENTLY_CLOSED_MAX:
                del closed[next(iter(closed))]  # the oldest entry
            closed[handle.conn.local_cid] = _clock() + 2 * self.config.msl_s
        self._cancel_timer(handle)
        if self._handles.get(handle.conn.local_cid) is handle:
            del self._handles[handle.conn.local_cid]
            self._background.pop(handle.conn.local_cid, None)
        # The SYN index lives as long as the connection: a duplicate or late SYN must reach it
        # (and draw a challenge ACK), not open a second, never-completed connection.
        key = (handle.addr, handle.conn.peer_cid)
        if self._syn_index.get(key) == handle.conn.local_cid:
            del self._syn_index[key]
        if self._single and not self._handles:
            # A client endpoint ends with its connection, TIME_WAIT included: its socket is
            # released then, whether or not anyone waits for it.
            self._closing = True
        if self._closing:
            self._maybe_close_socket()

    def _maybe_close_socket(self) -> None:
        """Close the socket of a closing endpoint once nothing holds it.  A single-connection
        client's socket lasts as long as its connection.  A server or client endpoint closed
        by the application is done (``wait_done``) once the connections the application
        holds have ended; of those winding down in the background, an orphan waiting in
        FIN_WAIT_2 for a peer that never closes is reset, and TIME_WAIT runs its course (it
        re-acknowledges the FIN a peer retransmits if our final ACK was lost), after which the
        socket closes: the kernel keeps TIME_WAIT of a closed TCP socket the same way."""
        if self._cutting or self._transport is None:
            return
        if self._single:
            if self._handles:
                return
        elif len(self._handles) > len(self._background):
            return
        if not self._done.done():
            self._done.set_result(None)
        for handle in list(self._background.values()):
            if handle.conn.state is not TIME_WAIT and not handle.forgotten:
                self._end_background(handle)  # forgetting it may close the socket
        if not self._handles and self._transport is not None:
            self._close_socket()

    def _close_lingering(self) -> None:
        """The event loop is shutting down: a socket held only by connections winding down
        (TIME_WAIT) closes now, as it would if the process exited, rather than at garbage
        collection.  Connections the application still holds are left to it."""
        if self._transport is not None and len(self._handles) == len(self._background):
            self._close_socket()

    def _make_room(self) -> bool:
        """At max_connections, end the oldest connection winding down in the background to
        admit a new one (as Linux recycles TIME_WAIT buckets); False when none is."""
        for handle in self._background.values():
            self._end_background(handle)
            return True
        return False

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
        for handle in self._handles.values():
            for key, n in handle.conn.drops.items():
                dropped[key] = dropped.get(key, 0) + n
        out["dropped"] = dropped
        out["connections"] = len(self._handles)
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
    def closing(self) -> bool:
        """Whether ``close()`` (or the end of a single client connection) has begun to close
        the endpoint: it accepts and opens no more connections."""
        return self._closing

    @property
    def connection_count(self) -> int:
        """Connections not yet finished (TIME_WAIT included)."""
        return len(self._handles)

    def stop_accepting(self) -> None:
        """Refuse new connections; existing ones carry on."""
        self._accepting = False

    def close(self) -> None:
        """Accept no more connections and close the socket once the application's
        connections have ended (those winding down in the background are cut short)."""
        self._closing = True
        self._accepting = False
        self._maybe_close_socket()

    def abort_all(self) -> None:
        """Reset every connection and close the socket now."""
        for handle in list(self._handles.values()):
            if handle.conn.close_reason is None:
                handle.conn.abort()
                self.service(handle)
        self._closing = True
        self._close_socket()

    def _close_socket(self) -> None:
        self._cutting = True
        try:
            for handle in list(self._background.values()):
                if not handle.forgotten:
                    self._end_background(handle)
        finally:
            self._cutting = False
        for handle in list(self._handles.values()):
            self._cancel_timer(handle)
            if handle.conn.tracer is not None:
                handle.conn.tracer.close()
        self._handles.clear()
        self._background.clear()
        self._syn_index.clear()
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
        if not self._handles:
            await asyncio.shield(self._closed)
