/* Packet vectors: filling them with frames, releasing them, and the checksum-offload header
 * walk.  The twin is core/pure/vec.py. */
#include "xn_core.h"

int xn_vec_fill_frames(struct xn_buf mem, struct xn_buf pool, struct xn_buf frames, struct xn_buf lens,
                       uint32_t nframes, uint32_t flags, uint32_t gso_size, uint32_t gso_type,
                       struct xn_buf vec_pkts, struct xn_buf vec_pieces,
                       uint32_t pkt_base, uint32_t piece_base, uint32_t piece_cap, long res[2], struct xn_err *err)
{
    if (lens.len < 4 * (size_t)nframes || vec_pkts.len < ((uint64_t)pkt_base + nframes) * sizeof(struct xn_pkt) ||
        vec_pieces.len < (size_t)piece_cap * sizeof(struct xn_piece))
        return xn_fail(err, "vec_fill_frames: buffers too small");
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    size_t pos = 0;
    uint32_t npiece = piece_base, i;
    int rc = 0;
    for (i = 0; i < nframes; i++) {
        uint32_t length = xn_ld32(lens.p + 4 * (size_t)i);
        if (length < 1 || length > 0xFFFF || pos + length > frames.len) {
            rc = xn_fail(err, "vec_fill_frames: frame %u of %u bytes", i, length);
            break;
        }
        uint32_t need = (length + XN_PAGE_SIZE - 1) / XN_PAGE_SIZE;
        if (pv.count < need || (uint64_t)npiece + need > piece_cap)
            break;
        uint32_t piece0 = npiece, done = 0;
        while (done < length) {
            uint32_t frame;
            if (!xn_pool_pop(&pv, &frame)) {
                rc = xn_fail(err, XN_POOL_CORRUPT);
                goto out;
            }
            if (((uint64_t)frame + 1) * XN_PAGE_SIZE > mem.len) {
                rc = xn_fail(err, "vec_fill_frames: frame %u outside memory", frame);
                goto out;
            }
            uint32_t n = length - done < XN_PAGE_SIZE ? length - done : XN_PAGE_SIZE;
            memcpy(mem.p + (size_t)frame * XN_PAGE_SIZE, frames.p + pos + done, n);
            struct xn_piece pc = {frame, 0, (uint16_t)n, XN_NONE32, XN_DOMID_SELF, XN_PIECE_POOL};
            XN_PUT(vec_pieces.p, npiece, pc);
            npiece++;
            done += n;
        }
        struct xn_pkt v = {piece0, (uint16_t)(npiece - piece0), (uint16_t)flags, length, XN_NONE32,
                           (uint16_t)gso_size, (uint8_t)gso_type, 0, 0, 0};
        XN_PUT(vec_pkts.p, pkt_base + i, v);
        pos += length;
    }
out:
    xn_pool_close(&pv);
    if (rc)
        return rc;
    res[0] = i;
    res[1] = npiece;
    return 0;
}

long xn_vec_release(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                    struct xn_buf pool, struct xn_buf *priv_pool, struct xn_buf tags_out, struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt))
        return xn_fail(err, "vec_release: buffers too small");
    struct xn_poolv pv, pp, *ppv = NULL;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (priv_pool && priv_pool->p == pool.p) {
        ppv = &pv; /* one pool for both: one view of it */
    } else if (priv_pool) {
        if (xn_pool_open(&pp, *priv_pool, err))
            return -1;
        ppv = &pp;
    }
    long ntags = 0;
    int rc = 0;
    for (uint32_t j = start; j < start + npkts && rc == 0; j++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, j);
        if (((uint64_t)p.piece0 + p.npieces) * sizeof(struct xn_piece) > vec_pieces.len) {
            rc = xn_fail(err, "vec_release: pieces past the vector");
            break;
        }
        for (uint32_t k = p.piece0; k < (uint32_t)p.piece0 + p.npieces && rc == 0; k++) {
            struct xn_piece pc;
            XN_GET(pc, vec_pieces.p, k);
            if (pc.domid != XN_DOMID_SELF || (pc.flags & XN_PIECE_RUN))
                continue;
            if (pc.flags & XN_PIECE_PRIV) {
                if (!ppv)
                    rc = xn_fail(err, "vec_release: frame %u is a private-pool frame, and there is none", pc.frame);
                else
                    rc = xn_pool_push(ppv, pc.frame, err);
            } else if (pc.flags & XN_PIECE_POOL) {
                rc = xn_pool_push(&pv, pc.frame, err);
            }
        }
        if (rc)
            break;
        if (p.tag != XN_NONE32) {
            if ((size_t)(ntags + 1) * 4 > tags_out.len) {
                rc = xn_fail(err, "vec_release: tags_out too small");
                break;
            }
            xn_st32(tags_out.p + 4 * (size_t)ntags, p.tag);
            ntags++;
        }
    }
    xn_pool_close(&pv);
    if (ppv == &pp)
        xn_pool_close(&pp);
    return rc ? -1 : ntags;
}

static uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }

struct xn_l3l4 {
    uint32_t l4, l4_len;
    uint16_t csum_offset;
    uint8_t version, proto;
};

/* The headers of a TCP/UDP over IPv4/IPv6 frame's first n bytes; 0 if none (parse_l3l4's rules) */
static int l3l4(const unsigned char *h, uint32_t n, struct xn_l3l4 *out)
{
    if (n < 14)
        return 0;
    uint32_t l3 = 14;
    uint16_t ethertype = be16(h + 12);
    if (ethertype == 0x8100) {
        if (n < 18)
            return 0;
        ethertype = be16(h + 16);
        l3 = 18;
    }
    uint32_t ip_hlen, l4_len;
    uint8_t proto;
    if (ethertype == 0x0800) {
        if (n < l3 + 20)
            return 0;
        uint8_t vihl = h[l3];
        uint16_t tot_len = be16(h + l3 + 2), frag = be16(h + l3 + 6);
        proto = h[l3 + 9];
        if (vihl >> 4 != 4 || (vihl & 0xF) * 4 != 20 || (frag & 0x3FFF) || tot_len < 20)
            return 0;
        ip_hlen = 20;
        l4_len = tot_len - 20u;
    } else if (ethertype == 0x86DD) {
        if (n < l3 + 40)
            return 0;
        if (h[l3] >> 4 != 6)
            return 0;
        ip_hlen = 40;
        l4_len = be16(h + l3 + 4);
        proto = h[l3 + 6];
    } else {
        return 0;
    }
    uint32_t l4 = l3 + ip_hlen, l4_hlen;
    if (proto == 6) {
        if (n < l4 + 20)
            return 0;
        l4_hlen = (uint32_t)(h[l4 + 12] >> 4) * 4;
        if (l4_hlen < 20)
            return 0;
        out->csum_offset = 16;
    } else if (proto == 17) {
        l4_hlen = 8;
        out->csum_offset = 6;
    } else {
        return 0;
    }
    if (l4_len < l4_hlen || n < l4 + l4_hlen)
        return 0;
    out->l4 = l4;
    out->l4_len = l4_len;
    out->version = ethertype == 0x0800 ? 4 : 6;
    out->proto = proto;
    return 1;
}

/* (csum_start, csum_offset) of a TCP/UDP over IPv4/IPv6 frame's first n bytes; 0 if none */
static int l4_offsets(const unsigned char *h, uint32_t n, uint16_t *start, uint16_t *off)
{
    struct xn_l3l4 x;
    if (!l3l4(h, n, &x))
        return 0;
    *start = (uint16_t)x.l4;
    *off = x.csum_offset;
    return 1;
}

#define HEADER_PEEK 128u

/* The first ``cap`` bytes of packet p, from its leading pieces in our own memory (a foreign or
 * run piece's bytes are not ours to read here): how many, or -1 - frame for a piece outside mem.
 * The caller has checked the pieces lie inside the vector. */
static long gather_head(const struct xn_pkt *p, struct xn_buf vec_pieces, struct xn_buf mem, unsigned char *head,
                        uint32_t cap)
{
    uint32_t have = 0;
    for (uint32_t k = p->piece0; k < (uint32_t)p->piece0 + p->npieces && have < cap; k++) {
        struct xn_piece pc;
        XN_GET(pc, vec_pieces.p, k);
        if ((pc.flags & XN_PIECE_RUN) || pc.domid != XN_DOMID_SELF)
            break;
        uint32_t take = pc.len < cap - have ? pc.len : cap - have;
        uint64_t base = (uint64_t)pc.frame * XN_PAGE_SIZE + pc.offset;
        if (base + take > mem.len)
            return -1 - (long)pc.frame;
        memcpy(head + have, mem.p + base, take);
        have += take;
    }
    return have;
}

long xn_csum_setup(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                   struct xn_buf mem, struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt))
        return xn_fail(err, "csum_setup: buffers too small");
    long failed = 0;
    for (uint32_t j = start; j < start + npkts; j++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, j);
        if (!(p.flags & XN_PKT_CSUM_PARTIAL))
            continue;
        if (((uint64_t)p.piece0 + p.npieces) * sizeof(struct xn_piece) > vec_pieces.len)
            return xn_fail(err, "csum_setup: pieces past the vector");
        unsigned char head[HEADER_PEEK];
        long have = gather_head(&p, vec_pieces, mem, head, HEADER_PEEK);
        if (have < 0)
            return xn_fail(err, "csum_setup: frame %ld outside memory", -have - 1);
        uint16_t cs = 0, co = 0;
        if (!l4_offsets(head, (uint32_t)have, &cs, &co)) {
            failed++;
            p.flags = (uint16_t)((p.flags & ~XN_PKT_CSUM_PARTIAL) | XN_PKT_CSUM_FAILED);
            p.csum_start = p.csum_offset = 0;
        } else {
            p.csum_start = cs;
            p.csum_offset = co;
        }
        XN_PUT(vec_pkts.p, j, p);
    }
    return failed;
}

long xn_gso_check(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                  struct xn_buf mem, struct xn_buf out, struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)start + npkts) * sizeof(struct xn_pkt) || out.len < (uint64_t)npkts * 4)
        return xn_fail(err, "gso_check: buffers too small");
    long found = 0;
    for (uint32_t j = start; j < start + npkts; j++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, j);
        if (!p.gso_size || !p.npieces || p.error)
            continue;
        if (((uint64_t)p.piece0 + p.npieces) * sizeof(struct xn_piece) > vec_pieces.len)
            return xn_fail(err, "gso_check: pieces past the vector");
        unsigned char head[XN_GSO_HEADER_PEEK];
        long have = gather_head(&p, vec_pieces, mem, head, XN_GSO_HEADER_PEEK);
        if (have < 0)
            return xn_fail(err, "gso_check: frame %ld outside memory", -have - 1);
        struct xn_l3l4 x;
        int ok = l3l4(head, (uint32_t)have, &x) && x.proto == 6 && x.l4 + x.l4_len == p.len;
        if (ok && p.gso_type == XN_GSO_TCPV4)
            ok = x.version == 4;
        else if (ok && p.gso_type == XN_GSO_TCPV6)
            ok = x.version == 6;
        if (!ok || !(p.flags & XN_PKT_CSUM_PARTIAL)) {
            xn_st32(out.p + 4 * (size_t)found, j);
            found++;
        }
    }
    return found;
}

long xn_vec_compact(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                    uint32_t npieces, struct xn_err *err)
{
    if (start > npkts || vec_pkts.len < (size_t)npkts * sizeof(struct xn_pkt) ||
        vec_pieces.len < (size_t)npieces * sizeof(struct xn_piece))
        return xn_fail(err, "vec_compact: buffers too small");
    if (start == npkts)
        return 0;
    struct xn_pkt p0;
    XN_GET(p0, vec_pkts.p, start);
    uint32_t first = p0.piece0 < npieces ? p0.piece0 : npieces;
    uint32_t n = npkts - start;
    memmove(vec_pkts.p, vec_pkts.p + (size_t)start * sizeof(struct xn_pkt), (size_t)n * sizeof(struct xn_pkt));
    memmove(vec_pieces.p, vec_pieces.p + (size_t)first * sizeof(struct xn_piece),
            (size_t)(npieces - first) * sizeof(struct xn_piece));
    for (uint32_t i = 0; i < n; i++) {
        struct xn_pkt p;
        XN_GET(p, vec_pkts.p, i);
        p.piece0 = p.piece0 >= first ? p.piece0 - first : 0;
        XN_PUT(vec_pkts.p, i, p);
    }
    return (long)(npieces - first);
}

int xn_vec_fill_frame(struct xn_buf mem, struct xn_buf pool, struct xn_buf frame, uint32_t flags, uint32_t gso_size,
                      uint32_t gso_type, uint32_t csum_start, uint32_t csum_offset, struct xn_buf vec_pkts,
                      struct xn_buf vec_pieces, uint32_t pkt_index, uint32_t piece_base, uint32_t piece_cap,
                      long res[2], struct xn_err *err)
{
    size_t length = frame.len;
    if (length < 1 || length > 0xFFFF)
        return xn_fail(err, "vec_fill_frame: a frame of %zu bytes", length);
    if (vec_pkts.len < ((uint64_t)pkt_index + 1) * sizeof(struct xn_pkt) ||
        vec_pieces.len < (size_t)piece_cap * sizeof(struct xn_piece))
        return xn_fail(err, "vec_fill_frame: buffers too small");
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    uint32_t need = (uint32_t)((length + XN_PAGE_SIZE - 1) / XN_PAGE_SIZE);
    if (pv.count < need || (uint64_t)piece_base + need > piece_cap) {
        res[0] = 0;
        res[1] = piece_base;
        return 0;
    }
    uint32_t npiece = piece_base;
    size_t done = 0;
    int rc = 0;
    while (done < length) {
        uint32_t f;
        if (!xn_pool_pop(&pv, &f)) {
            rc = xn_fail(err, XN_POOL_CORRUPT);
            break;
        }
        if (((uint64_t)f + 1) * XN_PAGE_SIZE > mem.len) {
            rc = xn_fail(err, "vec_fill_frame: frame %u outside memory", f);
            break;
        }
        uint32_t n = (uint32_t)(length - done < XN_PAGE_SIZE ? length - done : XN_PAGE_SIZE);
        memcpy(mem.p + (size_t)f * XN_PAGE_SIZE, frame.p + done, n);
        struct xn_piece pc = {f, 0, (uint16_t)n, XN_NONE32, XN_DOMID_SELF, XN_PIECE_POOL};
        XN_PUT(vec_pieces.p, npiece, pc);
        npiece++;
        done += n;
    }
    xn_pool_close(&pv);
    if (rc)
        return rc;
    struct xn_pkt v = {piece_base, (uint16_t)(npiece - piece_base), (uint16_t)flags, (uint32_t)length, XN_NONE32,
                       (uint16_t)gso_size, (uint8_t)gso_type, 0, (uint16_t)csum_start, (uint16_t)csum_offset};
    XN_PUT(vec_pkts.p, pkt_index, v);
    res[0] = 1;
    res[1] = npiece;
    return 0;
}

long xn_vec_gather(struct xn_buf mem, struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t j, struct xn_buf out,
                   struct xn_err *err)
{
    if (vec_pkts.len < ((uint64_t)j + 1) * sizeof(struct xn_pkt))
        return xn_fail(err, "vec_gather: buffers too small");
    struct xn_pkt p;
    XN_GET(p, vec_pkts.p, j);
    if (((uint64_t)p.piece0 + p.npieces) * sizeof(struct xn_piece) > vec_pieces.len)
        return xn_fail(err, "vec_gather: pieces past the vector");
    size_t pos = 0;
    for (uint32_t k = p.piece0; k < (uint32_t)p.piece0 + p.npieces; k++) {
        struct xn_piece pc;
        XN_GET(pc, vec_pieces.p, k);
        if ((pc.flags & XN_PIECE_RUN) || pc.domid != XN_DOMID_SELF)
            continue;
        uint64_t base = (uint64_t)pc.frame * XN_PAGE_SIZE + pc.offset;
        if (base + pc.len > mem.len)
            return xn_fail(err, "vec_gather: frame %u outside memory", pc.frame);
        if (pos + pc.len > out.len)
            return xn_fail(err, "vec_gather: out too small");
        memcpy(out.p + pos, mem.p + base, pc.len);
        pos += pc.len;
    }
    return (long)pos;
}
