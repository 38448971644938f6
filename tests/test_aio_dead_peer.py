"""A peer that vanishes is noticed in seconds: real processes killed with SIGKILL mid-transfer.

Where the peer's host answers with ICMP port unreachable (loopback does), the error queue tells
the connection at once and it ends with ``ConnectionResetError`` once the error repeats.  Where
nothing answers (here: the peer sits behind a relay, which takes the ICMP errors itself), the
default idle timeout with keepalive probes ends it with ``TimeoutError`` after about 30 s.
The deadlines below are hang guards set at the promised bounds (5 s and 35 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Runner,
    deadline,
    make_run_fixture,
    runner_for,
    server_port,
    wait_until,
)
from utcp import CloseReason, Config
from utcp.tools.netem import Relay

pytestmark = [
    pytest.mark.sockets,
    pytest.mark.skipif(sys.platform != "linux", reason="ICMP errors are read on Linux only"),
]

run = make_run_fixture()


def skip_without_icmp(kind: str) -> None:
    """The error queue is not read on asyncio's portable path under uvloop: libuv reads it
    itself and crashes uvloop (utcp.asyncio.dgram, ``create_endpoint``); there only the idle
    timeout notices a vanished peer."""
    if kind == "uvloop" and os.environ.get("UTCP_IO") == "portable":
        pytest.skip("no ICMP errors on the portable path under uvloop (libuv's own reader)")


PEER = Path(__file__).resolve().parent / "_vanishing_peer.py"
CHUNK = bytes(64 << 10)
MIB = 1 << 20


@asynccontextmanager
async def peer_process(*args: str, kind: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``_vanishing_peer.py`` process; killed (if still alive) and reaped on leaving."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, str(PEER), "--loop", kind, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def read_line(proc: asyncio.subprocess.Process, what: str) -> bytes:
    assert proc.stdout is not None
    async with deadline(30, what):
        line = await proc.stdout.readline()
    assert line, f"the peer process exited before {what}"
    return line


class Outcome:
    """What a server-side handler ended with, and its connection."""

    def __init__(self) -> None:
        self.done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.conn: utcp.Connection | None = None

    def set(self, result: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(result)


def streaming_handler(mode: str, outcome: Outcome) -> Any:
    """A server handler that reads without end (``mode="send"``: the client sends) or writes
    without end (``mode="read"``), recording how that ended."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcome.conn = writer.get_extra_info("connection")
        try:
            if mode == "send":
                while await reader.read(1 << 16):
                    pass
                outcome.set(None)
            else:
                while True:
                    writer.write(CHUNK)
                    await writer.drain()
        except Exception as exc:  # the outcome under test
            outcome.set(exc)
        finally:
            writer.close()

    return handler


async def kill_and_time(proc: asyncio.subprocess.Process) -> float:
    """SIGKILL the process (the kernel sends nothing for a UDP socket); the loop time then."""
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    return asyncio.get_running_loop().time()


@pytest.mark.parametrize("mode", ["send", "read"])
def test_a_killed_client_is_noticed_in_seconds_where_icmp_answers(run: Runner, mode: str) -> None:
    """The client sends (the server only reads) or only reads (the server sends), and is
    killed: the server's next datagram (a retransmission, or the early probe of a peer that
    stalled mid-transfer) meets a closed port, and the connection is reset within 5 s."""

    skip_without_icmp(run.kind)

    async def main() -> None:
        outcome = Outcome()
        server = await utcp.start_server(streaming_handler(mode, outcome), HOST, 0)
        async with (
            server,
            peer_process("client", HOST, str(server_port(server)), mode, kind=run.kind) as proc,
        ):
            await read_line(proc, "the transfer flowing")
            await kill_and_time(proc)
            async with deadline(5, "noticing the killed client"):
                exc = await outcome.done
            assert isinstance(exc, ConnectionResetError), repr(exc)
            assert "unreachable" in str(exc)
            assert outcome.conn is not None
            assert outcome.conn.close_reason is CloseReason.UNREACHABLE
            assert outcome.conn.stats.icmp_errors >= 2
            assert server.stats["icmp_errors"] >= 2

    run(main())


def test_a_killed_server_is_noticed_in_seconds_where_icmp_answers(run: Runner) -> None:
    """The server process is killed while data flows both ways: the client's drain() and
    read() both end in ConnectionResetError within 5 s."""

    skip_without_icmp(run.kind)

    async def main() -> None:
        async with peer_process("server", kind=run.kind) as proc:
            line = await read_line(proc, "the server listening")
            assert line.startswith(b"port "), f"the server said {line!r}"
            reader, writer = await utcp.open_connection(HOST, int(line.split()[1]))
            echoed = asyncio.Event()

            async def read_until_error() -> None:
                total = 0
                while data := await reader.read(1 << 16):
                    total += len(data)
                    if total >= MIB:
                        echoed.set()
                pytest.fail("the reader saw EOF from a killed peer")

            reading = asyncio.create_task(read_until_error())

            async def write_until_error() -> None:
                while True:
                    writer.write(CHUNK)
                    await writer.drain()

            writing = asyncio.create_task(write_until_error())
            async with deadline(30, "a megabyte echoed"):
                await echoed.wait()
            await kill_and_time(proc)
            async with deadline(5, "noticing the killed server"):
                with pytest.raises(ConnectionResetError):
                    await writing
                with pytest.raises(ConnectionResetError):
                    await reading
            conn = writer.get_extra_info("connection")
            assert conn.close_reason is CloseReason.UNREACHABLE
            with pytest.raises(ConnectionResetError):
                await reader.read(1)  # the error stays, as on asyncio's transports
            writer.close()

    run(main())


def test_killed_peers_are_noticed_within_35_s_where_nothing_answers() -> None:
    """Behind a relay no ICMP error comes back: with the defaults, a killed client that was
    sending, one that was only reading, and a killed server are all noticed in about 30 s
    (the idle timeout, keepalive probes unanswered), with a TimeoutError that says so.  The
    three run at once; one event loop suffices (the bound comes from the core's timers)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outcomes = {mode: Outcome() for mode in ("send", "read")}
        servers = {
            mode: await utcp.start_server(streaming_handler(mode, outcomes[mode]), HOST, 0)
            for mode in outcomes
        }
        relays = [
            await Relay.start((HOST, 0), (HOST, server_port(servers[mode])), seed=i)
            for i, mode in enumerate(outcomes)
        ]
        async with (
            peer_process(
                "client", HOST, str(relays[0].address[1]), "send", kind="uvloop"
            ) as sender,
            peer_process(
                "client", HOST, str(relays[1].address[1]), "read", kind="uvloop"
            ) as reader_proc,
            peer_process("server", kind="uvloop") as server_proc,
        ):
            line = await read_line(server_proc, "the server listening")
            server_relay = await Relay.start((HOST, 0), (HOST, int(line.split()[1])), seed=3)
            reader, writer = await utcp.open_connection(HOST, server_relay.address[1])
            writer.write(CHUNK)
            assert await reader.readexactly(len(CHUNK)) == CHUNK
            await read_line(sender, "the sending client flowing")
            await read_line(reader_proc, "the reading client flowing")
            for proc in (sender, reader_proc, server_proc):
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            killed_at = loop.time()

            async def client_outcome() -> BaseException | None:
                try:
                    await reader.read(1)
                except Exception as exc:
                    return exc
                return None

            async with deadline(35, "noticing three killed peers without ICMP"):
                results = await asyncio.gather(
                    outcomes["send"].done, outcomes["read"].done, client_outcome()
                )
            elapsed = loop.time() - killed_at
            for exc in results:
                assert isinstance(exc, TimeoutError), repr(exc)
                assert "no answer from 127.0.0.1:" in str(exc)
            # Nothing came back at all, so nothing ended it before the idle timeout.
            assert elapsed >= 25.0, f"ended after {elapsed:.1f} s: not by the idle timeout"
            writer.close()
            for relay in (*relays, server_relay):
                relay.close()
            for server in servers.values():
                server.close()
                await server.wait_closed()

    with runner_for("uvloop") as runner:
        runner(main(), hang_s=90)


async def _reply_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await reader.readexactly(5)
        writer.write(request.upper() * 100)
        await asyncio.sleep(0.05)  # the client reads the reply and vanishes meanwhile
        writer.write(b"bye")  # so this and the FIN are never acknowledged
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass  # the client vanished: what the test is about


async def _vanishing_clients(target: tuple[str, int], count: int) -> None:
    """``count`` clients that each read their reply and then vanish: their socket closes with
    nothing sent (as when a process is killed), whatever the server still has to say."""

    async def one(i: int) -> None:
        reader, writer = await utcp.open_connection(*target)
        writer.write(b"hi%03d" % i)
        assert await reader.readexactly(500) == (b"HI%03d" % i) * 100
        endpoint = writer.get_extra_info("endpoint")
        endpoint.transport.abort()

    await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize("through", ["loopback", "relay"])
def test_a_hundred_vanished_clients_leave_the_server_closed_within_40_s(through: str) -> None:
    """100 clients vanish right after reading their replies, before the server's last bytes
    and FIN are acknowledged: the server's wait_closed() returns within 40 s, sooner where the
    closed ports answer with ICMP (loopback) than where nothing answers (a relay: the orphaned
    connections give up after ``fin_retries``)."""

    async def main() -> None:
        server = await utcp.start_server(_reply_and_close, HOST, 0)
        relay = None
        target = (HOST, server_port(server))
        if through == "relay":
            relay = await Relay.start((HOST, 0), target, seed=7)
            target = relay.address
        await _vanishing_clients(target, 100)
        server.close()
        async with deadline(40, "the server closing"):
            await server.wait_closed()
        assert server.endpoint.connection_count == 0
        if relay is not None:
            relay.close()

    with runner_for("uvloop") as runner:
        runner(main(), hang_s=90)


def test_a_datagram_to_a_port_nobody_owns_refuses_a_connect(run: Runner) -> None:
    """A client endpoint (unconnected socket, many connections) learns from the error queue
    that nothing listens: the connect fails with ConnectionRefusedError at once."""

    skip_without_icmp(run.kind)

    async def main() -> None:
        import socket

        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
        probe.close()  # nobody listens there now
        async with await utcp.create_client_endpoint(local_addr=(HOST, 0)) as client:
            async with deadline(5, "the refusal"):
                with pytest.raises(ConnectionRefusedError):
                    await client.open_connection(HOST, port)
            await wait_until(lambda: client.stats["connections"] == 0, "the attempt forgotten")

    run(main())


def test_a_forged_port_unreachable_cannot_end_a_connection(run: Runner) -> None:
    """An ICMP error whose quoted datagram names the connection but a sequence number outside
    what is in flight (what an off-path attacker would have to guess) is counted and
    ignored (RFC 5927 section 4.1)."""

    async def main() -> None:
        from utcp.asyncio.errqueue import SocketError
        from utcp.packet import Flag, Packet, encode

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1 << 16):
                writer.write(data)
            writer.close()

        server = await utcp.start_server(echo, HOST, 0, config=Config())
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        conn = writer.get_extra_info("connection")
        endpoint = writer.get_extra_info("endpoint")
        peer = writer.get_extra_info("peername")
        wrong_seq = Packet(
            int(Flag.ACK), conn.local_cid, conn.peer_cid, (conn.iss + (1 << 30)) & 0xFFFFFFFF, 0, 0
        )
        wrong_cid = Packet(int(Flag.ACK), conn.local_cid, conn.peer_cid ^ 1, conn.iss + 5, 0, 0)
        for forged in (wrong_seq, wrong_cid):
            err = SocketError(
                errno=111,
                origin=2,
                icmp_type=3,
                icmp_code=3,
                info=0,
                quoted=encode(forged),
                addr=peer,
                offender=None,
            )
            endpoint.errors_received([err, err])
        assert conn.close_reason is None
        assert endpoint.stats.icmp_errors_ignored == 4
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


class _DataDroppingRelay(asyncio.DatagramProtocol):
    """Between a client and a server on loopback: drops every datagram of the client's that
    carries data, passes the rest both ways (handshake, ACKs, the server's data)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: Any = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if not utcp.decode(data).payload:
            self.transport.sendto(data, self.server)


def test_a_peer_that_answers_while_our_data_is_lost_times_out_saying_so(run: Runner) -> None:
    """The server keeps writing (the client hears it every 100 ms) while every datagram of
    the client's data is lost: the client's retransmissions run out and the TimeoutError
    says the peer answers but acknowledged none of the data, and for how long (it said
    "no answer ... for 0 s", counting from the last datagram heard)."""
    cfg = Config(rto_initial_s=0.1, rto_min_s=0.05, max_retransmits=5, pmtud=False)

    async def main() -> None:
        ended = asyncio.Event()

        async def tick(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    writer.write(b"tick")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            except (ConnectionError, TimeoutError):
                pass
            finally:
                writer.close()
                ended.set()

        server = await utcp.start_server(tick, HOST, 0)
        loop = asyncio.get_running_loop()
        relay_transport, _ = await loop.create_datagram_endpoint(
            lambda: _DataDroppingRelay((HOST, server_port(server))), local_addr=(HOST, 0)
        )
        try:
            port = relay_transport.get_extra_info("sockname")[1]
            reader, writer = await utcp.open_connection(HOST, port, config=cfg)
            writer.write(b"x" * 20_000)
            with pytest.raises(TimeoutError) as caught:
                async with deadline(60, "the client's retransmissions to run out"):
                    while await reader.read(100):
                        pass
            message = str(caught.value)
            assert "answers, but acknowledged none of our data for" in message, message
            writer.close()
        finally:
            relay_transport.close()
            server.close()
            server.endpoint.abort_all()
        async with deadline(10, "the server's handler to see the end"):
            await ended.wait()

    run(main())
