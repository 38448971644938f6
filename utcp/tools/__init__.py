"""Tools built on utcp, not part of its sans-I/O core: the impairing UDP relay (``netem``), the
TCP <-> utcp tunnel (``tunnel``), and trace reading and drawing (``traceview``).

They use the public API (the asyncio layer, ``Config``) and, for traces, the wire codec and
sequence arithmetic; nothing in the core or the asyncio layer imports them.  Import each tool
from its module, e.g. ``from utcp.tools.netem import Relay``.
"""
