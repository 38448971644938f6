"""A bulk receiver's CPU and page faults: one transfer through utcp's asyncio streams.

The server (this process) reads with ``StreamReader.read(64 KiB)``, as ``bench.py``'s bulk
does; a client process writes ``--mib`` MiB in 1 MiB writes.  Printed: the receiver's goodput
and, over its reading, its user and system CPU and minor page faults (``getrusage``).  Page
faults are what a receive path that allocates fresh memory for each batch pays for, and a
figure far steadier than MB/s on a noisy machine (``benchmarks/HISTORY.md``, 2026-12-06
night).  ``--config`` passes ``Config`` fields as JSON.

    .venv/bin/python benchmarks/receiver_faults.py --mib 512 --runs 3
    .venv/bin/python benchmarks/receiver_faults.py --config '{"recv_buffer_bytes": 1048576}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from typing import Any

import utcp

READ_BYTES = 64 * 1024
WRITE_BYTES = 1 << 20


async def _serve(mib: int, config: utcp.Config) -> dict[str, Any]:
    want = mib * WRITE_BYTES
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        while got < want:
            data = await reader.read(READ_BYTES)
            if not data:
                break
            got += len(data)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        writer.write(b"k")
        await writer.drain()
        while await reader.read(READ_BYTES):
            pass
        writer.close()
        done.set_result(
            {
                "bytes": got,
                "mb_per_s": got / seconds / 1e6,
                "user_s": after.ru_utime - before.ru_utime,
                "sys_s": after.ru_stime - before.ru_stime,
                "minor_faults": after.ru_minflt - before.ru_minflt,
            }
        )

    server = await utcp.start_server(handler, "127.0.0.1", 0, config=config)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), "--mib", str(mib)
    )
    result = await done
    await client.wait()
    server.close()
    await server.wait_closed()
    return result


async def _send(port: int, mib: int) -> None:
    reader, writer = await utcp.open_connection("127.0.0.1", port)
    block = bytes(WRITE_BYTES)
    for _ in range(mib):
        writer.write(block)
        await writer.drain()
    await reader.readexactly(1)
    writer.close()
    await writer.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB to send (default 512)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--config", default="{}", help="Config fields as JSON")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        asyncio.run(_send(args.client, args.mib))
        return 0
    config = utcp.Config(**json.loads(args.config)).validate()
    if args.once:
        r = asyncio.run(_serve(args.mib, config))
        print(
            f"{r['mb_per_s']:7.0f} MB/s  receiver cpu user {r['user_s']:.2f} s"
            f" sys {r['sys_s']:.2f} s  minor faults {r['minor_faults']:,}"
        )
        return 0
    # Each run in a fresh process: a second transfer in the same one finds the memory the
    # first faulted in still mapped, and would show almost none.
    for _ in range(args.runs):
        once = [sys.executable, __file__, "--once", "--mib", str(args.mib), "--config", args.config]
        subprocess.run(once, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
