"""Pacing: segments leave at the congestion controller's pacing rate instead of in
window-sized bursts, which a shallow bottleneck queue would drop together.

A token bucket filled at the pacing rate.  Its depth is one quantum: ``QUANTUM_S`` of data at
the rate, and never less than two segments (as Linux's TSO autosizing sizes its bursts and
quinn's pacer its bursts), so a datagrams_to_send call sends a small batch (a GSO batch on
the fast I/O path) and the loop timer, whose granularity is about a millisecond, is asked
for at most one wake-up per quantum.  A segment may also borrow up to one quantum ahead:
below that the wait would be shorter than the timer can measure, so at loopback rates pacing
costs nothing.  The bucket keeps what a timer that fired up to one quantum late should have
spent (two quanta in all): a late wake-up then sends what was due instead of losing that time,
which on a 20 Mbit/s path cost BBR about 1% of the link.  Without an RTT sample there is no
rate, and nothing is paced.
"""

from __future__ import annotations

from typing import Final, final

from ..congestion import BURST_S, CongestionController, burst_bytes

__all__ = ["QUANTUM_S", "Pacer"]

QUANTUM_S: Final = BURST_S  # one burst: a millisecond of data at the pacing rate
_SLOW_START_GAIN: Final = 2.0  # Linux's tcp_pacing_ss_ratio (200%)
_AVOIDANCE_GAIN: Final = 1.2  # Linux's tcp_pacing_ca_ratio (120%)
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
        if not self.enabled:
            return
        rate = cc.pacing_rate
        if rate is None:
            if not srtt or not self.default_rate:
                self.rate = 0.0
                return
            gain = _SLOW_START_GAIN if cc.cwnd < cc.ssthresh else _AVOIDANCE_GAIN
            rate = gain * cc.cwnd / srtt
        depth = burst_bytes(rate, mss)
        if self.rate == 0.0:
            self.tokens = depth  # pacing starts with one quantum
        else:
            tokens = self.tokens + (now - self._last) * rate
            kept = _KEPT_QUANTA * depth
            self.tokens = tokens if tokens < kept else kept
        self.rate = rate
        self._depth = depth
        self._last = now

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
