"""Shared by the ports tests: addresses, the skip reason, a TAP set up in a namespace."""

from __future__ import annotations

import importlib.util
import os

from xennet.ports.netns import Netns
from xennet.ports.tap import Tap

TAP_V4, PEER_V4 = "10.213.0.1", "10.213.0.2"
TAP_V6, PEER_V6 = "fd00:213::1", "fd00:213::2"
PEER_MAC = "02:13:00:00:00:02"


def netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and TAP devices"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (tun module missing or not exposed to this container)"
    if importlib.util.find_spec("pyroute2") is None:
        return "pyroute2 is not installed (pip install pyroute2)"
    return None


def open_tap(ns: Netns, *, offloads: bool = True, mtu: int = 1500) -> Tap:
    """A TAP in ``ns``, up, with 10.213.0.1/24 and fd00:213::1/64 (no DAD)."""
    tap = Tap.open("xtap%d", netns=ns.name, offloads=offloads, mtu=mtu)
    try:
        ns.set_mtu(tap.name, mtu)
        ns.link_up(tap.name)
        ns.add_address(tap.name, TAP_V4, 24)
        ns.add_address(tap.name, TAP_V6, 64)
    except BaseException:
        tap.close()
        raise
    return tap
