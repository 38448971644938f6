"""aiohttp over utcp: its web server listening on utcp and its client connecting through utcp.

``UtcpSite`` is aiohttp's ``TCPSite`` with ``loop.create_server`` replaced by
``utcp.create_server`` (the same arguments); ``UtcpConnector`` is aiohttp's ``TCPConnector``
opening its connections with ``utcp.create_connection``, keeping aiohttp's name resolution,
connection pool and TLS settings.  Run alone, it serves a page and fetches it over utcp:

    python examples/aiohttp_over_utcp.py --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

import utcp


class UtcpSite(web.BaseSite):
    """An aiohttp site serving ``runner`` over utcp on ``host``/``port`` (TLS with
    ``ssl_context``), as ``web.TCPSite`` serves it over TCP."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = (8443 if ssl_context else 8080) if port is None else port
        self._reuse_port = reuse_port
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (once started, the one picked when asked for port 0)."""
        return self._port if self._bound_port is None else self._bound_port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host or "0.0.0.0", port=self.port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        # What TCPSite.start passes to loop.create_server (utcp refuses reuse_address=True).
        listener = await utcp.create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
        self._server = listener
        self._bound_port = int(listener.sockets[0].getsockname()[1])


class UtcpConnector(aiohttp.TCPConnector):
    """aiohttp's connector with utcp connections in place of TCP ones."""

    async def _wrap_create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], Any],
        *,
        addr_infos: list[Any],
        req: Any,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        # aiohttp calls this once per resolved address until one connects; errors become
        # aiohttp's, as in TCPConnector's own version of this method.
        family, _type, _proto, _canonname, address = addr_infos[0]
        try:
            return await asyncio.wait_for(
                utcp.create_connection(
                    protocol_factory, address[0], address[1], family=family, **kwargs
                ),
                timeout.sock_connect,
            )
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello over utcp, you asked for {request.path}")


async def main(host: str, port: int) -> int:
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = UtcpSite(runner, host, port)
    await site.start()
    print(f"serving on {site.name}")
    try:
        async with aiohttp.ClientSession(connector=UtcpConnector()) as session:
            url = URL.build(scheme="http", host=host, port=site.port, path="/abc")
            async with session.get(url) as response:
                print(f"HTTP {response.status}: {await response.text()}")
    finally:
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise SystemExit(utcp.run(main(args.host, args.port)))
