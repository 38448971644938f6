"""Connection traces from real sockets: ``Config(trace_dir=...)`` and ``UTCP_TRACE`` give each
connection its file, both ends agree on the numbers, and ``utcp perf --trace`` writes traces
that ``utcp ladder`` and ``utcp plot`` read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import utcp
from tests.aio_helpers import (
    HOST,
    Handlers,
    Runner,
    echo,
    echo_round_trip,
    make_run_fixture,
    server_port,
)
from utcp import Config
from utcp.tools.traceview import Closed, Datagram, ladder_lines, load_trace

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

run = make_run_fixture()


def test_both_ends_trace_an_echo(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UTCP_TRACE", raising=False)
    cfg = Config(trace_dir=str(tmp_path), msl_s=0.1)

    async def main() -> None:
        handlers = Handlers(echo)
        server = await utcp.start_server(handlers, HOST, 0, config=cfg)
        reader, writer = await utcp.open_connection(HOST, server_port(server), config=cfg)
        await echo_round_trip(reader, writer, b"traced")
        await handlers.wait_finished(1)
        server.close()
        await server.wait_closed()

    run(main())
    (client_file,) = tmp_path.glob("*-client.jsonl")
    (server_file,) = tmp_path.glob("*-server.jsonl")
    client, server = load_trace(client_file), load_trace(server_file)
    assert client.header.peer == server.header.local
    sent = [e for e in client.events if isinstance(e, Datagram) and e.sent]
    got = [e for e in server.events if isinstance(e, Datagram) and not e.sent]
    assert sent[0].flags == "SYN" and got[0].flags == "SYN"
    assert sent[0].seq == got[0].seq == client.header.iss
    text = "\n".join(ladder_lines(client))
    x, y = client.header.iss, server.header.iss
    for needle in (
        f"SYN seq={x}",
        f"SYN+ACK seq={y} ack={(x + 1) % 2**32}",
        f"ACK seq={(x + 1) % 2**32} ack={(y + 1) % 2**32}",
    ):
        assert needle in text, text
    assert [e.reason for e in client.events if isinstance(e, Closed)] == ["closed"]


def test_no_trace_files_when_tracing_is_off(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UTCP_TRACE", raising=False)
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        server = await utcp.start_server(Handlers(echo), HOST, 0)
        reader, writer = await utcp.open_connection(HOST, server_port(server))
        await echo_round_trip(reader, writer, b"x")
        server.close()
        await server.wait_closed()

    run(main())
    assert list(tmp_path.rglob("*.jsonl")) == []


def test_perf_trace_writes_traces_that_plot_and_ladder_read(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    env = {k: v for k, v in os.environ.items() if k != "UTCP_TRACE"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "utcp",
            "perf",
            "--server",
            "--port",
            "0",
            "--trace",
            str(tmp_path / "srv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = line.rsplit(":", 1)[1].strip()
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "utcp",
                "perf",
                HOST,
                port,
                "--bytes",
                "1M",
                "--trace",
                str(tmp_path / "cli"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert client.returncode == 0, client.stderr
        assert "traces in" in client.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    (trace,) = (tmp_path / "cli").glob("*-client.jsonl")
    assert list((tmp_path / "srv").glob("*-server.jsonl"))
    ladder = subprocess.run(
        [sys.executable, "-m", "utcp", "ladder", str(trace), "--limit", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ladder.returncode == 0 and " SYN seq=" in ladder.stdout, ladder.stderr
    png = tmp_path / "perf.png"
    plot = subprocess.run(
        [sys.executable, "-m", "utcp", "plot", str(trace), "-o", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert plot.returncode == 0, plot.stderr
    assert png.stat().st_size > 10_000
