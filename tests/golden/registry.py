"""The scenario registry of the golden traces and the small scripts scenarios share."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from utcp import Config, Packet

from .sim import BASE, RST, SYN, Link, S, Sim


@dataclass(frozen=True)
class Scenario:
    """A script and what it runs on: each side's config and a fresh link per direction."""

    name: str
    doc: str
    script: Callable[[Sim], None]
    cfg_a: Config
    cfg_b: Config
    a_to_b: Callable[[], Link]
    b_to_a: Callable[[], Link]
    batch: tuple[str, ...] = ()  # sides taking same-instant arrivals as one coalesced batch
    start: str = "connect"  # or "simultaneous" (both connect), "listen" (the client waits)


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    cfg: Config | None = None,
    cfg_a: Config | None = None,
    cfg_b: Config | None = None,
    path: Callable[[int], Link] | None = None,
    seed: int = 0,
    batch: tuple[str, ...] = (),
    start: str = "connect",
    doc: str | None = None,
) -> Callable[[Callable[[Sim], None]], Callable[[Sim], None]]:
    """Register a script; ``path(seed)`` builds each direction (seeds ``seed`` and ``seed+1``)."""
    make = path or (lambda s: Link(seed=s))

    def register(script: Callable[[Sim], None]) -> Callable[[Sim], None]:
        assert name not in SCENARIOS, name
        SCENARIOS[name] = Scenario(
            name=name,
            doc=doc or " ".join((script.__doc__ or "").split()),
            script=script,
            cfg_a=cfg_a or cfg or BASE,
            cfg_b=cfg_b or cfg or BASE,
            a_to_b=lambda: make(seed),
            b_to_a=lambda: make(seed + 1),
            batch=batch,
            start=start,
        )
        return script

    return register


def payload(seed: int, n: int) -> bytes:
    """``n`` bytes from a seeded RNG."""
    return random.Random(seed).randbytes(n)


def drop_nth(pred: Callable[[Packet], bool], *which: int) -> Callable[[int, Packet], bool]:
    """A path drop predicate: the ``which``-th datagrams (0-based) matching ``pred``."""
    count = [0]

    def drop(_index: int, p: Packet) -> bool:
        if not pred(p):
            return False
        count[0] += 1
        return count[0] - 1 in which

    return drop


def is_data(p: Packet) -> bool:
    """A segment carrying data (not a SYN or an RST)."""
    return bool(p.payload) and not p.flags & (SYN | RST)


def transfer(sim: Sim, a_bytes: int = 0, b_bytes: int = 0, seed: int = 1) -> None:
    """Both sides write, then wait until everything arrived."""
    sim.run(sim.established, what="established")
    data_a, data_b = payload(seed, a_bytes), payload(seed + 1, b_bytes)
    if data_a:
        sim.a.send(data_a)
    if data_b:
        sim.b.send(data_b)
    sim.run(
        lambda: len(sim.received["b"]) == a_bytes and len(sim.received["a"]) == b_bytes,
        what="transfer delivered",
    )


def close(sim: Sim, first: str = "a") -> None:
    """The orderly close: ``first`` closes, the other closes once it saw the EOF, then both
    wait out TIME_WAIT."""
    other = "b" if first == "a" else "a"
    if sim.a.state is S.SYN_SENT:
        sim.run(sim.established, what="established")
    sim.ever[first].close()
    sim.run(lambda: sim.eof[other], what=f"{other} sees EOF")
    sim.ever[other].close()
    sim.run(sim.finished, what="both finished")


def bulk(a_bytes: int, b_bytes: int = 0, first: str = "a") -> Callable[[Sim], None]:
    """A script: ``transfer`` these amounts, then ``close`` with ``first`` closing first."""

    def script(sim: Sim) -> None:
        transfer(sim, a_bytes, b_bytes)
        close(sim, first)

    return script


def got(sim: Sim, side: str, n: int) -> Callable[[], bool]:
    """A condition: ``side`` has received exactly ``n`` bytes."""
    return lambda: len(sim.received[side]) == n


def rr(sim: Sim, rounds: int, req: int = 200, resp: int = 3000) -> None:
    """``rounds`` requests of ``req`` bytes, each answered with ``resp`` bytes, then close."""
    sim.run(sim.established, what="established")
    for i in range(rounds):
        sim.a.send(payload(i, req))
        sim.run(got(sim, "b", (i + 1) * req), what=f"request {i}")
        sim.b.send(payload(1000 + i, resp))
        sim.run(got(sim, "a", (i + 1) * resp), what=f"response {i}")
        sim.run_for(0.005 * (i % 3))
    close(sim, "a")
