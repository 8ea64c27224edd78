/*
 * A tensor allocated inside a capture (so in the graph's private pool) and never freed.
 * After the graph is reset (graph and executable destroyed) nothing refers to it any more:
 * valgrind must call it "definitely lost", with the stack of the mtiart_malloc_async call
 * made during the capture.
 *
 * memcheck-expect: invalid-reads=0 invalid-writes=0 definitely-lost=1 errors=1
 * memcheck-expect-log: 4,096 bytes in 1 blocks are definitely lost
 * memcheck-expect-log: by 0x[0-9A-F]+: capture_with_leak \(vg_leak_in_graph\.c:[0-9]+\)
 */
#include "vg_common.h"

#define N 1024

static NOINLINE void capture_with_leak(mtiart_stream s, const float *in, float **out,
                                       mtiart_graph *graph) {
    float *tmp, *leaked;
    OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&tmp));
    vg_add1(s, tmp, in, N);
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&leaked)); /* never freed */
    vg_add1(s, leaked, tmp, N);
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)out));
    vg_add1(s, *out, leaked, N);
    OK(mtiart_free(tmp));
    OK(mtiart_stream_end_capture(s, graph));
}

static NOINLINE int run(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *in, *out;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&in));
    vg_fill(s, in, N, 1.0f, 2);
    mtiart_graph graph;
    mtiart_graph_exec exec;
    capture_with_leak(s, in, &out, &graph);
    OK(mtiart_graph_instantiate(graph, &exec));
    for (int i = 0; i < 3; i++) OK(mtiart_graph_launch(exec, s));
    float host[N];
    OK(mtiart_memcpy(s, host, out, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = host[0] != 4.0f || host[N - 1] != 4.0f;
    /* reset(): the graph and its executable go; the pool's graph uses with them */
    OK(mtiart_graph_exec_destroy(exec));
    OK(mtiart_graph_destroy(graph));
    OK(mtiart_free(out));
    OK(mtiart_free(in));
    OK(mtiart_stream_synchronize(s));
    OK(mtiart_stream_destroy(s));
    if (bad) fprintf(stderr, "wrong result %g\n", (double)host[0]);
    return bad;
}

int main(void) {
    int rc = run();
    vg_scrub_stack();
    return rc;
}
