/* Fusion of nodes at instantiation (internal interfaces too, so this program links the
 * library's objects): a matmul and the elementwise chain after it run as one launch whose
 * every output is bitwise what the unfused executable writes; what must not fuse (hazards,
 * other dtypes, broken chains) does not; flags and MTIART_GRAPH_FUSION are validated. */
#include "internal.h"
#include "kernels/kernels.h"
#include "test_util.h"

#include <string.h>

static mtiart_stream s;

/* ------------------------------------------------------------------ tensors */

#define MAX_T 24
typedef struct tens {
    mtiart_tensor_desc d;
    size_t bytes;
} tens;

static tens pool[MAX_T];
static int ntens;

static uint32_t rng_state = 12345;
static float rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static mtiart_tensor_desc *make(int32_t dtype, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    tens *t = &pool[ntens++];
    memset(t, 0, sizeof *t);
    t->d.dtype = dtype;
    t->d.ndim = ndim;
    int64_t dims[3] = {d0, d1, d2};
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(t->d.shape[i] = dims[i]);
    size_t es = mtiart_dtype_size(dtype);
    t->bytes = n * es;
    CHECK_OK(mtiart_malloc(0, t->bytes, &t->d.data));
    void *host = malloc(t->bytes);
    for (size_t i = 0; i < n; i++) {
        if (dtype == MTIART_DTYPE_FLOAT32) ((float *)host)[i] = rnd();
        else if (dtype == MTIART_DTYPE_FLOAT64) ((double *)host)[i] = rnd();
        else memset((char *)host + i * es, 0, es);
    }
    CHECK_OK(mtiart_memcpy(s, t->d.data, host, t->bytes, MTIART_MEMCPY_HOST_TO_DEVICE));
    free(host);
    return &t->d;
}
#define F2(r, c) make(MTIART_DTYPE_FLOAT32, 2, (r), (c), 0)
#define F1(n) make(MTIART_DTYPE_FLOAT32, 1, (n), 0, 0)

static void free_all(void) {
    for (int i = 0; i < ntens; i++) CHECK_OK(mtiart_free(pool[i].d.data));
    ntens = 0;
}

/* Every tensor's bytes, after reseeding every input the same way (inputs: pool[0..ninputs)). */
static void reset_inputs(int ninputs, uint32_t seed) {
    rng_state = seed;
    for (int i = 0; i < ntens; i++) {
        tens *t = &pool[i];
        size_t n = t->bytes / mtiart_dtype_size(t->d.dtype);
        void *host = malloc(t->bytes);
        for (size_t k = 0; k < n; k++) {
            if (t->d.dtype == MTIART_DTYPE_FLOAT64) ((double *)host)[k] = i < ninputs ? rnd() : 7;
            else if (t->d.dtype == MTIART_DTYPE_FLOAT32)
                ((float *)host)[k] = i < ninputs ? rnd() : 7;
            else memset((char *)host + k, 0, 1);
        }
        CHECK_OK(mtiart_memcpy(s, t->d.data, host, t->bytes, MTIART_MEMCPY_HOST_TO_DEVICE));
        free(host);
    }
}

static unsigned char *snapshot(void) {
    size_t total = 0;
    for (int i = 0; i < ntens; i++) total += pool[i].bytes;
    unsigned char *all = malloc(total), *p = all;
    for (int i = 0; i < ntens; i++) {
        CHECK_OK(mtiart_memcpy(s, p, pool[i].d.data, pool[i].bytes, MTIART_MEMCPY_DEVICE_TO_HOST));
        p += pool[i].bytes;
    }
    return all;
}

static size_t total_bytes(void) {
    size_t total = 0;
    for (int i = 0; i < ntens; i++) total += pool[i].bytes;
    return total;
}

/* ------------------------------------------------------------------ the check */

typedef void (*build_fn)(mtiart_stream cs);

/* What the fusion pass leaves of a captured graph (without child graphs): its node count
 * and the description of its first kernel node. */
static size_t plan_of(mtiart_graph graph, char *first, size_t cap) {
    mt_pin pin = {NULL};
    mt_graph *g = mt_handle_pin(MT_HANDLE_VALUE(graph), MT_KIND_GRAPH, &pin);
    const mt_dag *d = g->dag;
    mt_fuse_node *view = malloc((d->num_nodes ? d->num_nodes : 1) * sizeof *view);
    for (size_t i = 0; i < d->num_nodes; i++)
        view[i] = (mt_fuse_node){&d->nodes[i].op, d->nodes[i].deps, d->nodes[i].num_deps, 0};
    mt_fusion f;
    CHECK_OK(mt_fuse_plan(view, (uint32_t)d->num_nodes, &f));
    size_t count = f.num_groups ? f.m : d->num_nodes;
    first[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const mt_op *op = f.num_groups ? f.nodes[i].op : &d->nodes[i].op;
        if (op->type == MT_OP_KERNEL) {
            mt_kernel_describe(op->fn.kernel, mt_op_blob((mt_op *)op), first, cap);
            break;
        }
    }
    if (f.num_groups) {
        /* every node is done by one node left, and each node left is one of the graph's */
        for (size_t i = 0; i < d->num_nodes; i++) CHECK(f.left[i] < f.m);
        for (size_t i = 0; i < f.m; i++) {
            CHECK(f.kept[i] < d->num_nodes && f.left[f.kept[i]] == i);
            for (uint32_t k = 0; k < f.nodes[i].num_deps; k++) CHECK(f.nodes[i].deps[k] < i);
        }
    }
    mt_fusion_free(&f);
    free(view);
    mt_pin_release(&pin);
    return count;
}

/* Capture `build` (ninputs tensors first are its inputs), then compare every tensor after
 * replays of the fused and the unfused executable from the same inputs; the fused plan
 * must have `want_nodes` nodes and, if given, its first kernel node described as `want`. */
static void check_case(const char *name, build_fn build, int ninputs, size_t want_nodes,
                       const char *want) {
    mtiart_stream cs;
    CHECK_OK(mtiart_stream_create(0, 0, &cs));
    CHECK_OK(mtiart_stream_synchronize(s));
    mtiart_pool_id pid = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(cs, MTIART_CAPTURE_MODE_GLOBAL, pid));
    build(cs);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(cs, &g));
    char first[160];
    size_t nodes = plan_of(g, first, sizeof first);
    if (nodes != want_nodes || (want && strcmp(first, want) != 0))
        fprintf(stderr, "%s: plan of %zu nodes, first '%s' (expected %zu, '%s')\n", name, nodes,
                first, want_nodes, want ? want : "");
    CHECK(nodes == want_nodes);
    CHECK(!want || strcmp(first, want) == 0);
    mtiart_graph_exec fused, plain;
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_FUSION, &fused));
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_NO_FUSION, &plain));
    size_t count;
    CHECK_OK(mtiart_graph_exec_get_node_count(fused, &count));
    size_t graph_count;
    CHECK_OK(mtiart_graph_get_node_count(g, &graph_count));
    CHECK(count == graph_count); /* the graph's nodes, fused or not */
    for (uint32_t seed = 1; seed <= 2; seed++) {
        reset_inputs(ninputs, seed);
        CHECK_OK(mtiart_graph_launch(plain, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        unsigned char *want_bytes = snapshot();
        reset_inputs(ninputs, seed);
        CHECK_OK(mtiart_graph_launch(fused, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        unsigned char *got = snapshot();
        int same = memcmp(got, want_bytes, total_bytes()) == 0;
        if (!same) fprintf(stderr, "%s: fused results differ from unfused ones\n", name);
        CHECK(same);
        free(got);
        free(want_bytes);
    }
    CHECK_OK(mtiart_graph_exec_destroy(fused));
    CHECK_OK(mtiart_graph_exec_destroy(plain));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(cs));
    free_all();
}

/* ------------------------------------------------------------------ cases */

static mtiart_tensor_desc *T[MAX_T];

/* The MLP step: relu(x @ w1 + b1) @ w2 + b2, softmax. Inputs x w1 b1 w2 b2. */
static void prepare_mlp(int64_t m, int64_t in, int64_t hid, int64_t out) {
    T[0] = F2(m, in), T[1] = F2(in, hid), T[2] = F1(hid), T[3] = F2(hid, out), T[4] = F1(out);
    T[5] = F2(m, hid), T[6] = F2(m, hid), T[7] = F2(m, hid), T[8] = F2(m, out), T[9] = F2(m, out),
    T[10] = F2(m, out);
}
static void build_mlp(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[5], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[6], T[5], T[2]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, T[7], T[6]));
    CHECK_OK(mtiart_op_matmul(cs, T[8], T[7], T[3]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[9], T[8], T[4]));
    CHECK_OK(mtiart_op_softmax(cs, T[10], T[9], -1));
}

/* In place, bias first, scalar ops both ways, a same-shaped operand (an earlier output)
 * on either side, transcendentals. Inputs a b bias r. */
static void prepare_mixed(int64_t m, int64_t k, int64_t n) {
    T[0] = F2(m, k), T[1] = F2(k, n), T[2] = F1(n), T[3] = F2(m, n);
    T[4] = F2(m, n), T[5] = F2(m, n), T[6] = F2(m, n), T[7] = F2(m, n);
}
static void build_mixed(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[4], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[4], T[2], T[4])); /* bias + C, in place */
    CHECK_OK(mtiart_op_binary_scalar(cs, MTIART_BINARY_MUL, T[5], T[4], 0.5, 0, 0));
    CHECK_OK(mtiart_op_binary_scalar(cs, MTIART_BINARY_SUB, T[5], T[5], 2.0, 0, 1)); /* 2 - x */
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_SUB, T[6], T[3], T[5]));             /* r - x */
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_GELU, T[6], T[6]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_DIV, T[7], T[6], T[4])); /* earlier output */
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_TANH, T[7], T[7]));
}

/* A softmax in the middle, more steps after it, in place. */
static void prepare_softmax_mid(int64_t m, int64_t k, int64_t n) {
    T[0] = F2(m, k), T[1] = F2(k, n), T[2] = F1(n), T[3] = F2(m, n), T[4] = F2(m, n);
}
static void build_softmax_mid(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[3], T[0], T[1]));
    CHECK_OK(mtiart_op_softmax(cs, T[4], T[3], 1));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_LOG, T[4], T[4]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_MAXIMUM, T[4], T[4], T[2]));
}

/* A batched matmul with a bias over the last dim. Inputs a b bias. */
static void prepare_batched(void) {
    T[0] = make(MTIART_DTYPE_FLOAT32, 3, 3, 20, 40),
    T[1] = make(MTIART_DTYPE_FLOAT32, 3, 3, 40, 50);
    T[2] = F1(50), T[3] = make(MTIART_DTYPE_FLOAT32, 3, 3, 20, 50);
    T[4] = make(MTIART_DTYPE_FLOAT32, 3, 3, 20, 50);
}
static void build_batched(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[3], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[4], T[3], T[2]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_SIGMOID, T[4], T[4]));
}

/* Hazards: the epilogue would write A (other tiles still read it): not fused. */
static void prepare_writes_a(void) { T[0] = F2(40, 40), T[1] = F2(40, 40), T[2] = F2(40, 40); }
static void build_writes_a(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[2], T[0], T[1]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, T[0], T[2]));
}

/* ... or add a row that the product writes (C's first row): a tile would read it before
 * the tile computing it is done. Not fused. */
static void prepare_writes_row(void) {
    T[0] = F2(80, 24), T[1] = F2(24, 64), T[2] = F2(80, 64), T[3] = F2(80, 64);
}
static void build_writes_row(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[2], T[0], T[1]));
    mtiart_tensor_desc row = *T[2];
    row.ndim = 1;
    row.shape[0] = 64;
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[3], T[2], &row));
}

/* A chain broken by a second dependency (an event join), a comparison (bool out) and a
 * float64 product: only what may fuse does. */
static void prepare_breaks(void) {
    T[0] = F2(8, 8), T[1] = F2(8, 8), T[2] = F2(8, 8), T[3] = make(MTIART_DTYPE_BOOL, 2, 8, 8, 0);
    T[4] = make(MTIART_DTYPE_FLOAT64, 2, 8, 8, 0), T[5] = make(MTIART_DTYPE_FLOAT64, 2, 8, 8, 0);
    T[6] = make(MTIART_DTYPE_FLOAT64, 2, 8, 8, 0);
}
static void build_breaks(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[2], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_GT, T[3], T[2], T[2]));
    CHECK_OK(mtiart_op_matmul(cs, T[6], T[4], T[5]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, T[6], T[6]));
}

static void test_cases(void) {
    const int64_t shapes[][4] = {{32, 256, 512, 256},
                                 {7, 33, 70, 5},
                                 {65, 300, 100, 40},
                                 {64, 600, 64, 96},
                                 {1, 16, 16, 16}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        prepare_mlp(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
        char want[96];
        snprintf(want, sizeof want, "matmul %lldx%lld @ %lldx%lld + add + relu",
                 (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][1],
                 (long long)shapes[i][2]);
        check_case("mlp", build_mlp, 5, 2, want);
    }
    prepare_mixed(30, 50, 70);
    check_case("mixed", build_mixed, 4, 1,
               "matmul 30x50 @ 50x70 + add + mul scalar + sub scalar + sub + gelu + div + tanh");
    prepare_mixed(100, 20, 33); /* more rows than the direct kernels take */
    check_case("mixed, tall", build_mixed, 4, 1, NULL);
    prepare_softmax_mid(45, 60, 90);
    check_case("softmax in the middle", build_softmax_mid, 3, 1,
               "matmul 45x60 @ 60x90 + softmax + log + maximum");
    prepare_batched();
    check_case("batched", build_batched, 3, 1, "matmul 3x20x40 @ 3x40x50 + add + sigmoid");
    prepare_writes_a();
    check_case("writes A", build_writes_a, 2, 2, "matmul 40x40 @ 40x40");
    prepare_writes_row();
    check_case("writes the row", build_writes_row, 2, 2, "matmul 80x24 @ 24x64");
    prepare_breaks();
    check_case("breaks", build_breaks, 2, 4, "matmul 8x8 @ 8x8");
}

/* A fork/join in the middle of a chain: the join node has two dependencies, so the chain
 * ends before it. */
static void test_join_ends_a_chain(void) {
    T[0] = F2(16, 16), T[1] = F2(16, 16), T[2] = F2(16, 16), T[3] = F2(16, 16);
    mtiart_stream cs, side;
    CHECK_OK(mtiart_stream_create(0, 0, &cs));
    CHECK_OK(mtiart_stream_create(0, 0, &side));
    mtiart_event fork, join;
    CHECK_OK(mtiart_event_create(0, &fork));
    CHECK_OK(mtiart_event_create(0, &join));
    CHECK_OK(mtiart_stream_synchronize(s));
    mtiart_pool_id pid = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(cs, MTIART_CAPTURE_MODE_GLOBAL, pid));
    CHECK_OK(mtiart_op_matmul(cs, T[2], T[0], T[1]));
    CHECK_OK(mtiart_event_record(fork, cs));
    CHECK_OK(mtiart_stream_wait_event(side, fork));
    CHECK_OK(mtiart_op_unary(side, MTIART_UNARY_NEG, T[3], T[0]));
    CHECK_OK(mtiart_event_record(join, side));
    CHECK_OK(mtiart_stream_wait_event(cs, join));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, T[2], T[2]));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(cs, &g));
    char first[160];
    size_t graph_nodes;
    CHECK_OK(mtiart_graph_get_node_count(g, &graph_nodes));
    CHECK(plan_of(g, first, sizeof first) == graph_nodes); /* nothing fused */
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(join));
    CHECK_OK(mtiart_stream_destroy(side));
    CHECK_OK(mtiart_stream_destroy(cs));
    free_all();
}

/* ------------------------------------------------------------------ structure and updates */

static size_t exec_plan_nodes(mtiart_graph_exec exec) {
    mt_pin pin = {NULL};
    mt_exec *x = mt_handle_pin(MT_HANDLE_VALUE(exec), MT_KIND_EXEC, &pin);
    size_t n = mt_exec_plan_nodes(x);
    mt_pin_release(&pin);
    return n;
}

static mtiart_graph capture(build_fn build) {
    mtiart_stream cs;
    CHECK_OK(mtiart_stream_create(0, 0, &cs));
    CHECK_OK(mtiart_stream_synchronize(s));
    mtiart_pool_id pid = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(cs, MTIART_CAPTURE_MODE_GLOBAL, pid));
    build(cs);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(cs, &g));
    CHECK_OK(mtiart_stream_destroy(cs));
    return g;
}

/* Replay both executables from the same inputs: every tensor bitwise the same. */
static void check_same(mtiart_graph_exec fused, mtiart_graph_exec plain, int ninputs) {
    reset_inputs(ninputs, 9);
    CHECK_OK(mtiart_graph_launch(plain, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    unsigned char *want = snapshot();
    reset_inputs(ninputs, 9);
    CHECK_OK(mtiart_graph_launch(fused, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    unsigned char *got = snapshot();
    CHECK(memcmp(got, want, total_bytes()) == 0);
    free(got);
    free(want);
}

/* The arguments of a kernel-library node: its parameter struct, then its buffers. */
static uint32_t node_args(mtiart_graph graph, size_t node, mtiart_arg *args) {
    mt_pin pin = {NULL};
    mt_graph *g = mt_handle_pin(MT_HANDLE_VALUE(graph), MT_KIND_GRAPH, &pin);
    mt_node *n = &g->dag->nodes[node];
    void *argv[MT_MAX_ARGS];
    uint32_t count = mt_blob_argv(mt_op_blob(&n->op), argv);
    CHECK(count >= 2 && n->num_buffers == count - 1);
    args[0] =
        (mtiart_arg){MTIART_ARG_VALUE, (uint32_t)((char *)argv[1] - (char *)argv[0]), argv[0], 0};
    for (uint32_t i = 1; i < count; i++)
        args[i] = (mtiart_arg){n->buffers[i - 1].access, 0,
                               (const void *)(uintptr_t)n->buffers[i - 1].address,
                               n->buffers[i - 1].bytes};
    mt_pin_release(&pin);
    return count;
}

/* Inputs x w bias bias2; c out. The bias and the output vary. */
static mtiart_tensor_desc upd_bias, upd_out;
static void prepare_update(void) {
    T[0] = F2(16, 24), T[1] = F2(24, 32), T[2] = F1(32), T[3] = F1(32);
    T[4] = F2(16, 32), T[5] = F2(16, 32);
}
static void build_update(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[4], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, &upd_out, T[4], &upd_bias));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, &upd_out, &upd_out));
}

/* add into T[5], relu of it into `relu_out`. */
static mtiart_tensor_desc relu_out;
static void build_two_outputs(mtiart_stream cs) {
    CHECK_OK(mtiart_op_matmul(cs, T[4], T[0], T[1]));
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[5], T[4], T[2]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, &relu_out, T[5]));
}

/* An update whose nodes keep their arguments but whose chain would share buffers
 * differently (the relu writes C instead of a buffer of its own): refused. */
static void test_update_sharing(void) {
    prepare_update();
    T[6] = F2(16, 32);
    relu_out = *T[6];
    mtiart_graph g1 = capture(build_two_outputs);
    relu_out = *T[4];
    mtiart_graph g2 = capture(build_two_outputs);
    mtiart_graph_exec fused, plain;
    CHECK_OK(mtiart_graph_instantiate_with_flags(g1, MTIART_GRAPH_INSTANTIATE_FUSION, &fused));
    CHECK_OK(mtiart_graph_instantiate_with_flags(g1, MTIART_GRAPH_INSTANTIATE_NO_FUSION, &plain));
    CHECK(exec_plan_nodes(fused) == 1);
    mtiart_update_info info;
    CHECK_STATUS(mtiart_graph_exec_update(fused, g2, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_PARAMETERS_UNSUPPORTED && info.node == 2);
    check_same(fused, plain, 4);
    CHECK_OK(mtiart_graph_exec_destroy(fused));
    CHECK_OK(mtiart_graph_exec_destroy(plain));
    CHECK_OK(mtiart_graph_destroy(g1));
    CHECK_OK(mtiart_graph_destroy(g2));
    free_all();
}

/* An update of a fused chain makes its launch anew; one whose parameters no longer fuse is
 * refused and changes nothing; the setter does the same. */
static void test_update(void) {
    prepare_update();
    upd_bias = *T[2];
    upd_out = *T[5];
    mtiart_graph g1 = capture(build_update);
    upd_bias = *T[3];
    mtiart_graph g2 = capture(build_update);
    upd_out = *T[1]; /* B's first 16 rows: written while tiles still read B, no fusion */
    upd_out.shape[0] = 16;
    mtiart_graph g3 = capture(build_update);
    mtiart_graph_exec fused, plain;
    CHECK_OK(mtiart_graph_instantiate_with_flags(g1, MTIART_GRAPH_INSTANTIATE_FUSION, &fused));
    CHECK_OK(mtiart_graph_instantiate_with_flags(g1, MTIART_GRAPH_INSTANTIATE_NO_FUSION, &plain));
    CHECK(exec_plan_nodes(fused) == 1 && exec_plan_nodes(plain) == 3);
    check_same(fused, plain, 4);

    mtiart_update_info info;
    CHECK_OK(mtiart_graph_exec_update(fused, g2, &info));
    CHECK_OK(mtiart_graph_exec_update(plain, g2, &info));
    check_same(fused, plain, 4);

    CHECK_STATUS(mtiart_graph_exec_update(fused, g3, &info), MTIART_ERROR_INVALID_VALUE);
    CHECK(info.result == MTIART_UPDATE_PARAMETERS_UNSUPPORTED && info.node == 1);
    CHECK(strstr(mtiart_last_error_message(), "fused") != NULL);
    check_same(fused, plain, 4);                          /* still g2's */
    CHECK_OK(mtiart_graph_exec_update(plain, g3, &info)); /* unfused, anything goes */

    /* The setter on a node of the chain: g1's bias again, then C's row (refused). */
    CHECK_OK(mtiart_graph_exec_update(plain, g2, &info));
    mtiart_arg args[MT_MAX_ARGS];
    uint32_t n = node_args(g1, 1, args);
    CHECK_OK(mtiart_graph_exec_kernel_node_set_args(fused, 1, args, n));
    CHECK_OK(mtiart_graph_exec_kernel_node_set_args(plain, 1, args, n));
    check_same(fused, plain, 4);
    n = node_args(g3, 1, args);
    CHECK_STATUS(mtiart_graph_exec_kernel_node_set_args(fused, 1, args, n),
                 MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_graph_exec_kernel_node_set_args: node 1:") !=
          NULL);
    check_same(fused, plain, 4); /* still g1's bias */

    CHECK_OK(mtiart_graph_exec_destroy(fused));
    CHECK_OK(mtiart_graph_exec_destroy(plain));
    CHECK_OK(mtiart_graph_destroy(g1));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_graph_destroy(g3));
    free_all();
}

/* Child graphs: a chain inside a child fuses; one that crosses into a child does not; an
 * event record in the middle ends a chain; conditional bodies are not fused. */
static void build_head(mtiart_stream cs) { CHECK_OK(mtiart_op_matmul(cs, T[4], T[0], T[1])); }
static void build_tail(mtiart_stream cs) {
    CHECK_OK(mtiart_op_binary(cs, MTIART_BINARY_ADD, T[5], T[4], T[2]));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, T[5], T[5]));
}
static void build_whole(mtiart_stream cs) {
    build_head(cs);
    build_tail(cs);
}

static void expect_plan(mtiart_graph g, size_t fused_nodes) {
    mtiart_graph_exec fused, plain;
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_FUSION, &fused));
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, MTIART_GRAPH_INSTANTIATE_NO_FUSION, &plain));
    size_t a, b;
    CHECK_OK(mtiart_graph_exec_get_node_count(fused, &a));
    CHECK_OK(mtiart_graph_exec_get_node_count(plain, &b));
    CHECK(a == b);
    if (exec_plan_nodes(fused) != fused_nodes)
        fprintf(stderr, "plan of %zu nodes, expected %zu\n", exec_plan_nodes(fused), fused_nodes);
    CHECK(exec_plan_nodes(fused) == fused_nodes);
    check_same(fused, plain, 3);
    CHECK_OK(mtiart_graph_exec_destroy(fused));
    CHECK_OK(mtiart_graph_exec_destroy(plain));
}

static void test_structure(void) {
    prepare_update();
    mtiart_graph whole = capture(build_whole), head = capture(build_head),
                 tail = capture(build_tail);
    size_t node, root;
    /* [empty] -> child(matmul, add, relu): fused inside the child */
    mtiart_graph outer;
    CHECK_OK(mtiart_graph_create(0, &outer));
    CHECK_OK(mtiart_graph_add_empty_node(outer, NULL, 0, &root));
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, &root, 1, whole, &node));
    expect_plan(outer, 2);
    CHECK_OK(mtiart_graph_destroy(outer));
    /* matmul -> child(add, relu): the chain crosses into the child, not fused */
    CHECK_OK(mtiart_graph_create(0, &outer));
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, NULL, 0, head, &root));
    CHECK_OK(mtiart_graph_add_child_graph_node(outer, &root, 1, tail, &node));
    expect_plan(outer, 3);
    CHECK_OK(mtiart_graph_destroy(outer));

    /* matmul -> record -> add -> relu: the record ends the chain; add and relu have no
     * matmul to fuse with */
    mtiart_event ev;
    CHECK_OK(mtiart_event_create(0, &ev));
    mtiart_stream cs;
    CHECK_OK(mtiart_stream_create(0, 0, &cs));
    mtiart_pool_id pid = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(cs, MTIART_CAPTURE_MODE_GLOBAL, pid));
    build_head(cs);
    CHECK_OK(mtiart_event_record_with_flags(ev, cs, MTIART_EVENT_RECORD_EXTERNAL));
    build_tail(cs);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(cs, &g));
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK(count == 4);
    expect_plan(g, 4);
    CHECK_OK(mtiart_graph_destroy(g));

    /* IF(flag) { matmul, add, relu }: the body runs as captured */
    int32_t *flag;
    CHECK_OK(mtiart_malloc(0, sizeof *flag, (void **)&flag));
    int32_t one = 1;
    CHECK_OK(mtiart_memcpy(s, flag, &one, sizeof one, MTIART_MEMCPY_HOST_TO_DEVICE));
    CHECK_OK(mtiart_graph_create(0, &outer));
    CHECK_OK(mtiart_graph_add_conditional_node(outer, NULL, 0, MTIART_CONDITIONAL_IF, flag,
                                               sizeof *flag, whole, &node));
    expect_plan(outer, 1);
    CHECK_OK(mtiart_graph_destroy(outer));
    CHECK_OK(mtiart_free(flag));

    CHECK_OK(mtiart_stream_destroy(cs));
    CHECK_OK(mtiart_event_destroy(ev));
    CHECK_OK(mtiart_graph_destroy(whole));
    CHECK_OK(mtiart_graph_destroy(head));
    CHECK_OK(mtiart_graph_destroy(tail));
    free_all();
}

static void test_flags(void) {
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_graph_exec x;
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(g, 1u << 30, &x), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(
                     g, MTIART_GRAPH_INSTANTIATE_FUSION | MTIART_GRAPH_INSTANTIATE_NO_FUSION, &x),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_graph_instantiate_with_flags: ") != NULL);
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(g, 0, NULL), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(NULL, 0, &x), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_instantiate_with_flags(g, 0, &x));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
}

/* Child mode: initialise with the environment given; print the error or the default. */
static int init_child(void) {
    mtiart_status st = mtiart_init();
    printf("%s\n", st ? mtiart_last_error_message() : mt_graph_fusion ? "fusion" : "no fusion");
    return st ? 1 : 0;
}

static int run_child(const char *value, char *out, size_t cap) {
    char env[128];
    snprintf(env, sizeof env, "MTIART_GRAPH_FUSION=%s", value);
    return test_run_self("--init-child", env, out, cap);
}

static void test_environment(void) {
    char out[512];
    CHECK(run_child("0", out, sizeof out) == 0 && strncmp(out, "no fusion", 9) == 0);
    CHECK(run_child("1", out, sizeof out) == 0 && strncmp(out, "fusion", 6) == 0);
    CHECK(run_child("yes", out, sizeof out) == 1 && strstr(out, "MTIART_GRAPH_FUSION") != NULL);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--init-child") == 0) return init_child();
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    test_cases();
    test_join_ends_a_chain();
    test_update();
    test_update_sharing();
    test_structure();
    test_flags();
    test_environment();
    CHECK_OK(mtiart_stream_destroy(s));
    TEST_MAIN_END();
}
