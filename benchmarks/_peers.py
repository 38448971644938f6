"""The peers the benchmark compares, the loop each runs on and the scenarios each applies to.

This module imports nothing heavy: the harness asks it which peers exist and whether their
packages are installed (``importlib.util.find_spec``) without loading any of them.  A peer's
``variant`` names its settings; ``_adapters.py`` turns it into a utcp ``Config`` (or aiokcp's
keyword arguments), in the server and in the client process alike.  A ``tls`` peer is the same
transport with TLS 1.3 on top (``_tls.py``); its plain counterpart (``plain``) is the peer it
would be without.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

SCENARIOS = ("bulk", "rr", "connect", "many", "lossy")
STREAM_SCENARIOS = SCENARIOS
UDP_SCENARIOS = ("bulk", "rr")  # no connections, no reliability: connect/many/lossy are n/a
TCP_SCENARIOS = ("bulk", "rr", "connect", "many")  # the impairment relay is UDP: lossy is n/a
# What the TLS peers run: bulk (the cost of encryption), rr (of a record per message) and
# connect (a full TLS 1.3 handshake per connection); many and lossy are n/a.
TLS_SCENARIOS = ("bulk", "rr", "connect")


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
    tls: bool = False  # TLS 1.3 over the transport, from the run's certificates (_tls.py)

    def missing(self) -> list[str]:
        """The modules this peer needs that are not installed."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def applies(self, scenario: str) -> bool:
        return scenario in self.scenarios


# utcp's variants (the Config each one means is in _adapters.UTCP_CONFIGS):
UTCP_VARIANTS = {
    "portable": "portable I/O path (asyncio DatagramProtocol), PMTU discovery off: 1452 B",
    "fast": "fast I/O path (own socket, GRO/GSO), PMTU discovery off: 1452 B",
    "pmtud": "fast I/O path, PMTU discovery on (up to 65507 B datagrams)",
    "default": "Config() as shipped: io_path auto (UTCP_IO), PMTU discovery on",
}


def _utcp(name: str, loop: str, variant: str) -> PeerSpec:
    needs = ("utcp", "uvloop") if loop == "uvloop" else ("utcp",)
    return PeerSpec(
        name, "utcp", loop, needs, STREAM_SCENARIOS, UTCP_VARIANTS[variant], variant=variant
    )


PEERS: tuple[PeerSpec, ...] = (
    _utcp("utcp-portable", "asyncio", "portable"),
    _utcp("utcp-portable-uvloop", "uvloop", "portable"),
    _utcp("utcp-fast", "asyncio", "fast"),
    _utcp("utcp-fast-uvloop", "uvloop", "fast"),
    _utcp("utcp-pmtud", "asyncio", "pmtud"),
    _utcp("utcp-pmtud-uvloop", "uvloop", "pmtud"),
    _utcp("utcp", "asyncio", "default"),
    _utcp("utcp-uvloop", "uvloop", "default"),
    PeerSpec("tcp", "tcp", "asyncio", (), TCP_SCENARIOS, "kernel TCP, asyncio streams"),
    PeerSpec("tcp-uvloop", "tcp", "uvloop", ("uvloop",), TCP_SCENARIOS, "kernel TCP, streams"),
    # The fair comparison for users who need encryption: utcp + TLS against kernel TCP + TLS
    # and aioquic (QUIC always encrypts).  utcp-tls has utcp-pmtud's Config: the fast path
    # with PMTU discovery, what Config() means on Linux, the I/O path pinned.
    PeerSpec(
        "utcp-tls",
        "utcp",
        "asyncio",
        ("utcp",),
        TLS_SCENARIOS,
        "utcp-pmtud's Config (fast I/O path, PMTU discovery) + TLS 1.3 (asyncio's TLS layer)",
        variant="pmtud",
        tls=True,
    ),
    PeerSpec(
        "tcp-tls",
        "tcp",
        "asyncio",
        (),
        TLS_SCENARIOS,
        "kernel TCP + TLS 1.3, asyncio streams (asyncio's TLS layer)",
        tls=True,
    ),
    PeerSpec(
        "udp", "udp", "asyncio", (), UDP_SCENARIOS, "raw UDP blast, 1452-byte datagrams, no ARQ"
    ),
    PeerSpec(
        "udp-uvloop",
        "udp",
        "uvloop",
        ("uvloop",),
        UDP_SCENARIOS,
        "raw UDP blast, 1452-byte datagrams, no ARQ",
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

# What `--peers` means when not given: every target's peers and baselines and the two TLS
# peers, within about ten minutes on two cores.  Left out (``--peers all`` adds them): plain
# utcp/utcp-uvloop, which on Linux run what utcp-pmtud does (and honour UTCP_IO), and aiokcp
# with its defaults, which crawls at about 0.2 MB/s into the transfer cap (a third of the old
# default run's time).
DEFAULT_PEERS: tuple[str, ...] = tuple(
    p.name for p in PEERS if p.name not in ("utcp", "utcp-uvloop", "aiokcp")
)


def baseline(spec: PeerSpec, kind: str) -> PeerSpec | None:
    """The default-variant peer of ``kind`` on the same loop as ``spec`` (else the default
    loop), encrypted if ``spec`` is: a TLS peer's TCP baseline is ``tcp-tls``."""
    for loop in (spec.loop, "asyncio"):
        for p in PEERS:
            if p.kind == kind and p.loop == loop and p.variant == "default" and p.tls == spec.tls:
                return p
    return None


def same_variant(spec: PeerSpec, loop: str) -> PeerSpec | None:
    """The peer with ``spec``'s kind, variant and encryption on ``loop``."""
    for p in PEERS:
        if (p.kind, p.variant, p.tls, p.loop) == (spec.kind, spec.variant, spec.tls, loop):
            return p
    return None


def plain(spec: PeerSpec) -> tuple[PeerSpec, ...]:
    """The peers without TLS that a TLS peer is compared with to show what TLS costs, best
    first: the same kind, variant and loop (utcp-tls: utcp-pmtud; tcp-tls: tcp), then for utcp
    ``Config()`` on the same loop (plain ``utcp``: the same settings wherever its ``io_path``
    "auto" means the fast path, which the report checks against what each run recorded)."""
    if not spec.tls:
        return ()
    found = [
        p
        for p in PEERS
        if not p.tls and (p.kind, p.variant, p.loop) == (spec.kind, spec.variant, spec.loop)
    ]
    if spec.kind == "utcp" and spec.variant != "default":
        found += [
            p
            for p in PEERS
            if not p.tls and p.kind == "utcp" and p.variant == "default" and p.loop == spec.loop
        ]
    return tuple(found)
