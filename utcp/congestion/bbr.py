"""BBR congestion control: a model of the path (its bottleneck bandwidth and round-trip
propagation time) rather than a reaction to loss.

After the BBR draft (draft-cardwell-iccrg-bbr-congestion-control, now
draft-ietf-ccwg-bbr) and Linux's ``tcp_bbr.c`` (version 1): the bandwidth estimate is the
maximum delivery rate over the last ten round trips, the propagation delay the minimum RTT
over ten seconds (starting from the connection's smallest RTT, the handshake's included, as
Linux's bbr_init does); segments are paced at ``pacing_gain`` times the bandwidth and the window
is ``cwnd_gain`` times the bandwidth-delay product.  The phases: STARTUP doubles the rate
every round until the bandwidth stops growing (three rounds under 25% growth; its window gain
drops to 2 once a sample shows a queue, so the queue it builds holds one BDP), DRAIN empties
the queue STARTUP built, PROBE_BW cycles its pacing gain through 1.25, 0.75 and six rounds
of 1 to find more bandwidth and give it back, and PROBE_RTT cuts the window to four segments
for 200 ms when the minimum RTT has not been seen for ten seconds.  Random loss does not
shrink the model, which is why BBR keeps a lossy path full; as in Linux, bytes declared
lost come off the window, and a recovery episode holds the flight to what is delivered
(packet conservation) for one round trip from its start, but only behind a queue: random
loss overflows nothing.  STARTUP also ends at once on a round that overflowed the queue (the
draft's BBRCheckStartupHighLoss, with the queue's RTT as the sign of overflow).

One departure from version 1, for sharing: its window of twice the BDP keeps a shallow
bottleneck queue full on its own, so a loss-based flow beside it (cubic) loses again and
again and is starved.  The BBR draft answers with a loss-rate bound on the flight, which also
caps the flow under random loss.  Here a round trip that lost data while even its fastest
sample waited in a queue (its smallest RTT a quarter above the path's smallest) counts as
congestion, and the window is 1.5 BDP until a round's smallest RTT is back within a tenth of
the path's: random loss, which comes with no queue, leaves BBR as it was.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import i64

from .base import CongestionController, RateSample, burst_bytes, register

__all__ = ["Bbr"]

HIGH_GAIN: Final = 2.885  # 2 / ln 2: doubles the delivery rate each round (draft 4.6.1)
DRAIN_GAIN: Final = 1 / HIGH_GAIN
CWND_GAIN: Final = 2.0
# A plain tuple: a Final one is not set when compiled methods read it (mypyc).
PACING_GAINS: tuple[float, ...] = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
PROBE_BW_START_PHASE: Final = 2  # a cruising phase: Linux picks one at random, we the first
BW_WINDOW_ROUNDS: Final = 10  # the bandwidth filter's length, in round trips
MIN_RTT_WINDOW_S: Final = 10.0
PROBE_RTT_S: Final = 0.2
MIN_CWND_SEGMENTS: Final = 4
FULL_BW_GROWTH: Final = 1.25
FULL_BW_ROUNDS: Final = 3
BUDGET_BURSTS: Final = 3  # Linux's quantization budget: three paced bursts (burst_bytes)
CONGESTED_BUDGET_SEGMENTS: Final = 3  # while congested: three segments instead
PACING_MARGIN: Final = 0.99  # pace 1% below the estimate, so the queue drains (Linux)
# A round trip that lost data while even its fastest sample waited in a queue (its smallest
# RTT this far above the path's) is congestion rather than random loss: the window comes down
# to 1.5 BDP until a round's smallest RTT is back near the path's.  In STARTUP one sample this
# far above the path's RTT shows the link full: the window gain comes down to 2.
QUEUED_RTT_FACTOR: Final = 1.25
DRAINED_RTT_FACTOR: Final = 1.1
CONGESTED_CWND_GAIN: Final = 1.5
# STARTUP ends early on a round that overflowed the bottleneck queue (the BBR draft's
# BBRCheckStartupHighLoss): one that lost at least this share of what it sent, in at least
# this many acknowledgements, while even its fastest sample waited in a queue.  Random loss
# at the rates BBR is meant to ride out (up to 5%) comes with no queue and stays below it.
STARTUP_LOSS_RATE: Final = 0.15
STARTUP_LOSS_EVENTS: Final = 6

STARTUP: Final = "startup"
DRAIN: Final = "drain"
PROBE_BW: Final = "probe_bw"
PROBE_RTT: Final = "probe_rtt"


class Bbr(CongestionController):
    """BBR (version 1): bandwidth and min-RTT estimates, a pacing rate and probing phases."""

    name = "bbr"
    wants_rate_samples: ClassVar[bool] = True

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        # The model's own state is set before the base class's: assigned before ``self`` is
        # passed anywhere, the compiled build knows these attributes always exist and reads
        # them without checks (the model runs on every acknowledgement).
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self._init_cwnd: i64 = initial_window_segments * mss  # the base class's first cwnd
        self._bw_rounds: list[tuple[int, float]] = []  # (round, max rate seen in it)
        # ``bandwidth`` unboxed (0.0 before the first estimate): the filter's maximum as of
        # the last sample it took (the rounds leaving the window go at the next).
        self._bw_max = 0.0
        self._bw_max_stale = False  # the round holding the maximum has left the window
        # ``min_rtt`` unboxed, and whether there is one yet (a fake clock can measure 0.0).
        self._rtt_min = 0.0
        self._has_rtt_min = False
        self._min_rtt_stamp = 0.0
        self._round: i64 = 0
        self._next_round_delivered: i64 = 0
        self._round_start = False
        self._full_bw = 0.0
        self._full_bw_count: i64 = 0
        self.full_bw_reached = False
        self._cycle_index: i64 = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done_at = 0.0
        self._probe_rtt_round_done = False
        self._prior_cwnd: i64 = 0
        self._conservation_round: i64 = -1  # the round packet conservation ends at (-1: off)
        self._in_episode = False  # between on_congestion_event and the episode's end
        self._restore_round: i64 = -1  # after a timeout: the round prior_cwnd is restored at
        self._in_flight: i64 = 0
        self._delivered: i64 = 0  # bytes delivered, as of the latest sample
        # Congestion as opposed to random loss: the path's smallest RTT ever seen, and the
        # round under way's smallest RTT and whether it lost anything.
        self._base_rtt = 0.0
        self._round_min_rtt = 0.0
        self._last_round_min_rtt = 0.0  # the round before's, while this one has no sample
        self._round_lost = False
        self.congested = False
        # STARTUP's queue overflow: what the round under way delivered and lost, and in how
        # many acknowledgements it learnt of losses.
        self._round_start_delivered: i64 = 0
        self._round_lost_bytes: i64 = 0
        self._round_loss_events: i64 = 0
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self.phase = STARTUP

    # ------------------------------------------------------------------ the model

    def _bdp(self, gain: float) -> i64:
        """``gain`` times the estimated bandwidth-delay product, bytes (the initial window
        while there is no estimate)."""
        if self._bw_max == 0.0 or not self._has_rtt_min:
            return self._init_cwnd
        return i64(gain * self._bw_max * self._rtt_min)

    def _inflight(self, gain: float) -> i64:
        """``gain`` BDPs and Linux's quantization budget (bbr_inflight): room for three of the
        sender's bursts (a millisecond of data at the pacing rate, at least two segments) in
        the sender's and the receiver's batching, so that those bursts do not leave the
        bottleneck idle."""
        burst = i64(burst_bytes(self.pacing_rate or 0.0, self.mss))
        return self._bdp(gain) + BUDGET_BURSTS * burst

    def _target_cwnd(self) -> i64:
        if self.congested:
            # Beside a loss-based flow the budget's bursts would stand in the shared queue:
            # with them, the share beside kernel cubic rose from 59% to 68%.
            target = self._bdp(self.cwnd_gain) + CONGESTED_BUDGET_SEGMENTS * self.mss
        else:
            target = self._inflight(self.cwnd_gain)
        return max(target, MIN_CWND_SEGMENTS * self.mss)

    def _update_bw(self, rs: RateSample) -> None:
        rate = rs.delivery_rate
        if rate <= 0.0:
            return
        # An application-limited sample only counts if it shows more than the model knows.
        if rs.app_limited and rate < self._bw_max:
            return
        rounds = self._bw_rounds
        oldest = self._round - BW_WINDOW_ROUNDS
        while rounds and rounds[0][0] <= oldest:
            if rounds[0][1] >= self._bw_max:
                self._bw_max_stale = True  # the filter's maximum leaves it
            rounds.pop(0)
        if rounds and rounds[-1][0] == self._round:
            if rate > rounds[-1][1]:
                rounds[-1] = (self._round, rate)
        else:
            rounds.append((self._round, rate))
        # The filter's maximum, kept up to date rather than sought on every sample (every
        # acknowledgement has one): only when the round holding it has left the window is
        # the filter searched, by a plain loop.
        if self._bw_max_stale:
            best = 0.0
            for entry in rounds:
                r = entry[1]
                if r > best:
                    best = r
            self._bw_max_stale = False
        elif rate > self._bw_max:
            best = rate
        else:
            best = self._bw_max
        if best != self._bw_max:
            self._bw_max = best
            self.bandwidth = best

    def _update_round(self, rs: RateSample) -> None:
        delivered_now = rs.prior_delivered + rs.delivered
        self._round_start = False
        if rs.prior_delivered >= self._next_round_delivered:
            self._next_round_delivered = delivered_now
            self._round += 1
            self._round_start = True

    def _check_full_bw(self, rs: RateSample) -> None:
        """STARTUP ends when three rounds in a row grew the bandwidth by less than 25%."""
        if self.full_bw_reached or not self._round_start or rs.app_limited:
            return
        bw = self._bw_max
        if bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self.full_bw_reached = True

    def _judge_round(self, rs: RateSample) -> None:
        """At each round's end: did it lose data to a queue (congestion, another flow filling
        it) or at random?  Did STARTUP overflow the queue?  Then sample the new round: its
        losses and its smallest RTT."""
        if self._round_start:
            m = self._round_min_rtt
            base = self._base_rtt
            queued = self._queued()
            if m > 0.0 and base > 0.0:
                if self._round_lost and queued:
                    self.congested = True
                elif m <= base * DRAINED_RTT_FACTOR:
                    self.congested = False
            if queued and not self.full_bw_reached and self._overflowed(rs):
                # The bandwidth is found: the queue is full and drops what STARTUP's gain
                # sends beyond the link.  Waiting for three rounds without growth (which
                # recovery stretches) went on overfilling it: on a 100 Mbit/s, 100 ms path
                # with a one-BDP queue, 4.6% of the packets were dropped there.
                self.full_bw_reached = True
            if self.phase == PROBE_BW:
                self.cwnd_gain = CONGESTED_CWND_GAIN if self.congested else CWND_GAIN
            self._last_round_min_rtt = m
            self._round_min_rtt = 0.0
            self._round_lost = False
            self._round_start_delivered = rs.prior_delivered + rs.delivered
            self._round_lost_bytes = 0
            self._round_loss_events = 0
        if rs.losses:
            self._round_lost = True
            self._round_lost_bytes += rs.losses
            self._round_loss_events += 1
        rtt = rs.rtt_s
        if rtt is not None and rtt > 0.0:
            if self._round_min_rtt == 0.0 or rtt < self._round_min_rtt:
                self._round_min_rtt = rtt
            if self._base_rtt == 0.0 or rtt < self._base_rtt:
                self._base_rtt = rtt
        # The path's own RTT is also the connection's smallest, the handshake's included
        # (a queue may stand from the first data segment on).
        path = rs.path_min_rtt_s
        if path is not None and path > 0.0 and (self._base_rtt == 0.0 or path < self._base_rtt):
            self._base_rtt = path
        if (
            self.phase == STARTUP
            and rtt is not None
            and self._base_rtt > 0.0
            and rtt > self._base_rtt * QUEUED_RTT_FACTOR
        ):
            # The link is full (a queue has formed) before the bandwidth stops growing:
            # STARTUP's window comes down to two BDPs, so the queue it builds until then
            # holds at most one rather than nearly two.  The sample shows a queue at once,
            # while losses show its overflow a round trip after it began.
            self.cwnd_gain = CWND_GAIN

    def _queued(self) -> bool:
        """Whether the round under way (or, before its first sample, the one before) has
        waited in a queue: even its smallest RTT is a quarter above the path's."""
        m = self._round_min_rtt or self._last_round_min_rtt
        base = self._base_rtt
        return m > 0.0 and base > 0.0 and m > base * QUEUED_RTT_FACTOR

    def _overflowed(self, rs: RateSample) -> bool:
        """Whether the round just ended lost enough, often enough, to be a queue overflowing
        rather than random loss."""
        lost = self._round_lost_bytes
        if self._round_loss_events < STARTUP_LOSS_EVENTS or lost == 0:
            return False
        delivered = rs.prior_delivered + rs.delivered - self._round_start_delivered
        return float(lost) >= STARTUP_LOSS_RATE * float(delivered + lost)

    def _enter_probe_bw(self, now: float) -> None:
        self.phase = PROBE_BW
        self.cwnd_gain = CONGESTED_CWND_GAIN if self.congested else CWND_GAIN
        self._cycle_index = PROBE_BW_START_PHASE
        self.pacing_gain = PACING_GAINS[self._cycle_index]
        self._cycle_stamp = now

    def _update_phase(self, rs: RateSample, now: float) -> None:
        if self.phase == STARTUP and self.full_bw_reached:
            self.phase = DRAIN
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = HIGH_GAIN
        if self.phase == DRAIN and rs.in_flight <= self._inflight(1.0):
            self._enter_probe_bw(now)
        if self.phase == PROBE_BW and self._next_cycle_phase(rs, now):
            self._cycle_index = (self._cycle_index + 1) % len(PACING_GAINS)
            self.pacing_gain = PACING_GAINS[self._cycle_index]
            self._cycle_stamp = now

    def _next_cycle_phase(self, rs: RateSample, now: float) -> bool:
        """Whether PROBE_BW's gain cycle moves on (Linux's bbr_is_next_cycle_phase)."""
        full_length = now - self._cycle_stamp > self._rtt_min
        gain = self.pacing_gain
        if gain == 1.0:
            return full_length
        if gain > 1.0:
            # Probing: after a round, go on until the extra data is in flight, unless data
            # was lost (the queue may not hold that much).
            return full_length and (rs.losses > 0 or rs.in_flight >= self._inflight(gain))
        # Draining what the probe queued: done as soon as the flight is down to one BDP (and
        # the budget).
        return full_length or rs.in_flight <= self._inflight(1.0)

    def _update_min_rtt(self, rs: RateSample, now: float) -> None:
        # The window starts with the first sample (the driver's clock need not start at 0).
        has = self._has_rtt_min
        expired = has and now > self._min_rtt_stamp + MIN_RTT_WINDOW_S
        rtt = rs.rtt_s
        if not has:
            # The first estimate starts from the connection's smallest RTT, the handshake's
            # included, as Linux's bbr_init takes tcp_min_rtt: beside another flow's slow
            # start the first data segments may already wait in its queue.
            seed = rs.path_min_rtt_s
            if seed is not None and (rtt is None or seed < rtt):
                rtt = seed
        if rtt is not None and (not has or rtt <= self._rtt_min or expired):
            if not has or rtt != self._rtt_min:
                self.min_rtt = rtt
                self._rtt_min = rtt
                self._has_rtt_min = True
            self._min_rtt_stamp = now
        if expired and self.phase != PROBE_RTT and self._has_rtt_min:
            self.phase = PROBE_RTT
            self.pacing_gain = 1.0
            self.cwnd_gain = 1.0
            self._prior_cwnd = max(self._prior_cwnd, self.cwnd)
            self._probe_rtt_done_at = 0.0
        if self.phase == PROBE_RTT:
            if self._probe_rtt_done_at == 0.0 and rs.in_flight <= MIN_CWND_SEGMENTS * self.mss:
                self._probe_rtt_done_at = now + PROBE_RTT_S
                self._probe_rtt_round_done = False
                self._next_round_delivered = rs.prior_delivered + rs.delivered
            elif self._probe_rtt_done_at:
                if self._round_start:
                    self._probe_rtt_round_done = True
                if self._probe_rtt_round_done and now >= self._probe_rtt_done_at:
                    self._min_rtt_stamp = now
                    self.cwnd = max(self.cwnd, self._prior_cwnd)
                    self._prior_cwnd = 0
                    if self.full_bw_reached:
                        self._enter_probe_bw(now)
                    else:
                        self.phase = STARTUP
                        self.pacing_gain = self.cwnd_gain = HIGH_GAIN

    def _set_pacing_rate(self) -> None:
        if self.pacing_rate is None:
            rtt = self._rtt_min
            if not rtt:
                return
            # The first RTT: the initial window per RTT at the startup gain, the floor of
            # STARTUP's rate (Linux's bbr_init_pacing_rate_from_rtt).  The first delivery
            # rate is an ACK's worth of data per RTT; taken alone it paced STARTUP's first
            # round below its window, and an application-limited flow (which never leaves
            # STARTUP) at what the application had written: a thin stream's messages then
            # waited in the pacer.
            self.pacing_rate = HIGH_GAIN * self.cwnd / rtt * PACING_MARGIN
        bw = self._bw_max
        if bw == 0.0:
            return
        rate = self.pacing_gain * bw * PACING_MARGIN
        # In STARTUP the rate only rises: an early low sample must not slow the ramp.
        if self.full_bw_reached or rate > self.pacing_rate:
            self.pacing_rate = rate

    def _set_cwnd(self, rs: RateSample) -> None:
        acked: i64 = rs.newly_acked
        target = self._target_cwnd()
        mss: i64 = self.mss
        min_cwnd = MIN_CWND_SEGMENTS * mss
        cwnd: i64 = self.cwnd
        if rs.losses:
            # What was just declared lost left the flight and comes off the window, as in
            # Linux (bbr_set_cwnd_to_recover_or_restore): a STARTUP that overfilled the
            # queue stops feeding it while the losses are repaired.
            cwnd = max(cwnd - rs.losses, mss)
        if self._round < self._conservation_round:
            # Packet conservation in a recovery episode's first round: send one for one.
            cwnd = max(cwnd, rs.in_flight + acked)
        elif self.full_bw_reached:
            cwnd = min(cwnd + acked, target)
        elif cwnd < target or rs.prior_delivered + rs.delivered < self._init_cwnd:
            cwnd += acked
        if self._restore_round >= 0 and self._round >= self._restore_round:
            cwnd = max(cwnd, self._prior_cwnd)
            self._restore_round = -1
            self._prior_cwnd = 0
        if cwnd < min_cwnd:
            cwnd = min_cwnd
        if self.phase == PROBE_RTT and cwnd > min_cwnd:
            cwnd = min_cwnd
        self.cwnd = cwnd

    @property
    def in_slow_start(self) -> bool:
        """STARTUP, until the bandwidth is found (the pacer's bursts follow it)."""
        return not self.full_bw_reached

    # ------------------------------------------------------------------ inputs

    def on_rate_sample(self, sample: RateSample, *, now: float) -> None:
        self._in_flight = sample.in_flight
        self._delivered = sample.prior_delivered + sample.delivered
        self._update_round(sample)
        self._judge_round(sample)
        self._update_bw(sample)
        self._check_full_bw(sample)
        self._update_phase(sample, now)
        self._update_min_rtt(sample, now)
        self._set_pacing_rate()
        self._set_cwnd(sample)

    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        """Nothing: every acknowledgement reaches ``on_rate_sample``."""

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        """A recovery episode starts: keep the window to restore at its end, and for one
        round send only as much as is delivered.  The round starts now, as Linux's does: the
        first acknowledgement of data sent from here on ends it (left to the round under
        way, conservation would last up to two round trips)."""
        if self._in_episode:
            # A loss of data sent since the episode began: the episode goes on, as Linux's
            # single recovery state does.  Packet conservation again would pin the window
            # to the flight once a round under steady random loss, and never let it grow.
            return
        if not self._queued():
            # Random loss: no queue is overflowing, so there is nothing for conservation to
            # protect.  Holding the flight for a round at every episode halved STARTUP's
            # growth at 1% loss (1.5 s rather than 0.8 s to fill a 100 Mbit/s, 100 ms path).
            return
        self._in_episode = True
        if not self._prior_cwnd:
            self._prior_cwnd = self.cwnd
        self._next_round_delivered = self._delivered
        self._conservation_round = self._round + 1
        self.cwnd = max(self._in_flight, MIN_CWND_SEGMENTS * self.mss)

    def on_recovery_exit(self, *, now: float) -> None:
        self._in_episode = False
        self._conservation_round = -1
        if self._prior_cwnd:
            self.cwnd = max(self.cwnd, self._prior_cwnd)
            self._prior_cwnd = 0

    def on_timeout(self, flight_size: int, *, now: float) -> None:
        """The retransmission timer expired: one segment at a time until a round trip shows
        the path again, then the window from before (the model is kept)."""
        self._prior_cwnd = max(self._prior_cwnd, self.cwnd)
        self._in_episode = False
        self._conservation_round = -1
        self._restore_round = self._round + 1
        self.cwnd = self.mss


# Not a decorator: the compiled build keeps the class native only if it has none.
register(Bbr)
