"""``utcp echo-server``: the echo server (over TLS with ``--tls-cert``/``--tls-key``), printing
its address."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

from ..config import Config
from .helpers import (
    Subcommands,
    add_congestion_option,
    add_workers_option,
    cannot_listen,
    close_writer,
    config_for,
    port_number,
    serve_in_workers,
    serve_until_signalled,
)
from .output import run_command
from .tls import add_tls_options, tls_setup


def register(sub: Subcommands) -> None:
    """Add the ``echo-server`` subcommand."""
    p = sub.add_parser(
        "echo-server",
        help="run an echo server",
        description="Echo every byte each client sends until it closes. Prints the address. "
        "With --tls-cert and --tls-key it accepts TLS clients only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=9000, help="UDP port (0: any free port)")
    add_congestion_option(p)
    add_workers_option(p)
    add_tls_options(p, connecting=False)
    p.set_defaults(func=main)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:  # reset, timed out, or a TLS record that does not decrypt
        pass
    finally:
        close_writer(writer)


async def serve(
    host: str, port: int, config: Config | None = None, tls: ssl.SSLContext | None = None
) -> None:
    """Serve (over TLS with ``tls``) until SIGINT or SIGTERM."""
    await serve_until_signalled(_echo, host, port, "echo server", config, tls)


def main(args: argparse.Namespace) -> int:
    """Run the echo server; 2 for options that do not make sense or files that do not load."""
    try:
        tls = tls_setup(args, accepting=True, prog="utcp echo-server")
    except ValueError as exc:
        print(f"utcp echo-server: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.workers > 1:
            serve_in_workers(
                _echo,
                args.host,
                args.port,
                "echo server",
                config_for(args),
                tls.context,
                args.workers,
            )
        else:
            run_command(serve(args.host, args.port, config_for(args), tls.context))
    except OSError as exc:
        return cannot_listen("utcp echo-server", args.host, args.port, exc)
    return 0
