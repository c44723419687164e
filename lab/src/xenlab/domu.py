"""domU pieces that need no running lab: the xl config, the script size limit, console parsing.

The running side (``Lab.start_domu`` and friends) is in :mod:`xenlab.lab`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import guest

#: xs_wire.h: a xenstore message body (for a write: path, NUL, value) is at most this long
XENSTORE_PAYLOAD_MAX = 4096
#: the longest domid (DOMID_FIRST_RESERVED - 1 = 32751 has 5 digits)
_LONGEST_SCRIPT_PATH = f"/local/domain/32751/{guest.DOMU_SCRIPT_KEY}"
#: the longest script start_domu accepts: what fits into one xenstore write for any domid
MAX_SCRIPT_BYTES = XENSTORE_PAYLOAD_MAX - len(_LONGEST_SCRIPT_PATH) - 1

CONSOLE_DIR = "/var/log/xen/console"
#: where start_domu keeps each domU's xl config and script in dom0 (a tmpfs)
DOM0_DOMU_DIR = "/run/xenlab/domu"

#: the domU's root disk: dom0's /dev/vdb (the rootfs image, read-only), with the lab's hotplug script
DISK_SPEC = f"vdev=xvda,access=r,script={guest.DOMU_BLOCK_SCRIPT_PATH},target={guest.DOMU_ROOT_DEV}"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DONE_RE = re.compile(re.escape(guest.DOMU_DONE_MARKER) + r" rc=(\d+)")


def check_name(name: str) -> str:
    """``name`` if it is a safe domain name (it ends up in shell commands and file names), else ValueError."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"bad domU name {name!r}: use [A-Za-z0-9_.-], at most 64 characters")
    return name


def check_script(script: str) -> bytes:
    """The script as bytes; ValueError if it does not fit into one xenstore value."""
    data = script.encode()
    if len(data) > MAX_SCRIPT_BYTES:
        raise ValueError(
            f"domU script is {len(data)} bytes; a xenstore value holds at most {MAX_SCRIPT_BYTES} "
            f"(a {XENSTORE_PAYLOAD_MAX}-byte message minus the path {guest.DOMU_SCRIPT_KEY}): "
            "keep the script short and put the work in a module of the rootfs"
        )
    return data


def script_path(domid: int) -> str:
    """The absolute xenstore path domU-init.sh reads its script from."""
    return f"/local/domain/{domid}/{guest.DOMU_SCRIPT_KEY}"


def console_log(name: str) -> str:
    """The domU's console log in dom0 (xenconsoled --log=guest)."""
    return f"{CONSOLE_DIR}/guest-{check_name(name)}.log"


def _xl_str(s: str) -> str:
    if any(c in s for c in "'\"\\\n\r"):
        raise ValueError(f"quote, backslash or newline in an xl config value: {s!r}")
    return f"'{s}'"


def xl_config(
    name: str,
    *,
    vifs: Sequence[str] = (),
    kernel_netfront: bool = True,
    memory_mb: int = 320,
    vcpus: int = 1,
    extra_args: str = "",
) -> str:
    """The xl config of a lab domU: PV, the lab kernel, the read-only rootfs disk, ``vifs`` (xl vif specs)."""
    check_name(name)
    if not 1 <= vcpus <= guest.LAB_CPUS:
        raise ValueError(f"vcpus must be 1..{guest.LAB_CPUS} (the lab machine's CPUs), not {vcpus}")
    extra = f"console=hvc0 loglevel=4 xennet.kfront={int(kernel_netfront)} {extra_args}".strip()
    lines = [
        f"name = {_xl_str(name)}",
        "type = 'pv'",
        f"kernel = {_xl_str(guest.DOMU_KERNEL)}",
        f"ramdisk = {_xl_str(guest.DOMU_INITRD)}",
        f"extra = {_xl_str(extra)}",
        f"memory = {int(memory_mb)}",
        f"vcpus = {int(vcpus)}",
        f"disk = [ {_xl_str(DISK_SPEC)} ]",
        f"vif = [ {', '.join(_xl_str(v) for v in vifs)} ]",
        "on_poweroff = 'destroy'",
        "on_reboot = 'destroy'",
        "on_crash = 'destroy'",
    ]
    return "\n".join(lines) + "\n"


def done_rc(console: str) -> int | None:
    """The script's exit code from a domU console (``=== XENLAB DOMU DONE rc=N``), None if not done."""
    m = _DONE_RE.search(console)
    return int(m.group(1)) if m else None
