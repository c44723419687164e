"""A real netfront (in a ``LocalWorld``) against a hostile backend the test plays by hand, as
a Hypothesis state machine: netback is stopped and the test maps the rings, binds the ports
and writes the backend's xenstore nodes itself.  Its moves are type-correct but random -- rx
responses (any id, offset, flags, status, extra-info), tx responses for requests it took or
never saw, producer indices far ahead or behind, event storms, writes to its own state and
feature nodes, its directory removed, grants of netfront's kept mapped across a teardown
(XSA-396) and let go later, a toolstack detach and reattach.

After every step: nothing escaped netfront's entry points (``LocalWorld.pump`` lets any
exception of ``on_event``/``on_watch`` through), every counter is an int under a key from a
fixed set, netfront sits in a state of its xenbus table (connected only when Connected), and
torn down it holds only the grants the peer still maps.  Well-formed traffic each way must
arrive intact; the teardown detaches and every page, grant, map and port must be back.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xennet.abi import netif
from xennet.abi.ring import RSP_PROD
from xennet.core import records as r
from xennet.netfront.device import Netfront
from xennet.netfront.handshake import TABLE
from xennet.netfront.slotpolicy import policy_names
from xennet.netfront.stats import Drop
from xennet.platform.base import PlatformError
from xennet.ring import BackRing
from xennet.world.local import BACKEND, GUEST, LocalWorld
from xennet.xenbus.states import XenbusState as S
from xennet.xenbus.toolstack import detach_vif
from xennet.xenstore.errors import XenstoreError

ZERO = (0, 0, 0, 0)
TABLE_STATES = {s for s, _e in TABLE}
DROPS = {d.value for d in Drop}
TX_KEYS = {
    *r.TX_ERROR_NAMES.values(), *DROPS, "bad_length", "too_big_without_sg", "backend_error",
    "backend_dropped", "backend_kept_mapping", "not_connected",
}  # fmt: skip
RX_KEYS = {*r.RX_ERROR_NAMES.values(), *DROPS, "csum_blank_unparseable"}
POLICY_KEYS = {
    f"{p}:{o}" for p in policy_names() for o in ("dropped", "applied", "packets_out", "bytes_copied")
}
BACK_KEYS = [
    "state", "feature-rx-copy", "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6",
    "feature-split-event-channels", "feature-ipv6-csum-offload", "multi-queue-max-queues",
]  # fmt: skip
FEATURES = {"feature-rx-copy": "1", "feature-rx-flip": "0", "feature-sg": "1", "feature-gso-tcpv4": "1",
            "feature-gso-tcpv6": "1", "feature-split-event-channels": "1"}  # fmt: skip
VALUES = st.one_of(st.integers(-2, 9).map(str), st.sampled_from(["", "x", "4294967296", " 4", "1\n"]))

s16 = st.integers(-0x8000, 0x7FFF)
u16 = st.integers(0, 0xFFFF)
# an rx response to the next posted request (its id, or any), with bytes written into the
# buffer and the grant perhaps kept mapped -- or raw bytes where an extra-info slot may be
RX_ANSWER = st.tuples(
    st.booleans(),  # keep the request's id
    u16,
    st.one_of(st.integers(0, 200), u16),  # offset
    st.integers(0, 31),  # the five NETRXF flags in any combination
    st.one_of(st.integers(-3, 1600), s16),  # status: an error, or the size
    st.binary(max_size=64),  # content at the offset
    st.booleans(),  # keep the grant mapped
)
EXTRA = st.one_of(
    st.builds(netif.gso_extra, st.one_of(st.integers(0, 9000), u16), st.integers(0, 3), st.booleans()),
    st.binary(min_size=8, max_size=8),
)
RX_SLOTS = st.lists(st.one_of(RX_ANSWER, RX_ANSWER, EXTRA), min_size=1, max_size=30)


class HostileBack:
    """The backend of vif 1/0: it maps netfront's rings and binds its ports, by hand."""

    def __init__(self, w: LocalWorld) -> None:
        self.w = w
        self.p = w.platforms[BACKEND]
        self.xs = w.clients[BACKEND]
        self.node = w.paths().backend
        self.maps: list[Any] = []  # the two rings
        self.kept: list[Any] = []  # netfront's buffers kept mapped
        self.ports: list[int] = []
        self.tx: BackRing[netif.TxRequest, netif.TxResponse] | None = None
        self.rx: BackRing[netif.RxRequest, netif.RxResponse] | None = None
        self.in_sync = False

    def write(self, key: str, value: str) -> None:
        try:
            self.xs.write(f"{self.node}/{key}", value)
        except XenstoreError:
            pass

    def state(self, s: S) -> None:
        self.write("state", str(int(s)))

    def probe(self) -> None:
        for key, value in FEATURES.items():
            self.write(key, value)
        self.state(S.InitWait)
        self.w.pump()

    def connect(self) -> bool:
        """Map what netfront published and say Connected; False if it published nothing usable."""
        fe = self.w.paths().frontend
        read = self.w.toolstack.try_read
        try:
            refs = [int(read(f"{fe}/tx-ring-ref") or ""), int(read(f"{fe}/rx-ring-ref") or "")]
            split = read(f"{fe}/event-channel-tx") is not None
            keys = ["event-channel-tx", "event-channel-rx"] if split else ["event-channel"]
            evts = [int(read(f"{fe}/{key}") or "") for key in keys]
        except ValueError:
            return False
        self.maps = [self.p.mapper.map(GUEST, [ref], writable=True) for ref in refs]
        self.tx = BackRing(
            self.maps[0].view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self.rx = BackRing(
            self.maps[1].view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.ports = [self.p.evtchn.bind_interdomain(GUEST, e) for e in evts]
        self.state(S.Connected)
        self.w.pump()
        self.in_sync = True
        return True

    def disconnect(self, kept_too: bool = True) -> None:
        for port in self.ports:
            self.p.evtchn.close(port)
        for m in self.maps + (self.kept if kept_too else []):
            self.p.mapper.unmap(m)
        self.maps, self.ports = [], []
        if kept_too:
            self.kept = []
        self.tx = self.rx = None
        self.in_sync = False

    @property
    def tx_port(self) -> int:
        return self.ports[0]

    @property
    def rx_port(self) -> int:
        return self.ports[-1]

    def notify(self, port: int) -> None:
        try:
            self.p.evtchn.notify(port)
        except PlatformError:
            pass  # netfront closed its end: the peer's notify fails, the peer's problem


class NetfrontMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = LocalWorld()
        self.w.netback.stop()  # the test is the backend
        self.w.pump()
        self.back = HostileBack(self.w)
        self.front: Netfront | None = None
        self.attach()

    # --- the toolstack's and the peer's plumbing ----------------------------------------------

    def attach(self) -> None:
        self.front = self.w.attach()
        self.back.probe()
        assert self.back.connect()
        assert self.front.connected

    def detach(self) -> None:
        """Toolstack detach; netfront tears down; the peer lets go; nothing may be held."""
        front = self.front
        assert front is not None
        detach_vif(self.w.toolstack, self.w.paths())
        self.w.pump()
        assert front.tx is None and front.dev.state == S.Closed
        self.back.disconnect()
        front.retry_revoke()
        front.stop_watching()
        del self.w.fronts[(GUEST, 0)]
        self.front = None
        held = self.w.held()
        assert held == {BACKEND: ZERO, GUEST: ZERO}, f"held after a detach: {held}"

    def restart(self) -> None:
        """A clean backend restart: Closed, let go, InitWait, map anew -- or a reattach."""
        front = self.front
        assert front is not None
        paths = self.w.paths()
        read = self.w.toolstack.try_read
        if read(f"{paths.frontend}/backend") is None or read(f"{paths.backend}/frontend-id") is None:
            self.detach()
            self.attach()
            return
        self.back.disconnect(kept_too=False)
        self.back.state(S.Closed)
        self.w.pump()
        if front.dev.state != S.Closed:  # fine where it is (Initialising): close it
            front.close()
            self.w.pump()
        self.back.disconnect()
        front.retry_revoke()
        for key, value in FEATURES.items():
            self.back.write(key, value)
        self.back.state(S.InitWait)
        self.w.pump()
        if front.dev.state == S.Closed:
            assert front.reconnect()
            self.w.pump()
        assert self.back.connect(), front.dev.state
        assert front.connected, front.dev.state

    def kick(self, port: int, times: int = 1) -> None:
        for _ in range(times):
            self.back.notify(port)
        self.w.pump()

    # --- the peer's moves -----------------------------------------------------------------------

    @rule(slots=RX_SLOTS)
    def post_rx_responses(self, slots: list[tuple[bool, int, int, int, int, bytes, bool] | bytes]) -> None:
        b = self.back
        rx = b.rx
        if rx is None:
            return
        mapper = b.p.mapper
        for slot in slots[: rx.nr_ents]:
            if isinstance(slot, bytes) or not rx.unconsumed_requests():
                rx.put_response_bytes(slot if isinstance(slot, bytes) else bytes(8))
                continue
            keep_id, id_, offset, flags, status, content, keep = slot
            req = rx.get_request()
            try:
                m = mapper.map(GUEST, [req.gref], writable=True)
            except PlatformError:
                m = None  # a grant netfront ended: not ours to touch
            if m is not None:
                at = min(offset, 4096)
                m.view[at : at + len(content)] = content[: 4096 - at]
                if keep:
                    b.kept.append(m)
                else:
                    mapper.unmap(m)
            rx.put_response(req.id if keep_id else id_, offset, flags, status)
        rx.push_responses()
        b.in_sync = False
        self.kick(b.rx_port)

    @rule(
        frames=st.lists(st.binary(min_size=14, max_size=5000), max_size=6),
        answers=st.lists(st.tuples(st.booleans(), u16, s16), max_size=12),
        take=st.integers(0, 12),
    )
    def answer_tx(self, frames: list[bytes], answers: list[tuple[bool, int, int]], take: int) -> None:
        """netfront sends; the peer takes some requests and answers with any id and status,
        perhaps more answers than it took."""
        front, b = self.front, self.back
        assert front is not None
        for frame in frames:
            front.send_frame(frame)
        front.flush()
        self.w.pump()
        tx = b.tx
        if tx is None:
            return
        reqs = [tx.get_request() for _ in range(min(take, tx.unconsumed_requests()))]
        for i, (keep_id, id_, status) in enumerate(answers):
            tx.put_response(reqs[i].id if keep_id and i < len(reqs) else id_, status)
        tx.push_responses()
        b.in_sync = False
        self.kick(b.tx_port)

    @rule(
        ring=st.sampled_from(["tx", "rx"]), delta=st.one_of(st.integers(-400, -1), st.integers(1, 2**32 - 1))
    )
    def jump_producer(self, ring: str, delta: int) -> None:
        b = self.back
        back_ring = b.tx if ring == "tx" else b.rx
        if back_ring is None:
            return
        struct.pack_into("<I", back_ring.page, RSP_PROD, (back_ring.rsp_prod + delta) & 0xFFFFFFFF)
        b.in_sync = False
        self.kick(b.tx_port if ring == "tx" else b.rx_port)

    @rule(times=st.integers(1, 60), which=st.sampled_from(["tx", "rx", "both"]))
    def event_storm(self, times: int, which: str) -> None:
        b = self.back
        if not b.ports:
            return
        before = len(self.w.to_guest.get((GUEST, 0), []))
        for _ in range(times):
            if which in ("tx", "both"):
                b.notify(b.tx_port)
            if which in ("rx", "both"):
                b.notify(b.rx_port)
        self.w.pump()
        if b.in_sync:
            assert len(self.w.to_guest.get((GUEST, 0), [])) == before, "packets nobody sent"

    @rule(key=st.sampled_from(BACK_KEYS), value=VALUES)
    def xenstore_write(self, key: str, value: str) -> None:
        self.back.write(key, value)
        self.back.in_sync = False
        self.w.pump()

    @rule()
    def remove_backend_directory(self) -> None:
        try:
            self.back.xs.rm(self.back.node)
        except XenstoreError:
            pass
        self.back.in_sync = False
        self.w.pump()

    @rule(n=st.integers(1, 8))
    def keep_posted_buffers_mapped(self, n: int) -> None:
        """Map rx buffers netfront posted and keep them (XSA-396): a teardown now must wait."""
        b = self.back
        rx = b.rx
        if rx is None:
            return
        for i in range(min(n, rx.unconsumed_requests())):
            raw = bytes(rx.page[64 + 8 * ((rx.req_cons + i) % rx.nr_ents) :][:8])
            _id, _pad, gref = struct.unpack("<HHI", raw)
            try:
                b.kept.append(b.p.mapper.map(GUEST, [gref], writable=True))
            except PlatformError:
                pass

    @rule()
    def let_kept_grants_go(self) -> None:
        for m in self.back.kept:
            self.back.p.mapper.unmap(m)
        self.back.kept = []
        assert self.front is not None
        self.front.retry_revoke()
        self.w.pump()

    @rule()
    def detach_and_reattach(self) -> None:
        self.detach()
        self.attach()

    @rule()
    def let_time_pass(self) -> None:
        assert self.front is not None
        self.front.flush()
        self.front.retry_revoke()
        self.w.pump()

    # --- well-formed traffic: progress ----------------------------------------------------------

    @rule(frames=st.lists(st.binary(min_size=14, max_size=1514), min_size=1, max_size=8))
    def well_formed_rx(self, frames: list[bytes]) -> None:
        front = self.front
        assert front is not None
        if not (self.back.in_sync and front.connected):
            self.restart()
        front, b = self.front, self.back
        assert front is not None
        rx = b.rx
        assert rx is not None and rx.unconsumed_requests() >= len(frames)
        self.w.to_guest.clear()
        for frame in frames:
            req = rx.get_request()
            m = b.p.mapper.map(GUEST, [req.gref], writable=True)
            m.view[: len(frame)] = frame
            b.p.mapper.unmap(m)
            rx.put_response(req.id, 0, 0, len(frame))
        rx.push_responses()
        self.kick(b.rx_port)
        assert self.w.to_guest.get((GUEST, 0)) == frames
        event("well-formed rx delivered")

    @rule(frames=st.lists(st.binary(min_size=14, max_size=3000), min_size=1, max_size=6))
    def well_formed_tx(self, frames: list[bytes]) -> None:
        front = self.front
        assert front is not None
        if not (self.back.in_sync and front.connected):
            self.restart()
        front, b = self.front, self.back
        assert front is not None
        tx = b.tx
        assert tx is not None and front.tx is not None
        completed = front.stats.tx_completed
        for frame in frames:
            assert front.send_frame(frame)
        front.flush()
        self.w.pump()
        got: list[bytes] = []
        chain: list[netif.TxRequest] = []
        while tx.unconsumed_requests():
            req = tx.get_request()
            assert not req.flags & netif.NETTXF_extra_info, req  # plain frames: no extra info
            chain.append(req)
            if req.flags & netif.NETTXF_more_data:
                continue
            rest = sum(c.size for c in chain[1:])
            data = b""
            for i, c in enumerate(chain):
                size = chain[0].size - rest if i == 0 else c.size
                m = b.p.mapper.map(GUEST, [c.gref], writable=False)
                data += bytes(m.view[c.offset : c.offset + size])
                b.p.mapper.unmap(m)
                tx.put_response(c.id, netif.NETIF_RSP_OKAY)
            got.append(data)
            chain = []
        assert not chain and got == frames
        tx.push_responses()
        self.kick(b.tx_port)
        assert front.stats.tx_completed == completed + len(frames) and front.tx.in_flight == 0
        event("well-formed tx delivered")

    # --- after every step -----------------------------------------------------------------------

    @invariant()
    def counters_are_bounded(self) -> None:
        if self.front is None:
            return
        allowed = {"tx_errors": TX_KEYS, "rx_errors": RX_KEYS, "tx_policy": POLICY_KEYS}
        for name, value in self.front.stats.as_dict().items():
            if isinstance(value, dict):
                assert set(value) <= allowed[name], (
                    f"{name}: keys {set(value) - allowed[name]} not in the fixed set"
                )
                assert all(type(v) is int and v >= 0 for v in value.values()), value
            else:
                assert type(value) is int and value >= 0, (name, value)

    @invariant()
    def front_in_a_table_state(self) -> None:
        front = self.front
        if front is None:
            return
        assert front.dev.state in TABLE_STATES, front.dev.state
        if front.connected:
            assert front.dev.state == S.Connected
        assert (front.tx is None) == (front.rx is None) == (front.tx_port == -1)
        held = self.w.held()
        if front.tx is None:
            pages, grants, maps, ports = held[GUEST]
            assert (grants, maps, ports) == (front.pending_revoke, 0, 0), (held[GUEST], front.pending_revoke)
        back = self.back
        assert held[BACKEND] == (0, 0, len(back.maps) + len(back.kept), len(back.ports)), held

    def teardown(self) -> None:
        try:
            if self.front is not None:
                self.detach()
        finally:
            self.w.close()


NetfrontMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40)
test_netfront_against_a_hostile_backend = NetfrontMachine.TestCase
