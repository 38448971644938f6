"""What ``transport.get_extra_info("socket")`` hands out: a view of the UDP socket that many
connections share, which can be inspected and tuned but never closed, shut down or read from
(asyncio's ``TransportSocket`` is the model).  One handler closing the real socket would end
every connection of its server while the server still said it was serving.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = ["SocketView"]


class SocketView:
    """A connection's view of its endpoint's UDP socket.

    ``family``, ``type``, ``proto``, ``fileno()``, ``getsockopt()`` and ``setsockopt()``
    reach the shared socket; ``getpeername()`` and ``getsockname()`` answer with the
    connection's own addresses where it has them (``names``: its transport, whose
    ``peername`` follows a peer that moved and whose ``sockname`` is the address the peer
    sends to on a socket bound to a wildcard address), as an accepted TCP socket does.
    ``TCP_NODELAY`` is accepted and changes nothing (utcp sends small writes at once, as
    with it); other TCP-level options raise ``OSError(ENOPROTOOPT)`` as they would on any
    UDP socket.  Methods that would end or drain the socket for every connection are
    absent.
    """

    __slots__ = ("_names", "_peer", "_sock")

    def __init__(self, sock: Any, peer: Any, *, names: Any = None) -> None:
        self._sock = sock
        self._peer = peer
        self._names = names

    @property
    def family(self) -> int:
        return int(self._sock.family)

    @property
    def type(self) -> int:
        return int(self._sock.type)

    @property
    def proto(self) -> int:
        return int(self._sock.proto)

    def __repr__(self) -> str:
        return f"<utcp.SocketView fd={self.fileno()} family={self.family!r} peer={self._peer!r}>"

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def getsockname(self) -> Any:
        if self._names is not None:
            name = self._names.get_extra_info("sockname")
            if name is not None:
                return name
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        if self._names is not None:
            peer = self._names.get_extra_info("peername")
            if peer is not None:
                return peer
        if self._peer is None:
            return self._sock.getpeername()
        return self._peer

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if level == socket.IPPROTO_TCP:
            if optname == socket.TCP_NODELAY and buflen is None:
                return 1
            raise OSError(errno.ENOPROTOOPT, "not a TCP socket: utcp runs over UDP")
        if buflen is None:
            return self._sock.getsockopt(level, optname)
        return self._sock.getsockopt(level, optname, buflen)

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        if level == socket.IPPROTO_TCP:
            if optname == socket.TCP_NODELAY:
                return
            raise OSError(errno.ENOPROTOOPT, "not a TCP socket: utcp runs over UDP")
        self._sock.setsockopt(level, optname, value)

    def gettimeout(self) -> float | None:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        if flag:
            raise ValueError("the endpoint's socket must stay non-blocking")

    def settimeout(self, value: float | None) -> None:
        if value != 0:
            raise ValueError("settimeout(): only 0 timeout is allowed on the endpoint's socket")
