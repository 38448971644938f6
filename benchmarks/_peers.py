"""The peers the benchmark compares, the loop each runs on and the scenarios each applies to.

This module imports nothing heavy: the harness asks it which peers exist and whether their
packages are installed (``importlib.util.find_spec``) without loading any of them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

SCENARIOS = ("bulk", "rr", "connect", "many", "lossy")
STREAM_SCENARIOS = SCENARIOS
UDP_SCENARIOS = ("bulk", "rr")  # no connections, no reliability: connect/many/lossy are n/a
TCP_SCENARIOS = ("bulk", "rr", "connect", "many")  # the impairment relay is UDP: lossy is n/a


@dataclass(frozen=True)
class PeerSpec:
    """One contestant: a transport (``kind``), a variant of its settings and an event loop."""

    name: str
    kind: str  # utcp, tcp, udp, aioquic, aiokcp
    loop: str  # asyncio (the default loop) or uvloop
    needs: tuple[str, ...]  # modules that must be importable
    scenarios: tuple[str, ...]
    description: str
    variant: str = "default"

    def missing(self) -> list[str]:
        """The modules this peer needs that are not installed."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def applies(self, scenario: str) -> bool:
        return scenario in self.scenarios


PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("utcp", "utcp", "asyncio", ("utcp",), STREAM_SCENARIOS, "utcp streams"),
    PeerSpec("utcp-uvloop", "utcp", "uvloop", ("utcp", "uvloop"), STREAM_SCENARIOS, "utcp streams"),
    PeerSpec("tcp", "tcp", "asyncio", (), TCP_SCENARIOS, "kernel TCP, asyncio streams"),
    PeerSpec("tcp-uvloop", "tcp", "uvloop", ("uvloop",), TCP_SCENARIOS, "kernel TCP, streams"),
    PeerSpec(
        "udp", "udp", "asyncio", (), UDP_SCENARIOS, "raw UDP blast, 1200-byte datagrams, no ARQ"
    ),
    PeerSpec(
        "udp-uvloop",
        "udp",
        "uvloop",
        ("uvloop",),
        UDP_SCENARIOS,
        "raw UDP blast, 1200-byte datagrams, no ARQ",
    ),
    PeerSpec(
        "aioquic",
        "aioquic",
        "asyncio",
        ("aioquic", "cryptography"),
        STREAM_SCENARIOS,
        "QUIC, one bidirectional stream, self-signed certificate",
    ),
    PeerSpec("aiokcp", "aiokcp", "asyncio", ("aiokcp",), STREAM_SCENARIOS, "KCP, aiokcp defaults"),
    PeerSpec(
        "aiokcp-fast",
        "aiokcp",
        "asyncio",
        ("aiokcp",),
        STREAM_SCENARIOS,
        "KCP fast mode: 10 ms interval, resend 2, no CC, 512-packet windows",
        variant="fast",
    ),
)

BY_NAME = {p.name: p for p in PEERS}


def baseline(spec: PeerSpec, kind: str) -> PeerSpec | None:
    """The peer of ``kind`` on the same loop as ``spec`` (else on the default loop)."""
    for loop in (spec.loop, "asyncio"):
        for p in PEERS:
            if p.kind == kind and p.loop == loop and p.variant == "default":
                return p
    return None
