"""Software GSO for TCP over IPv4/IPv6 (what Linux's ``skb_segment`` does for TSO packets),
and the recursive re-segmentation netfront's ``segment`` tx policy uses (seed 000).

Each segment gets a fresh copy of the Ethernet+IP+TCP headers and up to ``mss`` bytes of
payload.  Payload lying in the parent's frags is *referenced*: the segment's frags are new
``Buf``s on the parent's pages, nothing is copied.  Payload lying in the parent's head is
copied into the segment's own head.

Ownership: a segment owns only the page it allocated for its head (``Skb.pages``); its frags
point at pages the parent owns, so the parent must outlive every segment (free the segments
first, then the parent).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from ..platform.base import MAX_ORDER, Page
from .cb import DEFAULT_REGISTRY, get_headroom
from .csum import IPPROTO_TCP, BytesLike, ipv4_header_checksum, l4_checksum
from .frames import MAX_HEADER_LEN, TCP_CWR, TCP_FIN, TCP_PSH, FrameError, Headers, parse_l3l4
from .skb import GSO_TCPV4, GSO_TCPV6, Buf, Csum, Foreign, PageSource, Skb, order_for

__all__ = ["GsoError", "Segments", "check_headers", "segment", "segment_to_fit", "split_size"]


class GsoError(ValueError):
    """A packet software GSO cannot (or will not) segment; the message says why."""


class Segments(list[Skb]):
    """The segments, plus what making them cost.

    ``bytes_copied``: header bytes, carried headroom and head payload copied into new heads
    (what the tx ``segment`` policy reports).  ``depth``: levels of segmentation used
    (``segment`` itself: 1; ``segment_to_fit``: 0 when the packet already fitted)."""

    def __init__(self, items: Iterable[Skb] = (), *, bytes_copied: int = 0, depth: int = 0) -> None:
        super().__init__(items)
        self.bytes_copied = bytes_copied
        self.depth = depth


def _order_for(size: int) -> int:
    order = order_for(size)
    if order > MAX_ORDER:
        raise GsoError(f"a segment head of {size} bytes does not fit a page of order {MAX_ORDER}")
    return order


def check_headers(head: BytesLike, length: int, gso_type: int) -> Headers:
    """The headers of a packet of ``length`` bytes from its first bytes ``head``, as GSO needs
    them: TCP over the IP version ``gso_type`` names, complete within ``head``, and IP lengths
    that agree with ``length``.  Anything else raises ``GsoError``.  netback applies the
    same rule to what a guest sends, so nothing downstream is handed a packet it cannot cut."""
    try:
        h = parse_l3l4(head, headers_only=True)
    except FrameError as e:
        raise GsoError(f"cannot segment: {e}") from None
    if h.l4_proto != IPPROTO_TCP:
        raise GsoError("cannot segment: not TCP (only TCPv4/TCPv6 segmentation keeps the stream intact)")
    if h.frame_len != length:
        raise GsoError(f"cannot segment: the IP header says {h.frame_len} bytes, the packet has {length}")
    want = {GSO_TCPV4: 4, GSO_TCPV6: 6}.get(gso_type)
    if want is not None and want != h.ip_version:
        raise GsoError(f"cannot segment: gso_type says TCPv{want}, the packet is IPv{h.ip_version}")
    return h


def _headers(skb: Skb) -> tuple[Headers, bytes]:
    h = check_headers(skb.read(0, min(skb.len, MAX_HEADER_LEN)), skb.len, skb.gso_type)
    return h, skb.read(0, h.payload_off)


def segment(skb: Skb, mss: int, source: PageSource, *, headroom: int = 0) -> Segments:
    """Cut a TCP packet into segments of at most ``mss`` payload bytes.

    ``headroom``: bytes in front of the parent's data (e.g. an IPoIB hwaddr, seed 001) to carry
    into each segment's own headroom, copied along with the header.

    Per segment: IPv4 total length, id (+i) and header checksum, or IPv6 payload length; TCP
    seq advanced by the payload offset; FIN and PSH only on the last segment, CWR only on the
    first.  A CHECKSUM_PARTIAL parent gives PARTIAL segments (pseudo sum in the field,
    csum_start/offset set); otherwise each segment gets its full TCP checksum.  Segments are
    not GSO packets (gso_size 0, type NONE) and carry a copy of the parent's control block."""
    if not isinstance(mss, int) or mss <= 0:
        raise GsoError(f"cannot segment with mss {mss!r}: want a positive byte count")
    h, hdr = _headers(skb)
    carried = get_headroom(skb, headroom) if headroom else b""
    hlen = h.payload_off
    payload = skb.len - hlen
    nseg = max(1, -(-payload // mss))
    (seq0,) = struct.unpack_from("!I", hdr, h.l4_off + 4)
    (id0,) = struct.unpack_from("!H", hdr, h.l3_off + 4) if h.ip_version == 4 else (0,)
    flags0 = hdr[h.l4_off + 13]
    partial = skb.csum is Csum.PARTIAL

    # GSO's scratch in the control block, as Linux keeps SKB_GSO_CB: it must not disturb IP's
    # block (seed 001), which the cb registry guarantees by refusing overlapping declarations.
    if "gso" in (skb.cb.registry if skb.cb is not None else DEFAULT_REGISTRY):
        scratch = skb.control_block().view("gso")
        scratch.write(mac_offset=skb.head.offset, encap_level=0, csum=0, csum_start=h.l4_off)

    starts = []  # packet offset where each buf begins
    pos = 0
    for b in skb.bufs:
        starts.append(pos)
        pos += b.length

    out = Segments(depth=1)
    try:
        for i in range(nseg):
            lo = hlen + i * mss
            hi = min(lo + mss, skb.len)
            head_payload: list[memoryview] = []
            frags: list[Buf] = []
            for start, b in zip(starts, skb.bufs, strict=True):
                a, z = max(lo, start), min(hi, start + b.length)
                if a >= z:
                    continue
                if b is skb.head:
                    head_payload.append(b.view[a - start : z - start])
                else:
                    off = b.offset + a - start
                    fr = b.foreign
                    foreign = Foreign(fr.domid, fr.gref, fr.offset + a - start) if fr else None
                    frags.append(Buf(b.page, off, z - a, foreign))
            hp = sum(len(v) for v in head_payload)
            seg_len = hlen + (hi - lo)

            h2 = bytearray(hdr)
            if h.ip_version == 4:
                struct.pack_into("!HH", h2, h.l3_off + 2, seg_len - h.l3_off, (id0 + i) & 0xFFFF)
                struct.pack_into("!H", h2, h.l3_off + 10, 0)
                struct.pack_into("!H", h2, h.l3_off + 10, ipv4_header_checksum(h2[h.l3_off : h.l4_off]))
            else:
                struct.pack_into("!H", h2, h.l3_off + 4, seg_len - h.l4_off)
            struct.pack_into("!I", h2, h.l4_off + 4, (seq0 + i * mss) & 0xFFFFFFFF)
            flags = flags0
            if i != nseg - 1:
                flags &= ~(TCP_FIN | TCP_PSH)
            if i != 0:
                flags &= ~TCP_CWR
            h2[h.l4_off + 13] = flags
            pseudo = h.pseudo_sum(l4_len=seg_len - h.l4_off)
            if partial:
                value = pseudo  # the Linux convention: completed later by whoever has the data
            else:
                struct.pack_into("!H", h2, h.l4_off + 16, 0)
                chunks = [memoryview(h2)[h.l4_off :], *head_payload, *(f.view for f in frags)]
                value = l4_checksum(pseudo, chunks, IPPROTO_TCP)
            struct.pack_into("!H", h2, h.l4_off + 16, value)

            page: Page = source.alloc(_order_for(headroom + hlen + hp))
            try:
                v = page.view
                v[:headroom] = carried
                v[headroom : headroom + hlen] = h2
                p = headroom + hlen
                for chunk in head_payload:
                    v[p : p + len(chunk)] = chunk
                    p += len(chunk)
                seg = Skb(
                    Buf(page, headroom, hlen + hp),
                    frags,
                    csum=skb.csum,
                    csum_start=h.l4_off if partial else 0,
                    csum_offset=h.csum_offset if partial else 0,
                    pages=[page],
                    cb=skb.cb_copy(),
                    source=source,  # so ``release()`` frees the head; frags stay the parent's
                )
            except BaseException:
                source.free(page)
                raise
            out.append(seg)
            out.bytes_copied += headroom + hlen + hp
    except BaseException:
        for s in out:
            s.free(source)
        raise
    return out


def split_size(skb: Skb) -> int:
    """The gso_size the ``segment`` policy re-segments with: ``skb.len // 2 + 1``.

    As in seed 000 this is half the *packet* length (headers included), not half the payload.
    Being more than half the payload, it always gives at most two segments, the first slightly
    larger.  When the headers are so large relative to the payload that it would not split
    at all (payload <= headers + 2), half the payload (rounded up) is used instead so that
    every step makes progress."""
    h, _ = _headers(skb)
    payload = skb.len - h.payload_off
    size = skb.len // 2 + 1
    return size if size < payload else max(1, (payload + 1) // 2)


def segment_to_fit(
    skb: Skb,
    fits: Callable[[Skb], bool],
    source: PageSource,
    *,
    headroom: int = 0,
    max_depth: int = 16,
) -> Segments:
    """Re-segment ``skb`` with ``split_size`` until every piece ``fits`` (e.g. ring slots <= 18),
    recursively: a piece that still does not fit is segmented again.  Seed 000's 51-slot
    worst case needs two levels of segmentation (``depth`` 2): its "3 level recursion" counts
    the start_xmit calls, the original one included.

    Returns the final pieces in order (``[skb]`` itself, depth 0, when it already fits).
    Intermediate segments are freed as soon as their own segments exist: those copy the head
    and reference only the original's frag pages, which stay owned by ``skb``.
    IPv4 ids of the final pieces are consecutive from the original's (as one segmentation
    would number them), not repeated per level.

    Terminates: every split at least halves the payload; a one-byte-payload piece that does
    not fit, or more than ``max_depth`` levels, raise ``GsoError``."""
    if fits(skb):
        return Segments([skb], depth=0)
    out = Segments()

    def walk(piece: Skb, level: int) -> None:
        if level > max_depth:
            raise GsoError(f"packet still does not fit after {max_depth} levels of segmentation")
        h, _ = _headers(piece)
        if piece.len - h.payload_off <= 1:
            raise GsoError(
                f"a segment with {piece.len - h.payload_off} payload byte(s) still does not fit "
                f"({piece.slots()} slots): segmentation cannot help"
            )
        parts = segment(piece, split_size(piece), source, headroom=headroom)
        out.bytes_copied += parts.bytes_copied
        out.depth = max(out.depth, level)
        done = 0
        try:
            for part in parts:
                if fits(part):
                    out.append(part)
                else:
                    walk(part, level + 1)
                    part.free(source)  # its pieces copied its head; its frags are skb's pages
                done += 1
        except BaseException:
            for rest in parts[done:]:  # not yet handed to ``out`` nor freed
                rest.free(source)
            raise

    try:
        walk(skb, 1)
    except BaseException:
        for s in out:
            s.free(source)
        raise
    h, hdr = _headers(skb)
    if h.ip_version == 4 and out.depth > 1:
        # each level numbers its segments from its own parent's id, so deeper levels would
        # repeat ids; give the final pieces consecutive ids as one segmentation would
        (id0,) = struct.unpack_from("!H", hdr, h.l3_off + 4)
        for i, piece in enumerate(out):
            ip = bytearray(piece.read(h.l3_off, h.ip_hlen))
            struct.pack_into("!H", ip, 4, (id0 + i) & 0xFFFF)
            struct.pack_into("!H", ip, 10, ipv4_header_checksum(ip))
            piece.write(h.l3_off, bytes(ip))
    return out
