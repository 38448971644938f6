"""The building of every segment a connection sends: header, ACK, window and options (SYN
options, timestamps, SACK blocks, the PMTU probe and its answer).

Every segment built with ACK set carries the current ACK, window and SACK blocks, so it
settles any ACK owed (a PMTU probe, likely to be lost, settles nothing), and records the
window it advertised.  No segment's options push it past what the MSS allows.
"""

from __future__ import annotations

from typing import Final, final

from ..config import Config
from ..packet import (
    HEADER_SIZE,
    MAX_OPTIONS_SIZE,
    MAX_WINDOW_FIELD,
    Flag,
    Packet,
    encode,
    encode_plain,
    options_size,
    wscale_for,
)
from ..trace import packet_fields
from .counters import Counters
from .options import Negotiated
from .receive_side import ReceiveSide
from .send_side import SendSide
from .tracepoints import TracePoints

__all__ = ["Segments"]

# Flag bits as plain ints: IntFlag arithmetic is slow on the per-datagram path.
_FIN: Final = int(Flag.FIN)
_ACK: Final = int(Flag.ACK)
_MAX_SACK_BLOCKS_WITH_TS: Final = 3  # 36 option bytes: 10 (timestamps) + 2 + 3 * 8
_MAX_SACK_BLOCKS: Final = 4  # 2 + 4 * 8


@final
class Segments:
    """Encodes this connection's segments; knows both connection ids."""

    def __init__(
        self,
        config: Config,
        *,
        local_cid: int,
        snd: SendSide,
        rcv: ReceiveSide,
        opts: Negotiated,
        counters: Counters,
        trace: TracePoints,
    ) -> None:
        self.local_cid = local_cid
        self.peer_cid = 0
        self._cfg = config
        self._snd = snd
        self._rcv = rcv
        self._opts = opts
        self._count = counters
        self._trace = trace

    def build(
        self,
        flags: int,
        seq_pos: int,
        payload: bytes,
        *,
        probe_ack: int | None = None,
        path_challenge: int | None = None,
        path_response: int | None = None,
    ) -> bytes:
        """One encoded segment at position ``seq_pos``, with the ACK, window and options due;
        ``probe_ack`` answers the peer's PMTU probe of that id, ``path_challenge`` asks the
        peer to echo a token and ``path_response`` echoes one (each on a pure ACK)."""
        rcv = self._rcv
        opts = self._opts
        trace = self._trace
        if (
            not opts.ts_ok
            and probe_ack is None
            and path_challenge is None
            and path_response is None
            and trace.tracer is None
            and not (opts.sack_ok and (rcv.reasm.nbytes or rcv.dsack is not None) and flags & _ACK)
        ):
            # No options: encoded straight from the fields.
            wscale = rcv.wscale
            window = min(rcv.window() >> wscale, MAX_WINDOW_FIELD)
            rcv.adv_wnd = window << wscale
            if flags & _ACK:
                rcv.ack_sent()
                ack = rcv.wire_ack(rcv.nxt)
            else:
                ack = 0
            return encode_plain(
                flags,
                self.local_cid,
                self.peer_cid,
                self._snd.wire_seq(seq_pos),
                ack,
                window,
                payload,
            )
        p = Packet(
            flags,
            self.local_cid,
            self.peer_cid,
            self._snd.wire_seq(seq_pos),
            rcv.wire_ack(rcv.nxt) if flags & _ACK else 0,
            0,
            payload,
        )
        wnd = rcv.window()
        p.window = min(wnd >> rcv.wscale, MAX_WINDOW_FIELD)
        rcv.adv_wnd = p.window << rcv.wscale
        if opts.ts_ok:
            p.timestamps = (opts.ts_now(), opts.ts_recent)
        if probe_ack is not None:
            p.probe_ack = probe_ack
        path = path_challenge is not None or path_response is not None
        if path:
            p.path_challenge = path_challenge
            p.path_response = path_response
        if opts.sack_ok and (len(rcv.reasm) or rcv.dsack is not None) and flags & _ACK:
            p.sack_blocks = self._sack_blocks(len(payload), probe_ack is not None, path)
            rcv.dsack = None  # reported once (RFC 2883 section 4)
        return self._finish(p, flags)

    def build_syn(self, flags: int, *, active: bool) -> bytes:
        """Our SYN (``active``: its options are offers) or SYN-ACK (what was agreed)."""
        cfg = self._cfg
        rcv = self._rcv
        opts = self._opts
        p = Packet(
            flags,
            self.local_cid,
            self.peer_cid,
            self._snd.wire_seq(0),
            rcv.wire_ack(rcv.nxt) if flags & _ACK else 0,
            0,
            b"",
        )
        p.mss = opts.adv_mss
        p.window = min(rcv.window(), MAX_WINDOW_FIELD)  # SYN windows are never scaled
        rcv.adv_wnd = p.window
        if active:
            p.wscale = wscale_for(cfg.recv_buffer_bytes)
            p.sack_permitted = cfg.sack
            p.probe_permitted = cfg.pmtud
            if cfg.offers_timestamps:
                p.timestamps = (opts.ts_now(), 0)
        else:
            if opts.wscale_ok:
                p.wscale = rcv.wscale
            p.sack_permitted = opts.sack_ok
            p.probe_permitted = opts.pmtud_ok
            if opts.ts_ok:
                p.timestamps = (opts.ts_now(), opts.ts_recent)
        return self._finish(p, flags)

    def _finish(self, p: Packet, flags: int) -> bytes:
        if flags & _ACK:
            self._rcv.ack_sent()
        trace = self._trace
        if trace.tracer is not None:
            trace.event("datagram_sent", packet_fields(p, self._rcv.adv_wnd))
        return encode(p)

    def emit(self, out: list[bytes], start: int, end: int) -> None:
        """Append the datagram for positions [start, end), a FIN included if ``end`` passes
        it; what the peer already acknowledged is left out."""
        snd = self._snd
        fin_pos = snd.fin_pos
        flags = _ACK
        start = max(start, snd.una)
        data_end = end
        if fin_pos is not None and end > fin_pos:
            flags |= _FIN
            data_end = fin_pos
        payload = snd.buf.get(start, data_end) if data_end > start else b""
        out.append(self.build(flags, start, payload))
        self._count.segments_sent += 1

    def build_probe(self, probe_id: int, size: int) -> bytes:
        """A PMTU probe of ``size`` bytes: an ACK at SND.NXT with the current ACK and window,
        the PROBE option and zero padding up to the size (docs/PROTOCOL.md, path MTU
        discovery).

        It occupies no sequence space and is not recorded for retransmission; since it is
        likely to be dropped, it settles no ACK owed and leaves the window last advertised as
        it was.
        """
        rcv = self._rcv
        opts = self._opts
        p = Packet(
            _ACK,
            self.local_cid,
            self.peer_cid,
            self._snd.wire_seq(self._snd.nxt),
            rcv.wire_ack(rcv.nxt),
            min(rcv.window() >> rcv.wscale, MAX_WINDOW_FIELD),
            b"",
            probe=probe_id,
        )
        if opts.ts_ok:
            p.timestamps = (opts.ts_now(), opts.ts_recent)
        p.padding = size - HEADER_SIZE - options_size(timestamps=opts.ts_ok, probe=True)
        trace = self._trace
        if trace.tracer is not None:
            trace.event("datagram_sent", packet_fields(p, p.window << rcv.wscale))
        return encode(p)

    def _sack_blocks(
        self, payload_len: int, probe_ack: bool, path: bool = False
    ) -> tuple[tuple[int, int], ...]:
        rcv = self._rcv
        ts_ok = self._opts.ts_ok
        ranges = rcv.reasm.ranges()
        limit = _MAX_SACK_BLOCKS_WITH_TS if ts_ok else _MAX_SACK_BLOCKS
        if probe_ack or path:  # PROBE_ACK (6 bytes), a path option (10) share the 36 bytes
            while options_size(
                sack_blocks=limit, timestamps=ts_ok, probe_ack=probe_ack, path_challenge=path
            ) > (MAX_OPTIONS_SIZE):
                limit -= 1
        if payload_len:
            # Options must not push a data segment past the datagram size the MSS allows
            # (RFC 9293 section 3.7.1): carry only the blocks that fit beside the payload.
            room = self._snd.mss + self._opts.ts_cost - payload_len
            while limit and options_size(sack_blocks=limit, timestamps=ts_ok) > room:
                limit -= 1
        # RFC 2018 section 4: the block holding the most recent arrival goes first, then
        # the blocks of the arrivals before it, most recent first, then the rest.  A receiver
        # that answers a batch of datagrams with one ACK thereby reports every block the
        # batch added; in ascending order after the first, the blocks between the lowest and
        # the newest were never reported once more holes were open than an ACK holds, and the
        # sender's RACK retransmitted them (`make demo` under bbr: 208 of 245 retransmissions
        # arrived as duplicates).
        if len(ranges) > 1:
            reasm = rcv.reasm
            ordered: list[tuple[int, int]] = []
            for pos in rcv.recent_pos:
                r = reasm.range_at(pos)
                if r is not None and r not in ordered:
                    ordered.append(r)
                    if len(ordered) == limit:
                        break
            for r in ranges:  # then the rest, ascending, as far as the ACK has room
                if len(ordered) >= limit:
                    break
                if r not in ordered:
                    ordered.append(r)
            ranges = ordered
        if rcv.dsack is not None:
            # A D-SACK block goes before every other (RFC 2883 section 4).
            ranges.insert(0, rcv.dsack)
        return tuple((rcv.wire_ack(s), rcv.wire_ack(e)) for s, e in ranges[:limit])
