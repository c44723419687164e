"""A learning bridge between the backend's vifs (and any other port).

Frames are forwarded as skbs, never as bytes: a frame from guest A keeps its (domain,
grant) tags, so guest B's receive path grant-copies it straight out of A's pages.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..packet.skb import Skb


class Port(Protocol):
    name: str

    def deliver(self, skb: Skb) -> bool:
        """Take one reference to ``skb`` (released when done with it); False = dropped."""
        ...


@dataclass
class BridgeStats:
    forwarded: int = 0
    flooded: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class LearningBridge:
    """``max_per_port`` bounds what one guest can make us learn: a guest sending from random
    source MACs fills its own share of the table, never another port's (Linux's bridge has
    the same knob as ``max_learned``).  Past it, the source is not learned (its replies are
    flooded) and the refusal is counted."""

    def __init__(
        self,
        ageing_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_per_port: int = 1024,
    ) -> None:
        if ageing_s <= 0 or max_per_port < 1:
            raise ValueError("bridge: ageing_s and max_per_port must be positive")
        self.ports: dict[str, Port] = {}
        self.fdb: dict[bytes, tuple[str, float]] = {}  # mac -> (port, last seen)
        self.learned: Counter[str] = Counter()  # fdb entries per port
        self.ageing_s = ageing_s
        self.clock = clock
        self.max_per_port = max_per_port
        self.stats = BridgeStats()

    def attach(self, port: Port) -> None:
        self.ports[port.name] = port

    def detach(self, name: str) -> None:
        self.ports.pop(name, None)
        self.fdb = {mac: entry for mac, entry in self.fdb.items() if entry[0] != name}
        self.learned.pop(name, None)

    def _forget(self, mac: bytes) -> None:
        port, _ = self.fdb.pop(mac)
        self.learned[port] -= 1

    def _learn(self, mac: bytes, port: str, now: float) -> None:
        old = self.fdb.get(mac)
        if old is not None and old[0] == port:
            self.fdb[mac] = (port, now)
            return
        if self.learned[port] >= self.max_per_port:
            for m in [m for m, (p, seen) in self.fdb.items() if p == port and now - seen > self.ageing_s]:
                self._forget(m)  # aged out: room again
            if self.learned[port] >= self.max_per_port:
                self.stats.dropped["fdb_full"] += 1  # counted, not learned; the frame still goes
                return
        if old is not None:
            self._forget(mac)  # the station moved
        self.fdb[mac] = (port, now)
        self.learned[port] += 1

    def input(self, source: str, skb: Skb) -> None:
        """A frame arrived on ``source``; the bridge takes over the caller's reference."""
        head = bytes(skb.head.view[:12])
        if len(head) < 12:
            self.stats.dropped["runt"] += 1
            skb.release()
            return
        dst, src = head[:6], head[6:12]
        now = self.clock()
        if not src[0] & 1:  # never learn a multicast source
            self._learn(src, source, now)
        entry = self.fdb.get(dst)
        if entry is not None and now - entry[1] > self.ageing_s:
            self._forget(dst)
            entry = None
        if dst[0] & 1 or entry is None:  # broadcast, multicast or unknown: flood
            targets = [p for name, p in self.ports.items() if name != source]
            self.stats.flooded += 1
        elif entry[0] == source:
            self.stats.dropped["same_port"] += 1
            skb.release()
            return
        else:
            target = self.ports.get(entry[0])
            targets = [target] if target is not None else []
        if not targets:
            self.stats.dropped["no_port"] += 1
            skb.release()
            return
        skb.users += len(targets) - 1  # one reference per receiving port
        for port in targets:
            if port.deliver(skb):
                self.stats.forwarded += 1
            else:
                self.stats.dropped["port_refused"] += 1  # the port counts its own reason


class VifPort:
    """A netback vif as a bridge port: frames for it go into the guest's rx buffers."""

    def __init__(self, vif: object) -> None:
        from ..netback.interface import Vif

        assert isinstance(vif, Vif)
        self.vif = vif
        self.name = vif.name

    def deliver(self, skb: Skb) -> bool:
        return self.vif.send_to_guest(skb)
