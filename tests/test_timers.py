"""What the RTO and persist timers do (utcp/connection/timers.py): SYN retries,
backoff, the retry limits and their verdicts, the user timeout, and PMTU black hole detection,
driven on an explicit timeline with the real parts a connection composes."""

from __future__ import annotations

from collections import deque
from typing import Any

from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.pacer import Pacer
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.sender import Sender
from utcp.connection.timers import BLACK_HOLE_RTOS, TimerHandlers
from utcp.connection.tracepoints import TracePoints
from utcp.events import CloseReason, Event
from utcp.log import get_logger
from utcp.pmtud import Pmtud, PmtudState
from utcp.state import (
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    LAST_ACK,
    SYN_RECEIVED,
    SYN_SENT,
)

MSS = 1000
CONFIG = Config(
    mss_bytes=MSS,
    pmtud=False,
    fast_paths=False,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    rto_max_s=60.0,
    syn_retries=3,
    syn_rto_max_s=8.0,
    max_retransmits=15,
    fin_retries=2,
).validate()


class Stack:
    """Timer handlers of one connection and the parts they drive."""

    def __init__(
        self, config: Config = CONFIG, *, synchronized: bool = True, **changes: Any
    ) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="timers")
        self.snd = snd = SendSide(iss=500, mss=MSS)
        if synchronized:
            snd.una = snd.nxt = snd.max = 1
            snd.wnd = snd.max_wnd = 1 << 20
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.rcv.nxt = 1
        self.opts = Negotiated(config)
        self.trace = TracePoints()
        self.control = Control()
        self.loss = LossRecovery(
            config,
            snd=snd,
            opts=self.opts,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            log=log,
        )
        self.pm = Pmtud(base_bytes=config.base_datagram_bytes, log=log) if config.pmtud else None
        seg = Segments(
            config,
            local_cid=1,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=self.trace,
        )
        self.sender = Sender(
            config,
            snd=snd,
            rcv=self.rcv,
            opts=self.opts,
            loss=self.loss,
            segments=seg,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            pmtud=self.pm,
            pacer=Pacer(enabled=config.pacing != "off", default_rate=config.pacing == "on"),
            log=log,
        )
        self.timers = TimerHandlers(
            config,
            snd=snd,
            opts=self.opts,
            loss=self.loss,
            sender=self.sender,
            control=self.control,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            pmtud=self.pm,
            log=log,
        )

    def send(self, n: int, now: float, *, fin: bool = False) -> int:
        """Write ``n`` bytes (and close if ``fin``), send them; the datagrams sent."""
        if n:
            self.snd.buf.write(b"s" * n)
        if fin:
            self.snd.fin_pos = self.snd.buf.end
        out: list[bytes] = []
        self.sender.send_data(out, now)
        return len(out)


def test_syn_retransmissions_back_off_up_to_the_syn_ceiling() -> None:
    """RFC 6298 section 5.5 / RFC 9293 section 3.8.1: the SYN is resent with a doubling
    timer, here capped at syn_rto_max_s = 8 s."""
    s = Stack(synchronized=False, syn_retries=10)
    rtos = []
    for i in range(1, 6):
        assert s.timers.on_rto(float(i), SYN_SENT, False) is None
        assert s.control.need_syn
        s.control.need_syn = False
        rtos.append(s.loss.rtt.rto)
    assert rtos == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert (s.control.syn_retries, s.count.timeouts, s.count.retx) == (5, 5, 5)


def test_the_handshake_times_out_after_syn_retries() -> None:
    s = Stack(synchronized=False)
    for t in (1.0, 3.0, 7.0):
        assert s.timers.on_rto(t, SYN_SENT, False) is None
    assert s.timers.on_rto(15.0, SYN_SENT, False) is CloseReason.TIMEOUT
    assert not s.control.need_rst  # nothing to reset: the peer never answered


def test_a_passive_opener_never_resends_its_syn_ack_on_a_timer() -> None:
    """At most one SYN-ACK per SYN (RFC 9000 section 8.1's amplification concern): the timer
    only waits, backing off, and resets the half-open connection in the end."""
    s = Stack(synchronized=False)
    s.control.passive = True
    assert s.timers.on_rto(5.0, SYN_RECEIVED, False) is None
    assert not s.control.need_syn
    assert s.dl.rto == 7.0
    assert s.count.timeouts == 0
    s.timers.on_rto(7.0, SYN_RECEIVED, False)
    s.timers.on_rto(11.0, SYN_RECEIVED, False)
    assert s.timers.on_rto(19.0, SYN_RECEIVED, False) is CloseReason.TIMEOUT
    assert s.control.need_rst


def test_nothing_in_flight_means_nothing_to_do() -> None:
    s = Stack()
    assert s.timers.on_rto(1.0, ESTABLISHED, False) is None
    assert (s.count.timeouts, s.loss.timeouts_in_a_row, s.dl.rto) == (0, 0, None)
    assert s.loss.rtt.rto == 1.0


def test_a_timeout_marks_the_flight_lost_and_doubles_the_timer() -> None:
    """RFC 6298 section 5.4-5.6: retransmit the earliest segment, double the RTO, restart the
    timer; RFC 5681: cwnd falls to one segment."""
    s = Stack()
    assert s.send(4000, now=0.0) == 4
    assert s.dl.rto == 1.0
    assert s.timers.on_rto(1.0, ESTABLISHED, False) is None
    assert (s.count.timeouts, s.loss.timeouts_in_a_row) == (1, 1)
    assert s.loss.scoreboard.pipe == 0
    assert s.loss.cc.cwnd == MSS
    assert s.dl.rto == 3.0
    assert s.send(0, now=1.0) == 1  # one segment: the loss window
    s.dl.rto = None
    s.timers.on_rto(3.0, ESTABLISHED, False)
    assert s.dl.rto == 7.0


def test_too_many_retransmissions_reset_the_connection() -> None:
    s = Stack(max_retransmits=3)
    s.send(1000, now=0.0)
    t = 1.0
    for _ in range(3):
        assert s.timers.on_rto(t, ESTABLISHED, False) is None
        t = s.dl.rto or t
    assert s.timers.on_rto(t, ESTABLISHED, False) is CloseReason.TIMEOUT
    assert s.control.need_rst
    assert s.count.timeouts == 4


def test_the_user_timeout_caps_the_timer_and_ends_the_connection() -> None:
    """RFC 9293 section 3.8.3: data unacknowledged for the user timeout ends the
    connection."""
    s = Stack(user_timeout_s=2.5)
    s.send(1000, now=0.0)
    assert s.timers.on_rto(1.0, ESTABLISHED, False) is None
    assert s.dl.rto == 2.5  # 1 + 2 s of backoff, capped at 0 + 2.5
    assert s.timers.on_rto(2.5, ESTABLISHED, False) is CloseReason.TIMEOUT
    assert s.control.need_rst


def test_an_unanswered_fin_alone_closes_in_order_after_fin_retries() -> None:
    """Every byte both ways was acknowledged; only the FIN's ACK is missing (the peer most
    likely left TIME_WAIT): the close counts as orderly, no reset."""
    for state in (LAST_ACK, CLOSING):
        s = Stack()
        s.send(0, now=0.0, fin=True)
        assert s.snd.nxt == 2
        assert s.timers.on_rto(1.0, state, False) is None
        assert s.timers.on_rto(3.0, state, False) is None
        assert s.timers.on_rto(7.0, state, False) is CloseReason.CLOSED
        assert not s.control.need_rst


def test_an_unanswered_fin_with_data_outstanding_times_out() -> None:
    s = Stack()
    s.send(100, now=0.0, fin=True)
    for t in (1.0, 3.0):
        assert s.timers.on_rto(t, LAST_ACK, False) is None
    assert s.timers.on_rto(7.0, LAST_ACK, False) is CloseReason.TIMEOUT
    assert s.control.need_rst


def test_fin_retries_bound_only_an_orphaned_fin_wait_1() -> None:
    """As Linux's tcp_orphan_retries: an application that closed for good gives up after
    fin_retries; one that only half-closed goes on to max_retransmits."""
    orphan = Stack()
    orphan.send(0, now=0.0, fin=True)
    verdicts = [orphan.timers.on_rto(t, FIN_WAIT_1, True) for t in (1.0, 3.0, 7.0)]
    assert verdicts == [None, None, CloseReason.TIMEOUT]
    assert orphan.control.need_rst
    half = Stack()
    half.send(0, now=0.0, fin=True)
    verdicts = [half.timers.on_rto(t, FIN_WAIT_1, False) for t in (1.0, 3.0, 7.0)]
    assert verdicts == [None, None, None]


def _black_hole_stack() -> tuple[Stack, Pmtud]:
    """Path MTU discovery has confirmed 1452-byte datagrams; the MSS follows."""
    s = Stack(pmtud=True)
    pm = s.pm
    assert pm is not None
    s.opts.pmtud_ok = True
    s.snd.peer_mss = 1428
    s.snd.mss = s.loss.cc.mss = 1176
    pm.start(ceiling=1452, now=0.0)
    for now in (0.0, 0.1):
        probe = pm.next_probe(now=now, timeout_s=1.0)
        assert probe is not None
        pm.on_probe_acked(probe[0], now=now)
    assert pm.state is PmtudState.SEARCH_COMPLETE
    s.sender.apply_pmtu("probe")
    assert s.snd.mss == 1428
    return s, pm


def test_three_timeouts_of_a_large_segment_reveal_a_black_hole() -> None:
    """RFC 8899 section 4.3: datagrams of the PLPMTU stopped arriving; after BLACK_HOLE_RTOS
    timeouts in a row, fall back to the base size and cut the retransmission to fit."""
    s, pm = _black_hole_stack()
    assert s.send(2856, now=1.0) == 2
    assert BLACK_HOLE_RTOS == 3
    t = 2.0
    for _ in range(2):  # two in a row are common under heavy random loss
        s.timers.on_rto(t, ESTABLISHED, False)
        t = s.dl.rto or t
    assert (pm.size, pm.black_holes, s.snd.mss) == (1452, 0, 1428)
    s.timers.on_rto(t, ESTABLISHED, False)
    assert (pm.size, pm.black_holes, s.snd.mss) == (1200, 1, 1176)
    assert pm.state is PmtudState.BASE


def test_timeouts_of_base_sized_segments_are_no_black_hole() -> None:
    s, pm = _black_hole_stack()
    s.send(500, now=1.0)
    t = 2.0
    for _ in range(BLACK_HOLE_RTOS + 1):
        s.timers.on_rto(t, ESTABLISHED, False)
        t = s.dl.rto or t
    assert (pm.size, pm.black_holes, s.snd.mss) == (1452, 0, 1428)


def test_window_probes_back_off_and_give_up_after_max_retransmits() -> None:
    """RFC 9293 section 3.8.6.1: probe a zero window with exponential backoff; a peer that
    never opens it (and never answers) is given up on after max_retransmits probes."""
    s = Stack(max_retransmits=3)
    s.snd.buf.write(b"w" * 10)
    s.snd.wnd = 0
    deadlines = []
    now = 0.0
    for _ in range(3):
        s.sender.send_data([], now)
        assert s.dl.persist is not None
        now = s.dl.persist
        deadlines.append(now)
        s.dl.persist = None
        assert s.timers.on_persist(now, False) is None
        assert s.control.send_probe
        s.control.send_probe = False
    assert deadlines == [1.0, 3.0, 7.0]
    assert (s.snd.persist_probes, s.snd.persist_backoff) == (3, 3)
    assert s.timers.on_persist(15.0, False) is CloseReason.TIMEOUT
    assert s.control.need_rst


def test_the_window_probe_backoff_is_capped() -> None:
    s = Stack()
    s.snd.persist_backoff = 16
    s.timers.on_persist(1.0, False)
    assert s.snd.persist_backoff == 16


def test_the_syn_timer_never_exceeds_its_ceiling() -> None:
    """Config.syn_rto_max_s: the longest wait between two SYNs; the timer doubles from
    rto_initial_s up to it (RFC 6298 section 5.5 backoff, bounded)."""
    s = Stack(synchronized=False, syn_retries=10, rto_initial_s=3.0)
    rtos = []
    for i in range(1, 5):
        s.timers.on_rto(float(i), SYN_SENT, False)
        rtos.append(s.loss.rtt.rto)
    assert max(rtos) <= 8.0
