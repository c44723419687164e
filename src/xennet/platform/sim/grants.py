"""Grant tables: the granting side (gnttab) and the using side (gntdev map/unmap, grant copy).

Entries are checked the way Xen's ``map_grant_ref`` / ``gnttab_copy`` check them, with
the same GNTST_* codes.  Everything that reads an entry and then relies on it (pin,
copy) or changes an entry someone else may be using (end_access) holds the granter's
LOCK_GRANT.  ``grant_access`` does not: it fills a free entry (nobody may use it) and
publishes it with a single byte store of the flags, after domid and frame.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Sequence

from ...abi.grant_table import (
    DOMID_SELF,
    ENTRY,
    GNTST_NAMES,
    GNTTAB_NR_RESERVED_ENTRIES,
    GNTST_bad_domain,
    GNTST_general_error,
    GNTST_no_device_space,
    GNTST_okay,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_type_mask,
    GTF_writing,
)
from ...core import kernels
from ...core.vec import buffer_address
from ..base import PAGE_SIZE, GrantCopy, PlatformError, copy_by_segments, grant_all_or_none
from .layout import (
    ACTIVE,
    ACTIVE_CODEC,
    LOCK_GRANT,
    MAPTRACK,
    MAPTRACK_CODEC,
    MT_INUSE,
    MT_PINNED,
    MT_WRITABLE,
)
from .shm import DomainFile

DOMID_FIRST_RESERVED = 0x7FF0
_U16 = struct.Struct("<H")
_DOMID_FRAME = struct.Struct("<HI")  # grant_entry_v1 after flags
_ENTRY_SIZE = ENTRY.size


class Domains:
    """A platform's open files of other domains, looked up by domid (DOMID_SELF is us).

    A cached file marked destroyed is re-opened by path, so a domain re-created under the
    same domid is found; the old file stays open for mappings that still point into it.
    """

    def __init__(self, world_path: str, own: DomainFile) -> None:
        self.world_path = world_path
        self.own = own
        self._cache: dict[int, DomainFile] = {}
        self._stale: list[DomainFile] = []

    def get(self, domid: int) -> DomainFile | None:
        if domid == DOMID_SELF or domid == self.own.domid:
            return self.own
        df = self._cache.get(domid)
        if df is not None:
            if not df.destroyed:
                return df
            del self._cache[domid]
            self._stale.append(df)
        if not 0 <= domid < DOMID_FIRST_RESERVED:
            return None
        try:
            df = DomainFile(f"{self.world_path}/d{domid}.mem", domid)
        except FileNotFoundError:
            return None
        if df.destroyed:
            df.close()
            return None
        self._cache[domid] = df
        return df

    def close(self) -> None:
        for df in [*self._cache.values(), *self._stale]:
            df.close()
        self._cache.clear()
        self._stale.clear()

    def abandon(self) -> None:
        for df in [*self._cache.values(), *self._stale]:
            df.abandon()


def check_grant(df: DomainFile, ref: int, domid: int, write: bool) -> tuple[int, int]:
    """(GNTST status, frame) for ``domid`` using ``ref`` of ``df``'s grant table: the rule the
    grant-copy executor applies too (``core`` ``grant_check``)."""
    return kernels.grant_check(df.grant_table, ref, domid, write, df.nr_frames)  # type: ignore[no-any-return]


def pin(df: DomainFile, ref: int, writable: bool) -> bool:
    """Take a map pin on a checked entry (caller holds df's LOCK_GRANT); False on overflow."""
    aoff = df.active_off + ref * ACTIVE.size
    count, wcount = ACTIVE_CODEC.unpack_from(df.buf, aoff)
    if count == 0xFFFF:
        return False
    ACTIVE_CODEC.pack_into(df.buf, aoff, count + 1, wcount + writable)
    goff = df.grant_off + ref * _ENTRY_SIZE
    flags = _U16.unpack_from(df.buf, goff)[0]
    _U16.pack_into(df.buf, goff, flags | GTF_reading | (GTF_writing if writable else 0))
    return True


def unpin(df: DomainFile, ref: int, writable: bool) -> None:
    """Drop a map pin (caller holds df's LOCK_GRANT); the entry's reading/writing go with the last."""
    aoff = df.active_off + ref * ACTIVE.size
    count, wcount = ACTIVE_CODEC.unpack_from(df.buf, aoff)
    if count == 0:
        return
    count -= 1
    wcount = max(0, wcount - writable)
    ACTIVE_CODEC.pack_into(df.buf, aoff, count, wcount)
    goff = df.grant_off + ref * _ENTRY_SIZE
    flags = _U16.unpack_from(df.buf, goff)[0]
    if wcount == 0:
        flags &= ~GTF_writing
    if count == 0:
        flags &= ~GTF_reading
    _U16.pack_into(df.buf, goff, flags)


class SimGrantTable:
    """Our own grant table (what Linux's gnttab_grant_foreign_access / gntalloc do)."""

    def __init__(self, df: DomainFile) -> None:
        self._df = df
        n = df.nr_grant_entries
        gt = bytes(df.buf[df.grant_off : df.grant_off + n * _ENTRY_SIZE])
        act = bytes(df.buf[df.active_off : df.active_off + n * ACTIVE.size])
        # FIFO reuse: a stale ref held by a buggy peer is less likely to hit a fresh grant
        self._free: deque[int] = deque(
            ref
            for ref in range(GNTTAB_NR_RESERVED_ENTRIES, n)
            if gt[ref * _ENTRY_SIZE] == 0 and ACTIVE_CODEC.unpack_from(act, ref * ACTIVE.size)[0] == 0
        )

    def grant_access(self, domid: int, frame: int, readonly: bool) -> int:
        df = self._df
        if not 0 <= domid < DOMID_FIRST_RESERVED:
            raise PlatformError(f"grant_access: bad domid {domid}")
        if not 0 <= frame < df.nr_frames:
            raise PlatformError(f"grant_access: frame {frame} outside domain {df.domid}'s memory")
        try:
            ref = self._free.popleft()
        except IndexError:
            raise PlatformError(f"domain {df.domid}: grant table full") from None
        off = df.grant_off + ref * _ENTRY_SIZE
        df.buf[off + 1] = 0  # flags' high byte (sub-page, transitive bits): none here
        _DOMID_FRAME.pack_into(df.buf, off + 2, domid, frame)
        df.buf[off] = GTF_permit_access | (GTF_readonly if readonly else 0)  # publish
        return ref

    def grant_many(self, domid: int, frames: Sequence[int], readonly: bool) -> list[int]:
        return grant_all_or_none(self, domid, frames, readonly)

    def end_many(self, refs: Sequence[int]) -> list[int]:
        """One LOCK_GRANT for the batch; returns the refs the peer still maps."""
        df = self._df
        offs = [self._check_ref(ref) for ref in refs]
        kept: list[int] = []
        ended: list[int] = []
        df.lock(LOCK_GRANT)
        try:
            for ref, off in zip(refs, offs, strict=True):
                flags = _U16.unpack_from(df.buf, off)[0]
                if flags & GTF_type_mask != GTF_permit_access:
                    raise PlatformError(f"end_access: grant ref {ref} is not in use")
                if flags & (GTF_reading | GTF_writing) or self._pins(ref):
                    kept.append(ref)
                    continue
                ENTRY.pack_into(df.buf, off, 0, 0, 0)
                ended.append(ref)
        finally:
            df.unlock(LOCK_GRANT)
            self._free.extend(ended)
        return kept

    def _check_ref(self, ref: int) -> int:
        if not GNTTAB_NR_RESERVED_ENTRIES <= ref < self._df.nr_grant_entries:
            raise PlatformError(f"grant ref {ref} out of range")
        return self._df.grant_off + ref * _ENTRY_SIZE

    def end_access(self, ref: int) -> bool:
        df = self._df
        off = self._check_ref(ref)
        df.lock(LOCK_GRANT)
        try:
            flags = _U16.unpack_from(df.buf, off)[0]
            if flags & GTF_type_mask != GTF_permit_access:
                raise PlatformError(f"end_access: grant ref {ref} is not in use")
            if flags & (GTF_reading | GTF_writing) or self._pins(ref):
                return False
            ENTRY.pack_into(df.buf, off, 0, 0, 0)
        finally:
            df.unlock(LOCK_GRANT)
        self._free.append(ref)
        return True

    def _pins(self, ref: int) -> int:
        return int(ACTIVE_CODEC.unpack_from(self._df.buf, self._df.active_off + ref * ACTIVE.size)[0])

    def is_mapped(self, ref: int) -> bool:
        off = self._check_ref(ref)
        return bool(_U16.unpack_from(self._df.buf, off)[0] & (GTF_reading | GTF_writing) or self._pins(ref))


class SimMapping:
    """Granted frames of ``domid`` mapped here.  ``pages[i]`` is ref i's page; ``view`` spans
    them all when the granter's frames are contiguous (always for a single ref)."""

    def __init__(
        self,
        df: DomainFile,
        refs: tuple[int, ...],
        writable: bool,
        frames: tuple[int, ...],
        handles: tuple[int, ...],
    ) -> None:
        self._df = df
        self._domid = df.domid
        self._refs = refs
        self._writable = writable
        self.frames = frames
        self.handles = handles
        self.live = True
        self.owner: object = None  # the SimGrantMapper whose maptrack holds ``handles``

        def ro(v: memoryview) -> memoryview:
            return v if writable else v.toreadonly()

        self.pages = tuple(ro(df.mem[f * PAGE_SIZE : (f + 1) * PAGE_SIZE]) for f in frames)
        if len(frames) == 1:
            self._view: memoryview | None = self.pages[0]
        elif all(f == frames[0] + i for i, f in enumerate(frames)):
            self._view = ro(df.mem[frames[0] * PAGE_SIZE : (frames[0] + len(frames)) * PAGE_SIZE])
        else:
            self._view = None

    @property
    def domid(self) -> int:
        return self._domid

    @property
    def refs(self) -> tuple[int, ...]:
        return self._refs

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise PlatformError(
                f"refs {self._refs} of domain {self._domid} are not contiguous frames: use .pages"
            )
        return self._view

    def _release_views(self) -> None:
        # use after unmap must fail, as it would fault on real Xen
        for v in (*self.pages, *((self._view,) if self._view is not None else ())):
            try:
                v.release()
            except BufferError:
                pass


class SimGrantMapper:
    """gntdev: map other domains' grants, and run batches of grant copies."""

    def __init__(self, own: DomainFile, domains: Domains) -> None:
        self._own = own
        self._domains = domains
        self._mt_off = own.layout.maptrack_off
        mt = bytes(own.buf[self._mt_off : self._mt_off + MAPTRACK.size * own.layout.nr_maptrack])
        self._mt_free: deque[int] = deque(
            h
            for h in range(own.layout.nr_maptrack)
            if not MAPTRACK_CODEC.unpack_from(mt, h * MAPTRACK.size)[1] & MT_INUSE
        )
        self._lock = threading.Lock()  # maptrack free list vs threads
        self._base = buffer_address(own.mem)

    # -- map / unmap ------------------------------------------------------------------

    def map(self, domid: int, refs: Sequence[int], writable: bool) -> SimMapping:
        refs = tuple(refs)
        if not refs:
            raise PlatformError("map: no grant refs", status=GNTST_general_error)
        df = self._domains.get(domid)
        if df is None:
            raise PlatformError(f"map: no domain {domid}", status=GNTST_bad_domain)
        me = self._own.domid
        frames: list[int] = []
        handles: list[int] = []
        df.lock(LOCK_GRANT)
        try:
            for ref in refs:
                st, frame = check_grant(df, ref, me, writable)
                if st == GNTST_okay:
                    st = self._pin_tracked(df, ref, writable, handles)
                if st != GNTST_okay:
                    self._unpin_tracked(df, refs, writable, handles)
                    raise PlatformError(f"map ref {ref} of domain {df.domid}: {GNTST_NAMES[st]}", status=st)
                frames.append(frame)
        finally:
            df.unlock(LOCK_GRANT)
        mapping = SimMapping(df, refs, writable, tuple(frames), tuple(handles))
        mapping.owner = self
        return mapping

    def _pin_tracked(self, df: DomainFile, ref: int, writable: bool, handles: list[int]) -> int:
        # Record in maptrack before pinning, mark PINNED after: if we die in between, the
        # toolstack only releases pins that were really taken.
        with self._lock:
            if not self._mt_free:
                return GNTST_no_device_space
            h = self._mt_free.popleft()
        moff = self._mt_off + h * MAPTRACK.size
        flags = MT_INUSE | (MT_WRITABLE if writable else 0)
        MAPTRACK_CODEC.pack_into(self._own.buf, moff, df.domid, flags, ref)
        if not pin(df, ref, writable):
            self._mt_release(h)
            return GNTST_general_error  # pin count overflow
        MAPTRACK_CODEC.pack_into(self._own.buf, moff, df.domid, flags | MT_PINNED, ref)
        handles.append(h)
        return GNTST_okay

    def _unpin_tracked(self, df: DomainFile, refs: Sequence[int], writable: bool, handles: list[int]) -> None:
        for ref, h in zip(refs[: len(handles)], handles, strict=True):
            unpin(df, ref, writable)
            self._mt_release(h)

    def _mt_release(self, h: int) -> None:
        MAPTRACK_CODEC.pack_into(self._own.buf, self._mt_off + h * MAPTRACK.size, 0, 0, 0)
        with self._lock:
            self._mt_free.append(h)

    def unmap(self, mapping: object) -> None:
        if not isinstance(mapping, SimMapping) or not mapping.live or mapping.owner is not self:
            raise PlatformError("unmap: not a live mapping of this platform")
        mapping.live = False
        mapping._release_views()
        df = mapping._df
        df.lock(LOCK_GRANT)
        try:
            self._unpin_tracked(df, mapping.refs, mapping.writable, list(mapping.handles))
        finally:
            df.unlock(LOCK_GRANT)

    # -- grant copy ------------------------------------------------------------------

    def copy(self, ops: Sequence[GrantCopy]) -> list[int]:
        return copy_by_segments(self, ops, self._own.domid, self._frame_address)

    def _frame_address(self, frame: int) -> int | None:
        return self._base + frame * PAGE_SIZE if 0 <= frame < self._own.nr_frames else None

    def copy_segments(self, segs: bytearray, count: int) -> int:
        """One LOCK_GRANT per granting domain for the whole batch, taken in domid order (no
        deadlock between batches); the copies run under it, so a grant cannot be ended and
        its frame reused in the middle of a copy.  The executor is the core's."""
        me = self._own.domid
        domains: list[tuple[int, memoryview, memoryview]] = []
        locked: list[DomainFile] = []
        try:
            for d in kernels.segment_domids(segs, count, me):
                df = self._domains.get(d)
                if df is None:
                    continue  # not a domain: the executor says bad_domain
                df.lock(LOCK_GRANT)
                locked.append(df)
                domains.append((d, df.grant_table, df.mem))
            return int(kernels.grant_copy(segs, count, me, self._own.mem, self._base, domains))
        finally:
            for df in reversed(locked):
                df.unlock(LOCK_GRANT)


def release_maptrack(own: DomainFile, domains: Domains) -> None:
    """Toolstack, for a dead domain: drop every pin it still holds on other domains' grants."""
    lay = own.layout
    for h in range(lay.nr_maptrack):
        moff = lay.maptrack_off + h * MAPTRACK.size
        gdomid, flags, ref = MAPTRACK_CODEC.unpack_from(own.buf, moff)
        if not flags & MT_INUSE:
            continue
        if flags & MT_PINNED:
            gdf = domains.get(gdomid)
            if gdf is not None and ref < gdf.nr_grant_entries:
                gdf.lock(LOCK_GRANT)
                try:
                    unpin(gdf, ref, bool(flags & MT_WRITABLE))
                finally:
                    gdf.unlock(LOCK_GRANT)
        MAPTRACK_CODEC.pack_into(own.buf, moff, 0, 0, 0)
