"""Check every Python ABI declaration against Xen's real C headers, by compiling them.

A C program is generated from ``xennet.abi``: every struct in each module's ``STRUCTS``
(size, alignment, every member's offset, size and signedness, and a byte image packed
by ``CStruct.codec()``), the shared-ring header and ring sizes, every macro-like
constant, the xenstore message types and the ``xsd_errors[]`` order.  It includes
the headers from ``libxen-dev``, prints ``key<TAB>value`` lines, and the test fails
with the list of every mismatch.  A Python constant the headers lack is a mismatch.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import cprog
import xennet.abi
from xennet.abi import ring as abi_ring
from xennet.abi import xs_wire
from xennet.abi.cstruct import Array, CStruct, CType, Scalar
from xennet.ring import FrontRing

C_DIR = Path(__file__).parent / "c"
XEN_INCLUDE = Path("/usr/include/xen")
HEADERS = ["xen.h", "grant_table.h", "io/ring.h", "io/netif.h", "io/xs_wire.h"]

# Module-level names that spell a macro from netif.h, grant_table.h, xs_wire.h or xen.h.
MACRO_NAME = re.compile(r"^_?(NET|XEN_|GTF|GNT|XENSTORE|DOMID|XS_)")
# Names that C declares as enumerators, not macros (``#ifdef`` cannot see them).
ENUM_NAMES = {m.name for m in xs_wire.XsType} | {"XS_WATCH_PATH", "XS_WATCH_TOKEN"}
# The three DEFINE_RING_TYPES rings of netif.h: tag, request/response structs, their codecs.
RINGS = [
    ("netif_tx", "NETIF_TX_REQUEST", "NETIF_TX_RESPONSE", "TX_REQUEST", "TX_RESPONSE"),
    ("netif_rx", "NETIF_RX_REQUEST", "NETIF_RX_RESPONSE", "RX_REQUEST", "RX_RESPONSE"),
    ("xen_netif_ctrl", "XEN_NETIF_CTRL_REQUEST", "XEN_NETIF_CTRL_RESPONSE", "CTRL_REQUEST", "CTRL_RESPONSE"),
]
RING_AREA_SIZES = [64, 100, 128, 1000, 4096, 8192, 65536]
RD32_SAMPLES = [0, 1, 2, 3, 5, 7, 255, 256, 257, 4032, 0xFFFF, 0x10000, 0x12345678, 0x7FFFFFFF, 0xFFFFFFFF]

# Sane floors, so the test cannot pass by checking nothing.
MIN_STRUCTS = 11
MIN_MEMBERS = 60
MIN_CONSTANTS = 110


def abi_modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(xennet.abi.__path__) if m.name != "cstruct")
    return [importlib.import_module(f"xennet.abi.{n}") for n in names]


@dataclass
class Program:
    """The generated C statements and, for each printed key, the value Python expects."""

    body: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def num(self, key: str, c_expr: str, value: int, kind: str) -> None:
        assert key not in self.expected, f"duplicate check {key}"
        self.body.append(f'    P("{key}", {c_expr});')
        self.expected[key] = str(value)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def text(self, key: str, c_expr: str, value: str, kind: str) -> None:
        assert key not in self.expected, f"duplicate check {key}"
        self.body.append(f'    printf("%s\\t%s\\n", "{key}", {c_expr});')
        self.expected[key] = value
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def raw(self, line: str) -> None:
        self.body.append(line)

    def source(self) -> str:
        return "\n".join(
            [
                '#include "xen_prelude.h"',
                "#include <stdio.h>",
                "",
                '#define P(k, v) printf("%s\\t%lld\\n", (k), (long long)(v))',
                "",
                "static void dump(const char *key, const void *p, size_t n)",
                "{",
                "    const unsigned char *b = p;",
                '    printf("%s\\t", key);',
                '    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);',
                '    printf("\\n");',
                "}",
                "",
                "int main(void)",
                "{",
                *self.body,
                "    return 0;",
                "}",
                "",
            ]
        )


def walk(st: CStruct, prefix: str = "", base: int = 0) -> Iterator[tuple[str, int, CType]]:
    """Every member, aggregates included, as (dotted path, absolute offset, type)."""
    for name, ctype in st.members:
        path = prefix + name
        off = base + st.offsets[name]
        yield path, off, ctype
        if isinstance(ctype, CStruct):
            yield from walk(ctype, path + ".", off)


def add_members(prog: Program, cname: str, st: CStruct, rename: dict[str, str] | None = None) -> None:
    """offsetof/sizeof/alignment/signedness of every member of ``st`` against C's ``cname``."""
    for path, off, ctype in walk(st):
        cpath = (rename or {}).get(path, path)
        member = f"((({cname} *)0)->{cpath})"
        key = f"{cname}.{path}"
        prog.num(f"offsetof:{key}", f"offsetof({cname}, {cpath})", off, "members")
        prog.num(f"sizeof:{key}", f"sizeof{member}", ctype.size, "member_props")
        if isinstance(ctype, Scalar):
            signed = int(ctype.code.islower())
            prog.num(f"signed:{key}", f"((__typeof__{member})-1 < 0)", signed, "member_props")
        elif isinstance(ctype, Array):
            prog.num(f"elemsize:{key}", f"sizeof{member}[0]", ctype.elem.size, "member_props")
        else:
            prog.num(f"alignof:{key}", f"_Alignof(__typeof__{member})", ctype.align, "member_props")


def leaf_groups(st: CStruct) -> list[list[tuple[str, int, Scalar | Array]]]:
    return st.leaf_groups()


def add_images(prog: Program, cname: str, st: CStruct, rng: random.Random) -> None:
    """Byte images: C assigns each member a value; Python packs the same values with codec()."""
    for n, group in enumerate(leaf_groups(st)):
        stmts = [f"{cname} v;", "memset(&v, 0, sizeof v);"]
        values: list[int | bytes] = []
        for path, _off, t in group:
            elem = t.elem if isinstance(t, Array) else t
            count = t.count if isinstance(t, Array) else 1
            elems = [rng.getrandbits(8 * elem.size) for _ in range(count)]
            for i, raw in enumerate(elems):
                index = f"[{i}]" if isinstance(t, Array) else ""
                stmts.append(f"v.{path}{index} = ({elem.cname})0x{raw:x}ULL;")
            signed = [
                r - (1 << 8 * elem.size) if elem.code.islower() and r >> (8 * elem.size - 1) else r
                for r in elems
            ]
            if isinstance(t, Array) and elem.code == "B":
                values.append(bytes(elems))
            else:
                values.extend(signed)
        image = st.codec(*(p for p, _o, _t in group)).pack(*values)
        key = f"image:{cname}#{n}"
        prog.raw("    { " + " ".join(stmts) + f' dump("{key}", &v, sizeof v); }}')
        prog.expected[key] = image.hex()
        prog.counts["images"] = prog.counts.get("images", 0) + 1


def python_constants(mods: list[ModuleType]) -> dict[str, int | str]:
    found: dict[str, int | str] = {}
    for mod in mods:
        for name, value in vars(mod).items():
            if not MACRO_NAME.match(name) or isinstance(value, bool) or not isinstance(value, int | str):
                continue
            if name in found and found[name] != value:
                raise AssertionError(f"{name} differs between abi modules: {found[name]!r} vs {value!r}")
            found[name] = value
    return found


def build_program() -> Program:
    prog = Program()
    rng = random.Random(20240229)
    mods = abi_modules()

    # structs
    for mod in mods:
        for st in getattr(mod, "STRUCTS", []):
            assert st.cname, f"{mod.__name__}: a STRUCTS entry has no C name"
            prog.num(f"sizeof:{st.cname}", f"sizeof({st.cname})", st.size, "structs")
            prog.num(f"alignof:{st.cname}", f"_Alignof({st.cname})", st.align, "struct_props")
            add_members(prog, st.cname, st, None)
            add_images(prog, st.cname, st, rng)

    # the shared ring header, the ring offset and sizes of each netif ring
    netif = importlib.import_module("xennet.abi.netif")
    hdr = abi_ring.SRING_HEADER
    for tag, req_name, rsp_name, req_codec, rsp_codec in RINGS:
        sring = f"struct {tag}_sring"
        add_members(prog, sring, hdr, {"pvt": "pvt.pvt_pad"})
        prog.num(f"RING_OFFSET:{tag}", f"offsetof({sring}, ring)", abi_ring.RING_OFFSET, "ring")
        prog.num(f"header size:{tag}", f"offsetof({sring}, ring)", hdr.size, "ring")
        entry = max(getattr(netif, req_name).size, getattr(netif, rsp_name).size)
        prog.num(f"entry size:{tag}", f"sizeof(union {tag}_sring_entry)", entry, "ring")
        for area in RING_AREA_SIZES:
            prog.num(
                f"__CONST_RING_SIZE:{tag}:{area}",
                f"__CONST_RING_SIZE({tag}, {area})",
                abi_ring.const_ring_size(entry, area),
                "ring",
            )
        # RING_SIZE of a ring set up by the real FRONT_RING_INIT on one page, vs xennet.ring
        page = memoryview(bytearray(abi_ring.PAGE_SIZE))
        py_ring: FrontRing[Any, Any] = FrontRing(page, getattr(netif, req_codec), getattr(netif, rsp_codec))
        prog.raw(f"    {{ static {sring} s __attribute__((aligned(4096))); struct {tag}_front_ring f;")
        prog.raw(f"      FRONT_RING_INIT(&f, &s, {abi_ring.PAGE_SIZE});")
        prog.num(f"RING_SIZE:{tag}", "RING_SIZE(&f)", py_ring.nr_ents, "ring")
        prog.raw("    }")
    for off_name, field_name in [
        ("REQ_PROD", "req_prod"),
        ("REQ_EVENT", "req_event"),
        ("RSP_PROD", "rsp_prod"),
        ("RSP_EVENT", "rsp_event"),
    ]:
        prog.num(
            f"abi.ring.{off_name}",
            f"offsetof(struct netif_tx_sring, {field_name})",
            getattr(abi_ring, off_name),
            "ring",
        )
    prog.num("abi.ring.PAGE_SIZE", "(1UL << XEN_PAGE_SHIFT)", abi_ring.PAGE_SIZE, "ring")
    for x in RD32_SAMPLES:
        prog.num(f"__RD32({x:#x})", f"__RD32({x:#x}U)", abi_ring.rd32(x), "ring")

    # constants: a Python name the headers lack prints MISSING
    for name, value in sorted(python_constants(mods).items()):
        key = f"const:{name}"
        if isinstance(value, str):
            prog.raw(f"#ifdef {name}")
            prog.text(key, name, value, "constants")
            prog.raw(f'#else\n    printf("%s\\tMISSING\\n", "{key}");\n#endif')
        elif name in ENUM_NAMES:
            prog.num(key, name, value, "constants")
        else:
            prog.raw(f"#ifdef {name}")
            prog.num(key, name, value, "constants")
            prog.raw(f'#else\n    printf("%s\\tMISSING\\n", "{key}");\n#endif')
    for member in xs_wire.XsType:
        prog.num(f"enum:{member.name}", member.name, member.value, "constants")

    # xsd_errors[]: same names in the same order, errno values as Linux's
    prog.num(
        "xsd_errors:count",
        "sizeof(xsd_errors) / sizeof(xsd_errors[0])",
        len(xs_wire.XSD_ERRORS),
        "xsd_errors",
    )
    prog.raw("    for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++)")
    prog.raw('        printf("xsd_errors[%zu]\\t%s=%d\\n",')
    prog.raw("               i, xsd_errors[i].errstring, xsd_errors[i].errnum);")
    for i, name in enumerate(xs_wire.XSD_ERRORS):
        prog.expected[f"xsd_errors[{i}]"] = f"{name}={getattr(errno, name, 'not-an-errno')}"
        prog.counts["xsd_errors"] += 1
    return prog


def compile_and_run(prog: Program) -> dict[str, str]:
    return cprog.compile_and_run(prog.source(), "abi_check", ["-std=gnu11", "-O0", f"-I{C_DIR}"])


def headers_missing() -> str | None:
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    missing = [h for h in HEADERS if not (XEN_INCLUDE / h).is_file()]
    if missing:
        return f"Xen public headers missing ({', '.join(missing)}): apt-get install libxen-dev"
    return None


@pytest.fixture(scope="module")
def abi_result() -> tuple[Program, dict[str, str]]:
    reason = headers_missing()
    if reason:
        pytest.skip(reason)
    prog = build_program()
    return prog, compile_and_run(prog)


def test_python_abi_matches_c_headers(abi_result: tuple[Program, dict[str, str]]) -> None:
    prog, got = abi_result
    mismatches = []
    for key, want in prog.expected.items():
        have = got.get(key)
        if have is None:
            mismatches.append(f"{key}: C printed nothing")
        elif have == "MISSING":
            mismatches.append(f"{key}: Python has {want}, the C headers do not define it")
        elif have != want:
            mismatches.append(f"{key}: Python {want}, C {have}")
    extra = sorted(set(got) - set(prog.expected))
    mismatches += [f"{key}: in C ({got[key]}) but not in Python" for key in extra]
    assert not mismatches, f"{len(mismatches)} ABI mismatches:\n" + "\n".join(mismatches)


def test_abi_check_is_not_vacuous(abi_result: tuple[Program, dict[str, str]]) -> None:
    prog, got = abi_result
    c = prog.counts
    assert c["structs"] >= MIN_STRUCTS, c
    assert c["members"] >= MIN_MEMBERS, c
    assert c["constants"] >= MIN_CONSTANTS, c
    assert c["images"] >= c["structs"], c
    assert c["ring"] >= 3 * (4 + len(RING_AREA_SIZES)), c
    assert c["xsd_errors"] == len(xs_wire.XSD_ERRORS) + 1, c
    assert len(got) == len(prog.expected) >= sum(c.values())
