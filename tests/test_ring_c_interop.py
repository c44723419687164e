"""xennet.ring against the real ring.h macros, across processes, on one shared page.

``tests/c/ring_peer.c`` plays the front, the back or both ends of a netif tx or rx
ring with ``DEFINE_RING_TYPES`` and the ring.h macros; ``xennet.ring`` plays the
other end here.  A seeded script (random batch sizes, partial consumption, pushes
and final checks at random points) is run three ways, in lockstep over pipes:

- C front + C back (one process; the reference),
- Python front + C back,
- C front + Python back.

Every notify decision, final-check result, count and shared-header snapshot is
logged; the three logs must be identical, and every request and response field
must match what its sequence number says (each end checks what it reads).
"""

from __future__ import annotations

import mmap
import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from xennet.abi import netif
from xennet.abi.ring import PAGE_SIZE, REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD
from xennet.ring import BackRing, FrontRing, RingOverflow

C_DIR = Path(__file__).parent / "c"
M32 = 0xFFFFFFFF
FRONT_OPS = {"P", "p", "G", "F", "e", "U", "f", "D", "XF"}
BACK_OPS = {"C", "R", "r", "B", "E", "u", "XB"}


# --- payloads: the same function of the sequence number as ring_peer.c ---------


def mix(s: int) -> int:
    x = (((s + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 32
    x ^= x >> 13
    x = (x * 0x85EBCA6B) & M32
    return x ^ (x >> 16)


def s16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def req_words(s: int) -> tuple[int, int]:
    return mix(2 * s), mix(2 * s + 1)


def rsp_words(s: int) -> tuple[int, int]:
    return mix(2 * s + (1 << 40)), mix(2 * s + 1 + (1 << 40))


def tx_req(s: int) -> netif.TxRequest:
    w0, w1 = req_words(s)
    size = (w0 ^ w1) & 0xFFFF
    return netif.TxRequest(gref=w0, offset=w1 & 0xFFFF, flags=w1 >> 16, id=s & 0xFFFF, size=size)


def tx_rsp(s: int) -> netif.TxResponse:
    return netif.TxResponse(id=s & 0xFFFF, status=s16(rsp_words(s)[0]))


def rx_req(s: int) -> netif.RxRequest:
    return netif.RxRequest(id=s & 0xFFFF, gref=req_words(s)[0])


def rx_rsp(s: int) -> netif.RxResponse:
    r0, r1 = rsp_words(s)
    return netif.RxResponse(id=s & 0xFFFF, offset=r0 & 0xFFFF, flags=r0 >> 16, status=s16(r1))


@dataclass(frozen=True)
class Kind:
    req: struct.Struct
    rsp: struct.Struct
    req_type: Any
    rsp_type: Any
    make_req: Callable[[int], NamedTuple]
    make_rsp: Callable[[int], NamedTuple]


KINDS = {
    "tx": Kind(netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse, tx_req, tx_rsp),
    "rx": Kind(netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse, rx_req, rx_rsp),
}


def test_payload_mix_is_pinned() -> None:
    # Pins mix() so a change here and not in ring_peer.c shows up as a clear failure.
    assert [mix(s) for s in range(4)] == [0xACB1C067, 0x32A696B1, 0x51EA3B1F, 0x654D2D63]


# --- the Python end -----------------------------------------------------------


class PyEnd:
    """One end of the ring in Python, taking the same commands as ring_peer."""

    def __init__(self, kind: Kind, page: memoryview, role: str, start: int) -> None:
        self.kind = kind
        self.page = page
        self.start = start
        self.sent = self.got = self.consumed = self.responded = 0
        self.front: FrontRing[Any, Any] | None = None
        self.back: BackRing[Any, Any] | None = None
        if role == "front":
            self.front = FrontRing(page, kind.req, kind.rsp, kind.req_type, kind.rsp_type)
            if start:  # FRONT_RING_ATTACH at ``start``, the shared indices moved with it
                for off, value in [
                    (REQ_PROD, start),
                    (RSP_PROD, start),
                    (REQ_EVENT, start + 1),
                    (RSP_EVENT, start + 1),
                ]:
                    struct.pack_into("<I", page, off, value & M32)
                self.front.req_prod_pvt = self.front.rsp_cons = start
        else:
            self.back = BackRing(page, kind.req, kind.rsp, kind.req_type, kind.rsp_type)
            self.back.rsp_prod_pvt = self.back.req_cons = start

    def run(self, cmd: str, log: list[str]) -> None:
        op, _, arg_text = cmd.partition(" ")
        arg = int(arg_text) if arg_text else 0
        if op in FRONT_OPS:
            assert self.front is not None, f"{cmd}: not the front"
            log.append(self._front(self.front, op, arg))
        else:
            assert self.back is not None, f"{cmd}: not the back"
            log.append(self._back(self.back, op, arg))

    def _front(self, f: FrontRing[Any, Any], op: str, arg: int) -> str:
        if op == "P":
            n = 0
            while n < arg and not f.full():
                f.put_request(*self.kind.make_req(self.sent))
                self.sent += 1
                n += 1
            return f"P {n}"
        if op == "p":
            return f"p {int(f.push_requests())}"
        if op == "G":
            errors = []
            if f.response_overflow():
                errors.append(f"ERR rsp_prod {f.rsp_prod} overflows rsp_cons {f.rsp_cons}")
            n = 0
            while n < arg and f.unconsumed_responses():
                rsp = f.get_response()
                if self.got >= self.sent or rsp != self.kind.make_rsp(self.got):
                    errors.append(f"ERR response {self.got}: {rsp}")
                self.got += 1
                n += 1
            return "\n".join([*errors, f"G {n}"])
        if op == "F":
            return f"F {int(f.final_check_for_responses())}"
        if op == "e":  # a batching consumer writes its own event index (no ring API for that)
            struct.pack_into("<I", self.page, RSP_EVENT, (f.rsp_cons + arg) & M32)
            return f"e {arg}"
        if op == "U":
            return f"U {f.unconsumed_responses()}"
        if op == "f":
            return f"f {f.free_requests()}"
        if op == "D":
            rel = [(v - self.start) & M32 for v in (f.req_prod, f.req_event, f.rsp_prod, f.rsp_event)]
            return "D " + " ".join(map(str, rel))
        assert op == "XF", op
        return f"XF {self.sent} {self.got}"

    def _back(self, b: BackRing[Any, Any], op: str, arg: int) -> str:
        if op == "C":
            errors = []
            try:
                b.check_overflow()
            except RingOverflow as e:
                errors.append(f"ERR {e}")
            n = 0
            while n < arg and b.unconsumed_requests():
                req = b.get_request()
                if req != self.kind.make_req(self.consumed):
                    errors.append(f"ERR request {self.consumed}: {req}")
                self.consumed += 1
                n += 1
            return "\n".join([*errors, f"C {n}"])
        if op == "R":
            n = 0
            while n < arg and self.responded < self.consumed:
                b.put_response(*self.kind.make_rsp(self.responded))
                self.responded += 1
                n += 1
            return f"R {n}"
        if op == "r":
            return f"r {int(b.push_responses())}"
        if op == "B":
            return f"B {int(b.final_check_for_requests())}"
        if op == "E":
            struct.pack_into("<I", self.page, REQ_EVENT, (b.req_cons + arg) & M32)
            return f"E {arg}"
        if op == "u":
            return f"u {b.unconsumed_requests()}"
        assert op == "XB", op
        return f"XB {self.consumed} {self.responded}"


# --- the script ---------------------------------------------------------------


def batch(rng: random.Random, nr_ents: int) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.randint(1, 8)
    if r < 0.9:
        return rng.randint(1, 64)
    return rng.randint(nr_ents - 8, nr_ents + 8)  # runs into full / empty


def make_script(seed: str, n_requests: int, nr_ents: int) -> list[str]:
    """A seeded command list; a count-only model of the ring says when to stop and drain."""
    rng = random.Random(seed)
    sent = pushed = consumed = responded = rsp_pushed = got = 0
    ops: list[str] = []
    weighted = (
        ["P"] * 6
        + ["p"] * 4
        + ["C"] * 5
        + ["R"] * 4
        + ["r"] * 4
        + ["G"] * 5
        + ["F", "B"] * 2
        + ["e", "E", "U", "u", "f", "D"]
    )
    while sent < n_requests:
        op = rng.choice(weighted)
        if op in "PCRG":
            k = batch(rng, nr_ents)
            ops.append(f"{op} {k}")
            if op == "P":
                sent += min(k, nr_ents - (sent - got))
            elif op == "C":
                consumed += min(k, pushed - consumed, nr_ents - (consumed - responded))
            elif op == "R":
                responded += min(k, consumed - responded)
            else:
                got += min(k, rsp_pushed - got)
        elif op in "eE":
            ops.append(f"{op} {rng.randint(0, nr_ents + 4)}")
        else:
            ops.append(op)
            pushed = sent if op == "p" else pushed
            rsp_pushed = responded if op == "r" else rsp_pushed
    # drain: everything sent is answered and read
    while got < sent:
        ops += ["p", f"C {nr_ents}", f"R {nr_ents}", "r", f"G {nr_ents}", "D"]
        consumed = responded = rsp_pushed = got = sent
    ops += ["F", "B", "U", "u", "f", "D", "XF", "XB"]
    return ops


def chunks(ops: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Runs of consecutive commands for the same end: ("front" | "back", commands)."""
    run: list[str] = []
    side = ""
    for cmd in ops:
        s = "front" if cmd.split(" ")[0] in FRONT_OPS else "back"
        if run and s != side:
            yield side, run
            run = []
        side = s
        run.append(cmd)
    if run:
        yield side, run


# --- running it three ways ------------------------------------------------------


@dataclass
class Run:
    log: list[str]
    returncode: int
    stderr: str


def fresh_page(tmp: Path) -> Path:
    path = tmp / "ring.page"
    path.write_bytes(b"\xa5" * PAGE_SIZE)  # not zero: init must do the zeroing
    return path


def run_reference(exe: Path, kind: str, ops: list[str], start: int, tmp: Path) -> Run:
    page = fresh_page(tmp)
    proc = subprocess.run(
        [str(exe), kind, "both", str(page), str(start)],
        input="\n".join(ops) + "\nS\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    assert lines[:1] == ["ready"], proc.stdout[:200] + proc.stderr
    return Run([ln for ln in lines[1:] if ln != "S"], proc.returncode, proc.stderr)


def run_split(exe: Path, kind: str, c_role: str, ops: list[str], start: int, tmp: Path) -> Run:
    page_path = fresh_page(tmp)
    py_role = "back" if c_role == "front" else "front"
    log: list[str] = []
    with open(page_path, "r+b") as fh, mmap.mmap(fh.fileno(), PAGE_SIZE) as mm:
        page = memoryview(mm)
        end: PyEnd | None = None
        if py_role == "front":  # the front initialises the page before the back starts
            end = PyEnd(KINDS[kind], page, py_role, start)
        proc = subprocess.Popen(
            [str(exe), kind, c_role, str(page_path), str(start)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            assert proc.stdout.readline() == "ready\n"
            if end is None:
                end = PyEnd(KINDS[kind], page, py_role, start)
            for side, cmds in chunks(ops):
                if side == py_role:
                    for cmd in cmds:
                        end.run(cmd, log)
                    continue
                proc.stdin.write("\n".join(cmds) + "\nS\n")
                proc.stdin.flush()
                while (line := proc.stdout.readline()) != "S\n":
                    assert line, f"ring_peer died: {proc.stderr.read()}"
                    log.append(line.rstrip("\n"))
            proc.stdin.close()
            rest = proc.stdout.read()
            log += rest.splitlines()
            stderr = proc.stderr.read()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            del end
            page.release()
    # multi-line entries (errors before a count) become separate lines, like C's
    return Run("\n".join(log).splitlines(), proc.returncode, stderr)


@pytest.fixture(scope="module")
def ring_peer() -> Iterator[Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if not Path("/usr/include/xen/io/netif.h").is_file():
        pytest.skip("Xen public headers missing: apt-get install libxen-dev")
    with tempfile.TemporaryDirectory(prefix="xennet-ring-peer-") as tmp:
        exe = Path(tmp) / "ring_peer"
        cc = subprocess.run(
            ["gcc", "-std=gnu11", "-O2", "-Wall", f"-I{C_DIR}", str(C_DIR / "ring_peer.c"), "-o", str(exe)],
            capture_output=True,
            text=True,
        )
        assert cc.returncode == 0, f"ring_peer.c does not compile:\n{cc.stderr}"
        yield exe


def first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return (
                f"line {i}: {x!r} != {y!r}; context {a[max(0, i - 5) : i + 1]} / {b[max(0, i - 5) : i + 1]}"
            )
    return f"lengths {len(a)} != {len(b)}"


SCENARIOS = [
    # (ring, start index, requests): INIT macros from 0; ATTACH just below 2**32, so u32 indices wrap
    pytest.param("tx", 0, 20_000, id="tx-init"),
    pytest.param("rx", 0, 20_000, id="rx-init"),
    pytest.param("tx", 2**32 - 40_000, 100_000, id="tx-wrap32"),
    pytest.param("rx", 2**32 - 40_000, 100_000, id="rx-wrap32"),
]


@pytest.mark.parametrize(("kind", "start", "n_requests"), SCENARIOS)
def test_python_and_c_ends_agree(ring_peer: Path, kind: str, start: int, n_requests: int) -> None:
    nr_ents = 256
    ops = make_script(seed=f"{kind}-{start}", n_requests=n_requests, nr_ents=nr_ents)
    with tempfile.TemporaryDirectory(prefix="xennet-ring-interop-") as tmp_name:
        tmp = Path(tmp_name)
        runs = {
            "C front + C back": run_reference(ring_peer, kind, ops, start, tmp),
            "Python front + C back": run_split(ring_peer, kind, "back", ops, start, tmp),
            "C front + Python back": run_split(ring_peer, kind, "front", ops, start, tmp),
        }
    for name, run in runs.items():
        errors = [ln for ln in run.log if ln.startswith("ERR")]
        assert not errors and run.returncode == 0, (
            f"{name}: rc {run.returncode}\n" + "\n".join(errors[:20]) + run.stderr
        )
    ref = runs["C front + C back"].log
    # every request went through and came back; the ring wrapped many times
    total = int(ref[-1].split()[1])
    assert total >= n_requests and ref[-2:] == [f"XF {total} {total}", f"XB {total} {total}"], ref[-2:]
    # the script reached both outcomes of every decision
    for op in "prFB":
        assert {f"{op} 0", f"{op} 1"} <= set(ref), f"script never saw both results of {op}"
    for name, run in runs.items():
        assert run.log == ref, f"{name} differs from the C reference: {first_difference(run.log, ref)}"
