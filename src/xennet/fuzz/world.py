"""A ``LocalWorld`` kept across fuzz inputs, with the accounting the checks compare to zero."""

from __future__ import annotations

from xennet.netback.interface import Vif
from xennet.netfront.device import Netfront, NetfrontConfig
from xennet.world.local import BACKEND, GUEST, LocalWorld

from . import harness

# a new LocalWorld after this many attach/detach rounds: the netback keeps each removed vif's
# counters in its report, which would grow for ever
ROUNDS_PER_WORLD = 50


held = LocalWorld.held  # (pages, grants, maps, ports) each domain holds now


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


class VifHarness(harness.Harness):
    """A harness playing one end of a vif in an ``Attached`` world: a fatal error is checked
    and reconnected from; ``check`` raises what was found since the last one."""

    def __init__(self, name: str, config: NetfrontConfig | None = None) -> None:
        super().__init__(name)
        self.leaked = ""
        self.at = Attached(config)

    @property
    def vif(self) -> Vif:
        return self.at.world.vif()

    def _end(self) -> None:
        raise NotImplementedError

    def _restore(self) -> None:
        raise NotImplementedError

    def reconnect_if_clean(self, want: dict[int, tuple[int, int, int, int]], what: str) -> None:
        """After a peer gave up: the world must hold exactly ``want``; then connect again,
        much cheaper than a new vif (the next full check still comes)."""
        w, front = self.at.world, self.at.front
        now = held(w)
        if now != want:
            self.leaked = self.leaked or f"{what}: held {now}, want {want}"
            self._end()
            return
        front.reconnect()
        w.pump()
        if not (front.connected and self.vif.connected):
            self._end()

    def check(self) -> None:
        self._end()
        if self.leaked:
            what, self.leaked = self.leaked, ""
            raise harness.Leak(what)

    def close(self) -> None:
        self._restore()
        self.at.close()
