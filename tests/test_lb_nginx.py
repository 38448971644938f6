"""utcp behind an existing UDP load balancer: nginx's stream module, configured as
examples/nginx-utcp.conf documents (docs/LOAD-BALANCING.md), in front of two utcp servers,
each in a network namespace of its own.

200 clients, each from its own loopback address, connect through nginx at once; each server
greets a connection with its name and echoes it.  Every byte must come back intact, both servers
must serve some clients, and every connection must have been held by one server from its SYN
to its end: the server that greeted it is the one that recorded its connection ids, the other
never saw them, neither server sent a reset or dropped a datagram from an address other than
its connection's, and the only datagrams a server dropped as "unknown connection" (late copies
of a final ACK) came through the nginx session of one of its own connections.

Needs Linux, root and ``ip`` (namespaces, veth pairs); nginx with the stream module is
installed from the OS packages (Debian: ``nginx``, ``libnginx-mod-stream``) if missing.  The
test skips, saying why, wherever one of these is out of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import utcp
from tests.aio_helpers import runner_for, seeded_bytes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONF = ROOT / "examples" / "nginx-utcp.conf"
SERVER_SCRIPT = Path(__file__).resolve().parent / "lb_server.py"

CLIENTS = 200
MIN_PAYLOAD = 64 << 10
MAX_PAYLOAD = 256 << 10
SEED = 22_003
SERVER_PORT = 9000
LB_HOST = "127.0.0.1"
INSTALL_TIMEOUT_S = 240.0
APT_PACKAGES = ("nginx", "libnginx-mod-stream")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces: Linux"),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="network namespaces and veth pairs need root",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the ip command (iproute2)"),
]


# ------------------------------------------------------------------------------ nginx


@dataclass
class Nginx:
    """An nginx binary with the stream module, and how it got here."""

    binary: str
    load_module: str  # a load_module line for the stream module, or "" when it is built in
    version: str
    install_s: float | None = None  # seconds the test spent installing it (None: present)


def _find_nginx() -> Nginx | None:
    """The installed nginx if it has the stream module (built in or as a loadable file)."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = out.splitlines()[0].split("/")[-1] if out else "?"
    if re.search(r"--with-stream(\s|$)", out):
        return Nginx(binary, "", version)
    modules = re.search(r"--modules-path=(\S+)", out)
    candidates = [Path(modules.group(1))] if modules else []
    candidates += [Path("/usr/lib/nginx/modules"), Path("/usr/lib64/nginx/modules")]
    for directory in candidates:
        module = directory / "ngx_stream_module.so"
        if module.exists():
            return Nginx(binary, f"load_module {module};", version)
    return None


@contextlib.contextmanager
def _no_service_start() -> Iterator[None]:
    """While packages install, keep their maintainer scripts from starting the system's own
    nginx service (Debian's policy-rc.d convention); an existing policy is left alone."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# written by utcp's tests/test_lb_nginx.py\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt_install() -> str:
    """Install nginx and its stream module with apt-get, refreshing the package lists only if
    the first try fails; returns what went wrong ("" on success)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    install += ["-o", "DPkg::Lock::Timeout=120", *APT_PACKAGES]
    problem = ""
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    with _no_service_start():
        for refresh in (False, True):
            try:
                if refresh:
                    subprocess.run(
                        ["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=120"],
                        env=env,
                        capture_output=True,
                        timeout=max(1.0, deadline - time.monotonic()),
                    )
                res = subprocess.run(
                    install,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                return f"apt-get took longer than {INSTALL_TIMEOUT_S:.0f} s"
            if res.returncode == 0 and _find_nginx() is not None:
                return ""
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            problem = f"apt-get install {' '.join(APT_PACKAGES)} failed: {last[0]}"
    return problem


@pytest.fixture(scope="module")
def nginx() -> Nginx:
    """nginx with the stream module, installed from the OS packages if it is missing."""
    found = _find_nginx()
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip(
            "nginx with the stream module is not installed, and there is no apt-get to "
            "install it (Debian: nginx libnginx-mod-stream)"
        )
    start = time.monotonic()
    problem = _apt_install()
    found = _find_nginx()
    if found is None:
        pytest.skip(f"nginx with the stream module could not be installed: {problem}")
    found.install_s = time.monotonic() - start
    return found


def _udp_bound(port: int) -> int:
    """How many UDP sockets are bound to 127.0.0.1:``port`` (nginx's, one per worker with
    reuseport), from /proc/net/udp."""
    want = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == want)


def render_config(text: str, *, listen: str, servers: list[str], main: str, prefix: Path) -> str:
    """The example's stream block with this test's listen address and servers, under a main
    context of the test's own (pid and error log in ``prefix``, the module, two workers)."""
    upstream_lines = re.findall(r"^[ \t]*server[ \t]+\S+:\d+;[ \t]*\n", text, flags=re.M)
    assert len(upstream_lines) == 2, "examples/nginx-utcp.conf: expected two server lines"
    first = text.index(upstream_lines[0])
    indent = re.match(r"[ \t]*", upstream_lines[0])
    lead = indent.group(0) if indent else ""
    ours = "".join(f"{lead}server {addr};\n" for addr in servers)
    for line in upstream_lines:
        text = text.replace(line, "", 1)
    text = text[:first] + ours + text[first:]
    text, listens = re.subn(
        r"(^[ \t]*listen[ \t]+)\d+([ \t]+udp)", rf"\g<1>{listen}\2", text, flags=re.M
    )
    assert listens == 1, "examples/nginx-utcp.conf: expected one `listen PORT udp` line"
    head = (
        f"{main}\n"
        "worker_processes 2;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events {\n    worker_connections 4096;\n}\n\n"
    )
    return head + text


@dataclass
class RunningNginx:
    """The nginx the test started: its master process, prefix directory and UDP port."""

    proc: subprocess.Popen[bytes]
    prefix: Path
    port: int

    def log(self) -> str:
        """nginx's error log (notices included: the test asks for level info)."""
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: a graceful one would wait for UDP sessions to time out)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_udp_port() -> int:
    """A loopback UDP port nobody holds now, for nginx to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LB_HOST, 0))
        return int(probe.getsockname()[1])


def start_nginx(ng: Nginx, prefix: Path, servers: list[str]) -> RunningNginx:
    """nginx in the root namespace with its own prefix, config, pid and log files, in front of
    ``servers``, listening on a free loopback UDP port; returns once every worker listens."""
    port = _free_udp_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_config(
            EXAMPLE_CONF.read_text(),
            listen=f"{LB_HOST}:{port}",
            servers=servers,
            main=ng.load_module,
            prefix=prefix,
        )
    )
    base = [ng.binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t rejects the configuration:\n{check.stderr}"
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdin=subprocess.DEVNULL)
    running = RunningNginx(proc, prefix, port)
    end = time.monotonic() + 15
    while _udp_bound(port) < 2:
        if proc.poll() is not None or time.monotonic() > end:
            running.stop()
            pytest.fail(
                f"nginx did not start listening on {LB_HOST}:{port} with one socket per "
                f"worker (the example's `reuseport`):\n{running.log()}"
            )
        time.sleep(0.05)
    return running


# ------------------------------------------------------------------------------ the testbed


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its message if it fails."""
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def _free_subnets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """Two /30 networks in 10.231.0.0/16 that no address on this host is in, chosen from
    the process id so that concurrent runs (make test runs the suite twice at once) differ."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    taken = {ipaddress.IPv4Interface(m).network for m in re.findall(r"inet (\S+)", used)}
    space = ipaddress.IPv4Network("10.231.0.0/16")
    blocks = list(space.subnets(new_prefix=29))
    start = os.getpid() % len(blocks)
    for k in range(len(blocks)):
        block = blocks[(start + k) % len(blocks)]
        if not any(block.overlaps(net) for net in taken):
            a, b = block.subnets(new_prefix=30)
            return a, b
    raise RuntimeError("no free /29 in 10.231.0.0/16")


@dataclass
class Backend:
    """One utcp server (tests/lb_server.py) in a namespace of its own, behind a veth pair."""

    name: str
    netns: str
    address: str  # the server's, inside the namespace
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Start the server in its namespace and wait for it to listen."""
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, str(SERVER_SCRIPT)]
        cmd += ["--name", self.name, "--host", self.address, "--port", str(SERVER_PORT)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        proc = self.proc
        threading.Thread(target=self._pump, args=(proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(
            target=self._pump, args=(proc.stderr, self.stderr.append), daemon=True
        ).start()
        ready = self._next_json(30.0)
        assert "ready" in ready, ready

    @staticmethod
    def _pump(stream: Any, sink: Any) -> None:
        """Hand each line of a pipe to ``sink`` (a reader thread: the pipe never fills)."""
        for line in stream:
            sink(line)

    def _next_json(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            alive = self.proc is not None and self.proc.poll() is None
            raise AssertionError(
                f"server {self.name}: no report within {timeout} s (alive: {alive})\n"
                + "".join(self.stderr[-30:])
            ) from None
        return dict(json.loads(line))

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the server's report (its counts, connection ids and stats)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        report = self._next_json(15.0)
        self.proc.wait(15)
        return report

    def kill(self) -> None:
        """SIGKILL, if it still runs (clean-up after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def namespaces_and_servers() -> Iterator[list[Backend]]:
    """Two namespaces, each joined to this one by a veth pair on a /30 of its own, with a utcp
    server in each; all of it removed on the way out, whatever happened."""
    tag = f"{os.getpid()}"
    nets = _free_subnets()
    backends: list[Backend] = []
    made: list[str] = []
    try:
        for name, net in zip("ab", nets):
            netns = f"utcplb-{tag}-{name}"
            outer, inner = f"ulb{tag}{name}", f"ulb{tag}{name}n"
            here, there = (str(h) for h in net.hosts())
            _ip("netns", "add", netns)
            made.append(netns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", netns)
            _ip("addr", "add", f"{here}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", netns, "addr", "add", f"{there}/30", "dev", inner)
            _ip("-n", netns, "link", "set", inner, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            backends.append(Backend(name, netns, there))
        for backend in backends:
            backend.start()
        yield backends
    finally:
        for backend in backends:
            backend.kill()
        for netns in made:  # deleting a namespace deletes its end of the veth pair, and so both
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", netns)


# ------------------------------------------------------------------------------ the clients


@dataclass
class ClientResult:
    """What one client saw: who greeted it, whether its echo was intact, its connection ids."""

    index: int
    greeted_by: str = ""
    intact: bool = False
    cids: tuple[int, int] = (0, 0)  # (the server's id, ours), as the server records them
    pmtu_bytes: int = 0  # the largest datagram the connection sent, at its end
    error: str = ""
    seconds: float = 0.0


async def one_client(index: int, port: int) -> ClientResult:
    """Connect from 127.0.0.<index + 2>, read the greeting, send a seeded payload, check its
    echo byte for byte, close."""
    result = ClientResult(index)
    size = MIN_PAYLOAD + (index * 7919) % (MAX_PAYLOAD - MIN_PAYLOAD + 1)
    payload = seeded_bytes(SEED + index, size)
    source = f"127.0.{(index + 2) >> 8}.{(index + 2) & 255}"
    start = time.monotonic()
    try:
        reader, writer = await utcp.open_connection(LB_HOST, port, local_addr=(source, 0))
        conn = writer.get_extra_info("connection")
        result.cids = (conn.peer_cid, conn.local_cid)
        writer.write(payload)
        writer.write_eof()
        greeting = await reader.readline()
        result.greeted_by = greeting.decode().removeprefix("server ").strip()
        echoed = await reader.read()
        result.intact = echoed == payload
        result.pmtu_bytes = conn.stats.pmtu_bytes
        if not result.intact:
            result.error = f"echo of {len(echoed)} bytes differs from the {size} sent"
        writer.close()
        await writer.wait_closed()
    except (OSError, EOFError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - start
    return result


async def all_clients(port: int) -> list[ClientResult]:
    """Every client at once, as a crowd arriving at a balancer would."""
    return list(await asyncio.gather(*(one_client(i, port) for i in range(CLIENTS))))


# ------------------------------------------------------------------------------ the test


def test_200_clients_through_nginx_to_two_servers(
    nginx: Nginx, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every byte intact through nginx, and every connection held by one server throughout."""
    how = (
        "already installed" if nginx.install_s is None else f"installed in {nginx.install_s:.1f} s"
    )
    request.node.user_properties.append(("nginx", f"{nginx.version}, {how}"))
    began = time.monotonic()
    with namespaces_and_servers() as backends:
        servers = [f"{b.address}:{SERVER_PORT}" for b in backends]
        lb = start_nginx(nginx, tmp_path, servers)
        try:
            with runner_for("uvloop") as run:
                t0 = time.monotonic()
                results = run(all_clients(lb.port), hang_s=120.0)
                transfer_s = time.monotonic() - t0
            reports = {b.name: b.stop() for b in backends}
        finally:
            lb.stop()
        nginx_log = lb.log()

    failed = [r for r in results if r.error or not r.intact]
    assert not failed, f"{len(failed)} of {CLIENTS} clients failed, first: {failed[:5]}"
    by_server = {name: [r for r in results if r.greeted_by == name] for name in reports}
    assert sum(len(v) for v in by_server.values()) == CLIENTS, {r.greeted_by for r in results}
    assert all(by_server.values()), f"the hash sent every client to one server: {by_server.keys()}"

    for name, report in reports.items():
        other = [r for n, r in reports.items() if n != name]
        served = {tuple(c) for c in report["cids"]}
        elsewhere = {tuple(c) for r in other for c in r["cids"]}
        mine = {r.cids for r in by_server[name]}
        assert served == mine, f"server {name}: connections it held != clients it greeted"
        assert not mine & elsewhere, f"server {name}: a connection was seen by two servers"
        assert report["served"] == report["finished"] == len(mine), report
        assert not report["errors"], report["errors"]
        stats = report["stats"]
        # A datagram of a connection held by the other server would draw a reset here (or
        # count as rate limited) and break that client.
        assert stats["resets_sent"] == stats["resets_rate_limited"] == 0, (name, stats)
        dropped = stats["dropped"]
        for reason in ("wrong address", "bad checksum", "malformed"):
            assert dropped.get(reason, 0) == 0, f"server {name} dropped ({reason}): {stats}"
        # What it may drop as "unknown connection" are late copies of a finished connection's
        # final ACK (no reset for those): each came through the balancer session of one of
        # this server's own connections.
        unknown = report["drops_by_peer"].get("unknown connection", {})
        assert sum(unknown.values()) == dropped.get("unknown connection", 0), report
        assert set(unknown) <= set(report["peers"]), (name, unknown, report["peers"])
    assert sum(r["served"] for r in reports.values()) == CLIENTS

    moved = sum(r["bytes_echoed"] for r in reports.values())
    split = ", ".join(f"{n}: {len(v)}" for n, v in by_server.items())
    slowest = max(r.seconds for r in results)
    client_pmtu = sorted({r.pmtu_bytes for r in results})
    servers_said = "; ".join(
        f"server {n}: drops {r['stats']['dropped']}, pmtu {r['pmtu_bytes']}, "
        f"send errors {r['stats']['send_errors']}"
        for n, r in reports.items()
    )
    summary = (
        f"nginx {nginx.version} ({how}); {CLIENTS} clients, {moved / 2**20:.1f} MiB echoed "
        f"in {transfer_s:.1f} s (slowest connection {slowest:.1f} s); split {split}; "
        f"client pmtu {client_pmtu}; {servers_said}; whole test {time.monotonic() - began:.1f} s"
    )
    request.node.user_properties.append(("result", summary))
    print(summary)
    problems = [
        line for line in nginx_log.splitlines() if re.search(r"\[(error|crit|alert|emerg)\]", line)
    ]
    assert not problems, "nginx logged problems:\n" + "\n".join(problems[:20])
