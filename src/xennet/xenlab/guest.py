"""Scripts that run inside the lab's dom0 (written into the initramfs and the rootfs by build())."""

from __future__ import annotations

READY_MARKER = "=== XENLAB DOM0 READY"
INITRAMFS_MARKER = "=== xenlab initramfs"
ROOTFS_MARKER = "=== xenlab rootfs init"
TOOLSTACK_MARKER = "=== xenlab toolstack up"

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
for m in xen-evtchn xen-gntdev xen-gntalloc xenfs xen-privcmd xen-netback xen-blkback bridge; do
  modprobe $m || echo "modprobe $m FAILED"
done
mount -t xenfs xenfs /proc/xen
XENSTORED_ROOTDIR=/run/xenstored xenstored --pid-file /run/xen/xenstored.pid
for i in $(seq 1 100); do xenstore-ls / >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
echo "{TOOLSTACK_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
dmesg -n 1
stty -F /dev/hvc0 -echo
echo "{READY_MARKER}, uptime $(cut -d' ' -f1 /proc/uptime)"
while true; do
  setsid bash -c 'exec env PS1= PS2= bash --norc --noprofile --noediting -i </dev/hvc0 >/dev/hvc0 2>&1'
  echo "=== xenlab console shell exited, restarting" >/dev/hvc0
  stty -F /dev/hvc0 -echo
done
"""
