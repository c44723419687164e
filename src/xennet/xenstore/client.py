"""xenstore client: a sans-IO protocol core, small transports, and a blocking client.

``ClientProtocol`` numbers requests, matches replies and queues watch events; it never
touches a socket. A ``Transport`` moves bytes: ``SocketTransport`` over xenstored's unix
socket, ``LocalTransport`` straight into a ``XenstoredCore`` in this process (for
deterministic tests). ``XenstoreClient`` is the same code over either.

Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from types import TracebackType
from typing import Protocol, TypeVar

from xennet.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XsType

from .errors import XenstoreConnectionError, XenstoreError
from .server import XenstoredCore
from .wire import Decoder, Message, ProtocolError, encode, join_strings, split_strings

__all__ = [
    "ClientProtocol",
    "LocalHub",
    "LocalTransport",
    "SocketTransport",
    "Transaction",
    "Transport",
    "XenstoreClient",
    "XenstoreConnectionError",
    "XenstoreError",
    "default_socket_path",
]

DEFAULT_SOCKET = "/var/run/xenstored/socket"

T = TypeVar("T")


def default_socket_path() -> str:
    """Where libxenstore looks: ``$XENSTORED_PATH``, else the standard socket."""
    return os.environ.get("XENSTORED_PATH") or DEFAULT_SOCKET


# ---------------------------------------------------------------------------- protocol core


class ClientProtocol:
    """Request/reply bookkeeping with no I/O: feed received bytes in, take replies/events out."""

    def __init__(self) -> None:
        self._decoder = Decoder()
        self._next_req_id = 1
        self._replies: dict[int, Message] = {}
        self.events: deque[tuple[str, str]] = deque()

    def request(self, type_: XsType, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        """Frame a request; returns its req_id and the bytes to send. Like libxenstore,
        refuses payloads the server would have to treat as fatal (E2BIG)."""
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            raise XenstoreError("E2BIG", f"request payload of {len(payload)} bytes")
        req_id = self._next_req_id
        self._next_req_id = (req_id % 0xFFFFFFFF) + 1  # never 0: events use req_id 0
        return req_id, encode(Message(type_, req_id, tx_id, payload))

    def receive_data(self, data: bytes) -> None:
        """Decode bytes from the server; raises ProtocolError if the stream is corrupt."""
        self._decoder.feed(data)
        for msg in self._decoder:
            if msg.type == XsType.XS_WATCH_EVENT:
                parts = split_strings(msg.payload)
                if len(parts) >= 2:
                    self.events.append((_text(parts[0]), _text(parts[1])))
            else:
                self._replies[msg.req_id] = msg

    def take_reply(self, req_id: int) -> Message | None:
        return self._replies.pop(req_id, None)

    def take_events(self) -> list[tuple[str, str]]:
        events = list(self.events)
        self.events.clear()
        return events


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- transports


class Transport(Protocol):
    """Moves bytes to and from xenstored."""

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float | None) -> bytes:
        """Bytes available within ``timeout`` seconds (None: wait for some; 0: poll).
        Returns b"" on timeout; raises XenstoreConnectionError when the peer is gone."""
        ...

    def fileno(self) -> int:
        """Readable when ``recv`` would return data (or report the connection gone)."""
        ...

    def close(self) -> None: ...


class SocketTransport:
    """A unix stream socket to xenstored (ours or the real one)."""

    def __init__(self, path: str, connect_timeout: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(connect_timeout)
            self._sock.connect(path)
            self._sock.settimeout(None)
        except BaseException:
            self._sock.close()
            raise

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise XenstoreConnectionError(f"xenstored connection lost: {e}") from e

    def recv(self, timeout: float | None) -> bytes:
        if timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
            if not ready:
                return b""
        try:
            data = self._sock.recv(65536)
        except OSError as e:
            raise XenstoreConnectionError(f"xenstored connection lost: {e}") from e
        if not data:
            raise XenstoreConnectionError("xenstored closed the connection")
        return data

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


class LocalHub:
    """Connects in-process transports to one ``XenstoredCore``: runs requests through it
    and delivers every output (replies and other connections' watch events) to the
    right transport's inbox. All calls are serialised by one lock, so threads may share it.
    """

    _hubs: weakref.WeakKeyDictionary[XenstoredCore, LocalHub] = weakref.WeakKeyDictionary()

    def __init__(self, core: XenstoredCore) -> None:
        self.core = core
        self.lock = threading.Lock()
        self._transports: dict[int, LocalTransport] = {}
        self._next_id = 1

    @classmethod
    def for_core(cls, core: XenstoredCore) -> LocalHub:
        hub = cls._hubs.get(core)
        if hub is None:
            hub = cls._hubs[core] = cls(core)
        return hub

    def open(self, domid: int) -> LocalTransport:
        with self.lock:
            # Far from the daemon's small ids, in case both ever drive one core.
            conn_id = (1 << 40) + self._next_id
            self._next_id += 1
            self.core.connect(conn_id, domid)
            transport = LocalTransport(self, conn_id, domid)
            self._transports[conn_id] = transport
            return transport

    def deliver(self, sender: LocalTransport, data: bytes) -> None:
        with self.lock:
            if sender.closed:
                raise XenstoreConnectionError("xenstored closed the connection")
            sender.server_decoder.feed(data)
            try:
                for msg in sender.server_decoder:
                    for conn_id, out in self.core.handle(sender.conn_id, msg):
                        target = self._transports.get(conn_id)
                        if target is not None:
                            target.push(encode(out))
            except ProtocolError:
                # What the daemon does with a malformed stream: drop this connection only.
                self._drop(sender)
            for event in self.core.take_domain_events():
                if event.kind == "release":
                    for t in [t for t in self._transports.values() if t.domid == event.domid]:
                        self._drop(t)

    def _drop(self, transport: LocalTransport) -> None:
        self._transports.pop(transport.conn_id, None)
        self.core.disconnect(transport.conn_id)
        transport.mark_closed()

    def close(self, transport: LocalTransport) -> None:
        with self.lock:
            self._drop(transport)


class LocalTransport:
    """An in-process connection to a ``XenstoredCore`` acting as domain ``domid``.

    ``fileno()`` is a pipe that is readable exactly while the inbox holds data, so
    callers can ``select`` on it like on a socket.
    """

    def __init__(self, hub: LocalHub, conn_id: int, domid: int) -> None:
        self._hub = hub
        self.conn_id = conn_id
        self.domid = domid
        self.server_decoder = Decoder()
        self._inbox = bytearray()
        self._cond = threading.Condition(hub.lock)
        self.closed = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._signalled = False

    # Called by the hub with its lock held.
    def push(self, data: bytes) -> None:
        self._inbox += data
        self._signal()
        self._cond.notify_all()

    def mark_closed(self) -> None:
        self.closed = True
        self._signal()
        self._cond.notify_all()

    def _signal(self) -> None:
        if not self._signalled and self._wfd >= 0:
            os.write(self._wfd, b"x")
            self._signalled = True

    def send(self, data: bytes) -> None:
        self._hub.deliver(self, data)

    def recv(self, timeout: float | None) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._inbox) or self.closed, timeout)
            if self._inbox:
                data = bytes(self._inbox)
                self._inbox.clear()
                if not self.closed and self._signalled:
                    with suppress(BlockingIOError):
                        os.read(self._rfd, 64)
                    self._signalled = False
                return data
            if self.closed:
                raise XenstoreConnectionError("xenstored closed the connection")
            return b""

    def fileno(self) -> int:
        return self._rfd

    def close(self) -> None:
        if self._rfd < 0:
            return
        self._hub.close(self)
        with self._cond:
            os.close(self._rfd)
            os.close(self._wfd)
            self._rfd = self._wfd = -1


# ---------------------------------------------------------------------------- operations


class _Ops:
    """The node operations, shared by the client (tx_id 0) and transactions."""

    _tx_id = 0

    def _call(self, type_: XsType, payload: bytes, tx_id: int) -> bytes:
        raise NotImplementedError

    def _op(self, type_: XsType, payload: bytes) -> bytes:
        return self._call(type_, payload, self._tx_id)

    def read(self, path: str) -> bytes:
        return self._op(XsType.XS_READ, join_strings([_raw(path)]))

    def read_str(self, path: str) -> str:
        return _text(self.read(path))

    def try_read(self, path: str) -> str | None:
        """The value, or None if the node does not exist."""
        try:
            return self.read_str(path)
        except XenstoreError as e:
            if e.errno_name == "ENOENT":
                return None
            raise

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except XenstoreError as e:
            if e.errno_name == "ENOENT":
                return False
            raise
        return True

    def write(self, path: str, value: str | bytes) -> None:
        self._op(XsType.XS_WRITE, _raw(path) + b"\0" + _raw(value))

    def mkdir(self, path: str) -> None:
        self._op(XsType.XS_MKDIR, join_strings([_raw(path)]))

    def rm(self, path: str) -> None:
        self._op(XsType.XS_RM, join_strings([_raw(path)]))

    def directory(self, path: str) -> list[str]:
        try:
            reply = self._op(XsType.XS_DIRECTORY, join_strings([_raw(path)]))
            return [_text(c) for c in split_strings(reply)]
        except XenstoreError as e:
            if e.errno_name != "E2BIG":
                raise
        return self._directory_parts(path)

    def _directory_parts(self, path: str) -> list[str]:
        """A child list too long for one reply, fetched in chunks (XS_DIRECTORY_PART);
        restarts if the node's generation changes between chunks."""
        for _attempt in range(16):
            children: list[bytes] = []
            offset, generation = 0, None
            while True:
                reply = self._op(XsType.XS_DIRECTORY_PART, join_strings([_raw(path), str(offset)]))
                gen, _, body = reply.partition(b"\0")
                if generation is None:
                    generation = gen
                elif gen != generation:
                    break
                if body.endswith(b"\0\0") or body == b"\0":
                    children += split_strings(body[:-1])
                    return [_text(c) for c in children]
                children += split_strings(body)
                offset += len(body)
        raise XenstoreError("EAGAIN", f"{path} kept changing while being listed")

    def get_perms(self, path: str) -> list[str]:
        return [_text(p) for p in split_strings(self._op(XsType.XS_GET_PERMS, join_strings([_raw(path)])))]

    def set_perms(self, path: str, perms: list[str]) -> None:
        self._op(XsType.XS_SET_PERMS, join_strings([_raw(path), *perms]))


class Transaction(_Ops):
    """Operations bound to one transaction. As a context manager: an exception aborts;
    leaving the block without ``commit``/``abort`` commits, raising EAGAIN on conflict.
    Call ``commit()`` yourself (it returns False on conflict) to retry in a loop."""

    def __init__(self, client: XenstoreClient, tx_id: int) -> None:
        self._client = client
        self._tx_id = tx_id
        self.ended = False

    @property
    def id(self) -> int:
        return self._tx_id

    def _call(self, type_: XsType, payload: bytes, tx_id: int) -> bytes:
        if self.ended:
            raise XenstoreError("ENOENT", "transaction already ended")
        return self._client._call(type_, payload, tx_id)

    def commit(self) -> bool:
        """True if committed; False if it conflicted (EAGAIN) and should be retried."""
        try:
            self._end(b"T")
        except XenstoreError as e:
            if e.errno_name == "EAGAIN":
                return False
            raise
        return True

    def abort(self) -> None:
        self._end(b"F")

    def _end(self, how: bytes) -> None:
        if self.ended:
            raise XenstoreError("ENOENT", "transaction already ended")
        self.ended = True  # the server forgets it whatever the outcome
        self._client._call(XsType.XS_TRANSACTION_END, how + b"\0", self._tx_id)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.ended:
            return
        if exc_type is not None:
            with suppress(XenstoreError, XenstoreConnectionError):
                self.abort()
            return
        if not self.commit():
            raise XenstoreError("EAGAIN", "transaction conflicted")


class XenstoreClient(_Ops):
    """A blocking xenstore client.

    ``XenstoreClient(path)`` connects to a unix socket (default: ``$XENSTORED_PATH``,
    then the standard one); ``XenstoreClient.in_process(core, domid)`` talks directly
    to a core in this process. ``timeout`` bounds the wait for each reply.
    """

    def __init__(
        self, path: str | None = None, *, transport: Transport | None = None, timeout: float | None = 30.0
    ) -> None:
        self._transport: Transport = (
            transport if transport is not None else SocketTransport(path or default_socket_path())
        )
        self._proto = ClientProtocol()
        self.timeout = timeout
        self._closed = False
        # fileno(): an epoll set that is readable when the transport has bytes *or* events
        # are already queued here (read off the wire while waiting for a reply), so a
        # select() loop never sleeps on an event it already has.
        self._epoll = select.epoll()
        self._evr, self._evw = os.pipe()
        os.set_blocking(self._evr, False)
        os.set_blocking(self._evw, False)
        self._ev_signalled = False
        self._epoll.register(self._transport.fileno(), select.EPOLLIN)
        self._epoll.register(self._evr, select.EPOLLIN)

    @classmethod
    def in_process(cls, core: XenstoredCore, domid: int = 0, timeout: float | None = 30.0) -> XenstoreClient:
        return cls(transport=LocalHub.for_core(core).open(domid), timeout=timeout)

    # ------------------------------------------------------------------ plumbing

    def _pump(self, timeout: float | None) -> bool:
        """Receive once; False if nothing arrived within timeout."""
        data = self._transport.recv(timeout)
        if not data:
            return False
        try:
            self._proto.receive_data(data)
        except ProtocolError as e:
            self.close()
            raise XenstoreConnectionError(f"corrupt stream from xenstored: {e}") from e
        self._sync_event_signal()
        return True

    def _sync_event_signal(self) -> None:
        queued = bool(self._proto.events)
        if queued and not self._ev_signalled:
            os.write(self._evw, b"x")
            self._ev_signalled = True
        elif not queued and self._ev_signalled:
            with suppress(BlockingIOError):
                os.read(self._evr, 64)
            self._ev_signalled = False

    def _call(self, type_: XsType, payload: bytes, tx_id: int) -> bytes:
        if self._closed:
            raise XenstoreConnectionError("client is closed")
        req_id, data = self._proto.request(type_, payload, tx_id)
        self._transport.send(data)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while (reply := self._proto.take_reply(req_id)) is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no reply from xenstored to {type_.name} within {self.timeout}s")
            self._pump(remaining)
        if reply.type == XsType.XS_ERROR:
            raise XenstoreError.from_payload(reply.payload)
        if reply.type != type_:
            raise XenstoreConnectionError(f"reply type {reply.type} to a {type_.name} request")
        return reply.payload

    # ------------------------------------------------------------------ watches

    def watch(self, path: str, token: str) -> None:
        """Register a watch; it fires once right away, then on every change at or below."""
        self._call(XsType.XS_WATCH, join_strings([_raw(path), _raw(token)]), 0)

    def unwatch(self, path: str, token: str) -> None:
        self._call(XsType.XS_UNWATCH, join_strings([_raw(path), _raw(token)]), 0)

    def reset_watches(self) -> None:
        self._call(XsType.XS_RESET_WATCHES, b"", 0)
        self._proto.events.clear()
        self._sync_event_signal()

    def pending_events(self) -> int:
        return len(self._proto.events)

    def read_watch_events(self, timeout: float | None = 0) -> list[tuple[str, str]]:
        """(path, token) events: those queued plus any already readable. If none, wait up
        to ``timeout`` seconds (None: forever) for at least one. Never blocks when 0."""
        while self._pump(0):
            pass
        if not self._proto.events and timeout != 0:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._proto.events:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._pump(remaining)
            while self._pump(0):
                pass
        events = self._proto.take_events()
        self._sync_event_signal()
        return events

    def iter_watch_events(self, timeout: float | None = None) -> Iterator[tuple[str, str]]:
        """Yield events as they come, until ``timeout`` passes with none."""
        while batch := self.read_watch_events(timeout):
            yield from batch

    # ------------------------------------------------------------------ transactions

    def transaction(self) -> Transaction:
        reply = self._call(XsType.XS_TRANSACTION_START, b"\0", 0)
        return Transaction(self, int(reply.rstrip(b"\0")))

    def run_transaction(self, fn: Callable[[Transaction], T], attempts: int = 100) -> T:
        """Run ``fn`` in a transaction, retrying it from scratch while commit conflicts."""
        for _ in range(attempts):
            tx = self.transaction()
            try:
                result = fn(tx)
            except BaseException:
                with suppress(XenstoreError, XenstoreConnectionError):
                    tx.abort()
                raise
            if tx.ended or tx.commit():
                return result
        raise XenstoreError("EAGAIN", f"transaction still conflicting after {attempts} attempts")

    # ------------------------------------------------------------------ domains

    def get_domain_path(self, domid: int) -> str:
        return _text(self._call(XsType.XS_GET_DOMAIN_PATH, b"%d\0" % domid, 0).rstrip(b"\0"))

    def introduce(self, domid: int, mfn: int, port: int) -> None:
        self._call(XsType.XS_INTRODUCE, join_strings([str(domid), str(mfn), str(port)]), 0)

    def release(self, domid: int) -> None:
        self._call(XsType.XS_RELEASE, b"%d\0" % domid, 0)

    def resume(self, domid: int) -> None:
        self._call(XsType.XS_RESUME, b"%d\0" % domid, 0)

    def set_target(self, domid: int, target: int) -> None:
        self._call(XsType.XS_SET_TARGET, join_strings([str(domid), str(target)]), 0)

    def is_domain_introduced(self, domid: int) -> bool:
        return self._call(XsType.XS_IS_DOMAIN_INTRODUCED, b"%d\0" % domid, 0).rstrip(b"\0") == b"T"

    def control(self, *args: str) -> str:
        return _text(self._call(XsType.XS_CONTROL, join_strings(args), 0).rstrip(b"\0"))

    # ------------------------------------------------------------------ lifetime

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._epoll.close()
        os.close(self._evr)
        os.close(self._evw)
        self._transport.close()

    def __enter__(self) -> XenstoreClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
