"""An echo client on utcp: sends COUNT messages of SIZE bytes and checks each echo.

python examples/echo_client.py --host 127.0.0.1 --port 9000 --count 10 --size 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import utcp


async def main(host: str, port: int, count: int, size: int) -> int:
    try:
        reader, writer = await utcp.open_connection(host, port)
    except OSError as exc:  # refused, unreachable, no answer
        print(f"could not connect to {host}:{port}: {exc}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    for i in range(count):
        message = os.urandom(size)
        writer.write(message)
        await writer.drain()
        echoed = await reader.readexactly(size)
        if echoed != message:
            print(f"message {i}: echo differs")
            return 1
    elapsed = time.perf_counter() - start
    stats = writer.get_extra_info("stats")
    writer.close()
    await writer.wait_closed()
    srtt_ms = (stats.srtt_s or 0.0) * 1000
    print(
        f"{count} messages of {size} bytes echoed intact in {elapsed:.3f} s; "
        f"srtt {srtt_ms:.2f} ms, {stats.retransmissions} retransmissions"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args()
    if args.count < 1 or args.size < 1:
        parser.error("--count and --size must be positive")
    raise SystemExit(utcp.run(main(args.host, args.port, args.count, args.size)))
