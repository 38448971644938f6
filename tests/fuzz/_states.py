"""Connections in every state, built by driving a real client/server pair over the fake network.

Everything is deterministic: fixed connection ids and initial sequence numbers, no random loss,
so the same (state, variant) always yields the same connection and the same wire numbers.  The
connection handed out has sent everything it wanted to and has no undelivered events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from tests.helpers import Network, pair
from utcp.config import Config
from utcp.connection import Connection
from utcp.packet import Flag, Packet, encode
from utcp.seqnum import SEQ_MASK, seq_diff
from utcp.state import ConnectionState

S = ConnectionState

# Every state a connection can be in; CLOSED is a connection that was never used.
STATES: tuple[ConnectionState, ...] = (
    S.CLOSED,
    S.LISTEN,
    S.SYN_SENT,
    S.SYN_RECEIVED,
    S.ESTABLISHED,
    S.FIN_WAIT_1,
    S.FIN_WAIT_2,
    S.CLOSE_WAIT,
    S.CLOSING,
    S.LAST_ACK,
    S.TIME_WAIT,
)

CID_A = 0x0000_000A  # the client
CID_B = 0x0000_000B  # the server

# Variant 0: default configuration, small initial sequence numbers.  Variant 1: timestamps and
# keepalive on, and initial sequence numbers just below 2**32 so the transfer wraps around.
# Both search for the path MTU only up to 1500-byte datagrams, so the peer's probes (replayed
# by the corpus) stay small.
VARIANTS: tuple[tuple[Config, int, int], ...] = (
    (Config(max_datagram_bytes=1500), 1000, 5000),
    (
        Config(timestamps=True, keepalive_idle_s=30.0, max_datagram_bytes=1500),
        0xFFFF_F000,
        0xFFFF_FF00,
    ),
)


@dataclass
class Target:
    """A connection in a known state, and what its peer knows about it."""

    conn: Connection
    now: float
    peer_cid: int
    expected_seq: int  # the wire sequence number the connection expects next from its peer
    next_ack: int  # the wire number just past everything the connection has sent
    numbers: tuple[int, ...]  # every seq, ack and seq + length seen on the wire, sorted
    from_peer: tuple[bytes, ...]  # the datagrams the peer sent to this connection, in order


def _serial_max(values: list[int], default: int) -> int:
    best = default
    for v in values:
        if seq_diff(v, best) > 0:
            best = v
    return best


def _blackhole(net: Network, src: str) -> None:
    """Lose everything ``src`` sends from now on."""
    net.links[src].drop = lambda _i, _p: True


def _until(net: Network, cond: Callable[[], bool]) -> None:
    net.run(until=cond, max_time=30.0)


def _established(net: Network, a: Connection, b: Connection) -> None:
    """Handshake, then a few segments each way with nothing lost."""
    _until(net, lambda: a.state is S.ESTABLISHED and b.state is S.ESTABLISHED)
    a.send(bytes(range(256)) * 12)
    b.send(b"b" * 2000)
    _until(net, lambda: len(net.b.received) == 3072 and len(net.a.received) == 2000)
    net.run_for(0.2)  # let the delayed ACKs go out


def _scenario(state: ConnectionState, net: Network) -> str:
    """Drive ``net`` until the named side is in ``state``; return that side's name."""
    a, b = net.a.conn, net.b.conn
    assert a is not None and b is not None
    if state in (S.LISTEN, S.SYN_SENT):
        net.flush()
        return "b" if state is S.LISTEN else "a"
    if state is S.SYN_RECEIVED:
        _until(net, lambda: b.state is S.SYN_RECEIVED)
        return "b"
    _established(net, a, b)
    if state is S.ESTABLISHED or state is S.FIN_WAIT_1:
        # The client's next flight is lost and the server's first segment too, so the client
        # has data outstanding and a hole in what it received (it SACKs the rest).
        _blackhole(net, "a")
        first = b.stats.segments_sent
        net.links["b"].drop = lambda i, p: bool(p.payload) and i == first
        a.send(b"a" * 4000)
        b.send(b"c" * 4000)
        if state is S.FIN_WAIT_1:
            a.close()
        net.run_for(0.015)
        return "a"
    if state is S.CLOSING:
        # Both close at once; the FINs cross, and the ACK of the client's FIN is lost.
        net.links["b"].drop = lambda _i, p: not p.flags & Flag.FIN
        a.close()
        b.close()
        _until(net, lambda: a.state is S.CLOSING)
        return "a"
    a.close()
    _until(net, lambda: a.state is S.FIN_WAIT_2 and b.state is S.CLOSE_WAIT)
    if state is S.FIN_WAIT_2:
        return "a"
    if state in (S.CLOSE_WAIT, S.LAST_ACK):
        # The server still has data in flight when it closes, and none of it arrives.
        _blackhole(net, "b")
        b.send(b"d" * 3000)
        if state is S.LAST_ACK:
            b.close()
        net.flush()
        return "b"
    assert state is S.TIME_WAIT
    b.close()
    _until(net, lambda: a.state is S.TIME_WAIT)
    return "a"


def build(state: ConnectionState, variant: int = 0) -> Target:
    """A connection in ``state``, reached over the fake network, with its peer's view of it."""
    config, isn_a, isn_b = VARIANTS[variant]
    net = pair(config_a=config, config_b=config, isn_a=isn_a, isn_b=isn_b, cid_a=CID_A, cid_b=CID_B)
    if state is S.CLOSED:
        net.flush()  # the client's SYN, which the never-used connection may be sent
        conn = Connection(config, local_cid=CID_B, isn=isn_b)
        name = "b"
    else:
        name = _scenario(state, net)
        side = net.sides[name].conn
        assert side is not None
        conn = side
        net.flush()
    if conn.state is not state:
        raise AssertionError(f"scenario for {state.value} ended in {conn.state.value}")
    peer = "a" if name == "b" else "b"
    mine = [s.packet for s in net.trace if s.src == name]
    theirs = [s.packet for s in net.trace if s.src == peer]
    isn_peer = isn_a if peer == "a" else isn_b
    isn_mine = isn_b if peer == "a" else isn_a
    acks = [p.ack for p in mine if p.flags & Flag.ACK]
    numbers: set[int] = set()
    for p in mine + theirs:
        numbers.update((p.seq, p.ack, (p.seq + p.seg_len) & SEQ_MASK))
    return Target(
        conn=conn,
        now=net.now,
        peer_cid=CID_A if name == "b" else CID_B,
        expected_seq=acks[-1] if acks else isn_peer,
        next_ack=_serial_max([(p.seq + p.seg_len) & SEQ_MASK for p in mine], isn_mine),
        numbers=tuple(sorted(numbers)),
        from_peer=tuple(encode(_copy(p)) for p in theirs if p.dst_cid in (0, conn.local_cid)),
    )


def _copy(p: Packet) -> Packet:
    """The packet with its payload as bytes, detached from the datagram it was decoded from."""
    return dataclasses.replace(p, payload=bytes(p.payload))
