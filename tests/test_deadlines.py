"""The connection's timer table (utcp/connection/deadlines.py): one place names every deadline,
finds the earliest, and stops them all."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tests.helpers import Link, conns, establish, pair
from utcp import Config
from utcp.connection.deadlines import NAMES, TIMER_COUNT, TRACE_NAMES, Deadlines


def _set(d: Deadlines, name: str, value: float | None) -> None:
    setattr(d, name, value)


def test_a_new_table_has_no_deadline() -> None:
    d = Deadlines()
    assert d.earliest() is None
    assert all(getattr(d, name) is None for name in NAMES)


def test_earliest_is_the_smallest_set_deadline_whichever_holds_it() -> None:
    for name in NAMES:
        d = Deadlines()
        for other, t in zip(NAMES, itertools.count(10.0), strict=False):
            _set(d, other, t)
        _set(d, name, 1.5)
        assert d.earliest() == 1.5, name
        _set(d, name, None)
        assert d.earliest() == (11.0 if name == NAMES[0] else 10.0), name


def test_clear_stops_every_timer_in_the_table() -> None:
    d = Deadlines()
    for i, name in enumerate(NAMES):
        _set(d, name, float(i))
    d.clear()
    assert d.earliest() is None
    assert [getattr(d, name) for name in NAMES] == [None] * len(NAMES)


def test_the_table_lists_every_deadline_field() -> None:
    """NAMES (the order handle_timer runs them in) and the fields are the same set: a timer
    added to one and not the other would be missed by earliest() or clear()."""
    path = Path(__file__).resolve().parents[1] / "utcp" / "connection" / "deadlines.py"
    source = path.read_text()
    fields = re.findall(r"self\.(\w+): float \| None = None", source)
    assert sorted(fields) == sorted(NAMES)
    assert len(set(NAMES)) == len(NAMES)


def test_a_connection_in_time_wait_keeps_only_its_own_deadline() -> None:
    """Entering TIME_WAIT stops every other timer (the idle timer once reaped TIME_WAIT and
    reported a second close), so get_timer() is exactly the end of 2 MSL."""
    cfg = Config(pmtud=False, msl_s=1.0)
    net = pair(config_a=cfg, config_b=cfg, a_to_b=Link(), b_to_a=Link())
    a, b = establish(net)
    a.send(b"x" * 5000)
    a.close()
    net.run(until=lambda: b.state.value == "CLOSE_WAIT")
    b.close()
    net.run(until=lambda: a.state.value == "TIME_WAIT")
    entered = net.now
    deadline = a.get_timer()
    assert deadline is not None
    assert abs(deadline - (entered + 2.0)) < 1e-9
    assert conns(net)[0] is a


def test_indexes_name_the_fields_in_table_order() -> None:
    """``at(i)``/``stop(i)`` reach the field NAMES[i] (handle_timer walks the table by index),
    and TRACE_NAMES gives one trace name per timer."""
    assert TIMER_COUNT == len(NAMES) == len(TRACE_NAMES)
    for i, name in enumerate(NAMES):
        d = Deadlines()
        setattr(d, name, float(i + 1))
        assert d.at(i) == float(i + 1)
        assert [d.at(j) for j in range(TIMER_COUNT) if j != i] == [None] * (TIMER_COUNT - 1)
        d.stop(i)
        assert d.earliest() is None
    with pytest.raises(ValueError):
        Deadlines().at(TIMER_COUNT)
    with pytest.raises(ValueError):
        Deadlines().stop(TIMER_COUNT)
