"""Declare a C struct once; get its size, every offset and a packer from that one declaration.

Layout follows the x86_64 SysV rules the Xen public headers are compiled with:
natural alignment, struct size rounded up to the largest member alignment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Scalar:
    code: str  # struct module code
    size: int
    cname: str

    @property
    def align(self) -> int:
        return self.size


u8 = Scalar("B", 1, "uint8_t")
u16 = Scalar("H", 2, "uint16_t")
u32 = Scalar("I", 4, "uint32_t")
u64 = Scalar("Q", 8, "uint64_t")
s16 = Scalar("h", 2, "int16_t")
s32 = Scalar("i", 4, "int32_t")


@dataclass(frozen=True)
class Array:
    elem: Scalar
    count: int

    @property
    def size(self) -> int:
        return self.elem.size * self.count

    @property
    def align(self) -> int:
        return self.elem.align


CType = Union[Scalar, Array, "CStruct"]


def round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class CStruct:
    """A C struct (or union) with members in declaration order.

    ``cname`` is the C spelling (``struct netif_tx_request``) used by the ABI check;
    nested anonymous members have ``cname=""``.
    """

    cname: str
    members: list[tuple[str, CType]]
    union: bool = False
    size: int = field(init=False)
    align: int = field(init=False)
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        off = 0
        align = 1
        offsets: dict[str, int] = {}
        for name, ctype in self.members:
            a = ctype.align
            align = max(align, a)
            here = 0 if self.union else round_up(off, a)
            offsets[name] = here
            off = max(off, here + ctype.size) if self.union else here + ctype.size
        self.align = align
        self.size = round_up(off, align)
        self.offsets = offsets

    def member(self, name: str) -> CType:
        for n, t in self.members:
            if n == name:
                return t
        raise KeyError(name)

    def leaves(self, prefix: str = "", base: int = 0) -> list[tuple[str, int, Scalar | Array]]:
        """Every scalar/array member, flattened to dotted paths with absolute offsets."""
        out: list[tuple[str, int, Scalar | Array]] = []
        for name, ctype in self.members:
            path = f"{prefix}{name}"
            off = base + self.offsets[name]
            if isinstance(ctype, CStruct):
                out.extend(ctype.leaves(path + ".", off))
            else:
                out.append((path, off, ctype))
        return out

    def leaf_groups(self) -> list[list[tuple[str, int, Scalar | Array]]]:
        """The leaves split into groups that do not overlap: one arm of every union per group
        (what one ``codec`` can pack, or one C initializer can set)."""
        remaining = self.leaves()
        groups: list[list[tuple[str, int, Scalar | Array]]] = []
        while remaining:
            group: list[tuple[str, int, Scalar | Array]] = []
            rest = []
            for leaf in remaining:
                _p, off, t = leaf
                if all(off >= o + g.size or off + t.size <= o for _q, o, g in group):
                    group.append(leaf)
                else:
                    rest.append(leaf)
            groups.append(group)
            remaining = rest
        return groups

    def offsetof(self, path: str) -> int:
        for p, off, _ in self.leaves():
            if p == path:
                return off
        # an aggregate member: its first leaf
        for p, off, _ in self.leaves():
            if p.startswith(path + "."):
                return off
        raise KeyError(path)

    def codec(self, *paths: str) -> struct.Struct:
        """A ``struct.Struct`` packing the named leaves (default: every leaf, so a struct with a
        union must name the arm it wants) at their real offsets, padded to the full size."""
        chosen = [leaf for leaf in self.leaves() if not paths or leaf[0] in paths]
        if paths and len(chosen) != len(paths):
            missing = set(paths) - {c[0] for c in chosen}
            raise KeyError(f"{self.cname}: no member {sorted(missing)}")
        chosen.sort(key=lambda leaf: leaf[1])
        fmt = "<"
        pos = 0
        for _path, off, ctype in chosen:
            if off < pos:
                raise ValueError(f"{self.cname}: overlapping members in one codec")
            if off > pos:
                fmt += f"{off - pos}x"
            if isinstance(ctype, Array):
                fmt += f"{ctype.count}{'s' if ctype.elem.code == 'B' else ctype.elem.code}"
            else:
                fmt += ctype.code
            pos = off + ctype.size
        if pos < self.size:
            fmt += f"{self.size - pos}x"
        s = struct.Struct(fmt)
        assert s.size == self.size
        return s
