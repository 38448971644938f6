"""Recording a golden scenario: both runs (untraced, traced) as one canonical text, its SHA-256,
a short digest per kind of line, and a few readable numbers; the stored file and its reading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import endings, transfers  # noqa: F401  (importing them registers their scenarios)
from .registry import SCENARIOS, Scenario
from .sim import Sim, sha

DATA_FILE = Path(__file__).resolve().parent.parent / "golden_data" / "traces.json"
FORMAT_VERSION = 1
# The kinds of line in a canonical text (the second word; "final" for the closing lines).
PARTS = ("wire", "event", "timer", "trace", "note", "final")


def kind(line: str) -> str:
    """Which part of the trace a line belongs to."""
    bits = line.split(" ", 2)
    return bits[1] if len(bits) > 1 and bits[1] in PARTS else "final"


@dataclass
class Record:
    """One scenario's canonical trace (both runs), its digests and summary."""

    name: str
    text: str
    unmet: list[str]  # conditions the script waited for in vain (must be empty to record)
    summary: dict[str, Any]
    wire_differs: bool  # the traced run put other bytes on the wire than the untraced one

    @property
    def sha256(self) -> str:
        return sha(self.text.encode())

    def parts(self) -> dict[str, str]:
        """A short digest per kind of line: says which part differs when the whole does."""
        groups: dict[str, list[str]] = {k: [] for k in PARTS}
        for line in self.text.splitlines():
            if not line.startswith("#"):
                groups[kind(line)].append(line)
        return {k: sha("\n".join(v).encode())[:16] for k, v in groups.items()}


def _run(sc: Scenario, traced: bool) -> Sim:
    sim = Sim(
        traced=traced,
        cfg_a=sc.cfg_a,
        cfg_b=sc.cfg_b,
        a_to_b=sc.a_to_b(),
        b_to_a=sc.b_to_a(),
        batch=sc.batch,
        start=sc.start,
    )
    sc.script(sim)
    sim.final()
    return sim


def record(name: str) -> Record:
    """Run scenario ``name`` untraced and traced; the canonical text holds both."""
    sc = SCENARIOS[name]
    plain = _run(sc, traced=False)
    traced = _run(sc, traced=True)

    def wire(sim: Sim) -> list[str]:
        return [line for line in sim.lines if kind(line) == "wire"]

    head = [f"# {name} (format {FORMAT_VERSION})", "# untraced"]
    text = "\n".join([*head, *plain.lines, "# traced", *traced.lines]) + "\n"
    a, b = plain.a, plain.b
    summary = {
        "datagrams": len(plain.wire),
        "delivered_a_to_b": len(plain.received["b"]),
        "delivered_b_to_a": len(plain.received["a"]),
        "states": [a.state.value, b.state.value],
        "close_reasons": [None if c.close_reason is None else c.close_reason.value for c in (a, b)],
        "end_time_s": round(plain.now, 6),
    }
    return Record(
        name=name,
        text=text,
        unmet=plain.unmet + [f"traced: {u}" for u in traced.unmet],
        summary=summary,
        wire_differs=wire(plain) != wire(traced),
    )


def load() -> dict[str, Any]:
    """The stored file: ``{"format": ..., "scenarios": {name: {"sha256": ..., ...}}}``."""
    data: dict[str, Any] = json.loads(DATA_FILE.read_text())
    return data


def first_difference(mine: str, theirs: str) -> str:
    """Where two canonical traces part: the first differing line of each."""
    a, b = mine.splitlines(), theirs.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at line {i + 1}:\n  here:  {x[:400]}\n  there: {y[:400]}"
    if len(a) != len(b):
        return (
            f"identical for {min(len(a), len(b))} lines, then one has {abs(len(a) - len(b))} more"
        )
    return "identical"


def build_name() -> str:
    """Which build of the core is imported: "compiled" or "pure"."""
    import utcp._build

    return "compiled" if utcp._build.compiled() else "pure"
