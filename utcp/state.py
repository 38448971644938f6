"""Connection states (RFC 9293 section 3.3.2) and the table of allowed transitions.

Every state change of a ``Connection`` is checked against ``TRANSITIONS``; a change missing from
the table is a bug in utcp, never the peer's fault, and raises ``AssertionError``.
"""

from __future__ import annotations

import enum
from typing import Final


class ConnectionState(enum.Enum):
    """The eleven TCP states, named as users know them."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    # Members are singletons compared by identity: hashing by identity (in C) keeps the
    # per-datagram ``state in SYNCHRONIZED`` tests cheap (Enum's own hash is Python code).
    __hash__ = object.__hash__


# The states as module constants: in the compiled build a constant is a load, where
# ``ConnectionState.NAME`` is an attribute lookup on the enum class (hundreds of instructions).
CLOSED: Final = ConnectionState.CLOSED
LISTEN: Final = ConnectionState.LISTEN
SYN_SENT: Final = ConnectionState.SYN_SENT
SYN_RECEIVED: Final = ConnectionState.SYN_RECEIVED
ESTABLISHED: Final = ConnectionState.ESTABLISHED
FIN_WAIT_1: Final = ConnectionState.FIN_WAIT_1
FIN_WAIT_2: Final = ConnectionState.FIN_WAIT_2
CLOSE_WAIT: Final = ConnectionState.CLOSE_WAIT
CLOSING: Final = ConnectionState.CLOSING
LAST_ACK: Final = ConnectionState.LAST_ACK
TIME_WAIT: Final = ConnectionState.TIME_WAIT

# Every state may also fall to CLOSED (reset, abort, timeout); that edge is added below.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    CLOSED: frozenset({LISTEN, SYN_SENT}),
    LISTEN: frozenset({SYN_RECEIVED}),
    SYN_SENT: frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1}),
    SYN_RECEIVED: frozenset({ESTABLISHED, FIN_WAIT_1, CLOSE_WAIT}),
    ESTABLISHED: frozenset({FIN_WAIT_1, CLOSE_WAIT}),
    FIN_WAIT_1: frozenset({FIN_WAIT_2, CLOSING, TIME_WAIT}),
    FIN_WAIT_2: frozenset({TIME_WAIT}),
    CLOSE_WAIT: frozenset({LAST_ACK}),
    CLOSING: frozenset({TIME_WAIT}),
    LAST_ACK: frozenset(),
    TIME_WAIT: frozenset(),
}
TRANSITIONS = {
    state: (allowed | {CLOSED}) if state is not CLOSED else allowed
    for state, allowed in TRANSITIONS.items()
}

# States in which both sides' initial sequence numbers are known (RFC 9293 "synchronized").
SYNCHRONIZED: Final = frozenset(
    {ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT}
)
# States in which the application may still queue data to send.
CAN_SEND: Final = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT})
# States in which data from the peer is still accepted.
CAN_RECEIVE: Final = frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})


def check_transition(old: ConnectionState, new: ConnectionState) -> None:
    """Raise ``AssertionError`` unless the table allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        raise AssertionError(f"illegal state transition {old.value} -> {new.value}")
