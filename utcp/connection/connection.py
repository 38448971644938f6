"""The sans-I/O connection: the orchestrator of its parts, and the one place that changes the
RFC 9293 state or ends the connection.

Inputs: ``connect``/``listen``, ``receive_datagram``, ``send``, ``close``, ``orphan``,
``abort``, ``handle_timer``.  Outputs: ``datagrams_to_send``, ``get_timer`` and
``next_event``.  Internally all sequence numbers are unbounded stream positions (0 is the
SYN); they are converted to 32-bit wire numbers only when a packet is built or parsed.

The parts own their state and never see this object (README, "Design"): ``SendSide`` and
``ReceiveSide`` (positions, buffers, windows, ACK scheduling), ``Negotiated`` (the options of
the handshake), ``LossRecovery`` (scoreboard, RTT, congestion control, recovery, TLP),
``Sender``, ``Segments`` and ``Transmit`` (what goes out, how it is encoded, in what order),
``HeaderPrediction`` (the fast receive path), ``Liveness`` (keepalive, idle timeout),
``TimerHandlers`` (RTO, persist), ``Teardown`` (TIME_WAIT, an orphan's FIN_WAIT_2),
``Control`` (control segments owed), ``Deadlines``, ``Counters`` and ``TracePoints``.  They
report back by return values; the state transitions, the close sequence and the events live
here, as do the receive path's checks that decide them.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Final

from ..config import Config, given
from ..events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DropReason,
    EofReceived,
    Event,
    FinAcknowledged,
)
from ..log import get_logger
from ..packet import HEADER_SIZE, Flag, Packet, PacketError, decode
from ..pmtud import Pmtud, PmtudState
from ..seqnum import SEQ_MASK
from ..state import (
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
from ..stateless import new_connection_id, new_isn, reset_for
from ..trace import Tracer, flags_text, packet_fields
from .control import Control
from .counters import Counters
from .deadlines import (
    ACK,
    CONFIRM,
    FIN_WAIT_2_TIMER,
    IDLE,
    KEEPALIVE,
    PERSIST,
    REORDER,
    RTO,
    TIME_WAIT_TIMER,
    TIMER_COUNT,
    TLP,
    TRACE_NAMES,
    Deadlines,
)
from .handshake import take_syn
from .liveness import UNREACHABLE_CONFIRMED, UNREACHABLE_NOTED, Liveness
from .loss import LossRecovery
from .options import Negotiated
from .pacer import Pacer
from .prediction import HeaderPrediction
from .receive_side import TAKE_FIN, TAKE_OVER_BUFFER, ReceiveSide
from .segments import Segments
from .send_side import SendSide
from .sender import Sender
from .stats import ConnectionStats, SenderLimits, snapshot
from .teardown import Teardown
from .timers import TimerHandlers
from .tracepoints import TracePoints
from .transmit import Transmit

__all__ = ["Connection", "ConnectionStats", "new_connection_id", "new_isn", "reset_for"]

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_SYN: Final = int(Flag.SYN)
_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)

# Flights of data send_buffer_goal keeps written: one in flight, one SACKed behind a hole at
# SND.UNA during a recovery episode, one sent meanwhile.
SEND_BUFFER_FLIGHTS: Final = 3


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
        self.config = cfg = given(config)
        self.local_cid = new_connection_id() if local_cid is None else local_cid
        self._state = CLOSED
        self._log = log = get_logger(cid=f"{self.local_cid:08x}")
        self._events: deque[Event] = deque()
        self._close_reason: CloseReason | None = None
        self._closed_event_pending = False  # the orderly close waits for the EOF to be read
        self.path_response: int | None = None  # the peer's echo of a path challenge, unread
        self._fast = cfg.fast_paths

        # The parts, each given the others it needs (never this object).
        self._trace = trace = TracePoints()
        self._dl = dl = Deadlines()
        self._count = count = Counters()
        self._control = control = Control()
        self._opts = opts = Negotiated(cfg)
        self._snd = snd = SendSide(
            iss=new_isn() if isn is None else isn & SEQ_MASK, mss=cfg.mss_bytes
        )
        self._rcv = rcv = ReceiveSide(cfg, events=self._events, counters=count, deadlines=dl)
        self._cwnd_high = 0  # the largest congestion window send_buffer_goal has seen
        self._loss = loss = LossRecovery(
            cfg, snd=snd, opts=opts, deadlines=dl, counters=count, trace=trace, log=log
        )
        # Path MTU discovery (utcp/pmtud.py): on when both SYNs offered it.
        self._pmtud = pmtud = (
            Pmtud(base_bytes=cfg.base_datagram_bytes, log=log, on_state=self._pmtud_state)
            if cfg.pmtud
            else None
        )
        self._seg = seg = Segments(
            cfg,
            local_cid=self.local_cid,
            snd=snd,
            rcv=rcv,
            opts=opts,
            counters=count,
            trace=trace,
        )
        self._pacer = pacer = Pacer(enabled=cfg.pacing != "off", default_rate=cfg.pacing == "on")
        self._sender = sender = Sender(
            cfg,
            snd=snd,
            rcv=rcv,
            opts=opts,
            loss=loss,
            segments=seg,
            deadlines=dl,
            counters=count,
            trace=trace,
            pmtud=pmtud,
            pacer=pacer,
            log=log,
        )
        self._timers = TimerHandlers(
            cfg,
            snd=snd,
            opts=opts,
            loss=loss,
            sender=sender,
            control=control,
            deadlines=dl,
            counters=count,
            trace=trace,
            pmtud=pmtud,
            log=log,
        )
        self._live = live = Liveness(
            cfg,
            snd=snd,
            rcv=rcv,
            loss=loss,
            control=control,
            deadlines=dl,
            counters=count,
            log=log,
        )
        self._limits = limits = SenderLimits()
        self._teardown = Teardown(
            cfg, rcv=rcv, loss=loss, control=control, deadlines=dl, counters=count, log=log
        )
        self._prediction = HeaderPrediction(
            snd=snd, rcv=rcv, opts=opts, loss=loss, sender=sender, liveness=live
        )
        self._transmit = Transmit(
            cfg,
            snd=snd,
            rcv=rcv,
            opts=opts,
            loss=loss,
            segments=seg,
            sender=sender,
            control=control,
            liveness=live,
            limits=limits,
            deadlines=dl,
            counters=count,
            trace=trace,
            pmtud=pmtud,
        )
        if tracer is not None:
            self.set_tracer(tracer)

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> ConnectionState:
        """The RFC 9293 state."""
        return self._state

    @property
    def peer_cid(self) -> int:
        """The peer's connection id (0 until its SYN arrived)."""
        return self._seg.peer_cid

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._close_reason

    @property
    def is_finished(self) -> bool:
        """True once the connection is CLOSED after having been used: it can be forgotten."""
        return self._state is CLOSED and self._close_reason is not None

    @property
    def rto_s(self) -> float:
        """The retransmission timeout now (``stats.rto_s`` without building the stats)."""
        return self._loss.rtt.rto

    @property
    def srtt_s(self) -> float | None:
        """The smoothed RTT now, None before the first sample (``stats.srtt_s``)."""
        return self._loss.rtt.srtt

    @property
    def base_rto_s(self) -> float:
        """The retransmission timeout without backoff (``RttEstimator.base_rto``)."""
        return self._loss.rtt.base_rto

    @property
    def last_heard(self) -> float:
        """When the peer was last heard from (an acceptable segment), or ``connect()`` was
        called: the start of the silence an idle or retransmission timeout reports."""
        return self._live.last_activity

    @property
    def unacknowledged_since(self) -> float | None:
        """Since when data has been outstanding without an ACK of new data (None when none
        is outstanding): with ``last_heard``, whether a timed-out peer was silent, or
        answered while what we sent never got through."""
        return self._loss.oldest_unacked_since

    @property
    def fin_acknowledged(self) -> bool:
        """Whether our FIN, and so every byte before it, has been acknowledged."""
        return self._snd.fin_acknowledged

    @property
    def is_orphaned(self) -> bool:
        """Whether ``orphan()`` was called: the application has closed for good."""
        return self._teardown.orphaned

    @property
    def window_never_opened(self) -> bool:
        """Whether the connection timed out as an orphan whose peer answered every window
        probe but never opened its window again (not a silent peer)."""
        return self._snd.window_never_opened

    @property
    def path_too_small(self) -> bool:
        """Whether the connection timed out because no datagram of the base size (path MTU
        discovery's ERROR state) got through while the peer answered smaller ones."""
        return self._snd.path_too_small

    @property
    def send_buffer_size(self) -> int:
        """Bytes written by the application and not yet acknowledged by the peer."""
        return len(self._snd.buf)

    @property
    def send_buffer_goal(self) -> int:
        """Bytes the application should keep written and unacknowledged for the path to stay
        full: three times what may be in flight (the largest congestion window yet, or the
        peer's window when smaller).  One flight is under way; in a recovery episode a second
        waits SACKed behind the hole at SND.UNA for a round trip, and the third is what is
        sent meanwhile (Linux provisions BBR's send buffer the same way).  What a transport's
        automatic high-water mark follows (Config.send_buffer_max_bytes bounds it).

        The congestion window counts at its largest, as Linux's send buffer only grows: a
        window cut for one round trip (a recovery episode) must not drain the buffer, or the
        sender runs out of data, its delivery rate samples count as application-limited, and
        a model-based controller (BBR) cannot tell that the pipe is full."""
        cwnd = self._loss.cc.cwnd
        if cwnd > self._cwnd_high:
            self._cwnd_high = cwnd
        return SEND_BUFFER_FLIGHTS * min(self._cwnd_high, self._snd.wnd)

    @property
    def mss(self) -> int:
        """Largest payload this side puts in one segment."""
        return self._snd.mss

    @property
    def iss(self) -> int:
        """This end's initial sequence number: the ``seq`` of its SYN on the wire."""
        return self._snd.iss

    @property
    def tracer(self) -> Tracer | None:
        """The tracer receiving this connection's events, or None when tracing is off."""
        return self._trace.tracer

    def set_tracer(self, tracer: Tracer | None, *, now: float | None = None) -> None:
        """Start (or with None stop) reporting events to ``tracer``; it is not closed here.

        ``now`` stamps events raised before the next call that carries a clock (``listen``
        without ``now``, ``close``, ``abort``); later events carry their own input's ``now``.
        """
        trace = self._trace
        trace.tracer = tracer
        if now is not None:
            trace.now = now
        trace.cc_reported = None
        trace.lost_by.clear()
        self._loss.scoreboard.lost_log = [] if tracer is not None else None

    @property
    def stats(self) -> ConnectionStats:
        """A snapshot of counters and estimators."""
        return snapshot(
            state=self._state,
            count=self._count,
            snd=self._snd,
            rcv=self._rcv,
            opts=self._opts,
            loss=self._loss,
            pmtud=self._pmtud,
            limits=self._limits,
            pacing_rate=self._pacer.rate_for(self._loss.cc, self._loss.rtt.srtt),
        )

    @property
    def drops(self) -> dict[str, int]:
        """Datagrams discarded so far, by reason: ``stats.drops`` without the full snapshot."""
        return {str(k): v for k, v in self._count.drops.items()}

    # ------------------------------------------------------------------ user calls

    def connect(self, *, now: float) -> None:
        """Start an active open: send SYN and enter SYN_SENT."""
        if self._state is not CLOSED or self._close_reason is not None:
            raise RuntimeError(f"connect() needs a fresh connection, not {self._state.value}")
        if self._trace.tracer is not None:
            self._trace.now = now
        self._set_state(SYN_SENT)
        self._control.need_syn = True
        self._live.last_activity = now

    def listen(self, *, now: float | None = None) -> None:
        """Start a passive open: wait in LISTEN for a SYN (``now`` only stamps the trace)."""
        if self._state is not CLOSED or self._close_reason is not None:
            raise RuntimeError(f"listen() needs a fresh connection, not {self._state.value}")
        if now is not None:
            self._trace.now = now
        self._set_state(LISTEN)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for reliable, in-order delivery."""
        if self._state not in CAN_SEND or self._snd.fin_pos is not None:
            raise BrokenPipeError(f"cannot send in state {self._state.value} after close")
        if data:
            self._snd.buf.write(data)

    def close(self) -> None:
        """Half-close: send FIN after all queued data; receiving goes on until the peer's FIN.
        Before the handshake completes the FIN waits for it, after the data queued; with
        nothing queued, closing a connection still in SYN_SENT (or LISTEN) ends it at once."""
        st = self._state
        snd = self._snd
        if st is LISTEN or (st is SYN_SENT and not len(snd.buf)):
            self._control.need_syn = False
            self._finish(CloseReason.CLOSED)
            return
        if snd.fin_pos is not None or st not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        snd.fin_pos = snd.buf.end
        if st is SYN_RECEIVED or st is SYN_SENT:
            # The FIN waits until the handshake completes (RFC 9293 section 3.10.4 for
            # SYN_RECEIVED; in SYN_SENT the data send() took would otherwise be lost with
            # an orderly close reported).
            return
        self._set_state(LAST_ACK if st is CLOSE_WAIT else FIN_WAIT_1)

    def orphan(self, *, now: float) -> None:
        """The application has closed for good (asyncio's ``transport.close()``): send FIN
        after queued data as ``close()`` does, and from now on bound what is left as the
        kernel bounds an orphaned TCP socket: FIN_WAIT_2 lasts at most
        ``fin_wait_2_timeout_s``, and FIN_WAIT_1 gives up after ``fin_retries`` unanswered
        retransmissions.  Data arriving later is the driver's to refuse (with ``abort()``).
        """
        if self._trace.tracer is not None:
            self._trace.now = now
        self.close()
        self._teardown.orphaned = True
        if self._state is FIN_WAIT_2:
            self._teardown.arm_fin_wait_2(now)

    def shorten_time_wait(self, *, now: float) -> None:
        """Cut TIME_WAIT down to two RTOs from now (at most 2 MSL): the driver is going away
        (its endpoint closing) and will not hold the socket for the full 2 MSL.  A lost final
        ACK shows as the peer's FIN retransmitted after about one RTO, still re-acknowledged
        within that time, which restarts the shortened wait."""
        self._teardown.shorten(now, self._state is TIME_WAIT)

    def receive_unreachable(self, quoted: Packet, *, now: float) -> bool:
        """An ICMP port unreachable (or another hard error) quoting ``quoted``, the header of
        a datagram sent to this connection's peer address; True if it is taken as ours.

        The quote must name both connection ids (RFC 5927 section 4.1).  A connect
        (SYN_SENT) is refused at once; a half-open passive connection ends at once; a
        synchronized one ends once ``Liveness.on_unreachable`` has confirmed the error.
        """
        if self._trace.tracer is not None:
            self._trace.now = now
        st = self._state
        snd = self._snd
        live = self._live
        if quoted.src_cid != self.local_cid or st is CLOSED or st is LISTEN or st is TIME_WAIT:
            return False
        if st is SYN_SENT or st is SYN_RECEIVED:
            if not quoted.flags & _SYN or quoted.seq != snd.iss:
                return False
            if st is SYN_RECEIVED and quoted.dst_cid != self.peer_cid:
                return False
            self._count.icmp_errors += 1
            self._log.info("port_unreachable", state=st.value)
            self._control.need_syn = False
            self._finish(CloseReason.REFUSED if st is SYN_SENT else CloseReason.UNREACHABLE)
            return True
        if quoted.dst_cid != self.peer_cid:
            return False
        verdict = live.on_unreachable(quoted.seq, now)
        if verdict != UNREACHABLE_CONFIRMED:
            return verdict == UNREACHABLE_NOTED
        self._log.info("port_unreachable", state=st.value, errors=self._count.icmp_errors)
        if self._only_fin_unacked():
            # Both sides closed and every byte arrived; only our FIN's ACK is missing and the
            # peer is gone (it left TIME_WAIT, or its process exited): the close is done.
            self._close_acknowledged()
            return True
        self._finish(CloseReason.UNREACHABLE)
        return True

    def path_challenge(self, token: int) -> bytes | None:
        """A datagram asking the peer to echo ``token`` (a pure ACK carrying PATH_CHALLENGE),
        which the endpoint sends to an address it is validating; None unless synchronized.
        TIME_WAIT included: the peer's FIN may come from a new address (its NAT rebound while
        it was closing), and our ACK of it must reach it there (the challenge carries it), or
        the peer's close ends in a reset."""
        if self._state not in SYNCHRONIZED:
            return None
        self._count.segments_sent += 1
        return self._seg.build(_ACK, self._snd.nxt, b"", path_challenge=token)

    def is_news(self, p: Packet) -> bool:
        """Whether ``p`` would tell this synchronized connection something new: data or a FIN
        beyond RCV.NXT within the window, or an ACK beyond SND.UNA of data sent.  A copy of an
        old datagram replayed later tells nothing new (the endpoint lets only news start a
        path validation while the peer is heard), nor do a keepalive probe, whose copies are
        all alike, and an echo of a path challenge, which means something only from the
        address challenged."""
        st = self._state
        if (st not in SYNCHRONIZED and st is not SYN_RECEIVED) or st is TIME_WAIT or p.flags & _RST:
            return False
        rcv = self._rcv
        snd = self._snd
        seg_pos = rcv.position(p.seq)
        end = seg_pos + len(p.payload) + (1 if p.flags & _FIN else 0)
        if end > rcv.nxt and seg_pos <= rcv.nxt + max(rcv.window(), 1):
            return True
        if not p.flags & _ACK:
            return False
        ack_pos = snd.position(p.ack)
        return snd.una < ack_pos <= snd.max

    def plausibly_from_peer(self, p: Packet) -> bool:
        """Whether ``p``, though not news, looks like this synchronized connection's peer's
        own: an ACK within what we sent (RFC 5961 section 5.2) and a sequence number within
        a window of RCV.NXT, which an off-path attacker cannot guess.  From another address
        than the peer's, a hint of where the peer went, should its own address turn out to be
        unreachable."""
        st = self._state
        if st not in SYNCHRONIZED or st is TIME_WAIT or p.flags & _RST or not p.flags & _ACK:
            return False
        rcv = self._rcv
        span = max(rcv.window(), 1 << 16)
        if not rcv.nxt - span <= rcv.position(p.seq) <= rcv.nxt + span:
            return False
        return self._ack_plausible(self._snd.position(p.ack))

    def probe_path(self) -> None:
        """Send a probe (a bare ACK, SEQ = SND.UNA - 1) with the next datagrams, carrying a
        fresh PATH_CHALLENGE token: after the connection moved to a new local socket the peer
        takes it as news (a token it has not seen; copies of the probe repeat it) and
        validates the new address (docs/PROTOCOL.md section 4.2) even if nothing else is
        due."""
        st = self._state
        if st in SYNCHRONIZED and st is not TIME_WAIT:
            self._control.send_probe = True
            self._control.probe_token = secrets.randbits(64)

    def take_path_response(self) -> int | None:
        """The token the peer last echoed (PATH_RESPONSE), once; None if none arrived."""
        token = self.path_response
        self.path_response = None
        return token

    def path_changed(
        self,
        *,
        same_host: bool,
        peer: str | None = None,
        now: float,
        rtt_sample: float | None = None,
    ) -> None:
        """The endpoint moved the connection to a validated new peer address (``peer``, as
        text, for the trace).  Another host is another path: its RTT and congestion state
        start over (RFC 9000 section 9.4), the RTT from ``rtt_sample``, the path challenge's
        round trip, when there is one (as quinn does): without it the retransmission timer
        was the initial 1 s, and data lost with the old address (in flight when the client
        left it) waited that long, and longer with backoff.  A new port on the same host (a
        NAT rebinding) keeps them.

        Data that timed out was lost on the old address, not to congestion: the new one has
        just carried the echo, so the retransmission timer fires now, with its backoff
        reset, rather than after the backed-off interval.  (A peer that only receives speaks
        seldom, so a NAT that rebinds again before that interval ends would lose the
        retransmission too, again and again.)  The timeouts so far count for nothing towards
        giving up: they went to an address the peer had left, and it has just answered from
        its new one.  (Counted, the resend of a FIN that had timed out ``fin_retries`` times
        gave the connection up just as the peer could first hear it.)"""
        self._log.info("path_changed", same_host=same_host, peer=peer)
        if self._trace.tracer is not None:
            self._trace.event("path_changed", {"peer": peer, "same_host": same_host})
        loss = self._loss
        if not same_host:
            loss.restart_path(self._snd.mss)
            if rtt_sample is not None:
                loss.on_path_rtt(rtt_sample)
        if loss.timeouts_in_a_row and self._dl.rto is not None:
            loss.timeouts_in_a_row = 0
            loss.rtt.reset_backoff()
            self._dl.rto = now

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
            self._control.need_rst = True
        self._finish(CloseReason.ABORTED)

    def pause_reading(self) -> None:
        """Stop delivering data and the EOF; data is held here and the advertised window
        shrinks.

        Data already queued as events but not yet taken goes back to the buffer too (a batch
        of segments can queue a whole window at once), with the EOF (and the orderly close)
        queued behind it, unless other events follow."""
        if self._rcv.pause():
            self._closed_event_pending = True

    def unread(self, data: bytes | memoryview) -> None:
        """Give back bytes taken from a ``DataReceived`` event but not handed on (the reader
        paused in the middle of them): they come first when reading resumes."""
        self._rcv.unread(data)

    def deliver_views(self, on: bool) -> None:
        """Deliver in-order data as read-only views of the datagrams it arrived in (the
        default is ``bytes``): for a driver that copies it into buffers of its own anyway,
        such as an asyncio ``BufferedProtocol``'s, one copy fewer.  A view keeps its datagram
        alive until it is dropped."""
        self._rcv.views = on

    def resume_reading(self) -> None:
        """Deliver held data and reopen the window, telling the peer if it grew enough.
        Nothing once the connection's end is reported: a reset, an abort or a timeout drops
        what was held (it came after ConnectionClosed)."""
        if self._close_reason is not None and not self._closed_event_pending:
            self._rcv.reading_paused = False
            self._rcv.held.clear()
            return
        self._rcv.resume()
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

    def wake_at(self, at: float) -> None:
        """Have the driver call ``handle_timer`` (and so service this connection) by ``at``,
        for its endpoint's sake: a move to a new peer address falls due then.  Nothing of
        the connection's own runs; a connection that has ended takes no deadline."""
        if self._state is CLOSED:
            return
        dl = self._dl
        if dl.wake is None or at < dl.wake:
            dl.wake = at

    def handle_timer(self, *, now: float) -> None:
        """Run every timer whose deadline has passed, in the table's order
        (``deadlines.NAMES``); a handler may move or stop the ones after it."""
        trace = self._trace
        tracer = trace.tracer
        if tracer is not None:
            trace.now = now
        dl = self._dl
        for timer in range(TIMER_COUNT):
            at = dl.at(timer)
            if at is None or now < at:
                continue
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": TRACE_NAMES[timer]})
            dl.stop(timer)
            if timer == TIME_WAIT_TIMER:
                if self._rcv.ack_now:
                    # The ACK of the peer's FIN is still owed (with ``msl_s = 0`` TIME_WAIT
                    # ends as it begins): it goes out all the same, or the peer's LAST_ACK
                    # waits for it in vain.
                    self._control.pending_raw.append(self._seg.build(_ACK, self._snd.nxt, b""))
                self._set_state(CLOSED)
                self._clear_timers()
                return
            self._end(self._on_timer(timer, now))
        pm = self._pmtud
        if pm is not None and pm.timer is not None and now >= pm.timer:
            if tracer is not None:
                tracer.event(now, "timer_fired", {"timer": "pmtud"})
            # A PMTU probe went unanswered.  Never a congestion signal: no cwnd, RTO, backoff
            # or retransmission is touched; only the search learns from it.
            pm.on_timer(
                now=now, acked_through=self._snd.una, delivered_order=self._loss.rack.xmit_tx
            )
        if tracer is not None:
            self._trace_cwnd()

    def _on_timer(self, timer: int, now: float) -> CloseReason | None:
        """Run the handler of one expired timer; the reason to end the connection, or None.
        Each handler runs only in the states (and conditions) it is for."""
        st = self._state
        if timer == RTO:
            self._dl.tlp = None
            return self._timers.on_rto(now, st, self._teardown.orphaned)
        if timer == TLP:
            self._loss.on_tlp(now)
        elif timer == REORDER:
            self._loss.on_reorder_timer(now)
        elif timer == ACK:
            self._rcv.ack_now = True
        elif st not in SYNCHRONIZED:
            pass
        elif timer == FIN_WAIT_2_TIMER:
            return self._teardown.on_fin_wait_2() if st is FIN_WAIT_2 else None
        elif timer == PERSIST:
            if self._snd.window_closed() and not len(self._loss.scoreboard):
                return self._timers.on_persist(now, self._teardown.orphaned)
        elif timer == KEEPALIVE:
            return self._live.on_keepalive(now, st in CAN_RECEIVE) if st is not TIME_WAIT else None
        elif timer == IDLE:
            return self._live.on_idle(now, only_fin_unacked=self._only_fin_unacked())
        elif timer == CONFIRM and not len(self._loss.scoreboard) and self._snd.fin_pos is None:
            self._live.on_confirm(now)
        return None

    def _end(self, reason: CloseReason | None) -> None:
        """Act on a part's verdict: nothing, the orderly close, or the end for ``reason``."""
        if reason is None:
            return
        if reason is CloseReason.CLOSED:
            self._close_acknowledged()
        else:
            self._finish(reason)

    # ------------------------------------------------------------------ receiving

    def receive_datagram(self, data: bytes | bytearray | memoryview, *, now: float) -> None:
        """Process one datagram; malformed ones are counted and dropped."""
        if self._trace.tracer is not None:
            self._trace.now = now
        try:
            packet = decode(data)
        except PacketError as exc:
            self._drop(exc.reason, str(exc))
            return
        self.receive_packet(packet, now=now)

    def receive_packet(self, p: Packet, *, now: float, segments: int = 1) -> None:
        """Process one already-decoded packet (the endpoint decodes once to demultiplex);
        ``segments`` says how many received segments it stands for (utcp.coalesce)."""
        trace = self._trace
        tracer = trace.tracer
        if (
            tracer is None
            and self._state is ESTABLISHED
            and p.flags == _ACK
            and p.dst_cid == self.local_cid
            and self._fast
            and self._prediction.receive(p, now)
        ):
            self._count.segments_received += segments
            self._count.fast_received += 1
            return
        if tracer is not None:
            trace.now = now
            trace.packet = p
            wnd = p.window if p.flags & _SYN else p.window << self._snd.wscale
            tracer.event(now, "datagram_received", packet_fields(p, wnd))
        st = self._state
        if st is CLOSED:
            self._drop(DropReason.UNEXPECTED)
            rst = reset_for(p)
            if rst is not None:
                self._control.pending_raw.append(rst)
        elif p.dst_cid != self.local_cid and not (p.dst_cid == 0 and p.flags & _SYN):
            self._drop(DropReason.WRONG_CONNECTION_ID)
        else:
            self._count.segments_received += segments
            if st is LISTEN:
                self._rx_listen(p, now)
            elif st is SYN_SENT:
                self._rx_syn_sent(p, now)
            else:
                self._rx_synchronized(p, now)
        if tracer is not None:
            trace.packet = None
            self._trace_cwnd()

    def _rx_listen(self, p: Packet, now: float) -> None:
        """LISTEN: a SYN opens the connection (SYN_RECEIVED); anything else is dropped."""
        if p.flags & _RST or not p.flags & _SYN:
            self._drop(DropReason.UNEXPECTED)
            if not p.flags & _RST and p.flags & _ACK:
                self._queue_reset_for(p)
            return
        if p.flags & _ACK:
            self._drop(DropReason.UNEXPECTED)
            self._queue_reset_for(p)
            return
        self._take_syn(p)
        self._control.passive = True
        self._set_state(SYN_RECEIVED)
        self._control.need_syn = True
        self._live.last_activity = now

    def _rx_syn_sent(self, p: Packet, now: float) -> None:
        """SYN_SENT: a SYN-ACK for our SYN establishes, a bare SYN is a simultaneous open."""
        flags = p.flags
        if flags & _ACK:
            if p.ack != self._snd.wire_seq(1):
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
        self._live.last_activity = now
        if flags & _ACK:
            self._on_syn_acked(p, now)
            self._set_state(ESTABLISHED if self._snd.fin_pos is None else FIN_WAIT_1)
            self._events.append(ConnectionEstablished())
            self._rcv.ack_now = True
            if self.config.syn_retries:
                self._dl.confirm = now + self._loss.rtt.rto
        else:
            # Simultaneous open (RFC 9293 figure 7): answer with SYN-ACK, same ISS.
            self._set_state(SYN_RECEIVED)
            self._control.need_syn = True

    def _take_syn(self, p: Packet) -> None:
        """Learn the peer's ISN, connection id and options from its SYN (handshake.py)."""
        take_syn(
            p,
            self.config,
            snd=self._snd,
            rcv=self._rcv,
            opts=self._opts,
            cc=self._loss.cc,
            segments=self._seg,
        )

    def _rx_synchronized(self, p: Packet, now: float) -> None:
        """After the SYN exchange: SYN, RST and acceptability checks, then the ACK, then the
        data."""
        flags = p.flags
        st = self._state
        rcv = self._rcv
        seg_pos = rcv.position(p.seq)
        payload = p.payload
        if st is TIME_WAIT:
            if not self._teardown.rx_time_wait(p, seg_pos, now):
                self._drop(DropReason.UNEXPECTED)
            return
        seg_len = len(payload) + (1 if flags & _FIN else 0)
        wnd = rcv.window()

        # SYN_RECEIVED: the retransmitted SYN of a peer whose SYN-ACK we sent is not an error.
        if flags & _SYN:
            if st is SYN_RECEIVED and p.seq == rcv.irs and not flags & _ACK:
                self._control.need_syn = True
                return
            if not (flags & _ACK and st is SYN_RECEIVED):
                # RFC 5961 section 4: a SYN in a synchronized state draws a challenge ACK.
                self._challenge(now, DropReason.UNEXPECTED)
                return
            # A SYN-ACK during simultaneous open: its SYN occupies position 0, already taken.
            if p.seq != rcv.irs:
                self._drop(DropReason.OUT_OF_WINDOW)
                return
            seg_pos = 1

        if (
            st is SYN_RECEIVED
            and flags == _ACK
            and not payload
            and p.seq == rcv.irs
            and p.ack == self._snd.wire_seq(1)
        ):
            # A keepalive probe (SEQ = the peer's SND.UNA - 1) from a peer that is established
            # while its handshake ACK was lost: acknowledging our SYN-ACK, it proves as much as
            # that ACK would.  Take it as the handshake ACK and answer it, as a probe is
            # answered.
            seg_pos = rcv.nxt
            rcv.ack_now = True

        ok = rcv.acceptable(seg_pos, seg_len, wnd)
        if flags & _RST:
            if ok and seg_len == 0 and seg_pos - rcv.nxt == wnd:
                ok = False  # the right edge is taken for an ACK's sake, never an RST's
            self._rx_rst(seg_pos, ok or (seg_len == 0 and seg_pos == rcv.nxt), wnd, now)
            return
        if not ok:
            if flags & _ACK and wnd == 0 and seg_pos == rcv.nxt:
                self._rx_ack(p, seg_pos, now)
            if seg_len:
                # A retransmission of data we already have: its ACK is how the peer learns.
                if payload and seg_pos + len(payload) <= rcv.nxt:
                    self._count.dup_segments += 1
                    rcv.dsack = (seg_pos, seg_pos + len(payload))
                rcv.ack_now = True
                self._drop(DropReason.OUT_OF_WINDOW)
            elif (
                flags == _ACK
                and seg_pos == rcv.nxt - 1
                and self._ack_plausible(self._snd.position(p.ack))
            ):
                # A keepalive or window probe (SEQ = RCV.NXT - 1, nothing in it), its ACK
                # within what we sent: the peer is there as surely as an acceptable segment
                # shows it (a forger needs the sequence number exactly), so it counts as
                # hearing from the peer (one side's probes keep a quiet connection alive on
                # both), its acknowledgement is taken (a receiver probing a sender silent
                # mid-transfer acknowledges what arrived before the silence) and it is
                # answered: neither a drop nor a challenge.
                self._live.heard(now)
                rcv.ack_now = True
                self._rx_ack(p, seg_pos, now)
            else:
                self._challenge(now, DropReason.OUT_OF_WINDOW)
            return
        if not flags & _ACK:
            self._drop(DropReason.UNEXPECTED)
            return
        self._live.heard(now)
        self._live.challenged(p.path_challenge is not None)
        if p.timestamps is not None and self._opts.ts_ok and seg_pos <= rcv.nxt:
            self._opts.ts_recent = p.timestamps[0]
        if not self._rx_ack(p, seg_pos, now):
            return
        if self._state is CLOSED:
            return
        if p.path_challenge is not None:
            self._control.path_response = p.path_challenge  # echoed on the next pure ACK
        if p.path_response is not None:
            self.path_response = p.path_response
        if payload or flags & _FIN:
            self._rx_data(seg_pos, payload, bool(flags & _FIN), now)
        elif p.probe is not None or p.probe_ack is not None:
            self._rx_pmtud(p, now)

    def _rx_rst(self, seg_pos: int, acceptable: bool, wnd: int, now: float) -> None:
        """An RST: RFC 5961 section 3.2, only an exact match resets; elsewhere in the window
        it draws a challenge ACK.  (TIME_WAIT never gets here: it drops an RST, RFC 1337.)"""
        nxt = self._rcv.nxt
        if seg_pos == nxt:
            self._log.info("connection_reset", state=self._state.value)
            self._finish(CloseReason.RESET)
        elif acceptable or 0 <= seg_pos - nxt < max(wnd, 1):
            self._challenge(now, DropReason.OUT_OF_WINDOW)
        else:
            self._drop(DropReason.OUT_OF_WINDOW)

    def _rx_ack(self, p: Packet, seg_pos: int, now: float) -> bool:
        """Process the acknowledgement field; False when the segment must be dropped."""
        st = self._state
        snd = self._snd
        loss = self._loss
        ack_pos = snd.position(p.ack)
        if st is SYN_RECEIVED:
            if not 0 < ack_pos <= snd.max:
                self._queue_reset_for(p)
                self._drop(DropReason.OUT_OF_WINDOW)
                return False
            self._on_syn_acked(p, now)
            self._set_state(FIN_WAIT_1 if snd.fin_pos is not None else ESTABLISHED)
            self._events.append(ConnectionEstablished())
            if p.flags & _SYN:
                self._rcv.ack_now = True
        if not self._ack_plausible(ack_pos):
            self._challenge(now, DropReason.OUT_OF_WINDOW)
            return False
        loss.on_ack(p, ack_pos, now)
        self._update_window(p, seg_pos, ack_pos)
        fin_pos = snd.fin_pos
        if fin_pos is not None and ack_pos > fin_pos:
            self._on_fin_acked(now)
        return True

    def _ack_plausible(self, ack_pos: int) -> bool:
        """RFC 5961 section 5.2: an ACK of data never sent, or far too old, is dropped."""
        snd = self._snd
        return snd.una - max(snd.max_wnd, 1 << 16) <= ack_pos <= snd.max

    def _update_window(self, p: Packet, seg_pos: int, ack_pos: int) -> None:
        self._sender.update_window(p, seg_pos, ack_pos, self._state in SYNCHRONIZED)

    def _on_syn_acked(self, p: Packet, now: float) -> None:
        """Our SYN is acknowledged: take its RTT sample, stop its timer, learn the peer's
        window, and start path MTU discovery."""
        snd = self._snd
        control = self._control
        if snd.una == 0:
            self._loss.on_syn_acked(now, control.syn_sent_at if control.syn_retries == 0 else None)
            snd.una = 1
            control.need_syn = False
            if self._trace.tracer is not None:
                self._trace.lost_by.pop(0, None)  # the SYN arrived: no retransmission is due
            if self._opts.pmtud_ok:
                assert self._pmtud is not None
                ceiling = min(self.config.max_datagram_bytes, snd.peer_mss + HEADER_SIZE)
                self._pmtud.start(ceiling=ceiling, now=now)  # the handshake set the base MSS
        if p.flags & _SYN:
            self._update_window(p, 0, 1)

    def _on_fin_acked(self, now: float) -> None:
        """Our FIN is acknowledged: tell the driver (the application's close is done), then
        move on in the close sequence."""
        st = self._state
        if st is FIN_WAIT_1 or st is CLOSING or st is LAST_ACK:
            self._events.append(FinAcknowledged())
        if st is FIN_WAIT_1:
            self._set_state(FIN_WAIT_2)
            if self._teardown.orphaned:
                self._teardown.arm_fin_wait_2(now)
        elif st is CLOSING:
            self._enter_time_wait(now)
        elif st is LAST_ACK:
            self._set_state(CLOSED)
            self._orderly_close()
            self._clear_timers()

    def _rx_data(self, seg_pos: int, payload: bytes | memoryview, fin: bool, now: float) -> None:
        """An acceptable segment's data and FIN, in a state that takes them."""
        rcv = self._rcv
        if self._state not in CAN_RECEIVE:
            # Data after the peer's FIN is a protocol error; a retransmitted FIN is re-ACKed.
            # (TIME_WAIT never gets here: _rx_time_wait answers it.)
            rcv.ack_now = True
            return
        taken = rcv.take(seg_pos, payload, fin, now)
        if taken & TAKE_OVER_BUFFER:
            self._drop(DropReason.OVER_BUFFER)
        if taken & TAKE_FIN:
            self._on_fin_received(now)

    def _on_fin_received(self, now: float) -> None:
        """The peer's FIN arrived in order: report EOF and move on in the close sequence."""
        self._maybe_deliver_eof()  # EOF always comes before ConnectionClosed
        st = self._state
        if st in (ESTABLISHED, SYN_RECEIVED):
            self._set_state(CLOSE_WAIT)
        elif st is FIN_WAIT_1:
            if self._snd.fin_acknowledged:
                self._enter_time_wait(now)
            else:
                self._set_state(CLOSING)
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)
        self._maybe_deliver_eof()

    def _rx_pmtud(self, p: Packet, now: float) -> None:
        """An acceptable PMTU probe (answered on the next pure ACK) or answer to ours; both
        are ignored unless path MTU discovery was negotiated."""
        if not self._opts.pmtud_ok:
            return
        if p.probe is not None:
            self._control.probe_ack_id = p.probe
        pm = self._pmtud
        if p.probe_ack is not None and pm is not None and pm.on_probe_acked(p.probe_ack, now=now):
            self._sender.apply_pmtu("probe")

    def _maybe_deliver_eof(self) -> None:
        rcv = self._rcv
        if (
            not rcv.eof_delivered
            and not rcv.held
            and not rcv.reading_paused
            and rcv.fin_pos is not None
            and rcv.nxt > rcv.fin_pos
        ):
            rcv.eof_delivered = True
            self._events.append(EofReceived())
            if self._closed_event_pending:
                self._closed_event_pending = False
                self._events.append(ConnectionClosed(CloseReason.CLOSED))

    def _orderly_close(self) -> None:
        """Both FINs are acknowledged: report it, after the EOF if reading held that back."""
        self._close_reason = CloseReason.CLOSED
        if self._trace.tracer is not None:
            self._trace.event("connection_closed", {"reason": CloseReason.CLOSED.value})
        if self._rcv.eof_delivered:
            self._events.append(ConnectionClosed(CloseReason.CLOSED))
        else:
            self._closed_event_pending = True

    def _only_fin_unacked(self) -> bool:
        """Both sides have closed (LAST_ACK, CLOSING) and every byte both ways is delivered
        and acknowledged: only our FIN's ACK is missing, and a close ended now is done."""
        st = self._state
        return (st is LAST_ACK or st is CLOSING) and self._snd.data_acknowledged

    def _close_acknowledged(self) -> None:
        """Every byte both ways arrived and only our FIN's acknowledgement is missing, from a
        peer that is gone: the close is done, not failed."""
        self._set_state(CLOSED)
        self._loss.clear()
        self._clear_timers()
        self._orderly_close()

    def _enter_time_wait(self, now: float) -> None:
        """Both FINs are acknowledged and ours was the first: report the close, stop every
        timer, and only re-acknowledge a retransmitted FIN for 2 MSL."""
        self._set_state(TIME_WAIT)
        self._orderly_close()
        self._clear_timers()
        self._teardown.start_time_wait(now)

    # ------------------------------------------------------------------ sending

    def datagrams_to_send(self, *, now: float) -> list[bytes]:
        """Every datagram due now: control segments, retransmissions, new data, ACKs, and
        last a PMTU probe (``Transmit.poll``)."""
        return self._transmit.poll(now, self._state)

    def _pmtud_state(self, old: PmtudState, new: PmtudState, size: int) -> None:
        """Every PMTUD state change goes to the trace."""
        if self._trace.tracer is not None:
            self._trace.event("pmtud_state", {"old": old.value, "new": new.value, "size": size})

    def _maybe_window_update(self) -> None:
        if self._state not in CAN_RECEIVE or not self._rcv.nxt:
            return
        if self._rcv.window_grew(self._snd.mss):
            self._rcv.ack_now = True

    def _drop(self, reason: DropReason, detail: str | None = None) -> None:
        """Count a discarded datagram by reason; it changes nothing else."""
        self._count.count_drop(reason)
        self._log.debug(
            "datagram_dropped", reason=reason.value, detail=detail, state=self._state.value
        )
        trace = self._trace
        if trace.tracer is not None:
            fields: dict[str, object] = {"reason": reason.value}
            p = trace.packet
            if p is not None:  # decoded: say which datagram it was
                fields.update(flags=flags_text(p.flags), seq=p.seq, len=len(p.payload))
            trace.event("datagram_dropped", fields)

    def _challenge(self, now: float, reason: DropReason) -> None:
        """Drop a suspicious segment and answer with an ACK (RFC 5961), at most one per
        ``challenge_ack_interval_s`` per connection, so a flood of forgeries draws no flood
        of ACKs (and no shared counter leaks one connection's state to another)."""
        if not self._live.challenge_allowed(now):
            self._drop(DropReason.RATE_LIMITED)
            return
        self._count.challenge_acks += 1
        self._rcv.ack_now = True
        self._drop(reason)

    # ------------------------------------------------------------------ helpers

    def _queue_reset_for(self, p: Packet) -> None:
        rst = reset_for(p)
        if rst is not None:
            self._control.pending_raw.append(rst)

    def _set_state(self, new: ConnectionState) -> None:
        """The one place the state changes: checked against the table (utcp/state.py)."""
        old = self._state
        if old is new:
            return
        check_transition(old, new)
        self._state = new
        if new is CLOSED:
            # Reset, aborted, timed out or done: the window's growth goes back to the
            # endpoint now, not when the application lets go of the connection.
            self._rcv.release_lease()
        self._log.debug("state_changed", old=old.value, new=new.value)
        if self._trace.tracer is not None:
            self._trace.event("state_changed", {"old": old.value, "new": new.value})

    def _finish(self, reason: CloseReason) -> None:
        """End the connection for ``reason``, reported once: a connection whose orderly close
        was already reported (TIME_WAIT) only falls silent."""
        if self._close_reason is not None and not self._closed_event_pending:
            self._set_state(CLOSED)
            self._clear_timers()
            self._loss.clear()
            return
        self._closed_event_pending = False
        self._set_state(CLOSED)
        self._close_reason = reason
        self._events.append(ConnectionClosed(reason))
        self._clear_timers()
        self._loss.clear()
        trace = self._trace
        if trace.tracer is not None:
            trace.lost_by.clear()
            trace.event("connection_closed", {"reason": reason.value})

    def _clear_timers(self) -> None:
        self._dl.clear()
        self._live.confirm_unreachable = False
        if self._pmtud is not None:
            self._pmtud.stop()

    def _trace_cwnd(self) -> None:
        """Report the congestion window if it changed (once the SYN is acknowledged, so the
        first report is the initial window, and not after the end)."""
        if self._snd.una and self._state is not CLOSED:
            cc = self._loss.cc
            self._trace.cwnd(cc, self._loss.scoreboard.pipe)
            if cc.phase:
                rtt = self._loss.rtt
                self._trace.cc_state(cc, self._pacer.rate_for(cc, rtt.srtt), rtt.min_rtt)
