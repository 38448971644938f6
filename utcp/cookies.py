"""Stateless SYN cookies: a server under a SYN flood answers with a SYN-ACK whose connection id
and initial sequence number are a keyed hash of the SYN, and keeps no state until the client's
ACK proves, by echoing them, that it received that SYN-ACK at its address.

Like TCP's SYN cookies (and QUIC's Retry tokens), the hash also carries the few option bits
the connection needs (peer MSS class, window scale, SACK, timestamps), authenticated with it.
Sans-I/O: time is passed in; the secret comes from ``secrets``.  The endpoint
(``utcp.endpoint``) decides when to hand cookies out and rebuilds the connection from one.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Final

from .cids import CidLayout

__all__ = ["MSS_CLASSES", "SynCookies", "pack_options", "unpack_options"]

MSS_CLASSES: Final = (536, 1200, 1380, 1428)  # peer MSS rounded down to one of these (2 bits)
_NO_WSCALE: Final = 15
_SLOT: Final = struct.Struct("!IIqB")


def pack_options(mss: int | None, wscale: int | None, sack: bool, timestamps: bool) -> int:
    """The 8 option bits a cookie carries: MSS class (2), window scale (4), SACK, timestamps."""
    peer_mss = 536 if mss is None else mss
    mss_class = max(i for i, m in enumerate(MSS_CLASSES) if m <= peer_mss or i == 0)
    ws = _NO_WSCALE if wscale is None else min(wscale, 14)
    return mss_class | ws << 2 | int(sack) << 6 | int(timestamps) << 7


def unpack_options(bits: int) -> tuple[int, int | None, bool, bool]:
    """(peer MSS, window scale or None, SACK permitted, timestamps) from ``pack_options``."""
    ws = bits >> 2 & 0xF
    return (
        MSS_CLASSES[bits & 3],
        None if ws == _NO_WSCALE else ws,
        bool(bits & 64),
        bool(bits & 128),
    )


class SynCookies:
    """Makes and checks cookies; each is valid for one to two ``lifetime_s`` periods."""

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        lifetime_s: float = 64.0,
        layout: CidLayout | None = None,
    ) -> None:
        self._key = secret if secret is not None else secrets.token_bytes(32)
        self._lifetime_s = lifetime_s
        # The endpoint's fixed id bits (server id, worker) overwrite the top of the hash: the
        # cookie keeps its option bits and at least eight bits of hash (utcp.cids).
        self._layout = layout if layout is not None else CidLayout()

    def _hash(self, peer: bytes, peer_cid: int, peer_isn: int, slot: int, opts: int) -> int:
        h = hashlib.blake2b(peer, key=self._key, digest_size=8)
        h.update(_SLOT.pack(peer_cid, peer_isn, slot, opts))
        return int.from_bytes(h.digest(), "big")

    def make(
        self, peer: bytes, peer_cid: int, peer_isn: int, opts: int, *, now: float
    ) -> tuple[int, int]:
        """The (connection id, ISN) of a SYN-ACK answering this SYN from address ``peer``."""
        slot = int(now // self._lifetime_s)
        h = self._hash(peer, peer_cid, peer_isn, slot, opts)
        cid = self._layout.apply((h >> 32) & 0xFFFFFF00 | opts)
        return cid or 0x100 | opts, h & 0xFFFFFFFF

    def check(
        self, peer: bytes, peer_cid: int, peer_isn: int, cid: int, isn: int, *, now: float
    ) -> int | None:
        """The option bits if (cid, isn) is a cookie this endpoint issued recently, else None."""
        opts = cid & 0xFF
        slot = int(now // self._lifetime_s)
        for s in (slot, slot - 1):
            h = self._hash(peer, peer_cid, peer_isn, s, opts)
            want = self._layout.apply((h >> 32) & 0xFFFFFF00 | opts)
            if (want or 0x100 | opts) == cid and h & 0xFFFFFFFF == isn:
                return opts
        return None
