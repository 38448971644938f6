"""A connection's counters (utcp/counters.py) and the stats built from them."""

from __future__ import annotations

from tests.helpers import Link, establish, pair
from utcp import Config
from utcp.connection.counters import Counters
from utcp.events import DropReason


def test_drops_are_counted_in_total_and_by_reason() -> None:
    c = Counters()
    c.count_drop(DropReason.BAD_CHECKSUM)
    c.count_drop(DropReason.BAD_CHECKSUM)
    c.count_drop(DropReason.OUT_OF_WINDOW)
    assert c.dropped == 3
    assert c.drops == {DropReason.BAD_CHECKSUM: 2, DropReason.OUT_OF_WINDOW: 1}


def test_stats_report_what_the_connection_counted() -> None:
    """Segments and bytes both ways agree with what crossed the fake network, and a garbage
    datagram is one drop by reason."""
    cfg = Config(pmtud=False, keepalive_idle_s=None, keepalive_stall_s=None, idle_timeout_s=None)
    net = pair(config_a=cfg, config_b=cfg, a_to_b=Link(), b_to_a=Link())
    a, b = establish(net)
    a.send(b"x" * 10_000)
    net.run()
    b.receive_datagram(b"\x00" * 30, now=net.now)
    sa, sb = a.stats, b.stats
    assert (sa.bytes_sent, sb.bytes_received) == (10_000, 10_000)
    assert sa.segments_sent == sum(1 for s in net.trace if s.src == "a")
    assert sb.segments_sent == sum(1 for s in net.trace if s.src == "b")
    assert sb.datagrams_dropped == 1 and sum(sb.drops.values()) == 1
