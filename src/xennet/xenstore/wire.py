"""xs_wire framing: a 16-byte ``struct xsd_sockmsg`` header, then ``len`` payload bytes.

Pure functions and a byte-fed ``Decoder``; no I/O. Used by the server, the client and
the in-process transport alike, so every path frames bytes the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from xennet.abi.xs_wire import HEADER, XENSTORE_PAYLOAD_MAX, XsType


class ProtocolError(Exception):
    """The byte stream cannot be framed; the connection must be dropped."""


class PayloadTooLarge(ProtocolError):
    """A header announced more than XENSTORE_PAYLOAD_MAX bytes (xenstored drops such clients)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"payload length {length} exceeds XENSTORE_PAYLOAD_MAX={XENSTORE_PAYLOAD_MAX}")
        self.length = length


@dataclass(frozen=True)
class Message:
    """One xs_wire message. ``type`` is a plain int so unknown types survive decoding."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    @property
    def xs_type(self) -> XsType | None:
        try:
            return XsType(self.type)
        except ValueError:
            return None

    def __repr__(self) -> str:
        t = self.xs_type
        name = t.name if t is not None else str(self.type)
        return f"Message({name}, req_id={self.req_id}, tx_id={self.tx_id}, payload={self.payload!r})"


def encode(msg: Message) -> bytes:
    """Frame a message. Oversized payloads are refused here so we never emit a frame a
    peer must treat as fatal."""
    if len(msg.payload) > XENSTORE_PAYLOAD_MAX:
        raise PayloadTooLarge(len(msg.payload))
    return HEADER.pack(msg.type, msg.req_id, msg.tx_id, len(msg.payload)) + msg.payload


def encode_message(type_: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    return encode(Message(type_, req_id, tx_id, payload))


class Decoder:
    """Incremental decoder: ``feed`` bytes as they arrive, then pull complete messages.

    A bad header raises ``ProtocolError`` from ``next_message``; messages completed
    before it are still returned first, so their replies can be delivered before the
    connection is closed. Once broken, the decoder stays broken.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_message(self) -> Message | None:
        if self._broken is not None:
            raise self._broken
        if len(self._buf) < HEADER.size:
            return None
        type_, req_id, tx_id, length = HEADER.unpack_from(self._buf)
        if length > XENSTORE_PAYLOAD_MAX:
            self._broken = PayloadTooLarge(length)
            raise self._broken
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER.size : end])
        del self._buf[:end]
        return Message(type_, req_id, tx_id, payload)

    def __iter__(self) -> Iterator[Message]:
        while (msg := self.next_message()) is not None:
            yield msg


def split_strings(payload: bytes) -> list[bytes]:
    """Split a list of NUL-terminated strings: ``b"a\\0b\\0"`` -> ``[b"a", b"b"]``.

    Bytes after the last NUL are not a string (xenstored's get_strings ignores them);
    they are dropped here too. ``b""`` is the empty list.
    """
    if not payload:
        return []
    parts = payload.split(b"\0")
    return parts[:-1]


def join_strings(parts: Iterable[bytes | str]) -> bytes:
    """Each part NUL-terminated and concatenated: ``["a", "b"]`` -> ``b"a\\0b\\0"``."""
    out = bytearray()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        if b"\0" in raw:
            raise ValueError(f"string contains NUL: {raw!r}")
        out += raw + b"\0"
    return bytes(out)
