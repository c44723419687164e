/* netback transmit: assembly of copied-out requests into packets, the grant copies that
 * build them, and their responses.  The twin, with the rules in its docstring, is
 * core/pure/netback_tx.py. */
#include "xn_core.h"

struct tx_req {
    uint32_t gref;
    uint16_t offset;
    uint16_t flags;
    uint16_t id;
    uint16_t size;
};

static struct tx_req get_req(const unsigned char *q, uint32_t i)
{
    struct tx_req r;
    memcpy(&r, q + (size_t)i * XN_TX_ENTRY, sizeof r);
    return r;
}

#define FATAL(code, a, b)                                                                                             \
    do {                                                                                                             \
        res[0] = start;                                                                                              \
        res[1] = npkts;                                                                                              \
        res[2] = (code);                                                                                             \
        res[3] = (a);                                                                                                \
        res[4] = (b);                                                                                                \
        return 0;                                                                                                    \
    } while (0)

int xn_netback_tx_assemble(struct xn_buf reqs, uint32_t n, uint32_t max_slots, uint32_t fatal_slots,
                           struct xn_buf out, uint32_t max_pkts, long res[5], struct xn_err *err)
{
    if (reqs.len < (size_t)n * XN_TX_ENTRY || out.len < (size_t)max_pkts * sizeof(struct xn_tx_pkt) || n > 0xFFFF)
        return xn_fail(err, "netback_tx_assemble: buffers too small");
    const unsigned char *q = reqs.p;
    uint32_t pos = 0, npkts = 0;
    while (pos < n && npkts < max_pkts) {
        uint32_t start = pos;
        struct tx_req first = get_req(q, pos++);
        uint32_t nextras = 0;
        int have_gso = 0, have_add = 0, have_del = 0;
        uint16_t gso_size = 0;
        uint8_t gso_type = 0;
        unsigned char add[6], del[6];
        if (first.flags & XN_TXF_EXTRA_INFO) {
            uint32_t at[XN_EXTRA_MAX + 1];
            int end = xn_extra_chain(q, pos, n, XN_TX_ENTRY, at, &nextras);
            pos += nextras;
            for (uint32_t k = 0; k < nextras; k++) {
                const unsigned char *e = q + (size_t)at[k] * XN_TX_ENTRY;
                uint8_t etype = e[0];
                if (!xn_extra_type_valid(etype))
                    FATAL(XN_TXF_BAD_EXTRA_TYPE, etype, 0);
                if (etype == XN_EXTRA_GSO) {
                    have_gso = 1;
                    gso_size = xn_ld16(e + 2);
                    gso_type = e[4];
                } else if (etype == XN_EXTRA_MCAST_ADD) {
                    have_add = 1;
                    memcpy(add, e + 2, 6);
                } else if (etype == XN_EXTRA_MCAST_DEL) {
                    have_del = 1;
                    memcpy(del, e + 2, 6);
                }
            }
            if (end == XN_EXTRAS_MISSING)
                FATAL(XN_TXF_MISSING_EXTRA_INFO, 0, 0);
            if (end == XN_EXTRAS_ENDLESS)
                FATAL(XN_TXF_BAD_EXTRA_TYPE, q[(size_t)at[nextras - 1] * XN_TX_ENTRY], 0);
        }
        struct xn_tx_pkt rec;
        memset(&rec, 0, sizeof rec);
        rec.first = (uint16_t)start;
        rec.nextras = (uint16_t)nextras;
        rec.size = first.size;
        rec.flags = first.flags;
        if (have_add || have_del) {
            /* multicast control: answered alone; data slots, if any, are read as packets */
            rec.nslots = 1;
            rec.kind = have_add ? XN_TXK_MCAST_ADD : XN_TXK_MCAST_DEL;
            memcpy(rec.mcast, have_add ? add : del, 6);
            XN_PUT(out.p, npkts, rec);
            npkts++;
            continue;
        }
        long remaining = first.size;
        uint32_t count = 1;
        uint16_t error = XN_TXE_OK;
        int more_data = first.flags & XN_TXF_MORE_DATA;
        while (more_data) {
            if (count >= fatal_slots)
                FATAL(XN_TXF_TOO_MANY_SLOTS, count + 1, 0);
            if (pos >= n)
                FATAL(XN_TXF_TRUNCATED_PACKET, 0, 0);
            struct tx_req s = get_req(q, pos++);
            count++;
            if ((uint32_t)s.offset + s.size > XN_PAGE_SIZE)
                FATAL(XN_TXF_SLOT_CROSSES_PAGE, s.offset, s.size);
            if (count > max_slots && error == XN_TXE_OK)
                error = XN_TXE_TOO_MANY_SLOTS;
            if (s.size > remaining && error == XN_TXE_OK)
                error = XN_TXE_SLOTS_BIGGER_THAN_PACKET;
            remaining -= s.size;
            more_data = s.flags & XN_TXF_MORE_DATA;
        }
        long first_size = remaining > 0 ? remaining : 0;
        if ((long)first.offset + first_size > XN_PAGE_SIZE)
            FATAL(XN_TXF_SLOT_CROSSES_PAGE, first.offset, first_size);
        if (error == XN_TXE_OK && first.size < XN_ETH_HLEN)
            error = XN_TXE_RUNT;
        if (have_gso) {
            int fault = xn_gso_fault(gso_size, gso_type);
            if (fault == XN_GSO_SIZE_ZERO)
                FATAL(XN_TXF_GSO_SIZE_ZERO, 0, 0);
            if (fault == XN_GSO_BAD_TYPE)
                FATAL(XN_TXF_BAD_GSO_TYPE, gso_type, 0);
            if (error == XN_TXE_OK && gso_size < XN_GSO_MIN_SIZE)
                error = XN_TXE_GSO_SIZE_TOO_SMALL;
        }
        rec.nslots = (uint16_t)count;
        rec.error = error;
        rec.first_size = (uint16_t)first_size;
        rec.gso_size = have_gso ? gso_size : 0;
        rec.gso_type = have_gso ? gso_type : 0;
        rec.kind = XN_TXK_DATA;
        XN_PUT(out.p, npkts, rec);
        npkts++;
    }
    res[0] = pos;
    res[1] = npkts;
    res[2] = XN_TXF_NONE;
    res[3] = res[4] = 0;
    return 0;
}

/* (gref, offset, size) of data slot k of a packet; the first slot's size is its own share */
static struct tx_req slot_of(const unsigned char *q, const struct xn_tx_pkt *p, uint32_t k)
{
    struct tx_req r = get_req(q, k == 0 ? p->first : (uint32_t)p->first + p->nextras + k);
    if (k == 0)
        r.size = p->first_size;
    return r;
}

static void seg_from_grant(unsigned char *segs, uint32_t i, uint32_t gref, uint32_t goff, uint32_t domid,
                           uint64_t virt, uint32_t n)
{
    struct xn_seg s;
    memset(&s, 0, sizeof s);
    s.source.foreign.ref = gref;
    s.source.foreign.offset = (uint16_t)goff;
    s.source.foreign.domid = (uint16_t)domid;
    s.dest.virt = virt;
    s.len = (uint16_t)n;
    s.flags = XN_GNTCOPY_SOURCE_GREF;
    XN_PUT(segs, i, s);
}

/* (frames, segments, pieces) a packet's build takes */
static void needs(const unsigned char *q, const struct xn_tx_pkt *p, uint32_t head_len, uint32_t map_frags,
                  uint32_t *frames, uint32_t *segs, uint32_t *pieces)
{
    uint32_t f = 1, sg = 0, pc = 1, pulled = 0, mapped = 0;
    uint64_t staged = 0;
    for (uint32_t k = 0; k < p->nslots; k++) {
        struct tx_req s = slot_of(q, p, k);
        if (s.size == 0)
            continue;
        uint32_t take = s.size < head_len - pulled ? s.size : head_len - pulled;
        if (take) {
            sg++;
            pulled += take;
            pc += map_frags ? 1 : 0;
        }
        uint32_t rest = s.size - take;
        if (!rest)
            continue;
        if (map_frags && mapped < map_frags) {
            mapped++;
            pc++;
            continue;
        }
        sg += (uint32_t)((staged + rest - 1) / XN_PAGE_SIZE - staged / XN_PAGE_SIZE + 1);
        staged += rest;
    }
    uint32_t stage_frames = (uint32_t)((staged + XN_PAGE_SIZE - 1) / XN_PAGE_SIZE);
    *frames = f + stage_frames;
    *segs = sg;
    *pieces = pc + stage_frames;
}

static void put_piece(unsigned char *pieces, uint32_t i, uint32_t frame, uint32_t off, uint32_t len, uint32_t domid,
                      uint32_t flags)
{
    struct xn_piece pc = {frame, (uint16_t)off, (uint16_t)len, XN_NONE32, (uint16_t)domid, (uint16_t)flags};
    XN_PUT(pieces, i, pc);
}

int xn_netback_tx_build(struct xn_buf reqs, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t front_domid,
                        uint32_t copy_len, uint32_t map_frags, uint64_t mem_base, struct xn_buf pool,
                        struct xn_buf segs, uint32_t seg_base, uint32_t seg_cap, struct xn_buf seg_ranges,
                        struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t piece_base, uint32_t piece_cap,
                        long res[3], struct xn_err *err)
{
    uint64_t end = (uint64_t)start + npkts;
    if (segs.len < (size_t)seg_cap * sizeof(struct xn_seg) || vec_pieces.len < (size_t)piece_cap * sizeof(struct xn_piece) ||
        seg_ranges.len < 8 * end)
        return xn_fail(err, "netback_tx_build: buffers smaller than their caps");
    if (vec_pkts.len < end * sizeof(struct xn_pkt) || pkts.len < end * sizeof(struct xn_tx_pkt))
        return xn_fail(err, "netback_tx_build: packet buffers too small");
    if (seg_base > seg_cap || piece_base > piece_cap)
        return xn_fail(err, "netback_tx_build: bases past their caps");
    if (front_domid >= XN_DOMID_FIRST_RESERVED)
        return xn_fail(err, "netback_tx_build: domid %u is not a guest's", front_domid);
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    const unsigned char *q = reqs.p;
    uint32_t nseg = seg_base, npiece = piece_base;
    int rc = 0;
    uint32_t j;
    for (j = start; j < end; j++) {
        struct xn_tx_pkt p;
        XN_GET(p, pkts.p, j);
        /* every slot it names must be in the batch of requests */
        uint64_t last = p.nslots > 1 ? (uint64_t)p.first + p.nextras + p.nslots - 1 : p.first;
        if ((last + 1) * XN_TX_ENTRY > reqs.len) {
            rc = xn_fail(err, "netback_tx_build: packet %u names requests past the batch", j);
            break;
        }
        if (p.error >= XN_TXE_COUNT) {
            rc = xn_fail(err, "netback_tx_build: packet %u has error code %u", j, p.error);
            break;
        }
        if (p.error || p.kind != XN_TXK_DATA) {
            struct xn_pkt v = {npiece, 0, 0, 0, j, 0, 0, (uint8_t)p.error, 0, 0};
            XN_PUT(vec_pkts.p, j, v);
            xn_st32(seg_ranges.p + 8 * (size_t)j, nseg);
            xn_st32(seg_ranges.p + 8 * (size_t)j + 4, 0);
            continue;
        }
        for (uint32_t k = 0; k < p.nslots && rc == 0; k++) {
            struct tx_req s = slot_of(q, &p, k);
            if ((uint32_t)s.offset + s.size > XN_PAGE_SIZE)
                rc = xn_fail(err, "netback_tx_build: packet %u has a slot across its page (not assembled?)", j);
        }
        if (rc)
            break;
        uint32_t head_len = p.size < copy_len ? p.size : copy_len;
        uint32_t frames, sneed, pneed;
        needs(q, &p, head_len, map_frags, &frames, &sneed, &pneed);
        if (pv.count < frames || (uint64_t)nseg + sneed > seg_cap || (uint64_t)npiece + pneed > piece_cap)
            break;
        uint32_t head;
        if (!xn_pool_pop(&pv, &head)) {
            rc = xn_fail(err, XN_POOL_CORRUPT);
            break;
        }
        uint32_t piece0 = npiece, seg0 = nseg;
        put_piece(vec_pieces.p, npiece++, head, 0, 0, XN_DOMID_SELF, XN_PIECE_POOL);
        uint32_t pulled = 0, mapped = 0, stage = 0, stage_frame = 0, stage_off = XN_PAGE_SIZE;
        for (uint32_t k = 0; k < p.nslots; k++) {
            struct tx_req s = slot_of(q, &p, k);
            if (s.size == 0)
                continue; /* answered OKAY, never dereferenced (XSA-448) */
            uint32_t take = s.size < head_len - pulled ? s.size : head_len - pulled;
            if (take) {
                seg_from_grant(segs.p, nseg++, s.gref, s.offset, front_domid,
                               mem_base + (uint64_t)head * XN_PAGE_SIZE + pulled, take);
                pulled += take;
            }
            uint32_t rest = s.size - take, soff = (uint32_t)s.offset + take;
            if (!rest)
                continue;
            if (map_frags && mapped < map_frags) {
                put_piece(vec_pieces.p, npiece++, s.gref, soff, rest, front_domid, 0);
                mapped++;
                continue;
            }
            while (rest) {
                if (stage_off == XN_PAGE_SIZE) {
                    if (!xn_pool_pop(&pv, &stage_frame)) {
                        rc = xn_fail(err, XN_POOL_CORRUPT);
                        goto out;
                    }
                    stage = npiece;
                    stage_off = 0;
                    put_piece(vec_pieces.p, npiece++, stage_frame, 0, 0, XN_DOMID_SELF, XN_PIECE_POOL);
                }
                uint32_t n = rest < XN_PAGE_SIZE - stage_off ? rest : XN_PAGE_SIZE - stage_off;
                seg_from_grant(segs.p, nseg++, s.gref, soff, front_domid,
                               mem_base + (uint64_t)stage_frame * XN_PAGE_SIZE + stage_off, n);
                struct xn_piece sp;
                XN_GET(sp, vec_pieces.p, stage);
                sp.len = (uint16_t)(sp.len + n);
                XN_PUT(vec_pieces.p, stage, sp);
                stage_off += n;
                soff += n;
                rest -= n;
            }
        }
        put_piece(vec_pieces.p, piece0, head, 0, pulled, XN_DOMID_SELF, XN_PIECE_POOL);
        if (map_frags) {
            /* where the head's bytes came from, so a bridge can forward them by grant copy */
            uint32_t again = 0;
            for (uint32_t k = 0; k < p.nslots && again < head_len; k++) {
                struct tx_req s = slot_of(q, &p, k);
                uint32_t take = s.size < head_len - again ? s.size : head_len - again;
                if (take)
                    put_piece(vec_pieces.p, npiece++, s.gref, s.offset, take, front_domid, XN_PIECE_RUN);
                again += take;
            }
        }
        struct xn_pkt v = {piece0, (uint16_t)(npiece - piece0), XN_TX_CSUM_STATE(p.flags), p.size, j,
                           p.gso_size, p.gso_type, 0, 0, 0};
        XN_PUT(vec_pkts.p, j, v);
        xn_st32(seg_ranges.p + 8 * (size_t)j, seg0);
        xn_st32(seg_ranges.p + 8 * (size_t)j + 4, nseg - seg0);
    }
out:
    xn_pool_close(&pv);
    if (rc)
        return rc;
    res[0] = j;
    res[1] = nseg;
    res[2] = npiece;
    return 0;
}

static void put_rsp(unsigned char *ro, uint32_t i, uint16_t id, int16_t status)
{
    unsigned char e[XN_TX_ENTRY];
    memset(e, 0, sizeof e);
    memcpy(e, &id, 2);
    memcpy(e + 2, &status, 2);
    memcpy(ro + (size_t)i * XN_TX_ENTRY, e, sizeof e);
}

int xn_netback_tx_respond(struct xn_buf reqs, struct xn_buf pkts, uint32_t start, uint32_t npkts,
                          struct xn_buf seg_ranges, struct xn_buf segs, struct xn_buf vec_pkts,
                          struct xn_buf vec_pieces, struct xn_buf pool, struct xn_buf rsp_out,
                          struct xn_buf rsp_ranges, struct xn_buf status_out, long res[7], struct xn_err *err)
{
    uint64_t end = (uint64_t)start + npkts;
    if (rsp_ranges.len < 8 * end || status_out.len < 2 * end || vec_pkts.len < end * sizeof(struct xn_pkt) ||
        pkts.len < end * sizeof(struct xn_tx_pkt))
        return xn_fail(err, "netback_tx_respond: buffers too small");
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    long nrsp = 0, ok = 0, ok_bytes = 0, ok_slots = 0, gso = 0, bad = 0, mcast = 0;
    int rc = 0;
    for (uint32_t j = start; j < end && rc == 0; j++) {
        struct xn_tx_pkt p;
        XN_GET(p, pkts.p, j);
        uint64_t last = p.nslots > 1 ? (uint64_t)p.first + p.nextras + p.nslots - 1 : p.first;
        if ((last + 1) * XN_TX_ENTRY > reqs.len) {
            rc = xn_fail(err, "netback_tx_respond: packet %u names requests past the batch", j);
            break;
        }
        int16_t status = XN_RSP_OKAY;
        int16_t zero = 0;
        memcpy(status_out.p + 2 * (size_t)j, &zero, 2);
        if (p.kind != XN_TXK_DATA) {
            mcast++;
        } else if (p.error) {
            status = XN_RSP_ERROR;
        } else {
            uint32_t seg0 = xn_ld32(seg_ranges.p + 8 * (size_t)j), nsegs = xn_ld32(seg_ranges.p + 8 * (size_t)j + 4);
            if (((uint64_t)seg0 + nsegs) * sizeof(struct xn_seg) > segs.len) {
                rc = xn_fail(err, "netback_tx_respond: packet %u names segments past the batch", j);
                break;
            }
            int16_t gnt = XN_GNTST_OKAY;
            for (uint32_t k = 0; k < nsegs; k++) {
                struct xn_seg s;
                XN_GET(s, segs.p, seg0 + k);
                if (s.status != XN_GNTST_OKAY) {
                    gnt = s.status;
                    break;
                }
            }
            if (gnt != XN_GNTST_OKAY) {
                memcpy(status_out.p + 2 * (size_t)j, &gnt, 2);
                bad++;
                status = XN_RSP_ERROR;
                struct xn_pkt v;
                XN_GET(v, vec_pkts.p, j);
                for (uint32_t k = v.piece0; k < (uint64_t)v.piece0 + v.npieces && rc == 0; k++) {
                    struct xn_piece pc;
                    if (((uint64_t)k + 1) * sizeof pc > vec_pieces.len) {
                        rc = xn_fail(err, "netback_tx_respond: pieces past the vector");
                        break;
                    }
                    XN_GET(pc, vec_pieces.p, k);
                    if ((pc.flags & XN_PIECE_POOL) && pc.domid == XN_DOMID_SELF)
                        rc = xn_pool_push(&pv, pc.frame, err);
                }
                struct xn_pkt z = {v.piece0, 0, 0, 0, j, 0, 0, XN_TXE_GRANT_COPY, 0, 0};
                XN_PUT(vec_pkts.p, j, z);
            } else {
                ok++;
                ok_bytes += p.size;
                ok_slots += p.nslots;
                gso += p.gso_size ? 1 : 0;
            }
        }
        if (rc)
            break;
        uint64_t need = (uint64_t)nrsp + p.nslots + p.nextras;
        if (need * XN_TX_ENTRY > rsp_out.len) {
            rc = xn_fail(err, "netback_tx_respond: rsp_out too small");
            break;
        }
        xn_st32(rsp_ranges.p + 8 * (size_t)j, (uint32_t)nrsp);
        for (uint32_t k = 0; k < p.nslots; k++) {
            struct tx_req r = get_req(reqs.p, k == 0 ? p.first : (uint32_t)p.first + p.nextras + k);
            put_rsp(rsp_out.p, (uint32_t)nrsp++, r.id, status);
            if (k == 0)
                for (uint32_t x = 0; x < p.nextras; x++)
                    put_rsp(rsp_out.p, (uint32_t)nrsp++, 0, XN_RSP_NULL);
        }
        xn_st32(rsp_ranges.p + 8 * (size_t)j + 4, (uint32_t)(nrsp - xn_ld32(rsp_ranges.p + 8 * (size_t)j)));
    }
    xn_pool_close(&pv);
    if (rc)
        return rc;
    res[0] = nrsp;
    res[1] = ok;
    res[2] = ok_bytes;
    res[3] = ok_slots;
    res[4] = gso;
    res[5] = bad;
    res[6] = mcast;
    return 0;
}

int xn_netback_tx_set_status(struct xn_buf rsp_out, uint32_t first, uint32_t count, int status, struct xn_err *err)
{
    if (status != XN_RSP_DROPPED && status != XN_RSP_ERROR && status != XN_RSP_OKAY)
        return xn_fail(err, "netback_tx_set_status: %d is not a response status", status);
    if (((uint64_t)first + count) * XN_TX_ENTRY > rsp_out.len)
        return xn_fail(err, "netback_tx_set_status: past the responses");
    for (uint32_t i = first; i < first + count; i++) {
        unsigned char *e = rsp_out.p + (size_t)i * XN_TX_ENTRY;
        int16_t old;
        memcpy(&old, e + 2, 2);
        if (old != XN_RSP_NULL) {
            int16_t st = (int16_t)status;
            memcpy(e + 2, &st, 2);
        }
    }
    return 0;
}
