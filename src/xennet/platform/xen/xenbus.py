"""xenstore over /dev/xen/xenbus: a ``Transport`` for ``xennet.xenstore.client.XenstoreClient``.

The device speaks the xs_wire protocol (the same ``xsd_sockmsg`` frames as xenstored's
socket) through the kernel's own xenstore connection, in dom0 and in a domU alike::

    XenstoreClient(transport=XenbusTransport())

What differs from a socket (drivers/xen/xenbus/xenbus_dev_frontend.c, Linux 6.1), and
what this transport does about it:

* A ``write()`` must hold whole messages: the kernel gathers one message in a buffer,
  acts on it once complete, then *discards* whatever else that write carried.  So
  ``send`` splits its bytes into messages and writes each one by itself.
* That buffer is XENSTORE_PAYLOAD_MAX (4096) bytes *including* the 16-byte header, so a
  request payload may be 4080 bytes at most (xenstored's socket takes 4096); a longer
  one is refused here with E2BIG (the kernel would say EINVAL or E2BIG to the write).
* The kernel answers some requests itself, in the read queue, with the request's
  req_id/tx_id: an unknown transaction id gets an ``XS_ERROR "ENOENT"``, a bad
  ``XS_TRANSACTION_END`` body (not exactly "T" or "F") ``"EINVAL"``, and ``XS_WATCH`` /
  ``XS_UNWATCH`` an "OK" of their own type (an unwatch of an unknown watch included).
  The watch's initial event may be queued *before* that "OK".
* Other refusals are a ``write()`` error with no reply ever queued: a watch xenstored
  refused (its errno: EACCES, EINVAL, ENOSPC...), ENOMEM.  ``send`` turns such an error
  into an ``XS_ERROR`` reply for that request, returned by the next ``recv``, so the
  client gets an error instead of waiting for its timeout.
* ``XS_RESET_WATCHES`` would go to xenstored on the *kernel's* connection, which all
  users of the device share: it would drop the kernel's own watches (every xenbus
  frontend and backend of the domain would stop seeing changes) and its transactions.
  ``send`` refuses it with an ``XS_ERROR "ENOSYS"`` reply.
* The kernel registers each ``XS_WATCH`` itself, under a token of its own, so a second
  watch of the same path and token is not refused (it would fire twice per change), and
  an ``XS_UNWATCH`` of no watch is answered OK.  ``send`` answers those two as xenstored
  would on a socket: EEXIST and ENOENT.
* ``XS_WATCH_EVENT`` messages carry an uninitialised req_id and tx_id (kernel stack
  garbage): match events by type, never by id.
* One ``read()`` returns as many queued messages as fit, and may end inside one.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import time
from typing import Protocol

from ...abi.xs_wire import HEADER, XENSTORE_PAYLOAD_MAX, XsType
from ...xenstore.errors import XenstoreConnectionError, XenstoreError
from ..base import PlatformError
from .device import DEV_DIR, errno_name, open_device

_HDR = HEADER.size
# the kernel's message buffer holds the header and the payload together
XENBUS_DEV_PAYLOAD_MAX = XENSTORE_PAYLOAD_MAX - _HDR
# write() errors that mean the device itself is unusable, not that one message was refused
_FATAL = {_errno.EBADF, _errno.EPIPE, _errno.ENODEV, _errno.ENXIO, _errno.EIO}


def split_messages(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole xs_wire messages at the front of ``data``, and the incomplete rest."""
    out: list[bytes] = []
    pos = 0
    while len(data) - pos >= _HDR:
        length = HEADER.unpack_from(data, pos)[3]
        end = pos + _HDR + length
        if end > len(data):
            break
        out.append(data[pos:end])
        pos = end
    return out, data[pos:]


def watch_key(payload: bytes) -> tuple[bytes, bytes] | None:
    """(path, token) of an XS_WATCH/XS_UNWATCH payload; None when malformed (the kernel
    answers that with EINVAL itself)."""
    parts = payload.split(b"\0")
    if len(parts) < 3:
        return None
    return parts[0], parts[1]


class XenbusTransport:
    """A connection to xenstore through /dev/xen/xenbus (``Transport`` of the xenstore client)."""

    def __init__(self, dev_dir: str = DEV_DIR, *, fd: int | None = None) -> None:
        self._fd = open_device("xenbus", dev_dir, nonblocking=True) if fd is None else fd
        self._pending_out = b""  # an incomplete message, until the rest is sent
        self._inbox = bytearray()  # replies made up for requests the kernel refused
        self._watches: set[tuple[bytes, bytes]] = set()  # (path, token) registered through us

    def send(self, data: bytes) -> None:
        if self._fd < 0:
            raise XenstoreConnectionError("xenbus transport is closed")
        messages, self._pending_out = split_messages(self._pending_out + bytes(data))
        for msg in messages:
            self._write_message(msg)

    def _write_message(self, msg: bytes) -> None:
        type_, req_id, tx_id, length = HEADER.unpack_from(msg, 0)
        if length > XENBUS_DEV_PAYLOAD_MAX:
            limit = XENBUS_DEV_PAYLOAD_MAX
            raise XenstoreError("E2BIG", f"request payload of {length} bytes (the device takes {limit})")
        if type_ == XsType.XS_RESET_WATCHES:
            self._reply_error(req_id, tx_id, "ENOSYS")  # see the module docstring
            return
        watch: tuple[bytes, bytes] | None = None
        if type_ in (XsType.XS_WATCH, XsType.XS_UNWATCH):
            watch = watch_key(msg[_HDR:])
            # the kernel would register a duplicate (two events per change) and answer an
            # unknown unwatch with OK: answer as xenstored does on a socket
            if watch is not None and type_ == XsType.XS_WATCH and watch in self._watches:
                self._reply_error(req_id, tx_id, "EEXIST")
                return
            if watch is not None and type_ == XsType.XS_UNWATCH and watch not in self._watches:
                self._reply_error(req_id, tx_id, "ENOENT")
                return
        pos = 0
        while pos < len(msg):
            try:
                pos += os.write(self._fd, msg[pos:])
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
                continue
            except OSError as e:
                if e.errno in _FATAL:
                    raise XenstoreConnectionError(f"xenbus device: {e.strerror}") from e
                if pos:  # the kernel holds part of the message: it cannot be taken back
                    raise XenstoreConnectionError(f"xenbus device: {e.strerror} mid-message") from e
                self._reply_error(req_id, tx_id, errno_name(e.errno))
                return
        if watch is not None:  # the write succeeded: the kernel (un)registered it already
            if type_ == XsType.XS_WATCH:
                self._watches.add(watch)
            else:
                self._watches.discard(watch)

    def _reply_error(self, req_id: int, tx_id: int, errno_name: str) -> None:
        name = errno_name.encode("ascii", "replace") + b"\0"
        self._inbox += HEADER.pack(XsType.XS_ERROR, req_id, tx_id, len(name)) + name

    def recv(self, timeout: float | None) -> bytes:
        if self._inbox:
            data = bytes(self._inbox)
            self._inbox.clear()
            return data
        if self._fd < 0:
            raise XenstoreConnectionError("xenbus transport is closed")
        ready, _, _ = select.select([self._fd], [], [], None if timeout is None else max(timeout, 0.0))
        if not ready:
            return b""
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as e:
            raise XenstoreConnectionError(f"xenbus device: {e.strerror}") from e
        if not data:
            raise XenstoreConnectionError("xenbus device: end of file")
        return data

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Conn(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float | None) -> bytes: ...


def read_key(conn: _Conn, path: str, timeout: float = 5.0, req_id: int = 0x78656E) -> bytes:
    """One XS_READ on a fresh connection (no client needed, e.g. for this domain's ``domid``)."""
    payload = path.encode() + b"\0"
    conn.send(HEADER.pack(XsType.XS_READ, req_id, 0, len(payload)) + payload)
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PlatformError(f"xenstore: no reply reading {path!r} within {timeout}s")
        buf += conn.recv(remaining)
        messages, buf = split_messages(buf)
        for msg in messages:
            type_, rid, _tx, _len = HEADER.unpack_from(msg, 0)
            if rid != req_id or type_ == XsType.XS_WATCH_EVENT:
                continue
            body = msg[_HDR:]
            if type_ == XsType.XS_ERROR:
                name = body.rstrip(b"\0").decode(errors="replace")
                raise PlatformError(f"xenstore: reading {path!r}: {name}")
            return body


def read_domid(conn: _Conn, timeout: float = 5.0) -> int:
    """This domain's id: the ``domid`` key of its xenstore home (written by the toolstack)."""
    raw = read_key(conn, "domid", timeout)
    try:
        return int(raw.rstrip(b"\0").decode("ascii"))
    except ValueError:
        raise PlatformError(f"xenstore: 'domid' is {raw!r}, not a number") from None
