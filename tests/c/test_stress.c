/* Stress: several threads, for a bounded time, create streams and events, enqueue kernels,
 * copies and host functions, allocate and free (with record_stream), capture small
 * fork/join graphs, replay them (also a graph shared by all threads), make kernels fail,
 * and destroy everything again, checking every result.
 *
 * MTIART_STRESS_QUICK=1 runs a much smaller number of iterations (for valgrind). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

static int g_quick;
static double g_seconds;
static int g_max_iterations;

static mtiart_graph_exec g_shared_exec;
static atomic_long g_shared_launches;
static int64_t *g_shared_value; /* incremented by every replay of the shared graph */
static atomic_int g_shared_inflight, g_shared_overlaps;

static int32_t k_shared_begin(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    if (atomic_exchange(&g_shared_inflight, 1)) atomic_fetch_add(&g_shared_overlaps, 1);
    return 0;
}

static int32_t k_shared_end(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    atomic_store(&g_shared_inflight, 0);
    return 0;
}

static int32_t k_fill_index(void *const *args, uint32_t block, uint32_t num_blocks) {
    int32_t *out = *(int32_t **)args[0];
    uint32_t n = *(const uint32_t *)args[1];
    int32_t base = *(const int32_t *)args[2];
    uint32_t per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t i = block * per; i < (block + 1) * per && i < n; i++) out[i] = base + (int32_t)i;
    return 0;
}

static int32_t k_stress_fail(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)num_blocks;
    if (block == 0) {
        mtiart_kernel_set_error_message("stress failure");
        return 3;
    }
    return 0;
}

typedef struct worker {
    int index;
    uint32_t seed;
    int failed;
    long iterations;
    long graphs;
    char where[128];
} worker;

#define FAIL_IF(cond)                                                                              \
    do {                                                                                           \
        if (cond) {                                                                                \
            if (!w->failed)                                                                        \
                snprintf(w->where, sizeof w->where, "line %d: %s (%s)", __LINE__, #cond,           \
                         mtiart_last_error_message());                                             \
            w->failed = 1;                                                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static uint32_t rnd(worker *w) {
    w->seed = w->seed * 1103515245u + 12345u;
    return w->seed >> 8;
}

/* Streams: many kernels and copies, then the result. */
static void do_stream_work(worker *w) {
    mtiart_stream s;
    FAIL_IF(mtiart_stream_create(0, -(int)(rnd(w) % 4), &s));
    int64_t *x;
    FAIL_IF(mtiart_malloc_async(s, sizeof *x, (void **)&x));
    FAIL_IF(mtiart_memset_async(s, x, 0, sizeof *x));
    int n = 1 + (int)(rnd(w) % (g_quick ? 20 : 200));
    for (int i = 0; i < n; i++) FAIL_IF(launch_add_i64(s, x, i));
    int64_t host = -1;
    FAIL_IF(mtiart_memcpy(s, &host, x, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    FAIL_IF(host != (int64_t)n * (n - 1) / 2);
    FAIL_IF(mtiart_free(x));
    /* Sometimes destroy with work still queued (on memory that stays live). */
    if (rnd(w) % 2) {
        FAIL_IF(mtiart_malloc_async(s, 64, (void **)&x));
        for (int i = 0; i < n; i++) FAIL_IF(mtiart_memset_async(s, x, i, 64));
        FAIL_IF(mtiart_record_stream(x, s));
        FAIL_IF(mtiart_stream_destroy(s));
        FAIL_IF(mtiart_free(x)); /* stream-ordered after the destroyed stream's work */
        return;
    }
    FAIL_IF(mtiart_stream_destroy(s));
}

/* Multi-block kernel, copies back, event across two streams. */
static void do_blocks_and_events(worker *w) {
    mtiart_stream a, b;
    mtiart_event e;
    FAIL_IF(mtiart_stream_create(0, 0, &a));
    FAIL_IF(mtiart_stream_create(0, 0, &b));
    FAIL_IF(mtiart_event_create(rnd(w) % 2 ? MTIART_EVENT_TIMING : 0, &e));
    uint32_t n = 1 + rnd(w) % 5000;
    int32_t base = (int32_t)(rnd(w) % 1000);
    int32_t *buf;
    FAIL_IF(mtiart_malloc_async(a, n * sizeof(int32_t), (void **)&buf));
    mtiart_arg args[3] = {{MTIART_ARG_BUFFER_OUT, 0, buf, n * sizeof(int32_t)},
                          {MTIART_ARG_VALUE, sizeof n, &n, 0},
                          {MTIART_ARG_VALUE, sizeof base, &base, 0}};
    FAIL_IF(mtiart_launch_kernel(a, k_fill_index, 1 + rnd(w) % 16, args, 3));
    FAIL_IF(mtiart_event_record(e, a));
    FAIL_IF(mtiart_stream_wait_event(b, e));
    int32_t *host = malloc(n * sizeof(int32_t));
    FAIL_IF(mtiart_memcpy_async(b, host, buf, n * sizeof(int32_t), MTIART_MEMCPY_DEVICE_TO_HOST));
    /* The block is used by b: record it, free it on a right away. */
    FAIL_IF(mtiart_record_stream(buf, b));
    FAIL_IF(mtiart_free(buf));
    if (rnd(w) % 3 == 0) FAIL_IF(mtiart_event_destroy(e));
    else {
        FAIL_IF(mtiart_event_synchronize(e));
        FAIL_IF(mtiart_event_query(e) != MTIART_SUCCESS);
        FAIL_IF(mtiart_event_destroy(e));
    }
    FAIL_IF(mtiart_stream_synchronize(b));
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) bad += host[i] != base + (int32_t)i;
    free(host);
    FAIL_IF(bad != 0);
    FAIL_IF(mtiart_stream_destroy(a));
    FAIL_IF(mtiart_stream_destroy(b));
}

/* Capture a fork/join graph with allocations, replay it, check, destroy. */
static void do_capture(worker *w) {
    mtiart_stream s0, s1;
    mtiart_event fork, join;
    FAIL_IF(mtiart_stream_create(0, 0, &s0));
    FAIL_IF(mtiart_stream_create(0, 0, &s1));
    FAIL_IF(mtiart_event_create(0, &fork));
    FAIL_IF(mtiart_event_create(0, &join));
    mtiart_pool_id pool = {0, 0};
    int64_t *x, *y, *tmp;
    int64_t k = 1 + (int64_t)(rnd(w) % 100);
    FAIL_IF(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_THREAD_LOCAL, pool));
    FAIL_IF(mtiart_malloc_async(s0, 16, (void **)&x));
    FAIL_IF(mtiart_malloc_async(s0, 16, (void **)&y));
    FAIL_IF(mtiart_memset_async(s0, x, 0, 16));
    FAIL_IF(mtiart_memset_async(s0, y, 0, 16));
    FAIL_IF(mtiart_event_record(fork, s0));
    FAIL_IF(mtiart_stream_wait_event(s1, fork));
    FAIL_IF(mtiart_malloc_async(s1, 64, (void **)&tmp));
    FAIL_IF(mtiart_memset_async(s1, tmp, 0, 64));
    FAIL_IF(launch_add_i64(s1, tmp, k));
    FAIL_IF(mtiart_memcpy_async(s1, y, tmp, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    FAIL_IF(mtiart_free(tmp));
    FAIL_IF(launch_add_i64(s0, x, 2 * k));
    FAIL_IF(mtiart_event_record(join, s1));
    FAIL_IF(mtiart_stream_wait_event(s0, join));
    FAIL_IF(launch_add_i64(s0, x, 0));
    int abandon = rnd(w) % 8 == 0;
    mtiart_graph g;
    if (abandon) {
        /* An invalidated capture: this thread's own unsafe call. */
        FAIL_IF(mtiart_device_synchronize(0) != MTIART_ERROR_CAPTURE_UNSUPPORTED);
        FAIL_IF(mtiart_stream_end_capture(s0, &g) != MTIART_ERROR_CAPTURE_INVALIDATED);
    } else {
        FAIL_IF(mtiart_stream_end_capture(s0, &g));
        mtiart_graph_exec x_exec;
        FAIL_IF(mtiart_graph_instantiate(g, &x_exec));
        if (rnd(w) % 2) { /* the executable outlives its graph */
            FAIL_IF(mtiart_graph_destroy(g));
            g = NULL;
        }
        int replays = 1 + (int)(rnd(w) % 5);
        for (int r = 0; r < replays; r++) FAIL_IF(mtiart_graph_launch(x_exec, r % 2 ? s1 : s0));
        FAIL_IF(mtiart_stream_synchronize(s0));
        FAIL_IF(mtiart_stream_synchronize(s1));
        int64_t hx[2] = {0}, hy[2] = {0};
        FAIL_IF(mtiart_memcpy(s0, hx, x, 16, MTIART_MEMCPY_DEVICE_TO_HOST));
        FAIL_IF(mtiart_memcpy(s0, hy, y, 16, MTIART_MEMCPY_DEVICE_TO_HOST));
        FAIL_IF(hx[0] != 2 * k || hy[0] != k);
        if (rnd(w) % 2) {
            /* Destroy the exec with a launch in flight. */
            FAIL_IF(mtiart_graph_launch(x_exec, s0));
            FAIL_IF(mtiart_graph_exec_destroy(x_exec));
            FAIL_IF(mtiart_stream_synchronize(s0));
        } else {
            FAIL_IF(mtiart_graph_exec_destroy(x_exec));
        }
        if (g) FAIL_IF(mtiart_graph_destroy(g));
        w->graphs++;
    }
    FAIL_IF(mtiart_free(x));
    FAIL_IF(mtiart_free(y));
    FAIL_IF(mtiart_event_destroy(fork));
    FAIL_IF(mtiart_event_destroy(join));
    FAIL_IF(mtiart_stream_destroy(s0));
    FAIL_IF(mtiart_stream_destroy(s1));
}

/* The shared executable, launched from every thread on its own stream. */
static void do_shared_replay(worker *w) {
    mtiart_stream s;
    FAIL_IF(mtiart_stream_create(0, 0, &s));
    int n = 1 + (int)(rnd(w) % 4);
    for (int i = 0; i < n; i++) {
        FAIL_IF(mtiart_graph_launch(g_shared_exec, s));
        atomic_fetch_add(&g_shared_launches, 1);
    }
    if (rnd(w) % 2) FAIL_IF(mtiart_stream_synchronize(s));
    FAIL_IF(mtiart_stream_destroy(s));
}

/* A failing kernel: reported once, the stream keeps working. */
static void do_failure(worker *w) {
    mtiart_stream s;
    FAIL_IF(mtiart_stream_create(0, 0, &s));
    atomic_long counter = 0;
    FAIL_IF(mtiart_launch_kernel(s, k_stress_fail, 1 + rnd(w) % 4, NULL, 0));
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof(atomic_long *), &(atomic_long *){&counter}, 0};
    FAIL_IF(mtiart_launch_kernel(s, k_count, 1, &a, 1));
    FAIL_IF(mtiart_stream_synchronize(s) != MTIART_ERROR_KERNEL_FAILED);
    FAIL_IF(strstr(mtiart_last_error_message(), "stress failure") == NULL);
    FAIL_IF(mtiart_stream_synchronize(s) != MTIART_SUCCESS);
    FAIL_IF(atomic_load(&counter) != 1);
    FAIL_IF(mtiart_stream_destroy(s));
}

/* Allocation churn on a few streams. */
static void do_alloc_churn(worker *w) {
    mtiart_stream s;
    FAIL_IF(mtiart_stream_create(0, 0, &s));
    void *live[16] = {0};
    int n = g_quick ? 30 : 300;
    for (int i = 0; i < n; i++) {
        int slot = (int)(rnd(w) % 16);
        if (live[slot]) {
            FAIL_IF(mtiart_free(live[slot]));
            live[slot] = NULL;
        } else {
            size_t size = 1 + rnd(w) % (rnd(w) % 8 ? 8192 : 3u << 20);
            FAIL_IF(mtiart_malloc_async(s, size, &live[slot]));
            FAIL_IF(mtiart_memset_async(s, live[slot], slot, size));
        }
    }
    for (int i = 0; i < 16; i++)
        if (live[i]) FAIL_IF(mtiart_free(live[i]));
    if (rnd(w) % 4 == 0) FAIL_IF(mtiart_empty_cache(0));
    FAIL_IF(mtiart_stream_destroy(s));
}

static void *worker_main(void *arg) {
    worker *w = arg;
    double end = now_ms() + g_seconds * 1000;
    while (!w->failed && now_ms() < end && w->iterations < g_max_iterations) {
        switch (rnd(w) % 6) {
        case 0: do_stream_work(w); break;
        case 1: do_blocks_and_events(w); break;
        case 2: do_capture(w); break;
        case 3: do_shared_replay(w); break;
        case 4: do_failure(w); break;
        default: do_alloc_churn(w); break;
        }
        w->iterations++;
    }
    return NULL;
}

int main(void) {
    const char *quick = getenv("MTIART_STRESS_QUICK");
    g_quick = quick && *quick && strcmp(quick, "0") != 0;
    g_seconds = g_quick ? 8.0 : 5.0;
    g_max_iterations = g_quick ? 150 : 1000000;
    int threads = g_quick ? 3 : 6;
    CHECK_OK(mtiart_init());

    /* The shared graph: begin -> 4 adds -> end, on a device counter. */
    CHECK_OK(mtiart_malloc(0, sizeof(int64_t), (void **)&g_shared_value));
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_memset_async(def, g_shared_value, 0, sizeof(int64_t)));
    CHECK_OK(mtiart_stream_synchronize(def));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t begin, mids[4], end_node;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_shared_begin, 1, NULL, 0, &begin));
    int64_t one = 1;
    mtiart_arg add[2] = {{MTIART_ARG_BUFFER_INOUT, 0, g_shared_value, sizeof(int64_t)},
                         {MTIART_ARG_VALUE, sizeof one, &one, 0}};
    /* The adds form a chain (they write one location), between begin and end. */
    size_t prev = begin;
    for (int i = 0; i < 4; i++) {
        CHECK_OK(mtiart_graph_add_kernel_node(g, &prev, 1, k_add_i64, 1, add, 2, &mids[i]));
        prev = mids[i];
    }
    CHECK_OK(mtiart_graph_add_kernel_node(g, &prev, 1, k_shared_end, 1, NULL, 0, &end_node));
    CHECK_OK(mtiart_graph_instantiate(g, &g_shared_exec));
    CHECK_OK(mtiart_graph_destroy(g));

    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    for (int i = 0; i < threads; i++) {
        w[i].index = i;
        w[i].seed = 777u + 31u * (uint32_t)i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    long total = 0, graphs = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (w[i].failed) fprintf(stderr, "thread %d failed at %s\n", i, w[i].where);
        CHECK(!w[i].failed);
        total += w[i].iterations;
        graphs += w[i].graphs;
    }
    CHECK_OK(mtiart_device_synchronize(0));
    int64_t shared = -1;
    CHECK_OK(
        mtiart_memcpy(def, &shared, g_shared_value, sizeof shared, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(shared == 4 * atomic_load(&g_shared_launches));
    CHECK(atomic_load(&g_shared_overlaps) == 0);
    CHECK_OK(mtiart_graph_exec_destroy(g_shared_exec));
    CHECK_OK(mtiart_free(g_shared_value));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.allocated_bytes == 0 && st.active_blocks == 0);
    CHECK(st.reserved_bytes == 0 && st.private_pools == 0);
    printf("stress: %d threads, %ld iterations, %ld graphs, %ld shared replays%s\n", threads, total,
           graphs, (long)atomic_load(&g_shared_launches), g_quick ? " (quick)" : "");
    free(w);
    free(th);
    TEST_MAIN_END();
}
