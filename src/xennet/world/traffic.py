"""Made-up but checkable frames: frame ``i`` of a stream is a pure function of (seed, stream, i)."""

from __future__ import annotations

import hashlib
import random
import struct

ETH_P_XENNET_TEST = 0x88B5  # IEEE local experimental ethertype
_HDR = struct.Struct("!6s6sHII")  # dst, src, ethertype, stream, index


def frame_length(seed: int, stream: int, index: int, lo: int = 60, hi: int = 4096) -> int:
    return random.Random(hash((seed, stream, index))).randint(lo, hi)


def make_frame(
    seed: int, stream: int, index: int, dst: bytes, src: bytes, length: int | None = None
) -> bytes:
    if length is None:
        length = frame_length(seed, stream, index)
    head = _HDR.pack(dst, src, ETH_P_XENNET_TEST, stream, index)
    body_len = max(0, length - len(head))
    block = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=64).digest()
    body = (block * (body_len // len(block) + 1))[:body_len]
    return head + body


def check_frame(frame: bytes, seed: int, stream: int, index: int, dst: bytes, src: bytes) -> str | None:
    """None when ``frame`` is exactly frame ``index`` of ``stream``; else what is wrong."""
    if len(frame) < _HDR.size:
        return f"frame {index}: {len(frame)} bytes, shorter than a header"
    _d, _s, etype, got_stream, got_index = _HDR.unpack_from(frame)
    if etype != ETH_P_XENNET_TEST or got_stream != stream or got_index != index:
        return f"frame {index}: header says stream {got_stream} index {got_index} type {etype:#x}"
    want = make_frame(seed, stream, index, dst, src)
    if frame != want:
        diff = next(
            (i for i, (a, b) in enumerate(zip(frame, want, strict=False)) if a != b),
            min(len(frame), len(want)),
        )
        return f"frame {index}: {len(frame)} bytes vs {len(want)} expected, first difference at byte {diff}"
    return None


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))
