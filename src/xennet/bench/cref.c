/*
 * The C reference of xennet's benchmarks: the same work as the data plane -- tx requests on
 * a real netif ring (Xen's ring.h and netif.h macros, from libxen-dev), a copy of each
 * slot's bytes out of the "guest's" memory, responses, completions -- between two
 * busy-polling processes on shared memory.  No grants and no Python: the floor.
 *
 *   cref SIZE PACKETS      (SIZE: bytes per packet, at most 65536; one slot per 4 KiB)
 *
 * Prints "pps <packets per second> gbit <Gbit/s>", timed at the backend from its first
 * request to its last response.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define __XEN_TOOLS__ 1
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/xen.h>
#include <xen/io/ring.h>
#include <xen/io/netif.h>

#define PAGE 4096
#define GUEST_FRAMES 1024 /* the guest's packet pages, used round robin */

struct shared {
    union {
        struct netif_tx_sring sring;
        char page[PAGE];
    } ring;
    volatile int ready;
    volatile double seconds;
    unsigned char guest[GUEST_FRAMES][PAGE];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void frontend(struct shared *sh, long packets, int size)
{
    netif_tx_front_ring_t front;
    FRONT_RING_INIT(&front, &sh->ring.sring, PAGE);
    unsigned slots = (unsigned)(size + PAGE - 1) / PAGE;
    long sent = 0, answered = 0;
    unsigned frame = 0;
    uint16_t id = 0;
    while (answered < packets * (long)slots) {
        while (sent < packets && RING_FREE_REQUESTS(&front) >= slots) {
            for (unsigned s = 0; s < slots; s++) {
                netif_tx_request_t *req = RING_GET_REQUEST(&front, front.req_prod_pvt);
                req->gref = frame;
                req->offset = 0;
                req->flags = s < slots - 1 ? NETTXF_more_data : 0;
                req->id = id++;
                req->size = s == 0 ? (uint16_t)(size > 0xFFFF ? 0xFFFF : size) : PAGE;
                front.req_prod_pvt++;
                frame = (frame + 1) % GUEST_FRAMES;
            }
            sent++;
        }
        RING_PUSH_REQUESTS(&front);
        while (RING_HAS_UNCONSUMED_RESPONSES(&front)) {
            netif_tx_response_t *rsp = RING_GET_RESPONSE(&front, front.rsp_cons);
            if (rsp->status != NETIF_RSP_OKAY)
                abort();
            front.rsp_cons++;
            answered++;
        }
    }
}

static void backend(struct shared *sh, long packets, int size)
{
    netif_tx_back_ring_t back;
    BACK_RING_INIT(&back, &sh->ring.sring, PAGE);
    static unsigned char buf[65536 + PAGE];
    long got = 0;
    unsigned slot = 0;
    double t0 = 0;
    while (got < packets) {
        if (!RING_HAS_UNCONSUMED_REQUESTS(&back))
            continue;
        if (!got && !t0)
            t0 = now();
        while (RING_HAS_UNCONSUMED_REQUESTS(&back)) {
            netif_tx_request_t req;
            RING_COPY_REQUEST(&back, back.req_cons, &req);
            back.req_cons++;
            unsigned len = slot == 0 ? (unsigned)(size < PAGE ? size : PAGE) : req.size;
            if (req.gref >= GUEST_FRAMES || req.offset + len > PAGE || slot > 16)
                abort();
            memcpy(buf + slot * PAGE, sh->guest[req.gref] + req.offset, len);
            netif_tx_response_t *rsp = RING_GET_RESPONSE(&back, back.rsp_prod_pvt);
            rsp->id = req.id;
            rsp->status = NETIF_RSP_OKAY;
            back.rsp_prod_pvt++;
            slot++;
            if (!(req.flags & NETTXF_more_data)) {
                got++;
                slot = 0;
            }
        }
        RING_PUSH_RESPONSES(&back);
    }
    sh->seconds = now() - t0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cref SIZE PACKETS\n");
        return 2;
    }
    int size = atoi(argv[1]);
    long packets = atol(argv[2]);
    if (size < 1 || size > 65536 || packets < 2) {
        fprintf(stderr, "cref: SIZE 1..65536, PACKETS >= 2\n");
        return 2;
    }
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    memset(sh->guest, 0x5A, sizeof sh->guest);
    SHARED_RING_INIT(&sh->ring.sring);
    pid_t pid = fork();
    if (pid == 0) {
        backend(sh, packets, size);
        _exit(0);
    }
    frontend(sh, packets, size);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return 1;
    double s = sh->seconds;
    printf("pps %.0f gbit %.3f\n", (packets - 1) / s, (packets - 1) / s * size * 8 / 1e9);
    return 0;
}
