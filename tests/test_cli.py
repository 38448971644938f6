"""The ``utcp`` command line: help, argument errors, value parsers, and real runs of
``echo-server``, ``cat`` and ``perf`` as separate processes on loopback: ``cat`` in the
background of a terminal, ``-v``'s connection reports, output into closed pipes, and RTTs shown
no finer than the event loop's clock."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import math
import os
import pty
import random
import re
import shutil
import signal
import subprocess
import sys
import termios
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import UTCP, background, poll_until, utcp_cli
from utcp.cli import build_parser
from utcp.cli.cat import _read_chunks, reads_stdin
from utcp.cli.report import (
    FINE_CLOCK_S,
    clock_note,
    clock_resolution,
    measure_resolution,
    rtt_text,
)
from utcp.cli.units import (
    parse_duration,
    parse_fraction,
    parse_hostport,
    parse_interval,
    parse_rate,
    parse_size,
)

pytestmark = pytest.mark.sockets  # real sockets: run on both datagram I/O paths

SUBCOMMANDS = ["echo-server", "cat", "perf", "netem", "tunnel", "plot", "ladder"]


def test_top_level_help_lists_every_subcommand() -> None:
    result = utcp_cli("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    result = utcp_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("usage:")


def test_help_options_match_the_parser() -> None:
    # Every option a subcommand accepts is shown in its --help text.
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():  # type: ignore[union-attr]
        text = subparser.format_help()
        for action in subparser._actions:
            for flag in action.option_strings:
                base, _, direction = flag.rpartition("-")
                # netem documents its per-direction family once, as --OPTION-up/-down.
                family = direction in ("up", "down") and "--OPTION-" in text and base in text
                assert flag in text or family, f"{name}: {flag} missing from --help"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required"),
        (["nosuch"], "invalid choice"),
        (["echo-server", "--port", "70000"], "port out of range"),
        (["cat"], "HOST PORT"),
        (["cat", "localhost"], "HOST PORT"),
        (["cat", "--listen", "1", "2"], "just PORT"),
        (["perf", "127.0.0.1", "1", "--bytes", "12X"], "not a size"),
        (["perf", "127.0.0.1", "1", "--time", "soon"], "not a duration"),
        (["perf", "127.0.0.1", "1", "--bytes", "1M", "--time", "1s"], "not allowed with"),
        (["perf", "127.0.0.1", "1", "--parallel", "0"], "at least 1"),
        # A connect timeout of 0 had been taken (and timed out at once).
        (["cat", "--connect-timeout", "0", "127.0.0.1", "9"], "must be positive"),
        (
            ["tunnel", "--listen", "tcp:0", "--to", "utcp:127.0.0.1:9", "--connect-timeout", "0"],
            "must be positive",
        ),
        (["netem", "--listen", "127.0.0.1:0", "--to", "nowhere"], "HOST:PORT"),
        (["netem", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--loss", "150%"], "range"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], needle: str) -> None:
    result = utcp_cli(*args)
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err


@pytest.mark.parametrize(
    ("text", "value"),
    [("5%", 0.05), ("0.05", 0.05), ("100%", 1.0), ("0", 0.0), (" 2.5% ", 0.025)],
)
def test_parse_fraction(text: str, value: float) -> None:
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("10M", 10 << 20), ("64K", 65536), ("64k", 65536), ("1500", 1500), ("1G", 1 << 30)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("20ms", 0.02), ("2s", 2.0), ("1.5", 1.5)])
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == pytest.approx(value)


def test_parse_misc() -> None:
    assert parse_duration("20", default_unit="ms") == pytest.approx(0.02)
    assert parse_rate("20") == 20e6
    assert parse_rate("500kbit") == 500e3
    assert parse_hostport("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_hostport("[::1]:53") == ("::1", 53)
    assert parse_interval("2s+3s") == (2.0, 3.0)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_fraction, "-1%"),
        (parse_fraction, "1.5"),
        (parse_fraction, "lots"),
        (parse_size, "12X"),
        (parse_size, ""),
        (parse_duration, "2 weeks"),
        (parse_rate, "0"),
        (parse_hostport, "127.0.0.1"),
        (parse_hostport, "h:99999"),
        (parse_interval, "2s"),
    ],
)
def test_parsers_reject_bad_values(parse: object, text: str) -> None:
    assert callable(parse)
    with pytest.raises(ValueError):
        parse(text)


def test_cat_copies_a_file_exactly(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    dst = tmp_path / "out.bin"
    src.write_bytes(random.Random(5).randbytes(3 << 20))
    with (
        dst.open("wb") as out,
        background(["cat", "--listen", "0"], stdout=out, address_on="stderr") as (server, port),
        src.open("rb") as f,
    ):
        client = utcp_cli("cat", "127.0.0.1", str(port), stdin=f.read())
        assert client.returncode == 0, client.stderr
        assert server.wait(timeout=60) == 0
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_cat_half_close_still_receives_the_reply() -> None:
    # The echo server answers only what it has read; cat's FIN at end of input must not stop
    # the reply from arriving.
    payload = random.Random(6).randbytes(500_000)
    with background(["echo-server", "--port", "0"]) as (_, port):
        result = utcp_cli("cat", "127.0.0.1", str(port), stdin=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


# A server that ends its side at once, reads nothing (its window fills) and resets the
# connection a moment later: what the client wrote is never all acknowledged.
_RESETTING_SERVER = """
import asyncio, utcp

async def handle(reader, writer):
    writer.write_eof()
    await asyncio.sleep(1.0)
    writer.transport.abort()

async def main():
    cfg = utcp.Config(recv_buffer_bytes=16384, recv_autotune=False)
    server = await utcp.start_server(handle, "127.0.0.1", 0, config=cfg, limit=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(60)

utcp.run(main())
"""


def test_cat_whose_data_the_peer_never_acknowledged_fails() -> None:
    """The peer resets before acknowledging what cat wrote (all of it buffered, the FIN
    queued): cat exits 1 saying so, not 0 as if the copy had finished."""
    server = subprocess.Popen(
        [sys.executable, "-c", _RESETTING_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        result = utcp_cli("cat", "127.0.0.1", port, stdin=b"x" * 200_000)
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 1, result.stderr
    assert b"reset" in result.stderr.lower()


def test_cat_to_nobody_fails_with_exit_1() -> None:
    result = utcp_cli("cat", "127.0.0.1", "9", stdin=b"x")
    assert result.returncode == 1
    assert b"refused" in result.stderr.lower()


def test_cat_takes_config_fields_from_a_file(tmp_path: Path) -> None:
    """--config FILE sets Config fields (the file's, then --user-timeout); a bad field is an
    argument error (exit 2) that names it, before anything is opened."""
    good = tmp_path / "good.json"
    good.write_text('{"idle_timeout_s": null, "fin_retries": 9}')
    with background(["cat", "--config", str(good), "--listen", "0"], address_on="stderr") as (
        server,
        port,
    ):
        result = utcp_cli("cat", "--config", str(good), "127.0.0.1", str(port), stdin=b"hi")
        assert result.returncode == 0, result.stderr
        assert server.wait(timeout=30) == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"idle_timeout": 5}')
    result = utcp_cli("cat", "--config", str(bad), "127.0.0.1", "9", stdin=b"x")
    assert result.returncode == 2
    assert b"unknown Config field 'idle_timeout'" in result.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"fin_retries": -1}')
    result = utcp_cli("cat", "--config", str(wrong), "127.0.0.1", "9", stdin=b"x")
    assert result.returncode == 2
    assert b"fin_retries" in result.stderr


def test_perf_json_send_and_reverse() -> None:
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        sent = utcp_cli("perf", "127.0.0.1", str(port), "--bytes", "4M", "--json")
        back = utcp_cli("perf", "127.0.0.1", str(port), "-n", "2M", "-R", "-P", "2", "--json")
    assert sent.returncode == 0, sent.stderr
    assert back.returncode == 0, back.stderr
    up = json.loads(sent.stdout)
    down = json.loads(back.stdout)
    assert up["bytes"] == 4 << 20 and up["direction"] == "send" and up["goodput_mbit_s"] > 0
    assert up["clock_resolution_ms"] > 0  # srtt_ms is no finer than this
    assert down["bytes"] == 2 * (2 << 20) and down["parallel"] == 2
    assert len(down["flows"]) == 2


def test_perf_times_a_transfer_that_arrives_in_one_read() -> None:
    # 10 KiB arrives in one read: its first and last byte at one instant.  The duration was
    # then 1e-9 s and the goodput tens of millions of Mbit/s; with parallel flows the
    # summary took the longest flow, not the span of all of them.
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        runs = [
            utcp_cli("perf", "127.0.0.1", str(port), "-n", "10K", *extra, "--json")
            for extra in ([], ["-R"], ["-P", "3"], ["-R", "-P", "3"])
        ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        assert result["seconds"] > 1e-5, result  # a round trip's time at least
        assert result["goodput_mbit_s"] == result["bytes"] * 8 / 1e6 / result["seconds"]


def test_perf_prints_live_lines_and_a_summary() -> None:
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        result = utcp_cli("perf", "127.0.0.1", str(port), "--time", "2.5s")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["time", "goodput", "retx", "srtt", "cwnd"]
    assert any("Mbit/s" in line for line in lines[1:-1])
    assert lines[-1].startswith("summary: ")
    # srtt as fine as its clock: time.monotonic() on every loop, uvloop included.
    assert re.search(r"srtt \d+\.\d\d ms$", lines[-1]), lines[-1]


@pytest.mark.parametrize(
    ("text", "bps"),
    [("20", 20e6), ("20M", 20e6), ("20mbit/s", 20e6), ("20Mbps", 20e6), ("1G", 1e9)],
)
def test_parse_rate_accepts_common_spellings(text: str, bps: float) -> None:
    assert parse_rate(text) == bps


def test_parse_duration_ignores_case() -> None:
    assert parse_duration("20MS") == pytest.approx(0.02)


# ------------------------------------------------------------------ cat in the background


def _fake_tty(
    *, tty: bool, foreground: int | None, ours: int = 100
) -> dict[str, Callable[..., Any]]:
    """isatty, tcgetpgrp and getpgrp for ``reads_stdin``: ``foreground`` None makes
    tcgetpgrp fail as it does for a terminal that is not the controlling one."""

    def tcgetpgrp(fd: int) -> int:
        if foreground is None:
            raise OSError(errno.ENOTTY, "not the controlling terminal")
        return foreground

    return {"isatty": lambda fd: tty, "tcgetpgrp": tcgetpgrp, "getpgrp": lambda: ours}


@pytest.mark.parametrize(
    ("tty", "foreground", "reads"),
    [
        (False, 7, True),  # a file or a pipe: always read
        (True, 100, True),  # the terminal of the foreground job: ours to read
        (True, 7, False),  # a background job (&): reading would stop us with SIGTTIN
        (True, None, True),  # a terminal that is not our controlling one: no SIGTTIN
    ],
)
def test_cat_reads_stdin_unless_in_the_background_of_its_terminal(
    tty: bool, foreground: int | None, reads: bool
) -> None:
    assert reads_stdin(0, **_fake_tty(tty=tty, foreground=foreground)) is reads


def test_cat_stdin_reader_leaves_no_coroutine_behind_once_the_loop_closed() -> None:
    # The reading thread hands its last chunk to a loop that has just closed: the coroutine
    # it made for it was never awaited, and Python warned so on the way out (1 run in 3).
    loop = asyncio.new_event_loop()
    loop.close()
    read_end, write_end = os.pipe()
    os.write(write_end, b"late")
    os.close(write_end)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _read_chunks(read_end, loop, asyncio.Queue(maxsize=1))
            gc.collect()
    finally:
        os.close(read_end)
    assert not [w for w in caught if "never awaited" in str(w.message)]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for job control")
def test_cat_listening_in_the_background_of_a_terminal_still_receives(tmp_path: Path) -> None:
    # README: `utcp cat --listen 9000 > copy.bin &` in an interactive shell. bash with job
    # control on a pseudo-terminal starts the listener as a background job; reading the
    # terminal would stop it (SIGTTIN, `wait` then returns 128 + 21) and hang the sender.
    payload = random.Random(8).randbytes(200_000)
    out, err, pid_file, status = (tmp_path / n for n in ("out", "err", "pid", "status"))
    script = (
        'set -m\n"$PY" -m utcp cat --listen 0 > "$OUT" 2> "$ERR" &\n'
        'echo $! > "$PID"\nwait $!\necho $? > "$STATUS"\n'
    )
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "ERR": str(err)}
    env |= {"PID": str(pid_file), "STATUS": str(status)}
    master, slave = pty.openpty()
    shell = subprocess.Popen(
        ["bash", "-c", script],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,  # a session of its own, the pty its controlling terminal
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    sender: subprocess.Popen[bytes] | None = None
    try:
        port = _port_from(err, timeout_s=60)
        sender = subprocess.Popen(
            [*UTCP, "cat", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert sender.stdin is not None
        sender.stdin.write(payload)
        sender.stdin.close()
        deadline = time.monotonic() + 60
        while sender.poll() is None and time.monotonic() < deadline:
            stopped = status.exists() and status.read_text().strip() == "149"
            assert not stopped, "the listener was stopped by SIGTTIN"
            time.sleep(0.05)
        assert sender.poll() == 0, "the sender did not finish"
        assert shell.wait(timeout=60) == 0
        assert status.read_text().strip() == "0", err.read_text()
        assert out.read_bytes() == payload
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # a stopped listener
        if shell.poll() is None:
            shell.kill()
        shell.wait()
        os.close(master)


def _port_from(err: Path, *, timeout_s: float) -> int:
    """The port in the ``listening on`` line a background cat writes to ``err``."""
    found: list[int] = []

    def said() -> bool:
        match = (
            re.search(r"listening on utcp://[^:]+:(\d+)", err.read_text()) if err.exists() else None
        )
        if match:
            found.append(int(match.group(1)))
        return bool(found)

    poll_until(said, "the background listener says where it listens", timeout_s=timeout_s)
    return found[0]


# ------------------------------------------------------------------ -v: connection reports


def test_verbose_reports_each_connection_and_no_debug() -> None:
    with background(["-v", "cat", "--listen", "0"], address_on="stderr") as (server, port):
        client = utcp_cli("-v", "cat", "127.0.0.1", str(port), stdin=b"hello\n")
        assert client.returncode == 0, client.stderr
        assert server.wait(timeout=60) == 0
        assert server.stderr is not None
        server_err = server.stderr.read().decode()
    client_err = client.stderr.decode()
    assert re.search(rf"connection_established\s+peer=127\.0\.0\.1:{port} cid=", client_err)
    assert re.search(r"connection_accepted\s+peer=127\.0\.0\.1:\d+ cid=", server_err), server_err
    for err, sent, received in ((client_err, 6, 0), (server_err, 0, 6)):
        closed = [line for line in err.splitlines() if "connection_closed" in line]
        assert len(closed) == 1, err
        line = closed[0]
        # The reason is the core's (normally "closed"); this test is about the report.
        assert "[info" in line and re.search(r" reason=[a-z]+ ", line), line
        assert f"bytes_sent={sent} bytes_received={received} duration_s=" in line, line
        assert re.search(r"srtt='?(< )?\d", line) and "retransmissions=0" in line, line
        assert "[debug" not in err, err  # -vv's stream, not -v's


# ------------------------------------------------------------------ closed output pipes


@contextlib.contextmanager
def _closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader has gone (``| head`` after it exited)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


def _run_into(
    args: list[str], *, stdout: int, stderr: int | None = subprocess.PIPE, stdin: Any = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*UTCP, *args],
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=None if isinstance(stdin, bytes) else stdin,
        stdout=stdout,
        stderr=stderr,
        timeout=30,  # only to catch a hang: each exits within a second
        check=False,
    )


def test_debug_log_into_a_pipe_that_closes_exits_promptly() -> None:
    # `echo hi | utcp -vv cat HOST PORT 2>&1 | head -3`: once `head` has gone, the log calls
    # inside utcp's core meet a closed pipe.
    with background(["echo-server", "--port", "0"]) as (_, port):
        proc = subprocess.Popen(
            [*UTCP, "-vv", "cat", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"hi\n")
            proc.stdin.flush()
            while (line := proc.stdout.readline()) not in (b"hi\n", b""):
                assert b"[debug" in line or b"[info" in line, line
            proc.stdout.close()  # `head` exits
            proc.stdin.close()  # end of input: FIN, and the core logs its state changes
            assert proc.wait(timeout=30) == 1  # the timeout only catches a hang
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# Runs the command with a stderr whose reader goes away at one chosen log event, as `| head`
# does: which event meets the closed pipe first is a race in a real pipeline.
_BREAK_STDERR_AT = """
import os, sys
from utcp.cli import main

read_end, closed_pipe = os.pipe()
os.close(read_end)

class Breaks:
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        if sys.argv[1] in text:
            os.dup2(closed_pipe, self.stream.fileno())
        return self.stream.write(text)
    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stderr = Breaks(sys.stderr)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("event", ["state_changed", "pmtud_state", "transport_closed"])
def test_debug_log_failing_inside_the_core_exits_promptly(event: str) -> None:
    # Before, a log call failing at the connection's close (transport_closed) left the
    # transport unclosed and `utcp cat` waiting for it forever.
    with background(["echo-server", "--port", "0"]) as (_, port):
        result = subprocess.run(
            [sys.executable, "-c", _BREAK_STDERR_AT, event, "-vv", "cat", "127.0.0.1", str(port)],
            input=b"hi\n",
            capture_output=True,
            timeout=30,  # only to catch the hang
            check=False,
        )
    assert result.returncode == 1, result.stderr


def test_cat_into_a_closed_pipe_exits_quietly_though_stdin_stays_open(tmp_path: Path) -> None:
    # Our stdout broke, not the connection: no "connection failed", and no wait for an
    # idle standard input either.
    src = tmp_path / "in.bin"
    src.write_bytes(random.Random(9).randbytes(1 << 20))
    with (
        src.open("rb") as f,
        background(["cat", "--listen", "0"], stdin=f, address_on="stderr") as (_, port),
        _closed_pipe() as broken,
    ):
        idle = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE)
        try:
            result = _run_into(["cat", "127.0.0.1", str(port)], stdout=broken, stdin=idle.stdout)
        finally:
            idle.kill()
            idle.wait()
            assert idle.stdout is not None
            idle.stdout.close()
    assert result.returncode == 1
    assert result.stderr == b""


@pytest.mark.parametrize("command", ["echo-server", "perf-server", "perf"])
def test_servers_and_perf_exit_quietly_into_a_closed_pipe(command: str) -> None:
    with background(["perf", "--server", "--port", "0"]) as (_, port), _closed_pipe() as broken:
        args = {
            "echo-server": ["echo-server", "--port", "0"],
            "perf-server": ["perf", "--server", "--port", "0"],
            "perf": ["perf", "127.0.0.1", str(port), "--time", "5s"],
        }[command]
        result = _run_into(args, stdout=broken)
    assert result.returncode == 1
    assert result.stderr == b""


def test_ladder_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    header = {"trace": "utcp", "version": 1, "cid": "0000abcd", "role": "client"}
    header |= {"local": None, "peer": None, "reference_time": 0.0, "iss": 1, "mss": 1000}
    lines = [json.dumps(header | {"congestion": "newreno"})]
    lines += [json.dumps({"t": i / 1000, "ev": "timer_fired", "timer": "rto"}) for i in range(9)]
    trace.write_text("\n".join(lines) + "\n")
    with _closed_pipe() as broken:
        result = _run_into(["ladder", str(trace)], stdout=broken)
        # The drawing written through a path that is the same closed pipe: before, "cannot
        # write /dev/stdout: Broken pipe" and exit 2.
        as_svg = _run_into(["ladder", str(trace), "--svg", "/dev/stdout"], stdout=broken)
    assert result.returncode == 1
    assert result.stderr == b""
    assert as_svg.returncode == 1
    assert as_svg.stderr == b""


# ------------------------------------------------------------------ RTTs and the loop's clock


@pytest.mark.parametrize(
    ("rtt_s", "resolution_s", "text"),
    [
        (0.000204, 1e-7, "0.204 ms"),  # asyncio's loop: microseconds are real
        (0.0, 0.001, "< 1 ms"),  # uvloop: a 0.2 ms loopback RTT is sampled as 0 or 1 ms
        (0.000125, 0.001, "< 1 ms"),
        (0.00157, 0.001, "2 ms"),  # never 1.57: the samples were whole milliseconds
        (0.0123, 0.0001, "12.3 ms"),
        (None, 0.001, "-"),
    ],
)
def test_rtt_shown_no_finer_than_the_clock(
    rtt_s: float | None, resolution_s: float, text: str
) -> None:
    assert rtt_text(rtt_s, resolution_s) == text


def test_clock_note_only_for_a_coarse_clock() -> None:
    assert clock_note(0.001) == " (clock resolution 1 ms)"
    assert clock_note(1e-7) == ""


def test_measured_clock_resolution() -> None:
    def coarse() -> float:  # libuv's uv_now(): whole milliseconds
        return math.floor(time.monotonic() * 1000) / 1000

    assert measure_resolution(coarse) == pytest.approx(0.001)
    # Fine, not whole milliseconds.  What is measured is also the cost of a loop turn around
    # the clock call, which a busy 2-core machine stretches past FINE_CLOCK_S (a run beside a
    # benchmark measured 1.1 us), so the bound tells a fine clock from a coarse one and no more.
    fine = FINE_CLOCK_S * 100
    assert measure_resolution(time.monotonic) < fine
    # The core runs on time.monotonic() on every loop: fine on uvloop too (its loop.time()
    # moves in whole milliseconds).
    assert asyncio.run(_loop_clock_resolution()) < fine  # asyncio's own loop
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(_loop_clock_resolution()) < fine


async def _loop_clock_resolution() -> float:
    return clock_resolution()


@pytest.mark.parametrize(
    "server",
    [["echo-server"], ["echo-server", "--workers", "2"], ["perf", "--server"]],
    ids=["echo-server", "echo-server-workers", "perf-server"],
)
def test_a_server_that_cannot_listen_says_so_in_one_line(server: list[str]) -> None:
    """The port taken, or a host that does not resolve: one line and exit status 1, as cat
    --listen and tunnel do (echo-server and perf --server printed a traceback)."""
    with background(["echo-server", "--port", "0"]) as (_, port):
        taken = _run_into([*server, "--port", str(port)], stdout=subprocess.PIPE)
    unknown = _run_into([*server, "--host", "bad.invalid", "--port", "0"], stdout=subprocess.PIPE)
    for result in (taken, unknown):
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "error: cannot listen on utcp://" in err, err
    # asyncio's loop says the address is in use; uvloop's datagram transport, on the portable
    # path, only that it could not bind.
    assert f":{port}: " in taken.stderr.decode()


def test_cat_listen_that_cannot_bind_says_so_as_the_servers_do() -> None:
    """``cat --listen`` on an address not ours: "cannot listen on", as the other servers
    say (it said "connection failed")."""
    result = utcp_cli("cat", "--listen", "--host", "192.0.2.1", "0")
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "error: cannot listen on utcp://192.0.2.1:0: " in err and len(err.splitlines()) == 1


def test_commands_started_with_standard_streams_closed_run_and_exit_cleanly() -> None:
    """Started with stdin closed (``<&-``), a server and a cat client work and exit
    normally; uvloop had aborted the process (status 134) on closing the socket it was
    given as descriptor 0."""

    def closed_stdin() -> None:
        os.close(0)

    server_args = ["echo-server", "--port", "0"]
    with background(server_args, stdin=None, preexec_fn=closed_stdin) as (server, port):
        client = subprocess.run(
            [*UTCP, "cat", "127.0.0.1", str(port)],
            stdin=None,
            capture_output=True,
            timeout=60,
            check=False,
            preexec_fn=closed_stdin,
        )
        assert client.returncode == 0, client.stderr
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


def test_perf_for_no_time_sends_nothing() -> None:
    """``--time 0`` sends for no time (it ran for the ten-second default)."""
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        result = _run_into(
            ["perf", "127.0.0.1", str(port), "--time", "0", "--json"], stdout=subprocess.PIPE
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == 0


def test_an_ipv6_listening_address_is_bracketed() -> None:
    """``utcp://[::1]:PORT``, as URLs write IPv6 hosts (it said ``utcp://::1:PORT``)."""
    proc = subprocess.Popen(
        [*UTCP, "echo-server", "--host", "::1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert re.search(r"listening on utcp://\[::1\]:\d+$", line.strip()), line


def test_perf_reverse_reports_the_senders_retransmissions() -> None:
    """``perf -R`` through a relay dropping 3%: the numbers are the server's, which sent
    (the summary showed the receiving client's own: no retransmission, an srtt from its
    request alone), and the live lines leave the sender's columns blank."""
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        lossy = ["--to", f"127.0.0.1:{port}", "--loss", "3%", "--seed", "5"]
        relay = subprocess.Popen(
            [*UTCP, "netem", "--listen", "127.0.0.1:0", *lossy],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert relay.stdout is not None
            first = relay.stdout.readline().decode()
            via = re.search(r"udp://127\.0\.0\.1:(\d+) ->", first)
            assert via, first
            args = ("perf", "127.0.0.1", via.group(1), "-n", "2M", "-R")
            summary = utcp_cli(*args, "-P", "2", "--json")
            live = utcp_cli(*args)
        finally:
            relay.terminate()
            relay.wait(timeout=10)
    assert summary.returncode == 0, summary.stderr
    result = json.loads(summary.stdout)
    senders = result["senders"]
    assert len(senders) == 2 and all(s["srtt_s"] for s in senders)
    assert result["retransmissions"] == sum(s["retransmissions"] for s in senders) > 0
    assert live.returncode == 0, live.stderr
    rows = live.stdout.decode().splitlines()[1:-1]
    assert all(row.split()[-3:] == ["-", "-", "-"] for row in rows), rows
    assert live.stdout.decode().splitlines()[-1].startswith("summary: ")


@pytest.mark.parametrize(
    "request_line", [b"[1, 2]", b"null", b'"x"', b'{"reverse": true, "bytes": 5.5}']
)
def test_perf_server_answers_a_malformed_request_in_one_line(request_line: bytes) -> None:
    """A request that is JSON but not a valid one: one "perf flow failed" line and the
    server goes on (it printed a traceback from the stream callback)."""
    with background(["perf", "--server", "--port", "0"]) as (proc, port):
        sent = utcp_cli("cat", "127.0.0.1", str(port), stdin=request_line + b"\n")
        assert sent.returncode == 0, sent.stderr
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        again = utcp_cli("perf", "127.0.0.1", str(port), "-n", "10K", "--json")
    assert line.startswith("perf flow failed: ValueError("), line
    assert again.returncode == 0, again.stderr
