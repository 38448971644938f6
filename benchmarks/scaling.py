"""Scaling over cores: one server process against one worker process per core.

The same service runs on utcp (``utcp.serve(..., workers=N)``: one ``SO_REUSEPORT`` socket per
worker, datagrams steered by connection id) and on kernel TCP with asyncio streams (N processes
accepting from one listening socket, the classic pre-fork server), each with 1 worker and with
``--workers`` (default: one per core), side by side in one run:

- ``rr``: ``--conns`` connections each sending 64-byte requests one at a time for
  ``--seconds``; the handler does ``--work-us`` of pure-Python CPU work per request before it
  answers, so that the server, not the load generator sharing the machine, is the bottleneck;
- ``connect``: connect, one such request, close, by ``--conns`` loops at once;
- ``many``: ``--many-conns`` connections each echoing ``--many-kib`` KiB (no CPU work: how
  far the datagram path itself scales).

The load generator is this process (uvloop when installed), on the same machine: on a 2-core
machine it takes part of a core from the workers, which is why the handler works per request.
Read the ratios (N workers over 1) more than the absolute numbers.

    .venv/bin/python benchmarks/scaling.py              # about 1 minute
    .venv/bin/python benchmarks/scaling.py --quick      # a few seconds: the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utcp  # noqa: E402

HOST = "127.0.0.1"
STACKS = ("utcp", "tcp")
REQUEST = b"q" * 63 + b"\n"
RESPONSE = b"a" * 63 + b"\n"
SCENARIOS = ("rr", "connect", "many")


# ------------------------------------------------------------------------------ server side


def _spin(iterations: int) -> int:
    """Pure-Python CPU work standing for an application's (it holds the GIL, as such work
    does)."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def _calibrate(work_us: float) -> int:
    """Iterations of ``_spin`` taking about ``work_us`` microseconds on this machine."""
    n = 20_000
    start = time.perf_counter()
    for _ in range(5):
        _spin(n)
    per_iter = (time.perf_counter() - start) / (5 * n)
    return max(1, round(work_us * 1e-6 / per_iter))


def _handler(iterations: int) -> Callable[[Any, Any], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            mode = await reader.readline()
            if mode == b"E\n":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            else:
                while await reader.readline():
                    _spin(iterations)
                    writer.write(RESPONSE)
        except OSError:
            pass
        finally:
            writer.close()

    return handle


def _serve(stack: str, workers: int, iterations: int) -> None:
    """The server process: prints its port, serves until SIGTERM."""
    handle = _handler(iterations)

    def ready(addresses: list[Any]) -> None:
        print(addresses[0][1], flush=True)

    if stack == "utcp":
        utcp.serve(handle, HOST, 0, workers=workers, ready=ready, grace_s=0.0, backlog=1024)
        return
    listener = socket.create_server((HOST, 0), backlog=4096)
    listener.setblocking(False)
    ready([listener.getsockname()])

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=listener)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    children = []
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # for sigwait below
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
                utcp.run(main())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    signal.sigwait(stops)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)


# ------------------------------------------------------------------------------ load


async def _open(stack: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if stack == "utcp":
        return await utcp.open_connection(HOST, port)
    return await asyncio.open_connection(HOST, port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def _rr(stack: str, port: int, conns: int, seconds: float) -> float:
    """Requests per second over ``conns`` connections, one request in flight on each."""
    count = 0
    start = time.monotonic()
    end = start + seconds

    async def one() -> None:
        nonlocal count
        reader, writer = await _open(stack, port)
        writer.write(b"R\n")
        while time.monotonic() < end:
            writer.write(REQUEST)
            await reader.readexactly(len(RESPONSE))
            count += 1
        await _close(writer)

    await asyncio.gather(*(one() for _ in range(conns)))
    return count / (time.monotonic() - start)


async def _connect(stack: str, port: int, conns: int, seconds: float) -> float:
    """Connections per second: connect, one request, close, by ``conns`` loops at once."""
    count = 0
    start = time.monotonic()
    end = start + seconds

    async def loop() -> None:
        nonlocal count
        while time.monotonic() < end:
            reader, writer = await _open(stack, port)
            writer.write(b"R\n" + REQUEST)
            await reader.readexactly(len(RESPONSE))
            await _close(writer)
            count += 1

    await asyncio.gather(*(loop() for _ in range(conns)))
    return count / (time.monotonic() - start)


async def _many(stack: str, port: int, conns: int, kib: int) -> float:
    """MB/s echoed by ``conns`` connections at once, each ``kib`` KiB."""
    payload = os.urandom(kib * 1024)
    start = time.monotonic()

    async def one() -> None:
        reader, writer = await _open(stack, port)
        writer.write(b"E\n")

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await reader.read(-1)
        await sender
        assert got == payload, "echo differs"
        await _close(writer)

    await asyncio.gather(*(one() for _ in range(conns)))
    return 2 * conns * len(payload) / (time.monotonic() - start) / 1e6


def _measure(
    stack: str, workers: int, iterations: int, scenarios: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            stack,
            "--workers",
            str(workers),
            "--iterations",
            str(iterations),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(0.3)  # every worker up
        row: dict[str, Any] = {"stack": stack, "workers": workers}

        async def timed(key: str, run: Awaitable[float]) -> None:
            cpu, wall = time.process_time(), time.monotonic()
            row[key] = await run
            row[key.replace("_per_s", "_load_cpu")] = (time.process_time() - cpu) / (
                time.monotonic() - wall
            )

        async def run_all() -> None:
            if "rr" in scenarios:
                await timed("rr_per_s", _rr(stack, port, args.conns, args.seconds))
            if "connect" in scenarios:
                await timed("connect_per_s", _connect(stack, port, args.conns, args.seconds))
            if "many" in scenarios:
                row["many_mb_s"] = await _many(stack, port, args.many_conns, args.many_kib)

        utcp.run(run_all())
        return row
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_COLUMNS = (
    ("rr_per_s", "requests/s"),
    ("rr_load_cpu", "load generator CPU"),
    ("connect_per_s", "connections/s"),
    ("connect_load_cpu", "load generator CPU"),
    ("many_mb_s", "many MB/s"),
)


def _cell(key: str, value: float) -> str:
    return f"{value:.0%}" if key.endswith("_cpu") else f"{value:,.0f}"


def _table(rows: list[dict[str, Any]], workers: int) -> str:
    """The medians as a markdown table, with the N-over-1 ratios."""
    present = [(key, label) for key, label in _COLUMNS if any(key in r for r in rows)]
    head = ["stack", "workers", *(label for _, label in present)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["stack"], str(row["workers"])]
        cells += [_cell(key, row[key]) if key in row else "" for key, _ in present]
        lines.append("| " + " | ".join(cells) + " |")
    for stack in sorted({r["stack"] for r in rows}):
        one = next((r for r in rows if r["stack"] == stack and r["workers"] == 1), None)
        more = next((r for r in rows if r["stack"] == stack and r["workers"] == workers), None)
        if one is None or more is None or workers == 1:
            continue
        cells = [stack, f"{workers} / 1"]
        cells += [
            f"{more[key] / one[key]:.2f} x" if key in one and not key.endswith("_cpu") else ""
            for key, _ in present
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--work-us",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[1000.0, 3000.0],
        help="CPU work per request in microseconds, one table per value (default 1000,3000)",
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--many-conns", type=int, default=200)
    parser.add_argument("--many-kib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="medians over the rounds")
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="0.5 s runs, 20 x 32 KiB, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.workers, args.iterations)
        return 0
    if args.serve is None and not sys.platform.startswith("linux"):
        print("scaling.py: worker processes need Linux; nothing measured", file=sys.stderr)
        return 0
    if args.quick:
        args.seconds, args.many_conns, args.many_kib, args.rounds = 0.5, 20, 32, 1
    counts = sorted({1, args.workers})
    results = []
    for level, work_us in enumerate(args.work_us):
        iterations = _calibrate(work_us)
        scenarios = [s for s in args.scenarios.split(",") if s != "many" or level == 0]
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for stack in args.stacks.split(","):
                for workers in counts:
                    runs.setdefault((stack, workers), []).append(
                        _measure(stack, workers, iterations, scenarios, args)
                    )
        rows = []
        for (stack, workers), measured in runs.items():
            row: dict[str, Any] = {"stack": stack, "workers": workers, "work_us": work_us}
            for key, _ in _COLUMNS:
                values = [m[key] for m in measured if key in m]
                if values:
                    row[key] = statistics.median(values)
            rows.append(row)
        print(
            f"\n{args.workers} workers vs 1 on {os.cpu_count()} cores; {work_us:g} us of CPU "
            f"work per request; {args.conns} connections"
            + (f"; many: {args.many_conns} x {args.many_kib} KiB" if "many" in scenarios else "")
            + f"; medians of {args.rounds}"
        )
        print(_table(rows, args.workers))
        results.extend(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
