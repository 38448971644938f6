"""``utcp plot`` and ``utcp ladder``: draw a connection trace (docs/TRACE.md) as a
time-sequence graph PNG, or as the packet ladder in text or SVG.

Every failure (unreadable or invalid trace, unwritable output, matplotlib missing) is one line
on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from ..tools.traceview import (
    Trace,
    image_formats,
    ladder_lines,
    ladder_svg,
    load_trace,
    plot_time_sequence,
)
from .helpers import Subcommands, positive_int
from .output import OutputClosed

INSTALL_HINT = "matplotlib is not installed: pip install 'utcp-transport[plot]'"


def register(sub: Subcommands) -> None:
    """Add the ``plot`` and ``ladder`` subcommands."""
    p = sub.add_parser(
        "plot",
        help="draw a trace as a time-sequence graph (PNG)",
        description=(
            "Draw a connection trace as a tcptrace-style time-sequence graph: data sent, "
            "retransmissions, the ACK and window received, cwnd and srtt. Needs matplotlib."
        ),
    )
    p.add_argument("trace", metavar="TRACE.jsonl", help="a trace file (docs/TRACE.md)")
    p.add_argument(
        "-o", "--output", metavar="OUT.png", help="where to write (default: TRACE with .png)"
    )
    p.set_defaults(func=plot_main)

    p = sub.add_parser(
        "ladder",
        help="print a trace as a packet ladder (text or SVG)",
        description=(
            "Print a connection trace as a packet ladder: this end on the left, the peer on the "
            "right, every datagram with its wire numbers, state changes, losses and timers."
        ),
    )
    p.add_argument("trace", metavar="TRACE.jsonl", help="a trace file (docs/TRACE.md)")
    p.add_argument("--svg", metavar="OUT.svg", help="write the ladder as SVG instead of text")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show only the first N rows")
    p.add_argument("--times", action="store_true", help="prefix each row with its time (s)")
    p.set_defaults(func=ladder_main)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported, checked without importing it."""
    return importlib.util.find_spec("matplotlib") is not None


def _fail(command: str, message: str) -> int:
    print(f"utcp {command}: error: {message}", file=sys.stderr)
    return 2


def _load(path: str) -> Trace | str:
    """The trace, or the one-line reason it could not be loaded."""
    try:
        return load_trace(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except ValueError as exc:  # also a file that is not UTF-8
        return str(exc)


def plot_main(args: argparse.Namespace) -> int:
    """Run ``utcp plot``."""
    if not matplotlib_available():
        return _fail("plot", INSTALL_HINT)
    trace = _load(args.trace)
    if isinstance(trace, str):
        return _fail("plot", trace)
    output = args.output or str(Path(args.trace).with_suffix(".png"))
    if output == args.trace:  # never draw over the trace itself
        output += ".png"
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return _fail("plot", f"{output} is a directory: name the image file to write")
    kind = Path(output).suffix.removeprefix(".").lower()
    if not kind:
        output += ".png"  # what matplotlib would add: say the name written
    elif kind not in image_formats():
        formats = ", ".join(image_formats())
        return _fail("plot", f"cannot write .{kind} images (formats: {formats})")
    try:
        plot_time_sequence(trace, output)
    except BrokenPipeError:  # the path is a pipe whose reader has gone (/dev/stdout | head)
        raise OutputClosed from None
    except OSError as exc:
        return _fail("plot", f"cannot write {output}: {exc.strerror or exc}")
    print(f"wrote {output}")
    return 0


def ladder_main(args: argparse.Namespace) -> int:
    """Run ``utcp ladder``."""
    trace = _load(args.trace)
    if isinstance(trace, str):
        return _fail("ladder", trace)
    if args.svg:
        try:
            ladder_svg(trace, args.svg, limit=args.limit)
        except BrokenPipeError:  # the path is a pipe whose reader has gone (/dev/stdout | head)
            raise OutputClosed from None
        except OSError as exc:
            return _fail("ladder", f"cannot write {args.svg}: {exc.strerror or exc}")
        print(f"wrote {args.svg}")
        return 0
    for line in ladder_lines(trace, limit=args.limit, times=args.times):
        print(line)
    return 0
