"""utcp: a reliable, ordered byte stream over UDP, with a sans-I/O core.

The core (``Connection``) never touches a socket or a clock; see docs/PROTOCOL.md for the wire
format.
"""

from __future__ import annotations

# First: it decides whether the compiled build of the core or its sources are imported.
from . import _build  # noqa: F401
from .asyncio import (
    ClientEndpoint,
    Server,
    SocketView,
    StreamWriter,
    UtcpTransport,
    Worker,
    WorkerExit,
    WorkerGroup,
    create_client_endpoint,
    create_connection,
    create_server,
    open_connection,
    run,
    sendfile,
    serve,
    start_server,
    start_tls,
)
from .config import Config
from .connection import Connection, ConnectionStats, reset_for
from .events import (
    CloseReason,
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EofReceived,
    Event,
    FinAcknowledged,
)
from .packet import Flag, Packet, PacketError, decode, encode
from .state import ConnectionState

__version__ = "0.1.0"

__all__ = [
    "CloseReason",
    "Config",
    "Connection",
    "ConnectionClosed",
    "ConnectionEstablished",
    "ConnectionState",
    "ConnectionStats",
    "DataReceived",
    "EofReceived",
    "Event",
    "FinAcknowledged",
    "Flag",
    "Packet",
    "PacketError",
    "ClientEndpoint",
    "Server",
    "SocketView",
    "StreamWriter",
    "UtcpTransport",
    "Worker",
    "WorkerExit",
    "WorkerGroup",
    "__version__",
    "create_client_endpoint",
    "create_connection",
    "create_server",
    "open_connection",
    "run",
    "start_server",
    "sendfile",
    "serve",
    "start_tls",
    "decode",
    "encode",
    "reset_for",
]
