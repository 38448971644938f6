"""Congestion control algorithms behind one small interface, chosen by name in ``Config``."""

from __future__ import annotations

from .base import CongestionController, RateSample, available, create, register
from .bbr import Bbr
from .newreno import NewReno

__all__ = [
    "Bbr",
    "CongestionController",
    "NewReno",
    "RateSample",
    "available",
    "create",
    "register",
]
