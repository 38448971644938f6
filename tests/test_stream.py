"""The byte stream of the sans-I/O core: reassembly and ACK generation, windows, segmentation,
congestion control and counters, driven on a simulated timeline through public APIs only.

Receive-side tests hand-craft the client's segments and feed them straight to the server's
``Connection``; the rest run two connections over the deterministic network in tests/helpers.py.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.helpers import QUIET, Link, Network, conns, pair
from utcp import (
    Config,
    Connection,
    ConnectionState,
    ConnectionStats,
    DataReceived,
    Event,
    Flag,
    Packet,
    decode,
    encode,
)
from utcp.congestion import NewReno, available, create
from utcp.congestion.cubic import SLOW_START_LIMIT_SEGMENTS as CUBIC_SLOW_START_LIMIT_SEGMENTS

S = ConnectionState
ISN_A = 1000  # the client's initial sequence number in ``pair()``
ISN_B = 5000
CID_A = 0xA
CID_B = 0xB
SEQ_MASK = 0xFFFFFFFF
MSS = Config().mss_bytes
# These tests check exact segment sizes, ACK ladders and window arithmetic: path MTU discovery
# is off (its probes add datagrams and it starts at the 1200-byte base size); both SYNs must
# offer it, so one side without it is enough.  tests/test_pmtud.py covers it.  The keepalive
# and idle timers are off too (QUIET): they would add deadlines after the handshake and probes
# to the ladders, and keep a network from going idle.
FIXED = Config(pmtud=False, **QUIET)
UNSCALED_MAX = 0xFFFF


def wire(offset: int, *, isn: int = ISN_A) -> int:
    """The client's wire sequence number of stream byte ``offset`` (its SYN took ``isn``)."""
    return (isn + 1 + offset) & SEQ_MASK


def client_segment(
    offset: int, payload: bytes, *, window: int = UNSCALED_MAX, isn: int = ISN_A
) -> bytes:
    """The data segment the client would send for ``payload`` at stream ``offset``."""
    p = Packet(
        Flag.ACK,
        src_cid=CID_A,
        dst_cid=CID_B,
        seq=wire(offset, isn=isn),
        ack=ISN_B + 1,
        window=window,
        payload=payload,
    )
    return encode(p)


def established(**kwargs: object) -> Network:
    """A ``pair()`` whose handshake has completed on the simulated network.  Unless given,
    ``config_a`` is FIXED (PMTUD off) and ``config_b`` has the keepalive and idle timers off."""
    kwargs.setdefault("config_a", FIXED)
    kwargs.setdefault("config_b", Config(**QUIET))
    net = pair(**kwargs)  # type: ignore[arg-type]
    net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
    assert net.a.conn is not None and net.a.conn.state is S.ESTABLISHED
    return net


@dataclass
class PacedLink(Link):
    """A ``Link`` with a bottleneck rate: back-to-back datagrams leave one after another.

    The plain ``Link`` delivers a whole burst at one instant, so the receiver sees it as one
    batch and ACKs it once; pacing lets per-segment ACK behaviour show.
    """

    rate_bps: float = 1e9
    busy_until: float = 0.0
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self.busy_until = max(now, self.busy_until) + len(data) * 8 / self.rate_bps
        out = super().transmit(data, self.busy_until)
        self.arrivals.extend(out)
        return out


class Receiver:
    """The server end of an established pair, fed hand-crafted client segments one at a time."""

    def __init__(self, config: Config | None = None, *, isn: int = ISN_A) -> None:
        self.config = config or FIXED
        self.isn = isn
        net = established(config_b=self.config, isn_a=isn)
        _, self.conn = conns(net)
        assert self.conn.get_timer() is None  # nothing pending after the handshake
        self.now = net.now
        self.delivered = bytearray()
        self.events: list[Event] = []

    def offset(self, seq: int) -> int:
        """Stream offset of a wire sequence number of the client's."""
        return (seq - wire(0, isn=self.isn)) & SEQ_MASK

    def feed(self, offset: int, payload: bytes) -> list[Packet]:
        """Deliver one segment 1 ms after the previous input; return what the server sends."""
        self.now += 0.001
        self.conn.receive_datagram(client_segment(offset, payload, isn=self.isn), now=self.now)
        return self.flush()

    def flush(self) -> list[Packet]:
        out = [decode(d) for d in self.conn.datagrams_to_send(now=self.now)]
        while (ev := self.conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, DataReceived):
                self.delivered += ev.data
        return out

    def fire_delayed_ack(self) -> list[Packet]:
        """Run the timer at its deadline, which must be the delayed-ACK one."""
        deadline = self.conn.get_timer()
        assert deadline == self.now + self.config.delayed_ack_s
        self.now = deadline
        self.conn.handle_timer(now=deadline)
        return self.flush()


class StreamModel:
    """The stream offsets the receiver holds, as a plain set: the oracle for ACK and SACK."""

    def __init__(self) -> None:
        self.have: set[int] = set()

    def add(self, start: int, end: int) -> None:
        self.have.update(range(start, end))

    @property
    def contiguous(self) -> int:
        n = 0
        while n in self.have:
            n += 1
        return n

    def held(self) -> list[tuple[int, int]]:
        """Out-of-order ranges [start, end) beyond the contiguous prefix, ascending."""
        runs: list[tuple[int, int]] = []
        for off in sorted(o for o in self.have if o > self.contiguous):
            if runs and runs[-1][1] == off:
                runs[-1] = (runs[-1][0], off + 1)
            else:
                runs.append((off, off + 1))
        return runs


def arrive(rx: Receiver, model: StreamModel, data: bytes, start: int, end: int) -> Packet:
    """Feed data[start:end] and check the ACK it draws against the model; return the ACK."""
    before = model.contiguous
    held_before = model.held()
    duplicate = all(o in model.have for o in range(start, end))
    model.add(start, end)
    after = model.contiguous
    acks = rx.feed(start, data[start:end])
    if after == before or held_before:
        # Out of order, duplicate, or filling (part of) a gap: ACK at once (RFC 5681 4.2).
        assert len(acks) == 1, f"[{start}, {end}) must draw an immediate ACK, got {acks}"
    elif not acks:
        acks = rx.fire_delayed_ack()
    assert len(acks) == 1, f"[{start}, {end}) drew {len(acks)} datagrams"
    ack = acks[0]
    assert ack.flags == Flag.ACK and not len(ack.payload)
    assert rx.offset(ack.ack) == after, f"[{start}, {end}): cumulative ACK"
    blocks = [(rx.offset(left), rx.offset(right)) for left, right in ack.sack_blocks]
    if duplicate:
        # RFC 2883: a wholly duplicate segment is reported once, as the first block.
        assert blocks[0] == (start, end), f"[{start}, {end}): D-SACK block"
        blocks = blocks[1:]
    assert sorted(blocks) == model.held(), f"[{start}, {end}): SACK blocks"
    if after == before and start >= before:
        # RFC 2018 section 4: the first block holds the segment that triggered this ACK.
        left, right = blocks[0]
        assert left <= start and end <= right, f"[{start}, {end}): first SACK block"
    assert bytes(rx.delivered) == data[:after], f"[{start}, {end}): delivered bytes"
    return ack


# ---------------------------------------------------------------- reassembly, every order

SIZES = (1, 2, 4, 8, 16)
OFFSETS = tuple(itertools.accumulate((0, *SIZES[:-1])))  # 0, 1, 3, 7, 15
TOTAL = sum(SIZES)  # 31
ORDERS = list(itertools.permutations(range(len(SIZES))))  # all 120


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "".join(map(str, o)))
def test_every_arrival_order_of_five_segments(order: tuple[int, ...]) -> None:
    data = bytes(range(1, TOTAL + 1))  # every byte distinct, so misplacement shows
    rx = Receiver()
    model = StreamModel()
    for i in order:
        arrive(rx, model, data, OFFSETS[i], OFFSETS[i] + SIZES[i])
    assert bytes(rx.delivered) == data
    chunks = [ev.data for ev in rx.events if isinstance(ev, DataReceived)]
    assert sum(map(len, chunks)) == TOTAL  # each byte exactly once
    assert rx.conn.stats.bytes_received == TOTAL
    assert rx.conn.get_timer() is None  # the last arrival was ACKed, nothing left pending


# ---------------------------------------------------------------- overlaps and duplicates

OVERLAPS: dict[str, tuple[list[tuple[int, int]], int]] = {
    # name: (segments as [start, end) offsets in arrival order, bytes finally delivered)
    "covers-two-held": ([(10, 20), (30, 40), (5, 45), (0, 5)], 45),
    "partial-overlaps-both-ends": ([(10, 20), (5, 15), (15, 25), (0, 10)], 25),
    "overlaps-rcv-nxt": ([(0, 10), (5, 15)], 15),
    "overlaps-rcv-nxt-and-held": ([(0, 10), (20, 30), (5, 25)], 30),
    "exact-duplicates": ([(10, 20), (10, 20), (0, 10), (0, 10), (10, 20)], 20),
    "wholly-before-rcv-nxt": ([(0, 20), (5, 15), (0, 20), (19, 20)], 20),
    "in-order-covers-held": ([(20, 30), (0, 40)], 40),
    "three-holes-one-fill": ([(2, 3), (4, 5), (6, 7), (0, 8)], 8),
    "fills-between-held": ([(30, 40), (10, 20), (20, 30), (0, 10)], 40),
    "inside-a-held-range": ([(10, 30), (15, 25), (0, 10)], 30),
}


@pytest.mark.parametrize("isn", [ISN_A, SEQ_MASK - 20], ids=["isn1000", "wraps"])
@pytest.mark.parametrize("name", sorted(OVERLAPS))
def test_overlapping_and_duplicate_segments(name: str, isn: int) -> None:
    segments, total = OVERLAPS[name]
    data = random.Random(7).randbytes(64)
    rx = Receiver(isn=isn)  # "wraps": the client's sequence numbers wrap to 0 at offset 20
    model = StreamModel()
    for start, end in segments:
        arrive(rx, model, data, start, end)
    assert bytes(rx.delivered) == data[:total]
    assert rx.conn.stats.bytes_received == total


def test_sack_reports_the_newest_arrival_first_when_blocks_run_out() -> None:
    rx = Receiver()  # without timestamps an ACK carries at most four SACK blocks
    data = random.Random(19).randbytes(16)
    held: set[tuple[int, int]] = set()
    for start in (6, 2, 10, 4, 12, 8):  # six one-byte islands, holes between them
        (ack,) = rx.feed(start, data[start : start + 1])
        held.add((start, start + 1))
        blocks = [(rx.offset(left), rx.offset(right)) for left, right in ack.sack_blocks]
        assert rx.offset(ack.ack) == 0
        assert blocks[0] == (start, start + 1)
        assert len(blocks) == min(len(held), 4) == len(set(blocks))
        assert set(blocks) <= held
    for start in (0, 1, 3, 5, 7, 9, 11):
        rx.feed(start, data[start : start + 1])
    assert bytes(rx.delivered) == data[:13]


def test_segment_wholly_before_rcv_nxt_is_acked_but_not_delivered() -> None:
    rx = Receiver()
    data = random.Random(8).randbytes(100)
    assert not rx.feed(0, data)  # in order: the ACK may wait
    assert rx.fire_delayed_ack()[0].ack == wire(100)
    dropped = rx.conn.stats.datagrams_dropped
    acks = rx.feed(0, data[:50])
    # Reported as a D-SACK (RFC 2883), once: the next ACK has no block.
    assert [(p.ack, p.sack_blocks) for p in acks] == [(wire(100), ((wire(0), wire(50)),))]
    assert rx.conn.stats.datagrams_dropped == dropped + 1
    assert [(p.ack, p.sack_blocks) for p in rx.feed(100, data[:1])] == []
    assert [(p.ack, p.sack_blocks) for p in rx.fire_delayed_ack()] == [(wire(101), ())]
    assert bytes(rx.delivered) == data + data[:1]
    assert sum(isinstance(ev, DataReceived) for ev in rx.events) == 2


# ---------------------------------------------------------------- the receive window


def test_data_beyond_the_advertised_window_is_dropped_and_acked() -> None:
    cfg = Config(mss_bytes=1024, recv_buffer_bytes=4096, **QUIET)
    rx = Receiver(cfg)
    data = random.Random(9).randbytes(8192)
    assert not rx.feed(0, data[:1000])
    (ack,) = rx.fire_delayed_ack()
    assert ack.ack == wire(1000) and ack.window == 4096  # window scale 0 for a 4 KiB buffer
    edge = 1000 + ack.window  # first offset beyond the window

    dropped = rx.conn.stats.datagrams_dropped
    (ack,) = rx.feed(edge, data[edge : edge + 100])
    assert (ack.ack, ack.window, ack.sack_blocks) == (wire(1000), 4096, ())
    assert rx.conn.stats.datagrams_dropped == dropped + 1
    (ack,) = rx.feed(edge + 3000, data[edge + 3000 : edge + 3100])
    assert (ack.ack, ack.sack_blocks) == (wire(1000), ())

    # A segment straddling the right edge keeps only its part inside the window.
    (ack,) = rx.feed(edge - 50, data[edge - 50 : edge + 50])
    assert ack.sack_blocks == ((wire(edge - 50), wire(edge)),)

    for off in range(1000, edge - 50, 1000):
        rx.feed(off, data[off : min(off + 1000, edge - 50)])
    assert rx.conn.stats.bytes_received == edge
    assert bytes(rx.delivered) == data[:edge]  # nothing from beyond the edge was kept
    if rx.conn.get_timer() is not None:
        rx.fire_delayed_ack()

    # The window has slid on (reading is not paused): the same bytes are now welcome.
    rx.feed(edge, data[edge : edge + 100])
    assert bytes(rx.delivered) == data[: edge + 100]


def test_zero_window_refuses_in_order_data_until_reading_resumes() -> None:
    rx = Receiver(Config(mss_bytes=1024, recv_buffer_bytes=4096, **QUIET))
    rx.conn.pause_reading()
    data = random.Random(10).randbytes(5000)
    acks: list[Packet] = []
    for off in range(0, 3072, 1024):
        acks += rx.feed(off, data[off : off + 1024])
    # In order but longer than the 1024 bytes of window left: the excess is cut off.
    acks += rx.feed(3072, data[3072:4500])
    assert acks[-1].ack == wire(4096) and acks[-1].window == 0
    assert rx.conn.stats.receive_window_bytes == 0
    assert rx.delivered == b""  # held for the paused application

    dropped = rx.conn.stats.datagrams_dropped
    received = rx.conn.stats.bytes_received
    (ack,) = rx.feed(4096, data[4096:4196])
    assert (ack.ack, ack.window) == (wire(4096), 0)
    assert rx.conn.stats.datagrams_dropped == dropped + 1
    assert rx.conn.stats.bytes_received == received

    rx.conn.resume_reading()
    (update,) = rx.flush()  # the window reopened: tell the peer at once
    assert (update.ack, update.window) == (wire(4096), 4096)
    assert bytes(rx.delivered) == data[:4096]
    rx.feed(4096, data[4096:4196])
    assert bytes(rx.delivered) == data[:4196]


# ---------------------------------------------------------------- segmentation and ACK pacing


@pytest.mark.parametrize(("mss_a", "mss_b"), [(1000, 600), (600, 1000)])
def test_segments_never_exceed_the_smaller_mss(mss_a: int, mss_b: int) -> None:
    net = established(
        config_a=Config(mss_bytes=mss_a, pmtud=False, **QUIET),
        config_b=Config(mss_bytes=mss_b, pmtud=False, **QUIET),
    )
    a, b = conns(net)
    syn, syn_ack = net.trace[0].packet, net.trace[1].packet
    assert (syn.mss, syn_ack.mss) == (mss_a, mss_b)
    assert a.mss == b.mss == a.stats.mss_bytes == b.stats.mss_bytes == 600
    size = 100 * 1024
    data_a = random.Random(12).randbytes(size)
    data_b = random.Random(13).randbytes(size)
    a.send(data_a)
    b.send(data_b)
    net.run(until=lambda: len(net.b.received) == size and len(net.a.received) == size)
    assert bytes(net.b.received) == data_a and bytes(net.a.received) == data_b
    for src, conn in (("a", a), ("b", b)):
        lens = [len(s.packet.payload) for s in net.trace if s.src == src and s.packet.payload]
        assert conn.stats.retransmissions == 0
        assert max(lens) == 600 and min(lens) > 0
        assert sum(lens) == size
        # No needless runts: every segment is full but the tail.
        assert len(lens) == math.ceil(size / 600) and lens.count(600) == len(lens) - 1


def test_steady_stream_is_acked_every_second_full_segment() -> None:
    a_to_b = PacedLink()
    net = established(a_to_b=a_to_b, b_to_a=PacedLink())
    a, b = conns(net)
    mss = a.mss
    size = 700 * mss + 400
    a.send(random.Random(14).randbytes(size))
    t0 = net.now
    net.run(until=lambda: len(net.b.received) == size)
    net.run()  # let the last delayed ACK go out
    acks = [s for s in net.trace if s.src == "b" and s.time > t0]
    arrival = {}
    for t, raw in a_to_b.arrivals:
        p = decode(raw)
        if p.payload:
            arrival[(p.seq + len(p.payload)) & SEQ_MASK] = t
    prev = wire(0)
    for sent in acks[:-1]:
        # Two full segments per ACK, sent the moment the second one arrives.
        assert (sent.packet.ack - prev) & SEQ_MASK == 2 * mss
        assert sent.time == arrival[sent.packet.ack]
        prev = sent.packet.ack
    last = acks[-1]
    assert last.packet.ack == wire(size)
    # The odd runt at the end waits for the delayed-ACK timer.
    assert last.time == pytest.approx(arrival[wire(size)] + b.config.delayed_ack_s, abs=1e-9)
    assert len(acks) == 351 == math.ceil(701 / 2)


@pytest.mark.parametrize("delay_s", [0.025, 0.1])
def test_single_small_segment_is_acked_after_exactly_the_ack_delay(delay_s: float) -> None:
    # No probe from the sender: it would draw an immediate ACK before the delayed one.
    net = established(
        config_a=Config(tail_loss_probe=False, pmtud=False, **QUIET),
        config_b=Config(delayed_ack_s=delay_s, **QUIET),
    )
    a, b = conns(net)
    a.send(b"0123456789")
    net.run(until=lambda: b.get_timer() is not None)  # the segment has arrived
    arrived = net.now
    assert net.b.received == b"0123456789"
    assert b.get_timer() == arrived + delay_s
    b.handle_timer(now=arrived + delay_s * 0.999)
    assert b.datagrams_to_send(now=arrived + delay_s * 0.999) == []
    net.run()
    acks = [s for s in net.trace if s.src == "b" and s.time >= arrived]
    assert [(s.time, s.packet.ack) for s in acks] == [(arrived + delay_s, wire(10))]


# ---------------------------------------------------------------- flow control


def test_paused_reader_stalls_the_sender_losslessly_and_resume_restarts_it() -> None:
    window = 50_000
    net = established(
        config_a=Config(mss_bytes=1000, **QUIET),
        config_b=Config(mss_bytes=1000, recv_buffer_bytes=window, **QUIET),
    )
    a, b = conns(net)
    b.pause_reading()
    size = 300_000
    data = random.Random(15).randbytes(size)
    a.send(data)
    net.run_for(2.0)

    # The window is full: exactly a window's worth sent, all of it acknowledged, nothing lost.
    assert a.stats.bytes_sent == window
    assert a.stats.send_window_bytes == 0 and a.stats.bytes_in_flight == 0
    assert b.stats.receive_window_bytes == 0
    assert net.b.received == b""
    stall_start = net.now
    rto = a.stats.rto_s

    net.run_for(600.0)  # ten minutes of a reader that does not read
    assert a.state is S.ESTABLISHED and b.state is S.ESTABLISHED
    assert a.stats.retransmissions == 0 and a.stats.timeouts == 0
    assert a.stats.bytes_sent == window
    assert b.stats.receive_window_bytes == 0

    probe_seq = wire(window - 1)  # one below snd_una: draws an ACK, carries no data
    probes = [s for s in net.trace if s.src == "a" and s.packet.seq == probe_seq]
    assert all(not s.packet.payload for s in probes)
    times = [s.time for s in probes]
    assert times[0] < stall_start
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(times)]
    expected = [min(rto * 2**k, a.config.rto_max_s) for k in range(1, len(gaps) + 1)]
    assert gaps == pytest.approx(expected)
    assert len(probes) > a.config.max_retransmits  # answered probes never exhaust the budget
    answers = [s.packet for s in net.trace if s.src == "b" and s.time >= stall_start]
    assert answers and all(p.window == 0 and p.ack == wire(window) for p in answers)

    b.resume_reading()
    resumed = net.now
    net.run(until=lambda: len(net.b.received) == size, max_time=5.0)
    assert bytes(net.b.received) == data
    assert net.now - resumed < 1.0  # the window update restarted it, not the next probe
    assert a.stats.retransmissions == 0


# ---------------------------------------------------------------- window scaling

FOUR_MIB = 4 << 20


def test_large_buffer_is_advertised_through_window_scaling() -> None:
    # Fixed windows (no autotuning): b's 4 MiB is offered whole from the first ACK.
    net = established(
        config_a=FIXED.replace(recv_autotune=False),
        config_b=Config(recv_buffer_bytes=FOUR_MIB, recv_autotune=False, **QUIET),
    )
    a, b = conns(net)
    syn, syn_ack = net.trace[0].packet, net.trace[1].packet
    assert syn.wscale == 8  # 65535 << 7 < 8 MiB (the default maximum) <= 65535 << 8
    assert syn_ack.wscale == 7  # 65535 << 6 < 4 MiB <= 65535 << 7
    assert syn.window == syn_ack.window == UNSCALED_MAX  # SYN windows are never scaled
    a.send(b"x" * 5000)
    net.run(until=lambda: len(net.b.received) == 5000)
    net.run()
    acks = [s.packet for s in net.trace[2:] if s.src == "b"]
    assert acks and all(p.window << 7 == FOUR_MIB for p in acks)
    assert a.stats.send_window_bytes == FOUR_MIB
    assert b.stats.send_window_bytes == 8 << 20  # the client's default buffer, scaled by 8


def handshake_raw(config: Config, *, wscale: int | None, window: int) -> tuple[Connection, Packet]:
    """A listening server given a hand-crafted SYN; returns it and its SYN-ACK."""
    b = Connection(config, local_cid=CID_B, isn=ISN_B)
    b.listen()
    syn = Packet(
        Flag.SYN,
        src_cid=CID_A,
        dst_cid=0,
        seq=ISN_A,
        ack=0,
        window=window,
        mss=1000,
        wscale=wscale,
        sack_permitted=True,
    )
    b.receive_datagram(encode(syn), now=0.0)
    (raw,) = b.datagrams_to_send(now=0.0)
    return b, decode(raw)


def test_client_takes_the_syn_ack_window_unscaled() -> None:
    a = Connection(Config(), local_cid=CID_A, isn=ISN_A)
    a.connect(now=0.0)
    (raw,) = a.datagrams_to_send(now=0.0)
    assert decode(raw).wscale == 8  # from the 8 MiB the window may grow to
    syn_ack = Packet(
        Flag.SYN | Flag.ACK,
        src_cid=CID_B,
        dst_cid=CID_A,
        seq=ISN_B,
        ack=ISN_A + 1,
        window=1000,
        mss=1000,
        wscale=3,
        sack_permitted=True,
    )
    a.receive_datagram(encode(syn_ack), now=0.01)
    assert a.state is S.ESTABLISHED
    assert a.stats.send_window_bytes == 1000  # RFC 7323 2.2: never scaled in a SYN
    ack = Packet(Flag.ACK, CID_B, CID_A, seq=ISN_B + 1, ack=ISN_A + 1, window=1000)
    a.receive_datagram(encode(ack), now=0.02)
    assert a.stats.send_window_bytes == 8000


def test_no_window_scaling_when_the_peer_does_not_offer_it() -> None:
    b, syn_ack = handshake_raw(Config(recv_buffer_bytes=FOUR_MIB), wscale=None, window=1000)
    assert syn_ack.flags == Flag.SYN | Flag.ACK
    assert syn_ack.wscale is None and syn_ack.window == UNSCALED_MAX
    assert b.stats.send_window_bytes == 1000
    b.receive_datagram(client_segment(0, b"", window=1000), now=0.01)
    assert b.state is S.ESTABLISHED
    b.receive_datagram(client_segment(0, b"hello", window=2000), now=0.02)
    b.handle_timer(now=0.02 + b.config.delayed_ack_s)
    (ack,) = (decode(d) for d in b.datagrams_to_send(now=0.02 + b.config.delayed_ack_s))
    assert ack.ack == wire(5) and ack.wscale is None
    assert ack.window == UNSCALED_MAX  # capped, not 4 MiB shifted by a scale never agreed
    assert b.stats.send_window_bytes == 2000  # the peer's window taken unscaled


def test_peer_window_is_scaled_by_its_offer_but_not_in_the_syn() -> None:
    config = Config(recv_buffer_bytes=FOUR_MIB, recv_autotune=False)  # a fixed 4 MiB window
    b, syn_ack = handshake_raw(config, wscale=3, window=1000)
    assert syn_ack.wscale == 7 and syn_ack.window == UNSCALED_MAX
    assert b.stats.send_window_bytes == 1000  # RFC 7323 2.2: the SYN's window is unscaled
    b.receive_datagram(client_segment(0, b"", window=1000), now=0.01)
    assert b.state is S.ESTABLISHED
    assert b.stats.send_window_bytes == 8000
    b.receive_datagram(client_segment(0, b"x", window=1000), now=0.02)
    b.handle_timer(now=0.02 + b.config.delayed_ack_s)
    (ack,) = (decode(d) for d in b.datagrams_to_send(now=0.02 + b.config.delayed_ack_s))
    assert ack.window == FOUR_MIB >> 7


# ---------------------------------------------------------------- congestion control


def sampled(
    net: Network, conn: Connection, stop: Callable[[ConnectionStats], bool]
) -> list[tuple[float, ConnectionStats]]:
    """Run until ``stop(stats)`` holds, sampling the stats after every step's sends."""
    samples: list[tuple[float, ConnectionStats]] = []

    def until() -> bool:
        st = conn.stats
        samples.append((net.now, st))
        return stop(st)

    net.run(until=until)
    return samples


def test_slow_start_doubles_cwnd_every_round_trip() -> None:
    """RFC 5681's slow start (newreno's; bbr's STARTUP is tests/test_bbr.py's)."""
    net = established(
        config_a=FIXED.replace(congestion_control="newreno"),
        a_to_b=PacedLink(),
        b_to_a=PacedLink(),
    )
    a, _ = conns(net)
    rtt = 2 * Link().delay_s
    a.send(random.Random(16).randbytes(3_000_000))
    net.run_for(rtt / 2)
    cwnds = [a.stats.cwnd_bytes]
    for _ in range(5):
        net.run_for(rtt)
        cwnds.append(a.stats.cwnd_bytes)
        assert a.stats.cwnd_bytes < a.stats.ssthresh_bytes  # still slow start
    assert cwnds[0] == a.config.initial_cwnd_segments * a.mss
    for before, after in itertools.pairwise(cwnds):
        # Appropriate byte counting caps growth at 2x per round; delayed ACKs reach it.
        assert 1.75 * before <= after <= 2 * before, cwnds


def drop_once(seq: int) -> Callable[[int, Packet], bool]:
    """A ``Link.drop`` predicate losing only the first transmission of the segment at ``seq``."""
    seen: set[int] = set()

    def drop(index: int, p: Packet) -> bool:
        if p.payload and p.seq == seq and seq not in seen:
            seen.add(seq)
            return True
        return False

    return drop


@pytest.mark.parametrize("sack", [True, False])
def test_fast_retransmit_halves_cwnd_then_grows_linearly(sack: bool) -> None:
    """NewReno's rules (RFC 5681 section 3.2, RFC 6582), so it is named: cubic, the default,
    keeps 0.7 and grows along its curve (tests/test_cubic.py)."""
    a_to_b = PacedLink(drop=drop_once(wire(60 * MSS)))
    config = Config(congestion_control="newreno", sack=sack, pmtud=False, **QUIET)
    net = established(config_a=config, a_to_b=a_to_b, b_to_a=PacedLink())
    a, _ = conns(net)
    size = 2_000_000
    data = random.Random(17).randbytes(size)
    a.send(data)
    samples = sampled(net, a, lambda st: st.fast_retransmits >= 1)
    before, after = samples[-2][1], samples[-1][1]
    assert before.fast_retransmits == 0
    cwnd_before = before.cwnd_bytes
    # ssthresh = FlightSize / 2; flight may exceed cwnd by the segments sent on early dupacks.
    assert cwnd_before // 2 <= after.ssthresh_bytes <= cwnd_before // 2 + 2 * MSS
    assert after.cwnd_bytes == after.ssthresh_bytes
    ssthresh = after.ssthresh_bytes

    net.run(until=lambda: len(net.b.received) == size)
    assert bytes(net.b.received) == data
    st = a.stats
    assert (st.fast_retransmits, st.timeouts, st.retransmissions) == (1, 0, 1)
    assert st.ssthresh_bytes == ssthresh
    # Congestion avoidance since: about one MSS per round trip, far from doubling.
    rounds = (net.now - samples[-1][0]) / (2 * Link().delay_s)
    assert ssthresh <= st.cwnd_bytes <= ssthresh + (rounds + 2) * MSS


@pytest.mark.parametrize("sack", [True, False])
def test_fast_retransmit_is_sent_on_the_third_duplicate_ack(sack: bool) -> None:
    """RFC 5681 3.2 step 4 and RFC 6675 5 step 4.3: the retransmission is not paced by pipe."""
    # No PMTU probe: it now waits for more than a segment to be queued, so it would join
    # this flight of exactly 20 segments.
    net = established(config_a=Config(initial_cwnd_segments=20, sack=sack, pmtud=False, **QUIET))
    a, b = conns(net)
    now = net.now
    a.send(bytes(20 * MSS))
    flight = a.datagrams_to_send(now=now)
    assert len(flight) == 20
    for k, segment in enumerate(flight[1:], start=1):  # the first segment is lost
        now += 0.001
        b.receive_datagram(segment, now=now)
        for ack in b.datagrams_to_send(now=now):
            a.receive_datagram(ack, now=now + 0.01)
        out = [decode(d) for d in a.datagrams_to_send(now=now + 0.01)]
        if a.stats.fast_retransmits:
            assert wire(0) in [p.seq for p in out], f"recovery began at arrival {k}, no rexmit"
            break
    else:
        pytest.fail("no fast retransmit after 19 duplicate ACKs")


def test_retransmission_timeout_drops_cwnd_to_one_segment() -> None:
    """RFC 5681 section 3.1 equation 4 (ssthresh = FlightSize / 2): NewReno's, so it is named
    (cubic keeps 0.7 of its window; tests/test_cubic.py)."""
    net = established(config_a=Config(congestion_control="newreno", tail_loss_probe=False, **QUIET))
    a, _ = conns(net)
    net.links["a"].blackhole = (net.now + 0.05, net.now + 3.0)
    size = 500_000
    data = random.Random(18).randbytes(size)
    a.send(data)
    samples = sampled(net, a, lambda st: st.timeouts >= 1)
    before, after = samples[-2][1], samples[-1][1]
    flight = before.bytes_in_flight
    assert flight > 2 * a.mss
    assert after.cwnd_bytes == a.mss
    assert after.ssthresh_bytes == max(flight // 2, 2 * a.mss)
    assert after.bytes_in_flight == a.mss and after.retransmissions == 1
    net.run(until=lambda: len(net.b.received) == size)
    assert bytes(net.b.received) == data
    assert a.stats.timeouts >= 2  # the hole lasts several backed-off RTOs


def test_newreno_slow_start_counts_at_most_two_segments_per_ack() -> None:
    cc = NewReno(mss=1000, initial_window_segments=10)
    assert (cc.cwnd, cc.in_slow_start) == (10_000, True)
    cc.on_ack(1000, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 11_000
    cc.on_ack(5000, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 13_000  # RFC 3465 limit L = 2 SMSS


def test_newreno_congestion_avoidance_adds_one_segment_per_window() -> None:
    cc = NewReno(mss=1000, initial_window_segments=10)
    cc.on_congestion_event(20_000, now=0.0)
    assert (cc.ssthresh, cc.cwnd, cc.in_slow_start) == (10_000, 10_000, False)
    cc.on_ack(9_999, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 10_000
    cc.on_ack(1, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 11_000
    cc.on_ack(10_999, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 11_000
    cc.on_ack(1, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 12_000
    # Bytes counted before a congestion event do not carry over into the next window.
    cc.on_ack(9_000, now=0.0, rtt_s=0.02)
    cc.on_congestion_event(24_000, now=0.0)
    assert (cc.ssthresh, cc.cwnd) == (12_000, 12_000)
    cc.on_ack(3_000, now=0.0, rtt_s=0.02)
    assert cc.cwnd == 12_000


def test_newreno_congestion_event_and_recovery_exit() -> None:
    cc = NewReno(mss=1000, initial_window_segments=10)
    cc.on_congestion_event(30_000, now=0.0)
    assert (cc.ssthresh, cc.cwnd) == (15_000, 15_000)
    cc.cwnd = 20_000  # as if inflated during recovery
    cc.on_recovery_exit(now=0.0)
    assert cc.cwnd == 15_000
    cc.on_congestion_event(3_000, now=0.0)
    assert (cc.ssthresh, cc.cwnd) == (2_000, 2_000)  # floor of two segments


def test_newreno_timeout_collapses_to_one_segment_and_slow_starts() -> None:
    cc = NewReno(mss=1000, initial_window_segments=10)
    cc.on_timeout(40_000, now=0.0)
    assert (cc.ssthresh, cc.cwnd, cc.in_slow_start) == (20_000, 1000, True)
    cc.on_ack(1000, now=0.0, rtt_s=None)
    assert cc.cwnd == 2000
    cc.on_timeout(1000, now=0.0)
    assert (cc.ssthresh, cc.cwnd) == (2000, 1000)


def test_congestion_controllers_are_created_by_name() -> None:
    assert "newreno" in available()
    cc = create("newreno", mss=1200, initial_window_segments=4)
    assert isinstance(cc, NewReno) and (cc.mss, cc.cwnd) == (1200, 4800)
    with pytest.raises(ValueError, match="unknown congestion control"):
        create("no-such-algorithm", mss=1200, initial_window_segments=4)
    with pytest.raises(ValueError, match="congestion_control"):
        Connection(Config(congestion_control="no-such-algorithm"))


# ---------------------------------------------------------------- counters


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stats_agree_with_the_wire_after_a_lossy_transfer(seed: int) -> None:
    loss_rng = random.Random(seed)

    def drop_data(index: int, p: Packet) -> bool:
        return bool(p.payload) and loss_rng.random() < 0.05

    a_to_b = Link(rng=random.Random(seed + 100), drop=drop_data)
    b_to_a = Link(rng=random.Random(seed + 200), loss=0.05)
    # Quiet: the run below waits for the network to go idle, which keepalive never lets it.
    net = pair(config_a=Config(**QUIET), config_b=Config(**QUIET), a_to_b=a_to_b, b_to_a=b_to_a)
    a, b = conns(net)
    size = 300_000
    data = random.Random(seed).randbytes(size)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == size)
    net.run()  # until idle: every ACK delivered or lost, no timer left
    assert bytes(net.b.received) == data, f"seed={seed}"
    assert a_to_b.dropped > 0, f"seed={seed}: the scenario must lose data"

    sent_by_a = [s.packet for s in net.trace if s.src == "a"]
    highest = 0
    retx_segments = retx_bytes = 0
    for p in sent_by_a:
        if p.payload:
            offset = (p.seq - wire(0)) & SEQ_MASK
            if offset < highest:
                retx_segments += 1
                retx_bytes += len(p.payload)
            highest = max(highest, offset + len(p.payload))
    syn_retx = sum(bool(p.flags & Flag.SYN) for p in sent_by_a) - 1

    st = a.stats
    assert st.bytes_sent == size and b.stats.bytes_received == size, f"seed={seed}"
    assert st.retransmissions == retx_segments + syn_retx, f"seed={seed}"
    assert st.bytes_retransmitted == retx_bytes, f"seed={seed}"
    assert st.retransmissions >= a_to_b.dropped, f"seed={seed}: every lost segment resent"
    assert st.fast_retransmits + st.timeouts >= 1, f"seed={seed}"
    assert st.segments_sent == len(sent_by_a), f"seed={seed}"
    assert b.stats.segments_received == a_to_b.sent - a_to_b.dropped, f"seed={seed}"
    assert st.segments_received == b_to_a.sent - b_to_a.dropped, f"seed={seed}"
    assert st.bytes_in_flight == 0 and st.send_buffer_bytes == 0, f"seed={seed}"


@pytest.mark.parametrize(
    ("cc", "ack_growth_segments"),
    # What one ACK may add in slow start: RFC 3465's L = 2 for NewReno, RFC 9406's L = 8 for
    # cubic (HyStart++ unpaced).
    [("newreno", 2), ("cubic", CUBIC_SLOW_START_LIMIT_SEGMENTS)],
)
def test_congestion_window_does_not_grow_while_the_receive_window_limits_the_sender(
    cc: str, ack_growth_segments: int
) -> None:
    # A receiver-limited sender never fills its congestion window, so that window proves
    # nothing about the path and must not keep growing (it reached tens of MB before): it
    # grows only while the flight is at least half of it, so by at most one ACK's growth
    # beyond twice the receive window.
    window = 64 * 1024
    net = established(
        config_a=FIXED.replace(congestion_control=cc),
        config_b=Config(recv_buffer_bytes=window, **QUIET),
    )
    a, _ = conns(net)
    payload = random.Random(11).randbytes(4 << 20)
    a.send(payload)
    net.run(until=lambda: len(net.b.received) == len(payload))
    assert bytes(net.b.received) == payload
    assert a.stats.cwnd_bytes <= 2 * window + ack_growth_segments * MSS
