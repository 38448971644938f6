"""Congestion control algorithms behind one small interface, chosen by name in ``Config``."""

from __future__ import annotations

from .base import (
    BURST_S,
    CongestionController,
    RateSample,
    available,
    burst_bytes,
    create,
    register,
    wants_delay_samples,
)
from .bbr import Bbr
from .cubic import Cubic
from .ledbat import Ledbat
from .newreno import NewReno

__all__ = [
    "BURST_S",
    "Bbr",
    "CongestionController",
    "Cubic",
    "Ledbat",
    "NewReno",
    "RateSample",
    "available",
    "burst_bytes",
    "create",
    "register",
    "wants_delay_samples",
]
