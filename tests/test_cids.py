"""Connection id layout (utcp.cids): the server id and worker bits every id an endpoint chooses
carries, SYN cookies included, so that a load balancer and the kernel's SO_REUSEPORT steering
can route by id."""

from __future__ import annotations

import random

import pytest

from tests.test_endpoint import Net, _establish
from utcp import Config
from utcp.cids import CidLayout
from utcp.cookies import SynCookies, pack_options
from utcp.endpoint import Endpoint

PEER = b"('127.0.0.1', 40000)"


def test_a_layout_fixes_the_top_bits_and_keeps_the_rest_random() -> None:
    layout = CidLayout(server_id=0x2A, server_bits=8, worker=5, worker_bits=3)
    assert layout.mask == 0xFFE00000
    rng = random.Random(3)
    for _ in range(200):
        raw = rng.getrandbits(32)
        cid = layout.apply(raw)
        assert cid >> 24 == 0x2A and layout.server_of(cid) == 0x2A
        assert layout.worker_of(cid) == 5
        assert cid & 0x1FFFFF == raw & 0x1FFFFF  # the random part untouched


def test_the_empty_layout_changes_nothing() -> None:
    layout = CidLayout()
    assert layout.mask == 0 and layout.apply(0xDEADBEEF) == 0xDEADBEEF


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_bits": 12, "worker_bits": 5},  # more than 16 fixed bits
        {"server_id": 256, "server_bits": 8},
        {"worker": 4, "worker_bits": 2},
        {"server_bits": -1},
    ],
)
def test_a_layout_that_cannot_hold_its_values_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CidLayout(**kwargs)


def test_config_checks_the_server_id_fits() -> None:
    with pytest.raises(ValueError, match="server_id"):
        Config(server_id_bits=4, server_id=16).validate()
    with pytest.raises(ValueError, match="server_id_bits"):
        Config(server_id_bits=17).validate()
    Config(server_id_bits=4, server_id=15).validate()


def test_server_connections_carry_the_server_id() -> None:
    net = Net(Config(server_id_bits=6, server_id=37))
    for i in range(20):
        client, server = _establish(net, ("10.0.1.1", 2000 + i))
        assert server.conn.local_cid >> 26 == 37
        assert client.conn.peer_cid == server.conn.local_cid


def test_a_worker_endpoint_chooses_ids_naming_itself() -> None:
    ep = Endpoint(
        Config(server_id_bits=2, server_id=1), now=0.0, accepting=True, worker=6, worker_bits=3
    )
    cids = {ep.connect(("10.0.0.9", 1), now=0.0).conn.local_cid for _ in range(50)}
    assert len(cids) == 50
    for cid in cids:
        assert ep.cid_layout.server_of(cid) == 1 and ep.cid_layout.worker_of(cid) == 6


def test_cookies_carry_the_fixed_bits_and_still_check() -> None:
    layout = CidLayout(server_id=3, server_bits=4, worker=1, worker_bits=2)
    jar = SynCookies(secret=b"k" * 32, layout=layout)
    plain = SynCookies(secret=b"k" * 32)
    opts = pack_options(1428, 7, True, True)
    for peer_cid in range(1, 200):
        cid, isn = jar.make(PEER, peer_cid, 99, opts, now=1.0)
        assert layout.server_of(cid) == 3 and layout.worker_of(cid) == 1
        assert cid & 0xFF == opts
        assert jar.check(PEER, peer_cid, 99, cid, isn, now=2.0) == opts
        # A cookie is the plain one with its top bits replaced, nothing else.
        plain_cid, plain_isn = plain.make(PEER, peer_cid, 99, opts, now=1.0)
        assert layout.apply(plain_cid) == cid and plain_isn == isn
        assert jar.check(PEER, peer_cid, 99, cid ^ 0x100, isn, now=2.0) is None


def test_a_cookie_connection_keeps_the_server_id() -> None:
    net = Net(Config(syn_cookies=True, server_id_bits=8, server_id=0xC3), backlog=0)
    _client, server = _establish(net)
    assert net.server.stats.syn_cookies_accepted == 1
    assert server.conn.local_cid >> 24 == 0xC3


def test_the_vectors_in_the_protocol_document() -> None:
    layout = CidLayout(server_id=0x2A, server_bits=8, worker=5, worker_bits=3)
    assert (layout.mask, layout.apply(0x12345678)) == (0xFFE00000, 0x2AB45678)
    assert CidLayout().apply(0x12345678) == 0x12345678


def test_worker_bits_name_every_worker_and_no_more() -> None:
    from utcp.cids import worker_bits_for

    assert [worker_bits_for(n) for n in (1, 2, 3, 4, 5, 8, 9, 64)] == [0, 1, 2, 2, 3, 3, 4, 6]
    with pytest.raises(ValueError):
        worker_bits_for(0)
