/* Stream capture: begin/end and capture info, private pools, allocations during capture,
 * deferred execution, argument snapshots, fork/join, unjoined and wrong-stream ends,
 * unsafe calls and invalidation, capture modes across threads, OOM during capture and
 * reuse of blocks freed during capture. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

static mtiart_pool_info pool_info(mtiart_pool_id id) {
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, id, &info));
    return info;
}

static mtiart_capture_status capture_status(mtiart_stream s, uint64_t *id, mtiart_pool_id *pool) {
    mtiart_capture_status st = (mtiart_capture_status)-1;
    CHECK_OK(mtiart_stream_get_capture_info(s, &st, id, pool));
    return st;
}

static size_t node_count(mtiart_graph g) {
    size_t n = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &n));
    return n;
}

/* Run a graph once on `s` and wait. */
static void replay(mtiart_graph g, mtiart_stream s, int times) {
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    for (int i = 0; i < times; i++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
}

/* The stream is out of capture mode and runs work eagerly. */
static void check_usable(mtiart_stream s, int line) {
    mtiart_capture_status st;
    uint64_t id = 99;
    CHECK_OK(mtiart_stream_get_capture_info(s, &st, &id, NULL));
    atomic_long counter = 0;
    launch_count(s, &counter);
    mtiart_status sync = mtiart_stream_synchronize(s);
    if (st != MTIART_CAPTURE_STATUS_NONE || id != 0 || sync != MTIART_SUCCESS ||
        atomic_load(&counter) != 1) {
        fprintf(stderr, "line %d: stream not usable after capture (status %d, sync %s)\n", line,
                (int)st, mtiart_status_name(sync));
        test_failures++;
    }
}
#define CHECK_USABLE(s) check_usable((s), __LINE__)

static void test_begin_end_info(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    uint64_t id = 5;
    mtiart_pool_id pool = {7, 7};
    CHECK(capture_status(s, &id, &pool) == MTIART_CAPTURE_STATUS_NONE);
    CHECK(id == 0 && pool.first == 0 && pool.second == 0);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK(capture_status(s, &id, &pool) == MTIART_CAPTURE_STATUS_ACTIVE);
    CHECK(id != 0);
    CHECK(pool.first != 0 && pool.second == 0); /* a new private pool (n, 0) */
    mtiart_pool_info info = pool_info(pool);
    CHECK(info.exists == 1 && info.use_count == 1);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_NONE);
    mtiart_pool_id gp;
    CHECK_OK(mtiart_graph_get_pool(g, &gp));
    CHECK(gp.first == pool.first && gp.second == 0);
    CHECK(pool_info(pool).use_count == 1);
    CHECK(node_count(g) == 0);
    replay(g, s, 2); /* an empty graph replays fine */
    /* Another capture gets another pool and id. */
    uint64_t id2;
    mtiart_pool_id pool2;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    CHECK(capture_status(s, &id2, &pool2) == MTIART_CAPTURE_STATUS_ACTIVE);
    CHECK(id2 != id && pool2.first != pool.first && pool2.second == 0);
    /* A capturing stream cannot be destroyed, nor begin again. */
    CHECK_STATUS(mtiart_stream_destroy(s), MTIART_ERROR_NOT_PERMITTED);
    CHECK_STATUS(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}),
                 MTIART_ERROR_ALREADY_CAPTURING);
    CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_ACTIVE); /* not disturbed */
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    CHECK_STATUS(mtiart_stream_end_capture(s, &g2), MTIART_ERROR_NOT_CAPTURING);
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK(pool_info(pool2).use_count == 0);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK(pool_info(pool).use_count == 0);
    CHECK_USABLE(s);
    CHECK_OK(mtiart_stream_destroy(s));
    /* Capturing on the default stream is allowed. */
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(
        mtiart_stream_begin_capture(def, MTIART_CAPTURE_MODE_THREAD_LOCAL, (mtiart_pool_id){0, 0}));
    atomic_long counter = 0;
    launch_count(def, &counter);
    CHECK_OK(mtiart_stream_end_capture(def, &g));
    CHECK(atomic_load(&counter) == 0);
    replay(g, def, 3);
    CHECK(atomic_load(&counter) == 3);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_USABLE(def);
}

static void test_allocations_in_capture(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool;
    capture_status(s, NULL, &pool);
    int64_t *a, *b;
    CHECK_OK(mtiart_malloc_async(s, sizeof(int64_t), (void **)&a));
    CHECK_OK(mtiart_malloc(0, 3 << 20, (void **)&b)); /* default stream: not capturing */
    mtiart_block_info ba = block_at(a), bb = block_at(b);
    CHECK(ba.pool.first == pool.first && ba.pool.second == pool.second);
    CHECK(bb.pool.first == 0 && bb.pool.second == 0);
    CHECK(pool_info(pool).active_blocks == 1);
    /* Blocks freed during the capture are reused by later allocations of the capture. */
    int64_t *t1, *t2;
    CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&t1));
    CHECK_OK(mtiart_memset_async(s, t1, 0, 4096));
    CHECK_OK(mtiart_free(t1));
    CHECK_OK(mtiart_malloc_async(s, 4096, (void **)&t2));
    CHECK(t2 == t1);
    CHECK_OK(mtiart_memset_async(s, a, 0, sizeof *a));
    CHECK_OK(launch_add_i64(s, a, 5));
    CHECK_OK(mtiart_free(t2));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    /* Memory allocated in the capture stays valid and usable after it. */
    replay(g, s, 1);
    int64_t host = 0;
    CHECK_OK(mtiart_memcpy(s, &host, a, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 5);
    /* After the capture, eager allocations on s come from the default pool. */
    void *e;
    CHECK_OK(mtiart_malloc_async(s, 64, &e));
    CHECK(block_at(e).pool.first == 0);
    CHECK_OK(mtiart_free(e));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_graph_destroy(g));
    /* The pool lives while a block is live in it. */
    mtiart_pool_info info = pool_info(pool);
    CHECK(info.exists == 1 && info.use_count == 0 && info.active_blocks == 1);
    CHECK_OK(mtiart_free(a));
    CHECK(pool_info(pool).reserved_bytes == 0);
    CHECK_OK(mtiart_empty_cache(0));
    CHECK(pool_info(pool).exists == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

static void test_deferred_and_replay(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(s, sizeof(int64_t), (void **)&x));
    int64_t one = 1;
    CHECK_OK(mtiart_memcpy(s, x, &one, sizeof one, MTIART_MEMCPY_HOST_TO_DEVICE));
    atomic_long counter = 0;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    /* Argument snapshot: the value is read at the launch call. */
    int64_t factor = 3;
    mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, x, sizeof *x},
                       {MTIART_ARG_VALUE, sizeof factor, &factor, 0}};
    CHECK_OK(mtiart_launch_kernel(s, k_mul_i64, 1, a, 2));
    factor = 1000;
    CHECK_OK(launch_add_i64(s, x, 2));
    launch_count(s, &counter);
    CHECK_OK(mtiart_launch_host_func(s, h_count, &counter));
    /* Large argument blobs (kept on the heap) are snapshotted too. */
    int64_t big[40];
    for (int i = 0; i < 40; i++) big[i] = 0;
    big[39] = 7;
    mtiart_arg ab[2] = {{MTIART_ARG_BUFFER_INOUT, 0, x, sizeof *x},
                        {MTIART_ARG_VALUE, sizeof big[39], &big[39], 0}};
    CHECK_OK(mtiart_launch_kernel(s, k_add_i64, 1, ab, 2));
    big[39] = 1 << 20;
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK(node_count(g) == 5);
    /* Nothing ran. */
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 0);
    int64_t host = 0;
    CHECK_OK(mtiart_memcpy(s, &host, x, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 1);
    /* Replays: x = 3x + 2 + 7, on the capture stream and on another stream. */
    mtiart_graph_exec ex;
    CHECK_OK(mtiart_graph_instantiate(g, &ex));
    CHECK_OK(mtiart_graph_launch(ex, s));
    CHECK_OK(mtiart_graph_launch(ex, other));
    CHECK_OK(mtiart_graph_launch(ex, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_synchronize(other));
    int64_t want = 1;
    for (int i = 0; i < 3; i++) want = want * 3 + 9;
    CHECK_OK(mtiart_memcpy(s, &host, x, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == want);
    CHECK(atomic_load(&counter) == 6);
    CHECK_OK(mtiart_graph_exec_destroy(ex));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* record_stream inside a capture: a block that a forked stream uses and that is freed on
 * the origin is not handed out again within the capture (the branch may still run
 * concurrently with later nodes), and is reusable after the capture. */
static void test_record_stream_in_capture(void) {
    mtiart_stream s0, s1;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    mtiart_event fork, join;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &join));
    CHECK_OK(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool;
    capture_status(s0, NULL, &pool);
    int64_t *p, *q, *out;
    CHECK_OK(mtiart_malloc_async(s0, 8, (void **)&out));
    CHECK_OK(mtiart_memset_async(s0, out, 0, 8));
    CHECK_OK(mtiart_malloc_async(s0, 4096, (void **)&p));
    CHECK_OK(mtiart_memset_async(s0, p, 0, 4096));
    CHECK_OK(launch_add_i64(s0, p, 21));
    CHECK_OK(mtiart_event_record(fork, s0));
    CHECK_OK(mtiart_stream_wait_event(s1, fork));
    mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, out, 8},
                       {MTIART_ARG_VALUE, 8, &(int64_t){2}, 0}};
    CHECK_OK(mtiart_memcpy_async(s1, out, p, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(mtiart_launch_kernel(s1, k_mul_i64, 1, a, 2));
    CHECK_OK(mtiart_record_stream(p, s1));
    CHECK_OK(mtiart_free(p));
    CHECK_OK(mtiart_malloc_async(s0, 4096, (void **)&q));
    CHECK(q != p); /* s1's node may still read p during a replay */
    CHECK_OK(mtiart_memset_async(s0, q, 0xff, 4096));
    CHECK_OK(mtiart_event_record(join, s1));
    CHECK_OK(mtiart_stream_wait_event(s0, join));
    CHECK_OK(mtiart_free(q));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s0, &g));
    replay(g, s0, 3);
    int64_t host = 0;
    CHECK_OK(mtiart_memcpy(s0, &host, out, 8, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 42);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_free(out));
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, pool, &info));
    CHECK(info.active_blocks == 0 && info.reserved_bytes == 0);
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(join));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
}

/* ------------------------------------------------------------------ fork / join */

static void test_fork_join(void) {
    mtiart_stream s0, s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, -1, &s2));
    mtiart_event fork, j1, j2;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &j1));
    CHECK_OK(mtiart_event_create(0, &j2));
    int64_t *v;
    CHECK_OK(mtiart_malloc_async(s0, 4 * sizeof(int64_t), (void **)&v));
    CHECK_OK(mtiart_memset_async(s0, v, 0, 4 * sizeof(int64_t)));
    CHECK_OK(mtiart_stream_synchronize(s0));
    for (int round = 0; round < 2; round++) {
        CHECK_OK(
            mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
        uint64_t id0, id1;
        capture_status(s0, &id0, NULL);
        CHECK_OK(launch_add_i64(s0, &v[0], 1));
        CHECK_OK(mtiart_event_record(fork, s0));
        CHECK_OK(mtiart_stream_wait_event(s1, fork));
        CHECK_OK(mtiart_stream_wait_event(s2, fork));
        CHECK(capture_status(s1, &id1, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
        CHECK(id1 == id0);
        /* Branches: both read v[0] after the first kernel. */
        CHECK_OK(launch_add_i64(s1, &v[1], 10));
        CHECK_OK(launch_add_i64(s2, &v[2], 100));
        /* A branch allocates from the capture's pool too. */
        void *tmp;
        CHECK_OK(mtiart_malloc_async(s2, 256, &tmp));
        mtiart_pool_id pool;
        capture_status(s0, NULL, &pool);
        CHECK(block_at(tmp).pool.first == pool.first);
        CHECK_OK(mtiart_memset_async(s2, tmp, 0, 256));
        CHECK_OK(mtiart_free(tmp));
        /* A forked stream whose work has not been joined back cannot be destroyed. */
        if (round == 1) CHECK_STATUS(mtiart_stream_destroy(s2), MTIART_ERROR_NOT_PERMITTED);
        CHECK_OK(mtiart_event_record(j1, s1));
        CHECK_OK(mtiart_event_record(j2, s2));
        CHECK_OK(mtiart_stream_wait_event(s0, j1));
        CHECK_OK(mtiart_stream_wait_event(s0, j2));
        CHECK_OK(launch_mul_i64(s0, &v[3], 1));
        mtiart_graph g;
        if (round == 1) {
            /* Ending on a forked stream is the wrong stream. */
            CHECK_STATUS(mtiart_stream_end_capture(s1, &g), MTIART_ERROR_CAPTURE_WRONG_STREAM);
            CHECK(capture_status(s0, NULL, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
            CHECK_STATUS(
                mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}),
                MTIART_ERROR_ALREADY_CAPTURING);
        }
        CHECK_OK(mtiart_stream_end_capture(s0, &g));
        CHECK(capture_status(s1, NULL, NULL) == MTIART_CAPTURE_STATUS_NONE);
        CHECK(capture_status(s2, NULL, NULL) == MTIART_CAPTURE_STATUS_NONE);
        replay(g, s0, 4);
        CHECK_OK(mtiart_graph_destroy(g));
    }
    int64_t host[4];
    CHECK_OK(mtiart_memcpy(s0, host, v, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host[0] == 8 && host[1] == 80 && host[2] == 800 && host[3] == 0);
    CHECK_USABLE(s0);
    CHECK_USABLE(s1);
    CHECK_USABLE(s2);
    CHECK_OK(mtiart_free(v));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(j1));
    CHECK_OK(mtiart_event_destroy(j2));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
}

static void test_unjoined(void) {
    mtiart_stream s0, s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    mtiart_event fork, j1;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &j1));
    atomic_long counter = 0;
    for (int variant = 0; variant < 2; variant++) {
        mtiart_pool_id pool;
        CHECK_OK(
            mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
        capture_status(s0, NULL, &pool);
        launch_count(s0, &counter);
        CHECK_OK(mtiart_event_record(fork, s0));
        CHECK_OK(mtiart_stream_wait_event(s1, fork));
        CHECK_OK(mtiart_stream_wait_event(s2, fork));
        launch_count(s1, &counter);
        launch_count(s2, &counter);
        void *p;
        CHECK_OK(mtiart_malloc_async(s1, 1000, &p));
        /* variant 0: nothing rejoins; variant 1: s1 rejoins, s2 does not */
        if (variant == 1) {
            CHECK_OK(mtiart_event_record(j1, s1));
            CHECK_OK(mtiart_stream_wait_event(s0, j1));
        }
        mtiart_graph g = (mtiart_graph)(uintptr_t)0x42;
        CHECK_STATUS(mtiart_stream_end_capture(s0, &g), MTIART_ERROR_CAPTURE_UNJOINED);
        CHECK(g == (mtiart_graph)(uintptr_t)0x42);
        CHECK(strstr(mtiart_last_error_message(), "join") != NULL);
        /* Everything is released: streams out of capture, pool unused. */
        CHECK(pool_info(pool).use_count == 0);
        CHECK_USABLE(s0);
        CHECK_USABLE(s1);
        CHECK_USABLE(s2);
        /* The event of the failed capture is usable eagerly again. */
        CHECK_OK(mtiart_event_record(fork, s0));
        CHECK_OK(mtiart_stream_wait_event(s1, fork));
        CHECK_OK(mtiart_event_synchronize(fork));
        CHECK_OK(mtiart_event_query(fork));
        CHECK_OK(mtiart_stream_synchronize(s1));
        /* A private pool's memory goes back at the free only on a quiet device; the event
         * completes just before its stream counts the record as done. */
        CHECK_OK(mtiart_device_synchronize(0));
        /* The block allocated in the failed capture is still the caller's to free. */
        CHECK_OK(mtiart_free(p));
        CHECK(pool_info(pool).reserved_bytes == 0);
    }
    CHECK(atomic_load(&counter) == 0); /* nothing of the failed captures ever ran */
    /* The streams can capture again. */
    CHECK_OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s1, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(j1));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
}

/* Two captures at once stay apart. */
static void test_isolation(void) {
    mtiart_stream a, b;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    mtiart_event ea;
    CHECK_OK(mtiart_event_create(0, &ea));
    CHECK_OK(mtiart_stream_begin_capture(a, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_stream_begin_capture(b, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    uint64_t ida, idb;
    capture_status(a, &ida, NULL);
    capture_status(b, &idb, NULL);
    CHECK(ida != idb);
    CHECK_OK(mtiart_event_record(ea, a));
    CHECK_STATUS(mtiart_stream_wait_event(b, ea), MTIART_ERROR_CAPTURE_ISOLATION);
    CHECK_STATUS(mtiart_event_record(ea, b), MTIART_ERROR_CAPTURE_ISOLATION);
    mtiart_graph ga, gb;
    CHECK_OK(mtiart_stream_end_capture(b, &gb));
    CHECK_OK(mtiart_stream_end_capture(a, &ga));
    CHECK_OK(mtiart_graph_destroy(ga));
    CHECK_OK(mtiart_graph_destroy(gb));
    /* A wait on an event recorded outside any capture becomes an external wait. */
    mtiart_stream outside;
    CHECK_OK(mtiart_stream_create(0, 0, &outside));
    gate g = {0};
    launch_gate(outside, &g);
    CHECK_OK(mtiart_event_record(ea, outside));
    atomic_long counter = 0;
    CHECK_OK(mtiart_stream_begin_capture(a, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_stream_wait_event(a, ea));
    launch_count(a, &counter);
    mtiart_graph gx;
    CHECK_OK(mtiart_stream_end_capture(a, &gx));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(gx, &x));
    CHECK_OK(mtiart_graph_launch(x, a));
    sleep_ms(20);
    CHECK(atomic_load(&counter) == 0); /* the replay waits for the external record */
    atomic_store(&g.open, 1);
    CHECK_OK(sync_with_timeout(a, 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(gx));
    CHECK_OK(mtiart_event_destroy(ea));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
    CHECK_OK(mtiart_stream_destroy(outside));
}

/* An event recorded in one capture, then eagerly, then in a second capture: ending the
 * first capture must not detach the event from the second. */
static void test_event_moves_between_captures(void) {
    mtiart_stream a, b, c, x;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    CHECK_OK(mtiart_stream_create(0, 0, &c));
    CHECK_OK(mtiart_stream_create(0, 0, &x));
    mtiart_event e, back;
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(0, &back));
    CHECK_OK(mtiart_stream_begin_capture(a, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(e, a));
    CHECK_OK(mtiart_event_record(e, x)); /* eager: e leaves the first capture */
    CHECK_OK(mtiart_stream_synchronize(x));
    CHECK_OK(mtiart_stream_begin_capture(b, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    atomic_long counter = 0;
    launch_count(b, &counter);
    CHECK_OK(mtiart_event_record(e, b)); /* e now belongs to the second capture */
    mtiart_graph ga, gb;
    CHECK_OK(mtiart_stream_end_capture(a, &ga));
    /* c waiting on e forks into the second capture. */
    CHECK_OK(mtiart_stream_wait_event(c, e));
    uint64_t idb, idc;
    capture_status(b, &idb, NULL);
    CHECK(capture_status(c, &idc, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
    CHECK(idc == idb);
    launch_count(c, &counter);
    CHECK_OK(mtiart_event_record(back, c));
    CHECK_OK(mtiart_stream_wait_event(b, back));
    CHECK_OK(mtiart_stream_end_capture(b, &gb));
    CHECK(atomic_load(&counter) == 0);
    replay(gb, b, 2);
    CHECK(atomic_load(&counter) == 4);
    CHECK_OK(mtiart_graph_destroy(ga));
    CHECK_OK(mtiart_graph_destroy(gb));
    CHECK_USABLE(c);
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(back));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
    CHECK_OK(mtiart_stream_destroy(c));
    CHECK_OK(mtiart_stream_destroy(x));
}

/* ------------------------------------------------------------------ unsafe calls */

enum unsafe_call {
    U_STREAM_SYNC,
    U_STREAM_QUERY,
    U_DEVICE_SYNC,
    U_EVENT_QUERY,
    U_EVENT_SYNC,
    U_EMPTY_CACHE,
    U_MEMCPY,
    U_COUNT
};

static const char *const unsafe_names[U_COUNT] = {"mtiart_stream_synchronize",
                                                  "mtiart_stream_query",
                                                  "mtiart_device_synchronize",
                                                  "mtiart_event_query",
                                                  "mtiart_event_synchronize",
                                                  "mtiart_empty_cache",
                                                  "mtiart_memcpy"};

static void test_unsafe_calls(void) {
    mtiart_stream s, forked;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &forked));
    mtiart_event e, fork;
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(0, &fork));
    int64_t *dev;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&dev));
    CHECK_OK(mtiart_stream_synchronize(s));
    uint64_t sid;
    CHECK_OK(mtiart_stream_get_id(s, &sid));
    char sid_text[32];
    snprintf(sid_text, sizeof sid_text, "%llu", (unsigned long long)sid);
    atomic_long counter = 0;
    for (int call = 0; call < U_COUNT; call++) {
        for (int on_fork = 0; on_fork < 2; on_fork++) {
            mtiart_pool_id pool;
            CHECK_OK(
                mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
            capture_status(s, NULL, &pool);
            void *p;
            CHECK_OK(mtiart_malloc_async(s, 128, &p));
            launch_count(s, &counter);
            CHECK_OK(mtiart_event_record(e, s));
            mtiart_stream target = s;
            if (on_fork) {
                /* The same calls on a stream forked into the capture. */
                CHECK_OK(mtiart_event_record(fork, s));
                CHECK_OK(mtiart_stream_wait_event(forked, fork));
                target = forked;
            }
            mtiart_status st = MTIART_SUCCESS;
            int64_t host = 0;
            switch (call) {
            case U_STREAM_SYNC: st = mtiart_stream_synchronize(target); break;
            case U_STREAM_QUERY: st = mtiart_stream_query(target); break;
            case U_DEVICE_SYNC: st = mtiart_device_synchronize(0); break;
            case U_EVENT_QUERY: st = mtiart_event_query(e); break;
            case U_EVENT_SYNC: st = mtiart_event_synchronize(e); break;
            case U_EMPTY_CACHE: st = mtiart_empty_cache(0); break;
            case U_MEMCPY:
                st = mtiart_memcpy(target, &host, dev, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST);
                break;
            }
            CHECK(st == MTIART_ERROR_CAPTURE_UNSUPPORTED);
            const char *msg = mtiart_last_error_message();
            if (!strstr(msg, unsafe_names[call]) || !strstr(msg, sid_text) ||
                !strstr(msg, "captur")) {
                fprintf(stderr, "message for %s lacks the call or the stream: %s\n",
                        unsafe_names[call], msg);
                test_failures++;
            }
            CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_INVALIDATED);
            /* Later work on the invalidated capture is refused. */
            CHECK_STATUS(mtiart_launch_kernel(s, k_count, 1, NULL, 0),
                         MTIART_ERROR_CAPTURE_INVALIDATED);
            if (on_fork)
                CHECK_STATUS(mtiart_event_record(fork, forked), MTIART_ERROR_CAPTURE_INVALIDATED);
            mtiart_graph g = NULL;
            CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
            CHECK(g == NULL);
            CHECK(strstr(mtiart_last_error_message(), unsafe_names[call]) != NULL);
            CHECK(pool_info(pool).use_count == 0);
            CHECK_USABLE(s);
            CHECK_USABLE(forked);
            /* The refused memcpy left nothing behind. */
            CHECK(host == 0);
            CHECK_OK(mtiart_free(p));
            CHECK(pool_info(pool).reserved_bytes == 0);
            CHECK_OK(mtiart_event_query(e)); /* a plain event again */
        }
    }
    CHECK(atomic_load(&counter) == 0); /* nothing of the invalidated captures ran */
    /* Safe calls during capture: queries of other streams are fine in relaxed mode, and
     * asynchronous work on other streams runs eagerly in every mode. */
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_stream other;
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    launch_count(other, &counter);
    void *q;
    CHECK_OK(mtiart_malloc_async(other, 64, &q));
    CHECK(block_at(q).pool.first == 0);
    CHECK_OK(mtiart_free(q));
    int device;
    CHECK_OK(mtiart_pointer_get_device(dev, &device));
    mtiart_memory_stats ms;
    CHECK_OK(mtiart_memory_get_stats(0, &ms));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_stream_synchronize(other));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(other));
    CHECK_OK(mtiart_free(dev));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(forked));
}

/* ------------------------------------------------------------------ modes across threads */

typedef struct mode_ctx {
    mtiart_stream other;
    mtiart_status device_sync, other_sync, empty_cache;
} mode_ctx;

static void *other_thread(void *arg) {
    mode_ctx *c = arg;
    c->device_sync = mtiart_device_synchronize(0);
    c->other_sync = mtiart_stream_synchronize(c->other);
    c->empty_cache = mtiart_empty_cache(0);
    return NULL;
}

static void test_modes(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    for (int mode = 0; mode < 3; mode++) {
        mtiart_pool_id pool;
        CHECK_OK(mtiart_stream_begin_capture(s, (mtiart_capture_mode)mode, (mtiart_pool_id){0, 0}));
        capture_status(s, NULL, &pool);
        mode_ctx c = {other, 0, 0, 0};
        pthread_t th;
        pthread_create(&th, NULL, other_thread, &c);
        pthread_join(th, NULL);
        mtiart_graph g = NULL;
        switch (mode) {
        case MTIART_CAPTURE_MODE_GLOBAL:
            CHECK(c.device_sync == MTIART_ERROR_CAPTURE_UNSUPPORTED);
            CHECK(c.other_sync == MTIART_ERROR_CAPTURE_UNSUPPORTED);
            CHECK(c.empty_cache == MTIART_ERROR_CAPTURE_UNSUPPORTED);
            CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_INVALIDATED);
            CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
            CHECK(strstr(mtiart_last_error_message(), "mtiart_device_synchronize") != NULL);
            break;
        case MTIART_CAPTURE_MODE_THREAD_LOCAL:
            CHECK(c.device_sync == MTIART_SUCCESS);
            CHECK(c.other_sync == MTIART_SUCCESS);
            CHECK(c.empty_cache == MTIART_SUCCESS);
            CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
            /* The capturing thread's own call fails and invalidates. */
            CHECK_STATUS(mtiart_device_synchronize(0), MTIART_ERROR_CAPTURE_UNSUPPORTED);
            CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_INVALIDATED);
            CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
            break;
        default:
            CHECK(c.device_sync == MTIART_SUCCESS);
            CHECK(c.other_sync == MTIART_SUCCESS);
            CHECK(c.empty_cache == MTIART_SUCCESS);
            CHECK_OK(mtiart_device_synchronize(0));
            CHECK_OK(mtiart_stream_synchronize(other));
            CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
            /* ...but not a call on the capturing stream itself. */
            CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_CAPTURE_UNSUPPORTED);
            CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
            CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_RELAXED,
                                                 (mtiart_pool_id){0, 0}));
            CHECK_OK(mtiart_device_synchronize(0));
            CHECK_OK(mtiart_stream_end_capture(s, &g));
            CHECK_OK(mtiart_graph_destroy(g));
            g = NULL;
            break;
        }
        CHECK(g == NULL);
        CHECK(pool_info(pool).use_count == 0);
        CHECK_USABLE(s);
    }
    /* A capture in global mode on another thread makes this thread's unsafe calls fail. */
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    CHECK_OK(mtiart_stream_destroy(other));
    CHECK_OK(mtiart_stream_destroy(s));
}

typedef struct capture_thread_ctx {
    mtiart_stream s;
    pthread_barrier_t *barrier;
    mtiart_status end;
} capture_thread_ctx;

static void *capturing_thread(void *arg) {
    capture_thread_ctx *c = arg;
    mtiart_stream_begin_capture(c->s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0});
    pthread_barrier_wait(c->barrier); /* capturing */
    pthread_barrier_wait(c->barrier); /* main thread tried its call */
    mtiart_graph g;
    c->end = mtiart_stream_end_capture(c->s, &g);
    if (c->end == MTIART_SUCCESS) mtiart_graph_destroy(g);
    return NULL;
}

static void test_global_from_other_thread(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    capture_thread_ctx c = {s, &barrier, 0};
    pthread_t th;
    pthread_create(&th, NULL, capturing_thread, &c);
    pthread_barrier_wait(&barrier);
    CHECK_STATUS(mtiart_device_synchronize(0), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    pthread_barrier_wait(&barrier);
    pthread_join(th, NULL);
    CHECK(c.end == MTIART_ERROR_CAPTURE_INVALIDATED);
    pthread_barrier_destroy(&barrier);
    CHECK_USABLE(s);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ OOM in capture */

static void test_oom_in_capture(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id pool;
    capture_status(s, NULL, &pool);
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(s, 8, (void **)&x));
    CHECK_OK(mtiart_memset_async(s, x, 0, 8));
    void *huge = NULL;
    CHECK_STATUS(mtiart_malloc_async(s, props.total_memory + 1, &huge), MTIART_ERROR_OUT_OF_MEMORY);
    CHECK(strstr(mtiart_last_error_message(), "out of memory") != NULL);
    CHECK(huge == NULL);
    CHECK(capture_status(s, NULL, NULL) == MTIART_CAPTURE_STATUS_ACTIVE);
    CHECK_OK(launch_add_i64(s, x, 4));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    replay(g, s, 2);
    int64_t host;
    CHECK_OK(mtiart_memcpy(s, &host, x, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(host == 4); /* memset then add, per replay */
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_free(x));
    CHECK(pool_info(pool).reserved_bytes == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Captures on several threads at once, each on its own stream (thread_local mode). */
typedef struct par_ctx {
    int index;
    int failed;
} par_ctx;

static void *parallel_capture(void *arg) {
    par_ctx *c = arg;
    mtiart_stream s;
    if (mtiart_stream_create(0, 0, &s)) {
        c->failed = 1;
        return NULL;
    }
    for (int round = 0; round < 30; round++) {
        int64_t *x;
        mtiart_graph g;
        mtiart_graph_exec ex;
        if (mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_THREAD_LOCAL,
                                        (mtiart_pool_id){0, 0}) ||
            mtiart_malloc_async(s, 8, (void **)&x) || mtiart_memset_async(s, x, 0, 8) ||
            launch_add_i64(s, x, c->index + 1) || mtiart_stream_end_capture(s, &g) ||
            mtiart_graph_instantiate(g, &ex) || mtiart_graph_destroy(g)) {
            c->failed = 1;
            break;
        }
        for (int r = 0; r < 3; r++)
            if (mtiart_graph_launch(ex, s)) c->failed = 1;
        int64_t host = -1;
        if (mtiart_memcpy(s, &host, x, 8, MTIART_MEMCPY_DEVICE_TO_HOST) || host != c->index + 1)
            c->failed = 1;
        if (mtiart_graph_exec_destroy(ex) || mtiart_free(x)) c->failed = 1;
    }
    if (mtiart_stream_destroy(s)) c->failed = 1;
    return NULL;
}

static void test_parallel_captures(void) {
    enum { T = 4 };
    pthread_t th[T];
    par_ctx ctx[T];
    for (int i = 0; i < T; i++) {
        ctx[i] = (par_ctx){i, 0};
        pthread_create(&th[i], NULL, parallel_capture, &ctx[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(!ctx[i].failed);
    }
}

int main(void) {
    CHECK_OK(mtiart_init());
    test_begin_end_info();
    test_allocations_in_capture();
    test_deferred_and_replay();
    test_record_stream_in_capture();
    test_fork_join();
    test_unjoined();
    test_isolation();
    test_event_moves_between_captures();
    test_unsafe_calls();
    test_modes();
    test_global_from_other_thread();
    test_oom_in_capture();
    test_parallel_captures();
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    CHECK(st.private_pools == 0);
    CHECK(st.allocated_bytes == 0);
    TEST_MAIN_END();
}
