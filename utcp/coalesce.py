"""Receive coalescing: a run of consecutive data segments of one connection, as one batch of
received datagrams brings them, merged into one segment before the connection sees it (what
GRO does for TCP in the kernel).

Only plain data segments that differ in nothing but sequence number and payload are merged,
each starting where the one before ended, so the connection sees the same bytes, ACK fields
and window it would have seen one at a time, with the per-segment work done once per run.
"""

from __future__ import annotations

from typing import Any, Final

from .packet import Flag, Packet
from .seqnum import SEQ_MASK

__all__ = ["MAX_RUN_BYTES", "Received", "coalesce"]

_ACK: Final = int(Flag.ACK)
# A merged run's payload stops growing at this size (a segment larger on its own is left
# alone), as GRO's 64 KiB.  A window of megabytes arrives in batches of megabytes; joined
# whole, every batch was a fresh allocation of that size that the kernel had to fault in, and
# the reader's buffer grew by all of it at once: on loopback with 64 KiB datagrams the
# receiver then spent more time in page faults than in the protocol.
MAX_RUN_BYTES: Final = 64 * 1024

Received = tuple[Packet, Any, int, int]
"""One decoded datagram: packet, source address, bytes on the wire, segments it stands for."""


def _mergeable(p: Packet) -> bool:
    return (
        p.flags == _ACK
        and bool(p.payload)
        and p.mss is None
        and p.wscale is None
        and not p.sack_permitted
        and p.probe is None
        and p.probe_ack is None
    )


def coalesce(items: list[Received]) -> list[Received]:
    """The batch with each run of mergeable consecutive segments replaced by one segment."""
    if len(items) < 2:
        return items
    out: list[Received] = []
    head: Packet | None = None
    head_addr: Any = None
    parts: list[Any] = []
    size = count = run = 0
    next_seq = 0
    for item in items:
        p, addr, n, segs = item
        plen = len(p.payload)
        if (
            head is not None
            and p.seq == next_seq
            and run + plen <= MAX_RUN_BYTES
            and p.dst_cid == head.dst_cid
            and p.ack == head.ack
            and p.window == head.window
            and addr == head_addr
            and p.sack_blocks == head.sack_blocks
            and p.timestamps == head.timestamps
            and p.src_cid == head.src_cid
            and _mergeable(p)
        ):
            parts.append(p.payload)
            run += plen
            next_seq = (next_seq + plen) & SEQ_MASK
            size += n
            count += segs
            continue
        if head is not None:
            out.append(_finish(head, head_addr, parts, size, count))
            head = None
        if _mergeable(p):
            head, head_addr, parts, size, count = p, addr, [p.payload], n, segs
            run = plen
            next_seq = (p.seq + plen) & SEQ_MASK
        else:
            out.append(item)
    if head is not None:
        out.append(_finish(head, head_addr, parts, size, count))
    return out


def _finish(head: Packet, addr: Any, parts: list[Any], size: int, count: int) -> Received:
    if len(parts) > 1:
        head.payload = b"".join(parts)
    return head, addr, size, count
