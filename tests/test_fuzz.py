"""Fuzzing: arbitrary datagrams against the codec and against a connection in every state.

A datagram that fails to decode must raise ``PacketError`` in the codec and, at a connection,
be counted as dropped and change nothing else.  Anything that decodes may do what the protocol
says, but no exception may escape and the connection must end up idle or closed within a
bounded number of timer expiries.  The coverage-guided targets in tests/fuzz/ check the same
things; here they are run briefly when atheris is installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz._harness import (
    OP_CLOCK,
    OP_RAW,
    OP_SEALED,
    SEAL_ACK,
    SEAL_DST,
    SEAL_SEQ,
    Driver,
    check_decode,
    choose,
    encode_length,
    first_byte,
    run_script,
    seal,
    with_crc,
)
from tests.fuzz._states import STATES, VARIANTS, Target, build
from utcp.config import Config
from utcp.events import CloseReason
from utcp.packet import (
    HEADER_SIZE,
    MAX_OPTIONS_SIZE,
    Flag,
    Packet,
    PacketError,
    decode,
    encode,
    options_size,
)
from utcp.state import ConnectionState

FUZZ_DIR = Path(__file__).parent / "fuzz"
CORPUS = FUZZ_DIR / "corpus"
U32 = 0xFFFF_FFFF


def fuzz(examples: int) -> settings:
    """Deterministic settings: the same examples on every run, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


every_state = pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
every_variant = pytest.mark.parametrize("variant", range(len(VARIANTS)))

u32 = st.integers(0, U32)


# ---------------------------------------------------------------- the codec


@fuzz(500)
@given(data=st.binary(max_size=200))
def test_prop_decode_arbitrary_bytes(data: bytes) -> None:
    """A Packet or PacketError, nothing else; a Packet re-encodes to bytes that decode equal."""
    p = check_decode(data)
    assert p is None or isinstance(p, Packet)


@st.composite
def sealed_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes with version 1, a header length that fits and a valid CRC: they get past
    the header checks into option parsing."""
    body = draw(st.binary(min_size=HEADER_SIZE, max_size=120))
    words = draw(st.integers(HEADER_SIZE // 4, min(15, len(body) // 4)))
    return with_crc(bytes([0x10 | words]) + body[1:])


@fuzz(500)
@given(data=sealed_bytes())
def test_prop_decode_valid_crc_bytes(data: bytes) -> None:
    check_decode(data)


def test_valid_crc_bytes_reach_the_options() -> None:
    """Such bytes pass the header checks: what fails, if anything, is option parsing."""
    assert decode(with_crc(bytes([0x16]) + bytes(range(1, 80)))).payload  # no options
    for words in range(7, 16):
        data = with_crc(bytes([0x10 | words]) + bytes(range(1, 80)))
        with pytest.raises(PacketError, match=r"(?i)option"):
            decode(data)


# ---------------------------------------------------------------- the states


@every_variant
@every_state
def test_every_state_is_reached_and_quiet(state: ConnectionState, variant: int) -> None:
    target = build(state, variant)
    conn = target.conn
    assert conn.state is state
    # Nothing is left to send or report: a datagram's effect is all that is seen afterwards.
    assert conn.datagrams_to_send(now=target.now) == []
    assert conn.next_event() is None
    if state not in (ConnectionState.CLOSED, ConnectionState.LISTEN):
        assert target.from_peer or state is ConnectionState.SYN_SENT


@every_variant
@every_state
def test_silent_peer_ends_in_bounded_timer_steps(state: ConnectionState, variant: int) -> None:
    driver = Driver(build(state, variant))
    driver.settle()
    conn = driver.conn
    assert conn.get_timer() is None
    if state not in (ConnectionState.CLOSED, ConnectionState.LISTEN):
        # With the peer gone every used connection ends: FIN_WAIT_2 too, which has nothing
        # left to say, by the idle timeout of the defaults.
        assert conn.is_finished, conn.state


def test_replayed_peer_datagrams_are_harmless() -> None:
    """The peer's own earlier datagrams, delivered again, are duplicates the protocol absorbs."""
    for variant in range(len(VARIANTS)):
        for state in STATES:
            target = build(state, variant)
            driver = Driver(target)
            for data in target.from_peer:
                driver.deliver(data)
            driver.settle()


# ---------------------------------------------------------------- datagrams for a connection

COMMON_FLAGS = [
    Flag.SYN,
    Flag.SYN | Flag.ACK,
    Flag.ACK,
    Flag.ACK | Flag.FIN,
    Flag.RST,
    Flag.RST | Flag.ACK,
    Flag.SYN | Flag.FIN,
    Flag.NONE,
]

# A sequence or acknowledgement number, relative to what the connection would accept: at the
# expected number ("base"), near one seen on the wire ("seen"), within a few windows ("far"),
# or anything at all ("any").
WIRE_NUMBERS = st.one_of(
    st.tuples(st.just("base"), st.integers(-4, 4)),
    st.tuples(st.just("seen"), st.integers(0, 255), st.integers(-4, 4)),
    st.tuples(st.just("far"), st.integers(-(1 << 17), 1 << 17)),
    st.tuples(st.just("any"), u32),
)
SACK_EDGES = st.one_of(
    st.tuples(st.just("base"), st.integers(-3000, 3000)), u32.map(lambda v: ("any", v))
)
CIDS = st.sampled_from(["own", "own", "own", "zero", "any"])


@st.composite
def packet_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Every field of a packet, with numbers and ids still relative to a connection."""
    timestamps = draw(st.none() | st.tuples(u32, u32))
    return {
        "flags": int(draw(st.sampled_from(COMMON_FLAGS) | st.integers(0, 255))),
        "src": draw(st.booleans()),
        "dst": draw(CIDS),
        "any_cid": draw(u32),
        "seq": draw(WIRE_NUMBERS),
        "ack": draw(WIRE_NUMBERS),
        "window": draw(st.sampled_from([0, 1, 0xFFFF]) | st.integers(0, 0xFFFF)),
        "payload": draw(st.binary(max_size=200)),
        "mss": draw(st.none() | st.integers(0, 0xFFFF)),
        "wscale": draw(st.none() | st.integers(0, 14)),
        "sack_permitted": draw(st.booleans()),
        "sack_blocks": draw(
            st.lists(st.tuples(SACK_EDGES, SACK_EDGES), max_size=3 if timestamps else 4)
        ),
        "timestamps": timestamps,
    }


def _number(spec: tuple[Any, ...], target: Target, base: int) -> int:
    kind, value = spec[0], int(spec[1])
    if kind == "any":
        return value
    if kind == "seen":
        return (target.numbers[value % len(target.numbers)] + int(spec[2])) & U32
    return (base + value) & U32


def make_packet(spec: dict[str, Any], target: Target) -> bytes:
    """The datagram ``spec`` describes for ``target``: well formed and correctly checksummed,
    addressed to the connection (mostly) from its peer (mostly)."""
    own = target.conn.local_cid
    dst = {"own": own, "zero": 0, "any": spec["any_cid"]}[spec["dst"]]
    p = Packet(
        flags=spec["flags"],
        src_cid=target.peer_cid if spec["src"] else spec["any_cid"],
        dst_cid=dst,
        seq=_number(spec["seq"], target, target.expected_seq),
        ack=_number(spec["ack"], target, target.next_ack),
        window=spec["window"],
        payload=spec["payload"],
        mss=spec["mss"],
        wscale=spec["wscale"],
        sack_permitted=spec["sack_permitted"],
        sack_blocks=tuple(
            (_number(left, target, target.next_ack), _number(right, target, target.next_ack))
            for left, right in spec["sack_blocks"]
        ),
        timestamps=spec["timestamps"],
    )
    size = options_size(
        mss=p.mss is not None,
        wscale=p.wscale is not None,
        sack_permitted=p.sack_permitted,
        sack_blocks=len(p.sack_blocks),
        timestamps=p.timestamps is not None,
    )
    if size > MAX_OPTIONS_SIZE:  # keep the draw valid: the SYN options give way
        p.mss = p.wscale = None
        p.sack_permitted = False
    return encode(p)


CLOCK_STEPS = st.sampled_from([None, 0.0, 0.005, 0.05, 0.3, 2.0, 30.0])
RAW_STEPS = st.one_of(
    st.binary(max_size=100).map(lambda b: ("datagram", b)),
    CLOCK_STEPS.map(lambda t: ("clock", t)),
)
PACKET_STEPS = st.one_of(
    packet_specs().map(lambda spec: ("packet", spec)),
    st.integers(0, 255).map(lambda i: ("replay", i)),
    CLOCK_STEPS.map(lambda t: ("clock", t)),
)


def run_steps(target: Target, steps: list[tuple[str, Any]]) -> Driver:
    """Feed the steps to the connection, then let its timers run with the peer silent."""
    driver = Driver(target)
    for kind, value in steps:
        if kind == "datagram":
            driver.deliver(value)
        elif kind == "packet":
            driver.deliver(make_packet(value, target))
        elif kind == "replay" and target.from_peer:
            driver.deliver(target.from_peer[value % len(target.from_peer)])
        elif kind == "clock":
            driver.advance(value)
    driver.settle()
    assert driver.conn.get_timer() is None
    return driver


@every_variant
@every_state
@fuzz(20)
@given(steps=st.lists(RAW_STEPS, min_size=1, max_size=8))
def test_prop_raw_bytes_at_every_state(
    state: ConnectionState, variant: int, steps: list[tuple[str, Any]]
) -> None:
    """Random bytes almost never pass the CRC: each is a counted drop that changes nothing
    (``Driver.deliver`` checks that), and no exception escapes."""
    run_steps(build(state, variant), steps)


@every_variant
@every_state
@fuzz(40)
@given(steps=st.lists(PACKET_STEPS, min_size=1, max_size=6))
def test_prop_valid_packets_at_every_state(
    state: ConnectionState, variant: int, steps: list[tuple[str, Any]]
) -> None:
    """Well-formed packets with arbitrary fields: no exception, and the timers wind down."""
    driver = run_steps(build(state, variant), steps)
    assert driver.closed_events <= 1


# An ACK at exactly the expected numbers, for states whose peer sent nothing yet.
BLANK_SPEC: dict[str, Any] = {
    "flags": int(Flag.ACK),
    "src": True,
    "dst": "own",
    "any_cid": 0,
    "seq": ("base", 0),
    "ack": ("base", 0),
    "window": 1000,
    "payload": b"",
    "mss": None,
    "wscale": None,
    "sack_permitted": False,
    "sack_blocks": [],
    "timestamps": None,
}


@every_variant
@every_state
@fuzz(20)
@given(
    spec=st.none() | packet_specs(),
    pick=st.integers(0, 255),
    index=st.integers(0, 1 << 16),
    xor=st.integers(1, 255),
)
def test_prop_corrupted_byte_changes_nothing(
    state: ConnectionState,
    variant: int,
    spec: dict[str, Any] | None,
    pick: int,
    index: int,
    xor: int,
) -> None:
    """A valid datagram with one byte changed fails its checksum (or its header checks): it is
    dropped and counted once, and the connection is exactly as before."""
    target = build(state, variant)
    conn = target.conn
    if spec is not None or not target.from_peer:
        good = bytearray(make_packet(spec or BLANK_SPEC, target))
    else:
        good = bytearray(target.from_peer[pick % len(target.from_peer)])
    good[index % len(good)] ^= xor
    bad = bytes(good)
    with pytest.raises(PacketError):
        decode(bad)
    before_state, before_timer = conn.state, conn.get_timer()
    before = conn.stats
    conn.receive_datagram(bad, now=target.now)
    after = conn.stats
    assert after.datagrams_dropped == before.datagrams_dropped + 1
    assert conn.state is before_state and conn.get_timer() == before_timer
    assert conn.next_event() is None
    assert conn.datagrams_to_send(now=target.now) == []
    for name in type(after).__dataclass_fields__:
        if "drop" not in name:
            assert getattr(after, name) == getattr(before, name), name


# ---------------------------------------------------------------- the fuzz script and corpus


def _corpus_files(kind: str) -> list[Path]:
    return sorted(p for p in (CORPUS / kind).iterdir() if p.is_file())


def test_corpus_is_small() -> None:
    files = _corpus_files("decode") + _corpus_files("connection")
    assert 0 < len(files) < 100
    assert sum(p.stat().st_size for p in files) < 200_000


def test_decode_corpus_replays() -> None:
    decoded = [check_decode(p.read_bytes()) for p in _corpus_files("decode")]
    assert sum(p is not None for p in decoded) >= 6  # the seeds are mostly real datagrams


def test_connection_corpus_replays_and_covers_every_state() -> None:
    seen = set()
    for path in _corpus_files("connection"):
        data = path.read_bytes()
        seen.add(choose(data[0]))
        run_script(data)
    assert seen == {(s, v) for s in range(len(STATES)) for v in range(len(VARIANTS))}


def test_script_ops() -> None:
    """A hand-written script: the peer's SYN-ACK, sealed from offsets, completes a connect."""
    syn_sent = STATES.index(ConnectionState.SYN_SENT)
    syn_ack = Packet(int(Flag.SYN | Flag.ACK), 0xB, 0, 0, 1, 0xFFFF, mss=1000)
    # seq 0 and ack 1 are offsets from the ISN the client expects and its next number.
    raw = encode(syn_ack)
    op = OP_SEALED | SEAL_DST | SEAL_SEQ | SEAL_ACK
    target = build(ConnectionState.SYN_SENT)
    sealed = decode(seal(raw, op, target))
    assert (sealed.dst_cid, sealed.seq, sealed.ack) == (0xA, 5000, 1002)
    script = bytes([syn_sent, op, len(raw)]) + raw
    driver = run_script(script)
    assert driver is not None
    assert driver.conn.stats.datagrams_dropped == 1  # ack 1002 acknowledges nothing sent

    fixed = Packet(int(Flag.SYN | Flag.ACK), 0xB, 0, 0, 0, 0xFFFF, mss=1000)
    raw = encode(fixed)
    script = bytes([syn_sent, op, len(raw)]) + raw + bytes([OP_CLOCK | (4 << 2)])
    driver = run_script(script)
    # Established, and then, its peer silent, ended by the default idle timeout when the
    # harness ran its timers out (only a synchronized connection ends IDLE).
    assert driver is not None and driver.conn.close_reason is CloseReason.IDLE
    idle_s = Config().idle_timeout_s
    assert idle_s is not None and driver.now == pytest.approx(driver.conn.last_heard + idle_s)
    # A raw op with a bad CRC is one counted drop (checked inside the harness too).
    driver = run_script(bytes([syn_sent, OP_RAW, 30]) + bytes(30))
    assert driver is not None and driver.conn.stats.datagrams_dropped == 1


def test_script_long_datagram_length() -> None:
    """A length byte of 255 is followed by a two-byte length, so full-sized segments fit."""
    target = build(ConnectionState.ESTABLISHED)
    data = max(target.from_peer, key=len)
    assert len(data) > 255
    prefix = encode_length(len(data))
    assert prefix[0] == 255 and len(prefix) == 3
    state = first_byte(STATES.index(ConnectionState.ESTABLISHED), 0)
    driver = run_script(bytes([state, OP_RAW]) + prefix + data)
    assert driver is not None
    assert driver.conn.stats.segments_received == target.conn.stats.segments_received + 1


class _Overriding:
    """A connection with some methods replaced: every other attribute is the real one's."""

    def __init__(self, conn: Any, **methods: Any) -> None:
        self._conn = conn
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        if name in self._methods:
            return self._methods[name]
        return getattr(self._conn, name)


def test_harness_catches_a_malformed_datagram_that_changes_something() -> None:
    """The checks bite: a connection that acted on a bad datagram would be caught."""
    target = build(ConnectionState.ESTABLISHED)
    conn = target.conn

    def receive_and_abort(data: bytes | bytearray | memoryview, *, now: float) -> None:
        conn.receive_datagram(data, now=now)
        conn.abort()

    target.conn = _Overriding(conn, receive_datagram=receive_and_abort)
    with pytest.raises(AssertionError, match="malformed datagram"):
        Driver(target).deliver(bytes(30))


def test_harness_catches_timers_that_never_wind_down() -> None:
    target = build(ConnectionState.LISTEN)
    target.conn = _Overriding(target.conn, get_timer=lambda: target.now)
    with pytest.raises(AssertionError, match="timers still running"):
        Driver(target).settle()


def test_abort_after_orderly_close_reports_no_second_close() -> None:
    target = build(ConnectionState.TIME_WAIT)  # ConnectionClosed(closed) already collected
    conn = target.conn
    conn.abort()
    assert conn.next_event() is None


# ---------------------------------------------------------------- the atheris targets

HAS_ATHERIS = importlib.util.find_spec("atheris") is not None
ATHERIS_RUNS = {"decode": 20_000, "connection": 1_000}  # a few seconds each


@pytest.mark.skipif(
    not HAS_ATHERIS, reason="atheris is not installed (pip install -e '.[test]', Linux only)"
)
@pytest.mark.parametrize("target", ["decode", "connection"])
def test_atheris_target_runs_briefly(target: str, tmp_path: Path) -> None:
    """What CI runs of `make fuzz`: the seed corpus and some mutations of it, no crash.
    New inputs go to a temporary directory so the committed corpus never grows."""
    new = tmp_path / "new"
    new.mkdir()
    cmd = [
        sys.executable,
        str(FUZZ_DIR / f"fuzz_{target}.py"),
        f"-runs={ATHERIS_RUNS[target]}",
        "-seed=1",
        "-max_total_time=30",
        "-timeout=20",
        f"-artifact_prefix={tmp_path}/",
        str(new),
        str(CORPUS / target),
    ]
    env = {**os.environ, "UTCP_PURE": "1"}  # as `make fuzz`: coverage comes from bytecode
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert not list(tmp_path.glob("crash-*")), proc.stderr[-5000:]
