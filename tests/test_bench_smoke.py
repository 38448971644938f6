"""The benchmark harness (benchmarks/bench.py) runs every scenario once at a tiny size.

It runs as ``make bench`` does, as separate processes on loopback, restricted to the peers
installed here: utcp, kernel TCP and raw UDP always (on uvloop too when it is installed);
aioquic and aiokcp only where the ``bench`` extras are.  Timing is never asserted: only that
every scenario x peer produced a sane result and the outputs were written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
SCENARIOS = ("bulk", "rr", "connect", "many", "lossy")
APPLIES = {
    "utcp": SCENARIOS,
    "tcp": ("bulk", "rr", "connect", "many"),
    "udp": ("bulk", "rr"),
    "aioquic": SCENARIOS,
    "aiokcp": SCENARIOS,
}


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _peers() -> dict[str, str]:
    """Peer name -> kind, for the peers this environment can run."""
    peers = {"utcp": "utcp", "tcp": "tcp", "udp": "udp"}
    if _installed("uvloop"):
        peers.update({"utcp-uvloop": "utcp", "tcp-uvloop": "tcp", "udp-uvloop": "udp"})
    if _installed("aioquic", "cryptography"):
        peers["aioquic"] = "aioquic"
    if _installed("aiokcp"):
        peers.update({"aiokcp": "aiokcp", "aiokcp-fast": "aiokcp"})
    return peers


def test_every_scenario_runs_once_for_every_installed_peer(tmp_path: Path) -> None:
    peers = _peers()
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--rounds",
            "1",
            "--bulk-mib",
            "1",
            "--rr-seconds",
            "0.5",
            "--peers",
            ",".join(peers),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [path] = tmp_path.glob("bench-*.json")
    report = json.loads(path.read_text())
    assert list(tmp_path.glob("bench-*.md")), "no markdown table written"
    if _installed("matplotlib"):
        assert list(tmp_path.glob("bench-*.png")), "matplotlib is installed but no PNG was written"

    assert report["machine"]["nproc"] >= 1
    assert report["versions"]["python"]
    assert set(report["summary"]) == set(SCENARIOS)
    for scenario in SCENARIOS:
        for name, kind in peers.items():
            row = report["summary"][scenario][name]
            where = f"{scenario}/{name}: {row}"
            if scenario not in APPLIES[kind]:
                assert row["status"] == "n/a", where
                continue
            assert row["status"] == "ok", where
            [run] = [r for r in report["runs"] if r["scenario"] == scenario and r["peer"] == name]
            m = run["metrics"]
            assert m["bytes"] > 0, where
            assert m["seconds"] > 0, where
            assert m["client_cpu_s"] >= 0 and m["server_cpu_s"] >= 0, where
            if scenario in ("bulk", "lossy", "many"):
                assert m["goodput_mbps"] > 0, where
            if scenario == "rr":
                assert m["count"] > 0 and 0 < m["p50_us"] <= m["p99_us"], where
            if scenario == "connect":
                assert m["count"] > 0 and m["setup_p50_ms"] > 0, where
            if scenario == "many":
                assert m["rss_peak_mib"] > 0, where
    # The table names every peer in every scenario, with the date, machine and versions.
    assert report["date"] in proc.stdout
    for name in peers:
        assert name in proc.stdout
