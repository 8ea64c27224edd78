/*
 * vecmath.c - exp-based float32 kernels (exp, sigmoid, both gelus, tanh, softmax rows) compiled
 * once per x86 ISA level and dispatched at run time.
 *
 * glibc's expf does not vectorise without -ffast-math, and scalar code written for the
 * auto-vectoriser does not survive either: clamps become branches (gcc threads them) and
 * float-to-int conversions are not if-converted under -ftrapping-math. So these kernels use
 * GCC vector extensions explicitly. The vector width must match the ISA (gcc scalarises
 * comparisons and selects on vectors wider than the target's registers), so
 * vecmath_impl.h is compiled three times: 16-byte vectors for the x86-64 baseline (and
 * NEON or plain C elsewhere), 32-byte under `#pragma GCC target("avx2,fma")`, 64-byte under
 * AVX-512. mt_k_isa() picks one at each call. Explicit dispatch rather than
 * target_clones: the ifunc resolvers target_clones generate run during relocation, before
 * sanitizer runtimes are initialised, and crash TSan/ASan builds of the library.
 */
#include "kernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define VM_X86 1
#else
#define VM_X86 0
#endif

typedef float vm_f4 __attribute__((vector_size(16)));
typedef int32_t vm_i4 __attribute__((vector_size(16)));
typedef uint32_t vm_u4 __attribute__((vector_size(16)));
typedef float vm_f8 __attribute__((vector_size(32)));
typedef int32_t vm_i8 __attribute__((vector_size(32)));
typedef uint32_t vm_u8 __attribute__((vector_size(32)));
typedef float vm_f16 __attribute__((vector_size(64)));
typedef int32_t vm_i16 __attribute__((vector_size(64)));
typedef uint32_t vm_u16 __attribute__((vector_size(64)));

/* The helpers below are macros over the current VM_VF/VM_VI/VM_VU/VM_W (set before each
 * inclusion of vecmath_impl.h), not functions: passing wide vectors by value to functions
 * compiled for a narrower ISA draws -Wpsabi warnings. */
#define VM_SPLAT(x) ((VM_VF){0} + (float)(x))
/* m ? a : b per lane, m from a vector comparison (all-ones or zero lanes). */
#define VM_SEL(m, a, b) ((VM_VF)(((m) & (VM_VI)(a)) | (~(m) & (VM_VI)(b))))
#define VM_ABS(x) ((VM_VF)((VM_VI)(x)&0x7fffffff))

/* out = exp(x) within 2 ulp (Cephes' expf polynomial). exp(x) = 2^n * exp(r) with
 * n = rint(x / ln 2), |r| <= ln 2 / 2; 2^n is applied as two factors so each stays a normal
 * float from the denormal range (x ~ -104) up to overflow (x ~ 89). NaN propagates (the
 * clamps compare false); +-inf give inf and 0. Adding 1.5 * 2^23 rounds x / ln 2 to the
 * integer n, which then sits in the low mantissa bits of t. */
#define VM_EXP(out, xin)                                                                           \
    do {                                                                                           \
        VM_VF x_ = (xin);                                                                          \
        x_ = VM_SEL(x_ < -104.0f, VM_SPLAT(-104.0f), x_);                                          \
        x_ = VM_SEL(x_ > 89.0f, VM_SPLAT(89.0f), x_);                                              \
        VM_VF t_ = x_ * 1.44269504088896341f + 12582912.0f;                                        \
        VM_VF fn_ = t_ - 12582912.0f;                                                              \
        VM_VI n_ = (VM_VI)t_ - 0x4B400000;                                                         \
        VM_VF r_ = x_ - fn_ * 0.693359375f;                                                        \
        r_ = r_ - fn_ * -2.12194440e-4f;                                                           \
        VM_VF p_ = r_ * 1.9875691500e-4f + 1.3981999507e-3f;                                       \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                           \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                           \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                           \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                           \
        p_ = p_ * (r_ * r_) + r_ + 1.0f;                                                           \
        VM_VI n1_ = n_ >> 1, n2_ = n_ - n1_;                                                       \
        (out) = p_ * (VM_VF)((VM_VU)(n1_ + 127) << 23) * (VM_VF)((VM_VU)(n2_ + 127) << 23);        \
    } while (0)

/* For i in [0, n): o[i] = the body (the trailing arguments, which read the vector `x` =
 * a[i .. i + VM_W) and assign the vector `y`). The tail runs through the same vector code
 * on a zero-padded copy, so every element is computed identically whatever its position. */
#define VM_MAP(o, a, n, ...)                                                                       \
    do {                                                                                           \
        int64_t i_ = 0;                                                                            \
        for (; i_ + VM_W <= (n); i_ += VM_W) {                                                     \
            VM_VF x, y;                                                                            \
            memcpy(&x, (a) + i_, sizeof x);                                                        \
            __VA_ARGS__;                                                                           \
            memcpy((o) + i_, &y, sizeof y);                                                        \
        }                                                                                          \
        if (i_ < (n)) {                                                                            \
            size_t left_ = sizeof(float) * (size_t)((n)-i_);                                       \
            VM_VF x = VM_SPLAT(0.0f), y;                                                           \
            memcpy(&x, (a) + i_, left_);                                                           \
            __VA_ARGS__;                                                                           \
            memcpy((o) + i_, &y, left_);                                                           \
        }                                                                                          \
    } while (0)

#define VM_VF vm_f4
#define VM_VI vm_i4
#define VM_VU vm_u4
#define VM_W 4
#define VM_NAME(x) vm_base_##x
#include "vecmath_impl.h"
#undef VM_NAME
#undef VM_W
#undef VM_VU
#undef VM_VI
#undef VM_VF

#if VM_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VM_VF vm_f8
#define VM_VI vm_i8
#define VM_VU vm_u8
#define VM_W 8
#define VM_NAME(x) vm_avx2_##x
#include "vecmath_impl.h"
#undef VM_NAME
#undef VM_W
#undef VM_VU
#undef VM_VI
#undef VM_VF
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
#define VM_VF vm_f16
#define VM_VI vm_i16
#define VM_VU vm_u16
#define VM_W 16
#define VM_NAME(x) vm_avx512_##x
#include "vecmath_impl.h"
#undef VM_NAME
#undef VM_W
#undef VM_VU
#undef VM_VI
#undef VM_VF
#pragma GCC pop_options
#endif

#if VM_X86
#define VM_DISPATCH(fn, args)                                                                      \
    do {                                                                                           \
        uint32_t isa_ = mt_k_isa();                                                                \
        if (isa_ >= MT_K_ISA_AVX512) vm_avx512_##fn args;                                          \
        else if (isa_ >= MT_K_ISA_AVX2) vm_avx2_##fn args;                                         \
        else vm_base_##fn args;                                                                    \
    } while (0)
#else
#define VM_DISPATCH(fn, args) vm_base_##fn args
#endif

void mt_k_exp_f32(float *o, const float *a, int64_t n) { VM_DISPATCH(exp, (o, a, n)); }

void mt_k_sigmoid_f32(float *o, const float *a, int64_t n) { VM_DISPATCH(sigmoid, (o, a, n)); }

void mt_k_gelu_f32(float *o, const float *a, int64_t n) { VM_DISPATCH(gelu, (o, a, n)); }

void mt_k_gelu_erf_f32(float *o, const float *a, int64_t n) { VM_DISPATCH(gelu_erf, (o, a, n)); }

void mt_k_tanh_f32(float *o, const float *a, int64_t n) { VM_DISPATCH(tanh, (o, a, n)); }

void mt_k_softmax_row_f32(float *o, const float *a, int64_t n) {
    VM_DISPATCH(softmax_row, (o, a, n));
}

void mt_k_softmax_cols_f32(float *o, const float *a, int64_t len, int64_t stride, int64_t w) {
    VM_DISPATCH(softmax_cols, (o, a, len, stride, w));
}
