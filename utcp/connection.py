"""The sans-I/O connection: handshake, reliable byte stream, loss recovery, flow and congestion
control and teardown, driven by explicit inputs and a clock value passed in.

Inputs: ``connect``/``listen``, ``receive_datagram``, ``send``, ``close``, ``abort``,
``handle_timer``.  Outputs: ``datagrams_to_send``, ``get_timer`` and ``next_event``.
Internally all sequence numbers are unbounded stream positions (0 is the SYN); they are
converted to 32-bit wire numbers only when a packet is built or parsed.

This module holds the state and the inputs; the handlers below them live beside it as
functions of the connection: ``receiving`` (segments in), ``acking`` (their ACKs, SACKs and
windows), ``sending`` (segments out), ``timers`` and ``stats``.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from . import congestion
from .buffers import ReassemblyBuffer, SendBuffer
from .config import Config
from .counters import Counters
from .deadlines import Deadlines
from .events import (
    CloseReason,
    ConnectionClosed,
    DataReceived,
    DropReason,
    EofReceived,
    Event,
)
from .log import get_logger
from .packet import HEADER_SIZE, Flag, Packet, PacketError, decode, options_size
from .pmtud import Pmtud, PmtudState, probe_timeout_s
from .receiving import rx_listen, rx_predicted, rx_syn_sent, rx_synchronized
from .recovery import RttEstimator, Scoreboard, SentSegment
from .sending import build, build_probe, send_data
from .seqnum import SEQ_MASK, seq_diff
from .state import (
    CAN_RECEIVE,
    CAN_SEND,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    SYNCHRONIZED,
    TIME_WAIT,
    ConnectionState,
    check_transition,
)
from .stateless import new_connection_id, new_isn, reset_for
from .stats import (
    LIMITED_BY_APPLICATION,
    NOT_LIMITED,
    SSTHRESH_UNBOUNDED,
    ConnectionStats,
    classify_limit,
    snapshot,
)
from .timers import (
    arm_idle_timers,
    on_confirm,
    on_fin_wait_2,
    on_idle,
    on_keepalive,
    on_persist,
    on_pmtud_timer,
    on_rto,
    on_tlp,
)
from .trace import Tracer, flags_text, packet_fields

__all__ = ["Connection", "ConnectionStats", "new_connection_id", "new_isn", "reset_for"]

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_SYN: Final = int(Flag.SYN)
_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)
# States in which a PMTU probe may go out: ours is still a sending direction.
_MAY_PROBE: Final = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, LAST_ACK})


def _round_s(seconds: float | None) -> float | None:
    """Seconds to the nanosecond, so a trace shows 0.02 rather than 0.020000000000000004."""
    return None if seconds is None else round(seconds, 9)


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
        self._state = CLOSED
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
        self._peer_mss = cfg.mss_bytes  # the peer's MSS option, once its SYN arrived
        # The MSS our SYN announces: with path MTU discovery, what the largest datagram we
        # take can carry (the receive path takes any segment up to it).
        self._adv_mss = cfg.max_datagram_bytes - HEADER_SIZE if cfg.pmtud else cfg.mss_bytes
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
        # In-order bytes that draw an immediate ACK (ack_every_segments segments), set with
        # the MSS in the handshake.  Counted in base-size segments when the peer discovers
        # its path MTU: its segments then range from the base size to 64 KiB.
        self._ack_bytes = cfg.ack_every_segments * cfg.mss_bytes

        # Path MTU discovery (utcp/pmtud.py): on when both SYNs offered it.
        self._pmtud = (
            Pmtud(base_bytes=cfg.base_datagram_bytes, log=self._log, on_state=self._pmtud_state)
            if cfg.pmtud
            else None
        )
        self._pmtud_ok = False  # both ends take part: we probe, and answer the peer's probes
        self._probe_ack_id: int | None = None  # the peer's probe we owe an answer

        # Timers: absolute deadlines or None, one named table (utcp/deadlines.py).
        self._dl = Deadlines()
        self._persist_backoff = 0
        self._persist_probes = 0
        self._time_wait_s = 2 * cfg.msl_s  # how long TIME_WAIT lasts (shorten_time_wait)
        self._keepalive_probes = 0
        self._last_activity = 0.0  # when the peer was last heard from (or connect() called)
        # Full-sized segments from the peer mean it is in the middle of a transfer: silence
        # then draws one early keepalive probe (Config.keepalive_stall_s).
        self._full_seg = cfg.mss_bytes  # set from the handshake
        self._peer_mid_stream = False
        self._stall_probed_at = -1.0  # _last_activity when the stall probe went out
        # ICMP port unreachable for this connection (RFC 5927 checks passed): when the first
        # arrived since the peer was last heard, and whether a confirming probe is due.
        self._unreachable_at: float | None = None
        self._confirm_unreachable = False
        # The application has closed and reads nothing more (orphan()): FIN_WAIT_2 is bounded
        # and FIN_WAIT_1 gives up after fin_retries, as Linux treats orphaned sockets.
        self._orphaned = False
        # PMTU probing waits until more is queued than one datagram carries: a short
        # request/response connection has nothing to gain from a larger size.
        self._probe_worthy = False

        self._count = Counters()  # what ConnectionStats reports (utcp/counters.py)
        self._last_challenge_at: float | None = None
        # An active opener re-sends its handshake ACK until the peer shows it arrived: the
        # peer never re-sends a SYN-ACK on its own (anti-amplification), and a lost final
        # ACK would otherwise leave a silent client and a half-open server waiting forever.
        self._confirm_tries = 0
        self._passive = False  # opened by a peer's SYN: its address is not validated yet
        self._fast = cfg.fast_paths
        self._limit = NOT_LIMITED  # what held the sender back after the last send
        self._limit_since = 0.0
        self._limited_s = [0.0, 0.0, 0.0]  # seconds, indexed by stats._LIMITED_BY_*

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
        return self._state is CLOSED and self._close_reason is not None

    @property
    def last_heard(self) -> float:
        """When the peer was last heard from (an acceptable segment), or ``connect()`` was
        called: the start of the silence an idle or retransmission timeout reports."""
        return self._last_activity

    @property
    def fin_acknowledged(self) -> bool:
        """Whether our FIN, and so every byte before it, has been acknowledged."""
        return self._fin_pos is not None and self._snd_una > self._fin_pos

    @property
    def is_orphaned(self) -> bool:
        """Whether ``orphan()`` was called: the application has closed for good."""
        return self._orphaned

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
        return snapshot(self)

    @property
    def drops(self) -> dict[str, int]:
        """Datagrams discarded so far, by reason: ``stats.drops`` without the full snapshot."""
        return {str(k): v for k, v in self._count.drops.items()}

    # ------------------------------------------------------------------ user calls

    def connect(self, *, now: float) -> None:
        """Start an active open: send SYN and enter SYN_SENT."""
        if self._state is not CLOSED or self._close_reason is not None:
            raise RuntimeError(f"connect() needs a fresh connection, not {self._state.value}")
        if self._tracer is not None:
            self._trace_now = now
        self._set_state(SYN_SENT)
        self._need_syn = True
        self._last_activity = now

    def listen(self, *, now: float | None = None) -> None:
        """Start a passive open: wait in LISTEN for a SYN (``now`` only stamps the trace)."""
        if self._state is not CLOSED or self._close_reason is not None:
            raise RuntimeError(f"listen() needs a fresh connection, not {self._state.value}")
        if now is not None:
            self._trace_now = now
        self._set_state(LISTEN)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for reliable, in-order delivery."""
        if self._state not in CAN_SEND or self._fin_pos is not None:
            raise BrokenPipeError(f"cannot send in state {self._state.value} after close")
        if data:
            self._sndbuf.write(data)

    def close(self) -> None:
        """Half-close: send FIN after all queued data; receiving goes on until the peer's FIN."""
        st = self._state
        if st in (LISTEN, SYN_SENT):
            self._need_syn = False
            self._finish(CloseReason.CLOSED)
            return
        if self._fin_pos is not None or st not in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        self._fin_pos = self._sndbuf.end
        if st is SYN_RECEIVED:
            return  # RFC 9293 section 3.10.4: the FIN waits until the handshake completes
        self._set_state(LAST_ACK if st is CLOSE_WAIT else FIN_WAIT_1)

    def orphan(self, *, now: float) -> None:
        """The application has closed for good (asyncio's ``transport.close()``): send FIN
        after queued data as ``close()`` does, and from now on bound what is left as the
        kernel bounds an orphaned TCP socket: FIN_WAIT_2 lasts at most
        ``fin_wait_2_timeout_s``, and FIN_WAIT_1 gives up after ``fin_retries`` unanswered
        retransmissions.  Data arriving later is the driver's to refuse (with ``abort()``).
        """
        if self._tracer is not None:
            self._trace_now = now
        self.close()
        self._orphaned = True
        if self._state is FIN_WAIT_2:
            self._arm_fin_wait_2(now)

    def shorten_time_wait(self, *, now: float) -> None:
        """Cut TIME_WAIT down to two RTOs from now (at most 2 MSL): the driver is going away
        (its endpoint closing) and will not hold the socket for the full 2 MSL.  A lost final
        ACK shows as the peer's FIN retransmitted after about one RTO, still re-acknowledged
        within that time, which restarts the shortened wait."""
        short = min(2 * self.config.msl_s, 2 * max(self._rtt.rto, self.config.rto_min_s))
        self._time_wait_s = min(self._time_wait_s, short)
        if self._state is TIME_WAIT and self._dl.time_wait is not None:
            self._dl.time_wait = min(self._dl.time_wait, now + self._time_wait_s)

    def _arm_fin_wait_2(self, now: float) -> None:
        """An orphan waits in FIN_WAIT_2 at most ``fin_wait_2_timeout_s`` for the peer's FIN."""
        timeout = self.config.fin_wait_2_timeout_s
        if timeout is not None and self._dl.fin_wait_2 is None:
            self._dl.fin_wait_2 = now + timeout

    def receive_unreachable(self, quoted: Packet, *, now: float) -> bool:
        """An ICMP port unreachable (or another hard error) quoting ``quoted``, the header of
        a datagram sent to this connection's peer address; True if it is taken as ours.

        The checks of RFC 5927 section 4.1: the quote must name both connection ids and a
        sequence number between SND.UNA - 1 (a keepalive or window probe) and SND.MAX, which
        an off-path attacker cannot guess.  A connect (SYN_SENT) is refused at once; a
        half-open passive connection ends at once; a synchronized one ends when the error
        repeats at least ``rto_min_s`` after the first with nothing heard in between (a
        retransmission, or a probe sent to confirm it, met a closed port again).
        """
        if self._tracer is not None:
            self._trace_now = now
        st = self._state
        if quoted.src_cid != self.local_cid or st is CLOSED or st is LISTEN or st is TIME_WAIT:
            return False
        if st is SYN_SENT or st is SYN_RECEIVED:
            if not quoted.flags & _SYN or quoted.seq != self._iss:
                return False
            if st is SYN_RECEIVED and quoted.dst_cid != self.peer_cid:
                return False
            self._count.icmp_errors += 1
            self._log.info("port_unreachable", state=st.value)
            self._need_syn = False
            self._finish(CloseReason.REFUSED if st is SYN_SENT else CloseReason.UNREACHABLE)
            return True
        if quoted.dst_cid != self.peer_cid:
            return False
        una = self._snd_una
        pos = una + seq_diff(quoted.seq, self._wire_seq(una))
        if not una - 1 <= pos <= self._snd_max:
            return False
        self._count.icmp_errors += 1
        first = self._unreachable_at
        if first is None or first < self._last_activity:
            # The first since the peer was last heard: confirm it with one more datagram an
            # RTO from now (a retransmission does that when data is in flight).
            self._unreachable_at = now
            if not len(self._scoreboard):
                self._confirm_unreachable = True
                at = now + max(self._rtt.rto, self.config.rto_min_s)
                if self._dl.keepalive is None or at < self._dl.keepalive:
                    self._dl.keepalive = at
            return True
        if now < first + self.config.rto_min_s:
            # The same round of datagrams: wait for a repeat.  (Compared as a sum, the way
            # the confirming probe's deadline was set, so float rounding cannot miss it.)
            return True
        self._log.info("port_unreachable", state=st.value, errors=self._count.icmp_errors)
        fin_pos = self._fin_pos
        if (st is LAST_ACK or st is CLOSING) and fin_pos is not None and una >= fin_pos:
            # Both sides closed and every byte arrived; only our FIN's ACK is missing and the
            # peer is gone (it left TIME_WAIT, or its process exited): the close is done.
            self._set_state(CLOSED)
            self._scoreboard.clear()
            self._clear_timers()
            self._orderly_close()
            return True
        self._finish(CloseReason.UNREACHABLE)
        return True

    def abort(self) -> None:
        """Reset the connection: send RST and forget everything at once."""
        if self._state is CLOSED:
            return
        if self._close_reason is not None and not self._closed_event_pending:
            # The orderly close is done and reported (TIME_WAIT): only the wait is cut
            # short, with nothing sent (RFC 9293 section 3.10.5) and nothing reported again.
            self._set_state(CLOSED)
            self._clear_timers()
            return
        # An orderly close held back until the EOF is read is reported below, once, as the
        # abort (_finish).
        if self._state in SYNCHRONIZED or self._state is SYN_RECEIVED:
            self._need_rst = True
        self._finish(CloseReason.ABORTED)

    def pause_reading(self) -> None:
        """Stop delivering data; it is held here and the advertised window shrinks.

        Data already queued as events but not yet taken goes back to the buffer too (a batch
        of segments can queue a whole window at once), unless other events follow it."""
        self._reading_paused = True
        events = self._events
        if events and all(type(e) is DataReceived for e in events):
            held = b"".join(e.data for e in events if isinstance(e, DataReceived))
            events.clear()
            # Counted in the window from now on: they arrived after the last ACK was built
            # (events are taken before the answer to a batch), so its right edge stays put.
            self._rcv_buf[:0] = held

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

    @property
    def has_events(self) -> bool:
        """Whether ``next_event`` has something to give."""
        return bool(self._events)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` must be called, or None."""
        best = self._dl.earliest()
        pm = self._pmtud
        if pm is not None:
            t = pm.timer
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, *, now: float) -> None:
        """Run every timer whose deadline has passed."""
        tracer = self._tracer
        if tracer is not None:
            self._trace_now = now
        if self._dl.time_wait is not None and now >= self._dl.time_wait:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "time_wait"})
            self._dl.time_wait = None
            self._set_state(CLOSED)
            self._clear_timers()
            return
        if self._dl.rto is not None and now >= self._dl.rto:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "rto"})
            self._dl.rto = self._dl.tlp = None
            on_rto(self, now)
        if self._dl.tlp is not None and now >= self._dl.tlp:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "tlp"})
            self._dl.tlp = None
            on_tlp(self, now)
        if self._dl.fin_wait_2 is not None and now >= self._dl.fin_wait_2:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "fin_wait_2"})
            self._dl.fin_wait_2 = None
            on_fin_wait_2(self, now)
        if self._dl.persist is not None and now >= self._dl.persist:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "persist"})
            self._dl.persist = None
            on_persist(self, now)
        if self._dl.ack is not None and now >= self._dl.ack:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "delayed_ack"})
            self._dl.ack = None
            self._ack_now = True
        if self._dl.keepalive is not None and now >= self._dl.keepalive:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "keepalive"})
            self._dl.keepalive = None
            on_keepalive(self, now)
        if self._dl.idle is not None and now >= self._dl.idle:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "idle"})
            self._dl.idle = None
            on_idle(self, now)
        if self._dl.confirm is not None and now >= self._dl.confirm:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "handshake_ack"})
            self._dl.confirm = None
            on_confirm(self, now)
        pm = self._pmtud
        if pm is not None and pm.timer is not None and now >= pm.timer:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "pmtud"})
            on_pmtud_timer(self, pm, now)
        if tracer is not None:
            self._trace_cwnd()

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

    def receive_packet(self, p: Packet, *, now: float, segments: int = 1) -> None:
        """Process one already-decoded packet (the endpoint decodes once to demultiplex);
        ``segments`` says how many received segments it stands for (utcp.coalesce)."""
        tracer = self._tracer
        if (
            tracer is None
            and self._state is ESTABLISHED
            and p.flags == _ACK
            and p.dst_cid == self.local_cid
            and self._fast
            and rx_predicted(self, p, now)
        ):
            self._count.segments_received += segments
            self._count.fast_received += 1
            return
        if tracer is not None:
            self._trace_now = now
            self._trace_packet = p
            wnd = p.window if p.flags & _SYN else p.window << self._snd_wscale
            tracer.event(now, "datagram_received", packet_fields(p, wnd))
        st = self._state
        if st is CLOSED:
            self._drop(DropReason.UNEXPECTED)
            rst = reset_for(p)
            if rst is not None:
                self._pending_raw.append(rst)
        elif p.dst_cid != self.local_cid and not (p.dst_cid == 0 and p.flags & _SYN):
            self._drop(DropReason.WRONG_CONNECTION_ID)
        else:
            self._count.segments_received += segments
            if st is LISTEN:
                rx_listen(self, p, now)
            elif st is SYN_SENT:
                rx_syn_sent(self, p, now)
            else:
                rx_synchronized(self, p, now)
        if tracer is not None:
            self._trace_packet = None
            self._trace_cwnd()

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
        """Both FINs are acknowledged and ours was the first: report the close, stop every
        timer, and only re-acknowledge a retransmitted FIN for 2 MSL."""
        self._set_state(TIME_WAIT)
        self._orderly_close()
        self._clear_timers()
        self._scoreboard.clear()
        self._need_syn = self._send_probe = False
        self._probe_ack_id = None
        self._dl.time_wait = now + self._time_wait_s

    # ------------------------------------------------------------------ sending

    def datagrams_to_send(self, *, now: float) -> list[bytes]:
        """Every datagram due now: control segments, retransmissions, new data, ACKs, and
        last a PMTU probe."""
        if (
            self._limit == LIMITED_BY_APPLICATION
            and self._snd_nxt == self._sndbuf.end
            and self._fast
            and self._nothing_due()
        ):
            self._count.fast_idle += 1
            # The common case after a delivery (a request waiting for its reply): nothing to
            # send, and the sender stays limited by the application, as it was.
            self._limited_s[LIMITED_BY_APPLICATION] += now - self._limit_since
            self._limit_since = now
            return []
        self._clock_ms = now * 1000.0
        out = self._pending_raw
        self._pending_raw = []
        if self._limit >= 0:
            self._limited_s[self._limit] += now - self._limit_since
            self._limit = NOT_LIMITED
        if self._tracer is not None:
            self._trace_now = now
            for raw in out:  # resets answering stray packets, built as they arrived
                rst = decode(raw)
                self._tracer.event(now, "datagram_sent", packet_fields(rst, rst.window))
        st = self._state
        if self._need_rst:
            self._need_rst = False
            out.append(build(self, _RST | _ACK, self._snd_nxt, b""))
        if st is CLOSED or st is LISTEN:
            return out
        if self._need_syn:
            self._need_syn = False
            flags = _SYN | _ACK if st is SYN_RECEIVED else _SYN
            if self._tracer is not None and 0 in self._lost_by:
                by = self._lost_by.pop(0)
                self._tracer.event(now, "retransmit", {"seq": self._iss, "len": 0, "by": by})
            out.append(build(self, flags, 0, b"", syn=True))
            if self._syn_retries == 0:
                self._syn_sent_at = now
            self._snd_nxt = self._snd_max = max(self._snd_max, 1)
            self._dl.rto = now + self._rtt.rto
            self._count.segments_sent += 1
            if st is SYN_SENT:
                return out
        if self._snd_una >= 1 and st in SYNCHRONIZED:
            send_data(self, out, now)
        if self._probe_ack_id is not None:
            # Answer the peer's PMTU probe on a pure ACK of its own: the option would not fit
            # beside a full-sized payload, and this ACK is small enough to get through.
            out.append(build(self, _ACK, self._snd_nxt, b"", probe_ack=self._probe_ack_id))
            self._probe_ack_id = None
            self._count.segments_sent += 1
        if self._send_probe:
            self._send_probe = False
            # An old sequence number draws an ACK with the peer's current window.  The probe is
            # itself unacceptable to the peer, so it must not stand in for an ACK we owe.
            ack_owed = self._ack_now
            out.append(build(self, _ACK, self._snd_una - 1, b""))
            self._ack_now = ack_owed
            self._count.segments_sent += 1
        if self._ack_now and self._rcv_nxt:
            out.append(build(self, _ACK, self._snd_nxt, b""))
            self._count.segments_sent += 1
        pm = self._pmtud
        if not self._probe_worthy and len(self._sndbuf) > self._snd_mss:
            self._probe_worthy = True
        if pm is not None and pm.probe_due and self._may_probe():
            # Last: the probe is the datagram most likely to be dropped.
            probe = pm.next_probe(now=now, timeout_s=self._probe_timeout())
            if probe is not None:
                out.append(build_probe(self, *probe))
                self._count.segments_sent += 1
        if self._state in SYNCHRONIZED and self._state is not TIME_WAIT:
            arm_idle_timers(self, now)
            if self._snd_una:
                classify_limit(self, now)
        return out

    def _nothing_due(self) -> bool:
        """True when ``datagrams_to_send`` would send nothing and change no timer: no control
        segment or ACK owed, no data, FIN or retransmission waiting, no probe due, and the
        idle timers armed."""
        cfg = self.config
        st = self._state
        pm = self._pmtud
        return (
            (st is ESTABLISHED or st is CLOSE_WAIT)
            and not self._pending_raw
            and not (self._ack_now or self._need_rst or self._need_syn or self._send_probe)
            and self._probe_ack_id is None
            and self._snd_nxt == self._sndbuf.end
            and self._fin_pos is None
            and not self._scoreboard.has_lost
            and self._dl.persist is None
            and self._tracer is None
            and (pm is None or not pm.probe_due or not self._probe_worthy)
            and (
                self._dl.keepalive is not None
                or (
                    cfg.keepalive_idle_s is None
                    and (cfg.keepalive_stall_s is None or not self._peer_mid_stream)
                )
            )
            and (cfg.idle_timeout_s is None or self._dl.idle is not None)
        )

    def _may_probe(self) -> bool:
        """A PMTU probe may go: our FIN is not sent yet (there may be data to make bigger), and
        SND.NXT lies inside the peer's window, so the zero-length probe passes its
        acceptability test (RFC 9293 section 3.10.7.4)."""
        return (
            self._pmtud_ok
            and self._probe_worthy
            and self._state in _MAY_PROBE
            and (self._fin_pos is None or self._snd_nxt <= self._fin_pos)
            and self._snd_nxt < self._snd_una + self._snd_wnd
        )

    def _probe_timeout(self) -> float:
        rtt = self._rtt
        return probe_timeout_s(rtt.srtt, rtt.rttvar, rtt.rto)

    def _ts_cost(self) -> int:
        """Bytes of options on every segment: the padded TIMESTAMPS option when negotiated."""
        return options_size(timestamps=True) if self._ts_ok else 0

    def _apply_pmtu(self, by: str) -> None:
        """Make the send MSS (and NewReno's) follow the PLPMTU; ``sending.send_data`` cuts
        retransmissions that no longer fit.

        A smaller size scales cwnd down with it, so the window holds as many segments as
        before; a larger one leaves cwnd alone (RFC 8899 section 3: an update to the PLPMTU
        MUST NOT increase the congestion window measured in bytes).
        """
        pm = self._pmtud
        assert pm is not None
        old = self._snd_mss
        new = max(64, min(self._peer_mss, pm.size - HEADER_SIZE) - self._ts_cost())
        if new == old:
            return
        self._snd_mss = new
        cc = self._cc
        cc.mss = new
        if new < old:
            cc.cwnd = max(new, cc.cwnd * new // old)
        self._log.debug("pmtu_changed", size=pm.size, mss=new, old_mss=old, by=by)
        if self._tracer is not None:
            self._tracer.event(
                self._trace_now, "pmtu_changed", {"pmtu": pm.size, "mss": new, "by": by}
            )

    def _pmtud_state(self, old: PmtudState, new: PmtudState, size: int) -> None:
        """Every PMTUD state change goes to the trace."""
        if self._tracer is not None:
            self._tracer.event(
                self._trace_now, "pmtud_state", {"old": old.value, "new": new.value, "size": size}
            )

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

    def _drop(self, reason: DropReason, detail: str | None = None) -> None:
        """Count a discarded datagram by reason; it changes nothing else."""
        self._count.count_drop(reason)
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
        self._count.challenge_acks += 1
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
        """End the connection for ``reason``, reported once: a connection whose orderly close
        was already reported (TIME_WAIT) only falls silent."""
        if self._close_reason is not None and not self._closed_event_pending:
            self._set_state(CLOSED)
            self._clear_timers()
            self._scoreboard.clear()
            return
        self._closed_event_pending = False
        self._set_state(CLOSED)
        self._close_reason = reason
        self._events.append(ConnectionClosed(reason))
        self._clear_timers()
        self._scoreboard.clear()
        if self._tracer is not None:
            self._lost_by.clear()
            self._tracer.event(self._trace_now, "connection_closed", {"reason": reason.value})

    def _clear_timers(self) -> None:
        self._dl.clear()
        self._confirm_unreachable = False
        if self._pmtud is not None:
            self._pmtud.stop()

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
        if self._snd_una and current != self._trace_cc and self._state is not CLOSED:
            self._trace_cc = current
            ssthresh = cc.ssthresh if cc.ssthresh < SSTHRESH_UNBOUNDED else None
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
