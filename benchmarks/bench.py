"""utcp side by side with the transports users would pick instead, in the same run.

Client and server of every run are separate processes on 127.0.0.1 (see _worker.py); lossy
runs add a third, utcp's impairment relay.  Each scenario runs every peer in turn, round after
round; the report gives medians and ratios to the baselines measured in the same run, since on a
noisy machine absolute numbers alone mean little.  The TLS peers' certificates are made once per
run, into a temporary directory every TLS worker loads them from (_tls.py).

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _peers import BY_NAME, DEFAULT_PEERS, PEERS, SCENARIOS, PeerSpec  # noqa: E402
from _report import build_warning, machine_info, summarize, versions, write_outputs  # noqa: E402
from _tls import make_certificates  # noqa: E402

WORKER = HERE / "_worker.py"
MIB = 1 << 20
LOSSY_LOSS = 0.01
LOSSY_DELAY_S = 0.010  # each way

DEFAULTS = {
    "rounds": 3,
    "bulk_mib": 64.0,
    "rr_seconds": 2.0,
    "connect_seconds": 2.0,
    "many_conns": 200,
    "many_kib": 256,
    "lossy_mib": 4.0,
    "cap_s": 15.0,
    "time_limit_s": 90.0,
}
QUICK = {
    "rounds": 1,
    "bulk_mib": 1.0,
    "rr_seconds": 0.5,
    "connect_seconds": 0.5,
    "many_conns": 20,
    "many_kib": 32,
    "lossy_mib": 0.25,
    "cap_s": 10.0,
    "time_limit_s": 60.0,
}


class ChildFailed(Exception):
    """A worker exited, or said nothing, before it printed what we waited for."""


class Child:
    """A worker process whose stdout we read line by line and whose stderr goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str, err: Any) -> None:
        self.proc = proc
        self.role = role
        self.err = err

    @classmethod
    async def start(cls, role: str, *args: str) -> Child:
        err = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by kill(), after the run
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            role,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        return cls(proc, role, err)

    async def expect(self, tag: str) -> str:
        """The rest of the first stdout line starting with ``tag``."""
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.proc.wait()
                raise ChildFailed(
                    f"{self.role} exited {self.proc.returncode} before {tag}: {self.stderr_tail()}"
                )
            text = line.decode(errors="replace").strip()
            if text.startswith(tag + " "):
                return text[len(tag) + 1 :]

    async def result(self) -> dict[str, Any]:
        return dict(json.loads(await self.expect("RESULT")))

    def stop(self) -> None:
        """Close its stdin: a server or relay then reports and exits."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def stderr_tail(self, limit: int = 600) -> str:
        self.err.seek(0)
        text = self.err.read().decode(errors="replace").strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        tail = " | ".join(lines[-4:])
        return tail[-limit:] if tail else "(no stderr)"

    async def kill(self, grace_s: float = 0.0) -> None:
        """Let it exit within ``grace_s``, else kill it.  (Killing one that has just exited on
        its own makes asyncio's child watcher log "Unknown child process": hence the grace.)"""
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.err.close()


def scenario_params(scenario: str, s: dict[str, Any]) -> dict[str, Any]:
    if scenario == "bulk":
        return {"bytes": int(s["bulk_mib"] * MIB), "cap_s": s["cap_s"]}
    if scenario == "lossy":
        return {"bytes": int(s["lossy_mib"] * MIB), "cap_s": s["cap_s"]}
    if scenario == "rr":
        return {"seconds": s["rr_seconds"]}
    if scenario == "connect":
        return {"seconds": s["connect_seconds"]}
    if scenario == "many":
        return {"conns": s["many_conns"], "bytes": s["many_kib"] * 1024}
    raise ValueError(scenario)


async def run_once(
    scenario: str, spec: PeerSpec, rnd: int, settings: dict[str, Any], tls_dir: Path | None
) -> dict[str, Any]:
    """One peer through one scenario: server, (relay,) client; killed past the time limit."""
    params = scenario_params(scenario, settings)
    common = ["--peer", spec.name, "--scenario", scenario, "--params", json.dumps(params)]
    if spec.tls:
        assert tls_dir is not None
        common += ["--tls-dir", str(tls_dir)]
    children: list[Child] = []
    record: dict[str, Any] = {"scenario": scenario, "peer": spec.name, "round": rnd}
    relay_loop = "uvloop" if not BY_NAME["utcp-uvloop"].missing() else "asyncio"
    pin = settings["pin"] and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1
    cpus = sorted(os.sched_getaffinity(0)) if pin else []
    server_cpu = ["--cpu", str(cpus[0])] if pin else []
    client_cpu = ["--cpu", str(cpus[1])] if pin else []

    async def steps() -> None:
        server = await Child.start("server", *common, *server_cpu)
        children.append(server)
        target = int(await server.expect("READY"))
        relay = None
        if scenario == "lossy":
            relay = await Child.start(
                "relay",
                *("--port", str(target), "--loop", relay_loop, "--seed", str(1000 + rnd)),
                *("--loss", str(LOSSY_LOSS), "--delay", str(LOSSY_DELAY_S)),
            )
            children.append(relay)
            target = int(await relay.expect("READY"))
        client = await Child.start("client", *common, *client_cpu, "--port", str(target))
        children.append(client)
        record["client"] = await client.result()
        server.stop()
        record["server"] = await server.result()
        if relay is not None:
            relay.stop()
            record["relay"] = await relay.result()

    started = time.perf_counter()
    try:
        await asyncio.wait_for(steps(), settings["time_limit_s"])
        record["ok"] = True
    except asyncio.TimeoutError:
        record.update(ok=False, error=f"timed out after {settings['time_limit_s']:g} s (killed)")
    except (ChildFailed, ValueError, OSError) as exc:
        record.update(ok=False, error=str(exc))
    finally:
        for child in children:  # each has reported and is exiting, unless the run failed
            await child.kill(grace_s=5.0 if record["ok"] else 0.0)
    record["run_s"] = time.perf_counter() - started
    return record


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description="Benchmark utcp against kernel TCP, raw UDP, aioquic and aiokcp, "
        "and utcp + TLS against kernel TCP + TLS and aioquic.",
        epilog=f"peers: {', '.join(x.name for x in PEERS)}; scenarios: {', '.join(SCENARIOS)}",
    )
    p.add_argument("--scenarios", default="all", help="comma-separated, or 'all'")
    p.add_argument(
        "--peers",
        default="default",
        help="comma-separated names; 'default' (every peer the targets need: all but utcp, "
        "utcp-uvloop and aiokcp) and 'all' may be among them (default: 'default')",
    )
    p.add_argument("--rounds", type=int, help=f"rounds per scenario (default {DEFAULTS['rounds']})")
    p.add_argument("--bulk-mib", type=float, help=f"bulk size (default {DEFAULTS['bulk_mib']:g})")
    p.add_argument("--rr-seconds", type=float, help=f"rr length (default {DEFAULTS['rr_seconds']})")
    p.add_argument("--connect-seconds", type=float, help="connect length (default: rr-seconds)")
    p.add_argument("--many-conns", type=int, help=f"default {DEFAULTS['many_conns']}")
    p.add_argument("--many-kib", type=int, help=f"echoed per connection (default {256})")
    p.add_argument("--lossy-mib", type=float, help=f"default {DEFAULTS['lossy_mib']:g}")
    p.add_argument(
        "--cap-s",
        type=float,
        help="a transfer still running this long after its first byte stops and reports what it "
        f"got, marked truncated (default {DEFAULTS['cap_s']:g})",
    )
    p.add_argument(
        "--time-limit-s",
        type=float,
        help=f"hard limit per run; its processes are killed (default {DEFAULTS['time_limit_s']:g})",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to the first usable CPU and the client to the second, so runs do "
        "not vary with where the scheduler puts them (default on; the lossy relay is unpinned)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round, for tests")
    p.add_argument("--out", default=str(HERE / "results"), help="directory for JSON, PNG, MD")
    args = p.parse_args(argv)
    settings: dict[str, Any] = dict(QUICK if args.quick else DEFAULTS)
    explicit_connect = args.connect_seconds is not None
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if not explicit_connect:
        settings["connect_seconds"] = settings["rr_seconds"]
    scenarios = SCENARIOS if args.scenarios == "all" else tuple(args.scenarios.split(","))
    groups = {"all": [x.name for x in PEERS], "default": list(DEFAULT_PEERS)}
    names = list(dict.fromkeys(n for g in args.peers.split(",") for n in groups.get(g, [g])))
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    for n in names:
        if n not in BY_NAME:
            p.error(f"unknown peer {n!r}; choose from {', '.join(BY_NAME)}")
    if settings["rounds"] < 1:
        p.error("--rounds must be at least 1")
    settings.update(
        quick=args.quick, pin=args.pin, scenarios=list(scenarios), peers=names, out=args.out
    )
    return settings


def _progress(record: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    if not record["ok"]:
        return f"FAILED: {record['error']}"
    assert metrics is not None
    shown = []
    for key in ("goodput_mbps", "rt_per_s", "p50_us", "conn_per_s", "rss_peak_mib"):
        value = metrics.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            shown.append(f"{key}={value:,.1f}")
    if metrics.get("truncated"):
        shown.append("TRUNCATED")
    return " ".join(shown)


async def main_async(settings: dict[str, Any]) -> dict[str, Any]:
    from _report import metrics_of

    peers = [BY_NAME[n] for n in settings["peers"]]
    availability: dict[str, dict[str, Any]] = {}
    for spec in peers:
        missing = spec.missing()
        availability[spec.name] = {
            "available": not missing,
            "note": f"not installed: {', '.join(missing)}" if missing else "",
            "kind": spec.kind,
            "loop": spec.loop,
            "description": spec.description,
        }
    tls = _certificates(
        [p.name for p in peers if p.tls and availability[p.name]["available"]], availability
    )
    for spec in peers:
        if not availability[spec.name]["available"]:
            print(f"skipping {spec.name}: {availability[spec.name]['note']}", flush=True)
    machine = machine_info()  # before the runs, so its load average is the background load
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for scenario in settings["scenarios"]:
        contestants = [
            p for p in peers if availability[p.name]["available"] and p.applies(scenario)
        ]
        for rnd in range(1, settings["rounds"] + 1):
            for spec in contestants:
                record = await run_once(scenario, spec, rnd, settings, tls["dir"])
                metrics = metrics_of(record, settings) if record["ok"] else None
                if metrics is not None and metrics.get("error"):
                    record.update(ok=False, error=metrics.pop("error"))
                record["metrics"] = metrics
                runs.append(record)
                print(
                    f"{scenario:8} round {rnd}/{settings['rounds']} {spec.name:20} "
                    f"{record['run_s']:6.1f} s  {_progress(record, metrics)}",
                    flush=True,
                )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine,
        "versions": versions(),
        "settings": {k: v for k, v in settings.items() if k != "out"},
        "lossy_path": {"loss": LOSSY_LOSS, "delay_s_each_way": LOSSY_DELAY_S},
        "peers": availability,
        "tls": {k: v for k, v in tls.items() if k not in ("dir", "tmp")},
        "runs": runs,
        "elapsed_s": time.perf_counter() - started,
    }


def _certificates(tls_peers: list[str], availability: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's TLS certificates, made once if a TLS peer is to run: ``dir`` is where (kept
    until the process exits), ``made_by`` what made them.  If none can be made, the TLS peers
    are skipped with the reason."""
    found: dict[str, Any] = {"dir": None}
    if not tls_peers:
        return found
    tmp = tempfile.TemporaryDirectory(prefix="utcp-bench-tls-")
    try:
        made_by = make_certificates(Path(tmp.name))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        tmp.cleanup()
        for name in tls_peers:
            availability[name].update(available=False, note=f"no TLS certificates: {exc}")
        return found
    return {
        "dir": Path(tmp.name),
        "tmp": tmp,  # the directory lives as long as this object
        "made_by": made_by,
        "certificate": "ECDSA P-256 for localhost and 127.0.0.1, "
        + ("issued by a CA trustme made" if made_by == "trustme" else "self-signed"),
        "protocol": "TLS 1.3 only on both sides; the client verifies the chain and the address",
    }


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    warning = build_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    report = asyncio.run(main_async(settings))
    summarize(report)
    paths = write_outputs(report, Path(settings["out"]))
    print()
    print(report["text"])
    for note in report["notes"]:
        print(f"note: {note}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
