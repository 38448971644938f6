"""The wire codec: exact layout, round trips of every field and option, and that ``decode``
turns every malformed datagram into ``PacketError`` and nothing else."""

from __future__ import annotations

import array
import random
import struct
import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from utcp import PacketError
from utcp.packet import (
    HEADER_SIZE,
    MAX_OPTIONS_SIZE,
    VERSION,
    Flag,
    OptionKind,
    Packet,
    decode,
    encode,
    encode_plain,
    options_size,
    stamp,
)

U32 = 0xFFFF_FFFF
SEED = 20240611


def make(**fields: object) -> Packet:
    """A packet with plain defaults, overridden by ``fields``."""
    values: dict[str, object] = {
        "flags": Flag.ACK,
        "src_cid": 0x1111_1111,
        "dst_cid": 0x2222_2222,
        "seq": 1000,
        "ack": 2000,
        "window": 512,
    }
    values.update(fields)
    return Packet(**values)  # type: ignore[arg-type]


def seal(buf: bytearray) -> bytes:
    """Fill in the CRC-32 the way the codec does: over the datagram minus bytes 20..23."""
    crc = zlib.crc32(bytes(buf[24:]), zlib.crc32(bytes(buf[:20])))
    struct.pack_into("!I", buf, 20, crc)
    return bytes(buf)


def raw(
    *,
    version: int = VERSION,
    hlen_words: int | None = None,
    flags: int = int(Flag.ACK),
    window: int = 100,
    src: int = 7,
    dst: int = 9,
    seq: int = 11,
    ack: int = 13,
    options: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    """A hand-built datagram with a valid CRC, whatever its other fields say."""
    if hlen_words is None:
        hlen_words = (HEADER_SIZE + len(options)) // 4
    head = struct.pack(
        "!BBHIIIII", (version << 4) | hlen_words, flags, window, src, dst, seq, ack, 0
    )
    return seal(bytearray(head + options + payload))


def reference_crc32(data: bytes) -> int:
    """CRC-32 as in IEEE 802.3 (reflected polynomial 0xEDB88320, init and final xor all ones),
    bit by bit, independent of zlib."""
    crc = 0xFFFF_FFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB8_8320 if crc & 1 else 0)
    return crc ^ 0xFFFF_FFFF


def decode_error(data: bytes) -> str:
    with pytest.raises(PacketError) as info:
        decode(data)
    return str(info.value)


# ---------------------------------------------------------------- constants and layout


def test_sizes() -> None:
    assert HEADER_SIZE == 24
    assert MAX_OPTIONS_SIZE == 36
    assert VERSION == 1
    assert issubclass(PacketError, ValueError)


def test_flag_values_match_tcp_positions() -> None:
    assert (Flag.FIN, Flag.SYN, Flag.RST, Flag.ACK) == (0x01, 0x02, 0x04, 0x10)
    kinds = {k.name: int(k) for k in OptionKind}
    assert kinds == {
        "EOL": 0,
        "NOP": 1,
        "MSS": 2,
        "WSCALE": 3,
        "SACK_PERMITTED": 4,
        "SACK": 5,
        "TIMESTAMPS": 8,
        "PROBE_PERMITTED": 9,
        "PROBE": 10,
        "PROBE_ACK": 11,
        "PATH_CHALLENGE": 12,
        "PATH_RESPONSE": 13,
    }


def test_reference_crc32_is_the_standard_one() -> None:
    assert reference_crc32(b"123456789") == 0xCBF4_3926  # the CRC-32 check value
    assert reference_crc32(b"utcp") == zlib.crc32(b"utcp")


def test_fixed_header_byte_layout() -> None:
    p = make(
        flags=Flag.SYN | Flag.ACK,
        src_cid=0x0102_0304,
        dst_cid=0x0506_0708,
        seq=0x090A_0B0C,
        ack=0x0D0E_0F10,
        window=0x1112,
        payload=b"hi",
    )
    b = encode(p)
    assert len(b) == 26
    assert b[0] == 0x16  # version 1 in the high nibble, 6 words of header in the low one
    assert b[1] == 0x12  # SYN | ACK
    assert b[2:4] == bytes.fromhex("1112")
    assert b[4:8] == bytes.fromhex("01020304")
    assert b[8:12] == bytes.fromhex("05060708")
    assert b[12:16] == bytes.fromhex("090a0b0c")
    assert b[16:20] == bytes.fromhex("0d0e0f10")
    assert b[24:] == b"hi"
    assert b[20:24] == bytes.fromhex("61cfa059")  # a test vector for other implementations
    crc = int.from_bytes(b[20:24], "big")
    assert crc == reference_crc32(b[:20] + b[24:])
    # The CRC field is left out, not zeroed: a zeroed field would give another value.
    assert crc != reference_crc32(b[:20] + bytes(4) + b[24:])


def test_header_only_packet_is_24_bytes() -> None:
    b = encode(make(flags=Flag.NONE, src_cid=0, dst_cid=0, seq=0, ack=0, window=0))
    assert len(b) == HEADER_SIZE
    assert b[:20] == bytes([0x16]) + bytes(19)
    assert int.from_bytes(b[20:24], "big") == reference_crc32(bytes([0x16]) + bytes(19))


def test_syn_option_bytes() -> None:
    """MSS, WSCALE and SACK_PERMITTED in that order, padded with NOPs at the end."""
    b = encode(make(flags=Flag.SYN, mss=1428, wscale=5, sack_permitted=True))
    assert b[0] == (1 << 4) | 9  # 24 + 12 bytes = 9 words
    # MSS 1428 | WSCALE 5 | SACK_PERMITTED | three NOPs
    assert b[24:36] == bytes.fromhex("02 04 05 94  03 03 05  04 02  01 01 01")
    assert len(b) == 36


def test_syn_test_vector() -> None:
    """The client SYN of docs/PROTOCOL.md, byte for byte."""
    p = make(
        flags=Flag.SYN,
        src_cid=0x0A,
        dst_cid=0,
        seq=1000,
        ack=0,
        window=0xFFFF,
        mss=1428,
        wscale=5,
        sack_permitted=True,
    )
    expected = bytes.fromhex(
        "19 02 ff ff  00 00 00 0a  00 00 00 00  00 00 03 e8  00 00 00 00  22 ec 2b 29"
        "02 04 05 94  03 03 05 04  02 01 01 01"
    )
    assert encode(p) == expected
    assert decode(expected) == p


def test_timestamps_and_sack_option_bytes() -> None:
    b = encode(make(timestamps=(0x01020304, 0x0A0B0C0D), sack_blocks=((5, 9), (20, 30))))
    assert b[24:] == bytes.fromhex(
        "08 0a 01020304 0a0b0c0d"  # timestamps come before SACK
        "05 12 00000005 00000009 00000014 0000001e"  # 2 + 2 * 8 = 18 = 0x12
    )  # 10 + 18 = 28 is a multiple of four: no padding
    assert b[0] & 0x0F == (24 + 28) // 4


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "fields",
    [
        {"flags": Flag.NONE},
        {"flags": Flag.SYN},
        {"flags": Flag.SYN | Flag.ACK},
        {"flags": Flag.FIN | Flag.ACK},
        {"flags": Flag.RST},
        {"flags": Flag.RST | Flag.ACK},
        {"flags": Flag(0xFF)},  # reserved bits survive the trip
        {"flags": Flag(0x08 | 0x20 | 0x40 | 0x80)},
        {"src_cid": 0, "dst_cid": 0},
        {"src_cid": U32, "dst_cid": U32},
        {"seq": 0, "ack": 0},
        {"seq": U32, "ack": U32},
        {"seq": 0x8000_0000, "ack": 0x7FFF_FFFF},
        {"window": 0},
        {"window": 0xFFFF},
        {"payload": b"x"},
        {"payload": bytes(range(256)) * 6},
    ],
)
def test_round_trip_fields(fields: dict[str, object]) -> None:
    p = make(**fields)
    q = decode(encode(p))
    assert q == p
    for name in ("flags", "src_cid", "dst_cid", "seq", "ack", "window"):
        assert getattr(q, name) == getattr(p, name), name
    assert bytes(q.payload) == bytes(p.payload)


@pytest.mark.parametrize(
    "options",
    [
        {"mss": 0},
        {"mss": 536},
        {"mss": 1428},
        {"mss": 0xFFFF},
        *({"wscale": w} for w in range(15)),
        {"sack_permitted": True},
        *({"sack_blocks": tuple((10 * i, 10 * i + 5) for i in range(n))} for n in (1, 2, 3, 4)),
        {"sack_blocks": ((U32 - 10, 5),)},  # a block across the wrap
        {"sack_blocks": ((U32, U32), (0, 0))},
        {"timestamps": (0, 0)},
        {"timestamps": (U32, 1)},
        {"mss": 1428, "wscale": 7, "sack_permitted": True},
        {"mss": 1428, "wscale": 7, "sack_permitted": True, "timestamps": (1, 2)},
        {"timestamps": (3, 4), "sack_blocks": ((1, 2), (3, 4), (5, 6))},  # exactly 36 bytes
        {"mss": 100, "sack_blocks": ((1, 2), (3, 4), (5, 6))},
        {"wscale": 14, "sack_permitted": True, "sack_blocks": ((1, 2), (3, 4), (5, 6))},
        {"probe_permitted": True},
        {"mss": 65483, "wscale": 5, "sack_permitted": True, "probe_permitted": True},
        {"probe_ack": 0},
        {"probe_ack": U32},
        {"probe_ack": 7, "timestamps": (1, 2), "sack_blocks": ((1, 2), (3, 4))},  # 36 bytes
        {"probe_ack": 7, "sack_blocks": ((1, 2), (3, 4), (5, 6))},
    ],
)
def test_round_trip_options(options: dict[str, object]) -> None:
    p = make(payload=b"data", **options)
    b = encode(p)
    expected_opts = options_size(
        mss="mss" in options,
        wscale="wscale" in options,
        sack_permitted=bool(options.get("sack_permitted")),
        sack_blocks=len(options.get("sack_blocks", ())),  # type: ignore[arg-type]
        timestamps="timestamps" in options,
        probe_permitted=bool(options.get("probe_permitted")),
        probe_ack="probe_ack" in options,
    )
    assert len(b) == HEADER_SIZE + expected_opts + 4
    assert (b[0] & 0x0F) * 4 == HEADER_SIZE + expected_opts
    q = decode(b)
    assert q == p
    assert bytes(q.payload) == b"data"
    assert encode(q) == b


def test_options_size() -> None:
    assert options_size() == 0
    assert options_size(mss=True) == 4
    assert options_size(wscale=True) == 4
    assert options_size(sack_permitted=True) == 4
    assert options_size(mss=True, wscale=True, sack_permitted=True) == 12
    assert options_size(timestamps=True) == 12
    assert options_size(sack_blocks=1) == 12
    assert options_size(sack_blocks=4) == 36
    assert options_size(timestamps=True, sack_blocks=3) == 36
    assert options_size(probe_permitted=True) == 4
    assert options_size(mss=True, wscale=True, sack_permitted=True, probe_permitted=True) == 12
    assert options_size(probe=True) == 8
    assert options_size(probe=True, timestamps=True) == 16
    assert options_size(probe_ack=True, timestamps=True, sack_blocks=2) == 36


def test_seg_len_counts_syn_and_fin() -> None:
    assert make(payload=b"abc").seg_len == 3
    assert make(flags=Flag.SYN).seg_len == 1
    assert make(flags=Flag.FIN | Flag.ACK, payload=b"abc").seg_len == 4
    assert make(flags=Flag.SYN | Flag.FIN, payload=b"ab").seg_len == 4
    assert make(flags=Flag.RST).seg_len == 0


# ---------------------------------------------------------------- payload


def test_payload_is_zero_copy_view() -> None:
    buf = bytearray(encode(make(payload=b"hello")))
    p = decode(buf)
    assert isinstance(p.payload, memoryview)
    assert p.payload.obj is buf
    assert p.payload.tobytes() == b"hello"
    buf[-1] = ord("!")  # the view sees writes to the buffer: nothing was copied
    assert p.payload.tobytes() == b"hell!"


def test_payload_view_of_bytes_input() -> None:
    data = encode(make(payload=b"abc", mss=99))
    p = decode(data)
    assert isinstance(p.payload, memoryview)
    assert p.payload.obj is data
    assert p.payload.tobytes() == b"abc"


def test_decode_accepts_memoryview_and_wider_items() -> None:
    data = encode(make(payload=b"abcd"))  # 28 bytes: a whole number of 16-bit items
    assert decode(memoryview(data)) == decode(data)
    assert decode(memoryview(data)[0:]) == decode(data)
    words = array.array("H")
    words.frombytes(data)
    q = decode(memoryview(words))
    assert q == decode(data)
    assert bytes(q.payload) == b"abcd"


def test_decode_non_contiguous_view_raises_only_packet_error() -> None:
    """The codec promises PacketError and nothing else for any byte buffer it is given."""
    data = encode(make(payload=b"abcd"))
    doubled = bytes(b for b in data for _ in (0, 1))
    view = memoryview(doubled)[::2]  # the same bytes, as a strided view
    assert view.tobytes() == data
    try:
        p = decode(view)
    except PacketError:
        return
    assert p == decode(data)


def test_empty_payload_is_empty_view() -> None:
    p = decode(encode(make()))
    assert len(p.payload) == 0 and p.seg_len == 0


# ---------------------------------------------------------------- malformed datagrams


def test_crc_detects_every_single_bit_flip() -> None:
    data = encode(make(flags=Flag.SYN | Flag.ACK, mss=1400, wscale=3, payload=b"pay"))
    assert len(data) == HEADER_SIZE + 8 + 3
    for bit in range(len(data) * 8):
        buf = bytearray(data)
        buf[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(PacketError) as info:
            decode(bytes(buf))
        if bit >= 8:  # outside the version/length byte the checksum is what catches it
            assert "checksum" in str(info.value), bit


def test_wrong_crc_is_rejected() -> None:
    buf = bytearray(encode(make(payload=b"x")))
    buf[20:24] = bytes(4)
    assert "checksum" in decode_error(bytes(buf))


@pytest.mark.parametrize("version", [v for v in range(16) if v != VERSION])
def test_wrong_version(version: int) -> None:
    assert "version" in decode_error(raw(version=version))


def test_right_version_decodes() -> None:
    p = decode(raw(payload=b"ok"))
    assert (p.src_cid, p.dst_cid, p.seq, p.ack, p.window) == (7, 9, 11, 13, 100)
    assert p.flags == Flag.ACK and p.payload == b"ok"


@pytest.mark.parametrize("words", range(6))
def test_header_length_too_small(words: int) -> None:
    assert "header length" in decode_error(raw(hlen_words=words, payload=bytes(40)))


@pytest.mark.parametrize("words", range(7, 16))
def test_header_length_past_the_datagram(words: int) -> None:
    # 24 + 4 bytes: anything above 7 words claims more header than there is.
    data = raw(hlen_words=words, options=bytes([OptionKind.NOP]) * 4)
    if words == 7:
        assert decode(data).payload == b""
    else:
        assert "header length" in decode_error(data)


def test_header_length_covers_payload_as_options() -> None:
    """The header length decides where options end: NOP bytes inside it are not payload."""
    data = raw(hlen_words=7, payload=bytes([OptionKind.NOP]) * 4 + b"rest")
    assert decode(data).payload == b"rest"


def test_every_truncation_is_rejected() -> None:
    data = encode(make(mss=1000, sack_permitted=True, timestamps=(5, 6), payload=b"0123456789"))
    for n in range(len(data)):
        with pytest.raises(PacketError):
            decode(data[:n])
    assert decode(data).payload == b"0123456789"


@pytest.mark.parametrize("n", range(HEADER_SIZE))
def test_shorter_than_header(n: int) -> None:
    assert "shorter" in decode_error(bytes(n))


@pytest.mark.parametrize(
    "options",
    [
        bytes([OptionKind.MSS, 3, 1, 1]),
        bytes([OptionKind.MSS, 5, 1, 1, 1, 1, 1, 1]),
        bytes([OptionKind.WSCALE, 2, 1, 1]),
        bytes([OptionKind.WSCALE, 4, 1, 1]),
        bytes([OptionKind.SACK_PERMITTED, 3, 1, 1]),
        bytes([OptionKind.SACK_PERMITTED, 4, 1, 1]),
        bytes([OptionKind.SACK, 2, 1, 1]),  # no block at all
        bytes([OptionKind.SACK, 9]) + bytes(10),
        bytes([OptionKind.SACK, 11]) + bytes(10),
        bytes([OptionKind.TIMESTAMPS, 9]) + bytes(10),
        bytes([OptionKind.TIMESTAMPS, 11]) + bytes(14),
        bytes([99, 0, 1, 1]),  # length below 2 would never advance
        bytes([99, 1, 1, 1]),
        bytes([99, 5, 1, 1]),  # runs past the options area
        bytes([OptionKind.SACK, 10]) + bytes(6),  # block cut short by the header length
        bytes([OptionKind.NOP, OptionKind.NOP, OptionKind.NOP, OptionKind.MSS]),  # no length
        bytes([OptionKind.NOP, OptionKind.NOP, OptionKind.NOP, 77]),
    ],
)
def test_option_with_bad_length(options: bytes) -> None:
    assert len(options) % 4 == 0
    msg = decode_error(raw(options=options, payload=bytes(16)))
    assert "option" in msg.lower()


def test_unknown_options_are_skipped() -> None:
    opts = (
        bytes([99, 4, 0xAA, 0xBB])
        + bytes([200, 2])
        + bytes([OptionKind.MSS, 4, 0x05, 0xB4])
        + bytes([6, 6, 1, 2, 3, 4])  # kinds 6 and 7 were TCP's echo options: unknown here
    )
    p = decode(raw(options=opts, payload=b"z"))
    assert p.mss == 1460
    assert p.payload == b"z"
    assert p.wscale is None and p.timestamps is None and not p.sack_permitted


def test_eol_ends_option_parsing() -> None:
    opts = bytes([OptionKind.WSCALE, 3, 2, OptionKind.EOL, OptionKind.MSS, 4, 0, 100])
    p = decode(raw(options=opts))
    assert p.wscale == 2
    assert p.mss is None  # after EOL: ignored, not an error


def test_nop_padding_anywhere() -> None:
    opts = bytes([1, 1, 1, OptionKind.WSCALE, 3, 4, 1, 1])
    assert decode(raw(options=opts)).wscale == 4


@pytest.mark.parametrize(("shift", "expected"), [(13, 13), (14, 14), (15, 14), (255, 14)])
def test_window_scale_clamped_to_14_on_decode(shift: int, expected: int) -> None:
    opts = bytes([OptionKind.WSCALE, 3, shift, OptionKind.NOP])
    assert decode(raw(options=opts)).wscale == expected


def test_repeated_option_last_one_wins() -> None:
    opts = bytes([OptionKind.MSS, 4, 0, 1, OptionKind.MSS, 4, 0, 2])
    assert decode(raw(options=opts)).mss == 2


# ---------------------------------------------------------------- PMTU probes


def test_probe_bytes_and_padding() -> None:
    """PROBE (kind 10, u32 id), NOP padding to a word, then zero bytes up to the probe size."""
    b = encode(make(probe=0x0102_0304, padding=20))
    assert len(b) == HEADER_SIZE + 8 + 20
    assert b[0] & 0x0F == (HEADER_SIZE + 8) // 4
    assert b[24:32] == bytes.fromhex("0a 06 01020304 01 01")
    assert b[32:] == bytes(20)
    p = decode(b)
    assert p.probe == 0x0102_0304 and p.padding == 20
    assert bytes(p.payload) == b"" and p.seg_len == 0  # padding is no data
    assert encode(p) == b


def test_probe_with_timestamps_and_fin_counts_only_the_fin() -> None:
    p = make(flags=Flag.FIN | Flag.ACK, timestamps=(1, 2), probe=9, padding=1000)
    b = encode(p)
    assert b[24:40] == bytes.fromhex("08 0a 00000001 00000002 0a 06 00000009")
    assert len(b) == HEADER_SIZE + 16 + 1000
    q = decode(b)
    assert q == p and q.seg_len == 1


def test_largest_probe_round_trips() -> None:
    p = make(probe=U32, padding=65507 - HEADER_SIZE - 8)
    b = encode(p)
    assert len(b) == 65507
    assert decode(b) == p


def test_probe_ack_and_probe_permitted_bytes() -> None:
    b = encode(make(probe_ack=0x0A0B_0C0D))
    assert b[24:] == bytes.fromhex("0b 06 0a0b0c0d 01 01")
    assert decode(b).probe_ack == 0x0A0B_0C0D
    syn = encode(
        make(flags=Flag.SYN, mss=65483, wscale=5, sack_permitted=True, probe_permitted=True)
    )
    assert syn[24:36] == bytes.fromhex("02 04 ffcb  03 03 05  04 02  09 02  01")
    assert decode(syn).probe_permitted


# docs/PROTOCOL.md section 17: a path challenge and its echo (section 4.2).
PATH_CHALLENGE_VECTOR = bytes.fromhex(
    "19 10 80 00  00 00 00 0b  00 00 00 0a  00 00 13 89"
    "00 00 03 e9  b1 78 6d 5b  0c 0a 01 23  45 67 89 ab  cd ef 01 01"
)
PATH_RESPONSE_VECTOR = bytes.fromhex(
    "19 10 80 00  00 00 00 0a  00 00 00 0b  00 00 03 e9"
    "00 00 13 89  25 8b df 80  0d 0a 01 23  45 67 89 ab  cd ef 01 01"
)


def test_path_challenge_and_response_vectors() -> None:
    token = 0x0123_4567_89AB_CDEF
    challenge = make(src_cid=0x0B, dst_cid=0x0A, seq=5001, ack=1001, window=0x8000)
    challenge.path_challenge = token
    assert encode(challenge) == PATH_CHALLENGE_VECTOR
    assert decode(PATH_CHALLENGE_VECTOR).path_challenge == token
    response = make(src_cid=0x0A, dst_cid=0x0B, seq=1001, ack=5001, window=0x8000)
    response.path_response = token
    assert encode(response) == PATH_RESPONSE_VECTOR
    got = decode(PATH_RESPONSE_VECTOR)
    assert (got.path_response, got.path_challenge, got.payload) == (token, None, b"")


def test_a_path_option_leaves_room_for_timestamps_and_a_sack_block() -> None:
    p = make(timestamps=(1, 2), sack_blocks=((5, 9),), path_response=2**64 - 1)
    assert decode(encode(p)).path_response == 2**64 - 1
    assert options_size(timestamps=True, sack_blocks=1, path_response=True) == 32


@pytest.mark.parametrize(
    "options",
    [
        bytes([OptionKind.PATH_CHALLENGE, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
        bytes([OptionKind.PATH_RESPONSE, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        bytes([OptionKind.NOP, OptionKind.NOP, OptionKind.PATH_CHALLENGE, 10]),  # runs past
    ],
)
def test_path_options_with_bad_length(options: bytes) -> None:
    assert "option" in decode_error(raw(options=options)).lower()


PMTUD_SYN_VECTOR = bytes.fromhex(
    "19 02 ff ff  00 00 00 0a  00 00 00 00  00 00 03 e8"
    "00 00 00 00  ad 57 bb a5  02 04 ff cb  03 03 05 04"
    "02 09 02 01"
)
PROBE_VECTOR = bytes.fromhex(
    "18 10 80 00  00 00 00 0a  00 00 00 0b  00 00 03 e9"
    "00 00 13 89  25 67 36 32  0a 06 00 00  00 01 01 01"
) + bytes(16)
PROBE_ACK_VECTOR = bytes.fromhex(
    "18 10 80 00  00 00 00 0b  00 00 00 0a  00 00 13 89"
    "00 00 03 e9  e7 1b 81 38  0b 06 00 00  00 01 01 01"
)


def test_pmtud_test_vectors() -> None:
    """The SYN, probe and answer of docs/PROTOCOL.md section 17, byte for byte."""
    syn = make(
        flags=Flag.SYN,
        src_cid=0x0A,
        dst_cid=0,
        seq=1000,
        ack=0,
        window=0xFFFF,
        mss=65483,
        wscale=5,
        sack_permitted=True,
        probe_permitted=True,
    )
    assert encode(syn) == PMTUD_SYN_VECTOR and decode(PMTUD_SYN_VECTOR) == syn
    probe = make(src_cid=0x0A, dst_cid=0x0B, seq=1001, ack=5001, window=0x8000, probe=1)
    probe.padding = 16
    assert encode(probe) == PROBE_VECTOR and decode(PROBE_VECTOR) == probe
    answer = make(src_cid=0x0B, dst_cid=0x0A, seq=5001, ack=1001, window=0x8000, probe_ack=1)
    assert encode(answer) == PROBE_ACK_VECTOR and decode(PROBE_ACK_VECTOR) == answer
    for vector in (PMTUD_SYN_VECTOR, PROBE_VECTOR, PROBE_ACK_VECTOR):
        assert int.from_bytes(vector[20:24], "big") == reference_crc32(vector[:20] + vector[24:])


def test_empty_probe_round_trips() -> None:
    p = make(probe=5)
    q = decode(encode(p))
    assert q == p and q.padding == 0 and len(q.payload) == 0


@pytest.mark.parametrize("where", [0, 1, 499, 999])
def test_probe_padding_must_be_zero(where: int) -> None:
    head = encode(make(probe=3))
    buf = bytearray(head[:20]) + bytes(4) + head[24:] + bytes(1000)
    buf[len(head) + where] = 0x80
    assert "padding" in decode_error(seal(buf))


def test_probe_option_turns_payload_into_padding_only_when_zero() -> None:
    """A datagram that says PROBE but carries data is malformed, not data in disguise."""
    data = raw(options=bytes([OptionKind.PROBE, 6, 0, 0, 0, 1, 1, 1]), payload=b"hello")
    assert "padding" in decode_error(data)
    zeros = raw(options=bytes([OptionKind.PROBE, 6, 0, 0, 0, 1, 1, 1]), payload=bytes(5))
    p = decode(zeros)
    assert (p.probe, p.padding, len(p.payload)) == (1, 5, 0)


@pytest.mark.parametrize(
    "options",
    [
        bytes([OptionKind.PROBE_PERMITTED, 3, 0, 1]),
        bytes([OptionKind.PROBE_PERMITTED, 4, 0, 0]),
        bytes([OptionKind.PROBE, 5, 0, 0, 0, 1, 1, 1]),
        bytes([OptionKind.PROBE, 7, 0, 0, 0, 0, 0, 1]),
        bytes([OptionKind.PROBE, 2, 1, 1]),
        bytes([OptionKind.PROBE_ACK, 5, 0, 0, 0, 1, 1, 1]),
        bytes([OptionKind.PROBE_ACK, 8, 0, 0, 0, 0, 0, 0]),
        bytes([OptionKind.PROBE_ACK, 6, 0, 0]),  # runs past the options area
        bytes([OptionKind.NOP, OptionKind.NOP, OptionKind.NOP, OptionKind.PROBE]),  # no length
    ],
)
def test_probe_options_with_bad_length(options: bytes) -> None:
    assert len(options) % 4 == 0
    msg = decode_error(raw(options=options, payload=bytes(16)))
    assert "option" in msg.lower()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"padding": 10}, "padding needs a probe"),
        ({"probe": 1, "payload": b"x"}, "padding, not payload"),
        ({"probe": 1, "padding": -1}, "negative padding"),
        ({"probe": 1 << 32}, "out of range"),
        ({"probe_ack": -1}, "out of range"),
    ],
)
def test_encode_rejects_bad_probes(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(make(**fields))


# ---------------------------------------------------------------- encode rejects


@pytest.mark.parametrize(
    "options",
    [
        {"timestamps": (1, 2), "sack_blocks": ((1, 2),) * 4},  # 10 + 34 -> 44
        {"mss": 1, "sack_blocks": ((1, 2),) * 4},  # 4 + 34 -> 40
        {"sack_blocks": ((1, 2),) * 5},  # 42 -> 44
        {"wscale": 1, "sack_permitted": True, "sack_blocks": ((1, 2),) * 4},  # 39 -> 40
        {
            "mss": 1,
            "wscale": 1,
            "sack_permitted": True,
            "timestamps": (1, 2),
            "sack_blocks": ((1, 2),) * 2,
        },  # 4 + 3 + 2 + 10 + 18 = 37 -> 40
    ],
)
def test_encode_rejects_options_over_36_bytes(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="options"):
        encode(make(**options))


@pytest.mark.parametrize(
    "options",
    [
        {"sack_permitted": True, "sack_blocks": ((1, 2),) * 4},  # 2 + 34 = 36
        {"timestamps": (1, 2), "sack_blocks": ((1, 2),) * 3},  # 10 + 26 = 36
        {
            "mss": 1,
            "wscale": 1,
            "sack_permitted": True,
            "timestamps": (1, 2),
            "sack_blocks": ((1, 2),),
        },  # 4 + 3 + 2 + 10 + 10 = 29 -> 32
    ],
)
def test_encode_accepts_options_of_exactly_36_bytes_or_less(options: dict[str, object]) -> None:
    b = encode(make(**options))
    assert HEADER_SIZE < (b[0] & 0x0F) * 4 <= HEADER_SIZE + MAX_OPTIONS_SIZE
    assert decode(b) == make(**options)


@pytest.mark.parametrize("shift", [15, 16, 255])
def test_encode_rejects_window_scale_over_14(shift: int) -> None:
    with pytest.raises(ValueError, match="window scale"):
        encode(make(wscale=shift))


OUT_OF_RANGE: list[dict[str, object]] = [
    {"window": 0x1_0000},
    {"window": -1},
    {"seq": 1 << 32},
    {"ack": -1},
    {"src_cid": 1 << 32},
    {"dst_cid": -1},
    {"mss": 0x1_0000},
    {"timestamps": (1 << 32, 0)},
    {"sack_blocks": ((0, 1 << 32),)},
]


def test_encode_rejects_values_that_do_not_fit_with_value_error() -> None:
    """``encode`` documents ValueError for values that do not fit the wire format, so a caller
    catching ValueError (as for over-long options) must also catch every out-of-range field."""
    wrong: list[str] = []
    for fields in OUT_OF_RANGE:
        try:
            encode(make(**fields))
        except ValueError:
            continue
        except Exception as exc:  # report exactly what escaped
            wrong.append(f"{fields}: {type(exc).__module__}.{type(exc).__name__}")
        else:
            wrong.append(f"{fields}: accepted")
    assert not wrong, "encode raised something other than ValueError:\n" + "\n".join(wrong)


# ---------------------------------------------------------------- fuzzing

u32 = st.integers(min_value=0, max_value=U32)
blocks = st.tuples(u32, u32)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    """Any packet ``encode`` accepts: every field in range, options within 36 bytes."""
    timestamps = draw(st.none() | st.tuples(u32, u32))
    max_blocks = 3 if timestamps is not None else 4
    p = Packet(
        flags=Flag(draw(st.integers(0, 255))),
        src_cid=draw(u32),
        dst_cid=draw(u32),
        seq=draw(u32),
        ack=draw(u32),
        window=draw(st.integers(0, 0xFFFF)),
        payload=draw(st.binary(max_size=64)),
        mss=draw(st.none() | st.integers(0, 0xFFFF)),
        wscale=draw(st.none() | st.integers(0, 14)),
        sack_permitted=draw(st.booleans()),
        sack_blocks=tuple(draw(st.lists(blocks, max_size=max_blocks))),
        timestamps=timestamps,
        probe_permitted=draw(st.booleans()),
        probe_ack=draw(st.none() | u32),
    )
    if draw(st.booleans()):  # a probe: padding instead of payload
        p.probe = draw(u32)
        p.payload = b""
        p.padding = draw(st.integers(0, 2000))
    if packet_options_size(p) > MAX_OPTIONS_SIZE:  # drop options until it fits
        p.mss = p.wscale = None
        p.sack_permitted = p.probe_permitted = False
    if packet_options_size(p) > MAX_OPTIONS_SIZE:
        p.sack_blocks = p.sack_blocks[:1]
    return p


def packet_options_size(p: Packet) -> int:
    """What ``p``'s options take on the wire."""
    return options_size(
        mss=p.mss is not None,
        wscale=p.wscale is not None,
        sack_permitted=p.sack_permitted,
        sack_blocks=len(p.sack_blocks),
        timestamps=p.timestamps is not None,
        probe_permitted=p.probe_permitted,
        probe=p.probe is not None,
        probe_ack=p.probe_ack is not None,
    )


@settings(max_examples=300, derandomize=True)
@given(p=packets())
def test_prop_encode_decode_round_trip(p: Packet) -> None:
    b = encode(p)
    q = decode(b)
    assert q == p
    assert bytes(q.payload) == bytes(p.payload)
    assert encode(q) == b
    assert len(b) == (b[0] & 0x0F) * 4 + len(p.payload) + p.padding
    assert q.seg_len == p.seg_len


@settings(max_examples=400, derandomize=True)
@given(data=st.binary(max_size=120))
def test_prop_decode_arbitrary_bytes(data: bytes) -> None:
    # Random bytes almost never pass the checksum; the valid-CRC fuzzing below goes deeper.
    _check_decode(data)


def _option_item(rng: random.Random) -> bytes:
    """One option, valid or not, as a fuzzer would try it."""
    kind = rng.choice([0, 1, 1, 2, 3, 4, 5, 8, 9, 10, 11, rng.randrange(256)])
    good = {
        0: bytes([0]),
        1: bytes([1]),
        2: bytes([2, 4]) + rng.randbytes(2),
        3: bytes([3, 3, rng.randrange(256)]),
        4: bytes([4, 2]),
        5: bytes([5, 2 + 8 * rng.randint(1, 4)]),  # the blocks follow as raw bytes
        8: bytes([8, 10]) + rng.randbytes(8),
        9: bytes([9, 2]),
        10: bytes([10, 6]) + rng.randbytes(4),
        11: bytes([11, 6]) + rng.randbytes(4),
    }
    if kind in good and rng.random() < 0.8:
        item = good[kind]
        if kind == 5:
            item += rng.randbytes(item[1] - 2)
        return item
    length = rng.randrange(12)
    return bytes([kind, length]) + rng.randbytes(max(0, length - 2))


def _fuzz_datagram(rng: random.Random) -> bytes:
    """A datagram with a correct CRC and a mostly sane header, but random options."""
    opts = b"".join(_option_item(rng) for _ in range(rng.randrange(6)))
    if rng.random() < 0.7:
        opts = opts[:MAX_OPTIONS_SIZE]
        opts += bytes([1]) * (-len(opts) % 4)
    payload = rng.randbytes(rng.randrange(20))
    if rng.random() < 0.3:  # zero bytes: what a probe's padding must be
        payload = bytes(len(payload))
    body = opts + payload
    if rng.random() < 0.9:
        hlen_words = min(15, (HEADER_SIZE + len(opts)) // 4 + (len(opts) % 4 > 0))
    else:
        hlen_words = rng.randrange(16)
    version = VERSION if rng.random() < 0.95 else rng.randrange(16)
    head = struct.pack(
        "!BBHIIIII",
        (version << 4) | hlen_words,
        rng.randrange(256),
        rng.randrange(1 << 16),
        rng.randrange(1 << 32),
        rng.randrange(1 << 32),
        rng.randrange(1 << 32),
        rng.randrange(1 << 32),
        0,
    )
    return seal(bytearray(head + body))


def _check_decode(data: bytes) -> str:
    """Decode, allowing only PacketError; on success check the packet against the bytes."""
    try:
        p = decode(data)
    except PacketError as exc:
        return "option error" if "option" in str(exc).lower() else "header error"
    hlen = (data[0] & 0x0F) * 4
    fields = struct.unpack_from("!BBHIIII", data)
    assert (int(p.flags), p.window, p.src_cid, p.dst_cid, p.seq, p.ack) == fields[1:]
    if p.probe is None:
        assert bytes(p.payload) == data[hlen:] and p.padding == 0
    else:  # the body of a probe is zero padding, never payload
        assert len(p.payload) == 0 and p.padding == len(data) - hlen
        assert data[hlen:] == bytes(p.padding)
    assert p.wscale is None or 0 <= p.wscale <= 14
    assert len(p.sack_blocks) <= 4
    # Whatever decoded must encode again (options may be laid out differently).
    if packet_options_size(p) <= MAX_OPTIONS_SIZE:
        assert decode(encode(p)) == p
    if p.probe is not None:
        return "probe"
    return "options" if hlen > HEADER_SIZE else "plain"


@settings(max_examples=400, derandomize=True)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_prop_decode_valid_crc_random_options(seed: int) -> None:
    _check_decode(_fuzz_datagram(random.Random(seed)))


def test_valid_crc_fuzz_reaches_option_parsing() -> None:
    """The generator above really exercises option parsing: both outcomes occur often."""
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    for _ in range(3000):
        kind = _check_decode(_fuzz_datagram(rng))
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert outcomes.get("options", 0) > 300, (SEED, outcomes)
    assert outcomes.get("option error", 0) > 300, (SEED, outcomes)
    assert outcomes.get("header error", 0) > 10, (SEED, outcomes)
    assert outcomes.get("probe", 0) > 30, (SEED, outcomes)


@settings(max_examples=300, derandomize=True)
@given(p=packets(), data=st.data())
def test_prop_any_bit_flip_is_detected(p: Packet, data: st.DataObject) -> None:
    b = bytearray(encode(p))
    bit = data.draw(st.integers(0, len(b) * 8 - 1))
    b[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PacketError):
        decode(bytes(b))


@settings(max_examples=300, derandomize=True)
@given(p=packets(), seq=u32, payload=st.binary(max_size=1500))
def test_prop_stamp_equals_encoding_the_whole_packet(p: Packet, seq: int, payload: bytes) -> None:
    """The send path's shortcut gives exactly the bytes ``encode`` gives (not for probes,
    whose padding is not payload)."""
    assume(p.probe is None)
    p.payload = b""
    template = encode(p)
    p.seq = seq
    p.payload = payload
    assert stamp(template, seq, payload) == encode(p)
    assert stamp(template, seq, memoryview(payload)) == encode(p)


@settings(max_examples=300, derandomize=True)
@given(
    flags=st.integers(0, 255),
    cids=st.tuples(u32, u32),
    seq=u32,
    ack=u32,
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=1500),
)
def test_prop_encode_plain_equals_encode(
    flags: int, cids: tuple[int, int], seq: int, ack: int, window: int, payload: bytes
) -> None:
    """The option-less shortcut gives exactly the bytes ``encode`` gives, and decodes back."""
    p = Packet(flags, cids[0], cids[1], seq, ack, window, payload)
    raw = encode_plain(flags, cids[0], cids[1], seq, ack, window, payload)
    assert raw == encode(p)
    assert encode_plain(flags, cids[0], cids[1], seq, ack, window, memoryview(payload)) == raw
    assert decode(raw) == p
