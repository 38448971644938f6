"""Build hook: compiles the per-datagram modules with mypyc when it is available.

The modules in ``utcp._build.COMPILED_MODULES`` are plain, fully typed Python; mypyc turns them
into one C extension (``utcp/_core__mypyc*.so`` plus a small shim per module).  Without mypyc,
without a C compiler, or with ``UTCP_PURE_BUILD=1`` the package installs as pure Python and
behaves the same, only slower.  ``make build`` compiles in place for a development checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).parent / "utcp"))
from _build import source_files  # utcp/_build.py imports nothing of utcp

sys.path.pop(0)


class BuildExt(build_ext):
    """build_ext that stamps the outputs, so the import-time staleness check
    (``utcp._build``) compares sources against the time of this build, not of the copy."""

    def run(self) -> None:
        super().run()
        for output in self.get_outputs():
            if os.path.exists(output):
                os.utime(output)


def _extensions() -> list[object]:
    if os.environ.get("UTCP_PURE_BUILD") == "1":
        return []
    # The datagram checksum and plain header in C (utcp/packet.py has the same in Python).
    extensions = [Extension("utcp._crc", ["utcp/_crc.c"], libraries=["z"], optional=True)]
    try:
        from mypyc.build import mypycify
    except ImportError:
        return list(extensions)
    compiled = mypycify(source_files(), opt_level="3", group_name="utcp._core", verbose=False)
    for ext in compiled:
        # The shims reach the shared library's module inits through capsules, so nothing
        # but its PyInit need be exported: hidden, the compiled functions call one another
        # directly and read their globals without the GOT, where 2,072 calls went through
        # the PLT (HISTORY, 2026-12-07, 19:15 session).
        if sys.platform != "win32":
            ext.extra_compile_args = [*ext.extra_compile_args, "-fvisibility=hidden"]
        ext.optional = True  # no compiler: install the pure-Python package instead
    return [*extensions, *compiled]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
