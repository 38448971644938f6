"""Write the seed corpus of the fuzz targets: real datagrams for the codec, and for the
connection one short script per starting state (see ``tests/fuzz/_harness.py``).

    python tests/fuzz/make_corpus.py

The output is deterministic and replaces everything in tests/fuzz/corpus/decode/ and
tests/fuzz/corpus/connection/; rerun it when the wire format or the scenarios change.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz._harness import (  # noqa: E402
    OP_CALL,
    OP_CLOCK,
    OP_RAW,
    OP_SEALED,
    SEAL_ACK,
    SEAL_DST,
    SEAL_SEQ,
    encode_length,
    first_byte,
    with_crc,
)
from tests.fuzz._states import STATES, VARIANTS, Target, build  # noqa: E402
from utcp.connection import reset_for  # noqa: E402
from utcp.packet import Flag, OptionKind, Packet, decode, encode  # noqa: E402
from utcp.state import ConnectionState  # noqa: E402

S = ConnectionState
CORPUS = Path(__file__).parent / "corpus"
U32 = 0xFFFF_FFFF
SYN, ACK, FIN, RST = int(Flag.SYN), int(Flag.ACK), int(Flag.FIN), int(Flag.RST)
RELATIVE = OP_SEALED | SEAL_DST | SEAL_SEQ | SEAL_ACK  # seq and ack as offsets, to this cid


def _first(target: Target, flags: int) -> bytes:
    """The first datagram with exactly ``flags`` the connection's peer sent it."""
    for data in target.from_peer:
        if decode(data).flags == flags:
            return data
    raise LookupError(flags)


def _answer(target: Target) -> bytes:
    """What the connection sends when its peer's last datagram arrives again: a duplicate
    draws an immediate ACK, with SACK blocks when the connection holds data out of order."""
    conn = target.conn
    conn.receive_datagram(target.from_peer[-1], now=target.now)
    return conn.datagrams_to_send(now=target.now)[-1]


def _raw_header(options: bytes, payload: bytes = b"", version: int = 1) -> bytes:
    """A hand-made datagram with a valid CRC, whatever its version and option bytes say."""
    words = (24 + len(options)) // 4
    head = struct.pack("!BBHIIIII", (version << 4) | words, ACK, 100, 0xA, 0xB, 1, 2, 0)
    return with_crc(head + options + payload)


def _probe(target: Target, field: str) -> bytes:
    """The first PMTU probe (``probe``) or answer to one (``probe_ack``) the peer sent."""
    return next(d for d in target.from_peer if getattr(decode(d), field) is not None)


def decode_seeds() -> dict[str, bytes]:
    """Real datagrams of every kind, and a few hand-made option and header edge cases."""
    established = build(S.ESTABLISHED, 0)
    data = next(d for d in established.from_peer if decode(d).payload)
    syn_ts = build(S.LISTEN, 1).from_peer[0]
    return {
        "syn": build(S.LISTEN, 0).from_peer[0],
        "syn-timestamps": syn_ts,
        "syn-ack": _first(build(S.FIN_WAIT_2, 0), SYN | ACK),
        "syn-ack-timestamps": _first(build(S.FIN_WAIT_2, 1), SYN | ACK),
        "data": data,
        "fin": _first(build(S.CLOSE_WAIT, 0), FIN | ACK),
        "rst": reset_for(decode(data)) or b"",
        "rst-ack": reset_for(decode(syn_ts)) or b"",
        "ack-sack": _answer(established),
        "ack-sack-timestamps": _answer(build(S.ESTABLISHED, 1)),
        "probe": _probe(established, "probe"),
        "probe-ack": _probe(established, "probe_ack"),
        "probe-timestamps": _probe(build(S.ESTABLISHED, 1), "probe"),
        "options-probe-nonzero-padding": _raw_header(
            bytes([OptionKind.PROBE, 6, 0, 0, 0, 1, 1, 1]), b"\x01"
        ),
        "options-eol-unknown": _raw_header(bytes([99, 4, 1, 2, 3, 3, 7, 0]), b"x"),
        "options-nop-wscale15": _raw_header(bytes([1, 1, 3, 3, 15, 1, 1, 1])),
        "options-sack-4-blocks": _raw_header(bytes([1, 1, OptionKind.SACK, 34]) + bytes(range(32))),
        "bad-version": _raw_header(b"", b"payload", version=2),
        "short": bytes(range(23)),
    }


def _forged(target: Target, variant: int, **fields: object) -> bytes:
    """A sealed-op datagram: seq and ack are offsets the harness adds to the target's numbers."""
    values: dict[str, object] = {
        "flags": ACK,
        "src_cid": target.peer_cid,
        "dst_cid": 0,
        "seq": 0,
        "ack": 0,
        "window": 0x8000,
    }
    values.update(fields)
    p = Packet(**values)  # type: ignore[arg-type]
    if variant == 1 and p.timestamps is None:
        p.timestamps = (7, 0)
    data = encode(p)
    return bytes([RELATIVE]) + encode_length(len(data)) + data


def _clock(steps: int = 0) -> bytes:
    return bytes([OP_CLOCK | (steps << 2)])


def connection_seeds() -> dict[str, bytes]:
    """Per state and variant: the peer's datagrams replayed, then an RST; and the segments a
    peer would send next (opening, ACK with SACK, data, FIN); per state also odd inputs."""
    seeds: dict[str, bytes] = {}
    for variant in range(len(VARIANTS)):
        for index, state in enumerate(STATES):
            target = build(state, variant)
            name = f"{state.value.lower().replace('_', '-')}-{variant}"
            head = bytes([first_byte(index, variant)])

            replay = bytearray(head)
            for data in target.from_peer:
                replay += bytes([OP_RAW]) + encode_length(len(data)) + data
            replay += _clock() + _forged(target, variant, flags=RST)
            seeds[f"{name}-replay"] = bytes(replay)

            forged = bytearray(head)
            if state in (S.CLOSED, S.LISTEN):
                forged += _forged(target, variant, flags=SYN, mss=1200, wscale=3, ack=-1 & U32)
            elif state is S.SYN_SENT:
                forged += _forged(target, variant, flags=SYN | ACK, mss=1200, sack_permitted=True)
            sack = ((target.next_ack + 100) & U32, (target.next_ack + 300) & U32)
            forged += _forged(target, variant, sack_blocks=(sack,) if variant == 0 else ())
            forged += _forged(target, variant, payload=bytes(range(100)))
            forged += _forged(target, variant, flags=FIN | ACK, seq=100)
            forged += _clock() + _clock(8)
            seeds[f"{name}-forged"] = bytes(forged)

            if variant == 0:
                odd = bytearray(head)
                odd += bytes([OP_CALL | (2 << 2)])  # pause reading
                odd += _forged(target, variant, payload=b"z" * 200, seq=50)  # out of order
                odd += _forged(target, variant, flags=SYN | ACK)  # a SYN when synchronized
                odd += _forged(target, variant, window=0)  # the window closes
                odd += _forged(target, variant, probe=9, padding=300)  # a PMTU probe
                odd += _forged(target, variant, probe_ack=1)  # an answer to ours
                odd += bytes([OP_CALL | (4 << 2)])  # send
                odd += bytes([OP_CALL | (3 << 2)])  # resume reading
                odd += _clock(40) + _forged(target, variant, window=0xFFFF)
                odd += bytes([OP_CALL | (0 << 2)])  # close
                odd += _clock()
                seeds[f"{name}-odd"] = bytes(odd)
    return seeds


def main() -> None:
    for kind, seeds in (("decode", decode_seeds()), ("connection", connection_seeds())):
        folder = CORPUS / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder.relative_to(ROOT)}: {len(seeds)} files")


if __name__ == "__main__":
    main()
