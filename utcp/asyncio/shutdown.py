"""Sockets that only wind down close when their event loop shuts down.

A connection the application is done with may still hold its endpoint's socket for a while
(a client's TIME_WAIT, 2 MSL).  If the loop shuts down first (``asyncio.run`` returning,
``asyncio.Runner`` closing), such a socket would be left open until garbage collection (a
``ResourceWarning``); instead it is closed then, ending the wait as a process exit would.

The hook is the loop's own: ``shutdown_asyncgens()``, which both ``asyncio.run`` and uvloop call
before closing a loop, closes every async generator still suspended, and one suspended
generator per loop stands guard here.  Kept out of the compiled modules: it is an async
generator, and it runs once per loop.

The loop itself holds its guard (an attribute): the generator's finalizer is the loop's own
method, so a guard kept anywhere else (a weak dictionary keyed by the loop included) would
keep the loop alive for good.  Held by the loop, the two are garbage together.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable

from ..log import get_logger

__all__ = ["call_at_shutdown", "cancel_at_shutdown"]

_log = get_logger()


class _Guard:
    """The callbacks due when one loop shuts down, and the generator that runs them."""

    def __init__(self) -> None:
        self.callbacks: dict[int, Callable[[], object]] = {}
        self.agen = self._watch()
        step = self.agen.asend(None)
        try:
            step.send(None)  # run to the yield: the loop now knows the generator (firstiter)
        except StopIteration:
            pass

    async def _watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            callbacks, self.callbacks = list(self.callbacks.values()), {}
            for callback in callbacks:
                try:
                    callback()
                except Exception as exc:  # one failure must not keep the others open
                    _log.warning("shutdown_callback_failed", error=repr(exc))


_ATTRIBUTE = "_utcp_shutdown_guard"
# Loops that take no attributes (``__slots__``): their guards, kept for good (see above).
_kept: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Guard] = weakref.WeakKeyDictionary()


def _guard_of(loop: asyncio.AbstractEventLoop) -> _Guard | None:
    guard = getattr(loop, _ATTRIBUTE, None)
    return guard if isinstance(guard, _Guard) else _kept.get(loop)


def call_at_shutdown(key: int, callback: Callable[[], object]) -> None:
    """Call ``callback()`` when the running loop shuts down its async generators, unless
    ``cancel_at_shutdown(key)`` comes first.  Registering a key twice keeps the latest."""
    loop = asyncio.get_running_loop()
    guard = _guard_of(loop)
    if guard is None:
        guard = _Guard()
        try:
            setattr(loop, _ATTRIBUTE, guard)
        except AttributeError:
            _kept[loop] = guard
    guard.callbacks[key] = callback


def cancel_at_shutdown(key: int) -> None:
    """Forget the callback registered under ``key`` on the running loop, if any."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    guard = _guard_of(loop)
    if guard is not None:
        guard.callbacks.pop(key, None)
