"""The core's shortcuts change nothing on the wire.

``Connection.receive_packet`` takes the header-prediction path (``receiving.rx_predicted``) for
the next in-order segment of an ESTABLISHED connection, ``datagrams_to_send`` returns at once
when nothing is due (``Connection._nothing_due``), and a write that fits in one segment skips
the general send loop (``sending.send_lone_segment``).  Each scenario here runs twice on the
fake network, with the shortcuts (``Config.fast_paths``) on and off, and every datagram sent
(time, side, bytes) and every counter must come out the same; the ``fast_path_*`` counters
say how often each shortcut was taken.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Link, Network, pair
from utcp import Config, ConnectionState
from utcp.packet import encode

S = ConnectionState


FAST_COUNTERS = {
    "predicted": "fast_path_received",
    "nothing_due": "fast_path_idle",
    "lone": "fast_path_sent",
}


def record(net: Network) -> list[tuple[float, str, bytes]]:
    return [(s.time, s.src, encode(s.packet)) for s in net.trace]


def run_twice(scenario: Callable[[bool], Network]) -> dict[str, int]:
    """Run ``scenario`` with and without the shortcuts (``Config.fast_paths``); assert identical
    traces and stats, and return how often each shortcut was taken on both sides."""
    fast = scenario(True)
    slow = scenario(False)
    assert record(fast) == record(slow)
    calls = dict.fromkeys(FAST_COUNTERS, 0)
    for name in ("a", "b"):
        fc, sc = fast.sides[name].conn, slow.sides[name].conn
        assert fc is not None and sc is not None
        # Limit times are sums of intervals: skipping a call adds them in fewer pieces.
        fs, ss = asdict(fc.stats), asdict(sc.stats)
        for key in [k for k in fs if k.startswith("time_limited_by_")]:
            assert fs.pop(key) == pytest.approx(ss.pop(key), rel=1e-9, abs=1e-12), key
        for call, key in FAST_COUNTERS.items():
            assert ss.pop(key) == 0, key
            calls[call] += fs.pop(key)
        assert fs == ss
        assert fc.get_timer() == sc.get_timer()
        assert fast.sides[name].received == slow.sides[name].received
    return calls


def links(seed: int, **impairment: Any) -> dict[str, Link]:
    return {
        "a_to_b": Link(rng=random.Random(seed * 2), **impairment),
        "b_to_a": Link(rng=random.Random(seed * 2 + 1), **impairment),
    }


def request_response(
    seed: int,
    rounds: int,
    sizes: tuple[int, int],
    config: Config,
    *,
    close: bool = True,
    **impairment: Any,
) -> Callable[[bool], Network]:
    """``rounds`` requests from a, each answered by b, as an RPC client and server do; then
    the close, or (``close=False``) a quiet spell ended by a call to ``datagrams_to_send``,
    which is what brings the limit times up to date."""

    def scenario(fast: bool) -> Network:
        cfg = replace(config, fast_paths=fast)
        net = pair(config_a=cfg, config_b=cfg, **links(seed, **impairment))
        net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
        a, b = net.a.conn, net.b.conn
        assert a is not None and b is not None
        for i in range(rounds):
            a.send(bytes([i % 256]) * sizes[0])
            want = (i + 1) * sizes[0]
            net.run(until=lambda w=want: len(net.b.received) >= w, max_time=600)
            b.send(bytes([i % 256]) * sizes[1])
            want_a = (i + 1) * sizes[1]
            net.run(until=lambda w=want_a: len(net.a.received) >= w, max_time=600)
        if not close:
            net.run_for(3.0)
            for conn in (a, b):
                assert conn.datagrams_to_send(now=net.now) == []
            return net
        a.close()
        b.close()
        net.run(max_time=600)
        return net

    return scenario


def both_ways(seed: int, size: int, config: Config, **impairment: Any) -> Callable[[bool], Network]:
    """A bulk transfer each way at once, then the close."""

    def scenario(fast: bool) -> Network:
        cfg = replace(config, fast_paths=fast)
        net = pair(config_a=cfg, config_b=cfg, **links(seed, **impairment))
        net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
        a, b = net.a.conn, net.b.conn
        assert a is not None and b is not None
        a.send(random.Random(seed).randbytes(size))
        b.send(random.Random(seed + 1).randbytes(size // 3))
        net.run(until=lambda: len(net.b.received) >= size, max_time=3000)
        a.close()
        b.close()
        net.run(max_time=3000)
        return net

    return scenario


PLAIN = Config()
FIXED = Config(pmtud=False)


@pytest.mark.parametrize("config", [PLAIN, FIXED, Config(timestamps=True, sack=False)])
def test_request_response_clean(config: Config) -> None:
    calls = run_twice(request_response(1, 40, (64, 200), config))
    # The shortcuts must actually run, or this test proves nothing.
    assert calls["predicted"] >= 70
    assert calls["nothing_due"] >= 30
    assert calls["lone"] >= 70


def test_quiet_after_exchange() -> None:
    """A quiet connection's application-limited time still runs to the latest call."""
    calls = run_twice(request_response(3, 5, (64, 64), FIXED, close=False))
    assert calls["nothing_due"] >= 2
    net = request_response(3, 5, (64, 64), FIXED, close=False)(True)
    assert net.a.conn is not None
    assert net.a.conn.stats.time_limited_by_application_s > 3.0


@pytest.mark.parametrize(
    "impairment",
    [
        {"loss": 0.1},
        {"reorder": 0.2, "reorder_extra_s": 0.02},
        {"dup": 0.2},
        {"corrupt": 0.05},
        {"jitter_s": 0.01},
    ],
    ids=["loss", "reorder", "dup", "corrupt", "jitter"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_impaired(impairment: dict[str, Any], seed: int) -> None:
    calls = run_twice(request_response(seed, 30, (100, 3000), PLAIN, **impairment))
    assert calls["predicted"] > 0
    calls = run_twice(both_ways(seed, 200_000, FIXED, **impairment))
    assert calls["predicted"] > 0


def test_paused_reader_and_small_buffer() -> None:
    """Segments that overrun a small receive buffer leave the prediction for the general
    path; a connection whose reader is paused holds data back either way."""
    config = replace(FIXED, recv_buffer_bytes=4096, send_buffer_bytes=8192)

    def scenario(fast: bool) -> Network:
        cfg = replace(config, fast_paths=fast)
        net = pair(config_a=cfg, config_b=cfg)
        net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
        a, b = net.a.conn, net.b.conn
        assert a is not None and b is not None
        b.pause_reading()
        a.send(bytes(20_000))
        net.run_for(5.0)
        b.resume_reading()
        net.run(until=lambda: len(net.b.received) >= 20_000, max_time=600)
        a.close()
        b.close()
        net.run(max_time=600)
        return net

    run_twice(scenario)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rounds=st.integers(1, 12),
    request=st.integers(1, 5000),
    response=st.integers(1, 5000),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    reorder=st.sampled_from([0.0, 0.2]),
)
def test_any_exchange(
    seed: int, rounds: int, request: int, response: int, loss: float, reorder: float
) -> None:
    run_twice(
        request_response(
            seed,
            rounds,
            (request, response),
            PLAIN,
            loss=loss,
            reorder=reorder,
            reorder_extra_s=0.01,
        )
    )
