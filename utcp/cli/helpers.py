"""What the subcommands share: argparse types built on ``utcp.cli.units`` and waiting for
SIGINT/SIGTERM, alone or while serving.

Subcommands import from here, never from the package ``__init__`` (which imports them all to
build the parser), so ``utcp.cli`` has no import cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import start_server
from ..asyncio.workers import WorkerExit, serve, until_signalled
from ..config import Config
from ..congestion import available
from ..trace import address_text
from .report import reported
from .units import parse_duration, parse_size

__all__ = [
    "Subcommands",
    "add_workers_option",
    "announce_workers",
    "arg_type",
    "close_writer",
    "duration",
    "port_number",
    "positive_duration",
    "serve_in_workers",
    "serve_until_signalled",
    "cannot_listen",
    "report_worker_exit",
    "size",
    "wait_for_signal",
]

T = TypeVar("T")


class Subcommands(Protocol):
    """What a subcommand's ``register`` is given: the parser's subparsers, to add its own."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A new subcommand's parser."""
        ...


def arg_type(parse: Callable[[str], T], name: str | None = None) -> Callable[[str], T]:
    """Wrap a ``utcp.cli.units`` parser so argparse shows its own one-line message (exit
    status 2); ``name`` (default: the parser's name less ``parse_``) is the type argparse names
    in some messages."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name or parse.__name__.removeprefix("parse_")
    return convert


def positive_int(text: str) -> int:
    """A whole number from 1 up."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def port_number(text: str) -> int:
    """A UDP port, 0..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {text!r} (0 to 65535)")
    return port


duration = arg_type(parse_duration)


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if not seconds > 0:
        raise ValueError(f"must be positive: {text!r}")
    return seconds


positive_duration = arg_type(_positive_duration, "duration")
size = arg_type(parse_size)


def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream unless it is closing already: asyncio's TLS transport forgets its
    connection when closed a second time (or after the peer closed it), and every
    ``get_extra_info()`` after that fails."""
    if not writer.is_closing():
        writer.close()


wait_for_signal = until_signalled  # SIGINT or SIGTERM, where the platform allows handlers


async def serve_until_signalled(
    callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    host: str,
    port: int,
    name: str,
    config: Config | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Run a stream server (over TLS with ``tls``), print its address, and serve until SIGINT
    or SIGTERM; with -v each connection is reported (utcp.cli.report)."""
    server = await start_server(reported(callback), host, port, config=config, ssl=tls)
    async with server:
        try:
            addr = server.sockets[0].getsockname()
            print(f"{name} listening on utcp://{address_text(addr)}", flush=True)
            await until_signalled()
        finally:  # also when stopped because our output broke: nobody waits on a lingering peer
            server.abort_clients()


def cannot_listen(prog: str, host: str, port: int, exc: OSError) -> int:
    """Say in one line that a server could not start (the address is taken, not ours, or
    does not resolve); the exit status 1."""
    where = address_text((host, port))
    print(f"{prog}: error: cannot listen on utcp://{where}: {exc}", file=sys.stderr)
    return 1


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: serve in N processes sharing the port (Linux)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="serve in N processes sharing the port; more than one per core gains nothing "
        "(Linux; default 1)",
    )


def announce_workers(name: str, workers: int) -> Callable[[list[Any]], None]:
    """The ``ready`` callback of a command serving in worker processes: its address line."""

    def ready(addresses: list[Any]) -> None:
        addr = addresses[0]
        print(f"{name} ({workers} workers) listening on utcp://{address_text(addr)}", flush=True)

    return ready


def report_worker_exit(name: str) -> Callable[[WorkerExit], None]:
    """The ``on_worker_exit`` callback of a command: a line on stderr per dead worker."""

    def report(ended: WorkerExit) -> None:
        print(f"{name}: {ended.describe()}; starting it again", file=sys.stderr, flush=True)

    return report


def serve_in_workers(
    callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    host: str,
    port: int,
    name: str,
    config: Config | None,
    tls: ssl.SSLContext | None,
    workers: int,
) -> None:
    """``serve_until_signalled`` in ``workers`` processes sharing the port (blocking)."""
    serve(
        reported(callback),
        host,
        port,
        workers=workers,
        config=config,
        ssl=tls,
        ready=announce_workers(name, workers),
        on_worker_exit=report_worker_exit(name),
        grace_s=0.0,
    )


# Config fields given as text in a file, checked against the dataclass's own annotations.
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Config)}


def _check_value(name: str, value: Any) -> None:
    kinds = {part.strip() for part in _FIELD_TYPES[name].split("|")}
    ok = (
        (value is None and "None" in kinds)
        or (isinstance(value, bool) and "bool" in kinds)
        or (
            not isinstance(value, bool)
            and (
                (isinstance(value, int) and ("int" in kinds or "float" in kinds))
                or (isinstance(value, float) and "float" in kinds)
                or (isinstance(value, str) and "str" in kinds)
            )
        )
    )
    if not ok:
        raise ValueError(f"{name} must be {_FIELD_TYPES[name]}, not {value!r}")


def _load_toml(path: Path, text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not TOML: {exc}") from None
    raise ValueError(f"{path}: TOML needs Python 3.11+; write it as JSON")


def load_config_file(path: Path) -> dict[str, Any]:
    """The ``Config`` fields a JSON or TOML file sets; ``ValueError`` says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".toml":
        values: Any = _load_toml(path, text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected an object of Config fields")
    for name, value in values.items():
        if name not in _FIELD_TYPES:
            raise ValueError(f"{path}: unknown Config field {name!r}")
        _check_value(name, value)
    return values


def add_congestion_option(parser: argparse.ArgumentParser) -> None:
    """``--congestion NAME``: the congestion controller of the command's connections."""
    parser.add_argument(
        "--congestion",
        choices=sorted(available()),
        default=None,
        help=f"congestion control algorithm (default {Config().congestion_control})",
    )


def config_for(args: argparse.Namespace, **fields: Any) -> Config:
    """The ``Config`` of a command: its defaults, ``fields``, then ``--congestion``."""
    congestion = getattr(args, "congestion", None)
    if congestion is not None:
        fields["congestion_control"] = congestion
    return Config(**fields).validate()
