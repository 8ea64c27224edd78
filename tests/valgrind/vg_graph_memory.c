/*
 * Memory that graphs use after the program let go of it: a static output freed after the
 * capture (the graph holds it, and every replay writes it) and a memory node's allocation
 * between launches. Replays touch both without a report; the host's reads of either are
 * invalid reads.
 *
 * memcheck-expect: invalid-reads=2 invalid-writes=0 definitely-lost=0 errors=2
 * memcheck-expect-log: at 0x[0-9A-F]+: read_held \(vg_graph_memory\.c:[0-9]+\)
 * memcheck-expect-log: at 0x[0-9A-F]+: read_between_launches \(vg_graph_memory\.c:[0-9]+\)
 * memcheck-forbid-log: vg_add1_kernel|vg_fill_kernel
 */
#include "vg_common.h"

#define N 1024

static NOINLINE float read_held(const volatile float *p) { return p[0]; }
static NOINLINE float read_between_launches(const volatile float *p) { return p[1]; }

int main(void) {
    mtiart_stream s;
    OK(mtiart_stream_create(0, 0, &s));
    float *in, *out;
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&in));
    OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&out));
    vg_fill(s, in, N, 1.0f, 1);
    OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    vg_add1(s, out, in, N);
    mtiart_graph g;
    OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec x;
    OK(mtiart_graph_instantiate(g, &x));
    OK(mtiart_free(out)); /* held by the graph */
    for (int i = 0; i < 3; i++) OK(mtiart_graph_launch(x, s));
    OK(mtiart_stream_synchronize(s));
    float sum = read_held(out);

    /* a memory node's allocation: the graph's between launches */
    mtiart_graph mg;
    OK(mtiart_graph_create(0, &mg));
    float *m;
    size_t alloc, fill, add, freed;
    OK(mtiart_graph_add_mem_alloc_node(mg, NULL, 0, N * sizeof(float), &alloc, (void **)&m));
    int32_t n = N;
    float two = 2.0f;
    mtiart_arg fill_args[3] = {{MTIART_ARG_BUFFER_OUT, 0, m, N * sizeof(float)},
                               {MTIART_ARG_VALUE, sizeof n, &n, 0},
                               {MTIART_ARG_VALUE, sizeof two, &two, 0}};
    OK(mtiart_graph_add_kernel_node(mg, &alloc, 1, vg_fill_kernel, 2, fill_args, 3, &fill));
    mtiart_arg add_args[3] = {{MTIART_ARG_BUFFER_OUT, 0, in, N * sizeof(float)},
                              {MTIART_ARG_BUFFER_IN, 0, m, N * sizeof(float)},
                              {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    OK(mtiart_graph_add_kernel_node(mg, &fill, 1, vg_add1_kernel, 1, add_args, 3, &add));
    OK(mtiart_graph_add_mem_free_node(mg, &add, 1, m, &freed));
    mtiart_graph_exec mx;
    OK(mtiart_graph_instantiate(mg, &mx));
    for (int i = 0; i < 2; i++) OK(mtiart_graph_launch(mx, s));
    float host[N];
    OK(mtiart_memcpy(s, host, in, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = host[0] != 3.0f || host[N - 1] != 3.0f;
    sum += read_between_launches(m);

    OK(mtiart_graph_exec_destroy(mx));
    OK(mtiart_graph_destroy(mg));
    OK(mtiart_graph_exec_destroy(x));
    OK(mtiart_graph_destroy(g));
    OK(mtiart_free(in));
    OK(mtiart_stream_destroy(s));
    if (bad) fprintf(stderr, "wrong result %g\n", (double)host[0]);
    printf("%g\n", (double)sum);
    return bad;
}
