"""The TUN ioctl numbers, flags and ``struct virtio_net_hdr`` checked against the kernel's
UAPI headers by compiling a small C program (skipped without gcc or the headers)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cprog
from xennet.ports import tap, vnet

HEADERS = [Path("/usr/include/linux/if_tun.h"), Path("/usr/include/linux/virtio_net.h")]

TAP_NAMES = [
    "TUNSETIFF",
    "TUNGETFEATURES",
    "TUNSETOFFLOAD",
    "TUNGETIFF",
    "TUNGETVNETHDRSZ",
    "TUNSETVNETHDRSZ",
    "TUNSETVNETLE",
    "TUNGETVNETLE",
    "IFF_TUN",
    "IFF_TAP",
    "IFF_NO_PI",
    "IFF_VNET_HDR",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "TUN_F_TSO_ECN",
    "TUN_F_UFO",
]
VNET_NAMES = [
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_RSC_INFO",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_GSO_ECN",
]
# what xennet uses: the test fails rather than pass on headers that define none of it
REQUIRED = [
    *TAP_NAMES[:6],
    "TUNSETVNETLE",
    "IFF_TAP",
    "IFF_NO_PI",
    "IFF_VNET_HDR",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
]
REQUIRED += ["TUN_F_TSO6", *VNET_NAMES[:2], "VIRTIO_NET_HDR_GSO_TCPV4", "VIRTIO_NET_HDR_GSO_TCPV6"]
MEMBERS = ["flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"]


def test_ioctl_numbers_by_hand() -> None:
    # _IOW('T', nr, int): write direction 1 << 30, size 4 << 16, type 'T' (0x54) << 8, nr
    assert tap.TUNSETIFF == 0x400454CA
    assert tap.TUNSETOFFLOAD == 0x400454D0
    assert tap.TUNSETVNETHDRSZ == 0x400454D8
    assert tap.TUNSETVNETLE == 0x400454DC
    assert tap.TUNGETFEATURES == 0x800454CF


def test_against_the_kernel_headers() -> None:
    missing = [str(h) for h in HEADERS if not h.exists()]
    if missing:
        pytest.skip(f"kernel UAPI headers missing: {', '.join(missing)} (apt-get install linux-libc-dev)")
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <net/if.h>",
        "#include <sys/ioctl.h>",
        "#include <linux/if_tun.h>",
        "#include <linux/virtio_net.h>",
        "int main(void) {",
    ]
    for n in TAP_NAMES + VNET_NAMES:  # #ifdef: older headers lack some (e.g. GSO_UDP_L4)
        lines.append(f'#ifdef {n}\n  printf("{n}\\t%lu\\n", (unsigned long)({n}));\n#endif')
    for m in MEMBERS:
        lines.append(
            f'  printf("off_{m}\\t%zu\\n", offsetof(struct virtio_net_hdr, {m}));'
            f'  printf("size_{m}\\t%zu\\n", sizeof(((struct virtio_net_hdr *)0)->{m}));'
        )
    lines += [
        '  printf("sizeof_virtio_net_hdr\\t%zu\\n", sizeof(struct virtio_net_hdr));',
        '  printf("sizeof_ifreq\\t%zu\\n", sizeof(struct ifreq));',
        '  printf("IFNAMSIZ\\t%d\\n", IFNAMSIZ);',
        '  printf("off_ifr_flags\\t%zu\\n", offsetof(struct ifreq, ifr_flags));',
        "  return 0;",
        "}",
    ]
    c = {k: int(v) for k, v in cprog.compile_and_run("\n".join(lines) + "\n", "tun_abi", ["-Werror"]).items()}

    checked = [n for n in TAP_NAMES + VNET_NAMES if n in c]
    assert set(REQUIRED) <= set(checked), f"headers lack {set(REQUIRED) - set(checked)}"
    mismatches = [n for n in checked if getattr(tap if n in TAP_NAMES else vnet, n) != c[n]]
    # the Python struct: "<BBHHHH" packs each member at its C offset with its C size
    py_off = {"flags": (0, 1), "gso_type": (1, 1), "hdr_len": (2, 2), "gso_size": (4, 2)}
    py_off |= {"csum_start": (6, 2), "csum_offset": (8, 2)}
    mismatches += [m for m in MEMBERS if py_off[m] != (c[f"off_{m}"], c[f"size_{m}"])]
    if c["sizeof_virtio_net_hdr"] != vnet.VNET_HDR_LEN:
        mismatches.append("sizeof(struct virtio_net_hdr)")
    if c["sizeof_ifreq"] != tap._IFREQ.size or c["off_ifr_flags"] != 16 or c["IFNAMSIZ"] != tap.IFNAMSIZ:
        mismatches.append("struct ifreq")
    assert not mismatches, f"differ from the C headers: {mismatches}\n{c}"
