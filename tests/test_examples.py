"""Every example runs as its own process over loopback UDP and does what its docstring says."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
    # Then the traced transfer through 2% loss, drawn where the demo says.
    assert "2 MiB through 2% loss each way: intact" in out, out
    assert "path MTU discovered: 1472 B datagrams" in out, out  # the relay's 1500-byte path
    picture = re.search(r"time-sequence graph of that transfer: (.+\.png)", out)
    assert picture is not None, out
    assert Path(picture.group(1)).stat().st_size > 10_000
