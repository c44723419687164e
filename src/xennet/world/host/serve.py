"""Run a netfront or a netback with real Linux interfaces on the other side: TAP devices.

The same two loops serve every platform: ``xennet link`` runs them in sim domains, and
``xennet xen netfront|netback`` runs them on a real Xen host.  The driver objects and the
platform come in from the caller; these loops only move frames between the driver and TAPs.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ...core.vec import PacketVec
from ...netback.backend import Netback
from ...netback.interface import Vif
from ...netback.tx import TxBatch
from ...netfront.device import Netfront
from ...packet.skb import Skb
from ...platform.base import Platform
from ...xenbus.states import XenbusState
from ...xenstore.client import XenstoreClient, XenstoreConnectionError
from .loop import DomainLoop, shut_down_netfront

if TYPE_CHECKING:
    from ...ports.bridge import LearningBridge
    from ...ports.netns import Netns
    from ...ports.tap import Tap

log = logging.getLogger(__name__)

StopFlag = Callable[[], bool]


@dataclass(frozen=True)
class TapSpec:
    """A TAP a driver's frames go to: created on demand, configured, removed at the end."""

    name: str
    netns: str | None = None  # None: this process's own namespace
    address: str | None = None  # "10.0.0.1/24"
    mtu: int = 1500
    offloads: bool = True
    bridge: str | None = None  # enslave the TAP to this bridge (as xl's vif-bridge script does)
    # a fixed MAC: a TAP made again after its domain restarted is the same neighbour to the
    # namespace's ARP cache, so traffic resumes without waiting for the stale entry to expire
    mac: str | None = None


class Capture:
    """``FILE`` gets frames as the ring carried them (GSO frames whole); ``FILE.segments.pcap``
    gets them as they left the wire side (GSO frames segmented, checksums completed).

    What a peer sent must not take the capture down: a frame the segmenter refuses (headers
    that are not TCP/IP, a GSO size it will not cut) is written whole, once, and counted.
    """

    def __init__(self, path: str) -> None:
        from ...packet.skb import HeapPages
        from ...ports.pcap import PcapWriter

        self.ring = PcapWriter(path)
        self.wire = PcapWriter(f"{path}.segments.pcap")
        self._scratch = HeapPages()
        self.unsegmented = 0

    def record(self, skb: Skb) -> None:
        from ...packet.gso import GsoError

        self.ring.write_skb(skb)
        try:
            self.wire.write_segmented(skb, self._scratch)
        except (GsoError, ValueError) as exc:
            self.unsegmented += 1
            if self.unsegmented == 1:
                log.warning("pcap: a frame the segmenter refuses is captured whole: %s", exc)
            self.wire.write_skb(skb)

    def close(self) -> None:
        self.ring.close()
        self.wire.close()


def _record(pcap: Capture | None, skb: Skb) -> None:
    if pcap is not None:
        pcap.record(skb)


def _netns(spec: TapSpec) -> Netns:
    from ...ports.netns import Netns

    return Netns(spec.netns) if spec.netns else Netns.current()


def open_tap(spec: TapSpec, ns: Netns, *, gro: bool = False) -> Tap:
    """Create the TAP, set its MTU and address, bring it up."""
    from ...ports.tap import Tap

    tap = Tap.open(spec.name, netns=spec.netns, offloads=spec.offloads, mtu=spec.mtu, gro=gro)
    try:
        ns.set_mtu(spec.name, spec.mtu)
        if spec.mac:
            ns.set_mac(spec.name, spec.mac)
        if spec.address:
            ip, _, prefix = spec.address.partition("/")
            ns.add_address(spec.name, ip, int(prefix or 24))
        if spec.bridge:
            ns.set_master(spec.name, spec.bridge)
        ns.link_up(spec.name)
    except BaseException:
        tap.close()
        raise
    return tap


def serve_netfront(
    platform: Platform,
    xs: XenstoreClient,
    front: Netfront,
    spec: TapSpec,
    should_stop: StopFlag,
    *,
    pcap: Capture | None = None,
    on_connected: Callable[[], None] | None = None,
    poll_us: int = 0,
    reconnect: bool = False,
) -> dict[str, Any]:
    """Netfront <-> one TAP until ``should_stop()``, the device breaks or the TAP vanishes;
    then an orderly close.  Frames go as vectors straight between the TAP and the device's
    pool pages (with ``pcap``, as skbs, so they can be captured).  Returns the counters.

    With ``reconnect`` a device that closed under us (its backend died or closed) asks for a
    new connection at once and waits in Initialising for a backend to answer, as a guest's
    NIC outlives a driver-domain restart; the TAP stays, so the guest's sockets do too."""
    from ...ports.tap import TapGone

    ns = _netns(spec)
    tap = open_tap(spec, ns, gro=front.config.gro)
    tap_fd = tap.fileno()
    gone = ""
    announced = False
    reading = True  # the TAP is in the loop's selector (not while the tx queue is stopped)
    reconnects = 0
    reconnect_at = 0.0  # a closed device asks again no sooner than this (a backend that fails us)

    def to_tap(vec: PacketVec) -> None:
        tap.write_vec(vec, platform.memory.view)

    def on_event(port: int) -> None:
        if pcap is None:
            front.on_event(port, to_tap)
        else:
            for skb in front.on_event(port):
                _record(pcap, skb)
                try:
                    tap.write_skb(skb)
                finally:
                    skb.release()
        pump_tap()

    def pump_tap() -> None:
        nonlocal gone, reading
        tx = front.tx
        if not front.connected or tap.closed or tx is None:
            sync_reader()  # nobody to send to: a readable TAP must not spin the loop
            return
        if tx.ring.unconsumed_responses():
            front.on_event(front.tx_port)  # reap as we send: completions need not wake us
        try:
            if pcap is None:
                for _ in range(8):
                    if not tap.read_into(tx, budget=64) or tap.drained:
                        break
            else:
                while not tx.stopped:
                    skb = tap.read_skb(front.memory)
                    if skb is None:
                        break
                    _record(pcap, skb)
                    tx.send(skb)
        except TapGone as exc:
            gone = str(exc)
            tap.close()
            return
        front.flush()
        sync_reader()

    def sync_reader() -> None:
        """Read the TAP only while the device takes frames: a stopped queue or a closed device
        leaves them in the TAP (the kernel queues, then drops; TCP retransmits)."""
        nonlocal reading
        tx = front.tx
        want = front.connected and tx is not None and not tx.stopped and not tap.closed
        if reading and not want:
            loop.remove_reader(tap_fd)
            reading = False
        elif want and not reading:
            loop.add_reader(tap_fd, pump_tap)
            reading = True

    def idle() -> bool:
        port = front.port_with_responses()
        if port is not None:
            on_event(port)
        return port is not None

    loop = DomainLoop(platform, xs, front.on_watch, on_event, idle=idle, poll_us=poll_us)
    try:
        front.start()
        loop.add_reader(tap_fd, pump_tap)
        lost = ""  # xenstored went away: why
        try:
            while not should_stop() and not gone:
                if front.broken and not reconnect:
                    break
                if reconnect and front.dev.state == XenbusState.Closed and time.monotonic() >= reconnect_at:
                    reconnect_at = time.monotonic() + 0.5
                    if not front.dev.gone():  # detached: there is nothing to reconnect to
                        log.info("%s: closed; asking for a new connection", front.dev.nodename)
                        reconnects += 1
                        front.reconnect()
                loop.run_once(0.2)
                sync_reader()
                if front.connected and not announced:
                    announced = True
                    log.info("%s: connected; frames go to TAP %s", front.dev.nodename, spec.name)
                    if on_connected is not None:
                        on_connected()
                elif not front.connected:
                    announced = False
        except XenstoreConnectionError as exc:
            lost = str(exc)
            log.error("%s: xenstored is gone (%s): stopping; tearing down alone", front.dev.nodename, exc)
            front.drop()
            wait_for_revoke(front, 10.0)
        else:
            shut_down_netfront(front, loop)
        return {
            "role": "netfront",
            "state": front.dev.state.name,
            "transitions": [st.name for st in front.dev.transitions],
            "reconnects": reconnects,
            "stopped": _why_stopped(lost, gone, front.broken),
            "error": lost,
            "tap_gone": gone,
            "stats": front.stats.as_dict(),
            "tap": asdict(tap.stats),
            "accounting": asdict(platform.accounting()),
            "busy_hits": loop.busy_hits,
            "pcap_unsegmented": pcap.unsegmented if pcap is not None else 0,
        }
    finally:
        loop.close()
        tap.close()
        ns.close()


def _why_stopped(lost: str, tap_gone: str, broken: bool) -> str:
    if lost:
        return "xenstore_gone"
    return "tap_gone" if tap_gone else "broken" if broken else "asked"


def wait_for_revoke(front: Netfront, timeout_s: float) -> None:
    """Without xenstore (no loop to run): retry the grants the backend still maps until it
    lets go (it tears down too) or ``timeout_s`` passes."""
    end = time.monotonic() + timeout_s
    while front.pending_revoke and front.retry_revoke() and time.monotonic() < end:
        time.sleep(0.02)


def _busy_vifs(back: Netback, on_event: Callable[[int], None], rx_work: Callable[[Vif], None]) -> bool:
    """The busy-poll check of a netback loop: serve any vif with requests waiting."""
    found = False
    for vif in back.vifs.values():
        tx, rx = vif.tx, vif.rx
        if tx is not None and tx.ring.unconsumed_requests():
            on_event(vif.tx_port)
            found = True
        elif rx is not None and rx.queued and rx.ring.unconsumed_requests():
            rx_work(vif)
            found = True
    return found


def _run_netback(
    loop: DomainLoop, back: Netback, should_stop: StopFlag, look_over: Callable[[], None]
) -> str:
    """Start netback, run ``loop`` until ``should_stop()``, stop netback.  Returns why
    xenstored went away ("" if it did not): then every vif is torn down alone."""
    back.start()
    lost = ""
    try:
        while not should_stop():
            if not loop.run_once(0.2):
                look_over()
    except XenstoreConnectionError as exc:
        lost = str(exc)
        log.error("netback: xenstored is gone (%s): stopping; tearing every vif down alone", exc)
    back.stop()
    return lost


def serve_netback(
    platform: Platform,
    xs: XenstoreClient,
    back: Netback,
    tap_for: Callable[[Vif], TapSpec],
    should_stop: StopFlag,
    *,
    pcap: Capture | None = None,
    poll_us: int = 0,
) -> dict[str, Any]:
    """Netback with one TAP per connected vif (``tap_for`` names it) until ``should_stop()``.
    A vif that goes away loses its TAP; a TAP that vanishes takes only its vif down.  A
    wake-up does only what is pending: the vif whose port fired, the TAP that is readable;
    vifs are looked over only when xenstore changed or the loop timed out."""
    from ...ports.tap import TapGone

    taps: dict[str, Tap] = {}
    spaces: dict[str, Netns] = {}
    tap_stats: dict[str, Any] = {}
    view = platform.memory.view

    def ensure_tap(vif: Vif) -> Tap | None:
        tap = taps.get(vif.name)
        if tap is None and vif.connected:
            spec = tap_for(vif)
            ns = _netns(spec)
            try:
                tap = open_tap(spec, ns)
            except Exception as exc:  # noqa: BLE001 - OSError, or pyroute2's NetlinkError
                # no TAP for this vif (no tun, a name clash, no bridge): it goes down, the others go on
                ns.close()
                vif.fail("tap_open", f"cannot set up TAP {spec.name}: {exc}")
                return None
            except BaseException:
                ns.close()
                raise
            taps[vif.name], spaces[vif.name] = tap, ns
            loop.add_reader(tap.fileno(), functools.partial(from_tap, vif, tap))
            log.info("%s: connected; frames go to TAP %s", vif.name, spec.name)
        return tap

    def drop_tap(name: str) -> None:
        tap = taps.pop(name)
        loop.remove_reader(tap.fileno())
        tap_stats[name] = asdict(tap.stats)
        tap.close()
        spaces.pop(name).close()

    def from_tap(vif: Vif, tap: Tap) -> None:
        try:
            rx = vif.rx
            if rx is None:
                return
            if pcap is None and rx.room():
                for _ in range(8):
                    if not tap.read_into(rx, budget=64) or tap.drained:
                        break
            else:
                while vif.connected:
                    skb = tap.read_skb(vif.memory)
                    if skb is None:
                        break
                    _record(pcap, skb)
                    vif.send_to_guest(skb)
            vif.kick_rx()
        except TapGone as exc:
            drop_tap(vif.name)
            vif.fail("tap_gone", f"host TAP is gone: {exc}")

    def on_event(port: int) -> None:
        vif = back.vif_for_port(port)
        if vif is None:
            return
        tap = ensure_tap(vif)

        def to_tap(batch: TxBatch) -> None:
            if tap is None or tap.closed:
                vif.stats.tx_errors["no_tap"] += batch.vec.delivered + len(batch.skbs)
                for skb in batch.skbs:
                    skb.release()
                return
            tap.write_vec(batch.vec, view)
            for skb in batch.skbs:  # data=map: the guest's pages
                try:
                    tap.write_skb(skb)
                finally:
                    skb.release()

        if pcap is None:
            vif.on_event(port, to_tap)
        else:
            for skb in vif.on_event(port):
                _record(pcap, skb)
                try:
                    if tap is not None and not tap.closed:
                        tap.write_skb(skb)
                finally:
                    skb.release()
        vif.flush_tx_responses()

    def idle() -> bool:
        return _busy_vifs(back, on_event, lambda vif: vif.kick_rx())

    def look_over() -> None:
        live = {vif.name for vif in back.vifs.values() if vif.connected}
        for name in [n for n in taps if n not in live]:
            drop_tap(name)  # the guest went away: a new one gets a fresh TAP
        for vif in back.vifs.values():
            if vif.connected:
                ensure_tap(vif)
                vif.kick_rx()  # the XSA-392 stall clock runs here too
                vif.flush_tx_responses()

    def on_watch(path: str, token: str) -> None:
        back.on_watch(path, token)
        look_over()

    loop = DomainLoop(platform, xs, on_watch, on_event, idle=idle, poll_us=poll_us)
    try:
        lost = _run_netback(loop, back, should_stop, look_over)
        info = back.report()
        for name in list(taps):
            tap_stats[name] = asdict(taps[name].stats)
        return {
            "role": "netback",
            "stopped": _why_stopped(lost, "", False),
            "error": lost,
            "vifs": info,
            "taps": tap_stats,
            "accounting": asdict(platform.accounting()),
            "busy_hits": loop.busy_hits,
            "pcap_unsegmented": pcap.unsegmented if pcap is not None else 0,
        }
    finally:
        loop.close()
        for tap in taps.values():
            tap.close()
        for ns in spaces.values():
            ns.close()


def serve_bridge(
    platform: Platform,
    xs: XenstoreClient,
    back: Netback,
    bridge: LearningBridge,
    should_stop: StopFlag,
    *,
    poll_us: int = 0,
) -> dict[str, Any]:
    """Netback whose connected vifs are the ports of ``bridge`` (seed 003), until
    ``should_stop()``.  A frame from one guest goes to another guest's rx queue as the skb
    netback made of it: under ``data=map`` it still points at the sender's grant, and the
    receiver's rx path grant-copies it from there."""
    from ...ports.bridge import VifPort

    ports: set[str] = set()

    def look_over() -> None:
        live = {vif.name: vif for vif in back.vifs.values() if vif.connected}
        for name in [n for n in ports if n not in live]:
            bridge.detach(name)
            ports.discard(name)
        for name, vif in live.items():
            if name not in ports:
                bridge.attach(VifPort(vif))
                ports.add(name)
                log.info("%s: connected; a port of the bridge", name)
        settle()

    def settle() -> None:
        # every receiver copies first; then the senders' slots can be answered (under
        # data=map a tx slot is answered only once its last receiver has its copy)
        for vif in back.vifs.values():
            vif.kick_rx()  # the XSA-392 stall clock runs here too
        for vif in back.vifs.values():
            vif.flush_tx_responses()

    def on_event(port: int) -> None:
        vif = back.vif_for_port(port)
        if vif is None:
            return
        if vif.connected and vif.name not in ports:
            look_over()
        for skb in vif.on_event(port):
            if vif.name in ports:
                bridge.input(vif.name, skb)  # the bridge takes our reference
            else:
                vif.stats.tx_errors["no_port"] += 1
                skb.release()
        settle()

    def idle() -> bool:
        return _busy_vifs(back, on_event, lambda _vif: settle())

    def on_watch(path: str, token: str) -> None:
        back.on_watch(path, token)
        look_over()

    loop = DomainLoop(platform, xs, on_watch, on_event, idle=idle, poll_us=poll_us)
    try:
        lost = _run_netback(loop, back, should_stop, look_over)
        return {
            "role": "netback",
            "stopped": _why_stopped(lost, "", False),
            "error": lost,
            "vifs": back.report(),
            "bridge": {
                "forwarded": bridge.stats.forwarded,
                "flooded": bridge.stats.flooded,
                "dropped": dict(bridge.stats.dropped),
                "fdb": len(bridge.fdb),
            },
            "accounting": asdict(platform.accounting()),
            "busy_hits": loop.busy_hits,
        }
    finally:
        loop.close()
