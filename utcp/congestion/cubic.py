"""CUBIC congestion control (RFC 9438) with HyStart++ (RFC 9406) for the first slow start.

In congestion avoidance the window follows a cubic function of the time since the stage began
(section 4.2): ``W_cubic(t) = C * (t - K)^3 + W_max``, concave below the window of the last
congestion event ``W_max`` (section 4.4), a plateau at ``t = K``, then convex beyond it to
probe for more (section 4.5), and never slower than Reno's estimate ``W_est`` (the
Reno-friendly region, section 4.3).  A congestion event keeps ``beta_cubic = 0.7`` of the
window (section 4.6) and lowers ``W_max`` further when the window is shrinking (fast
convergence, section 4.7); a timeout falls to one segment (section 4.8).  The first slow start
watches the minimum RTT of each round and, when it rises, grows a quarter as fast for a few
rounds (Conservative Slow Start) before congestion avoidance: HyStart++ leaves slow start
before the queue overflows (RFC 9406 section 4).

The RFCs count windows in segments; here every window is in bytes, so a constant per segment
is multiplied by the MSS.  The controller sees no sequence numbers: HyStart++'s rounds end when
a segment sent after the round began is delivered, from the delivered counts of the rate
samples (as BBR counts rounds), and its RTT samples are theirs.

Departs from section 4.3 as Linux's cubic does, in two SHOULDs: the Reno-friendly estimate
grows by alpha_cubic throughout, not by 1 once past the window of the last reduction; and in the
Reno-friendly region cwnd closes its gap to the estimate over a window of ACKs rather than at
once.

A congestion event that the peer's D-SACKs show spurious is undone (section 4.9): the window,
threshold and curve from before it come back.  Not done: ECN (the connection has none), and
leaving out application-limited time from ``t`` (section 5.8): the connection grows the window
only while it limits the sender, and the target caps any growth at half the window per round
trip.  ``pacing_rate`` stays None: the connection's ``pacing`` setting decides
whether to pace at its default rate.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from .base import CongestionController, RateSample, register

__all__ = ["Cubic"]

C: Final = 0.4  # segments per second cubed (RFC 9438 section 4.1.1)
BETA_CUBIC: Final = 0.7  # window kept on a congestion event (RFC 9438 sections 4.1.1, 4.6)
# Reno's additive increase with the same average rate as CUBIC's decrease (section 4.3).
ALPHA_CUBIC: Final = 3 * (1 - BETA_CUBIC) / (1 + BETA_CUBIC)
MAX_GROWTH: Final = 1.5  # target at most 1.5 times cwnd (RFC 9438 section 4.2)
MIN_SSTHRESH_SEGMENTS: Final = 2  # RFC 9438 section 4.6

# HyStart++ (RFC 9406 section 4.3).
MIN_RTT_THRESH_S: Final = 0.004
MAX_RTT_THRESH_S: Final = 0.016
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5
# Segments an ACK may add in slow start: L for an unpaced sender (RFC 9406 section 4.3),
# also kept when paced, the more cautious choice.
SLOW_START_LIMIT_SEGMENTS: Final = 8

RTT_GAIN: Final = 0.125  # the smoothed RTT's weight for a new sample (RFC 6298 section 2)

SLOW_START: Final = "slow_start"
CSS: Final = "css"
CONGESTION_AVOIDANCE: Final = "congestion_avoidance"
RECOVERY: Final = "recovery"


def _cbrt(x: float) -> float:
    """The real cube root, negative for a negative ``x`` (``math.cbrt`` needs Python 3.11)."""
    return math.copysign(abs(x) ** (1.0 / 3.0), x)


@mypyc_attr(allow_interpreted_subclasses=True)
class Cubic(CongestionController):
    """CUBIC (RFC 9438) with HyStart++ (RFC 9406) in the first slow start."""

    name = "cubic"
    # Round trips and RTT samples for HyStart++, a smoothed RTT for the cubic target.
    wants_rate_samples: ClassVar[bool] = True

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self.phase = SLOW_START
        # RFC 9438 section 4.1.2's state, in bytes and seconds.
        self.w_max = 0.0  # the window before the last reduction; 0.0: none (4.8, 4.10)
        self.k_s = 0.0  # time from the stage's start to W_max on the cubic curve
        self.w_est = 0.0  # Reno's window over the same stage
        self._epoch = -1.0  # when this congestion avoidance stage began; < 0: not yet
        self._grow_credit = 0.0  # fractional bytes of growth not yet in cwnd (an int)
        self._srtt = 0.0  # 0.0: no sample yet
        self._after_timeout = False  # in the slow start that follows a timeout
        # HyStart++: on only for the initial slow start (RFC 9406 section 4.4).
        self._hystart = True
        self._round_end = 0  # delivered bytes when the next round starts
        self._last_round_min_rtt = math.inf
        self._round_min_rtt = math.inf
        self._rtt_samples = 0
        self._css_baseline_min_rtt = math.inf
        self._css_rounds = 0
        # Section 4.9: the state before the last congestion event, to restore should it
        # prove spurious (W_max, K, W_est, the epoch's start, the phase, HyStart++ on), and
        # whether the episode under way was undone.
        self._prior = (0.0, 0.0, 0.0, -1.0, SLOW_START, True)
        self._undone = False

    # ------------------------------------------------------------------ the cubic curve

    def w_cubic(self, t: float) -> float:
        """RFC 9438 section 4.2, equation 1: the window ``t`` seconds into the stage, bytes."""
        d = t - self.k_s
        return C * self.mss * d * d * d + self.w_max

    def _start_epoch(self, now: float) -> None:
        """A congestion avoidance stage begins (RFC 9438 section 4.2), at its first ACK: ``t``
        counts from here, the recovery episode before it left out; ``cwnd_epoch`` is cwnd."""
        cwnd = float(self.cwnd)
        if self.w_max <= 0.0:
            # No W_max: after a timeout (section 4.8) or when HyStart++ left slow start
            # without loss (section 4.10), the curve starts convex from the current window.
            self.w_max = cwnd
        self._epoch = now
        # Equation 2: K = cubic_root((W_max - cwnd_epoch) / C).
        self.k_s = _cbrt((self.w_max - cwnd) / (C * self.mss))
        self.w_est = cwnd  # section 4.3: W_est starts at cwnd_epoch
        self._grow_credit = 0.0

    def _avoid_congestion(self, acked: int, now: float, rtt_s: float | None) -> None:
        if self._epoch < 0.0:
            self._start_epoch(now)
        mss = self.mss
        cwnd = float(self.cwnd)
        t = now - self._epoch
        # Section 4.3: W_est grows by alpha_cubic segments per window acknowledged.  The
        # section's SHOULD of alpha 1 once W_est reaches the window of the last reduction is
        # not followed: Linux's cubic keeps alpha_cubic, and so the two share a link alike.
        self.w_est += ALPHA_CUBIC * acked * mss / cwnd
        if self.w_cubic(t) < self.w_est:
            # Reno-friendly region (section 4.3): towards W_est (never lowered by an ACK), by
            # (W_est - cwnd) / cwnd per segment acknowledged, as Linux's cubic closes the gap
            # over a window of ACKs.  Section 4.3's SHOULD of cwnd = W_est at once is not
            # followed: under random loss, where windows are a few segments, it kept about
            # half a segment more than kernel cubic and took 6-12% more of the link.
            if self.w_est > cwnd:
                self._grow_credit += (self.w_est - cwnd) * acked / cwnd
        else:
            # Concave (section 4.4) or convex (section 4.5) region: towards where the curve
            # is one RTT from now, target = clamp(W_cubic(t + RTT), cwnd, 1.5 cwnd), by
            # (target - cwnd) / cwnd per segment acknowledged (section 4.2).
            rtt = self._srtt if self._srtt > 0.0 else (rtt_s or 0.0)
            target = self.w_cubic(t + rtt)
            if target < cwnd:
                target = cwnd
            elif target > MAX_GROWTH * cwnd:
                target = MAX_GROWTH * cwnd
            self._grow_credit += (target - cwnd) * acked / cwnd
        whole = int(self._grow_credit)
        if whole:
            self.cwnd += whole
            self._grow_credit -= whole

    # ------------------------------------------------------------------ HyStart++

    def _on_round_start(self) -> None:
        """RFC 9406 section 4.2: a new round begins; CSS ends when CSS_ROUNDS rounds have
        ended in it, the one it began in counted."""
        if self.phase == CSS:
            self._css_rounds += 1
            if self._css_rounds >= CSS_ROUNDS:
                # Into congestion avoidance: ssthresh is the current window.
                self._hystart = False
                self.ssthresh = self.cwnd
                self.phase = CONGESTION_AVOIDANCE
                return
        self._last_round_min_rtt = self._round_min_rtt
        self._round_min_rtt = math.inf
        self._rtt_samples = 0

    def _on_rtt_sample(self, rtt: float) -> None:
        """RFC 9406 section 4.2: the round's minimum RTT against the last round's (slow
        start) or the baseline CSS began at (CSS)."""
        if rtt < self._round_min_rtt:
            self._round_min_rtt = rtt
        self._rtt_samples += 1
        if self._rtt_samples < N_RTT_SAMPLE:
            return
        current = self._round_min_rtt
        if self.phase == SLOW_START:
            last = self._last_round_min_rtt
            if last == math.inf:
                return
            thresh = min(last / MIN_RTT_DIVISOR, MAX_RTT_THRESH_S)
            if thresh < MIN_RTT_THRESH_S:
                thresh = MIN_RTT_THRESH_S
            if current >= last + thresh:
                self._css_baseline_min_rtt = current
                self._css_rounds = 0
                self.phase = CSS
        elif self.phase == CSS and current < self._css_baseline_min_rtt:
            # The RTT fell back: the exit was spurious, slow start resumes.
            self._css_baseline_min_rtt = math.inf
            self.phase = SLOW_START

    # ------------------------------------------------------------------ inputs

    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        if self.cwnd < self.ssthresh:
            # Slow start (RFC 9406 section 4.2; RFC 5681 after a timeout): at most L segments
            # per ACK, a quarter of that in CSS.
            grow = min(acked_bytes, SLOW_START_LIMIT_SEGMENTS * self.mss)
            if self.phase == CSS:
                grow //= CSS_GROWTH_DIVISOR
            else:
                self.phase = SLOW_START
            self.cwnd = min(self.cwnd + grow, self.ssthresh)
            if self.cwnd >= self.ssthresh:
                self.phase = CONGESTION_AVOIDANCE
                self._after_timeout = False
            return
        self.phase = CONGESTION_AVOIDANCE
        self._avoid_congestion(acked_bytes, now, rtt_s)

    def on_rate_sample(self, sample: RateSample, *, now: float) -> None:
        """Each ACK that delivers data (recovery included): a smoothed RTT, and the rounds
        and RTT samples of HyStart++, counted in delivered bytes as BBR counts rounds."""
        rtt = sample.rtt_s  # None for a retransmitted segment (Karn)
        if rtt is not None:
            srtt = self._srtt
            self._srtt = rtt if srtt == 0.0 else srtt + RTT_GAIN * (rtt - srtt)
        if not self._hystart:
            return
        # A round ends when a segment sent after its start is delivered (RFC 9406 section
        # 4.2's windowEnd, counted in delivered bytes instead of sequence numbers).
        if sample.prior_delivered >= self._round_end:
            self._round_end = sample.prior_delivered + sample.delivered
            self._on_round_start()
            if not self._hystart:
                return
        if rtt is not None:
            self._on_rtt_sample(rtt)

    def _reduce(self) -> None:
        """RFC 9438 sections 4.6 and 4.7: W_max, then ssthresh from cwnd (not the flight
        size: the connection grows cwnd only while it limits the sender, the measure section
        4.6 asks of an implementation that uses cwnd)."""
        cwnd = float(self.cwnd)
        if cwnd < self.w_max:
            # Fast convergence (section 4.7): the window shrank since the last event, so
            # give up more to let a newer flow grow.
            self.w_max = cwnd * (1 + BETA_CUBIC) / 2
        else:
            self.w_max = cwnd
        self.ssthresh = max(int(cwnd * BETA_CUBIC), MIN_SSTHRESH_SEGMENTS * self.mss)
        self._epoch = -1.0
        self._grow_credit = 0.0
        self._after_timeout = False
        # A loss ends HyStart++ (RFC 9406 section 4.2) and it is not used again (4.4).
        self._hystart = False

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        self._prior = (self.w_max, self.k_s, self.w_est, self._epoch, self.phase, self._hystart)
        self._undone = False
        self._reduce()
        self.cwnd = self.ssthresh  # section 4.6: cwnd = max(ssthresh, 2 segments)
        self.phase = RECOVERY

    def on_recovery_exit(self, *, now: float) -> None:
        if self._undone:
            self._undone = False
            return
        self.cwnd = self.ssthresh
        self.phase = CONGESTION_AVOIDANCE

    def on_spurious_congestion(self, prior_cwnd: int, prior_ssthresh: int, *, now: float) -> None:
        """Section 4.9: the window, threshold and curve from before the event (the window
        and threshold only where larger than now); an episode still under way ends without
        deflating the window."""
        if prior_cwnd > self.cwnd:
            self.cwnd = prior_cwnd
        if prior_ssthresh > self.ssthresh:
            self.ssthresh = prior_ssthresh
        w_max, k_s, w_est, epoch, phase, hystart = self._prior
        self.w_max = w_max
        self.k_s = k_s
        self.w_est = w_est
        self._epoch = epoch
        self._grow_credit = 0.0
        self._hystart = hystart
        if self.cwnd < self.ssthresh:
            self.phase = phase if phase in (SLOW_START, CSS) else SLOW_START
        else:
            self.phase = CONGESTION_AVOIDANCE
        self._undone = True

    def on_timeout(self, flight_size: int, *, now: float) -> None:
        """RFC 9438 section 4.8: Reno's loss window of one segment with ssthresh from
        beta_cubic; the next stage's curve starts at its own window (K = 0).

        A timeout in the slow start that follows another keeps ssthresh: that window is
        still climbing back and its resent segments were lost, it did not overflow the path
        (RFC 5681 section 3.1 reduces ssthresh only for a segment not yet resent by the
        timer); reducing from it would leave ssthresh at two segments."""
        self._undone = False
        if not self._after_timeout:
            self._reduce()
            self.w_max = 0.0
            self._after_timeout = True
        self._epoch = -1.0
        self.cwnd = self.mss
        self.phase = SLOW_START


# Not a decorator: the compiled build keeps the class native only if it has none.
register(Cubic)
