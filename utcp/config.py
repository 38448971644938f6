"""Every tunable of a utcp connection, in one dataclass with documented defaults.

Units are in the field names. ``Config.validate`` rejects nonsense early with ``ValueError`` so a
bad value never surfaces as odd behaviour deep in the protocol.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .packet import HEADER_SIZE, MAX_WINDOW_FIELD, MAX_WSCALE

DEFAULT_DATAGRAM_BYTES = 1452  # UDP payload that fits a 1500-byte path (IPv6 40 + UDP 8)
BASE_DATAGRAM_BYTES = 1200  # UDP payload every path is assumed to carry (RFC 8899 section 5.1.2)
MAX_UDP_PAYLOAD_BYTES = 65507  # 65535 - IPv4 header 20 - UDP header 8
IO_PATHS = ("auto", "fast", "portable")


class BufferBudget:
    """The running total behind ``Config.endpoint_buffer_bytes``: how many bytes of buffer
    growth the connections sharing one ``Config`` object hold, against the limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def lease(self) -> BufferLease:
        """A new, empty share of this budget for one buffer of one connection."""
        return BufferLease(self)


class BufferLease:
    """One buffer's share of a ``BufferBudget``: resized as the buffer grows, given back by
    ``release()`` or, at the latest, when the lease is freed with its connection."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: BufferBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def resize(self, want: int) -> int:
        """Hold ``want`` bytes if the budget has room, else as many as it has (at least what
        is held already); returns the bytes now held."""
        budget = self._budget
        have = self.bytes
        if want > have:
            want = have + max(0, min(want - have, budget.limit - budget.used))
        budget.used += want - have
        self.bytes = want
        return want

    def release(self) -> None:
        """Give everything back."""
        self._budget.used -= self.bytes
        self.bytes = 0

    def __del__(self) -> None:
        self.release()


def given(config: object) -> Config:
    """The ``config=`` an API call was given (``Config()`` for None), validated; a
    ``TypeError`` for anything but a ``Config``."""
    if config is None:
        return Config().validate()
    if not isinstance(config, Config):
        raise TypeError(f"config must be a utcp.Config, not {type(config).__name__}")
    return config.validate()


_FIELD_TYPES: dict[str, tuple[type, ...]] = {}


def _field_types() -> dict[str, tuple[type, ...]]:
    """Each plain field's accepted types, from its annotation (``int`` for a ``float``
    field too, as Python's numbers go; ``NoneType`` where it is optional)."""
    if not _FIELD_TYPES:
        names = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}
        for f in dataclasses.fields(Config):
            parts = [part.strip() for part in str(f.type).split("|")]
            if all(part in names for part in parts):
                kinds = tuple(names[part] for part in parts)
                if float in kinds:
                    kinds += (int,)
                _FIELD_TYPES[f.name] = kinds
    return _FIELD_TYPES


def _check_types(config: Config) -> None:
    for name, kinds in _field_types().items():
        value = getattr(config, name)
        if type(value) in kinds:
            continue  # the common case, checked first: every connection validates its Config
        # A bool is an int to Python, but True is no size, count or duration.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds[:2])
            raise TypeError(f"invalid Config: {name} must be {wanted}, not {type(value).__name__}")


_FLOAT_FIELDS: list[str] = []


def _check_finite(config: Config) -> None:
    """Every duration and rate is a finite number: an infinite ``rto_initial_s`` made a
    connect wait for ever, an infinite ``msl_s`` a TIME_WAIT that never ends.  Only the
    float fields are looked at (listed once): every connection validates its Config."""
    if not _FLOAT_FIELDS:
        _FLOAT_FIELDS.extend(name for name, kinds in _field_types().items() if float in kinds)
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"invalid Config: {name} must be finite, not {value!r}")


def _usable_path(value: object) -> bool:
    """A string that can name a directory: not empty, no NUL byte."""
    return isinstance(value, str) and value != "" and "\0" not in value


@dataclass(frozen=True, slots=True)
class Config:
    """Connection tunables. Every field has a default that suits a general-purpose stream."""

    mss_bytes: int = DEFAULT_DATAGRAM_BYTES - HEADER_SIZE
    """Largest payload per segment with path MTU discovery off; announced in our SYN (the
    peer's limits ours).  With ``pmtud`` on, the discovered size governs instead."""

    pmtud: bool = True
    """Path MTU discovery (RFC 8899, datagram PLPMTUD): start at ``base_datagram_bytes``,
    probe larger sizes with padded probes, fall back when a size stops getting through."""

    base_datagram_bytes: int = BASE_DATAGRAM_BYTES
    """UDP payload size PMTU discovery starts from and falls back to (RFC 8899 BASE_PLPMTU)."""

    max_datagram_bytes: int = MAX_UDP_PAYLOAD_BYTES
    """Largest UDP payload PMTU discovery may reach and the size announced as our MSS (plus
    the header) when it is on; pin it to a path's known size to skip probing above it."""

    io_path: str = "auto"
    """Datagram I/O of the asyncio layer: ``"fast"`` (Linux: the endpoint's own socket,
    drained per wake-up, UDP GRO and GSO), ``"portable"`` (asyncio's datagram transport, any
    OS and loop), or ``"auto"``: the ``UTCP_IO`` environment variable if set, else fast where
    the kernel supports it."""

    recv_buffer_bytes: int = 8 << 20
    """Most the receive buffer may hold: bytes held for the application (while it does not
    read) plus those the window lets the peer send.  The window scale our SYN offers is chosen
    from it.  With ``recv_autotune`` the window starts at ``recv_window_initial_bytes`` and
    grows towards this; without, the window is this from the start (a fixed buffer)."""

    recv_window_initial_bytes: int = 256 << 10
    """The window first offered with ``recv_autotune`` on (never more than
    ``recv_buffer_bytes``)."""

    recv_autotune: bool = True
    """Receive-window autotuning ("dynamic right-sizing", as Linux's tcp_rcv_space_adjust):
    once per receiver RTT the window grows to about four times the bytes the application took
    in that RTT (more while that amount is still growing), so the window stays ahead of the
    path's bandwidth-delay product; it never shrinks (docs/PROTOCOL.md, "Receive window
    autotuning").  A reader that does not read takes nothing and closes the window as
    before."""

    send_buffer_bytes: int = 1 << 20
    """Unacknowledged bytes above which the stream layer applies backpressure to writers: the
    transport's high-water mark (low water a quarter of it) when the connection needs no
    more than this in flight."""

    send_buffer_max_bytes: int = 8 << 20
    """Most the transport's high-water mark grows to when the connection can have more in
    flight (``Connection.send_buffer_goal``: three times what the largest congestion window
    yet and the peer's window let fly; the low-water mark is then two thirds of it), so a
    long fat path is not starved by ``send_buffer_bytes`` (a maximum below that means no
    growth).  An application's own ``set_write_buffer_limits()`` replaces the automatic
    marks."""

    endpoint_buffer_bytes: int = 256 << 20
    """Most the connections built from one ``Config`` object (those of one endpoint) may grow
    their buffers by, together: receive windows beyond ``recv_window_initial_bytes`` and
    high-water marks beyond ``send_buffer_bytes``.  Past it, windows and marks stop growing
    (they never shrink for it); a connection gives its share back when its peer's FIN arrives
    or it ends (receive) or the application is done with it (send), at the latest when it is
    freed."""

    delayed_ack_s: float = 0.040
    """Longest an acknowledgement may be held back (RFC 9293 section 3.8.6.3)."""

    ack_every_segments: int = 2
    """Acknowledge at once after this many full-sized segments."""

    rto_initial_s: float = 1.0
    """Retransmission timeout before any RTT sample (RFC 6298 section 2.1)."""

    rto_min_s: float = 0.2
    """Lower bound on the retransmission timeout's margin over the smoothed RTT: the timeout
    is SRTT + max(4 RTTVAR, this) (Linux's rule; RFC 6298's floor under the sum let a timeout
    fire when one retransmission waited behind a full queue)."""

    rto_max_s: float = 60.0
    """Upper bound on the retransmission timeout, also after backoff."""

    max_retransmits: int = 15
    """Consecutive timeouts of the same data after which the connection aborts (as Linux's
    tcp_retries2: about nine minutes with the default RTO bounds)."""

    fin_wait_2_timeout_s: float | None = 60.0
    """After the application closed (``Connection.orphan``, a transport's close()), how long
    FIN_WAIT_2 waits for the peer to close its side before the connection is reset (Linux's
    tcp_fin_timeout); half-close with write_eof() has no limit."""

    fin_retries: int = 6
    """Unanswered retransmissions of our FIN (with any data before it) after which a
    connection the application has closed gives up: in LAST_ACK or CLOSING, or in FIN_WAIT_1
    once orphaned (as Linux's tcp_orphan_retries).  About 25 s with the default minimum RTO;
    the close counts as done if every byte was acknowledged, as a timeout otherwise."""

    syn_retries: int = 10
    """SYN retransmissions before the connect fails with TimeoutError (71 s with the
    defaults).  More than TCP's, at a steadier pace: a server answers each SYN with one
    SYN-ACK and never repeats it on its own (no amplification), so every try of the
    handshake is the client's."""

    syn_rto_max_s: float = 8.0
    """Longest wait between two SYNs: their timer doubles from ``rto_initial_s`` for as long as
    it stays within this."""

    user_timeout_s: float | None = None
    """Longest the peer may go without acknowledging outstanding data before the connection
    aborts (TCP_USER_TIMEOUT); None leaves it to ``max_retransmits``.  With keepalive on, it
    also bounds how long probes may go unanswered."""

    msl_s: float = 2.0
    """Maximum segment lifetime; TIME_WAIT lasts twice this.  Shorter than TCP's because
    random connection ids already keep old datagrams out of new connections; TIME_WAIT here
    only re-acknowledges a retransmitted FIN."""

    initial_cwnd_segments: int = 10
    """Initial congestion window in segments (RFC 6928)."""

    congestion_control: str = "bbr"
    """Name of the congestion control algorithm (see ``utcp.congestion.available``).
    ``bbr`` (the default) models the path, its bandwidth and round-trip time, and paces at
    the bandwidth: on the WAN benchmark it keeps a lossy path full where the loss-based
    controllers collapse (18.6 against 3.6 Mbit/s at 1% loss on 20 Mbit/s), fills a long fat
    path and shares a link with itself and beside kernel TCP cubic (README, "Why the default
    is bbr").  ``cubic`` is RFC 9438 CUBIC with HyStart++ (RFC 9406), Linux's default, for
    flows that should meet kernel TCP on its own terms; ``newreno`` is RFC 5681 and RFC 6582
    Reno; ``ledbat`` is RFC 6817 background transport, yielding to other traffic by delay."""

    pacing: str = "auto"
    """When segments are paced (``utcp/connection/pacer.py``) rather than sent in
    window-sized bursts: ``"auto"`` at the rate the congestion controller sets (``bbr``
    does; ``cubic`` and ``newreno`` set none and are not paced, as Linux paces only where
    the controller asks: paced, ``cubic`` took two thirds of a shared link from kernel
    cubic), ``"on"`` also for a controller without a rate (twice cwnd per
    smoothed RTT in slow start, 1.2 times after, Linux's defaults), ``"off"`` never.  A burst
    is a millisecond of data at the rate, so pacing costs nothing at loopback rates."""

    sack: bool = True
    """Offer and use selective acknowledgements (RFC 2018)."""

    timestamps: bool = False
    """Offer the timestamps option (RFC 7323); values are echoed, RTT still comes from
    Karn-filtered segment timing.  A connection offers them anyway when its congestion
    controller measures one-way delay (``ledbat``), and accepts them whenever the peer's SYN
    offers them, as TCP does (``offers_timestamps``)."""

    fast_paths: bool = True
    """Take the core's shortcuts for the common cases (header prediction for the next in-order
    segment, a lone segment sent without the general send loop, an early return when nothing is
    due).  They change nothing on the wire; turning them off exists to check exactly that."""

    rack: bool = True
    """Detect losses by time with SACK (RACK, RFC 8985 section 6): a segment is lost one
    reordering window after a segment sent later is acknowledged, rather than after three
    duplicate ACKs, which also finds lost retransmissions and losses in thin flows.  The
    window adapts to reordering the peer's D-SACKs reveal.  Off: RFC 6675's DupThresh."""

    tail_loss_probe: bool = True
    """Resend the last segment after two RTTs without an ACK (RFC 8985 section 7), so a loss
    at the tail of a flight is repaired by fast recovery rather than the RTO."""

    dupack_threshold: int = 3
    """Duplicate ACKs (or SACKed segments above a hole) that trigger fast retransmit."""

    thin_stream_bundling: bool = True
    """Redundant data bundling for thin streams (small messages, few in flight, as a game or
    a remote shell sends): a segment of new data also carries the bytes before it that are
    still unacknowledged, [SND.UNA, end) rather than [SND.NXT, end), when all of them fit in
    one MSS, none is SACKed and nothing waits for retransmission.  A lost segment is then
    repaired by the next message, without a retransmission timer, a tail loss probe or
    duplicate ACKs (a thin stream has too few segments in flight for fast retransmit), and
    without an extra datagram.  Only the bytes are sent again: the copy is not counted in
    flight, in cwnd or as a retransmission (``ConnectionStats.bundled_bytes`` counts it).  A
    bulk transfer has far more than one MSS in flight, so it never bundles."""

    keepalive_idle_s: float | None = 15.0
    """Silence (nothing heard from the peer) before keepalive probes start; None: keepalive
    off.  On by default, unlike TCP: with ``idle_timeout_s`` it is how a peer that vanished
    without a word (a killed process, a pulled cable) is noticed, and it keeps NAT bindings
    of a quiet connection alive.  Each probe is one bare ACK and draws one from the peer.
    The accepting side starts one ``keepalive_interval_s`` later, so that between peers
    configured alike only the connecting side probes a quiet connection (half the datagrams
    of both probing; 10,000 idle connections cost a server under 2% of a core)."""

    keepalive_interval_s: float = 5.0
    """Time between unanswered keepalive probes."""

    keepalive_probes: int = 3
    """Unanswered keepalive probes after which the connection aborts (TimeoutError)."""

    keepalive_stall_s: float | None = 1.0
    """When a peer that was sending full-sized segments (in the middle of a transfer) falls
    silent for this long (and at least three RTOs), probe it once, so a peer whose process
    died is found in seconds where its host answers with ICMP port unreachable.  The same
    probe follows a silence after the peer challenged our address (a NAT rebinding), in
    case our echo was lost.  None: only the regular keepalive probes."""

    idle_timeout_s: float | None = 30.0
    """End (with a reset and TimeoutError) a connection that has received nothing acceptable
    for this long, whether it was sending or only reading; None: no limit, as in TCP.  As
    QUIC's idle timeout (quinn's default is 30 s too), but a quiet connection whose peer is
    alive stays up: the keepalive probes it draws answers to count as traffic.  A close
    waiting only for the ACK of our FIN (every byte both ways acknowledged) ends as done,
    without the reset."""

    challenge_ack_interval_s: float = 0.5
    """Least time between two challenge ACKs of one connection (RFC 5961 section 7; Linux's
    tcp_invalid_ratelimit): forged segments beyond that are dropped unanswered."""

    max_connections: int = 10_000
    """Most connections one endpoint holds (TIME_WAIT included); a SYN beyond it is refused
    with a reset that says so, which the client raises as ConnectionRefusedError, and an open
    beyond it on a client endpoint raises ConnectionRefusedError at once.  Either way the
    oldest connection winding down without its application (TIME_WAIT, say) makes room."""

    syn_cookies: bool = True
    """When a server's half-open backlog is full, answer SYNs statelessly with SYN cookies
    (utcp.cookies) instead of dropping them, so a SYN flood cannot lock clients out."""

    server_id_bits: int = 0
    """Bits at the top of every connection id this endpoint chooses that carry ``server_id``
    (docs/PROTOCOL.md, "Connection ids"), so that an id-aware load balancer can route each
    datagram to the server that chose its id; 0 (the default) leaves every bit random.  With
    worker processes (SO_REUSEPORT) the worker bits follow; at most 16 bits are fixed."""

    server_id: int = 0
    """This server's id, in ``server_id_bits`` bits."""

    max_resets_per_s: float = 200.0
    """Most resets per second an endpoint sends in answer to datagrams for no connection; the
    rest are dropped unanswered, so a spoofed stream cannot be reflected at full rate."""

    trace_dir: str | None = None
    """Directory where the asyncio layer writes one trace file per connection
    (docs/TRACE.md); None leaves it to the ``UTCP_TRACE`` environment variable."""

    buffer_budget: BufferBudget = field(init=False, repr=False, compare=False)
    """Not a tunable: the running total of ``endpoint_buffer_bytes``, one per ``Config``
    object (``replace()`` makes a new one), shared by the connections built from it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "buffer_budget", BufferBudget(self.endpoint_buffer_bytes))

    def validate(self) -> Config:
        """Return self, or raise ``TypeError`` naming the first field of the wrong type
        (``pmtud="no"`` would have turned discovery on) or ``ValueError`` naming the first
        field with a bad value."""
        _check_types(self)
        _check_finite(self)
        checks = [
            (
                64 <= self.mss_bytes <= MAX_UDP_PAYLOAD_BYTES - HEADER_SIZE,
                "mss_bytes must be 64..65483",  # a full segment fits the largest datagram
            ),
            (self.recv_buffer_bytes >= 2 * self.mss_bytes, "recv_buffer_bytes < 2 * mss_bytes"),
            (0 <= self.server_id_bits <= 16, "server_id_bits must be 0..16"),
            (
                0 <= self.server_id < 1 << min(max(0, self.server_id_bits), 16),
                "server_id must fit in server_id_bits bits",
            ),
            (
                HEADER_SIZE + 64 <= self.base_datagram_bytes <= self.max_datagram_bytes,
                "need 88 <= base_datagram_bytes <= max_datagram_bytes",
            ),
            (
                self.max_datagram_bytes <= MAX_UDP_PAYLOAD_BYTES,
                "max_datagram_bytes must be <= 65507",
            ),
            (self.io_path in IO_PATHS, "io_path must be 'auto', 'fast' or 'portable'"),
            (
                self.recv_buffer_bytes <= MAX_WINDOW_FIELD << MAX_WSCALE,
                "recv_buffer_bytes is larger than the largest window",
            ),
            (
                self.recv_window_initial_bytes >= 2 * self.mss_bytes,
                "recv_window_initial_bytes < 2 * mss_bytes",
            ),
            (self.send_buffer_bytes > 0, "send_buffer_bytes must be positive"),
            (self.send_buffer_max_bytes > 0, "send_buffer_max_bytes must be positive"),
            (self.endpoint_buffer_bytes >= 0, "endpoint_buffer_bytes must be >= 0"),
            (self.delayed_ack_s >= 0, "delayed_ack_s must be >= 0"),
            (self.ack_every_segments >= 1, "ack_every_segments must be >= 1"),
            (0 < self.rto_min_s <= self.rto_max_s, "need 0 < rto_min_s <= rto_max_s"),
            (self.rto_initial_s > 0, "rto_initial_s must be positive"),
            (self.max_retransmits >= 1, "max_retransmits must be >= 1"),
            (self.syn_retries >= 0, "syn_retries must be >= 0"),
            (self.syn_rto_max_s > 0, "syn_rto_max_s must be positive"),
            (self.pacing in ("auto", "on", "off"), "pacing must be 'auto', 'on' or 'off'"),
            (self.fin_retries >= 0, "fin_retries must be >= 0"),
            (
                self.fin_wait_2_timeout_s is None or self.fin_wait_2_timeout_s > 0,
                "fin_wait_2_timeout_s must be positive or None",
            ),
            (
                self.user_timeout_s is None or self.user_timeout_s > 0,
                "user_timeout_s must be positive or None",
            ),
            (self.msl_s >= 0, "msl_s must be >= 0"),
            (self.initial_cwnd_segments >= 1, "initial_cwnd_segments must be >= 1"),
            (self.dupack_threshold >= 1, "dupack_threshold must be >= 1"),
            (
                self.keepalive_idle_s is None or self.keepalive_idle_s > 0,
                "keepalive_idle_s must be positive or None",
            ),
            (self.keepalive_interval_s > 0, "keepalive_interval_s must be positive"),
            (self.keepalive_probes >= 1, "keepalive_probes must be >= 1"),
            (
                self.keepalive_stall_s is None or self.keepalive_stall_s > 0,
                "keepalive_stall_s must be positive or None",
            ),
            (
                self.idle_timeout_s is None or self.idle_timeout_s > 0,
                "idle_timeout_s must be positive or None",
            ),
            (self.challenge_ack_interval_s >= 0, "challenge_ack_interval_s must be >= 0"),
            (self.max_connections >= 1, "max_connections must be >= 1"),
            (self.max_resets_per_s >= 0, "max_resets_per_s must be >= 0"),
            (
                self.trace_dir is None or _usable_path(self.trace_dir),
                "trace_dir must be a non-empty path or None",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid Config: {message}")
        from .congestion import available

        if self.congestion_control not in available():
            raise ValueError(
                f"invalid Config: unknown congestion_control {self.congestion_control!r}; "
                f"choose one of {sorted(available())}"
            )
        return self

    @property
    def offers_timestamps(self) -> bool:
        """Whether our SYN offers timestamps: asked for, or needed by the congestion
        controller (its delay samples come from them)."""
        if self.timestamps:
            return True
        from .congestion import wants_delay_samples

        return wants_delay_samples(self.congestion_control)

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed, validated."""
        return dataclasses.replace(self, **changes).validate()  # type: ignore[arg-type]
