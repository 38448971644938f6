"""The two ends of tests/test_nat.py, each run in its own network namespace.

``server HOST PORT``: a utcp server that reads each connection to its end and answers with the
SHA-256 of what arrived; prints ``ready`` once listening and, on SIGTERM, its stats as JSON.

``client HOST PORT MIB STEP``: sends MIB MiB of seeded bytes, printing ``at N`` after every
STEP MiB and waiting for a line on stdin before going on (the test rebinds the NAT then);
prints ``ok`` if the server's digest matches, and the connection's stats as JSON.

``tcp-server HOST PORT`` and ``tcp-client HOST PORT MIB STEP``: the same over kernel TCP, for
the two ends of a ``utcp tunnel`` across the NAT.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import sys

import utcp


async def _digest_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    while data := await reader.read(1 << 16):
        digest.update(data)
    writer.write(digest.digest())
    await writer.drain()
    writer.close()


async def serve(host: str, port: int, *, tcp: bool = False) -> None:
    start = asyncio.start_server if tcp else utcp.start_server
    server = await start(_digest_back, host, port)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    stats = server.stats
    print(
        json.dumps(
            {k: v for k, v in stats.items() if k != "dropped"} | {"dropped": stats["dropped"]}
        ),
        flush=True,
    )
    server.close()


async def send(host: str, port: int, mib: int, step: int, *, tcp: bool = False) -> None:
    opener = asyncio.open_connection if tcp else utcp.open_connection
    reader, writer = await opener(host, port)
    rng = random.Random(64)
    digest = hashlib.sha256()
    loop = asyncio.get_running_loop()
    for i in range(mib):
        chunk = rng.randbytes(1 << 20)
        digest.update(chunk)
        writer.write(chunk)
        await writer.drain()
        if (i + 1) % step == 0 and i + 1 < mib:
            print(f"at {i + 1}", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
    writer.write_eof()
    answer = await reader.read()
    print("ok" if answer == digest.digest() else f"digest differs: {answer.hex()}", flush=True)
    stats = writer.get_extra_info("stats")
    if stats is not None:
        print(json.dumps({"retransmissions": stats.retransmissions, "state": stats.state.value}))
    writer.close()
    await writer.wait_closed()


def main() -> None:
    role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tcp = role.startswith("tcp-")
    if role.endswith("server"):
        utcp.run(serve(host, port, tcp=tcp))
    else:
        utcp.run(send(host, port, int(sys.argv[4]), int(sys.argv[5]), tcp=tcp))


if __name__ == "__main__":
    main()
