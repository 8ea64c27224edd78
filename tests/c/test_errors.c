/* Error reporting: status names, invalid handles, invalid devices, NULL out-parameters,
 * bad launches and copies, the per-thread message, and that a failing call leaves the
 * stream usable. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rt_helpers.h"

static mtiart_stream g_stream;
static atomic_long g_counter;

/* The stream still runs work after a failed call. */
static void check_stream_works(int line) {
    long before = atomic_load(&g_counter);
    launch_count(g_stream, &g_counter);
    mtiart_status st = mtiart_stream_synchronize(g_stream);
    if (st != MTIART_SUCCESS || atomic_load(&g_counter) != before + 1) {
        fprintf(stderr, "line %d: stream unusable after a failed call (%s)\n", line,
                mtiart_status_name(st));
        test_failures++;
    }
}
#define STREAM_WORKS() check_stream_works(__LINE__)

/* A failing call must set a non-empty message and mtiart_last_error. */
#define CHECK_FAIL(call, expected)                                                                 \
    do {                                                                                           \
        mtiart_clear_last_error();                                                                 \
        CHECK_STATUS(call, expected);                                                              \
        CHECK(mtiart_last_error() == (expected));                                                  \
        CHECK(mtiart_last_error_message()[0] != '\0');                                             \
    } while (0)

static void test_status_names(void) {
    const mtiart_status all[] = {MTIART_SUCCESS,
                                 MTIART_NOT_READY,
                                 MTIART_ERROR_INVALID_VALUE,
                                 MTIART_ERROR_INVALID_HANDLE,
                                 MTIART_ERROR_INVALID_DEVICE,
                                 MTIART_ERROR_OUT_OF_MEMORY,
                                 MTIART_ERROR_INVALID_POINTER,
                                 MTIART_ERROR_KERNEL_FAILED,
                                 MTIART_ERROR_NOT_PERMITTED,
                                 MTIART_ERROR_CAPTURE_UNSUPPORTED,
                                 MTIART_ERROR_CAPTURE_INVALIDATED,
                                 MTIART_ERROR_CAPTURE_UNJOINED,
                                 MTIART_ERROR_CAPTURE_WRONG_STREAM,
                                 MTIART_ERROR_CAPTURE_ISOLATION,
                                 MTIART_ERROR_NOT_CAPTURING,
                                 MTIART_ERROR_ALREADY_CAPTURING,
                                 MTIART_ERROR_NOT_SUPPORTED,
                                 MTIART_ERROR_LOAD_FAILED,
                                 MTIART_ERROR_INTERNAL};
    const size_t n = sizeof all / sizeof all[0];
    CHECK(n == 19);
    for (size_t i = 0; i < n; i++) {
        const char *name = mtiart_status_name(all[i]);
        const char *text = mtiart_status_string(all[i]);
        CHECK(name != NULL && text != NULL);
        if (!name || !text) continue;
        CHECK(strncmp(name, "MTIART_", 7) == 0);
        CHECK(strcmp(name, "MTIART_ERROR_UNKNOWN") != 0);
        CHECK(strlen(text) > 3);
        CHECK(strcmp(text, "unknown status code") != 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(name, mtiart_status_name(all[j])) != 0);
            CHECK(strcmp(text, mtiart_status_string(all[j])) != 0);
        }
    }
    CHECK(strcmp(mtiart_status_name(MTIART_ERROR_INVALID_HANDLE), "MTIART_ERROR_INVALID_HANDLE") ==
          0);
    CHECK(strcmp(mtiart_status_name(MTIART_SUCCESS), "MTIART_SUCCESS") == 0);
    CHECK(strcmp(mtiart_status_name(MTIART_ERROR_INTERNAL), "MTIART_ERROR_INTERNAL") == 0);
    /* Unknown codes still give strings. */
    CHECK(mtiart_status_name((mtiart_status)-1000) != NULL);
    CHECK(mtiart_status_string((mtiart_status)12345) != NULL);
    CHECK(mtiart_version() == MTIART_VERSION_NUMBER);
    CHECK(strcmp(mtiart_version_string(), "0.2.0") == 0);
}

/* Handle values that were never handed out. */
static const uint64_t garbage_values[] = {
    1,
    2,
    3,
    4,
    0x10,
    0x11,
    0x12,
    0x13,
    0x14,
    0xdeadbeef,
    0xdeadbeefcafef00dull,
    UINT64_MAX,
    UINT64_MAX - 1,
    0x7fffffffffffffffull,
    /* right kind bits, odd generations, indices that were never (or not so) used */
    (12345ull << 28) | (7ull << 4) | 1,
    (99999ull << 28) | (3ull << 4) | 2,
    (777ull << 28) | (0xfffffull << 4) | 1,
    (1ull << 28) | (0xffffffull << 4) | 3,
    (3ull << 28) | (0x123456ull << 4) | 4,
    (1ull << 40) | (5ull << 4) | 1,
};

static void test_invalid_handles(void) {
    mtiart_stream s;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(0, &e));
    int dev;
    int prio;
    uint64_t id;
    float ms;
    void *p = NULL;
    size_t count;
    mtiart_graph graph;
    mtiart_graph_exec exec;

    /* NULL handles */
    CHECK_FAIL(mtiart_stream_destroy(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_synchronize(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_query(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_get_device(NULL, &dev), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_get_priority(NULL, &prio), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_get_id(NULL, &id), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_wait_event(NULL, e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_wait_event(s, NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_launch_kernel(NULL, k_count, 1, NULL, 0), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_launch_host_func(NULL, h_count, &g_counter), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_memset_async(NULL, p, 0, 0), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_malloc_async(NULL, 16, &p), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_record(NULL, s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_record(e, NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_query(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_synchronize(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_destroy(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_elapsed_time(NULL, e, &ms), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_elapsed_time(e, NULL, &ms), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_destroy(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_get_node_count(NULL, &count), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_instantiate(NULL, &exec), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_exec_destroy(NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_launch(NULL, s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(
        mtiart_stream_begin_capture(NULL, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}),
        MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_end_capture(NULL, &graph), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_get_capture_info(NULL, NULL, NULL, NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_record_stream(p, NULL), MTIART_ERROR_INVALID_HANDLE);

    /* Wrong kinds: a stream passed as an event and the other way round, graph vs exec. */
    CHECK_FAIL(mtiart_event_query((mtiart_event)(void *)s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_record((mtiart_event)(void *)s, s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_destroy((mtiart_event)(void *)s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_synchronize((mtiart_stream)(void *)e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_destroy((mtiart_stream)(void *)e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_wait_event(s, (mtiart_event)(void *)s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_instantiate(graph, &exec));
    CHECK_FAIL(mtiart_graph_launch((mtiart_graph_exec)(void *)graph, s),
               MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_exec_destroy((mtiart_graph_exec)(void *)graph),
               MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_destroy((mtiart_graph)(void *)exec), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_get_node_count((mtiart_graph)(void *)s, &count),
               MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_launch(exec, (mtiart_stream)(void *)graph),
               MTIART_ERROR_INVALID_HANDLE);
    /* Both still valid after the misuse. */
    CHECK_OK(mtiart_graph_launch(exec, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_event_query(e));

    /* Garbage values */
    for (size_t i = 0; i < sizeof garbage_values / sizeof garbage_values[0]; i++) {
        void *h = (void *)(uintptr_t)garbage_values[i];
        CHECK_FAIL(mtiart_stream_synchronize((mtiart_stream)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_stream_destroy((mtiart_stream)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_launch_kernel((mtiart_stream)h, k_count, 1, NULL, 0),
                   MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_event_query((mtiart_event)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_event_destroy((mtiart_event)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_graph_destroy((mtiart_graph)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_graph_exec_destroy((mtiart_graph_exec)h), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_graph_launch((mtiart_graph_exec)h, s), MTIART_ERROR_INVALID_HANDLE);
    }
    /* Pointers to real memory are not handles either. */
    int local = 0;
    void *heap = malloc(64);
    void *dev_mem;
    CHECK_OK(mtiart_malloc(0, 64, &dev_mem));
    void *ptrs[] = {
        &local, heap, dev_mem, (void *)test_invalid_handles, (char *)heap + 1, (char *)&local + 3};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        CHECK_FAIL(mtiart_stream_query((mtiart_stream)ptrs[i]), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_event_synchronize((mtiart_event)ptrs[i]), MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_graph_get_node_count((mtiart_graph)ptrs[i], &count),
                   MTIART_ERROR_INVALID_HANDLE);
        CHECK_FAIL(mtiart_graph_exec_get_node_count((mtiart_graph_exec)ptrs[i], &count),
                   MTIART_ERROR_INVALID_HANDLE);
    }
    CHECK_OK(mtiart_free(dev_mem));
    free(heap);

    /* Destroyed handles */
    mtiart_stream dead_s;
    mtiart_event dead_e;
    CHECK_OK(mtiart_stream_create(0, 0, &dead_s));
    CHECK_OK(mtiart_event_create(0, &dead_e));
    CHECK_OK(mtiart_stream_destroy(dead_s));
    CHECK_OK(mtiart_event_destroy(dead_e));
    CHECK_FAIL(mtiart_stream_destroy(dead_s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_synchronize(dead_s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_query(dead_s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_launch_kernel(dead_s, k_count, 1, NULL, 0), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_malloc_async(dead_s, 64, &p), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_record(e, dead_s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_wait_event(dead_s, e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_destroy(dead_e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_record(dead_e, s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_query(dead_e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_event_synchronize(dead_e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_stream_wait_event(s, dead_e), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_FAIL(mtiart_graph_destroy(graph), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_instantiate(graph, &exec), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_get_node_count(graph, &count), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_to_dot(graph, NULL, 0, &count), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_exec_destroy(exec));
    CHECK_FAIL(mtiart_graph_exec_destroy(exec), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_launch(exec, s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_FAIL(mtiart_graph_exec_get_node_count(exec, &count), MTIART_ERROR_INVALID_HANDLE);

    /* A new object reusing the slot does not revive the old handle. */
    mtiart_stream again;
    CHECK_OK(mtiart_stream_create(0, 0, &again));
    CHECK(again != dead_s);
    CHECK_FAIL(mtiart_stream_query(dead_s), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_stream_query(again));
    CHECK_OK(mtiart_stream_destroy(again));

    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(s));
    STREAM_WORKS();
}

static void test_invalid_devices(void) {
    mtiart_device_properties props;
    mtiart_stream s = (mtiart_stream)(uintptr_t)0x1234;
    void *p = (void *)(uintptr_t)0x5678;
    mtiart_memory_stats stats;
    mtiart_graph g = NULL;
    mtiart_pool_info info;
    size_t count;
    int n = 0;
    CHECK_OK(mtiart_device_count(&n));
    CHECK(n >= 1);
    const int bad[] = {-1, n, n + 1, 64, 1000, -2147483647 - 1, 2147483647};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int d = bad[i];
        CHECK_FAIL(mtiart_device_get_properties(d, &props), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_device_synchronize(d), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_stream_get_default(d, &s), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_stream_create(d, 0, &s), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_malloc(d, 64, &p), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_empty_cache(d), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_memory_get_stats(d, &stats), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_memory_reset_peak_stats(d), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_memory_reset_accumulated_stats(d), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_memory_snapshot(d, NULL, 0, &count), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_graph_create(d, &g), MTIART_ERROR_INVALID_DEVICE);
        CHECK_FAIL(mtiart_pool_get_info(d, (mtiart_pool_id){0, 0}, &info),
                   MTIART_ERROR_INVALID_DEVICE);
    }
    /* Out-parameters are written only on success. */
    CHECK(s == (mtiart_stream)(uintptr_t)0x1234);
    CHECK(p == (void *)(uintptr_t)0x5678);
    CHECK(g == NULL);
    CHECK(strstr(mtiart_last_error_message(), "device") != NULL);
    STREAM_WORKS();
}

static void test_null_out_params(void) {
    mtiart_stream s;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &e));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_FAIL(mtiart_device_count(NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_device_get_properties(0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_get_default(0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_create(0, 0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_get_device(s, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_get_priority(s, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_get_id(s, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_event_create(0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_event_create(0x80, &e), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_event_elapsed_time(e, e, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_malloc(0, 64, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_malloc_async(s, 64, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_pointer_get_device(NULL, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memory_get_stats(0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memory_snapshot(0, NULL, 4, NULL), MTIART_ERROR_INVALID_VALUE);
    size_t count;
    CHECK_FAIL(mtiart_memory_snapshot(0, NULL, 4, &count), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_pool_handle_create(NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_pool_get_info(0, (mtiart_pool_id){0, 0}, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_attach_oom_observer(NULL, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(
        mtiart_detach_oom_observer((mtiart_oom_observer)(void (*)(void))test_null_out_params, NULL),
        MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_create(0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_instantiate(g, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_get_node_count(g, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_get_edge_count(g, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_get_device(g, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_get_pool(g, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_add_empty_node(g, NULL, 0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_add_empty_node(g, NULL, 2, &count), MTIART_ERROR_INVALID_VALUE);
    size_t dep = 5;
    CHECK_FAIL(mtiart_graph_add_empty_node(g, &dep, 1, &count), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_graph_to_dot(g, NULL, 10, &count), MTIART_ERROR_INVALID_VALUE);
    mtiart_node_info ni;
    CHECK_FAIL(mtiart_graph_get_node_info(g, 0, &ni), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_kernel_set_name(NULL, "x"), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_kernel_set_name(k_count, NULL), MTIART_ERROR_INVALID_VALUE);
    mtiart_kernel_fn fn;
    CHECK_FAIL(mtiart_kernel_load(NULL, "x", &fn), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_kernel_load("libc.so.6", "x", NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_kernel_load("/nonexistent/libnothing.so", "x", &fn),
               MTIART_ERROR_LOAD_FAILED);
    CHECK_FAIL(mtiart_kernel_load("libc.so.6", "mtiart_no_such_symbol_anywhere", &fn),
               MTIART_ERROR_LOAD_FAILED);
    CHECK_FAIL(mtiart_stream_end_capture(s, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_begin_capture(s, (mtiart_capture_mode)7, (mtiart_pool_id){0, 0}),
               MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){1, 1}),
               MTIART_ERROR_INVALID_VALUE);
    mtiart_capture_status cs;
    CHECK_OK(mtiart_stream_get_capture_info(s, &cs, NULL, NULL));
    CHECK(cs == MTIART_CAPTURE_STATUS_NONE);
    CHECK_FAIL(mtiart_graph_exec_get_node_count(NULL, NULL), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(s));
    STREAM_WORKS();
}

static int32_t k_noop(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    return 0;
}

static void test_bad_launches(void) {
    mtiart_stream s = g_stream;
    void *dev;
    CHECK_OK(mtiart_malloc_async(s, 1024, &dev));
    int host[4];
    int v = 1;
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 0, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    STREAM_WORKS();
    CHECK_FAIL(mtiart_launch_kernel(s, NULL, 1, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    STREAM_WORKS();
    mtiart_arg many[65];
    for (int i = 0; i < 65; i++) many[i] = (mtiart_arg){MTIART_ARG_VALUE, sizeof v, &v, 0};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, many, 65), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_launch_kernel(s, k_noop, 1, many, 64)); /* 64 is the limit */
    STREAM_WORKS();
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, NULL, 2), MTIART_ERROR_INVALID_VALUE);
    mtiart_arg a = {MTIART_ARG_VALUE, 0, &v, 0};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_VALUE);
    a = (mtiart_arg){MTIART_ARG_VALUE, 4097, &v, 0};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_VALUE);
    a = (mtiart_arg){MTIART_ARG_VALUE, 4, NULL, 0};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_VALUE);
    a = (mtiart_arg){17, 4, &v, 0};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_VALUE);
    STREAM_WORKS();
    /* Buffer arguments must lie inside live device allocations. */
    a = (mtiart_arg){MTIART_ARG_BUFFER_IN, 0, host, sizeof host};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    a = (mtiart_arg){MTIART_ARG_BUFFER_OUT, 0, dev, 1025};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    a = (mtiart_arg){MTIART_ARG_BUFFER_OUT, 0, (char *)dev + 1000, 25};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    a = (mtiart_arg){MTIART_ARG_BUFFER_INOUT, 0, NULL, 4};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    a = (mtiart_arg){MTIART_ARG_BUFFER_OUT, 0, (char *)dev + 1000, 24};
    CHECK_OK(mtiart_launch_kernel(s, k_noop, 1, &a, 1));
    STREAM_WORKS();
    CHECK_FAIL(mtiart_launch_host_func(s, NULL, NULL), MTIART_ERROR_INVALID_VALUE);
    STREAM_WORKS();
    CHECK_OK(mtiart_free(dev));
    /* A freed block is not a valid argument any more. */
    CHECK_OK(mtiart_stream_synchronize(s));
    a = (mtiart_arg){MTIART_ARG_BUFFER_IN, 0, dev, 8};
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    STREAM_WORKS();
}

static void test_bad_copies(void) {
    mtiart_stream s = g_stream;
    char *dev;
    char host[4096];
    memset(host, 7, sizeof host);
    CHECK_OK(mtiart_malloc_async(s, 1000, (void **)&dev));
    /* Host pointers on device sides */
    CHECK_FAIL(mtiart_memcpy_async(s, host, host, 16, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, host, host, 16, MTIART_MEMCPY_DEVICE_TO_HOST),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, host, dev, 16, MTIART_MEMCPY_DEVICE_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy(s, host, host, 16, MTIART_MEMCPY_DEVICE_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    STREAM_WORKS();
    /* Extents beyond the allocation (rounded to 1024 internally, but only 1000 asked
     * for: the block is 1024 bytes, so 1025 must fail). */
    CHECK_FAIL(mtiart_memcpy_async(s, dev, host, 1025, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, host, dev + 512, 600, MTIART_MEMCPY_DEVICE_TO_HOST),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, dev - 1, host, 8, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, host, dev, SIZE_MAX, MTIART_MEMCPY_DEVICE_TO_HOST),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy_async(s, dev + 8, host, SIZE_MAX - 4, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    STREAM_WORKS();
    /* NULL sides, unknown kinds */
    CHECK_FAIL(mtiart_memcpy_async(s, NULL, host, 8, MTIART_MEMCPY_HOST_TO_HOST),
               MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memcpy_async(s, host, NULL, 8, MTIART_MEMCPY_HOST_TO_HOST),
               MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memcpy_async(s, dev, host, 8, (mtiart_memcpy_kind)9),
               MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memcpy_async(s, dev, host, 8, (mtiart_memcpy_kind)-1),
               MTIART_ERROR_INVALID_VALUE);
    STREAM_WORKS();
    /* Fills */
    uint64_t pattern = 0x0102030405060708ull;
    CHECK_FAIL(mtiart_fill_async(s, dev, &pattern, 3, 4), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_fill_async(s, dev, NULL, 4, 4), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_fill_async(s, dev, &pattern, 8, 129), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_fill_async(s, host, &pattern, 8, 1), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_fill_async(s, dev, &pattern, 8, SIZE_MAX / 4), MTIART_ERROR_INVALID_VALUE);
    CHECK_FAIL(mtiart_memset_async(s, dev, 0, 1025), MTIART_ERROR_INVALID_POINTER);
    STREAM_WORKS();
    /* Good copies still work, both directions and inferred kinds. */
    CHECK_OK(mtiart_memcpy(s, dev, host, 1000, MTIART_MEMCPY_DEFAULT));
    char back[1000];
    memset(back, 0, sizeof back);
    CHECK_OK(mtiart_memcpy(s, back, dev, 1000, MTIART_MEMCPY_DEFAULT));
    CHECK(memcmp(back, host, sizeof back) == 0);
    /* Freed pointers */
    CHECK_OK(mtiart_free(dev));
    CHECK_FAIL(mtiart_memcpy_async(s, dev, host, 8, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memcpy(s, host, dev, 8, MTIART_MEMCPY_DEVICE_TO_HOST),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_memset_async(s, dev, 0, 8), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_free(dev), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_free(host), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_record_stream(host, s), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_record_stream(dev, s), MTIART_ERROR_INVALID_POINTER);
    int device = -5;
    CHECK_FAIL(mtiart_pointer_get_device(host, &device), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_pointer_get_device(dev, &device), MTIART_ERROR_INVALID_POINTER);
    CHECK(device == -5);
    STREAM_WORKS();
    /* The stream as a whole is still fine: nothing sticky came from refused calls. */
    CHECK_OK(mtiart_stream_query(s));
    CHECK_OK(mtiart_device_synchronize(0));
}

/* ------------------------------------------------------------------ per-thread messages */

typedef struct thread_msg {
    pthread_barrier_t *barrier;
    int which;
    int ok;
} thread_msg;

static void *msg_thread(void *arg) {
    thread_msg *t = arg;
    t->ok = 1;
    /* A fresh thread starts without an error. */
    if (mtiart_last_error() != MTIART_SUCCESS || mtiart_last_error_message()[0] != '\0') t->ok = 0;
    mtiart_status st;
    if (t->which == 0) st = mtiart_device_synchronize(77);
    else st = mtiart_stream_synchronize(NULL);
    pthread_barrier_wait(t->barrier); /* both threads have failed */
    pthread_barrier_wait(t->barrier);
    if (t->which == 0) {
        if (st != MTIART_ERROR_INVALID_DEVICE ||
            mtiart_last_error() != MTIART_ERROR_INVALID_DEVICE ||
            !strstr(mtiart_last_error_message(), "77") ||
            strstr(mtiart_last_error_message(), "stream handle"))
            t->ok = 0;
    } else {
        if (st != MTIART_ERROR_INVALID_HANDLE ||
            mtiart_last_error() != MTIART_ERROR_INVALID_HANDLE ||
            !strstr(mtiart_last_error_message(), "stream"))
            t->ok = 0;
    }
    mtiart_clear_last_error();
    if (mtiart_last_error() != MTIART_SUCCESS || mtiart_last_error_message()[0] != '\0') t->ok = 0;
    return NULL;
}

static void test_thread_local_message(void) {
    /* This thread's error is not disturbed by the others'. */
    CHECK_FAIL(mtiart_malloc(0, 64, NULL), MTIART_ERROR_INVALID_VALUE);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", mtiart_last_error_message());
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    thread_msg t[2] = {{&barrier, 0, 0}, {&barrier, 1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, msg_thread, &t[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    CHECK(t[0].ok && t[1].ok);
    CHECK(mtiart_last_error() == MTIART_ERROR_INVALID_VALUE);
    CHECK(strcmp(mine, mtiart_last_error_message()) == 0);
    mtiart_clear_last_error();
    CHECK(mtiart_last_error() == MTIART_SUCCESS);
    CHECK(mtiart_last_error_message()[0] == '\0');
}

/* Misuse from many threads at once never crashes and leaves the runtime usable. */
static void *misuse_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        mtiart_stream s;
        if (mtiart_stream_create(0, 0, &s) != MTIART_SUCCESS) return (void *)1;
        mtiart_stream_destroy(s);
        if (mtiart_stream_synchronize(s) != MTIART_ERROR_INVALID_HANDLE) return (void *)1;
        if (mtiart_stream_destroy(s) != MTIART_ERROR_INVALID_HANDLE) return (void *)1;
        if (mtiart_free((void *)(uintptr_t)(0x1000 + i)) != MTIART_ERROR_INVALID_POINTER)
            return (void *)1;
    }
    return NULL;
}

static void test_concurrent_misuse(void) {
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, misuse_thread, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    STREAM_WORKS();
}

/* ------------------------------------------------------------------ child modes */

/* MTIART_NUM_DEVICES=2: device indices and pointers of the wrong device. */
static int child_two_devices(void) {
    setenv("MTIART_NUM_DEVICES", "2", 1);
    setenv("MTIART_DEVICE_MEMORY", "32M", 1);
    int n = 0;
    CHECK_OK(mtiart_device_count(&n));
    CHECK(n == 2);
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(1, &props));
    CHECK(props.index == 1 && props.total_memory == 32ull << 20);
    CHECK_STATUS(mtiart_device_get_properties(2, &props), MTIART_ERROR_INVALID_DEVICE);
    mtiart_stream s0, s1;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(1, 0, &s1));
    int dev = -1;
    CHECK_OK(mtiart_stream_get_device(s1, &dev));
    CHECK(dev == 1);
    void *p0, *p1;
    CHECK_OK(mtiart_malloc_async(s0, 256, &p0));
    CHECK_OK(mtiart_malloc_async(s1, 256, &p1));
    CHECK_OK(mtiart_pointer_get_device(p1, &dev));
    CHECK(dev == 1);
    CHECK_OK(mtiart_pointer_get_device(p0, &dev));
    CHECK(dev == 0);
    /* Device pointers of another device on a stream */
    CHECK_STATUS(mtiart_memcpy_async(s0, p0, p1, 256, MTIART_MEMCPY_DEVICE_TO_DEVICE),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_memset_async(s0, p1, 0, 256), MTIART_ERROR_INVALID_POINTER);
    CHECK(strncmp(mtiart_last_error_message(),
                  "mtiart_memset_async: destination points into device 1", 53) == 0);
    CHECK(strstr(mtiart_last_error_message(), "memcpy") == NULL);
    /* record_stream too: a stream cannot use a block of another device. */
    CHECK_STATUS(mtiart_record_stream(p1, s0), MTIART_ERROR_INVALID_POINTER);
    CHECK(strstr(mtiart_last_error_message(), "device 1") != NULL);
    CHECK_STATUS(mtiart_record_stream(p0, s1), MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_record_stream(p1, s1));
    mtiart_arg a = {MTIART_ARG_BUFFER_IN, 0, p1, 256};
    CHECK_STATUS(mtiart_launch_kernel(s0, k_count, 1, &a, 1), MTIART_ERROR_INVALID_POINTER);
    mtiart_graph g;
    size_t node;
    CHECK_OK(mtiart_graph_create(1, &g));
    a.value = p0;
    CHECK_STATUS(mtiart_graph_add_kernel_node(g, NULL, 0, k_count, 1, &a, 1, &node),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_graph_add_empty_node(g, NULL, 0, &node));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_STATUS(mtiart_graph_launch(x, s0), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_launch(x, s1));
    /* Events work across devices. */
    mtiart_event e;
    CHECK_OK(mtiart_event_create(0, &e));
    atomic_long counter = 0;
    launch_count(s1, &counter);
    CHECK_OK(mtiart_event_record(e, s1));
    CHECK_OK(mtiart_stream_wait_event(s0, e));
    launch_count(s0, &counter);
    CHECK_OK(mtiart_stream_synchronize(s0));
    CHECK(atomic_load(&counter) == 2);
    /* Stats are per device. */
    mtiart_memory_stats st0, st1;
    CHECK_OK(mtiart_memory_get_stats(0, &st0));
    CHECK_OK(mtiart_memory_get_stats(1, &st1));
    CHECK(st0.allocated_bytes == 512 && st1.allocated_bytes == 512);
    CHECK(st1.capacity == 32ull << 20);
    CHECK_OK(mtiart_free(p0));
    CHECK_OK(mtiart_free(p1));
    CHECK_OK(mtiart_device_synchronize(1));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
    TEST_MAIN_END();
}

/* A bad configuration: initialisation fails with a message naming the variable, and
 * every call reports it instead of crashing. */
static int child_bad_config(const char *name, const char *value) {
    setenv(name, value, 1);
    CHECK_STATUS(mtiart_init(), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), name) != NULL);
    CHECK(mtiart_is_initialized() == 0);
    mtiart_stream s;
    int n;
    void *p;
    CHECK_STATUS(mtiart_device_count(&n), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_create(0, 0, &s), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_malloc(0, 16, &p), MTIART_ERROR_INVALID_VALUE);
    mtiart_event e;
    CHECK_STATUS(mtiart_event_create(0, &e), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_free((void *)0x1000), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_stream_synchronize(NULL), MTIART_ERROR_INVALID_HANDLE);
    TEST_MAIN_END();
}

#include <spawn.h>
#include <sys/wait.h>
extern char **environ;

static void run_child(const char *argv0, const char *mode) {
    pid_t pid;
    char *child_argv[] = {(char *)argv0, (char *)mode, NULL};
    const char *self = strchr(argv0, '/') ? argv0 : "/proc/self/exe";
    int rc = posix_spawn(&pid, self, NULL, NULL, child_argv, environ);
    CHECK(rc == 0);
    if (rc != 0) return;
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child mode %s failed (status 0x%x)\n", mode, status);
        test_failures++;
    }
}

/* Buffers are checked against the size asked for, not the allocator's rounded block. */
static void test_buffer_extent_is_requested_size(void) {
    mtiart_stream s = g_stream;
    void *p;
    CHECK_OK(mtiart_malloc_async(s, 100, &p)); /* the block itself is 512 bytes */
    mtiart_arg exact = {MTIART_ARG_BUFFER_INOUT, 0, p, 100};
    mtiart_arg past = {MTIART_ARG_BUFFER_INOUT, 0, p, 101};
    mtiart_arg padding = {MTIART_ARG_BUFFER_IN, 0, (char *)p + 200, 8};
    CHECK_OK(mtiart_launch_kernel(s, k_noop, 1, &exact, 1));
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &past, 1), MTIART_ERROR_INVALID_POINTER);
    CHECK_FAIL(mtiart_launch_kernel(s, k_noop, 1, &padding, 1), MTIART_ERROR_INVALID_POINTER);
    char host[128] = {0};
    CHECK_FAIL(mtiart_memcpy_async(s, p, host, 101, MTIART_MEMCPY_HOST_TO_DEVICE),
               MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_memcpy(s, p, host, 100, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_free(p));
}

int main(int argc, char **argv) {
    if (argc > 1) {
        if (strcmp(argv[1], "--two-devices") == 0) return child_two_devices();
        if (strcmp(argv[1], "--bad-memory") == 0)
            return child_bad_config("MTIART_DEVICE_MEMORY", "lots");
        if (strcmp(argv[1], "--bad-workers") == 0)
            return child_bad_config("MTIART_NUM_WORKERS", "0");
        if (strcmp(argv[1], "--bad-devices") == 0)
            return child_bad_config("MTIART_NUM_DEVICES", "65");
        return 2;
    }
    /* Configurations in child processes, before this process initialises. */
    run_child(argv[0], "--two-devices");
    run_child(argv[0], "--bad-memory");
    run_child(argv[0], "--bad-workers");
    run_child(argv[0], "--bad-devices");
    /* Before initialisation: status names work without the runtime. */
    CHECK(strcmp(mtiart_status_name(MTIART_ERROR_OUT_OF_MEMORY), "MTIART_ERROR_OUT_OF_MEMORY") ==
          0);
    CHECK_OK(mtiart_init());
    CHECK(mtiart_is_initialized() == 1);
    CHECK_OK(mtiart_stream_create(0, 0, &g_stream));
    test_status_names();
    test_invalid_handles();
    test_invalid_devices();
    test_null_out_params();
    test_bad_launches();
    test_bad_copies();
    test_buffer_extent_is_requested_size();
    test_thread_local_message();
    test_concurrent_misuse();
    CHECK_OK(mtiart_stream_destroy(g_stream));
    TEST_MAIN_END();
}
