"""Congestion controllers written by the application plug into the registry and drive the
connection, whether the core runs as its sources or as the compiled build."""

from __future__ import annotations

import random

from tests.helpers import Link, pair
from utcp import Config, ConnectionState
from utcp.congestion import CongestionController, NewReno, available, register


class FixedWindow(CongestionController):
    """A window of two segments, restored on every ACK (the connection sets the initial
    window once the handshake has settled the MSS)."""

    name = "test-fixed-window"
    acks = 0
    events = 0

    def __init__(self, *, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self.cwnd = 2 * mss

    def on_ack(self, acked_bytes: int, *, now: float, rtt_s: float | None) -> None:
        FixedWindow.acks += 1
        self.cwnd = 2 * self.mss

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        FixedWindow.events += 1

    def on_recovery_exit(self, *, now: float) -> None:
        pass

    def on_timeout(self, flight_size: int, *, now: float) -> None:
        FixedWindow.events += 1


class GentleReno(NewReno):
    """NewReno that backs off to three quarters instead of half."""

    name = "test-gentle-reno"
    reductions = 0

    def on_congestion_event(self, flight_size: int, *, now: float) -> None:
        GentleReno.reductions += 1
        self.ssthresh = max(flight_size * 3 // 4, 2 * self.mss)
        self.cwnd = self.ssthresh


register(FixedWindow)
register(GentleReno)


def _transfer(algorithm: str, size: int, loss: float) -> tuple[bytes, bytes, int]:
    config = Config(congestion_control=algorithm, pmtud=False)
    links = {
        "a_to_b": Link(rng=random.Random(7), loss=loss),
        "b_to_a": Link(rng=random.Random(8), loss=loss),
    }
    net = pair(config_a=config, config_b=config, **links)
    net.run(
        until=lambda: net.b.conn is not None and net.b.conn.state is ConnectionState.ESTABLISHED
    )
    a = net.a.conn
    assert a is not None
    data = random.Random(algorithm).randbytes(size)
    a.send(data)
    net.run(until=lambda: len(net.b.received) >= size, max_time=600)
    return data, bytes(net.b.received), a.stats.cwnd_bytes


def test_registered_by_name() -> None:
    assert {"newreno", FixedWindow.name, GentleReno.name} <= available()


def test_an_application_algorithm_sets_the_window() -> None:
    data, received, cwnd = _transfer(FixedWindow.name, 100_000, 0.0)
    assert received == data
    assert cwnd == 2 * Config(pmtud=False).mss_bytes
    assert FixedWindow.acks > 10


def test_an_application_subclass_of_newreno_reacts_to_loss() -> None:
    data, received, _ = _transfer(GentleReno.name, 300_000, 0.03)
    assert received == data
    assert GentleReno.reductions > 0
