"""Libraries written for asyncio's TCP, run unchanged over utcp on both event loops: aiohttp's
web server and client (GET, POST, chunked, keep-alive, WebSocket, static files, TLS) through
examples/aiohttp_over_utcp.py, and the ``websockets`` library's server and client.

Every check is on the bytes that crossed utcp: bodies and messages are seeded and compared
whole.  Certificates are made by trustme for each run.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib.util
import inspect
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from websockets.asyncio import client as ws_client
from websockets.asyncio import server as ws_server

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, seeded_bytes

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

KIB = 1 << 10
FILE_BYTES = 300_000

run = make_run_fixture()


def _example(name: str) -> ModuleType:
    """An example module, imported: the aiohttp site and connector are tested where users
    find them."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"utcp_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example("aiohttp_over_utcp")
UtcpSite = example.UtcpSite
UtcpConnector = example.UtcpConnector


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context): a certificate for HOST and localhost from a fresh CA
    the client trusts."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    """big.bin in a directory of its own, and its bytes."""
    data = seeded_bytes(300, FILE_BYTES)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


# --- aiohttp -------------------------------------------------------------------------------


Seen = list[Any]  # the transport each request came on, recorded while it is open


def make_app(seen: Seen, static_dir: Path | None = None) -> web.Application:
    """GET /hello, POST /echo (the body back), GET /chunked (seeded chunks), GET /ws (an echo),
    and with ``static_dir``: /static/... and GET /file (FileResponse of big.bin).  Every request
    appends its transport to ``seen``."""

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.transport)
        return web.Response(text=f"hello {request.query.get('n', '')}")

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.transport)
        return web.Response(body=await request.read())

    async def chunked(request: web.Request) -> web.StreamResponse:
        seen.append(request.transport)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in CHUNKS:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        seen.append(request.transport)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/ws", ws_echo)
    if static_dir is not None:

        async def file(request: web.Request) -> web.FileResponse:
            seen.append(request.transport)
            return web.FileResponse(static_dir / "big.bin")

        app.router.add_get("/file", file)
        app.router.add_static("/static", static_dir)
    return app


CHUNKS = [seeded_bytes(i, size) for i, size in enumerate([1, 100, 5000, 17, 64 * KIB, 3, 40_000])]


@asynccontextmanager
async def serving(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """``app`` served over utcp on HOST; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = UtcpSite(runner, HOST, 0, ssl_context=ssl_context)
        await site.start()
        yield f"{'https' if ssl_context else 'http'}://{HOST}:{site.port}"
    finally:
        await runner.cleanup()


def session(ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    connector = UtcpConnector(ssl=ssl_context) if ssl_context else UtcpConnector()
    return aiohttp.ClientSession(connector=connector)


def test_aiohttp_get_post_and_chunked(run: Runner) -> None:
    body = seeded_bytes(1, 200 * KIB)

    async def main() -> None:
        seen: Seen = []
        async with serving(make_app(seen)) as url, session() as client:
            async with client.get(f"{url}/hello?n=1") as response:
                assert response.status == 200
                assert await response.text() == "hello 1"
            async with client.post(f"{url}/echo", data=body) as response:
                assert response.status == 200
                assert await response.read() == body
            async with client.get(f"{url}/chunked") as response:
                assert response.headers["Transfer-Encoding"] == "chunked"
                assert await response.read() == b"".join(CHUNKS)
        # The server's side of each request is a utcp connection.
        assert len(seen) == 3
        assert all(isinstance(t, utcp.UtcpTransport) for t in seen), seen

    run(main())


def test_aiohttp_keep_alive_carries_two_requests_on_one_connection(run: Runner) -> None:
    async def main() -> None:
        seen: Seen = []
        async with serving(make_app(seen)) as url, session() as client:
            for n in (1, 2):
                async with client.get(f"{url}/hello?n={n}") as response:
                    assert await response.text() == f"hello {n}"
        assert len(seen) == 2
        assert seen[0] is seen[1]  # the second request came on the first's

    run(main())


def unused_port() -> int:
    """A UDP port nobody listens on (one the kernel just handed out and took back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def test_aiohttp_client_reports_a_refused_connection_as_aiohttp_does(run: Runner) -> None:
    async def main() -> None:
        port = unused_port()
        async with session() as client:  # nobody listens on the port now: ICMP says so
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await client.get(f"http://{HOST}:{port}/")
        assert isinstance(caught.value.os_error, ConnectionRefusedError)

    run(main())


def test_aiohttp_client_sees_the_errno_of_a_refused_connection(run: Runner) -> None:
    async def main() -> None:
        port = unused_port()
        async with session() as client:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await client.get(f"http://{HOST}:{port}/")
        assert caught.value.os_error.errno == errno.ECONNREFUSED, caught.value

    run(main())


def test_aiohttp_websocket_echo(run: Runner) -> None:
    sizes = [0, 1, 125, 126, 65535, 65536, 100 * KIB, 7, 3000]

    async def main() -> None:
        async with serving(make_app([])) as url, session() as client:
            async with client.ws_connect(f"{url}/ws") as ws:
                for i, size in enumerate(sizes):
                    data = seeded_bytes(1000 + i, size)
                    if i % 2:
                        await ws.send_bytes(data)
                        assert await ws.receive_bytes() == data
                    else:
                        text = data.hex()
                        await ws.send_str(text)
                        assert await ws.receive_str() == text
                await ws.close()
            assert ws.close_code == aiohttp.WSCloseCode.OK

    run(main())


def test_aiohttp_static_files_and_file_response(
    run: Runner, big_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On asyncio's loop FileResponse calls loop.sendfile, which takes asyncio's fallback on a
    # utcp transport; uvloop has no loop.sendfile, so aiohttp writes the chunks itself.
    path, data = big_file
    sendfile_calls: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if run.kind == "asyncio":
            original = loop.sendfile

            async def counting(transport: Any, file: Any, *args: Any, **kwargs: Any) -> int:
                sent = await original(transport, file, *args, **kwargs)
                sendfile_calls.append(sent)
                return sent

            monkeypatch.setattr(loop, "sendfile", counting)
        async with serving(make_app([], path.parent)) as url, session() as client:
            for target in ("/static/big.bin", "/file"):
                async with client.get(url + target) as response:
                    assert response.status == 200
                    assert response.content_length == FILE_BYTES
                    assert await response.read() == data, target
            ranged = {"Range": "bytes=1000-200999"}
            async with client.get(f"{url}/file", headers=ranged) as response:
                assert response.status == 206
                assert await response.read() == data[1000:201000]

    run(main())
    if run.kind == "asyncio":
        assert sendfile_calls == [FILE_BYTES, FILE_BYTES, 200_000]


def test_aiohttp_over_tls(
    run: Runner,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    big_file: tuple[Path, bytes],
) -> None:
    server_ctx, client_ctx = tls
    path, data = big_file
    body = seeded_bytes(2, 150 * KIB)

    async def main() -> None:
        seen: Seen = []
        async with serving(make_app(seen, path.parent), server_ctx) as url:
            async with session(client_ctx) as client:
                async with client.post(f"{url}/echo", data=body) as response:
                    assert response.connection is not None  # until the body is read
                    transport = response.connection.transport
                    assert transport is not None
                    names = set(transport.get_extra_info("peercert")["subjectAltName"])
                    assert names == {("IP Address", HOST), ("DNS", "localhost")}
                    assert await response.read() == body
                async with client.get(f"{url}/file") as response:
                    assert await response.read() == data
                async with client.get(f"{url}/chunked") as response:
                    assert await response.read() == b"".join(CHUNKS)
                # The server's side, while the kept-alive connection is open: TLS over utcp.
                assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
                assert seen[0].get_extra_info("ssl_object") is not None
                assert seen[0].get_extra_info("stats").bytes_received > len(body)
            # A client that does not trust the CA is refused, and the server carries on.
            async with session(ssl.create_default_context()) as stranger:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await stranger.get(f"{url}/hello")
            async with session(client_ctx) as client, client.get(f"{url}/hello?n=3") as response:
                assert await response.text() == "hello 3"

    run(main())


# --- websockets ------------------------------------------------------------------------------


def ws_serve(
    handler: Callable[[ws_server.ServerConnection], Awaitable[None]],
    host: str,
    port: int,
    **kwargs: Any,
) -> ws_server.Server:
    """websockets' ``serve()`` listening on utcp.  websockets has no hook for another
    ``create_server``: ``serve()`` keeps its asyncio protocol factory and the keywords for
    ``loop.create_server`` in the closure that calls it (``Server.create_server``), so that
    call is replaced by the same one to ``utcp.create_server``."""
    server = ws_server.serve(handler, host, port, **kwargs)
    made = inspect.getclosurevars(server.create_server).nonlocals
    assert {"protocol_factory", "kwargs"} <= made.keys(), f"websockets changed: {made}"
    server.create_server = functools.partial(  # type: ignore[assignment]
        utcp.create_server, made["protocol_factory"], host, port, **made["kwargs"]
    )
    return server


class ws_connect(ws_client.connect):  # named as the function it stands in for
    """websockets' ``connect()`` opening its connection with ``utcp.create_connection``."""

    async def open_tcp_connection(self) -> ws_client.ClientConnection:
        kwargs = dict(self.create_connection_kwargs)
        uri = self.ws_uri
        if uri.secure:
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("server_hostname", uri.host)
        _, connection = await utcp.create_connection(
            lambda: self.factory(uri), uri.host, uri.port, **kwargs
        )
        return connection


async def ws_echo(connection: ws_server.ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_websockets_server_and_client_exchange_100_messages(
    run: Runner, secure: bool, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    # 100 messages, binary and text, of 0 to 127.5 KB; sent while the echoes come back, so
    # websockets' queues and utcp's windows both fill and drain.
    server_ctx, client_ctx = tls if secure else (None, None)
    messages: list[str | bytes] = []
    for i, unit in enumerate(seeded_bytes(7, 100)):
        size = unit * 500 if i % 10 else 0
        data = seeded_bytes(2000 + i, size)
        messages.append(data if i % 2 else data[: size // 2].hex())

    async def main() -> None:
        # No compression: the bytes on the wire are the messages' own.
        async with ws_serve(ws_echo, HOST, 0, compression=None, ssl=server_ctx) as server:
            port = server.sockets[0].getsockname()[1]
            assert isinstance(server.server, utcp.Server)
            scheme = "wss" if secure else "ws"
            uri = f"{scheme}://{HOST}:{port}/"
            async with ws_connect(uri, compression=None, ssl=client_ctx) as ws:

                async def send_all() -> None:
                    for message in messages:
                        await ws.send(message)

                sender = asyncio.create_task(send_all())
                echoed = [await ws.recv() for _ in messages]
                await sender
                assert echoed == messages
                assert ws.transport.get_extra_info("stats").bytes_received > sum(
                    len(m) for m in messages
                )

    run(main())
