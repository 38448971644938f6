"""``utcp echo-server``: the echo server, printing its address."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .. import run, start_server


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``echo-server`` subcommand."""
    from . import port_number

    p = sub.add_parser(
        "echo-server",
        help="run an echo server",
        description="Echo every byte each client sends until it closes. Prints the address.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=9000, help="UDP port (0: any free port)")
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


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = await start_server(_echo, host, port)
    addr = server.sockets[0].getsockname()
    print(f"echo server listening on utcp://{addr[0]}:{addr[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        server.abort_clients()


def main(args: argparse.Namespace) -> int:
    """Run the echo server."""
    run(serve(args.host, args.port))
    return 0
