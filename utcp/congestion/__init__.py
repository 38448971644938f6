"""Congestion control algorithms behind one small interface, chosen by name in ``Config``."""

from __future__ import annotations

from .base import CongestionController, available, create, register
from .newreno import NewReno

__all__ = ["CongestionController", "NewReno", "available", "create", "register"]
