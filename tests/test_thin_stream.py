"""Thin-stream repair by redundant data bundling (``Config.thin_stream_bundling``,
utcp/connection/sender.py): a small write with data still unacknowledged goes out as
[SND.UNA, end), so a lost message is repaired by the next one without any retransmission;
the scoreboard, the pipe and the counters of data sent see only the new bytes.  On the
receive side a segment reaching below RCV.NXT is trimmed and taken as in-order data."""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import QUIET, Link, Network, conns, establish, pair
from tests.test_sender import Stack as SenderStack
from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.pacer import SLOW_START_BURST_SEGMENTS
from utcp.connection.receive_side import ReceiveSide
from utcp.events import DataReceived, Event
from utcp.packet import Flag, Packet, decode

MSS = 1000
CONFIG = Config(mss_bytes=MSS, pmtud=False, **QUIET).validate()
OFF = CONFIG.replace(thin_stream_bundling=False)


# ------------------------------------------------------------------ the sender on its own


class Stack(SenderStack):
    """The send path of an established connection (first data byte at position 1, peer
    window 1 MiB, MSS 1000), its parts at hand: tests/test_sender.py's, with SACK on."""

    def __init__(self, **changes: Any) -> None:
        super().__init__(CONFIG, **changes)
        self.opts.sack_ok = True

    def write(self, n: int) -> None:
        start = len(self.snd.buf)
        self.snd.buf.write(bytes((start + i) % 251 for i in range(n)))

    def send(self, now: float) -> list[Packet]:
        out: list[bytes] = []
        self.sender.send_data(out, now)
        return [decode(raw) for raw in out]

    def span(self, p: Packet) -> tuple[int, int]:
        """The positions [start, end) a data segment covers."""
        start = self.snd.position(p.seq)
        return start, start + len(p.payload)

    def expected(self, start: int, end: int) -> bytes:
        """The bytes written at positions [start, end)."""
        return bytes((i - 1) % 251 for i in range(start, end))


@pytest.mark.parametrize("fast_paths", [True, False])
def test_a_small_write_behind_unacknowledged_data_carries_it_again(fast_paths: bool) -> None:
    """The lone-segment shortcut and the general loop send the same bundle: [una, end) in
    one datagram, while the scoreboard, the pipe and ``bytes_sent`` hold the new bytes only
    and the redundant copy is counted apart."""
    s = Stack(fast_paths=fast_paths)
    s.write(100)
    s.send(now=0.0)
    s.write(50)
    (p,) = s.send(now=0.02)
    assert s.span(p) == (1, 151)
    assert bytes(p.payload) == s.expected(1, 151)
    assert p.flags == Flag.ACK
    sb = s.loss.scoreboard
    assert [(seg.start, seg.end) for seg in sb.segs] == [(1, 101), (101, 151)]
    assert sb.pipe == 150
    assert (s.count.bytes_sent, s.count.bytes_retx, s.count.retx) == (150, 0, 0)
    assert (s.count.bundled_segments, s.count.bundled_bytes) == (1, 100)
    assert s.count.segments_sent == 2
    assert s.count.fast_sent == (2 if fast_paths else 0)
    assert s.snd.nxt == s.snd.max == 151


def test_without_bundling_the_same_writes_send_only_the_new_bytes() -> None:
    s = Stack(thin_stream_bundling=False)
    s.write(100)
    s.send(now=0.0)
    s.write(50)
    (p,) = s.send(now=0.02)
    assert s.span(p) == (101, 151)
    assert (s.count.bundled_segments, s.count.bundled_bytes) == (0, 0)


def test_the_bundle_is_at_most_one_mss() -> None:
    s = Stack()
    s.write(600)
    s.send(now=0.0)
    s.write(400)  # 600 + 400 = MSS: fits
    (p,) = s.send(now=0.01)
    assert s.span(p) == (1, 1001)
    s.write(1)  # 1000 + 1 > MSS
    (p,) = s.send(now=0.02)
    assert s.span(p) == (1001, 1002)
    assert s.count.bundled_segments == 1


def test_acknowledged_bytes_are_not_bundled_again() -> None:
    s = Stack()
    s.write(100)
    s.send(now=0.0)
    s.write(100)
    s.send(now=0.01)  # bundles [1, 201)
    s.loss.on_new_ack(101, 0.1)
    s.write(100)
    (p,) = s.send(now=0.11)
    assert s.span(p) == (101, 301)
    assert s.count.bundled_bytes == 100 + 100


def test_the_ack_of_a_bundle_samples_the_rtt_of_the_bundle() -> None:
    """The ACK the bundle draws acknowledges the earlier segment too; the RTT comes from
    the newest (the bundle), and nothing counts as retransmitted (Karn's rule allows it)."""
    s = Stack()
    s.write(8)
    s.send(now=1.0)
    s.write(8)
    s.send(now=1.02)
    s.loss.on_new_ack(17, 1.12)
    assert s.loss.rtt.latest_rtt == pytest.approx(0.10)
    assert s.loss.scoreboard.pipe == 0 and len(s.loss.scoreboard) == 0
    assert s.count.retx == 0


def test_a_window_cut_segment_with_more_data_behind_it_does_not_bundle() -> None:
    s = Stack()
    s.write(300)
    s.send(now=0.0)
    s.snd.wnd = s.snd.max_wnd = 1000
    s.write(2000)
    sent = s.send(now=0.1)
    assert [s.span(p) for p in sent] == [(301, 1001)]
    assert s.count.bundled_segments == 0


@pytest.mark.parametrize("case", ["sacked", "lost", "retransmitted", "fin"])
def test_no_bundling_while_recovery_has_a_say_or_a_fin_is_queued(case: str) -> None:
    """Bytes the peer SACKed, a segment awaiting retransmission or sent again and not yet
    acknowledged, or a FIN queued: the next small write sends only its own bytes."""
    s = Stack()
    for i in range(3):
        s.write(100)
        s.send(now=0.01 * i)  # [1, 101) alone, then bundles [1, 201) and [1, 301)
    bundled = s.count.bundled_segments
    assert bundled == 2
    sb = s.loss.scoreboard
    first, second = sb.segs[0], sb.segs[1]
    if case == "sacked":
        s.loss.on_sack(((s.snd.wire_seq(second.start), s.snd.wire_seq(second.end)),), 0.1)
        assert second.sacked
    elif case == "lost":
        # The retransmission (100 bytes) waits for room in cwnd; the new 50 bytes have it.
        sb.mark_lost(first)
        s.loss.cc.cwnd = 260
    elif case == "retransmitted":
        sb.mark_lost(first)
        sent = s.send(now=0.1)
        assert [s.span(p) for p in sent] == [(1, 101)]
    else:
        s.snd.fin_pos = 351
    s.write(50)
    sent = s.send(now=0.2)
    assert [s.span(p) for p in sent if s.span(p)[1] > 301] == [(301, 351)]
    assert s.count.bundled_segments == bundled


def test_retransmitted_bytes_bundle_again_once_acknowledged() -> None:
    s = Stack()
    s.write(100)
    s.send(now=0.0)
    sb = s.loss.scoreboard
    sb.mark_lost(sb.segs[0])
    s.send(now=0.5)  # the retransmission of [1, 101)
    s.write(100)
    (p,) = s.send(now=0.51)
    assert s.span(p) == (101, 201)
    s.loss.on_new_ack(101, 0.6)
    s.write(100)
    (p,) = s.send(now=0.61)
    assert s.span(p) == (101, 301)


@pytest.mark.parametrize("fast_paths", [True, False])
def test_the_pacer_is_charged_the_whole_datagram(fast_paths: bool) -> None:
    """The pacer meters what the wire carries: the bundle's every byte.  A bundle that the
    pacer would not let go at once is not made: the new bytes go alone instead."""
    s = Stack(pacing="on", fast_paths=fast_paths)
    s.write(100)
    s.send(now=0.0)
    s.loss.rtt.on_sample(0.1)  # a rate: cwnd 10 000 bytes per 0.1 s, twice in slow start
    s.write(50)
    s.send(now=0.0)
    pacer = s.pacer
    assert pacer.rate == pytest.approx(200_000.0)
    # Slow start: a full bucket is the initial window (ten MSS), less what left.
    depth = SLOW_START_BURST_SEGMENTS * MSS
    assert pacer.tokens == pytest.approx(depth - 150)
    pacer.tokens = -depth + 60  # 60 bytes may borrow: not the bundle's 160
    s.write(10)
    (p,) = s.send(now=0.0)
    assert s.span(p) == (151, 161)
    assert pacer.tokens == pytest.approx(-depth + 50)
    assert s.count.bundled_segments == 1


# ------------------------------------------------------------------ the receive side


class Receiver:
    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.count = Counters()
        self.dl = Deadlines()
        self.rcv = ReceiveSide(CONFIG, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.nxt = 1

    def delivered(self) -> bytes:
        out = b"".join(e.data for e in self.events if isinstance(e, DataReceived))
        self.events.clear()
        return out


def test_a_segment_reaching_below_rcv_nxt_gives_its_new_bytes_as_in_order_data() -> None:
    """RFC 9293 section 3.10.7.4: only the new part of a segment straddling RCV.NXT is
    processed.  It is in-order data, acknowledged as such (delayed), not as a duplicate."""
    r = Receiver()
    rcv = r.rcv
    rcv.take(1, b"abcd", False, 1.0)
    rcv.ack_sent()
    assert r.delivered() == b"abcd"
    assert rcv.take(1, memoryview(b"abcdefgh"), False, 1.02) == 0
    assert r.delivered() == b"efgh"
    assert rcv.nxt == 9 and rcv.unacked_bytes == 4
    assert not rcv.ack_now and r.dl.ack == pytest.approx(1.06)
    assert (r.count.dup_segments, r.count.ooo_segments, r.count.bytes_received) == (0, 0, 8)


def test_out_of_order_data_and_the_segment_filling_the_gap_are_acknowledged_at_once() -> None:
    """RFC 5681 section 4.2: at once, also when the gap is filled by a bundle that reaches
    below RCV.NXT."""
    r = Receiver()
    rcv = r.rcv
    rcv.take(1, b"abcd", False, 1.0)
    rcv.ack_sent()
    rcv.take(13, b"mnop", False, 1.01)
    assert rcv.ack_now
    rcv.ack_sent()
    rcv.take(1, b"abcdefghijkl", False, 1.02)  # a bundle from 1 fills [5, 13)
    assert rcv.ack_now
    assert r.delivered() == b"abcdefghijklmnop"
    assert rcv.nxt == 17


def test_a_bundle_beyond_the_window_is_trimmed_at_both_ends() -> None:
    r = Receiver()
    rcv = r.rcv
    rcv.nxt = 1 + 100
    window = rcv.window()
    payload = bytes(range(50)) * ((window + 200) // 50)
    rcv.take(51, payload, False, 1.0)
    got = r.delivered()
    assert got == payload[50 : 50 + window]
    assert rcv.nxt == 101 + window


# ------------------------------------------------------------------ on the fake network


def small_writes(config: Config, drop_first_message: bool) -> tuple[Network, dict[int, float]]:
    """Two 8-byte messages 20 ms apart over a 50 ms path; the first message's datagram lost
    when asked.  Returns the network and when b's application had each byte count."""
    dropped: list[int] = []

    def drop(index: int, p: Packet) -> bool:
        if drop_first_message and p.payload and not dropped:
            dropped.append(index)
            return True
        return False

    net = pair(
        config_a=config,
        config_b=config,
        a_to_b=Link(delay_s=0.050, drop=drop),
        b_to_a=Link(delay_s=0.050),
    )
    a, _ = establish(net)
    net.run_for(0.5)
    arrived: dict[int, float] = {}

    def note(n: Network) -> None:
        n.flush()
        arrived.setdefault(len(n.b.received), n.now)

    net.on_step = note
    a.send(b"message1")
    net.run_for(0.020)
    a.send(b"message2")
    net.run(until=lambda: a.stats.bytes_in_flight == 0 and len(net.b.received) == 16)
    return net, arrived


def data_segments(net: Network, src: str) -> list[tuple[float, int, bytes]]:
    return [
        (s.time, s.packet.seq, bytes(s.packet.payload))
        for s in net.trace
        if s.src == src and s.packet.payload
    ]


def test_the_second_message_carries_the_first_when_it_is_unacknowledged() -> None:
    net, _ = small_writes(CONFIG, drop_first_message=False)
    (_, seq1, p1), (_, seq2, p2) = data_segments(net, "a")
    assert (p1, p2) == (b"message1", b"message1message2")
    assert seq2 == seq1
    a, _ = conns(net)
    assert (a.stats.bundled_segments, a.stats.bundled_bytes, a.stats.bytes_sent) == (1, 8, 16)
    assert bytes(net.b.received) == b"message1message2"


def test_with_bundling_off_each_message_goes_alone() -> None:
    net, _ = small_writes(OFF, drop_first_message=False)
    (_, seq1, p1), (_, seq2, p2) = data_segments(net, "a")
    assert (p1, p2) == (b"message1", b"message2")
    assert seq2 == (seq1 + 8) & 0xFFFFFFFF
    a, _ = conns(net)
    assert (a.stats.bundled_segments, a.stats.bundled_bytes) == (0, 0)


def test_a_lost_message_is_repaired_by_the_next_without_a_retransmission() -> None:
    """The first message's datagram is lost; the second, 20 ms later, brings both: b's
    application has the first message one path delay after the second was written, long
    before a tail loss probe (two RTTs) or the retransmission timer (200 ms at least) could
    have resent it, and no retransmission is counted."""
    net, arrived = small_writes(CONFIG, drop_first_message=True)
    a, _ = conns(net)
    written1 = next(s.time for s in net.trace if s.packet.payload)
    assert arrived[16] == pytest.approx(written1 + 0.020 + 0.050)
    assert 8 not in arrived  # the first message never came on its own
    assert (a.stats.retransmissions, a.stats.tail_loss_probes, a.stats.timeouts) == (0, 0, 0)
    assert a.stats.bundled_segments == 1
    assert bytes(net.b.received) == b"message1message2"
    # Without bundling the loss costs a retransmission, and a round trip at least: the
    # news of the loss comes back, the repair goes out.
    off, off_arrived = small_writes(OFF, drop_first_message=True)
    a_off, _ = conns(off)
    assert a_off.stats.retransmissions >= 1
    assert off_arrived[16] - arrived[16] >= 0.100 - 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bulk_transfers_never_bundle(seed: int) -> None:
    """A bulk sender has far more than one MSS in flight whenever it writes, with or without
    losses: nothing is ever bundled."""
    payload = random.Random(seed).randbytes(600_000)
    net = pair(
        config_a=CONFIG,
        config_b=CONFIG,
        a_to_b=Link(rng=random.Random(seed * 2), delay_s=0.02, loss=0.02),
        b_to_a=Link(rng=random.Random(seed * 2 + 1), delay_s=0.02, loss=0.02),
    )
    a, b = establish(net)
    for i in range(0, len(payload), 64 << 10):
        a.send(payload[i : i + (64 << 10)])
        net.run_for(0.005)
    net.run(until=lambda: len(net.b.received) == len(payload) and a.stats.bytes_in_flight == 0)
    assert bytes(net.b.received) == payload, f"seed {seed}"
    assert a.stats.retransmissions > 0, f"seed {seed}"  # losses there were
    assert a.stats.bundled_segments == b.stats.bundled_segments == 0, f"seed {seed}"


# ------------------------------------------------------------------ an echo workload


class EchoNetwork(Network):
    """b's application echoes every byte as soon as it arrives; a's notes when each of its
    messages has come back whole."""

    def __init__(self, *args: Any, message_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message_bytes = message_bytes
        self.echoed = 0
        self.returned: list[float] = []

    def flush(self) -> None:
        # b reads before it answers, so the echo carries the ACK it owes.
        b = self.b
        conn = b.conn
        assert conn is not None
        while (ev := conn.next_event()) is not None:
            b.events.append(ev)
            if isinstance(ev, DataReceived):
                b.received += ev.data
        if len(b.received) > self.echoed:
            conn.send(bytes(b.received[self.echoed :]))
            self.echoed = len(b.received)
        super().flush()
        whole = len(self.a.received) // self.message_bytes
        while len(self.returned) < whole:
            self.returned.append(self.now)


@dataclass
class EchoResult:
    delays: list[float]
    retransmissions: int
    bundled: int

    @property
    def mean(self) -> float:
        return sum(self.delays) / len(self.delays)

    @property
    def p99(self) -> float:
        ordered = sorted(self.delays)
        return ordered[int(0.99 * (len(ordered) - 1))]


def echo(config: Config, seed: int, messages: int = 1000) -> EchoResult:
    """``messages`` 8-byte messages from a, one every 20 ms, each echoed by b; 5% random
    loss each way and 40 to 60 ms one-way delay.  Each message's delay runs from its write
    to its echo's return, whole and in order."""
    from utcp.connection import Connection

    a = Connection(config, local_cid=0xA, isn=1000)
    b = Connection(config, local_cid=0xB, isn=5000)
    b.listen()
    net = EchoNetwork(
        a,
        b,
        a_to_b=Link(rng=random.Random(seed * 2), delay_s=0.040, jitter_s=0.020, loss=0.05),
        b_to_a=Link(rng=random.Random(seed * 2 + 1), delay_s=0.040, jitter_s=0.020, loss=0.05),
        message_bytes=8,
    )
    a.connect(now=net.now)
    establish(net)
    net.run_for(1.0)
    start = net.now
    written: list[float] = []
    sent = [struct.pack(">Q", i) for i in range(messages)]
    for i, msg in enumerate(sent):
        net.run_for(start + 0.020 * i - net.now)
        a.send(msg)
        written.append(net.now)
    net.run(until=lambda: len(net.returned) == messages)
    expected = b"".join(sent)
    assert bytes(net.b.received) == expected, f"seed {seed}"
    assert bytes(net.a.received) == expected, f"seed {seed}"
    delays = [back - out for out, back in zip(written, net.returned, strict=True)]
    return EchoResult(
        delays, a.stats.retransmissions + b.stats.retransmissions, a.stats.bundled_segments
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_echo_workload_waits_less_with_bundling(seed: int) -> None:
    on = echo(CONFIG, seed)
    off = echo(OFF, seed)
    summary = (
        f"seed {seed}: mean {on.mean * 1e3:.1f} vs {off.mean * 1e3:.1f} ms, "
        f"p99 {on.p99 * 1e3:.1f} vs {off.p99 * 1e3:.1f} ms, "
        f"retransmissions {on.retransmissions} vs {off.retransmissions}"
    )
    assert on.bundled > 0 and off.bundled == 0, summary
    assert on.mean < off.mean, summary
    assert on.p99 < off.p99, summary
    assert on.retransmissions < off.retransmissions, summary


def one_way(config: Config, seed: int, messages: int = 500) -> tuple[int, int, int]:
    """``messages`` 8-byte messages from a, one every 20 ms, nothing sent back but ACKs; 5%
    loss each way, 40 to 60 ms one-way delay.  Returns the datagrams a and b sent meanwhile,
    and a's retransmissions."""
    net = pair(
        config_a=config,
        config_b=config,
        a_to_b=Link(rng=random.Random(seed * 2), delay_s=0.040, jitter_s=0.020, loss=0.05),
        b_to_a=Link(rng=random.Random(seed * 2 + 1), delay_s=0.040, jitter_s=0.020, loss=0.05),
    )
    a, _ = establish(net)
    net.run_for(1.0)
    start = net.now
    sent = [struct.pack(">Q", i) for i in range(messages)]
    for i, msg in enumerate(sent):
        net.run_for(start + 0.020 * i - net.now)
        a.send(msg)
    net.run(until=lambda: len(net.b.received) == 8 * messages and a.stats.bytes_in_flight == 0)
    assert bytes(net.b.received) == b"".join(sent), f"seed {seed}"
    by_a = sum(1 for s in net.trace if s.src == "a" and s.time >= start)
    by_b = sum(1 for s in net.trace if s.src == "b" and s.time >= start)
    return by_a, by_b, a.stats.retransmissions


@pytest.mark.parametrize("seed", [1, 2])
def test_a_one_way_thin_stream_costs_no_more_datagrams_either_way(seed: int) -> None:
    """One datagram per message from the sender, and no more ACKs from the receiver: a
    bundle reaching below RCV.NXT is acknowledged as in-order data is (delayed), not at
    once as a duplicate would be, which would double the ACKs."""
    on = one_way(CONFIG, seed)
    off = one_way(OFF, seed)
    assert on[0] == 500 and on[2] == 0, (seed, on, off)
    assert on[0] < off[0] and on[1] <= off[1], (seed, on, off)
