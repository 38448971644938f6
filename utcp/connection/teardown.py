"""The end of a connection's life after both sides have begun to close: TIME_WAIT (its
length, restarted by the peer's retransmissions, and what it answers), an orphan's bounded
FIN_WAIT_2, and whether the application has let go (``orphan()``).

TIME_WAIT answers one thing only, a retransmission from a peer that did not get our final
ACK; everything else is dropped unanswered (RFC 9293 section 3.10.7.4, RFC 1337).  The state
transitions into and out of these states are the connection's.
"""

from __future__ import annotations

from typing import Any, Final, final

from ..config import Config
from ..events import CloseReason
from ..packet import Flag, Packet
from .control import Control
from .counters import Counters
from .deadlines import Deadlines
from .loss import LossRecovery
from .receive_side import ReceiveSide

__all__ = ["Teardown"]

_FIN: Final = int(Flag.FIN)
_SYN: Final = int(Flag.SYN)
_RST: Final = int(Flag.RST)
_ACK: Final = int(Flag.ACK)


@final
class Teardown:
    """TIME_WAIT and the orphan's limits of one connection."""

    def __init__(
        self,
        config: Config,
        *,
        rcv: ReceiveSide,
        loss: LossRecovery,
        control: Control,
        deadlines: Deadlines,
        counters: Counters,
        log: Any,
    ) -> None:
        # The application has closed and reads nothing more (orphan()): FIN_WAIT_2 is bounded
        # and FIN_WAIT_1 gives up after fin_retries, as Linux treats orphaned sockets.
        self.orphaned = False
        self.time_wait_s = 2 * config.msl_s  # how long TIME_WAIT lasts (shorten_time_wait)
        self._cfg = config
        self._rcv = rcv
        self._loss = loss
        self._control = control
        self._dl = deadlines
        self._count = counters
        self._log = log

    def start_time_wait(self, now: float) -> None:
        """Both FINs are acknowledged and ours was the first: nothing is owed any more but
        the answer to a retransmitted FIN, for 2 MSL.  (The connection stopped every other
        timer.)"""
        self._loss.clear()
        control = self._control
        control.need_syn = control.send_probe = False
        control.probe_ack_id = control.path_response = None
        self._dl.time_wait = now + self.time_wait_s

    def shorten(self, now: float, in_time_wait: bool) -> None:
        """Cut TIME_WAIT down to two RTOs from now (at most 2 MSL)."""
        cfg = self._cfg
        short = min(2 * cfg.msl_s, 2 * max(self._loss.rtt.rto, cfg.rto_min_s))
        self.time_wait_s = min(self.time_wait_s, short)
        dl = self._dl
        if in_time_wait and dl.time_wait is not None:
            dl.time_wait = min(dl.time_wait, now + self.time_wait_s)

    def rx_time_wait(self, p: Packet, seg_pos: int, now: float) -> bool:
        """A segment arriving in TIME_WAIT: True when it is the peer's retransmission (its FIN,
        or data before it when earlier ACKs were lost too), acknowledged again with 2 MSL
        restarted; False when it is to be dropped."""
        flags = p.flags
        fin_pos = self._rcv.fin_pos
        n = len(p.payload)
        if (
            (n or flags & _FIN)
            and flags & _ACK
            and not flags & (_SYN | _RST)
            and fin_pos is not None
            and seg_pos + n <= fin_pos
        ):
            self._rcv.ack_now = True
            self._count.dup_segments += 1
            self._dl.time_wait = now + self.time_wait_s
            return True
        return False

    def arm_fin_wait_2(self, now: float) -> None:
        """An orphan waits in FIN_WAIT_2 at most ``fin_wait_2_timeout_s`` for the peer's FIN."""
        timeout = self._cfg.fin_wait_2_timeout_s
        if timeout is not None and self._dl.fin_wait_2 is None:
            self._dl.fin_wait_2 = now + timeout

    def on_fin_wait_2(self) -> CloseReason:
        """An orphan's FIN_WAIT_2 lasted ``fin_wait_2_timeout_s``: the peer never closed its
        side.  Reset, as Linux does after tcp_fin_timeout, so it cannot linger forever."""
        self._log.info("fin_wait_2_timeout")
        self._control.need_rst = True
        return CloseReason.TIMEOUT
