"""What one connection counts, for ``ConnectionStats`` (utcp/stats.py) and the trace.

Plain integers the connection's handlers add to; nothing here decides anything.  Estimators
(RTT, windows) live with the parts that own them, not here.
"""

from __future__ import annotations

from ..events import DropReason

__all__ = ["Counters"]


class Counters:
    """The counters of one connection."""

    def __init__(self) -> None:
        self.bytes_sent = 0  # payload bytes sent for the first time
        self.bytes_received = 0  # payload bytes delivered in order
        self.bytes_retx = 0  # payload bytes sent again
        self.segments_sent = 0
        self.segments_received = 0
        self.retx = 0  # segments sent again (any cause)
        self.fast_retx = 0  # recovery episodes entered (fast retransmit)
        self.timeouts = 0  # retransmission timer expiries
        self.tlp_probes = 0  # tail loss probes
        self.tlp_recoveries = 0  # probes that repaired a loss (RFC 8985 section 7.4)
        self.rack_timeouts = 0  # losses found when RACK's reordering window ran out
        self.dsacks_received = 0  # ACKs reporting a duplicate segment (RFC 2883)
        self.spurious_recoveries = 0  # episodes whose every resent segment had arrived (D-SACK)
        self.dupack_count = 0  # duplicate ACKs received
        self.dropped = 0  # datagrams discarded, all reasons
        self.drops: dict[DropReason, int] = {}  # ``dropped`` by reason
        self.challenge_acks = 0  # RFC 5961 challenge ACKs sent
        self.dup_segments = 0  # data segments all of whose bytes we already had
        self.ooo_segments = 0  # data segments beyond a gap
        self.fast_received = 0  # shortcuts taken (Config.fast_paths)
        self.fast_sent = 0
        self.bundled_segments = 0  # segments of new data that also carried unacknowledged data
        self.bundled_bytes = 0  # unacknowledged payload bytes they carried again
        self.fast_idle = 0
        self.icmp_errors = 0  # ICMP errors taken as ours

    def count_drop(self, reason: DropReason) -> None:
        """One more datagram discarded for ``reason``."""
        self.dropped += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1
