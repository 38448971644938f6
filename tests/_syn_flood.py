"""Sends spoofed-looking SYNs at a utcp server from many source ports, as fast as it can, and
never answers: ``python tests/_syn_flood.py HOST PORT COUNT SOCKETS``; prints ``sent N``."""

from __future__ import annotations

import random
import socket
import sys

from utcp import Flag, Packet, encode


def main() -> None:
    host, port, count, nsock = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(7)
    socks = []
    for _ in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the SYN-ACKs are not read
        socks.append(s)
    sent = 0
    for i in range(count):
        syn = Packet(int(Flag.SYN), rng.getrandbits(32) or 1, 0, rng.getrandbits(32), 0, 65535)
        syn.mss = 1428
        syn.sack_permitted = True
        try:
            socks[i % nsock].sendto(encode(syn), (host, port))
            sent += 1
        except OSError:
            pass  # a full socket buffer: the kernel drops it, as the wire would
    print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
