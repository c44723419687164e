"""Every configuration object is checked when it is built: a bad value is a ValueError that
names the field and what it may be, never an exception later (in a handshake, a domain process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from xennet.bench.run import BenchPlan
from xennet.bench.scale import ScaleJob
from xennet.bench.small import FlowJob
from xennet.netback.interface import NetbackConfig
from xennet.netback.tx import TxLimits
from xennet.netfront.device import NetfrontConfig
from xennet.netfront.slotpolicy import policy_names
from xennet.ports.pktgen import TrafficSpec, worst_layout
from xennet.world.link import LinkConfig
from xennet.world.pktgen_run import PktgenJob
from xennet.world.soak import SoakPlan
from xennet.world.xen.host import NetbackHostConfig
from xennet.xenbus.toolstack import VifSpec

LAYOUTS = (worst_layout(),)

# (build, the words the message must hold: the field, and for a choice the valid values)
BAD: list[tuple[str, Callable[[], Any], tuple[str, ...]]] = [
    ("slot_policy", lambda: NetfrontConfig(slot_policy="relayot"), ("slot policy", "relayout", "drop")),
    ("grants", lambda: NetfrontConfig(grants="shared"), ("grants", "pool", "per-packet")),  # type: ignore[arg-type]
    ("rx_fill", lambda: NetfrontConfig(rx_fill=0), ("rx_fill",)),
    ("nf max_slots", lambda: NetfrontConfig(max_slots=65), ("max_slots",)),
    ("nf pool_frames", lambda: NetfrontConfig(pool_frames=1), ("pool_frames",)),
    ("rx_packing", lambda: NetbackConfig(rx_packing="tight"), ("packing", "seed", "full")),
    ("rx_admission", lambda: NetbackConfig(rx_admission="maybe"), ("admission", "estimate", "fit-or-wait")),
    ("rx_queue_bytes", lambda: NetbackConfig(rx_queue_bytes=10), ("rx_queue_bytes",)),
    ("rx_stall_timeout_s", lambda: NetbackConfig(rx_stall_timeout_s=0), ("rx_stall_timeout_s",)),
    ("nb pool_frames", lambda: NetbackConfig(pool_frames=1), ("pool_frames",)),
    ("tx data", lambda: TxLimits(data="mmap"), ("data", "copy", "map")),  # type: ignore[arg-type]
    ("tx max_slots", lambda: TxLimits(max_slots=30, fatal_slots=21), ("max_slots", "fatal_slots")),
    ("tx copy_len", lambda: TxLimits(copy_len=1), ("copy_len",)),
    ("tx batch_slots", lambda: TxLimits(batch_slots=0), ("batch_slots", "1..256")),
    ("tx batch_slots", lambda: TxLimits(batch_slots=257), ("batch_slots", "1..256")),
    ("vif mac", lambda: VifSpec(mac="00:16:3e"), ("mac",)),
    ("vif mtu", lambda: VifSpec(mtu=20), ("mtu",)),
    ("link mac", lambda: LinkConfig(mac="zz"), ("mac",)),
    ("link mtu", lambda: LinkConfig(mtu=10), ("mtu",)),
    ("link queues", lambda: LinkConfig(queues=2), ("queues",)),
    ("link poll_us", lambda: LinkConfig(poll_us=-1), ("poll_us",)),
    ("link subnet", lambda: LinkConfig(subnet=256), ("subnet",)),
    ("traffic ip", lambda: TrafficSpec(ip=5), ("ip", "4", "6")),  # type: ignore[arg-type]
    ("traffic proto", lambda: TrafficSpec(proto="sctp"), ("proto", "tcp", "udp")),  # type: ignore[arg-type]
    ("traffic csum", lambda: TrafficSpec(csum="none"), ("csum", "full", "partial")),  # type: ignore[arg-type]
    ("traffic mss", lambda: TrafficSpec(mss=70_000), ("mss",)),
    ("traffic udp gso", lambda: TrafficSpec(proto="udp", mss=1448), ("mss", "tcp")),
    ("pktgen direction", lambda: PktgenJob(LAYOUTS, direction="up"), ("direction", "tx", "rx")),  # type: ignore[arg-type]
    ("pktgen rate", lambda: PktgenJob(LAYOUTS, rate=-1), ("rate",)),
    ("pktgen layouts", lambda: PktgenJob(()), ("layouts",)),
    ("pktgen deadline", lambda: PktgenJob(LAYOUTS, deadline_s=0), ("deadline_s",)),
    ("flow direction", lambda: FlowJob("sideways", 10), ("direction", "tx", "rx")),
    ("flow frames", lambda: FlowJob("tx", 0), ("frames",)),
    ("flow size", lambda: FlowJob("tx", 10, size=10), ("size",)),
    ("flow poll_us", lambda: FlowJob("tx", 10, poll_us=-5), ("poll_us",)),
    ("scale guests", lambda: ScaleJob(guests=0), ("guests",)),
    ("scale frames", lambda: ScaleJob(frames=0), ("frames",)),
    ("bench runs", lambda: BenchPlan(runs=0), ("runs",)),
    ("bench frames", lambda: BenchPlan(small_frames=0), ("small_frames",)),
    ("bench link_seconds", lambda: BenchPlan(link_seconds=0), ("link_seconds",)),
    ("soak packets", lambda: SoakPlan(0), ("packets",)),
    ("host kind", lambda: NetbackHostConfig(kind="../vif"), ("kind",)),
]


@pytest.mark.parametrize("build,words", [(b, w) for _, b, w in BAD], ids=[n for n, _, _ in BAD])
def test_a_bad_value_is_refused_when_built(build: Callable[[], Any], words: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as exc:
        build()
    for word in words:
        assert word in str(exc.value), (word, str(exc.value))


def test_the_defaults_and_every_registered_choice_are_accepted() -> None:
    for name in policy_names():
        assert NetfrontConfig(slot_policy=name).slot_policy == name
    for grants in ("pool", "per-packet"):
        NetfrontConfig(grants=grants)  # type: ignore[arg-type]
    for data in ("copy", "map"):
        TxLimits(data=data)  # type: ignore[arg-type]
    LinkConfig()
    LinkConfig(mac="00:16:3E:00:00:02", mtu=9000, poll_us=200)
    PktgenJob(LAYOUTS, TrafficSpec(ip=6, proto="udp"), direction="rx", rate=10.0)
    FlowJob("rx", 1, size=65536, gso_size=1448)
    ScaleJob()
    BenchPlan()
    BenchPlan.quick_plan()
    NetbackHostConfig(kind="pyvif")
