"""TLS in the tools: ``echo-server``, ``cat``, ``perf`` and ``tunnel`` with ``--tls-cert``/
``--tls-key`` on the accepting side and ``--tls-ca``/``--tls-insecure`` on the connecting side,
run as separate processes on loopback with certificates made by trustme.

The tunnel test puts a relay that keeps a copy of every datagram between the tunnel's two ends
and checks that the HTTP it carries never shows in them (and, as the control, that it does
without TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import random
import re
import select
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.cli_helpers import UTCP, background, utcp_cli
from utcp.cli import build_parser
from utcp.tools.tunnel import ConnectionRecord, Tunnel

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

HOST = "127.0.0.1"
HANG_S = 30  # the longest any single step may take before the test calls it a hang


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a server certificate (127.0.0.1 and localhost) it signed with its key,
    and a CA that signed nothing here."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path

    def server(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def client(self) -> list[str]:
        return ["--tls-ca", str(self.ca)]


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "localhost")
    files = Certs(
        tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "other.pem"
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for blob in issued.cert_chain_pems:  # the server's certificate first, then its issuers
        blob.write_to_path(str(files.cert), append=True)
    issued.private_key_pem.write_to_path(str(files.key))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


def no_traceback(text: bytes | str) -> None:
    shown = text.decode(errors="replace") if isinstance(text, bytes) else text
    assert "Traceback" not in shown, shown


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize("command", ["echo-server", "cat", "perf", "tunnel"])
def test_help_documents_the_tls_options(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices[command].format_help()  # type: ignore[index]
    assert "--tls-cert FILE" in text and "--tls-key FILE" in text
    if command != "echo-server":  # a server only: nothing to trust
        assert "--tls-ca FILE" in text and "--tls-insecure" in text
        assert "--tls-server-name NAME" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["echo-server", "--port", "0", "--tls-cert", "{cert}"], "go together"),
        (["cat", "--listen", "0", "--tls-key", "{key}"], "go together"),
        (["perf", "--server", "--port", "0", "--tls-cert", "{cert}"], "go together"),
        (["tunnel", "--listen", "utcp:0", "--to", "tcp:1", "--tls-key", "{key}"], "go together"),
        (["echo-server", "--tls-ca", "{ca}"], "unrecognized arguments"),
        (["cat", HOST, "9", "--tls-cert", "{cert}", "--tls-key", "{key}"], "is for --listen"),
        (["cat", "--listen", "0", "--tls-ca", "{ca}"], "is for connecting (without --listen)"),
        (["cat", HOST, "9", "--tls-ca", "{ca}", "--tls-insecure"], "not allowed with"),
        (["cat", HOST, "9", "--tls-server-name", "x"], "needs --tls-ca FILE or --tls-insecure"),
        (["cat", HOST, "9", "--tls-ca", "{missing}"], "cannot load --tls-ca"),
        (["cat", HOST, "9", "--tls-ca", "{key}"], "cannot load --tls-ca"),
        (["echo-server", "--tls-cert", "{cert}", "--tls-key", "{other_key}"], "cannot load"),
        (["perf", "--server", "--tls-insecure"], "is for the client (without --server)"),
        (
            ["tunnel", "--listen", "tcp:0", "--to", "utcp:1", "--tls-cert", "{cert}",
             "--tls-key", "{key}"],
            "is for the server end (--listen utcp:...)",
        ),
        (
            ["tunnel", "--listen", "utcp:0", "--to", "tcp:1", "--tls-ca", "{ca}"],
            "is for the client end (--to utcp:...)",
        ),
    ],
)  # fmt: skip
def test_misused_tls_options_exit_2_with_one_line(
    args: list[str], needle: str, certs: Certs, tmp_path: Path
) -> None:
    other_key = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("elsewhere.example").private_key_pem.write_to_path(str(other_key))
    paths = {
        "cert": certs.cert,
        "key": certs.key,
        "ca": certs.ca,
        "other_key": other_key,
        "missing": tmp_path / "missing.pem",
    }
    result = utcp_cli(*(arg.format(**paths) for arg in args), timeout=HANG_S)
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err


# ------------------------------------------------------------------------------ echo and cat


def echo_through_cat(port: int, payload: bytes, *flags: str) -> tuple[bytes, bytes, int]:
    """``utcp cat FLAGS HOST PORT`` to an echo server: send ``payload``, read its echo, then end
    the input (over TLS that closes the connection, so the echo is read first).  Returns what
    came back, cat's stderr and its exit status."""
    proc = subprocess.Popen(
        [*UTCP, "cat", *flags, HOST, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    def feed() -> None:
        stdin.write(payload)
        stdin.flush()  # but not closed: cat would end the connection before the echo is back

    # Written from a thread: the echo fills our end of cat's stdout while we still write.
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    hang_guard = threading.Timer(HANG_S, proc.kill)  # a read that never ends fails instead
    hang_guard.start()
    try:
        echoed = proc.stdout.read(len(payload))
        feeder.join(timeout=HANG_S)
        proc.stdin.close()
        status = proc.wait(timeout=HANG_S)
        return echoed, proc.stderr.read(), status
    finally:
        hang_guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_echo_server_over_tls_echoes_to_cat_trusting_its_ca(certs: Certs) -> None:
    payload = random.Random(21).randbytes(300_000)
    with background(["echo-server", "--port", "0", *certs.server()]) as (server, port):
        echoed, err, status = echo_through_cat(port, payload, *certs.client())
        assert server.poll() is None
    assert status == 0, err
    assert echoed == payload
    no_traceback(err)


def test_cat_that_does_not_trust_the_certificate_fails_clearly(certs: Certs) -> None:
    """A certificate from a CA not trusted, or for another name, or no TLS at all: exit 1 and
    one line saying what went wrong; the server serves the next client as before."""
    with background(["echo-server", "--port", "0", *certs.server()]) as (server, port):
        untrusted = utcp_cli("cat", "--tls-ca", str(certs.other_ca), HOST, str(port), stdin=b"x")
        misnamed = utcp_cli(
            "cat", *certs.client(), "--tls-server-name", "example.org", HOST, str(port), stdin=b"x"
        )
        plain = utcp_cli("cat", HOST, str(port), stdin=b"x")
        echoed, err, status = echo_through_cat(port, b"still here", *certs.client())
        assert server.poll() is None
    assert (status, echoed) == (0, b"still here"), err
    for result in (untrusted, misnamed, plain):
        assert result.returncode == 1
        assert result.stdout == b""
        no_traceback(result.stderr)
        assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr
    assert b"utcp cat: error: TLS: the server's certificate was not accepted" in untrusted.stderr
    assert b"--tls-ca FILE" in untrusted.stderr
    assert b"Hostname mismatch" in misnamed.stderr and b"--tls-server-name" in misnamed.stderr
    assert b"reset" in plain.stderr  # the server's TLS layer refused what it could not read


def test_tls_insecure_connects_without_checking_and_warns(certs: Certs) -> None:
    with background(["echo-server", "--port", "0", *certs.server()]) as (_, port):
        echoed, err, status = echo_through_cat(port, b"unchecked", "--tls-insecure")
    assert (status, echoed) == (0, b"unchecked"), err
    text = err.decode()
    assert "utcp cat: warning: --tls-insecure" in text and "not checked" in text
    no_traceback(text)


def test_file_copy_over_tls_arrives_exactly(certs: Certs, tmp_path: Path) -> None:
    """TLS cannot half-close: the sender's end of input closes the connection, and the listener,
    which had nothing to send, receives until then."""
    data = random.Random(22).randbytes(2 << 20)
    out = tmp_path / "copy.bin"
    with (
        out.open("wb") as sink,
        background(["cat", "--listen", "0", *certs.server()], stdout=sink, address_on="stderr") as (
            listener,
            port,
        ),
    ):
        sender = utcp_cli("cat", *certs.client(), HOST, str(port), stdin=data)
        assert sender.returncode == 0, sender.stderr
        assert listener.wait(timeout=HANG_S) == 0
        assert listener.stderr is not None
        no_traceback(listener.stderr.read())
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    no_traceback(sender.stderr)


# ------------------------------------------------------------------------------ perf


def test_perf_over_tls_reports_a_throughput(certs: Certs) -> None:
    with background(["perf", "--server", "--port", "0", *certs.server()]) as (server, port):
        sent = utcp_cli("perf", HOST, str(port), *certs.client(), "--bytes", "4M", "--json")
        back = utcp_cli(
            "perf", HOST, str(port), *certs.client(), "-n", "2M", "-R", "-P", "2", "--json"
        )
        live = utcp_cli("perf", HOST, str(port), *certs.client(), "--bytes", "2M")
        assert server.poll() is None
    for result in (sent, back, live):
        assert result.returncode == 0, result.stderr
        no_traceback(result.stderr)
    up, down = json.loads(sent.stdout), json.loads(back.stdout)
    assert (up["tls"], up["direction"], up["bytes"]) == (True, "send", 4 << 20)
    assert up["goodput_mbit_s"] > 0 and up["seconds"] > 0
    assert (down["tls"], down["direction"], down["bytes"]) == (True, "receive", 2 * (2 << 20))
    assert down["goodput_mbit_s"] > 0 and len(down["flows"]) == 2
    summary = live.stdout.decode().splitlines()[-1]
    assert re.match(r"summary: 2097152 bytes in [\d.]+ s = [\d.]+ Mbit/s goodput", summary)


# ------------------------------------------------------------------------------ tunnel


class CapturingRelay:
    """A UDP relay on loopback between the tunnel's two ends that keeps a copy of every
    datagram: what an eavesdropper on the utcp leg sees."""

    def __init__(self, to_port: int) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listener.bind((HOST, 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind((HOST, 0))
        self.upstream.connect((HOST, to_port))
        self.datagrams: list[bytes] = []
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capturing-relay", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener, self.upstream], [], [], 0.1)
            for sock in ready:
                try:
                    data, addr = sock.recvfrom(65535)
                    self.datagrams.append(data)
                    if sock is self.listener:
                        self._client = addr
                        self.upstream.send(data)
                    elif self._client is not None:
                        self.listener.sendto(data, self._client)
                except OSError:  # an ICMP error reported on the socket: the datagram is gone
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HANG_S)
        self.listener.close()
        self.upstream.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[int]:
    """The standard library's http.server serving ``root`` on loopback, in a thread."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def tunnel_end(args: Sequence[str], log: Path) -> Iterator[int]:
    """``utcp tunnel ARGS``: yield the port it listens on; stop it afterwards and check that it
    logged no traceback."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*UTCP, "tunnel", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.match(r"tunnel u?tcp://127\.0\.0\.1:(\d+) -> ", line)
        assert m, f"the tunnel printed {line!r}; its stderr: {log.read_text()}"
        yield int(m.group(1))
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    no_traceback(log.read_text())


SECRET = b"a line of the page that only the tunnel's two ends may read\n"


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain-control"])
def test_tunnel_carries_http_encrypted_between_its_ends(
    tls: bool, certs: Certs, tmp_path: Path
) -> None:
    """http.server behind the server end, a GET through the client end: the page arrives
    intact, and over TLS none of the HTTP shows in the datagrams between the ends (without
    TLS all of it does, which shows the check can fail)."""
    www = tmp_path / "www"
    www.mkdir()
    page = SECRET * 5000  # about 300 KB
    (www / "page.txt").write_bytes(page)
    server_tls = certs.server() if tls else []
    client_tls = certs.client() if tls else []
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(http_server(www))
        server_end = stack.enter_context(
            tunnel_end(
                [f"--listen=utcp:{HOST}:0", f"--to=tcp:{HOST}:{backend}", *server_tls],
                tmp_path / "server-end.log",
            )
        )
        relay = CapturingRelay(server_end)
        stack.callback(relay.close)
        client_end = stack.enter_context(
            tunnel_end(
                [f"--listen=tcp:{HOST}:0", f"--to=utcp:{HOST}:{relay.port}", *client_tls],
                tmp_path / "client-end.log",
            )
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{HOST}:{client_end}/page.txt", timeout=HANG_S) as response:
            assert response.status == 200
            body = response.read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(page).digest()
    assert sum(map(len, relay.datagrams)) > len(page)  # the page went through the relay
    for needle in (b"GET /page.txt", b"HTTP/1.0 200", b"only the tunnel's two ends"):
        seen = any(needle in datagram for datagram in relay.datagrams)
        assert seen is not tls, needle


@pytest.fixture
def contexts(certs: Certs) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the server end's context, the client end's)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.cert, certs.key)
    return server, ssl.create_default_context(cafile=str(certs.ca))


async def _wait_for_records(records: list[ConnectionRecord]) -> None:
    for _ in range(HANG_S * 100):
        if records:
            return
        await asyncio.sleep(0.01)


async def test_library_tunnel_over_tls_passes_half_close_on(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """TLS cannot half-close, so the tunnel's ends carry the half-close inside it: a backend
    that answers only after its client's EOF still answers, in full, and the connection ends
    cleanly on both ends."""
    server_ctx, client_ctx = contexts

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's half-close
        writer.write(request[::-1] * 10_000)
        writer.close()

    backend = await asyncio.start_server(answer, HOST, 0)
    port = backend.sockets[0].getsockname()[1]
    far_records: list[ConnectionRecord] = []
    near_records: list[ConnectionRecord] = []
    async with (
        await Tunnel.start(
            f"utcp:{HOST}:0", f"tcp:{HOST}:{port}", ssl=server_ctx, on_close=far_records.append
        ) as far,
        await Tunnel.start(
            f"tcp:{HOST}:0",
            f"utcp:{HOST}:{far.address[1]}",
            ssl=client_ctx,
            on_close=near_records.append,
        ) as near,
    ):
        reader, writer = await asyncio.open_connection(HOST, near.address[1])
        writer.write(b"0123456789")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), HANG_S) == b"9876543210" * 10_000
        writer.close()
        await writer.wait_closed()
        await _wait_for_records(near_records)
        await _wait_for_records(far_records)
    for records in (near_records, far_records):
        assert records[0].clean, records[0]
        assert (records[0].bytes_up, records[0].bytes_down) == (10, 100_000)
    backend.close()
    await backend.wait_closed()


async def test_library_tunnel_client_end_that_does_not_trust_resets_its_client(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], certs: Certs
) -> None:
    server_ctx, _ = contexts
    untrusting = ssl.create_default_context(cafile=str(certs.other_ca))
    records: list[ConnectionRecord] = []
    async with (
        await Tunnel.start(f"utcp:{HOST}:0", f"tcp:{HOST}:9", ssl=server_ctx) as far,
        await Tunnel.start(
            f"tcp:{HOST}:0",
            f"utcp:{HOST}:{far.address[1]}",
            ssl=untrusting,
            on_close=records.append,
        ) as near,
    ):
        reader, writer = await asyncio.open_connection(HOST, near.address[1])
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), HANG_S)
        writer.close()
        await _wait_for_records(records)
    assert records[0].reason.startswith("utcp TLS certificate not accepted: ")
    assert near.counters.errors == {"utcp TLS certificate not accepted": 1}
    assert far.counters.connections == 0  # the server end never saw a connection to carry
