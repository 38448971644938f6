"""A connection's counters as a ``ConnectionStats`` snapshot, and the accounting of what held
its sender back (the ``time_limited_by_*`` figures, ``SenderLimits``).

A snapshot is frozen and shares nothing mutable with the connection; the limit accounting only
ever adds time, charged to the state noted at the previous ``datagrams_to_send``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ..packet import HEADER_SIZE
from ..pmtud import Pmtud
from ..state import CLOSE_WAIT, ESTABLISHED, ConnectionState
from .counters import Counters
from .loss import LossRecovery
from .options import Negotiated
from .receive_side import ReceiveSide
from .send_side import SendSide
from .tracepoints import SSTHRESH_UNBOUNDED

__all__ = ["LIMITED_BY_APPLICATION", "NOT_LIMITED", "ConnectionStats", "SenderLimits", "snapshot"]

# What held the sender back since the last datagrams_to_send (indexes of SenderLimits.seconds).
NOT_LIMITED: Final = -1
_LIMITED_BY_RECEIVER: Final = 0
_LIMITED_BY_CONGESTION: Final = 1
LIMITED_BY_APPLICATION: Final = 2


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
    tail_loss_repairs: int  # probes that repaired a loss: the controller heard of it
    reorder_timeouts: int  # losses found when RACK's reordering window ran out
    dsacks_received: int  # ACKs reporting that a segment arrived twice (RFC 2883)
    spurious_recoveries: int  # recovery episodes whose every resent segment had arrived
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
    bundled_segments: int  # new-data segments that also carried unacknowledged data again
    bundled_bytes: int  # the unacknowledged bytes they carried again (not in bytes_sent)
    congestion_control: str  # the controller's name (Config.congestion_control)
    congestion_phase: str  # its state, "" for one without phases (bbr: startup, probe_bw...)
    pacing_rate_bps: float | None  # bits per second segments leave at; None when not paced
    bandwidth_estimate_bps: float | None  # a model-based controller's bottleneck estimate
    min_rtt_s: float | None  # the smallest RTT seen (bbr: over its ten-second window)


@final
class SenderLimits:
    """What held the sender back after the latest ``datagrams_to_send``, since when, and the
    seconds charged so far to each cause (see ConnectionStats)."""

    def __init__(self) -> None:
        self.limit = NOT_LIMITED
        self.since = 0.0
        self.seconds = [0.0, 0.0, 0.0]  # indexed by _LIMITED_BY_*

    def charge(self, now: float) -> None:
        """Charge the time since the last send to what held the sender back then."""
        if self.limit >= 0:
            self.seconds[self.limit] += now - self.since
            self.limit = NOT_LIMITED

    def still_application(self, now: float) -> None:
        """Nothing to send and still limited by the application (the fast idle path)."""
        self.seconds[LIMITED_BY_APPLICATION] += now - self.since
        self.since = now

    def classify(
        self,
        now: float,
        *,
        snd: SendSide,
        loss: LossRecovery,
        state: ConnectionState,
        bytes_sent: int,
    ) -> None:
        """Note what holds the sender back from now until the next send."""
        nxt = snd.nxt
        sb = loss.scoreboard
        if snd.has_unsent:
            wnd_room = snd.una + snd.wnd - nxt
            cwnd_room = loss.cc.cwnd + loss.dupack_credit - sb.pipe
            if wnd_room <= cwnd_room and sb.next_lost(snd.una) is None:
                self.limit = _LIMITED_BY_RECEIVER
            else:
                self.limit = _LIMITED_BY_CONGESTION
        elif sb.next_lost(snd.una) is not None:
            self.limit = _LIMITED_BY_CONGESTION  # a retransmission waits for room in cwnd
        elif (state is ESTABLISHED or state is CLOSE_WAIT) and bytes_sent:
            self.limit = LIMITED_BY_APPLICATION
        else:
            return
        self.since = now


def snapshot(
    *,
    state: ConnectionState,
    count: Counters,
    snd: SendSide,
    rcv: ReceiveSide,
    opts: Negotiated,
    loss: LossRecovery,
    pmtud: Pmtud | None,
    limits: SenderLimits,
    pacing_rate: float,
) -> ConnectionStats:
    """The counters and estimators of one connection now."""
    limited = limits.seconds
    pm = pmtud
    rtt = loss.rtt
    cc = loss.cc
    return ConnectionStats(
        state=state,
        bytes_sent=count.bytes_sent,
        bytes_received=count.bytes_received,
        bytes_retransmitted=count.bytes_retx,
        segments_sent=count.segments_sent,
        segments_received=count.segments_received,
        retransmissions=count.retx,
        fast_retransmits=count.fast_retx,
        timeouts=count.timeouts,
        tail_loss_probes=count.tlp_probes,
        tail_loss_repairs=count.tlp_recoveries,
        reorder_timeouts=count.rack_timeouts,
        dsacks_received=count.dsacks_received,
        spurious_recoveries=count.spurious_recoveries,
        duplicate_acks=count.dupack_count,
        datagrams_dropped=count.dropped,
        drops={str(k): v for k, v in count.drops.items()},
        challenge_acks=count.challenge_acks,
        reassembly_bytes=rcv.reasm.truesize,
        srtt_s=rtt.srtt,
        rttvar_s=rtt.rttvar,
        rto_s=rtt.rto,
        cwnd_bytes=cc.cwnd,
        ssthresh_bytes=min(cc.ssthresh, SSTHRESH_UNBOUNDED),
        bytes_in_flight=loss.scoreboard.pipe,
        send_window_bytes=snd.wnd,
        receive_window_bytes=rcv.window(),
        send_buffer_bytes=len(snd.buf),
        mss_bytes=snd.mss,
        pmtu_bytes=HEADER_SIZE + opts.ts_cost + snd.mss,
        pmtud_state=pm.state.value if pm is not None else "DISABLED",
        pmtud_probes_sent=pm.probes_sent if pm is not None else 0,
        pmtud_probes_lost=pm.probes_lost if pm is not None else 0,
        pmtud_black_holes=pm.black_holes if pm is not None else 0,
        duplicate_segments_received=count.dup_segments,
        out_of_order_segments_received=count.ooo_segments,
        time_limited_by_receiver_s=limited[_LIMITED_BY_RECEIVER],
        time_limited_by_congestion_s=limited[_LIMITED_BY_CONGESTION],
        time_limited_by_application_s=limited[LIMITED_BY_APPLICATION],
        fast_path_received=count.fast_received,
        fast_path_sent=count.fast_sent,
        fast_path_idle=count.fast_idle,
        icmp_errors=count.icmp_errors,
        bundled_segments=count.bundled_segments,
        bundled_bytes=count.bundled_bytes,
        congestion_control=cc.name,
        congestion_phase=cc.phase,
        pacing_rate_bps=pacing_rate * 8 if pacing_rate else None,
        bandwidth_estimate_bps=cc.bandwidth * 8 if cc.bandwidth is not None else None,
        min_rtt_s=cc.min_rtt if cc.min_rtt is not None else rtt.min_rtt,
    )
