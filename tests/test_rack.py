"""RACK-TLP (RFC 8985) and D-SACK (RFC 2883): time-based loss detection on the fake network.

A segment is lost one reordering window after a segment sent later is delivered, rather than
after three duplicate ACKs: a loss among two segments in flight, and a lost retransmission, are
repaired without waiting for the retransmission timer.  The reordering window starts at a
quarter of the minimum RTT, is zero while three segments are SACKed on a path never seen to
reorder, and grows when the peer's D-SACKs show that a retransmission was spurious.  A tail
loss probe's episode tells the controller of a loss the probe repaired, and of none when a
D-SACK shows that the original had arrived.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.helpers import BottleneckLink, Link, Network, bottleneck_pair, conns, establish, pair
from utcp import Config
from utcp.connection import Connection
from utcp.connection.rack import Rack
from utcp.packet import Packet, decode
from utcp.recovery import SentSegment

MSS = 1000
CFG = Config(mss_bytes=MSS, pmtud=False, delayed_ack_s=0.04)
DELAY = 0.010  # one way: a 20 ms round trip


def _drop_nth_data(*ns: int) -> Callable[[int, Packet], bool]:
    """A ``Link.drop`` predicate losing the listed data segments (1-based) as they are sent."""
    seen = [0]

    def drop(index: int, packet: Packet) -> bool:
        if packet.payload:
            seen[0] += 1
            return seen[0] in ns
        return False

    return drop


def _sent_data(net: Network, src: str = "a") -> list[tuple[float, int]]:
    """(time, wire seq) of every data segment ``src`` sent."""
    return [(s.time, s.packet.seq) for s in net.trace if s.src == src and s.packet.payload]


def _connected(config: Config, a_to_b: Link | None = None) -> Network:
    net = pair(
        config_a=config,
        config_b=config,
        a_to_b=a_to_b or Link(delay_s=DELAY),
        b_to_a=Link(delay_s=DELAY),
    )
    establish(net)
    return net


# ------------------------------------------------------------------ the reordering window


@pytest.mark.parametrize("rack", [True, False])
def test_a_loss_among_two_segments_is_found_one_reordering_window_after_the_next_arrives(
    rack: bool,
) -> None:
    """Two segments, the first lost: one SACK can never make three duplicate ACKs, so without
    RACK the tail loss probe (two RTTs) resends the second and the retransmission timer the
    first; with RACK the first is resent a quarter of the minimum RTT after the SACK of the
    second arrives (RFC 8985 section 6.2, reo_wnd = min_rtt / 4)."""
    net = _connected(CFG.replace(rack=rack), Link(delay_s=DELAY, drop=_drop_nth_data(1)))
    a, _ = conns(net)
    t0 = net.now
    a.send(bytes(2 * MSS))
    net.run(until=lambda: len(net.b.received) == 2 * MSS)
    sent = _sent_data(net)
    first_seq = sent[0][1]
    resent_at = next(t for t, seq in sent[2:] if seq == first_seq) - t0
    st = a.stats
    if rack:
        # The SACK arrives one RTT after the sending; the window is 20 ms / 4 more.
        assert resent_at == pytest.approx(2 * DELAY + 2 * DELAY / 4, abs=1e-3)
        assert (st.reorder_timeouts, st.tail_loss_probes, st.timeouts) == (1, 0, 0)
        assert st.retransmissions == 1
    else:
        assert resent_at > 2 * 2 * DELAY  # not before the probe's two RTTs
        assert st.reorder_timeouts == 0
        assert st.tail_loss_probes + st.timeouts >= 1


def test_three_sacked_segments_on_a_path_that_never_reordered_mean_no_wait() -> None:
    """With three segments SACKed and no reordering seen the window is zero (section 6.2 step
    4): the hole is resent on the ACK that shows it, as DupThresh would."""
    net = _connected(CFG, Link(delay_s=DELAY, drop=_drop_nth_data(1)))
    a, _ = conns(net)
    t0 = net.now
    a.send(bytes(5 * MSS))
    net.run(until=lambda: len(net.b.received) == 5 * MSS)
    sent = _sent_data(net)
    first_seq = sent[0][1]
    resent_at = next(t for t, seq in sent[5:] if seq == first_seq) - t0
    assert resent_at == pytest.approx(2 * DELAY, abs=1e-3)
    assert a.stats.reorder_timeouts == 0
    assert a.stats.fast_retransmits == 1


def test_a_lost_retransmission_is_found_by_time_without_the_retransmission_timer() -> None:
    """The first segment and its first retransmission are both lost: segments sent after the
    retransmission are delivered, so RACK declares it lost too (section 6.2 step 5 walks
    retransmissions in the order they were sent) and no timeout is needed."""
    seen: list[int] = []

    def drop(index: int, packet: Packet) -> bool:
        if not packet.payload:
            return False
        seen.append(packet.seq)
        return seen.count(seen[0]) <= 2 and packet.seq == seen[0]

    net = _connected(CFG, Link(delay_s=DELAY, drop=drop))
    a, _ = conns(net)
    data = random.Random(1).randbytes(40 * MSS)
    a.send(data[: 10 * MSS])
    net.run_for(0.015)  # the first ten are under way when the rest is written
    a.send(data[10 * MSS :])
    net.run(until=lambda: len(net.b.received) == len(data))
    assert bytes(net.b.received) == data
    st = a.stats
    assert st.timeouts == 0
    assert seen.count(seen[0]) == 3  # sent, resent, resent again


def test_fake_network_transfer_under_loss_and_reordering_is_intact() -> None:
    """Random loss and reordering both ways: every byte arrives, in order."""
    rng = random.Random(5)
    link = Link(rng=random.Random(6), delay_s=DELAY, loss=0.03, reorder=0.05, reorder_extra_s=0.01)
    back = Link(rng=random.Random(7), delay_s=DELAY, loss=0.03)
    net = pair(config_a=CFG, config_b=CFG, a_to_b=link, b_to_a=back)
    establish(net)
    a, _ = conns(net)
    data = rng.randbytes(400 * MSS)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data))
    assert bytes(net.b.received) == data


# ------------------------------------------------------------------ D-SACK and reordering


def _reordering_link(every: int, extra_s: float) -> Link:
    """A link holding back every ``every``-th data segment by ``extra_s``: pure reordering."""
    link = Link(delay_s=DELAY)
    count = [0]
    plain = Link.transmit

    def transmit(data: bytes, now: float) -> list[tuple[float, bytes]]:
        out = plain(link, data, now)
        if len(data) > 100:  # a data segment
            count[0] += 1
            if count[0] % every == 0:
                return [(t + extra_s, d) for t, d in out]
        return out

    link.transmit = transmit  # type: ignore[method-assign]
    return link


def test_dsacks_grow_the_reordering_window_until_reordering_stops_causing_retransmissions() -> None:
    """Every 20th segment is held back 8 ms on a 20 ms path: at first RACK takes it for lost
    (three later segments are SACKed, the window is zero) and resends it; the original then
    arrives, the receiver reports the duplicate with a D-SACK, and the window grows by a
    quarter of the minimum RTT per round trip with a D-SACK (section 6.2 step 4) until it
    covers the reordering: the spurious retransmissions stop."""
    net = _connected(CFG, _reordering_link(20, 0.008))
    a, b = conns(net)
    data = random.Random(2).randbytes(2000 * MSS)
    a.send(data)
    halves: list[int] = []
    net.run(until=lambda: len(net.b.received) >= len(data) // 2)
    halves.append(a.stats.retransmissions)
    net.run(until=lambda: len(net.b.received) == len(data))
    halves.append(a.stats.retransmissions - halves[0])
    assert bytes(net.b.received) == data
    assert a.stats.dsacks_received >= 1
    assert b.stats.duplicate_segments_received >= 1
    assert halves[0] >= 1  # the first reorderings were taken for losses
    assert halves[1] == 0  # then the window covered them
    assert a.stats.timeouts == 0


def test_without_dsacks_the_window_does_not_grow() -> None:
    """The same path with the sender's D-SACK handling as a control: a receiver that sends no
    D-SACK (SACK off on both ends falls back to DupThresh, so instead the Rack part is fed
    directly) leaves the multiplier at one."""
    rack = Rack()
    for _ in range(5):
        rack.on_recovery_exit()
    assert rack.reo_wnd_mult == 1
    rack.on_dsack(una=0, nxt=100)
    rack.on_dsack(una=50, nxt=200)  # same round trip: once only
    assert rack.reo_wnd_mult == 2
    rack.on_dsack(una=100, nxt=300)  # the next round trip
    assert rack.reo_wnd_mult == 3
    for _ in range(15):
        rack.on_recovery_exit()
    assert rack.reo_wnd_mult == 3
    rack.on_recovery_exit()  # sixteen episodes without a D-SACK
    assert rack.reo_wnd_mult == 1


# ------------------------------------------------------------------ the Rack part alone


def test_reo_wnd_rules() -> None:
    """Section 6.2 step 4: zero in recovery or with DupThresh segments SACKed unless the path
    reorders; else mult * min_rtt / 4, at most SRTT."""
    rack = Rack()
    args = {"min_rtt": 0.04, "srtt": 0.05, "dupthresh": 3}
    assert rack.reo_wnd(reordering_seen=False, in_recovery=True, sacked_segs=0, **args) == 0.0
    assert rack.reo_wnd(reordering_seen=False, in_recovery=False, sacked_segs=3, **args) == 0.0
    assert rack.reo_wnd(
        reordering_seen=False, in_recovery=False, sacked_segs=2, **args
    ) == pytest.approx(0.01)
    assert rack.reo_wnd(
        reordering_seen=True, in_recovery=True, sacked_segs=9, **args
    ) == pytest.approx(0.01)
    rack.reo_wnd_mult = 10
    assert rack.reo_wnd(
        reordering_seen=True, in_recovery=False, sacked_segs=0, **args
    ) == pytest.approx(0.05)


def test_rack_update_keeps_the_most_recently_sent_and_ignores_a_too_quick_retransmission() -> None:
    """Step 2: RACK follows the latest transmission delivered; an ACK of a retransmission that
    comes sooner than the minimum RTT answers the original and teaches nothing."""
    rack = Rack()
    a = SentSegment(0, 10, 1.0)
    a.tx = 5
    rack.update(a, 1.05, min_rtt=0.04)
    assert (rack.xmit_tx, rack.rtt) == (5, pytest.approx(0.05))
    older = SentSegment(10, 20, 0.9)
    older.tx = 3
    rack.update(older, 1.06, min_rtt=0.04)
    assert rack.xmit_tx == 5
    retx = SentSegment(20, 30, 1.04)
    retx.tx = 9
    retx.retx = 1
    rack.update(retx, 1.06, min_rtt=0.04)  # 20 ms: quicker than the path
    assert rack.xmit_tx == 5
    rack.update(retx, 1.09, min_rtt=0.04)
    assert (rack.xmit_tx, rack.rtt) == (9, pytest.approx(0.05))


# ------------------------------------------------------------------ the tail loss probe


class AckDropper:
    """A ``Link.drop`` predicate for the ACK path: off until armed, then it drops the pure
    ACKs whose count (from 1 at arming) ``which`` accepts."""

    def __init__(self, which: Callable[[int], bool]) -> None:
        self.count = -1
        self.which = which

    def __call__(self, index: int, packet: Packet) -> bool:
        if packet.payload or self.count < 0:
            return False
        self.count += 1
        return self.which(self.count)


def _armed_pair(dropper: AckDropper) -> tuple[Network, Connection]:
    """An established pair whose ACKs from b pass through ``dropper``, armed now."""
    net = pair(
        config_a=CFG,
        config_b=CFG,
        a_to_b=Link(delay_s=DELAY),
        b_to_a=Link(delay_s=DELAY, drop=dropper),
    )
    a, _ = establish(net)
    dropper.count = 0
    return net, a


def test_a_probe_whose_original_arrived_is_reported_by_dsack_and_costs_no_window() -> None:
    """The last segment's ACK is lost, so the probe resends a segment that had arrived: the
    receiver's D-SACK ends the episode without a loss (section 7.4); the window stays."""
    # The first ACK is that of all five segments: they arrive together.
    net, a = _armed_pair(AckDropper(lambda n: n == 1))
    a.send(bytes(5 * MSS))
    net.run(until=lambda: a.stats.tail_loss_probes == 1)
    cwnd = a.stats.cwnd_bytes
    a.send(bytes(MSS))
    net.run(until=lambda: len(net.b.received) == 6 * MSS and not a.stats.bytes_in_flight)
    st = a.stats
    assert st.dsacks_received == 1
    assert st.tail_loss_repairs == 0
    assert st.cwnd_bytes >= cwnd


def test_a_probe_sends_new_data_when_some_waits_and_the_peer_has_room() -> None:
    """The ACKs of a full congestion window are lost while more data waits: the probe is a
    segment of that new data (RFC 8985 section 7.3), not a resent one, and its ACK shows that
    everything arrived; nothing is retransmitted."""
    dropper = AckDropper(lambda n: True)  # every ACK until the probe's, below
    net, a = _armed_pair(dropper)
    a.send(bytes(30 * MSS))  # ten segments fit the initial window
    net.run(until=lambda: a.stats.tail_loss_probes == 1)
    dropper.count = -1  # the probe's ACK gets through
    net.run(until=lambda: len(net.b.received) == 30 * MSS and not a.stats.bytes_in_flight)
    sent = _sent_data(net)
    seqs = [seq for _, seq in sent]
    assert len(seqs) == len(set(seqs)) == 30  # every segment once: the probe was the 11th
    assert a.stats.retransmissions == 0
    assert a.stats.tail_loss_repairs == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_slow_start_overshoot_into_a_shallow_queue_is_repaired_without_a_timeout(
    seed: int,
) -> None:
    """Slow start doubles into a 50-packet queue on a 10 Mbit/s, 40 ms path and loses dozens
    of segments.  The halved window still fills the queue, so retransmissions sent during the
    episode are lost too: each such loss is a new congestion event (RFC 9002 section 7.3.2),
    and each resend of the oldest segment restarts its timer, so RACK repairs all of it
    without a retransmission timeout.  NewReno's slow start: bbr's STARTUP no longer
    overfills a queue of more than one BDP (its window is two BDPs once a queue shows)."""
    config = Config(pmtud=False, congestion_control="newreno")
    net, links = bottleneck_pair(config, rate_bps=10e6, delay_s=0.02, seed=seed)
    a, _ = establish(net)
    data = random.Random(seed).randbytes(3_000_000)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data))
    assert bytes(net.b.received) == data
    assert links[0].queue_dropped > 20  # the overshoot happened
    assert a.stats.timeouts == 0


def test_acks_lost_or_duplicated_draw_no_spurious_retransmission() -> None:
    """Nothing is lost towards the receiver, but ACKs are lost and duplicated on the way back:
    RACK judges only by what a later segment's delivery proves, and the probe sends new data
    while some waits, so nothing is sent twice."""
    back = Link(rng=random.Random(3), delay_s=DELAY, loss=0.2, dup=0.1)
    # A bottleneck spaces the segments out, so each pair draws its own ACK.
    there = BottleneckLink(delay_s=DELAY, rate_bps=10e6, queue_packets=1000)
    net = pair(config_a=CFG, config_b=CFG, a_to_b=there, b_to_a=back)
    a, b = establish(net)
    data = random.Random(4).randbytes(300 * MSS)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data))
    assert bytes(net.b.received) == data
    assert back.dropped > 10 and back.duplicated > 10
    assert a.stats.fast_retransmits == 0
    assert b.stats.duplicate_segments_received == a.stats.retransmissions == 0


class _HoldsOne(Link):
    """A ``Link`` that delivers the ``nth`` data segment (1-based, first transmissions
    counted; resent ones pass as they are) ``extra_s`` late, so the segments after it pass
    it; it loses the ``drop``-th and duplicates the ``dup``-th (0: none)."""

    def __init__(self, nth: int, extra_s: float, dup: int = 0, drop: int = 0) -> None:
        super().__init__(delay_s=DELAY)
        self.hold_nth, self.extra_s, self.dup_nth, self.drop_nth = nth, extra_s, dup, drop
        self.seqs: set[int] = set()

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        p = decode(data)
        if not p.payload or p.seq in self.seqs:
            return super().transmit(data, now)
        self.seqs.add(p.seq)
        n = len(self.seqs)
        if n == self.drop_nth:
            return []
        out = super().transmit(data, now)
        if n == self.hold_nth:
            out = [(t + self.extra_s, d) for t, d in out]
        if n == self.dup_nth:
            out = out + [(t + 0.001, d) for t, d in out]
        return out


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_a_recovery_the_dsacks_show_spurious_gives_the_window_back(cc: str) -> None:
    """One segment of the first flights arrives 15 ms late: RACK, on a path never seen to
    reorder, takes it for lost, resends it and halves the window.  The receiver's D-SACK of
    the resent copy shows that nothing was lost; the window and threshold from before the
    event come back and slow start goes on (it had ended, and the transfer crawled on in
    congestion avoidance from half a window: a path that reorders cost a loss-based
    controller a quarter of its throughput)."""
    config = CFG.replace(congestion_control=cc)
    net = pair(config_a=config, config_b=config, a_to_b=_HoldsOne(12, 0.015))
    a, _ = establish(net)
    a.send(bytes(400 * MSS))
    net.run(until=lambda: a.stats.fast_retransmits == 1)
    before = a.stats
    net.run(until=lambda: a.stats.spurious_recoveries == 1 or not a.stats.bytes_in_flight)
    st = a.stats
    assert st.spurious_recoveries == 1 and st.dsacks_received == 1 and st.retransmissions == 1
    assert st.ssthresh_bytes > before.ssthresh_bytes  # back in slow start
    net.run(until=lambda: len(net.b.received) == 400 * MSS)
    assert a.stats.fast_retransmits == 1 and a.stats.timeouts == 0


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_a_real_loss_is_not_undone_by_the_dsack_of_a_duplicated_segment(cc: str) -> None:
    """A segment is lost and the network duplicates a later one, whose second copy draws a
    D-SACK during the recovery: that copy was never resent, so the episode's one resend
    (which repaired a real loss) is not shown spurious and the window stays reduced."""
    config = CFG.replace(congestion_control=cc)
    net = pair(config_a=config, config_b=config, a_to_b=_HoldsOne(0, 0.0, dup=14, drop=12))
    a, _ = establish(net)
    a.send(bytes(400 * MSS))
    net.run(until=lambda: len(net.b.received) == 400 * MSS)
    st = a.stats
    assert st.dsacks_received >= 1 and st.fast_retransmits >= 1
    assert st.spurious_recoveries == 0
    assert st.ssthresh_bytes < 1 << 40  # the reduction stands
