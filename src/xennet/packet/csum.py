"""The Internet checksum (RFC 1071): IPv4 header, TCP/UDP over IPv4 and IPv6, and completion
of a CHECKSUM_PARTIAL packet (what Linux's ``skb_checksum_help`` does).

Speed: the ones' complement sum of 16-bit big-endian words is congruent, modulo 0xFFFF, to the
whole buffer read as one big-endian integer (because 2**16 == 1 mod 0xFFFF).  So one
``int.from_bytes`` and one ``%`` -- both in C -- sum 64 KiB without a Python loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

from .skb import Csum, Skb

BytesLike = bytes | bytearray | memoryview

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_CSUM_OFFSET = 16  # offsetof(struct tcphdr, check)
UDP_CSUM_OFFSET = 6  # offsetof(struct udphdr, check)

_M = 0xFFFF


class CsumError(ValueError):
    """csum_start/csum_offset (or a frame) that cannot be checksummed as asked."""


def ones_add(a: int, b: int) -> int:
    """One's complement addition of two 16-bit sums (end-around carry)."""
    s = a + b
    return (s & _M) + (s >> 16)


def _residue(v: int) -> int:
    # 0 only for all-zero input; a non-zero multiple of 0xFFFF is "negative zero", 0xFFFF
    r = v % _M
    return r if r or not v else _M


def ones_sum(data: BytesLike, start: int = 0) -> int:
    """One's complement sum (folded to 16 bits, not inverted) of ``data`` plus ``start``.
    An odd final byte is padded with zero, as RFC 1071 says."""
    v = int.from_bytes(data, "big")
    if len(data) & 1:
        v <<= 8
    return ones_add(start, _residue(v))


def ones_sum_chunks(chunks: Iterable[BytesLike], start: int = 0) -> int:
    """``ones_sum`` of the concatenation of ``chunks`` without joining them.

    Shifting the running value by n bytes multiplies it by 256**n, i.e. by 1 (n even) or 256
    (n odd) modulo 0xFFFF: that handles chunks that start at an odd packet offset."""
    acc = 0
    total = 0
    nonzero = False
    for c in chunks:
        n = len(c)
        if not n:
            continue
        v = int.from_bytes(c, "big")
        nonzero = nonzero or v != 0
        acc = (acc * (256 if n & 1 else 1) + v) % _M
        total += n
    if total & 1:
        acc = acc * 256 % _M
    if not acc and nonzero:
        acc = _M
    return ones_add(start, acc)


def fold_checksum(s: int) -> int:
    """The value stored in a checksum field for a one's complement sum ``s``."""
    return ~s & _M


def internet_checksum(data: BytesLike, start: int = 0) -> int:
    return fold_checksum(ones_sum(data, start))


def ipv4_header_checksum(header: BytesLike) -> int:
    """Checksum of an IPv4 header, computed as if its checksum field (bytes 10-11) were zero."""
    if len(header) < 20:
        raise CsumError(f"IPv4 header of {len(header)} bytes")
    h = bytes(header)
    return internet_checksum(h[:10] + b"\0\0" + h[12:])


def pseudo_sum_v4(src: BytesLike, dst: BytesLike, proto: int, length: int) -> int:
    """One's complement sum of the IPv4 pseudo header (src, dst, zero, proto, L4 length)."""
    return ones_sum(bytes(src) + bytes(dst) + struct.pack("!BBH", 0, proto, length))


def pseudo_sum_v6(src: BytesLike, dst: BytesLike, proto: int, length: int) -> int:
    """One's complement sum of the IPv6 pseudo header (RFC 8200 8.1)."""
    return ones_sum(bytes(src) + bytes(dst) + struct.pack("!I3xB", length, proto))


def l4_checksum(pseudo: int, segment: Iterable[BytesLike], proto: int) -> int:
    """TCP/UDP checksum of ``segment`` (L4 header with a zero checksum field, then payload).
    UDP transmits a computed 0 as 0xFFFF (0 means "no checksum" there)."""
    c = fold_checksum(ones_sum_chunks(segment, pseudo))
    if c == 0 and proto == IPPROTO_UDP:
        return _M
    return c


def complete_partial(skb: Skb) -> bool:
    """Finish a CHECKSUM_PARTIAL packet in software (``complete_views`` on its bytes) and
    mark it CHECKSUM_NONE.  Returns False (and does nothing) when the packet is not PARTIAL."""
    if skb.csum is not Csum.PARTIAL:
        return False
    complete_views(list(skb.views()), skb.csum_start, skb.csum_offset)
    skb.csum = Csum.NONE
    return True


def complete_views(views: Sequence[memoryview], csum_start: int, csum_offset: int) -> None:
    """Finish the L4 checksum of a packet whose bytes are ``views``, in order.

    Linux convention: the checksum field already holds the (non-inverted) pseudo-header sum, so
    summing from ``csum_start`` to the end and inverting gives the final value, which is
    stored at ``csum_start + csum_offset``.  A computed 0 is stored as 0xFFFF, which is
    equivalent in one's complement and keeps UDP's "no checksum" meaning away."""
    total = sum(len(v) for v in views)
    field = csum_start + csum_offset
    if csum_start < 0 or csum_offset < 0 or field + 2 > total:
        raise CsumError(
            f"csum_start {csum_start} + csum_offset {csum_offset} do not leave a 2-byte "
            f"field inside a {total}-byte packet"
        )
    value = fold_checksum(ones_sum_chunks(_window(views, csum_start, total)))
    set_field(views, field, value or _M)


def set_field(views: Sequence[memoryview], at: int, value: int) -> None:
    """Store the 16-bit ``value`` (network order) at byte ``at`` of the concatenation of
    ``views``: a checksum field may straddle two slots."""
    data = struct.pack("!H", value)
    pos = 0
    for v in _window(views, at, at + 2):
        v[:] = data[pos : pos + len(v)]
        pos += len(v)
    if pos != 2:
        raise CsumError(f"a 2-byte field at {at} is not inside the packet")


def _window(views: Sequence[memoryview], start: int, stop: int) -> Iterator[memoryview]:
    """The bytes ``[start, stop)`` of the concatenation of ``views``, as views."""
    pos = 0
    for v in views:
        lo, hi = max(start, pos), min(stop, pos + len(v))
        if lo < hi:
            yield v[lo - pos : hi - pos]
        pos += len(v)
