"""From an rx plan for a concrete skb to grant copy operations.

A source is either a frame of the local (compound) page a head/frag lives on, or -- for a
frag whose bytes are a mapping of another domain's grant (``Buf.foreign``, seed 003) -- that
domain's grant itself, so a packet bridged from guest A to guest B is copied A -> B by the
hypervisor and never read through the backend's mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ...abi.grant_table import DOMID_SELF
from ...packet.skb import Buf, Skb
from ...platform.base import PAGE_SIZE, CopyPtr, GrantCopy
from .plan import PlanError, RxPlan


class LocalSource(NamedTuple):
    frame: int  # frame index inside the buffer's compound page (0 .. 2**order - 1)
    offset: int  # offset inside that 4 KiB frame


class ForeignSource(NamedTuple):
    domid: int
    gref: int
    offset: int  # offset inside the granted page


class CopySpec(NamedTuple):
    src_index: int  # 0 = head, i = frag i-1
    src: LocalSource | ForeignSource
    dst_buffer: int  # which buffer of the plan (the n-th rx request it uses for data)
    dst_offset: int
    length: int


def _source(buf: Buf, index: int, src_offset: int, length: int) -> LocalSource | ForeignSource:
    if src_offset < buf.offset or src_offset + length > buf.offset + buf.length:
        raise PlanError(f"copy of {length} bytes at {src_offset} is outside piece {index}")
    if buf.foreign is None:
        frame, off = divmod(src_offset, PAGE_SIZE)
        if frame >= buf.page.nr_frames or off + length > PAGE_SIZE:
            raise PlanError(f"copy of {length} bytes at {src_offset} leaves a frame of piece {index}")
        return LocalSource(frame, off)
    f = buf.foreign
    if f.offset < 0 or f.offset + buf.length > PAGE_SIZE:
        raise PlanError(
            f"piece {index}: foreign bytes at grant offset {f.offset} + {buf.length} leave the granted page"
        )
    return ForeignSource(f.domid, f.gref, f.offset + (src_offset - buf.offset))


def copy_specs(skb: Skb, plan: RxPlan) -> list[CopySpec]:
    """One spec per chunk of ``plan`` (made for ``skb.layout``), in order."""
    bufs = skb.bufs
    specs: list[CopySpec] = []
    for b, chunks in enumerate(plan.buffers):
        for c in chunks:
            if not 0 <= c.src_index < len(bufs):
                raise PlanError(f"chunk {c}: the skb has {len(bufs)} pieces")
            src = _source(bufs[c.src_index], c.src_index, c.src_offset, c.length)
            specs.append(CopySpec(c.src_index, src, b, c.dst_offset, c.length))
    return specs


def grant_copies(skb: Skb, plan: RxPlan, dest_grefs: Sequence[int], dest_domid: int) -> list[GrantCopy]:
    """The grant copy batch for ``plan``: ``dest_grefs[i]`` is the gref of the rx request whose
    buffer is the plan's buffer ``i`` (requests for the GSO extra slot carry no buffer)."""
    if len(dest_grefs) != plan.nbuffers:
        raise PlanError(f"{len(dest_grefs)} destination grants for {plan.nbuffers} buffers")
    bufs = skb.bufs
    ops: list[GrantCopy] = []
    for spec in copy_specs(skb, plan):
        src = spec.src
        if isinstance(src, ForeignSource):
            sptr = CopyPtr(src.gref, src.domid, src.offset, is_gref=True)
        else:
            sptr = CopyPtr(bufs[spec.src_index].page.frame + src.frame, DOMID_SELF, src.offset, is_gref=False)
        dptr = CopyPtr(dest_grefs[spec.dst_buffer], dest_domid, spec.dst_offset)
        ops.append(GrantCopy(sptr, dptr, spec.length))
    return ops
