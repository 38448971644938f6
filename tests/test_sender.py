"""The send loop (utcp/connection/sender.py): retransmissions first within the congestion
window, new data within both windows, sender silly-window avoidance, the FIN, the persist
deadline, and the MSS following path MTU discovery; and what held the sender back
(``SenderLimits`` in utcp/connection/stats.py)."""

from __future__ import annotations

from collections import deque
from typing import Any

from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.pacer import Pacer
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.sender import Sender
from utcp.connection.stats import ConnectionStats, SenderLimits, snapshot
from utcp.connection.tracepoints import TracePoints
from utcp.events import Event
from utcp.log import get_logger
from utcp.packet import Flag, Packet, decode
from utcp.pmtud import Pmtud, PmtudState
from utcp.state import ESTABLISHED, FIN_WAIT_1, ConnectionState
from utcp.trace import ListTracer

MSS = 1000
ISS = 3_000_000
CONFIG = Config(
    mss_bytes=MSS,
    pmtud=False,
    fast_paths=False,
    rto_initial_s=1.0,
    rto_max_s=60.0,
    initial_cwnd_segments=10,
).validate()


class Stack:
    """A sender of an established connection whose peer offers a 1 MiB window."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="sender")
        self.snd = snd = SendSide(iss=ISS, mss=MSS)
        snd.una = snd.nxt = snd.max = 1
        snd.wnd = snd.max_wnd = 1 << 20
        snd.peer_mss = MSS
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = 99
        self.rcv.nxt = 1
        self.opts = Negotiated(config)
        self.trace = TracePoints()
        self.loss = LossRecovery(
            config,
            snd=snd,
            opts=self.opts,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            log=log,
        )
        self.pm = Pmtud(base_bytes=config.base_datagram_bytes, log=log) if config.pmtud else None
        self.seg = Segments(
            config,
            local_cid=1,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=self.trace,
        )
        self.pacer = Pacer(enabled=config.pacing != "off", default_rate=config.pacing == "on")
        self.sender = Sender(
            config,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            loss=self.loss,
            segments=self.seg,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            pmtud=self.pm,
            pacer=self.pacer,
            log=log,
        )

    def write(self, n: int) -> bytes:
        data = bytes(i % 251 for i in range(len(self.snd.buf), len(self.snd.buf) + n))
        self.snd.buf.write(data)
        return data

    def send(self, now: float) -> list[Packet]:
        out: list[bytes] = []
        self.sender.send_data(out, now)
        return [decode(raw) for raw in out]

    def pos(self, p: Packet) -> int:
        return self.snd.position(p.seq)


def test_new_data_goes_out_in_mss_segments_up_to_the_congestion_window() -> None:
    """RFC 5681 section 3.1: at most cwnd bytes in flight (IW = 10 segments here)."""
    s = Stack()
    data = s.write(15_000)
    sent = s.send(now=2.0)
    assert [s.pos(p) for p in sent] == [1 + i * MSS for i in range(10)]
    assert all(p.flags == Flag.ACK for p in sent)
    assert b"".join(bytes(p.payload) for p in sent) == data[:10_000]
    assert (s.snd.nxt, s.snd.max) == (10_001, 10_001)
    assert s.loss.scoreboard.pipe == 10_000
    assert (s.count.bytes_sent, s.count.segments_sent) == (10_000, 10)
    assert s.dl.rto == 3.0
    assert s.send(now=2.1) == []  # the window is full


def test_new_data_stays_within_the_peer_window_and_avoids_silly_segments() -> None:
    """RFC 9293 section 3.8.6.2.1: with data in flight, a segment smaller than both the MSS
    and half the largest window ever offered waits (the 500 bytes left of a 3500-byte
    window)."""
    s = Stack()
    s.snd.wnd = s.snd.max_wnd = 3500
    s.write(10_000)
    sent = s.send(now=0.0)
    assert [len(p.payload) for p in sent] == [MSS] * 3
    assert s.snd.nxt == 3001


def test_a_segment_of_half_the_largest_window_goes_with_data_in_flight() -> None:
    """RFC 9293 section 3.8.6.2.1: send when at least Fs = 1/2 of the largest window the
    peer ever offered can go, even below the MSS."""
    s = Stack()
    s.write(300)
    s.send(now=0.0)
    s.snd.wnd = s.snd.max_wnd = 1000
    s.write(2000)
    sent = s.send(now=0.1)
    assert [(s.pos(p), len(p.payload)) for p in sent] == [(301, 700)]
    assert s.snd.nxt == 1001


def test_the_last_short_piece_of_data_is_sent() -> None:
    """SWS avoidance holds a small segment only while more data waits behind it."""
    s = Stack()
    s.write(3500)
    assert [len(p.payload) for p in s.send(now=0.0)] == [MSS, MSS, MSS, 500]


def test_a_small_window_is_used_when_nothing_is_in_flight() -> None:
    """With nothing outstanding the small segment goes (it is the only way to make
    progress; RFC 9293 section 3.8.6.2.1 allows it once the override timer would)."""
    s = Stack()
    s.snd.wnd = 500
    s.write(3000)
    sent = s.send(now=0.0)
    assert [len(p.payload) for p in sent] == [500]
    assert s.snd.nxt == 501


def test_retransmissions_go_first() -> None:
    """RFC 6675 section 5 (NextSeg rule 1): lost segments before new data."""
    s = Stack()
    s.write(5000)
    s.send(now=0.0)
    lost = s.loss.scoreboard.segs[2]
    s.loss.scoreboard.mark_lost(lost)
    s.write(10_000)
    sent = s.send(now=0.5)
    assert [s.pos(p) for p in sent] == [2001] + [5001 + i * MSS for i in range(5)]
    assert lost.retx == 1 and lost.sent_at == 0.5
    assert (s.count.retx, s.count.bytes_retx) == (1, MSS)
    assert s.loss.scoreboard.pipe == 10_000


def test_a_retransmission_waits_for_room_in_cwnd_unless_it_is_the_fast_retransmit() -> None:
    """RFC 6675 section 5 step 4: retransmit only while cwnd - pipe >= 1 SMSS; RFC 5681
    section 3.2 step 4: the fast retransmit itself goes at once."""
    s = Stack()
    s.write(10_000)
    s.send(now=0.0)
    sb = s.loss.scoreboard
    sb.mark_lost(sb.segs[0])
    s.loss.cc.cwnd = 9000
    assert s.send(now=0.1) == []
    s.loss.rexmit_now = True
    [p] = s.send(now=0.2)
    assert s.pos(p) == 1
    assert not s.loss.rexmit_now


def test_the_fin_rides_on_the_last_data_segment() -> None:
    s = Stack()
    s.write(2500)
    s.snd.fin_pos = s.snd.buf.end
    sent = s.send(now=0.0)
    assert [p.flags for p in sent] == [Flag.ACK, Flag.ACK, Flag.ACK | Flag.FIN]
    assert len(sent[-1].payload) == 500
    assert (s.snd.nxt, s.snd.max) == (2502, 2502)  # the FIN takes a position
    assert s.loss.scoreboard.segs[-1].end == 2502
    assert s.count.bytes_sent == 2500


def test_a_fin_alone_needs_room_in_the_window() -> None:
    s = Stack()
    s.snd.fin_pos = 1
    s.snd.wnd = 0
    assert s.send(now=0.0) == []
    assert s.dl.persist == 1.0  # the closed window is probed
    s.snd.wnd = 100
    [p] = s.send(now=0.5)
    assert (p.flags, bytes(p.payload), s.pos(p)) == (Flag.ACK | Flag.FIN, b"", 1)
    assert s.snd.nxt == 2
    assert s.dl.persist is None


def test_a_fin_after_data_that_fills_the_window_waits_for_room() -> None:
    """RFC 9293 section 3.8.6: the FIN takes a sequence number, so it too must fit in the
    peer's window.  Data ending exactly at the window's edge goes without it; the FIN follows
    once the window has room (it had ridden one past the edge, where the peer drops it, and
    only the retransmission timer resent it, until the connection timed out)."""
    s = Stack()
    s.snd.wnd = 1500
    s.write(1500)
    s.snd.fin_pos = s.snd.buf.end
    sent = s.send(now=0.0)
    assert [p.flags for p in sent] == [Flag.ACK, Flag.ACK]
    assert s.snd.nxt == 1501  # every byte, not the FIN
    s.snd.acknowledge(1501)  # all acknowledged, the window still closed: probe it
    s.loss.scoreboard.ack_to(1501, now=0.5)
    s.snd.wnd = 0
    assert s.send(now=1.0) == []
    assert s.dl.persist is not None
    s.snd.wnd = 100
    [fin] = s.send(now=2.0)
    assert (fin.flags, bytes(fin.payload), s.pos(fin)) == (Flag.ACK | Flag.FIN, b"", 1501)


def test_the_persist_deadline_backs_off_and_is_capped() -> None:
    """RFC 9293 section 3.8.6.1: a zero window with data waiting is probed on a timer that
    backs off exponentially (RFC 6298's RTO, capped at rto_max_s)."""
    s = Stack()
    s.write(100)
    s.snd.wnd = 0
    assert s.send(now=10.0) == []
    assert s.dl.persist == 11.0
    s.send(now=10.5)
    assert s.dl.persist == 11.0  # an armed deadline stays put
    s.dl.persist = None
    s.snd.persist_backoff = 3
    s.send(now=20.0)
    assert s.dl.persist == 28.0
    s.dl.persist = None
    s.snd.persist_backoff = 7
    s.send(now=30.0)
    assert s.dl.persist == 90.0  # 128 s capped at 60 s


def test_no_persist_deadline_while_data_is_in_flight() -> None:
    """The retransmission timer covers a closed window with data outstanding."""
    s = Stack()
    s.snd.wnd = 1000
    s.write(3000)
    s.send(now=0.0)
    assert s.dl.persist is None
    assert s.dl.rto == 1.0


def test_a_lone_segment_takes_the_fast_path_with_the_same_bytes() -> None:
    fast = Stack(fast_paths=True)
    slow = Stack()
    out_fast: list[bytes] = []
    out_slow: list[bytes] = []
    for s, out in ((fast, out_fast), (slow, out_slow)):
        s.write(700)
        s.dl.persist = 5.0
        s.sender.send_data(out, 1.0)
    assert out_fast == out_slow
    assert fast.count.fast_sent == 1 and slow.count.fast_sent == 0
    assert fast.snd.nxt == 701 and len(fast.loss.scoreboard) == 1
    assert fast.dl.persist is None and fast.dl.rto == 2.0
    big = Stack(fast_paths=True)
    big.write(MSS + 1)
    assert len(big.send(now=0.0)) == 2
    assert big.count.fast_sent == 0


def test_stamped_data_segments_match_fully_built_ones() -> None:
    """The header template stamped per segment gives the bytes ``encode`` would (a tracer
    makes every segment go through the full builder)."""
    plain = Stack()
    traced = Stack()
    traced.trace.tracer = ListTracer()
    outs: list[list[bytes]] = []
    for s in (plain, traced):
        s.write(4321)
        out: list[bytes] = []
        s.sender.send_data(out, 0.0)
        outs.append(out)
    assert outs[0] == outs[1]
    assert len(outs[0]) == 5


def _pmtud_stack(**changes: Any) -> tuple[Stack, Pmtud]:
    """A sender whose path MTU discovery confirmed 1452-byte datagrams (peer MSS 1400)."""
    s = Stack(pmtud=True, **changes)
    pm = s.pm
    assert pm is not None
    s.snd.peer_mss = 1400
    s.snd.mss = s.loss.cc.mss = 1176
    s.loss.cc.cwnd = 11_760
    pm.start(ceiling=1452, now=0.0)
    for now in (0.0, 0.1):
        probe = pm.next_probe(now=now, timeout_s=1.0)
        assert probe is not None
        pm.on_probe_acked(probe[0], now=now)
    assert (pm.state, pm.size) == (PmtudState.SEARCH_COMPLETE, 1452)
    return s, pm


def test_a_larger_pmtu_raises_the_mss_but_not_the_window() -> None:
    """RFC 8899 section 3: a PLPMTU update must not increase cwnd measured in bytes; the MSS
    is the smaller of the peer's and what the PLPMTU carries."""
    s, _ = _pmtud_stack()
    s.sender.apply_pmtu("probe")
    assert s.snd.mss == s.loss.cc.mss == 1400
    assert s.loss.cc.cwnd == 11_760


def test_a_smaller_pmtu_scales_the_window_down_in_proportion() -> None:
    s, pm = _pmtud_stack()
    s.sender.apply_pmtu("probe")
    assert pm.on_black_hole(1452, now=1.0)
    s.sender.apply_pmtu("black_hole")
    assert s.snd.mss == 1176
    assert s.loss.cc.cwnd == 11_760 * 1176 // 1400


def test_the_mss_leaves_room_for_timestamps() -> None:
    s, _ = _pmtud_stack()
    s.opts.ts_ok = True
    s.sender.apply_pmtu("probe")
    assert s.snd.mss == 1400 - 12


def test_a_retransmission_is_cut_to_a_smaller_mss() -> None:
    """After a black hole the old segment size is what the path drops: its retransmission
    goes in pieces of the new MSS."""
    s, pm = _pmtud_stack()
    s.sender.apply_pmtu("probe")
    data = s.write(2800)
    assert [len(p.payload) for p in s.send(now=0.0)] == [1400, 1400]
    sb = s.loss.scoreboard
    sb.mark_lost(sb.segs[0])
    pm.on_black_hole(1452, now=1.0)
    s.sender.apply_pmtu("black_hole")
    sent = s.send(now=1.0)
    assert [(s.pos(p), len(p.payload)) for p in sent] == [(1, 1176), (1177, 224)]
    assert b"".join(bytes(p.payload) for p in sent) == data[:1400]
    assert [(seg.start, seg.end, seg.retx) for seg in sb.segs] == [
        (1, 1177, 1),
        (1177, 1401, 1),
        (1401, 2801, 0),
    ]
    assert (s.count.retx, s.count.bytes_retx) == (2, 1400)


def _stats(s: Stack, limits: SenderLimits, state: ConnectionState) -> ConnectionStats:
    return snapshot(
        state=state,
        count=s.count,
        snd=s.snd,
        rcv=s.rcv,
        opts=s.opts,
        loss=s.loss,
        pmtud=s.pm,
        limits=limits,
        pacing_rate=0.0,
    )


def test_sender_limits_charge_time_to_what_held_the_sender_back() -> None:
    """Linux's tcpi_rwnd_limited and friends: the state noted at one send is charged with
    the time until the next."""
    s = Stack()
    limits = SenderLimits()
    s.write(20_000)
    s.snd.wnd = 5000
    s.send(now=0.0)
    limits.classify(0.0, snd=s.snd, loss=s.loss, state=ESTABLISHED, bytes_sent=1)
    limits.charge(0.25)  # peer window full, cwnd has room: the receiver
    limits.charge(0.5)  # charged once only
    s.snd.wnd = 1 << 20
    s.send(now=0.5)
    limits.classify(0.5, snd=s.snd, loss=s.loss, state=ESTABLISHED, bytes_sent=1)
    limits.charge(1.5)  # cwnd full: congestion
    st = _stats(s, limits, ESTABLISHED)
    assert st.time_limited_by_receiver_s == 0.25
    assert st.time_limited_by_congestion_s == 1.0
    assert st.time_limited_by_application_s == 0.0


def test_nothing_to_send_is_the_application_only_once_data_was_sent() -> None:
    s = Stack()
    limits = SenderLimits()
    limits.classify(0.0, snd=s.snd, loss=s.loss, state=ESTABLISHED, bytes_sent=0)
    limits.charge(1.0)
    limits.classify(1.0, snd=s.snd, loss=s.loss, state=FIN_WAIT_1, bytes_sent=10)
    limits.charge(2.0)  # after close(): the application can write no more
    limits.classify(2.0, snd=s.snd, loss=s.loss, state=ESTABLISHED, bytes_sent=10)
    limits.charge(2.75)
    st = _stats(s, limits, ESTABLISHED)
    assert st.time_limited_by_application_s == 0.75
    assert st.time_limited_by_receiver_s == st.time_limited_by_congestion_s == 0.0


def test_a_retransmission_waiting_for_cwnd_is_congestion() -> None:
    s = Stack()
    s.write(10_000)
    s.send(now=0.0)
    sb = s.loss.scoreboard
    sb.mark_lost(sb.segs[0])
    s.loss.cc.cwnd = 9000
    limits = SenderLimits()
    limits.classify(0.0, snd=s.snd, loss=s.loss, state=ESTABLISHED, bytes_sent=10_000)
    limits.charge(0.5)
    assert _stats(s, limits, ESTABLISHED).time_limited_by_congestion_s == 0.5


def test_retransmitted_bytes_count_payload_not_the_fin() -> None:
    s = Stack()
    s.write(500)
    s.snd.fin_pos = s.snd.buf.end
    s.send(now=0.0)
    sb = s.loss.scoreboard
    sb.mark_lost(sb.segs[0])
    [p] = s.send(now=1.0)
    assert (len(p.payload), p.flags) == (500, Flag.ACK | Flag.FIN)
    assert s.count.bytes_retx == 500


def test_retransmitted_bytes_leave_out_what_was_acknowledged() -> None:
    """A peer that trimmed a segment to its window acknowledges part of it; the resend
    carries only the rest (RFC 9293 section 3.10.7.4), and only that is counted."""
    s = Stack()
    s.write(1000)
    s.send(now=0.0)
    s.loss.on_new_ack(401, now=0.1)
    sb = s.loss.scoreboard
    first = sb.first()
    assert first is not None
    sb.mark_lost(first)
    [p] = s.send(now=1.0)
    assert (s.pos(p), len(p.payload)) == (401, 600)
    assert s.count.bytes_retx == 600
