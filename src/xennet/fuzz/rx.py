"""``rx-responses``: a hostile backend answers the rx ring of a real netfront (in a
``LocalWorld``): responses with any id, offset, flags and status, extra-info slots of any
type, more responses than requests, grants it keeps mapped while it answers (XSA-396), and
bytes of its choosing in the guest's buffers (the packet netfront then parses).

An input: byte 0 selects tricks (bit 0: store a raw ``rsp_prod`` from bytes 1-4; bit 1: the
fast path, a sink taking each vector, instead of skbs; bit 2: keep the first answered
request's grant mapped until after the event; bit 3: write the page content into each
answered buffer at the response's offset); a u16 length and that many bytes of content;
then 9-byte slots: a tag and an 8-byte ``netif_rx_response``.  A tag with bit 7 writes the 8
bytes as they are (an extra-info slot, or anything); otherwise the slot answers the next
posted request, with that request's id unless bit 6 keeps the slot's own.

Nothing may escape ``on_event`` (a crash).  When netfront gives up on the device, the
backend must hold nothing and netfront nothing (else a leak); it is then reconnected, and
every ``check_every`` inputs the vif is detached and the world must hold nothing at all.
"""

from __future__ import annotations

import struct
from typing import Any

from xennet.abi import netif
from xennet.abi.ring import RSP_PROD
from xennet.packet.frames import build_frame
from xennet.platform.base import PlatformError
from xennet.world.local import BACKEND, GUEST

from . import harness
from .world import VifHarness

RSP = struct.Struct("<HHHh")  # netif_rx_response: id, offset, flags, status
assert RSP.size == netif.NETIF_RX_RESPONSE.size
SLOT = 1 + RSP.size
ZERO = (0, 0, 0, 0)


class Harness(VifHarness):
    max_len = 2 + 2 + 4096 + SLOT * 64
    check_every = 128

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sink_mode = False
        self._start()

    def _start(self) -> None:
        w, front = self.at.world, self.at.front
        loop = w.loops[GUEST]
        real = loop.on_event

        def guest_event(port: int) -> None:
            if self.sink_mode and port == front.rx_port:
                front.on_event(port, sink=lambda vec: None)  # a consumer that drops everything
            else:
                real(port)

        loop.on_event = guest_event
        self.saved = [(loop, real)]  # put back by _restore

    def _restore(self) -> None:
        for loop, on_event in self.saved:
            loop.on_event = on_event

    def _end(self) -> None:
        self._restore()
        try:
            self.at.detach()
        except harness.Leak as leak:
            self.leaked = self.leaked or leak.what
        self.at.attach()
        self._start()

    def seeds(self) -> list[bytes]:
        f = build_frame(payload=b"p" * 1000).data
        g = build_frame(payload=bytes(range(256)) * 12, csum="partial").data
        more, extra = netif.NETRXF_more_data, netif.NETRXF_extra_info
        valid = netif.NETRXF_data_validated | netif.NETRXF_csum_blank

        def slot(tag: int, offset: int, flags: int, status: int) -> bytes:
            return bytes([tag]) + RSP.pack(0, offset, flags, status)

        def raw(b: bytes) -> bytes:
            return bytes([0x80]) + b.ljust(RSP.size, b"\0")

        def content(b: bytes) -> bytes:
            return len(b).to_bytes(2, "little") + b

        return [
            b"\x08" + content(f) + slot(0, 0, 0, len(f)),
            b"\x08" + content(f) + slot(0, 0, more, 600) + slot(0, 0, 0, len(f) - 600),
            b"\x08" + content(g) + slot(0, 0, valid | extra, len(g)) + raw(netif.gso_extra(1448, 1)),
            b"\x0a" + content(g) + slot(0, 0, valid | extra, 2000) + raw(netif.gso_extra(600, 2))
            + slot(0, 0, 0, len(g) - 2000),
            b"\x0c" + content(f) + slot(0, 0, 0, len(f)),
            b"\0" + content(b"") + slot(0, 4000, 0, 200) + slot(0, 0, 0, -1),
        ]  # fmt: skip

    def one(self, data: bytes) -> None:
        if len(data) < 3:
            return
        w, front = self.at.world, self.at.front
        vif = self.vif
        if vif.rx is None or not front.connected:
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
        ring = vif.rx.ring
        mapper = w.platforms[BACKEND].mapper
        kept: list[Any] = []
        for _ in range(ring.nr_ents):
            if pos + SLOT > len(data):
                break
            tag, slot = data[pos], data[pos + 1 : pos + SLOT]
            pos += SLOT
            if tag & 0x80 or not ring.unconsumed_requests():
                ring.put_response_bytes(slot)
                continue
            req = ring.get_request()
            id_, offset, flags, status = RSP.unpack(slot)
            ring.put_response(id_ if tag & 0x40 else req.id, offset, flags, status)
            if trick & 0xC:
                try:
                    m = mapper.map(GUEST, [req.gref], writable=True)
                except PlatformError:
                    continue  # a grant netfront already ended: the backend cannot touch it
                if trick & 8 and blob:
                    at = min(offset, 4096)
                    m.view[at : at + len(blob)] = blob[: 4096 - at]
                if trick & 4 and not kept:
                    kept.append(m)
                else:
                    mapper.unmap(m)
        self.sink_mode = bool(trick & 2)
        if raw_prod is not None:
            struct.pack_into("<I", ring.page, RSP_PROD, raw_prod)
        else:
            ring.push_responses()
        w.platforms[BACKEND].evtchn.notify(vif.rx_port)
        w.pump()
        for m in kept:
            mapper.unmap(m)
        if kept:
            front.retry_revoke()
        w.to_guest.clear()
        w.received_skbs.clear()
        if not front.connected:
            self._reconnect()

    def _reconnect(self) -> None:
        """netfront gave up on the device: both ends must have let go of everything."""
        self.at.front.retry_revoke()
        self.reconnect_if_clean({BACKEND: ZERO, GUEST: ZERO}, "after netfront gave up")
