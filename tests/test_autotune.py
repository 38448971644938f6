"""Buffers that size themselves: the receive window grows with the measured bandwidth-delay
product (Config.recv_autotune), never past its maximum or the endpoint's budget, never moving
its right edge left, and a reader that does not read still stops the sender; the transport's
high-water mark follows the congestion window unless the application sets its own.

The sans-I/O tests run a long fat path on the fake network: a bottleneck link with a rate and a
queue of one bandwidth-delay product, as the WAN benchmark's 100 Mbit/s, 100 ms path.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest

import utcp
from tests.aio_helpers import HOST, Handlers, Runner, make_run_fixture, seeded_bytes, server_port
from tests.helpers import (
    QUIET,
    Link,
    Network,
    bottleneck_pair,
    conns,
    establish,
    pair,
    timed_transfer,
)
from utcp import Config
from utcp.connection import Connection
from utcp.packet import Flag

KIB = 1 << 10
MIB = 1 << 20
RATE_BPS = 100e6
DELAY_S = 0.050  # each way: a 100 ms round trip
BDP_BYTES = int(RATE_BPS / 8 * 2 * DELAY_S)  # 1.25 MB
# Exact segment sizes (no PMTU probing up to 64 KiB segments): as on a 1500-byte path.
PATH = Config(pmtud=False, **QUIET)


@dataclass
class Bottleneck(Link):
    """A link that serializes datagrams at ``rate_bps`` behind a tail-drop queue of
    ``queue_bytes``, then delays them by ``delay_s``."""

    rate_bps: float = RATE_BPS
    queue_bytes: int = BDP_BYTES
    busy_until: float = 0.0

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self.sent += 1
        start = max(now, self.busy_until)
        if (start - now) * self.rate_bps / 8 > self.queue_bytes:
            self.dropped += 1
            return []
        self.busy_until = start + len(data) * 8 / self.rate_bps
        return [(self.busy_until + self.delay_s, data)]


def long_fat_path(config: Config) -> Network:
    """A client ``a`` sending to ``b`` through the bottleneck; ACKs come back unimpeded."""
    return pair(
        config_a=config,
        config_b=config,
        a_to_b=Bottleneck(delay_s=DELAY_S),
        b_to_a=Link(delay_s=DELAY_S),
    )


@dataclass
class Transfer:
    seconds: float
    receiver_limited_s: float
    largest_window: int


def transfer(config: Config, total: int) -> Transfer:
    """Send ``total`` bytes from a to b over the long fat path; how long it took (from the
    first byte written to the last delivered), how long the sender was held back by b's
    window, and the largest window b offered."""
    net = long_fat_path(config)
    a, b = establish(net)
    start = net.now
    a.send(bytes(total))
    largest = 0
    while len(net.b.received) < total:
        assert net.step(), "the transfer stalled"
        largest = max(largest, b.stats.receive_window_bytes)
        assert net.now - start < 120, "the transfer takes too long"
    return Transfer(net.now - start, a.stats.time_limited_by_receiver_s, largest)


def advertised_edges(net: Network, side: str) -> list[int]:
    """The right edge (ACK + scaled window, as a wire sequence number) of every segment
    ``side`` sent after its SYN."""
    conn = net.sides[side].conn
    assert conn is not None
    shift = None
    edges = []
    for sent in net.trace:
        if sent.src != side:
            continue
        p = sent.packet
        if p.flags & Flag.SYN:
            shift = p.wscale or 0
        elif p.flags & Flag.ACK and not p.flags & Flag.RST:
            assert shift is not None
            edges.append(p.ack + (p.window << shift))
    return edges


# ---------------------------------------------------------------- growth on a long fat path


def test_window_grows_until_the_sender_is_not_window_limited() -> None:
    """100 Mbit/s, 100 ms: the window starts at 256 KiB (a fifth of the path's BDP) and grows
    within a few round trips, so the sender is almost never held back by it and the transfer
    is several times faster than with the starting window fixed, and faster than with the
    old fixed 1 MiB buffer."""
    total = 16 * MIB
    tuned = transfer(PATH, total)
    fixed_start = transfer(PATH.replace(recv_autotune=False, recv_buffer_bytes=256 * KIB), total)
    fixed_old = transfer(PATH.replace(recv_autotune=False, recv_buffer_bytes=MIB), total)
    print(
        f"16 MiB over 100 Mbit/s x 100 ms: autotuned {tuned.seconds:.2f} s "
        f"(receiver-limited {tuned.receiver_limited_s:.2f} s, window up to "
        f"{tuned.largest_window} B); fixed 256 KiB {fixed_start.seconds:.2f} s "
        f"(receiver-limited {fixed_start.receiver_limited_s:.2f} s); fixed 1 MiB "
        f"{fixed_old.seconds:.2f} s (receiver-limited {fixed_old.receiver_limited_s:.2f} s)"
    )
    assert tuned.largest_window >= 2 * BDP_BYTES
    assert tuned.receiver_limited_s < 0.05 * tuned.seconds
    assert fixed_start.receiver_limited_s > 0.8 * fixed_start.seconds
    assert tuned.seconds < 0.4 * fixed_start.seconds
    assert tuned.seconds < 0.95 * fixed_old.seconds


@pytest.mark.parametrize("seed", [2, 3])
def test_window_keeps_ahead_of_bbr_through_a_full_queue_and_random_loss(seed: int) -> None:
    """50 Mbit/s, 100 ms, a one-BDP queue, 1% random loss each way, ``bbr``: STARTUP fills the
    queue (the RTT doubles) and holes hold data behind the left edge for a round trip, while
    the receiver's RTT is the smallest sample, taken without the queue.  Twice what was taken
    in that RTT (Linux's factor, over its smoothed RTT) held the sender back 0.17 and 0.11 s
    on these seeds; four times holds it back not at all."""
    rate, delay, size = 50e6, 0.05, 12_000_000
    bdp_packets = int(rate / 8 * 2 * delay / 1452)
    config = Config(congestion_control="bbr", pmtud=False, **QUIET)
    net, _ = bottleneck_pair(
        config, rate_bps=rate, delay_s=delay, queue_packets=bdp_packets, loss=0.01, seed=seed
    )
    a, b = establish(net)
    a.send(bytes(size))
    net.run(until=lambda: len(net.b.received) >= size, max_time=600)
    assert bytes(net.b.received) == bytes(size)
    assert a.stats.time_limited_by_receiver_s <= 0.01, a.stats.time_limited_by_receiver_s
    assert b.stats.receive_window_bytes <= config.recv_buffer_bytes


def test_window_never_exceeds_the_configured_maximum() -> None:
    most = 2 * MIB
    result = transfer(PATH.replace(recv_buffer_bytes=most), 8 * MIB)
    assert result.largest_window == most  # grown all the way, and no further


def test_window_scale_is_chosen_from_the_maximum() -> None:
    """The SYN offers the scale that lets the field carry the largest window the buffer can
    grow to (utcp.packet.wscale_for), not just the first window."""
    net = long_fat_path(PATH)
    establish(net)
    syn, syn_ack = net.trace[0].packet, net.trace[1].packet
    assert syn.wscale == syn_ack.wscale == 8  # 65535 << 7 < 8 MiB <= 65535 << 8
    assert PATH.recv_buffer_bytes == 8 * MIB and PATH.recv_window_initial_bytes == 256 * KIB


def test_the_advertised_right_edge_never_moves_left() -> None:
    """While the window grows, and while the reader pauses and resumes every 300 ms (held
    data shrinks the window), no ACK moves the right edge back (RFC 9293 3.8.6.2.2)."""
    net = long_fat_path(PATH)
    a, b = establish(net)
    total = 8 * MIB
    a.send(bytes(total))
    paused = False
    toggle_at = net.now + 0.3
    while len(net.b.received) < total:
        assert net.step()
        if net.now >= toggle_at:
            toggle_at += 0.3
            if paused:
                b.resume_reading()
            else:
                b.pause_reading()
            paused = not paused
        if paused and net.now - toggle_at > 10:
            pytest.fail("the transfer stalled")
    edges = advertised_edges(net, "b")
    assert len(edges) > 1000
    retreats = [(i, e0 - e1) for i, (e0, e1) in enumerate(itertools.pairwise(edges)) if e1 < e0]
    assert retreats == []


# ---------------------------------------------------------------- backpressure and bounds


def test_a_reader_that_does_not_read_stops_the_sender() -> None:
    """Nothing taken, nothing grown: the window closes at what the start offered, the sender
    stops with nothing in flight, and resuming delivers every byte."""
    net = long_fat_path(PATH)
    a, b = establish(net)
    b.pause_reading()
    total = 4 * MIB
    a.send(bytes(total))
    net.run_for(5.0)
    assert b.stats.receive_window_bytes == 0
    assert a.stats.send_window_bytes == 0 and a.stats.bytes_in_flight == 0
    held = b.stats.bytes_received
    # The window field counts 256-byte units here (scale 8): keeping the edge from moving left
    # while held data shrinks the buffer's room rounds up, less than a unit per ACK.
    assert held <= PATH.recv_window_initial_bytes * 1.02
    net.run_for(5.0)
    assert b.stats.bytes_received == held  # still shut: nothing more came
    b.resume_reading()
    net.run(until=lambda: len(net.b.received) == total)
    assert net.b.received == bytes(total)


def test_the_endpoint_budget_stops_growth_and_comes_back_at_the_end() -> None:
    """Connections built from one Config share its budget: past it windows stop growing
    (they do not shrink); the peer's FIN gives the growth back."""
    budget = 512 * KIB
    config = PATH.replace(endpoint_buffer_bytes=budget)
    net = long_fat_path(config)
    a, b = establish(net)
    a.send(bytes(8 * MIB))
    a.close()
    largest = 0
    while not net.b.eof:
        assert net.step()
        largest = max(largest, b.stats.receive_window_bytes)
        assert config.buffer_budget.used <= budget
    assert largest == config.recv_window_initial_bytes + budget
    assert config.buffer_budget.used == 0


@pytest.mark.parametrize("end", ["peer_reset", "abort"])
def test_the_growth_comes_back_when_the_connection_ends_without_a_fin(end: str) -> None:
    """A reset or an abort ends the connection without the peer's FIN: the window's growth
    goes back to the budget then, while the application still holds the connection.  It
    came back only when the connection was freed: a server keeping its aborted connections
    referenced held the budget, and later connections' windows could not grow."""
    config = PATH.replace(endpoint_buffer_bytes=4 * MIB)
    net = long_fat_path(config)
    a, b = establish(net)
    a.send(bytes(16 * MIB))
    net.run_for(1.5)
    assert config.buffer_budget.used > 0
    (a if end == "peer_reset" else b).abort()
    net.run_for(0.5)
    assert b.is_finished
    assert config.buffer_budget.used == 0


def test_autotuning_off_keeps_the_fixed_window() -> None:
    config = PATH.replace(recv_autotune=False, recv_buffer_bytes=512 * KIB)
    assert transfer(config, 4 * MIB).largest_window == 512 * KIB


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"recv_window_initial_bytes": 1000}, "recv_window_initial_bytes"),
        ({"send_buffer_max_bytes": 0}, "send_buffer_max_bytes"),
        ({"endpoint_buffer_bytes": -1}, "endpoint_buffer_bytes"),
    ],
)
def test_config_rejects_bad_buffer_sizes(changes: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Config(**changes).validate()  # type: ignore[arg-type]


def test_send_buffer_goal_follows_the_congestion_and_peer_windows() -> None:
    """Three flights: one in the air, one SACKed behind a hole during a recovery episode,
    one sent meanwhile."""
    net = long_fat_path(PATH)
    a, _b = establish(net)
    assert a.send_buffer_goal == 3 * min(a.stats.cwnd_bytes, a.stats.send_window_bytes)
    a.send(bytes(8 * MIB))
    net.run_for(1.0)
    st = a.stats
    assert st.cwnd_bytes > BDP_BYTES // 2
    assert a.send_buffer_goal == 3 * min(st.cwnd_bytes, st.send_window_bytes) > 3 * MIB


def test_send_buffer_goal_does_not_shrink_when_a_loss_cuts_the_window() -> None:
    """A recovery episode cuts the congestion window for a round trip (BBR to the flight,
    NewReno to half): the goal keeps the largest window seen, as Linux's send buffer only
    grows, so the application keeps the sender supplied and its rate samples are not taken
    for application-limited ones."""
    net = long_fat_path(PATH)
    a, _b = establish(net)
    a.send(bytes(8 * MIB))
    net.run_for(1.0)
    goal = a.send_buffer_goal
    cwnd = a.stats.cwnd_bytes
    a._loss.cc.on_congestion_event(cwnd, now=net.now)
    assert a.stats.cwnd_bytes < cwnd
    assert a.send_buffer_goal == goal


# ---------------------------------------------------------------- the transport, real sockets

run = make_run_fixture()


@pytest.mark.sockets
def test_high_water_mark_grows_with_cwnd_and_explicit_limits_win(run: Runner) -> None:
    """A writer with a 16 KiB configured mark: the automatic mark follows the connection's
    goal (three times cwnd) up to its maximum, with its low-water mark at two thirds of it;
    after set_write_buffer_limits() it stays put."""
    base, most = 16 * KIB, 256 * KIB
    chunk = 8 * KIB
    payload = seeded_bytes(31, 4 * MIB)

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(MIB):
            pass
        writer.close()

    async def main() -> None:
        server = await utcp.start_server(Handlers(sink), HOST, 0)
        config = Config(send_buffer_bytes=base, send_buffer_max_bytes=most)
        _reader, writer = await utcp.open_connection(HOST, server_port(server), config=config)
        transport = writer.transport
        conn = writer.get_extra_info("connection")
        assert isinstance(conn, Connection)
        low, high = transport.get_write_buffer_limits()
        assert base <= high  # a 10-segment cwnd: 3 * 10 * mss
        highs = []
        growing = 0  # drains seen with the mark between the configured one and the maximum
        half = len(payload) // 2
        for start in range(0, half, chunk):
            writer.write(payload[start : start + chunk])
            await writer.drain()
            low, high = transport.get_write_buffer_limits()
            highs.append(high)
            if base < high < most:
                # Asked for more while two thirds of the goal is still written: a quarter
                # (asyncio's) would wait until the flight itself had half drained.
                assert low == 2 * high // 3 == 2 * conn.send_buffer_goal // 3
                growing += 1
        assert max(highs) > 4 * base, "the mark never followed the congestion window"
        assert growing, "the mark went straight to its maximum"
        assert max(highs) <= most
        assert config.buffer_budget.used <= most - base

        transport.set_write_buffer_limits(high=24 * KIB, low=8 * KIB)
        await writer.drain()  # down to the new low-water mark first
        peak = 0
        for start in range(half, len(payload), chunk):
            writer.write(payload[start : start + chunk])
            peak = max(peak, transport.get_write_buffer_size())
            assert transport.get_write_buffer_limits() == (8 * KIB, 24 * KIB)
            await writer.drain()
        assert peak <= 24 * KIB + chunk
        assert config.buffer_budget.used == 0  # the explicit marks gave the growth back
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_conns_helper_is_used() -> None:
    """The pair helper gives both ends; the receive side of an idle pair offers the start."""
    net = long_fat_path(PATH)
    establish(net)
    _a, b = conns(net)
    assert b.stats.receive_window_bytes == PATH.recv_window_initial_bytes


def test_a_window_smaller_than_the_scale_unit_is_announced_as_one_unit_not_closed() -> None:
    """An 8 MiB buffer gives window scale 8 (a unit of 256 bytes); a first window of 200
    bytes would be 0 in the field.  It is announced as one unit, as Linux rounds it, and the
    transfer goes on (it was announced closed for ever: nothing could arrive for the
    autotuning to grow from, and the answered window probes kept the sender waiting)."""
    receiver = PATH.replace(mss_bytes=100, recv_buffer_bytes=8 << 20, recv_window_initial_bytes=200)
    net = pair(config_a=PATH, config_b=receiver)
    a, _ = establish(net)
    a.send(bytes(5000))
    net.run(until=lambda: len(net.b.received) == 5000, max_time=120)
    assert min(s.packet.window for s in net.trace if s.src == "b" and s.time > 0.1) > 0


@pytest.mark.parametrize("initial", [4096, 8192])
def test_a_window_that_starts_below_ten_segments_grows(initial: int) -> None:
    """``recv_window_initial_bytes`` below ten segments (14,280 bytes): what the application
    takes in a round trip is measured against the window's start, not against ten segments a
    window that small can never carry (Linux's rcvq_space is the smaller of the two).  It was
    measured against ten segments, so the window never grew: 4 MiB over a 20 ms round trip
    took 20.5 s from 4 KiB and 10.3 s from 8 KiB, where a 16 KiB start took 0.17 s."""
    took, b = timed_transfer(Config(recv_window_initial_bytes=initial, **QUIET), 4 * MIB)
    assert b.stats.receive_window_bytes > 64 * initial
    assert took < 2.0, took
