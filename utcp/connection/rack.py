"""RACK, the time-based half of RACK-TLP (RFC 8985 section 6): what the most recently sent
segment delivered says about those sent before it, and how long to wait for reordering.

A segment is lost once a segment sent after it has been delivered and ``rtt + reo_wnd``
has passed since it was sent: one reordering window after a later segment is acknowledged,
rather than after three duplicate ACKs.  The window starts at a quarter of the minimum RTT
(none at all until the path is seen to reorder and while three segments are SACKed), grows
by that much for each round trip in which a D-SACK shows a retransmission was spurious, and
falls back after sixteen recovery episodes without one (section 6.2 step 4).
The scoreboard walks the segments (``Scoreboard.rack_detect``); this part keeps RACK's
variables and is fed by ``LossRecovery``.
"""

from __future__ import annotations

from typing import Final, final

from ..recovery import SentSegment

__all__ = ["Rack"]

_REO_WND_PERSIST: Final = 16  # recoveries a grown window lasts without a D-SACK


@final
class Rack:
    """RACK.xmit_ts / end_seq (as the transmission number), RACK.rtt and the reordering
    window's state."""

    def __init__(self) -> None:
        self.xmit_tx = 0  # transmission order of the most recently sent segment delivered
        self.rtt = 0.0  # the RTT that segment measured (RACK.rtt)
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = _REO_WND_PERSIST
        self.dsack_round = -1  # SND.NXT when the window last grew: one growth per round

    def update(self, seg: SentSegment, now: float, min_rtt: float | None) -> None:
        """``seg`` is the most recently sent segment this ACK delivered (step 2)."""
        if seg.tx <= self.xmit_tx:
            return
        rtt = now - seg.sent_at
        if seg.retx and (min_rtt is None or rtt < min_rtt):
            # Quicker than the path allows: the ACK answers the original sending.
            return
        self.xmit_tx = seg.tx
        self.rtt = rtt

    def on_dsack(self, una: int, nxt: int) -> None:
        """An ACK carried a D-SACK: a retransmission was spurious, so the path reorders
        more than the window allowed; grow it, once per round trip (step 4)."""
        if self.dsack_round >= 0 and una >= self.dsack_round:
            self.dsack_round = -1
        if self.dsack_round < 0:
            self.dsack_round = nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = _REO_WND_PERSIST

    def on_recovery_exit(self) -> None:
        """A recovery episode ended: a grown window shrinks back after sixteen of them with
        no D-SACK."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1

    def reo_wnd(
        self,
        *,
        reordering_seen: bool,
        in_recovery: bool,
        sacked_segs: int,
        dupthresh: int,
        min_rtt: float | None,
        srtt: float | None,
    ) -> float:
        """The reordering window (RACK.reo_wnd, step 4), seconds."""
        if not reordering_seen and (in_recovery or sacked_segs >= dupthresh):
            return 0.0
        if min_rtt is None:
            return 0.0
        wnd = self.reo_wnd_mult * min_rtt / 4
        if srtt is not None and srtt < wnd:
            return srtt
        return wnd
