"""netfront <-> netback in the deterministic in-process world: handshake, traffic, teardown, hostile peers."""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xennet.abi import netif
from xennet.abi.ring import REQ_PROD
from xennet.netback.interface import Vif
from xennet.netfront.device import Netfront, NetfrontConfig
from xennet.world.local import LocalWorld
from xennet.xenbus.states import XenbusState as S
from xennet.xenbus.toolstack import VifSpec

ZERO = (0, 0, 0, 0)


held = LocalWorld.held  # (pages, grants, maps, ports) each domain holds now


def frames(n: int, size: int = 200) -> list[bytes]:
    return [bytes([i % 251]) * 14 + i.to_bytes(4, "big") * ((size - 14) // 4) for i in range(n)]


def test_handshake_walks_the_states_and_writes_the_xen_keys(world: LocalWorld) -> None:
    front = world.attach(spec=VifSpec(mac="00:16:3e:aa:bb:cc", mtu=1500))
    vif = world.vif()
    assert front.dev.transitions == [S.Initialising, S.Initialised, S.Connected]
    assert vif.dev.transitions == [S.Initialising, S.InitWait, S.Connected]
    assert front.connected and vif.connected
    xs = world.toolstack
    fe, be = "/local/domain/1/device/vif/0", "/local/domain/0/backend/vif/1/0"
    assert xs.read_str(f"{fe}/backend") == be and xs.read_str(f"{be}/frontend") == fe
    assert xs.read_str(f"{fe}/backend-id") == "0" and xs.read_str(f"{be}/frontend-id") == "1"
    assert xs.read_str(f"{fe}/mac") == xs.read_str(f"{be}/mac") == "00:16:3e:aa:bb:cc"
    assert xs.read_str(f"{fe}/state") == "4" and xs.read_str(f"{be}/state") == "4"
    for key in ("tx-ring-ref", "rx-ring-ref", "event-channel-tx", "event-channel-rx"):
        assert xs.read_str(f"{fe}/{key}").isdigit()
    assert xs.read_str(f"{fe}/request-rx-copy") == "1"
    assert xs.read_str(f"{be}/feature-rx-copy") == "1"
    assert xs.read_str(f"{be}/feature-split-event-channels") == "1"
    # libxl's permissions: each side owns its directory, the other end may read it
    assert xs.get_perms(fe) == ["n1", "r0"]
    assert xs.get_perms(be) == ["n0", "r1"]
    assert xs.get_perms(f"{fe}/mtu") == ["n0", "r1"]
    # the guest cannot write the backend's directory
    with pytest.raises(Exception, match="EACCES"):
        world.clients[1].write(f"{be}/state", "6")


def test_single_event_channel_when_backend_offers_no_split(world: LocalWorld) -> None:
    front = world.attach(config=NetfrontConfig(split_event_channels=False))
    assert front.tx_port == front.rx_port
    assert world.toolstack.try_read("/local/domain/1/device/vif/0/event-channel-tx") is None
    assert world.send(frames(300)) == 300 and len(world.to_backend) == 300
    assert world.deliver(frames(300)) == 300 and len(world.to_guest[(1, 0)]) == 300


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(14, 4096), min_size=1, max_size=600))
def test_frames_cross_both_ways_byte_for_byte(world: LocalWorld, sizes: list[int]) -> None:
    if (1, 0) not in world.fronts:
        world.attach()
    world.to_backend.clear()
    world.to_guest.clear()
    out = [bytes((i * 7 + j) % 256 for j in range(n)) for i, n in enumerate(sizes)]
    assert world.send(out) == len(out)
    assert [f for _v, f in world.to_backend] == out
    assert world.deliver(out) == len(out)
    assert world.to_guest[(1, 0)] == out
    front, vif = world.fronts[(1, 0)], world.vif()
    assert front.tx is not None and front.tx.in_flight == 0
    assert not front.stats.tx_errors and not front.stats.rx_errors and not vif.stats.tx_errors


def test_disconnect_frees_everything_and_reconnect_works(world: LocalWorld) -> None:
    baseline = held(world)
    assert baseline == {0: ZERO, 1: ZERO}
    front = world.attach()
    assert held(world)[1] != ZERO and held(world)[0][2] == 2  # the backend maps both rings
    world.send(frames(500))
    front.close()
    world.pump()
    assert front.dev.state == S.Closed and world.vif().dev.state == S.Closed
    assert held(world) == baseline
    front.reconnect()
    world.pump()
    assert front.connected and world.vif().dev.transitions[-2:] == [S.InitWait, S.Connected]
    world.to_backend.clear()
    assert world.send(frames(50)) == 50 and len(world.to_backend) == 50
    world.detach()
    assert held(world) == baseline and not world.netback.vifs


def test_a_removed_vif_keeps_its_counters_in_the_report(world: LocalWorld) -> None:
    world.attach()
    name = world.vif().name
    world.send(frames(20))
    world.deliver(frames(7))
    world.detach()
    assert not world.netback.vifs
    (gone,) = world.netback.report().items()
    assert gone[0] == name and gone[1]["state"] == "Closed"
    stats = gone[1]["stats"]
    assert isinstance(stats, dict) and stats["tx_packets"] == 20 and stats["rx_packets"] == 7, stats


def test_ring_full_stops_the_queue_and_completions_restart_it(world: LocalWorld) -> None:
    front = world.attach()
    assert front.tx is not None
    n = front.tx.ring.nr_ents
    accepted = sum(front.send_frame(f) for f in frames(n + 10))
    # the ring takes n single-slot packets; the next waits in the backlog and stops the queue
    assert accepted == n + 1 and front.tx.stopped and front.stats.tx_queue_stopped == 1
    assert front.tx.ring.free_requests() == 0
    front.flush()
    world.pump()
    assert not front.tx.stopped and front.tx.in_flight == 0 and front.stats.tx_completed == n + 1


def test_guest_that_stops_reading_is_bounded(world: LocalWorld) -> None:
    world.attach(config=NetfrontConfig(rx_fill=8))
    vif = world.vif()
    assert vif.rx is not None
    vif.rx.max_queued_bytes = 64 * 1024
    big = [b"\xaa" * 4000] * 100
    queued = sum(vif.send_frame(f) for f in big)
    assert queued == 16  # 64 KiB of 4000-byte frames
    assert vif.stats.rx_dropped["queue_full"] == 100 - queued


# --- hostile or broken peers -----------------------------------------------------------


def _mute_frontend(world: LocalWorld, handle: int = 0) -> None:
    """Stop dispatching to the real netfront: the test plays a hostile one on its rings."""
    del world.fronts[(1, handle)]


def _second_vif_still_works(world: LocalWorld) -> None:
    world.attach(handle=1)
    world.to_backend.clear()
    assert world.send(frames(20), handle=1) == 20
    assert [v for v, _f in world.to_backend] == ["vif1.1"] * 20


def test_ring_overflow_disconnects_only_that_vif(world: LocalWorld, caplog: pytest.LogCaptureFixture) -> None:
    front = world.attach()
    assert front.tx is not None
    struct.pack_into("<I", front.tx.ring_page.view, REQ_PROD, 100_000)  # XSA-39: req_prod far ahead
    world.platforms[1].evtchn.notify(front.tx_port)
    with caplog.at_level(logging.ERROR):
        world.pump()
    vif = world.vif()
    assert vif.stats.fatal["ring_overflow"] == 1 and not vif.connected
    # one clear line at the backend: who, what, and that it disconnects
    lines = [r.getMessage() for r in caplog.records if "ahead" in r.getMessage()]
    assert len(lines) == 1 and "backend/vif/1/0: disconnecting domain 1" in lines[0], lines
    assert held(world)[0] == ZERO  # the backend let go of the rings and ports at once
    assert front.dev.state == S.Closed
    _second_vif_still_works(world)


def test_slot_crossing_the_page_is_fatal(world: LocalWorld) -> None:
    front = world.attach()
    assert front.tx is not None
    page = world.platforms[1].memory.alloc(0)
    ref = world.platforms[1].grants.grant_access(0, page.frame, readonly=True)
    front.tx.ring.put_request(ref, 4000, 0, 7, 200)  # offset + size > 4096
    front.tx.ring.push_requests()
    world.platforms[1].evtchn.notify(front.tx_port)
    world.pump()
    assert world.vif().stats.fatal["slot_crosses_page"] == 1
    assert world.platforms[1].grants.end_access(ref)
    world.platforms[1].memory.free(page)
    _second_vif_still_works(world)


def test_runt_and_revoked_grant_get_error_responses(world: LocalWorld) -> None:
    front = world.attach()
    assert front.tx is not None
    p1 = world.platforms[1]
    page = p1.memory.alloc(0)
    ref = p1.grants.grant_access(0, page.frame, readonly=True)
    assert p1.grants.end_access(ref)  # revoked before the backend copies it
    _mute_frontend(world)
    front.tx.ring.put_request(ref, 0, 0, 1, 100)
    front.tx.ring.put_request(ref, 0, 0, 2, 10)  # shorter than an Ethernet header
    front.tx.ring.push_requests()
    p1.evtchn.notify(front.tx_port)
    world.pump()
    vif = world.vif()
    assert vif.connected  # bad packets are answered, not fatal
    assert vif.stats.tx_errors["runt"] == 1
    assert any(k.startswith("grant_copy") for k in vif.stats.tx_errors)
    rsps = [front.tx.ring.get_response() for _ in range(front.tx.ring.unconsumed_responses())]
    assert {(r.id, r.status) for r in rsps} == {(1, netif.NETIF_RSP_ERROR), (2, netif.NETIF_RSP_ERROR)}
    p1.memory.free(page)


def _raw_tx(
    world: LocalWorld, slots: list[tuple[int, int, int]], flags0: int = 0, data: bytes = b""
) -> list[tuple[int, int]]:
    """Post raw tx slots (size, offset, id) on granted pages (the first holding ``data`` at its
    offset); return the backend's (id, status)."""
    front = world.fronts[(1, 0)]
    assert front.tx is not None
    _mute_frontend(world)
    p1 = world.platforms[1]
    pages = [p1.memory.alloc(0) for _ in slots]
    if data:
        pages[0].view[slots[0][1] : slots[0][1] + len(data)] = data
    refs = [p1.grants.grant_access(0, pg.frame, readonly=True) for pg in pages]
    for i, ((size, offset, req_id), ref) in enumerate(zip(slots, refs, strict=True)):
        flags = (flags0 if i == 0 else 0) | (netif.NETTXF_more_data if i < len(slots) - 1 else 0)
        front.tx.ring.put_request(ref, offset, flags, req_id, size)
    front.tx.ring.push_requests()
    p1.evtchn.notify(front.tx_port)
    world.pump()
    rsps = [front.tx.ring.get_response() for _ in range(front.tx.ring.unconsumed_responses())]
    for ref, pg in zip(refs, pages, strict=True):
        assert p1.grants.end_access(ref)
        p1.memory.free(pg)
    return [(r.id, r.status) for r in rsps]


def test_a_multislot_packet_is_assembled(world: LocalWorld) -> None:
    world.attach()
    got: list[bytes] = []
    world.on_backend_skb = lambda vif, skb: (got.append(skb.data()), skb.release())  # type: ignore[func-returns-value]
    rsps = _raw_tx(world, [(300, 10, 1), (100, 0, 2), (100, 4000 - 100, 3)])
    assert sorted(rsps) == [(1, 0), (2, 0), (3, 0)]
    assert len(got) == 1 and len(got[0]) == 300


def test_slots_larger_than_the_packet_get_error_responses(world: LocalWorld) -> None:
    world.attach()
    rsps = _raw_tx(world, [(100, 0, 10), (100, 0, 11), (100, 0, 12)])  # 200 bytes after a 100-byte total
    vif = world.vif()
    assert vif.connected and vif.stats.tx_errors["slots_bigger_than_packet"] == 1
    assert sorted(rsps) == [(i, netif.NETIF_RSP_ERROR) for i in (10, 11, 12)]


def test_zero_size_slots_are_answered_and_never_touched(world: LocalWorld) -> None:
    """XSA-448: every fragment of size 0."""
    world.attach()
    got: list[bytes] = []
    world.on_backend_skb = lambda vif, skb: (got.append(skb.data()), skb.release())  # type: ignore[func-returns-value]
    rsps = _raw_tx(world, [(60, 0, 1)] + [(0, 0, 2 + i) for i in range(10)])
    assert sorted(rsps) == [(i, 0) for i in range(1, 12)]
    assert len(got) == 1 and len(got[0]) == 60


def test_header_split_over_many_tiny_slots_is_pulled_whole(world: LocalWorld) -> None:
    """XSA-423/432: head + 17 slots, total at most 128 bytes: all of it ends up in the linear area."""
    world.attach()
    heads: list[int] = []
    world.on_backend_skb = lambda vif, skb: (heads.append(skb.head.length), skb.release())  # type: ignore[func-returns-value]
    rsps = _raw_tx(world, [(120, 0, 1)] + [(6, 0, 2 + i) for i in range(17)])
    assert sorted(rsps) == [(i, 0) for i in range(1, 19)]
    assert heads == [120]


@pytest.mark.parametrize(
    ("nslots", "outcome"),
    [(18, "okay"), (19, "okay"), (20, "error"), (21, "error"), (22, "disconnect")],
)
def test_slot_count_boundaries_are_linux_netbacks(world: LocalWorld, nslots: int, outcome: str) -> None:
    """Linux counts the slots after the first against 18 (drop) and fatal_skb_slots = 20
    (fatal), checking before it reads each: 19 slots are taken, 20-21 refused, 22 fatal."""
    world.attach()
    rsps = _raw_tx(world, [(nslots * 60, 0, 1)] + [(60, 0, 2 + i) for i in range(nslots - 1)])
    vif = world.vif()
    if outcome == "disconnect":
        assert not vif.connected and vif.stats.fatal["too_many_slots"] == 1
        assert rsps == [] and held(world)[0] == ZERO
        return
    assert vif.connected and not vif.stats.fatal
    status = netif.NETIF_RSP_OKAY if outcome == "okay" else netif.NETIF_RSP_ERROR
    assert sorted(rsps) == [(i, status) for i in range(1, nslots + 1)]
    assert vif.stats.tx_errors["too_many_slots"] == (outcome == "error")
    assert vif.stats.tx_packets == (outcome == "okay")


def test_endless_more_data_chain_is_fatal(world: LocalWorld) -> None:
    front = world.attach()
    assert front.tx is not None
    for i in range(25):
        front.tx.ring.put_request(8, 0, netif.NETTXF_more_data, i, 100)
    front.tx.ring.push_requests()
    world.platforms[1].evtchn.notify(front.tx_port)
    world.pump()
    assert world.vif().stats.fatal["too_many_slots"] == 1
    _second_vif_still_works(world)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("tx-ring-ref", "banana", "not a number"),
        ("tx-ring-ref", "99999999999", "outside"),
        ("tx-ring-ref", "4000", "map ref 4000"),  # a ref the guest never granted
        ("event-channel-tx", "1000", "port"),
        ("tx-ring-ref", "=rx-ring-ref", "same grant"),  # a peer's references must be distinct
        ("event-channel-tx", "=event-channel-rx", "same port"),
    ],
)
def test_garbage_frontend_keys_close_that_vif(
    world: LocalWorld, key: str, value: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    front = world.attach(start=False)
    original = front._connect

    def sabotaged() -> None:  # publish, then overwrite one key before the backend reads it
        original()
        node = "/local/domain/1/device/vif/0"
        xs = world.clients[1]
        xs.write(f"{node}/{key}", xs.read_str(f"{node}/{value[1:]}") if value.startswith("=") else value)

    front._connect = sabotaged  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        front.start()
        world.pump()
    vif = world.vif()
    assert not vif.connected and vif.stats.fatal["handshake"] == 1
    error = world.toolstack.read_str("/local/domain/0/backend/vif/1/0/error")
    assert why.lower() in error.lower() or why.lower() in caplog.text.lower()
    assert front.dev.state == S.Closed
    assert held(world)[0] == ZERO
    _second_vif_still_works(world)


def test_backend_without_rx_copy_is_refused_by_the_frontend(world: LocalWorld) -> None:
    front = world.attach(start=False)
    world.pump()  # the backend probes and advertises; then the toolstack takes rx-copy away
    vif = world.vif()
    world.toolstack.write(f"{vif.dev.nodename}/feature-rx-copy", "0")
    front.start()
    world.pump()
    assert front.broken and front.dev.state == S.Closed
    assert "rx-copy" in world.toolstack.read_str("/local/domain/1/device/vif/0/error")
    assert held(world)[1] == ZERO


def test_a_backend_that_fails_us_is_retried_once_per_state_change_not_forever(world: LocalWorld) -> None:
    """Our own state write is no news of the backend: a backend that stays in InitWait with
    keys we refuse gets one retry each time it writes its state, not a reconnect loop."""
    front = world.attach(start=False)
    world.pump()
    vif = world.vif()
    world.toolstack.write(f"{vif.dev.nodename}/feature-rx-copy", "0")
    front.start()
    world.pump(max_rounds=2000)
    assert front.broken and front.dev.state == S.Closed
    before = len(front.dev.transitions)
    for _ in range(3):  # the backend says InitWait again (a restart, or a hostile one)
        world.toolstack.write(f"{vif.dev.nodename}/state", str(int(S.InitWait)))
        world.pump(max_rounds=2000)  # raised "a livelock" before: our Closed re-read its InitWait
        assert front.broken and front.dev.state == S.Closed
    assert len(front.dev.transitions) - before <= 3 * 4  # one try each: Initialising, Closing, Closed
    assert held(world)[1] == ZERO


def test_spurious_events_are_counted_and_ignored(world: LocalWorld) -> None:
    front = world.attach()
    vif = world.vif()
    before = vif.stats.spurious_events
    vif.on_event(999)
    front.on_event(999)
    assert vif.stats.spurious_events == before + 1 and front.stats.spurious_events == 1
    assert world.send(frames(5)) == 5


def test_backend_responses_for_unknown_ids_break_the_frontend(world: LocalWorld) -> None:
    front = world.attach()
    vif = world.vif()
    assert vif.tx is not None and front.tx is not None
    assert world.send(frames(1)) == 1
    vif.tx.ring.put_response(200, 0)  # an id never issued
    vif.tx.ring.push_responses()
    world.platforms[0].evtchn.notify(vif.tx_port)
    world.pump()
    assert front.broken and front.dev.state == S.Closed
    assert held(world)[1] == ZERO


@pytest.mark.parametrize("posted", [0, 1])
def test_rx_stall_log_says_how_long_and_how_many_slots(
    world: LocalWorld, posted: int, caplog: pytest.LogCaptureFixture
) -> None:
    """XSA-392: the line names the time without progress (not "0 s" for a 0.2 s limit) and
    the slots posted against those the head packet needs (not "not posted" when some are)."""
    front = world.attach()
    assert front.rx is not None
    _mute_frontend(world)
    vif = world.vif()
    rx = vif.rx
    assert rx is not None
    now = [1000.0]
    rx.clock = lambda: now[0]
    rx.stall_timeout_s = 0.2
    while rx.ring.unconsumed_requests():  # the guest's posted buffers get used up
        assert vif.send_frame(frames(1, 1000)[0])
        vif.kick_rx()
    p1 = world.platforms[1]
    page = p1.memory.alloc(0)
    ref = p1.grants.grant_access(0, page.frame, readonly=False)
    for _ in range(front.rx.ring.unconsumed_responses()):
        front.rx.ring.get_response()  # room to post again
    for i in range(posted):  # fewer buffers than a two-slot packet needs
        front.rx.ring.put_request(500 + i, ref)
    front.rx.ring.push_requests()
    assert vif.send_frame(bytes(14) + bytes(range(256)) * 24)  # 6158 bytes: two rx slots
    vif.kick_rx()
    assert rx.queued == 1
    now[0] += 0.25
    with caplog.at_level(logging.ERROR, logger="xennet.netback.rx"):
        vif.kick_rx()
    lines = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(lines) == 1 and vif.stats.rx_stalls == 1
    want = "none are posted" if posted == 0 else "only 1 is posted"
    assert f"needs 2 rx slots and {want}" in lines[0], lines[0]
    assert "for 250 ms (limit 200 ms)" in lines[0], lines[0]
    assert p1.grants.end_access(ref)
    p1.memory.free(page)


@contextlib.contextmanager
def _tx_ring_world(batch_slots: int) -> Iterator[tuple[Netfront, Vif, int]]:
    """A connected vif with netback passes of ``batch_slots`` entries, its frontend muted (the
    test writes tx requests itself) and a read-only grant of a 100-byte frame for them; the
    grant must be ended cleanly afterwards."""
    from xennet.netback.interface import NetbackConfig
    from xennet.netback.tx import TxLimits

    config = NetbackConfig(tx_limits=TxLimits(batch_slots=batch_slots))
    with LocalWorld(backend_config=config) as world:
        world.attach()
        front, vif = world.fronts[(1, 0)], world.vif()
        _mute_frontend(world)
        p1 = world.platforms[1]
        page = p1.memory.alloc(0)
        page.view[:100] = bytes(14) + bytes(range(86))
        ref = p1.grants.grant_access(0, page.frame, readonly=True)
        yield front, vif, ref
        assert p1.grants.end_access(ref)
        p1.memory.free(page)


@pytest.mark.parametrize("batch_slots", [64, 256])
def test_a_pass_answers_the_packets_within_batch_slots_and_leaves_the_rest(batch_slots: int) -> None:
    """netback answers the packets that start within ``batch_slots`` ring entries, then takes
    the rest in a second pass: the frontend can refill while the rest is copied.  A packet
    across the line is taken whole; nothing is lost or answered twice."""
    with _tx_ring_world(batch_slots) as (front, vif, ref):
        assert front.tx is not None and vif.tx is not None
        more = netif.NETTXF_more_data
        # entries 0..61: one-slot packets; 62..65: a 4-slot packet across entry 64; 66..75: ten more
        slots = [(ref, 0, 0, i, 60) for i in range(62)]
        slots += [(ref, 0, more, 62, 400), (ref, 0, more, 63, 100), (ref, 0, more, 64, 100)]
        slots += [(ref, 0, 0, 65, 200)]
        slots += [(ref, 0, 0, i, 60) for i in range(66, 76)]
        for s in slots:
            front.tx.ring.put_request(*s)
        front.tx.ring.push_requests()
        passes = []
        while True:
            batch = vif.tx.process()
            passes.append((batch.vec.npkts, vif.tx.ring.req_cons))
            vif.tx.release(batch.vec)
            if not vif.tx.more():
                break
        assert passes == ([(63, 66), (10, 76)] if batch_slots == 64 else [(73, 76)])
        rsps = [front.tx.ring.get_response() for _ in range(front.tx.ring.unconsumed_responses())]
        assert sorted(r.id for r in rsps) == list(range(76))
        assert {r.status for r in rsps} == {netif.NETIF_RSP_OKAY}
        assert vif.stats.tx_packets == 73 and vif.stats.tx_slots == 76


@pytest.mark.parametrize("nslots", [3, 76])
def test_tx_answers_are_signalled_after_the_host_has_the_last_pass(
    nslots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that empties the ring goes to the sink (the host TAP) before the frontend is
    woken for its answers, so a lone packet is not queued behind that wake-up; a pass that
    leaves requests waiting signals first, so the frontend refills while the host writes."""
    with _tx_ring_world(64) as (front, vif, ref):
        assert front.tx is not None
        for i in range(nslots):
            front.tx.ring.put_request(ref, 0, 0, i, 60)
        front.tx.ring.push_requests()
        order: list[str] = []
        notify = vif.platform.evtchn.notify

        def recorded(port: int) -> None:
            order.append("notify")
            notify(port)

        monkeypatch.setattr(vif.platform.evtchn, "notify", recorded)
        vif.on_event(vif.tx_port, lambda batch: order.append(f"sink {batch.vec.npkts}"))
        # 76: the second pass needs no event (the frontend has not yet seen the first answers)
        assert order == (["sink 3", "notify"] if nslots == 3 else ["notify", "sink 64", "sink 12"])
        assert front.tx.ring.unconsumed_responses() == nslots
        assert vif.stats.tx_packets == nslots
