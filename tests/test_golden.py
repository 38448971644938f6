"""The golden traces (tests/golden): every scenario must reproduce, byte for byte and event for
event, the trace recorded in tests/golden_data/traces.json, on the compiled and the pure build.

A mismatch means the core behaves differently: a datagram, a time, a timer deadline, an event,
a trace event or a counter changed.  The failure names the parts that differ; to see where:

    python -m tests.golden --dump /tmp/before      # on the commit before the change
    python -m tests.golden --dump /tmp/after       # here
    diff -r /tmp/before /tmp/after | head          # or: --diff NAME --against /tmp/before
"""

from __future__ import annotations

import pytest

from tests.golden import PARTS, SCENARIOS, load, record
from tests.golden.record import build_name

STORED = load()["scenarios"]


def test_every_scenario_is_recorded() -> None:
    assert sorted(STORED) == sorted(SCENARIOS), "re-record: python -m tests.golden --write"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_trace(name: str) -> None:
    rec = record(name)
    assert not rec.unmet, f"{name}: the script waited in vain for {rec.unmet}"
    assert not rec.wire_differs, f"{name}: with a tracer the wire bytes differ from without one"
    want = STORED.get(name)
    assert want is not None, f"{name} is not recorded: python -m tests.golden --write --only {name}"
    if rec.sha256 == want["sha256"]:
        return
    parts = rec.parts()
    differ = [k for k in PARTS if want["parts"].get(k) != parts[k]]
    now = {k: rec.summary[k] for k in rec.summary}
    then = {k: want.get(k) for k in rec.summary}
    pytest.fail(
        f"golden trace of {name!r} changed ({build_name()} build); differing parts: {differ}\n"
        f"  recorded: {then}\n"
        f"  now:      {now}\n"
        "To see the first difference, dump the traces on the commit before the change and here:\n"
        "  python -m tests.golden --dump /tmp/before   (in a `git worktree` of the old commit)\n"
        "  python -m tests.golden --dump /tmp/after\n"
        f"  diff /tmp/before/{name}.txt /tmp/after/{name}.txt | head\n"
        f"  (or: python -m tests.golden --diff {name} --against /tmp/before)\n"
        "Re-record with `python -m tests.golden --write` only if the change is meant.",
        pytrace=False,
    )
