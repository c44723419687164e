"""A typed 48-byte control block (Linux's ``skb->cb``) whose users declare what they use.

In Linux every layer casts ``skb->cb`` to its own struct and trusts a comment that nobody
else is using those bytes right now.  Seed 001 is what happens when that trust breaks: GSO
started preserving the IP control block by moving its own scratch to offset 32, which landed
on the IPoIB hardware address stashed after ``qdisc_skb_cb`` -- and nothing noticed until a
performance regression was bisected.

Here each layer *declares* its region (offset + a C-like field layout) and which other layers
it is *live together with* (its bytes must survive while they run).  Two layers whose regions
overlap and which are live together are refused when the second one is declared, naming both
and the overlapping bytes, so the seed-001 class of bug is a start-up error, not corruption.

Data that is not per-layer scratch but must travel with the packet (IPoIB's 20-byte hwaddr,
seed 001's suggestion) belongs in the headroom in front of the packet data:
``put_headroom``/``get_headroom`` below; software GSO copies it with each segment's header.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..abi.cstruct import Array, CStruct, CType, Scalar, s32, u8, u16, u32, u64

if TYPE_CHECKING:  # only for annotations: skb.py imports this module
    from .skb import Skb

CB_SIZE = 48  # sizeof(skb->cb)

__all__ = [
    "CB_SIZE",
    "CbError",
    "CbConflict",
    "CbField",
    "CbLayer",
    "CbRegistry",
    "CbView",
    "ControlBlock",
    "DEFAULT_REGISTRY",
    "default_registry",
    "headroom",
    "put_headroom",
    "get_headroom",
]


class CbError(ValueError):
    """A control-block declaration or access that is not allowed."""


class CbConflict(CbError):
    """Two layers that are live together would share control-block bytes."""

    def __init__(self, new: CbLayer, old: CbLayer, lo: int, hi: int) -> None:
        super().__init__(
            f"control block: layer {new.name!r} (bytes {new.offset}..{new.end - 1}) overlaps layer "
            f"{old.name!r} (bytes {old.offset}..{old.end - 1}) at bytes {lo}..{hi - 1}, and the two are "
            f"live together, so one would overwrite the other"
        )
        self.layers = (new.name, old.name)
        self.overlap = (lo, hi)


@dataclass(frozen=True)
class CbField:
    """One leaf of a layer's struct: its dotted name, offset inside the whole cb, and C type."""

    name: str
    offset: int
    ctype: Scalar | Array
    codec: struct.Struct

    @property
    def size(self) -> int:
        return self.ctype.size


def _codec(ctype: Scalar | Array) -> struct.Struct:
    if isinstance(ctype, Array):
        return struct.Struct(f"<{ctype.size}s")  # arrays are read and written as raw bytes
    return struct.Struct("<" + ctype.code)  # x86 guests: little-endian, like the real cb


@dataclass(frozen=True)
class CbLayer:
    """A layer's declared slice of the control block."""

    name: str
    offset: int
    layout: CStruct
    live_with: frozenset[str]
    fields: dict[str, CbField]

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def end(self) -> int:
        return self.offset + self.size

    def overlap(self, other: CbLayer) -> tuple[int, int] | None:
        lo, hi = max(self.offset, other.offset), min(self.end, other.end)
        return (lo, hi) if lo < hi else None


class CbRegistry:
    """The set of declared layers.  ``declare`` refuses a conflicting layer on the spot."""

    def __init__(self, size: int = CB_SIZE) -> None:
        self.size = size
        self._layers: dict[str, CbLayer] = {}

    def declare(
        self,
        name: str,
        offset: int,
        fields: Sequence[tuple[str, CType]],
        *,
        live_with: Iterable[str] = (),
    ) -> CbLayer:
        if name in self._layers:
            raise CbError(f"control block: layer {name!r} is already declared")
        if not fields:
            raise CbError(f"control block: layer {name!r} declares no fields")
        layout = CStruct(f"{name}_cb", list(fields))
        if offset < 0 or offset + layout.size > self.size:
            raise CbError(
                f"control block: layer {name!r} wants bytes {offset}..{offset + layout.size - 1}, "
                f"but the control block has bytes 0..{self.size - 1}"
            )
        if offset % layout.align:
            # the real cb is cast to a struct pointer: a misaligned region would be a C bug
            raise CbError(f"control block: layer {name!r} at offset {offset} is not {layout.align}-aligned")
        leaves = {
            path: CbField(path, offset + off, ctype, _codec(ctype)) for path, off, ctype in layout.leaves()
        }
        layer = CbLayer(name, offset, layout, frozenset(live_with) - {name}, leaves)
        for old in self._layers.values():
            span = layer.overlap(old)
            if span is not None and self._live(layer, old):
                raise CbConflict(layer, old, *span)
        self._layers[name] = layer
        return layer

    @staticmethod
    def _live(a: CbLayer, b: CbLayer) -> bool:
        # either side may name the other (declaration order does not matter)
        return b.name in a.live_with or a.name in b.live_with

    def live_together(self, a: str, b: str) -> bool:
        return self._live(self[a], self[b])

    def __getitem__(self, name: str) -> CbLayer:
        try:
            return self._layers[name]
        except KeyError:
            raise CbError(f"control block: no layer {name!r} is declared") from None

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def __iter__(self) -> Iterator[CbLayer]:
        return iter(self._layers.values())

    def __len__(self) -> int:
        return len(self._layers)

    def copy(self) -> CbRegistry:
        new = CbRegistry(self.size)
        new._layers = dict(self._layers)
        return new

    def describe(self) -> list[str]:
        """One line a layer, by offset: for the CLI and for error reports."""
        out = []
        for layer in sorted(self, key=lambda la: (la.offset, la.name)):
            live = ", ".join(sorted(layer.live_with)) or "-"
            out.append(f"{layer.offset:2d}..{layer.end - 1:2d}  {layer.name:<9} live with: {live}")
        return out


class ControlBlock:
    """The 48 bytes themselves.  Reach a layer's region through ``view(name)``."""

    __slots__ = ("registry", "raw")

    def __init__(self, registry: CbRegistry | None = None, raw: bytes | None = None) -> None:
        self.registry = registry if registry is not None else DEFAULT_REGISTRY
        self.raw = bytearray(self.registry.size)
        if raw is not None:
            if len(raw) != self.registry.size:
                raise CbError(f"control block: {len(raw)} bytes given, want {self.registry.size}")
            self.raw[:] = raw

    def view(self, layer: str | CbLayer) -> CbView:
        name = layer if isinstance(layer, str) else layer.name
        declared = self.registry[name]
        if not isinstance(layer, str) and layer is not declared:
            raise CbError(f"control block: layer {name!r} belongs to another registry")
        return CbView(self, declared)

    def copy(self) -> ControlBlock:
        """What ``__copy_skb_header`` does: the whole cb travels to a clone or a segment."""
        return ControlBlock(self.registry, bytes(self.raw))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ControlBlock) and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ControlBlock({bytes(self.raw).hex()})"


class CbView:
    """Typed access to one layer's region: fields by (dotted) name, scalars as int, arrays as bytes."""

    __slots__ = ("cb", "layer")

    def __init__(self, cb: ControlBlock, layer: CbLayer) -> None:
        self.cb = cb
        self.layer = layer

    def _field(self, name: str) -> CbField:
        try:
            return self.layer.fields[name]
        except KeyError:
            raise CbError(
                f"control block: layer {self.layer.name!r} has no field {name!r} "
                f"(fields: {', '.join(self.layer.fields)})"
            ) from None

    def get(self, name: str) -> int:
        f = self._field(name)
        if isinstance(f.ctype, Array):
            raise CbError(f"control block: {self.layer.name}.{name} is an array: use get_bytes")
        value: int = f.codec.unpack_from(self.cb.raw, f.offset)[0]
        return value

    def get_bytes(self, name: str) -> bytes:
        f = self._field(name)
        return bytes(self.cb.raw[f.offset : f.offset + f.size])

    def set(self, name: str, value: int | bytes) -> None:
        f = self._field(name)
        if isinstance(f.ctype, Array):
            if not isinstance(value, bytes | bytearray) or len(value) != f.size:
                raise CbError(f"control block: {self.layer.name}.{name} takes exactly {f.size} bytes")
        elif not isinstance(value, int):
            raise CbError(f"control block: {self.layer.name}.{name} is a {f.ctype.cname}: give an int")
        try:
            f.codec.pack_into(self.cb.raw, f.offset, value)
        except struct.error as e:
            raise CbError(f"control block: {self.layer.name}.{name} = {value!r}: {e}") from None

    def read(self) -> dict[str, int | bytes]:
        return {
            name: (self.get_bytes(name) if isinstance(f.ctype, Array) else self.get(name))
            for name, f in self.layer.fields.items()
        }

    def write(self, **values: int | bytes) -> None:
        for name, value in values.items():
            self.set(name, value)

    def raw(self) -> bytes:
        return bytes(self.cb.raw[self.layer.offset : self.layer.end])

    def clear(self) -> None:
        self.cb.raw[self.layer.offset : self.layer.end] = bytes(self.layer.size)


# The layouts below follow Linux (x86_64) closely enough to reproduce seed 001's arithmetic.
# struct qdisc_skb_cb: 28 bytes, the documented upper bound for qdisc users
QDISC_CB: list[tuple[str, CType]] = [
    ("pkt_len", u32),
    ("slave_dev_queue_mapping", u16),
    ("tc_classid", u16),
    ("data", Array(u8, 20)),
]
IP_OPTIONS = CStruct(
    "struct ip_options",
    [("faddr", u32), ("nexthop", u32), ("optlen", u8), ("srr", u8), ("rr", u8), ("ts", u8)],
)
IP_CB: list[tuple[str, CType]] = [  # struct inet_skb_parm: 20 bytes (seed 001)
    ("iif", s32),
    ("opt", IP_OPTIONS),
    ("flags", u16),
    ("frag_max_size", u16),
]
IP6_CB: list[tuple[str, CType]] = [  # struct inet6_skb_parm: 20 bytes without CONFIG_IPV6_MIP6 (seed 001)
    ("iif", s32),
    ("ra", u16),
    ("dst0", u16),
    ("srcrt", u16),
    ("dst1", u16),
    ("lastopt", u16),
    ("nhoff", u16),
    ("flags", u16),
    ("frag_max_size", u16),
]
GSO_CB: list[tuple[str, CType]] = [  # struct skb_gso_cb as of 4.7 (seed 001): 14 bytes, 16 with padding
    ("mac_offset", s32),
    ("encap_level", s32),
    ("csum", u32),
    ("csum_start", u16),
]
SKB_GSO_CB_OFFSET = 32
TCP_CB: list[tuple[str, CType]] = [  # the front of struct tcp_skb_cb (tx side)
    ("seq", u32),
    ("end_seq", u32),
    ("tcp_tw_isn", u32),
    ("tcp_flags", u8),
    ("sacked", u8),
    ("ip_dsfield", u8),
    ("eor", u8),
    ("ack_seq", u32),
]
NETFRONT_CB: list[tuple[str, CType]] = [("pull_to", s32)]  # struct netfront_cb (rx)
NETBACK_CB: list[tuple[str, CType]] = [  # xenvif rx cb (expires, meta_slots_used) + tx pending state
    ("expires", u64),
    ("meta_slots_used", s32),
    ("pending_idx", u16),
    ("copy_count", u8),
]


def default_registry() -> CbRegistry:
    """The layers xennet knows, with the liveness Linux has.

    - qdisc: live only while queued; IP's block is dead by then (qdisc may overwrite it).
    - ip / ip6: must survive GSO (``ip_finish_output_gso`` fragments segments afterwards):
      that is the seed-001 fix, so they are live with gso, and gso sits at 32, past them.
    - tcp: dead once the skb is handed to IP (which clears its own block).
    - netfront / netback: private to the driver that owns the skb at that moment.
    """
    r = CbRegistry()
    r.declare("qdisc", 0, QDISC_CB)
    r.declare("ip", 0, IP_CB, live_with={"gso"})
    r.declare("ip6", 0, IP6_CB, live_with={"gso"})
    r.declare("gso", SKB_GSO_CB_OFFSET, GSO_CB, live_with={"ip", "ip6"})
    r.declare("tcp", 0, TCP_CB)
    r.declare("netfront", 0, NETFRONT_CB)
    r.declare("netback", 0, NETBACK_CB)
    return r


DEFAULT_REGISTRY = default_registry()


# --- headroom: bytes in front of the packet data in the head page (seed 001's alternative) ---


def headroom(skb: Skb) -> int:
    """Bytes available in front of the packet data: the head's offset in its page."""
    return skb.head.offset


def put_headroom(skb: Skb, data: bytes) -> None:
    """Store ``data`` immediately in front of the packet data (like an IPoIB pseudo header)."""
    if len(data) > skb.head.offset:
        raise CbError(f"headroom: {len(data)} bytes wanted, the head has {skb.head.offset} in front of it")
    skb.head.page.view[skb.head.offset - len(data) : skb.head.offset] = data


def get_headroom(skb: Skb, n: int) -> bytes:
    """The ``n`` bytes immediately in front of the packet data."""
    if not 0 <= n <= skb.head.offset:
        raise CbError(f"headroom: {n} bytes wanted, the head has {skb.head.offset} in front of it")
    return bytes(skb.head.page.view[skb.head.offset - n : skb.head.offset])
