"""The sender's side of an incoming segment: its acknowledgement, SACK blocks and window.

Owns RTT sampling (Karn's rule), duplicate-ACK counting, entering and leaving fast recovery
(RFC 6582, RFC 6675) and the send window update; ``snd_una`` only ever moves forward here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .events import ConnectionEstablished, DropReason, FinAcknowledged
from .packet import HEADER_SIZE, Flag, Packet
from .seqnum import seq_diff
from .state import (
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    SYN_RECEIVED,
)
from .timers import arm_tlp, cap_to_user_timeout, window_blocked

if TYPE_CHECKING:
    from .connection import Connection

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)


def on_syn_acked(conn: Connection, p: Packet, now: float) -> None:
    """Our SYN is acknowledged: take its RTT sample, stop its timer, learn the peer's window."""
    if conn._snd_una == 0:
        if conn._syn_retries == 0:
            conn._rtt.on_sample(now - conn._syn_sent_at)
            if conn._tracer is not None:
                conn._trace_rtt()
        conn._snd_una = 1
        conn._rtt.reset_backoff()
        conn._dl.rto = None
        conn._need_syn = False
        if conn._tracer is not None:
            conn._lost_by.pop(0, None)  # the SYN arrived: no retransmission is due
        if conn._pmtud_ok:
            assert conn._pmtud is not None
            ceiling = min(conn.config.max_datagram_bytes, conn._peer_mss + HEADER_SIZE)
            conn._pmtud.start(ceiling=ceiling, now=now)  # the handshake set the base MSS
    if p.flags & _SYN:
        update_window(conn, p, 0, 1)


def rx_ack(conn: Connection, p: Packet, seg_pos: int, now: float) -> bool:
    """Process the acknowledgement field; False when the segment must be dropped."""
    st = conn._state
    ack_pos = conn._snd_una + seq_diff(p.ack, conn._wire_seq(conn._snd_una))
    if st is SYN_RECEIVED:
        if not 0 < ack_pos <= conn._snd_max:
            conn._queue_reset_for(p)
            conn._drop(DropReason.OUT_OF_WINDOW)
            return False
        on_syn_acked(conn, p, now)
        conn._set_state(FIN_WAIT_1 if conn._fin_pos is not None else ESTABLISHED)
        conn._events.append(ConnectionEstablished())
        if p.flags & _SYN:
            conn._ack_now = True
    # RFC 5961 section 5.2: ACKs of data never sent, or far too old, are dropped.
    if ack_pos > conn._snd_max or ack_pos < conn._snd_una - max(conn._max_snd_wnd, 1 << 16):
        conn._challenge(now, DropReason.OUT_OF_WINDOW)
        return False

    if conn._sack_ok and p.sack_blocks:
        rx_sack(conn, p.sack_blocks)

    if ack_pos > conn._snd_una:
        on_new_ack(conn, ack_pos, now)
    elif (
        ack_pos == conn._snd_una
        and not p.payload
        and not p.flags & (_FIN | _SYN)
        and len(conn._scoreboard)
        and (p.window << conn._snd_wscale) == conn._snd_wnd
        and p.probe is None  # a PMTU probe, or its answer, says nothing about our data
        and p.probe_ack is None
    ):
        on_dupack(conn, now, sacked=bool(p.sack_blocks and conn._sack_ok))
    elif conn._sack_ok and p.sack_blocks and len(conn._scoreboard):
        maybe_enter_recovery(conn, now)

    update_window(conn, p, seg_pos, ack_pos)
    if conn._fin_pos is not None and ack_pos > conn._fin_pos:
        on_fin_acked(conn, now)
    return True


def rx_sack(conn: Connection, blocks: tuple[tuple[int, int], ...]) -> None:
    una_wire = conn._wire_seq(conn._snd_una)
    sb = conn._scoreboard
    for left, right in blocks:
        lp = conn._snd_una + seq_diff(left, una_wire)
        rp = conn._snd_una + seq_diff(right, una_wire)
        if conn._snd_una <= lp < rp <= conn._snd_max:
            sb.on_sack(lp, rp)


def on_new_ack(conn: Connection, ack_pos: int, now: float) -> None:
    """``snd_una`` advances to ``ack_pos``: release the data, sample the RTT, grow the window or go
    on with recovery, and re-arm the timers."""
    sb = conn._scoreboard
    acked_bytes = ack_pos - conn._snd_una
    acked = sb.ack_to(ack_pos)
    # Karn's rule: no sample when any acknowledged segment was retransmitted (the ACK may
    # answer the retransmission), nor from a segment already SACKed (its ACK was held up by
    # a hole before it); otherwise the newest segment gives the RTT.
    if acked and not acked[-1].sacked:
        for seg in acked:
            if seg.retx:
                break
        else:
            conn._rtt.on_sample(now - acked[-1].sent_at)
            if conn._tracer is not None:
                conn._trace_rtt()
    conn._snd_una = ack_pos
    data_end = conn._sndbuf.end
    conn._sndbuf.release_to(min(ack_pos, data_end))
    conn._dupacks = 0
    conn._timeouts_in_a_row = 0
    conn._rtt.reset_backoff()
    if conn._in_recovery:
        if ack_pos >= conn._recover:
            conn._in_recovery = False
            conn._dupack_credit = 0
            conn._cc.on_recovery_exit(now=now)
        else:
            # Partial ACK (RFC 6582 section 3.2 step 5): the next hole is lost too.
            conn._dupack_credit = max(0, conn._dupack_credit - acked_bytes)
            first = sb.first()
            if first is not None and first.retx == 0:
                sb.mark_lost(first)
                if conn._tracer is not None:
                    conn._trace_losses("sack" if conn._sack_ok else "dupack")
            if conn._sack_ok:
                sb.detect_losses(loss_threshold(conn), conn.config.dupack_threshold)
                if conn._tracer is not None:
                    conn._trace_losses("sack")
    else:
        # Grow the window only while it limits us (RFC 7661 spirit): an application- or
        # receiver-limited sender must not build a window it never tested.
        flight_before = conn._snd_max - (ack_pos - acked_bytes)
        if 2 * flight_before >= conn._cc.cwnd:
            conn._cc.on_ack(acked_bytes, now=now, rtt_s=conn._rtt.latest_rtt)
        if conn._sack_ok and len(sb):
            maybe_enter_recovery(conn, now, flight_before)
    conn._tlp_sent = False
    if len(sb):
        conn._oldest_unacked_since = now
        conn._dl.rto = cap_to_user_timeout(conn, now + conn._rtt.rto)
        arm_tlp(conn, now)
    else:
        conn._dl.rto = conn._dl.tlp = None
        conn._oldest_unacked_since = None
        if conn._tracer is not None:
            conn._lost_by.clear()


def loss_threshold(conn: Connection) -> int:
    return (conn.config.dupack_threshold - 1) * conn._snd_mss + 1


def on_dupack(conn: Connection, now: float, *, sacked: bool) -> None:
    """A duplicate ACK: count it, and in recovery inflate the window or look for more losses."""
    conn._dupacks += 1
    conn._count.dupack_count += 1
    if conn._in_recovery:
        if not conn._sack_ok:
            conn._dupack_credit += conn._snd_mss
        else:
            conn._scoreboard.detect_losses(loss_threshold(conn), conn.config.dupack_threshold)
            if conn._tracer is not None:
                conn._trace_losses("sack")
        return
    maybe_enter_recovery(conn, now)


def maybe_enter_recovery(conn: Connection, now: float, flight_before: int = 0) -> None:
    """Start a recovery episode if the duplicate ACKs or SACK blocks show a loss.

    ``flight_before`` is what was outstanding before the ACK that shows the loss also moved
    SND.UNA: the flight size the loss happened in. A stretch ACK (one for a whole batch)
    acknowledges most of the window at once, so the flight left after it would halve far
    below the window the loss was seen in."""
    if conn._in_recovery:
        return
    sb = conn._scoreboard
    lost = (
        sb.detect_losses(loss_threshold(conn), conn.config.dupack_threshold) if conn._sack_ok else 0
    )
    if lost and conn._tracer is not None:
        conn._trace_losses("sack")
    if conn._dupacks < conn.config.dupack_threshold and not lost:
        return
    if conn._snd_una < conn._recover:
        # RFC 6582 section 3.2 step 2: still inside the window of an earlier episode.
        return
    conn._in_recovery = True
    conn._recover = conn._snd_max
    conn._count.fast_retx += 1
    conn._cc.on_congestion_event(max(conn._snd_max - conn._snd_una, flight_before), now=now)
    first = sb.first()
    if first is not None and not first.sacked and first.retx == 0:
        sb.mark_lost(first)
        if conn._tracer is not None:
            conn._trace_losses("sack" if lost else "dupack")
        # RFC 5681 section 3.2 step 4: the fast retransmit goes out at once.
        conn._rexmit_now = True
    if not conn._sack_ok:
        conn._dupack_credit = conn._dupacks * conn._snd_mss
    conn._log.debug(
        "fast_retransmit",
        snd_una=conn._wire_seq(conn._snd_una),
        cwnd=conn._cc.cwnd,
        ssthresh=conn._cc.ssthresh,
    )


def update_window(conn: Connection, p: Packet, seg_pos: int, ack_pos: int) -> None:
    # RFC 9293 section 3.10.7.4: take the window only from the newest segment.
    if conn._snd_wl1 < seg_pos or (conn._snd_wl1 == seg_pos and conn._snd_wl2 <= ack_pos):
        shift = 0 if p.flags & _SYN else conn._snd_wscale
        wnd = p.window << shift
        if wnd and conn._snd_wnd == 0:
            conn._dl.persist = None
            conn._persist_backoff = 0
        conn._snd_wnd = wnd
        conn._max_snd_wnd = max(conn._max_snd_wnd, wnd)
        conn._snd_wl1 = seg_pos
        conn._snd_wl2 = ack_pos
    if window_blocked(conn):
        conn._persist_probes = 0  # the peer answers: it is alive, only not reading


def on_fin_acked(conn: Connection, now: float) -> None:
    """Our FIN is acknowledged: tell the driver (the application's close is done), then move
    on in the close sequence."""
    st = conn._state
    if st is FIN_WAIT_1 or st is CLOSING or st is LAST_ACK:
        conn._events.append(FinAcknowledged())
    if st is FIN_WAIT_1:
        conn._set_state(FIN_WAIT_2)
        if conn._orphaned:
            conn._arm_fin_wait_2(now)
    elif st is CLOSING:
        conn._enter_time_wait(now)
    elif st is LAST_ACK:
        conn._set_state(CLOSED)
        conn._orderly_close()
        conn._clear_timers()
