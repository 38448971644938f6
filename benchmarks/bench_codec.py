"""Codec hot-path benchmark: encode and decode of full-sized data segments.

Reports datagrams per second and the ratio to a baseline measured in the same run (one CRC-32
over the same bytes, the floor any checksummed codec pays), so numbers compare across machines.
Run: .venv/bin/python benchmarks/bench_codec.py
"""

from __future__ import annotations

import time
import zlib

from utcp.packet import Flag, Packet, decode, encode

N = 200_000


def _rate(fn: object, n: int = N) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    payload = bytes(range(256)) * 5 + bytes(148)  # 1428 bytes, the default MSS
    packet = Packet(Flag.ACK, 0xA, 0xB, 123456, 654321, 4096, payload)
    wire = encode(packet)
    baseline = _rate(lambda: zlib.crc32(wire))
    enc = _rate(lambda: encode(packet))
    dec = _rate(lambda: decode(wire))
    print(f"crc32 baseline : {baseline:12,.0f} /s")
    print(f"encode         : {enc:12,.0f} /s  ({enc / baseline:.2f} x baseline)")
    print(f"decode         : {dec:12,.0f} /s  ({dec / baseline:.2f} x baseline)")


if __name__ == "__main__":
    main()
