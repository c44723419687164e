/* The sim's grant-copy executor: gntdev segments, checked as Xen's gnttab_copy checks each
 * op, in Xen's order (domains, source buffer, destination buffer, bounds), then copied. */
#include "xn_core.h"

int xn_grant_check(struct xn_buf table, uint32_t ref, uint32_t domid, int write, uint32_t nr_frames,
                   uint32_t *frame)
{
    if (ref >= table.len / 8)
        return XN_GNTST_BAD_GNTREF;
    const unsigned char *e = table.p + 8 * (size_t)ref;
    uint16_t flags = xn_ld16(e);
    uint16_t gdomid = xn_ld16(e + 2);
    uint32_t f = xn_ld32(e + 4);
    if ((flags & XN_GTF_TYPE_MASK) != XN_GTF_PERMIT_ACCESS || gdomid != domid)
        return XN_GNTST_GENERAL_ERROR; /* Xen: "Bad flags or dom" */
    if (write && (flags & XN_GTF_READONLY))
        return XN_GNTST_GENERAL_ERROR; /* Xen: "Attempt to write-pin a r/o grant entry" */
    if (f >= nr_frames)
        return XN_GNTST_BAD_PAGE;
    *frame = f;
    return XN_GNTST_OKAY;
}

static const struct xn_domain *find(const struct xn_domain *d, size_t n, uint32_t domid)
{
    for (size_t i = 0; i < n; i++)
        if (d[i].domid == domid)
            return &d[i];
    return NULL;
}

struct side {
    unsigned char *mem; /* the memory the bytes are in */
    size_t page;        /* byte offset of their 4 KiB page */
    uint32_t off;       /* offset inside it */
};

static int one(const struct xn_seg *s, uint32_t own_domid, struct xn_buf own_mem, uint64_t own_base,
               const struct xn_domain *doms, size_t ndoms)
{
    int is_gref[2] = {!!(s->flags & XN_GNTCOPY_SOURCE_GREF), !!(s->flags & XN_GNTCOPY_DEST_GREF)};
    const struct xn_domain *d[2] = {NULL, NULL};
    uint32_t ref[2], goff[2];
    uint64_t virt[2];
    for (int k = 0; k < 2; k++) {
        const struct xn_seg *x = s;
        uint32_t r = k ? x->dest.foreign.ref : x->source.foreign.ref;
        uint16_t o = k ? x->dest.foreign.offset : x->source.foreign.offset;
        uint16_t dm = k ? x->dest.foreign.domid : x->source.foreign.domid;
        ref[k] = r;
        goff[k] = o;
        virt[k] = k ? x->dest.virt : x->source.virt;
        if (is_gref[k]) {
            d[k] = find(doms, ndoms, dm == XN_DOMID_SELF ? own_domid : dm);
            if (!d[k])
                return XN_GNTST_BAD_DOMAIN;
        }
    }
    struct side w[2];
    for (int k = 0; k < 2; k++) {
        if (is_gref[k]) {
            uint32_t frame = 0;
            int st = xn_grant_check(d[k]->table, ref[k], own_domid, k == 1, (uint32_t)(d[k]->mem.len / XN_PAGE_SIZE),
                                    &frame);
            if (st != XN_GNTST_OKAY)
                return st;
            w[k].mem = d[k]->mem.p;
            w[k].page = (size_t)frame * XN_PAGE_SIZE;
            w[k].off = goff[k];
        } else {
            uint64_t rel = virt[k] - own_base;
            if (virt[k] < own_base || rel >= own_mem.len - own_mem.len % XN_PAGE_SIZE) /* whole pages only */
                return XN_GNTST_BAD_PAGE;
            w[k].mem = own_mem.p;
            w[k].page = (size_t)(rel - rel % XN_PAGE_SIZE);
            w[k].off = (uint32_t)(rel % XN_PAGE_SIZE);
        }
    }
    if (w[0].off + (uint32_t)s->len > XN_PAGE_SIZE || w[1].off + (uint32_t)s->len > XN_PAGE_SIZE)
        return XN_GNTST_BAD_COPY_ARG;
    if (s->len)
        memmove(w[1].mem + w[1].page + w[1].off, w[0].mem + w[0].page + w[0].off, s->len);
    return XN_GNTST_OKAY;
}

long xn_grant_copy(struct xn_buf segs, uint32_t nsegs, uint32_t own_domid, struct xn_buf own_mem, uint64_t own_base,
                   const struct xn_domain *domains, size_t ndomains, struct xn_err *err)
{
    if (segs.len < (size_t)nsegs * sizeof(struct xn_seg))
        return xn_fail(err, "segment buffer holds fewer than %u segments", nsegs);
    long failed = 0;
    for (uint32_t i = 0; i < nsegs; i++) {
        struct xn_seg s;
        XN_GET(s, segs.p, i);
        s.status = (int16_t)one(&s, own_domid, own_mem, own_base, domains, ndomains);
        failed += s.status != XN_GNTST_OKAY;
        memcpy(segs.p + (size_t)i * sizeof s + offsetof(struct xn_seg, status), &s.status, sizeof s.status);
    }
    return failed;
}

long xn_segment_domids(struct xn_buf segs, uint32_t nsegs, uint32_t own_domid, uint32_t *out, size_t cap,
                       struct xn_err *err)
{
    if (segs.len < (size_t)nsegs * sizeof(struct xn_seg))
        return xn_fail(err, "segment buffer holds fewer than %u segments", nsegs);
    size_t n = 0;
    for (uint32_t i = 0; i < nsegs; i++) {
        struct xn_seg s;
        XN_GET(s, segs.p, i);
        for (int k = 0; k < 2; k++) {
            if (!(s.flags & (k ? XN_GNTCOPY_DEST_GREF : XN_GNTCOPY_SOURCE_GREF)))
                continue;
            uint32_t dm = k ? s.dest.foreign.domid : s.source.foreign.domid;
            if (dm == XN_DOMID_SELF)
                dm = own_domid;
            size_t j = 0;
            while (j < n && out[j] != dm)
                j++;
            if (j < n)
                continue;
            if (n == cap)
                return xn_fail(err, "a batch names more than %zu domains", cap);
            /* keep it sorted: insertion */
            size_t at = n;
            while (at > 0 && out[at - 1] > dm) {
                out[at] = out[at - 1];
                at--;
            }
            out[at] = dm;
            n++;
        }
    }
    return (long)n;
}
