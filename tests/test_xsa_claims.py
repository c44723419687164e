"""XSA.md's claims, each held by a test that a deliberate break of its code fails: stale data
of an earlier connection (XSA-403), good packets before a hostile one (XSA-90), a tx grant
the backend keeps mapped after answering (XSA-396), a request changed on the shared ring
after netback read it (XSA-155)."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

import pytest

from xennet.abi import netif
from xennet.abi.ring import RING_OFFSET
from xennet.netback.interface import NetbackConfig
from xennet.netback.tx import TxBatch, TxLimits
from xennet.netfront.device import Netfront, NetfrontConfig
from xennet.packet.skb import Skb
from xennet.platform.base import Page, PlatformError
from xennet.platform.sim.grants import SimMapping
from xennet.world.local import LocalWorld

ZERO = (0, 0, 0, 0)
TX_REQ = struct.Struct("<IHHHH")  # netif_tx_request: gref, offset, flags, id, size


def _granted_pages(front: Netfront) -> Iterator[memoryview]:
    """Every page of this connection the backend may read: the rings and the granted pools."""
    assert front.tx is not None and front.rx is not None
    yield front.tx.ring_page.view
    yield front.rx.ring_page.view
    for pool in (front.tx.pages, front.rx.pages):
        assert pool.granted
        for frame in range(pool.pool.nr_frames):
            if pool.pool.holds(frame):
                yield pool.page(frame).view


@pytest.mark.parametrize("next_connection", ["reconnect", "another-vif"])
def test_an_earlier_connections_data_never_reaches_the_next(world: LocalWorld, next_connection: str) -> None:
    """XSA-403: pool frames carry one connection's packets; when it ends they go back to the
    domain's memory, which hands frames out zeroed, so the pages the next connection grants
    (its rings, every tx and rx pool frame, posted or not) hold nothing of the last one."""
    front = world.attach()
    secret_tx, secret_rx = b"\xa5" * 4000, b"\x5a" * 4000
    assert world.send([secret_tx] * 600) == 600  # past a ring's worth: many pool frames
    assert world.deliver([secret_rx] * 600) == 600
    if next_connection == "reconnect":
        front.close()
        world.pump()
        assert front.reconnect()
        world.pump()
        handle = 0
    else:
        world.detach()
        front = world.attach(handle=1)
        handle = 1
    world.to_guest.clear()
    assert world.send([b"\x01" * 60] * 300, handle=handle) == 300  # short packets reuse the frames
    assert world.deliver([b"\x02" * 60] * 300, handle=handle) == 300
    assert world.to_guest[(1, handle)] == [b"\x02" * 60] * 300
    pages = list(_granted_pages(front))
    assert len(pages) > 256  # the rx buffers posted and the tx frames used
    stale = [i for i, page in enumerate(map(bytes, pages)) if b"\xa5\xa5" in page or b"\x5a\x5a" in page]
    assert stale == [], f"{len(stale)} of {len(pages)} granted pages hold an earlier connection's data"


# --- raw tx requests, as a hostile frontend writes them ---------------------------------------


def _post(world: LocalWorld, packets: list[list[tuple[int, int]]]) -> tuple[Netfront, list[Page], list[int]]:
    """Put raw tx packets (slots of (size, id), each on its own granted page filled with the
    packet's id) on the ring without an event.  The real netfront stops being dispatched to
    (the test plays it on its rings); returns it, and the pages and refs to give back."""
    front = world.fronts.pop((1, 0))
    assert front.tx is not None
    p1 = world.platforms[1]
    pages, refs = [], []
    for slots in packets:
        for i, (size, req_id) in enumerate(slots):
            page = p1.memory.alloc(0)
            page.view[:] = bytes([slots[0][1]]) * len(page.view)
            ref = p1.grants.grant_access(0, page.frame, readonly=True)
            flags = netif.NETTXF_more_data if i < len(slots) - 1 else 0
            front.tx.ring.put_request(ref, 0, flags, req_id, size)
            pages.append(page)
            refs.append(ref)
    front.tx.ring.push_requests()
    return front, pages, refs


def _responses(front: Netfront) -> list[tuple[int, int]]:
    tx = front.tx
    assert tx is not None
    return sorted(
        (r.id, r.status) for r in (tx.ring.get_response() for _ in range(tx.ring.unconsumed_responses()))
    )


def _give_back(world: LocalWorld, pages: list[Page], refs: list[int]) -> None:
    """The guest ends every grant (the backend must have let go of all) and frees the pages."""
    p1 = world.platforms[1]
    assert [ref for ref in refs if not p1.grants.end_access(ref)] == []
    for page in pages:
        p1.memory.free(page)


@pytest.mark.parametrize("path", ["skbs", "sink"])
def test_good_packets_before_a_hostile_one_are_answered_and_delivered(world: LocalWorld, path: str) -> None:
    """XSA-90: the disconnect waits for a safe point.  Two good packets, then one of 22 slots
    (fatal) in the same batch: as Linux's tx_build_gops, the two are answered OKAY and
    delivered before the vif goes down, and nothing of any of them is held."""
    world.attach()
    hostile = [(22 * 60, 3)] + [(60, 4 + i) for i in range(21)]
    front, pages, refs = _post(world, [[(100, 1)], [(200, 2)], hostile])
    vif = world.vif()
    got: list[bytes] = []

    def sink(batch: TxBatch) -> None:  # the fast path: the packets are read in place
        tx = vif.tx
        assert tx is not None
        for j in range(batch.vec.npkts):
            if batch.vec.packet(j).npieces and not batch.vec.packet(j).error:
                pieces = batch.vec.pieces_of(j)
                got.append(
                    b"".join(
                        bytes(tx.pages.page(pc.frame).view[pc.offset : pc.offset + pc.len]) for pc in pieces
                    )
                )

    if path == "sink":
        assert vif.on_event(front.tx_port, sink) == []
    else:
        skbs: list[Skb] = vif.on_event(front.tx_port)
        got = [s.data() for s in skbs]
        for s in skbs:
            s.release()
    world.pump()
    assert not vif.connected and vif.stats.fatal["too_many_slots"] == 1
    assert got == [b"\x01" * 100, b"\x02" * 200]
    assert vif.stats.tx_packets == 2
    assert _responses(front) == [(1, netif.NETIF_RSP_OKAY), (2, netif.NETIF_RSP_OKAY)]
    assert world.held()[0] == ZERO
    _give_back(world, pages, refs)


def test_a_request_changed_after_netback_read_it_is_not_seen(world: LocalWorld) -> None:
    """XSA-155: netback reads each request once into its own memory.  A racing guest rewrites
    every request on the shared ring (id, size, ref) while netback copies the packets: the
    responses and the packets are still those of the requests as first read."""
    front = world.attach()
    assert front.tx is not None
    _front, pages, refs = _post(world, [[(100, 1)], [(300, 2)]])
    ring = front.tx.ring
    ring_page = front.tx.ring_page.view
    mapper = world.platforms[0].mapper
    copy = mapper.copy_segments
    raced = []

    def racing_copy(segs: bytearray, count: int) -> int:
        for k in (2, 1):  # the guest rewrites both requests mid-batch
            off = RING_OFFSET + ((ring.req_prod - k) % ring.nr_ents) * netif.TX_REQUEST.size
            gref, offset, flags, _id, _size = TX_REQ.unpack_from(ring_page, off)
            TX_REQ.pack_into(ring_page, off, gref ^ 1, offset, flags, 77 + k, 8)
        raced.append(count)
        mapper.copy_segments = copy  # type: ignore[method-assign]
        return copy(segs, count)

    mapper.copy_segments = racing_copy  # type: ignore[method-assign]
    got: list[bytes] = []
    world.on_backend_skb = lambda vif, skb: (got.append(skb.data()), skb.release())  # type: ignore[func-returns-value]
    world.platforms[1].evtchn.notify(front.tx_port)
    world.pump()
    vif = world.vif()
    assert raced and vif.connected and not vif.stats.tx_errors and not vif.stats.fatal
    assert got == [b"\x01" * 100, b"\x02" * 300]
    assert _responses(front) == [(1, netif.NETIF_RSP_OKAY), (2, netif.NETIF_RSP_OKAY)]
    _give_back(world, pages, refs)


# --- XSA-396 on tx: the backend keeps a mapping after answering --------------------------------


def _mapping_world() -> LocalWorld:
    return LocalWorld(backend_config=NetbackConfig(tx_limits=TxLimits(data="map")))


def _keep_a_mapping(world: LocalWorld) -> list[SimMapping]:
    """The backend maps the grant of the first mapped frag it gets again, for itself, and
    releases the skb (which answers the slot): it keeps a mapping after answering."""
    kept: list[SimMapping] = []

    def on_skb(vif: object, skb: Skb) -> None:
        if not kept:
            foreign = next(b.foreign for b in skb.frags if b.foreign is not None)
            kept.append(world.platforms[0].mapper.map(foreign.domid, [foreign.gref], False))
        skb.release()

    world.on_backend_skb = on_skb
    return kept


@pytest.mark.parametrize("path", ["skb", "frames"])
def test_per_packet_a_tx_grant_still_mapped_after_its_answer_is_never_reused(path: str) -> None:
    """XSA-396 (grants=per-packet): ending the grant fails, which is counted, and the page
    waits in the revoke list: the packets after it never write into the page the backend
    still reads, and it is freed once the backend lets go."""
    with _mapping_world() as w:
        front = w.attach(config=NetfrontConfig(grants="per-packet"))
        assert front.tx is not None
        kept = _keep_a_mapping(w)
        first = b"\x11" * 14 + b"\xa5" * 1986
        if path == "skb":
            assert w.send([first]) == 1
        else:
            assert front.tx.send_frames(first, array("I", [len(first)]), 1) == 1
            front.flush()
            w.pump()
        (m,) = kept
        before = bytes(m.view)
        assert b"\xa5" * 1000 in before
        assert w.send([bytes([i % 200 + 1]) * 2000 for i in range(600)]) == 600  # pages cycle
        assert bytes(m.view) == before  # nobody reused the page under the backend
        assert front.stats.tx_errors["backend_kept_mapping"] == 1
        assert front.retry_revoke() == 1
        w.platforms[0].mapper.unmap(m)
        assert front.retry_revoke() == 0
        w.detach()
        assert w.held() == {0: ZERO, 1: ZERO}


def test_pool_a_tx_grant_still_mapped_at_close_keeps_its_page() -> None:
    """XSA-396 (grants=pool): a pool frame is the backend's to read while connected; at close
    the one it still maps keeps its grant and its page (never freed, so never handed out
    again) until it lets go."""
    with _mapping_world() as w:
        front = w.attach()
        kept = _keep_a_mapping(w)
        assert w.send([b"\x11" * 14 + b"\xa5" * 1986]) == 1
        (m,) = kept
        before = bytes(m.view)
        front.close()
        w.pump()
        assert front.tx is None and front.pending_revoke == 1
        assert w.held()[1][:2] == (1, 1)  # one page, one grant: the mapped one
        taken = _take_all(w)  # all of the guest's free memory: the mapped frame is not in it
        assert m.frames[0] not in {p.frame for p in taken} and bytes(m.view) == before
        for p in taken:
            w.platforms[1].memory.free(p)
        w.platforms[0].mapper.unmap(m)
        assert front.retry_revoke() == 0
        w.detach()
        assert w.held() == {0: ZERO, 1: ZERO}


def _take_all(world: LocalWorld) -> list[Page]:
    """Every free page of the guest's memory (to see that a page is not among them)."""
    taken = []
    try:
        while True:
            taken.append(world.platforms[1].memory.alloc(0))
    except PlatformError:
        return taken


def test_per_packet_a_tx_grant_mapped_at_close_keeps_its_skbs_page() -> None:
    """XSA-396 (grants=per-packet) at teardown: the skb in flight whose grant the backend
    still maps keeps its page until that grant ends, not just until the next retry."""
    with _mapping_world() as w:
        front = w.attach(config=NetfrontConfig(grants="per-packet"))
        held_skbs: list[Skb] = []
        kept: list[SimMapping] = []

        def on_skb(vif: object, skb: Skb) -> None:  # never answered; the grant mapped again
            foreign = next(b.foreign for b in skb.frags if b.foreign is not None)
            kept.append(w.platforms[0].mapper.map(foreign.domid, [foreign.gref], False))
            held_skbs.append(skb)

        w.on_backend_skb = on_skb
        assert w.send([b"\x11" * 14 + b"\xa5" * 1986]) == 1
        (m,) = kept
        before = bytes(m.view)
        front.close()
        w.pump()
        assert front.tx is None and front.retry_revoke() == 1
        taken = _take_all(w)
        assert m.frames[0] not in {p.frame for p in taken} and bytes(m.view) == before
        for p in taken:
            w.platforms[1].memory.free(p)
        w.platforms[0].mapper.unmap(m)
        assert front.retry_revoke() == 0
        for skb in held_skbs:
            skb.release()
        w.detach()
        assert w.held() == {0: ZERO, 1: ZERO}


# --- an untrusted backend sees only our tx pool's frames (Linux's bounce, XSA-403) ------------

SECRET = b"not for the backend " * 8


@pytest.mark.parametrize(
    ("trusted", "trust_backend", "bounced"),
    [(True, True, False), (False, True, True), (True, False, True)],
    ids=["trusted", "toolstack-says-untrusted", "netfront-trusts-no-backend"],
)
@pytest.mark.parametrize("grants", ["pool", "per-packet"])
def test_an_untrusted_backend_is_granted_nothing_but_the_packet(
    trusted: bool, trust_backend: bool, bounced: bool, grants: str
) -> None:
    """An skb on a page that also holds other data (here: a page straight from the domain's
    memory, a secret after the packet).  A backend the toolstack marks trusted=0, or any
    backend when netfront trusts none, must get the packet copied into tx pool frames: no
    granted frame holds the secret, and the packet still arrives intact."""
    from xennet.packet.skb import Buf
    from xennet.xenbus.toolstack import VifSpec

    with LocalWorld() as w:
        cfg = NetfrontConfig(grants=grants, trust_backend=trust_backend)  # type: ignore[arg-type]
        front = w.attach(spec=VifSpec(trusted=trusted), config=cfg)
        mem = w.platforms[1].memory
        page = mem.alloc(0)
        frame = bytes(range(256)) * 4  # 1024 bytes of packet, then the secret on the same page
        page.view[: len(frame)] = frame
        page.view[len(frame) : len(frame) + len(SECRET)] = SECRET
        skb = Skb(Buf(page, 0, len(frame)), pages=[page], source=mem)
        vif = w.vif()
        assert vif.tx is not None and front.tx is not None
        assert front.send(skb)
        front.flush()
        ring = vif.tx.ring  # the test is the backend: look at what it was granted
        req = ring.get_request()
        m = w.platforms[0].mapper.map(1, [req.gref], writable=False)
        seen = bytes(m.view)
        w.platforms[0].mapper.unmap(m)
        assert (SECRET in seen) is not bounced
        assert front.stats.tx_bounced == int(bounced)
        ring.req_cons -= 1  # hand the request back to netback: it delivers the packet
        w.platforms[1].evtchn.notify(front.tx_port)
        w.pump()
        assert [d for _, d in w.to_backend] == [frame]
        w.detach()
        assert w.held() == {0: (0, 0, 0, 0), 1: (0, 0, 0, 0)}
