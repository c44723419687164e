"""pktgen's TCP stream past 4 GiB: sequence numbers wrap at 2**32, and a frame's seq must
still name its payload bytes (a soak of a few million packets crosses it)."""

from __future__ import annotations

import pytest

from xennet.packet import gso
from xennet.packet.skb import Csum, Piece
from xennet.platform.sim import SimWorld
from xennet.ports.pktgen import Generator, TrafficSpec, Verifier


@pytest.mark.parametrize("start", [2**32 - 100, 2**32, 3 * 2**32 + 7])
def test_tcp_frames_verify_across_the_sequence_wrap(start: int, tmp_path: object) -> None:
    world = SimWorld.create(root=str(tmp_path))
    try:
        world.create_domain(1, nr_frames=256)
        mem = world.platform(1).memory
        spec = TrafficSpec(mss=1448, seed=5)
        gen, ver = Generator(spec), Verifier(spec)
        gen.stream_offset = start  # as if 4 GiB had gone by already
        layout = (Piece(0, 1000, 0), Piece(10, 3000, 0))
        for _ in range(3):
            skb = gen.skb(layout, mem)
            assert ver.check(skb.data(), partial=skb.csum is Csum.PARTIAL), ver.errors
            for seg in gso.segment(skb, 1448, mem):  # what a segmenting policy sends
                assert ver.check(seg.data(), partial=seg.csum is Csum.PARTIAL), ver.errors
                seg.release(mem)
            skb.release(mem)
    finally:
        world.destroy()
