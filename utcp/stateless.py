"""What needs no connection state: fresh connection ids and initial sequence numbers, and the
RST that answers a packet which reached no connection.

Ids and ISNs come from ``secrets`` (unpredictable to an observer); a RST is never answered.
"""

from __future__ import annotations

import secrets
from typing import Final

from .packet import Flag, Packet, encode
from .seqnum import SEQ_MASK

__all__ = ["new_connection_id", "new_isn", "reset_for"]

_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)


def new_connection_id() -> int:
    """A random non-zero 32-bit connection id."""
    while True:
        cid = secrets.randbits(32)
        if cid:
            return cid


def new_isn() -> int:
    """An unpredictable initial sequence number (RFC 6528: no observer can guess the next)."""
    return secrets.randbits(32)


def reset_for(packet: Packet) -> bytes | None:
    """The RST answering a packet that reached no connection, or None if none is due.

    RFC 9293 section 3.10.7.1: a RST is never answered; if the packet carries an ACK the RST
    takes its sequence number from it, otherwise it acknowledges the whole segment.
    """
    if packet.flags & _RST:
        return None
    if packet.flags & _ACK:
        rst = Packet(_RST, packet.dst_cid, packet.src_cid, packet.ack, 0, 0)
    else:
        ack = (packet.seq + packet.seg_len) & SEQ_MASK
        rst = Packet(_RST | _ACK, packet.dst_cid, packet.src_cid, 0, ack, 0)
    return encode(rst)
