"""Whether the peer is still there (utcp/connection/liveness.py): keepalive probes, the early
stall probe, the idle timeout, the re-sent handshake ACK and the challenge-ACK rate limit,
each driven with an explicit ``now``; and the control segments they ask for
(utcp/connection/control.py)."""

from __future__ import annotations

from collections import deque
from typing import Any

from tests.helpers import BottleneckLink, establish, pair
from utcp.config import Config
from utcp.connection.control import Control
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.liveness import HANDSHAKE_ACK_TRIES, Liveness
from utcp.connection.loss import LossRecovery
from utcp.connection.options import Negotiated
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.send_side import SendSide
from utcp.connection.tracepoints import TracePoints
from utcp.events import CloseReason, Event
from utcp.log import get_logger
from utcp.recovery import SentSegment
from utcp.state import ESTABLISHED

CONFIG = Config(
    pmtud=False,
    keepalive_idle_s=15.0,
    keepalive_interval_s=5.0,
    keepalive_probes=3,
    keepalive_stall_s=1.0,
    idle_timeout_s=30.0,
    rto_initial_s=1.0,
    rto_min_s=0.2,
    syn_retries=10,
    challenge_ack_interval_s=0.5,
).validate()
T0 = 100.0  # when the peer was last heard from


class Stack:
    """Liveness of an established connection with the real parts it reads."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        log = get_logger(test="liveness")
        self.snd = SendSide(iss=1, mss=config.mss_bytes)
        self.snd.una = self.snd.nxt = self.snd.max = 1
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
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
        self.live = Liveness(
            config,
            snd=self.snd,
            rcv=self.rcv,
            loss=self.loss,
            control=self.control,
            deadlines=self.dl,
            counters=self.count,
            log=log,
        )
        self.live.heard(T0)

    def probed(self) -> bool:
        """Whether a probe was asked for since last asked (and clear the request)."""
        sent = self.control.send_probe
        self.control.send_probe = False
        return sent


def test_arm_sets_keepalive_and_idle_deadlines_from_the_last_activity() -> None:
    s = Stack()
    s.live.arm(T0 + 2.0, True)
    assert s.dl.keepalive == T0 + 15.0
    assert s.dl.idle == T0 + 30.0
    s.live.heard(T0 + 4.0)
    s.live.arm(T0 + 5.0, True)  # armed timers are not moved (their handlers re-check)
    assert (s.dl.keepalive, s.dl.idle) == (T0 + 15.0, T0 + 30.0)
    fresh = Stack()
    fresh.live.last_activity = 0.0  # never heard: counted from the first arm
    fresh.live.arm(7.0, True)
    assert (fresh.dl.keepalive, fresh.dl.idle) == (22.0, 37.0)


def test_unanswered_keepalives_end_the_connection_as_idle() -> None:
    """RFC 9293 section 3.8.4 (RFC 1122 4.2.3.6): probes every keepalive_interval_s after
    keepalive_idle_s of silence; after keepalive_probes unanswered, give up."""
    s = Stack()
    for i, t in enumerate((115.0, 120.0, 125.0), start=1):
        assert s.live.on_keepalive(t, True) is None
        assert s.probed()
        assert s.live.keepalive_probes == i
        assert s.dl.keepalive == t + 5.0
    assert s.live.on_keepalive(130.0, True) is CloseReason.IDLE
    assert s.control.need_rst
    assert not s.probed()


def test_an_answer_resets_the_probes_and_the_next_one_waits_a_full_idle_period() -> None:
    s = Stack()
    s.dl.confirm = 200.0
    s.live.on_keepalive(115.0, True)
    assert s.probed()
    s.live.heard(117.0)
    assert s.live.keepalive_probes == 0
    assert s.dl.confirm is None  # the peer has our handshake ACK
    assert s.live.on_keepalive(120.0, True) is None
    assert not s.probed()
    assert s.dl.keepalive == 132.0


def test_a_peer_silent_mid_transfer_draws_one_early_stall_probe() -> None:
    """Config.keepalive_stall_s: after a full-sized segment, silence draws one probe after
    max(keepalive_stall_s, 3 RTO), not after keepalive_idle_s; the next keepalive deadline is
    the regular one."""
    s = Stack()
    s.rcv.note_segment_size(s.rcv.full_seg)
    assert s.live.keepalive_due(True) == T0 + 3.0  # 3 RTO (1 s before any sample)
    assert s.live.keepalive_due(False) == T0 + 15.0  # a peer done sending is not stalled
    assert s.live.on_keepalive(T0 + 3.0, True) is None
    assert s.probed()
    assert s.live.keepalive_probes == 0  # not a keepalive probe
    assert s.live.stall_probe_due(True) is None  # once per silence
    assert s.dl.keepalive == T0 + 15.0
    s.live.heard(T0 + 20.0)
    s.rcv.note_segment_size(s.rcv.full_seg)  # full-sized data again
    assert s.live.stall_probe_due(True) == T0 + 23.0  # a new silence may be probed again


def test_an_answer_without_data_ends_early_probing_until_data_comes_again() -> None:
    """The peer answers the stall probe but sends no data: it is alive and idle, so the next
    silence waits for the regular keepalive.  Each answer used to arm another early probe:
    an idle connection after a full-sized segment probed every second, for ever.  Full-sized
    data again makes the next silence worth an early probe."""
    s = Stack()
    s.rcv.note_segment_size(s.rcv.full_seg)
    s.live.arm(T0, True)
    assert s.dl.keepalive == T0 + 3.0
    assert s.live.on_keepalive(T0 + 3.0, True) is None
    assert s.probed()
    s.live.heard(T0 + 3.1)  # the answer, a bare ACK
    assert not s.rcv.peer_mid_stream
    s.live.arm(T0 + 3.1, True)
    assert s.dl.keepalive == T0 + 3.1 + 15.0  # the regular keepalive, not T0 + 6.1
    assert s.live.stall_probe_due(True) is None
    s.live.heard(T0 + 4.0)  # full-sized data again
    s.rcv.note_segment_size(s.rcv.full_seg)
    assert s.live.stall_probe_due(True) == T0 + 7.0


def test_a_challenge_in_the_answer_keeps_the_next_silence_its_early_probe() -> None:
    """The answer to the stall probe is a path challenge (a server validating our address
    after a NAT rebinding): should our echo be lost, the silence after it is probed early
    again, not only by the regular keepalive."""
    s = Stack()
    s.rcv.note_segment_size(s.rcv.full_seg)
    s.live.arm(T0, True)
    assert s.live.on_keepalive(T0 + 3.0, True) is None
    assert s.probed()
    s.live.heard(T0 + 3.1)
    s.live.challenged(True)
    s.live.arm(T0 + 3.1, True)
    assert s.dl.keepalive == T0 + 6.1
    assert s.live.on_keepalive(T0 + 6.1, True) is None
    assert s.probed()


def test_the_stall_probe_waits_at_least_keepalive_stall_s() -> None:
    s = Stack()
    s.loss.rtt.on_sample(0.050)  # RTO 200 ms: 3 RTO is shorter than the stall time
    s.rcv.note_segment_size(s.rcv.full_seg)
    assert s.live.stall_probe_due(True) == T0 + 1.0
    off = Stack(keepalive_stall_s=None)
    off.rcv.note_segment_size(off.rcv.full_seg)
    assert off.live.stall_probe_due(True) is None


def test_no_probe_before_the_deadline() -> None:
    s = Stack()
    assert s.live.on_keepalive(110.0, True) is None
    assert not s.probed()
    assert s.dl.keepalive == T0 + 15.0


def test_data_in_flight_stands_in_for_keepalives() -> None:
    """As Linux: the keepalive timer stands aside while retransmissions probe the peer."""
    s = Stack()
    s.loss.scoreboard.add(SentSegment(1, 101, 110.0))
    assert s.live.on_keepalive(115.0, True) is None
    assert not s.probed()
    assert s.live.keepalive_probes == 0
    assert s.dl.keepalive == 120.0


def test_the_user_timeout_bounds_a_silent_peer_once_probed() -> None:
    """RFC 5482 / Linux TCP_USER_TIMEOUT: with probes unanswered, the user timeout ends it."""
    s = Stack(user_timeout_s=20.0)
    s.live.on_keepalive(115.0, True)
    assert s.probed() and s.dl.keepalive == 120.0
    assert s.live.on_keepalive(120.0, True) is CloseReason.TIMEOUT
    assert s.control.need_rst


def test_a_short_user_timeout_still_lets_the_first_probe_be_answered() -> None:
    s = Stack(user_timeout_s=5.0)
    assert s.live.on_keepalive(115.0, True) is None
    assert s.probed()
    assert s.dl.keepalive == 116.0  # one RTO after the probe, not T0 + 5 (in the past)
    assert s.live.on_keepalive(116.0, True) is CloseReason.TIMEOUT


def test_keepalive_off_sends_nothing() -> None:
    s = Stack(keepalive_idle_s=None, keepalive_stall_s=None)
    assert s.live.keepalive_due(True) is None
    s.live.arm(T0, True)
    assert s.dl.keepalive is None
    assert s.live.on_keepalive(1000.0, True) is None
    assert not s.probed() and not s.control.need_rst


def test_an_icmp_error_awaiting_confirmation_is_probed_first() -> None:
    s = Stack()
    s.live.confirm_unreachable = True
    assert s.live.on_keepalive(101.0, True) is None
    assert s.probed()
    assert not s.live.confirm_unreachable
    assert s.dl.keepalive == T0 + 15.0
    assert s.live.keepalive_probes == 0


def test_the_idle_timeout_rearms_until_the_peer_was_really_silent_that_long() -> None:
    """QUIC-style idle timeout (RFC 9000 section 10.1): measured from the last packet heard."""
    s = Stack()
    s.live.heard(110.0)
    assert s.live.on_idle(130.0) is None
    assert s.dl.idle == 140.0
    assert not s.control.need_rst
    assert s.live.on_idle(140.0) is CloseReason.IDLE
    assert s.control.need_rst
    assert Stack(idle_timeout_s=None).live.on_idle(1e6) is None


def test_the_handshake_ack_is_resent_with_backoff_a_bounded_number_of_times() -> None:
    """RFC 6298 section 5.5-style doubling from the RTO, at most
    min(syn_retries, HANDSHAKE_ACK_TRIES) sends."""
    s = Stack()
    now = 10.0
    deadlines = []
    for _ in range(HANDSHAKE_ACK_TRIES):
        s.dl.confirm = None
        s.rcv.ack_now = False
        s.live.on_confirm(now)
        assert s.rcv.ack_now
        deadlines.append(s.dl.confirm)
        now = s.dl.confirm if s.dl.confirm is not None else now
    assert deadlines == [12.0, 16.0, 24.0, 40.0, 72.0, None]
    assert s.live.confirm_tries == HANDSHAKE_ACK_TRIES
    few = Stack(syn_retries=2)
    few.live.on_confirm(0.0)
    assert few.dl.confirm == 2.0
    few.dl.confirm = None
    few.live.on_confirm(2.0)
    assert few.dl.confirm is None


def test_challenge_acks_are_rate_limited() -> None:
    """RFC 5961 section 7: limit the challenge ACKs sent (one per 0.5 s here)."""
    live = Stack().live
    verdicts = [live.challenge_allowed(t) for t in (1.0, 1.2, 1.49, 1.5, 1.6, 2.1)]
    assert verdicts == [True, False, False, True, False, True]
    assert live.last_challenge_at == 2.1
    free = Stack(challenge_ack_interval_s=0.0).live
    assert [free.challenge_allowed(t) for t in (1.0, 1.0, 1.0)] == [True] * 3


def test_stray_resets_are_handed_over_once() -> None:
    control = Control()
    control.pending_raw.append(b"rst-1")
    control.pending_raw.append(b"rst-2")
    assert control.take_raw() == [b"rst-1", b"rst-2"]
    assert control.take_raw() == []


def test_an_idle_connection_after_a_transfer_stays_quiet() -> None:
    """Full-sized segments both ways, then a minute of silence on a fake network: one early
    probe each way and its answer, then the client's keepalive every keepalive_idle_s.  Each
    answer used to arm the next early probe: a probe and its answer every second, both ways,
    for as long as the connection stayed idle (15% of a core for 2,000 idle connections)."""
    net = pair(config_a=CONFIG, config_b=CONFIG)
    a, b = establish(net)
    n = 7 * a.stats.mss_bytes  # the last segment full-sized too
    a.send(bytes(n))
    b.send(bytes(n))
    net.run(until=lambda: len(net.a.received) == n and len(net.b.received) == n)
    net.run_for(1.0)  # the last ACKs
    quiet_from = len(net.trace)
    net.run_for(60.0)
    sent = [s.src for s in net.trace[quiet_from:]]
    # a: its early probe, its answer to b's, four keepalives; b: the same, less its own
    # keepalives (the client's reach it first).
    assert sent.count("a") <= 6, sent
    assert sent.count("b") <= 6, sent
    assert a.state is b.state is ESTABLISHED


def test_a_transfer_survives_an_outage_its_backed_off_timer_would_outlast() -> None:
    """Everything is lost both ways for 20 s in the middle of a transfer, then the path is
    back.  The retransmission timer, backed off to 15 s and more, would first fire after the
    idle timeout (30 s after the peer was last heard); one retransmission now leaves before
    it, is answered, and the transfer completes.  The connection used to end with
    ``TimeoutError`` ten seconds after the path had come back.  The receiver sends no
    keepalive of its own, so nothing but the sender's timer can find the path again."""
    links = [BottleneckLink(delay_s=0.02, rate_bps=5e6) for _ in range(2)]
    quiet = Config(keepalive_idle_s=None, keepalive_stall_s=None)
    net = pair(config_b=quiet, a_to_b=links[0], b_to_a=links[1])
    a, b = establish(net)
    start = net.now
    for link in links:
        link.blackhole = (start + 1.0, start + 21.0)
    size = 2_000_000
    a.send(bytes(size))
    net.run(
        until=lambda: len(net.b.received) >= size or a.close_reason is not None,
        max_time=120,
    )
    assert a.close_reason is None and b.close_reason is None
    assert net.b.received == bytes(size)
