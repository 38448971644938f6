"""``utcp perf``: an iperf3-style throughput test over utcp.

The client sends (or, with ``--reverse``, receives) for a number of bytes or seconds on one or
more parallel connections, printing a line per second (goodput, retransmissions, srtt, cwnd)
and a summary. Goodput is timed by the client, from its request to the last byte's arrival
(sending: to the receiver's report of it, a round trip later; receiving: at the client itself);
with parallel flows, from the first flow's start to the last one's end. srtt is shown no finer
than the event loop's clock measures it (1 ms on uvloop: utcp.cli.report).

Over TLS (``--tls-cert``/``--tls-key`` on the server, ``--tls-ca`` or ``--tls-insecure`` on the
client) the data goes in length-prefixed chunks and a zero length ends it: TLS cannot
half-close (asyncio's layer ends both directions together), so the FIN that ends the data on
plain utcp cannot be sent while the result still has to come back.  With ``--reverse`` the
data is framed that way too: after it, the client says it has everything and the server
answers with its sender's numbers (retransmissions, timeouts, srtt, cwnd), which the
summary reports, as the receiving client's own connection has sent nothing to count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import Config, Connection, ConnectionStats, open_connection
from ..trace import TRACE_ENV
from .helpers import (
    Subcommands,
    add_congestion_option,
    add_workers_option,
    cannot_listen,
    close_writer,
    config_for,
    duration,
    port_number,
    serve_in_workers,
    serve_until_signalled,
    size,
)
from .output import run_command
from .report import (
    clock_note,
    clock_resolution,
    connection_closed,
    connection_opened,
    rtt_text,
)
from .tls import Sides, add_tls_options, describe_failure, tls_setup

CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)
_LENGTH = struct.Struct("!I")  # over TLS: the length of the chunk that follows; 0 ends the data
_END = _LENGTH.pack(0)
_SIDES = Sides(accepting="--server", connecting="the client (without --server)")


def register(sub: Subcommands) -> None:
    """Add the ``perf`` subcommand."""
    p = sub.add_parser(
        "perf",
        help="measure throughput (iperf3-style)",
        description=(
            "Throughput test. Start 'utcp perf --server' on one side and 'utcp perf HOST PORT' "
            "on the other. Goodput is timed from the request to the last byte's arrival "
            "(sending: to the receiver's report of it)."
        ),
        usage="utcp perf --server [--host H] [--port P] [--workers N]"
        " [--tls-cert FILE --tls-key FILE]\n"
        "       utcp perf HOST PORT [--bytes N | --time S] [--reverse] [--parallel K] [--json]"
        " [--tls-ca FILE | --tls-insecure]",
    )
    p.add_argument("target", nargs="*", metavar="HOST PORT", help="the perf server to test")
    p.add_argument("-s", "--server", action="store_true", help="run the perf server")
    add_congestion_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address the server binds")
    p.add_argument("--port", type=port_number, default=5201, help="server UDP port (default 5201)")
    add_workers_option(p)
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("-n", "--bytes", type=size, default=None, help="bytes to send, e.g. 64M")
    amount.add_argument(
        "-t", "--time", type=duration, default=None, help="seconds to send (default 10s)"
    )
    p.add_argument("-R", "--reverse", action="store_true", help="the server sends, we receive")
    p.add_argument("-P", "--parallel", type=int, default=1, help="parallel connections")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--trace",
        metavar="DIR",
        default=None,
        help="write a trace of every connection to DIR (docs/TRACE.md; see utcp plot)",
    )
    add_tls_options(p, _SIDES)
    p.set_defaults(func=main, port_type=port_number)


@dataclass
class Flow:
    """What one connection of the test did."""

    bytes: int = 0
    # When the receiver was ready for the data, and when its last byte arrived (monotonic
    # seconds, this process's clock; for a flow this client sent, when it began sending and
    # when the receiver's report of the last byte came back).
    first_s: float | None = None
    last_s: float | None = None
    stats: ConnectionStats | None = None
    # With --reverse, the server's numbers for its sending (retransmissions, timeouts,
    # srtt_s, cwnd_bytes), reported after the data.
    sender: dict[str, Any] | None = None
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)
    # The core connection: its numbers stay readable after a TLS stream has closed.
    connection: Connection | None = field(default=None, repr=False)

    def seconds(self) -> float:
        if self.first_s is None or self.last_s is None:
            return 0.0
        return max(self.last_s - self.first_s, 0.0)


def _over_tls(writer: asyncio.StreamWriter) -> bool:
    return writer.get_extra_info("ssl_object") is not None


async def _send(
    writer: asyncio.StreamWriter,
    flow: Flow,
    nbytes: int | None,
    secs: float,
    *,
    framed: bool = False,
) -> None:
    """Send ``nbytes`` (None: for ``secs``), then end the data: FIN, or ``framed`` (always
    over TLS) a zero length."""
    framed = framed or _over_tls(writer)
    deadline = time.monotonic() + secs
    while True:
        if nbytes is not None:
            left = nbytes - flow.bytes
            if left <= 0:
                break
            chunk = _ZEROS if left >= CHUNK else _ZEROS[:left]
        elif time.monotonic() >= deadline:
            break
        else:
            chunk = _ZEROS
        if framed:
            writer.writelines((_LENGTH.pack(len(chunk)), chunk))
        else:
            writer.write(chunk)
        flow.bytes += len(chunk)
        await writer.drain()
    if framed:
        writer.write(_END)
    else:
        writer.write_eof()


def _arrived(flow: Flow, nbytes: int) -> None:
    flow.last_s = time.monotonic()
    flow.bytes += nbytes


async def _receive(reader: asyncio.StreamReader, flow: Flow, *, framed: bool) -> None:
    """Receive until the data ends: EOF, or ``framed`` (over TLS) a zero length.  The flow's
    time starts now, ready for the data: a transfer that arrives in one read has no span
    from its first byte to its last."""
    flow.first_s = time.monotonic()
    if not framed:
        while data := await reader.read(CHUNK * 4):
            _arrived(flow, len(data))
        return
    while left := _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]:
        if left > CHUNK:  # what _send never writes: bound what a peer can make us buffer
            raise ValueError(f"a chunk of {left} bytes, more than {CHUNK}")
        while left:
            data = await reader.read(left)
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            _arrived(flow, len(data))
            left -= len(data)


# ---------------------------------------------------------------------------------- server


def _request(line: bytes) -> dict[str, Any]:
    """The client's request line, checked: a JSON object whose ``bytes`` and ``time`` are
    positive numbers (``bytes`` a whole one) or absent."""
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError(f"a request is a JSON object, not {line[:60]!r}")
    for key, kind in (("bytes", int), ("time", (int, float))):
        value = request.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, kind) or not value > 0
        ):
            raise ValueError(f"request {key!r} must be a positive number, not {value!r}")
    return request


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn: Connection = writer.get_extra_info("connection")  # readable after a TLS close too
    try:
        request = _request(await reader.readline())
        flow = Flow()
        if request.get("reverse"):
            seconds = request.get("time")
            secs = 10.0 if seconds is None else seconds
            report = bool(request.get("report"))
            await _send(writer, flow, request.get("bytes"), secs, framed=report)
            if report:
                await reader.readline()  # the client has it all: our numbers are final
                st = conn.stats
                sender = {
                    "retransmissions": st.retransmissions,
                    "timeouts": st.timeouts,
                    "srtt_s": st.srtt_s,
                    "cwnd_bytes": st.cwnd_bytes,
                }
                writer.write(json.dumps(sender).encode() + b"\n")
            await reader.read()  # the client's FIN (over TLS, its close)
        else:
            await _receive(reader, flow, framed=_over_tls(writer))
            result = {"bytes": flow.bytes, "seconds": flow.seconds()}
            writer.write(json.dumps(result).encode() + b"\n")
            if not _over_tls(writer):  # over TLS, closing is what ends it
                writer.write_eof()
        stats = conn.stats
        resolution = clock_resolution()
        print(
            f"perf flow done: {flow.bytes} bytes, {stats.retransmissions} retransmissions, "
            f"srtt {rtt_text(stats.srtt_s, resolution, decimals=2)}{clock_note(resolution)}",
            file=sys.stderr,
            flush=True,
        )
    except (OSError, EOFError, ValueError) as exc:  # reset, timed out, TLS, cut short
        print(f"perf flow failed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        close_writer(writer)


async def serve(
    host: str, port: int, config: Config | None = None, tls: ssl.SSLContext | None = None
) -> None:
    """The perf server (over TLS with ``tls``): serves tests until SIGINT or SIGTERM."""
    await serve_until_signalled(_serve_one, host, port, "perf server", config, tls)


# ---------------------------------------------------------------------------------- client


async def _client_flow(args: argparse.Namespace, host: str, port: int, flow: Flow) -> None:
    reader, writer = await open_connection(
        host, port, config=config_for(args), **args.tls.keywords()
    )
    opened = connection_opened(writer, accepted=False)
    flow.writer, flow.connection = writer, opened.connection
    request = {"reverse": args.reverse, "bytes": args.bytes, "time": args.time, "report": True}
    writer.write(json.dumps(request).encode() + b"\n")
    try:
        if args.reverse:
            await _receive(reader, flow, framed=True)
            writer.write(b"\n")  # all here: the sender's numbers, please
            flow.sender = json.loads(await reader.readline() or b"{}")
        else:
            began = time.monotonic()
            await _send(writer, flow, args.bytes, 10.0 if args.time is None else args.time)
            result = json.loads(await reader.readline() or b"{}")
            # Until the receiver's report of the last byte: what it measured alone may be
            # microseconds (the request and a small transfer arrive together).
            flow.first_s, flow.last_s = began, time.monotonic()
            flow.bytes = int(result.get("bytes", flow.bytes))
        flow.stats = opened.connection.stats
    finally:
        close_writer(writer)
        try:
            await writer.wait_closed()
        finally:
            connection_closed(opened)


def _sample(flows: list[Flow], reverse: bool) -> tuple[int, int, float | None, int]:
    """(bytes so far, retransmissions, mean srtt or None before a sample, total cwnd) across
    flows."""
    total = retx = cwnd = 0
    srtts = []
    for f in flows:
        if f.connection is None:
            continue
        st = f.connection.stats
        # (The request line is in the send buffer before the first data: never below 0.)
        total += st.bytes_received if reverse else max(f.bytes - st.send_buffer_bytes, 0)
        retx += st.retransmissions
        cwnd += st.cwnd_bytes
        if st.srtt_s is not None:
            srtts.append(st.srtt_s)
    return total, retx, (sum(srtts) / len(srtts) if srtts else None), cwnd


async def _watch(
    args: argparse.Namespace, flows: list[Flow], tasks: list[asyncio.Task[None]], resolution: float
) -> None:
    """Wait for the flows, printing a line a second unless --json; raise the first error."""
    start = time.monotonic()
    last_bytes = 0
    live = not args.json
    if live:
        print("  time     goodput      retx     srtt      cwnd", flush=True)
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=1.0)
        total, retx, srtt, cwnd = _sample(flows, args.reverse)
        if live and not all(t.done() for t in tasks):
            elapsed = time.monotonic() - start
            mbit = (total - last_bytes) * 8 / 1e6
            if args.reverse:
                # retx, srtt and cwnd are the sender's, the server's: the summary has them.
                print(f"{elapsed:6.1f}s {mbit:8.2f} Mbit/s {'-':>6} {'-':>9} {'-':>9}", flush=True)
            else:
                shown = rtt_text(srtt, resolution, decimals=2)
                print(
                    f"{elapsed:6.1f}s {mbit:8.2f} Mbit/s {retx:6d} {shown:>9} {cwnd:9d}",
                    flush=True,
                )
        last_bytes = total
    for t in tasks:
        t.result()  # raise the first connection error


async def client(args: argparse.Namespace, host: str, port: int) -> dict[str, Any]:
    """Run the test; print live lines unless --json; return the summary."""
    resolution = clock_resolution()
    flows = [Flow() for _ in range(args.parallel)]
    tasks = [asyncio.create_task(_client_flow(args, host, port, f)) for f in flows]
    try:
        await _watch(args, flows, tasks, resolution)
    except BaseException:  # our output broke, or we were stopped: reset, do not linger
        for f in flows:
            if f.writer is not None:
                f.writer.transport.abort()
        for t in tasks:
            t.cancel()
        raise
    total_bytes = sum(f.bytes for f in flows)
    # From the first flow's start to the last flow's end: parallel flows do not all run
    # at once (a thousand take a while to open).
    spans = [(f.first_s, f.last_s) for f in flows if f.first_s is not None and f.last_s is not None]
    seconds = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
    stats = [f.stats for f in flows if f.stats is not None]
    # The sender's numbers: ours, or with --reverse the server's reports.
    if args.reverse:
        sent = [f.sender for f in flows if f.sender]
        retx = sum(int(r.get("retransmissions") or 0) for r in sent)
        timeouts = sum(int(r.get("timeouts") or 0) for r in sent)
        srtts = [float(r.get("srtt_s") or 0.0) for r in sent]
    else:
        retx = sum(s.retransmissions for s in stats)
        timeouts = sum(s.timeouts for s in stats)
        srtts = [s.srtt_s or 0.0 for s in stats]
    return {
        "direction": "receive" if args.reverse else "send",
        "parallel": args.parallel,
        "tls": args.tls.context is not None,
        "bytes": total_bytes,
        "seconds": seconds,
        "goodput_mbit_s": total_bytes * 8 / 1e6 / seconds if seconds else 0.0,
        "retransmissions": retx,  # the sender's, also with --reverse (the server's)
        "timeouts": timeouts,
        "srtt_ms": sum(srtts) / len(srtts) * 1e3 if srtts else 0.0,
        "clock_resolution_ms": resolution * 1e3,  # srtt_ms is no finer than this
        "flows": [asdict(s) | {"state": s.state.value} for s in stats],
        "senders": [f.sender for f in flows if f.sender] if args.reverse else [],
    }


def main(args: argparse.Namespace) -> int:
    """Run ``utcp perf``."""
    if args.parallel < 1:
        print("utcp perf: error: --parallel must be at least 1", file=sys.stderr)
        return 2
    if args.trace is not None:
        if not args.trace:
            print("utcp perf: error: --trace needs a directory", file=sys.stderr)
            return 2
        os.environ[TRACE_ENV] = args.trace  # both roles, every connection of this process
    if args.server and args.target:
        print("utcp perf: error: --server takes no HOST PORT", file=sys.stderr)
        return 2
    if not args.server and len(args.target) != 2:
        print("utcp perf: error: give HOST PORT (or --server)", file=sys.stderr)
        return 2
    try:
        port = args.port if args.server else args.port_type(args.target[1])
        args.tls = tls_setup(args, accepting=args.server, prog="utcp perf", sides=_SIDES)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"utcp perf: error: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.server:
        print("utcp perf: error: --workers is for --server", file=sys.stderr)
        return 2
    if args.server:
        config, tls = config_for(args), args.tls.context
        try:
            if args.workers > 1:
                serve_in_workers(
                    _serve_one, args.host, port, "perf server", config, tls, args.workers
                )
            else:
                run_command(serve(args.host, port, config, tls))
        except OSError as exc:
            return cannot_listen("utcp perf", args.host, port, exc)
        return 0
    try:
        summary = run_command(client(args, args.target[0], port))
    except (OSError, asyncio.TimeoutError, EOFError) as exc:
        print(f"utcp perf: error: {describe_failure(exc) or repr(exc)}", file=sys.stderr)
        return 1
    if args.trace is not None:
        print(f"traces in {args.trace} (draw one with: utcp plot FILE -o out.png)", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        resolution = summary["clock_resolution_ms"] / 1e3
        srtt = rtt_text(summary["srtt_ms"] / 1e3, resolution, decimals=2)
        print(
            f"summary: {summary['bytes']} bytes in {summary['seconds']:.3f} s = "
            f"{summary['goodput_mbit_s']:.2f} Mbit/s goodput, "
            f"{summary['retransmissions']} retransmissions, srtt {srtt}{clock_note(resolution)}"
        )
    return 0
