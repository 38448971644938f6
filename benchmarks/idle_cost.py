"""What idle connections cost a server: memory per connection and CPU while nothing happens.

A server process (an echo server on the chosen stack) is filled with ``--connections`` client
connections, each of which echoes one short message and then stays open and silent.  The
server's resident memory is read from ``/proc`` before the first connection and after the
last (the difference over the count is the cost of one idle connection: its core state,
transport, stream objects and buffers), then its CPU time over ``--idle-s`` seconds of silence
(keepalive probes included, as a deployment would run them).  Kernel TCP with asyncio streams
is the baseline, measured the same way (its per-connection kernel memory is not in the
process's RSS: read its row as the Python side only).

    .venv/bin/python benchmarks/idle_cost.py --connections 10000 --idle-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
STACKS = ("utcp", "tcp")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _config(keepalive: bool) -> object:
    import utcp

    return utcp.Config() if keepalive else utcp.Config(keepalive_idle_s=None, idle_timeout_s=None)


async def _serve(stack: str, keepalive: bool) -> None:
    """The server process: print the port, serve until stdin closes."""
    import utcp

    if stack == "utcp":
        server = await utcp.start_server(_echo, HOST, 0, backlog=1000, config=_config(keepalive))
    else:
        server = await asyncio.start_server(_echo, HOST, 0, backlog=1000)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    os._exit(0)  # the measurement is over: no orderly teardown of thousands of connections


async def _fill(
    stack: str, port: int, count: int, batch: int, keepalive: bool
) -> list[asyncio.StreamWriter]:
    """``count`` connections, each after one echo; utcp's over one client socket."""
    import utcp

    writers: list[asyncio.StreamWriter] = []
    endpoint = (
        await utcp.create_client_endpoint(config=_config(keepalive), local_addr=(HOST, 0))
        if stack == "utcp"
        else None
    )

    async def one() -> asyncio.StreamWriter:
        if endpoint is not None:
            reader, writer = await endpoint.open_connection(HOST, port)
        else:
            reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        return writer

    for start in range(0, count, batch):
        writers += await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    return writers


async def _measure(
    stack: str, count: int, idle_s: float, batch: int, keepalive: bool
) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack] + ([] if keepalive else ["--no-keepalive"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        await asyncio.sleep(0.5)
        rss0 = _rss_bytes(server.pid)
        started = time.monotonic()
        writers = await _fill(stack, port, count, batch, keepalive)
        fill_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # delayed ACKs and the last echoes settle
        rss1 = _rss_bytes(server.pid)
        cpu0 = _cpu_s(server.pid)
        await asyncio.sleep(idle_s)
        cpu1 = _cpu_s(server.pid)
        for writer in writers:
            writer.transport.abort()
        return {
            "connections": count,
            "bytes_per_connection": (rss1 - rss0) / count,
            "idle_cpu_percent_of_a_core": 100.0 * (cpu1 - cpu0) / idle_s,
            "fill_s": fill_s,
        }
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=200, help="connections opened at once")
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--no-keepalive",
        action="store_true",
        help="utcp with keepalive and idle timeout off, as TCP",
    )
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import utcp

        utcp.run(_serve(args.serve, not args.no_keepalive))
        return
    import utcp

    rows = {}
    for stack in args.stacks.split(","):
        rows[stack] = utcp.run(
            _measure(stack, args.connections, args.idle_s, args.batch, not args.no_keepalive)
        )
        row = rows[stack]
        print(
            f"{stack:5} {row['connections']:>6} idle connections: "
            f"{row['bytes_per_connection'] / 1000:6.1f} KB each, "
            f"{row['idle_cpu_percent_of_a_core']:5.2f}% of a core idle "
            f"(opened in {row['fill_s']:.1f} s)",
            flush=True,
        )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
