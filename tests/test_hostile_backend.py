"""A backend that writes raw rx responses (XSA.md, frontend side): netfront rejects the
packet and counts it, or marks the device broken when the response stream is impossible."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xennet.abi import netif
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
