"""XenstoredCore: the xenstored state machine, with no I/O.

Feed it decoded requests per connection; it returns the messages to send, each tagged
with the connection it is for (replies go to the requester, watch events to anyone).
The daemon (sockets) and the in-process transport (tests) both drive this same core.

Behaviour follows C xenstored (tools/xenstore/xenstored_*.c), including its error
choices: unknown request types get ENOSYS, removing a missing node whose parent exists
succeeds, a missing node is reported as EACCES to callers who may not look.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from xennet.abi.grant_table import DOMID_SELF
from xennet.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX, XsType

from . import store as st
from .errors import XenstoreError, error_payload
from .wire import Message, join_strings, split_strings

log = logging.getLogger("xennet.xenstore.server")

OK = b"OK\0"
INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"
SPECIAL_NODES = (INTRODUCE_DOMAIN, RELEASE_DOMAIN)
# A domain hammering a quota gets one log line per quota per this many seconds.
QUOTA_LOG_INTERVAL = 10.0

Output = tuple[int, Message]


@dataclass(frozen=True)
class DomainEvent:
    """Tells the I/O layer a domain came or went (the daemon opens/closes its socket)."""

    kind: Literal["introduce", "release"]
    domid: int


@dataclass(eq=False)
class _Watch:
    path: str  # canonical absolute path, or an "@..." special name
    token: bytes
    relative_prefix: str | None  # set when registered with a relative path
    seq: int = 0  # registration order across the whole daemon (event order)

    def event_path(self, path: str) -> bytes:
        if self.relative_prefix is not None and path.startswith(self.relative_prefix):
            path = path[len(self.relative_prefix) :].lstrip("/")
        return path.encode("ascii")


@dataclass(eq=False)
class _Conn:
    conn_id: int
    domid: int
    seq: int = 0  # connection order (event order)
    watches: list[_Watch] = field(default_factory=list)
    transactions: dict[int, st.TxView] = field(default_factory=dict)
    next_tx_id: int = 1
    dead: bool = False  # its domain was released: ignore it until the I/O layer drops it


@dataclass
class _Reply:
    payload: bytes = OK
    fires: list[st.WatchFire] = field(default_factory=list)
    # Messages sent after the reply (a new watch's initial event follows the ack).
    after: list[Output] = field(default_factory=list)


# Request flags, as xenstored's wire_funcs table.
_NOTID = 1  # the tx_id field is ignored
_PRIV = 2  # privileged domains only


class XenstoredCore:
    """xenstored without I/O. ``privileged`` lists the domains that bypass permission
    checks and may introduce/release domains (dom0 by default)."""

    def __init__(self, privileged: frozenset[int] = frozenset({0}), quotas: st.Quotas | None = None) -> None:
        self.store = st.Store()
        self.quotas = quotas or st.Quotas()
        self.privileged = privileged
        self._conns: dict[int, _Conn] = {}
        self._by_domain: dict[int, dict[int, _Conn]] = {}
        # Watches by the path they watch, so a change looks up the few paths that can
        # match it (itself and its ancestors) instead of scanning every watch.
        self._watch_index: dict[str, dict[int, tuple[_Conn, _Watch]]] = {}
        self._seq = 0
        # Times a domain hit each quota (refused, or for outstanding requests, throttled),
        # and when each (quota, domain) was last logged.
        self.quota_hits: Counter[st.Quota] = Counter()
        self._quota_logged: dict[tuple[st.Quota, int], tuple[float, int]] = {}
        self._introduced: dict[int, tuple[int, int]] = {}  # domid -> (mfn, port)
        self._targets: dict[int, int] = {}
        self._special_perms: dict[str, st.Perms] = {name: st.DEFAULT_PERMS for name in SPECIAL_NODES}
        self._domain_events: list[DomainEvent] = []
        self._handlers: dict[int, tuple[Callable[[_Conn, st.TxView | None, Message], _Reply], int]] = {
            XsType.XS_CONTROL: (self._control, _PRIV),
            XsType.XS_DIRECTORY: (self._directory, 0),
            XsType.XS_READ: (self._read, 0),
            XsType.XS_GET_PERMS: (self._get_perms, 0),
            XsType.XS_WATCH: (self._watch, _NOTID),
            XsType.XS_UNWATCH: (self._unwatch, _NOTID),
            XsType.XS_TRANSACTION_START: (self._transaction_start, 0),
            XsType.XS_TRANSACTION_END: (self._transaction_end, 0),
            XsType.XS_INTRODUCE: (self._introduce, _PRIV | _NOTID),
            XsType.XS_RELEASE: (self._release, _PRIV | _NOTID),
            XsType.XS_GET_DOMAIN_PATH: (self._get_domain_path, _NOTID),
            XsType.XS_WRITE: (self._write, 0),
            XsType.XS_MKDIR: (self._mkdir, 0),
            XsType.XS_RM: (self._rm, 0),
            XsType.XS_SET_PERMS: (self._set_perms, 0),
            XsType.XS_IS_DOMAIN_INTRODUCED: (self._is_domain_introduced, _PRIV | _NOTID),
            XsType.XS_RESUME: (self._resume, _PRIV | _NOTID),
            XsType.XS_SET_TARGET: (self._set_target, _PRIV | _NOTID),
            XsType.XS_RESET_WATCHES: (self._reset_watches, _NOTID),
            XsType.XS_DIRECTORY_PART: (self._directory_part, 0),
        }

    # ------------------------------------------------------------------ connections

    def connect(self, conn_id: int, domid: int = 0) -> None:
        """Register a connection of ``domid``; QuotaError (ENOSPC) if the domain already
        has as many as it may (the I/O layer then closes it)."""
        if conn_id in self._conns:
            raise ValueError(f"connection {conn_id} already registered")
        mine = self._by_domain.setdefault(domid, {})
        if domid not in self.privileged and len(mine) >= self.quotas.connections_per_domain:
            self.note_quota(st.Quota.CONNECTIONS, domid)
            raise st.QuotaError(st.Quota.CONNECTIONS, "ENOSPC", f"domain {domid} has too many connections")
        self._seq += 1
        conn = _Conn(conn_id, domid, self._seq)
        self._conns[conn_id] = conn
        mine[conn_id] = conn

    def disconnect(self, conn_id: int) -> None:
        """Forget a connection: its watches and open transactions die with it."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        self._reset(conn)
        mine = self._by_domain.get(conn.domid, {})
        mine.pop(conn_id, None)
        if not mine:
            self._by_domain.pop(conn.domid, None)

    def connections(self, domid: int | None = None) -> list[int]:
        if domid is not None:
            return list(self._by_domain.get(domid, {}))
        return list(self._conns)

    def note_quota(self, quota: st.Quota, domid: int) -> None:
        """Count a quota hit; log it, at most once per QUOTA_LOG_INTERVAL per quota and
        domain, so a guest cannot flood the log either."""
        self.quota_hits[quota] += 1
        now = time.monotonic()
        key = (quota, domid)
        last = self._quota_logged.get(key)
        if last is not None and now - last[0] < QUOTA_LOG_INTERVAL:
            self._quota_logged[key] = (last[0], last[1] + 1)
            return
        self._quota_logged[key] = (now, 0)
        unlogged = f"; {last[1]} more times not logged" if last is not None and last[1] else ""
        log.warning("domain %d over its %s quota%s", domid, quota.value, unlogged)

    def is_introduced(self, domid: int) -> bool:
        return domid in self.privileged or domid in self._introduced

    def take_domain_events(self) -> list[DomainEvent]:
        events, self._domain_events = self._domain_events, []
        return events

    def domain_path(self, domid: int) -> str:
        return f"/local/domain/{domid}"

    # ------------------------------------------------------------------ dispatch

    def handle(self, conn_id: int, msg: Message) -> list[Output]:
        """Process one request; returns (connection, message) pairs in send order."""
        conn = self._conns[conn_id]
        if conn.dead:
            return []
        try:
            reply = self._dispatch(conn, msg)
        except XenstoreError as e:
            if isinstance(e, st.QuotaError):
                self.note_quota(e.quota, conn.domid)
            return [(conn_id, self._error(msg, e.errno_name))]
        if len(reply.payload) > XENSTORE_PAYLOAD_MAX:
            # xenstored answers E2BIG in send_reply when a reply would not fit.
            return [(conn_id, self._error(msg, "E2BIG"))]
        out: list[Output] = []
        # Events a request causes are queued before its reply (xenstored's order), so a
        # client has seen the consequences of its own write once the write returns.
        for fire in reply.fires:
            out.extend(self._fire(fire))
        out.append((conn_id, Message(msg.type, msg.req_id, msg.tx_id, reply.payload)))
        out.extend(reply.after)
        return out

    @staticmethod
    def _error(msg: Message, errno_name: str) -> Message:
        return Message(XsType.XS_ERROR, msg.req_id, msg.tx_id, error_payload(errno_name))

    def _dispatch(self, conn: _Conn, msg: Message) -> _Reply:
        entry = self._handlers.get(msg.type)
        if entry is None:
            raise XenstoreError("ENOSYS", f"unknown request type {msg.type}")
        handler, flags = entry
        if flags & _PRIV and not self._caller(conn).privileged:
            raise XenstoreError("EACCES", "privileged operation")
        tx: st.TxView | None = None
        if not flags & _NOTID and msg.tx_id:
            tx = conn.transactions.get(msg.tx_id)
            if tx is None:
                raise XenstoreError("ENOENT", f"no transaction {msg.tx_id}")
        return handler(conn, tx, msg)

    # ------------------------------------------------------------------ helpers

    def _caller(self, conn: _Conn) -> st.Caller:
        return st.Caller(conn.domid, conn.domid in self.privileged, self._targets.get(conn.domid))

    def _ctx(self, conn: _Conn, tx: st.TxView | None) -> st.OpContext:
        view: st.View = tx if tx is not None else self.store
        return st.OpContext(view, self._caller(conn), self.quotas)

    def _domain_conns(self, domid: int) -> list[_Conn]:
        return list(self._by_domain.get(domid, {}).values())

    def _over(self, conn: _Conn, used: int, limit: int) -> bool:
        """Is an unprivileged caller's domain, with ``used`` of something, at ``limit``?"""
        return not self._caller(conn).privileged and used >= limit

    def _add_watch(self, conn: _Conn, w: _Watch) -> None:
        self._seq += 1
        w.seq = self._seq
        conn.watches.append(w)
        self._watch_index.setdefault(w.path, {})[w.seq] = (conn, w)

    def _forget_watch(self, w: _Watch) -> None:
        bucket = self._watch_index.get(w.path)
        if bucket is not None:
            bucket.pop(w.seq, None)
            if not bucket:
                del self._watch_index[w.path]

    def _reset(self, conn: _Conn) -> None:
        """Drop a connection's watches and transactions (reset, reintroduction, release)."""
        for w in conn.watches:
            self._forget_watch(w)
        conn.watches.clear()
        conn.transactions.clear()

    def _canonical(self, conn: _Conn, raw: bytes) -> str:
        """Relative paths are below the connection's domain home, as in xenstored."""
        try:
            path = raw.decode("ascii")
        except UnicodeDecodeError:
            raise XenstoreError("EINVAL", "non-ASCII path") from None
        if not path.startswith("/"):
            path = f"{self.domain_path(conn.domid)}/{path}"
        st.validate_path(path, self._caller(conn).privileged)
        return path

    @staticmethod
    def _special_name(raw: bytes) -> str:
        """An ``@name``: xenstored checks only the length; we also insist on ASCII so the
        name can be echoed back in events."""
        if len(raw) > XENSTORE_REL_PATH_MAX or not raw.isascii():
            raise XenstoreError("EINVAL", "bad special name")
        return raw.decode("ascii")

    @staticmethod
    def _onearg(payload: bytes) -> bytes:
        """Exactly one NUL-terminated string, the NUL last (xenstored's onearg)."""
        if not payload or payload.find(b"\0") != len(payload) - 1:
            raise XenstoreError("EINVAL", "expected one string")
        return payload[:-1]

    @staticmethod
    def _strings(payload: bytes, count: int) -> list[bytes]:
        parts = split_strings(payload)
        if len(parts) != count:
            raise XenstoreError("EINVAL", f"expected {count} strings")
        return parts

    @staticmethod
    def _domid(raw: bytes) -> int:
        if not raw.isdigit() or int(raw) > st.DOMID_MAX:
            raise XenstoreError("EINVAL", f"bad domid {raw!r}")
        return int(raw)

    def _fire(self, fire: st.WatchFire) -> list[Output]:
        # A watch fires for a change at its own path or below: look up the path and, for
        # non-exact changes, each ancestor. The cost is the depth plus the hits, not the
        # number of watches everybody holds.
        paths = [fire.path]
        if not fire.exact:
            p = fire.path
            while p not in ("/", "") and p.startswith("/"):
                p = st.parent_of(p)
                paths.append(p)
        hits: list[tuple[_Conn, _Watch]] = []
        for p in paths:
            bucket = self._watch_index.get(p)
            if bucket:
                hits.extend(bucket.values())
        if not hits:
            return []
        # xenstored's order: by connection, then by registration within one.
        hits.sort(key=lambda h: (h[0].seq, h[1].seq))
        out: list[Output] = []
        allowed: dict[int, bool] = {}
        for conn, w in hits:
            if conn.dead:
                continue
            ok = allowed.get(conn.conn_id)
            if ok is None:
                caller = self._caller(conn)
                ok = caller.privileged or any(
                    st.access_for(caller, perms) & st.Access.READ for perms in fire.perm_sets
                )
                allowed[conn.conn_id] = ok
            if ok:
                out.append((conn.conn_id, self._event(w, fire.path)))
        return out

    @staticmethod
    def _event(w: _Watch, path: str) -> Message:
        return Message(XsType.XS_WATCH_EVENT, 0, 0, join_strings([w.event_path(path), w.token]))

    def _fire_special(self, name: str) -> list[Output]:
        return self._fire(st.WatchFire(name, True, (self._special_perms[name],)))

    # ------------------------------------------------------------------ node requests

    def _read(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        path = self._canonical(conn, self._onearg(msg.payload))
        return _Reply(st.read(self._ctx(conn, tx), path))

    def _directory(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        path = self._canonical(conn, self._onearg(msg.payload))
        return _Reply(join_strings(st.directory(self._ctx(conn, tx), path).children))

    def _directory_part(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        """A chunk of a long child list: ``generation\\0children...`` from a byte offset
        into the list; a trailing extra NUL marks the last chunk."""
        raw_path, raw_off = self._strings(msg.payload, 2)
        path = self._canonical(conn, raw_path)
        node = st.directory(self._ctx(conn, tx), path)
        children = join_strings(node.children)
        off = int(raw_off) if raw_off.isdigit() else 0
        gen = b"%d\0" % node.generation
        if off >= len(children):
            return _Reply(gen + b"\0")
        room = XENSTORE_PAYLOAD_MAX - len(gen) - 1
        end = off
        while end < len(children):
            nxt = children.index(b"\0", end) + 1
            if nxt - off > room:
                break
            end = nxt
        if end == off:
            raise XenstoreError("E2BIG", "child name too long for a chunk")
        chunk = children[off:end]
        return _Reply(gen + chunk + (b"\0" if end == len(children) else b""))

    def _get_perms(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        raw = self._onearg(msg.payload)
        if raw.startswith(b"@"):
            perms = self._special(raw)
            if not st.access_for(self._caller(conn), perms) & st.Access.READ:
                raise XenstoreError("EACCES", "special node")
        else:
            perms = st.get_perms(self._ctx(conn, tx), self._canonical(conn, raw))
        return _Reply(join_strings(str(p) for p in perms))

    def _special(self, raw: bytes) -> st.Perms:
        name = self._special_name(raw)
        if name not in self._special_perms:
            raise XenstoreError("ENOENT", name)
        return self._special_perms[name]

    def _changed(self, tx: st.TxView | None, fires: list[st.WatchFire]) -> _Reply:
        # Inside a transaction, watches fire at commit, not now.
        if tx is not None:
            tx.fires.extend(fires)
            return _Reply()
        return _Reply(fires=fires)

    def _write(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        if b"\0" not in msg.payload:
            raise XenstoreError("EINVAL", "write without path")
        raw, _, value = msg.payload.partition(b"\0")
        path = self._canonical(conn, raw)
        return self._changed(tx, st.write(self._ctx(conn, tx), path, value))

    def _mkdir(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        path = self._canonical(conn, self._onearg(msg.payload))
        return self._changed(tx, st.mkdir(self._ctx(conn, tx), path))

    def _rm(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        path = self._canonical(conn, self._onearg(msg.payload))
        return self._changed(tx, st.rm(self._ctx(conn, tx), path))

    def _set_perms(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        parts = split_strings(msg.payload)
        if len(parts) < 2:
            raise XenstoreError("EINVAL", "set_perms needs a path and permissions")
        try:
            perms = st.parse_perms(p.decode("ascii") for p in parts[1:])
        except UnicodeDecodeError:
            raise XenstoreError("EINVAL", "non-ASCII permission") from None
        caller = self._caller(conn)
        if parts[0].startswith(b"@"):
            old = self._special(parts[0])
            if st.access_for(caller, old) & (st.Access.WRITE | st.Access.OWNER) != (
                st.Access.WRITE | st.Access.OWNER
            ):
                raise XenstoreError("EACCES", "not the owner")
            self._special_perms[parts[0].decode("ascii")] = perms
            return _Reply()
        path = self._canonical(conn, parts[0])
        return self._changed(tx, st.set_perms(self._ctx(conn, tx), path, perms))

    # ------------------------------------------------------------------ watches

    def _watch(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        raw, token = self._strings(msg.payload, 2)
        if raw.startswith(b"@"):
            # Special names are not node paths: any name is accepted (only two ever fire).
            path, prefix = self._special_name(raw), None
        else:
            path = self._canonical(conn, raw)
            prefix = None if raw.startswith(b"/") else self.domain_path(conn.domid)
        if any(w.path == path and w.token == token for w in conn.watches):
            raise XenstoreError("EEXIST", "duplicate watch")
        used = sum(len(c.watches) for c in self._domain_conns(conn.domid))
        if self._over(conn, used, self.quotas.watches_per_domain):
            raise st.QuotaError(st.Quota.WATCHES, "E2BIG", f"domain {conn.domid} has too many watches")
        w = _Watch(path, token, prefix)
        self._add_watch(conn, w)
        # Fires once at registration, after the ack: simplifies clients (xenstored).
        return _Reply(after=[(conn.conn_id, self._event(w, path))])

    def _unwatch(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        raw, token = self._strings(msg.payload, 2)
        if raw.startswith(b"@"):
            path = raw.decode("ascii", "replace")  # only compared, never sent back
        else:
            try:
                path = raw.decode("ascii")
            except UnicodeDecodeError:
                raise XenstoreError("ENOENT", "no such watch") from None
            if not path.startswith("/"):
                path = f"{self.domain_path(conn.domid)}/{path}"
        for i, w in enumerate(conn.watches):
            if w.path == path and w.token == token:
                del conn.watches[i]
                self._forget_watch(w)
                return _Reply()
        raise XenstoreError("ENOENT", "no such watch")

    def _reset_watches(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        self._reset(conn)
        return _Reply()

    # ------------------------------------------------------------------ transactions

    def _transaction_start(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        if tx is not None:
            raise XenstoreError("EBUSY", "transactions do not nest")
        used = sum(len(c.transactions) for c in self._domain_conns(conn.domid))
        if self._over(conn, used, self.quotas.transactions_per_domain):
            raise st.QuotaError(
                st.Quota.TRANSACTIONS, "ENOSPC", f"domain {conn.domid} has too many transactions"
            )
        tx_id = conn.next_tx_id
        while tx_id == 0 or tx_id in conn.transactions:
            tx_id = (tx_id + 1) & 0xFFFFFFFF
        conn.next_tx_id = (tx_id + 1) & 0xFFFFFFFF
        conn.transactions[tx_id] = st.TxView(self.store)
        return _Reply(b"%d\0" % tx_id)

    def _transaction_end(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        arg = self._onearg(msg.payload)
        if arg not in (b"T", b"F"):
            raise XenstoreError("EINVAL", "transaction end needs T or F")
        if tx is None:
            raise XenstoreError("ENOENT", "not in a transaction")
        # Over either way, including when the commit fails with EAGAIN.
        del conn.transactions[msg.tx_id]
        if arg == b"F":
            return _Reply()
        if tx.conflicts():
            raise XenstoreError("EAGAIN", "transaction conflict")
        tx.commit(self._caller(conn), self.quotas)
        return _Reply(fires=tx.fires)

    # ------------------------------------------------------------------ domains

    def _introduce(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        parts = split_strings(msg.payload)
        if len(parts) < 3:
            raise XenstoreError("EINVAL", "introduce needs domid, mfn, port")
        domid = self._domid(parts[0])
        # xenstored also refuses port 0; the sim has no xenstore event channel, so 0 is fine.
        if not parts[1].isdigit() or not parts[2].isdigit():
            raise XenstoreError("EINVAL", "bad mfn or port")
        mfn, port = int(parts[1]), int(parts[2])
        if domid in self.privileged:
            raise XenstoreError("EINVAL", "cannot introduce a privileged domain")
        fresh = domid not in self._introduced
        self._introduced[domid] = (mfn, port)
        after: list[Output] = []
        if fresh:
            self._domain_events.append(DomainEvent("introduce", domid))
            after = self._fire_special(INTRODUCE_DOMAIN)
        else:
            # Re-introduction resets the domain's connection state (xenstored's conn reset).
            for c in self._domain_conns(domid):
                self._reset(c)
        return _Reply(after=after)

    def _release(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        domid = self._domid(self._onearg(msg.payload))
        if domid in self.privileged:
            raise XenstoreError("EINVAL", "cannot release a privileged domain")
        if domid not in self._introduced:
            raise XenstoreError("ENOENT", f"domain {domid} not introduced")
        del self._introduced[domid]
        self._targets.pop(domid, None)
        for c in self._domain_conns(domid):
            self._reset(c)
            c.dead = True
        self._domain_events.append(DomainEvent("release", domid))
        return _Reply(after=self._fire_special(RELEASE_DOMAIN))

    def _resume(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        domid = self._domid(self._onearg(msg.payload))
        if domid in self.privileged:
            raise XenstoreError("EINVAL", "cannot resume a privileged domain")
        if domid not in self._introduced:
            raise XenstoreError("ENOENT", f"domain {domid} not introduced")
        return _Reply()

    def _set_target(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        raw_dom, raw_target = self._strings(msg.payload, 2)
        domid, target = self._domid(raw_dom), self._domid(raw_target)
        for d in (domid, target):
            if not self.is_introduced(d):
                raise XenstoreError("ENOENT", f"domain {d} not introduced")
        self._targets[domid] = target
        return _Reply()

    def _get_domain_path(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        domid = self._domid(self._onearg(msg.payload))
        return _Reply(self.domain_path(domid).encode("ascii") + b"\0")

    def _is_domain_introduced(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        domid = self._domid(self._onearg(msg.payload))
        return _Reply(b"T\0" if domid == DOMID_SELF or self.is_introduced(domid) else b"F\0")

    # ------------------------------------------------------------------ control

    def _control(self, conn: _Conn, tx: st.TxView | None, msg: Message) -> _Reply:
        """A tiny subset of xenstore-control: ``print`` (to the log) and ``help``."""
        parts = split_strings(msg.payload)
        if not parts:
            raise XenstoreError("EINVAL", "empty control request")
        cmd = parts[0]
        if cmd == b"print":
            log.info("control print: %s", b" ".join(parts[1:]).decode("utf-8", "replace"))
            return _Reply()
        if cmd == b"help":
            return _Reply(b"help\nprint <text>\n\0")
        raise XenstoreError("EINVAL", f"unknown control command {cmd!r}")
