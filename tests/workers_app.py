"""A utcp service in worker processes, for tests/test_workers.py: ``utcp.serve`` with an echo
handler that first names the process serving the connection (its pid, one line).  It prints
one JSON line per event to stdout: ``{"ready": [addresses]}`` once serving, then
``{"died": index, "pid": pid, "returncode": code}`` for each worker that died.

Usage: python tests/workers_app.py WORKERS [HOST ...]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import utcp


async def greet_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(f"{os.getpid()}\n".encode())
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def _say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    workers = int(sys.argv[1])
    hosts = sys.argv[2:] or ["127.0.0.1"]
    utcp.serve(
        greet_then_echo,
        hosts if len(hosts) > 1 else hosts[0],
        0,
        workers=workers,
        ready=lambda addresses: _say(ready=addresses),
        on_worker_exit=lambda e: _say(died=e.index, pid=e.pid, returncode=e.returncode),
        grace_s=1.0,
    )
    _say(stopped=True)


if __name__ == "__main__":
    main()
