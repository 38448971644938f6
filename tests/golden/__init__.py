"""Golden traces of the sans-I/O core: proof that a refactor of ``Connection`` changed nothing.

Each scenario drives two connections over a frozen, seeded fake network (``sim.Sim``) and
records, in order, every datagram put on the wire (time, direction, bytes), every event
``next_event()`` gave, every change of a side's state or timer deadline, and at the end each
side's state, close reason, ``stats`` and the bytes it received.  It runs twice: untraced (the
fast paths only run without a tracer) and traced (every trace event too).  The canonical text
of both runs is hashed; ``tests/golden_data/traces.json`` keeps each scenario's SHA-256, a
short digest per kind of line and a few readable numbers, and ``tests/test_golden.py`` checks
them.  Full traces are never stored: ``--dump`` writes them for a diff.

    python -m tests.golden --check            every scenario against the file
    python -m tests.golden --dump /tmp/after  full traces; diff -r against a dump made before
    python -m tests.golden --diff NAME [--against /tmp/before]
    python -m tests.golden --write            re-record (only when behaviour is meant to change)

Scenarios live in ``transfers`` (data moving, impairments, PMTUD, options) and ``endings``
(timeouts, closes, handshakes, ICMP, forged segments); ``registry`` holds their shared
scripts.  A scenario is deterministic by construction: fixed ISNs and connection ids, seeded
link RNGs, seeded payloads, simulated time.
"""

from __future__ import annotations

from .record import DATA_FILE, PARTS, Record, first_difference, load, record
from .registry import SCENARIOS

__all__ = ["DATA_FILE", "PARTS", "SCENARIOS", "Record", "first_difference", "load", "record"]
