"""xenlab.transfer on the host: the data stream, loopback get/put, bad clients, retries, mismatches."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stdout

import pytest

from xenlab import transfer as xf


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 4095, xf.CHUNK - 1, xf.CHUNK, xf.CHUNK + 7, 3 * xf.CHUNK + 2])
def test_stream_is_randbytes(n: int) -> None:
    whole = random.Random(7).randbytes(n)
    assert b"".join(xf.stream(7, n)) == whole
    assert b"".join(xf.stream(7, n, chunk=12)) == whole
    assert xf.expected_sha256(n, 7) == hashlib.sha256(whole).hexdigest()


def test_stream_chunk_must_be_multiple_of_4() -> None:
    with pytest.raises(ValueError):
        list(xf.stream(1, 10, chunk=6))


@pytest.fixture
def server() -> Iterator[xf.Server]:
    srv = xf.Server(0, "127.0.0.1", io_timeout=10, out=io.StringIO())
    t = srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        t.join(5)


def _client(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = xf.main(["client", *args])
    return rc, out.getvalue()


def test_get_and_put_over_loopback(server: xf.Server) -> None:
    n_get, n_put = 300_001, 200_003
    rc, out = _client(
        "127.0.0.1", "--port", str(server.port), "--get", str(n_get), "--put", str(n_put), "--seed", "7"
    )
    assert rc == 0, out
    lines = xf.parse_lines(out)
    assert [d["kind"] for d in lines] == ["get", "put"]
    get, put = lines
    assert get["bytes"] == str(n_get) and get["sha256"] == xf.expected_sha256(n_get, 7)
    assert put["bytes"] == str(n_put) and put["peer_bytes"] == str(n_put)
    assert put["sha256"] == put["peer_sha256"] == xf.expected_sha256(n_put, 7)
    assert get["ok"] == put["ok"] == "1" and float(get["secs"]) >= 0
    deadline = time.monotonic() + 5  # the server may count the get a moment after the client is done
    while server.served["get"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.served == {"get": 1, "put": 1} and server.errors == 0
    assert isinstance(server.out, io.StringIO)
    log = server.out.getvalue()
    assert "XFER-SERVE get peer=127.0.0.1:" in log and "XFER-SERVE put peer=" in log


def test_bad_clients_do_not_kill_the_server(server: xf.Server) -> None:
    for junk in (b"HELLO\n", b"XFER1 GET -5 1\n", b"XFER1 PUT 10 x\n", b"x" * 1000, b""):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.recv(100)
            except OSError:
                pass  # the server already hung up, with our junk unread
    # a short put: the server says how much it got, the client notices
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"XFER1 PUT 1000 1\n" + b"\0" * 10)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100).startswith(b"OK 10 ")
    deadline = time.monotonic() + 5
    while server.errors < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.errors == 6
    rc, out = _client("127.0.0.1", "--port", str(server.port), "--get", "1000", "--seed", "1")
    assert rc == 0, out


def test_connect_retries_until_the_server_is_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv: list[xf.Server] = []

    def late() -> None:
        time.sleep(1.0)
        srv.append(xf.Server(port, "127.0.0.1", once_each=True, out=io.StringIO()))
        srv[0].serve_forever()

    t = threading.Thread(target=late, daemon=True)
    t.start()
    rc, out = _client(
        "127.0.0.1", "--port", str(port), "--get", "5000", "--put", "5000", "--connect-timeout", "20"
    )
    assert rc == 0, out
    t.join(5)
    assert not t.is_alive()  # --once-each: done after one get and one put


def test_connect_gives_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.monotonic()
    rc, out = _client("127.0.0.1", "--port", str(port), "--get", "10", "--connect-timeout", "1")
    assert rc == 2 and "XFER ERROR" in out and "cannot connect" in out
    assert time.monotonic() - t0 < 10


def _fake_server(reply: bytes) -> tuple[int, threading.Thread]:
    """A one-connection server that reads the request line and answers ``reply`` verbatim."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def serve() -> None:
        with ls:
            conn, _ = ls.accept()
            with conn:
                conn.settimeout(5)
                f = conn.makefile("rb")
                req = f.readline().split()
                if req[1] == b"PUT":
                    left = int(req[2])
                    while left > 0:
                        left -= len(f.read(min(65536, left)) or b"x" * left)
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return ls.getsockname()[1], t


def test_mismatches_fail() -> None:
    # get: wrong data
    port, t = _fake_server(b"\0" * 100)
    rc, out = _client("127.0.0.1", "--port", str(port), "--get", "100", "--seed", "3")
    t.join(5)
    assert rc == 1 and "XFER FAIL get" in out and "ok=0" in out and "first_bad=0 " in out
    # get: too short
    port, t = _fake_server(random.Random(3).randbytes(50))
    rc, out = _client("127.0.0.1", "--port", str(port), "--get", "100", "--seed", "3")
    t.join(5)
    assert rc == 1 and "bytes=50 " in out
    # put: the peer reports another hash
    port, t = _fake_server(b"OK 100 " + b"0" * 64 + b"\n")
    rc, out = _client("127.0.0.1", "--port", str(port), "--put", "100", "--seed", "3")
    t.join(5)
    assert rc == 1 and "XFER FAIL put" in out
    # put: garbage reply
    port, t = _fake_server(b"nope\n")
    rc, out = _client("127.0.0.1", "--port", str(port), "--put", "100", "--seed", "3")
    t.join(5)
    assert rc == 2 and "bad put reply" in out


def test_module_entry_point() -> None:
    """``python3 -m xenlab.transfer`` as the lab runs it: serve --once-each, client, both exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "xenlab.transfer"]
    srv = subprocess.Popen(
        [*cmd, "serve", "--port", str(port), "--bind", "127.0.0.1", "--once-each"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        cl = subprocess.run(
            [*cmd, "client", "127.0.0.1", "--port", str(port), "--get", "70000", "--put", "70000"]
            + ["--seed", "9", "--connect-timeout", "20"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cl.returncode == 0, cl.stdout + cl.stderr
        assert [d["sha256"] for d in xf.parse_lines(cl.stdout)] == [xf.expected_sha256(70000, 9)] * 2
        out, _ = srv.communicate(timeout=20)
        assert srv.returncode == 0
        assert "listening on 127.0.0.1:" in out and out.count("XFER-SERVE") == 3
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)


def test_describe_mismatch() -> None:
    exp = random.Random(5).randbytes(20000)
    got = bytearray(exp)
    got[5000:5004] = b"\0\0\0\0"
    d = xf.describe_mismatch(bytes(got), 5, 20000)
    assert "first_bad=5000 bad_blocks=1 " in d and "got=00000000" in d and "found_at=-1" in d
    got = bytearray(exp)
    got[8192:12288] = exp[0:4096]  # a page delivered twice
    d = xf.describe_mismatch(bytes(got), 5, 20000)
    assert "first_bad=8192 " in d and "found_at=0" in d
    assert "len=100 " in xf.describe_mismatch(exp[:100], 5, 20000)
    assert xf.describe_mismatch(exp, 5, 20000) == "no difference"
