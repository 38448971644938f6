"""The command line of the golden traces: ``python -m tests.golden --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .record import DATA_FILE, FORMAT_VERSION, PARTS, build_name, first_difference, load, record
from .registry import SCENARIOS

USAGE = """\
  --write          record every scenario into tests/golden_data/traces.json
                   (only when behaviour is meant to change)
  --check          compare every scenario with the file, one line each
  --dump DIR       write each scenario's full canonical trace to DIR/NAME.txt; two dumps
                   (before and after a change) compare with `diff -r`
  --diff NAME      print one scenario's full trace; with --against DIR, only where it first
                   differs from DIR/NAME.txt
  --list           the scenarios and what each covers
  --only NAME...   restrict --write/--check/--dump to these scenarios
"""


def dumps(scenarios: dict[str, Any]) -> str:
    """The stored file: one line per scenario, so a re-recording diffs scenario by scenario."""
    lines = [
        "{",
        ' "about": "Golden traces of the core: tests/golden/__init__.py. Re-record with '
        '`python -m tests.golden --write` only when behaviour is meant to change.",',
        f' "format": {FORMAT_VERSION},',
        ' "scenarios": {',
    ]
    rows = [f"  {json.dumps(name)}: {json.dumps(scenarios[name])}" for name in sorted(scenarios)]
    lines.append(",\n".join(rows))
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.golden",
        description="Golden traces of the sans-I/O core (tests/golden/__init__.py).",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dump", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--diff", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--against", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", metavar="NAME", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.list:
        for name, sc in SCENARIOS.items():
            print(f"{name:40} {sc.doc}")
        return 0
    if args.diff:
        if args.diff not in SCENARIOS:
            ap.error(f"no scenario {args.diff!r} (see --list)")
        rec = record(args.diff)
        if args.against:
            theirs = (Path(args.against) / f"{args.diff}.txt").read_text()
            print(first_difference(rec.text, theirs))
        else:
            sys.stdout.write(rec.text)
        return 0
    if not (args.write or args.check or args.dump):
        ap.print_help()
        return 2
    names = args.only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"no scenario {unknown} (see --list)")
    stored = load()["scenarios"] if args.check or (args.write and args.only) else {}
    out: dict[str, Any] = {}
    bad = 0
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        rec = record(name)
        took = time.perf_counter() - t0
        if args.dump:
            d = Path(args.dump)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}.txt").write_text(rec.text)
        status = ""
        if rec.unmet:
            status += f" UNMET {rec.unmet}"
        if rec.wire_differs:
            status += " TRACED-WIRE-DIFFERS"
        if args.check:
            want = stored.get(name)
            if want is None:
                status += " NOT-RECORDED"
            elif want["sha256"] != rec.sha256:
                parts = rec.parts()
                status += f" MISMATCH in {[k for k in PARTS if want['parts'].get(k) != parts[k]]}"
        bad += bool(status)
        print(f"{name:40} {rec.sha256[:16]} {took * 1000:7.1f} ms{status}")
        out[name] = {"sha256": rec.sha256, "parts": rec.parts(), **rec.summary}
    took = time.perf_counter() - start
    print(f"{len(names)} scenarios in {took:.2f} s ({build_name()} build), {bad} flagged")
    if args.write:
        if bad:
            print("not written: the scenarios flagged above must run clean", file=sys.stderr)
            return 1
        DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
        DATA_FILE.write_text(dumps({**stored, **out}))
        print(f"wrote {DATA_FILE}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
