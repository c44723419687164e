"""The backend driver: watch ``<domain>/backend/vif`` and keep one Vif per device directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ..platform.base import Platform
from ..xenbus.device import HandshakeError
from ..xenbus.paths import domain_path
from ..xenbus.states import XenbusState
from ..xenstore.client import XenstoreClient, XenstoreConnectionError, XenstoreError
from .interface import NetbackConfig, Vif

log = logging.getLogger(__name__)


class Netback:
    def __init__(
        self, platform: Platform, xs: XenstoreClient, config: NetbackConfig | None = None, kind: str = "vif"
    ) -> None:
        self.platform = platform
        self.xs = xs
        self.config = config or NetbackConfig()
        self.root = f"{domain_path(platform.domid)}/backend/{kind}"
        self.vifs: dict[str, Vif] = {}
        self.probe_failures = 0
        # the last word of each vif that went away: its counters outlive it for reports
        self.finished: dict[str, dict[str, object]] = {}
        self._failed: set[str] = set()  # nodes whose probe failed: not retried until they vanish
        self._token = f"netback-root:{self.root}"

    def start(self) -> None:
        self.xs.watch(self.root, self._token)  # fires once now, then on any change below
        self.xs.watch("@releaseDomain", self._token)

    def stop(self) -> None:
        for node in list(self.vifs):
            self._remove(node)
        for path in (self.root, "@releaseDomain"):
            try:
                self.xs.unwatch(path, self._token)
            except (XenstoreError, XenstoreConnectionError):
                pass  # gone with xenstored: nothing left to unwatch

    def _device_dirs(self) -> Iterator[str]:
        for domid in self._ls(self.root):
            if not domid.isdigit():
                continue
            for handle in self._ls(f"{self.root}/{domid}"):
                if handle.isdigit():
                    yield f"{self.root}/{domid}/{handle}"

    def _ls(self, path: str) -> list[str]:
        try:
            return self.xs.directory(path)
        except XenstoreError:
            return []

    def on_watch(self, path: str, token: str) -> None:
        if token == self._token:
            if path == "@releaseDomain":
                self._reap_dead_frontends()
            else:
                self._rescan()
            return
        for vif in list(self.vifs.values()):
            vif.on_watch(path, token)

    def _rescan(self) -> None:
        present = set(self._device_dirs())
        for node in list(self.vifs):
            if node not in present:
                self._remove(node)
        self._failed &= present
        for node in present - self.vifs.keys() - self._failed:
            if self.xs.try_read(f"{node}/frontend-id") is None:
                continue  # the toolstack is still writing it (or wrote garbage): wait for more
            vif = Vif(self.platform, self.xs, node, self.config)
            try:
                vif.probe()
            except (HandshakeError, XenstoreError) as exc:
                self.probe_failures += 1
                self._failed.add(node)
                log.error("%s: cannot probe: %s", node, exc)
                vif.remove()
                continue
            self.vifs[node] = vif

    def _remove(self, node: str) -> None:
        vif = self.vifs.pop(node)
        vif.remove()
        self.finished[vif.name] = {"state": vif.dev.state.name, "stats": vif.stats.as_dict()}

    def report(self) -> dict[str, dict[str, object]]:
        """Every vif served so far, gone or live: its xenbus state and counters."""
        live: dict[str, dict[str, object]] = {
            v.name: {"state": v.dev.state.name, "stats": v.stats.as_dict()} for v in self.vifs.values()
        }
        return {**self.finished, **live}

    def _reap_dead_frontends(self) -> None:
        for vif in self.vifs.values():
            if (
                vif.front_domid > 0
                and vif.dev.state != XenbusState.Closed
                and not self.xs.is_domain_introduced(vif.front_domid)
            ):
                vif.frontend_died()

    def vif_for_port(self, port: int) -> Vif | None:
        for vif in self.vifs.values():
            if port in (vif.tx_port, vif.rx_port):
                return vif
        return None
