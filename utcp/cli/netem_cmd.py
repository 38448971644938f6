"""The ``utcp netem`` subcommand: run an impairing UDP relay (``utcp.tools.netem.Relay``) until
SIGINT/SIGTERM, then print what it did to each direction.

It owns the command's options and their parsing; every impairment can be set for both directions
at once or per direction (``--loss-up``, ``--loss-down``), the directional value winning.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from ..asyncio import run as utcp_run
from ..tools.netem import Impairment, Relay
from .helpers import Subcommands, arg_type, positive_duration, wait_for_signal
from .units import (
    parse_duration,
    parse_fraction,
    parse_hostport,
    parse_interval,
    parse_rate,
    parse_size,
)

USAGE = (
    "%(prog)s --listen H:P --to H:P [--loss PCT] [--delay MS] [--jitter MS]\n"
    "       [--dup PCT] [--corrupt PCT] [--reorder PCT] [--rate MBIT --queue KB]\n"
    "       [--blackhole START+LEN] [--mtu BYTES] [--seed N]\n"
    "       (each impairment also as --OPTION-up, --OPTION-down)"
)
DIRECTIONS = ("up", "down")


def _milliseconds(text: str) -> float:
    return parse_duration(text, default_unit="ms")


def _queue_size(text: str) -> int:
    # The option is documented in KB, like --delay in ms: a bare number is KiB.
    if re.fullmatch(r"\s*(\d+(\.\d*)?|\.\d+)\s*", text):
        text = text.strip() + "K"
    return parse_size(text)


def _datagram_size(text: str) -> int:
    size = parse_size(text)
    if size <= 0:
        raise ValueError(f"datagram size must be positive, not {text!r}")
    return size


# option, Impairment field, type, metavar, help
_IMPAIRMENTS: list[tuple[str, str, Callable[[str], object], str, str]] = [
    ("loss", "loss", arg_type(parse_fraction, "percentage"), "PCT", "drop this fraction (5%%)"),
    (
        "delay",
        "delay_s",
        arg_type(_milliseconds, "duration"),
        "MS",
        "one-way propagation delay (20, 20ms or 0.5s)",
    ),
    (
        "jitter",
        "jitter_s",
        arg_type(_milliseconds, "duration"),
        "MS",
        "add a uniform random 0..MS to each delay (may reorder)",
    ),
    ("dup", "dup", arg_type(parse_fraction, "percentage"), "PCT", "duplicate this fraction"),
    (
        "corrupt",
        "corrupt",
        arg_type(parse_fraction, "percentage"),
        "PCT",
        "flip one random bit in this fraction",
    ),
    (
        "reorder",
        "reorder",
        arg_type(parse_fraction, "percentage"),
        "PCT",
        "hold this fraction back by a random extra delay (see --reorder-extra)",
    ),
    (
        "reorder-extra",
        "reorder_extra_s",
        arg_type(_milliseconds, "duration"),
        "MS",
        "the most a reordered datagram is held back (default 30ms)",
    ),
    (
        "rate",
        "rate_bps",
        arg_type(parse_rate, "rate"),
        "MBIT",
        "bottleneck rate in Mbit/s (20, 500kbit, 1gbit); off by default",
    ),
    (
        "queue",
        "queue_bytes",
        arg_type(_queue_size, "size"),
        "KB",
        "the bottleneck's tail-drop queue (64 or 64K = 64 KiB, 1M; default 64K)",
    ),
    (
        "blackhole",
        "blackhole",
        arg_type(parse_interval, "interval"),
        "START+LEN",
        "drop everything from START for LEN after the relay starts (2s+3s)",
    ),
    (
        "mtu",
        "mtu",
        arg_type(_datagram_size, "size"),
        "BYTES",
        "silently drop datagrams (UDP payloads) larger than this: a PMTU black hole",
    ),
]


def register(subparsers: Subcommands) -> None:
    """Add the ``netem`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "netem",
        usage=USAGE,
        help="relay UDP between two addresses, impairing the traffic each way",
        description=(
            "Relay UDP datagrams from clients at --listen to --to and back, with loss, delay,"
            " jitter, duplication, corruption, reordering, a rate-limited bottleneck, a"
            " blackhole and a path MTU.  Each client address gets its own upstream socket, so"
            " many clients can share one relay.  Runs until interrupted, then prints its counters."
        ),
        epilog=(
            "Percentages are 5% or 0.05 (a bare number is a fraction: 1 means 100%).  Each"
            " impairment option also exists as --OPTION-up (client -> server) and"
            " --OPTION-down (server -> client), which override the plain option for that"
            " direction, e.g. --loss 1% --loss-down 5%."
        ),
    )
    parser.add_argument(
        "--listen",
        required=True,
        type=arg_type(parse_hostport, "address"),
        metavar="H:P",
        help="where clients send (port 0 picks a free one)",
    )
    parser.add_argument(
        "--to",
        required=True,
        type=arg_type(parse_hostport, "address"),
        metavar="H:P",
        help="the server datagrams are relayed to",
    )
    group = parser.add_argument_group("impairments (both directions)")
    for option, _, convert, metavar, help_text in _IMPAIRMENTS:
        dest = option.replace("-", "_")
        group.add_argument(f"--{option}", type=convert, metavar=metavar, help=help_text, dest=dest)
        for direction in DIRECTIONS:
            group.add_argument(
                f"--{option}-{direction}",
                type=convert,
                metavar=metavar,
                dest=f"{dest}_{direction}",
                help=argparse.SUPPRESS,
            )
    parser.add_argument(
        "--rebind-every",
        type=positive_duration,
        metavar="DURATION",
        help="every DURATION each client's datagrams leave for the server from a new port, "
        "as when a NAT rebinds; what the server sends to the old port is lost (e.g. 2s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the random decisions: the same seed repeats them (default: random)",
    )
    parser.set_defaults(func=run)


def impairments(args: argparse.Namespace) -> dict[str, Impairment]:
    """The ``up`` and ``down`` impairments the parsed options ask for.

    Raises ``ValueError`` for a combination no single option can catch (``--queue`` alone).
    """
    out = {}
    for direction in DIRECTIONS:
        values: dict[str, object] = {}
        for option, field_name, *_ in _IMPAIRMENTS:
            dest = option.replace("-", "_")
            value = getattr(args, f"{dest}_{direction}", None)
            if value is None:
                value = getattr(args, dest, None)
            if value is not None:
                values[field_name] = value
        if "queue_bytes" in values and "rate_bps" not in values:
            raise ValueError(f"--queue needs --rate (no rate is set for direction {direction})")
        out[direction] = Impairment(**values)  # type: ignore[arg-type]
    return out


def run(args: argparse.Namespace) -> int:
    """Run the relay until SIGINT/SIGTERM; print the start line and then the counters."""
    try:
        imps = impairments(args)
    except ValueError as exc:
        print(f"utcp netem: error: {exc}", file=sys.stderr)
        return 2
    return utcp_run(_serve(args.listen, args.to, imps, args.seed, args.rebind_every))


async def _serve(
    listen: tuple[str, int],
    to: tuple[str, int],
    imps: dict[str, Impairment],
    seed: int | None,
    rebind_every_s: float | None = None,
) -> int:
    try:
        relay = await Relay.start(
            listen,
            to,
            up=imps["up"],
            down=imps["down"],
            seed=seed,
            rebind_every_s=rebind_every_s,
        )
    except OSError as exc:
        print(
            f"utcp netem: error: cannot relay {_url(listen)} -> {_url(to)}: {exc}", file=sys.stderr
        )
        return 1
    try:
        print(f"netem relaying {_url(relay.address)} -> {_url(to)}", flush=True)
        await wait_for_signal()
    finally:
        relay.close()
        await relay.wait_closed()
    # The seed is on each line: a run without --seed can be replayed with it.
    print(f"up: seed={relay.seed} {relay.counters.up.line()}")
    print(f"down: seed={relay.seed} {relay.counters.down.line()}", flush=True)
    if relay.counters.rebinds:
        print(f"rebinds: {relay.counters.rebinds}", flush=True)
    return 0


def _url(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"
