"""The send side of a connection (utcp/connection/send_side.py): positions, the send buffer,
the peer's window (SND.WND, WL1, WL2) and the mapping to 32-bit wire sequence numbers."""

from __future__ import annotations

from utcp.connection.send_side import SendSide
from utcp.packet import Flag, Packet

MSS = 1000


def _established(*, iss: int = 1000, data: bytes = b"") -> SendSide:
    """A send side whose SYN is acknowledged (positions una = nxt = max = 1), ``data``
    written."""
    snd = SendSide(iss=iss, mss=MSS)
    snd.una = snd.nxt = snd.max = 1
    if data:
        snd.buf.write(data)
    return snd


def _ack(window: int, *, flags: int = Flag.ACK) -> Packet:
    return Packet(flags, 1, 2, 0, 0, window)


def test_a_new_send_side_starts_at_the_syn_with_an_mss_sized_window() -> None:
    snd = SendSide(iss=77, mss=MSS)
    assert (snd.una, snd.nxt, snd.max) == (0, 0, 0)
    assert snd.buf.end == 1  # data byte 0 is position 1: position 0 is the SYN
    assert (snd.wnd, snd.max_wnd, snd.wl1, snd.wl2) == (MSS, 0, -1, -1)
    assert snd.fin_pos is None


def test_wire_seq_adds_the_iss_and_wraps_at_2_to_the_32() -> None:
    snd = SendSide(iss=0xFFFF_FFF0, mss=MSS)
    assert snd.wire_seq(0) == 0xFFFF_FFF0
    assert snd.wire_seq(0x0F) == 0xFFFF_FFFF
    assert snd.wire_seq(0x10) == 0
    assert snd.wire_seq(0x25) == 0x15


def test_position_inverts_wire_seq_near_una_across_the_wrap() -> None:
    """Wire numbers are read as signed distances from SND.UNA (RFC 1982 serial arithmetic), so
    numbers just behind una map below it and positions stay unbounded."""
    snd = SendSide(iss=0xFFFF_FF00, mss=MSS)
    snd.una = 0x200  # wire 0x100: past the wrap
    for pos in (0x200, 0x1F0, 0x300, 0x200 + (1 << 30)):
        assert snd.position(snd.wire_seq(pos)) == pos
    assert snd.position(0xFFFF_FF00) == 0  # the SYN, far behind una
    assert snd.position(0x0FF) == 0x1FF  # one before una


def test_data_len_excludes_the_fin_position() -> None:
    snd = _established(data=b"x" * 10)
    assert snd.data_len(1, 11) == 10
    snd.fin_pos = 11
    assert snd.data_len(1, 12) == 10  # [1, 12) holds ten bytes and the FIN
    assert snd.data_len(11, 12) == 0  # the FIN alone carries no byte
    assert snd.data_len(5, 8) == 3
    assert snd.data_len(8, 5) == 0


def test_has_unsent_covers_data_then_the_fin() -> None:
    snd = _established(data=b"x" * 10)
    assert snd.has_unsent
    snd.nxt = 11
    assert not snd.has_unsent
    snd.fin_pos = 11
    assert snd.has_unsent  # the FIN waits to be sent
    snd.nxt = 12
    assert not snd.has_unsent


def test_fin_acknowledged_only_once_una_passes_the_fin() -> None:
    snd = _established(data=b"x" * 10)
    assert not snd.fin_acknowledged
    snd.fin_pos = 11
    snd.nxt = snd.max = 12
    snd.acknowledge(11)  # every byte, not the FIN
    assert not snd.fin_acknowledged
    snd.acknowledge(12)
    assert snd.fin_acknowledged


def test_acknowledge_releases_the_bytes_before_the_ack_and_no_more() -> None:
    snd = _established(data=bytes(range(100)))
    snd.nxt = snd.max = 101
    snd.acknowledge(51)
    assert snd.una == 51
    assert len(snd.buf) == 50
    assert snd.buf.start == 51
    assert snd.buf.get(51, 53) == bytes([50, 51])
    snd.fin_pos = 101
    snd.nxt = snd.max = 102
    snd.acknowledge(102)  # the FIN's ACK reaches past the last byte held
    assert snd.una == 102
    assert len(snd.buf) == 0
    assert snd.buf.start == 101  # released up to the data's end, not beyond it


def test_window_closed_needs_both_a_full_window_and_something_waiting() -> None:
    """RFC 9293 section 3.8.6.1: the zero-window case the persist timer handles."""
    snd = _established(data=b"x" * 100)
    snd.wnd = 0
    assert snd.window_closed()
    snd.wnd = 40
    snd.nxt = snd.max = 41  # the window is used up by bytes in flight
    assert snd.window_closed()
    snd.wnd = 41
    assert not snd.window_closed()
    snd.wnd = 0
    snd.nxt = snd.max = 101  # everything sent: nothing waits for the window
    assert not snd.window_closed()
    snd.fin_pos = 101
    assert snd.window_closed()  # the FIN needs room too


def test_update_window_takes_a_newer_segment_and_records_wl1_wl2() -> None:
    """RFC 9293 section 3.10.7.4: update when SND.WL1 < SEG.SEQ, or SND.WL1 = SEG.SEQ and
    SND.WL2 <= SEG.ACK."""
    snd = _established()
    snd.update_window(_ack(5000), 10, 1, False)
    assert (snd.wnd, snd.wl1, snd.wl2) == (5000, 10, 1)
    snd.update_window(_ack(6000), 10, 1, False)  # same segment position and ACK: taken
    assert snd.wnd == 6000
    snd.update_window(_ack(7000), 10, 5, False)  # same position, newer ACK: taken
    assert (snd.wnd, snd.wl2) == (7000, 5)
    snd.update_window(_ack(8000), 11, 2, False)  # newer segment, older ACK: taken (WL1 decides)
    assert (snd.wnd, snd.wl1, snd.wl2) == (8000, 11, 2)


def test_update_window_ignores_an_older_segment() -> None:
    """RFC 9293 section 3.10.7.4: a reordered old segment must not shrink (or grow) the
    window a newer one set."""
    snd = _established()
    snd.update_window(_ack(5000), 10, 5, False)
    assert not snd.update_window(_ack(100), 9, 9, False)  # older segment
    assert not snd.update_window(_ack(100), 10, 4, False)  # same segment, older ACK
    assert (snd.wnd, snd.wl1, snd.wl2) == (5000, 10, 5)


def test_the_window_field_is_scaled_except_on_a_syn() -> None:
    """RFC 7323 section 2.2: the window field of a SYN is never scaled; later ones are
    shifted left by the peer's announced scale."""
    snd = _established()
    snd.wscale = 3
    snd.update_window(_ack(1000, flags=Flag.SYN | Flag.ACK), 0, 1, syn=True)
    assert snd.wnd == 1000
    snd.update_window(_ack(1000), 1, 1, syn=False)
    assert snd.wnd == 8000


def test_max_wnd_is_the_largest_window_ever_offered() -> None:
    snd = _established()
    for window, expected in ((3000, 3000), (9000, 9000), (200, 9000), (0, 9000)):
        snd.update_window(_ack(window), snd.wl1 + 1, 1, False)
        assert snd.wnd == window
        assert snd.max_wnd == expected


def test_a_reopened_zero_window_is_reported_and_resets_the_probe_backoff() -> None:
    """RFC 9293 section 3.8.6.1: window probing stops once the window opens."""
    snd = _established(data=b"x" * 10)
    snd.update_window(_ack(0), 1, 1, False)
    snd.persist_backoff = 4
    assert not snd.update_window(_ack(0), 2, 1, False)  # still closed
    assert snd.persist_backoff == 4
    assert snd.update_window(_ack(500), 3, 1, False)
    assert snd.persist_backoff == 0
    assert not snd.update_window(_ack(900), 4, 1, False)  # growing an open window is no news
