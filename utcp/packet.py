"""Wire codec: the fixed 24-byte header, TLV options and payload of one utcp datagram.

``decode`` accepts any byte string and either returns a ``Packet`` or raises ``PacketError``;
nothing else escapes it.  ``encode`` is its exact inverse for every packet it accepts.
The layout is documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .events import DropReason

__all__ = [
    "HEADER_SIZE",
    "MAX_OPTIONS_SIZE",
    "VERSION",
    "Flag",
    "OptionKind",
    "Packet",
    "PacketError",
    "decode",
    "decode_quoted",
    "encode",
    "options_size",
    "stamp",
    "wscale_for",
]

VERSION: Final = 1
HEADER_SIZE: Final = 24  # fixed part, bytes
MAX_HEADER_SIZE: Final = 60  # 4-bit header length in 32-bit words, as in TCP
MAX_OPTIONS_SIZE: Final = MAX_HEADER_SIZE - HEADER_SIZE  # 36 bytes
MAX_WINDOW_FIELD: Final = 0xFFFF
MAX_WSCALE: Final = 14  # RFC 7323 section 2.3

# ver/hlen, flags, window, src cid, dst cid, seq, ack, crc32
_HEADER: Final = struct.Struct("!BBHIIIII")
_SEQ_OFFSET: Final = 12
_CRC_OFFSET: Final = 20
_PLAIN_VH: Final = (VERSION << 4) | (HEADER_SIZE >> 2)  # version and header length, no options
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_U32X2: Final = struct.Struct("!II")
_U64: Final = struct.Struct("!Q")
# Bound once: in the compiled build a call through a constant skips the attribute lookups.
_HEAD_PLAIN: Final = struct.Struct("!BBHIIII")  # the fixed header up to its CRC field
_pack_head_plain: Final = _HEAD_PLAIN.pack
_unpack_header: Final = _HEADER.unpack_from
_pack_u32: Final = _U32.pack
_pack_u32_into: Final = _U32.pack_into
_crc32: Final = zlib.crc32


def _crc_python(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 of a datagram with its own CRC field left out."""
    mv = memoryview(data)
    return _crc32(mv[_CRC_OFFSET + 4 :], _crc32(mv[:_CRC_OFFSET]))


def _fixed_header_python(
    data: bytes | bytearray | memoryview,
) -> tuple[int, int, int, int, int, int, int, bool]:
    """The fixed header's fields up to its CRC field, and whether that field holds the
    datagram's CRC-32."""
    vh, flags, window, src, dst, seq, ack, crc = _unpack_header(data, 0)
    return vh, flags, window, src, dst, seq, ack, _crc_python(data) == crc


class PacketError(ValueError):
    """A datagram that is not a well-formed utcp packet (bad length, version, checksum, option).

    ``reason`` says which counter the drop belongs to: ``DropReason.BAD_CHECKSUM`` or
    ``DropReason.MALFORMED``.
    """

    def __init__(self, message: str, reason: DropReason = DropReason.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


class Flag(enum.IntFlag):
    """Header flag bits; the positions match TCP's, the unused bits are reserved for later."""

    NONE = 0
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    ACK = 0x10


class OptionKind(enum.IntEnum):
    """Option type codes. Every option but EOL and NOP is type, length (whole option), value."""

    EOL = 0
    NOP = 1
    MSS = 2  # u16 largest payload the sender of the SYN accepts
    WSCALE = 3  # u8 shift applied to the window field (RFC 7323 section 2)
    SACK_PERMITTED = 4  # no value (RFC 2018)
    SACK = 5  # n * (u32 left edge, u32 right edge) (RFC 2018)
    TIMESTAMPS = 8  # u32 TSval, u32 TSecr (RFC 7323 section 3)
    PROBE_PERMITTED = 9  # no value: the SYN's sender does path MTU discovery (docs/PROTOCOL.md)
    PROBE = 10  # u32 probe id: the rest of the datagram is zero padding, never data (RFC 8899)
    PROBE_ACK = 11  # u32 id of the probe this ACK answers
    PATH_CHALLENGE = 12  # u64 unpredictable token the peer must echo (path validation)
    PATH_RESPONSE = 13  # u64 token of the challenge this segment answers


@dataclass(slots=True, init=False)
class Packet:
    """One decoded datagram. ``window`` is the raw 16-bit field; scaling is the connection's job.

    ``flags`` is a plain ``int`` of ``Flag`` bits (``Flag(p.flags)`` names them): enum
    arithmetic costs microseconds per datagram on the hot path.

    A probe (``probe`` set) is ``padding`` zero bytes after the options, not payload: it
    occupies no sequence space and is never delivered (docs/PROTOCOL.md, path MTU discovery).
    """

    flags: int
    src_cid: int
    dst_cid: int
    seq: int
    ack: int
    window: int
    payload: bytes | memoryview = b""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    probe_permitted: bool = False
    probe: int | None = None
    probe_ack: int | None = None
    padding: int = 0
    path_challenge: int | None = None
    path_response: int | None = None

    # Written out rather than generated: the compiled build then makes it native code.
    def __init__(
        self,
        flags: int,
        src_cid: int,
        dst_cid: int,
        seq: int,
        ack: int,
        window: int,
        payload: bytes | memoryview = b"",
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        timestamps: tuple[int, int] | None = None,
        probe_permitted: bool = False,
        probe: int | None = None,
        probe_ack: int | None = None,
        padding: int = 0,
        path_challenge: int | None = None,
        path_response: int | None = None,
    ) -> None:
        self.flags = flags
        self.src_cid = src_cid
        self.dst_cid = dst_cid
        self.seq = seq
        self.ack = ack
        self.window = window
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.timestamps = timestamps
        self.probe_permitted = probe_permitted
        self.probe = probe
        self.probe_ack = probe_ack
        self.padding = padding
        self.path_challenge = path_challenge
        self.path_response = path_response

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload bytes plus one each for SYN and FIN."""
        n = len(self.payload)
        if self.flags & Flag.SYN:
            n += 1
        if self.flags & Flag.FIN:
            n += 1
        return n


def options_size(
    *,
    mss: bool = False,
    wscale: bool = False,
    sack_permitted: bool = False,
    sack_blocks: int = 0,
    timestamps: bool = False,
    probe_permitted: bool = False,
    probe: bool = False,
    probe_ack: bool = False,
    path_challenge: bool = False,
    path_response: bool = False,
) -> int:
    """Encoded size of the given options, padded to a multiple of four bytes."""
    n = (
        (4 if mss else 0)
        + (3 if wscale else 0)
        + (2 if sack_permitted else 0)
        + (2 + 8 * sack_blocks if sack_blocks else 0)
        + (10 if timestamps else 0)
        + (2 if probe_permitted else 0)
        + (6 if probe else 0)
        + (6 if probe_ack else 0)
        + (10 if path_challenge else 0)
        + (10 if path_response else 0)
    )
    return (n + 3) & ~3


def _encode_options(p: Packet) -> bytes:
    out = bytearray()
    if p.mss is not None:
        out += bytes((OptionKind.MSS, 4)) + _U16.pack(p.mss)
    if p.wscale is not None:
        out += bytes((OptionKind.WSCALE, 3, p.wscale))
    if p.sack_permitted:
        out += bytes((OptionKind.SACK_PERMITTED, 2))
    if p.probe_permitted:
        out += bytes((OptionKind.PROBE_PERMITTED, 2))
    if p.timestamps is not None:
        out += bytes((OptionKind.TIMESTAMPS, 10)) + _U32X2.pack(*p.timestamps)
    if p.sack_blocks:
        out += bytes((OptionKind.SACK, 2 + 8 * len(p.sack_blocks)))
        for left, right in p.sack_blocks:
            out += _U32X2.pack(left, right)
    if p.probe is not None:
        out += bytes((OptionKind.PROBE, 6)) + _U32.pack(p.probe)
    if p.probe_ack is not None:
        out += bytes((OptionKind.PROBE_ACK, 6)) + _U32.pack(p.probe_ack)
    if p.path_challenge is not None:
        out += bytes((OptionKind.PATH_CHALLENGE, 10)) + _U64.pack(p.path_challenge)
    if p.path_response is not None:
        out += bytes((OptionKind.PATH_RESPONSE, 10)) + _U64.pack(p.path_response)
    pad = -len(out) % 4
    if pad:
        out += bytes((OptionKind.NOP,)) * pad
    if len(out) > MAX_OPTIONS_SIZE:
        raise ValueError(f"options need {len(out)} bytes, at most {MAX_OPTIONS_SIZE} fit")
    return bytes(out)


def encode(p: Packet) -> bytes:
    """Serialise ``p`` with its CRC-32. Raises ``ValueError`` for values that do not fit."""
    try:
        return _encode(p)
    except struct.error as exc:
        raise ValueError(f"packet field out of range: {exc}") from None


def _encode(p: Packet) -> bytes:
    if (
        p.mss is None
        and p.wscale is None
        and not p.sack_permitted
        and not p.sack_blocks
        and p.probe is None
        and p.probe_ack is None
        and p.path_challenge is None
        and p.path_response is None
        and not p.probe_permitted
    ):
        opts = b"" if p.timestamps is None else _encode_options(p)
    else:
        opts = _encode_options(p)
    if p.wscale is not None and not 0 <= p.wscale <= MAX_WSCALE:
        raise ValueError(f"window scale {p.wscale} out of range 0..{MAX_WSCALE}")
    body = len(p.payload)
    if p.probe is not None or p.padding:
        if p.probe is None:
            raise ValueError("padding needs a probe id")
        if body:
            raise ValueError("a probe carries padding, not payload")
        if p.padding < 0:
            raise ValueError(f"negative padding {p.padding}")
        body = p.padding  # zero bytes: a new bytearray is zero-filled
    hlen = HEADER_SIZE + len(opts)
    buf = bytearray(hlen + body)
    _HEADER.pack_into(
        buf,
        0,
        (VERSION << 4) | (hlen >> 2),
        int(p.flags),
        p.window,
        p.src_cid,
        p.dst_cid,
        p.seq,
        p.ack,
        0,
    )
    buf[HEADER_SIZE:hlen] = opts
    if p.payload:
        buf[hlen:] = p.payload
    return _sealed(buf)


def _encode_plain_python(
    flags: int,
    src_cid: int,
    dst_cid: int,
    seq: int,
    ack: int,
    window: int,
    payload: bytes | bytearray | memoryview,
) -> bytes:
    """``encode_plain`` in Python."""
    try:
        head = _pack_head_plain(_PLAIN_VH, flags, window, src_cid, dst_cid, seq, ack)
    except struct.error:
        raise ValueError("packet field out of range") from None
    # The CRC field ends the fixed header: the CRC covers what comes before it and the payload.
    return b"".join((head, _pack_u32(_crc32(payload, _crc32(head))), payload))


_Buffer = bytes | bytearray | memoryview


def _checksums() -> tuple[
    Callable[[_Buffer], int],
    Callable[[int, int, int, int, int, int, _Buffer], bytes],
    Callable[[_Buffer], tuple[int, int, int, int, int, int, int, bool]],
]:
    """The C versions (utcp/_crc.c) when built, the same in Python otherwise (and with
    ``UTCP_PURE=1``, which runs the core as plain Python)."""
    if os.environ.get("UTCP_PURE") != "1":
        try:
            from ._crc import datagram_crc, encode_plain, fixed_header
        except ImportError:
            pass
        else:
            return datagram_crc, encode_plain, fixed_header
    return _crc_python, _encode_plain_python, _fixed_header_python


# One small C call per datagram rather than two slices and two zlib calls, and struct's
# packing or unpacking besides: these had cost about a ninth of a request/response round trip
# (16,000 of 146,700 instructions, benchmarks/HISTORY.md).
_CHECKSUMS: Final = _checksums()
_crc: Final = _CHECKSUMS[0]
# ``encode`` of a packet with no options, from its fields (flags, source and destination ids,
# seq, ack, window, payload): the same bytes without building a ``Packet`` (most segments of
# an established connection are like this).  ``ValueError`` for a field out of range.
encode_plain: Final = _CHECKSUMS[1]
_fixed_header: Final = _CHECKSUMS[2]


def stamp(template: bytes, seq: int, payload: bytes | bytearray | memoryview) -> bytes:
    """``template``, an encoded packet without payload, re-stamped with sequence number ``seq``
    and ``payload``: the same bytes ``encode`` gives for that packet, at a fraction of the
    cost, for a run of data segments that share every other field."""
    buf = bytearray(template)
    _pack_u32_into(buf, _SEQ_OFFSET, seq)
    buf += payload
    return _sealed(buf)


def _sealed(buf: bytearray) -> bytes:
    """The datagram in ``buf`` with its CRC field filled in."""
    _pack_u32_into(buf, _CRC_OFFSET, _crc(buf))
    return bytes(buf)


def _decode_options(p: Packet, opts: memoryview) -> None:
    i = 0
    end = len(opts)
    while i < end:
        kind = opts[i]
        if kind == OptionKind.EOL:
            return
        if kind == OptionKind.NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise PacketError("option length missing")
        length = opts[i + 1]
        if length < 2 or i + length > end:
            raise PacketError(f"option {kind} has bad length {length}")
        if kind == OptionKind.MSS:
            if length != 4:
                raise PacketError("MSS option length must be 4")
            p.mss = _U16.unpack_from(opts, i + 2)[0]
        elif kind == OptionKind.WSCALE:
            if length != 3:
                raise PacketError("window scale option length must be 3")
            p.wscale = min(opts[i + 2], MAX_WSCALE)
        elif kind == OptionKind.SACK_PERMITTED:
            if length != 2:
                raise PacketError("SACK-permitted option length must be 2")
            p.sack_permitted = True
        elif kind == OptionKind.SACK:
            if (length - 2) % 8 or length == 2:
                raise PacketError("SACK option length must be 2 + 8n, n >= 1")
            p.sack_blocks = tuple(_U32X2.unpack_from(opts, j) for j in range(i + 2, i + length, 8))
        elif kind == OptionKind.TIMESTAMPS:
            if length != 10:
                raise PacketError("timestamps option length must be 10")
            p.timestamps = _U32X2.unpack_from(opts, i + 2)
        elif kind == OptionKind.PROBE_PERMITTED:
            if length != 2:
                raise PacketError("probe-permitted option length must be 2")
            p.probe_permitted = True
        elif kind == OptionKind.PROBE:
            if length != 6:
                raise PacketError("probe option length must be 6")
            p.probe = _U32.unpack_from(opts, i + 2)[0]
        elif kind == OptionKind.PROBE_ACK:
            if length != 6:
                raise PacketError("probe-ack option length must be 6")
            p.probe_ack = _U32.unpack_from(opts, i + 2)[0]
        elif kind == OptionKind.PATH_CHALLENGE:
            if length != 10:
                raise PacketError("path-challenge option length must be 10")
            p.path_challenge = _U64.unpack_from(opts, i + 2)[0]
        elif kind == OptionKind.PATH_RESPONSE:
            if length != 10:
                raise PacketError("path-response option length must be 10")
            p.path_response = _U64.unpack_from(opts, i + 2)[0]
        # Unknown options are skipped by their length so later versions can add more.
        i += length


def decode(data: bytes | bytearray | memoryview) -> Packet:
    """Parse one datagram, checking version, lengths, options and the CRC-32.

    The payload is a zero-copy ``memoryview`` into ``data``.
    """
    mv = memoryview(data)
    if type(data) is not bytes:  # bytes (what sockets give) are always a flat run of bytes
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
    n = len(mv)
    if n < HEADER_SIZE:
        raise PacketError(f"datagram of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    fields = _fixed_header(data if type(data) is bytes else mv)
    # Typed locals: the compiled build does native integer arithmetic on them.
    vh: int = fields[0]
    flags: int = fields[1]
    window: int = fields[2]
    src: int = fields[3]
    dst: int = fields[4]
    seq: int = fields[5]
    ack: int = fields[6]
    # The checksum first: corruption anywhere, header fields included, counts as corruption.
    if not fields[7]:
        raise PacketError("checksum mismatch", DropReason.BAD_CHECKSUM)
    if vh >> 4 != VERSION:
        raise PacketError(f"unsupported version {vh >> 4}")
    hlen = (vh & 0x0F) << 2
    if hlen < HEADER_SIZE or hlen > n:
        raise PacketError(f"bad header length {hlen} for a {n}-byte datagram")
    p = Packet(flags, src, dst, seq, ack, window, mv[hlen:])
    if hlen > HEADER_SIZE:
        try:
            _decode_options(p, mv[HEADER_SIZE:hlen])
        except (struct.error, IndexError) as exc:  # defensive: lengths are checked above
            raise PacketError(f"malformed options: {exc}") from None
        if p.probe is not None:
            _take_padding(p)
    return p


def decode_quoted(data: bytes | bytearray | memoryview) -> Packet:
    """The fixed header of one of our own datagrams as an ICMP error quotes it back.

    An ICMP message carries only the start of the datagram that caused it (576 bytes of IPv4
    at most), so the CRC cannot be checked and the payload is left out: only the version and
    the header fields are read (what RFC 5927's checks need: both connection ids and the
    sequence number).  Raises ``PacketError`` when even the header is not there.
    """
    n = len(data)
    if n < HEADER_SIZE:
        raise PacketError(f"quoted datagram of {n} bytes is shorter than the header")
    vh, flags, window, src, dst, seq, ack, _crc_field = _unpack_header(data, 0)
    if vh >> 4 != VERSION:
        raise PacketError(f"unsupported version {vh >> 4}")
    return Packet(flags, src, dst, seq, ack, window)


def _take_padding(p: Packet) -> None:
    """A probe's body is padding: all zero (so ``encode`` rebuilds it exactly), never payload."""
    pad = p.payload
    n = len(pad)
    if n and bytes(pad).count(0) != n:
        raise PacketError("probe padding must be zero bytes")
    p.padding = n
    p.payload = b""


def wscale_for(buffer_bytes: int) -> int:
    """The window scale (RFC 7323 section 2.3) that lets a window field carry ``buffer_bytes``."""
    shift = 0
    while (MAX_WINDOW_FIELD << shift) < buffer_bytes and shift < MAX_WSCALE:
        shift += 1
    return shift
