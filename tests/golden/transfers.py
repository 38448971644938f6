"""Golden scenarios that move data: bulk and request/response, impairments (loss, reordering,
duplication, corruption, blackholes), flow control, path MTU discovery, options and
configurations, tail loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from utcp import DataReceived, Event

from .registry import bulk, close, drop_nth, is_data, payload, rr, scenario, transfer
from .sim import BASE, FIXED, Link, Sim

# -- a basic life


@scenario("handshake_close")
def _handshake_close(sim: Sim) -> None:
    """Handshake, no data, the client closes first; TIME_WAIT runs out (defaults, PMTUD on)."""
    close(sim, "a")


@scenario("bulk_a_to_b")
def _bulk_a_to_b(sim: Sim) -> None:
    """300 KB client to server over a 1500-byte path with PMTUD on, then close."""
    bulk(300_000)(sim)


@scenario("bulk_b_to_a", cfg=FIXED)
def _bulk_b_to_a(sim: Sim) -> None:
    """300 KB server to client, fixed segments (PMTUD off); the server closes first."""
    bulk(0, 300_000, first="b")(sim)


@scenario("bulk_both_ways", cfg=FIXED)
def _bulk_both_ways(sim: Sim) -> None:
    """200 KB each way at once: data segments carry the ACKs."""
    bulk(200_000, 200_000)(sim)


@scenario("bulk_batched_receive", cfg=FIXED, batch=("a", "b"))
def _bulk_batched(sim: Sim) -> None:
    """300 KB with receive coalescing on both sides (receive_packet with segments > 1)."""
    bulk(300_000, 20_000)(sim)


@scenario("bulk_jumbo_path", path=lambda s: Link(seed=s, mtu=8972))
def _bulk_jumbo(sim: Sim) -> None:
    """PMTUD climbs to a 9000-byte path; 400 KB."""
    bulk(400_000)(sim)


@scenario("request_response")
def _request_response(sim: Sim) -> None:
    """40 requests of 200 bytes, each answered with 3000 bytes, then close (fast paths)."""
    rr(sim, 40)


@scenario("request_response_fast_paths_off", cfg=BASE.replace(fast_paths=False))
def _request_response_slow(sim: Sim) -> None:
    """As request_response with fast_paths=False: the same wire, the general paths."""
    rr(sim, 40)


# -- loss, reordering, duplication, corruption


def _lossy(loss: float, **kw: Any) -> Callable[[int], Link]:
    return lambda s: Link(seed=s, loss=loss, **kw)


for _pct, _seeds, _size in ((1, (1, 2), 200_000), (5, (1, 2, 3), 150_000), (20, (1, 2), 60_000)):
    for _seed in _seeds:
        scenario(
            f"loss_{_pct}pct_seed{_seed}",
            path=_lossy(_pct / 100),
            seed=100 * _pct + _seed,
            doc=f"{_pct}% random loss each way (seed {_seed}): {_size // 1000} KB and "
            f"{_size // 5000} KB, PMTUD on, then close",
        )(bulk(_size, _size // 5))


@scenario("reorder", cfg=FIXED, path=lambda s: Link(seed=s, reorder=0.1), seed=7)
def _reorder(sim: Sim) -> None:
    """10% of datagrams each way delayed by up to 30 ms more: SACK, spurious recovery."""
    bulk(200_000, 20_000)(sim)


@scenario("jitter_loss", path=lambda s: Link(seed=s, jitter_s=0.004, loss=0.01), seed=8)
def _jitter(sim: Sim) -> None:
    """4 ms of jitter (steady reordering) and 1% loss, PMTUD on."""
    bulk(200_000, 20_000)(sim)


@scenario("duplication", cfg=FIXED, path=lambda s: Link(seed=s, dup=0.1), seed=9)
def _duplication(sim: Sim) -> None:
    """10% of datagrams each way arrive twice: duplicate segments and ACKs."""
    bulk(150_000, 30_000)(sim)


@scenario("corruption", path=lambda s: Link(seed=s, corrupt=0.05), seed=10)
def _corruption(sim: Sim) -> None:
    """5% of datagrams each way get one bit flipped: checksum drops, recovery."""
    bulk(150_000, 30_000)(sim)


@scenario(
    "mixed_impairments",
    path=lambda s: Link(seed=s, loss=0.03, dup=0.02, corrupt=0.02, reorder=0.05, jitter_s=0.002),
    seed=11,
)
def _mixed(sim: Sim) -> None:
    """Loss, duplication, corruption, reordering and jitter together, both ways."""
    bulk(150_000, 50_000)(sim)


@scenario("blackhole_mid_transfer", cfg=FIXED)
def _blackhole(sim: Sim) -> None:
    """Both ways dark for 3 s mid-transfer: RTOs with backoff, then recovery."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 400_000))
    sim.run_for(0.2)
    sim.vanish(end=sim.now + 3.0)
    sim.run(lambda: len(sim.received["b"]) == 400_000, what="delivered")
    close(sim, "a")


@scenario("blackhole_ack_path", cfg=FIXED)
def _blackhole_acks(sim: Sim) -> None:
    """Only the ACK direction dark for 1.5 s: spurious timeouts, duplicates at the receiver."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 200_000))
    sim.run_for(0.1)
    sim.paths["b"].blackholes.append((sim.now, sim.now + 1.5))
    sim.run(lambda: len(sim.received["b"]) == 200_000, what="delivered")
    close(sim, "a")


# -- flow control


@scenario("zero_window_persist", cfg_b=FIXED.replace(recv_buffer_bytes=16384), cfg_a=FIXED)
def _zero_window(sim: Sim) -> None:
    """The reader pauses: its window closes, the writer probes it with persist backoff for
    8 s, then the reader resumes and the window reopens."""
    sim.run(sim.established, what="established")
    sim.b.pause_reading()
    sim.a.send(payload(1, 60_000))
    sim.run_for(8.0)
    sim.b.resume_reading()
    sim.run(lambda: len(sim.received["b"]) == 60_000, what="delivered")
    close(sim, "b")


@scenario("small_receive_buffer", cfg_b=FIXED.replace(recv_buffer_bytes=8192), cfg_a=FIXED)
def _small_rcvbuf(sim: Sim) -> None:
    """An 8 KB receive buffer: the sender is limited by the receiver's window throughout."""
    bulk(100_000)(sim)


@scenario("paused_reader_holds_eof", cfg=FIXED)
def _paused_eof(sim: Sim) -> None:
    """The reader is paused when the writer's data and FIN arrive and it closes too: EOF and
    the close report wait until it resumes reading."""
    sim.run(sim.established, what="established")
    sim.b.pause_reading()
    sim.a.send(payload(1, 20_000))
    sim.a.close()
    sim.run_for(0.5)
    sim.b.close()
    sim.run_for(0.5)
    sim.b.resume_reading()
    sim.run(sim.finished, what="both finished")


# -- path MTU discovery


@scenario("pmtud_path_1400", path=lambda s: Link(seed=s, mtu=1400))
def _pmtud_1400(sim: Sim) -> None:
    """A 1400-byte path: three probes of the 1452 plateau are lost, then the search gallops up
    from the base size (1201, 1203, 1207, ...) until the transfer ends."""
    bulk(200_000, 30_000)(sim)


@scenario(
    "pmtud_black_hole",
    path=lambda s: Link(seed=s, mtu=8972, mtu_changes=((0.15, 1280),)),
)
def _pmtud_black_hole(sim: Sim) -> None:
    """A 9000-byte path shrinks to 1280 mid-transfer: three RTOs declare a black hole, the
    size falls back to the base and the search starts again."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 600_000))
    sim.run(lambda: len(sim.received["b"]) == 600_000, what="delivered")
    close(sim, "a")


@scenario("pmtud_one_side_only", cfg_a=BASE, cfg_b=FIXED)
def _pmtud_one_side(sim: Sim) -> None:
    """Only the client offers PMTUD: not negotiated, fixed sizes both ways."""
    bulk(100_000, 20_000)(sim)


# -- options and configuration


@scenario("sack_off_loss", cfg=FIXED.replace(sack=False), path=_lossy(0.03), seed=12)
def _sack_off(sim: Sim) -> None:
    """SACK off, 3% loss: NewReno recovery with duplicate-ACK window inflation."""
    bulk(150_000, 20_000)(sim)


@scenario("sack_one_side", cfg_a=FIXED, cfg_b=FIXED.replace(sack=False), path=_lossy(0.02), seed=13)
def _sack_one_side(sim: Sim) -> None:
    """The server turns SACK off: not negotiated."""
    bulk(100_000, 20_000)(sim)


@scenario("timestamps_loss", cfg=BASE.replace(timestamps=True), path=_lossy(0.02), seed=14)
def _timestamps(sim: Sim) -> None:
    """Timestamps on both sides (options on every segment), 2% loss, PMTUD on."""
    bulk(150_000, 30_000)(sim)


@scenario("fast_paths_off_loss", cfg=BASE.replace(fast_paths=False), path=_lossy(0.01), seed=15)
def _fast_paths_off(sim: Sim) -> None:
    """fast_paths=False with 1% loss: every segment through the general paths."""
    bulk(150_000, 30_000)(sim)


for _segments in (1, 4, 32):
    scenario(
        f"initial_cwnd_{_segments}",
        cfg=FIXED.replace(initial_cwnd_segments=_segments),
        path=_lossy(0.01),
        seed=20 + _segments,
        doc=f"initial_cwnd_segments={_segments}, 1% loss, 150 KB",
    )(bulk(150_000))


@scenario(
    "newreno_explicit_small_mss",
    cfg=FIXED.replace(congestion_control="newreno", mss_bytes=536),
    path=_lossy(0.02),
    seed=16,
)
def _newreno(sim: Sim) -> None:
    """congestion_control="newreno" named, 536-byte segments, 2% loss."""
    bulk(100_000, 10_000)(sim)


@scenario(
    "ack_every_segment_no_delay",
    cfg=FIXED.replace(ack_every_segments=1, delayed_ack_s=0.0, dupack_threshold=2),
    path=_lossy(0.02),
    seed=17,
)
def _ack_every(sim: Sim) -> None:
    """An ACK per segment, no delayed ACK, fast retransmit after 2 duplicates."""
    bulk(100_000, 10_000)(sim)


# -- tail loss


@scenario("tail_loss_probe", cfg=FIXED, path=lambda s: Link(seed=s))
def _tlp(sim: Sim) -> None:
    """The last of ten segments is lost: the tail loss probe repairs it."""
    sim.paths["a"].drop = drop_nth(is_data, 9)
    transfer(sim, 10 * FIXED.mss_bytes)
    close(sim, "a")


@scenario("tail_loss_rto", cfg=FIXED.replace(tail_loss_probe=False))
def _tail_rto(sim: Sim) -> None:
    """As tail_loss_probe with the probe off: the RTO repairs it."""
    sim.paths["a"].drop = drop_nth(is_data, 9)
    transfer(sim, 10 * FIXED.mss_bytes)
    close(sim, "a")


@scenario("pause_with_events_waiting", cfg_a=FIXED, cfg_b=FIXED.replace(recv_buffer_bytes=65536))
def _pause_events(sim: Sim) -> None:
    """The reader pauses on taking a chunk while more chunks of the same batch wait: they go
    back to the buffer and the window shrinks; a second later it resumes."""
    paused: list[float] = []

    def on_event(name: str, ev: Event) -> None:
        if paused or name != "b" or not isinstance(ev, DataReceived):
            return
        if len(sim.received["b"]) > 20_000:
            paused.append(sim.now)
            sim.b.pause_reading()

    sim.on_event = on_event
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 150_000))
    sim.run(lambda: bool(paused), what="paused")
    sim.run_for(1.0)
    sim.b.resume_reading()
    sim.run(lambda: len(sim.received["b"]) == 150_000, what="delivered")
    close(sim, "a")


@scenario(
    "sack_off_fast_retransmit",
    cfg=FIXED.replace(sack=False),
    path=lambda s: Link(seed=s, jitter_s=0.0005),
)
def _sack_off_frx(sim: Sim) -> None:
    """SACK off, the 13th data segment lost once; a little jitter spreads the arrivals, so
    each draws its own duplicate ACK: fast retransmit and NewReno's window inflation.  (A
    burst arriving at one instant draws one ACK: no fast retransmit without SACK.)"""
    sim.paths["a"].drop = drop_nth(is_data, 12)
    bulk(100_000)(sim)


@scenario("sack_two_holes", cfg=FIXED)
def _sack_holes(sim: Sim) -> None:
    """SACK on, the 13th and 16th data segments lost: SACK blocks, one recovery episode."""
    sim.paths["a"].drop = drop_nth(is_data, 12, 15)
    bulk(100_000)(sim)


@scenario(
    "pmtud_raise_timer",
    path=lambda s: Link(seed=s, mtu=1400, mtu_changes=((300.0, 8972),)),
)
def _pmtud_raise(sim: Sim) -> None:
    """A 1400-byte path grows to 9000 bytes while the connection idles (keepalive answered):
    after the 600 s raise timer the next transfer searches again and climbs."""
    transfer(sim, 100_000)
    sim.run_for(610.0)
    sim.a.send(payload(2, 300_000))
    sim.run(lambda: len(sim.received["b"]) == 400_000, what="second transfer")
    close(sim, "a")
