"""Capture frames to a classic pcap file (what ``tcpdump -r`` and scapy's ``rdpcap`` read).

Format: the 24-byte global header (magic 0xa1b2c3d4 -- microsecond timestamps -- version 2.4,
snaplen 65535, LINKTYPE_ETHERNET), then per frame a 16-byte record header (seconds,
microseconds, captured length, original length) and the captured bytes.  Written in this
host's byte order, as libpcap does; readers tell the order from the magic.

GSO: a TSO frame bigger than the MTU is one frame "as the ring carried it" (``write_skb``:
checksum field as it is, i.e. the pseudo-header sum for CHECKSUM_PARTIAL -- tcpdump calls it
incorrect, as it does for any capture taken before the NIC).  ``write_segmented`` writes it
"as it left": software-segmented with ``xennet.packet.gso.segment`` and, by default, with
each checksum completed as the wire would have it.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from ..packet.csum import BytesLike, fold_checksum, ones_sum_chunks
from ..packet.gso import segment
from ..packet.skb import GSO_NONE, Csum, PageSource, Skb

PCAP_MAGIC = 0xA1B2C3D4  # microsecond resolution
PCAP_MAGIC_NS = 0xA1B23C4D  # nanosecond resolution (read only)
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 65535

_BO = "<" if sys.byteorder == "little" else ">"
_GLOBAL = struct.Struct(_BO + "IHHiIII")
_RECORD = struct.Struct(_BO + "IIII")


class PcapError(ValueError):
    """A file that is not a pcap this module reads, or a frame it cannot write."""


class PcapRecord(NamedTuple):
    ts_ns: int
    orig_len: int
    data: bytes


Chunks = BytesLike | Iterable[BytesLike]


def _chunks(frame: Chunks) -> list[BytesLike]:
    if isinstance(frame, bytes | bytearray | memoryview):
        return [frame]
    return list(frame)


def completed_frame(skb: Skb) -> bytes:
    """The skb's bytes with a CHECKSUM_PARTIAL checksum completed (in a copy: the skb's own
    bytes are left alone), as a NIC would put them on the wire."""
    data = bytearray(skb.data())
    if skb.csum is Csum.PARTIAL:
        field = skb.csum_start + skb.csum_offset
        if skb.csum_start >= 0 and skb.csum_offset >= 0 and field + 2 <= len(data):
            value = fold_checksum(ones_sum_chunks([memoryview(data)[skb.csum_start :]])) or 0xFFFF
            struct.pack_into("!H", data, field, value)
    return bytes(data)


class PcapWriter:
    """Append Ethernet frames to a pcap file.  ``frames`` counts what was written."""

    def __init__(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        linktype: int = LINKTYPE_ETHERNET,
    ) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise PcapError(f"snaplen {snaplen}")
        self.snaplen = snaplen
        self.frames = 0
        if isinstance(file, str | os.PathLike):
            self._f: BinaryIO = open(file, "wb")  # noqa: SIM115 - closed by close()
            self._own = True
        else:
            self._f, self._own = file, False
        self._f.write(_GLOBAL.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype))

    def write(self, frame: Chunks, ts: float | None = None) -> None:
        """One frame, from one buffer or several (written as they are, no joining).
        ``ts``: seconds since the epoch (default: now)."""
        parts = _chunks(frame)
        length = sum(len(p) for p in parts)
        ns = time.time_ns() if ts is None else int(round(ts * 1e9))
        sec, usec = divmod(ns // 1000, 1_000_000)
        incl = min(length, self.snaplen)
        self._f.write(_RECORD.pack(sec & 0xFFFFFFFF, usec, incl, length))
        left = incl
        for p in parts:
            if left <= 0:
                break
            mv = memoryview(p)[:left]
            self._f.write(mv)
            left -= len(mv)
        self.frames += 1

    def write_skb(self, skb: Skb, ts: float | None = None) -> None:
        """The skb as the ring carried it: one frame, however large, bytes untouched."""
        self.write([b.view for b in skb.bufs], ts)

    def write_segmented(
        self,
        skb: Skb,
        source: PageSource,
        *,
        mss: int | None = None,
        ts: float | None = None,
        complete_csum: bool = True,
    ) -> int:
        """The skb as it left: a GSO skb segmented in software (``mss`` defaults to its
        gso_size), each segment one frame; a non-GSO skb as one frame.  ``complete_csum``
        completes CHECKSUM_PARTIAL checksums in the written copy.  Returns frames written.
        Segments' head pages come from ``source`` and go back to it before this returns."""
        size = skb.gso_size if mss is None else mss
        if (skb.gso_type == GSO_NONE and mss is None) or size <= 0:
            self.write(completed_frame(skb) if complete_csum else [b.view for b in skb.bufs], ts)
            return 1
        segs = segment(skb, size, source)
        try:
            for s in segs:
                self.write(completed_frame(s) if complete_csum else [b.view for b in s.bufs], ts)
        finally:
            for s in segs:
                s.free(source)
        return len(segs)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._own and not self._f.closed:
            self._f.close()
        elif not self._own:
            self._f.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pcap(file: str | os.PathLike[str] | BinaryIO) -> Iterator[PcapRecord]:
    """The records of a classic pcap file (either byte order, µs or ns timestamps)."""
    if isinstance(file, str | os.PathLike):
        with open(file, "rb") as f:
            yield from read_pcap(f)
        return
    head = file.read(_GLOBAL.size)
    if len(head) < _GLOBAL.size:
        raise PcapError("shorter than a pcap global header")
    for bo in "<>":
        (magic,) = struct.unpack_from(bo + "I", head)
        if magic in (PCAP_MAGIC, PCAP_MAGIC_NS):
            break
    else:
        raise PcapError(f"not a classic pcap file (magic {head[:4].hex()})")
    scale = 1000 if magic == PCAP_MAGIC else 1
    rec = struct.Struct(bo + "IIII")
    while True:
        rh = file.read(rec.size)
        if not rh:
            return
        if len(rh) < rec.size:
            raise PcapError("truncated record header")
        sec, frac, incl, orig = rec.unpack(rh)
        data = file.read(incl)
        if len(data) < incl:
            raise PcapError(f"record of {incl} bytes truncated to {len(data)}")
        yield PcapRecord(sec * 1_000_000_000 + frac * scale, orig, data)
