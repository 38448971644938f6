"""A utcp connection through a real NAT that rebinds: three network namespaces (client, NAT,
server), the NAT masquerading the client behind its own address with random ports
(iptables), and its connection tracking flushed three times mid-transfer, so that each time
the client's datagrams reach the server from a new port and the server's datagrams to the old
one meet no mapping.  A 64 MiB upload arrives intact, with no reset, the server following the
client each time (docs/PROTOCOL.md section 4.2).

Needs Linux, root, ``ip``, and iptables and conntrack (installed from the OS packages by the
test when missing); skipped, saying why, where any is out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(__file__).resolve().parent / "nat_peer.py"
MIB = 64
REBINDS = 3
PORT = 9443
WAIT_S = 120
APT_INSTALL = ("apt-get", "install", "-y", "-q", "--no-install-recommends")
APT_INSTALL += ("-o", "DPkg::Lock::Timeout=120")

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces: Linux"),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0, reason="namespaces and NAT need root"
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the ip command (iproute2)"),
]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _tools() -> None:
    """iptables and conntrack, installed from the OS packages if missing (else skip)."""
    if shutil.which("iptables") and shutil.which("conntrack"):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("iptables/conntrack are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            [*APT_INSTALL, "iptables", "conntrack"],
            env=env,
            capture_output=True,
            timeout=240,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("installing iptables and conntrack took too long")
    if not (shutil.which("iptables") and shutil.which("conntrack")):
        pytest.skip("iptables and conntrack could not be installed from the OS packages")


@pytest.fixture
def nat() -> Iterator[dict[str, str]]:
    """Namespaces client - nat - server joined by veth pairs; the NAT masquerades the client
    with random source ports.  Yields the names and the server's address."""
    _tools()
    tag = f"{os.getpid() % 100000}"
    net = 40 + os.getpid() % 150
    names = {"client": f"utc{tag}", "nat": f"utn{tag}", "server": f"uts{tag}"}
    created: list[str] = []
    try:
        for ns in names.values():
            try:
                _run("ip", "netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot make a network namespace here: {exc.stderr!r}")
            created.append(ns)
        c, n, s = names["client"], names["nat"], names["server"]
        _run("ip", "link", "add", f"c{tag}", "netns", c, "type", "veth", "peer", "name",
             f"nc{tag}", "netns", n)  # fmt: skip
        _run("ip", "link", "add", f"s{tag}", "netns", s, "type", "veth", "peer", "name",
             f"ns{tag}", "netns", n)  # fmt: skip
        for ns, dev, addr in (
            (c, f"c{tag}", f"10.{net}.1.2/24"),
            (n, f"nc{tag}", f"10.{net}.1.1/24"),
            (n, f"ns{tag}", f"10.{net}.2.1/24"),
            (s, f"s{tag}", f"10.{net}.2.2/24"),
        ):
            _run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        for ns in (c, n, s):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", c, "route", "add", "default", "via", f"10.{net}.1.1")
        _run("ip", "netns", "exec", n, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        try:
            _run("ip", "netns", "exec", n, "iptables", "-t", "nat", "-A", "POSTROUTING",
                 "-o", f"ns{tag}", "-j", "MASQUERADE", "--random")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"this kernel's iptables cannot masquerade: {exc.stderr!r}")
        yield {**names, "server_addr": f"10.{net}.2.2", "nat_addr": f"10.{net}.2.1"}
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _peer(ns: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(PEER), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _rebind_while_sending(nat: dict[str, str], client: subprocess.Popen[str]) -> list[str]:
    """Let ``client`` (nat_peer.py's sender) go on after each of its pauses, flushing the
    NAT's connection tracking first; its output lines once it is done."""
    assert client.stdout is not None and client.stdin is not None
    for _ in range(REBINDS):
        line = client.stdout.readline()
        assert line.startswith("at "), (line, client.stderr.read() if client.stderr else "")
        # The NAT forgets every mapping: the client's next datagram gets a new port.
        _run("ip", "netns", "exec", nat["nat"], "conntrack", "-F")
        client.stdin.write("go\n")
        client.stdin.flush()
    out, err = client.communicate(timeout=WAIT_S)
    assert client.returncode == 0, err
    return out.splitlines()


def _stop(*procs: subprocess.Popen[str] | None, stream: int = 0) -> list[str]:
    """SIGTERM each process still running, then what each printed (``stream`` 1: on
    stderr)."""
    outs = []
    for proc in procs:
        if proc is None:
            continue
        if proc.poll() is None:
            proc.terminate()
        try:
            printed = proc.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            printed = proc.communicate()
        outs.append(printed[stream])
    return outs


def test_64_mib_through_a_nat_that_rebinds_three_times(nat: dict[str, str]) -> None:
    server = _peer(nat["server"], "server", nat["server_addr"], str(PORT))
    client: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr
        step = str(MIB // (REBINDS + 1))
        client = _peer(
            nat["client"], "client", nat["server_addr"], str(PORT), str(MIB), step,
            stdin=subprocess.PIPE,
        )  # fmt: skip
        lines = _rebind_while_sending(nat, client)
        assert lines[0] == "ok", lines
        assert json.loads(lines[1])["state"] in ("CLOSED", "TIME_WAIT", "FIN_WAIT_2", "FIN_WAIT_1")
    finally:
        (sout,) = _stop(server)
        _stop(client)
    stats = json.loads(sout.splitlines()[-1])
    assert stats["path_changes"] >= REBINDS, stats
    assert stats["resets_sent"] == 0, stats
    assert stats["path_validations_failed"] == 0, stats


def test_a_tunnel_session_survives_the_nat_rebinding(nat: dict[str, str]) -> None:
    """A TCP application's 16 MiB through both ``utcp tunnel`` ends, the utcp leg crossing
    the NAT while it forgets its mappings three times: the TCP side never notices."""
    srv, env = nat["server_addr"], {**os.environ, "PYTHONPATH": str(ROOT)}
    # -v: each end reports its connections' ends on stderr, shown if the application fails.
    utcp_cli = [sys.executable, "-m", "utcp", "-v", "tunnel"]
    procs: list[subprocess.Popen[str] | None] = []

    def start(ns: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args], stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        procs.append(proc)
        return proc

    try:
        sink = start(nat["server"], sys.executable, str(PEER), "tcp-server", srv, "9100")
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        far = start(
            nat["server"], *utcp_cli, "--listen", f"utcp:{srv}:{PORT}", "--to", f"tcp:{srv}:9100"
        )
        near = start(
            nat["client"], *utcp_cli, "--listen", "tcp:127.0.0.1:9200", "--to", f"utcp:{srv}:{PORT}"
        )
        for end in (far, near):
            assert end.stdout is not None and end.stdout.readline().startswith("tunnel ")
        app = start(
            nat["client"], sys.executable, str(PEER), "tcp-client", "127.0.0.1", "9200", "16",
            "4", stdin=subprocess.PIPE,
        )  # fmt: skip
        try:
            lines = _rebind_while_sending(nat, app)
        except AssertionError as exc:
            procs.remove(near)
            procs.remove(far)
            raise AssertionError(
                f"{exc}; the tunnel ends said: {_stop(near, far, stream=1)}"
            ) from None
        assert lines[0] == "ok", lines
    finally:
        _stop(*procs)
