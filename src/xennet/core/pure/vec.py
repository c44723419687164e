"""Packet vectors: filling them with frames, releasing them, and the checksum-offload
header walk (Linux's ``skb_checksum_setup``, as narrow as ``packet/frames.parse_l3l4``).
"""

from __future__ import annotations

import struct

from ...abi import netif
from ...abi.grant_table import DOMID_SELF
from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import PIECE, PKT
from .pool import PoolView, pop_counted

HEADER_PEEK = 128  # enough for Ethernet + VLAN + IPv6 + TCP with options
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_U32 = struct.Struct("<I")
_GSO_VERSION = {netif.XEN_NETIF_GSO_TYPE_TCPV4: 4, netif.XEN_NETIF_GSO_TYPE_TCPV6: 6}


def vec_fill_frames(
    mem: WBuffer,
    pool: WBuffer,
    frames: Buffer,
    lens: Buffer,
    nframes: int,
    flags: int,
    gso_size: int,
    gso_type: int,
    vec_pkts: WBuffer,
    vec_pieces: WBuffer,
    pkt_base: int,
    piece_base: int,
    piece_cap: int,
) -> tuple[int, int]:
    """Copy ``nframes`` frames (back to back in ``frames``, u32 lengths in ``lens``) into
    pool frames, one packet each (``flags``: PKT_*, and GSO as given) from ``pkt_base``.  Stops before a
    frame the pool or the pieces cannot hold.  Returns (frames done, pieces end)."""
    m = memoryview(mem).cast("B")
    src = memoryview(frames).cast("B")
    ln = memoryview(lens).cast("B").cast("I")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    if (
        len(ln) < nframes
        or len(vp) < (pkt_base + nframes) * r.PKT.size
        or len(vpc) < piece_cap * r.PIECE.size
    ):
        raise ValueError("vec_fill_frames: buffers too small")
    p = PoolView(pool)
    pos = 0
    npiece = piece_base
    for i in range(nframes):
        length = int(ln[i])
        if not 1 <= length <= 0xFFFF or pos + length > len(src):
            raise ValueError(f"vec_fill_frames: frame {i} of {length} bytes")
        need = -(-length // r.PAGE_SIZE)
        if p.count < need or npiece + need > piece_cap:
            return i, npiece
        piece0 = npiece
        done = 0
        while done < length:
            frame = pop_counted(p)
            if (frame + 1) * r.PAGE_SIZE > len(m):
                raise ValueError(f"vec_fill_frames: frame {frame} outside memory")
            n = min(length - done, r.PAGE_SIZE)
            m[frame * r.PAGE_SIZE : frame * r.PAGE_SIZE + n] = src[pos + done : pos + done + n]
            PIECE.pack_into(vpc, npiece * r.PIECE.size, frame, 0, n, r.NONE32, DOMID_SELF, r.PIECE_POOL)
            npiece += 1
            done += n
        PKT.pack_into(
            vp, (pkt_base + i) * r.PKT.size, piece0, npiece - piece0, flags, length, r.NONE32,
            gso_size, gso_type, 0, 0, 0,
        )  # fmt: skip
        pos += length
    return nframes, npiece


def vec_release(
    vec_pkts: Buffer,
    vec_pieces: Buffer,
    start: int,
    npkts: int,
    pool: WBuffer,
    priv_pool: WBuffer | None,
    tags_out: WBuffer,
) -> int:
    """Packets ``start..`` are done: their pool frames go back (PIECE_PRIV ones to
    ``priv_pool``); the tags of tagged packets go to ``tags_out`` (u32) for their owner.
    Returns how many tags."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    to = memoryview(tags_out).cast("B").cast("I")
    if len(vp) < (start + npkts) * r.PKT.size:
        raise ValueError("vec_release: buffers too small")
    p = PoolView(pool)
    pp = PoolView(priv_pool) if priv_pool is not None else None
    ntags = 0
    for j in range(start, start + npkts):
        piece0, npieces, _fl, _len, tag, *_rest = PKT.unpack_from(vp, j * r.PKT.size)
        if (piece0 + npieces) * r.PIECE.size > len(vpc):
            raise ValueError("vec_release: pieces past the vector")
        for k in range(piece0, piece0 + npieces):
            frame, _o, _l, _ref, domid, flags = PIECE.unpack_from(vpc, k * r.PIECE.size)
            if domid != DOMID_SELF or flags & r.PIECE_RUN:
                continue
            if flags & r.PIECE_PRIV:
                if pp is None:
                    raise ValueError(f"vec_release: frame {frame} is a private-pool frame, and there is none")
                pp.push(frame)
            elif flags & r.PIECE_POOL:
                p.push(frame)
        if tag != r.NONE32:
            if ntags >= len(to):
                raise ValueError("vec_release: tags_out too small")
            to[ntags] = tag
            ntags += 1
    return ntags


def _gather_head(vpc: memoryview, m: memoryview, piece0: int, npieces: int, cap: int, kernel: str) -> bytes:
    """The first ``cap`` bytes of a packet, from its leading pieces in our own memory (a
    foreign or run piece's bytes are not ours to read here).  The pieces lie in the vector."""
    head = bytearray()
    for k in range(piece0, piece0 + npieces):
        if len(head) >= cap:
            break
        frame, off, plen, _ref, domid, pflags = PIECE.unpack_from(vpc, k * r.PIECE.size)
        if pflags & r.PIECE_RUN or domid != DOMID_SELF:
            break
        take = min(plen, cap - len(head))
        base = frame * r.PAGE_SIZE + off
        if base + take > len(m):
            raise ValueError(f"{kernel}: frame {frame} outside memory")
        head += m[base : base + take]
    return bytes(head)


def _l4_offsets(h: bytes) -> tuple[int, int] | None:
    """(csum_start, csum_offset) of a TCP/UDP over IPv4/IPv6 frame's first bytes, or None."""
    got = _l3l4(h)
    return None if got is None else (got[0], got[1])


def _l3l4(h: bytes) -> tuple[int, int, int, int, int] | None:
    """(l4 offset, csum_offset, IP version, L4 protocol, L4 length) of a TCP/UDP over
    IPv4/IPv6 frame's first bytes, or None."""
    n = len(h)
    if n < 14:
        return None
    l3 = 14
    ethertype = _BE16.unpack_from(h, 12)[0]
    if ethertype == 0x8100:
        if n < 18:
            return None
        ethertype = _BE16.unpack_from(h, 16)[0]
        l3 = 18
    if ethertype == 0x0800:
        if n < l3 + 20:
            return None
        vihl, tot_len, frag, proto = (
            h[l3],
            _BE16.unpack_from(h, l3 + 2)[0],
            _BE16.unpack_from(h, l3 + 6)[0],
            h[l3 + 9],
        )
        if vihl >> 4 != 4 or (vihl & 0xF) * 4 != 20 or frag & 0x3FFF or tot_len < 20:
            return None
        ip_hlen, l4_len = 20, tot_len - 20
    elif ethertype == 0x86DD:
        if n < l3 + 40:
            return None
        if _BE32.unpack_from(h, l3)[0] >> 28 != 6:
            return None
        ip_hlen, l4_len, proto = 40, _BE16.unpack_from(h, l3 + 4)[0], h[l3 + 6]
    else:
        return None
    l4 = l3 + ip_hlen
    if proto == 6:
        if n < l4 + 20:
            return None
        l4_hlen = (h[l4 + 12] >> 4) * 4
        if l4_hlen < 20:
            return None
        csum_offset = 16
    elif proto == 17:
        l4_hlen, csum_offset = 8, 6
    else:
        return None
    if l4_len < l4_hlen or n < l4 + l4_hlen:
        return None
    return l4, csum_offset, 4 if ethertype == 0x0800 else 6, proto, l4_len


def gso_check(vec_pkts: Buffer, vec_pieces: Buffer, start: int, npkts: int, mem: Buffer, out: WBuffer) -> int:
    """The GSO packets ``start..`` that need a closer look above the core: headers GSO
    cannot cut (not TCP over the IP version ``gso_type`` names, not whole within the first
    ``GSO_HEADER_PEEK`` bytes of our own pieces, or an IP length that is not the packet's:
    ``packet/gso.check_headers``'s rule), or no PKT_CSUM_PARTIAL (made partial there).
    Their indices go to ``out`` (u32 each); returns how many.  The common packet costs no
    Python above this loop."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    m = memoryview(mem).cast("B")
    o = memoryview(out).cast("B")
    if len(vp) < (start + npkts) * r.PKT.size or len(o) < npkts * 4:
        raise ValueError("gso_check: buffers too small")
    found = 0
    for j in range(start, start + npkts):
        piece0, npieces, flags, length, _tag, gs, gt, err, _cs, _co = PKT.unpack_from(vp, j * r.PKT.size)
        if not gs or not npieces or err:
            continue
        if (piece0 + npieces) * r.PIECE.size > len(vpc):
            raise ValueError("gso_check: pieces past the vector")
        got = _l3l4(_gather_head(vpc, m, piece0, npieces, r.GSO_HEADER_PEEK, "gso_check"))
        ok = (
            got is not None
            and got[3] == 6  # TCP
            and got[2] == _GSO_VERSION.get(gt, got[2])
            and got[0] + got[4] == length
        )
        if not ok or not flags & r.PKT_CSUM_PARTIAL:
            _U32.pack_into(o, found * 4, j)
            found += 1
    return found


def csum_setup(vec_pkts: WBuffer, vec_pieces: Buffer, start: int, npkts: int, mem: Buffer) -> int:
    """For each PKT_CSUM_PARTIAL packet ``start..``: find its L4 checksum (csum_start,
    csum_offset) from its first 128 bytes; a packet whose headers are not TCP or UDP over
    IPv4 or IPv6 loses PKT_CSUM_PARTIAL and gets PKT_CSUM_FAILED.  Returns the failures."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    m = memoryview(mem).cast("B")
    if len(vp) < (start + npkts) * r.PKT.size:
        raise ValueError("csum_setup: buffers too small")
    failed = 0
    for j in range(start, start + npkts):
        piece0, npieces, flags, length, tag, gs, gt, err, _cs, _co = PKT.unpack_from(vp, j * r.PKT.size)
        if not flags & r.PKT_CSUM_PARTIAL:
            continue
        if (piece0 + npieces) * r.PIECE.size > len(vpc):
            raise ValueError("csum_setup: pieces past the vector")
        got = _l4_offsets(_gather_head(vpc, m, piece0, npieces, HEADER_PEEK, "csum_setup"))
        if got is None:
            failed += 1
            PKT.pack_into(
                vp,
                j * r.PKT.size,
                piece0,
                npieces,
                (flags & ~r.PKT_CSUM_PARTIAL) | r.PKT_CSUM_FAILED,
                length,
                tag,
                gs,
                gt,
                err,
                0,
                0,
            )
        else:
            PKT.pack_into(
                vp, j * r.PKT.size, piece0, npieces, flags, length, tag, gs, gt, err, got[0], got[1]
            )
    return failed


def vec_compact(vec_pkts: WBuffer, vec_pieces: WBuffer, start: int, npkts: int, npieces: int) -> int:
    """Drop packets ``0..start`` and the pieces before packet ``start``'s; the rest move to the
    front, their ``piece0`` rebased.  Returns the pieces left."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    if start > npkts or len(vp) < npkts * r.PKT.size or len(vpc) < npieces * r.PIECE.size:
        raise ValueError("vec_compact: buffers too small")
    if start == npkts:
        return 0
    first = min(PKT.unpack_from(vp, start * r.PKT.size)[0], npieces)
    n = npkts - start
    vp[: n * r.PKT.size] = bytes(vp[start * r.PKT.size : npkts * r.PKT.size])
    vpc[: (npieces - first) * r.PIECE.size] = bytes(vpc[first * r.PIECE.size : npieces * r.PIECE.size])
    for i in range(n):
        rec = list(PKT.unpack_from(vp, i * r.PKT.size))
        rec[0] = rec[0] - first if rec[0] >= first else 0
        PKT.pack_into(vp, i * r.PKT.size, *rec)
    return int(npieces - first)


def vec_fill_frame(
    mem: WBuffer,
    pool: WBuffer,
    frame: Buffer,
    flags: int,
    gso_size: int,
    gso_type: int,
    csum_start: int,
    csum_offset: int,
    vec_pkts: WBuffer,
    vec_pieces: WBuffer,
    pkt_index: int,
    piece_base: int,
    piece_cap: int,
) -> tuple[int, int]:
    """One frame into pool frames as packet ``pkt_index`` with its offload state (a port
    that read it into a buffer of its own).  Returns (1, pieces end), or (0, piece_base)
    when the pool or the pieces cannot hold it."""
    m = memoryview(mem).cast("B")
    src = memoryview(frame).cast("B")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    length = len(src)
    if not 1 <= length <= 0xFFFF:
        raise ValueError(f"vec_fill_frame: a frame of {length} bytes")
    if len(vp) < (pkt_index + 1) * r.PKT.size or len(vpc) < piece_cap * r.PIECE.size:
        raise ValueError("vec_fill_frame: buffers too small")
    p = PoolView(pool)
    need = -(-length // r.PAGE_SIZE)
    if p.count < need or piece_base + need > piece_cap:
        return 0, piece_base
    npiece = piece_base
    done = 0
    while done < length:
        f = pop_counted(p)
        if (f + 1) * r.PAGE_SIZE > len(m):
            raise ValueError(f"vec_fill_frame: frame {f} outside memory")
        n = min(length - done, r.PAGE_SIZE)
        m[f * r.PAGE_SIZE : f * r.PAGE_SIZE + n] = src[done : done + n]
        PIECE.pack_into(vpc, npiece * r.PIECE.size, f, 0, n, r.NONE32, DOMID_SELF, r.PIECE_POOL)
        npiece += 1
        done += n
    PKT.pack_into(
        vp, pkt_index * r.PKT.size, piece_base, npiece - piece_base, flags, length, r.NONE32,
        gso_size, gso_type, 0, csum_start, csum_offset,
    )  # fmt: skip
    return 1, npiece


def vec_gather(mem: Buffer, vec_pkts: Buffer, vec_pieces: Buffer, j: int, out: WBuffer) -> int:
    """Copy packet ``j``'s local data pieces into ``out``, in order (a port that writes a
    packet as one buffer).  Returns its length."""
    m = memoryview(mem).cast("B")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    o = memoryview(out).cast("B")
    if len(vp) < (j + 1) * r.PKT.size:
        raise ValueError("vec_gather: buffers too small")
    piece0, npieces = PKT.unpack_from(vp, j * r.PKT.size)[:2]
    if (piece0 + npieces) * r.PIECE.size > len(vpc):
        raise ValueError("vec_gather: pieces past the vector")
    pos = 0
    for k in range(piece0, piece0 + npieces):
        frame, off, plen, _ref, domid, flags = PIECE.unpack_from(vpc, k * r.PIECE.size)
        if flags & r.PIECE_RUN or domid != DOMID_SELF:
            continue
        base = frame * r.PAGE_SIZE + off
        if base + plen > len(m):
            raise ValueError(f"vec_gather: frame {frame} outside memory")
        if pos + plen > len(o):
            raise ValueError("vec_gather: out too small")
        o[pos : pos + plen] = m[base : base + plen]
        pos += plen
    return pos
