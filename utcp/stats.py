"""A connection's counters as a ``ConnectionStats`` snapshot, and the accounting of what held
its sender back (the ``time_limited_by_*`` figures).

A snapshot is frozen and shares nothing mutable with the connection; the limit accounting only
ever adds time, charged to the state noted at the previous ``datagrams_to_send``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .packet import HEADER_SIZE
from .state import ConnectionState

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["ConnectionStats"]

SSTHRESH_UNBOUNDED: Final = 0x7FFFFFFF  # at or above: reported as unbounded
# What held the sender back since the last datagrams_to_send (indexes of Connection._limited_s).
NOT_LIMITED: Final = -1
_LIMITED_BY_RECEIVER: Final = 0
_LIMITED_BY_CONGESTION: Final = 1
LIMITED_BY_APPLICATION: Final = 2
_APP_LIMITED_STATES: Final = frozenset({ConnectionState.ESTABLISHED, ConnectionState.CLOSE_WAIT})


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of a connection's counters and estimators, in the spirit of Linux's TCP_INFO.

    The three ``time_limited_by_*`` figures split the sender's time by what held it back,
    measured in the core from the ``now`` of successive ``datagrams_to_send`` calls: the state
    after one call is charged with the time until the next.  With data (or a FIN) written and
    not yet sent, or a lost segment awaiting retransmission, the sender is limited by the
    receiver when the peer's window leaves it no more room than the congestion window does
    (Linux's tcpi_rwnd_limited), otherwise by congestion.  With nothing left to send it is
    limited by the application, but only while the connection is ESTABLISHED or CLOSE_WAIT
    (the application may still write) and has sent data before; idle time after the last
    write counts here too.  Time before the handshake completes, and with nothing to send
    after ``close()``, counts nowhere.  The figures run up to the latest ``datagrams_to_send``.
    """

    state: ConnectionState
    bytes_sent: int  # application bytes sent for the first time
    bytes_received: int  # application bytes delivered in order
    bytes_retransmitted: int
    segments_sent: int
    segments_received: int
    retransmissions: int  # segments sent again, for any reason
    fast_retransmits: int  # recovery episodes started by duplicate ACKs or SACK
    timeouts: int  # retransmission timer expiries
    tail_loss_probes: int  # last segments resent after two RTTs without an ACK
    duplicate_acks: int
    datagrams_dropped: int  # malformed, failed checksum, or not acceptable
    drops: dict[str, int]  # datagrams_dropped by reason (DropReason values)
    challenge_acks: int  # ACKs sent to challenge a suspicious RST, SYN or ACK (RFC 5961)
    reassembly_bytes: int  # out-of-order data held, with its bookkeeping overhead
    srtt_s: float | None
    rttvar_s: float
    rto_s: float
    cwnd_bytes: int
    ssthresh_bytes: int
    bytes_in_flight: int
    send_window_bytes: int
    receive_window_bytes: int
    send_buffer_bytes: int  # written by the application and not yet acknowledged
    mss_bytes: int  # largest payload this side puts in a segment now
    pmtu_bytes: int  # largest datagram this side sends now: header, options and mss_bytes
    pmtud_state: str  # path MTU discovery (RFC 8899 section 5.2): "DISABLED" when not in use
    pmtud_probes_sent: int
    pmtud_probes_lost: int  # probes unanswered within the probe timer (lost probes)
    pmtud_black_holes: int  # falls back to the base size after full-sized segments stopped
    duplicate_segments_received: int  # data segments all of whose bytes we already had
    out_of_order_segments_received: int  # data segments bringing new bytes beyond a gap
    time_limited_by_receiver_s: float  # data waiting, held back by the peer's window
    time_limited_by_congestion_s: float  # data waiting, held back by the congestion window
    time_limited_by_application_s: float  # windows open, nothing written to send
    fast_path_received: int  # segments handled by header prediction (Config.fast_paths)
    fast_path_sent: int  # lone segments sent without the general send loop
    fast_path_idle: int  # datagrams_to_send calls that found nothing due at once
    icmp_errors: int  # ICMP errors taken as this connection's (receive_unreachable)


def snapshot(conn: Connection) -> ConnectionStats:
    """The counters and estimators of ``conn`` now."""
    limited = conn._limited_s
    pm = conn._pmtud
    return ConnectionStats(
        state=conn._state,
        bytes_sent=conn._count.bytes_sent,
        bytes_received=conn._count.bytes_received,
        bytes_retransmitted=conn._count.bytes_retx,
        segments_sent=conn._count.segments_sent,
        segments_received=conn._count.segments_received,
        retransmissions=conn._count.retx,
        fast_retransmits=conn._count.fast_retx,
        timeouts=conn._count.timeouts,
        tail_loss_probes=conn._count.tlp_probes,
        duplicate_acks=conn._count.dupack_count,
        datagrams_dropped=conn._count.dropped,
        drops=conn.drops,
        challenge_acks=conn._count.challenge_acks,
        reassembly_bytes=conn._reasm.truesize,
        srtt_s=conn._rtt.srtt,
        rttvar_s=conn._rtt.rttvar,
        rto_s=conn._rtt.rto,
        cwnd_bytes=conn._cc.cwnd,
        ssthresh_bytes=min(conn._cc.ssthresh, SSTHRESH_UNBOUNDED),
        bytes_in_flight=conn._scoreboard.pipe,
        send_window_bytes=conn._snd_wnd,
        receive_window_bytes=conn._rcv_window(),
        send_buffer_bytes=len(conn._sndbuf),
        mss_bytes=conn._snd_mss,
        pmtu_bytes=HEADER_SIZE + conn._ts_cost() + conn._snd_mss,
        pmtud_state=pm.state.value if pm is not None else "DISABLED",
        pmtud_probes_sent=pm.probes_sent if pm is not None else 0,
        pmtud_probes_lost=pm.probes_lost if pm is not None else 0,
        pmtud_black_holes=pm.black_holes if pm is not None else 0,
        duplicate_segments_received=conn._count.dup_segments,
        out_of_order_segments_received=conn._count.ooo_segments,
        time_limited_by_receiver_s=limited[_LIMITED_BY_RECEIVER],
        time_limited_by_congestion_s=limited[_LIMITED_BY_CONGESTION],
        time_limited_by_application_s=limited[LIMITED_BY_APPLICATION],
        fast_path_received=conn._count.fast_received,
        fast_path_sent=conn._count.fast_sent,
        fast_path_idle=conn._count.fast_idle,
        icmp_errors=conn._count.icmp_errors,
    )


def classify_limit(conn: Connection, now: float) -> None:
    """Note what holds the sender back from now until the next send (see ConnectionStats)."""
    nxt = conn._snd_nxt
    fin_pos = conn._fin_pos
    sb = conn._scoreboard
    if nxt < conn._sndbuf.end or (fin_pos is not None and nxt == fin_pos):
        wnd_room = conn._snd_una + conn._snd_wnd - nxt
        cwnd_room = conn._cc.cwnd + conn._dupack_credit - sb.pipe
        if wnd_room <= cwnd_room and sb.next_lost(conn._snd_una) is None:
            conn._limit = _LIMITED_BY_RECEIVER
        else:
            conn._limit = _LIMITED_BY_CONGESTION
    elif sb.next_lost(conn._snd_una) is not None:
        conn._limit = _LIMITED_BY_CONGESTION  # a retransmission waits for room in cwnd
    elif conn._state in _APP_LIMITED_STATES and conn._count.bytes_sent:
        conn._limit = LIMITED_BY_APPLICATION
    else:
        return
    conn._limit_since = now
