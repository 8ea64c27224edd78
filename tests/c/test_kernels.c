/*
 * test_kernels.c - tests of the kernel library (mtiart_op_*) through the public API only.
 *
 * Every operation runs on device memory from mtiart_malloc on a stream of its own, and its
 * result is copied back and compared with a straightforward reference loop here. Sizes
 * include single-block and many-block launches, odd shapes and every dtype. Exits 0 on
 * success; prints every failure.
 */
#include "mtiart.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;
static int g_checks;
static mtiart_stream S;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        g_failures++;                                                                              \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
    } while (0)

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) FAIL(__VA_ARGS__);                                                            \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        mtiart_status st_ = (expr);                                                                \
        g_checks++;                                                                                \
        if (st_ != MTIART_SUCCESS)                                                                 \
            FAIL("%s -> %d (%s)", #expr, (int)st_, mtiart_last_error_message());                   \
    } while (0)

#define CHECK_INVALID(expr)                                                                        \
    do {                                                                                           \
        mtiart_status st_ = (expr);                                                                \
        g_checks++;                                                                                \
        if (st_ != MTIART_ERROR_INVALID_VALUE)                                                     \
            FAIL("%s -> %d, expected MTIART_ERROR_INVALID_VALUE", #expr, (int)st_);                \
        else if (!mtiart_last_error_message()[0]) FAIL("%s: no error message", #expr);             \
    } while (0)

static const char *dt_name(int dt) {
    static const char *n[] = {"f32", "f64", "i32", "i64", "bool"};
    return dt >= 0 && dt < 5 ? n[dt] : "?";
}

/* ---- deterministic random numbers ---------------------------------------------------------- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* ---- tensors: a host copy plus a device allocation ------------------------------------------- */

typedef struct tensor {
    mtiart_tensor_desc d;
    void *host;
    int64_t n;
    size_t es;
} tensor;

static int64_t shape_numel(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

static tensor t_new(int dt, int nd, const int64_t *shape) {
    tensor t;
    memset(&t, 0, sizeof t);
    t.d.dtype = dt;
    t.d.ndim = nd;
    for (int i = 0; i < nd; i++) t.d.shape[i] = shape[i];
    t.n = shape_numel(nd, shape);
    t.es = mtiart_dtype_size((mtiart_dtype)dt);
    t.host = calloc((size_t)(t.n ? t.n : 1), t.es);
    if (t.n > 0) {
        mtiart_status st = mtiart_malloc(0, (size_t)t.n * t.es, &t.d.data);
        if (st != MTIART_SUCCESS) {
            fprintf(stderr, "mtiart_malloc failed: %s\n", mtiart_last_error_message());
            exit(2);
        }
    }
    return t;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define T_NEW(dt, ...) t_new((dt), NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__))

static tensor t_scalar(int dt) { return t_new(dt, 0, NULL); }

static void t_free(tensor *t) {
    if (t->d.data) mtiart_free(t->d.data);
    free(t->host);
    memset(t, 0, sizeof *t);
}

static double get_f(const tensor *t, int64_t i) {
    switch (t->d.dtype) {
    case MTIART_DTYPE_FLOAT32: return ((float *)t->host)[i];
    case MTIART_DTYPE_FLOAT64: return ((double *)t->host)[i];
    case MTIART_DTYPE_INT32: return ((int32_t *)t->host)[i];
    case MTIART_DTYPE_INT64: return (double)((int64_t *)t->host)[i];
    default: return ((uint8_t *)t->host)[i];
    }
}
static int64_t get_i(const tensor *t, int64_t i) {
    switch (t->d.dtype) {
    case MTIART_DTYPE_FLOAT32: return (int64_t)((float *)t->host)[i];
    case MTIART_DTYPE_FLOAT64: return (int64_t)((double *)t->host)[i];
    case MTIART_DTYPE_INT32: return ((int32_t *)t->host)[i];
    case MTIART_DTYPE_INT64: return ((int64_t *)t->host)[i];
    default: return ((uint8_t *)t->host)[i];
    }
}
static void set_f(tensor *t, int64_t i, double v) {
    switch (t->d.dtype) {
    case MTIART_DTYPE_FLOAT32: ((float *)t->host)[i] = (float)v; break;
    case MTIART_DTYPE_FLOAT64: ((double *)t->host)[i] = v; break;
    case MTIART_DTYPE_INT32: ((int32_t *)t->host)[i] = (int32_t)v; break;
    case MTIART_DTYPE_INT64: ((int64_t *)t->host)[i] = (int64_t)v; break;
    default: ((uint8_t *)t->host)[i] = v != 0; break;
    }
}
static void set_i(tensor *t, int64_t i, int64_t v) {
    switch (t->d.dtype) {
    case MTIART_DTYPE_FLOAT32: ((float *)t->host)[i] = (float)v; break;
    case MTIART_DTYPE_FLOAT64: ((double *)t->host)[i] = (double)v; break;
    case MTIART_DTYPE_INT32: ((int32_t *)t->host)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    case MTIART_DTYPE_INT64: ((int64_t *)t->host)[i] = v; break;
    default: ((uint8_t *)t->host)[i] = v != 0; break;
    }
}
static int is_float(int dt) { return dt == MTIART_DTYPE_FLOAT32 || dt == MTIART_DTYPE_FLOAT64; }

/* Random contents: floats in [lo, hi), ints in a small range that includes 0 and negatives
 * (plus a few extreme values when `extremes`), bools 0/1. */
static void t_random(tensor *t, double lo, double hi, int extremes) {
    for (int64_t i = 0; i < t->n; i++) {
        if (is_float(t->d.dtype)) {
            set_f(t, i, lo + (hi - lo) * rnd_unit());
        } else if (t->d.dtype == MTIART_DTYPE_BOOL) {
            set_i(t, i, (int64_t)(rnd() & 1));
        } else {
            int64_t v = (int64_t)(rnd() % 41) - 20;
            if (extremes && rnd() % 16 == 0) {
                int64_t big = t->d.dtype == MTIART_DTYPE_INT32 ? INT32_MIN : INT64_MIN;
                int64_t choices[4] = {big, -(big + 1), -1, 0};
                v = choices[rnd() % 4];
            }
            set_i(t, i, v);
        }
    }
}

static void upload(tensor *t) {
    if (t->n)
        CHECK_OK(mtiart_memcpy(S, t->d.data, t->host, (size_t)t->n * t->es,
                               MTIART_MEMCPY_HOST_TO_DEVICE));
}
static void download(tensor *t) {
    CHECK_OK(mtiart_stream_synchronize(S));
    if (t->n)
        CHECK_OK(mtiart_memcpy(S, t->host, t->d.data, (size_t)t->n * t->es,
                               MTIART_MEMCPY_DEVICE_TO_HOST));
}

/* Compare one element; floats within rtol/atol (NaN matches NaN), others exactly. */
static int close_f(double got, double want, double rtol, double atol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Check t (after download) against expected values in `want` (same dtype). Reports the
 * first few mismatches. */
static int t_compare(const char *what, const tensor *t, const tensor *want, double rtol,
                     double atol) {
    int bad = 0;
    g_checks++;
    for (int64_t i = 0; i < t->n; i++) {
        int ok;
        if (is_float(t->d.dtype)) ok = close_f(get_f(t, i), get_f(want, i), rtol, atol);
        else ok = get_i(t, i) == get_i(want, i);
        if (!ok) {
            if (bad < 5) {
                if (is_float(t->d.dtype))
                    FAIL("%s [%s] element %lld: got %.9g want %.9g", what, dt_name(t->d.dtype),
                         (long long)i, get_f(t, i), get_f(want, i));
                else
                    FAIL("%s [%s] element %lld: got %lld want %lld", what, dt_name(t->d.dtype),
                         (long long)i, (long long)get_i(t, i), (long long)get_i(want, i));
            }
            bad++;
        }
    }
    if (bad > 5) fprintf(stderr, "  ... %d mismatches in total\n", bad);
    return bad == 0;
}

/* A host-only tensor for expected values. */
static tensor h_like(const tensor *t, int dt) {
    tensor h;
    memset(&h, 0, sizeof h);
    h.d = t->d;
    h.d.dtype = dt;
    h.d.data = NULL;
    h.n = t->n;
    h.es = mtiart_dtype_size((mtiart_dtype)dt);
    h.host = calloc((size_t)(h.n ? h.n : 1), h.es);
    return h;
}
static void h_free(tensor *h) { free(h->host); }

/* Flat index into `in` for out's flat index `i` under numpy broadcasting. */
static int64_t bcast_index(const mtiart_tensor_desc *out, const mtiart_tensor_desc *in, int64_t i) {
    int64_t idx = 0, stride = 1;
    for (int d = out->ndim - 1, e = in->ndim - 1; d >= 0; d--, e--) {
        int64_t od = out->shape[d];
        int64_t c = i % od;
        i /= od;
        if (e >= 0) {
            if (in->shape[e] != 1) idx += c * stride;
            stride *= in->shape[e];
        }
    }
    return idx;
}

/* ---- references ------------------------------------------------------------------------------ */

static int64_t wrap(int dt, int64_t v) {
    if (dt == MTIART_DTYPE_INT32) return (int32_t)(uint32_t)(uint64_t)v;
    if (dt == MTIART_DTYPE_BOOL) return v != 0;
    return v;
}

static int is_cmp(int op) { return op >= MTIART_BINARY_EQ; }

/* Reference of one binary element; writes into h at index i. */
static void ref_binary(int op, int dt, const tensor *a, int64_t ia, const tensor *b, int64_t ib,
                       tensor *h, int64_t i) {
    if (is_float(dt)) {
        double x = get_f(a, ia), y = get_f(b, ib), r = 0;
        int f32 = dt == MTIART_DTYPE_FLOAT32;
        switch (op) {
        case MTIART_BINARY_ADD: r = f32 ? (double)((float)x + (float)y) : x + y; break;
        case MTIART_BINARY_SUB: r = f32 ? (double)((float)x - (float)y) : x - y; break;
        case MTIART_BINARY_MUL: r = f32 ? (double)((float)x * (float)y) : x * y; break;
        case MTIART_BINARY_DIV: r = f32 ? (double)((float)x / (float)y) : x / y; break;
        case MTIART_BINARY_MAXIMUM: r = isnan(x) || isnan(y) ? NAN : (x > y ? x : y); break;
        case MTIART_BINARY_MINIMUM: r = isnan(x) || isnan(y) ? NAN : (x < y ? x : y); break;
        case MTIART_BINARY_EQ: r = x == y; break;
        case MTIART_BINARY_NE: r = x != y; break;
        case MTIART_BINARY_LT: r = x < y; break;
        case MTIART_BINARY_LE: r = x <= y; break;
        case MTIART_BINARY_GT: r = x > y; break;
        case MTIART_BINARY_GE: r = x >= y; break;
        }
        set_f(h, i, r);
        return;
    }
    int64_t x = get_i(a, ia), y = get_i(b, ib), r = 0;
    switch (op) {
    case MTIART_BINARY_ADD:
        r = dt == MTIART_DTYPE_BOOL ? (x | y) : (int64_t)((uint64_t)x + (uint64_t)y);
        break;
    case MTIART_BINARY_SUB: r = (int64_t)((uint64_t)x - (uint64_t)y); break;
    case MTIART_BINARY_MUL:
        r = dt == MTIART_DTYPE_BOOL ? (x & y) : (int64_t)((uint64_t)x * (uint64_t)y);
        break;
    case MTIART_BINARY_DIV:
        /* documented: C truncation, x / 0 == 0, MIN / -1 wraps to MIN */
        if (y == 0) r = 0;
        else if (y == -1) r = (int64_t)(0 - (uint64_t)x);
        else r = x / y;
        break;
    case MTIART_BINARY_MAXIMUM: r = x > y ? x : y; break;
    case MTIART_BINARY_MINIMUM: r = x < y ? x : y; break;
    case MTIART_BINARY_EQ: r = x == y; break;
    case MTIART_BINARY_NE: r = x != y; break;
    case MTIART_BINARY_LT: r = x < y; break;
    case MTIART_BINARY_LE: r = x <= y; break;
    case MTIART_BINARY_GT: r = x > y; break;
    case MTIART_BINARY_GE: r = x >= y; break;
    }
    set_i(h, i, is_cmp(op) ? r : wrap(dt, r));
}

static int binary_supported(int op, int dt) {
    return !(dt == MTIART_DTYPE_BOOL && (op == MTIART_BINARY_SUB || op == MTIART_BINARY_DIV));
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_dtype_size(void) {
    CHECK(mtiart_dtype_size(MTIART_DTYPE_FLOAT32) == 4, "f32 size");
    CHECK(mtiart_dtype_size(MTIART_DTYPE_FLOAT64) == 8, "f64 size");
    CHECK(mtiart_dtype_size(MTIART_DTYPE_INT32) == 4, "i32 size");
    CHECK(mtiart_dtype_size(MTIART_DTYPE_INT64) == 8, "i64 size");
    CHECK(mtiart_dtype_size(MTIART_DTYPE_BOOL) == 1, "bool size");
    CHECK(mtiart_dtype_size((mtiart_dtype)7) == 0, "unknown size");
}

/* out = a OP b for the given shapes, every op and dtype. */
static void run_binary_case(int dt, int ndo, const int64_t *so, int nda, const int64_t *sa, int ndb,
                            const int64_t *sb) {
    tensor a = t_new(dt, nda, sa), b = t_new(dt, ndb, sb);
    t_random(&a, -4, 4, 1);
    t_random(&b, -4, 4, 1);
    if (is_float(dt) && a.n > 3 && b.n > 3) { /* exercise NaN propagation and ties */
        set_f(&a, 1, NAN);
        set_f(&b, 2, NAN);
        set_f(&a, 3, get_f(&b, 3));
    }
    upload(&a);
    upload(&b);
    for (int op = 0; op <= MTIART_BINARY_GE; op++) {
        int odt = is_cmp(op) ? MTIART_DTYPE_BOOL : dt;
        tensor o = t_new(odt, ndo, so);
        if (!binary_supported(op, dt)) {
            CHECK_INVALID(mtiart_op_binary(S, (mtiart_binary_op)op, &o.d, &a.d, &b.d));
            t_free(&o);
            continue;
        }
        CHECK_OK(mtiart_op_binary(S, (mtiart_binary_op)op, &o.d, &a.d, &b.d));
        download(&o);
        tensor h = h_like(&o, odt);
        for (int64_t i = 0; i < o.n; i++)
            ref_binary(op, dt, &a, bcast_index(&o.d, &a.d, i), &b, bcast_index(&o.d, &b.d, i), &h,
                       i);
        char what[96];
        snprintf(what, sizeof what, "binary op %d out n=%lld", op, (long long)o.n);
        t_compare(what, &o, &h, 1e-6, 0);
        h_free(&h);
        t_free(&o);
    }
    t_free(&a);
    t_free(&b);
}

static void test_binary(void) {
    for (int dt = 0; dt < 5; dt++) {
        /* same shape: single block, and many blocks */
        run_binary_case(dt, 2, SHAPE(7, 13), 2, SHAPE(7, 13), 2, SHAPE(7, 13));
        run_binary_case(dt, 1, SHAPE(200003), 1, SHAPE(200003), 1, SHAPE(200003));
        /* broadcasting */
        run_binary_case(dt, 3, SHAPE(3, 4, 5), 3, SHAPE(3, 1, 5), 2, SHAPE(4, 1));
        run_binary_case(dt, 2, SHAPE(6, 5), 2, SHAPE(6, 5), 1, SHAPE(5));
        run_binary_case(dt, 2, SHAPE(6, 5), 0, SHAPE(0), 2, SHAPE(6, 5)); /* 0-d a */
        run_binary_case(dt, 2, SHAPE(6, 5), 2, SHAPE(6, 5), 1, SHAPE(1)); /* (1,) b */
        run_binary_case(dt, 2, SHAPE(2, 3), 1, SHAPE(3), 2, SHAPE(1, 3)); /* out larger */
        run_binary_case(dt, 1, SHAPE(9), 1, SHAPE(1), 0, SHAPE(0));       /* both single */
        run_binary_case(dt, 4, SHAPE(2, 1, 3, 4), 4, SHAPE(2, 1, 1, 4), 3, SHAPE(1, 3, 1));
    }
    /* many-block broadcasting: rows, columns and an outer product */
    run_binary_case(MTIART_DTYPE_FLOAT32, 2, SHAPE(1000, 301), 2, SHAPE(1000, 301), 1, SHAPE(301));
    run_binary_case(MTIART_DTYPE_FLOAT32, 2, SHAPE(1000, 301), 2, SHAPE(1000, 1), 2,
                    SHAPE(1000, 301));
    run_binary_case(MTIART_DTYPE_INT64, 2, SHAPE(517, 333), 2, SHAPE(517, 1), 1, SHAPE(333));
    run_binary_case(MTIART_DTYPE_FLOAT64, 3, SHAPE(40, 50, 60), 3, SHAPE(40, 1, 60), 2,
                    SHAPE(50, 1));
}

static void test_binary_inplace(void) {
    for (int dt = 0; dt < 4; dt++) {
        int64_t n = 100000;
        tensor a = T_NEW(dt, n), b = T_NEW(dt, n);
        t_random(&a, -3, 3, 0);
        t_random(&b, 1, 3, 0);
        upload(&a);
        upload(&b);
        tensor h = h_like(&a, dt);
        for (int64_t i = 0; i < n; i++) ref_binary(MTIART_BINARY_MUL, dt, &a, i, &b, i, &h, i);
        /* a = a * b */
        CHECK_OK(mtiart_op_binary(S, MTIART_BINARY_MUL, &a.d, &a.d, &b.d));
        download(&a);
        t_compare("in-place a *= b", &a, &h, 0, 0);
        /* b = a - b (out aliases the second operand) */
        for (int64_t i = 0; i < n; i++) ref_binary(MTIART_BINARY_SUB, dt, &a, i, &b, i, &h, i);
        CHECK_OK(mtiart_op_binary(S, MTIART_BINARY_SUB, &b.d, &a.d, &b.d));
        download(&b);
        t_compare("in-place b = a - b", &b, &h, 0, 0);
        /* a = a + a */
        for (int64_t i = 0; i < n; i++) ref_binary(MTIART_BINARY_ADD, dt, &a, i, &a, i, &h, i);
        CHECK_OK(mtiart_op_binary(S, MTIART_BINARY_ADD, &a.d, &a.d, &a.d));
        download(&a);
        t_compare("in-place a = a + a", &a, &h, 0, 0);
        h_free(&h);
        t_free(&a);
        t_free(&b);
    }
}

static void test_binary_scalar(void) {
    const double fs[] = {2.0, -0.5, 0.0};
    const int64_t is[] = {2, -3, 0};
    for (int dt = 0; dt < 5; dt++) {
        for (int big = 0; big < 2; big++) {
            int64_t n = big ? 150001 : 37;
            tensor a = T_NEW(dt, n);
            t_random(&a, -5, 5, 1);
            upload(&a);
            for (int op = 0; op <= MTIART_BINARY_GE; op++) {
                for (int sv = 0; sv < 3; sv++) {
                    for (int first = 0; first < 2; first++) {
                        int odt = is_cmp(op) ? MTIART_DTYPE_BOOL : dt;
                        tensor o = T_NEW(odt, n);
                        mtiart_status st = mtiart_op_binary_scalar(S, (mtiart_binary_op)op, &o.d,
                                                                   &a.d, fs[sv], is[sv], first);
                        if (!binary_supported(op, dt)) {
                            CHECK(st == MTIART_ERROR_INVALID_VALUE, "bool scalar op %d", op);
                            t_free(&o);
                            continue;
                        }
                        CHECK(st == MTIART_SUCCESS, "scalar op %d: %s", op,
                              mtiart_last_error_message());
                        download(&o);
                        tensor sc = h_like(&a, dt);
                        sc.n = 1;
                        if (is_float(dt)) set_f(&sc, 0, fs[sv]);
                        else set_i(&sc, 0, is[sv]);
                        tensor h = h_like(&o, odt);
                        for (int64_t i = 0; i < n; i++) {
                            if (first) ref_binary(op, dt, &sc, 0, &a, i, &h, i);
                            else ref_binary(op, dt, &a, i, &sc, 0, &h, i);
                        }
                        char what[96];
                        snprintf(what, sizeof what, "scalar op %d s=%g first=%d n=%lld", op, fs[sv],
                                 first, (long long)n);
                        t_compare(what, &o, &h, 1e-6, 0);
                        h_free(&h);
                        h_free(&sc);
                        t_free(&o);
                    }
                }
            }
            t_free(&a);
        }
    }
    /* in place: t = 2 - t, then t = t / 4 */
    tensor t = T_NEW(MTIART_DTYPE_FLOAT32, 1000);
    for (int64_t i = 0; i < t.n; i++) set_f(&t, i, (double)i);
    upload(&t);
    CHECK_OK(mtiart_op_binary_scalar(S, MTIART_BINARY_SUB, &t.d, &t.d, 2.0, 0, 1));
    CHECK_OK(mtiart_op_binary_scalar(S, MTIART_BINARY_DIV, &t.d, &t.d, 4.0, 0, 0));
    download(&t);
    int ok = 1;
    for (int64_t i = 0; i < t.n; i++) ok &= get_f(&t, i) == (2.0 - (double)i) / 4.0;
    CHECK(ok, "in-place scalar ops");
    t_free(&t);
}

static double ref_unary_f(int op, double x) {
    switch (op) {
    case MTIART_UNARY_NEG: return -x;
    case MTIART_UNARY_ABS: return fabs(x);
    case MTIART_UNARY_RELU: return x < 0 ? 0 : x;
    case MTIART_UNARY_EXP: return exp(x);
    case MTIART_UNARY_LOG: return log(x);
    case MTIART_UNARY_SQRT: return sqrt(x);
    case MTIART_UNARY_TANH: return tanh(x);
    case MTIART_UNARY_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case MTIART_UNARY_GELU_ERF: return 0.5 * x * erfc(-x / sqrt(2.0));
    default: {
        /* 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)): the same function without the
         * cancellation of 1 + tanh(u) for negative x. */
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        return x / (1.0 + exp(-2.0 * u));
    }
    }
}

static void test_unary(void) {
    for (int dt = 0; dt < 5; dt++) {
        for (int big = 0; big < 2; big++) {
            int64_t n = big ? 100003 : 301;
            tensor a = T_NEW(dt, n);
            t_random(&a, -12, 12, 1);
            if (is_float(dt)) {
                set_f(&a, 0, 0.0);
                set_f(&a, 1, 1e-6);
                set_f(&a, 2, -1e-6);
                set_f(&a, 3, 80.0);
                set_f(&a, 4, -80.0);
                set_f(&a, 5, NAN);
                set_f(&a, 6, -INFINITY);
                set_f(&a, 7, INFINITY);
            }
            upload(&a);
            for (int op = 0; op <= MTIART_UNARY_GELU_ERF; op++) {
                tensor o = T_NEW(dt, n);
                mtiart_status st = mtiart_op_unary(S, (mtiart_unary_op)op, &o.d, &a.d);
                int supported = is_float(dt) || op <= MTIART_UNARY_RELU;
                if (dt == MTIART_DTYPE_BOOL && op == MTIART_UNARY_NEG) supported = 0;
                if (!supported) {
                    CHECK(st == MTIART_ERROR_INVALID_VALUE, "unary %d on %s should fail", op,
                          dt_name(dt));
                    t_free(&o);
                    continue;
                }
                CHECK(st == MTIART_SUCCESS, "unary %d: %s", op, mtiart_last_error_message());
                download(&o);
                tensor h = h_like(&o, dt);
                for (int64_t i = 0; i < n; i++) {
                    if (is_float(dt)) {
                        double x = get_f(&a, i);
                        /* log/sqrt of negatives are NaN on both sides */
                        set_f(&h, i, ref_unary_f(op, x));
                    } else {
                        int64_t x = get_i(&a, i), r = x;
                        if (op == MTIART_UNARY_NEG) r = (int64_t)(0 - (uint64_t)x);
                        if (op == MTIART_UNARY_ABS) r = x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
                        if (op == MTIART_UNARY_RELU) r = x < 0 ? 0 : x;
                        set_i(&h, i, wrap(dt, r));
                    }
                }
                char what[64];
                snprintf(what, sizeof what, "unary op %d n=%lld", op, (long long)n);
                /* float32 sigmoid/gelu inherit float rounding of their argument */
                double rtol = dt == MTIART_DTYPE_FLOAT32 ? 1e-5 : 1e-13;
                t_compare(what, &o, &h, rtol, dt == MTIART_DTYPE_FLOAT32 ? 1e-7 : 1e-300);
                h_free(&h);
                t_free(&o);
            }
            t_free(&a);
        }
    }
    /* in place */
    tensor t = T_NEW(MTIART_DTYPE_FLOAT64, 5000);
    t_random(&t, -2, 2, 0);
    upload(&t);
    tensor h = h_like(&t, MTIART_DTYPE_FLOAT64);
    for (int64_t i = 0; i < t.n; i++) set_f(&h, i, exp(get_f(&t, i)));
    CHECK_OK(mtiart_op_unary(S, MTIART_UNARY_EXP, &t.d, &t.d));
    download(&t);
    t_compare("in-place exp", &t, &h, 1e-14, 0);
    h_free(&h);
    t_free(&t);
}

/* The exact GELU keeps its relative precision everywhere float32 has it, the left tail
 * included (where 0.5 x (1 + erf(x / sqrt 2)) cancels): a dense sweep of [-14, 14] (beyond,
 * the results are 0, inf or leave the normal range), each float32 against the double
 * reference, and the values torch gives (gelu(1) = 0.841345, not the tanh form's 0.841192). */
static void test_gelu_erf(void) {
    enum { N = 280001 };
    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, N), o = T_NEW(MTIART_DTYPE_FLOAT32, N);
    for (int64_t i = 0; i < N; i++) set_f(&a, i, -14.0 + 28.0 * (double)i / (N - 1));
    upload(&a);
    CHECK_OK(mtiart_op_unary(S, MTIART_UNARY_GELU_ERF, &o.d, &a.d));
    download(&o);
    double worst = 0;
    int64_t worst_at = 0;
    for (int64_t i = 0; i < N; i++) {
        double x = get_f(&a, i), want = 0.5 * x * erfc(-x / sqrt(2.0)), got = get_f(&o, i);
        if (fabs(want) < 1e-36) continue; /* denormal results have no relative precision */
        double err = fabs(got - want) / fabs(want);
        if (err > worst) worst = err, worst_at = i;
    }
    CHECK(worst < 2e-6, "exact gelu: relative error %.3g at x = %.9g", worst, get_f(&a, worst_at));
    t_free(&a);
    t_free(&o);

    const double xs[] = {1.0, -1.0, -5.0, 0.0, 3.0, -INFINITY, INFINITY, NAN};
    const double want[] = {0.8413447460685429, -0.15865525393145707,
                           -1.4332579e-06,     0.0,
                           2.995950450,        NAN,
                           INFINITY,           NAN};
    enum { M = sizeof xs / sizeof xs[0] };
    for (int dt = MTIART_DTYPE_FLOAT32; dt <= MTIART_DTYPE_FLOAT64; dt++) {
        tensor b = T_NEW(dt, M), r = T_NEW(dt, M);
        for (int i = 0; i < M; i++) set_f(&b, i, xs[i]);
        upload(&b);
        CHECK_OK(mtiart_op_unary(S, MTIART_UNARY_GELU_ERF, &r.d, &b.d));
        download(&r);
        for (int i = 0; i < M; i++) {
            double got = get_f(&r, i);
            int ok = isnan(want[i]) ? isnan(got)
                                    : got == want[i] || fabs(got - want[i]) <= 1e-6 * fabs(want[i]);
            CHECK(ok, "gelu (erf) %s of %g: %.9g, expected %.9g", dt_name(dt), xs[i], got, want[i]);
        }
        t_free(&b);
        t_free(&r);
    }
}

/* Reference reduction over (outer, len, inner) view. */
static void run_reduce_case(int op, int dt, int odt, int nd, const int64_t *shape, int dim,
                            int keepdim, int nan_at) {
    tensor a = t_new(dt, nd, shape);
    t_random(&a, -3, 3, 0);
    if (nan_at >= 0 && nan_at < a.n) set_f(&a, nan_at, NAN);
    upload(&a);
    int d = dim == MTIART_REDUCE_ALL ? -1 : (dim < 0 ? dim + nd : dim);
    int64_t oshape[MTIART_MAX_DIMS];
    int ond = 0;
    int64_t outer = 1, len = 1, inner = 1;
    for (int i = 0; i < nd; i++) {
        if (d < 0 || i == d) {
            if (keepdim) oshape[ond++] = 1;
            len *= d < 0 ? shape[i] : 1;
            if (i == d) len = shape[i];
        } else {
            oshape[ond++] = shape[i];
            if (i < d) outer *= shape[i];
            else inner *= shape[i];
        }
    }
    if (d < 0) {
        outer = inner = 1;
        len = a.n;
    }
    tensor o = t_new(odt, ond, oshape);
    mtiart_status st = mtiart_op_reduce(S, (mtiart_reduce_op)op, &o.d, &a.d, dim, keepdim);
    CHECK(st == MTIART_SUCCESS, "reduce op %d %s->%s dim %d: %s", op, dt_name(dt), dt_name(odt),
          dim, mtiart_last_error_message());
    download(&o);
    tensor h = h_like(&o, odt);
    for (int64_t oo = 0; oo < outer; oo++) {
        for (int64_t ii = 0; ii < inner; ii++) {
            double fs = 0, fm = 0;
            int64_t is = 0, im = 0;
            for (int64_t l = 0; l < len; l++) {
                int64_t idx = (oo * len + l) * inner + ii;
                double x = get_f(&a, idx);
                int64_t xi = get_i(&a, idx);
                fs += x;
                is = (int64_t)((uint64_t)is + (uint64_t)xi);
                if (l == 0) {
                    fm = x;
                    im = xi;
                } else if (op == MTIART_REDUCE_MAX) {
                    fm = isnan(fm) || isnan(x) ? NAN : (x > fm ? x : fm);
                    im = xi > im ? xi : im;
                } else {
                    fm = isnan(fm) || isnan(x) ? NAN : (x < fm ? x : fm);
                    im = xi < im ? xi : im;
                }
            }
            int64_t j = oo * inner + ii;
            if (is_float(dt)) {
                if (op == MTIART_REDUCE_SUM) set_f(&h, j, fs);
                else if (op == MTIART_REDUCE_MEAN) set_f(&h, j, fs / (double)len);
                else set_f(&h, j, fm);
            } else {
                if (op == MTIART_REDUCE_SUM) set_i(&h, j, wrap(odt, is));
                else if (op == MTIART_REDUCE_MEAN) set_f(&h, j, (double)is / (double)len);
                else set_i(&h, j, im);
            }
        }
    }
    char what[128];
    snprintf(what, sizeof what, "reduce op %d %s->%s n=%lld dim %d keepdim %d", op, dt_name(dt),
             dt_name(odt), (long long)a.n, dim, keepdim);
    /* float32 sums: the reference sums in double, so both sides are within ~1e-6 */
    t_compare(what, &o, &h, odt == MTIART_DTYPE_FLOAT32 ? 2e-5 : 1e-10,
              odt == MTIART_DTYPE_FLOAT32 ? 1e-4 : 1e-9);
    h_free(&h);
    t_free(&o);
    t_free(&a);
}

static void test_reduce(void) {
    const int dims[] = {MTIART_REDUCE_ALL, 0, 1, 2, -1};
    for (int op = 0; op < 4; op++) {
        for (int dt = 0; dt < 5; dt++) {
            int odts[3] = {dt, -1, -1};
            if (!is_float(dt)) {
                if (op == MTIART_REDUCE_SUM) odts[1] = MTIART_DTYPE_INT64;
                if (op == MTIART_REDUCE_MEAN) {
                    odts[0] = MTIART_DTYPE_FLOAT64;
                    odts[1] = MTIART_DTYPE_FLOAT32;
                }
            }
            for (int oi = 0; oi < 3 && odts[oi] >= 0; oi++) {
                for (int di = 0; di < 5; di++)
                    for (int kd = 0; kd < 2; kd++)
                        run_reduce_case(op, dt, odts[oi], 3, SHAPE(2, 3, 4), dims[di], kd, -1);
                /* many blocks: full reduction (split), few long rows (split), many short
                 * rows, a middle dim with wide inner extent */
                run_reduce_case(op, dt, odts[oi], 1, SHAPE(1000003), MTIART_REDUCE_ALL, 0, -1);
                run_reduce_case(op, dt, odts[oi], 2, SHAPE(3, 200001), 1, 0, -1);
                run_reduce_case(op, dt, odts[oi], 2, SHAPE(100000, 3), 1, 1, -1);
                run_reduce_case(op, dt, odts[oi], 3, SHAPE(30, 500, 200), 1, 0, -1);
                run_reduce_case(op, dt, odts[oi], 3, SHAPE(2, 40000, 5), 1, 0, -1);
                run_reduce_case(op, dt, odts[oi], 3, SHAPE(10, 30, 2000), 1, 1, -1);
                run_reduce_case(op, dt, odts[oi], 2, SHAPE(300, 3000), 0, 0, -1);
                run_reduce_case(op, dt, odts[oi], 0, SHAPE(0), MTIART_REDUCE_ALL, 0, -1);
            }
        }
    }
    /* NaN propagation in max/min/sum */
    for (int op = 0; op < 4; op++) {
        run_reduce_case(op, MTIART_DTYPE_FLOAT32, MTIART_DTYPE_FLOAT32, 1, SHAPE(500000),
                        MTIART_REDUCE_ALL, 0, 123457);
        run_reduce_case(op, MTIART_DTYPE_FLOAT64, MTIART_DTYPE_FLOAT64, 2, SHAPE(50, 60), 0, 0, 7);
    }
    /* float32 sum of many equal values stays accurate (numpy's pairwise sum gives 1e7) */
    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, 10000000);
    for (int64_t i = 0; i < a.n; i++) set_f(&a, i, 1.0);
    upload(&a);
    tensor o = t_scalar(MTIART_DTYPE_FLOAT32);
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o.d, &a.d, MTIART_REDUCE_ALL, 0));
    download(&o);
    CHECK(get_f(&o, 0) == 1e7, "sum of 1e7 ones = %.9g", get_f(&o, 0));
    t_free(&o);
    t_free(&a);
    /* empty extents: sum 0, mean NaN, max error */
    tensor e = T_NEW(MTIART_DTYPE_FLOAT32, 4, 0);
    tensor eo = T_NEW(MTIART_DTYPE_FLOAT32, 4);
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &eo.d, &e.d, 1, 0));
    download(&eo);
    CHECK(get_f(&eo, 0) == 0 && get_f(&eo, 3) == 0, "empty sum");
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_MEAN, &eo.d, &e.d, 1, 0));
    download(&eo);
    CHECK(isnan(get_f(&eo, 0)), "empty mean is NaN");
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_MAX, &eo.d, &e.d, 1, 0));
    t_free(&e);
    t_free(&eo);
}

static void test_reduce_invalid(void) {
    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, 2, 3);
    tensor o2 = T_NEW(MTIART_DTYPE_FLOAT32, 2);
    tensor o3 = T_NEW(MTIART_DTYPE_FLOAT32, 3);
    tensor s = t_scalar(MTIART_DTYPE_FLOAT32);
    tensor si = t_scalar(MTIART_DTYPE_INT64);
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o2.d, &a.d, 2, 0)); /* bad dim */
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o2.d, &a.d, -3, 0));
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o2.d, &a.d, 0, 0)); /* shape */
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o3.d, &a.d, 0, 1)); /* keepdim */
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o2.d, &a.d, MTIART_REDUCE_ALL, 0));
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &si.d, &a.d, MTIART_REDUCE_ALL, 0));
    CHECK_INVALID(mtiart_op_reduce(S, (mtiart_reduce_op)9, &s.d, &a.d, MTIART_REDUCE_ALL, 0));
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_SUM, NULL, &a.d, MTIART_REDUCE_ALL, 0));
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &o3.d, &a.d, 0, 0));
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &s.d, &a.d, MTIART_REDUCE_ALL, 0));
    tensor ai = T_NEW(MTIART_DTYPE_INT32, 2, 3), oi = T_NEW(MTIART_DTYPE_INT32, 3);
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_MEAN, &oi.d, &ai.d, 0, 0));
    tensor ob = T_NEW(MTIART_DTYPE_BOOL, 3);
    CHECK_INVALID(mtiart_op_reduce(S, MTIART_REDUCE_MAX, &ob.d, &ai.d, 0, 0));
    CHECK_OK(mtiart_stream_synchronize(S));
    t_free(&a), t_free(&o2), t_free(&o3), t_free(&s), t_free(&si), t_free(&ai), t_free(&oi);
    t_free(&ob);
}

static void run_matmul_case(int dt, int64_t batch, int64_t m, int64_t k, int64_t n) {
    int nd = batch ? 3 : 2;
    int64_t bb = batch ? batch : 1;
    tensor a = nd == 3 ? T_NEW(dt, batch, m, k) : T_NEW(dt, m, k);
    tensor b = nd == 3 ? T_NEW(dt, batch, k, n) : T_NEW(dt, k, n);
    tensor o = nd == 3 ? T_NEW(dt, batch, m, n) : T_NEW(dt, m, n);
    t_random(&a, -1, 1, 0);
    t_random(&b, -1, 1, 0);
    upload(&a);
    upload(&b);
    /* garbage in out: the kernel must overwrite, not accumulate */
    for (int64_t i = 0; i < o.n; i++) set_i(&o, i, 77);
    upload(&o);
    CHECK_OK(mtiart_op_matmul(S, &o.d, &a.d, &b.d));
    download(&o);
    tensor h = h_like(&o, dt);
    for (int64_t q = 0; q < bb; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double fs = 0;
                uint64_t is = 0;
                for (int64_t p = 0; p < k; p++) {
                    int64_t ia = (q * m + i) * k + p, ib = (q * k + p) * n + j;
                    fs += get_f(&a, ia) * get_f(&b, ib);
                    is += (uint64_t)get_i(&a, ia) * (uint64_t)get_i(&b, ib);
                }
                int64_t io = (q * m + i) * n + j;
                if (is_float(dt)) set_f(&h, io, fs);
                else set_i(&h, io, wrap(dt, (int64_t)is));
            }
    char what[96];
    snprintf(what, sizeof what, "matmul b=%lld m=%lld k=%lld n=%lld", (long long)batch,
             (long long)m, (long long)k, (long long)n);
    /* float32 accumulates in float: error grows like sqrt(k) * eps */
    double tol = dt == MTIART_DTYPE_FLOAT32 ? 1e-5 * sqrt((double)k + 1) * 4 : 1e-12;
    t_compare(what, &o, &h, tol, tol);
    h_free(&h);
    t_free(&a);
    t_free(&b);
    t_free(&o);
}

/* Row i of A @ B does not depend on the other rows of A: a product of few rows (which reads
 * B in place) gives the very bits of the same rows in a taller product (which packs B),
 * whatever the column count and with k over several cache blocks. */
static void test_matmul_rows_are_independent(void) {
    const int64_t m = 97, k = 600, n = 131;
    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, m, k), b = T_NEW(MTIART_DTYPE_FLOAT32, k, n);
    tensor o = T_NEW(MTIART_DTYPE_FLOAT32, m, n);
    t_random(&a, -1, 1, 0);
    t_random(&b, -1, 1, 0);
    upload(&a);
    upload(&b);
    CHECK_OK(mtiart_op_matmul(S, &o.d, &a.d, &b.d));
    download(&o);
    static const int64_t starts[] = {0, 5, 33}, counts[] = {64, 1, 17};
    for (int c = 0; c < 3; c++) {
        int64_t r0 = starts[c], rows = counts[c];
        mtiart_tensor_desc sa = a.d, so = o.d;
        sa.data = (float *)a.d.data + r0 * k;
        sa.shape[0] = rows;
        void *part;
        CHECK_OK(mtiart_malloc(0, (size_t)(rows * n) * 4, &part));
        so.data = part;
        so.shape[0] = rows;
        CHECK_OK(mtiart_op_matmul(S, &so, &sa, &b.d));
        float *host = malloc((size_t)(rows * n) * 4);
        CHECK_OK(
            mtiart_memcpy(S, host, part, (size_t)(rows * n) * 4, MTIART_MEMCPY_DEVICE_TO_HOST));
        int differ = memcmp(host, (float *)o.host + r0 * n, (size_t)(rows * n) * 4) != 0;
        CHECK(!differ, "matmul rows %lld..%lld alone differ from the same rows of %lld",
              (long long)r0, (long long)(r0 + rows), (long long)m);
        free(host);
        CHECK_OK(mtiart_free(part));
    }
    t_free(&a), t_free(&b), t_free(&o);
}

static void test_matmul(void) {
    test_matmul_rows_are_independent();
    for (int dt = 0; dt < 4; dt++) {
        run_matmul_case(dt, 0, 17, 33, 5);
        run_matmul_case(dt, 0, 1, 1, 1);
        run_matmul_case(dt, 0, 64, 64, 64);
        run_matmul_case(dt, 0, 100, 7, 130);
        run_matmul_case(dt, 0, 13, 300, 3);
        run_matmul_case(dt, 0, 5, 0, 6); /* k == 0: zeros */
        run_matmul_case(dt, 0, 150, 257, 190);
        run_matmul_case(dt, 3, 33, 17, 29);
        run_matmul_case(dt, 2, 70, 90, 110);
        run_matmul_case(dt, 9, 8, 8, 8);
    }
    run_matmul_case(MTIART_DTYPE_FLOAT32, 0, 259, 517, 300);
    run_matmul_case(MTIART_DTYPE_FLOAT64, 0, 203, 600, 141);
    run_matmul_case(MTIART_DTYPE_FLOAT32, 0, 2, 3000, 2100); /* wide: many column tiles */

    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, 4, 5), b = T_NEW(MTIART_DTYPE_FLOAT32, 5, 6);
    tensor o = T_NEW(MTIART_DTYPE_FLOAT32, 4, 6), bad = T_NEW(MTIART_DTYPE_FLOAT32, 6, 6);
    tensor bi = T_NEW(MTIART_DTYPE_INT32, 5, 6), v = T_NEW(MTIART_DTYPE_FLOAT32, 5);
    tensor bl = T_NEW(MTIART_DTYPE_BOOL, 4, 4);
    tensor sq = T_NEW(MTIART_DTYPE_FLOAT32, 4, 4);
    CHECK_INVALID(mtiart_op_matmul(S, &o.d, &a.d, &bad.d));  /* k mismatch */
    CHECK_INVALID(mtiart_op_matmul(S, &bad.d, &a.d, &b.d));  /* out shape */
    CHECK_INVALID(mtiart_op_matmul(S, &o.d, &a.d, &bi.d));   /* dtype */
    CHECK_INVALID(mtiart_op_matmul(S, &o.d, &a.d, &v.d));    /* 1-D */
    CHECK_INVALID(mtiart_op_matmul(S, &bl.d, &bl.d, &bl.d)); /* bool */
    CHECK_INVALID(mtiart_op_matmul(S, &sq.d, &sq.d, &sq.d)); /* out aliases inputs */
    CHECK_INVALID(mtiart_op_matmul(S, &o.d, NULL, &b.d));
    CHECK_OK(mtiart_stream_synchronize(S));
    t_free(&a), t_free(&b), t_free(&o), t_free(&bad), t_free(&bi), t_free(&v), t_free(&bl);
    t_free(&sq);
}

static void run_softmax_case(int dt, int nd, const int64_t *shape, int dim, double scale) {
    tensor a = t_new(dt, nd, shape), o = t_new(dt, nd, shape);
    t_random(&a, -scale, scale, 0);
    upload(&a);
    CHECK_OK(mtiart_op_softmax(S, &o.d, &a.d, dim));
    download(&o);
    int d = dim < 0 ? dim + nd : dim;
    int64_t outer = 1, len = shape[d], inner = 1;
    for (int i = 0; i < d; i++) outer *= shape[i];
    for (int i = d + 1; i < nd; i++) inner *= shape[i];
    tensor h = h_like(&o, dt);
    int rows_ok = 1;
    for (int64_t oo = 0; oo < outer; oo++)
        for (int64_t ii = 0; ii < inner; ii++) {
            double m = -INFINITY, s = 0, got = 0;
            for (int64_t l = 0; l < len; l++) m = fmax(m, get_f(&a, (oo * len + l) * inner + ii));
            for (int64_t l = 0; l < len; l++) s += exp(get_f(&a, (oo * len + l) * inner + ii) - m);
            for (int64_t l = 0; l < len; l++) {
                int64_t idx = (oo * len + l) * inner + ii;
                set_f(&h, idx, exp(get_f(&a, idx) - m) / s);
                got += get_f(&o, idx);
            }
            if (fabs(got - 1.0) > 1e-4) rows_ok = 0;
        }
    CHECK(rows_ok, "softmax rows sum to 1 (%s, dim %d)", dt_name(dt), dim);
    char what[64];
    snprintf(what, sizeof what, "softmax dim %d scale %g", dim, scale);
    t_compare(what, &o, &h, dt == MTIART_DTYPE_FLOAT32 ? 1e-5 : 1e-12, 1e-12);
    h_free(&h);
    t_free(&a);
    t_free(&o);
}

static void test_softmax(void) {
    for (int dt = 0; dt < 2; dt++) {
        run_softmax_case(dt, 2, SHAPE(5, 37), -1, 3);
        run_softmax_case(dt, 2, SHAPE(5, 37), 0, 3);
        run_softmax_case(dt, 3, SHAPE(3, 300, 5), 1, 3);
        run_softmax_case(dt, 3, SHAPE(4, 6, 700), 1, 3);
        run_softmax_case(dt, 2, SHAPE(2000, 100), 1, 3); /* many blocks */
        run_softmax_case(dt, 2, SHAPE(300, 1000), 0, 3);
        run_softmax_case(dt, 2, SHAPE(8, 64), 1, 1000); /* large logits: must not overflow */
        run_softmax_case(dt, 1, SHAPE(1), 0, 3);
    }
    /* in place */
    tensor t = T_NEW(MTIART_DTYPE_FLOAT32, 4, 10);
    for (int64_t i = 0; i < t.n; i++) set_f(&t, i, (double)(i % 10));
    upload(&t);
    CHECK_OK(mtiart_op_softmax(S, &t.d, &t.d, 1));
    download(&t);
    double s = 0;
    for (int i = 0; i < 10; i++) s += get_f(&t, i);
    CHECK(fabs(s - 1) < 1e-5 && get_f(&t, 9) > get_f(&t, 8), "in-place softmax");
    tensor ti = T_NEW(MTIART_DTYPE_INT32, 4, 10);
    CHECK_INVALID(mtiart_op_softmax(S, &ti.d, &ti.d, 1));
    CHECK_INVALID(mtiart_op_softmax(S, &t.d, &t.d, 2));
    CHECK_INVALID(mtiart_op_softmax(S, &t.d, &t.d, MTIART_REDUCE_ALL));
    t_free(&t);
    t_free(&ti);
}

static void run_where_case(int dt, int ndo, const int64_t *so, int ndc, const int64_t *sc, int nda,
                           const int64_t *sa, int ndb, const int64_t *sb) {
    tensor c = t_new(MTIART_DTYPE_BOOL, ndc, sc), a = t_new(dt, nda, sa), b = t_new(dt, ndb, sb);
    tensor o = t_new(dt, ndo, so);
    t_random(&c, 0, 1, 0);
    t_random(&a, -5, 5, 1);
    t_random(&b, -5, 5, 1);
    upload(&c), upload(&a), upload(&b);
    CHECK_OK(mtiart_op_where(S, &o.d, &c.d, &a.d, &b.d));
    download(&o);
    tensor h = h_like(&o, dt);
    for (int64_t i = 0; i < o.n; i++) {
        int64_t ic = bcast_index(&o.d, &c.d, i);
        const tensor *src = get_i(&c, ic) ? &a : &b;
        int64_t is = bcast_index(&o.d, &src->d, i);
        memcpy((char *)h.host + i * h.es, (char *)src->host + is * h.es, h.es);
    }
    t_compare("where", &o, &h, 0, 0);
    h_free(&h);
    t_free(&c), t_free(&a), t_free(&b), t_free(&o);
}

static void test_where(void) {
    for (int dt = 0; dt < 5; dt++) {
        run_where_case(dt, 1, SHAPE(1000), 1, SHAPE(1000), 1, SHAPE(1000), 1, SHAPE(1000));
        run_where_case(dt, 1, SHAPE(100001), 1, SHAPE(100001), 1, SHAPE(100001), 0, SHAPE(0));
        run_where_case(dt, 1, SHAPE(100001), 1, SHAPE(100001), 0, SHAPE(0), 1, SHAPE(100001));
        run_where_case(dt, 2, SHAPE(3, 4), 2, SHAPE(3, 1), 2, SHAPE(1, 4), 0, SHAPE(0));
        run_where_case(dt, 3, SHAPE(30, 40, 50), 3, SHAPE(30, 1, 50), 1, SHAPE(50), 2,
                       SHAPE(40, 1));
    }
    tensor c = T_NEW(MTIART_DTYPE_INT32, 4), a = T_NEW(MTIART_DTYPE_FLOAT32, 4);
    tensor o = T_NEW(MTIART_DTYPE_FLOAT32, 4), c2 = T_NEW(MTIART_DTYPE_BOOL, 5);
    tensor ai = T_NEW(MTIART_DTYPE_INT32, 4), cb = T_NEW(MTIART_DTYPE_BOOL, 4);
    CHECK_INVALID(mtiart_op_where(S, &o.d, &c.d, &a.d, &a.d));   /* cond not bool */
    CHECK_INVALID(mtiart_op_where(S, &o.d, &c2.d, &a.d, &a.d));  /* shapes */
    CHECK_INVALID(mtiart_op_where(S, &o.d, &cb.d, &a.d, &ai.d)); /* dtypes */
    t_free(&c), t_free(&a), t_free(&o), t_free(&c2), t_free(&ai), t_free(&cb);
}

static void test_cast(void) {
    const double vals[] = {0.0,  1.0,        -1.0, 2.75, -2.75, 0.5,   -0.5,   1e6,
                           -1e6, 123456.875, 3.0,  -7.0, 1e-30, 100.0, -100.0, 65537.0};
    const int nv = (int)(sizeof vals / sizeof vals[0]);
    for (int big = 0; big < 2; big++) {
        int64_t n = big ? 200000 : 50;
        for (int sdt = 0; sdt < 5; sdt++) {
            tensor a = T_NEW(sdt, n);
            for (int64_t i = 0; i < n; i++) {
                double v = vals[rnd() % (uint64_t)nv];
                if (is_float(sdt)) set_f(&a, i, v);
                else set_i(&a, i, (int64_t)v);
            }
            upload(&a);
            for (int ddt = 0; ddt < 5; ddt++) {
                tensor o = T_NEW(ddt, n);
                CHECK_OK(mtiart_op_cast(S, &o.d, &a.d));
                download(&o);
                tensor h = h_like(&o, ddt);
                for (int64_t i = 0; i < n; i++) {
                    if (ddt == MTIART_DTYPE_BOOL) set_i(&h, i, get_f(&a, i) != 0);
                    else if (is_float(ddt)) set_f(&h, i, get_f(&a, i));
                    else set_i(&h, i, get_i(&a, i)); /* truncation toward zero */
                }
                char what[64];
                snprintf(what, sizeof what, "cast %s->%s", dt_name(sdt), dt_name(ddt));
                t_compare(what, &o, &h, 0, 0);
                h_free(&h);
                t_free(&o);
            }
            t_free(&a);
        }
    }
    /* int64 -> int32 wraps; bool from NaN is true */
    tensor a = T_NEW(MTIART_DTYPE_INT64, 3), o = T_NEW(MTIART_DTYPE_INT32, 3);
    set_i(&a, 0, INT64_C(4294967297));
    set_i(&a, 1, -INT64_C(4294967296));
    set_i(&a, 2, INT64_C(2147483648));
    upload(&a);
    CHECK_OK(mtiart_op_cast(S, &o.d, &a.d));
    download(&o);
    CHECK(get_i(&o, 0) == 1 && get_i(&o, 1) == 0 && get_i(&o, 2) == INT32_MIN, "i64->i32 wrap");
    tensor f = T_NEW(MTIART_DTYPE_FLOAT32, 2), bo = T_NEW(MTIART_DTYPE_BOOL, 2);
    set_f(&f, 0, NAN);
    set_f(&f, 1, -0.0);
    upload(&f);
    CHECK_OK(mtiart_op_cast(S, &bo.d, &f.d));
    download(&bo);
    CHECK(get_i(&bo, 0) == 1 && get_i(&bo, 1) == 0, "float->bool of NaN and -0");
    tensor bad = T_NEW(MTIART_DTYPE_INT32, 4);
    CHECK_INVALID(mtiart_op_cast(S, &bad.d, &a.d));
    t_free(&a), t_free(&o), t_free(&f), t_free(&bo), t_free(&bad);
}

static void test_fill_arange(void) {
    for (int dt = 0; dt < 5; dt++) {
        for (int big = 0; big < 2; big++) {
            int64_t n = big ? 300007 : 33;
            tensor o = T_NEW(dt, n);
            CHECK_OK(mtiart_op_fill(S, &o.d, 2.5, -7));
            download(&o);
            int ok = 1;
            for (int64_t i = 0; i < n; i++) {
                if (is_float(dt)) ok &= get_f(&o, i) == 2.5;
                else if (dt == MTIART_DTYPE_BOOL) ok &= get_i(&o, i) == 1;
                else ok &= get_i(&o, i) == -7;
            }
            CHECK(ok, "fill %s n=%lld", dt_name(dt), (long long)n);

            CHECK_OK(mtiart_op_arange(S, &o.d, is_float(dt) ? -3.5 : -3, is_float(dt) ? 0.25 : 2));
            download(&o);
            ok = 1;
            for (int64_t i = 0; i < n && ok; i++) {
                if (dt == MTIART_DTYPE_FLOAT32)
                    ok &= get_f(&o, i) == (float)(-3.5 + 0.25 * (double)i);
                else if (dt == MTIART_DTYPE_FLOAT64) ok &= get_f(&o, i) == -3.5 + 0.25 * (double)i;
                else if (dt == MTIART_DTYPE_BOOL) ok &= get_i(&o, i) == (-3 + 2 * i != 0);
                else ok &= get_i(&o, i) == wrap(dt, -3 + 2 * i);
                if (!ok) FAIL("arange %s element %lld", dt_name(dt), (long long)i);
            }
            g_checks++;
            t_free(&o);
        }
    }
    /* int64 arange beyond 2^53 stays exact */
    tensor o = T_NEW(MTIART_DTYPE_INT64, 4);
    CHECK_OK(mtiart_op_arange(S, &o.d, 9007199254740992.0, 1));
    download(&o);
    CHECK(get_i(&o, 3) == INT64_C(9007199254740992) + 3, "int64 arange exact: %lld",
          (long long)get_i(&o, 3));
    CHECK_INVALID(mtiart_op_arange(S, &o.d, NAN, 1));
    t_free(&o);
    /* 0-d fill */
    tensor s = t_scalar(MTIART_DTYPE_FLOAT64);
    CHECK_OK(mtiart_op_fill(S, &s.d, -1.25, 0));
    download(&s);
    CHECK(get_f(&s, 0) == -1.25, "0-d fill");
    t_free(&s);
}

static void test_invalid(void) {
    tensor a = T_NEW(MTIART_DTYPE_FLOAT32, 4, 5), b = T_NEW(MTIART_DTYPE_FLOAT32, 4, 5);
    tensor o = T_NEW(MTIART_DTYPE_FLOAT32, 4, 5), ob = T_NEW(MTIART_DTYPE_BOOL, 4, 5);
    tensor i = T_NEW(MTIART_DTYPE_INT32, 4, 5), c = T_NEW(MTIART_DTYPE_FLOAT32, 3, 5);
    mtiart_tensor_desc d;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, NULL, &a.d, &b.d));
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, NULL, &b.d));
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &a.d, NULL));
    d = a.d, d.dtype = 9;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &d, &b.d));
    d = a.d, d.ndim = MTIART_MAX_DIMS + 1;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &d, &b.d));
    d = a.d, d.ndim = -1;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &d, &b.d));
    d = a.d, d.shape[1] = -5;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &d, &b.d));
    d = a.d, d.data = NULL;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &d, &b.d));
    CHECK_INVALID(mtiart_op_binary(S, (mtiart_binary_op)42, &o.d, &a.d, &b.d));
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &a.d, &c.d));  /* (4,5)+(3,5) */
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &c.d, &a.d, &b.d));  /* out shape */
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &o.d, &a.d, &i.d));  /* dtypes */
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &ob.d, &a.d, &b.d)); /* out dtype */
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_LT, &o.d, &a.d, &b.d));   /* needs bool */
    /* out partially overlapping an input */
    d = o.d, d.shape[0] = 3, d.data = (char *)a.d.data + 4 * 5;
    tensor a3 = T_NEW(MTIART_DTYPE_FLOAT32, 3, 5);
    CHECK_OK(mtiart_op_binary(S, MTIART_BINARY_ADD, &d, &a3.d, &a3.d)); /* a sub-range: fine */
    mtiart_tensor_desc a3v = a3.d;
    a3v.data = a.d.data;
    CHECK_INVALID(mtiart_op_binary(S, MTIART_BINARY_ADD, &d, &a3v, &a3.d));
    CHECK_INVALID(mtiart_op_unary(S, MTIART_UNARY_EXP, &i.d, &i.d));
    CHECK_INVALID(mtiart_op_unary(S, MTIART_UNARY_EXP, &o.d, &i.d));
    CHECK_INVALID(mtiart_op_unary(S, MTIART_UNARY_EXP, &c.d, &a.d));
    CHECK_INVALID(mtiart_op_unary(S, (mtiart_unary_op)99, &o.d, &a.d));
    CHECK_INVALID(mtiart_op_binary_scalar(S, MTIART_BINARY_ADD, &c.d, &a.d, 1, 1, 0));
    CHECK_INVALID(mtiart_op_fill(S, NULL, 1, 1));
    d = a.d, d.dtype = -1;
    CHECK_INVALID(mtiart_op_fill(S, &d, 1, 1));
    /* empty tensors are accepted and do nothing */
    tensor e = T_NEW(MTIART_DTYPE_FLOAT32, 0, 5), e1 = T_NEW(MTIART_DTYPE_FLOAT32, 5);
    CHECK_OK(mtiart_op_binary(S, MTIART_BINARY_ADD, &e.d, &e.d, &e1.d));
    CHECK_OK(mtiart_op_unary(S, MTIART_UNARY_EXP, &e.d, &e.d));
    CHECK_OK(mtiart_op_fill(S, &e.d, 1, 1));
    CHECK(mtiart_op_fill(NULL, &e.d, 1, 1) == MTIART_ERROR_INVALID_HANDLE,
          "an empty op still reports a NULL stream");
    /* a bad stream is reported by the launch */
    CHECK(mtiart_op_fill(S, &a.d, 1, 1) == MTIART_SUCCESS, "fill ok");
    CHECK(mtiart_op_fill(NULL, &a.d, 1, 1) != MTIART_SUCCESS, "NULL stream must fail");
    CHECK_OK(mtiart_stream_synchronize(S));
    t_free(&a), t_free(&b), t_free(&o), t_free(&ob), t_free(&i), t_free(&c), t_free(&a3);
    t_free(&e), t_free(&e1);
}

/* A chain on device memory without host round trips: y = relu(x * 2 - 1), then sum. */
static void test_chain_big(void) {
    int64_t n = 1 << 22;
    tensor x = T_NEW(MTIART_DTYPE_FLOAT32, n), y = T_NEW(MTIART_DTYPE_FLOAT32, n);
    tensor s = t_scalar(MTIART_DTYPE_FLOAT64), y64 = T_NEW(MTIART_DTYPE_FLOAT64, n);
    CHECK_OK(mtiart_op_arange(S, &x.d, 0.0, 1.0 / (double)n));
    CHECK_OK(mtiart_op_binary_scalar(S, MTIART_BINARY_MUL, &y.d, &x.d, 2.0, 0, 0));
    CHECK_OK(mtiart_op_binary_scalar(S, MTIART_BINARY_SUB, &y.d, &y.d, 1.0, 0, 0));
    CHECK_OK(mtiart_op_unary(S, MTIART_UNARY_RELU, &y.d, &y.d));
    CHECK_OK(mtiart_op_cast(S, &y64.d, &y.d));
    CHECK_OK(mtiart_op_reduce(S, MTIART_REDUCE_SUM, &s.d, &y64.d, MTIART_REDUCE_ALL, 0));
    download(&y);
    download(&s);
    double want = 0;
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        float xv = (float)((double)i / (double)n);
        float v = xv * 2.0f - 1.0f;
        v = v < 0 ? 0 : v;
        ok &= get_f(&y, i) == v;
        want += v;
    }
    CHECK(ok, "chain elementwise");
    CHECK(fabs(get_f(&s, 0) - want) <= 1e-9 * want, "chain sum %.12g vs %.12g", get_f(&s, 0), want);
    t_free(&x), t_free(&y), t_free(&s), t_free(&y64);
}

/* Ops captured into a graph record their buffers (in place = one INOUT buffer), keep their
 * kernel names, and replay correctly on new input, including the split reduction whose
 * scratch comes from the stream-ordered allocator during capture. */
static void test_capture(void) {
    int64_t n = 1000000;
    mtiart_stream cs;
    CHECK_OK(mtiart_stream_create(0, 0, &cs));
    tensor x = T_NEW(MTIART_DTYPE_FLOAT32, n), y = T_NEW(MTIART_DTYPE_FLOAT32, n);
    tensor s = t_scalar(MTIART_DTYPE_FLOAT32);
    mtiart_pool_id pool = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(cs, MTIART_CAPTURE_MODE_GLOBAL, pool));
    CHECK_OK(mtiart_op_binary_scalar(cs, MTIART_BINARY_SUB, &y.d, &x.d, 0.5, 0, 0));
    CHECK_OK(mtiart_op_unary(cs, MTIART_UNARY_RELU, &y.d, &y.d));
    CHECK_OK(mtiart_op_reduce(cs, MTIART_REDUCE_SUM, &s.d, &y.d, MTIART_REDUCE_ALL, 0));
    mtiart_graph g = NULL;
    CHECK_OK(mtiart_stream_end_capture(cs, &g));
    if (!g) {
        t_free(&x), t_free(&y), t_free(&s);
        mtiart_stream_destroy(cs);
        return;
    }
    size_t count = 0;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    int found_relu = 0;
    for (size_t i = 0; i < count; i++) {
        mtiart_node_info info;
        CHECK_OK(mtiart_graph_get_node_info(g, i, &info));
        if (info.kind != MTIART_NODE_KERNEL) continue;
        if (!strcmp(info.name, "mtiart_unary")) {
            found_relu = 1;
            mtiart_buffer_use use;
            CHECK(info.num_buffers == 1, "in-place relu node has %u buffers", info.num_buffers);
            CHECK_OK(mtiart_graph_get_node_buffer(g, i, 0, &use));
            CHECK(use.access == MTIART_ARG_BUFFER_INOUT &&
                      use.address == (uint64_t)(uintptr_t)y.d.data && use.bytes == (uint64_t)n * 4,
                  "relu buffer: access %u bytes %llu", use.access, (unsigned long long)use.bytes);
        }
        if (!strcmp(info.name, "mtiart_binary_scalar")) {
            CHECK(info.num_buffers == 2, "binary scalar node has %u buffers", info.num_buffers);
            CHECK(info.num_blocks > 1, "a large op fans out (%u blocks)", info.num_blocks);
        }
    }
    CHECK(found_relu, "graph has a node named mtiart_unary");
    mtiart_graph_exec ge = NULL;
    CHECK_OK(mtiart_graph_instantiate(g, &ge));
    for (int rep = 0; rep < 2; rep++) {
        double want = 0;
        for (int64_t i = 0; i < n; i++) {
            float v = (float)((double)((i * 37 + rep * 11) % 1000) / 1000.0);
            set_f(&x, i, v);
            float r = v - 0.5f;
            want += r < 0 ? 0 : r;
        }
        CHECK_OK(mtiart_memcpy(cs, x.d.data, x.host, (size_t)n * 4, MTIART_MEMCPY_HOST_TO_DEVICE));
        CHECK_OK(mtiart_graph_launch(ge, cs));
        CHECK_OK(mtiart_stream_synchronize(cs));
        CHECK_OK(mtiart_memcpy(cs, s.host, s.d.data, 4, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(fabs(get_f(&s, 0) - want) <= 1e-5 * want, "graph replay %d: sum %.9g want %.9g", rep,
              get_f(&s, 0), want);
    }
    CHECK_OK(mtiart_graph_exec_destroy(ge));
    CHECK_OK(mtiart_graph_destroy(g));
    t_free(&x), t_free(&y), t_free(&s);
    CHECK_OK(mtiart_stream_destroy(cs));
}

int main(void) {
    if (mtiart_stream_create(0, 0, &S) != MTIART_SUCCESS) {
        fprintf(stderr, "cannot create a stream: %s\n", mtiart_last_error_message());
        return 2;
    }
    test_dtype_size();
    test_invalid();
    test_binary();
    test_binary_inplace();
    test_binary_scalar();
    test_unary();
    test_gelu_erf();
    test_reduce();
    test_reduce_invalid();
    test_matmul();
    test_softmax();
    test_where();
    test_cast();
    test_fill_arange();
    test_chain_big();
    test_capture();
    mtiart_stream_synchronize(S);
    mtiart_stream_destroy(S);
    if (g_failures) {
        fprintf(stderr, "%d of %d checks failed\n", g_failures, g_checks);
        return 1;
    }
    printf("all %d kernel checks passed\n", g_checks);
    return 0;
}
