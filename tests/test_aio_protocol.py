"""The protocol API end to end over real UDP on 127.0.0.1, on the default loop and on uvloop:
the order of ``asyncio.Protocol`` callbacks, write flow control around
``set_write_buffer_limits``, ``pause_reading``/``resume_reading`` closing and reopening the
window, and an h11 HTTP/1.1 server and client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Runner,
    deadline,
    make_run_fixture,
    seeded_bytes,
    server_port,
    wait_until,
)
from utcp import Config, ConnectionState

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

S = ConnectionState
KIB = 1 << 10
MIB = 1 << 20

run = make_run_fixture()


class Recorder(asyncio.Protocol):
    """Records every callback in order (consecutive ``data_received`` calls once) and the data."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: Any = None
        self.buffer_sizes: list[int] = []  # write buffer size at each pause/resume_writing
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.resumed: asyncio.Future[None] = loop.create_future()

    def _record(self, name: str) -> None:
        if not (name == "data_received" and self.events and self.events[-1] == name):
            self.events.append(name)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._record("connection_made")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._record("data_received")
        self.data += data

    def eof_received(self) -> bool | None:
        self._record("eof_received")
        self.eof.set_result(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._record("connection_lost")
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self._record("pause_writing")
        self.buffer_sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self._record("resume_writing")
        self.buffer_sizes.append(self.transport.get_write_buffer_size())
        if not self.resumed.done():
            self.resumed.set_result(None)


class ReverseOnEof(Recorder):
    """Server side: keeps the connection open at EOF, answers the request reversed, closes."""

    def eof_received(self) -> bool:
        super().eof_received()
        self.transport.write(bytes(self.data[::-1]))
        self.transport.close()
        return True


class Factory:
    """A protocol factory that keeps every protocol it made, for the test to inspect."""

    def __init__(self, cls: type[Recorder], **kwargs: Any) -> None:
        self._cls = cls
        self._kwargs = kwargs
        self.made: list[Recorder] = []
        self._first: asyncio.Future[Recorder] = asyncio.get_running_loop().create_future()

    def __call__(self) -> Recorder:
        protocol = self._cls(**self._kwargs)
        self.made.append(protocol)
        if not self._first.done():
            self._first.set_result(protocol)
        return protocol

    async def first(self) -> Recorder:
        return await self._first


FULL_LIFE = ["connection_made", "data_received", "eof_received", "connection_lost"]


def test_protocol_callbacks_in_order(run: Runner) -> None:
    request = seeded_bytes(21, 300 * KIB)

    async def main() -> None:
        factory = Factory(ReverseOnEof)
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        assert isinstance(transport, asyncio.Transport)
        assert isinstance(transport, utcp.UtcpTransport)
        assert transport.get_protocol() is client
        assert client.transport is transport
        assert client.events == ["connection_made"]
        assert transport.is_reading()
        assert transport.can_write_eof()

        transport.write(request)
        transport.write_eof()
        assert await client.lost is None
        peer = await factory.first()
        assert await peer.lost is None
        assert client.events == FULL_LIFE
        assert bytes(client.data) == request[::-1]
        assert peer.events == FULL_LIFE
        assert bytes(peer.data) == request
        assert transport.is_closing()
        assert transport.get_extra_info("connection").state in (S.TIME_WAIT, S.CLOSED)
        assert len(factory.made) == 1
        server.close()
        await server.wait_closed()

    run(main())


def test_after_close_only_connection_lost_follows(run: Runner) -> None:
    """close() means no more data: like asyncio's transports, the peer's later FIN reaches
    the protocol only as connection_lost, never as eof_received."""

    async def main() -> None:
        factory = Factory(Recorder)  # closes at EOF: its eof_received returns None
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        transport.write(b"bye")
        transport.close()
        assert transport.is_closing()
        assert await client.lost is None
        assert client.events == ["connection_made", "connection_lost"]
        peer = await factory.first()
        assert await peer.lost is None
        assert peer.events == FULL_LIFE
        assert bytes(peer.data) == b"bye"
        server.close()
        await server.wait_closed()

    run(main())


def test_server_protocol_factory_failure_resets_that_client_only(run: Runner) -> None:
    """Like asyncio's servers: a protocol factory that raises is reported to the loop's
    exception handler and that connection is dropped (the client sees a reset, not a
    connection nobody serves); the server goes on accepting."""

    async def main() -> None:
        made: list[ReverseOnEof] = []

        def fails_once() -> ReverseOnEof:
            if not made:
                made.append(ReverseOnEof())
                raise RuntimeError("no protocol for the first client")
            made.append(ReverseOnEof())
            return made[-1]

        server = await utcp.create_server(fails_once, HOST, 0)
        port = server_port(server)
        reader, writer = await utcp.open_connection(HOST, port)
        writer.write(b"anyone there?")
        with pytest.raises(ConnectionResetError):
            await reader.read()
        assert [str(error.get("exception")) for error in run.errors] == [
            "no protocol for the first client"
        ]
        run.errors.clear()

        transport, client = await utcp.create_connection(Recorder, HOST, port)
        transport.write(b"olleh")
        transport.write_eof()
        assert await client.lost is None
        assert bytes(client.data) == b"hello"
        assert server.endpoint.connection_count <= 1  # at most the second one, in TIME_WAIT
        server.close()
        await server.wait_closed()

    run(main())


def test_transport_write_edge_cases_and_misuse(run: Runner) -> None:
    async def main() -> None:
        factory = Factory(ReverseOnEof)
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        with pytest.raises(TypeError):
            transport.write("text, not bytes")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=10, low=20)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=-1)
        transport.write(b"")  # nothing to send, no error
        mutable = bytearray(b"ab")
        transport.writelines([mutable, bytearray(b"cd"), memoryview(b"ef")])
        mutable[:] = b"XX"  # write() took a copy, as asyncio's transports do
        transport.write_eof()
        await client.lost
        assert bytes(client.data) == b"fedcba"
        # As asyncio's transports: after write_eof() a write raises, the connection lost or
        # not (a write to a lost connection is otherwise dropped: test_aio_contract).
        assert transport.is_closing()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"late")
        server.close()
        await server.wait_closed()

    run(main())


def test_pause_and_resume_writing_follow_the_buffer_limits(run: Runner) -> None:
    payload = seeded_bytes(22, MIB)
    high, low = 64 * KIB, 16 * KIB

    async def main() -> None:
        factory = Factory(Recorder)
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        default = Config().send_buffer_bytes
        assert transport.get_write_buffer_limits() == (default // 4, default)
        transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == (low, high)

        transport.write(payload[: 8 * KIB])  # under the mark: no pause
        assert client.events == ["connection_made"]
        transport.write(payload[8 * KIB :])
        assert client.events == ["connection_made", "pause_writing"]
        assert client.buffer_sizes[0] > high
        await client.resumed
        assert client.events == ["connection_made", "pause_writing", "resume_writing"]
        assert client.buffer_sizes[1] <= low

        transport.write_eof()
        peer = await factory.first()
        await peer.eof
        assert bytes(peer.data) == payload
        # The peer's eof_received returned None, so its side closes and ours follows.
        assert await client.lost is None
        assert client.events == [
            "connection_made",
            "pause_writing",
            "resume_writing",
            "eof_received",
            "connection_lost",
        ]
        assert transport.get_write_buffer_size() == 0
        server.close()
        await server.wait_closed()

    run(main())


def test_pause_reading_shuts_the_window_until_resumed(run: Runner) -> None:
    payload = seeded_bytes(23, MIB)
    recv_buffer = 64 * KIB

    class PausedAtStart(Recorder):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.transport.pause_reading()

    async def main() -> None:
        factory = Factory(PausedAtStart)
        server = await utcp.create_server(
            factory, HOST, 0, config=Config(recv_buffer_bytes=recv_buffer)
        )
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        transport.write(payload)
        transport.write_eof()
        peer = await factory.first()
        assert not peer.transport.is_reading()
        peer_conn = peer.transport.get_extra_info("connection")

        def window_shut() -> bool:
            stats: utcp.ConnectionStats = transport.get_extra_info("stats")
            return stats.send_window_bytes == 0 and stats.bytes_in_flight == 0

        await wait_until(window_shut, "the paused peer's window is shut and all is acknowledged")
        assert peer.events == ["connection_made"], "data was delivered while reading was paused"
        held = peer_conn.stats.bytes_received
        assert 0 < held <= recv_buffer
        assert peer_conn.stats.receive_window_bytes == 0

        peer.transport.pause_reading()  # twice is harmless
        peer.transport.resume_reading()
        assert peer.transport.is_reading()
        await peer.eof
        assert bytes(peer.data) == payload
        assert peer.events == ["connection_made", "data_received", "eof_received"]
        assert await peer.lost is None
        assert await client.lost is None
        server.close()
        await server.wait_closed()

    run(main())


def test_eof_waits_behind_data_held_by_pause_reading(run: Runner) -> None:
    async def main() -> None:
        factory = Factory(Recorder)
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        peer = await factory.first()
        peer.transport.pause_reading()
        transport.write(b"held back")
        transport.write_eof()
        conn = transport.get_extra_info("connection")
        await wait_until(
            lambda: conn.state is S.FIN_WAIT_2, "the paused peer acknowledges data and FIN"
        )
        assert peer.transport.get_extra_info("connection").state is S.CLOSE_WAIT
        assert peer.events == ["connection_made"], "data or EOF reached a paused protocol"
        peer.transport.resume_reading()
        await peer.eof
        assert peer.events == ["connection_made", "data_received", "eof_received"]
        assert bytes(peer.data) == b"held back"
        assert await client.lost is None
        server.close()
        await server.wait_closed()

    run(main())


def test_a_protocol_paused_in_data_received_gets_no_eof_until_it_resumes(run: Runner) -> None:
    """Data and the FIN in one segment: a protocol that pauses in data_received gets no
    eof_received while paused (an asyncio transport reads nothing then), and gets it once it
    resumes.  It used to get the EOF at once, paused."""

    class PauseOnData(Recorder):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.events.append("paused" if self.transport.is_reading() else "already paused")
            self.transport.pause_reading()

    async def main() -> None:
        factory = Factory(PauseOnData)
        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        transport.write(b"x" * 100)
        transport.write_eof()
        conn = transport.get_extra_info("connection")
        await wait_until(lambda: conn.state is S.FIN_WAIT_2, "data and FIN acknowledged")
        peer = await factory.first()
        await asyncio.sleep(0.1)
        assert peer.events == ["connection_made", "data_received", "paused"]
        peer.transport.resume_reading()
        await peer.eof
        assert peer.events == ["connection_made", "data_received", "paused", "eof_received"]
        assert bytes(peer.data) == b"x" * 100
        peer.transport.close()
        assert await client.lost is None
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.parametrize("order", ["peer_first", "we_first"])
def test_data_held_for_a_paused_reader_outlives_the_end_of_the_connection(
    run: Runner, order: str
) -> None:
    """A paused reader holds data and the peer's FIN; both sides' FINs are acknowledged
    (at once when we write EOF second, after TIME_WAIT when we write it first) and the
    connection ends underneath.  Reading resumed afterwards gets every byte, then the EOF,
    as a closed TCP socket's receive queue is still read to its end.  The ended connection
    was no longer served: the reader got nothing more, while the peer's wait_closed() had
    said every byte was delivered."""
    size = 300 * KIB
    quick = Config(msl_s=0.2)  # TIME_WAIT 0.4 s

    class PauseAfterSome(Recorder):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if len(self.data) > 50 * KIB:
                self.transport.pause_reading()

    class WritesOnAfterEof(Recorder):
        def eof_received(self) -> bool:
            super().eof_received()
            return True  # half-closed: our writing goes on

    async def main() -> None:
        factory = Factory(PauseAfterSome)
        server = await utcp.create_server(factory, HOST, 0, config=quick)
        transport, client = await utcp.create_connection(
            WritesOnAfterEof, HOST, server_port(server)
        )
        peer = await factory.first()
        if order == "we_first":
            peer.transport.write_eof()
            await client.eof
        payload = seeded_bytes(7, size)
        transport.write(payload)
        transport.write_eof()
        conn = transport.get_extra_info("connection")
        await wait_until(lambda: conn.fin_acknowledged, "everything acknowledged")
        if order == "peer_first":
            peer.transport.write_eof()
        mine = peer.transport.get_extra_info("connection")
        await wait_until(lambda: mine.state is S.CLOSED, "the server's side ended")
        assert len(peer.data) < size
        peer.transport.resume_reading()
        async with deadline(10, "the held data and the EOF"):
            while not peer.eof.done():
                peer.transport.resume_reading()  # pausing again as it goes
                await asyncio.sleep(0.01)
        assert bytes(peer.data) == payload
        peer.transport.close()
        assert await peer.lost is None
        transport.close()
        server.close()
        await server.wait_closed()

    run(main())


def test_a_buffered_protocol_paused_in_buffer_updated_gets_nothing_more(run: Runner) -> None:
    """A BufferedProtocol with a small buffer pauses reading in buffer_updated: nothing more
    arrives until it resumes (the rest of the datagram it was being fed waits, first in
    line), and after pause and resume cycles every byte has arrived once, in order.  The
    rest of each datagram used to be fed into the paused protocol."""
    payload = seeded_bytes(29, 200 * KIB)

    class PausingBuffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(100)
            self.data = bytearray()
            self.while_paused = 0
            self.transport: Any = None
            self.eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            if not self.transport.is_reading():
                self.while_paused += nbytes
            self.data += self.buf[:nbytes]
            if len(self.data) % 7 == 0 or len(self.data) < 1000:
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(0.001, self.transport.resume_reading)

        def eof_received(self) -> bool:
            self.eof.set_result(None)
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    async def main() -> None:
        made: list[PausingBuffered] = []

        def factory() -> PausingBuffered:
            made.append(PausingBuffered())
            return made[-1]

        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        transport.write(payload)
        transport.write_eof()
        await wait_until(lambda: made, "the server's protocol")
        peer = made[0]
        await asyncio.wait_for(peer.eof, 30)
        assert peer.while_paused == 0
        assert bytes(peer.data) == payload
        assert await client.lost is None
        server.close()
        await server.wait_closed()

    run(main())


def test_the_write_buffer_is_empty_after_abort(run: Runner) -> None:
    """What abort() dropped will never be sent: get_write_buffer_size() says 0 at once, as on
    asyncio's transports (it went on counting the dropped bytes, so code waiting for the
    buffer to empty hung)."""

    class PausedAtStart(Recorder):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.transport.pause_reading()

    async def main() -> None:
        server = await utcp.create_server(Factory(PausedAtStart), HOST, 0)
        transport, client = await utcp.create_connection(Recorder, HOST, server_port(server))
        transport.write(bytes(2 * MIB))
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await client.lost is None
        assert transport.get_write_buffer_size() == 0
        server.close()
        await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------- HTTP/1.1 with h11


class HttpServer(asyncio.Protocol):
    """A tiny h11 server: GET / answers a greeting, anything else 404; keep-alive."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.transport: Any = None
        self.requests: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._process()
        return False

    def _send(self, *events: h11.Event) -> None:
        self.transport.write(b"".join(self.conn.send(event) or b"" for event in events))

    def _process(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                self.conn.start_next_cycle()
            elif isinstance(event, h11.Request):
                self.requests.append((event.method, event.target))
                if event.method == b"GET" and event.target == b"/":
                    status, body = 200, b"hello over utcp\n"
                else:
                    status, body = 404, b"not found\n"
                headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
                self._send(
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                )
                if self.conn.our_state is h11.MUST_CLOSE:
                    self.transport.close()
                    return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


class HttpClient(asyncio.Protocol):
    """Sends GETs one after another on one connection; ``done`` gets (status, headers, body)."""

    def __init__(self, targets: list[str]) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.targets = list(targets)
        self.responses: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self._status = 0
        self._headers: dict[bytes, bytes] = {}
        self._body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._request_next()

    def _request_next(self) -> None:
        target = self.targets.pop(0)
        request = h11.Request(method="GET", target=target, headers=[("host", HOST)])
        self.transport.write(self.conn.send(request) + (self.conn.send(h11.EndOfMessage()) or b""))

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._headers = dict(event.headers)
                self._body = bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.responses.append((self._status, self._headers, bytes(self._body)))
                if not self.targets:
                    self.done.set_result(None)
                    return
                self.conn.start_next_cycle()
                self._request_next()
            else:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the last response"))


def test_h11_http_over_the_protocol_api(run: Runner) -> None:
    async def main() -> None:
        servers: list[HttpServer] = []

        def factory() -> HttpServer:
            servers.append(HttpServer())
            return servers[-1]

        server = await utcp.create_server(factory, HOST, 0)
        transport, client = await utcp.create_connection(
            lambda: HttpClient(["/", "/missing", "/"]), HOST, server_port(server)
        )
        await client.done
        assert [(status, body) for status, _, body in client.responses] == [
            (200, b"hello over utcp\n"),
            (404, b"not found\n"),
            (200, b"hello over utcp\n"),
        ]
        assert client.responses[0][1][b"content-length"] == b"16"
        assert client.responses[0][1][b"content-type"] == b"text/plain"
        assert len(servers) == 1, "keep-alive: the three requests share one connection"
        assert servers[0].requests == [(b"GET", b"/"), (b"GET", b"/missing"), (b"GET", b"/")]
        transport.close()  # the server sees EOF, h11 ConnectionClosed, and closes too
        assert await client.lost is None
        async with server:
            pass

    run(main())
