"""One stream interface over every connection-oriented peer: ``serve`` and ``connect``.

Each adapter hands the scenarios asyncio's own ``StreamReader``/``StreamWriter`` and hides how its
library opens, accepts and closes.  Imports happen inside the adapter that needs them, so a
missing optional package only matters to its own peer.  utcp and kernel TCP take a directory of
the run's TLS certificates (``_tls.py``) and then serve and connect over TLS 1.3.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]

BACKLOG = 1024  # the "many" scenario opens 200 connections at once
# What utcp's endpoint asks for.  Every UDP-based peer gets the same, so none loses datagrams
# to a small kernel queue that another is spared; aiokcp cannot finish "many" without it.
UDP_SOCKET_BUFFER_BYTES = 4 << 20
ALPN = "utcp-bench"
# aiokcp's documented fast mode (nodelay 1, interval 10 ms, resend 2, no congestion control)
# with 512-packet windows; its defaults are a 100 ms interval and 32/128-packet windows.
KCP_FAST = {
    "no_delay": True,
    "update_interval": 10,
    "resend_count": 2,
    "no_congestion_control": True,
    "send_window_size": 512,
    "receive_window_size": 512,
}
# The utcp Config fields each utcp variant (_peers.UTCP_VARIANTS) sets; everything else keeps
# its default, socket buffers included (what a user gets without tuning).  The I/O path is
# named explicitly, so the UTCP_IO environment variable changes only the "default" variant.
UTCP_CONFIGS: dict[str, dict[str, Any]] = {
    "portable": {"io_path": "portable", "pmtud": False},  # 1452-byte datagrams
    "fast": {"io_path": "fast", "pmtud": False},  # 1452-byte datagrams
    "pmtud": {"io_path": "fast", "pmtud": True},  # probes up to max_datagram_bytes (65507)
    "default": {},  # Config(): io_path "auto", PMTU discovery on
}


def grow_buffers(sock: socket.socket | None) -> None:
    """Best effort: the kernel caps the size at net.core.rmem_max / wmem_max."""
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_SOCKET_BUFFER_BYTES)


class Adapter:
    """``serve`` starts a listener and returns its port; ``connect`` yields a stream pair;
    ``finish`` is how a server handler lets go of a connection it is done with;
    ``settings`` is what this peer sets away from its library's defaults (every result
    records it); ``observed`` is what a client's first connection turned out to use (utcp's
    I/O path, the TLS version and cipher negotiated), which the client's result records."""

    def __init__(self) -> None:
        self.observed: dict[str, Any] = {}
        self._looked = False

    def _observe(self, writer: asyncio.StreamWriter) -> None:
        if self._looked:  # once: connect's timed loop opens thousands
            return
        self._looked = True
        endpoint = writer.get_extra_info("endpoint")  # utcp's, through TLS too
        if endpoint is not None:
            self.observed["io_path"] = endpoint.io_path
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.observed.update(
                tls_version=ssl_object.version(), tls_cipher=ssl_object.cipher()[0]
            )

    def settings(self) -> dict[str, Any]:
        return {}

    async def serve(self, handler: Handler, host: str) -> int:
        raise NotImplementedError

    def connect(self, host: str, port: int) -> contextlib.AbstractAsyncContextManager[Streams]:
        raise NotImplementedError

    def finish(self, writer: asyncio.StreamWriter) -> None:
        writer.close()


class _TlsContexts:
    """The server's and the client's TLS contexts from the run's certificates, or None each."""

    def __init__(self, tls_dir: Path | None) -> None:
        self.server_ssl: ssl.SSLContext | None = None
        self.client_ssl: ssl.SSLContext | None = None
        if tls_dir is not None:
            from _tls import client_context, server_context

            self.server_ssl = server_context(tls_dir)
            self.client_ssl = client_context(tls_dir)


class UtcpAdapter(Adapter):
    """utcp's streams with the ``Config`` of one variant, on the server and the client, over
    TLS when given the run's certificates."""

    def __init__(self, variant: str, tls_dir: Path | None = None) -> None:
        import utcp

        super().__init__()
        self.changes = dict(UTCP_CONFIGS[variant])
        self.config = utcp.Config(**self.changes).validate()
        self.tls = _TlsContexts(tls_dir)

    def settings(self) -> dict[str, Any]:
        return dict(self.changes)

    async def serve(self, handler: Handler, host: str) -> int:
        import utcp

        self.server = await utcp.start_server(
            handler, host, 0, backlog=BACKLOG, config=self.config, ssl=self.tls.server_ssl
        )
        return int(self.server.sockets[0].getsockname()[1])

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[Streams]:
        import utcp

        reader, writer = await utcp.open_connection(
            host, port, config=self.config, ssl=self.tls.client_ssl
        )
        self._observe(writer)
        try:
            yield reader, writer
        finally:
            writer.close()
            await writer.wait_closed()


class TcpAdapter(Adapter):
    """Kernel TCP through asyncio's streams, over TLS when given the run's certificates."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        super().__init__()
        self.tls = _TlsContexts(tls_dir)

    async def serve(self, handler: Handler, host: str) -> int:
        self.server = await asyncio.start_server(
            handler, host, 0, backlog=BACKLOG, ssl=self.tls.server_ssl
        )
        return int(self.server.sockets[0].getsockname()[1])

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[Streams]:
        reader, writer = await asyncio.open_connection(host, port, ssl=self.tls.client_ssl)
        self._observe(writer)
        try:
            yield reader, writer
        finally:
            writer.close()
            await writer.wait_closed()


class AioquicAdapter(Adapter):
    """QUIC with one bidirectional stream per connection.

    The client opens the stream by sending first (every scenario does), which is when aioquic
    calls the server's stream handler.  aioquic's stream writers never see ``connection_lost``,
    so their ``wait_closed()`` would hang: closing is the connection's ``close()``, which waits
    out QUIC's closing period (three probe timeouts) before it returns.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, handler: Handler, host: str) -> int:
        from aioquic.asyncio.server import serve
        from aioquic.quic.configuration import QuicConfiguration

        config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        config.certificate, config.private_key = _self_signed_certificate()
        loop = asyncio.get_running_loop()

        def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = loop.create_task(handler(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self.server = await serve(host, 0, configuration=config, stream_handler=on_stream)
        assert self.server._transport is not None
        sock = self.server._transport.get_extra_info("socket")
        grow_buffers(sock)
        return int(sock.getsockname()[1])

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[Streams]:
        from aioquic.asyncio.client import connect
        from aioquic.quic.configuration import QuicConfiguration

        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
        async with connect(host, port, configuration=config) as protocol:
            assert protocol._transport is not None
            grow_buffers(protocol._transport.get_extra_info("socket"))
            reader, writer = await protocol.create_stream()
            if not self._looked:
                self._looked = True
                # aioquic's own TLS 1.3; the suite it negotiated is only on private attributes
                tls = getattr(getattr(protocol, "_quic", None), "tls", None)
                suite = getattr(getattr(tls, "key_schedule", None), "cipher_suite", None)
                if suite is not None:
                    self.observed.update(tls_version="TLSv1.3", tls_cipher=f"TLS_{suite.name}")
            yield reader, writer


class AiokcpAdapter(Adapter):
    """KCP through aiokcp's stream API.

    aiokcp has no handshake, no end-of-stream and no write backpressure (``drain()`` never
    waits); every scenario knows its byte counts, so none relies on EOF.  The server's timers run
    only once ``start_serving()`` is called.  Its UDP sockets are not public: they are reached
    through private ``_transport`` attributes.
    """

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.kcp_kwargs: dict[str, Any] = dict(KCP_FAST) if variant == "fast" else {}

    def settings(self) -> dict[str, Any]:
        return dict(self.kcp_kwargs)

    async def serve(self, handler: Handler, host: str) -> int:
        import aiokcp

        self.server = await aiokcp.start_server(handler, host, 0, kcp_kwargs=dict(self.kcp_kwargs))
        await self.server.start_serving()
        sock = self.server._transport.get_extra_info("socket")
        grow_buffers(sock)
        return int(sock.getsockname()[1])

    @contextlib.asynccontextmanager
    async def connect(self, host: str, port: int) -> AsyncIterator[Streams]:
        import aiokcp

        reader, writer = await aiokcp.open_connection(host, port, kcp_kwargs=dict(self.kcp_kwargs))
        grow_buffers(writer.transport.transport.get_extra_info("socket"))
        try:
            yield reader, writer
        finally:
            writer.close()
            await writer.wait_closed()  # aiokcp: waits until its send queue drains, then 100 ms

    def finish(self, writer: asyncio.StreamWriter) -> None:
        # A closing aiokcp server transport leaves the server's map at its next tick, so the
        # client's ACKs for the last data go to a fresh transport and the tail can be lost
        # (an echo of 256 KiB stops at 240 KiB).  The server leaves closing to the client.
        pass


# Imported when the adapter is made, so that no import lands inside a timed or CPU-charged span.
_MODULES = {
    "utcp": ("utcp",),
    "tcp": (),
    "aioquic": (
        "aioquic.asyncio.client",
        "aioquic.asyncio.server",
        "aioquic.quic.configuration",
        "cryptography.x509",
        "cryptography.hazmat.primitives.asymmetric.ec",
    ),
    "aiokcp": ("aiokcp",),
}


def adapter_for(kind: str, variant: str, tls_dir: Path | None = None) -> Adapter:
    """The adapter of one peer; ``tls_dir`` (utcp and tcp only) holds the run's certificates."""
    for module in _MODULES.get(kind, ()):
        importlib.import_module(module)
    if tls_dir is not None and kind not in ("utcp", "tcp"):
        raise ValueError(f"no TLS variant of {kind!r}")
    if kind == "utcp":
        return UtcpAdapter(variant, tls_dir)
    if kind == "tcp":
        return TcpAdapter(tls_dir)
    if kind == "aioquic":
        return AioquicAdapter()
    if kind == "aiokcp":
        return AiokcpAdapter(variant)
    raise ValueError(f"no stream adapter for {kind!r}")


def _self_signed_certificate() -> tuple[Any, Any]:
    """A fresh EC key and a self-signed certificate for localhost, made with ``cryptography``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key
