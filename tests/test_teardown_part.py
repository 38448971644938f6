"""The end of a connection's life (utcp/connection/teardown.py), driven on the part itself:
TIME_WAIT's length and what it answers (RFC 9293 section 3.10.7.4, RFC 1337), its shortening,
and an orphan's bounded FIN_WAIT_2.  The connection-level view is tests/test_teardown.py."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.send_side import SendSide
from utcp.connection.teardown import Teardown
from utcp.connection.tracepoints import TracePoints
from utcp.events import CloseReason, Event
from utcp.log import get_logger
from utcp.packet import Flag, Packet
from utcp.recovery import SentSegment

MSL_S = 2.0
CONFIG = Config(
    pmtud=False,
    msl_s=MSL_S,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    fin_wait_2_timeout_s=60.0,
).validate()
IRS = 9000  # the peer's ISN
FIN_POS = 501  # the peer sent 500 bytes, then its FIN
T0 = 50.0

ACK = int(Flag.ACK)
FIN = int(Flag.FIN)
SYN = int(Flag.SYN)
RST = int(Flag.RST)


class Stack:
    """A teardown part with the real parts it touches; both FINs were exchanged."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="teardown")
        self.snd = SendSide(iss=1, mss=config.mss_bytes)
        self.snd.una = self.snd.nxt = self.snd.max = 1
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.irs = IRS
        self.rcv.fin_pos = FIN_POS
        self.rcv.nxt = FIN_POS + 1
        self.control = Control()
        self.loss = LossRecovery(
            config,
            snd=self.snd,
            opts=Negotiated(config),
            deadlines=self.dl,
            counters=self.count,
            trace=TracePoints(),
            log=log,
        )
        self.td = Teardown(
            config,
            rcv=self.rcv,
            loss=self.loss,
            control=self.control,
            deadlines=self.dl,
            counters=self.count,
            log=log,
        )

    def segment(self, flags: int, pos: int, payload: bytes = b"") -> Packet:
        """A segment from the peer at its position ``pos`` acknowledging all we sent."""
        return Packet(flags, 2, 1, (IRS + pos) & 0xFFFFFFFF, self.snd.wire_seq(2), 100, payload)

    def answered(self, p: Packet, now: float) -> bool:
        """Feed ``p`` to TIME_WAIT at its position."""
        return self.td.rx_time_wait(p, self.rcv.position(p.seq), now)


def test_time_wait_lasts_two_msl_and_forgets_everything_else() -> None:
    """RFC 9293 section 3.10.7.4 (TIME-WAIT): wait 2 MSL; nothing is owed but the answer to
    a retransmitted FIN, so the scoreboard and the control segments owed are dropped."""
    s = Stack()
    assert s.td.time_wait_s == 2 * MSL_S
    s.loss.scoreboard.add(SentSegment(1, 2, T0 - 1.0))
    s.control.need_syn = True
    s.control.send_probe = True
    s.control.probe_ack_id = 7
    s.td.start_time_wait(T0)
    assert len(s.loss.scoreboard) == 0
    assert s.loss.scoreboard.pipe == 0
    assert not s.control.need_syn and not s.control.send_probe
    assert s.control.probe_ack_id is None
    assert s.dl.time_wait == T0 + 4.0


def test_a_retransmitted_fin_is_acknowledged_and_restarts_two_msl() -> None:
    """RFC 9293 section 3.10.7.4, TIME-WAIT: "The only thing that can arrive in this state is
    a retransmission of the remote FIN. Acknowledge it, and restart the 2 MSL timeout." """
    s = Stack()
    s.td.start_time_wait(T0)
    assert s.answered(s.segment(FIN | ACK, FIN_POS), T0 + 1.5)
    assert s.rcv.ack_now
    assert s.count.dup_segments == 1
    assert s.dl.time_wait == T0 + 1.5 + 4.0


def test_data_before_the_fin_is_a_retransmission_too() -> None:
    """The peer's data segments are retransmitted when their ACKs were lost as well: data
    ending at or before the FIN, with or without the FIN on it, is answered."""
    s = Stack()
    s.td.start_time_wait(T0)
    assert s.answered(s.segment(ACK, FIN_POS - 100, b"d" * 100), T0 + 1.0)
    assert s.answered(s.segment(ACK, 1, b"d" * 50), T0 + 2.0)
    assert s.answered(s.segment(FIN | ACK, FIN_POS - 10, b"d" * 10), T0 + 3.0)
    assert s.rcv.ack_now
    assert s.count.dup_segments == 3
    assert s.dl.time_wait == T0 + 3.0 + 4.0


@pytest.mark.parametrize(
    ("flags", "pos", "payload"),
    [
        pytest.param(SYN, 0, b"", id="syn"),
        pytest.param(SYN | ACK, 0, b"", id="syn-ack"),
        pytest.param(RST, FIN_POS + 1, b"", id="rst"),
        pytest.param(RST | ACK, FIN_POS + 1, b"", id="rst-ack"),
        pytest.param(FIN | RST | ACK, FIN_POS, b"", id="fin-rst"),
        pytest.param(ACK, FIN_POS + 1, b"", id="bare-ack"),
        pytest.param(ACK, FIN_POS, b"", id="bare-ack-at-fin"),
        pytest.param(ACK, FIN_POS - 5, b"d" * 10, id="data-past-fin"),
        pytest.param(ACK, FIN_POS + 1, b"d" * 10, id="data-after-fin"),
        pytest.param(FIN | ACK, FIN_POS + 1, b"", id="fin-moved-on"),
        pytest.param(FIN, FIN_POS, b"", id="fin-without-ack"),
    ],
)
def test_everything_else_is_dropped_unanswered(flags: int, pos: int, payload: bytes) -> None:
    """RFC 1337 (TIME-WAIT assassination): an RST must not end TIME_WAIT early, and nothing
    but the peer's retransmission is answered, so a SYN, an RST, a bare ACK, data beyond the
    FIN or a segment without ACK leave the ACK, the counters and the 2 MSL deadline alone."""
    s = Stack()
    s.td.start_time_wait(T0)
    assert not s.answered(s.segment(flags, pos, payload), T0 + 1.0)
    assert not s.rcv.ack_now
    assert s.count.dup_segments == 0
    assert s.dl.time_wait == T0 + 4.0


def test_shorten_cuts_time_wait_to_two_rtos() -> None:
    """``shorten_time_wait``: min(2 MSL, 2 RTO) from now; an RTO of 1 s (no sample) gives 2 s,
    which moves the armed deadline from T0 + 4 to T0 + 1 + 2."""
    s = Stack()
    s.td.start_time_wait(T0)
    s.td.shorten(T0 + 1.0, True)
    assert s.td.time_wait_s == 2.0
    assert s.dl.time_wait == T0 + 3.0
    s.rcv.ack_now = False
    assert s.answered(s.segment(FIN | ACK, FIN_POS), T0 + 2.5)  # restarts the shorter wait
    assert s.dl.time_wait == T0 + 4.5


def test_shorten_follows_a_measured_rto() -> None:
    """RFC 6298 section 2.2: a first sample of 100 ms gives RTO = 0.1 + 4 * 0.05 = 0.3 s, so
    TIME_WAIT lasts 0.6 s."""
    s = Stack()
    s.loss.rtt.on_sample(0.100)
    s.td.start_time_wait(T0)
    s.td.shorten(T0, True)
    assert s.td.time_wait_s == pytest.approx(0.6)
    assert s.dl.time_wait == pytest.approx(T0 + 0.6)


def test_shorten_never_lengthens_time_wait() -> None:
    """2 MSL bounds it (a backed-off RTO of 8 s would give 16 s), an armed deadline only moves
    earlier, and a later call with a larger RTO does not undo an earlier cut."""
    s = Stack()
    for _ in range(3):
        s.loss.rtt.back_off()
    assert s.loss.rtt.rto == 8.0
    s.td.shorten(T0, False)
    assert s.td.time_wait_s == 2 * MSL_S
    s.td.start_time_wait(T0)
    s.td.shorten(T0 + 3.0, True)  # T0 + 3 + 4 would be later than T0 + 4
    assert s.dl.time_wait == T0 + 4.0
    fast = Stack()
    fast.loss.rtt.on_sample(0.100)
    fast.td.shorten(T0, False)
    fast.loss.rtt.back_off()
    fast.loss.rtt.back_off()
    fast.td.shorten(T0, False)
    assert fast.td.time_wait_s == pytest.approx(0.6)


def test_shorten_outside_time_wait_only_sets_the_length() -> None:
    """Called before TIME_WAIT, shorten arms nothing; entering TIME_WAIT later uses the
    shorter length."""
    s = Stack()
    s.td.shorten(T0, False)
    assert s.dl.time_wait is None
    s.dl.time_wait = T0 + 10.0  # an armed deadline is left to the state it belongs to
    s.td.shorten(T0, False)
    assert s.dl.time_wait == T0 + 10.0
    s.td.start_time_wait(T0 + 20.0)
    assert s.dl.time_wait == T0 + 22.0
    zero = Stack(msl_s=0.0)
    zero.td.shorten(T0, False)
    assert zero.td.time_wait_s == 0.0


def test_shorten_in_time_wait_with_no_deadline_arms_none() -> None:
    """Only an armed TIME_WAIT deadline moves: the part never arms one on its own here."""
    s = Stack()
    s.td.shorten(T0, True)
    assert s.dl.time_wait is None
    assert s.td.time_wait_s == 2.0


def test_an_orphan_waits_in_fin_wait_2_once_and_only_when_bounded() -> None:
    """Linux's tcp_fin_timeout: an orphan's FIN_WAIT_2 ends ``fin_wait_2_timeout_s`` after it
    began; arming it again does not push it back, and None leaves it unbounded."""
    s = Stack()
    s.td.arm_fin_wait_2(T0)
    assert s.dl.fin_wait_2 == T0 + 60.0
    s.td.arm_fin_wait_2(T0 + 30.0)
    assert s.dl.fin_wait_2 == T0 + 60.0
    unbounded = Stack(fin_wait_2_timeout_s=None)
    unbounded.td.arm_fin_wait_2(T0)
    assert unbounded.dl.fin_wait_2 is None


def test_fin_wait_2_expiry_owes_a_reset_and_times_out() -> None:
    """The peer never closed its side: reset it (as Linux does) and end with TIMEOUT."""
    s = Stack()
    assert not s.control.need_rst
    assert s.td.on_fin_wait_2() is CloseReason.TIMEOUT
    assert s.control.need_rst
    assert not s.td.orphaned  # orphaned is the connection's to set
