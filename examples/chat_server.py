"""A line-based chat server on utcp: the first line a client sends is its name, every later
line goes to everybody else as "name: line".

    python examples/chat_server.py --host 127.0.0.1 --port 9100
"""

from __future__ import annotations

import argparse
import asyncio

import utcp

clients: dict[asyncio.StreamWriter, str] = {}


def broadcast(line: str, sender: asyncio.StreamWriter | None) -> None:
    for writer in list(clients):
        if writer is not sender and not writer.is_closing():
            writer.write(line.encode() + b"\n")


async def chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        name = (await reader.readline()).decode(errors="replace").strip() or "anonymous"
        clients[writer] = name
        broadcast(f"* {name} joined", writer)
        async for raw in reader:
            broadcast(f"{name}: {raw.decode(errors='replace').rstrip()}", writer)
        broadcast(f"* {name} left", writer)
    except ConnectionError:
        pass
    finally:
        clients.pop(writer, None)
        writer.close()


async def main(host: str, port: int) -> None:
    server = await utcp.start_server(chat, host, port)
    addr = server.sockets[0].getsockname()
    print(f"chat server listening on utcp://{addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        utcp.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
