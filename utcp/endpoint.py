"""The sans-I/O endpoint: the protocol work of one UDP socket shared by many connections.

It routes each decoded datagram to the connection named by its destination connection id (a
SYN with none opens a server connection, within the backlog and ``max_connections``), answers
what reaches no connection statelessly (SYN cookies, resets within a rate budget), holds
unvalidated peers to the anti-amplification limit, and counts every datagram it drops.  Like
the ``Connection`` it never reads a clock or touches a socket: ``now`` is passed in, and what
it has to send comes back from ``datagrams_to_send()`` with the address to send it to.
quinn-proto's ``endpoint.rs`` is the model.  Its time-dependent state (reset budget, cookie
period, recently closed ids) is judged lazily against the ``now`` of each input, so it has no
deadline of its own and no ``get_timer()``.
"""

from __future__ import annotations

import errno
import secrets
from collections.abc import Callable
from typing import Any, Final, final

from .cids import CidLayout
from .config import Config
from .connection import Connection
from .cookies import SynCookies, pack_options, unpack_options
from .events import CloseReason, DropReason
from .log import get_logger
from .packet import (
    MAX_WINDOW_FIELD,
    Flag,
    Packet,
    PacketError,
    decode,
    decode_quoted,
    encode,
    wscale_for,
)
from .seqnum import SEQ_MASK
from .state import SYN_RECEIVED, SYNCHRONIZED
from .stateless import new_connection_id, reset_for
from .trace import address_text

__all__ = [
    "AFTER_CLOSE_GRACE_S",
    "AMPLIFICATION_FACTOR",
    "COOKIE_GRACE_S",
    "Address",
    "ConnectionEvicted",
    "Endpoint",
    "EndpointStats",
    "Route",
    "RouteFactory",
]

Address = Any  # what the socket module uses: (host, port) or (host, port, flow, scope)

_log = get_logger()
RECENTLY_CLOSED_MAX: Final = 4096  # closed connection ids remembered at most
AMPLIFICATION_FACTOR: Final = 3  # RFC 9000 section 8.1
COOKIE_GRACE_S: Final = 64.0  # a cookie is valid for one to two of these
# After accepting stops, handshakes under way (in the backlog, or through cookies) have this
# long to complete and be served rather than reset.
AFTER_CLOSE_GRACE_S: Final = 3.0
PATH_CHALLENGE_TRIES: Final = 3  # challenges to one new address before it is given up
PATH_VALIDATION_INTERVAL_S: Final = 1.0  # after one failed, the next waits this long
PATH_CHALLENGE_MIN_GAP_S: Final = 0.2  # and re-challenges no sooner (nor before its RTO)
PATH_VALIDATION_TIMEOUT_S: Final = 3.0  # a validation with no echo this long is given up
# After the peer answered at its old address (a copy from elsewhere had started a
# validation), a copy that is not news starts none for this long, whatever the peer's silence.
PATH_RETURN_HOLD_S: Final = 10.0
# Datagrams from an address under validation kept for the connection until the move, at
# most this many and this many payload bytes (more are dropped: the peer resends them).
PATH_HELD_MAX: Final = 64
PATH_HELD_MAX_BYTES: Final = 256 * 1024
# How long the old address has to echo its challenge before the connection moves: twice its
# smoothed RTT and this margin (the peer's scheduling), at most its RTO.
PATH_HOME_MARGIN_S: Final = 0.05
# The first address that sent what is plausibly the peer's own (not news) stays the hint of
# where the peer went for this long, while it keeps sending: copies of those datagrams from
# elsewhere come after them and do not take its place.
PEER_HINT_HOLD_S: Final = 1.0
_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)
_RST: Final = int(Flag.RST)


def same_address(a: Address, b: Address) -> bool:
    """Whether two socket addresses name the same host and port (IPv6 addresses carry flow
    and scope fields that an error-queue read may fill differently)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return bool(a[:2] == b[:2])
    return bool(a == b)


def _addr_key(addr: Address) -> bytes:
    """An address as bytes for the cookie hash."""
    return repr(addr[:2] if isinstance(addr, tuple) else addr).encode()


# EndpointStats' fields, for its snapshot (a compiled class has no __slots__ to list them).
_ENDPOINT_COUNTERS: Final = (
    "amplification_limited",
    "bytes_received",
    "bytes_sent",
    "connections_refused",
    "datagrams_received",
    "datagrams_sent",
    "dropped",
    "icmp_errors",
    "icmp_errors_ignored",
    "path_challenges_sent",
    "path_changes",
    "path_returns",
    "path_validations",
    "path_validations_failed",
    "path_validations_limited",
    "resets_rate_limited",
    "resets_sent",
    "send_errors",
    "syn_cookies_accepted",
    "syn_cookies_sent",
)


class EndpointStats:
    """Datagram counters of one endpoint (all connections together).

    ``dropped`` counts datagrams the endpoint itself discarded, by ``DropReason`` value;
    datagrams a connection discarded are in that connection's own stats until it ends, then
    added here.  The I/O layer counts what it sends and what the socket reports
    (``datagrams_sent``, ``bytes_sent``, ``send_errors``); the endpoint counts the rest.
    """

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.dropped: dict[str, int] = {}
        self.resets_sent = 0
        self.resets_rate_limited = 0
        self.syn_cookies_sent = 0
        self.syn_cookies_accepted = 0
        self.connections_refused = 0  # SYNs refused at max_connections
        self.amplification_limited = 0  # datagrams held back by the 3x limit
        self.send_errors = 0  # datagrams the kernel refused as too big for the path (EMSGSIZE)
        self.icmp_errors = 0  # ICMP errors read from the socket's error queue (Linux)
        self.icmp_errors_ignored = 0  # of those: no connection took them (failed the checks)
        # Peers seen at a new address (a NAT rebinding, a moved client): validations started,
        # challenges sent, connections moved, validations given up (no echo after
        # PATH_CHALLENGE_TRIES), and new addresses ignored because one was being validated or
        # had been within PATH_VALIDATION_INTERVAL_S.  Datagrams from another address that
        # bring nothing new (a replay) are dropped as "wrong address" and start nothing.
        # ``path_returns``: validations abandoned, or moves undone, because the peer echoed
        # the challenge sent to its previous address (a copy from elsewhere had started them).
        self.path_validations = 0
        self.path_challenges_sent = 0
        self.path_changes = 0
        self.path_returns = 0
        self.path_validations_failed = 0
        self.path_validations_limited = 0

    def count_drop(self, reason: DropReason, addr: Address, count: int = 1) -> None:
        """Count discarded datagrams and log why."""
        key = reason.value
        self.dropped[key] = self.dropped.get(key, 0) + count
        _log.debug("datagram_dropped", reason=key, peer=str(addr))

    def add_drops(self, drops: dict[str, int]) -> None:
        """Fold a finished connection's drop counters into the totals."""
        for key, n in drops.items():
            self.dropped[key] = self.dropped.get(key, 0) + n

    def snapshot(self) -> dict[str, object]:
        """Every counter as a plain dict (a copy)."""
        out: dict[str, object] = {name: getattr(self, name) for name in _ENDPOINT_COUNTERS}
        out["dropped"] = dict(self.dropped)
        return out


class Route:
    """The endpoint's record of one connection: the core, its peer's address, and what the
    endpoint keeps about it (address validation, the backlog).  A driver may subclass it to
    keep its own per-connection state beside it (see ``RouteFactory``)."""

    __slots__ = (
        "addr",
        "client",
        "conn",
        "ended",
        "home",
        "in_backlog",
        "path",
        "path_failed_at",
        "peer_hint",
        "peer_hint_at",
        "peer_hint_bytes",
        "peer_token",
        "reset_detail",
        "returned_at",
        "rx_bytes",
        "tx_bytes",
        "validated",
    )

    def __init__(self, conn: Connection, addr: Address) -> None:
        self.conn = conn
        self.addr = addr  # None on a connected socket: the peer is the socket's
        self.client = False  # an active open (connect())
        self.in_backlog = False  # a passive open not yet established, counted in the backlog
        self.ended = False  # forget() has run for it
        self.reset_detail = ""  # text a refusing peer put in its RST
        # Anti-amplification (RFC 9000 section 8.1): until a passive open is validated by the
        # handshake, at most three times the bytes received from that address go back to it.
        self.validated = True
        self.rx_bytes = 0
        self.tx_bytes = 0
        # A new address the peer's datagrams came from, being validated (RFC 9000 section 9).
        self.path: PathValidation | None = None
        self.path_failed_at = float("-inf")
        # Meanwhile the address the peer was at, challenged too (RFC 9000 section 9.3.3): its
        # echo shows the peer never left, and the connection stays or goes back there.
        self.home: PathValidation | None = None
        self.peer_token: int | None = None  # the last PATH_CHALLENGE the peer sent us
        self.returned_at = float("-inf")  # when the peer last answered there (path_returns)
        # The latest other address the peer's own datagrams came from that was not validated
        # (they brought nothing new), when, and its size: should the peer's address turn out
        # to be unreachable (ICMP), this is where it went (a NAT rebinding).
        self.peer_hint: Address | None = None
        self.peer_hint_at = float("-inf")
        self.peer_hint_bytes = 0


class PathValidation:
    """A new peer address under validation: the unpredictable token challenged there, when
    and how often, and the anti-amplification account of that address (at most three times
    the bytes it sent go to it, RFC 9000 section 8.1)."""

    __slots__ = (
        "addr",
        "echoed_at",
        "held",
        "held_bytes",
        "news",
        "rx_bytes",
        "sent_at",
        "started_at",
        "token",
        "tries",
        "tx_bytes",
    )

    def __init__(self, addr: Address, now: float) -> None:
        self.addr = addr
        self.started_at = now
        self.token = secrets.randbits(64)
        self.sent_at = float("-inf")
        self.tries = 0
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.echoed_at = float("-inf")  # when the right echo came back (-inf: not yet)
        # What the address sent meanwhile (packet, size, segments), for the connection once
        # the move is made: until then nothing from there reaches it.
        self.held: list[tuple[Packet, int, int]] = []
        self.held_bytes = 0
        self.news = False  # started by news (not a copy, nor the peer's silence, nor ICMP)

    def hold(self, packet: Packet, size: int, segments: int) -> None:
        """Keep a datagram from the address for after the move (its payload copied: the
        driver may reuse its receive buffer), within PATH_HELD_MAX and
        PATH_HELD_MAX_BYTES."""
        n = len(packet.payload)
        if len(self.held) < PATH_HELD_MAX and self.held_bytes + n <= PATH_HELD_MAX_BYTES:
            packet.payload = bytes(packet.payload)
            self.held.append((packet, size, segments))
            self.held_bytes += n


# Makes the record of a new connection, before it sees any packet: (connection, peer
# address, whether it is an active open).  The I/O layer gives one that also opens the
# connection's trace file; the default makes a plain Route.
RouteFactory = Callable[[Connection, Address, bool], Route]


def _plain_route(conn: Connection, addr: Address, client: bool) -> Route:
    return Route(conn, addr)


@final
class ConnectionEvicted:
    """The endpoint cut short a connection winding down without its application (an orphan
    or TIME_WAIT) to admit a new one at ``max_connections``, as Linux recycles TIME_WAIT
    buckets.  It is aborted and forgotten here; the driver sends what it has left (an
    orphan's RST), delivers its events and drops its own state for it."""

    __slots__ = ("route",)

    def __init__(self, route: Route) -> None:
        self.route = route


@final
class Endpoint:
    """Routes the datagrams of one socket to connections and answers the rest statelessly."""

    def __init__(
        self,
        config: Config,
        *,
        now: float,
        accepting: bool = False,
        backlog: int = 100,
        route_factory: RouteFactory | None = None,
        cookie_secret: bytes | None = None,
        cid_source: Callable[[], int] | None = None,
        worker: int = 0,
        worker_bits: int = 0,
    ) -> None:
        self.config = config.validate()
        # The fixed bits of the ids chosen here: the server id, then this worker's index.
        self.cid_layout = CidLayout(
            server_id=self.config.server_id,
            server_bits=self.config.server_id_bits,
            worker=worker,
            worker_bits=worker_bits,
        )
        self.stats = EndpointStats()
        self._accepting = accepting
        self._backlog = backlog
        self._route_factory: RouteFactory = route_factory or _plain_route
        self._cid_source: Callable[[], int] = cid_source or new_connection_id
        self._routes: dict[int, Route] = {}
        # Connections the application is done with that still wind down here (FIN_WAIT_2,
        # TIME_WAIT, an orphan's last retransmissions), oldest first: the first to go when
        # max_connections is reached.
        self._released: dict[int, Route] = {}
        self._syn_index: dict[tuple[Address, int], int] = {}  # (addr, peer cid) -> local cid
        self._half_open = 0
        self._recently_closed: dict[int, float] = {}  # cid -> until when bare ACKs are ignored
        # Cookie connection ids refused at max_connections: a client's handshake ACK and
        # first data segment both pass the cookie check, and count as one refusal.
        self._refused_cookies: set[int] = set()
        self._cookies = (
            SynCookies(secret=cookie_secret, lifetime_s=COOKIE_GRACE_S, layout=self.cid_layout)
            if self.config.syn_cookies
            else None
        )
        self._cookie_sent_at: float | None = None
        self._stopped_at: float | None = None  # when accepting stopped (stop_accepting)
        self._reset_tokens = float(self.config.max_resets_per_s)
        self._reset_refill_at = now
        self._transmits: list[tuple[bytes, Address]] = []
        self._events: list[ConnectionEvicted] = []

    # ------------------------------------------------------------------ inputs

    def decode(self, data: bytes, addr: Address) -> Packet | None:
        """Count a datagram and decode it; None (counted as dropped) if it is malformed."""
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        try:
            return decode(data)
        except PacketError as exc:
            stats.count_drop(exc.reason, addr)
            return None

    def receive_datagram(self, data: bytes, addr: Address, *, now: float) -> Route | None:
        """One datagram from ``addr``: the route of the connection that took it (to be
        serviced: its events and datagrams), or None when it was answered statelessly or
        dropped (and counted)."""
        packet = self.decode(data, addr)
        return None if packet is None else self.receive_packet(packet, addr, len(data), now=now)

    def receive_packet(
        self, packet: Packet, addr: Address, size: int, segments: int = 1, *, now: float
    ) -> Route | None:
        """Feed a decoded packet (``segments`` merged ones, ``size`` bytes on the wire) to its
        connection; as ``receive_datagram``."""
        route = self._routes.get(packet.dst_cid) if packet.dst_cid else None
        if route is None:
            flags = packet.flags
            # A connection request is a SYN alone: with an RST (or ACK) it is none, and the
            # connection made for one stayed in LISTEN for ever, without a timer, holding a
            # backlog slot (a hundred such datagrams shut the server to real clients).
            if packet.dst_cid == 0 and flags & _SYN and not flags & (_ACK | _RST):
                route = self._route_for_syn(packet, addr, now)
                if route is None:
                    return None  # answered (cookie, refusal) or dropped, and counted
            elif self._cookies is not None and flags & _ACK and not flags & (_SYN | _RST):
                opts = self._cookie_options(packet, addr, now)
                if opts is not None:
                    if len(self._routes) >= self.config.max_connections and not self._make_room(
                        now
                    ):
                        # The cookie went out below the limit; its ACK comes at it.
                        refused = self._refused_cookies
                        if len(refused) >= RECENTLY_CLOSED_MAX:
                            refused.clear()
                        again = packet.dst_cid in refused
                        refused.add(packet.dst_cid)
                        self._refuse(packet, addr, "too many connections", now, again=again)
                        return None
                    route = self._route_for_cookie(packet, addr, opts, now)
            if route is None:
                self.stats.count_drop(DropReason.UNKNOWN_CONNECTION, addr, segments)
                if not self._recently_closed_ack(packet, now) and not self._cookie_mode(flags, now):
                    self._reset(packet, addr, now)
                return None
        elif addr != route.addr and route.addr is not None:
            return self._from_new_address(route, packet, addr, size, segments, now)
        home = route.home
        if home is not None and packet.path_response == home.token:
            # The peer answered where it was: whatever came from the new address was not
            # the peer moving.  The validation is abandoned.
            route.conn.receive_packet(packet, now=now, segments=segments)
            route.conn.take_path_response()
            self._stay_home(route, now)
            return route
        if not route.validated:
            route.rx_bytes += size
        elif packet.flags & _RST and packet.payload and route.client:
            route.reset_detail = bytes(packet.payload[:200]).decode("utf-8", "replace")
        route.conn.receive_packet(packet, now=now, segments=segments)
        return route

    def _from_new_address(
        self, route: Route, packet: Packet, addr: Address, size: int, segments: int, now: float
    ) -> Route | None:
        """A datagram for a known connection from another address than its peer's.  The
        connection stays where it is until the new address echoes an unpredictable challenge
        (RFC 9000 section 9) and its old address has not echoed one of its own (section
        9.3.3) within a round trip or two: a spoofed source cannot see the challenge, a
        replayed datagram starts no validation while the peer is heard, and someone who sends
        from an address of its own, copied or made up, is outrun by the peer's answer where
        it is.  Until the move nothing from the new address reaches the connection (it is
        kept for after), and the answers go to the old address."""
        conn = route.conn
        home = route.home
        if (
            home is not None
            and route.path is None
            and now - home.started_at > max(PATH_VALIDATION_TIMEOUT_S, 3 * conn.rto_s)
        ):
            route.home = home = None
        if home is not None and addr == home.addr and packet.path_response == home.token:
            # The connection had moved (its old address silent for an RTO), and the peer
            # answers at the address it had before: back there.
            conn.receive_packet(packet, now=now, segments=segments)
            conn.take_path_response()
            self._move(route, home, now, now)
            self._stay_home(route, now)
            return route
        path = route.path
        if path is not None and now - path.started_at > max(
            PATH_VALIDATION_TIMEOUT_S, 3 * conn.rto_s
        ):
            self._give_up_path(route, path)
            path = None
        if path is not None and path.addr == addr:
            path.rx_bytes += size
            echo = packet.path_response is not None and packet.path_response == path.token
            if echo:
                if path.echoed_at < 0.0:
                    path.echoed_at = now
            else:
                self._challenge_path(route, path, now)  # again, if the last is an RTO old
            if conn.state is SYN_RECEIVED:
                conn.receive_packet(packet, now=now, segments=segments)
                if echo:
                    conn.take_path_response()
            else:
                path.hold(packet, size, segments)
            self.complete_move(route, now)
            return route
        news = conn.is_news(packet)
        token = packet.path_challenge
        if token is not None and token != route.peer_token:
            # A challenge of the peer's own that we have not seen: the probe it sends from a
            # socket it moved to (``Connection.probe_path``).  A copy repeats the token.
            route.peer_token = token
            news = True
        if not news and (
            now - conn.last_heard < conn.rto_s or now - route.returned_at < PATH_RETURN_HOLD_S
        ):
            # Nothing new, while the peer is heard at its own address: a replayed copy, or
            # a stray.  (A peer whose NAT rebound right after its data arrived has only
            # retransmissions to send, which are not news: once its own address has been
            # silent for an RTO they start the validation too, unless a copy's validation
            # was lately abandoned as the peer answered at its own address.  If its old
            # address answers with ICMP port unreachable first, receive_icmp starts it: see
            # peer_hint.)
            if conn.plausibly_from_peer(packet) and (
                route.peer_hint is None
                or route.peer_hint == addr
                or now - route.peer_hint_at > PEER_HINT_HOLD_S
            ):
                route.peer_hint = addr
                route.peer_hint_at = now
                route.peer_hint_bytes = size
            self.stats.count_drop(DropReason.WRONG_ADDRESS, addr, segments)
            return None
        if not self._may_validate(route, now, news):
            self.stats.path_validations_limited += 1
            self.stats.count_drop(DropReason.WRONG_ADDRESS, addr, segments)
            return None
        path = self._start_validation(route, addr, size, now)
        path.news = news
        if conn.state is SYN_RECEIVED:
            # The handshake's ACK (a rebinding between the SYN-ACK and the ACK): it completes
            # the handshake, and the challenge then goes out synchronized.
            conn.receive_packet(packet, now=now, segments=segments)
        else:
            path.hold(packet, size, segments)
        self._challenge_path(route, path, now)
        self._challenge_home(route, now)
        return route

    def complete_move(self, route: Route, now: float) -> None:
        """Move the connection to the address under validation if it echoed its challenge
        and the old address, challenged too, has had its time to answer (twice its RTT and
        a margin, at most an RTO) and has not; then hand the connection what the new
        address sent meanwhile.  A driver calls it before it collects the datagrams of a
        connection whose ``path`` is set (``datagrams_for`` does); the connection's timer
        (``Connection.wake_at``) brings the driver back when the wait is over."""
        path = route.path
        if path is None or path.echoed_at < 0.0:
            return
        home = route.home
        conn = route.conn
        if home is not None:
            srtt = conn.srtt_s
            wait = conn.base_rto_s
            if srtt is not None and 2 * srtt + PATH_HOME_MARGIN_S < wait:
                wait = 2 * srtt + PATH_HOME_MARGIN_S
            due = home.sent_at + wait
            if now < due:
                conn.wake_at(due)  # the peer may yet answer where it was; if not, move then
                return
        held = path.held
        path.held = []
        path.held_bytes = 0
        for packet, _, segments in held:
            conn.receive_packet(packet, now=now, segments=segments)
        if held:
            conn.take_path_response()
        self._move(route, path, now, path.echoed_at)

    def _may_validate(self, route: Route, now: float, news: bool = False) -> bool:
        """One validation at a time, for at least one RTO (its echo is not due before), and
        none for a while after one failed: spoofed sources cannot keep us busy.  News
        supersedes a validation that news did not start (copies from someone else's address
        must not keep the peer's own from being followed)."""
        path = route.path
        if path is not None and news and not path.news:
            return True
        if path is not None and now - path.started_at < max(
            route.conn.base_rto_s, PATH_CHALLENGE_MIN_GAP_S
        ):
            return False
        if news and path is None and route.returned_at >= route.path_failed_at:
            # The last validation ended with the peer answering where it was (a copy's):
            # the peer's own news right after, its NAT having rebound meanwhile, is followed.
            return True
        return now - route.path_failed_at >= PATH_VALIDATION_INTERVAL_S

    def _start_validation(
        self, route: Route, addr: Address, size: int, now: float
    ) -> PathValidation:
        """Validate ``addr``, from which the peer sent ``size`` bytes; a newer address
        supersedes one whose echo is overdue (the peer moved on again)."""
        route.path = path = PathValidation(addr, now)
        route.home = None
        route.peer_hint = None
        path.rx_bytes += size
        self.stats.path_validations += 1
        _log.info("path_validation_started", cid=f"{route.conn.local_cid:08x}", peer=str(addr))
        return path

    def _challenge_home(self, route: Route, now: float) -> None:
        """Challenge the address the connection is at as well (RFC 9000 section 9.3.3): a
        copy of the peer's datagram sent on from elsewhere, or replayed once the peer fell
        quiet, starts a validation that whoever sent it can answer, having the challenge;
        the peer, still where it was, answers this one, and the connection stays (or goes
        back).  A peer that really moved is not there to answer."""
        conn = route.conn
        addr = route.addr
        if addr is None or route.path is None:
            return
        home = PathValidation(addr, now)
        data = conn.path_challenge(home.token)
        if data is None:
            return
        home.sent_at = now
        home.tries = 1
        route.home = home
        self.stats.path_challenges_sent += 1
        self._transmits.append((data, addr))

    def _stay_home(self, route: Route, now: float) -> None:
        """The peer echoed the challenge at its previous address: no validation runs, none
        starts for PATH_VALIDATION_INTERVAL_S, and none on a copy that is not news for
        PATH_RETURN_HOLD_S (whoever sent it may send more)."""
        path = route.path
        route.path = None
        route.home = None
        route.path_failed_at = route.returned_at = now
        self.stats.path_returns += 1
        _log.info(
            "path_validation_abandoned",
            cid=f"{route.conn.local_cid:08x}",
            peer=str(route.addr),
            other=str(path.addr) if path is not None else "",
        )

    def _follow_hint(self, route: Route, quoted: Packet, now: float) -> bool:
        """The peer's address is unreachable (ICMP quoting ``quoted``, a datagram of ours to
        it: both its ids must be right), and its datagrams came from another lately:
        validate that one (a NAT forgot the old mapping, or the peer moved off a socket it
        closed).  Whether a validation is now under way."""
        hint = route.peer_hint
        conn = route.conn
        if (
            hint is None
            or quoted.dst_cid != conn.peer_cid
            or now - route.peer_hint_at > max(PATH_VALIDATION_TIMEOUT_S, 3 * conn.rto_s)
            or not self._may_validate(route, now)
        ):
            return False
        path = self._start_validation(route, hint, route.peer_hint_bytes, now)
        self._challenge_path(route, path, now)
        return route.path is not None  # None if the connection cannot be challenged

    def _challenge_path(self, route: Route, path: PathValidation, now: float) -> None:
        """Send the new address its challenge, again if the last one is one RTO old, within
        the anti-amplification limit; give the address up after PATH_CHALLENGE_TRIES.  The
        RTO without backoff: the echo is a round trip away, however often the timer doubled
        while the old address was out of reach (with it, a peer whose first echo was lost
        was not challenged again for seconds)."""
        conn = route.conn
        if now - path.sent_at < max(conn.base_rto_s, PATH_CHALLENGE_MIN_GAP_S):
            return
        if path.tries >= PATH_CHALLENGE_TRIES:
            self._give_up_path(route, path)
            return
        data = conn.path_challenge(path.token)
        if data is None:
            route.path = None
            return
        if path.tx_bytes + len(data) > AMPLIFICATION_FACTOR * path.rx_bytes:
            self.stats.amplification_limited += 1
            return
        path.tx_bytes += len(data)
        path.tries += 1
        path.sent_at = now
        self.stats.path_challenges_sent += 1
        self._transmits.append((data, path.addr))

    def _give_up_path(self, route: Route, path: PathValidation) -> None:
        route.path = None
        route.home = None
        route.path_failed_at = path.sent_at
        self.stats.path_validations_failed += 1
        _log.info("path_validation_failed", cid=f"{route.conn.local_cid:08x}", peer=str(path.addr))

    def _move(self, route: Route, path: PathValidation, now: float, echoed_at: float) -> None:
        """The new address echoed the challenge (at ``echoed_at``): the connection's traffic
        goes there now."""
        conn = route.conn
        old = route.addr
        cid = conn.local_cid
        route.addr = path.addr
        route.path = None
        same_host = isinstance(old, tuple) and isinstance(path.addr, tuple)
        same_host = same_host and old[0] == path.addr[0]
        key = (old, conn.peer_cid)
        if self._syn_index.get(key) == cid:
            del self._syn_index[key]
            self._syn_index[(path.addr, conn.peer_cid)] = cid
        self.stats.path_changes += 1
        _log.info("path_changed", cid=f"{cid:08x}", old=str(old), new=str(path.addr))
        # The challenge's round trip, when only one went out (an echo of an earlier one
        # would make a later one's look shorter): the new path's first RTT sample.
        sample = echoed_at - path.sent_at if path.tries == 1 else None
        conn.path_changed(
            same_host=same_host, peer=address_text(path.addr), now=now, rtt_sample=sample
        )

    def receive_icmp(
        self,
        quoted: bytes,
        addr: Address,
        *,
        port_unreachable: bool,
        errno: int,
        now: float,
    ) -> Route | None:
        """An ICMP error about a datagram this socket sent to ``addr``, quoting its start.  A
        port unreachable quoting one of our datagrams goes to the connection it names, from
        the address it was sent to, and the connection checks the rest; the route to service
        then, else None (counted as ignored)."""
        stats = self.stats
        stats.icmp_errors += 1
        route = None
        packet = None
        if port_unreachable:
            try:
                packet = decode_quoted(quoted)
            except PacketError:
                packet = None
            if packet is not None:
                route = self._routes.get(packet.src_cid)
        if (
            route is None
            or packet is None
            or (route.addr is not None and not same_address(route.addr, addr))
            or route.path is not None  # the peer spoke from a new address: it may have moved
            or self._follow_hint(route, packet, now)  # it did, and is validated there now
            or not route.conn.receive_unreachable(packet, now=now)
        ):
            stats.icmp_errors_ignored += 1
            _log.debug("icmp_error_ignored", errno=errno, peer=str(addr))
            return None
        _log.debug("icmp_port_unreachable", cid=f"{packet.src_cid:08x}", peer=str(addr))
        return route

    def connect(self, addr: Address, *, now: float) -> Route:
        """Start an active open towards ``addr`` (None on a connected socket).  At
        ``max_connections`` the oldest connection winding down without its application
        makes room, as for a SYN; with none, ``ConnectionRefusedError``."""
        limit = self.config.max_connections
        if len(self._routes) >= limit and not self._make_room(now):
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"too many connections on this endpoint ({limit})"
            )
        conn = Connection(self.config, local_cid=self._new_cid())
        route = self._route_factory(conn, addr, True)
        route.client = True
        self._routes[conn.local_cid] = route
        conn.connect(now=now)
        return route

    # ------------------------------------------------------------------ outputs

    @property
    def has_output(self) -> bool:
        """Whether ``datagrams_to_send()`` or ``next_event()`` has something."""
        return bool(self._transmits) or bool(self._events)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """The stateless answers due (resets, refusals, cookie SYN-ACKs), with the address
        each goes to; the connections' own datagrams come from ``datagrams_for``."""
        out = self._transmits
        self._transmits = []
        return out

    def next_event(self) -> ConnectionEvicted | None:
        """The next thing the driver must act on, or None."""
        return self._events.pop(0) if self._events else None

    def datagrams_for(self, route: Route, *, now: float) -> list[bytes]:
        """What the connection has to send now, within the anti-amplification limit while
        its peer's address is unvalidated (after a move to a new address that is due)."""
        if route.path is not None:
            self.complete_move(route, now)
        datagrams = route.conn.datagrams_to_send(now=now)
        if not route.validated:
            datagrams = self.limit_amplification(route, datagrams)
        return datagrams

    def limit_amplification(self, route: Route, datagrams: list[bytes]) -> list[bytes]:
        """Of a connection's datagrams, those within three times the bytes its unvalidated
        peer has sent (RFC 9000 section 8.1); the rest are dropped, to be retransmitted."""
        state = route.conn.state
        if state in SYNCHRONIZED and state is not SYN_RECEIVED:
            route.validated = True  # the peer echoed our ISN from its address: validated
            return datagrams
        out = []
        for data in datagrams:
            if route.tx_bytes + len(data) > AMPLIFICATION_FACTOR * route.rx_bytes:
                self.stats.amplification_limited += 1
                continue
            route.tx_bytes += len(data)
            out.append(data)
        return out

    # ------------------------------------------------------------------ the driver's news

    def leave_backlog(self, route: Route) -> None:
        """A passive open is established or has ended: it no longer counts as half-open."""
        if route.in_backlog:
            route.in_backlog = False
            self._half_open -= 1

    def release(self, route: Route) -> bool:
        """The application is done with this connection, which winds down on its own; it is
        the first to be evicted at ``max_connections``.  False if it was already released
        or is no longer routed."""
        cid = route.conn.local_cid
        if self._routes.get(cid) is not route or cid in self._released:
            return False
        self._released[cid] = route
        return True

    def forget(self, route: Route, *, now: float) -> None:
        """The connection is over: stop routing to it, keep its drop counts, and remember a
        cleanly closed one's id a while (its peer's last ACKs draw no reset)."""
        if route.ended:
            return
        route.ended = True
        conn = route.conn
        drops = conn.drops
        if drops:
            self.stats.add_drops(drops)
        cid = conn.local_cid
        if conn.close_reason is CloseReason.CLOSED:
            closed = self._recently_closed
            if len(closed) >= RECENTLY_CLOSED_MAX:
                del closed[next(iter(closed))]  # the oldest entry
            closed[cid] = now + 2 * self.config.msl_s
        if self._routes.get(cid) is route:
            del self._routes[cid]
            self._released.pop(cid, None)
        # The SYN index lives as long as the connection: a duplicate or late SYN must reach it
        # (and draw a challenge ACK), not open a second, never-completed connection.
        key = (route.addr, conn.peer_cid)
        if self._syn_index.get(key) == cid:
            del self._syn_index[key]

    def stop_accepting(self, *, now: float | None = None) -> None:
        """Open no more server connections; SYNs draw a reset from now on.  With ``now``,
        the ACKs of SYN cookies handed out before are still taken for ``AFTER_CLOSE_GRACE_S``
        (``cookie_grace``): those clients' connects have completed on their side."""
        if self._accepting and now is not None:
            self._stopped_at = now
        self._accepting = False

    def cookie_grace(self, now: float) -> bool:
        """Whether this endpoint, which stopped accepting, still takes the ACKs of the SYN
        cookies it handed out before: for ``AFTER_CLOSE_GRACE_S`` after it stopped, if it had
        sent any in the ``COOKIE_GRACE_S`` before (a cookie is good that long)."""
        stopped = self._stopped_at
        sent = self._cookie_sent_at
        return (
            stopped is not None
            and sent is not None
            and stopped - sent < COOKIE_GRACE_S
            and now - stopped < AFTER_CLOSE_GRACE_S
        )

    def start_accepting(self) -> None:
        """Open server connections from now on (a server made not yet serving)."""
        self._accepting = True
        self._stopped_at = None

    def clear(self) -> None:
        """The socket is gone: route nothing any more."""
        self._routes.clear()
        self._released.clear()
        self._syn_index.clear()

    # ------------------------------------------------------------------ views

    @property
    def accepting(self) -> bool:
        """Whether a SYN may open a new server connection."""
        return self._accepting

    @property
    def connection_count(self) -> int:
        """Connections routed (TIME_WAIT included)."""
        return len(self._routes)

    @property
    def released_count(self) -> int:
        """Of those, the ones winding down without their application."""
        return len(self._released)

    @property
    def half_open(self) -> int:
        """Passive opens not yet established (what the backlog bounds)."""
        return self._half_open

    def route_for(self, cid: int) -> Route | None:
        """The route of the connection with local id ``cid``."""
        return self._routes.get(cid)

    def routes(self) -> list[Route]:
        """Every routed connection (a copy)."""
        return list(self._routes.values())

    def released(self) -> list[Route]:
        """The released connections, oldest first (a copy)."""
        return list(self._released.values())

    # ------------------------------------------------------------------ new connections

    def _new_cid(self) -> int:
        layout = self.cid_layout
        while True:
            cid = layout.apply(self._cid_source())
            if cid and cid not in self._routes:
                return cid

    def _route_for_syn(self, packet: Packet, addr: Address, now: float) -> Route | None:
        """The connection a SYN goes to: the one it opened before (a retransmission), or a new
        one; None when it was answered statelessly or dropped (always counted)."""
        key = (addr, packet.src_cid)
        cid = self._syn_index.get(key)
        if cid is not None and cid in self._routes:
            return self._routes[cid]  # a retransmitted SYN
        if not self._accepting:
            self.stats.count_drop(DropReason.UNKNOWN_CONNECTION, addr)
            self._reset(packet, addr, now)
            return None
        if len(self._routes) >= self.config.max_connections and not self._make_room(now):
            self._refuse(packet, addr, "too many connections", now)
            return None
        if self._half_open >= self._backlog:
            if self._cookies is not None:
                self._send_cookie(packet, addr, now)
            else:
                self.stats.count_drop(DropReason.BACKLOG_FULL, addr)
            return None
        conn = Connection(self.config, local_cid=self._new_cid())
        route = self._route_factory(conn, addr, False)
        conn.listen(now=now)
        route.validated = False  # its bytes are counted by the caller
        route.in_backlog = True
        self._routes[conn.local_cid] = route
        self._syn_index[key] = conn.local_cid
        self._half_open += 1
        return route

    def _make_room(self, now: float) -> bool:
        """At max_connections, evict the oldest released connection to admit a new one;
        False when there is none."""
        for route in self._released.values():
            route.conn.abort()  # RST unless in TIME_WAIT, whose close is already reported
            self.forget(route, now=now)
            self._events.append(ConnectionEvicted(route))
            return True
        return False

    def _refuse(
        self, packet: Packet, addr: Address, why: str, now: float, *, again: bool = False
    ) -> None:
        """Answer a SYN with a reset that carries the reason as its payload (RFC 9293 section
        3.5.3 allows diagnostic data in a RST), for the client's ConnectionRefusedError; or
        the ACK of a SYN cookie (the client's connect has returned: it reads the reason in
        its ConnectionResetError); ``again``: a later datagram of a connection refused
        already (answered and dropped, but not counted as another refusal)."""
        self.stats.count_drop(DropReason.TOO_MANY_CONNECTIONS, addr)
        if not again:
            self.stats.connections_refused += 1
            _log.info("connection_refused", reason=why, peer=str(addr))
        reason = why.encode()[: packet.seg_len + 40]
        if packet.flags & _ACK:
            rst = Packet(_RST, packet.dst_cid, packet.src_cid, packet.ack, 0, 0, reason)
        else:
            ack = (packet.seq + packet.seg_len) & SEQ_MASK
            rst = Packet(_RST | _ACK, 0, packet.src_cid, 0, ack, 0, reason)
        self._send_limited_reset(encode(rst), addr, now)

    def _send_cookie(self, syn: Packet, addr: Address, now: float) -> None:
        """Answer a SYN statelessly: the SYN-ACK's connection id and ISN are a cookie."""
        cookies = self._cookies
        assert cookies is not None
        cfg = self.config
        sack = cfg.sack and syn.sack_permitted
        ts = syn.timestamps is not None  # accepted whenever offered, as TCP does
        opts = pack_options(syn.mss, syn.wscale, sack, ts)
        cid, isn = cookies.make(_addr_key(addr), syn.src_cid, syn.seq, opts, now=now)
        p = Packet(_SYN | _ACK, cid, syn.src_cid, isn, (syn.seq + 1) & SEQ_MASK, 0)
        p.mss = cfg.mss_bytes
        p.window = min(cfg.recv_buffer_bytes, MAX_WINDOW_FIELD)
        if syn.wscale is not None:
            p.wscale = wscale_for(cfg.recv_buffer_bytes)
        p.sack_permitted = sack
        if ts and syn.timestamps is not None:
            p.timestamps = (0, syn.timestamps[0])
        self.stats.syn_cookies_sent += 1
        self._cookie_sent_at = now
        self._transmits.append((encode(p), addr))

    def _cookie_mode(self, flags: int, now: float) -> bool:
        """While SYN cookies are being handed out, an ACK that fails the cookie check may be
        a cookie client's later segment whose first one was lost in the flood: it gets no
        reset (that would kill the connection); its retransmission of the first will pass."""
        return (
            bool(flags & _ACK)
            and self._cookie_sent_at is not None
            and now - self._cookie_sent_at < COOKIE_GRACE_S
        )

    def _cookie_options(self, packet: Packet, addr: Address, now: float) -> int | None:
        """The options a SYN cookie encoded, if ``packet`` is the ACK of a cookie SYN-ACK
        this endpoint may still take; else None."""
        cookies = self._cookies
        assert cookies is not None
        if not self._accepting and not self.cookie_grace(now):
            return None
        peer_isn = (packet.seq - 1) & SEQ_MASK
        isn = (packet.ack - 1) & SEQ_MASK
        key = _addr_key(addr)
        return cookies.check(key, packet.src_cid, peer_isn, packet.dst_cid, isn, now=now)

    def _route_for_cookie(self, packet: Packet, addr: Address, opts: int, now: float) -> Route:
        """The connection rebuilt from the ACK of a cookie SYN-ACK (``opts``: what the cookie
        encoded)."""
        peer_isn = (packet.seq - 1) & SEQ_MASK
        isn = (packet.ack - 1) & SEQ_MASK
        mss, wscale, sack, ts = unpack_options(opts)
        syn = Packet(_SYN, packet.src_cid, 0, peer_isn, 0, packet.window, b"")
        syn.mss = mss
        syn.wscale = wscale
        syn.sack_permitted = sack
        if ts:
            syn.timestamps = (packet.timestamps[0] if packet.timestamps else 0, 0)
        conn = Connection(self.config, local_cid=packet.dst_cid, isn=isn)
        route = self._route_factory(conn, addr, False)
        conn.listen(now=now)
        conn.receive_packet(syn, now=now)
        conn.datagrams_to_send(now=now)  # the SYN-ACK the cookie already answered
        route.in_backlog = True  # as if it had waited in the backlog
        self._routes[conn.local_cid] = route
        self._syn_index[(addr, packet.src_cid)] = conn.local_cid
        self._half_open += 1
        self.stats.syn_cookies_accepted += 1
        _log.debug("syn_cookie_accepted", cid=f"{conn.local_cid:08x}", peer=str(addr))
        return route

    # ------------------------------------------------------------------ stateless answers

    def _recently_closed_ack(self, packet: Packet, now: float) -> bool:
        """A bare ACK for a connection that closed in order moments ago (the copies of a
        client's final ACK) needs no RST: the connection ended cleanly on both sides."""
        expiry = self._recently_closed.get(packet.dst_cid)
        if expiry is None:
            return False
        if now > expiry:
            del self._recently_closed[packet.dst_cid]
            return False
        return packet.flags == _ACK and not packet.payload

    def _reset(self, packet: Packet, addr: Address, now: float) -> None:
        rst = reset_for(packet)
        if rst is not None:
            self._send_limited_reset(rst, addr, now)

    def _send_limited_reset(self, rst: bytes, addr: Address, now: float) -> None:
        """Send a reset unless the endpoint's reset budget (a token bucket refilled at
        ``max_resets_per_s``) is spent: spoofed datagrams must not draw a reflected flood."""
        rate = self.config.max_resets_per_s
        self._reset_tokens = min(rate, self._reset_tokens + (now - self._reset_refill_at) * rate)
        self._reset_refill_at = now
        if self._reset_tokens < 1:
            self.stats.resets_rate_limited += 1
            return
        self._reset_tokens -= 1
        self.stats.resets_sent += 1
        self._transmits.append((rst, addr))
