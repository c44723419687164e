/*
 * Userspace prelude for Xen's public headers (Debian libxen-dev).
 *
 * __XEN_TOOLS__ selects the latest interface version (as the Xen tools build
 * does); from interface 0x00030208 on, ring.h expects the includer to supply
 * xen_mb/xen_rmb/xen_wmb.  errno.h must come before xs_wire.h, or xsd_errors[]
 * is not defined.
 */
#ifndef XENNET_TEST_XEN_PRELUDE_H
#define XENNET_TEST_XEN_PRELUDE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define __XEN_TOOLS__ 1
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/netif.h>
#include <xen/io/xs_wire.h>

#endif
