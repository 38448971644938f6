"""The congestion controller interface and the registry of algorithms by name.

A controller only decides ``cwnd`` and ``ssthresh``; loss detection and the recovery episode
belong to the connection, which tells the controller what happened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from mypy_extensions import mypyc_attr


# Applications subclass it (and NewReno) even when the core is the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class CongestionController(ABC):
    """Owns the congestion window; fed acknowledgements, congestion events and timeouts."""

    name: ClassVar[str]

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        self.mss = mss
        self.cwnd = initial_window_segments * mss
        self.ssthresh = 1 << 62  # "arbitrarily high" (RFC 5681 section 3.1)

    @property
    def in_slow_start(self) -> bool:
        """True while cwnd is below ssthresh."""
        return self.cwnd < self.ssthresh

    @abstractmethod
    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        """New data was cumulatively acknowledged outside a recovery episode."""

    @abstractmethod
    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        """Loss detected by duplicate ACKs or SACK: a recovery episode starts."""

    @abstractmethod
    def on_recovery_exit(self, *, now: float) -> None:
        """Everything outstanding at the start of recovery has been acknowledged."""

    @abstractmethod
    def on_timeout(self, flight_size: int, *, now: float) -> None:
        """The retransmission timer expired (RFC 5681 section 3.1, equation 4)."""


_REGISTRY: dict[str, Callable[..., CongestionController]] = {}


def register(cls: type[CongestionController]) -> type[CongestionController]:
    """Class decorator adding an algorithm to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> frozenset[str]:
    """Names of the registered algorithms."""
    return frozenset(_REGISTRY)


def create(name: str, *, mss: int, initial_window_segments: int) -> CongestionController:
    """A new controller of the named algorithm; ``ValueError`` for an unknown name."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}") from None
    return factory(mss=mss, initial_window_segments=initial_window_segments)
