"""Whether the peer is still there: when it was last heard, keepalive probes (and the early
stall probe of a peer that fell silent mid-transfer), the idle timeout, the re-sent handshake
ACK, ICMP errors awaiting confirmation and the challenge-ACK rate limit (RFC 5961).

Its handlers run from ``Connection.handle_timer`` and answer with the reason to end the
connection, or None; they only ask for probes (``Control.send_probe``), never send.
"""

from __future__ import annotations

from typing import Any, Final, final

from ..config import Config
from ..events import CloseReason
from .control import Control
from .counters import Counters
from .deadlines import Deadlines
from .loss import LossRecovery
from .receive_side import ReceiveSide
from .send_side import SendSide

__all__ = [
    "HANDSHAKE_ACK_TRIES",
    "UNREACHABLE_CONFIRMED",
    "UNREACHABLE_NOTED",
    "UNREACHABLE_NOT_OURS",
    "Liveness",
]

HANDSHAKE_ACK_TRIES: Final = 6  # a lost handshake ACK is re-sent at most this often
# What ``Liveness.on_unreachable`` makes of an ICMP error quoting one of our datagrams.
UNREACHABLE_NOT_OURS: Final = 0  # its sequence number is not one we could have sent
UNREACHABLE_NOTED: Final = 1  # taken as ours; waiting for it to repeat
UNREACHABLE_CONFIRMED: Final = 2  # it repeated with nothing heard between: the peer is gone


@final
class Liveness:
    """Keepalive, idle timeout and the handshake-ACK re-send of one connection."""

    def __init__(
        self,
        config: Config,
        *,
        snd: SendSide,
        rcv: ReceiveSide,
        loss: LossRecovery,
        control: Control,
        deadlines: Deadlines,
        counters: Counters,
        log: Any,
    ) -> None:
        self.keepalive_probes = 0  # unanswered in a row
        self.stall_probed_at = -1.0  # last_activity when the stall probe went out
        # ICMP port unreachable for this connection (RFC 5927 checks passed): when the first
        # arrived since the peer was last heard, and whether a confirming probe is due.
        self.unreachable_at: float | None = None
        self.confirm_unreachable = False
        # An active opener re-sends its handshake ACK until the peer shows it arrived: the
        # peer never re-sends a SYN-ACK on its own (anti-amplification), and a lost final
        # ACK would otherwise leave a silent client and a half-open server waiting forever.
        self.confirm_tries = 0
        self.last_challenge_at: float | None = None
        # The peer challenged our address (a NAT rebound it) and nothing else has come from
        # it since: our echo may have been lost, and the peer answers to the old address
        # until one arrives, so a silence then draws the early probe too.
        self.validating = False
        self._cfg = config
        self._snd = snd
        self._count = counters
        self._rcv = rcv
        self._loss = loss
        self._control = control
        self._dl = deadlines
        self._log = log

    @property
    def last_activity(self) -> float:
        """When the peer was last heard from (or ``connect()`` called).  Kept by the loss
        recovery, whose retransmission timer is fitted before the idle timeout."""
        return self._loss.heard_at

    @last_activity.setter
    def last_activity(self, at: float) -> None:
        self._loss.heard_at = at

    def heard(self, now: float) -> None:
        """An acceptable segment arrived: the peer is alive and synchronized.  (Every
        acceptable segment comes here: the loss recovery's field is used directly, not
        through the ``last_activity`` property.)"""
        loss = self._loss
        if self.stall_probed_at == loss.heard_at:
            # The silence this ends drew its stall probe, which set the keepalive deadline
            # past the next one: re-arm it (the next datagrams_to_send does), so that a new
            # silence mid-transfer is probed early too.  The peer is there, and until it
            # sends full-sized data again (taken after this, which says so) it is not in the
            # middle of a transfer: a mere answer used to arm the next early probe, so an
            # idle connection probed and answered every second, both ways, for ever.  A
            # server validating our address after a NAT rebinding, whose echo was lost,
            # challenges us in its answer, and ``validating`` keeps the early probe then.
            self._dl.keepalive = None
            self._rcv.peer_quiet()
        loss.heard_at = now
        self.keepalive_probes = 0
        self._dl.confirm = None

    def challenged(self, challenge: bool) -> None:
        """An acceptable segment arrived carrying a path challenge (``challenge``) or not.
        A challenge starts a silence the early probe watches over, whatever the peer was
        sending: should our echo be lost, the peer learns our new address only from our next
        datagram, and the regular keepalive comes ``keepalive_idle_s`` later.  (A client
        that had sent its FIN waited that long for the peer's, which had timed out at the
        old address meanwhile.)  Anything else from the peer shows the path is followed."""
        if challenge and not self.validating:
            self._dl.keepalive = None  # re-armed with the probe's deadline by the next send
        self.validating = challenge

    def stall_probe_due(self, can_receive: bool) -> float | None:
        """When the one early probe of a peer that fell silent mid-transfer, or after it
        challenged our address, is due (``Config.keepalive_stall_s``), or None when none
        is."""
        stall = self._cfg.keepalive_stall_s
        if (
            stall is None
            or not (self._rcv.peer_mid_stream or self.validating)
            or self.stall_probed_at == self.last_activity
            or not can_receive
        ):
            return None
        return self.last_activity + max(stall, 3 * self._loss.rtt.rto)

    def keepalive_due(self, can_receive: bool) -> float | None:
        """The next keepalive deadline counted from when the peer was last heard, or None.

        The passive opener waits one ``keepalive_interval_s`` longer than the active one:
        between two peers configured alike, the client's probe then reaches the server (and
        counts as hearing from it) before the server's own would leave, so a quiet connection
        costs one probe and its answer per idle period rather than two of each.  A dead client
        is still found, one interval later."""
        idle = self._cfg.keepalive_idle_s
        if idle is not None and self._control.passive:
            idle += self._cfg.keepalive_interval_s
        due = None if idle is None else self.last_activity + idle
        stall = self.stall_probe_due(can_receive)
        if stall is not None and (due is None or stall < due):
            due = stall
        return due

    def keepalive_after_probe(self, now: float, can_receive: bool) -> float | None:
        """The keepalive deadline after a probe has just gone out: the regular one, but never
        before the probe could be answered (one RTO), so two probes never leave at once."""
        due = self.keepalive_due(can_receive)
        answer_by = now + max(self._loss.rtt.rto, self._cfg.rto_min_s)
        return None if due is None else max(due, answer_by)

    def arm(self, now: float, can_receive: bool) -> None:
        """Arm the keepalive and idle timers, if configured and not armed yet."""
        if not self.last_activity:
            self.last_activity = now
        dl = self._dl
        if dl.keepalive is None:
            dl.keepalive = self.keepalive_due(can_receive)
        timeout = self._cfg.idle_timeout_s
        if timeout is not None and dl.idle is None:
            dl.idle = self.last_activity + timeout

    def on_keepalive(self, now: float, can_receive: bool) -> CloseReason | None:
        """The keepalive timer expired (synchronized, not TIME_WAIT): confirm an ICMP error,
        probe a peer that stalled mid-transfer or has been quiet for ``keepalive_idle_s``, or
        give up after too many unanswered probes."""
        cfg = self._cfg
        dl = self._dl
        control = self._control
        if self.confirm_unreachable:
            # A port unreachable came back with nothing in flight: one more datagram tells a
            # closed port (the error repeats) from a passing fault.
            self.confirm_unreachable = False
            control.send_probe = True
            dl.keepalive = self.keepalive_after_probe(now, can_receive)
            self._log.debug("unreachable_probe")
            return None
        if len(self._loss.scoreboard):
            # Data or a FIN in flight: its retransmissions probe the peer already (as Linux's
            # keepalive timer stands aside while packets are out).
            dl.keepalive = self.keepalive_due(can_receive)
            if dl.keepalive is not None and dl.keepalive <= now:
                dl.keepalive = now + cfg.keepalive_interval_s
            return None
        if self.keepalive_probes == 0:
            stall = self.stall_probe_due(can_receive)
            if stall is not None and now >= stall:
                self.stall_probed_at = self.last_activity
                control.send_probe = True
                dl.keepalive = self.keepalive_after_probe(now, can_receive)
                self._log.debug("stall_probe", silent_s=now - self.last_activity)
                return None
            due = self.keepalive_due(can_receive)
            if due is None or now < due:
                dl.keepalive = due
                return None
        if cfg.keepalive_idle_s is None:
            return None
        ut = cfg.user_timeout_s
        if self.keepalive_probes and ut is not None and now >= self.last_activity + ut:
            # As Linux's TCP_USER_TIMEOUT: with probes unanswered, the user timeout also bounds
            # how long an idle peer may stay silent.
            self._log.info("user_timeout", probes=self.keepalive_probes)
            control.need_rst = True
            return CloseReason.TIMEOUT
        if self.keepalive_probes >= cfg.keepalive_probes:
            self._log.info("keepalive_timeout", probes=self.keepalive_probes)
            control.need_rst = True
            return CloseReason.IDLE
        self.keepalive_probes += 1
        control.send_probe = True
        dl.keepalive = now + cfg.keepalive_interval_s
        if ut is not None:
            # The user timeout may end it sooner, but never before this probe could be
            # answered (a user timeout shorter than keepalive_idle_s would otherwise reset a
            # quiet connection to a live peer at the very instant of its first probe).
            answer_by = now + max(self._loss.rtt.rto, cfg.rto_min_s)
            dl.keepalive = min(dl.keepalive, max(self.last_activity + ut, answer_by))
        return None

    def on_idle(self, now: float, *, only_fin_unacked: bool = False) -> CloseReason | None:
        """The idle timer expired (synchronized): end the connection if it has really been
        idle that long.  ``only_fin_unacked``: the application has closed and every byte
        both ways is delivered and acknowledged, only our FIN's ACK is missing (LAST_ACK,
        CLOSING): the close counts as done, as after ``fin_retries`` (the peer most likely
        left TIME_WAIT, or moved on after its last ACK was lost)."""
        timeout = self._cfg.idle_timeout_s
        if timeout is None:
            return None
        due = self.last_activity + timeout
        if now < due:
            self._dl.idle = due
            return None
        self._log.info("idle_timeout", idle_s=now - self.last_activity)
        if only_fin_unacked:
            return CloseReason.CLOSED
        self._control.need_rst = True
        return CloseReason.IDLE

    def on_confirm(self, now: float) -> None:
        """Re-send the handshake ACK (synchronized, nothing in flight, no FIN) while nothing
        else shows the peer that it arrived."""
        self.confirm_tries += 1
        self._rcv.ack_now = True
        self._log.debug("handshake_ack_resent", attempt=self.confirm_tries)
        if self.confirm_tries < min(self._cfg.syn_retries, HANDSHAKE_ACK_TRIES):
            self._dl.confirm = now + self._loss.rtt.rto * (1 << self.confirm_tries)

    def challenge_allowed(self, now: float) -> bool:
        """Whether a challenge ACK may go now: at most one per ``challenge_ack_interval_s``,
        so a flood of forgeries draws no flood of ACKs."""
        last = self.last_challenge_at
        if last is not None and now - last < self._cfg.challenge_ack_interval_s:
            return False
        self.last_challenge_at = now
        return True

    def on_unreachable(self, quoted_seq: int, now: float) -> int:
        """An ICMP port unreachable quoting a synchronized connection's datagram of sequence
        number ``quoted_seq``: the checks of RFC 5927 section 4.1 (between SND.UNA - 1, a
        keepalive or window probe, and SND.MAX, which an off-path attacker cannot guess),
        then confirmation: the error must repeat at least ``rto_min_s`` after the first with
        nothing heard in between.  Returns an ``UNREACHABLE_*`` verdict."""
        snd = self._snd
        pos = snd.position(quoted_seq)
        if not snd.una - 1 <= pos <= snd.max:
            return UNREACHABLE_NOT_OURS
        self._count.icmp_errors += 1
        first = self.unreachable_at
        if first is None or first < self.last_activity:
            # The first since the peer was last heard: confirm it with one more datagram an
            # RTO from now (a retransmission does that when data is in flight).
            self.unreachable_at = now
            if not len(self._loss.scoreboard):
                self.confirm_unreachable = True
                at = now + max(self._loss.rtt.rto, self._cfg.rto_min_s)
                dl = self._dl
                if dl.keepalive is None or at < dl.keepalive:
                    dl.keepalive = at
            return UNREACHABLE_NOTED
        if now < first + self._cfg.rto_min_s:
            # The same round of datagrams: wait for a repeat.  (Compared as a sum, the way
            # the confirming probe's deadline was set, so float rounding cannot miss it.)
            return UNREACHABLE_NOTED
        return UNREACHABLE_CONFIRMED
