"""What one ``datagrams_to_send`` call emits, in order: RSTs for stray packets, our RST, the
SYN (or SYN-ACK), retransmissions and new data (``Sender``), the answer to the peer's PMTU
probe, a window or keepalive probe, the ACK owed, and last a PMTU probe of our own.

Each control segment owed (``Control``) goes out once; the keepalive and idle timers are
armed after every call in a synchronized state, and the time since the previous call is
charged to what held the sender back (``SenderLimits``).  It reads the connection's state and
never changes it.
"""

from __future__ import annotations

from typing import Final, final

from ..config import Config
from ..packet import Flag, decode
from ..pmtud import Pmtud, probe_timeout_s
from ..state import (
    CAN_RECEIVE,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    LAST_ACK,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    SYNCHRONIZED,
    TIME_WAIT,
    ConnectionState,
)
from ..trace import packet_fields
from .control import Control
from .counters import Counters
from .deadlines import Deadlines
from .liveness import Liveness
from .loss import LossRecovery
from .options import Negotiated
from .receive_side import ReceiveSide
from .segments import Segments
from .send_side import SendSide
from .sender import Sender
from .stats import LIMITED_BY_APPLICATION, SenderLimits
from .tracepoints import TracePoints

__all__ = ["Transmit"]

_SYN: Final = int(Flag.SYN)
_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)
# States in which a PMTU probe may go out: ours is still a sending direction.
_MAY_PROBE: Final = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})


@final
class Transmit:
    """Assembles the datagrams due at one ``datagrams_to_send``."""

    def __init__(
        self,
        config: Config,
        *,
        snd: SendSide,
        rcv: ReceiveSide,
        opts: Negotiated,
        loss: LossRecovery,
        segments: Segments,
        sender: Sender,
        control: Control,
        liveness: Liveness,
        limits: SenderLimits,
        deadlines: Deadlines,
        counters: Counters,
        trace: TracePoints,
        pmtud: Pmtud | None,
    ) -> None:
        # PMTU probing waits until more is queued than one datagram carries: a short
        # request/response connection has nothing to gain from a larger size.
        self.probe_worthy = False
        self._cfg = config
        self._fast = config.fast_paths
        self._snd = snd
        self._rcv = rcv
        self._opts = opts
        self._loss = loss
        self._seg = segments
        self._sender = sender
        self._control = control
        self._live = liveness
        self._limits = limits
        self._dl = deadlines
        self._count = counters
        self._trace = trace
        self._pmtud = pmtud

    def poll(self, now: float, st: ConnectionState) -> list[bytes]:
        """Every datagram due now in state ``st``."""
        snd = self._snd
        if (
            self._limits.limit == LIMITED_BY_APPLICATION
            and snd.nxt == snd.buf.end
            and self._fast
            and self._nothing_due(st)
        ):
            self._count.fast_idle += 1
            # The common case after a delivery (a request waiting for its reply): nothing to
            # send, and the sender stays limited by the application, as it was.
            self._limits.still_application(now)
            return []
        self._opts.clock_ms = now * 1000.0
        control = self._control
        seg = self._seg
        count = self._count
        out = control.take_raw()
        self._limits.charge(now)
        trace = self._trace
        if trace.tracer is not None:
            trace.now = now
            for raw in out:  # resets answering stray packets, built as they arrived
                rst = decode(raw)
                trace.event("datagram_sent", packet_fields(rst, rst.window))
        if control.need_rst:
            control.need_rst = False
            out.append(seg.build(_RST | _ACK, snd.nxt, b""))
        if st is CLOSED or st is LISTEN:
            return out
        if control.need_syn:
            control.need_syn = False
            flags = _SYN | _ACK if st is SYN_RECEIVED else _SYN
            if trace.tracer is not None and 0 in trace.lost_by:
                by = trace.lost_by.pop(0)
                trace.event("retransmit", {"seq": snd.iss, "len": 0, "by": by})
            out.append(seg.build_syn(flags, active=st is SYN_SENT))
            if control.syn_retries == 0:
                control.syn_sent_at = now
            snd.nxt = snd.max = max(snd.max, 1)
            self._dl.rto = now + self._loss.rtt.rto
            count.segments_sent += 1
            if st is SYN_SENT:
                return out
        if snd.una >= 1 and st in SYNCHRONIZED:
            self._sender.send_data(out, now)
        if control.probe_ack_id is not None:
            # Answer the peer's PMTU probe on a pure ACK of its own: the option would not fit
            # beside a full-sized payload, and this ACK is small enough to get through.
            out.append(seg.build(_ACK, snd.nxt, b"", probe_ack=control.probe_ack_id))
            control.probe_ack_id = None
            count.segments_sent += 1
        if control.path_response is not None:
            # Echo the peer's path challenge at once, on a pure ACK (from wherever the peer
            # now is: the endpoint sends to the address it knows, the challenger's own).
            out.append(seg.build(_ACK, snd.nxt, b"", path_response=control.path_response))
            control.path_response = None
            count.segments_sent += 1
        rcv = self._rcv
        if control.send_probe:
            control.send_probe = False
            # An old sequence number draws an ACK with the peer's current window.  The probe
            # is itself unacceptable to the peer, so it must not stand in for an ACK we owe.
            ack_owed, unacked, ack_at = rcv.ack_now, rcv.unacked_bytes, self._dl.ack
            token = control.probe_token
            control.probe_token = None
            out.append(seg.build(_ACK, snd.una - 1, b"", path_challenge=token))
            rcv.ack_now, rcv.unacked_bytes, self._dl.ack = ack_owed, unacked, ack_at
            count.segments_sent += 1
        if rcv.ack_now and rcv.nxt:
            out.append(seg.build(_ACK, snd.nxt, b""))
            count.segments_sent += 1
        pm = self._pmtud
        if not self.probe_worthy and len(snd.buf) > snd.mss:
            self.probe_worthy = True
        if pm is not None and pm.probe_due and self._may_probe(st):
            # Last: the probe is the datagram most likely to be dropped.
            rtt = self._loss.rtt
            timeout_s = probe_timeout_s(rtt.srtt, rtt.rttvar, rtt.rto)
            probe = pm.next_probe(
                now=now,
                timeout_s=timeout_s,
                sent_after=snd.nxt,
                order=self._loss.scoreboard.last_tx,
            )
            if probe is not None:
                out.append(seg.build_probe(*probe))
                count.segments_sent += 1
        if st in SYNCHRONIZED and st is not TIME_WAIT:
            self._live.arm(now, st in CAN_RECEIVE)
            if snd.una:
                self._limits.classify(
                    now, snd=snd, loss=self._loss, state=st, bytes_sent=count.bytes_sent
                )
        return out

    def _nothing_due(self, st: ConnectionState) -> bool:
        """True when ``poll`` would send nothing and change no timer: no control segment or
        ACK owed, no data, FIN or retransmission waiting, no probe due, and the idle timers
        armed."""
        cfg = self._cfg
        pm = self._pmtud
        control = self._control
        dl = self._dl
        snd = self._snd
        return (
            (st is ESTABLISHED or st is CLOSE_WAIT)
            and not control.pending_raw
            and not (self._rcv.ack_now or control.need_rst or control.need_syn)
            and not control.send_probe
            and control.probe_ack_id is None
            and control.path_response is None
            and snd.nxt == snd.buf.end
            and snd.fin_pos is None
            and not self._loss.scoreboard.has_lost
            and dl.persist is None
            and self._trace.tracer is None
            and (pm is None or not pm.probe_due or not self.probe_worthy)
            and (
                dl.keepalive is not None
                or (
                    cfg.keepalive_idle_s is None
                    and (cfg.keepalive_stall_s is None or not self._rcv.peer_mid_stream)
                )
            )
            and (cfg.idle_timeout_s is None or dl.idle is not None)
        )

    def _may_probe(self, st: ConnectionState) -> bool:
        """A PMTU probe may go: our FIN is not sent yet (there may be data to make bigger),
        and SND.NXT lies inside the peer's window, so the zero-length probe passes its
        acceptability test (RFC 9293 section 3.10.7.4)."""
        snd = self._snd
        return (
            self._opts.pmtud_ok
            and self.probe_worthy
            and st in _MAY_PROBE
            and (snd.fin_pos is None or snd.nxt <= snd.fin_pos)
            and snd.nxt < snd.una + snd.wnd
        )
