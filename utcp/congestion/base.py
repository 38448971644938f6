"""The congestion controller interface and the registry of algorithms by name.

A controller decides ``cwnd`` and ``ssthresh`` and may set a ``pacing_rate``; loss detection
and the recovery episode belong to the connection, which tells the controller what happened.
A model-based controller (BBR) also asks for a delivery rate sample on every acknowledgement
(``wants_rate_samples``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Final, final

from mypy_extensions import i64, mypyc_attr

BURST_S: Final = 0.001  # one paced burst: a millisecond of data at the pacing rate


def burst_bytes(rate: float, mss: int) -> float:
    """The bytes of one paced burst at ``rate`` bytes/s: a millisecond of data, at least two
    segments (Linux's TSO autosizing).  The pacer's bucket holds one (ten segments at least
    in slow start); BBR's window keeps room for three (Linux's quantization budget)."""
    burst = rate * BURST_S
    return burst if burst > 2 * mss else 2.0 * mss


@final
class RateSample:
    """One delivery rate sample (draft-cheng-iccrg-delivery-rate-estimation): taken when an
    acknowledgement delivers data, from the most recently sent segment it delivered.

    The connection refills one object for every sample (built empty, every field zero): a
    controller reads it during ``on_rate_sample`` and keeps the values it needs, never the
    object."""

    __slots__ = (
        "app_limited",
        "delivered",
        "delivery_rate",
        "in_flight",
        "interval_s",
        "losses",
        "newly_acked",
        "path_min_rtt_s",
        "prior_delivered",
        "rtt_s",
    )

    def __init__(
        self,
        *,
        delivery_rate: float = 0.0,
        delivered: i64 = 0,
        interval_s: float = 0.0,
        prior_delivered: i64 = 0,
        rtt_s: float | None = None,
        path_min_rtt_s: float | None = None,
        app_limited: bool = False,
        in_flight: i64 = 0,
        newly_acked: i64 = 0,
        losses: i64 = 0,
    ) -> None:
        self.delivery_rate = delivery_rate  # bytes per second; 0.0 when the sample is invalid
        self.delivered = delivered  # bytes delivered over the interval
        self.interval_s = interval_s
        self.prior_delivered = prior_delivered  # the connection's delivered count at its send
        self.rtt_s = rtt_s  # of that segment, None if it was retransmitted (Karn)
        # The connection's smallest RTT sample yet, the handshake's included (None before any):
        # data may wait in a queue from its first segment, the handshake before it did not.
        self.path_min_rtt_s = path_min_rtt_s
        self.app_limited = app_limited  # the sender had nothing to send: a lower bound only
        self.in_flight = in_flight  # bytes in flight after this acknowledgement
        self.newly_acked = newly_acked  # bytes this acknowledgement delivered
        self.losses = losses  # bytes declared lost since the previous sample


# Applications subclass it (and NewReno) even when the core is the compiled build.  Abstract
# through its metaclass rather than an ``ABC`` base: a Python class among the bases keeps the
# compiled build from knowing that a native subclass's attributes are always set, so every
# read of one (BBR's model, on every acknowledgement) would check for an unset attribute.
@mypyc_attr(allow_interpreted_subclasses=True)
class CongestionController(metaclass=ABCMeta):
    """Owns the congestion window; fed acknowledgements, congestion events and timeouts."""

    name: ClassVar[str]
    # Whether on_rate_sample is to be called (building samples costs a little per ACK).
    wants_rate_samples: ClassVar[bool] = False
    # Whether on_delay_sample is to be called (a delay-based controller: LEDBAT).
    wants_delay_samples: ClassVar[bool] = False

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        self.mss = mss
        self.cwnd = initial_window_segments * mss
        self.ssthresh = 1 << 62  # "arbitrarily high" (RFC 5681 section 3.1)
        # Bytes per second segments should leave at, or None for the connection's default
        # (Linux's: twice cwnd per smoothed RTT in slow start, 1.2 times after).
        self.pacing_rate: float | None = None
        self.phase = ""  # the controller's state, for stats and traces ("" if it has none)
        self.bandwidth: float | None = None  # bytes per second, a model's estimate
        self.min_rtt: float | None = None  # seconds, a model's estimate

    def on_rate_sample(self, sample: RateSample, *, now: float) -> None:  # noqa: B027
        """An acknowledgement delivered data (only when ``wants_rate_samples``); a controller
        that does not ask for samples never gets this call, so the default does nothing.
        ``sample`` is refilled for the next call: keep its values, never the object."""

    def on_delay_sample(self, one_way_delay_s: float, *, now: float) -> None:  # noqa: B027
        """An acknowledgement of new data carried timestamps (only when
        ``wants_delay_samples``): the data's one-way delay to the peer, in seconds, plus the
        unknown offset between the two clocks (constant, so a minimum over time removes it:
        RFC 6817's base delay).  Millisecond resolution."""

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

    def on_spurious_congestion(  # noqa: B027
        self, prior_cwnd: int, prior_ssthresh: int, *, now: float
    ) -> None:
        """The last congestion event was spurious: every segment its recovery episode resent
        had arrived already, as the peer's D-SACKs show (RFC 3708), so the path reordered or
        delayed rather than dropped.  ``prior_cwnd`` and ``prior_ssthresh`` are the window and
        threshold from before the event.  The default keeps the reduction (``bbr`` and
        ``ledbat`` do); ``newreno`` and ``cubic`` undo it, as Linux does (RFC 9438 section
        4.9 for CUBIC).  Called during the episode or after it; the episode's exit, if it is
        still to come, follows as usual."""


_REGISTRY: dict[str, Callable[..., CongestionController]] = {}


def register(cls: type[CongestionController]) -> type[CongestionController]:
    """Class decorator adding an algorithm to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> frozenset[str]:
    """Names of the registered algorithms."""
    return frozenset(_REGISTRY)


def wants_delay_samples(name: str) -> bool:
    """Whether the named algorithm measures one-way delay (so timestamps must be offered);
    False for an unknown name."""
    factory = _REGISTRY.get(name)
    return bool(getattr(factory, "wants_delay_samples", False))


def create(name: str, *, mss: int, initial_window_segments: int) -> CongestionController:
    """A new controller of the named algorithm; ``ValueError`` for an unknown name."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}") from None
    return factory(mss=mss, initial_window_segments=initial_window_segments)
