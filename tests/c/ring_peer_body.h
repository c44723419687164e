/*
 * The ring_peer command loop for one ring type; included by ring_peer.c with
 * TAG (the DEFINE_RING_TYPES name) and PFX (tx or rx) defined.
 */

#define SRING_T CAT(TAG, _sring_t)
#define FRONT_T CAT(TAG, _front_ring_t)
#define BACK_T CAT(TAG, _back_ring_t)
#define REQ_T struct CAT(TAG, _request)
#define RSP_T struct CAT(TAG, _response)

static void CAT(PFX, _run)(void *page, int front, int back, uint32_t start)
{
    SRING_T *s = page;
    FRONT_T f;
    BACK_T b;
    uint64_t sent = 0, got = 0, consumed = 0, responded = 0;
    char line[64];

    if (front) {
        if (start == 0) {
            SHARED_RING_INIT(s);
            FRONT_RING_INIT(&f, s, PAGE);
        } else {
            SHARED_RING_INIT(s);
            s->req_prod = s->rsp_prod = start;
            s->req_event = s->rsp_event = start + 1;
            FRONT_RING_ATTACH(&f, s, start, PAGE);
        }
    }
    if (back) {
        if (start == 0)
            BACK_RING_INIT(&b, s, PAGE);
        else
            BACK_RING_ATTACH(&b, s, start, PAGE);
    }
    printf("ready\n");
    fflush(stdout);

    while (fgets(line, sizeof line, stdin)) {
        char op = line[0];
        unsigned long arg = strtoul(line + 1, NULL, 10);
        unsigned long n = 0;
        int flag = 0;
        int front_op = strchr("PpGFeUfD", op) != NULL || strncmp(line, "XF", 2) == 0;
        int back_op = strchr("CRrBEu", op) != NULL || strncmp(line, "XB", 2) == 0;

        if ((front_op && !front) || (back_op && !back)) {
            ERR("command %c for an end this process does not play", op);
            continue;
        }
        if (strncmp(line, "XF", 2) == 0) {
            printf("XF %llu %llu\n", (unsigned long long)sent, (unsigned long long)got);
            continue;
        }
        if (strncmp(line, "XB", 2) == 0) {
            printf("XB %llu %llu\n", (unsigned long long)consumed, (unsigned long long)responded);
            continue;
        }
        switch (op) {
        case 'P':
            while (n < arg && !RING_FULL(&f)) {
                CAT(PFX, _fill_req)(RING_GET_REQUEST(&f, f.req_prod_pvt), sent++);
                f.req_prod_pvt++;
                n++;
            }
            printf("P %lu\n", n);
            break;
        case 'p':
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&f, flag);
            printf("p %d\n", !!flag);
            break;
        case 'G':
            if (RING_RESPONSE_PROD_OVERFLOW(&f, s->rsp_prod))
                ERR("rsp_prod %u overflows rsp_cons %u", s->rsp_prod, f.rsp_cons);
            while (n < arg && RING_HAS_UNCONSUMED_RESPONSES(&f)) {
                RSP_T rsp;
                xen_rmb(); /* read the response after seeing rsp_prod */
                RING_COPY_RESPONSE(&f, f.rsp_cons, &rsp);
                f.rsp_cons++;
                if (got >= sent)
                    ERR("response %llu for a request never sent", (unsigned long long)got);
                CAT(PFX, _check_rsp)(&rsp, got++);
                n++;
            }
            printf("G %lu\n", n);
            break;
        case 'F':
            RING_FINAL_CHECK_FOR_RESPONSES(&f, flag);
            printf("F %d\n", !!flag);
            break;
        case 'e': /* a batching consumer: wake me only after arg more responses */
            s->rsp_event = f.rsp_cons + (RING_IDX)arg;
            xen_mb();
            printf("e %lu\n", arg);
            break;
        case 'U':
            printf("U %u\n", (unsigned)RING_HAS_UNCONSUMED_RESPONSES(&f));
            break;
        case 'f':
            printf("f %u\n", (unsigned)RING_FREE_REQUESTS(&f));
            break;
        case 'D':
            printf("D %u %u %u %u\n", s->req_prod - start, s->req_event - start, s->rsp_prod - start,
                   s->rsp_event - start);
            break;
        case 'C':
            if (RING_REQUEST_PROD_OVERFLOW(&b, s->req_prod))
                ERR("req_prod %u overflows rsp_prod_pvt %u", s->req_prod, b.rsp_prod_pvt);
            while (n < arg && RING_HAS_UNCONSUMED_REQUESTS(&b)) {
                REQ_T req;
                xen_rmb(); /* read the request after seeing req_prod */
                RING_COPY_REQUEST(&b, b.req_cons, &req);
                b.req_cons++;
                CAT(PFX, _check_req)(&req, consumed++);
                n++;
            }
            printf("C %lu\n", n);
            break;
        case 'R':
            while (n < arg && responded < consumed) {
                CAT(PFX, _fill_rsp)(RING_GET_RESPONSE(&b, b.rsp_prod_pvt), responded++);
                b.rsp_prod_pvt++;
                n++;
            }
            printf("R %lu\n", n);
            break;
        case 'r':
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&b, flag);
            printf("r %d\n", !!flag);
            break;
        case 'B':
            RING_FINAL_CHECK_FOR_REQUESTS(&b, flag);
            printf("B %d\n", !!flag);
            break;
        case 'E': /* a batching consumer: wake me only after arg more requests */
            s->req_event = b.req_cons + (RING_IDX)arg;
            xen_mb();
            printf("E %lu\n", arg);
            break;
        case 'u':
            printf("u %u\n", (unsigned)RING_HAS_UNCONSUMED_REQUESTS(&b));
            break;
        case 'S':
            printf("S\n");
            fflush(stdout);
            break;
        case '\n':
            break;
        default:
            ERR("unknown command %c", op);
        }
    }
}

#undef SRING_T
#undef FRONT_T
#undef BACK_T
#undef REQ_T
#undef RSP_T
