"""The receive side of a connection (utcp/connection/receive_side.py): RCV.NXT, the
acceptability test, reassembly, in-order delivery and the scheduling of our ACKs."""

from __future__ import annotations

from collections import deque

import pytest

from tests.helpers import QUIET, timed_transfer
from utcp.buffers import HeldBuffer
from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.receive_side import (
    RESUME_PIECE_BYTES,
    TAKE_FIN,
    TAKE_OVER_BUFFER,
    ReceiveSide,
)
from utcp.events import DataReceived, Event

MSS = 100
BUFFER = 1000
CONFIG = Config(
    mss_bytes=MSS, recv_buffer_bytes=BUFFER, delayed_ack_s=0.040, ack_every_segments=2
).validate()


class Side:
    """A receive side after the handshake (RCV.NXT = 1), with what it reports to."""

    def __init__(self, config: Config = CONFIG) -> None:
        self.events: deque[Event] = deque()
        self.count = Counters()
        self.dl = Deadlines()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = 5000
        self.rcv.nxt = 1

    def delivered(self) -> bytes:
        out = b"".join(e.data for e in self.events if isinstance(e, DataReceived))
        self.events.clear()
        return out


def test_wire_ack_and_position_wrap_around_the_peer_isn() -> None:
    s = Side()
    rcv = s.rcv
    rcv.irs = 0xFFFF_FFFE
    assert rcv.wire_ack(1) == 0xFFFF_FFFF
    assert rcv.wire_ack(2) == 0
    assert rcv.wire_ack(12) == 10
    assert rcv.position(10) == 12
    assert rcv.position(0xFFFF_FFFE) == 0  # the peer's SYN, just behind RCV.NXT


def test_acceptability_of_empty_segments() -> None:
    """RFC 9293 section 3.10.7.4, table 6, zero-length rows: with RCV.WND = 0 only
    SEG.SEQ = RCV.NXT; otherwise RCV.NXT =< SEG.SEQ =< RCV.NXT + RCV.WND, the right edge
    included as Linux includes it (a peer that filled the window acknowledges from there;
    refused, its ACKs drew ACKs, and two such ends exchanged them without end)."""
    rcv = Side().rcv
    rcv.nxt = 100
    assert rcv.acceptable(100, 0, 0)
    assert not rcv.acceptable(101, 0, 0)
    assert not rcv.acceptable(99, 0, 0)
    assert rcv.acceptable(100, 0, 10)
    assert rcv.acceptable(109, 0, 10)
    assert rcv.acceptable(110, 0, 10)
    assert not rcv.acceptable(111, 0, 10)
    assert not rcv.acceptable(99, 0, 10)


def test_acceptability_of_segments_with_data() -> None:
    """RFC 9293 table 6, data rows: not acceptable with a zero window; otherwise the first or
    the last byte must fall inside the window, and a segment spanning the whole window is
    taken too (what fits is kept)."""
    rcv = Side().rcv
    rcv.nxt = 100
    assert not rcv.acceptable(100, 5, 0)
    assert rcv.acceptable(100, 5, 10)  # starts at RCV.NXT
    assert rcv.acceptable(95, 10, 10)  # old start, last byte (104) inside
    assert rcv.acceptable(105, 20, 10)  # starts inside, runs past the right edge
    assert rcv.acceptable(90, 40, 10)  # covers the whole window
    assert not rcv.acceptable(90, 10, 10)  # ends at 99: entirely old
    assert not rcv.acceptable(110, 5, 10)  # entirely beyond the window


def test_in_order_data_is_delivered_and_draws_a_delayed_ack() -> None:
    """RFC 9293 section 3.8.6.3 / RFC 5681 section 4.2: a lone in-order segment may be
    acknowledged late, by the delayed-ACK deadline."""
    s = Side()
    assert s.rcv.take(1, b"hello", False, 10.0) == 0
    assert s.delivered() == b"hello"
    assert s.rcv.nxt == 6
    assert s.count.bytes_received == 5
    assert s.rcv.unacked_bytes == 5
    assert not s.rcv.ack_now
    assert s.dl.ack == 10.040


def test_every_second_full_segment_is_acknowledged_at_once() -> None:
    """RFC 5681 section 4.2: an ACK SHOULD be generated for at least every second full-sized
    segment (``ack_every_segments`` = 2)."""
    s = Side()
    s.rcv.take(1, b"a" * MSS, False, 1.0)
    assert not s.rcv.ack_now and s.dl.ack == 1.040
    s.rcv.take(1 + MSS, b"b" * MSS, False, 1.010)
    assert s.rcv.ack_now
    assert s.rcv.unacked_bytes == 2 * MSS
    s.rcv.ack_sent()
    assert (s.rcv.ack_now, s.dl.ack, s.rcv.unacked_bytes) == (False, None, 0)


def test_delay_ack_keeps_the_earlier_deadline_and_yields_to_an_immediate_ack() -> None:
    s = Side()
    s.rcv.delay_ack(1.0)
    s.rcv.delay_ack(1.030)
    assert s.dl.ack == 1.040  # not pushed back by later data
    s.rcv.ack_sent()
    s.rcv.ack_now = True
    s.rcv.delay_ack(2.0)
    assert s.dl.ack is None  # an ACK is owed at once anyway


def test_out_of_order_data_is_held_and_acknowledged_at_once() -> None:
    """RFC 5681 section 4.2: an out-of-order segment draws an immediate (duplicate) ACK, and
    so does the segment that fills the gap."""
    s = Side()
    rcv = s.rcv
    assert rcv.take(11, b"world", False, 1.0) == 0
    assert s.delivered() == b""
    assert rcv.nxt == 1
    assert rcv.ack_now
    assert rcv.last_pos == 11
    assert rcv.reasm.ranges() == [(11, 16)]
    assert s.count.ooo_segments == 1
    rcv.ack_sent()
    rcv.take(1, b"0123456789", False, 1.010)
    assert s.delivered() == b"0123456789world"
    assert rcv.nxt == 16
    assert rcv.ack_now  # filled a gap
    assert len(rcv.reasm) == 0


def test_a_duplicate_segment_is_counted_and_acknowledged() -> None:
    s = Side()
    s.rcv.take(1, b"abc", False, 1.0)
    s.rcv.ack_sent()
    s.delivered()
    assert s.rcv.take(1, b"abc", False, 2.0) == 0
    assert s.delivered() == b""
    assert s.count.dup_segments == 1
    assert s.rcv.ack_now  # RFC 9293: a duplicate draws an ACK
    assert s.rcv.nxt == 4


def test_data_beyond_the_window_is_trimmed() -> None:
    """RFC 9293 section 3.10.7.4: only the part inside the receive window is kept."""
    s = Side()
    s.rcv.take(1, b"z" * (BUFFER + 200), False, 1.0)
    assert len(s.delivered()) == BUFFER
    assert s.rcv.nxt == 1 + BUFFER


def test_an_in_order_fin_moves_rcv_nxt_past_it() -> None:
    s = Side()
    assert s.rcv.take(1, b"bye", True, 3.0) == TAKE_FIN
    assert s.delivered() == b"bye"
    assert s.rcv.fin_pos == 4
    assert s.rcv.nxt == 5  # the FIN occupies one position
    assert s.rcv.ack_now


def test_a_fin_beyond_a_gap_waits_for_the_gap() -> None:
    s = Side()
    assert s.rcv.take(4, b"def", True, 1.0) == 0
    assert s.rcv.fin_pos == 7
    assert s.rcv.nxt == 1
    assert s.rcv.take(1, b"abc", False, 1.1) == TAKE_FIN
    assert s.delivered() == b"abcdef"
    assert s.rcv.nxt == 8


def test_nothing_past_the_peers_fin_is_data() -> None:
    """A FIN at 101 arrives out of order, then a segment running past it: only the bytes up
    to the FIN are delivered, and the FIN is taken (they used to be delivered whole and the
    EOF never came)."""
    s = Side()
    assert s.rcv.take(101, b"", True, 0.0) == 0
    assert s.rcv.take(1, b"a" * 150, False, 0.0) == TAKE_FIN
    assert s.delivered() == b"a" * 100
    assert s.rcv.nxt == 102


def test_a_second_fin_elsewhere_does_not_move_the_end() -> None:
    s = Side()
    s.rcv.take(101, b"", True, 0.0)
    s.rcv.take(201, b"", True, 0.0)  # a FIN further on: the stream still ends at 101
    assert s.rcv.fin_pos == 101
    assert s.rcv.take(1, b"a" * 100, False, 0.0) == TAKE_FIN
    assert s.delivered() == b"a" * 100


def test_data_held_past_a_fin_that_came_later_is_not_delivered() -> None:
    """Out-of-order data at 51..150 is held, then a FIN at 101 arrives: once the gap fills,
    delivery stops at the FIN."""
    s = Side()
    s.rcv.take(51, b"b" * 100, False, 0.0)
    s.rcv.take(101, b"", True, 0.0)
    assert s.rcv.take(1, b"a" * 50, False, 0.0) == TAKE_FIN
    assert s.delivered() == b"a" * 50 + b"b" * 50


def test_reassembly_beyond_its_memory_limit_is_reported() -> None:
    """Reassembly is charged payload plus per-chunk overhead, up to twice the buffer: a peer
    scattering one-byte pieces reaches the limit after 2000 // 129 = 15 of them."""
    s = Side()
    results = [s.rcv.take(3 + 2 * i, b"x", False, 1.0) for i in range(16)]
    assert results[:15] == [0] * 15
    assert results[15] == TAKE_OVER_BUFFER
    assert len(s.rcv.reasm) == 15
    assert s.count.ooo_segments == 15


def test_take_next_is_the_in_order_fast_path() -> None:
    s = Side()
    s.rcv.take_next(b"q" * 50, 1.0)
    assert s.delivered() == b"q" * 50
    assert (s.rcv.nxt, s.rcv.unacked_bytes, s.rcv.ack_now, s.dl.ack) == (51, 50, False, 1.040)
    s.rcv.take_next(memoryview(b"r" * 150), 1.001)
    assert s.delivered() == b"r" * 150
    assert s.rcv.ack_now  # 200 bytes: two full segments' worth
    assert s.count.bytes_received == 200


def test_paused_reading_holds_data_and_shrinks_the_window() -> None:
    s = Side()
    s.rcv.reading_paused = True
    s.rcv.take(1, b"x" * 300, False, 1.0)
    assert s.delivered() == b""
    assert s.rcv.held.tobytes() == b"x" * 300
    assert s.rcv.window() == BUFFER - 300
    assert s.rcv.nxt == 301


def test_a_full_sized_segment_marks_the_peer_mid_stream() -> None:
    s = Side()
    s.dl.keepalive = 50.0
    s.rcv.note_segment_size(MSS - 1)
    assert not s.rcv.peer_mid_stream and s.dl.keepalive == 50.0
    s.rcv.note_segment_size(MSS)
    assert s.rcv.peer_mid_stream
    assert s.dl.keepalive is None  # re-armed with the stall probe in view
    s.dl.keepalive = 60.0
    s.rcv.note_segment_size(MSS)  # still mid-stream: nothing to re-arm
    assert s.dl.keepalive == 60.0
    s.rcv.note_segment_size(10)
    assert not s.rcv.peer_mid_stream and s.dl.keepalive == 60.0


def test_window_update_waits_until_the_window_grew_enough() -> None:
    """RFC 9293 section 3.8.6.2.2 (receiver SWS avoidance): announce a larger window only
    once it grew by min(buffer / 2, 2 * MSS) = 200 here, or reopened from zero."""
    s = Side()
    rcv = s.rcv
    rcv.held.append(b"h" * 400)
    rcv.adv_wnd = 600
    rcv.held = HeldBuffer()
    rcv.held.append(b"h" * 201)  # the application read 199 bytes: window 799
    assert not rcv.window_grew(MSS)
    rcv.held = HeldBuffer()
    rcv.held.append(b"h" * 200)  # window 800
    assert rcv.window_grew(MSS)
    # A zero window advertised (a fresh side, so no wider edge was promised before).
    rcv = Side().rcv
    rcv.held.append(b"h" * BUFFER)
    rcv.adv_wnd = 0
    assert not rcv.window_grew(MSS)
    rcv.held = HeldBuffer()
    rcv.held.append(b"h" * (BUFFER - 1))
    assert rcv.window_grew(MSS)  # 1 byte after a zero window


@pytest.mark.parametrize("views", [False, True])
def test_in_order_data_comes_as_views_of_the_datagram_when_asked(views: bool) -> None:
    """A driver that copies the bytes into buffers of its own (an asyncio BufferedProtocol's
    transport) asks for views and saves a copy; by default the data is ``bytes``."""
    from tests.helpers import establish, pair

    net = pair()
    a, b = establish(net)
    b.deliver_views(views)
    payload = bytes(range(256)) * 40
    a.send(payload)
    net.run(until=lambda: len(net.b.received) >= len(payload))
    assert bytes(net.b.received) == payload
    kinds = {type(e.data) for e in net.b.events if isinstance(e, DataReceived)}
    assert kinds == ({memoryview} if views else {bytes})


def test_resume_hands_held_data_back_in_pieces_and_a_reader_that_pauses_keeps_the_rest() -> None:
    """A window of megabytes held while the reader was paused goes back as pieces of at most
    RESUME_PIECE_BYTES (as socket reads would), not as one buffer of all of it: a reader
    that pauses again after the first piece leaves the rest held, in order and still counted
    against the window."""
    size = 4 * RESUME_PIECE_BYTES
    config = Config(mss_bytes=1024, recv_buffer_bytes=size, recv_autotune=False).validate()
    s = Side(config)
    rcv = s.rcv
    rcv.pause()
    sent = bytes(i % 251 for i in range(size - 1024))  # 255 segments, 64 to a piece
    for pos in range(0, len(sent), 1024):
        rcv.take(1 + pos, sent[pos : pos + 1024], False, 1.0)
    assert len(rcv.held) == len(sent)
    assert rcv.window() == 1024
    rcv.resume()
    pieces = [e.data for e in s.events if isinstance(e, DataReceived)]
    assert len(pieces) == len(s.events) == 4
    assert all(len(p) <= RESUME_PIECE_BYTES for p in pieces)
    assert b"".join(pieces) == sent
    # The reader takes the first piece, then pauses: the rest comes back to be held.
    first = s.events.popleft()
    rcv.pause()
    assert not s.events
    assert len(rcv.held) == len(sent) - len(first.data)  # type: ignore[attr-defined]
    assert rcv.window() == size - len(rcv.held)
    rcv.resume()
    assert first.data + s.delivered() == sent  # type: ignore[attr-defined]


def test_held_data_delivers_views_as_they_came_when_asked() -> None:
    """With views on, a held piece that fills RESUME_PIECE_BYTES alone goes back as the view
    it arrived as (no copy); smaller neighbours are joined."""
    config = Config(mss_bytes=65000, recv_buffer_bytes=4 * RESUME_PIECE_BYTES)
    s = Side(config.validate())
    rcv = s.rcv
    rcv.views = True
    rcv.pause()
    big = memoryview(b"b" * RESUME_PIECE_BYTES)
    rcv.take(1, memoryview(b"s" * 10), False, 1.0)
    rcv.take(11, big, False, 1.0)
    rcv.take(11 + len(big), memoryview(b"t" * 10), False, 1.0)
    rcv.take(21 + len(big), memoryview(b"u" * 10), False, 1.0)
    rcv.resume()
    pieces = [e.data for e in s.events if isinstance(e, DataReceived)]
    assert [len(p) for p in pieces] == [10, RESUME_PIECE_BYTES, 20]
    assert isinstance(pieces[1], memoryview) and pieces[1].obj is big.obj  # not copied
    assert b"".join(pieces) == b"s" * 10 + b"b" * RESUME_PIECE_BYTES + b"t" * 10 + b"u" * 10


def test_a_window_smaller_than_two_base_size_segments_is_acknowledged_when_full() -> None:
    """With path MTU discovery the threshold for an immediate ACK counts base-size segments
    (1,176 bytes), whatever the receiver's own ``mss_bytes``: a receive buffer of 1,000 bytes
    (``mss_bytes=500``, which the configuration allows) never held enough to reach it, so
    every full window waited for the delayed-ACK timer.  The threshold is now at most half
    the buffer (as Linux's rcv_mss is at most half the window): each window costs a round
    trip, not a round trip and the 40 ms timer (3.9 s for this transfer before)."""
    receiver = Config(
        mss_bytes=500, recv_buffer_bytes=1000, recv_autotune=False, delayed_ack_s=0.040, **QUIET
    )
    size = 64 * 1000
    took, _ = timed_transfer(receiver, size)
    windows = size / 1000
    assert took < 1.3 * windows * 0.020, took
