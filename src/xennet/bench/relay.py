"""The naive relay: what a user writes instead of xennet to join two namespaces.

One Python thread selects over two TAPs (IFF_VNET_HDR, with checksum and TSO offloads on)
and copies each frame from one to the other with ``os.read``/``os.write``.  It is a peer
in the benchmarks, so it is kept exactly this simple: no batching, no tuning.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ports.netns import Netns

TUNSETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD = 0x400454CA, 0x400454D8, 0x400454D0
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def relay(a: int, b: int) -> None:
    """Copy frames between TAP fds ``a`` and ``b`` until SIGTERM."""
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    other = {a: b, b: a}
    while running:
        try:
            ready, _, _ = select.select([a, b], [], [], 0.5)
        except InterruptedError:
            continue
        for fd in ready:
            frame = os.read(fd, 65536 + 64)
            try:
                os.write(other[fd], frame)
            except OSError:
                pass  # the other side is down (not up yet): drop the frame


# --- the harness (not the peer): namespaces around it, and its process -----------------------


def relay_process(name_a: str, name_b: str, ready: Any) -> None:
    """The relay's process: open both TAPs (in this namespace), say so, relay until SIGTERM."""
    a, b = open_tap(name_a), open_tap(name_b)
    ready.send(b"up")
    relay(a, b)


class RelayLink:
    """Two namespaces joined by the naive relay: ``ip_a`` in ``a``, ``ip_b`` in ``b``."""

    def __init__(self, subnet: int, n: int, mtu: int = 1500) -> None:
        import multiprocessing as mp

        from ..ports.netns import unique_name

        ctx = mp.get_context("spawn")
        self.name_a, self.name_b = unique_name("xnra"), unique_name("xnrb")
        recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=relay_process, args=(self.name_a, self.name_b, send), daemon=True)
        self.proc.start()
        self.a: Netns | None = None
        self.b: Netns | None = None
        try:
            if not recv.poll(30):
                raise TimeoutError("the relay did not start")
            recv.recv()
            from ..ports.netns import Netns

            root = Netns.current()
            self.a, self.b = Netns.create(prefix="xnra"), Netns.create(prefix="xnrb")
            self.ip_a, self.ip_b = f"10.{subnet}.{n}.1", f"10.{subnet}.{n}.2"
            for name, ns, ip in ((self.name_a, self.a, self.ip_a), (self.name_b, self.b, self.ip_b)):
                root.move_link(name, ns)
                ns.set_mtu(name, mtu)
                ns.add_address(name, ip, 24)
                ns.link_up(name)
            root.close()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        for ns in (self.a, self.b):
            if ns is not None:
                ns.delete()

    def __enter__(self) -> RelayLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
