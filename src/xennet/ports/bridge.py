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
    def __init__(self, ageing_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ports: dict[str, Port] = {}
        self.fdb: dict[bytes, tuple[str, float]] = {}  # mac -> (port, last seen)
        self.ageing_s = ageing_s
        self.clock = clock
        self.stats = BridgeStats()

    def attach(self, port: Port) -> None:
        self.ports[port.name] = port

    def detach(self, name: str) -> None:
        self.ports.pop(name, None)
        self.fdb = {mac: entry for mac, entry in self.fdb.items() if entry[0] != name}

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
            self.fdb[src] = (source, now)
        entry = self.fdb.get(dst)
        if entry is not None and now - entry[1] > self.ageing_s:
            del self.fdb[dst]
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
                self.stats.dropped[f"{port.name}: refused"] += 1


class VifPort:
    """A netback vif as a bridge port: frames for it go into the guest's rx buffers."""

    def __init__(self, vif: object) -> None:
        from ..netback.interface import Vif

        assert isinstance(vif, Vif)
        self.vif = vif
        self.name = vif.name

    def deliver(self, skb: Skb) -> bool:
        return self.vif.send_to_guest(skb)
