"""The naive relays: what a user writes instead of xennet to join two namespaces.

- ``relay``: one Python thread selects over two TAPs (IFF_VNET_HDR, with checksum and TSO
  offloads on) and copies each frame from one to the other with ``os.read``/``os.write``.
- ``relay_half``: the same split in two processes, one TAP each, joined by a Unix
  SOCK_SEQPACKET socketpair (a frame a message).  It has xennet's shape -- a guest-side and
  a host-side process, a wake-up on each side of every hop -- and none of its protocol, so
  beside the one-process relay it shows what the second process costs by itself.

They are peers in the benchmarks, so they are kept exactly this simple: no batching, no
tuning.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
from collections.abc import Callable
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


def relay_half(tap: int, peer: socket.socket) -> None:
    """Copy frames between TAP fd ``tap`` and ``peer`` (the other half) until SIGTERM."""
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    sock = peer.fileno()
    while running:
        try:
            ready, _, _ = select.select([tap, sock], [], [], 0.5)
        except InterruptedError:
            continue
        for fd in ready:
            try:
                if fd == tap:
                    peer.send(os.read(tap, 65536 + 64))
                else:
                    os.write(tap, peer.recv(65536 + 64))
            except OSError:
                pass  # the TAP is down (not up yet): drop the frame


# --- the harness (not the peer): namespaces around it, and its process -----------------------


def relay_process(name_a: str, name_b: str, ready: Any) -> None:
    """The relay's process: open both TAPs (in this namespace), say so, relay until SIGTERM."""
    a, b = open_tap(name_a), open_tap(name_b)
    ready.send(b"up")
    relay(a, b)


def relay_half_process(name: str, peer: socket.socket, ready: Any) -> None:
    """One half's process: open its TAP (in this namespace), say so, relay until SIGTERM."""
    tap = open_tap(name)
    ready.send(b"up")
    relay_half(tap, peer)


class RelayLink:
    """Two namespaces joined by the naive relay: ``ip_a`` in ``a``, ``ip_b`` in ``b``.  With
    ``split`` the relay is two processes (``relay_half``), one each side."""

    def __init__(self, subnet: int, n: int, mtu: int = 1500, *, split: bool = False) -> None:
        import multiprocessing as mp

        from ..ports.netns import unique_name

        ctx = mp.get_context("spawn")
        self.name_a, self.name_b = unique_name("xnra"), unique_name("xnrb")
        self.procs: list[Any] = []
        self.a: Netns | None = None
        self.b: Netns | None = None
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if split else ()
        try:
            jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]
            if split:
                names = (self.name_a, self.name_b)
                jobs = [(relay_half_process, (name, end)) for name, end in zip(names, ends, strict=True)]
            else:
                jobs = [(relay_process, (self.name_a, self.name_b))]
            try:
                for target, args in jobs:
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=target, args=(*args, send), daemon=True)
                    proc.start()
                    self.procs.append(proc)
                    if not recv.poll(30):
                        raise TimeoutError("the relay did not start")
                    recv.recv()
            finally:
                for end in ends:
                    end.close()  # the processes have their own copies
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
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for ns in (self.a, self.b):
            if ns is not None:
                ns.delete()

    def __enter__(self) -> RelayLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
