"""The ``utcp`` command line: help, argument errors, value parsers, and real runs of
``echo-server``, ``cat`` and ``perf`` as separate processes on loopback."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from tests.cli_helpers import background, utcp_cli
from utcp.cli import build_parser
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


def test_cat_to_nobody_fails_with_exit_1() -> None:
    result = utcp_cli("cat", "127.0.0.1", "9", stdin=b"x")
    assert result.returncode == 1
    assert b"refused" in result.stderr.lower()


def test_perf_json_send_and_reverse() -> None:
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        sent = utcp_cli("perf", "127.0.0.1", str(port), "--bytes", "4M", "--json")
        back = utcp_cli("perf", "127.0.0.1", str(port), "-n", "2M", "-R", "-P", "2", "--json")
    assert sent.returncode == 0, sent.stderr
    assert back.returncode == 0, back.stderr
    up = json.loads(sent.stdout)
    down = json.loads(back.stdout)
    assert up["bytes"] == 4 << 20 and up["direction"] == "send" and up["goodput_mbit_s"] > 0
    assert down["bytes"] == 2 * (2 << 20) and down["parallel"] == 2
    assert len(down["flows"]) == 2


def test_perf_prints_live_lines_and_a_summary() -> None:
    with background(["perf", "--server", "--port", "0"]) as (_, port):
        result = utcp_cli("perf", "127.0.0.1", str(port), "--time", "2.5s")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["time", "goodput", "retx", "srtt", "cwnd"]
    assert any("Mbit/s" in line for line in lines[1:-1])
    assert lines[-1].startswith("summary: ")


@pytest.mark.parametrize(
    ("text", "bps"),
    [("20", 20e6), ("20M", 20e6), ("20mbit/s", 20e6), ("20Mbps", 20e6), ("1G", 1e9)],
)
def test_parse_rate_accepts_common_spellings(text: str, bps: float) -> None:
    assert parse_rate(text) == bps


def test_parse_duration_ignores_case() -> None:
    assert parse_duration("20MS") == pytest.approx(0.02)
