"""Send and reassembly buffers, the interval set, the RTT estimator and the SACK scoreboard,
each checked against a plain model (a bytes object, a set of integers, a list of flags)."""

from __future__ import annotations

import itertools
import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from utcp.buffers import (
    CHUNK_OVERHEAD_BYTES,
    HeldBuffer,
    RangeSet,
    ReassemblyBuffer,
    SendBuffer,
)
from utcp.recovery import RttEstimator, Scoreboard, SentSegment

SEED = 1982


def intervals(positions: set[int]) -> list[tuple[int, int]]:
    """The maximal half-open runs of consecutive integers in ``positions``, ascending."""
    out: list[tuple[int, int]] = []
    for p in sorted(positions):
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


# ================================================================ SendBuffer


def test_send_buffer_starts_empty_at_base() -> None:
    buf = SendBuffer(1)
    assert len(buf) == 0
    assert buf.start == buf.end == 1


def test_send_buffer_write_and_get_by_position() -> None:
    buf = SendBuffer(101)
    buf.write(b"hello ")
    buf.write(bytearray(b"wor"))
    buf.write(memoryview(b"ld!"))
    assert len(buf) == 12
    assert (buf.start, buf.end) == (101, 113)
    assert buf.get(101, 113) == b"hello world!"
    assert buf.get(107, 110) == b"wor"
    assert buf.get(105, 105) == b""
    assert isinstance(buf.get(101, 102), bytes)


def test_send_buffer_get_is_a_copy() -> None:
    buf = SendBuffer(0)
    source = bytearray(b"abc")
    buf.write(source)
    source[0] = ord("X")  # changing the caller's buffer afterwards changes nothing held
    got = buf.get(0, 3)
    buf.write(b"def")
    assert got == b"abc"
    assert buf.get(0, 6) == b"abcdef"


def test_send_buffer_release_to() -> None:
    buf = SendBuffer(1)
    buf.write(b"0123456789")
    buf.release_to(4)  # positions 1, 2, 3 acknowledged
    assert (buf.start, buf.end, len(buf)) == (4, 11, 7)
    assert buf.get(4, 11) == b"3456789"
    buf.release_to(2)  # an older acknowledgement: nothing changes
    assert (buf.start, buf.end) == (4, 11)
    buf.release_to(4)
    assert (buf.start, len(buf)) == (4, 7)
    buf.write(b"ab")
    assert buf.get(9, 13) == b"89ab"
    buf.release_to(13)
    assert len(buf) == 0 and buf.start == buf.end == 13
    buf.write(b"z")
    assert buf.get(13, 14) == b"z"


@pytest.mark.parametrize("largest", [50, 20_000])
def test_send_buffer_random_against_model(largest: int) -> None:
    """Small writes (merged into shared chunks) and large ones (a chunk each, reads across
    several), against a bytearray."""
    rng = random.Random(SEED + largest)
    base = rng.randrange(1, 1 << 40)
    buf = SendBuffer(base)
    model = bytearray()
    start = base
    for step in range(2000):
        op = rng.random()
        if op < 0.4:
            data = rng.randbytes(rng.randrange(largest))
            buf.write(data)
            model += data
        elif op < 0.7 and model:
            n = rng.randint(0, len(model))
            buf.release_to(start + n)
            del model[:n]
            start += n
        else:
            a = rng.randint(start, start + len(model))
            b = rng.randint(a, start + len(model))
            assert buf.get(a, b) == bytes(model[a - start : b - start]), (SEED, step)
        assert (buf.start, buf.end, len(buf)) == (start, start + len(model), len(model)), (
            SEED,
            step,
        )


# ================================================================ RangeSet


def test_range_set_add_returns_new_parts() -> None:
    rs = RangeSet()
    assert len(rs) == 0 and rs.highest is None
    assert rs.add(10, 20) == [(10, 20)]
    assert rs.add(10, 20) == []
    assert rs.add(12, 15) == []
    assert rs.add(30, 40) == [(30, 40)]
    assert rs.ranges() == [(10, 20), (30, 40)]
    assert rs.add(5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert rs.ranges() == [(5, 45)]
    assert rs.highest == 45


def test_range_set_merges_touching_intervals() -> None:
    rs = RangeSet()
    rs.add(0, 5)
    rs.add(10, 15)
    assert rs.add(5, 10) == [(5, 10)]
    assert rs.ranges() == [(0, 15)]
    assert len(rs) == 1
    assert rs.add(15, 16) == [(15, 16)]
    assert rs.add(-3, 0) == [(-3, 0)]
    assert rs.ranges() == [(-3, 16)]


def test_range_set_empty_and_inverted_adds() -> None:
    rs = RangeSet()
    assert rs.add(5, 5) == []
    assert rs.add(6, 2) == []
    assert rs.ranges() == [] and len(rs) == 0


def test_range_set_containing() -> None:
    rs = RangeSet()
    rs.add(10, 20)
    rs.add(30, 40)
    assert rs.containing(10) == (10, 20) and rs.containing(19) == (10, 20)
    assert rs.containing(35) == (30, 40)
    assert rs.containing(9) is None and rs.containing(20) is None and rs.containing(40) is None


def test_range_set_remove_below() -> None:
    rs = RangeSet()
    for a, b in [(0, 5), (10, 15), (20, 25)]:
        rs.add(a, b)
    rs.remove_below(12)
    assert rs.ranges() == [(12, 15), (20, 25)]
    rs.remove_below(15)
    assert rs.ranges() == [(20, 25)]
    rs.remove_below(0)
    assert rs.ranges() == [(20, 25)]
    rs.remove_below(100)
    assert rs.ranges() == [] and rs.highest is None
    assert rs.add(0, 1) == [(0, 1)]  # below the old cut: remove_below is not a floor


range_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 80), st.integers(0, 80)),
        st.tuples(st.just("remove_below"), st.integers(0, 80), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, derandomize=True)
@given(ops=range_ops)
def test_prop_range_set_matches_integer_set(ops: list[tuple[str, int, int]]) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for op, a, b in ops:
        if op == "add":
            new = rs.add(a, b)
            added = set(range(a, b)) - model
            model |= added
            assert new == intervals(added)  # exactly the new parts, ascending, merged
        else:
            rs.remove_below(a)
            model = {p for p in model if p >= a}
        ranges = rs.ranges()
        assert ranges == intervals(model)
        # Disjoint, sorted, non-empty and never touching (touching ones are merged).
        assert all(s < e for s, e in ranges)
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(ranges))
        assert len(rs) == len(ranges)
        assert rs.highest == (max(model) + 1 if model else None)


# ================================================================ ReassemblyBuffer


def test_reassembly_in_order_pop() -> None:
    rb = ReassemblyBuffer()
    assert rb.insert(10, b"klm", lo=1, hi=100) == 3
    assert rb.insert(1, b"abc", lo=1, hi=100) == 3
    assert rb.pop_ready(1) == [b"abc"]  # a gap at 4..9: the second chunk waits
    assert rb.nbytes == 3 and len(rb) == 1
    assert rb.insert(4, b"defghi", lo=4, hi=100) == 6
    assert b"".join(rb.pop_ready(4)) == b"defghiklm"
    assert rb.nbytes == 0 and len(rb) == 0 and rb.ranges() == []


def test_reassembly_pop_ready_needs_exact_start() -> None:
    rb = ReassemblyBuffer()
    rb.insert(5, b"xyz", lo=0, hi=100)
    assert rb.pop_ready(4) == []
    assert rb.pop_ready(0) == []
    assert rb.nbytes == 3


def test_reassembly_duplicates_and_overlaps_stored_once() -> None:
    rb = ReassemblyBuffer()
    assert rb.insert(10, b"AAAA", lo=0, hi=100) == 4  # 10..13
    assert rb.insert(10, b"BBBB", lo=0, hi=100) == 0  # duplicate: the first copy stays
    assert rb.insert(20, b"CCCC", lo=0, hi=100) == 4  # 20..23
    # 8..25 overlaps both and fills the gap: only 8..9, 14..19, 24..25 are new.
    assert rb.insert(8, b"dddddddddddddddddd", lo=0, hi=100) == 2 + 6 + 2
    assert rb.nbytes == 18
    assert rb.ranges() == [(8, 26)]
    assert b"".join(rb.pop_ready(8)) == b"ddAAAAddddddCCCCdd"
    assert rb.nbytes == 0


def test_reassembly_clipped_to_limits() -> None:
    rb = ReassemblyBuffer()
    assert rb.insert(0, b"0123456789", lo=3, hi=7) == 4
    assert rb.ranges() == [(3, 7)]
    assert rb.pop_ready(3) == [b"3456"]
    assert rb.insert(0, b"012", lo=3, hi=10) == 0  # wholly below lo
    assert rb.insert(10, b"abc", lo=3, hi=10) == 0  # wholly at or above hi
    assert rb.insert(5, b"", lo=0, hi=10) == 0
    assert rb.insert(8, b"abc", lo=0, hi=10) == 2
    assert rb.insert(5, b"xyz", lo=6, hi=6) == 0  # empty window
    assert rb.ranges() == [(8, 10)] and rb.nbytes == 2


def test_reassembly_accepts_memoryview_and_copies() -> None:
    source = bytearray(b"hello")
    rb = ReassemblyBuffer()
    rb.insert(1, memoryview(source), lo=1, hi=10)
    source[:] = b"XXXXX"  # the datagram buffer is reused: the stored bytes must not change
    chunks = rb.pop_ready(1)
    assert chunks == [b"hello"] and all(isinstance(c, bytes) for c in chunks)


def test_reassembly_discard_below() -> None:
    rb = ReassemblyBuffer()
    rb.insert(10, b"abcde", lo=0, hi=100)  # 10..14
    rb.insert(20, b"fghij", lo=0, hi=100)  # 20..24
    rb.discard_below(12)
    assert rb.ranges() == [(12, 15), (20, 25)] and rb.nbytes == 8
    assert rb.pop_ready(12) == [b"cde"]
    rb.discard_below(22)
    assert rb.ranges() == [(22, 25)] and rb.nbytes == 3
    rb.discard_below(22)
    assert rb.nbytes == 3
    rb.discard_below(1000)
    assert rb.ranges() == [] and rb.nbytes == 0 and len(rb) == 0


def test_reassembly_ranges_merge_adjacent_chunks() -> None:
    rb = ReassemblyBuffer()
    rb.insert(5, b"bb", lo=0, hi=100)
    rb.insert(3, b"aa", lo=0, hi=100)
    rb.insert(9, b"c", lo=0, hi=100)
    assert len(rb) == 3
    assert rb.ranges() == [(3, 7), (9, 10)]


def test_reassembly_ranges_hold_only_what_the_limit_let_in() -> None:
    """An insert cut short by the memory limit stores its first pieces only; the ranges (the
    SACK blocks' source) show those and nothing of the rest."""
    rb = ReassemblyBuffer()
    rb.insert(0, b"a" * 10, lo=0, hi=1000)
    rb.insert(20, b"b" * 10, lo=0, hi=1000)
    # Room for one more piece: [10, 20) fits, [30, 40) does not.
    limit = rb.truesize + 10 + CHUNK_OVERHEAD_BYTES
    assert rb.insert(5, b"c" * 35, lo=0, hi=1000, limit=limit) == 10
    assert rb.ranges() == [(0, 30)]
    assert b"".join(rb.pop_ready(0)) == b"a" * 10 + b"c" * 10 + b"b" * 10
    assert rb.ranges() == []


reasm_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.integers(0, 60),  # start
            st.integers(0, 20),  # length
            st.integers(0, 60),  # lo
            st.integers(0, 40),  # hi - lo
        ),
        st.tuples(st.just("pop"), st.integers(0, 60), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("discard"), st.integers(0, 60), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, derandomize=True)
@given(ops=reasm_ops)
def test_prop_reassembly_matches_model(ops: list[tuple[str, int, int, int, int]]) -> None:
    """Each position is stored once (first copy wins), only inside [lo, hi), and handed out
    exactly once in order.  Every insert carries its own byte value so a second copy shows."""
    rb = ReassemblyBuffer()
    model: dict[int, int] = {}
    for tag, (op, a, n, lo, span) in enumerate(ops):
        if op == "insert":
            value = tag % 256
            added = rb.insert(a, bytes([value]) * n, lo=lo, hi=lo + span)
            new = {p for p in range(max(a, lo), min(a + n, lo + span)) if p not in model}
            assert added == len(new)
            model.update(dict.fromkeys(new, value))
        elif op == "discard":
            rb.discard_below(a)
            model = {p: v for p, v in model.items() if p >= a}
        else:
            # The connection pops at its delivery point, below which nothing is held.
            rb.discard_below(a)
            model = {p: v for p, v in model.items() if p >= a}
            got = b"".join(rb.pop_ready(a))
            expect = bytearray()
            while a + len(expect) in model:
                expect.append(model.pop(a + len(expect)))
            assert got == bytes(expect)
        assert rb.nbytes == len(model)
        assert rb.ranges() == intervals(set(model))
        for start, end in rb.ranges():
            assert rb.range_at(start) == rb.range_at(end - 1) == (start, end)
        assert len(rb) >= len(rb.ranges())
    # Drain everything: the held bytes are exactly the model's values.
    for start, end in rb.ranges():
        assert b"".join(rb.pop_ready(start)) == bytes(model[p] for p in range(start, end))
    assert rb.nbytes == 0 and len(rb) == 0


# ================================================================ RttEstimator


def make_rtt(initial: float = 1.0, lo: float = 0.2, hi: float = 60.0) -> RttEstimator:
    return RttEstimator(initial_rto_s=initial, rto_min_s=lo, rto_max_s=hi)


def test_rtt_initial_state() -> None:
    est = make_rtt()
    assert est.srtt is None and est.latest_rtt is None and est.min_rtt is None
    assert est.rttvar == 0.0
    assert est.rto == 1.0 and est.backoff == 0
    assert (est.rto_min, est.rto_max) == (0.2, 60.0)


@pytest.mark.parametrize(("initial", "expected"), [(0.05, 0.2), (3.0, 3.0), (100.0, 60.0)])
def test_rtt_initial_rto_clamped(initial: float, expected: float) -> None:
    assert make_rtt(initial=initial).rto == expected


def test_rtt_first_sample() -> None:
    est = make_rtt()
    est.on_sample(0.3)
    assert est.srtt == pytest.approx(0.3)
    assert est.rttvar == pytest.approx(0.15)
    assert est.rto == pytest.approx(0.3 + 4 * 0.15)
    assert est.latest_rtt == est.min_rtt == 0.3


def test_rtt_later_samples_alpha_beta() -> None:
    est = make_rtt()
    est.on_sample(0.3)
    est.on_sample(0.5)
    # RTTVAR uses the old SRTT: 3/4 * 0.15 + 1/4 * |0.3 - 0.5|; then SRTT = 7/8 0.3 + 1/8 0.5.
    assert est.rttvar == pytest.approx(0.1625)
    assert est.srtt == pytest.approx(0.325)
    assert est.rto == pytest.approx(0.325 + 4 * 0.1625)
    est.on_sample(0.1)
    assert est.rttvar == pytest.approx(0.75 * 0.1625 + 0.25 * 0.225)
    assert est.srtt == pytest.approx(0.875 * 0.325 + 0.125 * 0.1)
    assert est.latest_rtt == 0.1 and est.min_rtt == 0.1


def test_rtt_granularity_floor() -> None:
    est = make_rtt(lo=1e-9)
    for _ in range(300):
        est.on_sample(0.05)
    assert est.rttvar < 1e-6
    assert est.rto == pytest.approx(0.05 + 0.001)  # SRTT + max(G, 4 * RTTVAR), G = 1 ms


def test_rtt_rto_clamped_to_bounds() -> None:
    """The variation term is at least ``rto_min``: RTO = SRTT + max(4 RTTVAR, G, rto_min),
    at most ``rto_max``."""
    est = make_rtt(lo=0.2, hi=5.0)
    est.on_sample(0.001)
    assert est.rto == pytest.approx(0.201)
    est.on_sample(30.0)
    assert est.rto == 5.0


def test_rtt_steady_samples_keep_rto_min_above_srtt() -> None:
    """A sample from every ACK shrinks RTTVAR to nothing; the timeout still allows ``rto_min``
    beyond SRTT (as Linux's rttvar_us never drops below tcp_rto_min), so a retransmission
    that waits behind a full queue for one more round trip is not timed out.  Before,
    RTO was SRTT + 4 RTTVAR clamped to ``rto_min``: 0.201 s on a 0.2 s path."""
    est = make_rtt(lo=0.2, hi=60.0)
    for _ in range(300):
        est.on_sample(0.2)
    assert est.rttvar < 1e-6
    assert est.rto == pytest.approx(0.4)


def test_rtt_negative_sample_counts_as_zero() -> None:
    est = make_rtt()
    est.on_sample(-1.0)
    assert est.srtt == 0.0 and est.latest_rtt == 0.0 and est.min_rtt == 0.0
    assert est.rto == 0.2


def test_rtt_back_off_doubles_up_to_max() -> None:
    est = make_rtt(initial=1.0, hi=60.0)
    seen = []
    for _ in range(8):
        est.back_off()
        seen.append(est.rto)
    assert seen == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert est.backoff == 6  # stops counting once the cap is reached
    est.reset_backoff()
    assert est.backoff == 0 and est.rto == 1.0


def test_rtt_sample_resets_backoff() -> None:
    est = make_rtt()
    est.back_off()
    est.back_off()
    assert est.rto == 4.0
    est.on_sample(0.5)
    assert est.backoff == 0
    assert est.rto == pytest.approx(0.5 + 4 * 0.25)


rtt_ops = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
        st.just("back_off"),
        st.just("reset"),
    ),
    max_size=50,
)


@settings(max_examples=200, derandomize=True)
@given(
    ops=rtt_ops,
    bounds=st.tuples(st.floats(0.001, 2.0), st.floats(0.0, 100.0)),
    initial=st.floats(0.001, 200.0),
)
def test_prop_rtt_matches_the_rto_model(
    ops: list[float | str], bounds: tuple[float, float], initial: float
) -> None:
    lo, extra = bounds
    hi = lo + extra
    est = make_rtt(initial=initial, lo=lo, hi=hi)
    srtt: float | None = None
    rttvar = 0.0
    base = min(max(initial, lo), hi)
    shifts = 0
    for op in ops:
        if op == "back_off":
            est.back_off()
            if base * 2**shifts < hi:
                shifts += 1
        elif op == "reset":
            est.reset_backoff()
            shifts = 0
        else:
            assert isinstance(op, float)
            est.on_sample(op)
            if srtt is None:
                srtt, rttvar = op, op / 2
            else:
                rttvar = 0.75 * rttvar + 0.25 * abs(srtt - op)
                srtt = 0.875 * srtt + 0.125 * op
            base = min(srtt + max(0.001, 4 * rttvar, lo), hi)
            shifts = 0
        assert est.srtt == (None if srtt is None else pytest.approx(srtt))
        assert est.rttvar == pytest.approx(rttvar)
        assert est.backoff == shifts
        assert est.rto == pytest.approx(min(base * 2**shifts, hi))
        assert lo <= est.rto * (1 + 1e-12) and est.rto <= hi


# ================================================================ Scoreboard


def board(*lengths: int, start: int = 1) -> tuple[Scoreboard, list[SentSegment]]:
    """A scoreboard holding back-to-back segments of the given lengths from ``start``."""
    sb = Scoreboard()
    segs = []
    for n in lengths:
        seg = SentSegment(start, start + n, 0.0)
        sb.add(seg)
        segs.append(seg)
        start += n
    return sb, segs


def test_scoreboard_add_first_last() -> None:
    sb = Scoreboard()
    assert len(sb) == 0 and sb.first() is None and sb.last() is None and sb.pipe == 0
    sb, segs = board(100, 100, 50)
    assert len(sb) == 3 and sb.pipe == 250
    assert sb.first() is segs[0] and sb.last() is segs[2]
    assert all(s.in_pipe and not s.sacked and not s.lost and s.retx == 0 for s in segs)


def test_scoreboard_ack_to() -> None:
    sb, segs = board(100, 100, 100)  # [1,101) [101,201) [201,301)
    assert sb.ack_to(1) == []
    assert sb.ack_to(150) == [segs[0]]  # only whole segments leave
    assert sb.pipe == 200 and len(sb) == 2 and sb.first() is segs[1]
    assert sb.ack_to(150) == []
    assert sb.ack_to(301) == [segs[1], segs[2]]
    assert sb.pipe == 0 and len(sb) == 0
    assert sb.first() is None and sb.last() is None


def test_scoreboard_on_sack_whole_segments_only() -> None:
    sb, segs = board(100, 100, 100, 100)
    assert sb.on_sack(150, 301) == 100  # [101,201) is only partly covered
    assert [s.sacked for s in segs] == [False, False, True, False]
    assert sb.highest_sacked == 301
    assert sb.pipe == 300
    assert sb.on_sack(201, 301) == 0  # already SACKed
    assert sb.on_sack(101, 401) == 200
    assert sb.highest_sacked == 401 and sb.pipe == 100
    assert sb.on_sack(1, 101) == 100
    assert sb.highest_sacked == 401  # never moves back
    assert sb.pipe == 0


def test_scoreboard_detect_losses_threshold() -> None:
    sb, segs = board(*[100] * 6)  # ends 101, 201, ..., 601
    sb.on_sack(401, 601)  # highest SACKed position 601
    # A segment is lost when it ends at least threshold bytes below the highest SACK.
    assert sb.detect_losses(401) == 100  # only [1, 101): 601 - 401 = 200 >= 101
    assert [s.lost for s in segs] == [True, False, False, False, False, False]
    assert sb.detect_losses(401) == 0
    assert sb.detect_losses(300) == 200  # 201 and 301 end at or below 301
    assert [s.lost for s in segs] == [True, True, True, False, False, False]
    assert sb.pipe == 100  # [301, 401) is the only one still in flight
    assert sb.detect_losses(0) == 100
    assert sb.pipe == 0


def test_scoreboard_detect_losses_skips_retransmitted() -> None:
    sb, segs = board(100, 100, 100, 100)
    assert sb.mark_lost(segs[0]) == 100
    assert sb.next_lost(1) is segs[0]
    sb.retransmitted(segs[0], 1.0)
    assert segs[0].retx == 1 and not segs[0].lost and segs[0].sent_at == 1.0
    assert sb.pipe == 400
    sb.on_sack(301, 401)
    assert sb.detect_losses(1) == 200  # segments 1 and 2; the retransmitted one is spared
    assert not segs[0].lost and segs[1].lost and segs[2].lost


def test_scoreboard_mark_lost_and_next_lost() -> None:
    sb, segs = board(100, 100, 100)
    assert sb.next_lost(1) is None
    assert sb.mark_lost(segs[1]) == 100
    assert sb.mark_lost(segs[1]) == 0
    assert sb.pipe == 200
    assert sb.mark_lost(segs[0]) == 100
    assert sb.pipe == 100
    sb.on_sack(201, 301)
    assert sb.mark_lost(segs[2]) == 0  # SACKed segments are never lost
    first = sb.next_lost(1)
    assert first is not None and first.lost
    assert sb.next_lost(201) is None  # both end at or below the cumulative ACK
    sb.ack_to(201)
    assert sb.next_lost(201) is None


def test_scoreboard_next_lost_in_order_and_retransmit() -> None:
    sb, segs = board(10, 10, 10, 10)
    sb.on_sack(31, 41)
    sb.detect_losses(1)
    assert [s.lost for s in segs] == [True, True, True, False]
    order = []
    while (seg := sb.next_lost(1)) is not None:
        order.append(seg)
        sb.retransmitted(seg, 2.0)
    assert order == segs[:3]
    assert sb.pipe == 30 and all(s.retx == 1 for s in segs[:3])


def test_a_view_of_wider_items_is_written_whole() -> None:
    """A memoryview of 4-byte ints (or of two dimensions) is written as all its bytes; len()
    of such a view counts items, so 3 ints took 3 positions and the next write's bytes were
    read in their place."""
    import array

    buf = SendBuffer(1)
    ints = memoryview(array.array("i", [1, 2, 3]))
    buf.write(ints)
    buf.write(b"END")
    assert buf.end == 1 + 12 + 3
    assert buf.get(1, buf.end) == ints.tobytes() + b"END"
    grid = memoryview(bytes(range(12))).cast("B", (3, 4))
    buf.write(grid)
    assert buf.get(16, buf.end) == bytes(range(12))


def test_scoreboard_sack_clears_lost() -> None:
    sb, segs = board(100, 100)
    sb.mark_lost(segs[0])
    assert sb.on_sack(1, 101) == 100
    assert segs[0].sacked and not segs[0].lost
    assert sb.next_lost(1) is None
    assert sb.pipe == 100


def test_scoreboard_mark_all_lost() -> None:
    sb, segs = board(100, 100, 100, 100)
    sb.on_sack(201, 301)
    sb.mark_lost(segs[1])
    sb.retransmitted(segs[1], 1.0)
    sb.mark_all_lost()
    assert [s.lost for s in segs] == [True, True, False, True]
    assert sb.pipe == 0
    order = []
    while (seg := sb.next_lost(1)) is not None:
        order.append(seg)
        sb.retransmitted(seg, 3.0)
    assert order == [segs[0], segs[1], segs[3]]  # position order, each once
    assert sb.pipe == 300
    # New data after the timeout is judged afresh by later SACKs.
    extra = SentSegment(401, 501, 4.0)
    sb.add(extra)
    sb.on_sack(501 - 100, 501)
    assert extra.sacked and sb.pipe == 300


def test_scoreboard_many_segments_stay_consistent() -> None:
    """Thousands of acknowledged segments are compacted away without losing track."""
    sb, segs = board(*[10] * 3000)
    assert sb.ack_to(1 + 10 * 2000) == segs[:2000]
    assert len(sb) == 1000 and sb.first() is segs[2000] and sb.last() is segs[-1]
    assert sb.pipe == 10_000
    assert sb.on_sack(1 + 10 * 2500, 1 + 10 * 2600) == 1000
    assert sb.detect_losses(1) == 10 * 500  # segments 2000..2499 lie below the SACK
    assert segs[2000].lost and segs[2499].lost and not segs[2500].lost
    assert sb.next_lost(1 + 10 * 2000) is segs[2000]
    assert sb.pipe == 10_000 - 1000 - 5000
    assert sb.ack_to(1 + 10 * 3000) == segs[2000:]
    assert len(sb) == 0 and sb.pipe == 0


def test_scoreboard_clear() -> None:
    sb, segs = board(100, 100)
    sb.mark_lost(segs[0])
    sb.clear()
    assert len(sb) == 0 and sb.pipe == 0 and sb.first() is None
    assert sb.next_lost(0) is None


def test_scoreboard_after_clear_behaves_like_new() -> None:
    """``clear`` says it forgets everything: an old highest SACK must not mark new data lost."""
    sb, _ = board(*[100] * 100)
    sb.on_sack(5001, 10001)
    sb.clear()
    fresh, segs = board(100, 100, start=1)
    for seg in segs:
        sb.add(SentSegment(seg.start, seg.end, 0.0))
    assert fresh.detect_losses(1) == 0
    assert sb.detect_losses(1) == 0, "data sent after clear() was declared lost"
    assert sb.pipe == fresh.pipe == 200
    assert sb.highest_sacked == fresh.highest_sacked == 0


class ScoreboardMachine(RuleBasedStateMachine):
    """Random use of the scoreboard the way the connection drives it, against a model that
    keeps its own flags for every segment and recomputes the pipe from them each step."""

    def __init__(self) -> None:
        super().__init__()
        self.sb = Scoreboard()
        self.live: list[SentSegment] = []  # not yet cumulatively acknowledged
        self.every: list[SentSegment] = []
        self.sacked: set[int] = set()  # ids of SentSegment objects
        self.lost: set[int] = set()
        self.retx: dict[int, int] = {}
        self.nxt = 1
        self.una = 1
        self.highest = 0
        self.now = 0.0
        # Transmission order (first sendings and retransmissions alike), for the rule that
        # declares a retransmission lost once three later transmissions arrived (SACKed).
        self.tx = 0
        self.seg_tx: dict[int, int] = {}
        self.highest_sacked_tx = 0
        self.retx_order: deque[tuple[int, SentSegment]] = deque()

    @rule(length=st.integers(1, 30))
    def send(self, length: int) -> None:
        seg = SentSegment(self.nxt, self.nxt + length, self.now)
        self.sb.add(seg)
        self.live.append(seg)
        self.every.append(seg)  # the model keys on id(): no segment may be freed and reused
        self.retx[id(seg)] = 0
        self.tx += 1
        self.seg_tx[id(seg)] = self.tx
        self.nxt += length

    @rule(frac=st.floats(0, 1))
    def ack(self, frac: float) -> None:
        pos = self.una + round((self.nxt - self.una) * frac)
        expected = []
        while self.live and self.live[0].end <= pos:
            expected.append(self.live.pop(0))
        assert self.sb.ack_to(pos) == expected
        self.una = pos

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 200), j=st.integers(0, 200), ragged=st.booleans())
    def sack(self, i: int, j: int, ragged: bool) -> None:
        a, b = sorted((i % len(self.live), j % len(self.live)))
        start, end = self.live[a].start, self.live[b].end
        if ragged:  # edges that cut into segments: those segments are not SACKed
            start += 1
            end -= 1
        newly = 0
        newest = 0
        for seg in self.live:
            if start <= seg.start and seg.end <= end and id(seg) not in self.sacked:
                self.sacked.add(id(seg))
                self.lost.discard(id(seg))
                newly += seg.end - seg.start
                newest = seg.end
                self.highest_sacked_tx = max(self.highest_sacked_tx, self.seg_tx[id(seg)])
        self.highest = max(self.highest, newest)
        assert self.sb.on_sack(start, end) == newly
        assert self.sb.highest_sacked == self.highest

    @rule(threshold=st.integers(1, 80))
    def detect(self, threshold: int) -> None:
        newly = 0
        for seg in self.live:
            k = id(seg)
            if seg.end > self.highest - threshold:
                break
            if k not in self.sacked and k not in self.lost and self.retx[k] == 0:
                self.lost.add(k)
                newly += seg.end - seg.start
        order = self.retx_order
        while order and order[0][0] + 3 <= self.highest_sacked_tx:
            tx, seg = order.popleft()
            k = id(seg)
            live = any(s is seg for s in self.live)
            if self.seg_tx[k] == tx and live and k not in self.sacked and k not in self.lost:
                self.lost.add(k)
                newly += seg.end - seg.start
        assert self.sb.detect_losses(threshold) == newly

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 200))
    def mark_lost(self, i: int) -> None:
        seg = self.live[i % len(self.live)]
        k = id(seg)
        expected = 0 if k in self.lost or k in self.sacked else seg.end - seg.start
        if expected:
            self.lost.add(k)
        assert self.sb.mark_lost(seg) == expected

    @rule()
    def timeout(self) -> None:
        if self.live and id(self.live[0]) in self.sacked:
            # The oldest segment SACKed yet not acknowledged: the receiver reneged, and no
            # SACK mark holds any more.
            self.sacked.clear()
            self.highest = self.highest_sacked_tx = 0
        for seg in self.live:
            if id(seg) not in self.sacked:
                self.lost.add(id(seg))
        self.sb.mark_all_lost()

    @rule(limit=st.integers(1, 5))
    def retransmit(self, limit: int) -> None:
        for _ in range(limit):
            waiting = [s for s in self.live if id(s) in self.lost and s.end > self.una]
            seg = self.sb.next_lost(self.una)
            if seg is None:
                assert not waiting
                return
            assert seg in waiting
            self.now += 1.0
            self.sb.retransmitted(seg, self.now)
            self.lost.discard(id(seg))
            self.retx[id(seg)] += 1
            self.tx += 1
            self.seg_tx[id(seg)] = self.tx
            self.retx_order.append((self.tx, seg))
            assert seg.sent_at == self.now

    @invariant()
    def pipe_is_recomputed_sum(self) -> None:
        expected = sum(
            s.end - s.start
            for s in self.live
            if id(s) not in self.sacked and id(s) not in self.lost
        )
        assert self.sb.pipe == expected
        assert len(self.sb) == len(self.live)
        assert self.sb.first() is (self.live[0] if self.live else None)
        assert self.sb.last() is (self.live[-1] if self.live else None)
        for s in self.live:
            assert s.sacked == (id(s) in self.sacked)
            assert s.lost == (id(s) in self.lost)
            assert s.in_pipe == (id(s) not in self.sacked and id(s) not in self.lost)
            assert s.retx == self.retx[id(s)]


ScoreboardMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, derandomize=True
)
TestScoreboardMachine = ScoreboardMachine.TestCase


def test_a_timeout_after_the_receiver_reneged_sends_its_sacked_data_again() -> None:
    """The oldest unacknowledged segment is SACKed (the receiver dropped data it had SACKed,
    or the SACK was forged): after the timeout every segment, SACKed or not, is resent,
    oldest first.  The SACKed ones used to be skipped for ever, and the connection stalled
    until it gave up."""
    sb, segs = board(100, 100, 100)
    sb.on_sack(1, 101)  # the oldest, never cumulatively acknowledged
    sb.on_sack(201, 301)
    assert sb.mark_all_lost() is True
    assert [s.sacked for s in segs] == [False, False, False]
    assert [s.lost for s in segs] == [True, True, True]
    assert sb.highest_sacked == 0 and sb.pipe == 0
    assert sb.next_lost(1) is segs[0]


def test_a_timeout_keeps_sack_marks_while_the_oldest_is_not_sacked() -> None:
    sb, segs = board(100, 100, 100)
    sb.on_sack(101, 201)
    assert sb.mark_all_lost() is False
    assert [s.lost for s in segs] == [True, False, True]
    assert segs[1].sacked


def test_scoreboard_declares_a_lost_retransmission_lost_again() -> None:
    # Segment 0 is lost, retransmitted, and lost again.  Three segments sent after that
    # retransmission arrive (SACKed): by transmission order the retransmission is lost too,
    # without waiting for the retransmission timer.
    sb = Scoreboard()
    segs = [SentSegment(1 + 100 * i, 101 + 100 * i, 0.0) for i in range(6)]
    for seg in segs:
        sb.add(seg)
    sb.on_sack(101, 601)  # segments 1..5 arrived
    assert sb.detect_losses(1) == 100  # segment 0 by the SACKed distance rule
    assert sb.next_lost(1) is segs[0]
    sb.retransmitted(segs[0], 1.0)
    assert sb.detect_losses(1) == 0  # nothing sent after the retransmission has arrived yet
    later = [SentSegment(601 + 100 * i, 701 + 100 * i, 1.0) for i in range(3)]
    for seg in later:
        sb.add(seg)
    sb.on_sack(601, 801)  # two later transmissions arrived: not yet enough
    assert sb.detect_losses(1, dupthresh=3) == 0
    sb.on_sack(801, 901)  # the third
    assert sb.detect_losses(1, dupthresh=3) == 100
    assert sb.next_lost(1) is segs[0]
    assert sb.pipe == 0  # every other segment is SACKed; the lost one left the pipe


def test_held_buffer_joins_small_pieces_keeps_large_ones_and_takes_back_in_order() -> None:
    k = 5000  # pieces above the merge size are held as they came
    held = HeldBuffer()
    assert not held and len(held) == 0
    held.append(b"a" * k)
    held.append(memoryview(b"b" * k))
    held.append(b"c" * 5 * k)  # larger than the limit below: handed back whole
    held.append(b"d" * k)
    held.put_back([b"x" * k, b"y" * k])  # handed out earlier, not taken: before the rest
    assert len(held) == 10 * k and held and held.pieces == 6
    want = b"x" * k + b"y" * k + b"a" * k + b"b" * k + b"c" * 5 * k + b"d" * k
    assert held.tobytes() == want
    pieces = held.take(4 * k)
    assert [len(p) for p in pieces] == [4 * k, 5 * k, k]
    assert b"".join(pieces) == want
    assert not held and held.take(100) == [] and held.tobytes() == b""


def test_held_buffer_copies_tiny_pieces_together() -> None:
    """A peer sending one-byte segments into a paused reader's window costs their bytes, not
    an object each: small pieces are copied into shared buffers of a few KiB."""
    held = HeldBuffer()
    for i in range(100_000):
        held.append(bytes([i % 256]))
    held.put_back([b"<", b"<"])
    assert len(held) == 100_002
    assert held.pieces <= 100_002 // 4096 + 3
    pieces = held.take(65536)
    assert all(type(p) is bytes for p in pieces)
    assert b"".join(pieces) == b"<<" + bytes(i % 256 for i in range(100_000))


def test_held_buffer_copies_a_view_that_would_keep_a_larger_datagram_alive() -> None:
    """The window counts the bytes held: a view of 5,000 new bytes in a 64 KiB datagram is
    copied rather than keeping the datagram alive; a view of most of its datagram is kept."""
    datagram = b"d" * 65536
    held = HeldBuffer()
    held.append(memoryview(datagram)[60536:])  # 5,000 bytes of 65,536
    whole = memoryview(b"w" * 5000)
    held.append(whole)
    first, second = held.take(5000)
    assert type(first) is bytes and first == b"d" * 5000
    assert isinstance(second, memoryview) and second.obj is whole.obj
