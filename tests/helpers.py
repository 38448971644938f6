"""Deterministic test harness: a fake clock and a seeded, impairable network between two
sans-I/O connections.

Nothing here sleeps or reads the wall clock: ``Network.run`` jumps simulated time straight to the
next delivery or timer deadline, so a 60-second scenario runs in milliseconds and repeats exactly
for the same seed.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from utcp.connection import Connection, reset_for
from utcp.events import ConnectionClosed, DataReceived, EofReceived, Event
from utcp.packet import Flag, Packet, PacketError, decode
from utcp.state import ESTABLISHED

# The keepalive and idle timers of the defaults (Config: keepalive_idle_s, keepalive_stall_s,
# idle_timeout_s) turned off, as they were before they became defaults.  For tests about some
# other mechanism that assert exact timer deadlines, exact datagram ladders or that a network
# goes idle: those timers would add deadlines, probes and, after 30 s, an IDLE close.  Use as
# ``Config(pmtud=False, **QUIET)``.
QUIET: dict[str, Any] = {
    "keepalive_idle_s": None,
    "keepalive_stall_s": None,
    "idle_timeout_s": None,
}


@dataclass
class Link:
    """One direction of a fake path: delay, jitter, loss, duplication, corruption, reordering.

    ``drop`` is an optional predicate on (index, packet) for scripted single losses; ``blackhole``
    is a (start, end) interval of simulated time during which everything is dropped.  ``mtu``
    is the largest datagram the link carries (None: any), silently dropping larger ones as a
    path MTU black hole does; ``mtu_changes`` lists (time, new mtu) steps, in time order.
    """

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    delay_s: float = 0.010
    jitter_s: float = 0.0
    loss: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_extra_s: float = 0.030
    blackhole: tuple[float, float] | None = None
    drop: Callable[[int, Packet], bool] | None = None
    mtu: int | None = None
    mtu_changes: tuple[tuple[float, int | None], ...] = ()
    sent: int = 0
    dropped: int = 0
    too_big: int = 0  # of ``dropped``: larger than the mtu in force
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0

    def mtu_at(self, now: float) -> int | None:
        """The largest datagram the link carries at ``now``."""
        limit = self.mtu
        for t, value in self.mtu_changes:
            if t <= now:
                limit = value
        return limit

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """Arrivals (time, bytes) for one datagram put on this link at ``now``."""
        index = self.sent
        self.sent += 1
        if self.drop is not None and self.drop(index, decode(data)):
            self.dropped += 1
            return []
        if self.blackhole is not None and self.blackhole[0] <= now < self.blackhole[1]:
            self.dropped += 1
            return []
        limit = self.mtu_at(now)
        if limit is not None and len(data) > limit:
            self.dropped += 1
            self.too_big += 1
            return []
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return []
        copies = 1
        if self.dup and rng.random() < self.dup:
            copies = 2
            self.duplicated += 1
        out = []
        for _ in range(copies):
            payload = data
            if self.corrupt and rng.random() < self.corrupt:
                self.corrupted += 1
                buf = bytearray(data)
                i = rng.randrange(len(buf))
                buf[i] ^= 1 << rng.randrange(8)
                payload = bytes(buf)
            t = now + self.delay_s
            if self.jitter_s:
                t += rng.uniform(0, self.jitter_s)
            if self.reorder and rng.random() < self.reorder:
                self.reordered += 1
                t += rng.uniform(0, self.reorder_extra_s)
            out.append((t, payload))
        return out


@dataclass
class BottleneckLink(Link):
    """A ``Link`` behind a bottleneck: datagrams are serialised at ``rate_bps`` through a
    first-in first-out queue of at most ``queue_packets`` (tail drop), then delayed and
    impaired as a ``Link``; ``queue_dropped`` counts what the full queue refused."""

    rate_bps: float = 10e6
    queue_packets: int = 50
    queue_dropped: int = 0
    busy_until: float = 0.0
    departures: list[float] = field(default_factory=list)

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        waiting = [t for t in self.departures if t > now]
        if len(waiting) >= self.queue_packets:
            self.sent += 1
            self.dropped += 1
            self.queue_dropped += 1
            return []
        departure = max(now, self.busy_until) + len(data) * 8 / self.rate_bps
        self.busy_until = departure
        waiting.append(departure)
        self.departures = waiting
        return super().transmit(data, departure)


@dataclass
class Side:
    """What one application end saw: its events and the bytes delivered to it."""

    conn: Connection | None
    events: list[Event] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    closed: ConnectionClosed | None = None


@dataclass
class Sent:
    """A datagram as it left a side, for ladder assertions."""

    time: float
    src: str
    packet: Packet


class Network:
    """Two connections ``a`` and ``b`` joined by two ``Link``s on a simulated timeline.

    A side whose connection is None answers everything with RST, as a host where nobody listens.
    """

    def __init__(
        self,
        a: Connection,
        b: Connection | None,
        *,
        a_to_b: Link | None = None,
        b_to_a: Link | None = None,
        now: float = 0.0,
    ) -> None:
        self.now = now
        self.sides = {"a": Side(a), "b": Side(b)}
        self.links = {"a": a_to_b or Link(), "b": b_to_a or Link()}
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = 0
        self.trace: list[Sent] = []
        self.on_step: Callable[[Network], None] | None = None

    @property
    def a(self) -> Side:
        return self.sides["a"]

    @property
    def b(self) -> Side:
        return self.sides["b"]

    def _other(self, name: str) -> str:
        return "b" if name == "a" else "a"

    def flush(self) -> None:
        """Put every datagram the connections want to send on the wire; collect events."""
        for name, side in self.sides.items():
            conn = side.conn
            if conn is None:
                continue
            for data in conn.datagrams_to_send(now=self.now):
                self._put(name, data)
            while (ev := conn.next_event()) is not None:
                side.events.append(ev)
                if isinstance(ev, DataReceived):
                    side.received += ev.data
                elif isinstance(ev, EofReceived):
                    side.eof = True
                elif isinstance(ev, ConnectionClosed):
                    side.closed = ev

    def _put(self, src: str, data: bytes) -> None:
        try:
            self.trace.append(Sent(self.now, src, decode(data)))
        except PacketError:  # pragma: no cover - the connections only send valid packets
            raise
        for t, payload in self.links[src].transmit(data, self.now):
            self._order += 1
            heapq.heappush(self._queue, (t, self._order, self._other(src), payload))

    def next_time(self) -> float | None:
        """The next moment anything happens: a delivery or a timer deadline."""
        times = [self._queue[0][0]] if self._queue else []
        for side in self.sides.values():
            if side.conn is not None and (t := side.conn.get_timer()) is not None:
                times.append(t)
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next moment and process it; False when nothing is left to happen."""
        self.flush()
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, data = heapq.heappop(self._queue)
            conn = self.sides[dst].conn
            if conn is None:
                try:
                    rst = reset_for(decode(data))
                except PacketError:
                    rst = None
                if rst is not None:
                    self._put(dst, rst)
            else:
                conn.receive_datagram(data, now=self.now)
        for side in self.sides.values():
            conn = side.conn
            if conn is not None and (t2 := conn.get_timer()) is not None and t2 <= self.now:
                conn.handle_timer(now=self.now)
        if self.on_step is not None:
            self.on_step(self)
        self.flush()
        return True

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        max_time: float = 600.0,
        max_steps: int = 2_000_000,
    ) -> None:
        """Run until ``until()`` holds, nothing is left to do, or a limit is hit (an error)."""
        start = self.now
        for _ in range(max_steps):
            if until is not None and until():
                return
            if self.now - start > max_time:
                raise AssertionError(f"scenario still running after {max_time} simulated seconds")
            if not self.step():
                if until is not None and not until():
                    raise AssertionError("network went idle before the condition held")
                return
        raise AssertionError(f"scenario still running after {max_steps} steps")

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


def pair(
    *,
    config_a: object = None,
    config_b: object = None,
    isn_a: int | None = 1000,
    isn_b: int | None = 5000,
    cid_a: int = 0xA,
    cid_b: int = 0xB,
    a_to_b: Link | None = None,
    b_to_a: Link | None = None,
    connect: bool = True,
) -> Network:
    """A client ``a`` and a listening server ``b`` on a fake network; the client connects."""
    from utcp.config import Config

    ca = config_a if isinstance(config_a, Config) else Config()
    cb = config_b if isinstance(config_b, Config) else Config()
    a = Connection(ca, local_cid=cid_a, isn=isn_a)
    b = Connection(cb, local_cid=cid_b, isn=isn_b)
    b.listen()
    net = Network(a, b, a_to_b=a_to_b, b_to_a=b_to_a)
    if connect:
        a.connect(now=net.now)
    return net


def bottleneck_pair(
    config: object,
    *,
    rate_bps: float,
    delay_s: float,
    queue_packets: int = 50,
    loss: float = 0.0,
    seed: int = 1,
) -> tuple[Network, list[BottleneckLink]]:
    """``pair`` with both ends built from ``config`` and a ``BottleneckLink`` each way (their
    random loss seeded ``seed`` and ``seed + 100``); the links, a to b first."""
    links = [
        BottleneckLink(
            rng=random.Random(seed + k),
            delay_s=delay_s,
            loss=loss,
            rate_bps=rate_bps,
            queue_packets=queue_packets,
        )
        for k in (0, 100)
    ]
    net = pair(config_a=config, config_b=config, a_to_b=links[0], b_to_a=links[1])
    return net, links


def timed_transfer(
    receiver: object, size: int, *, delay_s: float = 0.010
) -> tuple[float, Connection]:
    """Send ``size`` zero bytes from a default client to a server built from ``receiver``
    over links of ``delay_s`` each way; the time from the send to the last byte delivered
    (checked intact), and the server's connection."""
    from utcp.config import Config

    net = pair(
        config_a=Config(**QUIET),
        config_b=receiver,
        a_to_b=Link(delay_s=delay_s),
        b_to_a=Link(delay_s=delay_s),
    )
    a, b = establish(net)
    start = net.now
    a.send(bytes(size))
    net.run(until=lambda: len(net.b.received) >= size, max_time=600)
    assert bytes(net.b.received) == bytes(size)
    return net.now - start, b


def conns(net: Network) -> tuple[Connection, Connection]:
    """The pair's two connections, a (the client) first."""
    a, b = net.a.conn, net.b.conn
    assert a is not None and b is not None
    return a, b


def establish(net: Network) -> tuple[Connection, Connection]:
    """Run the pair until both ends are ESTABLISHED; return them, a first."""
    a, b = conns(net)
    net.run(until=lambda: a.state is ESTABLISHED and b.state is ESTABLISHED)
    return a, b


def ladder(net: Network) -> list[tuple[str, str, int, int]]:
    """The trace as (src, flags, seq, ack) tuples, flags spelled like 'SYN|ACK'."""
    out = []
    for sent in net.trace:
        p = sent.packet
        names = [str(f.name) for f in (Flag.SYN, Flag.FIN, Flag.RST, Flag.ACK) if p.flags & f]
        out.append((sent.src, "|".join(names), p.seq, p.ack))
    return out


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Configure structlog to collect every event into a list, then restore the defaults."""
    events: list[dict[str, Any]] = []

    def capture(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        events.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    try:
        yield events
    finally:
        structlog.reset_defaults()
