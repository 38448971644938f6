"""CUBIC (utcp/congestion/cubic.py): HyStart++ and the cubic curve on synthetic ACKs and rate
samples, then whole transfers on the fake network through a bottleneck
(``tests.helpers.BottleneckLink``: a rate, a tail-drop queue, a delay, random loss).

RFC 9438 and RFC 9406 are the reference: a loss keeps 0.7 of the window and the window then
climbs back to W_max along ``C (t - K)^3 + W_max``, flat around ``t = K`` and convex beyond,
never below Reno's estimate; the first slow start moves to Conservative Slow Start when a
round's minimum RTT rises by an eighth (4 to 16 ms), and to congestion avoidance five rounds
later unless the RTT falls back.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from typing import NamedTuple

import pytest

from tests.helpers import BottleneckLink, bottleneck_pair, conns, establish, pair
from utcp import Config
from utcp.congestion import Cubic, RateSample, create
from utcp.congestion.cubic import CONGESTION_AVOIDANCE, CSS, RECOVERY, SLOW_START
from utcp.trace import ListTracer

MSS = 1000
UNBOUNDED = 1 << 62
# The RFCs' constants, written out so that a changed one in the module fails a test.
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


class Path:
    """An ack-clocked sender on a path of ``rtt`` seconds feeding a Cubic: a window of
    segments in flight, each acknowledged (``segments`` at a time) with the delivered count
    at its sending, so rounds end where RFC 9406's windowEnd ends them; one window of ACKs
    takes one round trip."""

    def __init__(self, rtt: float = 0.05, initial_window_segments: int = 10) -> None:
        self.cc = Cubic(mss=MSS, initial_window_segments=initial_window_segments)
        self.rtt = rtt
        self.now = 0.0
        self.delivered = 0
        self.in_flight: deque[int] = deque()  # delivered count when each segment left
        self.round_end = 0
        self.refill()

    def refill(self) -> None:
        while len(self.in_flight) * MSS < self.cc.cwnd:
            self.in_flight.append(self.delivered)

    def ack(self, rtt: float | None = None, *, segments: int = 1, sample: bool = True) -> None:
        """ACK the oldest ``segments``; ``sample=False``: they were retransmitted (no RTT)."""
        r = self.rtt if rtt is None else rtt
        prior = self.in_flight[0]
        for _ in range(segments):
            if self.in_flight:
                self.in_flight.popleft()
        acked = segments * MSS
        self.now += r * acked / self.cc.cwnd
        self.delivered += acked
        if prior >= self.round_end:
            self.round_end = self.delivered
        self.cc.on_ack(acked, now=self.now, rtt_s=r)
        self.cc.on_rate_sample(
            RateSample(
                delivery_rate=self.cc.cwnd / r,
                delivered=self.delivered - prior,
                interval_s=r,
                prior_delivered=prior,
                rtt_s=r if sample else None,
                app_limited=False,
                in_flight=len(self.in_flight) * MSS,
                newly_acked=acked,
            ),
            now=self.now,
        )
        self.refill()

    def round(self, rtt: float | None = None, *, samples: int = 1 << 30) -> None:
        """The ACKs of one round: the first ``samples`` of them carry an RTT."""
        self.ack(rtt, sample=samples > 0)
        n = 1
        while self.in_flight and self.in_flight[0] < self.round_end:
            self.ack(rtt, sample=n < samples)
            n += 1

    def run_for(self, seconds: float, *, segments: int = 1) -> None:
        end = self.now + seconds
        while self.now < end:
            self.ack(segments=segments)

    def lose(self, cwnd_segments: int) -> float:
        """A congestion event at ``cwnd_segments`` and its recovery; returns when the
        congestion avoidance stage starts (the next ACK)."""
        self.cc.cwnd = cwnd_segments * MSS
        self.cc.on_congestion_event(cwnd_segments * MSS, now=self.now)
        self.cc.on_recovery_exit(now=self.now)
        return self.now


def test_cubic_is_registered_and_asks_for_rate_samples() -> None:
    cc = create("cubic", mss=MSS, initial_window_segments=10)
    assert isinstance(cc, Cubic) and cc.wants_rate_samples
    assert cc.pacing_rate is None and cc.phase == SLOW_START
    assert Config(congestion_control="cubic").validate().congestion_control == "cubic"


def test_a_cubic_connection_reports_cubic_and_its_phases() -> None:
    """Both ends of a connection configured with ``cubic`` report it, and its phases
    (newreno has none) show in stats and traces."""
    config = Config(congestion_control="cubic")
    net = pair(config_a=config, config_b=config)
    a, b = conns(net)
    tracer = ListTracer()
    a.set_tracer(tracer)
    establish(net)
    for conn in (a, b):
        assert (conn.stats.congestion_control, conn.stats.congestion_phase) == (
            "cubic",
            SLOW_START,
        )
    data = random.Random(3).randbytes(200_000)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data))
    assert bytes(net.b.received) == data
    assert [e.fields["phase"] for e in tracer.named("cc_state")][:1] == [SLOW_START]


# ------------------------------------------------------------------ slow start, HyStart++


def test_slow_start_doubles_the_window_each_round() -> None:
    p = Path()
    for expected in (20, 40, 80, 160):
        p.round()
        assert p.cc.cwnd == expected * MSS
    assert p.cc.phase == SLOW_START and p.cc.ssthresh == UNBOUNDED


def test_one_ack_grows_slow_start_by_at_most_l_segments() -> None:
    """RFC 9406 section 4.3: L = 8 segments for an unpaced sender."""
    cc = Cubic(mss=MSS, initial_window_segments=10)
    cc.on_ack(20 * MSS, now=0.1, rtt_s=0.05)
    assert cc.cwnd == (10 + 8) * MSS


def test_an_rtt_rise_enters_css_and_css_rounds_later_congestion_avoidance() -> None:
    """RFC 9406 section 4.2: a round's minimum RTT an eighth above the last round's (50 ->
    60 ms, threshold 6.25 ms) enters CSS, where the window grows a quarter as fast; after
    CSS_ROUNDS rounds ssthresh is set to cwnd."""
    p = Path(rtt=0.05)
    for _ in range(3):
        p.round()
    assert p.cc.phase == SLOW_START
    p.round(0.06)
    assert p.cc.phase == CSS
    assert p.cc.ssthresh == UNBOUNDED and p.cc.in_slow_start
    before = p.cc.cwnd
    p.ack(0.06)
    assert p.cc.cwnd - before == MSS // 4
    # The round CSS began in is the first of its five rounds.
    for _ in range(4):
        p.round(0.06)
        assert p.cc.phase == CSS
    p.ack(0.06)
    assert p.cc.phase == CONGESTION_AVOIDANCE
    assert p.cc.ssthresh == p.cc.cwnd
    # RFC 9438 section 4.10: no W_max after a loss-free exit, so the curve starts at the
    # stage's window with K = 0.
    cwnd = p.cc.cwnd
    p.ack(0.06)
    assert p.cc.w_max == cwnd and p.cc.k_s == 0.0


def test_the_rtt_falling_back_during_css_resumes_slow_start() -> None:
    """RFC 9406 section 4.2: a CSS round's minimum RTT below the baseline CSS began at means
    the exit was spurious; slow start resumes, HyStart++ still on."""
    p = Path(rtt=0.05)
    for _ in range(3):
        p.round()
    p.round(0.06)
    assert p.cc.phase == CSS
    p.round(0.05)
    assert p.cc.phase == SLOW_START
    before = p.cc.cwnd
    p.ack(0.05)
    assert p.cc.cwnd - before == MSS
    p.round(0.05)
    p.round(0.06)
    assert p.cc.phase == CSS


@pytest.mark.parametrize(
    ("base_s", "rise_s", "enters_css"),
    [
        (0.050, 0.0060, False),  # threshold 50/8 = 6.25 ms
        (0.050, 0.0065, True),
        (0.010, 0.0035, False),  # 10/8 = 1.25 ms, raised to MIN_RTT_THRESH (4 ms)
        (0.010, 0.0045, True),
        (0.200, 0.0150, False),  # 200/8 = 25 ms, lowered to MAX_RTT_THRESH (16 ms)
        (0.200, 0.0170, True),
    ],
)
def test_the_delay_threshold_is_an_eighth_of_the_rtt_within_4_and_16_ms(
    base_s: float, rise_s: float, enters_css: bool
) -> None:
    p = Path(rtt=base_s)
    for _ in range(3):
        p.round()
    p.round(base_s + rise_s)
    assert p.cc.phase == (CSS if enters_css else SLOW_START)


@pytest.mark.parametrize(("samples", "enters_css"), [(7, False), (8, True)])
def test_a_round_needs_eight_rtt_samples(samples: int, enters_css: bool) -> None:
    """RFC 9406 section 4.2 decides on N_RTT_SAMPLE = 8 samples of a round; an ACK of a
    retransmitted segment carries none (Karn)."""
    p = Path(rtt=0.05)
    for _ in range(3):
        p.round()
    p.round(0.06, samples=samples)
    assert p.cc.phase == (CSS if enters_css else SLOW_START)


def test_after_a_loss_slow_start_is_standard() -> None:
    """RFC 9406 section 4.4: HyStart++ only in the initial slow start; a later one (after a
    timeout) runs to ssthresh whatever the RTT does."""
    p = Path(rtt=0.05)
    for _ in range(4):
        p.round()
    cwnd = p.cc.cwnd
    p.cc.on_congestion_event(cwnd, now=p.now)
    assert p.cc.phase == RECOVERY
    p.cc.on_recovery_exit(now=p.now)
    assert p.cc.phase == CONGESTION_AVOIDANCE
    p.cc.on_timeout(p.cc.cwnd, now=p.now)
    assert p.cc.phase == SLOW_START and p.cc.cwnd == MSS
    assert p.cc.ssthresh == int(int(cwnd * BETA) * BETA)  # 78.4 segments
    p.in_flight.clear()  # the timeout resends from the start
    p.refill()
    for _ in range(5):
        p.round()
    assert p.cc.cwnd == 32 * MSS
    while p.cc.phase == SLOW_START:
        p.ack(p.rtt + 0.02)
        assert p.cc.phase != CSS
    assert p.cc.phase == CONGESTION_AVOIDANCE
    assert p.cc.cwnd == p.cc.ssthresh


# ------------------------------------------------------------------ the cubic curve


def test_a_loss_keeps_beta_cubic_of_the_window() -> None:
    """RFC 9438 section 4.6: ssthresh = cwnd * 0.7, cwnd = ssthresh, W_max = cwnd."""
    cc = Cubic(mss=MSS, initial_window_segments=10)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(100 * MSS, now=1.0)
    assert cc.phase == RECOVERY
    assert cc.ssthresh == cc.cwnd == 70 * MSS
    assert cc.w_max == 100 * MSS
    cc.on_recovery_exit(now=1.1)
    assert cc.phase == CONGESTION_AVOIDANCE and cc.cwnd == 70 * MSS
    cc.cwnd = 2 * MSS
    cc.on_congestion_event(2 * MSS, now=1.2)
    assert cc.ssthresh == cc.cwnd == 2 * MSS  # never below two segments


def test_the_window_climbs_back_to_w_max_at_time_k() -> None:
    """RFC 9438 section 4.2: K = cubic_root(W_max (1 - beta) / C); the window follows the
    curve (towards where it is one RTT ahead) and is back at W_max at t = K."""
    p = Path(rtt=0.1)
    start = p.lose(100)
    k = (100 * (1 - BETA) / 0.4) ** (1 / 3)
    p.ack()
    assert p.cc.k_s == pytest.approx(k)
    assert p.cc.w_cubic(0.0) == pytest.approx(BETA * 100 * MSS)
    for t in (0.5, 1.0, 2.0, 3.0):
        p.run_for(start + t - p.now)
        assert p.cc.cwnd == pytest.approx(p.cc.w_cubic(t), rel=0.01)
        assert p.cc.cwnd < 0.995 * p.cc.w_max
    p.run_for(start + k - p.now)
    assert p.cc.cwnd == pytest.approx(100 * MSS, rel=0.005)


def test_one_round_trip_grows_the_window_by_at_most_half() -> None:
    """RFC 9438 section 4.2: the target is at most 1.5 cwnd, however far above it the curve
    is (here, one RTT after the sender sat idle for 30 s far into the convex region)."""
    p = Path(rtt=0.1)
    p.lose(100)
    p.ack()
    p.now += 30.0
    before = p.cc.cwnd
    assert p.cc.w_cubic(30.0) > 10 * before
    for _ in range(before // MSS):
        p.ack()
    assert 1.45 * before <= p.cc.cwnd <= 1.5 * before + MSS


def test_the_window_plateaus_around_w_max_then_grows_convex() -> None:
    """RFC 9438 sections 4.4-4.5: fast growth after the loss, flat near W_max, then faster
    and faster beyond it.  A long RTT and a large window keep Reno's estimate out of it."""
    p = Path(rtt=0.1)
    start = p.lose(1000)
    p.ack(segments=10)
    k = p.cc.k_s
    assert k == pytest.approx((1000 * (1 - BETA) / 0.4) ** (1 / 3))

    def cwnd_at(t: float) -> int:
        p.run_for(start + t - p.now, segments=10)
        return p.cc.cwnd

    first_second = cwnd_at(1.0) - 700 * MSS
    below, above = cwnd_at(k - 0.5), cwnd_at(k + 0.5)
    plateau = above - below
    assert first_second > 50 * MSS
    assert abs(plateau) < MSS
    assert below < 1000 * MSS < above + MSS
    beyond = [cwnd_at(k + s) for s in (1.0, 2.0, 3.0, 4.0)]
    steps = [b - a for a, b in itertools.pairwise(beyond)]
    assert steps[0] < steps[1] < steps[2]
    assert beyond[-1] > 1000 * MSS + 20 * MSS
    assert p.cc.w_est < p.cc.w_cubic(p.now - start)


def test_a_short_rtt_is_reno_friendly() -> None:
    """RFC 9438 section 4.3: on a 1 ms path W_cubic barely moves in 20 ms but Reno's
    estimate grows alpha_cubic = 3 (1 - 0.7) / (1 + 0.7) segments per round trip; the window
    follows W_est, and W_est keeps that rate past cwnd_prior, as Linux's cubic does (the
    section's SHOULD of one segment per round trip there made utcp take 13-29% more than
    kernel cubic at 1-5% random loss)."""
    p = Path(rtt=0.001)
    start = p.lose(100)
    p.run_for(0.020)
    t = p.now - start
    assert p.cc.w_est == pytest.approx((70 + ALPHA * 20) * MSS, rel=0.02)
    assert p.cc.cwnd == pytest.approx(p.cc.w_est, abs=MSS)
    assert p.cc.cwnd > p.cc.w_cubic(t) + 5 * MSS
    p.run_for(0.060)  # W_est passes cwnd_prior (100 segments)
    assert p.cc.w_est > 100 * MSS
    before = p.cc.cwnd
    p.run_for(0.020)
    assert p.cc.cwnd - before == pytest.approx(ALPHA * 20 * MSS, rel=0.15)


def test_the_window_closes_its_gap_to_w_est_over_a_window_of_acks() -> None:
    """In the Reno-friendly region cwnd grows towards W_est by (W_est - cwnd) / cwnd per
    segment acknowledged, as Linux's cubic does, not to W_est at once (section 4.3's
    SHOULD): at the few segments random loss leaves, the jump kept about half a segment more
    than kernel cubic, 6-12% more of a lossy 20 Mbit/s path."""
    p = Path(rtt=0.001)
    start = p.lose(100)
    p.run_for(0.005)
    cwnd = p.cc.cwnd
    assert cwnd > p.cc.w_cubic(p.now - start)  # Reno-friendly
    p.cc.w_est = cwnd + 4 * MSS  # a gap of four segments
    p.ack()
    assert p.cc.cwnd - cwnd < MSS // 4  # a step, not the whole gap
    for _ in range(cwnd // MSS):  # one window of ACKs
        p.ack()
    assert cwnd + 2 * MSS < p.cc.cwnd <= p.cc.w_est


def test_fast_convergence_lowers_w_max_when_the_window_shrinks() -> None:
    """RFC 9438 section 4.7: a loss below the last W_max sets W_max = cwnd (1 + beta) / 2."""
    cc = Cubic(mss=MSS, initial_window_segments=10)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(100 * MSS, now=1.0)
    cc.on_recovery_exit(now=1.1)
    cc.cwnd = 80 * MSS
    cc.on_congestion_event(80 * MSS, now=2.0)
    assert cc.w_max == pytest.approx(80 * MSS * (1 + BETA) / 2)
    assert cc.ssthresh == 56 * MSS
    cc.on_recovery_exit(now=2.1)
    cc.cwnd = 90 * MSS  # above W_max (68 segments): no convergence
    cc.on_congestion_event(90 * MSS, now=3.0)
    assert cc.w_max == 90 * MSS


def test_a_timeout_falls_to_one_segment_then_the_curve_starts_at_its_window() -> None:
    """RFC 9438 section 4.8: cwnd = 1 segment, ssthresh = 0.7 cwnd; the next stage uses
    K = 0 and W_max = its own starting window.  Another timeout in the slow start after
    the first keeps ssthresh (RFC 5681 section 3.1: the resent segments were lost)."""
    p = Path(rtt=0.05)
    p.cc.cwnd = 100 * MSS
    p.cc.on_timeout(100 * MSS, now=p.now)
    assert p.cc.cwnd == MSS and p.cc.ssthresh == 70 * MSS
    assert p.cc.phase == SLOW_START
    p.cc.on_timeout(100 * MSS, now=p.now + 1.0)
    assert p.cc.cwnd == MSS and p.cc.ssthresh == 70 * MSS
    p.in_flight.clear()  # the timeout resends from the start
    p.refill()
    for _ in range(3):
        p.ack()
    p.cc.on_timeout(100 * MSS, now=p.now + 1.0)
    assert p.cc.cwnd == MSS and p.cc.ssthresh == 70 * MSS
    p.in_flight.clear()
    p.refill()
    while p.cc.phase == SLOW_START:
        p.ack()
    assert p.cc.cwnd == 70 * MSS
    p.ack()
    assert p.cc.k_s == 0.0 and p.cc.w_max == 70 * MSS
    # Once data was delivered again, a timeout reduces again.
    cwnd = p.cc.cwnd
    p.cc.on_timeout(cwnd, now=p.now)
    assert p.cc.ssthresh == int(cwnd * BETA)


# ------------------------------------------------------------------ on the fake network

RATE_BPS = 10e6
DELAY_S = 0.02


class Transfer(NamedTuple):
    goodput: float  # bit/s over the whole transfer
    steady: float  # bit/s over its last two thirds, after the first slow start
    phases: list[str]  # a's controller's, in order
    link: BottleneckLink  # from a to b


def _transfer(cc: str, size: int, *, loss: float = 0.0, queue: int = 50, seed: int = 1) -> Transfer:
    """``size`` seeded bytes from a to b through the bottleneck, checked on arrival."""
    config = Config(congestion_control=cc, pmtud=False)
    net, links = bottleneck_pair(
        config, rate_bps=RATE_BPS, delay_s=DELAY_S, queue_packets=queue, loss=loss, seed=seed
    )
    a, _ = conns(net)
    tracer = ListTracer()
    a.set_tracer(tracer)
    establish(net)
    start = net.now
    data = random.Random(seed).randbytes(size)
    a.send(data)
    third = size // 3
    net.run(until=lambda: len(net.b.received) >= third, max_time=600)
    third_at, third = net.now, len(net.b.received)
    net.run(until=lambda: len(net.b.received) >= size, max_time=600)
    assert bytes(net.b.received) == data, f"seed={seed}"
    phases = [str(e.fields["phase"]) for e in tracer.named("cc_state")]
    assert a.stats.congestion_control == cc
    return Transfer(
        size * 8 / (net.now - start),
        (size - third) * 8 / (net.now - third_at),
        phases,
        links[0],
    )


def test_cubic_fills_the_bottleneck() -> None:
    """After the first slow start, at least 0.9 x the link's rate of goodput (the rate
    counts headers too), the window cycling between recovery and congestion avoidance."""
    t = _transfer("cubic", 3_000_000)
    assert t.steady >= 0.9 * RATE_BPS, f"{t.steady / 1e6:.2f} Mbit/s"
    assert t.phases[0] == SLOW_START
    assert t.phases[-2:] in ([RECOVERY, CONGESTION_AVOIDANCE], [CONGESTION_AVOIDANCE, RECOVERY])


def test_hystart_leaves_slow_start_before_a_deep_queue_overflows() -> None:
    """A queue of 200 segments (about 230 ms at 10 Mbit/s): the rising RTT moves the first
    slow start into CSS before any loss, and far fewer segments are dropped than NewReno's
    doubling to the first loss drops."""
    t = _transfer("cubic", 3_000_000, queue=200)
    assert t.phases[:3] == [SLOW_START, CSS, RECOVERY]
    reno = _transfer("newreno", 3_000_000, queue=200)
    assert t.link.queue_dropped < reno.link.queue_dropped / 2, (
        t.link.queue_dropped,
        reno.link.queue_dropped,
    )


@pytest.mark.parametrize("loss", [0.01, 0.02, 0.05])
def test_cubic_survives_random_loss(loss: float) -> None:
    """Random loss on a 40 ms path: every byte arrives intact, and about what NewReno gets
    through: at these windows CUBIC is in its Reno-friendly region, whose alpha_cubic is
    chosen so that a gentler decrease (0.7, not 0.5) with a slower increase averages Reno's
    rate (RFC 9438 section 4.3), as Linux's cubic and reno measure on the WAN benchmark."""
    t = _transfer("cubic", 2_000_000, loss=loss)
    assert t.link.dropped > 0 and RECOVERY in t.phases
    reno = _transfer("newreno", 2_000_000, loss=loss)
    assert 0.85 * reno.goodput < t.goodput < 1.3 * reno.goodput, (
        f"cubic {t.goodput / 1e6:.2f}, newreno {reno.goodput / 1e6:.2f} Mbit/s"
    )
