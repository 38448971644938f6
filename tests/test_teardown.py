"""How connections end (issue 17), on the fake network: bounded LAST_ACK, a real TIME_WAIT on
both sides, one ``ConnectionClosed`` per connection in every state whichever timer fires, the
idle timeout and its probes, ICMP port unreachable, orphans, and a SYN_RECEIVED server that
takes a keepalive probe as the handshake's ACK.

Client ``a`` starts at ISN 1000, server ``b`` at 5000.  Deterministic: the links' RNGs and the
payloads are seeded from ``SEED`` (printed with any failure), and no link is lossy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Link, Network, Sent, conns, establish, pair
from utcp import (
    CloseReason,
    Config,
    Connection,
    ConnectionClosed,
    ConnectionEstablished,
    ConnectionState,
    Event,
    FinAcknowledged,
    Flag,
    Packet,
    decode,
    encode,
)
from utcp.packet import HEADER_SIZE, decode_quoted

S = ConnectionState
SEED = 17
ISN_A, ISN_B = 1000, 5000
CID_A, CID_B = 0xA, 0xB
DELAY_S = Link().delay_s
DEFAULTS = Config()
FIXED = Config(pmtud=False)  # exact segment sizes, no PMTU probes
NEVER = (0.0, float("inf"))
RST_ACK = Flag.RST | Flag.ACK


@pytest.fixture(autouse=True)
def _print_seed() -> None:
    print(f"SEED={SEED} (link RNGs and payloads)")  # pytest shows it with any failure


def _net(cfg_a: Config = FIXED, cfg_b: Config = FIXED) -> Network:
    links = Link(rng=random.Random(SEED)), Link(rng=random.Random(SEED + 1))
    return pair(config_a=cfg_a, config_b=cfg_b, a_to_b=links[0], b_to_a=links[1])


def _vanish(net: Network, start: float | None = None) -> None:
    """Both directions drop everything from ``start`` (default: now) on."""
    t = net.now if start is None else start
    net.links["a"].blackhole = net.links["b"].blackhole = (t, float("inf"))


def _sent(net: Network, src: str, pred: Callable[[Packet], bool] = lambda p: True) -> list[Sent]:
    return [s for s in net.trace if s.src == src and pred(s.packet)]


def _closes(events: list[Event]) -> list[ConnectionClosed]:
    return [e for e in events if isinstance(e, ConnectionClosed)]


def _is_rst(p: Packet) -> bool:
    return bool(p.flags & Flag.RST)


def _is_fin(p: Packet) -> bool:
    return bool(p.flags & Flag.FIN)


def _probe(isn: int) -> Callable[[Packet], bool]:
    """Keepalive or confirming probes: bare ACKs one below the first unacknowledged byte."""
    return lambda p: p.flags == Flag.ACK and p.seq == isn and not p.payload


def _quote(p: Packet) -> Packet:
    """What an ICMP error quotes of one of our datagrams: its header."""
    return decode_quoted(encode(p)[:HEADER_SIZE])


class _Recorder:
    """A tracer keeping state changes, sends and the close report, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, dict[str, object]]] = []

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        if name in ("state_changed", "datagram_sent", "connection_closed"):
            self.log.append((now, name, dict(fields)))

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ 1. LAST_ACK


def test_last_ack_whose_peer_is_heard_does_not_give_up_at_fin_retries() -> None:
    """The client closes; the server writes 100 KB and closes; until 30 s every datagram
    of the server's that carries data or its FIN is lost, while its pure ACKs and all of
    the client's datagrams pass.  The client is plainly there (its probes arrive): the
    server goes on resending past fin_retries and everything arrives once the path
    carries data again.  It had given up at the seventh timeout (43 s), resetting a
    client that had waited for it, as a connection to a vanished peer does."""
    box: dict[str, Network] = {}

    def data_lost(_index: int, p: Packet) -> bool:
        return bool(p.payload or p.flags & Flag.FIN) and 0.5 < box["net"].now < 30.0

    net = pair(a_to_b=Link(drop=data_lost), b_to_a=Link())
    box["net"] = net
    a, b = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED and b.state is S.ESTABLISHED)
    b.close()
    net.run(until=lambda: a.state is S.CLOSE_WAIT and net.now >= 0.6)
    payload = random.Random(SEED).randbytes(100_000)
    a.send(payload)
    a.close()
    net.run(until=lambda: a.is_finished and b.close_reason is not None, max_time=300)
    assert a.stats.timeouts > DEFAULTS.fin_retries
    assert (a.close_reason, b.close_reason) == (CloseReason.CLOSED, CloseReason.CLOSED)
    assert bytes(net.b.received) == payload


@pytest.mark.parametrize("acked", [False, True], ids=["data_outstanding", "all_acked"])
def test_last_ack_with_a_vanished_peer_ends_after_fin_retries(acked: bool) -> None:
    """The client closes; the server writes 5000 bytes and closes; the path dies (before
    the data's ACK, or after it).  After fin_retries retransmissions (a tail probe, then 7
    RTOs from 0.2 s doubling: 25.4 s) the server gives up: TIMEOUT and an RST when the data
    was never acknowledged, an orderly close when only the FIN's ACK is missing."""
    net = _net()
    a, b = establish(net)
    a.close()
    net.run(until=lambda: b.state is S.CLOSE_WAIT)
    b.send(random.Random(SEED).randbytes(5000))
    if acked:
        net.run(until=lambda: b.send_buffer_size == 0)
    _vanish(net)
    cut = net.now
    rto = b.stats.rto_s  # a 20 ms RTT and rto_min_s beyond it
    b.close()
    assert b.state is S.LAST_ACK
    net.run(until=lambda: b.is_finished)
    backoff = rto * (2 ** (DEFAULTS.fin_retries + 1) - 1)
    assert 0 < net.now - cut - backoff <= 0.1, f"seed={SEED}"  # < 30 s, tail probe first
    assert b.stats.timeouts == DEFAULTS.fin_retries + 1
    reason = CloseReason.CLOSED if acked else CloseReason.TIMEOUT
    assert _closes(net.b.events) == [ConnectionClosed(reason)] and b.close_reason is reason
    assert FinAcknowledged() not in net.b.events
    fins = _sent(net, "b", _is_fin)
    assert {s.packet.seq + len(s.packet.payload) for s in fins} == {ISN_B + 1 + 5000}
    resets = [(s.time, s.packet.flags) for s in _sent(net, "b", _is_rst)]
    assert resets == ([] if acked else [(net.now, RST_ACK)]), f"seed={SEED}"


def test_an_orphan_whose_peer_never_opens_its_window_gives_up() -> None:
    """The server writes 1 MB and closes for good (an orphan); the client is alive and
    answers every window probe but never reads.  Once the probes have backed off to
    ``rto_max_s`` the orphan gives up with a reset, about two minutes on, holding nothing
    more; it used to probe for ever, keeping the rest of the response.  A client that still
    holds its end (not an orphan) keeps probing a closed window as long as it is answered."""
    net = pair()
    a, b = establish(net)
    a.pause_reading()
    b.send(bytes(1_000_000))
    net.run(until=lambda: b.stats.send_window_bytes == 0 and b.stats.bytes_in_flight == 0)
    b.orphan(now=net.now)
    start = net.now
    net.run(until=lambda: b.is_finished, max_time=600)
    assert b.close_reason is CloseReason.TIMEOUT
    assert 60 < net.now - start < 300
    net.run_for(1.0)
    assert a.close_reason is CloseReason.RESET


def test_a_closed_window_to_a_live_reader_is_probed_for_as_long_as_it_lasts() -> None:
    net = pair()
    a, b = establish(net)
    a.pause_reading()
    b.send(bytes(1_000_000))
    net.run_for(600)
    assert b.state is S.ESTABLISHED and a.state is S.ESTABLISHED
    a.resume_reading()
    net.run(until=lambda: len(net.a.received) == 1_000_000)


def test_a_response_that_fills_the_window_exactly_then_closes_waits_for_the_reader() -> None:
    """The server writes exactly what the paused client's window takes and closes.  Its FIN
    waits for room (RFC 9293 3.8.6): the closed window is probed for as long as the client
    answers, and the end of the stream follows at once when the client reads.  The FIN had
    gone one past the window's edge, where the client drops it: resent by the
    retransmission timer alone, it took the connection to a timeout after about 530 s, and
    a reader that came back earlier waited up to a backed-off RTO for its end of file."""
    config = Config(recv_autotune=False, recv_buffer_bytes=65536)
    net = pair(config_a=config, config_b=config)
    a, b = establish(net)
    a.pause_reading()
    net.run_for(0.5)
    size = b.stats.send_window_bytes
    b.send(bytes(size))
    b.close()
    net.run_for(600)
    assert b.state is S.FIN_WAIT_1 and a.state is S.ESTABLISHED
    a.resume_reading()
    resumed = net.now
    net.run(until=lambda: net.a.eof)
    assert len(net.a.received) == size
    assert net.now - resumed < 1.0


def test_without_time_wait_the_peers_fin_is_still_acknowledged() -> None:
    """``msl_s = 0``: TIME_WAIT ends as it begins, and the ACK of the peer's FIN still goes
    out (with the timer handled before the datagrams were collected, it was lost, and the
    peer's LAST_ACK ended in a reset instead of a clean close)."""
    net = pair(config_a=Config(msl_s=0.0))
    a, b = establish(net)
    a.send(b"x" * 100)
    a.close()
    net.run_for(1.0)
    b.close()
    net.run(until=lambda: a.is_finished and b.is_finished)
    assert a.close_reason is CloseReason.CLOSED and b.close_reason is CloseReason.CLOSED


# ------------------------------------------------------------------------------ 2. TIME_WAIT


@pytest.mark.parametrize("closer", ["a", "b"], ids=["client_closes_first", "server_closes_first"])
def test_time_wait_reacks_a_retransmitted_fin_and_restarts_2msl(closer: str) -> None:
    """The active closer's final ACK is lost: the other end retransmits its FIN, TIME_WAIT
    acknowledges it again on arrival and waits 2 MSL from then; both end orderly, once."""
    other = "b" if closer == "a" else "a"
    isn_closer, isn_other = (ISN_A, ISN_B) if closer == "a" else (ISN_B, ISN_A)
    final_ack = isn_other + 2  # no data: the other's FIN is at its ISN + 1
    lost: list[int] = []

    def drop(index: int, p: Packet) -> bool:
        if not lost and p.flags == Flag.ACK and p.ack == final_ack:
            lost.append(index)
        return lost == [index]

    msl = 1.5
    net = _net(FIXED.replace(msl_s=msl), FIXED.replace(msl_s=msl))
    net.links[closer].drop = drop
    establish(net)
    first, second = net.sides[closer].conn, net.sides[other].conn
    assert first is not None and second is not None
    first.close()
    net.run(until=lambda: first.state is S.FIN_WAIT_2)
    second.close()
    net.run(until=lambda: first.state is S.TIME_WAIT)
    assert first.get_timer() == pytest.approx(net.now + 2 * msl)
    assert _closes(net.sides[closer].events) == [ConnectionClosed(CloseReason.CLOSED)]

    net.run(until=lambda: second.is_finished)
    fins = _sent(net, other, _is_fin)
    assert [(s.packet.seq, s.packet.ack) for s in fins] == [(isn_other + 1, isn_closer + 2)] * 2
    acks = _sent(net, closer, lambda p: p.ack == final_ack)
    assert len(acks) == 2 and len(lost) == 1
    assert acks[1].time == pytest.approx(fins[1].time + DELAY_S)
    assert (acks[1].packet.flags, acks[1].packet.seq) == (Flag.ACK, isn_closer + 2)
    assert first.state is S.TIME_WAIT
    assert first.get_timer() == pytest.approx(acks[1].time + 2 * msl)  # restarted
    assert _closes(net.sides[other].events) == [ConnectionClosed(CloseReason.CLOSED)]

    net.run()
    assert net.now == pytest.approx(acks[1].time + 2 * msl) and first.is_finished
    assert _closes(net.sides[closer].events) == [ConnectionClosed(CloseReason.CLOSED)]
    assert _sent(net, closer, _is_rst) == _sent(net, other, _is_rst) == []
    assert len(net.trace) == 3 + 4 + 2  # handshake, close, one more FIN and its ACK


FIN_B = ISN_B + 1 + len(b"hello")  # b's FIN in the TIME_WAIT below


def _segment(flags: int, seq: int, payload: bytes = b"", ack: int = ISN_A + 2) -> Packet:
    return Packet(flags, CID_B, CID_A, seq, ack, 1000, payload)


# Datagrams from b reaching a in TIME_WAIT, and whether a answers them (with an ACK).
IN_TIME_WAIT = {
    "fin_again": (_segment(Flag.FIN | Flag.ACK, FIN_B), True),
    "data_before_fin_again": (_segment(Flag.ACK, ISN_B + 1, b"hello"), True),
    "bare_ack": (_segment(Flag.ACK, FIN_B + 1), False),
    "rst": (_segment(Flag.RST, FIN_B + 1, ack=0), False),
    "rst_ack": (_segment(RST_ACK, FIN_B + 1), False),
    "syn": (_segment(Flag.SYN, 9000, ack=0), False),
    "new_data": (_segment(Flag.ACK, FIN_B + 1, b"more"), False),
    "data_past_fin": (_segment(Flag.ACK | Flag.FIN, FIN_B, b"x"), False),
}


@pytest.mark.parametrize("kind", list(IN_TIME_WAIT))
def test_time_wait_answers_only_a_retransmission_from_the_peer(kind: str) -> None:
    """The peer's FIN again, or data before it again: one ACK of the FIN and 2 MSL
    restarted.  A bare ACK, an RST, a SYN, new data: no datagram, no event, no restart,
    counted as a drop."""
    net = _net()
    a, b = establish(net)
    b.send(b"hello")
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2 and net.a.received == b"hello")
    b.close()
    net.run(until=lambda: a.state is S.TIME_WAIT and b.is_finished)
    net.flush()
    deadline, later = a.get_timer(), net.now + 0.5
    packet, answered = IN_TIME_WAIT[kind]
    a.receive_datagram(encode(packet), now=later)
    out = [decode(d) for d in a.datagrams_to_send(now=later)]
    assert a.next_event() is None and a.state is S.TIME_WAIT
    if answered:
        assert [(p.flags, p.seq, p.ack) for p in out] == [(Flag.ACK, ISN_A + 2, FIN_B + 1)]
        assert a.get_timer() == pytest.approx(later + 2 * DEFAULTS.msl_s)
        assert a.drops == {}
    else:
        assert out == [] and a.get_timer() == deadline
        assert a.drops == {"unexpected": 1} and a.stats.datagrams_dropped == 1


# ------------------------------------------------------------------------------ 3. one close

# Each scenario: (a's state, b's state) as the path dies, then why each end closes, one
# letter per TIMERS column: Timeout, Idle, Closed orderly, Aborted.  Both directions die,
# except in TIME_WAIT where only a's datagrams are lost, so b's FIN retransmissions reach a.
# The SYN states know only syn_retries; an orphan's FIN_WAIT_1 gives up after fin_retries,
# its FIN_WAIT_2 after fin_wait_2_timeout_s; CLOSING, and LAST_ACK with every byte
# acknowledged, end orderly after fin_retries; TIME_WAIT has reported CLOSED on entry.
SCENARIOS: dict[str, tuple[S, S, str, str]] = {
    "SYN_SENT": (S.SYN_SENT, S.LISTEN, "TTTTTTTA", ""),
    "SYN_RECEIVED": (S.SYN_SENT, S.SYN_RECEIVED, "TTTTTTTA", "TTTTTTTA"),
    "ESTABLISHED_idle": (S.ESTABLISHED, S.ESTABLISHED, "IIITIIIA", "IIITIIIA"),
    "ESTABLISHED_sending": (S.ESTABLISHED, S.ESTABLISHED, "IIITIITA", "IIITIIIA"),
    "ESTABLISHED_receiving": (S.ESTABLISHED, S.ESTABLISHED, "IIITIIIA", "IIITIITA"),
    "FIN_WAIT_1": (S.FIN_WAIT_1, S.ESTABLISHED, "IIITIITA", "IIITIIIA"),
    "FIN_WAIT_1_orphaned": (S.FIN_WAIT_1, S.ESTABLISHED, "TIITTTTA", "IIITIIIA"),
    "FIN_WAIT_2": (S.FIN_WAIT_2, S.CLOSE_WAIT, "IIITIIIA", "IIITIIIA"),
    "FIN_WAIT_2_orphaned": (S.FIN_WAIT_2, S.CLOSE_WAIT, "IIITTIIA", "IIITIIIA"),
    "CLOSE_WAIT": (S.FIN_WAIT_2, S.CLOSE_WAIT, "IIITIIIA", "IIITIITA"),  # b sending
    "CLOSING": (S.CLOSING, S.CLOSING, "CCITCCCA", "CCITCCCA"),
    "LAST_ACK": (S.FIN_WAIT_2, S.LAST_ACK, "IIITIIIA", "TIITTTTA"),  # b's data unacked
    "TIME_WAIT": (S.TIME_WAIT, S.LAST_ACK, "CCCCCCCC", "CCITCCCA"),
}
LETTERS = {"T": CloseReason.TIMEOUT, "I": CloseReason.IDLE, "C": CloseReason.CLOSED}
LETTERS["A"] = CloseReason.ABORTED
# Config changes making one timer the first to end things, the bound (s after the path
# died) on when each end is done, and that bound for the SYN states (syn_retries: 71 s by
# default).  "abort" calls abort() on both ends 1 s after the path died.
FAST_KEEPALIVE = {"keepalive_idle_s": 1.0, "keepalive_interval_s": 0.5, "keepalive_probes": 2}
TIMERS: dict[str, tuple[dict[str, Any], float, float]] = {
    "defaults": ({}, 30.5, 71.5),
    "idle_timeout": ({"idle_timeout_s": 3.0}, 3.5, 71.5),
    "keepalive": (FAST_KEEPALIVE, 2.5, 71.5),
    "user_timeout": ({"user_timeout_s": 2.0}, 20.5, 71.5),
    "fin_wait_2_timeout": ({"fin_wait_2_timeout_s": 1.0}, 30.5, 71.5),
    "msl": ({"msl_s": 0.05}, 30.5, 71.5),
    "max_retransmits": ({"max_retransmits": 2, "fin_retries": 1, "syn_retries": 1}, 30.5, 3.5),
    "abort": ({}, 1.0, 1.0),
}


def _vanish_in(scenario: str, cfg: Config) -> Network:
    """A traced pair in ``scenario`` (see SCENARIOS) at the moment its path dies."""
    net = _net(cfg, cfg)
    a, b = conns(net)
    for conn in (a, b):
        conn.set_tracer(_Recorder(), now=net.now)
    data = random.Random(SEED).randbytes(200_000)
    kind = scenario.removesuffix("_orphaned")
    if scenario.startswith("SYN"):
        _vanish(net, 0.0 if scenario == "SYN_SENT" else DELAY_S / 2)  # the SYN gets in
        net.run_for(DELAY_S)
    else:
        establish(net)
    if scenario.startswith("ESTABLISHED"):
        if scenario.endswith("sending"):
            a.send(data)
        elif scenario.endswith("receiving"):
            b.send(data)
        net.run_for(0.1)
    elif kind in ("FIN_WAIT_1", "FIN_WAIT_2"):
        if kind == "FIN_WAIT_1":
            a.send(data)
        if scenario.endswith("orphaned"):
            a.orphan(now=net.now)
        else:
            a.close()
        net.run(until=lambda: a.state is S.FIN_WAIT_2 or net.now > 0.1)
    elif scenario in ("CLOSE_WAIT", "LAST_ACK", "TIME_WAIT"):
        a.close()
        net.run(until=lambda: b.state is S.CLOSE_WAIT and a.state is S.FIN_WAIT_2)
        if scenario == "CLOSE_WAIT":
            b.send(data)
            net.run_for(0.1)
        elif scenario == "LAST_ACK":
            _vanish(net)
            b.send(data[:50_000])
            b.close()
        else:
            net.links["a"].blackhole = NEVER
            b.close()
            net.run(until=lambda: a.state is S.TIME_WAIT)
    elif scenario == "CLOSING":
        a.close()
        b.close()
        _vanish(net, net.now + DELAY_S / 2)  # the FINs cross, their ACKs are lost
        net.run(until=lambda: a.state is S.CLOSING and b.state is S.CLOSING)
    if net.links["a"].blackhole is None:
        _vanish(net)
    assert (a.state, b.state) == SCENARIOS[scenario][:2], f"seed={SEED}"
    return net


def _sends_after_close(conn: Connection, peer_fin_ack: int | None) -> list[str]:
    """What ``conn`` sent after reporting its close that it should not have: in TIME_WAIT
    anything but an ACK of the peer's FIN; once CLOSED anything but an RST."""
    tracer = conn.tracer
    assert isinstance(tracer, _Recorder)
    state, closed, bad = S.CLOSED, False, []
    for t, name, f in tracer.log:
        if name == "state_changed":
            state = S(f["new"])
        closed = closed or name == "connection_closed"
        if name == "datagram_sent" and closed:
            if state is S.TIME_WAIT:
                ok = (f["flags"], f["len"], f["ack"]) == ("ACK", 0, peer_fin_ack)
            else:
                ok = state is S.CLOSED and "RST" in str(f["flags"])
            bad += [] if ok else [f"{t:.3f} {state.value} {f}"]
    return bad


def _bursts(net: Network, name: str) -> list[tuple[float, int]]:
    """Segments taking sequence space sent more than once at the same instant."""
    keys = [
        (s.time, s.packet.seq)
        for s in _sent(net, name, lambda p: bool(p.payload or p.flags & (Flag.SYN | Flag.FIN)))
    ]
    return sorted({k for k in keys if keys.count(k) > 1})


MATRIX = [pytest.param(s, t) for s in SCENARIOS for t in TIMERS]


@pytest.mark.parametrize(("scenario", "timer"), MATRIX)
def test_exactly_one_close_event_in_every_state_and_timer(scenario: str, timer: str) -> None:
    """Whatever the state when the peer vanished and whichever timer fires first, each end
    reports exactly one ConnectionClosed, for the expected reason, is done within the
    timer's bound (TIME_WAIT: 2 MSL after its last ACK), sends nothing after the report but
    TIME_WAIT's ACKs of a retransmitted FIN (or an RST once CLOSED), never sends a segment
    twice at one instant, and an abort() afterwards sends and reports nothing."""
    changes, _, syn_bound = TIMERS[timer]
    cfg = FIXED.replace(**changes)
    net = _vanish_in(scenario, cfg)
    ends = "a" if scenario == "SYN_SENT" else "ab"  # a listener never ends
    cut = net.now
    # Keepalive stands aside while data or a FIN is in flight (its retransmissions probe the
    # peer): such an end meets the short keepalive as it meets the defaults.
    in_flight = {
        name: conn.stats.bytes_in_flight > 0 or conn.state in (S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK)
        for name in ends
        if (conn := net.sides[name].conn) is not None
    }
    done: dict[str, float] = {}

    def note(net: Network) -> None:
        for name in ends:
            conn = net.sides[name].conn
            if conn is not None and conn.is_finished:
                done.setdefault(name, net.now)

    net.on_step = note
    if timer == "abort":
        net.run_for(1.0)
        for name in ends:
            conn = net.sides[name].conn
            assert conn is not None
            conn.abort()
        net.flush()
        note(net)
    net.run(max_time=600)
    net.run_for(300.0)
    for name in ends:
        conn, side = net.sides[name].conn, net.sides[name]
        assert conn is not None
        where = f"{scenario}/{timer}, side {name}, seed={SEED}"
        closes = _closes(side.events)
        assert len(closes) == 1 and conn.is_finished, where
        _, _, letters_a, letters_b = SCENARIOS[scenario]
        column = "defaults" if timer == "keepalive" and in_flight[name] else timer
        expected = LETTERS[(letters_a if name == "a" else letters_b)[list(TIMERS).index(column)]]
        side_bound = TIMERS[column][1]
        if column == "keepalive" and name == "b":
            side_bound += cfg.keepalive_interval_s  # the accepting end starts probing later
        assert closes[0].reason is conn.close_reason is expected, where
        fins = _sent(net, "b" if name == "a" else "a", _is_fin)
        fin_ack = fins[0].packet.seq + len(fins[0].packet.payload) + 1 if fins else None
        if scenario == "TIME_WAIT" and name == "a" and timer != "abort":
            last_ack = [s.time for s in _sent(net, "a") if s.packet.ack == fin_ack][-1]
            assert done[name] == pytest.approx(last_ack + 2 * cfg.msl_s), where
        else:
            assert done[name] - cut <= (syn_bound if scenario[:3] == "SYN" else side_bound), where
        assert _sends_after_close(conn, fin_ack) == [], where
        assert _bursts(net, name) == [], where
        sent, events = len(net.trace), len(side.events)
        conn.abort()
        net.flush()
        assert (len(net.trace), len(side.events), conn.state) == (sent, events, S.CLOSED), where


# ------------------------------------------------------------------------------ 4. idle, probes


@pytest.mark.parametrize(
    ("size", "rto_min_s", "stall"),
    # 3 RTO with rto_min_s 0.5 and a 20 ms RTT: 3 x 0.52 s.
    [(100, 0.2, None), (10_000_000, 0.2, 1.0), (10_000_000, 0.5, 1.56)],
    ids=["small_messages", "stalled_transfer", "stalled_transfer_long_rto"],
)
def test_a_reader_whose_peer_vanished_probes_and_ends_idle_at_30_s(
    size: int, rto_min_s: float, stall: float | None
) -> None:
    """Default timers; the peer sends (100-byte messages, or a bulk transfer in full-sized
    segments), then vanishes.  The reader, with nothing to send, probes 15, 20 and 25 s
    after it last heard from the peer, resets the connection as IDLE at 30 s, and, after a
    stalled transfer only, probes once early: after max(keepalive_stall_s, 3 RTO)."""
    cfg = DEFAULTS.replace(rto_min_s=rto_min_s)  # PMTU discovery on, as by default
    net = _net(cfg, cfg)
    a, b = establish(net)
    assert a.stats.rto_s == pytest.approx(2 * DELAY_S + rto_min_s)
    for _ in range(3 if size == 100 else 1):  # the transfer still goes on after 0.3 s
        b.send(random.Random(SEED).randbytes(size))
        net.run_for(0.3)
    heard = a.last_heard
    assert heard == pytest.approx(_sent(net, "b", lambda p: bool(p.payload))[-1].time + DELAY_S)
    _vanish(net)
    net.run(until=lambda: a.is_finished)
    probes = [s.time - heard for s in _sent(net, "a", _probe(ISN_A))]
    assert probes == pytest.approx([stall] * (stall is not None) + [15.0, 20.0, 25.0])
    assert net.now - heard == pytest.approx(30.0), f"seed={SEED}"
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.IDLE)]
    assert isinstance(CloseReason.IDLE.exception(), TimeoutError)
    assert (net.trace[-1].src, net.trace[-1].packet.flags) == ("a", RST_ACK)


def test_a_healthy_idle_connection_stays_up_for_ten_minutes_with_few_probes() -> None:
    """Default config on both ends, nothing to say for 10 simulated minutes: every probe is
    answered on arrival, nothing closes, the connecting end probes every keepalive_idle_s,
    and the accepting end, hearing those probes, sends none of its own."""
    net = _net(DEFAULTS, DEFAULTS)
    a, b = establish(net)
    net.run_for(600.0)
    assert (a.state, b.state) == (S.ESTABLISHED, S.ESTABLISHED)
    assert net.a.events == net.b.events == [ConnectionEstablished()]
    probes = _sent(net, "a", _probe(ISN_A))
    assert 600 / 16 <= len(probes) <= 600 / 15
    answers = {
        round(s.time, 6)
        for s in _sent(net, "b")
        if (s.packet.seq, s.packet.ack) == (ISN_B + 1, ISN_A + 1)
    }
    assert all(round(p.time + DELAY_S, 6) in answers for p in probes)
    assert _sent(net, "b", _probe(ISN_B)) == []
    assert len(net.trace) <= 3 + 6 + 2 * 600 / 15  # handshake, its ACK re-sent, probes
    assert _sent(net, "a", _is_rst) == _sent(net, "b", _is_rst) == []


def test_probes_from_a_live_peer_are_answered_not_counted_as_drops() -> None:
    """Keepalive probes between two live peers, and window probes to a reader that does not
    read: each is answered, and none is counted as a dropped datagram or a challenge ACK
    (they were, every one: to monitoring a quiet server looked under constant attack, and a
    probe arriving within ``challenge_ack_interval_s`` of another went unanswered)."""
    net = _net(DEFAULTS, DEFAULTS)
    a, b = establish(net)
    net.run_for(120.0)
    b.pause_reading()
    a.send(bytes(200_000))
    net.run_for(120.0)
    assert (a.state, b.state) == (S.ESTABLISHED, S.ESTABLISHED)
    for side in (a, b):
        assert side.stats.drops == {} and side.stats.challenge_acks == 0
    b.resume_reading()
    net.run(until=lambda: len(net.b.received) == 200_000)


def test_a_probe_acknowledging_new_data_moves_the_sender_on() -> None:
    """A receiver probing a sender that fell silent mid-transfer (its stall probe, after an
    outage) acknowledges in the probe what arrived before the silence, its ACKs of it lost:
    the sender takes that acknowledgement and moves on, rather than waiting for its
    backed-off timer.  The probe's acknowledgement used to be dropped with it."""
    net = _net(DEFAULTS, DEFAULTS)
    a, _b = establish(net)
    net.links["b"].drop = lambda i, p: not p.payload  # b's ACKs are lost
    a.send(bytes(5_000))
    net.run(until=lambda: len(net.b.received) == 5_000)
    assert a.stats.bytes_in_flight > 0
    last_ack = _sent(net, "b")[-1].packet
    probe = Packet(
        src_cid=last_ack.src_cid,
        dst_cid=last_ack.dst_cid,
        seq=(last_ack.seq - 1) & 0xFFFFFFFF,
        ack=last_ack.ack,
        flags=Flag.ACK,
        window=last_ack.window,
    )
    a.receive_datagram(encode(probe), now=net.now)
    assert a.stats.bytes_in_flight == 0
    assert a.stats.drops == {} and a.stats.challenge_acks == 0


# ------------------------------------------------------------------------------ 5. ICMP


def _quiet_pair() -> tuple[Network, Connection]:
    """Established; a wrote b"ping" (acknowledged: SND.UNA = SND.MAX = ISN + 5) and read
    b"pong"; from now on nothing a sends reaches b (b's port is closed)."""
    net = _net()
    a, b = establish(net)
    a.send(b"ping")
    b.send(b"pong")
    net.run(until=lambda: a.send_buffer_size == 0 and net.a.received == b"pong")
    net.run_for(0.1)
    net.links["a"].blackhole = NEVER
    return net, a


def _header(seq: int, src: int = CID_A, dst: int = CID_B, flags: int = Flag.ACK) -> Packet:
    return _quote(Packet(flags, src, dst, seq, ISN_B + 5, 1000))


FORGED = {
    "wrong_source_cid": _header(ISN_A + 5, src=CID_A + 1),
    "wrong_destination_cid": _header(ISN_A + 5, dst=CID_B + 1),
    "seq_below_una_minus_1": _header(ISN_A + 3),
    "seq_above_snd_max": _header(ISN_A + 6),
    "seq_far_away": _header(ISN_A + 5 + (1 << 31)),
}


@pytest.mark.parametrize("kind", list(FORGED))
def test_a_forged_port_unreachable_is_ignored(kind: str) -> None:
    net, a = _quiet_pair()
    timer = a.get_timer()
    assert a.receive_unreachable(FORGED[kind], now=net.now) is False
    assert (a.state, a.get_timer(), a.stats.icmp_errors) == (S.ESTABLISHED, timer, 0)
    assert a.datagrams_to_send(now=net.now) == [] and a.next_event() is None


def test_port_unreachable_repeated_an_rto_later_ends_a_quiet_connection() -> None:
    net, a = _quiet_pair()
    rto, t1 = a.stats.rto_s, net.now
    assert a.receive_unreachable(_header(ISN_A + 5), now=t1)  # SND.MAX
    assert a.receive_unreachable(_header(ISN_A + 4), now=t1)  # SND.UNA - 1: a probe's
    assert (a.state, a.stats.icmp_errors) == (S.ESTABLISHED, 2)  # one instant: no end
    assert a.get_timer() == pytest.approx(t1 + rto)  # the confirming probe
    assert a.receive_unreachable(_header(ISN_A + 5), now=t1 + rto / 2)
    assert (a.state, a.stats.icmp_errors) == (S.ESTABLISHED, 3)  # < rto_min_s later
    net.run(until=lambda: net.trace[-1].time > t1)
    probe = net.trace[-1]
    assert probe.src == "a" and probe.time == pytest.approx(t1 + rto)
    assert _probe(ISN_A + 4)(probe.packet)
    assert a.receive_unreachable(_quote(probe.packet), now=net.now)
    net.flush()
    assert (a.state, a.stats.icmp_errors) == (S.CLOSED, 4)
    assert _closes(net.a.events) == [ConnectionClosed(CloseReason.UNREACHABLE)]
    assert isinstance(CloseReason.UNREACHABLE.exception(), ConnectionResetError)
    assert net.trace[-1] is probe  # no RST towards a closed port


def test_a_segment_from_the_peer_between_two_errors_starts_the_count_again() -> None:
    net, a = _quiet_pair()
    _, b = conns(net)
    t1 = net.now
    assert a.receive_unreachable(_header(ISN_A + 5), now=t1)
    b.send(b"still here")
    net.run(until=lambda: net.a.received.endswith(b"still here"))
    assert t1 < a.last_heard == net.now < t1 + 0.3
    net.run_for(t1 + 0.3 - net.now)
    assert a.receive_unreachable(_header(ISN_A + 5), now=net.now)
    assert a.state is S.ESTABLISHED and a.stats.icmp_errors == 2
    assert a.get_timer() == pytest.approx(net.now + a.stats.rto_s)  # a new confirming probe


@pytest.mark.parametrize("opener", ["a", "b"], ids=["SYN_SENT", "SYN_RECEIVED"])
def test_port_unreachable_ends_a_handshake_at_once(opener: str) -> None:
    """A connect is refused; a half-open server connection ends as UNREACHABLE."""
    net = _net()
    conn, side = net.sides[opener].conn, net.sides[opener]
    assert conn is not None
    net.links[opener].blackhole = NEVER
    net.run(until=lambda: conn.state is not S.LISTEN)
    net.flush()
    (syn,) = [s.packet for s in _sent(net, opener)]
    assert syn.flags == (Flag.SYN if opener == "a" else Flag.SYN | Flag.ACK)
    wrong = Packet(syn.flags, syn.src_cid, syn.dst_cid, syn.seq + 1, syn.ack, 1000)
    assert conn.receive_unreachable(_quote(wrong), now=net.now) is False
    assert conn.receive_unreachable(_quote(syn), now=net.now)
    net.flush()
    reason = CloseReason.REFUSED if opener == "a" else CloseReason.UNREACHABLE
    assert _closes(side.events) == [ConnectionClosed(reason)] and conn.is_finished
    assert len(_sent(net, opener)) == 1  # nothing more, no RST


@pytest.mark.parametrize("acked", [True, False], ids=["all_acked", "data_outstanding"])
def test_port_unreachable_in_last_ack(acked: bool) -> None:
    """LAST_ACK, the client gone: the error repeated by the FIN's retransmission ends the
    connection orderly when every byte was acknowledged, as UNREACHABLE otherwise."""
    net = _net()
    a, b = establish(net)
    a.close()
    net.run(until=lambda: b.state is S.CLOSE_WAIT)
    b.send(b"bye")
    if acked:
        net.run(until=lambda: b.send_buffer_size == 0)
    net.links["b"].blackhole = NEVER
    b.close()
    net.flush()
    (fin,) = _sent(net, "b", _is_fin)
    t1 = net.now
    assert b.receive_unreachable(_quote(fin.packet), now=t1)
    timer = b.get_timer()  # the FIN's retransmission, not a probe, confirms the error
    assert timer is not None and timer <= t1 + b.stats.rto_s
    net.run(until=lambda: _sent(net, "b", _is_fin)[-1].time >= t1 + DEFAULTS.rto_min_s)
    again = _sent(net, "b", _is_fin)[-1]
    assert again.time < t1 + 1.0 and again.packet.seq == fin.packet.seq
    assert b.receive_unreachable(_quote(again.packet), now=net.now)
    net.flush()
    reason = CloseReason.CLOSED if acked else CloseReason.UNREACHABLE
    assert b.is_finished and _closes(net.b.events) == [ConnectionClosed(reason)]
    assert _sent(net, "b", _is_rst) == []


# ------------------------------------------------------------------------------ 6. orphan


def test_an_orphan_in_fin_wait_2_resets_after_fin_wait_2_timeout() -> None:
    """orphan(): the application closed for good.  The peer acknowledges the FIN and stays
    alive (answering probes) without closing: fin_wait_2_timeout_s after FIN_WAIT_2 began
    the orphan resets the connection (TIMEOUT) and the peer sees the reset."""
    net = _net(DEFAULTS, DEFAULTS)
    a, _ = establish(net)
    a.orphan(now=net.now)
    assert a.is_orphaned and a.state is S.FIN_WAIT_1
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    entered = net.now
    net.run(until=lambda: a.is_finished)
    assert net.now == pytest.approx(entered + 60.0)
    closed = ConnectionClosed(CloseReason.TIMEOUT)
    assert net.a.events == [ConnectionEstablished(), FinAcknowledged(), closed]
    assert [(s.time, s.packet.flags) for s in _sent(net, "a", _is_rst)] == [(net.now, RST_ACK)]
    probes = [s for s in _sent(net, "a", _probe(ISN_A + 1)) if s.time > entered]
    assert len(probes) == 3  # each answered: the peer is alive
    net.run()
    assert _closes(net.b.events) == [ConnectionClosed(CloseReason.RESET)]


def test_a_half_closed_fin_wait_2_lasts_while_the_peer_talks() -> None:
    """close() (write_eof) is a half-close: FIN_WAIT_2 has no limit while the peer is alive,
    well past fin_wait_2_timeout_s, and data still flows towards the closer."""
    net = _net(DEFAULTS, DEFAULTS)
    a, b = establish(net)
    a.close()
    net.run(until=lambda: a.state is S.FIN_WAIT_2)
    for k in range(6):
        net.run_for(30.0)
        b.send(b"tick %d" % k)
    net.run_for(1.0)
    assert (a.state, b.state, net.now > 180) == (S.FIN_WAIT_2, S.CLOSE_WAIT, True)
    assert net.a.received == b"".join(b"tick %d" % k for k in range(6))
    assert _closes(net.a.events) == _closes(net.b.events) == []
    assert _sent(net, "a", _is_rst) == []


# ------------------------------------------------------------------------------ 7. SYN_RECEIVED


def test_a_server_takes_the_clients_keepalive_probe_as_the_handshake_ack() -> None:
    """The first SYN and every handshake ACK the client sends before t=20 s are lost.  Its
    first keepalive probe (15 s after the SYN-ACK) acknowledges the SYN-ACK: the server
    takes it as the handshake's ACK, both are established before 20 s and stay up."""
    net = _net(DEFAULTS, DEFAULTS)

    def drop(index: int, p: Packet) -> bool:
        if index == 0:
            return p.flags == Flag.SYN
        return p.flags == Flag.ACK and p.seq == ISN_A + 1 and not p.payload and net.now < 20

    net.links["a"].drop = drop
    a, b = conns(net)
    net.run(until=lambda: a.state is S.ESTABLISHED)
    synack = _sent(net, "b")[-1].time
    net.run(until=lambda: b.state is S.ESTABLISHED)
    probe = _sent(net, "a", _probe(ISN_A))[0]
    assert probe.time == pytest.approx(synack + DELAY_S + 15.0)
    assert net.now == pytest.approx(probe.time + DELAY_S) and net.now < 20
    assert net.links["a"].dropped == 1 + len(_sent(net, "a", lambda p: p.seq == ISN_A + 1))
    net.run_for(120.0)
    assert (a.state, b.state) == (S.ESTABLISHED, S.ESTABLISHED)
    assert net.a.events == net.b.events == [ConnectionEstablished()]
    assert _sent(net, "a", _is_rst) == _sent(net, "b", _is_rst) == []


# ------------------------------------------------------------------- bugs found on the way


def test_user_timeout_fires_once_without_a_burst_of_retransmissions() -> None:
    """LossRecovery.rto_deadline arms the RTO at since + 2.0, user_timeout_expired wants
    now - since >= 2.0: where (since + 2.0) - since rounds below 2.0 the timer fires again
    and again at one instant, each time retransmitting (12 copies at t=2.11 s here)."""
    cfg = FIXED.replace(user_timeout_s=2.0)
    net = _net(cfg, cfg)
    a, _ = establish(net)
    net.run_for(0.08)
    a.send(b"x" * 100)
    net.run_for(0.001)
    _vanish(net)
    net.run(until=lambda: a.is_finished)
    assert _bursts(net, "a") == []
    assert a.stats.timeouts < DEFAULTS.max_retransmits


def test_a_quiet_connection_to_a_live_peer_survives_a_short_user_timeout() -> None:
    """Keepalive on by default (15 s), user_timeout_s=2: on_keepalive's first probe re-arms
    at min(now + interval, last_heard + 2 s), already past, so the reset leaves with the
    probe, which never has time to be answered."""
    cfg = FIXED.replace(user_timeout_s=2.0)
    net = _net(cfg, cfg)
    a, b = establish(net)
    net.run_for(60.0)
    assert (a.state, b.state) == (S.ESTABLISHED, S.ESTABLISHED), (a.close_reason, b.close_reason)
