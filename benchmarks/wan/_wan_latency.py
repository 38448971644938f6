"""The kcp-latency scenario's message protocol, statistics and table (KCP's own test.cpp, as a
stream echo): pure code, no I/O and no clock, shared by the worker and the harness.

The client sends an 8-byte message every 20 ms: a 32-bit sequence number and the client's
clock in microseconds modulo 2^32 (big-endian; KCP's test sends its index and a millisecond
clock), and the server echoes the bytes back unchanged.  A reliable ordered stream returns every
message once, in order and unaltered: ``EchoLog`` checks that and takes each round trip from the
timestamp the message carries.
"""

from __future__ import annotations

import math
import statistics
import struct
from typing import Any

MESSAGE = struct.Struct("!II")  # sequence number, send time in microseconds mod 2^32
MESSAGE_BYTES = MESSAGE.size
TS_MODULUS = 1 << 32  # the timestamp wraps every 71.6 minutes; elapsed_us() is wrap-safe


def encode_message(seq: int, now_us: int) -> bytes:
    return MESSAGE.pack(seq % TS_MODULUS, now_us % TS_MODULUS)


def decode_message(data: bytes | memoryview) -> tuple[int, int]:
    """(sequence number, timestamp in microseconds mod 2^32) of one 8-byte message."""
    if len(data) != MESSAGE_BYTES:
        raise ValueError(f"a message is {MESSAGE_BYTES} bytes, got {len(data)}")
    seq, ts_us = MESSAGE.unpack(data)
    return int(seq), int(ts_us)


def elapsed_us(now_us: int, ts_us: int) -> int:
    """Microseconds from a message's timestamp to ``now_us``, across the 2^32 wrap."""
    return (now_us - ts_us) % TS_MODULUS


class EchoLog:
    """The client's record: what it sent, and what came back parsed from the stream's bytes in
    whatever chunks they arrive (a message may be split across reads or share one)."""

    def __init__(self) -> None:
        self.sent_ts: list[int] = []  # per sequence number, as encoded
        self.seen = bytearray()  # 1 once a sequence number came back
        self.rtts_ms: list[float] = []  # in arrival order
        self.echoed = 0
        self.out_of_order = 0  # valid, but not the one after the last valid one
        self.invalid = 0  # never sent, seen twice, or altered on the way
        self._last_seq = -1
        self._pending = bytearray()

    def send(self, now_us: int) -> bytes:
        """Record the next message as sent at ``now_us``; return its bytes."""
        seq = len(self.sent_ts)
        data = encode_message(seq, now_us)
        self.sent_ts.append(now_us % TS_MODULUS)
        self.seen.append(0)
        return data

    def feed(self, data: bytes, now_us: int) -> int:
        """Take echoed bytes that arrived at ``now_us``; return how many messages they completed."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % MESSAGE_BYTES
        for offset in range(0, whole, MESSAGE_BYTES):
            seq, ts_us = MESSAGE.unpack_from(self._pending, offset)
            if seq >= len(self.sent_ts) or self.seen[seq] or self.sent_ts[seq] != ts_us:
                self.invalid += 1
                continue
            self.seen[seq] = 1
            self.echoed += 1
            if seq != self._last_seq + 1:
                self.out_of_order += 1
            self._last_seq = seq
            self.rtts_ms.append(elapsed_us(now_us, ts_us) / 1000)
        del self._pending[:whole]
        return whole // MESSAGE_BYTES

    @property
    def sent(self) -> int:
        return len(self.sent_ts)

    def complete(self) -> bool:
        return self.echoed == self.sent

    def result(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "echoed": self.echoed,
            "missing": self.sent - self.echoed,
            "out_of_order": self.out_of_order,
            "invalid": self.invalid,
            "partial_bytes": len(self._pending),
            **rtt_stats(self.rtts_ms),
            "rtt_ms": [round(x, 3) for x in self.rtts_ms],
        }


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (``q`` in 0..100): the smallest value with at least q% of
    the values at or below it, so always one of the measured values; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return float(ordered[min(len(ordered), max(rank, 1)) - 1])


def rtt_stats(rtts_ms: list[float]) -> dict[str, float | None]:
    """Average, median, p99 and extremes of one run's round trips, in ms."""
    return {
        "avg_rtt_ms": statistics.fmean(rtts_ms) if rtts_ms else None,
        "p50_rtt_ms": percentile(rtts_ms, 50),
        "p99_rtt_ms": percentile(rtts_ms, 99),
        "min_rtt_ms": min(rtts_ms) if rtts_ms else None,
        "max_rtt_ms": max(rtts_ms) if rtts_ms else None,
    }


# Per-run values whose median over the runs a row shows; counts are summed instead.
MEDIAN_KEYS = ("avg_rtt_ms", "p50_rtt_ms", "p99_rtt_ms", "max_rtt_ms")
SUM_KEYS = ("sent", "echoed", "missing", "out_of_order", "invalid")


def summarize_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One peer's row from its runs' client results: the median over the runs of each run's
    average, p50, p99 and maximum round trip, and the message counts summed over the runs."""
    row: dict[str, Any] = {}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in results if r.get(key) is not None]
        row[key] = float(statistics.median(values)) if values else None
    for key in SUM_KEYS:
        row[key] = sum(int(r.get(key) or 0) for r in results)
    return row


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _loss(row: dict[str, Any]) -> str:
    ab, ba = row.get("loss_drop_pct"), row.get("loss_drop_pct_ba")
    if ab is None or ba is None:
        return "n/a"
    return f"{ab:.1f} / {ba:.1f}"


def delivery_cell(row: dict[str, Any]) -> str:
    """What came back, with anything a reliable stream must not do spelled out."""
    text = f"{row['echoed']:,}"
    problems = []
    if row["missing"]:
        problems.append(f"{row['missing']:,} missing")
    if row.get("out_of_order"):
        problems.append(f"{row['out_of_order']:,} out of order")
    if row.get("invalid"):
        problems.append(f"{row['invalid']:,} invalid")
    return text + (f" (**{', '.join(problems)}**)" if problems else "")


def latency_table(title: str, peers: list[dict[str, Any]], rows: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per peer that ran (or could not) in a latency scenario."""
    lines = [
        f"| {title} | avg RTT ms | p99 RTT ms | p50 RTT ms | max RTT ms | sent | echoed "
        "| loss % there / back | runs ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for peer in peers:
        row = rows.get(peer["name"])
        if peer.get("unavailable"):
            lines.append(f"| {peer['label']} | n/a | | | | | | | |")
            continue
        if row is None:
            continue  # not a peer of this scenario
        if not row.get("ok"):
            lines.append(f"| {peer['label']} | failed | | | | | | | 0/{row['runs']} |")
            continue
        lines.append(
            f"| {peer['label']} | {_ms(row['avg_rtt_ms'])} | {_ms(row['p99_rtt_ms'])} "
            f"| {_ms(row['p50_rtt_ms'])} | {_ms(row['max_rtt_ms'])} | {row['sent']:,} "
            f"| {delivery_cell(row)} | {_loss(row)} | {row['ok']}/{row['runs']} |"
        )
    return lines
