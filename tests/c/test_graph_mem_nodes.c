/* CUDA's graph-memory model: memory alloc and free nodes, built by hand and captured with
 * MTIART_CAPTURE_FLAG_MEM_NODES, as NVIDIA's graphMemoryNodes sample uses them (negate the
 * squares of an array: in a stream, in a captured graph, in a hand-built graph, with the
 * result freed outside the graph and in another graph), then what CUDA refuses, and
 * mtiart_graph_clone. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

#define N 100000
#define BYTES (N * sizeof(float))

static float *h_input, *h_square, *h_neg;

/* args: [0] const float *in, [1] float *out, [2] int32 n: out = in * in, block by block */
static int32_t k_square(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *in = *(float *const *)args[0];
    float *out = *(float *const *)args[1];
    int32_t n = *(const int32_t *)args[2];
    for (int32_t i = (int32_t)block; i < n; i += (int32_t)num_blocks) out[i] = in[i] * in[i];
    return 0;
}

/* args: [0] const float *in, [1] float *out, [2] int32 n: out = -in */
static int32_t k_negate(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *in = *(float *const *)args[0];
    float *out = *(float *const *)args[1];
    int32_t n = *(const int32_t *)args[2];
    for (int32_t i = (int32_t)block; i < n; i += (int32_t)num_blocks) out[i] = -in[i];
    return 0;
}

/* args: [0] const float *neg_square, [1] const float *input (reference), [2] int32 n,
 * [3] int32 *failures: counts the elements that are not -input^2 */
static int32_t k_validate(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *got = *(float *const *)args[0];
    const float *in = *(float *const *)args[1];
    int32_t n = *(const int32_t *)args[2];
    int32_t *failures = *(int32_t *const *)args[3];
    if (block == 0)
        for (int32_t i = 0; i < n; i++)
            if (fabsf(got[i] + in[i] * in[i]) > 1e-6f) (*failures)++;
    (void)num_blocks;
    return 0;
}

static void launch2(mtiart_stream s, mtiart_kernel_fn k, const float *in, float *out) {
    int32_t n = N;
    mtiart_arg args[3] = {{MTIART_ARG_BUFFER_IN, 0, in, BYTES},
                          {MTIART_ARG_BUFFER_OUT, 0, out, BYTES},
                          {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    CHECK_OK(mtiart_launch_kernel(s, k, 4, args, 3));
}

static void reset_outputs(void) {
    for (int i = 0; i < N; i++) h_square[i] = h_neg[i] = 12345.0f;
}

static void validate_host(int line) {
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += h_square[i] != h_input[i] * h_input[i] || h_neg[i] != -h_square[i];
    if (bad) {
        fprintf(stderr, "line %d: %d wrong elements\n", line, bad);
        test_failures++;
    }
    reset_outputs();
}

/* The sample's stream flow: the square copied back on a second stream while the first
 * frees the input, allocates the result and negates; the square freed on the second
 * stream (mtiart_free_async: ordered after that stream's copy). With d_neg_out, the result
 * is not freed but handed back. With `forked`, the second stream is handed back instead
 * of destroyed (a stream that took part in a capture is destroyed after the capture). */
static void negate_squares_in_stream(mtiart_stream s1, float **d_neg_out, mtiart_stream *forked) {
    float *d_input, *d_square, *d_neg;
    mtiart_stream s2;
    mtiart_event square_done, negate_done, square_freed;
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    CHECK_OK(mtiart_event_create(0, &square_done));
    CHECK_OK(mtiart_event_create(0, &negate_done));
    CHECK_OK(mtiart_event_create(0, &square_freed));
    CHECK_OK(mtiart_malloc_async(s1, BYTES, (void **)&d_input));
    CHECK_OK(mtiart_malloc_async(s1, BYTES, (void **)&d_square));
    CHECK_OK(mtiart_memcpy_async(s1, d_input, h_input, BYTES, MTIART_MEMCPY_HOST_TO_DEVICE));
    launch2(s1, k_square, d_input, d_square);
    CHECK_OK(mtiart_event_record(square_done, s1));
    CHECK_OK(mtiart_stream_wait_event(s2, square_done));
    CHECK_OK(mtiart_memcpy_async(s2, h_square, d_square, BYTES, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK_OK(mtiart_free_async(d_input, s1));
    CHECK_OK(mtiart_malloc_async(s1, BYTES, (void **)&d_neg));
    launch2(s1, k_negate, d_square, d_neg);
    CHECK_OK(mtiart_event_record(negate_done, s1));
    CHECK_OK(mtiart_memcpy_async(s1, h_neg, d_neg, BYTES, MTIART_MEMCPY_DEVICE_TO_HOST));
    if (d_neg_out) *d_neg_out = d_neg;
    else CHECK_OK(mtiart_free_async(d_neg, s1));
    CHECK_OK(mtiart_stream_wait_event(s2, negate_done));
    CHECK_OK(mtiart_free_async(d_square, s2));
    CHECK_OK(mtiart_event_record(square_freed, s2));
    CHECK_OK(mtiart_stream_wait_event(s1, square_freed));
    CHECK_OK(mtiart_event_destroy(square_done));
    CHECK_OK(mtiart_event_destroy(negate_done));
    CHECK_OK(mtiart_event_destroy(square_freed));
    if (forked) *forked = s2;
    else CHECK_OK(mtiart_stream_destroy(s2));
}

/* args: [0] const float *in, [1] float *out, [2] int32 n: out = in */
static int32_t k_copy(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *in = *(float *const *)args[0];
    float *out = *(float *const *)args[1];
    int32_t n = *(const int32_t *)args[2];
    for (int32_t i = (int32_t)block; i < n; i += (int32_t)num_blocks) out[i] = in[i];
    return 0;
}

static void kernel_node(mtiart_graph g, size_t dep, mtiart_kernel_fn k, const float *in, float *out,
                        size_t *node) {
    static int32_t n = N;
    mtiart_arg args[3] = {{MTIART_ARG_BUFFER_IN, 0, in, BYTES},
                          {MTIART_ARG_BUFFER_OUT, 0, out, BYTES},
                          {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    CHECK_OK(mtiart_graph_add_kernel_node(g, &dep, 1, k, 4, args, 3, node));
}

/* The sample's explicit graph: alloc input, alloc square, copy in, square, (copy square
 * out,) free input, alloc result, negate, free square, copy result out, free result
 * (unless d_neg_out). Copies to and from the host are kernels between device buffers of
 * the program's here (d_in, d_out): explicit copy nodes are not part of this API. */
static mtiart_graph_exec negate_squares_graph(const float *d_in, float *d_out, float **d_neg_out) {
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    float *d_input, *d_square, *d_neg;
    size_t a_in, a_sq, cp_in, sq, f_in, a_neg, neg, f_sq, cp_out, f_neg;
    CHECK_OK(mtiart_graph_add_mem_alloc_node(g, NULL, 0, BYTES, &a_in, (void **)&d_input));
    CHECK_OK(mtiart_graph_add_mem_alloc_node(g, &a_in, 1, BYTES, &a_sq, (void **)&d_square));
    CHECK(d_input && d_square && d_input != d_square);
    /* Graph allocations are no live allocations between launches. */
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_STATUS(mtiart_memset_async(def, d_input, 0, 4), MTIART_ERROR_INVALID_POINTER);
    CHECK(block_at(d_input).state == MTIART_BLOCK_GRAPH_ALLOCATION);
    kernel_node(g, a_sq, k_copy, d_in, d_input, &cp_in);
    kernel_node(g, cp_in, k_square, d_input, d_square, &sq);
    CHECK_OK(mtiart_graph_add_mem_free_node(g, &sq, 1, d_input, &f_in));
    CHECK_OK(mtiart_graph_add_mem_alloc_node(g, &f_in, 1, BYTES, &a_neg, (void **)&d_neg));
    kernel_node(g, a_neg, k_negate, d_square, d_neg, &neg);
    CHECK_OK(mtiart_graph_add_mem_free_node(g, &neg, 1, d_square, &f_sq));
    kernel_node(g, neg, k_copy, d_neg, d_out, &cp_out);
    if (d_neg_out) *d_neg_out = d_neg;
    else CHECK_OK(mtiart_graph_add_mem_free_node(g, &cp_out, 1, d_neg, &f_neg));
    mtiart_node_info info;
    CHECK_OK(mtiart_graph_get_node_info(g, a_in, &info));
    CHECK(info.kind == MTIART_NODE_MEM_ALLOC && !strcmp(info.name, "mem alloc"));
    CHECK_OK(mtiart_graph_get_node_info(g, f_in, &info));
    CHECK(info.kind == MTIART_NODE_MEM_FREE && !strcmp(info.name, "mem free"));
    char dot[8192];
    size_t len;
    CHECK_OK(mtiart_graph_to_dot(g, dot, sizeof dot, &len));
    CHECK(strstr(dot, "mem alloc") && strstr(dot, "mem free"));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g)); /* the executable keeps the allocations */
    return x;
}

static void download_result(mtiart_stream s, const float *d_out) {
    CHECK_OK(mtiart_memcpy(s, h_neg, d_out, BYTES, MTIART_MEMCPY_DEVICE_TO_HOST));
    for (int i = 0; i < N; i++) h_square[i] = -h_neg[i];
    validate_host(__LINE__);
}

/* validate on the device, after the graph, in stream order */
static void validate_device(mtiart_stream s, const float *d_neg, float *d_ref, int32_t *d_fail) {
    int32_t n = N;
    mtiart_arg args[4] = {{MTIART_ARG_BUFFER_IN, 0, d_neg, BYTES},
                          {MTIART_ARG_BUFFER_IN, 0, d_ref, BYTES},
                          {MTIART_ARG_VALUE, sizeof n, &n, 0},
                          {MTIART_ARG_BUFFER_INOUT, 0, d_fail, sizeof(int32_t)}};
    CHECK_OK(mtiart_launch_kernel(s, k_validate, 1, args, 4));
}

static void expect_no_failures(mtiart_stream s, int32_t *d_fail, int line) {
    int32_t failures = -1, zero = 0;
    CHECK_OK(mtiart_memcpy(s, &failures, d_fail, sizeof failures, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK_OK(mtiart_memcpy(s, d_fail, &zero, sizeof zero, MTIART_MEMCPY_HOST_TO_DEVICE));
    if (failures) {
        fprintf(stderr, "line %d: %d elements failed validation on the device\n", line, failures);
        test_failures++;
    }
}

static uint64_t graph_alloc_bytes(void) {
    uint64_t v;
    CHECK_OK(mtiart_memory_get_stat(0, MTIART_STAT_GRAPH_ALLOC_BYTES, &v));
    return v;
}

static void test_sample(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    float *d_ref;
    int32_t *d_fail;
    CHECK_OK(mtiart_malloc_async(s, BYTES, (void **)&d_ref));
    CHECK_OK(mtiart_malloc_async(s, sizeof *d_fail, (void **)&d_fail));
    CHECK_OK(mtiart_memcpy(s, d_ref, h_input, BYTES, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_memset_async(s, d_fail, 0, sizeof *d_fail));

    /* 1. in a stream */
    negate_squares_in_stream(s, NULL, NULL);
    CHECK_OK(mtiart_stream_synchronize(s));
    validate_host(__LINE__);

    /* 2. captured, with memory nodes: the same calls make alloc and free nodes */
    mtiart_stream cap;
    CHECK_OK(mtiart_stream_create(0, 0, &cap));
    CHECK_OK(mtiart_stream_begin_capture_with_flags(
        cap, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}, MTIART_CAPTURE_FLAG_MEM_NODES));
    mtiart_stream forked;
    negate_squares_in_stream(cap, NULL, &forked);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(cap, &g));
    CHECK_OK(mtiart_stream_destroy(forked));
    size_t count = 0, allocs = 0, frees = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    for (size_t i = 0; i < count; i++) {
        mtiart_node_info info;
        CHECK_OK(mtiart_graph_get_node_info(g, i, &info));
        allocs += info.kind == MTIART_NODE_MEM_ALLOC;
        frees += info.kind == MTIART_NODE_MEM_FREE;
    }
    CHECK(allocs == 3 && frees == 3);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g));
    for (int r = 0; r < 3; r++) { /* freed in the graph: relaunching is fine */
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        validate_host(__LINE__);
    }
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_stream_destroy(cap));

    /* 3. built by hand */
    float *d_out;
    CHECK_OK(mtiart_malloc_async(s, BYTES, (void **)&d_out));
    x = negate_squares_graph(d_ref, d_out, NULL);
    for (int r = 0; r < 2; r++) {
        CHECK_OK(mtiart_graph_launch(x, s));
        download_result(s, d_out);
    }
    CHECK_OK(mtiart_graph_exec_destroy(x));

    /* 4. the result outlives the graph's launch: freed outside it, synchronously... */
    float *d_neg;
    x = negate_squares_graph(d_ref, d_out, &d_neg);
    CHECK(block_at(d_neg).state == MTIART_BLOCK_GRAPH_ALLOCATION);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK(block_at(d_neg).state == MTIART_BLOCK_ACTIVE);
    validate_device(s, d_neg, d_ref, d_fail);
    CHECK_OK(mtiart_stream_synchronize(s));
    expect_no_failures(s, d_fail, __LINE__);
    CHECK_OK(mtiart_free(d_neg));
    CHECK(block_at(d_neg).state == MTIART_BLOCK_GRAPH_ALLOCATION);
    /* ... and stream-ordered: the relaunch gives the same address back */
    CHECK_OK(mtiart_graph_launch(x, s));
    validate_device(s, d_neg, d_ref, d_fail);
    CHECK_OK(mtiart_free_async(d_neg, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    expect_no_failures(s, d_fail, __LINE__);

    /* 5. freed by another graph (a graph of one free node) */
    mtiart_graph fg;
    mtiart_graph_exec free_x;
    size_t fnode;
    CHECK_OK(mtiart_graph_create(0, &fg));
    CHECK_OK(mtiart_graph_add_mem_free_node(fg, NULL, 0, d_neg, &fnode));
    CHECK_OK(mtiart_graph_instantiate(fg, &free_x));
    CHECK_OK(mtiart_graph_destroy(fg));
    CHECK_STATUS(mtiart_graph_launch(free_x, s), MTIART_ERROR_NOT_PERMITTED); /* not live */
    CHECK(strstr(mtiart_last_error_message(), "which is not live"));
    CHECK_OK(mtiart_graph_launch(x, s));
    validate_device(s, d_neg, d_ref, d_fail);
    CHECK_OK(mtiart_graph_launch(free_x, s));
    CHECK(block_at(d_neg).state == MTIART_BLOCK_GRAPH_ALLOCATION);
    CHECK_OK(mtiart_stream_synchronize(s));
    expect_no_failures(s, d_fail, __LINE__);

    /* A relaunch while the allocation is live is refused, clearly, and leaves it alone. */
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_STATUS(mtiart_graph_launch(x, s), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "was not freed since"));
    CHECK(block_at(d_neg).state == MTIART_BLOCK_ACTIVE);
    validate_device(s, d_neg, d_ref, d_fail);
    CHECK_OK(mtiart_stream_synchronize(s));
    expect_no_failures(s, d_fail, __LINE__);
    CHECK(graph_alloc_bytes() >= 3 * BYTES);
    /* Destroying the executables while the allocation is live: it stays the program's. */
    CHECK_OK(mtiart_graph_exec_destroy(free_x));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK(graph_alloc_bytes() == 0);
    CHECK(block_at(d_neg).state == MTIART_BLOCK_ACTIVE);
    validate_device(s, d_neg, d_ref, d_fail);
    CHECK_OK(mtiart_stream_synchronize(s));
    expect_no_failures(s, d_fail, __LINE__);
    CHECK_OK(mtiart_free(d_neg));
    CHECK_OK(mtiart_free(d_out));
    CHECK_OK(mtiart_free(d_ref));
    CHECK_OK(mtiart_free(d_fail));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH: each launch frees the previous one's live
 * allocation first. */
static void test_auto_free(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t node;
    int64_t *p;
    CHECK_OK(mtiart_graph_add_mem_alloc_node(g, NULL, 0, 64, &node, (void **)&p));
    int64_t seven = 7;
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, p, 8},
                          {MTIART_ARG_VALUE, sizeof seven, &seven, 0}};
    size_t k;
    CHECK_OK(mtiart_graph_add_kernel_node(g, &node, 1, k_add_i64, 1, args, 2, &k));
    mtiart_graph_exec x;
    CHECK_OK(
        mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH, &x));
    uint64_t allocated_before;
    CHECK_OK(mtiart_memory_get_stat(0, MTIART_STAT_ALLOCATED_BYTES, &allocated_before));
    for (int r = 0; r < 4; r++) CHECK_OK(mtiart_graph_launch(x, s));
    uint64_t allocated;
    CHECK_OK(mtiart_memory_get_stat(0, MTIART_STAT_ALLOCATED_BYTES, &allocated));
    CHECK(allocated == allocated_before + 512); /* one live allocation, not four */
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_free(p));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(s));
}

static void test_refusals(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t node, node2;
    void *p, *q;
    CHECK_STATUS(mtiart_graph_add_mem_alloc_node(g, NULL, 0, 0, &node, &p),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_mem_alloc_node(g, NULL, 0, 16, &node, NULL),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_mem_alloc_node(g, NULL, 0, 1ull << 60, &node, &p),
                 MTIART_ERROR_OUT_OF_MEMORY);
    CHECK_OK(mtiart_graph_add_mem_alloc_node(g, NULL, 0, 16, &node, &p));
    CHECK_OK(mtiart_malloc_async(s, 16, &q));
    CHECK_STATUS(mtiart_graph_add_mem_free_node(g, &node, 1, q, &node2),
                 MTIART_ERROR_INVALID_VALUE); /* not a graph allocation */
    CHECK_STATUS(mtiart_graph_add_mem_free_node(g, &node, 1, (char *)p + 1, &node2),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_add_mem_free_node(g, &node, 1, p, &node2));
    CHECK_STATUS(mtiart_graph_add_mem_free_node(g, &node2, 1, p, &node2),
                 MTIART_ERROR_INVALID_VALUE); /* freed once only */
    CHECK(strstr(mtiart_last_error_message(), "freed already, by node 1"));
    mtiart_graph clone;
    CHECK_STATUS(mtiart_graph_clone(g, &clone), MTIART_ERROR_NOT_SUPPORTED);
    /* Between launches the allocation is nobody's: neither eager work nor a free takes it. */
    CHECK_STATUS(mtiart_memset_async(s, p, 0, 16), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_free(p), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_free_async(p, s), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_record_stream(p, s), MTIART_ERROR_INVALID_POINTER);
    /* Captures: unknown flags; frees of other memory in a memory-node capture. */
    CHECK_STATUS(mtiart_stream_begin_capture_with_flags(s, MTIART_CAPTURE_MODE_GLOBAL,
                                                        (mtiart_pool_id){0, 0}, 1ull << 33),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_stream_begin_capture_with_flags(
        s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}, MTIART_CAPTURE_FLAG_MEM_NODES));
    CHECK_STATUS(mtiart_free_async(q, s), MTIART_ERROR_NOT_SUPPORTED);
    CHECK(block_at(q).state == MTIART_BLOCK_ACTIVE);
    void *r;
    CHECK_OK(mtiart_malloc_async(s, 32, &r));
    CHECK(block_at(r).state == MTIART_BLOCK_GRAPH_ALLOCATION);
    CHECK_OK(mtiart_memset_async(s, r, 1, 32));
    CHECK_OK(mtiart_free(r)); /* mtiart_free: a free node on the stream that allocated it */
    CHECK_STATUS(mtiart_free(r), MTIART_ERROR_INVALID_VALUE);
    mtiart_graph cg;
    CHECK_OK(mtiart_stream_end_capture(s, &cg));
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(cg, &count));
    CHECK(count == 3);
    CHECK_OK(mtiart_graph_destroy(cg));
    CHECK_OK(mtiart_free(q));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(graph_alloc_bytes() == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A clone is a graph of its own: same nodes, its own holds, unaffected by later changes. */
static void test_clone(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&x));
    CHECK_OK(mtiart_memset_async(s, x, 0, 8));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(launch_add_i64(s, x, 5));
    CHECK_OK(launch_mul_i64(s, x, 2));
    mtiart_graph g, c;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_graph_clone(g, &c));
    CHECK_STATUS(mtiart_graph_clone(g, NULL), MTIART_ERROR_INVALID_VALUE);
    size_t node, n_g, n_c, e_g, e_c;
    CHECK_OK(mtiart_graph_add_empty_node(g, NULL, 0, &node));
    CHECK_OK(mtiart_graph_get_node_count(g, &n_g));
    CHECK_OK(mtiart_graph_get_node_count(c, &n_c));
    CHECK(n_g == 3 && n_c == 2);
    CHECK_OK(mtiart_graph_get_edge_count(g, &e_g));
    CHECK_OK(mtiart_graph_get_edge_count(c, &e_c));
    CHECK(e_g == 1 && e_c == 1);
    mtiart_pool_id pg, pc;
    CHECK_OK(mtiart_graph_get_pool(g, &pg));
    CHECK_OK(mtiart_graph_get_pool(c, &pc));
    CHECK(pg.first == pc.first && pg.second == pc.second);
    mtiart_node_info info;
    CHECK_OK(mtiart_graph_get_node_info(c, 1, &info));
    CHECK(info.kind == MTIART_NODE_KERNEL && info.num_buffers == 1 && info.num_dependencies == 1);
    CHECK_OK(mtiart_free(x)); /* both graphs hold it */
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK(block_at(x).state == MTIART_BLOCK_GRAPH_HELD);
    mtiart_graph_exec e;
    CHECK_OK(mtiart_graph_instantiate(c, &e));
    CHECK_OK(mtiart_graph_destroy(c));
    CHECK_OK(mtiart_graph_launch(e, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(e));
    CHECK(block_at(x).state != MTIART_BLOCK_GRAPH_HELD);
    CHECK_OK(mtiart_stream_destroy(s));
}

int main(void) {
    CHECK_OK(mtiart_init());
    h_input = malloc(BYTES);
    h_square = malloc(BYTES);
    h_neg = malloc(BYTES);
    srand(7);
    for (int i = 0; i < N; i++) h_input[i] = (float)rand() / (float)RAND_MAX;
    reset_outputs();
    test_sample();
    test_auto_free();
    test_refusals();
    test_clone();
    free(h_input);
    free(h_square);
    free(h_neg);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.allocated_bytes == 0 && st.active_blocks == 0 && st.private_pools == 0);
    TEST_MAIN_END();
}
