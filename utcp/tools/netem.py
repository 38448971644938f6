"""A userspace UDP relay that impairs real traffic each way: loss, delay, jitter, duplication,
corruption, reordering, a rate-limited bottleneck with a tail-drop queue, a blackhole, and a
path MTU that silently drops larger datagrams.

It owns one listening socket and one upstream socket per client (a NAT-like mapping, so replies
reach the right client).  Random decisions come from one seeded RNG per direction and never
depend on timing; memory stays bounded by the bottleneck queue, the delay line and the mapping cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import socket
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..log import get_logger

__all__ = ["DirectionCounters", "Impairment", "Relay", "RelayCounters"]

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)

MAX_DATAGRAM_BYTES = 65535  # read buffer: any UDP payload (65507 over IPv4) fits whole
DELAY_LINE_MAX_BYTES = 32 << 20  # per direction; beyond it arrivals count as dropped_queue
_READ_BATCH = 64  # datagrams read per readiness callback, so no socket starves the others
_LINE_OVERHEAD_BYTES = 64  # charged per delayed datagram, so empty ones cannot pile up freely
_SOCKET_BUFFER_BYTES = 4 << 20  # best effort: bursts should queue here, not be dropped by us

_log = get_logger(component="netem")


@dataclass(frozen=True)
class Impairment:
    """What one direction of the path does to datagrams.  Fractions are in [0, 1].

    ``rate_bps`` turns on a bottleneck that serialises datagrams at that rate behind a FIFO of at
    most ``queue_bytes`` (tail drop); delay, jitter and the reorder extra apply after it.
    ``blackhole`` is ``(start_s, length_s)`` after the relay starts: everything inside is dropped.
    ``mtu`` is the largest datagram (UDP payload bytes) forwarded; larger ones vanish without a
    word, as on a path whose MTU is smaller and that sends no ICMP (a PMTU black hole).
    """

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_extra_s: float = 0.030
    rate_bps: float | None = None
    queue_bytes: int = 64 * 1024
    blackhole: tuple[float, float] | None = None
    mtu: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "dup", "corrupt", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], not {value!r}")
        for name in ("delay_s", "jitter_s", "reorder_extra_s"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        if self.rate_bps is not None and not self.rate_bps > 0:
            raise ValueError(f"rate_bps must be positive or None, not {self.rate_bps!r}")
        if self.queue_bytes < 0:
            raise ValueError(f"queue_bytes must be >= 0, not {self.queue_bytes!r}")
        if self.blackhole is not None and not (self.blackhole[0] >= 0 and self.blackhole[1] >= 0):
            raise ValueError(f"blackhole needs start and length >= 0, not {self.blackhole!r}")
        if self.mtu is not None and not self.mtu > 0:
            raise ValueError(f"mtu must be positive or None, not {self.mtu!r}")


@dataclass
class DirectionCounters:
    """What happened to the datagrams of one direction.

    Every copy ends as ``forwarded`` or one ``dropped_*``, so once the relay is idle or closed
    ``forwarded + sum(dropped_*) == received + duplicated``.  ``corrupted`` and ``reordered``
    count copies that got past the queue with that treatment.
    """

    received: int = 0
    bytes_received: int = 0
    forwarded: int = 0  # copies handed to the socket
    bytes_forwarded: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0  # bottleneck queue (or the delay line) full: tail drop
    dropped_blackhole: int = 0
    dropped_too_big: int = 0  # larger than the mtu
    dropped_send: int = 0  # socket refused it or its buffer was full; mapping or relay closed
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    errors: int = 0  # socket errors seen on this direction's sending or receiving socket

    def line(self) -> str:
        """``received=... forwarded=... ...``: every counter on one line."""
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())


@dataclass
class RelayCounters:
    """Per-direction counters (``up`` is client -> server) and the client mappings' history."""

    up: DirectionCounters = field(default_factory=DirectionCounters)
    down: DirectionCounters = field(default_factory=DirectionCounters)
    mappings_created: int = 0
    mappings_expired: int = 0  # idle for idle_timeout_s
    mappings_evicted: int = 0  # least recently used, to make room under max_clients
    rebinds: int = 0  # times every mapping moved to a new upstream port (rebind())


class _Mapping:
    """One client's upstream socket, connected to the relay's destination."""

    __slots__ = ("client", "closed", "last_active", "sock")

    def __init__(self, client: Address, sock: socket.socket, now: float) -> None:
        self.client = client
        self.sock = sock
        self.last_active = now
        self.closed = False


class _Copy(NamedTuple):
    payload: bytes
    extra_s: float  # jitter plus any reorder extra, on top of the propagation delay
    corrupted: bool
    reordered: bool


class _Direction:
    """One direction's impairment state: its RNG, bottleneck FIFO and delay line."""

    def __init__(self, name: str, imp: Impairment, seed: int, counters: DirectionCounters) -> None:
        self.name = name
        self.imp = imp
        self.rng = random.Random(f"utcp-netem:{seed}:{name}")  # str seeds hash stably (SHA-512)
        self.counters = counters
        # Bottleneck: (finish time, size) of datagrams not yet fully serialised, oldest first.
        self.fifo: deque[tuple[float, int]] = deque()
        self.fifo_bytes = 0
        self.link_free_at = 0.0
        # Delay line: (deliver at, order, payload, mapping), earliest first; one timer for it.
        self.line: list[tuple[float, int, bytes, _Mapping]] = []
        self.line_bytes = 0
        self.order = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def draw(self, data: bytes) -> list[_Copy] | None:
        """The random fate of one datagram: None if lost, else the copies to send.

        Only the RNG decides here, so a seed gives the same fates for the same datagram sequence
        whatever the timing; the counters are updated by the caller once timing has had its say.
        """
        imp, rng = self.imp, self.rng
        if imp.loss and rng.random() < imp.loss:
            return None
        copies = 2 if imp.dup and rng.random() < imp.dup else 1
        out = []
        for _ in range(copies):
            payload, corrupted, reordered = data, False, False
            if imp.corrupt and rng.random() < imp.corrupt and data:
                buf = bytearray(data)
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
                payload, corrupted = bytes(buf), True
            extra_s = rng.uniform(0.0, imp.jitter_s) if imp.jitter_s else 0.0
            if imp.reorder and rng.random() < imp.reorder:
                extra_s += rng.uniform(0.0, imp.reorder_extra_s)
                reordered = True
            out.append(_Copy(payload, extra_s, corrupted, reordered))
        return out

    def admit(self, size: int, now: float) -> float | None:
        """When the bottleneck finishes sending ``size`` bytes arriving now (None: tail drop)."""
        rate = self.imp.rate_bps
        if rate is None:
            return now
        fifo = self.fifo
        while fifo and fifo[0][0] <= now:
            self.fifo_bytes -= fifo.popleft()[1]
        charge = max(size, 1)  # an empty datagram still takes a slot: the FIFO stays bounded
        if self.fifo_bytes + charge > self.imp.queue_bytes:
            return None
        finish = max(now, self.link_free_at) + size * 8 / rate
        self.link_free_at = finish
        fifo.append((finish, charge))
        self.fifo_bytes += charge
        return finish


class Relay:
    """A UDP relay from ``address`` to ``destination``, impairing each direction.

    Start one with ``await Relay.start(...)``; stop it with ``close()`` (or ``async with``).
    ``counters`` says what happened, ``seed`` replays it, ``started_at`` (loop time) is where
    blackhole intervals count from.  Needs a loop with ``add_reader`` (any Unix loop, uvloop).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        to: tuple[socket.AddressFamily, Address],
        *,
        up: Impairment,
        down: Impairment,
        seed: int,
        max_clients: int,
        idle_timeout_s: float,
        rebind_every_s: float | None = None,
    ) -> None:
        self._loop = loop
        self._listener = listener
        self._family, self._to = to
        self.seed = seed
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.started_at = loop.time()
        self.counters = RelayCounters()
        self._up = _Direction("up", up, seed, self.counters.up)
        self._down = _Direction("down", down, seed, self.counters.down)
        self._mappings: OrderedDict[Address, _Mapping] = OrderedDict()  # least recent first
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._stale: list[socket.socket] = []  # upstream sockets left behind by rebind()
        self.rebind_every_s = rebind_every_s
        self._rebinder: asyncio.TimerHandle | None = None
        loop.add_reader(listener.fileno(), self._on_listener_readable)
        self._arm_sweeper()
        if rebind_every_s is not None:
            self._rebinder = loop.call_later(rebind_every_s, self._rebind_again)

    @classmethod
    async def start(
        cls,
        listen: tuple[str, int],
        to: tuple[str, int],
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int | None = None,
        max_clients: int = 1024,
        idle_timeout_s: float = 60.0,
        rebind_every_s: float | None = None,
    ) -> Relay:
        """Bind ``listen`` (port 0 picks one: read ``address``) and relay to ``to``.

        ``seed=None`` picks a random seed, kept in ``seed`` so a run can be replayed.
        ``rebind_every_s``: every so often each client's datagrams leave from a new port, as
        when a NAT rebinds (``rebind()``).
        """
        if rebind_every_s is not None and not rebind_every_s > 0:
            raise ValueError(f"rebind_every_s must be positive, not {rebind_every_s!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, not {max_clients!r}")
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be positive, not {idle_timeout_s!r}")
        loop = asyncio.get_running_loop()
        if seed is None:
            seed = random.SystemRandom().getrandbits(32)
        dest = await _resolve(loop, to, passive=False)
        local = await _resolve(loop, listen, passive=True)
        listener = socket.socket(local[0], socket.SOCK_DGRAM)
        try:
            listener.setblocking(False)
            _grow_buffers(listener)
            listener.bind(local[1])
            relay = cls(
                loop,
                listener,
                dest,
                up=up or Impairment(),
                down=down or Impairment(),
                seed=seed,
                max_clients=max_clients,
                idle_timeout_s=idle_timeout_s,
                rebind_every_s=rebind_every_s,
            )
        except BaseException:
            listener.close()
            raise
        _log.info(
            "relay_started",
            listen=_format(relay.address),
            to=_format(dest[1]),
            seed=seed,
            up=str(relay.up_impairment),
            down=str(relay.down_impairment),
        )
        return relay

    # ------------------------------------------------------------------ public

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address (host, port)."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def destination(self) -> tuple[str, int]:
        """The resolved address datagrams from clients are relayed to."""
        return self._to[0], self._to[1]

    @property
    def up_impairment(self) -> Impairment:
        """What datagrams from the clients to the destination go through."""
        return self._up.imp

    @property
    def down_impairment(self) -> Impairment:
        """What datagrams from the destination back to the clients go through."""
        return self._down.imp

    @property
    def clients(self) -> int:
        """The number of client mappings alive now."""
        return len(self._mappings)

    def close(self) -> None:
        """Stop relaying at once: datagrams still queued or delayed are discarded."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._rebinder is not None:
            self._rebinder.cancel()
        for sock in self._stale:
            sock.close()
        self._stale.clear()
        for d in (self._up, self._down):
            if d.timer is not None:
                d.timer.cancel()
            d.counters.dropped_send += len(d.line)  # still on the way: the relay goes away
            d.line.clear()
            d.line_bytes = 0
        for mapping in list(self._mappings.values()):
            self._close_mapping(mapping)
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        _log.info("relay_closed", up=self.counters.up.line(), down=self.counters.down.line())

    def rebind(self) -> None:
        """Move every client mapping to a new upstream socket, so that the destination sees
        each client's datagrams come from a new port, as when a NAT rebinds.  The old socket
        stays open and unread until the relay closes: what the destination still sends to the
        old port is lost without an ICMP error, as at a NAT that forgot the binding."""
        for mapping in list(self._mappings.values()):
            sock = self._upstream_socket(mapping.client)
            if sock is None:
                continue
            self._loop.remove_reader(mapping.sock.fileno())
            self._stale.append(mapping.sock)
            mapping.sock = sock
            self._loop.add_reader(sock.fileno(), self._on_upstream_readable, mapping)
        self.counters.rebinds += 1
        _log.info("relay_rebound", clients=len(self._mappings), rebinds=self.counters.rebinds)

    def _rebind_again(self) -> None:
        self.rebind()
        if not self._closed and self.rebind_every_s is not None:
            self._rebinder = self._loop.call_later(self.rebind_every_s, self._rebind_again)

    async def wait_closed(self) -> None:
        """Return once closed (closing is immediate: there is nothing to flush)."""
        await asyncio.sleep(0)

    async def __aenter__(self) -> Relay:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # ------------------------------------------------------------------ receiving

    def _on_listener_readable(self) -> None:
        c = self.counters.up
        for _ in range(_READ_BATCH):
            try:
                data, client = self._listener.recvfrom(MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                c.errors += 1
                _log.debug("socket_error", direction="up", op="recvfrom", error=repr(exc))
                continue
            mapping = self._mappings.get(client)
            now = self._loop.time()
            if mapping is None:
                mapping = self._open_mapping(client, now)
                if mapping is None:
                    c.received += 1
                    c.bytes_received += len(data)
                    c.dropped_send += 1
                    continue
            else:
                mapping.last_active = now
                self._mappings.move_to_end(client)
            self._arrive(self._up, data, mapping, now)

    def _on_upstream_readable(self, mapping: _Mapping) -> None:
        c = self.counters.down
        for _ in range(_READ_BATCH):
            try:
                data = mapping.sock.recv(MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable from the destination, reported here
                c.errors += 1
                _log.debug("socket_error", direction="down", op="recv", error=repr(exc))
                continue
            now = self._loop.time()
            mapping.last_active = now
            self._mappings.move_to_end(mapping.client)
            self._arrive(self._down, data, mapping, now)

    # ------------------------------------------------------------------ the impairment path

    def _arrive(self, d: _Direction, data: bytes, mapping: _Mapping, now: float) -> None:
        c = d.counters
        c.received += 1
        c.bytes_received += len(data)
        fate = d.draw(data)
        bh = d.imp.blackhole
        if bh is not None and bh[0] <= now - self.started_at < bh[0] + bh[1]:
            c.dropped_blackhole += 1
            return
        if d.imp.mtu is not None and len(data) > d.imp.mtu:
            c.dropped_too_big += 1
            return
        if fate is None:
            c.dropped_loss += 1
            return
        if len(fate) > 1:
            c.duplicated += 1
        for payload, extra_s, corrupted, reordered in fate:
            sent_at = d.admit(len(payload), now)
            if sent_at is None:
                c.dropped_queue += 1
                continue
            at = sent_at + d.imp.delay_s + extra_s
            if at > now and d.line_bytes + _line_cost(payload) > DELAY_LINE_MAX_BYTES:
                c.dropped_queue += 1
                continue
            c.corrupted += corrupted
            c.reordered += reordered
            if at <= now:
                self._send(d, payload, mapping)
            else:
                self._delay(d, at, payload, mapping)

    def _delay(self, d: _Direction, at: float, payload: bytes, mapping: _Mapping) -> None:
        d.order += 1
        heapq.heappush(d.line, (at, d.order, payload, mapping))
        d.line_bytes += _line_cost(payload)
        if d.timer is None or at < d.timer_at:
            if d.timer is not None:
                d.timer.cancel()
            d.timer = self._loop.call_at(at, self._on_line_due, d)
            d.timer_at = at

    def _on_line_due(self, d: _Direction) -> None:
        d.timer = None
        now = self._loop.time()
        line = d.line
        while line and line[0][0] <= now:  # a timer may fire a little early: never deliver early
            _, _, payload, mapping = heapq.heappop(line)
            d.line_bytes -= _line_cost(payload)
            self._send(d, payload, mapping)
        if line and not self._closed:
            d.timer = self._loop.call_at(line[0][0], self._on_line_due, d)
            d.timer_at = line[0][0]

    def _send(self, d: _Direction, payload: bytes, mapping: _Mapping) -> None:
        c = d.counters
        try:
            if d is self._up:
                if mapping.closed:
                    c.dropped_send += 1
                    return
                mapping.sock.send(payload)
            else:
                if self._closed:
                    c.dropped_send += 1
                    return
                self._listener.sendto(payload, mapping.client)
        except (BlockingIOError, InterruptedError):
            c.dropped_send += 1  # the socket buffer is full: a real queue would drop it too
            return
        except OSError as exc:
            c.dropped_send += 1
            c.errors += 1
            _log.debug("socket_error", direction=d.name, op="send", error=repr(exc))
            return
        c.forwarded += 1
        c.bytes_forwarded += len(payload)

    # ------------------------------------------------------------------ client mappings

    def _open_mapping(self, client: Address, now: float) -> _Mapping | None:
        if len(self._mappings) >= self.max_clients:
            _, oldest = self._mappings.popitem(last=False)
            self._close_mapping(oldest)
            self.counters.mappings_evicted += 1
            _log.info("mapping_evicted", client=_format(oldest.client), max=self.max_clients)
        sock = self._upstream_socket(client)
        if sock is None:
            return None
        mapping = _Mapping(client, sock, now)
        self._mappings[client] = mapping
        self._loop.add_reader(sock.fileno(), self._on_upstream_readable, mapping)
        self.counters.mappings_created += 1
        _log.debug("mapping_opened", client=_format(client), via=_format(sock.getsockname()))
        return mapping

    def _upstream_socket(self, client: Address) -> socket.socket | None:
        """A new socket towards the destination for ``client``'s datagrams (None: failed)."""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_buffers(sock)
            sock.connect(self._to)  # UDP: no handshake, only sets the default peer
        except OSError as exc:
            sock.close()
            self.counters.up.errors += 1
            _log.warning("mapping_failed", client=_format(client), error=repr(exc))
            return None
        return sock

    def _close_mapping(self, mapping: _Mapping) -> None:
        if mapping.closed:
            return
        mapping.closed = True
        if self._mappings.get(mapping.client) is mapping:
            del self._mappings[mapping.client]
        self._loop.remove_reader(mapping.sock.fileno())
        mapping.sock.close()

    def _arm_sweeper(self) -> None:
        interval = max(self.idle_timeout_s / 4, 0.01)
        self._sweeper = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        while self._mappings:
            mapping = next(iter(self._mappings.values()))
            if now - mapping.last_active < self.idle_timeout_s:
                break
            self._close_mapping(mapping)
            self.counters.mappings_expired += 1
            _log.debug("mapping_expired", client=_format(mapping.client))
        if not self._closed:
            self._arm_sweeper()


async def _resolve(
    loop: asyncio.AbstractEventLoop, hostport: tuple[str, int], *, passive: bool
) -> tuple[socket.AddressFamily, Address]:
    host, port = hostport
    infos = await loop.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_DGRAM,
        flags=socket.AI_PASSIVE if passive else 0,
    )
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned no addresses")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # prefer IPv4, as utcp's streams do
    family, _, _, _, addr = infos[0]
    return family, addr


def _line_cost(payload: bytes) -> int:
    return len(payload) + _LINE_OVERHEAD_BYTES


def _grow_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER_BYTES)


def _format(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
