"""One end of one WAN benchmark flow, run inside a network namespace by bench_wan.py.

Roles:

- ``receive``: listen, take one connection, count what arrives and print ``RESULT <json>``:
  the goodput at the receiver, from the first byte to the last (``--bytes`` mode, stopping at
  ``--cap-s`` seconds after the first byte, marked ``capped``) or over ``--seconds`` from the
  first byte (the shared-link scenarios).  It exits at once after reporting.
- ``send``: connect, write ``--bytes`` in 64 KiB writes (each followed by ``drain()``), then stay
  connected until the harness kills it: a sender that closed early could cut a library's tail.
- ``latency-echo``: listen, and echo every byte each connection sends back unchanged;
  ``latency-client``: connect, send ``--count`` 8-byte messages ``--interval-ms`` apart
  (``_wan_latency``: a sequence number and a timestamp), read the echoes, wait up to
  ``--drain-s`` for the last of them and print ``RESULT <json>``: every round trip, the messages
  sent, echoed and missing (the kcp-latency scenario, KCP's own test.cpp).
- ``echo``: a UDP echo server (RTT validation); ``probe``: send numbered UDP probes to it and
  report each round-trip time and whether any came back out of order; ``blast``: send UDP
  datagrams with no reliability (loss validation; the emulator's counters are the result).

Peers (``--peer``): ``tcp`` (``--variant`` is the sender's ``TCP_CONGESTION``: cubic, bbr,
reno; the latency roles set it and ``TCP_NODELAY`` on both ends), ``utcp`` (``--variant`` is
``Config.congestion_control``, ``default`` for ``Config()``),
``aioquic`` and ``aiokcp`` (``--variant fast``: KCP's fast mode from ``_adapters.KCP_FAST``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: _adapters
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/wan/: _wan_latency

WRITE_BYTES = 64 * 1024
READ_BYTES = 256 * 1024
_CHUNK = bytes(WRITE_BYTES)


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # leave at once: a library's leftover tasks must not hold the result up


def utcp_config(variant: str) -> Any:
    import utcp

    if variant == "default":
        return utcp.Config().validate()
    return utcp.Config(congestion_control=variant).validate()


async def serve(peer: str, variant: str, host: str, handler: Any) -> int:
    """Start a listener for ``peer``; return its port."""
    if peer == "tcp":
        server = await asyncio.start_server(handler, host, 0)
        return int(server.sockets[0].getsockname()[1])
    if peer == "utcp":
        import utcp

        userver = await utcp.start_server(handler, host, 0, config=utcp_config(variant))
        return int(userver.sockets[0].getsockname()[1])
    from _adapters import adapter_for

    adapter = adapter_for(peer, variant)
    return await adapter.serve(handler, host)


async def receive(args: argparse.Namespace) -> None:
    want = int(args.bytes)
    cap_s = float(args.cap_s)
    seconds = float(args.seconds) if args.seconds else 0.0
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got, first, last, capped, half_at = 0, 0.0, 0.0, False, 0.0
        cpu0 = time.process_time()
        try:
            while seconds or got < want:
                if first and seconds:
                    left = first + seconds - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        data = await asyncio.wait_for(reader.read(READ_BYTES), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    data = await reader.read(READ_BYTES)
                if not data:
                    break
                last = time.perf_counter()
                if not first:
                    first = last
                got += len(data)
                if not half_at and got * 2 >= want:
                    half_at = last
                if not seconds and last - first > cap_s:
                    capped = True
                    break
        except Exception as exc:  # a reset after the data counts as the end of it
            if not done.done():
                done.set_result({"error": repr(exc), "bytes": got})
            return
        span = seconds if seconds else (last - first)
        result = {
            "bytes": got,
            "span_s": span,
            "goodput_mbps": got * 8 / span / 1e6 if span > 0 else 0.0,
            "capped": capped,
            "complete": (not seconds) and got >= want,
            # The steady state: the second half of a complete transfer, slow start left out.
            "second_half_mbps": (want - want // 2) * 8 / (last - half_at) / 1e6
            if (not seconds) and got >= want and last > half_at
            else None,
            "receiver_cpu_s": time.process_time() - cpu0,
        }
        if not done.done():
            done.set_result(result)

    port = await serve(args.peer, args.variant, args.host, handler)
    print(f"READY {port}", flush=True)
    report(await done)


def tune_tcp(sock: Any, variant: str) -> None:
    """The congestion control under test, and no Nagle delay (asyncio's streams set
    TCP_NODELAY too; set here so that no default is relied on)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, variant.encode())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tcp_settings(sock: Any) -> dict[str, Any]:
    """What the kernel says the socket uses (recorded with every latency result)."""
    cc = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    return {"congestion": cc.rstrip(b"\0").decode(), "nodelay": bool(nodelay)}


async def open_streams(
    peer: str, variant: str, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
    """Connect; the third item keeps a library's context open for as long as we send."""
    if peer == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tune_tcp(sock, variant)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return reader, writer, tcp_settings(sock)["congestion"]
    if peer == "utcp":
        import utcp

        reader, writer = await utcp.open_connection(host, port, config=utcp_config(variant))
        return reader, writer, None
    from _adapters import adapter_for

    adapter = adapter_for(peer, variant)
    context = adapter.connect(host, port)
    reader, writer = await context.__aenter__()
    return reader, writer, context


async def _log_stats(writer: Any, path: str) -> None:
    """Diagnostics (UTCP_WAN_STATS=FILE): every 0.25 s (UTCP_WAN_STATS_S seconds), what held
    the utcp sender back and its controller's model, one JSON line each."""
    keys = (
        "time_limited_by_receiver_s",
        "time_limited_by_congestion_s",
        "time_limited_by_application_s",
        "congestion_phase",
        "pacing_rate_bps",
        "bandwidth_estimate_bps",
        "min_rtt_s",
        "cwnd_bytes",
        "bytes_in_flight",
        "send_window_bytes",
        "retransmissions",
        "srtt_s",
        "bytes_sent",
        "bytes_retransmitted",
        "timeouts",
        "tail_loss_probes",
        "fast_retransmits",
        "reorder_timeouts",
        "dsacks_received",
        "mss_bytes",
        "pmtud_state",
    )
    interval = float(os.environ.get("UTCP_WAN_STATS_S", "0.25"))
    start = time.monotonic()
    while True:
        st = writer.transport.get_extra_info("stats")
        row = {"t": round(time.monotonic() - start, 3), **{k: getattr(st, k) for k in keys}}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        await asyncio.sleep(interval)


async def send(args: argparse.Namespace) -> None:
    _reader, writer, keep = await open_streams(args.peer, args.variant, args.host, args.port)
    stats_file = os.environ.get("UTCP_WAN_STATS")
    logger = (
        asyncio.create_task(_log_stats(writer, stats_file))
        if args.peer == "utcp" and stats_file
        else None
    )
    if args.peer == "tcp":
        print(f"CC {keep}", flush=True)
    left = int(args.bytes)
    while left > 0:
        n = min(left, WRITE_BYTES)
        writer.write(_CHUNK[:n])
        await writer.drain()
        left -= n
    print("SENT", flush=True)
    await asyncio.Event().wait()  # until the harness kills us
    del logger


async def latency_echo(args: argparse.Namespace) -> None:
    """Echo every byte back as it comes, for as long as the harness lets us run."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if args.peer == "tcp":
            tune_tcp(writer.get_extra_info("socket"), args.variant)
        try:
            while data := await reader.read(READ_BYTES):
                writer.write(data)
                await writer.drain()
        except Exception:  # the harness kills the client: a reset ends the echo
            return

    port = await serve(args.peer, args.variant, args.host, handler)
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


def _clock_us() -> int:
    return time.monotonic_ns() // 1000


async def latency_client(args: argparse.Namespace) -> None:
    """One message every ``--interval-ms`` on a fixed schedule (a late wake-up does not shift
    the ones after it), the echoes read concurrently; then up to ``--drain-s`` for the rest."""
    from _wan_latency import EchoLog

    reader, writer, _keep = await open_streams(args.peer, args.variant, args.host, args.port)
    extra: dict[str, Any] = {}
    if args.peer == "tcp":
        extra["tcp"] = tcp_settings(writer.get_extra_info("socket"))
    log = EchoLog()
    count, interval = int(args.count), float(args.interval_ms) / 1000
    all_back = asyncio.Event()
    failure: list[str] = []

    async def read_echoes() -> None:
        try:
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    failure.append("end of stream before every echo")
                    break
                log.feed(data, _clock_us())
                if log.sent == count and log.complete():
                    break
        except Exception as exc:
            failure.append(repr(exc))
        all_back.set()

    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    reading = asyncio.create_task(read_echoes())
    start = loop.time()
    for i in range(count):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if all_back.is_set():
            break  # the stream failed
        writer.write(log.send(_clock_us()))
        await writer.drain()
    sending_s = loop.time() - start
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(all_back.wait(), float(args.drain_s))
    result = {
        **log.result(),
        "sending_s": sending_s,
        "span_s": loop.time() - start,
        "client_cpu_s": time.process_time() - cpu0,
        **extra,
    }
    if failure:
        result["error"] = failure[0]
    reading.cancel()
    report(result)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def echo(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(args.host, 0))
    print(f"READY {transport.get_extra_info('sockname')[1]}", flush=True)
    await asyncio.Event().wait()


def probe(args: argparse.Namespace) -> None:
    """Numbered probes ``--interval-ms`` apart; every echo's RTT and the order they came in."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.host, args.port))
    sock.settimeout(0.001)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    order: list[int] = []
    count, interval = int(args.count), float(args.interval_ms) / 1000
    start = time.perf_counter()
    deadline = start + count * interval + 2.0
    i = 0
    while time.perf_counter() < deadline and len(order) < count:
        now = time.perf_counter()
        if i < count and now >= start + i * interval:
            sent[i] = now
            sock.send(struct.pack("!Q", i) + bytes(56))
            i += 1
        try:
            data = sock.recv(2048)
        except (TimeoutError, BlockingIOError):
            continue
        seq = struct.unpack("!Q", data[:8])[0]
        rtts.append((time.perf_counter() - sent[seq]) * 1000)
        order.append(seq)
    reordered = sum(1 for a, b in itertools.pairwise(order) if b < a)
    report({"rtt_ms": rtts, "sent": count, "received": len(order), "reordered": reordered})


def blast(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.host, args.port))
    payload = bytes(int(args.size))
    sent = 0
    for _ in range(int(args.count)):
        try:
            sock.send(payload)
            sent += 1
        except OSError:
            pass
        if sent % 64 == 0:
            time.sleep(0.0005)  # stay below what the devices' queues hold
    report({"sent": sent})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "role",
        choices=("receive", "send", "latency-echo", "latency-client", "echo", "probe", "blast"),
    )
    p.add_argument("--peer", default="tcp")
    p.add_argument("--variant", default="default")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bytes", type=int, default=8 << 20)
    p.add_argument("--cap-s", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--interval-ms", type=float, default=50.0)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--drain-s", type=float, default=15.0)
    args = p.parse_args()
    if args.role == "probe":
        probe(args)
    elif args.role == "blast":
        blast(args)
    else:
        roles = {
            "receive": receive,
            "send": send,
            "latency-echo": latency_echo,
            "latency-client": latency_client,
            "echo": echo,
        }
        coro = roles[args.role]
        try:
            asyncio.run(coro(args))
        except ValueError as exc:  # e.g. an unknown congestion_control
            report({"error": f"unsupported: {exc}"})


if __name__ == "__main__":
    main()
