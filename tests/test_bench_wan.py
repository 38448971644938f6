"""The WAN benchmark's harness (benchmarks/wan/bench_wan.py): its helpers without root, its link
emulator's build, and (``--run-slow``, as root with /dev/net/tun) one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "wan" / "bench_wan.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_wan", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_wan"] = module
    spec.loader.exec_module(module)
    return module


bench_wan = _load()


def test_jain_index() -> None:
    assert bench_wan.jain_index([10.0, 10.0]) == pytest.approx(1.0)
    assert bench_wan.jain_index([10.0, 0.0]) == pytest.approx(0.5)
    assert bench_wan.jain_index([5.0, 5.0, 5.0, 0.0]) == pytest.approx(0.75)
    assert bench_wan.jain_index([9.0, 3.0]) == pytest.approx(144 / 180)
    assert bench_wan.jain_index([]) is None
    assert bench_wan.jain_index([0.0, 0.0]) is None


def test_median() -> None:
    assert bench_wan.median([3.0, 1.0, 2.0]) == 2.0
    assert bench_wan.median([4.0, 1.0]) == 2.5
    assert bench_wan.median([]) is None


def test_scenarios_are_the_paths_asked_for() -> None:
    s = bench_wan.SCENARIOS
    assert [s[f"20m-{p}"].link.loss for p in (0, 1, 2, 5)] == [0.0, 0.01, 0.02, 0.05]
    for name in ("20m-0", "fair", "coexist"):
        link = s[name].link
        assert (link.rate_mbps, 2 * link.delay_ms, link.queue) == (20.0, 40.0, 50)
    bdp_packets = 100e6 * 0.100 / 8 / 1500
    for name in ("100m-0", "100m-1"):
        link = s[name].link
        assert (link.rate_mbps, 2 * link.delay_ms) == (100.0, 100.0)
        assert link.queue == pytest.approx(bdp_packets, abs=1)
    args = s["20m-1"].link.linkem_args()
    assert args[args.index("--rate") + 1] == "20000000"
    assert args[args.index("--delay-us") + 1] == "20000"
    assert args[args.index("--loss") + 1] == "0.01"


def test_parse_args() -> None:
    quick = bench_wan.parse_args(["--quick"])
    assert quick["runs"] == 1 and quick["scenarios"] == list(bench_wan.QUICK_SCENARIOS)
    assert not quick["validate"]
    full = bench_wan.parse_args(["--utcp-cc", "newreno,bbr", "--scenarios", "20m-0,fair"])
    assert full["runs"] == 3 and full["validate"]
    assert [p.name for p in full["peer_objects"]][-2:] == ["utcp-newreno", "utcp-bbr"]
    with pytest.raises(SystemExit):
        bench_wan.parse_args(["--scenarios", "nowhere"])


def _run(scenario: str, peer: str, goodputs: list[float], ok: bool = True) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "peer": peer,
        "ok": ok,
        "error": None if ok else "boom",
        "flows": [{"peer": peer, "goodput_mbps": g} for g in goodputs],
        "emulator": {"tun_tx_dropped": {"a": 0, "b": 0}},
        "queue_drop_pct": 1.0,
    }


def test_summarize_medians_fairness_and_shares() -> None:
    runs = [
        _run("20m-0", "utcp", [18.0]),
        _run("20m-0", "utcp", [10.0]),
        _run("20m-0", "utcp", [19.0]),
        _run("20m-0", "tcp-cubic", [0.0], ok=False),
        _run("fair", "utcp", [10.0, 10.0]),
        _run("fair", "utcp", [15.0, 5.0]),
        _run("coexist", "utcp", [5.0, 15.0]),
    ]
    report = {"settings": {"scenarios": ["20m-0", "fair", "coexist"]}, "runs": runs}
    summary = bench_wan.summarize(report)
    assert summary["20m-0"]["utcp"]["goodput_mbps"] == 18.0
    assert summary["20m-0"]["tcp-cubic"]["goodput_mbps"] is None
    assert summary["20m-0"]["tcp-cubic"]["ok"] == 0
    assert summary["fair"]["utcp"]["jain"] == pytest.approx((1.0 + 0.8) / 2)
    assert summary["coexist"]["utcp"]["utcp_share"] == pytest.approx(0.25)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_emulator_compiles_warning_free(tmp_path: Path) -> None:
    out = bench_wan.build_linkem(tmp_path / "linkem")
    assert out.exists()
    res = subprocess.run([str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: linkem" in res.stderr


@pytest.mark.slow
@pytest.mark.skipif(not bench_wan.root_and_tun(), reason="needs root and /dev/net/tun")
@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ip") is None, reason="gcc, ip")
def test_tiny_wan_run(tmp_path: Path) -> None:
    cmd = [sys.executable, str(HARNESS), "--quick", "--scenarios", "20m-0", "--runs", "1"]
    cmd += ["--peers", "tcp-cubic,utcp", "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (path,) = tmp_path.glob("bench-wan-*.json")
    report = json.loads(path.read_text())
    rows = report["summary"]["20m-0"]
    for peer in ("tcp-cubic", "utcp"):
        assert rows[peer]["ok"] == 1
        assert 5.0 < rows[peer]["goodput_mbps"] <= 20.0
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in report["namespaces"]:  # deleted by name on the way out
        assert name.startswith("utcpwan-") and name not in listing.split()
