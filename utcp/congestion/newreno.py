"""NewReno congestion control: slow start, congestion avoidance, multiplicative decrease.

RFC 5681 sections 3.1-3.2 and RFC 6582; the recovery episode itself is run by the connection.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from .base import CongestionController, register


@mypyc_attr(allow_interpreted_subclasses=True)
class NewReno(CongestionController):
    """The standard TCP algorithm, with appropriate byte counting (RFC 3465, L = 2 SMSS)."""

    name = "newreno"

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self._ca_acked = 0  # bytes acked since cwnd last grew in congestion avoidance
        self._undone = False  # the episode under way was found spurious and undone

    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        if self.in_slow_start:
            self.cwnd += min(acked_bytes, 2 * self.mss)
            return
        # One SMSS per window of data acknowledged (RFC 5681 section 3.1, byte-counting form).
        self._ca_acked += acked_bytes
        if self._ca_acked >= self.cwnd:
            self._ca_acked -= self.cwnd
            self.cwnd += self.mss

    def _reduce(self, flight_size: int) -> None:
        # RFC 5681 equation (4).
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self._ca_acked = 0

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        self._reduce(flight_size)
        self.cwnd = self.ssthresh
        self._undone = False

    def on_recovery_exit(self, *, now: float) -> None:
        if self._undone:
            self._undone = False
            return
        self.cwnd = self.ssthresh

    def on_spurious_congestion(self, prior_cwnd: int, prior_ssthresh: int, *, now: float) -> None:
        """The window and threshold from before the event, where larger than now (Linux's
        tcp_undo_cwnd_reduction); an episode still under way ends without deflating it."""
        if prior_cwnd > self.cwnd:
            self.cwnd = prior_cwnd
        if prior_ssthresh > self.ssthresh:
            self.ssthresh = prior_ssthresh
        self._ca_acked = 0
        self._undone = True

    def on_timeout(self, flight_size: int, *, now: float) -> None:
        self._undone = False
        self._reduce(flight_size)
        self.cwnd = self.mss  # loss window (RFC 5681 section 3.1)


# Not a decorator: the compiled build keeps NewReno a native class only if it has none.
register(NewReno)
