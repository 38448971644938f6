"""Where the time of one benchmark run goes: profiles, per-layer timers and syscall counts.

Runs one scenario of ``bench.py`` (``bulk``, ``rr`` or ``lossy``) the same way, a server and a
client process pinned to CPUs 0 and 1 (for ``lossy`` a relay between them), and measures each
side with one of these instruments:

``plain``
    wall and CPU (user, system) of the work span, datagram counts and the connection's stats.
``layers``
    plus exclusive wall time, per call, in the layers of the datagram path: the codec
    (``decode``), the core's receive (``Connection.receive_packet``) and send
    (``datagrams_to_send``: building, encoding, CRC), the datagram transport's ``sendto``
    (with the syscall), the endpoint and transport glue, and asyncio's stream protocol.  What
    no timer covers is the loop itself: readiness, recv syscall, callbacks, task steps.  Each
    wrapped call costs about 0.2 us of timer overhead, reported as ``timer_overhead_us``.
``cprofile`` / ``pyinstrument``
    a profile of the work span, saved under ``--out``; cProfile's totals are also grouped by
    layer (built-ins are charged to the layer of their caller).

``--perf-stat`` wraps each side in ``perf stat`` counting syscalls (sendto, recvfrom, recvmsg,
epoll_wait, ...): epoll waits are loop iterations.  ``--perf-record`` samples each side with
``perf record`` and reports the split by shared object (kernel, interpreter, uvloop, zlib).

    .venv/bin/python benchmarks/profile.py bulk --loop uvloop --mode layers --perf-stat
    .venv/bin/python benchmarks/profile.py rr --loop asyncio --mode cprofile --seconds 2
    .venv/bin/python benchmarks/profile.py lossy --mib 4 --seed 1001
    .venv/bin/python benchmarks/profile.py rr --peer udp --perf-stat   # the raw-UDP baseline
    .venv/bin/python benchmarks/profile.py bulk --variant portable     # as bench's utcp-portable

Every side prints one ``RESULT`` JSON line; the parent prints a summary and, with ``--json``,
the whole record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HOST = "127.0.0.1"
MIB = 1 << 20
SYSCALLS = (
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "epoll_wait",
    "epoll_pwait",
    "write",
    "read",
    "futex",
)
PERF_EVENTS = ",".join(
    ["task-clock", "context-switches", "raw_syscalls:sys_enter"]
    + [f"syscalls:sys_enter_{name}" for name in SYSCALLS]
)


# ------------------------------------------------------------------------------ layer timers


class LayerTimers:
    """Exclusive wall time per layer: a wrapped call's time minus that of wrapped calls in it."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.nested: dict[str, int] = defaultdict(int)  # wrapped calls made from each layer
        self._stack: list[list[Any]] = []

    def wrap(self, layer: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        totals, calls, nested = self.totals, self.calls, self.nested
        stack, clock = self._stack, time.perf_counter_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            frame: list[Any] = [0, layer]
            stack.append(frame)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - t0
                stack.pop()
                totals[layer] += elapsed - frame[0]
                calls[layer] += 1
                if stack:
                    stack[-1][0] += elapsed
                    nested[stack[-1][1]] += 1  # this timer's overhead landed in its caller
                else:
                    nested[""] += 1  # ... or outside every timer

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()
        self.nested.clear()

    def overhead_ns(self) -> float:
        """What one wrapped call adds, measured on a no-op."""

        def noop() -> None:
            return None

        timed = LayerTimers().wrap("x", noop)
        n = 200_000
        t0 = time.perf_counter_ns()
        for _ in range(n):
            noop()
        t1 = time.perf_counter_ns()
        for _ in range(n):
            timed()
        t2 = time.perf_counter_ns()
        return ((t2 - t1) - (t1 - t0)) / n


def install_layer_timers(timers: LayerTimers) -> None:
    import asyncio.streams

    from utcp import connection
    from utcp.asyncio import endpoint, transport

    patches = [
        (endpoint, "decode", "codec: decode"),
        (connection.Connection, "receive_packet", "core: receive_packet"),
        (connection.Connection, "datagrams_to_send", "core: datagrams_to_send"),
        (connection.Connection, "send", "core: send (write)"),
        (connection.Connection, "handle_timer", "core: handle_timer"),
        (endpoint.Endpoint, "_send", "transport sendto"),
        (endpoint.Endpoint, "datagram_received", "glue: endpoint"),
        (endpoint.Endpoint, "_scheduled_flush", "glue: endpoint"),
        (endpoint.Endpoint, "_on_timer", "glue: endpoint"),
        (transport.UtcpTransport, "write", "glue: transport write"),
        (asyncio.streams.StreamReaderProtocol, "data_received", "asyncio streams: feed"),
    ]
    for owner, name, layer in patches:
        setattr(owner, name, timers.wrap(layer, getattr(owner, name)))


class Capture:
    """Every utcp endpoint and connection this process makes, for their counters."""

    endpoints: ClassVar[list[Any]] = []
    connections: ClassVar[list[Any]] = []

    @classmethod
    def install(cls) -> None:
        from utcp.asyncio import endpoint, interfaces

        endpoint_init = endpoint.Endpoint.__init__
        handle_init = interfaces.ConnectionHandle.__init__

        def new_endpoint(self: Any, *args: Any, **kwargs: Any) -> None:
            endpoint_init(self, *args, **kwargs)
            cls.endpoints.append(self)

        def new_handle(self: Any, conn: Any, addr: Any) -> None:
            handle_init(self, conn, addr)
            cls.connections.append(conn)

        endpoint.Endpoint.__init__ = new_endpoint  # type: ignore[method-assign]
        interfaces.ConnectionHandle.__init__ = new_handle  # type: ignore[method-assign]

    @classmethod
    def report(cls) -> dict[str, Any]:
        from dataclasses import asdict

        sent = sum(e.stats.datagrams_sent for e in cls.endpoints)
        received = sum(e.stats.datagrams_received for e in cls.endpoints)
        conns = []
        for conn in cls.connections:
            stats = asdict(conn.stats)
            stats["state"] = str(stats["state"].value)
            conns.append(stats)
        return {"datagrams_sent": sent, "datagrams_received": received, "connections": conns}


# ------------------------------------------------------------------------------ cProfile layers


def import_cprofile() -> Any:
    """``cProfile`` imports the standard library's ``profile``, which this file's name shadows
    while its directory leads ``sys.path``."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.modules.pop("profile", None)
    try:
        import cProfile

        return cProfile
    finally:
        sys.path[:] = saved


def layer_of(filename: str, name: str) -> str | None:
    """The layer of a profiled function; None for a built-in charged to its caller."""
    if filename == "~":
        if "zlib.crc32" in name:
            return "core: crc32"
        if "sendto" in name or "'send' of" in name:
            return "transport sendto"
        if "recvfrom" in name or "recvmsg" in name:
            return "loop: recv syscall"
        if "poll' of 'select.epoll" in name:
            return "loop: epoll wait"
        if "uvloop" in name and ("run_until_complete" in name or "run_forever" in name):
            return "uvloop C (loop, recv, epoll)"
        return None
    if (filename.endswith("/utcp/asyncio/endpoint.py") and name == "_send") or (
        filename.endswith("selector_events.py") and name == "sendto"
    ):
        return "transport sendto"  # uvloop's sendto is invisible to cProfile: charged here
    if "/utcp/asyncio/" in filename:
        return "glue: utcp.asyncio"
    if "/utcp/packet.py" in filename:
        return "core: codec"
    if "/utcp/" in filename:
        return "core: connection etc."
    if "asyncio/streams.py" in filename:
        return "asyncio streams"
    if "/asyncio/" in filename or filename.endswith("selectors.py"):
        return "loop: asyncio (python)"
    if "_scenarios.py" in filename or "_adapters.py" in filename:
        return "benchmark app"
    return "other"


def cprofile_layers(stats: Any) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Seconds per layer (own time) and the top functions, from a ``pstats.Stats``."""
    raw = stats.stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    layers: dict[str, float] = defaultdict(float)

    def resolve(key: tuple[str, int, str], depth: int = 0) -> str:
        layer = layer_of(key[0], key[2])
        if layer is not None:
            return layer
        if depth > 4:
            return "other"
        callers = raw.get(key, (0, 0, 0, 0, {}))[4]
        if not callers:
            return "other"
        best = max(callers.items(), key=lambda kv: kv[1][2] if isinstance(kv[1], tuple) else 0)
        return resolve(best[0], depth + 1)

    for key, (_cc, _nc, tt, _ct, callers) in raw.items():
        layer = layer_of(key[0], key[2])
        if layer is not None or not callers:
            layers[layer or "other"] += tt
            continue
        # A built-in: split its own time over its callers' layers.
        for caller, value in callers.items():
            share = value[2] if isinstance(value, tuple) else 0.0
            layers[resolve(caller)] += share
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    rows = [
        {
            "function": f"{Path(k[0]).name}:{k[1]}({k[2]})" if k[0] != "~" else k[2],
            "calls": v[1],
            "tottime_s": round(v[2], 4),
            "cumtime_s": round(v[3], 4),
        }
        for k, v in top
    ]
    return dict(layers), rows


# ------------------------------------------------------------------------------ one side


class Meter:
    """Wall, CPU and the chosen instrument over the work span of one side."""

    def __init__(self, mode: str, out: Path, role: str, timers: LayerTimers | None) -> None:
        self.mode, self.out, self.role, self.timers = mode, out, role, timers
        self.profiler: Any = None

    def start(self) -> None:
        if self.timers is not None:
            self.timers.reset()
        if self.mode == "cprofile":
            self.profiler = import_cprofile().Profile()
        elif self.mode == "pyinstrument":
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.0002, async_mode="disabled")
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()
        if self.profiler is not None:
            self.profiler.enable() if self.mode == "cprofile" else self.profiler.start()

    def stop(self) -> dict[str, Any]:
        if self.mode == "cprofile":
            self.profiler.disable()
        elif self.mode == "pyinstrument":
            self.profiler.stop()
        wall = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        found: dict[str, Any] = {
            "wall_s": wall,
            "user_s": ru.ru_utime - self.ru0.ru_utime,
            "sys_s": ru.ru_stime - self.ru0.ru_stime,
            "voluntary_switches": ru.ru_nvcsw - self.ru0.ru_nvcsw,
        }
        if self.timers is not None:
            found["layers_ns"] = dict(self.timers.totals)
            found["layer_calls"] = dict(self.timers.calls)
            found["layer_nested_calls"] = dict(self.timers.nested)
            found["timer_overhead_ns"] = self.timers.overhead_ns()
        if self.mode == "cprofile":
            import pstats

            path = self.out / f"{self.role}.prof"
            self.profiler.dump_stats(str(path))
            found["layers_s"], found["top"] = cprofile_layers(pstats.Stats(str(path)))
            found["profile"] = str(path)
        elif self.mode == "pyinstrument":
            path = self.out / f"{self.role}.pyinstrument.txt"
            path.write_text(self.profiler.output_text(unicode=False, color=False, show_all=False))
            found["profile"] = str(path)
        return found


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wait() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=wait, daemon=True).start()
    await done


async def server_role(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    from _adapters import adapter_for
    from _scenarios import server_handler, udp_serve

    params = json.loads(args.params)
    state: dict[str, Any] = {}
    if args.peer == "udp":
        sink, port = await udp_serve(args.scenario, HOST)
    else:
        adapter = adapter_for(args.peer, args.variant)
        port = await adapter.serve(server_handler(args.scenario, params, state, adapter), HOST)
    meter.start()
    print(f"READY {port}", flush=True)
    await stdin_closed()
    found = meter.stop()
    if args.peer == "udp":
        state = sink.result()
    found["scenario"] = {k: v for k, v in state.items() if not isinstance(v, list)}
    return found


async def client_role(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    from _adapters import adapter_for
    from _scenarios import client, udp_client

    params = json.loads(args.params)
    scenario = "bulk" if args.scenario == "lossy" else args.scenario
    adapter = None if args.peer == "udp" else adapter_for(args.peer, args.variant)
    if args.wait_go:  # the parent attaches perf record first
        print(f"ARMED {os.getpid()}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    meter.start()
    if adapter is None:
        result = await udp_client(scenario, HOST, args.port, params)
    else:
        result = await client(scenario, adapter, HOST, args.port, params)
    found = meter.stop()
    found["scenario"] = result
    return found


def role_main(args: argparse.Namespace) -> None:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timers = None
    if args.peer == "utcp":
        import utcp  # noqa: F401 -- loaded before the work span

        Capture.install()
        if args.mode == "layers":
            timers = LayerTimers()
            install_layer_timers(timers)
    meter = Meter(args.mode, out, args.role, timers)

    async def work() -> None:
        coro = server_role(args, meter) if args.role == "server" else client_role(args, meter)
        found = await coro
        if args.peer == "utcp":
            found["utcp"] = Capture.report()
        print("RESULT " + json.dumps(found, default=str), flush=True)
        os._exit(0)

    if args.loop == "uvloop":
        import uvloop

        uvloop.run(work())
    else:
        asyncio.run(work())


# ------------------------------------------------------------------------------ the parent


def wrap(cmd: list[str], args: argparse.Namespace, role: str) -> list[str]:
    if args.perf_stat:
        out = Path(args.out) / f"{role}.perfstat"
        return ["perf", "stat", "-x,", "-o", str(out), "-e", PERF_EVENTS, *cmd]
    return cmd


def attach_perf(pid: int, args: argparse.Namespace, role: str) -> subprocess.Popen[bytes] | None:
    """``perf record`` of a side that has finished starting up (imports are not sampled)."""
    if not args.perf_record:
        return None
    out = str(Path(args.out) / f"{role}.perf.data")
    cmd = ["perf", "record", "-q", "-F", "1999", "-p", str(pid), "-o", out]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)


def read_result(proc: subprocess.Popen[str], tag: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(tag + " "):
            return line[len(tag) + 1 :].strip()
    raise RuntimeError(f"a side exited before {tag}")


def perf_stat_counts(path: Path) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 3 or line.startswith("#"):
            continue
        with contextlib.suppress(ValueError):
            name = fields[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:", "")
            counts[name] = float(fields[0])
    return counts


def perf_dso_split(path: Path) -> dict[str, float]:
    text = subprocess.run(
        ["perf", "report", "-i", str(path), "--sort", "dso", "--stdio", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    split: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
        if match:
            split[match.group(2).strip()] = float(match.group(1))
    return split


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.scenario == "rr":
        params = {"seconds": args.seconds}
    else:
        params = {"bytes": int(args.mib * MIB), "cap_s": 60.0}
    base = [sys.executable, str(Path(__file__).resolve()), args.scenario, "--role"]
    common = [
        *("--peer", args.peer, "--variant", args.variant, "--loop", args.loop),
        *("--mode", args.mode),
        *("--params", json.dumps(params), "--out", str(out)),
    ]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = len(cpus) > 1
    server = subprocess.Popen(
        wrap([*base, "server", *common, *(["--cpu", str(cpus[0])] if pin else [])], args, "server"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(read_result(server, "READY"))
    perfs = [attach_perf(server.pid, args, "server")]
    relay = None
    if args.scenario == "lossy":
        relay = subprocess.Popen(
            [
                *(sys.executable, str(HERE / "_worker.py"), "relay", "--port", str(port)),
                *("--loop", "uvloop", "--seed", str(args.seed)),
                *("--loss", str(args.loss), "--delay", str(args.delay)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(read_result(relay, "READY"))
    client = subprocess.Popen(
        wrap(
            [*base, "client", *common, "--port", str(port)]
            + (["--cpu", str(cpus[1])] if pin else []),
            args,
            "client",
        )
        + (["--wait-go"] if args.perf_record else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    if args.perf_record:
        perfs.append(attach_perf(int(read_result(client, "ARMED")), args, "client"))
        time.sleep(0.5)
        client.stdin.write("go\n")
        client.stdin.flush()
    record: dict[str, Any] = {"settings": vars(args), "params": params}
    record["client"] = json.loads(read_result(client, "RESULT"))
    client.wait()
    assert server.stdin is not None
    server.stdin.close()
    record["server"] = json.loads(read_result(server, "RESULT"))
    server.wait()
    if relay is not None:
        assert relay.stdin is not None
        relay.stdin.close()
        record["relay"] = json.loads(read_result(relay, "RESULT"))
        relay.wait()
    for perf in perfs:
        if perf is not None:
            perf.wait(timeout=30)
    for role in ("server", "client"):
        if args.perf_stat:
            record[role]["syscalls"] = perf_stat_counts(out / f"{role}.perfstat")
        if args.perf_record:
            record[role]["dso_pct"] = perf_dso_split(out / f"{role}.perf.data")
    return record


def summary(record: dict[str, Any]) -> str:
    args = record["settings"]
    peer = args["peer"]
    if peer == "utcp" and args.get("variant", "default") != "default":
        peer += f" ({args['variant']})"
    lines = [f"{args['scenario']} {peer} on {args['loop']}, mode {args['mode']}"]
    cli, srv = record["client"], record["server"]
    scen = srv["scenario"]
    if args["scenario"] == "rr":
        units = cli["scenario"]["count"]
        lines.append(
            f"  {units} round trips in {cli['scenario']['seconds']:.2f} s: "
            f"{units / cli['scenario']['seconds']:,.0f}/s, p50 {cli['scenario']['p50_us']:.0f} us, "
            f"p99 {cli['scenario']['p99_us']:.0f} us"
        )
        unit = "round trip"
    else:
        got = scen.get("bytes", 0)
        span = (scen.get("last_s") or 0) - (scen.get("first_s") or 0)
        units = math.ceil(got / 1428) if args["peer"] == "utcp" else scen.get("datagrams", 1)
        lines.append(f"  {got / 1e6:.1f} MB in {span:.3f} s: {got / span / 1e6:.2f} MB/s")
        unit = "data segment"
        record["mb"] = got / 1e6
    for role, side in (("server", srv), ("client", cli)):
        cpu = side["user_s"] + side["sys_s"]
        per = 1e6 / max(units, 1)
        line = (
            f"  {role}: wall {side['wall_s']:.3f} s, cpu {cpu:.3f} s "
            f"(user {side['user_s']:.3f}, sys {side['sys_s']:.3f}); per {unit}: "
            f"cpu {cpu * per:.1f} us (sys {side['sys_s'] * per:.1f}), "
            f"idle {max(0.0, side['wall_s'] - cpu) * per:.1f} us"
        )
        lines.append(line)
        if "utcp" in side:
            u = side["utcp"]
            sent, received = u["datagrams_sent"], u["datagrams_received"]
            lines.append(
                f"    datagrams sent {sent}, received {received} "
                f"({sent / max(units, 1):.2f} / {received / max(units, 1):.2f} per {unit})"
            )
            for c in u["connections"]:
                lines.append(
                    "    conn: "
                    + ", ".join(
                        f"{k}={c[k]}"
                        for k in (
                            "segments_sent",
                            "retransmissions",
                            "fast_retransmits",
                            "timeouts",
                            "tail_loss_probes",
                            "duplicate_acks",
                            "srtt_s",
                            "cwnd_bytes",
                        )
                    )
                )
        if "syscalls" in side:
            sc = side["syscalls"]
            shown = {k: v for k, v in sc.items() if v and k not in ("task-clock",)}
            lines.append(
                "    syscalls per "
                + unit
                + ": "
                + ", ".join(f"{k} {v / max(units, 1):.3f}" for k, v in shown.items())
            )
        if "layers_ns" in side:
            # Each wrapped call's timer overhead lands in its caller's layer (or outside all):
            # take it out there, and out of the CPU total.
            overhead = side["timer_overhead_ns"]
            nested = side["layer_nested_calls"]
            calls_total = sum(side["layer_calls"].values())
            busy = cpu * 1e9 - calls_total * overhead
            lines.append(
                f"    layers, us per {unit}, less timer overhead ({overhead:.0f} ns per call): "
                f"cpu {busy / units / 1e3:.2f}"
            )
            covered = 0.0
            for name, ns in sorted(side["layers_ns"].items(), key=lambda kv: -kv[1]):
                calls = side["layer_calls"][name]
                net = ns - nested.get(name, 0) * overhead
                covered += net
                lines.append(
                    f"      {name:28s} {net / units / 1e3:7.2f}  ({calls / units:.2f} calls, "
                    f"{net / max(busy, 1):.0%} of cpu)"
                )
            rest = busy - covered
            lines.append(
                f"      {'not covered (loop etc.)':28s} {rest / units / 1e3:7.2f}  "
                f"({rest / max(busy, 1):.0%} of cpu)"
            )
        if "layers_s" in side:
            total = sum(side["layers_s"].values())
            lines.append(f"    cProfile layers (own time, {total:.2f} s profiled):")
            for name, s in sorted(side["layers_s"].items(), key=lambda kv: -kv[1]):
                lines.append(f"      {name:32s} {s / total:6.1%}  {s / units * 1e6:7.2f} us")
            lines.append("    top functions (tottime):")
            for row in side["top"][:14]:
                lines.append(
                    f"      {row['tottime_s'] / total:6.1%} {row['calls']:>9} {row['function']}"
                )
        if "dso_pct" in side:
            lines.append(
                "    perf by object: "
                + ", ".join(f"{k} {v:.1f}%" for k, v in list(side["dso_pct"].items())[:6])
            )
    if "relay" in record:
        lines.append(f"  relay: {record['relay']['counters']}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scenario", choices=("bulk", "rr", "lossy"))
    p.add_argument("--peer", default="utcp", choices=("utcp", "udp", "tcp"))
    p.add_argument(
        "--variant",
        default="default",
        choices=("default", "portable", "fast", "pmtud"),
        help="utcp's Config, as bench.py's utcp peers: default (Config()), portable or fast "
        "(that I/O path, PMTU discovery off) or pmtud (fast path, PMTU discovery on)",
    )
    p.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    p.add_argument(
        "--mode", default="plain", choices=("plain", "layers", "cprofile", "pyinstrument")
    )
    p.add_argument("--mib", type=float, default=32.0, help="bulk/lossy size (default 32)")
    p.add_argument("--seconds", type=float, default=2.0, help="rr length (default 2)")
    p.add_argument("--loss", type=float, default=0.01, help="lossy: loss each way")
    p.add_argument("--delay", type=float, default=0.010, help="lossy: seconds each way")
    p.add_argument("--seed", type=int, default=1001, help="lossy: the relay's seed")
    p.add_argument("--perf-stat", action="store_true", help="count syscalls with perf stat")
    p.add_argument("--perf-record", action="store_true", help="sample with perf record")
    p.add_argument("--out", default="/tmp/utcp-profile", help="profiles and perf files")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON too")
    # The sides' own arguments.
    p.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--wait-go", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role is not None:
        role_main(args)
        return
    record = run(args)
    print(summary(record))
    if args.json:
        print(json.dumps(record, default=str))


if __name__ == "__main__":
    main()
