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
from pathlib import Path

import pytest

from xennet.abi.xs_wire import HEADER, XENSTORE_PAYLOAD_MAX, XsType
from xennet.xenstore import daemon as xsd
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.errors import XenstoreConnectionError, XenstoreError
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
