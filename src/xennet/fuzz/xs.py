"""``xs-wire``: bytes a guest writes on its xenstore connection, into the xenstore parser
(``wire.Decoder``) and the xenstored core, as two guest connections of domain 1 and one of
domain 2, next to the toolstack's.

An input is either a raw byte stream for one connection (framed by the real decoder: a bad
header drops that connection, as the daemon does) or, to get past the framing quickly, a
list of messages built from fields.  Every reply must be an answer of the request's type,
an ``XS_ERROR`` with a name from xs_wire's table, or a watch event, and must frame; any
exception is a crash.  The check: disconnect every guest connection, then no watch or
transaction of theirs may survive, the per-domain node counts must match the tree, and
no domain may own more nodes or hold more watches than its quota.
"""

from __future__ import annotations

from collections import Counter

from xennet.abi.xs_wire import XSD_ERRORS, XsType
from xennet.xenstore.server import XenstoredCore
from xennet.xenstore.wire import Decoder, Message, ProtocolError, encode, join_strings

from . import harness

TOOLSTACK = 0
# connection id -> domid of the guests' connections
GUESTS = {1: 1, 2: 1, 3: 2}
_ERRORS = {name.encode() + b"\0" for name in XSD_ERRORS}
# strings a structured message draws on, so short inputs reach real paths and tokens
WORDS = [
    b"", b"/", b"/local/domain/1", b"/local/domain/1/device/vif/0", b"device/vif/0/state",
    b"/local/domain/0/backend/vif/1/0", b"data", b"@introduceDomain", b"@releaseDomain",
    b"tok", b"n1", b"r0", b"b2", b"T", b"F", b"1", b"0", b"2", b"4", b"/local/domain/2", b"x" * 300,
]  # fmt: skip


class Harness(harness.Harness):
    check_every = 200

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._setup()

    def _setup(self) -> None:
        core = XenstoredCore()
        core.connect(TOOLSTACK, 0)
        for domid in sorted(set(GUESTS.values())):
            home = f"/local/domain/{domid}".encode()
            for msg in (
                (XsType.XS_INTRODUCE, join_strings([str(domid), "0", "0"])),
                (XsType.XS_MKDIR, home + b"\0"),
                (XsType.XS_SET_PERMS, join_strings([home, f"n{domid}".encode(), b"r0"])),
            ):
                (_c, reply), *_ = core.handle(TOOLSTACK, Message(msg[0], 0, 0, msg[1]))[-1:]
                assert reply.type != XsType.XS_ERROR, reply
        self.given = {domid: core.store.owned_by(domid) for domid in GUESTS.values()}
        for conn, domid in GUESTS.items():
            core.connect(conn, domid)
        self.core = core
        self.decoders = {conn: Decoder() for conn in GUESTS}

    def seeds(self) -> list[bytes]:
        def msg(t: int, payload: bytes, tx: int = 0) -> bytes:
            return encode(Message(t, 7, tx, payload))

        raw = [
            msg(XsType.XS_WRITE, b"device/vif/0/state\x004"),
            msg(XsType.XS_TRANSACTION_START, b"\0") + msg(XsType.XS_WRITE, b"data\0x", 1),
            msg(XsType.XS_WATCH, b"/local/domain/1\0tok\0") + msg(XsType.XS_RM, b"data\0"),
            msg(XsType.XS_DIRECTORY_PART, b"/local/domain\x000\0"),
            msg(XsType.XS_SET_PERMS, b"data\0n1\0r2\0"),
        ]
        return [b"\0" + bytes([c]) + r for c in (1, 3) for r in raw] + [b"\1" + bytes(range(40))]

    def one(self, data: bytes) -> None:
        if not data:
            return
        if data[0] & 1:
            self._structured(data[1:])
            return
        conn = 1 + (data[1] % len(GUESTS) if len(data) > 1 else 0)
        dec = self.decoders[conn]
        dec.feed(data[2:])
        try:
            for msg in dec:
                self._request(conn, msg)
        except ProtocolError:
            self._drop(conn)

    def _structured(self, data: bytes) -> None:
        """Messages from fields: conn, type, tx id, then strings (index into WORDS, or raw)."""
        pos = 0
        while pos + 4 <= len(data):
            conn = 1 + data[pos] % len(GUESTS)
            type_ = data[pos + 1] % (XsType.XS_TYPE_COUNT + 1)
            tx = data[pos + 2] % 4
            nparts = data[pos + 3] % 5
            pos += 4
            parts: list[bytes] = []
            for _ in range(nparts):
                if pos >= len(data):
                    break
                b = data[pos]
                pos += 1
                if b < 0x80:
                    parts.append(WORDS[b % len(WORDS)])
                else:  # raw: b & 0x7f bytes follow (NULs and all)
                    n = b & 0x7F
                    parts.append(data[pos : pos + n])
                    pos += n
            self._request(conn, Message(type_, pos & 0xFFFF, tx, b"".join(p + b"\0" for p in parts)))

    def _request(self, conn: int, msg: Message) -> None:
        for to, reply in self.core.handle(conn, msg):
            if to not in GUESTS and to != TOOLSTACK:
                raise AssertionError(f"a reply for connection {to}, which does not exist")
            encode(reply)  # every reply must frame
            if reply.type == XsType.XS_ERROR:
                if reply.payload not in _ERRORS:
                    raise AssertionError(f"error reply {reply.payload!r} is not an xs_wire error name")
            elif reply.type == XsType.XS_WATCH_EVENT:
                pass
            elif to == conn and reply.type != msg.type:
                raise AssertionError(f"a reply of type {reply.type} to a request of type {msg.type}")

    def _drop(self, conn: int) -> None:
        """What the daemon does with a connection whose framing broke: close it; the guest
        may connect again."""
        self.core.disconnect(conn)
        self.core.connect(conn, GUESTS[conn])
        self.decoders[conn] = Decoder()

    def check(self) -> None:
        core = self.core
        quotas = core.quotas
        owned = Counter(node.perms[0].domid for node in core.store.nodes.values())
        if +owned != +core.store.owned:
            raise harness.Leak(f"node accounting {dict(core.store.owned)} != tree {dict(owned)}")
        for domid in set(GUESTS.values()):
            mine = owned[domid] - self.given[domid]
            if mine > quotas.nodes_per_domain:
                raise harness.Leak(f"domain {domid} owns {mine} nodes, quota {quotas.nodes_per_domain}")
            watches = sum(len(core._conns[c].watches) for c, d in GUESTS.items() if d == domid)
            if watches > quotas.watches_per_domain:
                raise harness.Leak(
                    f"domain {domid} holds {watches} watches, quota {quotas.watches_per_domain}"
                )
        for conn in GUESTS:
            core.disconnect(conn)
        left = [w for bucket in core._watch_index.values() for c, w in bucket.values() if c.conn_id != 0]
        if left or set(core.connections()) != {TOOLSTACK}:
            raise harness.Leak(
                f"after disconnect: {len(left)} guest watches, connections {core.connections()}"
            )
        self._setup()
