"""Congestion control algorithms behind one small interface, chosen by name in ``Config``."""

from __future__ import annotations

from .base import (
    CongestionController,
    RateSample,
    available,
    create,
    register,
    wants_delay_samples,
)
from .bbr import Bbr
from .cubic import Cubic
from .ledbat import Ledbat
from .newreno import NewReno

__all__ = [
    "Bbr",
    "CongestionController",
    "Cubic",
    "Ledbat",
    "NewReno",
    "RateSample",
    "available",
    "create",
    "register",
    "wants_delay_samples",
]
