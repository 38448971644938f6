"""1 MiB both ways at once through every impairment of the fake network, seeded and repeatable.

Each case checks the bytes arrive intact, in order and exactly once, and that both sides then
close cleanly.  The seed is in the test id, so a failure names the exact scenario to replay.
"""

from __future__ import annotations

import random

import pytest

from tests.helpers import Link, Network, pair
from utcp import Config, ConnectionState

S = ConnectionState
MIB = 1 << 20

SCENARIOS: dict[str, dict[str, object]] = {
    "clean": {},
    "loss10": {"loss": 0.10},
    "loss30": {"loss": 0.30},
    "reorder": {"reorder": 0.10, "reorder_extra_s": 0.030},
    "duplicate": {"dup": 0.10},
    "corrupt": {"corrupt": 0.01},
    "jitter": {"jitter_s": 0.020},
}


PATH_MTU = 1500  # an Internet path: PMTU discovery runs under every impairment, and the
# datagrams stay many enough for a per-datagram impairment (1% corruption) to occur


def _links(seed: int, impairment: dict[str, object]) -> tuple[Link, Link]:
    return (
        Link(rng=random.Random(seed * 2), mtu=PATH_MTU, **impairment),  # type: ignore[arg-type]
        Link(rng=random.Random(seed * 2 + 1), mtu=PATH_MTU, **impairment),  # type: ignore[arg-type]
    )


def _config(name: str) -> Config:
    """The configuration of both ends for a scenario.  At 30% loss each way, RFC 6298's
    backoff makes silences of 25-50 s a matter of course: TCP's patience there (no idle
    timeout, no keepalive, more FIN retries), not the defaults that take them for a vanished
    peer (tests/test_matrix.py's 30% copy does the same)."""
    if name == "loss30":
        return Config(idle_timeout_s=None, keepalive_idle_s=None, fin_retries=15)
    return Config()


def _transfer_both_ways(net: Network, seed: int, size: int = MIB) -> None:
    data_a = random.Random(seed).randbytes(size)
    data_b = random.Random(seed + 1000).randbytes(size)
    net.run(until=lambda: net.b.conn is not None and net.b.conn.state is S.ESTABLISHED)
    assert net.a.conn is not None and net.b.conn is not None
    net.a.conn.send(data_a)
    net.b.conn.send(data_b)
    net.run(
        until=lambda: len(net.b.received) >= size and len(net.a.received) >= size,
        max_time=3000,
    )
    assert len(net.b.received) == size, f"seed={seed}: a->b length"
    assert len(net.a.received) == size, f"seed={seed}: b->a length"
    assert bytes(net.b.received) == data_a, f"seed={seed}: a->b bytes differ"
    assert bytes(net.a.received) == data_b, f"seed={seed}: b->a bytes differ"
    net.a.conn.close()
    net.b.conn.close()
    net.run(max_time=3000)
    assert net.a.conn.state is S.CLOSED, f"seed={seed}"
    assert net.b.conn.state is S.CLOSED, f"seed={seed}"
    assert net.a.eof and net.b.eof


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_one_mib_both_ways(name: str, seed: int) -> None:
    a_to_b, b_to_a = _links(seed, SCENARIOS[name])
    config = _config(name)
    net = pair(a_to_b=a_to_b, b_to_a=b_to_a, config_a=config, config_b=config)
    _transfer_both_ways(net, seed)
    if name == "corrupt":
        assert a_to_b.corrupted and b_to_a.corrupted
        assert net.a.conn is not None and net.b.conn is not None
        dropped = net.a.conn.stats.datagrams_dropped + net.b.conn.stats.datagrams_dropped
        assert dropped >= a_to_b.corrupted + b_to_a.corrupted - 2  # a corrupt dup may be moot
    if name.startswith("loss"):
        assert net.a.conn is not None
        assert net.a.conn.stats.retransmissions > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_five_second_blackhole_mid_transfer(seed: int) -> None:
    a_to_b, b_to_a = _links(seed, {})
    a_to_b.blackhole = b_to_a.blackhole = (0.1, 5.1)
    net = pair(a_to_b=a_to_b, b_to_a=b_to_a)
    _transfer_both_ways(net, seed)
    assert a_to_b.dropped > 0 and b_to_a.dropped > 0
    assert net.a.conn is not None and net.a.conn.stats.timeouts >= 1


@pytest.mark.parametrize("seed", [3])
def test_sequence_numbers_wrap_during_transfer(seed: int) -> None:
    a_to_b, b_to_a = _links(seed, {"loss": 0.05})
    net = pair(a_to_b=a_to_b, b_to_a=b_to_a, isn_a=2**32 - 10_000, isn_b=2**32 - 1)
    _transfer_both_ways(net, seed, size=256 * 1024)
    seqs = [s.packet.seq for s in net.trace if s.src == "a"]
    assert any(s > 2**32 - 20_000 for s in seqs) and any(s < 300_000 for s in seqs)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 30))
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_soak_many_seeds(name: str, seed: int) -> None:
    a_to_b, b_to_a = _links(seed, SCENARIOS[name])
    config = _config(name)
    _transfer_both_ways(pair(a_to_b=a_to_b, b_to_a=b_to_a, config_a=config, config_b=config), seed)
