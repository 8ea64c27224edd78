/*
 * The common workflows, which valgrind must find clean: eager work with stream-ordered
 * frees (reuse on the same stream, record_stream on another), capture with a fork/join
 * over two streams into a pool shared by two graphs, intermediates freed during the
 * captures, replays, a graph output freed while the graph still replays into it, reset,
 * and empty_cache.
 *
 * memcheck-expect: invalid-reads=0 invalid-writes=0 definitely-lost=0 errors=0
 */
#include "vg_common.h"

#define N 1024
#define BYTES (N * sizeof(float))

static int failures;

static void expect(mtiart_stream s, const float *dev, float value, const char *what) {
    float host[N];
    OK(mtiart_memcpy(s, host, dev, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    if (host[0] != value || host[N - 1] != value) {
        fprintf(stderr, "%s: got %g, expected %g\n", what, (double)host[0], (double)value);
        failures++;
    }
}

static void eager(mtiart_stream s1, mtiart_stream s2) {
    float *a, *b, *c;
    OK(mtiart_malloc_async(s1, BYTES, (void **)&a));
    OK(mtiart_malloc_async(s1, BYTES, (void **)&b));
    vg_fill(s1, a, N, 1.0f, 4);
    atomic_int gate = 0;
    OK(mtiart_launch_host_func(s1, vg_gate_fn, &gate));
    vg_add1(s1, b, a, N);
    OK(mtiart_free(a)); /* the kernel above reads a after this call */
    OK(mtiart_malloc_async(s1, BYTES, (void **)&c));
    vg_add1(s1, c, b, N); /* may reuse a's memory on stream order */
    atomic_store(&gate, 1);
    expect(s1, c, 3.0f, "eager chain");

    /* record_stream: b is used on s2, freed on s1 while s2 still reads it */
    mtiart_event ready;
    OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &ready));
    OK(mtiart_event_record(ready, s1));
    OK(mtiart_stream_wait_event(s2, ready));
    float *d;
    OK(mtiart_malloc_async(s2, BYTES, (void **)&d));
    atomic_int gate2 = 0;
    OK(mtiart_launch_host_func(s2, vg_gate_fn, &gate2));
    vg_add1(s2, d, b, N);
    OK(mtiart_record_stream(b, s2));
    OK(mtiart_free(b));
    atomic_store(&gate2, 1);
    expect(s2, d, 3.0f, "record_stream");
    OK(mtiart_free(c));
    OK(mtiart_free(d));
    OK(mtiart_event_destroy(ready));
}

/* out = in + 3 through a fork onto s2 and a join back; the intermediates are freed. */
static void capture(mtiart_stream s1, mtiart_stream s2, mtiart_pool_id pool, const float *in,
                    float **out, mtiart_graph *graph) {
    mtiart_event fork, join;
    OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &fork));
    OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &join));
    float *t1, *t2;
    OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_THREAD_LOCAL, pool));
    OK(mtiart_malloc_async(s1, BYTES, (void **)&t1));
    vg_add1(s1, t1, in, N);
    OK(mtiart_event_record(fork, s1));
    OK(mtiart_stream_wait_event(s2, fork));
    OK(mtiart_malloc_async(s2, BYTES, (void **)&t2));
    vg_add1(s2, t2, t1, N);
    OK(mtiart_event_record(join, s2));
    OK(mtiart_stream_wait_event(s1, join));
    OK(mtiart_malloc_async(s1, BYTES, (void **)out));
    vg_add1(s1, *out, t2, N);
    OK(mtiart_free(t1));
    OK(mtiart_free(t2));
    OK(mtiart_stream_end_capture(s1, graph));
    OK(mtiart_event_destroy(fork));
    OK(mtiart_event_destroy(join));
}

static void graphs(mtiart_stream s1, mtiart_stream s2) {
    float *in;
    OK(mtiart_malloc_async(s1, BYTES, (void **)&in));
    vg_fill(s1, in, N, 10.0f, 2);
    mtiart_pool_id pool;
    OK(mtiart_pool_handle_create(&pool));
    float *out1, *out2;
    mtiart_graph g1, g2;
    mtiart_graph_exec x1, x2;
    capture(s1, s2, pool, in, &out1, &g1);
    capture(s1, s2, pool, out1, &out2, &g2);
    OK(mtiart_graph_instantiate(g1, &x1));
    OK(mtiart_graph_instantiate(g2, &x2));
    OK(mtiart_graph_destroy(g1)); /* the executables keep the pool */
    OK(mtiart_graph_destroy(g2));
    for (int i = 0; i < 4; i++) {
        OK(mtiart_graph_launch(x1, s1));
        OK(mtiart_graph_launch(x2, s1));
    }
    expect(s1, out1, 13.0f, "graph 1");
    expect(s1, out2, 16.0f, "graph 2");
    /* A graph output freed while the graph lives: replays still write it. */
    OK(mtiart_free(out2));
    OK(mtiart_graph_launch(x1, s1));
    OK(mtiart_graph_launch(x2, s1));
    OK(mtiart_stream_synchronize(s1));
    expect(s1, out1, 13.0f, "graph 1 again");
    OK(mtiart_graph_exec_destroy(x1)); /* reset() */
    OK(mtiart_graph_exec_destroy(x2));
    OK(mtiart_free(out1));
    OK(mtiart_free(in));
}

int main(void) {
    mtiart_stream s1, s2;
    OK(mtiart_stream_create(0, 0, &s1));
    OK(mtiart_stream_create(0, -1, &s2));
    for (int round = 0; round < 2; round++) {
        eager(s1, s2);
        graphs(s1, s2);
    }
    OK(mtiart_device_synchronize(0));
    OK(mtiart_empty_cache(0));
    mtiart_memory_stats stats;
    OK(mtiart_memory_get_stats(0, &stats));
    if (stats.active_blocks || stats.allocated_bytes || stats.private_pools) {
        fprintf(stderr, "left over: %llu blocks, %llu bytes, %llu pools\n",
                (unsigned long long)stats.active_blocks, (unsigned long long)stats.allocated_bytes,
                (unsigned long long)stats.private_pools);
        failures++;
    }
    OK(mtiart_stream_destroy(s1));
    OK(mtiart_stream_destroy(s2));
    vg_scrub_stack();
    return failures != 0;
}
