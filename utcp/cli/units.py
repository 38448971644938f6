"""Parsers for the command line's human-friendly values: percentages, sizes, durations, rates.

Each raises ``ValueError`` with a one-line message naming the bad value, which argparse turns
into a usage error (exit status 2).
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_fraction(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05; must lie in [0, 1]."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"not a percentage: {text!r} (use 5% or 0.05)") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"percentage out of range: {text!r} (0% to 100%)")
    return value


def parse_size(text: str) -> int:
    """``64K``, ``10M``, ``1G``, ``1500`` (binary multiples, optional trailing B) -> bytes."""
    m = re.fullmatch(_NUMBER + r"\s*([KMG]?)(?:i?B)?", text.strip(), flags=re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use 1500, 64K, 10M or 1G)")
    value = float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]
    return int(value)


def parse_duration(text: str, *, default_unit: str = "s") -> float:
    """``20ms``, ``2s``, ``1.5``, ``1min`` -> seconds (a bare number is in ``default_unit``)."""
    m = re.fullmatch(_NUMBER + r"\s*(us|ms|s|min|m|h)?", text.strip().lower())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use 20ms, 2s or 1.5)")
    unit = m.group(2) or default_unit
    return float(m.group(1)) * _DURATION_UNITS[unit]


def parse_rate(text: str) -> float:
    """``20`` or ``20mbit`` (megabits per second), ``500kbit``, ``1gbit`` -> bits per second."""
    m = re.fullmatch(
        _NUMBER + r"\s*(?:([kmg])(?:bit(?:/s)?|bps)?)?", text.strip(), flags=re.IGNORECASE
    )
    if m is None:
        raise ValueError(f"not a rate: {text!r} (use 20, 20M or 20mbit for 20 Mbit/s)")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}[(m.group(2) or "m").lower()]
    value = float(m.group(1)) * scale
    if value <= 0:
        raise ValueError(f"rate must be positive: {text!r}")
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:9000`` or ``[::1]:9000`` -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
    if m is None:
        raise ValueError(f"not HOST:PORT: {text!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) if m.group(2) is not None else m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host or "127.0.0.1", port


def parse_interval(text: str) -> tuple[float, float]:
    """``START+LEN`` durations, e.g. ``2s+3s`` -> (2.0, 3.0)."""
    start, sep, length = text.partition("+")
    if not sep:
        raise ValueError(f"not START+LEN: {text!r} (e.g. 2s+3s)")
    return parse_duration(start), parse_duration(length)
