/*
 * A host read after mtiart_free when the block would be handed out again at once (the
 * next allocation on its stream, of the same size): freed blocks go through a quarantine
 * before reuse, so the new block gets other memory and the read of the old one is
 * reported. The new block itself is clean.
 *
 * memcheck-expect: invalid-reads=1 invalid-writes=0 definitely-lost=0 errors=1
 * memcheck-expect-log: at 0x[0-9A-F]+: read_reused \(vg_read_after_free_reused\.c:[0-9]+\)
 * memcheck-expect-log: is 0 bytes inside a block of size 4,096 free'd
 */
#include "vg_common.h"

#define N 1024

static NOINLINE float read_reused(const volatile float *p) { return p[0]; }

int main(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *p, *q;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&p));
    vg_fill(s, p, N, 1.0f, 1);
    OK(mtiart_stream_synchronize(s));
    OK(mtiart_free(p));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&q)); /* would be p's memory */
    vg_fill(s, q, N, 3.0f, 1);
    OK(mtiart_stream_synchronize(s));
    float v = read_reused(p); /* invalid: p is freed, and q is elsewhere */
    float w = q[N - 1];       /* fine */
    int bad = p == q || w != 3.0f;
    OK(mtiart_free(q));
    OK(mtiart_stream_destroy(s));
    if (bad) fprintf(stderr, "p %p q %p w %g\n", (void *)p, (void *)q, (double)w);
    printf("%g\n", (double)v);
    return bad;
}
