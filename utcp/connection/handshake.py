"""What a connection learns from the peer's SYN (or SYN-ACK): its initial sequence number and
connection id, the options both ends agreed on, the MSS each way, the first window and the
initial congestion window.

Runs once per connection, on the SYN that synchronizes it; the state transition itself is the
connection's.
"""

from __future__ import annotations

from ..config import Config
from ..congestion import CongestionController
from ..packet import HEADER_SIZE, Packet, wscale_for
from .options import Negotiated
from .receive_side import ReceiveSide
from .segments import Segments
from .send_side import SendSide

__all__ = ["DEFAULT_PEER_MSS", "take_syn"]

DEFAULT_PEER_MSS = 536  # a SYN without the MSS option (RFC 9293 section 3.7.1)


def take_syn(
    p: Packet,
    config: Config,
    *,
    snd: SendSide,
    rcv: ReceiveSide,
    opts: Negotiated,
    cc: CongestionController,
    segments: Segments,
) -> None:
    """Learn the peer's ISN, connection id and options from its SYN."""
    rcv.irs = p.seq
    rcv.nxt = 1
    segments.peer_cid = p.src_cid
    snd.wl1 = 0
    peer_mss = p.mss if p.mss is not None else DEFAULT_PEER_MSS
    opts.learn(p, config)
    if p.wscale is not None:
        snd.wscale = p.wscale
        rcv.wscale = wscale_for(config.recv_buffer_bytes)
    else:
        snd.wscale = rcv.wscale = 0
    ts_cost = opts.ts_cost
    snd.peer_mss = peer_mss
    if opts.pmtud_ok:
        # Path MTU discovery starts from the base size and raises it as probes get through;
        # the peer's segments range as widely, so count ACK-worthy data in base-size segments.
        base_mss = max(64, config.base_datagram_bytes - HEADER_SIZE - ts_cost)
        snd.mss = min(max(64, peer_mss - ts_cost), base_mss)
        rcv.full_seg = base_mss
    else:
        snd.mss = max(64, min(config.mss_bytes, peer_mss) - ts_cost)
        rcv.full_seg = snd.mss
    rcv.set_ack_bytes(config.ack_every_segments * rcv.full_seg)
    cc.mss = snd.mss
    cc.cwnd = config.initial_cwnd_segments * snd.mss
    snd.wnd = p.window  # SYN windows are never scaled (RFC 7323 section 2.2)
