"""Scripts that run inside the lab's dom0 and domUs (written into the initramfs images and the rootfs by
build())."""

from __future__ import annotations

READY_MARKER = "=== XENLAB DOM0 READY"
INITRAMFS_MARKER = "=== xenlab initramfs"
ROOTFS_MARKER = "=== xenlab rootfs init"
TOOLSTACK_MARKER = "=== xenlab toolstack up"

DOMU_INITRAMFS_MARKER = "=== xenlab domU initramfs"
#: printed by domU-init.sh once the domU's devices and modules are up, before it fetches its script
DOMU_UP_MARKER = "=== XENLAB DOMU UP"
#: printed right before the domU runs its script (from xenstore ``data/xenlab-script``)
DOMU_SCRIPT_MARKER = "=== XENLAB DOMU SCRIPT START"
#: printed after the script, followed by ``rc=N``; then the domU powers off
DOMU_DONE_MARKER = "=== XENLAB DOMU DONE"
#: CPUs of the emulated machine (QEMU -smp): the most a domU may have; dom0 uses them all
LAB_CPUS = 2

#: dom0's bridge for kernel-netback vifs (xl's default vif-bridge hotplug script adds them to it)
BRIDGE = "xenbr0"
BRIDGE_ADDR = "192.0.2.1"
BRIDGE_CIDR = f"{BRIDGE_ADDR}/24"

#: the domU's script, relative to its xenstore home (/local/domain/D/); dom0 writes it while paused
DOMU_SCRIPT_KEY = "data/xenlab-script"
#: in the rootfs: domU kernel, initramfs and init (xl create in dom0 uses the first two).  The kernel
#: is the ELF inside img/vmlinuz, unpacked at build time: libxenguest would otherwise xz-decompress
#: 66 MB under TCG for every domU (~10 s).
DOMU_KERNEL = "/xenlab/vmlinux"
DOMU_INITRD = "/xenlab/initrd-domU.cpio.gz"
DOMU_INIT_PATH = "/xenlab/domU-init.sh"
#: the domU's root disk as dom0 sees it: the rootfs image attached to QEMU a second time, read-only
DOMU_ROOT_DEV = "/dev/vdb"
#: its hotplug script: Xen's `block` script takes seconds under TCG (locking, sharing checks) for what
#: a shared read-only disk needs: the device number, and "connected"
DOMU_BLOCK_SCRIPT_PATH = "/xenlab/block-ro"
DOMU_BLOCK_SCRIPT = """#!/bin/sh
# xl hotplug script for the domUs' shared read-only root disk (XENBUS_PATH is the vbd backend)
case "$1" in
add)
  dev=$(xenstore-read "$XENBUS_PATH/params") || exit 1
  xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c '%t:%T' "$dev")" \\
    "$XENBUS_PATH/physical-device-path" "$dev" "$XENBUS_PATH/hotplug-status" connected ;;
esac
exit 0
"""

#: modules the initramfs needs to mount the ext4 root from the virtio disk (crc32c_generic before ext4).
INITRD_MODULES: tuple[str, ...] = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4")
#: modules copied into the rootfs.
ROOTFS_MODULES: tuple[str, ...] = (
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xenfs",
    "xen-privcmd",
    "xen-netback",
    "xen-netfront",
    "xen-blkback",
    "xen-blkfront",
    "bridge",
    "tun",
    "veth",
    "dummy",
    "ext4",
    "crc32c_generic",
)
#: modules the domU initramfs needs to mount the (read-only) ext4 root from xen-blkfront's /dev/xvda.
DOMU_INITRD_MODULES: tuple[str, ...] = ("crc32c_generic", "xen-blkfront", "ext4")

# Stage 1 (busybox initramfs): mount the ext4 rootfs from /dev/vda and switch_root into stage 2.
INITRAMFS_INIT = f"""#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "{INITRAMFS_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
for m in {" ".join(INITRD_MODULES)}; do modprobe $m || echo "modprobe $m FAILED"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 /dev/vda /newroot || {{ echo "=== xenlab FATAL: cannot mount /dev/vda"; exec sh; }}
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /xenlab/dom0-init.sh
"""

#: the console shell's rc file: defines ``xlrun``, the receiving end of lab.Lab.run
CONSOLE_RC_PATH = "/xenlab/console-rc.sh"
# The host types one line per command: ``xlrun TAG TIMEOUT MD5 BASE64``, MD5 over "TAG TIMEOUT BASE64".
# A line that lost characters on the serial line fails the check (or is not even an xlrun call) and
# is answered XLNAK without running anything; the host then sends it again.
CONSOLE_RC = r"""PS1= PS2=
xlrun() {
  if [ $# -ne 4 ] || [ "$(printf '%s %s %s' "$1" "$2" "$4" | md5sum)" != "$3  -" ]; then
    printf '\nXLNAK\n'; return 0
  fi
  printf '\n%s%s\n' XLB_ "$1"
  printf '%s' "$4" | base64 -d > /tmp/xl-$1.sh
  timeout -k 5 "$2" bash /tmp/xl-$1.sh </dev/null 2>&1
  printf '\n%s%s rc=%d\n' XLE_ "$1" $?
  rm -f /tmp/xl-$1.sh
}
"""

# Stage 2 (PID 1 on the Debian rootfs): no systemd; mounts, xen modules, toolstack by hand, then a
# root shell on hvc0 with echo off (the host drives it, see lab.Lab.run).
DOM0_INIT = f"""#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
# devtmpfs lacks these; Xen's hotplug locking (locking.sh) spins forever without /dev/stdin
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /var/log/xen /var/lib/xen
mount -t tmpfs tmpfs /var/log/xen; mount -t tmpfs tmpfs /var/lib/xen
mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console
hostname dom0
echo "{ROOTFS_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
for m in xen-evtchn xen-gntdev xen-gntalloc xenfs xen-privcmd xen-netback xen-blkback bridge tun; do
  modprobe $m || echo "modprobe $m FAILED"
done
mount -t xenfs xenfs /proc/xen
XENSTORED_ROOTDIR=/run/xenstored xenstored --pid-file /run/xen/xenstored.pid
for i in $(seq 1 100); do xenstore-ls / >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
echo "{TOOLSTACK_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
# kernel-netback vifs join this bridge (xl's vif-bridge hotplug script)
ip link add {BRIDGE} type bridge && ip addr add {BRIDGE_CIDR} dev {BRIDGE} && ip link set {BRIDGE} up \\
  || echo "=== xenlab: bridge {BRIDGE} FAILED"
dmesg -n 1
stty -F /dev/hvc0 -echo
echo "{READY_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
while true; do
  setsid bash -c 'exec env PS1= PS2= bash --rcfile {CONSOLE_RC_PATH} --noprofile --noediting -i \\
    </dev/hvc0 >/dev/hvc0 2>&1'
  echo "=== xenlab console shell exited, restarting" >/dev/hvc0
  stty -F /dev/hvc0 -echo
done
"""

# domU stage 1 (busybox initramfs): mount the rootfs image READ-ONLY from xen-blkfront and switch_root.
DOMU_INITRAMFS_INIT = f"""#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "{DOMU_INITRAMFS_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
for m in {" ".join(DOMU_INITRD_MODULES)}; do modprobe $m || echo "modprobe $m FAILED"; done
i=0; while [ ! -b /dev/xvda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
# noload: never replay a journal on a read-only disk shared with other domUs
mount -t ext4 -o ro,noload /dev/xvda /newroot || {{
  echo "=== xenlab FATAL: cannot mount /dev/xvda"; echo o > /proc/sysrq-trigger; sleep 60; }}
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot {DOMU_INIT_PATH}
"""

# domU stage 2 (PID 1 on the read-only Debian rootfs): tmpfs where writes happen, the Xen devices,
# xen-netfront only with xennet.kfront=1, then the script from xenstore; then power off.
DOMU_INIT = f"""#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
export PYTHONDONTWRITEBYTECODE=1 HOME=/root LC_ALL=C.UTF-8 TERM=dumb
up() {{ cut -d' ' -f1 /proc/uptime; }}
mount -t proc proc /proc; mount -t sysfs sys /sys
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
for d in /run /tmp /var/tmp /var/log /var/lib/xen /root; do mount -t tmpfs tmpfs $d; done
mkdir -p /run/lock /run/xen
hostname domU
echo "=== xenlab domU rootfs init, uptime $(up)"
for m in xen-evtchn xen-gntdev xen-gntalloc xenfs tun; do modprobe $m || echo "modprobe $m FAILED"; done
mount -t xenfs xenfs /proc/xen
KFRONT=0
for a in $(cat /proc/cmdline); do case $a in xennet.kfront=1) KFRONT=1;; esac; done
# without xen-netfront the vifs stay unbound (a userspace netfront drives them)
[ $KFRONT = 1 ] && {{ modprobe xen-netfront || echo "modprobe xen-netfront FAILED"; }}
ip link set lo up
DOMID=$(xenstore-read domid 2>/dev/null)
echo "{DOMU_UP_MARKER} domid=$DOMID kfront=$KFRONT uptime=$(up)"
if xenstore-read -R {DOMU_SCRIPT_KEY} >/tmp/xenlab-script.sh; then
  echo "{DOMU_SCRIPT_MARKER}, uptime $(up)"
  (cd /tmp && bash /tmp/xenlab-script.sh </dev/null 2>&1)
  rc=$?
else
  echo "=== xenlab: cannot read {DOMU_SCRIPT_KEY} from xenstore"
  rc=255
fi
echo "{DOMU_DONE_MARKER} rc=$rc, uptime $(up)"
sleep 1  # let xenconsoled drain the console ring before the domain goes away
echo o > /proc/sysrq-trigger
while true; do sleep 60; done
"""
