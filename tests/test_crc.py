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

if BUILT:
    from utcp import _crc

needs_build = pytest.mark.skipif(not BUILT, reason="no compiled build here (make build)")


@needs_build
@given(st.binary(min_size=24, max_size=3000))
def test_datagram_crc_matches_python(data: bytes) -> None:
    want = packet._crc_python(data)
    assert _crc.datagram_crc(data) == want
    assert _crc.datagram_crc(bytearray(data)) == want
    assert _crc.datagram_crc(memoryview(data)) == want
    # A view into a larger buffer: only its own bytes count.
    assert _crc.datagram_crc(memoryview(b"xx" + data + b"yy")[2:-2]) == want


@needs_build
@given(st.binary(min_size=20, max_size=20), st.binary(max_size=3000))
def test_seal_plain_matches_python(head: bytes, payload: bytes) -> None:
    want = packet._seal_plain_python(head, payload)
    assert _crc.seal_plain(head, payload) == want
    assert _crc.seal_plain(head, memoryview(bytearray(payload))) == want
    assert packet._crc_python(want) == int.from_bytes(want[20:24], "big")


@needs_build
@given(st.binary(min_size=24, max_size=3000), st.booleans())
def test_fixed_header_matches_python(data: bytes, sealed: bool) -> None:
    if sealed:  # a datagram whose CRC field is right, as most are
        data = packet._seal_plain_python(data[:20], data[24:])
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
    head = data[:20]
    assert _crc.seal_plain(head, data) == packet._seal_plain_python(head, data)


@needs_build
def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no CRC field"):
        _crc.datagram_crc(b"x" * 23)
    with pytest.raises(TypeError):
        _crc.datagram_crc("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no fixed header"):
        _crc.fixed_header(bytearray(23))
    with pytest.raises(TypeError):
        _crc.fixed_header(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="20 bytes"):
        _crc.seal_plain(b"x" * 19, b"")
    with pytest.raises(ValueError, match="20 bytes"):
        _crc.seal_plain(bytearray(20), b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _crc.seal_plain(b"x" * 20, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="2 arguments"):
        _crc.seal_plain(b"x" * 20)  # type: ignore[call-arg]


@needs_build
def test_the_build_uses_c() -> None:
    if os.environ.get("UTCP_PURE") == "1":
        pytest.skip("this run is the pure-Python core")
    assert packet._crc is _crc.datagram_crc
    assert packet._seal_plain is _crc.seal_plain
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
