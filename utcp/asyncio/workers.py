"""Worker processes sharing one utcp port (Linux): ``WorkerGroup`` and ``serve``.

One Python process serves one core.  To use more, a supervisor binds one ``SO_REUSEPORT``
UDP socket per worker on the same address, in order, attaches the steering program of
``utcp.asyncio.reuseport`` to the group (each datagram goes to the socket whose index its
destination connection id names; a SYN, to the one the kernel's hash of its source picks),
then forks the workers: worker ``i`` serves on socket ``i`` and picks connection ids that name
``i`` (``utcp.cids``), so every datagram of a connection reaches the process that holds it.

The supervisor keeps its own copy of every socket, so a worker's death leaves the group (and
each socket's index) as it was: datagrams for the dead worker's connections wait in its socket
until the worker is started again on it, and the new process, which knows none of those
connections, answers each with a reset.  The peers see ``ConnectionResetError``, not a hang;
the other workers never notice.  Deaths are reported (the ``worker.exited`` log event and the
``on_exit`` callback) and the worker is started again, after a growing pause when it keeps
dying at once.

``serve()`` is the short way, as uvicorn's ``workers=``: ``start_server`` in every worker,
until SIGINT or SIGTERM.  ``WorkerGroup`` is the pattern under it, for servers of any shape:
bind, then ``run(main)`` with a coroutine function that receives its ``Worker`` and passes
``worker.server_keywords()`` to ``create_server``/``start_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from ..cids import CID_BITS, MAX_FIXED_BITS, worker_bits_for
from ..config import given
from ..log import get_logger
from .reuseport import attach_steering
from .server import Server
from .streams import ClientConnectedCallback, run, start_server

__all__ = ["Worker", "WorkerExit", "WorkerGroup", "serve", "until_signalled"]

_log = get_logger()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WAKE_S = 0.5  # the supervisor looks at its children at least this often
_QUICK_DEATH_S = 1.0  # a worker dying sooner than this is started again after a pause
_MAX_PAUSE_S = 30.0
_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


@dataclass(frozen=True)
class Worker:
    """One worker's share of a ``WorkerGroup``: its index, the group's size, and its socket
    of each address the group listens on."""

    index: int
    count: int
    sockets: tuple[socket.socket, ...]

    def server_keywords(self) -> dict[str, Any]:
        """The keywords that make ``create_server``/``start_server`` serve as this worker."""
        return {"sock": list(self.sockets), "worker": self.index, "workers": self.count}


@dataclass(frozen=True)
class WorkerExit:
    """A worker process that ended while the group was serving."""

    index: int
    pid: int
    returncode: int  # negative: killed by that signal, as subprocess reports it
    lived_s: float

    def describe(self) -> str:
        """One line for a log or a terminal."""
        if self.returncode < 0:
            try:
                how = f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"killed by signal {-self.returncode}"
        else:
            how = f"exited with status {self.returncode}"
        return f"worker {self.index} (pid {self.pid}) {how} after {self.lived_s:.1f} s"


class WorkerGroup:
    """A supervisor of ``workers`` processes sharing the ports it binds (Linux only).

    ``bind()`` the addresses first (before any fork: the order the sockets join the port's
    group is the workers' order), then ``run(main)``, which forks the workers and blocks until
    SIGINT or SIGTERM (or ``stop()``), then stops them with SIGTERM (SIGKILL after
    ``stop_timeout_s``).  ``server_id_bits`` must match the ``Config`` the workers serve with,
    as the worker bits follow the server id in a connection id."""

    def __init__(
        self,
        workers: int,
        *,
        server_id_bits: int = 0,
        respawn: bool = True,
        on_exit: Callable[[WorkerExit], object] | None = None,
        stop_timeout_s: float = 10.0,
    ) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(
                "worker processes sharing a port need Linux (SO_REUSEPORT with "
                "SO_ATTACH_REUSEPORT_CBPF); run one process per port elsewhere"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        self.count = workers
        self.bits = worker_bits_for(workers)
        if server_id_bits + self.bits > MAX_FIXED_BITS:
            raise ValueError(
                f"{workers} workers need {self.bits} bits of the connection id beside the "
                f"server id's {server_id_bits}: at most {MAX_FIXED_BITS} together"
            )
        self._shift = CID_BITS - server_id_bits - self.bits
        self.respawn = respawn
        self.on_exit = on_exit
        self.stop_timeout_s = stop_timeout_s
        self._groups: list[list[socket.socket]] = []  # per address: one socket per worker
        self.pids: dict[int, int] = {}  # worker index -> pid, of the workers running now
        self._started: dict[int, float] = {}
        self._pause: dict[int, float] = {}
        self._due: dict[int, float] = {}  # worker index -> when to start it again
        self._stopping = False
        self._main: Callable[[Worker], Coroutine[Any, Any, object]] | None = None

    # ------------------------------------------------------------------ sockets

    def bind(
        self,
        host: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        family: int = socket.AF_UNSPEC,
    ) -> list[Any]:
        """Bind ``workers`` sockets on each address ``host`` resolves to (None or "": every
        family's wildcard), all on one port number (``port`` 0 or None: a free one); returns
        the addresses.  Call it before ``run()``."""
        if self._main is not None:
            raise RuntimeError("bind() before run()")
        hosts: list[str | None] = (
            [None] if host is None or host == "" else [host] if isinstance(host, str) else []
        )
        if not hosts:
            hosts = [h or None for h in host]  # type: ignore[union-attr]
        infos: list[tuple[int, Any]] = []
        for one in hosts:
            for info in socket.getaddrinfo(
                one, port or 0, family, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
            ):
                if (info[0], info[4]) not in infos:
                    infos.append((info[0], info[4]))
        chosen = port or 0
        for fam, addr in infos:
            group = self._bind_group(fam, (addr[0], chosen, *addr[2:]))
            chosen = group[0].getsockname()[1]
        return self.addresses

    def _bind_group(self, family: int, addr: Any) -> list[socket.socket]:
        group: list[socket.socket] = []
        self._groups.append(group)
        for _ in range(self.count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            group.append(sock)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr if group[0] is sock else group[0].getsockname())
        if self.bits:
            attach_steering(group[0], worker_shift=self._shift, worker_bits=self.bits)
        return group

    @property
    def addresses(self) -> list[Any]:
        """The addresses bound, one per address family or host."""
        return [group[0].getsockname() for group in self._groups]

    def worker(self, index: int) -> Worker:
        """Worker ``index``'s share of the sockets."""
        return Worker(index, self.count, tuple(group[index] for group in self._groups))

    def close(self) -> None:
        """Close the supervisor's copies of the sockets (after ``run()``)."""
        for group in self._groups:
            for sock in group:
                sock.close()
        self._groups.clear()

    # ------------------------------------------------------------------ processes

    def run(
        self,
        main: Callable[[Worker], Coroutine[Any, Any, object]],
        *,
        ready: Callable[[WorkerGroup], object] | None = None,
    ) -> None:
        """Fork the workers, each running ``main(worker)`` on its own event loop
        (``utcp.run``: uvloop when installed), and supervise them until SIGINT or SIGTERM
        reaches this process (or ``stop()`` is called from a callback); then stop them.
        ``ready(group)`` runs once all are started.  A worker's exit status is ``main``'s
        result when it is an int, else 0 (1 when it raised)."""
        if not self._groups:
            raise RuntimeError("bind() an address before run()")
        if self._main is not None:
            raise RuntimeError("run() was called already")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("a WorkerGroup runs in the main thread (it waits for signals)")
        self._main = main
        watched = {signal.SIGCHLD, *_STOP_SIGNALS}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            for index in range(self.count):
                self._spawn(index, old_mask)
            if ready is not None:
                ready(self)
            while not self._stopping:
                info = signal.sigtimedwait(watched, self._wait_s())
                if info is not None and info.si_signo in _STOP_SIGNALS:
                    break
                self._reap(reporting=True)
                now = time.monotonic()
                for index, due in list(self._due.items()):
                    if due <= now and not self._stopping:
                        del self._due[index]
                        self._spawn(index, old_mask)
            self._stop_all(watched)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def stop(self) -> None:
        """End ``run()`` (from a callback it runs: ``ready`` or ``on_exit``)."""
        self._stopping = True

    def _wait_s(self) -> float:
        if not self._due:
            return _WAKE_S
        return max(0.0, min(_WAKE_S, min(self._due.values()) - time.monotonic()))

    def _spawn(self, index: int, mask: Iterable[int]) -> None:
        assert self._main is not None
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            self._child(index, parent, mask)
        self.pids[index] = pid
        self._started[index] = time.monotonic()
        _log.info("worker.started", worker=index, pid=pid)

    def _child(self, index: int, parent: int, mask: Iterable[int]) -> None:
        """The worker's side of the fork: never returns."""
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _end_with_parent()
            if os.getppid() != parent:  # the supervisor is gone already
                os._exit(1)
            worker = self.worker(index)
            for group in self._groups:  # the other workers' sockets are theirs
                for i, sock in enumerate(group):
                    if i != index:
                        sock.close()
            assert self._main is not None
            result = run(self._main(worker))
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except KeyboardInterrupt:
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self, *, reporting: bool) -> None:
        """Collect the workers that ended; report them and schedule their restart."""
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = next((i for i, p in self.pids.items() if p == pid), None)
            if index is None:
                continue
            del self.pids[index]
            lived = time.monotonic() - self._started.pop(index)
            ended = WorkerExit(index, pid, os.waitstatus_to_exitcode(status), lived)
            if not reporting:
                continue
            _log.warning(
                "worker.exited",
                worker=index,
                pid=pid,
                returncode=ended.returncode,
                lived_s=round(lived, 3),
            )
            if self.on_exit is not None:
                self.on_exit(ended)
            if self.respawn and not self._stopping:
                pause = 0.0
                if lived < _QUICK_DEATH_S:
                    pause = min(_MAX_PAUSE_S, max(0.5, 2 * self._pause.get(index, 0.0)))
                self._pause[index] = pause
                self._due[index] = time.monotonic() + pause

    def _stop_all(self, watched: set[signal.Signals]) -> None:
        """SIGTERM every worker, SIGKILL those still running after ``stop_timeout_s``."""
        self._stopping = True
        self._due.clear()
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while self.pids and time.monotonic() < deadline:
            signal.sigtimedwait(watched, min(_WAKE_S, max(0.0, deadline - time.monotonic())))
            self._reap(reporting=False)
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.pids:
            pid, _ = os.waitpid(-1, 0)
            self.pids = {i: p for i, p in self.pids.items() if p != pid}


def _end_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent (the supervisor) dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


async def until_signalled() -> None:
    """Return on SIGINT or SIGTERM (handlers installed for the wait only, where the platform
    allows them)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in _STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


_NOT_WITH_WORKERS = ("sock", "reuse_port", "reuse_address", "start_serving", "worker", "workers")


def serve(
    client_connected_cb: ClientConnectedCallback,
    host: str | Iterable[str] | None = None,
    port: int | None = None,
    *,
    workers: int = 1,
    ready: Callable[[list[Any]], object] | None = None,
    on_worker_exit: Callable[[WorkerExit], object] | None = None,
    grace_s: float = 5.0,
    **kwds: Any,
) -> None:
    """Serve ``client_connected_cb`` (as ``start_server``'s) until SIGINT or SIGTERM, in
    ``workers`` processes sharing the port (Linux); blocks, as ``uvicorn.run`` does.

    ``workers=1`` serves in this process.  ``ready(addresses)`` runs once serving (in the
    supervisor).  ``on_worker_exit(WorkerExit)`` hears of each worker that died (it is
    started again on its socket; its connections end with resets).  On a stop signal each
    server stops accepting, gives its connections ``grace_s`` seconds to end, then resets
    the rest.  Other keywords go to ``start_server`` (``config=``, ``ssl=``, ``limit=``,
    ``backlog=``, ``family=`` ...)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, not {workers!r}")
    clash = sorted(set(_NOT_WITH_WORKERS) & set(kwds))
    if clash:
        raise TypeError(f"serve() takes no {', '.join(clash)}: it binds the sockets itself")
    if workers == 1:
        run(_serve_here(client_connected_cb, host, port, ready, grace_s, kwds))
        return
    config = given(kwds.get("config"))
    group = WorkerGroup(workers, server_id_bits=config.server_id_bits, on_exit=on_worker_exit)
    try:
        group.bind(host, port, family=kwds.pop("family", socket.AF_UNSPEC))

        async def main(worker: Worker) -> None:
            server = await start_server(client_connected_cb, **worker.server_keywords(), **kwds)
            await _serve_until_signalled(server, grace_s)

        group.run(main, ready=None if ready is None else lambda g: ready(g.addresses))
    finally:
        group.close()


async def _serve_here(
    client_connected_cb: ClientConnectedCallback,
    host: str | Iterable[str] | None,
    port: int | None,
    ready: Callable[[list[Any]], object] | None,
    grace_s: float,
    kwds: dict[str, Any],
) -> None:
    server = await start_server(client_connected_cb, host, port, **kwds)
    if ready is not None:
        ready([s.getsockname() for s in server.sockets])
    await _serve_until_signalled(server, grace_s)


async def _serve_until_signalled(server: Server, grace_s: float) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, let the connections end for up to
    ``grace_s`` seconds, and reset those left (closing ones among them)."""
    try:
        await until_signalled()
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), grace_s)
        except asyncio.TimeoutError:
            # Reset what is left, closing connections too (a FIN the peer never
            # acknowledges would keep one for minutes).
            for endpoint in server.endpoints:
                endpoint.abort_all()
            await server.wait_closed()
