"""The send side of a connection: our positions, the bytes written and not yet acknowledged,
the peer's window and the MSS we send with.

Positions are unbounded: 0 is our SYN, data byte k is k + 1, and the FIN takes the position
after the last byte.  ``una <= nxt <= max`` always holds, and ``una`` only moves forward
(``acknowledge``); wire sequence numbers exist only at the edge (``wire_seq``).
"""

from __future__ import annotations

from typing import final

from ..buffers import SendBuffer
from ..packet import Packet
from ..seqnum import SEQ_MASK, seq_diff

__all__ = ["SendSide"]


@final
class SendSide:
    """Send positions, send buffer, the peer's window (RFC 9293 section 3.10.7.4's SND.WND,
    WL1 and WL2) and the window-probe backoff."""

    def __init__(self, *, iss: int, mss: int) -> None:
        self.iss = iss  # our initial sequence number: the wire seq of position 0
        self.una = 0  # oldest position not acknowledged
        self.nxt = 0  # next position to send for the first time
        self.max = 0  # highest position sent + 1
        self.buf = SendBuffer(1)
        self.fin_pos: int | None = None  # position of our FIN once close() was called
        self.wnd = mss  # the peer's window, bytes (until its first window arrives)
        self.max_wnd = 0  # largest window the peer has offered
        self.wl1 = -1  # peer position of the segment that last updated the window
        self.wl2 = -1  # our position acknowledged by that segment
        self.wscale = 0  # shift applied to the peer's window field (RFC 7323)
        self.mss = mss  # largest payload we put in one segment
        self.peer_mss = mss  # the peer's MSS option, once its SYN arrived
        self.persist_backoff = 0  # window probes' exponential backoff
        self.persist_probes = 0  # window probes unanswered in a row
        # An orphan gave up on a peer that answered its window probes but never opened its
        # window (the timeout's reason is not silence).
        self.window_never_opened = False
        # It gave up because the peer answers small datagrams while no datagram of the base
        # size gets through (the path's MTU is below base_datagram_bytes).
        self.path_too_small = False

    def wire_seq(self, pos: int) -> int:
        """The 32-bit sequence number of position ``pos``."""
        return (self.iss + pos) & SEQ_MASK

    def position(self, wire: int) -> int:
        """The position a wire sequence (or acknowledgement) number names, near ``una``."""
        una = self.una
        return una + seq_diff(wire, (self.iss + una) & SEQ_MASK)

    def data_len(self, start: int, end: int) -> int:
        """Payload bytes in positions [start, end): a FIN occupies a position but no byte."""
        fin_pos = self.fin_pos
        if fin_pos is not None and end > fin_pos:
            end = fin_pos
        return max(0, end - start)

    @property
    def data_acknowledged(self) -> bool:
        """Whether our FIN is queued and every byte before it acknowledged: a close that
        waits at most for the FIN's own ACK."""
        return self.fin_pos is not None and self.una >= self.fin_pos

    @property
    def fin_acknowledged(self) -> bool:
        """Whether our FIN, and so every byte before it, has been acknowledged."""
        return self.fin_pos is not None and self.una > self.fin_pos

    @property
    def has_unsent(self) -> bool:
        """Whether data, or the FIN, waits to be sent for the first time."""
        nxt = self.nxt
        fin_pos = self.fin_pos
        return nxt < self.buf.end or (fin_pos is not None and nxt == fin_pos)

    def window_closed(self) -> bool:
        """True when data or a FIN waits and the peer's window has no room for it."""
        return self.una + self.wnd <= self.nxt and self.has_unsent

    def acknowledge(self, ack_pos: int) -> None:
        """The peer acknowledged everything before ``ack_pos``: release those bytes."""
        self.una = ack_pos
        data_end = self.buf.end
        self.buf.release_to(ack_pos if ack_pos < data_end else data_end)

    def update_window(self, p: Packet, seg_pos: int, ack_pos: int, syn: bool) -> bool:
        """Take the peer's window from ``p`` if it is the newest segment (RFC 9293 section
        3.10.7.4); True when a zero window reopened (window probing stops)."""
        if self.wl1 < seg_pos or (self.wl1 == seg_pos and self.wl2 <= ack_pos):
            wnd = p.window << (0 if syn else self.wscale)
            reopened = wnd > 0 and self.wnd == 0
            if reopened:
                self.persist_backoff = 0
            self.wnd = wnd
            if wnd > self.max_wnd:
                self.max_wnd = wnd
            self.wl1 = seg_pos
            self.wl2 = ack_pos
            return reopened
        return False
