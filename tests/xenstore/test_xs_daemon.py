"""The daemon over real unix sockets: misbehaving clients, per-domain sockets, events
between connections, and the subprocess lifecycle."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from xennet.abi.xs_wire import HEADER, XENSTORE_PAYLOAD_MAX, XsType
from xennet.xenstore import daemon as xsd
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.errors import XenstoreConnectionError, XenstoreError
from xennet.xenstore.store import Quota
from xennet.xenstore.wire import Decoder, Message, encode


def raw_socket(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


def recv_until_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_oversized_message_closes_only_that_connection(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    with XenstoreClient(path, timeout=5) as good, raw_socket(path) as bad:
        good.write("/survivor", "yes")
        # A valid request, then a header announcing too much, in one send.
        bad.sendall(
            encode(Message(XsType.XS_READ, 9, 0, b"/survivor\0"))
            + HEADER.pack(XsType.XS_WRITE, 10, 0, XENSTORE_PAYLOAD_MAX + 1)
        )
        got = recv_until_eof(bad)  # the server hangs up...
        dec = Decoder()
        dec.feed(got)
        # ...after answering what came before the garbage.
        assert list(dec) == [Message(XsType.XS_READ, 9, 0, b"yes")]
        assert good.read_str("/survivor") == "yes"
        good.write("/survivor", "still")
        assert good.read_str("/survivor") == "still"


def test_client_vanishing_mid_message_does_not_hurt_others(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    with XenstoreClient(path, timeout=5) as good:
        for _ in range(3):
            s = raw_socket(path)
            s.sendall(HEADER.pack(XsType.XS_WRITE, 1, 0, 100) + b"partial")
            s.close()
        s = raw_socket(path)
        s.sendall(encode(Message(12345, 1, 0, b"")))  # unknown type: an error, not a hangup
        reply = Decoder()
        reply.feed(s.recv(100))
        assert list(reply) == [Message(XsType.XS_ERROR, 1, 0, b"ENOSYS\0")]
        s.close()
        assert good.get_domain_path(2) == "/local/domain/2"


def test_events_reach_other_socket_connections(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    with XenstoreClient(path, timeout=5) as a, XenstoreClient(path, timeout=5) as b:
        a.watch("/ev", "tok")
        assert a.read_watch_events(timeout=2) == [("/ev", "tok")]
        t0 = time.monotonic()
        assert a.read_watch_events(0) == []  # never blocks
        assert time.monotonic() - t0 < 0.5
        assert select.select([a], [], [], 0)[0] == []
        b.write("/ev/k", "v")
        assert select.select([a], [], [], 2)[0] == [a]  # fileno works with select
        assert a.read_watch_events(timeout=2) == [("/ev/k", "tok")]


def test_domain_socket_gives_guest_identity(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    guest_path = xsd.domain_socket_path(path, 1)
    assert guest_path == path + ".d1"
    with XenstoreClient(path, timeout=5) as dom0:
        assert not os.path.exists(guest_path)
        dom0.mkdir("/local/domain/1")
        dom0.set_perms("/local/domain/1", ["n1", "r0"])
        dom0.write("/private", "p")
        dom0.introduce(1, 0, 1)
        assert os.path.exists(guest_path)
        guest = XenstoreClient(guest_path, timeout=5)
        try:
            guest.write("data", "from guest")  # relative: its own home
            assert dom0.read_str("/local/domain/1/data") == "from guest"
            assert dom0.get_perms("/local/domain/1/data") == ["n1", "r0"]
            with pytest.raises(XenstoreError) as info:
                guest.read("/private")
            assert info.value.errno_name == "EACCES"
            with pytest.raises(XenstoreError) as info:
                guest.introduce(2, 0, 1)
            assert info.value.errno_name == "EACCES"
            dom0.release(1)
            assert not os.path.exists(guest_path)
            with pytest.raises(XenstoreConnectionError):
                guest.read("data")
        finally:
            guest.close()
        # Introduce again: the listener comes back.
        dom0.introduce(1, 0, 1)
        with XenstoreClient(guest_path, timeout=5) as again:
            assert again.read_str("data") == "from guest"


def test_slow_reader_backpressure_keeps_daemon_responsive(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    with XenstoreClient(path, timeout=5) as good, raw_socket(path) as flood:
        # Thousands of requests whose replies are never read: the daemon must not block.
        req = encode(Message(XsType.XS_DIRECTORY, 1, 0, b"/tool\0"))
        flood.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and sent < 4_000_000:
            try:
                sent += flood.send(req * 256)
            except BlockingIOError:
                break
        assert good.read_str("/tool/xenstored") == ""


def test_guest_connections_over_quota_are_closed(threaded_daemon: xsd.Xenstored) -> None:
    path = threaded_daemon.socket_path
    quota = threaded_daemon.core.quotas.connections_per_domain
    with XenstoreClient(path, timeout=5) as dom0:
        dom0.introduce(1, 0, 1)
        guests = [XenstoreClient(xsd.domain_socket_path(path, 1), timeout=5) for _ in range(quota)]
        try:
            assert all(g.get_domain_path(1) == "/local/domain/1" for g in guests)
            with raw_socket(xsd.domain_socket_path(path, 1)) as extra:
                assert recv_until_eof(extra) == b""  # hung up at once
            assert threaded_daemon.core.quota_hits[Quota.CONNECTIONS] == 1
            # dom0's socket has no such limit.
            zeros = [XenstoreClient(path, timeout=5) for _ in range(quota + 2)]
            assert all(z.get_domain_path(0) == "/local/domain/0" for z in zeros)
            for z in zeros:
                z.close()
            guests.pop().close()  # a place freed is usable again...
            deadline = time.monotonic() + 5
            while len(threaded_daemon.core.connections(1)) == quota and time.monotonic() < deadline:
                time.sleep(0.01)  # ...once the daemon has seen it go
            with XenstoreClient(xsd.domain_socket_path(path, 1), timeout=5) as again:
                assert again.get_domain_path(1) == "/local/domain/1"
        finally:
            for g in guests:
                g.close()


def _pump_until(d: xsd.Xenstored, done: Callable[[], bool], turns: int = 2000) -> None:
    """Run the daemon's loop from this thread (deterministic: no serving thread)."""
    for _ in range(turns):
        if done():
            return
        d.serve_once(0.01)
    raise AssertionError("the daemon did not get there")


def _readable(s: socket.socket) -> bool:
    return bool(select.select([s], [], [], 0)[0])


def _replies(s: socket.socket, dec: Decoder) -> list[Message]:
    while _readable(s):
        chunk = s.recv(65536)
        if not chunk:
            break
        dec.feed(chunk)
    return list(dec)


def test_flooding_guest_cannot_delay_dom0_replies(short_tmp: Path) -> None:
    """One guest, every connection it may open, each with a long pipeline of writes to a
    node all its watches look at; dom0 asks one thing after them. dom0 must be answered
    within one round of service, not after the guest's whole backlog."""
    d = xsd.Xenstored(str(short_tmp / "xs.sock"))
    d.start()
    served: list[tuple[int, int]] = []  # (type, req_id) in service order
    handle = d.core.handle

    def recording(conn_id: int, msg: Message) -> list[tuple[int, Message]]:
        served.append((msg.type, msg.req_id))
        return handle(conn_id, msg)

    d.core.handle = recording  # type: ignore[method-assign]
    try:
        dom0 = raw_socket(d.socket_path)
        dec0 = Decoder()
        setup = [
            Message(XsType.XS_INTRODUCE, 1, 0, b"1\x000\x001\x00"),
            Message(XsType.XS_MKDIR, 2, 0, b"/local/domain/1\0"),
            Message(XsType.XS_SET_PERMS, 3, 0, b"/local/domain/1\0n1\0"),
        ]
        dom0.sendall(b"".join(encode(m) for m in setup))
        got: list[Message] = []
        _pump_until(d, lambda: len(got) == 3 or bool(got.extend(_replies(dom0, dec0))))
        assert [m.payload for m in got] == [b"OK\0"] * 3
        quota = d.core.quotas
        guest_path = xsd.domain_socket_path(d.socket_path, 1)
        guests = [raw_socket(guest_path) for _ in range(quota.connections_per_domain)]
        _pump_until(d, lambda: len(d.core.connections(1)) == len(guests))
        per_conn = quota.watches_per_domain // len(guests)
        for g in guests:
            g.sendall(
                b"".join(encode(Message(XsType.XS_WATCH, 5, 0, b"x\0t%d\0" % i)) for i in range(per_conn))
            )
        decs = [Decoder() for _ in guests]
        acks = [0] * len(guests)

        def watched() -> bool:
            for i, g in enumerate(guests):
                acks[i] += sum(m.type == XsType.XS_WATCH for m in _replies(g, decs[i]))
            return sum(acks) == per_conn * len(guests)

        _pump_until(d, watched)
        writes = 200
        for g in guests:
            g.sendall(encode(Message(XsType.XS_WRITE, 7, 0, b"x\0v")) * writes)
        dom0.sendall(encode(Message(XsType.XS_READ, 999, 0, b"/tool/xenstored\0")))
        served.clear()
        _pump_until(d, lambda: any(m.req_id == 999 for m in _replies(dom0, dec0)))
        before_dom0 = served.index((XsType.XS_READ, 999))
        assert before_dom0 <= xsd.DOMAIN_REQUESTS_PER_TURN
        assert d.core.quota_hits[Quota.OUTSTANDING] >= 1
        # Throttled, not refused: every write of the guest is still served.
        _pump_until(d, lambda: served.count((XsType.XS_WRITE, 7)) == writes * len(guests))
        for s in [dom0, *guests]:
            s.close()
    finally:
        d.close()


@pytest.mark.slow
def test_spawned_daemon_lifecycle(short_tmp: Path) -> None:
    sock = str(short_tmp / "x.sock")
    proc = xsd.spawn(sock)
    try:
        with XenstoreClient(sock, timeout=5) as c:
            c.introduce(4, 0, 1)
            assert os.path.exists(sock + ".d4")
            with pytest.raises(FileExistsError):
                xsd.spawn(sock)  # refuses to take over a live daemon
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.exists(sock) and not os.path.exists(sock + ".d4")
    finally:
        xsd.stop(proc)


@pytest.mark.slow
def test_sigint_also_stops_cleanly_and_stale_socket_is_replaced(short_tmp: Path) -> None:
    sock = str(short_tmp / "y.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)  # a socket file nobody listens on
    stale.close()
    proc = xsd.spawn(sock)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert not os.path.exists(sock)
    finally:
        xsd.stop(proc)


@pytest.mark.slow
def test_spawn_reports_a_daemon_that_cannot_start(short_tmp: Path) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        xsd.spawn(str(short_tmp / "no-such-dir" / "z.sock"))


@pytest.mark.slow
def test_cli_main_usage_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "xennet.xenstore.daemon"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "--socket" in r.stderr
