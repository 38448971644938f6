"""Header prediction, in the spirit of BSD's ``tcp_input``: the common segment of an
ESTABLISHED connection (the next in order, carrying data that fits or acknowledging new data,
with no option to act on) handled without the general receive path's checks.

It does exactly what the general path would for such a segment, or nothing at all: a
segment it declines is handed to ``Connection._rx_synchronized`` untouched.
"""

from __future__ import annotations

from typing import final

from ..packet import Packet
from ..seqnum import SEQ_MASK, seq_diff
from .liveness import Liveness
from .loss import LossRecovery
from .options import Negotiated
from .receive_side import ReceiveSide
from .send_side import SendSide
from .sender import Sender

__all__ = ["HeaderPrediction"]


@final
class HeaderPrediction:
    """The fast receive path of an ESTABLISHED connection (``Config.fast_paths``)."""

    def __init__(
        self,
        *,
        snd: SendSide,
        rcv: ReceiveSide,
        opts: Negotiated,
        loss: LossRecovery,
        sender: Sender,
        liveness: Liveness,
    ) -> None:
        self._snd = snd
        self._rcv = rcv
        self._opts = opts
        self._loss = loss
        self._sender = sender
        self._live = liveness

    def receive(self, p: Packet, now: float) -> bool:
        """Header prediction, in the spirit of BSD's ``tcp_input``: on an ESTABLISHED
        connection a plain ACK segment (no option to act on) that is the next in order, and
        either carries data that fits the window or acknowledges new data, needs none of the
        general checks.

        Does exactly what ``Connection._rx_synchronized`` would for such a segment and returns True;
        returns False having changed nothing when the segment needs the general path.
        """
        rcv = self._rcv
        snd = self._snd
        loss = self._loss
        if (
            p.sack_blocks
            or loss.tlp_high  # a probe's episode is open: the general path ends it
            or p.probe is not None
            or p.probe_ack is not None
            or p.path_challenge is not None
            or p.path_response is not None
            or rcv.reasm.nbytes
            or rcv.fin_pos is not None
            or snd.fin_pos is not None
        ):
            return False
        rcv_nxt = rcv.nxt
        if p.seq != (rcv.irs + rcv_nxt) & SEQ_MASK:
            return False
        snd_una = snd.una
        ack_pos = snd_una + seq_diff(p.ack, (snd.iss + snd_una) & SEQ_MASK)
        if not snd_una <= ack_pos <= snd.max:
            return False
        payload = p.payload
        n = len(payload)
        if n:
            if n > rcv.buffer_bytes - len(rcv.held):
                return False  # beyond the window: trimmed by the general path
        elif ack_pos == snd_una:
            return False  # a duplicate ACK or a window update
        self._live.heard(now)
        if p.timestamps is not None and self._opts.ts_ok:
            self._opts.ts_recent = p.timestamps[0]
        if ack_pos != snd_una:
            sb = loss.scoreboard
            sb.prior_fack = sb.highest_sacked
            if loss.wants_delay_samples and p.timestamps is not None:
                loss.delay_sample(p.timestamps, now)
            loss.on_new_ack(ack_pos, now)
        self._sender.update_window(p, rcv_nxt, ack_pos, True)
        if n:
            rcv.take_next(payload, now)
        return True
