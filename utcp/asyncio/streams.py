"""The public asyncio API: ``open_connection``/``start_server`` (streams) and
``create_connection``/``create_server`` (protocols), shaped exactly like asyncio's own.

Streams are the standard library's ``StreamReader``/``StreamWriter`` over a ``UtcpTransport``,
so ``drain()``, ``readexactly()``, ``readuntil()`` and their exceptions behave as users expect.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import sys
from asyncio import staggered
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from ..config import Config, given
from .dgram import DatagramIO, create_endpoint
from .endpoint import Endpoint, Observer
from .resolve import AddrInfo, check_observer, check_port, check_proto, resolve_all
from .resolve import interleave as interleave_families
from .server import Server, create_server
from .sockview import SocketView
from .tls import StreamWriter, TlsOptions, app_transport, tls_options
from .transport import UtcpTransport

_DEFAULT_LIMIT = 2**16  # asyncio.streams' default buffer limit
T = TypeVar("T")
P = TypeVar("P", bound=asyncio.BaseProtocol)

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None
]


async def create_connection(
    protocol_factory: Callable[[], P],
    host: str | None = None,
    port: int | str | None = None,
    *,
    ssl: Any = None,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: socket.socket | None = None,
    local_addr: tuple[str, int] | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    happy_eyeballs_delay: float | None = None,
    interleave: int | None = None,
    all_errors: bool = False,
    config: Config | None = None,
    observer: Observer | None = None,
) -> tuple[asyncio.Transport, P]:
    """Open a utcp connection and attach ``protocol_factory()`` to it, like
    ``loop.create_connection`` (the same keywords, the same errors).  Raises
    ``ConnectionRefusedError`` when nobody listens and ``TimeoutError`` when the handshake goes
    unanswered; with ``ssl=``, ``ssl.SSLCertVerificationError`` (and the other ``ssl``
    errors) when the TLS handshake fails.

    Where ``host`` names several addresses they are tried in turn, each with its own socket;
    ``happy_eyeballs_delay`` starts the next attempt after that many seconds without waiting
    for the previous one to fail (RFC 8305, as asyncio), and the first handshake to complete
    wins.  ``sock`` is a UDP socket already connected to the server.
    """
    cfg = given(config)
    check_proto(proto)
    check_observer(observer)
    tls = tls_options(
        ssl,
        server_side=False,
        host=host,
        server_hostname=server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    if sock is not None:
        if host is not None or port is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP socket was expected, got {sock!r}")
        try:
            sock.getpeername()
        except OSError as exc:
            # A client's socket names its server by being connected (asyncio's transports
            # fail on an unconnected one too); unconnected, the handshake went nowhere and
            # waited out every SYN retry.
            raise OSError(errno.ENOTCONN, f"sock must be a connected UDP socket: {exc}") from None
        _udp, endpoint = await create_endpoint(
            lambda: Endpoint(config=cfg, observer=observer), config=cfg, sock=sock
        )
        return await _connect_on(endpoint, None, protocol_factory, single=True, tls=tls)
    if host is None and port is None:
        raise ValueError("host and port was not specified and no sock specified")
    infos = await resolve_all(host, check_port(port), passive=False, family=family, flags=flags)
    if happy_eyeballs_delay is not None and interleave is None:
        interleave = 1  # RFC 8305's default, as asyncio's
    if interleave:
        infos = interleave_families(infos, interleave)

    async def attempt(info: AddrInfo) -> tuple[asyncio.Transport, P]:
        fam, remote = info
        _udp, endpoint = await create_endpoint(
            lambda: Endpoint(config=cfg, observer=observer),
            config=cfg,
            local_addr=local_addr,
            remote_addr=remote,
            family=fam,
        )
        return await _connect_on(endpoint, None, protocol_factory, single=True, tls=tls)

    if len(infos) == 1 and not all_errors:
        return await attempt(infos[0])
    errors: list[Exception] = []
    if happy_eyeballs_delay is None:
        for info in infos:
            try:
                return await attempt(info)
            except OSError as exc:
                errors.append(exc)
    else:
        factories = [functools.partial(attempt, info) for info in infos]
        winner, _index, exceptions = await staggered.staggered_race(factories, happy_eyeballs_delay)
        if winner is not None:
            return winner  # type: ignore[no-any-return]
        errors = [exc for exc in exceptions if isinstance(exc, Exception)]
    raise _combined(errors, all_errors)


def _combined(errors: list[Exception], all_errors: bool) -> Exception:
    """What failed attempts raise, as asyncio's ``create_connection``: the one error, or one
    ``OSError`` naming them all (an ``ExceptionGroup`` with ``all_errors=True``)."""
    if all_errors and sys.version_info >= (3, 11):
        return ExceptionGroup("create_connection failed", errors)  # noqa: F821
    if len(errors) == 1 or len({str(exc) for exc in errors}) == 1:
        return errors[0]
    return OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


async def _connect_on(
    endpoint: Endpoint,
    addr: Any,
    protocol_factory: Callable[[], P],
    *,
    single: bool,
    tls: TlsOptions | None = None,
) -> tuple[asyncio.Transport, P]:
    """Open one connection on ``endpoint`` and attach its protocol (inside asyncio's TLS
    layer with ``tls``); on failure leave nothing behind (a single-connection endpoint's
    socket is released before raising, as asyncio does)."""
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
    if tls is None:
        transport.attach(protocol)
        return transport, protocol
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    try:
        # asyncio's TLS layer makes its SSL object here: a context or server name it cannot
        # use raises before any handshake, and the connection must not outlive the error.
        ssl_protocol = tls.protocol(loop, protocol, waiter, server_side=False)
        transport.attach(ssl_protocol)
        await waiter
    except BaseException as exc:
        transport.abort()
        if single:
            endpoint.abort_all()
            if isinstance(exc, Exception):
                await endpoint.wait_closed()
        raise
    return app_transport(ssl_protocol), protocol


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
        return (SocketView(sock, None),)

    async def create_connection(
        self,
        protocol_factory: Callable[[], P],
        host: str,
        port: int | str,
        *,
        ssl: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, P]:
        """Open a connection to ``host:port`` and attach ``protocol_factory()`` to it (inside
        TLS with ``ssl=``, as ``utcp.create_connection``)."""
        if self._endpoint.transport is None or self._endpoint.closing:
            raise RuntimeError("the client endpoint is closed")
        tls = tls_options(
            ssl,
            server_side=False,
            host=host,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        infos = await resolve_all(host, check_port(port), passive=False, family=self._family)
        _fam, addr = infos[0]
        return await _connect_on(self._endpoint, addr, protocol_factory, single=False, tls=tls)

    async def open_connection(
        self,
        host: str,
        port: int | str,
        *,
        limit: int = _DEFAULT_LIMIT,
        ssl: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection to ``host:port``; returns ``(StreamReader, StreamWriter)``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(
            lambda: protocol,
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        return reader, StreamWriter(transport, protocol, reader, loop)

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
    family: int = socket.AF_UNSPEC,
    observer: Observer | None = None,
) -> ClientEndpoint:
    """A UDP socket for opening many utcp connections (bound to ``local_addr``, or to an
    ephemeral port on every interface of ``family``).  Without ``family`` it is the family
    of ``local_addr`` (an IPv6 address makes an IPv6 socket), else IPv4."""
    cfg = given(config)
    check_observer(observer)
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


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a utcp connection; returns asyncio's own ``(StreamReader, StreamWriter)`` (the
    writer's ``start_tls()`` works on every event loop).  Keywords as
    ``utcp.create_connection``: ``ssl=``, ``server_hostname=``, ``family=``, ``sock=``,
    ``local_addr=``, ``happy_eyeballs_delay=``, ``config=`` ..."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, **kwds)
    writer = StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | Iterable[str] | None = None,
    port: int | str | None = None,
    *,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> Server:
    """Start a utcp server; ``client_connected_cb(reader, writer)`` runs per connection.
    Keywords as ``utcp.create_server``: ``ssl=``, ``backlog=``, ``reuse_port=``,
    ``start_serving=``, ``family=``, ``sock=``, ``config=`` ..."""
    loop = asyncio.get_running_loop()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        # The writer asyncio's protocol made gains utcp's start_tls() (uvloop's own refuses
        # utcp's transport): the same object, its class narrowed to a subclass with no state.
        writer.__class__ = StreamWriter
        return client_connected_cb(reader, writer)

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, connected, loop=loop)

    return await create_server(factory, host, port, **kwds)


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
