"""xenstored on unix sockets: a thin selectors loop around ``XenstoredCore``.

Connections to the main socket are dom0 (privileged), as with the real xenstored.
Sim extension, so guest processes get an unprivileged identity: once domain N is
introduced (XS_INTRODUCE) the daemon also listens on ``<socket>.d<N>`` and treats
connections there as domain N; XS_RELEASE closes that listener and its connections.

Requests are read first and served round-robin (``REQUESTS_PER_TURN``,
``DOMAIN_REQUESTS_PER_TURN``), and a guest's sockets are not read while it has its quota
of requests outstanding, so one domain's load delays nobody else's replies by more than
a round. Connections past a guest's connection quota are closed at once.

Run it with ``python -m xennet.xenstore.daemon --socket PATH`` (``run``/``main``), in a
thread (``Xenstored``) or as a child process (``spawn``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from .errors import XenstoreConnectionError
from .server import XenstoredCore
from .store import Quota, QuotaError
from .wire import Decoder, Message, ProtocolError, encode

log = logging.getLogger("xennet.xenstore.daemon")

# Stop reading a client's requests while this much output waits for it (backpressure).
OUT_HIGH_WATER = 256 * 1024
# A client this far behind (e.g. never reading its watch events) is disconnected.
OUT_LIMIT = 8 * 1024 * 1024
RECV_SIZE = 65536
# Fair service: requests are read off the sockets first, then served round-robin, a
# connection at most this many per round and an unprivileged domain at most
# DOMAIN_REQUESTS_PER_TURN over all its connections, so a guest flooding from many
# connections delays anybody else's reply by one round at most.
REQUESTS_PER_TURN = 4
DOMAIN_REQUESTS_PER_TURN = 8


def domain_socket_path(socket_path: str, domid: int) -> str:
    return f"{socket_path}.d{domid}"


@dataclass(eq=False)
class _Client:
    conn_id: int
    sock: socket.socket
    domid: int
    decoder: Decoder = field(default_factory=Decoder)
    out: bytearray = field(default_factory=bytearray)
    pending: deque[Message] = field(default_factory=deque)  # read, not yet served
    queued: bool = False  # in the daemon's round-robin queue
    # Close once the requests before it are served: a bad header, or the client's EOF.
    broken: ProtocolError | None = None
    hangup: bool = False
    mask: int = selectors.EVENT_READ  # what the selector watches for (0: unregistered)


@dataclass(eq=False)
class _Listener:
    sock: socket.socket
    path: str
    domid: int


class Xenstored:
    """The daemon. ``start()`` binds the main socket; ``serve_forever()`` runs the loop
    until ``stop()`` (callable from any thread or a signal handler); ``close()`` closes
    every socket and removes the socket files."""

    def __init__(self, socket_path: str, core: XenstoredCore | None = None) -> None:
        self.socket_path = socket_path
        self.core = core or XenstoredCore()
        self._sel = selectors.DefaultSelector()
        self._clients: dict[int, _Client] = {}
        self._listeners: dict[int, _Listener] = {}  # domid -> listener (0 is the main socket)
        self._next_conn_id = 1
        self._ready: deque[_Client] = deque()  # clients with requests to serve, in turn
        self._outstanding: Counter[int] = Counter()  # per domain: requests read, unserved
        self._throttled: set[int] = set()  # domains whose sockets are not read meanwhile
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listen(self.socket_path, 0)
        self._started = True
        log.info("xenstored listening on %s", self.socket_path)

    def serve_forever(self) -> None:
        if not self._started:
            self.start()
        try:
            while not self._stopping.is_set():
                self.serve_once()
        finally:
            self.close()

    def serve_once(self, timeout: float | None = None) -> None:
        """One turn of the loop: wait for sockets (not at all while requests are waiting
        to be served, at most ``timeout`` otherwise), read them, serve one round."""
        for key, events in self._sel.select(0 if self._ready else timeout):
            self._dispatch(key, events)
        self._serve_round()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client, flush=True)
        for listener in list(self._listeners.values()):
            self._unlisten(listener)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._wake_r)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ sockets

    def _listen(self, path: str, domid: int) -> None:
        _clear_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        listener = _Listener(sock, path, domid)
        self._listeners[domid] = listener
        self._sel.register(sock, selectors.EVENT_READ, listener)

    def _unlisten(self, listener: _Listener) -> None:
        self._listeners.pop(listener.domid, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(listener.sock)
        listener.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listener.path)

    def _accept(self, listener: _Listener) -> None:
        try:
            sock, _ = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        try:
            self.core.connect(conn_id, listener.domid)
        except QuotaError:
            # Over the domain's connection quota (counted and logged by the core): the
            # guest sees the connection closed at once.
            sock.close()
            return
        client = _Client(conn_id, sock, listener.domid)
        self._clients[client.conn_id] = client
        self._sel.register(sock, selectors.EVENT_READ, client)
        log.debug("connection %d accepted as domain %d", client.conn_id, listener.domid)

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        data = key.data
        if data is None:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        elif isinstance(data, _Listener):
            self._accept(data)
        elif isinstance(data, _Client):
            if events & selectors.EVENT_WRITE and data.conn_id in self._clients:
                self._flush(data)
            if events & selectors.EVENT_READ and data.conn_id in self._clients:
                self._read(data)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            # Requests sent before the EOF are still served (then the client goes).
            client.hangup = True
        client.decoder.feed(data)
        before = len(client.pending)
        try:
            client.pending.extend(client.decoder)
        except ProtocolError as e:
            # Out of sync with this client: it goes once the requests before the garbage
            # are answered; everybody else carries on.
            client.broken = e
        self._outstanding[client.domid] += len(client.pending) - before
        if (client.pending or client.broken or client.hangup) and not client.queued:
            client.queued = True
            self._ready.append(client)
        self._throttle(client.domid)
        self._update_interest(client)

    def _throttle(self, domid: int) -> None:
        """Stop reading an unprivileged domain's sockets while it has as many requests
        outstanding as its quota (xenstored's quota_req_outstanding), so one guest
        cannot queue unbounded work, whatever number of connections it uses."""
        if domid in self.core.privileged or domid in self._throttled:
            return
        if self._outstanding[domid] >= self.core.quotas.requests_outstanding:
            self._throttled.add(domid)
            self.core.note_quota(Quota.OUTSTANDING, domid)
            for c in self._domain_clients(domid):
                self._update_interest(c)

    def _domain_clients(self, domid: int) -> list[_Client]:
        return [self._clients[i] for i in self.core.connections(domid) if i in self._clients]

    def _serve_round(self) -> None:
        """Serve each waiting client once, in turn (see REQUESTS_PER_TURN)."""
        served: Counter[int] = Counter()
        for _ in range(len(self._ready)):
            client = self._ready.popleft()
            client.queued = False
            if client.conn_id not in self._clients:
                continue
            domid = client.domid
            cap = None if domid in self.core.privileged else DOMAIN_REQUESTS_PER_TURN
            n = 0
            while client.pending and n < REQUESTS_PER_TURN and (cap is None or served[domid] < cap):
                msg = client.pending.popleft()
                self._outstanding[domid] -= 1
                n += 1
                served[domid] += 1
                if not self._serve(client, msg):
                    break
            if client.conn_id not in self._clients:
                continue
            if client.pending:
                client.queued = True
                self._ready.append(client)
            elif client.broken is not None:
                log.warning(
                    "connection %d (domain %d): %s; closing it", client.conn_id, client.domid, client.broken
                )
                self._drop(client, flush=True)
            elif client.hangup:
                self._drop(client, flush=True)
            else:
                self._update_interest(client)
        for domid in [
            d for d in self._throttled if self._outstanding[d] < self.core.quotas.requests_outstanding
        ]:
            self._throttled.discard(domid)
            for c in self._domain_clients(domid):
                self._update_interest(c)

    def _serve(self, client: _Client, msg: Message) -> bool:
        """Handle one request and queue what it sends; False if the client is gone."""
        try:
            outputs = self.core.handle(client.conn_id, msg)
            # Open/close domain sockets before replying, so that when XS_INTRODUCE
            # returns the guest can connect, and when XS_RELEASE returns it cannot.
            self._domain_events()
            for conn_id, out in outputs:
                target = self._clients.get(conn_id)
                if target is not None:
                    self._queue(target, encode(out))
        except Exception:
            # A bug reached by one client's input must not take xenstored down for all.
            log.exception(
                "connection %d (domain %d): internal error; closing it", client.conn_id, client.domid
            )
            self._drop(client)
            return False
        return client.conn_id in self._clients

    def _queue(self, client: _Client, data: bytes) -> None:
        client.out += data
        if len(client.out) > OUT_LIMIT:
            log.warning("connection %d is not reading its replies/events; closing it", client.conn_id)
            client.out.clear()
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        self._update_interest(client)

    def _update_interest(self, client: _Client) -> None:
        if client.conn_id not in self._clients:
            return
        mask = selectors.EVENT_WRITE if client.out else 0
        if (
            len(client.out) < OUT_HIGH_WATER
            # One recv's worth of requests at a time: read more once they are served.
            and not client.pending
            and client.broken is None
            and not client.hangup
            and client.domid not in self._throttled
        ):
            mask |= selectors.EVENT_READ
        if mask == client.mask:
            return
        # A selector cannot watch for nothing: unregister while neither applies.
        if not mask:
            self._sel.unregister(client.sock)
        elif not client.mask:
            self._sel.register(client.sock, mask, client)
        else:
            self._sel.modify(client.sock, mask, client)
        client.mask = mask

    def _drop(self, client: _Client, flush: bool = False) -> None:
        if client.conn_id not in self._clients:
            return
        if flush and client.out:
            # Best effort, never blocking: replies already due still reach the client.
            with contextlib.suppress(OSError):
                client.sock.send(client.out)
        del self._clients[client.conn_id]
        self._outstanding[client.domid] -= len(client.pending)
        client.pending.clear()
        if not self._outstanding[client.domid]:
            del self._outstanding[client.domid]
        self.core.disconnect(client.conn_id)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client.sock)
        client.sock.close()
        log.debug("connection %d closed", client.conn_id)

    def _domain_events(self) -> None:
        for event in self.core.take_domain_events():
            if event.kind == "introduce":
                if event.domid not in self._listeners:
                    path = domain_socket_path(self.socket_path, event.domid)
                    try:
                        self._listen(path, event.domid)
                    except OSError as e:
                        log.error("cannot listen for domain %d on %s: %s", event.domid, path, e)
            else:
                listener = self._listeners.get(event.domid)
                if listener is not None and event.domid != 0:
                    self._unlisten(listener)
                for client in [c for c in self._clients.values() if c.domid == event.domid]:
                    self._drop(client, flush=True)

    @property
    def listening_paths(self) -> list[str]:
        return [lst.path for lst in self._listeners.values()]


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to take over a live one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise FileExistsError(f"a xenstored is already listening on {path}")


# ---------------------------------------------------------------------------- entry points


def run(socket_path: str) -> None:
    """Serve until SIGTERM/SIGINT, then close and remove the socket files."""
    daemon = Xenstored(socket_path)
    daemon.start()
    installed = threading.current_thread() is threading.main_thread()
    previous: list[tuple[signal.Signals, Callable[[int, FrameType | None], Any] | int | None]] = []
    if installed:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            daemon.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous.append((sig, signal.signal(sig, on_signal)))
    try:
        daemon.serve_forever()
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xennet xenstored", description="Run the sim's xenstored.")
    parser.add_argument("--socket", required=True, help="unix socket path (guests use PATH.d<domid>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="xenstored: %(levelname)s %(message)s",
    )
    try:
        run(args.socket)
    except (FileExistsError, OSError) as e:
        print(f"xenstored: {e}", file=sys.stderr)
        return 1
    return 0


def _ping(path: str, timeout: float) -> bool:
    """True once a xenstored answers a request on ``path``."""
    from .client import XenstoreClient

    try:
        with XenstoreClient(path, timeout=timeout) as c:
            c.get_domain_path(0)
    except (OSError, XenstoreConnectionError, TimeoutError):
        return False
    return True


def spawn(socket_path: str, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start the daemon as a child process; return once it answers requests.

    Raises RuntimeError (and leaves no process behind) if it exits early or does not
    answer within ``timeout`` seconds; FileExistsError if a daemon already owns the path.
    """
    if os.path.exists(socket_path) and _ping(socket_path, 1.0):
        raise FileExistsError(f"a xenstored is already listening on {socket_path}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xennet.xenstore.daemon", "--socket", socket_path],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"xenstored exited with status {code} before serving {socket_path}")
        if os.path.exists(socket_path) and _ping(socket_path, 1.0):
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"xenstored did not answer on {socket_path} within {timeout}s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM a spawned daemon and reap it (SIGKILL if it does not exit in time)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
