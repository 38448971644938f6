"""The layout of a connection id: the bits that name a server, then a worker, the rest random.

A 32-bit id, most significant bit first, is ``[server id][worker][random]``.  The server id
(``Config.server_id`` in ``Config.server_id_bits`` bits) lets an id-aware load balancer route
every datagram of a connection to the machine that chose its id; the worker bits let the
kernel's ``SO_REUSEPORT`` steering (``utcp.asyncio.reuseport``) hand it to the process that
chose it.  At most ``MAX_FIXED_BITS`` bits are fixed, so at least 16 stay random: the SYN
cookie's eight option bits and eight of its hash, and ids an off-path attacker cannot guess.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CID_BITS", "MAX_FIXED_BITS", "CidLayout", "worker_bits_for"]

CID_BITS: Final = 32
CID_MASK: Final = 0xFFFFFFFF
MAX_FIXED_BITS: Final = 16  # server id and worker bits together


def worker_bits_for(workers: int) -> int:
    """The bits an id needs to name one of ``workers`` workers (0 for one worker)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers!r}")
    return (workers - 1).bit_length()


class CidLayout:
    """Which bits of this endpoint's connection ids are fixed, and to what."""

    def __init__(
        self, *, server_id: int = 0, server_bits: int = 0, worker: int = 0, worker_bits: int = 0
    ) -> None:
        if server_bits < 0 or worker_bits < 0 or server_bits + worker_bits > MAX_FIXED_BITS:
            raise ValueError(
                f"server id and worker bits must be >= 0 and at most {MAX_FIXED_BITS} together"
            )
        if not 0 <= server_id < 1 << server_bits:
            raise ValueError(f"server_id {server_id} does not fit in {server_bits} bits")
        if not 0 <= worker < max(1, 1 << worker_bits):
            raise ValueError(f"worker {worker} does not fit in {worker_bits} bits")
        self.server_id = server_id
        self.server_bits = server_bits
        self.worker = worker
        self.worker_bits = worker_bits
        fixed_bits = server_bits + worker_bits
        self.worker_shift = CID_BITS - fixed_bits
        self.mask = (CID_MASK << self.worker_shift) & CID_MASK if fixed_bits else 0
        self.fixed = ((server_id << worker_bits | worker) << self.worker_shift) & CID_MASK

    def apply(self, cid: int) -> int:
        """``cid`` with its fixed bits set to this layout's (its random bits kept)."""
        return (cid & ~self.mask & CID_MASK) | self.fixed

    def worker_of(self, cid: int) -> int:
        """The worker a connection id names."""
        return (cid >> self.worker_shift) & ((1 << self.worker_bits) - 1)

    def server_of(self, cid: int) -> int:
        """The server id a connection id names."""
        return (cid >> (self.worker_shift + self.worker_bits)) & ((1 << self.server_bits) - 1)
