/*
 * A host read after mtiart_free while the block's stream still has work queued (a gate
 * holds it back, and kernels enqueued before the free read the block): the read is
 * reported at once, while the kernels, which run after the free, are not.
 *
 * memcheck-expect: invalid-reads=1 invalid-writes=0 definitely-lost=0 errors=1
 * memcheck-expect-log: at 0x[0-9A-F]+: read_while_busy \(vg_read_after_free_busy\.c:[0-9]+\)
 * memcheck-expect-log: is 0 bytes inside a block of size 4,096 free'd
 * memcheck-forbid-log: vg_add1_kernel
 */
#include "vg_common.h"

#define N 1024

static NOINLINE float read_while_busy(const volatile float *p) { return p[0]; }

int main(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *p, *q;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&p));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&q));
    vg_fill(s, p, N, 2.0f, 2);
    OK(mtiart_stream_synchronize(s)); /* nothing runs on p when it is freed */
    atomic_int gate = 0;
    OK(mtiart_launch_host_func(s, vg_gate_fn, &gate));
    vg_add1(s, q, p, N); /* runs after the free, reading p */
    vg_add1(s, q, q, N);
    OK(mtiart_free(p));
    float v = read_while_busy(p); /* invalid at once: the stream is still busy */
    atomic_store(&gate, 1);
    float host[N];
    OK(mtiart_memcpy(s, host, q, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = host[0] != 4.0f || host[N - 1] != 4.0f;
    OK(mtiart_free(q));
    OK(mtiart_stream_destroy(s));
    if (bad) fprintf(stderr, "wrong result %g\n", (double)host[0]);
    printf("%g\n", (double)v);
    return bad;
}
