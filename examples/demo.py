"""The utcp demo: a real echo server and client over loopback UDP, and the packet ladder of
their whole connection drawn from the real datagrams; then a 2 MiB transfer through the
impairment relay with 2% loss each way, traced, and drawn as a time-sequence graph.

Every datagram is taken from the endpoints' observers as it is sent and labelled as
``utcp ladder`` labels it (PMTU probes and probe ACKs named); every state change comes from
utcp's own structlog ``state_changed`` events.  srtt is shown no finer than the event loop's
clock measures it (1 ms on uvloop).  Run it with ``make demo``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

import utcp
from utcp.cli.report import clock_note, clock_resolution, rtt_text
from utcp.packet import decode
from utcp.tools.netem import Impairment, Relay
from utcp.tools.traceview import LADDER_WIDTH, datagram_from_packet, load_trace, plot_time_sequence

WIDTH = LADDER_WIDTH
PICTURE = Path("build/demo/transfer-2pct-loss.png")
LOSSY_BYTES = 2 << 20


@dataclass
class Record:
    kind: str  # "datagram" or "state"
    cid: int
    text: str


records: list[Record] = []
last_sent: dict[int, bytes] = {}  # each end's last datagram, to name an exact copy as such


def collect_states(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("event") == "state_changed" and "cid" in event:
        records.append(Record("state", int(event["cid"], 16), f"{event['old']} -> {event['new']}"))
    raise structlog.DropEvent


def observer(direction: str, data: bytes, _addr: object) -> None:
    if direction != "send":
        return
    p = decode(data)
    text = datagram_from_packet(p, t=0.0, sent=True).label()
    if last_sent.get(p.src_cid) == data:
        text += " (same datagram again)"  # sent twice byte for byte, e.g. a repeated ACK
    last_sent[p.src_cid] = bytes(data)
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
    resolution = clock_resolution()
    print(
        f"client stats: sent {stats.bytes_sent} B, received {stats.bytes_received} B, "
        f"{stats.segments_sent} segments out, {stats.segments_received} in, "
        f"{stats.pmtud_probes_sent} PMTU probes, {stats.retransmissions} retransmissions, "
        f"srtt {rtt_text(stats.srtt_s, resolution)}{clock_note(resolution)}, "
        f"rto {stats.rto_s * 1000:.0f} ms, cwnd {stats.cwnd_bytes} B"
    )
    await lossy_transfer()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read everything, answer with its SHA-256."""
    digest = hashlib.sha256()
    while data := await reader.read(1 << 16):
        digest.update(data)
    writer.write(digest.hexdigest().encode())
    writer.close()


async def lossy_transfer() -> None:
    """2 MiB through 2% loss and 10 ms delay each way over a 1500-byte-MTU path (the relay
    drops larger datagrams, so PMTU discovery settles at 1472 bytes), traced; the client's
    trace drawn."""
    structlog.reset_defaults()
    payload = random.Random(2).randbytes(LOSSY_BYTES)
    server = await utcp.start_server(sink, "127.0.0.1", 0)
    loss = Impairment(loss=0.02, delay_s=0.010, mtu=1472)
    with tempfile.TemporaryDirectory() as tmp:
        traced = utcp.Config(trace_dir=tmp)
        async with await Relay.start(
            ("127.0.0.1", 0), server.sockets[0].getsockname()[:2], up=loss, down=loss, seed=2
        ) as relay:
            reader, writer = await utcp.open_connection(*relay.address, config=traced)
            writer.write(payload)
            writer.write_eof()
            answer = (await reader.read()).decode()
            writer.close()
            await writer.wait_closed()
            stats = writer.get_extra_info("stats")
            server.close()  # inside the relay: the server's last FIN exchange crosses it
            await server.wait_closed()
        intact = answer == hashlib.sha256(payload).hexdigest()
        print(
            f"\n{LOSSY_BYTES >> 20} MiB through 2% loss each way: "
            f"{'intact' if intact else 'CORRUPTED'}, {stats.retransmissions} retransmissions "
            f"({stats.fast_retransmits} fast, {stats.timeouts} timeouts, "
            f"{stats.tail_loss_probes} tail loss probes); relay dropped "
            f"{relay.counters.up.dropped_loss} up, {relay.counters.down.dropped_loss} down; "
            f"path MTU discovered: {stats.pmtu_bytes} B datagrams"
        )
        if importlib.util.find_spec("matplotlib") is None:
            print("no picture: matplotlib is not installed (pip install 'utcp-transport[plot]')")
            return
        (trace_file,) = Path(tmp).glob("*-client.jsonl")
        PICTURE.parent.mkdir(parents=True, exist_ok=True)
        plot_time_sequence(load_trace(trace_file), PICTURE)
    print(f"time-sequence graph of that transfer: {PICTURE.resolve()}")


if __name__ == "__main__":
    utcp.run(main())
