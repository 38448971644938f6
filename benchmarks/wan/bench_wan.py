"""utcp, kernel TCP, aioquic and aiokcp across the same emulated WAN path.

Two network namespaces (``utcpwan-<pid>-a`` and ``-b``, addresses 10.77.0.1 and 10.77.0.2) are
joined by ``linkem`` (linkem.c, built with gcc into build/), which holds a TUN device in each and
forwards real IP packets between them with a one-way delay, a rate limit behind a tail-drop
queue, seeded random loss and optional FIFO jitter, per direction.  Every run starts a fresh
emulator (seeded ``--seed`` + run), a receiver in namespace B and a sender in namespace A; the
receiver measures goodput from its first byte to its last.  The kcp-latency scenario instead runs
KCP's own latency test (an 8-byte message every 20 ms, echoed; each round trip measured) over a
path with KCP's test's loss and jitter.  Medians over ``--runs``.

Needs root and /dev/net/tun; without them it prints why and exits 0.
Run: ``make bench-wan`` or ``.venv/bin/python benchmarks/wan/bench_wan.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(HERE))  # _wan_latency

import _wan_latency as latency  # noqa: E402 -- found through the line above

WORKER = HERE / "_wan_worker.py"
LINKEM_SRC = HERE / "linkem.c"
LINKEM_BIN = ROOT / "build" / "linkem"
NS_PREFIX = "utcpwan-"
ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
DEV = "wan0"
MTU = 1500
TUN_TXQUEUELEN = 10000
MIB = 1 << 20
SKIP_MESSAGE = "bench-wan skipped: needs root and /dev/net/tun"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------------ paths and peers


@dataclass(frozen=True)
class Link:
    """One emulated path, the same each way: rate, one-way delay, queue, loss, jitter."""

    rate_mbps: float  # 0: no rate limit
    delay_ms: float  # one way
    queue: int  # packets, tail drop
    loss: float  # each way, 0..1
    jitter_ms: float = 0.0

    def describe(self) -> str:
        if self.jitter_ms:
            high = self.delay_ms + self.jitter_ms
            delay = f"{self.delay_ms:g}-{high:g} ms each way (uniform, FIFO)"
        else:
            delay = f"{2 * self.delay_ms:g} ms RTT"
        if self.rate_mbps:
            text = f"{self.rate_mbps:g} Mbit/s, {delay}, {self.queue}-packet queue"
        else:
            text = f"no rate limit, {delay}"  # linkem has no queue without a rate
        return text + f", {self.loss * 100:g}% loss"

    def linkem_args(self) -> list[str]:
        return [
            *("--rate", str(int(self.rate_mbps * 1e6))),
            *("--delay-us", str(int(self.delay_ms * 1000))),
            *("--jitter-us", str(int(self.jitter_ms * 1000))),
            *("--queue", str(self.queue)),
            *("--loss", repr(self.loss)),
        ]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    link: Link
    # single: each peer alone; fair: two utcp flows; coexist: utcp beside cubic;
    # latency: each peer alone, an echo of small messages on a schedule
    kind: str
    mib: float = 0.0  # single: the transfer size
    seconds: float = 0.0  # fair, coexist: how long the receivers count
    messages: int = 0  # latency: how many
    interval_ms: float = 0.0  # latency: one message every this often
    peers: tuple[str, ...] = ()  # peer names or kinds that run it; () = every peer

    def applies(self, name: str, kind: str) -> bool:
        """Whether the peer of this name and kind runs here."""
        return not self.peers or name in self.peers or kind in self.peers


# 1 BDP at 100 Mbit/s x 100 ms = 1.25 MB = 833 packets of 1500 bytes.
BDP_100 = 833
# The long path's transfer: about 8 s at the link rate, so that its STARTUP (about 0.7 s from
# ten segments to one BDP) is a small part of it, as in the emulator's validation.  With
# 32 MiB (2.7 s) slow start was a third of the transfer, and no sender could average more
# than about 83 Mbit/s over it.
MIB_100 = 96
L20 = {"rate_mbps": 20.0, "delay_ms": 20.0, "queue": 50}
L100 = {"rate_mbps": 100.0, "delay_ms": 50.0, "queue": BDP_100}
# KCP's test.cpp: LatencySimulator(10, 60, 125) loses 10/2 = 5% each way and delays each packet
# by a uniform draw between RTT 60/2 and 125/2 ms one way, first in first out (its integer code
# draws whole milliseconds 30-61, and takes exactly 5 of every 100 packets).  Here: 30 ms +
# linkem's jitter, uniform in [0, 32.5) ms under the same FIFO rule, and independent 5% loss.
# No rate limit (linkem then has no queue either): 8-byte messages never bind one.
KCP_LATENCY_LINK = Link(rate_mbps=0.0, delay_ms=30.0, queue=1000, loss=0.05, jitter_ms=32.5)
KCP_LATENCY_PEERS = ("tcp-cubic", "tcp-bbr", "aiokcp-fast", "utcp")  # "utcp": every utcp peer
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("20m-0", "", Link(**L20, loss=0.0), "single", mib=8),
        Scenario("20m-1", "", Link(**L20, loss=0.01), "single", mib=8),
        Scenario("20m-2", "", Link(**L20, loss=0.02), "single", mib=8),
        Scenario("20m-5", "", Link(**L20, loss=0.05), "single", mib=8),
        Scenario("100m-0", "", Link(**L100, loss=0.0), "single", mib=MIB_100),
        Scenario("100m-1", "", Link(**L100, loss=0.01), "single", mib=MIB_100),
        Scenario("fair", "two utcp flows", Link(**L20, loss=0.0), "fair", seconds=20),
        Scenario(
            "coexist", "utcp beside kernel TCP cubic", Link(**L20, loss=0.0), "coexist", seconds=20
        ),
        Scenario(
            "kcp-latency",
            "KCP's latency test",
            KCP_LATENCY_LINK,
            "latency",
            messages=1000,  # 20 s of sending per peer and run
            interval_ms=20.0,
            peers=KCP_LATENCY_PEERS,
        ),
    )
}
QUICK_SCENARIOS = ("20m-0", "20m-2", "100m-0", "fair", "coexist", "kcp-latency")
IDLE_SCENARIO = "20m-0"  # coexist's path with nothing else on it: each flow alone there
# Names --scenarios accepts besides the scenarios' own ("all" is QUICK_SCENARIOS with --quick).
SCENARIO_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(SCENARIOS),
    "none": (),
    "20m": ("20m-0", "20m-1", "20m-2", "20m-5"),
    "100m": ("100m-0", "100m-1"),
    # Congestion controllers side by side: every path one flow has alone, beside cubic, and
    # the latency test (fair compares a controller only with itself).
    "controllers": (
        *("20m-0", "20m-1", "20m-2", "20m-5", "100m-0", "100m-1"),
        *("coexist", "kcp-latency"),
    ),
}


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # tcp, utcp, aioquic, aiokcp (the worker's --peer)
    variant: str  # tcp: TCP_CONGESTION; utcp: Config.congestion_control or "default"
    label: str
    needs: tuple[str, ...] = ()


BASE_PEERS: tuple[Peer, ...] = (
    Peer("tcp-cubic", "tcp", "cubic", "kernel TCP cubic"),
    Peer("tcp-bbr", "tcp", "bbr", "kernel TCP bbr"),
    Peer("tcp-reno", "tcp", "reno", "kernel TCP reno"),
    Peer("utcp", "utcp", "default", "utcp Config()", ("utcp",)),
    Peer("aioquic", "aioquic", "default", "aioquic", ("aioquic", "cryptography")),
    Peer("aiokcp-fast", "aiokcp", "fast", "aiokcp fast", ("aiokcp",)),
)
COEXIST_TCP = BASE_PEERS[0]  # kernel TCP cubic


def utcp_cc_peer(cc: str) -> Peer:
    return Peer(f"utcp-{cc}", "utcp", cc, f"utcp {cc}", ("utcp",))


def select_scenarios(spec: str, quick: bool = False) -> list[str]:
    """The scenarios a comma-separated ``--scenarios`` value names, groups expanded, in the
    order given, each once; ValueError for a name that is neither."""
    chosen: list[str] = []
    for word in filter(None, (w.strip() for w in spec.split(","))):
        if word == "all" and quick:
            names: tuple[str, ...] = QUICK_SCENARIOS
        elif word in SCENARIO_GROUPS:
            names = SCENARIO_GROUPS[word]
        elif word in SCENARIOS:
            names = (word,)
        else:
            raise ValueError(word)
        chosen += [n for n in names if n not in chosen]
    return chosen


def controller_names(values: list[str]) -> list[str]:
    """``--utcp-cc`` values (repeated, each comma-separated) as one list, each name once."""
    names: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if name and name not in names:
                names.append(name)
    return names


# ------------------------------------------------------------------------ small helpers


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return float(statistics.median(values)) if values else None


def jain_index(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all are equal, 1/n at worst."""
    if not values:
        return None
    squares = sum(x * x for x in values)
    if squares == 0:
        return None
    return sum(values) ** 2 / (len(values) * squares)


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def root_and_tun() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and os.path.exists("/dev/net/tun")


def build_linkem(out: Path = LINKEM_BIN) -> Path:
    """Compile the emulator (on every run: it takes a fraction of a second)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(LINKEM_SRC)]
    subprocess.run(cmd, check=True)
    return out


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


# ------------------------------------------------------------------------ the testbed

_CHILDREN: set[int] = set()  # every process we started and have not reaped: killed on the way out


def kill_children() -> None:
    for pid in list(_CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _CHILDREN.discard(pid)


class Testbed:
    """The two namespaces; ``close`` deletes them by name."""

    def __init__(self) -> None:
        tag = f"{NS_PREFIX}{os.getpid()}"
        self.ns_a, self.ns_b = f"{tag}-a", f"{tag}-b"

    @staticmethod
    def remove_stale() -> list[str]:
        """Delete ``utcpwan-<pid>-*`` namespaces whose harness process is gone."""
        removed = []
        listing = run_ip("netns", "list", check=False).stdout.split()
        for name in listing:
            if not name.startswith(NS_PREFIX):
                continue
            pid = name[len(NS_PREFIX) :].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                run_ip("netns", "del", name, check=False)
                removed.append(name)
        return removed

    def open(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run_ip("netns", "add", ns)
            run_ip("-n", ns, "link", "set", "lo", "up")
            # A closed connection's ssthresh must not carry over into the next run.
            self.sysctl(ns, "net.ipv4.tcp_no_metrics_save=1")

    def sysctl(self, ns: str, setting: str) -> None:
        cmd = ["ip", "netns", "exec", ns, "sysctl", "-qw", setting]
        subprocess.run(cmd, check=True, capture_output=True)

    def sysctls(self) -> dict[str, str]:
        keys = ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.core.rmem_max", "net.core.wmem_max")
        cmd = ["ip", "netns", "exec", self.ns_a, "sysctl", "-n", *keys]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
        return {k: " ".join(v.split()) for k, v in zip(keys, out, strict=False)}

    def close(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run_ip("netns", "del", ns, check=False)

    def configure(self) -> None:
        """Give the emulator's two devices their addresses (they exist once it says READY)."""
        for ns, here, there in ((self.ns_a, ADDR_A, ADDR_B), (self.ns_b, ADDR_B, ADDR_A)):
            batch = (
                f"addr add {here}/32 peer {there} dev {DEV}\n"
                # The kernel's queue in front of the emulator must not drop a sender's burst:
                # the emulated queue is the only one that drops.
                f"link set {DEV} mtu {MTU} txqueuelen {TUN_TXQUEUELEN} up\n"
            )
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)

    def tun_drops(self) -> dict[str, int]:
        """Packets the kernel dropped at a TUN device because the emulator read too slowly."""
        drops = {}
        for side, ns in (("a", self.ns_a), ("b", self.ns_b)):
            out = run_ip("-n", ns, "-s", "-j", "link", "show", DEV, check=False).stdout
            try:
                stats = json.loads(out)[0]["stats64"]
                drops[side] = int(stats["tx"]["dropped"])
            except (ValueError, LookupError, TypeError):
                drops[side] = -1
        return drops


class Proc:
    """A child whose stdout we read line by line; stderr goes to a temporary file."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str, err: Any) -> None:
        self.proc, self.role, self.err = proc, role, err

    @classmethod
    async def start(cls, role: str, *cmd: str) -> Proc:
        err = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by stop()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=str(ROOT),
        )
        _CHILDREN.add(proc.pid)
        return cls(proc, role, err)

    @classmethod
    async def worker(cls, ns: str, role: str, *args: str) -> Proc:
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(WORKER), role, *args]
        return await cls.start(role, *cmd)

    async def expect(self, tag: str) -> str:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.proc.wait()
                raise RuntimeError(
                    f"{self.role} exited {self.proc.returncode} before {tag}: {self.stderr_tail()}"
                )
            text = line.decode(errors="replace").strip()
            if text == tag or text.startswith(tag + " "):
                return text[len(tag) + 1 :]

    async def result(self) -> dict[str, Any]:
        return dict(json.loads(await self.expect("RESULT")))

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.proc.pid)

    def stderr_tail(self, limit: int = 500) -> str:
        self.err.seek(0)
        lines = [ln for ln in self.err.read().decode(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-3:])[-limit:] or "(no stderr)"

    async def stop(self, sig: int = signal.SIGKILL, grace_s: float = 2.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        _CHILDREN.discard(self.proc.pid)
        self.err.close()


class Emulator:
    """One linkem process for one run: started, its devices addressed, stopped for counters."""

    def __init__(self, testbed: Testbed, link: Link, seed: int) -> None:
        self.testbed, self.link, self.seed = testbed, link, seed
        fd, name = tempfile.mkstemp(prefix="linkem-", suffix=".json")
        os.close(fd)
        self.stats_path = Path(name)
        self.proc: Proc | None = None

    async def __aenter__(self) -> Emulator:
        cmd = [
            str(LINKEM_BIN),
            *(
                "--ns-a",
                f"/run/netns/{self.testbed.ns_a}",
                "--ns-b",
                f"/run/netns/{self.testbed.ns_b}",
            ),
            *("--dev", DEV, "--stats", str(self.stats_path), "--seed", str(self.seed)),
            *self.link.linkem_args(),
        ]
        self.proc = await Proc.start("linkem", *cmd)
        await asyncio.wait_for(self.proc.expect("READY"), 10)
        self.testbed.configure()
        return self

    def cpu_s(self) -> float | None:
        return self.proc.cpu_s() if self.proc else None

    async def finish(self) -> dict[str, Any]:
        """Stop it (SIGTERM writes the counters); the TUN devices go with it."""
        counters: dict[str, Any] = {"tun_tx_dropped": self.testbed.tun_drops()}
        if self.proc is not None:
            await self.proc.stop(signal.SIGTERM, grace_s=5.0)
            self.proc = None
        with contextlib.suppress(OSError, ValueError):
            counters.update(json.loads(self.stats_path.read_text()))
        return counters

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            await self.proc.stop()
        with contextlib.suppress(OSError):
            self.stats_path.unlink()


# ------------------------------------------------------------------------ one run


@dataclass
class Flow:
    peer: Peer
    bytes: int
    cap_s: float = 15.0
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)


def _failed(record: dict[str, Any], exc: Exception, procs: list[Proc]) -> None:
    """Mark a run failed: the exception and what each process last wrote to stderr."""
    record["ok"] = False
    tails = "; ".join(f"{p.role}: {p.stderr_tail()}" for p in procs)
    record["error"] = f"{type(exc).__name__}: {exc} ({tails})"[:800]


async def run_flows(
    testbed: Testbed, link: Link, flows: list[Flow], seed: int, time_limit_s: float
) -> dict[str, Any]:
    """One run: a fresh emulator, a receiver per flow in B, then every sender at once in A."""
    record: dict[str, Any] = {"seed": seed, "ok": True}
    procs: list[Proc] = []
    async with Emulator(testbed, link, seed) as emu:
        try:
            receivers, ports = [], []
            for flow in flows:
                args = ["--peer", flow.peer.kind, "--variant", flow.peer.variant, "--host", ADDR_B]
                args += ["--bytes", str(flow.bytes), "--cap-s", str(flow.cap_s)]
                args += ["--seconds", str(flow.seconds)]
                rx = await Proc.worker(testbed.ns_b, "receive", *args)
                procs.append(rx)
                receivers.append(rx)
                ports.append(int(await asyncio.wait_for(rx.expect("READY"), 30)))
            emu_cpu0, t0 = emu.cpu_s(), time.perf_counter()
            senders = []
            for flow, port in zip(flows, ports, strict=True):
                args = ["--peer", flow.peer.kind, "--variant", flow.peer.variant]
                args += ["--host", ADDR_B, "--port", str(port), "--bytes", str(flow.bytes)]
                tx = await Proc.worker(testbed.ns_a, "send", *args)
                procs.append(tx)
                senders.append(tx)

            async def all_results() -> list[dict[str, Any]]:
                return list(await asyncio.gather(*(rx.result() for rx in receivers)))

            results = await asyncio.wait_for(all_results(), time_limit_s)
            wall = time.perf_counter() - t0
            emu_cpu1 = emu.cpu_s()
            for flow, tx, res in zip(flows, senders, results, strict=True):
                cpu = tx.cpu_s()
                res["sender_cpu_s"] = cpu
                if cpu is not None and res.get("span_s"):
                    res["sender_cpu_pct"] = 100 * cpu / wall
                if res.get("receiver_cpu_s") is not None and res.get("span_s"):
                    res["receiver_cpu_pct"] = 100 * res["receiver_cpu_s"] / res["span_s"]
                if "error" in res:
                    record["ok"] = False
                    record["error"] = res["error"]
                flow.result = res
            if emu_cpu0 is not None and emu_cpu1 is not None:
                record["emulator_cpu_pct"] = 100 * (emu_cpu1 - emu_cpu0) / wall
            record["wall_s"] = wall
        except (asyncio.TimeoutError, RuntimeError, ValueError, OSError) as exc:
            _failed(record, exc, procs)
        finally:
            for p in procs:
                await p.stop()
            record["emulator"] = await emu.finish()
    record["flows"] = [{"peer": f.peer.name, **f.result} for f in flows]
    return record


def drop_pcts(counters: dict[str, Any]) -> dict[str, float]:
    """Queue and loss drops as % of the packets that entered the data direction (A to B), and
    loss drops of the return direction (which carries the echoes of the latency scenario)."""
    ab = counters.get("a_to_b") or {}
    received = ab.get("received") or 0
    if not received:
        return {}
    pcts = {
        "queue_drop_pct": 100 * ab.get("dropped_queue", 0) / received,
        "loss_drop_pct": 100 * ab.get("dropped_loss", 0) / received,
    }
    ba = counters.get("b_to_a") or {}
    if ba.get("received"):
        pcts["loss_drop_pct_ba"] = 100 * ba.get("dropped_loss", 0) / ba["received"]
    return pcts


async def run_latency(
    testbed: Testbed, link: Link, peer: Peer, messages: int, interval_ms: float, seed: int
) -> dict[str, Any]:
    """One run of the latency test: a fresh emulator, an echo server in B, the client in A."""
    record: dict[str, Any] = {"seed": seed, "ok": True}
    procs: list[Proc] = []
    kind = ["--peer", peer.kind, "--variant", peer.variant, "--host", ADDR_B]
    drain_s = 15.0  # after the last message: several retransmission timeouts
    time_limit_s = messages * interval_ms / 1000 + drain_s + 45.0
    result: dict[str, Any] = {}
    async with Emulator(testbed, link, seed) as emu:
        try:
            server = await Proc.worker(testbed.ns_b, "latency-echo", *kind)
            procs.append(server)
            port = await asyncio.wait_for(server.expect("READY"), 30)
            emu_cpu0, server_cpu0, t0 = emu.cpu_s(), server.cpu_s(), time.perf_counter()
            args = [*kind, "--port", port, "--count", str(messages)]
            args += ["--interval-ms", str(interval_ms), "--drain-s", str(drain_s)]
            client = await Proc.worker(testbed.ns_a, "latency-client", *args)
            procs.append(client)
            result = await asyncio.wait_for(client.result(), time_limit_s)
            wall = time.perf_counter() - t0
            emu_cpu1, server_cpu1 = emu.cpu_s(), server.cpu_s()
            # It exits by itself after reporting: signalling it before the event loop has seen
            # it go would reap it behind asyncio's child watcher (a spurious warning).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(client.proc.wait(), 5.0)
            if emu_cpu0 is not None and emu_cpu1 is not None:
                record["emulator_cpu_pct"] = 100 * (emu_cpu1 - emu_cpu0) / wall
            if server_cpu0 is not None and server_cpu1 is not None:
                result["receiver_cpu_pct"] = 100 * (server_cpu1 - server_cpu0) / wall
            if result.get("client_cpu_s") is not None and result.get("span_s"):
                result["sender_cpu_pct"] = 100 * result["client_cpu_s"] / result["span_s"]
            if "error" in result:
                record["ok"] = False
                record["error"] = result["error"]
            record["wall_s"] = wall
        except (asyncio.TimeoutError, RuntimeError, ValueError, OSError) as exc:
            _failed(record, exc, procs)
        finally:
            for p in procs:
                await p.stop()
            record["emulator"] = await emu.finish()
    record["flows"] = [{"peer": peer.name, **result}]
    return record


# ------------------------------------------------------------------------ validation


async def validate(testbed: Testbed, settings: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, measured: str, **data: Any) -> None:
        checks.append({"check": name, "passed": passed, "measured": measured, **data})
        print(f"  {'ok  ' if passed else 'FAIL'} {name}: {measured}", flush=True)

    print("validating the emulator:", flush=True)
    for delay_ms, rate in ((20.0, 20.0), (50.0, 100.0)):
        link = Link(rate, delay_ms, 1000, 0.0)
        res = await probe(testbed, link, count=30, interval_ms=20)
        rtts = res.get("rtt_ms") or []
        want = 2 * delay_ms
        med = median(rtts)
        ok = med is not None and abs(med - want) <= max(1.0, 0.03 * want)
        check(
            f"RTT at {delay_ms:g} ms one-way delay (UDP echo, {len(rtts)}/30 probes)",
            ok,
            f"median {fmt(med, 2)} ms, min {fmt(min(rtts) if rtts else None, 2)} ms, "
            f"max {fmt(max(rtts) if rtts else None, 2)} ms; expected {want:g} ms",
            rtt_ms=rtts,
        )
    link = Link(20.0, 20.0, 1000, 0.0, jitter_ms=10.0)
    res = await probe(testbed, link, count=300, interval_ms=2)
    rtts = res.get("rtt_ms") or []
    ok = bool(rtts) and min(rtts) >= 39.5 and max(rtts) <= 62.0 and res.get("reordered") == 0
    check(
        "jitter 10 ms each way at 20 ms delay (300 probes 2 ms apart): RTT in [40, 60], in order",
        ok,
        f"min {fmt(min(rtts) if rtts else None, 2)} ms, median {fmt(median(rtts), 2)} ms, "
        f"max {fmt(max(rtts) if rtts else None, 2)} ms, reordered {res.get('reordered')}",
    )
    # The kcp-latency path without its loss: 30 ms + uniform[0, 32.5) ms each way.  Probes 40 ms
    # apart are further apart than the jitter's width, so FIFO never holds one back and each
    # RTT is the sum of two independent draws: within [60, 125] ms, mean and median 92.5 ms.
    link = Link(0.0, KCP_LATENCY_LINK.delay_ms, 1000, 0.0, jitter_ms=KCP_LATENCY_LINK.jitter_ms)
    res = await probe(testbed, link, count=200, interval_ms=40)
    rtts = res.get("rtt_ms") or []
    low, high = 2 * link.delay_ms, 2 * (link.delay_ms + link.jitter_ms)
    mean = statistics.fmean(rtts) if rtts else None
    ok = (
        len(rtts) >= 190
        and min(rtts) >= low - 0.5
        and max(rtts) <= high + 1.0
        and mean is not None
        and abs(mean - (low + high) / 2) <= 3.0
        and res.get("reordered") == 0
    )
    check(
        f"kcp-latency delays {link.describe()} (200 probes 40 ms apart): RTT in "
        f"[{low:g}, {high:g}], mean {(low + high) / 2:g} ± 3, in order",
        ok,
        f"min {fmt(min(rtts) if rtts else None, 2)} ms, median {fmt(median(rtts), 2)} ms, "
        f"mean {fmt(mean, 2)} ms, max {fmt(max(rtts) if rtts else None, 2)} ms, "
        f"reordered {res.get('reordered')}",
        rtt_ms=rtts,
    )
    counters = await udp_blast(testbed, Link(0, 1.0, 1000, 0.05), count=40000)
    ab = counters.get("a_to_b") or {}
    got = 100 * ab.get("dropped_loss", 0) / max(1, ab.get("received", 0))
    check(
        "random loss 5% (40,000 UDP datagrams, seeded)",
        abs(got - 5.0) <= 0.5,
        f"{got:.2f}% of {ab.get('received', 0):,} dropped by loss",
    )
    for rate, delay, queue, mib in ((20.0, 20.0, 50, 8), (100.0, 50.0, BDP_100, MIB_100)):
        link = Link(rate, delay, queue, 0.0)
        flow = Flow(COEXIST_TCP, int(mib * MIB), cap_s=settings["cap_s"])
        rec = await run_flows(testbed, link, [flow], settings["seed"], settings["time_limit_s"])
        mbps = flow.result.get("goodput_mbps") if rec["ok"] else None
        steady = flow.result.get("second_half_mbps") if rec["ok"] else None
        ok = steady is not None and steady >= 0.9 * rate
        check(
            f"kernel TCP cubic fills {link.describe()} ({mib} MiB)",
            ok,
            f"{fmt(steady)} Mbit/s over the second half (>= {0.9 * rate:g} wanted), "
            f"{fmt(mbps)} Mbit/s first to last byte; emulator CPU "
            f"{fmt(rec.get('emulator_cpu_pct'))}%, queue drops "
            f"{fmt(drop_pcts(rec['emulator']).get('queue_drop_pct'), 2)}%, TUN drops "
            f"{rec['emulator'].get('tun_tx_dropped')}",
            goodput_mbps=mbps,
            second_half_mbps=steady,
            error=rec.get("error"),
        )
    # What the emulator forwards with no rate limit (its own ceiling, kernel TCP pushing).
    link = Link(0, 0.5, 1000, 0.0)
    flow = Flow(COEXIST_TCP, 256 * MIB, cap_s=4.0)
    rec = await run_flows(testbed, link, [flow], settings["seed"], settings["time_limit_s"])
    mbps = flow.result.get("goodput_mbps") if rec["ok"] else None
    check(
        "emulator ceiling: kernel TCP cubic with no rate limit, 1 ms RTT (4 s)",
        mbps is not None and mbps >= 100,
        f"{fmt(mbps)} Mbit/s (>= 100 wanted); emulator CPU {fmt(rec.get('emulator_cpu_pct'))}%",
        goodput_mbps=mbps,
    )
    return checks


async def probe(testbed: Testbed, link: Link, count: int, interval_ms: float) -> dict[str, Any]:
    async with Emulator(testbed, link, 1) as emu:
        echo = await Proc.worker(testbed.ns_b, "echo", "--host", ADDR_B)
        try:
            port = await asyncio.wait_for(echo.expect("READY"), 30)
            client = await Proc.worker(
                testbed.ns_a,
                "probe",
                *("--host", ADDR_B, "--port", port, "--count", str(count)),
                *("--interval-ms", str(interval_ms)),
            )
            try:
                return await asyncio.wait_for(client.result(), 60)
            finally:
                await client.stop()
        finally:
            await echo.stop()
            await emu.finish()


async def udp_blast(testbed: Testbed, link: Link, count: int) -> dict[str, Any]:
    async with Emulator(testbed, link, 7) as emu:
        blaster = await Proc.worker(
            testbed.ns_a, "blast", "--host", ADDR_B, "--port", "9", "--count", str(count)
        )
        try:
            await asyncio.wait_for(blaster.result(), 60)
            await asyncio.sleep(0.2)
        finally:
            await blaster.stop()
        return await emu.finish()


# ------------------------------------------------------------------------ the benchmark


def peer_available(peer: Peer) -> str:
    """'' if the peer can run, else why not."""
    missing = [m for m in peer.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    if peer.kind == "tcp":
        avail = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
        if peer.variant not in avail:
            return f"kernel has no {peer.variant} (available: {' '.join(avail)})"
    if peer.kind == "utcp" and peer.variant != "default":
        code = (
            "import sys, utcp\n"
            f"try: utcp.Config(congestion_control={peer.variant!r}).validate()\n"
            "except ValueError as e: print(e); sys.exit(1)"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if res.returncode:
            return f"utcp rejects congestion_control={peer.variant!r}: {res.stdout.strip()[:160]}"
    return ""


async def run_benchmark(testbed: Testbed, settings: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    peers: list[Peer] = settings["peer_objects"]
    available = [p for p in peers if not settings["unavailable"].get(p.name)]
    utcp_peers = [p for p in available if p.kind == "utcp"]
    for name in settings["scenarios"]:
        sc = SCENARIOS[name]
        scale = settings["scale"]
        for run in range(1, settings["runs"] + 1):
            seed = settings["seed"] + run
            groups: list[tuple[str, list[Flow]]] = []
            if sc.kind == "latency":
                messages = settings["latency_messages"] or max(1, round(sc.messages * scale))
                for p in (p for p in available if sc.applies(p.name, p.kind)):
                    rec = await run_latency(testbed, sc.link, p, messages, sc.interval_ms, seed)
                    rec.update(scenario=name, peer=p.name, run=run, messages=messages)
                    rec.update(drop_pcts(rec["emulator"]))
                    runs.append(rec)
                    print(
                        f"{name:8} run {run}/{settings['runs']} {p.name:14} {progress(rec)}",
                        flush=True,
                    )
                continue
            if sc.kind == "single":
                size = int(sc.mib * scale * MIB)
                for p in (p for p in available if sc.applies(p.name, p.kind)):
                    groups.append((p.name, [Flow(p, size, cap_s=settings["cap_s"])]))
            else:
                secs = settings["shared_seconds"] or sc.seconds * scale
                big = int(sc.link.rate_mbps * 1e6 / 8 * secs * 2)  # more than the link can carry
                for up in utcp_peers:
                    other = up if sc.kind == "fair" else COEXIST_TCP
                    flows = [Flow(up, big, seconds=secs), Flow(other, big, seconds=secs)]
                    groups.append((up.name, flows))
            for label, flows in groups:
                rec = await run_flows(testbed, sc.link, flows, seed, settings["time_limit_s"])
                rec.update(scenario=name, peer=label, run=run)
                rec.update(drop_pcts(rec["emulator"]))
                runs.append(rec)
                print(
                    f"{name:8} run {run}/{settings['runs']} {label:14} {progress(rec)}", flush=True
                )
    return runs


def progress(rec: dict[str, Any]) -> str:
    if not rec["ok"]:
        return f"FAILED: {rec.get('error')}"
    if SCENARIOS[rec["scenario"]].kind == "latency":
        res = rec["flows"][0]
        return (
            f"RTT avg {fmt(res.get('avg_rtt_ms'))} ms, p99 {fmt(res.get('p99_rtt_ms'))} ms, "
            f"max {fmt(res.get('max_rtt_ms'))} ms; echoed {res.get('echoed')}/{res.get('sent')}; "
            f"loss drops {fmt(rec.get('loss_drop_pct'), 2)}% / "
            f"{fmt(rec.get('loss_drop_pct_ba'), 2)}%; {rec.get('wall_s', 0):.1f} s"
        )
    parts = []
    for f in rec["flows"]:
        text = f"{f['peer']} {f.get('goodput_mbps', 0):.2f} Mbit/s"
        if f.get("capped"):
            text += " (capped)"
        parts.append(text)
    extra = f"queue drops {rec.get('queue_drop_pct', 0):.2f}%, emulator CPU "
    extra += f"{fmt(rec.get('emulator_cpu_pct'))}%"
    return " + ".join(parts) + f"; {extra}; {rec.get('wall_s', 0):.1f} s"


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Medians per scenario and peer; Jain's index and shares for the shared-link runs."""
    summary: dict[str, Any] = {}
    for name in report["settings"]["scenarios"]:
        sc = SCENARIOS[name]
        rows: dict[str, Any] = {}
        for rec in (r for r in report["runs"] if r["scenario"] == name):
            row = rows.setdefault(rec["peer"], {"runs": 0, "ok": 0, "capped": 0, "samples": []})
            row["runs"] += 1
            if not rec["ok"]:
                row.setdefault("errors", []).append(rec.get("error"))
                continue
            row["ok"] += 1
            flows = rec["flows"]
            sample: dict[str, Any] = {
                "goodputs": [f.get("goodput_mbps") for f in flows],
                "emulator_cpu_pct": rec.get("emulator_cpu_pct"),
                "queue_drop_pct": rec.get("queue_drop_pct"),
                "loss_drop_pct": rec.get("loss_drop_pct"),
                "sender_cpu_pct": flows[0].get("sender_cpu_pct"),
                "receiver_cpu_pct": flows[0].get("receiver_cpu_pct"),
                "tun_drops": sum(max(0, v) for v in rec["emulator"]["tun_tx_dropped"].values()),
            }
            if sc.kind == "fair":
                sample["jain"] = jain_index(sample["goodputs"])
            if sc.kind == "coexist":
                total = sum(sample["goodputs"])
                sample["utcp_share"] = sample["goodputs"][0] / total if total else None
            if sc.kind == "latency":
                sample["latency"] = flows[0]
                sample["loss_drop_pct_ba"] = rec.get("loss_drop_pct_ba")
            row["capped"] += sum(1 for f in flows if f.get("capped"))
            row["samples"].append(sample)
        for row in rows.values():
            samples = row["samples"]

            def med(key: str, samples: list[dict[str, Any]] = samples) -> float | None:
                return median([s[key] for s in samples if s.get(key) is not None])

            if sc.kind == "latency":
                row.update(latency.summarize_runs([s["latency"] for s in samples]))
                row["loss_drop_pct_ba"] = med("loss_drop_pct_ba")
                row["goodput_mbps"] = None
            else:
                row["goodput_mbps"] = median([s["goodputs"][0] for s in samples])
            if sc.kind in ("fair", "coexist"):
                row["goodput2_mbps"] = median([s["goodputs"][1] for s in samples])
                row["total_mbps"] = median([sum(s["goodputs"]) for s in samples])
            for key in (
                "emulator_cpu_pct",
                "queue_drop_pct",
                "loss_drop_pct",
                "sender_cpu_pct",
                "receiver_cpu_pct",
                "tun_drops",
                "jain",
                "utcp_share",
            ):
                row[key] = med(key)
        summary[name] = rows
    return summary


# ------------------------------------------------------------------------ output


def render(report: dict[str, Any]) -> str:
    st = report["settings"]
    peers: list[dict[str, Any]] = st["peers"]
    summary = report["summary"]
    m = report["machine"]
    lines = [
        f"utcp WAN benchmark, {report['date']}; {m['nproc']} CPUs ({m['cpu_model']}), "
        f"Linux {m['kernel']}, load before the run "
        + "/".join(f"{x:.2f}" for x in (m.get("load_average") or ())),
        "",
        f"versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items() if v)}",
        "",
    ]
    single = [n for n in st["scenarios"] if SCENARIOS[n].kind == "single"]
    shared = [n for n in st["scenarios"] if SCENARIOS[n].kind in ("fair", "coexist")]
    if single or shared:
        lines += [
            f"Receiver goodput in Mbit/s (10^6 bit/s), first to last byte, median of "
            f"{st['runs']} run(s); emulator seeds {st['seed'] + 1}..{st['seed'] + st['runs']}; "
            f"transfers capped at {st['cap_s']:g} s after the first byte. Kernel TCP's congestion "
            "control is set per socket (TCP_CONGESTION) on the sender.",
            "",
        ]
    if single:
        head = ["path"] + [p["label"] for p in peers]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in single:
            sc = SCENARIOS[name]
            size = f"{sc.mib * st['scale']:g} MiB"
            cells = [f"{sc.link.describe()} ({name}, {size})"]
            for p in peers:
                cells.append(cell(summary[name].get(p["name"]), p, report))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if shared:
        lines += shared_table(shared, summary, st)
    for name in (n for n in st["scenarios"] if SCENARIOS[n].kind == "latency"):
        sc = SCENARIOS[name]
        messages = st.get("latency_messages") or max(1, round(sc.messages * st["scale"]))
        lines += [
            f"{sc.title} ({name}): {sc.link.describe()}; the client sends an "
            f"{latency.MESSAGE_BYTES}-byte message every {sc.interval_ms:g} ms, {messages:,} per "
            "run, the server echoes each back, the client times each round trip. Median over "
            "the runs of each run's average, p99 (nearest rank), p50 and maximum, and of the "
            "packets dropped by random loss each way; messages summed over the runs (a reliable "
            "stream echoes every one). Kernel TCP sets its congestion control and TCP_NODELAY "
            "on both ends.",
            "",
            *latency.latency_table("peer", peers_of(name, peers), summary[name]),
            "",
        ]
    lines += [
        "Per run (medians): packets dropped by the bottleneck queue and by random loss (% of "
        "those entering A to B), packets the kernel dropped at a TUN device because the emulator "
        "read too slowly, and CPU as % of one core: the emulator's and the sender's (start-up "
        "included) over the transfer's wall time, the receiver's from its connection to its "
        "last byte (kcp-latency: the client's as the sender's, from its connection to its last "
        "echo, and the echo server's as the receiver's, over the client's wall time).",
        "",
        "| scenario | peer | ok/runs | capped | queue drops % | loss drops % | TUN drops "
        "| emulator CPU % | sender CPU % | receiver CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in st["scenarios"]:
        for peer, row in summary[name].items():
            lines.append(
                f"| {name} | {peer} | {row['ok']}/{row['runs']} | {row['capped']} "
                f"| {fmt(row.get('queue_drop_pct'), 2)} | {fmt(row.get('loss_drop_pct'), 2)} "
                f"| {fmt(row.get('tun_drops'), 0)} | {fmt(row.get('emulator_cpu_pct'))} "
                f"| {fmt(row.get('sender_cpu_pct'))} | {fmt(row.get('receiver_cpu_pct'))} |"
            )
    lines.append("")
    for note in report["notes"]:
        lines.append(f"- {note}")
    if report.get("validation"):
        lines += ["", "Validation of the emulator:", ""]
        for c in report["validation"]:
            lines.append(f"- {'ok' if c['passed'] else 'FAILED'}: {c['check']}: {c['measured']}")
    return "\n".join(lines)


def peers_of(name: str, peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's peers that scenario ``name`` runs."""
    return [p for p in peers if SCENARIOS[name].applies(p["name"], p["kind"])]


def shared_table(names: list[str], summary: dict[str, Any], st: dict[str, Any]) -> list[str]:
    """The fair and coexist rows, one per utcp peer; beside each flow, what that flow's peer
    moved alone on the idle link (IDLE_SCENARIO) when the same run measured it, so that a
    controller's share beside cubic can be read against what it takes of an empty link."""
    idle = summary.get(IDLE_SCENARIO) or {}

    def alone(peer: str) -> str:
        return fmt((idle.get(peer) or {}).get("goodput_mbps")) if idle else ""

    lines = [
        "| shared link | flow 1 Mbit/s | flow 2 Mbit/s | total | Jain's index | utcp's share "
        f"| flow 1 alone ({IDLE_SCENARIO}) | flow 2 alone ({IDLE_SCENARIO}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        sc = SCENARIOS[name]
        for peer, row in summary[name].items():
            share = "" if row.get("utcp_share") is None else f"{100 * row['utcp_share']:.0f}%"
            second = peer if sc.kind == "fair" else COEXIST_TCP.name
            secs = st["shared_seconds"] or sc.seconds * st["scale"]
            lines.append(
                f"| {sc.link.describe()}: {peer} + {second}, {secs:g} s ({name}) "
                f"| {fmt(row['goodput_mbps'])} | {fmt(row.get('goodput2_mbps'))} "
                f"| {fmt(row.get('total_mbps'))} | {fmt(row.get('jain'), 3)} "
                f"| {share} | {alone(peer)} | {alone(second)} |"
            )
    lines.append("")
    if not idle:
        lines += [f"(The 'alone' columns need {IDLE_SCENARIO} in the same run.)", ""]
    return lines


def cell(row: dict[str, Any] | None, peer: dict[str, Any], report: dict[str, Any]) -> str:
    if peer.get("unavailable"):
        return "n/a"
    if row is None or row.get("goodput_mbps") is None:
        return "failed" if row else "n/a"
    text = fmt(row["goodput_mbps"])
    if row["ok"] < row["runs"]:
        text += f" ({row['ok']}/{row['runs']})"
    return text


def chart(report: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars per path (PNG with matplotlib, else an SVG written by hand)."""
    st = report["settings"]
    single = [n for n in st["scenarios"] if SCENARIOS[n].kind == "single"]
    peers = [p for p in st["peers"] if not p.get("unavailable")]
    if not single or not peers:
        return None
    values = [
        [(report["summary"][n].get(p["name"]) or {}).get("goodput_mbps") or 0.0 for n in single]
        for p in peers
    ]
    rates = [SCENARIOS[n].link.rate_mbps for n in single]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return svg_chart(single, peers, values, path.with_suffix(".svg"))
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(peers)
    for i, (p, vals) in enumerate(zip(peers, values, strict=True)):
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(single))]
        ax.bar(xs, vals, width, label=p["label"])
    for j, rate in enumerate(rates):
        ax.hlines(rate, j - 0.45, j + 0.45, colors="grey", linestyles="dashed", linewidth=0.8)
    ax.set_xticks(range(len(single)))
    ax.set_xticklabels(
        [
            f"{SCENARIOS[n].link.rate_mbps:g} Mbit/s, {2 * SCENARIOS[n].link.delay_ms:g} ms\n"
            f"{SCENARIOS[n].link.loss * 100:g}% loss"
            for n in single
        ]
    )
    ax.set_ylabel("receiver goodput, Mbit/s")
    ax.set_title(
        f"Emulated WAN paths, median of {st['runs']} run(s) ({report['date'][:10]}; "
        "dashed: link rate)"
    )
    ax.legend(fontsize="small", ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def svg_chart(
    names: list[str], peers: list[dict[str, Any]], values: list[list[float]], path: Path
) -> Path:
    colors = [
        "#4e79a7",
        "#f28e2b",
        "#e15759",
        "#76b7b2",
        "#59a14f",
        "#edc948",
        "#b07aa1",
        "#ff9da7",
    ]
    width, height, left, bottom = 960, 400, 50, 60
    top = max(max(v) for v in values) or 1.0
    group = (width - left - 20) / len(names)
    bar = group * 0.8 / len(peers)
    plot_h = height - bottom - 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height + 20 * len(peers)}">'
    ]
    for j, name in enumerate(names):
        x0 = left + j * group + group * 0.1
        for i, vals in enumerate(values):
            h = plot_h * vals[j] / top
            parts.append(
                f'<rect x="{x0 + i * bar:.1f}" y="{height - bottom - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colors[i % len(colors)]}"/>'
            )
        parts.append(
            f'<text x="{x0 + group * 0.4:.1f}" y="{height - bottom + 16}" font-size="12" '
            f'text-anchor="middle">{name}</text>'
        )
    parts.append(f'<text x="5" y="15" font-size="12">Mbit/s (max {top:.1f})</text>')
    for i, p in enumerate(peers):
        y = height + 20 * i
        parts.append(
            f'<rect x="{left}" y="{y - 10}" width="10" height="10" '
            f'fill="{colors[i % len(colors)]}"/>'
        )
        parts.append(f'<text x="{left + 15}" y="{y}" font-size="12">{p["label"]}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
    return path


def machine_and_versions() -> tuple[dict[str, Any], dict[str, Any]]:
    from _report import machine_info, versions

    return machine_info(), versions()


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    names = ", ".join(SCENARIOS)
    p = argparse.ArgumentParser(
        description="utcp, kernel TCP, aioquic and aiokcp across one emulated WAN path "
        "(two network namespaces joined by linkem). Needs root and /dev/net/tun.",
        epilog=f"scenarios: {names}; peers: {', '.join(x.name for x in BASE_PEERS)}",
    )
    p.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated scenario names or groups: "
        + ", ".join(
            f"{k} ({','.join(v) or 'validation only'})"
            for k, v in SCENARIO_GROUPS.items()
            if k != "all"
        )
        + "; 'all' (every scenario; with --quick the quick set)",
    )
    p.add_argument("--peers", default="all", help="comma-separated peer names, or 'all'")
    p.add_argument(
        "--utcp-cc",
        action="append",
        default=[],
        help="extra utcp peers, one per congestion controller (comma-separated and/or repeated: "
        "--utcp-cc cubic,ledbat --utcp-cc bbr); every scenario gets a row for each; a name utcp "
        "rejects is shown as n/a",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per scenario and peer (default 3)")
    p.add_argument(
        "--cap-s",
        type=float,
        default=None,
        help="stop a transfer this long after its first byte and report what arrived (default 15)",
    )
    p.add_argument(
        "--shared-seconds",
        type=float,
        default=0.0,
        help="length of fair/coexist (default 20 s; --quick 6 s)",
    )
    p.add_argument(
        "--latency-messages",
        type=int,
        default=0,
        help="messages per kcp-latency run, one every 20 ms (default 1000 = 20 s; --quick 250)",
    )
    p.add_argument("--seed", type=int, default=1000, help="run r uses emulator seed SEED + r")
    p.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="validate the emulator first (default: on, off with --quick)",
    )
    p.add_argument("--validate-only", action="store_true", help="validate, then stop")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"one run, a quarter of the sizes, scenarios {','.join(QUICK_SCENARIOS)}",
    )
    p.add_argument("--out", default=str(BENCH / "results"), help="directory for JSON, MD, PNG")
    args = p.parse_args(argv)
    try:
        scenarios = select_scenarios(args.scenarios, args.quick)
    except ValueError as exc:
        p.error(f"unknown scenario {exc}; choose from {names} or {', '.join(SCENARIO_GROUPS)}")
    peers = list(BASE_PEERS)
    if args.peers != "all":
        by_name = {x.name: x for x in BASE_PEERS}
        peers = []
        for n in args.peers.split(","):
            if n not in by_name:
                p.error(f"unknown peer {n!r}; choose from {', '.join(by_name)}")
            peers.append(by_name[n])
    for cc in controller_names(args.utcp_cc):
        peers.append(utcp_cc_peer(cc))
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        p.error("--runs must be at least 1")
    if args.latency_messages < 0:
        p.error("--latency-messages must not be negative")
    cap_s = args.cap_s if args.cap_s is not None else (6.0 if args.quick else 15.0)
    return {
        "scenarios": scenarios,
        "peer_objects": peers,
        "runs": runs,
        "cap_s": cap_s,
        "scale": 0.25 if args.quick else 1.0,
        "shared_seconds": args.shared_seconds or (6.0 if args.quick else 0.0),
        "latency_messages": args.latency_messages,
        "seed": args.seed,
        "validate": args.validate if args.validate is not None else not args.quick,
        "validate_only": args.validate_only,
        "quick": args.quick,
        "time_limit_s": cap_s + 45.0,
        "out": args.out,
    }


async def main_async(settings: dict[str, Any], testbed: Testbed) -> dict[str, Any]:
    machine, versions = machine_and_versions()
    notes: list[str] = []
    unavailable: dict[str, str] = {}
    for peer in settings["peer_objects"]:
        why = peer_available(peer)
        if why:
            unavailable[peer.name] = why
            notes.append(f"{peer.name}: n/a ({why})")
            print(f"skipping {peer.name}: {why}", flush=True)
    settings["unavailable"] = unavailable
    started = time.perf_counter()
    validation = []
    if settings["validate"] or settings["validate_only"]:
        validation = await validate(testbed, settings)
    runs = []
    if not settings["validate_only"]:
        runs = await run_benchmark(testbed, settings)
    public = {k: v for k, v in settings.items() if k not in ("peer_objects", "out", "unavailable")}
    public["peers"] = [
        {**asdict(p), "unavailable": unavailable.get(p.name, "")} for p in settings["peer_objects"]
    ]
    public["scenario_paths"] = {
        n: {**asdict(SCENARIOS[n].link), "kind": SCENARIOS[n].kind, "peers": SCENARIOS[n].peers}
        for n in settings["scenarios"]
    }
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine,
        "versions": versions,
        "namespaces": [testbed.ns_a, testbed.ns_b],
        "namespace_sysctls": testbed.sysctls(),
        "settings": public,
        "validation": validation,
        "runs": runs,
        "notes": notes,
        "elapsed_s": time.perf_counter() - started,
    }


async def interruptible(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """SIGTERM cancels the run as Ctrl-C does: every run's clean-up still runs."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await coro


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = {"json": out / f"bench-wan-{stamp}.json", "markdown": out / f"bench-wan-{stamp}.md"}
    picture = chart(report, out / f"bench-wan-{stamp}.png")
    if picture is not None:
        paths["chart"] = picture
    report["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths["markdown"].write_text(report["markdown"] + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    if not root_and_tun():
        print(f"{SKIP_MESSAGE} (running as uid {os.geteuid()})", flush=True)
        return 0
    from _report import build_warning

    warning = build_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    build_linkem()

    removed = Testbed.remove_stale()
    if removed:
        print(f"removed stale namespaces: {', '.join(removed)}", flush=True)
    testbed = Testbed()
    try:
        testbed.open()
        report = asyncio.run(interruptible(main_async(settings, testbed)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: cleaning up", flush=True)
        return 130
    finally:
        kill_children()
        testbed.close()
    if settings["validate_only"]:
        report["settings"]["scenarios"] = []
    report["summary"] = summarize(report)
    report["markdown"] = render(report)
    paths = write_outputs(report, Path(settings["out"]))
    print()
    print(report["markdown"])
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    failed = [c for c in report["validation"] if not c["passed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
