"""A ``LocalWorld`` kept across fuzz inputs, with the accounting the checks compare to zero."""

from __future__ import annotations

from xennet.netfront.device import Netfront, NetfrontConfig
from xennet.world.local import BACKEND, GUEST, LocalWorld

from . import harness

# a new LocalWorld after this many attach/detach rounds: the netback keeps each removed vif's
# counters in its report, which would grow for ever
ROUNDS_PER_WORLD = 50


def held(w: LocalWorld) -> dict[int, tuple[int, int, int, int]]:
    """(pages, grants, maps, ports) each domain holds now."""
    out = {}
    for domid in w.platforms:
        a = w.sim.accounting(domid)
        out[domid] = (a.pages, a.grants, a.maps, a.ports)
    return out


class Attached:
    """One vif attached in a world reused for many rounds; ``detach`` checks that the round
    left nothing behind (``Leak`` otherwise) and ``attach`` starts the next."""

    def __init__(self, config: NetfrontConfig | None = None) -> None:
        self.config = config
        self.world = LocalWorld()
        self.rounds = 0
        self.front = self.attach()

    def attach(self) -> Netfront:
        if self.rounds >= ROUNDS_PER_WORLD:
            self.world.close()
            self.world = LocalWorld()
            self.rounds = 0
        self.rounds += 1
        before = held(self.world)
        if any(before.values()) and before != {BACKEND: (0, 0, 0, 0), GUEST: (0, 0, 0, 0)}:
            raise harness.Leak(f"held before attach: {before}")
        self.front = self.world.attach(config=self.config)
        return self.front

    def detach(self) -> None:
        w = self.world
        w.detach()
        w.to_backend.clear()
        w.to_guest.clear()
        w.received_skbs.clear()
        left = held(w)
        if w.netback.vifs or any(v != (0, 0, 0, 0) for v in left.values()):
            self.world.close()  # start over clean, whatever the verdict
            self.world = LocalWorld()
            self.rounds = 0
            raise harness.Leak(
                f"after detach: (pages, grants, maps, ports) by domain {left}, vifs {list(w.netback.vifs)}"
            )

    def close(self) -> None:
        self.world.close()
