"""``tx-requests``: a hostile guest writes the tx ring of a real netback vif (in a
``LocalWorld``): requests and extra-info slots, any flags, sizes, offsets and ids, grant
refs that are granted, revoked or never were, producer indices far ahead -- then kicks it.

An input: byte 0 selects tricks (bit 0: store a raw ``req_prod`` from bytes 1-4; bit 1: the
fast path, a sink taking each batch, instead of skbs; bit 2: revoke the first data grant
first; bit 3: an extra event with nothing new); a u16 length and that many bytes of page
content (the packet data the backend copies: page 0 from offset 0, page 1 ending at the end
of the page); then 13-byte slots: a tag and a 12-byte ``netif_tx_request``.  A tag with bit 7
writes the 12 bytes as they are (an extra-info slot, or anything); otherwise its low bits
pick one of the guest's data grants for the request's gref.

Nothing may escape ``on_event`` (a crash); every response must carry a protocol status.
The netback cuts a frontend off for a fatal error: then, and every ``check_every`` inputs,
the vif is detached and the world must hold no page, grant, map or port (else a leak).
"""

from __future__ import annotations

import struct

from xennet.abi import netif
from xennet.abi.ring import REQ_PROD
from xennet.packet.frames import build_frame
from xennet.world.local import BACKEND, GUEST

from . import harness
from .world import VifHarness

REQ = struct.Struct("<IHHHH")  # netif_tx_request: gref, offset, flags, id, size
assert REQ.size == netif.NETIF_TX_REQUEST.size
SLOT = 1 + REQ.size
NPAGES = 4
STATUSES = {netif.NETIF_RSP_OKAY, netif.NETIF_RSP_ERROR, netif.NETIF_RSP_DROPPED, netif.NETIF_RSP_NULL}
NEVER_GRANTED = 0xFFF0


class Harness(VifHarness):
    max_len = 2 + 2 + 4096 + SLOT * 64
    check_every = 128

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._start()

    # --- a round: one attached vif, our pages granted to the backend ---------------------

    def _start(self) -> None:
        w = self.at.world
        p1 = w.platforms[GUEST]
        self.pages = [p1.memory.alloc(0) for _ in range(NPAGES)]
        self.refs = [p1.grants.grant_access(BACKEND, pg.frame, readonly=True) for pg in self.pages]
        loop = w.loops[GUEST]
        real = loop.on_event
        front = self.at.front

        def guest_event(port: int) -> None:  # the tx ring is ours: netfront must not reap it
            if port != front.tx_port:
                real(port)

        loop.on_event = guest_event
        self.saved = [(loop, real)]  # put back by _restore
        self.sink_mode = False
        self.lied: object = None  # the tx ring whose req_prod we wrote raw
        back = w.loops[BACKEND]
        real_back = back.on_event

        def backend_event(port: int) -> None:
            vif = w.netback.vif_for_port(port)
            if not self.sink_mode or vif is None:
                real_back(port)
                return
            vif.on_event(port, sink=lambda batch: None)  # a consumer that drops everything

        back.on_event = backend_event
        self.saved.append((back, real_back))

    def _restore(self) -> None:
        for loop, on_event in self.saved:
            loop.on_event = on_event

    def _end(self) -> None:
        """Detach and account; a leak is remembered and reported at the next check."""
        w = self.at.world
        self._restore()
        p1 = w.platforms[GUEST]
        busy = {i for i, ref in enumerate(self.refs) if not p1.grants.end_access(ref)}
        for i, pg in enumerate(self.pages):
            if i not in busy:
                p1.memory.free(pg)
        try:
            if busy:  # the backend still uses a grant: it must let go when detached
                w.detach()
                still = [self.refs[i] for i in busy if not p1.grants.end_access(self.refs[i])]
                for i in busy:
                    p1.memory.free(self.pages[i])
                if still:
                    raise harness.Leak(f"grants {still} still in use by the backend after detach")
            self.at.detach()
        except harness.Leak as leak:
            self.leaked = self.leaked or leak.what
        self.at.attach()
        self._start()

    # --- inputs ------------------------------------------------------------------------

    def seeds(self) -> list[bytes]:
        f = build_frame(payload=b"p" * 1000, csum="partial").data
        g = build_frame(payload=bytes(range(256)) * 12, csum="partial").data
        ok = netif.NETTXF_csum_blank | netif.NETTXF_data_validated
        more, extra = netif.NETTXF_more_data, netif.NETTXF_extra_info

        def slot(tag: int, offset: int, flags: int, id_: int, size: int) -> bytes:
            return bytes([tag]) + REQ.pack(0, offset, flags, id_, size)

        def raw(b: bytes) -> bytes:
            return bytes([0x80]) + b.ljust(REQ.size, b"\0")

        def content(b: bytes) -> bytes:
            return len(b).to_bytes(2, "little") + b

        return [
            b"\0" + content(f) + slot(0, 0, ok, 1, len(f)),
            b"\0" + content(f) + slot(0, 0, more, 1, len(f)) + slot(1, 500, 0, 2, len(f) - 500),
            b"\2" + content(g) + slot(0, 0, ok | extra, 3, len(g)) + raw(netif.gso_extra(1448, 1)),
            b"\0" + content(g) + slot(0, 0, ok | extra, 3, len(g))
            + raw(netif.gso_extra(600, 1, more=True)) + raw(bytes([2, 0]) + b"\x01\x00\x5e\x00\x00\x01"),
            b"\0" + content(b"") + b"".join(slot(i, 0, more, i, 60) for i in range(20)),
        ]  # fmt: skip

    def one(self, data: bytes) -> None:
        if len(data) < 3:
            return
        w = self.at.world
        front = self.at.front
        tx = front.tx
        if tx is None or not self.vif.connected:
            self._end()
            return
        trick = data[0]
        pos = 1
        raw_prod = None
        if trick & 1:
            raw_prod = int.from_bytes(data[pos : pos + 4].ljust(4, b"\0"), "little")
            pos += 4
        n = int.from_bytes(data[pos : pos + 2].ljust(2, b"\0"), "little") % 4097
        blob = data[pos + 2 : pos + 2 + n]
        pos += 2 + n
        self.pages[0].view[: len(blob)] = blob
        self.pages[1].view[4096 - len(blob) :] = blob
        p1 = w.platforms[GUEST]
        refs = list(self.refs)
        if trick & 4:
            if p1.grants.end_access(self.refs[0]):
                refs[0] = NEVER_GRANTED
        refs.append(NEVER_GRANTED)
        ring = tx.ring
        room = ring.nr_ents - ((ring.req_prod_pvt - ring.rsp_cons) & 0xFFFFFFFF)
        for _ in range(max(0, room)):
            if pos + SLOT > len(data):
                break
            tag, slot = data[pos], data[pos + 1 : pos + SLOT]
            pos += SLOT
            if tag & 0x80:
                ring.put_request_bytes(slot)
            else:
                _gref, offset, flags, id_, size = REQ.unpack(slot)
                ring.put_request(refs[tag % len(refs)], offset, flags, id_, size)
        self.sink_mode = bool(trick & 2)
        if raw_prod is not None:
            # a guest that lies about req_prod gets its own stale slots back as "responses"
            # (the backend answers where it was told to): no status check on this ring again
            self.lied = tx
            struct.pack_into("<I", tx.ring_page.view, REQ_PROD, raw_prod)
        else:
            ring.push_requests()
        vif = self.vif
        p1.evtchn.notify(front.tx_port)
        w.pump()
        if trick & 8 and vif.connected and front.tx is tx:
            p1.evtchn.notify(front.tx_port)
            w.pump()
        if trick & 4 and refs[0] == NEVER_GRANTED:  # grant it again, for the next input
            self.refs[0] = p1.grants.grant_access(BACKEND, self.pages[0].frame, readonly=True)
        # reap what the backend answered, as a frontend would -- unless the backend cut us
        # off: then netfront has torn the ring down and its page is no longer ours to read
        if front.tx is tx and vif.connected and not ring.response_overflow():
            for _ in range(ring.unconsumed_responses()):
                rsp = ring.get_response()
                if rsp.status not in STATUSES and self.lied is not tx:
                    raise AssertionError(f"tx response {rsp} has no protocol status")
        w.to_backend.clear()
        if not vif.connected:
            self._reconnect()

    def _reconnect(self) -> None:
        """The backend cut us off: it must hold nothing of ours now, and we nothing but our
        own pages and grants (netfront tore down when the backend closed)."""
        self.reconnect_if_clean({BACKEND: (0, 0, 0, 0), GUEST: (NPAGES, NPAGES, 0, 0)}, "after a fatal error")
