"""One side of one benchmark run, in a process of its own: ``server``, ``client`` or ``relay``.

The harness (bench.py) starts a server and reads its ``READY <port>`` line, starts the client
against that port (or a relay's), and closes the server's stdin once the client is done.  Each
process prints one ``RESULT <json>`` line, including the CPU seconds it spent (user + system,
``time.process_time``) from the start of its work to the end and the settings its peer's
variant applied (for utcp, the ``Config`` fields it set: both sides build the same ``Config``).
A TLS peer's server and client load the run's certificates from ``--tls-dir``; the client's
result says what its connection used (utcp's I/O path, the TLS version and cipher).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import BY_NAME, PeerSpec

HOST = "127.0.0.1"


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads); finer-grained than os.times' ticks."""
    return time.process_time()


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process from /proc/self/status, in KiB."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


async def stdin_closed() -> None:
    """Return once the parent closes our stdin (a thread blocks on it; any loop works)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def release() -> None:
        if not done.done():
            done.set_result(None)

    def wait() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(release)

    threading.Thread(target=wait, daemon=True).start()
    await done


async def server_main(
    spec: PeerSpec, scenario: str, params: dict[str, Any], tls_dir: Path | None
) -> dict[str, Any]:
    from _scenarios import server_handler, udp_serve

    mem0 = memory_kib()
    state: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if spec.kind == "udp":
        sink, port = await udp_serve(scenario, HOST)
    else:
        from _adapters import adapter_for

        adapter = adapter_for(spec.kind, spec.variant, tls_dir)
        port = await adapter.serve(server_handler(scenario, params, state, adapter), HOST)
        settings = adapter.settings()
    cpu0 = cpu_seconds()
    print(f"READY {port}", flush=True)
    await stdin_closed()
    cpu = cpu_seconds() - cpu0
    if spec.kind == "udp":
        state = sink.result()
    mem = memory_kib()
    state.update(
        settings=settings,
        cpu_s=cpu,
        rss_start_kib=mem0.get("VmRSS"),
        rss_peak_kib=mem.get("VmHWM"),
    )
    return state


async def client_main(
    spec: PeerSpec, scenario: str, params: dict[str, Any], port: int, tls_dir: Path | None
) -> dict[str, Any]:
    from _scenarios import client, udp_client

    settings: dict[str, Any] = {}
    if spec.kind == "udp":
        cpu0 = cpu_seconds()
        result = await udp_client(scenario, HOST, port, params)
    else:
        from _adapters import adapter_for

        adapter = adapter_for(spec.kind, spec.variant, tls_dir)
        settings = adapter.settings()
        cpu0 = cpu_seconds()
        result = await client(scenario, adapter, HOST, port, params)
        result.update(adapter.observed)
    result["cpu_s"] = cpu_seconds() - cpu0
    result["settings"] = settings
    return result


async def relay_main(to_port: int, loss: float, delay_s: float, seed: int) -> dict[str, Any]:
    from utcp.tools.netem import Impairment, Relay

    impairment = Impairment(loss=loss, delay_s=delay_s)
    relay = await Relay.start((HOST, 0), (HOST, to_port), up=impairment, down=impairment, seed=seed)
    cpu0 = cpu_seconds()
    print(f"READY {relay.address[1]}", flush=True)
    await stdin_closed()
    cpu = cpu_seconds() - cpu0
    counters = dataclasses.asdict(relay.counters)  # before close() counts in-flight as dropped
    relay.close()
    return {"cpu_s": cpu, "seed": seed, "counters": counters}


def run(loop: str, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = asyncio.run
    if loop == "uvloop":
        import uvloop

        runner = uvloop.run
    return runner(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("server", "client", "relay"))
    parser.add_argument("--peer", default="utcp")
    parser.add_argument("--scenario", default="bulk")
    parser.add_argument("--params", default="{}", help="the scenario's sizes, as JSON")
    parser.add_argument("--port", type=int, default=0, help="where the client connects")
    parser.add_argument("--loop", default="asyncio", help="the relay's loop")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, each way")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--tls-dir", default=None, help="the run's certificates (TLS peers)")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    params = json.loads(args.params)
    spec = BY_NAME[args.peer]
    if spec.tls and args.tls_dir is None:
        parser.error(f"{spec.name} needs --tls-dir")
    tls_dir = Path(args.tls_dir) if spec.tls else None
    started = time.perf_counter()

    async def role() -> dict[str, Any]:
        if args.role == "server":
            result = await server_main(spec, args.scenario, params, tls_dir)
        elif args.role == "client":
            result = await client_main(spec, args.scenario, params, args.port, tls_dir)
        else:
            result = await relay_main(args.port, args.loss, args.delay, args.seed)
        result["wall_s"] = time.perf_counter() - started
        print("RESULT " + json.dumps(result), flush=True)
        # Leave at once: a library's leftover tasks or threads must not hold up (or clutter
        # stderr after) a result that is already reported.
        os._exit(0)

    run(args.loop if args.role == "relay" else spec.loop, role())


if __name__ == "__main__":
    main()
