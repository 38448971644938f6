"""Datagram packetization-layer path MTU discovery (RFC 8899): which datagram size the path
carries, found with padded probes, and the fall back to the base size when it stops carrying it.

Sans-I/O like the connection that owns it: it never sends and reads no clock.  It says which
probe is due (``next_probe``), learns from probe ACKs, probe timeouts and black holes, and has
one deadline (``timer``).  ``size`` is always the base size or a size a probe confirmed, never
above the ceiling; every state change goes through ``_set_state``, checked against the table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "MAX_PROBES",
    "PLATEAUS_BYTES",
    "PMTU_RAISE_TIMER_S",
    "Pmtud",
    "PmtudState",
    "probe_timeout_s",
]

MAX_PROBES: Final = 3  # unanswered probes of one size before it counts as failed (RFC 8899 5.1.2)
PMTU_RAISE_TIMER_S: Final = 600.0  # SEARCH_COMPLETE searches again after this (RFC 8899 5.1.1)
PROBE_TIMEOUT_MIN_S: Final = 0.010  # floor of the probe timer, as the tail loss probe's
PROBE_WAIT_MAX_S: Final = 60.0  # longest wait of a probe queued behind data (on_timer)
ERROR_RETRY_MIN_S: Final = 1.0  # ERROR re-probes the base size after this, doubling ...
ERROR_RETRY_MAX_S: Final = 60.0  # ... up to this
# Each time the base size fails, one probe this small goes too: answered, it shows that the
# peer is there and only the base size does not get through (the path's MTU is below it).
CONTROL_PROBE_BYTES: Final = 576
# UDP payloads of common paths, tried in ascending order before any finer search: a 1500-byte
# MTU over IPv6 and IPv4, a 9000-byte one, and Linux loopback's 65536 over IPv6 (65507, the
# IPv4 maximum, is the default ceiling, always tried last).
PLATEAUS_BYTES: Final = (1452, 1472, 8952, 8972, 65488)
GALLOP_START_BYTES: Final = 1  # first step of the exponential search: is anything larger carried?
_RECENT_PROBES: Final = 16  # probe ids remembered, so a late ACK still counts
_NEVER: Final = float("inf")


class PmtudState(enum.Enum):
    """The states of RFC 8899 section 5.2."""

    DISABLED = "DISABLED"  # not probing: before the handshake, or the peer does not take part
    BASE = "BASE"  # confirming that the base size gets through
    SEARCHING = "SEARCHING"  # probing larger sizes
    SEARCH_COMPLETE = "SEARCH_COMPLETE"  # done until the raise timer, or a black hole
    ERROR = "ERROR"  # not even the base size was confirmed; retrying it now and then


P: Final = PmtudState
# Every state may also fall to DISABLED when the connection stops sending; added below.
TRANSITIONS: dict[PmtudState, frozenset[PmtudState]] = {
    P.DISABLED: frozenset({P.BASE}),
    P.BASE: frozenset({P.SEARCHING, P.ERROR}),
    P.SEARCHING: frozenset({P.SEARCH_COMPLETE, P.BASE}),
    P.SEARCH_COMPLETE: frozenset({P.SEARCHING, P.BASE}),
    P.ERROR: frozenset({P.SEARCHING}),
}
TRANSITIONS = {
    state: (allowed | {P.DISABLED}) if state is not P.DISABLED else allowed
    for state, allowed in TRANSITIONS.items()
}

# Search phases within SEARCHING: the plateau table, then doubling steps, then bisection.
_WALK, _GALLOP, _BISECT = 0, 1, 2


def probe_timeout_s(srtt: float | None, rttvar: float, fallback_s: float) -> float:
    """How long a probe may go unanswered: RFC 6298's RTO formula without its 200 ms floor,
    as QUIC's PTO (RFC 9002 section 6.2.1) with no ACK delay, since probes are answered at once.

    The floor of the RTO guards against spurious retransmissions; a spurious probe timeout only
    costs one more probe (and a late answer still counts).  ``fallback_s`` is used before any
    RTT sample.
    """
    if srtt is None:
        return fallback_s
    return max(srtt + max(4 * rttvar, 0.001), PROBE_TIMEOUT_MIN_S)


class Pmtud:
    """One connection's search for its path's largest datagram (sizes are UDP payload bytes).

    The connection sends the probe ``next_probe`` names whenever ``probe_due`` is set and it
    may, feeds back PROBE_ACKs and black holes, calls ``on_timer`` at ``timer`` (a probe's
    timeout) and ``wake`` when it sends data at or after ``wake_at``.  The raise timer and
    ERROR's retry wait for traffic that way: an idle connection has nothing to make bigger,
    and keeps no timer running for it.
    """

    def __init__(
        self,
        *,
        base_bytes: int,
        log: Any,
        on_state: Callable[[PmtudState, PmtudState, int], None] | None = None,
    ) -> None:
        self.state = P.DISABLED
        self.base = base_bytes
        self.size = base_bytes  # the PLPMTU: largest datagram confirmed (or the base size)
        self.ceiling = base_bytes  # largest size worth probing: ours and the peer's limit
        self.probe_due = False  # ``next_probe`` has a probe to send
        self.timer: float | None = None  # when the probe in flight counts as lost
        self.wake_at = _NEVER  # from then on, sending data calls ``wake``
        self.probes_sent = 0
        self.probes_lost = 0
        self.black_holes = 0
        self.base_failures = 0  # times in a row the base size failed (BASE, then ERROR's retries)
        self.error_since = 0.0  # when ERROR began
        self.control_due = False  # a control probe (CONTROL_PROBE_BYTES) is to go
        self.control_answered_at = -1.0  # when one was last answered
        self._log = log
        self._on_state = on_state
        self._hi = base_bytes  # largest size not known to fail
        self._phase = _WALK
        self._step = GALLOP_START_BYTES
        self._candidate = 0  # size being probed; 0 when none
        self._tries = 0  # probes sent of the candidate
        self._sent_after = 0  # the probe in flight went after the data below this sequence
        self._order = 0  # ... and after this many transmissions of data
        self._timeout_s = 0.0  # its timer's length, for the waits it is given ...
        self._wait_s = 0.0  # ... the last wait (doubled while the data ahead stands still)
        self._waited_una = -1  # SND.UNA when the last wait began
        self._error_wait = ERROR_RETRY_MIN_S
        self._next_id = 1
        self._recent: dict[int, int] = {}  # probe id -> size, for the last few probes

    # ------------------------------------------------------------------ inputs

    def start(self, *, ceiling: int, now: float) -> None:
        """The handshake is done and both ends take part: confirm the base size, then search
        up to ``ceiling`` (the smaller of our largest datagram and what the peer accepts)."""
        self.ceiling = ceiling
        self.base = min(self.base, ceiling)
        self.size = self.base
        self._hi = ceiling
        self._set_state(P.BASE)
        self._probe(self.base)

    def next_probe(
        self, *, now: float, timeout_s: float, sent_after: int = 0, order: int = 0
    ) -> tuple[int, int] | None:
        """``(probe id, datagram size)`` of the probe due now, counted as sent, or None.

        The caller sends it at once, behind the data up to sequence number ``sent_after``
        (SND.NXT) and after ``order`` transmissions of data (``Scoreboard.last_tx``);
        ``timeout_s`` (see ``probe_timeout_s``) later it counts as lost, once it has had its
        chance to arrive (``on_timer``).  At most one probe is in flight, so probes are at
        least an RTT apart, as RFC 8899 section 3 requires of probes that the congestion
        window does not govern.
        """
        if not self.probe_due:
            return None
        if self.control_due:
            # Not a candidate: no tries or timer; its answer is only evidence (above).
            self.control_due = False
            self.probe_due = self._candidate != 0
            return self._sent(CONTROL_PROBE_BYTES), min(CONTROL_PROBE_BYTES, self.base)
        self.probe_due = False
        self._tries += 1
        self.timer = now + timeout_s
        self._sent_after = sent_after
        self._order = order
        self._timeout_s = self._wait_s = timeout_s
        self._waited_una = -1
        return self._sent(self._candidate), self._candidate

    def _sent(self, size: int) -> int:
        """A probe of ``size`` goes: its id, remembered for its answer among the last few."""
        self.probes_sent += 1
        probe_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        self._recent[probe_id] = size
        if len(self._recent) > _RECENT_PROBES:
            del self._recent[next(iter(self._recent))]
        return probe_id

    def on_probe_acked(self, probe_id: int, *, now: float) -> bool:
        """A PROBE_ACK arrived; True when ``size`` changed.  Unknown ids are ignored, and so
        is any answer that is no news (a size already confirmed)."""
        acked = self._recent.pop(probe_id, None)
        if acked is None:
            return False
        old = self.size
        if acked == CONTROL_PROBE_BYTES and acked < self.base:
            self.control_answered_at = now
            return False
        if self.state in (P.BASE, P.ERROR):
            if acked != self.base:
                return False
            # The base size is confirmed (RFC 8899 section 5.2): search above it.
            self.wake_at = _NEVER
            self.base_failures = 0
            self._error_wait = ERROR_RETRY_MIN_S
            self._set_state(P.SEARCHING)
            self._phase = _WALK
            self._advance(now)
        elif acked > self.size:
            # Any answered size is evidence, also a late answer to an earlier candidate.
            self.size = acked
            self._hi = max(self._hi, acked)
            if acked == self._candidate and self._phase == _GALLOP:
                self._step *= 2
            if self.state is P.SEARCHING and self._candidate <= acked:
                self._advance(now)  # the candidate is answered, or made moot
        return self.size != old

    def on_timer(self, *, now: float, acked_through: int = 0, delivered_order: int = 0) -> None:
        """The probe's timer ran out.  It has had its chance to arrive once the data sent
        before it is acknowledged (SND.UNA, ``acked_through``, reached what it went after)
        or data sent after it was delivered (``delivered_order``, RACK's transmission
        order, is beyond its own), as RACK (RFC 8985) deems a segment lost; until then it
        may be waiting behind that data in the bottleneck's queue, and gets another wait:
        as long as the first while that data is being acknowledged, else twice the last (a
        path that stopped carrying anything keeps no timer firing every few milliseconds
        until its connection notices).  Only while SEARCHING: a probe of
        the base size goes with data no larger than itself, so data held up says as much
        as the probe (a path below the base size carries neither).  Unanswered after its
        chance: send the same size again (one loss may be chance), or after MAX_PROBES
        count the size as failed."""
        if self.timer is None or now < self.timer:
            return
        if (
            self.state is P.SEARCHING
            and acked_through < self._sent_after
            and delivered_order <= self._order
        ):
            if acked_through > self._waited_una:
                self._wait_s = self._timeout_s  # the data ahead moves: look again soon
            else:
                self._wait_s = min(2 * self._wait_s, PROBE_WAIT_MAX_S)
            self._waited_una = acked_through
            self.timer = now + self._wait_s
            return
        self.timer = None
        self.probes_lost += 1
        if self._tries < MAX_PROBES:
            self.probe_due = True
        else:
            self._failed(self._candidate, now)

    def wake(self, *, now: float) -> None:
        """The connection sends data at or after ``wake_at``: in SEARCH_COMPLETE the raise
        timer has run out (search again for a larger size), in ERROR try the base size again."""
        if now < self.wake_at:
            return
        self.wake_at = _NEVER
        if self.state is P.SEARCH_COMPLETE:
            self._hi = self.ceiling
            self._phase = _WALK
            self._step = GALLOP_START_BYTES
            self._set_state(P.SEARCHING)
            self._advance(now)
        elif self.state is P.ERROR:
            self._probe(self.base)

    def stop(self) -> None:
        """The connection sends no more: no probe, no timer (RFC 8899 DISABLED)."""
        self.probe_due = False
        self.timer = None
        self.wake_at = _NEVER
        self._candidate = 0
        self._set_state(P.DISABLED)

    def on_black_hole(self, failed_bytes: int, *, now: float) -> bool:
        """Datagrams of ``failed_bytes`` stopped getting through: fall back to the base size at
        once (RFC 8899 section 5.2, black hole detected), confirm it, then search below them.

        Returns False (and does nothing) when there is nothing to fall back from.
        """
        if self.state not in (P.SEARCHING, P.SEARCH_COMPLETE) or failed_bytes <= self.base:
            return False
        self.black_holes += 1
        self._log.info("pmtud_black_hole", size=self.size, failed=failed_bytes)
        self._recent.clear()  # answers to earlier probes say nothing about the path now
        self.wake_at = _NEVER
        self.size = self.base
        self._hi = min(self._hi, failed_bytes - 1)
        self._set_state(P.BASE)
        self._probe(self.base)
        return True

    # ------------------------------------------------------------------ the search

    def _probe(self, size: int) -> None:
        """Make ``size`` the candidate: its first probe is due now."""
        self._candidate = size
        self._tries = 0
        self.probe_due = True
        self.timer = None

    def _failed(self, size: int, now: float) -> None:
        """MAX_PROBES probes of ``size`` went unanswered."""
        self._candidate = 0
        if self.state in (P.BASE, P.ERROR):
            # Not even the base size: try it again now and then, less and less often.
            self.base_failures += 1
            self.control_due = self.probe_due = True
            if self.state is P.BASE:
                self._error_wait = ERROR_RETRY_MIN_S
                self.error_since = now
                self._set_state(P.ERROR)
            else:
                self._error_wait = min(self._error_wait * 2, ERROR_RETRY_MAX_S)
            self.wake_at = now + self._error_wait
            return
        self._hi = min(self._hi, size - 1)
        self._phase = _GALLOP if self._phase == _WALK else _BISECT
        self._advance(now)

    def _advance(self, now: float) -> None:
        """Probe the next candidate size, or finish the search.

        Candidates: the plateau table (then the ceiling) in ascending order while they get
        through, as most paths have one of those sizes; after the first failure, steps doubling
        from GALLOP_START_BYTES above the confirmed size; after the next, bisection to the byte.
        """
        lo, hi = self.size, self._hi
        if hi <= lo:
            self._candidate = 0
            self.probe_due = False
            self.timer = None
            self.wake_at = now + PMTU_RAISE_TIMER_S
            self._set_state(P.SEARCH_COMPLETE)
            return
        if self._phase == _WALK:
            nxt = next((p for p in PLATEAUS_BYTES if lo < p < hi), hi)
        elif self._phase == _GALLOP and lo + self._step < hi:
            nxt = lo + self._step
        else:
            self._phase = _BISECT
            nxt = (lo + hi + 1) // 2
        self._probe(nxt)

    def _set_state(self, new: PmtudState) -> None:
        old = self.state
        if old is new:
            return
        if new not in TRANSITIONS[old]:
            raise AssertionError(f"illegal PMTUD transition {old.value} -> {new.value}")
        self.state = new
        self._log.debug("pmtud_state", old=old.value, new=new.value, size=self.size)
        if self._on_state is not None:
            self._on_state(old, new, self.size)
