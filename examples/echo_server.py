"""An echo server on utcp: every byte a client sends comes back, until the client closes.

python examples/echo_server.py --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse
import asyncio

import utcp


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await utcp.start_server(echo, host, port)
    addr = server.sockets[0].getsockname()
    print(f"echo server listening on utcp://{addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        utcp.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
