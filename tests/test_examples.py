"""Every example runs as its own process over loopback UDP and does what its docstring says."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from utcp.packet import Flag, Packet, encode

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 60


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@contextmanager
def _server(script: str) -> Iterator[int]:
    """Start an example server on a free port; yield the port it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r":(\d+)$", line.strip())
        assert match, (
            f"server printed {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)


def test_echo_server_and_client() -> None:
    with _server("echo_server.py") as port:
        result = _run(
            str(EXAMPLES / "echo_client.py"),
            *("--port", str(port), "--count", "20", "--size", "3000"),
        )
    assert result.returncode == 0, result.stderr
    assert "20 messages of 3000 bytes echoed intact" in result.stdout


def test_echo_client_rejects_bad_arguments() -> None:
    result = _run(str(EXAMPLES / "echo_client.py"), "--count", "0")
    assert result.returncode == 2
    assert "must be positive" in result.stderr


def test_chat_between_two_clients() -> None:
    with _server("chat_server.py") as port:
        listener = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "chat_client.py"),
                "--port",
                str(port),
                "--name",
                "bob",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None and listener.stdin is not None
            assert listener.stdout.readline().strip() == "* connected as bob"
            alice = _run(
                str(EXAMPLES / "chat_client.py"),
                *("--port", str(port), "--name", "alice"),
                stdin="hello bob\nsecond line\n",
            )
            assert alice.returncode == 0, alice.stderr
            seen = [listener.stdout.readline().strip() for _ in range(4)]
            assert seen == [
                "* alice joined",
                "alice: hello bob",
                "alice: second line",
                "* alice left",
            ]
            listener.stdin.close()
            assert listener.wait(timeout=TIMEOUT_S) == 0
        finally:
            if listener.poll() is None:
                listener.kill()


def test_http_over_the_protocol_api() -> None:
    with _server("http_server.py") as port:
        result = _run(str(EXAMPLES / "http_client.py"), "--port", str(port), "--path", "/abc")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["HTTP 200", "hello from utcp, you asked for /abc"]


def test_aiohttp_serves_and_fetches_a_page_over_utcp() -> None:
    # tests/test_ecosystem.py puts the example's site and connector through the rest of aiohttp.
    result = _run(str(EXAMPLES / "aiohttp_over_utcp.py"), "--host", "127.0.0.1", "--port", "0")
    assert result.returncode == 0, result.stderr
    served, fetched = result.stdout.splitlines()
    assert re.fullmatch(r"serving on http://127\.0\.0\.1:\d+", served), served
    assert fetched == "HTTP 200: hello over utcp, you asked for /abc"


def test_demo_prints_the_ladder_from_real_packets() -> None:
    result = _run(str(EXAMPLES / "demo.py"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "[CLOSED -> SYN_SENT]",
        " SYN seq=",
        "SYN+ACK seq=",
        "[SYN_RECEIVED -> ESTABLISHED]",
        "FIN+ACK seq=",
        "[FIN_WAIT_2 -> TIME_WAIT]",
        "[LAST_ACK -> CLOSED]",
        "echoed b'hello, utcp'",
        "client stats:",
    ):
        assert needle in out, f"{needle!r} missing from the demo output:\n{out}"
    # The ladder's numbers are consistent: the SYN-ACK acknowledges the SYN's seq + 1.
    syn = int(re.search(r" SYN seq=(\d+)", out).group(1))  # type: ignore[union-attr]
    synack_ack = int(re.search(r"SYN\+ACK seq=\d+ ack=(\d+)", out).group(1))  # type: ignore[union-attr]
    assert synack_ack == (syn + 1) % 2**32
    # Every PMTU probe the client sent is labelled as one in its ladder (`utcp ladder`'s labels).
    stats = re.search(r"client stats: .*?(\d+) PMTU probes", out)
    assert stats is not None, out
    client_probes = [line for line in out.splitlines() if " probe=" in line and line.endswith(">")]
    assert len(client_probes) == int(stats.group(1)), out
    # srtt no finer than the loop's clock measures it: never "0.000 ms" from a 1 ms clock.
    srtt = re.search(
        r"srtt (< 1 ms \(clock resolution 1 ms\)|\d+ ms \(clock res|\d+\.\d{3} ms,)", out
    )
    assert srtt is not None and "srtt 0.000 ms" not in out, out
    # Then the traced transfer through 2% loss, drawn where the demo says.
    assert "2 MiB through 2% loss each way: intact" in out, out
    assert "path MTU discovered: 1472 B datagrams" in out, out  # the relay's 1500-byte path
    picture = re.search(r"time-sequence graph of that transfer: (.+\.png)", out)
    assert picture is not None, out
    assert Path(picture.group(1)).stat().st_size > 10_000


def _demo_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/demo.py imported (not run), for the duration of the test."""
    spec = importlib.util.spec_from_file_location("utcp_demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_demo_labels_probes_and_probe_acks_as_the_ladder_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bare ACK that is a PMTU probe (padding) or a probe's ACK is named, as `utcp ladder`
    # names it; a datagram sent again byte for byte is marked as such.
    demo = _demo_module(monkeypatch)
    probe = Packet(Flag.ACK, 1, 2, 8, 9, 100, probe=3, padding=1200)
    probe_ack = Packet(Flag.ACK, 2, 1, 9, 8, 100, probe_ack=3)
    for packet in (probe, probe_ack, probe):
        demo.observer("send", encode(packet), ("127.0.0.1", 9))
        demo.observer("receive", encode(packet), ("127.0.0.1", 9))  # only sends are drawn
    assert [(r.cid, r.text) for r in demo.records] == [
        (1, "ACK seq=8 ack=9 probe=3 pad=1200"),
        (2, "ACK seq=9 ack=8 probe_ack=3"),
        (1, "ACK seq=8 ack=9 probe=3 pad=1200 (same datagram again)"),
    ]


@pytest.mark.parametrize("script", ["echo_client.py", "chat_client.py", "http_client.py"])
def test_client_says_when_nobody_listens(script: str) -> None:
    """A refused connect is one line on stderr and exit status 1, not a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _run(str(EXAMPLES / script), "--port", str(port), stdin="")
    assert result.returncode == 1, result.stderr
    assert f"could not connect to 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
