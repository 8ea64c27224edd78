/*
 * matmul.c - C = A @ B for 2-D (m,k)x(k,n) and batched 3-D (B,m,k)x(B,k,n) row-major arrays.
 *
 * Float dtypes use a GotoBLAS-style blocked GEMM: B is packed into KC x NC panels (NR
 * columns interleaved per k step), A into MC x KC blocks (MR rows interleaved), and a
 * register-tiled micro-kernel computes MR x NR tiles of C with broadcast-A times vector-B
 * FMAs. Micro-kernels exist for AVX-512 and AVX2+FMA (selected at run time, so the library
 * itself stays baseline x86-64) and in plain C for everything else.
 *
 * Parallelism: each (batch, row range, column range) tile of C is one unit of work, and a
 * block owns whole tiles, so blocks never write the same part of C and need no
 * synchronisation. Every block packs the panels of its own tile; the row x column grid is
 * chosen to keep that duplicated packing small (see mm_grid).
 *
 * Integer dtypes use a simple cache-blocked loop with wrapping arithmetic (numpy's
 * behaviour on overflow).
 */
#include "kernels.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define MM_X86 1
#include <immintrin.h>
#else
#define MM_X86 0
#endif

enum {
    D_F32 = MTIART_DTYPE_FLOAT32,
    D_F64 = MTIART_DTYPE_FLOAT64,
    D_I32 = MTIART_DTYPE_INT32,
    D_I64 = MTIART_DTYPE_INT64
};

/* 40 bytes: with its three buffers the launch fits the runtime's inline argument storage. */
typedef struct mm_params {
    int64_t m, n, k, batch;
    uint16_t rgrid, cgrid; /* tiles per matrix: rgrid row ranges x cgrid column ranges */
    uint8_t dtype;
    uint8_t slot_c, slot_a, slot_b;
} mm_params;
_Static_assert(sizeof(mm_params) == 40, "mm_params must stay small");

/* The ISA is chosen on the host, so all blocks agree, and travels in dtype's high bits. */
#define MM_DTYPE(p) ((p).dtype & 0xf)
#define MM_ISA(p) ((uint32_t)(p).dtype >> 4)

enum {
    MM_ISA_GENERIC = MT_K_ISA_GENERIC,
    MM_ISA_AVX2 = MT_K_ISA_AVX2,
    MM_ISA_AVX512 = MT_K_ISA_AVX512
};

/* Cache blocking: a KC x NR micro-panel of B stays in L1 while the MC x KC block of A
 * streams from L2; the KC x NC panel of B lives in L2/L3. */
#define MM_KC 256
#define MM_MC 192 /* multiple of every MR below (4, 6, 12) */
#define MM_NC 2048

typedef void (*ukr_f32_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                           int first);
typedef void (*ukr_f64_fn)(int64_t kc, const double *a, const double *b, double *c, int64_t ldc,
                           int first);

/* ---- generic micro-kernels ------------------------------------------------------------------ */

#define DEF_UKR_GENERIC(NAME, T, MR, NR)                                                           \
    static void NAME(int64_t kc, const T *a, const T *b, T *c, int64_t ldc, int first) {           \
        T acc[MR][NR];                                                                             \
        for (int r = 0; r < MR; r++)                                                               \
            for (int j = 0; j < NR; j++) acc[r][j] = 0;                                            \
        for (int64_t p = 0; p < kc; p++) {                                                         \
            for (int r = 0; r < MR; r++) {                                                         \
                const T av = a[p * MR + r];                                                        \
                for (int j = 0; j < NR; j++) acc[r][j] += av * b[p * NR + j];                      \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < MR; r++)                                                               \
            for (int j = 0; j < NR; j++)                                                           \
                c[r * ldc + j] = first ? acc[r][j] : c[r * ldc + j] + acc[r][j];                   \
    }
DEF_UKR_GENERIC(ukr_f32_generic, float, 4, 16)
DEF_UKR_GENERIC(ukr_f64_generic, double, 4, 8)

/* ---- x86 micro-kernels ----------------------------------------------------------------------- */

#if MM_X86

/* Row r of the tile: two vector accumulators (c##r##0, c##r##1) updated with a[r]. */
#define MM_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define MM_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define MM_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define MM_ROWS4(X) X(0) X(1) X(2) X(3)

/* AVX-512 float32: 12 x 32 tile, 24 zmm accumulators + 2 for B + 1 broadcast. */
__attribute__((target("avx512f"))) static void
ukr_f32_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int first) {
#define DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps();
    MM_ROWS12(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m512 av = _mm512_set1_ps(a[r]);                                                          \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        MM_ROWS12(STEP)
        a += 12;
        b += 32;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        float *cr = c + (r)*ldc;                                                                   \
        if (!first) {                                                                              \
            c##r##0 = _mm512_add_ps(c##r##0, _mm512_loadu_ps(cr));                                 \
            c##r##1 = _mm512_add_ps(c##r##1, _mm512_loadu_ps(cr + 16));                            \
        }                                                                                          \
        _mm512_storeu_ps(cr, c##r##0);                                                             \
        _mm512_storeu_ps(cr + 16, c##r##1);                                                        \
    }
    MM_ROWS12(STORE)
#undef STORE
}

/* AVX-512 float64: 12 x 16 tile. */
__attribute__((target("avx512f"))) static void
ukr_f64_avx512(int64_t kc, const double *a, const double *b, double *c, int64_t ldc, int first) {
#define DECL(r) __m512d c##r##0 = _mm512_setzero_pd(), c##r##1 = _mm512_setzero_pd();
    MM_ROWS12(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m512d av = _mm512_set1_pd(a[r]);                                                         \
        c##r##0 = _mm512_fmadd_pd(av, b0, c##r##0);                                                \
        c##r##1 = _mm512_fmadd_pd(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        __m512d b0 = _mm512_load_pd(b), b1 = _mm512_load_pd(b + 8);
        MM_ROWS12(STEP)
        a += 12;
        b += 16;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        double *cr = c + (r)*ldc;                                                                  \
        if (!first) {                                                                              \
            c##r##0 = _mm512_add_pd(c##r##0, _mm512_loadu_pd(cr));                                 \
            c##r##1 = _mm512_add_pd(c##r##1, _mm512_loadu_pd(cr + 8));                             \
        }                                                                                          \
        _mm512_storeu_pd(cr, c##r##0);                                                             \
        _mm512_storeu_pd(cr + 8, c##r##1);                                                         \
    }
    MM_ROWS12(STORE)
#undef STORE
}

/* AVX2 + FMA float32: 6 x 16 tile, 12 ymm accumulators. */
__attribute__((target("avx2,fma"))) static void
ukr_f32_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int first) {
#define DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
    MM_ROWS6(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m256 av = _mm256_broadcast_ss(a + (r));                                                  \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        MM_ROWS6(STEP)
        a += 6;
        b += 16;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        float *cr = c + (r)*ldc;                                                                   \
        if (!first) {                                                                              \
            c##r##0 = _mm256_add_ps(c##r##0, _mm256_loadu_ps(cr));                                 \
            c##r##1 = _mm256_add_ps(c##r##1, _mm256_loadu_ps(cr + 8));                             \
        }                                                                                          \
        _mm256_storeu_ps(cr, c##r##0);                                                             \
        _mm256_storeu_ps(cr + 8, c##r##1);                                                         \
    }
    MM_ROWS6(STORE)
#undef STORE
}

/* AVX2 + FMA float64: 6 x 8 tile. */
__attribute__((target("avx2,fma"))) static void
ukr_f64_avx2(int64_t kc, const double *a, const double *b, double *c, int64_t ldc, int first) {
#define DECL(r) __m256d c##r##0 = _mm256_setzero_pd(), c##r##1 = _mm256_setzero_pd();
    MM_ROWS6(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m256d av = _mm256_broadcast_sd(a + (r));                                                 \
        c##r##0 = _mm256_fmadd_pd(av, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_pd(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);
        MM_ROWS6(STEP)
        a += 6;
        b += 8;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        double *cr = c + (r)*ldc;                                                                  \
        if (!first) {                                                                              \
            c##r##0 = _mm256_add_pd(c##r##0, _mm256_loadu_pd(cr));                                 \
            c##r##1 = _mm256_add_pd(c##r##1, _mm256_loadu_pd(cr + 4));                             \
        }                                                                                          \
        _mm256_storeu_pd(cr, c##r##0);                                                             \
        _mm256_storeu_pd(cr + 4, c##r##1);                                                         \
    }
    MM_ROWS6(STORE)
#undef STORE
}

/* Micro-kernels that read B in place (row stride ldb) instead of from a packed panel, for
 * the products whose few rows of A would not pay for packing B (see gemm_tile_direct).
 * Per element they run the same chain of fused multiply-adds as the packed kernels, so
 * either path gives the same bits. */

/* AVX-512 float32: 8 x 32 tile (16 zmm accumulators). */
__attribute__((target("avx512f"))) static void ukrd_f32_avx512(int64_t kc, const float *a,
                                                               const float *b, int64_t ldb,
                                                               float *c, int64_t ldc, int first) {
#define DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps();
    MM_ROWS8(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m512 av = _mm512_set1_ps(a[r]);                                                          \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        MM_ROWS8(STEP)
        a += 8;
        b += ldb;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        float *cr = c + (r)*ldc;                                                                   \
        if (!first) {                                                                              \
            c##r##0 = _mm512_add_ps(c##r##0, _mm512_loadu_ps(cr));                                 \
            c##r##1 = _mm512_add_ps(c##r##1, _mm512_loadu_ps(cr + 16));                            \
        }                                                                                          \
        _mm512_storeu_ps(cr, c##r##0);                                                             \
        _mm512_storeu_ps(cr + 16, c##r##1);                                                        \
    }
    MM_ROWS8(STORE)
#undef STORE
}

/* AVX2 + FMA float32: 4 x 16 tile. */
__attribute__((target("avx2,fma"))) static void ukrd_f32_avx2(int64_t kc, const float *a,
                                                              const float *b, int64_t ldb, float *c,
                                                              int64_t ldc, int first) {
#define DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
    MM_ROWS4(DECL)
#undef DECL
#define STEP(r)                                                                                    \
    {                                                                                              \
        __m256 av = _mm256_broadcast_ss(a + (r));                                                  \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                                \
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        MM_ROWS4(STEP)
        a += 4;
        b += ldb;
    }
#undef STEP
#define STORE(r)                                                                                   \
    {                                                                                              \
        float *cr = c + (r)*ldc;                                                                   \
        if (!first) {                                                                              \
            c##r##0 = _mm256_add_ps(c##r##0, _mm256_loadu_ps(cr));                                 \
            c##r##1 = _mm256_add_ps(c##r##1, _mm256_loadu_ps(cr + 8));                             \
        }                                                                                          \
        _mm256_storeu_ps(cr, c##r##0);                                                             \
        _mm256_storeu_ps(cr + 8, c##r##1);                                                         \
    }
    MM_ROWS4(STORE)
#undef STORE
}

#endif /* MM_X86 */

/* ---- tile shapes ----------------------------------------------------------------------------- */

typedef struct mm_shape {
    int mr, nr;
} mm_shape;

static mm_shape mm_tile_shape(int dtype, uint32_t isa) {
    mm_shape s;
    int f32 = dtype == D_F32;
    switch (isa) {
    case MM_ISA_AVX512:
        s.mr = 12;
        s.nr = f32 ? 32 : 16;
        break;
    case MM_ISA_AVX2:
        s.mr = 6;
        s.nr = f32 ? 16 : 8;
        break;
    default:
        if (dtype == D_F32 || dtype == D_F64) {
            s.mr = 4;
            s.nr = f32 ? 16 : 8;
        } else {
            s.mr = 1;
            s.nr = 16; /* integer kernel: tiles of whole rows, 16 columns (64+ bytes) */
        }
        break;
    }
    return s;
}

/* ---- float GEMM driver ----------------------------------------------------------------------- */

/* 64-byte aligned so the micro-kernels can use aligned vector loads of packed panels. */
static void *mm_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64 + 64); }

/* Pack rows [0, rows) of an MR-row panel of A: dst[p * mr + r] = a[r * lda + p]. This is
 * a transpose, so groups of rows go through SSE register transposes (4x4 floats, 2x2
 * doubles); scalar copies, with their strided stores, made packing A a tenth of the
 * whole GEMM. */
static void pack_a_rows_f32(float *dst, const float *a, int64_t lda, int64_t rows, int64_t kc,
                            int mr) {
    int64_t r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 4 <= rows; r0 += 4) {
        const float *s0 = a + r0 * lda, *s1 = s0 + lda, *s2 = s1 + lda, *s3 = s2 + lda;
        int64_t p = 0;
        for (; p + 4 <= kc; p += 4) {
            __m128 x0 = _mm_loadu_ps(s0 + p), x1 = _mm_loadu_ps(s1 + p);
            __m128 x2 = _mm_loadu_ps(s2 + p), x3 = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
            _mm_storeu_ps(dst + (p + 0) * mr + r0, x0);
            _mm_storeu_ps(dst + (p + 1) * mr + r0, x1);
            _mm_storeu_ps(dst + (p + 2) * mr + r0, x2);
            _mm_storeu_ps(dst + (p + 3) * mr + r0, x3);
        }
        for (; p < kc; p++) {
            dst[p * mr + r0] = s0[p];
            dst[p * mr + r0 + 1] = s1[p];
            dst[p * mr + r0 + 2] = s2[p];
            dst[p * mr + r0 + 3] = s3[p];
        }
    }
#endif
    for (int64_t r = r0; r < rows; r++)
        for (int64_t p = 0; p < kc; p++) dst[p * mr + r] = a[r * lda + p];
}

static void pack_a_rows_f64(double *dst, const double *a, int64_t lda, int64_t rows, int64_t kc,
                            int mr) {
    int64_t r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 2 <= rows; r0 += 2) {
        const double *s0 = a + r0 * lda, *s1 = s0 + lda;
        int64_t p = 0;
        for (; p + 2 <= kc; p += 2) {
            __m128d x0 = _mm_loadu_pd(s0 + p), x1 = _mm_loadu_pd(s1 + p);
            _mm_storeu_pd(dst + (p + 0) * mr + r0, _mm_unpacklo_pd(x0, x1));
            _mm_storeu_pd(dst + (p + 1) * mr + r0, _mm_unpackhi_pd(x0, x1));
        }
        for (; p < kc; p++) {
            dst[p * mr + r0] = s0[p];
            dst[p * mr + r0 + 1] = s1[p];
        }
    }
#endif
    for (int64_t r = r0; r < rows; r++)
        for (int64_t p = 0; p < kc; p++) dst[p * mr + r] = a[r * lda + p];
}

/* One tile: C[r0:r1, c0:c1] = A[r0:r1, :] @ B[:, c0:c1] (row strides k, n, n). */
#define DEF_GEMM_TILE(SUF, T, UKR_T)                                                               \
    static void pack_a_##SUF(T *dst, const T *a, int64_t lda, int64_t mc, int64_t kc, int mr) {    \
        for (int64_t i = 0; i < mc; i += mr) {                                                     \
            int64_t rows = mc - i < mr ? mc - i : mr;                                              \
            pack_a_rows_##SUF(dst, a + i * lda, lda, rows, kc, mr);                                \
            for (int64_t r = rows; r < mr; r++)                                                    \
                for (int64_t p = 0; p < kc; p++) dst[p * mr + r] = 0;                              \
            dst += kc * mr;                                                                        \
        }                                                                                          \
    }                                                                                              \
    static void pack_b_##SUF(T *dst, const T *b, int64_t ldb, int64_t kc, int64_t nc, int nr) {    \
        int64_t panels = (nc + nr - 1) / nr;                                                       \
        for (int64_t p = 0; p < kc; p++) {                                                         \
            const T *src = b + p * ldb;                                                            \
            for (int64_t j = 0; j < panels; j++) {                                                 \
                T *d = dst + j * kc * nr + p * nr;                                                 \
                int64_t cols = nc - j * nr < nr ? nc - j * nr : nr;                                \
                memcpy(d, src + j * nr, (size_t)cols * sizeof(T));                                 \
                for (int64_t c = cols; c < nr; c++) d[c] = 0;                                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void gemm_tile_##SUF(UKR_T ukr, int mr, int nr, T *ap, T *bp, const T *a, const T *b,   \
                                T *c, int64_t k, int64_t n, int64_t r0, int64_t r1, int64_t c0,    \
                                int64_t c1) {                                                      \
        T tmp[12 * 32] __attribute__((aligned(64)));                                               \
        if (k == 0) {                                                                              \
            for (int64_t i = r0; i < r1; i++)                                                      \
                memset(c + i * n + c0, 0, (size_t)(c1 - c0) * sizeof(T));                          \
            return;                                                                                \
        }                                                                                          \
        for (int64_t jc = c0; jc < c1; jc += MM_NC) {                                              \
            int64_t nc = c1 - jc < MM_NC ? c1 - jc : MM_NC;                                        \
            for (int64_t pc = 0; pc < k; pc += MM_KC) {                                            \
                int64_t kc = k - pc < MM_KC ? k - pc : MM_KC;                                      \
                int first = pc == 0;                                                               \
                pack_b_##SUF(bp, b + pc * n + jc, n, kc, nc, nr);                                  \
                for (int64_t ic = r0; ic < r1; ic += MM_MC) {                                      \
                    int64_t mc = r1 - ic < MM_MC ? r1 - ic : MM_MC;                                \
                    pack_a_##SUF(ap, a + ic * k + pc, k, mc, kc, mr);                              \
                    for (int64_t jr = 0; jr < nc; jr += nr) {                                      \
                        int64_t nn = nc - jr < nr ? nc - jr : nr;                                  \
                        const T *bpp = bp + (jr / nr) * kc * nr;                                   \
                        for (int64_t ir = 0; ir < mc; ir += mr) {                                  \
                            int64_t mm = mc - ir < mr ? mc - ir : mr;                              \
                            const T *app = ap + (ir / mr) * kc * mr;                               \
                            T *cc = c + (ic + ir) * n + jc + jr;                                   \
                            if (mm == mr && nn == nr) {                                            \
                                ukr(kc, app, bpp, cc, n, first);                                   \
                            } else {                                                               \
                                ukr(kc, app, bpp, tmp, nr, 1);                                     \
                                for (int64_t r = 0; r < mm; r++)                                   \
                                    for (int64_t q = 0; q < nn; q++)                               \
                                        cc[r * n + q] = first ? tmp[r * nr + q]                    \
                                                              : cc[r * n + q] + tmp[r * nr + q];   \
                            }                                                                      \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEF_GEMM_TILE(f32, float, ukr_f32_fn)
DEF_GEMM_TILE(f64, double, ukr_f64_fn)

/* ---- float32 GEMM with B read in place ------------------------------------------------------- */

typedef void (*ukrd_f32_fn)(int64_t kc, const float *a, const float *b, int64_t ldb, float *c,
                            int64_t ldc, int first);

/* The direct kernels' tile (0 x 0: none for this ISA). */
static mm_shape mm_direct_shape(uint32_t isa) {
    mm_shape s = {0, 0};
#if MM_X86
    if (isa == MM_ISA_AVX512) s = (mm_shape){8, 32};
    else if (isa == MM_ISA_AVX2) s = (mm_shape){4, 16};
#else
    (void)isa;
#endif
    return s;
}

static ukrd_f32_fn mm_ukrd_f32(uint32_t isa) {
#if MM_X86
    if (isa == MM_ISA_AVX512) return ukrd_f32_avx512;
    if (isa == MM_ISA_AVX2) return ukrd_f32_avx2;
#endif
    (void)isa;
    return NULL;
}

/* Up to this many rows per tile, a float32 product reads B in place: packing B costs a copy
 * of it per tile, paid back only over many panels of A rows (and tiles that split the
 * rows would each pack all of B). The same KC blocking as the packed path, so both give
 * the same bits. */
#define MM_DIRECT_ROWS 64

/* Whether a float32 product of m rows reads B in place on this ISA (host and kernel agree:
 * the grid is split on the direct kernels' tile). */
static int mm_uses_direct(int dtype, uint32_t isa, int64_t m) {
    return dtype == D_F32 && m <= MM_DIRECT_ROWS && mm_direct_shape(isa).mr != 0;
}

/* The tile a launch's blocks are split on. */
static mm_shape mm_kernel_shape(int dtype, uint32_t isa, int64_t m) {
    return mm_uses_direct(dtype, isa, m) ? mm_direct_shape(isa) : mm_tile_shape(dtype, isa);
}

/* One tile, as gemm_tile_f32 (ap: room for the tile's rows of A, packed). */
static void gemm_tile_direct(uint32_t isa, float *ap, float *bpad, const float *a, const float *b,
                             float *c, int64_t k, int64_t n, int64_t r0, int64_t r1, int64_t c0,
                             int64_t c1) {
    const mm_shape sh = mm_direct_shape(isa);
    const int mr = sh.mr, nr = sh.nr;
    const ukrd_f32_fn ukr = mm_ukrd_f32(isa);
    float tmp[8 * 32] __attribute__((aligned(64)));
    if (k == 0) {
        for (int64_t i = r0; i < r1; i++)
            memset(c + i * n + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        return;
    }
    for (int64_t pc = 0; pc < k; pc += MM_KC) {
        int64_t kc = k - pc < MM_KC ? k - pc : MM_KC;
        int first = pc == 0;
        pack_a_f32(ap, a + r0 * k + pc, k, r1 - r0, kc, mr);
        for (int64_t jr = c0; jr < c1; jr += nr) {
            int64_t nn = c1 - jr < nr ? c1 - jr : nr;
            const float *bb = b + pc * n + jr;
            int64_t ldb = n;
            if (nn < nr) {
                /* B's last columns: a zero-padded copy (reading past them could leave the
                 * buffer). */
                for (int64_t p = 0; p < kc; p++) {
                    memcpy(bpad + p * nr, bb + p * n, (size_t)nn * sizeof(float));
                    memset(bpad + p * nr + nn, 0, (size_t)(nr - nn) * sizeof(float));
                }
                bb = bpad;
                ldb = nr;
            }
            for (int64_t ir = r0; ir < r1; ir += mr) {
                int64_t mm = r1 - ir < mr ? r1 - ir : mr;
                const float *app = ap + ((ir - r0) / mr) * kc * mr;
                float *cc = c + ir * n + jr;
                if (mm == mr && nn == nr) {
                    ukr(kc, app, bb, ldb, cc, n, first);
                } else { /* an edge tile goes through tmp */
                    ukr(kc, app, bb, ldb, tmp, nr, 1);
                    for (int64_t r = 0; r < mm; r++)
                        for (int64_t q = 0; q < nn; q++)
                            cc[r * n + q] =
                                first ? tmp[r * nr + q] : cc[r * n + q] + tmp[r * nr + q];
                }
            }
        }
    }
}

static ukr_f32_fn mm_ukr_f32(uint32_t isa) {
#if MM_X86
    if (isa == MM_ISA_AVX512) return ukr_f32_avx512;
    if (isa == MM_ISA_AVX2) return ukr_f32_avx2;
#endif
    (void)isa;
    return ukr_f32_generic;
}
static ukr_f64_fn mm_ukr_f64(uint32_t isa) {
#if MM_X86
    if (isa == MM_ISA_AVX512) return ukr_f64_avx512;
    if (isa == MM_ISA_AVX2) return ukr_f64_avx2;
#endif
    (void)isa;
    return ukr_f64_generic;
}

/* ---- integer kernel -------------------------------------------------------------------------- */

/* C rows [r0, r1), columns [c0, c1): for a chunk of columns, each row of C accumulates
 * a[i,p] * B[p, chunk] so the inner loop is a contiguous, vectorisable axpy; the B chunk is
 * reused from cache across rows. Unsigned arithmetic gives defined wrap-around. */
#define MM_ICOLS 512
#define DEF_IMM(SUF, T, U)                                                                         \
    static void imm_tile_##SUF(const T *a, const T *b, T *c, int64_t k, int64_t n, int64_t r0,     \
                               int64_t r1, int64_t c0, int64_t c1) {                               \
        for (int64_t jc = c0; jc < c1; jc += MM_ICOLS) {                                           \
            int64_t w = c1 - jc < MM_ICOLS ? c1 - jc : MM_ICOLS;                                   \
            for (int64_t i = r0; i < r1; i++) {                                                    \
                U acc[MM_ICOLS];                                                                   \
                for (int64_t j = 0; j < w; j++) acc[j] = 0;                                        \
                const T *ar = a + i * k;                                                           \
                for (int64_t p = 0; p < k; p++) {                                                  \
                    const U av = (U)ar[p];                                                         \
                    const T *br = b + p * n + jc;                                                  \
                    for (int64_t j = 0; j < w; j++) acc[j] += av * (U)br[j];                       \
                }                                                                                  \
                T *cr = c + i * n + jc;                                                            \
                for (int64_t j = 0; j < w; j++) cr[j] = (T)acc[j];                                 \
            }                                                                                      \
        }                                                                                          \
    }
DEF_IMM(i32, int32_t, uint32_t)
DEF_IMM(i64, int64_t, uint64_t)

/* ---- kernel ---------------------------------------------------------------------------------- */

/* Range [lo, hi) of the idx-th of `parts` splits of `extent`, on multiples of `align`. */
static void mm_split(int64_t extent, uint32_t parts, uint32_t idx, int64_t align, int64_t *lo,
                     int64_t *hi) {
    int64_t units = (extent + align - 1) / align;
    int64_t u0 = units * idx / parts, u1 = units * (idx + 1) / parts;
    *lo = u0 * align < extent ? u0 * align : extent;
    *hi = u1 * align < extent ? u1 * align : extent;
}

/* ---- fused epilogues ------------------------------------------------------------------------ */

/* Elementwise launches that followed a float32 matmul, run by the fused kernel on each tile
 * of C as soon as the tile is done, while it is in cache (see mt_k_fuse). */
#define MM_MAX_STEPS 8
typedef struct mm_step {
    uint8_t kind, op, scalar_first;
    uint8_t in_is_b;  /* binary: the input is the launch's second operand */
    uint8_t slot_out; /* the step's output (shaped like C) */
    uint8_t slot_in;  /* what it reads: C or an earlier step's output */
    uint8_t slot_other;
    uint8_t other_row; /* the other operand is one row of n, the same for every row of C */
    float scalar;
} mm_step;

typedef struct mm_epi_params {
    mm_params mm;
    uint32_t nsteps, pad;
    mm_step steps[MM_MAX_STEPS];
} mm_epi_params;

/* Rows [r0, r1) x columns [c0, c1) of matrix `bi`, just computed: every step in turn. */
static void mm_epilogue(const mm_epi_params *e, void *const *args, int64_t bi, int64_t r0,
                        int64_t r1, int64_t c0, int64_t c1) {
    const int64_t m = e->mm.m, n = e->mm.n;
    for (uint32_t s = 0; s < e->nsteps; s++) {
        const mm_step *st = &e->steps[s];
        float *out = (float *)MT_K_BUF(args, st->slot_out) + bi * m * n;
        const float *in = (const float *)MT_K_BUF(args, st->slot_in) + bi * m * n;
        const float *other =
            st->kind == MT_KSTEP_BINARY ? (const float *)MT_K_BUF(args, st->slot_other) : NULL;
        if (other && !st->other_row) other += bi * m * n;
        for (int64_t i = r0; i < r1; i++) {
            if (st->kind == MT_KSTEP_SOFTMAX) { /* whole rows: the grid has one column range */
                mt_k_softmax_row_f32(out + i * n, in + i * n, n);
                continue;
            }
            const float *o2 = other ? other + (st->other_row ? 0 : i * n) + c0 : NULL;
            mt_k_step_row(st->kind, st->op, st->scalar_first, st->scalar, st->in_is_b,
                          out + i * n + c0, in + i * n + c0, o2, c1 - c0);
        }
    }
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* Block `block`'s tiles of the product p (epilogue e, or NULL). */
static int32_t mm_run(const mm_params *pp, const mm_epi_params *e, void *const *args,
                      uint32_t block, uint32_t num_blocks) {
    const mm_params p = *pp;
    const uint64_t per = (uint64_t)p.rgrid * p.cgrid;
    const uint64_t tiles = (uint64_t)p.batch * per;
    const uint64_t t0 = tiles * block / num_blocks, t1 = tiles * (block + 1) / num_blocks;
    if (t0 >= t1) return 0;
    char *cbase = (char *)MT_K_BUF(args, p.slot_c);
    const char *abase = (const char *)MT_K_BUF(args, p.slot_a);
    const char *bbase = (const char *)MT_K_BUF(args, p.slot_b);
    /* A saved graph may come from a CPU with wider vectors than this one: all blocks agree
     * on the narrower ISA, so the tiles still cover C exactly. */
    const uint32_t isa = MM_ISA(p) < mt_k_isa() ? MM_ISA(p) : mt_k_isa();
    const mm_shape sh = mm_kernel_shape(MM_DTYPE(p), isa, p.m);
    const int direct = mm_uses_direct(MM_DTYPE(p), isa, p.m);
    const size_t es = MM_DTYPE(p) == D_F32 || MM_DTYPE(p) == D_I32 ? 4 : 8;
    const int isf = MM_DTYPE(p) == D_F32 || MM_DTYPE(p) == D_F64;

    void *ap = NULL, *bp = NULL;
    if (isf) {
        int64_t ncmax = p.n < MM_NC ? p.n : MM_NC;
        ncmax = (ncmax + sh.nr - 1) / sh.nr * sh.nr;
        int64_t kc = p.k < MM_KC ? p.k : MM_KC;
        /* direct: A's rows of a tile, and a padded panel of B's last columns */
        int64_t arows = direct ? (p.m + sh.mr - 1) / sh.mr * sh.mr : MM_MC;
        ap = mm_alloc((size_t)arows * (size_t)kc * es);
        bp = mm_alloc((size_t)kc * (size_t)(direct ? sh.nr : ncmax) * es);
        if (!ap || !bp) {
            free(ap);
            free(bp);
            mtiart_kernel_set_error_message("out of host memory for packing");
            return 1;
        }
    }
    for (uint64_t t = t0; t < t1; t++) {
        int64_t bi = (int64_t)(t / per);
        uint32_t rem = (uint32_t)(t % per);
        int64_t r0, r1, c0, c1;
        mm_split(p.m, p.rgrid, rem / p.cgrid, sh.mr, &r0, &r1);
        mm_split(p.n, p.cgrid, rem % p.cgrid, sh.nr, &c0, &c1);
        if (r0 >= r1 || c0 >= c1) continue;
        const char *a = abase + (size_t)(bi * p.m * p.k) * es;
        const char *b = bbase + (size_t)(bi * p.k * p.n) * es;
        char *c = cbase + (size_t)(bi * p.m * p.n) * es;
        switch (MM_DTYPE(p)) {
        case D_F32:
            if (direct)
                gemm_tile_direct(isa, ap, bp, (const float *)a, (const float *)b, (float *)c, p.k,
                                 p.n, r0, r1, c0, c1);
            else
                gemm_tile_f32(mm_ukr_f32(isa), sh.mr, sh.nr, ap, bp, (const float *)a,
                              (const float *)b, (float *)c, p.k, p.n, r0, r1, c0, c1);
            if (e) mm_epilogue(e, args, bi, r0, r1, c0, c1);
            break;
        case D_F64:
            gemm_tile_f64(mm_ukr_f64(isa), sh.mr, sh.nr, ap, bp, (const double *)a,
                          (const double *)b, (double *)c, p.k, p.n, r0, r1, c0, c1);
            break;
        case D_I32:
            imm_tile_i32((const int32_t *)a, (const int32_t *)b, (int32_t *)c, p.k, p.n, r0, r1, c0,
                         c1);
            break;
        default:
            imm_tile_i64((const int64_t *)a, (const int64_t *)b, (int64_t *)c, p.k, p.n, r0, r1, c0,
                         c1);
            break;
        }
    }
    free(ap);
    free(bp);
    return 0;
}

static int32_t k_matmul(void *const *args, uint32_t block, uint32_t num_blocks) {
    mm_params p;
    MT_K_PARAMS(p, args);
    return mm_run(&p, NULL, args, block, num_blocks);
}

static int32_t k_matmul_epilogue(void *const *args, uint32_t block, uint32_t num_blocks) {
    mm_epi_params e;
    MT_K_PARAMS(e, args);
    return mm_run(&e.mm, &e, args, block, num_blocks);
}

/* ---- host side ------------------------------------------------------------------------------- */

/* Split each matrix into rgrid x cgrid tiles so that batch * tiles covers `want` blocks,
 * minimising the duplicated packing: each tile packs its rows of A (k * m / rgrid) once per
 * column tile and its columns of B once per row tile, so the total is
 * cgrid * |A| + rgrid * |B|. */
static void mm_grid(int64_t m, int64_t n, int64_t k, int64_t batch, uint32_t want, mm_shape sh,
                    uint16_t *rgrid, uint16_t *cgrid) {
    *rgrid = *cgrid = 1;
    if ((int64_t)want <= batch) return;
    uint32_t per = (uint32_t)((want + batch - 1) / batch);
    int64_t rmax = (m + sh.mr - 1) / sh.mr, cmax = (n + sh.nr - 1) / sh.nr;
    double best = -1.0;
    for (uint32_t r = 1; r <= per; r++) {
        /* Exactly `per` tiles, so blocks get equal shares. */
        if (per % r) continue;
        uint32_t c = per / r;
        uint32_t rr = (int64_t)r > rmax ? (uint32_t)rmax : r;
        uint32_t cc = (int64_t)c > cmax ? (uint32_t)cmax : c;
        /* Fewer tiles than wanted (a tiny dim) is acceptable but ranks below any grid that
         * reaches the target. */
        double short_by = (double)per / ((double)rr * cc);
        double cost = ((double)cc * (double)m + (double)rr * (double)n) * (double)k * short_by;
        if (best < 0 || cost < best) {
            best = cost;
            *rgrid = (uint16_t)rr;
            *cgrid = (uint16_t)cc;
        }
    }
}

MTIART_API mtiart_status mtiart_op_matmul(mtiart_stream stream, const mtiart_tensor_desc *out,
                                          const mtiart_tensor_desc *a,
                                          const mtiart_tensor_desc *b) {
    MT_API_ENTRY();
    int64_t no, na, nb;
    mtiart_status st;
    if ((st = mt_k_check("out", out, &no)) || (st = mt_k_check("a", a, &na)) ||
        (st = mt_k_check("b", b, &nb)))
        return st;
    if (a->dtype != b->dtype || out->dtype != a->dtype)
        return mt_set_error(
            MTIART_ERROR_INVALID_VALUE, "out, a and b must share a dtype (got %s, %s, %s)",
            mt_k_dtype_name(out->dtype), mt_k_dtype_name(a->dtype), mt_k_dtype_name(b->dtype));
    if (a->dtype == MTIART_DTYPE_BOOL)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "bool matmul is not supported");
    int nd = a->ndim;
    if ((nd != 2 && nd != 3) || b->ndim != nd || out->ndim != nd)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "needs out, a and b all 2-D or all 3-D (got %d, %d, %d)",
                            (int)out->ndim, (int)a->ndim, (int)b->ndim);
    int64_t batch = nd == 3 ? a->shape[0] : 1;
    int64_t m = a->shape[nd - 2], k = a->shape[nd - 1], n = b->shape[nd - 1];
    int ok = b->shape[nd - 2] == k && out->shape[nd - 2] == m && out->shape[nd - 1] == n;
    if (nd == 3) ok = ok && b->shape[0] == batch && out->shape[0] == batch;
    if (!ok) {
        char b1[160], b2[160], b3[160];
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "shapes do not match: out %s, a %s, b %s",
                            mt_k_shape_str(out, b1, sizeof b1), mt_k_shape_str(a, b2, sizeof b2),
                            mt_k_shape_str(b, b3, sizeof b3));
    }
    if (no == 0) return mt_k_nothing(stream);

    mm_params p;
    memset(&p, 0, sizeof p);
    p.m = m;
    p.n = n;
    p.k = k;
    p.batch = batch;
    uint32_t isa = mt_k_is_float(a->dtype) ? mt_k_isa() : MM_ISA_GENERIC;
    p.dtype = (uint8_t)(a->dtype | (int32_t)(isa << 4));
    uint32_t es = (uint32_t)mtiart_dtype_size((mtiart_dtype)a->dtype);

    mt_klaunch kl;
    mt_kl_init(&kl, &p, sizeof p);
    /* C is written while A and B are still being read by other tiles: no aliasing. */
    int sc = mt_kl_tensor(&kl, "out", out, (uint64_t)no, es, MTIART_ARG_BUFFER_OUT, 0);
    int sa = sc < 0 || na == 0
                 ? sc
                 : mt_kl_tensor(&kl, "a", a, (uint64_t)na, es, MTIART_ARG_BUFFER_IN, 0);
    int sb = sa < 0 || nb == 0
                 ? sa
                 : mt_kl_tensor(&kl, "b", b, (uint64_t)nb, es, MTIART_ARG_BUFFER_IN, 0);
    if (sb < 0) return MTIART_ERROR_INVALID_VALUE;
    /* With k == 0 there is nothing to read; the kernel only zeroes C and never touches the
     * slots of A and B, which then alias C's slot. */
    p.slot_c = (uint8_t)sc;
    p.slot_a = (uint8_t)sa;
    p.slot_b = (uint8_t)sb;

    /* Work in multiply-adds; below ~100^3 a single block beats fanning out. */
    uint64_t macs = (uint64_t)batch * (uint64_t)m * (uint64_t)n * (uint64_t)(k ? k : 1);
    uint32_t want = 1;
    if (macs >= (UINT64_C(1) << 20)) {
        uint32_t w;
        if ((st = mt_k_workers(stream, &w))) return st;
        /* One tile per worker: every extra tile repacks panels (measured: 4 tiles on 2
         * workers run 512^2 float32 matmuls ~30% slower than 2 tiles). Very large products
         * get two per worker, where the packing is cheap relative to the tile and the
         * finer split evens out a worker that starts late. */
        want = macs / w > (UINT64_C(1) << 31) ? w * 2 : w;
        uint64_t cap = macs >> 19;
        if (want > cap) want = (uint32_t)cap;
        if (want > 4096) want = 4096;
        if (want < 1) want = 1;
    }
    mm_grid(m, n, k, batch, want, mm_kernel_shape(a->dtype, isa, m), &p.rgrid, &p.cgrid);
    uint64_t tiles = (uint64_t)batch * p.rgrid * p.cgrid;
    uint32_t blocks = tiles < want ? (uint32_t)tiles : want;
    if (blocks > 4096) blocks = 4096;
    return mt_kl_launch(&kl, stream, k_matmul, blocks);
}

/* ---- fusing a matmul with the elementwise launches after it ------------------------------- */

typedef struct mm_fuser {
    mt_fused_call *out;
    const void *ab[2]; /* A and B: nothing the epilogue writes may touch them */
    uint64_t ab_bytes[2];
    uint64_t matrix_bytes; /* of C and of every matrix a step reads or writes */
    const void *matrices[1 + 2 * MM_MAX_STEPS];
    uint32_t nmatrices;
    const void *rows[MM_MAX_STEPS]; /* row operands: read by every tile, written by none */
    uint64_t row_bytes;
    uint32_t nrows;
} mm_fuser;

static int mm_overlap(const void *p, uint64_t pb, const void *q, uint64_t qb) {
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return a < b + qb && b < a + pb;
}

/* A matrix the epilogue reads or writes: each tile touches its own elements of every one of
 * them, so any two must be the same buffer or apart. */
static int mm_fuse_matrix(mm_fuser *f, const void *m, int written) {
    for (uint32_t i = 0; i < f->nmatrices; i++)
        if (f->matrices[i] != m && mm_overlap(m, f->matrix_bytes, f->matrices[i], f->matrix_bytes))
            return 0;
    if (written) {
        for (int i = 0; i < 2; i++)
            if (mm_overlap(m, f->matrix_bytes, f->ab[i], f->ab_bytes[i])) return 0;
        for (uint32_t i = 0; i < f->nrows; i++)
            if (mm_overlap(m, f->matrix_bytes, f->rows[i], f->row_bytes)) return 0;
    }
    f->matrices[f->nmatrices++] = m;
    return 1;
}

/* The slot of a buffer of the fused launch (one argument per distinct buffer). */
static uint8_t mm_fuse_buf(mm_fuser *f, const void *ptr, uint64_t bytes, mtiart_arg_kind kind) {
    mt_fused_call *out = f->out;
    for (uint32_t i = 1; i < out->nargs; i++)
        if (out->args[i].value == ptr) {
            out->args[i].kind |= kind;
            if (bytes > out->args[i].extent) out->args[i].extent = bytes;
            return (uint8_t)(i - 1);
        }
    out->args[out->nargs] = (mtiart_arg){kind, 0, ptr, bytes};
    return (uint8_t)(out->nargs++ - 1);
}

/* Add the launch `call` as the next step, reading `*prev` (C or the last step's output). */
static int mm_fuse_step(mm_fuser *f, mm_epi_params *e, const mt_kernel_call *call,
                        const void **prev) {
    mt_kstep st;
    if (!mt_k_ew_step(call->fn, call->argv, &st) && !mt_k_softmax_step(call->fn, call->argv, &st))
        return 0;
    const uint64_t n = (uint64_t)e->mm.n;
    if (st.numel != (uint64_t)(e->mm.batch * e->mm.m) * n) return 0;
    mm_step ms = {
        .kind = st.kind, .op = st.op, .scalar_first = st.scalar_first, .scalar = st.scalar};
    const void *other = NULL;
    if (st.kind == MT_KSTEP_BINARY) {
        if (st.a == *prev && st.row_a == 0) {
            other = st.b;
            ms.other_row = st.row_b != 0;
            if (ms.other_row && st.row_b != n) return 0;
        } else if (st.b == *prev && st.row_b == 0) {
            ms.in_is_b = 1;
            other = st.a;
            ms.other_row = st.row_a != 0;
            if (ms.other_row && st.row_a != n) return 0;
        } else {
            return 0;
        }
    } else if (st.a != *prev || (st.kind == MT_KSTEP_SOFTMAX && st.row_a != n)) {
        return 0;
    }
    /* Hazards of running the step tile by tile, while other tiles are still in the product:
     * it must not write A, B or a row some tile still reads, nor part of a matrix. */
    if (other && ms.other_row) {
        for (uint32_t i = 0; i < f->nmatrices; i++)
            if (mm_overlap(other, f->row_bytes, f->matrices[i], f->matrix_bytes)) return 0;
        if (mm_overlap(other, f->row_bytes, st.out, f->matrix_bytes)) return 0;
        f->rows[f->nrows++] = other;
    } else if (other && !mm_fuse_matrix(f, other, 0)) {
        return 0;
    }
    if (!mm_fuse_matrix(f, st.out, 1)) return 0;
    ms.slot_in = mm_fuse_buf(f, *prev, f->matrix_bytes, MTIART_ARG_BUFFER_IN);
    if (other)
        ms.slot_other = mm_fuse_buf(f, other, ms.other_row ? f->row_bytes : f->matrix_bytes,
                                    MTIART_ARG_BUFFER_IN);
    ms.slot_out = mm_fuse_buf(f, st.out, f->matrix_bytes, MTIART_ARG_BUFFER_OUT);
    e->steps[e->nsteps++] = ms;
    *prev = st.out;
    return 1;
}

_Static_assert(sizeof(mm_epi_params) <= sizeof(((mt_fused_call *)0)->params),
               "the epilogue's parameters fit in a fused call");
/* The parameters, A, B, C, and per step at most a new output and a new operand. */
_Static_assert(1 + 3 + 2 * MM_MAX_STEPS <= MT_FUSED_MAX_ARGS,
               "a fused call has room for its buffers");

uint32_t mt_k_fuse(const mt_kernel_call *calls, uint32_t n, mt_fused_call *out) {
    if (n < 2 || calls[0].fn != k_matmul) return 0;
    mm_epi_params e;
    memset(&e, 0, sizeof e);
    MT_K_PARAMS(e.mm, calls[0].argv);
    if (MM_DTYPE(e.mm) != D_F32 || e.mm.k == 0) return 0;
    void *const *margs = calls[0].argv;
    const uint64_t es = sizeof(float), batch = (uint64_t)e.mm.batch;
    const uint64_t m = (uint64_t)e.mm.m, k = (uint64_t)e.mm.k, cols = (uint64_t)e.mm.n;
    memset(out, 0, sizeof *out);
    out->nargs = 1;
    mm_fuser f = {.out = out, .matrix_bytes = batch * m * cols * es, .row_bytes = cols * es};
    f.ab[0] = MT_K_BUF(margs, e.mm.slot_a);
    f.ab[1] = MT_K_BUF(margs, e.mm.slot_b);
    f.ab_bytes[0] = batch * m * k * es;
    f.ab_bytes[1] = batch * k * cols * es;
    const void *c = MT_K_BUF(margs, e.mm.slot_c);
    e.mm.slot_a = mm_fuse_buf(&f, f.ab[0], f.ab_bytes[0], MTIART_ARG_BUFFER_IN);
    e.mm.slot_b = mm_fuse_buf(&f, f.ab[1], f.ab_bytes[1], MTIART_ARG_BUFFER_IN);
    e.mm.slot_c = mm_fuse_buf(&f, c, f.matrix_bytes, MTIART_ARG_BUFFER_OUT);
    f.matrices[f.nmatrices++] = c;
    const void *prev = c;
    uint32_t used = 1;
    while (used < n && e.nsteps < MM_MAX_STEPS && mm_fuse_step(&f, &e, &calls[used], &prev)) used++;
    if (e.nsteps == 0) return 0;
    uint32_t blocks = calls[0].num_blocks;
    for (uint32_t i = 0; i < e.nsteps; i++) {
        if (e.steps[i].kind != MT_KSTEP_SOFTMAX) continue;
        /* A softmax needs whole rows in a tile: split the rows only. */
        const mm_shape sh = mm_kernel_shape(D_F32, MM_ISA(e.mm), e.mm.m);
        uint64_t per = blocks <= batch ? 1 : (blocks + batch - 1) / batch;
        uint64_t panels = (m + (uint64_t)sh.mr - 1) / (uint64_t)sh.mr;
        e.mm.rgrid = (uint16_t)(per < panels ? per : panels);
        e.mm.cgrid = 1;
        if ((uint64_t)blocks > batch * e.mm.rgrid) blocks = (uint32_t)(batch * e.mm.rgrid);
        break;
    }
    memcpy(out->params, &e, sizeof e);
    out->args[0] = (mtiart_arg){MTIART_ARG_VALUE, sizeof e, out->params, 0};
    out->fn = k_matmul_epilogue;
    out->num_blocks = blocks;
    return used;
}

/* ---- the registry's descriptions ------------------------------------------------------------- */

static int describe_product(const mm_params *p, char *out, size_t cap) {
    if (p->batch != 1)
        return snprintf(out, cap, "matmul %lldx%lldx%lld @ %lldx%lldx%lld", (long long)p->batch,
                        (long long)p->m, (long long)p->k, (long long)p->batch, (long long)p->k,
                        (long long)p->n);
    return snprintf(out, cap, "matmul %lldx%lld @ %lldx%lld", (long long)p->m, (long long)p->k,
                    (long long)p->k, (long long)p->n);
}

static int describe_matmul(void *const *args, char *out, size_t cap) {
    mm_params p;
    MT_K_PARAMS(p, args);
    return describe_product(&p, out, cap);
}

/* "matmul 32x256 @ 256x512 + add + relu": the product, then each step by its name. */
static int describe_matmul_epilogue(void *const *args, char *out, size_t cap) {
    static const char *const binary[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
    static const char *const unary[] = {"neg",  "abs",  "relu",    "exp", "log",
                                        "sqrt", "tanh", "sigmoid", "gelu"};
    mm_epi_params e;
    MT_K_PARAMS(e, args);
    int len = describe_product(&e.mm, out, cap);
    for (uint32_t i = 0; i < e.nsteps && i < MM_MAX_STEPS && len >= 0; i++) {
        const mm_step *st = &e.steps[i];
        const char *name = "?";
        if (st->kind == MT_KSTEP_SOFTMAX) name = "softmax";
        else if (st->kind == MT_KSTEP_UNARY && st->op < 9) name = unary[st->op];
        else if (st->kind != MT_KSTEP_UNARY && st->op < 6) name = binary[st->op];
        size_t used = (size_t)len < cap ? (size_t)len : cap;
        int more = snprintf(out + used, cap - used, " + %s%s", name,
                            st->kind == MT_KSTEP_BINARY_SCALAR ? " scalar" : "");
        len = more < 0 ? more : len + more;
    }
    return len;
}

/* C, A and B are batch contiguous row-major matrices; the tile grid is at least 1 x 1
 * (the kernel divides by it). With k == 0 the kernel only zeroes C, but still takes A's
 * and B's slots: they must exist (they are empty). */
static int check_matmul(const mt_ksaved *l, char *why, size_t cap) {
    mm_params p;
    int r = mt_k_saved_params(l, sizeof p, why, cap);
    if (r >= 0) return r;
    memcpy(&p, l->params, sizeof p);
    if (MM_DTYPE(p) > D_I64 || MM_ISA(p) > MM_ISA_AVX512)
        return mt_k_bad(why, cap, 0, "dtype %u, ISA %u", MM_DTYPE(p), MM_ISA(p));
    if (p.m < 1 || p.n < 1 || p.k < 0 || p.batch < 1 || p.rgrid < 1 || p.cgrid < 1)
        return mt_k_bad(why, cap, 0, "%lld matrices of %lldx%lld @ %lldx%lld in %ux%u tiles",
                        (long long)p.batch, (long long)p.m, (long long)p.k, (long long)p.k,
                        (long long)p.n, p.rgrid, p.cgrid);
    const uint64_t es = MM_DTYPE(p) == D_F32 || MM_DTYPE(p) == D_I32 ? 4 : 8;
    const struct {
        const char *name;
        uint8_t slot;
        int64_t rows, cols;
    } mats[] = {{"out", p.slot_c, p.m, p.n}, {"a", p.slot_a, p.m, p.k}, {"b", p.slot_b, p.k, p.n}};
    for (size_t i = 0; i < 3; i++) {
        uint64_t count = (uint64_t)p.batch;
        if (!mt_k_mul(&count, (uint64_t)mats[i].rows) || !mt_k_mul(&count, (uint64_t)mats[i].cols))
            return mt_k_bad(why, cap, 0, "%s's element count overflows", mats[i].name);
        if ((r = mt_k_span(l, mats[i].slot, mats[i].name, count, es, why, cap)) >= 0) return r;
    }
    return -1;
}

/* Fused launches are made at instantiation from the graph's own nodes, which are what a
 * saved graph holds: a file naming one is malformed. */
static int check_matmul_epilogue(const mt_ksaved *l, char *why, size_t cap) {
    int r = mt_k_saved_params(l, sizeof(mm_params), why, cap);
    if (r >= 0) return r;
    return mt_k_bad(why, cap, 0, "a fused launch, which only instantiation makes, is never saved");
}

const mt_kdef mt_k_matmul_defs[] = {
    {MT_KID_MATMUL, "mtiart_matmul", k_matmul, describe_matmul, check_matmul},
    {MT_KID_MATMUL_EPILOGUE, "mtiart_matmul_epilogue", k_matmul_epilogue, describe_matmul_epilogue,
     check_matmul_epilogue},
};
const size_t mt_k_matmul_ndefs = sizeof mt_k_matmul_defs / sizeof *mt_k_matmul_defs;
