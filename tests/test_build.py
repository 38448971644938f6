"""The compiled core is used when it is built and current, and the sources otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import utcp
from utcp import _build

ROOT = Path(utcp.__file__).resolve().parent
BUILT = _build._library() is not None
PROBE = "import utcp._build as b, utcp.connection.connection as c; print(b.compiled(), c.__file__)"


def _probe(pythonpath: Path, **env: str) -> tuple[bool, str]:
    run_env = {k: v for k, v in os.environ.items() if k != "UTCP_PURE"}
    run_env.update(env, PYTHONPATH=str(pythonpath))
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=pythonpath,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return out[0] == "True", out[1]


def test_every_listed_module_has_a_source() -> None:
    for name in _build.COMPILED_MODULES:
        assert _build._source(name).is_file(), name
    assert "utcp.config" not in _build.COMPILED_MODULES  # tools read its annotations


def test_pure_runs_the_sources() -> None:
    compiled, path = _probe(ROOT.parent, UTCP_PURE="1")
    assert not compiled
    assert path.endswith("connection.py")


@pytest.mark.skipif(not BUILT, reason="no compiled build here (make build)")
def test_the_build_is_used_when_current(tmp_path: Path) -> None:
    shutil.copytree(ROOT, tmp_path / "utcp", copy_function=shutil.copy2)
    compiled, path = _probe(tmp_path)
    assert compiled, path
    assert not path.endswith(".py")


def _newer_source(tree: Path) -> None:
    library = _build._library()
    assert library is not None
    later = library.stat().st_mtime + 10
    os.utime(tree / "utcp" / "connection" / "sender.py", (later, later))


@pytest.mark.skipif(not BUILT, reason="no compiled build here (make build)")
def test_an_edited_source_wins_over_an_older_build(tmp_path: Path) -> None:
    """In a checkout, a source newer than the build is what runs: an edit never silently
    loses."""
    shutil.copytree(ROOT, tmp_path / "utcp", copy_function=shutil.copy2)
    shutil.copy2(ROOT.parent / "setup.py", tmp_path / "setup.py")
    _newer_source(tmp_path)
    compiled, path = _probe(tmp_path)
    assert not compiled
    assert path.endswith("connection.py")


@pytest.mark.skipif(not BUILT, reason="no compiled build here (make build)")
def test_an_installed_build_is_used_whatever_the_mtimes(tmp_path: Path) -> None:
    """An installed package (no setup.py beside it) keeps its build: a wheel's files get
    their mtimes in the order they were unpacked."""
    shutil.copytree(ROOT, tmp_path / "utcp", copy_function=shutil.copy2)
    _newer_source(tmp_path)
    compiled, path = _probe(tmp_path)
    assert compiled, path
