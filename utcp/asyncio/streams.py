"""The public asyncio API: ``open_connection``/``start_server`` (streams) and
``create_connection``/``create_server`` (protocols), shaped exactly like asyncio's own.

Streams are the standard library's ``StreamReader``/``StreamWriter`` over a ``UtcpTransport``,
so ``drain()``, ``readexactly()``, ``readuntil()`` and their exceptions behave as users expect.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..config import Config
from .dgram import DatagramIO, create_endpoint
from .endpoint import Endpoint, Observer
from .transport import UtcpTransport

_DEFAULT_LIMIT = 2**16  # asyncio.streams' default buffer limit
T = TypeVar("T")
P = TypeVar("P", bound=asyncio.BaseProtocol)

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None
]


async def _resolve(
    host: str | None, port: int, *, passive: bool, family: int = 0
) -> tuple[int, Any]:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host,
        port,
        family=family,
        type=socket.SOCK_DGRAM,
        flags=socket.AI_PASSIVE if passive else 0,
    )
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned no addresses")
    # Prefer IPv4 for a wildcard bind: it is what "all interfaces" means for most users.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, addr = infos[0]
    return family, addr


async def create_connection(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    *,
    config: Config | None = None,
    local_addr: tuple[str, int] | None = None,
    observer: Observer | None = None,
) -> tuple[asyncio.Transport, P]:
    """Open a utcp connection and attach ``protocol_factory()`` to it, like
    ``loop.create_connection``.  Raises ``ConnectionRefusedError`` when nobody listens and
    ``TimeoutError`` when the handshake goes unanswered.
    """
    cfg = (config or Config()).validate()
    family, remote = await _resolve(host, port, passive=False)
    _udp, endpoint = await create_endpoint(
        lambda: Endpoint(config=cfg, observer=observer),
        config=cfg,
        local_addr=local_addr,
        remote_addr=remote[:2],
        family=family,
    )
    return await _connect_on(endpoint, None, protocol_factory, single=True)


async def _connect_on(
    endpoint: Endpoint, addr: Any, protocol_factory: Callable[[], P], *, single: bool
) -> tuple[asyncio.Transport, P]:
    """Open one connection on ``endpoint`` and attach its protocol; on failure leave nothing
    behind (a single-connection endpoint's socket is released before raising, as asyncio does).
    """
    handle = endpoint.connect(addr)
    assert handle.waiter is not None
    try:
        await handle.waiter
    except BaseException as exc:
        if single:
            endpoint.abort_all()
            if isinstance(exc, Exception):
                await endpoint.wait_closed()
        elif handle.conn.close_reason is None:
            handle.conn.abort()
            endpoint.service(handle)
        raise
    transport = handle.transport
    assert isinstance(transport, UtcpTransport)
    try:
        protocol = protocol_factory()
    except Exception:
        transport.abort()  # leave no half-made connection (and socket) behind, as asyncio does
        if single:
            await endpoint.wait_closed()
        raise
    transport.attach(protocol)
    return transport, protocol


class ClientEndpoint:
    """One UDP socket from which many utcp connections are opened (a tunnel, a pool).

    Each ``open_connection``/``create_connection`` call makes a new connection with its own
    connection id over the same socket; the socket stays open until ``close()``.
    """

    def __init__(self, endpoint: Endpoint, udp: DatagramIO, family: int) -> None:
        self._endpoint = endpoint
        self._udp = udp
        self._family = family

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint carrying the connections (its ``stats`` count datagrams and drops)."""
        return self._endpoint

    @property
    def stats(self) -> dict[str, object]:
        """The endpoint's totals, as ``Server.stats``."""
        return self._endpoint.totals()

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The UDP socket (empty once closing)."""
        sock = self._udp.get_extra_info("socket")
        endpoint = self._endpoint
        if sock is None or endpoint.transport is None or endpoint.closing:
            return ()  # as asyncio.Server.sockets once closed (TIME_WAIT may still hold it)
        return (sock,)

    async def create_connection(
        self, protocol_factory: Callable[[], P], host: str, port: int
    ) -> tuple[asyncio.Transport, P]:
        """Open a connection to ``host:port`` and attach ``protocol_factory()`` to it."""
        if self._endpoint.transport is None or self._endpoint.closing:
            raise RuntimeError("the client endpoint is closed")
        family, remote = await _resolve(host, port, passive=False, family=self._family)
        addr = remote[:2] if family == socket.AF_INET else remote
        return await _connect_on(self._endpoint, addr, protocol_factory, single=False)

    async def open_connection(
        self, host: str, port: int, *, limit: int = _DEFAULT_LIMIT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection to ``host:port``; returns ``(StreamReader, StreamWriter)``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def close(self) -> None:
        """Open no more connections; the socket closes once the open ones have ended."""
        self._endpoint.close()

    def abort(self) -> None:
        """Reset every connection and close the socket now."""
        self._endpoint.abort_all()

    async def wait_closed(self) -> None:
        """Wait until the endpoint is closed and its connections have ended; one the peer
        closed second may still be in TIME_WAIT, which ends on its own (the socket closes
        then, or when the event loop shuts down)."""
        await self._endpoint.wait_done()

    async def __aenter__(self) -> ClientEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def create_client_endpoint(
    *,
    config: Config | None = None,
    local_addr: tuple[str, int] | None = None,
    family: int = socket.AF_INET,
    observer: Observer | None = None,
) -> ClientEndpoint:
    """A UDP socket for opening many utcp connections (bound to ``local_addr``, or to an
    ephemeral port on every interface of ``family``)."""
    cfg = (config or Config()).validate()
    if local_addr is None:
        local_addr = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    udp, endpoint = await create_endpoint(
        lambda: Endpoint(config=cfg, observer=observer, persistent=True),
        config=cfg,
        local_addr=local_addr,
        family=family,
    )
    sock = udp.get_extra_info("socket")
    return ClientEndpoint(endpoint, udp, sock.family if sock is not None else family)


class Server:
    """A utcp server, with the interface of ``asyncio.Server``."""

    def __init__(self, endpoint: Endpoint, udp: DatagramIO) -> None:
        self._endpoint = endpoint
        self._udp = udp
        self._loop = asyncio.get_running_loop()
        self._serving = True
        self._serving_forever: asyncio.Future[None] | None = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening UDP socket (empty once closed, as with ``asyncio.Server``)."""
        if not self._serving or self._endpoint.transport is None:
            return ()
        sock = self._udp.get_extra_info("socket")
        return (sock,) if sock is not None else ()

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint carrying this server's connections (its ``stats`` count drops)."""
        return self._endpoint

    @property
    def stats(self) -> dict[str, object]:
        """The endpoint's totals: datagrams and bytes each way, drops by reason (its own and
        its connections'), resets, SYN cookies, refusals, and the connections open now."""
        return self._endpoint.totals()

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        """Servers start serving when created; present for asyncio compatibility."""

    def close(self) -> None:
        """Stop accepting connections; open ones carry on, then the socket closes."""
        if not self._serving:
            return
        self._serving = False
        self._endpoint.close()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    def close_clients(self) -> None:
        """Close every open connection gracefully."""
        for transport in self._transports():
            transport.close()

    def abort_clients(self) -> None:
        """Reset every open connection."""
        for transport in self._transports():
            transport.abort()

    def _transports(self) -> list[UtcpTransport]:
        return [
            h.transport
            for h in self._endpoint.handles()
            if isinstance(h.transport, UtcpTransport) and not h.transport.is_closing()
        ]

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections have ended, as asyncio's does.
        Connections in TIME_WAIT (the server closed first) are not waited for: it runs its
        course in the background and the socket closes after it, or when the event loop shuts
        down (``server.endpoint.wait_closed()`` waits for that)."""
        if self._serving:
            return
        await self._endpoint.wait_done()

    async def serve_forever(self) -> None:
        """Serve until cancelled; then close the server."""
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if not self._serving:
            raise RuntimeError("the server is closed")
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int = 0,
    *,
    backlog: int = 100,
    config: Config | None = None,
    reuse_port: bool | None = None,
    observer: Observer | None = None,
) -> Server:
    """Listen for utcp connections on a UDP port, like ``loop.create_server``.

    ``port=0`` picks a free port: read it from ``server.sockets[0].getsockname()``.
    """
    if backlog < 1:
        raise ValueError(f"backlog must be >= 1, not {backlog!r}")
    cfg = (config or Config()).validate()
    family, local = await _resolve(host, port, passive=True)
    udp, endpoint = await create_endpoint(
        lambda: Endpoint(
            config=cfg, protocol_factory=protocol_factory, backlog=backlog, observer=observer
        ),
        config=cfg,
        local_addr=local[:2] if family == socket.AF_INET else local,
        family=family,
        reuse_port=reuse_port,
    )
    return Server(endpoint, udp)


async def open_connection(
    host: str,
    port: int,
    *,
    limit: int = _DEFAULT_LIMIT,
    config: Config | None = None,
    local_addr: tuple[str, int] | None = None,
    observer: Observer | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a utcp connection; returns asyncio's own ``(StreamReader, StreamWriter)``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(
        lambda: protocol, host, port, config=config, local_addr=local_addr, observer=observer
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | None = None,
    port: int = 0,
    *,
    limit: int = _DEFAULT_LIMIT,
    backlog: int = 100,
    config: Config | None = None,
    observer: Observer | None = None,
) -> Server:
    """Start a utcp server; ``client_connected_cb(reader, writer)`` runs per connection."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(
        factory, host, port, backlog=backlog, config=config, observer=observer
    )


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run`` on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main, debug=debug)
    if hasattr(uvloop, "run"):
        return uvloop.run(main, debug=debug)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover
    return asyncio.run(main, debug=debug)  # pragma: no cover
