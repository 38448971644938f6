"""Connection traces (docs/TRACE.md): the ``Tracer`` a ``Connection`` reports its events to,
a JSON-lines writer, an in-memory recorder, and the choice of whether a connection is traced.

Free of I/O timing: every event carries the ``now`` the connection was given, and a trace's
``t`` never decreases.  With tracing off a connection holds no tracer at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .log import get_logger
from .packet import Flag, Packet

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "TRACE_ENV",
    "TRACE_VERSION",
    "JsonlTracer",
    "ListTracer",
    "TraceEvent",
    "Tracer",
    "address_text",
    "flags_text",
    "packet_fields",
    "trace_path",
    "tracer_for",
]

TRACE_VERSION = 1
TRACE_ENV = "UTCP_TRACE"  # directory for the traces of connections whose config sets none
FLUSH_EVERY_LINES = 64  # a crash loses at most this many buffered events

_log = get_logger()


class Tracer(Protocol):
    """Receives a connection's events as they happen (names and fields per docs/TRACE.md)."""

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        """One event at time ``now`` (the connection's clock), with its fields."""

    def close(self) -> None:
        """The connection is done with this tracer: release what it holds."""


def _flag_names(bits: int) -> str:
    names = [f.name for f in (Flag.SYN, Flag.FIN, Flag.RST, Flag.ACK) if bits & f]
    return "+".join(str(n) for n in names) or "NONE"


_FLAG_MASK = int(Flag.SYN | Flag.FIN | Flag.RST | Flag.ACK)
_FLAG_TEXT = tuple(_flag_names(bits) for bits in range(_FLAG_MASK + 1))


def flags_text(flags: int) -> str:
    """Flags spelled as the ladder shows them: SYN, FIN, RST, ACK in that order, joined by '+'."""
    return _FLAG_TEXT[flags & _FLAG_MASK]


def packet_fields(p: Packet, wnd: int) -> dict[str, object]:
    """The fields of ``datagram_sent`` and ``datagram_received``; ``wnd`` is already scaled."""
    fields: dict[str, object] = {
        "flags": _FLAG_TEXT[p.flags & _FLAG_MASK],
        "seq": p.seq,
        "ack": p.ack,
        "wnd": wnd,
        "len": len(p.payload),
    }
    if p.sack_blocks:
        fields["sack"] = [[left, right] for left, right in p.sack_blocks]
    if p.probe is not None:
        fields["probe"] = p.probe
        fields["pad"] = p.padding
    if p.probe_ack is not None:
        fields["probe_ack"] = p.probe_ack
    if p.path_challenge is not None:
        fields["path_challenge"] = p.path_challenge
    if p.path_response is not None:
        fields["path_response"] = p.path_response
    return fields


def address_text(addr: object) -> str | None:
    """``host:port`` for a socket address tuple (IPv6 hosts in brackets); strings unchanged."""
    if addr is None or isinstance(addr, str):
        return addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = str(addr[0]), addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)


def trace_path(directory: str | os.PathLike[str], cid: int, role: str, unix_time: float) -> Path:
    """Where a connection's trace goes: ``DIR/utcp-<unix time>-<cid as 8 hex>-<role>.jsonl``."""
    return Path(directory) / f"utcp-{int(unix_time)}-{cid & 0xFFFFFFFF:08x}-{role}.jsonl"


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One recorded event: the connection's ``now``, the event name and its fields."""

    now: float
    name: str
    fields: dict[str, object]


class ListTracer:
    """Keeps every event in memory, in order: for tests, and for programs that inspect a
    connection's history themselves."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.closed = False

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        """Record one event."""
        self.events.append(TraceEvent(now, name, fields))

    def close(self) -> None:
        """Mark the trace finished; the events stay readable."""
        self.closed = True

    def named(self, *names: str) -> list[TraceEvent]:
        """The events with one of the given names, in order."""
        return [e for e in self.events if e.name in names]


class JsonlTracer:
    """Writes one connection's trace file: the header line, then one JSON line per event.

    ``t`` is ``now - t0``, where ``t0`` is given or else the ``now`` of the first event; it is
    rounded to microseconds and never decreases.  Lines are buffered and flushed every
    ``flush_every`` events, at ``connection_closed`` and at ``close()``, so a crash loses at
    most a few events (and perhaps leaves a final line cut short, which readers skip).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: Mapping[str, object],
        *,
        t0: float | None = None,
        flush_every: int = FLUSH_EVERY_LINES,
    ) -> None:
        self.path = Path(path)
        self._t0 = t0
        self._last_t = 0.0
        self._flush_every = max(1, flush_every)
        self._unflushed = 0
        self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._file.write(json.dumps({"trace": "utcp", "version": TRACE_VERSION, **header}) + "\n")
        self._file.flush()  # the header is there as soon as the connection starts

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called; later events are ignored."""
        return self._file is None

    def event(self, now: float, name: str, fields: dict[str, object]) -> None:
        """Append one event line."""
        f = self._file
        if f is None:
            return
        if self._t0 is None:
            self._t0 = now
        t = round(now - self._t0, 6)
        if t < self._last_t:
            t = self._last_t
        self._last_t = t
        f.write(json.dumps({"t": t, "ev": name, **fields}) + "\n")
        self._unflushed += 1
        if self._unflushed >= self._flush_every or name == "connection_closed":
            self._unflushed = 0
            f.flush()

    def close(self) -> None:
        """Flush and close the file; safe to call more than once."""
        f = self._file
        if f is not None:
            self._file = None
            f.close()


def tracer_for(
    config: Config,
    *,
    cid: int,
    role: str,
    local: object,
    peer: object,
    iss: int,
    mss: int,
    congestion: str,
    unix_time: float,
    now: float | None = None,
    env: Mapping[str, str] = os.environ,
) -> JsonlTracer | None:
    """The tracer for a new connection, or None when tracing is off.

    The directory is ``config.trace_dir``, else the ``UTCP_TRACE`` environment variable; it is
    created if missing.  ``unix_time`` is the wall-clock time that becomes ``reference_time``,
    and ``now`` the connection's clock at that same moment (``t = 0``); ``local`` and ``peer``
    are socket addresses or ``host:port`` strings.  A trace is a diagnostic aid, so a file that
    cannot be created is logged and the connection runs untraced rather than failing.
    """
    directory = config.trace_dir or env.get(TRACE_ENV) or None
    if directory is None:
        return None
    if role not in ("client", "server"):
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    header: dict[str, Any] = {
        "cid": f"{cid & 0xFFFFFFFF:08x}",
        "role": role,
        "local": address_text(local),
        "peer": address_text(peer),
        "reference_time": unix_time,
        "iss": iss,
        "mss": mss,
        "congestion": congestion,
    }
    path = trace_path(directory, cid, role, unix_time)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JsonlTracer(path, header, t0=now)
    except OSError as exc:
        _log.warning("trace_unavailable", path=str(path), error=str(exc))
        return None
