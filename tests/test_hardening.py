"""Blind in-window attacks (RFC 5961), challenge-ACK throttling, idle timeout and bounded
reassembly, on the sans-I/O core with forged datagrams on an explicit timeline.

The client ``a`` (ISN 1000, cid 0xA) and the server ``b`` (ISN 5000, cid 0xB) are established
before each attack, so every number an off-path attacker would have to guess is known here.
"""

from __future__ import annotations

import tracemalloc

import pytest

from tests.helpers import Network, establish, pair
from utcp import CloseReason, Config, Connection, ConnectionState, Flag, Packet, decode, encode

S = ConnectionState
ISN_A, ISN_B = 1000, 5000
CID_A, CID_B = 0xA, 0xB
RCV_NXT = ISN_B + 1  # what the client expects next from the server
SND_NXT = ISN_A + 1


def _established(config: Config | None = None) -> tuple[Network, Connection]:
    net = pair(config_a=config, config_b=config)
    a, _ = establish(net)
    net.run_for(1.0)  # let delayed ACKs and timers settle
    assert a.datagrams_to_send(now=net.now) == []
    return net, a


def _forge(
    a: Connection, now: float, flags: int, seq: int, ack: int = 0, data: bytes = b""
) -> list[Packet]:
    """Deliver one forged datagram from 'the server' to the client; what the client answers."""
    a.receive_datagram(encode(Packet(flags, CID_B, CID_A, seq, ack, 1024, data)), now=now)
    return [decode(d) for d in a.datagrams_to_send(now=now)]


def _is_challenge(p: Packet) -> bool:
    return p.flags == Flag.ACK and p.seq == SND_NXT and p.ack == RCV_NXT and not p.payload


def _window(a: Connection) -> int:
    return a.stats.receive_window_bytes


# ------------------------------------------------------------------------------ RST (RFC 5961 3)


def test_rst_at_rcv_nxt_resets() -> None:
    net, a = _established()
    assert _forge(a, net.now, Flag.RST, RCV_NXT) == []
    assert a.state is S.CLOSED and a.close_reason is CloseReason.RESET


@pytest.mark.parametrize("offset", [1, 100, 4096])
def test_rst_inside_window_draws_a_challenge_ack_and_the_connection_survives(offset: int) -> None:
    net, a = _established()
    out = _forge(a, net.now, Flag.RST, RCV_NXT + offset)
    assert len(out) == 1 and _is_challenge(out[0])
    assert a.state is S.ESTABLISHED
    assert a.stats.challenge_acks == 1
    assert a.stats.drops == {"out of window": 1}


@pytest.mark.parametrize("where", ["rcv_nxt - 1", "rcv_nxt + rcv_wnd", "far away"])
def test_rst_outside_window_is_ignored(where: str) -> None:
    net, a = _established()
    seq = {
        "rcv_nxt - 1": RCV_NXT - 1,
        "rcv_nxt + rcv_wnd": RCV_NXT + _window(a),
        "far away": RCV_NXT + (1 << 31),
    }[where]
    assert _forge(a, net.now, Flag.RST, seq) == []
    assert a.state is S.ESTABLISHED
    assert a.stats.challenge_acks == 0
    assert a.stats.drops == {"out of window": 1}


def test_the_connection_still_works_after_every_forgery() -> None:
    net, a = _established()
    for seq in (RCV_NXT - 1, RCV_NXT + 10, RCV_NXT + _window(a)):
        _forge(a, net.now, Flag.RST, seq)
    _forge(a, net.now + 1, Flag.SYN, RCV_NXT + 7)
    b = net.b.conn
    assert b is not None
    a.send(b"after the attack")
    b.send(b"reply")
    net.run(
        until=lambda: bytes(net.b.received) == b"after the attack" and net.a.received == b"reply"
    )
    assert a.state is b.state is S.ESTABLISHED


# ------------------------------------------------------------------------------ SYN, ACK, data


def test_syn_while_established_draws_a_challenge_ack() -> None:
    net, a = _established()
    out = _forge(a, net.now, Flag.SYN, 123456)
    assert len(out) == 1 and _is_challenge(out[0])
    assert a.state is S.ESTABLISHED
    assert a.stats.drops == {"unexpected": 1}


def test_ack_of_data_never_sent_is_dropped_with_its_data() -> None:
    net, a = _established()
    out = _forge(a, net.now, Flag.ACK, RCV_NXT, ack=SND_NXT + 5000, data=b"injected")
    assert len(out) == 1 and _is_challenge(out[0])
    assert a.next_event() is None  # nothing delivered
    assert a.stats.bytes_received == 0
    assert a.stats.drops == {"out of window": 1}


def test_ack_too_far_in_the_past_is_dropped() -> None:
    net, a = _established()
    # Older than the largest window the server may have offered (its 1 MiB buffer, which its
    # PMTU probes advertise), and so than RFC 5961's limit of max(largest window, 64 KiB).
    too_old = (SND_NXT - (2 << 20)) & 0xFFFFFFFF
    out = _forge(a, net.now, Flag.ACK, RCV_NXT, ack=too_old, data=b"injected")
    assert len(out) == 1 and _is_challenge(out[0])
    assert a.stats.bytes_received == 0


def test_data_without_ack_flag_is_dropped() -> None:
    net, a = _established()
    assert _forge(a, net.now, 0, RCV_NXT, data=b"no ack bit") == []
    assert a.next_event() is None
    assert a.stats.bytes_received == 0
    assert a.stats.drops == {"unexpected": 1}


def test_data_outside_the_window_is_dropped_and_acked() -> None:
    net, a = _established()
    out = _forge(a, net.now, Flag.ACK, RCV_NXT + _window(a), ack=SND_NXT, data=b"beyond")
    assert [p.ack for p in out] == [RCV_NXT]
    assert a.stats.reassembly_bytes == 0
    assert a.stats.drops == {"out of window": 1}


# ------------------------------------------------------------------------------ throttling


def test_challenge_acks_are_rate_limited_per_connection() -> None:
    net, a = _established(Config(challenge_ack_interval_s=0.5))
    answers = [_forge(a, net.now + i * 0.001, Flag.RST, RCV_NXT + 10) for i in range(100)]
    assert sum(len(x) for x in answers) == 1
    assert a.stats.challenge_acks == 1
    assert a.stats.drops == {"out of window": 1, "rate limited": 99}
    # Once the interval has passed, the next forgery is challenged again.
    assert len(_forge(a, net.now + 0.6, Flag.SYN, 1)) == 1
    assert a.stats.challenge_acks == 2


def test_retransmitted_data_is_always_acknowledged() -> None:
    """Old data means our ACK was lost: throttling its ACK would stall the peer."""
    net, a = _established(Config(challenge_ack_interval_s=10.0))
    answers = [
        _forge(a, net.now + i * 0.001, Flag.ACK, RCV_NXT - 5, ack=SND_NXT, data=b"12345")
        for i in range(5)
    ]
    assert [len(x) for x in answers] == [1] * 5


# ------------------------------------------------------------------------------ idle timeout


def test_idle_connection_is_reset_after_the_idle_timeout() -> None:
    net = pair(config_a=Config(idle_timeout_s=5.0))
    a, b = net.a.conn, net.b.conn
    assert a is not None and b is not None
    net.run(until=lambda: a.state is S.ESTABLISHED and b.state is S.ESTABLISHED)
    start = net.now
    net.run_for(3.0)
    a.send(b"activity")  # the server's ACK is traffic: the 5 s start again
    net.run(until=lambda: a.state is S.CLOSED)
    assert a.close_reason is CloseReason.IDLE
    assert net.now == pytest.approx(start + 3.0 + 0.02 + 5.0, abs=0.05)
    net.run(until=lambda: b.state is S.CLOSED)
    assert b.close_reason is CloseReason.RESET  # the peer is told


def test_no_idle_timeout_by_default() -> None:
    net, a = _established()
    net.run_for(3600.0)
    assert a.state is S.ESTABLISHED


# ------------------------------------------------------------------------------ reassembly bound


def test_scattered_tiny_pieces_cannot_grow_reassembly_beyond_a_multiple_of_the_window() -> None:
    window = 16 << 10
    net, a = _established(Config(recv_buffer_bytes=window))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for offset in range(1, window, 2):  # every other byte: the most pieces possible
            a.receive_datagram(
                encode(Packet(Flag.ACK, CID_B, CID_A, RCV_NXT + offset, SND_NXT, 1024, b"x")),
                now=net.now,
            )
        a.datagrams_to_send(now=net.now)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = a.stats
    assert stats.reassembly_bytes <= 2 * window
    assert held <= 4 * window, f"{held} bytes held for a {window}-byte window"
    assert stats.drops.get("over buffer", 0) > 0
    assert stats.bytes_received == 0
    assert a.state is S.ESTABLISHED
