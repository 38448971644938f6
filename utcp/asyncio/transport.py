"""An ``asyncio.Transport`` over one utcp connection.

It keeps asyncio's Transport/Protocol contract, so the standard library's own
``StreamReaderProtocol``/``StreamWriter`` (and any protocol written for TCP) run on it unchanged:
``pause_writing``/``resume_writing`` follow the bytes not yet acknowledged by the peer, and
``pause_reading`` closes the advertised receive window.  The high-water mark sizes itself: at
least ``Config.send_buffer_bytes``, more when the connection can have more in flight
(``Connection.send_buffer_goal``), up to ``Config.send_buffer_max_bytes`` and the endpoint's
budget, until the application sets its own limits.  It sees its endpoint only through
``utcp.asyncio.interfaces.TransportHost`` and is driven through the public methods of
``StreamSink`` (``deliver_data``, ``deliver_eof``, ``connection_closed``, ...).
"""

from __future__ import annotations

import asyncio
from asyncio import constants
from typing import Any

from ..buffers import byte_view
from ..events import CloseReason
from ..log import get_logger
from .flowcontrol import FlowControlBase
from .interfaces import ConnectionHandle, TransportHost
from .sockview import SocketView

_log = get_logger()

# asyncio logs writes to a lost connection from the fifth on (constants.py).
_CONNLOST_WRITES_LOGGED = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


class UtcpTransport(FlowControlBase, asyncio.Transport):
    """A stream transport whose bytes travel as utcp segments (a ``StreamSink`` for its
    endpoint); its protocol comes with ``attach()``.

    Asyncio's flow-control mixin is a base only so that the standard library's helpers that
    require one accept this transport (``loop.sendfile``'s fallback); the marks are this
    class's own.  ``loop.start_tls`` accepts it too (``_start_tls_compatible``), and so does
    ``utcp.start_tls`` on every loop."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, endpoint: TransportHost, handle: ConnectionHandle) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(None, loop)
        self._endpoint = endpoint
        self._handle = handle
        self._conn = handle.conn
        self._protocol: Any = None
        self._buffered = False  # the protocol is an asyncio.BufferedProtocol
        self._loop = loop
        self._closing = False
        self._eof_written = False  # our FIN is queued (write_eof() or close())
        self._eof_by_app = False  # write_eof() was called
        self._lost = False
        # The connection ended cleanly (both FINs) while the application kept its transport
        # open: as on a TCP socket, connection_lost waits for close().
        self._ended_open = False
        self._conn_lost_writes = 0
        self._fatal: BaseException | None = None  # what _force_close() reports
        self._reading = True
        self._protocol_paused = False
        # The protocols told pause_writing() since the last resume: one handed the transport
        # while writing is paused is told too (set_protocol), so that no protocol ever hears
        # resume_writing() for a pause it never heard of.
        self._told_paused: list[Any] = []
        # Data that arrived before a protocol was attached.
        self._pending: list[bytes | memoryview] = []
        self._pending_eof = False
        self._pending_lost: tuple[Exception | None] | None = None
        cfg = endpoint.config
        high = cfg.send_buffer_bytes
        self._high_water = high
        self._low_water = high // 4
        # The automatic mark, until set_write_buffer_limits(): growth beyond the configured
        # one is leased from the endpoint's budget (Config.endpoint_buffer_bytes).
        self._auto_limits = cfg.send_buffer_max_bytes > high
        self._lease = cfg.buffer_budget.lease()
        self._goal_seen = -1  # the connection's send_buffer_goal the automatic marks follow
        # The configured mark and maximum, read once: every write and acknowledgement sizes
        # the marks, and reading the (interpreted, frozen) Config costs a lookup each time.
        self._base_bytes = high
        self._max_bytes = cfg.send_buffer_max_bytes
        udp = endpoint.transport
        peer = handle.addr
        if peer is None and udp is not None:
            peer = udp.get_extra_info("peername")
        self._udp_seen = udp
        self._extra: dict[str, Any] = {
            "peername": peer,
            "sockname": udp.get_extra_info("sockname") if udp else None,
            "socket": SocketView(udp.get_extra_info("socket"), peer, names=self) if udp else None,
            "connection": self._conn,
            "endpoint": endpoint,
        }

    def __repr__(self) -> str:
        conn = self._conn
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return (
            f"<UtcpTransport {state} cid={conn.local_cid:08x} peer={self._extra['peername']!r} "
            f"{conn.state.value} bufsize={conn.send_buffer_size}>"
        )

    # ------------------------------------------------------------------ BaseTransport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``socket`` (a view of the endpoint's UDP socket that
        cannot close it: other connections share it), ``connection`` (the core), ``stats``
        and ``endpoint`` (the UDP endpoint, whose ``stats`` count datagrams dropped before
        they reach any connection, such as those failing their checksum)."""
        if name == "stats":
            return self._conn.stats
        if name == "peername" and self._handle.addr is not None:
            return self._handle.addr  # where the peer is now (it may have moved, a new path)
        if name in ("sockname", "socket") and self._extra.get(name) is not None:
            udp = self._endpoint.transport  # the socket now: a client may have moved
            if udp is not None and udp is not self._udp_seen:
                self._udp_seen = udp
                self._extra["sockname"] = udp.get_extra_info("sockname")
                peer = self.get_extra_info("peername")
                self._extra["socket"] = SocketView(udp.get_extra_info("socket"), peer, names=self)
            local = self._handle.local
            if name == "sockname" and local is not None:
                # A socket bound to a wildcard address: the address the peer sends to, as a
                # TCP socket accepted there names it.
                bound = self._extra["sockname"]
                if len(bound) == 4:
                    return (local[0], bound[1], bound[2], local[2])
                return (local[0], bound[1])
        return self._extra.get(name, default)

    async def migrate(self, local_addr: Any = None) -> None:
        """Move this (client) connection to a new UDP socket bound to ``local_addr``
        (default: a new port on any address), as when the host changes networks; the
        server follows once the new address answers its path challenge (README, "When the
        client's address changes").  Every connection sharing the old socket moves with it.
        ``RuntimeError`` on the server's side: a server's connections do not move."""
        await self._endpoint.migrate(local_addr)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Send what is buffered, then FIN.  ``connection_lost(None)`` follows as soon as the
        peer has acknowledged every byte written and the FIN (the stream's ``wait_closed()``
        returns then: a stronger promise than TCP's, whose close only queues the bytes), or
        ``connection_lost(exc)`` if the connection fails first.  The peer need not close its
        side: the rest of the teardown runs in the background of the endpoint, bounded in
        time (``Config.fin_wait_2_timeout_s``, TIME_WAIT), and data the peer still sends
        draws a reset, as on a closed TCP socket."""
        if self._closing or self._lost:
            return
        self._closing = True
        if self._ended_open:
            self._report_lost(None)
            return
        self._reading = True
        conn = self._conn
        conn.resume_reading()
        self._eof_written = True
        conn.orphan(now=self._endpoint.now())
        if conn.fin_acknowledged:
            self.fin_acknowledged()  # a write_eof() was acknowledged before
        self._endpoint.schedule_flush(self._handle)

    def fin_acknowledged(self) -> None:
        """Our FIN is acknowledged: after close(), the application's part is done."""
        if not self._closing or self._lost or self._protocol is None:
            return
        self._lost = True
        self._lease.release()
        _log.debug("transport_closed", reason="fin_acknowledged")
        self._endpoint.transport_released(self._handle)
        self._loop.call_soon(self._tell_lost, None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand the connection to ``protocol``; while writing is paused it is told so unless
        it already was (asyncio's sendfile fallback hands the application's protocol back
        paused, and asyncio's TLS layer may come in paused)."""
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        told = any(paused is protocol for paused in self._told_paused)
        if self._protocol_paused and not self._lost and not told:
            self._told_paused.append(protocol)
            self._call(protocol.pause_writing)
        self._replay_pending()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ ReadTransport

    def is_reading(self) -> bool:
        return self._reading and not self._closing and not self._lost

    def pause_reading(self) -> None:
        if self._reading and not self._lost and not self._ended_open:
            self._reading = False
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self._lost and not self._ended_open:
            self._reading = True
            self._conn.resume_reading()
            self._endpoint.schedule_flush(self._handle)

    # ------------------------------------------------------------------ WriteTransport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._eof_by_app:
            raise RuntimeError("Cannot call write() after write_eof()")
        data = byte_view(data)
        if not data:
            return
        if self._closing or self._lost:
            # As asyncio's transports: the bytes are dropped; the stream's drain() raises the
            # connection's error, and from the fifth such write on each is logged.
            if self._conn_lost_writes >= _CONNLOST_WRITES_LOGGED:
                _log.warning("write_after_close", dropped=len(data))
            self._conn_lost_writes += 1
            return
        conn = self._conn
        conn.send(data)
        handle = self._handle
        if not handle.flush_scheduled and conn.send_buffer_size == len(data):
            # Nothing was in flight (Nagle's test, inverted as with TCP_NODELAY): the bytes
            # leave now. With data in flight they wait for this loop iteration to end, so
            # small writes in a row coalesce into full segments.
            self._endpoint.send_now(handle)
        else:
            self._endpoint.schedule_flush(handle)
        self.update_flow_control()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        """Half-close: FIN after buffered data; reading goes on."""
        if self._eof_written or self._lost or self._closing:
            return
        self._eof_written = True
        self._eof_by_app = True  # writes raise from now on, even after close(), as asyncio's
        self._conn.close()
        self._endpoint.schedule_flush(self._handle)

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Send RST and drop everything at once; ``connection_lost(None)`` follows."""
        if self._lost:
            return
        self._closing = True
        if self._ended_open:
            self._report_lost(None)
            return
        self._conn.abort()
        self._endpoint.service(self._handle)

    def _force_close(self, exc: BaseException | None) -> None:
        """Reset the connection and report ``connection_lost(exc)``: what asyncio's own
        transports do on a fatal error, and what its TLS layer calls on a failed handshake."""
        if self._lost:
            return
        self._fatal = exc
        self.abort()

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        """A protocol callback that must not fail raised: as asyncio's transports, tell the
        loop's exception handler (an ``OSError`` only in debug mode) and reset."""
        if not isinstance(exc, OSError) or self._loop.get_debug():
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet acknowledged by the peer; none once the connection has
        ended (after ``abort()``, a reset or a timeout what is left will never be sent), as
        asyncio's transports drop their buffer then."""
        conn = self._conn
        return 0 if conn.close_reason is not None else conn.send_buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: float | None = None, low: float | None = None) -> None:
        """Fix the marks, as on asyncio's transports; they win over the automatic sizing.
        With neither given, the automatic marks come back (asyncio's "the defaults").  Any
        real numbers, as asyncio takes them; the marks count whole bytes."""
        cfg = self._endpoint.config
        auto = high is None and low is None and cfg.send_buffer_max_bytes > cfg.send_buffer_bytes
        if high is None:
            high = 4 * low if low is not None else cfg.send_buffer_bytes
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._auto_limits = auto
        self._goal_seen = -1
        if not auto:
            self._lease.release()
        self._high_water = int(high)
        self._low_water = int(low)
        self.update_flow_control()

    def _size_limits(self) -> None:
        """The automatic marks: the high-water mark is the connection's goal, between the
        configured mark and maximum, within what the endpoint's budget still grants.  The
        low-water mark asks for more while two thirds of the goal is still written: the
        unacknowledged bytes include a flight in the air and, in a recovery episode, one
        SACKed behind a hole, so asyncio's quarter of the mark would make the writer wait
        until the path had half drained."""
        goal = self._conn.send_buffer_goal
        if goal == self._goal_seen:
            return  # the marks already follow it (every write and acknowledgement asks)
        base = self._base_bytes
        capped = min(goal, self._max_bytes)
        want = capped - base if capped > base else 0
        lease = self._lease
        # The lease is asked only for a change: a goal below the configured mark (a small
        # window, as in request/response) moves with every acknowledgement, the lease not.
        held = want if want == lease.bytes else lease.resize(want)
        # Short of the budget: ask again on the next call, the budget may have room by then.
        self._goal_seen = goal if held == want else -1
        high = base + held
        self._high_water = high
        self._low_water = max(high // 4, 2 * min(capped, high) // 3)

    # ------------------------------------------------------------------ from the endpoint

    @property
    def lost(self) -> bool:
        """The application is done with the connection (``connection_lost`` is due or done)."""
        return self._lost

    def update_flow_control(self) -> None:
        """The bytes in flight changed: size the marks, pause or resume the protocol's
        writing."""
        if self._auto_limits:
            if self._lost:
                self._auto_limits = False
                self._lease.release()
            else:
                self._size_limits()
        if self._protocol_paused:
            if self._conn.send_buffer_size > self._low_water:
                return
        elif self._conn.send_buffer_size <= self._high_water:
            return
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        self._protocol_paused = not self._protocol_paused
        if self._protocol_paused:
            self._told_paused = [protocol]
            self._call(protocol.pause_writing)
        else:
            self._told_paused = []
            self._call(protocol.resume_writing)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(fn, exc)
            return None

    def _report(self, fn: Any, exc: BaseException) -> None:
        """A protocol callback raised: the loop's exception handler hears of it, as with
        asyncio's own transports."""
        self._loop.call_exception_handler(
            {
                "message": f"utcp: protocol callback {fn.__qualname__} raised",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            }
        )

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Give the connection its protocol once the handshake is done: ``connection_made``,
        then whatever arrived before it."""
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        # A BufferedProtocol's bytes are copied from the datagram straight into its buffer.
        self._conn.deliver_views(self._buffered)
        self._call(protocol.connection_made, self)
        self._replay_pending()

    def _replay_pending(self) -> None:
        if self._protocol is None:
            return
        pending, self._pending = self._pending, []
        for data in pending:
            self.deliver_data(data)
        if self._pending_eof:
            self._pending_eof = False
            self.deliver_eof()
        if self._pending_lost is not None:
            (exc,) = self._pending_lost
            self._pending_lost = None
            self.connection_closed(exc, None)

    def deliver_data(self, data: bytes | memoryview) -> None:
        """Bytes arrived in order: to the protocol's ``data_received``, or copied into the
        buffers a ``BufferedProtocol`` hands out (the one copy a socket's ``recv_into`` would
        make, straight from the datagram: the connection hands views to a buffered protocol's
        transport).  A protocol callback that raises aborts the connection, as asyncio's
        transports do."""
        protocol = self._protocol
        if protocol is None:
            if not self._lost:  # not yet attached (after connection_lost: nobody to tell)
                self._pending.append(data)
            return
        if self._closing:
            # close() promised no more data. Like a closed TCP socket that gets data (RFC 1122
            # section 4.2.2.13), reset: the peer learns nobody reads, and close() does not wait
            # for the FIN of a peer that keeps sending.
            self.abort()
            return
        if self._buffered:
            self._feed_buffers(data)
            return
        if type(data) is not bytes:
            data = bytes(data)  # a view queued before the protocol changed to a plain one
        try:
            protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _feed_buffers(self, data: bytes | memoryview) -> None:
        """``data`` into the protocol's ``get_buffer()``/``buffer_updated()``, as many rounds as
        its buffers take; a protocol swapped by a callback (STARTTLS) gets the rest its way."""
        view = memoryview(data)
        size = len(view)
        pos = 0
        while pos < size:
            protocol = self._protocol
            if not self._buffered:
                self.deliver_data(bytes(view[pos:]))
                return
            try:
                buf = memoryview(protocol.get_buffer(size - pos)).cast("B")
                room = len(buf)
                if not room:
                    raise RuntimeError("get_buffer() returned an empty buffer")
                n = min(room, size - pos)
                buf[:n] = view[pos : pos + n]
                pos += n
                protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            if self._lost or self._closing:
                return
            if not self._reading:
                # Paused in buffer_updated(): the rest waits, first in line, for
                # resume_reading(), as the rest of a socket's buffer would.
                if pos < size:
                    self._conn.unread(bytes(view[pos:]))
                return

    def deliver_eof(self) -> None:
        """The peer's FIN: to the protocol's ``eof_received``."""
        if self._protocol is None:
            self._pending_eof = not self._lost
            return
        if self._closing:
            return  # after close() only connection_lost follows, as on asyncio's transports
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def connection_closed(self, exc: Exception | None, reason: CloseReason | None) -> None:
        """The connection ended: ``connection_lost(exc)`` follows."""
        if self._lost or self._ended_open:
            return
        if self._protocol is None:
            self._pending_lost = (exc,)
            return
        if reason is not None:
            _log.debug("transport_closed", reason=reason.value)
        if exc is None and self._fatal is not None:
            exc = self._fatal  # type: ignore[assignment]
        if exc is None and not self._closing and reason is CloseReason.CLOSED:
            # Both sides wrote EOF and everything was acknowledged, but the application never
            # closed: a TCP socket stays open (writes fail, reads see EOF) until it does.
            self._ended_open = True
            self._lease.release()
            return
        self._report_lost(exc)

    def _report_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        self._closing = True
        self._lease.release()
        self._endpoint.call_when_released(self._tell_lost, exc, finished=self._conn.is_finished)

    def _tell_lost(self, exc: BaseException | None) -> None:
        """``connection_lost(exc)``; then the transport lets its protocol go, as asyncio's
        transports do (``get_protocol()`` is None from here on)."""
        try:
            self._call(self._protocol.connection_lost, exc)
        finally:
            self._protocol = None
