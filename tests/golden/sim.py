"""The frozen fake network of the golden traces and the canonical text it records.

``Sim`` joins two connections by two seeded ``Link``s on a simulated timeline (as
tests/helpers.Network does, copied on purpose so that changes to the shared helpers cannot move
the goldens) and writes one line per datagram sent, event taken, state or deadline change and
trace event.  Only the public API of ``utcp`` and ``utcp.packet`` is used.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import heapq
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from utcp import (
    CloseReason,
    Config,
    Connection,
    ConnectionState,
    DataReceived,
    Event,
    Flag,
    Packet,
    PacketError,
    decode,
    encode,
    reset_for,
)
from utcp.packet import HEADER_SIZE, decode_quoted

S = ConnectionState
SYN, FIN, RST, ACK = int(Flag.SYN), int(Flag.FIN), int(Flag.RST), int(Flag.ACK)
NEVER = (0.0, math.inf)
ISN = {"a": 1000, "b": 5000}
CID = {"a": 0xA, "b": 0xB}

# Keepalive and idle timeout off, as tests/helpers.QUIET: scenarios about something else.
QUIET: dict[str, Any] = {
    "keepalive_idle_s": None,
    "keepalive_stall_s": None,
    "idle_timeout_s": None,
}
# Every scenario names its congestion controller, so a change of the library's default
# (newreno until cubic became it) cannot move a recorded trace; a golden trace proves
# refactors, it need not follow the default.  Scenarios start from BASE, never Config().
BASE = Config(congestion_control="newreno")
FIXED = BASE.replace(pmtud=False)  # fixed segment sizes, no PMTU probes


# ------------------------------------------------------------------------------ canonical form


def canon(x: object) -> object:
    """``x`` as plain JSON values: floats to the nanosecond, enums by value, bytes as hex."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, enum.Enum):
        return canon(x.value)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return repr(x)
        r = round(x, 9)
        return 0.0 if r == 0 else r
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).hex()
    if isinstance(x, dict):
        return {str(k): canon(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [canon(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: canon(getattr(x, f.name)) for f in dataclasses.fields(x)}
    raise TypeError(f"no canonical form for {type(x).__name__}")


def js(x: object) -> str:
    return json.dumps(canon(x), sort_keys=True, separators=(",", ":"))


def ts(t: float | None) -> str:
    """A time (or deadline) to the nanosecond, fixed width after the point."""
    if t is None:
        return "-"
    if math.isinf(t):
        return "inf"
    return f"{round(t, 9):.9f}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def summary(p: Packet) -> str:
    """One datagram's header fields, for reading a dump (the hex that follows is what counts)."""
    names = [
        n for bit, n in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (ACK, "ACK")) if p.flags & bit
    ]
    out = [
        "+".join(names) or "NONE",
        f"seq={p.seq}",
        f"ack={p.ack}",
        f"wnd={p.window}",
        f"len={len(p.payload)}",
    ]
    for name in ("mss", "wscale", "timestamps", "probe", "probe_ack"):
        value = getattr(p, name)
        if value is not None:
            out.append(f"{name}={js(value)}")
    if p.sack_permitted:
        out.append("sack_ok")
    if p.probe_permitted:
        out.append("probe_ok")
    if p.sack_blocks:
        out.append(f"sack={js(p.sack_blocks)}")
    if p.padding:
        out.append(f"pad={p.padding}")
    return " ".join(out)


# ------------------------------------------------------------------------------ the fake network


@dataclass
class Link:
    """One direction of the fake path (as tests/helpers.Link, frozen): delay, jitter, loss,
    duplication, corruption, reordering from one seeded RNG, scripted drops, blackhole
    intervals, and an MTU that silently drops larger datagrams (with timed changes)."""

    seed: int = 0
    delay_s: float = 0.010
    jitter_s: float = 0.0
    loss: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_extra_s: float = 0.030
    blackholes: list[tuple[float, float]] = field(default_factory=list)
    drop: Callable[[int, Packet], bool] | None = None
    mtu: int | None = 1472  # a 1500-byte IPv4 path
    mtu_changes: tuple[tuple[float, int | None], ...] = ()
    sent: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def mtu_at(self, now: float) -> int | None:
        limit = self.mtu
        for t, value in self.mtu_changes:
            if t <= now:
                limit = value
        return limit

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """Arrivals (time, bytes) of one datagram put on this path at ``now``."""
        index = self.sent
        self.sent += 1
        if self.drop is not None and self.drop(index, decode(data)):
            self.dropped += 1
            return []
        if any(start <= now < end for start, end in self.blackholes):
            self.dropped += 1
            return []
        limit = self.mtu_at(now)
        if limit is not None and len(data) > limit:
            self.dropped += 1
            return []
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return []
        copies = 2 if self.dup and rng.random() < self.dup else 1
        out = []
        for _ in range(copies):
            payload = data
            if self.corrupt and rng.random() < self.corrupt:
                buf = bytearray(data)
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
                payload = bytes(buf)
            t = now + self.delay_s
            if self.jitter_s:
                t += rng.uniform(0, self.jitter_s)
            if self.reorder and rng.random() < self.reorder:
                t += rng.uniform(0, self.reorder_extra_s)
            out.append((t, payload))
        return out


class Recorder:
    """A tracer (utcp.trace.Tracer) writing one side's events into the scenario's lines."""

    def __init__(self, side: str, lines: list[str]) -> None:
        self.side = side
        self.lines = lines

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        self.lines.append(f"{ts(now)} trace {self.side} {name} {js(fields)}")

    def close(self) -> None:
        pass


class Sim:
    """Client ``a`` and server ``b`` on a simulated timeline, every output recorded as a line.

    A side whose connection is gone (``kill``) answers everything with RST, as a host where
    nobody listens.  ``batch`` sides take the datagrams arriving at one instant as one batch,
    merged by ``utcp.coalesce`` and given to ``receive_packet``, as the asyncio endpoint does.
    """

    def __init__(
        self,
        *,
        traced: bool,
        cfg_a: Config,
        cfg_b: Config,
        a_to_b: Link,
        b_to_a: Link,
        batch: Iterable[str] = (),
        start: str = "connect",
    ) -> None:
        self.traced = traced
        self.lines: list[str] = []
        self.now = 0.0
        self.unmet: list[str] = []
        self.paths = {"a": a_to_b, "b": b_to_a}
        self.batch = set(batch)
        self.conns: dict[str, Connection | None] = {}
        self.ever: dict[str, Connection] = {}
        self.received = {"a": bytearray(), "b": bytearray()}
        self.eof = {"a": False, "b": False}
        self.closed: dict[str, str | None] = {"a": None, "b": None}
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = 0
        self._seen: dict[str, tuple[str, str]] = {}
        # Called with each event as it is taken, before the next one is: an application
        # reacting at once (pausing reading, say) while more events wait.
        self.on_event: Callable[[str, Event], None] | None = None
        self.wire: list[tuple[str, bytes]] = []  # (src, datagram) as sent
        for name, cfg in (("a", cfg_a), ("b", cfg_b)):
            conn = Connection(cfg, local_cid=CID[name], isn=ISN[name])
            if traced:
                conn.set_tracer(Recorder(name, self.lines), now=0.0)
            self.conns[name] = self.ever[name] = conn
        if start == "simultaneous":
            self.a.connect(now=0.0)
            self.b.connect(now=0.0)
        else:
            self.b.listen(now=0.0)
            if start == "connect":
                self.a.connect(now=0.0)

    # -- access

    @property
    def a(self) -> Connection:
        return self.ever["a"]

    @property
    def b(self) -> Connection:
        return self.ever["b"]

    def note(self, text: str) -> None:
        """A line of the script's own: what a call returned, an injected datagram."""
        self.lines.append(f"{ts(self.now)} note {text}")

    def sent(self, src: str, pred: Callable[[Packet], bool] = lambda p: True) -> list[Packet]:
        """The datagrams ``src`` put on the wire so far that match ``pred`` (from the lines)."""
        packets = (decode(data) for name, data in self.wire if name == src)
        return [p for p in packets if pred(p)]

    # -- the network

    def _put(self, src: str, data: bytes) -> None:
        dst = "b" if src == "a" else "a"
        self.wire.append((src, data))
        self.lines.append(f"{ts(self.now)} wire {src}>{dst} {summary(decode(data))} {data.hex()}")
        for t, payload in self.paths[src].transmit(data, self.now):
            self._order += 1
            heapq.heappush(self._queue, (t, self._order, dst, payload))

    def flush(self) -> None:
        """Put what both connections want to send on the wire; take their events."""
        for name in ("a", "b"):
            conn = self.conns[name]
            if conn is None:
                continue
            for data in conn.datagrams_to_send(now=self.now):
                self._put(name, data)
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, DataReceived):
                    self.received[name] += ev.data
                    text = f"len={len(ev.data)} sha={sha(ev.data)[:16]}"
                else:
                    fields = canon(ev)
                    text = js(fields) if fields else ""
                    if type(ev).__name__ == "EofReceived":
                        self.eof[name] = True
                    reason = getattr(ev, "reason", None)
                    if isinstance(reason, CloseReason):
                        self.closed[name] = reason.value
                self.lines.append(f"{ts(self.now)} event {name} {type(ev).__name__} {text}")
                if self.on_event is not None:
                    self.on_event(name, ev)
        self._note_timers()

    def _note_timers(self) -> None:
        for name in ("a", "b"):
            conn = self.conns[name]
            if conn is None:
                continue
            seen = (conn.state.value, ts(conn.get_timer()))
            if self._seen.get(name) != seen:
                self._seen[name] = seen
                self.lines.append(f"{ts(self.now)} timer {name} {seen[0]} {seen[1]}")

    def next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        for conn in self.conns.values():
            if conn is not None and (t := conn.get_timer()) is not None:
                times.append(t)
        return min(times) if times else None

    def _deliver(self, dst: str, items: list[bytes]) -> None:
        conn = self.conns[dst]
        if conn is None:
            for data in items:
                try:
                    rst = reset_for(decode(data))
                except PacketError:
                    rst = None
                if rst is not None:
                    self._put(dst, rst)
            return
        if dst not in self.batch:
            for data in items:
                conn.receive_datagram(data, now=self.now)
            return
        from utcp.coalesce import coalesce

        decoded: list[tuple[Packet, Any, int, int]] = []
        for data in items:
            try:
                decoded.append((decode(data), None, len(data), 1))
            except PacketError:
                conn.receive_datagram(data, now=self.now)  # counted as a drop by the core
        for p, _addr, _size, segments in coalesce(decoded):
            conn.receive_packet(p, now=self.now, segments=segments)

    def step(self) -> bool:
        """Advance to the next moment anything happens and process it; False when idle."""
        self.flush()
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        due: dict[str, list[bytes]] = {"a": [], "b": []}
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, data = heapq.heappop(self._queue)
            due[dst].append(data)
        for dst in ("a", "b"):
            if due[dst]:
                self._deliver(dst, due[dst])
        for conn in self.conns.values():
            if conn is not None and (t2 := conn.get_timer()) is not None and t2 <= self.now:
                conn.handle_timer(now=self.now)
        self.flush()
        return True

    def run(
        self, until: Callable[[], bool] | None = None, *, what: str = "idle", limit_s: float = 900.0
    ) -> bool:
        """Run until ``until()`` holds (or, without it, until nothing is left to happen).

        A condition that is never met is recorded, not raised, so a broken checkout still
        yields a full trace to compare; ``--write`` refuses to record such a scenario."""
        end = self.now + limit_s
        for _ in range(500_000):
            if until is not None and until():
                return True
            if self.now > end or not self.step():
                break
        if until is None and self.next_time() is None:
            return True
        self.unmet.append(what)
        self.note(f"UNMET {what}")
        return False

    def run_for(self, seconds: float) -> None:
        """Process everything due in the next ``seconds`` of simulated time."""
        end = self.now + seconds
        while True:
            self.flush()
            t = self.next_time()
            if t is None or t > end:
                self.now = end
                return
            self.step()

    def established(self) -> bool:
        return self.a.state is S.ESTABLISHED and self.b.state is S.ESTABLISHED

    def finished(self) -> bool:
        return all(c.is_finished for c in self.ever.values())

    def kill(self, name: str) -> None:
        """The side's process is gone: its host answers every datagram with RST."""
        self.note(f"kill {name}")
        self.conns[name] = None

    def vanish(self, start: float | None = None, end: float = math.inf) -> None:
        """Both directions drop everything from ``start`` (default: now) to ``end``."""
        t = self.now if start is None else start
        for path in self.paths.values():
            path.blackholes.append((t, end))

    def inject(self, dst: str, data: bytes) -> None:
        """A datagram from nowhere (forged, stray) arrives at ``dst`` now."""
        self.note(f"inject >{dst} {data.hex()}")
        conn = self.conns[dst]
        assert conn is not None
        conn.receive_datagram(data, now=self.now)

    def unreachable(self, name: str, quoted: Packet) -> None:
        """An ICMP port unreachable quoting ``quoted`` (one of ``name``'s datagrams) arrives."""
        conn = self.conns[name]
        assert conn is not None
        header = decode_quoted(encode(quoted)[:HEADER_SIZE])
        taken = conn.receive_unreachable(header, now=self.now)
        self.note(f"icmp >{name} seq={quoted.seq} taken={taken}")

    def final(self) -> None:
        """The closing lines: each side's state, close reason, stats and what it received."""
        self.flush()
        for name, conn in self.ever.items():
            reason = conn.close_reason.value if conn.close_reason is not None else None
            self.lines.append(
                f"final {name} state={conn.state.value} reason={reason} "
                f"finished={conn.is_finished} timer={ts(conn.get_timer())}"
            )
            self.lines.append(f"stats {name} {js(conn.stats)}")
            data = bytes(self.received[name])
            self.lines.append(
                f"received {name} len={len(data)} sha={sha(data)[:16]} eof={self.eof[name]} "
                f"closed={self.closed[name]}"
            )
