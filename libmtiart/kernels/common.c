/*
 * common.c - descriptor validation, block sizing and launch building for the kernel library.
 */
#include "kernels.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MTIART_API size_t mtiart_dtype_size(mtiart_dtype dtype) {
    switch (dtype) {
    case MTIART_DTYPE_FLOAT32: return 4;
    case MTIART_DTYPE_FLOAT64: return 8;
    case MTIART_DTYPE_INT32: return 4;
    case MTIART_DTYPE_INT64: return 8;
    case MTIART_DTYPE_BOOL: return 1;
    }
    return 0;
}

const char *mt_k_dtype_name(int32_t dtype) {
    switch (dtype) {
    case MTIART_DTYPE_FLOAT32: return "float32";
    case MTIART_DTYPE_FLOAT64: return "float64";
    case MTIART_DTYPE_INT32: return "int32";
    case MTIART_DTYPE_INT64: return "int64";
    case MTIART_DTYPE_BOOL: return "bool";
    }
    return "unknown";
}

const char *mt_k_shape_str(const mtiart_tensor_desc *d, char *buf, size_t cap) {
    size_t len = 0;
    int nd = d->ndim < 0 ? 0 : (d->ndim > MTIART_MAX_DIMS ? MTIART_MAX_DIMS : d->ndim);
    len += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < nd && len < cap; i++)
        len +=
            (size_t)snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)d->shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, nd == 1 ? ",)" : ")");
    return buf;
}

int mt_k_same_shape(const mtiart_tensor_desc *x, const mtiart_tensor_desc *y) {
    if (x->ndim != y->ndim) return 0;
    for (int i = 0; i < x->ndim; i++)
        if (x->shape[i] != y->shape[i]) return 0;
    return 1;
}

mtiart_status mt_k_check_same_shape(const mtiart_tensor_desc *out, const mtiart_tensor_desc *a) {
    if (mt_k_same_shape(out, a)) return MTIART_SUCCESS;
    char b1[160], b2[160];
    return mt_set_error(MTIART_ERROR_INVALID_VALUE, "out's shape %s differs from a's shape %s",
                        mt_k_shape_str(out, b1, sizeof b1), mt_k_shape_str(a, b2, sizeof b2));
}

mtiart_status mt_k_check(const char *name, const mtiart_tensor_desc *d, int64_t *numel) {
    if (!d) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s is NULL", name);
    size_t es = mtiart_dtype_size((mtiart_dtype)d->dtype);
    if (es == 0)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s has unknown dtype %d", name,
                            (int)d->dtype);
    if (d->ndim < 0 || d->ndim > MTIART_MAX_DIMS)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s has ndim %d, outside [0, %d]", name,
                            (int)d->ndim, MTIART_MAX_DIMS);
    /* Bound the byte size well below 2^63 so that every later offset computation in
     * int64 is safe without further checks. */
    const int64_t limit = INT64_C(1) << 56;
    int64_t n = 1;
    int zero = 0;
    for (int i = 0; i < d->ndim; i++) {
        int64_t s = d->shape[i];
        if (s < 0)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "%s has negative dimension %lld at dim %d", name, (long long)s, i);
        if (s == 0) zero = 1;
        else if (n > limit / s) n = limit + 1; /* saturate; reported below unless empty */
        else n *= s;
    }
    if (zero) n = 0;
    if (n > limit / (int64_t)es)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s is too large", name);
    if (n > 0 && !d->data)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s has NULL data but %lld elements", name,
                            (long long)n);
    *numel = n;
    return MTIART_SUCCESS;
}

mtiart_status mt_k_check_operands(const mtiart_tensor_desc *out, const mtiart_tensor_desc *a,
                                  int64_t *numel_out, int64_t *numel_a) {
    mtiart_status st = mt_k_check("out", out, numel_out);
    if (st || a == out) {
        *numel_a = *numel_out;
        return st;
    }
    return mt_k_check("a", a, numel_a);
}

mt_kscalar mt_k_scalar(int32_t dtype, double f, int64_t i) {
    mt_kscalar s;
    s.bits = 0;
    switch (dtype) {
    case MTIART_DTYPE_FLOAT32: s.f32 = (float)f; break;
    case MTIART_DTYPE_FLOAT64: s.f64 = f; break;
    case MTIART_DTYPE_INT32: s.i32 = (int32_t)(uint32_t)(uint64_t)i; break;
    case MTIART_DTYPE_INT64: s.i64 = i; break;
    case MTIART_DTYPE_BOOL: s.b = i != 0; break;
    }
    return s;
}

const char *mt_k_scalar_str(int32_t dtype, mt_kscalar s, char *buf, size_t cap) {
    switch (dtype) {
    case MTIART_DTYPE_FLOAT32: snprintf(buf, cap, "%.9g", (double)s.f32); break;
    case MTIART_DTYPE_FLOAT64: snprintf(buf, cap, "%.17g", s.f64); break;
    case MTIART_DTYPE_INT32: snprintf(buf, cap, "%d", (int)s.i32); break;
    case MTIART_DTYPE_INT64: snprintf(buf, cap, "%lld", (long long)s.i64); break;
    case MTIART_DTYPE_BOOL: snprintf(buf, cap, "%s", s.b ? "true" : "false"); break;
    default: snprintf(buf, cap, "?"); break;
    }
    return buf;
}

/* ---- worker counts ------------------------------------------------------------------ */

#define MT_K_CACHED_DEVICES 64

/* 0 = not queried yet. Devices never change their worker count, so a racy double query
 * is harmless. */
static _Atomic uint32_t k_workers[MT_K_CACHED_DEVICES];

mtiart_status mt_k_workers(mtiart_stream stream, uint32_t *workers) {
    int dev = -1;
    mtiart_status st = mtiart_stream_get_device(stream, &dev);
    if (st != MTIART_SUCCESS) return st;
    if (dev >= 0 && dev < MT_K_CACHED_DEVICES) {
        uint32_t w = atomic_load_explicit(&k_workers[dev], memory_order_relaxed);
        if (w) {
            *workers = w;
            return MTIART_SUCCESS;
        }
    }
    mtiart_device_properties props;
    st = mtiart_device_get_properties(dev, &props);
    if (st != MTIART_SUCCESS) return st;
    uint32_t w = props.num_workers > 0 ? (uint32_t)props.num_workers : 1;
    if (dev >= 0 && dev < MT_K_CACHED_DEVICES)
        atomic_store_explicit(&k_workers[dev], w, memory_order_relaxed);
    *workers = w;
    return MTIART_SUCCESS;
}

mtiart_status mt_k_blocks(mtiart_stream stream, uint64_t work, uint64_t grain,
                          uint32_t *num_blocks) {
    if (grain == 0) grain = 1;
    if (work < 2 * grain) {
        *num_blocks = 1;
        return MTIART_SUCCESS;
    }
    uint32_t w;
    mtiart_status st = mt_k_workers(stream, &w);
    if (st != MTIART_SUCCESS) return st;
    /* Four blocks per worker evens out workers that start late or share a core. */
    uint64_t nb = (uint64_t)w * 4;
    if (nb > work / grain) nb = work / grain;
    if (nb > 4096) nb = 4096;
    if (nb < 1) nb = 1;
    *num_blocks = (uint32_t)nb;
    return MTIART_SUCCESS;
}

/* ---- launch building ------------------------------------------------------------------ */

void mt_kl_init(mt_klaunch *kl, const void *params, uint32_t size) {
    kl->args[0].kind = MTIART_ARG_VALUE;
    kl->args[0].size = size;
    kl->args[0].value = params;
    kl->args[0].extent = 0;
    kl->nargs = 1;
}

int mt_kl_buf(mt_klaunch *kl, const char *name, const void *ptr, uint64_t numel, uint32_t esize,
              mtiart_arg_kind kind, int alias_ok) {
    uint64_t bytes = numel * esize;
    uintptr_t p0 = (uintptr_t)ptr, p1 = p0 + bytes;
    for (uint32_t s = 0; s + 1 < kl->nargs; s++) {
        mtiart_arg *a = &kl->args[1 + s];
        uintptr_t q0 = (uintptr_t)a->value, q1 = q0 + a->extent;
        int writes = (kind & MTIART_ARG_BUFFER_OUT) || (a->kind & MTIART_ARG_BUFFER_OUT);
        if (q0 == p0 && (!writes || (alias_ok && kl->meta[s].alias_ok &&
                                     kl->meta[s].esize == esize && kl->meta[s].numel == numel))) {
            a->kind |= kind;
            if (bytes > a->extent) a->extent = bytes;
            return (int)s;
        }
        if (writes && p0 < q1 && q0 < p1) {
            mt_set_error(MTIART_ERROR_INVALID_VALUE,
                         "%s overlaps %s in device memory; only an exact in-place "
                         "alias of same-shaped operands is supported",
                         name, kl->meta[s].name);
            return -1;
        }
    }
    if (kl->nargs >= 1 + MT_K_MAX_BUFS) {
        mt_set_error(MTIART_ERROR_INTERNAL, "too many buffers");
        return -1;
    }
    uint32_t s = kl->nargs - 1;
    kl->args[kl->nargs].kind = kind;
    kl->args[kl->nargs].size = 0;
    kl->args[kl->nargs].value = ptr;
    kl->args[kl->nargs].extent = bytes;
    kl->meta[s].name = name;
    kl->meta[s].numel = numel;
    kl->meta[s].esize = esize;
    kl->meta[s].alias_ok = alias_ok;
    kl->meta[s].tensor = NULL;
    kl->nargs++;
    return (int)s;
}

int mt_kl_tensor(mt_klaunch *kl, const char *name, const mtiart_tensor_desc *t, uint64_t numel,
                 uint32_t esize, mtiart_arg_kind kind, int alias_ok) {
    int s = mt_kl_buf(kl, name, t->data, numel, esize, kind, alias_ok);
    if (s >= 0 && !kl->meta[s].tensor) kl->meta[s].tensor = t;
    return s;
}

mtiart_status mt_kl_launch(mt_klaunch *kl, mtiart_stream stream, mtiart_kernel_fn fn,
                           uint32_t num_blocks) {
    const mtiart_tensor_desc *tensors[1 + MT_K_MAX_BUFS] = {NULL};
    for (uint32_t s = 0; s + 1 < kl->nargs; s++) tensors[1 + s] = kl->meta[s].tensor;
    return mtiart_launch_kernel_described(stream, fn, num_blocks ? num_blocks : 1, kl->args,
                                          kl->nargs, NULL, tensors);
}

/* ---- ISA level -------------------------------------------------------------------------- */

static uint32_t k_detect_isa(void) {
    uint32_t best = MT_K_ISA_GENERIC;
#if defined(__x86_64__) && defined(__GNUC__)
    /* __builtin_cpu_supports also checks that the OS saves the wider registers. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = MT_K_ISA_AVX2;
    if (best == MT_K_ISA_AVX2 && __builtin_cpu_supports("avx512f")) best = MT_K_ISA_AVX512;
#endif
    const char *env = getenv("MTIART_KERNEL_ISA");
    if (env) {
        uint32_t cap = best;
        if (!strcmp(env, "generic")) cap = MT_K_ISA_GENERIC;
        else if (!strcmp(env, "avx2")) cap = MT_K_ISA_AVX2;
        if (cap < best) best = cap;
    }
    return best;
}

uint32_t mt_k_isa(void) {
    static _Atomic uint32_t cached = UINT32_MAX;
    uint32_t v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v == UINT32_MAX) {
        v = k_detect_isa();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

/* ---- checks of saved launches ------------------------------------------------------------ */

int mt_k_bad(char *why, size_t cap, int arg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return arg;
}

int mt_k_saved_params(const mt_ksaved *l, size_t need, char *why, size_t cap) {
    if (l->size < need)
        return mt_k_bad(why, cap, 0, "%u parameter bytes, the kernel reads %zu", l->size, need);
    return -1;
}

int mt_k_span(const mt_ksaved *l, uint32_t slot, const char *name, uint64_t count, uint64_t esize,
              char *why, size_t cap) {
    if (slot >= l->nbufs)
        return mt_k_bad(why, cap, 0, "%s is buffer slot %u of %u", name, slot, l->nbufs);
    if (l->align[slot] % esize)
        return mt_k_bad(why, cap, (int)(1 + slot),
                        "%s of %llu-byte elements starts %llu-byte aligned", name,
                        (unsigned long long)esize, (unsigned long long)l->align[slot]);
    uint64_t bytes = count;
    if (!mt_k_mul(&bytes, esize))
        return mt_k_bad(why, cap, 0, "%s's %llu elements of %llu bytes overflow", name,
                        (unsigned long long)count, (unsigned long long)esize);
    if (bytes > l->extent[slot])
        return mt_k_bad(why, cap, (int)(1 + slot),
                        "%s spans %llu bytes (%llu elements of %llu bytes), past the %llu "
                        "bytes of its buffer",
                        name, (unsigned long long)bytes, (unsigned long long)count,
                        (unsigned long long)esize, (unsigned long long)l->extent[slot]);
    return -1;
}
