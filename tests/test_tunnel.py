"""``utcp tunnel`` end to end: real TCP programs through both tunnel ends as separate processes.

curl against ``python -m http.server`` with ``utcp netem`` dropping 2% between the ends,
redis-benchmark against redis-server (slow), and plain sockets for half-close, resets,
backpressure and a server end that vanishes.  Every process is stopped by its fixture, also
when a test fails; time appears only as generous hang guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.cli_helpers import UTCP, poll_until, utcp_cli
from utcp.tools.tunnel import Tunnel, TunnelAddress, parse_address

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

HOST = "127.0.0.1"
KIB = 1 << 10
MIB = 1 << 20
HANG_S = 30  # the longest any single step may take before the test calls it a hang
START_S = 20  # a process prints its address within this, even on a loaded machine


# ------------------------------------------------------------------------------ processes


class Proc:
    """A running process whose stdout is read line by line with a deadline."""

    def __init__(self, name: str, args: Sequence[str], log: Path, cwd: Path | None) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=cwd,
        )
        self._buffer = b""

    def wait_for(self, pattern: str, timeout: float = START_S) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``; fail if the process exits first."""
        stdout = self.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                seen.append(line)
                if m := re.search(pattern, line):
                    return m
            left = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(left, 0))
            chunk = os.read(stdout.fileno(), 65536) if ready else b""
            if not chunk:
                pytest.fail(
                    f"{self.name} printed {seen!r}, not {pattern!r} "
                    f"({'exited' if ready else 'timed out'}); its stderr: {self.stderr()[-2000:]}"
                )
            self._buffer += chunk

    def stderr(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Signal the process, wait for it and return the rest of its stdout."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            out, _ = self.popen.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, _ = self.popen.communicate()
        self._log_file.close()
        return (self._buffer + out).decode(errors="replace")


class Procs:
    """Starts processes and guarantees they are all gone afterwards."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Proc] = []

    def start(self, name: str, args: Sequence[str], *, cwd: Path | None = None) -> Proc:
        proc = Proc(name, args, self.logs / f"{name}.{len(self.running)}.log", cwd)
        self.running.append(proc)
        return proc

    def utcp(self, name: str, *args: str) -> Proc:
        return self.start(name, [*UTCP, *args])

    def tunnel(self, name: str, listen: str, to: str, *flags: str) -> tuple[Proc, int]:
        """Start a tunnel end; return it and its listening port."""
        proc = self.utcp(name, "tunnel", "--listen", listen, "--to", to, *flags)
        m = proc.wait_for(r"^tunnel u?tcp://127\.0\.0\.1:(\d+) -> ")
        return proc, int(m.group(1))

    def close(self) -> list[str]:
        """Stop every process (SIGTERM, then SIGKILL); return the tracebacks they logged."""
        for proc in self.running:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        problems = []
        for proc in self.running:
            try:
                proc.popen.wait(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
                problems.append(f"{proc.name} ignored SIGTERM")
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
            proc._log_file.close()
            text = proc.log.read_text(errors="replace")
            if "Traceback" in text or "exception" in text.lower():
                problems.append(f"{proc.name}: {text[-3000:]}")
        return problems


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    problems = p.close()
    assert not problems, "\n".join(problems)


class Chain:
    """The client end (TCP in), optionally netem, and the server end (TCP out to ``target``)."""

    def __init__(
        self, procs: Procs, target: int, *flags: str, netem: Sequence[str] | None = None
    ) -> None:
        self.server, server_port = procs.tunnel(
            "server-end", f"utcp:{HOST}:0", f"tcp:{HOST}:{target}", *flags
        )
        utcp_port = server_port
        self.netem: Proc | None = None
        if netem is not None:
            self.netem = procs.utcp(
                "netem", "netem", "--listen", f"{HOST}:0", "--to", f"{HOST}:{server_port}", *netem
            )
            m = self.netem.wait_for(r"^netem relaying udp://127\.0\.0\.1:(\d+) -> ")
            utcp_port = int(m.group(1))
        self.client, self.port = procs.tunnel(
            "client-end", f"tcp:{HOST}:0", f"utcp:{HOST}:{utcp_port}", *flags
        )

    def connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=HANG_S)
        sock.settimeout(HANG_S)
        return sock


def closed_lines(proc: Proc) -> list[str]:
    """The per-connection lines a tunnel end has written to stderr so far."""
    return [line for line in proc.stderr().splitlines() if line.startswith("tunnel: connection ")]


# ------------------------------------------------------------------------------ TCP servers


class Backend(socketserver.ThreadingTCPServer):
    """A threaded TCP server on loopback whose handler is a plain function of the socket."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle_socket = handle
        self.errors: list[BaseException] = []
        super().__init__((HOST, 0), _BackendHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _BackendHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Backend)
        self.request.settimeout(HANG_S)
        try:
            server.handle_socket(self.request)
        except BaseException as exc:
            server.errors.append(exc)


@pytest.fixture
def backend() -> Iterator[Callable[[Callable[[socket.socket], None]], Backend]]:
    started: list[Backend] = []

    def start(handle: Callable[[socket.socket], None]) -> Backend:
        server = Backend(handle)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(256 * KIB):
        chunks.append(data)
    return b"".join(chunks)


def reset_close(sock: socket.socket) -> None:
    """Close with an RST: SO_LINGER on with a zero timeout."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ HTTP


@pytest.fixture(scope="module")
def http_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, dict[str, str]]]:
    """http.server serving a 20 MiB and a 1 MiB file, reached through both tunnel ends with
    2% loss each way between them."""
    root = tmp_path_factory.mktemp("http")
    www = root / "www"
    www.mkdir()
    rng = random.Random(20)
    digests = {}
    for name, size in (("big.bin", 20 * MIB), ("small.bin", 1 * MIB)):
        data = rng.randbytes(size)
        (www / name).write_bytes(data)
        digests[name] = sha256(data)
    procs = Procs(root)
    try:
        port = _http_server(procs, www)
        chain = Chain(procs, port, netem=["--loss", "2%", "--seed", "7"])
        yield chain, digests
    finally:
        problems = procs.close()
    assert not problems, "\n".join(problems)


def _http_server(procs: Procs, www: Path) -> int:
    """``python -m http.server`` serving ``www`` on a free port; its port."""
    http = procs.start(
        "http.server", [sys.executable, "-u", "-m", "http.server", "--bind", HOST, "0"], cwd=www
    )
    return int(http.wait_for(r"port (\d+)").group(1))


def curl(port: int, name: str, out: Path) -> subprocess.Popen[bytes]:
    curl_bin = shutil.which("curl")
    if curl_bin is None:
        pytest.skip("curl is not installed")
    return subprocess.Popen(
        [curl_bin, "-sS", "--fail", "--max-time", "120", "-o", str(out),
         f"http://{HOST}:{port}/{name}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_http_20_mib_through_2_percent_loss(
    http_chain: tuple[Chain, dict[str, str]], tmp_path: Path
) -> None:
    chain, digests = http_chain
    out = tmp_path / "big.bin"
    proc = curl(chain.port, "big.bin", out)
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err.decode()
    assert sha256(out.read_bytes()) == digests["big.bin"]


def test_http_20_parallel_requests(
    http_chain: tuple[Chain, dict[str, str]], tmp_path: Path
) -> None:
    # Each fetches the 1 MiB file: 20 x 20 MiB takes about 15 s on an idle 2-core machine,
    # too long for the default run; the file above covers the large transfer.
    chain, digests = http_chain
    jobs = [curl(chain.port, "small.bin", tmp_path / f"small{i}.bin") for i in range(20)]
    for i, proc in enumerate(jobs):
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, f"request {i}: {err.decode()}"
        assert sha256((tmp_path / f"small{i}.bin").read_bytes()) == digests["small.bin"]

    def small_ones() -> list[str]:  # 1 MiB and the response's headers
        return [
            line
            for line in closed_lines(chain.client)
            if MIB < int(re.findall(r"down (\d+) B", line)[0]) < MIB + KIB
        ]

    poll_until(lambda: len(small_ones()) >= 20, "the 20 connections are logged")
    assert all(line.endswith(", closed") for line in closed_lines(chain.client))


# ------------------------------------------------------------------------------ half-close


def test_half_close_still_receives_the_whole_answer(
    procs: Procs, backend: Callable[..., Backend]
) -> None:
    answer = random.Random(3).randbytes(3 * MIB)

    def answer_after_eof(sock: socket.socket) -> None:
        request = recv_all(sock)  # until the client's half-close arrives as EOF
        sock.sendall(sha256(request).encode() + b"\n" + answer)
        sock.close()

    server = backend(answer_after_eof)
    chain = Chain(procs, server.port)
    request = random.Random(4).randbytes(200 * KIB)
    with chain.connect() as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = recv_all(sock)
    digest, _, body = reply.partition(b"\n")
    assert digest.decode() == sha256(request)
    assert body == answer
    assert not server.errors

    # The client end's log line and its counters on exit tell the same story.
    poll_until(lambda: bool(closed_lines(chain.client)), "the connection is logged")
    (line,) = closed_lines(chain.client)
    assert f"up {len(request)} B, down {len(reply)} B" in line and line.endswith(", closed")
    out = chain.client.stop(signal.SIGTERM)
    assert chain.client.popen.returncode == 0
    assert (
        f"connections=1 active=0 closed=1 errors=0 bytes_up={len(request)} "
        f"bytes_down={len(reply)}" in out
    ), out


# ------------------------------------------------------------------------------ resets


def test_a_reset_on_one_side_resets_the_other(
    procs: Procs, backend: Callable[..., Backend]
) -> None:
    seen: list[str] = []
    got_reset = threading.Event()

    def handle(sock: socket.socket) -> None:
        command = sock.recv(64)
        if command == b"reset me":
            reset_close(sock)  # the server resets: the client must see ECONNRESET
            return
        sock.sendall(b"ready")
        try:
            data = sock.recv(64)  # the client resets: we must see ECONNRESET, not EOF
            seen.append(f"recv {data!r}")
        except ConnectionResetError:
            seen.append("reset")
        got_reset.set()

    server = backend(handle)
    chain = Chain(procs, server.port)

    with chain.connect() as sock:
        sock.sendall(b"reset me")
        with pytest.raises(ConnectionResetError):
            sock.recv(64)

    sock = chain.connect()
    sock.sendall(b"hello")
    assert sock.recv(64) == b"ready"
    reset_close(sock)
    assert got_reset.wait(HANG_S), "the server never saw the client's reset"
    assert seen == ["reset"]

    poll_until(lambda: len(closed_lines(chain.client)) == 2, "both connections are logged")
    reasons = {
        int(line.split()[2]): line.rpartition(", ")[2] for line in closed_lines(chain.client)
    }
    assert reasons == {1: "utcp reset", 2: "tcp reset"}


def test_nobody_at_the_far_end_resets_the_client(procs: Procs) -> None:
    with socket.socket() as unused:
        unused.bind((HOST, 0))
        free_port = unused.getsockname()[1]  # bound, not listening: connects are refused
        chain = Chain(procs, free_port)
        with chain.connect() as sock, pytest.raises(ConnectionResetError):
            sock.recv(64)
    poll_until(lambda: bool(closed_lines(chain.server)), "the server end logs it")
    assert closed_lines(chain.server)[0].endswith("tcp connect refused")


# ------------------------------------------------------------------------------ a vanished end


def test_killed_server_end_resets_client_connections(
    procs: Procs, backend: Callable[..., Backend]
) -> None:
    def echo(sock: socket.socket) -> None:
        sock.settimeout(None)
        while data := sock.recv(64 * KIB):
            sock.sendall(data)

    server = backend(echo)
    chain = Chain(procs, server.port, "--user-timeout", "3s", "--keepalive", "1s")
    talker, idler = chain.connect(), chain.connect()
    with talker, idler:
        for sock in (talker, idler):
            sock.sendall(b"ping")
            assert sock.recv(64) == b"ping"
        chain.server.stop(signal.SIGKILL)  # no RST goes out: the far end just vanishes

        # One sends and waits (its data is never acknowledged: the user timeout ends it), the
        # other only waits (keepalive probes go unanswered); neither may hang.
        talker.sendall(b"anyone?")
        results: dict[str, str] = {}

        def wait_for_error(name: str, sock: socket.socket) -> None:
            try:
                data = sock.recv(64)
                results[name] = f"recv {data!r}"
            except ConnectionResetError:
                results[name] = "reset"
            except TimeoutError:
                results[name] = "hung"

        threads = [
            threading.Thread(target=wait_for_error, args=item)
            for item in (("talker", talker), ("idler", idler))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG_S + 5)
    assert results == {"talker": "reset", "idler": "reset"}
    poll_until(lambda: len(closed_lines(chain.client)) == 2, "both connections are logged")
    reasons = sorted(line.rpartition(", ")[2] for line in closed_lines(chain.client))
    # The server end's port is closed: read from the ICMP errors (the fast I/O path) that is
    # a reset within seconds; without them the user timeout and keepalive end both.
    expected = "utcp timeout" if os.environ.get("UTCP_IO") == "portable" else "utcp reset"
    assert reasons == [expected, expected]


def test_stopped_server_end_resets_client_connections(
    procs: Procs, backend: Callable[..., Backend]
) -> None:
    def echo(sock: socket.socket) -> None:
        while data := sock.recv(64 * KIB):
            sock.sendall(data)

    server = backend(echo)
    chain = Chain(procs, server.port)
    with chain.connect() as sock:
        sock.sendall(b"ping")
        assert sock.recv(64) == b"ping"
        out = chain.server.stop(signal.SIGTERM)  # an orderly exit resets what it carries
        with pytest.raises(ConnectionResetError):
            sock.recv(64)
    assert chain.server.popen.returncode == 0
    assert "connections=1 active=0 closed=0 errors=1 (tunnel closed=1)" in out, out
    poll_until(lambda: bool(closed_lines(chain.client)), "the client end logs it")
    assert closed_lines(chain.client)[0].endswith(", utcp reset")


def test_nobody_at_the_utcp_end_resets_after_the_connect_timeout(procs: Procs) -> None:
    with socket.socket(type=socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))  # bound and never read: SYNs go unanswered
        port = silent.getsockname()[1]
        _, tunnel_port = procs.tunnel(
            "client-end", f"tcp:{HOST}:0", f"utcp:{HOST}:{port}", "--connect-timeout", "1s"
        )
        with socket.create_connection((HOST, tunnel_port), timeout=HANG_S) as sock:
            sock.settimeout(HANG_S)
            with pytest.raises(ConnectionResetError):
                sock.recv(64)


# ------------------------------------------------------------------------------ backpressure


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_a_slow_reader_stalls_the_far_writer_with_bounded_memory(
    procs: Procs, backend: Callable[..., Backend]
) -> None:
    total = 256 * MIB
    sent = [0]
    finished = threading.Event()

    def flood(sock: socket.socket) -> None:
        sock.settimeout(None)
        chunk = bytes(256 * KIB)
        try:
            while sent[0] < total:
                sent[0] += sock.send(chunk)
        except OSError:
            pass
        finally:
            finished.set()

    server = backend(flood)
    chain = Chain(procs, server.port)
    ends = (chain.client.popen.pid, chain.server.popen.pid)
    rss_before = [rss_bytes(pid) for pid in ends]
    with chain.connect() as sock:
        # Read nothing: the writer must stall once every buffer on the way is full.
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + HANG_S
        while time.monotonic() - still_since < 1.0 and not finished.is_set():
            assert time.monotonic() < deadline, "the writer never stalled"
            time.sleep(0.1)
            if sent[0] != last:
                last, still_since = sent[0], time.monotonic()
        stalled_at = sent[0]
        growth = [rss_bytes(pid) - before for pid, before in zip(ends, rss_before)]
        # Kernel socket buffers on both TCP legs (autotuned to a few MiB each), utcp's send and
        # receive buffers (1 MiB each) and a chunk per pump: far below what was offered.
        assert not finished.is_set() and stalled_at < 48 * MIB, f"sent {stalled_at}"
        assert max(growth) < 24 * MIB, f"tunnel memory grew by {growth}"

        # Reading again restarts the flow: some more arrives, intact zeros.
        got = 0
        while got < stalled_at + 8 * MIB:
            data = sock.recv(1 * MIB)
            assert data and not data.strip(b"\0")
            got += len(data)
        assert sent[0] > stalled_at


# ------------------------------------------------------------------------------ redis (slow)


def _apt_install(packages: Sequence[str], commands: Sequence[str]) -> None:
    """Install Debian packages quietly, refreshing the package lists once if that fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for refresh in (False, True):
        if refresh:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        subprocess.run(install, env=env, capture_output=True, timeout=300, check=False)
        if all(shutil.which(c) for c in commands):
            return


@pytest.fixture(scope="session")
def redis_bins() -> tuple[str, str]:
    """redis-server and redis-benchmark, installed from Debian's packages if missing."""
    names = ("redis-server", "redis-benchmark")
    if not all(shutil.which(n) for n in names) and shutil.which("apt-get") and os.geteuid() == 0:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            _apt_install(["redis-server", "redis-tools"], names)
    server, bench = (shutil.which(n) for n in names)
    if server is None or bench is None:
        pytest.skip(
            "redis-server and redis-benchmark are missing and could not be installed "
            "(apt-get install redis-server redis-tools needs root and Debian's packages)"
        )
    return server, bench


@pytest.mark.slow
def test_redis_benchmark_through_the_tunnel(
    procs: Procs, redis_bins: tuple[str, str], tmp_path: Path
) -> None:
    server_bin, bench_bin = redis_bins
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    redis = procs.start(
        "redis-server",
        [server_bin, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
    )  # fmt: skip
    redis.wait_for(r"[Rr]eady to accept connections")
    chain = Chain(procs, port, netem=["--loss", "1%", "--seed", "11"])
    result = subprocess.run(
        [bench_bin, "-h", HOST, "-p", str(chain.port), "-q", "-n", "10000", "-c", "20",
         "-t", "ping,set,get,incr,lpush,lpop,mset"],
        capture_output=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, out
    assert "error" not in out.lower(), out
    for test in ("PING", "SET", "GET", "INCR", "LPUSH", "LPOP", "MSET"):
        assert re.search(rf"(^|[\r\n]){test}[^:\r\n]*: [\d.]+ requests per second", out), out


# ------------------------------------------------------------------------------ in-process


async def test_library_tunnel_in_process_half_close() -> None:
    """Both ends as ``Tunnel`` objects on this loop, an asyncio TCP client and server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        writer.write(request[::-1] * 100)
        writer.close()

    backend_server = await asyncio.start_server(answer, HOST, 0)
    port = backend_server.sockets[0].getsockname()[1]
    records = []
    async with (
        await Tunnel.start(f"utcp:{HOST}:0", f"tcp:{HOST}:{port}") as far,
        await Tunnel.start(
            f"tcp:{HOST}:0", f"utcp:{HOST}:{far.address[1]}", on_close=records.append
        ) as near,
    ):
        reader, writer = await asyncio.open_connection(HOST, near.address[1])
        writer.write(b"0123456789")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), HANG_S) == b"9876543210" * 100
        writer.close()
        await writer.wait_closed()
        for _ in range(HANG_S * 100):
            if records:
                break
            await asyncio.sleep(0.01)
    assert records[0].clean and (records[0].bytes_up, records[0].bytes_down) == (10, 1000)
    assert near.counters.connections == 1 and near.counters.closed == 1
    backend_server.close()
    await backend_server.wait_closed()


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("tcp:8080", TunnelAddress("tcp", "127.0.0.1", 8080)),
        ("utcp:0.0.0.0:4000", TunnelAddress("utcp", "0.0.0.0", 4000)),
        ("utcp:[::1]:4000", TunnelAddress("utcp", "::1", 4000)),
        ("tcp:example.org:80", TunnelAddress("tcp", "example.org", 80)),
    ],
)
def test_parse_address(text: str, address: TunnelAddress) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["8080", "udp:1", "tcp:", "tcp:host:99999", "tcp:a:b:1"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize("config", [{}, {"mss_bytes": 1000}, "", 0])
def test_start_refuses_a_config_that_is_not_one(config: object) -> None:
    # As every call taking ``config=``: a TypeError.  Before, a dict raised AttributeError
    # and an empty one (or "", 0) was taken for ``Config()``.
    async def main() -> None:
        await Tunnel.start("tcp:127.0.0.1:0", "utcp:127.0.0.1:9", config=config)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"config must be a utcp\.Config"):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("args", "config", "needle"),
    [
        (["--listen", "tcp:0", "--to", "tcp:1"], None, "one end must be tcp"),
        (["--listen", "tcp:0", "--to", "udp:1.2.3.4:1"], None, "not tcp:[HOST:]PORT"),
        (["--listen", "tcp:0", "--to", "utcp:0"], None, "port other than 0"),
        (["--listen", "tcp:0", "--to", "utcp:1", "--mss", "10"], None, "mss_bytes"),
        (["--listen", "tcp:0", "--to", "utcp:1", "--congestion", "x"], None, "invalid choice"),
        (["--listen", "tcp:0", "--to", "utcp:1"], '{"rto_min": 1}', "unknown Config field"),
        (["--listen", "tcp:0", "--to", "utcp:1"], '{"rto_min_s": "1s"}', "must be float"),
        (["--listen", "tcp:0", "--to", "utcp:1"], "[1]", "object of Config fields"),
        (["--listen", "tcp:0", "--to", "utcp:1"], "{", "not JSON"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], config: str | None, needle: str, tmp_path: Path
) -> None:
    if config is not None:
        path = tmp_path / "tunnel.json"
        path.write_text(config)
        args = [*args, "--config", str(path)]
    result = utcp_cli("tunnel", *args, timeout=HANG_S)
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err


def test_config_file_and_flags(tmp_path: Path) -> None:
    from utcp.cli import build_parser
    from utcp.cli.tunnel import build_config

    path = tmp_path / "tunnel.json"
    path.write_text('{"rto_min_s": 0.1, "msl_s": 0.5, "mss_bytes": 1000, "user_timeout_s": null}')
    args = build_parser().parse_args(
        ["tunnel", "--listen", "tcp:0", "--to", "utcp:1", "--config", str(path), "--mss", "1200",
         "--rto-initial", "300ms", "--keepalive", "5s"]
    )  # fmt: skip
    config = build_config(args)
    assert (config.rto_min_s, config.msl_s, config.mss_bytes) == (0.1, 0.5, 1200)
    assert config.pmtud is False  # a fixed segment size: no discovery
    plain = build_parser().parse_args(["tunnel", "--listen", "tcp:0", "--to", "utcp:1"])
    assert build_config(plain).pmtud is True
    assert (config.rto_initial_s, config.keepalive_idle_s, config.keepalive_interval_s) == (
        0.3,
        5.0,
        5.0,
    )


def test_http_through_a_nat_that_rebinds_every_second(tmp_path: Path) -> None:
    """curl through both tunnel ends while ``utcp netem --rebind-every 1s`` moves the client
    end to a new source port every second (a 40 Mbit/s bottleneck makes the 16 MiB answer
    span several moves): the server end follows each time, and the file arrives whole."""
    www = tmp_path / "www"
    www.mkdir()
    data = random.Random(23).randbytes(16 * MIB)
    (www / "file.bin").write_bytes(data)
    procs = Procs(tmp_path)
    try:
        port = _http_server(procs, www)
        chain = Chain(procs, port, netem=["--rebind-every", "1s", "--rate", "40mbit"])
        out = tmp_path / "file.out"
        proc = curl(chain.port, "file.bin", out)
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err.decode()
        assert sha256(out.read_bytes()) == sha256(data)
    finally:
        problems = procs.close()
    assert not problems, "\n".join(problems)
