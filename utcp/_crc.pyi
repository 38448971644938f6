"""The datagram checksum and plain header in C (utcp/_crc.c); utcp/packet.py has the same in
Python."""

def datagram_crc(data: bytes | bytearray | memoryview, /) -> int:
    """CRC-32 of a datagram with its own CRC field (bytes 20 to 24) left out."""

def encode_plain(
    flags: int,
    src_cid: int,
    dst_cid: int,
    seq: int,
    ack: int,
    window: int,
    payload: bytes | bytearray | memoryview,
    /,
) -> bytes:
    """The datagram of a packet without options; ``ValueError`` for a field out of range."""

def fixed_header(
    data: bytes | bytearray | memoryview, /
) -> tuple[int, int, int, int, int, int, int, bool]:
    """The fixed header's fields up to its CRC field, and whether that field holds the
    datagram's CRC-32."""
