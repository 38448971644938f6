"""What one ``datagrams_to_send`` emits (utcp/connection/transmit.py, ``Transmit.poll``): the
order of the datagrams (stray RSTs, our RST, the SYN, data, the answer to a PMTU probe, a
window or keepalive probe, the ACK owed, our PMTU probe), the fast idle path, the keepalive and
idle timers it arms, and the time it charges to what held the sender back.  Every datagram is
decoded to check its flags, sequence and acknowledgement numbers."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.liveness import Liveness
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.pacer import Pacer
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.sender import Sender
from utcp.connection.stats import LIMITED_BY_APPLICATION, SenderLimits, snapshot
from utcp.connection.tracepoints import TracePoints
from utcp.connection.transmit import Transmit
from utcp.events import Event
from utcp.log import get_logger
from utcp.packet import Flag, Packet, decode, encode
from utcp.pmtud import Pmtud
from utcp.state import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    ConnectionState,
)
from utcp.trace import ListTracer

MSS = 1000
ISS = 4_000_000
IRS = 70_000
LOCAL_CID, PEER_CID = 0xA, 0xB
CONFIG = Config(
    mss_bytes=MSS,
    pmtud=False,
    fast_paths=True,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    initial_cwnd_segments=10,
    keepalive_idle_s=15.0,
    keepalive_stall_s=1.0,
    idle_timeout_s=30.0,
).validate()
T0 = 10.0

ACK = int(Flag.ACK)
SYN = int(Flag.SYN)
RST = int(Flag.RST)
FIN = int(Flag.FIN)


class Stack:
    """Every part ``Transmit`` reads, synchronized (both SYNs acknowledged) unless told."""

    def __init__(self, config: Config = CONFIG, *, synced: bool = True, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="transmit")
        self.snd = snd = SendSide(iss=ISS, mss=MSS)
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = IRS
        if synced:
            snd.una = snd.nxt = snd.max = 1
            snd.wnd = snd.max_wnd = 1 << 20
            snd.peer_mss = MSS
            self.rcv.nxt = 1
        self.opts = Negotiated(config)
        self.control = Control()
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
            local_cid=LOCAL_CID,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=self.trace,
        )
        self.seg.peer_cid = PEER_CID
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
        self.limits = SenderLimits()
        self.tx = Transmit(
            config,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            loss=self.loss,
            segments=self.seg,
            sender=self.sender,
            control=self.control,
            liveness=self.live,
            limits=self.limits,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            pmtud=self.pm,
        )
        if synced:
            self.live.heard(T0)

    def poll(self, now: float, st: ConnectionState = ESTABLISHED) -> list[Packet]:
        return [decode(raw) for raw in self.tx.poll(now, st)]

    def seq(self, pos: int) -> int:
        return self.snd.wire_seq(pos)

    def ack(self) -> int:
        return self.rcv.wire_ack(self.rcv.nxt)


def stray_rst(seq: int) -> bytes:
    """An RST built for a stray packet, as the connection queues it."""
    return encode(Packet(RST, LOCAL_CID, 0x99, seq, 0, 0))


def test_stray_resets_go_first_then_ours() -> None:
    """Resets answering stray packets were built as they arrived and go first; our own RST
    (at SND.NXT, carrying the current ACK, which settles the ACK owed) follows.  Each goes
    out once."""
    s = Stack()
    raws = [stray_rst(111), stray_rst(222)]
    s.control.pending_raw = list(raws)
    s.control.need_rst = True
    s.rcv.ack_now = True
    out = s.tx.poll(T0, ESTABLISHED)
    assert out[:2] == raws
    rst = decode(out[2])
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, s.seq(1), s.ack())
    assert len(out) == 3  # the RST carried the ACK owed
    assert s.control.pending_raw == [] and not s.control.need_rst
    assert s.tx.poll(T0 + 0.1, ESTABLISHED) == []


@pytest.mark.parametrize("st", [CLOSED, LISTEN])
def test_closed_and_listen_send_only_resets(st: ConnectionState) -> None:
    """Nothing but resets leaves an unsynchronized, unopened connection; a SYN owed stays
    owed and no timer is armed."""
    s = Stack(synced=False)
    s.control.pending_raw = [stray_rst(5)]
    s.control.need_rst = True
    s.control.need_syn = True
    out = s.poll(T0, st)
    assert [p.flags for p in out] == [RST, RST | ACK]
    assert s.control.need_syn
    assert (s.dl.rto, s.dl.keepalive, s.dl.idle) == (None, None, None)


def test_syn_sent_returns_right_after_the_syn() -> None:
    """RFC 9293 section 3.10.1: an active OPEN sends <SEQ=ISS><CTL=SYN>; nothing else may
    follow it (no ACK exists yet), and its retransmission timer starts."""
    s = Stack(synced=False)
    s.control.need_syn = True
    s.control.send_probe = True
    s.rcv.ack_now = True
    [p] = s.poll(T0, SYN_SENT)
    assert (p.flags, p.seq, p.ack, p.dst_cid) == (SYN, ISS, 0, PEER_CID)
    assert p.mss == MSS
    assert (s.snd.nxt, s.snd.max) == (1, 1)
    assert s.dl.rto == T0 + 1.0
    assert s.control.syn_sent_at == T0
    assert s.count.segments_sent == 1
    assert not s.control.need_syn
    assert s.control.send_probe  # left for a synchronized state
    assert s.dl.keepalive is None and s.dl.idle is None


def test_a_syn_ack_answers_in_syn_received_and_a_resend_keeps_the_first_time() -> None:
    """RFC 9293 section 3.10.7.2: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>; the RTT sample is
    taken from the first SYN-ACK only (``syn_sent_at`` is not moved by a retransmission)."""
    s = Stack(synced=False)
    s.rcv.nxt = 1
    s.control.need_syn = True
    [p] = s.poll(T0, SYN_RECEIVED)
    assert (p.flags, p.seq, p.ack) == (SYN | ACK, ISS, IRS + 1)
    assert s.control.syn_sent_at == T0
    s.control.need_syn = True
    s.control.syn_retries = 1
    s.snd.buf.write(b"x" * 100)  # data waits for the SYN to be acknowledged
    [again] = s.poll(T0 + 1.0, SYN_RECEIVED)
    assert again.flags == SYN | ACK
    assert s.control.syn_sent_at == T0
    assert s.dl.rto == T0 + 2.0
    assert s.dl.keepalive is None  # not synchronized: no keepalive yet


def test_data_then_probe_answer_then_window_probe_then_our_pmtu_probe() -> None:
    """The order of a busy call: new data (carrying the ACK owed), the answer to the peer's
    PMTU probe on a pure ACK, a probe at SND.UNA - 1, and last our PMTU probe, the datagram
    most likely to be dropped (RFC 8899 section 4.1: probes are separate datagrams)."""
    s = Stack(pmtud=True)
    s.opts.pmtud_ok = True
    assert s.pm is not None
    s.pm.start(ceiling=1452, now=T0)
    s.snd.buf.write(b"d" * 1500)
    s.rcv.ack_now = True
    s.control.probe_ack_id = 42
    s.control.send_probe = True
    out = s.poll(T0)
    got = [(p.flags, p.seq, len(p.payload), p.probe_ack, p.probe) for p in out]
    assert got == [
        (ACK, s.seq(1), 1000, None, None),
        (ACK, s.seq(1001), 500, None, None),
        (ACK, s.seq(1501), 0, 42, None),
        (ACK, s.seq(0), 0, None, None),
        (ACK, s.seq(1501), 0, None, 1),
    ]
    assert all(p.ack == s.ack() for p in out)
    assert s.control.probe_ack_id is None and not s.control.send_probe
    assert s.count.segments_sent == 5


def test_the_probe_keeps_an_ack_owed_and_the_ack_follows_it() -> None:
    """A probe with an old sequence number is unacceptable to the peer (RFC 9293 section
    3.10.7.4), which drops it after answering: it cannot stand in for the ACK we owe, which
    goes out after it at SND.NXT."""
    s = Stack()
    s.rcv.ack_now = True
    s.control.send_probe = True
    out = s.poll(T0)
    assert [(p.flags, p.seq, p.ack) for p in out] == [
        (ACK, s.seq(0), s.ack()),
        (ACK, s.seq(1), s.ack()),
    ]
    assert not s.rcv.ack_now
    alone = Stack()
    alone.control.send_probe = True
    [probe] = alone.poll(T0)
    assert probe.seq == alone.seq(0)
    assert not alone.rcv.ack_now
    assert alone.count.segments_sent == 1


def test_the_probe_does_not_settle_a_delayed_ack_owed() -> None:
    """As above, for an ACK owed by the delayed-ACK deadline (RFC 9293 section 3.8.6.3):
    after the probe the ACK is still owed (or went out with it)."""
    s = Stack()
    s.rcv.take_next(b"r" * 100, T0)  # one small segment: ACK delayed to T0 + 0.04
    assert s.dl.ack == pytest.approx(T0 + 0.040) and not s.rcv.ack_now
    s.control.send_probe = True
    out = s.poll(T0 + 0.01)
    acked_at_nxt = any(p.seq == s.seq(1) and p.ack == s.ack() for p in out)
    assert acked_at_nxt or s.dl.ack == pytest.approx(T0 + 0.040)


def test_a_pmtu_probe_answer_is_a_pure_ack_that_settles_the_ack_owed() -> None:
    """The PROBE_ACK answer carries the current ACK and window, so no second ACK follows."""
    s = Stack()
    s.rcv.ack_now = True
    s.control.probe_ack_id = 7
    [p] = s.poll(T0)
    assert (p.flags, p.seq, p.ack, p.probe_ack, bytes(p.payload)) == (
        ACK,
        s.seq(1),
        s.ack(),
        7,
        b"",
    )
    assert not s.rcv.ack_now and s.control.probe_ack_id is None


@pytest.mark.parametrize(
    ("st", "sent"),
    # CLOSING: both FINs crossed with our data still queued (our FIN not sent yet).
    [(ESTABLISHED, True), (CLOSE_WAIT, True), (CLOSING, True), (FIN_WAIT_2, False)],
)
def test_our_pmtu_probe_goes_only_while_we_may_still_send(st: ConnectionState, sent: bool) -> None:
    """A probe is sent at SND.NXT in a state where our direction is open (RFC 8899 probes
    need traffic to make bigger), of the size path MTU discovery asks for."""
    s = Stack(pmtud=True)
    s.opts.pmtud_ok = True
    s.tx.probe_worthy = True
    assert s.pm is not None
    s.pm.start(ceiling=1452, now=T0)
    out = s.tx.poll(T0, st)
    if sent:
        [raw] = out
        p = decode(raw)
        assert (p.flags, p.seq, p.probe) == (ACK, s.seq(1), 1)
        assert len(raw) == 1200  # the base size confirmed first (RFC 8899 section 5.2)
        assert not s.pm.probe_due
    else:
        assert out == []
        assert s.pm.probe_due


def test_no_pmtu_probe_into_a_closed_window_or_before_it_is_worth_it() -> None:
    """RFC 9293 section 3.10.7.4: a zero-length segment at SND.NXT is acceptable only inside
    the peer's window; and a connection with less than one segment queued has nothing to
    gain from a larger size."""
    s = Stack(pmtud=True)
    s.opts.pmtud_ok = True
    assert s.pm is not None
    s.pm.start(ceiling=1452, now=T0)
    assert s.tx.poll(T0, ESTABLISHED) == []  # not worth it yet
    assert not s.tx.probe_worthy
    s.snd.buf.write(b"w" * (MSS + 1))  # more than one segment queued: worth it from now on
    s.snd.wnd = 0
    out = s.poll(T0 + 0.1)
    assert s.tx.probe_worthy
    assert all(p.probe is None for p in out)
    assert s.pm.probe_due


def test_an_idle_connection_takes_the_fast_idle_path() -> None:
    """After a delivery with nothing more to send the sender stays limited by the
    application: ``poll`` returns nothing, counts ``fast_idle`` and charges the time to the
    application without rebuilding anything."""
    s = Stack()
    s.snd.buf.write(b"q" * 300)
    [req] = s.poll(T0)
    assert len(req.payload) == 300
    assert s.limits.limit == LIMITED_BY_APPLICATION
    keepalive, idle = s.dl.keepalive, s.dl.idle
    assert (keepalive, idle) == (T0 + 15.0, T0 + 30.0)
    assert s.tx.poll(T0 + 0.5, ESTABLISHED) == []
    assert s.count.fast_idle == 1
    assert s.limits.since == T0 + 0.5
    assert s.tx.poll(T0 + 0.75, CLOSE_WAIT) == []
    assert s.count.fast_idle == 2
    assert (s.dl.keepalive, s.dl.idle) == (keepalive, idle)
    st = snapshot(
        state=ESTABLISHED,
        count=s.count,
        snd=s.snd,
        rcv=s.rcv,
        opts=s.opts,
        loss=s.loss,
        pmtud=s.pm,
        limits=s.limits,
        pacing_rate=0.0,
    )
    assert st.time_limited_by_application_s == 0.75
    assert s.count.segments_sent == 1


def _something_due(s: Stack, what: str) -> ConnectionState:
    """Make ``what`` due on an idle stack; the state to poll in."""
    if what == "ack":
        s.rcv.ack_now = True
    elif what == "probe":
        s.control.send_probe = True
    elif what == "rst":
        s.control.need_rst = True
    elif what == "raw":
        s.control.pending_raw = [stray_rst(1)]
    elif what == "probe_ack":
        s.control.probe_ack_id = 3
    elif what == "data":
        s.snd.buf.write(b"n" * 10)
    elif what == "fin":
        s.snd.fin_pos = s.snd.buf.end
        return FIN_WAIT_1
    elif what == "lost":
        s.loss.scoreboard.mark_lost(s.loss.scoreboard.segs[0])
    elif what == "persist":
        s.dl.persist = T0 + 5.0
    elif what == "keepalive":
        s.dl.keepalive = None
    elif what == "idle":
        s.dl.idle = None
    elif what == "tracer":
        s.trace.tracer = ListTracer()
    elif what == "state":
        return FIN_WAIT_2
    return ESTABLISHED


@pytest.mark.parametrize(
    "what",
    [
        "ack",
        "probe",
        "rst",
        "raw",
        "probe_ack",
        "data",
        "fin",
        "lost",
        "persist",
        "keepalive",
        "idle",
        "tracer",
        "state",
    ],
)
def test_the_fast_idle_path_is_not_taken_when_anything_is_due(what: str) -> None:
    """``_nothing_due``: any control segment, ACK, data, FIN, retransmission or timer to arm,
    a tracer, or a state other than ESTABLISHED and CLOSE_WAIT sends the call down the
    general path."""
    s = Stack()
    s.snd.buf.write(b"q" * 300)
    s.poll(T0)
    assert s.limits.limit == LIMITED_BY_APPLICATION
    st = _something_due(s, what)
    s.tx.poll(T0 + 0.5, st)
    assert s.count.fast_idle == 0
    if what in ("keepalive", "idle"):  # the general path arms what was missing
        assert (s.dl.keepalive, s.dl.idle) == (T0 + 15.0, T0 + 30.0)


def test_no_fast_idle_path_without_fast_paths_or_with_the_sender_otherwise_limited() -> None:
    """``Config.fast_paths`` off, or a sender not limited by the application, never skips."""
    slow = Stack(fast_paths=False)
    slow.snd.buf.write(b"q" * 300)
    slow.poll(T0)
    assert slow.tx.poll(T0 + 0.5, ESTABLISHED) == []
    assert slow.count.fast_idle == 0
    fresh = Stack()  # nothing sent yet: not limited by the application
    assert fresh.tx.poll(T0, ESTABLISHED) == []
    assert fresh.count.fast_idle == 0


@pytest.mark.parametrize(
    ("st", "keepalive"),
    [
        (ESTABLISHED, T0 + 3.0),  # the stall probe: max(keepalive_stall_s, 3 RTO) after
        (FIN_WAIT_2, T0 + 3.0),
        (CLOSE_WAIT, T0 + 15.0),  # nothing more to receive: no stall probe
        (LAST_ACK, T0 + 15.0),
        (TIME_WAIT, None),
        (SYN_RECEIVED, None),
    ],
)
def test_keepalive_and_idle_timers_are_armed_in_synchronized_states_only(
    st: ConnectionState, keepalive: float | None
) -> None:
    """RFC 9293 section 3.8.4: keepalives concern a synchronized connection; TIME_WAIT only
    waits out 2 MSL and a half-open SYN_RECEIVED has its own timer."""
    s = Stack()
    s.rcv.peer_mid_stream = True
    s.tx.poll(T0 + 0.5, st)
    assert s.dl.keepalive == keepalive
    assert s.dl.idle == (None if keepalive is None else T0 + 30.0)


def test_the_time_since_the_last_call_is_charged_to_what_held_the_sender_back() -> None:
    """Linux's tcpi_rwnd_limited and friends: data waiting behind the peer's window is the
    receiver's time; behind the congestion window, congestion's."""
    s = Stack()
    s.snd.wnd = 2000
    s.snd.buf.write(b"z" * 30_000)
    assert [len(p.payload) for p in s.poll(T0)] == [1000, 1000]
    s.snd.wnd = 1 << 20  # the peer opened its window: cwnd (10 segments) limits next
    sent = s.poll(T0 + 0.25)
    assert len(sent) == 8
    s.poll(T0 + 1.0)
    st = snapshot(
        state=ESTABLISHED,
        count=s.count,
        snd=s.snd,
        rcv=s.rcv,
        opts=s.opts,
        loss=s.loss,
        pmtud=s.pm,
        limits=s.limits,
        pacing_rate=0.0,
    )
    assert st.time_limited_by_receiver_s == 0.25
    assert st.time_limited_by_congestion_s == 0.75
    assert st.time_limited_by_application_s == 0.0


def test_timestamps_use_the_time_of_the_call() -> None:
    """RFC 7323 section 3: TSval from our clock (``now`` in ms), TSecr the peer's latest."""
    s = Stack()
    s.opts.ts_ok = True
    s.opts.ts_recent = 999
    s.rcv.ack_now = True
    [p] = s.poll(12.345)
    assert p.timestamps == (12345, 999)
