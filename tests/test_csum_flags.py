"""The checksum state across the rings (abi/netif.py, the one mapping): the tx and rx rings
put csum_blank and data_validated in swapped bits, and each direction keeps the state."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xennet.abi import netif
from xennet.core import records as r
from xennet.netback.interface import Vif
from xennet.packet.frames import build_frame, frame_skb
from xennet.packet.skb import Csum, Skb, csum_of, csum_state
from xennet.world.local import LocalWorld

# netif.h, by value: NETTXF_csum_blank is bit 0 and NETRXF_csum_blank bit 1
TX_BLANK, TX_VALID, RX_VALID, RX_BLANK = 1, 2, 1, 2
STATES = [Csum.NONE, Csum.PARTIAL, Csum.UNNECESSARY]


def test_tx_ring_flags_each_way() -> None:
    assert netif.tx_csum_flags(r.PKT_CSUM_PARTIAL) == TX_BLANK | TX_VALID  # blank implies validated
    assert netif.tx_csum_flags(r.PKT_DATA_VALIDATED) == TX_VALID
    assert netif.tx_csum_flags(r.PKT_CSUM_PARTIAL | r.PKT_DATA_VALIDATED) == TX_BLANK | TX_VALID
    assert netif.tx_csum_flags(0) == netif.tx_csum_flags(r.PKT_CSUM_FAILED) == 0
    assert netif.tx_csum_state(TX_BLANK) == netif.tx_csum_state(TX_BLANK | TX_VALID) == r.PKT_CSUM_PARTIAL
    assert netif.tx_csum_state(TX_VALID) == r.PKT_DATA_VALIDATED
    other = netif.NETTXF_more_data | netif.NETTXF_extra_info
    assert netif.tx_csum_state(other) == 0 and netif.tx_csum_flags(r.PKT_CSUM_PARTIAL) & other == 0


def test_rx_ring_flags_each_way() -> None:
    assert netif.rx_csum_flags(r.PKT_CSUM_PARTIAL) == RX_BLANK | RX_VALID
    assert netif.rx_csum_flags(r.PKT_DATA_VALIDATED) == RX_VALID
    assert netif.rx_csum_flags(0) == netif.rx_csum_flags(r.PKT_CSUM_FAILED) == 0
    assert netif.rx_csum_state(RX_BLANK) == netif.rx_csum_state(RX_BLANK | RX_VALID) == r.PKT_CSUM_PARTIAL
    assert netif.rx_csum_state(RX_VALID) == r.PKT_DATA_VALIDATED
    other = netif.NETRXF_more_data | netif.NETRXF_extra_info | netif.NETRXF_gso_prefix
    assert netif.rx_csum_state(other) == 0
    # the swap: a tx request's csum_blank read as an rx response would be data_validated
    assert netif.rx_csum_state(netif.tx_csum_flags(r.PKT_DATA_VALIDATED)) == r.PKT_CSUM_PARTIAL


@pytest.mark.parametrize("csum", STATES, ids=lambda c: c.value)
def test_skb_state_round_trips_through_the_records(csum: Csum) -> None:
    assert csum_of(csum_state(csum)) is csum
    assert csum_of(netif.tx_csum_state(netif.tx_csum_flags(csum_state(csum)))) is csum
    assert csum_of(netif.rx_csum_state(netif.rx_csum_flags(csum_state(csum)))) is csum


def _skb(world: LocalWorld, domid: int, csum: Csum) -> Skb:
    built = build_frame(ip=6, payload=bytes(3000), csum="partial" if csum is Csum.PARTIAL else "full")
    src = world.fronts[(1, 0)].memory if domid else world.vif().memory
    skb = frame_skb(built, src)
    skb.csum = csum
    return skb


@pytest.mark.parametrize("csum", STATES, ids=lambda c: c.value)
def test_guest_tx_keeps_the_state(world: LocalWorld, csum: Csum) -> None:
    """netfront posts (tx_csum_flags), netback assembles (tx_csum_state): the live kernels."""
    front = world.attach()
    got: list[Csum] = []

    def keep(_vif: Vif, skb: Skb) -> None:
        got.append(skb.csum)
        skb.release()

    world.on_backend_skb = keep
    assert front.send(_skb(world, 1, csum))
    front.flush()
    world.pump()
    assert got == [csum]


@pytest.mark.parametrize("csum", STATES, ids=lambda c: c.value)
def test_guest_rx_keeps_the_state(world: LocalWorld, csum: Csum) -> None:
    """netback answers (rx_csum_flags), netfront builds (rx_csum_state): the live kernels."""
    front = world.attach()
    got: list[Csum] = []
    orig: Callable[..., list[Skb]] = front.on_event

    def on_event(port: int, sink: object = None) -> list[Skb]:
        skbs = orig(port, sink)
        got.extend(s.csum for s in skbs)
        return skbs

    front.on_event = on_event  # type: ignore[method-assign]
    vif = world.vif()
    assert vif.send_to_guest(_skb(world, 0, csum))
    vif.kick_rx()
    world.pump()
    assert got == [csum]
