"""The learning bridge: forwarding, flooding, ageing, and the bound on what a port can make it learn."""

from __future__ import annotations

import pytest

from xennet.packet.skb import HeapPages, Skb, build_skb, linear_layout
from xennet.ports.bridge import LearningBridge


class Sink:
    def __init__(self, name: str, accept: bool = True) -> None:
        self.name = name
        self.got: list[bytes] = []
        self.accept = accept

    def deliver(self, skb: Skb) -> bool:
        if self.accept:
            self.got.append(skb.data())
        skb.release()
        return self.accept


def mac(i: int) -> bytes:
    return bytes([0x00, 0x16, 0x3E, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def frame(pages: HeapPages, dst: bytes, src: bytes) -> Skb:
    data = dst + src + b"\x08\x00" + bytes(46)
    return build_skb(data, linear_layout(len(data)), pages)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def pages() -> HeapPages:
    return HeapPages()


def test_learns_forwards_and_floods(pages: HeapPages) -> None:
    br = LearningBridge()
    a, b, c = Sink("a"), Sink("b"), Sink("c")
    for p in (a, b, c):
        br.attach(p)
    br.input("a", frame(pages, mac(2), mac(1)))  # unknown: flooded to b and c
    assert len(b.got) == len(c.got) == 1 and not a.got
    br.input("b", frame(pages, mac(1), mac(2)))  # known: to a only
    assert len(a.got) == 1 and len(c.got) == 1
    br.input("a", frame(pages, mac(1), mac(3)))  # to its own port: dropped
    assert br.stats.dropped["same_port"] == 1
    assert br.stats.flooded == 1 and br.stats.forwarded == 3
    assert pages.live == 0


def test_a_port_spraying_source_macs_fills_only_its_own_share(pages: HeapPages) -> None:
    clock = Clock()
    br = LearningBridge(max_per_port=8, ageing_s=10, clock=clock)
    good, bad = Sink("good"), Sink("bad")
    br.attach(good)
    br.attach(bad)
    for i in range(1000):
        br.input("bad", frame(pages, mac(0xFFFF), mac(100 + i)))
    assert br.learned["bad"] == 8 and len(br.fdb) == 8
    assert br.stats.dropped["fdb_full"] == 1000 - 8
    # the honest port still learns, and its traffic is not flooded to the sprayer
    br.input("good", frame(pages, mac(100), mac(1)))
    br.input("bad", frame(pages, mac(1), mac(100)))
    assert good.got and br.fdb[mac(1)][0] == "good"
    # aged-out entries make room again
    clock.t = 11
    br.input("bad", frame(pages, mac(1), mac(5000)))
    assert br.fdb[mac(5000)][0] == "bad" and br.learned["bad"] == 1  # all 8, learned at t=0, aged out
    assert pages.live == 0


def test_a_station_that_moves_is_counted_once(pages: HeapPages) -> None:
    br = LearningBridge(max_per_port=4)
    br.attach(Sink("a"))
    br.attach(Sink("b"))
    br.input("a", frame(pages, mac(9), mac(1)))
    br.input("b", frame(pages, mac(9), mac(1)))
    assert br.fdb[mac(1)][0] == "b" and br.learned == {"a": 0, "b": 1}
    br.detach("b")
    assert mac(1) not in br.fdb and "b" not in br.learned


def test_a_refusing_port_is_counted_and_the_frame_released(pages: HeapPages) -> None:
    br = LearningBridge()
    br.attach(Sink("a"))
    br.attach(Sink("full", accept=False))
    br.input("a", frame(pages, mac(2), mac(1)))
    assert br.stats.dropped["port_refused"] == 1 and pages.live == 0


@pytest.mark.parametrize("kw", [{"ageing_s": 0}, {"max_per_port": 0}])
def test_bad_configuration_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LearningBridge(**kw)  # type: ignore[arg-type]
