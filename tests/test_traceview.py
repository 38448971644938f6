"""Reading connection traces: loading and checking, sequence unwrapping across 2**32, and the
``utcp ladder`` and ``utcp plot`` commands on synthetic traces written per docs/TRACE.md."""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from utcp.cli import main
from utcp.packet import Flag, Packet, decode, encode
from utcp.tools.traceview import (
    SeqUnwrapper,
    datagram_from_packet,
    load_trace,
    parse_trace,
    time_sequence,
    unwrap,
)

MOD = 1 << 32
ISS = MOD - 1500  # ours: the data crosses 2**32 in its third segment
PEER_ISS = MOD - 2  # the peer's: its five bytes cross 2**32 too
MSS = 1000


def s(n: int) -> int:
    """A wire sequence number."""
    return n % MOD


class TraceBuilder:
    """Writes a trace file line by line, as utcp.trace would."""

    def __init__(self, *, iss: int = ISS, role: str = "client", peer: str | None = None) -> None:
        self.lines: list[dict[str, Any]] = [
            {
                "trace": "utcp",
                "version": 1,
                "cid": "9f3a0c11",
                "role": role,
                "local": "127.0.0.1:40123",
                "peer": peer,
                "reference_time": 1795999162.512,
                "iss": iss,
                "mss": MSS,
                "congestion": "newreno",
            }
        ]

    def event(self, t: float, ev: str, **fields: Any) -> TraceBuilder:
        self.lines.append({"t": t, "ev": ev, **fields})
        return self

    def datagram(
        self,
        ev: str,
        t: float,
        flags: str,
        seq: int,
        ack: int,
        length: int = 0,
        wnd: int = 65535,
        sack: list[list[int]] | None = None,
    ) -> TraceBuilder:
        fields: dict[str, Any] = {"flags": flags, "seq": s(seq), "ack": s(ack), "wnd": wnd}
        fields["len"] = length
        if sack:
            fields["sack"] = [[s(left), s(right)] for left, right in sack]
        return self.event(t, ev, **fields)

    def sent(self, t: float, flags: str, seq: int, ack: int, **kw: Any) -> TraceBuilder:
        return self.datagram("datagram_sent", t, flags, seq, ack, **kw)

    def received(self, t: float, flags: str, seq: int, ack: int, **kw: Any) -> TraceBuilder:
        return self.datagram("datagram_received", t, flags, seq, ack, **kw)

    def state(self, t: float, old: str, new: str) -> TraceBuilder:
        return self.event(t, "state_changed", old=old, new=new)

    def write(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        return path


def client_trace() -> TraceBuilder:
    """Handshake, four segments of which the second is lost, SACKed and retransmitted, five
    bytes from the peer, and a FIN close; both ends' numbers wrap past 2**32."""
    x, y = ISS, PEER_ISS
    b = TraceBuilder(peer="127.0.0.1:5000")
    b.state(0.0, "CLOSED", "SYN_SENT").sent(0.0, "SYN", x, 0)
    b.received(0.010, "SYN+ACK", y, x + 1)
    b.event(0.010, "rtt_sample", rtt=0.010, srtt=0.010, rttvar=0.005, rto=0.2)
    b.state(0.010, "SYN_SENT", "ESTABLISHED").sent(0.010, "ACK", x + 1, y + 1)
    b.event(0.010, "cwnd_changed", cwnd=10 * MSS, ssthresh=None, in_flight=0)
    for k in range(4):
        b.sent(0.011 + k * 0.001, "ACK", x + 1 + k * MSS, y + 1, length=MSS)
    b.event(0.015, "future_event", detail="a newer writer's event")
    b.received(0.021, "ACK", y + 1, x + 1 + MSS)
    b.event(0.021, "rtt_sample", rtt=0.010, srtt=0.010, rttvar=0.004, rto=0.2)
    b.event(0.021, "cwnd_changed", cwnd=11 * MSS, ssthresh=None, in_flight=3 * MSS)
    b.received(0.023, "ACK", y + 1, x + 1 + MSS, sack=[[x + 1 + 2 * MSS, x + 1 + 3 * MSS]])
    b.received(0.024, "ACK", y + 1, x + 1 + MSS, sack=[[x + 1 + 2 * MSS, x + 1 + 4 * MSS]])
    b.event(0.024, "loss_detected", seq=s(x + 1 + MSS), len=MSS, by="sack")
    b.event(0.024, "cwnd_changed", cwnd=5 * MSS, ssthresh=5 * MSS, in_flight=MSS)
    b.event(0.024, "retransmit", seq=s(x + 1 + MSS), len=MSS, by="sack")
    b.sent(0.024, "ACK", x + 1 + MSS, y + 1, length=MSS)
    b.received(0.034, "ACK", y + 1, x + 1 + 4 * MSS)
    b.event(0.034, "rtt_sample", rtt=0.010, srtt=0.0101, rttvar=0.003, rto=0.2)
    b.received(0.035, "ACK", y + 1, x + 1 + 4 * MSS, length=5)
    b.sent(0.035, "ACK", x + 1 + 4 * MSS, y + 6)
    b.sent(0.036, "FIN+ACK", x + 1 + 4 * MSS, y + 6)
    b.state(0.036, "ESTABLISHED", "FIN_WAIT_1")
    b.received(0.046, "ACK", y + 6, x + 2 + 4 * MSS)
    b.state(0.046, "FIN_WAIT_1", "FIN_WAIT_2")
    b.received(0.047, "FIN+ACK", y + 6, x + 2 + 4 * MSS)
    b.state(0.047, "FIN_WAIT_2", "TIME_WAIT").sent(0.047, "ACK", x + 2 + 4 * MSS, y + 7)
    b.event(0.107, "timer_fired", timer="time_wait")
    b.state(0.107, "TIME_WAIT", "CLOSED").event(0.107, "connection_closed", reason="NORMAL")
    return b


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return client_trace().write(tmp_path / "client.jsonl")


# ---------------------------------------------------------------------------------- unwrapping


def test_unwrap_is_serial_arithmetic_across_2_32() -> None:
    assert unwrap(5, MOD - 3) == 8
    assert unwrap(MOD - 3, 5) == -8
    assert unwrap(1000, 1000) == 0


def test_unwrapper_keeps_counting_past_several_wraps() -> None:
    step = 1 << 30
    unwrapped = SeqUnwrapper(MOD - 10)
    offsets = [unwrapped(s(MOD - 10 + k * step)) for k in range(13)]  # 3.25 laps of 2**32
    assert offsets == [k * step for k in range(13)]
    assert unwrapped(s(MOD - 10 + 12 * step - 500)) == 12 * step - 500  # an old segment again


def test_time_sequence_unwraps_our_data_relative_to_iss(trace_file: Path) -> None:
    trace = load_trace(trace_file)
    assert trace.skipped == 1  # the unknown event
    assert trace.peer_iss == PEER_ISS
    ts = time_sequence(trace)
    assert [(a, b) for _, a, b in ts.segments] == [
        (1 + k * MSS, 1 + (k + 1) * MSS) for k in range(4)
    ]
    assert [(a, b) for _, a, b in ts.retransmits] == [(1 + MSS, 1 + 2 * MSS)]
    assert [(a, b) for _, a, b in ts.losses] == [(1 + MSS, 1 + 2 * MSS)]
    assert (0.024, 1 + 2 * MSS, 1 + 4 * MSS) in ts.sacks
    assert [a for _, a in ts.acks] == [1, 1001, 1001, 1001, 4001, 4001, 4002, 4002]
    assert ts.windows[-1][1] == 4002 + 65535
    assert [c for _, c in ts.cwnd] == [10 * MSS, 11 * MSS, 5 * MSS]
    assert ts.srtt_ms[-1][1] == pytest.approx(10.1)


def test_the_example_in_the_schema_document_loads() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "TRACE.md").read_text()
    example = doc.split("## Example", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    trace = parse_trace(example.splitlines(), "TRACE.md")
    assert trace.header.iss == 1000
    assert trace.peer_iss == 5000
    assert len(trace.events) == 7


# ---------------------------------------------------------------------------------- ladder


def test_ladder_shows_the_handshake_with_wire_numbers(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ladder", str(trace_file)]) == 0
    out = capsys.readouterr().out
    x, y = ISS, PEER_ISS
    assert f"SYN seq={x} ack=0" in out
    assert f"SYN+ACK seq={y} ack={s(x + 1)}" in out
    assert f"ACK seq={s(x + 1)} ack={s(y + 1)} " in out
    lines = out.splitlines()
    syn = next(line for line in lines if f"SYN seq={x}" in line)
    synack = next(line for line in lines if "SYN+ACK" in line)
    assert syn.startswith(" SYN") and syn.endswith("-->")  # sent: left to right
    assert synack.startswith("<--")  # received: right to left
    assert "[CLOSED -> SYN_SENT]" in lines
    assert lines[1].startswith("client 127.0.0.1:40123") and lines[1].endswith("127.0.0.1:5000")
    # the peer's five bytes cross 2**32; the retransmission and the loss are marked
    assert f"ACK seq={s(y + 1)} ack={s(x + 4001)} len=5" in out
    assert re.search(rf"ACK seq={s(x + 1001)} ack={s(y + 1)} len=1000 \(retx\) -*>", out)
    assert f"lost seq={s(x + 1001)} len=1000 (sack)" in out
    assert f"sack={s(x + 2001)}-{s(x + 4001)}" in out
    assert "time_wait timer fired" in out
    assert "future_event" not in out


def test_ladder_limit_and_times(trace_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ladder", str(trace_file), "--limit", "3", "--times"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = lines[3:]
    assert len(rows) == 4
    assert rows[0].split()[0] == "0.000000"
    assert re.fullmatch(r"\s*\.\.\. \d+ more rows not shown", rows[-1])


def test_ladder_svg_is_well_formed_with_labels(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_svg = tmp_path / "ladder.svg"
    assert main(["ladder", str(trace_file), "--svg", str(out_svg)]) == 0
    assert str(out_svg) in capsys.readouterr().out
    root = ET.parse(out_svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert f"SYN seq={ISS} ack=0" in texts
    assert f"SYN+ACK seq={PEER_ISS} ack={s(ISS + 1)}" in texts
    assert "[CLOSED -> SYN_SENT]" in texts
    datagrams = [e for e in client_trace().lines[1:] if e["ev"].startswith("datagram_")]
    lines = list(root.iter("{http://www.w3.org/2000/svg}line"))
    assert len(lines) == 2 + len(datagrams)  # the two ends, then one arrow each


# ---------------------------------------------------------------------------------- plot


def test_plot_writes_a_png_that_is_not_blank(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = pytest.importorskip("matplotlib.image")
    out_png = tmp_path / "graph.png"
    assert main(["plot", str(trace_file), "-o", str(out_png)]) == 0
    assert str(out_png) in capsys.readouterr().out
    assert out_png.stat().st_size > 0
    pixels = image.imread(str(out_png))
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])}) > 1


def test_plot_names_the_file_it_wrote_and_refuses_what_it_cannot_write(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-o NAME`` without an extension writes NAME.png and says so (it said NAME); an
    extension matplotlib cannot write, or a directory, is one line and exit status 2 (a
    traceback, or a hidden ``.png`` in the directory)."""
    pytest.importorskip("matplotlib")
    bare = tmp_path / "graph"
    assert main(["plot", str(trace_file), "-o", str(bare)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {bare}.png"
    assert (tmp_path / "graph.png").stat().st_size > 0 and not bare.exists()
    assert main(["plot", str(trace_file), "-o", str(tmp_path / "graph.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write .xyz images (formats: " in err, err
    assert main(["plot", str(trace_file), "-o", f"{tmp_path}/"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not (tmp_path / ".png").exists() and not (tmp_path / "graph.xyz").exists()


def test_a_trace_with_only_its_header_still_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = TraceBuilder().write(tmp_path / "empty.jsonl")
    assert main(["ladder", str(path)]) == 0
    assert main(["ladder", str(path), "--svg", str(tmp_path / "empty.svg")]) == 0
    assert main(["plot", str(path)]) == 0
    assert (tmp_path / "empty.png").stat().st_size > 0
    assert "server" in capsys.readouterr().out  # the peer's side is named even with no peer


def test_plot_without_matplotlib_says_how_to_install(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "matplotlib" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["plot", str(trace_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "matplotlib is not installed: pip install 'utcp-transport[plot]'" in err


# ---------------------------------------------------------------------------------- errors


def _bad_trace(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A broken trace file and a piece of the error it must give."""
    path = tmp_path / f"{kind}.jsonl"
    good = client_trace().lines
    header, events = json.dumps(good[0]), [json.dumps(e) for e in good[1:3]]
    if kind == "missing":
        return str(path), "cannot read"
    text = {
        "empty": "",
        "no header": "\n".join(events),
        "wrong trace": json.dumps({"trace": "qlog", "version": 1}),
        "new version": header.replace('"version": 1', '"version": 2'),
        "bad json": "\n".join([header, events[0], '{"t": 0.1, "ev": ']),
        "bad field": "\n".join([header, events[1].replace('"seq": ', '"seq": "x", "_": ')]),
    }[kind]
    path.write_text(text + "\n")
    needle = {
        "empty": "no trace header",
        "no header": "line 1: not a utcp trace header",
        "wrong trace": "line 1: not a utcp trace header",
        "new version": "line 1: trace version 2 is not supported",
        "bad json": "line 3: not valid JSON",
        "bad field": "line 2: 'seq' should be an integer",
    }[kind]
    return str(path), needle


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "no header", "wrong trace", "new version", "bad json", "bad field"]
)
@pytest.mark.parametrize("command", ["ladder", "plot"])
def test_bad_traces_exit_2_with_one_line(
    kind: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, needle = _bad_trace(tmp_path, kind)
    assert main([command, path]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"utcp {command}: error: ")
    assert needle in err
    assert captured.out == ""


def test_parse_errors_name_the_line() -> None:
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        parse_trace([json.dumps(client_trace().lines[0]), "not json"], "t.jsonl")


def test_a_last_line_cut_off_by_a_crash_is_skipped() -> None:
    lines = [
        json.dumps(
            {
                "trace": "utcp",
                "version": 1,
                "cid": "0000000a",
                "role": "client",
                "local": None,
                "peer": None,
                "reference_time": 0.0,
                "iss": 1,
                "mss": 1428,
                "congestion": "newreno",
            }
        )
        + "\n",
        '{"t": 0.0, "ev": "state_changed", "old": "CLOSED", "new": "SYN_SENT"}\n',
        '{"t": 0.1, "ev": "datagram_se',
    ]
    trace = parse_trace(lines, "cut.jsonl")
    assert len(trace.events) == 1 and trace.skipped == 1
    with pytest.raises(ValueError, match="line 2"):
        parse_trace([lines[0], lines[2] + "\n", lines[1]], "middle.jsonl")


# ---------------------------------------------------------------------------------- packets


@pytest.mark.parametrize(
    ("packet", "label"),
    [
        (Packet(Flag.SYN, 1, 0, 7, 0, 100), "SYN seq=7 ack=0"),
        (Packet(Flag.ACK, 1, 2, 8, 9, 100, payload=b"hello"), "ACK seq=8 ack=9 len=5"),
        (Packet(Flag.ACK, 1, 2, 8, 9, 100, sack_blocks=((20, 30),)), "ACK seq=8 ack=9 sack=20-30"),
        # PMTU probes and their ACKs are bare ACKs but for these options: named, not anonymous
        (
            Packet(Flag.ACK, 1, 2, 8, 9, 100, probe=3, padding=1200),
            "ACK seq=8 ack=9 probe=3 pad=1200",
        ),
        (Packet(Flag.ACK, 2, 1, 9, 8, 100, probe_ack=3), "ACK seq=9 ack=8 probe_ack=3"),
        (Packet(Flag.FIN | Flag.ACK, 1, 2, 8, 9, 100), "FIN+ACK seq=8 ack=9"),
    ],
)
def test_a_decoded_datagram_gets_the_ladders_label(packet: Packet, label: str) -> None:
    # examples/demo.py labels what its observers see with this, as `utcp ladder` labels traces.
    assert datagram_from_packet(decode(encode(packet)), t=0.0, sent=True).label() == label


def test_a_thin_stream_bundle_is_not_drawn_as_a_retransmission(tmp_path: Path) -> None:
    """A bundle starts below the highest sequence sent (it carries the unacknowledged message
    before it again) but brings new bytes: it is a segment; a resend lies wholly below."""
    x, y = ISS, PEER_ISS
    b = TraceBuilder(peer="127.0.0.1:5000")
    b.state(0.0, "CLOSED", "SYN_SENT").sent(0.0, "SYN", x, 0)
    b.received(0.010, "SYN+ACK", y, x + 1)
    b.state(0.010, "SYN_SENT", "ESTABLISHED").sent(0.010, "ACK", x + 1, y + 1)
    b.sent(0.020, "ACK", x + 1, y + 1, length=8)
    b.sent(0.040, "ACK", x + 1, y + 1, length=16)  # the first message again, and the second
    b.sent(0.300, "ACK", x + 9, y + 1, length=8)  # the second alone, resent
    ts = time_sequence(load_trace(b.write(tmp_path / "bundle.jsonl")))
    assert [(a, c) for _, a, c in ts.segments] == [(1, 9), (1, 17)]
    assert [(a, c) for _, a, c in ts.retransmits] == [(9, 17)]
