/*
 * vecmath_impl.h - body of the exp-based float32 kernels, included by vecmath.c once per
 * target ISA with VM_NAME(x) defined to give each copy its own suffix. Not a public or
 * shared header: it defines functions.
 */

static void VM_NAME(exp)(float *o, const float *a, int64_t n) { VM_MAP(o, a, n, VM_EXP(y, x)); }

/* exp of a non-positive argument never overflows, and e / (1 + e) for negative x keeps full
 * relative precision in the left tail. */
#define VM_SIGMOID(y, x)                                                                           \
    do {                                                                                           \
        VM_VF e_, r_;                                                                              \
        VM_EXP(e_, -VM_ABS(x));                                                                    \
        r_ = 1.0f / (1.0f + e_);                                                                   \
        (y) = VM_SEL((x) >= 0.0f, r_, e_ * r_);                                                    \
    } while (0)

static void VM_NAME(sigmoid)(float *o, const float *a, int64_t n) {
    VM_MAP(o, a, n, VM_SIGMOID(y, x));
}

/* gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u): the same function without the
 * cancellation of 1 + tanh(u) for negative x. */
static void VM_NAME(gelu)(float *o, const float *a, int64_t n) {
    VM_MAP(o, a, n, {
        VM_VF u = 0.7978845608028654f * (x + 0.044715f * x * x * x), s;
        VM_SIGMOID(s, 2.0f * u);
        y = x * s;
    });
}

/* Exact GELU, x * Phi(x) with Phi(x) = erfc(-x / sqrt 2) / 2, and 1 - erfc(|x| / sqrt 2) / 2
 * for x >= 0: erfc keeps its relative precision in the left tail, where 1 + erf would cancel.
 * erfc(z), z >= 0, is t exp(-z^2 + P(t)) with t = 1 / (1 + z / 2), one polynomial for every z
 * (fitted by tools/fit_erfc.py: relative error below 1e-7 in exact arithmetic). The relative
 * error of exp(-z^2) is that of z^2 times z^2, so z^2 = x^2 / 2 is never rounded: it is
 * (xh^2 + xl (|x| + xh)) / 2, xh being |x| with its low 12 mantissa bits cleared (xh^2 is then
 * exact) and xl = |x| - xh. Beyond |x| = 14 the result is below float32's normal range (and
 * |x| = inf would make xl NaN): the tail is 0 there. */
static void VM_NAME(gelu_erf)(float *o, const float *a, int64_t n) {
    VM_MAP(o, a, n, {
        VM_VF ax = VM_ABS(x), t = 1.0f / (1.0f + 0.35355339059327376f * ax);
        VM_VF p = 1.6926112264e-01f * t - 8.1559703364e-01f;
        p = p * t + 1.4775857842e+00f;
        p = p * t - 1.1255997397e+00f;
        p = p * t + 2.7412057791e-01f;
        p = p * t - 1.8499219057e-01f;
        p = p * t + 9.6610622641e-02f;
        p = p * t + 3.7409899221e-01f;
        p = p * t + 1.0000240332e+00f;
        p = p * t - 1.2655122417e+00f;
        VM_VF xh = (VM_VF)((VM_VI)ax & (int32_t)0xfffff000), xl = ax - xh, big, tiny;
        VM_EXP(big, p - 0.5f * xl * (ax + xh));
        VM_EXP(tiny, -0.5f * (xh * xh));
        VM_VF half_erfc = VM_SEL(ax < 14.0f, 0.5f * t * big * tiny, VM_SPLAT(0.0f));
        y = x * VM_SEL(x < 0.0f, half_erfc, 1.0f - half_erfc);
    });
}

/* Cephes' tanhf: an odd polynomial below 0.625, where 1 - 2 / (exp(2|x|) + 1) would cancel,
 * and that formula (with x's sign) above; both are computed and the lanes selected. */
static void VM_NAME(tanh)(float *o, const float *a, int64_t n) {
    VM_MAP(o, a, n, {
        VM_VF ax = VM_ABS(x), z = x * x, e;
        VM_VF small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                        1.33314422036e-1f) *
                           z -
                       3.33332819422e-1f) *
                          z * x +
                      x;
        VM_EXP(e, 2.0f * ax);
        VM_VF big = 1.0f - 2.0f / (e + 1.0f);
        big = (VM_VF)((VM_VI)big | ((VM_VI)x & (int32_t)0x80000000));
        y = VM_SEL(ax < 0.625f, small, big);
    });
}

#undef VM_SIGMOID

/* NaN-propagating max of a row (n >= 1), in independent lanes so it vectorises. */
static float VM_NAME(row_max)(const float *a, int64_t n) {
    float acc[16];
    for (int j = 0; j < 16; j++) acc[j] = a[0];
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            float x = a[i + j];
            acc[j] = (x > acc[j] || x != x) ? x : acc[j];
        }
    float m = a[0];
    for (; i < n; i++) m = (a[i] > m || a[i] != a[i]) ? a[i] : m;
    for (int j = 0; j < 16; j++) m = (acc[j] > m || acc[j] != acc[j]) ? acc[j] : m;
    return m;
}

static double VM_NAME(row_sum)(const float *a, int64_t n) {
    double acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += (double)a[i + j];
    double s = 0.0;
    for (; i < n; i++) s += (double)a[i];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* Softmax of one contiguous row. All of the row is read (max pass) before any of it is
 * written, and the exp pass reads each chunk before writing it, so o may alias a. */
static void VM_NAME(softmax_row)(float *o, const float *a, int64_t n) {
    const float m = VM_NAME(row_max)(a, n);
    VM_MAP(o, a, n, VM_EXP(y, x - m));
    const float inv = (float)(1.0 / VM_NAME(row_sum)(o, n));
    for (int64_t i = 0; i < n; i++) o[i] *= inv;
}

/* Softmax down columns [0, w) (w <= MT_K_SM_COLS) of a slab of len rows spaced
 * `stride` apart: the same passes, vectorised across the columns. */
static void VM_NAME(softmax_cols)(float *o, const float *a, int64_t len, int64_t stride,
                                  int64_t w) {
    float m[MT_K_SM_COLS], d[MT_K_SM_COLS];
    double s[MT_K_SM_COLS];
    for (int64_t i = 0; i < w; i++) {
        m[i] = a[i];
        s[i] = 0.0;
    }
    for (int64_t l = 1; l < len; l++) {
        const float *ar = a + l * stride;
        for (int64_t i = 0; i < w; i++) {
            float x = ar[i];
            m[i] = (x > m[i] || x != x) ? x : m[i];
        }
    }
    for (int64_t l = 0; l < len; l++) {
        const float *ar = a + l * stride;
        float *orow = o + l * stride;
        for (int64_t i = 0; i < w; i++) d[i] = ar[i] - m[i];
        VM_MAP(orow, d, w, VM_EXP(y, x));
        for (int64_t i = 0; i < w; i++) s[i] += (double)orow[i];
    }
    for (int64_t i = 0; i < w; i++) m[i] = (float)(1.0 / s[i]);
    for (int64_t l = 0; l < len; l++) {
        float *orow = o + l * stride;
        for (int64_t i = 0; i < w; i++) orow[i] *= m[i];
    }
}
