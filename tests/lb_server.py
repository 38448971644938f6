"""One utcp backend of the load-balancer test (tests/test_lb_nginx.py), run in a network
namespace of its own with ``ip netns exec``.

Each connection is greeted with a line naming this server (``server <name>``), then everything
it sends is echoed until it closes its side.  A client that reads that line knows which server
held its connection; had the balancer moved any later datagram of it to the other server, that
server would not know the connection id and the transfer would break.

Once listening it prints ``{"ready": [host, port]}``.  On SIGTERM or SIGINT it stops and prints
one JSON line: how many connections it served and finished, the connection ids of each (its own
and the client's, so the test can match every client connection to exactly one server), the
peer addresses they came from (the balancer's, one per client session) and ``server.stats``
(datagrams, resets sent, drops by reason).

Run as ``python tests/lb_server.py --name a --host 10.0.0.2 --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
from collections import Counter
from typing import Any

import utcp

READ_BYTES = 1 << 16
_DROP = re.compile(r"event='datagram_dropped' peer=\"?\('([^']+)', (\d+)\)\"? reason='([^']+)'")


class DropLog(logging.Handler):
    """Counts the datagrams the endpoint itself dropped by reason and by the address they came
    from (utcp logs each at debug level), so the report can show whose datagrams they were: a
    late copy of a finished connection's ACK comes from that connection's own balancer session,
    a datagram of a connection held by the other server would come from a session never seen
    here."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_reason: dict[str, Counter[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _DROP.search(record.getMessage())
        if match:
            host, port, reason = match.groups()
            self.by_reason.setdefault(reason, Counter())[f"{host}:{port}"] += 1


class Backend:
    """The per-process record of what this server did, reported as JSON at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.served = 0  # connections greeted
        self.finished = 0  # connections echoed to the end (the peer closed its side)
        self.bytes_echoed = 0
        self.cids: list[list[int]] = []  # [our id, the client's id] of each connection
        self.peers: set[str] = set()
        self.pmtu: Counter[int] = Counter()  # largest datagram each connection sent, at its end
        self.errors: list[str] = []
        self.drops = DropLog()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Greet, echo until the client's EOF, close; any error is recorded, not raised."""
        self.served += 1
        conn = writer.get_extra_info("connection")
        self.cids.append([conn.local_cid, conn.peer_cid])
        peer = writer.get_extra_info("peername")
        self.peers.add(f"{peer[0]}:{peer[1]}")
        try:
            writer.write(f"server {self.name}\n".encode())
            while data := await reader.read(READ_BYTES):
                writer.write(data)
                self.bytes_echoed += len(data)
                await writer.drain()
            self.pmtu[conn.stats.pmtu_bytes] += 1
            writer.close()
            await writer.wait_closed()
            self.finished += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            writer.transport.abort()

    def report(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Everything the test checks, as one JSON-ready dict."""
        return {
            "name": self.name,
            "served": self.served,
            "finished": self.finished,
            "bytes_echoed": self.bytes_echoed,
            "cids": self.cids,
            "peers": sorted(self.peers),
            "pmtu_bytes": {str(k): v for k, v in sorted(self.pmtu.items())},
            "errors": self.errors,
            "drops_by_peer": {k: dict(v) for k, v in self.drops.by_reason.items()},
            "stats": stats,
        }


async def serve(name: str, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then print the report."""
    backend = Backend(name)
    logger = logging.getLogger("utcp")
    logger.addHandler(backend.drops)
    logger.setLevel(logging.DEBUG)
    server = await utcp.start_server(backend.handle, host, port)
    bound = server.sockets[0].getsockname()
    print(json.dumps({"ready": [bound[0], bound[1]]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    stats = server.stats  # before close(): the counters of the socket that served them
    server.close()
    print(json.dumps(backend.report(stats)), flush=True)
    server.abort_clients()
    try:
        await asyncio.wait_for(server.wait_closed(), 5.0)
    except asyncio.TimeoutError:  # the same class from Python 3.11
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--name", required=True, help="reported in each greeting")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    utcp.run(serve(args.name, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
