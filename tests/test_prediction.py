"""Header prediction (utcp/connection/prediction.py, ``HeaderPrediction.receive``): the common
segment of an ESTABLISHED connection (next in order, data that fits or a new ACK, no option to
act on) is taken with exactly the effect of the general receive path; anything else is
declined with nothing changed, compared field by field on a snapshot of the parts."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import NAMES, Deadlines
from utcp.connection.liveness import Liveness
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.pacer import Pacer
from utcp.connection.prediction import HeaderPrediction
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.sender import Sender
from utcp.connection.tracepoints import TracePoints
from utcp.events import DataReceived, Event
from utcp.log import get_logger
from utcp.packet import Flag, Packet

MSS = 1000
BUFFER = 8000
ISS = 0xFFFF_FC00  # our sequence numbers wrap inside the flight
IRS = 0x7000_0000
LOCAL_CID, PEER_CID = 0xA, 0xB
CONFIG = Config(
    mss_bytes=MSS,
    recv_buffer_bytes=BUFFER,
    pmtud=False,
    delayed_ack_s=0.040,
    ack_every_segments=2,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    initial_cwnd_segments=10,
).validate()
T0 = 20.0  # our three segments went out
T1 = 20.1  # the peer's segment arrives
ACK = int(Flag.ACK)


class Stack:
    """An ESTABLISHED connection's parts: three segments (3000 bytes) in flight, the peer
    heard from at T0 and two keepalive probes unanswered (``heard`` would reset them)."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="prediction")
        self.snd = snd = SendSide(iss=ISS, mss=MSS)
        snd.una = snd.nxt = snd.max = 1
        snd.wnd = snd.max_wnd = 50_000
        snd.wl1, snd.wl2 = 0, 1
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = IRS
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
            pmtud=None,
            pacer=Pacer(enabled=config.pacing != "off", default_rate=config.pacing == "on"),
            log=log,
        )
        self.live = Liveness(
            config,
            snd=snd,
            rcv=self.rcv,
            loss=self.loss,
            control=Control(),
            deadlines=self.dl,
            counters=self.count,
            log=log,
        )
        self.hp = HeaderPrediction(
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            loss=self.loss,
            sender=self.sender,
            liveness=self.live,
        )
        snd.buf.write(b"s" * 3000)
        out: list[bytes] = []
        self.sender.send_data(out, T0)
        assert len(out) == 3 and snd.max == 3001
        self.live.heard(T0)
        self.live.keepalive_probes = 2
        self.dl.confirm = T0 + 5.0

    def segment(
        self,
        *,
        pos: int | None = None,
        ack: int = 1,
        payload: bytes = b"",
        window: int = 50_000,
        **options: Any,
    ) -> Packet:
        """The peer's ACK segment at its position ``pos`` (RCV.NXT unless given)
        acknowledging our position ``ack``."""
        seg_pos = self.rcv.nxt if pos is None else pos
        return Packet(
            ACK,
            PEER_CID,
            LOCAL_CID,
            self.rcv.wire_ack(seg_pos),
            self.snd.wire_seq(ack),
            window,
            payload,
            **options,
        )

    def general(self, p: Packet, now: float) -> None:
        """What ``Connection._rx_synchronized`` does with an acceptable ACK segment in
        ESTABLISHED, step by step through the same parts (``_rx_ack``, then ``_rx_data``)."""
        seg_pos = self.rcv.position(p.seq)
        ack_pos = self.snd.position(p.ack)
        self.live.heard(now)
        if p.timestamps is not None and self.opts.ts_ok and seg_pos <= self.rcv.nxt:
            self.opts.ts_recent = p.timestamps[0]
        self.loss.on_ack(p, ack_pos, now)
        self.sender.update_window(p, seg_pos, ack_pos, True)
        if p.payload:
            self.rcv.take(seg_pos, p.payload, False, now)


def snapshot(s: Stack) -> dict[str, Any]:
    """The public fields header prediction could touch, by part."""
    snd, rcv, loss, live, dl, count = s.snd, s.rcv, s.loss, s.live, s.dl, s.count
    sb = loss.scoreboard
    return {
        "snd": (
            snd.una,
            snd.nxt,
            snd.max,
            snd.wnd,
            snd.max_wnd,
            snd.wl1,
            snd.wl2,
            snd.persist_backoff,
            snd.persist_probes,
            len(snd.buf),
        ),
        "rcv": (
            rcv.nxt,
            rcv.held.tobytes(),
            rcv.reasm.ranges(),
            rcv.fin_pos,
            rcv.ack_now,
            rcv.unacked_bytes,
            rcv.adv_wnd,
            rcv.peer_mid_stream,
            rcv.last_pos,
        ),
        "events": list(s.events),
        "loss": (
            len(sb),
            [(seg.start, seg.end, seg.acked, seg.sacked, seg.lost, seg.retx) for seg in sb.segs],
            sb.pipe,
            loss.rtt.srtt,
            loss.rtt.rto,
            loss.cc.cwnd,
            loss.cc.ssthresh,
            loss.dupacks,
            loss.in_recovery,
            loss.tlp_sent,
            loss.timeouts_in_a_row,
            loss.oldest_unacked_since,
        ),
        "live": (live.last_activity, live.keepalive_probes),
        "ts_recent": s.opts.ts_recent,
        "deadlines": [dl.at(i) for i in range(len(NAMES))],
        "counters": (
            count.bytes_received,
            count.dupack_count,
            count.dup_segments,
            count.ooo_segments,
            count.fast_retx,
        ),
    }


def test_in_order_data_that_fits_is_taken() -> None:
    """BSD tcp_input's header prediction, data case: RCV.NXT advances, the bytes are
    delivered in order, the ACK is delayed (RFC 9293 section 3.8.6.3), the peer is heard."""
    s = Stack()
    assert s.hp.receive(s.segment(payload=b"p" * 600, window=40_000), T1)
    assert s.rcv.nxt == 601
    assert list(s.events) == [DataReceived(b"p" * 600)]
    assert s.dl.ack == pytest.approx(T1 + 0.040)
    assert not s.rcv.ack_now
    assert s.count.bytes_received == 600
    assert (s.live.last_activity, s.live.keepalive_probes, s.dl.confirm) == (T1, 0, None)
    assert s.snd.una == 1  # nothing acknowledged
    assert (s.snd.wnd, s.snd.wl1, s.snd.wl2) == (40_000, 1, 1)


def test_two_full_segments_are_acknowledged_at_once() -> None:
    """RFC 5681 section 4.2: an ACK at least every second full-sized segment."""
    s = Stack()
    assert s.hp.receive(s.segment(payload=b"a" * MSS), T1)
    assert not s.rcv.ack_now
    assert s.hp.receive(s.segment(payload=b"b" * MSS), T1 + 0.001)
    assert s.rcv.ack_now
    assert s.rcv.nxt == 2 * MSS + 1
    assert [bytes(e.data) for e in s.events if isinstance(e, DataReceived)] == [
        b"a" * MSS,
        b"b" * MSS,
    ]


def test_a_new_ack_is_taken() -> None:
    """Header prediction, ACK case: SND.UNA advances, the acknowledged bytes leave the
    scoreboard, the RTT is sampled (RFC 6298 section 2.2) and the timer restarts."""
    s = Stack()
    assert s.hp.receive(s.segment(ack=2001), T1)
    assert s.snd.una == 2001
    assert len(s.snd.buf) == 1000
    first = s.loss.scoreboard.first()
    assert len(s.loss.scoreboard) == 1
    assert first is not None and (first.start, first.end) == (2001, 3001)
    assert s.loss.scoreboard.pipe == 1000
    assert s.loss.rtt.srtt == pytest.approx(0.1)
    assert s.dl.rto == pytest.approx(T1 + s.loss.rtt.rto)
    assert s.live.last_activity == T1
    assert s.events == deque() and s.rcv.nxt == 1


def test_data_while_reading_is_paused_is_held_within_the_window() -> None:
    """A paused reader keeps data in ``held``: it fits while it stays under the buffer."""
    s = Stack()
    s.rcv.reading_paused = True
    s.rcv.held.append(b"h" * 7000)
    assert s.hp.receive(s.segment(payload=b"p" * 1000), T1)
    assert s.rcv.held.tobytes() == b"h" * 7000 + b"p" * 1000
    assert s.events == deque()


def test_the_peer_timestamp_is_recorded_when_negotiated() -> None:
    """RFC 7323 section 4.3: TS.Recent from an in-order segment."""
    s = Stack()
    s.opts.ts_ok = True
    assert s.hp.receive(s.segment(payload=b"t" * 10, timestamps=(5555, 1)), T1)
    assert s.opts.ts_recent == 5555
    off = Stack()
    assert off.hp.receive(off.segment(payload=b"t" * 10, timestamps=(5555, 1)), T1)
    assert off.opts.ts_recent == 0


@pytest.mark.parametrize(
    ("ack", "payload", "window"),
    [
        pytest.param(1, b"x" * 700, 50_000, id="data"),
        pytest.param(1001, b"", 50_000, id="ack"),
        pytest.param(3001, b"", 30_000, id="ack-all-smaller-window"),
        pytest.param(2001, b"y" * 1000, 60_000, id="data-and-ack"),
    ],
)
def test_the_effect_is_that_of_the_general_path(ack: int, payload: bytes, window: int) -> None:
    """The module's promise: a segment it takes ends in exactly the state the general
    receive path leaves."""
    fast, general = Stack(), Stack()
    assert fast.hp.receive(fast.segment(ack=ack, payload=payload, window=window), T1)
    general.general(general.segment(ack=ack, payload=payload, window=window), T1)
    assert snapshot(fast) == snapshot(general)


@pytest.mark.parametrize(
    "case",
    [
        "sack",
        "probe",
        "probe_ack",
        "seq_ahead",
        "seq_behind",
        "beyond_window",
        "dupack",
        "window_update",
        "ack_beyond_max",
        "ack_below_una",
        "peer_fin",
        "our_fin",
        "reassembly",
    ],
)
def test_anything_else_is_declined_with_nothing_changed(case: str) -> None:
    """SACK blocks, PMTU probes and their answers, a segment out of order, data beyond the
    window, a duplicate ACK or window update (RFC 5681 section 2), an ACK of data never sent
    (RFC 5961 section 5.2), a FIN either way or data held for reassembly all need the general
    path; declining must leave every part as it was."""
    s = Stack()
    seg = s.segment
    if case == "sack":
        p = seg(ack=1001, sack_blocks=((s.snd.wire_seq(2001), s.snd.wire_seq(3001)),))
        s.opts.sack_ok = True
    elif case == "probe":
        p = seg(ack=1001, probe=9)
    elif case == "probe_ack":
        p = seg(ack=1001, probe_ack=9)
    elif case == "seq_ahead":
        p = seg(pos=101, payload=b"o" * 100)
    elif case == "seq_behind":
        s.rcv.nxt = 501
        p = seg(pos=401, payload=b"o" * 100)
    elif case == "beyond_window":
        s.rcv.reading_paused = True
        s.rcv.held.append(b"h" * 7500)
        p = seg(payload=b"o" * 501)
    elif case == "dupack":
        p = seg(ack=1)
    elif case == "window_update":
        p = seg(ack=1, window=10_000)
    elif case == "ack_beyond_max":
        p = seg(ack=3002, payload=b"o" * 10)
    elif case == "ack_below_una":
        s.loss.on_new_ack(1001, T0 + 0.05)
        p = seg(ack=501, payload=b"o" * 10)
    elif case == "peer_fin":
        s.rcv.fin_pos = 2000
        p = seg(payload=b"o" * 10)
    elif case == "our_fin":
        s.snd.fin_pos = s.snd.buf.end
        p = seg(ack=1001)
    else:
        s.rcv.reasm.insert(501, b"r" * 100, lo=1, hi=1 + BUFFER)
        p = seg(payload=b"o" * 100)
    before = snapshot(s)
    assert not s.hp.receive(p, T1)
    assert snapshot(s) == before


def test_a_segment_exactly_filling_the_window_is_taken() -> None:
    """The boundary of "fits": buffer minus held, inclusive."""
    s = Stack()
    s.rcv.reading_paused = True
    s.rcv.held.append(b"h" * 7500)  # held unread: they arrived in order before
    s.rcv.nxt += 7500
    assert s.hp.receive(s.segment(payload=b"f" * 500), T1)
    assert s.rcv.window() == 0
