"""The WAN benchmark's harness (benchmarks/wan/bench_wan.py): its helpers without root (the
kcp-latency scenario's message protocol and statistics among them), its link emulator's build,
and (``--run-slow``, as root with /dev/net/tun) one tiny end-to-end run."""

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
latency = bench_wan.latency  # benchmarks/wan/_wan_latency.py, as the harness imports it


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
        # long enough at the link rate that STARTUP (about 0.7 s) is a small part of it
        assert s[name].mib * bench_wan.MIB * 8 / 100e6 >= 8.0
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


def test_scenario_selection() -> None:
    select = bench_wan.select_scenarios
    assert select("all") == list(bench_wan.SCENARIOS)
    assert select("all", quick=True) == list(bench_wan.QUICK_SCENARIOS)
    assert "kcp-latency" in bench_wan.QUICK_SCENARIOS
    assert select("none") == [] and select("") == []
    assert select("20m,100m") == ["20m-0", "20m-1", "20m-2", "20m-5", "100m-0", "100m-1"]
    assert select("kcp-latency, 20m-1,20m") == ["kcp-latency", "20m-1", "20m-0", "20m-2", "20m-5"]
    controllers = select("controllers")
    assert "fair" not in controllers
    for name in ("20m-0", "20m-1", "20m-2", "20m-5", "100m-0", "100m-1", "coexist", "kcp-latency"):
        assert name in controllers
    with pytest.raises(ValueError, match="nowhere"):
        select("20m-0,nowhere")


def test_utcp_cc_comma_list_or_repeated() -> None:
    assert bench_wan.controller_names(["cubic,ledbat", " bbr", "cubic", ""]) == [
        "cubic",
        "ledbat",
        "bbr",
    ]
    s = bench_wan.parse_args(["--utcp-cc", "cubic,ledbat", "--utcp-cc", "bbr", "--peers", "utcp"])
    assert [(p.name, p.variant) for p in s["peer_objects"]] == [
        ("utcp", "default"),
        ("utcp-cubic", "cubic"),
        ("utcp-ledbat", "ledbat"),
        ("utcp-bbr", "bbr"),
    ]
    assert bench_wan.parse_args([])["latency_messages"] == 0  # the scenario's 1000
    assert bench_wan.parse_args(["--latency-messages", "100"])["latency_messages"] == 100
    with pytest.raises(SystemExit):
        bench_wan.parse_args(["--latency-messages", "-1"])


def test_kcp_latency_is_kcps_test_path() -> None:
    sc = bench_wan.SCENARIOS["kcp-latency"]
    link = sc.link
    # KCP's test.cpp: 10% loss and RTT 60-125 ms, split evenly between the two directions.
    assert (link.loss, link.delay_ms, link.delay_ms + link.jitter_ms) == (0.05, 30.0, 62.5)
    assert link.rate_mbps == 0  # no rate limit: nothing queues
    args = link.linkem_args()
    assert args[args.index("--jitter-us") + 1] == "32500"
    assert args[args.index("--delay-us") + 1] == "30000"
    assert args[args.index("--rate") + 1] == "0"
    assert "30-62.5 ms each way" in link.describe() and "queue" not in link.describe()
    assert sc.messages * sc.interval_ms / 1000 == 20.0  # seconds of sending per run
    runs = {p.name for p in bench_wan.BASE_PEERS if sc.applies(p.name, p.kind)}
    assert runs == {"tcp-cubic", "tcp-bbr", "utcp", "aiokcp-fast"}
    cc = bench_wan.utcp_cc_peer("ledbat")
    assert sc.applies(cc.name, cc.kind)
    assert all(bench_wan.SCENARIOS["20m-1"].applies(p.name, p.kind) for p in bench_wan.BASE_PEERS)


def test_message_codec() -> None:
    data = latency.encode_message(7, 123_456)
    assert len(data) == latency.MESSAGE_BYTES == 8
    assert latency.decode_message(data) == (7, 123_456)
    assert latency.decode_message(latency.encode_message(1, 2**32 + 5)) == (1, 5)
    with pytest.raises(ValueError):
        latency.decode_message(data[:7])
    assert latency.elapsed_us(1_500, 1_000) == 500
    assert latency.elapsed_us(100, 2**32 - 400) == 500  # across the wrap


def test_echo_log_parses_any_chunking() -> None:
    log = latency.EchoLog()
    sent = b"".join(log.send(1_000_000 + 20_000 * i) for i in range(3))
    assert log.feed(sent[:5], 1_100_000) == 0  # half a message: nothing yet
    assert log.feed(sent[5:19], 1_150_000) == 2  # the rest of #0, #1 whole, 3 bytes of #2
    assert log.feed(sent[19:], 1_200_000) == 1
    assert log.complete()
    res = log.result()
    assert res["rtt_ms"] == [150.0, 130.0, 160.0]
    assert (res["sent"], res["echoed"], res["missing"]) == (3, 3, 0)
    assert (res["out_of_order"], res["invalid"], res["partial_bytes"]) == (0, 0, 0)
    assert res["avg_rtt_ms"] == pytest.approx(440 / 3)
    assert res["p99_rtt_ms"] == 160.0 and res["max_rtt_ms"] == 160.0


def test_echo_log_counts_what_a_stream_must_not_do() -> None:
    log = latency.EchoLog()
    msgs = [log.send(i * 20_000) for i in range(5)]
    log.feed(msgs[0] + msgs[2], 100_000)  # #1 skipped
    log.feed(msgs[1], 110_000)  # late: out of order
    log.feed(msgs[2], 120_000)  # twice
    log.feed(latency.encode_message(3, 999), 130_000)  # altered timestamp
    log.feed(latency.encode_message(9, 0), 140_000)  # never sent
    res = log.result()
    assert not log.complete()
    assert (res["echoed"], res["missing"]) == (3, 2)  # #3 and #4 never came back intact
    assert res["out_of_order"] == 2  # #2 after #0, #1 after #2
    assert res["invalid"] == 3


def test_percentile_nearest_rank() -> None:
    values = [float(x) for x in range(100, 0, -1)]  # 1..100, unsorted
    assert latency.percentile(values, 99) == 99.0
    assert latency.percentile(values, 50) == 50.0
    assert latency.percentile(values, 100) == 100.0
    assert latency.percentile(values, 0) == 1.0
    assert latency.percentile([float(x) for x in range(1, 1001)], 99) == 990.0
    assert latency.percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert latency.percentile([5.0], 99) == 5.0
    assert latency.percentile([], 99) is None
    assert latency.rtt_stats([])["avg_rtt_ms"] is None


def _latency_run(peer: str, avg: float, p99: float, echoed: int = 100) -> dict[str, Any]:
    result = {
        "sent": 100,
        "echoed": echoed,
        "missing": 100 - echoed,
        "out_of_order": 0,
        "invalid": 0,
        "avg_rtt_ms": avg,
        "p50_rtt_ms": avg - 10,
        "p99_rtt_ms": p99,
        "max_rtt_ms": p99 + 50,
    }
    run = _run("kcp-latency", peer, [])
    run["flows"] = [{"peer": peer, **result}]
    run.update(loss_drop_pct=5.1, loss_drop_pct_ba=4.9, queue_drop_pct=0.0)
    return run


def _peer(name: str, kind: str, label: str, unavailable: str = "") -> dict[str, Any]:
    return {"name": name, "kind": kind, "variant": "", "label": label, "unavailable": unavailable}


def test_latency_summary_and_report() -> None:
    runs = [
        _latency_run("tcp-bbr", 140.0, 380.0),
        _latency_run("tcp-bbr", 150.0, 360.0),
        _latency_run("tcp-bbr", 145.0, 400.0),
        _latency_run("utcp", 160.0, 400.0),
        _latency_run("utcp", 170.0, 420.0, echoed=99),
        _run("20m-0", "utcp", [18.0]),
        _run("20m-0", "tcp-cubic", [19.0]),
        _run("coexist", "utcp", [5.0, 15.0]),
    ]
    peers = [
        _peer("tcp-cubic", "tcp", "kernel TCP cubic"),
        _peer("tcp-bbr", "tcp", "kernel TCP bbr"),
        _peer("tcp-reno", "tcp", "kernel TCP reno"),
        _peer("utcp", "utcp", "utcp Config()"),
        _peer("utcp-ledbat", "utcp", "utcp ledbat", unavailable="utcp rejects it"),
    ]
    scenarios = ["20m-0", "coexist", "kcp-latency"]
    report: dict[str, Any] = {
        "date": "2026-12-05 12:00:00",
        "machine": {"nproc": 2, "cpu_model": "cpu", "kernel": "6", "load_average": [0.5]},
        "versions": {"python": "3.11"},
        "settings": {
            "scenarios": scenarios,
            "peers": peers,
            "runs": 3,
            "seed": 1000,
            "cap_s": 15.0,
            "scale": 1.0,
            "shared_seconds": 0.0,
            "latency_messages": 100,
        },
        "runs": runs,
        "notes": [],
        "validation": [],
    }
    summary = bench_wan.summarize(report)
    bbr = summary["kcp-latency"]["tcp-bbr"]
    assert (bbr["avg_rtt_ms"], bbr["p99_rtt_ms"]) == (145.0, 380.0)  # medians over the runs
    assert (bbr["sent"], bbr["echoed"], bbr["missing"]) == (300, 300, 0)  # summed
    assert bbr["loss_drop_pct_ba"] == pytest.approx(4.9)
    assert summary["kcp-latency"]["utcp"]["avg_rtt_ms"] == 165.0
    assert summary["kcp-latency"]["utcp"]["missing"] == 1
    report["summary"] = summary
    text = bench_wan.render(report)
    lines = text.splitlines()
    assert "| kernel TCP bbr | 145 | 380 | 135 | 430 | 300 | 300 | 5.1 / 4.9 | 3/3 |" in lines
    assert "| utcp Config() | 165 | 410 | 155 | 460 | 200 | 199 (**1 missing**) " in text
    assert "| utcp ledbat | n/a |" in text  # unavailable: shown, with the reason in the notes
    assert "kernel TCP reno |" not in text.split("KCP's latency test")[1]  # not a peer of it
    assert "kernel TCP cubic |" not in text.split("KCP's latency test")[1]  # did not run
    # The coexist row: utcp's share, and each flow alone on the idle link of the same run.
    (row,) = [ln for ln in lines if "(coexist)" in ln]
    assert row.endswith("| 25% | 18.0 | 19.0 |")
    report["settings"]["scenarios"] = ["coexist"]
    del report["summary"]["20m-0"]
    assert "need 20m-0 in the same run" in bench_wan.render(report)


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


@pytest.mark.parametrize(("uid", "tun"), [(1000, True), (0, False)])
def test_without_root_or_tun_it_skips_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], uid: int, tun: bool
) -> None:
    """Not root, or no /dev/net/tun: the benchmark says why and exits 0, building and opening
    nothing (issue 19: "It needs root and skips with a clear message without it")."""

    def must_not_run(*_args: object, **_kw: object) -> None:
        raise AssertionError("the benchmark went on without root or /dev/net/tun")

    monkeypatch.setattr(bench_wan.os, "geteuid", lambda: uid)
    real_exists = bench_wan.os.path.exists
    monkeypatch.setattr(
        bench_wan.os.path, "exists", lambda p: tun if p == "/dev/net/tun" else real_exists(p)
    )
    monkeypatch.setattr(bench_wan, "build_linkem", must_not_run)
    monkeypatch.setattr(bench_wan.Testbed, "remove_stale", must_not_run)
    assert bench_wan.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(bench_wan.SKIP_MESSAGE)
    assert f"running as uid {uid}" in out
