"""A backend that writes raw rx responses (XSA.md, frontend side): netfront rejects the
packet and counts it, or marks the device broken when the response stream is impossible."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from xennet.abi import netif
from xennet.core.records import MAX_PACKET
from xennet.netfront.device import NetfrontConfig
from xennet.packet.pool import Revoke
from xennet.packet.skb import Skb
from xennet.world.local import LocalWorld
from xennet.xenbus.states import XenbusState as S


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        w.attach()
        yield w


def respond(w: LocalWorld, rsps: list[tuple[int, int, int] | bytes], consume: int | None = None) -> None:
    """Take rx requests and answer with raw (offset, flags, status) responses or extra-info bytes."""
    vif = w.vif()
    assert vif.rx is not None
    ring = vif.rx.ring
    reqs = [ring.get_request() for _ in range(consume if consume is not None else len(rsps))]
    for i, r in enumerate(rsps):
        if isinstance(r, bytes):
            ring.put_response_bytes(r)
        else:
            offset, flags, status = r
            ring.put_response(reqs[i].id if i < len(reqs) else 999, offset, flags, status)
    ring.push_responses()
    w.platforms[0].evtchn.notify(vif.rx_port)
    w.pump()


def errors(w: LocalWorld) -> dict[str, int]:
    return dict(w.fronts[(1, 0)].stats.rx_errors)


def still_works(w: LocalWorld) -> None:
    w.to_guest.clear()
    assert w.deliver([b"\x01" * 100] * 3) == 3
    assert w.to_guest[(1, 0)] == [b"\x01" * 100] * 3


def test_offset_plus_size_past_the_page(world: LocalWorld) -> None:
    respond(world, [(4000, 0, 200)])
    assert errors(world) == {"offset_size_past_page": 1}
    still_works(world)


def test_more_than_18_slots(world: LocalWorld) -> None:
    more = netif.NETRXF_more_data
    respond(world, [(0, more, 1000)] + [(0, more, 100)] * 18 + [(0, 0, 100)])
    assert errors(world) == {"too_many_slots": 1}
    still_works(world)


def test_19_slots_are_fine_when_the_first_is_small(world: LocalWorld) -> None:
    more = netif.NETRXF_more_data
    respond(world, [(0, more, 200)] + [(0, more, 100)] * 17 + [(0, 0, 100)])
    assert errors(world) == {} and len(world.to_guest[(1, 0)]) == 1


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (bytes([9, 0, 0, 0, 0, 0, 0, 0]), "bad_extra_type"),
        (netif.gso_extra(0, netif.XEN_NETIF_GSO_TYPE_TCPV4), "gso_size_zero"),
        (netif.gso_extra(1448, 7), "bad_gso_type"),
    ],
)
def test_bad_extra_info(world: LocalWorld, extra: bytes, reason: str) -> None:
    respond(world, [(0, netif.NETRXF_extra_info, 100), extra])
    assert errors(world) == {reason: 1}
    still_works(world)


def test_a_gso_packet_gso_cannot_cut_is_dropped(world: LocalWorld) -> None:
    """A backend's GSO packet must be TCP with lengths that agree, as a guest's must be at
    netback: the buffer here holds no TCP/IP at all, so no port ever meets it."""
    respond(world, [(0, netif.NETRXF_extra_info, 100), netif.gso_extra(1448, netif.XEN_NETIF_GSO_TYPE_TCPV4)])
    assert errors(world) == {"bad_gso_headers": 1}
    front = world.fronts[(1, 0)]
    assert front.stats.rx_packets == 0 and front.stats.rx_gso_packets == 0
    assert world.to_guest.get((1, 0), []) == []
    still_works(world)


def test_negative_status_drops_the_packet(world: LocalWorld) -> None:
    respond(world, [(0, 0, netif.NETIF_RSP_ERROR)])
    assert errors(world) == {"backend_error": 1}
    still_works(world)


def test_an_id_never_issued_breaks_the_device(world: LocalWorld) -> None:
    vif = world.vif()
    assert vif.rx is not None
    req = vif.rx.ring.get_request()
    vif.rx.ring.put_response((req.id + 5) % 256, 0, 0, 60)
    vif.rx.ring.push_responses()
    world.platforms[0].evtchn.notify(vif.rx_port)
    world.pump()
    front = world.fronts[(1, 0)]
    assert front.broken and front.dev.state == S.Closed
    a = world.sim.accounting(1)
    assert (a.pages, a.grants, a.maps, a.ports) == (0, 0, 0, 0)


def test_more_responses_than_requests_breaks_the_device(world: LocalWorld) -> None:
    vif = world.vif()
    assert vif.rx is not None
    ring = vif.rx.ring
    ring.rsp_prod_pvt = (ring.rsp_prod_pvt + 300) & 0xFFFFFFFF  # claims 300 responses for 256 buffers
    ring.push_responses()
    world.platforms[0].evtchn.notify(vif.rx_port)
    world.pump()
    front = world.fronts[(1, 0)]
    assert front.broken and "responses" in (
        world.toolstack.try_read("/local/domain/1/device/vif/0/error") or ""
    )


# --- grants the backend keeps mapped, faults mid-poll, forced detach, restarts ---------------


def held(w: LocalWorld) -> tuple[int, int, int, int]:
    return w.held()[1]  # the guest's


ZERO = (0, 0, 0, 0)


def answer(
    w: LocalWorld, rsps: list[tuple[int, int, int] | bytes], mapped: tuple[int, ...] = ()
) -> list[object]:
    """Like ``respond``, but the backend maps the grants of the requests at ``mapped`` first
    and keeps them mapped (XSA-396).  Returns the mappings."""
    vif = w.vif()
    assert vif.rx is not None
    ring = vif.rx.ring
    reqs = [ring.get_request() for _ in rsps]
    maps = [w.platforms[0].mapper.map(1, [reqs[i].gref], True) for i in mapped]
    for req, rsp in zip(reqs, rsps, strict=True):
        if isinstance(rsp, bytes):
            ring.put_response_bytes(rsp)
        else:
            ring.put_response(req.id, *rsp)
    ring.push_responses()
    w.platforms[0].evtchn.notify(vif.rx_port)
    w.pump()
    return maps


@pytest.mark.parametrize(
    ("rsps", "mapped"),
    [
        ([(0, 0, 100)], (0,)),  # a data slot
        ([(0, netif.NETRXF_more_data, 100), (0, 0, 100)], (1,)),
        ([(0, netif.NETRXF_extra_info, 100), netif.gso_extra(1448, netif.XEN_NETIF_GSO_TYPE_TCPV4)], (1,)),
    ],
    ids=["data", "second-data", "extra-info"],
)
def test_a_grant_the_backend_keeps_is_counted_once_and_revoked_once(
    rsps: list[tuple[int, int, int] | bytes], mapped: tuple[int, ...]
) -> None:
    with LocalWorld() as w:
        front = w.attach(config=NetfrontConfig(grants="per-packet"))
        maps = answer(w, rsps, mapped)
        assert errors(w) == {"backend_kept_mapping": 1}
        assert front.stats.rx_slots_dropped == len(rsps)
        front.retry_revoke()
        assert front.pending_revoke == 1  # the page waits; it is not posted again
        for m in maps:
            w.platforms[0].mapper.unmap(m)
        still_works(w)
        assert front.retry_revoke() == 0
        w.detach()
        assert held(w) == ZERO and dict(front.stats.rx_errors) == {"backend_kept_mapping": 1}


def test_a_ref_queued_for_revoke_twice_is_ended_once(world: LocalWorld) -> None:
    world.detach()
    front = world.attach(config=NetfrontConfig(grants="per-packet"))
    (m,) = answer(world, [(0, 0, 100)], (0,))
    assert front.rx is not None
    (kept,) = front.rx.revoke
    # a second path queues the same ref (and page) again
    front.rx.revoke.append(Revoke(list(kept.refs), list(kept.pages), kept.source))
    front.retry_revoke()
    assert front.pending_revoke == 1
    world.platforms[0].mapper.unmap(m)
    assert front.retry_revoke() == 0  # ended once: no "not in use" on a second try
    # the ref goes back to the free list once: a grant made now is not ended under us
    page = world.platforms[1].memory.alloc(0)
    fresh = [world.platforms[1].grants.grant_access(0, page.frame, True) for _ in range(300)]
    front.retry_revoke()
    assert world.platforms[1].grants.end_many(fresh) == []  # all still ours to end
    world.platforms[1].memory.free(page)
    world.detach()
    assert held(world) == ZERO


def test_a_fault_mid_poll_frees_the_packets_built_before_it(world: LocalWorld) -> None:
    front = world.fronts[(1, 0)]
    vif = world.vif()
    assert front.rx is not None and vif.rx is not None
    ring, rx = vif.rx.ring, front.rx
    for _ in range(10):
        req = ring.get_request()
        ring.put_response(req.id, 0, 0, 100)
    ring.push_responses()
    check = rx.ring.final_check_for_responses

    def late(*args: object, **kwargs: object) -> bool:
        # the backend answers again while netfront polls, with an id it never issued
        rx.ring.final_check_for_responses = check  # type: ignore[method-assign]
        req = ring.get_request()
        ring.put_response((req.id + 5) % 256, 0, 0, 60)
        ring.push_responses()
        return check(*args, **kwargs)  # type: ignore[arg-type]

    rx.ring.final_check_for_responses = late  # type: ignore[method-assign]
    world.platforms[0].evtchn.notify(vif.rx_port)
    world.pump()
    assert front.broken and front.dev.state == S.Closed
    assert held(world) == ZERO  # the ten packets built before the fault came back
    # the bad response itself is never read: it is lost with the connection
    assert errors(world) == {"device_broken": 10, "unconsumed_at_close": 1}
    assert front.stats.rx_packets == 0
    front.reconnect()
    world.pump()
    still_works(world)
    world.detach()
    assert held(world) == ZERO


@pytest.mark.parametrize("remove", ["both", "frontend"])
def test_a_forced_detach_tears_down_and_logs_once(
    world: LocalWorld, remove: str, caplog: pytest.LogCaptureFixture
) -> None:
    front = world.fronts[(1, 0)]
    world.send([b"\x02" * 60] * 5)
    p = world.paths()
    with caplog.at_level(logging.ERROR, logger="xennet.netfront"):
        world.toolstack.rm(p.frontend)
        if remove == "both":
            world.toolstack.rm(p.backend)
        world.pump()  # nothing escapes on_watch
    assert front.tx is None and front.rx is None and front.dev.state == S.Closed
    assert held(world) == ZERO and front.pending_revoke == 0
    assert sum("cannot record" in rec.getMessage() for rec in caplog.records) == 1


def test_frames_flow_after_a_backend_restart(world: LocalWorld) -> None:
    front = world.fronts[(1, 0)]
    vif = world.vif()
    assert vif.rx is not None
    req = vif.rx.ring.get_request()
    vif.rx.ring.put_response((req.id + 5) % 256, 0, 0, 60)  # breaks the device
    vif.rx.ring.push_responses()
    world.platforms[0].evtchn.notify(vif.rx_port)
    world.pump()
    assert front.broken
    world.netback.stop()  # the backend restarts: a new vif finds the device and probes it
    world.pump()
    world.netback.start()
    world.pump()
    assert front.dev.state == S.Connected and world.vif().dev.state == S.Connected
    assert front.connected and not front.broken
    world.to_backend.clear()
    assert world.send([b"\x02" * 60] * 3) == 3
    assert len(world.to_backend) == 3 and "not_connected" not in front.stats.tx_errors
    still_works(world)


@pytest.mark.parametrize("sizes", [[4096] * 18, [256] + [4096] * 18], ids=["18x4096", "256+18x4096"])
def test_an_oversize_packet_is_dropped_and_its_buffers_come_back(world: LocalWorld, sizes: list[int]) -> None:
    more = netif.NETRXF_more_data
    front = world.fronts[(1, 0)]
    respond(world, [(0, more, n) for n in sizes[:-1]] + [(0, 0, sizes[-1])])
    assert sum(sizes) > MAX_PACKET
    assert errors(world) == {"oversize": 1} and front.stats.rx_slots_dropped == len(sizes)
    assert front.rx is not None and front.rx.posted == front.rx.fill  # reposted
    still_works(world)
    world.detach()
    assert held(world) == ZERO


def test_responses_unread_at_close_are_counted(world: LocalWorld) -> None:
    front = world.fronts[(1, 0)]
    vif = world.vif()
    assert vif.rx is not None
    ring = vif.rx.ring
    for _ in range(4):
        req = ring.get_request()
        ring.put_response(req.id, 0, 0, 100)
    ring.push_responses()  # and no event: netfront never reads them
    front.close()
    world.pump()
    assert front.dev.state == S.Closed and errors(world) == {"unconsumed_at_close": 4}
    assert held(world) == ZERO


def test_removing_both_directories_leaves_no_node_behind(world: LocalWorld) -> None:
    """The vif sees the frontend vanish after its own directory is gone: writing Closing then
    would create the backend's node again and keep a dead vif probed."""
    p = world.paths()
    world.toolstack.rm(p.frontend)
    world.toolstack.rm(p.backend)
    world.pump()
    assert world.toolstack.try_read(p.backend) is None and not world.netback.vifs


# --- tx responses: NULL is a skipped slot, and every skipped slot is counted ---------------


def test_null_tx_responses_are_counted_and_the_packet_stays_in_flight(world: LocalWorld) -> None:
    front = world.fronts[(1, 0)]
    vif = world.vif()
    assert vif.tx is not None and front.tx is not None
    assert front.send_frame(b"\x02" * 100)
    front.flush()
    ring = vif.tx.ring  # the test is the backend: netback never sees this request
    req = ring.get_request()
    ring.put_response(req.id, netif.NETIF_RSP_NULL)  # a NULL where the real answer belongs
    ring.push_responses()
    world.platforms[0].evtchn.notify(vif.tx_port)
    world.pump()
    assert front.stats.tx_rsp_null == 1 and front.stats.tx_completed == 0
    assert front.tx.in_flight == 1  # not answered: never taken for done
    world.detach()  # the packet never answered is counted at close, and nothing is held
    assert front.stats.tx_errors["unconsumed_at_close"] == 1
    assert world.held()[1] == (0, 0, 0, 0)


def test_a_gso_packets_extra_slot_answers_null_and_is_counted(world: LocalWorld) -> None:
    from xennet.packet.frames import build_frame, frame_skb

    front = world.fronts[(1, 0)]
    frame = build_frame(payload=bytes(range(256)) * 12, csum="partial")
    assert front.send(frame_skb(frame, front.memory, gso_size=1448))
    front.flush()
    world.pump()
    assert front.stats.tx_gso_packets == 1
    assert front.stats.tx_rsp_null == 1 and front.stats.tx_completed == 1  # netback: one slot, one extra
    assert [d for _, d in world.to_backend] == [frame.data]


def test_a_page_given_back_after_teardown_waits_for_a_backend_that_maps_it() -> None:
    """The guest's stack holds a received skb across a detach while the backend still maps
    that rx buffer: when the stack lets go, the closed pool's grant cannot be ended, and the
    page must wait to be revoked, not be forgotten (a leaked page and grant)."""
    with LocalWorld() as w:
        front = w.attach()
        kept: list[Skb] = []
        deliver = front.on_event

        def hold(port: int) -> list[Skb]:
            skbs = deliver(port)
            kept.extend(s.get() for s in skbs)  # the stack keeps a reference
            return skbs

        front.on_event = hold  # type: ignore[method-assign]
        (m,) = answer(w, [(0, 0, 3000)], mapped=(0,))
        assert len(kept) == 1 and len(w.to_guest[(1, 0)][0]) == 3000
        w.detach()
        for skb in kept:
            skb.release()  # after teardown: its frame goes back to a closed pool
        assert front.pending_revoke >= 1  # noticed, and waiting
        assert held(w) != ZERO
        w.platforms[0].mapper.unmap(m)
        assert front.retry_revoke() == 0
        assert held(w) == ZERO


def test_a_gso_packet_without_csum_blank_is_made_partial(world: LocalWorld) -> None:
    """Linux's netfront forces CHECKSUM_PARTIAL on a GSO packet a backend sent without
    csum_blank (rx_gso_checksum_fixup): its segments then each get their own checksum."""
    from xennet.packet.frames import build_frame

    frame = build_frame(ip=4, payload=bytes(range(256)) * 8).data  # final checksum, 2102 bytes
    vif = world.vif()
    assert vif.rx is not None
    ring = vif.rx.ring
    req, _ = ring.get_request(), ring.get_request()  # the extra info takes a slot too
    m = world.platforms[0].mapper.map(1, [req.gref], True)
    m.view[: len(frame)] = frame
    world.platforms[0].mapper.unmap(m)
    ring.put_response(req.id, 0, netif.NETRXF_extra_info, len(frame))
    ring.put_response_bytes(netif.gso_extra(1448, netif.XEN_NETIF_GSO_TYPE_TCPV4))
    ring.push_responses()
    world.platforms[0].evtchn.notify(vif.rx_port)
    world.pump()
    front = world.fronts[(1, 0)]
    assert errors(world) == {}
    assert front.stats.rx_gso_checksum_fixup == 1 and front.stats.rx_gso_packets == 1
    (got,) = world.to_guest[(1, 0)]
    assert got[:50] == frame[:50] and got[54:] == frame[54:]  # only the checksum field changed
    assert got[50:52] != frame[50:52]  # it holds the pseudo-header sum now
    still_works(world)


def test_a_backend_cannot_flood_the_guest_log(world: LocalWorld, caplog: pytest.LogCaptureFixture) -> None:
    """Every bad packet is counted; the log gets one line per kind every few seconds, and the
    next says how many it held back (netback's rule, at the frontend)."""
    front = world.fronts[(1, 0)]
    assert front.rx is not None
    now = [1000.0]
    front.rx.log.clock = lambda: now[0]
    caplog.set_level(logging.WARNING, logger="xennet.netfront.rx")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "xennet.netfront.rx"]

    respond(world, [(4000, 0, 200)] * 10)
    assert errors(world) == {"offset_size_past_page": 10}
    assert lines() == ["rx: dropping a packet: offset_size_past_page"]
    respond(world, [(4000, 0, 200)] * 3)
    assert len(lines()) == 1  # still inside the interval
    now[0] += 5.0
    respond(world, [(4000, 0, 200)])
    assert errors(world) == {"offset_size_past_page": 14}
    assert lines()[1] == "rx: dropping a packet: offset_size_past_page (12 more like this not logged)"
    still_works(world)
