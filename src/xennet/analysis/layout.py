"""What every tx policy and rx packing does with one layout (``xennet layout``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..netback.rxpolicy.packing import packing_policy
from ..netfront.slotpolicy import policy_for, policy_names
from ..packet.skb import GSO_NONE, GSO_TCPV4, HeapPages, Piece, Skb, build_skb, layout_slots, validate_layout
from ..ports.pktgen import Generator, TrafficSpec

RX_PACKINGS = ("seed", "full")


def _skb_for(layout: Sequence[Piece], gso: tuple[int, int] | None, source: HeapPages) -> Skb:
    """A real frame in exactly this layout: TCP with GSO when asked, else plain bytes."""
    if gso is not None:
        gtype, mss = gso
        gen = Generator(TrafficSpec(ip=4 if gtype == GSO_TCPV4 else 6, proto="tcp", mss=mss))
        return gen.skb(layout, source)
    data = bytes(i % 251 for i in range(sum(p.length for p in layout)))
    return build_skb(data, layout, source)


def analyze(
    layout: Sequence[Piece], gso: tuple[int, int] | None = None, max_slots: int = 18
) -> dict[str, Any]:
    """``gso`` is (XEN_NETIF_GSO_TYPE_*, mss) or None."""
    validate_layout(layout)
    strategies: dict[str, Any] = {}
    for name in policy_names():
        source = HeapPages()
        skb = _skb_for(layout, gso, source)
        outcome = policy_for(name).apply(skb, max_slots, source)
        strategies[name] = {
            "packets": len(outcome.skbs),
            "slots": list(outcome.slots),
            "bytes_copied": outcome.bytes_copied,
            "dropped": outcome.dropped,
            "reason": outcome.reason,
        }
    has_gso = gso is not None and gso[0] != GSO_NONE
    rx = {}
    for name in RX_PACKINGS:
        p = packing_policy(name)
        plan = p.plan(layout, has_gso)
        rx[name] = {"buffers": plan.nbuffers, "slots": plan.slots, "estimate": p.estimate(layout, has_gso)}
    return {
        "length": sum(p.length for p in layout),
        "tx_slots": layout_slots(layout),
        "max_slots": max_slots,
        "strategies": strategies,
        "rx": rx,
    }
