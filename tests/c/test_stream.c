/* Streams: ordering under many producers, concurrency between streams, priorities,
 * destruction with pending work, queries, sticky kernel/host errors, multi-block kernels,
 * synchronization from inside host functions, device synchronization, copies and fills. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "rt_helpers.h"

static int g_workers;

/* ------------------------------------------------------------------ ordering */

#define ORDER_THREADS 8
#define ORDER_STREAMS 4
#define ORDER_OPS 600 /* per thread and stream */

/* Per-stream log in device memory: [0] = count, then (thread << 20 | seq) entries. */
static int32_t k_append(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int64_t *log = *(int64_t *const *)args[0];
    int64_t value = *(const int64_t *)args[1];
    int64_t n = log[0];
    log[1 + n] = value;
    log[0] = n + 1;
    return 0;
}

typedef struct order_ctx {
    mtiart_stream streams[ORDER_STREAMS];
    int64_t *logs[ORDER_STREAMS];
    size_t log_bytes;
    int thread;
    pthread_barrier_t *barrier;
    int failed;
} order_ctx;

static void *order_thread(void *arg) {
    order_ctx *c = arg;
    pthread_barrier_wait(c->barrier);
    for (int seq = 0; seq < ORDER_OPS; seq++) {
        for (int k = 0; k < ORDER_STREAMS; k++) {
            int64_t value = ((int64_t)c->thread << 20) | seq;
            mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, c->logs[k], c->log_bytes},
                               {MTIART_ARG_VALUE, sizeof value, &value, 0}};
            /* Alternate kernels and host-visible ops of another type (a tiny fill that
             * does not touch the log) so different op kinds interleave. */
            if (mtiart_launch_kernel(c->streams[k], k_append, 1, a, 2) != MTIART_SUCCESS)
                c->failed = 1;
        }
    }
    return NULL;
}

static void test_order_many_producers(void) {
    order_ctx ctx[ORDER_THREADS];
    mtiart_stream streams[ORDER_STREAMS];
    int64_t *logs[ORDER_STREAMS];
    size_t entries = (size_t)ORDER_THREADS * ORDER_OPS;
    size_t log_bytes = (entries + 1) * sizeof(int64_t);
    for (int k = 0; k < ORDER_STREAMS; k++) {
        CHECK_OK(mtiart_stream_create(0, -(k % 2), &streams[k]));
        CHECK_OK(mtiart_malloc_async(streams[k], log_bytes, (void **)&logs[k]));
        CHECK_OK(mtiart_memset_async(streams[k], logs[k], 0, log_bytes));
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, ORDER_THREADS);
    pthread_t th[ORDER_THREADS];
    for (int t = 0; t < ORDER_THREADS; t++) {
        ctx[t] = (order_ctx){.log_bytes = log_bytes, .thread = t, .barrier = &barrier};
        memcpy(ctx[t].streams, streams, sizeof streams);
        memcpy(ctx[t].logs, logs, sizeof logs);
        pthread_create(&th[t], NULL, order_thread, &ctx[t]);
    }
    for (int t = 0; t < ORDER_THREADS; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
    int64_t *host = malloc(log_bytes);
    for (int k = 0; k < ORDER_STREAMS; k++) {
        CHECK(!ctx[0].failed);
        CHECK_OK(mtiart_memcpy(streams[k], host, logs[k], log_bytes, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(host[0] == (int64_t)entries);
        int next[ORDER_THREADS] = {0};
        int bad = 0;
        for (size_t i = 0; i < entries && i < (size_t)host[0]; i++) {
            int t = (int)(host[1 + i] >> 20);
            int seq = (int)(host[1 + i] & 0xfffff);
            if (t < 0 || t >= ORDER_THREADS || seq != next[t]) bad++;
            else next[t]++;
        }
        CHECK(bad == 0);
        for (int t = 0; t < ORDER_THREADS; t++) CHECK(next[t] == ORDER_OPS);
        CHECK_OK(mtiart_free(logs[k]));
        CHECK_OK(mtiart_stream_destroy(streams[k]));
    }
    for (int t = 1; t < ORDER_THREADS; t++) CHECK(!ctx[t].failed);
    free(host);
}

/* Mixed op kinds keep their order on one stream: copy, fill, kernel, host function. */
static int32_t h_check_value(void *user) {
    int64_t **pp = user;
    /* pp[0]: device value, pp[1]: expected (host), pp[2]: bad-counter (host) */
    if (*pp[0] != *pp[1]) (*pp[2])++;
    return 0;
}

static void test_order_mixed_ops(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *dev;
    CHECK_OK(mtiart_malloc_async(s, 64, (void **)&dev));
    static int64_t sources[300];
    static int64_t expected[300];
    int64_t bad = 0;
    static int64_t *ctxs[300][3];
    int64_t v = 0;
    for (int i = 0; i < 300; i++) {
        switch (i % 4) {
        case 0:
            sources[i] = i * 3;
            CHECK_OK(mtiart_memcpy_async(s, dev, &sources[i], 8, MTIART_MEMCPY_HOST_TO_DEVICE));
            v = i * 3;
            break;
        case 1: {
            int64_t pattern = -i;
            CHECK_OK(mtiart_fill_async(s, dev, &pattern, 8, 1));
            v = -i;
            break;
        }
        case 2:
            CHECK_OK(launch_add_i64(s, dev, 5));
            v += 5;
            break;
        default:
            CHECK_OK(launch_mul_i64(s, dev, 2));
            v *= 2;
            break;
        }
        expected[i] = v;
        ctxs[i][0] = dev;
        ctxs[i][1] = &expected[i];
        ctxs[i][2] = &bad;
        CHECK_OK(mtiart_launch_host_func(s, h_check_value, ctxs[i]));
    }
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(bad == 0);
    CHECK_OK(mtiart_free(dev));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ concurrency */

static atomic_int flag_a, flag_b;

static int32_t k_meet(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int mine = *(const int *)args[0];
    atomic_int *set = mine ? &flag_b : &flag_a;
    atomic_int *wait = mine ? &flag_a : &flag_b;
    atomic_store(set, 1);
    double deadline = now_ms() + 10000;
    while (!atomic_load(wait)) {
        if (now_ms() > deadline) {
            mtiart_kernel_set_error_message("the other stream never ran concurrently");
            return 1;
        }
        sleep_ms(0.05);
    }
    return 0;
}

static void test_streams_run_concurrently(void) {
    if (g_workers < 2) {
        printf("skip: concurrency test needs 2 workers (device has %d)\n", g_workers);
        return;
    }
    for (int round = 0; round < 5; round++) {
        mtiart_stream a, b;
        CHECK_OK(mtiart_stream_create(0, 0, &a));
        CHECK_OK(mtiart_stream_create(0, 0, &b));
        atomic_store(&flag_a, 0);
        atomic_store(&flag_b, 0);
        int which_a = 0, which_b = 1;
        mtiart_arg aa = {MTIART_ARG_VALUE, sizeof(int), &which_a, 0};
        mtiart_arg ab = {MTIART_ARG_VALUE, sizeof(int), &which_b, 0};
        CHECK_OK(mtiart_launch_kernel(a, k_meet, 1, &aa, 1));
        if (round & 1) sleep_ms(2); /* let the first start alone */
        CHECK_OK(mtiart_launch_kernel(b, k_meet, 1, &ab, 1));
        CHECK_OK(mtiart_stream_synchronize(a));
        CHECK_OK(mtiart_stream_synchronize(b));
        CHECK_OK(mtiart_stream_destroy(a));
        CHECK_OK(mtiart_stream_destroy(b));
    }
}

/* ------------------------------------------------------------------ priorities */

static void test_priorities(void) {
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    CHECK(props.least_stream_priority == 0);
    CHECK(props.greatest_stream_priority < 0);
    CHECK(props.num_workers == g_workers);
    CHECK(strstr(props.name, "0") != NULL);
    const int asked[] = {0,    -1,    props.greatest_stream_priority,    5,
                         1000, -1000, props.greatest_stream_priority - 1};
    const int want[] = {0,
                        -1,
                        props.greatest_stream_priority,
                        0,
                        0,
                        props.greatest_stream_priority,
                        props.greatest_stream_priority};
    atomic_long counter = 0;
    for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
        mtiart_stream s;
        int prio = 99, dev = -1;
        CHECK_OK(mtiart_stream_create(0, asked[i], &s));
        CHECK_OK(mtiart_stream_get_priority(s, &prio));
        CHECK(prio == want[i]);
        CHECK_OK(mtiart_stream_get_device(s, &dev));
        CHECK(dev == 0);
        launch_count(s, &counter);
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK_OK(mtiart_stream_destroy(s));
    }
    CHECK(atomic_load(&counter) == (long)(sizeof asked / sizeof asked[0]));
    mtiart_stream def;
    int prio = 99;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_stream_get_priority(def, &prio));
    CHECK(prio == 0);
}

/* Stream ids are unique, increasing and never reused. */
static void test_stream_ids(void) {
    uint64_t last = 0;
    mtiart_stream def;
    uint64_t def_id;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_stream_get_id(def, &def_id));
    for (int i = 0; i < 50; i++) {
        mtiart_stream s;
        uint64_t id;
        CHECK_OK(mtiart_stream_create(0, 0, &s));
        CHECK_OK(mtiart_stream_get_id(s, &id));
        CHECK(id > last && id != def_id);
        last = id;
        CHECK_OK(mtiart_stream_destroy(s));
    }
    mtiart_stream def2;
    CHECK_OK(mtiart_stream_get_default(0, &def2));
    CHECK(def == def2);
}

/* ------------------------------------------------------------------ destroy / query */

static void test_destroy_with_pending_work(void) {
    for (int variant = 0; variant < 2; variant++) {
        mtiart_stream s;
        CHECK_OK(mtiart_stream_create(0, 0, &s));
        gate g = {0};
        atomic_long counter = 0;
        launch_gate(s, &g);
        /* variant 1 queues enough ops to span several queue chunks */
        int ops = variant ? 1000 : 3;
        for (int i = 0; i < ops; i++) launch_count(s, &counter);
        CHECK_OK(mtiart_stream_destroy(s));
        /* The handle is invalid at once, though the work has not run. */
        CHECK_STATUS(mtiart_stream_query(s), MTIART_ERROR_INVALID_HANDLE);
        CHECK_STATUS(mtiart_launch_kernel(s, k_count, 1, NULL, 0), MTIART_ERROR_INVALID_HANDLE);
        CHECK_STATUS(mtiart_stream_destroy(s), MTIART_ERROR_INVALID_HANDLE);
        CHECK(atomic_load(&counter) == 0);
        atomic_store(&g.open, 1);
        /* The device synchronize waits for the destroyed stream's work too. */
        CHECK_OK(mtiart_device_synchronize(0));
        CHECK(atomic_load(&counter) == ops);
    }
}

static void test_default_stream(void) {
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_STATUS(mtiart_stream_destroy(def), MTIART_ERROR_NOT_PERMITTED);
    atomic_long counter = 0;
    launch_count(def, &counter);
    CHECK_OK(mtiart_stream_synchronize(def));
    CHECK(atomic_load(&counter) == 1);
    void *p;
    CHECK_OK(mtiart_malloc(0, 100, &p));
    CHECK_OK(mtiart_memset_async(def, p, 1, 100));
    CHECK_OK(mtiart_stream_synchronize(def));
    CHECK_OK(mtiart_free(p));
}

static void test_query(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_query(s)); /* empty: done */
    gate g = {0};
    atomic_long counter = 0;
    launch_gate(s, &g);
    launch_count(s, &counter);
    CHECK_STATUS(mtiart_stream_query(s), MTIART_NOT_READY);
    CHECK(WAIT_UNTIL(atomic_load(&g.entered), 5000));
    CHECK_STATUS(mtiart_stream_query(s), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK(WAIT_UNTIL(mtiart_stream_query(s) == MTIART_SUCCESS, 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ sticky errors */

static int32_t k_fail(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)num_blocks;
    int fail_block = *(const int *)args[0];
    if ((int)block == fail_block) {
        char message[64];
        snprintf(message, sizeof message, "boom in block %u", block);
        mtiart_kernel_set_error_message(message);
        return 42;
    }
    return 0;
}

static int32_t h_fail(void *user) {
    (void)user;
    mtiart_kernel_set_error_message("host function says no");
    return 7;
}

static int32_t h_fail_silent(void *user) {
    (void)user;
    return -3;
}

static void test_sticky_errors(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_kernel_set_name(k_fail, "k_fail"));
    atomic_long counter = 0;
    long expected_count = 0;
    for (int blocks = 1; blocks <= 64; blocks *= 8) {
        int fail_block = blocks - 1;
        mtiart_arg a = {MTIART_ARG_VALUE, sizeof fail_block, &fail_block, 0};
        CHECK_OK(mtiart_launch_kernel(s, k_fail, (uint32_t)blocks, &a, 1));
        launch_count(s, &counter);
        expected_count++;
        CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
        char expect[64];
        snprintf(expect, sizeof expect, "boom in block %d", fail_block);
        CHECK(strstr(mtiart_last_error_message(), expect) != NULL);
        CHECK(strstr(mtiart_last_error_message(), "k_fail") != NULL);
        CHECK(mtiart_last_error() == MTIART_ERROR_KERNEL_FAILED);
        /* Work after the failing kernel ran. */
        CHECK(atomic_load(&counter) == expected_count);
        /* Reported once. */
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK_OK(mtiart_stream_query(s));
        launch_count(s, &counter);
        expected_count++;
        CHECK_OK(mtiart_stream_synchronize(s));
    }
    CHECK(atomic_load(&counter) == 6);

    /* Only the first failure since the last report is kept. */
    CHECK_OK(mtiart_launch_host_func(s, h_fail, NULL));
    CHECK_OK(mtiart_launch_host_func(s, h_fail_silent, NULL));
    launch_count(s, &counter);
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
    CHECK(strstr(mtiart_last_error_message(), "host function says no") != NULL);
    CHECK(atomic_load(&counter) == 7);
    CHECK_OK(mtiart_stream_synchronize(s));

    /* A failing host function without a message, reported through query. */
    CHECK_OK(mtiart_launch_host_func(s, h_fail_silent, NULL));
    CHECK(WAIT_UNTIL(mtiart_stream_query(s) != MTIART_NOT_READY, 5000));
    /* The query above consumed the report if it saw the error, so accept either way, but
     * the error must be reported exactly once by query or synchronize. */
    mtiart_status st = mtiart_stream_synchronize(s);
    CHECK(st == MTIART_SUCCESS);
    CHECK_OK(mtiart_launch_host_func(s, h_fail_silent, NULL));
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
    CHECK(strstr(mtiart_last_error_message(), "-3") != NULL);
    /* A stale kernel message from an earlier failure does not leak into this one. */
    CHECK(strstr(mtiart_last_error_message(), "says no") == NULL);

    /* The device synchronize reports (and clears) a stream's sticky error. */
    int fail_block = 0;
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof fail_block, &fail_block, 0};
    CHECK_OK(mtiart_launch_kernel(s, k_fail, 1, &a, 1));
    CHECK_STATUS(mtiart_device_synchronize(0), MTIART_ERROR_KERNEL_FAILED);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_device_synchronize(0));

    /* A sticky error does not leak to other streams. */
    mtiart_stream other;
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    CHECK_OK(mtiart_launch_kernel(s, k_fail, 1, &a, 1));
    launch_count(other, &counter);
    CHECK_OK(mtiart_stream_synchronize(other));
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_KERNEL_FAILED);
    CHECK_OK(mtiart_stream_destroy(other));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ multi-block */

static int32_t k_blocks(void *const *args, uint32_t block, uint32_t num_blocks) {
    atomic_int *hits = *(atomic_int *const *)args[0];
    uint32_t expected = *(const uint32_t *)args[1];
    if (num_blocks != expected || block >= num_blocks) {
        mtiart_kernel_set_error_message("bad block index");
        return 1;
    }
    atomic_fetch_add(&hits[block], 1);
    return 0;
}

static void test_multi_block(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    const uint32_t sizes[] = {1, 2, 3, 7, 64, 1000, 4099};
    atomic_int *hits = calloc(4099, sizeof *hits);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint32_t n = sizes[i];
        memset(hits, 0, 4099 * sizeof *hits);
        mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof hits, &hits, 0},
                           {MTIART_ARG_VALUE, sizeof n, &n, 0}};
        for (int rep = 0; rep < 3; rep++) CHECK_OK(mtiart_launch_kernel(s, k_blocks, n, a, 2));
        CHECK_OK(mtiart_stream_synchronize(s));
        int bad = 0;
        for (uint32_t b = 0; b < n; b++) bad += atomic_load(&hits[b]) != 3;
        for (uint32_t b = n; b < 4099; b++) bad += atomic_load(&hits[b]) != 0;
        CHECK(bad == 0);
    }
    /* Several streams launching multi-block kernels at once. */
    mtiart_stream more[4];
    atomic_int *h2 = calloc(4 * 500, sizeof *h2);
    for (int k = 0; k < 4; k++) {
        CHECK_OK(mtiart_stream_create(0, 0, &more[k]));
        atomic_int *mine = h2 + k * 500;
        uint32_t n = 500;
        mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof mine, &mine, 0},
                           {MTIART_ARG_VALUE, sizeof n, &n, 0}};
        for (int rep = 0; rep < 20; rep++)
            CHECK_OK(mtiart_launch_kernel(more[k], k_blocks, n, a, 2));
    }
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_OK(mtiart_stream_synchronize(more[k]));
        CHECK_OK(mtiart_stream_destroy(more[k]));
    }
    for (int i = 0; i < 4 * 500; i++) bad += atomic_load(&h2[i]) != 20;
    CHECK(bad == 0);
    free(h2);
    free(hits);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ waiting from workers */

typedef struct inside_ctx {
    mtiart_stream self, other;
    mtiart_event event;
    void *dev;
    mtiart_status sync_self, sync_other, sync_device, sync_event, memcpy_sync, query_other;
    mtiart_status launch_other;
    atomic_long *counter;
    char message[256];
} inside_ctx;

static int32_t h_sync_inside(void *user) {
    inside_ctx *c = user;
    c->sync_self = mtiart_stream_synchronize(c->self);
    snprintf(c->message, sizeof c->message, "%s", mtiart_last_error_message());
    c->sync_other = mtiart_stream_synchronize(c->other);
    c->sync_device = mtiart_device_synchronize(0);
    c->sync_event = mtiart_event_synchronize(c->event);
    char host[8];
    c->memcpy_sync = mtiart_memcpy(c->other, host, c->dev, 8, MTIART_MEMCPY_DEVICE_TO_HOST);
    c->query_other = mtiart_stream_query(c->other);
    /* Enqueueing from a host function is allowed. */
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof c->counter, &c->counter, 0};
    c->launch_other = mtiart_launch_kernel(c->other, k_count, 1, &a, 1);
    return 0;
}

static void test_sync_inside_host_function(void) {
    inside_ctx c;
    memset(&c, 0, sizeof c);
    atomic_long counter = 0;
    c.counter = &counter;
    CHECK_OK(mtiart_stream_create(0, 0, &c.self));
    CHECK_OK(mtiart_stream_create(0, 0, &c.other));
    CHECK_OK(mtiart_event_create(0, &c.event));
    CHECK_OK(mtiart_malloc(0, 64, &c.dev));
    CHECK_OK(mtiart_event_record(c.event, c.other));
    CHECK_OK(mtiart_stream_synchronize(c.other));
    CHECK_OK(mtiart_launch_host_func(c.self, h_sync_inside, &c));
    CHECK_OK(sync_with_timeout(c.self, 10000));
    CHECK(c.sync_self == MTIART_ERROR_NOT_PERMITTED);
    CHECK(c.sync_other == MTIART_ERROR_NOT_PERMITTED);
    CHECK(c.sync_device == MTIART_ERROR_NOT_PERMITTED);
    CHECK(c.sync_event == MTIART_ERROR_NOT_PERMITTED);
    CHECK(c.memcpy_sync == MTIART_ERROR_NOT_PERMITTED);
    CHECK(c.query_other == MTIART_SUCCESS);
    CHECK(c.launch_other == MTIART_SUCCESS);
    CHECK(c.message[0] != '\0');
    CHECK_OK(mtiart_stream_synchronize(c.other));
    CHECK(atomic_load(&counter) == 1);
    /* Nothing was enqueued by the refused synchronous memcpy. */
    CHECK_OK(mtiart_free(c.dev));
    CHECK_OK(mtiart_event_destroy(c.event));
    CHECK_OK(mtiart_stream_destroy(c.self));
    CHECK_OK(mtiart_stream_destroy(c.other));
}

/* Synchronize from inside a kernel (blocks spread over workers) is refused too. */
static atomic_int kernel_sync_bad;
static mtiart_stream kernel_sync_stream;
static int32_t k_sync_inside(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)num_blocks;
    (void)block;
    if (mtiart_stream_synchronize(kernel_sync_stream) != MTIART_ERROR_NOT_PERMITTED)
        atomic_fetch_add(&kernel_sync_bad, 1);
    if (mtiart_device_synchronize(0) != MTIART_ERROR_NOT_PERMITTED)
        atomic_fetch_add(&kernel_sync_bad, 1);
    return 0;
}

static void test_sync_inside_kernel(void) {
    CHECK_OK(mtiart_stream_create(0, 0, &kernel_sync_stream));
    CHECK_OK(mtiart_launch_kernel(kernel_sync_stream, k_sync_inside, 16, NULL, 0));
    CHECK_OK(sync_with_timeout(kernel_sync_stream, 10000));
    CHECK(atomic_load(&kernel_sync_bad) == 0);
    CHECK_OK(mtiart_stream_destroy(kernel_sync_stream));
}

/* ------------------------------------------------------------------ device synchronize */

static void test_device_synchronize(void) {
    mtiart_stream s[4];
    atomic_long counter = 0;
    double ms = 30;
    for (int k = 0; k < 4; k++) {
        CHECK_OK(mtiart_stream_create(0, 0, &s[k]));
        CHECK_OK(mtiart_launch_host_func(s[k], h_sleep, &ms));
        launch_count(s[k], &counter);
    }
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_launch_host_func(def, h_sleep, &ms));
    launch_count(def, &counter);
    double t0 = now_ms();
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(now_ms() - t0 >= 25);
    CHECK(atomic_load(&counter) == 5);
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(mtiart_stream_query(s[k]), MTIART_SUCCESS);
        CHECK_OK(mtiart_stream_destroy(s[k]));
    }
    CHECK_OK(mtiart_device_synchronize(0)); /* nothing pending */
}

/* A synchronize on one stream must not wait for another stream's work. */
static void test_sync_is_per_stream(void) {
    if (g_workers < 2) return; /* the gate would hold the only worker */
    mtiart_stream a, b;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    gate g = {0};
    launch_gate(a, &g);
    atomic_long counter = 0;
    launch_count(b, &counter);
    CHECK_OK(sync_with_timeout(b, 5000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_STATUS(mtiart_stream_query(a), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(a));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
}

/* ------------------------------------------------------------------ copies and fills */

static void test_copies_and_fills(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    enum { N = 1000 };
    uint8_t *a, *b;
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&a));
    CHECK_OK(mtiart_malloc_async(s, N * 8, (void **)&b));
    static uint8_t host[N * 8], back[N * 8];
    for (int i = 0; i < N * 8; i++) host[i] = (uint8_t)(i * 7 + 1);
    CHECK_OK(mtiart_memcpy_async(s, a, host, sizeof host, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_memcpy_async(s, b, a, sizeof host, MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(mtiart_memcpy(s, back, b, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(memcmp(host, back, sizeof host) == 0);
    /* Overlapping device-to-device copy behaves as memmove. */
    CHECK_OK(mtiart_memcpy_async(s, b + 1, b, 100, MTIART_MEMCPY_DEFAULT));
    CHECK_OK(mtiart_memcpy(s, back, b, 101, MTIART_MEMCPY_DEFAULT));
    CHECK(back[0] == host[0] && memcmp(back + 1, host, 100) == 0);
    /* Host-to-host through a stream. */
    uint8_t h1[16] = {1, 2, 3}, h2[16] = {0};
    CHECK_OK(mtiart_memcpy(s, h2, h1, 16, MTIART_MEMCPY_HOST_TO_HOST));
    CHECK(memcmp(h1, h2, 16) == 0);
    /* Fills of every pattern size, at an offset, with guards around. */
    const uint64_t pattern = 0x8877665544332211ull;
    for (uint32_t size = 1; size <= 8; size *= 2) {
        CHECK_OK(mtiart_memset_async(s, a, 0xEE, N * 8));
        CHECK_OK(mtiart_fill_async(s, a + 8, &pattern, size, 100));
        CHECK_OK(mtiart_memcpy(s, back, a, N * 8, MTIART_MEMCPY_DEVICE_TO_HOST));
        int bad = 0;
        for (int i = 0; i < 8; i++) bad += back[i] != 0xEE;
        for (uint32_t i = 0; i < 100 * size; i++)
            bad += back[8 + i] != ((const uint8_t *)&pattern)[i % size];
        for (uint32_t i = 8 + 100 * size; i < N * 8; i++) bad += back[i] != 0xEE;
        CHECK(bad == 0);
    }
    /* Zero-byte operations succeed and do nothing. */
    CHECK_OK(mtiart_memcpy_async(s, a, host, 0, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_memset_async(s, a, 0, 0));
    CHECK_OK(mtiart_fill_async(s, a, &pattern, 4, 0));
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Many small bursts of work with synchronize in between (the hand-back path). */
static void test_many_round_trips(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    atomic_long counter = 0;
    for (int i = 0; i < 3000; i++) {
        launch_count(s, &counter);
        if (i % 3 == 0) launch_count(s, &counter);
        CHECK_OK(mtiart_stream_synchronize(s));
    }
    CHECK(atomic_load(&counter) == 4000);
    /* A long queue (several chunks) on one stream */
    for (int i = 0; i < 20000; i++) launch_count(s, &counter);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 24000);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Blocking copies run on the calling thread when the stream has nothing pending (idle, or
 * its worker lingering for more): they still see every op enqueued before them, ops other
 * threads enqueue meanwhile run after them, and none is lost in the hand-back. */
typedef struct copy_race_ctx {
    mtiart_stream s;
    int64_t *other;
    atomic_int stop;
    long launched;
} copy_race_ctx;

static void *copy_race_producer(void *arg) {
    copy_race_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        CHECK_OK(launch_add_i64(c->s, c->other, 1));
        c->launched++;
        if (c->launched % 64 == 0) sched_yield();
    }
    return NULL;
}

/* Several threads taking one stream over for their blocking copies, while another keeps
 * it busy: every takeover, hand-back and linger races with the others and with the
 * workers, and each thread still reads back exactly what its own ops wrote. */
typedef struct copy_taker_ctx {
    copy_race_ctx *race;
    int64_t *value;
    int bad;
    mtiart_status status;
} copy_taker_ctx;

static void *copy_taker(void *arg) {
    copy_taker_ctx *t = arg;
    for (int64_t i = 0; i < 2000 && t->status == MTIART_SUCCESS; i++) {
        int64_t back = -1;
        if ((t->status =
                 mtiart_memcpy(t->race->s, t->value, &i, sizeof i, MTIART_MEMCPY_HOST_TO_DEVICE)) ||
            (t->status = launch_add_i64(t->race->s, t->value, 3)) ||
            (t->status = mtiart_memcpy(t->race->s, &back, t->value, sizeof back,
                                       MTIART_MEMCPY_DEVICE_TO_HOST)))
            break;
        t->bad += back != i + 3;
        if (i % 97 == 0) sched_yield();
    }
    return NULL;
}

static void test_blocking_copies_from_many_threads(void) {
    enum { TAKERS = 3 };
    copy_race_ctx c = {.launched = 0};
    CHECK_OK(mtiart_stream_create(0, 0, &c.s));
    CHECK_OK(mtiart_malloc_async(c.s, sizeof *c.other, (void **)&c.other));
    CHECK_OK(mtiart_memset_async(c.s, c.other, 0, sizeof *c.other));
    copy_taker_ctx takers[TAKERS];
    pthread_t threads[TAKERS], producer;
    for (int k = 0; k < TAKERS; k++) {
        takers[k] = (copy_taker_ctx){.race = &c};
        CHECK_OK(mtiart_malloc_async(c.s, sizeof(int64_t), (void **)&takers[k].value));
    }
    CHECK_OK(mtiart_stream_synchronize(c.s));
    CHECK(pthread_create(&producer, NULL, copy_race_producer, &c) == 0);
    for (int k = 0; k < TAKERS; k++)
        CHECK(pthread_create(&threads[k], NULL, copy_taker, &takers[k]) == 0);
    for (int k = 0; k < TAKERS; k++) {
        pthread_join(threads[k], NULL);
        CHECK_OK(takers[k].status);
        CHECK(takers[k].bad == 0);
    }
    atomic_store(&c.stop, 1);
    pthread_join(producer, NULL);
    int64_t total = -1;
    CHECK_OK(mtiart_memcpy(c.s, &total, c.other, sizeof total, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(total == c.launched);
    for (int k = 0; k < TAKERS; k++) CHECK_OK(mtiart_free(takers[k].value));
    CHECK_OK(mtiart_free(c.other));
    CHECK_OK(mtiart_stream_destroy(c.s));
}

/* A host asleep in a synchronize is woken once its target is reached, whichever way the
 * worker goes on: lingering on the drained stream (the wake comes once the stream can be
 * taken over), handing it back, or running more work that another thread enqueued
 * meanwhile (the wake comes at once). A missed wake shows as a timeout, not a hang. */
typedef struct late_producer_ctx {
    mtiart_stream s;
    atomic_long *counter;
    atomic_int started;
} late_producer_ctx;

static void *late_producer(void *arg) {
    late_producer_ctx *c = arg;
    while (!atomic_load(&c->started)) sched_yield();
    for (int i = 0; i < 50; i++) CHECK_OK(mtiart_launch_host_func(c->s, h_count, c->counter));
    return NULL;
}

static void test_sleeping_hosts_are_woken(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *value;
    CHECK_OK(mtiart_malloc_async(s, sizeof *value, (void **)&value));
    CHECK_OK(mtiart_memset_async(s, value, 0, sizeof *value));
    double nap = 3.0; /* long enough that the host's spin budget runs out and it sleeps */
    const uint64_t timeout_ns = UINT64_C(10000000000);
    for (int64_t i = 0; i < 12; i++) {
        CHECK_OK(mtiart_launch_host_func(s, h_sleep, &nap));
        CHECK_OK(launch_add_i64(s, value, 1));
        CHECK_OK(mtiart_stream_synchronize_timeout(s, timeout_ns));
        int64_t back = -1; /* the copy right after the wake: the stream is drained */
        CHECK_OK(mtiart_memcpy_timeout(s, &back, value, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST,
                                       timeout_ns));
        CHECK(back == i + 1);
    }
    /* Work arriving while the host sleeps: its target is passed with more ops queued. */
    atomic_long counter = 0;
    late_producer_ctx c = {.s = s, .counter = &counter};
    for (int round = 0; round < 6; round++) {
        pthread_t producer;
        CHECK(pthread_create(&producer, NULL, late_producer, &c) == 0);
        CHECK_OK(mtiart_launch_host_func(s, h_sleep, &nap));
        atomic_store(&c.started, 1);
        CHECK_OK(mtiart_stream_synchronize_timeout(s, timeout_ns));
        pthread_join(producer, NULL);
        atomic_store(&c.started, 0);
    }
    CHECK_OK(mtiart_stream_synchronize_timeout(s, timeout_ns));
    CHECK(atomic_load(&counter) == 6 * 50);
    CHECK_OK(mtiart_free(value));
    CHECK_OK(mtiart_stream_destroy(s));
}

static void test_blocking_copies_in_order(void) {
    for (int with_producer = 0; with_producer <= 1; with_producer++) {
        copy_race_ctx c = {.launched = 0};
        CHECK_OK(mtiart_stream_create(0, 0, &c.s));
        int64_t *mine;
        CHECK_OK(mtiart_malloc_async(c.s, sizeof *mine, (void **)&mine));
        CHECK_OK(mtiart_malloc_async(c.s, sizeof *c.other, (void **)&c.other));
        CHECK_OK(mtiart_memset_async(c.s, c.other, 0, sizeof *c.other));
        CHECK_OK(mtiart_stream_synchronize(c.s));
        pthread_t producer;
        if (with_producer) CHECK(pthread_create(&producer, NULL, copy_race_producer, &c) == 0);
        int bad = 0;
        for (int64_t i = 0; i < 3000; i++) {
            /* a copy in, a kernel on it, a copy out; sometimes after a pause long enough
             * for the worker to stop lingering and hand the stream back */
            CHECK_OK(mtiart_memcpy(c.s, mine, &i, sizeof i, MTIART_MEMCPY_HOST_TO_DEVICE));
            CHECK_OK(launch_add_i64(c.s, mine, 5));
            int64_t back = -1;
            CHECK_OK(mtiart_memcpy(c.s, &back, mine, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST));
            bad += back != i + 5;
            /* an immediate second read: the stream is drained now */
            CHECK_OK(mtiart_memcpy(c.s, &back, mine, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST));
            bad += back != i + 5;
            if (i % 500 == 0) sleep_ms(0.2);
        }
        CHECK(bad == 0);
        if (with_producer) {
            atomic_store(&c.stop, 1);
            pthread_join(producer, NULL);
        }
        CHECK_OK(mtiart_stream_synchronize(c.s));
        int64_t total = -1;
        CHECK_OK(mtiart_memcpy(c.s, &total, c.other, sizeof total, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(total == c.launched);
        /* a refused copy leaves nothing behind and the stream keeps working */
        CHECK(mtiart_memcpy(c.s, &total, (void *)(uintptr_t)16, sizeof total,
                            MTIART_MEMCPY_DEVICE_TO_HOST) != MTIART_SUCCESS);
        CHECK_OK(mtiart_stream_synchronize(c.s));
        CHECK_OK(launch_add_i64(c.s, c.other, 1));
        CHECK_OK(mtiart_memcpy(c.s, &total, c.other, sizeof total, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(total == c.launched + 1);
        CHECK_OK(mtiart_free(mine));
        CHECK_OK(mtiart_free(c.other));
        CHECK_OK(mtiart_stream_destroy(c.s));
    }
}

/* Arguments: every value arrives intact, for small and maximal argument lists (64 values
 * of 4096 bytes: more than 64 KB of packed arguments), eagerly, captured and in a
 * hand-built graph. */
typedef struct arg_spec {
    uint32_t count;
    uint32_t size[64];
} arg_spec;

static atomic_int arg_errors;

static int32_t k_check_args(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    const arg_spec *spec = *(const arg_spec *const *)args[0];
    for (uint32_t i = 1; i < spec->count; i++) {
        const unsigned char *v = args[i];
        if (((uintptr_t)v & 7) != 0) atomic_fetch_add(&arg_errors, 1);
        for (uint32_t j = 0; j < spec->size[i]; j++)
            if (v[j] != (unsigned char)(i * 31 + j % 251)) {
                atomic_fetch_add(&arg_errors, 1);
                break;
            }
    }
    return 0;
}

static void test_arguments(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    static unsigned char values[64][4096];
    static arg_spec specs[4];
    const uint32_t counts[4] = {2, 7, 64, 64};
    for (int k = 0; k < 4; k++) {
        arg_spec *spec = &specs[k];
        spec->count = counts[k];
        mtiart_arg a[64];
        a[0] = (mtiart_arg){MTIART_ARG_VALUE, sizeof spec, &spec, 0};
        for (uint32_t i = 1; i < spec->count; i++) {
            spec->size[i] = k == 3 ? 4096 : (k == 2 ? 1 + (i * 37) % 300 : i);
            for (uint32_t j = 0; j < spec->size[i]; j++)
                values[i][j] = (unsigned char)(i * 31 + j % 251);
            a[i] = (mtiart_arg){MTIART_ARG_VALUE, spec->size[i], values[i], 0};
        }
        CHECK_OK(mtiart_launch_kernel(s, k_check_args, 3, a, spec->count));
        /* captured */
        mtiart_graph g;
        CHECK_OK(
            mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
        CHECK_OK(mtiart_launch_kernel(s, k_check_args, 1, a, spec->count));
        CHECK_OK(mtiart_stream_end_capture(s, &g));
        /* hand-built */
        size_t node;
        CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_check_args, 2, a, spec->count, &node));
        mtiart_graph_exec x;
        CHECK_OK(mtiart_graph_instantiate(g, &x));
        memset(values, 0, sizeof values); /* snapshotted at the calls */
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(atomic_load(&arg_errors) == 0);
        CHECK_OK(mtiart_graph_exec_destroy(x));
        CHECK_OK(mtiart_graph_destroy(g));
    }
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Several threads enqueue on and synchronize one shared stream at once. */
typedef struct shared_ctx {
    mtiart_stream s;
    atomic_long *counter;
    int failed;
} shared_ctx;

static void *shared_sync_thread(void *arg) {
    shared_ctx *c = arg;
    for (int i = 0; i < 300; i++) {
        mtiart_arg a = {MTIART_ARG_VALUE, sizeof c->counter, &c->counter, 0};
        long before = atomic_load(c->counter);
        if (mtiart_launch_kernel(c->s, k_count, 1, &a, 1) || mtiart_stream_synchronize(c->s))
            c->failed = 1;
        /* at least our own launch has run */
        if (atomic_load(c->counter) < before + 1) c->failed = 1;
    }
    return NULL;
}

static void test_concurrent_synchronize(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_get_default(0, &s));
    atomic_long counter = 0;
    pthread_t th[4];
    shared_ctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (shared_ctx){s, &counter, 0};
        pthread_create(&th[i], NULL, shared_sync_thread, &ctx[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!ctx[i].failed);
    }
    CHECK(atomic_load(&counter) == 1200);
}

/* With a single worker the order in which waiting streams run is deterministic: the most
 * urgent priority first. */
static void test_priority_order_one_worker(void) {
    if (g_workers != 1) return;
    mtiart_stream hold, low, mid, high;
    CHECK_OK(mtiart_stream_create(0, 0, &hold));
    CHECK_OK(mtiart_stream_create(0, 0, &low));
    CHECK_OK(mtiart_stream_create(0, -1, &mid));
    CHECK_OK(mtiart_stream_create(0, -3, &high));
    gate g = {0};
    launch_gate(hold, &g);
    CHECK(WAIT_UNTIL(atomic_load(&g.entered), 5000)); /* the only worker is held */
    order_log *log = calloc(1, sizeof *log);
    log_entry e[3] = {{log, 0}, {log, 1}, {log, 3}};
    CHECK_OK(mtiart_launch_host_func(low, h_log, &e[0]));
    CHECK_OK(mtiart_launch_host_func(mid, h_log, &e[1]));
    CHECK_OK(mtiart_launch_host_func(high, h_log, &e[2]));
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(atomic_load(&log->n) == 3);
    CHECK(log->v[0] == 3 && log->v[1] == 1 && log->v[2] == 0);
    free(log);
    CHECK_OK(mtiart_stream_destroy(hold));
    CHECK_OK(mtiart_stream_destroy(low));
    CHECK_OK(mtiart_stream_destroy(mid));
    CHECK_OK(mtiart_stream_destroy(high));
}

static int run_all(void);

#include <spawn.h>
#include <sys/wait.h>
extern char **environ;

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--one-worker") == 0) {
        setenv("MTIART_NUM_WORKERS", "1", 1); /* before the first libmtiart call */
        return run_all();
    }
    /* Everything once more with a single worker, in a child process. */
    pid_t pid;
    char *child_argv[] = {argv[0], "--one-worker", NULL};
    const char *self = strchr(argv[0], '/') ? argv[0] : "/proc/self/exe";
    int rc = posix_spawn(&pid, self, NULL, NULL, child_argv, environ);
    CHECK(rc == 0);
    if (rc == 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return run_all();
}

/* ------------------------------------------------------------------ long queues */

#define QUEUE_OPS 3000 /* several of the worker's 512-op turns */

/* Host function: how many of the other stream's ops had run ({counter, out}). */
static int32_t h_count_so_far(void *user_data) {
    atomic_long **where = user_data;
    atomic_store(where[1], atomic_load(where[0]));
    return 0;
}

/* A stream with a long queue lets another stream with work run between its turns, also
 * with a single worker: the other's op runs long before the queue is through. */
static void test_long_queue_takes_turns(void) {
    mtiart_stream busy, other;
    CHECK_OK(mtiart_stream_create(0, 0, &busy));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    atomic_long count = 0, seen = -1;
    atomic_long *where[2] = {&count, &seen};
    gate g = {0, 0};
    launch_gate(busy, &g);
    for (int i = 0; i < QUEUE_OPS; i++) launch_count(busy, &count);
    CHECK_OK(mtiart_launch_host_func(other, h_count_so_far, where));
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(other));
    CHECK(atomic_load(&seen) >= 0 && atomic_load(&seen) < QUEUE_OPS);
    CHECK_OK(mtiart_stream_synchronize(busy));
    CHECK(atomic_load(&count) == QUEUE_OPS);
    CHECK_OK(mtiart_stream_destroy(busy));
    CHECK_OK(mtiart_stream_destroy(other));
}

typedef struct thread_log {
    pthread_t first;
    int64_t elsewhere; /* ops that ran on another thread than the first op */
    int64_t ran;
} thread_log;

static int32_t k_log_thread(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block, (void)num_blocks;
    thread_log *log = *(thread_log *const *)args[0];
    if (log->ran++ == 0) log->first = pthread_self();
    else if (!pthread_equal(log->first, pthread_self())) log->elsewhere++;
    return 0;
}

/* With no other stream waiting, a stream's long queue stays on the worker running it: its
 * turns end only for other streams, so no other worker is woken to take it over. */
static void test_long_queue_keeps_its_worker(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    thread_log log = {.ran = 0};
    thread_log *p = &log;
    mtiart_arg arg = {.kind = MTIART_ARG_VALUE, .size = sizeof p, .value = &p};
    gate g = {0, 0};
    launch_gate(s, &g);
    for (int i = 0; i < QUEUE_OPS; i++) CHECK_OK(mtiart_launch_kernel(s, k_log_thread, 1, &arg, 1));
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(log.ran == QUEUE_OPS);
    CHECK(log.elsewhere == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ idle hand-backs */

#define HANDBACK_THREADS 3
#define HANDBACK_OPS 1500

typedef struct handback_ctx {
    mtiart_stream own, shared;
    atomic_long *shared_count, *shared_launched;
    unsigned seed;
    int lost;
} handback_ctx;

/* Until `counter` reaches `target`, with no runtime call that could run the op itself (a
 * waiting host may help its stream): false after 5 s, when the op was lost. It spins rather
 * than poll as WAIT_UNTIL does: a 1 ms sleep would put every next op past the linger. */
static bool ran_by_itself(atomic_long *counter, long target) {
    double deadline = now_ms() + 5000;
    while (atomic_load(counter) < target)
        if (now_ms() > deadline) return false;
    return true;
}

/* One op at a time with a pause of 0-40 us after each, around the time a worker lingers
 * before it hands a drained stream back: ops are published just before, while and just
 * after it goes idle, on the thread's own stream and on one all threads share. */
static void *handback_thread(void *arg) {
    handback_ctx *c = arg;
    atomic_long own = 0;
    long own_launched = 0;
    for (long i = 1; i <= HANDBACK_OPS && !c->lost; i++) {
        bool shared = rand_r(&c->seed) % 4 == 0;
        if (shared) {
            /* every op numbered up to this one is published by now or about to be */
            long target = atomic_fetch_add(c->shared_launched, 1) + 1;
            launch_count(c->shared, c->shared_count);
            c->lost += !ran_by_itself(c->shared_count, target);
        } else {
            launch_count(c->own, &own);
            c->lost += !ran_by_itself(&own, ++own_launched);
        }
        double until = now_ms() + (rand_r(&c->seed) % 41) / 1000.0;
        while (now_ms() < until) {}
    }
    return NULL;
}

/* A drainer that hands a stream back as a producer publishes must leave the op to run: it
 * takes the stream back, or the producer schedules it. A lost op would never run. */
static void test_ops_published_as_the_stream_goes_idle(void) {
    handback_ctx ctx[HANDBACK_THREADS];
    pthread_t th[HANDBACK_THREADS];
    mtiart_stream shared;
    atomic_long shared_count = 0, shared_launched = 0;
    CHECK_OK(mtiart_stream_create(0, 0, &shared));
    for (int t = 0; t < HANDBACK_THREADS; t++) {
        ctx[t] = (handback_ctx){.shared = shared,
                                .shared_count = &shared_count,
                                .shared_launched = &shared_launched,
                                .seed = 17u + (unsigned)t};
        CHECK_OK(mtiart_stream_create(0, 0, &ctx[t].own));
    }
    for (int t = 0; t < HANDBACK_THREADS; t++)
        pthread_create(&th[t], NULL, handback_thread, &ctx[t]);
    for (int t = 0; t < HANDBACK_THREADS; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < HANDBACK_THREADS; t++) {
        CHECK(ctx[t].lost == 0);
        CHECK_OK(mtiart_stream_synchronize(ctx[t].own));
        CHECK_OK(mtiart_stream_destroy(ctx[t].own));
    }
    CHECK_OK(mtiart_stream_synchronize(shared));
    CHECK(atomic_load(&shared_count) == atomic_load(&shared_launched));
    CHECK_OK(mtiart_stream_destroy(shared));
}

static int run_all(void) {
    CHECK_OK(mtiart_init());
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    g_workers = props.num_workers;
    test_order_many_producers();
    test_order_mixed_ops();
    test_streams_run_concurrently();
    test_priorities();
    test_stream_ids();
    test_destroy_with_pending_work();
    test_default_stream();
    test_query();
    test_sticky_errors();
    test_multi_block();
    test_sync_inside_host_function();
    test_sync_inside_kernel();
    test_device_synchronize();
    test_sync_is_per_stream();
    test_copies_and_fills();
    test_many_round_trips();
    test_blocking_copies_in_order();
    test_blocking_copies_from_many_threads();
    test_sleeping_hosts_are_woken();
    test_concurrent_synchronize();
    test_priority_order_one_worker();
    test_arguments();
    test_long_queue_takes_turns();
    test_long_queue_keeps_its_worker();
    test_ops_published_as_the_stream_goes_idle();
    printf("streams with %d worker(s): %s\n", g_workers, test_failures ? "FAILED" : "passed");
    TEST_MAIN_END();
}
