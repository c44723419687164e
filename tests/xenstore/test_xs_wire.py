"""Framing: encode/decode round trips, incremental decoding, the payload limit."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as s

from xennet.abi.xs_wire import HEADER, XENSTORE_PAYLOAD_MAX, XsType
from xennet.xenstore.wire import (
    Decoder,
    Message,
    PayloadTooLarge,
    ProtocolError,
    encode,
    join_strings,
    split_strings,
)

u32 = s.integers(0, 2**32 - 1)
messages = s.builds(Message, u32, u32, u32, s.binary(max_size=XENSTORE_PAYLOAD_MAX))


def test_header_layout_is_four_native_u32() -> None:
    raw = encode(Message(XsType.XS_READ, 7, 3, b"/a\0"))
    assert raw[:16] == struct.pack("<IIII", 2, 7, 3, 3)
    assert raw[16:] == b"/a\0"


@given(s.lists(messages, max_size=6), s.data())
def test_decoder_reassembles_any_chunking(msgs: list[Message], data: s.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = sorted(data.draw(s.lists(s.integers(0, len(stream)), max_size=10)))
    dec = Decoder()
    got: list[Message] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        dec.feed(stream[prev:cut])
        prev = cut
        got.extend(dec)
    assert got == msgs
    assert dec.buffered == 0


def test_oversized_header_is_a_protocol_error_after_earlier_messages() -> None:
    good = encode(Message(XsType.XS_READ, 1, 0, b"/x\0"))
    bad = HEADER.pack(XsType.XS_WRITE, 2, 0, XENSTORE_PAYLOAD_MAX + 1)
    dec = Decoder()
    dec.feed(good + bad)
    assert dec.next_message() == Message(XsType.XS_READ, 1, 0, b"/x\0")
    with pytest.raises(PayloadTooLarge) as info:
        dec.next_message()
    assert info.value.length == XENSTORE_PAYLOAD_MAX + 1
    # It stays broken: the stream cannot be resynchronised.
    dec.feed(good)
    with pytest.raises(ProtocolError):
        dec.next_message()


def test_exactly_payload_max_is_allowed_and_encode_refuses_more() -> None:
    dec = Decoder()
    dec.feed(encode(Message(1, 1, 0, b"x" * XENSTORE_PAYLOAD_MAX)))
    msg = dec.next_message()
    assert msg is not None and len(msg.payload) == XENSTORE_PAYLOAD_MAX
    with pytest.raises(PayloadTooLarge):
        encode(Message(1, 1, 0, b"x" * (XENSTORE_PAYLOAD_MAX + 1)))


def test_unknown_type_decodes_and_reprs() -> None:
    dec = Decoder()
    dec.feed(encode(Message(999, 1, 0, b"")))
    msg = dec.next_message()
    assert msg is not None and msg.type == 999 and msg.xs_type is None
    assert "999" in repr(msg)


@given(s.lists(s.binary(max_size=20).filter(lambda b: b"\0" not in b), max_size=8))
def test_split_join_round_trip(parts: list[bytes]) -> None:
    assert split_strings(join_strings(parts)) == parts


def test_split_ignores_unterminated_tail_and_join_rejects_nul() -> None:
    assert split_strings(b"a\0b\0junk") == [b"a", b"b"]
    assert split_strings(b"") == []
    assert join_strings(["a", b"b"]) == b"a\0b\0"
    with pytest.raises(ValueError):
        join_strings([b"a\0b"])
