"""Print the packet ladder of a whole utcp connection between two in-memory endpoints.

Handshake, one request and reply, and the four-way close, each datagram with its flags, seq
and ack, and each side's state after it; no sockets are involved yet.
"""

from __future__ import annotations

from utcp import Config, Connection, decode


def main() -> None:
    client = Connection(Config(), local_cid=0xC1)
    server = Connection(Config(), local_cid=0x5E)
    server.listen()
    now = 0.0
    client.connect(now=now)
    peers = {"client": (client, server), "server": (server, client)}

    def pump() -> None:
        nonlocal now
        moved = True
        while moved:
            moved = False
            for name, (src, dst) in peers.items():
                for data in src.datagrams_to_send(now=now):
                    moved = True
                    p = decode(data)
                    arrow = "-->" if name == "client" else "<--"
                    flags = str(p.flags.name).replace("|", "+")
                    detail = f"{flags:<8} seq={p.seq:<10} ack={p.ack:<10} len={len(p.payload)}"
                    now += 0.005
                    dst.receive_datagram(data, now=now)
                    print(
                        f"{client.state.value:>12}  {arrow} {detail:<48} {server.state.value:<12}"
                    )
                while src.next_event() is not None:
                    pass

    print(f"{'client':>12}      {'datagram':<48} server")
    pump()
    client.send(b"hello, utcp")
    pump()
    server.send(b"hello back")
    pump()
    client.close()
    pump()
    server.close()
    pump()
    print(f"\nclient stats: {client.stats}")


if __name__ == "__main__":
    main()
