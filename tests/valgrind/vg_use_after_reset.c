/*
 * Reads of pool memory once the graph that owned the pool was reset: an intermediate the
 * capture freed (its segment is kept by a live output) and the output itself after the
 * user freed it (its segment is released). Both must be invalid reads; reads of the live
 * output before and after the reset must not be reported.
 *
 * memcheck-expect: invalid-reads=2 invalid-writes=0 definitely-lost=0 errors=2
 * memcheck-expect-log: Invalid read of size 4
 * memcheck-expect-log: at 0x[0-9A-F]+: read_freed_intermediate \(vg_use_after_reset\.c:[0-9]+\)
 * memcheck-expect-log: at 0x[0-9A-F]+: read_freed_output \(vg_use_after_reset\.c:[0-9]+\)
 * memcheck-expect-log: is 0 bytes inside a block of size 4,096 free'd
 */
#include "vg_common.h"

#define N 1024

static NOINLINE float read_freed_intermediate(const volatile float *p) { return p[0]; }
static NOINLINE float read_freed_output(const volatile float *p) { return p[1]; }
static NOINLINE float read_live_output(const volatile float *p) { return p[2]; }

int main(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *in, *tmp, *out;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&in));
    vg_fill(s, in, N, 1.0f, 1);
    OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&tmp));
    vg_add1(s, tmp, in, N);
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&out));
    vg_add1(s, out, tmp, N);
    OK(mtiart_free(tmp)); /* freed during capture: the graph keeps using it */
    mtiart_graph graph;
    mtiart_graph_exec exec;
    OK(mtiart_stream_end_capture(s, &graph));
    OK(mtiart_graph_instantiate(graph, &exec));
    OK(mtiart_graph_launch(exec, s));
    OK(mtiart_graph_launch(exec, s));
    OK(mtiart_stream_synchronize(s));
    float sum = read_live_output(out);   /* fine: the output is live */
    OK(mtiart_graph_exec_destroy(exec)); /* reset() */
    OK(mtiart_graph_destroy(graph));
    sum += read_live_output(out);        /* still fine */
    sum += read_freed_intermediate(tmp); /* invalid: the pool has no graph any more */
    OK(mtiart_free(out));                /* releases the pool's segment */
    sum += read_freed_output(out);       /* invalid */
    OK(mtiart_free(in));
    OK(mtiart_stream_destroy(s));
    printf("sum %g\n", (double)sum);
    return 0;
}
