"""A TCP <-> utcp tunnel: carries each TCP connection over its own utcp connection, both ways.

It owns the listening socket, the one UDP socket all outgoing utcp connections share, and one
relay per connection.  Each direction is a pump that never holds more than one chunk: it waits
for ``drain()`` before reading again, so a slow reader slows the far writer and memory stays
bounded; an EOF becomes a half-close on the other side and a reset or failure resets both.

With ``ssl=`` the utcp leg is TLS between the two ends.  TLS cannot half-close (asyncio's layer
ends both directions together), so there each chunk on the utcp leg carries its length and a
zero length is the half-close; the TLS connection closes once both directions have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLCertVerificationError, SSLContext, SSLError
from typing import Any, Literal

from ..asyncio import ClientEndpoint, Server, Worker, create_client_endpoint, start_server
from ..config import Config, given
from ..connection import Connection
from ..log import get_logger

__all__ = [
    "ConnectionRecord",
    "Tunnel",
    "TunnelAddress",
    "TunnelCounters",
    "parse_address",
]

Scheme = Literal["tcp", "utcp"]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

CHUNK_BYTES = 64 * 1024  # one read per pump step; a pump holds no more than this
STREAM_LIMIT_BYTES = 64 * 1024  # StreamReader limit: reading pauses at twice this
BACKLOG = 1024  # connections waiting to be accepted (TCP) or half-open (utcp): bursts fit
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_LENGTH = struct.Struct("!I")  # over TLS: the length of the chunk that follows; 0: half-close

_log = get_logger(component="tunnel")


# ------------------------------------------------------------------------------ addresses


@dataclass(frozen=True)
class TunnelAddress:
    """One end of a tunnel: ``tcp`` or ``utcp``, a host and a port."""

    scheme: Scheme
    host: str
    port: int

    def url(self) -> str:
        """``tcp://127.0.0.1:8080`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_ADDRESS = re.compile(r"(tcp|utcp):(?:\[([^\]]+)\]:|([^:\[\]]*):)?(\d+)")


def parse_address(text: str) -> TunnelAddress:
    """``tcp:[HOST:]PORT`` or ``utcp:[HOST:]PORT`` (``[::1]`` for IPv6; the host defaults to
    127.0.0.1).  Raises ``ValueError`` with a one-line message."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not tcp:[HOST:]PORT or utcp:[HOST:]PORT: {text!r}")
    scheme, host6, host, port_text = m.groups()
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r} (0 to 65535)")
    chosen: Scheme = "tcp" if scheme == "tcp" else "utcp"
    return TunnelAddress(chosen, host6 or host or "127.0.0.1", port)


# ------------------------------------------------------------------------------ counters


@dataclass(frozen=True)
class ConnectionRecord:
    """What one tunnelled connection did; ``up`` is from the listening side to ``--to``."""

    id: int
    peer: str
    bytes_up: int
    bytes_down: int
    duration_s: float
    reason: str  # "closed" for an orderly end both ways, else what ended it
    retransmissions: int  # utcp segments sent again on this connection

    @property
    def clean(self) -> bool:
        """Both directions ended with EOF."""
        return self.reason == "closed"

    def line(self) -> str:
        """One human-readable line for the log."""
        return (
            f"connection {self.id} from {self.peer}: up {self.bytes_up} B, "
            f"down {self.bytes_down} B, {self.duration_s:.3f} s, "
            f"{self.retransmissions} retransmissions, {self.reason}"
        )


@dataclass
class TunnelCounters:
    """Totals since the tunnel started; ``errors`` counts every connection that did not end
    cleanly, by reason."""

    connections: int = 0
    active: int = 0
    closed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """``connections=3 active=0 closed=2 errors=1 (tcp reset=1) bytes_up=... ...``."""
        total = sum(self.errors.values())
        detail = ", ".join(f"{reason}={n}" for reason, n in sorted(self.errors.items()))
        return (
            f"connections={self.connections} active={self.active} closed={self.closed} "
            f"errors={total}{f' ({detail})' if detail else ''} "
            f"bytes_up={self.bytes_up} bytes_down={self.bytes_down}"
        )


class _SideError(Exception):
    """A pump failure, with the side (``tcp`` or ``utcp``) whose socket failed."""

    def __init__(self, side: Scheme, exc: BaseException) -> None:
        super().__init__(side, exc)
        self.side = side
        self.exc = exc

    def reason(self) -> str:
        exc = self.exc
        if isinstance(exc, ConnectionResetError):
            return f"{self.side} reset"
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return f"{self.side} timeout"
        if isinstance(exc, BrokenPipeError):
            return f"{self.side} broken pipe"
        if isinstance(exc, EOFError):  # over TLS: the stream ended without its half-close
            return f"{self.side} cut short"
        return f"{self.side} error: {type(exc).__name__}"


class _Relay:
    """One tunnelled connection: two pumps between a TCP stream pair and a utcp one."""

    def __init__(self, tunnel: Tunnel, rid: int, peer: str) -> None:
        self.tunnel = tunnel
        self.id = rid
        self.peer = peer
        self.started = asyncio.get_running_loop().time()
        self.bytes = {"up": 0, "down": 0}
        self.framed = tunnel.ssl is not None  # the utcp side's chunks carry their length
        self.tcp: asyncio.StreamWriter | None = None
        self.utcp: asyncio.StreamWriter | None = None
        # The core connection: its numbers stay readable after a TLS stream has closed.
        self.connection: Connection | None = None
        self.retransmissions = 0

    async def pump(
        self, src: Streams, src_side: Scheme, dst: Streams, dst_side: Scheme, direction: str
    ) -> None:
        """Copy ``src`` to ``dst`` until EOF, then half-close ``dst``."""
        reader, writer = src[0], dst[1]
        while True:
            data = await self.read(reader, src_side)
            if not data:
                break
            try:
                if dst_side == "utcp" and self.framed:
                    writer.writelines((_LENGTH.pack(len(data)), data))
                else:
                    writer.write(data)
                self.bytes[direction] += len(data)
                self.tunnel.count_bytes(direction, len(data))
                await writer.drain()
            except (OSError, RuntimeError) as exc:
                raise _SideError(dst_side, dst[0].exception() or exc) from exc
        if not writer.transport.is_closing():
            try:
                if dst_side == "utcp" and self.framed:
                    writer.write(_LENGTH.pack(0))
                else:
                    writer.write_eof()
            except (OSError, RuntimeError) as exc:
                raise _SideError(dst_side, dst[0].exception() or exc) from exc

    async def read(self, reader: asyncio.StreamReader, side: Scheme) -> bytes:
        """The next chunk from ``side``, b"" at its EOF (over TLS, the utcp side's zero
        length); a failure is a ``_SideError``."""
        try:
            if side == "tcp" or not self.framed:
                return await reader.read(CHUNK_BYTES)
            size = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]
            if size > CHUNK_BYTES:  # never sent by a tunnel end: bound what we buffer
                raise ValueError(f"a chunk of {size} bytes, more than {CHUNK_BYTES}")
            return await reader.readexactly(size)
        except (OSError, EOFError, ValueError) as exc:
            raise _SideError(side, exc) from exc

    async def run(self, tcp: Streams, utcp: Streams, *, tcp_listens: bool) -> str:
        """Relay until both directions have ended; return the close reason."""
        self.tcp, self.utcp = tcp[1], utcp[1]
        self.connection = utcp[1].get_extra_info("connection")
        if tcp_listens:
            up = self.pump(tcp, "tcp", utcp, "utcp", "up")
            down = self.pump(utcp, "utcp", tcp, "tcp", "down")
        else:
            up = self.pump(utcp, "utcp", tcp, "tcp", "up")
            down = self.pump(tcp, "tcp", utcp, "utcp", "down")
        pending = {asyncio.ensure_future(up), asyncio.ensure_future(down)}
        reason = "closed"
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = [t.exception() for t in done if t.exception() is not None]
                if failed:
                    exc = failed[0]
                    reason = exc.reason() if isinstance(exc, _SideError) else repr(exc)
                    self.reset()
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            self.note_stats()
        if reason == "closed":
            await self.close()
        return reason

    def note_stats(self) -> None:
        """Keep the utcp connection's retransmission count for the record."""
        if self.connection is not None:
            self.retransmissions = self.connection.stats.retransmissions

    def reset(self) -> None:
        """Reset both sides: an RST on the TCP socket, an RST on the utcp connection."""
        if self.tcp is not None:
            _reset(self.tcp, "tcp")
        if self.utcp is not None:
            _reset(self.utcp, "utcp")

    async def close(self) -> None:
        """Both directions ended in order: close both sides and wait until they are done."""
        for writer in (self.tcp, self.utcp):
            # Not twice: a TLS stream closed again (or after its peer closed) forgets its
            # connection.
            if writer is not None and not writer.is_closing():
                writer.close()
        for writer in (self.tcp, self.utcp):
            if writer is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    await writer.wait_closed()

    def record(self, reason: str) -> ConnectionRecord:
        return ConnectionRecord(
            id=self.id,
            peer=self.peer,
            bytes_up=self.bytes["up"],
            bytes_down=self.bytes["down"],
            duration_s=asyncio.get_running_loop().time() - self.started,
            reason=reason,
            retransmissions=self.retransmissions,
        )


def _reset(writer: asyncio.StreamWriter, side: Scheme) -> None:
    """Close a stream with an RST rather than a FIN, so the peer sees ECONNRESET.  On TCP that
    takes SO_LINGER with a zero timeout; a utcp transport's abort() always sends one."""
    sock = writer.get_extra_info("socket") if side == "tcp" else None
    if sock is not None:
        # A socket already closed refuses options; then there is nothing left to reset.
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


# ------------------------------------------------------------------------------ tunnel


class Tunnel:
    """Accepts connections at ``listen`` and carries each to ``to``, one utcp side and one TCP.

    ``tcp -> utcp`` (the client end) opens every utcp connection over one UDP socket;
    ``utcp -> tcp`` (the server end) opens a TCP connection per accepted utcp connection.
    With ``ssl`` the utcp leg is TLS: the server end's context holds its certificate, the
    client end's says whom it trusts (``server_hostname``: the name to check, default the
    ``to`` host).  Start with ``await Tunnel.start(...)``; ``close()`` stops accepting and
    resets what is open.
    """

    def __init__(
        self,
        listen: TunnelAddress,
        to: TunnelAddress,
        config: Config,
        on_close: Callable[[ConnectionRecord], None] | None,
        connect_timeout_s: float | None,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
        worker: Worker | None = None,
    ) -> None:
        if {listen.scheme, to.scheme} != {"tcp", "utcp"}:
            raise ValueError(
                f"a tunnel joins tcp and utcp: cannot carry {listen.scheme} to {to.scheme}"
            )
        if server_hostname is not None and (ssl is None or to.scheme != "utcp"):
            raise ValueError("server_hostname is only meaningful with ssl at the client end")
        if worker is not None and listen.scheme != "utcp":
            raise ValueError("worker processes serve a utcp listening end (utcp:HOST:PORT)")
        self.worker = worker
        self.listen = listen
        self.to = to
        self.config = config.validate()
        self.counters = TunnelCounters()
        self._on_close = on_close
        self.connect_timeout_s = connect_timeout_s
        self.ssl = ssl
        self.server_hostname = server_hostname
        self._tcp_server: asyncio.Server | None = None
        self._utcp_server: Server | None = None
        self._endpoint: ClientEndpoint | None = None
        self._relays: dict[int, _Relay] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_id = 1
        self._closing = False
        self._address: tuple[str, int] = (listen.host, listen.port)

    @classmethod
    async def start(
        cls,
        listen: TunnelAddress | str,
        to: TunnelAddress | str,
        *,
        config: Config | None = None,
        on_close: Callable[[ConnectionRecord], None] | None = None,
        connect_timeout_s: float | None = None,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
        worker: Worker | None = None,
    ) -> Tunnel:
        """Bind ``listen`` and start accepting; ``on_close`` gets a record per connection.
        Opening the far side (with ``ssl``, the TLS handshake included) may take
        ``connect_timeout_s`` (None: as long as utcp's SYN retries or the kernel's TCP connect
        take) before the accepted connection is reset.  Both ends use ``ssl`` or neither.

        ``worker``: serve as this worker of a ``utcp.WorkerGroup`` (the server end, on the
        sockets the group bound for ``listen``).

        Raises ``ValueError`` for two ends of the same kind and ``OSError`` when binding fails.
        """
        if isinstance(listen, str):
            listen = parse_address(listen)
        if isinstance(to, str):
            to = parse_address(to)
        tunnel = cls(
            listen,
            to,
            given(config),
            on_close,
            connect_timeout_s,
            ssl,
            server_hostname,
            worker,
        )
        try:
            await tunnel.bind()
        except BaseException:
            tunnel.close()
            await tunnel.wait_closed()
            raise
        _log.info("tunnel_started", listen=tunnel.listen_url(), to=to.url())
        return tunnel

    async def bind(self) -> None:
        """Bind the listening side and start accepting (``start`` does this)."""
        if self.listen.scheme == "tcp":
            self._endpoint = await create_client_endpoint(
                config=self.config, **await _local_for(self.to)
            )
            self._tcp_server = await asyncio.start_server(
                self._accept_tcp,
                self.listen.host,
                self.listen.port,
                limit=STREAM_LIMIT_BYTES,
                backlog=BACKLOG,
            )
            sock = self._tcp_server.sockets[0]
        else:
            where: dict[str, Any] = (
                {"host": self.listen.host, "port": self.listen.port}
                if self.worker is None
                else self.worker.server_keywords()
            )
            self._utcp_server = await start_server(
                self._accept_utcp,
                **where,
                limit=STREAM_LIMIT_BYTES,
                backlog=BACKLOG,
                config=self.config,
                ssl=self.ssl,
            )
            sock = self._utcp_server.sockets[0]
        host, port = sock.getsockname()[:2]
        self._address = (host, port)

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address (the real port when 0 was asked for)."""
        return self._address

    def listen_url(self) -> str:
        """The listening side as a URL with the bound port, e.g. ``tcp://127.0.0.1:40123``."""
        return TunnelAddress(self.listen.scheme, *self._address).url()

    @property
    def endpoint(self) -> ClientEndpoint | None:
        """The client end's shared UDP endpoint (None on the server end)."""
        return self._endpoint

    # -------------------------------------------------------------------- accepting

    def _begin(self, peer: Any) -> _Relay | None:
        task = asyncio.current_task()
        if self._closing or task is None:
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        relay = _Relay(self, self._next_id, _format_peer(peer))
        self._next_id += 1
        self._relays[relay.id] = relay
        self.counters.connections += 1
        self.counters.active += 1
        _log.debug("tunnel_connection_opened", conn=relay.id, peer=relay.peer)
        return relay

    def count_bytes(self, direction: str, nbytes: int) -> None:
        """Add ``nbytes`` relayed in ``direction`` (``"up"``: toward ``to``) to the counters."""
        if direction == "up":
            self.counters.bytes_up += nbytes
        else:
            self.counters.bytes_down += nbytes

    def _end(self, relay: _Relay, reason: str) -> None:
        self._relays.pop(relay.id, None)
        c = self.counters
        c.active -= 1
        if reason == "closed":
            c.closed += 1
        else:
            c.errors[reason.split(":")[0]] += 1
        record = relay.record(reason)
        _log.info(
            "tunnel_connection_closed",
            conn=record.id,
            peer=record.peer,
            bytes_up=record.bytes_up,
            bytes_down=record.bytes_down,
            duration_s=round(record.duration_s, 3),
            retransmissions=record.retransmissions,
            reason=record.reason,
        )
        if self._on_close is not None:
            self._on_close(record)

    async def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client end: a TCP connection arrived."""
        await self._serve((reader, writer), "tcp")

    async def _accept_utcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Server end: a utcp connection arrived."""
        await self._serve((reader, writer), "utcp")

    async def _serve(self, near: Streams, side: Scheme) -> None:
        """Open the far side for an accepted connection, relay, and record how it ended."""
        writer = near[1]
        relay = self._begin(writer.get_extra_info("peername"))
        if relay is None:
            _reset(writer, side)
            return
        if side == "tcp":
            relay.tcp = writer
        else:
            relay.utcp = writer
        reason = "tunnel closed"
        try:
            try:
                far = await asyncio.wait_for(self._open_far(), self.connect_timeout_s)
            except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                reason = _connect_failure(self.to.scheme, exc)
                relay.reset()
                return
            tcp, utcp = (near, far) if side == "tcp" else (far, near)
            reason = await relay.run(tcp, utcp, tcp_listens=side == "tcp")
        except asyncio.CancelledError:
            relay.reset()
            if not self._closing:
                raise
            # Cancelled by close(): end normally. Python 3.11's StreamReaderProtocol asks a
            # finished callback task for its exception, which raises if it was cancelled.
        except Exception as exc:  # a bug here must not stop the tunnel; reset and report it
            relay.reset()
            reason = f"internal error: {exc!r}"
        finally:
            self._end(relay, reason)

    async def _open_far(self) -> Streams:
        if self.to.scheme == "utcp":
            assert self._endpoint is not None
            return await self._endpoint.open_connection(
                self.to.host,
                self.to.port,
                limit=STREAM_LIMIT_BYTES,
                ssl=self.ssl,
                server_hostname=self.server_hostname,
            )
        return await asyncio.open_connection(self.to.host, self.to.port, limit=STREAM_LIMIT_BYTES)

    # -------------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Stop accepting and reset every open connection (both sides see a reset)."""
        if self._closing:
            return
        self._closing = True
        if self._tcp_server is not None:
            self._tcp_server.close()
        if self._utcp_server is not None:
            self._utcp_server.close()
        for relay in list(self._relays.values()):
            relay.reset()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until every relay has ended and every socket is closed."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        # Aborted connections need no TIME_WAIT, and cleanly closed ones already answered
        # their peer's FIN: the sockets close now rather than after 2 MSL.
        if self._utcp_server is not None:
            self._utcp_server.endpoint.abort_all()
            await self._utcp_server.wait_closed()
        if self._endpoint is not None:
            self._endpoint.abort()
            await self._endpoint.wait_closed()
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _connect_failure(side: Scheme, exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"{side} connect refused"
    if isinstance(exc, SSLCertVerificationError):
        return f"{side} TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, SSLError):
        return f"{side} TLS failed: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"{side} connect timeout"
    return f"{side} connect failed: {type(exc).__name__}"


async def _local_for(to: TunnelAddress) -> dict[str, Any]:
    """Where the client end's UDP socket binds: the loopback address when the far end is on
    this host (nothing else needs to reach it), else every interface of the far end's family."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(to.host, to.port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"getaddrinfo({to.host!r}) returned no addresses")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, addr = infos[0]
    host = str(addr[0])
    if ipaddress.ip_address(host.split("%")[0]).is_loopback:
        return {"family": family, "local_addr": (host, 0)}
    return {"family": family}
