"""A self-test of the xen platform on a real Xen domain, looped back to itself.

    python3 -m xennet.platform.xen.selftest            # as root, in dom0 (no domU needed)
    python3 -m xennet.platform.xen.selftest --list     # the checks
    python3 -m xennet.platform.xen.selftest --only grant-copy-batch --timeout 30

``XenPlatform(domid=d, peer_domid=d)`` grants its own memory (gntalloc) to itself, maps it
back (gntdev), grant-copies between the two, binds an event channel to itself, and talks
to xenstore both through /dev/xen/xenbus and through xenstored's socket.  Each check
prints one line, ``PASS``, ``FAIL`` or ``SKIP``, with what it saw; a check that fails
(or hangs past ``--timeout`` seconds) does not stop the others.  The last check tears the
platform down and wants ``accounting()`` back at zero.  The exit status is 1 when any
check failed, else 0.

It also runs in a domU (everything is looped back to the domain itself), where the
xenstored socket check is skipped when there is no socket.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType

from ...abi.grant_table import DOMID_SELF, GNTST_NAMES, GNTST_bad_copy_arg, GNTST_bad_gntref, GNTST_okay
from ...xenstore.client import Transaction, XenstoreClient
from ...xenstore.errors import XenstoreError
from ..base import PAGE_SIZE, Accounting, CopyPtr, GrantCopy, Page, PlatformError
from .device import DEV_DIR, SYS_HYPERVISOR_TYPE, hypervisor_type
from .gntalloc import GNTALLOC_LIMIT_PARAM, grefs_of, read_limit
from .platform import XenPlatform, detect_domid
from .xenbus import XENBUS_DEV_PAYLOAD_MAX, XenbusTransport

GNTDEV_LIMIT_PARAM = "/sys/module/xen_gntdev/parameters/limit"
XENSTORED_SOCKET = "/run/xenstored/socket"
DEFAULT_TIMEOUT = 20.0
BAD_REF = 0x0FFFFFF0  # beyond any grant table: Xen says GNTST_bad_gntref
NETFRONT_MIN_GRANTS = 2 + 256 + 256  # ring pages + a full rx ring + a full tx ring


SELFTEST_ARENA = 256  # pages: what the checks allocate, with room


class CheckFailed(Exception):
    """A check saw something wrong (the message says what)."""


class CheckSkipped(Exception):
    """A check does not apply here (the message says why)."""


class CheckTimeout(Exception):
    """A check ran past its time limit."""


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # "PASS", "FAIL" or "SKIP"
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}" if self.detail else f"{self.status} {self.name}"


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CheckTimeout in this (main) thread after ``seconds``: a blocking system call is
    interrupted, the handler raises, and the check unwinds."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise CheckTimeout(f"timed out after {seconds:g}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_check(name: str, fn: Callable[[], str | None], timeout: float) -> Result:
    """Run one check: PASS with what it returned, FAIL with what it raised, SKIP."""
    try:
        with time_limit(timeout):
            detail = fn()
    except CheckSkipped as e:
        return Result(name, "SKIP", str(e))
    except CheckTimeout as e:
        return Result(name, "FAIL", str(e))
    except CheckFailed as e:
        return Result(name, "FAIL", str(e))
    except Exception as e:  # noqa: BLE001 - every error of a check is its result
        return Result(name, "FAIL", f"{type(e).__name__}: {e}")
    return Result(name, "PASS", detail or "")


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def wait_ports(p: XenPlatform, want: set[int], seconds: float) -> set[int]:
    """The ports that came up pending within ``seconds`` (returns early once ``want`` is seen).
    Ports seen stay masked: the caller unmasks them."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while True:
        seen.update(p.evtchn.pending())
        remaining = deadline - time.monotonic()
        if (want and want <= seen) or remaining <= 0:
            return seen
        select.select([p.evtchn.fileno()], [], [], remaining)


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


class Selftest:
    """The checks, in order.  ``make_platform(domid)`` and ``make_xenbus()`` default to the
    real devices (tests pass stand-ins)."""

    def __init__(
        self,
        socket_path: str = XENSTORED_SOCKET,
        domid: int | None = None,
        *,
        make_platform: Callable[[int], XenPlatform] | None = None,
        make_xenbus: Callable[[], XenbusTransport] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.make_platform = make_platform or (
            lambda d: XenPlatform(domid=d, peer_domid=d, arena_frames=SELFTEST_ARENA)
        )
        self.make_xenbus = make_xenbus or XenbusTransport
        self.forced_domid = domid
        self.domid: int | None = domid
        self.platform: XenPlatform | None = None
        self.fds_before: int = -1
        self.checks: list[tuple[str, Callable[[], str | None]]] = [
            ("hypervisor", self.check_hypervisor),
            ("domid", self.check_domid),
            ("platform", self.check_platform),
            ("gntalloc-limit", self.check_gntalloc_limit),
            ("gntalloc-alloc", self.check_gntalloc_alloc),
            ("gntdev-map-rw", self.check_map_rw),
            ("gntdev-map-ro", self.check_map_ro),
            ("gntdev-map-bad-ref", self.check_map_bad_ref),
            ("grant-copy-batch", self.check_copy_batch),
            ("grant-copy-many", self.check_copy_many),
            ("evtchn-loopback", self.check_evtchn),
            ("xenstore-xenbus", self.check_xenstore_xenbus),
            ("xenstore-socket", self.check_xenstore_socket),
            ("teardown", self.check_teardown),
        ]

    # -- plumbing ---------------------------------------------------------------------------

    def need_platform(self) -> XenPlatform:
        if self.platform is None:
            raise CheckFailed("no platform (see the 'platform' check)")
        return self.platform

    def need_domid(self) -> int:
        if self.domid is None:
            raise CheckFailed("this domain's id is unknown (see the 'domid' check; or pass --domid)")
        return self.domid

    def run(self, only: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> list[Result]:
        results: list[Result] = []
        for name, fn in self.checks:
            if only and name not in only and name not in ("domid", "platform", "teardown"):
                continue
            result = run_check(name, fn, timeout)
            print(result.line(), flush=True)
            results.append(result)
        if self.platform is not None:  # teardown was not run or failed part-way
            with suppress(Exception):
                self.platform.close()
        return results

    # -- the checks -------------------------------------------------------------------------

    def check_hypervisor(self) -> str:
        hv = hypervisor_type(SYS_HYPERVISOR_TYPE)
        missing = [
            n for n in ("gntdev", "gntalloc", "evtchn", "xenbus") if not os.path.exists(f"{DEV_DIR}/{n}")
        ]
        expect(hv == "xen", f"{SYS_HYPERVISOR_TYPE} says {hv!r}, not 'xen'")
        expect(not missing, f"missing: {', '.join(f'{DEV_DIR}/{n}' for n in missing)}")
        expect(os.geteuid() == 0, "not root: the Xen devices need root")
        return f"xen, kernel {os.uname().release}, {DEV_DIR}/{{gntdev,gntalloc,evtchn,xenbus}} present"

    def check_domid(self) -> str:
        if self.forced_domid is not None:
            self.domid = self.forced_domid
            return f"d{self.domid} (from --domid)"
        self.domid = detect_domid(timeout=5.0)
        return f"d{self.domid}" + ("" if self.domid == 0 else " (not dom0: everything loops back to it)")

    def check_platform(self) -> str:
        domid = self.need_domid()
        self.fds_before = open_fds()
        self.platform = self.make_platform(domid)
        acc = self.platform.accounting()
        expect(acc == Accounting(0, 0, 0, 0), f"a new platform holds {acc}")
        return (
            f"XenPlatform(domid={domid}, peer_domid={domid}), gntalloc limit {self.platform.gntalloc_limit}"
        )

    def check_gntalloc_limit(self) -> str:
        limit = read_limit(GNTALLOC_LIMIT_PARAM)
        gntdev_limit = read_limit(GNTDEV_LIMIT_PARAM)
        expect(limit is not None, f"cannot read {GNTALLOC_LIMIT_PARAM}")
        assert limit is not None
        detail = (
            f"gntalloc limit {limit} pages for the whole domain (module default 1024; a 256-slot netfront "
            f"needs {NETFRONT_MIN_GRANTS} + its page cache + packets in flight), gntdev limit "
            f"{gntdev_limit} grants per map request"
        )
        expect(limit >= NETFRONT_MIN_GRANTS, detail)
        return detail

    def check_gntalloc_alloc(self) -> str:
        p = self.need_platform()
        base = p.accounting()
        fds = open_fds()
        pages: list[Page] = []
        try:
            for _ in range(32):
                pages.append(p.memory.alloc(0))
            pages.append(p.memory.alloc(2))
            fds_grown = open_fds() - fds
            expect(fds_grown <= 0, f"33 allocations opened {fds_grown} descriptors (one per mmap?)")
            refs = grefs_of(pages, p.xen_memory)
            expect(len(set(refs)) == 36, f"36 frames but {len(set(refs))} distinct grant refs")
            for page in pages:
                expect(page.view.nbytes == page.size, f"frame {page.frame}: view of {page.view.nbytes} bytes")
                expect(not any(page.view), f"frame {page.frame} is not zeroed")
                page.view[:4] = b"\xde\xad\xbe\xef"
                page.view[-1] = 0x5A
                expect(bytes(page.view[:4]) == b"\xde\xad\xbe\xef", f"frame {page.frame}: write lost")
            acc = p.accounting()
            expect(acc.pages == base.pages + 36, f"accounting has {acc.pages} pages, want {base.pages + 36}")
        finally:
            for page in pages:
                p.memory.free(page)
        acc = p.accounting()
        expect(acc == base, f"after freeing: {acc}, want {base}")
        return f"32 order-0 + 1 order-2 pages, grefs {min(refs)}..{max(refs)}, zeroed, no descriptor per mmap"

    def check_map_rw(self) -> str:
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        a, b = p.memory.alloc(1), p.memory.alloc(0)
        refs: list[int] = []
        try:
            for frame in (a.frame, a.frame + 1, b.frame):
                refs.append(p.grants.grant_access(d, frame, readonly=False))
            a.view[:] = pattern(1, a.size)
            b.view[:] = pattern(2, b.size)
            m = p.mapper.map(d, refs, writable=True)
            try:
                expect(p.accounting().maps == base.maps + 3, f"maps {p.accounting().maps}")
                expect(m.view.nbytes == 3 * PAGE_SIZE and not m.view.readonly, "the mapping's view is wrong")
                expect(
                    bytes(m.view[: 2 * PAGE_SIZE]) == bytes(a.view), "granted data not seen through the map"
                )
                expect(bytes(m.view[2 * PAGE_SIZE :]) == bytes(b.view), "third ref's page not seen")
                m.view[100:105] = b"hello"  # mapper -> granter
                expect(bytes(a.view[100:105]) == b"hello", "a write through the map did not reach the page")
                m.view[2 * PAGE_SIZE + 7 : 2 * PAGE_SIZE + 9] = b"xy"
                expect(bytes(b.view[7:9]) == b"xy", "a write through the map's third page was lost")
                a.view[PAGE_SIZE + 1 : PAGE_SIZE + 4] = b"abc"  # granter -> mapper, live
                expect(
                    bytes(m.view[PAGE_SIZE + 1 : PAGE_SIZE + 4]) == b"abc", "the map does not alias the page"
                )
            finally:
                p.mapper.unmap(m)
            expect(p.accounting().maps == base.maps, "maps not back after unmap")
            # the same grants map again after an unmap (gntdev gave the slot back)
            m2 = p.mapper.map(d, refs[:1], writable=True)
            try:
                expect(bytes(m2.view[100:105]) == b"hello", "a second map of the ref sees other data")
            finally:
                p.mapper.unmap(m2)
        finally:
            for ref in refs:
                p.grants.end_access(ref)
            p.memory.free(a)
            p.memory.free(b)
        expect(p.accounting() == base, f"after teardown: {p.accounting()}, want {base}")
        return "3 refs in one mapping, data both ways, live aliasing, remap after unmap"

    def check_map_ro(self) -> str:
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        page = p.memory.alloc(0)
        ref = p.grants.grant_access(d, page.frame, readonly=False)
        try:
            page.view[:3] = b"old"
            m = p.mapper.map(d, [ref], writable=False)
            try:
                expect(m.view.readonly, "a read-only map's view is writable")
                expect(bytes(m.view[:3]) == b"old", "granted data not seen")
                try:
                    m.view[0] = 1
                except TypeError:
                    pass
                else:
                    raise CheckFailed("a write to a read-only map did not raise")
                page.view[:3] = b"new"
                expect(bytes(m.view[:3]) == b"new", "a read-only map does not see the granter's writes")
            finally:
                p.mapper.unmap(m)
        finally:
            p.grants.end_access(ref)
            p.memory.free(page)
        expect(p.accounting() == base, f"after teardown: {p.accounting()}, want {base}")
        return "GNTMAP_readonly mapping: readonly view, sees the granter's writes"

    def check_map_bad_ref(self) -> str:
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        try:
            m = p.mapper.map(d, [BAD_REF], writable=False)
        except PlatformError as e:
            status = e.status
        else:
            p.mapper.unmap(m)
            raise CheckFailed(f"mapping ref {BAD_REF:#x} succeeded")
        expect(
            status == GNTST_bad_gntref, f"status {status} ({GNTST_NAMES.get(status or 0)}), want bad_gntref"
        )
        expect(p.accounting() == base, f"a failed map left {p.accounting()}")
        # gntdev still works afterwards
        page = p.memory.alloc(0)
        ref = p.grants.grant_access(d, page.frame, readonly=False)
        try:
            page.view[:2] = b"ok"
            m = p.mapper.map(d, [ref], writable=True)
            try:
                expect(bytes(m.view[:2]) == b"ok", "a good map after a failed one sees other data")
            finally:
                p.mapper.unmap(m)
        finally:
            p.grants.end_access(ref)
            p.memory.free(page)
        return f"ref {BAD_REF:#x}: PlatformError with GNTST_bad_gntref; gntdev fine afterwards"

    def check_copy_batch(self) -> str:
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        a, b, c = p.memory.alloc(0), p.memory.alloc(0), p.memory.alloc(0)
        refs: list[int] = []
        try:
            ra = p.grants.grant_access(d, a.frame, readonly=False)
            refs.append(ra)
            rb = p.grants.grant_access(d, b.frame, readonly=False)
            refs.append(rb)
            a.view[:] = pattern(3, PAGE_SIZE)
            c.view[:] = pattern(5, PAGE_SIZE)

            def gref(ref: int, off: int) -> CopyPtr:
                return CopyPtr(ref, d, off)

            def local(page: Page, off: int) -> CopyPtr:
                return CopyPtr(page.frame, DOMID_SELF, off, is_gref=False)

            before_c = bytes(c.view)
            ops = [
                GrantCopy(gref(ra, 10), local(c, 0), 100),  # grant -> local
                GrantCopy(local(c, 1000), gref(rb, 500), 200),  # local -> grant
                GrantCopy(gref(ra, 0), gref(rb, 2000), 64),  # grant -> grant
                GrantCopy(local(c, 1000), local(c, 3000), 10),  # local -> local (no kernel)
                GrantCopy(gref(BAD_REF, 0), local(c, 3500), 8),  # a bad ref fails alone
                GrantCopy(gref(ra, 4000), local(c, 0), 200),  # crosses a page: refused alone
                GrantCopy(gref(ra, 0), local(c, 0), 0),  # nothing
                GrantCopy(gref(ra, PAGE_SIZE - 16), local(c, 4080), 16),  # the last bytes of both
            ]
            statuses = p.mapper.copy(ops)
            want = [GNTST_okay] * 4 + [GNTST_bad_gntref, GNTST_bad_copy_arg, GNTST_okay, GNTST_okay]
            expect(statuses == want, f"statuses {statuses}, want {want}")
            av = bytes(a.view)
            expect(bytes(c.view[0:100]) == av[10:110], "grant -> local copied wrong data")
            expect(bytes(b.view[500:700]) == before_c[1000:1200], "local -> grant copied wrong data")
            expect(bytes(b.view[2000:2064]) == av[0:64], "grant -> grant copied wrong data")
            expect(bytes(c.view[3000:3010]) == before_c[1000:1010], "local -> local copied wrong data")
            expect(bytes(c.view[3500:3508]) == before_c[3500:3508], "the failed op wrote anyway")
            expect(bytes(c.view[4080:4096]) == av[PAGE_SIZE - 16 :], "the page-end copy is wrong")
            expect(not any(b.view[:500]), "bytes outside the copies changed")
        finally:
            for ref in refs:
                p.grants.end_access(ref)
            for page in (a, b, c):
                p.memory.free(page)
        expect(p.accounting() == base, f"after teardown: {p.accounting()}, want {base}")
        return "8 ops in one batch: grant<->local, grant->grant, local->local, bad ref, page crossing, empty"

    def check_copy_many(self) -> str:
        """More segments than gntdev's internal batch (16), and a local side that is not page aligned
        in the process's view of a compound page."""
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        src, dst = p.memory.alloc(0), p.memory.alloc(2)
        ref = p.grants.grant_access(d, src.frame, readonly=False)
        try:
            src.view[:] = pattern(11, PAGE_SIZE)
            n = 100
            ops = [
                GrantCopy(CopyPtr(ref, d, i * 40), CopyPtr(dst.frame + i % 4, DOMID_SELF, i * 37, False), 33)
                for i in range(n)
            ]
            statuses = p.mapper.copy(ops)
            expect(statuses == [GNTST_okay] * n, f"statuses {sorted(set(statuses))}")
            sv = bytes(src.view)
            for i in range(n):
                frame_off = (i % 4) * PAGE_SIZE + i * 37
                got = bytes(dst.view[frame_off : frame_off + 33])
                expect(got == sv[i * 40 : i * 40 + 33], f"op {i} copied wrong data")
        finally:
            p.grants.end_access(ref)
            p.memory.free(src)
            p.memory.free(dst)
        expect(p.accounting() == base, f"after teardown: {p.accounting()}, want {base}")
        return "100 segments in one ioctl into the 4 frames of an order-2 page"

    def check_evtchn(self) -> str:
        p = self.need_platform()
        d = self.need_domid()
        base = p.accounting()
        ev = p.evtchn
        a = ev.alloc_unbound(d)
        b: int | None = None
        pair = f"{a}<->?"
        notes: list[str] = []
        try:
            b = ev.bind_interdomain(d, a)
            pair = f"{a}<->{b}"
            expect(p.accounting().ports == base.ports + 2, f"ports {p.accounting().ports}")
            # Xen marks the binding end pending at once (lost notifications on the unbound
            # end are made up for): take that one first
            early = wait_ports(p, {b}, 1.0)
            expect(early <= {a, b}, f"ports {early} fired, not ours")
            notes.append(f"bind fired {sorted(early)}" if early else "bind fired nothing")
            for port in early:
                ev.unmask(port)
            ev.notify(b)
            seen = wait_ports(p, {a}, 3.0)
            expect(a in seen, f"notify on {b} did not raise {a} (saw {sorted(seen)})")
            if b in seen:  # the bind's own event, late
                ev.unmask(b)
            # a stays masked until unmasked: a second notify is held, then delivered
            ev.notify(b)
            held = wait_ports(p, set(), 0.5)
            expect(a not in held, f"port {a} fired again while masked")
            ev.unmask(a)
            again = wait_ports(p, {a}, 3.0)
            expect(a in again, f"the notify held while {a} was masked was lost on unmask")
            ev.unmask(a)
            ev.notify(a)
            back = wait_ports(p, {b}, 3.0)
            expect(b in back, f"notify on {a} did not raise {b}")
            ev.unmask(b)
            ev.close(b)
            b = None
            ev.close(a)
            try:
                ev.notify(a)
            except PlatformError:
                pass
            else:
                raise CheckFailed(f"notify on closed port {a} did not raise")
        finally:
            for left in (b, a):
                if left is not None:
                    with suppress(PlatformError):
                        ev.close(left)
        expect(p.accounting() == base, f"after teardown: {p.accounting()}, want {base}")
        return f"ports {pair} both ways, masked until unmask ({'; '.join(notes)})"

    def check_xenstore_xenbus(self) -> str:
        d = self.need_domid()
        xs = XenstoreClient(transport=self.make_xenbus(), timeout=5)
        try:
            detail = xenstore_suite(xs, d, "xenbus")
            # what only the device does
            base = f"/local/domain/{d}/data/xennet-selftest-{os.getpid()}-xenbus-big"
            value = "x" * (XENBUS_DEV_PAYLOAD_MAX + 1 - len(base) - 1)  # payload: path\0value
            try:
                xs.write(base, value)
            except XenstoreError as e:
                expect(e.errno_name == "E2BIG", f"an oversized request: {e.errno_name}, want E2BIG")
            else:
                xs.rm(base)
                raise CheckFailed("a request one byte over the device's buffer was accepted")
            try:
                xs.reset_watches()
            except XenstoreError as e:
                expect(e.errno_name == "ENOSYS", f"reset_watches: {e.errno_name}, want ENOSYS")
            else:
                raise CheckFailed("XS_RESET_WATCHES went to xenstored (it would drop the kernel's watches)")
            expect(xs.read_str("domid") == str(d), "the device stopped answering after the refusals")
        finally:
            xs.close()
        return detail + "; oversized request and XS_RESET_WATCHES refused"

    def check_xenstore_socket(self) -> str:
        d = self.need_domid()
        if not os.path.exists(self.socket_path):
            if d != 0:
                raise CheckSkipped(f"no {self.socket_path} in d{d}")
            raise CheckFailed(f"no {self.socket_path}: is xenstored running?")
        xs = XenstoreClient(self.socket_path, timeout=5)
        try:
            return xenstore_suite(xs, d, "socket")
        finally:
            xs.close()

    def check_teardown(self) -> str:
        p = self.need_platform()
        acc = p.accounting()
        deferred = p.xen_memory.deferred_unmaps + p.grant_mapper.deferred_unmaps
        self.platform = None
        p.close()
        expect(acc == Accounting(0, 0, 0, 0), f"the platform still held {acc} before close")
        expect(deferred == 0, f"{deferred} unmaps were deferred (a view outlived its page)")
        fds = open_fds()
        expect(
            fds == self.fds_before,
            f"{fds} descriptors open after close, {self.fds_before} before the platform",
        )
        return "accounting back to zero, devices closed, no descriptor left"


def xenstore_suite(xs: XenstoreClient, domid: int, label: str) -> str:
    """read/write/directory/watch/transaction/rm under this domain's data/ (removed after)."""
    base = f"/local/domain/{domid}/data/xennet-selftest-{os.getpid()}-{label}"
    token = f"xennet-selftest-{label}"
    with suppress(XenstoreError):
        xs.rm(base)
    try:
        expect(xs.read_str("domid") == str(domid), "'domid' (relative to the home path) is not ours")
        xs.write(f"{base}/a", "1")
        xs.write(f"{base}/b", "two")
        expect(xs.read_str(f"{base}/b") == "two", "read after write")
        expect(sorted(xs.directory(base)) == ["a", "b"], f"directory: {xs.directory(base)}")

        xs.watch(base, token)
        try:
            events = xs.read_watch_events(timeout=5)
            expect((base, token) in events, f"no initial watch event (got {events})")
            try:
                xs.watch(base, token)
            except XenstoreError as e:
                expect(e.errno_name == "EEXIST", f"a duplicate watch: {e.errno_name}, want EEXIST")
            else:
                raise CheckFailed("a duplicate watch was accepted (events would come twice)")
            xs.write(f"{base}/c", "3")
            events = wait_event(xs, (f"{base}/c", token), 5)
            expect((f"{base}/c", token) in events, f"no event for a write under the watch (got {events})")
        finally:
            xs.unwatch(base, token)
        try:
            xs.unwatch(base, token)
        except XenstoreError as e:
            expect(e.errno_name == "ENOENT", f"unwatch of no watch: {e.errno_name}, want ENOENT")
        else:
            raise CheckFailed("unwatch of a watch already gone succeeded")
        xs.read_watch_events(timeout=0.2)  # any still in flight
        xs.write(f"{base}/d", "4")
        late = xs.read_watch_events(timeout=0.5)
        expect(not late, f"events after unwatch: {late}")

        tx = xs.transaction()
        tx.write(f"{base}/t", "in-tx")
        expect(xs.try_read(f"{base}/t") is None, "a transaction's write was visible before commit")
        expect(tx.commit(), "an uncontended transaction did not commit")
        expect(xs.read_str(f"{base}/t") == "in-tx", "a committed write is missing")

        tx = xs.transaction()
        tx.write(f"{base}/u", "aborted")
        tx.abort()
        expect(xs.try_read(f"{base}/u") is None, "an aborted transaction's write is visible")

        tx = xs.transaction()
        tx.read(f"{base}/a")
        tx.write(f"{base}/a", "from-tx")
        xs.write(f"{base}/a", "outside")
        expect(not tx.commit(), "a conflicting transaction committed")
        expect(xs.read_str(f"{base}/a") == "outside", "a conflicting transaction's write landed")

        try:
            Transaction(xs, 0x7FFFFFF0).read(f"{base}/a")
        except XenstoreError as e:
            expect(e.errno_name == "ENOENT", f"an unknown transaction: {e.errno_name}, want ENOENT")
        else:
            raise CheckFailed("a request in an unknown transaction succeeded")

        xs.rm(base)
        expect(not xs.exists(base), "rm left the node")
    finally:
        with suppress(Exception):
            xs.rm(base)
    return (
        f"read/write/directory/watch (duplicate, unwatch)/transaction (commit, abort, conflict)/rm in {base}"
    )


def wait_event(xs: XenstoreClient, event: tuple[str, str], seconds: float) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    deadline = time.monotonic() + seconds
    while event not in got:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        got += xs.read_watch_events(timeout=remaining)
    return got


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m xennet.platform.xen.selftest",
        description="Self-test of the xen platform, looped back to this domain (run as root in dom0).",
    )
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per check")
    ap.add_argument("--socket", default=XENSTORED_SOCKET, help="xenstored's socket")
    ap.add_argument("--domid", type=int, default=None, help="this domain's id (default: ask xenstore)")
    ap.add_argument("--only", nargs="+", default=[], metavar="CHECK", help="run these (and setup/teardown)")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    args = ap.parse_args(argv)
    test = Selftest(args.socket, args.domid)
    names = [name for name, _ in test.checks]
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.only if n not in names]
    if unknown:
        ap.error(f"unknown checks {unknown}; --list shows them")
    results = test.run(args.only, args.timeout)
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
