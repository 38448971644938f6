"""The base of ``UtcpTransport``: asyncio's flow-control mixin, as an interpreted class.

asyncio's ``loop.sendfile`` fallback accepts only transports derived from
``asyncio.transports._FlowControlMixin``.  The mixin declares non-empty ``__slots__``, which a
class compiled by mypyc may not inherit directly (mypyc looks up ``__slots__`` on the new class
and refuses a non-empty one); this interpreted subclass with empty ``__slots__`` stands between
them, so the compiled transport can derive from it.
"""

from __future__ import annotations

from asyncio import transports

__all__ = ["FlowControlBase"]


class FlowControlBase(transports._FlowControlMixin):
    """asyncio's flow-control mixin with empty ``__slots__`` (see the module docstring)."""

    __slots__ = ()
