"""``utcp tunnel``: carry TCP connections over utcp (``utcp.tools.tunnel.Tunnel``) until
SIGINT/SIGTERM.

It owns the command's options: the two ends, the utcp tunables that matter on a bad path (as
flags or a JSON/TOML file of ``Config`` fields), TLS on the utcp leg (``utcp.cli.tls``: the
server end's certificate, what the client end trusts), and the human output (a start line, a
line per connection on stderr, the counters on exit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..asyncio import Worker, WorkerGroup
from ..asyncio import run as utcp_run
from ..config import Config
from ..congestion import available
from ..tools.tunnel import ConnectionRecord, Tunnel, TunnelAddress, parse_address
from .helpers import (
    Subcommands,
    add_workers_option,
    arg_type,
    duration,
    load_config_file,
    positive_duration,
    report_worker_exit,
    size,
    wait_for_signal,
)
from .tls import Sides, TlsSetup, add_tls_options, tls_setup

_SIDES = Sides(
    accepting="the server end (--listen utcp:...)", connecting="the client end (--to utcp:...)"
)
USAGE = (
    "%(prog)s --listen tcp:[HOST:]PORT --to utcp:HOST:PORT [options]   (client end)\n"
    "       %(prog)s --listen utcp:[HOST:]PORT --to tcp:HOST:PORT [options]   (server end)"
)


def register(sub: Subcommands) -> None:
    """Add the ``tunnel`` subcommand."""
    p = sub.add_parser(
        "tunnel",
        usage=USAGE,
        help="carry TCP connections over utcp (client and server ends)",
        description=(
            "Accept connections at --listen and carry each one to --to: a TCP connection over "
            "its own utcp connection (client end), or a utcp connection to a new TCP "
            "connection (server end). Half-close and reset pass through; a slow reader slows "
            "the far writer. Prints its address, a line per connection on stderr, and its "
            "counters when interrupted."
        ),
        epilog=(
            "Example: 'utcp tunnel --listen utcp:0.0.0.0:4000 --to tcp:127.0.0.1:80' on the "
            "server and 'utcp tunnel --listen tcp:8080 --to utcp:SERVER:4000' on the client, "
            "then connect to 127.0.0.1:8080. A bare PORT listens on 127.0.0.1. Options given "
            "on the command line override --config. For TLS between the two ends, give the "
            "server end --tls-cert and --tls-key and the client end --tls-ca (or "
            "--tls-insecure); TCP on either side stays as it is."
        ),
    )
    address = arg_type(parse_address)
    p.add_argument(
        "--listen", required=True, type=address, metavar="ADDR", help="tcp:[HOST:]PORT or utcp:..."
    )
    p.add_argument(
        "--to", required=True, type=address, metavar="ADDR", help="utcp:HOST:PORT or tcp:..."
    )
    defaults = Config()
    tun = p.add_argument_group("utcp tunables (each end uses its own: give both the same)")
    tun.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a JSON (or, on Python 3.11+, TOML) object of utcp.Config fields, "
        'e.g. {"rto_min_s": 0.1, "recv_buffer_bytes": 4194304}',
    )
    tun.add_argument(
        "--congestion",
        choices=sorted(available()),
        help=f"congestion control algorithm (default {defaults.congestion_control})",
    )
    tun.add_argument(
        "--rto-initial",
        type=duration,
        metavar="DURATION",
        help="retransmission timeout before the first RTT sample "
        f"(default {defaults.rto_initial_s:g}s)",
    )
    tun.add_argument(
        "--mss",
        type=size,
        metavar="BYTES",
        help="fixed largest segment payload, turning path MTU discovery off "
        "(default: discovered, from 1200-byte datagrams up)",
    )
    tun.add_argument(
        "--user-timeout",
        type=duration,
        metavar="DURATION",
        help="reset a connection whose data goes unacknowledged this long, e.g. 30s "
        "(default: none; a peer silent for 30 s is given up anyway, Config.idle_timeout_s)",
    )
    tun.add_argument(
        "--keepalive",
        type=duration,
        metavar="DURATION",
        help="probe an idle connection after DURATION of silence and every DURATION after; "
        f"reset it after {defaults.keepalive_probes} unanswered probes "
        f"(default: after {defaults.keepalive_idle_s:g}s, then every "
        f"{defaults.keepalive_interval_s:g}s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_duration,
        metavar="DURATION",
        help="reset an accepted connection whose far side is not open after DURATION "
        "(default: when utcp's SYN retries or the kernel's TCP connect give up)",
    )
    add_workers_option(p)
    add_tls_options(p, _SIDES)
    p.set_defaults(func=main)


def build_config(args: argparse.Namespace) -> Config:
    """The ``Config`` the options ask for (file first, flags over it); ``ValueError`` if bad."""
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(load_config_file(args.config))
    flags = {
        "congestion_control": args.congestion,
        "rto_initial_s": args.rto_initial,
        "mss_bytes": args.mss,
        "user_timeout_s": args.user_timeout,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.mss is not None:
        values["pmtud"] = False  # a segment size given is the size to use: nothing to discover
    if args.keepalive is not None:
        values["keepalive_idle_s"] = args.keepalive
        values["keepalive_interval_s"] = args.keepalive
    return Config(**values).validate()


def main(args: argparse.Namespace) -> int:
    """Run ``utcp tunnel`` until SIGINT/SIGTERM: 0 then, 1 if it cannot listen, 2 on bad options."""
    listen: TunnelAddress = args.listen
    to: TunnelAddress = args.to
    try:
        if {listen.scheme, to.scheme} != {"tcp", "utcp"}:
            raise ValueError("one end must be tcp: and the other utcp:")
        if to.port == 0:
            raise ValueError("--to needs a port other than 0")
        if args.workers > 1 and listen.scheme != "utcp":
            raise ValueError("--workers serves a utcp listening end (--listen utcp:...)")
        config = build_config(args)
        tls = tls_setup(args, accepting=listen.scheme == "utcp", prog="utcp tunnel", sides=_SIDES)
    except (ValueError, TypeError) as exc:
        print(f"utcp tunnel: error: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _serve_in_workers(listen, to, config, args.connect_timeout, tls, args.workers)
    return utcp_run(_serve(listen, to, config, args.connect_timeout, tls))


def _serve_in_workers(
    listen: TunnelAddress,
    to: TunnelAddress,
    config: Config,
    connect_timeout_s: float | None,
    tls: TlsSetup,
    workers: int,
) -> int:
    """The server end in ``workers`` processes sharing the utcp port (Linux)."""
    try:
        group = WorkerGroup(
            workers, server_id_bits=config.server_id_bits, on_exit=report_worker_exit("tunnel")
        )
        group.bind(listen.host, listen.port)
    except OSError as exc:
        print(f"utcp tunnel: error: cannot listen on {listen.url()}: {exc}", file=sys.stderr)
        return 1

    def ready(group: WorkerGroup) -> None:
        host, port = group.addresses[0][:2]
        over = " over TLS" if tls.context is not None else ""
        bound = TunnelAddress(listen.scheme, host, port).url()
        print(f"tunnel ({workers} workers) {bound} -> {to.url()}{over}", flush=True)

    async def worker_main(worker: Worker) -> int:
        return await _serve(listen, to, config, connect_timeout_s, tls, worker)

    try:
        group.run(worker_main, ready=ready)
    finally:
        group.close()
    return 0


def _print_record(record: ConnectionRecord) -> None:
    print(f"tunnel: {record.line()}", file=sys.stderr, flush=True)


async def _serve(
    listen: TunnelAddress,
    to: TunnelAddress,
    config: Config,
    connect_timeout_s: float | None,
    tls: TlsSetup,
    worker: Worker | None = None,
) -> int:
    """Run one tunnel until SIGINT/SIGTERM; as ``worker`` of a group, on its sockets (the
    supervisor printed the address: each worker prints its own counters at the end)."""
    try:
        tunnel = await Tunnel.start(
            listen,
            to,
            config=config,
            on_close=_print_record,
            connect_timeout_s=connect_timeout_s,
            ssl=tls.context,
            server_hostname=tls.server_hostname,
            worker=worker,
        )
    except OSError as exc:
        print(
            f"utcp tunnel: error: cannot tunnel {listen.url()} -> {to.url()}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        if worker is None:
            over = " over TLS" if tls.context is not None else ""
            print(f"tunnel {tunnel.listen_url()} -> {to.url()}{over}", flush=True)
        await wait_for_signal()
    finally:
        tunnel.close()
        await tunnel.wait_closed()
    who = "tunnel" if worker is None else f"tunnel worker {worker.index}"
    print(f"{who}: {tunnel.counters.line()}", flush=True)
    return 0
