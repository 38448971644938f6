"""The thin asyncio layer: one endpoint per UDP socket, a Transport per connection, and the
streams and protocol APIs shaped like asyncio's own."""

from __future__ import annotations

from .endpoint import Endpoint
from .sendfile import sendfile
from .server import Server, create_server
from .sockview import SocketView
from .streams import (
    ClientEndpoint,
    create_client_endpoint,
    create_connection,
    open_connection,
    run,
    start_server,
)
from .tls import StreamWriter, start_tls
from .transport import UtcpTransport
from .workers import Worker, WorkerExit, WorkerGroup, serve

__all__ = [
    "Endpoint",
    "ClientEndpoint",
    "Server",
    "SocketView",
    "StreamWriter",
    "UtcpTransport",
    "Worker",
    "WorkerExit",
    "WorkerGroup",
    "create_client_endpoint",
    "create_connection",
    "create_server",
    "open_connection",
    "run",
    "start_server",
    "sendfile",
    "serve",
    "start_tls",
]
