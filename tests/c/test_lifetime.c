/* Handle lifetimes: destroy races every use of each kind of handle.
 *
 * For streams, events, graphs and executables, a destroyer thread keeps replacing the
 * object behind a shared handle variable (create, publish, let the users at it, destroy)
 * while several user threads call every function that takes that kind of handle with
 * whatever value they last read, often one destroyed a moment ago. Every call must return
 * MTIART_SUCCESS, MTIART_ERROR_INVALID_HANDLE or an error its state documents (not ready,
 * capture refusals, a capturing stream that cannot be destroyed); nothing may crash, and
 * under ASan and TSan nothing may be reported. Afterwards the runtime still works and the
 * memory the rounds used is back.
 *
 * Device data is only ever written into blocks a user allocates for one stream and frees
 * on it, so the test itself has no data race for TSan to see; the runtime's races are the
 * subject. MTIART_STRESS_QUICK=1 runs shorter rounds (sanitizers, valgrind). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

enum { K_STREAM, K_EVENT, K_GRAPH, K_EXEC, K_COUNT };
static const char *const kind_names[K_COUNT] = {"stream", "event", "graph", "exec"};

#define USERS_PER_KIND 2

static double g_round_ms;
static atomic_int g_stop;
static _Atomic(uint64_t) g_current[K_COUNT]; /* the handle the users should use now */

/* Objects that live for a whole round. */
static mtiart_stream g_event_stream, g_exec_stream, g_graph_stream;
static mtiart_event g_stream_event, g_timing_event;
static mtiart_graph g_exec_source;
static void *g_dev; /* device memory that nodes name (kernels never touch it; conditions read it) */

/* Per kind: calls made, of which refused with INVALID_HANDLE, and objects destroyed. */
static atomic_long g_calls[K_COUNT], g_invalid[K_COUNT], g_destroyed[K_COUNT];

static pthread_mutex_t g_fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_fail[512];

static int32_t k_noop(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    return 0;
}

static int32_t h_noop(void *user) {
    (void)user;
    return 0;
}

static void fail(const char *what, int line, mtiart_status st) {
    pthread_mutex_lock(&g_fail_lock);
    if (!g_fail[0])
        snprintf(g_fail, sizeof g_fail, "line %d: %s -> %s: %s", line, what, mtiart_status_name(st),
                 mtiart_last_error_message());
    pthread_mutex_unlock(&g_fail_lock);
    atomic_store(&g_stop, 1);
}

/* What a call on a handle that may be destroyed at any moment may return. */
static bool allowed(mtiart_status st) {
    switch (st) {
    case MTIART_SUCCESS:
    case MTIART_NOT_READY:
    case MTIART_ERROR_INVALID_HANDLE:
    /* The stream users capture now and then (relaxed mode): the other users' calls on
     * that stream meet the documented capture rules. */
    case MTIART_ERROR_CAPTURE_UNSUPPORTED:
    case MTIART_ERROR_CAPTURE_INVALIDATED:
    case MTIART_ERROR_CAPTURE_UNJOINED:
    case MTIART_ERROR_CAPTURE_ISOLATION:
    case MTIART_ERROR_CAPTURE_WRONG_STREAM:
    case MTIART_ERROR_NOT_CAPTURING:
    case MTIART_ERROR_ALREADY_CAPTURING:
    case MTIART_ERROR_NOT_SUPPORTED: /* a graph launch onto a stream that began capturing */
        return true;
    default: return false;
    }
}

static mtiart_status use(int kind, const char *what, int line, mtiart_status st) {
    atomic_fetch_add_explicit(&g_calls[kind], 1, memory_order_relaxed);
    if (st == MTIART_ERROR_INVALID_HANDLE)
        atomic_fetch_add_explicit(&g_invalid[kind], 1, memory_order_relaxed);
    if (!allowed(st)) fail(what, line, st);
    return st;
}
#define USE(kind, call) use((kind), #call, __LINE__, (call))

/* A call that must succeed (setting up the objects themselves). */
#define MUST(call)                                                                                 \
    do {                                                                                           \
        mtiart_status must_ = (call);                                                              \
        if (must_ != MTIART_SUCCESS) fail(#call, __LINE__, must_);                                 \
    } while (0)

static uint32_t rnd(uint32_t *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* ------------------------------------------------------------------ users */

static void use_stream(uint32_t *seed, uint64_t handle) {
    mtiart_stream s = (mtiart_stream)(uintptr_t)handle;
    static const char host[64] = "read-only host source";
    void *p = NULL, *q = NULL;
    int device, priority;
    uint64_t id;
    mtiart_capture_status cs;
    uint32_t flags;
    mtiart_arg arg = {MTIART_ARG_BUFFER_IN, 0, g_dev, 64};
    char back[8];
    switch (rnd(seed) % 17) {
    case 0:
        if (rnd(seed) % 2)
            USE(K_STREAM, mtiart_launch_kernel(s, k_noop, 1 + rnd(seed) % 3, &arg, 1));
        else USE(K_STREAM, mtiart_launch_kernel_described(s, k_noop, 1, &arg, 1, "noop", NULL));
        break;
    case 1:
        /* Data only in blocks of this stream, freed on it. */
        if (USE(K_STREAM, mtiart_malloc_async(s, 64, &p)) != MTIART_SUCCESS) break;
        if (USE(K_STREAM, mtiart_malloc_async(s, 64, &q)) == MTIART_SUCCESS) {
            USE(K_STREAM, mtiart_memcpy_async(s, p, host, 64, MTIART_MEMCPY_HOST_TO_DEVICE));
            USE(K_STREAM, mtiart_memcpy_async(s, q, p, 64, MTIART_MEMCPY_DEVICE_TO_DEVICE));
            int32_t pattern = 7;
            USE(K_STREAM, mtiart_fill_async(s, q, &pattern, sizeof pattern, 16));
            USE(K_STREAM, mtiart_memset_async(s, p, 0, 64));
            MUST(mtiart_free(q));
        }
        MUST(mtiart_free(p));
        break;
    case 2: USE(K_STREAM, mtiart_event_record(g_stream_event, s)); break;
    case 3: USE(K_STREAM, mtiart_stream_wait_event(s, g_stream_event)); break;
    case 4: USE(K_STREAM, mtiart_stream_query(s)); break;
    case 5: USE(K_STREAM, mtiart_stream_synchronize(s)); break;
    case 6: {
        mtiart_pool_id pool = {0, 0};
        /* Half of the captures make memory nodes of their allocations: on a stream of their
         * own, since the other users' allocations on a shared stream would become the
         * graph's (no longer theirs once the capture ends). */
        uint64_t flags = rnd(seed) % 2 ? MTIART_CAPTURE_FLAG_MEM_NODES : 0;
        mtiart_stream on = s, own = NULL;
        if (flags) {
            MUST(mtiart_stream_create(0, 0, &own));
            on = own;
        }
        if (USE(K_STREAM, mtiart_stream_begin_capture_with_flags(on, MTIART_CAPTURE_MODE_RELAXED,
                                                                 pool, flags)) != MTIART_SUCCESS) {
            if (own) MUST(mtiart_stream_destroy(own));
            break;
        }
        USE(K_STREAM, mtiart_launch_kernel(on, k_noop, 1, &arg, 1));
        if (USE(K_STREAM, mtiart_malloc_async(on, 64, &p)) == MTIART_SUCCESS)
            USE(K_STREAM, mtiart_free_async(p, on));
        if (rnd(seed) % 2 &&
            USE(K_STREAM, mtiart_stream_begin_conditional(on, MTIART_CONDITIONAL_IF, g_dev, 4)) ==
                MTIART_SUCCESS) {
            /* an executable launched here is a child node of the body */
            USE(K_STREAM, mtiart_graph_launch(
                              (mtiart_graph_exec)(uintptr_t)atomic_load(&g_current[K_EXEC]), on));
            USE(K_STREAM, mtiart_stream_end_conditional(on));
        }
        mtiart_graph g = NULL;
        /* Only this thread ends its capture, and a capturing stream cannot be destroyed:
         * the end must find the capture. */
        mtiart_status st = USE(K_STREAM, mtiart_stream_end_capture(on, &g));
        if (st == MTIART_ERROR_INVALID_HANDLE || st == MTIART_ERROR_NOT_CAPTURING)
            fail("end_capture lost its capture", __LINE__, st);
        if (st == MTIART_SUCCESS) MUST(mtiart_graph_destroy(g));
        if (own) MUST(mtiart_stream_destroy(own));
        break;
    }
    case 7: {
        /* record_stream on a block of another stream, freed at once: the free waits. */
        mtiart_stream def;
        MUST(mtiart_stream_get_default(0, &def));
        MUST(mtiart_malloc_async(def, 128, &p));
        USE(K_STREAM, mtiart_record_stream(p, s));
        MUST(mtiart_free(p));
        break;
    }
    case 15: {
        /* A block of another stream freed on this one; freed plainly if it is gone. */
        mtiart_stream def;
        MUST(mtiart_stream_get_default(0, &def));
        MUST(mtiart_malloc_async(def, 128, &p));
        if (USE(K_STREAM, mtiart_free_async(p, s)) != MTIART_SUCCESS) MUST(mtiart_free(p));
        break;
    }
    case 8: USE(K_STREAM, mtiart_stream_get_device(s, &device)); break;
    case 9: USE(K_STREAM, mtiart_stream_get_priority(s, &priority)); break;
    case 10:
        if (rnd(seed) % 2) {
            USE(K_STREAM, mtiart_stream_get_id(s, &id));
        } else {
            char why[64];
            USE(K_STREAM, mtiart_stream_get_capture_invalidation(s, why, sizeof why, NULL));
        }
        break;
    case 11: USE(K_STREAM, mtiart_stream_synchronize_timeout(s, rnd(seed) % 2 ? 0 : 100000)); break;
    case 12:
        USE(K_STREAM, mtiart_memcpy_timeout(s, back, g_dev, sizeof back,
                                            MTIART_MEMCPY_DEVICE_TO_HOST, UINT64_MAX));
        break;
    case 13: USE(K_STREAM, mtiart_stream_get_flags(s, &flags)); break;
    case 14:
        USE(K_STREAM,
            mtiart_event_record_with_flags(g_stream_event, s, MTIART_EVENT_RECORD_EXTERNAL));
        break;
    default: USE(K_STREAM, mtiart_stream_get_capture_info(s, &cs, &id, NULL)); break;
    }
}

static void use_event(uint32_t *seed, uint64_t handle) {
    mtiart_event e = (mtiart_event)(uintptr_t)handle;
    float ms;
    mtiart_graph g;
    mtiart_graph_exec x;
    size_t node;
    switch (rnd(seed) % 9) {
    case 0: USE(K_EVENT, mtiart_event_record(e, g_event_stream)); break;
    case 6:
        USE(K_EVENT,
            mtiart_event_record_with_flags(e, g_event_stream, MTIART_EVENT_RECORD_EXTERNAL));
        break;
    case 7:
        /* Graph nodes hold their events: the replay records and waits after the destroy. */
        MUST(mtiart_graph_create(0, &g));
        if (USE(K_EVENT, mtiart_graph_add_event_record_node(g, NULL, 0, e, &node)) ==
            MTIART_SUCCESS)
            MUST(mtiart_graph_add_event_wait_node(g, &node, 1, g_timing_event, &node));
        USE(K_EVENT, mtiart_graph_add_event_wait_node(g, NULL, 0, e, &node));
        MUST(mtiart_graph_instantiate(g, &x));
        MUST(mtiart_graph_destroy(g));
        MUST(mtiart_graph_launch(x, g_event_stream));
        MUST(mtiart_graph_exec_destroy(x));
        break;
    case 1: USE(K_EVENT, mtiart_event_query(e)); break;
    case 2: USE(K_EVENT, mtiart_event_synchronize(e)); break;
    case 3: USE(K_EVENT, mtiart_event_elapsed_time(g_timing_event, e, &ms)); break;
    case 4: USE(K_EVENT, mtiart_event_elapsed_time(e, g_timing_event, &ms)); break;
    case 5: USE(K_EVENT, mtiart_event_synchronize_timeout(e, rnd(seed) % 2 ? 0 : 100000)); break;
    default: USE(K_EVENT, mtiart_stream_wait_event(g_event_stream, e)); break;
    }
}

static void use_graph(uint32_t *seed, uint64_t handle) {
    mtiart_graph g = (mtiart_graph)(uintptr_t)handle;
    char dot[256];
    size_t len, count, dep;
    int device;
    mtiart_pool_id pool;
    mtiart_node_info info;
    mtiart_buffer_use buf;
    mtiart_graph_exec x;
    mtiart_arg arg = {MTIART_ARG_BUFFER_INOUT, 0, g_dev, 32};
    const size_t deps[1] = {0};
    mtiart_graph body, clone;
    void *mem;
    switch (rnd(seed) % 20) {
    case 0:
        if (rnd(seed) % 2) USE(K_GRAPH, mtiart_graph_to_dot(g, dot, sizeof dot, &len));
        else USE(K_GRAPH, mtiart_graph_to_dot_with_flags(g, 0, dot, sizeof dot, &len));
        break;
    case 17:
        if (USE(K_GRAPH, mtiart_graph_clone(g, &clone)) == MTIART_SUCCESS)
            MUST(mtiart_graph_destroy(clone));
        break;
    case 18:
        /* a memory node pair on a graph that stays clonable otherwise: its own clone */
        if (USE(K_GRAPH, mtiart_graph_clone(g, &clone)) != MTIART_SUCCESS) break;
        MUST(mtiart_graph_add_mem_alloc_node(clone, NULL, 0, 64, &dep, &mem));
        MUST(mtiart_graph_add_mem_free_node(clone, &dep, 1, mem, &dep));
        MUST(mtiart_graph_destroy(clone));
        break;
    case 1: USE(K_GRAPH, mtiart_graph_get_node_info(g, 1, &info)); break;
    case 2: USE(K_GRAPH, mtiart_graph_get_node_buffer(g, 0, 0, &buf)); break;
    case 3: USE(K_GRAPH, mtiart_graph_get_node_dependency(g, 1, 0, &dep)); break;
    case 4:
        if (USE(K_GRAPH, rnd(seed) % 2
                             ? mtiart_graph_instantiate(g, &x)
                             : mtiart_graph_instantiate_with_flags(
                                   g,
                                   rnd(seed) % 2 ? MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS
                                                 : MTIART_GRAPH_INSTANTIATE_NO_FUSION,
                                   &x)) != MTIART_SUCCESS)
            break;
        MUST(mtiart_graph_launch(x, g_graph_stream));
        MUST(mtiart_graph_exec_destroy(x)); /* the launch in flight keeps it */
        if (rnd(seed) % 4 == 0) MUST(mtiart_stream_synchronize(g_graph_stream));
        break;
    case 5: USE(K_GRAPH, mtiart_graph_add_kernel_node(g, deps, 1, k_noop, 1, &arg, 1, &dep)); break;
    case 6: USE(K_GRAPH, mtiart_graph_get_node_count(g, &count)); break;
    case 7: USE(K_GRAPH, mtiart_graph_get_edge_count(g, &count)); break;
    case 8: USE(K_GRAPH, mtiart_graph_get_device(g, &device)); break;
    case 10: USE(K_GRAPH, mtiart_graph_add_host_node(g, deps, 1, h_noop, NULL, &dep)); break;
    case 11:
        /* Another graph as a child, or (while it is small: each copy doubles it) the graph
         * itself: copies taken under its lock. */
        if (mtiart_graph_get_node_count(g, &count) == MTIART_SUCCESS && count < 6)
            USE(K_GRAPH, mtiart_graph_add_child_graph_node(g, deps, 1, g, &dep));
        else USE(K_GRAPH, mtiart_graph_add_child_graph_node(g, deps, 1, g_exec_source, &dep));
        break;
    case 12:
        USE(K_GRAPH, mtiart_graph_add_conditional_node(g, deps, 1, MTIART_CONDITIONAL_IF, g_dev, 4,
                                                       g_exec_source, &dep));
        break;
    case 13: {
        /* INVALID_VALUE: the node is no child or conditional node (or not there yet). */
        mtiart_status st = mtiart_graph_get_node_body(g, 2 + rnd(seed) % 4, &body);
        if (st == MTIART_SUCCESS) MUST(mtiart_graph_destroy(body));
        else if (st != MTIART_ERROR_INVALID_VALUE) USE(K_GRAPH, st);
        break;
    }
    case 14: USE(K_GRAPH, mtiart_graph_kernel_node_set_args(g, 0, &arg, 1)); break;
    case 15: {
        /* INVALID_VALUE: its kernel is this program's own, which no file can name. */
        mtiart_status st = mtiart_graph_save(g, "/nonexistent/g.mtg", NULL, 0);
        if (st != MTIART_ERROR_INVALID_VALUE) USE(K_GRAPH, st);
        break;
    }
    case 16:
        if (rnd(seed) % 2) {
            USE(K_GRAPH, mtiart_graph_check_races(g, NULL, 0, &count));
        } else {
            /* INVALID_VALUE: the graph's kernel nodes race (parallel INOUT uses). */
            mtiart_status st =
                mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_CHECK_RACES, &x);
            if (st == MTIART_SUCCESS) MUST(mtiart_graph_exec_destroy(x));
            else if (st != MTIART_ERROR_INVALID_VALUE) USE(K_GRAPH, st);
        }
        break;
    default: USE(K_GRAPH, mtiart_graph_get_pool(g, &pool)); break;
    }
}

static void use_exec(uint32_t *seed, uint64_t handle) {
    mtiart_graph_exec x = (mtiart_graph_exec)(uintptr_t)handle;
    size_t count;
    mtiart_arg arg = {MTIART_ARG_BUFFER_INOUT, 0, g_dev, 16};
    switch (rnd(seed) % 8) {
    case 0:
    case 1: USE(K_EXEC, mtiart_graph_launch(x, g_exec_stream)); break;
    case 2: USE(K_EXEC, mtiart_graph_exec_get_node_count(x, &count)); break;
    case 3: USE(K_EXEC, mtiart_graph_exec_update(x, g_exec_source, NULL)); break;
    case 4: USE(K_EXEC, mtiart_graph_exec_kernel_node_set_args(x, rnd(seed) % 2, &arg, 1)); break;
    case 5: {
        /* INVALID_VALUE: not saveable (a static kernel), and no bindings to bind. */
        mtiart_status st = rnd(seed) % 2 ? mtiart_graph_exec_save(x, "/nonexistent/g.mtg", NULL, 0)
                                         : mtiart_graph_exec_bind(x, "x", g_dev, 16);
        if (st != MTIART_ERROR_INVALID_VALUE) USE(K_EXEC, st);
        break;
    }
    case 6:
        if (rnd(seed) % 2) USE(K_EXEC, mtiart_graph_exec_check_races(x, NULL, 0, &count));
        else USE(K_EXEC, mtiart_graph_exec_set_schedule(x, (mtiart_schedule)(rnd(seed) % 4), 7));
        break;
    default: MUST(mtiart_stream_synchronize(g_exec_stream)); break; /* keep the queue short */
    }
}

typedef struct user {
    int kind;
    uint32_t seed;
    uint64_t held; /* the handle this user works with, often destroyed by now */
} user;

static void *user_main(void *arg) {
    user *u = arg;
    static void (*const use_fn[K_COUNT])(uint32_t *, uint64_t) = {use_stream, use_event, use_graph,
                                                                  use_exec};
    while (!atomic_load(&g_stop)) {
        /* Keep the handle for a while: the destroyer will have destroyed it meanwhile. */
        if (!u->held || rnd(&u->seed) % 8 == 0) u->held = atomic_load(&g_current[u->kind]);
        use_fn[u->kind](&u->seed, u->held);
    }
    return NULL;
}

/* ------------------------------------------------------------------ destroyers */

/* A new object of the kind, ready for every use above. */
static uint64_t make(int kind, uint32_t *seed) {
    mtiart_arg arg = {MTIART_ARG_BUFFER_INOUT, 0, g_dev, 32};
    size_t node, dep = 0;
    switch (kind) {
    case K_STREAM: {
        mtiart_stream s;
        MUST(mtiart_stream_create(0, -(int)(rnd(seed) % 4), &s));
        return (uint64_t)(uintptr_t)s;
    }
    case K_EVENT: {
        mtiart_event e;
        MUST(mtiart_event_create(MTIART_EVENT_TIMING, &e));
        MUST(mtiart_event_record(e, g_event_stream)); /* elapsed_time needs one record */
        return (uint64_t)(uintptr_t)e;
    }
    case K_GRAPH: {
        mtiart_graph g;
        MUST(mtiart_graph_create(0, &g));
        MUST(mtiart_graph_add_kernel_node(g, NULL, 0, k_noop, 1, &arg, 1, &node));
        MUST(mtiart_graph_add_kernel_node(g, &dep, 1, k_noop, 2, &arg, 1, &node));
        return (uint64_t)(uintptr_t)g;
    }
    default: {
        mtiart_graph_exec x;
        MUST(mtiart_graph_instantiate(g_exec_source, &x));
        return (uint64_t)(uintptr_t)x;
    }
    }
}

static void destroy(int kind, uint64_t handle) {
    mtiart_status st;
    switch (kind) {
    case K_STREAM:
        /* A user may be capturing on it: refused until that capture ends. */
        while ((st = mtiart_stream_destroy((mtiart_stream)(uintptr_t)handle)) ==
               MTIART_ERROR_NOT_PERMITTED)
            sleep_ms(0.05);
        break;
    case K_EVENT: st = mtiart_event_destroy((mtiart_event)(uintptr_t)handle); break;
    case K_GRAPH: st = mtiart_graph_destroy((mtiart_graph)(uintptr_t)handle); break;
    default: st = mtiart_graph_exec_destroy((mtiart_graph_exec)(uintptr_t)handle); break;
    }
    if (st != MTIART_SUCCESS) fail("destroy", __LINE__, st);
    atomic_fetch_add(&g_destroyed[kind], 1);
}

static void *destroyer_main(void *arg) {
    int kind = (int)(intptr_t)arg;
    uint32_t seed = 77u + (uint32_t)kind;
    while (!atomic_load(&g_stop)) {
        uint64_t next = make(kind, &seed);
        uint64_t old = atomic_exchange(&g_current[kind], next);
        /* Users still hold `old` (and older values): destroy it under their feet, at
         * once or after a moment. */
        if (rnd(&seed) % 2) sleep_ms((double)(rnd(&seed) % 200) / 1000.0);
        destroy(kind, old);
    }
    return NULL;
}

/* ------------------------------------------------------------------ rounds */

static void setup_round(void) {
    MUST(mtiart_stream_create(0, 0, &g_event_stream));
    MUST(mtiart_stream_create(0, 0, &g_exec_stream));
    MUST(mtiart_stream_create(0, 0, &g_graph_stream));
    MUST(mtiart_event_create(0, &g_stream_event));
    MUST(mtiart_event_create(MTIART_EVENT_TIMING, &g_timing_event));
    MUST(mtiart_event_record(g_timing_event, g_event_stream));
    mtiart_arg arg = {MTIART_ARG_BUFFER_INOUT, 0, g_dev, 32};
    size_t a, b, dep[2];
    MUST(mtiart_graph_create(0, &g_exec_source));
    MUST(mtiart_graph_add_kernel_node(g_exec_source, NULL, 0, k_noop, 1, &arg, 1, &a));
    MUST(mtiart_graph_add_kernel_node(g_exec_source, NULL, 0, k_noop, 3, &arg, 1, &b));
    dep[0] = a;
    dep[1] = b;
    MUST(mtiart_graph_add_empty_node(g_exec_source, dep, 2, &a));
    uint32_t seed = 1;
    for (int k = 0; k < K_COUNT; k++) atomic_store(&g_current[k], make(k, &seed));
}

static void teardown_round(void) {
    for (int k = 0; k < K_COUNT; k++) destroy(k, atomic_load(&g_current[k]));
    MUST(mtiart_device_synchronize(0));
    MUST(mtiart_graph_destroy(g_exec_source));
    MUST(mtiart_event_destroy(g_stream_event));
    MUST(mtiart_event_destroy(g_timing_event));
    MUST(mtiart_stream_destroy(g_event_stream));
    MUST(mtiart_stream_destroy(g_exec_stream));
    MUST(mtiart_stream_destroy(g_graph_stream));
}

static void run_round(int round) {
    setup_round();
    pthread_t destroyers[K_COUNT], users[K_COUNT * USERS_PER_KIND];
    user u[K_COUNT * USERS_PER_KIND];
    atomic_store(&g_stop, 0);
    for (int k = 0; k < K_COUNT; k++) {
        pthread_create(&destroyers[k], NULL, destroyer_main, (void *)(intptr_t)k);
        for (int i = 0; i < USERS_PER_KIND; i++) {
            user *v = &u[k * USERS_PER_KIND + i];
            v->kind = k;
            v->seed = (uint32_t)(round * 1000 + k * 10 + i + 1);
            v->held = 0;
            pthread_create(&users[k * USERS_PER_KIND + i], NULL, user_main, v);
        }
    }
    sleep_ms(g_round_ms);
    atomic_store(&g_stop, 1);
    for (int k = 0; k < K_COUNT; k++) pthread_join(destroyers[k], NULL);
    for (int i = 0; i < K_COUNT * USERS_PER_KIND; i++) pthread_join(users[i], NULL);
    teardown_round();
}

int main(void) {
    const char *quick = getenv("MTIART_STRESS_QUICK");
    int is_quick = quick && *quick && strcmp(quick, "0") != 0;
    int rounds = is_quick ? 2 : 4;
    g_round_ms = is_quick ? 300 : 700;

    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_malloc(0, 4096, &g_dev));
    /* Zeroed: conditional nodes read their flag in it (and nothing writes it). */
    CHECK_OK(mtiart_memset_async(def, g_dev, 0, 4096));
    CHECK_OK(mtiart_stream_synchronize(def));
    mtiart_memory_stats before;
    CHECK_OK(mtiart_memory_get_stats(0, &before));

    for (int r = 0; r < rounds && !g_fail[0]; r++) run_round(r);
    if (g_fail[0]) {
        fprintf(stderr, "%s\n", g_fail);
        test_failures++;
    }

    for (int k = 0; k < K_COUNT; k++) {
        long calls = atomic_load(&g_calls[k]), invalid = atomic_load(&g_invalid[k]);
        long destroyed = atomic_load(&g_destroyed[k]);
        printf("%-6s %8ld calls, %7ld on a destroyed handle, %6ld destroyed\n", kind_names[k],
               calls, invalid, destroyed);
        /* The race was actually run: objects came and went under calls that succeeded. */
        CHECK(destroyed > 10 && calls > 100 && invalid > 0 && calls - invalid > 0);
    }

    /* The runtime is whole: work runs, and what the rounds allocated is back. */
    mtiart_stream s;
    atomic_long counter = 0;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    launch_count(s, &counter);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0)); /* pools of discarded captures leave with their cache */
    mtiart_memory_stats after;
    CHECK_OK(mtiart_memory_get_stats(0, &after));
    CHECK(after.allocated_bytes == before.allocated_bytes);
    CHECK(after.private_pools == 0);
    CHECK_OK(mtiart_free(g_dev));
    TEST_MAIN_END();
}
