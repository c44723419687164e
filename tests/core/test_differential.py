"""The compiled core and the twin, fed the same hostile bytes, give the same results.

Each test builds ring contents a peer could write -- random, but biased toward the edges
that matter (flags, sizes at page boundaries, extra-info chains, ids) -- and runs one
kernel on both cores through ``both``, which compares return values, errors and every
output byte.  The fuzzer (``xennet fuzz --target core``) drives the same
comparisons with raw bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xennet.abi import netif
from xennet.abi.grant_table import DOMID_SELF, GTF_permit_access, GTF_readonly
from xennet.core import records as r
from xennet.core.pure.codecs import POOL_HEADER
from xennet.core.vec import FramePool, PacketVec, Piece, RxState, TxState

from .both import both, needs_native

pytestmark = needs_native

TX_REQ = struct.Struct("<IHHHH")
RX_RSP = struct.Struct("<HHHh")

tx_flags = st.sampled_from(
    [0, netif.NETTXF_more_data, netif.NETTXF_extra_info, netif.NETTXF_more_data | netif.NETTXF_extra_info]
).map(lambda f: f) | st.integers(0, 0xFFFF)
sizes = st.sampled_from([0, 1, 13, 14, 60, 128, 129, 1500, 4095, 4096, 4097, 65535]) | st.integers(0, 0xFFFF)
offsets = st.sampled_from([0, 1, 4000, 4095, 4096]) | st.integers(0, 0xFFFF)


@st.composite
def tx_entry(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        # an extra info: type, flags, 6 union bytes (GSO: size, type, pad, features)
        etype = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 255]))
        eflags = draw(st.sampled_from([0, 1, 2, 255]))
        gsize = draw(st.sampled_from([0, 1, 1448, 0xFFFF]))
        gtype = draw(st.sampled_from([0, 1, 2, 3]))
        return struct.pack("<BBHBBH", etype, eflags, gsize, gtype, 0, 0) + bytes(4)
    return TX_REQ.pack(
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(offsets),
        draw(tx_flags),
        draw(st.integers(0, 300)),
        draw(sizes),
    )


@st.composite
def tx_packet(draw: st.DrawFn) -> list[bytes]:
    """One plausible packet: first slot, an extra-info chain, data slots; flags set right."""
    nslots = draw(st.sampled_from([1, 1, 2, 3, 17, 18, 19, 20, 21, 22]) | st.integers(1, 24))
    sizes = [draw(st.sampled_from([0, 1, 100, 4096]) | st.integers(0, 4096)) for _ in range(nslots - 1)]
    own = draw(st.sampled_from([0, 14, 60, 128, 4096]) | st.integers(0, 4096))
    total = (sum(sizes) + own + draw(st.sampled_from([0, 0, 0, -1, 1]))) & 0xFFFF
    extras = []
    if draw(st.booleans()):
        extras.append(
            struct.pack(
                "<BBHBBH",
                1,
                0,
                draw(st.sampled_from([1448, 1, 0])),
                draw(st.sampled_from([1, 2, 1, 3])),
                0,
                0,
            )
            + bytes(4)
        )
        if draw(st.integers(0, 4)) == 0:
            extras[-1] = bytes([1, 1]) + extras[-1][2:]
            extras.append(
                struct.pack("<BB6s", draw(st.sampled_from([2, 3, 4])), 0, b"\x01\x00\x5e\x00\x00\x01")
                + bytes(4)
            )
    csum = draw(st.sampled_from([0, 1, 2, 3]))
    f0 = csum | (netif.NETTXF_more_data if nslots > 1 else 0) | (netif.NETTXF_extra_info if extras else 0)
    valid = st.sampled_from([0] * 12 + [1, 100])
    out = [
        TX_REQ.pack(
            draw(st.integers(0, 2000)), min(draw(valid), 4096 - own), f0, draw(st.integers(0, 255)), total
        )
    ]
    out += extras
    for k, size in enumerate(sizes):
        more = netif.NETTXF_more_data if k < len(sizes) - 1 else 0
        off = draw(st.sampled_from([0] * 12 + [4096 - size, 1]))
        out.append(TX_REQ.pack(draw(st.integers(0, 2000)), off, more, draw(st.integers(0, 255)), size))
    return out


@st.composite
def tx_batch(draw: st.DrawFn) -> bytes:
    entries = [e for pkt in draw(st.lists(tx_packet(), max_size=8)) for e in pkt]
    entries += draw(st.lists(tx_entry(), max_size=2))  # a ragged end
    raw = bytearray(b"".join(entries))
    flips = st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=3)
    for at, value in draw(st.just([]) | flips):
        if raw:
            raw[at] = value
    return bytes(raw)


tx_batches = tx_batch()


@settings(max_examples=400)
@given(reqs=tx_batches, max_pkts=st.integers(1, 64), fatal=st.sampled_from([2, 18, 20, 21]))
def test_netback_tx_assemble(reqs: bytes, max_pkts: int, fatal: int) -> None:
    n = len(reqs) // 12
    both("netback_tx_assemble", reqs, n, 18, fatal, bytearray(max_pkts * r.TX_PKT.size), max_pkts)


def _pool(nr_frames: int, free: list[int], granted: bool = False, refs: list[int] | None = None) -> FramePool:
    p = FramePool(nr_frames, granted=granted)
    if free:
        p.add(free, refs)
    return p


@settings(max_examples=300)
@given(
    reqs=tx_batches,
    copy_len=st.sampled_from([1, 14, 128, 4096, 70000]),
    map_frags=st.sampled_from([0, 0, 1, 17]),
    nfree=st.integers(0, 40),
    seg_cap=st.sampled_from([0, 3, 64, 512]),
    piece_cap=st.sampled_from([0, 2, 64, 512]),
)
def test_netback_tx_build_and_respond(
    reqs: bytes, copy_len: int, map_frags: int, nfree: int, seg_cap: int, piece_cap: int
) -> None:
    n = len(reqs) // 12
    out = bytearray(64 * r.TX_PKT.size)
    kind, res, args = both("netback_tx_assemble", reqs, n, 18, 20, out, 64)
    assert kind == "ok"
    npkts = res[1]
    pkts = args[4]
    pool = _pool(64, list(range(3, 3 + nfree)))
    segs = bytearray(max(seg_cap, 1) * 24)
    ranges = bytearray(8 * max(npkts, 1))
    vp = bytearray(max(npkts, 1) * r.PKT.size)
    vpc = bytearray(max(piece_cap, 1) * r.PIECE.size)
    kind, built, args = both(
        "netback_tx_build", reqs, pkts, 0, npkts, 1, copy_len, map_frags, 0x10000, pool.buf, segs, 0, seg_cap,
        ranges, vp, vpc, 0, piece_cap,
    )  # fmt: skip
    if kind != "ok":
        return
    done, nseg = built[0], built[1]
    pool_buf, segs, ranges, vp, vpc = args[8], args[9], args[12], args[13], args[14]
    # some copies fail: mark statuses as the executor would
    for i in range(nseg):
        if (i * 7) % 5 == 0:
            struct.pack_into("<h", segs, i * 24 + 22, -3)
    both(
        "netback_tx_respond", reqs, pkts, 0, done, ranges, segs, vp, vpc, pool_buf,
        bytearray(12 * 4 * max(n, 1)), bytearray(8 * max(done, 1)), bytearray(2 * max(done, 1)),
    )  # fmt: skip


# --- grant copy ----------------------------------------------------------------------------


def _table(entries: list[tuple[int, int, int]], n: int = 64) -> bytearray:
    t = bytearray(8 * n)
    for ref, (flags, domid, frame) in enumerate(entries[:n]):
        struct.pack_into("<HHI", t, 8 * ref, flags, domid, frame)
    return t


entry = st.tuples(
    st.sampled_from([0, GTF_permit_access, GTF_permit_access | GTF_readonly, 2, 3, 0xFFFF]),
    st.sampled_from([0, 1, 2, 7]),
    st.sampled_from([0, 1, 3, 7, 8, 9999]),
)


@st.composite
def segment(draw: st.DrawFn, base: int) -> bytes:
    flags = draw(st.sampled_from([0, 1, 2, 3, 0xFFFF]))
    sides = []
    for bit in (1, 2):
        if flags & bit:
            sides.append(
                struct.pack(
                    "<IHH",
                    draw(st.sampled_from([0, 1, 5, 63, 64, 1 << 31])),
                    draw(st.sampled_from([0, 100, 4095, 4096, 65535])),
                    draw(st.sampled_from([0, 1, 2, 3, DOMID_SELF, 0xFFFF])),
                )
            )
        else:
            sides.append(
                struct.pack("<Q", base + draw(st.sampled_from([-1, 0, 5, 4096, 4095, 8 * 4096, 1 << 40])))
            )
    length = draw(st.sampled_from([0, 1, 100, 4095, 4096, 4097, 65535]))
    return sides[0] + sides[1] + struct.pack("<HHh", length, flags, 77)


@settings(max_examples=400)
@given(data=st.data(), gt1=st.lists(entry, max_size=64), gt2=st.lists(entry, max_size=64))
def test_grant_copy(
    data: st.DataObject, gt1: list[tuple[int, int, int]], gt2: list[tuple[int, int, int]]
) -> None:
    base = 0x7F0000000000
    segs = bytearray(b"".join(data.draw(st.lists(segment(base), max_size=12))))
    own = bytearray(bytes(range(256)) * (8 * 4096 // 256))
    d1 = bytearray(b"\x11" * 8 * 4096)
    d2 = bytearray(b"\x22" * 4 * 4096)
    domains = [(1, _table(gt1), d1), (2, _table(gt2), d2), (0, _table([]), own)]
    both("segment_domids", segs, len(segs) // 24, 0)
    both("grant_copy", segs, len(segs) // 24, 0, own, base, domains)


@settings(max_examples=200)
@given(table=st.lists(entry, max_size=16), ref=st.integers(-5, 70), write=st.booleans())
def test_grant_check(table: list[tuple[int, int, int]], ref: int, write: bool) -> None:
    both("grant_check", _table(table, 16), ref, 1, write, 8)


# --- netfront rx -----------------------------------------------------------------------------


@st.composite
def rx_packets(draw: st.DrawFn, cons: int, mask: int, room: int) -> list[bytes]:
    """Plausible responses: packets of data slots (ids = ring index) and extras; then faults."""
    out: list[bytes] = []
    while len(out) < room and draw(st.integers(0, 5)):
        nslots = draw(st.sampled_from([1, 1, 2, 3, 18, 19, 20]))
        gso = draw(st.booleans())
        pkt: list[tuple[Any, ...]] = []
        for k in range(nslots):
            status = draw(st.sampled_from([4096, 1, 100, 256, 257, 0, -1]))
            off = 0 if status >= 4096 else draw(st.sampled_from([0, 0, 4096 - max(status, 0), 4095]))
            flags = (netif.NETRXF_more_data if k < nslots - 1 else 0) | (
                netif.NETRXF_extra_info if k == 0 and gso else 0
            )
            flags |= draw(st.sampled_from([0, 1, 2, 3])) if k == 0 else 0
            pkt.append(("rsp", off, flags, status))
            if k == 0 and gso:
                pkt.append(("gso", draw(st.sampled_from([1448, 0])), draw(st.sampled_from([1, 2, 3]))))
        for item in pkt:
            idx = (cons + len(out)) & mask
            if item[0] == "rsp":
                out.append(RX_RSP.pack(idx, item[1], item[2], item[3]))
            else:
                out.append(struct.pack("<BBHBBH", 1, 0, item[1], item[2], 0, 0))
    return out[:room]


@st.composite
def rx_rsp(draw: st.DrawFn, idx: int) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        etype = draw(st.sampled_from([0, 1, 2, 5, 9]))
        return struct.pack(
            "<BBHBBH",
            etype,
            draw(st.sampled_from([0, 1])),
            draw(st.sampled_from([0, 1448])),
            draw(st.sampled_from([0, 1, 2, 3])),
            0,
            0,
        )
    rid = idx if draw(st.integers(0, 9)) else draw(st.integers(0, 0xFFFF))
    flags = draw(
        st.sampled_from([0, netif.NETRXF_more_data, netif.NETRXF_extra_info, 0xFF]) | st.integers(0, 0xFFFF)
    )
    status = draw(st.sampled_from([-2, -1, 0, 1, 100, 256, 257, 4000, 4096, 4097, 32767]))
    return RX_RSP.pack(rid, draw(st.sampled_from([0, 1, 96, 4095])), flags, status)


@settings(max_examples=400)
@given(data=st.data(), cons=st.integers(0, 0xFFFFFFFF), gso=st.booleans(), posted=st.integers(0, 300))
def test_netfront_rx_assemble_and_build(data: st.DataObject, cons: int, gso: bool, posted: int) -> None:
    nr = 32
    mask = nr - 1
    if data.draw(st.booleans()):
        raw = bytearray(b"".join(data.draw(rx_packets(cons, mask, nr))))
        for at, value in data.draw(
            st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=2)
        ):
            if raw:
                raw[at] = value
        rsps = bytes(raw)
        n = len(rsps) // 8
    else:
        n = data.draw(st.integers(0, nr))
        rsps = b"".join(data.draw(rx_rsp((cons + i) & mask)) for i in range(n))
    state = RxState(nr)
    for i in range(nr):
        if (posted >> (i % 9)) & 1 or i % 3:
            state.set_slot(i, 2 + i, 1000 + i)
    out = bytearray(nr * r.RX_PKT.size)
    kind, res, args = both("netfront_rx_assemble", rsps, n, cons, mask, state.slots, gso, out, nr)
    assert kind == "ok"
    npkts = res[1]
    pkts = args[6]
    both("netfront_rx_slot_refs", rsps, pkts, 0, npkts, cons, mask, state.slots, bytearray(8 * nr * 2))
    mem = bytearray(bytes(range(256)) * (64 * 4096 // 256))
    priv = _pool(64, list(range(40, 40 + data.draw(st.integers(0, 20)))))
    both(
        "netfront_rx_build", rsps, pkts, 0, npkts, cons, mask, state.slots, mem, priv.buf,
        data.draw(st.booleans()), bytearray(max(npkts, 1) * r.PKT.size), bytearray(64 * r.PIECE.size), 0,
        data.draw(st.sampled_from([0, 3, 64])), bytearray(8 * 2 * nr), 0,
    )  # fmt: skip


# --- netfront tx -------------------------------------------------------------------------------


@st.composite
def vec_of_packets(draw: st.DrawFn, pool: FramePool, own_grant: bool) -> PacketVec:
    vec = PacketVec(32, 256)
    for _ in range(draw(st.integers(0, 20))):
        npieces = draw(st.integers(1, 19))
        pieces = []
        for _k in range(npieces):
            off = draw(st.sampled_from([0, 10, 4000]))
            length = draw(st.sampled_from([1, 60, 96, 4096 - off]))
            frame = draw(st.integers(0, 63))
            flags = draw(
                st.sampled_from([r.PIECE_POOL, r.PIECE_OWN_GRANT, r.PIECE_POOL | r.PIECE_OWN_GRANT, 0])
            )
            ref = draw(st.sampled_from([r.NONE32, 100 + frame])) if flags & r.PIECE_POOL else 100 + frame
            pieces.append(Piece(frame, off, length, ref, DOMID_SELF, flags))
        if not vec.room(len(pieces)):
            break
        vec.append(
            pieces,
            flags=draw(st.sampled_from([0, r.PKT_CSUM_PARTIAL, r.PKT_DATA_VALIDATED])),
            tag=draw(st.sampled_from([r.NONE32, 7])),
            gso_size=draw(st.sampled_from([0, 1448])),
            gso_type=1,
        )
    return vec


@settings(max_examples=300)
@given(data=st.data(), free_ring=st.integers(0, 64), granted=st.booleans())
def test_netfront_tx_post_and_complete(data: st.DataObject, free_ring: int, granted: bool) -> None:
    nr = 64
    pool = FramePool(64, granted=granted)
    pool.add(list(range(64)), [100 + f for f in range(64)] if granted else None)
    pool.take(64)  # every frame is out: the pieces may name any
    vec = data.draw(vec_of_packets(pool, False))
    state = TxState(nr)
    kind, res, args = both(
        "netfront_tx_post", vec.pkts, vec.pieces, 0, vec.npkts, pool.buf, state.slots, state.inflight,
        state.ids.buf, state.pkts.buf, free_ring, bytearray(12 * max(free_ring, 1)),
    )  # fmt: skip
    if kind != "ok":
        return
    slots, inflight, ids, pks, reqs = args[5], args[6], args[7], args[8], args[10]
    nreq = res[1]
    # the backend answers in any order, with any status, sometimes for ids never issued
    order = data.draw(st.permutations(list(range(nreq))))
    rsps = b""
    for i in order:
        rid = struct.unpack_from("<H", reqs, 12 * i + 8)[0]
        flags = struct.unpack_from("<H", reqs, 12 * i + 6)[0]
        status = data.draw(st.sampled_from([0, 0, 0, -1, -2, 1, 5]))
        if data.draw(st.integers(0, 30)) == 0:
            rid = data.draw(st.integers(0, 0xFFFF))
        rsps += struct.pack("<Hh", rid, status) + bytes(8)
        del flags
    n = len(rsps) // 12
    both(
        "netfront_tx_complete", rsps, n, args[4], slots, inflight, ids, pks,
        bytearray(8 * max(n, 1)), bytearray(8 * max(n, 1)),
    )  # fmt: skip


# --- netback rx ----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    data=st.data(),
    packing=st.sampled_from([0, 1]),
    nreqs=st.integers(0, 64),
    seg_cap=st.sampled_from([1, 8, 256]),
    rsp_cap=st.sampled_from([1, 8, 256]),
)
def test_netback_rx_plan_and_respond(
    data: st.DataObject, packing: int, nreqs: int, seg_cap: int, rsp_cap: int
) -> None:
    vec = PacketVec(32, 512)
    for _ in range(data.draw(st.integers(0, 12))):
        pieces = []
        for _k in range(data.draw(st.integers(0, 18))):
            off = data.draw(st.sampled_from([0, 1, 100, 4095]))
            length = data.draw(st.sampled_from([0, 1, 14, 100, 3000, 4096 - off]))
            foreign = data.draw(st.integers(0, 4)) == 0
            flags = data.draw(st.sampled_from([0, r.PIECE_POOL, r.PIECE_RUN]))
            pieces.append(
                Piece(
                    data.draw(st.integers(0, 40)), off, length, r.NONE32, 3 if foreign else DOMID_SELF, flags
                )
            )
        vec.append(
            pieces,
            flags=data.draw(st.sampled_from([0, 1, 2])),
            gso_size=data.draw(st.sampled_from([0, 1448])),
            gso_type=1,
        )
    reqs = b"".join(struct.pack("<HHI", i, 0, 500 + i) for i in range(nreqs))
    for j in range(vec.npkts):
        both(
            "netback_rx_estimate",
            vec.pieces,
            vec.packet(j).piece0,
            vec.packet(j).npieces,
            packing,
            j % 2 == 0,
        )
    kind, res, args = both(
        "netback_rx_plan", vec.pkts, vec.pieces, 0, vec.npkts, reqs, nreqs, packing, 18, 1, 0x10000,
        bytearray(24 * seg_cap), seg_cap, bytearray(16 * max(vec.npkts, 1)), bytearray(8 * rsp_cap), rsp_cap,
    )  # fmt: skip
    if kind != "ok":
        return
    segs, plans, rsps = args[10], args[12], args[13]
    for i in range(res[2]):
        if data.draw(st.integers(0, 6)) == 0:
            struct.pack_into("<h", segs, i * 24 + 22, -1)
    both("netback_rx_respond", plans, res[0], segs, rsps, bytearray(2 * max(res[0], 1)), vec.pkts, 0)


# --- vectors, checksums, pools -------------------------------------------------------------------


def _frame(proto: int, ipv6: bool, vlan: bool) -> bytes:
    eth = b"\xff" * 12 + (b"\x81\x00\x00\x01" if vlan else b"") + (b"\x86\xdd" if ipv6 else b"\x08\x00")
    if ipv6:
        ip = struct.pack("!IHBB", 6 << 28, 40, proto, 64) + bytes(32)
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 60, 0, 0, 64, proto, 0) + bytes(8)
    l4 = (
        struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 0x50, 0, 0, 0, 0)
        if proto == 6
        else struct.pack("!HHHH", 1, 2, 28, 0)
    )
    return eth + ip + l4 + bytes(20)


@settings(max_examples=300)
@given(
    proto=st.sampled_from([6, 17, 1]),
    ipv6=st.booleans(),
    vlan=st.booleans(),
    cut=st.integers(0, 100),
    flips=st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=3),
    split=st.integers(1, 80),
)
def test_csum_setup(
    proto: int, ipv6: bool, vlan: bool, cut: int, flips: list[tuple[int, int]], split: int
) -> None:
    frame = bytearray(_frame(proto, ipv6, vlan))
    for at, value in flips:
        if at < len(frame):
            frame[at] = value
    frame = frame[: max(1, len(frame) - cut)]
    mem = bytearray(8 * 4096)
    a, b = frame[:split], frame[split:]
    mem[4096 : 4096 + len(a)] = a
    mem[2 * 4096 + 7 : 2 * 4096 + 7 + len(b)] = b
    vec = PacketVec(4, 8)
    pieces = [Piece(1, 0, len(a))] + ([Piece(2, 7, len(b))] if b else [])
    vec.append(pieces, flags=r.PKT_CSUM_PARTIAL)
    vec.append([Piece(1, 0, len(a))], flags=0)
    both("csum_setup", vec.pkts, vec.pieces, 0, 2, mem)


def _gso_frame(ipv6: bool, vlan: bool, proto: int, payload: int) -> bytes:
    """A TCP/UDP frame whose IP length counts ``payload`` bytes after a 20-byte L4 header."""
    eth = b"\xff" * 12 + (b"\x81\x00\x00\x01" if vlan else b"") + (b"\x86\xdd" if ipv6 else b"\x08\x00")
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 0x50, 0, 0, 0, 0)
    l4 = tcp if proto != 17 else struct.pack("!HHHH", 1, 2, 28, 0) + bytes(12)
    if ipv6:
        ip = struct.pack("!IHBB", 6 << 28, 20 + payload, proto, 64) + bytes(32)
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 40 + payload, 0, 0, 64, proto, 0) + bytes(8)
    return eth + ip + l4 + bytes(range(256)) * (payload // 256) + bytes(payload % 256)


@settings(max_examples=300)
@given(
    ipv6=st.booleans(),
    vlan=st.booleans(),
    proto=st.sampled_from([6, 6, 17, 1]),
    gso_type=st.sampled_from([1, 2, 7]),
    partial=st.booleans(),
    cut=st.sampled_from([0, 0, 1, 30]),
    flips=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=2),
    split=st.integers(1, 130),
    foreign=st.booleans(),
)
def test_gso_check(
    ipv6: bool, vlan: bool, proto: int, gso_type: int, partial: bool, cut: int,
    flips: list[tuple[int, int]], split: int, foreign: bool,
) -> None:  # fmt: skip
    """Both cores list the same packets, and the list is exactly what ``check_headers`` (the
    rule's one home) refuses, plus the packets without csum_blank."""
    from xennet.abi.grant_table import DOMID_SELF
    from xennet.packet.frames import MAX_HEADER_LEN
    from xennet.packet.gso import GsoError, check_headers

    frame = bytearray(_gso_frame(ipv6, vlan, proto, 3000))
    for at, value in flips:
        frame[at] = value
    frame = frame[: len(frame) - cut]
    a, b = frame[:split], frame[split:]
    mem = bytearray(8 * 4096)
    mem[4096 : 4096 + len(a)] = a
    mem[2 * 4096 + 7 : 2 * 4096 + 7 + len(b)] = b
    second = Piece(2, 7, len(b), r.NONE32, 3 if foreign else DOMID_SELF, 0)  # foreign: a mapped grant
    vec = PacketVec(4, 8)
    flags = r.PKT_CSUM_PARTIAL if partial else 0
    vec.append([Piece(1, 0, len(a)), second], flags=flags, gso_size=1448, gso_type=gso_type)
    vec.append([Piece(1, 0, len(a))], flags=flags)  # no GSO: never listed
    out = bytearray(4 * 2)
    _kind, res, args = both("gso_check", vec.pkts, vec.pieces, 0, 2, mem, out)
    listed = list(struct.unpack_from(f"<{res}I", args[5])) if res else []
    local = bytes(a) if foreign else bytes(frame)
    try:
        check_headers(local[:MAX_HEADER_LEN], len(frame), gso_type)
        fine = True
    except GsoError:
        fine = False
    assert listed == ([] if fine and partial else [0])
    assert r.GSO_HEADER_PEEK == MAX_HEADER_LEN


@settings(max_examples=200)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["take", "give", "add", "drain", "pairs"]), st.integers(0, 40)), max_size=30
    )
)
def test_pool_sequences(ops: list[tuple[str, int]]) -> None:
    pool = bytearray(r.pool_bytes(32, 40))
    POOL_HEADER.pack_into(pool, 0, 0, 32, 40, 1)
    for op, x in ops:
        out = bytearray(4 * 64)
        if op == "take":
            kind, _res, args = both("pool_take", pool, x % 10, out)
        elif op == "pairs":
            kind, _res, args = both("pool_take_pairs", pool, x % 10, bytearray(8 * 10))
        elif op == "give":
            kind, _res, args = both("pool_give", pool, struct.pack("<II", x, x + 1), 2)
        elif op == "add":
            kind, _res, args = both(
                "pool_add", pool, struct.pack("<II", x, x + 3), struct.pack("<II", 9, 10), 2
            )
        else:
            kind, _res, args = both("pool_drain", pool, out)
        pool = args[0]


@settings(max_examples=200)
@given(
    lens=st.lists(st.sampled_from([0, 1, 60, 4096, 4097, 9000, 65535, 65536]), max_size=8),
    nfree=st.integers(0, 40),
)
def test_vec_fill_frames_and_release(lens: list[int], nfree: int) -> None:
    frames = bytes(range(256)) * (sum(lens) // 256 + 1)
    mem = bytearray(48 * 4096)
    pool = _pool(48, list(range(nfree)))
    vp, vpc = bytearray(8 * r.PKT.size), bytearray(40 * r.PIECE.size)
    kind, res, args = both(
        "vec_fill_frames",
        mem,
        pool.buf,
        frames,
        struct.pack(f"<{len(lens)}I", *lens),
        len(lens),
        1,
        1448,
        1,
        vp,
        vpc,
        0,
        0,
        40,
    )
    if kind != "ok":
        return
    both("vec_release", args[8], args[9], 0, res[0], args[1], None, bytearray(4 * 8))


def test_ring_moves_wrap() -> None:
    page = bytearray(bytes(range(256)) * 16)
    for start in (0, 250, 255, 0xFFFFFFFF):
        both("ring_copy_out", page, start, 10, 12, 256, bytearray(120))
        both("ring_copy_in", page, start, 10, 12, 256, bytes(range(120)))
    both("ring_copy_out", page, 0, 300, 12, 256, bytearray(4000))


@settings(max_examples=100)
@given(data=st.data())
def test_vec_compact_and_give_pairs(data: st.DataObject) -> None:
    vec = PacketVec(16, 64)
    for _ in range(data.draw(st.integers(0, 12))):
        vec.append([Piece(data.draw(st.integers(0, 9)), 0, 10)] * data.draw(st.integers(1, 4)))
    start = data.draw(st.integers(0, max(vec.npkts, 0)))
    both("vec_compact", vec.pkts, vec.pieces, start, vec.npkts, vec.npieces)
    pool = _pool(16, list(range(8)), granted=True, refs=list(range(100, 108)))
    pool.take(8)
    pairs = b"".join(
        struct.pack("<II", 0, data.draw(st.integers(0, 17))) for _ in range(data.draw(st.integers(0, 5)))
    )
    both("pool_give_pairs", pool.buf, pairs, len(pairs) // 8)
