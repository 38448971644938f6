"""User-space instructions per request/response round trip, counted by callgrind.

Timing a round trip on a shared machine spreads 15% or more from run to run; an instruction
count does not.  Both ends of a 64-byte echo run in one process under ``valgrind
--tool=callgrind``, once for ``--count`` round trips and once for twice as many; the
difference divided by ``--count`` is what one round trip costs both ends in user space
(start-up and teardown cancel out).  Kernel time is not counted: compare peers of one run,
and read it beside ``bench.py``'s rr row.

    .venv/bin/python benchmarks/rr_instructions.py --peers tcp,utcp-fast --loops asyncio,uvloop

``UTCP_PURE=1`` in the environment counts the pure-Python core instead of the compiled one.

Under callgrind a round trip takes fifty times as long, and the instruction count says nothing
of how well the code runs on the processor (its caches, its branches).  ``--timed N`` runs the
same echo at full speed instead, no valgrind: after a warm-up, N round trips in one process,
their rate and the CPU time per round trip (user and system).  Interleave the builds being
compared and take medians: a run spreads a few percent.

    .venv/bin/python benchmarks/rr_instructions.py --peers utcp-fast --loops uvloop --timed 20000

``--congestion NAME`` runs utcp with that controller rather than ``Config()``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import time

HOST = "127.0.0.1"
MESSAGE = b"x" * 64
PEERS = ("tcp", "utcp-fast", "utcp-portable")
LOOPS = ("asyncio", "uvloop")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
    finally:
        writer.close()


async def _round_trips(peer: str, count: int, warmup: int = 0, congestion: str = "") -> None:
    if peer == "tcp":
        server = await asyncio.start_server(_echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
    else:
        import utcp

        extra = {"congestion_control": congestion} if congestion else {}
        config = utcp.Config(io_path=peer.removeprefix("utcp-"), **extra)
        server = await utcp.start_server(_echo, HOST, 0, config=config)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await utcp.open_connection(HOST, port, config=config)
    for _ in range(warmup):
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))
    start = time.perf_counter()
    used = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(count):
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))
    if warmup:
        elapsed = time.perf_counter() - start
        end = resource.getrusage(resource.RUSAGE_SELF)
        user = (end.ru_utime - used.ru_utime) / count * 1e6
        system = (end.ru_stime - used.ru_stime) / count * 1e6
        print(f"{count / elapsed:>10,.0f} {user:>8.1f} {system:>8.1f} {user + system:>8.1f}")
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


def child(peer: str, loop: str, count: int, warmup: int = 0, congestion: str = "") -> None:
    """The measured process: ``count`` round trips after the set-up (and ``warmup`` more,
    when timed: then it prints what the ``count`` cost)."""
    work = _round_trips(peer, count, warmup, congestion)
    if loop == "uvloop":
        import uvloop

        uvloop.run(work)
    else:
        asyncio.run(work)


def instructions(peer: str, loop: str, count: int, congestion: str = "") -> int:
    """Instructions callgrind counted in one child process."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            peer,
            loop,
            str(count),
            *(("--congestion", congestion) if congestion else ()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    match = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--count", type=int, default=200, help="round trips (and twice that)")
    parser.add_argument(
        "--timed",
        type=int,
        metavar="N",
        help="time N round trips at full speed (no valgrind) rather than count instructions",
    )
    parser.add_argument("--congestion", default="", help="utcp's controller (Config's default)")
    parser.add_argument(
        "--child", nargs=3, metavar=("PEER", "LOOP", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), congestion=args.congestion)
        return 0
    if args.timed:
        print(f"{'peer':<15} {'loop':<8} {'RT/s':>10} {'user us':>8} {'sys us':>8} {'CPU us':>8}")
        for loop in args.loops.split(","):
            for peer in args.peers.split(","):
                print(f"{peer:<15} {loop:<8}", end="", flush=True)
                child(peer, loop, args.timed, warmup=1000, congestion=args.congestion)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    import utcp._build

    build = (
        "pure" if os.environ.get("UTCP_PURE") == "1" or not utcp._build.compiled() else "compiled"
    )
    print(f"utcp core: {build}; instructions per round trip, both ends, user space")
    print(f"{'peer':<15} {'loop':<8} {'per round trip':>15}")
    for loop in args.loops.split(","):
        for peer in args.peers.split(","):
            one = instructions(peer, loop, args.count, args.congestion)
            two = instructions(peer, loop, 2 * args.count, args.congestion)
            print(f"{peer:<15} {loop:<8} {(two - one) / args.count:>15,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
