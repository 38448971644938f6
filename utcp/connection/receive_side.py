"""The receive side of a connection: the peer's positions, reassembly, the window we offer,
in-order delivery and the scheduling of our ACKs.

Positions are the peer's: 0 is its SYN.  ``nxt`` (RCV.NXT) only moves forward, by bytes
delivered in order and then once for the peer's FIN; every byte it passes is handed to the
application exactly once (``deliver``), or held while reading is paused.  An ACK is owed at
once (``ack_now``) or by the delayed-ACK deadline, which building any ACK settles.
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

from ..buffers import CHUNK_OVERHEAD_BYTES, ReassemblyBuffer
from ..config import Config
from ..events import DataReceived, Event
from ..seqnum import SEQ_MASK, seq_diff
from .counters import Counters
from .deadlines import Deadlines

__all__ = ["TAKE_FIN", "TAKE_OVER_BUFFER", "ReceiveSide"]

# What ``ReceiveSide.take`` reports, as bits.
TAKE_FIN: Final = 1  # the peer's FIN is now in order: RCV.NXT has passed it
TAKE_OVER_BUFFER: Final = 2  # out-of-order data dropped: reassembly is full


@final
class ReceiveSide:
    """RCV.NXT, reassembly, the offered window and ACK scheduling."""

    def __init__(
        self, config: Config, *, events: deque[Event], counters: Counters, deadlines: Deadlines
    ) -> None:
        self.buffer_bytes = config.recv_buffer_bytes
        self.delayed_ack_s = config.delayed_ack_s
        self.irs = 0  # the peer's initial sequence number: the wire seq of its position 0
        self.nxt = 0
        self.wscale = 0  # shift applied to the window we advertise (RFC 7323)
        self.held = bytearray()  # in-order data held while reading is paused
        self.reasm = ReassemblyBuffer()
        self.last_pos = 0  # start of the most recent out-of-order arrival (SACK order)
        self.fin_pos: int | None = None  # position of the peer's FIN, once it arrived
        self.eof_delivered = False
        self.reading_paused = False
        self.adv_wnd = config.recv_buffer_bytes  # window last advertised, bytes
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

    def window(self) -> int:
        """Bytes the peer may send beyond RCV.NXT now."""
        return max(0, self.buffer_bytes - len(self.held))

    def wire_ack(self, pos: int) -> int:
        """The 32-bit acknowledgement number of the peer's position ``pos``."""
        return (self.irs + pos) & SEQ_MASK

    def position(self, wire: int) -> int:
        """The position a wire sequence number names, near RCV.NXT."""
        nxt = self.nxt
        return nxt + seq_diff(wire, (self.irs + nxt) & SEQ_MASK)

    def acceptable(self, seg_pos: int, seg_len: int, wnd: int) -> bool:
        """RFC 9293 section 3.10.7.4's test of a segment against the window ``wnd``; one that
        covers the whole window is acceptable too (what fits is kept)."""
        nxt = self.nxt
        if seg_len == 0:
            return seg_pos == nxt if wnd == 0 else 0 <= seg_pos - nxt < wnd
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

    def deliver(self, data: bytes) -> None:
        """Hand in-order bytes to the application, or hold them while reading is paused."""
        self.nxt += len(data)
        self._count.bytes_received += len(data)
        if self.reading_paused:
            self.held += data
        else:
            self._events.append(DataReceived(data))

    def take_next(self, payload: bytes | memoryview, now: float) -> None:
        """The next bytes in order, known to fit the window, with nothing out of order held
        (header prediction's case): deliver them and schedule the ACK."""
        n = len(payload)
        if (n >= self.full_seg) is not self.peer_mid_stream:
            self.note_segment_size(n)
        self.deliver(bytes(payload))
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
        if fin:
            fin_new = self.fin_pos is None
            fin_pos = seg_pos + len(payload)
            if fin_pos < hi or fin_pos == rcv_nxt:
                self.fin_pos = fin_pos
        if payload:
            reasm = self.reasm
            if seg_pos == rcv_nxt and not len(reasm):
                # Fast path: the next bytes in order, nothing waiting behind them.
                data = payload[: hi - seg_pos] if len(payload) > hi - seg_pos else payload
                self.deliver(bytes(data))
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
                elif seg_pos > rcv_nxt:
                    self._count.ooo_segments += 1
                if seg_pos > rcv_nxt:
                    self.last_pos = seg_pos
                for chunk in reasm.pop_ready(self.nxt):
                    self.deliver(chunk)
                # Out of order, or filling a gap: ACK at once (RFC 5681 section 4.2).
                if seg_pos != rcv_nxt or had_gap:
                    self.ack_now = True
                else:
                    self.unacked_bytes += len(payload)
            if self.nxt == rcv_nxt:
                self.ack_now = True  # nothing new in order: a duplicate, ACK it
        if self.fin_pos is not None and self.nxt == self.fin_pos:
            self.nxt += 1
            self.ack_now = True
            result |= TAKE_FIN
        else:
            self.delay_ack(now)
        return result

    def pause(self) -> None:
        """Stop delivering: data is held here and the advertised window shrinks.

        Data already queued as events but not yet taken comes back too (a batch of segments
        can queue a whole window at once), unless other events follow it."""
        self.reading_paused = True
        events = self._events
        if events and all(type(e) is DataReceived for e in events):
            held = b"".join(e.data for e in events if isinstance(e, DataReceived))
            events.clear()
            # Counted in the window from now on: they arrived after the last ACK was built
            # (events are taken before the answer to a batch), so its right edge stays put.
            self.held[:0] = held

    def resume(self) -> None:
        """Deliver again, starting with what was held."""
        self.reading_paused = False
        if self.held:
            data = bytes(self.held)
            self.held.clear()
            self._events.append(DataReceived(data))

    def window_grew(self, mss: int) -> bool:
        """Whether the window opened enough since last advertised to tell the peer now
        (receiver silly-window avoidance, RFC 9293 section 3.8.6.2.2)."""
        wnd = self.window()
        grow = wnd - self.adv_wnd
        return grow >= min(self.buffer_bytes // 2, 2 * mss) or (self.adv_wnd == 0 and wnd > 0)
