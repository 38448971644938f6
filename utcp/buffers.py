"""Send buffer, receive reassembly buffer and a small interval set, all in stream positions.

Positions are unbounded integers (position 0 is the SYN, data byte k is position k + 1); the
connection converts to and from 32-bit wire sequence numbers, so nothing here wraps.
The reassembly buffer never holds the same position twice and never holds data outside the
limits the connection passes in, which is what bounds its memory.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Final


def byte_view(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """``data`` as something whose ``len()`` counts bytes: a memoryview of wider items
    (``array('i')``, doubles) or of several dimensions becomes its bytes; anything else is
    returned as it is.  ``len()`` of such a view counts its items, so writing one took a
    fraction of it into the stream's positions and lost the rest silently."""
    if type(data) is memoryview and (data.itemsize != 1 or data.ndim != 1):
        return data.tobytes()
    return data


class SendBuffer:
    """Bytes written by the application and not yet acknowledged, addressed by position.

    Held as the written chunks themselves (small writes merged), not one bytearray: CPython
    copies a bytearray whole when it grows after its head was consumed or shrinks below half
    its allocation, so a buffer kept full (the transport asks for more at two thirds of its
    high-water mark) paid for copies of megabytes over and over."""

    __slots__ = ("_base", "_chunks", "_first", "_starts", "end")

    def __init__(self, base: int) -> None:
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # position of each chunk's first byte
        self._first = 0  # index of the oldest chunk still held
        self._base = base  # position of the oldest byte still held
        self.end = base  # position just past the newest byte written (read on every send)

    def __len__(self) -> int:
        return self.end - self._base

    @property
    def start(self) -> int:
        """Position of the oldest byte still held."""
        return self._base

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append application bytes (a copy: the caller may change its buffer afterwards)."""
        data = byte_view(data)
        n = len(data)
        if not n:
            return
        chunks = self._chunks
        if n < _MERGE_BYTES and len(chunks) > self._first and len(chunks[-1]) < _MERGE_BYTES:
            chunks[-1] += bytes(data)  # small writes share a chunk: no pile of tiny ones
        else:
            chunks.append(bytes(data))
            self._starts.append(self.end)
        self.end += n

    def get(self, start: int, end: int) -> bytes:
        """Copy of the bytes in [start, end); both must lie within the buffer."""
        if end <= start:
            return b""
        starts = self._starts
        chunks = self._chunks
        i = bisect.bisect_right(starts, start, self._first, len(starts)) - 1
        chunk = chunks[i]
        stop = end - starts[i]  # where the copy ends, in this chunk's offsets
        if stop <= len(chunk):
            return chunk[start - starts[i] : stop]
        parts = [chunk[start - starts[i] :]]
        while True:
            i += 1
            chunk = chunks[i]
            stop = end - starts[i]
            if stop <= len(chunk):
                parts.append(chunk[:stop])
                return b"".join(parts)
            parts.append(chunk)

    def release_to(self, position: int) -> None:
        """Drop bytes before ``position``: they have been acknowledged."""
        if position <= self._base:
            return
        self._base = position
        chunks = self._chunks
        starts = self._starts
        first = self._first
        n = len(chunks)
        while first < n and starts[first] + len(chunks[first]) <= position:
            first += 1
        if first == n:
            chunks.clear()
            starts.clear()
            first = 0
        elif first > _COMPACT_CHUNKS and 2 * first > n:
            del chunks[:first]
            del starts[:first]
            first = 0
        self._first = first


_MERGE_BYTES: Final = 4096  # writes below this join the last chunk while it is this small
_COMPACT_CHUNKS: Final = 64  # released chunks kept listed before the lists are trimmed


class RangeSet:
    """Disjoint, sorted half-open intervals of positions."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        """The intervals in ascending order."""
        return list(zip(self._starts, self._ends))

    def add(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add [start, end); return the parts that were not already covered."""
        if start >= end:
            return []
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start)  # first interval that ends at or after start
        new: list[tuple[int, int]] = []
        cursor = start
        j = i
        lo, hi = start, end
        while j < len(starts) and starts[j] <= end:
            if starts[j] > cursor:
                new.append((cursor, starts[j]))
            cursor = max(cursor, ends[j])
            lo = min(lo, starts[j])
            hi = max(hi, ends[j])
            j += 1
        if cursor < end:
            new.append((cursor, end))
        starts[i:j] = [lo]
        ends[i:j] = [hi]
        return new

    def containing(self, position: int) -> tuple[int, int] | None:
        """The interval holding ``position``, or None."""
        i = bisect.bisect_right(self._starts, position) - 1
        if i >= 0 and position < self._ends[i]:
            return (self._starts[i], self._ends[i])
        return None

    def remove_below(self, position: int) -> None:
        """Forget everything before ``position``."""
        starts, ends = self._starts, self._ends
        i = bisect.bisect_right(ends, position)
        del starts[:i]
        del ends[:i]
        if starts and starts[0] < position:
            starts[0] = position

    @property
    def highest(self) -> int | None:
        """End of the last interval, or None when empty."""
        return self._ends[-1] if self._ends else None


CHUNK_OVERHEAD_BYTES: Final = 128  # what one held chunk costs beyond its payload (objects, lists)


class ReassemblyBuffer:
    """Out-of-order segments held until the gap before them fills; each position stored once.

    Memory is charged as payload plus ``CHUNK_OVERHEAD_BYTES`` per chunk, so a peer sending
    tiny pieces at scattered offsets reaches the limit as fast as one sending the bytes whole.
    """

    __slots__ = ("_chunks", "_held", "_starts", "nbytes")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._chunks: list[bytes] = []
        # The held positions merged into ranges, kept beside the chunks: the SACK blocks of
        # every ACK come from them, and merging a chunk per segment on each ACK cost a third
        # of a transfer's CPU at 1% loss on a 100 Mbit/s, 100 ms path (a flight of a
        # thousand segments held out of order).
        self._held = RangeSet()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def truesize(self) -> int:
        """Payload held plus the per-chunk overhead: the figure the limit applies to."""
        return self.nbytes + CHUNK_OVERHEAD_BYTES * len(self._starts)

    def insert(
        self, start: int, data: bytes | memoryview, *, lo: int, hi: int, limit: int | None = None
    ) -> int:
        """Store the parts of ``data`` (at ``start``) inside [lo, hi) not already held, as long
        as ``truesize`` stays within ``limit``.

        Returns how many bytes were newly stored.
        """
        end = start + len(data)
        if start < lo:
            data = data[lo - start :]
            start = lo
        if end > hi:
            data = data[: max(0, hi - start)]
            end = start + len(data)
        if start >= end:
            return 0
        starts, chunks = self._starts, self._chunks
        i = bisect.bisect_right(starts, start) - 1
        if i < 0:
            i = 0
        pieces: list[tuple[int, int]] = []
        cursor = start
        while cursor < end and i < len(starts):
            s = starts[i]
            e = s + len(chunks[i])
            if e <= cursor:
                i += 1
                continue
            if s >= end:
                break
            if s > cursor:
                pieces.append((cursor, s))
            cursor = e
            i += 1
        if cursor < end:
            pieces.append((cursor, end))
        added = 0
        room = None if limit is None else limit - self.truesize
        for ps, pe in pieces:
            if room is not None:
                room -= pe - ps + CHUNK_OVERHEAD_BYTES
                if room < 0:
                    break
            k = bisect.bisect_left(starts, ps)
            starts.insert(k, ps)
            chunks.insert(k, bytes(data[ps - start : pe - start]))
            self._held.add(ps, pe)
            added += pe - ps
        self.nbytes += added
        return added

    def pop_ready(self, position: int) -> list[bytes]:
        """Remove and return the chunks that continue the stream at ``position``, in order."""
        starts, chunks = self._starts, self._chunks
        out: list[bytes] = []
        n = 0
        while n < len(starts) and starts[n] == position:
            out.append(chunks[n])
            position += len(chunks[n])
            n += 1
        if n:
            del starts[:n]
            del chunks[:n]
            self.nbytes -= sum(map(len, out))
            self._held.remove_below(position)
        return out

    def discard_below(self, position: int) -> None:
        """Forget data before ``position`` (already delivered by another route)."""
        self._held.remove_below(position)
        while self._starts and self._starts[0] < position:
            s = self._starts[0]
            c = self._chunks[0]
            if s + len(c) <= position:
                del self._starts[0]
                del self._chunks[0]
                self.nbytes -= len(c)
            else:
                cut = position - s
                self._starts[0] = position
                self._chunks[0] = c[cut:]
                self.nbytes -= cut
                break

    def ranges(self) -> list[tuple[int, int]]:
        """The held data as merged [start, end) intervals, ascending."""
        return self._held.ranges()

    def range_at(self, position: int) -> tuple[int, int] | None:
        """The merged interval of held data that holds ``position``, or None."""
        return self._held.containing(position)


class HeldBuffer:
    """In-order data held while the application has paused reading: the pieces as they
    arrived (payloads, or views of their datagrams), in order, never joined into one buffer
    of all of it.

    A receive window of megabytes fills it while a slow reader is paused.  Kept as one
    contiguous buffer, every pause and resume allocated that much fresh memory twice (the
    buffer growing, then the copy handed over) and the reader's own buffer grew by all of it
    at once: on loopback the receiver spent most of its time in page faults.  Handed back in
    pieces (``take``), a reader that pauses again after the first few leaves the rest here.
    Pieces under ``_MERGE_BYTES`` are copied together, so a peer sending tiny segments into
    the window costs no more than their bytes (not an object each).  ``len()`` is the number
    of bytes held.
    """

    __slots__ = ("_pieces", "nbytes")

    def __init__(self) -> None:
        self._pieces: deque[bytes | bytearray | memoryview] = deque()
        self.nbytes = 0

    def __len__(self) -> int:
        return self.nbytes

    def __bool__(self) -> bool:
        return self.nbytes > 0

    @property
    def pieces(self) -> int:
        """How many pieces hold the bytes (what the memory beyond them is charged for)."""
        return len(self._pieces)

    def append(self, data: bytes | memoryview) -> None:
        """Hold ``data`` after what is held.  A view that keeps a datagram more than twice
        its size alive (the new part of a segment overlapping data already taken) is copied:
        the window counts what is held, and that is what the memory must be."""
        n = len(data)
        self.nbytes += n
        if type(data) is memoryview and 2 * n < memoryview(data.obj).nbytes:
            data = bytes(data)
        if n < _MERGE_BYTES:
            pieces = self._pieces
            last = pieces[-1] if pieces else None
            if isinstance(last, bytearray) and len(last) < _MERGE_BYTES:
                last.extend(data)
            else:
                pieces.append(bytearray(data))
        else:
            self._pieces.append(data)

    def put_back(self, pieces: list[bytes | memoryview]) -> None:
        """Hold ``pieces`` (in order) before what is held: data handed out but not taken."""
        after = self._pieces
        self._pieces = deque()
        for piece in pieces:
            self.append(piece)
        self._pieces.extend(after)

    def take(self, limit: int) -> list[bytes | memoryview]:
        """Everything held, in order, as pieces of at most ``limit`` bytes where smaller ones
        are joined (one larger than ``limit`` stays whole); nothing is held after."""
        out: list[bytes | memoryview] = []
        run: list[bytes | bytearray | memoryview] = []
        size = 0
        for piece in self._pieces:
            n = len(piece)
            if run and size + n > limit:
                out.append(_joined(run))
                run = []
                size = 0
            run.append(piece)
            size += n
        if run:
            out.append(_joined(run))
        self._pieces.clear()
        self.nbytes = 0
        return out

    def clear(self) -> None:
        """Drop everything held (the connection ended before it could be read)."""
        self._pieces.clear()
        self.nbytes = 0

    def tobytes(self) -> bytes:
        """What is held, as one ``bytes`` (for tests and diagnostics)."""
        return b"".join(self._pieces)


def _joined(run: list[bytes | bytearray | memoryview]) -> bytes | memoryview:
    """One piece of ``take``: a lone ``bytes`` or view as it is, anything else copied."""
    if len(run) == 1:
        piece = run[0]
        if not isinstance(piece, bytearray):
            return piece
    return b"".join(run)
