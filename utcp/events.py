"""Events a sans-I/O ``Connection`` reports to its driver, as small frozen dataclasses.

The driver collects them with ``Connection.next_event()`` after every input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CloseReason(enum.Enum):
    """Why a connection ended; each maps to the built-in exception users already catch."""

    CLOSED = "closed"  # orderly four-way close
    REFUSED = "refused"  # RST in answer to our SYN: ConnectionRefusedError
    RESET = "reset"  # RST from the peer: ConnectionResetError
    TIMEOUT = "timeout"  # retransmissions or user timeout exhausted: TimeoutError
    ABORTED = "aborted"  # abort() called locally
    IDLE = "idle"  # idle or keepalive timeout: TimeoutError

    def exception(self) -> OSError | None:
        """The exception a user sees for this reason, or None for an orderly close."""
        if self is CloseReason.REFUSED:
            return ConnectionRefusedError("connection refused by peer")
        if self is CloseReason.RESET:
            return ConnectionResetError("connection reset by peer")
        if self is CloseReason.TIMEOUT:
            return TimeoutError("peer stopped acknowledging: connection timed out")
        if self is CloseReason.IDLE:
            return TimeoutError("keepalive probes unanswered: connection timed out")
        if self is CloseReason.ABORTED:
            return ConnectionAbortedError("connection aborted locally")
        return None


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all connection events."""


@dataclass(frozen=True, slots=True)
class ConnectionEstablished(Event):
    """The handshake completed; data can flow both ways."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """In-order bytes from the peer, delivered exactly once."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EofReceived(Event):
    """The peer sent FIN and every byte before it has been delivered."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection reached CLOSED (or TIME_WAIT, for an orderly close) and is done."""

    reason: CloseReason
