"""The xenstore tree and the operations on it, following C xenstored's rules.

No I/O and no connections here: operations take a *view* of the tree (the live
``Store`` or a transaction's ``TxView``) and the identity of the caller, and return
the watch firings they cause. ``server.XenstoredCore`` maps wire messages onto them.

Nodes are immutable values, so a transaction's snapshot is just a shallow copy of the
path -> node dict, and "did anything I touched change?" is a generation comparison.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from xennet.abi.xs_wire import XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX

from .errors import XenstoreError


class Access(enum.IntFlag):
    NONE = 0
    READ = 1
    WRITE = 2
    # Never written in a perm string: what owners and privileged callers additionally get.
    OWNER = 4


_LETTERS: dict[str, Access] = {
    "n": Access.NONE,
    "r": Access.READ,
    "w": Access.WRITE,
    "b": Access.READ | Access.WRITE,
}
_LETTER_OF = {v: k for k, v in _LETTERS.items()}

DOMID_MAX = 0xFFFF


@dataclass(frozen=True)
class Perm:
    """One ``struct xs_permissions`` entry: the first of a node's list names the owner
    and the access everybody not listed gets; later entries grant per-domain access."""

    domid: int
    access: Access

    @classmethod
    def parse(cls, text: str) -> Perm:
        if len(text) < 2 or text[0] not in _LETTERS or not text[1:].isdigit() or not text[1:].isascii():
            raise XenstoreError("EINVAL", f"bad permission {text!r}")
        domid = int(text[1:])
        if domid > DOMID_MAX:
            raise XenstoreError("EINVAL", f"bad domid in permission {text!r}")
        return cls(domid, _LETTERS[text[0]])

    def __str__(self) -> str:
        return f"{_LETTER_OF[self.access & (Access.READ | Access.WRITE)]}{self.domid}"


Perms = tuple[Perm, ...]

DEFAULT_PERMS: Perms = (Perm(0, Access.NONE),)


def parse_perms(texts: Iterable[str]) -> Perms:
    perms = tuple(Perm.parse(t) for t in texts)
    if not perms:
        raise XenstoreError("EINVAL", "empty permission list")
    return perms


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``target`` is the domain this one acts for (XS_SET_TARGET, stubdoms)."""

    domid: int
    privileged: bool = False
    target: int | None = None

    def is_me(self, domid: int) -> bool:
        return domid == self.domid or (self.target is not None and domid == self.target)


def access_for(caller: Caller, perms: Perms) -> Access:
    """xenstored's perm_for_conn: privileged callers and the owner get everything; else the
    first later entry naming the caller, else the owner entry's default."""
    if caller.privileged or caller.is_me(perms[0].domid):
        return Access.READ | Access.WRITE | Access.OWNER
    for p in perms[1:]:
        if caller.is_me(p.domid):
            return p.access
    return perms[0].access


@dataclass(frozen=True)
class Node:
    value: bytes = b""
    perms: Perms = DEFAULT_PERMS
    # Creation order, like xenstored's children buffer; xenstore-ls shows this order.
    children: tuple[str, ...] = ()
    generation: int = 0

    def entry_size(self) -> int:
        """Approximate size of xenstored's TDB record (header, perms, data, child names),
        the quantity its per-node size quota limits."""
        return 24 + 8 * len(self.perms) + len(self.value) + sum(len(c) + 1 for c in self.children)


# ---------------------------------------------------------------------------- paths

_PATH_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")
_LOCAL_DOMAIN = "/local/domain/"


def validate_path(path: str, privileged: bool = True) -> None:
    """xenstored's is_valid_nodename for an already-canonical (absolute) path."""
    if not path.startswith("/"):
        raise XenstoreError("EINVAL", f"path not absolute: {path!r}")
    if path.endswith("/") and path != "/":
        raise XenstoreError("EINVAL", f"trailing slash: {path!r}")
    if "//" in path:
        raise XenstoreError("EINVAL", f"empty path component: {path!r}")
    if len(path) > XENSTORE_ABS_PATH_MAX:
        raise XenstoreError("EINVAL", "path too long")
    if not privileged and len(path) - _local_offset(path) > XENSTORE_REL_PATH_MAX:
        # Guests are limited relative to their own home, like xenstored's ACC_PATHLEN.
        raise XenstoreError("EINVAL", "path too long")
    if not _PATH_CHARS.issuperset(path):
        raise XenstoreError("EINVAL", f"bad character in path {path!r}")


def _local_offset(path: str) -> int:
    if not path.startswith(_LOCAL_DOMAIN):
        return 0
    rest = path[len(_LOCAL_DOMAIN) :]
    num, slash, _ = rest.partition("/")
    if not slash or not num.isdigit() or len(num) > 5:
        return 0
    return len(_LOCAL_DOMAIN) + len(num) + 1


def parent_of(path: str) -> str:
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else "/"


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def child_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def is_child(path: str, ancestor: str) -> bool:
    """``path`` is ``ancestor`` or below it (xenstored's is_child; "/" covers everything)."""
    if ancestor == "/":
        return True
    return path == ancestor or path.startswith(ancestor + "/")


# ---------------------------------------------------------------------------- views


class View(Protocol):
    """What operations read and change: the live store or a transaction."""

    def get(self, path: str) -> Node | None: ...

    def owned_by(self, domid: int) -> int:
        """How many nodes ``domid`` owns as seen here (what its node quota limits)."""
        ...

    def apply(self, changes: list[tuple[str, Node | None]], caller: Caller, quotas: Quotas) -> None: ...


class Quota(enum.Enum):
    """The limits a refusal can be counted against (fixed counter keys)."""

    CONNECTIONS = "connections"
    WATCHES = "watches"
    NODES = "nodes"
    TRANSACTIONS = "transactions"
    TRANSACTION_NODES = "transaction-nodes"
    ENTRY_SIZE = "entry-size"
    PERMS = "perms"
    OUTSTANDING = "outstanding"


class QuotaError(XenstoreError):
    """A request refused because its domain is over a quota; ``quota`` says which."""

    def __init__(self, quota: Quota, errno_name: str, detail: str = "") -> None:
        super().__init__(errno_name, detail)
        self.quota = quota


@dataclass
class Quotas:
    """Limits for unprivileged domains (xenstored's defaults); dom0 is never limited.

    Everything is counted per *domain*, summed over all of its connections, as in
    xenstored: a guest opening more connections gets no more of anything. xenstored
    has no connection limit (each guest has one ring); the sim's per-domain sockets
    need one, or every other quota could be multiplied by reconnecting."""

    nodes_per_domain: int = 1000
    entry_size: int = 2048
    watches_per_domain: int = 128
    transactions_per_domain: int = 10
    transaction_nodes: int = 1024
    perms_per_node: int = 5
    connections_per_domain: int = 8
    # Requests received but not yet answered; past it the daemon stops reading the
    # domain's sockets until it catches up (xenstored's quota_req_outstanding).
    requests_outstanding: int = 20


class Store:
    """The live tree. Every stored node gets a fresh generation number, so a changed node
    (value, permissions or children) is always distinguishable from the old one."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.generation = 0
        self.owned: Counter[int] = Counter()
        # The tree a fresh xenstored starts with.
        self._put("/", Node(children=("tool",)))
        self._put("/tool", Node(children=("xenstored",)))
        self._put("/tool/xenstored", Node())

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def owned_by(self, domid: int) -> int:
        return self.owned[domid]

    def apply(self, changes: list[tuple[str, Node | None]], caller: Caller, quotas: Quotas) -> None:
        for path, node in changes:
            if node is None:
                self._delete(path)
            else:
                self._put(path, node)

    def _put(self, path: str, node: Node) -> None:
        self.generation += 1
        old = self.nodes.get(path)
        if old is not None:
            self.owned[old.perms[0].domid] -= 1
        self.owned[node.perms[0].domid] += 1
        self.nodes[path] = replace(node, generation=self.generation)

    def _delete(self, path: str) -> None:
        old = self.nodes.pop(path, None)
        if old is not None:
            self.owned[old.perms[0].domid] -= 1
            self.generation += 1


class TxView:
    """A transaction: reads see the tree as it was at start plus the transaction's own
    changes; commit succeeds only if nothing it looked at changed meanwhile."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._base = dict(store.nodes)  # nodes are immutable: a shallow copy is a snapshot
        self.overlay: dict[str, Node | None] = {}
        self.accessed: set[str] = set()
        self.fires: list[WatchFire] = []
        # Per domain: nodes owned after the overlay minus nodes owned in the base.
        self.owned_delta: Counter[int] = Counter()

    def get(self, path: str) -> Node | None:
        self.accessed.add(path)
        if path in self.overlay:
            return self.overlay[path]
        return self._base.get(path)

    def owned_by(self, domid: int) -> int:
        # Live count plus this transaction's own changes, so quota checks inside a
        # transaction see the nodes it has already created.
        return self._store.owned[domid] + self.owned_delta[domid]

    def apply(self, changes: list[tuple[str, Node | None]], caller: Caller, quotas: Quotas) -> None:
        if not caller.privileged:
            touched = len(self.overlay.keys() | {p for p, _ in changes})
            if touched > quotas.transaction_nodes:
                raise QuotaError(Quota.TRANSACTION_NODES, "ENOSPC", "too many nodes in one transaction")
        for path, node in changes:
            old = self.get(path)
            if old is not None:
                self.owned_delta[old.perms[0].domid] -= 1
            if node is not None:
                self.owned_delta[node.perms[0].domid] += 1
            self.overlay[path] = node

    def conflicts(self) -> bool:
        """Generation check: any accessed node created, deleted or rewritten since start."""
        live = self._store.nodes
        for path in self.accessed:
            before, now = self._base.get(path), live.get(path)
            if before is None or now is None:
                if before is not now:
                    return True
            elif before.generation != now.generation:
                return True
        return False

    def commit(self, caller: Caller, quotas: Quotas) -> None:
        """Apply the overlay; call only once ``conflicts()`` is False. Every operation
        checked the node quota against the live tree of its time, but other
        transactions may have committed since: check again what this one would leave
        each domain owning (xenstored's transaction_fix_domains)."""
        if not caller.privileged:
            # No conflict means every overlay path is as in the base, so the deltas
            # apply to the live counts unchanged.
            for domid, delta in self.owned_delta.items():
                if delta > 0 and self._store.owned[domid] + delta > quotas.nodes_per_domain:
                    raise QuotaError(Quota.NODES, "ENOSPC", f"domain {domid} would own too many nodes")
        self._store.apply(list(self.overlay.items()), caller, quotas)


# ---------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class WatchFire:
    """A change watches may see. ``exact`` fires only watches on exactly ``path`` (nodes
    removed below an rm's root); otherwise watches on ``path`` or any ancestor fire.
    A watcher gets the event if any of ``perm_sets`` lets it read (old or new perms of the
    node, or its parent's), xenstored's watch_permitted."""

    path: str
    exact: bool
    perm_sets: tuple[Perms, ...] = field(default=())


@dataclass
class OpContext:
    view: View
    caller: Caller
    quotas: Quotas


def _nearest_existing(view: View, path: str) -> Node:
    while path != "/":
        path = parent_of(path)
        node = view.get(path)
        if node is not None:
            return node
    raise AssertionError("the root node always exists")


def get_node(ctx: OpContext, path: str, need: Access) -> Node:
    """Fetch a node the caller may access with ``need``.

    Like xenstored, a missing node is reported as ENOENT only to a caller whose access to
    the nearest existing ancestor overlaps ``need``; everybody else sees EACCES, so the
    error does not reveal what exists where they cannot look.
    """
    node = ctx.view.get(path)
    if node is not None:
        if access_for(ctx.caller, node.perms) & need == need:
            return node
        err = "EACCES"
    else:
        err = "ENOENT"
    if path != "/" and access_for(ctx.caller, _nearest_existing(ctx.view, path).perms) & need:
        raise XenstoreError(err, path)
    raise XenstoreError("EACCES", path)


def _apply(ctx: OpContext, changes: list[tuple[str, Node | None]]) -> None:
    caller = ctx.caller
    if not caller.privileged:
        new_owned = 0
        for path, node in changes:
            if node is None:
                continue
            if node.entry_size() >= ctx.quotas.entry_size:
                raise QuotaError(Quota.ENTRY_SIZE, "ENOSPC", f"node {path} too large")
            if ctx.view.get(path) is None and node.perms[0].domid == caller.domid:
                new_owned += 1
        if new_owned and ctx.view.owned_by(caller.domid) + new_owned > ctx.quotas.nodes_per_domain:
            raise QuotaError(Quota.NODES, "ENOSPC", f"domain {caller.domid} owns too many nodes")
    ctx.view.apply(changes, caller, ctx.quotas)


def _create(ctx: OpContext, path: str, value: bytes) -> list[tuple[str, Node | None]]:
    """Changes creating ``path`` and any missing ancestors. Each new node inherits its
    parent's permissions; an unprivileged creator becomes the owner."""
    missing = [path]
    parent_path = parent_of(path)
    parent = ctx.view.get(parent_path)
    while parent is None:
        missing.append(parent_path)
        parent_path = parent_of(parent_path)
        parent = ctx.view.get(parent_path)
    changes: list[tuple[str, Node | None]] = []
    for name in reversed(missing):
        perms = parent.perms
        if not ctx.caller.privileged:
            perms = (Perm(ctx.caller.domid, perms[0].access), *perms[1:])
        changes.append((parent_path, replace(parent, children=(*parent.children, basename(name)))))
        parent_path, parent = name, Node(value=value if name == path else b"", perms=perms)
    changes.append((path, parent))
    return changes


def read(ctx: OpContext, path: str) -> bytes:
    return get_node(ctx, path, Access.READ).value


def directory(ctx: OpContext, path: str) -> Node:
    return get_node(ctx, path, Access.READ)


def get_perms(ctx: OpContext, path: str) -> Perms:
    return get_node(ctx, path, Access.READ).perms


def _lookup_for_write(ctx: OpContext, path: str) -> Node | None:
    try:
        return get_node(ctx, path, Access.WRITE)
    except XenstoreError as e:
        if e.errno_name != "ENOENT":
            raise
        return None


def write(ctx: OpContext, path: str, value: bytes) -> list[WatchFire]:
    node = _lookup_for_write(ctx, path)
    if node is not None:
        new = replace(node, value=value)
        _apply(ctx, [(path, new)])
    else:
        changes = _create(ctx, path, value)
        _apply(ctx, changes)
        new = changes[-1][1] or Node()
    parent = ctx.view.get(parent_of(path))
    return [WatchFire(path, False, (new.perms, parent.perms if parent else DEFAULT_PERMS))]


def mkdir(ctx: OpContext, path: str) -> list[WatchFire]:
    if _lookup_for_write(ctx, path) is not None:
        return []  # already there: fine, and nothing changed
    changes = _create(ctx, path, b"")
    _apply(ctx, changes)
    new = changes[-1][1] or Node()
    parent = ctx.view.get(parent_of(path))
    return [WatchFire(path, False, (new.perms, parent.perms if parent else DEFAULT_PERMS))]


def rm(ctx: OpContext, path: str) -> list[WatchFire]:
    """Remove a subtree. Removing a missing node is fine if its parent exists (as in
    xenstored); the root cannot be removed."""
    node = _lookup_for_write(ctx, path)
    if node is None:
        if ctx.view.get(parent_of(path)) is not None:
            return []
        raise XenstoreError("ENOENT", path)
    if path == "/":
        raise XenstoreError("EINVAL", "cannot remove the root")
    parent_path = parent_of(path)
    parent = ctx.view.get(parent_path)
    assert parent is not None
    fires: list[WatchFire] = []
    changes: list[tuple[str, Node | None]] = []

    # Children before parents, as xenstored's post-order walk fires them; the removed
    # root fires its ancestors' watches too, the nodes below it only their own.
    def walk(p: str, n: Node, above: Node) -> None:
        for c in n.children:
            cp = child_path(p, c)
            cn = ctx.view.get(cp)
            if cn is not None:
                walk(cp, cn, n)
        fires.append(WatchFire(p, p != path, (n.perms, above.perms)))
        changes.append((p, None))

    walk(path, node, parent)
    name = basename(path)
    changes.append((parent_path, replace(parent, children=tuple(c for c in parent.children if c != name))))
    _apply(ctx, changes)
    return fires


def set_perms(ctx: OpContext, path: str, perms: Perms) -> list[WatchFire]:
    if not ctx.caller.privileged and len(perms) > ctx.quotas.perms_per_node:
        raise QuotaError(Quota.PERMS, "ENOSPC", "too many permissions")
    node = get_node(ctx, path, Access.WRITE | Access.OWNER)
    if not ctx.caller.privileged and perms[0].domid != node.perms[0].domid:
        raise XenstoreError("EPERM", "only a privileged domain may change a node's owner")
    _apply(ctx, [(path, replace(node, perms=perms))])
    parent = ctx.view.get(parent_of(path))
    return [WatchFire(path, False, (node.perms, perms, parent.perms if parent else DEFAULT_PERMS))]
