"""xennet on a real Xen host: our netfront in a domU, our netback in a driver domain.

Both run the same loops as ``xennet link`` (``serve``) over ``XenPlatform`` (gntdev, gntalloc,
evtchn) and the host's xenstore: xenstored's socket where there is one (dom0), else
/dev/xen/xenbus.  Their peers are whatever the toolstack wired up: the Linux kernel's
xen-netback or xen-netfront, or another xennet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...netback.backend import Netback
from ...netback.interface import NetbackConfig, Vif
from ...netfront.device import Netfront, NetfrontConfig
from ...platform.base import PlatformError
from ...xenbus.paths import VifPaths, domain_path
from ...xenbus.states import XenbusState
from ...xenbus.toolstack import VifSpec, attach_vif, detach_vif
from ...xenstore.client import XenstoreClient
from ...xenstore.errors import XenstoreError
from ..host.serve import Capture, TapSpec, serve_netback, serve_netfront

log = logging.getLogger(__name__)

XENSTORED_SOCKETS = ("/run/xenstored/socket", "/var/run/xenstored/socket")


class XenHostError(RuntimeError):
    """What is wrong on this host, in one line."""


def open_xenstore(dev_dir: str = "/dev/xen") -> XenstoreClient:
    """xenstored's socket if this domain has one (dom0), else the xenbus device (any domain)."""
    from ...platform.xen.xenbus import XenbusTransport

    env = os.environ.get("XENSTORED_PATH")
    for sock in (env,) if env else XENSTORED_SOCKETS:
        if sock and os.path.exists(sock):
            return XenstoreClient(sock)
    try:
        return XenstoreClient(transport=XenbusTransport(dev_dir))
    except (OSError, PlatformError) as exc:
        raise XenHostError(f"no xenstore here: no xenstored socket and {exc}") from exc


def own_domid(xs: XenstoreClient) -> int:
    raw = xs.try_read("domid")  # relative: our home; libxl writes it for every domain
    if raw is None or not raw.strip().isdigit():
        raise XenHostError(f"xenstore key 'domid' is {raw!r}: is this a Xen domain?")
    return int(raw)


@dataclass(frozen=True)
class NetfrontHostConfig:
    handle: int = 0
    tap: TapSpec = TapSpec("xnf0")
    front: NetfrontConfig = NetfrontConfig()
    pcap: str | None = None


def run_netfront(cfg: NetfrontHostConfig, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """Serve ``device/vif/<handle>`` of this domain as its frontend, frames to a TAP."""
    from ...platform.xen import XenPlatform

    xs = open_xenstore()
    try:
        domid = own_domid(xs)
        paths = VifPaths(domid, 0, cfg.handle)
        raw = xs.try_read(f"{paths.frontend}/backend-id")
        if raw is None or not raw.strip().isdigit():
            raise XenHostError(
                f"{paths.frontend}/backend-id is {raw!r}: no vif {cfg.handle} for this domain"
                " (add one with `xl network-attach` or vif= in the domain config)"
            )
        platform = XenPlatform(domid, peer_domid=int(raw))
        pcap = Capture(cfg.pcap) if cfg.pcap else None
        try:
            front = Netfront.for_vif(platform, xs, paths, cfg.front)
            return serve_netfront(platform, xs, front, cfg.tap, should_stop, pcap=pcap)
        finally:
            if pcap is not None:
                pcap.close()
            platform.close()
    finally:
        xs.close()


@dataclass(frozen=True)
class NetbackHostConfig:
    kind: str = "vif"  # another kind (e.g. pyvif) lets a loaded kernel netback ignore our vifs
    tap_prefix: str = "xnb"  # TAP of vif D.H: <prefix>D.H
    address: str | None = None  # given to the first vif's TAP
    bridge: str | None = None  # default for vifs whose backend has no `bridge` key
    mtu: int = 1500
    offloads: bool = True
    back: NetbackConfig = NetbackConfig()
    pcap: str | None = None
    reap: bool = True  # remove directories of our kind whose frontend domain is gone

    def __post_init__(self) -> None:
        if not self.kind.replace("-", "").isalnum():
            raise ValueError(f"kind={self.kind!r}: a xenstore directory name")


def run_netback(cfg: NetbackHostConfig, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """Serve every ``backend/<kind>/*/*`` of this domain, one TAP per connected vif."""
    from ...platform.xen import XenPlatform

    xs = open_xenstore()
    try:
        domid = own_domid(xs) if xs.try_read("domid") is not None else 0
        platform = XenPlatform(domid)
        pcap = Capture(cfg.pcap) if cfg.pcap else None
        given: set[str] = set()
        try:
            back = Netback(platform, xs, cfg.back, kind=cfg.kind)
            log.info("domain %d: serving %s", domid, back.root)

            def tap_for(vif: Vif) -> TapSpec:
                dom, handle = vif.dev.nodename.rsplit("/", 2)[-2:]
                address = None
                if cfg.address and (not given or vif.name in given):
                    given.add(vif.name)
                    address = cfg.address
                bridge = (vif.dev.read("bridge") or "").strip() or cfg.bridge
                name = f"{cfg.tap_prefix}{dom}.{handle}"
                return TapSpec(name, None, address, cfg.mtu, cfg.offloads, bridge)

            def stop() -> bool:
                if cfg.reap:
                    reap_dead(xs, back)
                return should_stop()

            return serve_netback(platform, xs, back, tap_for, stop, pcap=pcap)
        finally:
            if pcap is not None:
                pcap.close()
            platform.close()
    finally:
        xs.close()


def reap_dead(xs: XenstoreClient, back: Netback) -> None:
    """Remove the backend and frontend directories of vifs whose frontend domain is gone:
    for a backend kind of our own, no libxl cleans them up."""
    for node, vif in list(back.vifs.items()):
        if vif.dev.state != XenbusState.Closed or vif.front_domid <= 0:
            continue
        if xs.is_domain_introduced(vif.front_domid):
            continue
        log.info("%s: domain %d is gone: removing %s", vif.name, vif.front_domid, node)
        for path in (node, vif.dev.otherend):
            try:
                if path and xs.try_read(path) is not None:
                    xs.rm(path)
            except XenstoreError as exc:
                log.warning("%s: cannot remove %s: %s", vif.name, path, exc)


def attach(frontend_domid: int, handle: int = 0, kind: str = "vif", spec: VifSpec | None = None) -> VifPaths:
    """The toolstack step, from dom0: create vif ``handle`` of a domain, served by ``kind``."""
    xs = open_xenstore()
    try:
        if xs.try_read(domain_path(frontend_domid)) is None:
            raise XenHostError(f"domain {frontend_domid} does not exist (no {domain_path(frontend_domid)})")
        paths = VifPaths(frontend_domid, own_domid(xs), handle, kind)
        if xs.try_read(paths.frontend) is not None:
            raise XenHostError(f"{paths.frontend} exists already: vif {handle} is taken")
        attach_vif(xs, paths, spec or VifSpec())
        return paths
    finally:
        xs.close()


def detach(frontend_domid: int, handle: int = 0, kind: str = "vif") -> None:
    xs = open_xenstore()
    try:
        detach_vif(xs, VifPaths(frontend_domid, own_domid(xs), handle, kind))
    finally:
        xs.close()
