"""Loss recovery (utcp/connection/loss.py): RTT samples and Karn's rule, the congestion window,
fast retransmit and NewReno/SACK recovery, the tail loss probe and the retransmission timer,
driven on an explicit timeline with segments recorded as the sender records them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.helpers import BottleneckLink, Link, establish, pair
from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.send_side import SendSide
from utcp.connection.tracepoints import TracePoints
from utcp.log import get_logger
from utcp.packet import Flag, Packet
from utcp.recovery import SentSegment

MSS = 1000
ISS = 7000
# NewReno named: the expected windows are RFC 5681's and RFC 6582's (halving, at most 2 SMSS
# per ACK in slow start), not the default controller's (cubic keeps 0.7; tests/test_cubic.py).
CONFIG = Config(
    congestion_control="newreno",
    mss_bytes=MSS,
    pmtud=False,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    rto_max_s=60.0,
    delayed_ack_s=0.040,
    initial_cwnd_segments=10,
    dupack_threshold=3,
).validate()


class Stack:
    """A loss recovery part with the real parts it needs; the SYN is acknowledged."""

    def __init__(self, config: Config = CONFIG, *, sack: bool = False, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        self.snd = SendSide(iss=ISS, mss=MSS)
        self.snd.una = self.snd.nxt = self.snd.max = 1
        self.snd.wnd = 1 << 20
        self.opts = Negotiated(config)
        self.opts.sack_ok = sack
        self.dl = Deadlines()
        self.count = Counters()
        self.trace = TracePoints()
        self.loss = LossRecovery(
            config,
            snd=self.snd,
            opts=self.opts,
            deadlines=self.dl,
            counters=self.count,
            trace=self.trace,
            log=get_logger(test="loss"),
        )

    @property
    def sb(self) -> Any:
        return self.loss.scoreboard

    def send(self, segments: int, now: float, size: int = MSS) -> None:
        """Record ``segments`` new segments of ``size`` bytes sent at ``now``."""
        snd = self.snd
        snd.buf.write(b"d" * (segments * size))
        for _ in range(segments):
            start = snd.nxt
            self.sb.add(SentSegment(start, start + size, now))
            snd.nxt = snd.max = start + size
        self.loss.after_send(now)

    def seg(self, i: int) -> SentSegment:
        """The i-th segment sent (0-based) of size MSS."""
        segs: list[SentSegment] = self.sb.segs
        return next(s for s in segs if s.start == 1 + i * MSS)

    def wire(self, pos: int) -> int:
        return self.snd.wire_seq(pos)


def test_the_first_flight_arms_the_initial_rto_and_no_probe() -> None:
    """RFC 6298 section 2.1 and 5.1: RTO starts at 1 s; RFC 8985 section 7.2: no PTO without
    an RTT sample."""
    s = Stack()
    s.send(3, now=5.0)
    assert s.dl.rto == 6.0
    assert s.dl.tlp is None
    assert s.loss.oldest_unacked_since == 5.0
    s.send(1, now=5.5)  # a running timer is not restarted by more data
    assert s.dl.rto == 6.0


def test_an_ack_samples_the_rtt_and_rearms_the_timers() -> None:
    """RFC 6298 section 2.2: first sample R gives SRTT = R, RTTVAR = R/2,
    RTO = max(SRTT + 4 RTTVAR, RTO.min); 5.3: restart the timer on an ACK of new data."""
    s = Stack()
    s.send(3, now=0.0)
    s.loss.on_new_ack(1 + MSS, now=0.100)
    rtt = s.loss.rtt
    assert rtt.srtt == pytest.approx(0.100)
    assert rtt.rttvar == pytest.approx(0.050)
    assert rtt.rto == pytest.approx(0.300)
    assert s.snd.una == 1 + MSS
    assert s.sb.pipe == 2 * MSS
    assert s.dl.rto == pytest.approx(0.400)
    assert s.dl.tlp == pytest.approx(0.300)  # 2 SRTT: two segments still out


def test_karn_no_sample_from_a_retransmitted_segment() -> None:
    """RFC 6298 section 3 (Karn's algorithm): an ACK that may answer a retransmission gives
    no RTT sample."""
    s = Stack()
    s.send(1, now=0.0)
    seg = s.seg(0)
    s.sb.mark_lost(seg)
    s.sb.retransmitted(seg, 1.0)
    s.loss.on_new_ack(1 + MSS, now=1.050)
    assert s.loss.rtt.srtt is None
    assert s.loss.rtt.rto == 1.0


def test_no_sample_from_a_segment_sacked_before_its_cumulative_ack() -> None:
    s = Stack(sack=True)
    s.send(2, now=0.0)
    s.loss.on_sack(((s.wire(1 + MSS), s.wire(1 + 2 * MSS)),), now=0.1)
    s.loss.on_new_ack(1 + 2 * MSS, now=3.0)  # a late ACK: 3 s would inflate SRTT
    assert s.loss.rtt.srtt is None


def _sack_ack(s: Stack, ack_pos: int, *blocks: tuple[int, int]) -> Packet:
    """An ACK of ``ack_pos`` from the peer carrying SACK blocks (positions)."""
    p = Packet(int(Flag.ACK), 0xB, 0xA, 1, s.wire(ack_pos), 1 << 14)
    p.sack_blocks = tuple((s.wire(left), s.wire(right)) for left, right in blocks)
    return p


def test_a_sack_samples_the_rtt_while_a_hole_holds_the_cumulative_ack() -> None:
    """Under steady loss there is always a hole: the newest segment SACKed for the first time,
    sent once, gives the RTT sample the stuck cumulative ACK cannot (as Linux's sack_rtt).
    Before, SRTT stayed where the first loss left it while the queue doubled the RTT, and
    the retransmission timer fired at the old RTT's 200 ms."""
    s = Stack(sack=True)
    s.send(1, now=0.0)
    s.loss.on_new_ack(1 + MSS, now=0.100)
    assert s.loss.rtt.srtt == pytest.approx(0.100)
    s.send(4, now=1.0)  # the first of them is lost
    s.loss.on_ack(_sack_ack(s, 1 + MSS, (1 + 2 * MSS, 1 + 3 * MSS)), 1 + MSS, now=1.2)
    assert s.loss.rtt.latest_rtt == pytest.approx(0.200)
    s.loss.on_ack(_sack_ack(s, 1 + MSS, (1 + 2 * MSS, 1 + 5 * MSS)), 1 + MSS, now=1.25)
    assert s.loss.rtt.latest_rtt == pytest.approx(0.250)  # the newest of the two newly SACKed
    srtt = s.loss.rtt.srtt
    # Blocks already SACKed, and a retransmission SACKed, give no sample.
    s.loss.on_ack(_sack_ack(s, 1 + MSS, (1 + 2 * MSS, 1 + 5 * MSS)), 1 + MSS, now=1.3)
    assert s.loss.rtt.srtt == srtt
    hole = s.seg(1)
    s.sb.mark_lost(hole)
    s.sb.retransmitted(hole, 1.3)
    s.loss.on_ack(_sack_ack(s, 1 + MSS, (1 + MSS, 1 + 5 * MSS)), 1 + MSS, now=1.5)
    assert s.loss.rtt.srtt == srtt


def test_the_cumulative_sample_goes_before_a_sack_sample() -> None:
    """An ACK that advances over segments sent once and SACKs a later one: SRTT takes the
    cumulative ACK's sample only."""
    s = Stack(sack=True)
    s.send(1, now=0.0)
    s.send(2, now=0.5)
    s.loss.on_ack(_sack_ack(s, 1 + MSS, (1 + 2 * MSS, 1 + 3 * MSS)), 1 + MSS, now=0.6)
    assert s.loss.rtt.srtt == pytest.approx(0.600)
    assert s.loss.rtt.latest_rtt == pytest.approx(0.600)


def test_all_acknowledged_stops_both_timers() -> None:
    """RFC 6298 section 5.2: when all outstanding data is acknowledged, turn off the timer."""
    s = Stack()
    s.send(2, now=0.0)
    s.loss.on_new_ack(1 + 2 * MSS, now=0.1)
    assert (s.dl.rto, s.dl.tlp, s.loss.oldest_unacked_since) == (None, None, None)
    assert len(s.sb) == 0 and s.sb.pipe == 0


def test_slow_start_grows_the_window_only_while_it_limits_the_sender() -> None:
    """RFC 5681 section 3.1 slow start with RFC 3465 byte counting (at most 2 SMSS per ACK);
    RFC 7661: a window the sender is not using is not grown."""
    s = Stack()
    assert s.loss.cc.cwnd == 10 * MSS
    s.send(10, now=0.0)
    s.loss.on_new_ack(1 + 3 * MSS, now=0.1)  # 3 segments: +2 SMSS at most
    assert s.loss.cc.cwnd == 12 * MSS
    lone = Stack()
    lone.send(1, now=0.0)
    lone.loss.on_new_ack(1 + MSS, now=0.1)  # 1 segment of a 10-segment window in flight
    assert lone.loss.cc.cwnd == 10 * MSS


def test_three_duplicate_acks_start_fast_retransmit() -> None:
    """RFC 5681 section 3.2: on the third duplicate ACK, ssthresh = max(FlightSize / 2,
    2 SMSS), the first unacknowledged segment is resent at once and cwnd = ssthresh
    (+ 3 SMSS of inflation, kept here as ``dupack_credit``)."""
    s = Stack()
    s.send(8, now=0.0)
    s.loss.on_dupack(0.1, sacked=False)
    s.loss.on_dupack(0.11, sacked=False)
    assert not s.loss.in_recovery and not s.seg(0).lost
    s.loss.on_dupack(0.12, sacked=False)
    assert s.loss.in_recovery
    assert s.loss.recover == 1 + 8 * MSS  # RFC 6582 section 3.2 step 2
    assert s.loss.cc.ssthresh == 4 * MSS
    assert s.loss.cc.cwnd == 4 * MSS
    assert s.loss.dupack_credit == 3 * MSS
    assert s.seg(0).lost and not s.seg(1).lost
    assert s.loss.rexmit_now
    assert (s.count.fast_retx, s.count.dupack_count) == (1, 3)
    s.loss.on_dupack(0.13, sacked=False)  # each further one inflates by one SMSS
    assert s.loss.dupack_credit == 4 * MSS
    assert s.count.fast_retx == 1


def test_partial_ack_marks_the_next_hole_lost_and_full_ack_ends_recovery() -> None:
    """RFC 6582 section 3.2 step 5: a partial ACK (below "recover") retransmits the next
    unacknowledged segment and deflates the window by the amount acknowledged; step 6: a full
    ACK exits recovery with cwnd = ssthresh."""
    s = Stack()
    s.send(8, now=0.0)
    for t in (0.1, 0.11, 0.12):
        s.loss.on_dupack(t, sacked=False)
    s.sb.retransmitted(s.seg(0), 0.12)
    s.loss.rexmit_now = False
    s.loss.on_new_ack(1 + MSS, now=0.2)  # partial: only the retransmitted segment
    assert s.loss.in_recovery
    assert s.loss.dupack_credit == 2 * MSS
    assert s.seg(1).lost and not s.seg(2).lost
    s.loss.on_new_ack(1 + 8 * MSS, now=0.3)  # everything up to "recover"
    assert not s.loss.in_recovery
    assert s.loss.dupack_credit == 0
    assert s.loss.cc.cwnd == s.loss.cc.ssthresh == 4 * MSS


def test_no_new_recovery_for_losses_inside_a_timed_out_flight() -> None:
    """RFC 6582 section 3.2 step 2 (and RFC 6675 section 5): duplicate ACKs that do not
    cover more than "recover" must not start another episode (or halve cwnd again)."""
    s = Stack()
    s.send(6, now=0.0)
    s.loss.on_timeout(1.0)
    assert s.loss.recover == 1 + 6 * MSS
    cwnd = s.loss.cc.cwnd
    for t in (1.1, 1.2, 1.3, 1.4):
        s.loss.on_dupack(t, sacked=False)
    assert not s.loss.in_recovery
    assert s.loss.cc.cwnd == cwnd
    assert s.count.fast_retx == 0


def test_sack_blocks_declare_a_hole_lost_without_three_duplicate_acks() -> None:
    """RFC 6675 section 4 IsLost(): a segment with more than (DupThresh - 1) * SMSS bytes
    SACKed above it is lost; section 5: recovery starts and it is resent at once (with RACK
    off: RACK judges by time, tests/test_rack.py)."""
    s = Stack(sack=True, rack=False)
    s.send(5, now=0.0)
    s.loss.on_sack(((s.wire(1 + MSS), s.wire(1 + 5 * MSS)),), now=0.1)  # all but the first
    assert s.sb.pipe == MSS
    s.loss.maybe_enter_recovery(0.1)
    assert s.loss.in_recovery
    assert s.seg(0).lost
    assert s.loss.rexmit_now
    assert s.loss.dupack_credit == 0  # SACK counts the pipe instead of inflating cwnd
    assert s.loss.cc.ssthresh == 2 * MSS + MSS // 2  # half of the 5-segment flight
    assert s.sb.pipe == 0


def test_too_few_sacked_bytes_do_not_declare_a_loss() -> None:
    """RFC 6675 IsLost(): two segments SACKed (2 * SMSS, not more than (DupThresh-1) * SMSS)
    right behind a hole are not enough."""
    s = Stack(sack=True)
    s.send(3, now=0.0)
    s.loss.on_sack(((s.wire(1 + MSS), s.wire(1 + 3 * MSS)),), now=0.1)
    s.loss.maybe_enter_recovery(0.1)
    assert not s.loss.in_recovery
    assert not s.seg(0).lost
    assert s.loss.loss_threshold() == 2 * MSS + 1


def test_sack_blocks_outside_the_flight_are_ignored() -> None:
    """RFC 2018 section 3 / RFC 5961 spirit: a block must lie within [SND.UNA, SND.MAX]."""
    s = Stack(sack=True)
    s.send(3, now=0.0)
    s.loss.on_sack(((s.wire(1 + 2 * MSS), s.wire(1 + 4 * MSS)),), now=0.1)  # runs past SND.MAX
    s.loss.on_sack(((s.wire(1 - MSS), s.wire(1 + MSS)),), now=0.1)  # starts before SND.UNA
    assert s.sb.pipe == 3 * MSS
    assert not any(seg.sacked for seg in s.sb.segs)
    s.loss.on_sack(((s.wire(1 + 2 * MSS), s.wire(1 + 3 * MSS)),), now=0.1)
    assert s.seg(2).sacked and s.sb.pipe == 2 * MSS


def test_tail_loss_probe_timing() -> None:
    """RFC 8985 section 7.2: PTO = 2 SRTT, plus the peer's maximum ACK delay when one
    segment is in flight, at least 10 ms here."""
    s = Stack()
    s.loss.rtt.on_sample(0.100)  # SRTT 0.1, RTO 0.3
    s.send(1, now=10.0)
    assert s.dl.rto == pytest.approx(10.3)
    assert s.dl.tlp == pytest.approx(10.240)
    s.send(1, now=10.01)  # two segments: no delayed-ACK allowance
    s.loss.arm_tlp(10.01)
    assert s.dl.tlp == pytest.approx(10.210)
    fast = Stack()
    fast.loss.rtt.on_sample(0.002)
    fast.send(4, now=1.0)
    assert fast.dl.tlp == pytest.approx(1.010)  # 2 SRTT = 4 ms, floored to 10 ms


def test_no_probe_later_than_the_retransmission_timer() -> None:
    """RFC 8985 section 7.2: the PTO is only armed when it fires before the RTO."""
    s = Stack()
    for _ in range(20):
        s.loss.rtt.on_sample(0.200)  # RTTVAR decays: RTO falls to SRTT + 200 ms
    assert s.loss.rtt.rto == pytest.approx(0.4)
    s.send(1, now=0.0)  # PTO would be 0.4 + 0.04 > RTO
    assert s.dl.rto == pytest.approx(0.4)
    assert s.dl.tlp is None


def test_no_probe_when_disabled_or_in_recovery() -> None:
    off = Stack(tail_loss_probe=False)
    off.loss.rtt.on_sample(0.1)
    off.send(3, now=0.0)
    assert off.dl.tlp is None
    s = Stack()
    s.loss.rtt.on_sample(0.1)
    s.send(5, now=0.0)
    assert s.dl.tlp is not None
    for t in (0.01, 0.02, 0.03):
        s.loss.on_dupack(t, sacked=False)
    s.loss.arm_tlp(0.03)
    assert s.dl.tlp is None


def test_the_probe_resends_the_last_segment_once_per_flight() -> None:
    """RFC 8985 section 7.3: the probe retransmits the last segment and re-arms the RTO; no
    second probe until an ACK of new data."""
    s = Stack()
    s.loss.rtt.on_sample(0.1)
    s.send(3, now=0.0)
    s.loss.on_tlp(0.2)
    assert s.seg(2).lost and not s.seg(0).lost
    assert s.loss.rexmit_now and s.loss.tlp_sent
    assert s.count.tlp_probes == 1
    assert s.dl.rto == pytest.approx(0.5)
    s.sb.retransmitted(s.seg(2), 0.2)
    s.loss.arm_tlp(0.2)
    assert s.dl.tlp is None
    s.loss.on_new_ack(1 + MSS, now=0.3)
    assert not s.loss.tlp_sent
    assert s.dl.tlp is not None


def test_a_timeout_collapses_the_window_and_backs_off() -> None:
    """RFC 5681 section 3.1 equation 4 and the loss window (cwnd = 1 SMSS); RFC 6298 section
    5.5: RTO doubles; every unacknowledged segment is presumed lost.  RFC 5681 section 3.1:
    ssthresh is held constant when the same segment times out again."""
    s = Stack()
    s.send(6, now=0.0)
    s.loss.on_timeout(1.0)
    assert s.loss.cc.ssthresh == 3 * MSS
    assert s.loss.cc.cwnd == MSS
    assert s.sb.pipe == 0
    assert all(s.seg(i).lost for i in range(6))
    assert s.loss.rtt.rto == 2.0
    assert s.loss.rtt.backoff == 1
    s.loss.on_timeout(3.0)
    assert s.loss.rtt.rto == 4.0
    assert s.loss.cc.ssthresh == 3 * MSS  # a second timeout of the same flight holds it
    assert s.loss.cc.cwnd == MSS


def test_the_backoff_lasts_until_an_rtt_sample() -> None:
    """RFC 6298 section 5 with Karn's rule (section 3): the doubled timeout stays until a
    new RTT measurement, which an ACK of resent data cannot give; then it collapses.  (An
    ACK of resent data had cleared it: a timeout shorter than the path's round trip fired
    again every round trip, and no sample was ever taken.)"""
    s = Stack()
    s.send(2, now=0.0)
    s.loss.on_timeout(1.0)
    s.loss.on_timeout(3.0)
    s.loss.timeouts_in_a_row = 2
    assert s.loss.rtt.rto == 4.0
    s.sb.retransmitted(s.seg(0), 3.0)
    s.loss.on_new_ack(1 + MSS, now=3.5)
    assert s.loss.rtt.rto == 4.0  # no sample (Karn): the backoff stays
    assert s.loss.timeouts_in_a_row == 0
    assert s.dl.rto == pytest.approx(7.5)
    s.loss.on_new_ack(1 + 2 * MSS, now=3.6)  # sent once, at 0.0: a sample of 3.6 s
    assert s.loss.rtt.backoff == 0 and s.loss.rtt.srtt == pytest.approx(3.6)


def test_the_user_timeout_caps_the_retransmission_deadline() -> None:
    """RFC 9293 section 3.8.3 USER TIMEOUT: no retransmission deadline past it."""
    s = Stack(user_timeout_s=5.0)
    s.send(1, now=2.0)
    rto = s.loss.rtt.rto
    assert s.loss.rto_deadline(10.0 - rto) == 7.0  # an RTO out would be 10.0
    assert s.loss.rto_deadline(6.0 - rto) == pytest.approx(6.0)
    assert not s.loss.user_timeout_expired(6.999)
    assert s.loss.user_timeout_expired(7.0)
    none = Stack()
    none.send(1, now=2.0)
    assert none.loss.rto_deadline(1000.0) == pytest.approx(1000.0 + none.loss.rtt.rto)
    assert not none.loss.user_timeout_expired(1e9)


def test_the_syn_rtt_sample_and_karn_for_a_resent_syn() -> None:
    s = Stack()
    s.dl.rto = 1.0
    s.loss.on_syn_acked(0.250, sent_at=0.0)
    assert s.loss.rtt.srtt == 0.250
    assert s.dl.rto is None
    again = Stack()
    again.loss.rtt.back_off()
    again.loss.on_syn_acked(3.0, sent_at=None)  # the SYN went out twice: no sample
    assert again.loss.rtt.srtt is None
    assert again.loss.rtt.rto == 2.0  # and the backoff stays until one


def test_a_path_slower_than_the_initial_timeout_gets_its_rtt_measured() -> None:
    """A 1.2 s round trip, above the initial 1 s timeout: the SYN and the first data are
    resent once, the doubled timeout stays until a segment sent once is acknowledged, and
    from that sample on nothing times out.  (The backoff cleared by each ACK of resent data,
    the 1 s timer fired every round trip: 86 timeouts in 120 s, no RTT ever measured.)"""
    from tests.helpers import QUIET, Link, pair

    cfg = Config(pmtud=False, **QUIET)
    net = pair(config_a=cfg, config_b=cfg, a_to_b=Link(delay_s=0.6), b_to_a=Link(delay_s=0.6))
    a = net.a.conn
    assert a is not None
    net.run_for(10.0)
    a.send(bytes(300_000))
    net.run(until=lambda: len(net.b.received) == 300_000, max_time=120)
    assert a.stats.srtt_s is not None and a.stats.srtt_s == pytest.approx(1.2, abs=0.05)
    assert a.stats.timeouts <= 2


def test_a_new_episode_never_raises_the_window_under_heavy_reordering() -> None:
    """Half the datagrams held back up to 300 ms (SACK on, RACK off, losses by duplicate
    ACKs): a new recovery episode starts with most of SND.NXT - SND.UNA SACKed far beyond
    the window.  Half of that span as the new window raised it (572 to 924 bytes, 53 times in
    the run that found it) until the sender put 36,000 datagrams a second into a link that
    carries 10,600.  The reduction now starts from the window in use (the larger of cwnd and
    the bytes in the network), as within an episode."""
    cfg = Config(
        congestion_control="newreno", mss_bytes=100, pmtud=False, sack=True, rack=False,
        recv_buffer_bytes=1 << 20, recv_autotune=False, keepalive_idle_s=None,
        idle_timeout_s=None, rto_min_s=1.0, dupack_threshold=10,
    )  # fmt: skip
    a_to_b = BottleneckLink(
        rng=random.Random(7), delay_s=0.0, rate_bps=10e6, queue_packets=50, reorder=0.5,
        reorder_extra_s=0.3, dup=0.05,
    )  # fmt: skip
    b_to_a = Link(rng=random.Random(8), delay_s=0.001, dup=0.3, reorder=0.1, reorder_extra_s=0.1)
    net = pair(config_a=cfg, config_b=cfg, a_to_b=a_to_b, b_to_a=b_to_a)
    a, _ = establish(net)
    a.send(bytes(3_000_000))
    episodes = raised = 0
    end = net.now + 3.0
    while net.now < end:
        before, started = a.stats.cwnd_bytes, a.stats.fast_retransmits
        if not net.step():
            break
        if a.stats.fast_retransmits > started:
            episodes += 1
            raised += a.stats.cwnd_bytes > before
    assert episodes >= 5
    assert raised == 0, (raised, episodes)
