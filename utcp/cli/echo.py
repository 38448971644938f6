"""``utcp echo-server``: the echo server, printing its address."""

from __future__ import annotations

import argparse
import asyncio

from ..config import Config
from .helpers import (
    Subcommands,
    add_congestion_option,
    config_for,
    port_number,
    serve_until_signalled,
)
from .output import run_command


def register(sub: Subcommands) -> None:
    """Add the ``echo-server`` subcommand."""
    p = sub.add_parser(
        "echo-server",
        help="run an echo server",
        description="Echo every byte each client sends until it closes. Prints the address.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=9000, help="UDP port (0: any free port)")
    add_congestion_option(p)
    p.set_defaults(func=main)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, config: Config | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    await serve_until_signalled(_echo, host, port, "echo server", config)


def main(args: argparse.Namespace) -> int:
    """Run the echo server."""
    run_command(serve(args.host, args.port, config_for(args)))
    return 0
