"""A tiny hash-checked TCP transfer tool for the lab (dom0, domUs, the host): standard library only.

    python3 -m xenlab.transfer serve --port P [--bind ADDR] [--once-each]
    python3 -m xenlab.transfer client HOST --port P --get N --put N --seed S [--connect-timeout T]

The data of a transfer is ``random.Random(seed).randbytes(n)``, made in chunks, so anyone (a test on the
host) can compute the expected sha256 with :func:`expected_sha256`.  Per connection the client sends one
request line, ``XFER1 GET n seed`` or ``XFER1 PUT n seed``:

- GET: the server sends the n bytes and closes; the client hashes what it got.
- PUT: the client sends the n bytes; the server hashes what it got and answers ``OK bytes sha256``.

The client prints one line per direction (see :func:`parse_lines`) and exits 1 on any mismatch, 2 when
it cannot connect or the transfer breaks.  The server logs one line per transfer and runs until killed
(or, with ``--once-each``, until it has served one GET and one PUT); a bad client only costs a log line.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

MAGIC = "XFER1"
#: chunk of the data stream; a multiple of 4 so chunked randbytes equals randbytes of the whole
CHUNK = 64 * 1024
MAX_BYTES = 1 << 34
#: what the lab's pairing tests move each way: one size for all, so their MiB/s compare (a
#: short transfer spends more of its time in TCP slow start)
PAIRING_BYTES = 4 * 1024 * 1024
LINE_MAX = 256
#: a client keeps up to this much of a GET to describe a mismatch
KEEP_LIMIT = 64 << 20


def stream(seed: int, n: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``random.Random(seed).randbytes(n)`` in pieces of ``chunk`` bytes (``chunk`` % 4 == 0)."""
    if chunk <= 0 or chunk % 4:
        raise ValueError("chunk must be a positive multiple of 4")
    rng = random.Random(seed)
    left = n
    while left > 0:
        k = min(chunk, left)
        yield rng.randbytes(k)
        left -= k


def expected_sha256(n: int, seed: int) -> str:
    """The sha256 (hex) of the ``n`` bytes of ``seed``."""
    h = hashlib.sha256()
    for b in stream(seed, n):
        h.update(b)
    return h.hexdigest()


def _readline(sock: socket.socket) -> str:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            break
        buf += b
        if len(buf) > LINE_MAX:
            raise ValueError("request line too long")
    return buf.decode("ascii", "replace").strip()


def _recv_hash(sock: socket.socket, n: int, keep: bytearray | None = None) -> tuple[int, str]:
    """Receive up to ``n`` bytes (less if the peer closes early), appending them to ``keep`` if given;
    (count, sha256 hex)."""
    h = hashlib.sha256()
    got = 0
    while got < n:
        b = sock.recv(min(1 << 16, n - got))
        if not b:
            break
        h.update(b)
        if keep is not None:
            keep += b
        got += len(b)
    return got, h.hexdigest()


def describe_mismatch(got: bytes, seed: int, n: int, block: int = 4096) -> str:
    """Where ``got`` differs from the ``n`` bytes of ``seed``: the first bad offset, how many
    ``block``-sized blocks differ, the bytes there, and where the bad bytes occur in the expected data
    (-1: nowhere; another offset: data delivered at the wrong place)."""
    exp = b"".join(stream(seed, n))
    bad = [i for i in range(0, max(len(got), n), block) if got[i : i + block] != exp[i : i + block]]
    if not bad:
        return "no difference"
    blk = bad[0]
    first = next((i for i in range(blk, min(len(got), n, blk + block)) if got[i] != exp[i]), min(len(got), n))
    sample = got[first : first + 32]
    src = exp.find(sample) if len(sample) == 32 else -1
    span = f"{bad[0]}..{bad[-1] + block}"
    return (
        f"first_bad={first} bad_blocks={len(bad)} of_block={block} span={span} len={len(got)} "
        f"expected={exp[first : first + 8].hex()} got={got[first : first + 8].hex()} found_at={src}"
    )


def _send_stream(sock: socket.socket, seed: int, n: int) -> str:
    h = hashlib.sha256()
    for b in stream(seed, n):
        h.update(b)
        sock.sendall(b)
    return h.hexdigest()


def _fmt_peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


# -- server -----------------------------------------------------------------------------------------------


class Server:
    """The serving side; ``serve_forever`` in the foreground, or ``start()`` for a thread (tests)."""

    def __init__(
        self,
        port: int,
        bind: str = "0.0.0.0",
        *,
        once_each: bool = False,
        io_timeout: float = 120.0,
        out: TextIO | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.bind = bind
        self.once_each = once_each
        self.io_timeout = io_timeout
        self.served = {"get": 0, "put": 0}
        self.errors = 0
        self.out = out  # None: sys.stdout
        self._lock = threading.Lock()
        self._done = threading.Event()

    def log(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out or sys.stdout, flush=True)

    def serve_forever(self) -> None:
        self.log(f"XFER-SERVE listening on {self.bind}:{self.port}")
        self.sock.settimeout(0.5)
        try:
            while not self._done.is_set():
                try:
                    conn, addr = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._done.is_set():
                        break
                    raise
                threading.Thread(target=self._handle, args=(conn, addr), daemon=True).start()
        finally:
            self.sock.close()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="xfer-serve", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._done.set()

    def _served(self, kind: str, what: str, t0: float) -> None:
        self.log(f"XFER-SERVE {kind} {what} secs={time.monotonic() - t0:.3f}")
        with self._lock:
            self.served[kind] += 1
            if self.once_each and self.served["get"] and self.served["put"]:
                self._done.set()

    def _handle(self, conn: socket.socket, addr: object) -> None:
        peer = _fmt_peer(addr)
        try:
            with conn:
                conn.settimeout(self.io_timeout)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                req = _readline(conn)
                parts = req.split()
                if len(parts) != 4 or parts[0] != MAGIC or parts[1] not in ("GET", "PUT"):
                    raise ValueError(f"bad request {req[:80]!r}")
                n, seed = int(parts[2]), int(parts[3])
                if not 0 <= n <= MAX_BYTES:
                    raise ValueError(f"bad size {n}")
                t0 = time.monotonic()
                if parts[1] == "GET":
                    sha = _send_stream(conn, seed, n)
                    self._served("get", f"peer={peer} sent={n} seed={seed} sha256={sha}", t0)
                    conn.shutdown(socket.SHUT_WR)
                else:
                    got, sha = _recv_hash(conn, n)
                    if got != n:
                        conn.sendall(f"OK {got} {sha}\n".encode())
                        raise ValueError(f"short put: {got} of {n} bytes")
                    # logged before the reply: once the client has its answer, the log line is there
                    self._served("put", f"peer={peer} received={got} seed={seed} sha256={sha}", t0)
                    conn.sendall(f"OK {got} {sha}\n".encode())
        except Exception as e:  # noqa: BLE001 - a bad client costs one log line, never the server
            with self._lock:
                self.errors += 1
            self.log(f"XFER-SERVE error peer={peer} {type(e).__name__}: {e}")


# -- client -----------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One direction of a client run."""

    kind: str  # "get" or "put"
    bytes: int
    sha256: str
    secs: float
    expected_sha256: str
    peer_sha256: str = ""
    peer_bytes: int = -1
    diff: str = ""  # for a failed get: where the data differs (describe_mismatch)

    @property
    def ok(self) -> bool:
        if self.kind == "get":
            return self.sha256 == self.expected_sha256
        return self.peer_sha256 == self.sha256 == self.expected_sha256 and self.peer_bytes == self.bytes

    @property
    def mib_s(self) -> float:
        return self.bytes / 2**20 / self.secs if self.secs > 0 else 0.0

    def line(self) -> str:
        peer = f" peer_sha256={self.peer_sha256} peer_bytes={self.peer_bytes}" if self.kind == "put" else ""
        return (
            f"XFER {self.kind} bytes={self.bytes} sha256={self.sha256}{peer} secs={self.secs:.3f} "
            f"mib_s={self.mib_s:.3f} ok={int(self.ok)}"
        )


class TransferError(RuntimeError):
    pass


def _connect(host: str, port: int, deadline: float, io_timeout: float) -> socket.socket:
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            s = socket.create_connection((host, port), timeout=max(0.5, min(5.0, left)))
            s.settimeout(io_timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError as e:
            last = e
        if time.monotonic() + 0.5 > deadline:
            raise TransferError(f"cannot connect to {host}:{port}: {last}")
        time.sleep(0.5)


def get(
    host: str,
    port: int,
    n: int,
    seed: int,
    *,
    deadline: float,
    io_timeout: float = 120.0,
    keep_limit: int = KEEP_LIMIT,
) -> Result:
    """Fetch ``n`` bytes of ``seed`` from the server; hash them.  Up to ``keep_limit`` bytes are kept
    so that a mismatch can be described."""
    keep = bytearray() if n <= keep_limit else None
    with _connect(host, port, deadline, io_timeout) as s:
        t0 = time.monotonic()
        s.sendall(f"{MAGIC} GET {n} {seed}\n".encode())
        got, sha = _recv_hash(s, n, keep)
        secs = time.monotonic() - t0
    r = Result("get", got, sha, secs, expected_sha256(n, seed))
    if not r.ok and keep is not None:
        r.diff = describe_mismatch(bytes(keep), seed, n)
    return r


def put(host: str, port: int, n: int, seed: int, *, deadline: float, io_timeout: float = 120.0) -> Result:
    """Send ``n`` bytes of ``seed`` to the server; compare its hash with ours."""
    with _connect(host, port, deadline, io_timeout) as s:
        t0 = time.monotonic()
        s.sendall(f"{MAGIC} PUT {n} {seed}\n".encode())
        sha = _send_stream(s, seed, n)
        reply = _readline(s).split()
        secs = time.monotonic() - t0
    if len(reply) != 3 or reply[0] != "OK" or not reply[1].isdigit():
        raise TransferError(f"bad put reply {' '.join(reply)[:80]!r}")
    return Result(
        "put", n, sha, secs, expected_sha256(n, seed), peer_sha256=reply[2], peer_bytes=int(reply[1])
    )


def parse_lines(text: str) -> list[dict[str, str]]:
    """The ``XFER get|put key=value ...`` lines in ``text`` as dicts (``kind`` holds get/put)."""
    out: list[dict[str, str]] = []
    for ln in text.splitlines():
        parts = ln.strip().split()
        if len(parts) >= 2 and parts[0] == "XFER" and parts[1] in ("get", "put"):
            d = {"kind": parts[1]}
            for p in parts[2:]:
                k, sep, v = p.partition("=")
                if sep:
                    d[k] = v
            out.append(d)
    return out


# -- command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m xenlab.transfer", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("serve", help="serve GET and PUT requests until killed")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--bind", default="0.0.0.0")
    sp.add_argument("--once-each", action="store_true", help="exit after one GET and one PUT")
    sp.add_argument("--io-timeout", type=float, default=120.0)
    cp = sub.add_parser("client", help="get and/or put, print one XFER line per direction")
    cp.add_argument("host")
    cp.add_argument("--port", type=int, required=True)
    cp.add_argument("--get", type=int, default=0, metavar="N", help="bytes to fetch (0: none)")
    cp.add_argument("--put", type=int, default=0, metavar="N", help="bytes to send (0: none)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--connect-timeout", type=float, default=60.0, help="keep retrying connect this long")
    cp.add_argument("--io-timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        try:
            Server(a.port, a.bind, once_each=a.once_each, io_timeout=a.io_timeout).serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    ok = True
    try:
        for kind, n in (("get", a.get), ("put", a.put)):
            if n <= 0:
                continue
            fn = get if kind == "get" else put
            deadline = time.monotonic() + a.connect_timeout
            r = fn(a.host, a.port, n, a.seed, deadline=deadline, io_timeout=a.io_timeout)
            print(r.line(), flush=True)
            if not r.ok or r.bytes != n:
                ok = False
                print(
                    f"XFER FAIL {kind}: expected bytes={n} sha256={r.expected_sha256} {r.diff}".rstrip(),
                    flush=True,
                )
    except (TransferError, OSError) as e:
        print(f"XFER ERROR {type(e).__name__}: {e}", flush=True)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
