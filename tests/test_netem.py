"""The impairing UDP relay (utcp.tools.netem) and its command, on real loopback sockets.

Every random decision is seeded; time only enters as generous lower bounds (a datagram is never
early) and as wide margins around the blackhole interval.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

import utcp
from tests.aio_helpers import echo, wait_until
from utcp.cli.netem_cmd import impairments, register
from utcp.cli.netem_cmd import run as netem_run
from utcp.tools.netem import DirectionCounters, Impairment, Relay

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

HOST = "127.0.0.1"
KIB = 1 << 10
Address = Any


class Peer(asyncio.DatagramProtocol):
    """A plain UDP socket that records what it receives (loop time, bytes, sender) and may echo."""

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[tuple[float, bytes, Address]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asyncio reads one datagram per loop turn while the relay forwards a batch: give the
        # kernel room to hold a whole test's worth, so a loaded machine loses nothing here.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.append((self._loop.time(), data, addr))
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)

    @property
    def payloads(self) -> list[bytes]:
        return [data for _, data, _ in self.received]

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def peer(*, echo: bool = False, remote: tuple[str, int] | None = None) -> Peer:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: Peer(echo=echo),
        local_addr=(HOST, 0) if remote is None else None,
        remote_addr=remote,
    )
    return protocol


async def send_paced(client: Peer, relay: Relay, payloads: list[bytes], batch: int = 50) -> None:
    """Send in batches, each once the relay has read the one before: the kernel drops nothing,
    so the relay sees exactly this sequence (which is what makes a seed repeatable)."""
    start = relay.counters.up.received
    for i in range(0, len(payloads), batch):
        for data in payloads[i : i + batch]:
            client.send(data)
        done = start + min(i + batch, len(payloads))
        await wait_until(lambda n=done: relay.counters.up.received >= n, f"relay read {done}")


def _undecodable(stats: Any) -> int:
    return stats.dropped.get("malformed", 0) + stats.dropped.get("bad checksum", 0)


def settled(c: DirectionCounters) -> bool:
    """Every copy of every datagram is accounted for exactly once."""
    dropped = (
        c.dropped_loss + c.dropped_queue + c.dropped_blackhole + c.dropped_too_big + c.dropped_send
    )
    return c.forwarded + dropped == c.received + c.duplicated


def datagrams(seed: int, count: int, size: int = 32) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


# ---------------------------------------------------------------------- forwarding


async def check_forwards_both_ways() -> None:
    server = await peer(echo=True)
    async with await Relay.start((HOST, 0), server.address, seed=1) as relay:
        assert relay.address[1] != 0
        client = await peer(remote=relay.address)
        sent = [b"hello %d" % i for i in range(20)]
        for data in sent:
            client.send(data)
        await wait_until(lambda: len(client.received) == len(sent), "all echoes are back")
        assert sorted(client.payloads) == sorted(sent)
        assert sorted(server.payloads) == sorted(sent)
        assert {addr for _, _, addr in client.received} == {relay.address}
        for c in (relay.counters.up, relay.counters.down):
            assert c.received == c.forwarded == len(sent)
            assert c.bytes_received == c.bytes_forwarded == sum(map(len, sent))
        assert relay.clients == 1 and relay.counters.mappings_created == 1
        client.close()
    server.close()


async def test_forwards_both_ways() -> None:
    await check_forwards_both_ways()


async def check_delay_is_a_lower_bound() -> None:
    up = Impairment(delay_s=0.050, jitter_s=0.010)
    down = Impairment(delay_s=0.080)
    server = await peer(echo=True)
    async with await Relay.start((HOST, 0), server.address, up=up, down=down, seed=2) as relay:
        client = await peer(remote=relay.address)
        loop = asyncio.get_running_loop()
        sent_at = {}
        for i in range(5):
            data = b"ping %d" % i
            sent_at[data] = loop.time()
            client.send(data)
            await asyncio.sleep(0.005)
        await wait_until(lambda: len(client.received) == 5, "all echoes are back")
        for t, data, _ in server.received:
            assert t - sent_at[data] >= up.delay_s
        for t, data, _ in client.received:
            assert t - sent_at[data] >= up.delay_s + down.delay_s
        client.close()
    server.close()


async def test_delay_is_a_lower_bound() -> None:
    await check_delay_is_a_lower_bound()


# ---------------------------------------------------------------------- random impairments


async def lossy_run(seed: int, payloads: list[bytes]) -> tuple[DirectionCounters, list[bytes]]:
    server = await peer()
    async with await Relay.start(
        (HOST, 0), server.address, up=Impairment(loss=0.30), seed=seed
    ) as relay:
        client = await peer(remote=relay.address)
        await send_paced(client, relay, payloads)
        forwarded = relay.counters.up.forwarded
        await wait_until(lambda: len(server.received) == forwarded, "forwarded datagrams arrive")
        client.close()
    server.close()
    assert relay.counters.down == DirectionCounters()
    return relay.counters.up, server.payloads


async def test_loss_is_seeded_and_roughly_the_asked_fraction() -> None:
    payloads = datagrams(0, 2000)
    counters, delivered = await lossy_run(7, payloads)
    assert counters.received == 2000
    assert 480 <= counters.dropped_loss <= 720, counters  # 600 expected; sd about 20
    assert counters.forwarded == 2000 - counters.dropped_loss == len(delivered)
    assert settled(counters)
    assert set(delivered) <= set(payloads)

    again, delivered_again = await lossy_run(7, payloads)
    assert again == counters, "same seed, same datagrams: same decisions"
    assert delivered_again == delivered
    _, other = await lossy_run(8, payloads)
    assert other != delivered


def one_bit_away(data: bytes, originals: set[bytes]) -> list[bytes]:
    """The originals ``data`` differs from in exactly one bit."""
    found = []
    buf = bytearray(data)
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            if bytes(buf) in originals:
                found.append(bytes(buf))
            buf[i] ^= 1 << bit
    return found


async def test_duplication_and_corruption_are_counted_and_visible() -> None:
    payloads = datagrams(1, 500)
    originals = set(payloads)
    server = await peer()
    up = Impairment(dup=0.10, corrupt=0.10)
    async with await Relay.start((HOST, 0), server.address, up=up, seed=3) as relay:
        client = await peer(remote=relay.address)
        await send_paced(client, relay, payloads)
        c = relay.counters.up
        await wait_until(lambda: len(server.received) == c.forwarded, "every copy arrives")
        client.close()
    server.close()
    assert c.received == 500 and c.dropped_loss == 0
    assert 20 <= c.duplicated <= 80 and 30 <= c.corrupted <= 90, c  # 50 and 55 expected
    assert c.forwarded == 500 + c.duplicated and settled(c)
    copies: Counter[bytes] = Counter()
    corrupted = 0
    for data in server.payloads:
        if data in originals:
            copies[data] += 1
            continue
        (original,) = one_bit_away(data, originals)  # exactly one bit of one byte flipped
        copies[original] += 1
        corrupted += 1
    assert corrupted == c.corrupted
    assert set(copies) == originals  # nothing lost, every datagram at least once
    assert sum(n - 1 for n in copies.values()) == c.duplicated


async def test_reorder_counts_and_reorders() -> None:
    payloads = [b"%04d" % i for i in range(300)]
    server = await peer()
    up = Impairment(reorder=0.2, reorder_extra_s=0.020)
    async with await Relay.start((HOST, 0), server.address, up=up, seed=4) as relay:
        client = await peer(remote=relay.address)
        await send_paced(client, relay, payloads, batch=10)
        await wait_until(lambda: len(server.received) == 300, "every datagram arrives")
        client.close()
    server.close()
    assert 30 <= relay.counters.up.reordered <= 90  # 60 expected
    assert sorted(server.payloads) == payloads
    assert server.payloads != payloads


# ---------------------------------------------------------------------- rate, queue, blackhole


async def check_rate_limit_tail_drops_a_burst() -> None:
    rate_bps, queue_bytes, size = 1e6, 8 * KIB, 1000
    server = await peer()
    up = Impairment(rate_bps=rate_bps, queue_bytes=queue_bytes)
    async with await Relay.start((HOST, 0), server.address, up=up, seed=5) as relay:
        client = await peer(remote=relay.address)
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        for data in datagrams(2, 60, size):
            client.send(data)
        c = relay.counters.up
        await wait_until(lambda: c.received == 60, "the relay read the burst")
        t_read = loop.time()
        assert c.dropped_queue > 0
        passed = c.received - c.dropped_queue
        await wait_until(lambda: len(server.received) == passed, "the queue drains")
        client.close()
    server.close()
    assert c.forwarded == passed and settled(c)
    # No more than the queue plus what the link could send while the burst was arriving.
    assert c.bytes_forwarded <= queue_bytes + rate_bps / 8 * (t_read - t_start) + size
    # And the link really is that slow: the last datagram left after all of them serialised.
    t_last = max(t for t, _, _ in server.received)
    assert t_last - t_start >= c.forwarded * size * 8 / rate_bps - 1e-6


async def test_rate_limit_tail_drops_a_burst() -> None:
    await check_rate_limit_tail_drops_a_burst()


async def test_rate_limit_passes_a_paced_stream() -> None:
    server = await peer()
    up = Impairment(rate_bps=10e6, queue_bytes=16 * KIB, delay_s=0.010)
    async with await Relay.start((HOST, 0), server.address, up=up, seed=6) as relay:
        client = await peer(remote=relay.address)
        for data in datagrams(3, 100, 1000):
            client.send(data)
            await asyncio.sleep(0.002)  # 4 Mbit/s offered to a 10 Mbit/s link
        await wait_until(lambda: len(server.received) == 100, "every datagram arrives")
        client.close()
    server.close()
    assert relay.counters.up.dropped_queue == 0


async def test_blackhole_drops_everything_inside_and_nothing_outside() -> None:
    server = await peer()
    up = Impairment(blackhole=(0.3, 0.6))  # the margins around each phase are 0.3 s
    async with await Relay.start((HOST, 0), server.address, up=up, seed=7) as relay:
        client = await peer(remote=relay.address)
        loop = asyncio.get_running_loop()
        phases = [datagrams(10 + i, 20) for i in range(3)]
        for phase, at in zip(phases, (0.0, 0.6, 1.2)):
            await asyncio.sleep(max(0.0, relay.started_at + at - loop.time()))
            await send_paced(client, relay, phase)
        await wait_until(lambda: len(server.received) == 40, "phases 1 and 3 arrive")
        client.close()
    server.close()
    c = relay.counters.up
    assert c.dropped_blackhole == 20 and c.forwarded == 40 and settled(c)
    assert sorted(server.payloads) == sorted(phases[0] + phases[2])


async def test_mtu_drops_larger_datagrams_silently_and_the_largest_that_fits_whole() -> None:
    server = await peer()
    up = Impairment(mtu=1400)
    sizes = [1400, 1401, 65507, 1, 1399, 9000, 1400]
    sent = [random.Random(i).randbytes(n) for i, n in enumerate(sizes)]
    async with await Relay.start((HOST, 0), server.address, up=up, seed=9) as relay:
        client = await peer(remote=relay.address)
        await send_paced(client, relay, sent)
        await wait_until(lambda: len(server.received) == 4, "the four that fit arrive")
        client.close()
    server.close()
    c = relay.counters.up
    assert c.dropped_too_big == 3 and c.forwarded == 4 and settled(c)
    assert sorted(server.payloads) == sorted(d for d in sent if len(d) <= 1400)
    assert c.bytes_received == sum(sizes)  # 65507 bytes were read whole


# ---------------------------------------------------------------------- clients and errors


async def test_each_client_gets_its_own_replies() -> None:
    server = await peer(echo=True)
    async with await Relay.start((HOST, 0), server.address, seed=8) as relay:
        a = await peer(remote=relay.address)
        b = await peer(remote=relay.address)
        for i in range(10):
            a.send(b"a%d" % i)
            b.send(b"b%d" % i)
        await wait_until(lambda: len(a.received) == len(b.received) == 10, "both get 10 back")
        assert sorted(a.payloads) == sorted(b"a%d" % i for i in range(10))
        assert sorted(b.payloads) == sorted(b"b%d" % i for i in range(10))
        assert relay.clients == 2
        assert len({addr for _, _, addr in server.received}) == 2  # one mapping each
        a.close()
        b.close()
    server.close()


async def test_idle_mappings_expire_and_the_oldest_is_evicted() -> None:
    server = await peer(echo=True)
    async with await Relay.start(
        (HOST, 0), server.address, seed=9, max_clients=2, idle_timeout_s=0.2
    ) as relay:
        clients = [await peer(remote=relay.address) for _ in range(3)]
        for i, client in enumerate(clients):
            client.send(b"x")
            await wait_until(lambda c=client: len(c.received) == 1, f"client {i} gets a reply")
        assert relay.clients == 2 and relay.counters.mappings_evicted == 1
        clients[0].send(b"again")  # evicted, then mapped afresh
        await wait_until(lambda: len(clients[0].received) == 2, "the evicted client is served")
        await wait_until(lambda: relay.clients == 0, "idle mappings expire")
        assert relay.counters.mappings_expired == 2
        assert relay.counters.mappings_created == 4
        for client in clients:
            client.close()
    server.close()


async def test_socket_errors_are_counted_not_raised() -> None:
    gone = await peer()
    nobody = gone.address
    gone.close()  # nobody listens there now: the kernel answers with port unreachable
    async with await Relay.start((HOST, 0), nobody, seed=10) as relay:
        client = await peer(remote=relay.address)
        for i in range(5):
            client.send(b"anyone? %d" % i)
            await wait_until(lambda n=i + 1: relay.counters.up.received == n, "relay reads it")
            await asyncio.sleep(0.01)  # let the ICMP error come back
        c = relay.counters
        await wait_until(lambda: c.up.errors + c.down.errors > 0, "errors are counted")
        client.close()
    assert c.up.received == 5 and settled(c.up) and settled(c.down)


async def test_ipv6_clients_reach_an_ipv4_server() -> None:
    server = await peer(echo=True)
    try:
        relay = await Relay.start(("::1", 0), server.address, seed=13)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with relay:
        assert relay.address[0] == "::1"
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(Peer, remote_addr=relay.address)
        client.send(b"over v6")
        await wait_until(lambda: len(client.received) == 1, "the echo is back")
        assert client.payloads == [b"over v6"]
        client.close()
    server.close()


@pytest.mark.parametrize(
    "check",
    [check_forwards_both_ways, check_delay_is_a_lower_bound, check_rate_limit_tail_drops_a_burst],
)
def test_on_uvloop(check: Callable[[], Any]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(check(), 20))


# ---------------------------------------------------------------------- utcp through the relay


async def transfer_through(relay_imp: Impairment, seed: int, size: int) -> dict[str, Any]:
    """Echo ``size`` seeded bytes through a relay impairing both ways; return what was seen."""
    data = random.Random(seed).randbytes(size)
    server = await utcp.start_server(echo, HOST, 0)
    server_addr = server.sockets[0].getsockname()[:2]
    malformed_at_client = 0

    def observe(kind: str, datagram: bytes, addr: Address) -> None:
        nonlocal malformed_at_client
        if kind == "recv":
            try:
                utcp.decode(datagram)
            except utcp.PacketError:
                malformed_at_client += 1

    async with (
        server,
        await Relay.start((HOST, 0), server_addr, up=relay_imp, down=relay_imp, seed=seed) as relay,
        asyncio.timeout(20),
    ):
        reader, writer = await utcp.open_connection(*relay.address, observer=observe)

        async def send() -> None:
            for i in range(0, size, 16 * KIB):
                writer.write(data[i : i + 16 * KIB])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        echoed = await reader.read()
        await sender
        conn_stats = writer.get_extra_info("connection").stats
        writer.close()
        await writer.wait_closed()
        await wait_until(
            lambda: _undecodable(server.endpoint.stats) >= relay.counters.up.corrupted,
            "corrupted datagrams reach the server",
        )
        server_malformed = _undecodable(server.endpoint.stats)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(data).hexdigest(), f"seed={seed}"
    return {
        "relay": relay.counters,
        "server_malformed": server_malformed,
        "client_malformed": malformed_at_client,
        "client_conn": conn_stats,
    }


async def test_utcp_transfer_survives_loss_both_ways() -> None:
    seen = await transfer_through(Impairment(loss=0.05), seed=11, size=256 * KIB)
    assert seen["relay"].up.dropped_loss > 0 and seen["relay"].down.dropped_loss > 0


async def test_utcp_drops_what_the_relay_corrupts() -> None:
    # 1 MiB over a 1500-byte path MTU: about 1000 datagrams each way, so both directions see
    # some corruption (~10).  (Over loopback's own MTU, PMTU discovery would send 64 KiB ones.)
    seen = await transfer_through(Impairment(corrupt=0.01, mtu=1500), seed=12, size=1 << 20)
    up, down = seen["relay"].up, seen["relay"].down
    assert up.corrupted > 0 and down.corrupted > 0, (up, down)
    # Every flipped bit fails the checksum: the endpoint counts and drops it before any
    # connection sees it (so the connection's own datagrams_dropped does not include these).
    assert seen["server_malformed"] == up.corrupted
    assert seen["client_malformed"] == down.corrupted


async def test_utcp_discovers_the_relays_path_mtu() -> None:
    """A relay that silently drops datagrams above 1400 bytes, as a path MTU black hole: PMTU
    discovery settles at exactly that size over real sockets, and data then uses it."""
    sizes: list[int] = []

    def observe(kind: str, datagram: bytes, addr: Address) -> None:
        if kind == "send" and utcp.decode(datagram).payload:
            sizes.append(len(datagram))

    data = random.Random(13).randbytes(512 * KIB)
    imp = Impairment(mtu=1400)
    server = await utcp.start_server(echo, HOST, 0)
    server_addr = server.sockets[0].getsockname()[:2]
    async with (
        server,
        await Relay.start((HOST, 0), server_addr, up=imp, down=imp, seed=13) as relay,
        asyncio.timeout(20),
    ):
        reader, writer = await utcp.open_connection(*relay.address, observer=observe)
        conn = writer.get_extra_info("connection")
        # The search starts once more is queued than one datagram carries, and runs with the
        # transfer: probes are padding, so a lost one costs no data a retransmission.
        writer.write(data)
        echoed = await reader.readexactly(len(data))
        await wait_until(lambda: conn.stats.pmtud_state == "SEARCH_COMPLETE", "search done")
        writer.write(data)  # now at the size found
        assert await reader.readexactly(len(data)) == data
        stats = conn.stats
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    assert echoed == data
    assert (stats.pmtu_bytes, stats.mss_bytes) == (1400, 1376)
    assert 0 < relay.counters.up.dropped_too_big <= stats.pmtud_probes_lost
    assert max(sizes) == 1400 and stats.retransmissions == 0


# ---------------------------------------------------------------------- the command


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="utcp")
    register(top.add_subparsers(dest="command", required=True))
    return top


BASE = ["netem", "--listen", "127.0.0.1:0", "--to", "[::1]:9000"]


def test_command_parses_good_values() -> None:
    args = parser().parse_args(
        [
            *BASE,
            "--loss=5%",
            "--loss-down=0.2",
            "--delay=20",
            "--jitter=5ms",
            "--dup=1%",
            "--corrupt-up=0.5%",
            "--reorder=10%",
            "--reorder-extra=50",
            "--rate=20",
            "--rate-down=500kbit",
            "--queue=64",
            "--queue-down=1M",
            "--blackhole-up=2s+3s",
            "--mtu=1472",
            "--mtu-down=1400",
            "--seed=3",
        ]
    )
    assert args.func is netem_run
    assert args.listen == ("127.0.0.1", 0) and args.to == ("::1", 9000)
    assert args.seed == 3
    imps = impairments(args)
    up, down = imps["up"], imps["down"]
    assert (up.loss, down.loss) == (0.05, 0.2)
    assert up.delay_s == down.delay_s == pytest.approx(0.020)
    assert up.jitter_s == down.jitter_s == pytest.approx(0.005)
    assert up.dup == down.dup == pytest.approx(0.01)
    assert (up.corrupt, down.corrupt) == (pytest.approx(0.005), 0.0)
    assert up.reorder_extra_s == pytest.approx(0.050)
    assert (up.rate_bps, down.rate_bps) == (20e6, 500e3)
    assert (up.queue_bytes, down.queue_bytes) == (64 * KIB, 1 << 20)
    assert (up.blackhole, down.blackhole) == ((2.0, 3.0), None)
    assert (up.mtu, down.mtu) == (1472, 1400)


def test_command_defaults_impair_nothing() -> None:
    imps = impairments(parser().parse_args(BASE))
    assert imps == {"up": Impairment(), "down": Impairment()}


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--loss", "5", "percentage out of range"),
        ("--dup-up", "abc", "not a percentage"),
        ("--delay", "20 parsecs", "not a duration"),
        ("--jitter-down", "-5", "not a duration"),
        ("--rate", "0", "rate must be positive"),
        ("--queue", "lots", "not a size"),
        ("--blackhole", "2s", "not START+LEN"),
        ("--mtu", "0", "must be positive"),
        ("--mtu-up", "big", "not a size"),
        ("--listen", "localhost", "not HOST:PORT"),
        ("--to", "h:99999", "port out of range"),
        ("--seed", "x", "invalid int value"),
        ("--rebind-every", "0", "must be positive"),  # was a traceback, exit 1
    ],
)
def test_command_rejects_bad_values(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parser().parse_args([*BASE, f"{option}={value}"])
    assert exc_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"utcp netem: error: argument {option}") and message in last, last


def test_command_refuses_a_queue_without_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args([*BASE, "--queue=16K"])
    assert netem_run(args) == 2
    assert "--queue needs --rate" in capsys.readouterr().err


COMMAND = textwrap.dedent(
    """
    import argparse, sys
    from utcp.cli.netem_cmd import register
    top = argparse.ArgumentParser(prog="utcp")
    register(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
    """
)


def test_command_relays_until_interrupted() -> None:
    """The real command in a child process: start line, one datagram each way, SIGINT, counters."""
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind((HOST, 0))
    upstream.settimeout(10)
    client.settimeout(10)
    to = "{}:{}".format(*upstream.getsockname())
    argv = ["netem", "--listen", f"{HOST}:0", "--to", to, "--delay", "5", "--seed", "4"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, *argv], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        listen, arrow, target = first.removeprefix("netem relaying udp://").partition(" -> ")
        assert arrow and target == f"udp://{to}", first
        host, port = listen.rsplit(":", 1)
        client.sendto(b"ping", (host, int(port)))
        data, via = upstream.recvfrom(100)
        assert data == b"ping"
        upstream.sendto(b"pong", via)
        assert client.recvfrom(100)[0] == b"pong"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        upstream.close()
        client.close()
    assert proc.returncode == 0
    lines = rest.strip().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["up", "down"]
    for line in lines:
        fields = dict(word.split("=") for word in line.split(": ", 1)[1].split())
        assert fields["seed"] == "4" and fields["received"] == fields["forwarded"] == "1"
