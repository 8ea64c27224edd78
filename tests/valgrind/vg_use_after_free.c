/*
 * Stream-ordered free: kernels enqueued before mtiart_free still read the blocks when the
 * frees are called, and a block is allocated right after (which would reuse one of them in
 * stream order, were it not for the quarantine). Valgrind must not report the kernels'
 * reads (an op's buffers are open to it while it runs) nor the new block's use, but must
 * report the host's read of the other block once the stream was synchronized.
 *
 * memcheck-expect: invalid-reads=1 invalid-writes=0 definitely-lost=0 errors=1
 * memcheck-expect-log: at 0x[0-9A-F]+: read_after_free \(vg_use_after_free\.c:[0-9]+\)
 * memcheck-expect-log: Invalid read of size 4
 * memcheck-forbid-log: vg_add1_kernel
 */
#include "vg_common.h"

#define N 1024

static NOINLINE float read_after_free(const volatile float *p) { return p[0]; }

int main(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *p, *q, *p2, *q2;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&p));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&q));
    OK(mtiart_malloc_async(s, 2 * N * sizeof(float), (void **)&p2));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&q2));
    vg_fill(s, p, N, 2.0f, 1);
    vg_fill(s, p2, N, 5.0f, 1);
    atomic_int gate = 0;
    OK(mtiart_launch_host_func(s, vg_gate_fn, &gate));
    vg_add1(s, q, p, N);   /* reads p after the gate opens */
    vg_add1(s, q2, p2, N); /* reads p2 after the gate opens */
    OK(mtiart_free(p));    /* stream ordered: the kernels above still read p and p2 */
    OK(mtiart_free(p2));
    float *r; /* without the quarantine, p's memory in stream order: written after the kernels */
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&r));
    vg_fill(s, r, N, 7.0f, 1);
    atomic_store(&gate, 1);
    OK(mtiart_stream_synchronize(s));
    float host[N];
    OK(mtiart_memcpy(s, host, q, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = host[0] != 3.0f || host[N - 1] != 3.0f;
    OK(mtiart_memcpy(s, host, q2, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    bad |= host[0] != 6.0f || host[N - 1] != 6.0f;
    float v = read_after_free(p2); /* invalid: freed, and its stream is done */
    OK(mtiart_free(q));
    OK(mtiart_free(q2));
    OK(mtiart_free(r));
    OK(mtiart_stream_destroy(s));
    if (bad) fprintf(stderr, "wrong result %g\n", (double)host[0]);
    printf("%g\n", (double)v);
    return bad;
}
