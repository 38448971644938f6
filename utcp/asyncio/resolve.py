"""Host, port and socket keywords as asyncio's ``create_connection``/``create_server`` take them,
turned into the UDP addresses utcp binds and connects to.

The rules are asyncio's: a port may be an int or a numeric (or service) string; ``host=None``
or ``""`` serves every address family; a list of hosts serves each; ``sock=`` excludes
``host``/``port``; ``proto`` must name UDP (or be 0) since utcp rides on UDP.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["AddrInfo", "check_port", "check_proto", "interleave", "resolve_all"]

AddrInfo = tuple[int, Any]  # (family, sockaddr)


def check_port(port: Any) -> int | str | None:
    """The port as asyncio accepts it: None, an int in 0..65535 or a string naming one."""
    if port is None or isinstance(port, str):
        return port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535 or a numeric string, not {port!r}")
    return port


def check_observer(observer: object) -> None:
    """``observer=`` is None or a callable (of each datagram's direction, bytes, address)."""
    if observer is not None and not callable(observer):
        raise TypeError(f"observer must be callable or None, not {type(observer).__name__}")


def check_proto(proto: int) -> None:
    """utcp runs over UDP: ``proto`` is 0 or ``IPPROTO_UDP``."""
    if proto not in (0, socket.IPPROTO_UDP):
        raise ValueError(
            f"proto={proto!r} cannot be used: utcp runs over UDP (use 0 or IPPROTO_UDP)"
        )


async def resolve_all(
    host: str | None,
    port: int | str | None,
    *,
    passive: bool,
    family: int = 0,
    flags: int = 0,
) -> list[AddrInfo]:
    """Every UDP address ``host:port`` names, in the resolver's order, duplicates removed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host,
            port,
            family=family,
            type=socket.SOCK_DGRAM,
            flags=flags | (socket.AI_PASSIVE if passive else 0),
        )
    except (TypeError, UnicodeError) as exc:
        raise ValueError(f"cannot resolve host {host!r}, port {port!r}: {exc}") from None
    out: list[AddrInfo] = []
    for fam, _type, _proto, _name, addr in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        item = (fam, addr if fam == socket.AF_INET6 else addr[:2])
        if item not in out:
            out.append(item)
    if not out:
        raise OSError(f"getaddrinfo({host!r}, {port!r}) returned no IP addresses")
    return out


def interleave(infos: Sequence[AddrInfo], first_family_count: int = 1) -> list[AddrInfo]:
    """Alternate address families (RFC 8305 section 4), as asyncio's ``interleave``: the
    first ``first_family_count`` addresses of the first family, then one of each in turn."""
    families: dict[int, list[AddrInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    groups = list(families.values())
    out: list[AddrInfo] = []
    if first_family_count > 1 and groups:
        out.extend(groups[0][: first_family_count - 1])
        groups[0] = groups[0][first_family_count - 1 :]
    out.extend(a for a in itertools.chain.from_iterable(itertools.zip_longest(*groups)) if a)
    return out


def hosts_of(host: str | Iterable[str] | None) -> list[str | None]:
    """``host`` for a server: None and ``""`` mean every interface, a list means each."""
    if host is None or host == "":
        return [None]
    if isinstance(host, str):
        return [host]
    hosts: list[str | None] = list(host)
    if not hosts:
        raise ValueError("host must not be an empty list")
    return hosts
