/* Helpers shared by the runtime tests (streams, events, allocator, capture, graphs):
 * small kernels and host functions that count, log, sleep or wait on a gate, and a few
 * timing utilities. Header-only; every test program is standalone. */
#ifndef MTIART_RT_HELPERS_H
#define MTIART_RT_HELPERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#define RT_UNUSED __attribute__((unused))

/* ------------------------------------------------------------------ memory */

/* The snapshot entry of the block at `addr` of device 0 (state -1 if none). */
static RT_UNUSED mtiart_block_info block_at(const void *addr) {
    size_t n = 0;
    CHECK_OK(mtiart_memory_snapshot(0, NULL, 0, &n));
    mtiart_block_info *all = calloc(n + 16, sizeof *all);
    size_t got = 0;
    CHECK_OK(mtiart_memory_snapshot(0, all, n + 16, &got));
    mtiart_block_info found;
    memset(&found, 0, sizeof found);
    found.state = -1;
    for (size_t i = 0; i < got && i < n + 16; i++)
        if (all[i].address == (uint64_t)(uintptr_t)addr) found = all[i];
    free(all);
    return found;
}

/* ------------------------------------------------------------------ time */

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline void sleep_ms(double ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) != 0) {}
}

/* Poll `cond` for up to `timeout_ms`; evaluates to whether it became true. */
#define WAIT_UNTIL(cond, timeout_ms)                                                               \
    ({                                                                                             \
        double deadline_ = now_ms() + (timeout_ms);                                                \
        bool ok_ = false;                                                                          \
        for (;;) {                                                                                 \
            if (cond) {                                                                            \
                ok_ = true;                                                                        \
                break;                                                                             \
            }                                                                                      \
            if (now_ms() > deadline_) break;                                                       \
            sleep_ms(1);                                                                           \
        }                                                                                          \
        ok_;                                                                                       \
    })

/* Wait for a stream with a timeout instead of hanging the test on a runtime bug. */
static inline mtiart_status sync_with_timeout(mtiart_stream s, double timeout_ms) {
    mtiart_status st = MTIART_NOT_READY;
    double deadline = now_ms() + timeout_ms;
    while ((st = mtiart_stream_query(s)) == MTIART_NOT_READY && now_ms() < deadline) sleep_ms(1);
    if (st == MTIART_NOT_READY) return st;
    return mtiart_stream_synchronize(s);
}

/* ------------------------------------------------------------------ counters */

/* Kernel: args[0] is a value argument holding an atomic_long *; increments it once per
 * launch (block 0 only). */
RT_UNUSED static int32_t k_count(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)num_blocks;
    if (block == 0) atomic_fetch_add(*(atomic_long *const *)args[0], 1);
    return 0;
}

static inline void launch_count(mtiart_stream s, atomic_long *counter) {
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof counter, &counter, 0};
    CHECK_OK(mtiart_launch_kernel(s, k_count, 1, &a, 1));
}

/* Kernel: int64 at args[0] (a device buffer) += value args[1]. */
RT_UNUSED static int32_t k_add_i64(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int64_t *p = *(int64_t *const *)args[0];
    *p += *(const int64_t *)args[1];
    return 0;
}

static inline mtiart_status launch_add_i64(mtiart_stream s, int64_t *dev, int64_t value) {
    mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, dev, sizeof(int64_t)},
                       {MTIART_ARG_VALUE, sizeof value, &value, 0}};
    return mtiart_launch_kernel(s, k_add_i64, 1, a, 2);
}

/* Kernel: int64 at args[0] *= value args[1]. */
RT_UNUSED static int32_t k_mul_i64(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int64_t *p = *(int64_t *const *)args[0];
    *p *= *(const int64_t *)args[1];
    return 0;
}

static inline mtiart_status launch_mul_i64(mtiart_stream s, int64_t *dev, int64_t value) {
    mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, dev, sizeof(int64_t)},
                       {MTIART_ARG_VALUE, sizeof value, &value, 0}};
    return mtiart_launch_kernel(s, k_mul_i64, 1, a, 2);
}

/* ------------------------------------------------------------------ host functions */

/* A gate: a host function that blocks its stream until the flag is set (or 30 s pass,
 * so that a runtime bug fails the test instead of hanging it). */
typedef struct gate {
    atomic_int open;
    atomic_int entered;
} gate;

RT_UNUSED static int32_t h_gate(void *user) {
    gate *g = user;
    atomic_store(&g->entered, 1);
    double deadline = now_ms() + 30000;
    while (!atomic_load(&g->open)) {
        if (now_ms() > deadline) {
            mtiart_kernel_set_error_message("gate never opened");
            return 99;
        }
        sleep_ms(0.2);
    }
    return 0;
}

static inline void launch_gate(mtiart_stream s, gate *g) {
    CHECK_OK(mtiart_launch_host_func(s, h_gate, g));
}

RT_UNUSED static int32_t h_sleep(void *user) {
    sleep_ms(*(double *)user);
    return 0;
}

/* Host function: sets an atomic_int to 1. */
RT_UNUSED static int32_t h_set_flag(void *user) {
    atomic_store((atomic_int *)user, 1);
    return 0;
}

/* Host function: increments an atomic_long. */
RT_UNUSED static int32_t h_count(void *user) {
    atomic_fetch_add((atomic_long *)user, 1);
    return 0;
}

/* An ordered log: host functions append values in execution order. */
typedef struct order_log {
    atomic_int n;
    int v[4096];
} order_log;

typedef struct log_entry {
    order_log *log;
    int value;
} log_entry;

RT_UNUSED static int32_t h_log(void *user) {
    log_entry *e = user;
    int i = atomic_fetch_add(&e->log->n, 1);
    if (i < 4096) e->log->v[i] = e->value;
    return 0;
}

static inline int status_is(mtiart_status got, mtiart_status want) { return got == want; }

#endif
