/* netfront receive: post rx buffers, assemble copied-out responses into packets, build the
 * packets the guest keeps.  The twin, with the rules in its docstring, is
 * core/pure/netfront_rx.py. */
#include "xn_core.h"

struct rx_rsp {
    uint16_t id, offset, flags;
    int16_t status;
};

static struct rx_rsp get_rsp(const unsigned char *q, uint32_t i)
{
    struct rx_rsp r;
    memcpy(&r, q + (size_t)i * XN_RX_ENTRY, sizeof r);
    return r;
}

long xn_netfront_rx_post(struct xn_buf slots, uint32_t start, uint32_t mask, struct xn_buf pairs, uint32_t npairs,
                         struct xn_buf reqs_out, struct xn_err *err)
{
    if ((uint64_t)mask + 1 > slots.len / sizeof(struct xn_rx_slot) || pairs.len < (size_t)npairs * 8 ||
        reqs_out.len < (size_t)npairs * XN_RX_ENTRY)
        return xn_fail(err, "netfront_rx_post: buffers too small");
    for (uint32_t k = 0; k < npairs; k++) {
        uint32_t rid = (start + k) & mask;
        struct xn_rx_slot s;
        XN_GET(s, slots.p, rid);
        if (s.frame != XN_NONE32)
            return k; /* that slot's buffer has not come back yet */
        struct xn_end_ref pr;
        XN_GET(pr, pairs.p, k);
        struct xn_rx_slot ns = {pr.frame, pr.ref};
        XN_PUT(slots.p, rid, ns);
        unsigned char e[XN_RX_ENTRY] = {0};
        xn_st16(e, (uint16_t)rid);
        xn_st32(e + 4, pr.ref);
        memcpy(reqs_out.p + (size_t)k * XN_RX_ENTRY, e, sizeof e);
    }
    return npairs;
}

static int posted(struct xn_buf slots, uint32_t cons, uint32_t p, uint32_t mask)
{
    struct xn_rx_slot s;
    XN_GET(s, slots.p, (cons + p) & mask);
    return s.frame != XN_NONE32;
}

#define MAXD 1024u

#define FATAL(code, d)                                                                                                \
    do {                                                                                                             \
        res[0] = start;                                                                                              \
        res[1] = npkts;                                                                                              \
        res[2] = (code);                                                                                             \
        res[3] = (d);                                                                                                \
        return 0;                                                                                                    \
    } while (0)

static void validate(const unsigned char *q, const uint32_t *data, uint32_t nd, const uint32_t *extras, uint32_t ne,
                     uint32_t max_slots, int gso_ok, struct xn_rx_pkt *out)
{
    uint64_t length = 0;
    uint16_t error = XN_RXE_OK;
    if (nd > max_slots)
        error = XN_RXE_TOO_MANY_SLOTS;
    for (uint32_t i = 0; i < nd; i++) {
        struct rx_rsp r = get_rsp(q, data[i]);
        if (error == XN_RXE_OK) {
            if (r.status < 0)
                error = r.status == XN_RSP_ERROR ? XN_RXE_BACKEND_ERROR : XN_RXE_BACKEND_DROPPED;
            else if ((uint32_t)r.offset + (uint32_t)r.status > XN_PAGE_SIZE)
                error = XN_RXE_OFFSET_SIZE_PAST_PAGE;
        }
        length += r.status > 0 ? (uint32_t)r.status : 0;
    }
    if (error == XN_RXE_OK && get_rsp(q, data[0]).status == 0)
        error = XN_RXE_EMPTY_FIRST_SLOT;
    uint16_t gso_size = 0;
    uint8_t gso_type = 0;
    for (uint32_t i = 0; i < ne && error == XN_RXE_OK; i++) {
        const unsigned char *e = q + (size_t)extras[i] * XN_RX_ENTRY;
        uint8_t etype = e[0];
        if (!xn_extra_type_valid(etype)) {
            error = XN_RXE_BAD_EXTRA_TYPE;
        } else if (etype == XN_EXTRA_GSO) {
            uint16_t size = xn_ld16(e + 2);
            uint8_t gtype = e[4];
            int fault = xn_gso_fault(size, gtype);
            if (!gso_ok)
                error = XN_RXE_UNNEGOTIATED_GSO;
            else if (fault != XN_GSO_OK)
                error = fault == XN_GSO_SIZE_ZERO ? XN_RXE_GSO_SIZE_ZERO : XN_RXE_BAD_GSO_TYPE;
            else {
                gso_size = size;
                gso_type = gtype;
            }
        }
    }
    if (error == XN_RXE_OK && length > XN_MAX_PACKET)
        error = XN_RXE_OVERSIZE;
    if (error != XN_RXE_OK)
        gso_size = gso_type = 0;
    out->error = error;
    out->len = (uint32_t)(length < 0xFFFFFFFFu ? length : 0xFFFFFFFFu);
    out->gso_size = gso_size;
    out->gso_type = gso_type;
}

int xn_netfront_rx_assemble(struct xn_buf rsps, uint32_t n, uint32_t cons, uint32_t mask, struct xn_buf slots,
                            int gso_ok, struct xn_buf out, uint32_t max_pkts, long res[4], struct xn_err *err)
{
    if (rsps.len < (size_t)n * XN_RX_ENTRY || out.len < (size_t)max_pkts * sizeof(struct xn_rx_pkt) ||
        (uint64_t)mask + 1 > slots.len / sizeof(struct xn_rx_slot))
        return xn_fail(err, "netfront_rx_assemble: buffers too small");
    const unsigned char *q = rsps.p;
    uint32_t pos = 0, npkts = 0;
    static __thread uint32_t data[MAXD], extras[XN_EXTRA_MAX + 1];
    while (pos < n && npkts < max_pkts) {
        uint32_t start = pos;
        uint32_t idx = (cons + pos) & mask;
        if (!posted(slots, cons, pos, mask))
            FATAL(XN_RXF_NO_BUFFER_POSTED, idx);
        struct rx_rsp first = get_rsp(q, pos);
        if (first.id != idx)
            FATAL(XN_RXF_ID_NOT_ISSUED, first.id);
        pos++;
        uint32_t ne = 0;
        if (first.flags & XN_RXF_EXTRA_INFO) {
            int end = xn_extra_chain(q, pos, n, XN_RX_ENTRY, extras, &ne);
            for (uint32_t k = 0; k < ne; k++)
                if (!posted(slots, cons, extras[k], mask))
                    FATAL(XN_RXF_NO_BUFFER_POSTED, (cons + extras[k]) & mask);
            if (end == XN_EXTRAS_MISSING)
                FATAL(XN_RXF_EXTRA_NOT_PRODUCED, 0);
            if (end == XN_EXTRAS_ENDLESS)
                FATAL(XN_RXF_ENDLESS_EXTRA, 0);
            pos += ne;
        }
        uint32_t max_slots = XN_NR_SLOTS_MIN + ((first.status >= 0 && first.status <= (int)XN_RX_COPY_THRESHOLD) ? 1 : 0);
        uint32_t nd = 0;
        data[nd++] = start;
        int more_data = first.flags & XN_RXF_MORE_DATA;
        while (more_data) {
            if (pos >= n)
                FATAL(XN_RXF_PAST_PRODUCED, 0);
            uint32_t i2 = (cons + pos) & mask;
            if (!posted(slots, cons, pos, mask))
                FATAL(XN_RXF_NO_BUFFER_POSTED, i2);
            struct rx_rsp r = get_rsp(q, pos);
            if (r.id != i2)
                FATAL(XN_RXF_ID_NOT_ISSUED, r.id);
            if (nd == MAXD) /* cannot happen: the ring holds fewer entries */
                return xn_fail(err, "netfront_rx_assemble: a packet of more than %u slots", MAXD);
            data[nd++] = pos;
            pos++;
            more_data = r.flags & XN_RXF_MORE_DATA;
        }
        struct xn_rx_pkt rec;
        memset(&rec, 0, sizeof rec);
        rec.first = (uint16_t)start;
        rec.nslots = (uint16_t)nd;
        rec.nextras = (uint16_t)ne;
        rec.flags = first.flags;
        validate(q, data, nd, extras, ne, max_slots, gso_ok, &rec);
        XN_PUT(out.p, npkts, rec);
        npkts++;
    }
    res[0] = pos;
    res[1] = npkts;
    res[2] = XN_RXF_NONE;
    res[3] = 0;
    return 0;
}

/* entry position of data slot k */
static uint32_t data_pos(const struct xn_rx_pkt *p, uint32_t k)
{
    return k == 0 ? p->first : (uint32_t)p->first + p->nextras + k;
}

long xn_netfront_rx_slot_refs(struct xn_buf rsps, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t cons,
                              uint32_t mask, struct xn_buf slots, struct xn_buf out, struct xn_err *err)
{
    (void)rsps;
    if (pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_rx_pkt) ||
        (uint64_t)mask + 1 > slots.len / sizeof(struct xn_rx_slot))
        return xn_fail(err, "netfront_rx_slot_refs: buffers too small");
    long k = 0;
    for (uint32_t j = start; j < start + npkts; j++) {
        struct xn_rx_pkt p;
        XN_GET(p, pkts.p, j);
        if (p.error)
            continue;
        for (uint32_t d = 0; d < p.nslots; d++) {
            if ((size_t)(k + 1) * 8 > out.len)
                return xn_fail(err, "netfront_rx_slot_refs: out too small");
            struct xn_rx_slot s;
            XN_GET(s, slots.p, (cons + data_pos(&p, d)) & mask);
            struct xn_end_ref e = {s.ref, s.frame};
            XN_PUT(out.p, k, e);
            k++;
        }
    }
    return k;
}

int xn_netfront_rx_build(struct xn_buf rsps, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t cons,
                         uint32_t mask, struct xn_buf slots, struct xn_buf mem, struct xn_buf priv_pool, int ended,
                         struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t piece_base, uint32_t piece_cap,
                         struct xn_buf recycle_out, uint32_t recycle_base, long res[7], struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt) ||
        vec_pieces.len < (size_t)piece_cap * sizeof(struct xn_piece))
        return xn_fail(err, "netfront_rx_build: buffers too small");
    if (pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_rx_pkt) ||
        (uint64_t)mask + 1 > slots.len / sizeof(struct xn_rx_slot))
        return xn_fail(err, "netfront_rx_build: buffers too small");
    struct xn_poolv hp;
    if (xn_pool_open(&hp, priv_pool, err))
        return -1;
    uint32_t npiece = piece_base, nrec = recycle_base;
    long ok = 0, nbytes = 0, nslots = 0, gso = 0;
    int rc = 0;
    uint32_t j;
#define RECYCLE(ref_, frame_)                                                                                         \
    do {                                                                                                             \
        if (((uint64_t)nrec + 1) * 8 > recycle_out.len) {                                                             \
            rc = xn_fail(err, "netfront_rx_build: recycle_out too small");                                           \
            goto out;                                                                                                \
        }                                                                                                            \
        struct xn_end_ref e_ = {(ref_), (frame_)};                                                                   \
        XN_PUT(recycle_out.p, nrec, e_);                                                                             \
        nrec++;                                                                                                      \
    } while (0)
    for (j = start; j < start + npkts; j++) {
        struct xn_rx_pkt p;
        XN_GET(p, pkts.p, j);
        uint64_t last = (uint64_t)p.first + p.nextras + p.nslots;
        if (last * XN_RX_ENTRY > rsps.len) {
            rc = xn_fail(err, "netfront_rx_build: packet %u names responses past the batch", j);
            goto out;
        }
        if (p.error >= XN_RXE_COUNT) {
            rc = xn_fail(err, "netfront_rx_build: packet %u has error code %u", j, p.error);
            goto out;
        }
        if (p.error) {
            for (uint32_t k = 0; k < (uint32_t)p.nslots + p.nextras; k++) {
                uint32_t pos = k < p.nslots ? data_pos(&p, k) : (uint32_t)p.first + 1 + (k - p.nslots);
                uint32_t at = (cons + pos) & mask;
                struct xn_rx_slot s;
                XN_GET(s, slots.p, at);
                struct xn_rx_slot z = {XN_NONE32, 0};
                XN_PUT(slots.p, at, z);
                RECYCLE(s.ref, s.frame);
            }
            struct xn_pkt v = {npiece, 0, 0, 0, j, 0, 0, (uint8_t)p.error, 0, 0};
            XN_PUT(vec_pkts.p, j, v);
            continue;
        }
        if (hp.count == 0 || (uint64_t)npiece + 1 + p.nslots > piece_cap)
            break;
        uint32_t head;
        if (!xn_pool_pop(&hp, &head)) {
            rc = xn_fail(err, XN_POOL_CORRUPT);
            goto out;
        }
        if (((uint64_t)head + 1) * XN_PAGE_SIZE > mem.len) {
            rc = xn_fail(err, "netfront_rx_build: frame %u outside memory", head);
            goto out;
        }
        uint32_t want = p.len < XN_RX_COPY_THRESHOLD ? p.len : XN_RX_COPY_THRESHOLD;
        uint32_t piece0 = npiece;
        struct xn_piece hpc = {head, 0, (uint16_t)want, XN_NONE32, XN_DOMID_SELF, XN_PIECE_PRIV};
        XN_PUT(vec_pieces.p, npiece, hpc);
        npiece++;
        uint32_t pulled = 0;
        for (uint32_t d = 0; d < p.nslots; d++) {
            struct rx_rsp r = get_rsp(rsps.p, data_pos(&p, d));
            uint32_t at = (cons + data_pos(&p, d)) & mask;
            struct xn_rx_slot s;
            XN_GET(s, slots.p, at);
            struct xn_rx_slot z = {XN_NONE32, 0};
            XN_PUT(slots.p, at, z);
            uint32_t status = (uint32_t)r.status; /* validated: 0..4096 - offset */
            uint32_t n = status < want - pulled ? status : want - pulled;
            if (n) {
                if (((uint64_t)s.frame + 1) * XN_PAGE_SIZE > mem.len) {
                    rc = xn_fail(err, "netfront_rx_build: frame %u outside memory", s.frame);
                    goto out;
                }
                memmove(mem.p + (size_t)head * XN_PAGE_SIZE + pulled, mem.p + (size_t)s.frame * XN_PAGE_SIZE + r.offset,
                        n);
                pulled += n;
            }
            if (status > n) {
                struct xn_piece pc = {s.frame, (uint16_t)(r.offset + n), (uint16_t)(status - n), s.ref, XN_DOMID_SELF,
                                      XN_PIECE_POOL};
                XN_PUT(vec_pieces.p, npiece, pc);
                npiece++;
            } else {
                RECYCLE(ended ? XN_NONE32 : s.ref, s.frame);
            }
        }
        for (uint32_t x = 0; x < p.nextras; x++) {
            uint32_t at = (cons + p.first + 1 + x) & mask;
            struct xn_rx_slot s;
            XN_GET(s, slots.p, at);
            struct xn_rx_slot z = {XN_NONE32, 0};
            XN_PUT(slots.p, at, z);
            RECYCLE(s.ref, s.frame); /* untouched by the backend: post it again */
        }
        uint16_t pflags = XN_RX_CSUM_STATE(p.flags);
        struct xn_pkt v = {piece0, (uint16_t)(npiece - piece0), pflags, p.len, j, p.gso_size, p.gso_type, 0, 0, 0};
        XN_PUT(vec_pkts.p, j, v);
        ok++;
        nbytes += p.len;
        nslots += p.nslots + p.nextras;
        gso += p.gso_size ? 1 : 0;
    }
out:
    xn_pool_close(&hp);
    if (rc)
        return rc;
    res[0] = j;
    res[1] = npiece;
    res[2] = nrec;
    res[3] = ok;
    res[4] = nbytes;
    res[5] = nslots;
    res[6] = gso;
    return 0;
#undef RECYCLE
}
