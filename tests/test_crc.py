"""The datagram checksum and fixed header in C (utcp/_crc.c) give exactly what the Python
versions give, and the Python versions are what runs without the build or with ``UTCP_PURE=1``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import utcp
from utcp import _build, packet

ROOT = Path(utcp.__file__).resolve().parent
BUILT = _build._library() is not None

try:
    from utcp import _crc
except ImportError:  # no C compiler, or no zlib to link against: packet.py's own run
    HAVE_C = False
else:
    HAVE_C = True

needs_build = pytest.mark.skipif(not HAVE_C, reason="utcp/_crc.c is not built here (make build)")


@pytest.mark.skipif(not BUILT, reason="no compiled build here (make build)")
def test_the_build_has_the_c_checksum() -> None:
    """The build that compiled the core compiled utcp/_crc.c too (a build that silently
    left it out would run the slower Python checksum)."""
    assert HAVE_C


@needs_build
@given(st.binary(min_size=24, max_size=3000))
def test_datagram_crc_matches_python(data: bytes) -> None:
    want = packet._crc_python(data)
    assert _crc.datagram_crc(data) == want
    assert _crc.datagram_crc(bytearray(data)) == want
    assert _crc.datagram_crc(memoryview(data)) == want
    # A view into a larger buffer: only its own bytes count.
    assert _crc.datagram_crc(memoryview(b"xx" + data + b"yy")[2:-2]) == want


_U32 = st.integers(0, 0xFFFFFFFF)


@needs_build
@given(
    st.integers(0, 0xFF), _U32, _U32, _U32, _U32, st.integers(0, 0xFFFF), st.binary(max_size=3000)
)
def test_encode_plain_matches_python(
    flags: int, src: int, dst: int, seq: int, ack: int, window: int, payload: bytes
) -> None:
    want = packet._encode_plain_python(flags, src, dst, seq, ack, window, payload)
    assert _crc.encode_plain(flags, src, dst, seq, ack, window, payload) == want
    view = memoryview(bytearray(payload))
    assert _crc.encode_plain(flags, src, dst, seq, ack, window, view) == want
    p = packet.decode(want)
    assert (p.flags, p.src_cid, p.dst_cid, p.seq, p.ack, p.window) == (
        flags,
        src,
        dst,
        seq,
        ack,
        window,
    )
    assert p.payload == payload


@needs_build
@given(st.binary(min_size=24, max_size=3000), st.booleans())
def test_fixed_header_matches_python(data: bytes, sealed: bool) -> None:
    if sealed:  # a datagram whose CRC field is right, as most are
        _vh, flags, window, src, dst, seq, ack, _crc_field = packet._unpack_header(data, 0)
        data = packet._encode_plain_python(flags, src, dst, seq, ack, window, data[24:])
    want = packet._fixed_header_python(data)
    if sealed:
        assert want[7]
    assert _crc.fixed_header(data) == want
    assert _crc.fixed_header(bytearray(data)) == want
    assert _crc.fixed_header(memoryview(b"xx" + data + b"yy")[2:-2]) == want


@needs_build
def test_large_datagram() -> None:
    data = bytes(range(256)) * 256  # 64 KiB: the largest datagrams the fast path reads
    assert _crc.datagram_crc(data) == packet._crc_python(data)
    fields = (0x10, 1, 2, 3, 4, 5)
    assert _crc.encode_plain(*fields, data) == packet._encode_plain_python(*fields, data)


@needs_build
def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no fixed header"):
        _crc.datagram_crc(b"x" * 23)
    with pytest.raises(TypeError):
        _crc.datagram_crc("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no fixed header"):
        _crc.fixed_header(bytearray(23))
    with pytest.raises(TypeError):
        _crc.fixed_header(None)  # type: ignore[arg-type]
    for bad in ((0x100, 0, 0, 0, 0, 0), (0, 1 << 32, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0x10000)):
        for encode_plain in (_crc.encode_plain, packet._encode_plain_python):
            with pytest.raises(ValueError, match="out of range"):
                encode_plain(*bad, b"")
    for encode_plain in (_crc.encode_plain, packet._encode_plain_python):
        with pytest.raises(ValueError, match="out of range"):
            encode_plain(0, 0, 0, -1, 0, 0, b"")
        with pytest.raises(TypeError):
            encode_plain(0, 0, 0, 0, 0, 0, 5)  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)):  # struct says "not an integer"
            encode_plain(0, 0, 0, "0", 0, 0, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="7 arguments"):
        _crc.encode_plain(0, 0, 0, 0, 0, 0)  # type: ignore[call-arg]


@needs_build
def test_the_build_uses_c() -> None:
    if os.environ.get("UTCP_PURE") == "1":
        pytest.skip("this run is the pure-Python core")
    assert packet._crc is _crc.datagram_crc
    assert packet.encode_plain is _crc.encode_plain
    assert packet._fixed_header is _crc.fixed_header


def test_pure_uses_python() -> None:
    env = dict(os.environ, UTCP_PURE="1", PYTHONPATH=str(ROOT.parent))
    out = subprocess.run(
        [sys.executable, "-c", "import utcp.packet as p; print(p._crc.__name__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert out == "_crc_python"
