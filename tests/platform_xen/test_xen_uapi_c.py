"""``xennet.platform.xen.uapi`` against the real C headers, by compiling them.

The headers: Linux's uapi ``/usr/include/xen/{gntdev,gntalloc,evtchn}.h`` (Debian
``linux-libc-dev``; the ABI the kernel implements) and, where installed, Xen's own copy
of the same ABI ``/usr/include/xen/sys/*.h`` (``libxen-dev``, which libxengnttab and
libxenevtchn are built with).  A generated C program prints every struct's size and
alignment, each member's offset, size and signedness, byte images of each union arm,
every ioctl number and constant; the test fails listing every mismatch.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cprog
from xennet.abi.cstruct import Array, CStruct, CType, Scalar
from xennet.platform.xen import uapi

LINUX_HEADERS = [
    Path("/usr/include/xen/gntdev.h"),
    Path("/usr/include/xen/gntalloc.h"),
    Path("/usr/include/xen/evtchn.h"),
]
XEN_HEADERS = [
    Path("/usr/include/xen/sys/gntdev.h"),
    Path("/usr/include/xen/sys/gntalloc.h"),
    Path("/usr/include/xen/sys/evtchn.h"),
]
# Xen's copy names the copy segment differently
XEN_ALIASES = {"struct gntdev_grant_copy_segment": "struct ioctl_gntdev_grant_copy_segment"}

# floors, so the check cannot pass by checking nothing
MIN_STRUCTS = 17
MIN_MEMBERS = 45
MIN_IOCTLS = 16
MIN_IMAGES = 18

PRELUDE = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <linux/ioctl.h>
#include <linux/types.h>
/* gntdev.h and evtchn.h use Xen's domid_t and grant_ref_t without defining them */
#if __has_include(<xen/xen.h>) && __has_include(<xen/grant_table.h>)
#define __XEN_TOOLS__ 1
#include <xen/xen.h>
#include <xen/grant_table.h>
#else
typedef uint16_t domid_t;
typedef uint32_t grant_ref_t;
#endif
#define P(k, v) printf("%s\t%lld\n", (k), (long long)(v))
static void dump(const char *key, const void *p, size_t n)
{
    const unsigned char *b = p;
    printf("%s\t", key);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}
"""


@dataclass
class Program:
    body: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def num(self, key: str, c_expr: str, value: int, kind: str) -> None:
        assert key not in self.expected, key
        self.body.append(f'    P("{key}", {c_expr});')
        self.expected[key] = str(value)
        self.counts[kind] = self.counts.get(kind, 0) + 1


def walk(st: CStruct, prefix: str = "", base: int = 0) -> Iterator[tuple[str, int, CType]]:
    for name, ctype in st.members:
        path = prefix + name
        off = base + st.offsets[name]
        yield path, off, ctype
        if isinstance(ctype, CStruct):
            yield from walk(ctype, path + ".", off)


def leaf_groups(st: CStruct) -> list[list[tuple[str, int, Scalar | Array]]]:
    return st.leaf_groups()


def build(headers: list[Path], aliases: dict[str, str]) -> tuple[str, Program]:
    prog = Program()
    rng = random.Random(4242)
    for st in uapi.STRUCTS:
        cname = aliases.get(st.cname, st.cname)
        rename = uapi.C_PATHS.get(st.cname, {})
        prog.num(f"sizeof:{st.cname}", f"sizeof({cname})", st.size, "structs")
        prog.num(f"alignof:{st.cname}", f"_Alignof({cname})", st.align, "props")
        for path, off, ctype in walk(st):
            cpath = rename.get(path, path)
            member = f"((({cname} *)0)->{cpath})"
            key = f"{st.cname}.{path}"
            prog.num(f"offsetof:{key}", f"offsetof({cname}, {cpath})", off, "members")
            prog.num(f"sizeof:{key}", f"sizeof{member}", ctype.size, "props")
            if isinstance(ctype, Scalar) and ctype.cname != "void *":
                prog.num(f"signed:{key}", f"((__typeof__{member})-1 < 0)", int(ctype.code.islower()), "props")
            elif isinstance(ctype, Array):
                prog.num(f"elemsize:{key}", f"sizeof{member}[0]", ctype.elem.size, "props")
        # byte images: C assigns each leaf of one union arm, Python packs the same values
        for n, group in enumerate(leaf_groups(st)):
            stmts = [f"{cname} v;", "memset(&v, 0, sizeof v);"]
            values: list[int] = []
            for path, _off, t in group:
                cpath = rename.get(path, path)
                elem = t.elem if isinstance(t, Array) else t
                for i in range(t.count if isinstance(t, Array) else 1):
                    raw = rng.getrandbits(8 * elem.size)
                    index = f"[{i}]" if isinstance(t, Array) else ""
                    if elem.cname == "void *":
                        stmts.append(f"v.{cpath}{index} = (void *)(uintptr_t)0x{raw:x}ULL;")
                    else:
                        stmts.append(f"v.{cpath}{index} = ({elem.cname})0x{raw:x}ULL;")
                    signed = elem.code.islower() and raw >> (8 * elem.size - 1)
                    values.append(raw - (1 << 8 * elem.size) if signed else raw)
            key = f"image:{st.cname}#{n}"
            prog.body.append("    { " + " ".join(stmts) + f' dump("{key}", &v, sizeof v); }}')
            prog.expected[key] = st.codec(*(p for p, _o, _t in group)).pack(*values).hex()
            prog.counts["images"] = prog.counts.get("images", 0) + 1
    for name, value in uapi.IOCTLS.items():
        prog.num(f"ioctl:{name}", name, value, "ioctls")
    for name, value in uapi.CONSTANTS.items():
        prog.num(f"const:{name}", name, value, "constants")
    includes = "\n".join(f'#include "{h}"' for h in headers)
    source = f"{PRELUDE}\n{includes}\n\nint main(void)\n{{\n" + "\n".join(prog.body) + "\n    return 0;\n}\n"
    return source, prog


def compile_and_run(source: str) -> dict[str, str]:
    return cprog.compile_and_run(source, "uapi_check", ["-std=gnu11", "-O0", "-Werror"])


def mismatches(prog: Program, got: dict[str, str]) -> list[str]:
    out = []
    for key, want in prog.expected.items():
        have = got.get(key)
        if have != want:
            out.append(f"{key}: Python {want}, C {have}")
    out += [f"{key}: printed by C only" for key in sorted(set(got) - set(prog.expected))]
    return out


def _need(headers: list[Path], package: str) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: apt-get install gcc")
    missing = [str(h) for h in headers if not h.is_file()]
    if missing:
        pytest.skip(f"headers missing ({', '.join(missing)}): apt-get install {package}")


def test_linux_uapi_headers_are_the_linux_ones() -> None:
    """/usr/include/xen/gntdev.h etc. are Linux's uapi (linux-libc-dev), not Xen's copy."""
    _need(LINUX_HEADERS, "linux-libc-dev")
    for h in LINUX_HEADERS:
        text = h.read_text()
        # Linux spells its types __u32/unsigned int; Xen's copies (xen/sys/) use uint32_t
        assert "__LINUX_PUBLIC_" in text and "uint32_t" not in text, f"{h} is not the Linux uapi header"
    if shutil.which("dpkg") is not None:
        for h in LINUX_HEADERS:
            owner = subprocess.run(["dpkg", "-S", str(h)], capture_output=True, text=True).stdout
            assert owner.startswith("linux-libc-dev"), f"{h} belongs to {owner.strip()!r}"


@pytest.mark.parametrize(
    ("headers", "aliases", "package"),
    [(LINUX_HEADERS, {}, "linux-libc-dev"), (XEN_HEADERS, XEN_ALIASES, "libxen-dev")],
    ids=["linux-uapi", "xen-sys-copy"],
)
def test_uapi_matches_c_headers(headers: list[Path], aliases: dict[str, str], package: str) -> None:
    _need(headers, package)
    source, prog = build(headers, aliases)
    got = compile_and_run(source)
    bad = mismatches(prog, got)
    assert not bad, f"{len(bad)} mismatches against {headers[0].parent}:\n" + "\n".join(bad)
    c = prog.counts
    assert c["structs"] >= MIN_STRUCTS, c
    assert c["members"] >= MIN_MEMBERS, c
    assert c["ioctls"] >= MIN_IOCTLS, c
    assert c["images"] >= MIN_IMAGES, c
    assert c["constants"] == len(uapi.CONSTANTS) >= 3, c
    assert len(got) == len(prog.expected)


def test_mismatch_is_reported() -> None:
    """The comparison itself can fail: a wrong size and a wrong ioctl number are caught."""
    _need(LINUX_HEADERS, "linux-libc-dev")
    source, prog = build(LINUX_HEADERS, {})
    got = compile_and_run(source)
    got["sizeof:struct ioctl_gntdev_grant_ref"] = "12"
    got["ioctl:IOCTL_EVTCHN_NOTIFY"] = "0"
    bad = mismatches(prog, got)
    assert len(bad) == 2 and any("IOCTL_EVTCHN_NOTIFY" in b for b in bad), bad


def test_ioc_encoding() -> None:
    # values from the kernel's _IOC rules, worked out by hand
    assert uapi._IOC(0, "G", 0, 24) == 0x00184700
    assert uapi.IOCTL_EVTCHN_RESET == 0x00004505
    assert uapi.ioc_fields(uapi.IOCTL_GNTDEV_GRANT_COPY) == (0, ord("G"), 8, uapi.GNTDEV_GRANT_COPY.size)
    assert uapi._IOC(2, "T", 1, 4) == 0x80045401  # _IOR('T', 1, int) style
    with pytest.raises(ValueError):
        uapi._IOC(0, "G", 256, 0)
    with pytest.raises(ValueError):
        uapi._IOC(0, "G", 0, 1 << 14)
