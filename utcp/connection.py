"""The sans-I/O connection: handshake, reliable byte stream, loss recovery, flow and congestion
control and teardown, driven by explicit inputs and a clock value passed in.

Inputs: ``connect``/``listen``, ``receive_datagram``, ``send``, ``close``, ``abort``,
``handle_timer``.  Outputs: ``datagrams_to_send``, ``get_timer`` and ``next_event``.
Internally all sequence numbers are unbounded stream positions (0 is the SYN); they are
converted to 32-bit wire numbers only when a packet is built or parsed.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from . import congestion
from .buffers import CHUNK_OVERHEAD_BYTES, ReassemblyBuffer, SendBuffer
from .config import Config
from .events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    DropReason,
    EofReceived,
    Event,
)
from .log import get_logger
from .packet import (
    MAX_WINDOW_FIELD,
    MAX_WSCALE,
    Flag,
    Packet,
    PacketError,
    decode,
    encode,
    options_size,
)
from .recovery import RttEstimator, Scoreboard, SentSegment
from .seqnum import SEQ_MASK, seq_diff
from .state import CAN_RECEIVE, CAN_SEND, SYNCHRONIZED, ConnectionState, check_transition
from .trace import Tracer, flags_text, packet_fields

__all__ = ["Connection", "ConnectionStats", "new_connection_id", "new_isn", "reset_for"]

S = ConnectionState
# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN = int(Flag.FIN)
_SYN = int(Flag.SYN)
_RST = int(Flag.RST)
_ACK = int(Flag.ACK)
_MAX_SACK_BLOCKS_WITH_TS = 3  # 36 option bytes: 10 (timestamps) + 2 + 3 * 8
_MAX_SACK_BLOCKS = 4  # 2 + 4 * 8
_TLP_MIN_S = 0.010  # floor of the probe timeout (RFC 8985 section 7.2 suggests 10 ms)
_SSTHRESH_UNBOUNDED = 0x7FFFFFFF  # at or above: reported as unbounded
# What held the sender back since the last datagrams_to_send (indexes of _limited_s).
_NOT_LIMITED = -1
_LIMITED_BY_RECEIVER = 0
_LIMITED_BY_CONGESTION = 1
_LIMITED_BY_APPLICATION = 2
_APP_LIMITED_STATES = frozenset({ConnectionState.ESTABLISHED, ConnectionState.CLOSE_WAIT})


def _round_s(seconds: float | None) -> float | None:
    """Seconds to the nanosecond, so a trace shows 0.02 rather than 0.020000000000000004."""
    return None if seconds is None else round(seconds, 9)


def new_connection_id() -> int:
    """A random non-zero 32-bit connection id."""
    while True:
        cid = secrets.randbits(32)
        if cid:
            return cid


def new_isn() -> int:
    """An unpredictable initial sequence number (RFC 6528: no observer can guess the next)."""
    return secrets.randbits(32)


def reset_for(packet: Packet) -> bytes | None:
    """The RST answering a packet that reached no connection, or None if none is due.

    RFC 9293 section 3.10.7.1: a RST is never answered; if the packet carries an ACK the RST
    takes its sequence number from it, otherwise it acknowledges the whole segment.
    """
    if packet.flags & _RST:
        return None
    if packet.flags & _ACK:
        rst = Packet(_RST, packet.dst_cid, packet.src_cid, packet.ack, 0, 0)
    else:
        ack = (packet.seq + packet.seg_len) & SEQ_MASK
        rst = Packet(_RST | _ACK, packet.dst_cid, packet.src_cid, 0, ack, 0)
    return encode(rst)


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
    mss_bytes: int
    duplicate_segments_received: int  # data segments all of whose bytes we already had
    out_of_order_segments_received: int  # data segments bringing new bytes beyond a gap
    time_limited_by_receiver_s: float  # data waiting, held back by the peer's window
    time_limited_by_congestion_s: float  # data waiting, held back by the congestion window
    time_limited_by_application_s: float  # windows open, nothing written to send


class Connection:
    """One end of a utcp connection, free of I/O: feed it datagrams and time, send what it says."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        local_cid: int | None = None,
        isn: int | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = (config or Config()).validate()
        self.local_cid = new_connection_id() if local_cid is None else local_cid
        self.peer_cid = 0
        self._state = S.CLOSED
        self._log = get_logger(cid=f"{self.local_cid:08x}")
        self._events: deque[Event] = deque()
        self._close_reason: CloseReason | None = None
        cfg = self.config

        # Send side, in positions: 0 is our SYN, data byte k is k + 1.
        self._iss = new_isn() if isn is None else isn & SEQ_MASK
        self._snd_una = 0
        self._snd_nxt = 0  # next position to send for the first time
        self._snd_max = 0  # highest position sent + 1
        self._sndbuf = SendBuffer(1)
        self._fin_pos: int | None = None  # position of our FIN once close() was called
        self._snd_wnd = cfg.mss_bytes  # until the peer's first window arrives
        self._max_snd_wnd = 0
        self._snd_wl1 = -1  # peer position of the segment that last updated the window
        self._snd_wl2 = -1  # our position acknowledged by that segment
        self._snd_wscale = 0
        self._snd_mss = cfg.mss_bytes
        self._scoreboard = Scoreboard()
        self._rtt = RttEstimator(
            initial_rto_s=cfg.rto_initial_s, rto_min_s=cfg.rto_min_s, rto_max_s=cfg.rto_max_s
        )
        self._cc = congestion.create(
            cfg.congestion_control,
            mss=cfg.mss_bytes,
            initial_window_segments=cfg.initial_cwnd_segments,
        )
        self._in_recovery = False
        self._recover = 0  # RFC 6582 "recover"
        self._dupacks = 0
        self._dupack_credit = 0  # bytes of dup-ACK inflation in recovery without SACK
        self._rexmit_now = False  # fast retransmit due: send it whatever the pipe says
        self._tlp_at: float | None = None  # tail loss probe deadline (RFC 8985 section 7)
        self._tlp_sent = False  # one probe per flight, until new data is acknowledged
        self._sack_ok = False
        self._ts_ok = False
        self._ts_recent = 0
        self._timeouts_in_a_row = 0
        self._oldest_unacked_since: float | None = None
        self._syn_retries = 0
        self._need_syn = False  # SYN or SYN-ACK due to be (re)sent
        self._need_rst = False
        self._send_probe = False  # an ACK with an old sequence number, to draw the peer's ACK
        self._pending_raw: list[bytes] = []  # RSTs for stray packets
        self._syn_sent_at = 0.0
        self._wscale_ok = False
        self._clock_ms = 0.0

        # Receive side, in the peer's positions: 0 is the peer's SYN.
        self._irs = 0
        self._rcv_nxt = 0
        self._rcv_wscale = 0
        self._rcv_buf = bytearray()  # in-order data held while reading is paused
        self._reasm = ReassemblyBuffer()
        self._last_rcv_pos = 0  # start of the most recent out-of-order arrival (SACK order)
        self._peer_fin_pos: int | None = None
        self._eof_delivered = False
        self._closed_event_pending = False
        self._reading_paused = False
        self._adv_wnd = cfg.recv_buffer_bytes  # window last advertised, bytes
        self._ack_now = False
        self._unacked_bytes = 0

        # Timers: absolute deadlines or None.
        self._rto_at: float | None = None
        self._ack_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = 0
        self._persist_probes = 0
        self._time_wait_at: float | None = None
        self._keepalive_at: float | None = None
        self._keepalive_probes = 0
        self._last_activity = 0.0

        # Counters.
        self._bytes_sent = 0
        self._bytes_received = 0
        self._bytes_retx = 0
        self._segments_sent = 0
        self._segments_received = 0
        self._retx = 0
        self._fast_retx = 0
        self._timeouts = 0
        self._tlp_probes = 0
        self._dupack_count = 0
        self._dropped = 0
        self._drops: dict[DropReason, int] = {}
        self._challenge_acks = 0
        self._last_challenge_at: float | None = None
        self._idle_at: float | None = None
        # An active opener re-sends its handshake ACK until the peer shows it arrived: the
        # peer never re-sends a SYN-ACK on its own (anti-amplification), and a lost final
        # ACK would otherwise leave a silent client and a half-open server waiting forever.
        self._confirm_at: float | None = None
        self._confirm_tries = 0
        self._passive = False  # opened by a peer's SYN: its address is not validated yet
        self._dup_segments = 0
        self._ooo_segments = 0
        self._limit = _NOT_LIMITED  # what held the sender back after the last send
        self._limit_since = 0.0
        self._limited_s = [0.0, 0.0, 0.0]  # seconds, indexed by _LIMITED_BY_*

        # Tracing (docs/TRACE.md).  With no tracer every trace point is one attribute test.
        self._tracer: Tracer | None = None
        self._trace_now = 0.0  # stamp for events of calls that take no ``now``
        self._trace_packet: Packet | None = None  # the packet being processed, for drops
        self._trace_cc: tuple[int, int] | None = None  # (cwnd, ssthresh) last reported
        self._lost_by: dict[int, str] = {}  # position of a lost segment -> what found it
        if tracer is not None:
            self.set_tracer(tracer)

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> ConnectionState:
        """The RFC 9293 state."""
        return self._state

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._close_reason

    @property
    def is_finished(self) -> bool:
        """True once the connection is CLOSED after having been used: it can be forgotten."""
        return self._state is S.CLOSED and self._close_reason is not None

    @property
    def send_buffer_size(self) -> int:
        """Bytes written by the application and not yet acknowledged by the peer."""
        return len(self._sndbuf)

    @property
    def mss(self) -> int:
        """Largest payload this side puts in one segment."""
        return self._snd_mss

    @property
    def iss(self) -> int:
        """This end's initial sequence number: the ``seq`` of its SYN on the wire."""
        return self._iss

    @property
    def tracer(self) -> Tracer | None:
        """The tracer receiving this connection's events, or None when tracing is off."""
        return self._tracer

    def set_tracer(self, tracer: Tracer | None, *, now: float | None = None) -> None:
        """Start (or with None stop) reporting events to ``tracer``; it is not closed here.

        ``now`` stamps events raised before the next call that carries a clock (``listen``
        without ``now``, ``close``, ``abort``); later events carry their own input's ``now``.
        """
        self._tracer = tracer
        if now is not None:
            self._trace_now = now
        self._trace_cc = None
        self._lost_by.clear()
        self._scoreboard.lost_log = [] if tracer is not None else None

    @property
    def stats(self) -> ConnectionStats:
        """A snapshot of counters and estimators."""
        limited = self._limited_s
        return ConnectionStats(
            state=self._state,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            bytes_retransmitted=self._bytes_retx,
            segments_sent=self._segments_sent,
            segments_received=self._segments_received,
            retransmissions=self._retx,
            fast_retransmits=self._fast_retx,
            timeouts=self._timeouts,
            tail_loss_probes=self._tlp_probes,
            duplicate_acks=self._dupack_count,
            datagrams_dropped=self._dropped,
            drops={str(k): v for k, v in self._drops.items()},
            challenge_acks=self._challenge_acks,
            reassembly_bytes=self._reasm.truesize,
            srtt_s=self._rtt.srtt,
            rttvar_s=self._rtt.rttvar,
            rto_s=self._rtt.rto,
            cwnd_bytes=self._cc.cwnd,
            ssthresh_bytes=min(self._cc.ssthresh, _SSTHRESH_UNBOUNDED),
            bytes_in_flight=self._scoreboard.pipe,
            send_window_bytes=self._snd_wnd,
            receive_window_bytes=self._rcv_window(),
            send_buffer_bytes=len(self._sndbuf),
            mss_bytes=self._snd_mss,
            duplicate_segments_received=self._dup_segments,
            out_of_order_segments_received=self._ooo_segments,
            time_limited_by_receiver_s=limited[_LIMITED_BY_RECEIVER],
            time_limited_by_congestion_s=limited[_LIMITED_BY_CONGESTION],
            time_limited_by_application_s=limited[_LIMITED_BY_APPLICATION],
        )

    # ------------------------------------------------------------------ user calls

    def connect(self, *, now: float) -> None:
        """Start an active open: send SYN and enter SYN_SENT."""
        if self._state is not S.CLOSED or self._close_reason is not None:
            raise RuntimeError(f"connect() needs a fresh connection, not {self._state.value}")
        if self._tracer is not None:
            self._trace_now = now
        self._set_state(S.SYN_SENT)
        self._need_syn = True
        self._last_activity = now

    def listen(self, *, now: float | None = None) -> None:
        """Start a passive open: wait in LISTEN for a SYN (``now`` only stamps the trace)."""
        if self._state is not S.CLOSED or self._close_reason is not None:
            raise RuntimeError(f"listen() needs a fresh connection, not {self._state.value}")
        if now is not None:
            self._trace_now = now
        self._set_state(S.LISTEN)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for reliable, in-order delivery."""
        if self._state not in CAN_SEND or self._fin_pos is not None:
            raise BrokenPipeError(f"cannot send in state {self._state.value} after close")
        if data:
            self._sndbuf.write(data)

    def close(self) -> None:
        """Half-close: send FIN after all queued data; receiving goes on until the peer's FIN."""
        st = self._state
        if st in (S.LISTEN, S.SYN_SENT):
            self._need_syn = False
            self._finish(CloseReason.CLOSED)
            return
        if self._fin_pos is not None or st not in (S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT):
            return
        self._fin_pos = self._sndbuf.end
        if st is S.SYN_RECEIVED:
            return  # RFC 9293 section 3.10.4: the FIN waits until the handshake completes
        self._set_state(S.LAST_ACK if st is S.CLOSE_WAIT else S.FIN_WAIT_1)

    def abort(self) -> None:
        """Reset the connection: send RST and forget everything at once."""
        if self._state is S.CLOSED:
            return
        if self._close_reason is not None and not self._closed_event_pending:
            # The orderly close is done and reported (TIME_WAIT): only the wait is cut
            # short, with nothing sent (RFC 9293 section 3.10.5) and nothing reported again.
            self._set_state(S.CLOSED)
            self._clear_timers()
            return
        self._closed_event_pending = False  # reported below, once, as the abort
        if self._state in SYNCHRONIZED or self._state is S.SYN_RECEIVED:
            self._need_rst = True
        self._finish(CloseReason.ABORTED)

    def pause_reading(self) -> None:
        """Stop delivering data; it is held here and the advertised window shrinks."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Deliver held data and reopen the window, telling the peer if it grew enough."""
        self._reading_paused = False
        if self._rcv_buf:
            data = bytes(self._rcv_buf)
            self._rcv_buf.clear()
            self._events.append(DataReceived(data))
        self._maybe_deliver_eof()
        self._maybe_window_update()

    def next_event(self) -> Event | None:
        """The oldest undelivered event, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` must be called, or None."""
        best: float | None = None
        for t in (
            self._rto_at,
            self._tlp_at,
            self._ack_at,
            self._persist_at,
            self._time_wait_at,
            self._keepalive_at,
            self._idle_at,
            self._confirm_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, *, now: float) -> None:
        """Run every timer whose deadline has passed."""
        tracer = self._tracer
        if tracer is not None:
            self._trace_now = now
        if self._time_wait_at is not None and now >= self._time_wait_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "time_wait"})
            self._time_wait_at = None
            self._set_state(S.CLOSED)
            self._clear_timers()
            return
        if self._rto_at is not None and now >= self._rto_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "rto"})
            self._rto_at = self._tlp_at = None
            self._on_rto(now)
        if self._tlp_at is not None and now >= self._tlp_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "tlp"})
            self._tlp_at = None
            self._on_tlp(now)
        if self._persist_at is not None and now >= self._persist_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "persist"})
            self._persist_at = None
            self._on_persist(now)
        if self._ack_at is not None and now >= self._ack_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "delayed_ack"})
            self._ack_at = None
            self._ack_now = True
        if self._keepalive_at is not None and now >= self._keepalive_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "keepalive"})
            self._keepalive_at = None
            self._on_keepalive(now)
        if self._idle_at is not None and now >= self._idle_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "idle"})
            self._idle_at = None
            self._on_idle(now)
        if self._confirm_at is not None and now >= self._confirm_at:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "handshake_ack"})
            self._confirm_at = None
            self._on_confirm(now)
        if tracer is not None:
            self._trace_cwnd()

    def _on_rto(self, now: float) -> None:
        cfg = self.config
        if self._state in (S.SYN_SENT, S.SYN_RECEIVED) and self._snd_una == 0:
            self._syn_retries += 1
            if self._syn_retries > cfg.syn_retries:
                self._log.info("handshake_timeout", state=self._state.value)
                self._need_rst = self._state is S.SYN_RECEIVED
                self._finish(CloseReason.TIMEOUT)
                return
            self._rtt.back_off()
            if self._passive:
                # At most one SYN-ACK per SYN (RFC 9000 section 8.1's concern: no
                # amplification towards an unvalidated address). The client re-sends its
                # SYN, or its handshake ACK; we only wait for them.
                self._rto_at = now + self._rtt.rto
                return
            self._timeouts += 1
            self._retx += 1
            self._need_syn = True
            if self._tracer is not None:
                self._lost_by[0] = "rto"
                self._tracer.event(now, "loss_detected", {"seq": self._iss, "len": 0, "by": "rto"})
            self._log.debug("syn_retransmit", attempt=self._syn_retries, rto=self._rtt.rto)
            return
        if not len(self._scoreboard):
            return
        self._timeouts += 1
        self._timeouts_in_a_row += 1
        if (
            self._state in (S.LAST_ACK, S.CLOSING)
            and self._fin_pos is not None
            and self._snd_una >= self._fin_pos
            and self._timeouts_in_a_row > cfg.fin_retries
        ):
            # Every byte both ways is delivered and acknowledged; only our FIN's ACK is
            # missing, most likely because the peer already left TIME_WAIT.  Nothing is lost
            # by ending here (as an orphaned TCP socket gives up after tcp_orphan_retries).
            self._log.info("fin_unacknowledged", retries=self._timeouts_in_a_row)
            self._set_state(S.CLOSED)
            self._scoreboard.clear()
            self._clear_timers()
            self._orderly_close()
            return
        if self._timeouts_in_a_row > cfg.max_retransmits or self._user_timeout_expired(now):
            self._log.info(
                "retransmission_timeout",
                retries=self._timeouts_in_a_row,
                snd_una=self._wire_seq(self._snd_una),
            )
            self._need_rst = True
            self._finish(CloseReason.TIMEOUT)
            return
        flight = self._snd_max - self._snd_una
        self._cc.on_timeout(flight, now=now)
        self._recover = self._snd_max
        self._in_recovery = False
        self._dupacks = 0
        self._dupack_credit = 0
        self._scoreboard.mark_all_lost()
        if self._tracer is not None:
            self._trace_losses("rto")
        self._rtt.back_off()
        self._log.debug(
            "rto_expired",
            snd_una=self._wire_seq(self._snd_una),
            rto=self._rtt.rto,
            cwnd=self._cc.cwnd,
            backoff=self._rtt.backoff,
        )
        self._rto_at = self._cap_to_user_timeout(now + self._rtt.rto)

    def _arm_tlp(self, now: float) -> None:
        """Schedule a tail loss probe two smoothed RTTs out, when that comes before the RTO."""
        srtt = self._rtt.srtt
        if (
            srtt is None
            or not self.config.tail_loss_probe
            or self._tlp_sent
            or self._in_recovery
            or not len(self._scoreboard)
        ):
            self._tlp_at = None
            return
        pto = 2 * srtt
        if self._scoreboard.pipe <= self._snd_mss:
            pto += self.config.delayed_ack_s  # a lone segment's ACK may be delayed
        at = now + max(pto, _TLP_MIN_S)
        self._tlp_at = at if self._rto_at is None or at < self._rto_at else None

    def _on_tlp(self, now: float) -> None:
        """No ACK for two RTTs: resend the last segment so its SACK (or ACK) reveals any
        loss at the tail of the flight, instead of waiting for the retransmission timer."""
        sb = self._scoreboard
        last = sb.last()
        if last is None or self._in_recovery or last.sacked or last.lost:
            return
        self._tlp_sent = True
        self._tlp_probes += 1
        sb.mark_lost(last)
        if self._tracer is not None:
            self._trace_losses("tlp")
        self._rexmit_now = True
        self._rto_at = self._cap_to_user_timeout(now + self._rtt.rto)
        self._log.debug("tail_loss_probe", seq=self._wire_seq(last.start))

    def _cap_to_user_timeout(self, deadline: float) -> float:
        """Fire no later than the user timeout, so the abort is not late by a backed-off RTO."""
        ut = self.config.user_timeout_s
        since = self._oldest_unacked_since
        if ut is not None and since is not None:
            return min(deadline, since + ut)
        return deadline

    def _user_timeout_expired(self, now: float) -> bool:
        ut = self.config.user_timeout_s
        since = self._oldest_unacked_since
        return ut is not None and since is not None and now - since >= ut

    def _on_persist(self, now: float) -> None:
        if not self._window_blocked():
            return
        self._persist_probes += 1
        if self._persist_probes > self.config.max_retransmits:
            self._log.info("window_probe_timeout", probes=self._persist_probes)
            self._need_rst = True
            self._finish(CloseReason.TIMEOUT)
            return
        self._send_probe = True
        self._persist_backoff = min(self._persist_backoff + 1, 16)
        self._log.debug("window_probe", probes=self._persist_probes)

    def _on_keepalive(self, now: float) -> None:
        cfg = self.config
        if cfg.keepalive_idle_s is None or self._state not in SYNCHRONIZED:
            return
        if self._keepalive_probes == 0 and now < self._last_activity + cfg.keepalive_idle_s:
            self._keepalive_at = self._last_activity + cfg.keepalive_idle_s
            return
        if self._keepalive_probes >= cfg.keepalive_probes:
            self._log.info("keepalive_timeout", probes=self._keepalive_probes)
            self._need_rst = True
            self._finish(CloseReason.IDLE)
            return
        self._keepalive_probes += 1
        self._send_probe = True
        self._keepalive_at = now + cfg.keepalive_interval_s

    def _on_confirm(self, now: float) -> None:
        if self._state not in SYNCHRONIZED or len(self._scoreboard) or self._fin_pos is not None:
            return  # data or a FIN in flight: their retransmissions carry the ACK
        self._confirm_tries += 1
        self._ack_now = True
        self._log.debug("handshake_ack_resent", attempt=self._confirm_tries)
        if self._confirm_tries < self.config.syn_retries:
            self._confirm_at = now + self._rtt.rto * (1 << self._confirm_tries)

    def _on_idle(self, now: float) -> None:
        timeout = self.config.idle_timeout_s
        if timeout is None or self._state not in SYNCHRONIZED:
            return
        due = self._last_activity + timeout
        if now < due:
            self._idle_at = due
            return
        self._log.info("idle_timeout", idle_s=now - self._last_activity)
        self._need_rst = True
        self._finish(CloseReason.IDLE)

    # ------------------------------------------------------------------ receiving

    def receive_datagram(self, data: bytes | bytearray | memoryview, *, now: float) -> None:
        """Process one datagram; malformed ones are counted and dropped."""
        if self._tracer is not None:
            self._trace_now = now
        try:
            packet = decode(data)
        except PacketError as exc:
            self._drop(exc.reason, str(exc))
            return
        self.receive_packet(packet, now=now)

    def receive_packet(self, p: Packet, *, now: float) -> None:
        """Process one already-decoded packet (the endpoint decodes once to demultiplex)."""
        tracer = self._tracer
        if tracer is not None:
            self._trace_now = now
            self._trace_packet = p
            wnd = p.window if p.flags & _SYN else p.window << self._snd_wscale
            tracer.event(now, "datagram_received", packet_fields(p, wnd))
        st = self._state
        if st is S.CLOSED:
            self._drop(DropReason.UNEXPECTED)
            rst = reset_for(p)
            if rst is not None:
                self._pending_raw.append(rst)
        elif p.dst_cid != self.local_cid and not (p.dst_cid == 0 and p.flags & _SYN):
            self._drop(DropReason.WRONG_CONNECTION_ID)
        else:
            self._segments_received += 1
            if st is S.LISTEN:
                self._rx_listen(p, now)
            elif st is S.SYN_SENT:
                self._rx_syn_sent(p, now)
            else:
                self._rx_synchronized(p, now)
        if tracer is not None:
            self._trace_packet = None
            self._trace_cwnd()

    def _rx_listen(self, p: Packet, now: float) -> None:
        if p.flags & _RST or not p.flags & _SYN:
            self._drop(DropReason.UNEXPECTED)
            if not p.flags & _RST and p.flags & _ACK:
                self._queue_reset_for(p)
            return
        if p.flags & _ACK:
            self._drop(DropReason.UNEXPECTED)
            self._queue_reset_for(p)
            return
        if p.flags & _SYN:
            self._take_syn(p)
            self._passive = True
            self._set_state(S.SYN_RECEIVED)
            self._need_syn = True
            self._last_activity = now

    def _rx_syn_sent(self, p: Packet, now: float) -> None:
        flags = p.flags
        if flags & _ACK:
            if p.ack != self._wire_seq(1):
                if not flags & _RST:
                    self._queue_reset_for(p)
                self._drop(DropReason.OUT_OF_WINDOW)
                return
            if flags & _RST:
                self._log.info("connection_refused")
                self._finish(CloseReason.REFUSED)
                return
        elif flags & _RST:
            self._drop(DropReason.UNEXPECTED)
            return
        if not flags & _SYN:
            self._drop(DropReason.UNEXPECTED)
            return
        self._take_syn(p)
        self._last_activity = now
        if flags & _ACK:
            self._on_syn_acked(p, now)
            self._set_state(S.ESTABLISHED)
            self._events.append(ConnectionEstablished())
            self._ack_now = True
            if self.config.syn_retries:
                self._confirm_at = now + self._rtt.rto
        else:
            # Simultaneous open (RFC 9293 figure 7): answer with SYN-ACK, same ISS.
            self._set_state(S.SYN_RECEIVED)
            self._need_syn = True

    def _take_syn(self, p: Packet) -> None:
        """Learn the peer's ISN, connection id and options from its SYN."""
        cfg = self.config
        self._irs = p.seq
        self._rcv_nxt = 1
        self.peer_cid = p.src_cid
        self._snd_wl1 = 0
        peer_mss = p.mss if p.mss is not None else 536
        self._sack_ok = cfg.sack and p.sack_permitted
        self._ts_ok = cfg.timestamps and p.timestamps is not None
        if p.timestamps is not None:
            self._ts_recent = p.timestamps[0]
        self._wscale_ok = p.wscale is not None
        if p.wscale is not None:
            self._snd_wscale = p.wscale
            self._rcv_wscale = self._wscale_for(cfg.recv_buffer_bytes)
        else:
            self._snd_wscale = self._rcv_wscale = 0
        ts_cost = options_size(timestamps=True) if self._ts_ok else 0
        self._snd_mss = max(64, min(cfg.mss_bytes, peer_mss) - ts_cost)
        self._cc.mss = self._snd_mss
        self._cc.cwnd = cfg.initial_cwnd_segments * self._snd_mss
        self._snd_wnd = p.window  # SYN windows are never scaled (RFC 7323 section 2.2)

    @staticmethod
    def _wscale_for(buffer_bytes: int) -> int:
        shift = 0
        while (MAX_WINDOW_FIELD << shift) < buffer_bytes and shift < MAX_WSCALE:
            shift += 1
        return shift

    def _on_syn_acked(self, p: Packet, now: float) -> None:
        if self._snd_una == 0:
            if self._syn_retries == 0:
                self._rtt.on_sample(now - self._syn_sent_at)
                if self._tracer is not None:
                    self._trace_rtt()
            self._snd_una = 1
            self._rtt.reset_backoff()
            self._rto_at = None
            self._need_syn = False
            if self._tracer is not None:
                self._lost_by.pop(0, None)  # the SYN arrived: no retransmission is due
        if p.flags & _SYN:
            self._update_window(p, 0, 1)

    def _rx_synchronized(self, p: Packet, now: float) -> None:
        flags = p.flags
        st = self._state
        seg_pos = self._rcv_nxt + seq_diff(p.seq, self._wire_ack(self._rcv_nxt))
        payload = p.payload
        seg_len = len(payload) + (1 if flags & _FIN else 0)
        wnd = self._rcv_window()

        # SYN_RECEIVED: the retransmitted SYN of a peer whose SYN-ACK we sent is not an error.
        if flags & _SYN:
            if st is S.SYN_RECEIVED and p.seq == self._irs and not flags & _ACK:
                self._need_syn = True
                return
            if not (flags & _ACK and st is S.SYN_RECEIVED):
                # RFC 5961 section 4: a SYN in a synchronized state draws a challenge ACK.
                self._challenge(now, DropReason.UNEXPECTED)
                return
            # A SYN-ACK during simultaneous open: its SYN occupies position 0, already taken.
            if p.seq != self._irs:
                self._drop(DropReason.OUT_OF_WINDOW)
                return
            seg_pos = 1

        # Acceptability (RFC 9293 section 3.10.7.4).
        if seg_len == 0:
            ok = seg_pos == self._rcv_nxt if wnd == 0 else 0 <= seg_pos - self._rcv_nxt < wnd
        elif wnd == 0:
            ok = False
        else:
            end = seg_pos + seg_len - 1
            ok = (
                (0 <= seg_pos - self._rcv_nxt < wnd)
                or (0 <= end - self._rcv_nxt < wnd)
                or seg_pos <= self._rcv_nxt <= end  # covers the whole window: keep what fits
            )
        if flags & _RST:
            self._rx_rst(seg_pos, ok or (seg_len == 0 and seg_pos == self._rcv_nxt), wnd, now)
            return
        if not ok:
            if flags & _ACK and wnd == 0 and seg_pos == self._rcv_nxt:
                self._rx_ack(p, seg_pos, now)
            if st is S.TIME_WAIT and flags & _FIN:
                # The peer did not get our last ACK: ACK again, restart 2MSL (RFC 9293 3.10.7.4).
                self._time_wait_at = now + 2 * self.config.msl_s
            if seg_len:
                # A retransmission of data we already have: its ACK is how the peer learns.
                if payload and seg_pos + len(payload) <= self._rcv_nxt:
                    self._dup_segments += 1
                self._ack_now = True
                self._drop(DropReason.OUT_OF_WINDOW)
            else:
                self._challenge(now, DropReason.OUT_OF_WINDOW)
            return
        if not flags & _ACK:
            self._drop(DropReason.UNEXPECTED)
            return
        self._last_activity = now
        self._keepalive_probes = 0
        self._confirm_at = None  # the peer is synchronized: it sent an acceptable segment
        if p.timestamps is not None and self._ts_ok and seg_pos <= self._rcv_nxt:
            self._ts_recent = p.timestamps[0]
        if not self._rx_ack(p, seg_pos, now):
            return
        if self._state is S.CLOSED:
            return
        if payload or flags & _FIN:
            self._rx_data(seg_pos, payload, bool(flags & _FIN), now)

    def _rx_rst(self, seg_pos: int, acceptable: bool, wnd: int, now: float) -> None:
        # RFC 5961 section 3.2: only an exact match resets; elsewhere in the window we challenge.
        if self._state is S.TIME_WAIT:
            # RFC 1337: an RST must not cut TIME_WAIT short; the close was reported.
            self._drop(DropReason.UNEXPECTED)
            return
        if seg_pos == self._rcv_nxt:
            self._log.info("connection_reset", state=self._state.value)
            self._finish(CloseReason.RESET)
        elif acceptable or 0 <= seg_pos - self._rcv_nxt < max(wnd, 1):
            self._challenge(now, DropReason.OUT_OF_WINDOW)
        else:
            self._drop(DropReason.OUT_OF_WINDOW)

    def _rx_ack(self, p: Packet, seg_pos: int, now: float) -> bool:
        """Process the acknowledgement field; False when the segment must be dropped."""
        st = self._state
        ack_pos = self._snd_una + seq_diff(p.ack, self._wire_seq(self._snd_una))
        if st is S.SYN_RECEIVED:
            if not 0 < ack_pos <= self._snd_max:
                self._queue_reset_for(p)
                self._drop(DropReason.OUT_OF_WINDOW)
                return False
            self._on_syn_acked(p, now)
            self._set_state(S.FIN_WAIT_1 if self._fin_pos is not None else S.ESTABLISHED)
            self._events.append(ConnectionEstablished())
            if p.flags & _SYN:
                self._ack_now = True
        # RFC 5961 section 5.2: ACKs of data never sent, or far too old, are dropped.
        if ack_pos > self._snd_max or ack_pos < self._snd_una - max(self._max_snd_wnd, 1 << 16):
            self._challenge(now, DropReason.OUT_OF_WINDOW)
            return False

        if self._sack_ok and p.sack_blocks:
            self._rx_sack(p.sack_blocks)

        if ack_pos > self._snd_una:
            self._on_new_ack(ack_pos, now)
        elif (
            ack_pos == self._snd_una
            and not p.payload
            and not p.flags & (_FIN | _SYN)
            and len(self._scoreboard)
            and (p.window << self._snd_wscale) == self._snd_wnd
        ):
            self._on_dupack(now, sacked=bool(p.sack_blocks and self._sack_ok))
        elif self._sack_ok and p.sack_blocks and len(self._scoreboard):
            self._maybe_enter_recovery(now)

        self._update_window(p, seg_pos, ack_pos)
        if self._fin_pos is not None and ack_pos > self._fin_pos:
            self._on_fin_acked(now)
        return True

    def _rx_sack(self, blocks: tuple[tuple[int, int], ...]) -> None:
        una_wire = self._wire_seq(self._snd_una)
        sb = self._scoreboard
        for left, right in blocks:
            lp = self._snd_una + seq_diff(left, una_wire)
            rp = self._snd_una + seq_diff(right, una_wire)
            if self._snd_una <= lp < rp <= self._snd_max:
                sb.on_sack(lp, rp)

    def _on_new_ack(self, ack_pos: int, now: float) -> None:
        sb = self._scoreboard
        acked_bytes = ack_pos - self._snd_una
        acked = sb.ack_to(ack_pos)
        # Karn's rule: no sample when any acknowledged segment was retransmitted (the ACK may
        # answer the retransmission), nor from a segment already SACKed (its ACK was held up by
        # a hole before it); otherwise the newest segment gives the RTT.
        if acked and not acked[-1].sacked and all(seg.retx == 0 for seg in acked):
            self._rtt.on_sample(now - acked[-1].sent_at)
            if self._tracer is not None:
                self._trace_rtt()
        self._snd_una = ack_pos
        data_end = self._sndbuf.end
        self._sndbuf.release_to(min(ack_pos, data_end))
        self._dupacks = 0
        self._timeouts_in_a_row = 0
        self._rtt.reset_backoff()
        if self._in_recovery:
            if ack_pos >= self._recover:
                self._in_recovery = False
                self._dupack_credit = 0
                self._cc.on_recovery_exit(now=now)
            else:
                # Partial ACK (RFC 6582 section 3.2 step 5): the next hole is lost too.
                self._dupack_credit = max(0, self._dupack_credit - acked_bytes)
                first = sb.first()
                if first is not None and first.retx == 0:
                    sb.mark_lost(first)
                    if self._tracer is not None:
                        self._trace_losses("sack" if self._sack_ok else "dupack")
                if self._sack_ok:
                    sb.detect_losses(self._loss_threshold(), self.config.dupack_threshold)
                    if self._tracer is not None:
                        self._trace_losses("sack")
        else:
            # Grow the window only while it limits us (RFC 7661 spirit): an application- or
            # receiver-limited sender must not build a window it never tested.
            flight_before = self._snd_max - (ack_pos - acked_bytes)
            if 2 * flight_before >= self._cc.cwnd:
                self._cc.on_ack(acked_bytes, now=now, rtt_s=self._rtt.latest_rtt)
            if self._sack_ok and len(sb):
                self._maybe_enter_recovery(now)
        self._tlp_sent = False
        if len(sb):
            self._oldest_unacked_since = now
            self._rto_at = self._cap_to_user_timeout(now + self._rtt.rto)
            self._arm_tlp(now)
        else:
            self._rto_at = self._tlp_at = None
            self._oldest_unacked_since = None
            if self._tracer is not None:
                self._lost_by.clear()

    def _loss_threshold(self) -> int:
        return (self.config.dupack_threshold - 1) * self._snd_mss + 1

    def _on_dupack(self, now: float, *, sacked: bool) -> None:
        self._dupacks += 1
        self._dupack_count += 1
        if self._in_recovery:
            if not self._sack_ok:
                self._dupack_credit += self._snd_mss
            else:
                self._scoreboard.detect_losses(self._loss_threshold(), self.config.dupack_threshold)
                if self._tracer is not None:
                    self._trace_losses("sack")
            return
        self._maybe_enter_recovery(now)

    def _maybe_enter_recovery(self, now: float) -> None:
        if self._in_recovery:
            return
        sb = self._scoreboard
        lost = (
            sb.detect_losses(self._loss_threshold(), self.config.dupack_threshold)
            if self._sack_ok
            else 0
        )
        if lost and self._tracer is not None:
            self._trace_losses("sack")
        if self._dupacks < self.config.dupack_threshold and not lost:
            return
        if self._snd_una < self._recover:
            # RFC 6582 section 3.2 step 2: still inside the window of an earlier episode.
            return
        self._in_recovery = True
        self._recover = self._snd_max
        self._fast_retx += 1
        self._cc.on_congestion_event(self._snd_max - self._snd_una, now=now)
        first = sb.first()
        if first is not None and not first.sacked and first.retx == 0:
            sb.mark_lost(first)
            if self._tracer is not None:
                self._trace_losses("sack" if lost else "dupack")
            # RFC 5681 section 3.2 step 4: the fast retransmit goes out at once.
            self._rexmit_now = True
        if not self._sack_ok:
            self._dupack_credit = self._dupacks * self._snd_mss
        self._log.debug(
            "fast_retransmit",
            snd_una=self._wire_seq(self._snd_una),
            cwnd=self._cc.cwnd,
            ssthresh=self._cc.ssthresh,
        )

    def _update_window(self, p: Packet, seg_pos: int, ack_pos: int) -> None:
        # RFC 9293 section 3.10.7.4: take the window only from the newest segment.
        if self._snd_wl1 < seg_pos or (self._snd_wl1 == seg_pos and self._snd_wl2 <= ack_pos):
            shift = 0 if p.flags & _SYN else self._snd_wscale
            wnd = p.window << shift
            if wnd and self._snd_wnd == 0:
                self._persist_at = None
                self._persist_backoff = 0
            self._snd_wnd = wnd
            self._max_snd_wnd = max(self._max_snd_wnd, wnd)
            self._snd_wl1 = seg_pos
            self._snd_wl2 = ack_pos
        if self._window_blocked():
            self._persist_probes = 0  # the peer answers: it is alive, only not reading

    def _on_fin_acked(self, now: float) -> None:
        st = self._state
        if st is S.FIN_WAIT_1:
            self._set_state(S.FIN_WAIT_2)
        elif st is S.CLOSING:
            self._enter_time_wait(now)
        elif st is S.LAST_ACK:
            self._set_state(S.CLOSED)
            self._orderly_close()
            self._clear_timers()

    def _rx_data(self, seg_pos: int, payload: bytes | memoryview, fin: bool, now: float) -> None:
        if self._state not in CAN_RECEIVE:
            # Data after the peer's FIN is a protocol error; a retransmitted FIN is re-ACKed.
            self._ack_now = True
            if self._state is S.TIME_WAIT and fin:
                self._time_wait_at = now + 2 * self.config.msl_s
            return
        rcv_nxt = self._rcv_nxt
        wnd = self._rcv_window()
        hi = rcv_nxt + wnd
        fin_new = False
        if fin:
            fin_new = self._peer_fin_pos is None
            fin_pos = seg_pos + len(payload)
            if fin_pos < hi or fin_pos == rcv_nxt:
                self._peer_fin_pos = fin_pos
        if payload:
            if seg_pos == rcv_nxt and not len(self._reasm):
                # Fast path: the next bytes in order, nothing waiting behind them.
                data = payload[: hi - seg_pos] if len(payload) > hi - seg_pos else payload
                self._deliver(bytes(data))
                self._unacked_bytes += len(data)
                if self._unacked_bytes >= self.config.ack_every_segments * self._snd_mss:
                    self._ack_now = True
            else:
                had_gap = len(self._reasm) > 0
                limit = 2 * self.config.recv_buffer_bytes
                stored = self._reasm.insert(seg_pos, payload, lo=rcv_nxt, hi=hi, limit=limit)
                if not stored and self._reasm.truesize + CHUNK_OVERHEAD_BYTES > limit:
                    self._drop(DropReason.OVER_BUFFER)
                elif not stored and not fin_new:
                    self._dup_segments += 1
                elif seg_pos > rcv_nxt:
                    self._ooo_segments += 1
                if seg_pos > rcv_nxt:
                    self._last_rcv_pos = seg_pos
                for chunk in self._reasm.pop_ready(self._rcv_nxt):
                    self._deliver(chunk)
                # Out of order, or filling a gap: ACK at once (RFC 5681 section 4.2).
                if seg_pos != rcv_nxt or had_gap:
                    self._ack_now = True
                else:
                    self._unacked_bytes += len(payload)
            if self._rcv_nxt == rcv_nxt:
                self._ack_now = True  # nothing new in order: a duplicate, ACK it
        if self._peer_fin_pos is not None and self._rcv_nxt == self._peer_fin_pos:
            self._rcv_nxt += 1
            self._ack_now = True
            self._on_fin_received(now)
        elif not self._ack_now and self._ack_at is None:
            self._ack_at = now + self.config.delayed_ack_s

    def _deliver(self, data: bytes) -> None:
        self._rcv_nxt += len(data)
        self._bytes_received += len(data)
        if self._reading_paused:
            self._rcv_buf += data
        else:
            self._events.append(DataReceived(data))

    def _on_fin_received(self, now: float) -> None:
        self._maybe_deliver_eof()  # EOF always comes before ConnectionClosed
        st = self._state
        if st in (S.ESTABLISHED, S.SYN_RECEIVED):
            self._set_state(S.CLOSE_WAIT)
        elif st is S.FIN_WAIT_1:
            if self._fin_pos is not None and self._snd_una > self._fin_pos:
                self._enter_time_wait(now)
            else:
                self._set_state(S.CLOSING)
        elif st is S.FIN_WAIT_2:
            self._enter_time_wait(now)
        self._maybe_deliver_eof()

    def _maybe_deliver_eof(self) -> None:
        if (
            not self._eof_delivered
            and not self._rcv_buf
            and self._peer_fin_pos is not None
            and self._rcv_nxt > self._peer_fin_pos
        ):
            self._eof_delivered = True
            self._events.append(EofReceived())
            if self._closed_event_pending:
                self._closed_event_pending = False
                self._events.append(ConnectionClosed(CloseReason.CLOSED))

    def _orderly_close(self) -> None:
        """Both FINs are acknowledged: report it, after the EOF if reading held that back."""
        self._close_reason = CloseReason.CLOSED
        if self._tracer is not None:
            self._tracer.event(
                self._trace_now, "connection_closed", {"reason": CloseReason.CLOSED.value}
            )
        if self._eof_delivered:
            self._events.append(ConnectionClosed(CloseReason.CLOSED))
        else:
            self._closed_event_pending = True

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(S.TIME_WAIT)
        self._orderly_close()
        self._rto_at = self._persist_at = self._keepalive_at = None
        self._scoreboard.clear()
        self._time_wait_at = now + 2 * self.config.msl_s

    # ------------------------------------------------------------------ sending

    def datagrams_to_send(self, *, now: float) -> list[bytes]:
        """Every datagram due now: control segments, retransmissions, new data, ACKs."""
        self._clock_ms = now * 1000.0
        out = self._pending_raw
        self._pending_raw = []
        if self._limit >= 0:
            self._limited_s[self._limit] += now - self._limit_since
            self._limit = _NOT_LIMITED
        if self._tracer is not None:
            self._trace_now = now
            for raw in out:  # resets answering stray packets, built as they arrived
                rst = decode(raw)
                self._tracer.event(now, "datagram_sent", packet_fields(rst, rst.window))
        st = self._state
        if self._need_rst:
            self._need_rst = False
            out.append(self._build(_RST | _ACK, self._snd_nxt, b""))
        if st is S.CLOSED or st is S.LISTEN:
            return out
        if self._need_syn:
            self._need_syn = False
            flags = _SYN | _ACK if st is S.SYN_RECEIVED else _SYN
            if self._tracer is not None and 0 in self._lost_by:
                by = self._lost_by.pop(0)
                self._tracer.event(now, "retransmit", {"seq": self._iss, "len": 0, "by": by})
            out.append(self._build(flags, 0, b"", syn=True))
            if self._syn_retries == 0:
                self._syn_sent_at = now
            self._snd_nxt = self._snd_max = max(self._snd_max, 1)
            self._rto_at = now + self._rtt.rto
            self._segments_sent += 1
            if st is S.SYN_SENT:
                return out
        if self._snd_una >= 1 and st in SYNCHRONIZED:
            self._send_data(out, now)
        if self._send_probe:
            self._send_probe = False
            # An old sequence number draws an ACK with the peer's current window.  The probe is
            # itself unacceptable to the peer, so it must not stand in for an ACK we owe.
            ack_owed = self._ack_now
            out.append(self._build(_ACK, self._snd_una - 1, b""))
            self._ack_now = ack_owed
            self._segments_sent += 1
        if self._ack_now and self._rcv_nxt:
            out.append(self._build(_ACK, self._snd_nxt, b""))
            self._segments_sent += 1
        if self._state in SYNCHRONIZED and self._state is not S.TIME_WAIT:
            self._arm_idle_timers(now)
            if self._snd_una:
                self._classify_limit(now)
        return out

    def _classify_limit(self, now: float) -> None:
        """Note what holds the sender back from now until the next send (see ConnectionStats)."""
        nxt = self._snd_nxt
        fin_pos = self._fin_pos
        sb = self._scoreboard
        if nxt < self._sndbuf.end or (fin_pos is not None and nxt == fin_pos):
            wnd_room = self._snd_una + self._snd_wnd - nxt
            cwnd_room = self._cc.cwnd + self._dupack_credit - sb.pipe
            if wnd_room <= cwnd_room and sb.next_lost(self._snd_una) is None:
                self._limit = _LIMITED_BY_RECEIVER
            else:
                self._limit = _LIMITED_BY_CONGESTION
        elif sb.next_lost(self._snd_una) is not None:
            self._limit = _LIMITED_BY_CONGESTION  # a retransmission waits for room in cwnd
        elif self._state in _APP_LIMITED_STATES and self._bytes_sent:
            self._limit = _LIMITED_BY_APPLICATION
        else:
            return
        self._limit_since = now

    def _send_data(self, out: list[bytes], now: float) -> None:
        sb = self._scoreboard
        cc = self._cc
        mss = self._snd_mss
        sent_any = False
        # Retransmissions first, within the congestion window (RFC 6675 section 5 step 4.1).
        while True:
            seg = sb.next_lost(self._snd_una)
            if seg is None:
                break
            length = seg.end - seg.start
            if (
                not self._rexmit_now
                and sb.pipe
                and sb.pipe + length > cc.cwnd + self._dupack_credit
            ):
                break
            self._rexmit_now = False
            if self._tracer is not None:
                self._trace_retransmit(seg)
            self._emit_segment(out, seg.start, seg.end)
            sb.retransmitted(seg, now)
            self._retx += 1
            self._bytes_retx += length
            sent_any = True
            self._log.debug("retransmit", seq=self._wire_seq(seg.start), len=length, cwnd=cc.cwnd)
        # New data (and the FIN) within both windows.
        data_end = self._sndbuf.end
        fin_pos = self._fin_pos
        while True:
            nxt = self._snd_nxt
            if nxt < data_end:
                wnd_room = self._snd_una + self._snd_wnd - nxt
                cwnd_room = cc.cwnd + self._dupack_credit - sb.pipe
                length = min(mss, data_end - nxt, wnd_room, cwnd_room)
                if length <= 0:
                    break
                # Sender silly-window avoidance (RFC 9293 section 3.8.6.2.1).
                if (
                    length < mss
                    and length < data_end - nxt
                    and length < self._max_snd_wnd // 2
                    and sb.pipe
                ):
                    break
                end = nxt + length
                fin = fin_pos is not None and end == fin_pos
            elif fin_pos is not None and nxt == fin_pos:
                if sb.pipe and sb.pipe >= cc.cwnd + self._dupack_credit:
                    break
                if self._snd_una + self._snd_wnd <= nxt:
                    break  # a FIN needs room in the window like data does
                end = nxt
                fin = True
            else:
                break
            seg_end = end + 1 if fin else end
            self._emit_segment(out, nxt, seg_end)
            sb.add(SentSegment(nxt, seg_end, now))
            self._bytes_sent += end - nxt
            self._snd_nxt = seg_end
            self._snd_max = max(self._snd_max, seg_end)
            sent_any = True
        if sent_any:
            if self._oldest_unacked_since is None:
                self._oldest_unacked_since = now
            if self._rto_at is None:
                self._rto_at = self._cap_to_user_timeout(now + self._rtt.rto)
            if not self._tlp_sent:
                self._arm_tlp(now)
        # Zero (or too small) window with data waiting and nothing in flight: probe it.
        if self._window_blocked():
            if self._persist_at is None:
                interval = min(self._rtt.rto * (1 << self._persist_backoff), self.config.rto_max_s)
                self._persist_at = now + interval
        else:
            self._persist_at = None

    def _window_blocked(self) -> bool:
        return (
            not len(self._scoreboard)
            and self._snd_una + self._snd_wnd <= self._snd_nxt
            and (
                self._snd_nxt < self._sndbuf.end
                or (self._fin_pos is not None and self._snd_nxt == self._fin_pos)
            )
            and self._state in SYNCHRONIZED
        )

    def _emit_segment(self, out: list[bytes], start: int, end: int) -> None:
        """Build the datagram for positions [start, end), a FIN included if ``end`` passes it."""
        fin_pos = self._fin_pos
        flags = _ACK
        start = max(start, self._snd_una)  # the peer may have taken part of it already
        data_end = end
        if fin_pos is not None and end > fin_pos:
            flags |= _FIN
            data_end = fin_pos
        payload = self._sndbuf.get(start, data_end) if data_end > start else b""
        out.append(self._build(flags, start, payload))
        self._segments_sent += 1

    def _build(self, flags: int, seq_pos: int, payload: bytes, *, syn: bool = False) -> bytes:
        cfg = self.config
        p = Packet(
            flags,
            self.local_cid,
            self.peer_cid,
            self._wire_seq(seq_pos),
            self._wire_ack(self._rcv_nxt) if flags & _ACK else 0,
            0,
            payload,
        )
        if syn:
            p.mss = cfg.mss_bytes
            p.window = min(self._rcv_window(), MAX_WINDOW_FIELD)
            self._adv_wnd = p.window
            if self._state is S.SYN_SENT:
                p.wscale = self._wscale_for(cfg.recv_buffer_bytes)
                p.sack_permitted = cfg.sack
                if cfg.timestamps:
                    p.timestamps = (self._ts_now(), 0)
            else:
                if self._wscale_ok:
                    p.wscale = self._rcv_wscale
                p.sack_permitted = self._sack_ok
                if self._ts_ok:
                    p.timestamps = (self._ts_now(), self._ts_recent)
        else:
            wnd = self._rcv_window()
            p.window = min(wnd >> self._rcv_wscale, MAX_WINDOW_FIELD)
            self._adv_wnd = p.window << self._rcv_wscale
            if self._ts_ok:
                p.timestamps = (self._ts_now(), self._ts_recent)
            if self._sack_ok and len(self._reasm) and flags & _ACK:
                p.sack_blocks = self._sack_blocks(len(payload))
        if flags & _ACK:
            self._ack_now = False
            self._ack_at = None
            self._unacked_bytes = 0
        if self._tracer is not None:
            self._tracer.event(self._trace_now, "datagram_sent", packet_fields(p, self._adv_wnd))
        return encode(p)

    def _ts_now(self) -> int:
        return int(self._clock_ms) & SEQ_MASK

    def _sack_blocks(self, payload_len: int) -> tuple[tuple[int, int], ...]:
        ranges = self._reasm.ranges()
        limit = _MAX_SACK_BLOCKS_WITH_TS if self._ts_ok else _MAX_SACK_BLOCKS
        if payload_len:
            # Options must not push a data segment past the datagram size the MSS allows
            # (RFC 9293 section 3.7.1): carry only the blocks that fit beside the payload.
            ts_cost = options_size(timestamps=True) if self._ts_ok else 0
            room = self._snd_mss + ts_cost - payload_len
            while limit and options_size(sack_blocks=limit, timestamps=self._ts_ok) > room:
                limit -= 1
        # RFC 2018 section 4: the block holding the most recent arrival goes first.
        ranges.sort(key=lambda r: not (r[0] <= self._last_rcv_pos < r[1]))
        return tuple((self._wire_ack(s), self._wire_ack(e)) for s, e in ranges[:limit])

    def _rcv_window(self) -> int:
        return max(0, self.config.recv_buffer_bytes - len(self._rcv_buf))

    def _maybe_window_update(self) -> None:
        if self._state not in CAN_RECEIVE or not self._rcv_nxt:
            return
        wnd = self._rcv_window()
        grow = wnd - self._adv_wnd
        # Receiver silly-window avoidance (RFC 9293 section 3.8.6.2.2).
        if grow >= min(self.config.recv_buffer_bytes // 2, 2 * self._snd_mss) or (
            self._adv_wnd == 0 and wnd > 0
        ):
            self._ack_now = True

    def _arm_idle_timers(self, now: float) -> None:
        cfg = self.config
        since = self._last_activity if self._last_activity else now
        if cfg.keepalive_idle_s is not None and self._keepalive_at is None:
            self._keepalive_at = since + cfg.keepalive_idle_s
        if cfg.idle_timeout_s is not None and self._idle_at is None:
            self._idle_at = since + cfg.idle_timeout_s

    def _drop(self, reason: DropReason, detail: str | None = None) -> None:
        """Count a discarded datagram by reason; it changes nothing else."""
        self._dropped += 1
        self._drops[reason] = self._drops.get(reason, 0) + 1
        self._log.debug(
            "datagram_dropped", reason=reason.value, detail=detail, state=self._state.value
        )
        if self._tracer is not None:
            fields: dict[str, object] = {"reason": reason.value}
            p = self._trace_packet
            if p is not None:  # decoded: say which datagram it was
                fields.update(flags=flags_text(p.flags), seq=p.seq, len=len(p.payload))
            self._tracer.event(self._trace_now, "datagram_dropped", fields)

    def _challenge(self, now: float, reason: DropReason) -> None:
        """Drop a suspicious segment and answer with an ACK (RFC 5961), at most one per
        ``challenge_ack_interval_s`` per connection, so a flood of forgeries draws no flood
        of ACKs (and no shared counter leaks one connection's state to another)."""
        last = self._last_challenge_at
        if last is not None and now - last < self.config.challenge_ack_interval_s:
            self._drop(DropReason.RATE_LIMITED)
            return
        self._last_challenge_at = now
        self._challenge_acks += 1
        self._ack_now = True
        self._drop(reason)

    # ------------------------------------------------------------------ helpers

    def _wire_seq(self, pos: int) -> int:
        return (self._iss + pos) & SEQ_MASK

    def _wire_ack(self, pos: int) -> int:
        return (self._irs + pos) & SEQ_MASK

    def _queue_reset_for(self, p: Packet) -> None:
        rst = reset_for(p)
        if rst is not None:
            self._pending_raw.append(rst)

    def _set_state(self, new: ConnectionState) -> None:
        old = self._state
        if old is new:
            return
        check_transition(old, new)
        self._state = new
        self._log.debug("state_changed", old=old.value, new=new.value)
        if self._tracer is not None:
            self._tracer.event(
                self._trace_now, "state_changed", {"old": old.value, "new": new.value}
            )

    def _finish(self, reason: CloseReason) -> None:
        self._set_state(S.CLOSED)
        self._close_reason = reason
        self._events.append(ConnectionClosed(reason))
        self._clear_timers()
        self._scoreboard.clear()
        if self._tracer is not None:
            self._lost_by.clear()
            self._tracer.event(self._trace_now, "connection_closed", {"reason": reason.value})

    def _clear_timers(self) -> None:
        self._rto_at = self._ack_at = self._persist_at = self._tlp_at = None
        self._time_wait_at = self._keepalive_at = self._idle_at = self._confirm_at = None

    # ------------------------------------------------------------------ tracing

    def _trace_rtt(self) -> None:
        """Report the RTT sample just taken and the estimator after it."""
        assert self._tracer is not None
        rtt = self._rtt
        self._tracer.event(
            self._trace_now,
            "rtt_sample",
            {
                "rtt": _round_s(rtt.latest_rtt),
                "srtt": _round_s(rtt.srtt),
                "rttvar": _round_s(rtt.rttvar),
                "rto": _round_s(rtt.rto),
            },
        )

    def _trace_cwnd(self) -> None:
        """Report the congestion window if it changed since last reported (once the SYN is
        acknowledged, so the first report is the initial window)."""
        assert self._tracer is not None
        cc = self._cc
        current = (cc.cwnd, cc.ssthresh)
        if self._snd_una and current != self._trace_cc and self._state is not S.CLOSED:
            self._trace_cc = current
            ssthresh = cc.ssthresh if cc.ssthresh < _SSTHRESH_UNBOUNDED else None
            self._tracer.event(
                self._trace_now,
                "cwnd_changed",
                {"cwnd": cc.cwnd, "ssthresh": ssthresh, "in_flight": self._scoreboard.pipe},
            )

    def _data_len(self, start: int, end: int) -> int:
        """Payload bytes in positions [start, end): a FIN occupies a position but no byte."""
        fin_pos = self._fin_pos
        if fin_pos is not None and end > fin_pos:
            end = fin_pos
        return max(0, end - start)

    def _trace_losses(self, by: str) -> None:
        """Report the segments the scoreboard has just declared lost, and remember why."""
        assert self._tracer is not None
        log = self._scoreboard.lost_log
        if not log:
            return
        for seg in log:
            self._lost_by[seg.start] = by
            self._tracer.event(
                self._trace_now,
                "loss_detected",
                {
                    "seq": self._wire_seq(seg.start),
                    "len": self._data_len(seg.start, seg.end),
                    "by": by,
                },
            )
        log.clear()

    def _trace_retransmit(self, seg: SentSegment) -> None:
        """Report a segment about to be sent again, with what declared it lost."""
        assert self._tracer is not None
        start = max(seg.start, self._snd_una)
        self._tracer.event(
            self._trace_now,
            "retransmit",
            {
                "seq": self._wire_seq(start),
                "len": self._data_len(start, seg.end),
                "by": self._lost_by.pop(seg.start, "rto"),
            },
        )
