/* Moving ring entries in batches: out of a shared page once (XSA-155), and into it. */
#include "xn_core.h"

#include <stdarg.h>
#include <stdio.h>

int xn_fail(struct xn_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int check(struct xn_buf page, uint32_t count, uint32_t entry_size, uint32_t nr_ents, struct xn_buf buf,
                 struct xn_err *err)
{
    if (nr_ents == 0 || (nr_ents & (nr_ents - 1)) || entry_size == 0)
        return xn_fail(err, "ring of %u entries of %u bytes", nr_ents, entry_size);
    if (page.len < XN_RING_OFFSET + (size_t)nr_ents * entry_size)
        return xn_fail(err, "ring page too small");
    if (count > nr_ents)
        return xn_fail(err, "%u entries: the ring holds %u", count, nr_ents);
    if (buf.len < (size_t)count * entry_size)
        return xn_fail(err, "buffer too small for %u entries", count);
    return 0;
}

int xn_ring_copy_out(struct xn_buf page, uint32_t start, uint32_t count, uint32_t entry_size, uint32_t nr_ents,
                     struct xn_buf out, struct xn_err *err)
{
    if (check(page, count, entry_size, nr_ents, out, err))
        return -1;
    uint32_t first = start & (nr_ents - 1);
    uint32_t n1 = count < nr_ents - first ? count : nr_ents - first;
    memcpy(out.p, page.p + XN_RING_OFFSET + (size_t)first * entry_size, (size_t)n1 * entry_size);
    if (count > n1)
        memcpy(out.p + (size_t)n1 * entry_size, page.p + XN_RING_OFFSET, (size_t)(count - n1) * entry_size);
    return 0;
}

int xn_ring_copy_in(struct xn_buf page, uint32_t start, uint32_t count, uint32_t entry_size, uint32_t nr_ents,
                    struct xn_buf src, struct xn_err *err)
{
    if (check(page, count, entry_size, nr_ents, src, err))
        return -1;
    uint32_t first = start & (nr_ents - 1);
    uint32_t n1 = count < nr_ents - first ? count : nr_ents - first;
    memcpy(page.p + XN_RING_OFFSET + (size_t)first * entry_size, src.p, (size_t)n1 * entry_size);
    if (count > n1)
        memcpy(page.p + XN_RING_OFFSET, src.p + (size_t)n1 * entry_size, (size_t)(count - n1) * entry_size);
    return 0;
}
