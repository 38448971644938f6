"""What a connection learns from the peer's SYN (utcp/connection/handshake.py, ``take_syn``):
its ISN and connection id, the options both ends agreed on, window scaling both ways, the MSS
each way (with and without timestamps and path MTU discovery), the first window and the
initial congestion window."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from utcp import congestion
from utcp.config import Config
from utcp.connection.counters import Counters
from utcp.connection.deadlines import Deadlines
from utcp.connection.handshake import DEFAULT_PEER_MSS, take_syn
from utcp.connection.options import Negotiated
from utcp.connection.receive_side import ReceiveSide
from utcp.connection.segments import Segments
from utcp.connection.send_side import SendSide
from utcp.connection.tracepoints import TracePoints
from utcp.events import Event
from utcp.packet import HEADER_SIZE, Flag, Packet, wscale_for

MSS = 1400
TS_COST = 12  # the padded TIMESTAMPS option
CONFIG = Config(
    mss_bytes=MSS,
    pmtud=False,
    base_datagram_bytes=1200,
    recv_buffer_bytes=1 << 20,
    ack_every_segments=2,
    initial_cwnd_segments=10,
    sack=True,
    timestamps=False,
).validate()
PEER_ISN = 0xFFFF_FF00  # near the wrap: the position arithmetic must not care
PEER_CID = 0xB0B


class Stack:
    """The parts ``take_syn`` fills in, fresh as a connection builds them."""

    def __init__(self, config: Config = CONFIG, **changes: Any) -> None:
        if changes:
            config = config.replace(**changes)
        self.config = config
        self.count = Counters()
        self.dl = Deadlines()
        self.events: deque[Event] = deque()
        self.snd = SendSide(iss=77, mss=config.mss_bytes)
        self.rcv = ReceiveSide(config, events=self.events, counters=self.count, deadlines=self.dl)
        self.opts = Negotiated(config)
        self.cc = congestion.create(
            config.congestion_control,
            mss=config.mss_bytes,
            initial_window_segments=config.initial_cwnd_segments,
        )
        self.seg = Segments(
            config,
            local_cid=0xA11CE,
            snd=self.snd,
            rcv=self.rcv,
            opts=self.opts,
            counters=self.count,
            trace=TracePoints(),
        )

    def take(self, p: Packet) -> None:
        take_syn(
            p,
            self.config,
            snd=self.snd,
            rcv=self.rcv,
            opts=self.opts,
            cc=self.cc,
            segments=self.seg,
        )


def syn(
    *,
    mss: int | None = MSS,
    wscale: int | None = None,
    sack: bool = False,
    timestamps: tuple[int, int] | None = None,
    probe: bool = False,
    window: int = 65535,
) -> Packet:
    """The peer's SYN with the options given."""
    return Packet(
        int(Flag.SYN),
        PEER_CID,
        0,
        PEER_ISN,
        0,
        window,
        mss=mss,
        wscale=wscale,
        sack_permitted=sack,
        timestamps=timestamps,
        probe_permitted=probe,
    )


def test_the_peer_isn_and_connection_id_are_learned() -> None:
    """RFC 9293 section 3.10.7.2/3: IRS = SEG.SEQ, RCV.NXT = IRS + 1 (position 1 here), and
    the window is taken from this segment (SND.WL1 = its position 0)."""
    s = Stack()
    s.take(syn())
    assert s.rcv.irs == PEER_ISN
    assert s.rcv.nxt == 1
    assert s.rcv.wire_ack(s.rcv.nxt) == 0xFFFF_FF01
    assert s.seg.peer_cid == PEER_CID
    assert s.snd.wl1 == 0


def test_an_option_is_on_only_when_both_syns_offer_it() -> None:
    """RFC 2018 section 2 (SACK-permitted), path MTU discovery's PROBE_PERMITTED: each side's
    offer alone enables nothing; timestamps (RFC 7323 section 3.2) offered in a SYN are
    accepted, as TCP does."""
    cases: list[tuple[dict[str, Any], dict[str, Any], tuple[bool, bool, bool]]] = [
        # (our config, the peer's offer) -> (sack_ok, ts_ok, pmtud_ok)
        (dict(sack=True, timestamps=True, pmtud=True), dict(), (False, False, False)),
        (
            dict(sack=False, timestamps=False, pmtud=False),
            dict(sack=True, timestamps=(5, 0), probe=True),
            (False, True, False),
        ),
        (
            dict(sack=True, timestamps=True, pmtud=True),
            dict(sack=True, timestamps=(5, 0), probe=True),
            (True, True, True),
        ),
        (
            dict(sack=True, timestamps=False),
            dict(sack=True, timestamps=(5, 0)),
            (True, True, False),
        ),
    ]
    for ours, theirs, want in cases:
        s = Stack(**ours)
        s.take(syn(**theirs))
        assert (s.opts.sack_ok, s.opts.ts_ok, s.opts.pmtud_ok) == want, (ours, theirs)


def test_the_peer_timestamp_is_kept_for_echoing() -> None:
    """RFC 7323 section 4.3: TS.Recent is set from the SYN's TSval."""
    s = Stack(timestamps=True)
    s.take(syn(timestamps=(123_456, 0)))
    assert s.opts.ts_ok
    assert s.opts.ts_recent == 123_456


def test_window_scaling_applies_both_ways_when_the_peer_offers_it() -> None:
    """RFC 7323 section 2.2/2.3: with the WSCALE option in both SYNs, the peer's shift scales
    its windows and ours is the smallest that lets the field carry our receive buffer."""
    s = Stack()
    s.take(syn(wscale=7))
    assert s.opts.wscale_ok
    assert s.snd.wscale == 7
    assert s.rcv.wscale == wscale_for(1 << 20) == 5
    big = Stack(recv_buffer_bytes=1 << 23)
    big.take(syn(wscale=0))
    assert (big.snd.wscale, big.rcv.wscale) == (0, 8)
    small = Stack(recv_buffer_bytes=65535)
    small.take(syn(wscale=3))
    assert (small.snd.wscale, small.rcv.wscale) == (3, 0)


def test_no_window_scaling_unless_the_peer_offers_it() -> None:
    """RFC 7323 section 2.2: a SYN without WSCALE turns scaling off in both directions."""
    s = Stack()
    s.snd.wscale = s.rcv.wscale = 9  # whatever was there before
    s.take(syn(wscale=None))
    assert not s.opts.wscale_ok
    assert (s.snd.wscale, s.rcv.wscale) == (0, 0)


def test_the_syn_window_is_never_scaled() -> None:
    """RFC 7323 section 2.2: "The window field in a segment where the SYN bit is set ... MUST
    NOT be scaled"."""
    s = Stack()
    s.take(syn(wscale=7, window=1000))
    assert s.snd.wnd == 1000


def test_the_mss_is_the_smaller_of_ours_and_the_peers() -> None:
    """RFC 9293 section 3.7.1: send no segment larger than the peer's MSS; ack_bytes (when
    to ACK at once) and full_seg (mid-transfer) are counted in that size."""
    s = Stack()
    s.take(syn(mss=1000))
    assert (s.snd.peer_mss, s.snd.mss) == (1000, 1000)
    assert (s.rcv.ack_bytes, s.rcv.full_seg) == (2000, 1000)
    big = Stack()
    big.take(syn(mss=9000))
    assert (big.snd.peer_mss, big.snd.mss) == (9000, MSS)
    assert (big.rcv.ack_bytes, big.rcv.full_seg) == (2 * MSS, MSS)
    tiny = Stack()
    tiny.take(syn(mss=20))
    assert tiny.snd.mss == 64  # the smallest payload utcp sends


def test_timestamps_take_their_room_from_the_mss() -> None:
    """RFC 7323 section 3.2 / RFC 9293 section 3.7.1: options count against the MSS, so
    every segment carries 12 payload bytes fewer."""
    s = Stack(timestamps=True)
    s.take(syn(mss=1000, timestamps=(1, 0)))
    assert s.snd.mss == 1000 - TS_COST
    assert s.rcv.ack_bytes == 2 * (1000 - TS_COST)
    assert s.rcv.full_seg == 1000 - TS_COST


def test_a_syn_without_the_mss_option_means_536() -> None:
    """RFC 9293 section 3.7.1: with no MSS option, assume 536 bytes (RFC 1122 4.2.2.6)."""
    assert DEFAULT_PEER_MSS == 536
    s = Stack()
    s.take(syn(mss=None))
    assert (s.snd.peer_mss, s.snd.mss) == (536, 536)
    assert s.cc.cwnd == 10 * 536


def test_path_mtu_discovery_starts_from_the_base_size() -> None:
    """RFC 8899 section 5.1.2: sending starts at BASE_PLPMTU (1200 bytes here: 1176 payload);
    a smaller peer MSS still caps it, and ACK-worthy data is counted in base-size segments
    whatever our own mss_bytes says."""
    s = Stack(pmtud=True)
    s.take(syn(mss=65000, probe=True))
    base_mss = 1200 - HEADER_SIZE
    assert s.opts.pmtud_ok
    assert (s.snd.peer_mss, s.snd.mss) == (65000, base_mss)
    assert (s.rcv.ack_bytes, s.rcv.full_seg) == (2 * base_mss, base_mss)
    assert s.cc.cwnd == 10 * base_mss
    small = Stack(pmtud=True)
    small.take(syn(mss=1000, probe=True))
    assert small.snd.mss == 1000
    assert (small.rcv.ack_bytes, small.rcv.full_seg) == (2 * base_mss, base_mss)


def test_path_mtu_discovery_with_timestamps() -> None:
    """The base-size segment and the peer's MSS both lose the 12 timestamp bytes."""
    s = Stack(pmtud=True, timestamps=True)
    s.take(syn(mss=65000, probe=True, timestamps=(9, 0)))
    base_mss = 1200 - HEADER_SIZE - TS_COST
    assert s.snd.mss == base_mss
    assert s.rcv.ack_bytes == 2 * base_mss
    capped = Stack(pmtud=True, timestamps=True)
    capped.take(syn(mss=1000, probe=True, timestamps=(9, 0)))
    assert capped.snd.mss == 1000 - TS_COST


@pytest.mark.parametrize("segments", [1, 4, 10])
def test_the_initial_window_is_counted_in_the_negotiated_mss(segments: int) -> None:
    """RFC 5681 section 3.1 / RFC 6928: IW is a number of segments of the sender's MSS, so
    the controller's MSS and cwnd follow the handshake."""
    s = Stack(initial_cwnd_segments=segments)
    s.take(syn(mss=900))
    assert s.cc.mss == 900
    assert s.cc.cwnd == segments * 900
