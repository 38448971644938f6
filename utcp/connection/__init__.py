"""The sans-I/O connection: ``Connection`` (connection.py) orchestrates parts that each own
their state (README, "Design"; STYLE.md) and alone changes the state or ends the connection.

Leaves first: ``deadlines`` (the timer table), ``counters``, ``control`` (control segments
owed), ``options`` (what the handshake negotiated), ``send_side`` and ``receive_side``
(positions, buffers, windows, ACK scheduling), ``tracepoints``; then ``loss`` (scoreboard,
RTT, congestion control, recovery, tail loss probe), ``segments`` (encoding), ``sender`` (the
send loop), ``handshake`` (learning from the peer's SYN), ``liveness`` (keepalive, idle
timeout), ``timers`` (RTO, window probes), ``teardown`` (TIME_WAIT, an orphan's FIN_WAIT_2),
``stats``, ``transmit`` (what one ``datagrams_to_send`` emits), ``prediction`` (the fast
receive path); and last ``connection``.
"""

from __future__ import annotations

from .connection import Connection, new_connection_id, new_isn, reset_for
from .stats import ConnectionStats

__all__ = ["Connection", "ConnectionStats", "new_connection_id", "new_isn", "reset_for"]
