"""A utcp echo server in a process of its own, for tests that kill it with SIGKILL mid-transfer.

It prints ``port <n>`` once listening on 127.0.0.1, then echoes every connection until killed.
Run as ``python tests/_vanishing_server.py [--loop asyncio|uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

import utcp


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _main() -> None:
    server = await utcp.start_server(_echo, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_main())
