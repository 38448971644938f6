"""Connection lifecycle on an explicit timeline: handshake, teardown, every state, single losses,
timeouts, resets, keepalive, fast retransmit and half-close, each with exact wire ladders.

The client ``a`` starts at ISN 1000 and the server ``b`` at ISN 5000, so every sequence and
acknowledgement number below is known in advance.  Only the public ``Connection`` API and the
harness in tests/helpers.py are used.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import QUIET, Link, Network, Sent, conns, establish, ladder, pair
from utcp import (
    CloseReason,
    Config,
    Connection,
    ConnectionClosed,
    ConnectionEstablished,
    ConnectionState,
    DataReceived,
    EofReceived,
    Event,
    FinAcknowledged,
    Flag,
    Packet,
    decode,
    encode,
)

S = ConnectionState
ISN_A = 1000
ISN_B = 5000
CID_A = 0xA
CID_B = 0xB
DELAY_S = Link().delay_s  # one-way delay of the fake links
DEFAULTS = Config()
# Tests of exact ladders, segment sizes and timings turn path MTU discovery off: its probes
# (and its start at the 1200-byte base size) would add datagrams; tests/test_pmtud.py covers it.
# Turning it off on one side is enough: both SYNs must offer it.
FIXED = Config(pmtud=False)
FOREVER = (0.0, float("inf"))
ACTIVE_CLOSE = [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED]
PASSIVE_CLOSE = [S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]

Drop = Callable[[int, Packet], bool]
History = dict[str, list[ConnectionState]]


# ------------------------------------------------------------------------------ helpers


def _drop_first(pred: Callable[[Packet], bool], count: int = 1) -> Drop:
    """A ``Link.drop`` predicate losing the first ``count`` packets that match ``pred``."""
    left = [count]

    def drop(index: int, packet: Packet) -> bool:
        if left[0] and pred(packet):
            left[0] -= 1
            return True
        return False

    return drop


class _StateLog:
    """A tracer that keeps only the states a connection passes through."""

    def __init__(self, log: list[ConnectionState]) -> None:
        self.log = log

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        if name == "state_changed":
            self.log.append(ConnectionState(fields["new"]))

    def close(self) -> None:
        pass


def _record_states(net: Network) -> History:
    """Log every state each side passes through, through the connection's tracer (its public
    ``set_tracer``), so transient states such as FIN_WAIT_2 are seen even when they last no
    simulated time at all.
    """
    history: History = {}
    for name, side in net.sides.items():
        conn = side.conn
        if conn is None:
            continue
        log = history[name] = [conn.state]
        conn.set_tracer(_StateLog(log))
    return history


def _sent(net: Network, src: str, pred: Callable[[Packet], bool] = lambda p: True) -> list[Sent]:
    return [s for s in net.trace if s.src == src and pred(s.packet)]


def _is_fin(p: Packet) -> bool:
    return bool(p.flags & Flag.FIN)


def _has_data(p: Packet) -> bool:
    return len(p.payload) > 0


def _closes(events: list[Event]) -> list[ConnectionClosed]:
    return [e for e in events if isinstance(e, ConnectionClosed)]


def _orderly_close(net: Network) -> None:
    """``a`` closes first; ``b`` closes once ``a`` sits in FIN_WAIT_2 (the textbook ladder)."""
    a, b = establish(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2 and b.state is S.CLOSE_WAIT)
    b.close()
    net.run()


def _simultaneous_close(net: Network) -> None:
    a, b = establish(net)
    a.close()
    b.close()
    net.run()


# ------------------------------------------------------------------------------ handshake


def test_handshake_ladder_is_exact() -> None:
    net = pair(config_a=FIXED, config_b=FIXED)
    history = _record_states(net)
    establish(net)
    assert ladder(net) == [
        ("a", "SYN", ISN_A, 0),
        ("b", "SYN|ACK", ISN_B, ISN_A + 1),
        ("a", "ACK", ISN_A + 1, ISN_B + 1),
    ]
    assert [s.time for s in net.trace] == [0.0, DELAY_S, 2 * DELAY_S]
    syn, syn_ack, ack = (s.packet for s in net.trace)
    assert (syn.src_cid, syn.dst_cid) == (CID_A, 0)  # the client does not know the server's cid
    assert (syn_ack.src_cid, syn_ack.dst_cid) == (CID_B, CID_A)
    assert (ack.src_cid, ack.dst_cid) == (CID_A, CID_B)
    assert syn.mss == syn_ack.mss == DEFAULTS.mss_bytes
    assert net.a.events == [ConnectionEstablished()]
    assert net.b.events == [ConnectionEstablished()]
    assert history == {
        "a": [S.SYN_SENT, S.ESTABLISHED],
        "b": [S.LISTEN, S.SYN_RECEIVED, S.ESTABLISHED],
    }


def test_close_ladder_is_exact_and_time_wait_lasts_two_msl() -> None:
    msl_s = 7.5
    cfg = Config(msl_s=msl_s, pmtud=False)
    net = pair(config_a=cfg, config_b=cfg)
    a, b = establish(net)
    history = _record_states(net)
    handshake = len(net.trace)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    assert b.state is S.CLOSE_WAIT
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT)
    entered = net.now
    assert a.get_timer() == entered + 2 * msl_s
    assert ladder(net)[handshake:] == [
        ("a", "FIN|ACK", ISN_A + 1, ISN_B + 1),
        ("b", "ACK", ISN_B + 1, ISN_A + 2),
        ("b", "FIN|ACK", ISN_B + 1, ISN_A + 2),
        ("a", "ACK", ISN_A + 2, ISN_B + 2),
    ]
    net.run(until=lambda: b.state is S.CLOSED)
    assert a.get_timer() == entered + 2 * msl_s  # b's close does not touch a's timer

    # Just before the deadline a is still in TIME_WAIT; at the deadline it is CLOSED.
    deadline = entered + 2 * msl_s
    net.run_for(deadline - net.now - 1e-6)
    assert a.state is S.TIME_WAIT
    a.handle_timer(now=deadline - 1e-6)
    assert a.state is S.TIME_WAIT
    net.run()
    assert net.now == deadline
    assert (a.state, a.get_timer()) == (S.CLOSED, None)
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
    assert CloseReason.CLOSED.exception() is None
    assert net.a.eof and net.b.eof
    assert history == {"a": ACTIVE_CLOSE, "b": PASSIVE_CLOSE}
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.CLOSED)]
    assert _closes(net.b.events) == [ConnectionClosed(CloseReason.CLOSED)]


@pytest.mark.parametrize("scenario", ["client_first", "server_first", "simultaneous"])
def test_eof_is_reported_before_connection_closed(scenario: str) -> None:
    """A driver that tears down on ConnectionClosed must already have seen the peer's EOF.
    FinAcknowledged (our FIN's ACK) comes when it happens: before the peer's EOF for the
    side that closed first, after it for the other (and for both in a simultaneous close)."""
    net = pair()
    a, b = establish(net)
    acked_first = [
        ConnectionEstablished(),
        FinAcknowledged(),
        EofReceived(),
        ConnectionClosed(CloseReason.CLOSED),
    ]
    eof_first = [
        ConnectionEstablished(),
        EofReceived(),
        FinAcknowledged(),
        ConnectionClosed(CloseReason.CLOSED),
    ]
    if scenario == "simultaneous":
        _simultaneous_close(net)
        expected = {"a": eof_first, "b": eof_first}
    else:
        first, second = (a, b) if scenario == "client_first" else (b, a)
        first.close()
        net.run(until=lambda: first.state is S.FIN_WAIT_2)
        second.close()
        net.run()
        closer = "a" if first is a else "b"
        expected = {name: acked_first if name == closer else eof_first for name in "ab"}
    for name, side in net.sides.items():
        assert side.events == expected[name], name


def test_every_state_is_visited() -> None:
    seen: set[ConnectionState] = set()
    a = Connection(local_cid=CID_A, isn=ISN_A)
    b = Connection(local_cid=CID_B, isn=ISN_B)
    net = Network(a, b)
    history = _record_states(net)
    b.listen()
    a.connect(now=net.now)
    _orderly_close(net)
    assert history == {
        "a": [S.CLOSED, S.SYN_SENT, *ACTIVE_CLOSE],
        "b": [S.CLOSED, S.LISTEN, S.SYN_RECEIVED, *PASSIVE_CLOSE],
    }
    seen.update(*history.values())

    net = pair()
    history = _record_states(net)
    _simultaneous_close(net)
    seen.update(*history.values())
    assert S.CLOSING in seen
    assert seen == set(ConnectionState)


def test_simultaneous_open() -> None:
    a = Connection(local_cid=CID_A, isn=ISN_A)
    b = Connection(local_cid=CID_B, isn=ISN_B)
    net = Network(a, b)
    history = _record_states(net)
    a.connect(now=net.now)
    b.connect(now=net.now)
    establish(net)
    assert ladder(net)[:4] == [
        ("a", "SYN", ISN_A, 0),
        ("b", "SYN", ISN_B, 0),
        ("a", "SYN|ACK", ISN_A, ISN_B + 1),
        ("b", "SYN|ACK", ISN_B, ISN_A + 1),
    ]
    assert [s.packet.dst_cid for s in net.trace[:4]] == [0, 0, CID_B, CID_A]
    expected = [S.CLOSED, S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED]
    assert history == {"a": expected, "b": expected}
    assert net.a.events == net.b.events == [ConnectionEstablished()]
    a.send(b"hello from a")
    b.send(b"hello from b")
    net.run(until=lambda: len(net.a.received) == len(net.b.received) == 12)
    assert bytes(net.b.received) == b"hello from a"
    assert bytes(net.a.received) == b"hello from b"
    assert a.state is b.state is S.ESTABLISHED


def test_simultaneous_close_goes_through_closing() -> None:
    net = pair()
    a, b = establish(net)
    history = _record_states(net)
    handshake = len(net.trace)
    a.close()
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT and b.state is S.TIME_WAIT)
    entered = net.now
    assert ladder(net)[handshake:] == [
        ("a", "FIN|ACK", ISN_A + 1, ISN_B + 1),
        ("b", "FIN|ACK", ISN_B + 1, ISN_A + 1),
        ("a", "ACK", ISN_A + 2, ISN_B + 2),
        ("b", "ACK", ISN_B + 2, ISN_A + 2),
    ]
    assert a.get_timer() == b.get_timer() == entered + 2 * DEFAULTS.msl_s
    net.run()
    expected = [S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT, S.CLOSED]
    assert history == {"a": expected, "b": expected}
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
    assert net.now == entered + 2 * DEFAULTS.msl_s


# ------------------------------------------------------------------------------ teardown losses


def test_lost_final_ack_restarts_time_wait() -> None:
    msl_s = 5.0
    cfg = Config(msl_s=msl_s, tail_loss_probe=False)  # the FIN comes back after one RTO
    final_ack = _drop_first(lambda p: p.flags == Flag.ACK and p.ack == ISN_B + 2)
    net = pair(config_a=cfg, config_b=cfg, a_to_b=Link(drop=final_ack))
    a, b = establish(net)
    rto_b = b.stats.rto_s
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT)
    first_deadline = net.now + 2 * msl_s
    assert a.get_timer() == first_deadline

    net.run(until=lambda: len(_sent(net, "b", _is_fin)) == 2)
    fin1, fin2 = _sent(net, "b", _is_fin)
    assert fin2.time == pytest.approx(fin1.time + rto_b)
    assert (fin2.packet.seq, fin2.packet.ack) == (ISN_B + 1, ISN_A + 2)
    assert b.state is S.LAST_ACK
    assert a.get_timer() == first_deadline  # the FIN is still on its way

    net.run(until=lambda: len(_sent(net, "a", lambda p: p.ack == ISN_B + 2)) == 2)
    reack = net.now
    assert reack == pytest.approx(fin2.time + DELAY_S)
    assert ladder(net)[-1] == ("a", "ACK", ISN_A + 2, ISN_B + 2)
    assert a.state is S.TIME_WAIT
    assert a.get_timer() == reack + 2 * msl_s  # 2MSL restarted (RFC 9293 section 3.10.7.4)

    net.run()
    assert net.now == reack + 2 * msl_s
    assert (a.state, b.state) == (S.CLOSED, S.CLOSED)
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
    assert _closes(net.a.events) == _closes(net.b.events) == [ConnectionClosed(CloseReason.CLOSED)]


def test_rst_in_time_wait_does_not_report_a_second_close() -> None:
    """TIME_WAIT already reported an orderly close; a later RST must not re-report it."""
    net = pair()
    a, b = establish(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT and b.state is S.CLOSED)
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.CLOSED)]
    rst = Packet(Flag.RST, CID_B, CID_A, ISN_B + 2, 0, 0)
    a.receive_datagram(encode(rst), now=net.now + 1.0)
    later = []
    while (ev := a.next_event()) is not None:
        later.append(ev)
    assert _closes(later) == []
    assert a.close_reason is CloseReason.CLOSED


@pytest.mark.parametrize("who", ["a", "b"])
def test_each_lost_fin_is_retransmitted_after_one_rto(who: str) -> None:
    link = Link(drop=_drop_first(_is_fin))
    no_tlp = Config(tail_loss_probe=False)  # the RTO, not a tail loss probe, resends it
    net = pair(
        config_a=no_tlp,
        config_b=no_tlp,
        **{"a_to_b" if who == "a" else "b_to_a": link},  # type: ignore[arg-type]
    )
    a, b = establish(net)
    rto = (a if who == "a" else b).stats.rto_s
    assert rto == pytest.approx(0.020 + DEFAULTS.rto_min_s)  # a 20 ms RTT, rto_min_s beyond
    _orderly_close(net)
    fins = _sent(net, who, _is_fin)
    assert len(fins) == 2 and link.dropped == 1
    assert (fins[0].packet.seq, fins[0].packet.ack) == (fins[1].packet.seq, fins[1].packet.ack)
    assert fins[1].time == pytest.approx(fins[0].time + rto)
    assert a.state is b.state is S.CLOSED
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
    assert net.a.eof and net.b.eof
    assert (a if who == "a" else b).stats.timeouts == 1


# ------------------------------------------------------------------------------ handshake losses


@pytest.mark.parametrize(("lost", "rto_initial_s"), [(1, 1.0), (2, 1.0), (3, 0.25)])
def test_lost_syn_is_retransmitted_with_doubling_timeout(lost: int, rto_initial_s: float) -> None:
    cfg = Config(rto_initial_s=rto_initial_s, pmtud=False)
    net = pair(config_a=cfg, a_to_b=Link(drop=_drop_first(lambda p: True, lost)))
    a, _ = establish(net)
    syns = _sent(net, "a", lambda p: p.flags == Flag.SYN)
    # Sent at 0, then rto, 2 * rto, 4 * rto ... after the previous one.
    assert [s.time for s in syns] == [rto_initial_s * ((1 << k) - 1) for k in range(lost + 1)]
    assert all(s.packet.seq == ISN_A for s in syns)
    answered = syns[-1].time
    assert ladder(net)[lost:] == [
        ("a", "SYN", ISN_A, 0),
        ("b", "SYN|ACK", ISN_B, ISN_A + 1),
        ("a", "ACK", ISN_A + 1, ISN_B + 1),
    ]
    assert net.now == pytest.approx(answered + 3 * DELAY_S)
    assert a.stats.timeouts == lost
    # Karn: the SYN-ACK may answer any of the SYNs, so it gives no RTT sample, and the
    # doubled timeout stays until one (RFC 6298 section 5).
    assert a.stats.srtt_s is None
    assert a.stats.rto_s == rto_initial_s * (1 << lost)
    assert net.a.events == net.b.events == [ConnectionEstablished()]


def test_lost_syn_ack_is_recovered_by_the_client_syn_retransmission() -> None:
    net = pair(config_a=FIXED, b_to_a=Link(drop=_drop_first(lambda p: True)))
    establish(net)
    rto = DEFAULTS.rto_initial_s
    assert [(s.time, *step) for s, step in zip(net.trace, ladder(net))] == [
        (0.0, "a", "SYN", ISN_A, 0),
        (DELAY_S, "b", "SYN|ACK", ISN_B, ISN_A + 1),  # lost
        (rto, "a", "SYN", ISN_A, 0),
        (rto + DELAY_S, "b", "SYN|ACK", ISN_B, ISN_A + 1),
        (rto + 2 * DELAY_S, "a", "ACK", ISN_A + 1, ISN_B + 1),
    ]
    assert net.a.events == net.b.events == [ConnectionEstablished()]


def test_lost_handshake_ack_without_data_client_resends_it() -> None:
    """The server never re-sends a SYN-ACK on its own (at most one per SYN: no
    amplification), so a silent client re-sends its handshake ACK until the server shows
    it arrived."""
    # Keepalive off: its probes during the 60 s of silence below would add datagrams.
    net = pair(
        config_a=FIXED.replace(**QUIET),
        config_b=Config(**QUIET),
        a_to_b=Link(drop=lambda index, packet: index == 1),
    )
    a, b = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED)
    established = net.now
    rto = 0.020 + DEFAULTS.rto_min_s  # one 20 ms RTT sample: rto_min_s beyond SRTT
    assert a.get_timer() == pytest.approx(established + rto)
    net.run(until=lambda: b.state is S.ESTABLISHED)
    assert [(s.time, *step) for s, step in zip(net.trace, ladder(net))] == [
        (0.0, "a", "SYN", ISN_A, 0),
        (DELAY_S, "b", "SYN|ACK", ISN_B, ISN_A + 1),
        (2 * DELAY_S, "a", "ACK", ISN_A + 1, ISN_B + 1),  # lost
        (pytest.approx(2 * DELAY_S + rto), "a", "ACK", ISN_A + 1, ISN_B + 1),
    ]
    assert net.a.events == net.b.events == [ConnectionEstablished()]
    b.send(b"hello")
    net.run(until=lambda: net.a.received == b"hello")
    net.run_for(60.0)
    assert len(net.trace) == 6  # the server spoke: the client stops re-sending its ACK
    assert net.a.events[-1] == DataReceived(b"hello")


def test_passive_opener_never_resends_syn_ack_by_itself() -> None:
    net = pair(a_to_b=Link(drop=lambda index, packet: index >= 1))  # the client goes dark
    _, b = conns(net)
    net.run(until=lambda: b.state is S.CLOSED, max_time=300.0)
    assert [step[:2] for step in ladder(net) if step[0] == "b"] == [
        ("b", "SYN|ACK"),
        ("b", "RST|ACK"),
    ]
    assert b.close_reason is CloseReason.TIMEOUT


def test_lost_handshake_ack_first_data_segment_establishes_server() -> None:
    net = pair(config_a=FIXED, a_to_b=Link(drop=lambda index, packet: index == 1))
    a, b = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED)
    a.send(b"first bytes")
    net.run(until=lambda: b.state is S.ESTABLISHED)
    assert net.now == 3 * DELAY_S  # the data segment's ACK completed the handshake
    net.run_for(2.0)
    assert net.b.events == [ConnectionEstablished(), DataReceived(b"first bytes")]
    assert len(_sent(net, "b", lambda p: bool(p.flags & Flag.SYN))) == 1  # no SYN-ACK resent
    assert a.stats.retransmissions == b.stats.retransmissions == 0
    assert ladder(net)[3] == ("a", "ACK", ISN_A + 1, ISN_B + 1)
    assert net.trace[3].packet.payload == b"first bytes"


# ------------------------------------------------------------------------------ data loss


def test_lost_first_data_segment_is_retransmitted_after_one_rto() -> None:
    link = Link(drop=_drop_first(_has_data))
    net = pair(a_to_b=link, config_a=Config(tail_loss_probe=False))  # the RTO path itself
    a, _ = establish(net)
    rto = a.stats.rto_s
    assert rto == pytest.approx(0.020 + DEFAULTS.rto_min_s)
    a.send(b"x" * 500)
    sent_at = net.now
    net.run(until=lambda: len(net.b.received) == 500)
    first, second = _sent(net, "a", _has_data)
    assert first.time == sent_at
    assert second.time == first.time + rto
    assert (second.packet.seq, bytes(second.packet.payload)) == (ISN_A + 1, b"x" * 500)
    assert net.now == pytest.approx(second.time + DELAY_S)
    assert bytes(net.b.received) == b"x" * 500
    net.run(until=lambda: a.stats.bytes_in_flight == 0)
    stats = a.stats
    assert (stats.timeouts, stats.retransmissions, stats.fast_retransmits) == (1, 1, 0)
    assert stats.rto_s == 2 * rto  # no sample from the resent segment's ACK: backoff stays
    a.send(b"y" * 500)
    net.run(until=lambda: len(net.b.received) == 1000 and a.stats.bytes_in_flight == 0)
    assert a.stats.rto_s < rto + 0.01  # a segment sent once gives a sample: the backoff ends


# ------------------------------------------------------------------------------ give up


@pytest.mark.parametrize(
    ("syn_retries", "rto_initial_s", "times"),
    [
        # The defaults: doubling from 1 s up to syn_rto_max_s (8 s), then steady; 71 s in all.
        (10, 1.0, [0, 1, 3, 7, 15, 23, 31, 39, 47, 55, 63, 71]),
        (2, 0.25, [0, 0.25, 0.75, 1.75]),
    ],
)
def test_unanswered_syn_times_out(
    syn_retries: int, rto_initial_s: float, times: list[float]
) -> None:
    cfg = Config(syn_retries=syn_retries, rto_initial_s=rto_initial_s)
    net = pair(config_a=cfg, a_to_b=Link(blackhole=FOREVER))
    a, _ = conns(net)
    net.run()
    assert ladder(net) == [("a", "SYN", ISN_A, 0)] * (syn_retries + 1)
    assert [s.time for s in net.trace] == pytest.approx(times[:-1])
    assert net.now == pytest.approx(times[-1])
    assert net.a.events == [ConnectionClosed(CloseReason.TIMEOUT)]
    assert a.state is S.CLOSED and a.close_reason is CloseReason.TIMEOUT
    assert isinstance(a.close_reason.exception(), TimeoutError)
    assert a.get_timer() is None


def test_syn_to_closed_port_is_refused() -> None:
    a = Connection(local_cid=CID_A, isn=ISN_A)
    net = Network(a, None)
    a.connect(now=net.now)
    net.run()
    assert ladder(net) == [("a", "SYN", ISN_A, 0), ("b", "RST|ACK", 0, ISN_A + 1)]
    assert net.trace[1].packet.dst_cid == CID_A
    assert net.now == 2 * DELAY_S
    assert net.a.events == [ConnectionClosed(CloseReason.REFUSED)]
    assert a.state is S.CLOSED and a.close_reason is CloseReason.REFUSED
    assert isinstance(a.close_reason.exception(), ConnectionRefusedError)
    assert a.get_timer() is None


def test_close_in_syn_sent_sends_nothing_and_a_late_syn_ack_gets_rst() -> None:
    a = Connection(local_cid=CID_A, isn=ISN_A)
    b = Connection(local_cid=CID_B, isn=ISN_B)
    b.listen()
    a.connect(now=0.0)
    (syn,) = a.datagrams_to_send(now=0.0)
    a.close()
    assert a.datagrams_to_send(now=0.0) == []  # no RST: the peer has nothing to forget yet
    assert a.state is S.CLOSED and a.get_timer() is None
    assert a.close_reason is CloseReason.CLOSED
    assert a.next_event() == ConnectionClosed(CloseReason.CLOSED)
    assert a.next_event() is None

    b.receive_datagram(syn, now=DELAY_S)
    (syn_ack,) = b.datagrams_to_send(now=DELAY_S)
    a.receive_datagram(syn_ack, now=2 * DELAY_S)
    (rst,) = a.datagrams_to_send(now=2 * DELAY_S)
    p = decode(rst)
    # RFC 9293 section 3.10.7.1: the RST takes its sequence number from the segment's ACK.
    assert (p.flags, p.seq, p.src_cid, p.dst_cid) == (Flag.RST, ISN_A + 1, CID_A, CID_B)
    assert a.next_event() is None and a.close_reason is CloseReason.CLOSED

    b.receive_datagram(rst, now=3 * DELAY_S)
    assert b.state is S.CLOSED and b.close_reason is CloseReason.RESET
    assert b.next_event() == ConnectionClosed(CloseReason.RESET)


@pytest.mark.parametrize("who", ["a", "b"])
def test_abort_sends_rst_and_peer_sees_reset(who: str) -> None:
    net = pair(config_a=FIXED)
    a, b = establish(net)
    a.send(b"abc")
    net.run_for(0.1)
    me, peer = (a, b) if who == "a" else (b, a)
    me.abort()
    assert me.state is S.CLOSED and me.get_timer() is None
    assert me.close_reason is CloseReason.ABORTED
    assert isinstance(me.close_reason.exception(), ConnectionAbortedError)
    net.run()
    expected_rst = (
        ("a", "RST|ACK", ISN_A + 4, ISN_B + 1)
        if who == "a"
        else ("b", "RST|ACK", ISN_B + 1, ISN_A + 4)
    )
    assert ladder(net)[-1] == expected_rst
    assert peer.state is S.CLOSED and peer.close_reason is CloseReason.RESET
    assert isinstance(peer.close_reason.exception(), ConnectionResetError)
    assert net.sides[who].events[-1] == ConnectionClosed(CloseReason.ABORTED)
    assert net.sides["b" if who == "a" else "a"].events[-1] == ConnectionClosed(CloseReason.RESET)
    assert bytes(net.b.received) == b"abc"


def _vanish_mid_transfer(config: Config) -> tuple[Network, float, float]:
    """Start a 2 MB upload, then cut both directions for good (mid-transfer).

    Returns the network once ``a`` has given up, the time of the cut and ``a``'s RTO then.
    """
    a_to_b, b_to_a = Link(), Link()
    net = pair(config_a=config.replace(pmtud=False), a_to_b=a_to_b, b_to_a=b_to_a)
    a, _ = establish(net)
    a.send(bytes(2_000_000))
    net.run_for(0.1)
    cut = net.now
    rto = a.stats.rto_s
    assert a.stats.bytes_in_flight > 0
    a_to_b.blackhole = b_to_a.blackhole = (cut, float("inf"))
    net.run(until=lambda: net.a.closed is not None, max_time=3600)
    assert a.state is S.CLOSED and a.stats.bytes_in_flight == 0
    return net, cut, rto


@pytest.mark.parametrize("user_timeout_s", [2.0, 5.0])
def test_vanished_peer_hits_user_timeout(user_timeout_s: float) -> None:
    net, cut, _ = _vanish_mid_transfer(Config(user_timeout_s=user_timeout_s))
    a, _ = conns(net)
    closed_at = net.now
    # The last acknowledgement that got through arrived one link delay after b sent it.
    progress = max(s.time for s in _sent(net, "b") if s.time < cut) + DELAY_S
    retransmits = [s.time for s in _sent(net, "a") if s.time > cut]
    last_rto = closed_at - retransmits[-2]  # the final timer interval, backoff included
    assert progress + user_timeout_s <= closed_at <= progress + user_timeout_s + last_rto
    assert net.a.closed == ConnectionClosed(CloseReason.TIMEOUT)
    assert a.close_reason is CloseReason.TIMEOUT
    assert isinstance(a.close_reason.exception(), TimeoutError)
    assert a.stats.timeouts < DEFAULTS.max_retransmits
    assert ladder(net)[-1][:2] == ("a", "RST|ACK")


def test_vanished_peer_gives_up_after_max_retransmits() -> None:
    # Idle timeout and keepalive off: this is about the retransmission budget, which the 30 s
    # idle timeout of the defaults would cut short (a test of its own covers that).  Unpaced,
    # the whole window is in flight at the cut: every datagram after it is a retransmission.
    net, cut, rto0 = _vanish_mid_transfer(Config(tail_loss_probe=False, pacing="off", **QUIET))
    a, _ = conns(net)
    after = [s for s in _sent(net, "a") if s.time > cut]
    retransmits, final = after[:-1], after[-1]
    assert len(retransmits) == DEFAULTS.max_retransmits
    assert len({s.packet.seq for s in retransmits}) == 1  # always the oldest segment
    assert final.packet.flags == Flag.RST | Flag.ACK
    # Each timeout doubles the previous one, up to rto_max_s.
    times = [cut, *(s.time for s in after)]
    intervals = [t1 - t0 for t0, t1 in itertools.pairwise(times)]
    expected = [min(rto0 * (1 << k), DEFAULTS.rto_max_s) for k in range(len(intervals))]
    assert intervals == pytest.approx(expected)
    assert a.stats.timeouts == DEFAULTS.max_retransmits + 1
    assert net.a.closed == ConnectionClosed(CloseReason.TIMEOUT)
    assert isinstance(CloseReason.TIMEOUT.exception(), TimeoutError)


# ------------------------------------------------------------------------------ keepalive

KEEPALIVE = Config(keepalive_idle_s=10.0, keepalive_interval_s=2.0, keepalive_probes=3, pmtud=False)


def _probes(net: Network, src: str, isn: int) -> list[Sent]:
    """Keepalive probes: empty ACKs one below the next sequence number."""
    return _sent(net, src, lambda p: p.flags == Flag.ACK and p.seq == isn and not p.payload)


def test_keepalive_to_live_peer_keeps_connection_up() -> None:
    net = pair(config_a=KEEPALIVE)
    a, b = establish(net)
    idle_since = net.trace[-1].time  # the SYN-ACK arrived as a sent the handshake's ACK
    net.run_for(100.0)
    assert a.state is b.state is S.ESTABLISHED
    probes = _probes(net, "a", ISN_A)
    assert len(probes) >= 5
    # Every probe is answered, so the next starts a fresh idle period after the answer.
    idle = KEEPALIVE.keepalive_idle_s
    assert idle is not None
    expected = [idle_since + idle + k * (idle + 2 * DELAY_S) for k in range(len(probes))]
    assert [s.time for s in probes] == pytest.approx(expected)
    answers = _sent(net, "b", lambda p: p.ack == ISN_A + 1 and p.seq == ISN_B + 1)
    assert [s.time for s in answers] == pytest.approx([t + DELAY_S for t in expected])
    assert net.a.closed is None and net.b.closed is None


@pytest.mark.parametrize("probes", [1, 3])
def test_keepalive_on_both_sides_keeps_connection_up(probes: int) -> None:
    cfg = Config(keepalive_idle_s=10.0, keepalive_interval_s=2.0, keepalive_probes=probes)
    net = pair(config_a=cfg, config_b=cfg)
    a, b = establish(net)
    net.run_for(60.0)
    assert (a.state, b.state) == (S.ESTABLISHED, S.ESTABLISHED), ladder(net)
    assert net.a.closed is None and net.b.closed is None


def test_keepalive_to_vanished_peer_closes_idle() -> None:
    a_to_b, b_to_a = Link(), Link()
    net = pair(config_a=KEEPALIVE, a_to_b=a_to_b, b_to_a=b_to_a)
    a, _ = establish(net)
    idle_since = net.trace[-1].time
    a_to_b.blackhole = b_to_a.blackhole = (net.now, float("inf"))
    net.run(until=lambda: net.a.closed is not None)
    idle = KEEPALIVE.keepalive_idle_s
    assert idle is not None
    interval, count = KEEPALIVE.keepalive_interval_s, KEEPALIVE.keepalive_probes
    probes = _probes(net, "a", ISN_A)
    assert [s.time for s in probes] == pytest.approx(
        [idle_since + idle + k * interval for k in range(count)]
    )
    assert net.now == pytest.approx(idle_since + idle + count * interval)
    assert ladder(net)[-1] == ("a", "RST|ACK", ISN_A + 1, ISN_B + 1)
    assert net.a.closed == ConnectionClosed(CloseReason.IDLE)
    assert a.close_reason is CloseReason.IDLE
    assert isinstance(a.close_reason.exception(), TimeoutError)


def test_user_timeout_cuts_unanswered_keepalive_short() -> None:
    """As Linux's TCP_USER_TIMEOUT: probes unanswered for user_timeout_s end the connection,
    not only the full keepalive_probes count."""
    cfg = KEEPALIVE.replace(user_timeout_s=13.0)  # idle 10 s, probes at 10 and 12 s
    a_to_b, b_to_a = Link(), Link()
    net = pair(config_a=cfg, a_to_b=a_to_b, b_to_a=b_to_a)
    establish(net)
    idle_since = net.trace[-1].time
    a_to_b.blackhole = b_to_a.blackhole = (net.now, float("inf"))
    net.run(until=lambda: net.a.closed is not None)
    assert cfg.user_timeout_s is not None and cfg.keepalive_idle_s is not None
    assert cfg.keepalive_idle_s < cfg.user_timeout_s  # probing had started
    assert net.now == pytest.approx(idle_since + cfg.user_timeout_s)
    assert net.a.closed == ConnectionClosed(CloseReason.TIMEOUT)
    assert ladder(net)[-1] == ("a", "RST|ACK", ISN_A + 1, ISN_B + 1)


# ------------------------------------------------------------------------------ fast retransmit


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno"])
def test_first_of_four_segments_lost_is_fast_retransmitted(sack: bool) -> None:
    cfg = Config(sack=sack, pmtud=False)
    warmup = 100
    lost_seq = ISN_A + 1 + warmup
    link = Link(drop=_drop_first(lambda p: p.seq == lost_seq and _has_data(p)))
    net = pair(config_a=cfg, config_b=cfg, a_to_b=link)
    a, _ = establish(net)
    # A first exchange teaches a b's scaled window: the SYN-ACK can only carry 64 KiB, so the
    # first ACK after it is a window update, which RFC 5681 does not count as a duplicate.
    a.send(bytes(warmup))
    net.run(until=lambda: len(net.b.received) == warmup and a.stats.bytes_in_flight == 0)
    rto = a.stats.rto_s
    mss = a.mss
    data = random.Random(4).randbytes(4 * mss)
    start = len(net.trace)
    for k in range(4):  # 1 ms apart so each arrival draws its own immediate ACK
        a.send(data[k * mss : (k + 1) * mss])
        net.run_for(0.001)
    net.run(until=lambda: len(net.b.received) == warmup + len(data))
    assert bytes(net.b.received) == bytes(warmup) + data

    sent = net.trace[start:]
    segs = [s for s in sent if s.src == "a" and _has_data(s.packet)]
    assert [s.packet.seq for s in segs] == [lost_seq + k * mss for k in range(4)] + [lost_seq]
    dupacks = [s for s in sent if s.src == "b" and s.packet.ack == lost_seq]
    assert len(dupacks) == 3
    assert all(bool(s.packet.sack_blocks) is sack for s in dupacks)
    if sack:
        assert [s.packet.sack_blocks for s in dupacks] == [
            ((lost_seq + mss, lost_seq + (k + 2) * mss),) for k in range(3)
        ]
    first, retransmit = segs[0], segs[-1]
    assert retransmit.time == pytest.approx(dupacks[2].time + DELAY_S)
    assert retransmit.time < first.time + rto
    stats = a.stats
    assert (stats.fast_retransmits, stats.timeouts, stats.retransmissions) == (1, 0, 1)
    assert stats.duplicate_acks == 3


# ------------------------------------------------------------------------------ half-close


def test_half_close_peer_keeps_sending() -> None:
    seed = 11
    size = 200 * 1024
    data = random.Random(seed).randbytes(size)
    net = pair()
    a, b = establish(net)
    history = _record_states(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    with pytest.raises(BrokenPipeError):
        a.send(b"too late")
    assert net.b.eof and not net.a.eof
    b.send(data)
    net.run(until=lambda: len(net.a.received) == size)
    assert bytes(net.a.received) == data, f"seed={seed}"
    assert a.state is S.FIN_WAIT_2 and b.state is S.CLOSE_WAIT and not net.a.eof
    b.close()
    net.run()
    assert net.a.eof
    assert a.state is b.state is S.CLOSED
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
    assert history == {"a": ACTIVE_CLOSE, "b": PASSIVE_CLOSE}
    assert b.stats.bytes_sent == size and a.stats.bytes_received == size


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mss_bytes": 63}, "mss_bytes"),
        ({"mss_bytes": 65535}, "mss_bytes"),
        # With its 24-byte header a larger payload exceeds the largest UDP datagram, 65507
        # bytes: every full segment failed with EMSGSIZE and the transfer stood still.
        ({"mss_bytes": 65484, "pmtud": False}, "mss_bytes must be 64..65483"),
        # A duration of infinity was accepted: with it a connect never timed out.
        ({"rto_initial_s": float("inf")}, "rto_initial_s must be finite"),
        ({"msl_s": float("inf")}, "msl_s must be finite"),
        ({"user_timeout_s": float("inf")}, "user_timeout_s must be finite"),
        ({"recv_buffer_bytes": 1000}, "recv_buffer_bytes"),
        ({"send_buffer_bytes": 0}, "send_buffer_bytes"),
        ({"rto_min_s": 0.0}, "rto_min_s"),
        ({"rto_min_s": 2.0, "rto_max_s": 1.0}, "rto_min_s"),
        ({"rto_initial_s": 0.0}, "rto_initial_s"),
        ({"max_retransmits": 0}, "max_retransmits"),
        ({"syn_retries": -1}, "syn_retries"),
        ({"user_timeout_s": 0.0}, "user_timeout_s"),
        ({"msl_s": -1.0}, "msl_s"),
        ({"keepalive_idle_s": 0.0}, "keepalive_idle_s"),
        ({"keepalive_probes": 0}, "keepalive_probes"),
        ({"keepalive_stall_s": 0.0}, "keepalive_stall_s"),
        ({"idle_timeout_s": 0.0}, "idle_timeout_s"),
        ({"dupack_threshold": 0}, "dupack_threshold"),
        ({"congestion_control": "no-such-algorithm"}, "congestion_control"),
    ],
)
def test_config_validate_rejects_bad_values(changes: dict[str, Any], message: str) -> None:
    bad = Config(**changes)  # constructing is allowed; validating is not
    with pytest.raises(ValueError, match=message):
        bad.validate()
    with pytest.raises(ValueError, match=message):
        DEFAULTS.replace(**changes)
    with pytest.raises(ValueError, match=message):
        Connection(bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pmtud": "no"}, "pmtud must be bool, not str"),  # it used to turn discovery on
        ({"sack": 0}, "sack must be bool, not int"),
        ({"mss_bytes": 1000.5}, "mss_bytes must be int, not float"),
        ({"max_connections": True}, "max_connections must be int, not bool"),
        ({"initial_cwnd_segments": 2.5}, "initial_cwnd_segments must be int"),
        ({"idle_timeout_s": "30"}, "idle_timeout_s must be float or None, not str"),
        ({"congestion_control": None}, "congestion_control must be str, not NoneType"),
    ],
)
def test_config_validate_rejects_fields_of_the_wrong_type(
    changes: dict[str, Any], message: str
) -> None:
    bad = Config(**changes)
    with pytest.raises(TypeError, match=message):
        bad.validate()
    with pytest.raises(TypeError, match=message):
        Connection(bad)


def test_something_else_than_a_config_is_refused_with_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"config must be a utcp\.Config, not dict"):
        Connection({"mss_bytes": 1000})  # type: ignore[arg-type]


def test_numbers_of_either_kind_are_durations() -> None:
    assert Config(rto_min_s=1, idle_timeout_s=None).validate().rto_min_s == 1


def test_config_validate_accepts_defaults_and_edges() -> None:
    assert DEFAULTS.validate() is DEFAULTS
    edge = Config(mss_bytes=64, recv_buffer_bytes=128, syn_retries=0, msl_s=0.0)
    assert edge.validate() is edge
    assert DEFAULTS.replace(user_timeout_s=None) == DEFAULTS
    # Keepalive and the idle timeout are on by default (a vanished peer is noticed in ~30 s).
    assert (
        DEFAULTS.keepalive_idle_s,
        DEFAULTS.keepalive_interval_s,
        DEFAULTS.keepalive_probes,
        DEFAULTS.keepalive_stall_s,
        DEFAULTS.idle_timeout_s,
    ) == (15.0, 5.0, 3, 1.0, 30.0)


def test_close_in_syn_received_still_completes_the_handshake_then_closes() -> None:
    # The server closes before its SYN-ACK is acknowledged, and that SYN-ACK is lost: it must
    # keep retransmitting it, report the establishment, then send its FIN (RFC 9293 3.10.4).
    net = pair(b_to_a=Link(drop=_drop_first(lambda p: bool(p.flags & Flag.SYN))))
    a, b = conns(net)
    net.run(until=lambda: b.state is S.SYN_RECEIVED)
    b.close()
    assert b.state is S.SYN_RECEIVED
    assert b.get_timer() is not None
    net.run(until=lambda: a.state is S.CLOSE_WAIT)
    assert any(isinstance(e, ConnectionEstablished) for e in net.b.events)
    assert net.a.eof
    a.close()
    net.run()
    assert a.state is S.CLOSED and b.state is S.CLOSED
    assert len(_sent(net, "b", lambda p: bool(p.flags & Flag.SYN))) == 2


def test_data_segments_with_sack_blocks_fit_the_datagram_budget() -> None:
    # Data segments piggyback SACK blocks while holes exist; the options must not push the
    # datagram past header + MSS (1452 bytes by default; tests/test_pmtud.py checks the same
    # against the discovered size).
    lose_sixth = Link(drop=lambda i, p: i == 5)
    net = pair(config_a=FIXED, a_to_b=lose_sixth, b_to_a=Link(drop=lambda i, p: i == 5))
    a, b = establish(net)
    payload = random.Random(7).randbytes(200_000)
    a.send(payload)
    b.send(payload)
    net.run(until=lambda: len(net.a.received) == len(net.b.received) == len(payload))
    assert any(s.packet.sack_blocks for s in net.trace), "the scenario must produce holes"
    assert max(len(encode(s.packet)) for s in net.trace) <= 1452


@pytest.mark.parametrize("fin_retries", [0, 3])
def test_last_ack_with_everything_delivered_gives_up_cleanly(fin_retries: int) -> None:
    # a enters TIME_WAIT and then vanishes (its final ACK and all later traffic are lost).
    # b has delivered and received every byte; only its FIN's ACK is missing. After
    # fin_retries retransmissions b ends as an orderly close, not a TimeoutError after
    # max_retransmits.
    final_ack = ISN_B + 2  # b sends no data: its FIN takes 5001
    a_to_b = Link(drop=lambda _i, p: p.ack == final_ack)
    net = pair(a_to_b=a_to_b, config_b=Config(fin_retries=fin_retries))
    a, b = establish(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    b.close()
    net.run(until=lambda: b.state is S.CLOSED, max_time=3600)
    assert net.b.closed == ConnectionClosed(CloseReason.CLOSED)
    assert net.b.eof
    assert b.stats.timeouts == fin_retries + 1
    assert len(_sent(net, "b", lambda p: bool(p.flags & Flag.RST))) == 0


def test_tail_loss_is_repaired_by_a_probe_before_the_rto() -> None:
    # The last of three segments is lost and nothing follows it, so no duplicate ACK can
    # reveal the loss. Two RTTs later the tail loss probe resends it; no timer expires.
    mss = DEFAULTS.mss_bytes
    third = ISN_A + 1 + 2 * mss
    net = pair(
        config_a=FIXED, a_to_b=Link(drop=_drop_first(lambda p: p.seq == third and _has_data(p)))
    )
    a, _ = establish(net)
    srtt = a.stats.srtt_s
    assert srtt is not None
    a.send(bytes(3 * mss))
    start = net.now
    net.run(until=lambda: len(net.b.received) == 3 * mss)
    resends = [s.time for s in _sent(net, "a", lambda p: p.seq == third)]
    assert len(resends) == 2
    assert resends[1] - start < DEFAULTS.rto_min_s  # well before the retransmission timer
    assert resends[1] - start >= 2 * srtt
    assert a.stats.tail_loss_probes == 1 and a.stats.timeouts == 0


def test_tail_loss_probe_can_be_turned_off() -> None:
    mss = DEFAULTS.mss_bytes
    third = ISN_A + 1 + 2 * mss
    net = pair(
        a_to_b=Link(drop=_drop_first(lambda p: p.seq == third and _has_data(p))),
        config_a=Config(tail_loss_probe=False, pmtud=False),
    )
    a, _ = establish(net)
    a.send(bytes(3 * mss))
    net.run(until=lambda: len(net.b.received) == 3 * mss)
    assert a.stats.tail_loss_probes == 0 and a.stats.timeouts == 1


def test_abort_after_a_close_held_back_by_paused_reading_reports_one_close() -> None:
    net = pair()
    a, b = establish(net)
    b.pause_reading()
    a.send(b"unread")
    a.close()
    net.run(until=lambda: b.state is S.CLOSE_WAIT)
    b.close()
    net.run(until=lambda: b.state is S.CLOSED)
    assert b.close_reason is CloseReason.CLOSED
    assert _closes(net.b.events) == []  # held back behind the unread data and EOF
    b.abort()  # already CLOSED: nothing to abort, the orderly close stands
    b.resume_reading()
    net.flush()
    assert net.b.received == b"unread"
    assert _closes(net.b.events) == [ConnectionClosed(CloseReason.CLOSED)]


def test_abort_in_time_wait_sends_and_reports_nothing() -> None:
    net = pair()
    a, b = establish(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT)
    net.flush()
    sent = len(net.trace)
    a.abort()
    net.flush()
    assert a.state is S.CLOSED and a.close_reason is CloseReason.CLOSED
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.CLOSED)]
    assert len(net.trace) == sent


def test_abort_in_time_wait_with_the_close_report_held_back_reports_it_once() -> None:
    net = pair()
    a, b = establish(net)
    a.pause_reading()
    b.send(b"unread")
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2 and net.b.conn is b)
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT)
    assert _closes(net.a.events) == []
    a.abort()
    a.resume_reading()
    net.flush()
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.ABORTED)]


def _lossy_handshake_completes(seed: int) -> bool:
    """Connect through 30% loss both ways; then the server speaks first (its data is what
    confirms the handshake to a silent client). True once the client has the data."""
    net = pair(
        a_to_b=Link(rng=random.Random(seed), loss=0.3),
        b_to_a=Link(rng=random.Random(seed + 1000), loss=0.3),
    )
    a, b = conns(net)

    def ended() -> bool:
        return a.state is S.CLOSED or b.state is S.CLOSED

    net.run(until=lambda: b.state is S.ESTABLISHED or ended(), max_time=300.0)
    if ended():
        return False
    b.send(b"hello")
    net.run(until=lambda: net.a.received == b"hello" or ended(), max_time=300.0)
    return not ended()


def test_handshakes_complete_under_30_percent_loss_each_way() -> None:
    """Every try of the handshake is the client's (one SYN-ACK per SYN), so the client must
    try often enough: 400 seeded handshakes through 30% loss both ways all complete."""
    failed = [seed for seed in range(400) if not _lossy_handshake_completes(seed)]
    assert failed == [], f"handshakes failed for seeds {failed}"


def test_pause_reading_takes_back_data_not_yet_delivered_without_shrinking_the_window() -> None:
    """A batch of segments queues several DataReceived events before the application sees the
    first; pausing while taking it holds the rest back in the connection (not delivered after
    the pause) and counts them in the window, whose right edge still does not move back."""
    net = pair()
    a, b = establish(net)
    mss = a.mss
    recv_buffer = DEFAULTS.recv_window_initial_bytes  # the window first offered
    payload = (bytes(range(256)) * (4 * mss // 256 + 1))[: 4 * mss]
    advertised_edge = b.stats.bytes_received + b.stats.receive_window_bytes  # before the batch
    a.send(payload)
    for data in a.datagrams_to_send(now=net.now):
        b.receive_datagram(data, now=net.now)  # one wake-up's batch, no events taken yet
    first = b.next_event()
    assert isinstance(first, DataReceived) and first.data == payload[:mss]
    b.pause_reading()
    assert b.next_event() is None  # the other three segments are held, not delivered
    assert b.stats.receive_window_bytes == recv_buffer - 3 * mss
    assert b.stats.bytes_received + b.stats.receive_window_bytes >= advertised_edge
    a.send(payload[:mss])  # data arriving while paused is held too
    for data in a.datagrams_to_send(now=net.now):
        b.receive_datagram(data, now=net.now)
    assert b.next_event() is None
    assert b.stats.receive_window_bytes == recv_buffer - 4 * mss
    b.resume_reading()
    rest = b.next_event()
    assert isinstance(rest, DataReceived) and rest.data == payload[mss:] + payload[:mss]
    assert b.next_event() is None
    assert b.stats.receive_window_bytes == recv_buffer


def test_a_stretch_ack_showing_a_loss_halves_the_flight_the_loss_was_in() -> None:
    """One ACK for a whole burst (what a receiver answering batches sends) both acknowledges
    the segments before a hole and SACKs those after it. The window must be halved from the
    flight the loss happened in (RFC 5681 FlightSize), not from what is left outstanding once
    this very ACK has moved SND.UNA: that would cut it to a quarter or less.  NewReno named:
    halving is its rule (cubic keeps 0.7 of its window, tests/test_cubic.py)."""
    config = Config(
        congestion_control="newreno", pmtud=False, initial_cwnd_segments=20, pacing="off"
    )  # one burst
    mss = config.mss_bytes
    # Datagram 0 is the handshake ACK; the burst is datagrams 1..20: lose the 11th segment.
    net = pair(config_a=config, a_to_b=Link(drop=lambda index, packet: index == 11))
    net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
    a = net.a.conn
    assert a is not None
    a.send(bytes(20 * mss))
    net.run(until=lambda: a.stats.fast_retransmits == 1)
    acks = [s.packet for s in net.trace if s.src == "b" and s.packet.sack_blocks]
    assert len(acks) == 1, "the whole burst drew one ACK"
    assert acks[0].ack != a.iss + 1, "that ACK also acknowledged the segments before the hole"
    assert a.stats.ssthresh_bytes == 20 * mss // 2


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + (i >> 8)) & 0xFF for i in range(n))


@pytest.mark.parametrize("order", ["pause_then_unread", "unread_then_pause", "unread_only"])
def test_unread_bytes_come_again_before_anything_after_them(order: str) -> None:
    """The driver takes a DataReceived, hands on half and gives the rest back with
    ``unread()``, pausing reading before, after, or not at all: the stream arrives in order.
    Unread before pausing, or without pausing, the bytes were held behind data queued or
    arriving after them (the stream reordered at the first give-back)."""
    cfg = Config(pmtud=False)
    a = Connection(cfg, local_cid=0xA, isn=1000)
    b = Connection(cfg, local_cid=0xB, isn=5000)
    b.listen()
    now = 0.0
    a.connect(now=now)
    got = bytearray()
    gave_back = False

    def pump(rounds: int) -> None:
        nonlocal now, gave_back
        for _ in range(rounds):
            for src, dst in ((a, b), (b, a)):
                for datagram in src.datagrams_to_send(now=now):
                    dst.receive_datagram(datagram, now=now)
            while (event := b.next_event()) is not None:
                if not isinstance(event, DataReceived):
                    continue
                piece = bytes(event.data)
                if gave_back:
                    got.extend(piece)
                    continue
                gave_back = True
                keep = len(piece) // 2
                got.extend(piece[:keep])
                if order == "pause_then_unread":
                    b.pause_reading()
                b.unread(piece[keep:])
                if order == "unread_then_pause":
                    b.pause_reading()
                break
            while a.next_event() is not None:
                pass
            now += 0.01
            for conn in (a, b):
                deadline = conn.get_timer()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now=now)

    pump(10)
    data = _pattern(20_000)
    a.send(data)
    pump(50)
    b.resume_reading()
    pump(100)
    assert gave_back and bytes(got) == data


@pytest.mark.parametrize("end", ["peer_resets", "we_abort"])
def test_nothing_is_delivered_after_the_connection_closed_event(end: str) -> None:
    """A paused reader holds data when the connection is reset (or it aborts): after its
    ConnectionClosed, resume_reading() delivers nothing more (the held data came after the
    close event)."""
    net = pair(config_a=Config(pmtud=False), config_b=Config(pmtud=False))
    a, b = establish(net)
    b.pause_reading()
    a.send(b"x" * 100)
    a.close()
    net.run_for(0.5)
    (a if end == "peer_resets" else b).abort()
    net.run_for(0.5)
    assert b.is_finished
    b.resume_reading()
    net.run_for(0.5)
    events = net.b.events
    closed = [i for i, e in enumerate(events) if isinstance(e, ConnectionClosed)]
    assert closed == [len(events) - 1]


def test_data_sent_before_the_handshake_then_closed_is_delivered() -> None:
    """connect(), send(), close() before the SYN-ACK: the data and then the FIN go once the
    handshake completes.  The connection used to end at once, reporting an orderly close,
    its data never sent."""
    net = pair(config_a=Config(pmtud=False), config_b=Config(pmtud=False), connect=False)
    a, b = conns(net)
    a.connect(now=net.now)
    a.send(b"hello")
    a.close()
    assert a.state is S.SYN_SENT
    net.run(until=lambda: net.b.eof)
    assert bytes(net.b.received) == b"hello"
    b.close()
    net.run(until=lambda: a.is_finished and b.is_finished)
    assert a.close_reason is b.close_reason is CloseReason.CLOSED
