"""TLS over utcp on real loopback sockets, on the default loop and on uvloop: the standard
library's ``ssl`` driven by asyncio's own TLS layer.  Bulk echo, TLS through loss, certificates
that do not verify, the handshake timeout, STARTTLS, client certificates, an h11 server, the
keywords and the close; asyncio over TCP is the control wherever utcp must behave the same.
Certificates are made here, by trustme.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import h11
import pytest
import trustme

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    deadline,
    echo,
    make_run_fixture,
    seeded_bytes,
    server_port,
    sha256,
    wait_until,
)
from utcp import Config, Connection, ConnectionState, ConnectionStats
from utcp.tools.netem import Impairment, Relay

# Real sockets: run on both datagram I/O paths; and on both builds of the core (conformance).
pytestmark = [pytest.mark.sockets, pytest.mark.conformance]

S = ConnectionState

KIB = 1 << 10
MIB = 1 << 20
SERVER_NAME = "localhost"
# OpenSSL's verify codes (X509_V_ERR_*), as ssl.SSLCertVerificationError.verify_code carries them.
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
HOSTNAME_MISMATCH = 62

run = make_run_fixture()

# The control: the same code on asyncio's TCP streams.
STACKS: dict[str, ModuleType] = {"tcp": asyncio, "utcp": utcp}


@dataclass(frozen=True)
class Pki:
    """One CA, a server certificate for localhost and 127.0.0.1, and a client certificate."""

    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert

    def server_context(
        self,
        *,
        require_client_cert: bool = False,
        version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    return Pki(
        ca=ca,
        server=ca.issue_cert(SERVER_NAME, HOST),
        client=ca.issue_cert("client.example.org"),
    )


async def send_all(writer: asyncio.StreamWriter, data: bytes, chunk: int = 64 * KIB) -> None:
    """``data`` in chunks, each followed by ``drain()`` (backpressure through the TLS layer)."""
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        writer.write(view[start : start + chunk])
        await writer.drain()


async def echo_over_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    """Send ``data`` while reading its echo (TLS cannot half-close: ``write_eof`` is not
    supported), then close and wait until closed; returns what came back."""
    sender = asyncio.create_task(send_all(writer, data))
    echoed = await reader.readexactly(len(data))
    await sender
    writer.close()
    await writer.wait_closed()
    return echoed


def subject_alt_names(peercert: Any) -> set[tuple[str, str]]:
    return set(peercert["subjectAltName"])


async def serve(stack: str, handler: Any, **kwds: Any) -> Any:
    """A server on the given stack, on 127.0.0.1 and a free port."""
    return await STACKS[stack].start_server(handler, HOST, 0, **kwds)


# ---------------------------------------------------------------------- bulk and extra info


def test_echo_two_mib_and_what_get_extra_info_sees(run: Runner, pki: Pki) -> None:
    payload = seeded_bytes(21, 2 * MIB)

    async def main() -> None:
        server_saw: dict[str, Any] = {}

        async def look_then_echo(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            for name in ("ssl_object", "peercert", "cipher", "connection", "stats"):
                server_saw[name] = writer.get_extra_info(name)
            await echo(reader, writer)

        handlers = Handlers(look_then_echo)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        port = server_port(server)
        reader, writer = await utcp.open_connection(
            HOST, port, ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        assert isinstance(writer, utcp.StreamWriter)
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert not ssl_object.server_side
        assert ssl_object.server_hostname == SERVER_NAME
        assert subject_alt_names(writer.get_extra_info("peercert")) == {
            ("DNS", SERVER_NAME),
            ("IP Address", HOST),
        }
        cipher, version, bits = writer.get_extra_info("cipher")
        assert (cipher, version, bits) == ssl_object.cipher() and bits >= 128
        assert writer.get_extra_info("sslcontext") is not None
        assert not writer.can_write_eof()  # as TLS over TCP
        # The utcp layer beneath answers through the TLS transport.
        conn = writer.get_extra_info("connection")
        assert isinstance(conn, Connection)
        assert isinstance(writer.get_extra_info("stats"), ConnectionStats)
        assert writer.get_extra_info("peername")[:2] == (HOST, port)

        echoed = await echo_over_tls(reader, writer, payload)
        assert sha256(echoed) == sha256(payload)
        # The connection beneath carried the TLS records: the payload and then some, each way.
        stats = conn.stats
        assert stats.bytes_sent > len(payload) and stats.bytes_received > len(payload)

        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []
        assert isinstance(server_saw["ssl_object"], ssl.SSLObject)
        assert server_saw["ssl_object"].server_side
        assert server_saw["peercert"] is None  # no client certificate was asked for
        assert server_saw["cipher"][:2] == (cipher, version)
        assert isinstance(server_saw["connection"], Connection)
        assert isinstance(server_saw["stats"], ConnectionStats)

    run(main())


def test_a_reader_that_stops_stalls_the_writer_through_tls(run: Runner, pki: Pki) -> None:
    blob = seeded_bytes(8, 8 * MIB)  # more than both ends can buffer
    small = Config(recv_buffer_bytes=MIB)  # what the receiver holds for a reader that stops

    async def main() -> None:
        progress = [0]
        senders: list[Connection] = []

        async def send_blob(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            senders.append(writer.get_extra_info("connection"))
            view = memoryview(blob)
            for start in range(0, len(blob), 64 * KIB):
                writer.write(view[start : start + 64 * KIB])
                await writer.drain()
                progress[0] = start + 64 * KIB
            writer.close()
            await writer.wait_closed()

        handlers = Handlers(send_blob)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        reader, writer = await utcp.open_connection(
            HOST,
            server_port(server),
            ssl=pki.client_context(),
            server_hostname=SERVER_NAME,
            config=small,
        )
        # Nobody reads: the StreamReader pauses the TLS layer, which pauses utcp beneath, whose
        # window closes (as the sender sees it: a few bytes may be left open below one unit
        # of the window scale, which the field cannot carry); the server's drain() then holds
        # its writes back.
        await wait_until(
            lambda: bool(senders) and senders[0].stats.send_window_bytes == 0, "the window closed"
        )
        assert progress[0] < len(blob)
        received = await reader.read()  # to EOF: the server's close_notify
        assert sha256(received) == sha256(blob)
        await handlers.close_and_check(writer, server)

    run(main())


def test_tls_through_five_percent_loss_each_way(run: Runner, pki: Pki) -> None:
    seed = 2105
    payload = seeded_bytes(seed, MIB)
    # Ethernet-sized datagrams: loopback's 64 KiB ones would carry 1 MiB in a few dozen, and
    # 5% of those is a handful of losses.  Losses in the handshakes are found by the
    # retransmission timer: a short first RTO keeps the test quick.
    cfg = Config(rto_initial_s=0.2, max_datagram_bytes=1472)

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context(), config=cfg)
        lossy = Impairment(loss=0.05)
        async with await Relay.start(
            (HOST, 0), (HOST, server_port(server)), up=lossy, down=lossy, seed=seed
        ) as relay:
            reader, writer = await utcp.open_connection(
                *relay.address, ssl=pki.client_context(), server_hostname=SERVER_NAME, config=cfg
            )
            conn = writer.get_extra_info("connection")
            echoed = await echo_over_tls(reader, writer, payload)
            counters = relay.counters
            assert sha256(echoed) == sha256(payload), f"relay seed {seed}"
            lost = (counters.up.dropped_loss, counters.down.dropped_loss)
            assert min(lost) >= 10, f"relay seed {seed}: lost {lost}"
            assert conn.stats.retransmissions > 0, f"relay seed {seed}"
            async with server:
                await handlers.wait_finished(1)
        assert handlers.errors == []

    run(main())


# ---------------------------------------------------------------------- failed handshakes


def test_bad_certificate_fails_the_open_call_and_never_harms_the_server(
    run: Runner, pki: Pki
) -> None:
    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        port = server_port(server)
        # A client that does not trust the CA.
        with pytest.raises(ssl.SSLCertVerificationError) as unknown_ca:
            await utcp.open_connection(
                HOST, port, ssl=ssl.create_default_context(), server_hostname=SERVER_NAME
            )
        assert unknown_ca.value.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        with pytest.raises(ssl.SSLCertVerificationError):  # ssl=True: asyncio's default context
            await utcp.open_connection(HOST, port, ssl=True, server_hostname=SERVER_NAME)
        # A client that trusts it but expects another name.
        with pytest.raises(ssl.SSLCertVerificationError) as wrong_name:
            await utcp.open_connection(
                HOST, port, ssl=pki.client_context(), server_hostname="example.org"
            )
        assert wrong_name.value.verify_code == HOSTNAME_MISMATCH
        # A client that speaks no TLS at all: the server's handshake fails on its bytes.
        reader, writer = await utcp.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await reader.read()
        writer.close()
        with pytest.raises(ConnectionResetError):  # as asyncio's: the error that ended it
            await writer.wait_closed()

        # The server serves a good client as before; the failed ones never reached its callback.
        reader, writer = await utcp.open_connection(
            HOST, port, ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        assert await echo_over_tls(reader, writer, b"still serving") == b"still serving"
        assert server.is_serving()
        async with server:
            await handlers.wait_finished(1)
        assert handlers.started == 1
        assert handlers.errors == []
        # Outside debug mode, asyncio's servers report a client's failed handshake nowhere.
        assert run.errors == []

    run(main())


def test_handshake_timeout_raises_what_asyncio_raises(run: Runner, pki: Pki) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads the ClientHello and everything after it; never answers."""
        try:
            await reader.read()
        except ConnectionError:
            pass  # the client gave up and reset the connection
        finally:
            writer.close()

    async def attempt(stack: str, port: int) -> BaseException:
        with pytest.raises(Exception) as failed:
            await STACKS[stack].open_connection(
                HOST,
                port,
                ssl=pki.client_context(),
                server_hostname=SERVER_NAME,
                ssl_handshake_timeout=0.5,
            )
        return failed.value

    async def main() -> None:
        errors: dict[str, BaseException] = {}
        for stack in STACKS:
            handlers = Handlers(silent)
            server = await serve(stack, handlers)
            port = server_port(server)
            # Generous: only a hang should trip it (a fully loaded two-core machine took 10 s).
            async with deadline(30, f"the handshake timeouts over {stack}"):
                errors[stack] = await attempt(stack, port)
                # A cancelled open call gives up the same way.
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await attempt(stack, port)
                # STARTTLS to a peer that never starts TLS.
                _, writer = await STACKS[stack].open_connection(HOST, port)
                with pytest.raises(Exception) as failed:
                    await writer.start_tls(
                        pki.client_context(), server_hostname=SERVER_NAME, ssl_handshake_timeout=0.5
                    )
                errors[f"{stack} start_tls"] = failed.value
                await handlers.wait_finished(3)
            server.close()
            await server.wait_closed()
            assert handlers.errors == []
        assert isinstance(errors["tcp"], ConnectionAbortedError), repr(errors["tcp"])
        for what in ("", " start_tls"):
            tcp, got = errors[f"tcp{what}"], errors[f"utcp{what}"]
            assert (type(got), str(got)) == (type(tcp), str(tcp)), what

    run(main())


def test_server_drops_a_client_that_never_starts_its_handshake(run: Runner, pki: Pki) -> None:
    async def main() -> None:
        outcomes: dict[str, Any] = {}
        for stack in STACKS:
            handlers = Handlers(echo)
            ctx = pki.server_context()
            server = await serve(stack, handlers, ssl=ctx, ssl_handshake_timeout=0.5)
            reader, writer = await STACKS[stack].open_connection(HOST, server_port(server))
            async with deadline(10, f"the server's handshake timeout over {stack}"):
                try:
                    outcomes[stack] = await reader.read()
                except ConnectionError as exc:
                    outcomes[stack] = type(exc)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            server.close()
            await server.wait_closed()
            assert handlers.started == 0
        # asyncio's TLS layer force-closes the transport: over TCP the kernel sends FIN, utcp
        # resets that one connection; either way, nothing reaches the loop's exception handler.
        assert outcomes == {"tcp": b"", "utcp": ConnectionResetError}

    run(main())


# ---------------------------------------------------------------------- STARTTLS


@pytest.mark.parametrize("stack", list(STACKS))
def test_starttls_on_both_ends(run: Runner, pki: Pki, stack: str) -> None:
    blob = seeded_bytes(5, 300 * KIB)

    async def upgrade_then_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        assert await reader.readline() == b"STARTTLS\r\n"
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"220 ready\r\n")
        await writer.drain()
        await writer.start_tls(pki.server_context())
        assert writer.get_extra_info("ssl_object").server_side
        writer.write((await reader.readline()).upper())
        writer.write(blob)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        handlers = Handlers(upgrade_then_answer)
        server = await serve(stack, handlers)
        reader, writer = await STACKS[stack].open_connection(HOST, server_port(server))
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"220 ready\r\n"
        await writer.start_tls(pki.client_context(), server_hostname=SERVER_NAME)
        assert ("DNS", SERVER_NAME) in subject_alt_names(writer.get_extra_info("peercert"))
        writer.write(b"hello over tls\r\n")
        assert await reader.readline() == b"HELLO OVER TLS\r\n"
        assert await reader.read() == blob  # to EOF: the server's close_notify
        if stack == "utcp":
            assert isinstance(writer.get_extra_info("connection"), Connection)
            assert all(isinstance(w, utcp.StreamWriter) for w in handlers.writers)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await handlers.wait_finished(1)
        assert handlers.errors == []

    run(main())


def test_starttls_with_a_bad_certificate_fails_as_over_tcp(run: Runner, pki: Pki) -> None:
    """The client rejects the server's certificate: both start_tls() calls fail as over TCP,
    and the server's handler, closing its stream, sees wait_closed() raise the same reset
    (it used to wait for ever: the TLS layer, still in its handshake when the client's reset
    came, told the stream nothing)."""

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"220 ready\r\n")
        await writer.drain()
        try:
            await writer.start_tls(pki.server_context())
        finally:
            writer.close()
            async with deadline(10, "the failed upgrade's wait_closed()"):
                with pytest.raises(ConnectionResetError):
                    await writer.wait_closed()

    async def scenario(stack: str) -> tuple[Any, list[type[BaseException]]]:
        handlers = Handlers(upgrade)
        server = await serve(stack, handlers)
        reader, writer = await STACKS[stack].open_connection(HOST, server_port(server))
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"220 ready\r\n"
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            await writer.start_tls(pki.client_context(), server_hostname="example.org")
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        await handlers.wait_finished(1)
        server.close()
        await server.wait_closed()
        return failed.value.verify_code, [type(exc) for exc in handlers.errors]

    async def main() -> None:
        results = {stack: await scenario(stack) for stack in STACKS}
        # The client's verification fails; the server's start_tls() sees the connection end.
        assert results["tcp"] == (HOSTNAME_MISMATCH, [ConnectionResetError])
        assert results["utcp"] == results["tcp"]

    run(main())


class Silent(asyncio.Protocol):
    """Takes the connection and never answers (a peer that ignores a ClientHello)."""


@pytest.mark.parametrize("how", ["cancelled", "timeout"])
def test_a_starttls_given_up_mid_handshake_still_ends_the_stream(
    run: Runner, pki: Pki, how: str
) -> None:
    """``start_tls()`` cancelled (or timed out by ``asyncio.timeout``) while the peer has not
    answered: the stream's ``wait_closed()`` returns once the close is done, as on uvloop's
    TCP (it waited for ever: asyncio's TLS layer, still in its handshake, told the stream's
    protocol nothing of the connection's end)."""

    async def main() -> None:
        server = await utcp.create_server(Silent, HOST, 0)
        _reader, writer = await utcp.open_connection(HOST, server_port(server))
        upgrade = writer.start_tls(pki.client_context(), server_hostname=SERVER_NAME)
        if how == "cancelled":
            task = asyncio.ensure_future(upgrade)
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await upgrade
        assert writer.transport.is_closing()
        async with deadline(10, "the given-up upgrade's wait_closed()"):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_a_buffered_protocol_with_a_bytearray_gets_every_byte_over_tls(
    run: Runner, pki: Pki
) -> None:
    """A BufferedProtocol whose get_buffer() returns a small bytearray, over TLS: every byte
    arrives unchanged.  asyncio's TLS layer fills the buffer in several reads, the later ones
    into ``buf[offset:]``, a copy for a bytearray: 5 MB arrived the right length but
    corrupted (on uvloop, whose TCP has its own TLS, utcp alone was wrong)."""
    payload = seeded_bytes(31, 2 * MIB)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(100)
            self.data = bytearray()
            self.eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.data += self.buf[:nbytes]

        def eof_received(self) -> bool:
            self.eof.set_result(None)
            return False

    async def main() -> None:
        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await send_all(writer, payload)
            writer.close()
            await writer.wait_closed()

        server = await utcp.start_server(send, HOST, 0, ssl=pki.server_context())
        transport, protocol = await utcp.create_connection(
            Buffered,
            HOST,
            server_port(server),
            ssl=pki.client_context(),
            server_hostname=SERVER_NAME,
        )
        async with deadline(30, "the transfer"):
            await protocol.eof
        assert sha256(bytes(protocol.data)) == sha256(payload)
        transport.close()
        server.close()
        await server.wait_closed()

    run(main())


def test_start_tls_for_protocols(run: Runner, pki: Pki) -> None:
    """``utcp.start_tls`` is ``loop.start_tls`` on every loop (uvloop's refuses utcp)."""

    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = bytearray()
            self.changed = asyncio.Event()

        def data_received(self, data: bytes) -> None:
            self.data += data
            self.changed.set()

        async def wait_for(self, size: int) -> bytes:
            while len(self.data) < size:
                self.changed.clear()
                await self.changed.wait()
            out = bytes(self.data[:size])
            del self.data[:size]
            return out

    async def upgrade_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(4) == b"TLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(pki.server_context())
        await echo(reader, writer)

    async def main() -> None:
        handlers = Handlers(upgrade_then_echo)
        server = await utcp.start_server(handlers, HOST, 0)
        transport, protocol = await utcp.create_connection(Collect, HOST, server_port(server))
        transport.write(b"TLS\n")
        assert await protocol.wait_for(3) == b"OK\n"
        tls_transport = await utcp.start_tls(
            transport, protocol, pki.client_context(), server_hostname=SERVER_NAME
        )
        assert tls_transport.get_extra_info("ssl_object") is not None
        assert tls_transport.get_extra_info("connection") is transport.get_extra_info("connection")
        tls_transport.write(b"over tls")
        assert await protocol.wait_for(8) == b"over tls"
        tls_transport.close()
        async with server:
            await handlers.wait_finished(1)
        assert handlers.errors == []

    run(main())


# ---------------------------------------------------------------------- client certificates


NoCertOutcome = tuple[str, Any]  # where it ended ("open" or "read") and how (bytes or a type)


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=lambda v: v.name
)
def test_client_certificates(run: Runner, pki: Pki, version: ssl.TLSVersion) -> None:
    async def without_cert(stack: str, port: int) -> NoCertOutcome:
        try:
            reader, writer = await STACKS[stack].open_connection(
                HOST, port, ssl=pki.client_context(), server_hostname=SERVER_NAME
            )
        except (OSError, ssl.SSLError) as exc:
            return "open", type(exc)
        try:
            return "read", await reader.read(100)
        except (OSError, ssl.SSLError) as exc:
            return "read", type(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def scenario(stack: str) -> tuple[Any, NoCertOutcome]:
        peercerts: list[Any] = []

        async def look_then_echo(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            peercerts.append(writer.get_extra_info("peercert"))
            await echo(reader, writer)

        handlers = Handlers(look_then_echo)
        ctx = pki.server_context(require_client_cert=True, version=version)
        server = await serve(stack, handlers, ssl=ctx)
        port = server_port(server)
        reader, writer = await STACKS[stack].open_connection(
            HOST, port, ssl=pki.client_context(with_cert=True), server_hostname=SERVER_NAME
        )
        assert writer.get_extra_info("ssl_object").version() == version.name.replace("_", ".")
        assert await echo_over_tls(reader, writer, b"with a certificate") == b"with a certificate"
        outcome = await without_cert(stack, port)
        server.close()
        await server.wait_closed()
        await handlers.wait_finished(1)
        assert handlers.started == 1, "a client without a certificate reached the callback"
        assert handlers.errors == []
        return peercerts[0], outcome

    async def main() -> None:
        results = {stack: await scenario(stack) for stack in STACKS}
        for stack, (peercert, _) in results.items():
            assert ("DNS", "client.example.org") in subject_alt_names(peercert), stack
        if version is ssl.TLSVersion.TLSv1_2:
            # The server refuses before its Finished: the client's handshake fails.
            assert results["tcp"][1] == ("open", ConnectionResetError)
            assert results["utcp"][1] == results["tcp"][1]
        else:
            # TLS 1.3: the client's handshake completes before the server has checked its
            # certificate, so the open call succeeds on both stacks and the first read ends the
            # connection without data.  asyncio's TLS layer sends no alert after a failed
            # handshake; it force-closes the transport: over TCP the kernel sends FIN (the read
            # sees EOF), utcp resets that one connection (the read raises).
            assert results["tcp"][1] == ("read", b"")
            assert results["utcp"][1] == ("read", ConnectionResetError)

    run(main())


# ---------------------------------------------------------------------- an HTTP server


def test_h11_server_over_tls_answers_a_get(run: Runner, pki: Pki) -> None:
    body = seeded_bytes(11, 200 * KIB)

    async def next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await reader.read(64 * KIB))
        return event

    async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request = await next_event(conn, reader)
        assert isinstance(request, h11.Request)
        assert (request.method, request.target) == (b"GET", b"/blob")
        assert isinstance(await next_event(conn, reader), h11.EndOfMessage)
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        handlers = Handlers(http_server)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        reader, writer = await utcp.open_connection(
            HOST, server_port(server), ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target="/blob", headers=[("Host", SERVER_NAME), ("Connection", "close")]
        )
        writer.write(conn.send(request))
        writer.write(conn.send(h11.EndOfMessage()))
        response = await next_event(conn, reader)
        assert isinstance(response, h11.Response) and response.status_code == 200
        received = bytearray()
        while isinstance(event := await next_event(conn, reader), h11.Data):
            received += event.data
        assert isinstance(event, h11.EndOfMessage)
        assert sha256(received) == sha256(body)
        await handlers.close_and_check(writer, server)

    run(main())


# ---------------------------------------------------------------------- keywords


CLIENT_MISUSE: list[tuple[str, dict[str, Any]]] = [
    ("server_hostname without ssl", {"server_hostname": SERVER_NAME}),
    ("ssl_handshake_timeout without ssl", {"ssl_handshake_timeout": 1.0}),
    ("ssl_shutdown_timeout without ssl", {"ssl_shutdown_timeout": 1.0}),
    ("ssl without a host", {"host": None, "port": None, "ssl": True}),
    ("ssl with an empty host", {"host": "", "ssl": True}),
]
SERVER_MISUSE: list[tuple[str, dict[str, Any]]] = [
    ("ssl=True", {"ssl": True}),
    ("ssl=False", {"ssl": False}),
    ("ssl_handshake_timeout without ssl", {"ssl_handshake_timeout": 1.0}),
    ("ssl_shutdown_timeout without ssl", {"ssl_shutdown_timeout": 1.0}),
]


async def refusal(what: str, call: Callable[..., Awaitable[Any]], **kwds: Any) -> BaseException:
    """What ``call(**kwds)`` raises before it opens anything."""
    try:
        await call(**kwds)
    except (ValueError, TypeError) as exc:
        return exc
    pytest.fail(f"{what}: accepted")


def test_keywords_are_checked_as_asyncio_checks_them(run: Runner) -> None:
    async def main() -> None:
        for what, kwds in CLIENT_MISUSE:
            kwds = {"host": HOST, "port": 1, **kwds}
            tcp = await refusal(what, asyncio.open_connection, **kwds)
            got = await refusal(what, utcp.open_connection, **kwds)
            assert (type(got), str(got)) == (type(tcp), str(tcp)), what
        serve_kwds = {"client_connected_cb": echo, "host": HOST, "port": 0}
        for what, kwds in SERVER_MISUSE:
            tcp = await refusal(what, asyncio.start_server, **serve_kwds, **kwds)
            got = await refusal(what, utcp.start_server, **serve_kwds, **kwds)
            assert (type(got), str(got)) == (type(tcp), str(tcp)), what
        # Values asyncio's TLS layer refuses once connected, refused before connecting.
        for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout"):
            with pytest.raises(ValueError, match=f"{name} should be a positive number, got 0"):
                await utcp.open_connection(HOST, 1, ssl=True, **{name: 0})
        # A client endpoint's connections take the same keywords.
        async with await utcp.create_client_endpoint(local_addr=(HOST, 0)) as client:
            with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
                await client.open_connection(HOST, 1, server_hostname=SERVER_NAME)

    run(main())


@pytest.mark.parametrize("plain", [None, False])
def test_ssl_none_or_false_is_a_plain_connection(run: Runner, plain: bool | None) -> None:
    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, ssl=None)
        reader, writer = await utcp.open_connection(HOST, server_port(server), ssl=plain)
        assert writer.get_extra_info("ssl_object") is None
        assert writer.can_write_eof()
        writer.write(b"plain")
        writer.write_eof()
        assert await reader.read() == b"plain"
        await handlers.close_and_check(writer, server)

    run(main())


# ---------------------------------------------------------------------- one socket, many


def test_client_endpoint_opens_tls_connections(run: Runner, pki: Pki) -> None:
    quick = Config(msl_s=0.1)  # short TIME_WAIT: closing the endpoint waits it out

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        port = server_port(server)
        async with await utcp.create_client_endpoint(config=quick, local_addr=(HOST, 0)) as client:

            async def one(i: int) -> bytes:
                reader, writer = await client.open_connection(
                    HOST, port, ssl=pki.client_context(), server_hostname=SERVER_NAME
                )
                assert isinstance(writer, utcp.StreamWriter)
                return await echo_over_tls(reader, writer, seeded_bytes(i, 20 * KIB))

            with pytest.raises(ssl.SSLCertVerificationError):
                await client.open_connection(
                    HOST, port, ssl=pki.client_context(), server_hostname="example.org"
                )
            results = await asyncio.gather(*(one(i) for i in range(4)))
            assert results == [seeded_bytes(i, 20 * KIB) for i in range(4)]
            assert client.sockets  # the failed handshake left the socket open
        async with server:
            await handlers.wait_finished(4)
        assert handlers.errors == []

    run(main())


@pytest.mark.parametrize("bad", ["server_context", "hostname"])
def test_a_tls_layer_that_cannot_start_leaves_no_connection_behind(
    run: Runner, pki: Pki, bad: str
) -> None:
    """asyncio's TLS layer refuses a server-side context or a malformed server name only
    when it is made, after the utcp connection is up: the open call raised, but the
    connection stayed established, its socket open, the server holding it as a handshake
    under way (``wait_closed()`` took ``ssl_handshake_timeout``), and a client endpoint's
    ``wait_closed()`` never returned."""
    kwds: dict[str, Any] = (
        {"ssl": pki.server_context(), "server_hostname": SERVER_NAME}
        if bad == "server_context"
        else {"ssl": pki.client_context(), "server_hostname": ".localhost"}
    )

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0, ssl=pki.server_context())
        port = server_port(server)
        with pytest.raises((ssl.SSLError, ValueError)):
            await utcp.open_connection(HOST, port, **kwds)
        client = await utcp.create_client_endpoint(local_addr=(HOST, 0))
        with pytest.raises((ssl.SSLError, ValueError)):
            await client.open_connection(HOST, port, **kwds)
        async with deadline(10, "the client endpoint closing"):
            client.close()
            await client.wait_closed()
        async with deadline(10, "the server closing"):  # its handshake timeout is 60 s
            await wait_until(lambda: not server.endpoint.handles(), "both connections gone")
            server.close()
            await server.wait_closed()

    run(main())


def test_drain_after_close_over_tls_returns_as_over_tcp(run: Runner, pki: Pki) -> None:
    """``close()`` then ``drain()`` over TLS returns while the close exchange runs, as over
    asyncio's TCP with TLS (utcp raised ConnectionResetError at once, as a plain stream
    does one loop turn after close()); the peer gets every byte."""

    async def scenario(stack: str) -> tuple[str, bytes]:
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.read())
            writer.close()

        server = await serve(stack, handle, ssl=pki.server_context())
        _reader, writer = await STACKS[stack].open_connection(
            HOST, server_port(server), ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        writer.write(b"bye")
        writer.close()
        try:
            await writer.drain()
            outcome = "returned"
        except ConnectionResetError:
            outcome = "raised"
        async with deadline(10, "the close"):
            await writer.wait_closed()
            data = await got
        server.close()
        await server.wait_closed()
        return outcome, data

    async def main() -> None:
        results = {stack: await scenario(stack) for stack in STACKS}
        assert results["tcp"] == ("returned", b"bye")
        assert results["utcp"] == results["tcp"]

    run(main())


def test_a_tls_client_moves_to_a_new_socket_through_its_endpoint(run: Runner, pki: Pki) -> None:
    """Over TLS ``writer.transport`` is asyncio's TLS transport, which has no ``migrate()``
    (README): the client moves through ``get_extra_info("endpoint")`` and the echo goes on
    from the new socket."""

    async def main() -> None:
        server = await utcp.start_server(echo, HOST, 0, ssl=pki.server_context())
        reader, writer = await utcp.open_connection(
            HOST, server_port(server), ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"
        old = writer.get_extra_info("sockname")
        await writer.get_extra_info("endpoint").migrate()
        assert writer.get_extra_info("sockname") != old
        assert await echo_over_tls(reader, writer, b"after the move") == b"after the move"
        server.close()
        await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------- closing


def test_close_over_tls_completes_and_the_server_reads_eof(run: Runner, pki: Pki) -> None:
    async def main() -> None:
        got: list[tuple[bytes, bool]] = []

        async def read_to_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append((await reader.read(), reader.at_eof()))
            writer.close()
            await writer.wait_closed()

        handlers = Handlers(read_to_eof)
        server = await utcp.start_server(handlers, HOST, 0, ssl=pki.server_context())
        _, writer = await utcp.open_connection(
            HOST, server_port(server), ssl=pki.client_context(), server_hostname=SERVER_NAME
        )
        conn = writer.get_extra_info("connection")
        writer.write(b"last words")
        # asyncio's TLS layer flushes, sends close_notify and closes the utcp transport, whose
        # close waits until the peer has acknowledged every byte and the FIN; a stalled step
        # would hang until ssl_shutdown_timeout (30 s) instead.
        async with deadline(10, "close() over TLS"):
            writer.close()
            await writer.wait_closed()
            await handlers.wait_finished(1)
        assert got == [(b"last words", True)]
        assert writer.transport.is_closing()
        stats = conn.stats
        assert stats.state in {S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED}, stats.state
        assert stats.send_buffer_bytes == 0
        async with server:
            pass
        assert handlers.errors == []

    run(main())
