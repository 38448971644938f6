"""Events a sans-I/O ``Connection`` reports to its driver, as small frozen dataclasses.

The driver collects them with ``Connection.next_event()`` after every input.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass


class CloseReason(enum.Enum):
    """Why a connection ended; each maps to the built-in exception users already catch."""

    CLOSED = "closed"  # orderly four-way close
    REFUSED = "refused"  # RST in answer to our SYN: ConnectionRefusedError
    RESET = "reset"  # RST from the peer: ConnectionResetError
    TIMEOUT = "timeout"  # retransmissions or user timeout exhausted: TimeoutError
    ABORTED = "aborted"  # abort() called locally
    IDLE = "idle"  # idle or keepalive timeout: TimeoutError
    UNREACHABLE = "unreachable"  # ICMP port unreachable, repeated: ConnectionResetError

    def exception(self) -> OSError | None:
        """The exception a user sees for this reason, or None for an orderly close."""
        if self is CloseReason.REFUSED:
            return ConnectionRefusedError(errno.ECONNREFUSED, "connection refused by peer")
        if self is CloseReason.RESET:
            return ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        if self is CloseReason.TIMEOUT:
            return TimeoutError(errno.ETIMEDOUT, "peer stopped acknowledging: connection timed out")
        if self is CloseReason.IDLE:
            return TimeoutError(
                errno.ETIMEDOUT, "connection timed out: idle timeout or keepalive unanswered"
            )
        if self is CloseReason.UNREACHABLE:
            return ConnectionResetError(
                errno.ECONNRESET, "connection reset: the peer's port is unreachable"
            )
        if self is CloseReason.ABORTED:
            return ConnectionAbortedError(errno.ECONNABORTED, "connection aborted locally")
        return None


class DropReason(str, enum.Enum):
    """Why a datagram was discarded; the value is the counter's key in stats and logs."""

    BAD_CHECKSUM = "bad checksum"
    MALFORMED = "malformed"  # too short, unknown version, bad header length or option
    UNKNOWN_CONNECTION = "unknown connection"  # no connection has that id
    WRONG_CONNECTION_ID = "wrong connection id"
    WRONG_ADDRESS = "wrong address"  # the connection's id from another address
    OUT_OF_WINDOW = "out of window"  # sequence or acknowledgement outside the acceptable range
    UNEXPECTED = "unexpected"  # acceptable numbers, but not a segment this state takes
    RATE_LIMITED = "rate limited"  # a limiter refused it (or the answer it would draw)
    BACKLOG_FULL = "backlog full"  # a SYN while the half-open queue is full
    TOO_MANY_CONNECTIONS = "too many connections"  # a SYN beyond the connection limit
    OVER_BUFFER = "over buffer"  # out-of-order data the reassembly limits cannot hold

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all connection events."""


@dataclass(frozen=True, slots=True)
class ConnectionEstablished(Event):
    """The handshake completed; data can flow both ways."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """In-order bytes from the peer, delivered exactly once: ``bytes``, or a read-only
    ``memoryview`` of the datagram they came in when the driver asked for views
    (``Connection.deliver_views``), saving a copy for a driver that copies them anyway."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class EofReceived(Event):
    """The peer sent FIN and every byte before it has been delivered."""


@dataclass(frozen=True, slots=True)
class FinAcknowledged(Event):
    """Our FIN, and with it every byte written before it, is acknowledged by the peer.

    After ``close()`` this is where the application's part ends (asyncio's ``wait_closed()``
    returns): what is left of the teardown (FIN_WAIT_2, TIME_WAIT) needs nothing from it."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection reached CLOSED (or TIME_WAIT, for an orderly close) and is done."""

    reason: CloseReason
