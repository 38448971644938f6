"""A server on a public port under hostile traffic, over real UDP on 127.0.0.1: no
amplification before the handshake validates an address, SYN cookies when the backlog is
full, a SYN flood that cannot grow memory or lock out a real client, the connection limit
refused with a clear error, and resets to strays rate-limited."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    echo,
    make_run_fixture,
    runner_for,
    seeded_bytes,
    server_port,
    wait_until,
)
from utcp import Config, Connection, Flag, Packet, decode, encode

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

run = make_run_fixture()
QUICK = Config(msl_s=0.1, rto_initial_s=0.05)
SYN_FLOOD = Path(__file__).resolve().parent / "_syn_flood.py"


def _raw() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


def _syn(cid: int, isn: int, *, options: bool) -> bytes:
    p = Packet(int(Flag.SYN), cid, 0, isn, 0, 65535)
    if options:
        p.mss, p.wscale, p.sack_permitted, p.timestamps = 1428, 7, True, (1, 0)
    return encode(p)


def _drain(s: socket.socket, *, to_cid: int | None = None) -> list[bytes]:
    """What the raw socket has received; with ``to_cid``, only datagrams addressed to that
    connection id.  Loopback is shared (the portable-path suite runs beside this one): a port
    this socket was given may have belonged moments ago to a client some server still
    retransmits to."""
    out = []
    while True:
        try:
            data = s.recv(65535)
        except BlockingIOError:
            return out
        if to_cid is None or (len(data) >= 12 and int.from_bytes(data[8:12], "big") == to_cid):
            out.append(data)


async def _hog_the_backlog(port: int) -> socket.socket:
    """A raw SYN that takes a ``backlog=1`` server's only backlog slot (it never completes):
    the next SYNs get cookies.  Returns the raw socket, once the SYN-ACK is back."""
    hog = _raw()
    hog.sendto(_syn(1, 1, options=True), (HOST, port))
    await wait_until(lambda: bool(_drain(hog)), "the hog's SYN-ACK")
    return hog


# ------------------------------------------------------------------------------ amplification


@pytest.mark.parametrize("cookies", [False, True], ids=["stateful", "cookie"])
@pytest.mark.parametrize("options", [False, True], ids=["bare", "options"])
def test_no_amplification_before_the_handshake(run: Runner, cookies: bool, options: bool) -> None:
    """Unanswered SYN-ACKs are never re-sent by the server: at most one per SYN, and at most
    three times the bytes that address sent (RFC 9000 section 8.1), however long we wait."""
    cfg = QUICK.replace(syn_cookies=cookies)

    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=cfg, backlog=1)
        port = server_port(server)
        if cookies:  # fill the one backlog slot so the SYNs below get cookies
            filler = _raw()
            filler.sendto(_syn(99, 99, options=False), (HOST, port))
            await wait_until(lambda: bool(_drain(filler)), "the filler's SYN-ACK")
        victim = _raw()
        sent = received = synacks = 0
        for isn in (1000, 1000, 1000):  # a SYN and two retransmissions of it
            syn = _syn(0x77, isn, options=options)
            victim.sendto(syn, (HOST, port))
            sent += len(syn)
            await asyncio.sleep(0.5)  # ten of the server's initial RTOs
            for d in _drain(victim, to_cid=0x77):
                received += len(d)
                assert decode(d).flags == Flag.SYN | Flag.ACK
                synacks += 1
        await asyncio.sleep(1.0)
        for d in _drain(victim, to_cid=0x77):
            received += len(d)
            synacks += 1
        assert 1 <= synacks <= 3
        assert received <= 3 * sent
        stats = server.endpoint.stats
        assert stats.syn_cookies_sent == (3 if cookies else 0)
        server.endpoint.abort_all()

    run(main())


# ------------------------------------------------------------------------------ SYN cookies


def test_a_client_connects_through_syn_cookies(run: Runner) -> None:
    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, config=QUICK, backlog=1)
        port = server_port(server)
        hog = await _hog_the_backlog(port)
        payload = seeded_bytes(3, 300_000)
        reader, writer = await utcp.open_connection(HOST, port, config=QUICK)
        writer.write(payload)
        writer.write_eof()
        assert await reader.read() == payload
        stats = server.endpoint.stats
        assert stats.syn_cookies_sent == 1 and stats.syn_cookies_accepted == 1
        conn = writer.get_extra_info("connection")
        assert conn.stats.bytes_sent == len(payload)  # the cookie connection carried it all
        writer.close()
        await writer.wait_closed()
        await handlers.wait_finished(1)
        server.endpoint.abort_all()  # the hog's half-open connection would wait out its RTOs
        hog.close()

    run(main())


def test_forged_cookie_acks_open_nothing(run: Runner) -> None:
    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=QUICK, backlog=1)
        port = server_port(server)
        attacker = _raw()
        for i in range(50):
            ack = Packet(int(Flag.ACK), 0x55, 0x1000 + i, 2, 7_000 + i, 100, b"x")
            attacker.sendto(encode(ack), (HOST, port))
        await wait_until(
            lambda: server.endpoint.stats.dropped.get("unknown connection", 0) == 50,
            "the forged ACKs are handled",
        )
        assert server.endpoint.connection_count == 0
        assert server.endpoint.stats.syn_cookies_accepted == 0
        server.endpoint.abort_all()

    run(main())


# ------------------------------------------------------------------------------ SYN flood


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_syn_flood_keeps_memory_bounded_and_a_real_client_served() -> None:
    """100,000 SYNs from 64 source ports that never complete; meanwhile a real client connects
    (by cookie, the backlog being full of the flood) and echoes a MiB intact."""
    backlog = 64

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, config=QUICK, backlog=backlog)
        port = server_port(server)
        endpoint = server.endpoint
        rss_before = _rss_bytes()
        peak = [0]

        async def watch() -> None:
            while True:
                peak[0] = max(peak[0], endpoint.connection_count)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SYN_FLOOD),
            HOST,
            str(port),
            "100000",
            "64",
            stdout=subprocess.PIPE,
        )
        await wait_until(lambda: endpoint.stats.syn_cookies_sent > 1000, "the flood is on")
        payload = seeded_bytes(5, 1 << 20)
        reader, writer = await utcp.open_connection(HOST, port, config=QUICK)
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()
        writer.close()
        await writer.wait_closed()
        out, _ = await flood.communicate()
        watcher.cancel()
        assert echoed == payload
        assert out.decode().startswith("sent ")
        assert peak[0] <= backlog + 1, peak[0]
        grown = _rss_bytes() - rss_before
        assert grown < 40 << 20, f"RSS grew by {grown >> 20} MiB during the flood"
        stats = endpoint.stats
        assert stats.syn_cookies_sent > 1000
        await handlers.wait_finished(1)
        endpoint.abort_all()

    with runner_for("asyncio") as runner:
        runner(main(), hang_s=120)


# ------------------------------------------------------------------------------ limits


def test_connections_beyond_the_limit_are_refused_with_a_reason(run: Runner) -> None:
    cfg = QUICK.replace(max_connections=2)

    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=cfg)
        port = server_port(server)
        kept = [await utcp.open_connection(HOST, port) for _ in range(2)]
        with pytest.raises(ConnectionRefusedError, match="too many connections"):
            await utcp.open_connection(HOST, port)
        assert server.endpoint.stats.connections_refused == 1
        for _, writer in kept:
            writer.close()
            await writer.wait_closed()
        await wait_until(lambda: server.endpoint.connection_count == 0, "the slots free up")
        _, writer = await utcp.open_connection(HOST, port)  # room again
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_a_cookie_client_admitted_beyond_the_limit_is_reset_with_the_reason(run: Runner) -> None:
    """The backlog is full (a raw SYN holds it) so two clients get SYN cookies at once,
    below the limit; the second cookie ACK comes at it: that client's connect has
    returned, so it reads ConnectionResetError with the reason, and the server counts
    one refusal (it had been dropped as an unknown connection, and waited out its idle
    timeout).  The server keeps the default RTO, so the hog's half-open connection lasts."""
    cfg = Config(max_connections=2)

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, config=cfg, backlog=1)
        port = server_port(server)
        hog = await _hog_the_backlog(port)
        writers: list[asyncio.StreamWriter] = []

        async def ping() -> bytes:
            # The served client stays open until both have tried: had it closed at once, its
            # slot could free before the other's cookie ACK arrived.
            reader, writer = await utcp.open_connection(HOST, port, config=QUICK)
            writers.append(writer)
            writer.write(b"ping")
            return await asyncio.wait_for(reader.readexactly(4), 10)

        try:
            results = await asyncio.gather(ping(), ping(), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert results.count(b"ping") == 1 and len(errors) == 1, results
            assert "too many connections" in str(errors[0])
            stats = server.endpoint.stats
            if stats.syn_cookies_sent == 2:
                # Both SYNs came while the backlog was full: the second cookie's ACK met the
                # limit, after that client's connect had returned.
                assert isinstance(errors[0], ConnectionResetError), errors
            else:
                # On a loaded machine the second SYN can come after the first client is
                # established: refused at once, with the same reason, as the limit asks.
                assert stats.syn_cookies_sent == 1
                assert isinstance(errors[0], ConnectionRefusedError), errors
            assert stats.connections_refused == 1
            for writer in writers:
                writer.close()
            await handlers.wait_finished(1)
        finally:
            for writer in writers:
                writer.transport.abort()
            server.endpoint.abort_all()  # the hog's half-open connection would wait its RTOs
            hog.close()

    run(main())


def test_resets_to_strays_are_rate_limited(run: Runner) -> None:
    cfg = QUICK.replace(max_resets_per_s=10.0)

    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0, config=cfg)
        port = server_port(server)
        attacker = _raw()
        for i in range(200):
            stray = Packet(int(Flag.ACK), 0x66, 0x9000 + i, 1, 1, 100, b"stray")
            attacker.sendto(encode(stray), (HOST, port))
        stats = server.endpoint.stats
        await wait_until(lambda: stats.dropped.get("unknown connection", 0) == 200, "all handled")
        await asyncio.sleep(0.05)
        resets = _drain(attacker)
        assert 10 <= len(resets) <= 15  # the bucket's ten, and what refilled meanwhile
        assert stats.resets_sent == len(resets)
        assert stats.resets_sent + stats.resets_rate_limited == 200
        server.endpoint.abort_all()

    run(main())


# ------------------------------------------------------------------------------ numbers


def test_isns_and_connection_ids_are_unpredictable_over_ten_thousand_connections() -> None:
    isns, cids = [], []
    for _ in range(10_000):
        conn = Connection()
        conn.connect(now=0.0)
        syn = decode(conn.datagrams_to_send(now=0.0)[0])
        isns.append(syn.seq)
        cids.append(syn.src_cid)
    for values in (isns, cids):
        assert len(set(values)) >= 9_980
        deltas = {(b - a) % 2**32 for a, b in itertools.pairwise(values)}
        assert len(deltas) >= 9_980  # no constant or few-valued increments
        buckets = [0] * 16
        for v in values:
            buckets[v >> 28] += 1
        chi2 = sum((n - 625) ** 2 / 625 for n in buckets)
        assert chi2 < 45, buckets  # 15 degrees of freedom: p < 1e-4 for a fair source
    assert 0 not in cids


def test_isns_differ_across_restarts() -> None:
    code = (
        "from utcp import Connection, decode\n"
        "c = Connection(); c.connect(now=0.0)\n"
        "p = decode(c.datagrams_to_send(now=0.0)[0]); print(p.seq, p.src_cid)\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(3)
    }
    assert len(runs) == 3


def test_server_stats_total_the_drops_of_endpoint_and_connections(run: Runner) -> None:
    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, config=QUICK)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=QUICK)
        conn = writer.get_extra_info("connection")
        # A duplicate of the client's own descriptor: asyncio's wrapper refuses send().
        sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        # From the client's own address: a RST far outside the window (the connection drops
        # it) and a datagram with a broken checksum (the endpoint drops it).
        far = (conn.stats.bytes_sent + (1 << 31)) & 0xFFFFFFFF
        sock.send(encode(Packet(int(Flag.RST), conn.local_cid, conn.peer_cid, far, 0, 0)))
        bad = bytearray(encode(Packet(int(Flag.ACK), conn.local_cid, conn.peer_cid, 0, 0, 9)))
        bad[-1] ^= 0xFF
        sock.send(bytes(bad))
        sock.close()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        stats = server.stats
        assert stats["dropped"] == {"out of window": 1, "bad checksum": 1}
        assert stats["connections"] == 1
        assert stats["datagrams_received"] >= 5
        writer.close()
        await writer.wait_closed()
        await handlers.wait_finished(1)
        server.close()
        await server.wait_closed()

    run(main())


def test_idle_timeout_closes_a_silent_connection(run: Runner) -> None:
    """A client that connects and then says nothing is reset by a server with an idle
    timeout; both ends see an error, neither hangs."""
    cfg = QUICK.replace(idle_timeout_s=0.3, syn_retries=1)  # one handshake-ACK re-send at most
    outcome: list[BaseException] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        except OSError as exc:  # TimeoutError is an OSError
            outcome.append(exc)
        writer.close()

    async def main() -> None:
        handlers = Handlers(hold)
        server = await utcp.start_server(handlers, HOST, 0, config=cfg)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        with pytest.raises(ConnectionResetError):
            await reader.read()
        await handlers.wait_finished(1)
        assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError)
        writer.close()
        server.close()
        await server.wait_closed()

    run(main())
