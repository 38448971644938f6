"""The utcp demo: a real echo server and client over loopback UDP, and the packet ladder of
their whole connection drawn from the real datagrams.

Every datagram is taken from the endpoints' observers as it is sent; every state change comes
from utcp's own structlog ``state_changed`` events.  Run it with ``make demo``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import structlog

import utcp
from utcp.packet import Flag, decode

WIDTH = 46


@dataclass
class Record:
    kind: str  # "datagram" or "state"
    cid: int
    text: str


records: list[Record] = []


def collect_states(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("event") == "state_changed" and "cid" in event:
        records.append(Record("state", int(event["cid"], 16), f"{event['old']} -> {event['new']}"))
    raise structlog.DropEvent


def observer(direction: str, data: bytes, _addr: object) -> None:
    if direction != "send":
        return
    p = decode(data)
    flags = str(Flag(p.flags).name).replace("|", "+")
    text = f"{flags} seq={p.seq} ack={p.ack}"
    if p.payload:
        text += f" len={len(p.payload)}"
    records.append(Record("datagram", p.src_cid, text))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    structlog.configure(
        processors=[collect_states],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    server = await utcp.start_server(echo, "127.0.0.1", 0, observer=observer)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"echo server on utcp://{host}:{port}; client connecting\n")
    reader, writer = await utcp.open_connection(host, port, observer=observer)
    client_cid = writer.get_extra_info("connection").local_cid
    writer.write(b"hello, utcp")
    reply = await reader.readexactly(11)
    writer.write_eof()
    await reader.read()  # the server's FIN
    writer.close()
    await writer.wait_closed()
    stats = writer.get_extra_info("stats")
    server.close()
    await server.wait_closed()

    print(f"{'client':<{WIDTH}}{'server':>{WIDTH}}")
    print(f"{'':-<{2 * WIDTH}}")
    for rec in records:
        client_side = rec.cid == client_cid
        if rec.kind == "state":
            line = f"[{rec.text}]"
            print(line if client_side else f"{line:>{2 * WIDTH}}")
        else:
            body = f" {rec.text} "
            if client_side:
                print(f"{body:-<{2 * WIDTH - 1}}>")
            else:
                print(f"<{body:->{2 * WIDTH - 1}}")
    print(f"\nechoed {reply!r}")
    srtt_ms = (stats.srtt_s or 0.0) * 1000
    print(
        f"client stats: sent {stats.bytes_sent} B, received {stats.bytes_received} B, "
        f"{stats.segments_sent} segments out, {stats.segments_received} in, "
        f"{stats.retransmissions} retransmissions, srtt {srtt_ms:.3f} ms, "
        f"rto {stats.rto_s * 1000:.0f} ms, cwnd {stats.cwnd_bytes} B"
    )


if __name__ == "__main__":
    utcp.run(main())
