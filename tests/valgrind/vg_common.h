/*
 * Shared helpers of the memcheck self-tests (tests/valgrind/vg_*.c). Each program states
 * the verdict valgrind must reach in "memcheck-expect" comments, which tools/memcheck
 * reads:
 *   memcheck-expect: invalid-reads=N invalid-writes=N definitely-lost=N errors=N
 *   memcheck-expect-log: <extended regex that must match valgrind's log>
 * Run one by hand:  tools/memcheck selftest vg_leak_in_graph
 */
#ifndef MTIART_VG_COMMON_H
#define MTIART_VG_COMMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mtiart.h"

#define OK(call)                                                                                   \
    do {                                                                                           \
        mtiart_status st_ = (call);                                                                \
        if (st_ != MTIART_SUCCESS) {                                                               \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                    \
                    mtiart_status_name(st_), mtiart_last_error_message());                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define NOINLINE __attribute__((noinline, noclone))
#define VG_HELPER __attribute__((unused))

/* args: [0] float *out (BUFFER_OUT), [1] int32 count, [2] float value */
VG_HELPER static int32_t vg_fill_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    float *out = *(float **)args[0];
    int32_t n = *(const int32_t *)args[1];
    float v = *(const float *)args[2];
    for (int32_t i = (int32_t)block; i < n; i += (int32_t)num_blocks) out[i] = v;
    return 0;
}

/* args: [0] float *out, [1] const float *in, [2] int32 count: out[i] = in[i] + 1 */
VG_HELPER static int32_t vg_add1_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    float *out = *(float **)args[0];
    const float *in = *(const float **)args[1];
    int32_t n = *(const int32_t *)args[2];
    for (int32_t i = (int32_t)block; i < n; i += (int32_t)num_blocks) out[i] = in[i] + 1.0f;
    return 0;
}

VG_HELPER static void vg_fill(mtiart_stream s, float *out, int32_t n, float v, uint32_t blocks) {
    mtiart_arg args[3] = {
        {MTIART_ARG_BUFFER_OUT, 0, out, (uint64_t)n * sizeof(float)},
        {MTIART_ARG_VALUE, sizeof n, &n, 0},
        {MTIART_ARG_VALUE, sizeof v, &v, 0},
    };
    OK(mtiart_launch_kernel(s, vg_fill_kernel, blocks, args, 3));
}

VG_HELPER static void vg_add1(mtiart_stream s, float *out, const float *in, int32_t n) {
    mtiart_arg args[3] = {
        {MTIART_ARG_BUFFER_OUT, 0, out, (uint64_t)n * sizeof(float)},
        {MTIART_ARG_BUFFER_IN, 0, in, (uint64_t)n * sizeof(float)},
        {MTIART_ARG_VALUE, sizeof n, &n, 0},
    };
    OK(mtiart_launch_kernel(s, vg_add1_kernel, 1, args, 3));
}

/* A host function that holds its stream until the gate opens: work enqueued behind it is
 * certainly still pending when the host thread goes on. */
VG_HELPER static int32_t vg_gate_fn(void *user_data) {
    atomic_int *gate = user_data;
    while (!atomic_load(gate)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Overwrite the dead part of the stack so no stale copy of a pointer survives there. */
VG_HELPER static NOINLINE void vg_scrub_stack(void) {
    volatile char junk[16384];
    memset((char *)junk, 0, sizeof junk);
}

#endif
