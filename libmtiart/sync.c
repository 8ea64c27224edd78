/*
 * Synchronisation primitives shared by every part of the runtime, and jobs: work that the
 * idle workers of a device help with (a multi-block kernel, a graph replay).
 *
 * This file is the bottom of the runtime's layering: it calls nothing else in libmtiart,
 * so a worker's call chain (device.c -> stream.c -> exec.c -> op.c -> here) never comes
 * back through a file it has already passed.
 */
#include "internal.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ primitives */

void mt_spin_lock_slow(mt_spinlock *lock) {
    for (unsigned spins = 0;; spins++) {
        while (atomic_load_explicit(&lock->locked, memory_order_relaxed)) {
            if (spins++ < 64) mt_cpu_relax();
            else sched_yield();
        }
        if (!atomic_exchange_explicit(&lock->locked, 1, memory_order_acquire)) return;
    }
}

void mt_futex_wait(atomic_uint *word, unsigned expected) {
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

/* Sleep on `word` while it holds `expected`, for at most `timeout_ns`. */
static void futex_wait_for(atomic_uint *word, unsigned expected, uint64_t timeout_ns) {
    struct timespec rel = {.tv_sec = (time_t)(timeout_ns / 1000000000u),
                           .tv_nsec = (long)(timeout_ns % 1000000000u)};
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, &rel, NULL, 0);
}

void mt_futex_wake(atomic_uint *word, int count) {
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

uint64_t mt_deadline_after(uint64_t timeout_ns) {
    if (timeout_ns == MT_FOREVER) return MT_FOREVER;
    uint64_t now = mt_now_ns();
    return timeout_ns < MT_FOREVER - now ? now + timeout_ns : MT_FOREVER - 1;
}

bool mt_wait_counter(atomic_uint_least64_t *counter, uint64_t target, atomic_uint *word,
                     atomic_int *waiters, uint64_t spin_ns, uint64_t deadline) {
    if (atomic_load_explicit(counter, memory_order_acquire) >= target) return true;
    uint64_t start = mt_now_ns(), spin_until = start + spin_ns;
    for (unsigned i = 1; atomic_load_explicit(counter, memory_order_acquire) < target; i++) {
        if ((i & 63) != 0) {
            mt_cpu_relax();
            continue;
        }
        uint64_t now = mt_now_ns();
        if (now >= deadline) return false;
        if (now < spin_until) continue;
        unsigned seen = atomic_load(word);
        /* seq_cst increment then re-check: pairs with the store-then-load of waiters on the
         * completing side, so a wake cannot be missed. A signal or the timeout ends the
         * sleep early; the loop then looks again. */
        atomic_fetch_add(waiters, 1);
        if (atomic_load(counter) < target) {
            if (deadline == MT_FOREVER) mt_futex_wait(word, seen);
            else futex_wait_for(word, seen, deadline - now);
        }
        atomic_fetch_sub(waiters, 1);
    }
    return true;
}

uint64_t mt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void mt_device_wake(mt_device *dev, int count) {
    /* A spinning worker will see the new work by itself. */
    if (atomic_load(&dev->spinning) == 0 && atomic_load(&dev->sleepers) > 0) {
        atomic_fetch_add(&dev->wake_word, 1);
        mt_futex_wake(&dev->wake_word, count);
    }
}

/* ------------------------------------------------------------------ jobs */

mt_job_slot *mt_job_post(mt_device *dev, mt_job *job) {
    if (dev->num_workers <= 1) return NULL;
    for (int i = 0; i < MT_MAX_JOBS; i++) {
        mt_job *expected = NULL;
        if (atomic_compare_exchange_strong(&dev->jobs[i].job, &expected, job)) {
            atomic_fetch_add(&dev->active_jobs, 1);
            mt_device_wake(dev, dev->num_workers - 1);
            return &dev->jobs[i];
        }
    }
    return NULL;
}

void mt_job_retire(mt_device *dev, mt_job_slot *slot) {
    if (!slot) return;
    atomic_store(&slot->job, NULL);
    atomic_fetch_sub(&dev->active_jobs, 1);
    /* Helpers that already entered may still be leaving job->help. */
    for (unsigned spins = 0; atomic_load(&slot->users) != 0; spins++) {
        if (spins < 1024) mt_cpu_relax();
        else sched_yield();
    }
}
