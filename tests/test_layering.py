"""The package's layering, read from the sources (``tests/layering.py``): no import cycle
anywhere in ``utcp/`` (type-only and deferred imports included), and no module reaching into
another object's underscore attributes.  The connection's parts talk through public names
and constructor arguments (README, "Design"); these tests keep it so.
"""

from __future__ import annotations

from pathlib import Path

from tests.layering import cycles, import_graph, private_reach_ins

PACKAGE = Path(__file__).resolve().parent.parent / "utcp"


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph(PACKAGE)
    # Read the right tree: the connection's parts, the endpoint, the CLI and the tools.
    assert {"utcp.connection.loss", "utcp.endpoint", "utcp.cli.helpers", "utcp.tools.netem"} <= set(
        graph
    )
    assert cycles(graph) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    """The check can fail: two modules importing each other under TYPE_CHECKING only."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n"
    )
    (pkg / "b.py").write_text("from . import a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]


# The standard library's hooks that asyncio's own loops use to layer TLS and sendfile over a
# transport (asyncio has no public API for them): utcp drives asyncio's TLS layer and stream
# protocol exactly as its loop does.  Nothing of utcp's own is reached into.
STDLIB_HOOKS = {
    "utcp.asyncio.tls": {
        "protocol._app_transport",  # sslproto.SSLProtocol: the transport the app sees
        "protocol._client_connected_cb",  # StreamReaderProtocol: server side or not
        "protocol._transport",  # StreamReaderProtocol on 3.10 (no _replace_writer)
        "protocol._over_ssl",
        "protocol._connection_lost",  # StreamReaderProtocol: what drain() raises on
        "protocol._paused",
        "super()._set_app_protocol",  # SSLProtocol: its buffered read given a memoryview
    },
    "utcp.asyncio.transport": {"constants._SendfileMode"},
    "utcp.asyncio.flowcontrol": {"transports._FlowControlMixin"},  # loop.sendfile's fallback
    "utcp.asyncio.workers": {"os._exit"},  # a forked worker ends without the parent's atexit
}


def test_no_private_reach_ins() -> None:
    found = {
        module: [
            line for line in lines if line.split(": ", 1)[1] not in STDLIB_HOOKS.get(module, ())
        ]
        for module, lines in private_reach_ins(PACKAGE).items()
    }
    assert {module: lines for module, lines in found.items() if lines} == {}


def test_a_planted_reach_in_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "def f(conn):\n    return conn._state, conn.__class__\n\n"
        "class C:\n    def g(self):\n        return self._x\n"
    )
    assert private_reach_ins(pkg) == {"pkg.m": ["2: conn._state"]}
