"""Receive coalescing (utcp/coalesce.py): which runs merge, and that a connection fed merged
segments ends exactly where one fed them one by one does."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers import establish, pair
from utcp import Config, Connection
from utcp.coalesce import MAX_RUN_BYTES, Received, coalesce
from utcp.events import DataReceived
from utcp.packet import Flag, Packet, decode

ADDR = ("127.0.0.1", 4000)
ACK = int(Flag.ACK)


def _data(seq: int, payload: bytes, **fields: object) -> Received:
    p = Packet(ACK, 1, 2, seq, 77, 1000, payload)
    for name, value in fields.items():
        setattr(p, name, value)
    return (p, ADDR, len(payload) + 24, 1)


def test_a_contiguous_run_becomes_one_segment() -> None:
    items = [_data(100 + 10 * i, bytes([i]) * 10) for i in range(5)]
    ((p, addr, size, segments),) = coalesce(items)
    assert (p.seq, p.ack, p.window, addr) == (100, 77, 1000, ADDR)
    assert p.payload == b"".join(bytes([i]) * 10 for i in range(5))
    assert (size, segments) == (5 * 34, 5)


def test_a_run_stops_at_max_run_bytes_and_a_larger_segment_stays_alone() -> None:
    """Runs are capped as GRO's are: a batch of 64 KiB datagrams is not joined into one
    allocation of megabytes (each a fresh one for the kernel to fault in)."""
    half = MAX_RUN_BYTES // 2
    items = [_data(1 + half * i, bytes([i]) * half) for i in range(5)]
    items.append(_data(1 + half * 5, b"L" * (MAX_RUN_BYTES + 1)))
    sent = b"".join(p.payload for p, *_ in items)
    out = coalesce(items)
    assert [(p.seq, len(p.payload), segs) for p, _, _, segs in out] == [
        (1, MAX_RUN_BYTES, 2),
        (1 + 2 * half, MAX_RUN_BYTES, 2),
        (1 + 4 * half, half, 1),
        (1 + 5 * half, MAX_RUN_BYTES + 1, 1),
    ]
    assert b"".join(p.payload for p, _, _, _ in out) == sent


def test_the_run_wraps_around_the_sequence_space() -> None:
    items = [_data(0xFFFFFFF6, b"a" * 10), _data(0, b"b" * 10)]
    ((p, _, _, segments),) = coalesce(items)
    assert p.payload == b"a" * 10 + b"b" * 10 and segments == 2


def test_anything_that_differs_ends_the_run() -> None:
    base = _data(100, b"x" * 10)
    breakers: list[Received] = [
        _data(111, b"y" * 10),  # a gap
        _data(110, b"y" * 10, ack=78),
        _data(110, b"y" * 10, window=999),
        _data(110, b"y" * 10, sack_blocks=((200, 300),)),
        _data(110, b"y" * 10, timestamps=(1, 2)),
        _data(110, b"y" * 10, dst_cid=3),
        _data(110, b"y" * 10, src_cid=9),
        _data(110, b"y" * 10, flags=ACK | int(Flag.FIN)),
        _data(110, b""),  # a bare ACK
    ]
    for breaker in breakers:
        out = coalesce([base, breaker])
        assert len(out) == 2, breaker[0]
        assert out[0][0].payload == b"x" * 10
    other_addr = (*_data(110, b"y" * 10)[:1], ("127.0.0.1", 4001), 34, 1)
    assert len(coalesce([base, other_addr])) == 2


def test_order_is_kept_around_unmergeable_packets() -> None:
    items = [
        _data(100, b"a" * 10),
        _data(110, b"b" * 10),
        _data(500, b"", flags=ACK | int(Flag.FIN)),
        _data(120, b"c" * 10),
        _data(130, b"d" * 10),
    ]
    out = coalesce(items)
    assert [(p.seq, bytes(p.payload), n) for p, _, _, n in out] == [
        (100, b"a" * 10 + b"b" * 10, 2),
        (500, b"", 1),
        (120, b"c" * 10 + b"d" * 10, 2),
    ]


def _established() -> tuple[Connection, Connection]:
    # An initial window of 32 segments, unpaced, lets every write of the test below leave at
    # once.
    config = Config(pmtud=False, initial_cwnd_segments=32, pacing="off")
    net = pair(config_a=config, config_b=config)
    a, b = establish(net)
    net.flush()
    return a, b


@settings(max_examples=40, deadline=None)
@example(sizes=[1428] * 11, seed=0, shuffle=False)  # more than the default initial window
@given(
    sizes=st.lists(st.integers(1, 1428), min_size=1, max_size=30),
    seed=st.integers(0, 1000),
    shuffle=st.booleans(),
)
def test_merged_delivery_equals_one_by_one(sizes: list[int], seed: int, shuffle: bool) -> None:
    """The same datagrams (in order, or with some reordered), fed one by one to one receiver
    and coalesced to a twin: the same bytes come out and the twins answer the same ACK."""
    rng = random.Random(seed)
    a, b = _established()
    a2, b2 = _established()
    payload = rng.randbytes(sum(sizes))
    datagrams: list[bytes] = []
    pos = 0
    for size in sizes:
        a.send(payload[pos : pos + size])
        datagrams += a.datagrams_to_send(now=1.0)  # one segment per write: nothing queued
        pos += size
    if shuffle and len(datagrams) > 2:
        i = rng.randrange(len(datagrams) - 1)
        datagrams[i], datagrams[i + 1] = datagrams[i + 1], datagrams[i]
    # The twin pair is built the same way (same ids and ISNs): its sender's datagrams are
    # the same bytes, fed to the twin receiver merged.
    twin: list[bytes] = []
    pos = 0
    for size in sizes:
        a2.send(payload[pos : pos + size])
        twin += a2.datagrams_to_send(now=1.0)
        pos += size
    if shuffle and len(twin) > 2:
        twin[i], twin[i + 1] = twin[i + 1], twin[i]
    assert twin == datagrams
    for data in datagrams:
        b.receive_datagram(data, now=1.0)
    items: list[Received] = [(decode(d), ADDR, len(d), 1) for d in twin]
    merged = coalesce(items)
    assert sum(n for *_, n in merged) == len(twin)
    for p, _, _, n in merged:
        b2.receive_packet(p, now=1.0, segments=n)
    one = b"".join(e.data for e in iter(b.next_event, None) if isinstance(e, DataReceived))
    two = b"".join(e.data for e in iter(b2.next_event, None) if isinstance(e, DataReceived))
    assert one == two == payload
    assert b.stats.segments_received == b2.stats.segments_received
    for conn in (b, b2):
        conn.handle_timer(now=2.0)  # past the delayed-ACK timer
    ack_one = [decode(d) for d in b.datagrams_to_send(now=2.0)]
    ack_two = [decode(d) for d in b2.datagrams_to_send(now=2.0)]
    assert ack_one and ack_two and ack_one[-1].ack == ack_two[-1].ack
    assert ack_one[-1].window == ack_two[-1].window
