"""Which modules the optional compiled build covers, and whether it is in use.

``setup.py`` compiles ``COMPILED_MODULES`` with mypyc into extension modules beside the
sources.  Python prefers an extension module to the source of the same name, so in a source
checkout an edited source would silently lose to an older build: when any source is newer than
the build (or ``UTCP_PURE=1`` is set), a finder on ``sys.meta_path`` loads every one of these
modules from source instead, all or none, since the compiled ones only work together.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED_MODULES: tuple[str, ...] = (
    "utcp.seqnum",
    "utcp.state",
    "utcp.packet",
    "utcp.events",
    "utcp.buffers",
    "utcp.recovery",
    "utcp.congestion.base",
    "utcp.congestion.newreno",
    "utcp.congestion.bbr",
    "utcp.congestion.ledbat",
    "utcp.congestion.cubic",
    "utcp.coalesce",
    "utcp.cids",
    "utcp.cookies",
    "utcp.stateless",
    "utcp.pmtud",
    "utcp.connection.deadlines",
    "utcp.connection.counters",
    "utcp.connection.control",
    "utcp.connection.options",
    "utcp.connection.send_side",
    "utcp.connection.receive_side",
    "utcp.connection.tracepoints",
    "utcp.connection.pacer",
    "utcp.connection.rack",
    "utcp.connection.loss",
    "utcp.connection.segments",
    "utcp.connection.sender",
    "utcp.connection.liveness",
    "utcp.connection.timers",
    "utcp.connection.stats",
    "utcp.connection.handshake",
    "utcp.connection.transmit",
    "utcp.connection.prediction",
    "utcp.connection.teardown",
    "utcp.connection.connection",
    "utcp.endpoint",
    "utcp.asyncio.errqueue",
    "utcp.asyncio.dgram",
    "utcp.asyncio.interfaces",
    "utcp.asyncio.endpoint",
    "utcp.asyncio.transport",
)
GROUP = "_core__mypyc"  # the shared library of the build, inside the package
_ROOT = Path(__file__).resolve().parent
_PURE_ENV = "UTCP_PURE"


def source_files() -> list[str]:
    """The covered sources, as paths from the project root (what setup.py compiles)."""
    return [name.replace(".", "/") + ".py" for name in COMPILED_MODULES]


def _source(name: str) -> Path:
    return _ROOT.parent.joinpath(*name.split(".")).with_suffix(".py")


def _library() -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _ROOT / (GROUP + suffix)
        if path.exists():
            return path
    return None


def stale() -> bool:
    """True when a compiled build in a source checkout is older than some covered source.

    Only a checkout (``setup.py`` beside the package) is judged: an installed wheel's files
    get their mtimes in extraction order, which says nothing about how they were built."""
    lib = _library()
    if lib is None or not (_ROOT.parent / "setup.py").is_file():
        return False
    built = lib.stat().st_mtime
    return any(_source(name).stat().st_mtime > built for name in COMPILED_MODULES)


class _SourceFinder:
    """Loads the covered modules from their sources, ahead of any compiled build."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, _source(name))


_use_source = _library() is not None and (os.environ.get(_PURE_ENV) == "1" or stale())
if _use_source:
    sys.meta_path.insert(0, _SourceFinder())


def compiled() -> bool:
    """True when the compiled build of the core is the one imported."""
    import utcp.connection.connection

    return not (utcp.connection.connection.__file__ or "").endswith(".py")
