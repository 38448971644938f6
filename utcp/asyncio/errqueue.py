"""The socket error queue on Linux: the ICMP errors our datagrams draw, with the datagram each
quotes, where it was sent and what the error says (IP_RECVERR, IPV6_RECVERR, MSG_ERRQUEUE).

Whoever enables the option must drain the queue (``drain_error_queue``): while an entry stays,
epoll keeps reporting EPOLLERR.  Nothing here raises: malformed entries are skipped.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ERRORS_PER_DRAIN",
    "SO_EE_ORIGIN_ICMP",
    "SO_EE_ORIGIN_ICMP6",
    "SO_EE_ORIGIN_LOCAL",
    "SocketError",
    "drain_error_queue",
    "enable_recverr",
]

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)


# ---------------------------------------------------------------------- the error queue
#
# With IP_RECVERR (IPV6_RECVERR) each ICMP error an outgoing datagram draws is queued on the
# socket with the datagram's UDP payload (the ICMP quote of it), its destination, the ICMP type
# and code; the socket's pending error (sk_err) is set too, and is what the next recv or send
# raises once.  The entry stays until read with MSG_ERRQUEUE, and while any stays, epoll keeps
# reporting EPOLLERR.  Without the option Linux reports only hard errors (port unreachable), only
# to a connected socket, and only as that pending error: no payload, no address.

_SOL_IP: Final = 0  # linux/in.h: SOL_IP (= IPPROTO_IP)
_IP_RECVERR: Final = 11  # linux/in.h: IP_RECVERR, option and cmsg type
_IPPROTO_IPV6: Final = 41  # linux/in6.h: IPPROTO_IPV6
_IPV6_RECVERR: Final = 25  # linux/in6.h: IPV6_RECVERR, option and cmsg type
# linux/errqueue.h: where an error came from (sock_extended_err.ee_origin).
SO_EE_ORIGIN_LOCAL: Final = 1  # the local stack (EMSGSIZE above the path MTU: ee_info the MTU)
SO_EE_ORIGIN_ICMP: Final = 2
SO_EE_ORIGIN_ICMP6: Final = 3
_ICMP_DEST_UNREACH: Final = 3  # RFC 792: destination unreachable
_ICMP_PORT_UNREACH: Final = 3  # RFC 792: its code "port unreachable"
_ICMPV6_DEST_UNREACH: Final = 1  # RFC 4443 section 3.1: destination unreachable
_ICMPV6_PORT_UNREACH: Final = 4  # RFC 4443 section 3.1: its code "port unreachable"
# linux/errqueue.h: struct sock_extended_err {u32 ee_errno; u8 ee_origin, ee_type, ee_code,
# ee_pad; u32 ee_info, ee_data}, followed (SO_EE_OFFENDER) by the sockaddr of the ICMP's sender.
_EXTENDED_ERR: Final = struct.Struct("=IBBBBII")
_FAMILY: Final = struct.Struct("=H")  # sa_family_t, host order
_PORT: Final = struct.Struct("!H")  # sin_port, network order; sin_addr follows
_PORT_FLOW: Final = struct.Struct("!HI")  # sin6_port, sin6_flowinfo: network order
_SCOPE: Final = struct.Struct("=I")  # sin6_scope_id, host order, after the 16-byte address
_SOCKADDR_IN_BYTES: Final = 8  # what is read of a sockaddr_in: family, port, address
_SOCKADDR_IN6_BYTES: Final = 28
_MSG_ERRQUEUE: Final[int] = getattr(socket, "MSG_ERRQUEUE", 0)  # Linux only
_MSG_DONTWAIT: Final[int] = getattr(socket, "MSG_DONTWAIT", 0)
# The quote is what the ICMP carried of our datagram: at most 576 bytes of IPv4 packet (RFC
# 1812 section 4.3.2.3), 1280 of IPv6 (RFC 4443 section 2.4 (c)); more than enough room.
_ERRQUEUE_DATA_BYTES: Final = 2048
_ERRQUEUE_CMSG_BYTES: Final = 256  # the one error cmsg (16 + 28 bytes) and any others enabled
# Error queue reads per drain: a flood of ICMP errors cannot hold the loop.  The kernel keeps
# the socket's pending error set while ICMP errors stay queued, so the next read reports it and
# the rest are drained then.
ERRORS_PER_DRAIN: Final = 64


@dataclass(frozen=True, slots=True)
class SocketError:
    """One entry of a socket's error queue: what an outgoing datagram drew.

    ``quoted`` is the UDP payload of the datagram that failed, as the ICMP error quoted it (a
    utcp packet, possibly truncated; empty for local errors), ``addr`` where it was sent (as the
    socket module gives addresses), ``offender`` the host that sent the ICMP error (None for
    local errors).  ``origin`` is one of the ``SO_EE_ORIGIN_*`` constants, ``info`` the MTU for
    "fragmentation needed" / "packet too big" and local EMSGSIZE errors.
    """

    errno: int
    origin: int
    icmp_type: int
    icmp_code: int
    info: int
    quoted: bytes
    addr: Address
    offender: Address | None

    @property
    def port_unreachable(self) -> bool:
        """Nobody listens at ``addr`` any more: ICMP port unreachable (IPv4 or IPv6)."""
        if self.origin == SO_EE_ORIGIN_ICMP:
            return self.icmp_type == _ICMP_DEST_UNREACH and self.icmp_code == _ICMP_PORT_UNREACH
        if self.origin == SO_EE_ORIGIN_ICMP6:
            return self.icmp_type == _ICMPV6_DEST_UNREACH and self.icmp_code == _ICMPV6_PORT_UNREACH
        return False


def enable_recverr(sock: socket.socket) -> bool:
    """Have the kernel queue the ICMP errors this UDP socket's datagrams draw (Linux); False
    where that is not available.  Whoever enables it must drain the queue (see above)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET:
            sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
            return True
        if sock.family != socket.AF_INET6:
            return False
        sock.setsockopt(_IPPROTO_IPV6, _IPV6_RECVERR, 1)
    except OSError:
        return False
    # Errors for IPv4-mapped peers of a dual-stack socket are governed by the IPv4 option.
    with contextlib.suppress(OSError):
        sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
    return True


def drain_error_queue(
    sock: socket.socket, *, max_reads: int = ERRORS_PER_DRAIN
) -> list[SocketError]:
    """Read the socket's error queue until it is empty (at most ``max_reads`` entries).

    Never raises: an entry without a well-formed error cmsg is skipped, any error of the read
    ends the drain, and where ``MSG_ERRQUEUE`` does not exist the answer is ``[]``."""
    errors: list[SocketError] = []
    if not _MSG_ERRQUEUE:
        return errors
    flags = _MSG_ERRQUEUE | _MSG_DONTWAIT  # never block, even on a blocking socket
    for _ in range(max_reads):
        try:
            data, ancdata, _flags, addr = sock.recvmsg(
                _ERRQUEUE_DATA_BYTES, _ERRQUEUE_CMSG_BYTES, flags
            )
        except OSError:  # BlockingIOError: the queue is empty
            break
        error = _parse_error(data, ancdata, addr)
        if error is not None:
            errors.append(error)
    return errors


def _parse_error(
    data: bytes, ancdata: list[tuple[int, int, bytes]], addr: Address
) -> SocketError | None:
    for level, kind, value in ancdata:
        if not (
            (level == _SOL_IP and kind == _IP_RECVERR)
            or (level == _IPPROTO_IPV6 and kind == _IPV6_RECVERR)
        ):
            continue
        if len(value) < _EXTENDED_ERR.size:
            continue
        err, origin, icmp_type, icmp_code, _pad, info, _data = _EXTENDED_ERR.unpack_from(value)
        return SocketError(
            errno=err,
            origin=origin,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            info=info,
            quoted=data,
            addr=addr,
            offender=_offender(value, _EXTENDED_ERR.size),
        )
    return None


def _offender(value: bytes, at: int) -> Address | None:
    """The sockaddr after ``sock_extended_err`` as the socket module spells addresses, or None
    (local errors leave it AF_UNSPEC)."""
    if len(value) < at + _FAMILY.size:
        return None
    family = _FAMILY.unpack_from(value, at)[0]
    try:
        if family == socket.AF_INET and len(value) >= at + _SOCKADDR_IN_BYTES:
            port = _PORT.unpack_from(value, at + 2)[0]
            return (socket.inet_ntop(socket.AF_INET, value[at + 4 : at + 8]), port)
        if family == socket.AF_INET6 and len(value) >= at + _SOCKADDR_IN6_BYTES:
            port, flow = _PORT_FLOW.unpack_from(value, at + 2)
            host = socket.inet_ntop(socket.AF_INET6, value[at + 8 : at + 24])
            return (host, port, flow, _SCOPE.unpack_from(value, at + 24)[0])
    except (OSError, ValueError):
        return None
    return None
