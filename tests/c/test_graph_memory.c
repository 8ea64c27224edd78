/* The device memory graphs use: what a graph, a capture and an executable hold (blocks
 * outside their pool stay theirs after the program frees them, so replays never write into
 * memory handed out again), how the statistics and snapshots account for it, the launch's
 * input check, freeing on a stream, and pool ids. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

#define MiB (1ull << 20)

static uint64_t stat(mtiart_memory_stat key) {
    uint64_t v = 0;
    CHECK_OK(mtiart_memory_get_stat(0, key, &v));
    return v;
}

static mtiart_pool_id capture_pool(mtiart_stream s) {
    mtiart_pool_id pool;
    CHECK_OK(mtiart_stream_get_capture_info(s, NULL, NULL, &pool));
    return pool;
}

static void begin(mtiart_stream s, mtiart_pool_id pool) {
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, pool));
}

static int64_t read_i64(mtiart_stream s, const int64_t *dev) {
    int64_t v = -1;
    CHECK_OK(mtiart_memcpy(s, &v, dev, sizeof v, MTIART_MEMCPY_DEVICE_TO_HOST));
    return v;
}

static void write_i64(mtiart_stream s, int64_t *dev, int64_t v) {
    CHECK_OK(mtiart_memcpy(s, dev, &v, sizeof v, MTIART_MEMCPY_HOST_TO_DEVICE));
}

/* Every statistic the struct has, through the keyed getter; the names; bad keys. */
static void test_stat_keys(void) {
    void *p;
    CHECK_OK(mtiart_malloc(0, 3000, &p));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    const uint64_t *fields = (const uint64_t *)&st;
    size_t n = sizeof st / sizeof(uint64_t);
    for (size_t k = 0; k < n; k++) {
        uint64_t v;
        CHECK_OK(mtiart_memory_get_stat(0, (mtiart_memory_stat)k, &v));
        CHECK(v == fields[k]);
        CHECK(mtiart_memory_stat_name((mtiart_memory_stat)k) != NULL);
    }
    CHECK(!strcmp(mtiart_memory_stat_name(MTIART_STAT_ALLOCATED_BYTES), "allocated_bytes"));
    CHECK(!strcmp(mtiart_memory_stat_name(MTIART_STAT_PRIVATE_POOLS), "private_pools"));
    CHECK(!strcmp(mtiart_memory_stat_name(MTIART_STAT_GRAPH_HELD_BYTES), "graph_held_bytes"));
    int count = 0;
    while (mtiart_memory_stat_name((mtiart_memory_stat)count)) count++;
    CHECK(count > MTIART_STAT_GRAPH_HELD_BLOCKS);
    CHECK(mtiart_memory_stat_name((mtiart_memory_stat)-1) == NULL);
    uint64_t v = 77;
    CHECK_STATUS(mtiart_memory_get_stat(0, (mtiart_memory_stat)count, &v),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(v == 77);
    CHECK_STATUS(mtiart_memory_get_stat(0, MTIART_STAT_GRAPH_HELD_BYTES, NULL),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_memory_get_stat(99, MTIART_STAT_GRAPH_HELD_BYTES, &v),
                 MTIART_ERROR_INVALID_DEVICE);
    CHECK_OK(mtiart_free(p));
}

/* PyTorch's reset/recapture pattern: a tensor made in g1's capture, g1 destroyed, the
 * tensor read by g2's capture and freed inside it. g2 holds it (it lies in g1's pool, not
 * g2's), so its memory stays mapped and unused by anyone else while g2 replays. */
static void test_reset_recapture(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    begin(s, (mtiart_pool_id){0, 0});
    mtiart_pool_id p1 = capture_pool(s);
    int64_t *b;
    CHECK_OK(mtiart_malloc_async(s, 3 * MiB, (void **)&b)); /* a segment of its own */
    CHECK_OK(mtiart_memset_async(s, b, 0, sizeof *b));
    CHECK_OK(launch_add_i64(s, b, 2000));
    mtiart_graph g1;
    CHECK_OK(mtiart_stream_end_capture(s, &g1));
    mtiart_graph_exec x1;
    CHECK_OK(mtiart_graph_instantiate(g1, &x1));
    CHECK_OK(mtiart_graph_launch(x1, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, b) == 2000);
    CHECK_OK(mtiart_graph_exec_destroy(x1));
    CHECK_OK(mtiart_graph_destroy(g1));

    begin(s, (mtiart_pool_id){0, 0});
    mtiart_pool_id p2 = capture_pool(s);
    CHECK(p2.first != p1.first);
    int64_t *c;
    CHECK_OK(mtiart_malloc_async(s, sizeof *c, (void **)&c));
    CHECK_OK(mtiart_memcpy_async(s, c, b, sizeof *c, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(launch_mul_i64(s, c, 2));
    uint64_t held_before = stat(MTIART_STAT_GRAPH_HELD_BYTES);
    uint64_t b_size = block_at(b).size;
    CHECK_OK(mtiart_free(b)); /* inside the capture, which holds it */
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == held_before + b_size);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) >= 1);
    CHECK(block_at(b).state == MTIART_BLOCK_GRAPH_HELD);
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    mtiart_graph_exec x2;
    CHECK_OK(mtiart_graph_instantiate(g2, &x2));
    CHECK_OK(mtiart_graph_destroy(g2)); /* the executable holds b too */
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, p1, &info));
    CHECK(info.exists && info.reserved_bytes == 4 * MiB);
    CHECK_OK(mtiart_graph_launch(x2, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, c) == 4000);
    CHECK_OK(mtiart_graph_exec_destroy(x2));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == held_before);
    CHECK_OK(mtiart_free(c));
    CHECK_OK(mtiart_empty_cache(0));
    CHECK_OK(mtiart_pool_get_info(0, p1, &info));
    CHECK(!info.exists);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* What a graph's nodes write, of every kind, into blocks the program freed after the
 * capture: the writes land in the held blocks, never in the allocations made since. */
typedef enum { W_KERNEL, W_COPY_D2D, W_COPY_H2D, W_FILL, W_KINDS } write_kind;

static void test_freed_outputs_stay_held(void) {
    for (int kind = 0; kind < W_KINDS; kind++) {
        mtiart_stream s;
        CHECK_OK(mtiart_stream_create(0, 0, &s));
        int64_t *out, *src;
        CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&out));
        CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&src));
        write_i64(s, out, 0);
        write_i64(s, src, 5);
        static int64_t host_value = 9;
        begin(s, (mtiart_pool_id){0, 0});
        switch (kind) {
        case W_KERNEL: CHECK_OK(launch_add_i64(s, out, 1)); break;
        case W_COPY_D2D:
            CHECK_OK(mtiart_memcpy_async(s, out, src, 4096, MTIART_MEMCPY_DEVICE_TO_DEVICE));
            break;
        case W_COPY_H2D:
            CHECK_OK(mtiart_memcpy_async(s, out, &host_value, sizeof host_value,
                                         MTIART_MEMCPY_HOST_TO_DEVICE));
            break;
        default: {
            uint32_t pattern = 0x01010101u;
            CHECK_OK(mtiart_fill_async(s, out, &pattern, 4, 1024));
            break;
        }
        }
        mtiart_graph g;
        CHECK_OK(mtiart_stream_end_capture(s, &g));
        mtiart_graph_exec x;
        CHECK_OK(mtiart_graph_instantiate(g, &x));
        CHECK_OK(mtiart_free(out));
        CHECK_OK(mtiart_free(src));
        CHECK_OK(mtiart_empty_cache(0));
        /* Allocations made since would reuse the freed memory first, were it not held. */
        int64_t *fresh[4];
        for (int i = 0; i < 4; i++) {
            CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&fresh[i]));
            CHECK((void *)fresh[i] != (void *)out);
            CHECK(kind != W_COPY_D2D || (void *)fresh[i] != (void *)src);
            CHECK_OK(mtiart_memset_async(s, fresh[i], 0x5a, 4096));
        }
        for (int r = 0; r < 5; r++) CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        for (int i = 0; i < 4; i++) {
            unsigned char host[4096];
            CHECK_OK(mtiart_memcpy(s, host, fresh[i], sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
            int intact = 1;
            for (size_t k = 0; k < sizeof host; k++) intact &= host[k] == 0x5a;
            CHECK(intact);
            CHECK_OK(mtiart_free(fresh[i]));
        }
        CHECK_OK(mtiart_graph_exec_destroy(x));
        CHECK(block_at(out).state == MTIART_BLOCK_GRAPH_HELD); /* the graph still holds it */
        CHECK_OK(mtiart_graph_destroy(g));
        CHECK(block_at(out).state != MTIART_BLOCK_GRAPH_HELD);
        CHECK(block_at(out).state != MTIART_BLOCK_ACTIVE);
        CHECK_OK(mtiart_stream_destroy(s));
    }
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
}

/* A hand-built graph holds the buffers of its kernel nodes too. */
static void test_explicit_graph_holds(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(s, sizeof *x, (void **)&x));
    write_i64(s, x, 1);
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    int64_t three = 3;
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, x, sizeof *x},
                          {MTIART_ARG_VALUE, sizeof three, &three, 0}};
    size_t node;
    for (int i = 0; i < 100; i++) /* one hold, however many nodes use it */
        CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_add_i64, 1, args, 2, &node));
    CHECK_OK(mtiart_free(x));
    CHECK(block_at(x).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 512);
    /* The program's handle on it is gone: nothing else may use or free it. */
    CHECK_STATUS(mtiart_free(x), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(launch_add_i64(s, x, 1), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, NULL, 0, k_add_i64, 1, args, 2, &node),
                 MTIART_ERROR_INVALID_POINTER);
    mtiart_graph_exec e;
    CHECK_OK(mtiart_graph_instantiate(g, &e));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_launch(e, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(e));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Blocks of the graph's own pool are not held: a capture's output freed after the capture
 * is cached in the pool, where a later capture sharing the pool may reuse it. */
static void test_own_pool_not_held(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_pool_id pool;
    CHECK_OK(mtiart_pool_handle_create(&pool));
    begin(s, pool);
    int64_t *out;
    CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&out));
    CHECK_OK(mtiart_memset_async(s, out, 0, 4096));
    mtiart_graph g1;
    CHECK_OK(mtiart_stream_end_capture(s, &g1));
    CHECK_OK(mtiart_free(out));
    CHECK(block_at(out).state == MTIART_BLOCK_FREE);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
    begin(s, pool);
    int64_t *again;
    CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&again));
    CHECK(again == out); /* the pool's memory, shared as in PyTorch */
    CHECK_OK(mtiart_memset_async(s, again, 0, 4096));
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    CHECK_OK(mtiart_free(again));
    CHECK_OK(mtiart_graph_destroy(g1));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A failed capture drops what it held. */
static void test_invalidated_capture_releases(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(s, sizeof *x, (void **)&x));
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_OK(launch_add_i64(s, x, 1));
    CHECK_OK(mtiart_free(x));
    CHECK(block_at(x).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    mtiart_graph g;
    CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
    CHECK(block_at(x).state != MTIART_BLOCK_GRAPH_HELD);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ input check */

static mtiart_graph_exec instantiate_checked(mtiart_graph g) {
    mtiart_graph_exec x;
    CHECK_OK(
        mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS, &x));
    return x;
}

static void expect_dead_input(mtiart_graph_exec x, mtiart_stream s, const void *addr,
                              const char *node_text, const char *extra) {
    CHECK_STATUS(mtiart_graph_launch(x, s), MTIART_ERROR_INVALID_POINTER);
    const char *msg = mtiart_last_error_message();
    char where[64];
    snprintf(where, sizeof where, "0x%llx", (unsigned long long)(uintptr_t)addr);
    if (!strstr(msg, "mtiart_graph_launch: input check: ") || !strstr(msg, node_text) ||
        !strstr(msg, where) || (extra && !strstr(msg, extra))) {
        fprintf(stderr, "unexpected message: %s\n", msg);
        test_failures++;
    }
}

static int32_t k_copy_i64(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    **(int64_t *const *)args[0] = **(int64_t *const *)args[1];
    return 0;
}

/* Inputs of every node kind: a kernel's read, a copy's source; a freed input fails the
 * launch before any node ran, naming node and buffer. Freed outputs are no error. */
static void test_input_check(void) {
    mtiart_kernel_set_name(k_copy_i64, "copy_i64");
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *in, *mid, *out, *side;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&in));
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&side));
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&out));
    write_i64(s, in, 7);
    write_i64(s, side, 1);
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&mid)); /* produced by the graph */
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_OUT, 0, mid, 8}, {MTIART_ARG_BUFFER_IN, 0, in, 8}};
    CHECK_OK(mtiart_launch_kernel(s, k_copy_i64, 1, args, 2));                      /* node 0 */
    CHECK_OK(launch_add_i64(s, mid, 1));                                            /* node 1 */
    CHECK_OK(mtiart_memcpy_async(s, out, side, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE)); /* 2 */
    CHECK_OK(launch_add_i64(s, out, 0));                                            /* 3 */
    CHECK_OK(mtiart_memcpy_async(s, out, mid, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));  /* 4 */
    CHECK_OK(mtiart_free(mid));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec checked = instantiate_checked(g), plain;
    CHECK_OK(mtiart_graph_instantiate(g, &plain));
    CHECK_OK(mtiart_graph_launch(checked, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, out) == 8);

    /* The output dropped: harmless. */
    CHECK_OK(mtiart_free(out));
    CHECK_OK(mtiart_graph_launch(checked, s));
    CHECK_OK(mtiart_stream_synchronize(s));

    /* The copy's source freed: node 2 fails the check (the first reader). */
    CHECK_OK(mtiart_free(side));
    expect_dead_input(checked, s, side, "graph node 2 (memcpy DtoD)", "freed after");
    /* Without the check the replay runs, on memory still held: no crash, no harm. */
    CHECK_OK(mtiart_graph_launch(plain, s));
    CHECK_OK(mtiart_stream_synchronize(s));

    /* The kernel's input freed too: the first node reading a dead input is named. */
    atomic_long ran = 0;
    launch_count(s, &ran);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_free(in));
    expect_dead_input(checked, s, in, "graph node 0 (copy_i64)", NULL);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(checked));
    CHECK_OK(mtiart_graph_exec_destroy(plain));
    CHECK_OK(mtiart_graph_destroy(g));

    /* Unknown flags are refused; a graph without inputs passes the check. */
    mtiart_graph empty;
    CHECK_OK(mtiart_graph_create(0, &empty));
    mtiart_graph_exec x;
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(empty, 1ull << 40, &x),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "unknown instantiate flags 0x10000000000"));
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(empty, 0, NULL), MTIART_ERROR_INVALID_VALUE);
    x = instantiate_checked(empty);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(empty));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A block of a shared pool freed after the capture and handed to a later capture of the
 * same pool: an input the check finds reused. */
static void test_input_check_reused(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_pool_id pool;
    CHECK_OK(mtiart_pool_handle_create(&pool));
    begin(s, pool);
    int64_t *t;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&t));
    CHECK_OK(mtiart_memset_async(s, t, 0, 64));
    mtiart_graph g1;
    CHECK_OK(mtiart_stream_end_capture(s, &g1));
    begin(s, pool);
    int64_t *u;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&u));
    CHECK_OK(mtiart_memcpy_async(s, u, t, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE)); /* reads g1's t */
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    mtiart_graph_exec x2 = instantiate_checked(g2);
    CHECK_OK(mtiart_graph_launch(x2, s));
    CHECK_OK(mtiart_free(t)); /* t lies in g2's own pool: not held */
    begin(s, pool);
    int64_t *w;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&w));
    CHECK(w == t);
    CHECK_OK(mtiart_memset_async(s, w, 0, 64));
    mtiart_graph g3;
    CHECK_OK(mtiart_stream_end_capture(s, &g3));
    expect_dead_input(x2, s, t, "graph node 0 (memcpy DtoD)", "belongs to another allocation");
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_free(u));
    CHECK_OK(mtiart_free(w));
    CHECK_OK(mtiart_graph_exec_destroy(x2));
    CHECK_OK(mtiart_graph_destroy(g1));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_graph_destroy(g3));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ threads */

/* ------------------------------------------------------------------ graphs with structure */

/* A graph of one kernel node adding 1 to *x. */
static mtiart_graph add_one_graph(int64_t *x) {
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    int64_t one = 1;
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, x, sizeof *x},
                          {MTIART_ARG_VALUE, sizeof one, &one, 0}};
    size_t node;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_add_i64, 1, args, 2, &node));
    return g;
}

static void launch_sync_destroy(mtiart_graph g, mtiart_stream s) {
    mtiart_graph_exec e;
    CHECK_OK(mtiart_graph_instantiate(g, &e));
    CHECK_OK(mtiart_graph_launch(e, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(e));
}

/* Child graphs, conditional bodies, executables launched into a capture, bodies taken out
 * again and clones: whatever runs a body holds the memory the body uses, after the body's
 * own graph is gone. */
static void test_bodies_hold_memory(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    uint64_t held0 = stat(MTIART_STAT_GRAPH_HELD_BLOCKS);
    int64_t *x, *z;
    int32_t *flag;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&x));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&z));
    CHECK_OK(mtiart_malloc_async(s, 4, (void **)&flag));
    write_i64(s, x, 0);
    write_i64(s, z, 0);
    CHECK_OK(mtiart_memset_async(s, flag, 0, 4));

    /* A child graph and a conditional body (with its condition) */
    mtiart_graph child = add_one_graph(x), body = add_one_graph(z), parent;
    CHECK_OK(mtiart_graph_create(0, &parent));
    size_t node;
    CHECK_OK(mtiart_graph_add_child_graph_node(parent, NULL, 0, child, &node));
    CHECK_OK(mtiart_graph_add_conditional_node(parent, &node, 1, MTIART_CONDITIONAL_IF, flag, 4,
                                               body, &node));
    CHECK_OK(mtiart_graph_destroy(child));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_free(z));
    CHECK_OK(mtiart_free(flag));
    CHECK(block_at(x).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK(block_at(z).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK(block_at(flag).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == held0 + 3);
    /* New allocations get other memory, and the replay leaves them alone. */
    int64_t *fresh;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&fresh));
    CHECK(fresh != x && fresh != z && (void *)fresh != (void *)flag);
    write_i64(s, fresh, 42);

    /* A body taken out again, and a clone, hold it too. */
    mtiart_graph taken, clone;
    CHECK_OK(mtiart_graph_get_node_body(parent, 0, &taken));
    CHECK_OK(mtiart_graph_clone(parent, &clone));
    CHECK_OK(mtiart_graph_destroy(parent));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == held0 + 3);
    launch_sync_destroy(clone, s);
    launch_sync_destroy(taken, s);
    CHECK(read_i64(s, fresh) == 42);
    CHECK_OK(mtiart_graph_destroy(clone));
    /* A body taken out holds what its graph held (a superset of what it uses). */
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == held0 + 3);
    CHECK_OK(mtiart_graph_destroy(taken));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == held0);

    /* An executable launched into a capture: the captured graph holds what it uses. */
    int64_t *w;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&w));
    write_i64(s, w, 0);
    mtiart_graph g = add_one_graph(w);
    mtiart_graph_exec e;
    CHECK_OK(mtiart_graph_instantiate(g, &e));
    CHECK_OK(mtiart_graph_destroy(g));
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_OK(mtiart_graph_launch(e, s));
    mtiart_graph captured;
    CHECK_OK(mtiart_stream_end_capture(s, &captured));
    CHECK_OK(mtiart_graph_exec_destroy(e));
    CHECK_OK(mtiart_free(w));
    CHECK(block_at(w).state == MTIART_BLOCK_GRAPH_HELD);
    mtiart_graph_exec checked = instantiate_checked(captured);
    expect_dead_input(checked, s, w, "graph node 0 (child graph (1 nodes))", NULL);
    CHECK_OK(mtiart_graph_exec_destroy(checked));
    launch_sync_destroy(captured, s);
    CHECK_OK(mtiart_graph_destroy(captured));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == held0);
    CHECK_OK(mtiart_free(fresh));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A conditional body captured on a stream: the capture holds what the body uses, and its
 * reads are the conditional node's inputs. */
static void test_captured_body_holds(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *x;
    int32_t *flag;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&x));
    CHECK_OK(mtiart_malloc_async(s, 4, (void **)&flag));
    write_i64(s, x, 5);
    CHECK_OK(mtiart_memset_async(s, flag, 0xff, 4));
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 4));
    CHECK_OK(launch_add_i64(s, x, 1));
    CHECK_OK(mtiart_stream_end_conditional(s));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec checked = instantiate_checked(g);
    CHECK_OK(mtiart_graph_launch(checked, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, x) == 6);
    CHECK_OK(mtiart_free(x));
    CHECK(block_at(x).state == MTIART_BLOCK_GRAPH_HELD);
    expect_dead_input(checked, s, x, "graph node 0 (conditional IF (1 nodes))", NULL);
    CHECK_OK(mtiart_graph_exec_destroy(checked));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);

    /* The condition freed while its body is captured: the capture holds it from the body's
     * beginning, and the body ends as usual. */
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 4));
    CHECK_OK(mtiart_free(flag));
    CHECK(block_at(flag).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    checked = instantiate_checked(g);
    expect_dead_input(checked, s, flag, "graph node 0 (conditional IF (0 nodes))", NULL);
    CHECK_OK(mtiart_graph_exec_destroy(checked));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* An executable updated from another graph, or given new kernel arguments, holds (and
 * checks) what it runs from then on; a graph given new arguments holds them too. */
static void test_updates_hold_memory(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *a, *b, *c, *d;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&a));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&b));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&c));
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&d));
    write_i64(s, a, 0);
    write_i64(s, b, 10);
    write_i64(s, c, 20);
    write_i64(s, d, 30);
    mtiart_graph ga = add_one_graph(a), gb = add_one_graph(b);
    mtiart_graph_exec e = instantiate_checked(ga);
    mtiart_update_info info;
    CHECK_OK(mtiart_graph_exec_update(e, gb, &info));
    CHECK_OK(mtiart_graph_destroy(gb));
    CHECK_OK(mtiart_graph_launch(e, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, b) == 11 && read_i64(s, a) == 0);
    CHECK_OK(mtiart_free(b));
    CHECK(block_at(b).state == MTIART_BLOCK_GRAPH_HELD);
    expect_dead_input(e, s, b, "graph node 0", NULL);
    /* New arguments: c from now on, checked and held. */
    int64_t one = 1;
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, c, 8}, {MTIART_ARG_VALUE, 8, &one, 0}};
    CHECK_OK(mtiart_graph_exec_kernel_node_set_args(e, 0, args, 2));
    CHECK_OK(mtiart_graph_launch(e, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(read_i64(s, c) == 21);
    CHECK_OK(mtiart_free(c));
    CHECK(block_at(c).state == MTIART_BLOCK_GRAPH_HELD);
    expect_dead_input(e, s, c, "graph node 0", NULL);
    /* A stray pointer is refused and changes nothing. */
    args[0].value = (void *)0x10;
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(e, 0, args, 2),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_graph_exec_destroy(e));
    /* The graph's own setter. */
    args[0].value = d;
    CHECK_OK(mtiart_graph_kernel_node_set_args(ga, 0, args, 2));
    CHECK_OK(mtiart_free(d));
    CHECK(block_at(d).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK(block_at(a).state == MTIART_BLOCK_ACTIVE);
    CHECK_OK(mtiart_graph_destroy(ga));
    CHECK_OK(mtiart_free(a));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Memory nodes stay at a graph's top level: no body has them, and updates cannot change
 * them. */
static void test_mem_nodes_stay_top_level(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_graph m, other, parent;
    CHECK_OK(mtiart_graph_create(0, &m));
    CHECK_OK(mtiart_graph_create(0, &other));
    CHECK_OK(mtiart_graph_create(0, &parent));
    size_t node;
    void *p, *q;
    CHECK_OK(mtiart_graph_add_mem_alloc_node(m, NULL, 0, 64, &node, &p));
    CHECK_OK(mtiart_graph_add_mem_alloc_node(other, NULL, 0, 64, &node, &q));
    CHECK_STATUS(mtiart_graph_add_child_graph_node(parent, NULL, 0, m, &node),
                 MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "memory nodes"));
    int32_t *flag;
    CHECK_OK(mtiart_malloc_async(s, 4, (void **)&flag));
    CHECK_STATUS(mtiart_graph_add_conditional_node(parent, NULL, 0, MTIART_CONDITIONAL_IF, flag, 4,
                                                   m, &node),
                 MTIART_ERROR_NOT_SUPPORTED);
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(parent, &count));
    CHECK(count == 0);
    mtiart_graph_exec e;
    CHECK_OK(mtiart_graph_instantiate(m, &e));
    mtiart_update_info info;
    CHECK_STATUS(mtiart_graph_exec_update(e, other, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_PARAMETERS_UNSUPPORTED && info.node == 0);
    /* Into a capture: refused, and the capture goes on. */
    begin(s, (mtiart_pool_id){0, 0});
    CHECK_STATUS(mtiart_graph_launch(e, s), MTIART_ERROR_NOT_SUPPORTED);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    /* Nor does a captured conditional body allocate. */
    CHECK_OK(mtiart_stream_begin_capture_with_flags(
        s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}, MTIART_CAPTURE_FLAG_MEM_NODES));
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_IF, flag, 4));
    void *r;
    CHECK_STATUS(mtiart_malloc_async(s, 64, &r), MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "conditional body"));
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_exec_destroy(e));
    CHECK_OK(mtiart_graph_destroy(m));
    CHECK_OK(mtiart_graph_destroy(other));
    CHECK_OK(mtiart_graph_destroy(parent));
    CHECK_OK(mtiart_free(flag));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Threads that allocate, capture graphs reading and writing their static buffers, free
 * those buffers at any point (sometimes on another thread), replay, instantiate with and
 * without the input check, reset in any order and empty the cache, while sentinel blocks
 * allocated after each free keep a pattern: no replay ever writes into a block that is
 * live and not the graph's. MTIART_STRESS_QUICK=1 shortens it (sanitizers, valgrind). */
enum { SENTINELS = 3, SENTINEL_BYTES = 4096 };

static _Atomic(int64_t *) g_handoff; /* a static buffer another thread frees */
static atomic_int g_thread_failed;
static char g_thread_failure[256];
static pthread_mutex_t g_failure_lock = PTHREAD_MUTEX_INITIALIZER;

static void thread_fail(int line, const char *what) {
    pthread_mutex_lock(&g_failure_lock);
    if (!atomic_exchange(&g_thread_failed, 1))
        snprintf(g_thread_failure, sizeof g_thread_failure, "line %d: %s (%s)", line, what,
                 mtiart_last_error_message());
    pthread_mutex_unlock(&g_failure_lock);
}
#define T_OK(call)                                                                                 \
    do {                                                                                           \
        if ((call) != MTIART_SUCCESS) {                                                            \
            thread_fail(__LINE__, #call);                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define T_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) thread_fail(__LINE__, #cond);                                                 \
    } while (0)

typedef struct stress_ctx {
    uint32_t seed;
    double end_ms;
    long rounds;
} stress_ctx;

static uint32_t next_rand(stress_ctx *c) {
    c->seed = c->seed * 1103515245u + 12345u;
    return c->seed >> 8;
}

static void stress_round(stress_ctx *c, mtiart_stream s, mtiart_stream other) {
    int64_t *x, *y;
    T_OK(mtiart_malloc_async(s, SENTINEL_BYTES, (void **)&x));
    T_OK(mtiart_malloc_async(s, SENTINEL_BYTES, (void **)&y));
    T_OK(mtiart_memset_async(s, x, 0, SENTINEL_BYTES));
    mtiart_pool_id pool = {0, 0};
    T_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_RELAXED, pool));
    int64_t *tmp;
    T_OK(mtiart_malloc_async(s, 64, (void **)&tmp)); /* the graph's own */
    T_OK(launch_add_i64(s, x, 1));                   /* writes its static input */
    T_OK(mtiart_memcpy_async(s, tmp, x, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    T_OK(mtiart_memcpy_async(s, y, tmp, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    uint32_t pattern = 0x01010101u;
    T_OK(mtiart_fill_async(s, y + 8, &pattern, 4, 16));
    T_OK(mtiart_free(tmp));
    bool x_freed = false, y_freed = false;
    if (next_rand(c) % 4 == 0) { /* freed during the capture */
        T_OK(mtiart_free(x));
        x_freed = true;
    }
    mtiart_graph g;
    T_OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec e;
    bool checked = next_rand(c) % 2;
    T_OK(mtiart_graph_instantiate_with_flags(
        g, checked ? MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS : 0, &e));
    if (next_rand(c) % 2) {
        T_OK(mtiart_graph_destroy(g));
        g = NULL;
    }
    if (!x_freed && next_rand(c) % 2) {
        if (next_rand(c) % 2) { /* another thread frees it, some time */
            int64_t *old = atomic_exchange(&g_handoff, x);
            if (old) T_OK(mtiart_free(old));
        } else {
            T_OK(mtiart_free(x));
        }
        x_freed = true;
    }
    if (next_rand(c) % 2) {
        T_OK(mtiart_free(y));
        y_freed = true;
    }
    if (next_rand(c) % 3 == 0) T_OK(mtiart_empty_cache(0));
    uint8_t *sentinel[SENTINELS];
    for (int i = 0; i < SENTINELS; i++) {
        T_OK(mtiart_malloc_async(s, SENTINEL_BYTES, (void **)&sentinel[i]));
        T_OK(mtiart_memset_async(s, sentinel[i], 0x5a, SENTINEL_BYTES));
    }
    int replays = 1 + (int)(next_rand(c) % 4);
    for (int r = 0; r < replays; r++) {
        mtiart_status st = mtiart_graph_launch(e, r % 2 ? other : s);
        /* x freed (by anyone): the checked executable refuses, the other one replays */
        if (checked && x_freed) T_CHECK(st == MTIART_ERROR_INVALID_POINTER || st == MTIART_SUCCESS);
        else T_CHECK(st == MTIART_SUCCESS);
    }
    T_OK(mtiart_stream_synchronize(other));
    T_OK(mtiart_stream_synchronize(s));
    if (!y_freed && !x_freed) {
        int64_t got = -1;
        T_OK(mtiart_memcpy(s, &got, y, sizeof got, MTIART_MEMCPY_DEVICE_TO_HOST));
        T_CHECK(got == replays);
    }
    for (int i = 0; i < SENTINELS; i++) {
        uint8_t host[SENTINEL_BYTES];
        T_OK(mtiart_memcpy(s, host, sentinel[i], sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
        bool intact = true;
        for (size_t k = 0; k < sizeof host; k++) intact &= host[k] == 0x5a;
        T_CHECK(intact);
        T_OK(mtiart_free(sentinel[i]));
    }
    if (g && next_rand(c) % 2) {
        T_OK(mtiart_graph_destroy(g));
        g = NULL;
    }
    T_OK(mtiart_graph_exec_destroy(e));
    if (g) T_OK(mtiart_graph_destroy(g));
    if (!x_freed) T_OK(mtiart_free(x));
    if (!y_freed) T_OK(mtiart_free(y));
    c->rounds++;
}

static void *stress_main(void *arg) {
    stress_ctx *c = arg;
    mtiart_stream s, other;
    if (mtiart_stream_create(0, 0, &s) || mtiart_stream_create(0, 0, &other)) {
        thread_fail(__LINE__, "stream_create");
        return NULL;
    }
    while (now_ms() < c->end_ms && !atomic_load(&g_thread_failed)) stress_round(c, s, other);
    mtiart_stream_destroy(s);
    mtiart_stream_destroy(other);
    return NULL;
}

static void test_threads(void) {
    const char *quick = getenv("MTIART_STRESS_QUICK");
    double ms = quick && *quick == '1' ? 300 : 1500;
    enum { T = 4 };
    pthread_t th[T];
    stress_ctx ctx[T];
    for (int i = 0; i < T; i++) {
        ctx[i] = (stress_ctx){.seed = 77u + 31u * (uint32_t)i, .end_ms = now_ms() + ms};
        pthread_create(&th[i], NULL, stress_main, &ctx[i]);
    }
    long rounds = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        rounds += ctx[i].rounds;
    }
    int64_t *left = atomic_exchange(&g_handoff, NULL);
    if (left) CHECK_OK(mtiart_free(left));
    if (atomic_load(&g_thread_failed)) {
        fprintf(stderr, "stress: %s\n", g_thread_failure);
        test_failures++;
    }
    CHECK(rounds >= T);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0);
}

int main(void) {
    setenv("MTIART_DEVICE_MEMORY", "256M", 1);
    CHECK_OK(mtiart_init());
    test_stat_keys();
    test_reset_recapture();
    test_freed_outputs_stay_held();
    test_explicit_graph_holds();
    test_own_pool_not_held();
    test_invalidated_capture_releases();
    test_input_check();
    test_input_check_reused();
    test_bodies_hold_memory();
    test_captured_body_holds();
    test_updates_hold_memory();
    test_mem_nodes_stay_top_level();
    test_threads();
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.allocated_bytes == 0 && st.private_pools == 0 && st.active_blocks == 0);
    CHECK(stat(MTIART_STAT_GRAPH_HELD_BYTES) == 0 && stat(MTIART_STAT_GRAPH_HELD_BLOCKS) == 0);
    TEST_MAIN_END();
}
