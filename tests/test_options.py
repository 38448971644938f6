"""What the SYN exchange negotiated (utcp/connection/options.py): an option is on only when
both SYNs offered it; the timestamp clock and its cost in option bytes."""

from __future__ import annotations

from utcp.config import Config
from utcp.connection.options import Negotiated
from utcp.packet import HEADER_SIZE, Flag, Packet

ALL_ON = Config(sack=True, timestamps=True, pmtud=True).validate()


def _syn(
    *,
    sack: bool = False,
    ts: tuple[int, int] | None = None,
    wscale: int | None = None,
    probe: bool = False,
) -> Packet:
    p = Packet(Flag.SYN, 9, 0, 1234, 0, 65535, mss=1400)
    p.sack_permitted = sack
    p.timestamps = ts
    p.wscale = wscale
    p.probe_permitted = probe
    return p


def test_nothing_is_on_before_the_peer_syn() -> None:
    opts = Negotiated(ALL_ON)
    assert (opts.sack_ok, opts.ts_ok, opts.wscale_ok, opts.pmtud_ok) == (False,) * 4
    assert opts.ts_cost == 0


def test_the_mss_announced_is_what_the_largest_datagram_carries_with_pmtud() -> None:
    assert Negotiated(Config(pmtud=True, max_datagram_bytes=9000)).adv_mss == 9000 - HEADER_SIZE
    assert Negotiated(Config(pmtud=False, mss_bytes=1300)).adv_mss == 1300


def test_sack_needs_both_ends() -> None:
    """RFC 2018 section 2: SACK is used only when both SYNs carried SACK-permitted."""
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(sack=True), ALL_ON)
    assert opts.sack_ok
    opts.learn(_syn(sack=False), ALL_ON)
    assert not opts.sack_ok
    no_sack = Config(sack=False)
    opts = Negotiated(no_sack)
    opts.learn(_syn(sack=True), no_sack)
    assert not opts.sack_ok


def test_timestamps_offered_are_accepted_and_the_peer_value_is_kept_to_echo() -> None:
    """RFC 7323 section 3.2: timestamps are on when the SYN carried them and the SYN-ACK
    answers (a passive end accepts an offer whatever it would offer itself, as TCP does); a
    SYN-ACK's timestamps count only if our SYN offered them.  TS.Recent starts from the TSval."""
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(ts=(0xDEADBEEF, 0)), ALL_ON)
    assert opts.ts_ok
    assert opts.ts_recent == 0xDEADBEEF
    off = Config(timestamps=False)
    opts = Negotiated(off)
    opts.learn(_syn(ts=(7, 0)), off)
    assert opts.ts_ok  # a SYN's offer: accepted
    syn_ack = _syn(ts=(7, 1))
    syn_ack.flags |= Flag.ACK
    opts = Negotiated(off)
    opts.learn(syn_ack, off)
    assert not opts.ts_ok  # a SYN-ACK answering no offer of ours
    ledbat = Config(congestion_control="ledbat")
    assert ledbat.offers_timestamps and not off.offers_timestamps
    opts = Negotiated(ledbat)
    opts.learn(syn_ack, ledbat)
    assert opts.ts_ok  # the delay-based controller offered them
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(ts=None), ALL_ON)
    assert not opts.ts_ok


def test_window_scaling_is_on_when_the_peer_sent_the_option_even_a_zero_shift() -> None:
    """RFC 7323 section 2.2: a WSCALE option of 0 still enables scaling (both directions)."""
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(wscale=0), ALL_ON)
    assert opts.wscale_ok
    opts.learn(_syn(wscale=None), ALL_ON)
    assert not opts.wscale_ok


def test_path_mtu_discovery_needs_both_ends() -> None:
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(probe=True), ALL_ON)
    assert opts.pmtud_ok
    opts.learn(_syn(probe=False), ALL_ON)
    assert not opts.pmtud_ok
    off = Config(pmtud=False)
    opts = Negotiated(off)
    opts.learn(_syn(probe=True), off)
    assert not opts.pmtud_ok


def test_timestamps_cost_twelve_option_bytes_per_segment() -> None:
    """The 10-byte TIMESTAMPS option padded to a 4-byte boundary (RFC 7323 appendix A)."""
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(ts=(1, 0)), ALL_ON)
    assert opts.ts_cost == 12
    opts.learn(_syn(), ALL_ON)
    assert opts.ts_cost == 0


def test_ts_now_is_the_millisecond_clock_truncated_to_32_bits() -> None:
    """RFC 7323 section 5.4: TSval is a 32-bit clock that wraps."""
    opts = Negotiated(ALL_ON)
    assert opts.ts_now() == 0
    opts.clock_ms = 1234.9
    assert opts.ts_now() == 1234
    opts.clock_ms = float((1 << 32) + 5)
    assert opts.ts_now() == 5


def test_everything_offered_is_agreed_at_once() -> None:
    opts = Negotiated(ALL_ON)
    opts.learn(_syn(sack=True, ts=(42, 0), wscale=7, probe=True), ALL_ON)
    assert (opts.sack_ok, opts.ts_ok, opts.wscale_ok, opts.pmtud_ok) == (True,) * 4
    assert opts.ts_recent == 42
