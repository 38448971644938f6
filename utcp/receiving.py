"""The receive path below ``Connection.receive_packet``: the handshake states, segment
acceptability (RFC 9293 section 3.10.7.4, RFC 5961), RSTs, and in-order delivery of data and FIN.

Everything here is in the peer's positions (0 is its SYN); ``rcv_nxt`` only moves forward, by
bytes delivered in order and then once for the peer's FIN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .acking import on_new_ack, on_syn_acked, rx_ack, update_window
from .buffers import CHUNK_OVERHEAD_BYTES
from .events import CloseReason, ConnectionEstablished, DataReceived, DropReason
from .packet import HEADER_SIZE, Flag, Packet, options_size, wscale_for
from .seqnum import SEQ_MASK, seq_diff
from .state import (
    CAN_RECEIVE,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    SYN_RECEIVED,
    TIME_WAIT,
)

if TYPE_CHECKING:
    from .connection import Connection

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_SYN: Final = int(Flag.SYN)
_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)


def rx_listen(conn: Connection, p: Packet, now: float) -> None:
    """LISTEN: a SYN opens the connection (SYN_RECEIVED); anything else is dropped."""
    if p.flags & _RST or not p.flags & _SYN:
        conn._drop(DropReason.UNEXPECTED)
        if not p.flags & _RST and p.flags & _ACK:
            conn._queue_reset_for(p)
        return
    if p.flags & _ACK:
        conn._drop(DropReason.UNEXPECTED)
        conn._queue_reset_for(p)
        return
    if p.flags & _SYN:
        take_syn(conn, p)
        conn._passive = True
        conn._set_state(SYN_RECEIVED)
        conn._need_syn = True
        conn._last_activity = now


def rx_syn_sent(conn: Connection, p: Packet, now: float) -> None:
    """SYN_SENT: a SYN-ACK for our SYN establishes, a bare SYN is a simultaneous open."""
    flags = p.flags
    if flags & _ACK:
        if p.ack != conn._wire_seq(1):
            if not flags & _RST:
                conn._queue_reset_for(p)
            conn._drop(DropReason.OUT_OF_WINDOW)
            return
        if flags & _RST:
            conn._log.info("connection_refused")
            conn._finish(CloseReason.REFUSED)
            return
    elif flags & _RST:
        conn._drop(DropReason.UNEXPECTED)
        return
    if not flags & _SYN:
        conn._drop(DropReason.UNEXPECTED)
        return
    take_syn(conn, p)
    conn._last_activity = now
    if flags & _ACK:
        on_syn_acked(conn, p, now)
        conn._set_state(ESTABLISHED)
        conn._events.append(ConnectionEstablished())
        conn._ack_now = True
        if conn.config.syn_retries:
            conn._dl.confirm = now + conn._rtt.rto
    else:
        # Simultaneous open (RFC 9293 figure 7): answer with SYN-ACK, same ISS.
        conn._set_state(SYN_RECEIVED)
        conn._need_syn = True


def take_syn(conn: Connection, p: Packet) -> None:
    """Learn the peer's ISN, connection id and options from its SYN."""
    cfg = conn.config
    conn._irs = p.seq
    conn._rcv_nxt = 1
    conn.peer_cid = p.src_cid
    conn._snd_wl1 = 0
    peer_mss = p.mss if p.mss is not None else 536
    conn._sack_ok = cfg.sack and p.sack_permitted
    conn._ts_ok = cfg.timestamps and p.timestamps is not None
    if p.timestamps is not None:
        conn._ts_recent = p.timestamps[0]
    conn._wscale_ok = p.wscale is not None
    if p.wscale is not None:
        conn._snd_wscale = p.wscale
        conn._rcv_wscale = wscale_for(cfg.recv_buffer_bytes)
    else:
        conn._snd_wscale = conn._rcv_wscale = 0
    ts_cost = options_size(timestamps=True) if conn._ts_ok else 0
    conn._peer_mss = peer_mss
    conn._pmtud_ok = cfg.pmtud and p.probe_permitted
    if conn._pmtud_ok:
        # Path MTU discovery starts from the base size and raises it as probes get through;
        # the peer's segments range as widely, so count ACK-worthy data in base-size segments.
        base_mss = max(64, cfg.base_datagram_bytes - HEADER_SIZE - ts_cost)
        conn._snd_mss = min(max(64, peer_mss - ts_cost), base_mss)
        conn._ack_bytes = cfg.ack_every_segments * base_mss
    else:
        conn._snd_mss = max(64, min(cfg.mss_bytes, peer_mss) - ts_cost)
        conn._ack_bytes = cfg.ack_every_segments * conn._snd_mss
    conn._full_seg = conn._ack_bytes // cfg.ack_every_segments
    conn._cc.mss = conn._snd_mss
    conn._cc.cwnd = cfg.initial_cwnd_segments * conn._snd_mss
    conn._snd_wnd = p.window  # SYN windows are never scaled (RFC 7323 section 2.2)


def rx_synchronized(conn: Connection, p: Packet, now: float) -> None:
    """After the SYN exchange: SYN, RST and acceptability checks, then the ACK, then the data."""
    flags = p.flags
    st = conn._state
    seg_pos = conn._rcv_nxt + seq_diff(p.seq, conn._wire_ack(conn._rcv_nxt))
    payload = p.payload
    if st is TIME_WAIT:
        rx_time_wait(conn, p, seg_pos, now)
        return
    seg_len = len(payload) + (1 if flags & _FIN else 0)
    wnd = conn._rcv_window()

    # SYN_RECEIVED: the retransmitted SYN of a peer whose SYN-ACK we sent is not an error.
    if flags & _SYN:
        if st is SYN_RECEIVED and p.seq == conn._irs and not flags & _ACK:
            conn._need_syn = True
            return
        if not (flags & _ACK and st is SYN_RECEIVED):
            # RFC 5961 section 4: a SYN in a synchronized state draws a challenge ACK.
            conn._challenge(now, DropReason.UNEXPECTED)
            return
        # A SYN-ACK during simultaneous open: its SYN occupies position 0, already taken.
        if p.seq != conn._irs:
            conn._drop(DropReason.OUT_OF_WINDOW)
            return
        seg_pos = 1

    if (
        st is SYN_RECEIVED
        and flags == _ACK
        and not payload
        and p.seq == conn._irs
        and p.ack == conn._wire_seq(1)
    ):
        # A keepalive probe (SEQ = the peer's SND.UNA - 1) from a peer that is established
        # while its handshake ACK was lost: acknowledging our SYN-ACK, it proves as much as
        # that ACK would.  Take it as the handshake ACK and answer it, as a probe is answered.
        seg_pos = conn._rcv_nxt
        conn._ack_now = True

    # Acceptability (RFC 9293 section 3.10.7.4).
    if seg_len == 0:
        ok = seg_pos == conn._rcv_nxt if wnd == 0 else 0 <= seg_pos - conn._rcv_nxt < wnd
    elif wnd == 0:
        ok = False
    else:
        end = seg_pos + seg_len - 1
        ok = (
            (0 <= seg_pos - conn._rcv_nxt < wnd)
            or (0 <= end - conn._rcv_nxt < wnd)
            or seg_pos <= conn._rcv_nxt <= end  # covers the whole window: keep what fits
        )
    if flags & _RST:
        rx_rst(conn, seg_pos, ok or (seg_len == 0 and seg_pos == conn._rcv_nxt), wnd, now)
        return
    if not ok:
        if flags & _ACK and wnd == 0 and seg_pos == conn._rcv_nxt:
            rx_ack(conn, p, seg_pos, now)
        if seg_len:
            # A retransmission of data we already have: its ACK is how the peer learns.
            if payload and seg_pos + len(payload) <= conn._rcv_nxt:
                conn._count.dup_segments += 1
            conn._ack_now = True
            conn._drop(DropReason.OUT_OF_WINDOW)
        else:
            conn._challenge(now, DropReason.OUT_OF_WINDOW)
        return
    if not flags & _ACK:
        conn._drop(DropReason.UNEXPECTED)
        return
    conn._last_activity = now
    conn._keepalive_probes = 0
    conn._dl.confirm = None  # the peer is synchronized: it sent an acceptable segment
    if p.timestamps is not None and conn._ts_ok and seg_pos <= conn._rcv_nxt:
        conn._ts_recent = p.timestamps[0]
    if not rx_ack(conn, p, seg_pos, now):
        return
    if conn._state is CLOSED:
        return
    if payload or flags & _FIN:
        rx_data(conn, seg_pos, payload, bool(flags & _FIN), now)
    elif p.probe is not None or p.probe_ack is not None:
        rx_pmtud(conn, p, now)


def rx_time_wait(conn: Connection, p: Packet, seg_pos: int, now: float) -> None:
    """TIME_WAIT answers one thing: a retransmission from the peer that did not get our
    final ACK (its FIN, or data before it when earlier ACKs were lost too), acknowledged
    again with 2 MSL restarted (RFC 9293 section 3.10.7.4).  Anything else is dropped
    unanswered: the close is reported, nothing more may leave (an RST may not cut TIME_WAIT
    short either, RFC 1337)."""
    flags = p.flags
    fin_pos = conn._peer_fin_pos
    n = len(p.payload)
    if (
        (n or flags & _FIN)
        and flags & _ACK
        and not flags & (_SYN | _RST)
        and fin_pos is not None
        and seg_pos + n <= fin_pos
    ):
        conn._ack_now = True
        conn._count.dup_segments += 1
        conn._dl.time_wait = now + conn._time_wait_s
        return
    conn._drop(DropReason.UNEXPECTED)


def note_segment_size(conn: Connection, n: int) -> None:
    """Remember whether the peer's latest data segment was full-sized (it is in the middle
    of a transfer); on becoming so, the keepalive deadline is re-armed to include the early
    stall probe (``timers.stall_probe_due``)."""
    full = n >= conn._full_seg
    if full is not conn._peer_mid_stream:
        conn._peer_mid_stream = full
        if full:
            conn._dl.keepalive = None  # re-armed by the next datagrams_to_send


def rx_predicted(conn: Connection, p: Packet, now: float) -> bool:
    """Header prediction, in the spirit of BSD's ``tcp_input``: on an ESTABLISHED connection a
    plain ACK segment (no option to act on) that is the next in order, and either carries data
    that fits the window or acknowledges new data, needs none of the general checks.

    Does exactly what ``rx_synchronized`` would for such a segment and returns True; returns
    False having changed nothing when the segment needs the general path.
    """
    if (
        p.sack_blocks
        or p.probe is not None
        or p.probe_ack is not None
        or conn._reasm.nbytes
        or conn._peer_fin_pos is not None
        or conn._fin_pos is not None
    ):
        return False
    rcv_nxt = conn._rcv_nxt
    if p.seq != (conn._irs + rcv_nxt) & SEQ_MASK:
        return False
    snd_una = conn._snd_una
    ack_pos = snd_una + seq_diff(p.ack, (conn._iss + snd_una) & SEQ_MASK)
    if not snd_una <= ack_pos <= conn._snd_max:
        return False
    payload = p.payload
    n = len(payload)
    if n:
        if n > conn.config.recv_buffer_bytes - len(conn._rcv_buf):
            return False  # beyond the window: trimmed by the general path
    elif ack_pos == snd_una:
        return False  # a duplicate ACK or a window update
    conn._last_activity = now
    conn._keepalive_probes = 0
    conn._dl.confirm = None
    if p.timestamps is not None and conn._ts_ok:
        conn._ts_recent = p.timestamps[0]
    if ack_pos != snd_una:
        on_new_ack(conn, ack_pos, now)
    update_window(conn, p, rcv_nxt, ack_pos)
    if n:
        if (n >= conn._full_seg) is not conn._peer_mid_stream:
            note_segment_size(conn, n)
        deliver(conn, bytes(payload))
        conn._unacked_bytes += n
        if conn._unacked_bytes >= conn._ack_bytes:
            conn._ack_now = True
        elif not conn._ack_now and conn._dl.ack is None:
            conn._dl.ack = now + conn.config.delayed_ack_s
    return True


def rx_pmtud(conn: Connection, p: Packet, now: float) -> None:
    """An acceptable PMTU probe (answered on the next pure ACK) or answer to ours; both are
    ignored unless path MTU discovery was negotiated."""
    if not conn._pmtud_ok:
        return
    if p.probe is not None:
        conn._probe_ack_id = p.probe
    pm = conn._pmtud
    if p.probe_ack is not None and pm is not None and pm.on_probe_acked(p.probe_ack, now=now):
        conn._apply_pmtu("probe")


def rx_rst(conn: Connection, seg_pos: int, acceptable: bool, wnd: int, now: float) -> None:
    # RFC 5961 section 3.2: only an exact match resets; elsewhere in the window we challenge.
    # (TIME_WAIT never gets here: rx_time_wait drops an RST, RFC 1337.)
    if seg_pos == conn._rcv_nxt:
        conn._log.info("connection_reset", state=conn._state.value)
        conn._finish(CloseReason.RESET)
    elif acceptable or 0 <= seg_pos - conn._rcv_nxt < max(wnd, 1):
        conn._challenge(now, DropReason.OUT_OF_WINDOW)
    else:
        conn._drop(DropReason.OUT_OF_WINDOW)


def rx_data(
    conn: Connection, seg_pos: int, payload: bytes | memoryview, fin: bool, now: float
) -> None:
    if conn._state not in CAN_RECEIVE:
        # Data after the peer's FIN is a protocol error; a retransmitted FIN is re-ACKed.
        # (TIME_WAIT never gets here: rx_time_wait answers it.)
        conn._ack_now = True
        return
    rcv_nxt = conn._rcv_nxt
    wnd = conn._rcv_window()
    hi = rcv_nxt + wnd
    fin_new = False
    if payload:
        note_segment_size(conn, len(payload))
    if fin:
        fin_new = conn._peer_fin_pos is None
        fin_pos = seg_pos + len(payload)
        if fin_pos < hi or fin_pos == rcv_nxt:
            conn._peer_fin_pos = fin_pos
    if payload:
        if seg_pos == rcv_nxt and not len(conn._reasm):
            # Fast path: the next bytes in order, nothing waiting behind them.
            data = payload[: hi - seg_pos] if len(payload) > hi - seg_pos else payload
            deliver(conn, bytes(data))
            conn._unacked_bytes += len(data)
            if conn._unacked_bytes >= conn._ack_bytes:
                conn._ack_now = True
        else:
            had_gap = len(conn._reasm) > 0
            limit = 2 * conn.config.recv_buffer_bytes
            stored = conn._reasm.insert(seg_pos, payload, lo=rcv_nxt, hi=hi, limit=limit)
            if not stored and conn._reasm.truesize + CHUNK_OVERHEAD_BYTES > limit:
                conn._drop(DropReason.OVER_BUFFER)
            elif not stored and not fin_new:
                conn._count.dup_segments += 1
            elif seg_pos > rcv_nxt:
                conn._count.ooo_segments += 1
            if seg_pos > rcv_nxt:
                conn._last_rcv_pos = seg_pos
            for chunk in conn._reasm.pop_ready(conn._rcv_nxt):
                deliver(conn, chunk)
            # Out of order, or filling a gap: ACK at once (RFC 5681 section 4.2).
            if seg_pos != rcv_nxt or had_gap:
                conn._ack_now = True
            else:
                conn._unacked_bytes += len(payload)
        if conn._rcv_nxt == rcv_nxt:
            conn._ack_now = True  # nothing new in order: a duplicate, ACK it
    if conn._peer_fin_pos is not None and conn._rcv_nxt == conn._peer_fin_pos:
        conn._rcv_nxt += 1
        conn._ack_now = True
        on_fin_received(conn, now)
    elif not conn._ack_now and conn._dl.ack is None:
        conn._dl.ack = now + conn.config.delayed_ack_s


def deliver(conn: Connection, data: bytes) -> None:
    """Hand in-order bytes to the application, or hold them while reading is paused."""
    conn._rcv_nxt += len(data)
    conn._count.bytes_received += len(data)
    if conn._reading_paused:
        conn._rcv_buf += data
    else:
        conn._events.append(DataReceived(data))


def on_fin_received(conn: Connection, now: float) -> None:
    """The peer's FIN arrived in order: report EOF and move on in the close sequence."""
    conn._maybe_deliver_eof()  # EOF always comes before ConnectionClosed
    st = conn._state
    if st in (ESTABLISHED, SYN_RECEIVED):
        conn._set_state(CLOSE_WAIT)
    elif st is FIN_WAIT_1:
        if conn._fin_pos is not None and conn._snd_una > conn._fin_pos:
            conn._enter_time_wait(now)
        else:
            conn._set_state(CLOSING)
    elif st is FIN_WAIT_2:
        conn._enter_time_wait(now)
    conn._maybe_deliver_eof()
