"""The datagram checksum in C (utcp/_crc.c); utcp/packet.py has the same in Python."""

def datagram_crc(data: bytes | bytearray | memoryview, /) -> int:
    """CRC-32 of a datagram with its own CRC field (bytes 20 to 24) left out."""

def seal_plain(head: bytes, payload: bytes | bytearray | memoryview, /) -> bytes:
    """``head`` (the 20 bytes before the CRC field), its CRC-32 with ``payload``, ``payload``."""

def fixed_header(
    data: bytes | bytearray | memoryview, /
) -> tuple[int, int, int, int, int, int, int, bool]:
    """The fixed header's fields up to its CRC field, and whether that field holds the
    datagram's CRC-32."""
