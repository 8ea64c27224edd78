/* Error messages: every failing call's message starts with the name of the public function
 * the program called, once, followed by ": " -- also when that function failed inside
 * another public function it uses (the kernel library launches through
 * mtiart_launch_kernel), when a sticky kernel error is reported by a synchronize, when a
 * capture is invalidated, inside a host function, and inside an out-of-memory observer. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rt_helpers.h"

static int g_checked;

/* The message of the call just made starts with "<name>: ", the name occurs only there,
 * and (when `contains` is not NULL) the detail mentions `contains`. */
static void expect_message(int line, mtiart_status st, const char *name, const char *contains) {
    g_checked++;
    const char *msg = mtiart_last_error_message();
    size_t len = strlen(name);
    if (st >= 0) {
        fprintf(stderr, "line %d: %s succeeded (%s); expected a failure\n", line, name,
                mtiart_status_name(st));
        test_failures++;
        return;
    }
    if (mtiart_last_error() != st) {
        fprintf(stderr, "line %d: mtiart_last_error() is %s, the call returned %s\n", line,
                mtiart_status_name(mtiart_last_error()), mtiart_status_name(st));
        test_failures++;
    }
    if (strncmp(msg, name, len) != 0 || msg[len] != ':' || msg[len + 1] != ' ' ||
        msg[len + 2] == '\0') {
        fprintf(stderr, "line %d: message does not start with \"%s: \": %s\n", line, name, msg);
        test_failures++;
        return;
    }
    /* Said once: no nested call put its own name in front of the detail. */
    if (strncmp(msg + len + 2, "mtiart_", 7) == 0) {
        fprintf(stderr, "line %d: doubled prefix: %s\n", line, msg);
        test_failures++;
    }
    if (contains && !strstr(msg + len + 2, contains)) {
        fprintf(stderr, "line %d: message lacks \"%s\": %s\n", line, contains, msg);
        test_failures++;
    }
}

/* Make the call (any expression) and check its message names `name`. */
#define EXPECT_NAMED(call, name, contains)                                                         \
    do {                                                                                           \
        mtiart_clear_last_error();                                                                 \
        mtiart_status st_ = (call);                                                                \
        expect_message(__LINE__, st_, (name), (contains));                                         \
    } while (0)

/* The call's own name: the common case. */
#define EXPECT_PREFIX(fn, ...) EXPECT_NAMED(fn(__VA_ARGS__), #fn, NULL)

static int32_t k_noop(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    return 0;
}

static int32_t k_refuses(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)num_blocks;
    if (block == 0) mtiart_kernel_set_error_message("refused on purpose");
    return block == 0 ? 7 : 0;
}

static void test_runtime_calls(mtiart_stream s, void *dev) {
    char host[64] = {0};
    int device;
    uint64_t id;
    mtiart_stream bad_stream = (mtiart_stream)(uintptr_t)0x12345;
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));

    /* devices and streams */
    EXPECT_PREFIX(mtiart_device_count, NULL);
    mtiart_device_properties props;
    EXPECT_PREFIX(mtiart_device_get_properties, 99, &props);
    EXPECT_PREFIX(mtiart_device_synchronize, -1);
    EXPECT_PREFIX(mtiart_device_synchronize_timeout, 77, 0);
    EXPECT_PREFIX(mtiart_stream_get_default, 99, &def);
    EXPECT_PREFIX(mtiart_stream_create, 0, 0, NULL);
    EXPECT_PREFIX(mtiart_stream_destroy, def);
    EXPECT_PREFIX(mtiart_stream_destroy, bad_stream);
    EXPECT_PREFIX(mtiart_stream_get_device, s, NULL);
    EXPECT_PREFIX(mtiart_stream_get_priority, bad_stream, &device);
    EXPECT_PREFIX(mtiart_stream_get_id, NULL, &id);
    EXPECT_PREFIX(mtiart_stream_query, NULL);
    EXPECT_PREFIX(mtiart_stream_synchronize, bad_stream);
    EXPECT_PREFIX(mtiart_stream_synchronize_timeout, bad_stream, 1000);
    EXPECT_PREFIX(mtiart_stream_wait_event, s, NULL);
    mtiart_stream made;
    uint32_t flags;
    EXPECT_NAMED(mtiart_stream_create_with_flags(0, 0, 8, &made), "mtiart_stream_create_with_flags",
                 "flags");
    EXPECT_PREFIX(mtiart_stream_get_flags, bad_stream, &flags);
    EXPECT_PREFIX(mtiart_stream_begin_conditional, s, MTIART_CONDITIONAL_IF, dev, 4);
    EXPECT_PREFIX(mtiart_stream_end_conditional, s);

    /* launches, copies and fills */
    mtiart_arg stray = {MTIART_ARG_BUFFER_IN, 0, host, sizeof host};
    EXPECT_PREFIX(mtiart_launch_kernel, s, NULL, 1, NULL, 0);
    EXPECT_PREFIX(mtiart_launch_kernel, s, k_noop, 0, NULL, 0);
    EXPECT_NAMED(mtiart_launch_kernel(s, k_noop, 1, &stray, 1), "mtiart_launch_kernel",
                 "kernel argument 0: ");
    EXPECT_PREFIX(mtiart_launch_host_func, s, NULL, NULL);
    EXPECT_PREFIX(mtiart_kernel_set_name, NULL, "x");
    mtiart_kernel_fn loaded;
    EXPECT_PREFIX(mtiart_kernel_load, "/nonexistent/libnothing.so", "k", &loaded);
    EXPECT_PREFIX(mtiart_kernel_load, NULL, "k", &loaded);
    EXPECT_NAMED(mtiart_memcpy_async(s, dev, host, 8, (mtiart_memcpy_kind)77),
                 "mtiart_memcpy_async", "kind");
    EXPECT_NAMED(mtiart_memcpy_async(s, NULL, host, 8, MTIART_MEMCPY_HOST_TO_DEVICE),
                 "mtiart_memcpy_async", "destination");
    EXPECT_NAMED(mtiart_memcpy_async(s, host, host + 8, 8, MTIART_MEMCPY_DEVICE_TO_HOST),
                 "mtiart_memcpy_async", "source: ");
    EXPECT_NAMED(mtiart_memcpy(s, host, host + 8, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE),
                 "mtiart_memcpy", "destination: ");
    EXPECT_NAMED(mtiart_memcpy_timeout(s, host, host + 8, 8, MTIART_MEMCPY_DEVICE_TO_DEVICE, 0),
                 "mtiart_memcpy_timeout", "destination: ");
    EXPECT_PREFIX(mtiart_memcpy_timeout, bad_stream, dev, host, 8, MTIART_MEMCPY_HOST_TO_DEVICE, 0);
    EXPECT_PREFIX(mtiart_fill_async, s, dev, host, 3, 4);
    /* A refused memset speaks of itself, not of memcpy. */
    EXPECT_NAMED(mtiart_memset_async(s, host, 0, 8), "mtiart_memset_async", "destination: ");
    CHECK(strstr(mtiart_last_error_message(), "memcpy") == NULL);

    /* events */
    mtiart_event e;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &e));
    float ms;
    EXPECT_PREFIX(mtiart_event_create, 0x100, &e);
    EXPECT_PREFIX(mtiart_event_destroy, NULL);
    EXPECT_PREFIX(mtiart_event_record, e, bad_stream);
    EXPECT_NAMED(mtiart_event_record_with_flags(e, s, 6), "mtiart_event_record_with_flags",
                 "flags");
    EXPECT_PREFIX(mtiart_event_query, NULL);
    EXPECT_PREFIX(mtiart_event_synchronize, NULL);
    EXPECT_PREFIX(mtiart_event_synchronize_timeout, NULL, 5);
    EXPECT_PREFIX(mtiart_event_elapsed_time, e, e, &ms); /* never recorded */
    EXPECT_PREFIX(mtiart_event_elapsed_time, e, e, NULL);
    CHECK_OK(mtiart_event_destroy(e));

    /* memory */
    void *p;
    size_t n;
    EXPECT_PREFIX(mtiart_malloc, 0, 16, NULL);
    EXPECT_PREFIX(mtiart_malloc, 0, (size_t)1 << 62, &p);
    EXPECT_PREFIX(mtiart_malloc_async, bad_stream, 16, &p);
    EXPECT_PREFIX(mtiart_free, host);
    EXPECT_PREFIX(mtiart_free, (char *)dev + 8);
    EXPECT_PREFIX(mtiart_record_stream, host, s);
    EXPECT_PREFIX(mtiart_pointer_get_device, host, &device);
    EXPECT_PREFIX(mtiart_empty_cache, 5);
    EXPECT_PREFIX(mtiart_memory_get_stats, 0, NULL);
    EXPECT_PREFIX(mtiart_memory_reset_peak_stats, 9);
    EXPECT_PREFIX(mtiart_memory_reset_accumulated_stats, 9);
    EXPECT_PREFIX(mtiart_memory_snapshot, 0, NULL, 4, &n);
    EXPECT_PREFIX(mtiart_attach_oom_observer, NULL, NULL);
    EXPECT_PREFIX(mtiart_detach_oom_observer, NULL, NULL);
    EXPECT_PREFIX(mtiart_pool_handle_create, NULL);
    EXPECT_PREFIX(mtiart_pool_get_info, 0, ((mtiart_pool_id){0, 0}), NULL);

    /* capture, graphs, executables */
    mtiart_graph g;
    mtiart_graph_exec x;
    mtiart_capture_status cs;
    size_t node, count;
    mtiart_node_info ninfo;
    mtiart_buffer_use use;
    EXPECT_PREFIX(mtiart_stream_begin_capture, s, (mtiart_capture_mode)9, ((mtiart_pool_id){0, 0}));
    EXPECT_PREFIX(mtiart_stream_end_capture, s, &g);
    EXPECT_PREFIX(mtiart_stream_get_capture_info, bad_stream, &cs, NULL, NULL);
    EXPECT_PREFIX(mtiart_stream_get_capture_invalidation, s, NULL, 8, NULL);
    EXPECT_PREFIX(mtiart_graph_create, 3, &g);
    CHECK_OK(mtiart_graph_create(0, &g));
    EXPECT_PREFIX(mtiart_graph_add_kernel_node, g, NULL, 1, k_noop, 1, NULL, 0, &node);
    EXPECT_PREFIX(mtiart_graph_add_empty_node, g, NULL, 0, NULL);
    EXPECT_PREFIX(mtiart_graph_get_device, g, NULL);
    EXPECT_PREFIX(mtiart_graph_get_node_count, NULL, &count);
    EXPECT_PREFIX(mtiart_graph_get_edge_count, g, NULL);
    EXPECT_PREFIX(mtiart_graph_get_pool, g, NULL);
    EXPECT_PREFIX(mtiart_graph_get_node_info, g, 5, &ninfo);
    EXPECT_PREFIX(mtiart_graph_get_node_buffer, g, 0, 0, &use);
    EXPECT_PREFIX(mtiart_graph_get_node_dependency, g, 0, 0, &node);
    EXPECT_PREFIX(mtiart_graph_to_dot, g, NULL, 16, &count);
    EXPECT_NAMED(mtiart_graph_add_memcpy_node(g, NULL, 0, NULL, host, 8,
                                              MTIART_MEMCPY_HOST_TO_DEVICE, &node),
                 "mtiart_graph_add_memcpy_node", "destination");
    EXPECT_NAMED(mtiart_graph_add_memcpy_node(g, NULL, 0, host, host, 8,
                                              MTIART_MEMCPY_HOST_TO_DEVICE, &node),
                 "mtiart_graph_add_memcpy_node", "destination: ");
    EXPECT_NAMED(mtiart_graph_add_fill_node(g, NULL, 0, dev, host, 3, 1, &node),
                 "mtiart_graph_add_fill_node", "pattern");
    EXPECT_PREFIX(mtiart_graph_add_host_node, g, NULL, 0, NULL, NULL, &node);
    EXPECT_PREFIX(mtiart_graph_add_event_record_node, g, NULL, 0, NULL, &node);
    EXPECT_PREFIX(mtiart_graph_add_event_wait_node, NULL, NULL, 0, NULL, &node);
    EXPECT_PREFIX(mtiart_graph_add_child_graph_node, g, NULL, 0, NULL, &node);
    EXPECT_NAMED(
        mtiart_graph_add_conditional_node(g, NULL, 0, MTIART_CONDITIONAL_WHILE, dev, 3, g, &node),
        "mtiart_graph_add_conditional_node", "condition");
    EXPECT_NAMED(mtiart_graph_add_conditional_node(g, NULL, 0, MTIART_CONDITIONAL_WHILE, &flags, 4,
                                                   g, &node),
                 "mtiart_graph_add_conditional_node", "condition: ");
    EXPECT_PREFIX(mtiart_graph_get_node_body, g, 0, NULL);
    EXPECT_PREFIX(mtiart_graph_kernel_node_set_args, g, 9, NULL, 0);
    EXPECT_PREFIX(mtiart_graph_instantiate, g, NULL);
    EXPECT_PREFIX(mtiart_graph_instantiate_with_flags, g, 1u << 30, &x);
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_INSTANTIATE_DEFAULT, &x));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    EXPECT_PREFIX(mtiart_graph_check_races, g, NULL, 1, &count);
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    EXPECT_PREFIX(mtiart_graph_launch, x, bad_stream);
    EXPECT_PREFIX(mtiart_graph_exec_get_node_count, x, NULL);
    EXPECT_PREFIX(mtiart_set_pool_order_check, (mtiart_pool_order_mode)9, NULL, NULL);
    EXPECT_PREFIX(mtiart_graph_exec_check_races, x, NULL, 0, NULL);
    EXPECT_PREFIX(mtiart_graph_exec_set_schedule, x, (mtiart_schedule)9, 0);
    EXPECT_PREFIX(mtiart_graph_exec_update, x, NULL, NULL);
    EXPECT_PREFIX(mtiart_graph_exec_kernel_node_set_args, x, 5, NULL, 0);
    EXPECT_PREFIX(mtiart_graph_save, NULL, "g.mtg", NULL, 0);
    EXPECT_PREFIX(mtiart_graph_save, g, NULL, NULL, 0);
    EXPECT_PREFIX(mtiart_graph_exec_save, x, "", NULL, 0);
    EXPECT_NAMED(mtiart_graph_load("/nonexistent/g.mtg", 0, NULL, &g), "mtiart_graph_load",
                 "cannot open");
    EXPECT_NAMED(mtiart_graph_load_memory("MTIAGRF", 8, 0, NULL, &g), "mtiart_graph_load_memory",
                 "not a valid saved graph");
    EXPECT_NAMED(mtiart_graph_exec_bind(x, "x", dev, 8), "mtiart_graph_exec_bind",
                 "no binding 'x'");
    EXPECT_PREFIX(mtiart_graph_exec_get_binding_size, x, "x", NULL);
    mtiart_graph other;
    CHECK_OK(mtiart_graph_create(0, &other));
    CHECK_OK(mtiart_graph_add_empty_node(other, NULL, 0, &node));
    EXPECT_NAMED(mtiart_graph_exec_update(x, other, NULL), "mtiart_graph_exec_update",
                 "not an update");
    CHECK_OK(mtiart_graph_destroy(other));
    EXPECT_PREFIX(mtiart_graph_exec_destroy, NULL);
    EXPECT_PREFIX(mtiart_graph_destroy, NULL);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
}

static mtiart_tensor_desc desc(void *data, mtiart_dtype dtype, int ndim, int64_t d0, int64_t d1) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.ndim = ndim;
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

/* The kernel library's functions launch through mtiart_launch_kernel, ask for the
 * stream's device and allocate scratch memory through the public API: the messages still
 * name the function the program called. */
static void test_kernel_library(mtiart_stream s, void *dev) {
    mtiart_stream bad_stream = (mtiart_stream)(uintptr_t)0x12345;
    mtiart_tensor_desc f4 = desc(dev, MTIART_DTYPE_FLOAT32, 1, 4, 0);
    mtiart_tensor_desc f6 = desc(dev, MTIART_DTYPE_FLOAT32, 1, 6, 0);
    mtiart_tensor_desc i4 = desc(dev, MTIART_DTYPE_INT32, 1, 4, 0);
    mtiart_tensor_desc m22 = desc(dev, MTIART_DTYPE_FLOAT32, 2, 2, 2);
    mtiart_tensor_desc m23 = desc(dev, MTIART_DTYPE_FLOAT32, 2, 2, 3);
    mtiart_tensor_desc b4 = desc(dev, MTIART_DTYPE_BOOL, 1, 4, 0);
    mtiart_tensor_desc stray = desc((void *)(uintptr_t)0x1000, MTIART_DTYPE_FLOAT32, 1, 4, 0);
    EXPECT_PREFIX(mtiart_op_binary, s, (mtiart_binary_op)99, &f4, &f4, &f4);
    EXPECT_PREFIX(mtiart_op_binary, s, MTIART_BINARY_ADD, &f4, &f4, &i4);
    EXPECT_PREFIX(mtiart_op_binary, s, MTIART_BINARY_ADD, &f4, &f6, &f4);
    EXPECT_NAMED(mtiart_op_binary(bad_stream, MTIART_BINARY_ADD, &f4, &f4, &f4), "mtiart_op_binary",
                 "invalid stream handle");
    EXPECT_NAMED(mtiart_op_binary(s, MTIART_BINARY_ADD, &stray, &f4, &f4), "mtiart_op_binary",
                 "kernel argument");
    EXPECT_PREFIX(mtiart_op_binary_scalar, s, MTIART_BINARY_ADD, &f6, &f4, 1.0, 1, 0);
    EXPECT_PREFIX(mtiart_op_unary, s, MTIART_UNARY_EXP, &i4, &i4);
    EXPECT_NAMED(mtiart_op_unary(s, MTIART_UNARY_NEG, &f6, &f4), "mtiart_op_unary", "differs");
    EXPECT_PREFIX(mtiart_op_reduce, s, MTIART_REDUCE_SUM, &f4, &f4, 5, 0);
    EXPECT_PREFIX(mtiart_op_matmul, s, &m22, &m22, &m23);
    EXPECT_PREFIX(mtiart_op_softmax, s, &i4, &i4, 0);
    EXPECT_PREFIX(mtiart_op_where, s, &f4, &f4, &f4, &f4);
    EXPECT_NAMED(mtiart_op_cast(s, &b4, &f6), "mtiart_op_cast", "differs");
    EXPECT_PREFIX(mtiart_op_fill, s, NULL, 1.0, 1);
    EXPECT_PREFIX(mtiart_op_arange, s, &f4, 1.0 / 0.0, 1.0);
}

/* Sticky errors are reported by whichever call synchronizes, under its own name, and
 * then say which kernel failed. */
static void test_sticky_errors(mtiart_stream s, void *dev) {
    CHECK_OK(mtiart_kernel_set_name(k_refuses, "k_refuses"));
    char host[8];
    CHECK_OK(mtiart_launch_kernel(s, k_refuses, 1, NULL, 0));
    EXPECT_NAMED(mtiart_stream_synchronize(s), "mtiart_stream_synchronize",
                 "kernel k_refuses failed (code 7): refused on purpose");
    CHECK_OK(mtiart_launch_kernel(s, k_refuses, 3, NULL, 0)); /* over several blocks */
    EXPECT_NAMED(mtiart_device_synchronize(0), "mtiart_device_synchronize", "k_refuses");
    CHECK_OK(mtiart_launch_kernel(s, k_refuses, 1, NULL, 0));
    EXPECT_NAMED(mtiart_memcpy(s, host, dev, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST),
                 "mtiart_memcpy", "k_refuses");
    CHECK_OK(mtiart_launch_kernel(s, k_refuses, 1, NULL, 0));
    mtiart_status st;
    double deadline = now_ms() + 10000;
    while ((st = mtiart_stream_query(s)) == MTIART_NOT_READY && now_ms() < deadline) sleep_ms(1);
    expect_message(__LINE__, st, "mtiart_stream_query", "k_refuses");
    /* ...and inside a replay, the node that failed. */
    mtiart_graph g;
    mtiart_graph_exec x;
    size_t node;
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_refuses, 1, NULL, 0, &node));
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_launch(x, s));
    EXPECT_NAMED(mtiart_stream_synchronize(s), "mtiart_stream_synchronize",
                 "graph node 0: kernel k_refuses failed (code 7)");
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
}

/* A capture invalidated by an unsafe call: the call's message names it, and so does the
 * reason every later call on the capture reports. */
static void test_capture_messages(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    EXPECT_NAMED(mtiart_stream_synchronize(s), "mtiart_stream_synchronize", "capturing");
    EXPECT_NAMED(mtiart_launch_kernel(s, k_noop, 1, NULL, 0), "mtiart_launch_kernel",
                 "capture invalidated by mtiart_stream_synchronize on thread");
    mtiart_graph g = NULL;
    EXPECT_NAMED(mtiart_stream_end_capture(s, &g), "mtiart_stream_end_capture",
                 "capture invalidated by mtiart_stream_synchronize on thread");
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Calls from a host function (on a device worker) name themselves too. */
typedef struct from_worker {
    mtiart_stream s;
    mtiart_status st;
    char message[512];
} from_worker;

static int32_t h_synchronize(void *user) {
    from_worker *w = user;
    w->st = mtiart_stream_synchronize(w->s);
    snprintf(w->message, sizeof w->message, "%s", mtiart_last_error_message());
    return 0;
}

static void test_from_worker(mtiart_stream s) {
    from_worker w = {s, MTIART_SUCCESS, ""};
    CHECK_OK(mtiart_launch_host_func(s, h_synchronize, &w));
    CHECK_OK(sync_with_timeout(s, 10000));
    CHECK(w.st == MTIART_ERROR_NOT_PERMITTED);
    CHECK(strncmp(w.message, "mtiart_stream_synchronize: ", 27) == 0);
    CHECK(strstr(w.message, "host function") != NULL);
}

/* An out-of-memory observer runs inside mtiart_malloc, but a call it makes is its own. */
typedef struct observed {
    int calls;
    mtiart_status st;
    char message[512];
} observed;

static void observer(int device, uint64_t requested, uint64_t allocated, uint64_t reserved,
                     uint64_t capacity, void *user) {
    (void)device, (void)requested, (void)allocated, (void)reserved, (void)capacity;
    observed *o = user;
    o->calls++;
    o->st = mtiart_memory_get_stats(0, NULL);
    snprintf(o->message, sizeof o->message, "%s", mtiart_last_error_message());
}

static void test_oom_observer(void) {
    observed o = {0, MTIART_SUCCESS, ""};
    void *p;
    CHECK_OK(mtiart_attach_oom_observer(observer, &o));
    EXPECT_NAMED(mtiart_malloc(0, (size_t)1 << 62, &p), "mtiart_malloc", "out of memory");
    CHECK_OK(mtiart_detach_oom_observer(observer, &o));
    CHECK(o.calls == 1);
    CHECK(o.st == MTIART_ERROR_INVALID_VALUE);
    CHECK(strncmp(o.message, "mtiart_memory_get_stats: ", 25) == 0);
}

int main(void) {
    mtiart_stream s;
    void *dev;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_malloc_async(s, 4096, &dev));
    CHECK_OK(mtiart_stream_synchronize(s));
    test_runtime_calls(s, dev);
    test_kernel_library(s, dev);
    test_sticky_errors(s, dev);
    test_capture_messages();
    test_from_worker(s);
    test_oom_observer();
    CHECK(g_checked > 80);
    CHECK_OK(mtiart_free(dev));
    CHECK_OK(mtiart_stream_destroy(s));
    TEST_MAIN_END();
}
