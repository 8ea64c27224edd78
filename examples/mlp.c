/*
 * mlp.c - the demo's model in C, on libmtiart's kernel library.
 *
 * softmax(gelu(x @ W1 + b1) @ W2 + b2) over static device tensors: captured once into a
 * graph, replayed on new inputs copied into the static input, and checked against a
 * plain C reference. Prints eager and replay time per step.
 *
 *     cc mlp.c $(pkg-config --cflags --libs mtiart) -lm -o mlp && ./mlp
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mtiart.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        mtiart_status check_status_ = (call);                                                      \
        if (check_status_ != MTIART_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,               \
                    mtiart_status_name(check_status_), mtiart_last_error_message());               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

enum { BATCH = 16, FEATURES = 64, HIDDEN = 128, CLASSES = 10, STEPS = 500 };

/* A float32 device tensor of up to two dimensions. */
static mtiart_tensor_desc tensor(mtiart_stream s, int64_t rows, int64_t cols) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.dtype = MTIART_DTYPE_FLOAT32;
    t.ndim = rows ? 2 : 1;
    t.shape[0] = rows ? rows : cols;
    t.shape[1] = cols;
    CHECK(
        mtiart_malloc_async(s, (size_t)(rows ? rows : 1) * (size_t)cols * sizeof(float), &t.data));
    return t;
}

static size_t numel(const mtiart_tensor_desc *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static void upload(mtiart_stream s, mtiart_tensor_desc *t, const float *host) {
    CHECK(mtiart_memcpy(s, t->data, host, numel(t) * sizeof(float), MTIART_MEMCPY_HOST_TO_DEVICE));
}

typedef struct model {
    mtiart_tensor_desc w1, b1, w2, b2, h, logits;
} model;

/* The step: every op is enqueued on `s`, so under capture it is recorded. */
static void step(mtiart_stream s, const model *m, const mtiart_tensor_desc *x,
                 const mtiart_tensor_desc *out) {
    CHECK(mtiart_op_matmul(s, &m->h, x, &m->w1));
    CHECK(mtiart_op_binary(s, MTIART_BINARY_ADD, &m->h, &m->h, &m->b1));
    CHECK(mtiart_op_unary(s, MTIART_UNARY_GELU, &m->h, &m->h));
    CHECK(mtiart_op_matmul(s, &m->logits, &m->h, &m->w2));
    CHECK(mtiart_op_binary(s, MTIART_BINARY_ADD, &m->logits, &m->logits, &m->b2));
    CHECK(mtiart_op_softmax(s, out, &m->logits, 1));
}

static void reference(const float *x, const float *w1, const float *b1, const float *w2,
                      const float *b2, double *out) {
    for (int r = 0; r < BATCH; r++) {
        double h[HIDDEN], logits[CLASSES], max = -INFINITY, sum = 0;
        for (int j = 0; j < HIDDEN; j++) {
            double v = b1[j];
            for (int k = 0; k < FEATURES; k++)
                v += (double)x[r * FEATURES + k] * w1[k * HIDDEN + j];
            h[j] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        }
        for (int c = 0; c < CLASSES; c++) {
            double v = b2[c];
            for (int j = 0; j < HIDDEN; j++) v += h[j] * w2[j * CLASSES + c];
            logits[c] = v;
            if (v > max) max = v;
        }
        for (int c = 0; c < CLASSES; c++) sum += exp(logits[c] - max);
        for (int c = 0; c < CLASSES; c++) out[r * CLASSES + c] = exp(logits[c] - max) / sum;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float frand(void) { return (float)rand() / (float)RAND_MAX - 0.5f; }

int main(void) {
    mtiart_stream s;
    CHECK(mtiart_stream_create(0, 0, &s));
    static float w1[FEATURES * HIDDEN], b1[HIDDEN], w2[HIDDEN * CLASSES], b2[CLASSES];
    static float x_host[BATCH * FEATURES], out_host[BATCH * CLASSES];
    static double expected[BATCH * CLASSES];
    srand(1);
    for (size_t i = 0; i < sizeof w1 / sizeof *w1; i++) w1[i] = frand() / 4;
    for (size_t i = 0; i < sizeof w2 / sizeof *w2; i++) w2[i] = frand() / 4;
    for (int i = 0; i < HIDDEN; i++) b1[i] = frand() / 10;
    for (int i = 0; i < CLASSES; i++) b2[i] = frand() / 10;

    model m = {tensor(s, FEATURES, HIDDEN), tensor(s, 0, HIDDEN),     tensor(s, HIDDEN, CLASSES),
               tensor(s, 0, CLASSES),       tensor(s, BATCH, HIDDEN), tensor(s, BATCH, CLASSES)};
    upload(s, &m.w1, w1);
    upload(s, &m.b1, b1);
    upload(s, &m.w2, w2);
    upload(s, &m.b2, b2);
    mtiart_tensor_desc x = tensor(s, BATCH, FEATURES), out = tensor(s, BATCH, CLASSES);

    /* Capture the step once, into a private pool. */
    mtiart_graph graph;
    mtiart_graph_exec exec;
    mtiart_pool_id new_pool = {0, 0};
    CHECK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, new_pool));
    step(s, &m, &x, &out);
    CHECK(mtiart_stream_end_capture(s, &graph));
    CHECK(mtiart_graph_instantiate(graph, &exec));
    size_t nodes;
    CHECK(mtiart_graph_get_node_count(graph, &nodes));
    CHECK(mtiart_graph_destroy(graph));
    printf("captured %zu nodes\n", nodes);

    /* Replay on new inputs and check each against the reference. */
    double worst = 0;
    for (int trial = 0; trial < 5; trial++) {
        for (size_t i = 0; i < sizeof x_host / sizeof *x_host; i++) x_host[i] = frand() * 2;
        CHECK(mtiart_memcpy_async(s, x.data, x_host, sizeof x_host, MTIART_MEMCPY_HOST_TO_DEVICE));
        CHECK(mtiart_graph_launch(exec, s));
        CHECK(mtiart_memcpy(s, out_host, out.data, sizeof out_host, MTIART_MEMCPY_DEVICE_TO_HOST));
        reference(x_host, w1, b1, w2, b2, expected);
        for (int i = 0; i < BATCH * CLASSES; i++) {
            double err = fabs(out_host[i] - expected[i]);
            if (err > worst) worst = err;
        }
    }
    printf("max |error| vs reference over 5 inputs: %.2e (%s)\n", worst,
           worst < 1e-5 ? "OK" : "MISMATCH");

    double t0 = now();
    for (int i = 0; i < STEPS; i++) step(s, &m, &x, &out);
    CHECK(mtiart_stream_synchronize(s));
    double eager = (now() - t0) / STEPS;
    t0 = now();
    for (int i = 0; i < STEPS; i++) CHECK(mtiart_graph_launch(exec, s));
    CHECK(mtiart_stream_synchronize(s));
    double replay = (now() - t0) / STEPS;
    printf("eager %.1f us/step, replay %.1f us/step, speedup %.2fx\n", eager * 1e6, replay * 1e6,
           eager / replay);

    CHECK(mtiart_graph_exec_destroy(exec));
    mtiart_tensor_desc *all[] = {&m.w1, &m.b1, &m.w2, &m.b2, &m.h, &m.logits, &x, &out};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) CHECK(mtiart_free(all[i]->data));
    CHECK(mtiart_stream_destroy(s));
    return worst < 1e-5 ? 0 : 1;
}
