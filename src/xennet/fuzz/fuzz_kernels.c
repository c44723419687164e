/* libFuzzer target over the compiled core's kernels (every core/native C file but module.c),
 * built with AddressSanitizer and UndefinedBehaviorSanitizer by scripts/fuzz-core.sh.
 *
 * One input is one kernel call, in the format src/xennet/fuzz/wire.py reads and writes:
 *   byte 0            which kernel (index into TARGETS, modulo its size)
 *   then per argument, by the kernel's format (the letters of its PyArg_ParseTuple):
 *     y, w            a buffer: u16 length, then its bytes
 *     n               u32        K  u64        i  i32        p  u8 (bit 0)
 *     O (pool_add, vec_release)  u8 present (bit 0), then a buffer if present
 *     O (grant_copy)             u8 count (mod 5), then count x (u32 domid, buffer, buffer)
 * Missing bytes read as zero.  Every buffer is its own exact-size heap block, so a read or
 * write one byte past it is an ASan report.  The call mirrors module.c's marshalling. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xn_core.h"

#define MAXB 20
#define MAXV 24
#define MAXD 4

struct in {
    const uint8_t *p;
    size_t left;
    struct xn_buf b[MAXB];
    int nb;
    uint64_t v[MAXV];
    int nv;
    int opt_present;
    struct xn_buf opt;
    int ndoms;
    struct xn_domain doms[MAXD];
};

static uint64_t take(struct in *in, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = 0;
        if (in->left) {
            c = *in->p++;
            in->left--;
        }
        v |= (uint64_t)c << (8 * i);
    }
    return v;
}

static struct xn_buf take_buf(struct in *in)
{
    size_t len = (size_t)take(in, 2);
    unsigned char *p = malloc(len ? len : 1);
    size_t have = len < in->left ? len : in->left;
    memcpy(p, in->p, have);
    memset(p + have, 0, len - have);
    in->p += have;
    in->left -= have;
    return (struct xn_buf){p, len};
}

static void parse(struct in *in, const char *fmt, int special)
{
    for (const char *f = fmt; *f; f++) {
        switch (*f) {
        case 'y':
        case 'w':
            in->b[in->nb++] = take_buf(in);
            break;
        case 'n':
            in->v[in->nv++] = take(in, 4);
            break;
        case 'K':
            in->v[in->nv++] = take(in, 8);
            break;
        case 'i':
            in->v[in->nv++] = (uint64_t)(int64_t)(int32_t)take(in, 4);
            break;
        case 'p':
            in->v[in->nv++] = take(in, 1) & 1;
            break;
        case 'O':
            if (special) {
                in->ndoms = (int)(take(in, 1) % (MAXD + 1));
                for (int d = 0; d < in->ndoms; d++) {
                    uint32_t domid = (uint32_t)take(in, 4);
                    struct xn_buf t = take_buf(in), m = take_buf(in);
                    in->doms[d] = (struct xn_domain){domid, t, m};
                }
            } else {
                in->opt_present = (int)(take(in, 1) & 1);
                if (in->opt_present)
                    in->opt = take_buf(in);
            }
            break;
        }
    }
}

static void release(struct in *in)
{
    for (int i = 0; i < in->nb; i++)
        free(in->b[i].p);
    if (in->opt_present)
        free(in->opt.p);
    for (int d = 0; d < in->ndoms; d++) {
        free(in->doms[d].table.p);
        free(in->doms[d].mem.p);
    }
}

#define B(i) (in->b[i])
#define U(i) ((uint32_t)in->v[i])

static void k_ring_copy_out(struct in *in, struct xn_err *e) { xn_ring_copy_out(B(0), U(0), U(1), U(2), U(3), B(1), e); }
static void k_ring_copy_in(struct in *in, struct xn_err *e) { xn_ring_copy_in(B(0), U(0), U(1), U(2), U(3), B(1), e); }
static void k_pool_add(struct in *in, struct xn_err *e)
{
    xn_pool_add(B(0), B(1), in->opt_present ? &in->opt : NULL, U(0), e);
}
static void k_pool_take(struct in *in, struct xn_err *e) { xn_pool_take(B(0), U(0), B(1), e); }
static void k_pool_take_pairs(struct in *in, struct xn_err *e) { xn_pool_take_pairs(B(0), U(0), B(1), e); }
static void k_pool_give(struct in *in, struct xn_err *e) { xn_pool_give(B(0), B(1), U(0), e); }
static void k_pool_drain(struct in *in, struct xn_err *e) { xn_pool_drain(B(0), B(1), e); }
static void k_pool_give_pairs(struct in *in, struct xn_err *e) { xn_pool_give_pairs(B(0), B(1), U(0), e); }
static void k_grant_check(struct in *in, struct xn_err *e)
{
    (void)e;
    uint32_t frame;
    xn_grant_check(B(0), U(0), U(1), (int)in->v[2], U(3), &frame);
}
static void k_grant_copy(struct in *in, struct xn_err *e)
{
    xn_grant_copy(B(0), U(0), U(1), B(1), in->v[2], in->doms, (size_t)in->ndoms, e);
}
static void k_segment_domids(struct in *in, struct xn_err *e)
{
    uint32_t out[256];
    xn_segment_domids(B(0), U(0), U(1), out, 256, e);
}
static void k_netback_tx_assemble(struct in *in, struct xn_err *e)
{
    long res[5];
    xn_netback_tx_assemble(B(0), U(0), U(1), U(2), B(1), U(3), res, e);
}
static void k_netback_tx_build(struct in *in, struct xn_err *e)
{
    long res[3];
    xn_netback_tx_build(B(0), B(1), U(0), U(1), U(2), U(3), U(4), in->v[5], B(2), B(3), U(6), U(7), B(4), B(5), B(6),
                        U(8), U(9), res, e);
}
static void k_netback_tx_respond(struct in *in, struct xn_err *e)
{
    long res[7];
    xn_netback_tx_respond(B(0), B(1), U(0), U(1), B(2), B(3), B(4), B(5), B(6), B(7), B(8), B(9), res, e);
}
static void k_netback_tx_set_status(struct in *in, struct xn_err *e)
{
    xn_netback_tx_set_status(B(0), U(0), U(1), (int)(int64_t)in->v[2], e);
}
static void k_netback_rx_estimate(struct in *in, struct xn_err *e)
{
    xn_netback_rx_estimate(B(0), U(0), U(1), (int)(int64_t)in->v[2], (int)in->v[3], e);
}
static void k_netback_rx_plan(struct in *in, struct xn_err *e)
{
    long res[9];
    xn_netback_rx_plan(B(0), B(1), U(0), U(1), B(2), U(2), (int)(int64_t)in->v[3], U(4), U(5), in->v[6], B(3), U(7),
                       B(4), B(5), U(8), res, e);
}
static void k_netback_rx_respond(struct in *in, struct xn_err *e)
{
    long res[5];
    xn_netback_rx_respond(B(0), U(0), B(1), B(2), B(3), B(4), U(1), res, e);
}
static void k_netfront_tx_post(struct in *in, struct xn_err *e)
{
    long res[5];
    xn_netfront_tx_post(B(0), B(1), U(0), U(1), B(2), B(3), B(4), B(5), B(6), U(2), B(7), res, e);
}
static void k_netfront_tx_complete(struct in *in, struct xn_err *e)
{
    long res[9];
    xn_netfront_tx_complete(B(0), U(0), B(1), B(2), B(3), B(4), B(5), B(6), B(7), res, e);
}
static void k_netfront_rx_post(struct in *in, struct xn_err *e) { xn_netfront_rx_post(B(0), U(0), U(1), B(1), U(2), B(2), e); }
static void k_netfront_rx_assemble(struct in *in, struct xn_err *e)
{
    long res[4];
    xn_netfront_rx_assemble(B(0), U(0), U(1), U(2), B(1), (int)in->v[3], B(2), U(4), res, e);
}
static void k_netfront_rx_slot_refs(struct in *in, struct xn_err *e)
{
    xn_netfront_rx_slot_refs(B(0), B(1), U(0), U(1), U(2), U(3), B(2), B(3), e);
}
static void k_netfront_rx_build(struct in *in, struct xn_err *e)
{
    long res[7];
    xn_netfront_rx_build(B(0), B(1), U(0), U(1), U(2), U(3), B(2), B(3), B(4), (int)in->v[4], B(5), B(6), U(5), U(6),
                         B(7), U(7), res, e);
}
static void k_vec_fill_frames(struct in *in, struct xn_err *e)
{
    long res[2];
    xn_vec_fill_frames(B(0), B(1), B(2), B(3), U(0), U(1), U(2), U(3), B(4), B(5), U(4), U(5), U(6), res, e);
}
static void k_vec_fill_frame(struct in *in, struct xn_err *e)
{
    long res[2];
    xn_vec_fill_frame(B(0), B(1), B(2), U(0), U(1), U(2), U(3), U(4), B(3), B(4), U(5), U(6), U(7), res, e);
}
static void k_vec_gather(struct in *in, struct xn_err *e) { xn_vec_gather(B(0), B(1), B(2), U(0), B(3), e); }
static void k_vec_compact(struct in *in, struct xn_err *e) { xn_vec_compact(B(0), B(1), U(0), U(1), U(2), e); }
static void k_vec_release(struct in *in, struct xn_err *e)
{
    xn_vec_release(B(0), B(1), U(0), U(1), B(2), in->opt_present ? &in->opt : NULL, B(3), e);
}
static void k_csum_setup(struct in *in, struct xn_err *e) { xn_csum_setup(B(0), B(1), U(0), U(1), B(2), e); }
static void k_gso_check(struct in *in, struct xn_err *e) { xn_gso_check(B(0), B(1), U(0), U(1), B(2), B(3), e); }

/* name, format (module.c's PyArg_ParseTuple letters, '*' dropped), call; wire.py reads this table */
static const struct target {
    const char *name;
    const char *fmt;
    void (*call)(struct in *, struct xn_err *);
} TARGETS[] = {
    {"ring_copy_out", "ynnnnw", k_ring_copy_out},
    {"ring_copy_in", "wnnnny", k_ring_copy_in},
    {"pool_add", "wyOn", k_pool_add},
    {"pool_take", "wnw", k_pool_take},
    {"pool_take_pairs", "wnw", k_pool_take_pairs},
    {"pool_give", "wyn", k_pool_give},
    {"pool_drain", "ww", k_pool_drain},
    {"pool_give_pairs", "wyn", k_pool_give_pairs},
    {"grant_check", "ynnpn", k_grant_check},
    {"grant_copy", "wnnwKO", k_grant_copy},
    {"segment_domids", "ynn", k_segment_domids},
    {"netback_tx_assemble", "ynnnwn", k_netback_tx_assemble},
    {"netback_tx_build", "yynnnnnKwwnnwwwnn", k_netback_tx_build},
    {"netback_tx_respond", "yynnyywywwww", k_netback_tx_respond},
    {"netback_tx_set_status", "wnni", k_netback_tx_set_status},
    {"netback_rx_estimate", "ynnip", k_netback_rx_estimate},
    {"netback_rx_plan", "yynnyninnKwnwwn", k_netback_rx_plan},
    {"netback_rx_respond", "ynywwyn", k_netback_rx_respond},
    {"netfront_tx_post", "ywnnywwwwnw", k_netfront_tx_post},
    {"netfront_tx_complete", "ynwwwwwww", k_netfront_tx_complete},
    {"netfront_rx_post", "wnnynw", k_netfront_rx_post},
    {"netfront_rx_assemble", "ynnnypwn", k_netfront_rx_assemble},
    {"netfront_rx_slot_refs", "yynnnnyw", k_netfront_rx_slot_refs},
    {"netfront_rx_build", "ywnnnnwwwpwwnnwn", k_netfront_rx_build},
    {"vec_fill_frames", "wwyynnnnwwnnn", k_vec_fill_frames},
    {"vec_fill_frame", "wwynnnnnwwnnn", k_vec_fill_frame},
    {"vec_gather", "yyynw", k_vec_gather},
    {"vec_compact", "wwnnn", k_vec_compact},
    {"vec_release", "yynnwOw", k_vec_release},
    {"csum_setup", "wynny", k_csum_setup},
    {"gso_check", "yynnyw", k_gso_check},
};
#define NTARGETS (sizeof TARGETS / sizeof TARGETS[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct target *t = &TARGETS[data[0] % NTARGETS];
    struct in in = {.p = data + 1, .left = size - 1};
    parse(&in, t->fmt, strcmp(t->name, "grant_copy") == 0);
    struct xn_err err;
    err.msg[0] = 0;
    t->call(&in, &err);
    release(&in);
    return 0;
}
