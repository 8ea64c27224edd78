/*
 * kernel_probe.c - reports which kernel function, block count and arguments the kernel
 * library launches for one operation, so that bench_runtime can call that same kernel body
 * on the same data directly: the baseline of its op_add_scalar_enqueue row.
 *
 *   kernel_probe add_scalar_f32_1
 *
 * This program defines mtiart_launch_kernel (and mtiart_launch_kernel_described, which the
 * kernel library calls) itself. The kernel library calls the exported function through
 * libmtiart's PLT, which binds to the executable's definition
 * first, so the operation's launch arrives here and is recorded instead of enqueued. The
 * probe runs in its own process, which keeps the interposed symbol out of every measured
 * process. Output, one line:
 *
 *   OK <library path> <kernel offset from the library's load base> <num_blocks> <nargs>
 *      then per argument: V <size> <hex bytes>  |  B <kind> <extent> <buffer index>
 *
 * or "UNAVAILABLE <reason>" (exit 0) when the launch could not be observed, e.g. when
 * libmtiart binds the call internally.
 */
#define _GNU_SOURCE
#include <mtiart.h>

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static struct {
    int armed, seen;
    mtiart_kernel_fn fn;
    uint32_t num_blocks, nargs;
    mtiart_arg args[16];
    unsigned char values[16][256];
} probe;

/* Records the launch when armed; 1 if it did. */
static int record_launch(mtiart_kernel_fn kernel, uint32_t num_blocks, const mtiart_arg *args,
                         uint32_t num_args) {
    if (probe.armed && !probe.seen && num_args <= 16) {
        probe.seen = 1;
        probe.fn = kernel;
        probe.num_blocks = num_blocks;
        probe.nargs = num_args;
        for (uint32_t i = 0; i < num_args; i++) {
            probe.args[i] = args[i];
            if (args[i].kind == MTIART_ARG_VALUE && args[i].size <= sizeof probe.values[i])
                memcpy(probe.values[i], args[i].value, args[i].size);
        }
        return 1;
    }
    return 0;
}

MTIART_API mtiart_status mtiart_launch_kernel(mtiart_stream stream, mtiart_kernel_fn kernel,
                                              uint32_t num_blocks, const mtiart_arg *args,
                                              uint32_t num_args) {
    if (record_launch(kernel, num_blocks, args, num_args)) return MTIART_SUCCESS;
    typedef mtiart_status (*launch_fn)(mtiart_stream, mtiart_kernel_fn, uint32_t,
                                       const mtiart_arg *, uint32_t);
    static launch_fn real;
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "mtiart_launch_kernel");
    return real ? real(stream, kernel, num_blocks, args, num_args) : MTIART_ERROR_INTERNAL;
}

/* The kernel library launches through this one (it describes its tensors). */
MTIART_API mtiart_status mtiart_launch_kernel_described(mtiart_stream stream,
                                                        mtiart_kernel_fn kernel,
                                                        uint32_t num_blocks, const mtiart_arg *args,
                                                        uint32_t num_args, const char *label,
                                                        const struct mtiart_tensor_desc *const *t) {
    if (record_launch(kernel, num_blocks, args, num_args)) return MTIART_SUCCESS;
    typedef mtiart_status (*launch_fn)(mtiart_stream, mtiart_kernel_fn, uint32_t,
                                       const mtiart_arg *, uint32_t, const char *,
                                       const struct mtiart_tensor_desc *const *);
    static launch_fn real;
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "mtiart_launch_kernel_described");
    return real ? real(stream, kernel, num_blocks, args, num_args, label, t)
                : MTIART_ERROR_INTERNAL;
}

int main(int argc, char **argv) {
    if (argc != 2 || strcmp(argv[1], "add_scalar_f32_1") != 0) {
        fprintf(stderr, "usage: kernel_probe add_scalar_f32_1\n");
        return 2;
    }
    mtiart_stream s;
    void *buf;
    if (mtiart_init() || mtiart_stream_create(0, 0, &s) || mtiart_malloc(0, sizeof(float), &buf)) {
        printf("UNAVAILABLE the runtime did not start: %s\n", mtiart_last_error_message());
        return 0;
    }
    mtiart_tensor_desc d = {.data = buf, .dtype = MTIART_DTYPE_FLOAT32, .ndim = 1, .shape = {1}};
    probe.armed = 1;
    mtiart_status st = mtiart_op_binary_scalar(s, MTIART_BINARY_ADD, &d, &d, 1.0, 0, 0);
    probe.armed = 0;
    if (st != MTIART_SUCCESS) {
        printf("UNAVAILABLE mtiart_op_binary_scalar failed: %s\n", mtiart_last_error_message());
        return 0;
    }
    if (!probe.seen) {
        printf("UNAVAILABLE libmtiart binds its kernel launches internally (no PLT call to "
               "interpose)\n");
        mtiart_stream_synchronize(s);
        return 0;
    }
    Dl_info info;
    if (!dladdr(*(void **)&probe.fn, &info) || !info.dli_fname || !info.dli_fbase) {
        printf("UNAVAILABLE the kernel function is in no loaded object\n");
        return 0;
    }
    printf("OK %s %lu %u %u", info.dli_fname,
           (unsigned long)((char *)*(void **)&probe.fn - (char *)info.dli_fbase), probe.num_blocks,
           probe.nargs);
    for (uint32_t i = 0; i < probe.nargs; i++) {
        const mtiart_arg *a = &probe.args[i];
        if (a->kind == MTIART_ARG_VALUE) {
            if (a->size > sizeof probe.values[i]) {
                printf("\nUNAVAILABLE a value argument of %u bytes\n", a->size);
                return 0;
            }
            printf(" V %u ", a->size);
            for (uint32_t b = 0; b < a->size; b++) printf("%02x", probe.values[i][b]);
        } else {
            printf(" B %u %llu %d", a->kind, (unsigned long long)a->extent,
                   a->value == buf ? 0 : -1);
        }
    }
    printf("\n");
    return 0;
}
