"""The receive side of a connection: the peer's positions, reassembly, the window we offer
and its autotuning, in-order delivery and the scheduling of our ACKs.

Positions are the peer's: 0 is its SYN.  ``nxt`` (RCV.NXT) only moves forward, by bytes
delivered in order and then once for the peer's FIN; every byte it passes is handed to the
application exactly once (``deliver``), or held while reading is paused.  An ACK is owed at
once (``ack_now``) or by the delayed-ACK deadline, which building any ACK settles.  The
buffer behind the window only grows (``Config.recv_autotune``), and the right edge of the
window never moves left of the furthest one advertised (RFC 9293 section 3.8.6.2.2).
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

from ..buffers import CHUNK_OVERHEAD_BYTES, HeldBuffer, ReassemblyBuffer
from ..config import BufferLease, Config
from ..events import CloseReason, ConnectionClosed, DataReceived, EofReceived, Event
from ..packet import MAX_WINDOW_FIELD
from ..seqnum import SEQ_MASK, seq_diff
from .counters import Counters
from .deadlines import Deadlines

__all__ = ["RESUME_PIECE_BYTES", "TAKE_FIN", "TAKE_OVER_BUFFER", "ReceiveSide"]

# What ``ReceiveSide.take`` reports, as bits.
TAKE_FIN: Final = 1  # the peer's FIN is now in order: RCV.NXT has passed it
TAKE_OVER_BUFFER: Final = 2  # out-of-order data dropped: reassembly is full
# Out-of-order arrivals remembered for the SACK blocks' order: enough to name four blocks
# even when some of them took several arrivals.
RECENT_ARRIVALS: Final = 8

_NO_MARK: Final = 1 << 62  # no receiver RTT measurement under way
_CUSHION_SEGMENTS: Final = 16  # added to the tuned window, as Linux's 16 * advmss
# The tuned window is this many times what the application took in one receiver RTT.  Linux
# takes twice, over a smoothed RTT from timestamps; ours is the smallest window-edge sample
# (no timestamps), the path's RTT without a queue.  A sender's flight spans the RTT it sees,
# which a full queue of one BDP doubles (BBR's STARTUP, a loss-based controller), and a hole
# at the left edge holds the window's data for the round trip of its repair: twice two.
_TUNE_RTTS: Final = 4
# Held data goes back to the application in pieces of about this size (HeldBuffer.take), as
# a socket read would hand it over: a reader that pauses again leaves the rest held (unless
# the peer's EOF is queued behind them: then the rest follows, as pause() leaves a queue with
# other events in it alone).
RESUME_PIECE_BYTES: Final = 64 * 1024


@final
class ReceiveSide:
    """RCV.NXT, reassembly, the offered window and ACK scheduling."""

    def __init__(
        self, config: Config, *, events: deque[Event], counters: Counters, deadlines: Deadlines
    ) -> None:
        autotune = config.recv_autotune
        most = config.recv_buffer_bytes
        # The buffer behind the window: starts modest with autotuning, grows up to ``max_bytes``
        # (Config.recv_buffer_bytes, from which the SYN's window scale was chosen), and never
        # shrinks.  Growth beyond the start is leased from the endpoint's budget.
        self.buffer_bytes = min(config.recv_window_initial_bytes, most) if autotune else most
        self.max_bytes = most
        self._start_bytes = self.buffer_bytes
        self._lease: BufferLease | None = (
            config.buffer_budget.lease() if autotune and most > self.buffer_bytes else None
        )
        # Receiver RTT (docs/PROTOCOL.md, "Receive window autotuning"): from an ACK that moves
        # the right edge past the furthest advertised (``_rtt_mark``, at ``_rtt_start``) to the
        # first data beyond that old edge, which the peer could only send after hearing it.
        # Never shorter than the round trip; the minimum of the samples is kept.
        self.rtt_s = 0.0  # 0: no sample yet
        self._rtt_mark = _NO_MARK
        self._rtt_start = 0.0
        self._edge = 0  # the furthest right edge advertised: nxt + window, as positions
        self._now = 0.0  # when data last arrived: stands for the time of the ACKs built next
        self._seen = False  # whether ``_now`` is known (data has arrived)
        # Tuning: once per receiver RTT, from ``_tune_start``, what the application took
        # (``nxt`` less what is held: ``_tune_pos`` at the start) sets the window's size.
        self._tune_at = float("inf")
        self._tune_start = 0.0
        self._tune_pos = 0
        # Taken in one RTT: at most the first window, as Linux's rcvq_space (a window that
        # started below ten segments could never take more than that and never grew).
        self._space = min(config.initial_cwnd_segments * config.mss_bytes, self.buffer_bytes)
        self.delayed_ack_s = config.delayed_ack_s
        self.irs = 0  # the peer's initial sequence number: the wire seq of its position 0
        self.nxt = 0
        self.wscale = 0  # shift applied to the window we advertise (RFC 7323)
        self.held = HeldBuffer()  # in-order data held while reading is paused
        # In-order data goes out as views of the datagram rather than copies (a driver that
        # copies it into buffers of its own: Connection.deliver_views).
        self.views = False
        self.reasm = ReassemblyBuffer()
        # The starts of the latest out-of-order arrivals, most recent first: the SACK blocks
        # holding them are reported first (RFC 2018 section 4).
        self.recent_pos: list[int] = []
        # A wholly duplicate segment's range, reported once as the first SACK block of the
        # next ACK (a D-SACK, RFC 2883): the sender learns its retransmission was spurious.
        self.dsack: tuple[int, int] | None = None
        self.fin_pos: int | None = None  # position of the peer's FIN, once it arrived
        self.eof_delivered = False
        self.reading_paused = False
        self._adv_wnd = self.buffer_bytes  # window last advertised, bytes
        self.ack_now = False
        self.unacked_bytes = 0
        # In-order bytes that draw an immediate ACK (ack_every_segments segments), set with
        # the MSS in the handshake.  Counted in base-size segments when the peer discovers
        # its path MTU: its segments then range from the base size to 64 KiB.
        self.ack_bytes = config.ack_every_segments * config.mss_bytes
        # Full-sized segments from the peer mean it is in the middle of a transfer: silence
        # then draws one early keepalive probe (Config.keepalive_stall_s).
        self.full_seg = config.mss_bytes  # set from the handshake
        self.peer_mid_stream = False
        self._events = events
        self._count = counters
        self._dl = deadlines

    @property
    def last_pos(self) -> int:
        """Start of the most recent out-of-order arrival (0 before any)."""
        recent = self.recent_pos
        return recent[0] if recent else 0

    def window(self) -> int:
        """Bytes the peer may send beyond RCV.NXT now: the buffer less what is held, but never
        less than the furthest edge advertised still promises (rounded up to the window
        scale's unit, so the field can carry it: RFC 7323 section 2.4)."""
        wnd = self.buffer_bytes - len(self.held)
        promised = self._edge - self.nxt
        unit = (1 << self.wscale) - 1
        if wnd & ~unit < promised:  # as the field carries it, it would move the edge left
            wnd = (promised + unit) & ~unit
        if 0 < wnd <= unit:
            # Room, but less than the field's unit: one unit, as Linux advertises it, not a
            # zero window (a buffer smaller than the unit was announced closed for ever).
            wnd = unit + 1
        return max(0, wnd)

    @property
    def adv_wnd(self) -> int:
        """The window last advertised, bytes."""
        return self._adv_wnd

    @adv_wnd.setter
    def adv_wnd(self, wnd: int) -> None:
        # Every segment built records the window it carries: an edge further right than any
        # before starts a receiver RTT measurement, unless one is under way.
        self._adv_wnd = wnd
        edge = self.nxt + wnd
        if edge > self._edge:
            if self._rtt_mark == _NO_MARK and self._seen and self._lease is not None:
                self._rtt_mark = self._edge
                self._rtt_start = self._now
            self._edge = edge

    def _arrived(self, end: int, now: float) -> None:
        """Data ending at position ``end`` arrived: complete an RTT sample it proves, and
        tune the window once per receiver RTT."""
        self._now = now
        if not self._seen:
            self._seen = True
            self._tune_start = now
            self._tune_pos = self.nxt - len(self.held)
        if end > self._rtt_mark:
            sample = now - self._rtt_start
            self._rtt_mark = _NO_MARK
            if sample > 0.0 and (self.rtt_s == 0.0 or sample < self.rtt_s):
                self.rtt_s = sample
                self._tune_at = self._tune_start + sample
        if now >= self._tune_at:
            self._tune(now)

    def _tune(self, now: float) -> None:
        """One receiver RTT has passed: size the window from what the application took in
        it (Linux's tcp_rcv_space_adjust).  Four times that (``_TUNE_RTTS``), plus a
        cushion, keeps a sender that is not growing from being window-limited; a sender still
        growing (slow start) gets more, in proportion to how much more it sent than in the
        RTT before."""
        taken = self.nxt - len(self.held)
        copied = taken - self._tune_pos
        space = self._space
        if copied > space:
            target = _TUNE_RTTS * copied + _CUSHION_SEGMENTS * self.full_seg
            target += 2 * target * (copied - space) // space
            self._grow(target)
            self._space = copied
        self._tune_pos = taken
        self._tune_start = now
        self._tune_at = now + self.rtt_s

    def _grow(self, target: int) -> None:
        """Let the buffer grow to ``target`` bytes, within ``max_bytes``, what the window
        field can carry, and the endpoint's budget; it never shrinks."""
        lease = self._lease
        target = min(target, self.max_bytes, MAX_WINDOW_FIELD << self.wscale)
        if lease is not None and target > self.buffer_bytes:
            self.buffer_bytes = self._start_bytes + lease.resize(target - self._start_bytes)

    def set_ack_bytes(self, n: int) -> None:
        """In-order bytes that draw an immediate ACK: ``n`` (the handshake's
        ack_every_segments segments), but at most half the buffer, as Linux's rcv_mss is at
        most half the window.  A buffer smaller than the segments counted (a small
        ``recv_buffer_bytes`` with path MTU discovery, which counts 1,176-byte base-size
        segments) never held enough to reach ``n``: every full window waited for the
        delayed-ACK timer while the peer, out of window, waited for the ACK.  The buffer of
        the handshake sets the cap; one that grows later keeps it (more ACKs, no delay)."""
        self.ack_bytes = max(1, min(n, self.buffer_bytes // 2))

    def wire_ack(self, pos: int) -> int:
        """The 32-bit acknowledgement number of the peer's position ``pos``."""
        return (self.irs + pos) & SEQ_MASK

    def position(self, wire: int) -> int:
        """The position a wire sequence number names, near RCV.NXT."""
        nxt = self.nxt
        return nxt + seq_diff(wire, (self.irs + nxt) & SEQ_MASK)

    def acceptable(self, seg_pos: int, seg_len: int, wnd: int) -> bool:
        """RFC 9293 section 3.10.7.4's test of a segment against the window ``wnd``; one that
        covers the whole window is acceptable too (what fits is kept), and so is an empty
        one at its right edge, as Linux takes it: a peer that filled the window sends its
        pure ACKs with SEQ = RCV.NXT + RCV.WND, and answering each with an ACK of our own,
        which the peer may find at its own window's edge, had two ends trade ACKs without
        end."""
        nxt = self.nxt
        if seg_len == 0:
            return seg_pos == nxt if wnd == 0 else 0 <= seg_pos - nxt <= wnd
        if wnd == 0:
            return False
        end = seg_pos + seg_len - 1
        return (0 <= seg_pos - nxt < wnd) or (0 <= end - nxt < wnd) or seg_pos <= nxt <= end

    def ack_sent(self) -> None:
        """An ACK went out: nothing is owed any more."""
        self.ack_now = False
        self._dl.ack = None
        self.unacked_bytes = 0

    def delay_ack(self, now: float) -> None:
        """Owe an ACK by the delayed-ACK deadline, unless one is owed sooner."""
        if not self.ack_now and self._dl.ack is None:
            self._dl.ack = now + self.delayed_ack_s

    def note_segment_size(self, n: int) -> None:
        """Remember whether the peer's latest data segment was full-sized (it is in the middle
        of a transfer); on becoming so, the keepalive deadline is re-armed to include the
        early stall probe (``Liveness.stall_probe_due``)."""
        full = n >= self.full_seg
        if full is not self.peer_mid_stream:
            self.peer_mid_stream = full
            if full:
                self._dl.keepalive = None  # re-armed by the next datagrams_to_send

    def peer_quiet(self) -> None:
        """The peer answered a probe: it is not in the middle of a transfer until its next
        full-sized segment (``note_segment_size``) says it is."""
        self.peer_mid_stream = False

    def deliver(self, data: bytes | memoryview) -> None:
        """Hand in-order bytes to the application, or hold them while reading is paused."""
        self.nxt += len(data)
        self._count.bytes_received += len(data)
        if self.reading_paused:
            self.held.append(data)
        else:
            self._events.append(DataReceived(data))

    def release_lease(self) -> None:
        """Nothing more will arrive (the peer's FIN, or the connection's end): the window's
        growth goes back to the endpoint's budget."""
        lease = self._lease
        if lease is not None:
            lease.release()
            self._lease = None
            self._rtt_mark = _NO_MARK

    def take_next(self, payload: bytes | memoryview, now: float) -> None:
        """The next bytes in order, known to fit the window, with nothing out of order held
        (header prediction's case): deliver them and schedule the ACK."""
        n = len(payload)
        if (n >= self.full_seg) is not self.peer_mid_stream:
            self.note_segment_size(n)
        self.deliver(payload if self.views else bytes(payload))
        if self._lease is not None:
            self._arrived(self.nxt, now)
        self.unacked_bytes += n
        if self.unacked_bytes >= self.ack_bytes:
            self.ack_now = True
        else:
            self.delay_ack(now)

    def take(self, seg_pos: int, payload: bytes | memoryview, fin: bool, now: float) -> int:
        """An acceptable segment's data and FIN: deliver what is in order, keep what is not,
        and owe the ACK RFC 5681 section 4.2 asks for.  Returns ``TAKE_*`` bits."""
        result = 0
        rcv_nxt = self.nxt
        hi = rcv_nxt + self.window()
        fin_new = False
        if payload:
            self.note_segment_size(len(payload))
        if fin and self.fin_pos is None:
            fin_new = True
            fin_pos = seg_pos + len(payload)
            if fin_pos < hi or fin_pos == rcv_nxt:
                self.fin_pos = fin_pos
        if self.fin_pos is not None and rcv_nxt <= self.fin_pos < hi:
            # The peer's stream ends at its FIN: nothing beyond it is data, and a later FIN
            # elsewhere does not move it (RFC 9293 section 3.10.7.4).  A peer sending past it
            # had its bytes delivered and the EOF never came.
            hi = self.fin_pos
        if payload:
            reasm = self.reasm
            if seg_pos <= rcv_nxt < seg_pos + len(payload) and not len(reasm):
                # Fast path: the next bytes in order, nothing waiting behind them.  A segment
                # that starts below RCV.NXT (a sender bundling data not yet acknowledged) is in
                # order too: only its new part is taken (RFC 9293 section 3.10.7.4), and it
                # draws the ACK in-order data does, as in Linux, not the immediate one of a
                # gap or a duplicate (a thin stream's every bundle would draw one).  Its old
                # part is no D-SACK: bundled on purpose, it would read as endless reordering.
                data = payload[rcv_nxt - seg_pos : hi - seg_pos]
                self.deliver(data if self.views else bytes(data))
                self.unacked_bytes += len(data)
                if self.unacked_bytes >= self.ack_bytes:
                    self.ack_now = True
            else:
                had_gap = len(reasm) > 0
                limit = 2 * self.buffer_bytes
                stored = reasm.insert(seg_pos, payload, lo=rcv_nxt, hi=hi, limit=limit)
                if not stored and reasm.truesize + CHUNK_OVERHEAD_BYTES > limit:
                    result |= TAKE_OVER_BUFFER
                elif not stored and not fin_new:
                    self._count.dup_segments += 1
                    self.dsack = (seg_pos, seg_pos + len(payload))
                elif seg_pos > rcv_nxt:
                    self._count.ooo_segments += 1
                if seg_pos > rcv_nxt:
                    recent = self.recent_pos
                    recent.insert(0, seg_pos)
                    if len(recent) > RECENT_ARRIVALS:
                        recent.pop()
                for chunk in reasm.pop_ready(self.nxt):
                    if self.nxt + len(chunk) > hi:
                        # Stored before a FIN below it arrived: the rest is past the end.
                        chunk = chunk[: hi - self.nxt]
                        if chunk:
                            self.deliver(chunk)
                        break
                    self.deliver(chunk)
                # Out of order, or filling a gap: ACK at once (RFC 5681 section 4.2).
                if seg_pos != rcv_nxt or had_gap:
                    self.ack_now = True
                else:
                    self.unacked_bytes += len(payload)
            if self.nxt == rcv_nxt:
                self.ack_now = True  # nothing new in order: a duplicate, ACK it
            if self._lease is not None:
                self._arrived(seg_pos + len(payload), now)
        if self.fin_pos is not None and self.nxt == self.fin_pos:
            self.nxt += 1
            self.ack_now = True
            result |= TAKE_FIN
            self.release_lease()  # nothing more will arrive
        else:
            self.delay_ack(now)
        return result

    def pause(self) -> bool:
        """Stop delivering: data is held here and the advertised window shrinks.

        Data already queued as events but not yet taken comes back too (a batch of segments
        can queue a whole window at once), and so does the EOF queued behind it, to come
        again once that data is taken (an asyncio transport whose reading is paused reports
        neither), unless other events follow.  True when the orderly close queued behind
        that EOF came back with it: the connection reports it again after the EOF."""
        self.reading_paused = True
        events = self._events
        data = 0
        for e in events:
            if type(e) is not DataReceived:
                break
            data += 1
        rest = len(events) - data
        closed = False
        if rest:
            if rest > 2 or type(events[data]) is not EofReceived:
                return False
            if rest == 2:
                last = events[-1]
                if not (type(last) is ConnectionClosed and last.reason is CloseReason.CLOSED):
                    return False
                closed = True
            self.eof_delivered = False
        pieces = [e.data for e in events if isinstance(e, DataReceived)]
        events.clear()
        if pieces:
            # Counted in the window from now on: they arrived after the last ACK was built
            # (events are taken before the answer to a batch), so its right edge stays put.
            self.held.put_back(pieces)
        return closed

    def unread(self, data: bytes | memoryview) -> None:
        """Bytes the driver took but could not hand on (a buffered protocol paused reading
        in the middle of them): they come again before anything after them, whether reading
        is paused already (held first, delivered first on resume), is paused later, or not
        at all (the next event)."""
        events = self._events
        if self.reading_paused and not any(type(e) is DataReceived for e in events):
            self.held.put_back([data])
        else:
            events.appendleft(DataReceived(data))

    def resume(self) -> None:
        """Deliver again, starting with what was held."""
        self.reading_paused = False
        if self.held:
            events = self._events
            for piece in self.held.take(RESUME_PIECE_BYTES):
                events.append(DataReceived(piece))

    def window_grew(self, mss: int) -> bool:
        """Whether the window opened enough since last advertised to tell the peer now
        (receiver silly-window avoidance, RFC 9293 section 3.8.6.2.2)."""
        wnd = self.window()
        grow = wnd - self.adv_wnd
        return grow >= min(self.buffer_bytes // 2, 2 * mss) or (self.adv_wnd == 0 and wnd > 0)
