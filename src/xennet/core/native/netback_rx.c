/* netback receive: pack queued packets into the guest's posted buffers as one grant-copy
 * batch, and prepare their responses.  The twin is core/pure/netback_rx.py. */
#include "xn_core.h"

#define MAX_CHUNKS 1024u /* pieces of one packet: a 64 KiB packet has at most 17 data pieces */

struct chunk {
    uint32_t k;   /* piece index */
    uint32_t len; /* bytes */
};

struct copy {
    uint32_t k, src_off, dst_off, n;
};

/* the packet's data pieces (head runs are not data); -1 if there are too many */
static long chunks_of(struct xn_buf vec_pieces, uint32_t piece0, uint32_t npieces, struct chunk *out,
                      struct xn_err *err)
{
    if (((uint64_t)piece0 + npieces) * sizeof(struct xn_piece) > vec_pieces.len)
        return xn_fail(err, "netback_rx: pieces past the vector");
    uint32_t n = 0;
    for (uint32_t k = piece0; k < piece0 + npieces; k++) {
        struct xn_piece pc;
        XN_GET(pc, vec_pieces.p, k);
        if (!(pc.flags & XN_PIECE_RUN) && pc.len) {
            if ((uint32_t)pc.offset + pc.len > XN_PAGE_SIZE) /* a response's size is one page at most */
                return xn_fail(err, "netback_rx: piece %u crosses its page", k);
            if (n == MAX_CHUNKS)
                return xn_fail(err, "netback_rx: a packet of more than %u pieces", MAX_CHUNKS);
            out[n].k = k;
            out[n].len = pc.len;
            n++;
        }
    }
    return n;
}

/* the plan: copies in buffer order; bufstart[b] is the first copy of buffer b */
static uint32_t plan(const struct chunk *c, uint32_t nc, int packing, struct copy *cp, uint32_t *ncp,
                     uint32_t *bufstart)
{
    uint32_t nbuf = 1, fill = 0, n = 0;
    bufstart[0] = 0;
    for (uint32_t idx = 0; idx < nc; idx++) {
        uint32_t len = c[idx].len;
        if (packing == XN_PACK_SEED) {
            if (fill == XN_PAGE_SIZE || (fill + len > XN_PAGE_SIZE && fill > 0 && idx != 0)) {
                bufstart[nbuf++] = n;
                fill = 0;
            }
            cp[n++] = (struct copy){c[idx].k, 0, fill, len};
            fill += len;
            continue;
        }
        uint32_t done = 0;
        while (done < len) {
            if (fill == XN_PAGE_SIZE) {
                bufstart[nbuf++] = n;
                fill = 0;
            }
            uint32_t m = len - done < XN_PAGE_SIZE - fill ? len - done : XN_PAGE_SIZE - fill;
            cp[n++] = (struct copy){c[idx].k, done, fill, m};
            fill += m;
            done += m;
        }
    }
    bufstart[nbuf] = n;
    *ncp = n;
    return nbuf;
}

long xn_netback_rx_estimate(struct xn_buf vec_pieces, uint32_t piece0, uint32_t npieces, int packing, int gso,
                            struct xn_err *err)
{
    struct chunk c[MAX_CHUNKS];
    long nc = chunks_of(vec_pieces, piece0, npieces, c, err);
    if (nc < 0)
        return -1;
    if (nc == 0)
        return 0;
    long count;
    if (packing == XN_PACK_SEED) {
        uint32_t fill = 0;
        count = 1;
        for (long idx = 0; idx < nc; idx++) {
            if (fill == XN_PAGE_SIZE || (fill + c[idx].len > XN_PAGE_SIZE && fill > 0 && idx > 0)) {
                count++;
                fill = 0;
            }
            fill += c[idx].len;
        }
    } else {
        uint64_t total = 0;
        for (long idx = 0; idx < nc; idx++)
            total += c[idx].len;
        count = (long)((total + XN_PAGE_SIZE - 1) / XN_PAGE_SIZE);
    }
    return count + (gso ? 1 : 0);
}

struct rx_rsp {
    uint16_t id, offset, flags;
    int16_t status;
};

#define RET(a, b, c, d, e)                                                                                            \
    do {                                                                                                             \
        res[0] = (a);                                                                                                \
        res[1] = (b);                                                                                                \
        res[2] = (c);                                                                                                \
        res[3] = (d);                                                                                                \
        res[4] = (e);                                                                                                \
        res[5] = staged;                                                                                             \
        res[6] = forwarded;                                                                                          \
        res[7] = repacks;                                                                                            \
        res[8] = planned;                                                                                            \
        return 0;                                                                                                    \
    } while (0)

int xn_netback_rx_plan(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                       struct xn_buf reqs, uint32_t nreqs, int packing, uint32_t max_buffers, uint32_t front_domid,
                       uint64_t mem_base, struct xn_buf segs, uint32_t seg_cap, struct xn_buf plans,
                       struct xn_buf rsps, uint32_t rsp_cap, long res[9], struct xn_err *err)
{
    if (reqs.len < (size_t)nreqs * XN_RX_ENTRY || segs.len < (size_t)seg_cap * sizeof(struct xn_seg) ||
        rsps.len < (size_t)rsp_cap * XN_RX_ENTRY)
        return xn_fail(err, "netback_rx_plan: buffers smaller than their sizes");
    if (rsp_cap > 0xFFFF)
        return xn_fail(err, "netback_rx_plan: rsp_cap above 65535");
    if (front_domid >= XN_DOMID_FIRST_RESERVED)
        return xn_fail(err, "netback_rx_plan: domid %u is not a guest's", front_domid);
    if (plans.len < (size_t)npkts * sizeof(struct xn_rx_plan) ||
        vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt))
        return xn_fail(err, "netback_rx_plan: packet buffers too small");
    static __thread struct chunk c[MAX_CHUNKS];
    static __thread struct copy cp[2 * MAX_CHUNKS + 64];
    static __thread uint32_t bufstart[2 * MAX_CHUNKS + 66];
    long used = 0, nseg = 0, nrsp = 0, staged = 0, forwarded = 0, repacks = 0, planned = 0;
    for (uint32_t j = 0; j < npkts; j++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, start + j);
        long nc = chunks_of(vec_pieces, p.piece0, p.npieces, c, err);
        if (nc < 0)
            return -1;
        if (nc == 0) {
            struct xn_rx_plan z = {(uint32_t)nseg, 0, (uint16_t)nrsp, 0, 0, 0};
            XN_PUT(plans.p, j, z);
            planned += p.len;
            continue;
        }
        uint32_t ncp;
        uint32_t nbuf = plan(c, (uint32_t)nc, packing, cp, &ncp, bufstart);
        uint16_t repacked = 0;
        if (nbuf > max_buffers && packing != XN_PACK_FULL) {
            nbuf = plan(c, (uint32_t)nc, XN_PACK_FULL, cp, &ncp, bufstart);
            repacked = 1;
        }
        int gso = p.gso_size != 0;
        long slots = nbuf + (gso ? 1 : 0);
        if (used + slots > nreqs)
            RET(j, used, nseg, nrsp, slots);
        if (nseg + ncp > seg_cap || nrsp + slots > rsp_cap)
            RET(j, used, nseg, nrsp, 0);
        repacks += repacked;
        planned += p.len;
        struct xn_rx_plan pl = {(uint32_t)nseg, ncp, (uint16_t)nrsp, (uint16_t)slots, (uint16_t)nbuf, repacked};
        XN_PUT(plans.p, j, pl);
        uint16_t f0 = XN_RX_CSUM_FLAGS(p.flags);
        for (uint32_t b = 0; b < nbuf; b++) {
            uint32_t slot = b + (gso && b > 0 ? 1 : 0);
            const unsigned char *rq = reqs.p + (size_t)(used + slot) * XN_RX_ENTRY;
            uint16_t rid = xn_ld16(rq);
            uint32_t gref = xn_ld32(rq + 4);
            uint32_t size = 0;
            for (uint32_t x = bufstart[b]; x < bufstart[b + 1]; x++) {
                struct xn_piece pc;
                XN_GET(pc, vec_pieces.p, cp[x].k);
                struct xn_seg s;
                memset(&s, 0, sizeof s);
                if (pc.domid == XN_DOMID_SELF) {
                    s.source.virt = mem_base + (uint64_t)pc.frame * XN_PAGE_SIZE + pc.offset + cp[x].src_off;
                    s.flags = XN_GNTCOPY_DEST_GREF;
                    staged += cp[x].n;
                } else {
                    s.source.foreign.ref = pc.frame;
                    s.source.foreign.offset = (uint16_t)(pc.offset + cp[x].src_off);
                    s.source.foreign.domid = pc.domid;
                    s.flags = XN_GNTCOPY_SOURCE_GREF | XN_GNTCOPY_DEST_GREF;
                    forwarded += cp[x].n;
                }
                s.dest.foreign.ref = gref;
                s.dest.foreign.offset = (uint16_t)cp[x].dst_off;
                s.dest.foreign.domid = (uint16_t)front_domid;
                s.len = (uint16_t)cp[x].n;
                XN_PUT(segs.p, nseg, s);
                nseg++;
                size += cp[x].n;
            }
            uint16_t rflags = b == 0 ? f0 : 0;
            if (b < nbuf - 1)
                rflags |= XN_RXF_MORE_DATA;
            if (b == 0 && gso)
                rflags |= XN_RXF_EXTRA_INFO;
            struct rx_rsp r = {rid, 0, rflags, (int16_t)size};
            XN_PUT(rsps.p, nrsp, r);
            nrsp++;
            if (b == 0 && gso) {
                unsigned char e[XN_RX_ENTRY] = {XN_EXTRA_GSO, 0};
                xn_st16(e + 2, p.gso_size);
                e[4] = p.gso_type;
                memcpy(rsps.p + (size_t)nrsp * XN_RX_ENTRY, e, sizeof e);
                nrsp++;
            }
        }
        used += slots;
    }
    RET(npkts, used, nseg, nrsp, 0);
}

int xn_netback_rx_respond(struct xn_buf plans, uint32_t npkts, struct xn_buf segs, struct xn_buf rsps,
                          struct xn_buf status_out, struct xn_buf vec_pkts, uint32_t start, long res[5],
                          struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt))
        return xn_fail(err, "netback_rx_respond: buffers too small");
    if (status_out.len < 2 * (size_t)npkts || plans.len < (size_t)npkts * sizeof(struct xn_rx_plan))
        return xn_fail(err, "netback_rx_respond: buffers too small");
    long ok = 0, bad = 0, nbytes = 0, nslots = 0, gso = 0;
    for (uint32_t j = 0; j < npkts; j++) {
        struct xn_rx_plan pl;
        XN_GET(pl, plans.p, j);
        if (((uint64_t)pl.seg0 + pl.nsegs) * sizeof(struct xn_seg) > segs.len ||
            ((uint64_t)pl.rsp0 + pl.nrsp) * XN_RX_ENTRY > rsps.len)
            return xn_fail(err, "netback_rx_respond: plan %u past its batch", j);
        int16_t gnt = XN_GNTST_OKAY;
        for (uint32_t k = pl.seg0; k < pl.seg0 + pl.nsegs; k++) {
            struct xn_seg s;
            XN_GET(s, segs.p, k);
            if (s.status != XN_GNTST_OKAY) {
                gnt = s.status;
                break;
            }
        }
        memcpy(status_out.p + 2 * (size_t)j, &gnt, 2);
        if (gnt == XN_GNTST_OKAY) {
            ok++;
            if (pl.nrsp) {
                struct xn_pkt p;
                XN_GET(p, vec_pkts.p, start + j);
                nbytes += p.len;
                nslots += pl.nrsp;
                gso += pl.nrsp > pl.nbuffers ? 1 : 0;
            }
            continue;
        }
        bad++;
        int extra = 0;
        for (uint32_t i = pl.rsp0; i < (uint32_t)pl.rsp0 + pl.nrsp; i++) {
            if (extra) { /* the GSO extra info is no response: leave it */
                extra = 0;
                continue;
            }
            struct rx_rsp r;
            XN_GET(r, rsps.p, i);
            r.status = XN_RSP_ERROR;
            XN_PUT(rsps.p, i, r);
            extra = !!(r.flags & XN_RXF_EXTRA_INFO);
        }
    }
    res[0] = ok;
    res[1] = bad;
    res[2] = nbytes;
    res[3] = nslots;
    res[4] = gso;
    return 0;
}
