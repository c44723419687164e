/* Frame pools: a stack of free frames and a state byte (and grant ref) per frame. */
#include "xn_core.h"

int xn_pool_open(struct xn_poolv *pv, struct xn_buf b, struct xn_err *err)
{
    struct xn_pool h;
    if (b.len < sizeof h)
        return xn_fail(err, "pool buffer too small for its header");
    memcpy(&h, b.p, sizeof h);
    size_t stack = sizeof h;
    size_t state = stack + 4 * (size_t)h.cap;
    size_t refs = state + h.nr_frames + ((4 - h.nr_frames % 4) % 4);
    if (b.len < refs + 4 * (size_t)h.nr_frames)
        return xn_fail(err, "pool buffer too small for its header");
    if (h.count > h.cap)
        return xn_fail(err, "pool: count %u above its capacity %u", h.count, h.cap);
    pv->hdr = b.p;
    pv->count = h.count;
    pv->cap = h.cap;
    pv->nr_frames = h.nr_frames;
    pv->granted = h.granted;
    pv->stack = b.p + stack;
    pv->state = b.p + state;
    pv->refs = b.p + refs;
    return 0;
}

void xn_pool_close(struct xn_poolv *pv) { xn_st32(pv->hdr, pv->count); }

int xn_pool_pop(struct xn_poolv *pv, uint32_t *frame)
{
    if (pv->count == 0)
        return 0;
    uint32_t f = xn_ld32(pv->stack + 4 * (size_t)(pv->count - 1));
    if (f >= pv->nr_frames)
        return 0; /* cannot happen: only checked frames are pushed */
    pv->count--;
    pv->state[f] = XN_POOL_TAKEN;
    *frame = f;
    return 1;
}

int xn_pool_push(struct xn_poolv *pv, uint32_t frame, struct xn_err *err)
{
    if (frame >= pv->nr_frames || pv->state[frame] != XN_POOL_TAKEN)
        return xn_fail(err, "pool: frame %u is not out of this pool (given back twice?)", frame);
    if (pv->count >= pv->cap)
        return xn_fail(err, "pool: stack full");
    xn_st32(pv->stack + 4 * (size_t)pv->count, frame);
    pv->count++;
    pv->state[frame] = XN_POOL_FREE;
    return 0;
}

int xn_pool_add(struct xn_buf pool, struct xn_buf frames, struct xn_buf *refs, uint32_t n, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (frames.len < 4 * (size_t)n || (refs && refs->len < 4 * (size_t)n))
        return xn_fail(err, "pool_add: fewer frames than n");
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t f = xn_ld32(frames.p + 4 * (size_t)i);
        if (f >= pv.nr_frames || pv.state[f] != XN_POOL_NOT_OURS) {
            rc = xn_fail(err, "pool: frame %u cannot be added (out of range or already the pool's)", f);
            break;
        }
        if (pv.count >= pv.cap) {
            rc = xn_fail(err, "pool: stack full");
            break;
        }
        pv.state[f] = XN_POOL_TAKEN;
        if (xn_pool_push(&pv, f, err)) {
            rc = -1;
            break;
        }
        if (refs)
            memcpy(pv.refs + 4 * (size_t)f, refs->p + 4 * (size_t)i, 4);
    }
    xn_pool_close(&pv);
    return rc;
}

long xn_pool_take(struct xn_buf pool, uint32_t n, struct xn_buf out, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (out.len < 4 * (size_t)n)
        return xn_fail(err, "pool_take: out too small");
    uint32_t got = 0, f;
    while (got < n && xn_pool_pop(&pv, &f))
        xn_st32(out.p + 4 * (size_t)got++, f);
    xn_pool_close(&pv);
    return got;
}

int xn_pool_give(struct xn_buf pool, struct xn_buf frames, uint32_t n, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (frames.len < 4 * (size_t)n)
        return xn_fail(err, "pool_give: fewer frames than n");
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = xn_pool_push(&pv, xn_ld32(frames.p + 4 * (size_t)i), err);
    xn_pool_close(&pv);
    return rc;
}

long xn_pool_drain(struct xn_buf pool, struct xn_buf out, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    uint32_t n = pv.count;
    if (out.len < 4 * (size_t)n)
        return xn_fail(err, "pool_drain: out too small");
    for (uint32_t i = 0; i < n; i++) {
        uint32_t f = xn_ld32(pv.stack + 4 * (size_t)i);
        xn_st32(out.p + 4 * (size_t)i, f);
        if (f < pv.nr_frames)
            pv.state[f] = XN_POOL_NOT_OURS;
    }
    pv.count = 0;
    xn_pool_close(&pv);
    return n;
}

long xn_pool_take_pairs(struct xn_buf pool, uint32_t n, struct xn_buf out, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (!pv.granted)
        return xn_fail(err, "pool_take_pairs: the pool's frames are not granted");
    if (out.len < 8 * (size_t)n)
        return xn_fail(err, "pool_take_pairs: out too small");
    uint32_t got = 0, f;
    while (got < n && xn_pool_pop(&pv, &f)) {
        struct xn_end_ref pr = {xn_ld32(pv.refs + 4 * (size_t)f), f};
        XN_PUT(out.p, got, pr);
        got++;
    }
    xn_pool_close(&pv);
    return got;
}

int xn_stack_open(struct xn_stack *s, struct xn_buf b, struct xn_err *err)
{
    if (b.len < 2)
        return xn_fail(err, "stack buffer too small");
    s->p = b.p;
    s->cap = (uint32_t)(b.len / 2) - 1;
    s->count = xn_ld16(b.p);
    if (s->count > s->cap)
        return xn_fail(err, "stack count %u above its capacity %u", s->count, s->cap);
    return 0;
}

void xn_stack_close(struct xn_stack *s) { xn_st16(s->p, (uint16_t)s->count); }

int xn_pool_give_pairs(struct xn_buf pool, struct xn_buf pairs, uint32_t n, struct xn_err *err)
{
    struct xn_poolv pv;
    if (xn_pool_open(&pv, pool, err))
        return -1;
    if (pairs.len < 8 * (size_t)n)
        return xn_fail(err, "pool_give_pairs: fewer pairs than n");
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = xn_pool_push(&pv, xn_ld32(pairs.p + 8 * (size_t)i + 4), err);
    xn_pool_close(&pv);
    return rc;
}
