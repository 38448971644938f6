"""Pacing: segments leave at the congestion controller's pacing rate instead of in
window-sized bursts, which a shallow bottleneck queue would drop together.

A token bucket filled at the pacing rate.  Its depth is one quantum: ``QUANTUM_S`` of data at
the rate, and never less than two segments (as Linux's TSO autosizing sizes its bursts), or
ten (the default initial window, the burst RFC 9002 section 7.7 allows, and quinn's smallest)
while the controller is still finding the path's rate, so a datagrams_to_send call sends at
most a small batch (a GSO batch on the fast I/O path).  A segment may also borrow up to one
quantum ahead: below that the wait would be shorter than the loop timer (about a
millisecond) can measure, so at loopback rates pacing costs nothing; once the borrowed
quantum is spent, the timer is set for when the next segment is due.  The bucket keeps what
a timer that fired up to one quantum late should have spent (two quanta in all): a late
wake-up then sends what was due instead of losing that time, which on a 20 Mbit/s path cost
BBR about 1% of the link.  Without an RTT sample there is no rate, and nothing is paced.
"""

from __future__ import annotations

from typing import Final, final

from ..congestion import BURST_S, CongestionController, burst_bytes

__all__ = ["QUANTUM_S", "Pacer"]

QUANTUM_S: Final = BURST_S  # one burst: a millisecond of data at the pacing rate
_SLOW_START_GAIN: Final = 2.0  # Linux's tcp_pacing_ss_ratio (200%)
_AVOIDANCE_GAIN: Final = 1.2  # Linux's tcp_pacing_ca_ratio (120%)
# While the controller is still finding the path's rate (slow start, BBR's STARTUP) a quantum
# is at least ten segments: the default initial window, the burst RFC 9002 section 7.7 allows
# (quinn's smallest burst too).  At the low per-connection rates of many connections at once,
# two-segment quanta woke each connection for every segment or two, each sent on its own:
# 200 loopback connections echoing 256 KiB each moved 150 MB/s against 205 with this floor.
# Once the rate is found the bursts are Linux's again: ten-segment bursts all along put two
# flows sharing a 50-packet queue off balance (Jain's index 0.94-0.99 against 0.999).
SLOW_START_BURST_SEGMENTS: Final = 10
_MIN_WAIT_S: Final = 1e-6
_KEPT_QUANTA: Final = 2.0  # the bucket holds this many quanta of unspent rate


@final
class Pacer:
    """When the next segment may leave."""

    def __init__(self, *, enabled: bool, default_rate: bool = False) -> None:
        self.enabled = enabled
        self.default_rate = default_rate  # pace a controller that sets no rate of its own
        self.rate = 0.0  # bytes per second; 0.0 when not pacing
        self.tokens = 0.0  # bytes that may leave now (negative: borrowed ahead)
        self._depth = 0.0
        self._last = 0.0

    def update(self, cc: CongestionController, srtt: float | None, mss: int, now: float) -> None:
        """Take the controller's rate (or the default one from cwnd and the smoothed RTT) and
        refill the bucket for the time since the last update."""
        rate = self.rate_for(cc, srtt)
        if rate == 0.0:
            self.rate = 0.0
            return
        depth = burst_bytes(rate, mss)
        if cc.in_slow_start and depth < SLOW_START_BURST_SEGMENTS * mss:
            depth = float(SLOW_START_BURST_SEGMENTS * mss)
        if self.rate == 0.0:
            self.tokens = depth  # pacing starts with one quantum
        else:
            tokens = self.tokens + (now - self._last) * rate
            kept = _KEPT_QUANTA * depth
            self.tokens = tokens if tokens < kept else kept
        self.rate = rate
        self._depth = depth
        self._last = now

    def rate_for(self, cc: CongestionController, srtt: float | None) -> float:
        """The rate the next ``update`` takes: the controller's, or the default one from
        cwnd and the smoothed RTT; 0.0 when not pacing."""
        if not self.enabled:
            return 0.0
        rate = cc.pacing_rate
        if rate is None:
            if not srtt or not self.default_rate:
                return 0.0
            gain = _SLOW_START_GAIN if cc.cwnd < cc.ssthresh else _AVOIDANCE_GAIN
            return gain * cc.cwnd / srtt
        return rate

    def may_send(self, n: int) -> bool:
        """Whether ``n`` bytes may leave now (borrowing at most one quantum ahead)."""
        return self.rate == 0.0 or self.tokens + self._depth >= n

    def sent(self, n: int) -> None:
        """``n`` bytes left."""
        if self.rate != 0.0:
            self.tokens -= n

    def next_send_at(self, n: int, now: float) -> float:
        """When ``n`` bytes may leave, for the pacing timer (``may_send`` said no)."""
        wait = (n - self.tokens - self._depth) / self.rate
        # Never "now": a wait below the clock's resolution would fire and find the bucket
        # as empty as before.
        return now + (wait if wait > _MIN_WAIT_S else _MIN_WAIT_S)
