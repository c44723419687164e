"""The one exception type both ends of the xenstore protocol use.

Errors travel on the wire as their errno *name* (``"ENOENT\\0"``), never as a number,
because numbers differ between operating systems. ``XenstoreError`` keeps the name and
also derives from ``OSError`` with the local errno so callers can use either.
"""

from __future__ import annotations

import errno as _errno

from xennet.abi.xs_wire import XSD_ERRORS


class XenstoreError(OSError):
    """A request failed; ``errno_name`` is the xs_wire error name (``"ENOENT"``, ...)."""

    def __init__(self, errno_name: str, detail: str = "") -> None:
        code = getattr(_errno, errno_name, _errno.EINVAL)
        super().__init__(code, f"{errno_name}{': ' + detail if detail else ''}")
        self.errno_name = errno_name

    @classmethod
    def from_payload(cls, payload: bytes) -> XenstoreError:
        """Decode an XS_ERROR body; an unknown name is kept verbatim rather than guessed."""
        name = payload.split(b"\0", 1)[0].decode("ascii", "replace") or "EINVAL"
        return cls(name)


def error_payload(errno_name: str) -> bytes:
    """The XS_ERROR body for a name; like xenstored, anything untranslatable becomes EINVAL."""
    if errno_name not in XSD_ERRORS:
        errno_name = "EINVAL"
    return errno_name.encode("ascii") + b"\0"


class XenstoreConnectionError(ConnectionError):
    """The connection to xenstored is gone (EOF, reset, or closed for a protocol error)."""
