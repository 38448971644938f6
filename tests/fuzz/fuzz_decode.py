"""Coverage-guided fuzz target for the wire codec (atheris, libFuzzer flags and corpus dirs
as arguments; see docs/FUZZING.md).

Each input, as it is and with its CRC made to match, must decode to a packet that re-encodes
to bytes decoding equal, or raise ``PacketError``; any other exception is a crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["utcp"]):
    import utcp.packet  # noqa: F401

from tests.fuzz._harness import fuzz_decode  # noqa: E402


def test_one_input(data: bytes) -> None:
    fuzz_decode(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
