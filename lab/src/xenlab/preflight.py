"""Preflight checks for the Xen-in-QEMU lab.

Every check is quick (no network except one bounded HTTP probe) and never hangs.  Each problem is
one line of text; callers skip the stage with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3

#: host binary -> Debian package that provides it (the *tools*; installed on the host by build()).
HOST_TOOLS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "mke2fs": "e2fsprogs",
    "cpio": "cpio",
    "gzip": "gzip",
    "xz": "xz-utils",
    "modprobe": "kmod",
    "depmod": "kmod",
    "dpkg-deb": "dpkg",
}
#: a static busybox goes into the initramfs; only busybox-static puts one at this path.
BUSYBOX = Path("/bin/busybox")
BUSYBOX_PKG = "busybox-static"

#: downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed on the host).
GUEST_DEBS: tuple[str, ...] = ("xen-hypervisor-4.17-amd64", "linux-image-amd64")
#: installed into the dom0 rootfs by debootstrap.
ROOTFS_PACKAGES: tuple[str, ...] = (
    "xen-utils-4.17",
    "python3",
    "python3-pytest",  # tests/xenlab/dom0_xen_real.py runs in dom0
    "python3-click",
    "python3-rich",
    "python3-pyroute2",
    "iproute2",
    "kmod",
    "busybox",
    "procps",
    "bridge-utils",
    "udev",
    "iputils-ping",
    "netbase",
)
SUITE = "bookworm"

MIN_DISK = 3 * GIB
MIN_MEM = 3 * GIB

#: files `up()` needs, relative to the workdir.
IMAGES: tuple[str, ...] = ("img/xen", "img/vmlinuz", "img/initrd-dom0.cpio.gz", "img/rootfs.ext4")


@dataclass(frozen=True)
class Problem:
    """One missing thing.  ``fixable`` means build() can fix it by installing ``package`` with apt."""

    message: str
    fixable: bool = False
    package: str | None = None

    def __str__(self) -> str:
        return self.message


def default_workdir() -> Path:
    return Path(os.environ.get("XENLAB_DIR", "/var/tmp/xennet-xenlab"))


def _existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    return p


def _which(tool: str) -> str | None:
    # modprobe/depmod/mke2fs live in /sbin, which is not on every user's PATH
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which(tool, path=path)


def missing_tools() -> list[Problem]:
    out: list[Problem] = []
    for tool, pkg in HOST_TOOLS.items():
        if _which(tool) is None:
            out.append(Problem(f"missing host tool {tool} (Debian package {pkg})", True, pkg))
    if not BUSYBOX.is_file() or not _is_static(BUSYBOX):
        out.append(
            Problem(f"missing static busybox at {BUSYBOX} (Debian package {BUSYBOX_PKG})", True, BUSYBOX_PKG)
        )
    return out


def _is_static(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    # a dynamically linked ELF names its interpreter (PT_INTERP) near the start
    return head[:4] == b"\x7fELF" and b"ld-linux" not in head


def check_disk(workdir: Path, need: int = MIN_DISK) -> list[Problem]:
    st = shutil.disk_usage(_existing_parent(workdir))
    if st.free < need:
        return [
            Problem(f"not enough free disk at {workdir}: {st.free / GIB:.1f} GiB free, need {need / GIB:.1f}")
        ]
    return []


def mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_memory(need: int = MIN_MEM) -> list[Problem]:
    avail = mem_available()
    if avail < need:
        return [Problem(f"not enough free memory: {avail / GIB:.1f} GiB available, need {need / GIB:.1f}")]
    return []


def check_root() -> list[Problem]:
    if os.geteuid() != 0:
        return [Problem("must run as root (apt-get, debootstrap and chroot need it)")]
    return []


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror URL apt is configured with (deb822 .sources first, then sources.list)."""
    cands: list[Path] = sorted((sources_dir / "sources.list.d").glob("*.sources"))
    for f in cands:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            suites = fields.get("suites", "").split()
            if SUITE in suites and "uris" in fields:
                return fields["uris"].split()[0]
    sl = sources_dir / "sources.list"
    try:
        for line in sl.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                i = 1
                while i < len(parts) and parts[i].startswith("["):
                    # skip [options]
                    while i < len(parts) and not parts[i].endswith("]"):
                        i += 1
                    i += 1
                if i + 1 < len(parts) and parts[i + 1] == SUITE:
                    return parts[i]
    except OSError:
        pass
    return None


def check_mirror(timeout: float = 8.0) -> list[Problem]:
    mirror = apt_mirror()
    if mirror is None:
        return [Problem(f"no Debian {SUITE} mirror configured in /etc/apt/sources.list(.d)")]
    import urllib.request  # heavy (http, email, ssl): only here

    url = f"{mirror.rstrip('/')}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status != 200:
                return [Problem(f"Debian mirror {url} answered HTTP {r.status}")]
    except Exception as e:  # noqa: BLE001 - any failure is a reason to skip
        return [Problem(f"Debian mirror {url} unreachable: {e}")]
    return []


def check_debs_known() -> list[Problem]:
    """The guest .debs must be known to apt (``apt-cache policy`` shows a candidate)."""
    if _which("apt-cache") is None:
        return [Problem("apt-cache not found: not a Debian host?")]
    out: list[Problem] = []
    for pkg in (*GUEST_DEBS, "xen-utils-4.17"):
        try:
            r = subprocess.run(
                ["apt-cache", "policy", pkg], capture_output=True, text=True, timeout=30, check=False
            )
        except subprocess.TimeoutExpired:
            out.append(Problem(f"apt-cache policy {pkg} timed out"))
            continue
        cand = [ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if "Candidate:" in ln]
        if not cand or cand[0] in ("", "(none)"):
            out.append(Problem(f"package {pkg} unknown to apt (apt-get update? {SUITE} main enabled?)"))
    return out


def built_images(workdir: Path) -> list[Problem]:
    return [
        Problem(f"lab image {workdir / rel} missing: run `xennet xenlab build` first")
        for rel in IMAGES
        if not (workdir / rel).is_file()
    ]


def has_rootfs(workdir: Path) -> bool:
    """A previous build made the rootfs (then the mirror is not needed unless package versions change)."""
    return (workdir / "stamps" / "rootfs").is_file()


def preflight_build(workdir: Path, *, network: bool | None = None) -> list[Problem]:
    """Problems for build(): fixable ones (missing tools) build() installs itself.

    ``network=None`` probes the Debian mirror only when no rootfs has been built yet.
    """
    if network is None:
        network = not has_rootfs(workdir)
    probs = check_root() + check_disk(workdir)
    if _which("apt-get") is None:
        probs.append(Problem("apt-get not found: not a Debian host"))
        probs += missing_tools()
        return probs
    probs += missing_tools()
    probs += check_debs_known()
    if network:
        probs += check_mirror()
    return probs


def preflight_up(workdir: Path) -> list[Problem]:
    probs: list[Problem] = []
    if _which("qemu-system-x86_64") is None:
        probs.append(Problem("missing host tool qemu-system-x86_64 (Debian package qemu-system-x86)", True))
    probs += check_memory()
    probs += built_images(workdir)
    return probs


def blocking(problems: list[Problem]) -> list[Problem]:
    """The problems build() cannot fix itself."""
    return [p for p in problems if not p.fixable]


def reason(problems: list[Problem]) -> str:
    return "; ".join(p.message for p in problems)
