"""A real netback vif (in a ``LocalWorld``) against a hostile frontend the test plays by hand,
as a Hypothesis state machine: the peer's moves are type-correct but random -- tx request
chains (any sizes, flags, ids, extra-info incl. GSO, refs granted, foreign, revoked or never
granted), producer indices far ahead or behind, event storms, writes to its own xenstore
nodes, its directory removed, grants ended under the backend, a toolstack detach and
reattach -- all written into the world's real shared rings, grant table and xenstore.

After every step: nothing escaped the driver's entry points (``LocalWorld.pump`` calls
``on_event``/``on_watch`` and lets any exception through), every counter is an int under a
key from a fixed set, the vif sits in a state of netback's xenbus table and is connected
exactly when that state is Connected, and a backend not connected holds nothing.  Well-formed
traffic, each way, must arrive intact (progress, not only survival); the teardown detaches
and every page, grant, map and port of both domains must be back.
"""

from __future__ import annotations

import struct

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xennet.abi import netif
from xennet.abi.ring import REQ_PROD
from xennet.core import records as r
from xennet.netback.handshake import TABLE
from xennet.netback.interface import Vif
from xennet.netback.stats import GRANT_ERROR_KEYS
from xennet.platform.base import Page, PlatformError
from xennet.ring import FrontRing
from xennet.world.local import BACKEND, GUEST, LocalWorld
from xennet.xenbus.states import XenbusState as S
from xennet.xenbus.toolstack import VifSpec, attach_vif, detach_vif
from xennet.xenstore.errors import XenstoreError

ZERO = (0, 0, 0, 0)
NDATA = 6  # data pages the peer grants the backend for its tx requests
NRX = 32  # rx buffers the peer posts
NEVER_GRANTED = 0xFFF0
FOREIGN = 7  # a domain that does not exist: a grant to it is not the backend's to use
STATUSES = {netif.NETIF_RSP_OKAY, netif.NETIF_RSP_ERROR, netif.NETIF_RSP_DROPPED, netif.NETIF_RSP_NULL}
TABLE_STATES = {s for s, _e in TABLE}
# every key a counter may have: the kernels' name tables and the literals of netback's code
TX_KEYS = {
    *r.TX_ERROR_NAMES.values(), *GRANT_ERROR_KEYS, "mcast_table_full", "csum_setup_failed",
}  # fmt: skip
RX_KEYS = {
    *r.RX_ERROR_NAMES.values(), *GRANT_ERROR_KEYS, "not_connected", "needs_sg", "needs_gso",
    "carrier_off", "queue_full", "empty", "no_rx_slots", "stalled", "disconnected",
}  # fmt: skip
FATAL_KEYS = {
    *r.TX_FATAL_NAMES.values(),
    *r.RX_FATAL_NAMES.values(),
    "ring_overflow",
    "peer_gone",
    "handshake",
}
FRONT_KEYS = [
    "state", "tx-ring-ref", "rx-ring-ref", "event-channel", "event-channel-tx", "event-channel-rx",
    "request-rx-copy", "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-rx-notify",
    "feature-no-csum-offload", "multi-queue-num-queues",
]  # fmt: skip
VALUES = st.one_of(
    st.integers(-2, 4100).map(str),
    st.sampled_from(["", "x", "4294967296", " 3", "0x10", "1\n"]),
)

u16 = st.integers(0, 0xFFFF)
# a tx slot: a request on one of the peer's refs (or a ref it never granted, or one granted to
# someone else) -- or raw bytes where an extra-info slot may be expected
REQUEST = st.tuples(
    st.sampled_from(["data", "data", "data", "never", "foreign", "duplicate"]),
    st.integers(0, NDATA - 1),
    st.one_of(st.integers(0, 64), u16),
    st.integers(0, 15),  # the four NETTXF flags in any combination
    st.integers(0, 300),
    st.one_of(st.integers(0, 4200), u16),
)
EXTRA = st.one_of(
    st.builds(
        netif.gso_extra,
        st.one_of(st.integers(0, 9000), u16),
        st.integers(0, 3),
        st.booleans(),
    ),
    st.builds(
        lambda t, f, mac: bytes([t, f]) + mac,
        st.integers(0, 6),
        st.integers(0, 3),
        st.binary(min_size=6, max_size=6),
    ),
)
SLOTS = st.lists(st.one_of(REQUEST, REQUEST, EXTRA), min_size=1, max_size=40)


class HostileFront:
    """The frontend of vif 1/0: its rings, grants, ports and xenstore nodes, by hand."""

    def __init__(self, w: LocalWorld) -> None:
        self.w = w
        self.p = w.platforms[GUEST]
        self.xs = w.clients[GUEST]
        self.paths = w.paths()
        self.pages: list[Page] = []  # every page of ours, granted or not
        self.refs: list[int] = []  # every grant of ours still live
        self.data: list[tuple[Page, int]] = []  # tx data pages and their (readonly) grants
        self.rx_bufs: dict[int, tuple[Page, int]] = {}  # rx request id -> page, grant
        self.ports: list[int] = []
        self.tx: FrontRing[netif.TxRequest, netif.TxResponse] | None = None
        self.rx: FrontRing[netif.RxRequest, netif.RxResponse] | None = None
        self.in_sync = False  # our ring indices and the backend's agree: well-formed traffic may run

    def _page(self) -> Page:
        page = self.p.memory.alloc(0)
        self.pages.append(page)
        return page

    def _grant(self, page: Page, readonly: bool, to: int = BACKEND) -> int:
        ref = self.p.grants.grant_access(to, page.frame, readonly=readonly)
        self.refs.append(ref)
        return ref

    def write(self, key: str, value: str) -> None:
        try:
            self.xs.write(f"{self.paths.frontend}/{key}", value)
        except XenstoreError:
            pass  # not ours to write (the toolstack removed the directory): the peer's loss

    def rm(self) -> None:
        try:
            self.xs.rm(self.paths.frontend)
        except XenstoreError:
            pass

    def state(self, s: S) -> None:
        self.write("state", str(int(s)))

    def publish(self, split: bool) -> None:
        """Fresh rings, data pages, rx buffers and ports, written to xenstore; then Connected."""
        tx_page, rx_page = self._page(), self._page()
        tx_ref, rx_ref = self._grant(tx_page, False), self._grant(rx_page, False)
        self.tx = FrontRing(
            tx_page.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self.rx = FrontRing(
            rx_page.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.data = []
        for _ in range(NDATA):
            page = self._page()
            self.data.append((page, self._grant(page, True)))
        self.rx_bufs = {}
        for i in range(NRX):
            page = self._page()
            self.rx_bufs[i] = (page, self._grant(page, False))
            self.rx.put_request(i, self.rx_bufs[i][1])
        self.rx.push_requests()
        ev = self.p.evtchn
        self.ports = [ev.alloc_unbound(BACKEND) for _ in range(2 if split else 1)]
        keys = {"tx-ring-ref": str(tx_ref), "rx-ring-ref": str(rx_ref), "request-rx-copy": "1",
                "feature-sg": "1", "feature-gso-tcpv4": "1", "feature-rx-notify": "1"}  # fmt: skip
        if split:
            keys |= {"event-channel-tx": str(self.ports[0]), "event-channel-rx": str(self.ports[1])}
        else:
            keys["event-channel"] = str(self.ports[0])
        for key, value in keys.items():
            self.write(key, value)
        self.state(S.Connected)
        self.w.pump()
        self.in_sync = True

    @property
    def tx_port(self) -> int:
        return self.ports[0]

    @property
    def rx_port(self) -> int:
        return self.ports[-1]

    def release(self) -> list[int]:
        """End every grant, free every page, close every port.  Returns refs the backend
        still uses (ending them failed): none, once the backend disconnected."""
        busy = self.p.grants.end_many(self.refs)
        self.refs = []
        for page in self.pages:
            self.p.memory.free(page)
        self.pages, self.data, self.rx_bufs = [], [], {}
        for port in self.ports:
            self.p.evtchn.close(port)
        self.ports = []
        self.tx = self.rx = None
        self.in_sync = False
        return busy


class NetbackMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = LocalWorld()
        self.w.pump()
        self.attached = False
        self.front = HostileFront(self.w)
        self.attach(split=True)

    # --- the toolstack's and the peer's plumbing ----------------------------------------------

    def attach(self, split: bool) -> None:
        attach_vif(self.w.toolstack, self.w.paths(), VifSpec())
        self.w.pump()
        self.attached = True
        self.front.publish(split)

    def detach(self) -> None:
        """Toolstack detach; then the peer lets go of everything, which it can only if the
        backend let go first; then nothing may be held anywhere."""
        detach_vif(self.w.toolstack, self.w.paths())
        self.w.pump()
        self.attached = False
        assert not self.w.netback.vifs
        busy = self.front.release()
        assert busy == [], f"grants {busy} still used by the backend after a detach"
        held = self.w.held()
        assert held == {BACKEND: ZERO, GUEST: ZERO}, f"held after a detach: {held}"

    @property
    def vif(self) -> Vif | None:
        return self.w.netback.vifs.get(self.w.paths().backend)

    def restart(self) -> None:
        """A clean frontend restart: Closed, let go, Initialising, publish anew -- or a whole
        reattach when the directories are not both there."""
        vif = self.vif
        fe = self.w.toolstack.try_read(f"{self.w.paths().frontend}/backend")
        if vif is None or fe is None or vif.removed:
            if self.attached:
                detach_vif(self.w.toolstack, self.w.paths())
                self.w.pump()
            self.front.release()
            self.attach(split=True)
            return
        self.front.state(S.Closed)
        self.w.pump()
        busy = self.front.release()
        assert busy == [], f"grants {busy} still used by a backend told Closed"
        self.front.state(S.Initialising)
        self.w.pump()
        self.front.publish(split=True)

    def kick(self, port: int, times: int = 1) -> None:
        for _ in range(times):
            self.p_notify(port)
        self.w.pump()

    def p_notify(self, port: int) -> None:
        try:
            self.front.p.evtchn.notify(port)
        except PlatformError:
            pass  # the backend closed its end: the peer's notify fails, the peer's problem

    def reap_tx(self) -> list[netif.TxResponse]:
        tx = self.front.tx
        assert tx is not None
        if tx.response_overflow():
            self.front.in_sync = False
            return []
        return [tx.get_response() for _ in range(tx.unconsumed_responses())]

    # --- the peer's moves -----------------------------------------------------------------------

    @rule(slots=SLOTS, notify=st.booleans())
    def post_tx_requests(
        self, slots: list[tuple[str, int, int, int, int, int] | bytes], notify: bool
    ) -> None:
        f = self.front
        if f.tx is None or not f.ports:
            return
        tx = f.tx
        room = tx.nr_ents - ((tx.req_prod_pvt - tx.rsp_cons) & 0xFFFFFFFF)
        extra_page: Page | None = None
        for slot in slots[: max(0, room)]:
            if isinstance(slot, bytes):
                tx.put_request_bytes(slot.ljust(netif.NETIF_TX_REQUEST.size, b"\0"))
                continue
            kind, i, offset, flags, id_, size = slot
            if kind == "never":
                ref = NEVER_GRANTED
            elif kind == "foreign":
                extra_page = extra_page or f._page()
                ref = f._grant(extra_page, True, to=FOREIGN)
            elif kind == "duplicate":
                ref = f.data[0][1]
            else:
                ref = f.data[i][1]
            tx.put_request(ref, offset, flags, id_, size)
        tx.push_requests()
        if notify:
            self.kick(f.tx_port)
        if f.in_sync:
            rsps = self.reap_tx()
            if f.in_sync:
                assert all(rsp.status in STATUSES for rsp in rsps), rsps
            # a chain the backend still waits on would swallow the next packet
            if (tx.req_prod_pvt - tx.rsp_cons) & 0xFFFFFFFF:
                f.in_sync = False

    @rule(
        ring=st.sampled_from(["tx", "rx"]),
        delta=st.one_of(st.integers(-400, -1), st.integers(257, 2**32 - 1)),
    )
    def jump_producer(self, ring: str, delta: int) -> None:
        f = self.front
        front_ring = f.tx if ring == "tx" else f.rx
        if front_ring is None or not f.ports:
            return
        struct.pack_into("<I", front_ring.page, REQ_PROD, (front_ring.req_prod + delta) & 0xFFFFFFFF)
        f.in_sync = False
        self.kick(f.tx_port if ring == "tx" else f.rx_port)

    @rule(times=st.integers(1, 60), which=st.sampled_from(["tx", "rx", "both"]))
    def event_storm(self, times: int, which: str) -> None:
        f = self.front
        if not f.ports:
            return
        tx_before = f.tx.rsp_prod if f.tx is not None else 0
        for _ in range(times):
            if which in ("tx", "both"):
                self.p_notify(f.tx_port)
            if which in ("rx", "both"):
                self.p_notify(f.rx_port)
        self.w.pump()
        if f.in_sync and f.tx is not None:
            assert f.tx.rsp_prod == tx_before, "tx responses for requests never made"

    @rule(key=st.sampled_from(FRONT_KEYS), value=VALUES)
    def xenstore_write(self, key: str, value: str) -> None:
        self.front.write(key, value)  # the guest may write its own nodes, even after a detach
        self.front.in_sync = False
        self.w.pump()

    @rule()
    def remove_frontend_directory(self) -> None:
        self.front.rm()
        self.front.in_sync = False
        self.w.pump()

    @rule(which=st.sampled_from(["tx-ring", "rx-ring", "data", "rx-buffer"]), i=st.integers(0, NRX - 1))
    def revoke_grant(self, which: str, i: int) -> None:
        """End a grant the backend may map or copy from: refused while it maps it, and then
        nothing changes; otherwise the backend finds the ref dead when it next uses it."""
        f = self.front
        if f.tx is None:
            return
        if which == "data":
            page, ref = f.data[i % NDATA]
        elif which == "rx-buffer":
            page, ref = f.rx_bufs.get(i, (None, -1))  # type: ignore[assignment]
        else:
            ref = f.refs[0 if which == "tx-ring" else 1]
        if ref in f.refs and f.p.grants.end_access(ref):
            f.refs.remove(ref)
            f.in_sync = False
        self.kick(f.tx_port)
        if f.ports:
            self.kick(f.rx_port)

    @rule(split=st.booleans())
    def detach_and_reattach(self, split: bool) -> None:
        if self.attached:
            self.detach()
        else:
            self.front.release()
            assert self.w.held()[BACKEND] == ZERO
        self.attach(split)

    @rule()
    def let_time_pass(self) -> None:
        vif = self.vif
        if vif is not None:
            vif.kick_rx()
            vif.flush_tx_responses()
        self.w.pump()

    # --- well-formed traffic: progress ----------------------------------------------------------

    @rule(
        payloads=st.lists(st.binary(min_size=14, max_size=3000), min_size=1, max_size=4),
        cut=st.integers(1, 3000),
    )
    def well_formed_tx(self, payloads: list[bytes], cut: int) -> None:
        if not (self.front.in_sync and self.vif is not None and self.vif.connected):
            self.restart()
        f, vif = self.front, self.vif
        assert vif is not None and vif.connected and f.tx is not None
        self.w.to_backend.clear()
        ids = []
        for n, frame in enumerate(payloads):
            # one or two slots: the first slot's size is the packet's; a fresh page per packet
            a, b = f.data[(2 * n) % NDATA], f.data[(2 * n + 1) % NDATA]
            k = min(cut, len(frame))
            a[0].view[:k] = frame[:k]
            b[0].view[: len(frame) - k] = frame[k:]
            more = netif.NETTXF_more_data if k < len(frame) else 0
            f.tx.put_request(a[1], 0, more, 2 * n, len(frame))
            if more:
                f.tx.put_request(b[1], 0, 0, 2 * n + 1, len(frame) - k)
            ids += [2 * n] + ([2 * n + 1] if more else [])
            f.tx.push_requests()
            self.kick(f.tx_port)
        got = [frame for _name, frame in self.w.to_backend]
        assert got == payloads
        rsps = self.reap_tx()
        assert sorted((x.id, x.status) for x in rsps) == sorted((i, netif.NETIF_RSP_OKAY) for i in ids)
        event("well-formed tx delivered")

    @rule(frames=st.lists(st.binary(min_size=14, max_size=1514), min_size=1, max_size=8))
    def well_formed_rx(self, frames: list[bytes]) -> None:
        if not (self.front.in_sync and self.vif is not None and self.vif.connected):
            self.restart()
        f, vif = self.front, self.vif
        assert vif is not None and vif.connected and f.rx is not None
        for frame in frames:
            assert vif.send_frame(frame)
        vif.kick_rx()
        self.w.pump()
        rx = f.rx
        got: list[bytes] = []
        part = b""
        skip = False
        for _ in range(rx.unconsumed_responses()):
            rsp = rx.get_response()
            if skip:  # an extra-info slot
                skip = False
                continue
            assert rsp.status > 0, rsp
            page, ref = f.rx_bufs[rsp.id]
            part += bytes(page.view[rsp.offset : rsp.offset + rsp.status])
            skip = bool(rsp.flags & netif.NETRXF_extra_info)
            if not rsp.flags & netif.NETRXF_more_data:
                got.append(part)
                part = b""
            rx.put_request(rsp.id, ref)  # the buffer goes back on the ring
        rx.push_requests()
        self.kick(f.rx_port)
        assert got == frames
        event("well-formed rx delivered")

    # --- after every step -----------------------------------------------------------------------

    @invariant()
    def counters_are_bounded(self) -> None:
        for vif in self.w.netback.vifs.values():
            for name, value in vif.stats.as_dict().items():
                if isinstance(value, dict):
                    allowed = {"tx_errors": TX_KEYS, "rx_dropped": RX_KEYS, "fatal": FATAL_KEYS}[name]
                    assert set(value) <= allowed, f"{name}: keys {set(value) - allowed} not in the fixed set"
                    assert all(type(v) is int and v >= 0 for v in value.values()), value
                else:
                    assert type(value) is int and value >= 0, (name, value)

    @invariant()
    def vif_in_a_table_state(self) -> None:
        assert len(self.w.netback.vifs) <= 1
        vif = self.vif
        if vif is None:
            return
        assert vif.dev.state in TABLE_STATES, vif.dev.state
        assert vif.connected == (vif.dev.state == S.Connected), (vif.connected, vif.dev.state)
        assert (vif.tx is None) == (vif.rx is None) == (vif.tx_port == -1)
        held = self.w.held()[BACKEND]
        if not vif.connected:
            assert held == ZERO, f"a vif in {vif.dev.state.name} holds {held}"
        else:
            assert held[1] == 0 and held[2] == 2, f"connected, holds {held}"  # the two rings mapped

    def teardown(self) -> None:
        try:
            if self.attached:
                self.detach()
            else:
                busy = self.front.release()
                assert busy == []
                assert self.w.held() == {BACKEND: ZERO, GUEST: ZERO}
        finally:
            self.w.close()


NetbackMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
test_netback_against_a_hostile_frontend = NetbackMachine.TestCase
