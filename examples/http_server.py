"""An HTTP/1.1 server on utcp's protocol API, using h11: the same asyncio.Protocol code would
serve over TCP unchanged.

    python examples/http_server.py --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio

import h11

import utcp


class HttpProtocol(asyncio.Protocol):
    """Answers every request with a small text page naming the path asked for."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._process()
        return False

    def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data and self.transport is not None:
            self.transport.write(data)

    def _process(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                if self.transport is not None:
                    self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.Request):
                body = f"hello from utcp, you asked for {event.target.decode()}\n".encode()
                headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
                self._send(h11.Response(status_code=200, headers=headers))
                self._send(h11.Data(data=body))
                self._send(h11.EndOfMessage())
            elif isinstance(event, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return


async def main(host: str, port: int) -> None:
    server = await utcp.create_server(HttpProtocol, host, port)
    addr = server.sockets[0].getsockname()
    print(f"http server listening on utcp://{addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    try:
        utcp.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
