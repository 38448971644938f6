"""The building of segments (utcp/connection/segments.py): every encoded datagram is decoded
back with ``utcp.packet.decode`` and its fields checked, SACK blocks are limited by the option
space, and building an ACK settles the ACK owed."""

from __future__ import annotations

from collections import deque
from typing import Any

from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.options import Negotiated
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.tracepoints import TracePoints
from utcp.events import Event
from utcp.packet import HEADER_SIZE, Flag, Packet, decode, wscale_for
from utcp.trace import ListTracer

MSS = 1000
ISS = 0xFFFF_FFF0  # our sequence numbers wrap at position 16
IRS = 40_000
LOCAL_CID = 0x1111
PEER_CID = 0x2222
BUFFER = 1 << 20
CONFIG = Config(
    mss_bytes=MSS, recv_buffer_bytes=BUFFER, recv_autotune=False, pmtud=True, sack=True
).validate()


class Stack:
    """The segment builder of an established connection with the parts it reads."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        self.config = config
        self.snd = SendSide(iss=ISS, mss=MSS)
        self.snd.una = self.snd.nxt = self.snd.max = 1
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = IRS
        self.rcv.nxt = 1
        self.opts = Negotiated(config)
        self.trace = TracePoints()
        self.seg = Segments(
            config,
            local_cid=LOCAL_CID,
            snd=self.snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=self.trace,
        )
        self.seg.peer_cid = PEER_CID

    def hold(self, *ranges: tuple[int, int]) -> None:
        """Out-of-order data held at the given peer positions (most recent last)."""
        for start, end in ranges:
            self.rcv.take(start, b"o" * (end - start), False, 0.0)

    def ack_wire(self, pos: int) -> int:
        return self.rcv.wire_ack(pos)


def test_a_pure_ack_carries_the_ack_window_and_both_ids() -> None:
    s = Stack()
    s.rcv.ack_now = True
    s.dl.ack = 3.0
    p = decode(s.seg.build(Flag.ACK, 1, b""))
    assert p.flags == Flag.ACK
    assert (p.src_cid, p.dst_cid) == (LOCAL_CID, PEER_CID)
    assert p.seq == 0xFFFF_FFF1
    assert p.ack == IRS + 1
    assert p.window == 0xFFFF  # 1 MiB unscaled: the field saturates
    assert bytes(p.payload) == b""
    assert (p.sack_blocks, p.timestamps, p.probe, p.probe_ack) == ((), None, None, None)
    assert s.rcv.adv_wnd == 0xFFFF
    assert (s.rcv.ack_now, s.dl.ack) == (False, None)  # the ACK owed is settled


def test_the_window_field_is_scaled_down_by_our_shift() -> None:
    """RFC 7323 section 2.3: the field carries the window shifted right by Rcv.Wind.Shift;
    the window recorded as advertised is what the peer will compute from it."""
    s = Stack()
    s.rcv.wscale = wscale_for(BUFFER)
    assert s.rcv.wscale == 5
    s.rcv.held.append(b"h" * 100)  # window 1 MiB - 100: not a multiple of 32
    p = decode(s.seg.build(Flag.ACK, 1, b""))
    assert p.window == (BUFFER - 100) >> 5
    assert s.rcv.adv_wnd == ((BUFFER - 100) >> 5) << 5


def test_a_segment_without_ack_leaves_the_ack_owed() -> None:
    s = Stack()
    s.rcv.ack_now = True
    p = decode(s.seg.build(Flag.RST, 5, b""))
    assert p.flags == Flag.RST
    assert p.ack == 0
    assert p.seq == s.snd.wire_seq(5)
    assert s.rcv.ack_now


def test_the_plain_and_the_general_encoders_give_the_same_bytes() -> None:
    """A tracer forces the general path (a Packet through ``encode``): the datagram must be
    byte for byte what the no-options shortcut builds."""
    plain = Stack()
    traced = Stack()
    traced.trace.tracer = tracer = ListTracer()
    for s in (plain, traced):
        s.rcv.take(1, b"in", False, 0.0)
    a = plain.seg.build(Flag.ACK, 17, b"payload")
    b = traced.seg.build(Flag.ACK, 17, b"payload")
    assert a == b
    [event] = tracer.named("datagram_sent")
    assert event.fields["seq"] == plain.snd.wire_seq(17)
    assert event.fields["len"] == 7


def test_timestamps_carry_our_clock_and_echo_the_peer() -> None:
    """RFC 7323 section 3: TSval is our clock, TSecr the peer's latest TSval."""
    s = Stack()
    s.opts.ts_ok = True
    s.opts.ts_recent = 0xABCDEF01
    s.opts.clock_ms = 123_456.7
    p = decode(s.seg.build(Flag.ACK, 1, b"x"))
    assert p.timestamps == (123_456, 0xABCDEF01)
    assert len(s.seg.build(Flag.ACK, 1, b"x")) == HEADER_SIZE + 12 + 1


def test_sack_blocks_report_the_held_data_most_recent_first() -> None:
    """RFC 2018 section 4: the first block holds the most recently received segment; the
    others follow, the blocks of the latest arrivals first."""
    s = Stack()
    s.opts.sack_ok = True
    s.hold((101, 201), (501, 601), (301, 401))
    p = decode(s.seg.build(Flag.ACK, 1, b""))
    assert p.sack_blocks == (
        (s.ack_wire(301), s.ack_wire(401)),
        (s.ack_wire(501), s.ack_wire(601)),
        (s.ack_wire(101), s.ack_wire(201)),
    )
    assert p.ack == s.ack_wire(1)


def test_one_ack_for_a_batch_reports_every_block_the_batch_added() -> None:
    """More holes open than an ACK has blocks for, and a batch of arrivals answered by one
    ACK: its blocks are those of the latest arrivals, so none of them goes unreported (in
    ascending order after the first, the middle ones never were, and the sender's RACK
    retransmitted data the receiver held)."""
    s = Stack()
    s.opts.sack_ok = True
    s.opts.ts_ok = True  # three blocks
    s.hold(*[(101 + 200 * i, 201 + 200 * i) for i in range(4)])  # reported one by one
    s.hold((1101, 1201), (1301, 1401), (1501, 1601))  # one batch, one ACK
    p = decode(s.seg.build(Flag.ACK, 1, b""))
    assert p.sack_blocks == (
        (s.ack_wire(1501), s.ack_wire(1601)),
        (s.ack_wire(1301), s.ack_wire(1401)),
        (s.ack_wire(1101), s.ack_wire(1201)),
    )
    s.hold((1201, 1251))  # extends an older block: it goes first, the next ones follow
    p = decode(s.seg.build(Flag.ACK, 1, b""))
    assert p.sack_blocks[0] == (s.ack_wire(1101), s.ack_wire(1251))
    assert p.sack_blocks[1:] == (
        (s.ack_wire(1501), s.ack_wire(1601)),
        (s.ack_wire(1301), s.ack_wire(1401)),
    )


def test_at_most_four_sack_blocks_or_three_beside_timestamps() -> None:
    """RFC 2018 section 3 and RFC 7323: the option space limits the blocks; utcp's 36 option
    bytes hold four (2 + 4 * 8 = 34, padded to 36), or three beside the timestamps
    (10 + 2 + 3 * 8 = 36)."""
    s = Stack()
    s.opts.sack_ok = True
    s.hold(*[(101 + 200 * i, 201 + 200 * i) for i in range(6)])
    assert len(decode(s.seg.build(Flag.ACK, 1, b"")).sack_blocks) == 4
    s.opts.ts_ok = True
    assert len(decode(s.seg.build(Flag.ACK, 1, b"")).sack_blocks) == 3


def test_sack_blocks_never_push_a_data_segment_past_the_mss() -> None:
    """RFC 9293 section 3.7.1: options count against the segment size, so beside a payload
    only the blocks that fit are carried."""
    s = Stack()
    s.opts.sack_ok = True
    s.hold((101, 201), (301, 401), (501, 601))
    for payload_len, blocks in ((MSS, 0), (MSS - 11, 0), (MSS - 12, 1), (MSS - 20, 2)):
        raw = s.seg.build(Flag.ACK, 1, b"p" * payload_len)
        assert len(decode(raw).sack_blocks) == blocks, payload_len
        assert len(raw) <= HEADER_SIZE + MSS


def test_sack_blocks_share_the_option_space_with_a_probe_answer() -> None:
    s = Stack()
    s.opts.sack_ok = True
    s.hold(*[(101 + 200 * i, 201 + 200 * i) for i in range(5)])
    p = decode(s.seg.build(Flag.ACK, 1, b"", probe_ack=9))
    assert p.probe_ack == 9
    assert len(p.sack_blocks) == 3
    s.opts.ts_ok = True
    p = decode(s.seg.build(Flag.ACK, 1, b"", probe_ack=10))
    assert (p.probe_ack, len(p.sack_blocks)) == (10, 2)
    assert p.timestamps is not None


def test_an_active_syn_offers_every_option_configured() -> None:
    s = Stack(timestamps=True)
    s.opts.clock_ms = 5000.0
    raw = s.seg.build_syn(Flag.SYN, active=True)
    p = decode(raw)
    assert p.flags == Flag.SYN
    assert p.seq == ISS
    assert p.ack == 0
    assert p.mss == s.opts.adv_mss == 65507 - HEADER_SIZE
    assert p.wscale == 5
    assert p.sack_permitted and p.probe_permitted
    assert p.timestamps == (5000, 0)
    assert p.window == 0xFFFF  # a SYN's window is never scaled (RFC 7323 section 2.2)


def test_a_syn_ack_carries_only_what_was_agreed_and_settles_the_ack() -> None:
    s = Stack(timestamps=True)
    s.rcv.ack_now = True
    s.opts.learn(Packet(Flag.SYN, PEER_CID, 0, IRS, 0, 1000, sack_permitted=True), s.config)
    s.rcv.wscale = 5
    p = decode(s.seg.build_syn(Flag.SYN | Flag.ACK, active=False))
    assert p.flags == Flag.SYN | Flag.ACK
    assert p.ack == IRS + 1
    assert p.sack_permitted
    assert (p.wscale, p.timestamps, p.probe_permitted) == (None, None, False)
    assert not s.rcv.ack_now


def test_a_pmtu_probe_has_the_exact_size_and_settles_nothing() -> None:
    """RFC 8899 section 4.1: a probe is padding of the size being tested; it is likely to be
    dropped, so the ACK owed and the window last advertised stand."""
    s = Stack()
    s.snd.nxt = 300
    s.rcv.ack_now = True
    s.rcv.adv_wnd = 1234
    raw = s.seg.build_probe(7, 1452)
    assert len(raw) == 1452
    p = decode(raw)
    assert (p.probe, p.padding, bytes(p.payload)) == (7, 1452 - HEADER_SIZE - 8, b"")
    assert p.seq == s.snd.wire_seq(300)
    assert p.ack == IRS + 1
    assert s.rcv.ack_now and s.rcv.adv_wnd == 1234
    s.opts.ts_ok = True
    assert len(s.seg.build_probe(8, 1200)) == 1200


def test_emit_sends_the_bytes_of_the_range_and_a_fin_past_the_data() -> None:
    s = Stack()
    s.snd.buf.write(b"0123456789")
    s.snd.fin_pos = 11
    out: list[bytes] = []
    s.seg.emit(out, 1, 6)
    s.seg.emit(out, 6, 12)
    s.seg.emit(out, 11, 12)
    first, second, fin = map(decode, out)
    assert (first.flags, bytes(first.payload), first.seq) == (Flag.ACK, b"01234", ISS + 1)
    assert (second.flags, bytes(second.payload)) == (Flag.ACK | Flag.FIN, b"56789")
    assert second.seq == (ISS + 6) & 0xFFFF_FFFF
    assert (fin.flags, bytes(fin.payload), fin.seq) == (Flag.ACK | Flag.FIN, b"", 0xFFFF_FFFB)
    assert s.count.segments_sent == 3


def test_emit_leaves_out_what_the_peer_already_acknowledged() -> None:
    s = Stack()
    s.snd.buf.write(b"abcdefghij")
    s.snd.nxt = s.snd.max = 11
    s.snd.acknowledge(4)
    out: list[bytes] = []
    s.seg.emit(out, 1, 11)
    p = decode(out[0])
    assert bytes(p.payload) == b"defghij"
    assert p.seq == s.snd.wire_seq(4)
