"""What the asyncio endpoint and a connection's transport know of each other, and nothing more.

Both import this module and neither imports the other's (the endpoint makes transports, so it
imports ``transport``; the transport sees its endpoint only as a ``TransportHost``): no import
cycle, and every call across is a public method named here.  ``ConnectionHandle`` is the record
of one connection they share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from ..config import Config
from ..connection import Connection
from ..endpoint import Address, Route
from ..events import CloseReason
from .dgram import DatagramIO, Local

__all__ = ["ConnectionHandle", "StreamSink", "TransportHost"]


class StreamSink(Protocol):
    """A connection's transport as the endpoint drives it: what the connection reports,
    passed on to the application's protocol."""

    @property
    def lost(self) -> bool:
        """The application is done with the connection (``connection_lost`` is due or done)."""
        ...

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Give the connection its protocol: ``connection_made``, then anything held back."""
        ...

    def deliver_data(self, data: bytes | memoryview) -> None:
        """Bytes arrived in order: to the protocol's ``data_received``."""
        ...

    def deliver_eof(self) -> None:
        """The peer's FIN: to the protocol's ``eof_received``."""
        ...

    def fin_acknowledged(self) -> None:
        """The peer acknowledged our FIN."""
        ...

    def connection_closed(self, exc: Exception | None, reason: CloseReason | None) -> None:
        """The connection ended: ``connection_lost(exc)`` follows."""
        ...

    def update_flow_control(self) -> None:
        """The bytes in flight changed: pause or resume the protocol's writing."""
        ...


class TransportHost(Protocol):
    """The endpoint as a connection's transport uses it."""

    config: Config

    @property
    def transport(self) -> DatagramIO | None:
        """The UDP transport, None once closed."""
        ...

    def now(self) -> float:
        """The clock the connections run on."""
        ...

    def schedule_flush(self, handle: ConnectionHandle) -> None:
        """Send what the connection has once this loop iteration ends."""
        ...

    def send_now(self, handle: ConnectionHandle) -> None:
        """Send what the connection has at once."""
        ...

    def service(self, handle: ConnectionHandle) -> None:
        """Deliver events, send datagrams and re-arm the timer, after any input."""
        ...

    def transport_released(self, handle: ConnectionHandle) -> None:
        """The transport gave up the connection before it ended."""
        ...

    def call_when_released(
        self, callback: Callable[..., object], *args: Any, finished: bool = True
    ) -> None:
        """Call ``callback(*args)`` soon, once the socket is released if it is going."""
        ...

    async def migrate(self, local_addr: Any = None) -> None:
        """Move the endpoint's connections to a new UDP socket (a client endpoint only)."""
        ...


class ConnectionHandle(Route):
    """The asyncio endpoint's record of one connection: the core endpoint's ``Route`` (the
    connection, its peer address) with the loop timer, the connect() waiter and the
    transport."""

    __slots__ = (
        "deadline",
        "established",
        "flush_scheduled",
        "forgotten",
        "in_batch",
        "last_sent",
        "local",
        "tail_scheduled",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, conn: Connection, addr: Address) -> None:
        super().__init__(conn, addr)
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.transport: StreamSink | None = None  # once established
        self.waiter: asyncio.Future[None] | None = None  # connect() waits on it
        self.flush_scheduled = False
        self.tail_scheduled = False  # a service() after the application's turn
        self.in_batch = False  # already due a service() at the end of a received batch
        self.forgotten = False
        self.established = False
        self.last_sent: bytes | None = None
        # The local address the peer sends to, where the socket receives for several (bound
        # to a wildcard address): replies leave from it.
        self.local: Local | None = None
