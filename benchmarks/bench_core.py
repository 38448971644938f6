"""Sans-I/O core benchmark: CPU cost of moving a bulk transfer between two connections with no
sockets, no loop and no delay, so it measures the protocol code alone.

Reports MB/s of payload and µs of core time per data segment, against a baseline measured in the
same run (encoding and decoding the same number of segments), so it compares across machines.
The guarded figure runs with path MTU discovery off, so every segment is the 1428-byte one the
history was measured with; a second line shows the default, whose segments grow to 64 KiB.
Run: .venv/bin/python benchmarks/bench_core.py
"""

from __future__ import annotations

import time

from utcp import Config, Connection
from utcp.packet import Flag, Packet, decode, encode

SIZE = 16 << 20


FIXED = Config(pmtud=False)


def transfer(size: int = SIZE, config: Config = FIXED) -> tuple[float, int]:
    """Seconds and data segments for ``size`` bytes from a to b."""
    a = Connection(config, local_cid=1, isn=0)
    b = Connection(config, local_cid=2, isn=0)
    b.listen()
    now = 0.0
    a.connect(now=now)
    payload = bytes(size)
    received = 0
    segments = 0
    start = time.perf_counter()
    sent = False
    while received < size:
        now += 0.0001
        for data in a.datagrams_to_send(now=now):
            segments += 1
            b.receive_datagram(data, now=now)
        for data in b.datagrams_to_send(now=now):
            a.receive_datagram(data, now=now)
        while (ev := b.next_event()) is not None:
            received += len(getattr(ev, "data", b""))
        while a.next_event() is not None:
            pass
        if not sent and a.state.value == "ESTABLISHED":
            a.send(payload)
            sent = True
    return time.perf_counter() - start, segments


def baseline(segments: int) -> float:
    """Seconds to encode and decode ``segments`` full-sized segments: the codec's floor."""
    p = Packet(int(Flag.ACK), 1, 2, 0, 0, 65535, bytes(1428))
    start = time.perf_counter()
    for _ in range(segments):
        decode(encode(p))
    return time.perf_counter() - start


def main() -> None:
    seconds, segments = min(transfer() for _ in range(3))
    floor = baseline(segments)
    per_segment_us = seconds / segments * 1e6
    print(f"core transfer: {SIZE / seconds / 1e6:8.1f} MB/s, {per_segment_us:6.2f} µs/segment")
    print(f"codec floor  : {floor / segments * 1e6:6.2f} µs/segment (ratio {seconds / floor:.2f}x)")
    seconds, segments = min(transfer(config=Config()) for _ in range(3))
    print(
        f"with PMTUD   : {SIZE / seconds / 1e6:8.1f} MB/s, {segments} segments"
        f" ({SIZE / segments:.0f} bytes each on average)"
    )


if __name__ == "__main__":
    main()
