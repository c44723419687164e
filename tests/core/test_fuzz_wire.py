"""The fuzzers' input format, and the inputs they found.

The C harness's TARGETS table must name every kernel with the argument letters module.c
parses, or the fuzzers would call the kernels differently from Python.  Every input the
fuzzers ever failed on is kept in ``fuzz/regressions`` and replayed here on both cores.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xennet.core import pure
from xennet.fuzz import wire

from .both import both, needs_native

MODULE_C = Path(pure.__file__).parents[1] / "native" / "module.c"
REGRESSIONS = sorted((Path(__file__).parent / "fuzz" / "regressions").iterdir())


def module_formats() -> dict[str, str]:
    """kernel -> PyArg_ParseTuple letters, read from module.c ('*' dropped)."""
    src = MODULE_C.read_text()
    out: dict[str, str] = {}
    fn = re.compile(r"static PyObject \*py_(\w+)\(PyObject \*self, PyObject \*args\)\n\{(.*?)\n\}", re.S)
    for name, body in fn.findall(src):
        m = re.search(r'PyArg_ParseTuple\(args, "([^"]+)"', body)
        assert m, name
        out[name] = m.group(1).replace("*", "")
    m = re.search(r'PyArg_ParseTuple\(args, out \? "([^"]+)" : "([^"]+)"', src)
    assert m
    out["ring_copy_out"], out["ring_copy_in"] = (g.replace("*", "") for g in m.groups())
    return out


def test_harness_names_every_kernel_with_module_c_formats() -> None:
    assert {n for n, _ in wire.TARGETS} == set(pure.KERNELS)
    assert dict(wire.TARGETS) == module_formats()


arg = {
    "y": st.binary(max_size=64).map(bytearray),
    "w": st.binary(max_size=64).map(bytearray),
    "n": st.integers(0, 0xFFFFFFFF),
    "K": st.integers(0, 2**64 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "p": st.booleans(),
}


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, list[object]]:
    name, fmt = draw(st.sampled_from(wire.TARGETS))
    args: list[object] = []
    for c in fmt:
        if c != "O":
            args.append(draw(arg[c]))
        elif name == "grant_copy":
            args.append(draw(st.lists(st.tuples(arg["n"], arg["y"], arg["w"]), max_size=wire.MAX_DOMAINS)))
        else:
            args.append(draw(st.none() | arg["w"]))
    return name, args


@settings(max_examples=300)
@given(calls())
def test_encode_then_decode_is_the_same_call(call: tuple[str, list[object]]) -> None:
    name, args = call
    assert wire.decode(wire.encode(name, args)) == (name, args)


def test_short_input_reads_as_zeros() -> None:
    name, args = wire.decode(bytes([wire.INDEX["pool_take"]]))
    assert name == "pool_take" and args == [bytearray(), 0, bytearray()]


@needs_native
@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzzer_findings_stay_fixed(path: Path) -> None:
    name, args = wire.decode(path.read_bytes())
    kind, _result, _args = both(name, *args)
    assert kind in ("ok", "error")


@needs_native
def test_grant_copy_never_reaches_past_whole_pages_of_own_memory() -> None:
    """The first libFuzzer finding: a virtual address in the partial page at the end of our
    memory passed the bounds check and the copy read past the buffer."""
    from xennet.abi.grant_table import GNTST_bad_page
    from xennet.core.pure.codecs import SEG_SIZE, SEG_STATUS_OFF, SEG_TAIL, SEG_TAIL_OFF, SIDE_VIRT

    mem = bytearray(4096 + 100)
    segs = bytearray(SEG_SIZE)
    SIDE_VIRT.pack_into(segs, 0, 4096)  # source: the partial page
    SIDE_VIRT.pack_into(segs, 8, 0)
    SEG_TAIL.pack_into(segs, SEG_TAIL_OFF, 512, 0, 0)
    kind, failed, after = both("grant_copy", segs, 1, 1, mem, 0, [])
    assert (kind, failed) == ("ok", 1)
    status = after[0][SEG_STATUS_OFF : SEG_STATUS_OFF + 2]
    assert int.from_bytes(status, "little", signed=True) == GNTST_bad_page
