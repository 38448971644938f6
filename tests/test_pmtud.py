"""Path MTU discovery (RFC 8899): the search on its own, then two connections over fake paths
that silently drop datagrams above a size, a size that may change mid-connection.

Everything runs on the simulated timeline of tests/helpers.py: seeded, no sleeps, and each
scenario names its path limit in the test id.
"""

from __future__ import annotations

import random

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import QUIET, BottleneckLink, Link, Network, captured_logs, conns, pair
from tests.test_packet import PMTUD_SYN_VECTOR
from utcp import CloseReason, Config, Connection, ConnectionState, Flag, Packet, decode, encode
from utcp.config import BASE_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES
from utcp.packet import HEADER_SIZE
from utcp.pmtud import (
    CONTROL_PROBE_BYTES,
    MAX_PROBES,
    PLATEAUS_BYTES,
    PMTU_RAISE_TIMER_S,
    Pmtud,
    PmtudState,
)
from utcp.recovery import Scoreboard, SentSegment
from utcp.trace import ListTracer

S = ConnectionState
P = PmtudState
RTT_S = 2 * Link().delay_s  # the fake links' round trip
ISN_A, ISN_B = 1000, 5000


def _path(
    mtu: int | None,
    *,
    config_a: Config | None = None,
    config_b: Config | None = None,
    changes: tuple[tuple[float, int | None], ...] = (),
    tracer: ListTracer | None = None,
) -> Network:
    """A client and a server joined both ways by a path that drops datagrams above ``mtu``."""
    net = pair(
        config_a=config_a,
        config_b=config_b,
        a_to_b=Link(mtu=mtu, mtu_changes=changes),
        b_to_a=Link(mtu=mtu, mtu_changes=changes),
        connect=False,
    )
    a, _ = conns(net)
    if tracer is not None:
        a.set_tracer(tracer, now=net.now)
    a.connect(now=net.now)
    net.run(until=lambda: all(c.state is S.ESTABLISHED for c in conns(net)))
    return net


def _done(net: Network, sides: str = "ab") -> bool:
    """Whether discovery has completed on each of ``sides`` ("a", "b" or both).  A side
    probes only once it has had more queued than one segment carries: a pure receiver,
    sending only ACKs, never completes a search because it never starts one."""
    ends = dict(zip("ab", conns(net), strict=True))
    return all(ends[name].stats.pmtud_state == "SEARCH_COMPLETE" for name in sides)


def _sent(net: Network, src: str, *, probes: bool) -> list[Packet]:
    return [s.packet for s in net.trace if s.src == src and (s.packet.probe is not None) == probes]


def _size(p: Packet) -> int:
    return len(encode(p))


# ------------------------------------------------------------------------ the search alone


def _search(limit: int, ceiling: int = MAX_UDP_PAYLOAD_BYTES) -> tuple[Pmtud, float, list[int]]:
    """Run a ``Pmtud`` against a path carrying datagrams up to ``limit``; every probe is
    answered after one RTT or lost.  Returns it, the time it took and the sizes probed."""
    pm = Pmtud(base_bytes=BASE_DATAGRAM_BYTES, log=structlog.get_logger())
    now = 0.0
    pm.start(ceiling=ceiling, now=now)
    probed: list[int] = []
    for _ in range(1000):
        if pm.state is P.SEARCH_COMPLETE:
            return pm, now, probed
        probe = pm.next_probe(now=now, timeout_s=3 * RTT_S)
        assert probe is not None, pm.state
        probe_id, size = probe
        probed.append(size)
        if size <= limit:
            now += RTT_S
            pm.on_probe_acked(probe_id, now=now)
        else:
            assert pm.timer is not None
            now = pm.timer
            pm.on_timer(now=now)
    raise AssertionError(f"no convergence for {limit}: {probed}")


@settings(max_examples=300, derandomize=True)
@given(limit=st.integers(BASE_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES))
def test_prop_search_finds_the_largest_size_that_gets_through(limit: int) -> None:
    pm, _, probed = _search(limit)
    assert pm.size == limit
    assert max(s for s in probed if s <= limit) == limit
    # Each failing size costs MAX_PROBES probes; a bounded handful fail.
    failed = {s for s in probed if s > limit}
    assert len(failed) <= 20, (limit, probed)
    assert all(probed.count(s) == MAX_PROBES for s in failed)
    assert all(s <= MAX_UDP_PAYLOAD_BYTES for s in probed)


@pytest.mark.parametrize(
    ("limit", "failures"),
    [(MAX_UDP_PAYLOAD_BYTES, 0), (1472, 2), (1452, 2), (8972, 2), (65488, 2), (1400, 5)],
)
def test_common_sizes_are_found_with_few_failed_probes(limit: int, failures: int) -> None:
    """Paths of a common size converge after a handful of failed sizes at most."""
    pm, _, probed = _search(limit)
    assert pm.size == limit
    assert len({s for s in probed if s > limit}) <= failures, probed


def test_search_order_is_base_then_plateaus_then_the_ceiling() -> None:
    _, took, probed = _search(MAX_UDP_PAYLOAD_BYTES)
    assert probed == [BASE_DATAGRAM_BYTES, *PLATEAUS_BYTES, MAX_UDP_PAYLOAD_BYTES]
    assert took == pytest.approx(len(probed) * RTT_S)


def test_ceiling_below_the_base_size_confirms_it_and_stops() -> None:
    pm, _, probed = _search(MAX_UDP_PAYLOAD_BYTES, ceiling=1000)
    assert probed == [1000] and pm.size == 1000 and pm.state is P.SEARCH_COMPLETE


def test_base_size_lost_max_probes_times_is_the_error_state() -> None:
    pm = Pmtud(base_bytes=1200, log=structlog.get_logger())
    pm.start(ceiling=9000, now=0.0)
    for k in range(MAX_PROBES):
        probe = pm.next_probe(now=float(k), timeout_s=0.5)
        assert probe == (k + 1, 1200)
        assert pm.next_probe(now=float(k), timeout_s=0.5) is None  # one in flight at a time
        pm.on_timer(now=k + 0.5)
    assert pm.state is P.ERROR and pm.size == 1200 and pm.timer is None
    # With the failure, one small control probe (no timer: its answer is only evidence
    # that the peer is there while the base size does not get through).
    control = pm.next_probe(now=3.0, timeout_s=0.5)
    assert control is not None and control[1] == CONTROL_PROBE_BYTES and pm.timer is None
    assert not pm.probe_due
    assert pm.on_probe_acked(control[0], now=3.1) is False and pm.control_answered_at == 3.1
    pm.wake(now=pm.wake_at - 0.01)  # traffic too early: nothing yet
    assert not pm.probe_due
    pm.wake(now=pm.wake_at)  # traffic after the wait: the base size once more
    probe = pm.next_probe(now=10.0, timeout_s=0.5)
    assert probe is not None and probe[1] == 1200
    assert pm.on_probe_acked(probe[0], now=10.1) is False  # the base size is no news
    assert pm.state is P.SEARCHING


def test_a_probe_behind_unacknowledged_data_waits_and_waits_longer_while_nothing_moves() -> None:
    """While SEARCHING, a probe sent behind data up to 1000 whose timer runs out with that
    data unacknowledged is not lost yet: it waits a timer's length while SND.UNA moves,
    twice the last wait while it stands still (an outage keeps no timer firing every few
    milliseconds), and is lost once the data ahead of it is acknowledged."""
    pm = Pmtud(base_bytes=1200, log=structlog.get_logger())
    pm.start(ceiling=9000, now=0.0)
    base = pm.next_probe(now=0.0, timeout_s=0.5)
    assert base is not None and pm.on_probe_acked(base[0], now=0.1) is False
    assert pm.state is P.SEARCHING
    probe = pm.next_probe(now=1.0, timeout_s=0.5, sent_after=1000, order=5)
    assert probe is not None and pm.timer == 1.5
    timers = []
    for una in (400, 400, 400, 400, 700):
        assert pm.timer is not None
        pm.on_timer(now=pm.timer, acked_through=una, delivered_order=5)
        timers.append(pm.timer)
    assert timers == [2.0, 3.0, 5.0, 9.0, 9.5] and pm.probes_lost == 0
    pm.on_timer(now=9.5, acked_through=1000, delivered_order=5)  # its chance came
    assert pm.probes_lost == 1 and pm.probe_due and pm.timer is None
    # Data sent after the probe delivered (RACK's order beyond its own) ends the wait too.
    again = pm.next_probe(now=10.0, timeout_s=0.5, sent_after=2000, order=9)
    assert again is not None and again[1] == probe[1]
    pm.on_timer(now=10.5, acked_through=1500, delivered_order=10)
    assert pm.probes_lost == 2


def test_unknown_duplicate_and_late_answers() -> None:
    pm = Pmtud(base_bytes=1200, log=structlog.get_logger())
    pm.start(ceiling=9000, now=0.0)
    base = pm.next_probe(now=0.0, timeout_s=1.0)
    assert base is not None
    assert pm.on_probe_acked(999, now=0.1) is False  # never sent: ignored
    assert pm.state is P.BASE
    pm.on_probe_acked(base[0], now=0.1)
    assert pm.on_probe_acked(base[0], now=0.1) is False  # a duplicate is no news
    first = pm.next_probe(now=0.1, timeout_s=1.0)
    assert first == (2, 1452)
    pm.on_timer(now=1.1)  # lost, or only late
    second = pm.next_probe(now=1.1, timeout_s=1.0)
    assert second == (3, 1452)
    assert pm.on_probe_acked(first[0], now=1.2) is True  # the late answer still counts
    assert pm.size == 1452 and pm.timer is None  # and the retry's timer is moot
    assert pm.next_probe(now=1.2, timeout_s=1.0) == (4, 1472)


def test_black_hole_falls_back_to_the_base_size_and_searches_below_the_failed_size() -> None:
    pm, now, _ = _search(9000)
    assert pm.on_black_hole(9000, now=now) is True
    assert (pm.state, pm.size, pm.black_holes) == (P.BASE, 1200, 1)
    assert pm.on_black_hole(9000, now=now) is False  # already at the base size
    limit = 1400  # what the path carries now
    while pm.state is not P.SEARCH_COMPLETE:
        probe = pm.next_probe(now=now, timeout_s=0.1)
        assert probe is not None
        assert probe[1] < 9000  # never the size that just failed, nor above
        if probe[1] <= limit:
            now += RTT_S
            pm.on_probe_acked(probe[0], now=now)
        else:
            now += 0.1
            pm.on_timer(now=now)
    assert pm.size == limit


def test_raise_timer_searches_again_only_with_traffic() -> None:
    pm, now, _ = _search(1472)
    assert pm.wake_at == pytest.approx(now + PMTU_RAISE_TIMER_S)
    assert pm.timer is None  # an idle connection keeps no timer for it
    pm.wake(now=now + PMTU_RAISE_TIMER_S - 1)
    assert pm.state is P.SEARCH_COMPLETE
    pm.wake(now=now + PMTU_RAISE_TIMER_S)
    assert pm.state is P.SEARCHING
    assert pm.next_probe(now=now, timeout_s=1.0) == (pm.probes_sent, 8952)


def test_transitions_outside_the_table_are_bugs() -> None:
    pm = Pmtud(base_bytes=1200, log=structlog.get_logger())
    with pytest.raises(AssertionError, match="DISABLED -> SEARCH_COMPLETE"):
        pm._set_state(P.SEARCH_COMPLETE)


# ------------------------------------------------------------------------ over a path


@pytest.mark.parametrize("limit", [1400, 1500, 9000, 1337])
def test_discovery_converges_under_a_transfer_without_touching_congestion_control(
    limit: int,
) -> None:
    net = _path(limit)
    a, b = conns(net)
    start = net.now
    data = random.Random(limit).randbytes(3 << 20)
    a.send(data)
    cwnds: list[int] = []
    net.on_step = lambda n: cwnds.append(a.stats.cwnd_bytes)
    net.run(until=lambda: _done(net, "a"), max_time=60)
    took = net.now - start
    net.run(until=lambda: len(net.b.received) == len(data), max_time=60)
    assert bytes(net.b.received) == data
    st = a.stats
    assert st.pmtu_bytes == limit and st.mss_bytes == limit - HEADER_SIZE
    assert st.pmtud_probes_lost > 0  # probes above the limit were lost ...
    for conn in (a, b):
        st = conn.stats
        assert st.retransmissions == st.timeouts == st.fast_retransmits == 0  # ... harmlessly
        assert st.duplicate_acks == 0  # probes and their answers are no duplicate ACKs
        assert st.ssthresh_bytes == 0x7FFFFFFF
    # The receiver has only ACKs to send, never more than a segment queued: it never probes.
    assert b.stats.pmtud_probes_sent == 0 and b.stats.pmtu_bytes == BASE_DATAGRAM_BYTES
    assert cwnds == sorted(cwnds) and cwnds[-1] > cwnds[0]  # never reduced, still growing
    assert took <= 60 * RTT_S, took  # a few RTTs per size that fails (MAX_PROBES lost each)
    assert net.links["a"].too_big == a.stats.pmtud_probes_lost  # only probes were too big
    sent_before = len(net.trace)
    a.send(bytes(100_000))
    net.run(until=lambda: len(net.b.received) == len(data) + 100_000)
    later = [_size(s.packet) for s in net.trace[sent_before:] if s.src == "a"]
    assert max(later) == limit  # the size found is the size used


def test_discovery_goes_on_while_both_sides_close_at_once() -> None:
    """The client writes 2 MB and its EOF; the server, with nothing to send, writes its EOF
    as soon as the first data arrives (an upload sink): the client is in CLOSING with nearly
    all of its data still queued.  Discovery goes on there as in FIN_WAIT_1, and the rest
    leaves in large datagrams; it stopped at the base size, the whole transfer in
    1200-byte datagrams."""
    limit = 1500
    net = _path(limit)
    a, b = conns(net)
    data = random.Random(3).randbytes(2 << 20)
    a.send(data)
    a.close()
    net.run(until=lambda: len(net.b.received) > 0)
    b.close()
    net.run(until=lambda: a.state is S.CLOSING)
    net.run(until=lambda: len(net.b.received) == len(data), max_time=60)
    assert bytes(net.b.received) == data
    assert 1400 < a.stats.pmtu_bytes <= limit  # the search goes on near the limit


def test_no_limit_converges_to_the_largest_udp_payload_in_a_few_rtts() -> None:
    tracer = ListTracer()
    # Keepalive and idle timers off: the test ends by checking that discovery leaves no
    # timer running on an idle connection, and keepalive would keep one.
    quiet = Config(**QUIET)
    net = _path(None, config_a=quiet, config_b=quiet, tracer=tracer)
    a, b = conns(net)
    # Probing starts once more is queued than one segment carries: a kick of two each way.
    kick = bytes(2 * a.mss)
    a.send(kick)
    b.send(kick)
    start = net.now
    net.run(until=lambda: _done(net))
    # One answered probe per RTT: the base size, each plateau, the ceiling.
    assert net.now - start <= (len(PLATEAUS_BYTES) + 2) * RTT_S + 1e-9
    for conn in (a, b):
        st = conn.stats
        assert (st.pmtu_bytes, st.mss_bytes) == (65507, 65507 - HEADER_SIZE)
        assert st.pmtud_probes_lost == 0
    assert [(e.fields["old"], e.fields["new"]) for e in tracer.named("pmtud_state")] == [
        ("DISABLED", "BASE"),
        ("BASE", "SEARCHING"),
        ("SEARCHING", "SEARCH_COMPLETE"),
    ]
    assert tracer.named("pmtu_changed")[-1].fields == {"pmtu": 65507, "mss": 65483, "by": "probe"}
    net.run()
    assert a.get_timer() is None and b.get_timer() is None  # idle: no timer left running
    data = random.Random(1).randbytes(1 << 20)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(kick) + len(data))
    assert bytes(net.b.received) == kick + data
    assert max(len(p.payload) for p in _sent(net, "a", probes=False)) == 65483


def test_default_syn_is_the_protocol_vector() -> None:
    # The vector's window scale (5) is a 1 MiB receive buffer's; the rest is the default.
    a = Connection(Config(recv_buffer_bytes=1 << 20), local_cid=0xA, isn=1000)
    a.connect(now=0.0)
    assert a.datagrams_to_send(now=0.0) == [PMTUD_SYN_VECTOR]


def test_handshake_offers_discovery_and_announces_the_largest_datagram() -> None:
    net = _path(None)
    a, b = conns(net)
    syn, syn_ack, ack, *_ = (s.packet for s in net.trace)
    for p in (syn, syn_ack):
        assert p.mss == MAX_UDP_PAYLOAD_BYTES - HEADER_SIZE and p.probe_permitted
    assert ack.probe is None and ack.flags == Flag.ACK
    # No probe while no more is queued than one segment carries (issue 17: a short
    # request/response connection has nothing to gain from a larger size).
    net.run_for(1.0)
    mss = a.mss
    a.send(bytes(mss))
    net.run_for(1.0)
    assert not [s for s in net.trace if s.packet.probe is not None]
    assert a.stats.pmtud_probes_sent == b.stats.pmtud_probes_sent == 0
    # Two segments' worth queued: the first probe, at the base size, follows them at once.
    start = net.now
    a.send(bytes(mss + 1))
    net.run_for(0.001)
    first = next(s for s in net.trace if s.packet.probe is not None)
    assert (first.src, first.time, _size(first.packet)) == ("a", start, 1200)
    # A probe is an ACK at SND.NXT with the current ACK: acceptable, no sequence space.
    assert (first.packet.seq, first.packet.ack) == (ISN_A + 1 + 2 * mss + 1, ISN_B + 1)
    assert first.packet.seg_len == 0
    assert b.stats.pmtud_probes_sent == 0  # b has only ACKs to send


@pytest.mark.parametrize("pinned", [1500, 1200])
def test_pinned_max_datagram_is_never_exceeded(pinned: int) -> None:
    cfg = Config(max_datagram_bytes=pinned)
    net = _path(None, config_a=cfg, config_b=cfg)
    a, _ = conns(net)
    assert net.trace[0].packet.mss == pinned - HEADER_SIZE
    a.send(bytes(500_000))
    net.run(until=lambda: _done(net, "a") and len(net.b.received) == 500_000)
    assert max(_size(s.packet) for s in net.trace) == pinned
    assert a.stats.pmtu_bytes == pinned and a.stats.pmtud_probes_lost == 0


def test_peer_mss_caps_the_search() -> None:
    """The server only takes 3000-byte datagrams: the client searches no higher, even over a
    path that carries more, and with timestamps its payloads shrink by their 12 bytes."""
    client = Config(timestamps=True)
    server = Config(max_datagram_bytes=3000, timestamps=True)
    net = _path(9000, config_a=client, config_b=server)
    a, b = conns(net)
    a.send(bytes(300_000))
    b.send(bytes(300_000))
    net.run(until=lambda: _done(net) and len(net.b.received) == len(net.a.received) == 300_000)
    assert max(_size(p) for p in _sent(net, "a", probes=True)) == 3000
    assert max(_size(p) for p in _sent(net, "a", probes=False)) == 3000
    assert (a.stats.pmtu_bytes, a.stats.mss_bytes) == (3000, 3000 - HEADER_SIZE - 12)
    assert b.stats.pmtu_bytes == 3000  # the server's own limit
    assert a.stats.pmtud_probes_lost == 0  # nothing above the peer's limit was tried


def test_black_hole_mid_transfer_drops_to_base_then_settles_below_the_new_limit() -> None:
    tracer = ListTracer()
    change_at = 0.3
    # cubic: the transfer outlasts the change (bbr, unbounded by this lossless link, would
    # finish before it).
    cubic = Config(congestion_control="cubic")
    net = _path(9000, config_a=cubic, config_b=cubic, changes=((change_at, 1400),), tracer=tracer)
    a, b = conns(net)
    data = random.Random(9).randbytes(16 << 20)
    a.send(data)
    net.run(until=lambda: net.now >= change_at)
    assert a.stats.pmtu_bytes > 8000 and 0 < len(net.b.received) < len(data)
    net.run(until=lambda: len(net.b.received) == len(data), max_time=120)
    assert bytes(net.b.received) == data
    st = a.stats
    assert st.pmtud_black_holes == 1
    assert (st.pmtu_bytes, st.pmtud_state) == (1400, "SEARCH_COMPLETE")
    changes = [e for e in tracer.named("pmtu_changed") if e.now > change_at]
    assert changes[0].fields == {"pmtu": 1200, "mss": 1176, "by": "black_hole"}
    assert changes[-1].fields["pmtu"] == 1400
    assert all(e.fields["pmtu"] <= 1400 for e in changes)
    states = [(e.fields["old"], e.fields["new"]) for e in tracer.named("pmtud_state")]
    # The first search may still be on when the black hole is found: its last probe waits
    # behind data the black hole swallowed, so its loss is not decided before the fall back.
    assert states[-3][1] == "BASE" and states[-3][0] in ("SEARCHING", "SEARCH_COMPLETE")
    assert states[-2:] == [("BASE", "SEARCHING"), ("SEARCHING", "SEARCH_COMPLETE")]
    # From the fall back on, every data segment fits the path: the lost large segments were
    # cut to the new size before being resent.
    detected = changes[0].now
    late = [s for s in net.trace if s.src == "a" and s.time >= detected and s.packet.payload]
    assert late and max(_size(s.packet) for s in late) <= 1400
    assert st.retransmissions > 0 and max(len(s.packet.payload) for s in late) <= 1376
    assert b.stats.pmtud_black_holes == 0  # b sent only ACKs: nothing of its was too big


def test_a_path_below_the_base_size_ends_the_connection_soon_and_says_why() -> None:
    # Datagrams of 1,100 bytes and less get through, the base size's 1,200 never: the
    # handshake and ACKs pass, data never does.  The connection went on retransmitting for
    # minutes (its timeout, some 500 s with the defaults, said "no answer" from a peer that
    # answered all along); now it ends once the base size has failed three times while the
    # peer was heard, within seconds, with the reason on record.
    net = _path(1100)
    a, _ = conns(net)
    a.send(b"x" * 20_000)
    net.run(until=lambda: a.close_reason is not None, max_time=600)
    assert a.close_reason is CloseReason.TIMEOUT
    assert a.path_too_small
    assert net.now < 30.0, net.now


def test_lost_probes_never_count_as_congestion() -> None:
    """A path that drops every probe: discovery ends in ERROR at the base size while the
    transfer goes on untouched: no retransmission, no timeout, no backoff, no cwnd cut."""
    a_to_b = Link(drop=lambda _i, p: p.probe is not None)
    b_to_a = Link(drop=lambda _i, p: p.probe is not None)
    net = pair(a_to_b=a_to_b, b_to_a=b_to_a)
    a, _ = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED)
    data = random.Random(3).randbytes(2 << 20)
    a.send(data)
    cwnds: list[int] = []
    net.on_step = lambda n: cwnds.append(a.stats.cwnd_bytes)
    net.run(until=lambda: len(net.b.received) == len(data))
    st = a.stats
    assert st.pmtud_state == "ERROR" and st.pmtu_bytes == BASE_DATAGRAM_BYTES
    assert st.pmtud_probes_lost >= MAX_PROBES
    assert st.retransmissions == st.timeouts == st.tail_loss_probes == 0
    assert cwnds == sorted(cwnds) and st.ssthresh_bytes == 0x7FFFFFFF
    assert st.srtt_s is not None
    never_backed_off = st.srtt_s + max(4 * st.rttvar_s, Config().rto_min_s)
    assert st.rto_s == pytest.approx(never_backed_off)


def test_a_probe_queued_behind_the_flight_is_not_counted_lost_before_its_turn() -> None:
    """A 1 ms path behind a 20 Mbit/s bottleneck with a deep queue (1000 datagrams, no drop),
    whose MTU falls from 9000 to 1300 mid-transfer: probes wait up to half a second behind
    the flight and its retransmissions, far longer than the probe timer (from the RTT).  A
    probe counts lost only once it had its chance (the data before it acknowledged, or data
    after it delivered): every probe counted lost was too big for the path, except at most
    one (a large probe's own serialisation, after the last ACK ahead of it).  Before, the
    timer alone decided: 34 probes counted lost where 29 were too big."""
    links = [
        BottleneckLink(
            rng=random.Random(seed),
            delay_s=0.0005,
            rate_bps=20e6,
            queue_packets=1000,
            mtu=9000,
            mtu_changes=((1.0, 1300),),
        )
        for seed in (1, 101)
    ]
    cubic = Config(congestion_control="cubic")
    net = pair(config_a=cubic, config_b=cubic, a_to_b=links[0], b_to_a=links[1])
    a, _ = conns(net)
    data = random.Random(9).randbytes(8 << 20)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data), max_time=60)
    assert bytes(net.b.received) == data
    assert links[0].queue_dropped == 0  # every loss here is a datagram above the path MTU
    st = a.stats
    assert (st.pmtu_bytes, st.pmtud_state, st.pmtud_black_holes) == (1300, "SEARCH_COMPLETE", 1)
    sent = [
        (s.time, _size(s.packet)) for s in net.trace if s.src == "a" and s.packet.probe is not None
    ]
    too_big = sum(1 for t, n in sent if n > links[0].mtu_at(t))
    assert too_big <= st.pmtud_probes_lost <= too_big + 1, (st.pmtud_probes_lost, too_big)


def test_pmtud_off_sends_exactly_what_it_did_before() -> None:
    """With discovery off the SYN is docs/PROTOCOL.md's test vector byte for byte, and no
    probe, answer or offer is ever sent."""
    cfg = Config(pmtud=False, recv_buffer_bytes=1 << 20)  # the vector's window scale: 5
    a = Connection(cfg, local_cid=0xA, isn=1000)
    a.connect(now=0.0)
    (syn,) = a.datagrams_to_send(now=0.0)
    assert syn == bytes.fromhex(
        "19 02 ff ff  00 00 00 0a  00 00 00 00  00 00 03 e8  00 00 00 00  22 ec 2b 29"
        "02 04 05 94  03 03 05 04  02 01 01 01"
    )
    net = _path(1452, config_a=cfg, config_b=cfg)
    a, b = conns(net)
    a.send(bytes(200_000))
    net.run(until=lambda: len(net.b.received) == 200_000)
    net.run_for(10.0)
    packets = [s.packet for s in net.trace]
    assert not any(p.probe is not None or p.probe_ack is not None for p in packets)
    assert not any(p.probe_permitted for p in packets)
    lens = [len(p.payload) for p in _sent(net, "a", probes=False) if p.payload]
    assert lens == [1428] * (200_000 // 1428) + [200_000 % 1428]
    for conn in (a, b):
        assert (conn.stats.pmtud_state, conn.stats.pmtu_bytes) == ("DISABLED", 1452)
        assert conn.stats.pmtud_probes_sent == 0


@pytest.mark.parametrize("off", ["a", "b"])
def test_one_side_off_means_no_probes_and_todays_sizes(off: str) -> None:
    on, fixed = Config(), Config(pmtud=False)
    net = _path(None, config_a=fixed if off == "a" else on, config_b=fixed if off == "b" else on)
    a, b = conns(net)
    a.send(bytes(100_000))
    b.send(bytes(100_000))
    net.run(until=lambda: len(net.b.received) == len(net.a.received) == 100_000)
    assert not any(s.packet.probe is not None for s in net.trace)
    assert a.mss == b.mss == 1428  # min(own mss_bytes, the peer's MSS option)
    announced = {s.src: s.packet.mss for s in net.trace[:2]}
    assert announced[off] == 1428 and announced["b" if off == "a" else "a"] == 65483


def test_probe_is_answered_and_never_delivered() -> None:
    net = _path(None)
    _, b = conns(net)
    net.run_for(0.5)  # b answers a probe whether or not it has searched itself
    now = net.now + 1.0
    probe = Packet(
        int(Flag.ACK), 0xA, 0xB, ISN_A + 1, ISN_B + 1, 0xFFFF, b"", probe=0xDEAD, padding=1000
    )
    b.receive_datagram(encode(probe), now=now)
    out = [decode(d) for d in b.datagrams_to_send(now=now)]
    assert [(p.probe_ack, p.seq, p.ack, len(p.payload)) for p in out] == [
        (0xDEAD, ISN_B + 1, ISN_A + 1, 0)
    ]
    assert b.next_event() is None and b.stats.bytes_received == 0


def test_probe_to_a_connection_without_discovery_is_not_answered() -> None:
    cfg = Config(pmtud=False)
    net = _path(None, config_a=cfg, config_b=cfg)
    _, b = conns(net)
    probe = Packet(int(Flag.ACK), 0xA, 0xB, ISN_A + 1, ISN_B + 1, 0xFFFF, b"", probe=1, padding=9)
    b.receive_datagram(encode(probe), now=net.now + 1)
    assert b.datagrams_to_send(now=net.now + 1) == []
    assert b.next_event() is None


def test_probes_stay_inside_the_peers_window() -> None:
    """A zero-length probe must be acceptable: none goes while the window is full."""
    small = Config(recv_buffer_bytes=16_384)
    net = _path(9000, config_b=small)
    a, b = conns(net)
    b.pause_reading()
    a.send(bytes(200_000))
    net.run_for(5.0)
    assert b.stats.receive_window_bytes == 0
    full_at = max(s.time for s in net.trace if s.src == "a" and s.packet.payload)
    assert not [s for s in net.trace if s.src == "a" and s.packet.probe and s.time > full_at]
    b.resume_reading()
    net.run(until=lambda: _done(net, "a") and len(net.b.received) == 200_000)
    assert a.stats.pmtu_bytes == 9000
    # Every probe the path carried was acceptable to b, so b answered it.
    carried = {p.probe for p in _sent(net, "a", probes=True) if _size(p) <= 9000}
    answered = {s.packet.probe_ack for s in net.trace if s.src == "b"}
    assert carried and carried <= answered


def test_raise_timer_finds_a_path_that_grew() -> None:
    net = _path(1472, changes=((100.0, 8972),))
    a, _ = conns(net)
    a.send(bytes(100_000))  # probing waits for more queued than one segment carries
    net.run(until=lambda: _done(net, "a") and len(net.b.received) == 100_000)
    assert a.stats.pmtu_bytes == 1472
    net.run_for(PMTU_RAISE_TIMER_S + 10)  # idle: no search, whatever the timer
    assert a.stats.pmtu_bytes == 1472 and a.stats.pmtud_state == "SEARCH_COMPLETE"
    a.send(bytes(100_000))
    net.run(until=lambda: a.stats.pmtud_state == "SEARCHING")
    net.run(until=lambda: _done(net, "a") and len(net.b.received) == 200_000)
    assert a.stats.pmtu_bytes == 8972


def test_data_segments_with_sack_blocks_fit_the_discovered_size() -> None:
    # Losses often enough both ways that data segments go out while their sender holds a
    # hole (the drop pattern decides how many do; this one gives several).
    # cubic: the search completes before the transfer does (bbr's would not).
    cubic = Config(congestion_control="cubic")
    net = pair(
        config_a=cubic,
        config_b=cubic,
        a_to_b=Link(mtu=1500, drop=lambda i, p: i % 31 == 15),
        b_to_a=Link(mtu=1500, drop=lambda i, p: i % 29 == 10),
    )
    a, b = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED and b.state is S.ESTABLISHED)
    payload = random.Random(7).randbytes(400_000)
    a.send(payload)
    b.send(payload)
    net.run(until=lambda: len(net.a.received) == len(net.b.received) == len(payload))
    # Data segments carry SACK blocks only where they fit: none was too big for the path.
    assert any(s.packet.sack_blocks and s.packet.payload for s in net.trace)
    assert a.stats.pmtu_bytes == b.stats.pmtu_bytes == 1500
    for src in ("a", "b"):
        assert max(_size(p) for p in _sent(net, src, probes=False)) == 1500


# ------------------------------------------------------------------------ re-splitting


def test_scoreboard_split_keeps_order_history_and_the_retransmission_queue() -> None:
    sb = Scoreboard()
    for start in (0, 100, 9000):
        sb.add(SentSegment(start, start + (100 if start == 0 else 8900), 1.0))
    big, tail = sb.segs[1], sb.segs[2]
    sb.mark_lost(big)
    sb.mark_lost(tail)
    pipe = sb.pipe
    sb.split(big, [3000, 6000])
    assert [(s.start, s.end) for s in sb.segs] == [
        (0, 100),
        (100, 3000),
        (3000, 6000),
        (6000, 9000),
        (9000, 17900),
    ]
    assert sb.pipe == pipe  # lost pieces are out of the pipe, as the segment was
    pieces = sb.segs[1:4]
    assert all(p.lost and p.sent_at == 1.0 and p.tx == big.tx for p in pieces)
    order = []
    while (seg := sb.next_lost(0)) is not None:
        order.append(seg.start)
        sb.retransmitted(seg, 2.0)
    assert order == [100, 3000, 6000, 9000]
    assert sb.pipe == pipe + 17800
    assert [s.start for s in sb.ack_to(6000)] == [0, 100, 3000]


# ------------------------------------------------------------------------ logs


def test_state_changes_are_logged_with_the_connection_id() -> None:
    with captured_logs() as events:
        net = _path(None)
        a, _ = conns(net)
        a.send(bytes(100_000))  # probing waits for more queued than one segment carries
        net.run(until=lambda: _done(net, "a"))
    logged = [e for e in events if e["event"] == "pmtud_state" and e["cid"] == "0000000a"]
    assert [(e["old"], e["new"], e["size"]) for e in logged] == [
        ("DISABLED", "BASE", 1200),
        ("BASE", "SEARCHING", 1200),
        ("SEARCHING", "SEARCH_COMPLETE", 65507),
    ]


def test_stats_before_the_handshake() -> None:
    st = Connection(Config()).stats
    assert (st.pmtud_state, st.pmtud_probes_sent, st.pmtud_black_holes) == ("DISABLED", 0, 0)
    assert st.pmtu_bytes == HEADER_SIZE + Config().mss_bytes
