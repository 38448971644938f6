"""Kernel steering of datagrams to the worker that owns their connection (Linux).

Worker processes serving one port each bind a socket with ``SO_REUSEPORT``; the group's
classic BPF program (``SO_ATTACH_REUSEPORT_CBPF``), run by the kernel on every datagram, reads
the destination connection id at offset 8 of the utcp header and returns the worker bits of
its layout (``utcp.cids``) as the index of the socket in the group, which is the order the
sockets were bound in.  A SYN's destination id is 0: the program returns an index past the
group, and the kernel falls back to its hash of the source address and port, so that a
retransmitted SYN reaches the same worker.  A datagram too short to carry an id fails the load
and goes to socket 0, which drops it as malformed.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Final

__all__ = ["SO_ATTACH_REUSEPORT_CBPF", "attach_steering", "steering_program"]

SO_ATTACH_REUSEPORT_CBPF: Final = 51  # include/uapi/asm-generic/socket.h
DST_CID_OFFSET: Final = 8  # bytes into the utcp header (docs/PROTOCOL.md, section 3)
FALLBACK_INDEX: Final = 0xFFFFFFFF  # past any group: the kernel's own hash decides

# Classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h).
_LD_W_ABS: Final = 0x00 | 0x00 | 0x20
_JEQ_K: Final = 0x05 | 0x10 | 0x00
_RSH_K: Final = 0x04 | 0x70 | 0x00
_AND_K: Final = 0x04 | 0x50 | 0x00
_RET_A: Final = 0x06 | 0x10
_RET_K: Final = 0x06 | 0x00
_INSN: Final = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


def steering_program(*, worker_shift: int, worker_bits: int) -> bytes:
    """The classic BPF instructions (``struct sock_filter`` array) returning the worker index
    that a datagram's destination connection id names."""
    if not 1 <= worker_bits <= 16 or not 0 <= worker_shift <= 32 - worker_bits:
        raise ValueError("worker bits must be 1..16 and fit in the id above worker_shift")
    insns = [
        (_LD_W_ABS, 0, 0, DST_CID_OFFSET),  # A = destination connection id
        (_JEQ_K, 3, 0, 0),  # a SYN (id 0): to the fallback
        (_RSH_K, 0, 0, worker_shift),
        (_AND_K, 0, 0, (1 << worker_bits) - 1),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, FALLBACK_INDEX),
    ]
    return b"".join(_INSN.pack(*insn) for insn in insns)


def attach_steering(sock: socket.socket, *, worker_shift: int, worker_bits: int) -> None:
    """Attach the steering program to ``sock``'s ``SO_REUSEPORT`` group (every socket of the
    group is steered by it).  Linux only: elsewhere ``OSError`` says so."""
    if not sys.platform.startswith("linux"):
        raise OSError("worker steering by connection id needs Linux (SO_ATTACH_REUSEPORT_CBPF)")
    code = steering_program(worker_shift=worker_shift, worker_bits=worker_bits)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(code) // _INSN.size, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
