"""A Linux TAP device with a virtio-net header: real Ethernet frames in and out of xennet,
with checksum offload and TCP segmentation offload (GSO) passed through, not undone.

Opening: ``/dev/net/tun`` with ``TUNSETIFF`` (``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``), then
``TUNSETVNETHDRSZ`` 10, ``TUNSETVNETLE`` 1 (so the header is little-endian on any host) and
``TUNSETOFFLOAD`` (``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`` when offloads are on, else 0:
then the kernel completes checksums and segments before the frame reaches us).  The fd is
non-blocking; poll ``fileno()``.  The device is not persistent: closing the fd removes it.

In a network namespace: ``Tap.open(netns="name")`` opens ``/dev/net/tun`` from a thread that
has entered the namespace (``netns.run_in_netns``), and the TAP is created there -- a TAP
lives in the namespace its file was opened in.  Everything else (ioctls, reads, writes)
works from any thread.  Configure the link (up, MTU, addresses) with ``netns.Netns``.

Reading (``read_skb``): one ``readv`` puts the vnet header into a small bytearray and the
frame straight into 4 KiB pages from the caller's ``PageSource`` -- no staging copy.  The
first page becomes the skb's head and each following page that received bytes a frag; pages
that received nothing go back to the source.  Writing (``write_skb``): one ``writev`` of the
header and views of the skb's buffers -- no copy either.

Drops are counted by reason (``TapStats.rx_drops`` / ``tx_drops``), never passed on.  A TAP
that goes away underneath us (the link deleted: EBADFD; ENODEV/EIO/ENXIO) raises ``TapGone``
once, after which the ``Tap`` is closed: the caller brings its vif down.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..abi.grant_table import DOMID_SELF
from ..core import kernels
from ..core import records as r
from ..core.pure.codecs import PIECE as PIECE_CODEC
from ..core.pure.codecs import PKT as PKT_CODEC
from ..core.vec import PacketVec
from ..packet import gro
from ..packet.csum import TCP_CSUM_OFFSET, BytesLike
from ..packet.pool import PoolPages
from ..packet.skb import (
    ETH_HLEN,
    GSO_NONE,
    MAX_PACKET,
    MAX_SKB_FRAGS,
    Buf,
    Csum,
    PageSource,
    Skb,
    csum_of,
    csum_state,
)
from ..platform.base import PAGE_SIZE, Page
from . import vnet
from .netns import NsRef, run_in_netns
from .vnet import VNET_HDR_LEN, Offload, VnetError, VnetHdr


class Producer(Protocol):
    """Where a port puts the frames it reads: a driver queue's packet vector, on its pool."""

    @property
    def vec(self) -> PacketVec: ...

    @property
    def pages(self) -> PoolPages: ...

    def room(self) -> int:
        """Packets that may be appended to ``vec`` now (0: stopped)."""
        ...

    def commit(self, first: int, nbytes: int) -> None:
        """Packets ``first..vec.npkts`` (``nbytes`` in all) were appended: take them."""
        ...


_PKT = PKT_CODEC
_PKT_SIZE = r.PKT.size
_PIECE = PIECE_CODEC
_PIECE_SIZE = r.PIECE.size
_NO_OFFLOAD = bytes(VNET_HDR_LEN)
# GRO looks at frames in between: a shorter one is a pure ACK or a few bytes, a longer one
# already gives the stack what merging would
_GRO_MIN, _GRO_MAX = 256, 0x8000


TUN_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>, asm-generic ioctl encoding (x86, arm, arm64, riscv, s390):
#   _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; _IOC_WRITE 1, _IOC_READ 2
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | ord(kind) << 8 | nr


_INT = 4  # sizeof(int) == sizeof(unsigned int)
TUNSETIFF = _ioc(_IOC_WRITE, "T", 202, _INT)  # 0x400454ca
TUNGETFEATURES = _ioc(_IOC_READ, "T", 207, _INT)  # 0x800454cf
TUNSETOFFLOAD = _ioc(_IOC_WRITE, "T", 208, _INT)  # 0x400454d0
TUNGETIFF = _ioc(_IOC_READ, "T", 210, _INT)  # 0x800454d2
TUNGETVNETHDRSZ = _ioc(_IOC_READ, "T", 215, _INT)  # 0x800454d7
TUNSETVNETHDRSZ = _ioc(_IOC_WRITE, "T", 216, _INT)  # 0x400454d8
TUNSETVNETLE = _ioc(_IOC_WRITE, "T", 220, _INT)  # 0x400454dc
TUNGETVNETLE = _ioc(_IOC_READ, "T", 221, _INT)  # 0x800454dd

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, ifr_flags, rest of the 24-byte union

# Frames a TAP with TSO can hand us: 64 KiB of IP packet + Ethernet + a VLAN tag.  The read
# buffers hold one byte more, so a frame that fills them all is known to be truncated.
MAX_TAP_FRAME = 0xFFFF + ETH_HLEN + 4

# errnos that mean the device is gone: EBADFD (tun detached: link deleted), ENODEV, EIO,
# ENXIO, EBADF (the fd itself closed under us)
_GONE = frozenset({errno.EBADFD, errno.ENODEV, errno.EIO, errno.ENXIO, errno.EBADF})
_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})


class TapError(OSError):
    """Opening or configuring a TAP failed; the message says which step."""


class TapGone(Exception):
    """The TAP disappeared (its link was deleted, or its fd is no longer valid).  The ``Tap``
    is closed by the time this is raised; bring the vif down."""

    def __init__(self, name: str, err: int, during: str) -> None:
        super().__init__(f"TAP {name} gone during {during}: {os.strerror(err)}")
        self.name = name
        self.errno = err


@dataclass
class TapStats:
    """Counters; ``rx_drops``/``tx_drops`` map a reason (``VnetError.reason``, ``truncated``,
    ``tx_busy``, ``kernel_einval``, ...) to a count.  Plain dicts, so ``dataclasses.asdict``
    and JSON keep them as they are."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    gro_frames: int = 0  # frames written that GRO merged (each counts once in tx_packets)
    gro_segments: int = 0  # the packets that went into them
    rx_drops: dict[str, int] = field(default_factory=dict)
    tx_drops: dict[str, int] = field(default_factory=dict)

    def drop_rx(self, reason: str) -> None:
        self.rx_drops[reason] = self.rx_drops.get(reason, 0) + 1

    def drop_tx(self, reason: str) -> None:
        self.tx_drops[reason] = self.tx_drops.get(reason, 0) + 1


def _pages_for(max_frame: int) -> int:
    n = -(-(max_frame + 1) // PAGE_SIZE)
    if n > MAX_SKB_FRAGS + 1:
        raise ValueError(f"a {max_frame}-byte frame needs {n} pages: an skb has at most {MAX_SKB_FRAGS + 1}")
    return n


class Tap:
    """An open TAP.  Use ``Tap.open``; close with ``close()`` or a ``with`` block."""

    def __init__(self, fd: int, name: str, *, offloads: bool, mtu: int, gro: bool = False) -> None:
        self._fd = fd
        self.name = name
        self.offloads = offloads
        self.gro = gro and offloads  # a merged frame is GSO: only a TAP with offloads takes it
        self.mtu = mtu  # what read_skb/write_skb hold non-GSO frames to (set the link's with Netns)
        self.stats = TapStats()
        self._hdr = bytearray(VNET_HDR_LEN)
        self._scratch = bytearray(0)  # read_into's landing buffer
        self._wbuf = bytearray(MAX_TAP_FRAME)  # write_vec gathers multi-piece packets here
        # read_into's last call emptied the TAP (it ended on EAGAIN): reading again before the
        # loop says readable would only cost a failing readv
        self.drained = False

    @classmethod
    def open(
        cls,
        name: str = "xtap%d",
        *,
        netns: NsRef | None = None,
        offloads: bool = True,
        mtu: int = 1500,
        gro: bool = False,
    ) -> Tap:
        """Create TAP ``name`` (``%d`` lets the kernel number it; ``.name`` is the real one),
        inside namespace ``netns`` when given; ``gro`` merges what ``write_vec`` sends."""
        if len(name.encode()) >= IFNAMSIZ:
            raise TapError(errno.EINVAL, f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
        flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            if netns is None:
                fd = os.open(TUN_DEVICE, flags)
            else:
                fd = run_in_netns(netns, os.open, TUN_DEVICE, flags)
        except OSError as e:
            hint = " (load the tun module: modprobe tun)" if e.errno == errno.ENOENT else ""
            raise TapError(e.errno, f"open {TUN_DEVICE}: {e.strerror}{hint}") from None
        step = "TUNSETIFF"
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
            real = bytes(ifr[:IFNAMSIZ]).split(b"\0", 1)[0].decode()
            step = "TUNSETVNETHDRSZ"
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            step = "TUNSETVNETLE"
            fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
            step = "TUNSETOFFLOAD"
            fcntl.ioctl(fd, TUNSETOFFLOAD, OFFLOADS if offloads else 0)
        except OSError as e:
            os.close(fd)
            raise TapError(e.errno, f"TAP {name}: {step}: {e.strerror}") from None
        return cls(fd, real, offloads=offloads, mtu=mtu, gro=gro)

    # -- state -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"TAP {self.name} is closed")
        return self._fd

    def close(self) -> None:
        """Close the fd (the non-persistent device goes with it).  Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass  # already invalid: nothing left to release

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Tap({self.name!r}, fd={self._fd}, offloads={self.offloads}, mtu={self.mtu})"

    def _gone(self, err: int, during: str) -> TapGone:
        self.close()
        return TapGone(self.name, err, during)

    def _max_frame(self) -> int:
        return MAX_TAP_FRAME if self.offloads else vnet.max_frame_len(self.mtu, vlan=True)

    # -- receive -----------------------------------------------------------------------------

    def read_skb(self, source: PageSource, *, max_frame: int | None = None, budget: int = 64) -> Skb | None:
        """The next frame as an skb on pages of ``source`` (the caller owns it: ``release()``),
        or None when nothing is waiting.  Malformed frames are counted in ``stats.rx_drops``
        and skipped (at most ``budget`` of them per call).  TapGone if the device is gone."""
        npages = _pages_for(self._max_frame() if max_frame is None else max_frame)
        for _ in range(budget):
            try:
                skb = self._read_one(source, npages)
            except _Dropped:
                continue
            return skb
        return None

    def _read_one(self, source: PageSource, npages: int) -> Skb | None:
        fd = self.fileno()
        pages: list[Page] = []
        try:
            for _ in range(npages):
                pages.append(source.alloc(0))
            while True:
                try:
                    n = os.readv(fd, [self._hdr, *(p.view for p in pages)])
                    break
                except InterruptedError:
                    continue
        except OSError as e:
            for p in pages:
                source.free(p)
            if e.errno in _AGAIN:
                return None
            if e.errno in _GONE:
                raise self._gone(e.errno, "read") from None
            raise
        except BaseException:
            for p in pages:
                source.free(p)
            raise
        length = n - VNET_HDR_LEN
        used = max(1, -(-length // PAGE_SIZE)) if length > 0 else 1
        try:
            if n < VNET_HDR_LEN:
                raise VnetError("vnet_short", f"read of {n} bytes: shorter than the vnet header")
            if length >= npages * PAGE_SIZE:
                raise VnetError("truncated", f"frame filled all {npages} read pages: truncated")
            hdr = VnetHdr.unpack(self._hdr)
            vlan = vnet.has_vlan_tag(pages[0].view[:ETH_HLEN]) if length >= ETH_HLEN else False
            vnet.check_frame(hdr, length, self.mtu, vlan=vlan, max_len=MAX_PACKET)
            bufs = [Buf(p, 0, min(PAGE_SIZE, length - i * PAGE_SIZE)) for i, p in enumerate(pages[:used])]
            skb = Skb(bufs[0], bufs[1:], pages=pages[:used], source=source)
            vnet.apply_vnet_hdr(skb, hdr)
        except VnetError as e:
            for p in pages:
                source.free(p)
            self.stats.drop_rx(e.reason)
            raise _Dropped from None
        for p in pages[used:]:
            source.free(p)
        self.stats.rx_packets += 1
        self.stats.rx_bytes += length
        return skb

    def read_into(self, prod: Producer, *, budget: int = 64, max_frame: int | None = None) -> int:
        """Read up to ``budget`` frames into packets of ``prod``'s vector, on its pool pages:
        one ``readv`` into a buffer of the TAP's, then one kernel call copies the frame into
        pool frames with its offload state.  Returns frames read (dropped ones are counted
        in ``stats.rx_drops``, not returned); ``drained`` says whether the TAP was emptied.
        TapGone if the device is gone."""
        room = min(budget, prod.room())
        self.drained = False
        if room <= 0:
            return 0
        limit = self._max_frame() if max_frame is None else max_frame
        if len(self._scratch) < limit + 1:
            self._scratch = bytearray(limit + 1)
        sv = memoryview(self._scratch)
        iov: list[bytearray | memoryview] = [self._hdr, sv[: limit + 1]]
        pool, vec = prod.pages, prod.vec
        fd = self.fileno()
        first = vec.npkts
        nbytes = got = 0
        try:
            for _ in range(4 * budget):  # dropped frames do not count against the budget
                if got >= room or not vec.room(MAX_SKB_FRAGS + 1):
                    break
                try:
                    n = os.readv(fd, iov)
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno in _AGAIN:
                        self.drained = True
                        break
                    if e.errno in _GONE:
                        raise self._gone(e.errno, "read") from None
                    raise
                length = n - VNET_HDR_LEN
                try:
                    o = self._offload(n, length, limit, sv)
                except VnetError as e:
                    self.stats.drop_rx(e.reason)
                    continue
                flags = csum_state(o.csum)
                for _attempt in range(2):
                    ok, npieces = kernels.vec_fill_frame(
                        pool.view, pool.pool.buf, sv[:length], flags, o.gso_size, o.gso_type, o.csum_start,
                        o.csum_offset, vec.pkts, vec.pieces, vec.npkts, vec.npieces, vec.max_pieces,
                    )  # fmt: skip
                    if ok or not pool.ensure(MAX_SKB_FRAGS + 1):
                        break
                if not ok:
                    self.stats.drop_rx("no_memory")
                    continue
                vec.npkts += 1
                vec.npieces = npieces
                got += 1
                nbytes += length
                self.stats.rx_packets += 1
                self.stats.rx_bytes += length
        finally:
            if got:
                prod.commit(first, nbytes)
        return got

    def _offload(self, n: int, length: int, limit: int, frame: memoryview) -> Offload:
        if n < VNET_HDR_LEN:
            raise VnetError("vnet_short", f"read of {n} bytes: shorter than the vnet header")
        if length > limit:
            raise VnetError("truncated", f"frame of more than {limit} bytes: truncated")
        hdr = VnetHdr.unpack(self._hdr)
        vlan = length >= ETH_HLEN and _vlan(frame)
        vnet.check_frame(hdr, length, self.mtu, vlan=vlan, max_len=MAX_PACKET)
        return vnet.to_offload(hdr, length)

    def write_vec(self, vec: PacketVec, view: memoryview) -> int:
        """Send ``vec``'s delivered packets (pieces in ``view``, the domain's memory) to the
        kernel, each with the vnet header of its offload state: a packet of one piece as it
        is, a longer one gathered into a buffer of the TAP's first.  With ``gro``, runs of
        in-order TCP segments of one flow go as one GSO frame (``packet.gro``).  Returns
        frames sent; packets that could not go are counted in ``stats.tx_drops``.  The caller
        still owns ``vec``."""
        if not self.gro or vec.npkts < 2:
            return sum(self._write_one(vec, view, j) for j in range(vec.npkts))
        segs = [self._gro_seg(vec, view, j) for j in range(vec.npkts)]
        sent = j = 0
        for run in gro.plan(segs):
            sent += self._write_one(vec, view, j) if run == 1 else self._write_merged(vec, view, j, run, segs)
            j += run
        return sent

    def _write_one(self, vec: PacketVec, view: memoryview, j: int) -> int:
        piece0, npieces, flags, length, _tag, gso_size, gso_type, error, cs, co = _PKT.unpack_from(
            vec.pkts, j * _PKT_SIZE
        )
        if not npieces or error:
            return 0
        if npieces == 1:
            frame, off, plen, _ref, domid, _pf = _PIECE.unpack_from(vec.pieces, piece0 * _PIECE_SIZE)
            if domid != DOMID_SELF:
                self.stats.drop_tx("foreign")
                return 0
            data = view[frame * PAGE_SIZE + off : frame * PAGE_SIZE + off + plen]
        else:
            data = memoryview(self._wbuf)[: kernels.vec_gather(view, vec.pkts, vec.pieces, j, self._wbuf)]
        try:
            if not flags and not gso_size:
                hdr = _NO_OFFLOAD
            else:
                o = Offload(csum_of(flags), cs, co, gso_type, gso_size)
                hdr = vnet.for_offload(o, length, functools.partial(_tcp_hdr_len, [data], o)).pack()
            vnet.check_length(bool(gso_size), length, self.mtu, vlan=_vlan(data))
        except VnetError as e:
            self.stats.drop_tx(e.reason)
            return 0
        return int(self._writev(hdr, [data], length))

    def _gro_seg(self, vec: PacketVec, view: memoryview, j: int) -> gro.Seg | None:
        """Packet ``j`` as a segment GRO may merge, or None: its checksum must be partial or
        validated, every piece local, the headers in the first."""
        piece0, npieces, flags, length, _tag, gso_size, gso_type, error, _cs, _co = _PKT.unpack_from(
            vec.pkts, j * _PKT_SIZE
        )
        if (
            not npieces
            or error
            or not flags & (r.PKT_CSUM_PARTIAL | r.PKT_DATA_VALIDATED)
            or not _GRO_MIN <= length <= _GRO_MAX
            or bool(gso_size) != (gso_type != GSO_NONE)
        ):
            return None
        for k in range(piece0, piece0 + npieces):
            domid, pflags = _PIECE.unpack_from(vec.pieces, k * _PIECE_SIZE)[4:]
            if domid != DOMID_SELF or pflags & r.PIECE_RUN:
                return None
        frame, off, plen = _PIECE.unpack_from(vec.pieces, piece0 * _PIECE_SIZE)[:3]
        start = frame * PAGE_SIZE + off
        return gro.seg_of(view[start : start + min(plen, gro.MAX_HEADER)], length, gso_size, gso_type)

    def _write_merged(
        self, vec: PacketVec, view: memoryview, j: int, run: int, segs: list[gro.Seg | None]
    ) -> int:
        """Packets ``j`` .. ``j + run - 1``, which ``gro.plan`` grouped, as one GSO frame: the
        first's headers rewritten, then every packet's payload, in one ``writev``."""
        first = segs[j]
        assert first is not None
        parts: list[memoryview] = []
        payload = 0
        psh = False
        for m in range(j, j + run):
            seg = segs[m]
            assert seg is not None
            payload += seg[3]
            psh = psh or seg[5]
            piece0, npieces = _PKT.unpack_from(vec.pkts, m * _PKT_SIZE)[:2]
            skip = seg[2]  # each packet's own headers are left out
            for k in range(piece0, piece0 + npieces):
                frame, off, plen = _PIECE.unpack_from(vec.pieces, k * _PIECE_SIZE)[:3]
                start = frame * PAGE_SIZE + off + skip
                if plen > skip:
                    parts.append(view[start : start + plen - skip])
                skip = max(0, skip - plen)
        piece0 = _PKT.unpack_from(vec.pkts, j * _PKT_SIZE)[0]
        frame0, off0 = _PIECE.unpack_from(vec.pieces, piece0 * _PIECE_SIZE)[:2]
        at = frame0 * PAGE_SIZE + off0
        hlen, gso_size, l4, gso_type = first[2], first[4], first[6], first[7]
        length = hlen + payload
        o = Offload(Csum.PARTIAL, l4, TCP_CSUM_OFFSET, gso_type, gso_size or first[3])
        try:
            hdr = vnet.for_offload(o, length, lambda: hlen).pack()
        except VnetError as e:  # gro.plan keeps within the limits: this is a bug, not a peer
            self.stats.drop_tx(e.reason)
            return 0
        head = gro.merged_header(view[at : at + hlen], first, payload, psh)
        if not self._writev(hdr, [head, *parts], length):
            return 0
        self.stats.gro_frames += 1
        self.stats.gro_segments += run
        return 1

    # -- transmit ----------------------------------------------------------------------------

    def write_skb(self, skb: Skb) -> bool:
        """Send ``skb`` to the kernel with a vnet header for its offload state.  False (and a
        ``stats.tx_drops`` count) when it cannot go; the caller still owns ``skb`` either way."""
        try:
            hdr = vnet.from_skb(skb)
            vnet.check_frame(hdr, skb.len, self.mtu, vlan=vnet.has_vlan_tag(skb.read(0, min(skb.len, 14))))
        except VnetError as e:
            self.stats.drop_tx(e.reason)
            return False
        return self._writev(hdr.pack(), [b.view for b in skb.bufs], skb.len)

    def write_frame(self, frame: BytesLike | Sequence[BytesLike], hdr: VnetHdr | None = None) -> bool:
        """Send raw frame bytes (one buffer or several) with ``hdr`` (default: no offload).
        Only the header's own sanity is checked, not the MTU: this injects what it is given."""
        parts = [frame] if isinstance(frame, bytes | bytearray | memoryview) else list(frame)
        length = sum(len(p) for p in parts)
        h = hdr or VnetHdr()
        try:
            vnet.to_offload(h, length)
        except VnetError as e:
            self.stats.drop_tx(e.reason)
            return False
        return self._writev(h.pack(), parts, length)

    def _writev(self, hdr: bytes, parts: Sequence[BytesLike], length: int) -> bool:
        fd = self.fileno()
        while True:
            try:
                n = os.writev(fd, [hdr, *parts])
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _GONE:
                    raise self._gone(e.errno, "write") from None
                reason = {errno.EINVAL: "kernel_einval", errno.ENOBUFS: "tx_busy", errno.ENOMEM: "tx_busy"}
                key = "tx_busy" if e.errno in _AGAIN else reason.get(e.errno or 0)
                if key is None:
                    raise
                self.stats.drop_tx(key)
                return False
        if n != VNET_HDR_LEN + length:
            self.stats.drop_tx("short_write")
            return False
        self.stats.tx_packets += 1
        self.stats.tx_bytes += length
        return True


class _Dropped(Exception):
    """One frame was counted as dropped: read the next one."""


def _vlan(frame: memoryview) -> bool:
    """An 802.1Q tag (its MTU allowance is 4 bytes larger)."""
    return len(frame) >= ETH_HLEN and frame[12] == 0x81 and frame[13] == 0


def _tcp_hdr_len(parts: list[memoryview], o: Offload) -> int:
    """A GSO frame's header length: through the TCP header the checksum offsets name."""
    if o.gso_type == GSO_NONE:
        return 0
    at = o.csum_start + 12  # TCP data offset
    head = parts[0]
    if at >= len(head):
        head = memoryview(b"".join(bytes(x) for x in parts)[: at + 1])
    if at >= len(head):
        raise VnetError("vnet_gso_headers", "a GSO frame shorter than its TCP header")
    return o.csum_start + (head[at] >> 4) * 4
