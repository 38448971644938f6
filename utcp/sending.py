"""The send path below ``Connection.datagrams_to_send``: retransmissions and new data within
the congestion and peer windows, and the building of every segment with its options, PMTU
probes included.

Every segment built here carries the current ACK, window and SACK blocks, so building one with
ACK set settles any ACK owed (a PMTU probe, likely to be lost, settles nothing); nothing beyond
``snd_una + snd_wnd`` is ever sent as new data, and no payload is larger than ``snd_mss``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .packet import (
    HEADER_SIZE,
    MAX_OPTIONS_SIZE,
    MAX_WINDOW_FIELD,
    Flag,
    Packet,
    encode,
    encode_plain,
    options_size,
    stamp,
    wscale_for,
)
from .recovery import SentSegment
from .seqnum import SEQ_MASK
from .state import SYN_SENT
from .timers import arm_tlp, cap_to_user_timeout, window_blocked
from .trace import packet_fields

if TYPE_CHECKING:
    from .connection import Connection

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_ACK: Final = int(Flag.ACK)
_MAX_SACK_BLOCKS_WITH_TS: Final = 3  # 36 option bytes: 10 (timestamps) + 2 + 3 * 8
_MAX_SACK_BLOCKS: Final = 4  # 2 + 4 * 8


def send_data(conn: Connection, out: list[bytes], now: float) -> None:
    """Append the retransmissions, then the new data and FIN, that the windows allow now."""
    if conn._fast and send_lone_segment(conn, out, now):
        conn._count.fast_sent += 1
        return
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
        if length > mss:
            length = fit_to_mss(conn, seg, mss)
        if not conn._rexmit_now and sb.pipe and sb.pipe + length > cc.cwnd + conn._dupack_credit:
            break
        conn._rexmit_now = False
        if conn._tracer is not None:
            conn._trace_retransmit(seg)
        emit_segment(conn, out, seg.start, seg.end)
        sb.retransmitted(seg, now)
        conn._count.retx += 1
        conn._count.bytes_retx += length
        sent_any = True
        conn._log.debug("retransmit", seq=conn._wire_seq(seg.start), len=length, cwnd=cc.cwnd)
    # New data (and the FIN) within both windows.
    data_end = conn._sndbuf.end
    fin_pos = conn._fin_pos
    template: bytes | None = None
    # Traces record every segment built, and SACK blocks depend on each payload's length.
    slow = conn._tracer is not None or (conn._sack_ok and len(conn._reasm) > 0)
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
        if fin or slow:
            emit_segment(conn, out, nxt, seg_end)
        else:
            # A plain data segment: every header field but the sequence number is the same
            # for the whole run, so the header is built once and stamped per segment.
            if template is None:
                template = build(conn, _ACK, nxt, b"")
            out.append(stamp(template, conn._wire_seq(nxt), conn._sndbuf.get(nxt, end)))
            conn._count.segments_sent += 1
        sb.add(SentSegment(nxt, seg_end, now))
        conn._count.bytes_sent += end - nxt
        conn._snd_nxt = seg_end
        conn._snd_max = max(conn._snd_max, seg_end)
        sent_any = True
    if sent_any:
        after_send(conn, now)
    # Zero (or too small) window with data waiting and nothing in flight: probe it.
    if window_blocked(conn):
        if conn._dl.persist is None:
            interval = min(conn._rtt.rto * (1 << conn._persist_backoff), conn.config.rto_max_s)
            conn._dl.persist = now + interval
    else:
        conn._dl.persist = None


def send_lone_segment(conn: Connection, out: list[bytes], now: float) -> bool:
    """Send what waits if it all fits in one segment the windows allow (a request, a reply),
    as the general loop of ``send_data`` would, without its bookkeeping; False, having done
    nothing, in any other case."""
    nxt = conn._snd_nxt
    length = conn._sndbuf.end - nxt
    sb = conn._scoreboard
    if not (
        0 < length <= conn._snd_mss
        and conn._fin_pos is None
        and not sb.has_lost
        and length <= conn._snd_una + conn._snd_wnd - nxt
        and length <= conn._cc.cwnd + conn._dupack_credit - sb.pipe
        and conn._tracer is None
    ):
        return False
    end = nxt + length
    emit_segment(conn, out, nxt, end)
    sb.add(SentSegment(nxt, end, now))
    conn._count.bytes_sent += length
    conn._snd_nxt = end
    if end > conn._snd_max:
        conn._snd_max = end
    after_send(conn, now)
    conn._dl.persist = None  # nothing waits: no window to probe
    return True


def after_send(conn: Connection, now: float) -> None:
    """Segments went out: arm the retransmission and tail-loss timers, wake PMTU discovery."""
    if conn._oldest_unacked_since is None:
        conn._oldest_unacked_since = now
    if conn._dl.rto is None:
        conn._dl.rto = cap_to_user_timeout(conn, now + conn._rtt.rto)
    if not conn._tlp_sent:
        arm_tlp(conn, now)
    pm = conn._pmtud
    if pm is not None and now >= pm.wake_at:
        pm.wake(now=now)  # traffic after the raise timer ran out (or ERROR's wait)


def fit_to_mss(conn: Connection, seg: SentSegment, mss: int) -> int:
    """Cut a segment awaiting retransmission into pieces of at most ``mss`` payload bytes and
    return the first piece's length.

    Only path MTU discovery shrinks the MSS; after a black hole the old size is what the path
    drops, so resending the segment whole would never get through.
    """
    start = max(seg.start, conn._snd_una)
    n = conn._data_len(start, seg.end)
    if n <= mss:
        return seg.end - seg.start  # a FIN's position, not payload, made it look long
    cuts = list(range(start + mss, start + n, mss))
    if conn._tracer is not None:
        by = conn._lost_by.get(seg.start, "rto")
        for cut in cuts:
            conn._lost_by[cut] = by
    conn._scoreboard.split(seg, cuts)
    return seg.end - seg.start


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
    conn._count.segments_sent += 1


def build(
    conn: Connection,
    flags: int,
    seq_pos: int,
    payload: bytes,
    *,
    syn: bool = False,
    probe_ack: int | None = None,
) -> bytes:
    """One encoded segment at position ``seq_pos``, with the ACK, window and options due;
    ``probe_ack`` answers the peer's PMTU probe of that id (on a pure ACK)."""
    if (
        not syn
        and not conn._ts_ok
        and probe_ack is None
        and conn._tracer is None
        and not (conn._sack_ok and conn._reasm.nbytes and flags & _ACK)
    ):
        # No options: encoded straight from the fields.
        wnd = conn._rcv_window()
        window = min(wnd >> conn._rcv_wscale, MAX_WINDOW_FIELD)
        conn._adv_wnd = window << conn._rcv_wscale
        if flags & _ACK:
            conn._ack_now = False
            conn._dl.ack = None
            conn._unacked_bytes = 0
            ack = (conn._irs + conn._rcv_nxt) & SEQ_MASK
        else:
            ack = 0
        return encode_plain(
            flags,
            conn.local_cid,
            conn.peer_cid,
            (conn._iss + seq_pos) & SEQ_MASK,
            ack,
            window,
            payload,
        )
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
        p.mss = conn._adv_mss
        p.window = min(conn._rcv_window(), MAX_WINDOW_FIELD)
        conn._adv_wnd = p.window
        if conn._state is SYN_SENT:
            p.wscale = wscale_for(cfg.recv_buffer_bytes)
            p.sack_permitted = cfg.sack
            p.probe_permitted = cfg.pmtud
            if cfg.timestamps:
                p.timestamps = (ts_now(conn), 0)
        else:
            if conn._wscale_ok:
                p.wscale = conn._rcv_wscale
            p.sack_permitted = conn._sack_ok
            p.probe_permitted = conn._pmtud_ok
            if conn._ts_ok:
                p.timestamps = (ts_now(conn), conn._ts_recent)
    else:
        wnd = conn._rcv_window()
        p.window = min(wnd >> conn._rcv_wscale, MAX_WINDOW_FIELD)
        conn._adv_wnd = p.window << conn._rcv_wscale
        if conn._ts_ok:
            p.timestamps = (ts_now(conn), conn._ts_recent)
        if probe_ack is not None:
            p.probe_ack = probe_ack
        if conn._sack_ok and len(conn._reasm) and flags & _ACK:
            p.sack_blocks = sack_blocks(conn, len(payload), probe_ack is not None)
    if flags & _ACK:
        conn._ack_now = False
        conn._dl.ack = None
        conn._unacked_bytes = 0
    if conn._tracer is not None:
        conn._tracer.event(conn._trace_now, "datagram_sent", packet_fields(p, conn._adv_wnd))
    return encode(p)


def build_probe(conn: Connection, probe_id: int, size: int) -> bytes:
    """A PMTU probe of ``size`` bytes: an ACK at SND.NXT with the current ACK and window, the
    PROBE option and zero padding up to the size (docs/PROTOCOL.md, path MTU discovery).

    It occupies no sequence space and is not recorded for retransmission; since it is likely to
    be dropped, it settles no ACK owed and leaves the window last advertised as it was.
    """
    p = Packet(
        _ACK,
        conn.local_cid,
        conn.peer_cid,
        conn._wire_seq(conn._snd_nxt),
        conn._wire_ack(conn._rcv_nxt),
        min(conn._rcv_window() >> conn._rcv_wscale, MAX_WINDOW_FIELD),
        b"",
        probe=probe_id,
    )
    if conn._ts_ok:
        p.timestamps = (ts_now(conn), conn._ts_recent)
    p.padding = size - HEADER_SIZE - options_size(timestamps=conn._ts_ok, probe=True)
    if conn._tracer is not None:
        wnd = p.window << conn._rcv_wscale
        conn._tracer.event(conn._trace_now, "datagram_sent", packet_fields(p, wnd))
    return encode(p)


def ts_now(conn: Connection) -> int:
    return int(conn._clock_ms) & SEQ_MASK


def sack_blocks(
    conn: Connection, payload_len: int, probe_ack: bool = False
) -> tuple[tuple[int, int], ...]:
    ranges = conn._reasm.ranges()
    limit = _MAX_SACK_BLOCKS_WITH_TS if conn._ts_ok else _MAX_SACK_BLOCKS
    if probe_ack:  # the 6-byte PROBE_ACK shares the 36 option bytes
        while (
            options_size(sack_blocks=limit, timestamps=conn._ts_ok, probe_ack=True)
            > MAX_OPTIONS_SIZE
        ):
            limit -= 1
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
