/*
 * reduce.c - sum/mean/max/min over all elements or one dimension, and softmax.
 *
 * An input is viewed as (outer, len, inner) where len is the reduced extent. Accumulation
 * is in double for float inputs (float32 sums then match numpy's pairwise sums to ~1e-7 and
 * float64 sums are chunked to keep the error growth small) and in wrapping 64-bit integers
 * for integer and bool inputs.
 *
 * Parallelism: when there are enough outputs, blocks split the outputs. When there are few
 * outputs over a long extent (e.g. a full reduction), blocks split the extent instead and
 * write per-block partials to a scratch buffer taken from the stream-ordered allocator; a
 * second, single-block kernel combines them in block order, so results are deterministic.
 */
#include "kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

enum {
    D_F32 = MTIART_DTYPE_FLOAT32,
    D_F64 = MTIART_DTYPE_FLOAT64,
    D_I32 = MTIART_DTYPE_INT32,
    D_I64 = MTIART_DTYPE_INT64,
    D_B = MTIART_DTYPE_BOOL,
    D_COUNT = 5
};

static const uint8_t k_esize[D_COUNT] = {4, 8, 4, 8, 1};

#define RD_LANES 16
/* Columns accumulated together when reducing a non-innermost dim: rows up to this wide are
 * read contiguously (accumulators on the stack, 8 KiB). */
#define RD_COLS 1024
/* Column chunk of softmax over a non-innermost dim (24 bytes of stack per column). */
#define SM_COLS MT_K_SM_COLS
#define RD_NO_SLOT 0xff

/* An accumulator: double for float inputs, wrapping int64 for integer/bool inputs. */
typedef union rd_acc {
    double f;
    int64_t i;
} rd_acc;

typedef struct rd_params {
    uint64_t outer, len, inner;
    uint8_t op, dtype, odtype;
    uint8_t slot_out, slot_in, slot_part;
    uint16_t parts; /* split mode: number of partial blocks */
    int8_t dim;     /* as the caller gave it (descriptions only); RD_DIM_ALL: every dim */
    uint8_t pad[7];
} rd_params;
#define RD_DIM_ALL INT8_MIN

/* NaN-propagating max/min: once an accumulator is NaN it stays NaN. */
#define FMAX(m, x) (((x) > (m) || (x) != (x)) ? (x) : (m))
#define FMIN(m, x) (((x) < (m) || (x) != (x)) ? (x) : (m))
#define IMAX(m, x) ((x) > (m) ? (x) : (m))
#define IMIN(m, x) ((x) < (m) ? (x) : (m))

/* ---- contiguous row reductions (inner == 1) ---------------------------------------------- */

/* Independent lanes let gcc vectorise a reduction without -ffast-math; the float64 version
 * additionally restarts its lanes every chunk, a two-level sum whose error grows with
 * chunk/lanes + n/chunk rather than n. */
#define RD_SUM_CHUNK 4096
#define DEF_ROW_FSUM(NAME, T)                                                                      \
    static double NAME(const T *a, int64_t n) {                                                    \
        double total = 0.0;                                                                        \
        int64_t i = 0;                                                                             \
        while (i < n) {                                                                            \
            int64_t end = n - i > RD_SUM_CHUNK ? i + RD_SUM_CHUNK : n;                             \
            double acc[RD_LANES] = {0};                                                            \
            for (; i + RD_LANES <= end; i += RD_LANES)                                             \
                for (int j = 0; j < RD_LANES; j++) acc[j] += (double)a[i + j];                     \
            double s = 0.0;                                                                        \
            for (; i < end; i++) s += (double)a[i];                                                \
            for (int j = 0; j < RD_LANES; j++) s += acc[j];                                        \
            total += s;                                                                            \
        }                                                                                          \
        return total;                                                                              \
    }
DEF_ROW_FSUM(row_sum_f32, float)
DEF_ROW_FSUM(row_sum_f64, double)

#define DEF_ROW_ISUM(NAME, T)                                                                      \
    static int64_t NAME(const T *a, int64_t n) {                                                   \
        uint64_t acc[RD_LANES] = {0};                                                              \
        int64_t i = 0;                                                                             \
        for (; i + RD_LANES <= n; i += RD_LANES)                                                   \
            for (int j = 0; j < RD_LANES; j++) acc[j] += (uint64_t)(int64_t)a[i + j];              \
        uint64_t s = 0;                                                                            \
        for (; i < n; i++) s += (uint64_t)(int64_t)a[i];                                           \
        for (int j = 0; j < RD_LANES; j++) s += acc[j];                                            \
        return (int64_t)s;                                                                         \
    }
DEF_ROW_ISUM(row_sum_i32, int32_t)
DEF_ROW_ISUM(row_sum_i64, int64_t)
DEF_ROW_ISUM(row_sum_b, uint8_t)

/* Lanes start from the first element, so no identity value (and no infinity for ints) is
 * needed; n >= 1 is guaranteed by the host side. */
#define DEF_ROW_EXT(NAME, T, R, OP)                                                                \
    static R NAME(const T *a, int64_t n) {                                                         \
        T acc[RD_LANES];                                                                           \
        for (int j = 0; j < RD_LANES; j++) acc[j] = a[0];                                          \
        int64_t i = 0;                                                                             \
        for (; i + RD_LANES <= n; i += RD_LANES)                                                   \
            for (int j = 0; j < RD_LANES; j++) acc[j] = OP(acc[j], a[i + j]);                      \
        T m = a[0];                                                                                \
        for (; i < n; i++) m = OP(m, a[i]);                                                        \
        for (int j = 0; j < RD_LANES; j++) m = OP(m, acc[j]);                                      \
        return (R)m;                                                                               \
    }
DEF_ROW_EXT(row_max_f32, float, double, FMAX)
DEF_ROW_EXT(row_min_f32, float, double, FMIN)
DEF_ROW_EXT(row_max_f64, double, double, FMAX)
DEF_ROW_EXT(row_min_f64, double, double, FMIN)
DEF_ROW_EXT(row_max_i32, int32_t, int64_t, IMAX)
DEF_ROW_EXT(row_min_i32, int32_t, int64_t, IMIN)
DEF_ROW_EXT(row_max_i64, int64_t, int64_t, IMAX)
DEF_ROW_EXT(row_min_i64, int64_t, int64_t, IMIN)
DEF_ROW_EXT(row_max_b, uint8_t, int64_t, IMAX)
DEF_ROW_EXT(row_min_b, uint8_t, int64_t, IMIN)

static rd_acc rd_row(int op, int dtype, const void *a, int64_t n) {
    rd_acc r;
    int ext = op == MTIART_REDUCE_MAX || op == MTIART_REDUCE_MIN;
    int mx = op == MTIART_REDUCE_MAX;
    switch (dtype) {
    case D_F32: r.f = !ext ? row_sum_f32(a, n) : mx ? row_max_f32(a, n) : row_min_f32(a, n); break;
    case D_F64: r.f = !ext ? row_sum_f64(a, n) : mx ? row_max_f64(a, n) : row_min_f64(a, n); break;
    case D_I32: r.i = !ext ? row_sum_i32(a, n) : mx ? row_max_i32(a, n) : row_min_i32(a, n); break;
    case D_I64: r.i = !ext ? row_sum_i64(a, n) : mx ? row_max_i64(a, n) : row_min_i64(a, n); break;
    default: r.i = !ext ? row_sum_b(a, n) : mx ? row_max_b(a, n) : row_min_b(a, n); break;
    }
    return r;
}

/* ---- column reductions (inner > 1): acc[i] op= a[l * stride + i] ----------------------- */

#define DEF_COLS(NAME, T, A, EXPR)                                                                 \
    static void NAME(A *acc, const T *a, int64_t len, int64_t stride, int64_t w, int init) {       \
        int64_t l = 0;                                                                             \
        if (init) {                                                                                \
            for (int64_t i = 0; i < w; i++) acc[i] = (A)a[i];                                      \
            l = 1;                                                                                 \
        }                                                                                          \
        for (; l < len; l++) {                                                                     \
            const T *row = a + l * stride;                                                         \
            for (int64_t i = 0; i < w; i++) {                                                      \
                A m = acc[i];                                                                      \
                A x = (A)row[i];                                                                   \
                acc[i] = (EXPR);                                                                   \
            }                                                                                      \
        }                                                                                          \
    }
DEF_COLS(cols_sum_f32, float, double, m + x)
DEF_COLS(cols_sum_f64, double, double, m + x)
DEF_COLS(cols_max_f32, float, double, FMAX(m, x))
DEF_COLS(cols_min_f32, float, double, FMIN(m, x))
DEF_COLS(cols_max_f64, double, double, FMAX(m, x))
DEF_COLS(cols_min_f64, double, double, FMIN(m, x))
DEF_COLS(cols_sum_i32, int32_t, int64_t, (int64_t)((uint64_t)m + (uint64_t)x))
DEF_COLS(cols_sum_i64, int64_t, int64_t, (int64_t)((uint64_t)m + (uint64_t)x))
DEF_COLS(cols_sum_b, uint8_t, int64_t, m + x)
DEF_COLS(cols_max_i32, int32_t, int64_t, IMAX(m, x))
DEF_COLS(cols_min_i32, int32_t, int64_t, IMIN(m, x))
DEF_COLS(cols_max_i64, int64_t, int64_t, IMAX(m, x))
DEF_COLS(cols_min_i64, int64_t, int64_t, IMIN(m, x))
DEF_COLS(cols_max_b, uint8_t, int64_t, IMAX(m, x))
DEF_COLS(cols_min_b, uint8_t, int64_t, IMIN(m, x))

/* Reduce columns [0, w) of len rows spaced `stride` apart into acc. Sums start from zero
 * (len may be 0); max/min start from the first row (len >= 1 is guaranteed). */
static void rd_cols(int op, int dtype, rd_acc *acc, const void *a, int64_t len, int64_t stride,
                    int64_t w) {
    double *fa = (double *)acc;
    int64_t *ia = (int64_t *)acc;
    int ext = op == MTIART_REDUCE_MAX || op == MTIART_REDUCE_MIN;
    int mx = op == MTIART_REDUCE_MAX;
    if (!ext) {
        for (int64_t i = 0; i < w; i++) {
            if (dtype == D_F32 || dtype == D_F64) fa[i] = 0.0;
            else ia[i] = 0;
        }
    }
    switch (dtype) {
    case D_F32:
        if (!ext) cols_sum_f32(fa, a, len, stride, w, 0);
        else if (mx) cols_max_f32(fa, a, len, stride, w, 1);
        else cols_min_f32(fa, a, len, stride, w, 1);
        break;
    case D_F64:
        if (!ext) cols_sum_f64(fa, a, len, stride, w, 0);
        else if (mx) cols_max_f64(fa, a, len, stride, w, 1);
        else cols_min_f64(fa, a, len, stride, w, 1);
        break;
    case D_I32:
        if (!ext) cols_sum_i32(ia, a, len, stride, w, 0);
        else if (mx) cols_max_i32(ia, a, len, stride, w, 1);
        else cols_min_i32(ia, a, len, stride, w, 1);
        break;
    case D_I64:
        if (!ext) cols_sum_i64(ia, a, len, stride, w, 0);
        else if (mx) cols_max_i64(ia, a, len, stride, w, 1);
        else cols_min_i64(ia, a, len, stride, w, 1);
        break;
    default:
        if (!ext) cols_sum_b(ia, a, len, stride, w, 0);
        else if (mx) cols_max_b(ia, a, len, stride, w, 1);
        else cols_min_b(ia, a, len, stride, w, 1);
        break;
    }
}

/* ---- combining and finishing ---------------------------------------------------------------- */

static rd_acc rd_combine(int op, int isf, rd_acc x, rd_acc y) {
    rd_acc r;
    switch (op) {
    case MTIART_REDUCE_MAX:
        if (isf) r.f = FMAX(x.f, y.f);
        else r.i = IMAX(x.i, y.i);
        break;
    case MTIART_REDUCE_MIN:
        if (isf) r.f = FMIN(x.f, y.f);
        else r.i = IMIN(x.i, y.i);
        break;
    default:
        if (isf) r.f = x.f + y.f;
        else r.i = (int64_t)((uint64_t)x.i + (uint64_t)y.i);
        break;
    }
    return r;
}

/* Convert a finished accumulator to out[j]. */
static void rd_store(const rd_params *p, void *out, uint64_t j, rd_acc v) {
    int isf = p->dtype == D_F32 || p->dtype == D_F64;
    double f;
    if (p->op == MTIART_REDUCE_MEAN) {
        double s = isf ? v.f : (double)v.i;
        f = s / (double)p->len; /* 0/0 = NaN for an empty extent, as numpy */
    } else {
        f = v.f;
    }
    int real = isf || p->op == MTIART_REDUCE_MEAN;
    switch (p->odtype) {
    case D_F32: ((float *)out)[j] = real ? (float)f : (float)v.i; break;
    case D_F64: ((double *)out)[j] = real ? f : (double)v.i; break;
    case D_I32: ((int32_t *)out)[j] = (int32_t)(uint32_t)(uint64_t)v.i; break;
    case D_I64: ((int64_t *)out)[j] = v.i; break;
    default: ((uint8_t *)out)[j] = v.i != 0; break;
    }
}

/* ---- kernels --------------------------------------------------------------------------------- */

/* Outputs [lo, hi) reduced over rows [l0, l1); results go to rd_store (out != NULL) or to
 * partials (part != NULL). */
static void rd_range(const rd_params *p, const char *a, void *out, rd_acc *part, uint64_t lo,
                     uint64_t hi, uint64_t l0, uint64_t l1) {
    const size_t es = k_esize[p->dtype];
    const int64_t len = (int64_t)(l1 - l0);
    const uint64_t inner = p->inner;
    if (inner == 1) {
        for (uint64_t j = lo; j < hi; j++) {
            const char *row = a ? a + ((size_t)j * p->len + l0) * es : NULL;
            rd_acc v = rd_row(p->op, p->dtype, row, len);
            if (out) rd_store(p, out, j, v);
            else part[j] = v;
        }
        return;
    }
    rd_acc acc[RD_COLS];
    uint64_t j = lo;
    while (j < hi) {
        uint64_t o = j / inner, i = j % inner;
        uint64_t w = inner - i;
        if (w > hi - j) w = hi - j;
        if (w > RD_COLS) w = RD_COLS;
        const char *base = a ? a + ((size_t)(o * p->len + l0) * inner + i) * es : NULL;
        rd_cols(p->op, p->dtype, acc, base, len, (int64_t)inner, (int64_t)w);
        for (uint64_t c = 0; c < w; c++) {
            if (out) rd_store(p, out, j + c, acc[c]);
            else part[j + c] = acc[c];
        }
        j += w;
    }
}

static int32_t k_reduce(void *const *args, uint32_t block, uint32_t num_blocks) {
    rd_params p;
    MT_K_PARAMS(p, args);
    uint64_t lo, hi;
    mt_k_range(p.outer * p.inner, block, num_blocks, 8, &lo, &hi);
    if (lo >= hi) return 0;
    const char *a = p.slot_in == RD_NO_SLOT ? NULL : (const char *)MT_K_BUF(args, p.slot_in);
    rd_range(&p, a, MT_K_BUF(args, p.slot_out), NULL, lo, hi, 0, p.len);
    return 0;
}

/* Split mode: block b reduces its share of the extent for every output into
 * part[b * outputs + j]. */
static int32_t k_reduce_partial(void *const *args, uint32_t block, uint32_t num_blocks) {
    rd_params p;
    MT_K_PARAMS(p, args);
    uint64_t l0, l1, nout = p.outer * p.inner;
    mt_k_range(p.len, block, num_blocks, RD_LANES, &l0, &l1);
    rd_acc *part = (rd_acc *)MT_K_BUF(args, p.slot_part) + (size_t)block * nout;
    const char *a = (const char *)MT_K_BUF(args, p.slot_in);
    if (l0 >= l1) {
        /* Rounding shares up to whole lane groups can leave trailing blocks empty: they
         * contribute the identity of the operation. */
        int isf = p.dtype == D_F32 || p.dtype == D_F64;
        rd_acc id;
        if (p.op == MTIART_REDUCE_MAX) {
            if (isf) id.f = -INFINITY;
            else id.i = INT64_MIN;
        } else if (p.op == MTIART_REDUCE_MIN) {
            if (isf) id.f = INFINITY;
            else id.i = INT64_MAX;
        } else {
            if (isf) id.f = 0.0;
            else id.i = 0;
        }
        for (uint64_t j = 0; j < nout; j++) part[j] = id;
        return 0;
    }
    rd_range(&p, a, NULL, part, 0, nout, l0, l1);
    return 0;
}

static int32_t k_reduce_combine(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block, (void)num_blocks;
    rd_params p;
    MT_K_PARAMS(p, args);
    const uint64_t nout = p.outer * p.inner;
    const rd_acc *part = (const rd_acc *)MT_K_BUF(args, p.slot_part);
    void *out = MT_K_BUF(args, p.slot_out);
    int isf = p.dtype == D_F32 || p.dtype == D_F64;
    for (uint64_t j = 0; j < nout; j++) {
        rd_acc v = part[j];
        for (uint32_t b = 1; b < p.parts; b++) v = rd_combine(p.op, isf, v, part[b * nout + j]);
        rd_store(&p, out, j, v);
    }
    return 0;
}

/* ---- softmax --------------------------------------------------------------------------------- */

typedef struct sm_params {
    uint64_t outer, len, inner;
    uint8_t dtype, slot_out, slot_in;
    int8_t dim; /* as the caller gave it (descriptions only) */
    uint8_t pad[4];
} sm_params;

/* One contiguous row. Reads all of a row before writing any of it, so out may alias a. */
#define DEF_SM_ROW(NAME, T, EXP, MAXROW)                                                           \
    static void NAME(T *o, const T *a, int64_t n) {                                                \
        T m = (T)MAXROW(a, n);                                                                     \
        double s = 0.0;                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T e = EXP(a[i] - m);                                                                   \
            o[i] = e;                                                                              \
            s += (double)e;                                                                        \
        }                                                                                          \
        const T inv = (T)(1.0 / s);                                                                \
        for (int64_t i = 0; i < n; i++) o[i] *= inv;                                               \
    }
DEF_SM_ROW(sm_row_f64, double, exp, row_max_f64)

/* Columns [0, w) of a (len, stride) slab: the same three passes, vectorised across w. */
#define DEF_SM_COLS(NAME, T, EXP, COLMAX)                                                          \
    static void NAME(T *o, const T *a, int64_t len, int64_t stride, int64_t w) {                   \
        double m[SM_COLS], s[SM_COLS];                                                             \
        COLMAX(m, a, len, stride, w, 1);                                                           \
        for (int64_t i = 0; i < w; i++) s[i] = 0.0;                                                \
        for (int64_t l = 0; l < len; l++) {                                                        \
            const T *ar = a + l * stride;                                                          \
            T *orow = o + l * stride;                                                              \
            for (int64_t i = 0; i < w; i++) {                                                      \
                T e = EXP(ar[i] - (T)m[i]);                                                        \
                orow[i] = e;                                                                       \
                s[i] += (double)e;                                                                 \
            }                                                                                      \
        }                                                                                          \
        for (int64_t i = 0; i < w; i++) s[i] = 1.0 / s[i];                                         \
        for (int64_t l = 0; l < len; l++) {                                                        \
            T *orow = o + l * stride;                                                              \
            for (int64_t i = 0; i < w; i++) orow[i] *= (T)s[i];                                    \
        }                                                                                          \
    }
DEF_SM_COLS(sm_cols_f64, double, exp, cols_max_f64)

static int32_t k_softmax(void *const *args, uint32_t block, uint32_t num_blocks) {
    sm_params p;
    MT_K_PARAMS(p, args);
    /* Work items: (outer row, column chunk) pairs. */
    uint64_t chunks = (p.inner + SM_COLS - 1) / SM_COLS;
    uint64_t lo, hi;
    mt_k_range(p.outer * chunks, block, num_blocks, 1, &lo, &hi);
    char *out = (char *)MT_K_BUF(args, p.slot_out);
    const char *a = (const char *)MT_K_BUF(args, p.slot_in);
    size_t es = k_esize[p.dtype];
    for (uint64_t t = lo; t < hi; t++) {
        uint64_t o = t / chunks, c0 = (t % chunks) * SM_COLS;
        uint64_t w = p.inner - c0 < SM_COLS ? p.inner - c0 : SM_COLS;
        size_t off = ((size_t)o * p.len * p.inner + c0) * es;
        if (p.inner == 1) {
            if (p.dtype == D_F32)
                mt_k_softmax_row_f32((float *)(out + off), (const float *)(a + off),
                                     (int64_t)p.len);
            else sm_row_f64((double *)(out + off), (const double *)(a + off), (int64_t)p.len);
        } else {
            if (p.dtype == D_F32)
                mt_k_softmax_cols_f32((float *)(out + off), (const float *)(a + off),
                                      (int64_t)p.len, (int64_t)p.inner, (int64_t)w);
            else
                sm_cols_f64((double *)(out + off), (const double *)(a + off), (int64_t)p.len,
                            (int64_t)p.inner, (int64_t)w);
        }
    }
    return 0;
}

/* ---- host side ------------------------------------------------------------------------------- */

static const char *const k_rd_names[4] = {"sum", "mean", "max", "min"};

/* Resolve `dim` of a: MTIART_REDUCE_ALL gives -1 ("all"); a 0-d tensor accepts 0 and -1 as
 * torch does. */
static mtiart_status rd_dim(const mtiart_tensor_desc *a, int32_t dim, int *out) {
    if (dim == MTIART_REDUCE_ALL) {
        *out = -1;
        return MTIART_SUCCESS;
    }
    int nd = a->ndim;
    if (nd == 0 && (dim == 0 || dim == -1)) {
        *out = -1;
        return MTIART_SUCCESS;
    }
    if (dim < -nd || dim >= nd)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "dim %d out of range for a %d-d tensor",
                            (int)dim, nd);
    *out = dim < 0 ? dim + nd : dim;
    return MTIART_SUCCESS;
}

static void rd_view(const mtiart_tensor_desc *a, int d, uint64_t *outer, uint64_t *len,
                    uint64_t *inner) {
    uint64_t o = 1, l = 1, in = 1;
    for (int i = 0; i < a->ndim; i++) {
        uint64_t s = (uint64_t)a->shape[i];
        if (d < 0) l *= s;
        else if (i < d) o *= s;
        else if (i == d) l = s;
        else in *= s;
    }
    *outer = o;
    *len = l;
    *inner = in;
}

/*
 * Output dtypes (numpy/torch conventions):
 *   float inputs:         out has a's dtype for every op.
 *   int32/int64/bool sum: out is int64 (torch's promotion) or a's dtype (wrapping; for bool
 *                         the result is "any element set").
 *   int32/int64/bool mean: out is float64 (numpy) or float32.
 *   int/bool max/min:     out has a's dtype.
 * Empty extents: sum gives 0, mean NaN, max/min are an error (numpy raises).
 */
MTIART_API mtiart_status mtiart_op_reduce(mtiart_stream stream, mtiart_reduce_op op,
                                          const mtiart_tensor_desc *out,
                                          const mtiart_tensor_desc *a, int32_t dim, int keepdim) {
    MT_API_ENTRY();
    int64_t no, na;
    mtiart_status st;
    if ((unsigned)op > MTIART_REDUCE_MIN)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown op %d", (int)op);
    if ((st = mt_k_check("out", out, &no)) || (st = mt_k_check("a", a, &na))) return st;
    int d = -1; /* set by rd_dim */
    if ((st = rd_dim(a, dim, &d))) return st;

    /* Expected shape of out. */
    mtiart_tensor_desc want;
    memset(&want, 0, sizeof want);
    for (int i = 0; i < a->ndim; i++) {
        if (d < 0 || i == d) {
            if (keepdim) want.shape[want.ndim++] = 1;
        } else {
            want.shape[want.ndim++] = a->shape[i];
        }
    }
    if (!mt_k_same_shape(out, &want)) {
        char b1[160], b2[160], b3[160];
        return mt_set_error(
            MTIART_ERROR_INVALID_VALUE, "out's shape %s does not match %s%s of a %s (expected %s)",
            mt_k_shape_str(out, b1, sizeof b1), k_rd_names[op], keepdim ? " with keepdim" : "",
            mt_k_shape_str(a, b2, sizeof b2), mt_k_shape_str(&want, b3, sizeof b3));
    }

    int isf = mt_k_is_float(a->dtype);
    int odt_ok;
    if (isf) odt_ok = out->dtype == a->dtype;
    else if (op == MTIART_REDUCE_SUM)
        odt_ok = out->dtype == a->dtype || out->dtype == MTIART_DTYPE_INT64;
    else if (op == MTIART_REDUCE_MEAN) odt_ok = mt_k_is_float(out->dtype);
    else odt_ok = out->dtype == a->dtype;
    if (!odt_ok)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s of a %s tensor cannot produce a %s out",
                            k_rd_names[op], mt_k_dtype_name(a->dtype), mt_k_dtype_name(out->dtype));

    rd_params p;
    memset(&p, 0, sizeof p);
    rd_view(a, d, &p.outer, &p.len, &p.inner);
    uint64_t nout = p.outer * p.inner;
    if (nout == 0) return mt_k_nothing(stream);
    if (p.len == 0 && (op == MTIART_REDUCE_MAX || op == MTIART_REDUCE_MIN))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s of an empty extent has no identity",
                            k_rd_names[op]);
    p.op = (uint8_t)op;
    p.dtype = (uint8_t)a->dtype;
    p.odtype = (uint8_t)out->dtype;
    p.dim = d < 0 ? RD_DIM_ALL : (int8_t)dim;

    uint32_t es = k_esize[a->dtype], os = k_esize[out->dtype];
    uint32_t blocks;
    if ((st = mt_k_blocks(stream, (uint64_t)na, MT_K_EW_GRAIN, &blocks))) return st;

    /* Splitting the outputs is best when each block gets whole contiguous rows (inner ==
     * 1) or wide runs of columns; otherwise blocks would stride through the input reading
     * narrow pieces of every row, and splitting the reduced extent (partials in a scratch
     * buffer, bounded to 4 MiB) reads contiguous slabs instead. */
    uint64_t parts = blocks;
    if (parts > p.len / RD_LANES) parts = p.len / RD_LANES;
    if (parts < 1) parts = 1;
    if (parts > 0xffff) parts = 0xffff;
    int direct =
        blocks == 1 || parts == 1 ||
        (p.inner == 1 ? nout >= (uint64_t)blocks * 8 : nout >= (uint64_t)blocks * RD_COLS) ||
        nout * parts > (UINT64_C(1) << 19);
    mt_klaunch kl;
    /* out must not overlap a (checked here once for both modes). */
    mt_kl_init(&kl, &p, sizeof p);
    if (mt_kl_tensor(&kl, "out", out, nout, os, MTIART_ARG_BUFFER_OUT, 0) < 0 ||
        (na > 0 && mt_kl_tensor(&kl, "a", a, (uint64_t)na, es, MTIART_ARG_BUFFER_IN, 0) < 0))
        return MTIART_ERROR_INVALID_VALUE;

    void *scratch = NULL;
    /* Without scratch memory (device full, or an allocator that refuses) the direct mode
     * still computes the same result, just with less parallelism. */
    if (!direct && mtiart_malloc_async(stream, (size_t)(parts * nout * sizeof(rd_acc)), &scratch) !=
                       MTIART_SUCCESS)
        direct = 1;

    if (direct) {
        p.slot_out = 0;
        p.slot_in = na > 0 ? 1 : RD_NO_SLOT;
        if ((uint64_t)blocks > nout) blocks = (uint32_t)nout;
        return mt_kl_launch(&kl, stream, k_reduce, blocks);
    }

    /* Split mode (na > 0 here since blocks > 1): partials, then a single-block combine. */
    p.parts = (uint16_t)parts;
    mt_kl_init(&kl, &p, sizeof p);
    p.slot_in = (uint8_t)mt_kl_tensor(&kl, "a", a, (uint64_t)na, es, MTIART_ARG_BUFFER_IN, 0);
    p.slot_part = (uint8_t)mt_kl_buf(&kl, "scratch", scratch, parts * nout, sizeof(rd_acc),
                                     MTIART_ARG_BUFFER_OUT, 0);
    p.slot_out = RD_NO_SLOT;
    st = mt_kl_launch(&kl, stream, k_reduce_partial, (uint32_t)parts);
    if (st == MTIART_SUCCESS) {
        mt_klaunch kc;
        rd_params pc = p;
        mt_kl_init(&kc, &pc, sizeof pc);
        pc.slot_part = (uint8_t)mt_kl_buf(&kc, "scratch", scratch, parts * nout, sizeof(rd_acc),
                                          MTIART_ARG_BUFFER_IN, 0);
        pc.slot_out = (uint8_t)mt_kl_tensor(&kc, "out", out, nout, os, MTIART_ARG_BUFFER_OUT, 0);
        pc.slot_in = RD_NO_SLOT;
        st = mt_kl_launch(&kc, stream, k_reduce_combine, 1);
    }
    /* Stream-ordered free: later work on this stream may reuse the block only after the
     * kernels above, so freeing right away is safe (and keeps captured graphs tidy). */
    mtiart_status fst = mtiart_free(scratch);
    return st != MTIART_SUCCESS ? st : fst;
}

MTIART_API mtiart_status mtiart_op_softmax(mtiart_stream stream, const mtiart_tensor_desc *out,
                                           const mtiart_tensor_desc *a, int32_t dim) {
    MT_API_ENTRY();
    int64_t no, na;
    mtiart_status st;
    if ((st = mt_k_check("out", out, &no)) || (st = mt_k_check("a", a, &na))) return st;
    if (!mt_k_is_float(a->dtype))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "softmax needs a float dtype, got %s",
                            mt_k_dtype_name(a->dtype));
    if (out->dtype != a->dtype)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "out is %s but a is %s",
                            mt_k_dtype_name(out->dtype), mt_k_dtype_name(a->dtype));
    if ((st = mt_k_check_same_shape(out, a))) return st;
    if (dim == MTIART_REDUCE_ALL)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "softmax needs one dim");
    int d = -1; /* set by rd_dim */
    if ((st = rd_dim(a, dim, &d))) return st;
    if (no == 0) return mt_k_nothing(stream);
    sm_params p;
    memset(&p, 0, sizeof p);
    rd_view(a, d, &p.outer, &p.len, &p.inner);
    p.dtype = (uint8_t)a->dtype;
    p.dim = (int8_t)dim;
    uint32_t es = k_esize[a->dtype];
    mt_klaunch kl;
    mt_kl_init(&kl, &p, sizeof p);
    int so = mt_kl_tensor(&kl, "out", out, (uint64_t)no, es, MTIART_ARG_BUFFER_OUT, 1);
    int sa = so < 0 ? -1 : mt_kl_tensor(&kl, "a", a, (uint64_t)na, es, MTIART_ARG_BUFFER_IN, 1);
    if (sa < 0) return MTIART_ERROR_INVALID_VALUE;
    p.slot_out = (uint8_t)so;
    p.slot_in = (uint8_t)sa;
    /* exp dominates: fan out at a quarter of the elementwise grain. */
    uint32_t blocks;
    if ((st = mt_k_blocks(stream, (uint64_t)no, MT_K_EW_GRAIN / 4, &blocks))) return st;
    uint64_t items = p.outer * ((p.inner + SM_COLS - 1) / SM_COLS);
    if (blocks > items) blocks = (uint32_t)items;
    return mt_kl_launch(&kl, stream, k_softmax, blocks);
}

/* ---- a step of fused kernels -------------------------------------------------------------- */

int mt_k_softmax_step(mtiart_kernel_fn fn, void *const *args, mt_kstep *step) {
    memset(step, 0, sizeof *step);
    if (fn != k_softmax) return 0;
    sm_params p;
    MT_K_PARAMS(p, args);
    /* rows of the last dim only: one contiguous run per row */
    if (p.dtype != D_F32 || p.inner != 1) return 0;
    step->kind = MT_KSTEP_SOFTMAX;
    step->out = MT_K_BUF(args, p.slot_out);
    step->a = MT_K_BUF(args, p.slot_in);
    step->row_a = p.len;
    step->numel = p.outer * p.len;
    return 1;
}

/* ---- the registry's descriptions --------------------------------------------------------- */

static int describe_reduction(const rd_params *p, const char *suffix, char *out, size_t cap) {
    const char *name = p->op <= MTIART_REDUCE_MIN ? k_rd_names[p->op] : "?";
    if (p->dim == RD_DIM_ALL) return snprintf(out, cap, "%s%s", name, suffix);
    return snprintf(out, cap, "%s dim=%d%s", name, (int)p->dim, suffix);
}

static int describe_reduce(void *const *args, char *out, size_t cap) {
    rd_params p;
    MT_K_PARAMS(p, args);
    return describe_reduction(&p, "", out, cap);
}

static int describe_reduce_partial(void *const *args, char *out, size_t cap) {
    rd_params p;
    MT_K_PARAMS(p, args);
    return describe_reduction(&p, " (partials)", out, cap);
}

static int describe_reduce_combine(void *const *args, char *out, size_t cap) {
    rd_params p;
    MT_K_PARAMS(p, args);
    return describe_reduction(&p, " (combine)", out, cap);
}

static int describe_softmax(void *const *args, char *out, size_t cap) {
    sm_params p;
    MT_K_PARAMS(p, args);
    return snprintf(out, cap, "softmax dim=%d", (int)p.dim);
}

/* ---- the registry's checks of saved launches ---------------------------------------------- */

/* The fields every reduction kernel indexes with, and its output and input element counts. */
static int rd_saved(const mt_ksaved *l, rd_params *p, uint64_t *nout, uint64_t *nin, char *why,
                    size_t cap) {
    int r = mt_k_saved_params(l, sizeof *p, why, cap);
    if (r >= 0) return r;
    memcpy(p, l->params, sizeof *p);
    if (p->op > MTIART_REDUCE_MIN || p->dtype >= D_COUNT || p->odtype >= D_COUNT)
        return mt_k_bad(why, cap, 0, "reduction %u of %u to %u", p->op, p->dtype, p->odtype);
    /* max and min start from the first element of the extent. */
    if ((p->op == MTIART_REDUCE_MAX || p->op == MTIART_REDUCE_MIN) && p->len == 0)
        return mt_k_bad(why, cap, 0, "%s of an empty extent", k_rd_names[p->op]);
    *nout = p->outer;
    *nin = p->len;
    if (!mt_k_mul(nout, p->inner) || !mt_k_mul(nin, *nout))
        return mt_k_bad(why, cap, 0, "%llu x %llu x %llu elements overflow",
                        (unsigned long long)p->outer, (unsigned long long)p->len,
                        (unsigned long long)p->inner);
    return -1;
}

static int check_reduce(const mt_ksaved *l, char *why, size_t cap) {
    rd_params p;
    uint64_t nout, nin;
    int r = rd_saved(l, &p, &nout, &nin, why, cap);
    if (r >= 0) return r;
    if ((r = mt_k_span(l, p.slot_out, "out", nout, k_esize[p.odtype], why, cap)) >= 0) return r;
    /* An empty extent reads nothing, and has no input slot. */
    if (p.slot_in == RD_NO_SLOT && p.len == 0) return -1;
    return mt_k_span(l, p.slot_in, "a", nin, k_esize[p.dtype], why, cap);
}

/* Every block writes its own row of partials: num_blocks rows of the outputs. */
static int check_reduce_partial(const mt_ksaved *l, char *why, size_t cap) {
    rd_params p;
    uint64_t nout, nin;
    int r = rd_saved(l, &p, &nout, &nin, why, cap);
    if (r >= 0) return r;
    uint64_t parts = l->num_blocks;
    if (!mt_k_mul(&parts, nout))
        return mt_k_bad(why, cap, 0, "%u blocks of partials overflow", l->num_blocks);
    if ((r = mt_k_span(l, p.slot_part, "partials", parts, sizeof(rd_acc), why, cap)) >= 0) return r;
    return mt_k_span(l, p.slot_in, "a", nin, k_esize[p.dtype], why, cap);
}

static int check_reduce_combine(const mt_ksaved *l, char *why, size_t cap) {
    rd_params p;
    uint64_t nout, nin;
    int r = rd_saved(l, &p, &nout, &nin, why, cap);
    if (r >= 0) return r;
    uint64_t parts = p.parts ? p.parts : 1;
    if (!mt_k_mul(&parts, nout))
        return mt_k_bad(why, cap, 0, "%u rows of partials overflow", p.parts);
    if ((r = mt_k_span(l, p.slot_part, "partials", parts, sizeof(rd_acc), why, cap)) >= 0) return r;
    return mt_k_span(l, p.slot_out, "out", nout, k_esize[p.odtype], why, cap);
}

static int check_softmax(const mt_ksaved *l, char *why, size_t cap) {
    sm_params p;
    int r = mt_k_saved_params(l, sizeof p, why, cap);
    if (r >= 0) return r;
    memcpy(&p, l->params, sizeof p);
    if (p.dtype != D_F32 && p.dtype != D_F64)
        return mt_k_bad(why, cap, 0, "softmax of dtype %u", p.dtype);
    /* Rows start from their first element. */
    if (p.outer < 1 || p.len < 1 || p.inner < 1)
        return mt_k_bad(why, cap, 0, "softmax over %llu x %llu x %llu elements",
                        (unsigned long long)p.outer, (unsigned long long)p.len,
                        (unsigned long long)p.inner);
    uint64_t n = p.outer;
    if (!mt_k_mul(&n, p.len) || !mt_k_mul(&n, p.inner))
        return mt_k_bad(why, cap, 0, "%llu x %llu x %llu elements overflow",
                        (unsigned long long)p.outer, (unsigned long long)p.len,
                        (unsigned long long)p.inner);
    size_t es = k_esize[p.dtype];
    if ((r = mt_k_span(l, p.slot_out, "out", n, es, why, cap)) >= 0) return r;
    return mt_k_span(l, p.slot_in, "a", n, es, why, cap);
}

const mt_kdef mt_k_reduce_defs[] = {
    {MT_KID_REDUCE, "mtiart_reduce", k_reduce, describe_reduce, check_reduce},
    {MT_KID_REDUCE_PARTIAL, "mtiart_reduce_partial", k_reduce_partial, describe_reduce_partial,
     check_reduce_partial},
    {MT_KID_REDUCE_COMBINE, "mtiart_reduce_combine", k_reduce_combine, describe_reduce_combine,
     check_reduce_combine},
    {MT_KID_SOFTMAX, "mtiart_softmax", k_softmax, describe_softmax, check_softmax},
};
const size_t mt_k_reduce_ndefs = sizeof mt_k_reduce_defs / sizeof *mt_k_reduce_defs;
