/* netfront transmit: post packets as tx requests (and GSO extras), reap the responses.
 * The twin is core/pure/netfront_tx.py. */
#include "xn_core.h"

static uint16_t stack_pop(struct xn_stack *s)
{
    s->count--;
    return xn_ld16(s->p + 2 * (size_t)(s->count + 1));
}

static int stack_push(struct xn_stack *s, uint16_t v, struct xn_err *err)
{
    if (s->count + 1 > s->cap)
        return xn_fail(err, "stack overflow: a value was given back twice");
    xn_st16(s->p + 2 * (size_t)(s->count + 1), v);
    s->count++;
    return 0;
}

#define MAX_PIECES 4096u

int xn_netfront_tx_post(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                        struct xn_buf pool, struct xn_buf slots, struct xn_buf inflight, struct xn_buf id_stack,
                        struct xn_buf pkt_stack, uint32_t free_ring, struct xn_buf reqs_out, long res[5],
                        struct xn_err *err)
{
    struct xn_stack ids, pks;
    if (xn_stack_open(&ids, id_stack, err) || xn_stack_open(&pks, pkt_stack, err))
        return -1;
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (reqs_out.len < (size_t)free_ring * XN_TX_ENTRY || vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt))
        return xn_fail(err, "netfront_tx_post: buffers too small");
    uint32_t nr_slots = (uint32_t)(slots.len / sizeof(struct xn_tx_slot));
    uint32_t nr_inflight = (uint32_t)(inflight.len / sizeof(struct xn_tx_inflight));
    static __thread uint32_t refs[MAX_PIECES];
    long nreq = 0, nbytes = 0, gso_pkts = 0;
    int rc = 0;
    uint32_t j;
    for (j = start; j < start + npkts; j++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, j);
        uint32_t need = p.npieces + (p.gso_size ? 1u : 0u);
        if (need > free_ring - nreq || p.npieces > ids.count || pks.count == 0)
            break;
        if (p.npieces == 0 || p.npieces > nr_slots || p.npieces > MAX_PIECES) {
            rc = xn_fail(err, "netfront_tx_post: packet %u has %u pieces", j, p.npieces);
            break;
        }
        if (((uint64_t)p.piece0 + p.npieces) * sizeof(struct xn_piece) > vec_pieces.len) {
            rc = xn_fail(err, "netfront_tx_post: pieces past the vector");
            break;
        }
        /* check the whole packet before any of it goes on the ring */
        uint32_t total = 0;
        for (uint32_t i = 0; i < p.npieces && rc == 0; i++) {
            struct xn_piece pc;
            XN_GET(pc, vec_pieces.p, p.piece0 + i);
            if (pc.len < 1 || pc.len > XN_PAGE_SIZE || (uint32_t)pc.offset + pc.len > XN_PAGE_SIZE ||
                pc.domid != XN_DOMID_SELF) {
                rc = xn_fail(err, "netfront_tx_post: packet %u: bad piece (%u, %u, %u, d%u)", j, pc.frame, pc.offset,
                             pc.len, pc.domid);
                break;
            }
            uint32_t ref = pc.ref;
            if (ref == XN_NONE32 && (pc.flags & XN_PIECE_POOL) && pv.granted && pc.frame < pv.nr_frames)
                ref = xn_ld32(pv.refs + 4 * (size_t)pc.frame);
            if (ref == XN_NONE32) {
                rc = xn_fail(err, "netfront_tx_post: packet %u: piece on frame %u has no grant", j, pc.frame);
                break;
            }
            refs[i] = ref;
            total += pc.len;
        }
        if (rc)
            break;
        if (total != p.len || p.len > XN_MAX_PACKET) { /* the first request carries the length */
            rc = xn_fail(err, "netfront_tx_post: packet %u of %u bytes has %u in its pieces", j, p.len, total);
            break;
        }
        uint16_t slot = stack_pop(&pks);
        if (slot >= nr_inflight) {
            rc = xn_fail(err, "netfront_tx_post: in-flight slot %u out of range", slot);
            break;
        }
        struct xn_tx_inflight inf = {p.tag, p.npieces, 0};
        XN_PUT(inflight.p, slot, inf);
        uint16_t f0 = XN_TX_CSUM_FLAGS(p.flags) | (p.gso_size ? XN_TXF_EXTRA_INFO : 0);
        for (uint32_t i = 0; i < p.npieces; i++) {
            struct xn_piece pc;
            XN_GET(pc, vec_pieces.p, p.piece0 + i);
            uint16_t rid = stack_pop(&ids);
            if (rid >= nr_slots) {
                rc = xn_fail(err, "netfront_tx_post: request id %u out of range", rid);
                break;
            }
            struct xn_tx_slot ts = {refs[i], pc.frame, slot, pc.flags};
            XN_PUT(slots.p, rid, ts);
            uint16_t rflags = i == 0 ? f0 : 0;
            if (i < (uint32_t)p.npieces - 1)
                rflags |= XN_TXF_MORE_DATA;
            unsigned char e[XN_TX_ENTRY];
            memset(e, 0, sizeof e);
            xn_st32(e, refs[i]);
            xn_st16(e + 4, pc.offset);
            xn_st16(e + 6, rflags);
            xn_st16(e + 8, rid);
            xn_st16(e + 10, (uint16_t)(i == 0 ? p.len : pc.len));
            memcpy(reqs_out.p + (size_t)nreq * XN_TX_ENTRY, e, sizeof e);
            nreq++;
            if (i == 0 && p.gso_size) {
                memset(e, 0, sizeof e);
                e[0] = XN_EXTRA_GSO;
                xn_st16(e + 2, p.gso_size);
                e[4] = p.gso_type;
                memcpy(reqs_out.p + (size_t)nreq * XN_TX_ENTRY, e, sizeof e);
                nreq++;
            }
        }
        if (rc)
            break;
        nbytes += p.len;
        gso_pkts += p.gso_size ? 1 : 0;
    }
    xn_stack_close(&ids);
    xn_stack_close(&pks);
    if (rc)
        return rc;
    res[0] = j;
    res[1] = nreq;
    res[2] = nbytes;
    res[3] = gso_pkts;
    res[4] = j - start;
    return 0;
}

int xn_netfront_tx_complete(struct xn_buf rsps, uint32_t n, struct xn_buf pool, struct xn_buf slots,
                            struct xn_buf inflight, struct xn_buf id_stack, struct xn_buf pkt_stack,
                            struct xn_buf done_out, struct xn_buf end_out, long res[9], struct xn_err *err)
{
    struct xn_stack ids, pks;
    if (xn_stack_open(&ids, id_stack, err) || xn_stack_open(&pks, pkt_stack, err))
        return -1;
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    uint32_t nr_ents = (uint32_t)(slots.len / sizeof(struct xn_tx_slot));
    uint32_t nr_inflight = (uint32_t)(inflight.len / sizeof(struct xn_tx_inflight));
    if (rsps.len < (size_t)n * XN_TX_ENTRY || done_out.len < (size_t)n * sizeof(struct xn_tx_done) ||
        end_out.len < (size_t)n * sizeof(struct xn_end_ref))
        return xn_fail(err, "netfront_tx_complete: buffers too small");
    long ndone = 0, nend = 0, ok = 0, bad = 0, dropped = 0, consumed = n, fatal = 0, detail = 0, nulls = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint16_t rid = xn_ld16(rsps.p + (size_t)i * XN_TX_ENTRY);
        int16_t status;
        memcpy(&status, rsps.p + (size_t)i * XN_TX_ENTRY + 2, 2);
        if (status == XN_RSP_NULL) {
            nulls++; /* an extra-info slot's response (counted: a backend may send more) */
            continue;
        }
        struct xn_tx_slot ts;
        if (rid < nr_ents)
            XN_GET(ts, slots.p, rid);
        if (rid >= nr_ents || ts.inflight == XN_NONE16) {
            consumed = i;
            fatal = XN_TXDF_ID_NOT_IN_FLIGHT;
            detail = rid;
            break;
        }
        if (ts.inflight >= nr_inflight) {
            rc = xn_fail(err, "netfront_tx_complete: in-flight slot %u out of range", ts.inflight);
            break;
        }
        uint16_t slot = ts.inflight;
        uint16_t pflags = ts.flags;
        ts.inflight = XN_NONE16;
        ts.flags = 0;
        XN_PUT(slots.p, rid, ts);
        if ((rc = stack_push(&ids, rid, err)))
            break;
        if (pflags & XN_PIECE_OWN_GRANT) {
            struct xn_end_ref e = {ts.ref, (pflags & XN_PIECE_POOL) ? ts.frame : XN_NONE32};
            XN_PUT(end_out.p, nend, e);
            nend++;
        } else if (pflags & XN_PIECE_POOL) {
            if ((rc = xn_pool_push(&pv, ts.frame, err)))
                break;
        }
        struct xn_tx_inflight inf;
        XN_GET(inf, inflight.p, slot);
        if (status != XN_RSP_OKAY && inf.status == 0)
            inf.status = (uint16_t)status;
        inf.slots_left--;
        XN_PUT(inflight.p, slot, inf);
        if (inf.slots_left == 0) {
            int16_t s = (int16_t)inf.status;
            if (s == XN_RSP_OKAY)
                ok++;
            else if (s == XN_RSP_DROPPED)
                dropped++;
            else
                bad++;
            if (inf.tag != XN_NONE32) {
                struct xn_tx_done d = {inf.tag, inf.status, 0};
                XN_PUT(done_out.p, ndone, d);
                ndone++;
            }
            if ((rc = stack_push(&pks, slot, err)))
                break;
        }
    }
    xn_stack_close(&ids);
    xn_stack_close(&pks);
    xn_pool_close(&pv);
    if (rc)
        return rc;
    res[0] = consumed;
    res[1] = ndone;
    res[2] = nend;
    res[3] = ok;
    res[4] = bad;
    res[5] = dropped;
    res[6] = fatal;
    res[7] = detail;
    res[8] = nulls;
    return 0;
}
