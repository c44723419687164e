/* The compiled core of xennet's data plane: the batch kernels, in plain C (no Python).
 *
 * Every record here is declared once in Python (core/records.py); the layout check in
 * tests/core/test_records_c.py compiles this header against those declarations.  The
 * kernels mirror the pure-Python twin (core/pure/) function for function: same inputs,
 * same outputs, same checks in the same order.  module.c binds them to Python.
 *
 * Records are read and written through memcpy (xn_get/xn_put), so no buffer needs any
 * alignment, and every byte read from a buffer a peer can write is read exactly once.
 */
#ifndef XN_CORE_H
#define XN_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xennet's records are little-endian, like every architecture Xen runs on"
#endif

#define XN_PAGE_SIZE 4096u
#define XN_RING_OFFSET 64u
#define XN_NONE32 0xFFFFFFFFu
#define XN_NONE16 0xFFFFu
#define XN_DOMID_SELF 0x7FF0u
#define XN_DOMID_FIRST_RESERVED 0x7FF0u

/* netif.h */
#define XN_TXF_CSUM_BLANK 1u
#define XN_TXF_DATA_VALIDATED 2u
#define XN_TXF_MORE_DATA 4u
#define XN_TXF_EXTRA_INFO 8u
#define XN_RXF_DATA_VALIDATED 1u
#define XN_RXF_CSUM_BLANK 2u
#define XN_RXF_MORE_DATA 4u
#define XN_RXF_EXTRA_INFO 8u
#define XN_EXTRA_NONE 0u
#define XN_EXTRA_GSO 1u
#define XN_EXTRA_MCAST_ADD 2u
#define XN_EXTRA_MCAST_DEL 3u
#define XN_EXTRA_MAX 5u
#define XN_EXTRA_FLAG_MORE 1u
#define XN_GSO_TCPV4 1u
#define XN_GSO_TCPV6 2u
#define XN_GSO_MIN_SIZE 88u /* records.GSO_MIN_SIZE: segments per packet stay bounded */
#define XN_GSO_HEADER_PEEK 118u /* records.GSO_HEADER_PEEK */

/* The extra-info chain and the GSO extra: the twin of abi/netif.py's extra_chain,
   extra_type_valid and gso_fault. */
#define XN_EXTRAS_OK 0
#define XN_EXTRAS_MISSING 1 /* a slot announced but not produced */
#define XN_EXTRAS_ENDLESS 2 /* more slots than there are extra types */

/* The positions of the chain's slots from pos (of n produced entries of entry bytes) into
   at[] (XN_EXTRA_MAX + 1 of them at most), their count, and how the chain ended.  The
   caller checks each slot's type: whatever the end, its slots come first. */
static inline int xn_extra_chain(const unsigned char *q, uint32_t pos, uint32_t n, size_t entry, uint32_t *at,
                                 uint32_t *count)
{
    uint32_t ne = 0;
    int more = 1, end = XN_EXTRAS_OK;
    while (more) {
        if (pos >= n) {
            end = XN_EXTRAS_MISSING;
            break;
        }
        at[ne++] = pos;
        more = !!(q[(size_t)pos * entry + 1] & XN_EXTRA_FLAG_MORE);
        pos++;
        if (ne > XN_EXTRA_MAX) {
            end = XN_EXTRAS_ENDLESS;
            break;
        }
    }
    *count = ne;
    return end;
}

static inline int xn_extra_type_valid(uint8_t etype)
{
    return etype > XN_EXTRA_NONE && etype < XN_EXTRA_MAX;
}

#define XN_GSO_OK 0
#define XN_GSO_SIZE_ZERO 1
#define XN_GSO_BAD_TYPE 2
static inline int xn_gso_fault(uint16_t size, uint8_t gso_type)
{
    if (size == 0)
        return XN_GSO_SIZE_ZERO;
    if (gso_type != XN_GSO_TCPV4 && gso_type != XN_GSO_TCPV6)
        return XN_GSO_BAD_TYPE;
    return XN_GSO_OK;
}
#define XN_RSP_DROPPED (-2)
#define XN_RSP_ERROR (-1)
#define XN_RSP_OKAY 0
#define XN_RSP_NULL 1
#define XN_NR_SLOTS_MIN 18u
#define XN_TX_ENTRY 12u
#define XN_RX_ENTRY 8u
#define XN_ETH_HLEN 14u
#define XN_RX_COPY_THRESHOLD 256u
#define XN_MAX_PACKET 0xFFFFu

/* grant_table.h */
#define XN_GTF_PERMIT_ACCESS 1u
#define XN_GTF_TYPE_MASK 3u
#define XN_GTF_READONLY 4u
#define XN_GNTCOPY_SOURCE_GREF 1u
#define XN_GNTCOPY_DEST_GREF 2u
#define XN_GNTST_OKAY 0
#define XN_GNTST_GENERAL_ERROR (-1)
#define XN_GNTST_BAD_DOMAIN (-2)
#define XN_GNTST_BAD_GNTREF (-3)
#define XN_GNTST_BAD_PAGE (-9)
#define XN_GNTST_BAD_COPY_ARG (-10)

/* records (core/records.py) */
struct xn_piece {
    uint32_t frame;
    uint16_t offset;
    uint16_t len;
    uint32_t ref;
    uint16_t domid;
    uint16_t flags;
};
#define XN_PIECE_OWN_GRANT 1u
#define XN_PIECE_POOL 2u
#define XN_PIECE_RUN 4u
#define XN_PIECE_PRIV 8u

struct xn_pkt {
    uint32_t piece0;
    uint16_t npieces;
    uint16_t flags;
    uint32_t len;
    uint32_t tag;
    uint16_t gso_size;
    uint8_t gso_type;
    uint8_t error;
    uint16_t csum_start;
    uint16_t csum_offset;
};
#define XN_PKT_CSUM_PARTIAL 1u
#define XN_PKT_DATA_VALIDATED 2u
#define XN_PKT_CSUM_FAILED 4u

/* A packet's checksum state (XN_PKT_*) and the ring flags: the twin of abi/netif.py's
   tx/rx_csum_flags and tx/rx_csum_state.  The rings swap the two bits; csum_blank always
   goes with data_validated. */
static inline uint16_t xn_csum_flags(uint16_t pkt_flags, uint16_t blank, uint16_t validated)
{
    if (pkt_flags & XN_PKT_CSUM_PARTIAL)
        return (uint16_t)(blank | validated);
    if (pkt_flags & XN_PKT_DATA_VALIDATED)
        return validated;
    return 0;
}

static inline uint16_t xn_csum_state(uint16_t flags, uint16_t blank, uint16_t validated)
{
    if (flags & blank)
        return XN_PKT_CSUM_PARTIAL;
    if (flags & validated)
        return XN_PKT_DATA_VALIDATED;
    return 0;
}
#define XN_TX_CSUM_FLAGS(st) xn_csum_flags((st), XN_TXF_CSUM_BLANK, XN_TXF_DATA_VALIDATED)
#define XN_TX_CSUM_STATE(f) xn_csum_state((f), XN_TXF_CSUM_BLANK, XN_TXF_DATA_VALIDATED)
#define XN_RX_CSUM_FLAGS(st) xn_csum_flags((st), XN_RXF_CSUM_BLANK, XN_RXF_DATA_VALIDATED)
#define XN_RX_CSUM_STATE(f) xn_csum_state((f), XN_RXF_CSUM_BLANK, XN_RXF_DATA_VALIDATED)

struct xn_tx_pkt {
    uint16_t first;
    uint16_t nslots;
    uint16_t nextras;
    uint16_t error;
    uint32_t size;
    uint16_t first_size;
    uint16_t flags;
    uint16_t gso_size;
    uint8_t gso_type;
    uint8_t kind;
    uint8_t mcast[6];
    uint16_t pad;
};
#define XN_TXK_DATA 0u
#define XN_TXK_MCAST_ADD 1u
#define XN_TXK_MCAST_DEL 2u

struct xn_rx_plan {
    uint32_t seg0;
    uint32_t nsegs;
    uint16_t rsp0;
    uint16_t nrsp;
    uint16_t nbuffers;
    uint16_t repacked;
};

struct xn_rx_pkt {
    uint16_t first;
    uint16_t nslots;
    uint16_t nextras;
    uint16_t error;
    uint32_t len;
    uint16_t flags;
    uint16_t gso_size;
    uint8_t gso_type;
    uint8_t pad0;
    uint16_t pad1;
};

struct xn_tx_slot {
    uint32_t ref;
    uint32_t frame;
    uint16_t inflight;
    uint16_t flags;
};

struct xn_tx_inflight {
    uint32_t tag;
    uint16_t slots_left;
    uint16_t status;
};

struct xn_rx_slot {
    uint32_t frame;
    uint32_t ref;
};

struct xn_tx_done {
    uint32_t tag;
    uint16_t status;
    uint16_t pad;
};

struct xn_end_ref {
    uint32_t ref;
    uint32_t frame;
};

struct xn_pool {
    uint32_t count;
    uint32_t cap;
    uint32_t nr_frames;
    uint32_t granted;
};
#define XN_POOL_NOT_OURS 0u
#define XN_POOL_FREE 1u
#define XN_POOL_TAKEN 2u

/* Linux xen/gntdev.h */
struct xn_seg {
    union {
        uint64_t virt;
        struct {
            uint32_t ref;
            uint16_t offset;
            uint16_t domid;
        } foreign;
    } source, dest;
    uint16_t len;
    uint16_t flags;
    int16_t status;
};

/* reason codes (core/records.py) */
enum {
    XN_TXE_OK,
    XN_TXE_TOO_MANY_SLOTS,
    XN_TXE_SLOTS_BIGGER_THAN_PACKET,
    XN_TXE_RUNT,
    XN_TXE_GRANT_COPY,
    XN_TXE_NO_MEMORY,
    XN_TXE_GSO_SIZE_TOO_SMALL,
    XN_TXE_BAD_GSO_HEADERS,
    XN_TXE_COUNT
};
enum {
    XN_TXF_NONE,
    XN_TXF_MISSING_EXTRA_INFO,
    XN_TXF_BAD_EXTRA_TYPE,
    XN_TXF_TOO_MANY_SLOTS,
    XN_TXF_TRUNCATED_PACKET,
    XN_TXF_SLOT_CROSSES_PAGE,
    XN_TXF_GSO_SIZE_ZERO,
    XN_TXF_BAD_GSO_TYPE,
};
enum {
    XN_RXE_OK,
    XN_RXE_TOO_MANY_SLOTS,
    XN_RXE_BACKEND_ERROR,
    XN_RXE_BACKEND_DROPPED,
    XN_RXE_OFFSET_SIZE_PAST_PAGE,
    XN_RXE_EMPTY_FIRST_SLOT,
    XN_RXE_BAD_EXTRA_TYPE,
    XN_RXE_UNNEGOTIATED_GSO,
    XN_RXE_GSO_SIZE_ZERO,
    XN_RXE_BAD_GSO_TYPE,
    XN_RXE_OVERSIZE,
    /* set by the queue above the kernels (netfront_rx_build passes them through) */
    XN_RXE_BACKEND_KEPT_MAPPING,
    XN_RXE_CSUM_BLANK_UNPARSEABLE,
    XN_RXE_BAD_GSO_HEADERS,
    XN_RXE_COUNT
};
enum {
    XN_RXF_NONE,
    XN_RXF_NO_BUFFER_POSTED,
    XN_RXF_ID_NOT_ISSUED,
    XN_RXF_EXTRA_NOT_PRODUCED,
    XN_RXF_ENDLESS_EXTRA,
    XN_RXF_PAST_PRODUCED,
};
#define XN_TXDF_ID_NOT_IN_FLIGHT 1

#define XN_PACK_FULL 0
#define XN_PACK_SEED 1

/* A buffer: bytes and their length. */
struct xn_buf {
    unsigned char *p;
    size_t len;
};

/* An error from a kernel: the message the binding raises as ValueError. */
struct xn_err {
    char msg[160];
};
int xn_fail(struct xn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define XN_GET(dst, base, index) memcpy(&(dst), (base) + (size_t)(index) * sizeof(dst), sizeof(dst))
#define XN_PUT(base, index, src) memcpy((base) + (size_t)(index) * sizeof(src), &(src), sizeof(src))

static inline uint16_t xn_ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t xn_ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xn_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void xn_st16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void xn_st32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }

/* a pool buffer, resolved into its parts */
struct xn_poolv {
    unsigned char *hdr;
    uint32_t count, cap, nr_frames, granted;
    unsigned char *stack, *state, *refs;
};
int xn_pool_open(struct xn_poolv *pv, struct xn_buf b, struct xn_err *err);
void xn_pool_close(struct xn_poolv *pv); /* writes the count back */
int xn_pool_pop(struct xn_poolv *pv, uint32_t *frame); /* 0: empty, or a corrupt entry */
/* after a counted pool yields nothing: only a corrupt stack does that */
#define XN_POOL_CORRUPT "pool: a free-stack entry names no frame of the pool (corrupt pool)"
int xn_pool_push(struct xn_poolv *pv, uint32_t frame, struct xn_err *err);

/* a u16 stack: element 0 is the count */
struct xn_stack {
    unsigned char *p;
    uint32_t count, cap;
};
int xn_stack_open(struct xn_stack *s, struct xn_buf b, struct xn_err *err);
void xn_stack_close(struct xn_stack *s);

/* ring.c */
int xn_ring_copy_out(struct xn_buf page, uint32_t start, uint32_t count, uint32_t entry_size, uint32_t nr_ents,
                     struct xn_buf out, struct xn_err *err);
int xn_ring_copy_in(struct xn_buf page, uint32_t start, uint32_t count, uint32_t entry_size, uint32_t nr_ents,
                    struct xn_buf src, struct xn_err *err);

/* pool.c */
int xn_pool_add(struct xn_buf pool, struct xn_buf frames, struct xn_buf *refs, uint32_t n, struct xn_err *err);
long xn_pool_take(struct xn_buf pool, uint32_t n, struct xn_buf out, struct xn_err *err);
int xn_pool_give(struct xn_buf pool, struct xn_buf frames, uint32_t n, struct xn_err *err);
long xn_pool_drain(struct xn_buf pool, struct xn_buf out, struct xn_err *err);
long xn_pool_take_pairs(struct xn_buf pool, uint32_t n, struct xn_buf out, struct xn_err *err);

/* grant_copy.c */
struct xn_domain {
    uint32_t domid;
    struct xn_buf table; /* v1 grant entries */
    struct xn_buf mem;   /* the domain's frames */
};
int xn_grant_check(struct xn_buf table, uint32_t ref, uint32_t domid, int write, uint32_t nr_frames,
                   uint32_t *frame);
long xn_grant_copy(struct xn_buf segs, uint32_t nsegs, uint32_t own_domid, struct xn_buf own_mem, uint64_t own_base,
                   const struct xn_domain *domains, size_t ndomains, struct xn_err *err);
long xn_segment_domids(struct xn_buf segs, uint32_t nsegs, uint32_t own_domid, uint32_t *out, size_t cap,
                       struct xn_err *err);

/* netback_tx.c */
int xn_netback_tx_assemble(struct xn_buf reqs, uint32_t n, uint32_t max_slots, uint32_t fatal_slots,
                           struct xn_buf out, uint32_t max_pkts, long res[5], struct xn_err *err);
int xn_netback_tx_build(struct xn_buf reqs, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t front_domid,
                        uint32_t copy_len, uint32_t map_frags, uint64_t mem_base, struct xn_buf pool,
                        struct xn_buf segs, uint32_t seg_base, uint32_t seg_cap, struct xn_buf seg_ranges,
                        struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t piece_base, uint32_t piece_cap,
                        long res[3], struct xn_err *err);
int xn_netback_tx_respond(struct xn_buf reqs, struct xn_buf pkts, uint32_t start, uint32_t npkts,
                          struct xn_buf seg_ranges, struct xn_buf segs, struct xn_buf vec_pkts,
                          struct xn_buf vec_pieces, struct xn_buf pool, struct xn_buf rsp_out,
                          struct xn_buf rsp_ranges, struct xn_buf status_out, long res[7], struct xn_err *err);
int xn_netback_tx_set_status(struct xn_buf rsp_out, uint32_t first, uint32_t count, int status, struct xn_err *err);

/* netback_rx.c */
long xn_netback_rx_estimate(struct xn_buf vec_pieces, uint32_t piece0, uint32_t npieces, int packing, int gso,
                            struct xn_err *err);
int xn_netback_rx_plan(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                       struct xn_buf reqs, uint32_t nreqs, int packing, uint32_t max_buffers, uint32_t front_domid,
                       uint64_t mem_base, struct xn_buf segs, uint32_t seg_cap, struct xn_buf plans,
                       struct xn_buf rsps, uint32_t rsp_cap, long res[9], struct xn_err *err);
int xn_netback_rx_respond(struct xn_buf plans, uint32_t npkts, struct xn_buf segs, struct xn_buf rsps,
                          struct xn_buf status_out, struct xn_buf vec_pkts, uint32_t start, long res[5],
                          struct xn_err *err);

/* netfront_tx.c */
int xn_netfront_tx_post(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                        struct xn_buf pool, struct xn_buf slots, struct xn_buf inflight, struct xn_buf id_stack,
                        struct xn_buf pkt_stack, uint32_t free_ring, struct xn_buf reqs_out, long res[5],
                        struct xn_err *err);
int xn_netfront_tx_complete(struct xn_buf rsps, uint32_t n, struct xn_buf pool, struct xn_buf slots,
                            struct xn_buf inflight, struct xn_buf id_stack, struct xn_buf pkt_stack,
                            struct xn_buf done_out, struct xn_buf end_out, long res[9], struct xn_err *err);

/* netfront_rx.c */
long xn_netfront_rx_post(struct xn_buf slots, uint32_t start, uint32_t mask, struct xn_buf pairs, uint32_t npairs,
                         struct xn_buf reqs_out, struct xn_err *err);
int xn_netfront_rx_assemble(struct xn_buf rsps, uint32_t n, uint32_t cons, uint32_t mask, struct xn_buf slots,
                            int gso_ok, struct xn_buf out, uint32_t max_pkts, long res[4], struct xn_err *err);
long xn_netfront_rx_slot_refs(struct xn_buf rsps, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t cons,
                              uint32_t mask, struct xn_buf slots, struct xn_buf out, struct xn_err *err);
int xn_netfront_rx_build(struct xn_buf rsps, struct xn_buf pkts, uint32_t start, uint32_t npkts, uint32_t cons,
                         uint32_t mask, struct xn_buf slots, struct xn_buf mem, struct xn_buf priv_pool, int ended,
                         struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t piece_base, uint32_t piece_cap,
                         struct xn_buf recycle_out, uint32_t recycle_base, long res[7], struct xn_err *err);

/* vec.c */
int xn_vec_fill_frames(struct xn_buf mem, struct xn_buf pool, struct xn_buf frames, struct xn_buf lens,
                       uint32_t nframes, uint32_t flags, uint32_t gso_size, uint32_t gso_type,
                       struct xn_buf vec_pkts, struct xn_buf vec_pieces,
                       uint32_t pkt_base, uint32_t piece_base, uint32_t piece_cap, long res[2], struct xn_err *err);
int xn_vec_fill_frame(struct xn_buf mem, struct xn_buf pool, struct xn_buf frame, uint32_t flags, uint32_t gso_size,
                      uint32_t gso_type, uint32_t csum_start, uint32_t csum_offset, struct xn_buf vec_pkts,
                      struct xn_buf vec_pieces, uint32_t pkt_index, uint32_t piece_base, uint32_t piece_cap,
                      long res[2], struct xn_err *err);
long xn_vec_gather(struct xn_buf mem, struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t j, struct xn_buf out,
                   struct xn_err *err);
long xn_vec_compact(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                    uint32_t npieces, struct xn_err *err);
int xn_pool_give_pairs(struct xn_buf pool, struct xn_buf pairs, uint32_t n, struct xn_err *err);
long xn_vec_release(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                    struct xn_buf pool, struct xn_buf *priv_pool, struct xn_buf tags_out, struct xn_err *err);
long xn_csum_setup(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                   struct xn_buf mem, struct xn_err *err);
long xn_gso_check(struct xn_buf vec_pkts, struct xn_buf vec_pieces, uint32_t start, uint32_t npkts,
                  struct xn_buf mem, struct xn_buf out, struct xn_err *err);

#endif
