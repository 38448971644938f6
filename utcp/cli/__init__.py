"""The ``utcp`` command line: echo-server, cat, perf, netem, plot, ladder and tunnel subcommands.

Argument errors exit with status 2 and one line saying what is wrong; ``-v`` reports each
connection (established or accepted, closed with a summary) and utcp's notable events on standard
error, ``-vv`` adds the debug stream.  When standard output or error turns out to be a pipe whose
reader has gone (``| head``), the command stops at once and exits 1 without a message, as nc does.

This module is the parser and ``main``; each subcommand is a module of its own, and what they
share is in ``helpers``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import NoReturn, TextIO, cast

import structlog

from . import cat, echo, netem_cmd, perf, trace_cmd, tunnel
from .output import OutputClosed, guarded_output, log_sink, output_is_broken

__all__ = ["build_parser", "main"]


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _configure_logging(verbose: int, stderr: TextIO) -> None:
    """-v: utcp's structlog events at info and up (the connection reports among them) to
    stderr; -vv: debug too.  Fields print in the order the event gives them."""
    level = logging.DEBUG if verbose > 1 else logging.INFO
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=False, sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(log_sink(stderr)),
    )


def build_parser() -> CliParser:
    """The whole command line, every subcommand registered."""
    parser = CliParser(
        prog="utcp",
        description="Tools for utcp, a reliable byte stream over UDP.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="report each connection (peer; close reason, bytes, duration, srtt, "
        "retransmissions) and utcp's notable events on stderr (-vv: the debug stream too)",
    )
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser),
    )
    sub.required = True
    echo.register(sub)
    cat.register(sub)
    perf.register(sub)
    netem_cmd.register(sub)
    trace_cmd.register(sub)
    tunnel.register(sub)
    return parser


def _fill_closed_standard_streams() -> None:
    """Give each standard stream the process started without (``<&-``, ``>&-``) a
    descriptor of /dev/null opened read-only, so that no socket made later is descriptor 0-2
    (uvloop aborts the process closing one), while reading a closed stdin still ends at once
    and writing a closed stdout or stderr still fails (EBADF)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``utcp`` console script and ``python -m utcp``."""
    _fill_closed_standard_streams()
    try:
        with guarded_output() as stderr:
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.verbose:
                _configure_logging(args.verbose, stderr)
            status = int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except OutputClosed:
        return 1
    return 1 if output_is_broken() else status
