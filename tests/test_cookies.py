"""SYN cookies (utcp.cookies): made and checked statelessly, bound to the SYN and the address,
carrying the handshake options, expiring after one to two lifetimes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from utcp.cookies import MSS_CLASSES, SynCookies, pack_options, unpack_options

PEER = b"('127.0.0.1', 40000)"


def test_cookie_round_trip_carries_the_options() -> None:
    jar = SynCookies(secret=b"k" * 32)
    opts = pack_options(1428, 7, True, False)
    cid, isn = jar.make(PEER, 0x1234, 99, opts, now=10.0)
    assert jar.check(PEER, 0x1234, 99, cid, isn, now=11.0) == opts
    assert unpack_options(opts) == (1428, 7, True, False)


@pytest.mark.parametrize(
    "change",
    ["peer", "peer_cid", "peer_isn", "cid", "isn", "options bits", "secret"],
)
def test_a_cookie_checks_only_for_exactly_its_syn(change: str) -> None:
    jar = SynCookies(secret=b"k" * 32)
    opts = pack_options(1428, None, True, True)
    cid, isn = jar.make(PEER, 0x1234, 99, opts, now=0.0)
    args = {"peer": PEER, "peer_cid": 0x1234, "peer_isn": 99, "cid": cid, "isn": isn}
    checker = jar
    if change == "peer":
        args["peer"] = b"('127.0.0.1', 40001)"
    elif change == "peer_cid":
        args["peer_cid"] = 0x1235
    elif change == "peer_isn":
        args["peer_isn"] = 100
    elif change == "cid":
        args["cid"] = cid ^ 0x100
    elif change == "isn":
        args["isn"] = isn ^ 1
    elif change == "options bits":
        args["cid"] = cid ^ 0x40  # flip the SACK bit: the hash covers the options too
    else:
        checker = SynCookies(secret=b"j" * 32)
    assert (
        checker.check(
            args["peer"], args["peer_cid"], args["peer_isn"], args["cid"], args["isn"], now=1.0
        )
        is None
    )


def test_cookies_expire() -> None:
    jar = SynCookies(secret=b"k" * 32, lifetime_s=10.0)
    cid, isn = jar.make(PEER, 1, 2, 0, now=5.0)
    assert jar.check(PEER, 1, 2, cid, isn, now=19.9) is not None  # the next period still holds
    assert jar.check(PEER, 1, 2, cid, isn, now=20.0) is None


def test_each_endpoint_has_its_own_secret() -> None:
    a, b = SynCookies(), SynCookies()
    assert a.make(PEER, 1, 2, 0, now=0.0) != b.make(PEER, 1, 2, 0, now=0.0)


@given(
    mss=st.one_of(st.none(), st.integers(0, 65535)),
    wscale=st.one_of(st.none(), st.integers(0, 14)),
    sack=st.booleans(),
    ts=st.booleans(),
)
def test_options_pack_into_eight_bits(
    mss: int | None, wscale: int | None, sack: bool, ts: bool
) -> None:
    bits = pack_options(mss, wscale, sack, ts)
    assert 0 <= bits < 256
    got_mss, got_ws, got_sack, got_ts = unpack_options(bits)
    assert (got_ws, got_sack, got_ts) == (wscale, sack, ts)
    assert got_mss in MSS_CLASSES
    assert got_mss <= max(mss if mss is not None else 536, MSS_CLASSES[0])
