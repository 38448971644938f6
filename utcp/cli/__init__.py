"""The ``utcp`` command line: echo-server, cat, perf, netem, plot, ladder and tunnel subcommands.

Argument errors exit with status 2 and one line saying what is wrong; ``-v`` reports each
connection (established or accepted, closed with a summary) and utcp's notable events on standard
error, ``-vv`` adds the debug stream.  When standard output or error turns out to be a pipe whose
reader has gone (``| head``), the command stops at once and exits 1 without a message, as nc does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO, cast

import structlog

from .. import start_server
from .output import OutputClosed, guarded_output, log_sink, output_is_broken
from .report import reported
from .units import parse_duration, parse_fraction, parse_hostport, parse_rate, parse_size

__all__ = ["arg_type", "build_parser", "main", "serve_until_signalled", "wait_for_signal"]


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a ``utcp.cli.units`` parser so argparse shows its own one-line message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def port_number(text: str) -> int:
    """A UDP port, 0..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {text!r} (0 to 65535)")
    return port


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM (handlers installed for the wait only, where the platform
    allows them)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def serve_until_signalled(
    callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    host: str,
    port: int,
    name: str,
) -> None:
    """Run a stream server, print its address, and serve until SIGINT or SIGTERM; with -v
    each connection is reported (utcp.cli.report)."""
    server = await start_server(reported(callback), host, port)
    async with server:
        try:
            addr = server.sockets[0].getsockname()
            print(f"{name} listening on utcp://{addr[0]}:{addr[1]}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:  # also when stopped because our output broke: nobody waits on a lingering peer
            server.abort_clients()


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
    from . import cat, echo, netem_cmd, perf, trace_cmd, tunnel

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``utcp`` console script and ``python -m utcp``."""
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


# Re-exported for the subcommand modules.
fraction = arg_type(parse_fraction)
size = arg_type(parse_size)
duration = arg_type(parse_duration)
rate = arg_type(parse_rate)
hostport = arg_type(parse_hostport)
