"""xenstored gone under a connected vif: each end tears down alone and nothing is held."""

from __future__ import annotations

from xennet.world.local import LocalWorld
from xennet.xenbus.states import XenbusState as S
from xennet.xenstore.client import LocalTransport

ZERO = (0, 0, 0, 0)


held = LocalWorld.held  # (pages, grants, maps, ports) each domain holds now


def test_both_ends_tear_down_alone_when_xenstored_is_gone(world: LocalWorld) -> None:
    front = world.attach()
    vif = world.vif()
    assert front.connected and vif.connected
    assert world.send([b"\x01" * 200] * 10) == 10
    for client in world.clients.values():  # xenstored drops every connection
        transport = client._transport
        assert isinstance(transport, LocalTransport)
        transport._hub.close(transport)
    # the guest first: what the backend still maps waits for it (XSA-396)
    front.drop()
    assert front.dev.state == S.Closed and front.tx is None and front.pending_revoke > 0
    world.netback.stop()  # the backend lets go: its vif drops without a word to xenstore
    assert not vif.connected and vif.dev.state == S.Closed
    assert front.retry_revoke() == 0
    assert held(world) == {0: ZERO, 1: ZERO}
