"""Control segments a connection owes: its SYN (or SYN-ACK) and how often it went out, an RST,
a probe with an old sequence number, the answer to the peer's PMTU probe, and RSTs built for
stray packets.

Handlers only set these; ``Connection.datagrams_to_send`` emits each once and clears it.
"""

from __future__ import annotations

from typing import final

__all__ = ["Control"]


@final
class Control:
    """What the next ``datagrams_to_send`` must emit besides data and ACKs."""

    def __init__(self) -> None:
        self.need_syn = False  # SYN or SYN-ACK due to be (re)sent
        self.need_rst = False
        self.send_probe = False  # an ACK with an old sequence number, to draw the peer's ACK
        self.probe_ack_id: int | None = None  # the peer's PMTU probe we owe an answer
        self.path_response: int | None = None  # the peer's path challenge we owe an answer
        # A fresh token the next probe carries as a PATH_CHALLENGE (``probe_path``): after a
        # move to a new socket, what tells the peer this probe is no copy of an older one.
        self.probe_token: int | None = None
        self.pending_raw: list[bytes] = []  # RSTs for stray packets, already encoded
        self.syn_retries = 0  # SYN (or SYN-ACK) retransmissions so far
        self.syn_sent_at = 0.0  # when the first SYN went out: its RTT sample
        # Opened by a peer's SYN: its address is not validated yet, so our SYN-ACK is never
        # re-sent on a timer (at most one per SYN, RFC 9000 section 8.1's concern).
        self.passive = False

    def take_raw(self) -> list[bytes]:
        """The stray-packet RSTs waiting, handed over once."""
        out = self.pending_raw
        self.pending_raw = []
        return out
