"""Connections that follow their peer to a new address (utcp.endpoint, RFC 9000 section 9 as
the model), on the sans-I/O endpoint's fake network (tests/test_endpoint.py's ``Net``): a NAT
rebinding mid-transfer, a client on a new host, during the handshake and during the close,
with the first challenge lost; and what must not move a connection: a spoofed source, a
replayed datagram, a wrong echo, a second new address while one is being validated."""

from __future__ import annotations

import random

import pytest

from tests.helpers import Link, establish, pair
from tests.test_endpoint import CLIENT, SERVER, STRANGER, Net, _establish
from utcp import Config, ConnectionState, Flag, decode
from utcp.endpoint import (
    AMPLIFICATION_FACTOR,
    PATH_CHALLENGE_TRIES,
    PATH_HELD_MAX,
    PATH_HELD_MAX_BYTES,
    PATH_RETURN_HOLD_S,
    Address,
    PathValidation,
    Route,
)
from utcp.events import DropReason
from utcp.packet import Packet, encode
from utcp.trace import ListTracer

S = ConnectionState
REBOUND: Address = (CLIENT[0], CLIENT[1] + 1)  # the NAT's new port for the same host
MOVED: Address = ("10.0.0.7", 4000)  # another host: the client moved networks


def _rebind(net: Net, new: Address, old: Address = CLIENT) -> None:
    """The client's datagrams come from ``new`` from now on; what is sent to ``old`` is lost
    (kept in ``net.stray``)."""
    net.endpoints[new] = net.endpoints.pop(old)


def _once(net: Net, src: Address) -> int:
    """Deliver what the endpoint at ``src`` has to send now, once (no answers); its bytes
    (what goes to an address nobody is at is kept in ``net.stray``)."""
    total = 0
    for data, dst in net.outgoing(src):
        total += len(data)
        if dst in net.endpoints:
            net.send(data, src, dst)
        else:
            net.stray.append((data, dst))
    return total


def _moved_and_challenged(net: Net, client: Route, data: bytes) -> None:
    """The client rebinds and sends ``data``; the server takes it and challenges, and
    nothing more is delivered."""
    _rebind(net, REBOUND)
    client.conn.send(data)
    _once(net, REBOUND)


def _send(net: Net, route: Route, data: bytes) -> None:
    route.conn.send(data)
    net.pump()


def _server_bytes(net: Net, server: Route) -> bytes:
    return bytes(net.received.get(server.conn.local_cid, b""))


def _challenges(datagrams: list[tuple[bytes, Address]]) -> list[tuple[int, Address]]:
    out = []
    for data, addr in datagrams:
        p = decode(data)
        if p.path_challenge is not None:
            out.append((p.path_challenge, addr))
    return out


def test_a_nat_rebinding_mid_transfer_is_followed_and_keeps_the_path_state() -> None:
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"a" * 3000)
    srtt, cwnd = server.conn.stats.srtt_s, server.conn.stats.cwnd_bytes
    tracer = ListTracer()
    server.conn.set_tracer(tracer, now=net.now)
    _rebind(net, REBOUND)
    _send(net, client, b"b" * 3000)
    assert server.addr == CLIENT and _server_bytes(net, server) == b"a" * 3000
    net.advance(1.0)  # the old address, challenged too, has not answered within an RTO
    assert server.addr == REBOUND
    assert _server_bytes(net, server) == b"a" * 3000 + b"b" * 3000
    stats = net.server.stats
    assert (stats.path_validations, stats.path_changes, stats.path_validations_failed) == (1, 1, 0)
    # One challenge to the new address, and one to the old, where nobody answers any more.
    assert stats.path_challenges_sent == 2 and stats.path_returns == 0
    assert [addr for _, addr in _challenges(net.stray)] == [CLIENT]
    (moved,) = tracer.named("path_changed")
    assert moved.fields == {"peer": "10.0.0.1:4001", "same_host": True}
    challenge = [e for e in tracer.named("datagram_sent") if "path_challenge" in e.fields]
    echo = [e for e in tracer.named("datagram_received") if "path_response" in e.fields]
    assert (len(challenge), len(echo)) == (2, 1)
    # Only the port changed: the same path, its RTT estimate and window kept.
    assert server.conn.stats.srtt_s == srtt and server.conn.stats.cwnd_bytes >= cwnd
    # The server's own data now reaches the client at its new address.
    server.conn.send(b"reply")
    net.pump()
    assert bytes(net.received[client.conn.local_cid]) == b"reply"


def test_a_client_on_a_new_host_is_followed_and_the_path_state_starts_over() -> None:
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"x" * 20_000)
    assert server.conn.stats.srtt_s is not None
    _rebind(net, MOVED)
    _send(net, client, b"y" * 100)
    net.advance(1.0)
    assert server.addr == MOVED
    assert server.conn.stats.srtt_s == 0  # the challenge's round trip, on an instant network
    assert (
        server.conn.stats.cwnd_bytes == server.conn.config.initial_cwnd_segments * server.conn.mss
    )
    assert _server_bytes(net, server) == b"x" * 20_000 + b"y" * 100


def test_a_new_hosts_rtt_starts_from_the_challenges_round_trip() -> None:
    """The challenge to the new host and its echo take 50 ms each way: the restarted RTT
    estimate starts from that 100 ms sample (RTO 300 ms, RFC 6298's first sample), not
    from nothing with the initial 1 s RTO, which data lost with the old address then
    waited out."""
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"x" * 20_000)
    _rebind(net, MOVED)
    client.conn.send(b"y" * 100)
    _once(net, MOVED)  # the server takes it and challenges the new address
    net.now += 0.05
    _once(net, SERVER)  # the challenge arrives; the client echoes it
    net.now += 0.05
    _once(net, MOVED)  # the echo arrives; the path changes once the old address is silent
    net.advance(1.0)
    assert server.addr == MOVED
    assert server.conn.stats.srtt_s == pytest.approx(0.1)
    assert server.conn.stats.rto_s == pytest.approx(0.3)
    net.pump()
    assert _server_bytes(net, server) == b"x" * 20_000 + b"y" * 100


def test_until_the_move_nothing_from_the_new_address_reaches_the_connection() -> None:
    """The client's data from its new address is kept, not taken: the server challenges
    the new address and the old one and sends nothing else.  Once the new address has
    echoed and the old one has stayed silent for an RTO, the connection moves and takes
    what was kept: the data arrives, and is acknowledged at the new address."""
    net = Net()
    client, server = _establish(net)
    _rebind(net, REBOUND)
    client.conn.send(b"h" * 3000)
    for data, dst in net.outgoing(REBOUND):
        net.send(data, REBOUND, dst)
    assert server.addr == CLIENT and server.path is not None
    out = net.outgoing(SERVER)
    assert sorted(where for _, where in _challenges(out)) == sorted([REBOUND, CLIENT])
    assert all(decode(data).path_challenge is not None for data, _ in out)
    assert _server_bytes(net, server) == b""
    for data, dst in out:
        if dst == REBOUND:
            net.send(data, SERVER, REBOUND)  # the challenge; the client echoes at once
    _once(net, REBOUND)
    assert server.addr == CLIENT  # the old address may yet answer
    net.advance(1.0)
    assert server.addr == REBOUND
    assert _server_bytes(net, server) == b"h" * 3000
    assert client.conn.stats.bytes_in_flight == 0


def test_a_spoofed_source_never_moves_the_connection() -> None:
    """Someone who saw the client's latest ACK sends a copy of it first, from another
    address: it is news to the server, which challenges that address, and the client's too;
    the client answers where it is, the validation is abandoned, and the real client keeps
    working from where it was while the copy keeps coming."""
    net = Net()
    client, server = _establish(net)
    server.conn.send(b"s" * 5000)  # several segments: the client acknowledges at once
    for data, dst in net.outgoing(SERVER):
        net.send(data, SERVER, dst)
    acks = [data for data, _ in net.outgoing(CLIENT)]  # the client's ACKs, seen on the way
    ack = acks[0]
    assert net.send(ack, STRANGER) is server  # the copy gets there first
    assert server.path is not None and server.home is not None
    for data in acks:
        net.send(data, CLIENT)
    net.pump()
    assert server.addr == CLIENT and server.path is None
    for _ in range(PATH_CHALLENGE_TRIES + 2):
        _send(net, client, b"real")  # the real client carries on ...
        net.send(ack, STRANGER)  # ... while the copy keeps coming
        net.advance(2.0)
    assert server.addr == CLIENT
    stats = net.server.stats
    assert (stats.path_changes, stats.path_returns, stats.path_validations_failed) == (0, 1, 0)
    assert stats.path_challenges_sent == 2
    assert {addr for _, addr in _challenges(net.stray)} == {STRANGER}
    assert _server_bytes(net, server) == b"real" * (PATH_CHALLENGE_TRIES + 2)


def _held(net: Net, client: Route, at: Address, data: bytes) -> list[Packet]:
    """The datagrams the client sends for ``data`` from ``at``, taken off the wire."""
    client.conn.send(data)
    return [decode(d) for d, _ in net.outgoing(at)]


def test_a_wrong_echo_moves_nothing() -> None:
    net = Net()
    client, server = _establish(net)
    _moved_and_challenged(net, client, b"hello")
    assert server.path is not None
    (wrong, *_) = _held(net, client, REBOUND, b"more")
    wrong.path_response = server.path.token ^ 1
    net.send(encode(wrong), REBOUND)
    assert server.addr == CLIENT and net.server.stats.path_changes == 0
    wrong.path_response = server.path.token  # the right token, from the wrong address
    net.send(encode(wrong), MOVED)
    assert server.addr == CLIENT and net.server.stats.path_changes == 0


def test_a_replayed_old_datagram_starts_no_validation() -> None:
    net = Net()
    client, server = _establish(net)
    client.conn.send(b"old news")
    captured = [data for data, _ in net.outgoing(CLIENT)]
    for data in captured:
        net.send(data, CLIENT)
    net.pump()
    for data in captured:  # replayed later, from elsewhere
        assert net.send(data, STRANGER) is None
    stats = net.server.stats
    assert stats.path_validations == 0 and stats.path_challenges_sent == 0
    assert stats.dropped[DropReason.WRONG_ADDRESS.value] == len(captured)
    assert net.server.datagrams_to_send() == []
    assert _server_bytes(net, server) == b"old news"


def test_challenges_stay_within_three_times_what_the_new_address_sent() -> None:
    net = Net()
    client, server = _establish(net)
    _rebind(net, REBOUND)
    client.conn.send(b"z")
    received = 0
    for data, dst in net.outgoing(REBOUND):
        received += len(data)
        net.send(data, REBOUND, dst)
    for _ in range(5):
        net.now += 1.0
        net.server.receive_datagram(b"", REBOUND, now=net.now)  # malformed: counted, dropped
    sent = sum(len(d) for d, a in net.server.datagrams_to_send() if a == REBOUND)
    assert 0 < sent <= AMPLIFICATION_FACTOR * received
    assert server.path is not None and server.path.tx_bytes <= AMPLIFICATION_FACTOR * received


def test_a_second_new_address_waits_while_one_is_validated() -> None:
    net = Net()
    client, server = _establish(net)
    _moved_and_challenged(net, client, b"one")
    (other, *_) = _held(net, client, REBOUND, b"two")
    assert net.send(encode(other), MOVED) is None
    assert net.server.stats.path_validations_limited == 1
    assert server.path is not None and server.path.addr == REBOUND


def test_a_lost_challenge_is_sent_again_when_the_peer_retransmits() -> None:
    net = Net()
    client, server = _establish(net)
    _rebind(net, REBOUND)
    client.conn.send(b"q" * 2000)
    for data, dst in net.outgoing(REBOUND):
        net.send(data, REBOUND, dst)
    lost = net.outgoing(SERVER)  # the first challenges (and the ACKs to the old address) lost
    assert {addr for _, addr in _challenges(lost)} == {REBOUND, CLIENT}
    net.advance(10.0)  # the client retransmits from its new address; challenged again
    assert server.addr == REBOUND
    assert net.server.stats.path_challenges_sent == 3
    assert _server_bytes(net, server) == b"q" * 2000


def test_a_rebinding_during_the_handshake_completes_it_at_the_new_address() -> None:
    net = Net()
    endpoint = net.add_client(CLIENT)
    client = endpoint.connect(None, now=net.now)
    for data, dst in net.outgoing(CLIENT):  # the SYN
        net.send(data, CLIENT, dst)
    for data, dst in net.outgoing(SERVER):  # the SYN-ACK, to the old binding
        net.send(data, SERVER, dst)
    _rebind(net, REBOUND)
    net.pump()  # the handshake's ACK comes from the new port
    server = net.server.route_for(client.conn.peer_cid)
    assert server is not None and server.conn.state is S.ESTABLISHED
    _send(net, client, b"after")
    net.advance(1.0)
    assert server.addr == REBOUND and _server_bytes(net, server) == b"after"


def test_a_rebinding_during_the_close_still_closes_cleanly() -> None:
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"bye")
    _rebind(net, REBOUND)
    client.conn.close()
    net.pump()
    server.conn.close()
    net.pump()
    net.advance(10.0)
    assert client.conn.close_reason is not None and server.conn.close_reason is not None
    assert client.conn.close_reason.value == server.conn.close_reason.value == "closed"
    assert net.server.stats.path_changes == 1


def test_a_fin_that_timed_out_on_the_old_address_is_resent_not_given_up() -> None:
    """The NAT rebinds after the client's FIN was acknowledged and before the server's came:
    the server's FIN goes to the dead binding and times out through all its ``fin_retries``
    before the client's keepalive shows its new address.  Validated, the server resends at
    once, and that resend is the first the peer can hear, not one more unanswered retry.
    (Counted as one, it made the server give up and close, taking every byte as delivered,
    while the client never heard the FIN and timed out: a ``utcp cat`` copy through a relay
    rebinding every second ended "no answer for 30 s" that way.)"""
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"bye")
    client.conn.close()
    net.pump()
    assert client.conn.state is S.FIN_WAIT_2
    _rebind(net, REBOUND)
    server.conn.close()
    net.pump()  # the FIN, lost at the old binding
    net.advance(14.0)
    assert server.conn.stats.timeouts == server.conn.config.fin_retries
    assert server.addr == CLIENT and server.conn.state is S.LAST_ACK
    net.advance(6.0)  # the client's keepalive (15 s) finds the server
    assert server.addr == REBOUND
    assert client.conn.close_reason is not None and server.conn.close_reason is not None
    assert client.conn.close_reason.value == server.conn.close_reason.value == "closed"


def test_a_fin_from_a_new_address_in_time_wait_is_acknowledged_there() -> None:
    """The server closed first and waits in FIN_WAIT_2; the client's NAT rebinds before the
    client's FIN, which arrives from the new address and puts the server in TIME_WAIT.  The
    server still challenges the new address, and the challenge carries the ACK of the FIN:
    the client's close completes.  (TIME_WAIT challenged nothing and acknowledged every
    retransmitted FIN to the dead binding; the client's close ended in a reset once the
    server's TIME_WAIT was over.)"""
    net = Net()
    client, server = _establish(net)
    _send(net, server, b"data")
    server.conn.close()
    net.pump()
    assert server.conn.state is S.FIN_WAIT_2 and client.conn.state is S.CLOSE_WAIT
    _rebind(net, REBOUND)
    client.conn.close()
    net.pump()
    net.advance(1.0)
    assert server.conn.state is S.TIME_WAIT
    assert net.server.stats.path_challenges_sent == 2  # to the new address and the old
    assert client.conn.close_reason is not None and client.conn.close_reason.value == "closed"


class LossyNet(Net):
    """``Net`` whose datagrams are lost at random (seeded) once ``loss`` is set."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.rng = random.Random(seed)
        self.loss = 0.0
        self.lost = 0

    def send(self, data: bytes, src: Address, dst: Address = SERVER) -> Route | None:
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return None
        return super().send(data, src, dst)


@pytest.mark.parametrize("seed", range(6))
def test_a_rebinding_under_loss_is_followed_and_every_byte_arrives(seed: int) -> None:
    """10% of datagrams lost each way, challenges and echoes among them: the client rebinds
    in the middle of a 60 KB upload and the server still follows it and gets every byte."""
    net = LossyNet(seed)
    client, server = _establish(net)
    net.loss = 0.10
    payload = random.Random(seed).randbytes(60_000)
    client.conn.send(payload[:30_000])
    net.advance(5.0)
    _rebind(net, REBOUND)
    client.conn.send(payload[30_000:])
    for _ in range(60):
        net.advance(1.0)
        if _server_bytes(net, server) == payload and server.addr == REBOUND:
            break
    assert _server_bytes(net, server) == payload, f"seed={seed}"
    assert server.addr == REBOUND and net.server.stats.path_changes == 1, f"seed={seed}"
    assert net.lost > 0


def test_a_rebinding_that_leaves_only_retransmissions_is_followed() -> None:
    """The NAT rebinds just after the client's data arrived and before the server's ACKs
    got back: all the client has left to send are retransmissions, which are not news, yet
    once its old address has been silent for an RTO they start the validation and the
    connection moves (it stayed stuck: nothing new ever came)."""
    net = Net()
    client, server = _establish(net)
    client.conn.send(b"r" * 3000)
    _once(net, CLIENT)  # the data arrives ...
    _rebind(net, REBOUND)
    net.outgoing(SERVER)  # ... and its ACKs are lost at the old binding
    net.advance(10.0)
    assert server.addr == REBOUND and net.server.stats.path_changes == 1
    assert client.conn.stats.bytes_in_flight == 0
    assert _server_bytes(net, server) == b"r" * 3000


def _rebound_after_a_duplicate_ack(net: Net) -> tuple[Route, Route, bytes]:
    """The client receives 3000 bytes and acknowledges them, its NAT rebinds, and all it
    sends from the new mapping is a duplicate ACK (not news: its old address was heard
    within an RTO).  The routes and that ACK."""
    client, server = _establish(net)
    server.conn.send(b"d" * 3000)
    _once(net, SERVER)
    acks = [data for data, _ in net.outgoing(CLIENT)]
    for data in acks:
        net.send(data, CLIENT)
    _rebind(net, REBOUND)
    assert net.send(acks[-1], REBOUND) is None
    assert net.server.stats.path_validations == 0
    return client, server, acks[-1]


def _receiver_rebound_with_a_duplicate_ack(net: Net) -> tuple[Route, Route]:
    """``_rebound_after_a_duplicate_ack``; the server then sends 3000 more, to the old
    mapping (``net.stray``)."""
    client, server, _ = _rebound_after_a_duplicate_ack(net)
    server.conn.send(b"e" * 3000)
    net.pump()
    return client, server


def test_a_port_unreachable_from_the_old_address_while_the_peer_speaks_from_a_new_one() -> None:
    """A NAT forgot a receiving client's mapping and answers the server's data with ICMP port
    unreachable, while all the client sends from its new mapping are duplicate ACKs.  The
    errors were taken as a killed client and the connection was reset; now the first starts
    the validation of the address the peer speaks from, and the connection moves there."""
    net = Net()
    client, server = _receiver_rebound_with_a_duplicate_ack(net)
    for _ in range(3):  # the old mapping answers each datagram sent to it
        errors = [data for data, dst in net.stray if dst == CLIENT]
        net.stray.clear()
        for data in errors:
            net.server.receive_icmp(data, CLIENT, port_unreachable=True, errno=111, now=net.now)
        net.pump()
        net.advance(1.0)  # a retransmission's error confirmed the first
    assert server.conn.close_reason is None
    assert server.addr == REBOUND and net.server.stats.path_changes == 1
    assert bytes(net.received[client.conn.local_cid]) == b"d" * 3000 + b"e" * 3000


def test_a_port_unreachable_quoting_another_peer_cid_follows_no_hint() -> None:
    """The hint of where the peer went is followed only for an ICMP error that quotes a
    datagram of this connection's, both ids right (RFC 5927 section 4.1): one that names
    another peer id starts no validation and is ignored."""
    net = Net()
    _receiver_rebound_with_a_duplicate_ack(net)  # the hint: the duplicate ACK
    (lost, _), *_ = [(d, a) for d, a in net.stray if a == CLIENT]
    forged = decode(lost)
    forged.dst_cid ^= 1  # names another peer
    stats = net.server.stats
    ignored = stats.icmp_errors_ignored
    assert (
        net.server.receive_icmp(
            encode(forged), CLIENT, port_unreachable=True, errno=111, now=net.now
        )
        is None
    )
    assert stats.path_validations == 0 and stats.icmp_errors_ignored == ignored + 1
    assert net.server.datagrams_to_send() == []


def test_data_that_timed_out_on_the_old_address_is_resent_once_the_new_one_is_validated() -> None:
    """The NAT rebinds while the client only receives: what the server sends goes to the
    dead binding and times out, the timer backing off.  When the client next speaks from its
    new address and the path is validated, the server resends at once: waiting out the
    backed-off timer lost the resend whenever the NAT rebound again meanwhile (a tunnel
    through a NAT rebinding every second stalled for minutes that way)."""
    net = Net()
    client, server = _establish(net)
    _send(net, server, b"hi")  # the connection is in use; the client has nothing to say
    net.advance(0.1)  # once its delayed ACK is out
    _rebind(net, REBOUND)
    payload = bytes(range(256)) * 80
    _send(net, server, payload)  # lost at the old binding
    net.advance(7.0)
    assert server.conn.stats.timeouts >= 2  # backed off: the next try is seconds away
    assert net.server.stats.path_changes == 0  # the client stayed silent
    _send(net, client, b"k")  # it speaks: validated and followed
    net.advance(0.5)
    assert server.addr == REBOUND
    net.advance(0.4)
    _rebind(net, (CLIENT[0], CLIENT[1] + 2), REBOUND)  # and the NAT rebinds again
    assert bytes(net.received[client.conn.local_cid]) == b"hi" + payload
    assert _server_bytes(net, server) == b"k"


class _LosesOneEcho(Net):
    """Loses the first echo of a path challenge that ``src`` sends."""

    def __init__(self, src: Address) -> None:
        super().__init__()
        self.src = src
        self.echoes_lost = 0

    def send(self, data: bytes, src: Address, dst: Address = SERVER) -> Route | None:
        if src == self.src and not self.echoes_lost and decode(data).path_response is not None:
            self.echoes_lost += 1
            return None
        return super().send(data, src, dst)


def test_a_receiving_client_whose_echo_is_lost_probes_again_and_is_followed() -> None:
    """The NAT rebinds while the client only receives: its stall probe from the new address
    draws the server's challenge, and the echo is lost.  The silence after the challenge
    draws another stall probe, the server challenges again and follows.  (The client stayed
    silent until its regular keepalive, 15 s later; a tunnel through a NAT rebinding every
    second stalled that long, and a second loss then ended the connection at its idle
    timeout.)"""
    net = _LosesOneEcho(REBOUND)
    client, server = _establish(net)
    first = bytes(1176 * 8)  # full-sized segments, the last one too
    _send(net, server, first)
    # all of it arrived, its last segment full-sized: the client counts as mid-transfer
    assert client.conn.stats.bytes_received == len(first)
    _rebind(net, REBOUND)
    payload = bytes(range(255, -1, -1)) * 40
    _send(net, server, payload)  # lost at the old binding
    net.advance(2.5)
    assert net.echoes_lost == 1
    assert net.server.stats.path_challenges_sent == 3  # twice to the new address, once the old
    assert server.addr == REBOUND
    net.advance(3.0)
    assert bytes(net.received[client.conn.local_cid]) == first + payload


def test_a_closing_client_whose_echo_is_lost_probes_again_and_gets_the_fin() -> None:
    """The NAT rebinds after the client's FIN was acknowledged; the server's FIN times out at
    the dead binding.  The client's keepalive (15 s) draws the server's challenge and the
    echo is lost.  The client has nothing to send and its peer was not mid-transfer, yet the
    challenge's silence draws an early probe: the server challenges again, follows, and the
    FIN arrives.  (The client stayed silent for another 15 s; the server's FIN ran out of
    retries meanwhile, and the client's next keepalive drew a reset.)"""
    net = _LosesOneEcho(REBOUND)
    client, server = _establish(net)
    _send(net, client, b"bye")
    client.conn.close()
    net.pump()
    _rebind(net, REBOUND)
    server.conn.close()
    net.pump()  # the FIN, lost at the old binding
    net.advance(16.0)  # the client's keepalive: challenged, its echo lost
    assert net.echoes_lost == 1 and server.addr == CLIENT
    net.advance(4.0)
    assert server.addr == REBOUND and net.server.stats.path_challenges_sent == 3
    assert client.conn.close_reason is not None and server.conn.close_reason is not None
    assert client.conn.close_reason.value == server.conn.close_reason.value == "closed"


class _SweepNet(LossyNet):
    """``LossyNet`` that lets a whole window cross in one ``pump``."""

    def pump(self, rounds: int = 5000) -> None:
        super().pump(rounds)


def _transfer_and_close(seed: int, upload: bool) -> tuple[bool, str]:
    """A transfer (the client's upload, or the server's download), both closes (the sender
    first) and one to six NAT rebindings at seeded random times within 20 s, 5% of datagrams
    lost each way; whether every byte arrived and both ends closed cleanly, and what
    happened if not."""
    rng = random.Random(seed)
    net = _SweepNet(seed)
    client, server = _establish(net)
    net.loss = 0.05
    payload = rng.randbytes(rng.choice([100, 3000, 50_000, 200_000]))
    rebinds = sorted(rng.uniform(0.0, 20.0) for _ in range(rng.randint(1, 6)))
    sender, receiver = (client, server) if upload else (server, client)
    addr, start = CLIENT, net.now
    sender.conn.send(payload)
    sender_closed = receiver_closed = False
    while net.now - start < 120.0:
        if rebinds and net.now - start >= rebinds[0]:
            rebinds.pop(0)
            new = (addr[0], addr[1] + 1)
            _rebind(net, new, addr)
            addr = new
        net.pump()
        if not sender_closed and sender.conn.stats.bytes_in_flight == 0 and rng.random() < 0.5:
            sender.conn.close()
            sender_closed = True
        got = len(net.received.get(receiver.conn.local_cid, b""))
        full = got == len(payload) and receiver.conn.state is S.CLOSE_WAIT
        if not receiver_closed and full and rng.random() < 0.3:
            receiver.conn.close()
            receiver_closed = True
        net.advance(rng.choice([0.001, 0.01, 0.05, 0.2, 1.0]))
        if client.conn.is_finished and server.conn.is_finished:
            break
    reasons = (client.conn.close_reason, server.conn.close_reason)
    clean = all(r is not None and r.value == "closed" for r in reasons)
    got_all = bytes(net.received.get(receiver.conn.local_cid, b""))
    why = f"seed={seed}: {reasons}, {len(got_all)} of {len(payload)}"
    return got_all == payload and clean, why


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
def test_transfers_and_closes_through_rebindings_under_loss(upload: bool) -> None:
    """Two hundred seeded runs of a transfer and the four-way close through one to six NAT
    rebindings at random moments, 5% loss each way: every byte arrives and both ends close
    cleanly in every run.  Upload seed 156 had the client's echo of the server's challenge
    lost while it waited for the server's FIN: the client stayed silent for 15 s, the FIN
    ran out of retries at the old address, and the client's next keepalive drew a reset.
    Downloads failed in one run of eight, the client's FIN arriving from a new address in
    the server's TIME_WAIT, which challenged nothing.  At this loss, about one run in a
    thousand still loses two or three datagrams in a row at such a moment, as TCP would;
    these seeds do not."""
    runs = (_transfer_and_close(seed, upload) for seed in range(200))
    failed = [why for ok, why in runs if not ok]
    assert not failed, failed


def test_a_last_ack_whose_peer_left_ends_as_closed_at_the_idle_timeout() -> None:
    """Every byte both ways delivered and acknowledged, the server's FIN out, and the client
    gone (it left TIME_WAIT after its ACK was lost, or moved on): the idle timeout, when it
    comes before ``fin_retries`` run out, ends the close as done, as running out of them
    does, not as an idle connection.  (A sweep of uploads through rebindings had the server
    report "idle" for a transfer that had fully arrived.)"""
    net = Net(Config(idle_timeout_s=5.0))
    client, server = _establish(net)
    _send(net, client, b"all of it")
    client.conn.close()
    net.pump()
    server.conn.close()
    net.endpoints.pop(CLIENT)  # the client and everything sent to it are gone
    net.pump()
    net.advance(10.0)
    assert server.conn.state is S.CLOSED
    assert server.conn.close_reason is not None and server.conn.close_reason.value == "closed"


def _copy_replayed_once_quiet(net: Net) -> tuple[Route, Route, bytes, list[tuple[bytes, Address]]]:
    """The client sends, falls quiet for longer than an RTO, and an observer who copied its
    datagram replays it from its own address: the server starts a validation.  The routes,
    the copy, and what the server then sends (not delivered)."""
    client, server = _establish(net)
    client.conn.send(b"hello")
    copy = [data for data, _ in net.outgoing(CLIENT)][-1]
    net.send(copy, CLIENT)
    net.pump()
    net.advance(5.0)
    assert net.send(copy, STRANGER) is server
    return client, server, copy, net.outgoing(SERVER)


def _deliver_to_client(net: Net, out: list[tuple[bytes, Address]]) -> None:
    """Deliver what of ``out`` goes to the client's old address (the challenge there)."""
    for data, dst in out:
        if dst == CLIENT:
            net.send(data, SERVER, CLIENT)


def _fresh_data_after_a_rebind_is_followed(net: Net, client: Route, server: Route) -> None:
    """The client's NAT rebinds and it sends new data: the server validates the new port at
    once, moves there, and takes the data."""
    _rebind(net, REBOUND)
    client.conn.send(b"fresh")
    _once(net, REBOUND)
    assert server.path is not None and server.path.addr == REBOUND
    net.pump()
    net.advance(1.0)
    assert server.addr == REBOUND and _server_bytes(net, server).endswith(b"fresh")


def _observer_echo(copy: bytes, out: list[tuple[bytes, Address]]) -> bytes:
    """What the observer sends back: its copy carrying the token it was challenged with."""
    [token] = [token for token, addr in _challenges(out) if addr == STRANGER]
    p = decode(copy)
    p.path_response = token
    return encode(p)


def _client_gets(net: Net, server: Route, client: Route, data: bytes) -> None:
    server.conn.send(data)
    net.pump()
    assert bytes(net.received[client.conn.local_cid]).endswith(data)


def test_a_copy_replayed_once_the_client_is_quiet_moves_nothing_when_it_answers_at_home() -> None:
    """An observer copies the client's datagram, replays it from its own address once the
    client has been quiet for an RTO (which starts a validation, as a NAT rebinding would),
    and echoes the challenge it gets there.  The server challenges the client's current
    address too (RFC 9000 section 9.3.3); the client's echo comes first, the validation is
    abandoned, and the observer's echo moves nothing.  The connection had moved to the
    observer, and the server's data went there."""
    net = Net()
    client, server, copy, out = _copy_replayed_once_quiet(net)
    assert {addr for _, addr in _challenges(out)} == {STRANGER, CLIENT}
    _deliver_to_client(net, out)
    net.pump()  # the client echoes at home
    assert server.path is None
    assert net.send(_observer_echo(copy, out), STRANGER) is None
    assert server.addr == CLIENT
    stats = net.server.stats
    assert (stats.path_changes, stats.path_returns, stats.path_validations_failed) == (0, 1, 0)
    _client_gets(net, server, client, b"for the client")


def test_an_observer_that_answers_first_waits_for_the_old_address_and_moves_nothing() -> None:
    """The observer's echo comes before the client's, and it acknowledges everything the
    server sent, which the client never got.  The connection waits an RTO for its old
    address's answer, which comes: it never moves, and nothing the observer sent reaches
    it, so the data it claimed delivered is still sent to the client.  (The connection had
    moved to the observer, which took the server's side, and taken its ACK: the data was
    dropped from the send buffer undelivered and the download stalled for good.)"""
    net = Net()
    client, server, copy, out = _copy_replayed_once_quiet(net)
    server.conn.send(b"d" * 3000)
    lost = net.outgoing(SERVER)  # the data to the client, not delivered yet
    [challenge] = [decode(data) for data, addr in out if addr == STRANGER]
    forged = decode(copy)
    forged.seq, forged.ack = challenge.ack, challenge.seq  # acknowledges all that was sent
    forged.payload = b""
    forged.path_response = challenge.path_challenge
    net.send(encode(forged), STRANGER)
    assert server.addr == CLIENT and server.conn.stats.bytes_in_flight == 3000
    for data, dst in out:
        if dst == CLIENT:
            net.send(data, SERVER, CLIENT)  # the challenge to the old address
    net.pump()
    assert server.addr == CLIENT and server.path is None
    stats = net.server.stats
    assert (stats.path_changes, stats.path_returns) == (0, 1)
    for data, dst in lost:
        net.send(data, SERVER, dst)
    net.pump()
    assert bytes(net.received[client.conn.local_cid]).endswith(b"d" * 3000)
    _client_gets(net, server, client, b"for the client")


def test_after_the_client_answered_at_home_copies_start_nothing_for_a_while() -> None:
    """Once the client has answered at its old address, the observer's further copies (not
    news), however quiet the client, start no validation for PATH_RETURN_HOLD_S: the
    connection does not go to and fro every second.  News from a new address still does."""
    net = Net()
    _, server, copy, out = _copy_replayed_once_quiet(net)
    [home_token] = [token for token, addr in _challenges(out) if addr == CLIENT]
    _deliver_to_client(net, out)
    net.pump()
    assert server.path is None
    echo = decode(copy)
    echo.path_response = home_token  # a copy of the client's echo is no news either
    for _ in range(4):
        net.advance(2.0)
        assert net.send(copy, STRANGER) is None
        assert net.send(encode(echo), STRANGER) is None
    assert net.server.stats.path_validations == 1
    net.advance(PATH_RETURN_HOLD_S)
    assert net.send(copy, STRANGER) is server
    assert net.server.stats.path_validations == 2


@pytest.mark.parametrize("cc", ["newreno", "cubic", "bbr"])
def test_a_move_to_another_host_during_a_recovery_episode_keeps_the_window_bounded(
    cc: str,
) -> None:
    """The connection moves to another host while a recovery episode runs: the new path's
    controller starts with no episode, so none ends in it (the old episode's end set the
    fresh controller's window to its unbounded ssthresh, and the sender flooded the path
    with tens of thousands of datagrams a second; found by a fuzzer)."""
    config = Config(pmtud=False, congestion_control=cc)
    lost: list[int] = []

    def drop(index: int, p: Packet) -> bool:
        if p.payload and p.seq == 1001 + 20 * 1428 and not lost:
            lost.append(index)
            return True
        return False

    net = pair(config_a=config, config_b=config, a_to_b=Link(drop=drop))
    a, _ = establish(net)
    a.send(bytes(2_000_000))
    net.run(until=lambda: a.stats.fast_retransmits == 1)
    a.path_changed(same_host=False, now=net.now)
    worst = 0

    def done() -> bool:
        nonlocal worst
        worst = max(worst, a.stats.cwnd_bytes)
        return len(net.b.received) == 2_000_000

    net.run(until=done)
    assert worst < 4_000_000


def test_what_a_new_address_sends_before_the_move_is_kept_within_a_bound() -> None:
    """At most PATH_HELD_MAX datagrams and PATH_HELD_MAX_BYTES of payload are kept for after
    the move (merged receive batches are large): the rest is dropped, for the peer to send
    again, so a validation holds little memory whoever starts it."""
    path = PathValidation(STRANGER, 0.0)
    big = bytearray(100 * 1024)
    for _ in range(5):
        path.hold(Packet(int(Flag.ACK), 1, 2, 3, 4, 100, memoryview(big)), len(big), 70)
    assert len(path.held) == 2 and path.held_bytes <= PATH_HELD_MAX_BYTES
    assert isinstance(path.held[0][0].payload, bytes)  # a copy: the buffer may be reused
    for _ in range(2 * PATH_HELD_MAX):
        path.hold(Packet(int(Flag.ACK), 1, 2, 3, 4, 100, b""), 24, 1)
    assert len(path.held) == PATH_HELD_MAX


def test_a_copied_keepalive_probe_from_elsewhere_starts_nothing_while_the_client_is_heard() -> None:
    """A keepalive probe (SEQ = RCV.NXT - 1) looks the same every time, so a copy of one
    sent from another address tells nothing new: while the client is heard at its own
    address it starts no validation.  (Taken as news, each copy started one: an observer
    replaying the probes the client sent after each challenge kept the server challenging
    its address and the client's once a second.)"""
    net = Net()
    client, _ = _establish(net)
    client.conn.send(b"hello")
    copy = decode([data for data, _ in net.outgoing(CLIENT)][-1])
    net.pump()
    seq = (copy.seq - 1) & 0xFFFFFFFF
    probe = Packet(int(Flag.ACK), copy.src_cid, copy.dst_cid, seq, copy.ack, copy.window)
    assert net.send(encode(probe), STRANGER) is None
    assert net.server.stats.path_validations == 0
    assert net.server.stats.dropped[DropReason.WRONG_ADDRESS.value] == 1


def test_news_from_the_client_supersedes_a_validation_a_copy_started() -> None:
    """An observer's copy, replayed once the client fell quiet, started a validation of the
    observer's address; the client's NAT then rebinds and its new data arrives from the new
    port: that news starts a validation of its own at once rather than waiting out the
    copy's (one at a time had kept the client's own address from being followed, and its
    sparse retransmissions met a validation in progress or the pause after a failed one)."""
    net = Net()
    client, server, _, _ = _copy_replayed_once_quiet(net)
    assert server.path is not None and server.path.addr == STRANGER
    _fresh_data_after_a_rebind_is_followed(net, client, server)


def test_the_first_address_a_rebound_client_speaks_from_stays_the_hint() -> None:
    """After a rebinding the client's duplicate ACK from its new port is the hint of where
    it went; a copy of it from another address, coming after it, does not take its place
    (the ICMP error from the old address then had the server validate the copier)."""
    net = Net()
    _, server, ack = _rebound_after_a_duplicate_ack(net)
    assert server.peer_hint == REBOUND
    assert net.send(ack, STRANGER) is None
    assert server.peer_hint == REBOUND


def test_a_client_that_moves_on_purpose_is_followed_at_its_first_probe() -> None:
    """A client just heard at its old address moves to a new socket and probes from it: the
    probe carries a fresh PATH_CHALLENGE token, which is news (a keepalive-form probe alone
    is not: copies of one are all alike), so the validation starts with it; a copy of that
    probe from elsewhere repeats the token and starts nothing."""
    net = Net()
    client, server = _establish(net)
    _send(net, client, b"before")
    _rebind(net, MOVED)
    client.conn.probe_path()
    [probe] = [data for data, _ in net.outgoing(MOVED)]
    assert decode(probe).path_challenge is not None
    assert net.send(probe, MOVED) is server
    assert server.path is not None and server.path.addr == MOVED
    net.pump()
    net.advance(1.0)
    assert server.addr == MOVED
    assert net.send(probe, STRANGER) is None  # a copy: the token was seen
    assert net.server.stats.path_validations == 1
    _client_gets(net, server, client, b"after")


def test_news_right_after_a_copys_validation_was_abandoned_is_followed() -> None:
    """An observer's copy started a validation that the client's answer at its old address
    abandoned; the client's NAT then rebinds and its new data comes at once: that news
    starts a validation without the pause that follows a failed one (it had waited a
    second, while the server's ICMP errors from the old binding piled up to a reset)."""
    net = Net()
    client, server, _, out = _copy_replayed_once_quiet(net)
    _deliver_to_client(net, out)
    net.pump()
    assert server.path is None and net.server.stats.path_returns == 1
    _fresh_data_after_a_rebind_is_followed(net, client, server)
