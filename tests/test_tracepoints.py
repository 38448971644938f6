"""A connection's trace points (utcp/connection/tracepoints.py, docs/TRACE.md): events are
stamped with the connection's ``now``, the congestion window is reported only when it
changes, and each loss remembers what found it until its retransmission is reported."""

from __future__ import annotations

from utcp.config import Config
from utcp.congestion import NewReno
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.send_side import SendSide
from utcp.connection.tracepoints import SSTHRESH_UNBOUNDED, TracePoints
from utcp.log import get_logger
from utcp.recovery import RttEstimator, Scoreboard, SentSegment
from utcp.trace import ListTracer

ISS = 0xFFFF_FF00


def _traced(now: float = 0.0) -> tuple[TracePoints, ListTracer]:
    trace = TracePoints()
    tracer = ListTracer()
    trace.tracer = tracer
    trace.now = now
    return trace, tracer


def _snd(*, una: int = 1) -> SendSide:
    snd = SendSide(iss=ISS, mss=1000)
    snd.una = una
    return snd


def test_events_are_stamped_with_the_connection_now() -> None:
    trace, tracer = _traced(now=12.5)
    trace.event("custom", {"k": 1})
    trace.now = 13.0
    trace.event("other", {})
    assert [(e.now, e.name, e.fields) for e in tracer.events] == [
        (12.5, "custom", {"k": 1}),
        (13.0, "other", {}),
    ]


def test_rtt_samples_are_reported_to_the_nanosecond() -> None:
    trace, tracer = _traced()
    rtt = RttEstimator(initial_rto_s=1.0, rto_min_s=0.2, rto_max_s=60.0)
    rtt.on_sample(0.1 + 0.2)  # 0.30000000000000004
    trace.rtt(rtt)
    [e] = tracer.named("rtt_sample")
    assert e.fields == {"rtt": 0.3, "srtt": 0.3, "rttvar": 0.15, "rto": 0.9}


def test_cwnd_is_reported_only_when_it_changes() -> None:
    trace, tracer = _traced()
    cc = NewReno(mss=1000, initial_window_segments=10)
    trace.cwnd(cc, 0)
    trace.cwnd(cc, 3000)  # same window: nothing new
    cc.on_congestion_event(8000, now=1.0)
    trace.cwnd(cc, 4000)
    events = [e.fields for e in tracer.named("cwnd_changed")]
    assert events == [
        {"cwnd": 10_000, "ssthresh": None, "in_flight": 0},  # unbounded ssthresh: None
        {"cwnd": 4000, "ssthresh": 4000, "in_flight": 4000},
    ]
    assert trace.cc_reported == (4000, 4000)
    cc.ssthresh = SSTHRESH_UNBOUNDED - 1
    cc.cwnd = 5000
    trace.cwnd(cc, 0)
    assert tracer.events[-1].fields["ssthresh"] == SSTHRESH_UNBOUNDED - 1


def test_losses_are_reported_with_wire_numbers_and_payload_lengths() -> None:
    trace, tracer = _traced()
    snd = _snd()
    snd.buf.write(b"x" * 1500)
    snd.fin_pos = 1501
    sb = Scoreboard()
    sb.lost_log = []
    first = SentSegment(1, 1001, 0.0)
    last = SentSegment(1001, 1502, 0.0)  # 500 bytes and the FIN
    sb.add(first)
    sb.add(last)
    sb.mark_lost(first)
    sb.mark_lost(last)
    trace.losses(sb, snd, "sack")
    assert [e.fields for e in tracer.named("loss_detected")] == [
        {"seq": ISS + 1, "len": 1000, "by": "sack"},
        {"seq": (ISS + 1001) & 0xFFFF_FFFF, "len": 500, "by": "sack"},
    ]
    assert trace.lost_by == {1: "sack", 1001: "sack"}
    assert sb.lost_log == []  # handed over once
    trace.losses(sb, snd, "rto")
    assert len(tracer.named("loss_detected")) == 2


def test_a_retransmission_names_what_found_the_loss_once() -> None:
    trace, tracer = _traced()
    snd = _snd(una=301)  # part of the segment was acknowledged since
    snd.buf.write(b"x" * 2000)
    seg = SentSegment(1, 1001, 0.0)
    trace.lost_by[1] = "tlp"
    trace.retransmit(seg, snd)
    trace.retransmit(seg, snd)  # found again later without a record: the timer did
    assert [e.fields for e in tracer.named("retransmit")] == [
        {"seq": 45, "len": 700, "by": "tlp"},  # ISS + 301, past the wrap
        {"seq": 45, "len": 700, "by": "rto"},
    ]
    assert trace.lost_by == {}


def test_loss_recovery_reports_through_its_trace_points() -> None:
    """A retransmission timeout (RFC 6298 section 5) declares the whole flight lost: one
    ``loss_detected`` per segment, found by "rto"."""
    config = Config(mss_bytes=1000, pmtud=False)
    snd = _snd()
    trace, tracer = _traced(now=4.0)
    loss = LossRecovery(
        config,
        snd=snd,
        opts=Negotiated(config),
        deadlines=Deadlines(),
        counters=Counters(),
        trace=trace,
        log=get_logger(test="tracepoints"),
    )
    loss.scoreboard.lost_log = []
    snd.buf.write(b"y" * 2000)
    for start in (1, 1001):
        loss.scoreboard.add(SentSegment(start, start + 1000, 0.0))
    snd.nxt = snd.max = 2001
    loss.on_timeout(4.0)
    events = tracer.named("loss_detected")
    assert [(e.now, e.fields["seq"], e.fields["by"]) for e in events] == [
        (4.0, ISS + 1, "rto"),
        (4.0, (ISS + 1001) & 0xFFFF_FFFF, "rto"),
    ]
    assert trace.lost_by == {1: "rto", 1001: "rto"}
    loss.on_new_ack(2001, now=5.0)  # everything acknowledged: nothing left to report
    assert trace.lost_by == {}


def test_an_rtt_sample_taken_on_an_ack_is_reported() -> None:
    """RFC 6298 section 2.2: the first sample R sets SRTT = R, RTTVAR = R / 2 and
    RTO = SRTT + 4 RTTVAR; the trace shows the estimator after the sample."""
    config = Config(mss_bytes=1000, pmtud=False)
    snd = _snd()
    trace, tracer = _traced(now=0.25)
    loss = LossRecovery(
        config,
        snd=snd,
        opts=Negotiated(config),
        deadlines=Deadlines(),
        counters=Counters(),
        trace=trace,
        log=get_logger(test="tracepoints"),
    )
    snd.buf.write(b"z" * 1000)
    loss.scoreboard.add(SentSegment(1, 1001, 0.0))
    snd.nxt = snd.max = 1001
    loss.on_new_ack(1001, now=0.25)
    [e] = tracer.named("rtt_sample")
    assert (e.now, e.fields) == (0.25, {"rtt": 0.25, "srtt": 0.25, "rttvar": 0.125, "rto": 0.75})


def test_a_fresh_trace_point_set_has_no_tracer_and_no_memory() -> None:
    trace = TracePoints()
    assert trace.tracer is None
    assert (trace.now, trace.packet, trace.cc_reported, trace.lost_by) == (0.0, None, None, {})
