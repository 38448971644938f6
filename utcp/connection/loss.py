"""Loss recovery: the scoreboard of segments in flight, the RTT estimator, the congestion
controller, the recovery episode (RFC 6582 NewReno, RFC 6675 SACK), RACK-TLP's time-based
loss detection (RFC 8985, with SACK; ``Config.rack``) and the tail loss probe.

It learns from acknowledgements (``on_new_ack``, ``on_dupack``, ``on_sack``) and timers
(``on_timeout``, ``on_tlp``), declares segments lost for the sender to resend, and arms the
retransmission and probe deadlines.  Karn's rule holds here: no RTT sample from a segment
that was sent twice.  It never ends the connection; the timer handlers decide that.
"""

from __future__ import annotations

from typing import Any, Final, final

from .. import congestion
from ..config import Config
from ..congestion import RateSample
from ..packet import Flag, Packet
from ..recovery import RttEstimator, Scoreboard
from ..seqnum import seq_diff
from .counters import Counters
from .deadlines import Deadlines
from .options import Negotiated
from .rack import Rack
from .send_side import SendSide
from .tracepoints import TracePoints

__all__ = ["LossRecovery"]

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_SYN: Final = int(Flag.SYN)
_TLP_MIN_S: Final = 0.010  # floor of the probe timeout (RFC 8985 section 7.2 suggests 10 ms)
# Resends of one recovery episode that may still be found spurious and undone: beyond this
# many (a whole window lost, say) the episode is taken as real.
_UNDO_MAX_RESENDS: Final = 64


@final
class LossRecovery:
    """Scoreboard, RTT, congestion window and the recovery episode of one connection."""

    def __init__(
        self,
        config: Config,
        *,
        snd: SendSide,
        opts: Negotiated,
        deadlines: Deadlines,
        counters: Counters,
        trace: TracePoints,
        log: Any,
    ) -> None:
        self._cfg = config
        self.scoreboard = Scoreboard()
        self.rtt = RttEstimator(
            initial_rto_s=config.rto_initial_s,
            rto_min_s=config.rto_min_s,
            rto_max_s=config.rto_max_s,
        )
        self.cc = congestion.create(
            config.congestion_control,
            mss=config.mss_bytes,
            initial_window_segments=config.initial_cwnd_segments,
        )
        self.in_recovery = False
        self.recover = 0  # RFC 6582 "recover"
        # The last transmission before the current episode (or timeout) began: a loss of a
        # later one, a retransmission, is a new congestion event (RFC 9002 section 7.3.2).
        self.recovery_tx = 0
        self.dupacks = 0
        self.dupack_credit = 0  # bytes of dup-ACK inflation in recovery without SACK
        self.rexmit_now = False  # fast retransmit due: send it whatever the pipe says
        self.tlp_sent = False  # one probe per flight, until new data is acknowledged
        # A retransmitted probe's episode (RFC 8985 section 7.4): SND.NXT when it was sent
        # (0: none open); it ends with a D-SACK (no loss) or an ACK beyond (a loss repaired).
        self.tlp_high = 0
        self.probe_new_data = False  # the probe is new data: one segment beyond the window
        # Undoing a spurious congestion event (RFC 3708's D-SACK detection; Linux's undo):
        # whether the last episode may still be undone, the segments [start, end) it resent
        # that no D-SACK has yet shown to have arrived twice, and the window and threshold
        # from before it.  Lost with a timeout, a repaired tail loss, or too many resends.
        self.undo_open = False
        self._undo_resent: list[tuple[int, int]] = []
        self._undo_cwnd = 0
        self._undo_ssthresh = 0
        self.rack = Rack()
        self._rack_on = config.rack
        self.timeouts_in_a_row = 0
        self.oldest_unacked_since: float | None = None
        self._delivered_at_sample = 0  # scoreboard.delivered at the last rate sample
        self._lost_at_sample = 0  # scoreboard.lost_bytes at the last rate sample
        # One sample object, refilled for each call: building and freeing one per ACK was a
        # quarter of what BBR's model costs a request/response round trip.
        self._sample = RateSample()
        self.wants_delay_samples = self.cc.wants_delay_samples
        self._dupthresh = config.dupack_threshold
        self._tail_loss_probe = config.tail_loss_probe
        self._delayed_ack_s = config.delayed_ack_s
        self._user_timeout_s = config.user_timeout_s
        self._idle_timeout_s = config.idle_timeout_s
        self._rto_min_s = config.rto_min_s
        # When the peer was last heard from (``Liveness.last_activity``): the idle timeout
        # runs from it, and the retransmission timer is fitted before that.
        self.heard_at = 0.0
        self._snd = snd
        self._opts = opts
        self._dl = deadlines
        self._count = counters
        self._trace = trace
        self._log = log

    # ------------------------------------------------------------------ acknowledgements

    def restart_path(self, mss: int) -> None:
        """The connection moved to a new path (another host): what was learnt about the old
        one says nothing of it, so the RTT estimate and the congestion controller start over
        (RFC 9000 section 9.4); what is in flight stays on the scoreboard."""
        cfg = self._cfg
        self.rtt = RttEstimator(
            initial_rto_s=cfg.rto_initial_s, rto_min_s=cfg.rto_min_s, rto_max_s=cfg.rto_max_s
        )
        self.cc = congestion.create(
            cfg.congestion_control, mss=mss, initial_window_segments=cfg.initial_cwnd_segments
        )
        self.undo_open = False  # a window from the old path is nothing to restore
        # A recovery episode under way was the old controller's: the new one has none to
        # end (its exit would set the window to its unbounded ssthresh), and losses of what
        # was sent before the move start none either (RFC 6582 section 3.2 step 2).
        self.in_recovery = False
        self.dupack_credit = 0
        self.recover = self._snd.max
        self.recovery_tx = self.scoreboard.last_tx

    def on_path_rtt(self, rtt_s: float) -> None:
        """A new path's first RTT sample, its path challenge's round trip."""
        self._sample_rtt(rtt_s)

    def on_syn_acked(self, now: float, sent_at: float | None) -> None:
        """Our SYN is acknowledged: its RTT sample (None when it was sent more than once)
        and the end of its timer."""
        if sent_at is not None:
            self._sample_rtt(now - sent_at)  # (a sample ends the backoff; a resent SYN keeps it)
        self._dl.rto = None

    def _sample_rtt(self, rtt_s: float) -> None:
        """Fold one RTT sample into the estimator, and trace the estimate."""
        self.rtt.on_sample(rtt_s)
        if self._trace.tracer is not None:
            self._trace.rtt(self.rtt)

    def on_ack(self, p: Packet, ack_pos: int, now: float) -> None:
        """An acceptable segment acknowledging ``ack_pos``: its SACK blocks, then new data
        acknowledged, a duplicate ACK (RFC 5681 section 2's definition, a PMTU probe or its
        answer excepted) or SACK blocks alone showing a loss."""
        snd = self._snd
        sack_ok = self._opts.sack_ok
        sb = self.scoreboard
        sb.prior_fack = sb.highest_sacked
        dsack = False
        undo = False
        if sack_ok and p.sack_blocks:
            dsack = self.is_dsack(p.sack_blocks, ack_pos)
            if dsack:
                self._count.dsacks_received += 1
                if self.undo_open:
                    undo = self._resent_arrived(p.sack_blocks[0], ack_pos)
                if self._rack_on:
                    self.rack.on_dsack(snd.una, snd.max)
                    # A spurious retransmission is the path reordering beyond the window
                    # (or duplicating): the zero window of step 4 no longer applies.
                    sb.reordering_seen = True
            self.on_sack(p.sack_blocks, now)
            if sb.newest_delivered is not None:
                self._rack_update(now)
        if self.tlp_high and ack_pos >= self.tlp_high:
            self._tlp_episode(p, ack_pos, dsack, now)
        if ack_pos > snd.una:
            if self.wants_delay_samples and p.timestamps is not None:
                self.delay_sample(p.timestamps, now)
            self.on_new_ack(ack_pos, now)
        elif (
            ack_pos == snd.una
            and not p.payload
            and not p.flags & (_FIN | _SYN)
            and len(self.scoreboard)
            and (p.window << snd.wscale) == snd.wnd
            and p.probe is None  # a PMTU probe, or its answer, says nothing about our data
            and p.probe_ack is None
            and p.path_challenge is None  # path validation says nothing about our data
            and p.path_response is None
        ):
            self.on_dupack(now, sacked=bool(p.sack_blocks and sack_ok))
        elif sack_ok and p.sack_blocks and len(self.scoreboard):
            self.maybe_enter_recovery(now)
        sacked = sb.take_sack_rtt_seg()
        if sacked is not None:
            # No sample from the cumulative ACK: the newest segment SACKed gives it.
            self._sample_rtt(now - sacked.sent_at)
        if sb.newest_delivered is not None:
            self.take_rate_sample(now)
        if undo and self.undo_open:
            self.undo_open = False
            self._count.spurious_recoveries += 1
            self._log.debug("congestion_undone", cwnd=self._undo_cwnd)
            self.cc.on_spurious_congestion(self._undo_cwnd, self._undo_ssthresh, now=now)

    def _resent_arrived(self, block: tuple[int, int], ack_pos: int) -> bool:
        """A D-SACK ``block`` (wire sequence numbers) below the cumulative ACK: one resend
        of each segment of the episode it covers is shown spurious.  True when none is
        left, every resend of the episode having been (RFC 3708 section 3.2)."""
        snd = self._snd
        una_wire = snd.wire_seq(snd.una)
        left = snd.una + seq_diff(block[0], una_wire)
        right = snd.una + seq_diff(block[1], una_wire)
        resent = self._undo_resent
        if right > ack_pos or not resent:
            return False
        # One resend per segment: a segment sent three times and reported twice once had
        # two copies arrive, which says nothing of the third.
        seen: list[tuple[int, int]] = []
        kept: list[tuple[int, int]] = []
        for seg in resent:
            if seg[0] < right and left < seg[1] and seg not in seen:
                seen.append(seg)
            else:
                kept.append(seg)
        if not seen:
            return False
        self._undo_resent = kept
        return not kept

    def resent(self, start: int, end: int) -> None:
        """The sender resent [start, end): while the episode may be undone, each resend
        must be shown spurious first."""
        if self.undo_open:
            if len(self._undo_resent) < _UNDO_MAX_RESENDS:
                self._undo_resent.append((start, end))
            else:
                self.undo_open = False

    def delay_sample(self, timestamps: tuple[int, int], now: float) -> None:
        """An ACK of new data with timestamps: the peer's clock when it sent the ACK minus
        ours when we sent the data it echoes is the data's one-way delay plus the clocks'
        offset (RFC 6817 section 3.4.1 measures it this way, at the receiver)."""
        ts_val, ts_ecr = timestamps
        if not self._opts.ts_ok or ts_ecr == 0:
            return
        # Signed 32-bit difference of two millisecond clocks.
        delay_ms = ((ts_val - ts_ecr + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        self.cc.on_delay_sample(delay_ms / 1000.0, now=now)

    def is_dsack(self, blocks: tuple[tuple[int, int], ...], ack_pos: int) -> bool:
        """Whether the first SACK block is a D-SACK (RFC 2883 section 4): below the
        cumulative ACK, or inside the second block."""
        snd = self._snd
        una_wire = snd.wire_seq(snd.una)
        left, right = blocks[0]
        lp = snd.una + seq_diff(left, una_wire)
        rp = snd.una + seq_diff(right, una_wire)
        if rp <= ack_pos:
            return True
        if len(blocks) > 1:
            l2, r2 = blocks[1]
            return snd.una + seq_diff(l2, una_wire) <= lp and rp <= snd.una + seq_diff(r2, una_wire)
        return False

    def _tlp_episode(self, p: Packet, ack_pos: int, dsack: bool, now: float) -> None:
        """An ACK at or beyond a retransmitted probe's SND.NXT (RFC 8985 section 7.4): a
        D-SACK, or a duplicate ACK, says the original and the probe both arrived; an ACK
        beyond it without either says the probe repaired a loss, which the congestion
        controller must hear of as any other."""
        if dsack or (ack_pos == self._snd.una and not p.sack_blocks and not p.payload):
            self.tlp_high = 0
        elif ack_pos > self.tlp_high:
            self.tlp_high = 0
            if not self.in_recovery:
                snd = self._snd
                self.undo_open = False  # a loss was repaired: that one was not spurious
                self._count.tlp_recoveries += 1
                self.cc.on_congestion_event(snd.max - snd.una, now=now)
                self.cc.on_recovery_exit(now=now)

    def _rack_update(self, now: float) -> None:
        """RACK learns from the most recently sent segment just delivered (RFC 8985 section
        6.2 step 2)."""
        seg = self.scoreboard.newest_delivered
        if seg is not None and self._rack_on:
            self.rack.update(seg, now, self.rtt.min_rtt)

    def detect_losses(self, now: float) -> int:
        """Declare segments lost from the scoreboard: by RACK (with SACK and ``Config.rack``:
        time since a later segment was delivered, arming the reordering timer for the next
        that may be), or by RFC 6675's DupThresh.  Returns bytes newly declared lost."""
        sb = self.scoreboard
        if not self._rack_on:
            return sb.detect_losses(self.loss_threshold(), self._dupthresh)
        rack = self.rack
        if not rack.xmit_tx:
            return 0
        rtt = self.rtt
        reo_wnd = rack.reo_wnd(
            reordering_seen=sb.reordering_seen,
            in_recovery=self.in_recovery,
            sacked_segs=sb.sacked_segs,
            dupthresh=self._dupthresh,
            min_rtt=rtt.min_rtt,
            srtt=rtt.srtt,
        )
        lost = sb.rack_detect(rack.xmit_tx, rack.rtt + reo_wnd, now)
        self._dl.reorder = sb.rack_pending or None
        if lost and self.in_recovery and sb.rack_lost_tx > self.recovery_tx:
            # Something sent during this episode was lost too: the reduced window still
            # overflows the path.  A new congestion event, as QUIC takes it (RFC 9002
            # section 7.3.2), rather than a standing queue that drops every retransmission.
            self._count.fast_retx += 1
            self._congestion_event(now, 0)
        return lost

    def on_reorder_timer(self, now: float) -> None:
        """The reordering window of a segment sent before one delivered has passed: it is
        lost (RFC 8985 section 6.3), and a recovery episode starts if none is under way."""
        if not len(self.scoreboard):
            return
        lost = self.detect_losses(now)
        if lost:
            self._count.rack_timeouts += 1
            if self._trace.tracer is not None:
                self._trace.losses(self.scoreboard, self._snd, "rack")
            if not self.in_recovery:
                self._start_recovery(now, 0, lost)
            else:
                self.rexmit_now = True

    def take_rate_sample(self, now: float) -> None:
        """Data was delivered since the last sample: measure the delivery rate from the most
        recently sent segment delivered (draft-cheng-iccrg-delivery-rate-estimation section
        3.3) and hand it to a controller that wants it."""
        sb = self.scoreboard
        p = sb.newest_delivered
        if p is None:
            return
        sb.newest_delivered = None
        # The next sample's send interval starts at this segment's sending (draft section
        # 3.3: C.first_sent_time = P.send_time).
        sb.first_sent_time = p.sent_at
        delivered_total = sb.delivered
        newly = delivered_total - self._delivered_at_sample
        self._delivered_at_sample = delivered_total
        if sb.app_limited_until and delivered_total > sb.app_limited_until:
            sb.app_limited_until = 0
        cc = self.cc
        if not cc.wants_rate_samples:
            return
        lost_total = sb.lost_bytes
        losses = lost_total - self._lost_at_sample
        self._lost_at_sample = lost_total
        send_elapsed = p.sent_at - p.first_sent_time
        ack_elapsed = sb.delivered_time - p.delivered_time
        interval = send_elapsed if send_elapsed > ack_elapsed else ack_elapsed
        delivered = delivered_total - p.delivered
        min_rtt = self.rtt.min_rtt
        # An interval shorter than the minimum RTT is ACK compression: no valid rate.
        valid = interval > 0.0 and (min_rtt is None or interval >= min_rtt)
        rs = self._sample
        rs.delivery_rate = delivered / interval if valid else 0.0
        rs.delivered = delivered
        rs.interval_s = interval
        rs.prior_delivered = p.delivered
        rs.rtt_s = now - p.sent_at if p.retx == 0 else None
        rs.path_min_rtt_s = min_rtt
        rs.app_limited = p.app_limited
        rs.in_flight = sb.pipe
        rs.newly_acked = newly
        rs.losses = losses
        cc.on_rate_sample(rs, now=now)

    def on_sack(self, blocks: tuple[tuple[int, int], ...], now: float) -> None:
        """Mark the SACK blocks of an ACK (wire numbers) on the scoreboard."""
        snd = self._snd
        una = snd.una
        una_wire = snd.wire_seq(una)
        sb = self.scoreboard
        for left, right in blocks:
            lp = una + seq_diff(left, una_wire)
            rp = una + seq_diff(right, una_wire)
            if una <= lp < rp <= snd.max:
                sb.on_sack(lp, rp, now)

    def on_new_ack(self, ack_pos: int, now: float) -> None:
        """SND.UNA advances to ``ack_pos``: release the data, sample the RTT, grow the window
        or go on with recovery, and re-arm the timers."""
        snd = self._snd
        sb = self.scoreboard
        trace = self._trace
        acked_bytes = ack_pos - snd.una
        acked = sb.ack_to(ack_pos, now)
        if sb.newest_delivered is not None and self._rack_on:
            self.rack.update(sb.newest_delivered, now, self.rtt.min_rtt)
        # Karn's rule: no sample when any acknowledged segment was retransmitted (the ACK may
        # answer the retransmission), nor from a segment already SACKed (its ACK was held up
        # by a hole before it); otherwise the newest segment gives the RTT.
        if acked and not acked[-1].sacked:
            for seg in acked:
                if seg.retx:
                    break
            else:
                self._sample_rtt(now - acked[-1].sent_at)
                sb.sack_rtt_seg = None  # the cumulative ACK's sample goes first
        snd.acknowledge(ack_pos)
        self.dupacks = 0
        self.timeouts_in_a_row = 0
        # The timer's backoff ends with an RTT sample only (RFC 6298 section 5 with Karn's
        # rule; Linux's tcp_ack_update_rtt): reset by an ACK of what was resent, a timer
        # shorter than the path's round trip fired again every round trip and never let a
        # sample be taken (on a 1.2 s path: 86 timeouts, no RTT, cwnd at one segment).
        if self.in_recovery:
            if ack_pos >= self.recover:
                self.in_recovery = False
                self.dupack_credit = 0
                self.cc.on_recovery_exit(now=now)
                if self._rack_on:
                    self.rack.on_recovery_exit()
            else:
                # Partial ACK (RFC 6582 section 3.2 step 5): the next hole is lost too.
                # RACK judges each hole by time instead, lost retransmissions included.
                self.dupack_credit = max(0, self.dupack_credit - acked_bytes)
                first = sb.first()
                rack = self._rack_on and self._opts.sack_ok
                if first is not None and first.retx == 0 and not rack:
                    sb.mark_lost(first)
                    if trace.tracer is not None:
                        trace.losses(sb, snd, "sack" if self._opts.sack_ok else "dupack")
                if self._opts.sack_ok:
                    self.detect_losses(now)
                    if trace.tracer is not None:
                        trace.losses(sb, snd, "rack" if rack else "sack")
        else:
            # Grow the window only while it limits us (RFC 7661 spirit): an application- or
            # receiver-limited sender must not build a window it never tested.
            flight_before = snd.max - (ack_pos - acked_bytes)
            if 2 * flight_before >= self.cc.cwnd:
                self.cc.on_ack(acked_bytes, now=now, rtt_s=self.rtt.latest_rtt)
            if self._opts.sack_ok and len(sb):
                self.maybe_enter_recovery(now, flight_before)
        self.tlp_sent = False
        if len(sb):
            self.oldest_unacked_since = now
            self._dl.rto = self.rto_deadline(now)
            self.arm_tlp(now)
        else:
            self._dl.rto = self._dl.tlp = self._dl.reorder = None
            self.oldest_unacked_since = None
            if trace.tracer is not None:
                trace.lost_by.clear()
        if sb.newest_delivered is not None:
            self.take_rate_sample(now)

    def loss_threshold(self) -> int:
        """SACKed bytes beyond a segment that declare it lost (RFC 6675's DupThresh)."""
        return (self._dupthresh - 1) * self._snd.mss + 1

    def on_dupack(self, now: float, *, sacked: bool) -> None:
        """A duplicate ACK: count it, and in recovery inflate the window or look for more
        losses."""
        self.dupacks += 1
        self._count.dupack_count += 1
        if self.in_recovery:
            if not self._opts.sack_ok:
                self.dupack_credit += self._snd.mss
            else:
                self.detect_losses(now)
                if self._trace.tracer is not None:
                    self._trace.losses(self.scoreboard, self._snd, self._loss_cause())
            return
        self.maybe_enter_recovery(now)

    def maybe_enter_recovery(self, now: float, flight_before: int = 0) -> None:
        """Start a recovery episode if the duplicate ACKs or SACK blocks show a loss.

        ``flight_before`` is what was outstanding before the ACK that shows the loss also moved
        SND.UNA: the flight size the loss happened in. A stretch ACK (one for a whole batch)
        acknowledges most of the window at once, so the flight left after it would halve far
        below the window the loss was seen in."""
        if self.in_recovery:
            return
        sack_ok = self._opts.sack_ok
        lost = self.detect_losses(now) if sack_ok else 0
        if lost and self._trace.tracer is not None:
            self._trace.losses(self.scoreboard, self._snd, self._loss_cause())
        if not lost and (self.dupacks < self._dupthresh or (sack_ok and self._rack_on)):
            # With SACK, RACK alone decides (RFC 8985 replaces the DupThresh rule).
            return
        self._start_recovery(now, flight_before, lost)

    def _congestion_event(self, now: float, flight_before: int) -> None:
        """The controller reduces its window for a loss; the episode runs to SND.MAX."""
        snd = self._snd
        # The window in use is what overflowed, not the whole span since SND.UNA: SACKed
        # data has left the network.  Under heavy reordering most of that span is SACKed
        # data beyond the window, and half of it as the new window raised the window,
        # episode after episode (RFC 5681's FlightSize assumes the span lies within the
        # window; Linux halves the window itself).
        flight = min(max(snd.max - snd.una, flight_before), max(self.cc.cwnd, self.scoreboard.pipe))
        self.recover = snd.max
        self.recovery_tx = self.scoreboard.last_tx
        cc = self.cc
        self.undo_open = True
        self._undo_resent = []
        self._undo_cwnd = cc.cwnd
        self._undo_ssthresh = cc.ssthresh
        cc.on_congestion_event(flight, now=now)

    def _loss_cause(self) -> str:
        """What declares losses from ACKs, for traces."""
        return "rack" if self._rack_on and self._opts.sack_ok else "sack"

    def _start_recovery(self, now: float, flight_before: int, lost: int) -> None:
        """Losses were found outside a recovery episode: start one, unless still inside the
        window of an earlier one (RFC 6582 section 3.2 step 2)."""
        sb = self.scoreboard
        snd = self._snd
        trace = self._trace
        sack_ok = self._opts.sack_ok
        if snd.una < self.recover and not (
            sack_ok and self._rack_on and sb.rack_lost_tx > self.recovery_tx
        ):
            # RFC 6582 section 3.2 step 2: still inside the window of an earlier episode
            # (unless what was lost was sent since it began).
            if sb.has_lost:
                self.rexmit_now = True
            return
        self.in_recovery = True
        self._count.fast_retx += 1
        self._congestion_event(now, flight_before)
        first = sb.first()
        if sack_ok and self._rack_on:
            # RACK marked what is lost; the first of it goes out at once.
            self.rexmit_now = sb.has_lost
        elif first is not None and not first.sacked and first.retx == 0:
            sb.mark_lost(first)
            if trace.tracer is not None:
                trace.losses(sb, snd, "sack" if lost else "dupack")
            # RFC 5681 section 3.2 step 4: the fast retransmit goes out at once.
            self.rexmit_now = True
        if not sack_ok:
            self.dupack_credit = self.dupacks * snd.mss
        self._log.debug(
            "fast_retransmit",
            snd_una=snd.wire_seq(snd.una),
            cwnd=self.cc.cwnd,
            ssthresh=self.cc.ssthresh,
        )

    # ------------------------------------------------------------------ timers

    def head_resent(self, now: float) -> None:
        """The oldest unacknowledged segment was sent again: its retransmission timer starts
        over, as Linux's does, so that RACK, which finds each loss of it in turn while later
        data is delivered, is not overtaken by a timeout measured from the first sending."""
        self._dl.rto = self.rto_deadline(now)

    def after_send(self, now: float) -> None:
        """Segments went out: arm the retransmission and tail-loss timers."""
        if self.oldest_unacked_since is None:
            self.oldest_unacked_since = now
        if self._dl.rto is None:
            self._dl.rto = self.rto_deadline(now)
        if not self.tlp_sent:
            self.arm_tlp(now)

    def rto_deadline(self, now: float) -> float:
        """When the retransmission timer armed now fires: an RTO (backoff included) out, no
        later than the user timeout allows (the timer then fires at the timeout and ends the
        connection).  And when the backed-off timer would first fire after the idle timeout,
        it fires early enough for one more retransmission to be answered before it (an RTO
        without backoff ahead): otherwise a path back after an outage of 16 to 30 s (a
        roaming client, a rebooting router) was never tried again, and the idle timeout ended
        the connection with the path long back.  (QUIC keeps its idle timeout at least three
        probe timeouts long instead, which also delays finding a vanished peer by minutes.)"""
        rtt = self.rtt
        at = now + rtt.rto
        ut = self._user_timeout_s
        since = self.oldest_unacked_since
        if ut is not None and since is not None and since + ut < at:
            return since + ut
        idle = self._idle_timeout_s
        if idle is not None and self._dl.idle is not None:  # the idle timer runs
            last = self.heard_at + idle - max(rtt.base_rto, self._rto_min_s)
            if now < last < at:
                return last
        return at

    def user_timeout_expired(self, now: float) -> bool:
        """Whether the oldest unacknowledged data has waited ``user_timeout_s``."""
        ut = self._user_timeout_s
        since = self.oldest_unacked_since
        # The same sum rto_deadline arms the timer at: ``now - since >= ut`` can round
        # below ``ut`` at exactly that deadline and let the timer fire again and again.
        return ut is not None and since is not None and now >= since + ut

    def arm_tlp(self, now: float) -> None:
        """Schedule a tail loss probe two smoothed RTTs out, when that comes before the RTO."""
        srtt = self.rtt.srtt
        dl = self._dl
        if (
            srtt is None
            or not self._tail_loss_probe
            or self.tlp_sent
            or self.in_recovery
            or not len(self.scoreboard)
        ):
            dl.tlp = None
            return
        pto = 2 * srtt
        if self.scoreboard.pipe <= self._snd.mss:
            pto += self._delayed_ack_s  # a lone segment's ACK may be delayed
        at = now + max(pto, _TLP_MIN_S)
        dl.tlp = at if dl.rto is None or at < dl.rto else None

    def on_tlp(self, now: float) -> None:
        """No ACK for two RTTs: resend the last segment so its SACK (or ACK) reveals any
        loss at the tail of the flight, instead of waiting for the retransmission timer."""
        sb = self.scoreboard
        snd = self._snd
        last = sb.last()
        if last is None or self.in_recovery or last.sacked or last.lost:
            return
        self.tlp_sent = True
        self._count.tlp_probes += 1
        if snd.nxt < snd.buf.end and snd.nxt < snd.una + snd.wnd:
            # New data waits and the peer's window has room: the probe is one segment of
            # it (RFC 8985 section 7.3), which reveals a tail loss as well and repairs none.
            self.probe_new_data = True
            self._dl.rto = self.rto_deadline(now)
            self._log.debug("tail_loss_probe", seq=snd.wire_seq(snd.nxt), new_data=True)
            return
        self.tlp_high = snd.max
        sb.mark_lost(last)
        if self._trace.tracer is not None:
            self._trace.losses(sb, self._snd, "tlp")
        self.rexmit_now = True
        self._dl.rto = self.rto_deadline(now)
        self._log.debug("tail_loss_probe", seq=self._snd.wire_seq(last.start))

    def on_timeout(self, now: float) -> None:
        """The retransmission timer expired with data in flight: the whole flight is presumed
        lost, the window collapses and the timer backs off (RFC 6298 section 5, RFC 5681)."""
        snd = self._snd
        self.undo_open = False
        self.cc.on_timeout(snd.max - snd.una, now=now)
        self.recover = snd.max
        self.recovery_tx = self.scoreboard.last_tx
        self.in_recovery = False
        self.dupacks = 0
        self.dupack_credit = 0
        if self.scoreboard.mark_all_lost():
            self._log.info("sack_reneged", snd_una=snd.wire_seq(snd.una))
        self._dl.reorder = None
        self.tlp_high = 0
        if self._trace.tracer is not None:
            self._trace.losses(self.scoreboard, snd, "rto")
        self.rtt.back_off()

    def clear(self) -> None:
        """The connection ends (or enters TIME_WAIT): nothing in flight matters any more."""
        self.scoreboard.clear()
