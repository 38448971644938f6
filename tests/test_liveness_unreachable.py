"""Parts' methods without tests of their own: ICMP port unreachable checked and confirmed
(``Liveness.on_unreachable``, RFC 5927), paused reading (``ReceiveSide.pause``/``resume``),
the dispatch of an acknowledgement (``LossRecovery.on_ack``, RFC 5681 section 2's duplicate
ACK) and the peer's window taken by the sender (``Sender.update_window``)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.liveness import (
    UNREACHABLE_CONFIRMED,
    UNREACHABLE_NOT_OURS,
    UNREACHABLE_NOTED,
    Liveness,
)
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.pacer import Pacer
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.sender import Sender
from utcp.connection.tracepoints import TracePoints
from utcp.events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EofReceived,
    Event,
)
from utcp.log import get_logger
from utcp.packet import Flag, Packet

MSS = 1000
BUFFER = 10_000
ISS = 0xFFFF_FFF0  # SND.UNA - 1 and the flight straddle the wrap of the sequence space
CONFIG = Config(
    mss_bytes=MSS,
    recv_buffer_bytes=BUFFER,
    pmtud=False,
    fast_paths=False,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    keepalive_idle_s=15.0,
    initial_cwnd_segments=10,
    dupack_threshold=3,
).validate()
T0 = 100.0  # when the peer was last heard from
ACK = int(Flag.ACK)


class Stack:
    """An established connection's parts with ``sent`` bytes in flight, as MSS segments."""

    def __init__(self, config: Config = CONFIG, *, sent: int = 0, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="liveness_unreachable")
        self.snd = snd = SendSide(iss=ISS, mss=MSS)
        snd.una = snd.nxt = snd.max = 1
        snd.wnd = snd.max_wnd = 64_000
        snd.wl1, snd.wl2 = 0, 1
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = 500
        self.rcv.nxt = 1
        self.opts = Negotiated(config)
        self.control = Control()
        trace = TracePoints()
        self.loss = LossRecovery(
            config,
            snd=snd,
            opts=self.opts,
            deadlines=self.dl,
            counters=self.count,
            trace=trace,
            log=log,
        )
        seg = Segments(
            config,
            local_cid=1,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=trace,
        )
        self.sender = Sender(
            config,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            loss=self.loss,
            segments=seg,
            deadlines=self.dl,
            counters=self.count,
            trace=trace,
            pmtud=None,
            pacer=Pacer(enabled=config.pacing != "off", default_rate=config.pacing == "on"),
            log=log,
        )
        self.live = Liveness(
            config,
            snd=snd,
            rcv=self.rcv,
            loss=self.loss,
            control=self.control,
            deadlines=self.dl,
            counters=self.count,
            log=log,
        )
        if sent:
            snd.buf.write(b"s" * sent)
            out: list[bytes] = []
            self.sender.send_data(out, T0)
            assert snd.max == 1 + sent
        self.live.heard(T0)

    def seq(self, pos: int) -> int:
        return self.snd.wire_seq(pos)

    def ack(self, ack_pos: int, *, window: int = 64_000, **fields: Any) -> Packet:
        """The peer's segment at RCV.NXT acknowledging our position ``ack_pos``."""
        flags = fields.pop("flags", ACK)
        return Packet(flags, 2, 1, self.rcv.wire_ack(1), self.seq(ack_pos), window, **fields)


# ---------------------------------------------------------------- Liveness.on_unreachable


def test_an_error_quoting_a_sequence_number_we_could_not_have_sent_is_not_ours() -> None:
    """RFC 5927 section 4.1: the quoted sequence number must lie between SND.UNA (less one,
    for a keepalive or window probe) and SND.MAX; anything else may be forged."""
    s = Stack(sent=3000)
    s.loss.on_new_ack(1001, T0 + 0.1)
    assert (s.snd.una, s.snd.max) == (1001, 3001)
    for pos in (999, 3002, 1001 + (1 << 31), 0):
        assert s.live.on_unreachable(s.seq(pos), T0 + 1.0) == UNREACHABLE_NOT_OURS, pos
    assert s.count.icmp_errors == 0
    assert s.live.unreachable_at is None
    for pos in (1000, 1001, 2500, 3001):
        fresh = Stack(sent=3000)
        fresh.loss.on_new_ack(1001, T0 + 0.1)
        assert fresh.live.on_unreachable(fresh.seq(pos), T0 + 1.0) == UNREACHABLE_NOTED, pos
        assert fresh.count.icmp_errors == 1


def test_the_first_error_with_nothing_in_flight_arms_a_confirming_probe() -> None:
    """One error may be a passing fault (RFC 5927 section 4.1, RFC 1122 4.2.3.9: port
    unreachable is taken as soft until confirmed): it is noted and one more datagram goes an
    RTO later to see whether it repeats."""
    s = Stack()
    s.dl.keepalive = T0 + 15.0
    assert s.live.on_unreachable(s.seq(1), T0 + 2.0) == UNREACHABLE_NOTED
    assert s.live.unreachable_at == T0 + 2.0
    assert s.live.confirm_unreachable
    assert s.dl.keepalive == T0 + 3.0  # RTO 1 s
    assert not s.control.send_probe  # asked for by the keepalive timer, not at once
    assert s.count.icmp_errors == 1


def test_the_confirming_probe_never_moves_an_earlier_keepalive_later() -> None:
    """The keepalive deadline only moves earlier, and waits at least rto_min_s."""
    s = Stack()
    s.dl.keepalive = T0 + 2.5
    assert s.live.on_unreachable(s.seq(1), T0 + 2.0) == UNREACHABLE_NOTED
    assert s.dl.keepalive == T0 + 2.5
    quick = Stack()
    for _ in range(20):
        quick.loss.rtt.on_sample(0.010)
    assert quick.loss.rtt.rto == pytest.approx(0.21)  # SRTT + rto_min_s
    quick.live.on_unreachable(quick.seq(1), T0 + 2.0)
    assert quick.dl.keepalive == pytest.approx(T0 + 2.21)


def test_with_data_in_flight_the_retransmission_confirms_instead() -> None:
    """Data in flight will be retransmitted anyway: no extra probe is asked for."""
    s = Stack(sent=2000)
    keepalive = s.dl.keepalive
    assert s.live.on_unreachable(s.seq(1), T0 + 0.5) == UNREACHABLE_NOTED
    assert not s.live.confirm_unreachable
    assert s.dl.keepalive == keepalive
    assert s.live.unreachable_at == T0 + 0.5


def test_a_repeat_within_rto_min_is_the_same_round_and_a_later_one_confirms() -> None:
    """Errors for the same burst of datagrams arrive together; only a repeat at least
    rto_min_s later, with nothing heard from the peer in between, confirms it."""
    s = Stack()
    assert s.live.on_unreachable(s.seq(1), T0 + 1.0) == UNREACHABLE_NOTED
    assert s.live.on_unreachable(s.seq(1), T0 + 1.1) == UNREACHABLE_NOTED
    assert s.live.unreachable_at == T0 + 1.0  # the first one still counts from when it came
    assert s.live.on_unreachable(s.seq(0), T0 + 1.2) == UNREACHABLE_CONFIRMED
    assert s.count.icmp_errors == 3


def test_hearing_from_the_peer_in_between_starts_over() -> None:
    """The peer answered after the first error: it is alive, so a later error is a new
    first one, noted and probed again."""
    s = Stack()
    s.live.on_unreachable(s.seq(1), T0 + 1.0)
    s.live.confirm_unreachable = False  # the probe went out
    s.live.heard(T0 + 1.5)
    assert s.live.on_unreachable(s.seq(1), T0 + 5.0) == UNREACHABLE_NOTED
    assert s.live.unreachable_at == T0 + 5.0
    assert s.live.confirm_unreachable
    assert s.live.on_unreachable(s.seq(1), T0 + 5.2) == UNREACHABLE_CONFIRMED


# ---------------------------------------------------------------- ReceiveSide.pause/resume


def test_pause_takes_back_queued_data_and_resume_delivers_it_first() -> None:
    """Data queued as events but not yet read comes back into ``held`` (the window shrinks
    by it); resume hands everything held over as one event, in order."""
    s = Stack()
    s.rcv.take(1, b"a" * 300, False, T0)
    s.rcv.take(301, b"b" * 200, False, T0)
    assert len(s.events) == 2
    s.rcv.pause()
    assert s.rcv.reading_paused
    assert s.events == deque()
    assert s.rcv.held.tobytes() == b"a" * 300 + b"b" * 200
    assert s.rcv.window() == BUFFER - 500
    s.rcv.take(501, b"c" * 100, False, T0 + 0.1)  # arrives while paused: held behind
    assert s.events == deque()
    s.rcv.resume()
    assert not s.rcv.reading_paused
    # Handed back as one piece: together they are under RESUME_PIECE_BYTES.
    assert list(s.events) == [DataReceived(b"a" * 300 + b"b" * 200 + b"c" * 100)]
    assert not s.rcv.held
    assert s.rcv.window() == BUFFER


@pytest.mark.parametrize("other", [EofReceived(), ConnectionEstablished()])
def test_pause_leaves_the_queue_alone_when_other_events_are_in_it(other: Event) -> None:
    """Moving data back past another event would reorder what the application sees."""
    s = Stack()
    s.events.append(other)
    s.rcv.take(1, b"a" * 300, False, T0)
    s.rcv.pause()
    assert s.rcv.reading_paused
    assert list(s.events) == [other, DataReceived(b"a" * 300)]
    assert not s.rcv.held
    assert s.rcv.window() == BUFFER


def test_pause_takes_back_the_eof_queued_behind_data_to_come_after_it_again() -> None:
    """Data and the FIN in one segment queue DataReceived and EofReceived: a pause in the
    middle takes both back (a paused asyncio transport reports neither); the EOF comes
    again only after the data once reading resumes.  The EOF used to stay queued and reach
    the paused reader."""
    s = Stack()
    s.rcv.take(1, b"a" * 300, False, T0)
    s.events.append(EofReceived())
    s.rcv.eof_delivered = True
    assert s.rcv.pause() is False  # no orderly close behind it to report again
    assert s.events == deque()
    assert not s.rcv.eof_delivered
    assert s.rcv.held.tobytes() == b"a" * 300


def test_pause_takes_back_an_orderly_close_behind_the_eof() -> None:
    s = Stack()
    s.rcv.take(1, b"a" * 300, False, T0)
    s.events.extend([EofReceived(), ConnectionClosed(CloseReason.CLOSED)])
    s.rcv.eof_delivered = True
    assert s.rcv.pause() is True  # the connection reports the close again after the EOF
    assert s.events == deque()
    assert not s.rcv.eof_delivered


def test_pause_leaves_a_reset_behind_the_eof_alone() -> None:
    s = Stack()
    s.rcv.take(1, b"a" * 300, False, T0)
    s.events.extend([EofReceived(), ConnectionClosed(CloseReason.RESET)])
    s.rcv.eof_delivered = True
    assert s.rcv.pause() is False
    assert len(s.events) == 3
    assert s.rcv.eof_delivered


def test_unread_bytes_come_before_what_pause_took_back() -> None:
    """A buffered reader that paused part way through a piece gives the rest back: it comes
    first on resume, before the data the pause took back from the queue."""
    s = Stack()
    s.rcv.take(1, b"a" * 300, False, T0)
    s.rcv.take(301, b"b" * 200, False, T0)
    first = s.events.popleft()
    assert first == DataReceived(b"a" * 300)
    s.rcv.pause()
    s.rcv.unread(b"a" * 100)  # 200 of the 300 went into the reader's buffer
    s.rcv.resume()
    assert list(s.events) == [DataReceived(b"a" * 100 + b"b" * 200)]


def test_resume_with_nothing_held_queues_nothing() -> None:
    s = Stack()
    s.rcv.pause()
    s.rcv.resume()
    assert s.events == deque()
    assert not s.rcv.reading_paused


# ---------------------------------------------------------------- LossRecovery.on_ack


def test_an_ack_of_new_data_advances_snd_una() -> None:
    s = Stack(sent=3000)
    s.loss.dupacks = 2
    s.loss.on_ack(s.ack(2001), 2001, T0 + 0.1)
    assert s.snd.una == 2001
    assert s.loss.dupacks == 0
    assert s.count.dupack_count == 0


def test_a_duplicate_ack_is_counted() -> None:
    """RFC 5681 section 2: same ACK, no data, no SYN/FIN, data outstanding, same window
    (compared after scaling, RFC 7323)."""
    s = Stack(sent=3000)
    s.snd.wscale = 3
    s.snd.wnd = 64_000
    s.loss.on_ack(s.ack(1, window=8000), 1, T0 + 0.1)
    assert (s.loss.dupacks, s.count.dupack_count) == (1, 1)
    assert s.snd.una == 1


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"window": 32_000}, id="window-changed"),
        pytest.param({"payload": b"d"}, id="carries-data"),
        pytest.param({"flags": ACK | int(Flag.FIN)}, id="fin"),
        pytest.param({"flags": ACK | int(Flag.SYN)}, id="syn"),
        pytest.param({"probe": 4}, id="pmtu-probe"),
        pytest.param({"probe_ack": 4}, id="pmtu-probe-answer"),
    ],
)
def test_what_is_not_a_duplicate_ack(fields: dict[str, Any]) -> None:
    """RFC 5681 section 2: a window update or a segment carrying data, SYN or FIN is no
    duplicate ACK; neither is a PMTU probe or its answer, which say nothing about our data."""
    s = Stack(sent=3000)
    s.loss.on_ack(s.ack(1, **fields), 1, T0 + 0.1)
    assert (s.loss.dupacks, s.count.dupack_count) == (0, 0)
    assert s.snd.una == 1


def test_no_duplicate_ack_without_data_outstanding_nor_for_an_old_ack() -> None:
    """RFC 5681 section 2 (b): the receiver of a duplicate ACK has outstanding data; an ACK
    below SND.UNA is simply old."""
    idle = Stack()
    idle.loss.on_ack(idle.ack(1), 1, T0 + 0.1)
    assert idle.count.dupack_count == 0
    s = Stack(sent=3000)
    s.loss.on_new_ack(2001, T0 + 0.1)
    s.loss.on_ack(s.ack(1001), 1001, T0 + 0.2)
    assert (s.snd.una, s.loss.dupacks, s.count.dupack_count) == (2001, 0, 0)


def test_sack_blocks_alone_can_start_recovery() -> None:
    """RFC 6675 section 5: a window update (no duplicate ACK) whose SACK blocks show more
    than (DupThresh - 1) * SMSS above the first segment declares it lost."""
    s = Stack(sent=5000)
    s.opts.sack_ok = True
    blocks = ((s.seq(1001), s.seq(5001)),)
    s.loss.on_ack(s.ack(1, window=32_000, sack_blocks=blocks), 1, T0 + 0.1)
    assert s.count.dupack_count == 0
    assert s.loss.in_recovery
    first = s.loss.scoreboard.first()
    assert first is not None and first.start == 1 and first.lost
    off = Stack(sent=5000)  # SACK not negotiated: the blocks are ignored
    off.loss.on_ack(off.ack(1, window=32_000, sack_blocks=blocks), 1, T0 + 0.1)
    assert not off.loss.in_recovery
    assert off.loss.scoreboard.pipe == 5000


# ---------------------------------------------------------------- Sender.update_window


def test_a_reopened_window_stops_the_window_probes() -> None:
    """RFC 9293 section 3.8.6.1: probing stops once the window opens; the backoff restarts."""
    s = Stack()
    s.snd.buf.write(b"w" * 500)
    s.snd.wnd = 0
    s.sender.send_data([], T0)
    assert s.dl.persist == T0 + 1.0
    s.snd.persist_backoff = 3
    s.sender.update_window(s.ack(1, window=4000), 1, 1, True)
    assert s.snd.wnd == 4000
    assert s.dl.persist is None
    assert s.snd.persist_backoff == 0


def test_a_window_that_was_open_leaves_the_persist_deadline_alone() -> None:
    """Only a zero window reopening counts: a still-closed update changes nothing."""
    s = Stack()
    s.snd.buf.write(b"w" * 500)
    s.snd.wnd = 0
    s.sender.send_data([], T0)
    s.sender.update_window(s.ack(1, window=0), 1, 1, True)
    assert s.dl.persist == T0 + 1.0
    stale = Stack()
    stale.dl.persist = T0 + 1.0
    stale.snd.wnd = 0
    stale.snd.wl1 = 5  # a newer segment already updated the window
    stale.sender.update_window(stale.ack(1, window=4000), 1, 1, True)
    assert (stale.snd.wnd, stale.dl.persist) == (0, T0 + 1.0)


def test_a_peer_answering_a_closed_window_is_not_unanswered() -> None:
    """A probe answered with a zero window shows the peer alive, only not reading: its
    probes are not counted against max_retransmits - once synchronized, with nothing in
    flight."""
    s = Stack()
    s.snd.buf.write(b"w" * 500)
    s.snd.wnd = 0
    s.snd.persist_probes = 4
    s.sender.update_window(s.ack(1, window=0), 1, 1, False)
    assert s.snd.persist_probes == 4  # not synchronized
    s.sender.update_window(s.ack(1, window=0), 1, 1, True)
    assert s.snd.persist_probes == 0
    busy = Stack(sent=1000)
    busy.snd.buf.write(b"w" * 500)
    busy.snd.persist_probes = 4
    busy.sender.update_window(busy.ack(1, window=0), 1, 1, True)
    assert busy.snd.wnd == 0
    assert busy.snd.persist_probes == 4  # data in flight: the RTO covers it
