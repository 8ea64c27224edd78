/* Waits with a time limit: mtiart_stream_synchronize_timeout, mtiart_event_synchronize_timeout,
 * mtiart_device_synchronize_timeout and mtiart_memcpy_timeout return MTIART_NOT_READY when
 * the limit passes first, having reported, cleared and enqueued nothing more; the work goes on,
 * and a later wait (timed or not) sees it complete and reports its errors once. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rt_helpers.h"

static int g_workers;

static int32_t h_fail(void *user) {
    (void)user;
    mtiart_kernel_set_error_message("failed on purpose");
    return 5;
}

/* The call returned NOT_READY after about `ms` (not at once, not much later). */
#define CHECK_TIMED_OUT(call, ms)                                                                  \
    do {                                                                                           \
        double t0_ = now_ms();                                                                     \
        CHECK_STATUS((call), MTIART_NOT_READY);                                                    \
        double took_ = now_ms() - t0_;                                                             \
        if (took_ < (ms)*0.9 || took_ > (ms) + 500) {                                              \
            fprintf(stderr, "%s:%d: %s timed out after %.1f ms, expected %d\n", __FILE__,          \
                    __LINE__, #call, took_, (ms));                                                 \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

static void test_stream_timeout(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_synchronize_timeout(s, 0)); /* idle: done at once */
    gate g = {0};
    launch_gate(s, &g);
    atomic_long counter = 0;
    launch_count(s, &counter);
    CHECK_STATUS(mtiart_stream_synchronize_timeout(s, 0), MTIART_NOT_READY);
    CHECK_TIMED_OUT(mtiart_stream_synchronize_timeout(s, 30 * 1000000ull), 30);
    CHECK(atomic_load(&counter) == 0);
    /* Waiting in slices, as an interruptible caller does, sees the work through. */
    atomic_store(&g.open, 1);
    int slices = 0;
    mtiart_status st;
    while ((st = mtiart_stream_synchronize_timeout(s, 1000000)) == MTIART_NOT_READY) slices++;
    CHECK_OK(st);
    CHECK(atomic_load(&counter) == 1);
    CHECK(slices < 30000);
    CHECK_OK(mtiart_stream_synchronize_timeout(s, UINT64_MAX));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A wait that times out reports no sticky error (it would be lost: the caller keeps waiting);
 * the wait that completes reports it, once. */
static void test_sticky_error_after_timeout(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    gate g = {0};
    CHECK_OK(mtiart_launch_host_func(s, h_fail, NULL));
    launch_gate(s, &g);
    CHECK(WAIT_UNTIL(atomic_load(&g.entered), 5000));
    CHECK_STATUS(mtiart_stream_synchronize_timeout(s, 5 * 1000000ull), MTIART_NOT_READY);
    CHECK_STATUS(mtiart_stream_synchronize_timeout(s, 0), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK_STATUS(mtiart_stream_synchronize_timeout(s, UINT64_MAX), MTIART_ERROR_KERNEL_FAILED);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_stream_synchronize_timeout: ") != NULL);
    CHECK(strstr(mtiart_last_error_message(), "failed on purpose") != NULL);
    CHECK_OK(mtiart_stream_synchronize_timeout(s, 0));
    CHECK_OK(mtiart_stream_destroy(s));
}

static void test_event_timeout(void) {
    mtiart_stream s;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &e));
    CHECK_OK(mtiart_event_synchronize_timeout(e, 0)); /* never recorded */
    gate g = {0};
    launch_gate(s, &g);
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_TIMED_OUT(mtiart_event_synchronize_timeout(e, 20 * 1000000ull), 20);
    /* A blocking-sync event sleeps at once; it times out the same. */
    mtiart_event b;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_BLOCKING_SYNC, &b));
    CHECK_OK(mtiart_event_record(b, s));
    CHECK_TIMED_OUT(mtiart_event_synchronize_timeout(b, 20 * 1000000ull), 20);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_event_synchronize_timeout(e, 10000 * 1000000ull));
    CHECK_OK(mtiart_event_synchronize_timeout(b, 10000 * 1000000ull));
    CHECK_OK(mtiart_event_destroy(b));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* The device-wide wait: NOT_READY while any stream is busy, with no stream's error reported
 * (so none is lost); once everything is done, the first error, once. */
static void test_device_timeout(void) {
    if (g_workers < 2) return; /* the gate holds a worker while the failing stream runs */
    mtiart_stream gated, failing;
    CHECK_OK(mtiart_stream_create(0, 0, &gated));
    CHECK_OK(mtiart_stream_create(0, 0, &failing));
    CHECK_OK(mtiart_device_synchronize_timeout(0, 10000 * 1000000ull));
    gate g = {0};
    launch_gate(gated, &g);
    CHECK_OK(mtiart_launch_host_func(failing, h_fail, NULL));
    CHECK_TIMED_OUT(mtiart_device_synchronize_timeout(0, 25 * 1000000ull), 25);
    CHECK_STATUS(mtiart_device_synchronize_timeout(0, 0), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK_STATUS(mtiart_device_synchronize_timeout(0, UINT64_MAX), MTIART_ERROR_KERNEL_FAILED);
    CHECK(strstr(mtiart_last_error_message(), "failed on purpose") != NULL);
    CHECK_OK(mtiart_device_synchronize_timeout(0, 10000 * 1000000ull));
    CHECK_OK(mtiart_stream_destroy(gated));
    CHECK_OK(mtiart_stream_destroy(failing));
    CHECK_STATUS(mtiart_device_synchronize_timeout(1000, 0), MTIART_ERROR_INVALID_DEVICE);
}

/* A copy that times out stays enqueued and runs in stream order; the host buffer is written
 * when the stream gets there, not before. */
static void test_memcpy_timeout(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *dev;
    CHECK_OK(mtiart_malloc_async(s, sizeof(int64_t), (void **)&dev));
    int64_t host = 41, back = 0;
    CHECK_OK(mtiart_memcpy_timeout(s, dev, &host, sizeof host, MTIART_MEMCPY_HOST_TO_DEVICE,
                                   UINT64_MAX));
    gate g = {0};
    launch_gate(s, &g);
    CHECK_OK(launch_add_i64(s, dev, 1));
    CHECK_TIMED_OUT(mtiart_memcpy_timeout(s, &back, dev, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST,
                                          20 * 1000000ull),
                    20);
    CHECK(back == 0);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize_timeout(s, UINT64_MAX));
    CHECK(back == 42);
    back = 0;
    CHECK_OK(mtiart_memcpy_timeout(s, &back, dev, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST,
                                   10000 * 1000000ull));
    CHECK(back == 42);
    CHECK_OK(mtiart_free(dev));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Refused during capture, before anything is enqueued: on the capturing stream, and (global
 * mode) on any other stream, whose queue then stays empty. */
static void test_timed_calls_during_capture(void) {
    mtiart_stream s, other;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    int64_t *dev, back = 0;
    CHECK_OK(mtiart_malloc_async(other, sizeof(int64_t), (void **)&dev));
    CHECK_OK(mtiart_memset_async(other, dev, 1, sizeof(int64_t)));
    CHECK_OK(mtiart_stream_synchronize(other));
    mtiart_graph graph;
    mtiart_event e;
    CHECK_OK(mtiart_event_create(0, &e));

    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_STATUS(mtiart_event_synchronize_timeout(e, 0), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK_STATUS(mtiart_stream_end_capture(s, &graph), MTIART_ERROR_CAPTURE_INVALIDATED);

    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_STATUS(mtiart_stream_synchronize_timeout(s, 0), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK_STATUS(mtiart_stream_end_capture(s, &graph), MTIART_ERROR_CAPTURE_INVALIDATED);

    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_STATUS(mtiart_device_synchronize_timeout(0, 0), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK_STATUS(mtiart_stream_end_capture(s, &graph), MTIART_ERROR_CAPTURE_INVALIDATED);

    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_STATUS(mtiart_memcpy_timeout(other, &back, dev, sizeof back, MTIART_MEMCPY_DEVICE_TO_HOST,
                                       UINT64_MAX),
                 MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK_STATUS(mtiart_stream_end_capture(s, &graph), MTIART_ERROR_CAPTURE_INVALIDATED);
    CHECK_OK(mtiart_stream_synchronize(other));
    CHECK(back == 0);

    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_free(dev));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(other));
}

/* Inside a host function, a wait would deadlock its worker: refused, whatever the limit. */
static atomic_int g_from_worker[3];

static int32_t h_timed_waits(void *user) {
    mtiart_stream s = user;
    int64_t v = 0;
    atomic_store(&g_from_worker[0], mtiart_stream_synchronize_timeout(s, 0));
    atomic_store(&g_from_worker[1], mtiart_device_synchronize_timeout(0, 1000));
    atomic_store(&g_from_worker[2],
                 mtiart_memcpy_timeout(s, &v, &v, sizeof v, MTIART_MEMCPY_HOST_TO_HOST, 0));
    return 0;
}

static void test_timed_waits_on_a_worker(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_launch_host_func(s, h_timed_waits, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    for (int i = 0; i < 3; i++) CHECK(atomic_load(&g_from_worker[i]) == MTIART_ERROR_NOT_PERMITTED);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Threads waiting in slices on one stream while another keeps feeding it: every waiter
 * finishes, and each sees the work it waited for. */
typedef struct slice_waiter {
    mtiart_stream s;
    atomic_long *counter;
    int failures;
} slice_waiter;

static void *slice_waiter_main(void *arg) {
    slice_waiter *w = arg;
    for (int round = 0; round < 200; round++) {
        long before = atomic_load(w->counter);
        mtiart_status st;
        while ((st = mtiart_stream_synchronize_timeout(w->s, 200000)) == MTIART_NOT_READY) {}
        if (st != MTIART_SUCCESS || atomic_load(w->counter) < before) w->failures++;
    }
    return NULL;
}

static void test_concurrent_slices(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    atomic_long counter = 0;
    slice_waiter w[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (slice_waiter){s, &counter, 0};
        pthread_create(&threads[i], NULL, slice_waiter_main, &w[i]);
    }
    double ms = 0.05;
    for (int i = 0; i < 2000; i++) {
        if (i % 8 == 0) CHECK_OK(mtiart_launch_host_func(s, h_sleep, &ms));
        launch_count(s, &counter);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        CHECK(w[i].failures == 0);
    }
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(atomic_load(&counter) == 2000);
    CHECK_OK(mtiart_stream_destroy(s));
}

int main(void) {
    CHECK_OK(mtiart_init());
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    g_workers = props.num_workers;
    test_stream_timeout();
    test_sticky_error_after_timeout();
    test_event_timeout();
    test_device_timeout();
    test_memcpy_timeout();
    test_timed_calls_during_capture();
    test_timed_waits_on_a_worker();
    test_concurrent_slices();
    TEST_MAIN_END();
}
