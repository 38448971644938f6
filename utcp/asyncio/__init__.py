"""The thin asyncio layer: one endpoint per UDP socket, a Transport per connection, and the
streams and protocol APIs shaped like asyncio's own."""

from __future__ import annotations

from .endpoint import Endpoint
from .streams import (
    ClientEndpoint,
    Server,
    create_client_endpoint,
    create_connection,
    create_server,
    open_connection,
    run,
    start_server,
)
from .transport import UtcpTransport

__all__ = [
    "Endpoint",
    "ClientEndpoint",
    "Server",
    "UtcpTransport",
    "create_client_endpoint",
    "create_connection",
    "create_server",
    "open_connection",
    "run",
    "start_server",
]
