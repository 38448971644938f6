"""The send loop: retransmissions first, then new data and the FIN, within the congestion
window and the peer's window, and the window probe timer when the peer's window is closed.

Nothing beyond ``snd.una + snd.wnd`` is ever sent as new data and no payload is larger than
``snd.mss``; every segment sent for the first time enters the scoreboard with only its new
bytes, also when it carries unacknowledged bytes again (``Config.thin_stream_bundling``).
"""

from __future__ import annotations

from typing import Any, Final, final

from ..config import Config
from ..packet import HEADER_SIZE, Flag, Packet, stamp
from ..pmtud import Pmtud
from ..recovery import SentSegment
from .counters import Counters
from .deadlines import Deadlines
from .loss import LossRecovery
from .options import Negotiated
from .pacer import Pacer
from .receive_side import ReceiveSide
from .segments import Segments
from .send_side import SendSide
from .tracepoints import TracePoints

__all__ = ["Sender"]

_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)


@final
class Sender:
    """Decides which segments go out now and records them."""

    def __init__(
        self,
        config: Config,
        *,
        snd: SendSide,
        rcv: ReceiveSide,
        opts: Negotiated,
        loss: LossRecovery,
        segments: Segments,
        deadlines: Deadlines,
        counters: Counters,
        trace: TracePoints,
        pmtud: Pmtud | None,
        pacer: Pacer,
        log: Any,
    ) -> None:
        self._fast = config.fast_paths
        self._bundling = config.thin_stream_bundling
        # End of the furthest segment sent again.  Until SND.UNA passes it nothing bundles:
        # a bundle carrying a retransmitted segment's bytes would make whichever copy arrives
        # second a duplicate, so a D-SACK (RFC 2883) would call the retransmission spurious
        # when the original was in fact lost.
        self._retx_end = 0
        self._pacer = pacer
        self._rto_max_s = config.rto_max_s
        self._snd = snd
        self._rcv = rcv
        self._opts = opts
        self._loss = loss
        self._seg = segments
        self._dl = deadlines
        self._count = counters
        self._trace = trace
        self._pmtud = pmtud
        self._log = log

    def send_data(self, out: list[bytes], now: float) -> None:
        """Append the retransmissions, then the new data and FIN, that the windows allow now
        (the connection is synchronized)."""
        snd = self._snd
        loss = self._loss
        pacer = self._pacer
        pacer.update(loss.cc, loss.rtt.srtt, snd.mss, now)
        if self._fast and self._send_lone_segment(out, now):
            self._count.fast_sent += 1
            return
        sb = loss.scoreboard
        cc = loss.cc
        seg_out = self._seg
        count = self._count
        trace = self._trace
        mss = snd.mss
        sent_any = False
        paced = 0  # bytes the pacer held back, if it did
        # Retransmissions first, within the congestion window (RFC 6675 section 5 step 4.1).
        while True:
            seg = sb.next_lost(snd.una)
            if seg is None:
                break
            length = seg.end - seg.start
            if length > mss:
                length = self._fit_to_mss(seg, mss)
            if not loss.rexmit_now:
                if sb.pipe and sb.pipe + length > cc.cwnd + loss.dupack_credit:
                    break
                if not pacer.may_send(length):
                    paced = length
                    break
            loss.rexmit_now = False
            pacer.sent(length)
            if trace.tracer is not None:
                trace.retransmit(seg, snd)
            # Payload bytes the datagram carries: what the peer already acknowledged is left
            # out, and a FIN's position is no byte.
            count.bytes_retx += snd.data_len(max(seg.start, snd.una), seg.end)
            seg_out.emit(out, seg.start, seg.end)
            if seg.start <= snd.una and loss.oldest_unacked_since is not None:
                loss.head_resent(now)
            sb.retransmitted(seg, now)
            loss.resent(seg.start, seg.end)
            if seg.end > self._retx_end:
                self._retx_end = seg.end
            count.retx += 1
            sent_any = True
            self._log.debug("retransmit", seq=snd.wire_seq(seg.start), len=length, cwnd=cc.cwnd)
        # New data (and the FIN) within both windows.
        data_end = snd.buf.end
        fin_pos = snd.fin_pos
        bundle = self._bundling  # only the first new segment may
        template: bytes | None = None
        # Traces record every segment built, and SACK blocks depend on each payload's length.
        rcv = self._rcv
        slow = trace.tracer is not None or (
            self._opts.sack_ok and (len(rcv.reasm) > 0 or rcv.dsack is not None)
        )
        while True:
            nxt = snd.nxt
            if nxt < data_end:
                wnd_room = snd.una + snd.wnd - nxt
                cwnd_room = cc.cwnd + loss.dupack_credit - sb.pipe
                if loss.probe_new_data:
                    # A tail loss probe of new data goes whatever the window (RFC 8985 7.3).
                    loss.probe_new_data = False
                    cwnd_room = max(cwnd_room, mss)
                length = min(mss, data_end - nxt, wnd_room, cwnd_room)
                if length <= 0:
                    break
                # Sender silly-window avoidance (RFC 9293 section 3.8.6.2.1).
                if (
                    length < mss
                    and length < data_end - nxt
                    and length < snd.max_wnd // 2
                    and sb.pipe
                ):
                    break
                end = nxt + length
                # The FIN takes a position too: it rides along only if the window has room
                # for it, else it follows alone once the window opens (RFC 9293 3.8.6).
                fin = fin_pos is not None and end == fin_pos and end < snd.una + snd.wnd
            elif fin_pos is not None and nxt == fin_pos:
                if sb.pipe and sb.pipe >= cc.cwnd + loss.dupack_credit:
                    break
                if snd.una + snd.wnd <= nxt:
                    break  # a FIN needs room in the window like data does
                end = nxt
                fin = True
            else:
                break
            if not pacer.may_send(end - nxt):
                paced = end - nxt if end > nxt else 1
                break
            seg_end = end + 1 if fin else end
            start = nxt
            if bundle:
                bundle = False
                # Only when it carries everything written, as a small write's segment does
                # (``_send_lone_segment``): one cut short by a window has more behind it.
                if snd.una < nxt and end == data_end:
                    start = self._bundle_start(nxt, end)
            pacer.sent(end - start)
            if fin or slow or start != nxt:
                seg_out.emit(out, start, seg_end)
            else:
                # A plain data segment: every header field but the sequence number is the same
                # for the whole run, so the header is built once and stamped per segment.
                if template is None:
                    template = seg_out.build(_ACK, nxt, b"")
                out.append(stamp(template, snd.wire_seq(nxt), snd.buf.get(nxt, end)))
                count.segments_sent += 1
            sb.add(SentSegment(nxt, seg_end, now))
            count.bytes_sent += end - nxt
            snd.nxt = seg_end
            if seg_end > snd.max:
                snd.max = seg_end
            sent_any = True
        if sent_any:
            self._after_send(now)
        if paced:
            self._dl.pace = pacer.next_send_at(paced, now)
        else:
            self._dl.pace = None
            if not snd.has_unsent and not sb.has_lost and sb.pipe < cc.cwnd:
                sb.mark_app_limited()
        # Zero (or too small) window with data waiting and nothing in flight: probe it.
        if snd.window_closed() and not len(sb):
            if self._dl.persist is None:
                interval = min(loss.rtt.rto * (1 << snd.persist_backoff), self._rto_max_s)
                self._dl.persist = now + interval
        else:
            self._dl.persist = None

    def _send_lone_segment(self, out: list[bytes], now: float) -> bool:
        """Send what waits if it all fits in one segment the windows allow (a request, a
        reply), as the general loop of ``send_data`` would, without its bookkeeping; False,
        having done nothing, in any other case."""
        snd = self._snd
        nxt = snd.nxt
        length = snd.buf.end - nxt
        loss = self._loss
        sb = loss.scoreboard
        if not (
            0 < length <= snd.mss
            and snd.fin_pos is None
            and not sb.has_lost
            and length <= snd.una + snd.wnd - nxt
            and (length <= loss.cc.cwnd + loss.dupack_credit - sb.pipe or loss.probe_new_data)
            and self._trace.tracer is None
            and self._pacer.may_send(length)
        ):
            return False
        end = nxt + length
        start = nxt
        if self._bundling and snd.una < nxt:
            start = self._bundle_start(nxt, end)
        loss.probe_new_data = False
        self._pacer.sent(end - start)
        self._seg.emit(out, start, end)
        sb.add(SentSegment(nxt, end, now))
        self._count.bytes_sent += length
        snd.nxt = end
        if end > snd.max:
            snd.max = end
        self._after_send(now)
        self._dl.persist = None  # nothing waits: no window to probe
        self._dl.pace = None
        if sb.pipe < loss.cc.cwnd:
            sb.mark_app_limited()  # everything written is sent
        return True

    def _bundle_start(self, nxt: int, end: int) -> int:
        """Where the segment carrying new data [nxt, end), with unacknowledged data before
        it, starts: at ``snd.una`` when the bytes before it can ride along
        (``Config.thin_stream_bundling``), else at ``nxt``.

        They ride along when they and the new ones fit in one MSS, no FIN is queued (every
        position in [una, nxt) is then a byte), none of them is SACKed, none waits for
        retransmission or was sent again (loss recovery is under way and resends them
        itself; nor may a D-SACK be made to call its retransmission spurious), and the
        pacer lets the whole datagram go now (it is charged the whole datagram, what the
        wire carries, so bundling never makes a message wait).  The copy is counted apart;
        the scoreboard, the pipe, cwnd and ``bytes_sent`` see only the new bytes, so an ACK
        of the bundle acknowledges the earlier segments as sent once (RTT samples, Karn's
        rule and rate samples are those of the segments as recorded).
        """
        snd = self._snd
        una = snd.una
        sb = self._loss.scoreboard
        if (
            end - una <= snd.mss
            and snd.fin_pos is None
            and una >= self._retx_end
            and sb.highest_sacked <= una
            and not sb.has_lost
            and self._pacer.may_send(end - una)
        ):
            count = self._count
            count.bundled_segments += 1
            count.bundled_bytes += nxt - una
            return una
        return nxt

    def _after_send(self, now: float) -> None:
        """Segments went out: arm the loss timers, wake path MTU discovery."""
        self._loss.after_send(now)
        pm = self._pmtud
        if pm is not None and now >= pm.wake_at:
            pm.wake(now=now)  # traffic after the raise timer ran out (or ERROR's wait)

    def update_window(self, p: Packet, seg_pos: int, ack_pos: int, synchronized: bool) -> None:
        """Take the peer's window from the newest segment (``SendSide.update_window``); a
        reopened window stops the window probes, and a peer that answers a closed window is
        alive, only not reading (its probes are not unanswered)."""
        snd = self._snd
        if snd.update_window(p, seg_pos, ack_pos, bool(p.flags & _SYN)):
            self._dl.persist = None
        if snd.window_closed() and not len(self._loss.scoreboard) and synchronized:
            snd.persist_probes = 0

    def apply_pmtu(self, by: str) -> None:
        """Make the send MSS (and the controller's) follow the PLPMTU; ``send_data`` cuts
        retransmissions that no longer fit.

        A smaller size scales cwnd down with it, so the window holds as many segments as
        before; a larger one leaves cwnd alone (RFC 8899 section 3: an update to the PLPMTU
        MUST NOT increase the congestion window measured in bytes).
        """
        pm = self._pmtud
        assert pm is not None
        snd = self._snd
        old = snd.mss
        new = max(64, min(snd.peer_mss, pm.size - HEADER_SIZE) - self._opts.ts_cost)
        if new == old:
            return
        snd.mss = new
        cc = self._loss.cc
        cc.mss = new
        if new < old:
            cc.cwnd = max(new, cc.cwnd * new // old)
        self._log.debug("pmtu_changed", size=pm.size, mss=new, old_mss=old, by=by)
        trace = self._trace
        if trace.tracer is not None:
            trace.event("pmtu_changed", {"pmtu": pm.size, "mss": new, "by": by})

    def _fit_to_mss(self, seg: SentSegment, mss: int) -> int:
        """Cut a segment awaiting retransmission into pieces of at most ``mss`` payload bytes
        and return the first piece's length.

        Only path MTU discovery shrinks the MSS; after a black hole the old size is what the
        path drops, so resending the segment whole would never get through.
        """
        snd = self._snd
        start = max(seg.start, snd.una)
        n = snd.data_len(start, seg.end)
        if n <= mss:
            return seg.end - seg.start  # a FIN's position, not payload, made it look long
        cuts = list(range(start + mss, start + n, mss))
        trace = self._trace
        if trace.tracer is not None:
            by = trace.lost_by.get(seg.start, "rto")
            for cut in cuts:
                trace.lost_by[cut] = by
        self._loss.scoreboard.split(seg, cuts)
        return seg.end - seg.start
