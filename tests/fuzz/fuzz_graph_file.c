/*
 * fuzz_graph_file - hostile saved graphs: each input is given to mtiart_graph_load_memory
 * (with user-kernel libraries restricted to those already loaded, so that no input can
 * make the fuzzer load code), and a graph that loads is instantiated and, when it only runs
 * built-in kernels, copies and fills, launched with its bindings bound to buffers of their
 * recorded sizes fenced by guard bytes. The loader must never crash, read out of bounds
 * (ASan), leak, or leave device memory behind, and a replay of a graph it accepted must
 * stay inside its buffers (the guards are checked after every replay). Graphs with user
 * kernels, conditionals or events are not launched: a mutated symbol can name any export
 * of a loaded library, and a mutated flag or wait can make a replay run forever.
 *
 * Two builds of the same file:
 *   libFuzzer (clang):  -fsanitize=fuzzer[,address,undefined]   -> LLVMFuzzerTestOneInput;
 *                        seed the corpus with `fuzz_graph_file_asan -write_seeds DIR`
 *   standalone (any cc): main() below: saves a few real graphs (every node kind, bindings,
 *                        constants, bodies, events, a user kernel) and mutates them for a
 *                        bounded time: bit flips, interesting 32- and 64-bit values at
 *                        field offsets, truncation, growth; the header's size field is
 *                        often fixed up so that mutations reach the deeper checks.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mtiart.h"

/* Only graphs whose every node (child graphs included) is a built-in kernel, a copy, a
 * fill or an empty node are replayed. */
static int replayable(mtiart_graph graph, int depth) {
    size_t count;
    if (depth > 8 || mtiart_graph_get_node_count(graph, &count) != MTIART_SUCCESS) return 0;
    for (size_t i = 0; i < count; i++) {
        mtiart_node_info info;
        if (mtiart_graph_get_node_info(graph, i, &info) != MTIART_SUCCESS) return 0;
        switch (info.kind) {
        case MTIART_NODE_KERNEL: {
            int builtin = 0;
            for (uint32_t id = 1; mtiart_builtin_kernel_name(id) && !builtin; id++)
                builtin = strcmp(info.name, mtiart_builtin_kernel_name(id)) == 0;
            if (!builtin) return 0;
            break;
        }
        case MTIART_NODE_MEMCPY:
        case MTIART_NODE_FILL:
        case MTIART_NODE_EMPTY: break;
        case MTIART_NODE_CHILD_GRAPH: {
            mtiart_graph body;
            if (mtiart_graph_get_node_body(graph, i, &body) != MTIART_SUCCESS) return 0;
            int ok = replayable(body, depth + 1);
            mtiart_graph_destroy(body);
            if (!ok) return 0;
            break;
        }
        default: return 0;
        }
    }
    return 1;
}

/* The names the seeds bind; a mutated name stays unbound and the launch is refused. */
static const char *const binding_names[] = {"x", "y", "w", "host", "work"};
enum { NUM_NAMES = sizeof binding_names / sizeof *binding_names, GUARD = 4096 };
enum { MAX_BOUND = 16 << 20, GUARD_BYTE = 0xa5 };

static uint64_t launched;

typedef struct fenced {
    uint8_t *mem; /* GUARD bytes, the binding's, GUARD bytes */
    size_t bytes;
    int device;
} fenced;

static int guards_intact(const fenced *f) {
    for (size_t i = 0; i < GUARD; i++)
        if (f->mem[i] != GUARD_BYTE || f->mem[GUARD + f->bytes + i] != GUARD_BYTE) return 0;
    return 1;
}

/* Bind every binding the executable has (device memory, or host memory for a host
 * binding) inside guards, launch once and check that no byte around them changed. */
static void replay(mtiart_graph_exec exec) {
    static mtiart_stream stream;
    if (!stream && mtiart_stream_create(0, 0, &stream) != MTIART_SUCCESS) return;
    fenced f[NUM_NAMES];
    memset(f, 0, sizeof f);
    size_t total = 0;
    int ok = 1;
    for (int i = 0; i < NUM_NAMES && ok; i++) {
        size_t bytes;
        if (mtiart_graph_exec_get_binding_size(exec, binding_names[i], &bytes) != MTIART_SUCCESS)
            continue;
        if (bytes > MAX_BOUND - total) {
            ok = 0;
            break;
        }
        total += bytes;
        f[i].bytes = bytes;
        size_t span = bytes + 2 * GUARD;
        void *mem = NULL;
        if (mtiart_malloc(0, span, &mem) != MTIART_SUCCESS) {
            ok = 0;
            break;
        }
        f[i].mem = mem;
        f[i].device = 1;
        memset(mem, GUARD_BYTE, span);
        if (mtiart_graph_exec_bind(exec, binding_names[i], f[i].mem + GUARD, bytes) ==
            MTIART_SUCCESS)
            continue;
        /* A host binding (or a constant, which cannot be bound: its memory is unused). */
        mtiart_free(mem);
        f[i].device = 0;
        if (!(f[i].mem = malloc(span))) {
            ok = 0;
            break;
        }
        memset(f[i].mem, GUARD_BYTE, span);
        (void)mtiart_graph_exec_bind(exec, binding_names[i], f[i].mem + GUARD, bytes);
    }
    if (ok && mtiart_graph_launch(exec, stream) == MTIART_SUCCESS) launched++;
    (void)mtiart_stream_synchronize(stream);
    for (int i = 0; i < NUM_NAMES; i++) {
        if (!f[i].mem) continue;
        if (!guards_intact(&f[i])) {
            fprintf(stderr, "fuzz_graph_file: a replay wrote outside binding '%s'\n",
                    binding_names[i]);
            abort();
        }
        if (f[i].device) mtiart_free(f[i].mem);
        else free(f[i].mem);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mtiart_load_options only_loaded = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
    mtiart_graph graph;
    if (mtiart_graph_load_memory(data, size, 0, &only_loaded, &graph) == MTIART_SUCCESS) {
        mtiart_graph_exec exec;
        if (mtiart_graph_instantiate(graph, &exec) == MTIART_SUCCESS) {
            if (replayable(graph, 0)) replay(exec);
            mtiart_graph_exec_destroy(exec);
        }
        size_t count;
        (void)mtiart_graph_get_node_count(graph, &count);
        mtiart_graph_destroy(graph);
    }
    mtiart_clear_last_error();
    return 0;
}

#ifndef MTIART_FUZZ_LIBFUZZER

#define FAIL(call)                                                                                 \
    do {                                                                                           \
        mtiart_status st_ = (call);                                                                \
        if (st_ != MTIART_SUCCESS) {                                                               \
            fprintf(stderr, "fuzz_graph_file: %s: %s\n", #call, mtiart_last_error_message());      \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

enum { N = 64, MAX_SEEDS = 4, SIDE = 8, BIG = 1 << 20 };

typedef struct seed {
    uint8_t *data;
    size_t size;
} seed;

static seed seeds[MAX_SEEDS];
static int num_seeds;
static char dir[256];

static void add_seed(mtiart_graph graph, const mtiart_graph_binding *b, size_t nb) {
    char path[320];
    snprintf(path, sizeof path, "%s/seed%d.mtg", dir, num_seeds);
    FAIL(mtiart_graph_save(graph, path, b, nb));
    FILE *f = fopen(path, "rb");
    if (!f) exit(2);
    fseek(f, 0, SEEK_END);
    seed *s = &seeds[num_seeds++];
    s->size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    s->data = malloc(s->size);
    if (!s->data || fread(s->data, 1, s->size, f) != s->size) exit(2);
    fclose(f);
    unlink(path);
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

/* The next tensor of `dtype` and `shape` in the buffer at base (*used bytes taken). */
static mtiart_tensor_desc place(uint8_t *base, size_t *used, mtiart_dtype dtype, int ndim,
                                const int64_t *shape) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)(t.shape[d] = shape[d]);
    t.data = base + *used;
    *used += (n * (size_t)mtiart_dtype_size(dtype) + 63) / 64 * 64;
    return t;
}

/* Every built-in kernel over one binding, "work": the seed whose mutations get replayed. */
static void builtin_seed(mtiart_stream s) {
    const size_t work_bytes = BIG * 4 + 64 * SIDE * SIDE * 8;
    uint8_t *work;
    FAIL(mtiart_malloc(0, work_bytes, (void **)&work));
    size_t used = 0;
    const int64_t sq[2] = {SIDE, SIDE}, row[1] = {SIDE}, big[1] = {BIG};
    mtiart_tensor_desc a = place(work, &used, MTIART_DTYPE_FLOAT32, 2, sq),
                       b = place(work, &used, MTIART_DTYPE_FLOAT32, 2, sq),
                       o = place(work, &used, MTIART_DTYPE_FLOAT32, 2, sq),
                       r = place(work, &used, MTIART_DTYPE_FLOAT32, 1, row),
                       m = place(work, &used, MTIART_DTYPE_BOOL, 2, sq),
                       i = place(work, &used, MTIART_DTYPE_INT64, 2, sq),
                       large = place(work, &used, MTIART_DTYPE_FLOAT32, 1, big),
                       top = place(work, &used, MTIART_DTYPE_FLOAT32, 0, NULL);
    FAIL(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    FAIL(mtiart_op_arange(s, &a, -1.0, 0.03));
    FAIL(mtiart_op_fill(s, &b, 0.5, 0));
    FAIL(mtiart_op_binary(s, MTIART_BINARY_ADD, &o, &a, &b));
    FAIL(mtiart_op_binary_scalar(s, MTIART_BINARY_MUL, &o, &o, 3.0, 0, 0));
    FAIL(mtiart_op_binary(s, MTIART_BINARY_SUB, &o, &a, &r));
    FAIL(mtiart_op_unary(s, MTIART_UNARY_TANH, &o, &a));
    FAIL(mtiart_op_binary(s, MTIART_BINARY_LT, &m, &a, &b));
    FAIL(mtiart_op_where(s, &o, &m, &a, &b));
    FAIL(mtiart_op_where(s, &o, &m, &a, &r));
    FAIL(mtiart_op_cast(s, &i, &a));
    FAIL(mtiart_op_matmul(s, &o, &a, &b));
    FAIL(mtiart_op_reduce(s, MTIART_REDUCE_SUM, &r, &a, 1, 0));
    FAIL(mtiart_op_softmax(s, &o, &a, -1));
    FAIL(mtiart_op_reduce(s, MTIART_REDUCE_MAX, &top, &large, MTIART_REDUCE_ALL, 0));
    mtiart_graph g;
    FAIL(mtiart_stream_end_capture(s, &g));
    mtiart_graph_binding binding = {"work", work, work_bytes, 0, 0};
    add_seed(g, &binding, 1);
    FAIL(mtiart_graph_destroy(g));
    FAIL(mtiart_free(work));
}

/* The seeds: a capture with built-in kernels, copies, a fill, a WHILE body and a child
 * graph over bindings and a constant; a hand-built graph with events and a "user kernel"
 * (an exported function of libmtiart itself: the loader resolves it, nothing calls it). */
static void make_seeds(void) {
    mtiart_stream s;
    FAIL(mtiart_stream_create(0, 0, &s));
    float *x, *y, *w, host[N];
    FAIL(mtiart_malloc(0, N * sizeof(float), (void **)&x));
    FAIL(mtiart_malloc(0, N * sizeof(float), (void **)&y));
    FAIL(mtiart_malloc(0, N * sizeof(float), (void **)&w));
    memset(x, 0, N * sizeof(float));
    memset(w, 0, N * sizeof(float));

    mtiart_graph child_graph;
    size_t node;
    FAIL(mtiart_graph_create(0, &child_graph));
    float one = 1.0f;
    FAIL(mtiart_graph_add_fill_node(child_graph, NULL, 0, y, &one, 4, N, &node));
    mtiart_graph_exec child;
    FAIL(mtiart_graph_instantiate(child_graph, &child));

    FAIL(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    float *tmp;
    int32_t *flag;
    FAIL(mtiart_malloc_async(s, N * sizeof(float), (void **)&tmp));
    FAIL(mtiart_malloc_async(s, sizeof *flag, (void **)&flag));
    mtiart_tensor_desc t = vec(tmp), a = vec(x), b = vec(w), o = vec(y);
    FAIL(mtiart_op_binary(s, MTIART_BINARY_MUL, &t, &a, &b));
    FAIL(mtiart_op_unary(s, MTIART_UNARY_GELU, &o, &t));
    FAIL(mtiart_op_softmax(s, &o, &o, 0));
    int32_t zero = 0;
    FAIL(mtiart_fill_async(s, flag, &zero, 4, 1));
    FAIL(mtiart_stream_begin_conditional(s, MTIART_CONDITIONAL_WHILE, flag, 4));
    FAIL(mtiart_memcpy_async(s, tmp, y, N * sizeof(float), MTIART_MEMCPY_DEVICE_TO_DEVICE));
    FAIL(mtiart_stream_end_conditional(s));
    FAIL(mtiart_graph_launch(child, s));
    FAIL(mtiart_memcpy_async(s, host, y, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    FAIL(mtiart_free(tmp));
    FAIL(mtiart_free(flag));
    mtiart_graph captured;
    FAIL(mtiart_stream_end_capture(s, &captured));
    mtiart_graph_binding bindings[4] = {
        {"x", x, N * sizeof(float), MTIART_BINDING_INPUT, 0},
        {"y", y, N * sizeof(float), MTIART_BINDING_OUTPUT, 0},
        {"w", w, N * sizeof(float), MTIART_BINDING_CONSTANT, 0},
        {"host", host, sizeof host, MTIART_BINDING_OUTPUT, 0},
    };
    add_seed(captured, bindings, 4);

    mtiart_graph built;
    mtiart_event e;
    size_t r, k;
    FAIL(mtiart_event_create(0, &e));
    FAIL(mtiart_graph_create(0, &built));
    FAIL(mtiart_graph_add_event_record_node(built, NULL, 0, e, &r));
    uint64_t value = 7;
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_IN, 0, x, N * sizeof(float)},
                          {MTIART_ARG_VALUE, sizeof value, &value, 0}};
    union {
        void (*fn)(void);
        mtiart_kernel_fn kernel;
    } exported = {.fn = mtiart_clear_last_error};
    FAIL(mtiart_graph_add_kernel_node(built, &r, 1, exported.kernel, 2, args, 2, &k));
    FAIL(mtiart_graph_add_event_wait_node(built, &k, 1, e, &node));
    FAIL(mtiart_graph_add_child_graph_node(built, &node, 1, child_graph, &node));
    add_seed(built, bindings, 2);
    builtin_seed(s);

    FAIL(mtiart_graph_destroy(built));
    FAIL(mtiart_graph_destroy(captured));
    FAIL(mtiart_graph_exec_destroy(child));
    FAIL(mtiart_graph_destroy(child_graph));
    FAIL(mtiart_event_destroy(e));
    FAIL(mtiart_free(x));
    FAIL(mtiart_free(y));
    FAIL(mtiart_free(w));
    FAIL(mtiart_stream_destroy(s));
}

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const uint64_t interesting[] = {0,          1,
                                       2,          3,
                                       4,          7,
                                       8,          63,
                                       64,         65,
                                       80,         255,
                                       4096,       4097,
                                       0x7fff,     0xffff,
                                       0x10000,    0x7fffffff,
                                       0x80000000, 0x80000001,
                                       0xffffffff, 1ull << 32,
                                       1ull << 48, 1ull << 63,
                                       UINT64_MAX, UINT64_MAX - 7};

static void put(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A mutated copy of a seed into buf (capacity cap); returns its size. */
static size_t mutate(uint8_t *buf, size_t cap) {
    const seed *s = &seeds[rng() % (uint64_t)num_seeds];
    size_t size = s->size < cap ? s->size : cap;
    memcpy(buf, s->data, size);
    int edits = 1 + (int)(rng() % 6);
    for (int i = 0; i < edits && size; i++) {
        /* The first 64 + 10 * 24 bytes hold the header and section table: every offset. */
        size_t at =
            rng() % 4 ? (size_t)(rng() % size) : (size_t)(rng() % (size < 304 ? size : 304));
        switch (rng() % 6) {
        case 0: buf[at] ^= (uint8_t)(1u << (rng() % 8)); break;
        case 1: buf[at] = (uint8_t)rng(); break;
        case 2:
            at &= ~(size_t)3;
            if (at + 4 <= size) put(buf + at, interesting[rng() % (sizeof interesting / 8)], 4);
            break;
        case 3:
            at &= ~(size_t)7;
            if (at + 8 <= size) put(buf + at, interesting[rng() % (sizeof interesting / 8)], 8);
            break;
        case 4: size = at; break; /* truncate */
        default:
            if (size + 64 <= cap) {
                for (int k = 0; k < 64; k++) buf[size + k] = (uint8_t)rng();
                size += 64;
            }
            break;
        }
    }
    if (size >= 32 && rng() % 4) put(buf + 24, size, 8); /* past the size check */
    return size;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t live_blocks(void) {
    mtiart_memory_stats st;
    FAIL(mtiart_memory_get_stats(0, &st));
    return st.active_blocks;
}

int main(int argc, char **argv) {
    uint64_t seed = (uint64_t)time(NULL), runs = 0;
    double max_time = 0;
    const char *write_seeds = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-runs") && i + 1 < argc) runs = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-max_total_time") && i + 1 < argc) max_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "-write_seeds") && i + 1 < argc) write_seeds = argv[++i];
        else if (argv[i][0] != '-') {
            /* Reproduce: each file is one input. */
            FILE *f = fopen(argv[i], "rb");
            if (!f) return 2;
            static uint8_t buf[1 << 20];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
            printf("fuzz_graph_file: %s ok\n", argv[i]);
            if (i + 1 == argc) return 0;
        } else {
            fprintf(stderr, "usage: fuzz_graph_file [-seed N] [-runs N] [-max_total_time S] "
                            "[-write_seeds DIR] [FILE...]\n");
            return 2;
        }
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fuzz_graph_file.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) return 2;
    make_seeds();
    rmdir(dir);
    if (write_seeds) {
        for (int i = 0; i < num_seeds; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/seed%d.mtg", write_seeds, i);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(seeds[i].data, 1, seeds[i].size, f) != seeds[i].size) return 2;
            fclose(f);
        }
        return 0;
    }
    for (int i = 0; i < num_seeds; i++) { /* the seeds themselves load */
        mtiart_load_options only_loaded = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
        mtiart_graph g;
        FAIL(mtiart_graph_load_memory(seeds[i].data, seeds[i].size, 0, &only_loaded, &g));
        FAIL(mtiart_graph_destroy(g));
    }
    if (!runs && !max_time) runs = 10000;
    uint64_t baseline = live_blocks(), loaded = 0, run = 0;
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    if (!buf) return 2;
    rng_state = seed;
    printf("fuzz_graph_file: seed %llu\n", (unsigned long long)seed);
    fflush(stdout);
    double start = now_s();
    for (; (!runs || run < runs) && (!max_time || now_s() - start < max_time); run++) {
        size_t size = mutate(buf, cap);
        mtiart_load_options only_loaded = {MTIART_LOAD_RESTRICT_LIBRARIES, 0, NULL};
        mtiart_graph g;
        if (mtiart_graph_load_memory(buf, size, 0, &only_loaded, &g) == MTIART_SUCCESS) {
            loaded++;
            mtiart_graph_destroy(g);
        }
        LLVMFuzzerTestOneInput(buf, size);
        if (live_blocks() != baseline) {
            fprintf(stderr, "fuzz_graph_file: seed %llu run %llu left device blocks behind\n",
                    (unsigned long long)seed, (unsigned long long)run);
            return 1;
        }
    }
    printf("fuzz_graph_file: %llu inputs (%llu loaded, %llu replayed) in %.1f s, no failure\n",
           (unsigned long long)run, (unsigned long long)loaded, (unsigned long long)launched,
           now_s() - start);
    free(buf);
    for (int i = 0; i < num_seeds; i++) free(seeds[i].data);
    return 0;
}
#endif
