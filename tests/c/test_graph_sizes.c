/* Graph construction at the edges of its data structures: graphs of 1, 2 and 100,000
 * nodes, captured and built by hand; nodes with hundreds of dependencies (duplicates
 * among them); chains whose nodes interleave; copies; captures that fail part way, and
 * captures that end while another thread launches into them. Each graph is replayed and
 * the order its nodes ran in checked against its edges. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* Each run of k_log appends its argument (a node's tag) to the log. */
static uint32_t *run_log;
static atomic_uint run_count;
static size_t log_cap;

static int32_t k_log(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    uint32_t at = atomic_fetch_add(&run_count, 1);
    if (at < log_cap) run_log[at] = *(const uint32_t *)args[0];
    return 0;
}

static void log_reset(size_t cap) {
    free(run_log);
    run_log = calloc(cap ? cap : 1, sizeof *run_log);
    CHECK(run_log != NULL);
    log_cap = cap;
    atomic_store(&run_count, 0);
}

static mtiart_arg tag_arg(const uint32_t *tag) {
    return (mtiart_arg){MTIART_ARG_VALUE, sizeof *tag, tag, 0};
}

static void replay(mtiart_graph g, mtiart_stream s, size_t expect_nodes) {
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    size_t count = 0;
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &count));
    CHECK(count == expect_nodes);
    log_reset(expect_nodes);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&run_count) == expect_nodes);
    CHECK_OK(mtiart_graph_exec_destroy(x));
}

/* A chain of n nodes (node i tagged i, depending on node i - 1): its structure, then one
 * replay that runs the nodes in order. */
static void check_chain(mtiart_graph g, mtiart_stream s, size_t n) {
    size_t count = 0, edges = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(count == n);
    CHECK(edges == (n ? n - 1 : 0));
    for (size_t i = 0; i < n; i += 1 + i / 7) { /* every node of a small graph, some of a large */
        mtiart_node_info info;
        CHECK_OK(mtiart_graph_get_node_info(g, i, &info));
        CHECK(info.num_dependencies == (i ? 1u : 0u));
        if (i) {
            size_t dep = SIZE_MAX;
            CHECK_OK(mtiart_graph_get_node_dependency(g, i, 0, &dep));
            CHECK(dep == i - 1);
        }
    }
    replay(g, s, n);
    bool in_order = true;
    for (size_t i = 0; i < n && in_order; i++) in_order = run_log[i] == i;
    CHECK(in_order);
}

static void test_chain_sizes(mtiart_stream s) {
    static const size_t sizes[] = {1, 2, 3, 63, 64, 65, 1000, 100000};
    uint32_t *tags = malloc(100000 * sizeof *tags);
    CHECK(tags != NULL);
    for (uint32_t i = 0; i < 100000; i++) tags[i] = i;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        /* captured */
        mtiart_graph g;
        CHECK_OK(
            mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
        for (size_t i = 0; i < n; i++) {
            mtiart_arg a = tag_arg(&tags[i]);
            CHECK_OK(mtiart_launch_kernel(s, k_log, 1, &a, 1));
        }
        CHECK_OK(mtiart_stream_end_capture(s, &g));
        check_chain(g, s, n);
        /* a copy has dependency lists of its own */
        mtiart_graph copy;
        CHECK_OK(mtiart_graph_clone(g, &copy));
        CHECK_OK(mtiart_graph_destroy(g));
        check_chain(copy, s, n);
        CHECK_OK(mtiart_graph_destroy(copy));
        /* built by hand */
        CHECK_OK(mtiart_graph_create(0, &g));
        for (size_t i = 0; i < n; i++) {
            mtiart_arg a = tag_arg(&tags[i]);
            size_t prev = i - 1, node = SIZE_MAX;
            CHECK_OK(mtiart_graph_add_kernel_node(g, i ? &prev : NULL, i ? 1 : 0, k_log, 1, &a, 1,
                                                  &node));
            CHECK(node == i);
        }
        check_chain(g, s, n);
        CHECK_OK(mtiart_graph_destroy(g));
    }
    free(tags);
}

/* An empty capture is an empty graph, which replays doing nothing. */
static void test_empty_capture(mtiart_stream s) {
    mtiart_graph g;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    size_t count = 1, edges = 1;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(count == 0 && edges == 0);
    replay(g, s, 0);
    CHECK_OK(mtiart_graph_destroy(g));
}

/* `roots` independent nodes, then joins that each depend on all of them, every dependency
 * given twice (duplicates are dropped), interleaved with one-dependency nodes. */
static void test_many_predecessors(mtiart_stream s) {
    enum { ROOTS = 300, JOINS = 4 };
    static uint32_t tags[ROOTS + 2 * JOINS];
    for (uint32_t i = 0; i < ROOTS + 2 * JOINS; i++) tags[i] = i;
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t deps[2 * ROOTS];
    for (size_t i = 0; i < ROOTS; i++) {
        mtiart_arg a = tag_arg(&tags[i]);
        CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_log, 1, &a, 1, &deps[i]));
    }
    for (size_t i = 0; i < ROOTS; i++) deps[ROOTS + i] = deps[ROOTS - 1 - i];
    size_t joins[JOINS], tails[JOINS];
    for (size_t j = 0; j < JOINS; j++) {
        mtiart_arg a = tag_arg(&tags[ROOTS + 2 * j]);
        CHECK_OK(mtiart_graph_add_kernel_node(g, deps, 2 * ROOTS, k_log, 1, &a, 1, &joins[j]));
        mtiart_arg b = tag_arg(&tags[ROOTS + 2 * j + 1]);
        CHECK_OK(mtiart_graph_add_kernel_node(g, &joins[j], 1, k_log, 1, &b, 1, &tails[j]));
        mtiart_node_info info;
        CHECK_OK(mtiart_graph_get_node_info(g, joins[j], &info));
        CHECK(info.num_dependencies == ROOTS);
        bool seen[ROOTS] = {false};
        for (uint32_t k = 0; k < ROOTS; k++) {
            size_t dep = SIZE_MAX;
            CHECK_OK(mtiart_graph_get_node_dependency(g, joins[j], k, &dep));
            CHECK(dep < ROOTS && !seen[dep]);
            if (dep < ROOTS) seen[dep] = true;
        }
        CHECK_OK(mtiart_graph_get_node_info(g, tails[j], &info));
        CHECK(info.num_dependencies == 1);
    }
    size_t edges = 0;
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(edges == JOINS * (ROOTS + 1));
    /* a dependency on a node that does not exist yet is refused, and nothing is added */
    size_t bad[2] = {0, ROOTS + 2 * JOINS}, node;
    mtiart_arg a = tag_arg(&tags[0]);
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, bad, 2, k_log, 1, &a, 1, &node),
                 MTIART_ERROR_INVALID_VALUE);
    size_t count = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK(count == ROOTS + 2 * JOINS);
    replay(g, s, ROOTS + 2 * JOINS);
    /* every root before every join, each join before its tail */
    size_t at[ROOTS + 2 * JOINS];
    for (size_t i = 0; i < ROOTS + 2 * JOINS; i++) at[run_log[i]] = i;
    for (size_t j = 0; j < JOINS; j++) {
        for (size_t i = 0; i < ROOTS; i++) CHECK(at[i] < at[ROOTS + 2 * j]);
        CHECK(at[ROOTS + 2 * j] < at[ROOTS + 2 * j + 1]);
    }
    CHECK_OK(mtiart_graph_destroy(g));
}

/* Two streams' chains captured with their nodes interleaved (a, b, a, b, ...), joined at
 * the end: each chain replays in its order, and the join last. */
static void test_interleaved_chains(mtiart_stream s) {
    enum { PER_CHAIN = 50 };
    static uint32_t tags[2 * PER_CHAIN + 1];
    for (uint32_t i = 0; i < 2 * PER_CHAIN + 1; i++) tags[i] = i;
    mtiart_stream other;
    mtiart_event fork, join;
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &join));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(fork, s));
    CHECK_OK(mtiart_stream_wait_event(other, fork));
    for (size_t i = 0; i < 2 * PER_CHAIN; i++) {
        mtiart_arg a = tag_arg(&tags[i]); /* even tags on s, odd on other */
        CHECK_OK(mtiart_launch_kernel(i % 2 ? other : s, k_log, 1, &a, 1));
    }
    CHECK_OK(mtiart_event_record(join, other));
    CHECK_OK(mtiart_stream_wait_event(s, join));
    mtiart_arg last = tag_arg(&tags[2 * PER_CHAIN]);
    CHECK_OK(mtiart_launch_kernel(s, k_log, 1, &last, 1));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    for (int copy = 0; copy < 2; copy++) {
        replay(g, s, 2 * PER_CHAIN + 1);
        size_t at[2 * PER_CHAIN + 1];
        for (size_t i = 0; i < 2 * PER_CHAIN + 1; i++) at[run_log[i]] = i;
        for (size_t i = 2; i < 2 * PER_CHAIN; i++) CHECK(at[i - 2] < at[i]);
        for (size_t i = 0; i < 2 * PER_CHAIN; i++) CHECK(at[i] < at[2 * PER_CHAIN]);
        mtiart_graph c;
        CHECK_OK(mtiart_graph_clone(g, &c));
        CHECK_OK(mtiart_graph_destroy(g));
        g = c;
    }
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(join));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* A capture invalidated after many nodes, and one that fails at its end (a forked stream
 * not joined back), leave nothing behind (the sanitizers' leak check), and the stream
 * captures again at once. */
static void test_failed_captures(mtiart_stream s) {
    static const uint32_t tag = 7;
    mtiart_arg a = tag_arg(&tag);
    mtiart_graph g;
    for (int round = 0; round < 3; round++) {
        CHECK_OK(
            mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
        for (int i = 0; i < 1000; i++) CHECK_OK(mtiart_launch_kernel(s, k_log, 1, &a, 1));
        CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_CAPTURE_UNSUPPORTED);
        CHECK_STATUS(mtiart_launch_kernel(s, k_log, 1, &a, 1), MTIART_ERROR_CAPTURE_INVALIDATED);
        CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
    }
    mtiart_stream other;
    mtiart_event fork;
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(fork, s));
    CHECK_OK(mtiart_stream_wait_event(other, fork));
    for (int i = 0; i < 100; i++) CHECK_OK(mtiart_launch_kernel(other, k_log, 1, &a, 1));
    CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_UNJOINED);
    /* both streams are out of the capture: other runs its work again */
    log_reset(1);
    CHECK_OK(mtiart_launch_kernel(other, k_log, 1, &a, 1));
    CHECK_OK(mtiart_stream_synchronize(other));
    CHECK(atomic_load(&run_count) == 1);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_launch_kernel(s, k_log, 1, &a, 1));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    replay(g, s, 1);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* A thread launches on a stream forked into captures that the main thread ends (unjoined,
 * so discarded) and begins again: each launch is recorded into the capture or, once the
 * stream left it, runs; none fails, and every launch that ran is counted. */
typedef struct launcher {
    mtiart_stream stream;
    atomic_int stop;
    int launched;
} launcher;

static void *launch_loop(void *p) {
    launcher *l = p;
    static const uint32_t tag = 1;
    mtiart_arg a = tag_arg(&tag);
    while (!atomic_load(&l->stop)) {
        mtiart_status st = mtiart_launch_kernel(l->stream, k_log, 1, &a, 1);
        if (st != MTIART_SUCCESS) {
            fprintf(stderr, "launch during capture changes: %s: %s\n", mtiart_status_name(st),
                    mtiart_last_error_message());
            exit(1);
        }
        l->launched++;
    }
    return NULL;
}

static void test_capture_ends_during_launches(mtiart_stream s) {
    launcher l = {.launched = 0};
    CHECK_OK(mtiart_stream_create(0, 0, &l.stream));
    mtiart_event fork;
    CHECK_OK(mtiart_event_create(0, &fork));
    log_reset(0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, launch_loop, &l) == 0);
    for (int round = 0; round < 200; round++) {
        mtiart_graph g;
        CHECK_OK(
            mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
        CHECK_OK(mtiart_event_record(fork, s));
        CHECK_OK(mtiart_stream_wait_event(l.stream, fork));
        mtiart_status st = mtiart_stream_end_capture(s, &g);
        /* unjoined if the thread's launches were recorded; else an empty graph */
        if (st == MTIART_SUCCESS) CHECK_OK(mtiart_graph_destroy(g));
        else CHECK(st == MTIART_ERROR_CAPTURE_UNJOINED);
    }
    atomic_store(&l.stop, 1);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(mtiart_stream_synchronize(l.stream));
    CHECK(atomic_load(&run_count) <= (unsigned)l.launched);
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_stream_destroy(l.stream));
}

int main(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    test_chain_sizes(s);
    test_empty_capture(s);
    test_many_predecessors(s);
    test_interleaved_chains(s);
    test_failed_captures(s);
    test_capture_ends_during_launches(s);
    CHECK_OK(mtiart_stream_destroy(s));
    free(run_log);
    if (test_failures) fprintf(stderr, "%d check(s) failed\n", test_failures);
    return test_failures ? 1 : 0;
}
