"""xenstore over /dev/xen/xenbus: a ``Transport`` for ``xennet.xenstore.client.XenstoreClient``.

The device speaks the xs_wire protocol (the same ``xsd_sockmsg`` frames as xenstored's
socket) through the kernel's own xenstore connection, in dom0 and in a domU alike::

    XenstoreClient(transport=XenbusTransport())

Two things differ from a socket, and this transport hides both:

* A ``write()`` must hold whole messages: the kernel gathers one message in a buffer,
  acts on it once complete, then *discards* whatever else that write carried.  So
  ``send`` splits its bytes into messages and writes each one by itself.
* Some requests the kernel refuses itself (a ``write()`` error such as ESRCH for an
  unknown transaction, EINVAL for a bad message) and no reply ever comes.  ``send``
  turns such an error into an ``XS_ERROR`` reply for that request, returned by the next
  ``recv``, so the client gets an error instead of waiting for its timeout.
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


class XenbusTransport:
    """A connection to xenstore through /dev/xen/xenbus (``Transport`` of the xenstore client)."""

    def __init__(self, dev_dir: str = DEV_DIR, *, fd: int | None = None) -> None:
        self._fd = open_device("xenbus", dev_dir, nonblocking=True) if fd is None else fd
        self._pending_out = b""  # an incomplete message, until the rest is sent
        self._inbox = bytearray()  # replies made up for requests the kernel refused

    def send(self, data: bytes) -> None:
        if self._fd < 0:
            raise XenstoreConnectionError("xenbus transport is closed")
        messages, self._pending_out = split_messages(self._pending_out + bytes(data))
        for msg in messages:
            self._write_message(msg)

    def _write_message(self, msg: bytes) -> None:
        type_, req_id, tx_id, length = HEADER.unpack_from(msg, 0)
        if length > XENSTORE_PAYLOAD_MAX:
            raise XenstoreError("E2BIG", f"request payload of {length} bytes")
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
                name = errno_name(e.errno).encode("ascii", "replace") + b"\0"
                self._inbox += HEADER.pack(XsType.XS_ERROR, req_id, tx_id, len(name)) + name
                return

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
