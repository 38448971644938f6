"""The connection's timer handlers: retransmission timeout (and the PMTU black hole it may
reveal), tail loss probe, window probes, keepalive, idle timeout, the handshake-ACK re-send and
path MTU discovery's timer, and the deadlines they arm.

Each handler runs only from ``Connection.handle_timer`` once its deadline has passed (the
deadline is cleared first), and never sends: it sets what ``datagrams_to_send`` will emit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .events import CloseReason
from .packet import HEADER_SIZE
from .state import (
    CAN_RECEIVE,
    CLOSED,
    CLOSING,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    SYN_RECEIVED,
    SYN_SENT,
    SYNCHRONIZED,
    TIME_WAIT,
)

if TYPE_CHECKING:
    from .connection import Connection
    from .pmtud import Pmtud

HANDSHAKE_ACK_TRIES: Final = 6  # a lost handshake ACK is re-sent at most this often
_TLP_MIN_S: Final = 0.010  # floor of the probe timeout (RFC 8985 section 7.2 suggests 10 ms)
# Consecutive retransmission timeouts of a segment larger than the base size that declare a
# PMTU black hole (docs/PROTOCOL.md, path MTU discovery): three, as Linux's black hole
# detection after tcp_retries1 (3) timeouts.  Two in a row are common under heavy random loss
# (a quarter of the time at 30% each way); a false alarm costs a search from the base size.
BLACK_HOLE_RTOS: Final = 3


def on_rto(conn: Connection, now: float) -> None:
    """The retransmission timer expired: resend the SYN or mark the flight lost and back off;
    past the retry limits (or the user timeout) the connection ends."""
    cfg = conn.config
    if conn._state in (SYN_SENT, SYN_RECEIVED) and conn._snd_una == 0:
        conn._syn_retries += 1
        if conn._syn_retries > cfg.syn_retries:
            conn._log.info("handshake_timeout", state=conn._state.value)
            conn._need_rst = conn._state is SYN_RECEIVED
            conn._finish(CloseReason.TIMEOUT)
            return
        if conn._rtt.rto < cfg.syn_rto_max_s:
            conn._rtt.back_off()
        if conn._passive:
            # At most one SYN-ACK per SYN (RFC 9000 section 8.1's concern: no
            # amplification towards an unvalidated address). The client re-sends its
            # SYN, or its handshake ACK; we only wait for them.
            conn._dl.rto = now + conn._rtt.rto
            return
        conn._count.timeouts += 1
        conn._count.retx += 1
        conn._need_syn = True
        if conn._tracer is not None:
            conn._lost_by[0] = "rto"
            conn._tracer.event(now, "loss_detected", {"seq": conn._iss, "len": 0, "by": "rto"})
        conn._log.debug("syn_retransmit", attempt=conn._syn_retries, rto=conn._rtt.rto)
        return
    if not len(conn._scoreboard):
        return
    conn._count.timeouts += 1
    conn._timeouts_in_a_row += 1
    st = conn._state
    if (
        conn._fin_pos is not None
        and conn._timeouts_in_a_row > cfg.fin_retries
        and (st is LAST_ACK or st is CLOSING or (st is FIN_WAIT_1 and conn._orphaned))
    ):
        # The application has closed and the peer answers nothing: give up, as an orphaned
        # TCP socket does after tcp_orphan_retries, whether or not data is outstanding.
        conn._log.info(
            "fin_unacknowledged",
            retries=conn._timeouts_in_a_row,
            unacked=conn._fin_pos - conn._snd_una,
        )
        if conn._snd_una >= conn._fin_pos and st is not FIN_WAIT_1:
            # Every byte both ways is delivered and acknowledged; only our FIN's ACK is
            # missing, most likely because the peer already left TIME_WAIT.
            conn._set_state(CLOSED)
            conn._scoreboard.clear()
            conn._clear_timers()
            conn._orderly_close()
        else:
            conn._need_rst = True
            conn._finish(CloseReason.TIMEOUT)
        return
    if conn._timeouts_in_a_row > cfg.max_retransmits or user_timeout_expired(conn, now):
        conn._log.info(
            "retransmission_timeout",
            retries=conn._timeouts_in_a_row,
            snd_una=conn._wire_seq(conn._snd_una),
        )
        conn._need_rst = True
        conn._finish(CloseReason.TIMEOUT)
        return
    flight = conn._snd_max - conn._snd_una
    conn._cc.on_timeout(flight, now=now)
    conn._recover = conn._snd_max
    conn._in_recovery = False
    conn._dupacks = 0
    conn._dupack_credit = 0
    conn._scoreboard.mark_all_lost()
    if conn._tracer is not None:
        conn._trace_losses("rto")
    conn._rtt.back_off()
    if conn._pmtud_ok and conn._timeouts_in_a_row >= BLACK_HOLE_RTOS:
        check_black_hole(conn, now)
    conn._log.debug(
        "rto_expired",
        snd_una=conn._wire_seq(conn._snd_una),
        rto=conn._rtt.rto,
        cwnd=conn._cc.cwnd,
        backoff=conn._rtt.backoff,
    )
    conn._dl.rto = cap_to_user_timeout(conn, now + conn._rtt.rto)


def check_black_hole(conn: Connection, now: float) -> None:
    """The oldest segment timed out again: if it is larger than the base size, the path has
    stopped carrying datagrams of its size (RFC 8899 section 4.3).  Fall back to the base size
    at once; its retransmission is then cut to fit (``sending.send_data``)."""
    pm = conn._pmtud
    first = conn._scoreboard.first()
    if pm is None or first is None:
        return
    start = max(first.start, conn._snd_una)
    size = HEADER_SIZE + conn._ts_cost() + conn._data_len(start, first.end)
    if pm.on_black_hole(size, now=now):
        conn._apply_pmtu("black_hole")


def on_pmtud_timer(conn: Connection, pm: Pmtud, now: float) -> None:
    """A PMTU probe went unanswered.  Never a congestion signal: no cwnd, RTO, backoff or
    retransmission is touched; only the search learns from it."""
    pm.on_timer(now=now)


def arm_tlp(conn: Connection, now: float) -> None:
    """Schedule a tail loss probe two smoothed RTTs out, when that comes before the RTO."""
    srtt = conn._rtt.srtt
    if (
        srtt is None
        or not conn.config.tail_loss_probe
        or conn._tlp_sent
        or conn._in_recovery
        or not len(conn._scoreboard)
    ):
        conn._dl.tlp = None
        return
    pto = 2 * srtt
    if conn._scoreboard.pipe <= conn._snd_mss:
        pto += conn.config.delayed_ack_s  # a lone segment's ACK may be delayed
    at = now + max(pto, _TLP_MIN_S)
    conn._dl.tlp = at if conn._dl.rto is None or at < conn._dl.rto else None


def on_tlp(conn: Connection, now: float) -> None:
    """No ACK for two RTTs: resend the last segment so its SACK (or ACK) reveals any
    loss at the tail of the flight, instead of waiting for the retransmission timer."""
    sb = conn._scoreboard
    last = sb.last()
    if last is None or conn._in_recovery or last.sacked or last.lost:
        return
    conn._tlp_sent = True
    conn._count.tlp_probes += 1
    sb.mark_lost(last)
    if conn._tracer is not None:
        conn._trace_losses("tlp")
    conn._rexmit_now = True
    conn._dl.rto = cap_to_user_timeout(conn, now + conn._rtt.rto)
    conn._log.debug("tail_loss_probe", seq=conn._wire_seq(last.start))


def cap_to_user_timeout(conn: Connection, deadline: float) -> float:
    """Fire no later than the user timeout, so the abort is not late by a backed-off RTO."""
    ut = conn.config.user_timeout_s
    since = conn._oldest_unacked_since
    if ut is not None and since is not None:
        return min(deadline, since + ut)
    return deadline


def user_timeout_expired(conn: Connection, now: float) -> bool:
    ut = conn.config.user_timeout_s
    since = conn._oldest_unacked_since
    # The same sum cap_to_user_timeout arms the timer at: ``now - since >= ut`` can round
    # below ``ut`` at exactly that deadline and let the timer fire again and again.
    return ut is not None and since is not None and now >= since + ut


def on_persist(conn: Connection, now: float) -> None:
    """The persist timer expired: probe a zero window, or give up after too many probes."""
    if not window_blocked(conn):
        return
    conn._persist_probes += 1
    if conn._persist_probes > conn.config.max_retransmits:
        conn._log.info("window_probe_timeout", probes=conn._persist_probes)
        conn._need_rst = True
        conn._finish(CloseReason.TIMEOUT)
        return
    conn._send_probe = True
    conn._persist_backoff = min(conn._persist_backoff + 1, 16)
    conn._log.debug("window_probe", probes=conn._persist_probes)


def stall_probe_due(conn: Connection) -> float | None:
    """When the one early probe of a peer that fell silent mid-transfer is due
    (``Config.keepalive_stall_s``), or None when none is."""
    stall = conn.config.keepalive_stall_s
    if (
        stall is None
        or not conn._peer_mid_stream
        or conn._stall_probed_at == conn._last_activity
        or conn._state not in CAN_RECEIVE
    ):
        return None
    return conn._last_activity + max(stall, 3 * conn._rtt.rto)


def keepalive_due(conn: Connection) -> float | None:
    """The next keepalive deadline counted from when the peer was last heard, or None."""
    idle = conn.config.keepalive_idle_s
    due = None if idle is None else conn._last_activity + idle
    stall = stall_probe_due(conn)
    if stall is not None and (due is None or stall < due):
        due = stall
    return due


def keepalive_after_probe(conn: Connection, now: float) -> float | None:
    """The keepalive deadline after a probe has just gone out: the regular one, but never
    before the probe could be answered (one RTO), so two probes never leave at one instant."""
    due = keepalive_due(conn)
    answer_by = now + max(conn._rtt.rto, conn.config.rto_min_s)
    return None if due is None else max(due, answer_by)


def on_keepalive(conn: Connection, now: float) -> None:
    """The keepalive timer expired: confirm an ICMP error, probe a peer that stalled
    mid-transfer or has been quiet for ``keepalive_idle_s``, or give up after too many
    unanswered probes."""
    cfg = conn.config
    if conn._state not in SYNCHRONIZED or conn._state is TIME_WAIT:
        return
    if conn._confirm_unreachable:
        # A port unreachable came back with nothing in flight: one more datagram tells a
        # closed port (the error repeats) from a passing fault.
        conn._confirm_unreachable = False
        conn._send_probe = True
        conn._dl.keepalive = keepalive_after_probe(conn, now)
        conn._log.debug("unreachable_probe")
        return
    if len(conn._scoreboard):
        # Data or a FIN in flight: its retransmissions probe the peer already (as Linux's
        # keepalive timer stands aside while packets are out).
        conn._dl.keepalive = keepalive_due(conn)
        if conn._dl.keepalive is not None and conn._dl.keepalive <= now:
            conn._dl.keepalive = now + cfg.keepalive_interval_s
        return
    if conn._keepalive_probes == 0:
        stall = stall_probe_due(conn)
        if stall is not None and now >= stall:
            conn._stall_probed_at = conn._last_activity
            conn._send_probe = True
            conn._dl.keepalive = keepalive_after_probe(conn, now)
            conn._log.debug("stall_probe", silent_s=now - conn._last_activity)
            return
        due = keepalive_due(conn)
        if due is None or now < due:
            conn._dl.keepalive = due
            return
    if cfg.keepalive_idle_s is None:
        return
    ut = cfg.user_timeout_s
    if conn._keepalive_probes and ut is not None and now >= conn._last_activity + ut:
        # As Linux's TCP_USER_TIMEOUT: with probes unanswered, the user timeout also bounds
        # how long an idle peer may stay silent.
        conn._log.info("user_timeout", probes=conn._keepalive_probes)
        conn._need_rst = True
        conn._finish(CloseReason.TIMEOUT)
        return
    if conn._keepalive_probes >= cfg.keepalive_probes:
        conn._log.info("keepalive_timeout", probes=conn._keepalive_probes)
        conn._need_rst = True
        conn._finish(CloseReason.IDLE)
        return
    conn._keepalive_probes += 1
    conn._send_probe = True
    conn._dl.keepalive = now + cfg.keepalive_interval_s
    if ut is not None:
        # The user timeout may end it sooner, but never before this probe could be answered
        # (a user timeout shorter than keepalive_idle_s would otherwise reset a quiet
        # connection to a live peer at the very instant of its first probe).
        answer_by = now + max(conn._rtt.rto, cfg.rto_min_s)
        conn._dl.keepalive = min(conn._dl.keepalive, max(conn._last_activity + ut, answer_by))


def on_fin_wait_2(conn: Connection, now: float) -> None:
    """An orphan's FIN_WAIT_2 lasted ``fin_wait_2_timeout_s``: the peer never closed its side.
    Reset, as Linux does after tcp_fin_timeout, so the connection cannot linger forever."""
    if conn._state is not FIN_WAIT_2:
        return
    conn._log.info("fin_wait_2_timeout")
    conn._need_rst = True
    conn._finish(CloseReason.TIMEOUT)


def on_confirm(conn: Connection, now: float) -> None:
    """Re-send the handshake ACK while nothing else shows the peer that it arrived."""
    if conn._state not in SYNCHRONIZED or len(conn._scoreboard) or conn._fin_pos is not None:
        return  # data or a FIN in flight: their retransmissions carry the ACK
    conn._confirm_tries += 1
    conn._ack_now = True
    conn._log.debug("handshake_ack_resent", attempt=conn._confirm_tries)
    if conn._confirm_tries < min(conn.config.syn_retries, HANDSHAKE_ACK_TRIES):
        conn._dl.confirm = now + conn._rtt.rto * (1 << conn._confirm_tries)


def on_idle(conn: Connection, now: float) -> None:
    """The idle timer expired: reset the connection if it has really been idle that long."""
    timeout = conn.config.idle_timeout_s
    if timeout is None or conn._state not in SYNCHRONIZED:
        return
    due = conn._last_activity + timeout
    if now < due:
        conn._dl.idle = due
        return
    conn._log.info("idle_timeout", idle_s=now - conn._last_activity)
    conn._need_rst = True
    conn._finish(CloseReason.IDLE)


def arm_idle_timers(conn: Connection, now: float) -> None:
    """Arm the keepalive and idle timers, if configured and not armed yet."""
    cfg = conn.config
    if not conn._last_activity:
        conn._last_activity = now
    since = conn._last_activity
    if conn._dl.keepalive is None:
        conn._dl.keepalive = keepalive_due(conn)
    if cfg.idle_timeout_s is not None and conn._dl.idle is None:
        conn._dl.idle = since + cfg.idle_timeout_s


def window_blocked(conn: Connection) -> bool:
    """True when data or a FIN waits, nothing is in flight and the peer's window has no room."""
    return (
        conn._snd_una + conn._snd_wnd <= conn._snd_nxt
        and not len(conn._scoreboard)
        and (
            conn._snd_nxt < conn._sndbuf.end
            or (conn._fin_pos is not None and conn._snd_nxt == conn._fin_pos)
        )
        and conn._state in SYNCHRONIZED
    )
