"""XenstoredCore through the real client code over the in-process transport, plus a few
raw-message checks of the core itself."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from xennet.abi.xs_wire import XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XsType
from xennet.xenstore import store as st
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.errors import XenstoreConnectionError, XenstoreError
from xennet.xenstore.server import XenstoredCore
from xennet.xenstore.wire import Message

Connect = Callable[[int], XenstoreClient]


def errno_of(fn: Callable[[], object]) -> str:
    with pytest.raises(XenstoreError) as info:
        fn()
    return info.value.errno_name


def raw(
    core: XenstoredCore, type_: int, payload: bytes, conn: int = 1, domid: int = 0, tx: int = 0
) -> Message:
    """Send one request straight to the core; return its reply (not the events)."""
    if conn not in core.connections():
        core.connect(conn, domid)
    outs = [m for c, m in core.handle(conn, Message(type_, 42, tx, payload)) if c == conn]
    replies = [m for m in outs if m.type != XsType.XS_WATCH_EVENT]
    assert len(replies) == 1 and replies[0].req_id == 42
    return replies[0]


# ---------------------------------------------------------------------------- basic nodes


def test_initial_tree_matches_xenstored(dom0: XenstoreClient) -> None:
    assert dom0.directory("/") == ["tool"]
    assert dom0.directory("/tool") == ["xenstored"]
    assert dom0.get_perms("/") == ["n0"]


def test_write_creates_parents_read_and_directory(dom0: XenstoreClient) -> None:
    dom0.write("/a/b/c", "hello")
    assert dom0.read("/a/b/c") == b"hello"
    assert dom0.read_str("/a/b") == ""
    assert dom0.directory("/a") == ["b"]
    dom0.write("/a/b/d", b"\x00\xffbin")  # values are binary
    assert dom0.read("/a/b/d") == b"\x00\xffbin"
    assert dom0.directory("/a/b") == ["c", "d"]  # creation order
    assert dom0.try_read("/a/nope") is None
    assert errno_of(lambda: dom0.read("/a/nope")) == "ENOENT"
    assert not dom0.exists("/a/nope") and dom0.exists("/a")


def test_mkdir_is_idempotent_and_rm_is_recursive(dom0: XenstoreClient) -> None:
    dom0.mkdir("/m/n")
    dom0.write("/m/n", "v")
    dom0.mkdir("/m/n")  # existing: fine, value kept
    assert dom0.read_str("/m/n") == "v"
    dom0.write("/m/n/o/p", "x")
    dom0.rm("/m/n")
    assert dom0.directory("/m") == []
    assert dom0.try_read("/m/n/o/p") is None


def test_rm_missing_node_follows_xenstored(dom0: XenstoreClient) -> None:
    dom0.mkdir("/p")
    dom0.rm("/p/missing")  # parent exists: success, as xenstored
    assert errno_of(lambda: dom0.rm("/nowhere/missing")) == "ENOENT"
    assert errno_of(lambda: dom0.rm("/")) == "EINVAL"
    assert dom0.directory("/") == ["tool", "p"]


@pytest.mark.parametrize(
    "path",
    ["/a//b", "/a/", "/a b", "/a/ü", "/a/b.c", "/a\\b", "/" + "x" * XENSTORE_ABS_PATH_MAX, ""],
)
def test_bad_paths_are_einval(dom0: XenstoreClient, path: str) -> None:
    assert errno_of(lambda: dom0.write(path, "v")) == "EINVAL"


def test_allowed_path_characters(dom0: XenstoreClient) -> None:
    dom0.write("/Az09-_@/x", "ok")
    assert dom0.read_str("/Az09-_@/x") == "ok"


def test_relative_paths_are_below_the_domain_home(core: XenstoredCore, connect: Connect) -> None:
    dom0 = connect(0)
    dom0.mkdir("/local/domain/3")
    dom0.set_perms("/local/domain/3", ["n3"])
    guest = connect(3)
    guest.write("device/x", "1")
    assert dom0.read_str("/local/domain/3/device/x") == "1"
    assert guest.read_str("device/x") == "1"
    assert dom0.get_domain_path(3) == "/local/domain/3"
    assert guest.get_domain_path(7) == "/local/domain/7"
    dom0.write("name", "Domain-0")  # dom0's home too
    assert dom0.read_str("/local/domain/0/name") == "Domain-0"


def test_payload_limit(dom0: XenstoreClient, core: XenstoredCore) -> None:
    path = "/big"
    room = XENSTORE_PAYLOAD_MAX - len(path) - 1
    dom0.write(path, "v" * room)  # exactly fits
    assert len(dom0.read(path)) == room
    # One byte more cannot be sent: the client refuses like libxenstore (E2BIG).
    assert errno_of(lambda: dom0.write(path, "v" * (room + 1))) == "E2BIG"
    # A reply that would not fit is E2BIG from the server.
    names = [f"child-with-a-long-name-{i:04d}" for i in range(200)]
    for n in names:
        dom0.write(f"/dir/{n}", "")
    reply = raw(core, XsType.XS_DIRECTORY, b"/dir\0")
    assert reply.type == XsType.XS_ERROR and reply.payload == b"E2BIG\0"
    # ...and the client falls back to XS_DIRECTORY_PART, like libxenstore.
    assert dom0.directory("/dir") == names


def test_malformed_arguments_and_unknown_types(core: XenstoredCore) -> None:
    assert raw(core, XsType.XS_READ, b"/tool").payload == b"EINVAL\0"  # no NUL
    assert raw(core, XsType.XS_READ, b"/tool\0extra\0").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_WRITE, b"no-nul").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_WATCH, b"/tool\0").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_SET_PERMS, b"/tool\0").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_SET_PERMS, b"/tool\0x0\0").payload == b"EINVAL\0"
    # xenstored answers unknown / reply-only types with ENOSYS and keeps the connection.
    for t in (999, XsType.XS_WATCH_EVENT, XsType.XS_ERROR, 20, XsType.XS_INVALID):
        assert raw(core, t, b"").payload == b"ENOSYS\0"
    # Non-ASCII special names are refused (they could not be echoed in an event).
    assert raw(core, XsType.XS_WATCH, b"@x\xff\0t\0").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_GET_PERMS, b"@x\xff\0").payload == b"EINVAL\0"
    assert raw(core, XsType.XS_GET_PERMS, b"@unknown\0").payload == b"ENOENT\0"
    ok = raw(core, XsType.XS_READ, b"/tool\0")
    assert ok.type == XsType.XS_READ and ok.payload == b""


# ---------------------------------------------------------------------------- permissions


def test_unprivileged_read_depends_on_permissions(connect: Connect) -> None:
    dom0, dom1 = connect(0), connect(1)
    dom0.write("/secret", "s")
    dom0.write("/public", "p")
    dom0.set_perms("/secret", ["n0"])
    dom0.set_perms("/public", ["n0", "r1"])
    assert errno_of(lambda: dom1.read("/secret")) == "EACCES"
    assert dom1.read_str("/public") == "p"
    assert errno_of(lambda: dom1.write("/public", "x")) == "EACCES"
    assert dom1.get_perms("/public") == ["n0", "r1"]
    # Missing nodes are EACCES where you cannot look, ENOENT where you can.
    assert errno_of(lambda: dom1.read("/secret/nope")) == "EACCES"
    assert errno_of(lambda: dom1.read("/public/nope")) == "ENOENT"
    # The default entry applies to domains not listed.
    dom0.set_perms("/public", ["r0", "w2"])
    assert dom1.read_str("/public") == "p"


def test_creation_needs_write_on_parent_and_new_nodes_are_owned_by_creator(connect: Connect) -> None:
    dom0, dom1, dom2 = connect(0), connect(1), connect(2)
    dom0.mkdir("/shared")
    dom0.set_perms("/shared", ["n0", "w1", "r2"])
    assert errno_of(lambda: dom2.write("/shared/x", "v")) == "EACCES"
    dom1.write("/shared/sub/x", "v")  # creates sub too
    # Inherited list, owner replaced by the unprivileged creator.
    assert dom0.get_perms("/shared/sub") == ["n1", "w1", "r2"]
    assert dom0.get_perms("/shared/sub/x") == ["n1", "w1", "r2"]
    assert dom2.read_str("/shared/sub/x") == "v"
    # dom0 creating keeps the parent's owner.
    dom0.write("/shared/byzero", "")
    assert dom0.get_perms("/shared/byzero") == ["n0", "w1", "r2"]


def test_set_perms_rules(connect: Connect) -> None:
    dom0, dom1 = connect(0), connect(1)
    dom0.write("/own", "")
    dom0.set_perms("/own", ["n1"])
    dom1.set_perms("/own", ["n1", "r2"])  # the owner may change access...
    assert errno_of(lambda: dom1.set_perms("/own", ["n2"])) == "EPERM"  # ...not the owner
    dom0.write("/theirs", "")
    assert errno_of(lambda: dom1.set_perms("/theirs", ["b1"])) == "EACCES"
    assert errno_of(lambda: dom1.set_perms("/own", ["n1", "r2", "r3", "r4", "r5", "r6"])) == "ENOSPC"
    dom0.set_perms("/own", ["b7", "r1"])  # privileged: anything
    assert dom0.get_perms("/own") == ["b7", "r1"]


def test_privileged_operations_are_refused_to_guests(connect: Connect) -> None:
    dom1 = connect(1)
    assert errno_of(lambda: dom1.introduce(5, 1, 1)) == "EACCES"
    assert errno_of(lambda: dom1.release(5)) == "EACCES"
    assert errno_of(lambda: dom1.set_target(5, 1)) == "EACCES"
    assert errno_of(lambda: dom1.is_domain_introduced(5)) == "EACCES"
    assert errno_of(lambda: dom1.control("print", "x")) == "EACCES"


def test_guest_quota_on_entry_size(connect: Connect) -> None:
    dom0, dom1 = connect(0), connect(1)
    dom0.mkdir("/local/domain/1")
    dom0.set_perms("/local/domain/1", ["n1"])
    dom1.write("small", "x" * 1000)
    assert errno_of(lambda: dom1.write("big", "x" * 2100)) == "ENOSPC"
    dom0.write("/local/domain/1/big", "x" * 2100)  # dom0 is never limited


# ---------------------------------------------------------------------------- watches


def test_watch_fires_on_registration_and_on_changes_at_or_below(connect: Connect) -> None:
    dom0, other = connect(0), connect(0)
    dom0.watch("/w", "tok")
    assert dom0.read_watch_events() == [("/w", "tok")]  # once, at registration
    other.write("/w/x", "1")
    other.write("/wx", "sibling prefix: not below /w")
    other.write("/w", "2")
    assert dom0.read_watch_events() == [("/w/x", "tok"), ("/w", "tok")]
    assert dom0.read_watch_events() == []
    assert other.read_watch_events() == []  # no watches there


def test_rm_fires_watches_on_removed_nodes(connect: Connect) -> None:
    dom0, w = connect(0), connect(0)
    dom0.write("/r/a/b", "")
    w.watch("/r", "up")
    w.watch("/r/a/b", "deep")
    w.read_watch_events()
    dom0.rm("/r/a")
    # Removed children fire their exact watches first; the removed root fires ancestors'.
    assert w.read_watch_events() == [("/r/a/b", "deep"), ("/r/a", "up")]


def test_relative_watch_reports_relative_paths(connect: Connect) -> None:
    dom0 = connect(0)
    dom0.mkdir("/local/domain/4")
    dom0.set_perms("/local/domain/4", ["n4"])
    guest = connect(4)
    guest.watch("device", "rel")
    guest.write("device/vif/0/state", "1")
    assert guest.read_watch_events() == [("device", "rel"), ("device/vif/0/state", "rel")]
    guest.unwatch("device", "rel")
    guest.write("device/vif/0/state", "2")
    assert guest.read_watch_events() == []


def test_watch_events_respect_read_permission(connect: Connect) -> None:
    dom0, dom1 = connect(0), connect(1)
    dom0.mkdir("/perm")
    dom0.set_perms("/perm", ["n0"])
    dom1.watch("/perm", "t")
    assert dom1.read_watch_events() == [("/perm", "t")]  # registration always fires
    dom0.write("/perm/hidden", "x")  # node and parent unreadable by dom1
    assert dom1.read_watch_events() == []
    dom0.set_perms("/perm", ["n0", "r1"])  # permission change: dom1 may see it now
    dom0.write("/perm/hidden", "y")  # parent readable now
    assert dom1.read_watch_events() == [("/perm", "t"), ("/perm/hidden", "t")]


def test_watch_errors_unwatch_and_reset(dom0: XenstoreClient) -> None:
    dom0.watch("/x", "a")
    assert errno_of(lambda: dom0.watch("/x", "a")) == "EEXIST"
    dom0.watch("/x", "b")  # same path, other token: fine
    assert errno_of(lambda: dom0.unwatch("/x", "zzz")) == "ENOENT"
    assert errno_of(lambda: dom0.watch("/bad//path", "a")) == "EINVAL"
    dom0.read_watch_events()
    dom0.reset_watches()
    dom0.write("/x", "1")
    assert dom0.read_watch_events() == []


def test_guest_watch_quota(connect: Connect, core: XenstoredCore) -> None:
    dom1 = connect(1)
    for i in range(core.quotas.watches_per_domain):
        dom1.watch(f"/q{i}", "t")
    assert errno_of(lambda: dom1.watch("/one-more", "t")) == "E2BIG"


def test_event_ordering_on_the_wire(core: XenstoredCore) -> None:
    core.connect(1, 0)
    out = core.handle(1, Message(XsType.XS_WATCH, 5, 0, b"/o\0tok\0"))
    # The ack first, then the initial event (req_id 0, "path\0token\0").
    assert [m.type for _, m in out] == [XsType.XS_WATCH, XsType.XS_WATCH_EVENT]
    assert out[0][1].payload == b"OK\0" and out[0][1].req_id == 5
    assert out[1][1] == Message(XsType.XS_WATCH_EVENT, 0, 0, b"/o\0tok\0")
    out = core.handle(1, Message(XsType.XS_WRITE, 6, 0, b"/o/k\0v"))
    # A request's own events come before its reply, as in xenstored.
    assert [m.type for _, m in out] == [XsType.XS_WATCH_EVENT, XsType.XS_WRITE]


# ---------------------------------------------------------------------------- transactions


def test_transaction_commit_is_atomic_and_fires_at_commit(connect: Connect) -> None:
    dom0, watcher = connect(0), connect(0)
    watcher.watch("/t", "w")
    watcher.read_watch_events()
    t = dom0.transaction()
    t.write("/t/a", "1")
    t.write("/t/b", "2")
    assert t.read_str("/t/a") == "1"  # sees its own writes
    assert dom0.try_read("/t/a") is None  # nobody else does yet
    assert watcher.read_watch_events() == []
    assert t.commit()
    assert dom0.read_str("/t/b") == "2"
    assert watcher.read_watch_events() == [("/t/a", "w"), ("/t/b", "w")]


def test_transaction_conflict_is_eagain(connect: Connect) -> None:
    a, b = connect(0), connect(0)
    a.write("/c", "0")
    t = a.transaction()
    assert t.read_str("/c") == "0"
    b.write("/c", "1")  # changes something t read
    assert t.read_str("/c") == "0"  # snapshot: t still sees the old value
    t.write("/c", "from-t")
    assert not t.commit()
    assert a.read_str("/c") == "1"
    # Ended anyway: further use is refused.
    assert errno_of(lambda: t.read("/c")) == "ENOENT"


def test_transaction_conflicts_on_created_node_and_on_directory(connect: Connect) -> None:
    a, b = connect(0), connect(0)
    a.mkdir("/d")
    t = a.transaction()
    assert t.try_read("/d/new") is None
    b.write("/d/new", "x")  # t saw it missing
    assert not t.commit()
    t2 = a.transaction()
    assert t2.directory("/d") == ["new"]
    b.write("/d/another", "y")  # changes /d's child list
    assert not t2.commit()
    t3 = a.transaction()
    t3.write("/unrelated", "1")
    b.write("/d/third", "z")  # nothing t3 touched
    assert t3.commit()


def test_transaction_abort_and_context_manager(dom0: XenstoreClient) -> None:
    t = dom0.transaction()
    t.write("/ab", "1")
    t.abort()
    assert dom0.try_read("/ab") is None
    with pytest.raises(RuntimeError), dom0.transaction() as t2:
        t2.write("/ab", "2")
        raise RuntimeError("boom")
    assert dom0.try_read("/ab") is None  # aborted on exception
    with dom0.transaction() as t3:
        t3.write("/ab", "3")
    assert dom0.read_str("/ab") == "3"  # committed on normal exit


def test_run_transaction_retries_until_commit(connect: Connect) -> None:
    a, b = connect(0), connect(0)
    a.write("/n", "0")
    calls = 0

    def incr(t: object) -> int:
        nonlocal calls
        calls += 1
        from xennet.xenstore.client import Transaction

        assert isinstance(t, Transaction)
        v = int(t.read_str("/n"))
        if calls == 1:
            b.write("/n", "10")  # a concurrent update forces one retry
        t.write("/n", str(v + 1))
        return v + 1

    assert a.run_transaction(incr) == 11
    assert calls == 2
    assert a.read_str("/n") == "11"


def test_transaction_ids_and_errors(core: XenstoredCore) -> None:
    assert raw(core, XsType.XS_READ, b"/tool\0", tx=77).payload == b"ENOENT\0"
    assert raw(core, XsType.XS_TRANSACTION_END, b"T\0").payload == b"ENOENT\0"
    start = raw(core, XsType.XS_TRANSACTION_START, b"\0")
    tx = int(start.payload.rstrip(b"\0"))
    assert tx != 0
    assert raw(core, XsType.XS_TRANSACTION_START, b"\0", tx=tx).payload == b"EBUSY\0"
    assert raw(core, XsType.XS_TRANSACTION_END, b"X\0", tx=tx).payload == b"EINVAL\0"
    # Watches ignore tx_id (xenstored's XS_FLAG_NOTID).
    assert raw(core, XsType.XS_WATCH, b"/tool\0t\0", tx=12345).payload == b"OK\0"
    assert raw(core, XsType.XS_TRANSACTION_END, b"F\0", tx=tx).payload == b"OK\0"


def test_guest_transaction_quota(connect: Connect, core: XenstoredCore) -> None:
    dom1 = connect(1)
    txs = [dom1.transaction() for _ in range(core.quotas.transactions_per_domain)]
    assert errno_of(dom1.transaction) == "ENOSPC"
    txs[0].abort()
    dom1.transaction().abort()


# ---------------------------------------------------------------------------- domains


def test_introduce_release_and_special_watches(core: XenstoredCore, connect: Connect) -> None:
    dom0, guest = connect(0), connect(5)
    dom0.watch("@introduceDomain", "in")
    dom0.watch("@releaseDomain", "out")
    assert dom0.read_watch_events() == [("@introduceDomain", "in"), ("@releaseDomain", "out")]
    assert not dom0.is_domain_introduced(5)
    dom0.introduce(5, 1234, 1)
    assert dom0.is_domain_introduced(5) and dom0.is_domain_introduced(0)
    assert dom0.read_watch_events() == [("@introduceDomain", "in")]
    dom0.introduce(5, 1234, 1)  # again: no new event
    assert dom0.read_watch_events() == []
    assert [e.kind for e in core.take_domain_events()] == []  # the in-process hub consumed them
    guest.watch("/g", "t")
    dom0.release(5)
    assert dom0.read_watch_events() == [("@releaseDomain", "out")]
    assert not dom0.is_domain_introduced(5)
    # The released domain's connections are closed.
    with pytest.raises(XenstoreConnectionError):
        guest.read("/tool")
    assert errno_of(lambda: dom0.release(5)) == "ENOENT"
    assert errno_of(lambda: dom0.release(0)) == "EINVAL"
    assert errno_of(lambda: dom0.introduce(6, 1, -1)) == "EINVAL"


def test_special_watch_events_need_permission(connect: Connect) -> None:
    dom0, dom1 = connect(0), connect(1)
    dom1.watch("@releaseDomain", "r")
    assert dom1.read_watch_events() == [("@releaseDomain", "r")]
    dom0.introduce(9, 1, 1)
    dom0.release(9)
    assert dom1.read_watch_events() == []  # @releaseDomain is n0 by default
    dom0.set_perms("@releaseDomain", ["n0", "r1"])
    assert dom0.get_perms("@releaseDomain") == ["n0", "r1"]
    dom0.introduce(9, 1, 1)
    dom0.release(9)
    assert dom1.read_watch_events() == [("@releaseDomain", "r")]


def test_control_subset(dom0: XenstoreClient) -> None:
    dom0.control("print", "hello")
    assert "print" in dom0.control("help")
    assert errno_of(lambda: dom0.control("no-such")) == "EINVAL"


def test_in_process_client_fileno_signals_queued_events(connect: Connect) -> None:
    import select

    a, b = connect(0), connect(0)
    a.watch("/f", "t")
    # The registration event is already queued inside the client: fileno must say so.
    assert select.select([a], [], [], 0)[0] == [a]
    a.read_watch_events()
    assert select.select([a], [], [], 0)[0] == []
    b.write("/f", "1")
    assert select.select([a], [], [], 0)[0] == [a]
    assert a.read_watch_events() == [("/f", "t")]
    assert select.select([a], [], [], 0)[0] == []


# ---------------------------------------------------------------------------- quotas per domain


def guest_home(dom0: XenstoreClient, domid: int, subdirs: int = 0) -> str:
    """Give ``domid`` its home (owned by it), plus ``subdirs`` children t0, t1, ..."""
    home = f"/local/domain/{domid}"
    dom0.mkdir(home)
    dom0.set_perms(home, [f"n{domid}"])
    for i in range(subdirs):
        dom0.mkdir(f"{home}/t{i}")  # inherits the owner: counts against the guest
    return home


def test_connection_quota_is_per_domain(core: XenstoredCore, connect: Connect) -> None:
    quota = core.quotas.connections_per_domain
    guests = [connect(1) for _ in range(quota)]
    with pytest.raises(XenstoreError) as info:
        connect(1)
    assert info.value.errno_name == "ENOSPC"
    assert len(core.connections(1)) == quota
    assert core.quota_hits[st.Quota.CONNECTIONS] == 1
    connect(2).get_domain_path(2)  # another guest is not affected
    zeros = [connect(0) for _ in range(quota + 2)]  # nor is dom0
    assert all(z.get_domain_path(0) == "/local/domain/0" for z in zeros)
    guests[0].close()  # a closed connection frees its place
    connect(1).get_domain_path(1)


def test_watch_quota_is_per_domain_across_connections(core: XenstoredCore, connect: Connect) -> None:
    quota = core.quotas.watches_per_domain
    dom0, a, b = connect(0), connect(1), connect(1)
    dom0.mkdir("/w")
    dom0.set_perms("/w", ["n0", "r1"])  # so the guest may see the events
    for i in range(quota):
        (a if i % 2 else b).watch("/w", f"t{i}")
    assert errno_of(lambda: a.watch("/w", "more")) == "E2BIG"
    assert errno_of(lambda: b.watch("/w", "more")) == "E2BIG"
    assert errno_of(lambda: connect(1).watch("/w", "more")) == "E2BIG"
    assert core.quota_hits[st.Quota.WATCHES] == 3
    a.read_watch_events()
    b.read_watch_events()
    # So one change costs at most the quota in events for this domain.
    dom0.write("/w", "x")
    assert len(a.read_watch_events()) + len(b.read_watch_events()) == quota
    a.unwatch("/w", "t1")  # unwatching frees a place
    b.watch("/w", "again")
    for i in range(quota + 5):  # dom0 is not limited
        dom0.watch("/w", f"z{i}")


def test_transaction_quota_is_per_domain_across_connections(core: XenstoredCore, connect: Connect) -> None:
    quota = core.quotas.transactions_per_domain
    a, b = connect(1), connect(1)
    txs = [(a if i % 2 else b).transaction() for i in range(quota)]
    assert errno_of(a.transaction) == "ENOSPC"
    assert errno_of(b.transaction) == "ENOSPC"
    txs[0].abort()
    b.transaction().abort()
    dom0 = connect(0)
    more = [dom0.transaction() for _ in range(quota + 2)]
    for t in more:
        t.abort()


# A small node quota keeps these quick (and a home's child list under the entry size).
small_node_quota = pytest.mark.parametrize("core", [st.Quotas(nodes_per_domain=60)], indirect=True)


@small_node_quota
def test_node_quota_is_per_domain_across_connections(core: XenstoredCore, connect: Connect) -> None:
    dom0 = connect(0)
    home = guest_home(dom0, 1)
    quota = core.quotas.nodes_per_domain
    conns = [connect(1) for _ in range(3)]
    for i in range(quota - 1):  # the home itself is one
        conns[i % 3].write(f"{home}/n{i}", "")
    assert core.store.owned[1] == quota
    for c in conns:
        assert errno_of(lambda c=c: c.write(f"{home}/over", "")) == "ENOSPC"
    conns[0].write(f"{home}/n0", "rewrite")  # changing an existing node is fine
    conns[1].rm(f"{home}/n0")
    conns[2].write(f"{home}/back", "")  # room again


@small_node_quota
def test_transactions_past_node_quota_are_refused_at_commit(core: XenstoredCore, connect: Connect) -> None:
    dom0 = connect(0)
    quota = core.quotas.nodes_per_domain
    # Disjoint subdirectories, so the transactions never conflict with each other.
    home = guest_home(dom0, 1, subdirs=4)
    per_tx = (quota - core.store.owned[1]) // 3 + 1  # any three fit alone, all four do not
    guests = [connect(1), connect(1)]
    txs = [guests[i % 2].transaction() for i in range(4)]
    for i, t in enumerate(txs):
        for k in range(per_tx):
            t.write(f"{home}/t{i}/k{k}", "")  # each under quota against the live tree
    committed = 0
    for t in txs:
        try:
            assert t.commit()
            committed += 1
        except XenstoreError as e:
            assert e.errno_name == "ENOSPC"
    assert committed == 2
    assert core.store.owned[1] <= quota
    assert core.quota_hits[st.Quota.NODES] == 2


@small_node_quota
def test_a_transaction_counts_its_own_new_nodes(core: XenstoredCore, connect: Connect) -> None:
    dom0 = connect(0)
    home = guest_home(dom0, 1)
    room = core.quotas.nodes_per_domain - core.store.owned[1]
    assert room < core.quotas.transaction_nodes  # the per-transaction limit is not what stops it
    t = connect(1).transaction()
    for k in range(room):
        t.write(f"{home}/k{k}", "")
    assert errno_of(lambda: t.write(f"{home}/over", "")) == "ENOSPC"
    assert t.commit()
    assert core.store.owned[1] == core.quotas.nodes_per_domain


@small_node_quota
def test_dom0_transactions_are_not_node_limited(core: XenstoredCore, connect: Connect) -> None:
    dom0 = connect(0)
    home = guest_home(dom0, 1)
    dom0.mkdir("/big0")
    dom0.mkdir("/big1")  # so the two transactions do not conflict on "/"
    txs = [dom0.transaction() for _ in range(2)]
    for i, t in enumerate(txs):
        for k in range(core.quotas.nodes_per_domain // 2 + 1):
            t.write(f"/big{i}/k{k}", "")
    # dom0 may also give a guest more than its quota (the guest owns them).
    txs[0].write(f"{home}/given", "")
    assert all(t.commit() for t in txs)
    assert core.quota_hits[st.Quota.NODES] == 0


def test_quota_hits_are_counted_and_logged_once(
    core: XenstoredCore, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    guest = connect(1)
    for i in range(core.quotas.watches_per_domain):
        guest.watch("/lw", f"t{i}")
    with caplog.at_level(logging.WARNING, logger="xennet.xenstore.server"):
        for _ in range(5):
            assert errno_of(lambda: guest.watch("/lw", "over")) == "E2BIG"
    assert core.quota_hits[st.Quota.WATCHES] == 5
    lines = [r.getMessage() for r in caplog.records if "quota" in r.getMessage()]
    assert lines == ["domain 1 over its watches quota"]


def test_watch_events_keep_connection_then_registration_order(connect: Connect) -> None:
    dom0, a, b = connect(0), connect(0), connect(0)
    b.watch("/o", "b1")
    a.watch("/o/p/q", "a1")
    a.watch("/", "a2")
    a.watch("/o/p", "a3")
    b.watch("/o/p/q/r", "b2")  # below the change: does not fire
    a.read_watch_events()
    b.read_watch_events()
    dom0.write("/o/p/q", "v")
    assert a.read_watch_events() == [("/o/p/q", "a1"), ("/o/p/q", "a2"), ("/o/p/q", "a3")]
    assert b.read_watch_events() == [("/o/p/q", "b1")]
