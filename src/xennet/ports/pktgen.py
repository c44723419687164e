"""pktgen: real Ethernet/IPv4/IPv6 TCP or UDP frames placed in any head/frag layout.

Payload bytes are a pure function of where they sit in the stream, so the far end can check
any frame it receives on its own -- even after a policy re-segmented or re-laid it out.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args, get_type_hints

from ..packet.csum import ones_sum
from ..packet.frames import FrameError, build_frame, frame_skb, parse_l3l4
from ..packet.skb import MAX_PACKET, MAX_SKB_FRAGS, Layout, LayoutError, PageSource, Piece, Skb
from ..platform.base import MAX_ORDER, PAGE_SIZE

PRESETS = ("worst", "random", "cork", "linear", "mtu")
_BLOCK = 4096
_PERIOD_BLOCKS = (1 << 32) // _BLOCK
_UDP_TAG = struct.Struct("!QI")  # packet index, seed: lets a UDP frame be checked on its own


def _pattern_block(seed: int, n: int) -> bytes:
    return hashlib.blake2b(f"xennet:{seed}:{n}".encode(), digest_size=64).digest() * (_BLOCK // 64)


class _Pattern:
    """An endless byte stream for one seed; ``bytes_at(k, n)`` is cheap for any k."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[int, bytes] = {}

    def _block(self, n: int) -> bytes:
        # periodic in 2**32 bytes: a TCP seq (the stream offset mod 2**32) names its bytes
        # past 4 GiB too, and segments cut across the wrap keep matching
        n %= _PERIOD_BLOCKS
        b = self._cache.get(n)
        if b is None:
            if len(self._cache) > 64:
                self._cache.clear()
            b = self._cache[n] = _pattern_block(self.seed, n)
        return b

    def bytes_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            n, off = divmod(offset, _BLOCK)
            take = min(length, _BLOCK - off)
            out += self._block(n)[off : off + take]
            offset += take
            length -= take
        return bytes(out)


def worst_layout() -> Layout:
    """Seed 000/002's 51-slot skb: a 70-byte head across a page boundary, 15 frags of
    1 + 4096 + 1 bytes starting on a page's last byte, and 2 two-byte frags across a boundary."""
    return (
        (Piece(PAGE_SIZE - 35, 70, 1),)
        + tuple(Piece(PAGE_SIZE - 1, PAGE_SIZE + 2, 2) for _ in range(15))
        + (Piece(PAGE_SIZE - 1, 2, 1), Piece(PAGE_SIZE - 1, 2, 1))
    )


def random_layout(rng: random.Random, min_head: int = 128, max_len: int = MAX_PACKET) -> Layout:
    """A valid layout with compound pages and misaligned offsets."""
    nfrags = rng.randint(0, MAX_SKB_FRAGS)
    pieces: list[Piece] = []
    budget = max_len
    for i in range(nfrags + 1):
        order = rng.randint(0, MAX_ORDER)
        size = PAGE_SIZE << order
        lo = min_head if i == 0 else 1
        hi = min(budget - (nfrags - i), size, 3 * PAGE_SIZE if i else 2 * PAGE_SIZE)
        if hi < lo:
            break
        length = rng.choice([rng.randint(lo, min(hi, lo + 64)), rng.randint(lo, hi)])
        offset = rng.choice(
            [0, rng.randint(0, size - length), size - length, max(0, PAGE_SIZE - 1 - length // 2)]
        )
        offset = min(offset, size - length)
        pieces.append(Piece(offset, length, order))
        budget -= length
    return tuple(pieces)


def cork_layout(rng: random.Random) -> Layout:
    """sendfile() under TCP_CORK: a header page then many small frags, each straddling a page end."""
    pieces = [Piece(PAGE_SIZE - rng.randint(60, 120), 128, 1)]
    for _ in range(MAX_SKB_FRAGS):
        n = rng.randint(2, 700)
        pieces.append(Piece(PAGE_SIZE - rng.randint(1, n - 1), n, 1))
    return tuple(pieces)


def preset_layouts(name: str, count: int, seed: int) -> Iterator[Layout]:
    rng = random.Random(seed)
    for _ in range(count):
        if name == "worst":
            yield worst_layout()
        elif name == "random":
            yield random_layout(rng)
        elif name == "cork":
            yield cork_layout(rng)
        elif name == "linear":
            yield (Piece(0, rng.randint(128, PAGE_SIZE), 0),)
        elif name == "mtu":
            yield (Piece(0, 1514, 0),)
        else:
            raise LayoutError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


def parse_piece(text: str) -> Piece:
    """``SIZE@OFFSET`` or ``SIZE@OFFSET/ORDER`` (the order defaults to the smallest that fits)."""
    try:
        size_s, _, rest = text.partition("@")
        off_s, _, order_s = rest.partition("/")
        size, offset = int(size_s), int(off_s or "0")
        if order_s:
            order = int(order_s)
        else:
            order = 0
            while (PAGE_SIZE << order) < offset + size and order < MAX_ORDER:
                order += 1
    except ValueError:
        raise LayoutError(f"{text!r}: want SIZE@OFFSET or SIZE@OFFSET/ORDER, e.g. 70@4061") from None
    return Piece(offset, size, order)


@dataclass(frozen=True)
class TrafficSpec:
    ip: Literal[4, 6] = 4
    proto: Literal["tcp", "udp"] = "tcp"
    mss: int = 0  # with TCP: send as GSO skbs of this gso_size
    csum: Literal["full", "partial"] = "partial"
    seed: int = 1
    src_mac: str = "00:16:3e:00:00:01"
    dst_mac: str = "fe:ff:ff:ff:ff:ff"

    def __post_init__(self) -> None:
        for name in ("ip", "proto", "csum"):
            allowed = get_args(get_type_hints(TrafficSpec)[name])
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r}: choose one of {', '.join(map(str, allowed))}"
                )
        if not 0 <= self.mss <= 65535:
            raise ValueError(f"mss={self.mss}: 0 (no GSO) to 65535")
        if self.mss and self.proto != "tcp":
            raise ValueError(f"mss={self.mss}: GSO needs proto='tcp'")


class Generator:
    """Frames for a sequence of layouts; TCP frames carry one continuous stream."""

    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self.pattern = _Pattern(spec.seed)
        self.stream_offset = 0
        self.index = 0
        hdr = build_frame(ip=spec.ip, proto=spec.proto, payload=b"")
        self.header_len = len(hdr.data) + (_UDP_TAG.size if spec.proto == "udp" else 0)

    def skb(self, layout: Sequence[Piece], source: PageSource) -> Skb:
        s = self.spec
        total = sum(p.length for p in layout)
        if total < self.header_len + 1:
            raise LayoutError(f"layout holds {total} bytes; headers alone need {self.header_len}")
        n = total - self.header_len
        if s.proto == "tcp":
            payload = self.pattern.bytes_at(self.stream_offset, n)
            seq = self.stream_offset
            self.stream_offset += n
        else:
            payload = _UDP_TAG.pack(self.index, s.seed) + self.pattern.bytes_at(self.index * 65536, n)
            seq = 0
        try:
            frame = build_frame(
                ip=s.ip,
                proto=s.proto,
                payload=payload,
                src_mac=s.src_mac,
                dst_mac=s.dst_mac,
                seq=seq,
                ip_id=self.index & 0xFFFF,
                csum=s.csum,
            )
            skb = frame_skb(frame, source, layout, gso_size=s.mss if s.proto == "tcp" and s.mss else 0)
        except FrameError as exc:
            raise LayoutError(str(exc)) from None
        self.index += 1
        return skb


class Verifier:
    """Checks frames at the far end: headers parse, lengths agree, checksums are right (or
    left partial as promised), and every payload byte is the pattern's byte for its place."""

    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self.pattern = _Pattern(spec.seed)
        self.frames = 0
        self.payload_bytes = 0
        self.errors: list[str] = []
        self.tcp_covered: list[tuple[int, int]] = []  # (seq, length) ranges seen

    def check(self, frame: bytes, partial: bool = False) -> bool:
        err = self._check(frame, partial)
        self.frames += 1
        if err:
            if len(self.errors) < 20:
                self.errors.append(f"frame {self.frames - 1}: {err}")
            return False
        return True

    def _check(self, frame: bytes, partial: bool) -> str | None:
        try:
            h = parse_l3l4(frame)
        except FrameError as exc:
            return str(exc)
        l4 = frame[h.l4_off : h.l4_off + h.l4_len]
        if not partial:
            total = ones_sum(l4, h.pseudo_sum())
            if total != 0xFFFF:
                return f"L4 checksum wrong (sum {total:#06x})"
        payload = frame[h.payload_off : h.payload_off + h.payload_len]
        if self.spec.proto == "tcp":
            (seq,) = struct.unpack_from("!I", frame, h.l4_off + 4)
            want = self.pattern.bytes_at(seq, len(payload))
            self.tcp_covered.append((seq, len(payload)))
        else:
            if len(payload) < _UDP_TAG.size:
                return "UDP payload too short for its tag"
            index, seed = _UDP_TAG.unpack_from(payload)
            want = _UDP_TAG.pack(index, seed) + self.pattern.bytes_at(
                index * 65536, len(payload) - _UDP_TAG.size
            )
        if payload != want:
            diff = (
                next(i for i, (a, b) in enumerate(zip(payload, want, strict=False)) if a != b)
                if len(payload) == len(want)
                else min(len(payload), len(want))
            )
            return f"payload differs from the pattern at byte {diff}"
        self.payload_bytes += len(payload)
        return None

    def tcp_stream_complete(self, total: int) -> bool:
        """Every stream byte in [0, total) arrived at least once."""
        pos = 0
        for seq, n in sorted(self.tcp_covered):
            if seq > pos:
                return False
            pos = max(pos, seq + n)
        return pos >= total
