/* Graph structure: fork/join captured as edges (simpleCudaGraphs' capture flow: 7 nodes, 6
 * edges), forked streams destroyed once joined (graphMemoryNodes' flow), stream flags,
 * event record and wait nodes (timing, reservation at launch, waits across graphs, waits
 * in place that never hold a worker), explicit construction of every node kind, child
 * graphs (copied, nested, flattened), updates in place (pending replays keep their
 * parameters, refused updates change nothing), conditional IF/WHILE nodes (a loop until a
 * device-side residual is small, nested bodies, failing bodies, captured bodies), and
 * threads racing launches, updates and captures of one executable.
 *
 * Also run with MTIART_NUM_WORKERS=1 (meson test "structure-1worker"): a replay waiting for
 * a record must not hold the only worker. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

static int g_workers;

static size_t node_count(mtiart_graph g) {
    size_t n = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &n));
    return n;
}

static size_t edge_count(mtiart_graph g) {
    size_t n = 0;
    CHECK_OK(mtiart_graph_get_edge_count(g, &n));
    return n;
}

static mtiart_node_info node_info(mtiart_graph g, size_t node) {
    mtiart_node_info info;
    memset(&info, 0, sizeof info);
    CHECK_OK(mtiart_graph_get_node_info(g, node, &info));
    return info;
}

static int count_kind(mtiart_graph g, mtiart_node_kind kind) {
    int n = 0;
    for (size_t i = 0; i < node_count(g); i++) n += node_info(g, i).kind == (int32_t)kind;
    return n;
}

static bool depends_on(mtiart_graph g, size_t node, size_t dep) {
    mtiart_node_info info = node_info(g, node);
    for (uint32_t i = 0; i < info.num_dependencies; i++) {
        size_t d;
        CHECK_OK(mtiart_graph_get_node_dependency(g, node, i, &d));
        if (d == dep) return true;
    }
    return false;
}

static char *dot_of(mtiart_graph g) {
    size_t len = 0;
    CHECK_OK(mtiart_graph_to_dot(g, NULL, 0, &len));
    char *dot = malloc(len + 1);
    CHECK_OK(mtiart_graph_to_dot(g, dot, len + 1, &len));
    return dot;
}

static mtiart_graph_exec instantiate(mtiart_graph g) {
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    return x;
}

static int64_t read_i64(mtiart_stream s, const int64_t *dev) {
    int64_t v = 0;
    CHECK_OK(mtiart_memcpy(s, &v, dev, sizeof v, MTIART_MEMCPY_DEVICE_TO_HOST));
    return v;
}

static void write_i64(mtiart_stream s, int64_t *dev, int64_t v) {
    CHECK_OK(mtiart_memcpy(s, dev, &v, sizeof v, MTIART_MEMCPY_HOST_TO_DEVICE));
}

static mtiart_arg buf_arg(void *p, size_t bytes) {
    return (mtiart_arg){MTIART_ARG_BUFFER_INOUT, 0, p, bytes};
}

/* ------------------------------------------------------------------ simpleCudaGraphs */

enum { SCG_N = 1 << 14, SCG_BLOCKS = 8 };

/* reduce: out[b] = sum of block b's slice of in */
static int32_t k_reduce(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *in = *(const float *const *)args[0];
    double *out = *(double *const *)args[1];
    uint32_t n = *(const uint32_t *)args[2], per = (n + num_blocks - 1) / num_blocks;
    double sum = 0;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) sum += in[i];
    out[block] += sum;
    return 0;
}

/* reduceFinal: *result += sum of out[0..n) */
static int32_t k_reduce_final(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    const double *out = *(const double *const *)args[0];
    double *result = *(double *const *)args[1];
    uint32_t n = *(const uint32_t *)args[2];
    for (uint32_t i = 0; i < n; i++) *result += out[i];
    return 0;
}

typedef struct scg_host {
    double *result_h;
    double seen[8];
    int calls;
} scg_host;

static int32_t h_scg(void *user) {
    scg_host *h = user;
    if (h->calls < 8) h->seen[h->calls] = *h->result_h;
    h->calls++;
    return 0;
}

/* cudaGraphsUsingStreamCapture of cuda-samples' simpleCudaGraphs, as a CUDA programmer
 * ports it: the capture has the 7 nodes and 6 edges CUDA's has, no event node. */
static void test_simple_cuda_graphs(void) {
    static float input_h[SCG_N];
    double expect = 0;
    for (int i = 0; i < SCG_N; i++) {
        input_h[i] = (float)(i % 97) * 0.5f;
        expect += input_h[i];
    }
    mtiart_stream s1, s2, s3;
    CHECK_OK(mtiart_stream_create_with_flags(0, 0, MTIART_STREAM_NON_BLOCKING, &s1));
    CHECK_OK(mtiart_stream_create_with_flags(0, 0, MTIART_STREAM_NON_BLOCKING, &s2));
    CHECK_OK(mtiart_stream_create_with_flags(0, 0, MTIART_STREAM_NON_BLOCKING, &s3));
    float *input_d;
    double *output_d, *result_d, result_h = -1;
    CHECK_OK(mtiart_malloc_async(s1, sizeof input_h, (void **)&input_d));
    CHECK_OK(mtiart_malloc_async(s1, SCG_BLOCKS * sizeof(double), (void **)&output_d));
    CHECK_OK(mtiart_malloc_async(s1, sizeof(double), (void **)&result_d));
    CHECK_OK(mtiart_stream_synchronize(s1));
    mtiart_event fork, memset1, memset2;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &memset1));
    CHECK_OK(mtiart_event_create(0, &memset2));
    scg_host host = {&result_h, {0}, 0};
    uint32_t n = SCG_N, blocks = SCG_BLOCKS;

    CHECK_OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(fork, s1));
    CHECK_OK(mtiart_stream_wait_event(s2, fork));
    CHECK_OK(mtiart_stream_wait_event(s3, fork));
    CHECK_OK(mtiart_memcpy_async(s1, input_d, input_h, sizeof input_h, MTIART_MEMCPY_DEFAULT));
    CHECK_OK(mtiart_memset_async(s2, output_d, 0, SCG_BLOCKS * sizeof(double)));
    CHECK_OK(mtiart_event_record(memset1, s2));
    CHECK_OK(mtiart_memset_async(s3, result_d, 0, sizeof(double)));
    CHECK_OK(mtiart_event_record(memset2, s3));
    CHECK_OK(mtiart_stream_wait_event(s1, memset1));
    mtiart_arg ra[3] = {{MTIART_ARG_BUFFER_IN, 0, input_d, sizeof input_h},
                        {MTIART_ARG_BUFFER_INOUT, 0, output_d, SCG_BLOCKS * sizeof(double)},
                        {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    CHECK_OK(mtiart_launch_kernel(s1, k_reduce, SCG_BLOCKS, ra, 3));
    CHECK_OK(mtiart_stream_wait_event(s1, memset2));
    mtiart_arg fa[3] = {{MTIART_ARG_BUFFER_IN, 0, output_d, SCG_BLOCKS * sizeof(double)},
                        {MTIART_ARG_BUFFER_INOUT, 0, result_d, sizeof(double)},
                        {MTIART_ARG_VALUE, sizeof blocks, &blocks, 0}};
    CHECK_OK(mtiart_launch_kernel(s1, k_reduce_final, 1, fa, 3));
    CHECK_OK(mtiart_memcpy_async(s1, &result_h, result_d, sizeof result_h, MTIART_MEMCPY_DEFAULT));
    CHECK_OK(mtiart_launch_host_func(s1, h_scg, &host));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s1, &g));

    CHECK(node_count(g) == 7);
    CHECK(edge_count(g) == 6);
    CHECK(count_kind(g, MTIART_NODE_EVENT_RECORD) == 0 &&
          count_kind(g, MTIART_NODE_EVENT_WAIT) == 0);
    CHECK(count_kind(g, MTIART_NODE_MEMCPY) == 2 && count_kind(g, MTIART_NODE_FILL) == 2);
    CHECK(count_kind(g, MTIART_NODE_KERNEL) == 2 && count_kind(g, MTIART_NODE_HOST) == 1);
    /* memcpy 0, memset 1 (s2), memset 2 (s3), reduce 3, reduceFinal 4, memcpy 5, host 6 */
    CHECK(node_info(g, 1).num_dependencies == 0 && node_info(g, 2).num_dependencies == 0);
    CHECK(depends_on(g, 3, 0) && depends_on(g, 3, 1) && node_info(g, 3).num_dependencies == 2);
    CHECK(depends_on(g, 4, 3) && depends_on(g, 4, 2) && node_info(g, 4).num_dependencies == 2);
    CHECK(depends_on(g, 5, 4) && depends_on(g, 6, 5));
    /* Nothing ran during the capture. */
    CHECK(host.calls == 0 && result_h == -1);
    mtiart_graph_exec x = instantiate(g);
    for (int r = 0; r < 3; r++) CHECK_OK(mtiart_graph_launch(x, s1));
    CHECK_OK(mtiart_stream_synchronize(s1));
    CHECK(host.calls == 3);
    for (int r = 0; r < 3; r++) CHECK(fabs(host.seen[r] - expect) < 1e-6 * expect);
    uint32_t flags = 9;
    CHECK_OK(mtiart_stream_get_flags(s2, &flags));
    CHECK(flags == MTIART_STREAM_NON_BLOCKING);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_free(input_d));
    CHECK_OK(mtiart_free(output_d));
    CHECK_OK(mtiart_free(result_d));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(memset1));
    CHECK_OK(mtiart_event_destroy(memset2));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_OK(mtiart_stream_destroy(s3));
}

static void test_stream_flags(void) {
    mtiart_stream s, def;
    uint32_t flags = 7;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_get_flags(s, &flags));
    CHECK(flags == MTIART_STREAM_DEFAULT);
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_stream_get_flags(def, &flags));
    CHECK(flags == 0);
    CHECK_STATUS(mtiart_stream_create_with_flags(0, 0, 2, &s), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_create_with_flags(9, 0, 0, &s), MTIART_ERROR_INVALID_DEVICE);
    CHECK_STATUS(mtiart_stream_create_with_flags(0, 0, 0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_get_flags(def, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_stream_create_with_flags(0, -9, MTIART_STREAM_NON_BLOCKING, &s));
    int prio = 0;
    CHECK_OK(mtiart_stream_get_priority(s, &prio));
    CHECK(prio == -3); /* clamped, as mtiart_stream_create does */
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_STATUS(mtiart_stream_get_flags(s, &flags), MTIART_ERROR_INVALID_HANDLE);
}

/* ------------------------------------------------------------------ forked streams */

/* graphMemoryNodes' flow: a stream forked into the capture, joined back, and destroyed
 * before the capture ends. A forked stream whose work is not joined cannot be. */
static void test_destroy_joined_stream(void) {
    mtiart_stream s1, s2, s3;
    CHECK_OK(mtiart_stream_create_with_flags(0, 0, MTIART_STREAM_NON_BLOCKING, &s1));
    CHECK_OK(mtiart_stream_create_with_flags(0, 0, MTIART_STREAM_NON_BLOCKING, &s2));
    CHECK_OK(mtiart_stream_create(0, 0, &s3));
    mtiart_event alloc_ev, sync_ev, fork3, join3;
    CHECK_OK(mtiart_event_create(0, &alloc_ev));
    CHECK_OK(mtiart_event_create(0, &sync_ev));
    CHECK_OK(mtiart_event_create(0, &fork3));
    CHECK_OK(mtiart_event_create(0, &join3));
    uint64_t id2;
    CHECK_OK(mtiart_stream_get_id(s2, &id2));
    CHECK_OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    int64_t *a, *b;
    CHECK_OK(mtiart_malloc_async(s1, 8, (void **)&a));
    CHECK_OK(mtiart_malloc_async(s1, 8, (void **)&b));
    CHECK_OK(mtiart_event_record(alloc_ev, s1));
    CHECK_OK(mtiart_stream_wait_event(s2, alloc_ev));
    CHECK_OK(mtiart_memset_async(s1, a, 0, 8));
    CHECK_OK(mtiart_memset_async(s2, b, 0, 8));
    CHECK_OK(launch_add_i64(s2, b, 5));
    /* s3 forks from s2 and joins back into s2 (not into the origin). */
    CHECK_OK(mtiart_event_record(fork3, s2));
    CHECK_OK(mtiart_stream_wait_event(s3, fork3));
    CHECK_OK(launch_mul_i64(s3, b, 3));
    CHECK_STATUS(mtiart_stream_destroy(s3), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "joined") != NULL);
    CHECK_OK(mtiart_event_record(join3, s3));
    CHECK_OK(mtiart_stream_wait_event(s2, join3));
    CHECK_OK(mtiart_stream_destroy(s3)); /* its work is in s2's now */
    CHECK_STATUS(mtiart_launch_host_func(s3, h_count, NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_STATUS(mtiart_stream_destroy(s2), MTIART_ERROR_NOT_PERMITTED);
    char id_text[32];
    snprintf(id_text, sizeof id_text, "stream %llu", (unsigned long long)id2);
    CHECK(strstr(mtiart_last_error_message(), id_text) != NULL);
    CHECK_OK(mtiart_event_record(sync_ev, s2));
    CHECK_OK(mtiart_stream_wait_event(s1, sync_ev));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_STATUS(mtiart_stream_destroy(s1), MTIART_ERROR_NOT_PERMITTED); /* the origin */
    CHECK_OK(launch_add_i64(s1, a, 1));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s1, &g));
    CHECK(count_kind(g, MTIART_NODE_EVENT_RECORD) + count_kind(g, MTIART_NODE_EVENT_WAIT) == 0);
    mtiart_graph_exec x = instantiate(g);
    CHECK_OK(mtiart_graph_launch(x, s1));
    CHECK_OK(mtiart_stream_synchronize(s1));
    CHECK(read_i64(s1, a) == 1 && read_i64(s1, b) == 15);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    /* A joined stream that never did anything can go as well. */
    mtiart_stream s4;
    CHECK_OK(mtiart_stream_create(0, 0, &s4));
    CHECK_OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(alloc_ev, s1));
    CHECK_OK(mtiart_stream_wait_event(s4, alloc_ev));
    CHECK_OK(mtiart_stream_destroy(s4));
    CHECK_OK(mtiart_stream_end_capture(s1, &g));
    CHECK(node_count(g) == 0);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(alloc_ev));
    CHECK_OK(mtiart_event_destroy(sync_ev));
    CHECK_OK(mtiart_event_destroy(fork3));
    CHECK_OK(mtiart_event_destroy(join3));
    CHECK_OK(mtiart_stream_destroy(s1));
}

/* Joins build edges: a record seen by several waits, waits on several records, and a
 * record made before any node of the capture (the joining stream's nodes are roots). */
static void test_fork_join_edges(void) {
    mtiart_stream s0, s1;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    mtiart_event e0, e1, e2;
    CHECK_OK(mtiart_event_create(0, &e0));
    CHECK_OK(mtiart_event_create(0, &e1));
    CHECK_OK(mtiart_event_create(0, &e2));
    atomic_long c = 0;
    CHECK_OK(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    launch_count(s0, &c); /* 0 */
    launch_count(s0, &c); /* 1 <- 0 */
    CHECK_OK(mtiart_event_record(e0, s0));
    CHECK_OK(mtiart_stream_wait_event(s1, e0));
    launch_count(s1, &c); /* 2 <- 1 */
    CHECK_OK(mtiart_event_record(e1, s1));
    launch_count(s0, &c); /* 3 <- 1 */
    CHECK_OK(mtiart_event_record(e2, s0));
    CHECK_OK(mtiart_stream_wait_event(s0, e1)); /* s0: {3, 2} */
    CHECK_OK(mtiart_stream_wait_event(s0, e1)); /* twice: nothing new */
    CHECK_OK(mtiart_stream_wait_event(s1, e2)); /* s1: {2, 3} */
    launch_count(s1, &c);                       /* 4 <- 2, 3 */
    CHECK_OK(mtiart_event_record(e1, s1));
    CHECK_OK(mtiart_stream_wait_event(s0, e1)); /* s0: {3, 2, 4} */
    launch_count(s0, &c);                       /* 5 <- 3, 2, 4 */
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s0, &g));
    CHECK(node_count(g) == 6);
    CHECK(edge_count(g) == 1 + 1 + 1 + 2 + 3);
    CHECK(depends_on(g, 4, 2) && depends_on(g, 4, 3));
    CHECK(depends_on(g, 5, 2) && depends_on(g, 5, 3) && depends_on(g, 5, 4));
    mtiart_graph_exec x = instantiate(g);
    CHECK_OK(mtiart_graph_launch(x, s0));
    CHECK_OK(mtiart_stream_synchronize(s0));
    CHECK(atomic_load(&c) == 6);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    /* An event recorded before any node: the fork's first node is a root. */
    CHECK_OK(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(e0, s0));
    CHECK_OK(mtiart_stream_wait_event(s1, e0));
    launch_count(s1, &c);
    launch_count(s0, &c);
    CHECK_OK(mtiart_event_record(e1, s1));
    CHECK_OK(mtiart_stream_wait_event(s0, e1));
    CHECK_OK(mtiart_stream_end_capture(s0, &g));
    CHECK(node_count(g) == 2 && edge_count(g) == 0);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(e0));
    CHECK_OK(mtiart_event_destroy(e1));
    CHECK_OK(mtiart_event_destroy(e2));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
}

/* ------------------------------------------------------------------ event nodes */

static void test_record_nodes_and_timing(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    mtiart_event start, end, internal;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &start));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &end));
    CHECK_OK(mtiart_event_create(0, &internal));
    CHECK_STATUS(mtiart_event_record_with_flags(start, s, 4), MTIART_ERROR_INVALID_VALUE);
    double pause = 3;
    gate gt = {0};
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record_with_flags(start, s, MTIART_EVENT_RECORD_EXTERNAL));
    CHECK_OK(mtiart_launch_host_func(s, h_sleep, &pause));
    CHECK_OK(mtiart_event_record(internal, s)); /* an ordering point only: no node */
    CHECK_OK(mtiart_launch_host_func(s, h_gate, &gt));
    CHECK_OK(mtiart_event_record_with_flags(end, s, MTIART_EVENT_RECORD_EXTERNAL));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK(node_count(g) == 4);
    CHECK(node_info(g, 0).kind == MTIART_NODE_EVENT_RECORD);
    CHECK(node_info(g, 3).kind == MTIART_NODE_EVENT_RECORD && depends_on(g, 3, 2));
    CHECK(strcmp(node_info(g, 0).name, "event record") == 0);
    float ms = -1;
    CHECK_STATUS(mtiart_event_elapsed_time(start, end, &ms), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_event_query(end)); /* never recorded */
    mtiart_graph_exec x = instantiate(g);
    CHECK_OK(mtiart_graph_destroy(g)); /* the executable holds the events' nodes */
    atomic_long counter = 0;
    CHECK_OK(mtiart_graph_launch(x, s));
    /* The launch reserved the record: work enqueued after it waits for the replay's. */
    CHECK(mtiart_event_query(end) == MTIART_NOT_READY);
    CHECK_OK(mtiart_stream_wait_event(other, end));
    launch_count(other, &counter);
    sleep_ms(20);
    CHECK(atomic_load(&counter) == 0);
    CHECK(mtiart_event_query(end) == MTIART_NOT_READY);
    CHECK_STATUS(mtiart_event_elapsed_time(start, end, &ms), MTIART_NOT_READY);
    atomic_store(&gt.open, 1);
    CHECK_OK(mtiart_event_synchronize(end));
    CHECK_OK(mtiart_event_query(end));
    CHECK_OK(sync_with_timeout(other, 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_event_elapsed_time(start, end, &ms));
    CHECK(ms >= 2.5f && ms < 10000);
    /* Every replay records again. */
    for (int r = 0; r < 3; r++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_event_synchronize(end));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_event_elapsed_time(start, end, &ms));
    CHECK(ms >= 2.5f);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_event_destroy(start));
    CHECK_OK(mtiart_event_destroy(end));
    CHECK_OK(mtiart_event_destroy(internal));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* torch's test_graph_external_wait_and_record: graph `sig` blocks in a host function and
 * then records `start`; graph `work`, captured while `start` was never recorded, waits on
 * it, copies and records `end`. Replaying sig on s1 and work on s2, work runs only once
 * the host function is released. */
static void test_waits_across_graphs(void) {
    mtiart_stream s1, s2, cap;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    CHECK_OK(mtiart_stream_create(0, 0, &cap));
    mtiart_event start, end;
    CHECK_OK(mtiart_event_create(0, &start));
    CHECK_OK(mtiart_event_create(0, &end));
    int64_t *x, *dst;
    CHECK_OK(mtiart_malloc_async(cap, 64, (void **)&x));
    CHECK_OK(mtiart_malloc_async(cap, 64, (void **)&dst));
    int64_t ones[8] = {1, 1, 1, 1, 1, 1, 1, 1}, zeros[8] = {0}, host[8];
    CHECK_OK(mtiart_memcpy(cap, x, ones, 64, MTIART_MEMCPY_HOST_TO_DEVICE));
    gate gt = {0};
    mtiart_graph gsig, gwork;
    CHECK_OK(mtiart_stream_begin_capture(cap, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_launch_host_func(cap, h_gate, &gt));
    CHECK_OK(mtiart_event_record_with_flags(start, cap, MTIART_EVENT_RECORD_EXTERNAL));
    CHECK_OK(mtiart_stream_end_capture(cap, &gsig));
    CHECK_OK(mtiart_stream_begin_capture(cap, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_stream_wait_event(cap, start));
    CHECK_OK(mtiart_memcpy_async(cap, dst, x, 64, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(mtiart_event_record_with_flags(end, cap, MTIART_EVENT_RECORD_EXTERNAL));
    CHECK_OK(mtiart_stream_end_capture(cap, &gwork));
    CHECK(node_count(gwork) == 3 && node_info(gwork, 0).kind == MTIART_NODE_EVENT_WAIT);
    mtiart_graph_exec sig = instantiate(gsig), work = instantiate(gwork);
    for (int round = 0; round < 2; round++) {
        CHECK_OK(mtiart_memcpy(cap, dst, zeros, 64, MTIART_MEMCPY_HOST_TO_DEVICE));
        atomic_store(&gt.open, 0);
        CHECK_OK(mtiart_graph_launch(sig, s1));
        CHECK_OK(mtiart_graph_launch(work, s2));
        sleep_ms(20);
        CHECK(mtiart_event_query(end) == MTIART_NOT_READY);
        CHECK(mtiart_stream_query(s2) == MTIART_NOT_READY);
        memcpy(host, dst, sizeof host); /* nothing writes dst until the gate opens */
        CHECK(host[0] == 0 && host[7] == 0);
        atomic_store(&gt.open, 1);
        CHECK_OK(mtiart_event_synchronize(end));
        CHECK_OK(mtiart_memcpy(s2, host, dst, 64, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(host[0] == 1 && host[7] == 1);
        CHECK_OK(mtiart_stream_synchronize(s1));
    }
    /* An eager record counts too, and a wait for a record already complete is free. */
    CHECK_OK(mtiart_memcpy(cap, dst, zeros, 64, MTIART_MEMCPY_HOST_TO_DEVICE));
    atomic_store(&gt.open, 0);
    launch_gate(s1, &gt);
    CHECK_OK(mtiart_event_record(start, s1));
    CHECK_OK(mtiart_graph_launch(work, s2));
    sleep_ms(10);
    CHECK(mtiart_stream_query(s2) == MTIART_NOT_READY);
    atomic_store(&gt.open, 1);
    CHECK_OK(sync_with_timeout(s2, 10000));
    CHECK_OK(mtiart_memcpy(s2, host, dst, 64, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host[3] == 1);
    CHECK_OK(mtiart_graph_launch(work, s2));
    CHECK_OK(sync_with_timeout(s2, 10000));
    CHECK_OK(mtiart_graph_exec_destroy(sig));
    CHECK_OK(mtiart_graph_exec_destroy(work));
    CHECK_OK(mtiart_graph_destroy(gsig));
    CHECK_OK(mtiart_graph_destroy(gwork));
    CHECK_OK(mtiart_stream_synchronize(s1));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_free(dst));
    CHECK_OK(mtiart_event_destroy(start));
    CHECK_OK(mtiart_event_destroy(end));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_OK(mtiart_stream_destroy(cap));
}

/* A wait node takes effect where it stands: with a record pending, the nodes that do not
 * depend on the wait run, and the replay is suspended without holding a worker. */
static void test_wait_in_place(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    mtiart_event e, f;
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(0, &f));
    atomic_long before = 0, after = 0, beside = 0;
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_arg ab = {MTIART_ARG_VALUE, sizeof(atomic_long *), &(atomic_long *){&before}, 0};
    mtiart_arg aa = {MTIART_ARG_VALUE, sizeof(atomic_long *), &(atomic_long *){&after}, 0};
    mtiart_arg as = {MTIART_ARG_VALUE, sizeof(atomic_long *), &(atomic_long *){&beside}, 0};
    size_t n0, n1, n2, n3, n4, n5;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_count, 1, &ab, 1, &n0));
    CHECK_OK(mtiart_graph_add_event_wait_node(g, &n0, 1, e, &n1));
    CHECK_OK(mtiart_graph_add_kernel_node(g, &n1, 1, k_count, 1, &aa, 1, &n2));
    CHECK_OK(mtiart_graph_add_event_wait_node(g, &n2, 1, f, &n3));
    CHECK_OK(mtiart_graph_add_kernel_node(g, &n3, 1, k_count, 1, &aa, 1, &n4));
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_count, 1, &as, 1, &n5));
    CHECK(strcmp(node_info(g, n1).name, "event wait") == 0);
    mtiart_graph_exec x = instantiate(g);
    /* Waits on events never recorded are satisfied at once. */
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(sync_with_timeout(s, 10000));
    CHECK(atomic_load(&before) == 1 && atomic_load(&after) == 2 && atomic_load(&beside) == 1);
    /* Records that take a while, on one stream, made before the launch. */
    double pause = 30;
    CHECK_OK(mtiart_launch_host_func(other, h_sleep, &pause));
    CHECK_OK(mtiart_event_record(e, other));
    CHECK_OK(mtiart_launch_host_func(other, h_sleep, &pause));
    CHECK_OK(mtiart_event_record(f, other));
    CHECK_OK(mtiart_graph_launch(x, s));
    atomic_long tail = 0;
    launch_count(s, &tail); /* after the replay, on its stream */
    if (g_workers > 1) {
        CHECK(WAIT_UNTIL(atomic_load(&beside) == 2 && atomic_load(&before) == 2, 5000));
        CHECK(atomic_load(&after) == 2); /* still waiting */
    }
    CHECK_OK(sync_with_timeout(s, 10000));
    CHECK(mtiart_event_query(e) == MTIART_SUCCESS && mtiart_event_query(f) == MTIART_SUCCESS);
    CHECK(atomic_load(&after) == 4 && atomic_load(&tail) == 1 && atomic_load(&beside) == 2);
    /* A record made after the launch is not waited for. */
    gate gt = {0};
    launch_gate(other, &gt);
    CHECK_OK(mtiart_event_record(e, other));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_event_record(f, other));
    if (g_workers > 1) {
        CHECK(WAIT_UNTIL(atomic_load(&before) == 3, 5000));
        sleep_ms(10);
        CHECK(atomic_load(&after) == 4);
    }
    atomic_store(&gt.open, 1);
    CHECK_OK(sync_with_timeout(s, 10000));
    CHECK(atomic_load(&after) == 6);
    CHECK_OK(mtiart_stream_synchronize(other));
    /* A pure chain suspends and resumes as well; the executable outlives its handle. */
    mtiart_graph chain;
    CHECK_OK(mtiart_graph_create(0, &chain));
    CHECK_OK(mtiart_graph_add_kernel_node(chain, NULL, 0, k_count, 1, &ab, 1, &n0));
    CHECK_OK(mtiart_graph_add_event_wait_node(chain, &n0, 1, e, &n1));
    CHECK_OK(mtiart_graph_add_kernel_node(chain, &n1, 1, k_count, 1, &aa, 1, &n2));
    mtiart_graph_exec cx = instantiate(chain);
    CHECK_OK(mtiart_launch_host_func(other, h_sleep, &pause));
    CHECK_OK(mtiart_event_record(e, other));
    CHECK_OK(mtiart_graph_launch(cx, s));
    CHECK_OK(mtiart_graph_exec_destroy(cx));
    CHECK_OK(sync_with_timeout(s, 10000));
    CHECK(atomic_load(&before) == 4 && atomic_load(&after) == 7);
    CHECK_OK(mtiart_graph_destroy(chain));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(f));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* ------------------------------------------------------------------ explicit construction */

/* Kernel: c[i] = a[i] + b[i] over int64 arrays of args[3] elements. */
static int32_t k_add_arrays(void *const *args, uint32_t block, uint32_t num_blocks) {
    const int64_t *a = *(int64_t *const *)args[0], *b = *(int64_t *const *)args[1];
    int64_t *c = *(int64_t *const *)args[2];
    uint32_t n = *(const uint32_t *)args[3], per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) c[i] = a[i] + b[i];
    return 0;
}

/* The same work captured and built by hand gives the same results and node kinds. */
static void test_explicit_nodes(void) {
    enum { N = 256 };
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_event done;
    CHECK_OK(mtiart_event_create(0, &done));
    int64_t *a, *b, *c;
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&a));
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&b));
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&c));
    static int64_t in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i;
    atomic_long calls = 0;
    int64_t seven = 7;
    uint32_t n = N;
    mtiart_arg ka[4] = {{MTIART_ARG_BUFFER_IN, 0, a, N * 8},
                        {MTIART_ARG_BUFFER_IN, 0, b, N * 8},
                        {MTIART_ARG_BUFFER_OUT, 0, c, N * 8},
                        {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t copy_in, fill, add, copy_out, host, rec, join, empty_copy;
    CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, a, in, sizeof in, MTIART_MEMCPY_DEFAULT,
                                          &copy_in));
    CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, b, &seven, 8, N, &fill));
    size_t both[2] = {copy_in, fill};
    CHECK_OK(mtiart_graph_add_kernel_node(g, both, 2, k_add_arrays, 4, ka, 4, &add));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, &add, 1, out, c, sizeof out,
                                          MTIART_MEMCPY_DEVICE_TO_HOST, &copy_out));
    CHECK_OK(mtiart_graph_add_host_node(g, &copy_out, 1, h_count, &calls, &host));
    CHECK_OK(mtiart_graph_add_event_record_node(g, &host, 1, done, &rec));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, NULL, NULL, 0, MTIART_MEMCPY_DEFAULT,
                                          &empty_copy));
    size_t ends[2] = {rec, empty_copy};
    CHECK_OK(mtiart_graph_add_empty_node(g, ends, 2, &join));
    CHECK(node_count(g) == 8 && edge_count(g) == 7);
    CHECK(node_info(g, copy_in).kind == MTIART_NODE_MEMCPY);
    CHECK(strcmp(node_info(g, copy_in).name, "memcpy HtoD") == 0);
    CHECK(node_info(g, copy_in).num_buffers == 1 && node_info(g, fill).kind == MTIART_NODE_FILL);
    CHECK(node_info(g, host).kind == MTIART_NODE_HOST);
    CHECK(node_info(g, rec).kind == MTIART_NODE_EVENT_RECORD);
    CHECK(node_info(g, empty_copy).num_buffers == 0);
    mtiart_buffer_use use;
    CHECK_OK(mtiart_graph_get_node_buffer(g, fill, 0, &use));
    CHECK(use.address == (uint64_t)(uintptr_t)b && use.bytes == N * 8 &&
          use.access == MTIART_ARG_BUFFER_OUT);
    /* Refused additions leave the graph as it was. */
    size_t node;
    CHECK_STATUS(
        mtiart_graph_add_memcpy_node(g, NULL, 0, in, a, 8, MTIART_MEMCPY_HOST_TO_DEVICE, &node),
        MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_graph_add_memcpy_node(g, NULL, 0, a, in, 8, (mtiart_memcpy_kind)9, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(
        mtiart_graph_add_memcpy_node(g, NULL, 0, NULL, in, 8, MTIART_MEMCPY_HOST_TO_DEVICE, &node),
        MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_memcpy_node(g, NULL, 0, a, in, N * 8 + 8,
                                              MTIART_MEMCPY_HOST_TO_DEVICE, &node),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_graph_add_fill_node(g, NULL, 0, b, &seven, 3, 1, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_fill_node(g, NULL, 0, b, NULL, 8, 1, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_fill_node(g, NULL, 0, in, &seven, 8, 1, &node),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_graph_add_host_node(g, NULL, 0, NULL, NULL, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_host_node(g, NULL, 1, h_count, NULL, &node),
                 MTIART_ERROR_INVALID_VALUE);
    size_t far = 99;
    CHECK_STATUS(mtiart_graph_add_event_wait_node(g, &far, 1, done, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_event_record_node(g, NULL, 0, (mtiart_event)(uintptr_t)12, &node),
                 MTIART_ERROR_INVALID_HANDLE);
    CHECK_STATUS(mtiart_graph_add_event_record_node(g, NULL, 0, done, NULL),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(node_count(g) == 8 && edge_count(g) == 7);
    mtiart_graph_exec x = instantiate(g);
    CHECK_OK(mtiart_graph_destroy(g));
    for (int r = 0; r < 3; r++) {
        memset(out, 0, sizeof out);
        in[5] = 100 + r; /* a host source is read at each replay */
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_event_synchronize(done));
        CHECK(out[5] == 107 + r && out[0] == 7 && out[N - 1] == N - 1 + 7);
        CHECK(atomic_load(&calls) == r + 1);
    }
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_free(c));
    CHECK_OK(mtiart_event_destroy(done));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ child graphs */

static int32_t k_fail(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    mtiart_kernel_set_error_message("failing on purpose");
    return 5;
}

static size_t add_log(mtiart_graph g, const size_t *deps, size_t n, log_entry *e) {
    size_t node;
    CHECK_OK(mtiart_graph_add_host_node(g, deps, n, h_log, e, &node));
    return node;
}

static atomic_long g_deep_count;

/* A graph of one node that counts in g_deep_count. */
static void add_count_node(mtiart_graph g) {
    atomic_long *counter = &g_deep_count;
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof counter, &counter, 0};
    size_t node;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_count, 1, &a, 1, &node));
}

static int log_pos(order_log *log, int value) {
    for (int i = 0; i < atomic_load(&log->n); i++)
        if (log->v[i] == value) return i;
    return -1;
}

static void test_child_graphs(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *v;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&v));
    write_i64(s, v, 0);
    int64_t one = 1, two = 2, ten = 10, hundred = 100;
    mtiart_arg add1[2] = {buf_arg(v, 8), {MTIART_ARG_VALUE, 8, &one, 0}};
    mtiart_arg mul2[2] = {buf_arg(v, 8), {MTIART_ARG_VALUE, 8, &two, 0}};
    mtiart_arg add10[2] = {buf_arg(v, 8), {MTIART_ARG_VALUE, 8, &ten, 0}};
    mtiart_arg add100[2] = {buf_arg(v, 8), {MTIART_ARG_VALUE, 8, &hundred, 0}};
    /* child: v = (v + 1) * 2 */
    mtiart_graph child, parent;
    size_t c0, c1, p0, p1, p2;
    CHECK_OK(mtiart_graph_create(0, &child));
    CHECK_OK(mtiart_graph_add_kernel_node(child, NULL, 0, k_add_i64, 1, add1, 2, &c0));
    CHECK_OK(mtiart_graph_add_kernel_node(child, &c0, 1, k_mul_i64, 1, mul2, 2, &c1));
    /* parent: v += 10; child; v += 100 */
    CHECK_OK(mtiart_graph_create(0, &parent));
    CHECK_OK(mtiart_graph_add_kernel_node(parent, NULL, 0, k_add_i64, 1, add10, 2, &p0));
    CHECK_OK(mtiart_graph_add_child_graph_node(parent, &p0, 1, child, &p1));
    CHECK_OK(mtiart_graph_add_kernel_node(parent, &p1, 1, k_add_i64, 1, add100, 2, &p2));
    /* The child was copied: changing it later changes nothing here. */
    CHECK_OK(mtiart_graph_add_kernel_node(child, &c1, 1, k_fail, 1, NULL, 0, &c0));
    mtiart_node_info info = node_info(parent, p1);
    CHECK(info.kind == MTIART_NODE_CHILD_GRAPH && info.num_dependencies == 1);
    CHECK(strcmp(info.name, "child graph (2 nodes)") == 0);
    mtiart_graph body;
    CHECK_OK(mtiart_graph_get_node_body(parent, p1, &body));
    CHECK(node_count(body) == 2 && edge_count(body) == 1);
    CHECK_STATUS(mtiart_graph_get_node_body(parent, p0, &body), MTIART_ERROR_INVALID_VALUE);
    mtiart_graph_exec x = instantiate(parent);
    size_t count;
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &count));
    CHECK(count == 4);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v) == (0 + 10 + 1) * 2 + 100);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    /* Nested: a grandparent runs the parent twice in a row, and itself (as a copy). */
    mtiart_graph grand;
    size_t g0, g1;
    CHECK_OK(mtiart_graph_create(0, &grand));
    CHECK_OK(mtiart_graph_add_child_graph_node(grand, NULL, 0, parent, &g0));
    CHECK_OK(mtiart_graph_add_child_graph_node(grand, &g0, 1, parent, &g1));
    CHECK_OK(mtiart_graph_add_child_graph_node(grand, &g1, 1, grand, &g0)); /* the two above */
    x = instantiate(grand);
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &count));
    CHECK(count == 16);
    write_i64(s, v, 0);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    int64_t want = 0;
    for (int i = 0; i < 4; i++) want = (want + 10 + 1) * 2 + 100;
    CHECK(read_i64(s, v) == want);
    char *dot = dot_of(grand);
    CHECK(strstr(dot, "subgraph cluster_n0") != NULL && strstr(dot, "n0_1 [") != NULL);
    CHECK(strstr(dot, "n2_0_1_0 [") != NULL); /* grand -> grand's copy -> parent -> child */
    CHECK(strstr(dot, "n0_1_0 -> n0_1_1;") != NULL);
    CHECK(strstr(dot, "n0 -> n1;") != NULL);
    free(dot);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(grand));
    /* Empty children keep the order through them; several roots and sinks join properly. */
    order_log log = {0};
    log_entry e_before = {&log, 1}, e_a = {&log, 2}, e_b = {&log, 3}, e_after = {&log, 4};
    mtiart_graph empty, wide, outer;
    CHECK_OK(mtiart_graph_create(0, &empty));
    CHECK_OK(mtiart_graph_create(0, &wide));
    add_log(wide, NULL, 0, &e_a);
    add_log(wide, NULL, 0, &e_b);
    CHECK_OK(mtiart_graph_create(0, &outer));
    size_t o0 = add_log(outer, NULL, 0, &e_before), o1, o2;
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, &o0, 1, empty, &o1));
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, &o1, 1, wide, &o2));
    add_log(outer, &o2, 1, &e_after);
    x = instantiate(outer);
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &count));
    CHECK(count == 4);
    for (int r = 0; r < 20; r++) {
        atomic_store(&log.n, 0);
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(atomic_load(&log.n) == 4 && log_pos(&log, 1) == 0 && log_pos(&log, 4) == 3);
    }
    CHECK_OK(mtiart_graph_exec_destroy(x));
    /* A failing node inside a child is named by its path. */
    size_t f0;
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, &o0, 1, child, &f0)); /* has k_fail */
    x = instantiate(outer);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
    CHECK(strstr(mtiart_last_error_message(), "graph node 4.2: kernel") != NULL);
    CHECK(strstr(mtiart_last_error_message(), "failing on purpose") != NULL);
    CHECK_OK(mtiart_stream_synchronize(s)); /* reported once; the stream goes on */
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_STATUS(mtiart_graph_add_child_graph_node(outer, NULL, 0, (mtiart_graph)(uintptr_t)8, &f0),
                 MTIART_ERROR_INVALID_HANDLE);
    /* Bodies nest 64 deep at most (every walk over a graph recurses into its bodies). */
    mtiart_graph deep;
    CHECK_OK(mtiart_graph_create(0, &deep));
    add_count_node(deep);
    for (int level = 0; level < 64; level++) {
        mtiart_graph up;
        CHECK_OK(mtiart_graph_create(0, &up));
        CHECK_OK(mtiart_graph_add_child_graph_node(up, NULL, 0, deep, &f0));
        CHECK_OK(mtiart_graph_destroy(deep));
        deep = up;
    }
    mtiart_graph too_deep;
    CHECK_OK(mtiart_graph_create(0, &too_deep));
    CHECK_STATUS(mtiart_graph_add_child_graph_node(too_deep, NULL, 0, deep, &f0),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "64") != NULL && node_count(too_deep) == 0);
    x = instantiate(deep);
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &count));
    CHECK(count == 1);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(too_deep));
    CHECK_OK(mtiart_graph_destroy(deep));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_graph_destroy(empty));
    CHECK_OK(mtiart_graph_destroy(wide));
    CHECK_OK(mtiart_graph_destroy(outer));
    CHECK_OK(mtiart_graph_destroy(child));
    CHECK_OK(mtiart_graph_destroy(parent));
    CHECK_OK(mtiart_free(v));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* An executable launched inside a capture is a child node; what it runs is what the
 * executable runs at that moment (its latest update included). */
static void test_launch_in_capture(void) {
    mtiart_stream s, side;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &side));
    int64_t *v;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&v));
    write_i64(s, v, 1);
    mtiart_graph inner;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(launch_mul_i64(s, v, 3));
    CHECK_OK(mtiart_stream_end_capture(s, &inner));
    mtiart_graph_exec ix = instantiate(inner);
    mtiart_event fork, join;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &join));
    mtiart_graph outer;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(launch_add_i64(s, v, 1));
    CHECK_OK(mtiart_event_record(fork, s));
    CHECK_OK(mtiart_stream_wait_event(side, fork));
    CHECK_OK(mtiart_graph_launch(ix, side)); /* on a forked stream */
    CHECK_OK(mtiart_event_record(join, side));
    CHECK_OK(mtiart_stream_wait_event(s, join));
    CHECK_OK(mtiart_graph_launch(ix, s));
    CHECK_OK(mtiart_stream_end_capture(s, &outer));
    CHECK(read_i64(s, v) == 1); /* nothing ran */
    CHECK(node_count(outer) == 3 && count_kind(outer, MTIART_NODE_CHILD_GRAPH) == 2);
    CHECK(depends_on(outer, 1, 0) && depends_on(outer, 2, 1));
    mtiart_graph_exec ox = instantiate(outer);
    CHECK_OK(mtiart_graph_exec_destroy(ix)); /* the child node has its own copy */
    CHECK_OK(mtiart_graph_launch(ox, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v) == (1 + 1) * 9);
    CHECK_OK(mtiart_graph_exec_destroy(ox));
    CHECK_OK(mtiart_graph_destroy(outer));
    CHECK_OK(mtiart_graph_destroy(inner));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(join));
    CHECK_OK(mtiart_free(v));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(side));
}

/* ------------------------------------------------------------------ updates */

/* A graph: v += add (kernel) -> w <- v (copy) -> z = fill pattern (fill). */
static mtiart_graph make_update_graph(int64_t *v, int64_t *w, int64_t *z, int64_t add,
                                      int64_t pattern) {
    mtiart_graph g;
    size_t k, c, f;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_arg a[2] = {buf_arg(v, 8), {MTIART_ARG_VALUE, 8, &add, 0}};
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_add_i64, 1, a, 2, &k));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, &k, 1, w, v, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE, &c));
    CHECK_OK(mtiart_graph_add_fill_node(g, &c, 1, z, &pattern, 8, 1, &f));
    return g;
}

static void test_update(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *m;
    CHECK_OK(mtiart_malloc_async(s, 6 * 8, (void **)&m));
    CHECK_OK(mtiart_memset_async(s, m, 0, 6 * 8));
    int64_t *v1 = m, *w1 = m + 1, *z1 = m + 2, *v2 = m + 3, *w2 = m + 4, *z2 = m + 5;
    mtiart_graph g1 = make_update_graph(v1, w1, z1, 1, 7);
    mtiart_graph g2 = make_update_graph(v2, w2, z2, 5, 9);
    mtiart_graph_exec x = instantiate(g1);
    CHECK_OK(mtiart_graph_launch(x, s));
    mtiart_update_info info = {-1, 0, 0};
    CHECK_OK(mtiart_graph_exec_update(x, g2, &info));
    CHECK(info.result == MTIART_UPDATE_SUCCESS && info.node == UINT64_MAX);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 1 && read_i64(s, w1) == 1 && read_i64(s, z1) == 7);
    CHECK(read_i64(s, v2) == 5 && read_i64(s, w2) == 5 && read_i64(s, z2) == 9);
    /* Replays launched before an update keep their parameters, even while it is made. */
    gate gt = {0};
    launch_gate(s, &gt);
    CHECK_OK(mtiart_graph_launch(x, s)); /* g2's: v2 += 5 */
    CHECK_OK(mtiart_graph_exec_update(x, g1, NULL));
    CHECK_OK(mtiart_graph_launch(x, s)); /* g1's: v1 += 1 */
    CHECK_OK(mtiart_graph_exec_update(x, g2, NULL));
    CHECK_OK(mtiart_graph_exec_update(x, g1, NULL));
    CHECK_OK(mtiart_graph_launch(x, s)); /* g1's again */
    atomic_store(&gt.open, 1);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 3 && read_i64(s, v2) == 10 && read_i64(s, w2) == 10);
    /* Refused updates: the first difference, and the executable unchanged. */
    mtiart_graph bad = make_update_graph(v2, w2, z2, 5, 9);
    size_t extra, three = 2;
    CHECK_OK(mtiart_graph_add_empty_node(bad, &three, 1, &extra));
    CHECK_STATUS(mtiart_graph_exec_update(x, bad, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_TOPOLOGY_CHANGED && info.node == 3);
    CHECK(strstr(mtiart_last_error_message(), "unchanged") != NULL);
    CHECK_OK(mtiart_graph_destroy(bad));
    CHECK_OK(mtiart_graph_create(0, &bad)); /* other edges: copy depends on nothing */
    size_t k, c, f;
    int64_t add = 5, pattern = 9;
    mtiart_arg a[2] = {buf_arg(v2, 8), {MTIART_ARG_VALUE, 8, &add, 0}};
    CHECK_OK(mtiart_graph_add_kernel_node(bad, NULL, 0, k_add_i64, 1, a, 2, &k));
    CHECK_OK(
        mtiart_graph_add_memcpy_node(bad, NULL, 0, w2, v2, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE, &c));
    CHECK_OK(mtiart_graph_add_fill_node(bad, &c, 1, z2, &pattern, 8, 1, &f));
    CHECK_STATUS(mtiart_graph_exec_update(x, bad, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_TOPOLOGY_CHANGED && info.node == 1);
    CHECK_OK(mtiart_graph_destroy(bad));
    CHECK_OK(mtiart_graph_create(0, &bad)); /* a fill where the copy was */
    CHECK_OK(mtiart_graph_add_kernel_node(bad, NULL, 0, k_add_i64, 1, a, 2, &k));
    CHECK_OK(mtiart_graph_add_fill_node(bad, &k, 1, w2, &pattern, 8, 1, &c));
    CHECK_OK(mtiart_graph_add_fill_node(bad, &c, 1, z2, &pattern, 8, 1, &f));
    CHECK_STATUS(mtiart_graph_exec_update(x, bad, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_NODE_KIND_CHANGED && info.node == 1);
    CHECK(strstr(mtiart_last_error_message(), "node 1") != NULL);
    CHECK_OK(mtiart_graph_destroy(bad));
    CHECK_OK(mtiart_graph_create(0, &bad)); /* a kernel with one argument fewer */
    CHECK_OK(mtiart_graph_add_kernel_node(bad, NULL, 0, k_add_i64, 1, a, 1, &k));
    CHECK_OK(
        mtiart_graph_add_memcpy_node(bad, &k, 1, w2, v2, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE, &c));
    CHECK_OK(mtiart_graph_add_fill_node(bad, &c, 1, z2, &pattern, 8, 1, &f));
    CHECK_STATUS(mtiart_graph_exec_update(x, bad, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_PARAMETERS_UNSUPPORTED && info.node == 0);
    CHECK_OK(mtiart_graph_destroy(bad));
    CHECK_OK(mtiart_graph_launch(x, s)); /* still g1's */
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 4 && read_i64(s, v2) == 10);
    /* The executable's setter: the same number of arguments, kernel nodes only. */
    int64_t fifty = 50;
    mtiart_arg a50[2] = {buf_arg(v2, 8), {MTIART_ARG_VALUE, 8, &fifty, 0}};
    CHECK_OK(mtiart_graph_exec_kernel_node_set_args(x, 0, a50, 2));
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(x, 0, a50, 1), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(x, 1, a50, 2), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(x, 7, a50, 2), MTIART_ERROR_INVALID_VALUE);
    int host_word;
    mtiart_arg hostbuf[2] = {buf_arg(&host_word, 4), {MTIART_ARG_VALUE, 8, &fifty, 0}};
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(x, 0, hostbuf, 2),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 4 && read_i64(s, v2) == 60 && read_i64(s, w1) == 4);
    /* The graph's setter changes the graph, not executables made from it before. */
    mtiart_arg a2[2] = {buf_arg(v1, 8), {MTIART_ARG_VALUE, 8, &fifty, 0}};
    mtiart_graph_exec x1 = instantiate(g1);
    CHECK_OK(mtiart_graph_kernel_node_set_args(g1, 0, a2, 2));
    CHECK_STATUS(mtiart_graph_kernel_node_set_args(g1, 1, a2, 2), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_kernel_node_set_args(g1, 3, a2, 2), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_launch(x1, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 5);
    mtiart_graph_exec x2 = instantiate(g1);
    CHECK_OK(mtiart_graph_launch(x2, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 55);
    /* An update from the changed graph carries the new argument over as well. */
    CHECK_OK(mtiart_graph_exec_update(x1, g1, NULL));
    CHECK_OK(mtiart_graph_launch(x1, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, v1) == 105);
    CHECK_OK(mtiart_graph_exec_destroy(x1));
    CHECK_OK(mtiart_graph_exec_destroy(x2));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_STATUS(mtiart_graph_exec_update(x, g1, &info), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_destroy(g1));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_free(m));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Updates reach into child graphs, conditional bodies and event nodes. */
static void test_update_structures(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *m;
    CHECK_OK(mtiart_malloc_async(s, 4 * 8, (void **)&m));
    CHECK_OK(mtiart_memset_async(s, m, 0, 4 * 8));
    int32_t *flags;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&flags));
    int32_t on[2] = {1, 0};
    CHECK_OK(mtiart_memcpy(s, flags, on, 8, MTIART_MEMCPY_HOST_TO_DEVICE));
    mtiart_event e1, e2;
    CHECK_OK(mtiart_event_create(0, &e1));
    CHECK_OK(mtiart_event_create(0, &e2));
    mtiart_graph g[2];
    for (int i = 0; i < 2; i++) {
        int64_t add = i ? 20 : 2;
        mtiart_arg a[2] = {buf_arg(m + i, 8), {MTIART_ARG_VALUE, 8, &add, 0}};
        mtiart_graph child, body;
        size_t node, dep;
        CHECK_OK(mtiart_graph_create(0, &child));
        CHECK_OK(mtiart_graph_add_kernel_node(child, NULL, 0, k_add_i64, 1, a, 2, &node));
        CHECK_OK(mtiart_graph_create(0, &body));
        CHECK_OK(mtiart_graph_add_kernel_node(body, NULL, 0, k_add_i64, 1, a, 2, &node));
        CHECK_OK(mtiart_graph_create(0, &g[i]));
        CHECK_OK(mtiart_graph_add_child_graph_node(g[i], NULL, 0, child, &dep));
        CHECK_OK(mtiart_graph_add_conditional_node(g[i], &dep, 1, MTIART_CONDITIONAL_IF, flags + i,
                                                   4, body, &node));
        CHECK_OK(mtiart_graph_add_event_record_node(g[i], &node, 1, i ? e2 : e1, &dep));
        CHECK_OK(mtiart_graph_destroy(child));
        CHECK_OK(mtiart_graph_destroy(body));
    }
    mtiart_graph_exec x = instantiate(g[0]);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, m) == 4 && read_i64(s, m + 1) == 0);
    CHECK_OK(mtiart_graph_exec_update(x, g[1], NULL));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_event_synchronize(e2)); /* the record node records the new event */
    CHECK_OK(mtiart_stream_synchronize(s));
    /* g[1]'s condition is flags[1] == 0: its body does not run, its child does. */
    CHECK(read_i64(s, m) == 4 && read_i64(s, m + 1) == 20);
    CHECK_OK(mtiart_memcpy(s, flags + 1, &on[0], 4, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, m + 1) == 60);
    /* A conditional of another type is refused. */
    mtiart_graph other, body;
    size_t node, dep;
    CHECK_OK(mtiart_graph_create(0, &body));
    CHECK_OK(mtiart_graph_create(0, &other));
    mtiart_graph child;
    CHECK_OK(mtiart_graph_create(0, &child));
    int64_t add = 1;
    mtiart_arg a[2] = {buf_arg(m, 8), {MTIART_ARG_VALUE, 8, &add, 0}};
    CHECK_OK(mtiart_graph_add_kernel_node(child, NULL, 0, k_add_i64, 1, a, 2, &node));
    CHECK_OK(mtiart_graph_add_kernel_node(body, NULL, 0, k_add_i64, 1, a, 2, &node));
    CHECK_OK(mtiart_graph_add_child_graph_node(other, NULL, 0, child, &dep));
    CHECK_OK(mtiart_graph_add_conditional_node(other, &dep, 1, MTIART_CONDITIONAL_WHILE, flags, 4,
                                               body, &node));
    CHECK_OK(mtiart_graph_add_event_record_node(other, &node, 1, e1, &dep));
    mtiart_update_info info;
    CHECK_STATUS(mtiart_graph_exec_update(x, other, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_PARAMETERS_UNSUPPORTED && info.node == 1);
    /* A child with another node count is a topology change, named at its node. */
    CHECK_OK(mtiart_graph_add_kernel_node(child, NULL, 0, k_add_i64, 1, a, 2, &node));
    mtiart_graph other2;
    CHECK_OK(mtiart_graph_create(0, &other2));
    CHECK_OK(mtiart_graph_add_child_graph_node(other2, NULL, 0, child, &dep));
    CHECK_OK(mtiart_graph_add_conditional_node(other2, &dep, 1, MTIART_CONDITIONAL_IF, flags, 4,
                                               body, &node));
    CHECK_OK(mtiart_graph_add_event_record_node(other2, &node, 1, e1, &dep));
    CHECK_STATUS(mtiart_graph_exec_update(x, other2, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_TOPOLOGY_CHANGED && info.node == 0);
    CHECK_OK(mtiart_graph_destroy(other2));
    CHECK_OK(mtiart_graph_destroy(other));
    CHECK_OK(mtiart_graph_destroy(child));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g[0]));
    CHECK_OK(mtiart_graph_destroy(g[1]));
    CHECK_OK(mtiart_event_destroy(e1));
    CHECK_OK(mtiart_event_destroy(e2));
    CHECK_OK(mtiart_free(m));
    CHECK_OK(mtiart_free(flags));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ conditionals */

/* A Jacobi-like iteration of x = (b + x) / 2 on a vector, with its residual:
 * args: x (inout double[n]), b (in), residual (out double), n (value u32). */
static int32_t k_relax(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    double *x = *(double *const *)args[0];
    const double *b = *(const double *const *)args[1];
    double *res = *(double *const *)args[2];
    uint32_t n = *(const uint32_t *)args[3];
    double r = 0;
    for (uint32_t i = 0; i < n; i++) {
        double next = (b[i] + x[i]) * 0.5;
        r += fabs(next - x[i]);
        x[i] = next;
    }
    *res = r;
    return 0;
}

/* flag = residual > tol; iterations += 1. args: flag (out i32), residual (in), tol (value
 * double), iterations (inout i64). */
static int32_t k_check(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int32_t *flag = *(int32_t *const *)args[0];
    const double *res = *(const double *const *)args[1];
    double tol = *(const double *)args[2];
    int64_t *iterations = *(int64_t *const *)args[3];
    *flag = *res > tol;
    *iterations += 1;
    return 0;
}

typedef struct jacobi {
    double *x, *b, *res;
    int32_t *flag;
    int64_t *iterations;
    uint32_t n;
    double tol;
    mtiart_arg relax[4], check[4];
} jacobi;

static void jacobi_args(jacobi *j) {
    j->relax[0] = buf_arg(j->x, j->n * 8);
    j->relax[1] = (mtiart_arg){MTIART_ARG_BUFFER_IN, 0, j->b, j->n * 8};
    j->relax[2] = (mtiart_arg){MTIART_ARG_BUFFER_OUT, 0, j->res, 8};
    j->relax[3] = (mtiart_arg){MTIART_ARG_VALUE, 4, &j->n, 0};
    j->check[0] = (mtiart_arg){MTIART_ARG_BUFFER_OUT, 0, j->flag, 4};
    j->check[1] = (mtiart_arg){MTIART_ARG_BUFFER_IN, 0, j->res, 8};
    j->check[2] = (mtiart_arg){MTIART_ARG_VALUE, 8, &j->tol, 0};
    j->check[3] = buf_arg(j->iterations, 8);
}

static void jacobi_reset(mtiart_stream s, jacobi *j, const double *b) {
    CHECK_OK(mtiart_memset_async(s, j->x, 0, j->n * 8));
    CHECK_OK(mtiart_memcpy_async(s, j->b, b, j->n * 8, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_memset_async(s, j->iterations, 0, 8));
    int32_t one = 1;
    CHECK_OK(mtiart_memcpy(s, j->flag, &one, 4, MTIART_MEMCPY_HOST_TO_DEVICE));
}

static void test_conditional_loop(void) {
    enum { N = 64 };
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    jacobi j = {.n = N, .tol = 1e-9};
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&j.x));
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&j.b));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&j.res));
    CHECK_OK(mtiart_malloc_async(s, 4, (void **)&j.flag));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&j.iterations));
    jacobi_args(&j);
    double b[N];
    for (int i = 0; i < N; i++) b[i] = 1.0 + i * 0.25;
    /* The eager loop, reading the flag on the host after every iteration. */
    jacobi_reset(s, &j, b);
    double eager_x[N];
    int64_t eager_iterations = 0;
    for (int32_t flag = 1; flag;) {
        CHECK_OK(mtiart_launch_kernel(s, k_relax, 1, j.relax, 4));
        CHECK_OK(mtiart_launch_kernel(s, k_check, 1, j.check, 4));
        CHECK_OK(mtiart_memcpy(s, &flag, j.flag, 4, MTIART_MEMCPY_DEVICE_TO_HOST));
        eager_iterations++;
    }
    CHECK_OK(mtiart_memcpy(s, eager_x, j.x, sizeof eager_x, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(eager_iterations > 10 && read_i64(s, j.iterations) == eager_iterations);
    /* The same loop as a WHILE node, built by hand and captured. */
    mtiart_graph body, g;
    size_t relax, check, node;
    CHECK_OK(mtiart_graph_create(0, &body));
    CHECK_OK(mtiart_graph_add_kernel_node(body, NULL, 0, k_relax, 1, j.relax, 4, &relax));
    CHECK_OK(mtiart_graph_add_kernel_node(body, &relax, 1, k_check, 1, j.check, 4, &check));
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_add_conditional_node(g, NULL, 0, MTIART_CONDITIONAL_WHILE, j.flag, 4,
                                               body, &node));
    mtiart_node_info info = node_info(g, node);
    CHECK(info.kind == MTIART_NODE_CONDITIONAL && info.num_buffers == 1);
    CHECK(strcmp(info.name, "conditional WHILE (2 nodes)") == 0);
    char *dot = dot_of(g);
    CHECK(strstr(dot, "subgraph cluster_n0") && strstr(dot, "n0_0 [") && strstr(dot, "n0_1 ["));
    CHECK(strstr(dot, "n0 -> n0_0 [style=dashed]") && strstr(dot, "conditional WHILE"));
    free(dot);
    mtiart_graph captured;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_WHILE, j.flag, 4));
    CHECK_OK(mtiart_launch_kernel(s, k_relax, 1, j.relax, 4));
    CHECK_OK(mtiart_launch_kernel(s, k_check, 1, j.check, 4));
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_stream_end_capture(s, &captured));
    CHECK(node_count(captured) == 1 && node_info(captured, 0).kind == MTIART_NODE_CONDITIONAL);
    mtiart_graph cbody;
    CHECK_OK(mtiart_graph_get_node_body(captured, 0, &cbody));
    CHECK(node_count(cbody) == 2 && edge_count(cbody) == 1);
    CHECK_OK(mtiart_graph_destroy(cbody));
    mtiart_graph graphs[2] = {g, captured};
    for (int k = 0; k < 2; k++) {
        mtiart_graph_exec x = instantiate(graphs[k]);
        for (int r = 0; r < 2; r++) {
            jacobi_reset(s, &j, b);
            CHECK_OK(mtiart_graph_launch(x, s)); /* the whole loop, no host in between */
            CHECK_OK(mtiart_stream_synchronize(s));
            double x_host[N];
            CHECK_OK(mtiart_memcpy(s, x_host, j.x, sizeof x_host, MTIART_MEMCPY_DEVICE_TO_HOST));
            CHECK(memcmp(x_host, eager_x, sizeof x_host) == 0);
            CHECK(read_i64(s, j.iterations) == eager_iterations);
        }
        /* A flag already zero: the body never runs. */
        jacobi_reset(s, &j, b);
        CHECK_OK(mtiart_memset_async(s, j.flag, 0, 4));
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(read_i64(s, j.iterations) == 0);
        CHECK_OK(mtiart_graph_exec_destroy(x));
    }
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(captured));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_free(j.x));
    CHECK_OK(mtiart_free(j.b));
    CHECK_OK(mtiart_free(j.res));
    CHECK_OK(mtiart_free(j.flag));
    CHECK_OK(mtiart_free(j.iterations));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Kernel: flag (i32 args[0]) = (counter args[1] < limit args[2]) */
static int32_t k_below(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    **(int32_t *const *)args[0] = **(int64_t *const *)args[1] < *(const int64_t *)args[2];
    return 0;
}

/* Kernel: fails when the counter (args[0]) reaches args[1]. */
static int32_t k_fail_at(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    if (**(int64_t *const *)args[0] != *(const int64_t *)args[1]) return 0;
    mtiart_kernel_set_error_message("the body gave up");
    return 3;
}

static void test_nested_and_failing_conditionals(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *m;
    int32_t *f;
    CHECK_OK(mtiart_malloc_async(s, 3 * 8, (void **)&m));
    CHECK_OK(mtiart_malloc_async(s, 2 * 4, (void **)&f));
    int64_t *outer = m, *inner = m + 1, *evens = m + 2;
    int32_t *loop = f, *even = f + 1;
    int64_t one = 1, two = 2, three = 3, five = 5, ten = 10;
    int32_t on = 1;
    mtiart_arg inc_outer[2] = {buf_arg(outer, 8), {MTIART_ARG_VALUE, 8, &one, 0}};
    mtiart_arg inc_evens[2] = {buf_arg(evens, 8), {MTIART_ARG_VALUE, 8, &one, 0}};
    mtiart_arg dbl_inner[2] = {buf_arg(inner, 8), {MTIART_ARG_VALUE, 8, &two, 0}};
    mtiart_arg loop_test[3] = {buf_arg(loop, 4), buf_arg(outer, 8), {MTIART_ARG_VALUE, 8, &ten, 0}};
    mtiart_arg even_test[3] = {
        buf_arg(even, 4), buf_arg(outer, 8), {MTIART_ARG_VALUE, 8, &five, 0}};
    mtiart_arg fail_at[2] = {buf_arg(outer, 8), {MTIART_ARG_VALUE, 8, &three, 0}};
    /* WHILE (loop) { outer += 1; even = outer < 5; IF (even) { evens += 1; inner *= 2 };
     * loop = outer < 10 }, after setting loop: evens counts iterations 1..4. */
    mtiart_graph if_body, while_body, g;
    size_t n0, n1, n2, n3;
    CHECK_OK(mtiart_graph_create(0, &if_body));
    CHECK_OK(mtiart_graph_add_kernel_node(if_body, NULL, 0, k_add_i64, 1, inc_evens, 2, &n0));
    CHECK_OK(mtiart_graph_add_kernel_node(if_body, &n0, 1, k_mul_i64, 1, dbl_inner, 2, &n1));
    CHECK_OK(mtiart_graph_create(0, &while_body));
    CHECK_OK(mtiart_graph_add_kernel_node(while_body, NULL, 0, k_add_i64, 1, inc_outer, 2, &n0));
    CHECK_OK(mtiart_graph_add_kernel_node(while_body, &n0, 1, k_below, 1, even_test, 3, &n1));
    CHECK_OK(mtiart_graph_add_conditional_node(while_body, &n1, 1, MTIART_CONDITIONAL_IF, even, 4,
                                               if_body, &n2));
    CHECK_OK(mtiart_graph_add_kernel_node(while_body, &n2, 1, k_below, 1, loop_test, 3, &n3));
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, loop, &on, 4, 1, &n0));
    CHECK_OK(mtiart_graph_add_conditional_node(g, &n0, 1, MTIART_CONDITIONAL_WHILE, loop, 4,
                                               while_body, &n1));
    char *dot = dot_of(g);
    CHECK(strstr(dot, "n1_2_0 [") && strstr(dot, "subgraph cluster_n1_2") &&
          strstr(dot, "conditional IF"));
    free(dot);
    mtiart_graph_exec x = instantiate(g);
    for (int r = 0; r < 3; r++) {
        CHECK_OK(mtiart_memset_async(s, m, 0, 3 * 8));
        write_i64(s, inner, 1);
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(read_i64(s, outer) == 10 && read_i64(s, evens) == 4 && read_i64(s, inner) == 16);
    }
    CHECK_OK(mtiart_graph_exec_destroy(x));
    /* A body that fails stops its loop; the replay reports which node, the stream goes on. */
    mtiart_graph failing, g2;
    CHECK_OK(mtiart_graph_create(0, &failing));
    CHECK_OK(mtiart_graph_add_kernel_node(failing, NULL, 0, k_add_i64, 1, inc_outer, 2, &n0));
    CHECK_OK(mtiart_graph_add_kernel_node(failing, &n0, 1, k_fail_at, 1, fail_at, 2, &n1));
    CHECK_OK(mtiart_graph_add_kernel_node(failing, &n1, 1, k_below, 1, loop_test, 3, &n2));
    CHECK_OK(mtiart_graph_create(0, &g2));
    CHECK_OK(mtiart_graph_add_fill_node(g2, NULL, 0, loop, &on, 4, 1, &n0));
    CHECK_OK(mtiart_graph_add_conditional_node(g2, &n0, 1, MTIART_CONDITIONAL_WHILE, loop, 4,
                                               failing, &n1));
    x = instantiate(g2);
    CHECK_OK(mtiart_memset_async(s, m, 0, 3 * 8));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
    const char *msg = mtiart_last_error_message();
    CHECK(strstr(msg, "graph node 1: WHILE body node 1: kernel") != NULL);
    CHECK(strstr(msg, "the body gave up") != NULL);
    CHECK(read_i64(s, outer) == 3);
    atomic_long counter = 0;
    launch_count(s, &counter);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_graph_destroy(failing));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(if_body));
    CHECK_OK(mtiart_graph_destroy(while_body));
    CHECK_OK(mtiart_free(m));
    CHECK_OK(mtiart_free(f));
    CHECK_OK(mtiart_stream_destroy(s));
}

static mtiart_pool_id capture_pool(mtiart_stream s) {
    mtiart_pool_id pool = {0, 0};
    CHECK_OK(mtiart_stream_get_capture_info(s, NULL, NULL, &pool));
    return pool;
}

static void test_conditional_errors(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    int32_t *flag;
    CHECK_OK(mtiart_malloc_async(s, 16, (void **)&flag));
    CHECK_OK(mtiart_memset_async(s, flag, 0, 16));
    CHECK_OK(mtiart_stream_synchronize(s));
    int32_t host_flag = 0;
    mtiart_event e, outside;
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(0, &outside));
    CHECK_OK(mtiart_event_record(outside, other));
    CHECK_STATUS(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 4),
                 MTIART_ERROR_NOT_CAPTURING);
    CHECK_STATUS(mtiart_stream_end_conditional(s), MTIART_ERROR_NOT_CAPTURING);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool = capture_pool(s);
    CHECK_STATUS(mtiart_stream_end_conditional(s), MTIART_ERROR_NOT_PERMITTED);
    CHECK_STATUS(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 3),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_begin_conditional(s, (mtiart_conditional_type)7, flag, 4),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, (char *)flag + 2, 4),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, &host_flag, 4),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag + 4, 4),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_WHILE, flag, 1));
    CHECK_STATUS(mtiart_event_record_with_flags(e, s, MTIART_EVENT_RECORD_EXTERNAL),
                 MTIART_ERROR_NOT_SUPPORTED);
    CHECK_STATUS(mtiart_stream_wait_event(s, outside), MTIART_ERROR_NOT_SUPPORTED);
    /* A body's events join only the body's own work. */
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_STATUS(mtiart_stream_wait_event(other, e), MTIART_ERROR_CAPTURE_ISOLATION);
    CHECK_OK(mtiart_stream_wait_event(s, e)); /* the same body: fine */
    /* Executables launched in a body: fine without event nodes, refused with. */
    mtiart_graph plain, with_event;
    size_t node;
    CHECK_OK(mtiart_graph_create(0, &plain));
    CHECK_OK(mtiart_graph_add_empty_node(plain, NULL, 0, &node));
    CHECK_OK(mtiart_graph_create(0, &with_event));
    CHECK_OK(mtiart_graph_add_event_record_node(with_event, NULL, 0, outside, &node));
    mtiart_graph_exec px = instantiate(plain), ex = instantiate(with_event);
    CHECK_OK(mtiart_graph_launch(px, s));
    CHECK_STATUS(mtiart_graph_launch(ex, s), MTIART_ERROR_NOT_SUPPORTED);
    CHECK_STATUS(mtiart_stream_destroy(s), MTIART_ERROR_NOT_PERMITTED);
    /* Ending the capture with a body open discards it. */
    mtiart_graph g = NULL;
    CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_UNJOINED);
    CHECK(g == NULL && strstr(mtiart_last_error_message(), "conditional") != NULL);
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.use_count == 0);
    CHECK_STATUS(mtiart_stream_end_conditional(s), MTIART_ERROR_NOT_CAPTURING);
    /* An event recorded outside a body cannot be waited on inside it. */
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 4));
    CHECK_STATUS(mtiart_stream_wait_event(s, e), MTIART_ERROR_CAPTURE_ISOLATION);
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag + 1, 4)); /* nested */
    atomic_long counter = 0;
    launch_count(s, &counter);
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK(node_count(g) == 1);
    mtiart_graph body;
    CHECK_OK(mtiart_graph_get_node_body(g, 0, &body));
    CHECK(node_count(body) == 1 && node_info(body, 0).kind == MTIART_NODE_CONDITIONAL);
    /* Explicit nodes: bodies with event nodes are refused. */
    CHECK_STATUS(mtiart_graph_add_conditional_node(body, NULL, 0, MTIART_CONDITIONAL_IF, flag, 4,
                                                   with_event, &node),
                 MTIART_ERROR_NOT_SUPPORTED);
    CHECK_STATUS(mtiart_graph_add_conditional_node(body, NULL, 0, MTIART_CONDITIONAL_IF, flag, 4,
                                                   (mtiart_graph)(uintptr_t)8, &node),
                 MTIART_ERROR_INVALID_HANDLE);
    CHECK(node_count(body) == 1);
    mtiart_graph_exec x = instantiate(g);
    int32_t ones[2] = {1, 1};
    CHECK_OK(mtiart_memcpy(s, flag, ones, 8, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_exec_destroy(px));
    CHECK_OK(mtiart_graph_exec_destroy(ex));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(plain));
    CHECK_OK(mtiart_graph_destroy(with_event));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(outside));
    CHECK_OK(mtiart_free(flag));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* ------------------------------------------------------------------ threads */

enum { TAG_LOG = 1 << 16 };

typedef struct tag_log {
    atomic_int n;
    atomic_int v[TAG_LOG];
} tag_log;

/* Kernel: appends tag args[1] to the log args[0]. */
static int32_t k_tag(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    tag_log *log = *(tag_log *const *)args[0];
    int i = atomic_fetch_add(&log->n, 1);
    if (i < TAG_LOG) atomic_store(&log->v[i], *(const int *)args[1]);
    return 0;
}

static mtiart_graph tag_graph(tag_log *log, int tag) {
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof log, &log, 0}, {MTIART_ARG_VALUE, 4, &tag, 0}};
    size_t prev = 0, node;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(
            mtiart_graph_add_kernel_node(g, i ? &prev : NULL, i ? 1 : 0, k_tag, 1, a, 2, &node));
        prev = node;
    }
    return g;
}

typedef struct race {
    mtiart_graph_exec x;
    mtiart_graph ga, gb;
    tag_log *log;
    int rounds;
    atomic_int failed;
} race;

static void *race_launcher(void *arg) {
    race *r = arg;
    mtiart_stream s[2];
    for (int i = 0; i < 2; i++)
        if (mtiart_stream_create(0, 0, &s[i])) atomic_store(&r->failed, 1);
    for (int i = 0; i < r->rounds && !atomic_load(&r->failed); i++)
        if (mtiart_graph_launch(r->x, s[i % 2])) atomic_store(&r->failed, 2);
    for (int i = 0; i < 2; i++)
        if (mtiart_stream_synchronize(s[i]) || mtiart_stream_destroy(s[i]))
            atomic_store(&r->failed, 3);
    return NULL;
}

static void *race_updater(void *arg) {
    race *r = arg;
    tag_log *log = r->log;
    int tag = 3;
    mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof log, &log, 0}, {MTIART_ARG_VALUE, 4, &tag, 0}};
    for (int i = 0; i < r->rounds && !atomic_load(&r->failed); i++) {
        mtiart_status st = i % 3 == 2 ? mtiart_graph_exec_kernel_node_set_args(r->x, 1, a, 2)
                                      : mtiart_graph_exec_update(r->x, i % 3 ? r->gb : r->ga, NULL);
        if (st) atomic_store(&r->failed, 4);
        /* set_args changes one node: the next update restores the three. */
        if (i % 3 == 2 && mtiart_graph_exec_update(r->x, r->ga, NULL)) atomic_store(&r->failed, 5);
    }
    return NULL;
}

/* Captures launches of the executable (child nodes of its template) while it is updated. */
static void *race_capturer(void *arg) {
    race *r = arg;
    mtiart_stream s;
    if (mtiart_stream_create(0, 0, &s)) {
        atomic_store(&r->failed, 6);
        return NULL;
    }
    for (int i = 0; i < r->rounds / 8 && !atomic_load(&r->failed); i++) {
        mtiart_graph g;
        mtiart_graph_exec gx;
        size_t count = 0;
        if (mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}) ||
            mtiart_graph_launch(r->x, s) || mtiart_stream_end_capture(s, &g) ||
            mtiart_graph_instantiate(g, &gx) || mtiart_graph_exec_get_node_count(gx, &count) ||
            count != 3 || mtiart_graph_exec_destroy(gx) || mtiart_graph_destroy(g))
            atomic_store(&r->failed, 7);
    }
    if (mtiart_stream_destroy(s)) atomic_store(&r->failed, 8);
    return NULL;
}

/* Launches, updates and captures of one executable from several threads: every replay
 * runs one version of the parameters, whole. */
static void test_update_races(void) {
    tag_log *log = calloc(1, sizeof *log);
    race r = {.log = log, .rounds = getenv("MTIART_STRESS_QUICK") ? 200 : 2000};
    r.ga = tag_graph(log, 1);
    r.gb = tag_graph(log, 2);
    CHECK_OK(mtiart_graph_instantiate(r.ga, &r.x));
    pthread_t th[4];
    pthread_create(&th[0], NULL, race_launcher, &r);
    pthread_create(&th[1], NULL, race_launcher, &r);
    pthread_create(&th[2], NULL, race_updater, &r);
    pthread_create(&th[3], NULL, race_capturer, &r);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&r.failed) == 0);
    int n = atomic_load(&log->n), bad = 0, seen[4] = {0};
    CHECK(n == 3 * 2 * r.rounds);
    for (int i = 0; i + 2 < n && i + 2 < TAG_LOG; i += 3) {
        int a = atomic_load(&log->v[i]), b = atomic_load(&log->v[i + 1]),
            c = atomic_load(&log->v[i + 2]);
        /* a whole version: 1 1 1, 2 2 2, or 1 3 1 / 2 3 2 (node 1's arguments set alone) */
        bad += !(a == c && (a == 1 || a == 2) && (b == a || b == 3));
        seen[b & 3]++;
    }
    CHECK(bad == 0);
    CHECK(seen[1] + seen[2] + seen[3] == n / 3);
    CHECK_OK(mtiart_graph_exec_destroy(r.x));
    CHECK_OK(mtiart_graph_destroy(r.ga));
    CHECK_OK(mtiart_graph_destroy(r.gb));
    free(log);
}

int main(void) {
    CHECK_OK(mtiart_init());
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    g_workers = props.num_workers;
    test_simple_cuda_graphs();
    test_stream_flags();
    test_destroy_joined_stream();
    test_fork_join_edges();
    test_record_nodes_and_timing();
    test_waits_across_graphs();
    test_wait_in_place();
    test_explicit_nodes();
    test_child_graphs();
    test_launch_in_capture();
    test_update();
    test_update_structures();
    test_conditional_loop();
    test_nested_and_failing_conditionals();
    test_conditional_errors();
    test_update_races();
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.allocated_bytes == 0 && st.private_pools == 0);
    TEST_MAIN_END();
}
