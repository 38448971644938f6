"""The deadlines of one connection, by name: the core's timer table.

Each field is an absolute time (the ``now`` the driver passes in) or None when that timer is
off.  ``earliest()`` is what ``Connection.get_timer`` answers, ``clear()`` stops every one of
them at once (entering TIME_WAIT or ending the connection can no longer forget one), and
``NAMES`` lists them in the order ``Connection.handle_timer`` runs those that expired.  Path MTU
discovery keeps its own deadline (``pmtud.Pmtud.timer``).
"""

from __future__ import annotations

from typing import Final, final

__all__ = [
    "ACK",
    "CONFIRM",
    "FIN_WAIT_2_TIMER",
    "IDLE",
    "KEEPALIVE",
    "NAMES",
    "PACE",
    "PERSIST",
    "REORDER",
    "RTO",
    "TIMER_COUNT",
    "TIME_WAIT_TIMER",
    "TLP",
    "TRACE_NAMES",
    "WAKE",
    "Deadlines",
]

# The order handle_timer checks them in: TIME_WAIT's end first (nothing else runs after it),
# the retransmission timer before the tail loss probe it supersedes.
NAMES: Final = (
    "time_wait",
    "rto",
    "tlp",
    "reorder",
    "fin_wait_2",
    "persist",
    "ack",
    "keepalive",
    "idle",
    "confirm",
    "pace",
    "wake",
)
# The same timers as trace events name them (docs/TRACE.md, ``timer_fired``).
TRACE_NAMES: Final = (
    "time_wait",
    "rto",
    "tlp",
    "reorder",
    "fin_wait_2",
    "persist",
    "delayed_ack",
    "keepalive",
    "idle",
    "handshake_ack",
    "pacing",
    "wake",
)
# Each timer's index in NAMES: what ``Deadlines.at`` and ``Deadlines.stop`` take.
TIME_WAIT_TIMER: Final = 0
RTO: Final = 1
TLP: Final = 2
REORDER: Final = 3
FIN_WAIT_2_TIMER: Final = 4
PERSIST: Final = 5
ACK: Final = 6
KEEPALIVE: Final = 7
IDLE: Final = 8
CONFIRM: Final = 9
PACE: Final = 10
WAKE: Final = 11
TIMER_COUNT: Final = 12


@final
class Deadlines:
    """Every deadline of one connection; the connection's handlers set and clear them."""

    def __init__(self) -> None:
        self.rto: float | None = None  # retransmission timeout (RFC 6298)
        self.tlp: float | None = None  # tail loss probe (RFC 8985 section 7)
        self.reorder: float | None = None  # RACK's reordering window ends (RFC 8985 6.2)
        self.ack: float | None = None  # delayed ACK (RFC 9293 section 3.8.6.3)
        self.persist: float | None = None  # zero-window probe (RFC 9293 section 3.8.6.1)
        self.time_wait: float | None = None  # end of TIME_WAIT (2 MSL, restartable)
        self.fin_wait_2: float | None = None  # an orphan's FIN_WAIT_2 gives up
        self.keepalive: float | None = None  # keepalive, stall or ICMP-confirming probe
        self.idle: float | None = None  # idle timeout: the peer silent too long
        self.confirm: float | None = None  # re-send of the handshake ACK
        self.pace: float | None = None  # the pacer lets the next segment leave
        self.wake: float | None = None  # the driver's turn for the endpoint (Connection.wake_at)

    def earliest(self) -> float | None:
        """The earliest deadline set, or None when every timer is off."""
        # Plain comparisons: compiled, a few machine instructions per field (this is asked
        # after every datagram).
        best = self.rto
        t = self.tlp
        if t is not None and (best is None or t < best):
            best = t
        t = self.reorder
        if t is not None and (best is None or t < best):
            best = t
        t = self.ack
        if t is not None and (best is None or t < best):
            best = t
        t = self.persist
        if t is not None and (best is None or t < best):
            best = t
        t = self.time_wait
        if t is not None and (best is None or t < best):
            best = t
        t = self.fin_wait_2
        if t is not None and (best is None or t < best):
            best = t
        t = self.keepalive
        if t is not None and (best is None or t < best):
            best = t
        t = self.idle
        if t is not None and (best is None or t < best):
            best = t
        t = self.confirm
        if t is not None and (best is None or t < best):
            best = t
        t = self.pace
        if t is not None and (best is None or t < best):
            best = t
        t = self.wake
        if t is not None and (best is None or t < best):
            best = t
        return best

    def at(self, timer: int) -> float | None:
        """The deadline of the timer with index ``timer`` (its place in NAMES)."""
        if timer == TIME_WAIT_TIMER:
            return self.time_wait
        if timer == RTO:
            return self.rto
        if timer == TLP:
            return self.tlp
        if timer == REORDER:
            return self.reorder
        if timer == FIN_WAIT_2_TIMER:
            return self.fin_wait_2
        if timer == PERSIST:
            return self.persist
        if timer == ACK:
            return self.ack
        if timer == KEEPALIVE:
            return self.keepalive
        if timer == IDLE:
            return self.idle
        if timer == CONFIRM:
            return self.confirm
        if timer == PACE:
            return self.pace
        if timer == WAKE:
            return self.wake
        raise ValueError(f"no timer {timer}")

    def stop(self, timer: int) -> None:
        """Turn off the timer with index ``timer``."""
        if timer == TIME_WAIT_TIMER:
            self.time_wait = None
        elif timer == RTO:
            self.rto = None
        elif timer == TLP:
            self.tlp = None
        elif timer == REORDER:
            self.reorder = None
        elif timer == FIN_WAIT_2_TIMER:
            self.fin_wait_2 = None
        elif timer == PERSIST:
            self.persist = None
        elif timer == ACK:
            self.ack = None
        elif timer == KEEPALIVE:
            self.keepalive = None
        elif timer == IDLE:
            self.idle = None
        elif timer == CONFIRM:
            self.confirm = None
        elif timer == PACE:
            self.pace = None
        elif timer == WAKE:
            self.wake = None
        else:
            raise ValueError(f"no timer {timer}")

    def clear(self) -> None:
        """Stop every timer."""
        self.rto = self.tlp = self.reorder = self.ack = self.persist = None
        self.time_wait = self.fin_wait_2 = self.keepalive = self.idle = self.confirm = None
        self.pace = self.wake = None
