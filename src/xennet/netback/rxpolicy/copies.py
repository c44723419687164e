"""From an rx plan for a concrete skb to grant copy operations.

A source is either a frame of the local (compound) page a head/frag lives on, or -- for a
frag whose bytes are a mapping of another domain's grant (``Buf.foreign``, seed 003) -- that
domain's grant itself, so a packet bridged from guest A to guest B is copied A -> B by the
hypervisor and never read through the backend's mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


def _local(buf: Buf, index: int, src_offset: int, length: int) -> LocalSource:
    frame, off = divmod(src_offset, PAGE_SIZE)
    if frame >= buf.page.nr_frames or off + length > PAGE_SIZE:
        raise PlanError(f"copy of {length} bytes at {src_offset} leaves a frame of piece {index}")
    return LocalSource(frame, off)


def _foreign(buf: Buf, index: int, src_offset: int, length: int) -> Iterator[tuple[ForeignSource, int]]:
    """The grant pieces of a foreign buffer's bytes: one grant, or several runs (a header pulled
    together from several tx slots).  Each must stay inside its granted page."""
    covered = 0
    for f, n in buf.foreign_pieces(src_offset - buf.offset, length):
        if f.offset < 0 or f.offset + n > PAGE_SIZE:
            raise PlanError(
                f"piece {index}: {n} foreign bytes at grant offset {f.offset} leave the granted page"
            )
        covered += n
        yield ForeignSource(f.domid, f.gref, f.offset), n
    if covered != length:
        raise PlanError(f"piece {index}: its grants cover {covered} of {length} bytes at {src_offset}")


def copy_specs(skb: Skb, plan: RxPlan) -> list[CopySpec]:
    """The copies for ``plan`` (made for ``skb.layout``), in order: one per chunk, except that a
    chunk of a foreign buffer built from several grants takes one per grant it touches."""
    bufs = skb.bufs
    specs: list[CopySpec] = []
    for b, chunks in enumerate(plan.buffers):
        for c in chunks:
            if not 0 <= c.src_index < len(bufs):
                raise PlanError(f"chunk {c}: the skb has {len(bufs)} pieces")
            buf = bufs[c.src_index]
            if c.src_offset < buf.offset or c.src_offset + c.length > buf.offset + buf.length:
                raise PlanError(f"chunk {c} is outside piece {c.src_index}")
            if buf.foreign is None and not buf.runs:
                specs.append(
                    CopySpec(
                        c.src_index,
                        _local(buf, c.src_index, c.src_offset, c.length),
                        b,
                        c.dst_offset,
                        c.length,
                    )
                )
                continue
            dst = c.dst_offset
            for src, n in _foreign(buf, c.src_index, c.src_offset, c.length):
                specs.append(CopySpec(c.src_index, src, b, dst, n))
                dst += n
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
