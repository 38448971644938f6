"""Path MTU discovery (RFC 8899): the search on its own, driven on an explicit timeline."""

from __future__ import annotations

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from utcp.config import BASE_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES
from utcp.pmtud import (
    MAX_PROBES,
    PLATEAUS_BYTES,
    PMTU_RAISE_TIMER_S,
    Pmtud,
    PmtudState,
)

P = PmtudState
RTT_S = 0.020  # the round trip the probes below take


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
    assert not pm.probe_due
    pm.wake(now=pm.wake_at - 0.01)  # traffic too early: nothing yet
    assert not pm.probe_due
    pm.wake(now=pm.wake_at)  # traffic after the wait: the base size once more
    probe = pm.next_probe(now=10.0, timeout_s=0.5)
    assert probe is not None and probe[1] == 1200
    assert pm.on_probe_acked(probe[0], now=10.1) is False  # the base size is no news
    assert pm.state is P.SEARCHING


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
