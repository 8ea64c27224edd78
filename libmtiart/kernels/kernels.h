/*
 * kernels.h - internal helpers shared by the kernel library (the .c files next to it).
 *
 * The kernel library sits on top of the public API (plus error.h, for the runtime's error
 * messages): every operation validates its descriptors on the host, packs a small
 * parameter struct and enqueues a static kernel with mtiart_launch_kernel. Device pointers always
 * travel as BUFFER arguments (never inside the parameter struct) so the runtime sees exactly which
 * memory each kernel reads and writes, which graph capture relies on.
 *
 * The registry of built-in kernels (registry.c) is the one part the runtime calls: it
 * names kernels, describes launches and maps saved kernel ids back to functions, and calls
 * nothing itself.
 *
 * Argument layout of every kernel in this library: args[0] is the parameter struct (a VALUE
 * argument), args[1 + s] is buffer slot s. Parameter structs name their buffers by slot
 * because aliased operands (out == a) are passed once, as INOUT.
 */
#ifndef MTIART_KERNELS_H
#define MTIART_KERNELS_H

#include "mtiart.h"
#include "../error.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define MT_K_MAX_BUFS 4

/* Element counts below this run as a single block: fanning out costs more than it saves. */
#define MT_K_EW_GRAIN 16384

/* Slot s's device pointer inside a kernel. */
#define MT_K_BUF(args, slot) (*(void *const *)(args)[1 + (slot)])

/* Copy the parameter struct out of the runtime's argument storage: the runtime makes no
 * alignment promise for VALUE bytes, and a local copy lets the compiler keep fields in
 * registers. */
#define MT_K_PARAMS(dst, args) memcpy(&(dst), (args)[0], sizeof(dst))

/* Host-side builder of one launch: the parameter VALUE plus deduplicated buffers. */
typedef struct mt_klaunch {
    mtiart_arg args[1 + MT_K_MAX_BUFS];
    uint32_t nargs;
    struct {
        const char *name;
        uint64_t numel;
        uint32_t esize;
        int alias_ok;
        const mtiart_tensor_desc *tensor; /* what dumps show of the buffer (NULL: scratch) */
    } meta[MT_K_MAX_BUFS];
} mt_klaunch;

void mt_kl_init(mt_klaunch *kl, const void *params, uint32_t size);

/* Register a device buffer; returns its slot or -1 after setting MTIART_ERROR_INVALID_VALUE.
 * The same pointer registered twice is merged into one argument (IN + OUT = INOUT), which
 * is only accepted for writes when both sides allow it (`alias_ok`) and overlay element for
 * element (same element size and count). Any other overlap with a written buffer is
 * rejected: blocks run concurrently, so partial overlaps would race. */
int mt_kl_buf(mt_klaunch *kl, const char *name, const void *ptr, uint64_t numel, uint32_t esize,
              mtiart_arg_kind kind, int alias_ok);
/* mt_kl_buf for the data of tensor `t`, which graph dumps and traces then describe by its
 * dtype and shape (t must outlive the launch). */
int mt_kl_tensor(mt_klaunch *kl, const char *name, const mtiart_tensor_desc *t, uint64_t numel,
                 uint32_t esize, mtiart_arg_kind kind, int alias_ok);

/* Enqueue the kernel (a built-in of the registry below: its name is the registry's), with
 * the tensors of its buffers described (mtiart_launch_kernel_described). */
mtiart_status mt_kl_launch(mt_klaunch *kl, mtiart_stream stream, mtiart_kernel_fn fn,
                           uint32_t num_blocks);

/* Validate a descriptor: non-NULL, known dtype, ndim in range, non-negative dims, element
 * count that fits in memory, data non-NULL unless empty. */
mtiart_status mt_k_check(const char *name, const mtiart_tensor_desc *d, int64_t *numel);
/* mt_k_check of an op's "out" and "a", checked once when they are one descriptor (an op in
 * place, as Tensor.add_ issues it). */
mtiart_status mt_k_check_operands(const mtiart_tensor_desc *out, const mtiart_tensor_desc *a,
                                  int64_t *numel_out, int64_t *numel_a);

/* Render "(2, 3, 4)" into buf for error messages. */
const char *mt_k_shape_str(const mtiart_tensor_desc *d, char *buf, size_t cap);

const char *mt_k_dtype_name(int32_t dtype);

int mt_k_same_shape(const mtiart_tensor_desc *x, const mtiart_tensor_desc *y);

/* MTIART_SUCCESS when out has a's shape, else the error "out's shape (..) differs from a's
 * shape (..)". */
mtiart_status mt_k_check_same_shape(const mtiart_tensor_desc *out, const mtiart_tensor_desc *a);

static inline int mt_k_is_float(int32_t dtype) {
    return dtype == MTIART_DTYPE_FLOAT32 || dtype == MTIART_DTYPE_FLOAT64;
}

/* Result of an operation with nothing to do (an empty output): still reports a bad stream
 * handle, as the launch would have. */
static inline mtiart_status mt_k_nothing(mtiart_stream stream) {
    int dev;
    return mtiart_stream_get_device(stream, &dev);
}

/* Number of worker threads of the stream's device (cached per device). */
mtiart_status mt_k_workers(mtiart_stream stream, uint32_t *workers);

/* Blocks for `work` units: 1 below 2 * grain, else about workers * 4, at most work / grain. */
mtiart_status mt_k_blocks(mtiart_stream stream, uint64_t work, uint64_t grain,
                          uint32_t *num_blocks);

/* Block `block`'s share [lo, hi) of n items, in chunks that are multiples of `align` so
 * that neighbouring blocks never write the same cache line. */
static inline void mt_k_range(uint64_t n, uint32_t block, uint32_t num_blocks, uint64_t align,
                              uint64_t *lo, uint64_t *hi) {
    uint64_t chunk = (n + num_blocks - 1) / num_blocks;
    chunk = (chunk + align - 1) / align * align;
    uint64_t l = (uint64_t)block * chunk;
    if (l > n) l = n;
    uint64_t h = l + chunk;
    if (h > n) h = n;
    *lo = l;
    *hi = h;
}

/* x86 ISA level the kernels may use: the best the CPU (and OS) support, capped by the
 * environment variable MTIART_KERNEL_ISA=generic|avx2|avx512 (to test every code path on
 * one machine). Always MT_K_ISA_GENERIC off x86-64. Cached after the first call. */
enum { MT_K_ISA_GENERIC = 0, MT_K_ISA_AVX2 = 1, MT_K_ISA_AVX512 = 2 };
uint32_t mt_k_isa(void);

/* Vectorised float32 kernels of vecmath.c (n elements; o may equal a). */
#define MT_K_SM_COLS 256
void mt_k_exp_f32(float *o, const float *a, int64_t n);
void mt_k_sigmoid_f32(float *o, const float *a, int64_t n);
void mt_k_gelu_f32(float *o, const float *a, int64_t n);
void mt_k_gelu_erf_f32(float *o, const float *a, int64_t n);
void mt_k_tanh_f32(float *o, const float *a, int64_t n);
/* Softmax of a contiguous row, and down columns [0, w) (w <= MT_K_SM_COLS) of len rows
 * spaced `stride` elements apart. */
void mt_k_softmax_row_f32(float *o, const float *a, int64_t n);
void mt_k_softmax_cols_f32(float *o, const float *a, int64_t len, int64_t stride, int64_t w);

/* Element bits of a scalar in a given dtype, for parameter structs. */
typedef union mt_kscalar {
    double f64;
    float f32;
    int32_t i32;
    int64_t i64;
    uint8_t b;
    uint64_t bits;
} mt_kscalar;

mt_kscalar mt_k_scalar(int32_t dtype, double f, int64_t i);

/* Render a scalar of `dtype` held in `s` ("1", "0.5", "true") into buf. */
const char *mt_k_scalar_str(int32_t dtype, mt_kscalar s, char *buf, size_t cap);

/* ---- the registry of built-in kernels (registry.c) -------------------------------------- */

/* Stable ids of the built-in kernels. Saved graphs store them, so an id is never
 * renumbered or reused: a new kernel takes the next free number, a removed one leaves a
 * hole. 0 means "not a built-in". */
enum mt_kid {
    MT_KID_BINARY = 1,
    MT_KID_BINARY_SCALAR = 2,
    MT_KID_BINARY_BCAST = 3,
    MT_KID_UNARY = 4,
    MT_KID_WHERE = 5,
    MT_KID_WHERE_BCAST = 6,
    MT_KID_CAST = 7,
    MT_KID_FILL = 8,
    MT_KID_ARANGE = 9,
    MT_KID_MATMUL = 10,
    MT_KID_REDUCE = 11,
    MT_KID_REDUCE_PARTIAL = 12,
    MT_KID_REDUCE_COMBINE = 13,
    MT_KID_SOFTMAX = 14,
    MT_KID_MATMUL_EPILOGUE = 15,
};

/* Render one launch of the kernel from its argument vector (the parameter struct at
 * args[0], buffer slots after it) as a short text: "add", "matmul 32x256 @ 256x512",
 * "sum dim=1", "cast float32->int64". Parameters come from the launch the library made
 * (or a saved graph that was validated on loading), so only the fields' ranges are
 * checked, to never index a name table out of bounds. snprintf's contract. */
typedef int (*mt_kdescribe_fn)(void *const *args, char *out, size_t cap);

/* A launch read from a saved graph, before it may run: the parameter struct as saved
 * (`size` bytes, possibly padded), the byte extent of each buffer slot, the alignment of
 * each slot's start relative to the (aligned) memory it lies in, and the block count. */
typedef struct mt_ksaved {
    const void *params;
    uint32_t size;
    const uint64_t *extent;
    const uint64_t *align;
    uint32_t nbufs;
    uint32_t num_blocks;
} mt_ksaved;

/* Check a saved launch against everything the kernel trusts its host side to have
 * checked: every field it indexes a table with is in range, the op and dtypes are ones it
 * implements, element counts do not overflow, and every byte it reads or writes lies in its
 * slot's extent. Returns -1 when the launch is safe to run, else the argument at fault
 * (0: the parameters, 1 + s: slot s) with the reason written to `why`. */
typedef int (*mt_kvalidate_fn)(const mt_ksaved *l, char *why, size_t cap);

typedef struct mt_kdef {
    uint32_t id;      /* enum mt_kid */
    const char *name; /* "mtiart_binary": what messages and dumps call the kernel */
    mtiart_kernel_fn fn;
    mt_kdescribe_fn describe;
    mt_kvalidate_fn validate;
} mt_kdef;

/* Helpers of the validate functions. mt_k_bad writes the reason and returns `arg`. */
int mt_k_bad(char *why, size_t cap, int arg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The saved parameters hold at least `need` bytes: -1, else the fault (argument 0). */
int mt_k_saved_params(const mt_ksaved *l, size_t need, char *why, size_t cap);
/* *acc *= x; false when the product overflows (*acc is then meaningless). */
static inline int mt_k_mul(uint64_t *acc, uint64_t x) {
    return !__builtin_mul_overflow(*acc, x, acc);
}
/* Slot `slot` exists, starts aligned to `esize` (a power of two) and holds `count`
 * elements of `esize` bytes: -1, else the fault. */
int mt_k_span(const mt_ksaved *l, uint32_t slot, const char *name, uint64_t count, uint64_t esize,
              char *why, size_t cap);

/* Each kernel file lists its kernels; registry.c joins the lists. */
extern const mt_kdef mt_k_elementwise_defs[];
extern const size_t mt_k_elementwise_ndefs;
extern const mt_kdef mt_k_matmul_defs[];
extern const size_t mt_k_matmul_ndefs;
extern const mt_kdef mt_k_reduce_defs[];
extern const size_t mt_k_reduce_ndefs;

/* The built-in kernel `fn` is, or NULL. */
const mt_kdef *mt_k_find(mtiart_kernel_fn fn);

/* ---- fusion: one launch in place of several (matmul.c's epilogues) ----------------------- */

/* A float32 elementwise launch of this library (elementwise.c, reduce.c), decoded so that
 * another kernel can run it on the rows it has just computed, in place of the launch.
 * Steps run through the very loops of the launch (mt_k_step_row), so the results are
 * bitwise those of the launch. */
enum mt_kstep_kind {
    MT_KSTEP_UNARY = 1,         /* out = op(a) */
    MT_KSTEP_BINARY = 2,        /* out = a op b */
    MT_KSTEP_BINARY_SCALAR = 3, /* out = a op scalar, or scalar op a (scalar_first) */
    MT_KSTEP_SOFTMAX = 4,       /* each row of `row` elements: out = softmax(a) */
};

typedef struct mt_kstep {
    uint8_t kind, op, scalar_first;
    float scalar;
    const void *a, *b;
    /* binary: 0 if the operand has out's shape, else it is one row of that many elements,
     * the same for every row of out; softmax: the row length (in row_a) */
    uint64_t row_a, row_b;
    void *out;
    uint64_t numel; /* of out */
} mt_kstep;

/* Decode a launch as a step; 0 if it is not a float32 launch a step can stand for. */
int mt_k_ew_step(mtiart_kernel_fn fn, void *const *args, mt_kstep *step);
int mt_k_softmax_step(mtiart_kernel_fn fn, void *const *args, mt_kstep *step);

/* Run a step (not softmax) over n elements: o = in op other, where `in` is the operand the
 * fused kernel produced (a, unless in_is_b) and `other` the other one (binary) or NULL. */
void mt_k_step_row(uint8_t kind, uint8_t op, uint8_t scalar_first, float scalar, int in_is_b,
                   float *o, const float *in, const float *other, int64_t n);

/* For the runtime: a launch as a graph node holds it, and a launch made of several. */
typedef struct mt_kernel_call {
    mtiart_kernel_fn fn;
    void *const *argv;
    uint32_t nargs, num_blocks;
} mt_kernel_call;

#define MT_FUSED_MAX_ARGS 24
typedef struct mt_fused_call {
    mtiart_kernel_fn fn;
    uint32_t num_blocks, nargs;
    mtiart_arg args[MT_FUSED_MAX_ARGS]; /* args[0] is the parameter struct, in params */
    uint64_t params[32];
} mt_fused_call;

/* How many of calls[0..n) - a chain in which each launch reads what the one before wrote,
 * in this order - one launch runs in their place (*out): 0 or 1 if none is fused. The
 * fused launch writes every buffer the launches did, with the same bits. (matmul.c: a
 * matmul and its elementwise epilogue.) */
uint32_t mt_k_fuse(const mt_kernel_call *calls, uint32_t n, mt_fused_call *out);

#endif /* MTIART_KERNELS_H */
