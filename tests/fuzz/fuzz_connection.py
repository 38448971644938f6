"""Coverage-guided fuzz target for ``Connection.receive_datagram`` in every state (atheris,
libFuzzer flags and corpus dirs as arguments; see docs/FUZZING.md).

An input is a script (``tests/fuzz/_harness.py``): its first byte picks the starting state, the
rest is datagrams, clock steps and application calls.  Any exception is a crash: one escaping
the connection, or a broken invariant (a malformed datagram that changed anything, timers that
never wind down, a ConnectionClosed reported twice).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["utcp"]):
    import utcp.connection  # noqa: F401

from tests.fuzz._harness import run_script  # noqa: E402


def test_one_input(data: bytes) -> None:
    run_script(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
