"""Seed 003: a frame bridged from guest A to guest B is grant-copied from A's grant into B's
buffer directly; nothing of it is staged in backend memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xennet.netback.interface import NetbackConfig, Vif
from xennet.netback.tx import TxLimits
from xennet.packet.skb import Skb
from xennet.ports.bridge import LearningBridge, VifPort
from xennet.ports.pktgen import Generator, TrafficSpec, Verifier, preset_layouts
from xennet.world.local import LocalWorld
from xennet.xenbus.toolstack import VifSpec

MAC_A, MAC_B = "00:16:3e:00:00:0a", "00:16:3e:00:00:0b"


def bridged_world(data: str, stall_s: float = 10.0) -> LocalWorld:
    w = LocalWorld(
        nr_frames=8192,
        guest_domids=(1, 2),
        backend_config=NetbackConfig(
            tx_limits=TxLimits(data=data),  # type: ignore[arg-type]
            rx_stall_timeout_s=stall_s,
        ),
    )
    bridge = LearningBridge()
    w.attach(domid=1, spec=VifSpec(mac=MAC_A))
    w.attach(domid=2, spec=VifSpec(mac=MAC_B))
    for vif in w.netback.vifs.values():
        bridge.attach(VifPort(vif))

    def to_bridge(vif: Vif, skb: Skb) -> None:
        bridge.input(vif.name, skb)

    w.on_backend_skb = to_bridge
    w.bridge = bridge  # type: ignore[attr-defined]
    return w


@pytest.fixture(params=["map", "copy"])
def world(request: pytest.FixtureRequest) -> Iterator[LocalWorld]:
    w = bridged_world(request.param)
    try:
        yield w
    finally:
        w.close()


def _send(w: LocalWorld, domid: int, spec: TrafficSpec, n: int) -> int:
    front = w.fronts[(domid, 0)]
    gen = Generator(spec)
    total = 0
    for layout in preset_layouts("random", n, 5):
        skb = gen.skb(layout, w.platforms[domid].memory)
        total += skb.len
        while not front.send(skb):
            front.flush()
            if not w.pump():
                skb.release()  # nothing moves: the receiver has stopped (the test wants that)
                return total
        front.flush()
        w.pump()
    w.pump()
    return total


def test_a_to_b_by_grant_copy(world: LocalWorld) -> None:
    mode = world.backend_config.tx_limits.data
    # B speaks first so the bridge learns where B is; A's frames are then unicast to B
    back = TrafficSpec(src_mac=MAC_B, dst_mac=MAC_A, seed=9)
    _send(world, 2, back, 3)
    world.to_guest.clear()
    vif_b = world.vif(domid=2)
    staged0, fwd0 = vif_b.stats.rx_bytes_staged, vif_b.stats.rx_bytes_forwarded
    spec = TrafficSpec(src_mac=MAC_A, dst_mac=MAC_B, seed=3, mss=1448)
    total = _send(world, 1, spec, 40)
    got = world.to_guest.get((2, 0), [])
    assert len(got) == 40
    v = Verifier(spec)
    for frame in got:
        assert v.check(frame, partial=True), v.errors
    assert v.tcp_stream_complete(sum(len(f) for f in got) - 40 * Generator(spec).header_len)
    staged = vif_b.stats.rx_bytes_staged - staged0
    forwarded = vif_b.stats.rx_bytes_forwarded - fwd0
    if mode == "map":
        assert staged == 0, "bytes of A's frames went through backend memory"
        assert forwarded == total
    else:
        assert staged == total and forwarded == 0  # the copying backend is the contrast
    # A's slots are answered only once B has its copy: nothing of A's is still mapped
    assert world.vif(domid=1).tx is not None and world.vif(domid=1).tx.outstanding == 0
    assert world.sim.accounting(0).maps == 4  # just the two vifs' rings
    assert world.bridge.stats.forwarded >= 40  # type: ignore[attr-defined]


def test_teardown_of_the_sender_while_its_frames_wait_for_the_receiver(world: LocalWorld) -> None:
    front_b = world.fronts[(2, 0)]
    assert front_b.rx is not None
    _send(world, 2, TrafficSpec(src_mac=MAC_B, dst_mac=MAC_A), 2)
    # B stops posting buffers: frames from A queue up in the backend, holding A's grants (map mode)
    frozen = world.loops.pop(2)
    spec = TrafficSpec(src_mac=MAC_A, dst_mac=MAC_B, seed=4)
    _send(world, 1, spec, 300)
    assert world.vif(domid=2).rx is not None and world.vif(domid=2).rx.queued > 0
    world.detach(domid=1)  # A goes away with frames still queued toward B
    world.loops[2] = frozen  # B runs again, and goes away too
    world.detach(domid=2)
    for domid in (0, 1, 2):
        a = world.sim.accounting(domid)
        assert (a.pages, a.grants, a.maps, a.ports) == (0, 0, 0, 0), f"domain {domid}: {a}"


def test_a_stalled_receiver_is_cut_loose_and_the_sender_gets_its_grants_back() -> None:
    """XSA-392: B stops posting buffers; after the timeout its queue is dropped, carrier goes
    off, and A's mapped frames are released (answered) instead of pinned forever."""
    import time

    w = bridged_world("map", stall_s=0.2)
    try:
        _send(w, 2, TrafficSpec(src_mac=MAC_B, dst_mac=MAC_A), 2)
        w.loops.pop(2)  # B's domain stops running
        _send(w, 1, TrafficSpec(src_mac=MAC_A, dst_mac=MAC_B, seed=4), 600)
        vif_a, vif_b = w.vif(domid=1), w.vif(domid=2)
        assert vif_a.tx is not None and vif_a.tx.outstanding > 0  # A's grants pinned by B's queue
        time.sleep(0.3)
        vif_b.kick_rx()
        w.pump()
        assert vif_b.stats.rx_stalls == 1 and vif_b.rx is not None and not vif_b.rx.carrier
        assert vif_b.stats.rx_dropped["stalled"] > 0
        assert vif_a.tx.outstanding == 0  # everything A sent has been answered
        assert _send(w, 1, TrafficSpec(src_mac=MAC_A, dst_mac=MAC_B, seed=5), 5) > 0  # A is not stuck
        assert vif_b.stats.rx_dropped["carrier_off"] > 0
    finally:
        w.close()
