"""``utcp cat``: netcat for utcp.

Standard input goes to the connection and the connection to standard output.  End of input
sends FIN (half-close) while the other direction keeps flowing until the peer closes, so a
file copied through a pair of ``utcp cat`` processes arrives exactly.  A ``cat`` started in the
background of a terminal (``utcp cat --listen 9000 > out &``) does not read that terminal, which
would stop it (SIGTTIN): it sends no data, only its FIN, and still receives.

TLS (``--tls-cert``/``--tls-key`` with ``--listen``; ``--tls-ca`` or ``--tls-insecure`` to
connect) has no half-close: asyncio's TLS layer ends both directions together.  There, end of
input closes the connection once the peer has acknowledged everything sent, and a ``cat`` that
sent nothing (empty input, or a background job) only receives, until the peer closes.  A file
copied still arrives exactly; what the peer sends after our input has ended is dropped, and a
line on stderr says so.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .. import Config, open_connection, start_server
from ..log import get_logger
from ..trace import address_text
from . import report
from .helpers import (
    Subcommands,
    add_congestion_option,
    cannot_listen,
    close_writer,
    config_for,
    duration,
    load_config_file,
    port_number,
    positive_duration,
)
from .output import run_command
from .tls import Sides, add_tls_options, describe_failure, tls_setup

CHUNK = 64 * 1024
ACK_POLL_S = 0.01  # over TLS, how often end of input checks that the peer has it all

_log = get_logger()
_SIDES = Sides(accepting="--listen", connecting="connecting (without --listen)")


def register(sub: Subcommands) -> None:
    """Add the ``cat`` subcommand."""
    p = sub.add_parser(
        "cat",
        help="netcat for utcp: stdin to the connection, the connection to stdout",
        description=(
            "Connect to HOST PORT (or, with --listen, accept one connection on PORT) and copy "
            "standard input to the connection and the connection to standard output. End of "
            "input sends FIN; the command exits once the peer has closed too. Exit status 1 "
            "on a connection error (refused, reset, timed out, a certificate not accepted). "
            "TLS cannot half-close: over TLS, end of input closes the connection, and what "
            "the peer sends after that is dropped (a cat that sent nothing receives until the "
            "peer closes)."
        ),
        usage="utcp cat [options] HOST PORT\n       utcp cat --listen [--host H] [options] PORT",
    )
    p.add_argument("target", nargs="+", metavar="HOST PORT", help="peer to connect to, or PORT")
    p.add_argument("-l", "--listen", action="store_true", help="accept one connection instead")
    p.add_argument("--host", default="127.0.0.1", help="address to bind with --listen")
    p.add_argument(
        "--user-timeout",
        type=duration,
        default=None,
        metavar="DURATION",
        help="abort when the peer acknowledges nothing for this long, e.g. 10s "
        "(default: none; a peer silent for 30 s is given up anyway, Config.idle_timeout_s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_duration,
        default=None,
        metavar="DURATION",
        help="give up connecting after this long "
        f"(default: after {Config().syn_retries} SYN retransmissions, about 71 s)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a JSON (or TOML) object of utcp.Config fields, e.g. "
        '{"idle_timeout_s": 120}; --user-timeout and --congestion override its fields',
    )
    add_congestion_option(p)
    add_tls_options(p, _SIDES)
    p.set_defaults(func=main, port_type=port_number)


def reads_stdin(
    fd: int,
    *,
    isatty: Callable[[int], bool] = os.isatty,
    tcgetpgrp: Callable[[int], int] = os.tcgetpgrp,
    getpgrp: Callable[[], int] = os.getpgrp,
) -> bool:
    """Whether cat may read standard input ``fd``: not when it is a terminal whose foreground
    process group is not ours (a job started with ``&``), since reading it would stop the whole
    process (SIGTTIN) and leave the peer hanging.  A terminal that is not our controlling one
    (``tcgetpgrp`` fails) sends no SIGTTIN: read it."""
    try:
        return not isatty(fd) or tcgetpgrp(fd) == getpgrp()
    except OSError:
        return True


def _read_chunks(fd: int, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """A daemon thread's loop: blocking reads of ``fd``, one chunk handed over at a time (the
    queue holds one: backpressure).  Not the loop's executor, which asyncio.run joins at exit:
    a read blocked on a terminal or an idle pipe would then keep the command from exiting."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        handover = chunks.put(data)
        try:
            asyncio.run_coroutine_threadsafe(handover, loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            handover.close()  # never run: no "never awaited" warning at exit
            return  # the loop is gone: the command has finished
        if not data:
            return


def _over_tls(writer: asyncio.StreamWriter) -> bool:
    return writer.get_extra_info("ssl_object") is not None


async def _acknowledged(writer: asyncio.StreamWriter) -> None:
    """Wait until the peer has acknowledged every byte written (or the connection is over)."""
    conn = writer.get_extra_info("connection")
    while conn.close_reason is None and conn.stats.send_buffer_bytes:
        await asyncio.sleep(ACK_POLL_S)


async def _pump_in(writer: asyncio.StreamWriter, fd: int | None) -> bool:
    """Standard input (``fd``; None: nothing to send) to the connection, then FIN.  TLS cannot
    half-close: there end of input closes the connection once the peer has everything (True
    then), unless nothing was sent (then we only receive, until the peer closes)."""
    sent = False
    if fd is not None:
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=_read_chunks, args=(fd, loop, chunks), name="utcp-cat-stdin", daemon=True
        ).start()
        while data := await chunks.get():
            writer.write(data)
            sent = True
            await writer.drain()
    if writer.is_closing():
        return False
    if not _over_tls(writer):
        writer.write_eof()
        return False
    if not sent:
        return False
    # Our close tells the peer to stop, and what it still sends then resets the connection
    # (asyncio's TLS layer): nothing of ours may be in flight by then.
    await _acknowledged(writer)
    close_writer(writer)
    return True


def _write_out(stdout: BinaryIO, data: bytes) -> None:
    stdout.write(data)
    stdout.flush()  # at once, as netcat: the reader may answer before we exit


async def _pump_out(reader: asyncio.StreamReader, stdout: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    while data := await reader.read(CHUNK):
        await loop.run_in_executor(None, _write_out, stdout, data)


def _stdin_fd() -> int | None:
    """Standard input's descriptor, or None when cat must not read it (``reads_stdin``)."""
    if sys.stdin is None:  # started with standard input closed
        return None
    fd = sys.stdin.fileno()
    if reads_stdin(fd):
        return fd
    _log.info("stdin_not_read", why="a terminal this background job must not read")
    return None


async def _session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, accepted: bool
) -> None:
    opened = report.connection_opened(writer, accepted=accepted)
    tls = _over_tls(writer)
    stdout = sys.stdout.buffer
    inbound = asyncio.create_task(_pump_out(reader, stdout))
    outbound = asyncio.create_task(_pump_in(writer, _stdin_fd()))
    failed = False
    try:
        try:
            await inbound  # the peer closed its side (or the connection failed)
        except ssl.SSLError:
            if not _closed_at_end_of_input(outbound):
                raise
            # TLS refused what the peer sent after our close: the loss our close announced.
            print(
                "utcp cat: the peer was still sending when our input ended; TLS cannot "
                "half-close, so the rest was dropped",
                file=sys.stderr,
                flush=True,
            )
        if not outbound.done() and not tls:
            # The peer has finished; what we still have to say may yet go out (over TLS the
            # peer's close ended both directions).
            await outbound
    except BaseException:
        # The connection failed, our output broke, or we were stopped: reset rather than
        # close, so that neither end waits for a goodbye the other will not send.
        failed = True
        writer.transport.abort()
        raise
    finally:
        outbound.cancel()
        close_writer(writer)
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            # Already failing: that error says it.  Over TLS the peer may end without TLS's
            # goodbye once it has everything.  Otherwise the connection ended before the peer
            # acknowledged all we sent and our FIN: what we wrote may not have arrived, which
            # is an error, not the quiet success of a finished copy.
            if not failed and not tls:
                raise
        finally:
            report.connection_closed(opened)


def _closed_at_end_of_input(outbound: asyncio.Task[bool]) -> bool:
    return (
        outbound.done()
        and not outbound.cancelled()
        and outbound.exception() is None
        and outbound.result()
    )


def _config(args: argparse.Namespace) -> Config:
    """The ``Config`` the options ask for: the file's fields, then --user-timeout."""
    values = load_config_file(args.config) if args.config is not None else {}
    if args.user_timeout is not None or "user_timeout_s" not in values:
        values["user_timeout_s"] = args.user_timeout
    return config_for(args, **values)


async def _connect(args: argparse.Namespace, host: str, port: int) -> None:
    coro = open_connection(host, port, config=args.utcp_config, **args.tls.keywords())
    if args.connect_timeout is not None:
        reader, writer = await asyncio.wait_for(coro, args.connect_timeout)
    else:
        reader, writer = await coro
    await _session(reader, writer, accepted=False)


class CannotListen(Exception):
    """``cat --listen`` could not start serving: the address is taken, not ours, or does
    not resolve (told apart from a failed connection)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


async def _listen(args: argparse.Namespace, port: int) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.close()  # one connection, like netcat
        try:
            await _session(reader, writer, accepted=True)
        except Exception as exc:  # main() reports it (raised here, asyncio would log it too)
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(None)

    try:
        server = await start_server(
            accept, args.host, port, config=args.utcp_config, **args.tls.keywords()
        )
    except OSError as exc:
        raise CannotListen(exc) from exc
    addr = server.sockets[0].getsockname()
    print(f"utcp cat listening on utcp://{address_text(addr)}", file=sys.stderr, flush=True)
    try:
        await done
    except BaseException:
        server.close()  # stopped before or during the connection: no TIME_WAIT to keep
        server.abort_clients()
        server.endpoint.abort_all()
        raise
    finally:
        await server.wait_closed()
        # Stay while our side is in TIME_WAIT (when we closed first: 2 x msl_s): should the
        # peer's copy of our last ACK be lost, its retransmitted FIN still gets an answer and
        # the peer ends cleanly too.  A process's exit would end TIME_WAIT.
        await server.endpoint.wait_closed()


def main(args: argparse.Namespace) -> int:
    """Run ``utcp cat``; 0 after a clean close, 1 on a connection error."""
    parse_port = args.port_type
    try:
        args.utcp_config = _config(args)
    except (ValueError, TypeError) as exc:
        print(f"utcp cat: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.listen:
            if len(args.target) != 1:
                raise argparse.ArgumentTypeError("with --listen give just PORT")
            port = parse_port(args.target[0])
        else:
            if len(args.target) != 2:
                raise argparse.ArgumentTypeError("give HOST PORT (or --listen PORT)")
            port = parse_port(args.target[1])
        args.tls = tls_setup(args, accepting=args.listen, prog="utcp cat", sides=_SIDES)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"utcp cat: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_command(_listen(args, port) if args.listen else _connect(args, args.target[0], port))
    except CannotListen as exc:
        return cannot_listen("utcp cat", args.host, port, exc.error)
    except (OSError, asyncio.TimeoutError, EOFError) as exc:
        described = describe_failure(exc)
        if described is None:
            timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
            described = f"connection {'timed out' if timed_out else 'failed'}: {exc!r}"
        print(f"utcp cat: error: {described}", file=sys.stderr)
        return 1
    return 0
