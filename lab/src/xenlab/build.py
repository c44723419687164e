"""Build the Xen-in-QEMU lab: Xen 4.17 + Debian bookworm dom0 images, all under one workdir.

Steps are cached: each writes ``stamps/<step>`` holding a hash of its inputs (including the keys of the
steps it builds on); a later run skips a step whose stamp matches.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import lzma
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import guest
from .preflight import (
    BUSYBOX,
    GUEST_DEBS,
    ROOTFS_PACKAGES,
    SUITE,
    apt_mirror,
    blocking,
    missing_tools,
    preflight_build,
    reason,
)

Progress = Callable[[str], None]

XENLAB_SRC = Path(__file__).resolve().parent  # the lab: its transfer tool runs in the domains


def _xennet_src() -> Path:
    """The xennet under test, as installed (an editable install points at the checkout)."""
    spec = importlib.util.find_spec("xennet")
    if spec is None or spec.origin is None:
        raise BuildError("xennet is not installed: the lab puts the xennet under test in its rootfs")
    return Path(spec.origin).parent


ROOTFS_PYTHONPATH = "usr/local/lib/python3.11/dist-packages"  # on bookworm python3's sys.path
ROOTFS_IMAGE_SIZE = "1600M"


class BuildError(RuntimeError):
    pass


@dataclass
class BuildResult:
    workdir: Path
    kernel_version: str
    xen: Path
    vmlinuz: Path
    initrd: Path
    rootfs_image: Path
    initrd_domu: Path
    timings: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    disk_bytes: int = 0


def _run(cmd: list[str], *, log: Path | None = None, timeout: float = 900, cwd: Path | None = None) -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    try:
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from e
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise BuildError(f"failed (rc={r.returncode}): {' '.join(cmd)}\n{tail}")
    return r.stdout


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def _file_hash(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:20]


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


class _Steps:
    def __init__(
        self, workdir: Path, progress: Progress, result_timings: dict[str, float], cached: list[str]
    ):
        self.stamps = workdir / "stamps"
        self.stamps.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.timings = result_timings
        self.cached = cached

    def run(
        self, name: str, inputs: Iterable[str], fn: Callable[[], None], outputs: Iterable[Path] = ()
    ) -> str:
        key = _hash(name, *inputs)
        stamp = self.stamps / name
        outs = list(outputs)
        if stamp.is_file() and stamp.read_text().strip() == key and all(o.exists() for o in outs):
            self.progress(f"[xenlab build] {name}: cached")
            self.cached.append(name)
            self.timings[name] = 0.0
            return key
        stamp.unlink(missing_ok=True)
        self.progress(f"[xenlab build] {name} ...")
        t0 = time.monotonic()
        fn()
        dt = time.monotonic() - t0
        stamp.write_text(key + "\n")
        self.timings[name] = dt
        self.progress(f"[xenlab build] {name}: done in {dt:.1f}s")
        return key


def _apt_candidate(pkg: str) -> str:
    out = _run(["apt-cache", "policy", pkg], timeout=60)
    for ln in out.splitlines():
        if "Candidate:" in ln:
            return ln.split(":", 1)[1].strip()
    raise BuildError(f"no apt candidate for {pkg}")


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", "linux-image-amd64"], timeout=60)
    for ln in out.splitlines():
        ln = ln.strip()
        if ln.startswith("Depends:") and "linux-image-6" in ln:
            return ln.split()[1]
    raise BuildError("cannot resolve linux-image-amd64 to a versioned kernel package")


def _module_files(ex: Path, kv: str, modules: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for m in modules:
        out = _run(["modprobe", "-d", str(ex), "-S", kv, "--show-depends", m], timeout=60)
        for ln in out.splitlines():
            parts = ln.split()
            if parts and parts[0] == "insmod":
                f = Path(parts[1])
                if f not in files:
                    files.append(f)
    return files


def _copy_modules(ex: Path, kv: str, modules: Iterable[str], dest_root: Path) -> None:
    for f in _module_files(ex, kv, modules):
        rel = f.relative_to(ex)
        (dest_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest_root / rel)
    mdir = ex / "lib/modules" / kv
    dst = dest_root / "lib/modules" / kv
    dst.mkdir(parents=True, exist_ok=True)
    for p in mdir.glob("modules.builtin*"):
        shutil.copy2(p, dst / p.name)
    shutil.copy2(mdir / "modules.order", dst / "modules.order")
    _run(["depmod", "-b", str(dest_root), kv])


def _cpio_gz(src: Path, out: Path) -> None:
    files = subprocess.run(["find", "."], cwd=src, capture_output=True, check=True, timeout=120).stdout
    cp = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=src,
        input=files,
        capture_output=True,
        check=True,
        timeout=300,
    )
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        f.write(cp.stdout)
    tmp.replace(out)


def _make_initrd(workdir: Path, ex: Path, kv: str, init: str, modules: Iterable[str], out: Path) -> None:
    """A busybox initramfs at ``out``: static busybox, ``modules`` with their deps, ``init`` as /init."""
    d = workdir / (out.name + ".tmp.d")
    shutil.rmtree(d, ignore_errors=True)
    for sub in ("bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "root", "run", "newroot"):
        (d / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, d / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    for a in applets:
        if a != "busybox" and not (d / "bin" / a).exists():
            (d / "bin" / a).symlink_to("busybox")
    (d / "sbin/modprobe").symlink_to("../bin/busybox")  # busybox modprobe at /sbin/modprobe
    _copy_modules(ex, kv, modules, d)
    (d / "init").write_text(init)
    (d / "init").chmod(0o755)
    _cpio_gz(d, out)
    shutil.rmtree(d)


def unpack_kernel(bzimage: Path, out: Path) -> None:
    """The ELF kernel inside ``bzimage`` (its xz or gzip payload) to ``out``; a copy if there is none."""
    data = bzimage.read_bytes()
    elf = b""
    for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08"):
        i = data.find(magic)
        if i < 0:
            continue
        try:
            if magic.startswith(b"\xfd"):
                elf = lzma.LZMADecompressor().decompress(data[i:])
            else:
                elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[i:])
        except (lzma.LZMAError, zlib.error):
            continue
        if elf[:4] == b"\x7fELF":
            break
        elf = b""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(elf or data)
    tmp.replace(out)


def install_host_tools(progress: Progress, log: Path | None = None) -> list[str]:
    """apt-get install the missing host tools (never the guest packages).  Returns what it installed."""
    pkgs = sorted({p.package for p in missing_tools() if p.package})
    if not pkgs:
        return []
    progress(f"[xenlab build] apt-get install {' '.join(pkgs)}")
    _run(["apt-get", "update", "-qq"], log=log, timeout=300)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs], log=log, timeout=900)
    still = missing_tools()
    if still:
        raise BuildError("still missing after apt-get install: " + reason(still))
    return pkgs


def build(workdir: Path, *, progress: Progress = print, check_network: bool | None = None) -> BuildResult:
    """Build (or refresh the cache of) everything `lab.up()` needs under ``workdir``."""
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    problems = blocking(preflight_build(workdir, network=check_network))
    if problems:
        raise BuildError("preflight: " + reason(problems))
    timings: dict[str, float] = {}
    cached: list[str] = []
    log = workdir / "build.log"
    steps = _Steps(workdir, progress, timings, cached)

    t0 = time.monotonic()
    installed = install_host_tools(progress, log)
    timings["host-tools"] = time.monotonic() - t0
    progress(
        f"[xenlab build] host-tools: {'installed ' + ' '.join(installed) if installed else 'all present'}"
        f" ({timings['host-tools']:.1f}s)"
    )

    debs, ex, img, rootfs = workdir / "debs", workdir / "ex", workdir / "img", workdir / "rootfs"
    img.mkdir(exist_ok=True)
    kpkg = _kernel_package()
    kv = kpkg.removeprefix("linux-image-")
    versions = [f"{p}={_apt_candidate(p)}" for p in (GUEST_DEBS[0], kpkg)]

    def do_debs() -> None:
        shutil.rmtree(debs, ignore_errors=True)
        shutil.rmtree(ex, ignore_errors=True)
        debs.mkdir()
        ex.mkdir()
        _run(["apt-get", "download", "-qq", GUEST_DEBS[0], kpkg], cwd=debs, log=log, timeout=600)
        for d in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(d), str(ex)], log=log)
        _run(["depmod", "-b", str(ex), kv], log=log)
        xen_gz = next((ex / "boot").glob("xen-4.17*-amd64.gz"), None)
        if xen_gz is None:
            raise BuildError("no xen-4.17*-amd64.gz in the hypervisor package")
        # gunzipped it is a 32-bit multiboot ELF: qemu -kernel loads it
        (img / "xen").write_bytes(gzip.decompress(xen_gz.read_bytes()))
        shutil.copy2(ex / "boot" / f"vmlinuz-{kv}", img / "vmlinuz")

    k_debs = steps.run("debs", versions, do_debs, [img / "xen", img / "vmlinuz", ex / "lib/modules" / kv])

    mirror = apt_mirror()
    if mirror is None:
        raise BuildError("no Debian mirror configured for apt")

    def do_rootfs() -> None:
        shutil.rmtree(rootfs, ignore_errors=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(ROOTFS_PACKAGES),
                SUITE,
                str(rootfs),
                mirror,
            ],
            log=workdir / "debootstrap.log",
            timeout=1200,
        )
        for p in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            p.unlink()
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)

    k_rootfs = steps.run("rootfs", [SUITE, mirror, *ROOTFS_PACKAGES], do_rootfs, [rootfs / "usr/bin/python3"])

    def do_modules() -> None:
        shutil.rmtree(rootfs / "lib/modules", ignore_errors=True)
        _copy_modules(ex, kv, guest.ROOTFS_MODULES, rootfs)

    k_mods = steps.run("rootfs-modules", [k_debs, k_rootfs, *guest.ROOTFS_MODULES], do_modules)

    xennet_src = _xennet_src()
    src_hash = _hash(_tree_hash(xennet_src), _tree_hash(XENLAB_SRC))

    def do_xennet() -> None:
        for name, src in (("xennet", xennet_src), ("xenlab", XENLAB_SRC)):
            dst = rootfs / ROOTFS_PYTHONPATH / name
            shutil.rmtree(dst, ignore_errors=True)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # byte-compile with the rootfs's own python: the domU root is read-only, and compiling on
        # every import costs seconds under TCG
        _run(
            ["chroot", str(rootfs), "python3", "-m", "compileall", "-q", "/" + ROOTFS_PYTHONPATH],
            log=log,
            timeout=300,
        )

    k_xennet = steps.run("rootfs-xennet", [k_rootfs, src_hash, ROOTFS_PYTHONPATH, "compileall"], do_xennet)

    busybox_hash = _file_hash(BUSYBOX)

    def do_initrd() -> None:
        _make_initrd(workdir, ex, kv, guest.INITRAMFS_INIT, guest.INITRD_MODULES, img / "initrd-dom0.cpio.gz")

    steps.run(
        "initrd",
        [k_debs, guest.INITRAMFS_INIT, *guest.INITRD_MODULES, busybox_hash],
        do_initrd,
        [img / "initrd-dom0.cpio.gz"],
    )

    def do_initrd_domu() -> None:
        _make_initrd(
            workdir, ex, kv, guest.DOMU_INITRAMFS_INIT, guest.DOMU_INITRD_MODULES, img / "initrd-domU.cpio.gz"
        )

    k_initrd_domu = steps.run(
        "initrd-domU",
        [k_debs, guest.DOMU_INITRAMFS_INIT, *guest.DOMU_INITRD_MODULES, busybox_hash],
        do_initrd_domu,
        [img / "initrd-domU.cpio.gz"],
    )

    xenlab_dir = rootfs / "xenlab"
    guest_files = {
        "dom0-init.sh": guest.DOM0_INIT,
        Path(guest.DOMU_INIT_PATH).name: guest.DOMU_INIT,
        Path(guest.CONSOLE_RC_PATH).name: guest.CONSOLE_RC,
        Path(guest.DOMU_BLOCK_SCRIPT_PATH).name: guest.DOMU_BLOCK_SCRIPT,
    }
    # the domU's kernel and initramfs, for `xl create` in dom0
    domu_boot = [Path(guest.DOMU_KERNEL).name, Path(guest.DOMU_INITRD).name]

    def do_guest_files() -> None:
        for p in xenlab_dir.glob("*"):
            p.unlink()
        xenlab_dir.mkdir(exist_ok=True)
        for name, text in guest_files.items():
            (xenlab_dir / name).write_text(text)
            (xenlab_dir / name).chmod(0o755)
        unpack_kernel(img / "vmlinuz", xenlab_dir / Path(guest.DOMU_KERNEL).name)
        shutil.copy2(img / "initrd-domU.cpio.gz", xenlab_dir / Path(guest.DOMU_INITRD).name)

    k_guest = steps.run(
        "rootfs-guest-files",
        # k_debs: the kernel; k_initrd_domU: the domU initramfs (both copied in)
        [k_rootfs, k_debs, k_initrd_domu, *guest_files, *guest_files.values(), *domu_boot, "vmlinux"],
        do_guest_files,
        [xenlab_dir / n for n in (*guest_files, *domu_boot)],
    )

    def do_image() -> None:
        out = img / "rootfs.ext4"
        tmp = img / "rootfs.ext4.tmp"
        tmp.unlink(missing_ok=True)
        _run(
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-E",
                "root_owner=0:0",
                "-L",
                "xenroot",
                "-d",
                str(rootfs),
                str(tmp),
                ROOTFS_IMAGE_SIZE,
            ],
            log=log,
            timeout=600,
        )
        tmp.replace(out)

    steps.run(
        "rootfs-image",
        [k_rootfs, k_mods, k_xennet, k_guest, ROOTFS_IMAGE_SIZE],
        do_image,
        [img / "rootfs.ext4"],
    )

    timings["total"] = time.monotonic() - t_all
    res = BuildResult(
        workdir=workdir,
        kernel_version=kv,
        xen=img / "xen",
        vmlinuz=img / "vmlinuz",
        initrd=img / "initrd-dom0.cpio.gz",
        rootfs_image=img / "rootfs.ext4",
        initrd_domu=img / "initrd-domU.cpio.gz",
        timings=timings,
        cached=cached,
        disk_bytes=_du(workdir),
    )
    progress(f"[xenlab build] all done in {timings['total']:.1f}s; workdir {res.disk_bytes / 2**20:.0f} MiB")
    return res
