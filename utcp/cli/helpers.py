"""What the subcommands share: argparse types built on ``utcp.cli.units`` and waiting for
SIGINT/SIGTERM, alone or while serving.

Subcommands import from here, never from the package ``__init__`` (which imports them all to
build the parser), so ``utcp.cli`` has no import cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import start_server
from ..config import Config
from ..congestion import available
from .report import reported
from .units import parse_duration, parse_size

__all__ = [
    "Subcommands",
    "arg_type",
    "close_writer",
    "duration",
    "port_number",
    "serve_until_signalled",
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
size = arg_type(parse_size)


def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream unless it is closing already: asyncio's TLS transport forgets its
    connection when closed a second time (or after the peer closed it), and every
    ``get_extra_info()`` after that fails."""
    if not writer.is_closing():
        writer.close()


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
    config: Config | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Run a stream server (over TLS with ``tls``), print its address, and serve until SIGINT
    or SIGTERM; with -v each connection is reported (utcp.cli.report)."""
    server = await start_server(reported(callback), host, port, config=config, ssl=tls)
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
