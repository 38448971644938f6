"""Reading connection traces (docs/TRACE.md): load and check a JSON-lines trace, unwrap its
32-bit wire sequence numbers into byte offsets, and draw it as a text or SVG packet ladder or as
a tcptrace-style time-sequence graph.  Unknown event names are skipped, so newer traces still load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..packet import Packet
from ..seqnum import SEQ_MASK, seq_add, seq_diff
from ..trace import packet_fields

__all__ = [
    "Closed",
    "CwndChange",
    "Datagram",
    "Dropped",
    "Event",
    "Loss",
    "PmtuChange",
    "PmtudStateChange",
    "Retransmit",
    "RttSample",
    "SeqUnwrapper",
    "StateChange",
    "TimeSequence",
    "TimerFired",
    "Trace",
    "TraceHeader",
    "datagram_from_packet",
    "ladder_lines",
    "ladder_svg",
    "load_trace",
    "parse_trace",
    "plot_time_sequence",
    "time_sequence",
    "unwrap",
]

TRACE_VERSION = 1
LADDER_WIDTH = 46  # characters per side of the text ladder, as examples/demo.py draws it


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class TraceHeader:
    """The first line of a trace: who this end is and where its sequence numbers start."""

    cid: str
    role: str
    local: str | None
    peer: str | None
    reference_time: float
    iss: int
    mss: int
    congestion: str


@dataclass(frozen=True)
class Datagram:
    """``datagram_sent`` (``sent`` true) or ``datagram_received``, with its wire numbers."""

    t: float
    sent: bool
    flags: str
    seq: int
    ack: int
    wnd: int
    length: int
    sack: tuple[tuple[int, int], ...] = ()
    probe: int | None = None  # a PMTU probe's id; ``pad`` bytes of padding, no payload
    pad: int = 0
    probe_ack: int | None = None

    @property
    def flag_set(self) -> frozenset[str]:
        """The flag names, e.g. ``{"SYN", "ACK"}`` for ``SYN+ACK``."""
        return frozenset(self.flags.split("+"))

    @property
    def seq_space(self) -> int:
        """Sequence numbers the datagram occupies: its payload, plus one for a SYN or a FIN."""
        flags = self.flag_set
        return self.length + ("SYN" in flags) + ("FIN" in flags)

    def label(self) -> str:
        """The ladder's label, with the real wire numbers: ``ACK seq=1001 ack=5001 len=11``."""
        text = f"{self.flags} seq={self.seq} ack={self.ack}"
        if self.length:
            text += f" len={self.length}"
        if self.sack:
            text += " sack=" + ",".join(f"{left}-{right}" for left, right in self.sack)
        if self.probe is not None:
            text += f" probe={self.probe} pad={self.pad}"
        if self.probe_ack is not None:
            text += f" probe_ack={self.probe_ack}"
        return text


@dataclass(frozen=True)
class StateChange:
    """``state_changed``: an RFC 9293 state change of this end."""

    t: float
    old: str
    new: str


@dataclass(frozen=True)
class RttSample:
    """``rtt_sample``: one RTT measurement and the estimator after it (seconds)."""

    t: float
    rtt: float
    srtt: float
    rttvar: float
    rto: float


@dataclass(frozen=True)
class CwndChange:
    """``cwnd_changed``: the congestion window in bytes; ``ssthresh`` is None while unbounded."""

    t: float
    cwnd: int
    ssthresh: int | None
    in_flight: int


@dataclass(frozen=True)
class CcState:
    """``cc_state``: a model-based controller's new phase and its estimates then (bit/s and
    seconds; None while unknown)."""

    t: float
    phase: str
    pacing_rate: int | None
    bandwidth: int | None
    min_rtt: float | None


@dataclass(frozen=True)
class Loss:
    """``loss_detected``: a segment of ours declared lost, and by what."""

    t: float
    seq: int
    length: int
    by: str


@dataclass(frozen=True)
class Retransmit:
    """``retransmit``: a segment of ours sent again, and why."""

    t: float
    seq: int
    length: int
    by: str


@dataclass(frozen=True)
class TimerFired:
    """``timer_fired``: one of the connection's timers expired."""

    t: float
    timer: str


@dataclass(frozen=True)
class PmtudStateChange:
    """``pmtud_state``: a path MTU discovery state change (RFC 8899 section 5.2)."""

    t: float
    old: str
    new: str
    size: int


@dataclass(frozen=True)
class PmtuChange:
    """``pmtu_changed``: the datagram size in use changed, by a probe or a black hole."""

    t: float
    pmtu: int
    mss: int
    by: str


@dataclass(frozen=True)
class Dropped:
    """``datagram_dropped``: a datagram discarded before it reached the connection's logic."""

    t: float
    reason: str


@dataclass(frozen=True)
class Closed:
    """``connection_closed``: the end of the connection and the close reason's name."""

    t: float
    reason: str


Event = (
    Datagram
    | StateChange
    | RttSample
    | CwndChange
    | CcState
    | Loss
    | Retransmit
    | TimerFired
    | PmtudStateChange
    | PmtuChange
    | Dropped
    | Closed
)


@dataclass(frozen=True)
class Trace:
    """One loaded trace: the header, the events this reader knows, and how many it skipped."""

    header: TraceHeader
    events: tuple[Event, ...]
    skipped: int = 0
    source: str = "<trace>"

    @property
    def peer_iss(self) -> int | None:
        """The peer's initial sequence number: the seq of the first SYN or SYN+ACK received."""
        for e in self.events:
            if isinstance(e, Datagram) and not e.sent and "SYN" in e.flag_set:
                return e.seq
        return None


# ---------------------------------------------------------------------------------- loading


class _Fields:
    """Typed reads from one JSON object, each error naming the source and line."""

    def __init__(self, obj: dict[str, Any], where: str) -> None:
        self.obj = obj
        self.where = where

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.where}: {message}")

    def integer(self, key: str) -> int:
        value = self.obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{key!r} should be an integer, not {value!r}")
        return value

    def maybe_integer(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self.obj.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{key!r} should be a number, not {value!r}")
        return float(value)

    def maybe_number(self, key: str) -> float | None:
        return None if self.obj.get(key) is None else self.number(key)

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self.error(f"{key!r} should be a string, not {value!r}")
        return value

    def maybe_text(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.text(key)

    def sack(self) -> tuple[tuple[int, int], ...]:
        value = self.obj.get("sack")
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(block, list)
            and len(block) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in block)
            for block in value
        ):
            raise self.error(f"'sack' should be a list of [left, right] pairs, not {value!r}")
        return tuple((int(left), int(right)) for left, right in value)


def _datagram(f: _Fields, t: float, *, sent: bool) -> Datagram:
    return Datagram(
        t=t,
        sent=sent,
        flags=f.text("flags"),
        seq=f.integer("seq"),
        ack=f.integer("ack"),
        wnd=f.integer("wnd"),
        length=f.integer("len"),
        sack=f.sack(),
        probe=f.maybe_integer("probe"),
        pad=f.maybe_integer("pad") or 0,
        probe_ack=f.maybe_integer("probe_ack"),
    )


def datagram_from_packet(p: Packet, *, t: float, sent: bool, wnd: int = 0) -> Datagram:
    """A decoded datagram as a trace records it (``trace.packet_fields``), so that its
    ``label()`` is the one ``utcp ladder`` shows: PMTU probes and probe ACKs named."""
    return _datagram(_Fields(packet_fields(p, wnd), "<packet>"), t, sent=sent)


_EVENTS: dict[str, Callable[[_Fields, float], Event]] = {
    "datagram_sent": lambda f, t: _datagram(f, t, sent=True),
    "datagram_received": lambda f, t: _datagram(f, t, sent=False),
    "datagram_dropped": lambda f, t: Dropped(t, f.text("reason")),
    "state_changed": lambda f, t: StateChange(t, f.text("old"), f.text("new")),
    "rtt_sample": lambda f, t: RttSample(
        t, f.number("rtt"), f.number("srtt"), f.number("rttvar"), f.number("rto")
    ),
    "cwnd_changed": lambda f, t: CwndChange(
        t, f.integer("cwnd"), f.maybe_integer("ssthresh"), f.integer("in_flight")
    ),
    "cc_state": lambda f, t: CcState(
        t,
        f.text("phase"),
        f.maybe_integer("pacing_rate"),
        f.maybe_integer("bandwidth"),
        f.maybe_number("min_rtt"),
    ),
    "loss_detected": lambda f, t: Loss(t, f.integer("seq"), f.integer("len"), f.text("by")),
    "retransmit": lambda f, t: Retransmit(t, f.integer("seq"), f.integer("len"), f.text("by")),
    "timer_fired": lambda f, t: TimerFired(t, f.text("timer")),
    "pmtud_state": lambda f, t: PmtudStateChange(
        t, f.text("old"), f.text("new"), f.integer("size")
    ),
    "pmtu_changed": lambda f, t: PmtuChange(t, f.integer("pmtu"), f.integer("mss"), f.text("by")),
    "connection_closed": lambda f, t: Closed(t, f.text("reason")),
}


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, not {type(obj).__name__}")
    return obj


def _header(obj: dict[str, Any], where: str) -> TraceHeader:
    if obj.get("trace") != "utcp":
        raise ValueError(f'{where}: not a utcp trace header (no "trace": "utcp")')
    if obj.get("version") != TRACE_VERSION:
        raise ValueError(
            f"{where}: trace version {obj.get('version')!r} is not supported "
            f"(this reader knows version {TRACE_VERSION})"
        )
    f = _Fields(obj, where)
    return TraceHeader(
        cid=f.text("cid"),
        role=f.text("role"),
        local=f.maybe_text("local"),
        peer=f.maybe_text("peer"),
        reference_time=f.number("reference_time"),
        iss=f.integer("iss") & SEQ_MASK,
        mss=f.integer("mss"),
        congestion=f.text("congestion"),
    )


def parse_trace(lines: Iterable[str], source: str = "<trace>") -> Trace:
    """Parse trace lines; raise ValueError naming the line for bad JSON, header or fields.

    A last line without its newline that is not valid JSON is what a writer that crashed
    mid-line leaves: it is skipped, not an error.
    """
    header: TraceHeader | None = None
    events: list[Event] = []
    skipped = 0
    all_lines = list(lines)
    for number, line in enumerate(all_lines, start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        if (
            number == len(all_lines) > 1
            and all_lines[0].endswith("\n")  # lines as read from a file
            and not line.endswith("\n")
            and header is not None
        ):
            try:
                json.loads(line)
            except ValueError:
                skipped += 1
                continue
        obj = _json_object(line, where)
        if header is None:
            header = _header(obj, where)
            continue
        f = _Fields(obj, where)
        build = _EVENTS.get(f.text("ev"))
        if build is None:
            skipped += 1  # a newer writer's event: not an error for this reader
            continue
        events.append(build(f, f.number("t")))
    if header is None:
        raise ValueError(f"{source}: empty, no trace header")
    return Trace(header, tuple(events), skipped, source)


def load_trace(path: str | Path) -> Trace:
    """Load a trace file. OSError if it cannot be read, ValueError if it is not a valid trace."""
    with open(path, encoding="utf-8") as f:
        return parse_trace(f, str(path))


# ---------------------------------------------------------------------------------- sequence


def unwrap(wire: int, base: int) -> int:
    """The offset of ``wire`` from ``base`` in serial arithmetic (right within 2**31 of it)."""
    return seq_diff(wire, base)


class SeqUnwrapper:
    """Offsets from ``base`` for a stream of 32-bit wire numbers, growing past 2**32: each
    number is placed within 2**31 of the furthest offset seen so far, so long transfers
    unwrap as well as short ones."""

    def __init__(self, base: int) -> None:
        self.base = base & SEQ_MASK
        self._top = 0

    def __call__(self, wire: int) -> int:
        offset = self._top + seq_diff(wire, seq_add(self.base, self._top))
        self._top = max(self._top, offset)
        return offset


def _retransmitted(trace: Trace) -> set[int]:
    """Indexes of the sent datagrams that lie wholly below the highest sequence sent before
    them: resent data.  A thin stream's bundle also starts below it but carries new bytes
    beyond, so it is not one."""
    ours = SeqUnwrapper(trace.header.iss)
    snd_max = 0
    found: set[int] = set()
    for i, e in enumerate(trace.events):
        if isinstance(e, Datagram) and e.sent and e.seq_space:
            start = ours(e.seq)
            if start < snd_max and start + e.seq_space <= snd_max:
                found.add(i)
            snd_max = max(snd_max, start + e.seq_space)
    return found


@dataclass
class TimeSequence:
    """The series of a time-sequence graph, sequence numbers as byte offsets from our ``iss``
    (the first data byte is 1).  Tuples start with the time in seconds."""

    segments: list[tuple[float, int, int]] = field(default_factory=list)  # new data: start, end
    retransmits: list[tuple[float, int, int]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)  # cumulative ACK received
    windows: list[tuple[float, int]] = field(default_factory=list)  # ACK + receive window
    sacks: list[tuple[float, int, int]] = field(default_factory=list)
    losses: list[tuple[float, int, int]] = field(default_factory=list)
    cwnd: list[tuple[float, int]] = field(default_factory=list)
    ssthresh: list[tuple[float, int | None]] = field(default_factory=list)
    srtt_ms: list[tuple[float, float]] = field(default_factory=list)
    # (time, phase, estimated bandwidth-delay product in bytes or None) of a controller with
    # phases, where each phase began.
    phases: list[tuple[float, str, int | None]] = field(default_factory=list)
    # A model-based controller's (bbr's) estimates at each cc_state: the pacing rate and the
    # bandwidth in bit/s, the min RTT in ms (None while unknown), and their product in bytes.
    pacing_bps: list[tuple[float, int | None]] = field(default_factory=list)
    bandwidth_bps: list[tuple[float, int | None]] = field(default_factory=list)
    min_rtt_ms: list[tuple[float, float | None]] = field(default_factory=list)
    bdp: list[tuple[float, int]] = field(default_factory=list)
    end_t: float = 0.0


def time_sequence(trace: Trace) -> TimeSequence:
    """Our data as sent and acknowledged, unwrapped, plus the congestion and RTT series."""
    ours = SeqUnwrapper(trace.header.iss)
    retransmitted = _retransmitted(trace)
    ts = TimeSequence()
    for i, e in enumerate(trace.events):
        ts.end_t = max(ts.end_t, e.t)
        if isinstance(e, Datagram):
            if e.sent:
                if e.length:
                    start = ours(e.seq)
                    series = ts.retransmits if i in retransmitted else ts.segments
                    series.append((e.t, start, start + e.length))
            else:
                if "ACK" in e.flag_set:
                    ack = ours(e.ack)
                    ts.acks.append((e.t, ack))
                    ts.windows.append((e.t, ack + e.wnd))
                ts.sacks.extend((e.t, ours(left), ours(right)) for left, right in e.sack)
        elif isinstance(e, Loss):
            start = ours(e.seq)
            ts.losses.append((e.t, start, start + e.length))
        elif isinstance(e, CwndChange):
            ts.cwnd.append((e.t, e.cwnd))
            ts.ssthresh.append((e.t, e.ssthresh))
        elif isinstance(e, RttSample):
            ts.srtt_ms.append((e.t, e.srtt * 1e3))
        elif isinstance(e, CcState):
            bdp = None
            if e.bandwidth is not None and e.min_rtt is not None:
                bdp = int(e.bandwidth / 8 * e.min_rtt)
                ts.bdp.append((e.t, bdp))
            if not ts.phases or ts.phases[-1][1] != e.phase:
                ts.phases.append((e.t, e.phase, bdp))
            if e.pacing_rate is not None or e.bandwidth is not None or e.min_rtt is not None:
                ts.pacing_bps.append((e.t, e.pacing_rate))
                ts.bandwidth_bps.append((e.t, e.bandwidth))
                ts.min_rtt_ms.append((e.t, None if e.min_rtt is None else e.min_rtt * 1e3))
    return ts


# ---------------------------------------------------------------------------------- ladder


@dataclass(frozen=True)
class _Row:
    """One line of the ladder: an arrow (``sent``, ``received``, ``dropped``), a ``state`` of
    this end, or a ``note`` (loss, retransmission, timer)."""

    t: float
    kind: str
    text: str
    retransmission: bool = False


def _ladder_rows(trace: Trace) -> list[_Row]:
    retransmitted = _retransmitted(trace)
    rows: list[_Row] = []
    for i, e in enumerate(trace.events):
        if isinstance(e, Datagram):
            retx = i in retransmitted
            text = e.label() + (" (retx)" if retx else "")
            rows.append(_Row(e.t, "sent" if e.sent else "received", text, retx))
        elif isinstance(e, StateChange):
            rows.append(_Row(e.t, "state", f"[{e.old} -> {e.new}]"))
        elif isinstance(e, Closed):
            rows.append(_Row(e.t, "state", f"[closed: {e.reason}]"))
        elif isinstance(e, Dropped):
            rows.append(_Row(e.t, "dropped", f"dropped: {e.reason}"))
        elif isinstance(e, Loss):
            rows.append(_Row(e.t, "note", f"* lost seq={e.seq} len={e.length} ({e.by})"))
        elif isinstance(e, Retransmit):
            rows.append(_Row(e.t, "note", f"* retransmit seq={e.seq} len={e.length} ({e.by})"))
        elif isinstance(e, TimerFired):
            rows.append(_Row(e.t, "note", f"* {e.timer} timer fired"))
        elif isinstance(e, PmtudStateChange):
            rows.append(_Row(e.t, "state", f"[PMTUD {e.old} -> {e.new}, {e.size} bytes]"))
        elif isinstance(e, PmtuChange):
            rows.append(_Row(e.t, "note", f"* datagrams of {e.pmtu} bytes, mss {e.mss} ({e.by})"))
    return rows


def _ends(header: TraceHeader) -> tuple[str, str]:
    """Titles of the two sides: this end on the left, the peer on the right."""
    other = {"client": "server", "server": "client"}.get(header.role, "peer")
    left = f"{header.role} {header.local or ''}".rstrip()
    right = f"{other} {header.peer or ''}".rstrip()
    return left, right


def _limited(rows: list[_Row], limit: int | None) -> tuple[list[_Row], int]:
    if limit is None or limit >= len(rows):
        return rows, 0
    return rows[: max(limit, 0)], len(rows) - max(limit, 0)


def ladder_lines(
    trace: Trace, width: int = LADDER_WIDTH, *, limit: int | None = None, times: bool = False
) -> list[str]:
    """The packet ladder as text, this end on the left: ``width`` characters per side, at most
    ``limit`` rows, each prefixed with its time in seconds when ``times`` is set."""
    h = trace.header
    rows, hidden = _limited(_ladder_rows(trace), limit)
    pad = " " * 11 if times else ""
    left, right = _ends(h)
    lines = [
        f"{pad}utcp trace {h.cid}: {h.role}, iss {h.iss}, mss {h.mss}, {h.congestion}",
        f"{pad}{left:<{width}}{right:>{width}}",
        f"{pad}{'':-<{2 * width}}",
    ]
    for row in rows:
        body = f" {row.text} "
        if row.kind == "sent":
            line = f"{body:-<{2 * width - 1}}>"
        elif row.kind == "received":
            line = f"<{body:->{2 * width - 1}}"
        elif row.kind == "dropped":
            line = f"x{body:->{2 * width - 1}}"
        elif row.kind == "note":
            line = f"  {row.text}"
        else:
            line = row.text
        lines.append((f"{row.t:10.6f} {line}" if times else line).rstrip())
    if hidden:
        lines.append(f"{pad}... {hidden} more rows not shown")
    return lines


_SVG_ROW = 32  # px between ladder rows
_SVG_SLOPE = 12  # px an arrow falls between the two ends
_SVG_TOP = 64
_SVG_LEFT = 370  # x of this end's line
_SVG_RIGHT = 930  # x of the peer's line
_SVG_WIDTH = 1060
_SVG_COLOURS = {
    "sent": "#1f5fbf",
    "received": "#2a8a3a",
    "retx": "#c62828",
    "dropped": "#888888",
    "note": "#d35400",
    "state": "#222222",
}


def _svg_text(x: float, y: float, text: str, *, anchor: str, colour: str, extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}"{extra}>'
        f"{escape(text)}</text>"
    )


def _svg_arrow(x1: float, y1: float, x2: float, y2: float, style: str, dashed: bool) -> str:
    dash = ' stroke-dasharray="5,4"' if dashed else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{_SVG_COLOURS[style]}" stroke-width="1.4"{dash} marker-end="url(#head-{style})"/>'
    )


def ladder_svg(trace: Trace, path: str | Path, *, limit: int | None = None) -> None:
    """Draw the ladder as an SVG file.  Only one end is seen, so a sent arrow starts at its
    row and a received one ends at its row, each falling a fixed small slope across."""
    h = trace.header
    rows, hidden = _limited(_ladder_rows(trace), limit)
    bottom = _SVG_TOP + (len(rows) + 1) * _SVG_ROW + (_SVG_ROW if hidden else 0)
    left, right = _ends(h)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_SVG_WIDTH}" height="{bottom + 10}" '
        f'viewBox="0 0 {_SVG_WIDTH} {bottom + 10}" font-family="monospace" font-size="11">',
        f"<title>{escape(f'utcp trace {h.cid} ({left} / {right})')}</title>",
        "<defs>",
    ]
    for style, colour in _SVG_COLOURS.items():
        out.append(
            f'<marker id="head-{style}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<rect width="{_SVG_WIDTH}" height="{bottom + 10}" fill="white"/>')
    title = f"utcp trace {h.cid}: {h.role}, iss {h.iss}, mss {h.mss}, {h.congestion}"
    out.append(_svg_text(10, 18, title, anchor="start", colour="#222222", extra=' font-size="12"'))
    for x, name in ((_SVG_LEFT, left), (_SVG_RIGHT, right)):
        out.append(_svg_text(x, _SVG_TOP - 14, name, anchor="middle", colour="#222222"))
        out.append(
            f'<line x1="{x}" y1="{_SVG_TOP - 6}" x2="{x}" y2="{bottom}" stroke="#444444" '
            'stroke-width="2"/>'
        )
    out.append(_svg_text(10, _SVG_TOP - 14, "t (s)", anchor="start", colour="#666666"))
    mid = (_SVG_LEFT + _SVG_RIGHT) / 2
    for n, row in enumerate(rows):
        y = _SVG_TOP + (n + 1) * _SVG_ROW
        out.append(_svg_text(10, y + 4, f"{row.t:.6f}", anchor="start", colour="#666666"))
        if row.kind in ("sent", "received", "dropped"):
            style = "retx" if row.retransmission else row.kind
            if row.kind == "sent":
                y1, y2 = y, y + _SVG_SLOPE
                out.append(_svg_arrow(_SVG_LEFT, y1, _SVG_RIGHT, y2, style, False))
            else:
                y1, y2 = y - _SVG_SLOPE, y
                out.append(_svg_arrow(_SVG_RIGHT, y1, _SVG_LEFT, y2, style, row.kind == "dropped"))
            # above a sent arrow, below a received one: clear of the arrows of the next rows
            label_y = (y1 + y2) / 2 + (-7 if row.kind == "sent" else 15)
            out.append(
                _svg_text(mid, label_y, row.text, anchor="middle", colour=_SVG_COLOURS[style])
            )
        else:
            weight = ' font-weight="bold"' if row.kind == "state" else ""
            out.append(
                _svg_text(
                    _SVG_LEFT - 8,
                    y + 4,
                    row.text,
                    anchor="end",
                    colour=_SVG_COLOURS[row.kind],
                    extra=weight,
                )
            )
    if hidden:
        note = f"... {hidden} more rows not shown"
        out.append(_svg_text(mid, bottom - 4, note, anchor="middle", colour="#666666"))
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------- plot


def _column(points: Sequence[tuple[Any, ...]], index: int) -> list[Any]:
    return [p[index] for p in points]


def _steps(series: Sequence[tuple[float, Any]], end_t: float) -> tuple[list[float], list[Any]]:
    """A ``(time, value)`` series as the x and y of a step plot held to ``end_t``: from its
    first known value, an unknown one later (None) as NaN, which breaks the line, and the
    last value repeated at the end.  Empty when no value is known."""
    first = next((i for i, (_, v) in enumerate(series) if v is not None), None)
    if first is None:
        return [], []
    points = series[first:]
    values = [float("nan") if v is None else v for _, v in points]
    return [*_column(points, 0), end_t], [*values, values[-1]]


def image_formats() -> list[str]:
    """The file name extensions ``plot_time_sequence`` can write (matplotlib's, for Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return sorted(FigureCanvasAgg.get_supported_filetypes())


def plot_time_sequence(trace: Trace, path: str | Path) -> None:
    """Write a tcptrace-style time-sequence graph of our data as a PNG (matplotlib, Agg),
    with cwnd and srtt on the same time axis below it.  matplotlib is imported here so the
    rest of utcp never needs it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    ts = time_sequence(trace)
    h = trace.header
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws without a screen and leaves pyplot's global state alone
    model = any(b is not None for _, b in ts.bandwidth_bps) or any(
        r is not None for _, r in ts.pacing_bps
    )
    if model:
        # A model-based controller: its estimates get a panel of their own.
        seq_ax, cc_ax, model_ax = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1, 1])
    else:
        seq_ax, cc_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])

    if ts.segments:
        seq_ax.vlines(
            _column(ts.segments, 0),
            _column(ts.segments, 1),
            _column(ts.segments, 2),
            colors="tab:blue",
            linewidth=1.2,
            label="data sent",
        )
    if ts.retransmits:
        seq_ax.vlines(
            _column(ts.retransmits, 0),
            _column(ts.retransmits, 1),
            _column(ts.retransmits, 2),
            colors="tab:red",
            linewidth=2.0,
            label="retransmission",
        )
        seq_ax.plot(
            _column(ts.retransmits, 0),
            _column(ts.retransmits, 2),
            linestyle="none",
            marker="x",
            color="tab:red",
            markersize=6,
        )
    if ts.sacks:
        seq_ax.vlines(
            _column(ts.sacks, 0),
            _column(ts.sacks, 1),
            _column(ts.sacks, 2),
            colors="tab:purple",
            linewidth=4,
            alpha=0.35,
            label="SACKed",
        )
    if ts.losses:
        seq_ax.plot(
            _column(ts.losses, 0),
            _column(ts.losses, 1),
            linestyle="none",
            marker="v",
            color="tab:orange",
            markersize=7,
            label="loss detected",
        )
    data_top = max(
        [end for _, _, end in ts.segments + ts.retransmits] + [a for _, a in ts.acks] + [1]
    )
    if ts.acks:
        times, acks = _steps(ts.acks, ts.end_t)
        seq_ax.step(times, acks, where="post", color="tab:green", label="cumulative ACK")
        windows = [*_column(ts.windows, 1), ts.windows[-1][1]]
        clipped = max(windows) > data_top * 1.5
        label = "ACK + receive window" + (" (clipped)" if clipped else "")
        seq_ax.step(times, windows, where="post", color="tab:olive", linestyle="--", label=label)
        if clipped:
            seq_ax.set_ylim(bottom=-0.02 * data_top, top=data_top * 1.15)
    seq_ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    seq_ax.set_ylabel("relative sequence number")
    seq_ax.grid(True, alpha=0.3)
    if not seq_ax.get_legend_handles_labels()[0]:
        seq_ax.plot([], [], linestyle="none", label="no data or ACKs")
    seq_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    seq_ax.set_title(
        f"utcp {h.cid} {h.role} {h.local or '?'} -> {h.peer or '?'} "
        f"({h.congestion}, mss {h.mss} B): time-sequence of data sent"
    )

    handles: list[Any] = []
    if ts.cwnd:
        times, cwnd = _steps(ts.cwnd, ts.end_t)
        handles += cc_ax.step(times, cwnd, where="post", color="tab:blue", label="cwnd")
        thresholds = [float("nan") if s is None else s for _, s in ts.ssthresh]
        if any(s is not None for _, s in ts.ssthresh):
            handles += cc_ax.step(
                times,
                [*thresholds, thresholds[-1]],
                where="post",
                color="tab:gray",
                linestyle="--",
                label="ssthresh",
            )
    if ts.phases:
        # A model-based controller: its phases as labelled spans, and its estimate of the
        # bandwidth-delay product beside cwnd.
        shades = {"startup": "tab:orange", "drain": "tab:purple", "probe_rtt": "tab:red"}
        ends = [*_column(ts.phases, 0)[1:], ts.end_t]
        for (t0, phase, _), t1 in zip(ts.phases, ends, strict=True):
            if phase in shades:
                cc_ax.axvspan(t0, t1, color=shades[phase], alpha=0.12, linewidth=0)
            cc_ax.text(
                t0,
                1.0,
                f" {phase}",
                transform=cc_ax.get_xaxis_transform(),
                fontsize="x-small",
                va="top",
                color="dimgray",
            )
        if ts.bdp:
            handles += cc_ax.step(
                *_steps(ts.bdp, ts.end_t),
                where="post",
                color="tab:green",
                linestyle=":",
                label="estimated BDP",
            )
    cc_ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    cc_ax.set_ylabel("window")
    cc_ax.set_ylim(bottom=0)
    cc_ax.set_xlim(left=0.0, right=max(ts.end_t * 1.01, 1e-3))
    cc_ax.grid(True, alpha=0.3)
    if ts.srtt_ms:
        rtt_ax = cc_ax.twinx()
        handles += rtt_ax.plot(
            _column(ts.srtt_ms, 0),
            _column(ts.srtt_ms, 1),
            color="tab:red",
            marker=".",
            markersize=3,
            linewidth=1,
            label="srtt",
        )
        rtt_ax.set_ylabel("srtt (ms)")
        rtt_ax.set_ylim(bottom=0, top=max(_column(ts.srtt_ms, 1)) * 1.15 or 1.0)
    if not handles:
        handles.append(Line2D([], [], linestyle="none", label="no cwnd or rtt events"))
    cc_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
    if model:
        _plot_model(model_ax, ts)
        model_ax.set_xlabel("time (s)")
    else:
        cc_ax.set_xlabel("time (s)")
    fig.savefig(path, dpi=110)


def _plot_model(ax: Any, ts: TimeSequence) -> None:
    """The model's estimates under the window: pacing rate and bandwidth (bit/s) as steps,
    the min RTT (ms) on a second axis.  A series is drawn from its first known value; an
    unknown one later (a path change starts the model over) breaks the line."""
    from matplotlib.ticker import EngFormatter

    handles: list[Any] = []
    for series, color, style, label in (
        (ts.pacing_bps, "tab:brown", "-", "pacing rate"),
        (ts.bandwidth_bps, "tab:cyan", "--", "bandwidth estimate"),
    ):
        times, values = _steps(series, ts.end_t)
        if times:
            handles += ax.step(
                times, values, where="post", color=color, linestyle=style, label=label
            )
    ax.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    ax.set_ylabel("rate")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    times, values = _steps(ts.min_rtt_ms, ts.end_t)
    if times:
        rtt_ax = ax.twinx()
        handles += rtt_ax.step(
            times, values, where="post", color="tab:pink", linestyle=":", label="min RTT estimate"
        )
        rtt_ax.set_ylabel("min RTT (ms)")
        known_ms = [v for v in values if not math.isnan(v)]
        rtt_ax.set_ylim(bottom=0, top=max(known_ms) * 1.3 or 1.0)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
