"""What the SYN exchange negotiated: SACK, timestamps (and the peer's latest value to echo),
window scaling and path MTU discovery, plus the MSS our own SYN announces.

Settled once, from the peer's SYN (``learn``); an option is on only when both SYNs offered it.
The timestamp clock is the ``now`` of the latest ``datagrams_to_send``, in milliseconds.
"""

from __future__ import annotations

from typing import Final, final

from ..config import Config
from ..packet import HEADER_SIZE, Flag, Packet, options_size
from ..seqnum import SEQ_MASK

__all__ = ["Negotiated"]

_TS_COST: Final = options_size(timestamps=True)  # padded TIMESTAMPS option, bytes
_ACK_FLAG: Final = int(Flag.ACK)


@final
class Negotiated:
    """The options both ends agreed on in the handshake."""

    def __init__(self, config: Config) -> None:
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0  # the peer's latest timestamp value, echoed back (RFC 7323)
        self.wscale_ok = False
        self.pmtud_ok = False  # both ends take part: we probe, and answer the peer's probes
        # The MSS our SYN announces: with path MTU discovery, what the largest datagram we
        # take can carry (the receive path takes any segment up to it).
        self.adv_mss = config.max_datagram_bytes - HEADER_SIZE if config.pmtud else config.mss_bytes
        self.clock_ms = 0.0  # the timestamp clock: now of the latest datagrams_to_send

    def learn(self, p: Packet, config: Config) -> None:
        """Take the options of the peer's SYN (or SYN-ACK)."""
        self.sack_ok = config.sack and p.sack_permitted
        # A SYN's offer is accepted (as TCP does); a SYN-ACK's only answers ours.
        self.ts_ok = p.timestamps is not None and (
            config.offers_timestamps or not p.flags & _ACK_FLAG
        )
        if p.timestamps is not None:
            self.ts_recent = p.timestamps[0]
        self.wscale_ok = p.wscale is not None
        self.pmtud_ok = config.pmtud and p.probe_permitted

    @property
    def ts_cost(self) -> int:
        """Bytes of options on every segment: the padded TIMESTAMPS option when negotiated."""
        return _TS_COST if self.ts_ok else 0

    def ts_now(self) -> int:
        """The timestamp value our segments carry now."""
        return int(self.clock_ms) & SEQ_MASK
