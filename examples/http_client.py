"""An HTTP/1.1 client on utcp's protocol API, using h11: GET a path and print the response.

python examples/http_client.py --host 127.0.0.1 --port 8080 --path /hello
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import h11

import utcp


class HttpClientProtocol(asyncio.Protocol):
    """Sends one GET and resolves ``done`` with (status, body) when the response ends."""

    def __init__(self, host: str, path: str) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.host = host
        self.path = path
        self.status = 0
        self.body = bytearray()
        self.done: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = h11.Request(method="GET", target=self.path, headers=[("host", self.host)])
        transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if not self.done.done():
                    self.done.set_result((self.status, bytes(self.body)))
                return
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the response ended"))


async def main(host: str, port: int, path: str) -> int:
    try:
        transport, protocol = await utcp.create_connection(
            lambda: HttpClientProtocol(host, path), host, port
        )
    except OSError as exc:  # refused, unreachable, no answer
        print(f"could not connect to {host}:{port}: {exc}", file=sys.stderr)
        return 1
    status, body = await protocol.done
    print(f"HTTP {status}")
    print(body.decode(errors="replace"), end="")
    transport.close()
    return 0 if status == 200 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--path", default="/")
    args = parser.parse_args()
    raise SystemExit(utcp.run(main(args.host, args.port, args.path)))
