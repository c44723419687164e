/*
 * ring_peer: one or both ends of a netif tx or rx ring, driven by a script on
 * stdin, using only the real ring.h / netif.h macros.  The ring lives in a
 * shared 4 KiB file mapping, so the other end may be another process (the
 * xennet Python ring, in tests/test_ring_c_interop.py).
 *
 *   ring_peer tx|rx front|back|both PAGEFILE START
 *
 * START is the initial ring index (0: SHARED_RING_INIT + FRONT/BACK_RING_INIT;
 * otherwise the *_RING_ATTACH macros with the shared indices set to START).
 * The "front" or "both" process initialises the shared page, then prints
 * "ready".
 *
 * Commands (one a line; front: P p G F e U f D XF, back: C R r B E u XB):
 *   P k   front: produce up to k requests (stops when RING_FULL)    -> "P n"
 *   p     front: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY                -> "p notify"
 *   G m   front: consume up to m responses, verifying each           -> "G n"
 *   F     front: RING_FINAL_CHECK_FOR_RESPONSES                      -> "F work"
 *   e k   front: rsp_event = rsp_cons + k (a batching consumer)     -> "e k"
 *   U     front: RING_HAS_UNCONSUMED_RESPONSES                       -> "U n"
 *   f     front: RING_FREE_REQUESTS                                  -> "f n"
 *   D     the shared header                                  -> "D rq_prod rq_ev rs_prod rs_ev"
 *   XF    front totals                                               -> "XF sent got"
 *   C m   back: consume up to m requests (copied), verifying each     -> "C n"
 *   R r   back: respond to up to r consumed requests, in order       -> "R n"
 *   r     back: RING_PUSH_RESPONSES_AND_CHECK_NOTIFY                 -> "r notify"
 *   B     back: RING_FINAL_CHECK_FOR_REQUESTS                        -> "B work"
 *   E k   back: req_event = req_cons + k (a batching consumer)      -> "E k"
 *   u     back: RING_HAS_UNCONSUMED_REQUESTS                         -> "u n"
 *   XB    back totals                                                -> "XB consumed responded"
 *   S     sync: flush, answer "S"
 * Indices are printed relative to START.  A field that does not match what
 * its sequence number says it must be prints "ERR ..." and counts an error;
 * the exit status is 1 if there was any.
 */
#include "xen_prelude.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static unsigned long errors;

#define ERR(...) do { printf("ERR " __VA_ARGS__); putchar('\n'); errors++; } while (0)

/* The payload of request/response number s: a 32-bit mix of s (same in Python; mix(0) = 0xacb1c067). */
static uint32_t mix(uint64_t s)
{
    uint32_t x = (uint32_t)(((s + 1) * 0x9E3779B97F4A7C15ULL) >> 32);
    x ^= x >> 13;
    x *= 0x85EBCA6BU;
    x ^= x >> 16;
    return x;
}

#define REQ_W0(s) mix(2 * (s))
#define REQ_W1(s) mix(2 * (s) + 1)
#define RSP_W0(s) mix(2 * (s) + (1ULL << 40))
#define RSP_W1(s) mix(2 * (s) + 1 + (1ULL << 40))

/* --- netif tx: {gref, offset, flags, id, size} -> {id, status} ------------ */

static void tx_fill_req(struct netif_tx_request *q, uint64_t s)
{
    q->gref = REQ_W0(s);
    q->offset = (uint16_t)REQ_W1(s);
    q->flags = (uint16_t)(REQ_W1(s) >> 16);
    q->id = (uint16_t)s;
    q->size = (uint16_t)(REQ_W0(s) ^ REQ_W1(s));
}

static void tx_check_req(const struct netif_tx_request *q, uint64_t s)
{
    if (q->gref != REQ_W0(s) || q->offset != (uint16_t)REQ_W1(s) || q->flags != (uint16_t)(REQ_W1(s) >> 16)
        || q->id != (uint16_t)s || q->size != (uint16_t)(REQ_W0(s) ^ REQ_W1(s)))
        ERR("tx request %llu: gref %u offset %u flags %u id %u size %u", (unsigned long long)s,
            q->gref, q->offset, q->flags, q->id, q->size);
}

static void tx_fill_rsp(struct netif_tx_response *p, uint64_t s)
{
    p->id = (uint16_t)s;
    p->status = (int16_t)(uint16_t)RSP_W0(s);
}

static void tx_check_rsp(const struct netif_tx_response *p, uint64_t s)
{
    if (p->id != (uint16_t)s || p->status != (int16_t)(uint16_t)RSP_W0(s))
        ERR("tx response %llu: id %u status %d", (unsigned long long)s, p->id, p->status);
}

/* --- netif rx: {id, pad, gref} -> {id, offset, flags, status} -------------- */

static void rx_fill_req(struct netif_rx_request *q, uint64_t s)
{
    q->id = (uint16_t)s;
    q->gref = REQ_W0(s);
}

static void rx_check_req(const struct netif_rx_request *q, uint64_t s)
{
    if (q->id != (uint16_t)s || q->gref != REQ_W0(s))
        ERR("rx request %llu: id %u gref %u", (unsigned long long)s, q->id, q->gref);
}

static void rx_fill_rsp(struct netif_rx_response *p, uint64_t s)
{
    p->id = (uint16_t)s;
    p->offset = (uint16_t)RSP_W0(s);
    p->flags = (uint16_t)(RSP_W0(s) >> 16);
    p->status = (int16_t)(uint16_t)RSP_W1(s);
}

static void rx_check_rsp(const struct netif_rx_response *p, uint64_t s)
{
    if (p->id != (uint16_t)s || p->offset != (uint16_t)RSP_W0(s) || p->flags != (uint16_t)(RSP_W0(s) >> 16)
        || p->status != (int16_t)(uint16_t)RSP_W1(s))
        ERR("rx response %llu: id %u offset %u flags %u status %d", (unsigned long long)s,
            p->id, p->offset, p->flags, p->status);
}

/* --- the driver loop, instantiated once per ring type ---------------------- */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define TAG netif_tx
#define PFX tx
#include "ring_peer_body.h"
#undef TAG
#undef PFX

#define TAG netif_rx
#define PFX rx
#include "ring_peer_body.h"
#undef TAG
#undef PFX

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s tx|rx front|back|both PAGEFILE START\n", argv[0]);
        return 2;
    }
    int front = strcmp(argv[2], "back") != 0;
    int back = strcmp(argv[2], "front") != 0;
    uint32_t start = (uint32_t)strtoul(argv[4], NULL, 0);
    int fd = open(argv[3], O_RDWR);
    if (fd < 0) {
        perror(argv[3]);
        return 2;
    }
    void *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    close(fd);
    if (strcmp(argv[1], "tx") == 0)
        tx_run(page, front, back, start);
    else if (strcmp(argv[1], "rx") == 0)
        rx_run(page, front, back, start);
    else
        return 2;
    fflush(stdout);
    munmap(page, PAGE);
    return errors ? 1 : 0;
}
