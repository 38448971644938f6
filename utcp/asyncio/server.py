"""``create_server``/``Server``: utcp's listening side, an ``asyncio.AbstractServer``.

A server owns one UDP endpoint per address it listens on (``host=None`` listens on every
address family, a list of hosts on each), all serving the same protocol factory; with ``ssl=``
each accepted connection is wrapped in asyncio's own TLS layer.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..cids import worker_bits_for
from ..config import Config, given
from .dgram import DatagramIO, create_endpoint
from .endpoint import Endpoint, Observer, release_port
from .resolve import check_observer, check_port, hosts_of, resolve_all
from .sockview import SocketView
from .tls import TlsOptions, tls_options
from .transport import UtcpTransport

__all__ = ["Server", "create_server"]


class Server(asyncio.AbstractServer):
    """A utcp server, with the interface of ``asyncio.Server`` (and an instance of
    ``asyncio.AbstractServer``)."""

    def __init__(self, endpoints: list[tuple[Endpoint, DatagramIO]], *, serving: bool) -> None:
        self._pairs = endpoints
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._closing: asyncio.Future[None] = self._loop.create_future()  # set by close()
        self._serving = serving
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<utcp.Server sockets={self.sockets!r}>"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening UDP sockets (empty once closed, as with ``asyncio.Server``), as
        ``SocketView``s: like asyncio's, they can be inspected but not closed."""
        if self._closed:
            return ()
        out = []
        for endpoint, udp in self._pairs:
            sock = udp.get_extra_info("socket")
            if sock is not None and endpoint.transport is not None:
                out.append(SocketView(sock, None))
        return tuple(out)

    @property
    def endpoint(self) -> Endpoint:
        """The (first) endpoint carrying this server's connections (its ``stats`` count
        drops); ``endpoints`` lists them all."""
        return self._pairs[0][0]

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """One endpoint per listening socket."""
        return tuple(endpoint for endpoint, _ in self._pairs)

    @property
    def stats(self) -> dict[str, object]:
        """The endpoints' totals: datagrams and bytes each way, drops by reason (their own and
        their connections'), resets, SYN cookies, refusals, and the connections open now."""
        totals = [endpoint.totals() for endpoint, _ in self._pairs]
        if len(totals) == 1:
            return totals[0]
        return _merge(totals)

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    async def start_serving(self) -> None:
        """Accept connections (servers made with ``start_serving=False`` wait for this)."""
        if self._closed:
            raise RuntimeError("the server is closed")
        self._serving = True
        for endpoint, _ in self._pairs:
            endpoint.start_accepting()

    def close(self) -> None:
        """Stop accepting connections; open ones carry on, then the sockets close."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._closing.set_result(None)
        for endpoint, _ in self._pairs:
            endpoint.close()
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
            for endpoint, _ in self._pairs
            for h in endpoint.handles()
            if isinstance(h.transport, UtcpTransport) and not h.transport.is_closing()
        ]

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections have ended, as asyncio's does
        (on an open server too: until it is closed).  Connections winding down (the server
        closed first: FIN_WAIT_2, TIME_WAIT) are not waited for: they run their course in
        the background and the socket closes after them, or when the event loop shuts down
        (``server.endpoint.wait_closed()`` waits for that)."""
        if not self._closed:
            await asyncio.shield(self._closing)
        for endpoint, _ in self._pairs:
            await endpoint.wait_done()

    async def serve_forever(self) -> None:
        """Serve until cancelled; then close the server."""
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if self._closed:
            raise RuntimeError("the server is closed")
        await self.start_serving()
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


def _merge(totals: list[dict[str, object]]) -> dict[str, object]:
    """Several endpoints' totals as one: numbers and drop counts summed."""
    out: dict[str, object] = {}
    for part in totals:
        for key, value in part.items():
            have = out.get(key)
            if isinstance(value, dict):
                merged = dict(have) if isinstance(have, dict) else {}
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
                out[key] = merged
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = (have if isinstance(have, (int, float)) else 0) + value
            elif key not in out:
                out[key] = value
    return out


_REUSE_ADDRESS_REFUSED = (
    "reuse_address=True is refused: on a UDP socket SO_REUSEADDR lets another socket bind the "
    "same port and take this server's datagrams, and utcp needs no help with TIME_WAIT (its "
    "connections live in the endpoint, not in the kernel); use reuse_port=True to share a port"
)


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | Iterable[str] | None = None,
    port: int | str | None = None,
    *,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    sock: socket.socket | Sequence[socket.socket] | None = None,
    backlog: int = 100,
    ssl: Any = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    keep_alive: bool | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
    config: Config | None = None,
    observer: Observer | None = None,
    worker: int | None = None,
    workers: int | None = None,
) -> Server:
    """Listen for utcp connections on UDP, like ``loop.create_server``.

    ``host=None`` (or ``""``) listens on every address family, a list on each host; with
    ``port=0`` (or None) one free port is picked and, where several sockets listen, each binds
    the same number when it can: read it from ``server.sockets[0].getsockname()``.
    ``ssl=`` an ``ssl.SSLContext`` serves TLS (asyncio's TLS layer over each connection).
    ``keep_alive`` turns utcp's keepalive on or off (``Config.keepalive_idle_s``).
    ``reuse_address=True`` is refused: see the README's table of differences from TCP.

    ``worker=i, workers=n`` serve as worker ``i`` of ``n`` processes sharing the port (with
    ``sock=`` the sockets ``utcp.WorkerGroup`` bound, or ``reuse_port=True``): every
    connection id this server picks names worker ``i`` (``utcp.cids``), which the port's
    steering program (``utcp.asyncio.reuseport``) reads.  ``sock=`` may be a list of sockets
    here (one per address family), where asyncio takes one.
    """
    if backlog < 1:
        raise ValueError(f"backlog must be >= 1, not {backlog!r}")
    if reuse_address:
        raise ValueError(_REUSE_ADDRESS_REFUSED)
    cfg = _with_keepalive(given(config), keep_alive).validate()
    check_observer(observer)
    tls = tls_options(
        ssl,
        server_side=True,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    loop = asyncio.get_running_loop()
    factory = protocol_factory if tls is None else _tls_factory(loop, protocol_factory, tls)

    index, worker_bits = _worker_slot(worker, workers)

    def endpoint_factory() -> Endpoint:
        return Endpoint(
            config=cfg,
            protocol_factory=factory,
            backlog=backlog,
            observer=observer,
            worker=index,
            worker_bits=worker_bits,
        )

    pairs: list[tuple[Endpoint, DatagramIO]] = []
    try:
        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            socks = [sock] if isinstance(sock, socket.socket) else list(sock)
            if not socks:
                raise ValueError("sock= is an empty list")
            for one in socks:
                _check_listening(one)
                udp, endpoint = await create_endpoint(endpoint_factory, config=cfg, sock=one)
                pairs.append((endpoint, udp))
        else:
            await _listen(
                pairs, endpoint_factory, cfg, host, check_port(port), family, flags, reuse_port
            )
    except BaseException:
        for endpoint, _ in pairs:
            endpoint.abort_all()
        raise
    if not start_serving:
        for endpoint, _ in pairs:
            endpoint.stop_accepting()
    return Server(pairs, serving=start_serving)


def _check_listening(sock: socket.socket) -> None:
    """A socket given to serve on must be a UDP socket bound to its port: unbound, it has no
    port a client could reach (the kernel would pick one at its first send)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP socket was expected, got {sock!r}")
    if sock.getsockname()[1] == 0:
        raise ValueError(f"sock= must be bound to the port to serve on; {sock!r} is not bound")


async def _listen(
    pairs: list[tuple[Endpoint, DatagramIO]],
    endpoint_factory: Callable[[], Endpoint],
    cfg: Config,
    host: str | Iterable[str] | None,
    port: int | str | None,
    family: int,
    flags: int,
    reuse_port: bool | None,
) -> None:
    """One endpoint per address the hosts resolve to, all on one port number when they can."""
    infos = []
    for one in hosts_of(host):
        for info in await resolve_all(one, port or 0, passive=True, family=family, flags=flags):
            if info not in infos:
                infos.append(info)
    chosen = 0
    for fam, addr in infos:
        if chosen and addr[1] == 0:
            addr = (addr[0], chosen, *addr[2:])
        try:
            pair = await _bind(endpoint_factory, cfg, fam, addr, reuse_port)
        except OSError:
            if not chosen or addr[1] != chosen or port:
                raise
            # The first socket's ephemeral port is taken for this family: pick another.
            pair = await _bind(endpoint_factory, cfg, fam, (addr[0], 0, *addr[2:]), reuse_port)
        pairs.append(pair)
        if not chosen:
            sock = pair[1].get_extra_info("socket")
            chosen = sock.getsockname()[1] if sock is not None else 0


async def _bind(
    endpoint_factory: Callable[[], Endpoint],
    cfg: Config,
    family: int,
    addr: Any,
    reuse_port: bool | None,
) -> tuple[Endpoint, DatagramIO]:
    # An IPv6 socket stays off IPv4, as asyncio's servers make it: IPv4 has its own socket
    # beside it, or (family=AF_INET6, an IPv6 host) the server was asked for IPv6 alone.
    v6only = family == socket.AF_INET6
    retried = False
    while True:
        try:
            udp, endpoint = await create_endpoint(
                endpoint_factory,
                config=cfg,
                local_addr=addr,
                family=family,
                reuse_port=reuse_port,
                v6only=v6only,
            )
            return endpoint, udp
        except OSError as exc:
            # A server of this process closed on this port may still hold it for
            # connections winding down: the new one takes it, as a restarted TCP listener
            # does.  (uvloop's portable path says "could not bind" with no errno.)
            if retried or exc.errno not in (errno.EADDRINUSE, None) or not addr[1]:
                raise
            if not await release_port(family, addr[1]):
                raise
            retried = True


def _worker_slot(worker: int | None, workers: int | None) -> tuple[int, int]:
    """``worker=``/``workers=`` as the endpoint's worker index and its bits in the id."""
    if worker is None and workers is None:
        return 0, 0
    if worker is None or workers is None:
        raise ValueError("worker= and workers= go together")
    if workers < 1 or not 0 <= worker < workers:
        raise ValueError(f"worker must be in 0..workers-1, not {worker!r} of {workers!r}")
    return worker, worker_bits_for(workers)


def _with_keepalive(cfg: Config, keep_alive: bool | None) -> Config:
    """``keep_alive=`` as asyncio's (``SO_KEEPALIVE``): utcp's own keepalive on or off."""
    if keep_alive is None or keep_alive == (cfg.keepalive_idle_s is not None):
        return cfg
    return cfg.replace(keepalive_idle_s=Config().keepalive_idle_s if keep_alive else None)


def _tls_factory(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    tls: TlsOptions,
) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory of a TLS server: asyncio's TLS layer around each application
    protocol.  A failed handshake resets that one connection and is reported only in debug
    mode, as with asyncio's servers."""

    def factory() -> asyncio.BaseProtocol:
        return tls.protocol(loop, protocol_factory(), None, server_side=True)

    return factory
