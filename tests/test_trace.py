"""Connection traces and the extended statistics: the exact events of a known scenario, trace
files read back by ``utcp.tools.traceview``, counters checked against the fake network's own counts,
tracing off by default, and the time split between receiver, congestion and application limits.

The client ``a`` starts at ISN 1000 and the server ``b`` at ISN 5000 unless a test says
otherwise, so every wire number below is known in advance.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Link, Network, conns, pair
from utcp import Config, Connection, ConnectionState, decode, encode
from utcp.packet import Packet
from utcp.seqnum import SEQ_MASK
from utcp.tools.traceview import ladder_lines, load_trace
from utcp.trace import (
    JsonlTracer,
    ListTracer,
    TraceEvent,
    flags_text,
    trace_path,
    tracer_for,
)

S = ConnectionState
ISN_A = 1000
ISN_B = 5000
MSS = Config().mss_bytes  # 1428
WND = Config().recv_window_initial_bytes  # 256 KiB: 1024 << 8 (the scale of 8 MiB)
SYN_WND = 65535  # SYN windows are never scaled
SEGMENTS = 5
FIXED = Config(pmtud=False)  # exact events and sizes: no PMTU probes (see _connected_pair)
# The known scenario's exact events include NewReno's halving and no cubic cc_state phases.
FIXED_NEWRENO = FIXED.replace(congestion_control="newreno")


def _connected_pair(
    tracer_a: ListTracer | None = None,
    tracer_b: ListTracer | None = None,
    *,
    a_to_b: Link | None = None,
    b_to_a: Link | None = None,
    config_a: Config | None = None,
    config_b: Config | None = None,
    isn_a: int = ISN_A,
    isn_b: int = ISN_B,
) -> Network:
    """A client with ``tracer_a`` from its construction on, connected to a listening server.

    The tests check exact event sequences and segment sizes, so path MTU discovery is off
    unless ``config_a`` turns it on (its probes would add events; tests/test_pmtud.py).
    """
    a = Connection(config_a or FIXED, local_cid=0xA, isn=isn_a, tracer=tracer_a)
    b = Connection(config_b or Config(), local_cid=0xB, isn=isn_b, tracer=tracer_b)
    b.listen(now=0.0)
    net = Network(a, b, a_to_b=a_to_b, b_to_a=b_to_a)
    a.connect(now=net.now)
    net.run(until=lambda: a.state is S.ESTABLISHED and b.state is S.ESTABLISHED)
    return net


def _transfer_and_close(net: Network, data: bytes) -> None:
    """``a`` sends ``data`` and closes; ``b`` closes after the EOF; run until all is quiet."""
    a, b = conns(net)
    a.send(data)
    net.run(until=lambda: len(net.b.received) == len(data))
    a.close()
    net.run(until=lambda: net.b.eof)
    b.close()
    net.run()
    assert bytes(net.b.received) == data
    assert a.state is S.CLOSED and b.state is S.CLOSED


def _drop_data_segment(n: int) -> Callable[[int, Packet], bool]:
    """A ``Link.drop`` predicate losing the n-th data segment (1-based) and nothing else."""
    seen = [0]

    def drop(index: int, packet: Packet) -> bool:
        if packet.payload:
            seen[0] += 1
            return seen[0] == n
        return False

    return drop


def _key(e: TraceEvent) -> tuple[Any, ...]:
    """An event as (name, its identifying fields), for exact sequence assertions."""
    f = e.fields
    if e.name in ("datagram_sent", "datagram_received"):
        return (e.name, f["flags"], f["seq"], f["ack"], f["len"])
    if e.name == "state_changed":
        return (e.name, f["old"], f["new"])
    if e.name in ("loss_detected", "retransmit"):
        return (e.name, f["seq"], f["len"], f["by"])
    if e.name == "timer_fired":
        return (e.name, f["timer"])
    if e.name == "connection_closed":
        return (e.name, f["reason"])
    return (e.name,)


def _length(e: TraceEvent) -> int:
    """The ``len`` field of an event."""
    n = e.fields["len"]
    assert isinstance(n, int)
    return n


def _seq(k: int) -> int:
    """Wire seq of the client's k-th data segment (0-based)."""
    return ISN_A + 1 + k * MSS


# ------------------------------------------------------------------------ a known scenario


@pytest.mark.parametrize(("lost", "by"), [(2, "rack"), (SEGMENTS, "tlp")])
def test_trace_of_handshake_loss_and_close(lost: int, by: str) -> None:
    """One data segment lost: the trace shows the handshake exactly, then loss_detected,
    retransmit and the datagram that repairs it, in that order, then the close."""
    tracer = ListTracer()
    net = _connected_pair(
        tracer, a_to_b=Link(drop=_drop_data_segment(lost)), config_a=FIXED_NEWRENO
    )
    _transfer_and_close(net, random.Random(lost).randbytes(SEGMENTS * MSS))
    a, b = conns(net)
    events = tracer.events
    keys = [_key(e) for e in events]

    assert keys[:7] == [
        ("state_changed", "CLOSED", "SYN_SENT"),
        ("datagram_sent", "SYN", ISN_A, 0, 0),
        ("datagram_received", "SYN+ACK", ISN_B, ISN_A + 1, 0),
        ("rtt_sample",),
        ("state_changed", "SYN_SENT", "ESTABLISHED"),
        ("cwnd_changed",),
        ("datagram_sent", "ACK", ISN_A + 1, ISN_B + 1, 0),
    ]
    assert [e.now for e in events[:7]] == [0.0, 0.0, 0.02, 0.02, 0.02, 0.02, 0.02]
    assert events[1].fields["wnd"] == SYN_WND and events[2].fields["wnd"] == SYN_WND
    assert events[6].fields["wnd"] == WND
    assert events[3].fields == {"rtt": 0.02, "srtt": 0.02, "rttvar": 0.01, "rto": 0.22}
    assert events[5].fields == {"cwnd": 10 * MSS, "ssthresh": None, "in_flight": 0}

    # Every data segment goes out once, in order; the lost one once more after its loss.
    data_sent = [e.fields["seq"] for e in events if e.name == "datagram_sent" and e.fields["len"]]
    lost_seq = _seq(lost - 1)
    assert data_sent == [_seq(k) for k in range(SEGMENTS)] + [lost_seq]
    loss = keys.index(("loss_detected", lost_seq, MSS, by))
    retx = keys.index(("retransmit", lost_seq, MSS, by))
    resent = len(keys) - 1 - keys[::-1].index(("datagram_sent", "ACK", lost_seq, ISN_B + 1, MSS))
    assert loss < retx < resent
    assert keys[retx + 1] == keys[resent], "the retransmission is the very next datagram"
    assert sum(k[0] == "loss_detected" for k in keys) == 1
    assert sum(k[0] == "retransmit" for k in keys) == 1
    if by == "rack":
        # Fast recovery halves the flight the loss was seen in (all five segments: the ACK
        # that shows the loss also acknowledges the two before it): reported once, between
        # detection and repair.
        cwnd = [e for e in events[loss:retx] if e.name == "cwnd_changed"]
        assert [e.fields["ssthresh"] for e in cwnd] == [SEGMENTS * MSS // 2]
    else:
        assert keys[loss - 1] == ("timer_fired", "tlp")

    # The active close: TIME_WAIT reports the close; 2 MSL later the connection is CLOSED.
    fin_seq = _seq(SEGMENTS)
    assert ("datagram_sent", "FIN+ACK", fin_seq, ISN_B + 1, 0) in keys
    tail = [k for k in keys if k != ("cwnd_changed",)]
    assert tail[-7:] == [
        ("state_changed", "FIN_WAIT_1", "FIN_WAIT_2"),
        ("datagram_received", "FIN+ACK", ISN_B + 1, fin_seq + 1, 0),
        ("state_changed", "FIN_WAIT_2", "TIME_WAIT"),
        ("connection_closed", "closed"),
        ("datagram_sent", "ACK", fin_seq + 1, ISN_B + 2, 0),
        ("timer_fired", "time_wait"),
        ("state_changed", "TIME_WAIT", "CLOSED"),
    ]
    assert events[-1].now - events[-4].now == pytest.approx(2 * Config().msl_s)
    assert all(x.now <= y.now for x, y in itertools.pairwise(events)), "time went backwards"

    # The trace agrees with the counters and with what went on the wire.
    st = a.stats
    assert st.retransmissions == 1
    assert (st.tail_loss_probes, st.fast_retransmits) == ((1, 0) if by == "tlp" else (0, 1))
    # No D-SACK followed the probe, and the ACK of the FIN went beyond it: the probe repaired
    # a loss, so the controller heard of one (RFC 8985 section 7.4).
    assert st.tail_loss_repairs == (1 if by == "tlp" else 0)
    assert sum(k[0] == "datagram_sent" for k in keys) == net.links["a"].sent == st.segments_sent
    assert sum(k[0] == "datagram_received" for k in keys) == st.segments_received
    assert b.stats.out_of_order_segments_received == SEGMENTS - lost
    assert b.stats.duplicate_segments_received == 0


def test_timeouts_trace_the_syn_and_the_data_they_resend() -> None:
    """A lost SYN and, without tail loss probes, a lost last segment are both found by the
    retransmission timer: timer_fired, loss_detected, retransmit, datagram_sent; the timeout
    drops the congestion window to one segment."""
    first_syn = [True]
    drop_last = _drop_data_segment(SEGMENTS)

    def drop(index: int, packet: Packet) -> bool:
        if packet.flags & 0x02 and first_syn[0]:
            first_syn[0] = False
            return True
        return drop_last(index, packet)

    tracer = ListTracer()
    config = Config(tail_loss_probe=False, rto_initial_s=1.0, pmtud=False)
    net = _connected_pair(tracer, a_to_b=Link(drop=drop), config_a=config)
    _transfer_and_close(net, bytes(SEGMENTS * MSS))
    # Not the controller's state: BBR's first pacing rate may be reported among these.
    events = [e for e in tracer.events if e.name != "cc_state"]
    keys = [_key(e) for e in events]
    assert keys[:6] == [
        ("state_changed", "CLOSED", "SYN_SENT"),
        ("datagram_sent", "SYN", ISN_A, 0, 0),
        ("timer_fired", "rto"),
        ("loss_detected", ISN_A, 0, "rto"),
        ("retransmit", ISN_A, 0, "rto"),
        ("datagram_sent", "SYN", ISN_A, 0, 0),
    ]
    assert events[2].now == 1.0
    last = _seq(SEGMENTS - 1)
    i = keys.index(("loss_detected", last, MSS, "rto"))
    assert keys[i - 1] == ("timer_fired", "rto")
    assert keys[i + 1 : i + 3] == [("cwnd_changed",), ("retransmit", last, MSS, "rto")]
    assert events[i + 1].fields["cwnd"] == MSS
    assert keys[i + 3] == ("datagram_sent", "ACK", last, ISN_B + 1, MSS)


def test_abort_traces_the_reset_and_the_close_reason() -> None:
    """abort(): CLOSED and connection_closed ``aborted`` at once, then the RST goes out; the
    peer's trace shows it received and the close reason ``reset``."""
    tracer_a, tracer_b = ListTracer(), ListTracer()
    net = _connected_pair(tracer_a, tracer_b)
    a, _ = conns(net)
    a.abort()
    net.run()
    assert [_key(e) for e in tracer_a.events[-3:]] == [
        ("state_changed", "ESTABLISHED", "CLOSED"),
        ("connection_closed", "aborted"),
        ("datagram_sent", "RST+ACK", ISN_A + 1, ISN_B + 1, 0),
    ]
    assert [_key(e) for e in tracer_b.events[-3:]] == [
        ("datagram_received", "RST+ACK", ISN_A + 1, ISN_B + 1, 0),
        ("state_changed", "ESTABLISHED", "CLOSED"),
        ("connection_closed", "reset"),
    ]


def test_server_trace_starts_in_listen_and_sacks_are_in_the_peers_space() -> None:
    """The passive end's trace: LISTEN, the SYN, its SYN+ACK; its ACKs carry SACK blocks in
    the client's sequence space while the hole is open."""
    tracer = ListTracer()
    net = _connected_pair(tracer_b=tracer, a_to_b=Link(drop=_drop_data_segment(2)))
    _transfer_and_close(net, bytes(SEGMENTS * MSS))
    keys = [_key(e) for e in tracer.events]
    assert keys[:4] == [
        ("state_changed", "CLOSED", "LISTEN"),
        ("datagram_received", "SYN", ISN_A, 0, 0),
        ("state_changed", "LISTEN", "SYN_RECEIVED"),
        ("datagram_sent", "SYN+ACK", ISN_B, ISN_A + 1, 0),
    ]
    sacks = [e.fields["sack"] for e in tracer.events if "sack" in e.fields]
    assert sacks and sacks[0] == [[_seq(2), _seq(SEGMENTS)]]
    assert all(e.name == "datagram_sent" for e in tracer.events if "sack" in e.fields)
    closed = tracer.named("connection_closed")
    assert [e.fields for e in closed] == [{"reason": "closed"}]
    assert [_key(e) for e in tracer.events[-2:]] == [
        ("state_changed", "LAST_ACK", "CLOSED"),
        ("connection_closed", "closed"),
    ]


def test_drops_name_the_datagram_when_it_decoded() -> None:
    """A datagram failing decoding has only a reason; a decoded one dropped later also has
    its flags, seq and len, after its datagram_received."""
    tracer = ListTracer()
    net = _connected_pair(tracer)
    a, _ = conns(net)
    good = Packet(0x10, 0xB, 0xA, ISN_B + 1, ISN_A + 1, 100, b"")
    raw = bytearray(encode(good))
    raw[-1] ^= 1
    a.receive_datagram(bytes(raw), now=net.now)
    stray = Packet(0x10, 0xB, 0xA, ISN_B + 900_000_000, ISN_A + 1, 100, b"xyz")
    a.receive_packet(stray, now=net.now)
    tail = tracer.events[-3:]
    assert [e.name for e in tail] == ["datagram_dropped", "datagram_received", "datagram_dropped"]
    assert tail[0].fields == {"reason": "bad checksum"}
    assert tail[2].fields == {
        "reason": "out of window",
        "flags": "ACK",
        "seq": (ISN_B + 900_000_000) & SEQ_MASK,
        "len": 3,
    }
    assert a.stats.drops == {"bad checksum": 1, "out of window": 1}


def test_flags_are_spelled_as_the_ladder_shows_them() -> None:
    """SYN, FIN, RST, ACK in that order, joined by '+'."""
    assert flags_text(0x02) == "SYN"
    assert flags_text(0x12) == "SYN+ACK"
    assert flags_text(0x11) == "FIN+ACK"
    assert flags_text(0x04) == "RST"
    assert flags_text(0x14) == "RST+ACK"
    assert flags_text(0x10) == "ACK"


# ------------------------------------------------------------------------ trace files


def test_jsonl_trace_loads_and_draws_the_real_handshake(tmp_path: Path) -> None:
    """A file written through ``tracer_for`` loads with ``utcp.tools.traceview`` and its ladder
    shows the handshake's wire numbers, here across the 2**32 wrap of the client's ISN."""
    isn_a, isn_b = SEQ_MASK, 123_456_789
    net = pair(isn_a=isn_a, isn_b=isn_b, connect=False)
    a, b = conns(net)
    unix_time = 1_795_999_162.512
    tracer = tracer_for(
        Config(trace_dir=str(tmp_path / "traces")),
        cid=a.local_cid,
        role="client",
        local=("127.0.0.1", 40123),
        peer=("::1", 5000, 0, 0),
        iss=a.iss,
        mss=a.mss,
        congestion="newreno",
        unix_time=unix_time,
        now=net.now,
        env={},
    )
    assert isinstance(tracer, JsonlTracer)
    assert tracer.path == tmp_path / "traces" / "utcp-1795999162-0000000a-client.jsonl"
    assert tracer.path == trace_path(tmp_path / "traces", 0xA, "client", unix_time)
    a.set_tracer(tracer, now=net.now)
    a.connect(now=net.now)
    net.run(until=lambda: b.state is S.ESTABLISHED)
    _transfer_and_close(net, b"hello, trace")
    tracer.close()
    tracer.close()  # closing twice is harmless

    trace = load_trace(tracer.path)
    assert trace.skipped == 0
    h = trace.header
    assert (h.cid, h.role, h.local, h.peer) == (
        "0000000a",
        "client",
        "127.0.0.1:40123",
        "[::1]:5000",
    )
    assert (h.reference_time, h.iss, h.mss, h.congestion) == (unix_time, isn_a, MSS, "newreno")
    assert trace.peer_iss == isn_b
    lines = ladder_lines(trace)
    x, y = isn_a, isn_b
    arrows = [line for line in lines if line.startswith((" ", "<"))]
    assert arrows[0].startswith(f" SYN seq={x} ack=0 -")
    assert arrows[1].endswith(f" SYN+ACK seq={y} ack={(x + 1) & SEQ_MASK}")
    assert arrows[2].startswith(f" ACK seq={(x + 1) & SEQ_MASK} ack={y + 1} -")
    assert any(line.startswith(f" ACK seq=0 ack={y + 1} len=12 -") for line in lines)
    assert any(line.startswith(f" FIN+ACK seq=12 ack={y + 1} -") for line in lines)

    rows = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    times = [r["t"] for r in rows[1:]]
    assert times == sorted(times) and times[0] == 0.0
    assert times[-1] == pytest.approx(net.now)


def test_jsonl_tracer_buffers_flushes_and_never_goes_back_in_time(tmp_path: Path) -> None:
    """Lines reach the file every ``flush_every`` events and at connection_closed; ``t`` is
    relative to ``t0`` and clamped so it never decreases; events after close are ignored."""
    path = tmp_path / "t.jsonl"
    tracer = JsonlTracer(path, {"cid": "00000001", "role": "server"}, t0=100.0, flush_every=3)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    assert lines() == [{"trace": "utcp", "version": 1, "cid": "00000001", "role": "server"}]
    tracer.event(100.5, "timer_fired", {"timer": "rto"})
    tracer.event(100.25, "timer_fired", {"timer": "tlp"})  # earlier: clamped
    assert len(lines()) == 1, "flushed before flush_every events"
    tracer.event(101.0000004, "timer_fired", {"timer": "idle"})
    assert [(r["t"], r["ev"], r["timer"]) for r in lines()[1:]] == [
        (0.5, "timer_fired", "rto"),
        (0.5, "timer_fired", "tlp"),
        (1.0, "timer_fired", "idle"),
    ]
    tracer.event(102.0, "connection_closed", {"reason": "reset"})
    assert lines()[-1] == {"t": 2.0, "ev": "connection_closed", "reason": "reset"}
    tracer.event(103.0, "timer_fired", {"timer": "keepalive"})
    tracer.close()
    assert tracer.closed
    tracer.event(104.0, "timer_fired", {"timer": "persist"})
    assert [r["ev"] for r in lines()[1:]] == ["timer_fired"] * 3 + [
        "connection_closed",
        "timer_fired",
    ]

    first_is_zero = JsonlTracer(tmp_path / "u.jsonl", {})
    first_is_zero.event(5.0, "timer_fired", {"timer": "rto"})
    first_is_zero.event(5.5, "timer_fired", {"timer": "rto"})
    first_is_zero.close()
    rows = [json.loads(line) for line in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert [r["t"] for r in rows[1:]] == [0.0, 0.5]


# ------------------------------------------------------------------------ counters


class CountingLink(Link):
    """A ``Link`` that also counts the data segments it duplicated and records every
    arrival (in delivery order for a link without jitter or reordering)."""

    data_duplicated: int = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[bytes] = []

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        out = super().transmit(data, now)
        if len(out) == 2 and decode(data).payload:
            self.data_duplicated += 1
        self.arrivals.extend(payload for _, payload in out)
        return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duplicates_received_are_link_copies_plus_retransmissions(seed: int) -> None:
    """With no loss towards the receiver, every copy the link makes and every retransmission
    arrives after the original: each is one duplicate."""
    a_to_b = CountingLink(dup=0.1, rng=random.Random(seed))
    b_to_a = Link(loss=0.2, dup=0.1, rng=random.Random(seed + 1000))
    tracer = ListTracer()
    net = _connected_pair(tracer, a_to_b=a_to_b, b_to_a=b_to_a)
    _transfer_and_close(net, random.Random(seed).randbytes(300_000))
    a, b = conns(net)
    data_retransmissions = sum(1 for e in tracer.named("retransmit") if _length(e))
    # RACK-TLP resends nothing for ACKs lost or duplicated (tests/test_rack.py), so the
    # retransmissions may be none; the link's copies are what is counted here.
    assert a_to_b.data_duplicated > 0, f"seed {seed}: weak scenario"
    assert b.stats.duplicate_segments_received == a_to_b.data_duplicated + data_retransmissions
    assert b.stats.out_of_order_segments_received == 0
    assert a.stats.bytes_retransmitted == sum(_length(e) for e in tracer.named("retransmit"))


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_out_of_order_and_duplicates_match_the_arrivals(seed: int) -> None:
    """Over a lossy, duplicating link, the receiver's counters equal what a model of its byte
    stream finds in the link's own record of the arrivals."""
    a_to_b = CountingLink(loss=0.05, dup=0.05, rng=random.Random(seed))
    b_to_a = Link(loss=0.05, rng=random.Random(seed + 1000))
    net = _connected_pair(a_to_b=a_to_b, b_to_a=b_to_a)
    _transfer_and_close(net, random.Random(seed).randbytes(400_000))
    _, b = conns(net)
    duplicates = out_of_order = 0
    have: set[int] = set()  # data byte offsets received
    next_byte = 0
    for raw in a_to_b.arrivals:
        p = decode(raw)
        if not p.payload:
            continue
        start = (p.seq - ISN_A - 1) & SEQ_MASK
        new = set(range(start, start + len(p.payload))) - have
        if not new:
            duplicates += 1
        elif start > next_byte:
            out_of_order += 1
        have |= new
        while next_byte in have:
            next_byte += 1
    assert out_of_order > 0 and duplicates > 0, f"seed {seed}: weak scenario"
    assert b.stats.duplicate_segments_received == duplicates, f"seed {seed}"
    assert b.stats.out_of_order_segments_received == out_of_order, f"seed {seed}"


# Seeds whose links corrupt at least two datagrams each way with either controller (8 had
# corrupted one ACK with newreno, none with cubic: a weak scenario).
@pytest.mark.parametrize("seed", [7, 11])
def test_corrupted_datagrams_are_the_bad_checksum_drops(seed: int) -> None:
    """Every datagram a link corrupts is one ``bad checksum`` drop at the other end, and every
    datagram that arrives is either that or a ``datagram_received`` in its trace."""
    rng = random.Random(seed)
    links = {
        "a": Link(loss=0.03, dup=0.03, corrupt=0.05, rng=random.Random(rng.random())),
        "b": Link(loss=0.03, dup=0.03, corrupt=0.05, rng=random.Random(rng.random())),
    }
    tracers = {"a": ListTracer(), "b": ListTracer()}
    net = _connected_pair(tracers["a"], tracers["b"], a_to_b=links["a"], b_to_a=links["b"])
    _transfer_and_close(net, rng.randbytes(200_000))
    for src, dst in (("a", "b"), ("b", "a")):
        link, conn = links[src], net.sides[dst].conn
        assert conn is not None
        assert link.corrupted > 0, f"seed {seed}: weak scenario"
        assert conn.stats.drops.get("bad checksum", 0) == link.corrupted, f"seed {seed}"
        arrivals = link.sent - link.dropped + link.duplicated
        received = len(tracers[dst].named("datagram_received"))
        assert received + link.corrupted == arrivals, f"seed {seed}"
        assert len(tracers[src].named("datagram_sent")) == link.sent, f"seed {seed}"


# ------------------------------------------------------------------------ tracing off


def _full_exchange() -> Network:
    net = pair()
    _, b = conns(net)
    net.run(until=lambda: b.state is S.ESTABLISHED)
    _transfer_and_close(net, b"x" * 10_000)
    return net


def test_no_tracer_and_no_file_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without trace_dir and UTCP_TRACE nothing is traced and no file appears anywhere."""
    monkeypatch.delenv("UTCP_TRACE", raising=False)
    monkeypatch.chdir(tmp_path)
    net = _full_exchange()
    a, b = conns(net)
    assert a.tracer is None and b.tracer is None
    assert Connection().tracer is None
    kwargs: dict[str, Any] = {
        "cid": 1,
        "role": "client",
        "local": None,
        "peer": None,
        "iss": 0,
        "mss": MSS,
        "congestion": "newreno",
        "unix_time": 0.0,
    }
    assert tracer_for(Config(), **kwargs) is None
    assert tracer_for(Config(), env={"UTCP_TRACE": ""}, **kwargs) is None
    assert list(tmp_path.iterdir()) == []


def test_environment_and_config_choose_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTCP_TRACE traces connections whose config names no directory; trace_dir wins over it;
    a directory that cannot be made leaves the connection untraced instead of failing it."""
    env_dir, cfg_dir = tmp_path / "env", tmp_path / "cfg"
    monkeypatch.setenv("UTCP_TRACE", str(env_dir))
    kwargs: dict[str, Any] = {
        "cid": 0xDEADBEEF,
        "role": "server",
        "local": "127.0.0.1:5000",
        "peer": "127.0.0.1:40000",
        "iss": 7,
        "mss": MSS,
        "congestion": "newreno",
        "unix_time": 1_800_000_000.9,
    }
    from_env = tracer_for(Config(), **kwargs)
    from_cfg = tracer_for(Config(trace_dir=str(cfg_dir)), **kwargs)
    assert from_env is not None and from_cfg is not None
    from_env.close()
    from_cfg.close()
    name = "utcp-1800000000-deadbeef-server.jsonl"
    assert [p.name for p in env_dir.iterdir()] == [name]
    assert [p.name for p in cfg_dir.iterdir()] == [name]
    header = json.loads((cfg_dir / name).read_text().splitlines()[0])
    assert header == {
        "trace": "utcp",
        "version": 1,
        "cid": "deadbeef",
        "role": "server",
        "local": "127.0.0.1:5000",
        "peer": "127.0.0.1:40000",
        "reference_time": 1_800_000_000.9,
        "iss": 7,
        "mss": MSS,
        "congestion": "newreno",
    }
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert tracer_for(Config(trace_dir=str(blocked / "sub")), **kwargs) is None
    with pytest.raises(ValueError, match="role"):
        tracer_for(Config(), **{**kwargs, "role": "peer"})


@pytest.mark.parametrize(
    ("trace_dir", "ok"),
    [(None, True), ("traces", True), ("/tmp/utcp traces", True), ("", False), ("a\0b", False)],
)
def test_config_trace_dir_is_validated(trace_dir: str | None, ok: bool) -> None:
    """trace_dir is None or a usable path; anything else is rejected by name."""
    config = Config(trace_dir=trace_dir)
    if ok:
        assert config.validate() is config
    else:
        with pytest.raises(ValueError, match="trace_dir"):
            config.validate()
        with pytest.raises(ValueError, match="trace_dir"):
            Connection(config)


# ------------------------------------------------------------------------ where time goes


def test_application_limited_time_runs_from_the_last_send() -> None:
    """One small write, then nothing: from the moment it is sent the application limits."""
    net = _connected_pair()
    a, _ = conns(net)
    assert a.stats.time_limited_by_application_s == 0.0, "nothing sent yet: not limited"
    sent_at = net.now
    a.send(b"ping")
    net.run_for(3.0)
    a.datagrams_to_send(now=net.now)
    st = a.stats
    assert st.time_limited_by_application_s == pytest.approx(net.now - sent_at)
    assert st.time_limited_by_receiver_s == 0.0
    assert st.time_limited_by_congestion_s == 0.0


def test_receiver_limited_time_while_the_peer_does_not_read() -> None:
    """A peer that stops reading closes its window: the sender's time goes to the receiver."""
    small = Config(recv_buffer_bytes=4 * MSS)
    net = _connected_pair(config_b=small)
    a, b = conns(net)
    b.pause_reading()
    start = net.now
    a.send(bytes(40 * MSS))
    net.run_for(5.0)
    a.datagrams_to_send(now=net.now)
    st = a.stats
    assert st.time_limited_by_receiver_s > 0.95 * (net.now - start)
    assert st.time_limited_by_application_s == 0.0
    total = (
        st.time_limited_by_receiver_s
        + st.time_limited_by_congestion_s
        + st.time_limited_by_application_s
    )
    assert total <= net.now - start + 1e-9


def test_congestion_limited_time_in_slow_start() -> None:
    """A bulk write with one segment of initial window waits on the congestion window; a
    large receive buffer never limits it; the three figures never exceed the elapsed time."""
    net = _connected_pair(config_a=Config(initial_cwnd_segments=1, pmtud=False))
    a, _ = conns(net)
    start = net.now
    _transfer_and_close(net, bytes(200 * MSS))
    st = a.stats
    assert st.time_limited_by_congestion_s > 0.1
    assert st.time_limited_by_receiver_s == 0.0
    total = (
        st.time_limited_by_receiver_s
        + st.time_limited_by_congestion_s
        + st.time_limited_by_application_s
    )
    assert total <= net.now - start + 1e-9
