"""A utcp peer in a process of its own, for tests that kill it with SIGKILL mid-transfer.

``server``: prints ``port <n>`` once listening on 127.0.0.1, then echoes every connection until
killed.  ``client HOST PORT send``: connects and writes without end; ``client HOST PORT read``:
connects and reads without end (the test's server streams to it).  A client prints ``flowing``
once its first megabyte has moved.  Run as ``python tests/_vanishing_peer.py [--loop KIND] ...``.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

import utcp

MIB = 1 << 20


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _server() -> None:
    server = await utcp.start_server(_echo, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


async def _client(host: str, port: int, mode: str) -> None:
    reader, writer = await utcp.open_connection(host, port)
    moved = 0
    announced = False
    chunk = bytes(64 << 10)
    while True:
        if mode == "send":
            writer.write(chunk)
            await writer.drain()
            moved += len(chunk)
        else:
            data = await reader.read(1 << 16)
            if not data:
                return
            moved += len(data)
        if moved >= MIB and not announced:
            announced = True
            print("flowing", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("server")
    client = sub.add_parser("client")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("mode", choices=["send", "read"])
    args = parser.parse_args()
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.role == "server":
            runner.run(_server())
        else:
            runner.run(_client(args.host, args.port, args.mode))
