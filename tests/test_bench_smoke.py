"""The benchmark harness (benchmarks/bench.py) runs every scenario once at a tiny size.

It runs as ``make bench`` does, as separate processes on loopback, with the default peer set
(plus plain ``utcp``, the shipped ``Config``): utcp on both I/O paths and with PMTU discovery,
kernel TCP and raw UDP always (on uvloop too when it is installed), utcp and kernel TCP over
TLS 1.3; aioquic and aiokcp-fast only where the ``bench`` extras are, skipped with a note
otherwise.  Timing is never asserted: only that every scenario x peer produced a sane result,
that each utcp peer ran with its own ``Config`` on both sides, that the TLS peers negotiated
alike and their rows carry the TLS ratios, that every target found its baseline, and that the
outputs were written.  A second test makes the benchmark's certificates both ways it can.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from utcp.config import DEFAULT_DATAGRAM_BYTES
from utcp.packet import HEADER_SIZE

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
TLS_SCENARIOS = ("bulk", "rr", "connect")  # what the -tls peers run; many and lossy are n/a
# Peer -> (kind, modules it needs, utcp Config fields it sets).
PEERS: dict[str, tuple[str, tuple[str, ...], dict[str, object] | None]] = {
    "utcp-portable": ("utcp", (), {"io_path": "portable", "pmtud": False}),
    "utcp-portable-uvloop": ("utcp", ("uvloop",), {"io_path": "portable", "pmtud": False}),
    "utcp-fast": ("utcp", (), {"io_path": "fast", "pmtud": False}),
    "utcp-fast-uvloop": ("utcp", ("uvloop",), {"io_path": "fast", "pmtud": False}),
    "utcp-pmtud": ("utcp", (), {"io_path": "fast", "pmtud": True}),
    "utcp-pmtud-uvloop": ("utcp", ("uvloop",), {"io_path": "fast", "pmtud": True}),
    "utcp": ("utcp", (), {}),
    "tcp": ("tcp", (), None),
    "tcp-uvloop": ("tcp", ("uvloop",), None),
    "utcp-tls": ("utcp", (), {"io_path": "fast", "pmtud": True}),
    "tcp-tls": ("tcp", (), None),
    "udp": ("udp", (), None),
    "udp-uvloop": ("udp", ("uvloop",), None),
    "aioquic": ("aioquic", ("aioquic", "cryptography"), None),
    "aiokcp-fast": ("aiokcp", ("aiokcp",), None),
}
HEADLINE_TARGETS = {  # (peer, scenario, ratio) the headline targets judge
    ("utcp-fast", "bulk", "x_aioquic"),
    ("utcp-fast", "bulk", "x_udp"),
    ("utcp-fast-uvloop", "bulk", "x_udp"),
    ("utcp-pmtud", "bulk", "x_tcp"),
    ("utcp-pmtud-uvloop", "bulk", "x_tcp"),
    ("utcp-fast", "rr", "p50_x_tcp"),
    ("utcp-fast-uvloop", "rr", "p50_x_tcp"),
}


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def test_every_scenario_runs_once_for_every_default_peer(tmp_path: Path) -> None:
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
            "default,utcp",
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
    assert set(report["settings"]["peers"]) == set(PEERS)
    ran = {name for name, (_, needs, _) in PEERS.items() if _installed(*needs)}
    for scenario in SCENARIOS:
        for name, (kind, _, config) in PEERS.items():
            row = report["summary"][scenario][name]
            where = f"{scenario}/{name}: {row}"
            if name not in ran:
                assert row["status"] == "skipped", where
                continue
            applies = TLS_SCENARIOS if name.endswith("-tls") else APPLIES[kind]
            if scenario not in applies:
                assert row["status"] == "n/a", where
                continue
            assert row["status"] == "ok", where
            [run] = [r for r in report["runs"] if r["scenario"] == scenario and r["peer"] == name]
            m = run["metrics"]
            assert m["bytes"] > 0, where
            assert m["seconds"] > 0, where
            assert m["client_cpu_s"] >= 0 and m["server_cpu_s"] >= 0, where
            if config is not None:  # both processes built this peer's own Config
                assert run["client"]["settings"] == config, where
                assert run["server"]["settings"] == config, where
            if scenario in ("bulk", "lossy", "many"):
                assert m["goodput_mbps"] > 0, where
            if scenario == "bulk" and kind == "utcp":
                assert m["bytes_per_segment"] > 0, where
                if config and config.get("pmtud") is False:  # 1452-byte datagrams at most
                    assert m["bytes_per_segment"] <= DEFAULT_DATAGRAM_BYTES - HEADER_SIZE, where
            if scenario == "bulk" and kind == "udp":  # the floor sends utcp's datagram size
                assert run["client"]["datagram_bytes"] == DEFAULT_DATAGRAM_BYTES, where
            if scenario == "rr":
                assert m["count"] > 0 and 0 < m["p50_us"] <= m["p99_us"], where
            if scenario == "connect":
                assert m["count"] > 0 and m["setup_p50_ms"] > 0, where
            if scenario == "many":
                assert m["rss_peak_mib"] > 0, where
            if name.endswith("-tls"):  # TLS 1.3, set beside its plain self and TCP + TLS
                assert run["client"]["tls_version"] == "TLSv1.3", where
                bases = row["baselines"]
                assert bases["x_plain"] == {"utcp-tls": "utcp-pmtud", "tcp-tls": "tcp"}[name], where
                if name == "utcp-tls":
                    assert bases["p50_x_tcp" if scenario == "rr" else "x_tcp"] == "tcp-tls", where
                    if "aioquic" in ran:
                        assert bases["x_aioquic"] == "aioquic", where
    negotiated = report["tls_negotiated"]
    assert negotiated["utcp-tls"] == negotiated["tcp-tls"], negotiated
    assert report["tls"]["made_by"] in ("trustme", "openssl"), report["tls"]

    # Every target whose peer and baseline ran is judged (a skipped one has no data), and the
    # headline ones are all there.
    for target in report["targets"]:
        judgeable = target["peer"] in ran and target["baseline"] in ran
        assert (target["met"] is not None) == judgeable, target
    judged = {(t["peer"], t["scenario"], t["key"]) for t in report["targets"]}
    for peer, scenario, key in HEADLINE_TARGETS:
        baseline = "aioquic" if key == "x_aioquic" else None
        if peer in ran and (baseline is None or baseline in ran):
            assert (peer, scenario, key) in judged, (peer, scenario, key)

    # The table names every peer in every scenario, with the date, machine, versions, targets.
    assert report["date"] in proc.stdout
    assert "targets (I/O paths and PMTU discovery):" in proc.stdout
    for name in ran:
        assert name in proc.stdout


@pytest.mark.parametrize("method", ["trustme", "openssl"])
def test_the_benchmark_certificates_carry_a_tls13_handshake(tmp_path: Path, method: str) -> None:
    """benchmarks/_tls.py's files, made by trustme or by the openssl command, verified by the
    client context for 127.0.0.1: an in-memory handshake, no sockets."""
    if method == "trustme" and not _installed("trustme"):
        pytest.skip("trustme is not installed")
    if method == "openssl" and shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _tls
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert _tls.make_certificates(tmp_path, method=method) == method
    server_bios, client_bios = (
        (ssl.MemoryBIO(), ssl.MemoryBIO()),
        (ssl.MemoryBIO(), ssl.MemoryBIO()),
    )
    server = _tls.server_context(tmp_path).wrap_bio(*server_bios, server_side=True)
    client = _tls.client_context(tmp_path).wrap_bio(*client_bios, server_hostname="127.0.0.1")
    for _ in range(4):  # a TLS 1.3 handshake is done in two flights each way
        for side, (_, outgoing), (incoming, _) in (
            (client, client_bios, server_bios),
            (server, server_bios, client_bios),
        ):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            incoming.write(outgoing.read())
    assert client.version() == server.version() == "TLSv1.3"
    assert client.cipher() == server.cipher()


def test_rr_instructions_times_round_trips_at_full_speed() -> None:
    """``rr_instructions.py --timed`` runs the echo without valgrind and prints a row per
    peer, with the controller asked for."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "rr_instructions.py"),
            "--peers",
            "utcp-fast,tcp",
            "--loops",
            "asyncio",
            "--timed",
            "50",
            "--congestion",
            "newreno",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out[0].split() == ["peer", "loop", "RT/s", "user", "us", "sys", "us", "CPU", "us"]
    rows = {line.split()[0]: line.split()[2:] for line in out[1:]}
    assert set(rows) == {"utcp-fast", "tcp"}
    for rate, user, system, cpu in rows.values():
        assert float(rate.replace(",", "")) > 0
        assert float(cpu) == pytest.approx(float(user) + float(system), abs=0.11)


@pytest.mark.parametrize(
    ("stale", "pure_env", "warned"), [(True, None, True), (True, "1", False), (False, None, False)]
)
def test_a_stale_build_is_named_before_a_benchmark_runs(
    monkeypatch: pytest.MonkeyPatch, stale: bool, pure_env: str | None, warned: bool
) -> None:
    """A source newer than the compiled build (an edit, or the touch of ``git stash``) makes
    ``utcp`` load the sources: the benchmarks say so on stderr before they start, and the
    report's ``utcp_build`` says ``pure (stale build)``, unless UTCP_PURE=1 asked for it."""
    import utcp._build

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(utcp._build, "stale", lambda: stale)
    monkeypatch.setattr(utcp._build, "compiled", lambda: False)
    if pure_env is None:
        monkeypatch.delenv("UTCP_PURE", raising=False)
    else:
        monkeypatch.setenv("UTCP_PURE", pure_env)
    warning = _report.build_warning()
    assert (warning is not None) is warned
    if warning is not None:
        assert "newer than the compiled build" in warning and "make build" in warning
    assert _report.versions()["utcp_build"] == ("pure (stale build)" if warned else "pure")
