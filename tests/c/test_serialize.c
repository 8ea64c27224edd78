/*
 * Saved graphs: every node kind a file holds survives a save and a load (and replays the
 * same), bindings and constants, the nodes a save refuses (with no file left behind), the
 * version and byte-order checks, the library allow-list, and hostile files: every prefix
 * and thousands of corrupted copies of a real file are refused cleanly, and so are built-in
 * kernels whose saved parameters reach past their buffers.
 *
 *     test_serialize LIB_A LIB_B    (two copies of the serialize_kernels library)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtiart.h"
#include "test_util.h"

enum { N = 256 };

static const char *lib_a, *lib_b;
static mtiart_kernel_fn scale_fn, countdown_fn;
static char dir[256];

static void path_in_dir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* The arguments of sertest_scale: `count` floats at `data` times `factor`. */
static void scale_args(mtiart_arg args[3], float *data, const float *factor,
                       const uint64_t *count) {
    args[0] = (mtiart_arg){MTIART_ARG_BUFFER_INOUT, 0, data, *count * sizeof(float)};
    args[1] = (mtiart_arg){MTIART_ARG_VALUE, sizeof *factor, factor, 0};
    args[2] = (mtiart_arg){MTIART_ARG_VALUE, sizeof *count, count, 0};
}

static mtiart_status launch_scale(mtiart_stream s, float *data, float factor, uint64_t count) {
    mtiart_arg args[3];
    scale_args(args, data, &factor, &count);
    return mtiart_launch_kernel(s, scale_fn, 1, args, 3);
}

static mtiart_tensor_desc vec(void *data) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = MTIART_DTYPE_FLOAT32;
    t.ndim = 1;
    t.shape[0] = N;
    return t;
}

/* How many entries of the test directory start with `prefix`. */
static int files_named(const char *prefix) {
    DIR *d = opendir(dir);
    int count = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        count += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d) closedir(d);
    return count;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(*size);
    if (data && fread(data, 1, *size, f) != *size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
}

/* A captured graph with a node of every saveable kind: a built-in kernel, copies (device
 * to device, device to host), fills, user kernels, a WHILE conditional and a child graph;
 * its scratch memory in the capture's pool. in -> out = 12 * (in + in), host_out = out. */
static mtiart_graph capture_every_kind(mtiart_stream s, float *in, float *out, float *host_out) {
    mtiart_graph child_graph;
    size_t node;
    CHECK_OK(mtiart_graph_create(0, &child_graph));
    float half = 0.5f;
    uint64_t count = N;
    mtiart_arg args[3];
    scale_args(args, out, &half, &count);
    CHECK_OK(mtiart_graph_add_kernel_node(child_graph, NULL, 0, scale_fn, 1, args, 3, &node));
    mtiart_graph_exec child;
    CHECK_OK(mtiart_graph_instantiate(child_graph, &child));

    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    float *tmp;
    int32_t *counter;
    CHECK_OK(mtiart_malloc_async(s, N * sizeof(float), (void **)&tmp));
    CHECK_OK(mtiart_malloc_async(s, sizeof *counter, (void **)&counter));
    mtiart_tensor_desc t = vec(tmp), x = vec(in);
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_ADD, &t, &x, &x));
    CHECK_OK(mtiart_memcpy_async(s, out, tmp, N * sizeof(float), MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(launch_scale(s, out, 3.0f, N));
    int32_t three = 3;
    CHECK_OK(mtiart_fill_async(s, counter, &three, sizeof three, 1));
    CHECK_OK(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_WHILE, counter, 4));
    mtiart_arg down = {MTIART_ARG_BUFFER_INOUT, 0, counter, sizeof *counter};
    CHECK_OK(mtiart_launch_kernel(s, countdown_fn, 1, &down, 1));
    CHECK_OK(launch_scale(s, out, 2.0f, N));
    CHECK_OK(mtiart_stream_end_conditional(s));
    CHECK_OK(mtiart_graph_launch(child, s)); /* a child graph node */
    CHECK_OK(mtiart_memset_async(s, tmp, 0, N * sizeof(float)));
    CHECK_OK(
        mtiart_memcpy_async(s, host_out, out, N * sizeof(float), MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK_OK(mtiart_free(tmp));
    CHECK_OK(mtiart_free(counter));
    mtiart_graph graph;
    CHECK_OK(mtiart_stream_end_capture(s, &graph));
    CHECK_OK(mtiart_graph_exec_destroy(child));
    CHECK_OK(mtiart_graph_destroy(child_graph));
    return graph;
}

static void fill_input(float *in, float base) {
    for (int i = 0; i < N; i++) in[i] = base + (float)i * 0.25f;
}

/* The kinds and names of two graphs' nodes, bodies included, are the same. */
static void check_same_nodes(mtiart_graph a, mtiart_graph b) {
    size_t na, nb;
    CHECK_OK(mtiart_graph_get_node_count(a, &na));
    CHECK_OK(mtiart_graph_get_node_count(b, &nb));
    CHECK(na == nb);
    for (size_t i = 0; i < na && i < nb; i++) {
        mtiart_node_info ia, ib;
        CHECK_OK(mtiart_graph_get_node_info(a, i, &ia));
        CHECK_OK(mtiart_graph_get_node_info(b, i, &ib));
        CHECK(ia.kind == ib.kind && ia.num_blocks == ib.num_blocks &&
              ia.num_buffers == ib.num_buffers && ia.num_dependencies == ib.num_dependencies);
        if (strcmp(ia.name, ib.name))
            fprintf(stderr, "node %zu: '%s' vs '%s'\n", i, ia.name, ib.name);
        CHECK(strcmp(ia.name, ib.name) == 0);
        for (uint32_t k = 0; k < ia.num_dependencies && k < ib.num_dependencies; k++) {
            size_t da, db;
            CHECK_OK(mtiart_graph_get_node_dependency(a, i, k, &da));
            CHECK_OK(mtiart_graph_get_node_dependency(b, i, k, &db));
            CHECK(da == db);
        }
        if (ia.kind == MTIART_NODE_CHILD_GRAPH || ia.kind == MTIART_NODE_CONDITIONAL) {
            mtiart_graph ba, bb;
            CHECK_OK(mtiart_graph_get_node_body(a, i, &ba));
            CHECK_OK(mtiart_graph_get_node_body(b, i, &bb));
            check_same_nodes(ba, bb);
            CHECK_OK(mtiart_graph_destroy(ba));
            CHECK_OK(mtiart_graph_destroy(bb));
        }
    }
}

static void test_round_trip(mtiart_stream s) {
    float *in, *out, host_out[N];
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out));
    fill_input(in, 1.0f);
    mtiart_graph graph = capture_every_kind(s, in, out, host_out);
    size_t nodes;
    CHECK_OK(mtiart_graph_get_node_count(graph, &nodes));

    CHECK(nodes == 8);

    char path[300];
    path_in_dir(path, sizeof path, "every_kind.mtg");
    mtiart_graph_binding bindings[3] = {
        {"in", in, N * sizeof(float), MTIART_BINDING_INPUT, 0},
        {"out", out, N * sizeof(float), MTIART_BINDING_OUTPUT, 0},
        {"host_out", host_out, sizeof host_out, MTIART_BINDING_OUTPUT, 0},
    };
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 3));
    CHECK(files_named("every_kind.mtg.tmp") == 0);

    mtiart_graph loaded;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    check_same_nodes(graph, loaded);
    mtiart_pool_id pool;
    CHECK_OK(mtiart_graph_get_pool(loaded, &pool));
    CHECK(pool.first != 0 || pool.second != 0);

    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(loaded, &x));
    CHECK_OK(mtiart_graph_destroy(loaded)); /* the executable keeps what it needs */
    CHECK_STATUS(mtiart_graph_launch(x, s), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "'in'") != NULL);
    size_t bytes = 0;
    CHECK_OK(mtiart_graph_exec_get_binding_size(x, "out", &bytes));
    CHECK(bytes == N * sizeof(float));

    /* Fresh buffers, as another program would have. */
    float *in2, *out2, host2[N];
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in2));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out2));
    CHECK_OK(mtiart_graph_exec_bind(x, "in", in2, N * sizeof(float)));
    CHECK_OK(mtiart_graph_exec_bind(x, "out", out2, N * sizeof(float)));
    CHECK_STATUS(mtiart_graph_launch(x, s), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "'host_out'") != NULL);
    CHECK_OK(mtiart_graph_exec_bind(x, "host_out", host2, sizeof host2));
    for (int round = 0; round < 3; round++) {
        fill_input(in2, (float)round);
        memset(host2, 0, sizeof host2);
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        int bad = 0;
        for (int i = 0; i < N; i++) bad += host2[i] != 24.0f * ((float)round + (float)i * 0.25f);
        CHECK(bad == 0);
        CHECK(memcmp(host2, out2, sizeof host2) == 0);
    }
    /* The original graph replays the same (its own buffers). */
    mtiart_graph_exec ox;
    CHECK_OK(mtiart_graph_instantiate(graph, &ox));
    CHECK_OK(mtiart_graph_launch(ox, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(host_out[5] == 24.0f * (1.0f + 5 * 0.25f));
    CHECK_OK(mtiart_graph_exec_destroy(ox));

    /* Rebinding takes effect at the next launch. */
    float *out3;
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out3));
    CHECK_OK(mtiart_graph_exec_bind(x, "out", out3, N * sizeof(float)));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(out3[7] == 24.0f * (2.0f + 7 * 0.25f));

    /* Misuse of bindings: each refused, the executable still usable. */
    CHECK_STATUS(mtiart_graph_exec_bind(x, "nope", out2, N * sizeof(float)),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "'in', 'out', 'host_out'") != NULL);
    CHECK_STATUS(mtiart_graph_exec_bind(x, "out", out2, 16), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_bind(x, "out", host2, sizeof host2),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_graph_exec_bind(x, "host_out", out2, N * sizeof(float)),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_bind(x, "out", NULL, N * sizeof(float)),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_bind(x, NULL, out2, N * sizeof(float)),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));

    /* An executable of a graph not loaded from a file has no bindings. */
    CHECK_OK(mtiart_graph_instantiate(graph, &ox));
    CHECK_STATUS(mtiart_graph_exec_bind(ox, "in", in, N * sizeof(float)),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_exec_destroy(ox));

    /* Saving an executable saves what it runs; a loaded graph saved again loads again. */
    CHECK_OK(mtiart_graph_instantiate(graph, &ox));
    CHECK_OK(mtiart_graph_exec_save(ox, path, bindings, 3));
    CHECK_OK(mtiart_graph_exec_destroy(ox));
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    check_same_nodes(graph, loaded);
    CHECK_OK(mtiart_graph_destroy(loaded));

    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(in));
    CHECK_OK(mtiart_free(out));
    CHECK_OK(mtiart_free(in2));
    CHECK_OK(mtiart_free(out2));
    CHECK_OK(mtiart_free(out3));
    unlink(path);
}

/* ---- built-in kernels: every kind round-trips, enlarged parameters are refused -------- */

enum { SIDE = 64, SQ = SIDE * SIDE, BIG = 1 << 20 };

/* Tensors laid out in one device buffer, so that a single binding covers every operand. */
typedef struct work_layout {
    size_t used;
    uint8_t *base;
} work_layout;

static mtiart_tensor_desc place(work_layout *w, mtiart_dtype dtype, int ndim,
                                const int64_t *shape) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)(t.shape[d] = shape[d]);
    t.data = w->base + w->used;
    w->used += (n * (size_t)mtiart_dtype_size(dtype) + 63) / 64 * 64;
    return t;
}

enum { WORK_BYTES = (3 * BIG + 16 * SQ) * 8 };

/* One graph with a launch of every built-in kernel, all operands inside `work`. */
static mtiart_graph capture_builtins(mtiart_stream s, void *work) {
    work_layout w = {0, work};
    const int64_t sq[2] = {SIDE, SIDE}, row[1] = {SIDE}, big[1] = {BIG};
    mtiart_tensor_desc a = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       b = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       sum = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       scaled = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       bcast = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       r = place(&w, MTIART_DTYPE_FLOAT32, 1, row),
                       th = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       mask = place(&w, MTIART_DTYPE_BOOL, 2, sq),
                       picked = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       picked_row = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       ints = place(&w, MTIART_DTYPE_INT32, 2, sq),
                       filled = place(&w, MTIART_DTYPE_INT64, 2, sq),
                       prod = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       rowsum = place(&w, MTIART_DTYPE_FLOAT32, 1, row),
                       soft = place(&w, MTIART_DTYPE_FLOAT32, 2, sq),
                       large = place(&w, MTIART_DTYPE_FLOAT32, 1, big),
                       top = place(&w, MTIART_DTYPE_FLOAT32, 0, NULL);
    CHECK(w.used <= WORK_BYTES);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_op_arange(s, &a, -1.0, 0.001));
    CHECK_OK(mtiart_op_arange(s, &b, 2.0, -0.0005));
    CHECK_OK(mtiart_op_arange(s, &large, 0.0, 1.0));
    CHECK_OK(mtiart_op_arange(s, &r, 0.5, 0.25));
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_ADD, &sum, &a, &b));
    CHECK_OK(mtiart_op_binary_scalar(s, MTIART_BINARY_MUL, &scaled, &a, 3.0, 0, 0));
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_SUB, &bcast, &a, &r));
    CHECK_OK(mtiart_op_unary(s, MTIART_UNARY_TANH, &th, &a));
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_LT, &mask, &a, &b));
    CHECK_OK(mtiart_op_where(s, &picked, &mask, &a, &b));
    CHECK_OK(mtiart_op_where(s, &picked_row, &mask, &a, &r));
    CHECK_OK(mtiart_op_cast(s, &ints, &scaled));
    CHECK_OK(mtiart_op_fill(s, &filled, 0.0, -7));
    CHECK_OK(mtiart_op_matmul(s, &prod, &a, &b));
    CHECK_OK(mtiart_op_reduce(s, MTIART_REDUCE_SUM, &rowsum, &a, 1, 0));
    CHECK_OK(mtiart_op_softmax(s, &soft, &a, -1));
    CHECK_OK(mtiart_op_reduce(s, MTIART_REDUCE_MAX, &top, &large, MTIART_REDUCE_ALL, 0));
    mtiart_graph graph;
    CHECK_OK(mtiart_stream_end_capture(s, &graph));
    return graph;
}

/* Run an executable over `work` (zeroed first) and copy the result to host. */
static void replay_into(mtiart_stream s, mtiart_graph_exec x, void *work, uint8_t *host) {
    CHECK_OK(mtiart_memset_async(s, work, 0, WORK_BYTES));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_memcpy_async(s, host, work, WORK_BYTES, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK_OK(mtiart_stream_synchronize(s));
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Where section `type` starts in a saved file (and its size), from the section table. */
static size_t section_at(const uint8_t *file, uint32_t type, size_t *bytes) {
    uint32_t header = get32(file + 16), count = get32(file + 20);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = file + header + 24 * i;
        if (get32(e) == type) {
            *bytes = (size_t)get64(e + 16);
            return (size_t)get64(e + 8);
        }
    }
    *bytes = 0;
    return 0;
}

/* The patched copy must be refused as a built-in launch that does not fit, naming the
 * node and the argument. */
static void expect_launch_refused(const uint8_t *copy, size_t size, const char *what) {
    mtiart_graph g = NULL;
    mtiart_status st = mtiart_graph_load_memory(copy, size, 0, NULL, &g);
    const char *msg = mtiart_last_error_message();
    bool named = strstr(msg, " node ") && strstr(msg, " argument ") && strstr(msg, ": mtiart_");
    if (st != MTIART_ERROR_INVALID_VALUE || !named)
        fprintf(stderr, "%s: status %d, '%s'\n", what, (int)st, st ? msg : "loaded");
    CHECK(st == MTIART_ERROR_INVALID_VALUE && named);
    if (st == MTIART_SUCCESS) mtiart_graph_destroy(g);
}

static void test_builtin_kernels(mtiart_stream s) {
    void *work, *work2;
    CHECK_OK(mtiart_malloc(0, WORK_BYTES, &work));
    CHECK_OK(mtiart_malloc(0, WORK_BYTES, &work2));
    mtiart_graph graph = capture_builtins(s, work);

    /* Every built-in kernel is in the graph. */
    size_t nodes;
    CHECK_OK(mtiart_graph_get_node_count(graph, &nodes));
    for (uint32_t id = 1; mtiart_builtin_kernel_name(id); id++) {
        /* A fused matmul's launch exists only in executables, made at instantiation. */
        if (strcmp(mtiart_builtin_kernel_name(id), "mtiart_matmul_epilogue") == 0) continue;
        bool seen = false;
        for (size_t i = 0; i < nodes && !seen; i++) {
            mtiart_node_info info;
            CHECK_OK(mtiart_graph_get_node_info(graph, i, &info));
            seen = strcmp(info.name, mtiart_builtin_kernel_name(id)) == 0;
        }
        if (!seen) fprintf(stderr, "no %s node\n", mtiart_builtin_kernel_name(id));
        CHECK(seen);
    }

    char path[300];
    path_in_dir(path, sizeof path, "builtins.mtg");
    mtiart_graph_binding binding = {"work", work, WORK_BYTES, 0, 0};
    CHECK_OK(mtiart_graph_save(graph, path, &binding, 1));
    mtiart_graph loaded;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    check_same_nodes(graph, loaded);

    /* The loaded graph computes what the captured one does. */
    uint8_t *want = malloc(WORK_BYTES), *got = malloc(WORK_BYTES);
    mtiart_graph_exec x, lx;
    CHECK_OK(mtiart_graph_instantiate(graph, &x));
    CHECK_OK(mtiart_graph_instantiate(loaded, &lx));
    CHECK_OK(mtiart_graph_exec_bind(lx, "work", work2, WORK_BYTES));
    replay_into(s, x, work, want);
    replay_into(s, lx, work2, got);
    CHECK(memcmp(want, got, WORK_BYTES) == 0);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_exec_destroy(lx));
    CHECK_OK(mtiart_graph_destroy(loaded));

    /* Every launch's parameters start with an element count (out's, or its outer extent,
     * or a matmul's rows): one more element reaches past a buffer, and every buffer one
     * byte short of what its kernel touches is too small. Each is refused, naming the
     * node and the argument. */
    size_t size;
    uint8_t *file = read_file(path, &size);
    CHECK(file != NULL);
    if (file) {
        size_t args_bytes, data_bytes;
        size_t args = section_at(file, 9, &args_bytes), data = section_at(file, 10, &data_bytes);
        CHECK(args_bytes >= 32 * 17 && data_bytes > 0);
        uint8_t *copy = malloc(size);
        for (size_t i = 0; i < args_bytes / 32; i++) {
            memcpy(copy, file, size);
            uint8_t *rec = copy + args + 32 * i;
            char what[64];
            if (get32(rec) == MTIART_ARG_VALUE) {
                uint8_t *count = copy + data + get64(rec + 16);
                put64(count, get64(count) + 1);
                snprintf(what, sizeof what, "argument record %zu: count + 1", i);
            } else {
                put64(rec + 24, get64(rec + 24) - 1);
                snprintf(what, sizeof what, "argument record %zu: extent - 1", i);
            }
            expect_launch_refused(copy, size, what);
        }
        /* A float tensor moved off its element alignment (the binding has room). */
        memcpy(copy, file, size);
        for (size_t i = 0; i < args_bytes / 32; i++) {
            uint8_t *rec = copy + args + 32 * i;
            if (get32(rec) == MTIART_ARG_VALUE) continue;
            put64(rec + 16, get64(rec + 16) + 2);
            break;
        }
        expect_launch_refused(copy, size, "a buffer 2 bytes off");
        CHECK(strstr(mtiart_last_error_message(), "aligned") != NULL);
        free(copy);
        /* The file itself still loads: the refusals were the patches'. */
        CHECK_OK(mtiart_graph_load_memory(file, size, 0, NULL, &loaded));
        CHECK_OK(mtiart_graph_destroy(loaded));
        free(file);
    }
    CHECK_OK(mtiart_graph_destroy(graph));
    free(want);
    free(got);
    CHECK_OK(mtiart_free(work));
    CHECK_OK(mtiart_free(work2));
    unlink(path);
}

/* Constants are embedded: the loaded graph reads the values of the save, not the buffer. */
static void test_constants(mtiart_stream s) {
    float *w, *in, *out;
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&w));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out));
    for (int i = 0; i < N; i++) w[i] = (float)(i % 7);
    fill_input(in, 0.0f);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_tensor_desc o = vec(out), a = vec(in), b = vec(w);
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_MUL, &o, &a, &b));
    mtiart_graph graph;
    CHECK_OK(mtiart_stream_end_capture(s, &graph));
    char path[300];
    path_in_dir(path, sizeof path, "constants.mtg");
    mtiart_graph_binding bindings[3] = {
        {"x", in, N * sizeof(float), MTIART_BINDING_INPUT, 0},
        {"y", out, N * sizeof(float), MTIART_BINDING_OUTPUT, 0},
        {"w", w, N * sizeof(float), MTIART_BINDING_CONSTANT, 0},
    };
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 3));
    for (int i = 0; i < N; i++) w[i] = -1.0f; /* too late to reach the file */
    mtiart_graph loaded;
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    CHECK_OK(mtiart_graph_instantiate(loaded, &x));
    CHECK_STATUS(mtiart_graph_exec_bind(x, "w", w, N * sizeof(float)), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_exec_bind(x, "x", in, N * sizeof(float)));
    CHECK_OK(mtiart_graph_exec_bind(x, "y", out, N * sizeof(float)));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    int bad = 0;
    for (int i = 0; i < N; i++) bad += out[i] != in[i] * (float)(i % 7);
    CHECK(bad == 0);
    /* A loaded graph changed before it is instantiated cannot bind any more. */
    size_t node;
    CHECK_OK(mtiart_graph_add_empty_node(loaded, NULL, 0, &node));
    mtiart_graph_exec changed;
    CHECK_STATUS(mtiart_graph_instantiate(loaded, &changed), MTIART_ERROR_NOT_SUPPORTED);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    /* Constants must be device memory; bindings must not overlap or repeat a name. */
    float host[N];
    mtiart_graph_binding host_constant[1] = {{"h", host, sizeof host, MTIART_BINDING_CONSTANT, 0}};
    CHECK_STATUS(mtiart_graph_save(graph, path, host_constant, 1), MTIART_ERROR_INVALID_VALUE);
    mtiart_graph_binding overlap[2] = {
        {"a", in, N * sizeof(float), 0, 0},
        {"b", in + 8, 16, 0, 0},
    };
    CHECK_STATUS(mtiart_graph_save(graph, path, overlap, 2), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "overlap") != NULL);
    mtiart_graph_binding twice[2] = {
        {"a", in, N * sizeof(float), 0, 0},
        {"a", out, N * sizeof(float), 0, 0},
    };
    CHECK_STATUS(mtiart_graph_save(graph, path, twice, 2), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(w));
    CHECK_OK(mtiart_free(in));
    CHECK_OK(mtiart_free(out));
    unlink(path);
}

/* Event record nodes, and waits for them, come back with events of their own. */
static void test_events(mtiart_stream s) {
    mtiart_graph graph;
    mtiart_event e;
    size_t rec, wait, last;
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &e));
    CHECK_OK(mtiart_graph_add_event_record_node(graph, NULL, 0, e, &rec));
    CHECK_OK(mtiart_graph_add_event_wait_node(graph, &rec, 1, e, &wait));
    CHECK_OK(mtiart_graph_add_empty_node(graph, &wait, 1, &last));
    char path[300];
    path_in_dir(path, sizeof path, "events.mtg");
    CHECK_OK(mtiart_graph_save(graph, path, NULL, 0));
    mtiart_graph loaded;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    check_same_nodes(graph, loaded);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(loaded, &x)); /* nothing to bind */
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    CHECK_OK(mtiart_graph_destroy(graph));
    unlink(path);

    /* A wait for an event that the graph does not record: refused, naming the node. */
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_add_empty_node(graph, NULL, 0, &rec));
    CHECK_OK(mtiart_graph_add_event_wait_node(graph, &rec, 1, e, &wait));
    CHECK_STATUS(mtiart_graph_save(graph, path, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "node 1 (event wait)") != NULL);
    CHECK(access(path, F_OK) != 0);
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_event_destroy(e));
}

/* A condition in a binding: the loader binds it, aligned to its size. */
static void test_condition_binding(mtiart_stream s) {
    int32_t *flag, *out;
    CHECK_OK(mtiart_malloc(0, 16, (void **)&flag));
    CHECK_OK(mtiart_malloc(0, sizeof *out, (void **)&out));
    mtiart_graph body, graph;
    size_t node;
    int32_t seven = 7;
    CHECK_OK(mtiart_graph_create(0, &body));
    CHECK_OK(mtiart_graph_add_fill_node(body, NULL, 0, out, &seven, 4, 1, &node));
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_add_conditional_node(graph, NULL, 0, MTIART_CONDITIONAL_IF, flag, 4, body,
                                               &node));
    char path[300];
    path_in_dir(path, sizeof path, "condition.mtg");
    mtiart_graph_binding bindings[2] = {{"flag", flag, 4, MTIART_BINDING_INPUT, 0},
                                        {"out", out, 4, MTIART_BINDING_OUTPUT, 0}};
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 2));
    mtiart_graph loaded;
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    CHECK_OK(mtiart_graph_instantiate(loaded, &x));
    CHECK_OK(mtiart_graph_exec_bind(x, "out", out, 4));
    CHECK_STATUS(mtiart_graph_exec_bind(x, "flag", (char *)flag + 2, 4),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "aligned") != NULL);
    CHECK_OK(mtiart_graph_exec_bind(x, "flag", flag + 1, 4));
    for (int set = 0; set < 2; set++) {
        flag[1] = set;
        *out = 0;
        CHECK_OK(mtiart_graph_launch(x, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(*out == (set ? 7 : 0));
    }
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_free(flag));
    CHECK_OK(mtiart_free(out));
    unlink(path);
}

/* Whether [ptr, +bytes) is a live device allocation (a fill node can be added on it). */
static bool live(void *ptr, size_t bytes) {
    mtiart_graph g;
    size_t node;
    uint8_t zero = 0;
    CHECK_OK(mtiart_graph_create(0, &g));
    bool ok = mtiart_graph_add_fill_node(g, NULL, 0, ptr, &zero, 1, bytes, &node) == MTIART_SUCCESS;
    CHECK_OK(mtiart_graph_destroy(g));
    return ok;
}

/* A loaded graph's memory lives as long as any node that uses it: in its executable, in
 * a child-graph node a capture recorded from it, after the graph and the executable are
 * gone. Its unbound placeholders never escape into another graph. */
static void test_memory_follows_nodes(mtiart_stream s) {
    float *c;
    CHECK_OK(mtiart_malloc(0, 4 * sizeof(float), (void **)&c));
    memset(c, 0, 4 * sizeof(float)); /* a constant's contents go into the file */
    mtiart_graph graph;
    size_t node;
    float two = 2.0f;
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_add_fill_node(graph, NULL, 0, c, &two, 4, 4, &node));
    char path[300];
    path_in_dir(path, sizeof path, "memory.mtg");
    mtiart_graph_binding constant[1] = {{"c", c, 4 * sizeof(float), MTIART_BINDING_CONSTANT, 0}};
    CHECK_OK(mtiart_graph_save(graph, path, constant, 1));
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(c));

    mtiart_graph loaded;
    mtiart_graph_exec x;
    mtiart_buffer_use use;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    CHECK_OK(mtiart_graph_get_node_buffer(loaded, 0, 0, &use));
    float *restored = (float *)(uintptr_t)use.address;
    CHECK(live(restored, 16));
    CHECK_OK(mtiart_graph_instantiate(loaded, &x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    CHECK(live(restored, 16));
    mtiart_graph parent;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_graph_launch(x, s)); /* a child-graph node */
    CHECK_OK(mtiart_stream_end_capture(s, &parent));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK(live(restored, 16));
    mtiart_graph_exec px;
    CHECK_OK(mtiart_graph_instantiate(parent, &px));
    CHECK_OK(mtiart_graph_destroy(parent));
    restored[3] = 0.0f;
    CHECK_OK(mtiart_graph_launch(px, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(restored[3] == 2.0f);
    CHECK_OK(mtiart_graph_exec_destroy(px));
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(!live(restored, 16)); /* the last node that used it is gone */

    /* Unbound placeholders: the loaded graph (or a body of it) cannot be run elsewhere. */
    float *in, *out, host_out[N];
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out));
    graph = capture_every_kind(s, in, out, host_out);
    mtiart_graph_binding bindings[3] = {
        {"in", in, N * sizeof(float), 0, 0},
        {"out", out, N * sizeof(float), 0, 0},
        {"host_out", host_out, sizeof host_out, 0, 0},
    };
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 3));
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    CHECK_OK(mtiart_graph_create(0, &parent));
    CHECK_STATUS(mtiart_graph_add_child_graph_node(parent, NULL, 0, loaded, &node),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "not bound") != NULL);
    mtiart_graph body;
    CHECK_OK(mtiart_graph_get_node_body(loaded, 5, &body)); /* the child graph node */
    CHECK_STATUS(mtiart_graph_instantiate(body, &x), MTIART_ERROR_NOT_SUPPORTED);
    CHECK_OK(mtiart_graph_instantiate(graph, &px));
    CHECK_STATUS(mtiart_graph_exec_update(px, loaded, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_graph_exec_destroy(px));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_graph_destroy(parent));
    CHECK_OK(mtiart_graph_destroy(loaded));
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(in));
    CHECK_OK(mtiart_free(out));
    unlink(path);
}

static int32_t host_noop(void *user_data) {
    (void)user_data;
    return 0;
}

/* Kernels that are not exported symbols of a shared library (this program's own). */
static int32_t static_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    return 0;
}

/* Nodes that cannot be saved make the save fail with the node's name; nothing is written,
 * and a file already at the path stays as it was. */
static void test_refusals(mtiart_stream s) {
    (void)s;
    char path[300];
    path_in_dir(path, sizeof path, "refused.mtg");
    write_file(path, (const uint8_t *)"old contents", 12);

    mtiart_graph graph;
    size_t a, b;
    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_add_empty_node(graph, NULL, 0, &a));
    CHECK_OK(mtiart_graph_add_host_node(graph, &a, 1, host_noop, NULL, &b));
    CHECK_STATUS(mtiart_graph_save(graph, path, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_graph_save: node 1 (host function)") != NULL);
    CHECK_OK(mtiart_graph_destroy(graph));

    CHECK_OK(mtiart_graph_create(0, &graph));
    CHECK_OK(mtiart_graph_add_kernel_node(graph, NULL, 0, static_kernel, 1, NULL, 0, &a));
    CHECK_STATUS(mtiart_graph_save(graph, path, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "node 0 (kernel") != NULL);
    CHECK_OK(mtiart_graph_destroy(graph));

    /* A buffer outside the graph's pool that no binding names. */
    float *buf;
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&buf));
    CHECK_OK(mtiart_graph_create(0, &graph));
    float pattern = 1.0f;
    CHECK_OK(mtiart_graph_add_fill_node(graph, NULL, 0, buf, &pattern, 4, N, &a));
    CHECK_STATUS(mtiart_graph_save(graph, path, NULL, 0), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "node 0 (fill)") != NULL);
    CHECK(strstr(mtiart_last_error_message(), "binding") != NULL);
    /* Named only in part: still refused. */
    mtiart_graph_binding part[1] = {{"half", buf, N * sizeof(float) / 2, 0, 0}};
    CHECK_STATUS(mtiart_graph_save(graph, path, part, 1), MTIART_ERROR_INVALID_VALUE);
    /* Bad arguments. */
    mtiart_graph_binding whole[1] = {{"buf", buf, N * sizeof(float), 0, 0}};
    CHECK_STATUS(mtiart_graph_save(graph, NULL, whole, 1), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_save(graph, path, NULL, 1), MTIART_ERROR_INVALID_VALUE);
    mtiart_graph_binding unnamed[1] = {{"", buf, N * sizeof(float), 0, 0}};
    CHECK_STATUS(mtiart_graph_save(graph, path, unnamed, 1), MTIART_ERROR_INVALID_VALUE);
    mtiart_graph_binding flags[1] = {{"buf", buf, N * sizeof(float), 77, 0}};
    CHECK_STATUS(mtiart_graph_save(graph, path, flags, 1), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_save(NULL, path, whole, 1), MTIART_ERROR_INVALID_HANDLE);
    char nowhere[400];
    snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/g.mtg", dir);
    CHECK_STATUS(mtiart_graph_save(graph, nowhere, whole, 1), MTIART_ERROR_INVALID_VALUE);

    size_t size;
    uint8_t *old = read_file(path, &size);
    CHECK(old && size == 12 && memcmp(old, "old contents", 12) == 0);
    free(old);
    CHECK(files_named("refused.mtg.tmp") == 0);

    /* Saved once named: replaces the old file whole. */
    CHECK_OK(mtiart_graph_save(graph, path, whole, 1));
    CHECK(files_named("refused.mtg") == 1);
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(buf));
    unlink(path);
}

/* A saved graph whose one node calls user kernel `fn` on `buf`. */
static void save_user_kernel_graph(const char *path, mtiart_kernel_fn fn, float *buf) {
    mtiart_graph graph;
    size_t node;
    CHECK_OK(mtiart_graph_create(0, &graph));
    float factor = 2.0f;
    uint64_t count = N;
    mtiart_arg args[3];
    scale_args(args, buf, &factor, &count);
    CHECK_OK(mtiart_graph_add_kernel_node(graph, NULL, 0, fn, 1, args, 3, &node));
    mtiart_graph_binding b[1] = {{"buf", buf, N * sizeof(float), 0, 0}};
    CHECK_OK(mtiart_graph_save(graph, path, b, 1));
    CHECK_OK(mtiart_graph_destroy(graph));
}

/* Replace the first occurrence of `from` by `to` (same length) in a file. */
static void patch_file(const char *path, const char *from, const char *to) {
    size_t size;
    uint8_t *data = read_file(path, &size);
    CHECK(data != NULL);
    if (!data) return;
    size_t n = strlen(from);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(data + i, from, n) == 0) {
            memcpy(data + i, to, n);
            break;
        }
    write_file(path, data, size);
    free(data);
}

static void test_library_policy(mtiart_stream s) {
    char path[300];
    path_in_dir(path, sizeof path, "user_kernel.mtg");
    float *buf;
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&buf));
    save_user_kernel_graph(path, scale_fn, buf);
    /* Library A is loaded: allowed even when restricted. */
    mtiart_load_options restrict_all = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
    mtiart_graph loaded;
    CHECK_OK(mtiart_graph_load(path, 0, &restrict_all, &loaded));
    CHECK_OK(mtiart_graph_destroy(loaded));
    /* The file now names library B, which nothing has loaded: refused unless allowed. */
    patch_file(path, lib_a, lib_b);
    CHECK_STATUS(mtiart_graph_load(path, 0, &restrict_all, &loaded), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "allow-list") != NULL);
    const char *allowed[1] = {lib_b};
    mtiart_load_options allow_b = {MTIART_LOAD_RESTRICT_LIBRARIES, 1, allowed};
    CHECK_OK(mtiart_graph_load(path, 0, &allow_b, &loaded));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(loaded, &x));
    for (int i = 0; i < N; i++) buf[i] = 1.0f;
    CHECK_OK(mtiart_graph_exec_bind(x, "buf", buf, N * sizeof(float)));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(buf[0] == 2.0f && buf[N - 1] == 2.0f);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    /* A library that does not exist, or lacks the symbol. */
    patch_file(path, lib_b, lib_a);
    patch_file(path, "sertest_scale", "sertest_scalX");
    CHECK_STATUS(mtiart_graph_load(path, 0, NULL, &loaded), MTIART_ERROR_LOAD_FAILED);
    mtiart_load_options builtin_only = {MTIART_LOAD_BUILTIN_KERNELS_ONLY, 0, NULL};
    CHECK_STATUS(mtiart_graph_load(path, 0, &builtin_only, &loaded), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "sertest_scalX") != NULL);
    mtiart_load_options bad_flags = {0x80, 0, NULL};
    CHECK_STATUS(mtiart_graph_load(path, 0, &bad_flags, &loaded), MTIART_ERROR_INVALID_VALUE);
    mtiart_load_options null_list = {MTIART_LOAD_RESTRICT_LIBRARIES, 2, NULL};
    CHECK_STATUS(mtiart_graph_load(path, 0, &null_list, &loaded), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_free(buf));
    unlink(path);
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Loading must refuse, cleanly, whatever is wrong with the file. */
static void expect_refused(const uint8_t *data, size_t size, const char *what) {
    mtiart_graph g = NULL;
    mtiart_load_options no_libraries = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
    mtiart_status st = mtiart_graph_load_memory(data, size, 0, &no_libraries, &g);
    if (st == MTIART_SUCCESS) {
        fprintf(stderr, "%s: loaded\n", what);
        test_failures++;
        mtiart_graph_destroy(g);
    }
}

static void test_versions_and_corruption(mtiart_stream s) {
    float *in, *out, host_out[N];
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out));
    mtiart_graph graph = capture_every_kind(s, in, out, host_out);
    char path[300];
    path_in_dir(path, sizeof path, "versions.mtg");
    mtiart_graph_binding bindings[3] = {
        {"in", in, N * sizeof(float), 0, 0},
        {"out", out, N * sizeof(float), 0, 0},
        {"host_out", host_out, sizeof host_out, 0, 0},
    };
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 3));
    size_t size;
    uint8_t *data = read_file(path, &size);
    CHECK(data != NULL);
    if (!data) return;
    mtiart_graph g;
    CHECK_OK(mtiart_graph_load_memory(data, size, 0, NULL, &g));
    CHECK_OK(mtiart_graph_destroy(g));

    uint8_t *copy = malloc(size);
    /* A newer major version: refused, saying so. */
    memcpy(copy, data, size);
    put16(copy + 8, 2);
    CHECK_STATUS(mtiart_graph_load_memory(copy, size, 0, NULL, &g), MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "newer") != NULL);
    /* A newer minor version of the same major loads. */
    memcpy(copy, data, size);
    put16(copy + 10, 9);
    CHECK_OK(mtiart_graph_load_memory(copy, size, 0, NULL, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    /* Big-endian, bad magic. */
    memcpy(copy, data, size);
    copy[12] = 1, copy[13] = 2, copy[14] = 3, copy[15] = 4;
    CHECK_STATUS(mtiart_graph_load_memory(copy, size, 0, NULL, &g), MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "big-endian") != NULL);
    memcpy(copy, data, size);
    copy[0] = 'X';
    CHECK_STATUS(mtiart_graph_load_memory(copy, size, 0, NULL, &g), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(),
                 "mtiart_graph_load_memory: not a valid saved graph") != NULL);
    CHECK_STATUS(mtiart_graph_load_memory(NULL, 10, 0, NULL, &g), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_load_memory(data, size, 99, NULL, &g), MTIART_ERROR_INVALID_DEVICE);
    CHECK_STATUS(mtiart_graph_load_memory(data, size, 0, NULL, NULL), MTIART_ERROR_INVALID_VALUE);
    char missing[300];
    path_in_dir(missing, sizeof missing, "missing.mtg");
    CHECK_STATUS(mtiart_graph_load(missing, 0, NULL, &g), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_load(dir, 0, NULL, &g), MTIART_ERROR_INVALID_VALUE);

    /* Every truncation. */
    for (size_t n = 0; n < size; n++) {
        memcpy(copy, data, n);
        expect_refused(copy, n, "a truncated file");
    }
    /* Corrupted copies: any outcome but a crash (or, under ASan, a bad read) is fine; what
     * loads must also instantiate and destroy cleanly. */
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 1500; round++) {
        memcpy(copy, data, size);
        int flips = 1 + round % 4;
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t at = (size_t)(rng % size);
            /* Hit the header and section table more often: they hold every offset. */
            if (round % 3 == 0) at %= 64 + 10 * 24;
            copy[at] = (uint8_t)(round & 1 ? rng >> 32 : copy[at] ^ (1u << (rng >> 40 & 7)));
        }
        mtiart_load_options no_libraries = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
        if (mtiart_graph_load_memory(copy, size, 0, &no_libraries, &g) == MTIART_SUCCESS) {
            mtiart_graph_exec x;
            if (mtiart_graph_instantiate(g, &x) == MTIART_SUCCESS) mtiart_graph_exec_destroy(x);
            mtiart_graph_destroy(g);
        }
    }
    free(copy);
    free(data);
    CHECK_OK(mtiart_graph_destroy(graph));
    CHECK_OK(mtiart_free(in));
    CHECK_OK(mtiart_free(out));
    unlink(path);
}

typedef struct race {
    mtiart_graph_exec x;
    float *inputs[2];
    int failures;
} race;

static void *rebind(void *p) {
    race *r = p;
    for (int i = 0; i < 200; i++) {
        mtiart_status st = mtiart_graph_exec_bind(r->x, "x", r->inputs[i & 1], N * sizeof(float));
        if (st != MTIART_SUCCESS && st != MTIART_ERROR_INVALID_HANDLE) r->failures++;
    }
    return NULL;
}

/* Binds on one thread while another launches, and while the executable is destroyed:
 * every launch sees one of the two inputs (the same values) whole, and calls after the
 * destroy fail cleanly. */
static void test_bind_races(mtiart_stream s) {
    float *in[2], *out, *w;
    for (int k = 0; k < 2; k++) {
        CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&in[k]));
        fill_input(in[k], 1.0f);
    }
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&out));
    CHECK_OK(mtiart_malloc(0, N * sizeof(float), (void **)&w));
    for (int i = 0; i < N; i++) w[i] = 2.0f;
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_tensor_desc o = vec(out), a = vec(in[0]), b = vec(w);
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_MUL, &o, &a, &b));
    mtiart_graph graph;
    CHECK_OK(mtiart_stream_end_capture(s, &graph));
    char path[300];
    path_in_dir(path, sizeof path, "races.mtg");
    mtiart_graph_binding bindings[3] = {
        {"x", in[0], N * sizeof(float), MTIART_BINDING_INPUT, 0},
        {"y", out, N * sizeof(float), MTIART_BINDING_OUTPUT, 0},
        {"w", w, N * sizeof(float), MTIART_BINDING_CONSTANT, 0},
    };
    CHECK_OK(mtiart_graph_save(graph, path, bindings, 3));
    CHECK_OK(mtiart_graph_destroy(graph));
    mtiart_graph loaded;
    CHECK_OK(mtiart_graph_load(path, 0, NULL, &loaded));
    race r = {.inputs = {in[0], in[1]}};
    CHECK_OK(mtiart_graph_instantiate(loaded, &r.x));
    CHECK_OK(mtiart_graph_destroy(loaded));
    CHECK_OK(mtiart_graph_exec_bind(r.x, "y", out, N * sizeof(float)));
    for (int round = 0; round < 2; round++) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, rebind, &r) == 0);
        for (int i = 0; i < 200; i++) {
            mtiart_status st = mtiart_graph_launch(r.x, s);
            /* before the first bind, or after the destroy of the second round */
            CHECK(st == MTIART_SUCCESS || st == MTIART_ERROR_NOT_PERMITTED ||
                  (round == 1 && st == MTIART_ERROR_INVALID_HANDLE));
            if (round == 1 && i == 100) CHECK_OK(mtiart_graph_exec_destroy(r.x));
        }
        CHECK(pthread_join(t, NULL) == 0);
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(r.failures == 0);
        if (round == 0) {
            CHECK_OK(mtiart_graph_launch(r.x, s));
            CHECK_OK(mtiart_stream_synchronize(s));
            int bad = 0;
            for (int i = 0; i < N; i++) bad += out[i] != 2.0f * (1.0f + (float)i * 0.25f);
            CHECK(bad == 0);
        }
    }
    CHECK_STATUS(mtiart_graph_exec_bind(r.x, "x", in[0], N * sizeof(float)),
                 MTIART_ERROR_INVALID_HANDLE);
    for (int k = 0; k < 2; k++) CHECK_OK(mtiart_free(in[k]));
    CHECK_OK(mtiart_free(out));
    CHECK_OK(mtiart_free(w));
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s LIB_A LIB_B\n", argv[0]);
        return 2;
    }
    lib_a = argv[1];
    lib_b = argv[2];
    CHECK(strlen(lib_a) == strlen(lib_b));
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test_serialize.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    CHECK_OK(mtiart_kernel_load(lib_a, "sertest_scale", &scale_fn));
    CHECK_OK(mtiart_kernel_load(lib_a, "sertest_countdown", &countdown_fn));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    test_round_trip(s);
    test_builtin_kernels(s);
    test_constants(s);
    test_events(s);
    test_condition_binding(s);
    test_memory_follows_nodes(s);
    test_refusals(s);
    test_library_policy(s);
    test_bind_races(s);
    test_versions_and_corruption(s);
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_device_synchronize(0));
    rmdir(dir);
    TEST_MAIN_END();
}
