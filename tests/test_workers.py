"""Worker processes sharing one port (``utcp.serve(..., workers=N)``, ``utcp.WorkerGroup``):
real processes (tests/workers_app.py) serving real sockets.  The steering holds every
connection to the worker that accepted it (a datagram reaching another worker would draw a
reset), a killed worker's connections end with resets while the other worker's go on, the
dead worker is reported and started again, and a stop signal ends every worker."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import utcp
from tests.aio_helpers import HOST, Runner, make_run_fixture, seeded_bytes
from tests.cli_helpers import UTCP, background, utcp_cli
from utcp import Config
from utcp.asyncio import workers as workers_module

pytestmark = [
    pytest.mark.sockets,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes: Linux"),
]

run = make_run_fixture()
APP = Path(__file__).resolve().parent / "workers_app.py"
ROOT = APP.parent.parent
WAIT_S = 30.0  # only reached when something hangs


class App:
    """tests/workers_app.py running in a subprocess, its JSON events read as they come."""

    def __init__(self, workers: int, *hosts: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), str(workers), *hosts],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.addresses = self.next("ready")["ready"]
        self.port = int(self.addresses[0][1])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, key: str) -> dict[str, Any]:
        """The next event carrying ``key`` (earlier events of other kinds are skipped)."""
        while True:
            event = self.events.get(timeout=WAIT_S)
            if key in event:
                return event

    def stop(self, wait_s: float = WAIT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=wait_s)


@pytest.fixture
def two_workers() -> Iterator[App]:
    app = App(2)
    try:
        yield app
    finally:
        app.stop()


def _children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


async def _open(port: int, host: str = HOST) -> tuple[int, asyncio.StreamReader, Any]:
    """A connection and the pid of the worker that serves it."""
    reader, writer = await utcp.open_connection(host, port)
    return int(await reader.readline()), reader, writer


async def _echo(port: int, seed: int, size: int) -> int:
    """Echo ``size`` seeded bytes; the serving worker's pid."""
    pid, reader, writer = await _open(port)
    data = seeded_bytes(seed, size)
    writer.write(data)
    writer.write_eof()
    assert await reader.readexactly(size) == data
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    return pid


def test_connections_spread_over_workers_and_each_stays_with_its_own(
    run: Runner, two_workers: App
) -> None:
    """48 concurrent 128 KiB echoes: the SYNs spread over both workers, and every byte of
    every connection comes back (a datagram steered to the other worker would reset it)."""

    async def main() -> Counter[int]:
        pids = await asyncio.gather(
            *(_echo(two_workers.port, seed, 128 * 1024) for seed in range(48))
        )
        return Counter(pids)

    served = run(main())
    assert set(served) == _children_of(two_workers.proc.pid)
    assert len(served) == 2 and sum(served.values()) == 48


def test_a_killed_worker_resets_its_connections_and_the_other_keeps_serving(
    run: Runner, two_workers: App
) -> None:
    async def main() -> None:
        conns = []
        while len({pid for pid, _, _ in conns}) < 2 or len(conns) < 8:
            conns.append(await _open(two_workers.port))
            assert len(conns) < 64, "every connection went to one worker"
        victim = conns[0][0]
        os.kill(victim, signal.SIGKILL)
        died = await asyncio.to_thread(two_workers.next, "died")
        assert (died["pid"], died["returncode"]) == (victim, -signal.SIGKILL)
        for pid, reader, writer in conns:
            writer.write(b"ping\n")
            if pid == victim:
                with pytest.raises(ConnectionResetError):
                    await reader.readline()
            else:
                assert await reader.readline() == b"ping\n"
            writer.close()
        # Started again on its socket: new connections reach both workers once more.
        survivors = {pid for pid, _, _ in conns} - {victim}
        seen: set[int] = set()
        for seed in range(64):
            seen.add(await _echo(two_workers.port, seed, 1000))
            if len(seen) == 2:
                break
        assert survivors < seen and victim not in seen

    run(main())
    assert len(_children_of(two_workers.proc.pid)) == 2


def test_a_stop_signal_ends_every_worker(run: Runner) -> None:
    app = App(3)
    try:
        workers = _children_of(app.proc.pid)
        assert len(workers) == 3
        run(_echo(app.port, 1, 10_000))
    finally:
        code = app.stop()
    assert code == 0
    assert app.next("stopped") == {"stopped": True}
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def test_a_stop_resets_connections_whose_peer_went_silent(run: Runner) -> None:
    """Connections the client closed and then stopped answering (its loop idle: the FIN
    exchange never completes) are reset after the grace period (1 s here), not waited on
    until the supervisor's SIGKILL (10 s)."""
    app = App(2)
    try:

        async def main() -> None:
            for _ in range(6):
                _pid, reader, writer = await _open(app.port)
                writer.write(b"x\n")
                assert await reader.readline() == b"x\n"
                writer.close()

        run(main())
    finally:
        code = app.stop(wait_s=8.0)
    assert code == 0


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_every_address_is_steered(run: Runner) -> None:
    """Two hosts: one port group per address, each with its steering program."""
    try:
        app = App(2, "127.0.0.1", "::1")
    except queue.Empty:
        pytest.skip("::1 cannot be bound here")
    try:
        assert len(app.addresses) == 2
        assert app.addresses[0][1] == app.addresses[1][1]

        async def main() -> set[int]:
            pids = set()
            for host in (HOST, "::1"):
                for seed in range(16):
                    pid, reader, writer = await _open(app.port, host)
                    data = seeded_bytes(seed, 64 * 1024)
                    writer.write(data)
                    assert await reader.readexactly(len(data)) == data
                    writer.close()
                    pids.add(pid)
            return pids

        assert run(main()) == _children_of(app.proc.pid)
    finally:
        app.stop()


def test_one_worker_serves_in_this_process(run: Runner) -> None:
    app = App(1)
    try:
        assert run(_echo(app.port, 7, 50_000)) == app.proc.pid
        assert _children_of(app.proc.pid) == set()
    finally:
        assert app.stop() == 0


# ---------------------------------------------------------------------------- arguments


def _handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_serve_refuses_a_worker_count_that_is_not_a_positive_integer(workers: Any) -> None:
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        utcp.serve(_handler, HOST, 0, workers=workers)


@pytest.mark.parametrize("keyword", ["sock", "reuse_port", "start_serving", "worker"])
def test_serve_binds_its_own_sockets(keyword: str) -> None:
    with pytest.raises(TypeError, match=keyword):
        utcp.serve(_handler, HOST, 0, workers=2, **{keyword: None})


def test_worker_processes_need_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module.sys, "platform", "darwin")
    with pytest.raises(OSError, match="need Linux"):
        utcp.serve(_handler, HOST, 0, workers=2)


def test_the_worker_bits_and_the_server_id_share_sixteen_bits() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        utcp.serve(_handler, HOST, 0, workers=3, config=Config(server_id_bits=15))
    group = utcp.WorkerGroup(3, server_id_bits=14)
    assert group.bits == 2
    group.close()


def test_run_needs_an_address_and_the_main_thread() -> None:
    async def main(worker: utcp.Worker) -> None:
        raise AssertionError("not forked")

    group = utcp.WorkerGroup(2)
    with pytest.raises(RuntimeError, match="bind"):
        group.run(main)
    group.bind(HOST, 0)
    try:
        errors: list[BaseException] = []

        def in_thread() -> None:
            try:
                group.run(main)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        assert "main thread" in str(errors[0])
    finally:
        group.close()


def test_the_sockets_of_a_group_share_one_port_in_order() -> None:
    group = utcp.WorkerGroup(4)
    try:
        (address,) = group.bind(HOST, 0)
        ports = {group.worker(i).sockets[0].getsockname()[1] for i in range(4)}
        assert ports == {address[1]}
        assert group.worker(2).server_keywords() == {
            "sock": [group.worker(2).sockets[0]],
            "worker": 2,
            "workers": 4,
        }
    finally:
        group.close()


def test_create_server_takes_worker_and_workers_together(run: Runner) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="go together"):
            await utcp.start_server(_handler, HOST, 0, worker=1)
        with pytest.raises(ValueError, match=r"0\.\.workers-1"):
            await utcp.start_server(_handler, HOST, 0, worker=2, workers=2)
        with pytest.raises(ValueError, match="empty"):
            await utcp.start_server(_handler, sock=[])

    run(main())


# ---------------------------------------------------------------------------- the CLI


def test_echo_server_with_workers_serves_from_both(run: Runner) -> None:
    with background(["echo-server", "--port", "0", "--workers", "2"]) as (proc, port):
        workers = _children_of(proc.pid)
        assert len(workers) == 2
        results = [utcp_cli("cat", HOST, str(port), stdin=b"x" * 70_000) for _ in range(6)]
        for result in results:
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"x" * 70_000
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert f"pid {victim}) killed by SIGKILL" in line and "starting it again" in line
        again = utcp_cli("cat", HOST, str(port), stdin=b"after")
        assert again.stdout == b"after"


def test_perf_server_with_workers() -> None:
    with background(["perf", "--server", "--port", "0", "--workers", "2"]) as (_, port):
        result = utcp_cli("perf", HOST, str(port), "-n", "1M", "-P", "4", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == 4 << 20


def test_tunnel_server_end_with_workers(run: Runner) -> None:
    """The server end of a tunnel in two workers, to a TCP echo server: connections over utcp
    come back whole from both workers."""
    backend = socket.create_server((HOST, 0))
    threading.Thread(target=_tcp_echo, args=(backend,), daemon=True).start()
    to = f"tcp:{HOST}:{backend.getsockname()[1]}"
    args = ["tunnel", "--listen", f"utcp:{HOST}:0", "--to", to, "--workers", "2"]
    proc = subprocess.Popen([*UTCP, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("tunnel (2 workers) utcp://"), line
        port = int(line.split()[3].rsplit(":", 1)[1])
        assert len(_children_of(proc.pid)) == 2

        async def main() -> None:
            for seed in range(8):
                reader, writer = await utcp.open_connection(HOST, port)
                data = seeded_bytes(seed, 100_000)
                writer.write(data)
                writer.write_eof()
                assert await reader.read() == data
                writer.close()

        run(main())
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=WAIT_S)[0]
        assert out.count("tunnel worker") == 2 and proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        backend.close()


def _tcp_echo(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_echo_one, args=(conn,), daemon=True).start()


def _echo_one(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["echo-server", "--workers", "0"], "at least 1"),
        (["perf", HOST, "1", "--workers", "2"], "--workers is for --server"),
        (["tunnel", "--listen", "tcp:0", "--to", "utcp:127.0.0.1:9", "--workers", "2"], "utcp"),
    ],
)
def test_workers_options_that_make_no_sense_exit_2(args: list[str], needle: str) -> None:
    result = utcp_cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr.decode()


def test_the_scaling_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/scaling.py --quick, utcp alone, end to end: both worker counts measured."""
    out = tmp_path / "rows.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scaling.py"),
            "--quick",
            "--stacks",
            "utcp",
            "--work-us",
            "200",
            "--scenarios",
            "rr,connect",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["stack"], r["workers"]) for r in rows] == [("utcp", 1), ("utcp", 2)]
    assert all(r["rr_per_s"] > 0 and r["connect_per_s"] > 0 for r in rows)
    assert "2 / 1" in result.stdout
