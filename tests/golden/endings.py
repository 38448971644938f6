"""Golden scenarios about how connections start and end: dead peers and timeouts, every close
sequence, the handshake and its losses, ICMP errors, forged and stray segments."""

from __future__ import annotations

from utcp import Packet, decode, encode

from .registry import bulk, close, drop_nth, is_data, payload, scenario, transfer
from .sim import ACK, BASE, CID, FIN, FIXED, ISN, NEVER, QUIET, RST, SYN, S, Sim

# -- dead peers and timeouts


@scenario("keepalive_peer_vanishes", cfg=FIXED)
def _keepalive(sim: Sim) -> None:
    """Quiet after a short exchange, then the path dies: keepalive probes go unanswered and
    both sides end (IDLE) about 30 s after they last heard the other."""
    transfer(sim, 3000, 3000)
    sim.vanish()
    sim.run(sim.finished, what="both finished")


@scenario("keepalive_healthy_idle", cfg=FIXED)
def _keepalive_ok(sim: Sim) -> None:
    """Two minutes of silence on a live path: answered probes keep it up; then close."""
    transfer(sim, 100, 100)
    sim.run_for(120.0)
    close(sim, "b")


@scenario("stall_probe_reader", cfg=FIXED)
def _stall(sim: Sim) -> None:
    """The server writes bulk data and its path dies mid-transfer: the reading client probes
    once after the stall (keepalive_stall_s) and both end."""
    sim.run(sim.established, what="established")
    sim.b.send(payload(1, 500_000))
    sim.run_for(0.15)
    sim.vanish()
    sim.run(sim.finished, what="both finished")


@scenario("user_timeout", cfg=FIXED.replace(user_timeout_s=2.0))
def _user_timeout(sim: Sim) -> None:
    """user_timeout_s=2 with data outstanding on a dead path: TIMEOUT once, on time."""
    sim.run(sim.established, what="established")
    sim.run_for(0.08)
    sim.a.send(payload(1, 5000))
    sim.run_for(0.001)
    sim.vanish()
    sim.run(sim.finished, what="both finished")


@scenario("max_retransmits", cfg=FIXED.replace(max_retransmits=4, **QUIET))
def _max_retx(sim: Sim) -> None:
    """Keepalive and idle timeout off, max_retransmits=4: the writer gives up (TIMEOUT, an RST
    the dead path drops) after its backed-off RTOs; the quiet reader never learns."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 20_000))
    sim.run_for(0.012)
    sim.vanish()
    sim.run(lambda: sim.a.is_finished, what="a finished")
    sim.run_for(5.0)


@scenario("idle_timeout_no_keepalive", cfg=FIXED.replace(keepalive_idle_s=None, idle_timeout_s=5.0))
def _idle(sim: Sim) -> None:
    """No keepalive, idle_timeout_s=5: a quiet connection ends IDLE with an RST."""
    transfer(sim, 500, 500)
    sim.run(sim.finished, what="both finished")


# -- close sequences


@scenario("close_simultaneous", cfg=FIXED)
def _close_simultaneous(sim: Sim) -> None:
    """Both close at the same instant after data: FIN_WAIT_1 -> CLOSING -> TIME_WAIT, twice."""
    transfer(sim, 5000, 5000)
    sim.a.close()
    sim.b.close()
    sim.run(sim.finished, what="both finished")


@scenario("half_close_then_data", cfg=FIXED)
def _half_close(sim: Sim) -> None:
    """The client half-closes at once; the server sends 80 KB afterwards, then closes."""
    sim.run(sim.established, what="established")
    sim.a.close()
    sim.run(lambda: sim.eof["b"], what="b sees EOF")
    sim.b.send(payload(1, 80_000))
    sim.run(lambda: len(sim.received["a"]) == 80_000, what="delivered")
    sim.b.close()
    sim.run(sim.finished, what="both finished")


@scenario("abort_mid_transfer", cfg=FIXED)
def _abort(sim: Sim) -> None:
    """The client aborts mid-transfer: RST, the server ends RESET."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 200_000))
    sim.run_for(0.1)
    sim.a.abort()
    sim.run(sim.finished, what="both finished")


@scenario("peer_gone_rst", cfg=FIXED)
def _peer_gone(sim: Sim) -> None:
    """The server's process is gone mid-transfer; its host answers with RST: RESET."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 200_000))
    sim.run_for(0.1)
    sim.kill("b")
    sim.run(lambda: sim.a.is_finished, what="a finished")
    sim.run()


@scenario("orphan_fin_wait_2_timeout", cfg=BASE.replace(pmtud=False, fin_wait_2_timeout_s=10.0))
def _orphan_fw2(sim: Sim) -> None:
    """orphan(): the peer acknowledges the FIN but never closes; 10 s later the orphan resets
    (TIMEOUT) and the peer sees the RST."""
    transfer(sim, 2000, 2000)
    sim.a.orphan(now=sim.now)
    sim.run(sim.finished, what="both finished")


@scenario("orphan_fin_wait_1_gives_up", cfg=FIXED)
def _orphan_fw1(sim: Sim) -> None:
    """An orphan with data unacknowledged on a dead path gives up after fin_retries."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 30_000))
    sim.a.orphan(now=sim.now)
    sim.run_for(0.011)
    sim.vanish()
    sim.run(lambda: sim.a.is_finished, what="a finished")


@scenario("time_wait_reack", cfg=FIXED.replace(msl_s=1.5))
def _time_wait_reack(sim: Sim) -> None:
    """The closer's final ACK is lost: the peer's FIN comes again and TIME_WAIT answers it
    and restarts 2 MSL."""
    final_ack = ISN["b"] + 2
    sim.paths["a"].drop = drop_nth(lambda p: p.flags == ACK and p.ack == final_ack, 0)
    close(sim, "a")


@scenario("time_wait_strays_and_shorten", cfg=FIXED)
def _time_wait_strays(sim: Sim) -> None:
    """In TIME_WAIT: a retransmitted FIN (re-ACKed), a bare ACK, an RST and a SYN (dropped);
    then shorten_time_wait cuts the wait."""
    transfer(sim, 0, 5)
    sim.a.close()
    sim.run(lambda: sim.a.state is S.FIN_WAIT_2, what="FIN_WAIT_2")
    sim.b.close()
    sim.run(lambda: sim.a.state is S.TIME_WAIT and sim.b.is_finished, what="TIME_WAIT")
    sim.run_for(0.3)
    fin_b = ISN["b"] + 1 + 5
    for flags, seq, ack in (
        (FIN | ACK, fin_b, ISN["a"] + 2),
        (ACK, fin_b + 1, ISN["a"] + 2),
        (RST, fin_b + 1, 0),
        (SYN, 9000, 0),
    ):
        sim.inject("a", encode(Packet(flags, CID["b"], CID["a"], seq, ack, 1000, b"")))
        sim.flush()
    sim.a.shorten_time_wait(now=sim.now)
    sim.run(sim.finished, what="both finished")


@scenario("last_ack_peer_vanished", cfg=FIXED)
def _last_ack(sim: Sim) -> None:
    """The client closes; the server writes and closes as the path dies: LAST_ACK gives up
    after fin_retries with data unacknowledged (TIMEOUT, RST); the half-closed client's
    keepalive gives up later (IDLE)."""
    sim.run(sim.established, what="established")
    sim.a.close()
    sim.run(lambda: sim.b.state is S.CLOSE_WAIT, what="CLOSE_WAIT")
    sim.b.send(payload(1, 5000))
    sim.vanish()
    sim.b.close()
    sim.run(sim.finished, what="both finished")


# -- the handshake


@scenario("syn_lost", cfg=FIXED)
def _syn_lost(sim: Sim) -> None:
    """The first two SYNs are lost: retransmitted on the backed-off timer."""
    sim.paths["a"].drop = drop_nth(lambda p: p.flags == SYN, 0, 1)
    bulk(20_000, 2000)(sim)


@scenario("synack_lost", cfg=FIXED)
def _synack_lost(sim: Sim) -> None:
    """The SYN-ACK is lost: the client's retransmitted SYN draws a new one."""
    sim.paths["b"].drop = drop_nth(lambda p: p.flags == SYN | ACK, 0)
    bulk(20_000, 2000)(sim)


@scenario("handshake_ack_lost_idle_client", cfg=FIXED)
def _hs_ack_lost(sim: Sim) -> None:
    """The client's handshake ACK is lost and it has nothing to send: it re-sends the ACK on
    its own timer; then the server talks first."""
    sim.paths["a"].drop = drop_nth(lambda p: p.flags == ACK and not p.payload, 0)
    sim.run(sim.established, what="established")
    sim.b.send(payload(1, 3000))
    sim.run(lambda: len(sim.received["a"]) == 3000, what="delivered")
    close(sim, "b")


@scenario("handshake_ack_lost_keepalive_confirms", cfg=BASE.replace(pmtud=False))
def _hs_keepalive(sim: Sim) -> None:
    """The first SYN and every bare ACK of the client before t=20 s are lost (its handshake
    ACK and re-sends): the server takes the client's first keepalive probe as the handshake's
    ACK; both stay up, then close."""

    def drop(index: int, p: Packet) -> bool:
        if index == 0:
            return p.flags == SYN
        return p.flags == ACK and not p.payload and sim.now < 20

    sim.paths["a"].drop = drop
    sim.run(sim.established, what="established")
    sim.run_for(40.0)
    close(sim, "a")


@scenario("syn_retries_exhausted", cfg=FIXED.replace(syn_retries=3))
def _syn_retries(sim: Sim) -> None:
    """Every SYN is lost: after syn_retries the connect fails (TIMEOUT); the server listens on."""
    sim.paths["a"].blackholes.append(NEVER)
    sim.run(lambda: sim.a.is_finished, what="a finished")


@scenario("connect_refused", cfg=FIXED)
def _refused(sim: Sim) -> None:
    """Nobody listens: the host answers the SYN with RST (REFUSED)."""
    sim.kill("b")
    sim.run(lambda: sim.a.is_finished, what="a finished")


@scenario("simultaneous_open", cfg=FIXED, start="simultaneous")
def _simultaneous_open(sim: Sim) -> None:
    """Both sides connect at once: SYN_SENT -> SYN_RECEIVED on both, then data both ways."""
    bulk(10_000, 10_000)(sim)


# -- ICMP and forged segments


@scenario("icmp_unreachable_established", cfg=FIXED)
def _icmp_est(sim: Sim) -> None:
    """A quiet connection: a forged port unreachable (sequence number out of range) is
    ignored; two genuine ones at one instant start the count, and the probe sent to confirm
    them meets another an RTO later: UNREACHABLE.  The server's later probes draw RSTs."""
    transfer(sim, 4, 0)
    sim.run_for(0.5)
    snd_max = ISN["a"] + 1 + 4
    for seq in (snd_max + 1000, snd_max, snd_max - 1):
        sim.unreachable("a", Packet(ACK, CID["a"], CID["b"], seq, ISN["b"] + 1, 1000, b""))
    n = len(sim.wire)
    sim.run(lambda: len(sim.wire) > n, what="a probes")
    probe = sim.sent("a")[-1]
    sim.run_for(0.005)  # the ICMP error's way back
    sim.unreachable("a", probe)
    sim.run(lambda: sim.a.is_finished, what="a finished")
    sim.run(sim.finished, what="b finished")


@scenario("icmp_confirm_due_with_keepalive", cfg=FIXED)
def _icmp_keepalive(sim: Sim) -> None:
    """Recorded as it is: a port unreachable (a passing fault) arrives 15 s into a quiet
    connection, just before the keepalive deadline; the confirming probe re-arms keepalive at
    a deadline already past, so the timer fires twice at one instant and two identical probes
    leave.  The peer answers; then an orderly close."""
    transfer(sim, 4, 0)
    sim.run(lambda: len(sim.sent("b")) > 2, what="b's keepalive probe")
    sim.run_for(0.01)
    sim.unreachable("a", sim.sent("a")[-1])
    n = len(sim.wire)
    sim.run(lambda: len(sim.wire) > n, what="a probes")
    sim.run_for(0.5)
    close(sim, "a")


@scenario("icmp_error_with_the_probe", cfg=FIXED)
def _icmp_same_instant(sim: Sim) -> None:
    """Recorded as it is: the error answering the confirming probe arrives at the instant the
    probe leaves, exactly rto_min_s after the first; the difference rounds below rto_min_s,
    so it counts as the same round and the connection stays up until keepalive ends it."""
    transfer(sim, 4, 0)
    sim.run_for(0.5)
    sim.unreachable("a", Packet(ACK, CID["a"], CID["b"], ISN["a"] + 5, ISN["b"] + 1, 1000, b""))
    n = len(sim.wire)
    sim.run(lambda: len(sim.wire) > n, what="a probes")
    sim.unreachable("a", sim.sent("a")[-1])
    sim.run_for(1.0)
    sim.a.abort()
    sim.run(sim.finished, what="both finished")


@scenario("icmp_syn_refused", cfg=FIXED)
def _icmp_syn(sim: Sim) -> None:
    """The SYN draws a port unreachable: the connect is refused at once."""
    sim.paths["a"].blackholes.append(NEVER)
    sim.flush()
    sim.unreachable("a", sim.sent("a")[0])
    sim.run(lambda: sim.a.is_finished, what="a finished")


@scenario("icmp_last_ack", cfg=FIXED)
def _icmp_last_ack(sim: Sim) -> None:
    """LAST_ACK with the client gone: the FIN and its retransmission draw port unreachables;
    every byte was acknowledged, so the close counts as orderly."""
    sim.run(sim.established, what="established")
    sim.a.close()
    sim.run(lambda: sim.b.state is S.CLOSE_WAIT, what="CLOSE_WAIT")
    sim.b.send(b"bye")
    sim.run(lambda: sim.b.send_buffer_size == 0, what="acked")
    sim.paths["b"].blackholes.append(NEVER)
    sim.b.close()
    sim.flush()
    first = sim.sent("b", lambda p: bool(p.flags & FIN))[-1]
    sim.unreachable("b", first)
    t1 = sim.now
    sim.run(
        lambda: sim.now >= t1 + 0.2 and len(sim.sent("b", lambda p: bool(p.flags & FIN))) > 1,
        what="FIN again",
    )
    sim.unreachable("b", sim.sent("b", lambda p: bool(p.flags & FIN))[-1])
    sim.run(sim.finished, what="both finished")


@scenario("forged_segments", cfg=FIXED)
def _forged(sim: Sim) -> None:
    """Mid-transfer the client gets a corrupted datagram, one for another connection, an RST
    and a SYN inside the window (challenge ACKs, the second rate-limited), an old ACK and
    garbage; the transfer finishes untouched."""
    sim.run(sim.established, what="established")
    sim.a.send(payload(1, 60_000))
    sim.b.send(payload(2, 60_000))
    sim.run_for(0.05)
    last = sim.sent("b", is_data)[-1]
    good = encode(last)
    bad = bytearray(good)
    bad[-1] ^= 0x40
    sim.inject("a", bytes(bad))
    stray = decode(good)
    stray.dst_cid = 0x77
    sim.inject("a", encode(stray))
    in_window = (last.seq + 5000) & 0xFFFFFFFF
    sim.inject("a", encode(Packet(RST, CID["b"], CID["a"], in_window, 0, 0, b"")))
    sim.inject("a", encode(Packet(SYN, CID["b"], CID["a"], in_window, 0, 1000, b"")))
    sim.flush()
    sim.run_for(0.6)
    in_window = ISN["b"] + 1 + len(sim.received["a"]) + 100
    beyond = ISN["a"] + 10_000_000  # acknowledges data never sent
    sim.inject("a", encode(Packet(ACK, CID["b"], CID["a"], in_window, beyond, 1000, b"")))
    sim.inject("a", encode(Packet(RST, CID["b"], CID["a"], in_window, 0, 0, b"")))
    sim.inject("a", encode(Packet(ACK, CID["b"], CID["a"], ISN["b"], ISN["a"] + 1, 10, b"")))
    sim.inject("a", b"\x00garbage")
    sim.inject("a", encode(Packet(0, CID["b"], CID["a"], in_window, 0, 1000, b"no ack")))
    sim.run(
        lambda: len(sim.received["a"]) == 60_000 and len(sim.received["b"]) == 60_000,
        what="delivered",
    )
    close(sim, "a")


@scenario("peer_rst_exact", cfg=FIXED)
def _rst_exact(sim: Sim) -> None:
    """An RST at exactly RCV.NXT resets the connection (RESET); the peer never learns."""
    transfer(sim, 1000, 1000)
    rcv_nxt = ISN["b"] + 1 + 1000
    sim.inject("a", encode(Packet(RST, CID["b"], CID["a"], rcv_nxt, 0, 0, b"")))
    sim.run(lambda: sim.a.is_finished, what="a finished")
    sim.b.abort()
    sim.run()


@scenario("handshake_strays", cfg=FIXED)
def _handshake_strays(sim: Sim) -> None:
    """Strays during the handshake (the first SYN is lost, so it lasts a second): at the
    listening server a bare ACK and a SYN-ACK (answered with RST) and an RST (dropped); at the
    connecting client a SYN-ACK acknowledging the wrong number (RST), a bare RST and a plain
    ACK (dropped).  Then the handshake completes and data flows."""
    sim.paths["a"].drop = drop_nth(lambda p: p.flags == SYN, 0)
    sim.flush()
    other = 0x99
    for flags in (ACK, RST, SYN | ACK):
        sim.inject("b", encode(Packet(flags, other, CID["b"], 777, 888, 1000, b"")))
    for flags, ack in ((SYN | ACK, ISN["a"] + 7), (RST, 0), (ACK, ISN["a"] + 1)):
        sim.inject("a", encode(Packet(flags, CID["b"], CID["a"], ISN["b"], ack, 1000, b"")))
    bulk(10_000, 1000)(sim)


@scenario("syn_without_options", cfg=FIXED, start="listen")
def _syn_plain(sim: Sim) -> None:
    """A SYN without options reaches the server (MSS 536, no window scaling, no SACK); the
    client, never opened, answers the SYN-ACK with RST and the server ends RESET."""
    sim.inject("b", encode(Packet(SYN, CID["a"], 0, 4242, 0, 8192, b"")))
    sim.run(lambda: sim.b.is_finished, what="b finished")


@scenario(
    "zero_window_gives_up",
    cfg_a=FIXED.replace(max_retransmits=3),
    cfg_b=FIXED.replace(recv_buffer_bytes=16384),
)
def _zero_window_timeout(sim: Sim) -> None:
    """The reader's window is closed (paused) when the path dies: after max_retransmits
    unanswered window probes the writer gives up (TIMEOUT); the reader ends IDLE."""
    sim.run(sim.established, what="established")
    sim.b.pause_reading()
    sim.a.send(payload(1, 60_000))
    sim.run(lambda: sim.a.stats.send_window_bytes == 0, what="window closed")
    sim.run_for(0.5)
    sim.vanish()
    sim.run(sim.finished, what="both finished")


@scenario("close_in_syn_sent", cfg=FIXED)
def _close_syn_sent(sim: Sim) -> None:
    """The client closes before the SYN-ACK arrives: CLOSED at once; the SYN-ACK meets the
    closed connection, which answers RST, and the half-open server ends RESET."""
    sim.run_for(0.005)
    sim.a.close()
    sim.run(sim.finished, what="both finished")


@scenario("close_in_syn_received", cfg=FIXED)
def _close_syn_received(sim: Sim) -> None:
    """The server closes in SYN_RECEIVED: its FIN waits for the handshake to complete (then
    FIN_WAIT_1 at once); the client's data still arrives."""
    sim.run(lambda: sim.b.state is S.SYN_RECEIVED, what="SYN_RECEIVED")
    sim.b.close()
    sim.run(lambda: sim.a.state is S.ESTABLISHED, what="a established")
    sim.a.send(payload(1, 5000))
    sim.run(lambda: sim.eof["a"] and len(sim.received["b"]) == 5000, what="delivered")
    sim.a.close()
    sim.run(sim.finished, what="both finished")


@scenario("orphan_after_half_close", cfg=BASE.replace(pmtud=False, fin_wait_2_timeout_s=5.0))
def _orphan_late(sim: Sim) -> None:
    """Half-closed (FIN_WAIT_2) for 3 s, then orphaned: the FIN_WAIT_2 limit starts there and
    5 s later the orphan resets."""
    transfer(sim, 100, 100)
    sim.a.close()
    sim.run(lambda: sim.a.state is S.FIN_WAIT_2, what="FIN_WAIT_2")
    sim.run_for(3.0)
    sim.a.orphan(now=sim.now)
    sim.run(sim.finished, what="both finished")


@scenario("time_wait_abort", cfg=FIXED)
def _time_wait_abort(sim: Sim) -> None:
    """abort() in TIME_WAIT only cuts the wait short: nothing sent, nothing reported again."""
    transfer(sim, 1000, 1000)
    sim.a.close()
    sim.run(lambda: sim.eof["b"], what="b sees EOF")
    sim.b.close()
    sim.run(lambda: sim.a.state is S.TIME_WAIT and sim.b.is_finished, what="TIME_WAIT")
    sim.run_for(1.0)
    sim.a.abort()
    sim.run(what="idle")


@scenario("last_ack_peer_vanished_all_acked", cfg=FIXED)
def _last_ack_acked(sim: Sim) -> None:
    """As last_ack_peer_vanished with the data acknowledged first: only the FIN's ACK is
    missing, so after fin_retries the close counts as orderly; the half-closed client's
    keepalive gives up later (IDLE)."""
    sim.run(sim.established, what="established")
    sim.a.close()
    sim.run(lambda: sim.b.state is S.CLOSE_WAIT, what="CLOSE_WAIT")
    sim.b.send(payload(1, 5000))
    sim.run(lambda: sim.b.send_buffer_size == 0, what="acked")
    sim.vanish()
    sim.b.close()
    sim.run(sim.finished, what="both finished")


@scenario("data_after_peer_fin", cfg=FIXED)
def _after_fin(sim: Sim) -> None:
    """In CLOSE_WAIT the client gets data past the server's FIN (forged) and a PMTU probe
    although PMTUD was not negotiated: the first draws an ACK, the second is ignored."""
    transfer(sim, 2000, 2000)
    sim.b.close()
    sim.run(lambda: sim.a.state is S.CLOSE_WAIT, what="CLOSE_WAIT")
    sim.run_for(0.2)
    past_fin = ISN["b"] + 1 + 2000 + 1
    sim.inject("a", encode(Packet(ACK, CID["b"], CID["a"], past_fin, ISN["a"] + 2001, 1000, b"x")))
    probe = Packet(ACK, CID["b"], CID["a"], past_fin, ISN["a"] + 2001, 1000, b"", probe=7)
    probe.padding = 200
    sim.inject("a", encode(probe))
    sim.run_for(0.1)
    sim.a.close()
    sim.run(sim.finished, what="both finished")
