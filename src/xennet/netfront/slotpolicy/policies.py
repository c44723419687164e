"""What netfront does with a packet that needs more ring slots than the backend takes.

Each policy is a small strategy object chosen by name (``policy_for``):

- ``drop``: count it and drop it (Linux before 2014: "skb rides the rocket").
- ``linearize``: copy the whole packet into fresh 4 KiB pages (Linux today).
- ``segment``: re-segment a TCP GSO packet with gso_size = len/2 + 1, recursively, until
  every segment fits (seed 000); only the headers are copied.  A packet that is not TCP GSO
  cannot be segmented (a datagram must not be split): ``segment`` drops it with reason
  "not GSO", ``segment+linearize`` linearizes it instead.
- ``relayout``: copy the fewest bytes so that the packet fits (seed 002; see ``planner``).

A packet that already fits passes through unchanged under every policy.

Ownership: a policy never releases its input.  ``PolicyOutcome.skbs`` are what to send, in
order.  Output skbs own the fresh pages they were given (``Skb.pages``) and may borrow pages
of the input: every skb in ``keepalive`` must outlive all of ``skbs``.  When the input is
neither sent (``passed_through``) nor in ``keepalive``, the caller may release it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ...packet.skb import GSO_TCPV4, GSO_TCPV6, MAX_SKB_FRAGS, Buf, PageSource, Skb, linear_layout
from ...platform.base import Page, PlatformError
from .planner import Kept, NoPlan, RelayoutPlan, relayout_plan
from .slots import copy_range, count_slots, fits, like, shifted


@dataclass
class PolicyOutcome:
    policy: str
    skbs: list[Skb]  # to transmit, in order; empty when dropped
    bytes_copied: int
    slots: list[int]  # per output packet
    dropped: bool
    reason: str
    keepalive: list[Skb] = field(default_factory=list)  # must outlive every skb in ``skbs``
    passed_through: bool = False  # ``skbs == [input]``, untouched

    @property
    def packets(self) -> int:
        return len(self.skbs)


class TooManySlotsPolicy(Protocol):
    @property
    def name(self) -> str: ...

    def apply(self, skb: Skb, max_slots: int, source: PageSource) -> PolicyOutcome: ...


def _passthrough(name: str, skb: Skb) -> PolicyOutcome:
    return PolicyOutcome(name, [skb], 0, [count_slots(skb)], False, "fits", passed_through=True)


def _too_many(skb: Skb, max_slots: int) -> str:
    if len(skb.frags) > MAX_SKB_FRAGS:
        return f"{len(skb.frags)} frags > {MAX_SKB_FRAGS}"
    return f"{count_slots(skb)} slots > {max_slots}"


def _drop(name: str, reason: str) -> PolicyOutcome:
    return PolicyOutcome(name, [], 0, [], True, reason)


def _owned_bytes(out: Skb) -> int:
    """Bytes of ``out`` that sit on pages it owns (fresh pages, i.e. copied bytes)."""
    return sum(b.length for b in out.bufs if any(b.page is p for p in out.pages))


def _borrows(out: Skb) -> bool:
    return any(not any(b.page is p for p in out.pages) for b in out.bufs)


class DropPolicy:
    name = "drop"

    def apply(self, skb: Skb, max_slots: int, source: PageSource) -> PolicyOutcome:
        if fits(skb, max_slots):
            return _passthrough(self.name, skb)
        return _drop(self.name, _too_many(skb, max_slots))


class LinearizePolicy:
    """Copy everything into order-0 pages: head in the first page, 4 KiB frags after it."""

    name = "linearize"

    def apply(self, skb: Skb, max_slots: int, source: PageSource) -> PolicyOutcome:
        if fits(skb, max_slots):
            return _passthrough(self.name, skb)
        pieces = linear_layout(skb.len)
        if len(pieces) > max_slots:
            return _drop(self.name, f"{skb.len} bytes need {len(pieces)} pages > {max_slots} slots")
        pages: list[Page] = []
        try:
            for _ in pieces:
                pages.append(source.alloc(0))
        except PlatformError as exc:
            for page in pages:
                source.free(page)
            return _drop(self.name, f"out of pages: {exc}")
        bufs: list[Buf] = []
        pos = 0
        for page, piece in zip(pages, pieces, strict=True):
            copy_range(skb.bufs, pos, page.view[: piece.length])
            bufs.append(Buf(page, 0, piece.length))
            pos += piece.length
        out = like(skb, bufs[0], bufs[1:], pages)
        reason = f"{_too_many(skb, max_slots)}: linearized into {len(pages)} pages"
        return PolicyOutcome(self.name, [out], skb.len, [count_slots(out)], False, reason)


SegmentFn = Callable[[Skb, Callable[[Skb], bool], PageSource], list[Skb]]


def _gso_segment_to_fit(skb: Skb, fits_fn: Callable[[Skb], bool], source: PageSource) -> list[Skb]:
    from ...packet import gso

    return gso.segment_to_fit(skb, fits_fn, source)


class SegmentPolicy:
    """Seed 000: software GSO with gso_size = len/2 + 1, recursively, until every piece fits.

    Only TCP GSO packets can be re-segmented; anything else goes to ``fallback`` (drop by
    default, as the seed's patch did), and the outcome's reason starts with "not GSO".

    The pieces are bigger than the wire's MSS, so a piece carrying more than the original
    gso_size of payload is sent as a GSO packet again, with the original gso_size and type
    (the backend took this GSO type, or netfront would have segmented in software already);
    without that the backend would see a 30 KB non-GSO frame.  ``keep_gso=False`` sends the
    pieces as plain packets, as ``skb_segment`` leaves them.
    """

    def __init__(
        self,
        fallback: TooManySlotsPolicy | None = None,
        segment_fn: SegmentFn | None = None,
        keep_gso: bool = True,
    ) -> None:
        self.fallback: TooManySlotsPolicy = fallback if fallback is not None else DropPolicy()
        self.segment_fn = segment_fn or _gso_segment_to_fit
        self.keep_gso = keep_gso
        self.name = "segment" if isinstance(self.fallback, DropPolicy) else f"segment+{self.fallback.name}"

    def _fall_back(self, skb: Skb, max_slots: int, source: PageSource, why: str) -> PolicyOutcome:
        out = self.fallback.apply(skb, max_slots, source)
        out.policy = self.name
        out.reason = f"{why}: {self.fallback.name}: {out.reason}"
        return out

    def apply(self, skb: Skb, max_slots: int, source: PageSource) -> PolicyOutcome:
        if fits(skb, max_slots):
            return _passthrough(self.name, skb)
        if skb.gso_type not in (GSO_TCPV4, GSO_TCPV6) or skb.gso_size <= 0:
            return self._fall_back(skb, max_slots, source, "not GSO")
        try:
            segs = self.segment_fn(skb, lambda s: fits(s, max_slots), source)
        except PlatformError as exc:
            return _drop(self.name, f"out of pages: {exc}")
        except ValueError as exc:  # gso.GsoError: not really TCP, inconsistent lengths, ...
            return self._fall_back(skb, max_slots, source, f"cannot segment ({exc})")
        if not segs or not all(fits(s, max_slots) for s in segs):
            for s in segs:
                s.free(source)
            return self._fall_back(skb, max_slots, source, "segments still do not fit")
        keep = [skb] if any(_borrows(s) for s in segs) else []
        reason = f"{_too_many(skb, max_slots)}: {len(segs)} segments"
        if self.keep_gso:
            regso = _restore_gso(skb, segs)
            if regso:
                reason += f", {regso} sent as GSO again"
        reported = getattr(segs, "bytes_copied", None)  # gso.Segments knows what it copied
        copied = reported if isinstance(reported, int) else sum(_owned_bytes(s) for s in segs)
        return PolicyOutcome(self.name, segs, copied, [count_slots(s) for s in segs], False, reason, keep)


def _restore_gso(parent: Skb, segs: list[Skb]) -> int:
    """Give segments with more than ``parent.gso_size`` payload bytes the parent's GSO state."""
    from ...packet.frames import MAX_HEADER_LEN, parse_l3l4

    hlen = parse_l3l4(parent.read(0, min(parent.len, MAX_HEADER_LEN)), headers_only=True).payload_off
    n = 0
    for s in segs:
        if s is not parent and s.len - hlen > parent.gso_size:
            s.gso_size, s.gso_type = parent.gso_size, parent.gso_type
            n += 1
    return n


class RelayoutPolicy:
    """Seed 002: copy the fewest bytes so the packet fits, keeping every piece that can stay."""

    name = "relayout"

    def plan(self, skb: Skb, max_slots: int) -> RelayoutPlan:
        return relayout_plan(skb.layout, max_slots, 1 + MAX_SKB_FRAGS)

    def apply(self, skb: Skb, max_slots: int, source: PageSource) -> PolicyOutcome:
        if fits(skb, max_slots):
            return _passthrough(self.name, skb)
        try:
            plan = self.plan(skb, max_slots)
        except NoPlan as exc:
            return _drop(self.name, str(exc))
        src = skb.bufs
        pages: list[Page] = []
        bufs: list[Buf] = []
        try:
            for b in plan.bufs:
                if isinstance(b, Kept):
                    bufs.append(shifted(src[b.src], b.skip, b.length))
                else:
                    page = source.alloc(b.order)
                    pages.append(page)
                    copy_range(src, b.pos, page.view[: b.length])
                    bufs.append(Buf(page, 0, b.length))
        except PlatformError as exc:
            for page in pages:
                source.free(page)
            return _drop(self.name, f"out of pages: {exc}")
        out = like(skb, bufs[0], bufs[1:], pages)
        keep = [skb] if any(isinstance(b, Kept) for b in plan.bufs) else []
        reason = f"{_too_many(skb, max_slots)}: relaid out, {len(pages)} of {len(bufs)} buffers copied"
        return PolicyOutcome(self.name, [out], plan.bytes_copied, [plan.slots], False, reason, keep)


class UnknownPolicy(ValueError):
    pass


_POLICIES: dict[str, Callable[[], TooManySlotsPolicy]] = {
    "drop": DropPolicy,
    "linearize": LinearizePolicy,
    "segment": SegmentPolicy,
    "segment+linearize": lambda: SegmentPolicy(LinearizePolicy()),
    "segment+relayout": lambda: SegmentPolicy(RelayoutPolicy()),
    "relayout": RelayoutPolicy,
}


def policy_names() -> list[str]:
    return list(_POLICIES)


def policy_for(name: str) -> TooManySlotsPolicy:
    """The too-many-slots policy called ``name`` (as written in configuration)."""
    try:
        make = _POLICIES[name.strip().lower()]
    except KeyError:
        raise UnknownPolicy(
            f"unknown too-many-slots policy {name!r}: choose one of {', '.join(_POLICIES)}"
        ) from None
    return make()
