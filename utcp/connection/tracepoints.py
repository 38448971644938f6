"""A connection's trace points (docs/TRACE.md): the tracer, the time its events are stamped
with, and what the loss and retransmission events remember between them.

With no tracer every trace point costs its caller one attribute test; nothing here changes
the connection, it only reports it.
"""

from __future__ import annotations

from typing import Final, final

from ..congestion import CongestionController
from ..packet import Packet
from ..recovery import RttEstimator, Scoreboard, SentSegment
from ..trace import Tracer
from .send_side import SendSide

__all__ = ["SSTHRESH_UNBOUNDED", "TracePoints"]

SSTHRESH_UNBOUNDED: Final = 0x7FFFFFFF  # at or above: reported as unbounded
# A model's estimate this far (a share of its last reported value) from what was last
# reported is reported again: a few cc_state events per round trip at most, not one per ACK.
MODEL_REPORT_SHARE: Final = 0.1


def _moved(reported: float | None, current: float | None) -> bool:
    """Whether an estimate became known, unknown, or moved by more than
    ``MODEL_REPORT_SHARE`` of its last reported value."""
    if reported is None or current is None:
        return (reported is None) != (current is None)
    return abs(current - reported) > MODEL_REPORT_SHARE * reported


def _round_s(seconds: float | None) -> float | None:
    """Seconds to the nanosecond, so a trace shows 0.02 rather than 0.020000000000000004."""
    return None if seconds is None else round(seconds, 9)


@final
class TracePoints:
    """Where a connection's events go, and the little state its trace events need."""

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.now = 0.0  # stamp for events of calls that take no ``now``
        self.packet: Packet | None = None  # the packet being processed, for drops
        self.cc_reported: tuple[int, int] | None = None  # (cwnd, ssthresh) last reported
        self.lost_by: dict[int, str] = {}  # position of a lost segment -> what found it
        # The congestion controller's state last reported (cc_state): its phase, and its
        # model's pacing rate, bandwidth (bytes/s) and min RTT.
        self.phase_reported = ""
        self.pacing_reported: float | None = None
        self.bandwidth_reported: float | None = None
        self.min_rtt_reported: float | None = None

    def event(self, name: str, fields: dict[str, object]) -> None:
        """Report ``name`` stamped with ``now`` (only call with a tracer set)."""
        tracer = self.tracer
        assert tracer is not None
        tracer.event(self.now, name, fields)

    def rtt(self, rtt: RttEstimator) -> None:
        """Report the RTT sample just taken and the estimator after it."""
        self.event(
            "rtt_sample",
            {
                "rtt": _round_s(rtt.latest_rtt),
                "srtt": _round_s(rtt.srtt),
                "rttvar": _round_s(rtt.rttvar),
                "rto": _round_s(rtt.rto),
            },
        )

    def cwnd(self, cc: CongestionController, pipe: int) -> None:
        """Report the congestion window if it changed since last reported.  The caller checks
        that our SYN is acknowledged, so the first report is the initial window."""
        current = (cc.cwnd, cc.ssthresh)
        if current != self.cc_reported:
            self.cc_reported = current
            ssthresh = cc.ssthresh if cc.ssthresh < SSTHRESH_UNBOUNDED else None
            self.event("cwnd_changed", {"cwnd": cc.cwnd, "ssthresh": ssthresh, "in_flight": pipe})

    def cc_state(
        self, cc: CongestionController, pacing_rate: float, path_min_rtt: float | None
    ) -> None:
        """Report a controller's state (``cc_state``) when its phase changed, or when an
        estimate of its model (the pacing rate the next segment leaves at, 0.0 when not
        pacing; the bandwidth; the min RTT, the path's smallest while the model has none, as
        in the stats) moved by more than ``MODEL_REPORT_SHARE`` since the last report: a plot
        then follows the model between phase changes too."""
        pacing = pacing_rate if pacing_rate else None
        bw = cc.bandwidth
        min_rtt = cc.min_rtt if cc.min_rtt is not None else path_min_rtt
        if (
            cc.phase == self.phase_reported
            and not _moved(self.pacing_reported, pacing)
            and not _moved(self.bandwidth_reported, bw)
            and not _moved(self.min_rtt_reported, min_rtt)
        ):
            return
        self.phase_reported = cc.phase
        self.pacing_reported = pacing
        self.bandwidth_reported = bw
        self.min_rtt_reported = min_rtt
        self.event(
            "cc_state",
            {
                "phase": cc.phase,
                "pacing_rate": round(pacing * 8) if pacing is not None else None,
                "bandwidth": round(bw * 8) if bw is not None else None,
                "min_rtt": _round_s(min_rtt),
            },
        )

    def losses(self, scoreboard: Scoreboard, snd: SendSide, by: str) -> None:
        """Report the segments the scoreboard has just declared lost, and remember why."""
        log = scoreboard.lost_log
        if not log:
            return
        for seg in log:
            self.lost_by[seg.start] = by
            self.event(
                "loss_detected",
                {
                    "seq": snd.wire_seq(seg.start),
                    "len": snd.data_len(seg.start, seg.end),
                    "by": by,
                },
            )
        log.clear()

    def retransmit(self, seg: SentSegment, snd: SendSide) -> None:
        """Report a segment about to be sent again, with what declared it lost."""
        start = max(seg.start, snd.una)
        self.event(
            "retransmit",
            {
                "seq": snd.wire_seq(start),
                "len": snd.data_len(start, seg.end),
                "by": self.lost_by.pop(seg.start, "rto"),
            },
        )
