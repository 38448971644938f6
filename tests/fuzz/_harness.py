"""What both fuzzers check: ``check_decode`` for the codec and ``run_script`` for a connection.

Each returns normally or raises; any exception (an ``AssertionError`` from a broken invariant
included) is a finding.  The connection is driven alone, as if its peer had gone silent: only
the fuzzed datagrams reach it, and the timers run on a simulated clock.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

from tests.fuzz._states import STATES, VARIANTS, Target, build
from utcp.connection import Connection
from utcp.events import ConnectionClosed
from utcp.packet import HEADER_SIZE, Packet, PacketError, decode, encode

# Timer expiries a silent peer may cost before a connection must be idle or closed: the worst
# legitimate case is about 16 retransmission timeouts plus probes and keepalives.
MAX_TIMER_STEPS = 500


def check_decode(data: bytes) -> Packet | None:
    """Decode ``data``; only ``PacketError`` may escape, and a packet must re-encode exactly."""
    try:
        p = decode(data)
    except PacketError:
        return None
    again = encode(p)  # every option set that fits a datagram also fits when re-encoded
    q = decode(again)
    assert q == p, f"re-encoded packet decodes differently: {p!r} -> {q!r}"
    assert encode(q) == again, "encoding is not stable"
    return p


def with_crc(data: bytes | bytearray) -> bytes:
    """``data`` (at least a header long) with its CRC-32 field made to match."""
    buf = bytearray(data)
    struct.pack_into("!I", buf, 20, zlib.crc32(buf[24:], zlib.crc32(buf[:20])))
    return bytes(buf)


def fuzz_decode(data: bytes) -> None:
    """The codec target: ``data`` as it is, and with a matching CRC so mutations get past the
    checksum into the header and option checks."""
    check_decode(data)
    if len(data) >= HEADER_SIZE:
        check_decode(with_crc(data))


def _snapshot(conn: Connection) -> dict[str, Any]:
    """Everything observable about a connection except its drop counters and the counts of
    shortcuts taken (a call that finds nothing due counts one)."""
    stats = conn.stats
    fields = {
        f.name: getattr(stats, f.name)
        for f in dataclasses.fields(stats)
        if "drop" not in f.name and not f.name.startswith("fast_path_")
    }
    fields["close_reason"] = conn.close_reason
    fields["timer"] = conn.get_timer()
    return fields


class Driver:
    """Feeds one connection datagrams, clock steps and application calls, checking as it goes.

    After every input the connection is flushed: what it sends is decoded (it must only ever
    send well-formed datagrams) and its events are collected.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = target.conn
        self.now = target.now
        self.closed_events = 0
        self.finished = self.conn.is_finished

    def flush(self) -> list[bytes]:
        conn = self.conn
        out = conn.datagrams_to_send(now=self.now)
        for data in out:
            decode(data)
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, ConnectionClosed):
                self.closed_events += 1
                assert self.closed_events == 1, "ConnectionClosed reported twice"
        if self.finished:
            assert conn.is_finished, f"a finished connection is {conn.state.value} again"
        self.finished = conn.is_finished
        return out

    def deliver(self, data: bytes) -> None:
        """Hand ``data`` to the connection; one that fails to decode must change nothing."""
        conn = self.conn
        try:
            decode(data)
        except PacketError:
            before = _snapshot(conn)
            dropped = conn.stats.datagrams_dropped
            conn.receive_datagram(data, now=self.now)
            assert conn.stats.datagrams_dropped == dropped + 1, "malformed datagram not counted"
            assert conn.next_event() is None, "malformed datagram raised an event"
            assert conn.datagrams_to_send(now=self.now) == [], "malformed datagram answered"
            after = _snapshot(conn)
            assert after == before, f"malformed datagram changed the connection: {after}"
            return
        conn.receive_datagram(data, now=self.now)
        self.flush()

    def advance(self, seconds: float | None) -> None:
        """Move the clock ``seconds`` on, or to the next deadline; run the timers that are due."""
        conn = self.conn
        if seconds is None:
            t = conn.get_timer()
            if t is None:
                return
            self.now = max(self.now, t)
        else:
            self.now += seconds
        t = conn.get_timer()
        if t is not None and t <= self.now:
            conn.handle_timer(now=self.now)
        self.flush()

    def call(self, action: int) -> None:
        """One application call: close, abort, pause or resume reading, or send some bytes."""
        conn = self.conn
        kind = action % 5
        if kind == 0:
            conn.close()
        elif kind == 1:
            conn.abort()  # also after the close was reported: never a second ConnectionClosed
        elif kind == 2:
            conn.pause_reading()
        elif kind == 3:
            conn.resume_reading()
        else:
            try:
                conn.send(b"s" * (300 * (action // 5 + 1)))
            except BrokenPipeError:
                pass  # sending after close() or outside a sending state: documented misuse
        self.flush()

    def settle(self) -> None:
        """Run the timers until the connection is idle or closed; a bounded number suffices."""
        conn = self.conn
        for _ in range(MAX_TIMER_STEPS):
            t = conn.get_timer()
            if t is None:
                return
            self.now = max(self.now, t)
            conn.handle_timer(now=self.now)
            self.flush()
        raise AssertionError(
            f"timers still running after {MAX_TIMER_STEPS} expiries "
            f"(state {conn.state.value}, next deadline {conn.get_timer()}, now {self.now})"
        )


# ---------------------------------------------------------------- the connection script

OP_RAW = 0  # [op][length][bytes]: a datagram exactly as given
OP_SEALED = 1  # [op][length][bytes]: made a valid header first (see ``seal``)
OP_CLOCK = 2  # op >> 2 = k: advance k * 25 ms, or to the next deadline when k is 0
OP_CALL = 3  # op >> 2: an application call (``Driver.call``)

SEAL_DST = 0x04  # sealed: address it to the connection
SEAL_SEQ = 0x08  # sealed: the sequence field is an offset from the sequence number expected
SEAL_ACK = 0x10  # sealed: the acknowledgement field is an offset from the connection's next
LONG_LENGTH = 255  # a length byte of 255 is followed by the real length in two bytes
CLOCK_STEP_S = 0.025
_MASK32 = 0xFFFF_FFFF
_SEQ_ACK = struct.Struct("!II")


def choose(first: int) -> tuple[int, int]:
    """The (state index, variant) a script's first byte selects."""
    index = first % (len(STATES) * len(VARIANTS))
    return index % len(STATES), index // len(STATES)


def first_byte(state_index: int, variant: int) -> int:
    """The first byte that selects (state index, variant): the inverse of ``choose``."""
    return variant * len(STATES) + state_index


def seal(chunk: bytes, op: int, target: Target) -> bytes:
    """``chunk`` (padded to a header) with version 1, a header length that fits, and a valid
    CRC; by the op's bits addressed to the connection and with seq/ack taken as offsets."""
    buf = bytearray(chunk.ljust(HEADER_SIZE, b"\0"))
    words = buf[0] & 0x0F
    if words * 4 < HEADER_SIZE or words * 4 > len(buf):
        words = HEADER_SIZE // 4
    buf[0] = 0x10 | words
    if op & SEAL_DST:
        struct.pack_into("!I", buf, 8, target.conn.local_cid)
    seq, ack = _SEQ_ACK.unpack_from(buf, 12)
    if op & SEAL_SEQ:
        seq = (target.expected_seq + seq) & _MASK32
    if op & SEAL_ACK:
        ack = (target.next_ack + ack) & _MASK32
    _SEQ_ACK.pack_into(buf, 12, seq, ack)
    return with_crc(buf)


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A datagram length: one byte, or 255 and then two bytes (big-endian) for longer ones."""
    n = data[pos] if pos < len(data) else 0
    if n == LONG_LENGTH:
        return int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
    return n, pos + 1


def encode_length(n: int) -> bytes:
    """The length prefix ``run_script`` reads for an ``n``-byte datagram."""
    return bytes([n]) if n < LONG_LENGTH else bytes([LONG_LENGTH]) + n.to_bytes(2, "big")


def run_script(data: bytes) -> Driver | None:
    """Build the connection the first byte names, run the ops that follow, then its timers.

    Layout: one byte choosing the state and variant (``choose``), then ops until the input
    ends; a length running past the end takes what is left.
    """
    if not data:
        return None
    state_index, variant = choose(data[0])
    driver = Driver(build(STATES[state_index], variant))
    pos, end = 1, len(data)
    while pos < end:
        op = data[pos]
        pos += 1
        kind = op & 0x03
        if kind in (OP_RAW, OP_SEALED):
            n, pos = _length(data, pos)
            chunk = data[pos : pos + n]
            pos += n
            if kind == OP_SEALED:
                chunk = seal(chunk, op, driver.target)
            driver.deliver(chunk)
        elif kind == OP_CLOCK:
            steps = op >> 2
            driver.advance(steps * CLOCK_STEP_S if steps else None)
        else:
            driver.call(op >> 2)
    driver.settle()
    return driver
