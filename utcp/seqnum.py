"""32-bit sequence number arithmetic (RFC 1982 serial numbers, as TCP uses them).

Every comparison of sequence or acknowledgement numbers in utcp goes through these helpers, so
wraparound at 2**32 is handled in exactly one place.
"""

from __future__ import annotations

from typing import Final

SEQ_MOD: Final = 1 << 32
SEQ_MASK: Final = SEQ_MOD - 1
_HALF: Final = 1 << 31


def seq_add(a: int, n: int) -> int:
    """Return ``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` in the range [-2**31, 2**31)."""
    d = (a - b) & SEQ_MASK
    return d - SEQ_MOD if d >= _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """True when ``a`` comes strictly before ``b`` in serial order."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    """True when ``a`` comes before or equals ``b``."""
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    """True when ``a`` comes strictly after ``b``."""
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    """True when ``a`` comes after or equals ``b``."""
    return seq_diff(a, b) >= 0


def seq_in_window(x: int, start: int, length: int) -> bool:
    """True when ``start <= x < start + length`` in serial order."""
    return 0 <= ((x - start) & SEQ_MASK) < length


def seq_max(a: int, b: int) -> int:
    """The later of two sequence numbers."""
    return a if seq_ge(a, b) else b


def seq_min(a: int, b: int) -> int:
    """The earlier of two sequence numbers."""
    return a if seq_le(a, b) else b
