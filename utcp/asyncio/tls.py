"""TLS over utcp connections, by the standard library: ``ssl`` driven by asyncio's own TLS
layer (``asyncio.sslproto.SSLProtocol``) over a ``UtcpTransport``, exactly as asyncio layers TLS
over a TCP socket.  No cryptography here: this module only wires asyncio's layer in, checks the
keywords as asyncio checks them, and offers ``start_tls`` on every event loop (uvloop's own
``loop.start_tls`` accepts only its TCP transports).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

from .transport import UtcpTransport

__all__ = ["StreamWriter", "TlsOptions", "start_tls", "tls_options"]


class TlsOptions:
    """The TLS keywords of one open or serve call, checked as asyncio checks them."""

    __slots__ = ("context", "handshake_timeout", "server_hostname", "shutdown_timeout")

    def __init__(
        self,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
        handshake_timeout: float | None,
        shutdown_timeout: float | None,
    ) -> None:
        self.context = context
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout

    def protocol(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None,
        *,
        server_side: bool,
        call_connection_made: bool = True,
    ) -> asyncio.BaseProtocol:
        """asyncio's TLS layer around ``app_protocol``: the protocol the utcp transport
        drives; ``app_protocol`` sees the TLS transport."""
        return _ssl_protocol(
            loop,
            app_protocol,
            self.context,
            waiter,
            server_side=server_side,
            server_hostname=self.server_hostname,
            call_connection_made=call_connection_made,
            handshake_timeout=self.handshake_timeout,
            shutdown_timeout=self.shutdown_timeout,
        )


def tls_options(
    ssl_arg: ssl.SSLContext | bool | None,
    *,
    server_side: bool,
    host: Any = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> TlsOptions | None:
    """The TLS settings ``ssl=`` and its companions ask for, or None for a plain connection;
    the same ``ValueError``/``TypeError`` as asyncio's ``create_connection``/``create_server``
    for combinations that make no sense."""
    if server_side and isinstance(ssl_arg, bool):
        # As asyncio's create_server: a server needs its certificate, so even False is refused.
        raise TypeError("ssl argument must be an SSLContext or None")
    if not ssl_arg:
        if server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        return None
    for name, value in (
        ("ssl_handshake_timeout", ssl_handshake_timeout),
        ("ssl_shutdown_timeout", ssl_shutdown_timeout),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} should be a positive number, got {value}")
    if ssl_shutdown_timeout is not None and sys.version_info < (3, 11):
        raise TypeError("ssl_shutdown_timeout needs Python 3.11 (asyncio's TLS layer)")
    if server_side:
        if not isinstance(ssl_arg, ssl.SSLContext):
            raise TypeError("ssl argument must be an SSLContext or None")
        context: ssl.SSLContext | None = ssl_arg
    else:
        if isinstance(ssl_arg, ssl.SSLContext):
            context = ssl_arg
        elif ssl_arg is True:
            context = None  # asyncio's secure default context, made by its TLS layer
        else:
            raise TypeError("ssl argument must be an SSLContext, a bool or None")
        if server_hostname is None:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
    return TlsOptions(context, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)


class _SSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS layer, handing a ``BufferedProtocol``'s buffer to ``ssl`` as a
    ``memoryview``.  Its buffered read (Python 3.11 on) fills the buffer in several reads and
    gives the later ones ``buf[offset:]``, which for a ``bytearray`` is a copy: those bytes were
    lost and the protocol saw what its buffer held before (a 5 MB transfer with a 100-byte
    ``bytearray`` arrived the right length but corrupted).  uvloop's own TLS, which its TCP
    connections use, has no such fault; utcp's connections use asyncio's layer on every
    loop."""

    _app_protocol_get_buffer: Callable[[int], Any]
    # A STARTTLS given up before its handshake finished (cancelled, timed out): the
    # application's protocol, which had its connection_made on the plain transport, hears of
    # the connection's end, which asyncio's layer tells nobody while in its handshake.
    tell_app_when_lost = False

    def connection_lost(self, exc: BaseException | None) -> None:
        app = self._app_protocol
        layer: Any = sslproto  # its states are not in the type stubs
        state, app_state = self._state, self._app_state  # type: ignore[attr-defined]
        told = state != layer.SSLProtocolState.DO_HANDSHAKE and app_state in (
            layer.AppProtocolState.STATE_CON_MADE,
            layer.AppProtocolState.STATE_EOF,
        )
        super().connection_lost(exc)
        if self.tell_app_when_lost and not told and app is not None:
            self._loop.call_soon(app.connection_lost, exc if isinstance(exc, Exception) else None)

    def _set_app_protocol(self, app_protocol: asyncio.BaseProtocol) -> None:
        super()._set_app_protocol(app_protocol)
        if self._app_protocol_is_buffer:
            get_buffer = self._app_protocol_get_buffer

            def as_view(sizehint: int) -> memoryview:
                return memoryview(get_buffer(sizehint)).cast("B")

            self._app_protocol_get_buffer = as_view


def _ssl_protocol(
    loop: asyncio.AbstractEventLoop,
    app_protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext | None,
    waiter: asyncio.Future[None] | None,
    *,
    server_side: bool,
    server_hostname: str | None,
    call_connection_made: bool,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
) -> asyncio.BaseProtocol:
    kwargs: dict[str, Any] = {
        "call_connection_made": call_connection_made,
        "ssl_handshake_timeout": handshake_timeout,
    }
    if sys.version_info >= (3, 11):
        kwargs["ssl_shutdown_timeout"] = shutdown_timeout
    make: Any = (
        _SSLProtocol
        if hasattr(sslproto.SSLProtocol, "_set_app_protocol")
        else (sslproto.SSLProtocol)
    )
    protocol: asyncio.BaseProtocol = make(
        loop,
        app_protocol,
        context,
        waiter,
        server_side,
        server_hostname,
        **kwargs,
    )
    return protocol


def app_transport(protocol: asyncio.BaseProtocol) -> asyncio.Transport:
    """The TLS transport asyncio's layer gives the application."""
    transport: asyncio.Transport = protocol._app_transport  # type: ignore[attr-defined]
    return transport


async def start_tls(
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    sslcontext: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.Transport:
    """Upgrade a utcp connection to TLS, as ``loop.start_tls``: returns the new transport that
    ``protocol`` should use from now on.  Works on every event loop, uvloop's included."""
    if not isinstance(sslcontext, ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    assert isinstance(transport, asyncio.Transport)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    options = TlsOptions(sslcontext, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
    ssl_protocol = options.protocol(
        loop, protocol, waiter, server_side=server_side, call_connection_made=False
    )
    # Paused first, so that no data reaches the TLS layer before its connection_made().
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    conmade = loop.call_soon(ssl_protocol.connection_made, transport)
    resume = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException as exc:
        transport.close()
        conmade.cancel()
        resume.cancel()
        if _lost_in_handshake(ssl_protocol):
            loop.call_soon(protocol.connection_lost, exc if isinstance(exc, Exception) else None)
        elif isinstance(ssl_protocol, _SSLProtocol):
            ssl_protocol.tell_app_when_lost = True  # the end comes once the close is done
        raise
    return app_transport(ssl_protocol)


def _lost_in_handshake(ssl_protocol: asyncio.BaseProtocol) -> bool:
    """Whether the connection ended while asyncio's TLS layer was in its handshake, which
    then tells the application's protocol nothing (Python 3.11 on): the peer reset it (its
    own handshake failed, it was killed) or it timed out.  Over TCP such a peer's close is
    usually an EOF, which the layer does report, so a stream's ``wait_closed()`` returns;
    without this it waited for ever."""
    state = getattr(ssl_protocol, "_app_state", None)
    lost = getattr(ssl_protocol, "_conn_lost", 0)
    return bool(lost) and state is not None and state.name != "STATE_CON_LOST"


class StreamWriter(asyncio.StreamWriter):
    """asyncio's ``StreamWriter`` whose ``start_tls()`` (STARTTLS) works on every event loop:
    it upgrades through ``utcp.start_tls`` rather than the loop's own; and whose ``drain()``
    raises after ``close()`` or ``abort()`` as soon as asyncio's would."""

    async def drain(self) -> None:
        """As asyncio's: wait until the write buffer is below its high-water mark.  A closed
        or aborted stream whose writing is not paused raises ``ConnectionResetError`` (or the
        connection's own error) one loop turn after close(), as asyncio's does once its
        transport has handed the bytes to the kernel: utcp's transport reports
        connection_lost only when the peer has acknowledged the FIN (``wait_closed()`` means
        delivered), so without this a ``write(); await drain()`` loop after close() would not
        see the error.  Paused (more than the high-water mark still buffered), it waits as
        asyncio's does."""
        transport = self.transport
        # Over TLS the transport is asyncio's own, whose close exchange (close_notify) takes
        # a while: drain() returns meanwhile, as over asyncio's TCP with TLS.
        if transport.is_closing() and isinstance(transport, UtcpTransport):
            await asyncio.sleep(0)
            protocol: Any = self._protocol  # type: ignore[attr-defined]
            if not protocol._connection_lost and not protocol._paused:
                reader: Any = self._reader  # type: ignore[attr-defined]
                exc = reader.exception() if reader is not None else None
                if exc is not None:
                    raise exc
                raise ConnectionResetError("Connection lost")
        await super().drain()

    async def start_tls(
        self,
        sslcontext: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        """Upgrade the connection to TLS; reads and writes go through it afterwards."""
        protocol: Any = self._protocol  # type: ignore[attr-defined]
        server_side = protocol._client_connected_cb is not None
        await self.drain()
        new_transport = await start_tls(
            self.transport,
            protocol,
            sslcontext,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        self._transport = new_transport
        replace = getattr(protocol, "_replace_writer", None)
        if replace is not None:
            replace(self)
        else:  # Python 3.10's protocol keeps the transport it was made with
            protocol._transport = new_transport
            protocol._over_ssl = True
