"""The send path below ``Connection.datagrams_to_send``: retransmissions and new data within
the congestion and peer windows, and the building of every segment with its options.

Every segment built here carries the current ACK, window and SACK blocks, so building one with
ACK set settles any ACK owed; nothing beyond ``snd_una + snd_wnd`` is ever sent as new data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .packet import MAX_WINDOW_FIELD, MAX_WSCALE, Flag, Packet, encode, options_size
from .recovery import SentSegment
from .seqnum import SEQ_MASK
from .state import ConnectionState
from .timers import arm_tlp, cap_to_user_timeout, window_blocked
from .trace import packet_fields

if TYPE_CHECKING:
    from .connection import Connection

S = ConnectionState
# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN = int(Flag.FIN)
_ACK = int(Flag.ACK)
_MAX_SACK_BLOCKS_WITH_TS = 3  # 36 option bytes: 10 (timestamps) + 2 + 3 * 8
_MAX_SACK_BLOCKS = 4  # 2 + 4 * 8


def send_data(conn: Connection, out: list[bytes], now: float) -> None:
    """Append the retransmissions, then the new data and FIN, that the windows allow now."""
    sb = conn._scoreboard
    cc = conn._cc
    mss = conn._snd_mss
    sent_any = False
    # Retransmissions first, within the congestion window (RFC 6675 section 5 step 4.1).
    while True:
        seg = sb.next_lost(conn._snd_una)
        if seg is None:
            break
        length = seg.end - seg.start
        if not conn._rexmit_now and sb.pipe and sb.pipe + length > cc.cwnd + conn._dupack_credit:
            break
        conn._rexmit_now = False
        if conn._tracer is not None:
            conn._trace_retransmit(seg)
        emit_segment(conn, out, seg.start, seg.end)
        sb.retransmitted(seg, now)
        conn._retx += 1
        conn._bytes_retx += length
        sent_any = True
        conn._log.debug("retransmit", seq=conn._wire_seq(seg.start), len=length, cwnd=cc.cwnd)
    # New data (and the FIN) within both windows.
    data_end = conn._sndbuf.end
    fin_pos = conn._fin_pos
    while True:
        nxt = conn._snd_nxt
        if nxt < data_end:
            wnd_room = conn._snd_una + conn._snd_wnd - nxt
            cwnd_room = cc.cwnd + conn._dupack_credit - sb.pipe
            length = min(mss, data_end - nxt, wnd_room, cwnd_room)
            if length <= 0:
                break
            # Sender silly-window avoidance (RFC 9293 section 3.8.6.2.1).
            if (
                length < mss
                and length < data_end - nxt
                and length < conn._max_snd_wnd // 2
                and sb.pipe
            ):
                break
            end = nxt + length
            fin = fin_pos is not None and end == fin_pos
        elif fin_pos is not None and nxt == fin_pos:
            if sb.pipe and sb.pipe >= cc.cwnd + conn._dupack_credit:
                break
            if conn._snd_una + conn._snd_wnd <= nxt:
                break  # a FIN needs room in the window like data does
            end = nxt
            fin = True
        else:
            break
        seg_end = end + 1 if fin else end
        emit_segment(conn, out, nxt, seg_end)
        sb.add(SentSegment(nxt, seg_end, now))
        conn._bytes_sent += end - nxt
        conn._snd_nxt = seg_end
        conn._snd_max = max(conn._snd_max, seg_end)
        sent_any = True
    if sent_any:
        if conn._oldest_unacked_since is None:
            conn._oldest_unacked_since = now
        if conn._rto_at is None:
            conn._rto_at = cap_to_user_timeout(conn, now + conn._rtt.rto)
        if not conn._tlp_sent:
            arm_tlp(conn, now)
    # Zero (or too small) window with data waiting and nothing in flight: probe it.
    if window_blocked(conn):
        if conn._persist_at is None:
            interval = min(conn._rtt.rto * (1 << conn._persist_backoff), conn.config.rto_max_s)
            conn._persist_at = now + interval
    else:
        conn._persist_at = None


def emit_segment(conn: Connection, out: list[bytes], start: int, end: int) -> None:
    """Build the datagram for positions [start, end), a FIN included if ``end`` passes it."""
    fin_pos = conn._fin_pos
    flags = _ACK
    start = max(start, conn._snd_una)  # the peer may have taken part of it already
    data_end = end
    if fin_pos is not None and end > fin_pos:
        flags |= _FIN
        data_end = fin_pos
    payload = conn._sndbuf.get(start, data_end) if data_end > start else b""
    out.append(build(conn, flags, start, payload))
    conn._segments_sent += 1


def build(
    conn: Connection, flags: int, seq_pos: int, payload: bytes, *, syn: bool = False
) -> bytes:
    """One encoded segment at position ``seq_pos``, with the ACK, window and options due."""
    cfg = conn.config
    p = Packet(
        flags,
        conn.local_cid,
        conn.peer_cid,
        conn._wire_seq(seq_pos),
        conn._wire_ack(conn._rcv_nxt) if flags & _ACK else 0,
        0,
        payload,
    )
    if syn:
        p.mss = cfg.mss_bytes
        p.window = min(conn._rcv_window(), MAX_WINDOW_FIELD)
        conn._adv_wnd = p.window
        if conn._state is S.SYN_SENT:
            p.wscale = wscale_for(cfg.recv_buffer_bytes)
            p.sack_permitted = cfg.sack
            if cfg.timestamps:
                p.timestamps = (ts_now(conn), 0)
        else:
            if conn._wscale_ok:
                p.wscale = conn._rcv_wscale
            p.sack_permitted = conn._sack_ok
            if conn._ts_ok:
                p.timestamps = (ts_now(conn), conn._ts_recent)
    else:
        wnd = conn._rcv_window()
        p.window = min(wnd >> conn._rcv_wscale, MAX_WINDOW_FIELD)
        conn._adv_wnd = p.window << conn._rcv_wscale
        if conn._ts_ok:
            p.timestamps = (ts_now(conn), conn._ts_recent)
        if conn._sack_ok and len(conn._reasm) and flags & _ACK:
            p.sack_blocks = sack_blocks(conn, len(payload))
    if flags & _ACK:
        conn._ack_now = False
        conn._ack_at = None
        conn._unacked_bytes = 0
    if conn._tracer is not None:
        conn._tracer.event(conn._trace_now, "datagram_sent", packet_fields(p, conn._adv_wnd))
    return encode(p)


def ts_now(conn: Connection) -> int:
    return int(conn._clock_ms) & SEQ_MASK


def sack_blocks(conn: Connection, payload_len: int) -> tuple[tuple[int, int], ...]:
    ranges = conn._reasm.ranges()
    limit = _MAX_SACK_BLOCKS_WITH_TS if conn._ts_ok else _MAX_SACK_BLOCKS
    if payload_len:
        # Options must not push a data segment past the datagram size the MSS allows
        # (RFC 9293 section 3.7.1): carry only the blocks that fit beside the payload.
        ts_cost = options_size(timestamps=True) if conn._ts_ok else 0
        room = conn._snd_mss + ts_cost - payload_len
        while limit and options_size(sack_blocks=limit, timestamps=conn._ts_ok) > room:
            limit -= 1
    # RFC 2018 section 4: the block holding the most recent arrival goes first.
    ranges.sort(key=lambda r: not (r[0] <= conn._last_rcv_pos < r[1]))
    return tuple((conn._wire_ack(s), conn._wire_ack(e)) for s, e in ranges[:limit])


def wscale_for(buffer_bytes: int) -> int:
    shift = 0
    while (MAX_WINDOW_FIELD << shift) < buffer_bytes and shift < MAX_WSCALE:
        shift += 1
    return shift
