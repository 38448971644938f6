"""A chat client on utcp: lines typed on standard input go to the room, lines from the room
are printed. End of input leaves the room.

    python examples/chat_client.py --host 127.0.0.1 --port 9100 --name alice
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import utcp


async def pump_stdin(writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async for line in stdin:
        writer.write(line)
        await writer.drain()
    writer.write_eof()


async def main(host: str, port: int, name: str) -> int:
    try:
        reader, writer = await utcp.open_connection(host, port)
    except OSError as exc:  # refused, unreachable, no answer
        print(f"could not connect to {host}:{port}: {exc}", file=sys.stderr)
        return 1
    writer.write(name.encode() + b"\n")
    print(f"* connected as {name}", flush=True)
    sender = asyncio.create_task(pump_stdin(writer))
    try:
        async for line in reader:
            print(line.decode(errors="replace").rstrip(), flush=True)
            if sender.done():
                break
    finally:
        sender.cancel()
        writer.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--name", default="guest")
    args = parser.parse_args()
    try:
        raise SystemExit(utcp.run(main(args.host, args.port, args.name)))
    except KeyboardInterrupt:
        pass
