"""``vnet``: what a TAP hands us -- a virtio-net header and a frame, as one read -- through
the real ``Tap.read_skb`` (on one end of a SOCK_SEQPACKET pair: one datagram per read, as a
TAP gives one frame per read), then what a port does with a frame it took: software GSO
segmentation (``gso.segment`` and ``segment_to_fit``), checksum completion and checks, and
``Tap.write_skb`` back out (the header for the skb's offload state).

Allowed: the documented refusals -- ``VnetError`` (read_skb turns it into a counted drop),
``GsoError``, ``CsumError``, ``FrameError``.  Anything else is a crash.  Pages come from a
source that refuses a double or foreign free (a crash) and must all be back after each
input (else a leak).  Input: byte 0 picks the MTU and offloads; then the 10-byte header and
the frame, exactly the bytes of the read.
"""

from __future__ import annotations

import os
import socket

from xennet.packet import gso
from xennet.packet.csum import CsumError, complete_partial
from xennet.packet.frames import FrameError, build_frame, frame_skb, verify
from xennet.packet.skb import GSO_NONE, MAX_SKB_FRAGS, HeapPages, Skb
from xennet.platform.base import PAGE_SIZE, Page
from xennet.ports import vnet
from xennet.ports.tap import Tap

from . import harness

MTUS = (1500, 9000, 68, 65535)
REFUSALS = (vnet.VnetError, gso.GsoError, CsumError, FrameError)


class Pages(HeapPages):
    """Heap pages that know which are out: freeing one twice, or one never handed out, is a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.out: dict[int, Page] = {}

    def alloc(self, order: int = 0) -> Page:
        page = super().alloc(order)
        self.out[id(page)] = page
        return page

    def free(self, page: Page) -> None:
        if self.out.pop(id(page), None) is None:
            raise AssertionError("a page freed twice, or one this source never handed out")
        super().free(page)


class Harness(harness.Harness):
    max_len = 1 + vnet.VNET_HDR_LEN + 65535 + 64
    check_every = 128

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self.ours, self.theirs):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.tap = Tap(os.dup(self.ours.fileno()), "fuzz0", offloads=True, mtu=1500)
        self.pages = Pages()
        self.leaked = ""

    def seeds(self) -> list[bytes]:
        out = []
        src = HeapPages()
        for ip in (4, 6):
            for gso_size, n in ((0, 5), (1448, 12), (536, 80)):
                f = build_frame(ip=ip, payload=bytes(range(256)) * n, csum="partial")
                skb = frame_skb(f, src, gso_size=gso_size)
                out.append(b"\0" + vnet.from_skb(skb).pack() + f.data)
                skb.release()
        udp = build_frame(proto="udp", payload=b"u" * 100)
        out.append(b"\0" + vnet.VnetHdr(flags=vnet.VIRTIO_NET_HDR_F_DATA_VALID).pack() + udp.data)
        return out

    def one(self, data: bytes) -> None:
        if not data:
            return
        self.tap.mtu = MTUS[data[0] & 3]
        self.tap.offloads = not data[0] & 4
        self.theirs.send(data[1:])
        try:
            skb = self.tap.read_skb(self.pages, budget=1)
            if skb is not None:
                self._carry(skb, data[0])
        finally:
            self._drain()
        if self.pages.live and not self.leaked:
            self.leaked = f"{self.pages.live} pages still out after a frame"

    def _carry(self, skb: Skb, mode: int) -> None:
        try:
            if skb.gso_type != GSO_NONE:
                segs = gso.segment(skb, skb.gso_size, self.pages)
                try:
                    for s in segs:
                        complete_partial(s)
                        verify(s.data())
                finally:
                    for s in segs:
                        s.free(self.pages)
                fits = gso.segment_to_fit(skb, lambda s: s.slots() <= MAX_SKB_FRAGS, self.pages)
                for s in fits:
                    if s is not skb:
                        s.free(self.pages)
            if mode & 8:
                complete_partial(skb)
                verify(skb.data())
            self.tap.write_skb(skb)
        except REFUSALS:
            pass
        finally:
            skb.release()

    def _drain(self) -> None:
        while True:
            try:
                self.theirs.recv(PAGE_SIZE * (MAX_SKB_FRAGS + 2))
            except BlockingIOError:
                break
        while True:  # a read that refused the frame may have left it (it did not read it)
            try:
                self.ours.recv(PAGE_SIZE * (MAX_SKB_FRAGS + 2))
            except BlockingIOError:
                break

    def check(self) -> None:
        if self.leaked:
            what, self.leaked = self.leaked, ""
            self.pages = Pages()
            raise harness.Leak(what)

    def close(self) -> None:
        self.tap.close()
        self.theirs.close()
        self.ours.close()
