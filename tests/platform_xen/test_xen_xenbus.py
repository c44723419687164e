"""``XenbusTransport`` under the real ``XenstoreClient``, with a stand-in for the kernel's
/dev/xen/xenbus: a SOCK_SEQPACKET socket pair keeps every write() a separate record, so
the fake kernel can insist, as Linux does, that each write() is exactly one message."""

from __future__ import annotations

import errno
import os
import socket
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from xennet.abi.xs_wire import HEADER, XsType
from xennet.platform.base import PlatformError
from xennet.platform.xen import xenbus
from xennet.platform.xen.xenbus import XenbusTransport, read_domid
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.errors import XenstoreConnectionError, XenstoreError
from xennet.xenstore.server import XenstoredCore
from xennet.xenstore.wire import Decoder, encode

GUEST = 5


@dataclass
class FakeXenbus:
    """The kernel side: one xenstore connection of domain ``domid`` into a ``XenstoredCore``."""

    core: XenstoredCore
    domid: int
    sock: socket.socket
    records: list[bytes] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def serve(self) -> None:
        conn = 1
        self.core.connect(conn, self.domid)
        while True:
            try:
                record = self.sock.recv(1 << 16)
            except OSError:
                return
            if not record:
                return
            self.records.append(record)
            dec = Decoder()
            dec.feed(record)
            msgs = list(dec)
            if len(msgs) != 1 or HEADER.size + len(msgs[0].payload) != len(record):
                # Linux would act on the first message and drop the rest of the write
                self.violations.append(f"a write() of {len(record)} bytes held {len(msgs)} messages")
            for m in msgs:
                for _conn, out in self.core.handle(conn, m):
                    try:
                        self.sock.sendall(encode(out))
                    except OSError:
                        return  # the device was closed with replies or watch events still due


@pytest.fixture
def core() -> XenstoredCore:
    c = XenstoredCore()
    admin = XenstoreClient.in_process(c, 0)
    admin.mkdir(f"/local/domain/{GUEST}")
    admin.set_perms(f"/local/domain/{GUEST}", [f"n{GUEST}"])  # the guest owns its home
    admin.write(f"/local/domain/{GUEST}/domid", str(GUEST))
    admin.write(f"/local/domain/{GUEST}/name", "guest")
    admin.close()
    return c


@pytest.fixture
def kernel(core: XenstoredCore) -> Iterator[tuple[XenbusTransport, FakeXenbus]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fake = FakeXenbus(core, GUEST, theirs)
    t = threading.Thread(target=fake.serve, daemon=True)
    t.start()
    transport = XenbusTransport(fd=os.dup(ours.fileno()))
    ours.close()
    try:
        yield transport, fake
    finally:
        transport.close()
        t.join(5)
        theirs.close()
        assert not fake.violations, fake.violations


def test_client_over_xenbus(kernel: tuple[XenbusTransport, FakeXenbus]) -> None:
    transport, fake = kernel
    xs = XenstoreClient(transport=transport, timeout=5)
    assert xs.read_str("name") == "guest"  # relative to the domain's home, as on Xen
    xs.write("data/x", "1")
    assert xs.read_str(f"/local/domain/{GUEST}/data/x") == "1"
    with xs.transaction() as tx:
        tx.write("data/y", "2")
    assert xs.read_str("data/y") == "2"
    xs.watch("data", "tok")
    assert ("data", "tok") in xs.read_watch_events(timeout=5)
    with pytest.raises(XenstoreError) as e:
        xs.read("nothing/here")
    assert e.value.errno_name == "ENOENT"
    assert len(fake.records) >= 7


def test_read_domid(kernel: tuple[XenbusTransport, FakeXenbus]) -> None:
    transport, _fake = kernel
    assert read_domid(transport) == GUEST


def test_one_write_per_message(kernel: tuple[XenbusTransport, FakeXenbus]) -> None:
    transport, fake = kernel

    def req(req_id: int, path: bytes) -> bytes:
        return HEADER.pack(XsType.XS_READ, req_id, 0, len(path)) + path

    a, b = req(1, b"name\0"), req(2, b"domid\0")
    transport.send(a + b[:7])  # one and a bit
    transport.send(b[7:])
    got = b""
    while got.count(b"guest") + got.count(str(GUEST).encode()) < 2:
        got += transport.recv(5)
    assert fake.records == [a, b]
    transport.send(a + b)  # two messages in one send: still one write() each
    got = b""
    while got.count(b"guest") + got.count(str(GUEST).encode()) < 2:
        got += transport.recv(5)
    assert fake.records == [a, b, a, b]


def test_refused_write_becomes_an_error_reply(
    kernel: tuple[XenbusTransport, FakeXenbus], monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, _fake = kernel
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if HEADER.unpack_from(data)[0] == XsType.XS_WATCH:
            # Linux registers the watch itself (register_xenbus_watch) and, when xenstored
            # refuses it, fails the write() with xenstored's errno and queues no reply
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real_write(fd, data)

    monkeypatch.setattr(xenbus, "os", types.SimpleNamespace(write=write, read=os.read, close=os.close))
    xs = XenstoreClient(transport=transport, timeout=5)
    with pytest.raises(XenstoreError) as e:
        xs.watch("/local/domain/0", "tok")
    assert e.value.errno_name == "EACCES"
    assert xs.read_str("name") == "guest"  # the connection is still good


def test_oversized_request_is_refused(kernel: tuple[XenbusTransport, FakeXenbus]) -> None:
    transport, fake = kernel
    with pytest.raises(XenstoreError):
        transport.send(HEADER.pack(XsType.XS_WRITE, 1, 0, 5000) + b"x" * 5000)
    assert fake.records == []


def test_end_of_file_and_close() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    transport = XenbusTransport(fd=os.dup(ours.fileno()))
    ours.close()
    assert transport.recv(0) == b""
    theirs.close()
    with pytest.raises(XenstoreConnectionError):
        transport.recv(1)
    transport.close()
    transport.close()
    with pytest.raises(XenstoreConnectionError):
        transport.send(b"x")
    with pytest.raises(XenstoreConnectionError):
        transport.recv(0)


def test_read_domid_errors() -> None:
    class Replies:
        def __init__(self, *replies: bytes) -> None:
            self.replies = list(replies)
            self.sent = b""

        def send(self, data: bytes) -> None:
            self.sent += data

        def recv(self, timeout: float | None) -> bytes:
            return self.replies.pop(0) if self.replies else b""

    req_id = 0x78656E
    err = b"ENOENT\0"
    bad = b"zero"
    with pytest.raises(PlatformError, match="ENOENT"):
        read_domid(Replies(HEADER.pack(XsType.XS_ERROR, req_id, 0, len(err)) + err))
    with pytest.raises(PlatformError, match="not a number"):
        read_domid(Replies(HEADER.pack(XsType.XS_READ, req_id, 0, len(bad)) + bad))
    with pytest.raises(PlatformError, match="no reply"):
        read_domid(Replies(), timeout=0.05)
    # a reply to someone else and a split reply are skipped and joined
    ok = HEADER.pack(XsType.XS_READ, req_id, 0, 2) + b"42"
    other = HEADER.pack(XsType.XS_READ, 9, 0, 1) + b"1"
    assert read_domid(Replies(other + ok[:5], ok[5:])) == 42


def test_watches_are_answered_as_xenstored_would(kernel: tuple[XenbusTransport, FakeXenbus]) -> None:
    """Linux registers each XS_WATCH itself, so a duplicate is not refused and an unknown
    unwatch is OK; the transport answers both as xenstored does, without a write()."""
    transport, fake = kernel
    xs = XenstoreClient(transport=transport, timeout=5)
    xs.watch("data", "tok")
    writes = len(fake.records)
    with pytest.raises(XenstoreError) as e:
        xs.watch("data", "tok")
    assert e.value.errno_name == "EEXIST"
    xs.watch("data", "other")  # another token is another watch
    xs.unwatch("data", "tok")
    with pytest.raises(XenstoreError) as e:
        xs.unwatch("data", "tok")
    assert e.value.errno_name == "ENOENT"
    xs.watch("data", "tok")  # and again after the unwatch
    assert len(fake.records) == writes + 3
