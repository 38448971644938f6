"""LEDBAT congestion control (RFC 6817): a background transfer that fills an idle path but
yields to other traffic, by keeping the queueing delay it adds at a target.

The queueing delay is the current one-way delay (the minimum of the last few samples) minus
the base delay (the minimum over the last ten minutes, kept per minute); both carry the same
unknown clock offset, so only their difference counts.  Below the target the window grows at
most as fast as Reno's; above it, it shrinks in proportion to the excess (LEDBAT++'s
multiplicative decrease, which lets LEDBAT yield on a queue barely deeper than the target).
Loss halves the window at most once per round trip, a timeout drops it to one segment.
The delays come from the timestamps option, which a connection offers whenever its
controller asks for delay samples; with a peer that does not answer it, LEDBAT is a
loss-based controller that grows half as fast as NewReno.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from .base import CongestionController, RateSample, register

__all__ = ["Ledbat"]

BASE_HISTORY: Final = 10  # base delay buckets kept (RFC 6817 section 2.5)
BASE_BUCKET_S: Final = 60.0  # one bucket per minute (RFC 6817 section 2.4.2)
# Samples the current delay is the minimum of: RFC 6817 section 2.4.2's FILTER() over
# CURRENT_FILTER samples, left open by the RFC; four ride out a delayed ACK or two.
CURRENT_FILTER: Final = 4
GAIN: Final = 1.0  # at most Reno's growth: GAIN MUST be 1 or less (RFC 6817 section 2.5)
ALLOWED_INCREASE_SEGMENTS: Final = 1  # SHOULD be 1 (RFC 6817 section 2.5)
MIN_CWND_SEGMENTS: Final = 2  # RFC 6817 section 2.5
MAX_DECREASE: Final = 0.5  # LEDBAT++: at most half the window per round trip from delay
SLOW_START_EXIT: Final = 0.5  # slow start ends at this fraction of the target's delay
NO_DELAY_GAIN: Final = 0.5  # segments per round trip in avoidance without delay samples

SLOW_START: Final = "slow_start"
BELOW_TARGET: Final = "below_target"
ABOVE_TARGET: Final = "above_target"
RECOVERY: Final = "recovery"
LOSS_BASED: Final = "loss_based"  # no delay samples: loss is the only signal


@mypyc_attr(allow_interpreted_subclasses=True)
class Ledbat(CongestionController):
    """LEDBAT (RFC 6817) with LEDBAT++'s multiplicative decrease above the target.

    ``target_s``, the queueing delay LEDBAT aims for, is 15 ms.  RFC 6817 section 2.5 allows
    at most 100 ms, but a background flow must yield on the paths it meets, and shallow
    queues are common: 50 packets at 20 Mbit/s hold only 30 ms, which a loss-based flow
    (kernel CUBIC) keeps between about 9 and 30 ms.  Above the target LEDBAT backs off; a
    target near the queue's depth is seldom exceeded and LEDBAT competes like Reno.  A flow
    that starts while another keeps a standing queue also takes part of that queue for base
    delay (the "latecomer advantage" LEDBAT++ names), so the delay at which it yields is the
    target plus the standing queue: 15 + 9 ms still leaves CUBIC's upper third above it,
    where 20 + 9 ms would not.  The target stays well above the measurement's noise
    (millisecond timestamps, a delayed ACK, scheduling jitter), and LEDBAT alone keeps the
    target's worth of queue, which is enough to keep the link busy.  Subclass and set
    ``target_s`` for other paths (a deep buffer lets a larger target ride out more jitter).
    """

    name = "ledbat"
    wants_delay_samples: ClassVar[bool] = True
    # Rate samples carry the flight size RFC 6817's growth cap (ALLOWED_INCREASE) needs.
    wants_rate_samples: ClassVar[bool] = True
    target_s: ClassVar[float] = 0.015

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self.phase = SLOW_START
        # Delays in seconds, offset by the peer's clock: only differences mean anything.
        self.base_delay_s: float | None = None
        self.current_delay_s: float | None = None
        self.queuing_delay_s = 0.0
        self.delay_samples = 0
        self._base_delays: list[float] = []  # per-minute minima, the newest last
        self._rollover_at = 0.0
        self._current_delays: list[float] = []  # the last CURRENT_FILTER samples
        self._exact_cwnd = float(self.cwnd)  # cwnd with the fractions LEDBAT's growth adds
        self._cwnd_before_ack = -1  # cwnd before on_ack grew it (-1: no cap pending)
        self._avoidance_acked = 0.0  # bytes acknowledged towards the next segment (no delay)
        self._rtt_s = 0.0  # the latest round-trip time
        self._reduced_at: float | None = None  # when loss last reduced the window

    # ------------------------------------------------------------------ delay

    def on_delay_sample(self, one_way_delay_s: float, *, now: float) -> None:
        """Update the base and current delays (RFC 6817 section 2.4.2's update_base_delay
        and update_current_delay)."""
        delay = one_way_delay_s
        bases = self._base_delays
        if not bases:
            bases.append(delay)
            self._rollover_at = now
            self.base_delay_s = delay
        elif now - self._rollover_at >= BASE_BUCKET_S:
            # A new minute: a new bucket, the oldest forgotten, so a path whose delay rose
            # (a route change) is learnt after BASE_HISTORY minutes.
            self._rollover_at = now
            bases.append(delay)
            if len(bases) > BASE_HISTORY:
                del bases[0]
            self.base_delay_s = min(bases)
        else:
            if delay < bases[-1]:
                bases[-1] = delay
            base = self.base_delay_s
            if base is None or delay < base:
                self.base_delay_s = delay
        current = self._current_delays
        current.append(delay)
        if len(current) > CURRENT_FILTER:
            del current[0]
        # The minimum: one sample held up (a delayed ACK, a scheduling hiccup) is not a queue.
        self.current_delay_s = min(current)
        base_delay = self.base_delay_s
        assert base_delay is not None
        self.queuing_delay_s = self.current_delay_s - base_delay
        self.delay_samples += 1

    # ------------------------------------------------------------------ the window

    def _exact(self) -> float:
        """cwnd with the fractions of a byte LEDBAT's growth adds, unless the connection set
        cwnd since (the initial window after the handshake, a new MSS): then cwnd."""
        if int(self._exact_cwnd) != self.cwnd:
            self._exact_cwnd = float(self.cwnd)
        return self._exact_cwnd

    def _set_cwnd(self, value: float) -> None:
        floor = MIN_CWND_SEGMENTS * self.mss
        if value < floor:
            value = float(floor)
        self._exact_cwnd = value
        self.cwnd = int(value)

    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        if rtt_s is not None:
            self._rtt_s = rtt_s
        mss = self.mss
        if self.delay_samples == 0:
            self._on_ack_without_delay(acked_bytes)
            return
        queuing = self.queuing_delay_s
        target = self.target_s
        if self.cwnd < self.ssthresh:
            # RFC 6817 section 2.4.2 allows slow start no faster than TCP's.  It ends at
            # SLOW_START_EXIT of the target: the delay it sees is a round trip old, and the
            # window doubles meanwhile.
            if queuing < SLOW_START_EXIT * target:
                self.phase = SLOW_START
                self._set_cwnd(self._exact() + min(acked_bytes, 2 * mss))
                return
            self.ssthresh = self.cwnd
        off_target = (target - queuing) / target
        cwnd = self._exact()
        if off_target >= 0.0:
            # RFC 6817 section 2.4.2: at most GAIN segments per round trip, less the nearer
            # the target.
            self.phase = BELOW_TARGET
            self._cwnd_before_ack = self.cwnd
            self._set_cwnd(cwnd + GAIN * off_target * acked_bytes * mss / cwnd)
        else:
            # LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus, multiplicative decrease): shrink
            # by the excess over the target times the window per round trip, at most half.
            # RFC 6817's linear decrease (GAIN * off_target segments per round trip) would
            # give up less than one segment per round trip beside a loss-based flow that
            # takes one, so it would only yield at the next loss.
            self.phase = ABOVE_TARGET
            factor = off_target if off_target > -MAX_DECREASE else -MAX_DECREASE
            self._set_cwnd(cwnd + factor * acked_bytes)
        if self.ssthresh > self.cwnd:
            self.ssthresh = self.cwnd  # a smaller window is no reason to slow start again

    def _on_ack_without_delay(self, acked_bytes: int) -> None:
        """No delay samples: RFC 5681's slow start, then NO_DELAY_GAIN segments per round
        trip (NewReno's growth, halved: without a delay signal LEDBAT cannot see a competitor
        before a loss, so it at least takes longer than NewReno to refill the queue)."""
        mss = self.mss
        if self.cwnd < self.ssthresh:
            self.phase = SLOW_START
            self._set_cwnd(self._exact() + min(acked_bytes, 2 * mss))
            return
        self.phase = LOSS_BASED
        self._avoidance_acked += NO_DELAY_GAIN * acked_bytes
        if self._avoidance_acked >= self.cwnd:
            self._avoidance_acked -= self.cwnd
            self._set_cwnd(self._exact() + mss)

    def on_rate_sample(self, sample: RateSample, *, now: float) -> None:
        """Cap what this acknowledgement's growth added at the flight size before it plus
        ALLOWED_INCREASE segments (RFC 6817 section 2.4.2's max_allowed_cwnd), so a window
        the sender does not fill stops growing.  It never takes back more than the growth:
        shrinking an unused window is the connection's business (it grows the window only
        while it limits the sender), not LEDBAT's."""
        before = self._cwnd_before_ack
        if before < 0:
            return
        self._cwnd_before_ack = -1
        allowed = sample.in_flight + sample.newly_acked + ALLOWED_INCREASE_SEGMENTS * self.mss
        if self.cwnd > allowed:
            self._set_cwnd(float(max(before, allowed)))

    # ------------------------------------------------------------------ loss

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        """Halve the window, at most once per round trip (RFC 6817 section 2.4.2)."""
        self.phase = RECOVERY
        self._cwnd_before_ack = -1
        reduced = self._reduced_at
        if reduced is not None and now - reduced < self._rtt_s:
            return
        self._reduced_at = now
        self._avoidance_acked = 0.0
        # cwnd = min(cwnd, max(cwnd / 2, MIN_CWND * MSS)): never up, from one segment.
        if self.cwnd > MIN_CWND_SEGMENTS * self.mss:
            self._set_cwnd(self._exact() / 2)
        self.ssthresh = self.cwnd

    def on_recovery_exit(self, *, now: float) -> None:
        self.phase = (
            LOSS_BASED
            if self.delay_samples == 0
            else ABOVE_TARGET
            if self.queuing_delay_s > self.target_s
            else BELOW_TARGET
        )

    def on_timeout(self, flight_size: int, *, now: float) -> None:
        """One segment (RFC 6817 section 2.4.2: no ACK for a whole timeout), then slow
        start back to half the window it had."""
        self._reduced_at = now
        self._cwnd_before_ack = -1
        self._avoidance_acked = 0.0
        self.ssthresh = max(self.cwnd // 2, MIN_CWND_SEGMENTS * self.mss)
        self.cwnd = self.mss
        self._exact_cwnd = float(self.mss)
        self.phase = SLOW_START


# Not a decorator: the compiled build keeps the class native only if it has none.
register(Ledbat)
