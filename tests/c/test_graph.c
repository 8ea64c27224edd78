/* Graphs: hand-built DAGs (chains, diamonds, fan-out/fan-in, random), replay order and
 * exactly-once execution, non-overlapping replays on several streams, introspection and
 * DOT output, lifetimes (graph destroyed before launch, exec destroyed with launches in
 * flight, pool memory after graph destruction), failing nodes, multi-block nodes, and a
 * captured graph of kernels, copies, fills, host functions and a fork/join. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

/* ------------------------------------------------------------------ checking nodes */

#define MAXN 1100
#define MAXD 8

typedef struct gstate {
    int n;
    int ndeps[MAXN];
    int deps[MAXN][MAXD];
    atomic_int count[MAXN];
    atomic_int errors;
    atomic_int inflight;
    atomic_int reentries;
    double node_sleep_ms;
} gstate;

/* args[0]: gstate * (value), args[1]: node index (value). Checks that every predecessor
 * already ran in this replay, then counts itself. */
static int32_t k_node(void *const *args, uint32_t block, uint32_t num_blocks) {
    gstate *st = *(gstate *const *)args[0];
    int i = *(const int *)args[1];
    if (block != 0) return 0;
    (void)num_blocks;
    int mine = atomic_load(&st->count[i]);
    for (int d = 0; d < st->ndeps[i]; d++)
        if (atomic_load(&st->count[st->deps[i][d]]) != mine + 1) atomic_fetch_add(&st->errors, 1);
    atomic_store(&st->count[i], mine + 1);
    return 0;
}

/* The first node of a replay: detects two replays of one executable at once. */
static int32_t k_begin(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    gstate *st = *(gstate *const *)args[0];
    if (atomic_exchange(&st->inflight, 1) != 0) atomic_fetch_add(&st->reentries, 1);
    if (st->node_sleep_ms > 0) sleep_ms(st->node_sleep_ms);
    return k_node(args, 0, 1);
}

static int32_t k_end(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    gstate *st = *(gstate *const *)args[0];
    int32_t rc = k_node(args, 0, 1);
    if (st->node_sleep_ms > 0) sleep_ms(st->node_sleep_ms);
    atomic_store(&st->inflight, 0);
    return rc;
}

static size_t add_node(mtiart_graph g, gstate *st, mtiart_kernel_fn fn, const int *deps,
                       int ndeps) {
    int i = st->n++;
    st->ndeps[i] = ndeps;
    size_t d[MAXD];
    for (int k = 0; k < ndeps; k++) {
        st->deps[i][k] = deps[k];
        d[k] = (size_t)deps[k];
    }
    mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof st, &st, 0}, {MTIART_ARG_VALUE, sizeof i, &i, 0}};
    size_t node = 12345;
    CHECK_OK(mtiart_graph_add_kernel_node(g, ndeps ? d : NULL, (size_t)ndeps, fn, 1, a, 2, &node));
    CHECK(node == (size_t)i);
    return node;
}

static void check_counts(gstate *st, int expected, int line) {
    int bad = 0;
    for (int i = 0; i < st->n; i++) bad += atomic_load(&st->count[i]) != expected;
    if (bad || atomic_load(&st->errors)) {
        fprintf(stderr,
                "line %d: %d node(s) ran a wrong number of times (want %d), %d order errors\n",
                line, bad, expected, atomic_load(&st->errors));
        test_failures++;
    }
}
#define CHECK_COUNTS(st, n) check_counts((st), (n), __LINE__)

static void run_and_check(mtiart_graph g, gstate *st, mtiart_stream s, int replays) {
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    size_t n = 0;
    CHECK_OK(mtiart_graph_exec_get_node_count(x, &n));
    CHECK(n == (size_t)st->n);
    int base = atomic_load(&st->count[0]);
    for (int r = 0; r < replays; r++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_COUNTS(st, base + replays);
    CHECK_OK(mtiart_graph_exec_destroy(x));
}

static void test_shapes(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    gstate *st = calloc(1, sizeof *st);

    /* chain */
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    for (int i = 0; i < 300; i++) {
        int dep = i - 1;
        add_node(g, st, k_node, &dep, i ? 1 : 0);
    }
    size_t edges;
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(edges == 299);
    run_and_check(g, st, s, 50);
    CHECK_OK(mtiart_graph_destroy(g));

    /* diamond: 0 -> {1, 2} -> 3, repeated as a chain of diamonds */
    memset(st, 0, sizeof *st);
    CHECK_OK(mtiart_graph_create(0, &g));
    int last = -1;
    for (int k = 0; k < 20; k++) {
        int top = (int)add_node(g, st, k_node, &last, last >= 0 ? 1 : 0);
        int l = (int)add_node(g, st, k_node, &top, 1);
        int r = (int)add_node(g, st, k_node, &top, 1);
        int both[2] = {l, r};
        last = (int)add_node(g, st, k_node, both, 2);
    }
    run_and_check(g, st, s, 100);
    CHECK_OK(mtiart_graph_destroy(g));

    /* wide fan-out / fan-in, with an empty join node in the middle */
    memset(st, 0, sizeof *st);
    CHECK_OK(mtiart_graph_create(0, &g));
    int root = (int)add_node(g, st, k_node, NULL, 0);
    int wide[MAXD];
    size_t layer1[400];
    for (int i = 0; i < 400; i++) layer1[i] = add_node(g, st, k_node, &root, 1);
    size_t join;
    CHECK_OK(mtiart_graph_add_empty_node(g, layer1, 400, &join));
    /* The empty node is not a checking node: mirror it in the state as a node that has
     * the same predecessors by letting its successors depend on all of layer1 directly
     * through it (checked: successors see layer1 counts through k_node's deps). */
    st->ndeps[st->n] = 0;
    atomic_store(&st->count[st->n], 0);
    st->n++; /* placeholder slot for the empty node, counted by hand below */
    for (int i = 0; i < MAXD; i++) wide[i] = (int)layer1[i * 50];
    int sink_deps[MAXD];
    memcpy(sink_deps, wide, sizeof wide);
    int after = (int)add_node(g, st, k_node, sink_deps, MAXD);
    size_t dep_on_join[2] = {join, (size_t)after};
    size_t final;
    int fi = st->n++;
    st->ndeps[fi] = 1;
    st->deps[fi][0] = after;
    mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof st, &st, 0},
                       {MTIART_ARG_VALUE, sizeof fi, &fi, 0}};
    CHECK_OK(mtiart_graph_add_kernel_node(g, dep_on_join, 2, k_node, 1, a, 2, &final));
    CHECK(final == (size_t)fi);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    for (int r = 0; r < 30; r++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    int bad = 0;
    for (int i = 0; i < st->n; i++)
        if ((size_t)i != join) bad += atomic_load(&st->count[i]) != 30;
    CHECK(bad == 0);
    CHECK(atomic_load(&st->errors) == 0);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));

    /* random DAGs */
    uint32_t seed = 42;
    for (int trial = 0; trial < 6; trial++) {
        memset(st, 0, sizeof *st);
        CHECK_OK(mtiart_graph_create(0, &g));
        int n = 50 + trial * 150;
        size_t total_edges = 0;
        for (int i = 0; i < n; i++) {
            int deps[MAXD], nd = 0;
            seed = seed * 1664525u + 1013904223u;
            int want = i ? (int)((seed >> 16) % 4) : 0;
            for (int k = 0; k < want; k++) {
                seed = seed * 1664525u + 1013904223u;
                int d = (int)((seed >> 8) % (uint32_t)i);
                bool dup = false;
                for (int m = 0; m < nd; m++) dup |= deps[m] == d;
                if (!dup) deps[nd++] = d;
            }
            total_edges += (size_t)nd;
            add_node(g, st, k_node, deps, nd);
        }
        CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
        CHECK(edges == total_edges);
        run_and_check(g, st, s, 20);
        CHECK_OK(mtiart_graph_destroy(g));
    }
    /* Duplicate dependencies count once. */
    memset(st, 0, sizeof *st);
    CHECK_OK(mtiart_graph_create(0, &g));
    int r0 = (int)add_node(g, st, k_node, NULL, 0);
    size_t dd[3] = {(size_t)r0, (size_t)r0, (size_t)r0};
    size_t node;
    CHECK_OK(mtiart_graph_add_empty_node(g, dd, 3, &node));
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(edges == 1);
    /* Bad dependencies are refused: a node can only depend on earlier nodes. */
    size_t self = 2;
    CHECK_STATUS(mtiart_graph_add_empty_node(g, &self, 1, &node), MTIART_ERROR_INVALID_VALUE);
    size_t far = 1000;
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, &far, 1, k_node, 1, NULL, 0, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, NULL, 0, NULL, 1, NULL, 0, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, NULL, 0, k_node, 0, NULL, 0, &node),
                 MTIART_ERROR_INVALID_VALUE);
    int host_buf[4];
    mtiart_arg hb = {MTIART_ARG_BUFFER_IN, 0, host_buf, sizeof host_buf};
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, NULL, 0, k_node, 1, &hb, 1, &node),
                 MTIART_ERROR_INVALID_POINTER);
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK(count == 2);
    CHECK_OK(mtiart_graph_destroy(g));
    free(st);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ non-overlap */

typedef struct launcher {
    mtiart_graph_exec x;
    mtiart_stream s;
    int launches;
    int failed;
} launcher;

static void *launch_thread(void *arg) {
    launcher *l = arg;
    for (int i = 0; i < l->launches; i++)
        if (mtiart_graph_launch(l->x, l->s)) l->failed = 1;
    if (mtiart_stream_synchronize(l->s)) l->failed = 1;
    return NULL;
}

/* begin -> MAXD nodes of 0.2 ms -> end: replays long enough for another to try to overlap. */
static mtiart_graph slow_diamond(gstate *st) {
    st->node_sleep_ms = 0.2;
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    int b = (int)add_node(g, st, k_begin, NULL, 0);
    int mids[MAXD];
    for (int i = 0; i < MAXD; i++) mids[i] = (int)add_node(g, st, k_node, &b, 1);
    add_node(g, st, k_end, mids, MAXD);
    return g;
}

static void test_no_overlap(void) {
    gstate *st = calloc(1, sizeof *st);
    mtiart_graph g = slow_diamond(st);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g)); /* the executable outlives its graph */
    mtiart_stream s[3];
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_stream_create(0, -i, &s[i]));
    /* Alternating streams from one thread */
    for (int r = 0; r < 60; r++) CHECK_OK(mtiart_graph_launch(x, s[r % 3]));
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_stream_synchronize(s[i]));
    CHECK_COUNTS(st, 60);
    CHECK(atomic_load(&st->reentries) == 0);
    /* From three threads at once */
    launcher l[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        l[i] = (launcher){x, s[i], 40, 0};
        pthread_create(&th[i], NULL, launch_thread, &l[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(!l[i].failed);
    }
    CHECK_COUNTS(st, 180);
    CHECK(atomic_load(&st->reentries) == 0);
    /* The replays order with other work of their streams. */
    atomic_long counter = 0;
    gate gt = {0};
    launch_gate(s[0], &gt);
    CHECK_OK(mtiart_graph_launch(x, s[0]));
    CHECK_OK(mtiart_graph_launch(x, s[1])); /* waits for the held replay on s[0] */
    launch_count(s[1], &counter);
    sleep_ms(20);
    CHECK(atomic_load(&counter) == 0);
    CHECK_COUNTS(st, 180);
    atomic_store(&gt.open, 1);
    CHECK_OK(sync_with_timeout(s[1], 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_COUNTS(st, 182);
    /* Destroying the exec with launches in flight: they all still run. */
    gate g2 = {0};
    launch_gate(s[2], &g2);
    for (int r = 0; r < 10; r++) CHECK_OK(mtiart_graph_launch(x, s[2 - (r % 2)]));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_STATUS(mtiart_graph_launch(x, s[0]), MTIART_ERROR_INVALID_HANDLE);
    atomic_store(&g2.open, 1);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_COUNTS(st, 192);
    CHECK(atomic_load(&st->reentries) == 0);
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_stream_destroy(s[i]));
    free(st);
}

/* Replays of one graph never overlap either when they use different executables of it
 * (a re-instantiation while a replay runs): the replay order belongs to the graph. */
static void test_no_overlap_across_executables(void) {
    gstate *st = calloc(1, sizeof *st);
    mtiart_graph g = slow_diamond(st);
    mtiart_graph_exec x[3];
    CHECK_OK(mtiart_graph_instantiate(g, &x[0]));
    CHECK_OK(mtiart_graph_instantiate(g, &x[1]));
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS,
                                                 &x[2]));
    mtiart_stream s[3];
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_stream_create(0, 0, &s[i]));
    /* A replay held back on s[0]; another executable's replay on s[1] waits for it. */
    gate gt = {0};
    atomic_long counter = 0;
    launch_gate(s[0], &gt);
    CHECK_OK(mtiart_graph_launch(x[0], s[0]));
    CHECK_OK(mtiart_graph_destroy(g)); /* the order outlives the graph too */
    CHECK_OK(mtiart_graph_launch(x[1], s[1]));
    launch_count(s[1], &counter);
    sleep_ms(20);
    CHECK(atomic_load(&counter) == 0);
    CHECK_COUNTS(st, 0);
    atomic_store(&gt.open, 1);
    CHECK_OK(sync_with_timeout(s[1], 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_COUNTS(st, 2);
    /* From three threads, each with its own executable and stream. */
    launcher l[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        l[i] = (launcher){x[i], s[i], 30, 0};
        pthread_create(&th[i], NULL, launch_thread, &l[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(!l[i].failed);
    }
    CHECK_COUNTS(st, 92);
    CHECK(atomic_load(&st->reentries) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mtiart_graph_exec_destroy(x[i]));
        CHECK_OK(mtiart_stream_destroy(s[i]));
    }
    free(st);
}

/* ------------------------------------------------------------------ introspection */

static int32_t k_saxpy(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *x = *(float *const *)args[0];
    float *y = *(float **)args[1];
    float a = *(const float *)args[2];
    uint32_t n = *(const uint32_t *)args[3];
    uint32_t per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) y[i] += a * x[i];
    return 0;
}

static void test_introspection(void) {
    CHECK_OK(mtiart_kernel_set_name(k_saxpy, "saxpy"));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    float *x, *y;
    uint32_t n = 1000;
    CHECK_OK(mtiart_malloc_async(s, n * sizeof(float), (void **)&x));
    CHECK_OK(mtiart_malloc_async(s, n * sizeof(float), (void **)&y));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    int dev = -1;
    CHECK_OK(mtiart_graph_get_device(g, &dev));
    CHECK(dev == 0);
    mtiart_pool_id pool = {9, 9};
    CHECK_OK(mtiart_graph_get_pool(g, &pool));
    CHECK(pool.first == 0 && pool.second == 0);
    float alpha = 2.0f;
    mtiart_arg a[4] = {{MTIART_ARG_BUFFER_IN, 0, x, n * sizeof(float)},
                       {MTIART_ARG_BUFFER_INOUT, 0, y, n * sizeof(float)},
                       {MTIART_ARG_VALUE, sizeof alpha, &alpha, 0},
                       {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    size_t n0, n1, n2, n3;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_saxpy, 7, a, 4, &n0));
    CHECK_OK(mtiart_graph_add_empty_node(g, &n0, 1, &n1));
    CHECK_OK(mtiart_graph_add_kernel_node(g, &n0, 1, k_saxpy, 1, a, 4, &n2));
    size_t both[2] = {n1, n2};
    CHECK_OK(mtiart_graph_add_empty_node(g, both, 2, &n3));
    size_t count, edges;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK_OK(mtiart_graph_get_edge_count(g, &edges));
    CHECK(count == 4 && edges == 4);
    mtiart_node_info info;
    CHECK_OK(mtiart_graph_get_node_info(g, n0, &info));
    CHECK(info.kind == MTIART_NODE_KERNEL && info.num_blocks == 7 && info.num_buffers == 2 &&
          info.num_dependencies == 0);
    CHECK(strcmp(info.name, "saxpy") == 0);
    CHECK_OK(mtiart_graph_get_node_info(g, n3, &info));
    CHECK(info.kind == MTIART_NODE_EMPTY && info.num_buffers == 0 && info.num_dependencies == 2);
    mtiart_buffer_use use;
    CHECK_OK(mtiart_graph_get_node_buffer(g, n0, 0, &use));
    CHECK(use.address == (uint64_t)(uintptr_t)x && use.bytes == n * sizeof(float) &&
          use.access == MTIART_ARG_BUFFER_IN);
    CHECK_OK(mtiart_graph_get_node_buffer(g, n0, 1, &use));
    CHECK(use.address == (uint64_t)(uintptr_t)y && use.access == MTIART_ARG_BUFFER_INOUT);
    CHECK_STATUS(mtiart_graph_get_node_buffer(g, n0, 2, &use), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_get_node_buffer(g, n1, 0, &use), MTIART_ERROR_INVALID_VALUE);
    size_t dep;
    CHECK_OK(mtiart_graph_get_node_dependency(g, n3, 0, &dep));
    CHECK(dep == n1);
    CHECK_OK(mtiart_graph_get_node_dependency(g, n3, 1, &dep));
    CHECK(dep == n2);
    CHECK_STATUS(mtiart_graph_get_node_dependency(g, n3, 2, &dep), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_get_node_dependency(g, 99, 0, &dep), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_get_node_info(g, 4, &info), MTIART_ERROR_INVALID_VALUE);

    /* DOT */
    size_t len = 0;
    CHECK_OK(mtiart_graph_to_dot(g, NULL, 0, &len));
    CHECK(len > 50);
    char *dot = malloc(len + 1);
    size_t len2 = 0;
    CHECK_OK(mtiart_graph_to_dot(g, dot, len + 1, &len2));
    CHECK(len2 == len && strlen(dot) == len);
    CHECK(strstr(dot, "digraph") != NULL);
    CHECK(strstr(dot, "saxpy") != NULL);
    CHECK(strstr(dot, "n0 -> n1") != NULL);
    CHECK(strstr(dot, "n0 -> n2") != NULL);
    CHECK(strstr(dot, "n1 -> n3") != NULL);
    CHECK(strstr(dot, "n2 -> n3") != NULL);
    CHECK(strstr(dot, "blocks=7") != NULL);
    char addr[32];
    snprintf(addr, sizeof addr, "0x%llx", (unsigned long long)(uintptr_t)x);
    CHECK(strstr(dot, addr) != NULL);
    snprintf(addr, sizeof addr, "0x%llx", (unsigned long long)(uintptr_t)y);
    CHECK(strstr(dot, addr) != NULL);
    CHECK(dot[len - 2] == '}');
    /* Truncation keeps the terminator and reports the full length. */
    char small[16];
    memset(small, 'x', sizeof small);
    CHECK_OK(mtiart_graph_to_dot(g, small, sizeof small, &len2));
    CHECK(len2 == len && small[15] == '\0' && strlen(small) == 15);
    free(dot);

    /* Replay: y += 2x twice per replay (the 7-block and the 1-block node). */
    static float hx[1000], hy[1000];
    for (uint32_t i = 0; i < n; i++) {
        hx[i] = (float)i;
        hy[i] = 1.0f;
    }
    CHECK_OK(mtiart_memcpy_async(s, x, hx, sizeof hx, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_memcpy_async(s, y, hy, sizeof hy, MTIART_MEMCPY_HOST_TO_DEVICE));
    alpha = 100.0f; /* the graph keeps the value given when the node was added */
    mtiart_graph_exec ex;
    CHECK_OK(mtiart_graph_instantiate(g, &ex));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_STATUS(mtiart_graph_get_node_count(g, &count), MTIART_ERROR_INVALID_HANDLE);
    for (int r = 0; r < 3; r++) CHECK_OK(mtiart_graph_launch(ex, s));
    CHECK_OK(mtiart_memcpy(s, hy, y, sizeof hy, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) bad += hy[i] != 1.0f + 12.0f * (float)i;
    CHECK(bad == 0);
    CHECK_OK(mtiart_graph_exec_destroy(ex));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_free(y));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ failures, blocks */

static int32_t k_fail_node(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)num_blocks;
    if (block == 2) {
        mtiart_kernel_set_error_message("node gave up");
        return 5;
    }
    return 0;
}

static int32_t k_fail_single(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    mtiart_kernel_set_error_message("single-block node gave up");
    return 9;
}

static int32_t k_block_hits(void *const *args, uint32_t block, uint32_t num_blocks) {
    atomic_int *hits = *(atomic_int *const *)args[0];
    uint32_t want = *(const uint32_t *)args[1];
    if (num_blocks != want) return 1;
    atomic_fetch_add(&hits[block], 1);
    return 0;
}

static void test_failures_and_blocks(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_kernel_set_name(k_fail_node, "k_fail_node"));
    atomic_long counter = 0;
    for (int variant = 0; variant < 2; variant++) {
        mtiart_graph g;
        CHECK_OK(mtiart_graph_create(0, &g));
        size_t a, b, c;
        CHECK_OK(mtiart_graph_add_empty_node(g, NULL, 0, &a));
        if (variant == 0)
            CHECK_OK(mtiart_graph_add_kernel_node(g, &a, 1, k_fail_node, 4, NULL, 0, &b));
        else CHECK_OK(mtiart_graph_add_kernel_node(g, &a, 1, k_fail_single, 1, NULL, 0, &b));
        atomic_long *cp = &counter;
        mtiart_arg ca = {MTIART_ARG_VALUE, sizeof cp, &cp, 0};
        CHECK_OK(mtiart_graph_add_kernel_node(g, &b, 1, k_count, 1, &ca, 1, &c));
        mtiart_graph_exec x;
        CHECK_OK(mtiart_graph_instantiate(g, &x));
        CHECK_OK(mtiart_graph_destroy(g));
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
        CHECK(strstr(mtiart_last_error_message(), "gave up") != NULL);
        if (variant == 0) CHECK(strstr(mtiart_last_error_message(), "k_fail_node") != NULL);
        CHECK_OK(mtiart_stream_synchronize(s));
        /* The rest of the graph ran, and later replays report again. */
        CHECK(atomic_load(&counter) == 2 * variant + 1);
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
        CHECK(atomic_load(&counter) == 2 * variant + 2);
        CHECK_OK(mtiart_graph_exec_destroy(x));
    }
    /* Multi-block kernel nodes, in parallel branches */
    enum { B = 4, NB = 37 };
    atomic_int *hits = calloc(B * NB, sizeof *hits);
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t root;
    CHECK_OK(mtiart_graph_add_empty_node(g, NULL, 0, &root));
    for (int k = 0; k < B; k++) {
        atomic_int *mine = hits + k * NB;
        uint32_t nb = NB;
        mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof mine, &mine, 0},
                           {MTIART_ARG_VALUE, sizeof nb, &nb, 0}};
        size_t node;
        CHECK_OK(mtiart_graph_add_kernel_node(g, &root, 1, k_block_hits, NB, a, 2, &node));
    }
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    for (int r = 0; r < 25; r++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    int bad = 0;
    for (int i = 0; i < B * NB; i++) bad += atomic_load(&hits[i]) != 25;
    CHECK(bad == 0);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    free(hits);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A chain of single-block kernels (what a replay runs as a bare loop of calls): a failure
 * names its node and the rest still runs; updates that make a node multi-block, then
 * single-block again, or a copy, are replayed as such. */
static int32_t k_block_sum(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)num_blocks;
    atomic_fetch_add(*(atomic_long *const *)args[0], (long)block + 1);
    return 0;
}

static mtiart_graph chain_graph(atomic_long *counter, int variant, int64_t *src, int64_t *dst) {
    enum { N = 5, MIDDLE = 2 };
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_arg ca = {MTIART_ARG_VALUE, sizeof counter, &counter, 0};
    size_t prev = 0;
    for (size_t i = 0; i < N; i++) {
        const size_t *dep = i ? &prev : NULL;
        size_t node;
        if (i != MIDDLE)
            CHECK_OK(mtiart_graph_add_kernel_node(g, dep, i ? 1 : 0, k_count, 1, &ca, 1, &node));
        else if (variant == 0)
            CHECK_OK(mtiart_graph_add_kernel_node(g, dep, 1, k_fail_single, 1, &ca, 1, &node));
        else if (variant == 1)
            CHECK_OK(mtiart_graph_add_kernel_node(g, dep, 1, k_block_sum, 3, &ca, 1, &node));
        else if (variant == 2)
            CHECK_OK(mtiart_graph_add_kernel_node(g, dep, 1, k_block_sum, 1, &ca, 1, &node));
        else
            CHECK_OK(mtiart_graph_add_memcpy_node(g, dep, 1, dst, src, sizeof *src,
                                                  MTIART_MEMCPY_DEFAULT, &node));
        prev = node;
    }
    return g;
}

static void test_chain_of_kernels(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    atomic_long counter = 0;
    int64_t src = 42, dst = 0;
    mtiart_graph g = chain_graph(&counter, 0, &src, &dst);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g));
    for (int r = 1; r <= 2; r++) {
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
        CHECK(strstr(mtiart_last_error_message(), "graph node 2") != NULL);
        CHECK(strstr(mtiart_last_error_message(), "single-block node gave up") != NULL);
        CHECK(atomic_load(&counter) == 4 * r);
    }
    /* blocks 0..2 add 1 + 2 + 3; one block adds 1; a copy adds nothing */
    static const long middle[] = {0, 6, 1, 0};
    for (int variant = 1; variant <= 3; variant++) {
        g = chain_graph(&counter, variant, &src, &dst);
        if (variant == 3) {
            /* a kernel node cannot become a copy: instantiate that one afresh */
            CHECK_OK(mtiart_graph_exec_destroy(x));
            CHECK_OK(mtiart_graph_instantiate(g, &x));
        } else {
            CHECK_OK(mtiart_graph_exec_update(x, g, NULL));
        }
        CHECK_OK(mtiart_graph_destroy(g));
        atomic_store(&counter, 0);
        for (int r = 0; r < 3; r++) CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(atomic_load(&counter) == 3 * (4 + middle[variant]));
    }
    CHECK(dst == 42);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ a captured pipeline */

typedef struct host_acc {
    int64_t *src; /* device memory, read by the host function in stream order */
    int64_t sum;
    int calls;
} host_acc;

static int32_t h_accumulate(void *user) {
    host_acc *h = user;
    h->sum += h->src[0];
    h->calls++;
    return 0;
}

/* out[i] = in[i] * m + b over n elements, split over blocks */
static int32_t k_affine(void *const *args, uint32_t block, uint32_t num_blocks) {
    const int64_t *in = *(int64_t *const *)args[0];
    int64_t *out = *(int64_t **)args[1];
    int64_t m = *(const int64_t *)args[2];
    int64_t b = *(const int64_t *)args[3];
    uint32_t n = *(const uint32_t *)args[4];
    uint32_t per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) out[i] = in[i] * m + b;
    return 0;
}

static mtiart_status affine(mtiart_stream s, const int64_t *in, int64_t *out, int64_t m, int64_t b,
                            uint32_t n, uint32_t blocks) {
    mtiart_arg a[5] = {{MTIART_ARG_BUFFER_IN, 0, in, n * sizeof(int64_t)},
                       {MTIART_ARG_BUFFER_OUT, 0, out, n * sizeof(int64_t)},
                       {MTIART_ARG_VALUE, sizeof m, &m, 0},
                       {MTIART_ARG_VALUE, sizeof b, &b, 0},
                       {MTIART_ARG_VALUE, sizeof n, &n, 0}};
    return mtiart_launch_kernel(s, k_affine, blocks, a, 5);
}

/* a[] = input; fork: s1: b = 2a + 1; s2: c = 3a (after a fill of c with 7s, overwritten);
 * join: d = b + c (as d = b; d = d*1 + ... via two kernels), copy d back to the host, and
 * a host function sums d[0] into an accumulator. */
static int32_t k_add_arrays(void *const *args, uint32_t block, uint32_t num_blocks) {
    const int64_t *x = *(int64_t *const *)args[0];
    int64_t *y = *(int64_t **)args[1];
    uint32_t n = *(const uint32_t *)args[2];
    uint32_t per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) y[i] += x[i];
    return 0;
}

static void test_captured_pipeline(void) {
    enum { N = 2048 };
    mtiart_stream s0, s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    mtiart_event fork, j1, j2;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &j1));
    CHECK_OK(mtiart_event_create(0, &j2));
    static int64_t input[N], output[N];
    for (int i = 0; i < N; i++) input[i] = i;
    host_acc acc = {0};
    int64_t *keep = NULL; /* allocated in the capture, used after the graph is gone */

    CHECK_OK(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool;
    CHECK_OK(mtiart_stream_get_capture_info(s0, NULL, NULL, &pool));
    int64_t *a, *b, *c, *d;
    CHECK_OK(mtiart_malloc_async(s0, N * 8, (void **)&a));
    CHECK_OK(mtiart_malloc_async(s0, N * 8, (void **)&d));
    CHECK_OK(mtiart_malloc_async(s0, 8, (void **)&keep));
    CHECK_OK(mtiart_memcpy_async(s0, a, input, sizeof input, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_event_record(fork, s0));
    CHECK_OK(mtiart_stream_wait_event(s1, fork));
    CHECK_OK(mtiart_stream_wait_event(s2, fork));
    CHECK_OK(mtiart_malloc_async(s1, N * 8, (void **)&b));
    CHECK_OK(affine(s1, a, b, 2, 1, N, 8));
    CHECK_OK(mtiart_malloc_async(s2, N * 8, (void **)&c));
    int64_t seven = 7;
    CHECK_OK(mtiart_fill_async(s2, c, &seven, 8, N));
    CHECK_OK(affine(s2, a, c, 3, 0, N, 3));
    CHECK_OK(mtiart_event_record(j1, s1));
    CHECK_OK(mtiart_event_record(j2, s2));
    CHECK_OK(mtiart_stream_wait_event(s0, j1));
    CHECK_OK(mtiart_stream_wait_event(s0, j2));
    CHECK_OK(mtiart_memcpy_async(s0, d, b, N * 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    mtiart_arg aa[3];
    uint32_t n = N;
    aa[0] = (mtiart_arg){MTIART_ARG_BUFFER_IN, 0, c, N * 8};
    aa[1] = (mtiart_arg){MTIART_ARG_BUFFER_INOUT, 0, d, N * 8};
    aa[2] = (mtiart_arg){MTIART_ARG_VALUE, sizeof n, &n, 0};
    CHECK_OK(mtiart_launch_kernel(s0, k_add_arrays, 5, aa, 3));
    CHECK_OK(mtiart_memcpy_async(s0, output, d, sizeof output, MTIART_MEMCPY_DEVICE_TO_HOST));
    acc.src = d + 10;
    CHECK_OK(mtiart_launch_host_func(s0, h_accumulate, &acc));
    CHECK_OK(mtiart_memset_async(s0, keep, 0, 8));
    CHECK_OK(launch_add_i64(s0, keep, 1));
    /* Temporaries freed inside the capture */
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_free(c));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s0, &g));

    /* Node kinds present */
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    int kinds[8] = {0};
    for (size_t i = 0; i < count; i++) {
        mtiart_node_info info;
        CHECK_OK(mtiart_graph_get_node_info(g, i, &info));
        if (info.kind >= 0 && info.kind < 8) kinds[info.kind]++;
    }
    CHECK(kinds[MTIART_NODE_KERNEL] == 4);
    CHECK(kinds[MTIART_NODE_MEMCPY] == 3);
    CHECK(kinds[MTIART_NODE_FILL] == 2);
    CHECK(kinds[MTIART_NODE_HOST] == 1);
    /* Nothing ran during capture */
    CHECK(acc.calls == 0);
    CHECK(output[5] == 0);

    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g));
    for (int r = 0; r < 5; r++) {
        memset(output, 0, sizeof output);
        input[10] = 1000 + r; /* host sources are read at replay time */
        CHECK_OK(mtiart_graph_launch(x, r % 2 ? s1 : s0));
        CHECK_OK(mtiart_stream_synchronize(r % 2 ? s1 : s0));
        int bad = 0;
        for (int i = 0; i < N; i++) bad += output[i] != 5 * input[i] + 1;
        CHECK(bad == 0);
        CHECK(acc.calls == r + 1);
    }
    int64_t expect_sum = 0;
    for (int r = 0; r < 5; r++) expect_sum += 5 * (1000 + r) + 1;
    CHECK(acc.sum == expect_sum);
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.use_count == 1 && info.active_blocks == 3);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.use_count == 0 && info.exists == 1);

    /* Blocks allocated in the capture stay valid after graph and exec are gone. */
    int64_t host = 0;
    CHECK_OK(mtiart_memcpy(s0, &host, keep, 8, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 1);
    CHECK_OK(launch_add_i64(s0, keep, 41));
    CHECK_OK(mtiart_memcpy(s0, &host, keep, 8, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 42);
    CHECK_OK(mtiart_memcpy(s0, output, d, sizeof output, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(output[3] == 16);
    /* ...and the private pool's memory returns once they are freed. */
    mtiart_memory_stats before;
    CHECK_OK(mtiart_memory_get_stats(0, &before));
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(d));
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.reserved_bytes > 0);
    CHECK_OK(mtiart_free(keep));
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.reserved_bytes == 0 && info.active_blocks == 0);
    mtiart_memory_stats after;
    CHECK_OK(mtiart_memory_get_stats(0, &after));
    CHECK(after.reserved_bytes < before.reserved_bytes);
    CHECK(after.private_pools < before.private_pools || after.private_pools == 0);

    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(j1));
    CHECK_OK(mtiart_event_destroy(j2));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
}

/* A capture-allocated block used eagerly after its graph is gone, and freed while that
 * work is still queued: its memory must stay mapped until the work is done. */
static void test_pool_block_freed_with_pending_work(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool;
    CHECK_OK(mtiart_stream_get_capture_info(s, NULL, NULL, &pool));
    char *big;
    CHECK_OK(mtiart_malloc_async(s, 3 << 20, (void **)&big)); /* a segment of its own */
    CHECK_OK(mtiart_memset_async(s, big, 0, 3 << 20));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.use_count == 0 && info.active_blocks == 1);
    gate gt = {0};
    launch_gate(s, &gt);
    CHECK_OK(mtiart_memset_async(s, big, 0x11, 3 << 20));
    CHECK_OK(mtiart_free(big));
    atomic_store(&gt.open, 1);
    CHECK_OK(mtiart_stream_synchronize(s)); /* the memset ran on mapped memory */
    CHECK_OK(mtiart_empty_cache(0));
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.exists == 0 && info.reserved_bytes == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A replay launched on a capturing stream becomes a child graph node. */
static void test_launch_into_capture(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t node;
    atomic_long counter = 0;
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof(atomic_long *), &(atomic_long *){&counter}, 0};
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_count, 1, &a, 1, &node));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_graph_launch(x, s));
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    CHECK(atomic_load(&counter) == 0);
    size_t count = 0, edges = 0;
    CHECK_OK(mtiart_graph_get_node_count(g2, &count));
    CHECK_OK(mtiart_graph_get_edge_count(g2, &edges));
    CHECK(count == 2 && edges == 1);
    mtiart_node_info info;
    CHECK_OK(mtiart_graph_get_node_info(g2, 1, &info));
    CHECK(info.kind == MTIART_NODE_CHILD_GRAPH && info.num_dependencies == 1);
    mtiart_graph_exec outer;
    CHECK_OK(mtiart_graph_instantiate(g2, &outer));
    CHECK_OK(mtiart_graph_exec_get_node_count(outer, &count));
    CHECK(count == 2);
    CHECK_OK(mtiart_graph_launch(outer, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 2);
    CHECK_OK(mtiart_graph_exec_destroy(outer));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    /* Instantiating twice gives two independent executables. */
    mtiart_graph_exec x2;
    CHECK_OK(mtiart_graph_instantiate(g, &x2));
    CHECK(x2 != x);
    CHECK_OK(mtiart_graph_launch(x2, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x2));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ parallel replays */

typedef struct thread_log {
    atomic_int next;
    pthread_t ran_on[16];
} thread_log;

/* Kernel: ~5 ms of work, then notes the thread it ran on. */
static int32_t k_heavy_logged(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block, (void)num_blocks;
    thread_log *log = *(thread_log *const *)args[0];
    double until = now_ms() + 5;
    while (now_ms() < until) {}
    int i = atomic_fetch_add(&log->next, 1);
    if (i < 16) log->ran_on[i] = pthread_self();
    return 0;
}

/* Independent nodes far longer than the cost of waking helpers run on several workers
 * (once the runtime has seen how long a replay takes), and a graph of tiny nodes gives the
 * same results whichever way its replays run. */
static void test_heavy_nodes_run_in_parallel(void) {
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    thread_log log;
    memset(&log, 0, sizeof log);
    thread_log *lp = &log;
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof lp, &lp, 0};
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    enum { N = 8 };
    for (int i = 0; i < N; i++) {
        size_t node;
        CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_heavy_logged, 1, &a, 1, &node));
    }
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_launch(x, s)); /* the runtime learns how long a replay takes */
    CHECK_OK(mtiart_stream_synchronize(s));
    atomic_store(&log.next, 0);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&log.next) == N);
    int threads = 1;
    for (int i = 1; i < N; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = pthread_equal(log.ran_on[i], log.ran_on[j]);
        threads += !seen;
    }
    if (props.num_workers > 1) CHECK(threads >= 2);
    else CHECK(threads == 1);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(s));
}

int main(void) {
    CHECK_OK(mtiart_init());
    test_shapes();
    test_heavy_nodes_run_in_parallel();
    test_no_overlap();
    test_no_overlap_across_executables();
    test_introspection();
    test_failures_and_blocks();
    test_chain_of_kernels();
    test_captured_pipeline();
    test_pool_block_freed_with_pending_work();
    test_launch_into_capture();
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.allocated_bytes == 0 && st.private_pools == 0);
    TEST_MAIN_END();
}
