/* xennet.core._native: the compiled core's kernels, bound to Python with the limited API
 * (abi3, 3.11).  Each function takes and returns what its twin in core/pure/ does; a
 * kernel's error becomes ValueError with the twin's message. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "xn_core.h"

static struct xn_buf B(Py_buffer *b) { return (struct xn_buf){(unsigned char *)b->buf, (size_t)b->len}; }

static int u32(Py_ssize_t v, uint32_t *out)
{
    if (v < 0 || (unsigned long long)v > 0xFFFFFFFFull) {
        PyErr_Format(PyExc_ValueError, "argument %zd is not a u32", v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *fail(struct xn_err *err)
{
    PyErr_SetString(PyExc_ValueError, err->msg);
    return NULL;
}

static PyObject *tuple_of(const long *res, int n)
{
    PyObject *t = PyTuple_New(n);
    if (!t)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(res[i]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SetItem(t, i, v);
    }
    return t;
}

#define REL(...)                                                                                                      \
    do {                                                                                                             \
        Py_buffer *bufs_[] = {__VA_ARGS__};                                                                          \
        for (size_t i_ = 0; i_ < sizeof bufs_ / sizeof bufs_[0]; i_++)                                               \
            if (bufs_[i_] && bufs_[i_]->obj)                                                                         \
                PyBuffer_Release(bufs_[i_]);                                                                         \
    } while (0)

/* ---- ring ---- */

static PyObject *ring_move(PyObject *args, int out)
{
    Py_buffer page, buf;
    Py_ssize_t start, count, esize, nents;
    if (!PyArg_ParseTuple(args, out ? "y*nnnnw*" : "w*nnnny*", &page, &start, &count, &esize, &nents, &buf))
        return NULL;
    uint32_t a, c, e, n;
    struct xn_err err;
    int rc = -2;
    if (!u32(start & 0xFFFFFFFF, &a) && !u32(count, &c) && !u32(esize, &e) && !u32(nents, &n))
        rc = out ? xn_ring_copy_out(B(&page), a, c, e, n, B(&buf), &err) : xn_ring_copy_in(B(&page), a, c, e, n, B(&buf), &err);
    REL(&page, &buf);
    if (rc == -2)
        return NULL;
    if (rc)
        return fail(&err);
    Py_RETURN_NONE;
}
static PyObject *py_ring_copy_out(PyObject *s, PyObject *a) { (void)s; return ring_move(a, 1); }
static PyObject *py_ring_copy_in(PyObject *s, PyObject *a) { (void)s; return ring_move(a, 0); }

/* ---- pools ---- */

static PyObject *py_pool_add(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, frames, refs = {0};
    PyObject *refs_o;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "w*y*On", &pool, &frames, &refs_o, &n))
        return NULL;
    struct xn_err err;
    uint32_t un;
    int rc = -2;
    if (refs_o != Py_None && PyObject_GetBuffer(refs_o, &refs, PyBUF_SIMPLE) < 0) {
        REL(&pool, &frames);
        return NULL;
    }
    if (!u32(n, &un))
        rc = xn_pool_add(B(&pool), B(&frames), refs_o != Py_None ? &(struct xn_buf){B(&refs).p, B(&refs).len} : NULL, un,
                         &err);
    REL(&pool, &frames, &refs);
    if (rc == -2)
        return NULL;
    if (rc)
        return fail(&err);
    Py_RETURN_NONE;
}

static PyObject *py_pool_take(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, out;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "w*nw*", &pool, &n, &out))
        return NULL;
    struct xn_err err;
    uint32_t un;
    long rc = -2;
    if (!u32(n, &un))
        rc = xn_pool_take(B(&pool), un, B(&out), &err);
    REL(&pool, &out);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_pool_take_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, out;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "w*nw*", &pool, &n, &out))
        return NULL;
    struct xn_err err;
    uint32_t un;
    long rc = -2;
    if (!u32(n, &un))
        rc = xn_pool_take_pairs(B(&pool), un, B(&out), &err);
    REL(&pool, &out);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_pool_give(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, frames;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "w*y*n", &pool, &frames, &n))
        return NULL;
    struct xn_err err;
    uint32_t un;
    int rc = -2;
    if (!u32(n, &un))
        rc = xn_pool_give(B(&pool), B(&frames), un, &err);
    REL(&pool, &frames);
    if (rc == -2)
        return NULL;
    if (rc)
        return fail(&err);
    Py_RETURN_NONE;
}

static PyObject *py_pool_drain(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, out;
    if (!PyArg_ParseTuple(args, "w*w*", &pool, &out))
        return NULL;
    struct xn_err err;
    long rc = xn_pool_drain(B(&pool), B(&out), &err);
    REL(&pool, &out);
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

/* ---- grant copy ---- */

static PyObject *py_grant_check(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer table;
    Py_ssize_t ref, domid, nr_frames;
    int write;
    if (!PyArg_ParseTuple(args, "y*nnpn", &table, &ref, &domid, &write, &nr_frames))
        return NULL;
    uint32_t r, d, nf, frame = 0;
    int st = -99;
    if (ref < 0 || ref > 0xFFFFFFFFll) {
        st = XN_GNTST_BAD_GNTREF; /* the twin: any ref outside the table */
    } else if (!u32(ref, &r) && !u32(domid, &d) && !u32(nr_frames, &nf)) {
        st = xn_grant_check(B(&table), r, d, write, nf, &frame);
    }
    REL(&table);
    if (st == -99)
        return NULL;
    return Py_BuildValue("(iI)", st, st == XN_GNTST_OKAY ? frame : 0u);
}

#define MAX_DOMAINS 256

static PyObject *py_grant_copy(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer segs, own_mem;
    Py_ssize_t nsegs, own_domid;
    unsigned long long own_base;
    PyObject *domains;
    if (!PyArg_ParseTuple(args, "w*nnw*KO", &segs, &nsegs, &own_domid, &own_mem, &own_base, &domains))
        return NULL;
    Py_ssize_t nd = PySequence_Size(domains);
    PyObject *result = NULL;
    struct xn_domain doms[MAX_DOMAINS];
    Py_buffer tb[MAX_DOMAINS], mb[MAX_DOMAINS];
    Py_ssize_t got = 0;
    uint32_t ns, od;
    if (nd < 0)
        goto out;
    if (nd > MAX_DOMAINS) {
        PyErr_SetString(PyExc_ValueError, "grant_copy: more than 256 domains");
        goto out;
    }
    for (got = 0; got < nd; got++) {
        PyObject *item = PySequence_GetItem(domains, got);
        if (!item)
            goto out;
        Py_ssize_t domid;
        int ok = PyArg_ParseTuple(item, "ny*w*", &domid, &tb[got], &mb[got]);
        Py_DECREF(item);
        if (!ok)
            goto out;
        doms[got] = (struct xn_domain){(uint32_t)domid, B(&tb[got]), B(&mb[got])};
    }
    if (u32(nsegs, &ns) || u32(own_domid, &od))
        goto out;
    struct xn_err err;
    long failed = xn_grant_copy(B(&segs), ns, od, B(&own_mem), (uint64_t)own_base, doms, (size_t)nd, &err);
    result = failed < 0 ? fail(&err) : PyLong_FromLong(failed);
out:
    for (Py_ssize_t i = 0; i < got; i++)
        REL(&tb[i], &mb[i]);
    REL(&segs, &own_mem);
    return result;
}

static PyObject *py_segment_domids(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer segs;
    Py_ssize_t nsegs, own;
    if (!PyArg_ParseTuple(args, "y*nn", &segs, &nsegs, &own))
        return NULL;
    uint32_t ns, od, out[MAX_DOMAINS];
    struct xn_err err;
    long n = -2;
    if (!u32(nsegs, &ns) && !u32(own, &od))
        n = xn_segment_domids(B(&segs), ns, od, out, MAX_DOMAINS, &err);
    REL(&segs);
    if (n == -2)
        return NULL;
    if (n < 0)
        return fail(&err);
    PyObject *t = PyTuple_New(n);
    for (long i = 0; t && i < n; i++)
        PyTuple_SetItem(t, i, PyLong_FromUnsignedLong(out[i]));
    return t;
}

/* ---- netback tx ---- */

static PyObject *py_netback_tx_assemble(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer reqs, out;
    Py_ssize_t n, max_slots, fatal_slots, max_pkts;
    if (!PyArg_ParseTuple(args, "y*nnnw*n", &reqs, &n, &max_slots, &fatal_slots, &out, &max_pkts))
        return NULL;
    uint32_t a, b, c, d;
    long res[5];
    struct xn_err err;
    int rc = -2;
    if (!u32(n, &a) && !u32(max_slots, &b) && !u32(fatal_slots, &c) && !u32(max_pkts, &d))
        rc = xn_netback_tx_assemble(B(&reqs), a, b, c, B(&out), d, res, &err);
    REL(&reqs, &out);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 5);
}

static PyObject *py_netback_tx_build(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer reqs, pkts, pool, segs, ranges, vp, vpc;
    Py_ssize_t start, npkts, domid, copy_len, map_frags, seg_base, seg_cap, piece_base, piece_cap;
    unsigned long long mem_base;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnKw*w*nnw*w*w*nn", &reqs, &pkts, &start, &npkts, &domid, &copy_len,
                          &map_frags, &mem_base, &pool, &segs, &seg_base, &seg_cap, &ranges, &vp, &vpc, &piece_base,
                          &piece_cap))
        return NULL;
    uint32_t v[9];
    long res[3];
    struct xn_err err;
    int rc = -2;
    if (!u32(start, &v[0]) && !u32(npkts, &v[1]) && !u32(domid, &v[2]) && !u32(copy_len, &v[3]) &&
        !u32(map_frags, &v[4]) && !u32(seg_base, &v[5]) && !u32(seg_cap, &v[6]) && !u32(piece_base, &v[7]) &&
        !u32(piece_cap, &v[8]))
        rc = xn_netback_tx_build(B(&reqs), B(&pkts), v[0], v[1], v[2], v[3], v[4], mem_base, B(&pool), B(&segs), v[5],
                                 v[6], B(&ranges), B(&vp), B(&vpc), v[7], v[8], res, &err);
    REL(&reqs, &pkts, &pool, &segs, &ranges, &vp, &vpc);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 3);
}

static PyObject *py_netback_tx_respond(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer reqs, pkts, ranges, segs, vp, vpc, pool, rsp, rr, st;
    Py_ssize_t start, npkts;
    if (!PyArg_ParseTuple(args, "y*y*nny*y*w*y*w*w*w*w*", &reqs, &pkts, &start, &npkts, &ranges, &segs, &vp, &vpc,
                          &pool, &rsp, &rr, &st))
        return NULL;
    uint32_t a, b;
    long res[7];
    struct xn_err err;
    int rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b))
        rc = xn_netback_tx_respond(B(&reqs), B(&pkts), a, b, B(&ranges), B(&segs), B(&vp), B(&vpc), B(&pool), B(&rsp),
                                   B(&rr), B(&st), res, &err);
    REL(&reqs, &pkts, &ranges, &segs, &vp, &vpc, &pool, &rsp, &rr, &st);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 7);
}

static PyObject *py_netback_tx_set_status(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rsp;
    Py_ssize_t first, count;
    int status;
    if (!PyArg_ParseTuple(args, "w*nni", &rsp, &first, &count, &status))
        return NULL;
    uint32_t a, b;
    struct xn_err err;
    int rc = -2;
    if (!u32(first, &a) && !u32(count, &b))
        rc = xn_netback_tx_set_status(B(&rsp), a, b, status, &err);
    REL(&rsp);
    if (rc == -2)
        return NULL;
    if (rc)
        return fail(&err);
    Py_RETURN_NONE;
}

/* ---- netback rx ---- */

static PyObject *py_netback_rx_estimate(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vpc;
    Py_ssize_t piece0, npieces;
    int packing, gso;
    if (!PyArg_ParseTuple(args, "y*nnip", &vpc, &piece0, &npieces, &packing, &gso))
        return NULL;
    uint32_t a, b;
    struct xn_err err;
    long rc = -2;
    if (!u32(piece0, &a) && !u32(npieces, &b))
        rc = xn_netback_rx_estimate(B(&vpc), a, b, packing, gso, &err);
    REL(&vpc);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_netback_rx_plan(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc, reqs, segs, plans, rsps;
    Py_ssize_t start, npkts, nreqs, max_buffers, domid, seg_cap, rsp_cap;
    int packing;
    unsigned long long mem_base;
    if (!PyArg_ParseTuple(args, "y*y*nny*ninnKw*nw*w*n", &vp, &vpc, &start, &npkts, &reqs, &nreqs, &packing,
                          &max_buffers, &domid, &mem_base, &segs, &seg_cap, &plans, &rsps, &rsp_cap))
        return NULL;
    uint32_t v[7];
    long res[9];
    struct xn_err err;
    int rc = -2;
    if (!u32(start, &v[0]) && !u32(npkts, &v[1]) && !u32(nreqs, &v[2]) && !u32(max_buffers, &v[3]) &&
        !u32(domid, &v[4]) && !u32(seg_cap, &v[5]) && !u32(rsp_cap, &v[6]))
        rc = xn_netback_rx_plan(B(&vp), B(&vpc), v[0], v[1], B(&reqs), v[2], packing, v[3], v[4], mem_base, B(&segs),
                                v[5], B(&plans), B(&rsps), v[6], res, &err);
    REL(&vp, &vpc, &reqs, &segs, &plans, &rsps);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 9);
}

static PyObject *py_netback_rx_respond(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer plans, segs, rsps, st, vp;
    Py_ssize_t npkts, start;
    if (!PyArg_ParseTuple(args, "y*ny*w*w*y*n", &plans, &npkts, &segs, &rsps, &st, &vp, &start))
        return NULL;
    uint32_t a, b;
    long res[5];
    struct xn_err err;
    int rc = -2;
    if (!u32(npkts, &a) && !u32(start, &b))
        rc = xn_netback_rx_respond(B(&plans), a, B(&segs), B(&rsps), B(&st), B(&vp), b, res, &err);
    REL(&plans, &segs, &rsps, &st, &vp);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 5);
}

/* ---- netfront tx ---- */

static PyObject *py_netfront_tx_post(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc, pool, slots, inf, ids, pks, reqs;
    Py_ssize_t start, npkts, free_ring;
    if (!PyArg_ParseTuple(args, "y*w*nny*w*w*w*w*nw*", &vp, &vpc, &start, &npkts, &pool, &slots, &inf, &ids, &pks,
                          &free_ring, &reqs))
        return NULL;
    uint32_t a, b, c;
    long res[5];
    struct xn_err err;
    int rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b) && !u32(free_ring, &c))
        rc = xn_netfront_tx_post(B(&vp), B(&vpc), a, b, B(&pool), B(&slots), B(&inf), B(&ids), B(&pks), c, B(&reqs),
                                 res, &err);
    REL(&vp, &vpc, &pool, &slots, &inf, &ids, &pks, &reqs);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 5);
}

static PyObject *py_netfront_tx_complete(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rsps, pool, slots, inf, ids, pks, done, end;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*nw*w*w*w*w*w*w*", &rsps, &n, &pool, &slots, &inf, &ids, &pks, &done, &end))
        return NULL;
    uint32_t a;
    long res[9];
    struct xn_err err;
    int rc = -2;
    if (!u32(n, &a))
        rc = xn_netfront_tx_complete(B(&rsps), a, B(&pool), B(&slots), B(&inf), B(&ids), B(&pks), B(&done), B(&end), res,
                                     &err);
    REL(&rsps, &pool, &slots, &inf, &ids, &pks, &done, &end);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 9);
}

/* ---- netfront rx ---- */

static PyObject *py_netfront_rx_post(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer slots, pairs, reqs;
    Py_ssize_t start, mask, npairs;
    if (!PyArg_ParseTuple(args, "w*nny*nw*", &slots, &start, &mask, &pairs, &npairs, &reqs))
        return NULL;
    uint32_t a, b, c;
    struct xn_err err;
    long rc = -2;
    if (!u32(start & 0xFFFFFFFF, &a) && !u32(mask, &b) && !u32(npairs, &c))
        rc = xn_netfront_rx_post(B(&slots), a, b, B(&pairs), c, B(&reqs), &err);
    REL(&slots, &pairs, &reqs);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_netfront_rx_assemble(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rsps, slots, out;
    Py_ssize_t n, cons, mask, max_pkts;
    int gso_ok;
    if (!PyArg_ParseTuple(args, "y*nnny*pw*n", &rsps, &n, &cons, &mask, &slots, &gso_ok, &out, &max_pkts))
        return NULL;
    uint32_t a, b, c, d;
    long res[4];
    struct xn_err err;
    int rc = -2;
    if (!u32(n, &a) && !u32(cons & 0xFFFFFFFF, &b) && !u32(mask, &c) && !u32(max_pkts, &d))
        rc = xn_netfront_rx_assemble(B(&rsps), a, b, c, B(&slots), gso_ok, B(&out), d, res, &err);
    REL(&rsps, &slots, &out);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 4);
}

static PyObject *py_netfront_rx_slot_refs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rsps, pkts, slots, out;
    Py_ssize_t start, npkts, cons, mask;
    if (!PyArg_ParseTuple(args, "y*y*nnnny*w*", &rsps, &pkts, &start, &npkts, &cons, &mask, &slots, &out))
        return NULL;
    uint32_t a, b, c, d;
    struct xn_err err;
    long rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b) && !u32(cons & 0xFFFFFFFF, &c) && !u32(mask, &d))
        rc = xn_netfront_rx_slot_refs(B(&rsps), B(&pkts), a, b, c, d, B(&slots), B(&out), &err);
    REL(&rsps, &pkts, &slots, &out);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_netfront_rx_build(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rsps, pkts, slots, mem, priv, vp, vpc, rec;
    Py_ssize_t start, npkts, cons, mask, piece_base, piece_cap, rec_base;
    int ended;
    if (!PyArg_ParseTuple(args, "y*w*nnnnw*w*w*pw*w*nnw*n", &rsps, &pkts, &start, &npkts, &cons, &mask, &slots, &mem,
                          &priv, &ended, &vp, &vpc, &piece_base, &piece_cap, &rec, &rec_base))
        return NULL;
    uint32_t v[7];
    long res[7];
    struct xn_err err;
    int rc = -2;
    if (!u32(start, &v[0]) && !u32(npkts, &v[1]) && !u32(cons & 0xFFFFFFFF, &v[2]) && !u32(mask, &v[3]) &&
        !u32(piece_base, &v[4]) && !u32(piece_cap, &v[5]) && !u32(rec_base, &v[6]))
        rc = xn_netfront_rx_build(B(&rsps), B(&pkts), v[0], v[1], v[2], v[3], B(&slots), B(&mem), B(&priv), ended, B(&vp),
                                  B(&vpc), v[4], v[5], B(&rec), v[6], res, &err);
    REL(&rsps, &pkts, &slots, &mem, &priv, &vp, &vpc, &rec);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 7);
}

/* ---- vectors ---- */

static PyObject *py_vec_fill_frames(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer mem, pool, frames, lens, vp, vpc;
    Py_ssize_t nframes, flags, gso_size, gso_type, pkt_base, piece_base, piece_cap;
    if (!PyArg_ParseTuple(args, "w*w*y*y*nnnnw*w*nnn", &mem, &pool, &frames, &lens, &nframes, &flags, &gso_size,
                          &gso_type, &vp, &vpc, &pkt_base, &piece_base, &piece_cap))
        return NULL;
    uint32_t v[7];
    long res[2];
    struct xn_err err;
    int rc = -2;
    if (!u32(nframes, &v[0]) && !u32(flags, &v[1]) && !u32(gso_size, &v[5]) && !u32(gso_type, &v[6]) &&
        !u32(pkt_base, &v[2]) && !u32(piece_base, &v[3]) && !u32(piece_cap, &v[4]))
        rc = xn_vec_fill_frames(B(&mem), B(&pool), B(&frames), B(&lens), v[0], v[1], v[5], v[6], B(&vp), B(&vpc), v[2],
                                v[3], v[4], res, &err);
    REL(&mem, &pool, &frames, &lens, &vp, &vpc);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 2);
}

static PyObject *py_vec_release(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc, pool, tags, priv = {0};
    PyObject *priv_o;
    Py_ssize_t start, npkts;
    if (!PyArg_ParseTuple(args, "y*y*nnw*Ow*", &vp, &vpc, &start, &npkts, &pool, &priv_o, &tags))
        return NULL;
    if (priv_o != Py_None && PyObject_GetBuffer(priv_o, &priv, PyBUF_WRITABLE) < 0) {
        REL(&vp, &vpc, &pool, &tags);
        return NULL;
    }
    uint32_t a, b;
    struct xn_err err;
    long rc = -2;
    struct xn_buf pb = B(&priv);
    if (!u32(start, &a) && !u32(npkts, &b))
        rc = xn_vec_release(B(&vp), B(&vpc), a, b, B(&pool), priv_o != Py_None ? &pb : NULL, B(&tags), &err);
    REL(&vp, &vpc, &pool, &tags, &priv);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_vec_fill_frame(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer mem, pool, frame, vp, vpc;
    Py_ssize_t flags, gso_size, gso_type, cs, co, idx, base, cap;
    if (!PyArg_ParseTuple(args, "w*w*y*nnnnnw*w*nnn", &mem, &pool, &frame, &flags, &gso_size, &gso_type, &cs, &co, &vp,
                          &vpc, &idx, &base, &cap))
        return NULL;
    uint32_t v[8];
    long res[2];
    struct xn_err err;
    int rc = -2;
    if (!u32(flags, &v[0]) && !u32(gso_size, &v[1]) && !u32(gso_type, &v[2]) && !u32(cs, &v[3]) && !u32(co, &v[4]) &&
        !u32(idx, &v[5]) && !u32(base, &v[6]) && !u32(cap, &v[7]))
        rc = xn_vec_fill_frame(B(&mem), B(&pool), B(&frame), v[0], v[1], v[2], v[3], v[4], B(&vp), B(&vpc), v[5], v[6],
                               v[7], res, &err);
    REL(&mem, &pool, &frame, &vp, &vpc);
    if (rc == -2)
        return NULL;
    return rc ? fail(&err) : tuple_of(res, 2);
}

static PyObject *py_vec_gather(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer mem, vp, vpc, out;
    Py_ssize_t j;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*", &mem, &vp, &vpc, &j, &out))
        return NULL;
    uint32_t a;
    struct xn_err err;
    long rc = -2;
    if (!u32(j, &a))
        rc = xn_vec_gather(B(&mem), B(&vp), B(&vpc), a, B(&out), &err);
    REL(&mem, &vp, &vpc, &out);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_vec_compact(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc;
    Py_ssize_t start, npkts, npieces;
    if (!PyArg_ParseTuple(args, "w*w*nnn", &vp, &vpc, &start, &npkts, &npieces))
        return NULL;
    uint32_t a, b, c;
    struct xn_err err;
    long rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b) && !u32(npieces, &c))
        rc = xn_vec_compact(B(&vp), B(&vpc), a, b, c, &err);
    REL(&vp, &vpc);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_pool_give_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, pairs;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "w*y*n", &pool, &pairs, &n))
        return NULL;
    uint32_t a;
    struct xn_err err;
    int rc = -2;
    if (!u32(n, &a))
        rc = xn_pool_give_pairs(B(&pool), B(&pairs), a, &err);
    REL(&pool, &pairs);
    if (rc == -2)
        return NULL;
    if (rc)
        return fail(&err);
    Py_RETURN_NONE;
}

static PyObject *py_csum_setup(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc, mem;
    Py_ssize_t start, npkts;
    if (!PyArg_ParseTuple(args, "w*y*nny*", &vp, &vpc, &start, &npkts, &mem))
        return NULL;
    uint32_t a, b;
    struct xn_err err;
    long rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b))
        rc = xn_csum_setup(B(&vp), B(&vpc), a, b, B(&mem), &err);
    REL(&vp, &vpc, &mem);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyObject *py_gso_check(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer vp, vpc, mem, out;
    Py_ssize_t start, npkts;
    if (!PyArg_ParseTuple(args, "y*y*nny*w*", &vp, &vpc, &start, &npkts, &mem, &out))
        return NULL;
    uint32_t a, b;
    struct xn_err err;
    long rc = -2;
    if (!u32(start, &a) && !u32(npkts, &b))
        rc = xn_gso_check(B(&vp), B(&vpc), a, b, B(&mem), B(&out), &err);
    REL(&vp, &vpc, &mem, &out);
    if (rc == -2)
        return NULL;
    return rc < 0 ? fail(&err) : PyLong_FromLong(rc);
}

static PyMethodDef methods[] = {
    {"csum_setup", py_csum_setup, METH_VARARGS, NULL},
    {"grant_check", py_grant_check, METH_VARARGS, NULL},
    {"grant_copy", py_grant_copy, METH_VARARGS, NULL},
    {"gso_check", py_gso_check, METH_VARARGS, NULL},
    {"netback_rx_estimate", py_netback_rx_estimate, METH_VARARGS, NULL},
    {"netback_rx_plan", py_netback_rx_plan, METH_VARARGS, NULL},
    {"netback_rx_respond", py_netback_rx_respond, METH_VARARGS, NULL},
    {"netback_tx_assemble", py_netback_tx_assemble, METH_VARARGS, NULL},
    {"netback_tx_build", py_netback_tx_build, METH_VARARGS, NULL},
    {"netback_tx_respond", py_netback_tx_respond, METH_VARARGS, NULL},
    {"netback_tx_set_status", py_netback_tx_set_status, METH_VARARGS, NULL},
    {"netfront_rx_assemble", py_netfront_rx_assemble, METH_VARARGS, NULL},
    {"netfront_rx_build", py_netfront_rx_build, METH_VARARGS, NULL},
    {"netfront_rx_post", py_netfront_rx_post, METH_VARARGS, NULL},
    {"netfront_rx_slot_refs", py_netfront_rx_slot_refs, METH_VARARGS, NULL},
    {"netfront_tx_complete", py_netfront_tx_complete, METH_VARARGS, NULL},
    {"netfront_tx_post", py_netfront_tx_post, METH_VARARGS, NULL},
    {"pool_add", py_pool_add, METH_VARARGS, NULL},
    {"pool_drain", py_pool_drain, METH_VARARGS, NULL},
    {"pool_give", py_pool_give, METH_VARARGS, NULL},
    {"pool_give_pairs", py_pool_give_pairs, METH_VARARGS, NULL},
    {"pool_take", py_pool_take, METH_VARARGS, NULL},
    {"pool_take_pairs", py_pool_take_pairs, METH_VARARGS, NULL},
    {"ring_copy_in", py_ring_copy_in, METH_VARARGS, NULL},
    {"ring_copy_out", py_ring_copy_out, METH_VARARGS, NULL},
    {"segment_domids", py_segment_domids, METH_VARARGS, NULL},
    {"vec_compact", py_vec_compact, METH_VARARGS, NULL},
    {"vec_fill_frame", py_vec_fill_frame, METH_VARARGS, NULL},
    {"vec_fill_frames", py_vec_fill_frames, METH_VARARGS, NULL},
    {"vec_gather", py_vec_gather, METH_VARARGS, NULL},
    {"vec_release", py_vec_release, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "xennet.core._native",
                                    "The compiled core of xennet's data plane (see core/pure/ for the twin).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
