"""The sans-I/O endpoint (utcp.endpoint) on a fake network with a fake clock, no sockets:
routing by connection id, resets within their budget, SYN cookies, the backlog and
max_connections, anti-amplification, and malformed datagrams counted and dropped."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from utcp import Config, ConnectionState, Flag, Packet, decode, encode
from utcp.endpoint import (
    AMPLIFICATION_FACTOR,
    COOKIE_GRACE_S,
    Address,
    ConnectionEvicted,
    Endpoint,
    Route,
)
from utcp.events import ConnectionEstablished, DataReceived, DropReason

S = ConnectionState
CLIENT: Address = ("10.0.0.1", 4000)
SERVER: Address = ("10.0.0.2", 5000)
STRANGER: Address = ("10.9.9.9", 9999)
SECRET = b"k" * 32


def _cids(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.getrandbits(32)


class Net:
    """A server endpoint and client endpoints on one fake network and one fake clock.

    Every datagram is delivered in order, at once; what goes to an address with no endpoint
    (a spoofed peer) is kept in ``stray`` for the test to read."""

    def __init__(self, server: Config | None = None, *, backlog: int = 100, seed: int = 1):
        self.now = 0.0
        self.seed = seed
        self.server = Endpoint(
            server or Config(),
            now=0.0,
            accepting=True,
            backlog=backlog,
            cookie_secret=SECRET,
            cid_source=_cids(seed),
        )
        self.endpoints: dict[Address, Endpoint] = {SERVER: self.server}
        self.stray: list[tuple[bytes, Address]] = []
        self.events: list[ConnectionEvicted] = []
        self.received: dict[int, bytearray] = {}  # local cid -> bytes delivered in order

    def add_client(self, addr: Address = CLIENT, config: Config | None = None) -> Endpoint:
        ep = Endpoint(config or Config(), now=self.now, cid_source=_cids(self.seed + len(addr)))
        self.endpoints[addr] = ep
        return ep

    def send(self, data: bytes, src: Address, dst: Address = SERVER) -> Route | None:
        """Deliver one datagram; the route that took it."""
        return self.endpoints[dst].receive_datagram(data, src, now=self.now)

    def outgoing(self, addr: Address) -> list[tuple[bytes, Address]]:
        """What the endpoint at ``addr`` has to send now: stateless answers first."""
        ep = self.endpoints[addr]
        out = ep.datagrams_to_send()
        while (event := ep.next_event()) is not None:
            self.events.append(event)
        for route in ep.routes():
            dst = route.addr if route.addr is not None else SERVER
            out += [(d, dst) for d in ep.datagrams_for(route, now=self.now)]
            while (ev := route.conn.next_event()) is not None:
                if isinstance(ev, ConnectionEstablished):
                    ep.leave_backlog(route)
                elif isinstance(ev, DataReceived):
                    self.received.setdefault(route.conn.local_cid, bytearray()).extend(ev.data)
            if route.conn.is_finished:
                ep.leave_backlog(route)
                ep.forget(route, now=self.now)
        return out

    def pump(self, rounds: int = 20) -> None:
        """Exchange datagrams until nobody has anything to send."""
        for _ in range(rounds):
            moved = False
            for src in list(self.endpoints):
                for data, dst in self.outgoing(src):
                    moved = True
                    if dst in self.endpoints:
                        self.send(data, src, dst)
                    else:
                        self.stray.append((data, dst))
            if not moved:
                return
        raise AssertionError(f"the network never went quiet (seed={self.seed})")

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing every connection timer due on the way."""
        end = self.now + seconds
        while True:
            due = [
                (t, r)
                for ep in self.endpoints.values()
                for r in ep.routes()
                if (t := r.conn.get_timer()) is not None and t <= end
            ]
            if not due:
                break
            t, route = min(due, key=lambda d: d[0])
            self.now = max(self.now, t)
            route.conn.handle_timer(now=self.now)
            self.pump()
        self.now = end


def _syn(src_cid: int, seq: int = 100) -> bytes:
    p = Packet(int(Flag.SYN), src_cid, 0, seq, 0, 65535)
    p.mss = 1400
    p.sack_permitted = True
    return encode(p)


def _data_for(dst_cid: int, payload: bytes = b"hello") -> bytes:
    return encode(Packet(int(Flag.ACK), 0x77, dst_cid, 1, 1, 1000, payload))


def _establish(net: Net, addr: Address = CLIENT) -> tuple[Route, Route]:
    client = net.endpoints.get(addr) or net.add_client(addr)
    route = client.connect(None, now=net.now)
    net.pump()
    assert route.conn.state is S.ESTABLISHED, f"seed={net.seed}"
    server_route = net.server.route_for(route.conn.peer_cid)
    assert server_route is not None and server_route.conn.state is S.ESTABLISHED
    return route, server_route


# ---------------------------------------------------------------------- routing


def test_each_client_is_routed_to_its_own_server_connection() -> None:
    net = Net()
    a, sa = _establish(net, CLIENT)
    b, sb = _establish(net, ("10.0.0.3", 4001))
    assert net.server.connection_count == 2 and sa is not sb
    assert sa.addr == CLIENT and sa.conn.peer_cid == a.conn.local_cid
    a.conn.send(b"from a")
    b.conn.send(b"from b")
    net.pump()
    got = {r.addr: bytes(net.received[r.conn.local_cid]) for r in (sa, sb)}
    assert got == {CLIENT: b"from a", ("10.0.0.3", 4001): b"from b"}
    assert net.server.half_open == 0


def test_a_retransmitted_syn_reaches_the_connection_it_opened() -> None:
    net = Net()
    first = net.send(_syn(0x55), CLIENT)
    again = net.send(_syn(0x55), CLIENT)
    assert first is not None and again is first
    assert net.server.connection_count == 1 and net.server.half_open == 1


def test_a_known_connection_id_from_another_address_is_dropped() -> None:
    net = Net()
    _, server_route = _establish(net)
    cid = server_route.conn.local_cid
    assert net.send(_data_for(cid), STRANGER) is None
    assert net.server.stats.dropped == {DropReason.WRONG_ADDRESS.value: 1}
    assert net.server.datagrams_to_send() == []


def test_a_syn_to_an_endpoint_that_does_not_accept_is_reset() -> None:
    net = Net()
    client = net.add_client()
    assert client.receive_datagram(_syn(0x42), STRANGER, now=0.0) is None
    ((rst, to),) = client.datagrams_to_send()
    assert to == STRANGER and decode(rst).flags & Flag.RST and decode(rst).dst_cid == 0x42
    assert client.connection_count == 0


# ---------------------------------------------------------------------- resets


def test_an_unknown_connection_id_draws_a_reset() -> None:
    net = Net()
    assert net.send(_data_for(0xDEAD), STRANGER) is None
    ((rst, to),) = net.server.datagrams_to_send()
    p = decode(rst)
    assert to == STRANGER and p.flags == Flag.RST and p.dst_cid == 0x77 and p.seq == 1
    assert net.server.stats.resets_sent == 1
    assert net.server.stats.dropped == {DropReason.UNKNOWN_CONNECTION.value: 1}


def test_a_reset_is_never_answered() -> None:
    net = Net()
    net.send(encode(Packet(int(Flag.RST), 0x77, 0xDEAD, 1, 0, 0)), STRANGER)
    assert net.server.datagrams_to_send() == [] and net.server.stats.resets_sent == 0


def test_resets_stop_when_the_budget_is_spent_and_resume_as_it_refills() -> None:
    net = Net(Config(max_resets_per_s=5.0))
    for i in range(8):
        net.send(_data_for(0x1000 + i), STRANGER)
    stats = net.server.stats
    assert len(net.server.datagrams_to_send()) == 5
    assert (stats.resets_sent, stats.resets_rate_limited) == (5, 3)
    net.now += 0.2  # one token back at 5 per second
    net.send(_data_for(0x2000), STRANGER)
    net.send(_data_for(0x2001), STRANGER)
    assert len(net.server.datagrams_to_send()) == 1
    assert (stats.resets_sent, stats.resets_rate_limited) == (6, 4)


def test_the_last_acks_of_a_cleanly_closed_connection_draw_no_reset() -> None:
    net = Net()
    client, server = _establish(net)
    client.conn.close()
    net.pump()
    server.conn.close()
    net.pump()
    net.advance(0.5)
    assert server.ended and net.server.route_for(server.conn.local_cid) is None
    late_ack = encode(Packet(int(Flag.ACK), 0x77, server.conn.local_cid, 5, 5, 100))
    net.send(late_ack, CLIENT)
    assert net.server.datagrams_to_send() == []  # a copy of the final ACK: no reset
    net.now += 2 * net.server.config.msl_s + 1
    net.send(late_ack, CLIENT)
    assert len(net.server.datagrams_to_send()) == 1  # long after: a stray, reset


# ---------------------------------------------------------------------- SYN cookies


def _cookie_net() -> Net:
    return Net(Config(syn_cookies=True), backlog=0)


def test_a_syn_beyond_the_backlog_gets_a_cookie_and_the_client_connects() -> None:
    net = _cookie_net()
    route, server_route = _establish(net)
    stats = net.server.stats
    assert (stats.syn_cookies_sent, stats.syn_cookies_accepted) == (1, 1)
    # The server connection was rebuilt from the ACK: ids and options as negotiated.
    assert server_route.conn.local_cid == route.conn.peer_cid
    assert server_route.conn.peer_cid == route.conn.local_cid
    route.conn.send(b"through the cookie")
    net.pump()
    assert net.received[server_route.conn.local_cid] == b"through the cookie"


def test_a_cookie_syn_ack_keeps_no_state() -> None:
    net = _cookie_net()
    for i in range(50):
        assert net.send(_syn(0x100 + i, seq=i), ("10.1.0.1", 1000 + i)) is None
    answers = net.server.datagrams_to_send()
    assert len(answers) == 50 and all(decode(d).flags == Flag.SYN | Flag.ACK for d, _ in answers)
    assert net.server.connection_count == 0 and net.server.half_open == 0


def _cookie_ack(net: Net, *, tamper: str = "") -> tuple[bytes, Packet]:
    """A SYN from CLIENT answered with a cookie; the ACK that completes it (maybe forged)."""
    net.send(_syn(0x4242, seq=700), CLIENT)
    ((syn_ack, _),) = net.server.datagrams_to_send()
    sa = decode(syn_ack)
    cid, ack_of = sa.src_cid, (sa.seq + 1) & 0xFFFFFFFF
    if tamper == "cid":
        cid ^= 0x1000
    elif tamper == "isn":
        ack_of = (ack_of + 1) & 0xFFFFFFFF
    return encode(Packet(int(Flag.ACK), 0x4242, cid, 701, ack_of, 1000)), sa


@pytest.mark.parametrize("tamper", ["cid", "isn"])
def test_a_forged_cookie_opens_nothing(tamper: str) -> None:
    net = _cookie_net()
    ack, _ = _cookie_ack(net, tamper=tamper)
    assert net.send(ack, CLIENT) is None
    assert net.server.connection_count == 0 and net.server.stats.syn_cookies_accepted == 0
    # While cookies are out, a failed ACK may be a cookie client's later segment: no reset.
    assert net.server.datagrams_to_send() == []


def test_a_cookie_from_another_address_opens_nothing() -> None:
    net = _cookie_net()
    ack, _ = _cookie_ack(net)
    assert net.send(ack, STRANGER) is None
    assert net.server.connection_count == 0


def test_an_expired_cookie_opens_nothing_and_a_fresh_one_does() -> None:
    net = _cookie_net()
    ack, _ = _cookie_ack(net)
    net.now += 2 * COOKIE_GRACE_S + 1
    assert net.send(ack, CLIENT) is None
    assert net.server.connection_count == 0
    assert len(net.server.datagrams_to_send()) == 1  # out of cookie mode: a stray, reset
    ack, _ = _cookie_ack(net)
    route = net.send(ack, CLIENT)
    assert route is not None and route.conn.state is S.ESTABLISHED
    assert net.server.stats.syn_cookies_accepted == 1


def test_without_cookies_a_full_backlog_drops_syns() -> None:
    net = Net(Config(syn_cookies=False), backlog=2)
    for i in range(4):
        net.send(_syn(0x10 + i), ("10.1.0.1", 1000 + i))
    assert net.server.connection_count == 2 and net.server.half_open == 2
    assert net.server.stats.dropped == {DropReason.BACKLOG_FULL.value: 2}
    assert net.server.datagrams_to_send() == []


def test_a_syn_with_rst_opens_nothing_and_takes_no_backlog_slot() -> None:
    """SYN+RST is no connection request: it is dropped as for an unknown connection (and
    never answered, being a reset).  Each used to open a connection that stayed in LISTEN
    for ever, without a timer, holding a backlog slot: two shut this server to real SYNs."""
    net = Net(Config(syn_cookies=False), backlog=2)
    for i in range(4):
        p = Packet(int(Flag.SYN | Flag.RST), 0x10 + i, 0, 100, 0, 65535)
        net.send(encode(p), ("10.1.0.1", 1000 + i))
    assert net.server.connection_count == 0 and net.server.half_open == 0
    assert net.server.stats.dropped == {DropReason.UNKNOWN_CONNECTION.value: 4}
    assert net.server.datagrams_to_send() == []
    net.send(_syn(0x20), ("10.1.0.2", 2000))
    assert net.server.connection_count == 1 and net.server.half_open == 1


# ---------------------------------------------------------------------- max_connections


def test_max_connections_refuses_with_a_reason() -> None:
    net = Net(Config(max_connections=1))
    _establish(net)
    assert net.send(_syn(0x99), STRANGER) is None
    ((rst, to),) = net.server.datagrams_to_send()
    p = decode(rst)
    assert to == STRANGER and p.flags == Flag.RST | Flag.ACK and p.dst_cid == 0x99
    assert bytes(p.payload) == b"too many connections"
    assert net.server.stats.connections_refused == 1


def test_a_cookie_acked_at_max_connections_is_refused_with_the_reason() -> None:
    """Both SYNs came below the limit and got cookies (the backlog holds none); the second
    ACK comes at the limit: its client is reset with the reason and counted as refused (it
    had been dropped as an unknown connection, without a reset while cookies go out, and its
    client, whose connect had returned, waited for its idle timeout)."""
    net = Net(Config(syn_cookies=True, max_connections=1), backlog=0)
    first = net.add_client(CLIENT).connect(None, now=net.now)
    second = net.add_client(STRANGER).connect(None, now=net.now)
    delivered: list[tuple[bytes, Address]] = []
    deliver = net.send
    net.send = lambda data, src, dst=SERVER: (
        delivered.append((data, src)) or deliver(data, src, dst)
    )  # type: ignore[method-assign]
    net.pump()
    stats = net.server.stats
    assert (stats.syn_cookies_sent, stats.syn_cookies_accepted) == (2, 1)
    assert first.conn.state is S.ESTABLISHED and net.server.connection_count == 1
    assert second.conn.state is S.CLOSED and second.reset_detail == "too many connections"
    assert stats.connections_refused == 1
    assert stats.dropped == {DropReason.TOO_MANY_CONNECTIONS.value: 1}
    # Its first data segment passes the cookie check too: answered, not a second refusal.
    ack = next(d for d, src in delivered if src == STRANGER and decode(d).flags == Flag.ACK)
    deliver(ack, STRANGER)
    ((rst, to),) = net.server.datagrams_to_send()
    assert to == STRANGER and decode(rst).flags == Flag.RST
    assert stats.connections_refused == 1
    assert stats.dropped == {DropReason.TOO_MANY_CONNECTIONS.value: 2}


def test_at_max_connections_the_oldest_released_connection_makes_room() -> None:
    net = Net(Config(max_connections=2))
    _, old = _establish(net, CLIENT)
    _, kept = _establish(net, ("10.0.0.3", 4001))
    assert net.server.release(old) and not net.server.release(old)
    route = net.send(_syn(0x99), STRANGER)
    assert route is not None and net.server.connection_count == 2
    (event,) = [e for e in iter(net.server.next_event, None)]
    assert isinstance(event, ConnectionEvicted) and event.route is old
    assert old.ended and old.conn.state is S.CLOSED
    assert net.server.route_for(kept.conn.local_cid) is kept
    # The evicted connection's RST is the driver's to send.
    (rst,) = net.server.datagrams_for(old, now=net.now)
    assert decode(rst).flags & Flag.RST


def test_a_client_endpoint_at_max_connections_refuses_to_open_more() -> None:
    """``max_connections`` bounds a client endpoint's connections too: an open beyond it
    raises ConnectionRefusedError at once (it opened as many as asked), unless a connection
    winding down without its application makes room, as on the server."""
    net = Net()
    client = net.add_client(CLIENT, Config(max_connections=2))
    first, _ = _establish(net, CLIENT)
    _establish(net, CLIENT)
    with pytest.raises(ConnectionRefusedError, match="too many connections"):
        client.connect(None, now=net.now)
    assert client.connection_count == 2
    assert client.release(first)
    third = client.connect(None, now=net.now)
    assert client.connection_count == 2 and first.ended
    (event,) = [e for e in iter(client.next_event, None)]
    assert isinstance(event, ConnectionEvicted) and event.route is first
    net.pump()
    assert third.conn.state is S.ESTABLISHED


# ---------------------------------------------------------------------- anti-amplification


def test_an_unvalidated_address_gets_at_most_three_times_what_it_sent() -> None:
    net = Net()
    syn = _syn(0x31)
    route = net.send(syn, STRANGER)  # a spoofed SYN: nobody will answer
    assert route is not None and not route.validated and route.rx_bytes == len(syn)
    chunk = b"x" * len(syn)
    out = net.server.limit_amplification(route, [chunk] * 4)
    assert out == [chunk] * AMPLIFICATION_FACTOR
    assert net.server.stats.amplification_limited == 1
    assert route.tx_bytes == AMPLIFICATION_FACTOR * len(syn)
    net.send(syn, STRANGER)  # its retransmission: three times as much again
    assert route.rx_bytes == 2 * len(syn)
    assert len(net.server.limit_amplification(route, [chunk] * 4)) == AMPLIFICATION_FACTOR


def test_syn_retransmissions_never_draw_more_than_three_times_their_bytes() -> None:
    net = Net()
    syn = _syn(0x31)
    for _ in range(3):
        net.send(syn, STRANGER)
        net.pump()
        net.advance(1.0)
    net.advance(120.0)
    back = sum(len(d) for d, to in net.stray if to == STRANGER)
    assert 0 < back <= AMPLIFICATION_FACTOR * 3 * len(syn)


def test_the_handshake_validates_the_address() -> None:
    net = Net()
    _, server_route = _establish(net)
    server_route.conn.send(b"x" * 20_000)  # far beyond three times the client's bytes
    net.pump()
    assert server_route.validated and net.server.stats.amplification_limited == 0


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("seed", range(5))
def test_malformed_datagrams_are_counted_and_dropped(seed: int) -> None:
    rng = random.Random(seed)
    net = Net(seed=seed)
    _, server_route = _establish(net)
    before = dict(net.server.stats.dropped)
    valid = _data_for(server_route.conn.local_cid)
    sent = 0
    for _ in range(300):
        kind = rng.randrange(3)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 80))
        elif kind == 1:
            data = valid[: rng.randrange(len(valid))]
        else:
            flip = rng.randrange(len(valid))
            data = valid[:flip] + bytes([valid[flip] ^ (1 << rng.randrange(8))]) + valid[flip + 1 :]
        sent += 1
        net.send(data, CLIENT)  # never raises
    stats = net.server.stats
    dropped = sum(stats.dropped.values()) - sum(before.values())
    assert dropped == sent, f"seed={seed}"
    assert net.server.route_for(server_route.conn.local_cid) is server_route


def test_an_icmp_error_reaches_only_the_connection_it_quotes() -> None:
    net = Net()
    client = net.add_client()
    route = client.connect(SERVER, now=0.0)
    (syn,) = client.datagrams_for(route, now=0.0)
    assert client.receive_icmp(syn, STRANGER, port_unreachable=True, errno=111, now=0.1) is None
    assert client.receive_icmp(b"junk", SERVER, port_unreachable=True, errno=111, now=0.1) is None
    assert client.receive_icmp(syn, SERVER, port_unreachable=False, errno=90, now=0.1) is None
    assert client.stats.icmp_errors == 3 and client.stats.icmp_errors_ignored == 3
    assert client.receive_icmp(syn, SERVER, port_unreachable=True, errno=111, now=0.1) is route
