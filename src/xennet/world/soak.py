"""``xennet soak``: one backend serving two guests for a long time, every byte checked.

Guest A runs pktgen with random layouts in chunks, one connection per chunk, cycling round
robin through every phase: each tx slot policy (with netback grant-copying and mapping) and
each rx packing x admission.  Guest B, in its own process at the same time, is hostile: it
writes malformed requests on its tx ring (bad grants, slot chains over the limit, zero-size
slots, bad GSO, index jumps, ...), is answered with errors or disconnected, and the
toolstack detaches and re-attaches it, round after round.  The toolstack samples the RSS of
all three domain processes; after the first full pass over the phases (warm-up: every pool
grown, every code path run once) the private memory must stay flat.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Literal

from ..abi import netif
from ..abi.ring import REQ_PROD
from ..netback.backend import Netback
from ..netback.interface import NetbackConfig, Vif
from ..netback.rxpolicy import ADMISSION_POLICIES, PACKING_POLICIES
from ..netback.tx import TxLimits
from ..netfront.device import Netfront, NetfrontConfig
from ..netfront.slotpolicy import policy_names
from ..packet.skb import Csum, Skb
from ..ports.pktgen import Generator, TrafficSpec, Verifier, random_layout
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState
from ..xenbus.toolstack import VifSpec
from .host.loop import DomainLoop, backend_events, frontend_events
from .sim.procs import _ctx
from .sim.toolstack import SimToolstack, open_domain

BACKEND, GUEST_A, GUEST_B = 0, 1, 2
MIB = 1 << 20
# Test-only fault injection: flip one payload byte in every Nth frame a sink receives, so the
# soak can be shown to catch corruption (tests/test_soak.py).  Never set in normal runs.
CORRUPT_ENV = "XENNET_SOAK_CORRUPT_EVERY"


@dataclass(frozen=True)
class Phase:
    direction: Literal["tx", "rx"]
    policy: str = "linearize"  # netfront too-many-slots policy (tx)
    data: Literal["copy", "map"] = "copy"  # netback tx data path
    packing: str = "full"  # netback rx packing (rx)
    admission: str = "fit-or-wait"  # netback rx admission (rx)
    ip: Literal[4, 6] = 4

    @property
    def name(self) -> str:
        if self.direction == "tx":
            return f"tx {self.policy} data={self.data} ipv{self.ip}"
        return f"rx {self.packing}/{self.admission} ipv{self.ip}"


def all_phases() -> tuple[Phase, ...]:
    """Every tx policy under both netback data paths, every rx packing x admission."""
    out: list[Phase] = []
    for policy in policy_names():
        for data in ("copy", "map"):
            out.append(Phase("tx", policy=policy, data=data))  # type: ignore[arg-type]
    for packing in sorted(PACKING_POLICIES):
        for admission in sorted(ADMISSION_POLICIES):
            out.append(Phase("rx", packing=packing, admission=admission))
    # both IP versions, spread so that no phase axis is tied to one of them
    return tuple(replace(p, ip=6 if i % 3 == 1 else 4) for i, p in enumerate(out))


@dataclass(frozen=True)
class SoakPlan:
    packets: int
    seed: int = 1
    chunk: int = 500  # packets per connection of guest A
    mss: int = 1448  # TCP GSO: the segment policies have something to re-segment
    rss_interval_s: float = 1.0
    # Why 16 MiB: after warm-up a domain process's private heap (RssAnon; domain memory is
    # shared and not in it) holds only bounded things -- each generator's and verifier's
    # pattern cache (<= 65 blocks of 4 KiB, 16 phases: ~4 MiB a side, full within the first
    # pass), counters with fixed keys, one ring's worth of in-flight skbs, error lists capped
    # at 20 -- plus allocator slack from 64 KiB frame copies (a few MiB).  Runs measure well
    # under 1 MiB.  A leak of one skb (~1 KiB of objects) a packet crosses 16 MiB within
    # ~16,000 packets, one 64-byte object a packet within ~260,000.
    rss_bound_mib: float = 16.0
    deadline_s: float = 0.0  # 0: 120 s plus 10 ms a packet (a tenth of the rate seen)
    nr_frames: int = 16384
    # guest A waits for guest B's rounds to keep up: at least one hostile round per this many
    # packets, and two in all (one answered, one disconnecting), however fast the traffic runs
    hostile_every: int = 2000
    phases: tuple[Phase, ...] = field(default_factory=all_phases)

    def __post_init__(self) -> None:
        if self.packets < 1 or self.chunk < 1 or self.hostile_every < 1:
            raise ValueError("soak: packets, chunk and hostile_every must be positive")
        if not self.deadline_s:
            object.__setattr__(self, "deadline_s", 120.0 + self.packets / 100)

    def hostile_rounds(self, packets_done: int) -> int:
        """Hostile rounds guest B must have finished before guest A goes past ``packets_done``."""
        if packets_done >= self.packets:
            return max(2, self.packets // self.hostile_every)
        return packets_done // self.hostile_every

    def chunks(self) -> list[tuple[int, int]]:
        """(phase index, packets) per connection: round robin, so every phase runs early and
        often; at least two passes when the packet count allows it."""
        per = max(1, min(self.chunk, self.packets // (2 * len(self.phases)) or 1))
        out: list[tuple[int, int]] = []
        left = self.packets
        i = 0
        while left > 0:
            n = min(per, left)
            out.append((i % len(self.phases), n))
            left -= n
            i += 1
        return out

    def spec(self, phase: int) -> TrafficSpec:
        # the phase index rides in the source MAC: the sink finds the frame's verifier by it
        p = self.phases[phase]
        return TrafficSpec(
            ip=p.ip,
            proto="tcp",
            mss=self.mss,
            seed=self.seed * 1000 + phase,
            src_mac=f"00:16:3e:{phase:02x}:00:01",
        )

    def layouts(self, chunk_no: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + chunk_no)


class _Sink:
    """Per-phase verification at the far end (bounded: coverage lists are not kept)."""

    def __init__(self, plan: SoakPlan) -> None:
        self.plan = plan
        self.verifiers: dict[int, Verifier] = {}
        self.received: Counter[int] = Counter()
        self.verified: Counter[int] = Counter()
        self.corrupted: Counter[int] = Counter()
        self.errors: list[str] = []
        every = os.environ.get(CORRUPT_ENV, "")
        self.corrupt_every = int(every) if every.isdigit() else 0
        self.n = 0

    def check(self, skb: Skb) -> None:
        frame = skb.data()
        phase = frame[9] if len(frame) > 9 else -1
        self.n += 1
        if self.corrupt_every and self.n % self.corrupt_every == 0:
            flip = bytearray(frame)
            flip[-1] ^= 0xFF
            frame = bytes(flip)
        if not 0 <= phase < len(self.plan.phases):
            self.received[-1] += 1
            self.corrupted[-1] += 1
            self._error(f"frame of no phase (source MAC byte {phase})")
            return
        v = self.verifiers.get(phase)
        if v is None:
            v = self.verifiers[phase] = Verifier(self.plan.spec(phase))
        self.received[phase] += 1
        ok = v.check(frame, partial=skb.csum is Csum.PARTIAL)
        v.tcp_covered.clear()  # a soak keeps no per-frame history
        if ok:
            self.verified[phase] += 1
        else:
            self.corrupted[phase] += 1
            self._error(f"phase {phase}: {v.errors[-1] if v.errors else '?'}")
            v.errors.clear()

    def _error(self, msg: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(msg)

    def report(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "verified": dict(self.verified),
            "corrupted": dict(self.corrupted),
            "errors": self.errors,
        }


@dataclass
class _Shared:
    """What the toolstack and the three domain processes coordinate through (shared memory)."""

    a_phase: Synchronized[int]  # phase of guest A's next/current connection
    a_chunk: Synchronized[int]  # its chunk number
    a_packets: Synchronized[int]  # packets guest A's chunks have completed (progress)
    rx_done: Synchronized[int]  # backend: chunk number whose rx packets are all on the ring
    rx_expect: Synchronized[int]  # ... and how many of them the guest is to receive
    b_attached: Synchronized[int]  # toolstack: rounds of guest B attached so far
    b_round_done: Synchronized[int]  # guest B: hostile rounds finished
    b_released: Synchronized[int]  # guest B: rounds whose netfront let go after the detach
    b_removed: Synchronized[int]  # backend: guest B vifs removed
    stop: Synchronized[int]  # toolstack: guest B starts no more rounds
    stop_backend: Synchronized[int]  # toolstack: both guests are done and detached

    @classmethod
    def create(cls) -> _Shared:
        return cls(**{f: _ctx.Value("q", 0) for f in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _front_drops(stats: dict[str, Any]) -> int:
    return sum(stats["tx_errors"].values())


def _vif_stats_sum(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up counters of vifs (a re-attached guest gets a new one each time)."""
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict):
                c = out.setdefault(k, {})
                for kk, vv in v.items():
                    c[kk] = c.get(kk, 0) + vv
            elif isinstance(v, int):
                out[k] = out.get(k, 0) + v
    return out


# --- the backend ---------------------------------------------------------------------------


def backend_main(world_path: str, plan: SoakPlan, sh: _Shared) -> dict[str, Any]:
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs, NetbackConfig())
        sink = _Sink(plan)
        hostile_accepted = 0
        b_vifs: dict[int, Vif] = {}
        # guest B's finished vifs, summed as they go: a list of every one grew the backend's
        # heap by ~1.7 KiB a round (18.9 MiB over the 10^7 run's 11,838 rounds)
        b_sum: dict[str, Any] = {}
        b_served = 0
        gens: dict[int, Generator] = {}
        chunks = plan.chunks()
        rx_chunk = -1  # the chunk whose packets we are producing
        rx_left = 0
        rx_rng = random.Random(0)
        rx_pending: Skb | None = None
        rx_generated: Counter[int] = Counter()
        rx_dropped_before = 0

        def vif_a() -> Vif | None:
            return next((v for v in back.vifs.values() if v.front_domid == GUEST_A), None)

        def sync_config() -> None:
            """Guest A's next connection gets its phase's netback configuration: set while
            the vif is down, before the watch that connects it is handled."""
            v = vif_a()
            if v is None or v.connected:
                return
            p = plan.phases[sh.a_phase.value]
            v.config = replace(
                v.config,
                tx_limits=TxLimits(data=p.data),
                rx_packing=p.packing,
                rx_admission=p.admission,
            )

        def on_watch(path: str, token: str) -> None:
            sync_config()
            back.on_watch(path, token)

        def take(vif: Vif, skb: Skb) -> None:
            nonlocal hostile_accepted
            if vif.front_domid == GUEST_A:
                sink.check(skb)
            else:
                hostile_accepted += 1  # well-formed enough to pass: nowhere to go

        loop = DomainLoop(platform, xs, on_watch, backend_events(back, take))
        try:
            back.start()
            while not sh.stop_backend.value:
                loop.run_once(0.0 if rx_left else 0.02)
                for v in list(back.vifs.values()):
                    v.flush_tx_responses()
                    v.kick_rx()
                    if v.front_domid == GUEST_B:
                        b_vifs.setdefault(id(v), v)
                live = {id(v) for v in back.vifs.values()}
                for key in [k for k in b_vifs if k not in live]:
                    b_sum = _vif_stats_sum([b_sum, b_vifs.pop(key).stats.as_dict()])
                    b_served += 1
                    sh.b_removed.value += 1
                # rx phases: produce the chunk guest A connected for
                a = vif_a()
                chunk = sh.a_chunk.value
                phase = sh.a_phase.value
                if a is not None and a.connected and plan.phases[phase].direction == "rx":
                    if chunk != rx_chunk:
                        rx_chunk, rx_left = chunk, chunks[chunk][1]
                        rx_rng = plan.layouts(chunk)
                        rx_dropped_before = sum(a.stats.rx_dropped.values())
                    g = gens.get(phase)
                    if g is None:
                        g = gens[phase] = Generator(plan.spec(phase))
                    while rx_left:
                        if rx_pending is None:
                            rx_pending = g.skb(random_layout(rx_rng), a.memory)
                        if not a.rx_would_take(rx_pending):
                            a.kick_rx()
                            break
                        a.send_to_guest(rx_pending)
                        rx_pending = None
                        a.kick_rx()
                        rx_left -= 1
                        rx_generated[phase] += 1
                    if not rx_left and sh.rx_done.value != chunk + 1 and a.rx is not None and not a.rx.queued:
                        dropped = sum(a.stats.rx_dropped.values()) - rx_dropped_before
                        sh.rx_expect.value = chunks[chunk][1] - dropped
                        sh.rx_done.value = chunk + 1
            if rx_pending is not None:
                rx_pending.release()
            report = back.report()
            back.stop()
            b_sum = _vif_stats_sum([b_sum, *(v.stats.as_dict() for v in b_vifs.values())])
            b_served += len(b_vifs)
            a_stats = next((r["stats"] for n, r in back.report().items() if n == f"vif{GUEST_A}.0"), {})
            if not a_stats:
                a_stats = next((r["stats"] for n, r in report.items() if n == f"vif{GUEST_A}.0"), {})
            return {
                "pid": os.getpid(),
                "sink": sink.report(),
                "rx_generated": dict(rx_generated),
                "vif_a": a_stats,
                "vif_b": b_sum,
                "b_vifs_served": b_served,
                "hostile_accepted": hostile_accepted,
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()


# --- guest A: pktgen through every phase ---------------------------------------------------


def _wait(
    loop: DomainLoop,
    cond: Callable[[], bool],
    deadline: float,
    what: str,
    why: Callable[[], str] | None = None,
) -> None:
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"soak: {what}" + (f": {why()}" if why is not None else ""))
        loop.run_once(0.05)


def _rx_drain(
    loop: DomainLoop,
    front: Netfront,
    sh: _Shared,
    chunk_no: int,
    received: Callable[[], int],
    start: int,
    before: dict[str, Any],
    deadline: float,
) -> None:
    """An rx chunk ends when the backend has put all of it on the ring and we have taken (or
    dropped, with a counter) every packet it put there."""
    _wait(loop, lambda: sh.rx_done.value == chunk_no + 1, deadline, f"chunk {chunk_no} rx")

    def drained() -> int:
        errors = sum(front.stats.rx_errors.values()) - sum(before["rx_errors"].values())
        return int(received() - start + errors)

    _wait(
        loop,
        lambda: drained() >= sh.rx_expect.value,
        deadline,
        f"chunk {chunk_no} rx drain",
        lambda: f"{drained()} of {sh.rx_expect.value}, stats {front.stats.as_dict()}",
    )


def _keep_pace(loop: DomainLoop, plan: SoakPlan, sh: _Shared, deadline: float) -> float:
    """Wait (disconnected, between chunks) until guest B's rounds keep up with our packets;
    returns the seconds waited."""
    need = plan.hostile_rounds(sh.a_packets.value)
    t = time.monotonic()
    _wait(
        loop,
        lambda: sh.b_round_done.value >= need,
        deadline,
        f"guest B's hostile rounds fell behind at packet {sh.a_packets.value}",
        lambda: f"{sh.b_round_done.value} of {need} rounds done, {sh.b_removed.value} vifs removed",
    )
    return time.monotonic() - t


def guest_a_main(world_path: str, paths: VifPaths, plan: SoakPlan, sh: _Shared) -> dict[str, Any]:
    with open_domain(world_path, GUEST_A) as (platform, xs):
        chunks = plan.chunks()
        first = plan.phases[chunks[0][0]]
        front = Netfront.for_vif(platform, xs, paths, NetfrontConfig(slot_policy=first.policy))
        sink = _Sink(plan)
        got = 0

        def take(skb: Skb) -> None:
            nonlocal got
            sink.check(skb)
            got += 1

        loop = DomainLoop(platform, xs, front.on_watch, frontend_events(front, take))

        def front_idle() -> bool:
            return front.tx is None or front.tx.in_flight == 0

        gens: dict[int, Generator] = {}
        generated: Counter[int] = Counter()
        ring: Counter[int] = Counter()  # packets netfront put on the ring, per phase
        drops: dict[int, Counter[str]] = {}
        policy: dict[int, Counter[str]] = {}  # the policy's counters, per phase
        deadline = time.monotonic() + plan.deadline_s
        t0 = time.perf_counter()
        try:
            paced = 0.0  # seconds guest A waited for guest B's rounds
            for chunk_no, (pi, count) in enumerate(chunks):
                paced += _keep_pace(loop, plan, sh, deadline)
                p = plan.phases[pi]
                # counted from here: rx packets may arrive while the handshake completes
                before, start = front.stats.as_dict(), got
                sh.a_phase.value, sh.a_chunk.value = pi, chunk_no
                front.config = replace(front.config, slot_policy=p.policy)
                if chunk_no == 0:
                    front.start()
                elif not front.reconnect():
                    raise RuntimeError(f"soak: reconnect refused in state {front.dev.state.name}")
                _wait(loop, lambda: front.connected or front.broken, deadline, f"chunk {chunk_no} connect")
                if front.broken:
                    raise RuntimeError(f"soak: guest A's vif broke: {xs.try_read(paths.frontend + '/error')}")
                if p.direction == "tx":
                    g = gens.get(pi)
                    if g is None:
                        g = gens[pi] = Generator(plan.spec(pi))
                    rng = plan.layouts(chunk_no)
                    sent = 0
                    pending: Skb | None = None
                    while sent < count:
                        if pending is None:
                            pending = g.skb(random_layout(rng), front.memory)
                        if front.send(pending):
                            pending = None
                            sent += 1
                            generated[pi] += 1
                            if sent % 32 == 0:
                                front.flush()
                            continue
                        front.flush()
                        if time.monotonic() > deadline:
                            raise TimeoutError("soak: tx stalled")
                        loop.run_once(0.05)
                    front.flush()
                    _wait(loop, front_idle, deadline, "completions")
                else:
                    _rx_drain(loop, front, sh, chunk_no, lambda: got, start, before, deadline)
                    generated[pi] += count
                after = front.stats.as_dict()
                key = "tx_packets" if p.direction == "tx" else "rx_packets"
                ring[pi] += int(after[key]) - int(before[key])  # type: ignore[call-overload]
                pol = policy.setdefault(pi, Counter())
                for k, v in after["tx_policy"].items():  # type: ignore[attr-defined]
                    pol[k] += v - before["tx_policy"].get(k, 0)  # type: ignore[attr-defined]
                d = drops.setdefault(pi, Counter())
                for group in ("tx_errors", "rx_errors"):
                    for k, v in after[group].items():  # type: ignore[attr-defined]
                        d[f"{group}:{k}"] += v - before[group].get(k, 0)  # type: ignore[attr-defined]
                sh.a_packets.value += count
                front.close()
                _wait(
                    loop,
                    lambda: (
                        front.dev.state == XenbusState.Closed
                        and xs.try_read(f"{paths.backend}/state") == str(int(XenbusState.Closed))
                    ),
                    deadline,
                    f"chunk {chunk_no} close",
                )
            seconds = time.perf_counter() - t0
            paced += _keep_pace(loop, plan, sh, deadline)
            _wait(loop, lambda: not front.pending_revoke or not front.retry_revoke(), deadline, "revoke")
            front.stop_watching()
            return {
                "pid": os.getpid(),
                "seconds": seconds,
                "paced_s": round(paced, 3),
                "generated": dict(generated),
                "ring": dict(ring),
                "drops": {k: {r: n for r, n in v.items() if n} for k, v in drops.items()},
                "policy": {k: {r: n for r, n in v.items() if n} for k, v in policy.items()},
                "sink": sink.report(),
                "stats": front.stats.as_dict(),
                "connections": len(chunks),
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()


# --- guest B: hostile ------------------------------------------------------------------------

HOSTILE_KINDS = (  # answered with errors and disconnecting ones, interleaved
    "bad_grant",  # a revoked ref: error response
    "fatal_slot_chain",  # 22 slots: disconnect
    "runt",  # shorter than an Ethernet header: error response
    "slot_crosses_page",  # disconnect
    "zero_size_slots",  # XSA-448: answered, never touched
    "endless_more_data",  # disconnect
    "slots_bigger_than_packet",
    "index_jump",  # XSA-39 req_prod far ahead: disconnect
    "over_slot_limit",  # 20 slots: error responses
    "bad_gso",  # UDP under a TCPv4 GSO extra: error response
    "gso_size_too_small",
)
FATAL = ("fatal_slot_chain", "slot_crosses_page", "endless_more_data", "index_jump")
FATAL_KINDS = frozenset(FATAL)


class _Hostile:
    """Guest B's raw tx requests, on pages it owns and grants (each round cleans up)."""

    def __init__(self, front: Netfront) -> None:
        self.front = front
        self.platform = front.platform
        self.refs: list[int] = []
        self.pages: list[Any] = []
        self.posted = 0  # data slots that want a response

    def _page(self, fill: bytes = b"") -> int:
        page = self.platform.memory.alloc(0)
        page.view[: len(fill)] = fill
        ref = self.platform.grants.grant_access(BACKEND, page.frame, readonly=True)
        self.pages.append(page)
        self.refs.append(ref)
        return ref

    def chain(self, slots: list[tuple[int, int]], flags0: int = 0) -> None:
        """A packet of (size, offset) slots, each on its own granted page."""
        assert self.front.tx is not None
        ring = self.front.tx.ring
        for i, (size, offset) in enumerate(slots):
            flags = (flags0 if i == 0 else 0) | (netif.NETTXF_more_data if i < len(slots) - 1 else 0)
            ring.put_request(self._page(bytes(64)), offset, flags, i + 1, size)
        self.posted += len(slots)

    def post(self, kind: str) -> None:
        from ..packet.frames import build_frame

        front = self.front
        assert front.tx is not None
        ring = front.tx.ring
        if kind == "bad_grant":
            ref = self._page()
            self.platform.grants.end_access(ref)  # revoked before the backend copies it
            self.refs.pop()
            self.platform.memory.free(self.pages.pop())
            ring.put_request(ref, 0, 0, 1, 100)
            self.posted += 1
        elif kind == "runt":
            self.chain([(10, 0)])
        elif kind == "zero_size_slots":
            self.chain([(60, 0)] + [(0, 0)] * 10)
        elif kind == "slots_bigger_than_packet":
            self.chain([(100, 0), (100, 0), (100, 0)])
        elif kind == "over_slot_limit":
            self.chain([(20 * 60, 0)] + [(60, 0)] * 19)
        elif kind in ("bad_gso", "gso_size_too_small"):
            proto: Literal["tcp", "udp"] = "udp" if kind == "bad_gso" else "tcp"
            frame = build_frame(ip=4, proto=proto, payload=bytes(range(256)) * 12).data
            gso_size = 1448 if kind == "bad_gso" else 1
            ring.put_request(
                self._page(frame), 0, netif.NETTXF_extra_info | netif.NETTXF_csum_blank, 7, len(frame)
            )
            ring.put_request_bytes(netif.gso_extra(gso_size, netif.XEN_NETIF_GSO_TYPE_TCPV4))
            self.posted += 1
        elif kind == "fatal_slot_chain":
            self.chain([(22 * 60, 0)] + [(60, 0)] * 21)
        elif kind == "slot_crosses_page":
            ring.put_request(self._page(), 4000, 0, 7, 200)
        elif kind == "endless_more_data":
            for i in range(25):
                ring.put_request(8, 0, netif.NETTXF_more_data, i, 100)
        elif kind == "index_jump":
            struct.pack_into("<I", front.tx.ring_page.view, REQ_PROD, 100_000)
            self.platform.evtchn.notify(front.tx_port)
            return
        ring.push_requests()
        self.platform.evtchn.notify(front.tx_port)

    def answered(self) -> Counter[str]:
        """Responses so far, by status (extra-info NULL responses left out)."""
        out: Counter[str] = Counter()
        tx = self.front.tx
        if tx is None:
            return out
        for _ in range(tx.ring.unconsumed_responses()):
            r = tx.ring.get_response()
            if r.status != netif.NETIF_RSP_NULL:
                out["okay" if r.status == netif.NETIF_RSP_OKAY else "error"] += 1
        return out

    def clean(self) -> int:
        """End our grants and free our pages; returns refs the backend still holds (kept)."""
        kept = 0
        refs, pages = self.refs, self.pages
        self.refs, self.pages = [], []
        for ref, page in zip(refs, pages, strict=False):
            if self.platform.grants.end_access(ref):
                self.platform.memory.free(page)
            else:
                kept += 1
                self.refs.append(ref)
                self.pages.append(page)
        return kept


def guest_b_main(world_path: str, paths: VifPaths, sh: _Shared, deadline_s: float) -> dict[str, Any]:
    with open_domain(world_path, GUEST_B) as (platform, xs):
        rounds: Counter[str] = Counter()
        responses: Counter[str] = Counter()
        saw_disconnect = 0
        deadline = time.monotonic() + deadline_s
        r = 0
        while not sh.stop.value:
            while sh.b_attached.value <= r and not sh.stop.value:
                time.sleep(0.01)  # a condition on a shared counter the toolstack bumps
            if sh.stop.value:
                break
            saw_disconnect += _hostile_round(platform, xs, paths, sh, r, deadline, rounds, responses)
            sh.b_released.value = r + 1
            r += 1
        return {
            "pid": os.getpid(),
            "rounds": r,
            "kinds": dict(rounds),
            "responses": dict(responses),
            "fatal_rounds": saw_disconnect,
            "accounting": asdict(platform.accounting()),
        }


def _hostile_round(
    platform: Any,
    xs: Any,
    paths: VifPaths,
    sh: _Shared,
    r: int,
    deadline: float,
    rounds: Counter[str],
    responses: Counter[str],
) -> int:
    """One attachment of guest B: connect, be hostile, be detached.  Returns disconnects."""
    front = Netfront.for_vif(platform, xs, paths)
    loop = DomainLoop(platform, xs, front.on_watch, lambda _port: None)  # we read the ring
    hostile = _Hostile(front)
    disconnects = 0
    try:
        front.start()
        _wait(loop, lambda: front.connected or front.broken, deadline, "guest B connect")
        # every answered kind on this connection; odd rounds end with a disconnecting one,
        # even rounds with the toolstack detaching a connected vif
        kinds = [k for k in HOSTILE_KINDS if k not in FATAL_KINDS]
        if r % 2:
            kinds.append(FATAL[(r // 2) % len(FATAL)])
        for kind in kinds:
            if front.tx is None:
                break
            rounds[kind] += 1
            got = _post_and_settle(loop, front, hostile, kind, deadline)
            responses.update(got)
            disconnects += kind in FATAL_KINDS
        sh.b_round_done.value = r + 1
        # the toolstack detaches us: our directory goes, netfront tears down
        _wait(loop, lambda: front.dev.gone() and front.tx is None, deadline, "guest B detach")
        _wait(
            loop,
            lambda: not hostile.clean() and (not front.pending_revoke or not front.retry_revoke()),
            deadline,
            "guest B grants back",
        )
        front.stop_watching()
    finally:
        loop.close()
    return disconnects


def _post_and_settle(
    loop: DomainLoop, front: Netfront, hostile: _Hostile, kind: str, deadline: float
) -> Counter[str]:
    """Post one hostile construction; wait for its answers, or for the disconnect it earns."""
    hostile.posted = 0
    hostile.post(kind)
    got: Counter[str] = Counter()

    def settled() -> bool:
        got.update(hostile.answered())
        if kind in FATAL_KINDS:
            return not front.backend_connected or front.tx is None
        return sum(got.values()) >= hostile.posted or front.tx is None

    _wait(loop, settled, deadline, f"guest B: {kind}")
    return got


# --- the toolstack: run it, drive guest B's attach cycle, sample RSS --------------------------


def _rss(pid: int | None) -> dict[str, int]:
    """RssAnon (the process's private heap: what a leak grows), RssShmem (domain memory it
    touched: bounded by the world's size) and VmRSS, in bytes."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


@dataclass
class SoakResult:
    plan: SoakPlan
    backend: dict[str, Any]
    guest_a: dict[str, Any]
    guest_b: dict[str, Any]
    rss: list[dict[str, Any]]
    accounting_after: dict[int, dict[str, int]]
    wall_s: float

    def rss_growth(self) -> dict[str, int]:
        """Per process: max RssAnon after warm-up minus RssAnon at the end of warm-up (the
        first full pass over the phases)."""
        warm = min(self.plan.packets, sum(n for _p, n in self.plan.chunks()[: len(self.plan.phases)]))
        after = [s for s in self.rss if s["packets"] >= warm]
        out: dict[str, int] = {}
        for proc in ("backend", "guest_a", "guest_b", "xenstored"):
            xs = [s[proc]["RssAnon"] for s in after if "RssAnon" in s.get(proc, {})]
            out[proc] = max(xs) - xs[0] if xs else 0
        return out

    def summary(self) -> dict[str, Any]:
        plan, a, b = self.plan, self.guest_a, self.backend
        per: dict[str, dict[str, Any]] = {}
        totals: Counter[str] = Counter()
        vif_a = b["vif_a"]
        for pi, phase in enumerate(plan.phases):
            tx = phase.direction == "tx"
            sink = b["sink"] if tx else a["sink"]
            gen = a["generated"].get(pi, 0)
            drops = a["drops"].get(pi, {})
            row = {
                "generated": gen,
                "on_ring": a["ring"].get(pi, 0),
                "received": sink["received"].get(pi, 0),
                "verified": sink["verified"].get(pi, 0),
                "corrupted": sink["corrupted"].get(pi, 0),
                "netfront_drops": drops,
            }
            if tx:
                row["policy"] = a["policy"].get(pi, {})
            per[phase.name] = row
            for k in ("generated", "on_ring", "received", "verified", "corrupted"):
                totals[f"{phase.direction}_{k}"] += row[k]
            totals[f"{phase.direction}_netfront_drops"] += sum(drops.values())
        # a policy that re-segments turns one packet into several: what reaches the ring is
        # what was generated, less dropped, less applied, plus what came out
        pol = a["stats"]["tx_policy"]

        def split(suffix: str) -> int:
            return sum(v for k, v in pol.items() if k.endswith(suffix))

        tx_expected_ring = (
            totals["tx_generated"] - split(":dropped") - split(":applied") + split(":packets_out")
        )
        backend_tx_drops = sum(vif_a.get("tx_errors", {}).values())
        backend_rx_drops = sum(vif_a.get("rx_dropped", {}).values())
        unaccounted_tx = (
            tx_expected_ring - totals["tx_received"] - backend_tx_drops - (totals["tx_netfront_drops"])
        )
        unaccounted_rx = (
            totals["rx_generated"] - totals["rx_received"] - backend_rx_drops - totals["rx_netfront_drops"]
        )
        growth = self.rss_growth()
        bound = int(plan.rss_bound_mib * MIB)
        problems: list[str] = []
        corrupted = totals["tx_corrupted"] + totals["rx_corrupted"]
        corrupted += b["sink"]["corrupted"].get(-1, 0) + a["sink"]["corrupted"].get(-1, 0)
        if corrupted:
            problems.append(
                f"{corrupted} corrupted frames: {(b['sink']['errors'] + a['sink']['errors'])[:3]}"
            )
        if unaccounted_tx or unaccounted_rx:
            problems.append(f"unaccounted packets: tx {unaccounted_tx}, rx {unaccounted_rx}")
        if tx_expected_ring != totals["tx_on_ring"]:
            problems.append(
                f"netfront put {totals['tx_on_ring']} packets on the ring, expected {tx_expected_ring}"
            )
        if totals["tx_generated"] + totals["rx_generated"] != plan.packets:
            problems.append(f"generated {totals['tx_generated'] + totals['rx_generated']} of {plan.packets}")
        held = {d: acct for d, acct in self.accounting_after.items() if any(acct.values())}
        for name, res in (("backend", b), ("guest A", a), ("guest B", self.guest_b)):
            if any(res["accounting"].values()):
                held[name] = res["accounting"]  # type: ignore[index]
        if held:
            problems.append(f"still held at the end: {held}")
        for proc, g in growth.items():
            if g > bound:
                problems.append(
                    f"{proc} RssAnon grew {g / MIB:.1f} MiB after warm-up (bound {plan.rss_bound_mib} MiB)"
                )
        fatal = b["vif_b"].get("fatal", {})
        if sum(fatal.values()) != self.guest_b["fatal_rounds"]:
            problems.append(
                f"the hostile guest ran {self.guest_b['fatal_rounds']} disconnecting rounds, "
                f"netback disconnected it {sum(fatal.values())} times"
            )
        need = plan.hostile_rounds(plan.packets)
        if self.guest_b["rounds"] < need:
            problems.append(f"the hostile guest ran {self.guest_b['rounds']} rounds, fewer than {need}")
        secs = a["seconds"] or float("nan")
        return {
            "ok": not problems,
            "problems": problems,
            "packets": plan.packets,
            "seed": plan.seed,
            "duration_s": self.wall_s,
            "traffic_s": a["seconds"],
            "paced_s": a["paced_s"],  # of traffic_s: guest A waiting for guest B's rounds
            "pps": plan.packets / secs,
            "sent": totals["tx_generated"] + totals["rx_generated"],
            "received": totals["tx_received"] + totals["rx_received"],
            "verified": totals["tx_verified"] + totals["rx_verified"],
            "corrupted": corrupted,
            "unaccounted": unaccounted_tx + unaccounted_rx,
            "drops": {
                "netfront": {k: v for pi in a["drops"] for k, v in a["drops"][pi].items()},
                "tx_policy_dropped": split(":dropped"),
                "backend_tx_errors": dict(vif_a.get("tx_errors", {})),
                "backend_rx_dropped": dict(vif_a.get("rx_dropped", {})),
            },
            "tx_expected_on_ring": tx_expected_ring,
            "connections_a": a["connections"],
            "per_phase": per,
            "hostile": {
                "rounds": self.guest_b["rounds"],
                "kinds": self.guest_b["kinds"],
                "responses": self.guest_b["responses"],
                "disconnects": sum(fatal.values()),
                "disconnect_reasons": fatal,
                "tx_errors": b["vif_b"].get("tx_errors", {}),
                "vifs_served": b["b_vifs_served"],
                "frames_accepted": b["hostile_accepted"],
            },
            "rss_growth_bytes": growth,
            "rss_bound_bytes": bound,
            "rss_samples": self.rss,
            "accounting_after": {str(k): v for k, v in self.accounting_after.items()},
            "accounting_at_exit": {
                "backend": b["accounting"],
                "guest_a": a["accounting"],
                "guest_b": self.guest_b["accounting"],
            },
        }


def run_soak(plan: SoakPlan, on_progress: Callable[[int], None] | None = None) -> SoakResult:
    t0 = time.monotonic()
    sh = _Shared.create()
    paths_a = VifPaths(GUEST_A, BACKEND, 0)
    paths_b = VifPaths(GUEST_B, BACKEND, 0)
    rss: list[dict[str, Any]] = []
    with SimToolstack("xennet-soak-") as ts:
        assert ts.xs is not None
        for d in (BACKEND, GUEST_A, GUEST_B):
            ts.domain(d, plan.nr_frames)
        ts.attach(paths_a, VifSpec(mac="00:16:3e:00:00:01"))
        ts.attach(paths_b, VifSpec(mac="00:16:3e:00:00:02"))
        sh.b_attached.value = 1
        back = ts.start("soak-backend", backend_main, ts.path, plan, sh)
        guest_a = ts.start("soak-guest-a", guest_a_main, ts.path, paths_a, plan, sh)
        guest_b = ts.start("soak-guest-b", guest_b_main, ts.path, paths_b, sh, plan.deadline_s)
        procs = {"guest_a": guest_a, "guest_b": guest_b, "backend": back}
        b_round, detached = 0, False
        end = time.monotonic() + plan.deadline_s + 60
        next_sample = 0.0

        def sample() -> None:
            rss.append(
                {
                    "t": round(time.monotonic() - t0, 2),
                    "packets": sh.a_packets.value,
                    **{name: _rss(p.pid) for name, p in procs.items()},
                    "xenstored": _rss(ts.daemon.pid),  # every attach, watch and detach goes through it
                }
            )

        def drive_b() -> None:
            """Guest B's cycle: detach after each hostile round, re-attach once both ends let go."""
            nonlocal b_round, detached
            if not detached and sh.b_round_done.value == b_round + 1:
                ts.detach(paths_b)
                detached = True
            if detached and sh.b_released.value == b_round + 1 and sh.b_removed.value == b_round + 1:
                detached = False
                b_round += 1
                if not sh.stop.value:
                    ts.attach(paths_b, VifSpec(mac="00:16:3e:00:00:02"))
                    sh.b_attached.value = b_round + 1

        # guest A first; then guest B finishes its round; then the backend
        for stage in ("guest_a", "guest_b", "backend"):
            if stage == "guest_b":
                sh.stop.value = 1
            if stage == "backend":
                ts.detach(paths_b)
                ts.detach(paths_a)
                sh.stop_backend.value = 1
            while not procs[stage].poll():
                if time.monotonic() > end:
                    raise TimeoutError(f"soak: {stage} did not finish")
                for later in list(procs)[list(procs).index(stage) + 1 :]:
                    if procs[later].poll():
                        procs[later].result(1)  # died early: raise with its traceback
                        raise RuntimeError(f"soak: {later} stopped before {stage}")
                drive_b()
                now = time.monotonic()
                if now >= next_sample:
                    sample()
                    next_sample = now + plan.rss_interval_s
                    if on_progress is not None:
                        on_progress(sh.a_packets.value)
                connection.wait([p.proc.sentinel for p in procs.values()], timeout=0.02)
        sample()
        a = guest_a.result(5)
        gb = guest_b.result(5)
        b = back.result(30)
        ts.xs.release(GUEST_A)
        ts.xs.release(GUEST_B)
        return SoakResult(
            plan, b, a, gb, rss, ts.accounting(BACKEND, GUEST_A, GUEST_B), time.monotonic() - t0
        )
