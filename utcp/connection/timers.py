"""The retransmission timer (and the PMTU black hole it may reveal) and the window probe
timer.

Each handler runs from ``Connection.handle_timer`` once its deadline has passed (and was
cleared), never sends (it sets what ``datagrams_to_send`` will emit) and answers with the
reason to end the connection, or None.  ``CloseReason.CLOSED`` asks for the orderly close:
every byte both ways arrived and only our FIN's acknowledgement is missing.
"""

from __future__ import annotations

from typing import Any, Final, final

from ..config import Config
from ..events import CloseReason
from ..packet import HEADER_SIZE
from ..pmtud import Pmtud, PmtudState
from ..state import CLOSING, FIN_WAIT_1, LAST_ACK, SYN_RECEIVED, SYN_SENT, ConnectionState
from .control import Control
from .counters import Counters
from .deadlines import Deadlines
from .loss import LossRecovery
from .options import Negotiated
from .send_side import SendSide
from .sender import Sender
from .tracepoints import TracePoints

__all__ = ["BLACK_HOLE_RTOS", "TimerHandlers"]

# Consecutive retransmission timeouts of a segment larger than the base size that declare a
# PMTU black hole (docs/PROTOCOL.md, path MTU discovery): three, as Linux's black hole
# detection after tcp_retries1 (3) timeouts.  Two in a row are common under heavy random loss
# (a quarter of the time at 30% each way); a false alarm costs a search from the base size.
BLACK_HOLE_RTOS: Final = 3
# Path MTU discovery's base size failed this many times in a row (its first try, then
# ERROR's retries, 1 and 2 s apart) while the peer answered a small control probe sent with
# them: the path carries no datagram of that size, and data, which needs it, never gets
# through.  (A peer that moved, or went silent, answers no control probe.)
PATH_TOO_SMALL_FAILURES: Final = 3


@final
class TimerHandlers:
    """What the RTO and persist timers do when they expire."""

    def __init__(
        self,
        config: Config,
        *,
        snd: SendSide,
        opts: Negotiated,
        loss: LossRecovery,
        sender: Sender,
        control: Control,
        deadlines: Deadlines,
        counters: Counters,
        trace: TracePoints,
        pmtud: Pmtud | None,
        log: Any,
    ) -> None:
        self._cfg = config
        self._snd = snd
        self._opts = opts
        self._loss = loss
        self._sender = sender
        self._control = control
        self._dl = deadlines
        self._count = counters
        self._trace = trace
        self._pmtud = pmtud
        self._log = log

    def on_rto(self, now: float, state: ConnectionState, orphaned: bool) -> CloseReason | None:
        """The retransmission timer expired: resend the SYN or mark the flight lost and back
        off; past the retry limits (or the user timeout) the connection ends."""
        cfg = self._cfg
        snd = self._snd
        loss = self._loss
        control = self._control
        rtt = loss.rtt
        if (state is SYN_SENT or state is SYN_RECEIVED) and snd.una == 0:
            control.syn_retries += 1
            if control.syn_retries > cfg.syn_retries:
                self._log.info("handshake_timeout", state=state.value)
                control.need_rst = state is SYN_RECEIVED
                return CloseReason.TIMEOUT
            if 2 * rtt.rto <= cfg.syn_rto_max_s:
                rtt.back_off()  # doubles, never past the SYN timer's ceiling
            if control.passive:
                # At most one SYN-ACK per SYN (RFC 9000 section 8.1's concern: no
                # amplification towards an unvalidated address). The client re-sends its
                # SYN, or its handshake ACK; we only wait for them.
                self._dl.rto = now + rtt.rto
                return None
            self._count.timeouts += 1
            self._count.retx += 1
            control.need_syn = True
            trace = self._trace
            if trace.tracer is not None:
                trace.lost_by[0] = "rto"
                trace.event("loss_detected", {"seq": snd.iss, "len": 0, "by": "rto"})
            self._log.debug("syn_retransmit", attempt=control.syn_retries, rto=rtt.rto)
            return None
        if not len(loss.scoreboard):
            return None
        self._count.timeouts += 1
        loss.timeouts_in_a_row += 1
        fin_pos = snd.fin_pos
        if (
            fin_pos is not None
            and loss.timeouts_in_a_row > cfg.fin_retries
            and (state is LAST_ACK or state is CLOSING or (state is FIN_WAIT_1 and orphaned))
            and now - loss.heard_at >= loss.rtt.rto
        ):
            # The application has closed and the peer answers nothing (it was not heard
            # during the interval that just ran out): give up, as an orphaned TCP socket
            # does after tcp_orphan_retries, whether or not data is outstanding.  A peer
            # still heard (its probes, its ACKs) is there, and the path only loses what we
            # resend: that goes on to max_retransmits, as before the close.
            self._log.info(
                "fin_unacknowledged", retries=loss.timeouts_in_a_row, unacked=fin_pos - snd.una
            )
            if snd.data_acknowledged and state is not FIN_WAIT_1:
                # Every byte both ways is delivered and acknowledged; only our FIN's ACK is
                # missing, most likely because the peer already left TIME_WAIT.
                return CloseReason.CLOSED
            control.need_rst = True
            return CloseReason.TIMEOUT
        if loss.timeouts_in_a_row > cfg.max_retransmits or loss.user_timeout_expired(now):
            self._log.info(
                "retransmission_timeout",
                retries=loss.timeouts_in_a_row,
                snd_una=snd.wire_seq(snd.una),
            )
            control.need_rst = True
            return CloseReason.TIMEOUT
        pm = self._pmtud
        if (
            pm is not None
            and pm.state is PmtudState.ERROR
            and pm.base_failures >= PATH_TOO_SMALL_FAILURES
            and pm.control_answered_at >= pm.error_since
        ):
            # Retransmitting on would take minutes (max_retransmits) and end as if the peer
            # had gone silent, while it answered all along.
            self._log.info("path_too_small", base=pm.base, failures=pm.base_failures)
            snd.path_too_small = True
            control.need_rst = True
            return CloseReason.TIMEOUT
        loss.on_timeout(now)
        if self._opts.pmtud_ok and loss.timeouts_in_a_row >= BLACK_HOLE_RTOS:
            self._check_black_hole(now)
        self._log.debug(
            "rto_expired",
            snd_una=snd.wire_seq(snd.una),
            rto=rtt.rto,
            cwnd=loss.cc.cwnd,
            backoff=rtt.backoff,
        )
        self._dl.rto = loss.rto_deadline(now)
        return None

    def _check_black_hole(self, now: float) -> None:
        """The oldest segment timed out again: if it is larger than the base size, the path
        has stopped carrying datagrams of its size (RFC 8899 section 4.3).  Fall back to the
        base size at once; its retransmission is then cut to fit (``Sender.send_data``)."""
        pm = self._pmtud
        first = self._loss.scoreboard.first()
        if pm is None or first is None:
            return
        snd = self._snd
        start = max(first.start, snd.una)
        size = HEADER_SIZE + self._opts.ts_cost + snd.data_len(start, first.end)
        if pm.on_black_hole(size, now=now):
            self._sender.apply_pmtu("black_hole")

    def on_persist(self, now: float, orphaned: bool) -> CloseReason | None:
        """The persist timer expired (window still closed, nothing in flight): probe the
        zero window, or give up after too many unanswered probes.  An orphan (the
        application has closed) whose peer answers but never opens its window gives up once
        its probes have backed off to ``rto_max_s``, about two minutes with the defaults, as
        Linux bounds an orphaned socket's window probes (tcp_orphan_retries): otherwise a
        client that asked for a large response and never read it held the rest of the
        response on the server for ever."""
        snd = self._snd
        cfg = self._cfg
        snd.persist_probes += 1
        if snd.persist_probes > cfg.max_retransmits:
            self._log.info("window_probe_timeout", probes=snd.persist_probes)
            self._control.need_rst = True
            return CloseReason.TIMEOUT
        backoff = snd.persist_backoff
        if (
            orphaned
            and backoff >= cfg.fin_retries
            and self._loss.rtt.rto * (1 << backoff) >= cfg.rto_max_s
        ):
            self._log.info("orphan_window_timeout", backoff=backoff)
            snd.window_never_opened = True
            self._control.need_rst = True
            return CloseReason.TIMEOUT
        self._control.send_probe = True
        snd.persist_backoff = min(snd.persist_backoff + 1, 16)
        self._log.debug("window_probe", probes=snd.persist_probes)
        return None
