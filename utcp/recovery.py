"""Round-trip time estimation and the retransmission timeout (RFC 6298).

The estimator is fed RTT samples only from segments sent once (Karn's rule, enforced by the
caller) and keeps the RTO within the configured bounds, also after exponential backoff.  The
minimum RTO is a margin over SRTT, as in Linux, rather than RFC 6298's floor under the whole
timeout (``RttEstimator.on_sample`` says why).
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from typing import Final

_ALPHA: Final = 1 / 8  # RFC 6298 section 2.3
_BETA: Final = 1 / 4
_K: Final = 4
_G_S: Final = 0.001  # clock granularity we assume, seconds


class RttEstimator:
    """SRTT, RTTVAR and RTO with exponential backoff."""

    __slots__ = (
        "_backoff",
        "_rto_base",
        "latest_rtt",
        "min_rtt",
        "rto_max",
        "rto_min",
        "rttvar",
        "srtt",
    )

    def __init__(self, *, initial_rto_s: float, rto_min_s: float, rto_max_s: float) -> None:
        self.rto_min = rto_min_s
        self.rto_max = rto_max_s
        self.srtt: float | None = None
        self.rttvar: float = 0.0
        self.latest_rtt: float | None = None
        self.min_rtt: float | None = None
        self._rto_base = min(max(initial_rto_s, rto_min_s), rto_max_s)
        self._backoff = 0

    @property
    def rto(self) -> float:
        """The current timeout, backoff included, clamped to [rto_min, rto_max]."""
        return min(self._rto_base * (1 << self._backoff), self.rto_max)

    @property
    def base_rto(self) -> float:
        """The timeout without backoff: what a round trip on the path should take at most,
        whatever the timer's doublings while the peer was out of reach."""
        return self._rto_base

    @property
    def backoff(self) -> int:
        """How many times the timer has doubled since the last RTT sample (or path change)."""
        return self._backoff

    def on_sample(self, rtt_s: float) -> None:
        """Fold in one RTT measurement (RFC 6298 sections 2.2 and 2.3)."""
        if rtt_s < 0.0:
            rtt_s = 0.0
        self.latest_rtt = rtt_s
        if self.min_rtt is None or rtt_s < self.min_rtt:
            self.min_rtt = rtt_s
        srtt = self.srtt
        if srtt is None:
            srtt = rtt_s
            rttvar = rtt_s / 2
        else:
            rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(srtt - rtt_s)
            srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt_s
        self.srtt = srtt
        self.rttvar = rttvar
        # The variation term is at least ``rto_min`` (Linux's tcp_rtt_estimator keeps its
        # rttvar_us at tcp_rto_min or above): with an RTT sample from nearly every ACK, RTTVAR
        # shrinks to the spread within one round trip, and a timeout of SRTT plus that fires
        # as soon as a retransmission queues behind a full bottleneck for one round trip.
        margin = _K * rttvar if _K * rttvar > _G_S else _G_S
        if margin < self.rto_min:
            margin = self.rto_min
        base = srtt + margin
        self._rto_base = base if base < self.rto_max else self.rto_max
        self._backoff = 0

    def back_off(self) -> None:
        """Double the timeout after an expiry (RFC 6298 section 5.5)."""
        if self._rto_base * (1 << self._backoff) < self.rto_max:
            self._backoff += 1

    def reset_backoff(self) -> None:
        """The connection moved to a new path: the timeouts that doubled the timer went to
        where the peer no longer was (an ACK of resent data does not clear it: only an RTT
        sample does, in ``on_sample``)."""
        self._backoff = 0


class SentSegment:
    """One transmitted segment awaiting acknowledgement; ``end`` includes a FIN's position."""

    __slots__ = (
        "acked",
        "app_limited",
        "delivered",
        "delivered_time",
        "end",
        "first_sent_time",
        "in_pipe",
        "lost",
        "retx",
        "sacked",
        "sent_at",
        "start",
        "tx",
    )

    def __init__(self, start: int, end: int, sent_at: float) -> None:
        self.start = start
        self.end = end
        self.sent_at = sent_at
        self.tx = 0  # transmission order of its latest sending, across all segments
        self.acked = False
        self.retx = 0  # times retransmitted
        self.sacked = False
        self.lost = False  # declared lost and not yet sent again
        self.in_pipe = True  # counted in ``Scoreboard.pipe``
        # The connection's delivery state when it was (last) sent, for the delivery rate
        # sample its acknowledgement gives (draft-cheng-iccrg-delivery-rate-estimation).
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited = False


def _start_key(seg: SentSegment) -> int:
    return seg.start


class Scoreboard:
    """Segments in flight, their SACK and loss marks, and the pipe (RFC 6675 section 4).

    Segments are kept in position order.  ``pipe`` is maintained incrementally: bytes sent and
    neither acknowledged, SACKed nor declared lost (a retransmission counts again).
    """

    __slots__ = (
        "_head",
        "_loss_scan",
        "_lost",
        "_retx_order",
        "_tx",
        "app_limited_until",
        "delivered",
        "delivered_time",
        "first_sent_time",
        "highest_sacked",
        "highest_sacked_tx",
        "lost_bytes",
        "lost_log",
        "newest_delivered",
        "pipe",
        "prior_fack",
        "rack_lost_tx",
        "rack_pending",
        "reordering_seen",
        "sack_rtt_seg",
        "sacked_segs",
        "segs",
    )

    def __init__(self) -> None:
        self.segs: list[SentSegment] = []
        self._head = 0  # index of the oldest live segment
        self._loss_scan = 0  # segments before this index were judged against highest_sacked
        self._lost: deque[SentSegment] = deque()  # declared lost, awaiting retransmission
        self.pipe = 0
        self.highest_sacked = 0
        self._tx = 0
        self.highest_sacked_tx = 0  # latest transmission known to have arrived (SACKed)
        self._retx_order: deque[tuple[int, SentSegment]] = deque()  # retransmissions, in order
        # When a list, every segment newly declared lost is appended to it (for tracing; the
        # owner empties it).  None, the default, costs one test per loss.
        self.lost_log: list[SentSegment] | None = None
        self.lost_bytes = 0  # bytes ever declared lost (a rate sample's losses are a difference)
        # Delivery accounting for rate samples (draft-cheng-iccrg-delivery-rate-estimation):
        # bytes delivered (cumulatively ACKed or SACKed) so far and when the latest were,
        # the send time of the first segment of the current flight, the delivered mark below
        # which samples are application-limited (0: none), and the most recently sent segment
        # delivered since the last sample was taken.
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited_until = 0
        self.newest_delivered: SentSegment | None = None
        # The most recently sent segment, never retransmitted, that the SACK blocks of the ACK
        # being processed reported for the first time (its RTT sample; the owner clears it).
        self.sack_rtt_seg: SentSegment | None = None
        # RACK (RFC 8985): segments SACKed and not yet cumulatively acknowledged; whether a
        # segment never retransmitted was delivered below one delivered before it (the path
        # reorders); the highest SACKed end before the ACK being processed, which the owner
        # sets (RACK.fack); when the next segment waiting on the reordering window expires.
        self.sacked_segs = 0
        self.reordering_seen = False
        self.prior_fack = 0
        self.rack_pending = 0.0
        self.rack_lost_tx = 0  # the latest transmission RACK has declared lost

    @property
    def last_tx(self) -> int:
        """The number of the latest transmission (0: none yet)."""
        return self._tx

    def __len__(self) -> int:
        return len(self.segs) - self._head

    def first(self) -> SentSegment | None:
        """The oldest unacknowledged segment."""
        return self.segs[self._head] if self._head < len(self.segs) else None

    def last(self) -> SentSegment | None:
        """The newest segment sent."""
        return self.segs[-1] if self._head < len(self.segs) else None

    def _stamp(self, seg: SentSegment, now: float) -> None:
        """Note the delivery state ``seg`` leaves in (on each of its transmissions)."""
        if not self.pipe:
            # Nothing in flight: the flight, and the rate sample's intervals, start now.
            self.first_sent_time = self.delivered_time = now
        seg.delivered = self.delivered
        seg.delivered_time = self.delivered_time
        seg.first_sent_time = self.first_sent_time
        seg.app_limited = self.app_limited_until != 0

    def add(self, seg: SentSegment) -> None:
        """Record a first transmission."""
        self._stamp(seg, seg.sent_at)
        self._tx += 1
        seg.tx = self._tx
        self.segs.append(seg)
        self.pipe += seg.end - seg.start

    def retransmitted(self, seg: SentSegment, now: float) -> None:
        """Record that ``seg`` was sent again."""
        self._stamp(seg, now)
        self._tx += 1
        seg.tx = self._tx
        self._retx_order.append((seg.tx, seg))
        seg.retx += 1
        seg.sent_at = now
        seg.lost = False
        if not seg.in_pipe:
            seg.in_pipe = True
            self.pipe += seg.end - seg.start

    def _leave_pipe(self, seg: SentSegment) -> None:
        if seg.in_pipe:
            seg.in_pipe = False
            self.pipe -= seg.end - seg.start

    def _delivered(self, seg: SentSegment, now: float) -> None:
        """``seg`` reached the peer (ACKed or SACKed for the first time)."""
        if seg.end <= self.prior_fack and not seg.retx:
            # Sent once, delivered after a later segment was (RFC 8985 section 6.2 step 3).
            self.reordering_seen = True
        self.delivered += seg.end - seg.start
        self.delivered_time = now
        newest = self.newest_delivered
        if newest is None or seg.tx > newest.tx:
            self.newest_delivered = seg

    def ack_to(self, position: int, now: float = 0.0) -> list[SentSegment]:
        """Remove and return the segments wholly before ``position`` (cumulative ACK)."""
        segs = self.segs
        i = self._head
        n = len(segs)
        while i < n:
            seg = segs[i]
            if seg.end > position:
                break
            if seg.in_pipe:
                seg.in_pipe = False
                self.pipe -= seg.end - seg.start
            if not seg.sacked:
                self._delivered(seg, now)
            else:
                self.sacked_segs -= 1
            seg.acked = True
            i += 1
        acked = segs[self._head : i]
        self._head = i
        if self._loss_scan < i:
            self._loss_scan = i
        if i > 1024 and i * 2 > n:
            del segs[:i]
            self._loss_scan -= i
            self._head = 0
        return acked

    def on_sack(self, start: int, end: int, now: float = 0.0) -> int:
        """Mark segments wholly inside [start, end) as SACKed; return bytes newly SACKed.

        The most recently sent of them that was sent once is kept in ``sack_rtt_seg``: its
        RTT sample stands in for the cumulative ACK's when that gives none (as Linux's
        tcp_ack_update_rtt takes its sack_rtt), because under steady loss there is nearly
        always a hole, every advance of the cumulative ACK covers a retransmission, and
        Karn's rule would leave the estimate where the first loss found it.
        """
        segs = self.segs
        i = bisect.bisect_left(segs, start, lo=self._head, key=_start_key)
        n = len(segs)
        newly = 0
        newest = 0
        while i < n and segs[i].end <= end:
            seg = segs[i]
            if not seg.sacked:
                seg.sacked = True
                seg.lost = False
                self._leave_pipe(seg)
                self._delivered(seg, now)
                self.sacked_segs += 1
                newly += seg.end - seg.start
                newest = seg.end
                if seg.tx > self.highest_sacked_tx:
                    self.highest_sacked_tx = seg.tx
                if not seg.retx:
                    best = self.sack_rtt_seg
                    if best is None or seg.tx > best.tx:
                        self.sack_rtt_seg = seg
            i += 1
        if newest > self.highest_sacked:
            self.highest_sacked = newest
        return newly

    def take_sack_rtt_seg(self) -> SentSegment | None:
        """The segment for the RTT sample of the SACK blocks just marked (see ``on_sack``),
        forgotten as it is handed over."""
        seg = self.sack_rtt_seg
        self.sack_rtt_seg = None
        return seg

    def detect_losses(self, threshold_bytes: int, dupthresh: int = 3) -> int:
        """Declare lost every unSACKed segment with ``threshold_bytes`` SACKed beyond it, and
        every retransmission followed by ``dupthresh`` later transmissions that arrived.

        The first rule simplifies RFC 6675 IsLost(): the distance to the highest SACKed
        position stands in for the count of SACKed bytes above.  The second applies the same
        reasoning in transmission order (in the spirit of RACK, RFC 8985), so a lost
        retransmission is found without waiting for the retransmission timer.
        Returns bytes newly declared lost.
        """
        limit = self.highest_sacked - threshold_bytes
        segs = self.segs
        i = self._loss_scan
        n = len(segs)
        newly = 0
        while i < n and segs[i].end <= limit:
            seg = segs[i]
            if not seg.sacked and not seg.lost and seg.retx == 0:
                newly += self.mark_lost(seg)
            i += 1
        self._loss_scan = i
        order = self._retx_order
        while order and order[0][0] + dupthresh <= self.highest_sacked_tx:
            tx, seg = order.popleft()
            if seg.tx == tx and not seg.acked and not seg.sacked and seg.in_pipe:
                newly += self.mark_lost(seg)
        return newly

    def rack_detect(self, rack_tx: int, threshold_s: float, now: float) -> int:
        """RACK's loss detection (RFC 8985 section 6.2 step 5): every segment outstanding that
        was sent before the most recently sent segment delivered (transmission ``rack_tx``)
        and ``threshold_s`` (RACK.rtt + RACK.reo_wnd) ago or more is lost.  Returns bytes
        newly declared lost; ``rack_pending`` becomes the time the next such segment would
        be (0.0: none waits).

        Segments are visited in transmission order, and each walk stops at the first one
        not yet due: first transmissions in position order from ``_loss_scan``, then the
        retransmissions in the order they were sent."""
        segs = self.segs
        i = self._loss_scan
        n = len(segs)
        newly = 0
        pending = 0.0
        while i < n:
            seg = segs[i]
            if seg.sacked or seg.lost or seg.retx:
                i += 1  # delivered, already lost, or judged as a retransmission below
                continue
            if seg.tx >= rack_tx:
                break
            due = seg.sent_at + threshold_s
            if due > now:
                pending = due
                break
            newly += self.mark_lost(seg)
            if seg.tx > self.rack_lost_tx:
                self.rack_lost_tx = seg.tx
            i += 1
        self._loss_scan = i
        order = self._retx_order
        while order:
            tx, seg = order[0]
            if seg.tx != tx or seg.acked or seg.sacked or not seg.in_pipe:
                order.popleft()  # sent again since, delivered, or already lost
                continue
            if tx >= rack_tx:
                break
            due = seg.sent_at + threshold_s
            if due > now:
                if not pending or due < pending:
                    pending = due
                break
            order.popleft()
            newly += self.mark_lost(seg)
            if tx > self.rack_lost_tx:
                self.rack_lost_tx = tx
        self.rack_pending = pending
        return newly

    def mark_lost(self, seg: SentSegment) -> int:
        """Declare ``seg`` lost so it is sent again; returns its length (0 if already so)."""
        if seg.lost or seg.sacked:
            return 0
        seg.lost = True
        self._leave_pipe(seg)
        self._lost.append(seg)
        if self.lost_log is not None:
            self.lost_log.append(seg)
        length = seg.end - seg.start
        self.lost_bytes += length
        return length

    def mark_all_lost(self) -> bool:
        """After a retransmission timeout every unSACKed segment is presumed lost.

        When even the oldest unacknowledged segment is SACKed, the receiver has reneged
        (dropped data it had SACKed, which RFC 2018 section 8 allows) or the SACK was forged:
        no SACK mark holds any more and every segment is presumed lost, as Linux's
        tcp_timeout_mark_lost does.  Without this the segment was never sent again and the
        connection stalled until it timed out.  True in that case."""
        segs = self.segs
        head = self._head
        reneged = head < len(segs) and segs[head].sacked
        if reneged:
            for seg in segs[head:]:
                seg.sacked = False
            self.sacked_segs = 0
            self.highest_sacked = self.highest_sacked_tx = 0
        self._lost.clear()
        for seg in segs[head:]:
            if not seg.sacked:
                seg.lost = False
                self.mark_lost(seg)
        self._loss_scan = len(segs)
        return reneged

    def split(self, seg: SentSegment, cuts: list[int]) -> None:
        """Cut ``seg``, a segment awaiting retransmission, at ``cuts`` (ascending positions
        inside it) into pieces that are each lost, and resent, on their own.

        The pieces keep the segment's history (send time, retransmission count, so Karn's
        rule still holds) and its place, in position order and in the retransmission queue.
        """
        assert seg.lost and cuts and seg.start < cuts[0] and cuts[-1] < seg.end
        bounds = [*cuts, seg.end]
        pieces = []
        for lo, hi in itertools.pairwise(bounds):
            piece = SentSegment(lo, hi, seg.sent_at)
            piece.tx = seg.tx
            piece.retx = seg.retx
            piece.lost = True
            piece.in_pipe = False
            piece.delivered = seg.delivered
            piece.delivered_time = seg.delivered_time
            piece.first_sent_time = seg.first_sent_time
            piece.app_limited = seg.app_limited
            pieces.append(piece)
        seg.end = cuts[0]
        segs = self.segs
        i = bisect.bisect_left(segs, seg.start, lo=self._head, key=_start_key)
        assert segs[i] is seg
        segs[i + 1 : i + 1] = pieces
        if self._loss_scan > i:
            self._loss_scan += len(pieces)
        lost = self._lost
        j = lost.index(seg) + 1
        for k, piece in enumerate(pieces):
            lost.insert(j + k, piece)

    @property
    def has_lost(self) -> bool:
        """Whether a segment may be waiting for retransmission (``next_lost`` says which)."""
        return bool(self._lost)

    def next_lost(self, acked_to: int) -> SentSegment | None:
        """The oldest segment still waiting to be retransmitted, or None."""
        lost = self._lost
        while lost:
            seg = lost[0]
            if seg.lost and seg.end > acked_to:
                return seg
            lost.popleft()
        return None

    def mark_app_limited(self) -> None:
        """The sender has nothing more to send with room in its window: rate samples until
        what is in flight now is delivered measure the application, not the path."""
        self.app_limited_until = max(self.delivered + self.pipe, 1)

    def clear(self) -> None:
        """Forget everything (the connection is gone)."""
        self.segs.clear()
        self._lost.clear()
        self._retx_order.clear()
        self._head = self._loss_scan = self.pipe = self.highest_sacked = 0
        self._tx = self.highest_sacked_tx = 0
        self.sacked_segs = self.prior_fack = self.rack_lost_tx = 0
        self.rack_pending = 0.0
        self.newest_delivered = self.sack_rtt_seg = None
